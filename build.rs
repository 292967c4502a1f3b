//! Finds the guest components built by `guest-runtimes/build.sh`, and records
//! their digests so the compile cache can key on them.

#[path = "src/date.rs"]
#[allow(dead_code)]
mod date;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

fn main() {
    record_versions();
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = std::env::var("SANDLOT_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("guest-runtimes/out"));
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
    // python-sci is loaded at run time (it is 150 MB); its digest is that of
    // its files' digests, written by build.sh.
    let sums = dir.join("python-sci/guest.sha256");
    println!("cargo:rerun-if-changed={}", sums.display());
    let bytes = std::fs::read(&sums).unwrap_or_else(|e| {
        panic!("python-sci is missing ({e}).\nBuild the guests first: ./dev.sh build (or guest-runtimes/build.sh).")
    });
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=SANDLOT_GUEST_DIGEST_PYTHON_SCI={digest}");
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
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    println!("cargo:rustc-env=SANDLOT_BUILD_DATE={}", date::utc_date(now));
}
