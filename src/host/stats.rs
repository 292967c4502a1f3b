//! `sandlot:guest/stats`: summary statistics, the same numbers pandas'
//! `describe()` gives (sample standard deviation, linearly interpolated
//! quartiles), and `table_stats`, the same per numeric column of a saved
//! placeholder's JSON text.

use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::HostState;
use super::sandlot::guest::types::Summary;

/// Most numeric columns summarised in one answer.
pub(crate) const MAX_STATS_COLUMNS: usize = 1000;

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

/// A summary as clients see it (pandas' names; `std` null for one value).
pub(crate) fn summary_json(s: &Summary) -> Value {
    let std = if s.std.is_nan() { Value::Null } else { json!(s.std) };
    json!({ "count": s.count, "mean": s.mean, "std": std, "min": s.min,
            "25%": s.q1, "50%": s.median, "75%": s.q3, "max": s.max })
}

/// Statistics of a JSON text: a list of numbers, or per numeric column of a
/// table given as a list of records, a list of rows or a map of columns. A
/// column is numeric when every row has a number in it.
///
/// Read in one streaming pass: no tree of the JSON is built, each cell is
/// looked at once, and only the numbers of columns still numeric are kept,
/// so time and memory grow with the text's length, whatever its shape.
pub(crate) fn table_stats(json: &str) -> Result<Value, String> {
    let mut table = Table::default();
    let mut deserializer = serde_json::Deserializer::from_str(json);
    TopLevel { table: &mut table }.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    table.summarise()
}

const SHAPES: &str = "stats need a list of numbers, a list of records, a list of rows or a map of columns";

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Shape {
    #[default]
    Unknown,
    Numbers,
    Records,
    Rows,
    Columns,
}

#[derive(Default)]
struct Table {
    shape: Shape,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// Columns still numeric (indices into `columns`).
    live: Vec<usize>,
    /// Rows finished so far.
    rows: usize,
}

struct Column {
    name: String,
    values: Vec<f64>,
    numeric: bool,
}

impl Table {
    /// The column called `name`; a column first seen after the first row
    /// misses a cell, so it is not numeric from the start.
    fn column(&mut self, name: &str) -> usize {
        if let Some(&at) = self.index.get(name) {
            return at;
        }
        let at = self.columns.len();
        let numeric = self.rows == 0;
        self.columns.push(Column { name: name.to_string(), values: Vec::new(), numeric });
        self.index.insert(name.to_string(), at);
        if numeric {
            self.live.push(at);
        }
        at
    }

    fn cell(&mut self, column: usize, value: Option<f64>) {
        let column = &mut self.columns[column];
        match value {
            Some(v) if column.numeric && column.values.len() == self.rows => column.values.push(v),
            // A second cell for the same column in one row is ignored.
            Some(_) if column.numeric && column.values.len() > self.rows => {}
            _ => {
                column.numeric = false;
                column.values = Vec::new();
            }
        }
    }

    /// Ends a row: columns it had no number for are no longer numeric.
    fn end_row(&mut self) {
        self.rows += 1;
        let rows = self.rows;
        let columns = &mut self.columns;
        self.live.retain(|&at| {
            let column = &mut columns[at];
            if column.numeric && column.values.len() == rows {
                return true;
            }
            column.numeric = false;
            column.values = Vec::new();
            false
        });
    }

    fn summarise(self) -> Result<Value, String> {
        match self.shape {
            Shape::Numbers => {
                let values = self.columns.into_iter().next().map(|c| c.values).unwrap_or_default();
                describe(&values).map(|s| summary_json(&s))
            }
            Shape::Unknown => describe(&[]).map(|s| summary_json(&s)),
            _ => {
                let numeric: Vec<Column> =
                    self.columns.into_iter().filter(|c| c.numeric && !c.values.is_empty()).collect();
                if numeric.is_empty() {
                    return Err("the table has no numeric column".into());
                }
                if numeric.len() > MAX_STATS_COLUMNS {
                    return Err(format!(
                        "the table has {} numeric columns; stats summarise at most {MAX_STATS_COLUMNS}",
                        numeric.len()
                    ));
                }
                let mut out = Map::new();
                for column in numeric {
                    out.insert(column.name, summary_json(&describe(&column.values)?));
                }
                Ok(Value::Object(out))
            }
        }
    }

    fn set_shape(&mut self, shape: Shape) -> Result<(), String> {
        match self.shape {
            Shape::Unknown => {
                self.shape = shape;
                Ok(())
            }
            known if known == shape => Ok(()),
            _ => Err(format!("{SHAPES}, not a mix")),
        }
    }
}

/// The whole text: a list (of numbers, records or rows) or a map of columns.
struct TopLevel<'t> {
    table: &'t mut Table,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SHAPES)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Element { table: &mut *self.table })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.table.set_shape(Shape::Columns).map_err(serde::de::Error::custom)?;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let at = self.table.column(&name);
            map.next_value_seed(ColumnCells { table: &mut *self.table, at })?;
        }
        Ok(())
    }
}

/// One item of a top-level list: a number, a record or a row.
struct Element<'t> {
    table: &'t mut Table,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Element<'_> {
    fn number<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        self.table.set_shape(Shape::Numbers).map_err(E::custom)?;
        let at = self.table.column("");
        self.table.columns[at].values.push(value);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SHAPES)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.table.set_shape(Shape::Records).map_err(serde::de::Error::custom)?;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let at = self.table.column(&name);
            let value = map.next_value_seed(Cell)?;
            self.table.cell(at, value);
        }
        self.table.end_row();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.table.set_shape(Shape::Rows).map_err(serde::de::Error::custom)?;
        let mut i = 0usize;
        while let Some(value) = seq.next_element_seed(Cell)? {
            let at = match self.table.columns.get(i) {
                Some(_) => i,
                None => self.table.column(&i.to_string()),
            };
            self.table.cell(at, value);
            i += 1;
        }
        self.table.end_row();
        Ok(())
    }
}

/// The cells of one column of a map of columns.
struct ColumnCells<'t> {
    table: &'t mut Table,
    at: usize,
}

impl<'de> DeserializeSeed<'de> for ColumnCells<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ColumnCells<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of columns, each a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let column = &mut self.table.columns[self.at];
        while let Some(value) = seq.next_element_seed(Cell)? {
            match value {
                Some(v) if column.numeric => column.values.push(v),
                _ => {
                    column.numeric = false;
                    column.values = Vec::new();
                }
            }
        }
        Ok(())
    }
}

/// One cell: its number, or `None` for anything else (skipped unread).
struct Cell;

impl<'de> DeserializeSeed<'de> for Cell {
    type Value = Option<f64>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Cell {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Option<f64>, E> {
        Ok(Some(v as f64))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Option<f64>, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Option<f64>, E> {
        Ok(Some(v))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<f64>, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Option<f64>, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<f64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<f64>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
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
    fn tables_of_every_shape() {
        let s = table_stats("[1, 2, 3, 4, 10]").unwrap();
        assert_eq!((s["count"].clone(), s["50%"].clone(), s["max"].clone()), (json!(5), json!(3.0), json!(10.0)));
        let records = table_stats(r#"[{"a": 1, "b": "x"}, {"a": 3, "b": "y"}]"#).unwrap();
        assert_eq!(records["a"]["mean"], json!(2.0));
        assert!(records.get("b").is_none());
        let columns = table_stats(r#"{"a": [1, 2], "b": [10, 30], "c": ["x"]}"#).unwrap();
        assert_eq!(columns["b"]["mean"], json!(20.0));
        assert!(columns.get("c").is_none());
        let rows = table_stats("[[1, 10], [3, 30]]").unwrap();
        assert_eq!(rows["1"]["max"], json!(30.0));
        assert!(table_stats("\"text\"").is_err());
        assert!(table_stats("[1, [2]]").unwrap_err().contains("not a mix"));
        assert!(table_stats(r#"[{"b": "x"}]"#).unwrap_err().contains("no numeric column"));
        assert!(table_stats("[]").is_err());
    }

    #[test]
    fn ragged_tables_keep_only_full_columns() {
        // A column missing from some row, or first seen late, is not numeric.
        let records = table_stats(r#"[{"a": 1, "b": 2}, {"a": 3}, {"a": 5, "c": 1}]"#).unwrap();
        assert_eq!(records.as_object().unwrap().keys().collect::<Vec<_>>(), ["a"]);
        let rows = table_stats("[[1, 2, 3], [4], [5, 6]]").unwrap();
        assert_eq!(rows.as_object().unwrap().keys().collect::<Vec<_>>(), ["0"]);
    }

    #[test]
    fn ragged_and_wide_tables_cost_what_their_text_does() {
        // Rows of very different widths, and records with thousands of
        // distinct keys: each used to cost gigabytes (quadratic discovery,
        // every column materialised). Now one pass over the text.
        let mut rows = Vec::new();
        for i in 0..2000 {
            rows.push(format!("[{}]", vec!["1"; if i % 2 == 0 { 20_000 } else { 1 }].join(",")));
        }
        let text = format!("[{}]", rows.join(","));
        let stats = table_stats(&text).unwrap();
        assert_eq!(stats.as_object().unwrap().len(), 1);
        let records: Vec<String> = (0..3000).map(|i| format!("{{\"k{i}\": 1, \"n\": {i}}}")).collect();
        let stats = table_stats(&format!("[{}]", records.join(","))).unwrap();
        assert_eq!(stats.as_object().unwrap().keys().collect::<Vec<_>>(), ["n"]);
    }

    #[test]
    fn refuses_empty_and_non_finite() {
        assert!(describe(&[]).is_err());
        assert!(describe(&[1.0, f64::NAN]).unwrap_err().contains("finite"));
        assert!(describe(&[1.0]).unwrap().std.is_nan());
    }
}
