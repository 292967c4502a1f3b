//! The guest components built into this binary (see `guest-runtimes/`).
//!
//! `build.rs` checks they exist and records their SHA-256 digests, which key
//! the compile cache.

use crate::language::Language;

static PYTHON: &[u8] = include_bytes!(concat!(env!("SANDLOT_GUEST_DIR"), "/python.wasm"));
static JAVASCRIPT: &[u8] = include_bytes!(concat!(env!("SANDLOT_GUEST_DIR"), "/javascript.wasm"));

/// The component bytes of a language's guest (python-sci has no component; see `sci_dir`).
pub(crate) fn bytes(language: Language) -> &'static [u8] {
    match language {
        Language::Python => PYTHON,
        Language::JavaScript => JAVASCRIPT,
        Language::PythonSci => unreachable!("python-sci is a core module loaded from sci_dir()"),
    }
}

/// Where python-sci's files are (too large to build into the binary):
/// `$SANDLOT_SCI_DIR`, else where `guest-runtimes/build.sh` put them.
pub(crate) fn sci_dir() -> std::path::PathBuf {
    std::env::var_os("SANDLOT_SCI_DIR")
        .map(Into::into)
        .unwrap_or_else(|| concat!(env!("SANDLOT_GUEST_DIR"), "/python-sci").into())
}

/// The SHA-256 of a language's guest, in hex.
pub(crate) fn digest(language: Language) -> &'static str {
    match language {
        Language::Python => env!("SANDLOT_GUEST_DIGEST_PYTHON"),
        Language::JavaScript => env!("SANDLOT_GUEST_DIGEST_JAVASCRIPT"),
        Language::PythonSci => env!("SANDLOT_GUEST_DIGEST_PYTHON_SCI"),
    }
}
