//! The run vocabulary every other module speaks: what a session reports
//! (`SessionEvent`), why a call ended (`EndReason`) and what it cost
//! (`RunOutcome`), and the one-shot `StopSignal`. A leaf: it imports nothing
//! of the crate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

/// What a session tells its listener, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// The instance exists and is ready for calls.
    Spawned,
    /// A chunk of stdout, as the guest wrote it.
    Stdout(Bytes),
    /// A chunk of stderr, as the guest wrote it (and the host's notices).
    Stderr(Bytes),
    /// A call (run or eval) ended.
    Finished(RunOutcome),
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The code ran to its end or exited by itself.
    Exit,
    /// An uncaught error, or the interpreter crashed.
    Error,
    /// Someone stopped it.
    Killed,
    /// The wall-clock limit passed.
    Timeout,
    /// The memory limit refused an allocation and the code failed.
    Memory,
    /// The fuel (CPU) budget ran out.
    Fuel,
    /// stdout and stderr exceeded their byte budget.
    OutputLimit,
    /// The files written under `/tmp` exceeded their budget.
    ScratchLimit,
    /// Cluster mode: the node running it stopped answering (it died, or
    /// lost its connection) before it reported the end.
    NodeLost,
}

impl EndReason {
    pub const ALL: [EndReason; 9] = [
        EndReason::Exit,
        EndReason::Error,
        EndReason::Killed,
        EndReason::Timeout,
        EndReason::Memory,
        EndReason::Fuel,
        EndReason::OutputLimit,
        EndReason::ScratchLimit,
        EndReason::NodeLost,
    ];

    /// The name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Exit => "exit",
            EndReason::Error => "error",
            EndReason::Killed => "killed",
            EndReason::Timeout => "timeout",
            EndReason::Memory => "memory",
            EndReason::Fuel => "fuel",
            EndReason::OutputLimit => "output-limit",
            EndReason::ScratchLimit => "scratch-limit",
            EndReason::NodeLost => "node-lost",
        }
    }

    /// The exit code reported for a call stopped for this reason: the shell's
    /// 124 for time limits and 137 (killed) for the others the host enforces.
    pub(crate) fn forced_exit_code(self) -> Option<i32> {
        match self {
            EndReason::Exit | EndReason::Error => None,
            EndReason::Timeout | EndReason::Fuel => Some(124),
            EndReason::Killed
            | EndReason::Memory
            | EndReason::OutputLimit
            | EndReason::ScratchLimit
            | EndReason::NodeLost => Some(137),
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub exit_code: i32,
    pub reason: EndReason,
    /// The host's explanation when a limit or a crash ended the call.
    pub message: Option<String>,
    pub wall_time: Duration,
    pub fuel_used: u64,
    /// The most linear memory the guest held during the call, in bytes.
    pub peak_memory: usize,
    /// The value of the code's trailing expression, as the language displays
    /// it (at most `VALUE_BYTES`), when the call returned one that was not
    /// None, undefined or nil. Not kept in a run's saved record.
    pub value: Option<String>,
}

/// The longest display of a trailing expression's value kept, in bytes;
/// longer ones are cut (at a character boundary) and end in "…".
pub const VALUE_BYTES: usize = 64 << 10;

/// `text` cut to `VALUE_BYTES`.
pub(crate) fn bounded_value(mut text: String) -> String {
    if text.len() > VALUE_BYTES {
        let mut end = VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The one-shot stop of a session, shared by its kill handles and its output sinks.
#[derive(Clone, Debug)]
pub(crate) struct StopSignal(Arc<watch::Sender<Option<EndReason>>>);

impl StopSignal {
    pub(crate) fn new() -> Self {
        StopSignal(Arc::new(watch::channel(None).0))
    }

    /// Records the first reason given and returns true; later ones are ignored.
    pub(crate) fn stop(&self, reason: EndReason) -> bool {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn reason(&self) -> Option<EndReason> {
        *self.0.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<EndReason>> {
        self.0.subscribe()
    }
}
