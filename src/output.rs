//! Where a guest's stdout and stderr go: into the session's event queue, as
//! the guest writes, under one byte budget shared by both streams. The queue
//! is bounded in bytes: while it is full the streams tell the guest they are
//! not ready, and WASI's blocking write waits (`Pollable::ready`), so a
//! listener that does not read holds its own guest back, never more memory.
//!
//! The stock `MemoryOutputPipe` traps when full, which would kill the instance and
//! lose the reason. Instead, past the budget this sink keeps the part that fits,
//! drops the rest, says so once on stderr and asks the session to stop the call
//! with `EndReason::OutputLimit`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::report::Reporter;
use crate::run::{EndReason, StopSignal};

/// The byte budget of one call, shared by its stdout and stderr sinks.
#[derive(Debug)]
pub(crate) struct OutputBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
    exceeded: AtomicBool,
}

impl OutputBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(OutputBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            exceeded: AtomicBool::new(false),
        })
    }

    /// Starts a new call's count.
    pub(crate) fn reset(&self, limit: usize) {
        self.limit.store(limit, Ordering::SeqCst);
        self.used.store(0, Ordering::SeqCst);
        self.exceeded.store(false, Ordering::SeqCst);
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::SeqCst)
    }

    /// Takes up to `wanted` bytes of budget and returns how many were granted.
    fn take(&self, wanted: usize) -> usize {
        let limit = self.limit.load(Ordering::SeqCst);
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            let granted = wanted.min(limit.saturating_sub(used));
            match self.used.compare_exchange(used, used + granted, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return granted,
                Err(now) => used = now,
            }
        }
    }
}

/// The most a guest may write in one go.
const WRITE_PERMIT: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Where a session's sinks deliver: its budget, its events and its stop signal.
pub(crate) struct SinkTarget {
    pub(crate) budget: Arc<OutputBudget>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) stop: StopSignal,
}

/// Binds an instance's two sinks to a session, once. An instance made ahead
/// of its session (the runtime's warm instances) writes nowhere until then:
/// what it printed while warming is dropped.
#[derive(Clone, Default)]
pub(crate) struct SinkBinding(Arc<OnceLock<SinkTarget>>);

impl SinkBinding {
    /// Sends all later output to `target`. An instance is bound once, to
    /// its one session.
    pub(crate) fn bind(&self, target: SinkTarget) {
        let first = self.0.set(target).is_ok();
        debug_assert!(first, "an instance's output was bound twice");
    }
}

/// An instance's three standard streams, as its WASI is built with them.
pub(crate) struct GuestIo {
    pub(crate) stdout: OutputSink,
    pub(crate) stderr: OutputSink,
    pub(crate) stdin: crate::input::InputSource,
}

/// One of a session's two output streams, as WASI sees it.
#[derive(Clone)]
pub(crate) struct OutputSink {
    stream: Stream,
    binding: SinkBinding,
}

impl OutputSink {
    /// Stdout and stderr, unbound until `SinkBinding::bind`.
    pub(crate) fn pair() -> (OutputSink, OutputSink, SinkBinding) {
        let binding = SinkBinding::default();
        let sink = |stream| OutputSink { stream, binding: binding.clone() };
        (sink(Stream::Stdout), sink(Stream::Stderr), binding)
    }

    fn target(&self) -> Option<&SinkTarget> {
        self.binding.0.get()
    }

    fn accept(&self, bytes: &[u8]) {
        let Some(target) = self.target() else { return };
        let budget = &target.budget;
        if budget.exceeded() {
            return;
        }
        let granted = budget.take(bytes.len());
        if granted > 0 {
            target.reporter.output(self.stream == Stream::Stderr, &bytes[..granted]);
        }
        if granted < bytes.len() && !budget.exceeded.swap(true, Ordering::SeqCst) {
            let limit = budget.limit.load(Ordering::SeqCst);
            let notice = format!(
                "\n[sandlot: output limit of {limit} bytes reached; the rest was dropped and the run stopped]\n"
            );
            target.reporter.output(true, notice.as_bytes());
            target.stop.stop(EndReason::OutputLimit);
        }
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Bytes past the budget (or before a session) are dropped, never
        // queued: always ready for them.
        match self.target() {
            Some(target) if !target.budget.exceeded() => Ok(target.reporter.room().min(WRITE_PERMIT)),
            _ => Ok(WRITE_PERMIT),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {
        if let Some(target) = self.target().filter(|t| !t.budget.exceeded()) {
            target.reporter.wait_for_room().await;
        }
    }
}

/// Used by WASI 0.3 only (sandlot's guests use preview 1 and 2): writes
/// at once, under the budget, without waiting for room.
impl AsyncWrite for OutputSink {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
