//! The memory and table limit of one guest, counted across all of its memories.
//!
//! A component can hold several linear memories (the interpreter's, the WASI
//! adapter's); the limit is on their sum. A refused grow is not a trap: the
//! guest sees allocation failure (Python's `MemoryError`, QuickJS's
//! "out of memory") and may recover; the session notes the refusal so a call
//! that then fails is reported as ended by the memory limit.

use wasmtime::ResourceLimiter;

#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Bytes the guest starts with that the limit does not count (python-sci's warmed image).
    allowance: usize,
    table_elements: usize,
    total: usize,
    peak: usize,
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize, table_elements: usize) -> Self {
        MemoryLimiter { limit, allowance: 0, table_elements, total: 0, peak: 0, refused: false }
    }

    /// Counts only what the guest allocates beyond its first `bytes`.
    pub(crate) fn not_counting(mut self, bytes: usize) -> Self {
        self.allowance = bytes;
        self
    }

    /// Forgets refusals and the peak before a new call.
    pub(crate) fn start_call(&mut self) {
        self.refused = false;
        self.peak = self.total;
    }

    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the guest holds now beyond what it started with uncounted.
    pub(crate) fn held(&self) -> usize {
        self.total.saturating_sub(self.allowance)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let grown = self.total - current.min(self.total) + desired;
        if grown > self.limit.saturating_add(self.allowance) {
            self.refused = true;
            return Ok(false);
        }
        self.total = grown;
        self.peak = self.peak.max(grown);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}
