//! `sandlot:guest/stats`: summary statistics, the same numbers pandas'
//! `describe()` gives (sample standard deviation, linearly interpolated quartiles).

use super::HostState;
use super::sandlot::guest::types::Summary;

/// Summarises `values`; fails on an empty list or a value that is not finite.
pub(crate) fn describe(values: &[f64]) -> Result<Summary, String> {
    if values.is_empty() {
        return Err("stats needs at least one number".into());
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("stats needs finite numbers, got {bad}"));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let std =
        if n > 1 { (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { f64::NAN };
    let quantile = |q: f64| {
        let pos = q * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    Ok(Summary {
        count: n as u64,
        mean,
        std,
        min: sorted[0],
        q1: quantile(0.25),
        median: quantile(0.5),
        q3: quantile(0.75),
        max: sorted[n - 1],
    })
}

impl super::sandlot::guest::stats::Host for HostState {
    async fn describe(&mut self, values: Vec<f64>) -> Result<Summary, String> {
        describe(&values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pandas_describe() {
        // pandas.Series([1, 2, 3, 4, 10]).describe()
        let s = describe(&[4.0, 1.0, 10.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.count, 5);
        assert!((s.mean - 4.0).abs() < 1e-12);
        assert!((s.std - 3.535_533_905_932_737_6).abs() < 1e-12);
        assert_eq!((s.min, s.q1, s.median, s.q3, s.max), (1.0, 2.0, 3.0, 4.0, 10.0));
    }

    #[test]
    fn interpolates_quartiles() {
        let s = describe(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.75, 2.5, 3.25));
    }

    #[test]
    fn refuses_empty_and_non_finite() {
        assert!(describe(&[]).is_err());
        assert!(describe(&[1.0, f64::NAN]).unwrap_err().contains("finite"));
        assert!(describe(&[1.0]).unwrap().std.is_nan());
    }
}
