//! The guest components built into this binary (see `guest-runtimes/`).
//!
//! `build.rs` checks they exist and records their SHA-256 digests, which key
//! the compile cache.

use crate::language::Language;

static PYTHON: &[u8] = include_bytes!(concat!(env!("SANDLOT_GUEST_DIR"), "/python.wasm"));
static JAVASCRIPT: &[u8] = include_bytes!(concat!(env!("SANDLOT_GUEST_DIR"), "/javascript.wasm"));

/// The component bytes of a language's guest.
pub(crate) fn bytes(language: Language) -> &'static [u8] {
    match language {
        Language::Python => PYTHON,
        Language::JavaScript => JAVASCRIPT,
    }
}

/// The SHA-256 of a language's guest, in hex.
pub(crate) fn digest(language: Language) -> &'static str {
    match language {
        Language::Python => env!("SANDLOT_GUEST_DIGEST_PYTHON"),
        Language::JavaScript => env!("SANDLOT_GUEST_DIGEST_JAVASCRIPT"),
    }
}
