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
//! to be read is bounded (`STDIN_BUFFER_BYTES`) in the memory it takes, not
//! only in its bytes: small writes share buffers (a million one-byte writes
//! are not a million buffers), and each buffer counts with its overhead. A
//! client that sends more than the program reads is refused, never buffered
//! without end.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};

use crate::sync::lock;

/// Memory the bytes sent to a run and not read yet may hold, at most: each
/// buffer counted as allocated, with `CHUNK_OVERHEAD`.
pub const STDIN_BUFFER_BYTES: usize = 1 << 20;
/// Writes smaller than this are copied into a shared buffer of this size
/// (a one-byte write does not cost a buffer of its own); larger ones are
/// kept as they came.
const MERGE_BELOW: usize = 4 << 10;
/// What a buffer costs besides its bytes: its place in the queue (a `Bytes`,
/// 32 bytes, in a `VecDeque` that may be twice as long as it needs) and its
/// allocation's header and rounding.
const CHUNK_OVERHEAD: usize = 96;

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
        "standard input already holds {waiting} bytes (with its buffers' overhead) the program has not read; at most \
         {STDIN_BUFFER_BYTES} may wait: send more once the program has read some, in fewer and larger STDIN ops"
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
    /// Buffers in order, each with what it costs (`cost`); `tail`, where
    /// small writes are merged, comes after them.
    waiting: VecDeque<(Bytes, usize)>,
    tail: BytesMut,
    /// What `tail` was counted as (its allocation, even once part is read).
    tail_cost: usize,
    /// What `waiting` and `tail` cost together.
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
            state.bytes = cost(data.len());
            state.waiting.push_back((data.clone(), cost(data.len())));
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
        if data.is_empty() {
            return Ok(());
        }
        let state = &mut *state;
        if data.len() < MERGE_BELOW {
            // Into the tail buffer, or a new one (the full one queued).
            let fits = state.tail.capacity() - state.tail.len() >= data.len();
            let more = if fits { 0 } else { cost(MERGE_BELOW) };
            if state.bytes.saturating_add(more) > STDIN_BUFFER_BYTES {
                return Err(StdinError::Full { waiting: state.bytes });
            }
            if !fits {
                let full = std::mem::replace(&mut state.tail, BytesMut::with_capacity(MERGE_BELOW));
                let spent = std::mem::replace(&mut state.tail_cost, more);
                if !full.is_empty() {
                    state.waiting.push_back((full.freeze(), spent));
                }
                state.bytes += more;
            }
            state.tail.extend_from_slice(&data);
        } else {
            let more = cost(data.len());
            if state.bytes.saturating_add(more) > STDIN_BUFFER_BYTES {
                return Err(StdinError::Full { waiting: state.bytes });
            }
            // After what the tail holds: it is queued first.
            if !state.tail.is_empty() {
                let tail = std::mem::take(&mut state.tail);
                let spent = std::mem::take(&mut state.tail_cost);
                state.waiting.push_back((tail.freeze(), spent));
            }
            state.bytes += more;
            state.waiting.push_back((data, more));
        }
        wake(state);
        Ok(())
    }

    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        wake(&mut state);
    }

    /// Up to `size` bytes; empty when none are there yet; `None` at EOF. A
    /// buffer's cost is given back once it is read to its end (its memory is
    /// held until then).
    fn read(&self, size: usize) -> Option<Bytes> {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if let Some((front, spent)) = state.waiting.front_mut() {
            if front.len() > size {
                return Some(front.split_to(size));
            }
            state.bytes -= *spent;
            return state.waiting.pop_front().map(|(bytes, _)| bytes);
        }
        if state.tail.is_empty() {
            return if state.closed { None } else { Some(Bytes::new()) };
        }
        if state.tail.len() > size {
            return Some(state.tail.split_to(size).freeze());
        }
        // The tail read whole: its buffer goes with what was read.
        state.bytes -= std::mem::take(&mut state.tail_cost);
        Some(std::mem::take(&mut state.tail).freeze())
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if !state.waiting.is_empty() || !state.tail.is_empty() || state.closed {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// What a buffer of `bytes` costs while it waits.
fn cost(bytes: usize) -> usize {
    bytes.saturating_add(CHUNK_OVERHEAD)
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
        let largest = STDIN_BUFFER_BYTES - CHUNK_OVERHEAD;
        writer.write(vec![0; largest + 1]).unwrap_err();
        writer.write(vec![0; largest]).unwrap();
        assert_eq!(writer.write(&b"x"[..]), Err(StdinError::Full { waiting: STDIN_BUFFER_BYTES }));
    }

    #[test]
    fn small_writes_share_buffers_and_their_memory_is_counted() {
        let pipe = Pipe::new(Stdin::Open(Bytes::new()));
        let writer = StdinWriter { pipe: pipe.clone() };
        let mut written: usize = 0;
        while writer.write(&b"x"[..]).is_ok() {
            written += 1;
        }
        let buffers = written.div_ceil(MERGE_BELOW);
        assert_eq!(buffers, STDIN_BUFFER_BYTES / cost(MERGE_BELOW), "{written} one-byte writes");
        assert_eq!(lock(&pipe.state).waiting.len() + 1, buffers, "one buffer per {MERGE_BELOW} small writes");
        // Small and large writes come out in the order they went in.
        let pipe = Pipe::new(Stdin::Open(Bytes::new()));
        let writer = StdinWriter { pipe: pipe.clone() };
        for part in [&b"ab"[..], &[b'c'; MERGE_BELOW][..], b"d", b"e"] {
            writer.write(part).unwrap();
        }
        let mut read = Vec::new();
        while let Some(bytes) = pipe.read(3).filter(|b| !b.is_empty()) {
            read.extend_from_slice(&bytes);
        }
        assert_eq!(read, [&b"ab"[..], &[b'c'; MERGE_BELOW][..], b"de"].concat());
        assert_eq!(lock(&pipe.state).bytes, 0, "what was read is given back");
    }

    #[test]
    fn closed_and_given_inputs_end() {
        assert_eq!(Pipe::new(Stdin::Closed).read(9), None);
        let given = Pipe::new(Stdin::Data(Bytes::from_static(b"42\n")));
        assert_eq!(given.read(9).unwrap(), "42\n");
        assert_eq!(given.read(9), None);
    }
}
