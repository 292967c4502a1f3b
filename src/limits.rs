//! The resource limits every guest call runs under, with their defaults.
//!
//! Each limit is enforced in one place: wall clock and kill in `session.rs`
//! (a `tokio::time::timeout` around a call whose guest yields every epoch tick),
//! fuel by wasmtime's fuel counter, memory and tables in `host/limiter.rs`,
//! output in `output.rs`, placeholder sizes in `host/placeholders.rs`, a model's
//! answer in `session.rs`, scratch files in `scratch.rs`, and stack
//! depth by wasmtime's `max_wasm_stack` plus each interpreter's own recursion check.

use std::time::Duration;

/// Limits for one session. Each call into the guest (run, eval, predict) gets a
/// fresh wall-clock and fuel budget; memory and output are counted per call too.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest a call may take, sleeping and waiting on the engine included.
    pub wall_clock: Duration,
    /// Wasm instructions (roughly) a call may execute; about 3–8 G per second here.
    pub fuel: u64,
    /// Linear memory across all of the guest's memories, in bytes.
    pub memory_bytes: usize,
    /// stdout and stderr bytes together per call; output beyond is dropped and the call stopped.
    pub output_bytes: usize,
    /// Total size of a session's placeholders (JSON text), in bytes.
    pub placeholder_bytes: usize,
    /// Most table elements (function references) a guest may hold.
    pub table_elements: usize,
    /// Largest answer (JSON text) a model's prediction may give.
    pub prediction_bytes: usize,
    /// Bytes of files a session may keep in its scratch folder (`/tmp`).
    pub scratch_bytes: u64,
}

impl Limits {
    pub const DEFAULT_WALL_CLOCK: Duration = Duration::from_secs(10);
    pub const DEFAULT_FUEL: u64 = 40_000_000_000;
    pub const DEFAULT_MEMORY_BYTES: usize = 256 << 20;
    pub const DEFAULT_OUTPUT_BYTES: usize = 1 << 20;
    pub const DEFAULT_PLACEHOLDER_BYTES: usize = 16 << 20;
    pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;
    pub const DEFAULT_PREDICTION_BYTES: usize = 4 << 20;
    pub const DEFAULT_SCRATCH_BYTES: u64 = 16 << 20;

    pub fn with_wall_clock(mut self, wall_clock: Duration) -> Self {
        self.wall_clock = wall_clock;
        self
    }

    pub fn with_fuel(mut self, fuel: u64) -> Self {
        self.fuel = fuel;
        self
    }

    pub fn with_memory_bytes(mut self, bytes: usize) -> Self {
        self.memory_bytes = bytes;
        self
    }

    pub fn with_output_bytes(mut self, bytes: usize) -> Self {
        self.output_bytes = bytes;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_clock: Self::DEFAULT_WALL_CLOCK,
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            output_bytes: Self::DEFAULT_OUTPUT_BYTES,
            placeholder_bytes: Self::DEFAULT_PLACEHOLDER_BYTES,
            table_elements: Self::DEFAULT_TABLE_ELEMENTS,
            prediction_bytes: Self::DEFAULT_PREDICTION_BYTES,
            scratch_bytes: Self::DEFAULT_SCRATCH_BYTES,
        }
    }
}
