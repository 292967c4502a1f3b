//! Finds the guest components built by `guest-runtimes/build.sh`, and records
//! their digests so the compile cache can key on them.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

fn main() {
    record_versions();
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = std::env::var("SANDLOT_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("guest-runtimes/out"));
    println!("cargo:rerun-if-env-changed=SANDLOT_GUEST_DIR");
    println!("cargo:rustc-env=SANDLOT_GUEST_DIR={}", dir.display());
    for (name, file) in [("PYTHON", "python.wasm"), ("JAVASCRIPT", "javascript.wasm")] {
        let path = dir.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "guest component {} is missing ({e}).\n\
                 Build the guests first: ./dev.sh build (or guest-runtimes/build.sh).",
                path.display()
            )
        });
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        println!("cargo:rustc-env=SANDLOT_GUEST_DIGEST_{name}={digest}");
    }
}

/// The wasmtime version from Cargo.lock and today's date, for `GET /v1/info`.
fn record_versions() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rustc-env=SANDLOT_WASMTIME_VERSION={version}");
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(days);
    println!("cargo:rustc-env=SANDLOT_BUILD_DATE={y:04}-{m:02}-{d:02}");
}

/// Howard Hinnant's days-to-date conversion (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
