//! A guest's standard input: what the client sends, as it sends it.
//!
//! A session's stdin is one of three (`Stdin`): closed (reads see EOF at
//! once: a run that was sent nothing), given whole up front (then EOF, as
//! Piston and Judge0 take it), or open to a client that writes more while
//! the run goes (`StdinWriter`, ranna's STDIN op) until it says EOF.
//!
//! A read with nothing there waits, without holding a thread: WASI's
//! blocking read awaits `Pollable::ready`, so a guest waiting on its input is
//! still stopped by a KILL and by its wall clock like any other. What waits
//! to be read is bounded (`STDIN_BUFFER_BYTES`): a client that sends more
//! than the program reads is refused, never buffered without end.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};

use crate::sync::lock;

/// Bytes sent to a run and not read yet, at most.
pub const STDIN_BUFFER_BYTES: usize = 1 << 20;

/// What a session's standard input is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stdin {
    /// Nothing: reads see EOF.
    #[default]
    Closed,
    /// These bytes, then EOF.
    Data(Bytes),
    /// Open: these bytes first, then what is written through
    /// `Session::stdin()`, until it is closed.
    Open(Bytes),
}

/// Why bytes were not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StdinError {
    #[error("standard input is closed (EOF was sent, the run ended, or it was not opened for writing)")]
    Closed,
    #[error(
        "standard input already holds {waiting} bytes the program has not read; at most {STDIN_BUFFER_BYTES} may wait"
    )]
    Full { waiting: usize },
}

/// The input of one session: bytes waiting, and whether more may come.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    waiting: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
    /// Readers to wake when bytes or the EOF come (the guest's one task;
    /// deduplicated, so it stays small).
    wakers: Vec<Waker>,
}

impl Pipe {
    fn new(stdin: Stdin) -> Arc<Self> {
        let pipe = Arc::new(Pipe::default());
        let (data, open) = match stdin {
            Stdin::Closed => (Bytes::new(), false),
            Stdin::Data(data) => (data, false),
            Stdin::Open(data) => (data, true),
        };
        let mut state = lock(&pipe.state);
        if !data.is_empty() {
            state.bytes = data.len();
            state.waiting.push_back(data);
        }
        state.closed = !open;
        drop(state);
        pipe
    }

    fn write(&self, data: Bytes) -> Result<(), StdinError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StdinError::Closed);
        }
        if state.bytes + data.len() > STDIN_BUFFER_BYTES {
            return Err(StdinError::Full { waiting: state.bytes });
        }
        if !data.is_empty() {
            state.bytes += data.len();
            state.waiting.push_back(data);
            wake(&mut state);
        }
        Ok(())
    }

    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        wake(&mut state);
    }

    /// Up to `size` bytes; empty when none are there yet; `None` at EOF.
    fn read(&self, size: usize) -> Option<Bytes> {
        let mut state = lock(&self.state);
        let Some(front) = state.waiting.front_mut() else {
            return if state.closed { None } else { Some(Bytes::new()) };
        };
        let taken = if front.len() <= size {
            state.waiting.pop_front().expect("there is a front")
        } else {
            front.split_to(size)
        };
        state.bytes -= taken.len();
        Some(taken)
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if !state.waiting.is_empty() || state.closed {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

fn wake(state: &mut PipeState) {
    for waker in state.wakers.drain(..) {
        waker.wake();
    }
}

/// Writes to a session's open standard input, from another task. Cheap to clone.
#[derive(Clone)]
pub struct StdinWriter {
    pipe: Arc<Pipe>,
}

impl StdinWriter {
    /// Adds bytes for the program to read.
    pub fn write(&self, data: impl Into<Bytes>) -> Result<(), StdinError> {
        self.pipe.write(data.into())
    }

    /// Sends EOF: once the program has read what waits, its reads end.
    pub fn close(&self) {
        self.pipe.close();
    }

    /// Whether more may still be written.
    pub fn is_open(&self) -> bool {
        !lock(&self.pipe.state).closed
    }
}

/// Binds an instance's stdin to its session, once. An instance made ahead
/// of its session reads EOF until then (its warm-up reads nothing).
#[derive(Clone, Default)]
pub(crate) struct InputBinding(Arc<OnceLock<Arc<Pipe>>>);

impl InputBinding {
    /// From now on the instance reads `stdin`; the writer for it.
    pub(crate) fn bind(&self, stdin: Stdin) -> StdinWriter {
        let pipe = Pipe::new(stdin);
        let first = self.0.set(pipe.clone()).is_ok();
        debug_assert!(first, "an instance's input was bound twice");
        StdinWriter { pipe }
    }
}

/// A session's standard input, as WASI sees it.
#[derive(Clone, Default)]
pub(crate) struct InputSource {
    binding: InputBinding,
}

impl InputSource {
    /// The source and the binding that gives it its session's input.
    pub(crate) fn new() -> (InputSource, InputBinding) {
        let binding = InputBinding::default();
        (InputSource { binding: binding.clone() }, binding)
    }

    fn pipe(&self) -> Option<&Arc<Pipe>> {
        self.binding.0.get()
    }
}

impl IsTerminal for InputSource {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for InputSource {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for InputSource {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        match self.pipe().map(|pipe| pipe.read(size)) {
            Some(Some(bytes)) => Ok(bytes),
            Some(None) | None => Err(StreamError::Closed),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for InputSource {
    async fn ready(&mut self) {
        if let Some(pipe) = self.pipe() {
            std::future::poll_fn(|cx| pipe.poll_ready(cx)).await;
        }
    }
}

/// Used by WASI 0.3 only (sandlot's guests use preview 1 and 2).
impl AsyncRead for InputSource {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(pipe) = self.pipe() else { return Poll::Ready(Ok(())) };
        if pipe.poll_ready(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(bytes) = pipe.read(buf.remaining()) {
            buf.put_slice(&bytes);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_in_order_then_eof() {
        let pipe = Pipe::new(Stdin::Open(Bytes::from_static(b"ab")));
        let writer = StdinWriter { pipe: pipe.clone() };
        writer.write(&b"cde"[..]).unwrap();
        assert_eq!(pipe.read(3).unwrap(), "ab");
        assert_eq!(pipe.read(2).unwrap(), "cd");
        assert_eq!(pipe.read(9).unwrap(), "e");
        assert_eq!(pipe.read(9).unwrap(), "", "nothing yet, not EOF");
        writer.close();
        assert_eq!(pipe.read(9), None);
        assert_eq!(writer.write(&b"x"[..]), Err(StdinError::Closed));
    }

    #[test]
    fn what_waits_is_bounded() {
        let writer = StdinWriter { pipe: Pipe::new(Stdin::Open(Bytes::new())) };
        writer.write(vec![0; STDIN_BUFFER_BYTES]).unwrap();
        assert_eq!(writer.write(&b"x"[..]), Err(StdinError::Full { waiting: STDIN_BUFFER_BYTES }));
    }

    #[test]
    fn closed_and_given_inputs_end() {
        assert_eq!(Pipe::new(Stdin::Closed).read(9), None);
        let given = Pipe::new(Stdin::Data(Bytes::from_static(b"42\n")));
        assert_eq!(given.read(9).unwrap(), "42\n");
        assert_eq!(given.read(9), None);
    }
}
