//! What a session tells its listener, sent from one place so a call's end is
//! reported exactly once and nothing of the call comes after it.
//!
//! A call usually reports its own end when the guest returns. A KILL must not
//! wait for that: on a loaded machine the killed guest's task can sit behind
//! many busy guests before it is polled again. So the kill handle reports the
//! call as ended at once, and the `Reporter` makes that the call's one end:
//! output the guest writes afterwards is dropped, and when the call itself
//! finishes it takes the reported outcome instead of sending a second one.
//! The guest cannot run on after the report: the stop is seen at its next
//! epoch check (the kill bumps the epoch), where it traps.
//!
//! Events travel through an `EventQueue` bounded in bytes of output: the
//! guest's output streams say "not ready" while it is full, so a listener that
//! does not read slows its own session's guest (until its wall clock runs
//! out), never the server's memory. Output written while the listener is
//! behind is merged into chunks of up to `CHUNK_BYTES`, so a guest writing a
//! byte at a time costs bytes, not an event per byte.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::run::{EndReason, RunOutcome, SessionEvent};

/// Output written while the listener is behind is merged up to this size.
pub(crate) const CHUNK_BYTES: usize = 16 << 10;

/// A session's events on their way to its listener.
#[derive(Debug)]
pub(crate) struct EventQueue {
    state: Mutex<QueueState>,
    /// The listener waits here for events.
    readable: Notify,
    /// Output streams wait here for room.
    writable: Notify,
    /// Bytes of output held at most.
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Item>,
    output_bytes: usize,
    listener_gone: bool,
    reporter_gone: bool,
}

#[derive(Debug)]
enum Item {
    Event(SessionEvent),
    Stdout(BytesMut),
    Stderr(BytesMut),
}

impl EventQueue {
    /// A queue holding at most `capacity` bytes of output, and its receiving end.
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, SessionEvents) {
        let queue = Arc::new(EventQueue {
            state: Mutex::new(QueueState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            capacity: capacity.max(1),
        });
        (queue.clone(), SessionEvents { queue })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        crate::sync::lock(&self.state)
    }

    fn push_event(&self, event: SessionEvent) {
        let mut state = self.lock();
        if !state.listener_gone {
            state.items.push_back(Item::Event(event));
            drop(state);
            self.readable.notify_one();
        }
    }

    fn push_output(&self, stderr: bool, bytes: &[u8]) {
        let mut state = self.lock();
        if state.listener_gone || bytes.is_empty() {
            return;
        }
        state.output_bytes += bytes.len();
        let merged = match state.items.back_mut() {
            Some(Item::Stdout(chunk)) if !stderr && chunk.len() + bytes.len() <= CHUNK_BYTES => {
                chunk.extend_from_slice(bytes);
                true
            }
            Some(Item::Stderr(chunk)) if stderr && chunk.len() + bytes.len() <= CHUNK_BYTES => {
                chunk.extend_from_slice(bytes);
                true
            }
            _ => false,
        };
        if !merged {
            let chunk = BytesMut::from(bytes);
            state.items.push_back(if stderr { Item::Stderr(chunk) } else { Item::Stdout(chunk) });
        }
        drop(state);
        self.readable.notify_one();
    }

    /// Bytes of output that may be written now without waiting (everything,
    /// once nobody listens: it is dropped).
    fn room(&self) -> usize {
        let state = self.lock();
        if state.listener_gone { usize::MAX } else { self.capacity.saturating_sub(state.output_bytes) }
    }

    /// Waits until there is room for output.
    async fn wait_for_room(&self) {
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.room() > 0 {
                return;
            }
            notified.await;
        }
    }

    fn pop(&self) -> Option<Option<SessionEvent>> {
        let mut state = self.lock();
        let Some(item) = state.items.pop_front() else {
            return if state.reporter_gone { Some(None) } else { None };
        };
        let event = match item {
            Item::Event(event) => return Some(Some(event)),
            Item::Stdout(chunk) => SessionEvent::Stdout(chunk.freeze()),
            Item::Stderr(chunk) => SessionEvent::Stderr(chunk.freeze()),
        };
        if let SessionEvent::Stdout(bytes) | SessionEvent::Stderr(bytes) = &event {
            state.output_bytes -= bytes.len();
        }
        drop(state);
        self.writable.notify_waiters();
        Some(Some(event))
    }
}

/// The receiving end of a session's events, in order. Dropping it discards
/// whatever the session sends from then on.
#[derive(Debug)]
pub struct SessionEvents {
    queue: Arc<EventQueue>,
}

impl SessionEvents {
    /// The next event; `None` once the session is gone and every event was read.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        loop {
            let notified = self.queue.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.queue.pop() {
                return event;
            }
            notified.await;
        }
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<SessionEvent> {
        self.queue.pop().flatten()
    }
}

impl Drop for SessionEvents {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.listener_gone = true;
        state.items.clear();
        state.output_bytes = 0;
        drop(state);
        self.queue.writable.notify_waiters();
    }
}

/// The sending side of a session's events and the state of its current call.
#[derive(Debug)]
pub(crate) struct Reporter {
    events: Arc<EventQueue>,
    call: Mutex<CallState>,
    /// Fuel left and peak memory as of the last epoch tick, for a call
    /// reported while its guest is not at hand.
    fuel_left: AtomicU64,
    peak_memory: AtomicUsize,
}

#[derive(Debug)]
enum CallState {
    Idle,
    /// A call has been accepted; `reports` is false for calls whose end is
    /// returned to the caller rather than sent as an event (predict).
    Running {
        started: Instant,
        fuel: u64,
        reports: bool,
    },
    /// The call was reported ended before its guest returned.
    Reported(RunOutcome),
}

/// How `Reporter::begin` found the session.
pub(crate) enum Begin {
    /// The call may run; it counts from this instant.
    Run(Instant),
    /// A kill already ended this call while it waited to start.
    AlreadyEnded(RunOutcome),
}

impl Reporter {
    pub(crate) fn new(events: Arc<EventQueue>) -> Self {
        Reporter {
            events,
            call: Mutex::new(CallState::Idle),
            fuel_left: AtomicU64::new(0),
            peak_memory: AtomicUsize::new(0),
        }
    }

    /// Sends an event that is not a call's end (`Spawned`): dropped once the
    /// current call has been reported ended.
    pub(crate) fn send(&self, event: SessionEvent) {
        let call = self.lock();
        if !matches!(*call, CallState::Reported(_)) {
            self.events.push_event(event);
        }
    }

    /// Sends output: dropped once the current call has been reported ended.
    /// Writers check `room` first and wait in `wait_for_room`.
    pub(crate) fn output(&self, stderr: bool, bytes: &[u8]) {
        let call = self.lock();
        if !matches!(*call, CallState::Reported(_)) {
            self.events.push_output(stderr, bytes);
        }
    }

    /// Bytes of output that may be sent now.
    pub(crate) fn room(&self) -> usize {
        self.events.room()
    }

    /// Waits until output may be sent.
    pub(crate) async fn wait_for_room(&self) {
        self.events.wait_for_room().await
    }

    /// Marks a call as accepted before its task runs, so that a kill while it
    /// waits is reported at once. `begin` keeps this start time.
    pub(crate) fn accept(&self, fuel: u64) {
        let mut call = self.lock();
        if matches!(*call, CallState::Idle) {
            *call = CallState::Running { started: Instant::now(), fuel, reports: true };
        }
    }

    /// Starts a call with `fuel` to spend.
    pub(crate) fn begin(&self, fuel: u64, reports: bool) -> Begin {
        self.fuel_left.store(fuel, Ordering::Relaxed);
        self.peak_memory.store(0, Ordering::Relaxed);
        let mut call = self.lock();
        match &*call {
            CallState::Reported(outcome) => {
                let outcome = outcome.clone();
                *call = CallState::Idle;
                Begin::AlreadyEnded(outcome)
            }
            CallState::Running { started, .. } => {
                let started = *started;
                *call = CallState::Running { started, fuel, reports };
                Begin::Run(started)
            }
            CallState::Idle => {
                let started = Instant::now();
                *call = CallState::Running { started, fuel, reports };
                Begin::Run(started)
            }
        }
    }

    /// Notes the guest's progress; called at every epoch tick.
    pub(crate) fn progress(&self, fuel_left: u64, peak_memory: usize) {
        self.fuel_left.store(fuel_left, Ordering::Relaxed);
        self.peak_memory.store(peak_memory, Ordering::Relaxed);
    }

    /// Ends the current call with `outcome`, unless a kill already did: then
    /// that reported outcome is the call's, and is returned instead.
    pub(crate) fn finish(&self, outcome: RunOutcome) -> RunOutcome {
        let mut call = self.lock();
        let state = std::mem::replace(&mut *call, CallState::Idle);
        match state {
            CallState::Reported(reported) => reported,
            CallState::Running { reports, .. } => {
                if reports {
                    self.events.push_event(SessionEvent::Finished(outcome.clone()));
                }
                outcome
            }
            CallState::Idle => outcome,
        }
    }

    /// Stops the current call with `stop` (false: something stopped it
    /// already, and nothing is reported here), then reports it ended for
    /// `reason` now, if one is running and reports its end; returns what was
    /// reported. Both happen under the call's lock: a guest that ends because
    /// of this stop (on another thread, at once) finishes only after it, and
    /// finds its end reported.
    pub(crate) fn stop_and_end_now(
        &self,
        stop: impl FnOnce() -> bool,
        reason: EndReason,
        message: String,
    ) -> Option<RunOutcome> {
        let mut call = self.lock();
        if !stop() {
            return None;
        }
        let CallState::Running { started, fuel, reports: true } = *call else { return None };
        let outcome = RunOutcome {
            exit_code: reason.forced_exit_code().unwrap_or(137),
            reason,
            message: Some(message),
            wall_time: started.elapsed(),
            fuel_used: fuel.saturating_sub(self.fuel_left.load(Ordering::Relaxed)),
            peak_memory: self.peak_memory.load(Ordering::Relaxed),
            value: None,
        };
        self.events.push_event(SessionEvent::Finished(outcome.clone()));
        *call = CallState::Reported(outcome.clone());
        Some(outcome)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallState> {
        crate::sync::lock(&self.call)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.events.lock().reporter_gone = true;
        self.events.readable.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn output_is_merged_and_bounded_in_bytes() {
        let (queue, mut events) = EventQueue::new(100);
        let reporter = Reporter::new(queue);
        for _ in 0..60 {
            reporter.output(false, b"x");
        }
        reporter.output(true, b"e");
        reporter.output(false, b"y");
        assert_eq!(reporter.room(), 100 - 62);
        assert_eq!(events.try_recv(), Some(SessionEvent::Stdout(Bytes::from("x".repeat(60)))));
        assert_eq!(events.try_recv(), Some(SessionEvent::Stderr(Bytes::from("e"))));
        assert_eq!(events.try_recv(), Some(SessionEvent::Stdout(Bytes::from("y"))));
        assert_eq!(reporter.room(), 100);
        reporter.output(false, &[b'z'; 100]);
        assert_eq!(reporter.room(), 0);
        let waiting = tokio::spawn({
            let reporter = Arc::new(reporter);
            async move {
                reporter.wait_for_room().await;
                reporter
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a full queue makes writers wait");
        assert!(matches!(events.recv().await, Some(SessionEvent::Stdout(_))));
        let reporter = waiting.await.unwrap();
        drop(events);
        assert_eq!(reporter.room(), usize::MAX, "nobody listens: nothing is held");
    }

    #[tokio::test]
    async fn the_listener_sees_the_end_once_the_reporter_is_gone() {
        let (queue, mut events) = EventQueue::new(10);
        let reporter = Reporter::new(queue);
        reporter.send(SessionEvent::Spawned);
        drop(reporter);
        assert_eq!(events.recv().await, Some(SessionEvent::Spawned));
        assert_eq!(events.recv().await, None);
    }
}
