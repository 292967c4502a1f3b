//! Finds the guest components built by `guest-runtimes/build.sh`, and records
//! their digests so the compile cache can key on them.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

fn main() {
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
