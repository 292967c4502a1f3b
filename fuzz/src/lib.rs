//! The same targets as `tests/fuzz.rs` (that very file, so the corpus under
//! `tests/__fuzz__/` is theirs too), in a crate cargo-bolero can build alone.

#[cfg(test)]
#[path = "../../tests/fuzz.rs"]
mod targets;
