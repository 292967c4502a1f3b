//! Finds the guest components built by `guest-runtimes/build.sh` and embeds
//! the ones there (`$OUT_DIR/guests.rs`), with their digests for the compile
//! cache. A guest not built is not an error here: `cargo check`, clippy and
//! the unit tests need none, and running a language whose guest is missing
//! says how to build it.

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
    // A guest added or removed changes the folder.
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|path| path.extension().is_some_and(|e| e == "wasm"));
    files.sort();
    let mut generated = String::from(
        "/// The guest components found when this binary was built.\npub(crate) static EMBEDDED: &[Embedded] = &[\n",
    );
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("could not read {}: {e}", path.display()));
        generated.push_str(&format!(
            "    Embedded {{ file: {:?}, bytes: include_bytes!({:?}), digest: {:?} }},\n",
            path.file_name().unwrap().to_string_lossy(),
            path.display().to_string(),
            hex(&bytes)
        ));
    }
    generated.push_str("];\n");
    if files.is_empty() {
        println!(
            "cargo:warning=no guests in {}: this build runs no language until guest-runtimes/build.sh has run and sandlot is rebuilt",
            dir.display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(&out, generated).unwrap_or_else(|e| panic!("could not write {}: {e}", out.display()));
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
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
