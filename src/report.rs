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

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::session::{EndReason, RunOutcome, SessionEvent};

/// The sending side of a session's events and the state of its current call.
#[derive(Debug)]
pub(crate) struct Reporter {
    events: UnboundedSender<SessionEvent>,
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
    pub(crate) fn new(events: UnboundedSender<SessionEvent>) -> Self {
        Reporter {
            events,
            call: Mutex::new(CallState::Idle),
            fuel_left: AtomicU64::new(0),
            peak_memory: AtomicUsize::new(0),
        }
    }

    /// Sends an event that is not a call's end (`Spawned`, output): dropped
    /// once the current call has been reported ended.
    pub(crate) fn send(&self, event: SessionEvent) {
        let call = self.lock();
        if !matches!(*call, CallState::Reported(_)) {
            // A closed channel means nobody listens any more.
            let _ = self.events.send(event);
        }
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
                    let _ = self.events.send(SessionEvent::Finished(outcome.clone()));
                }
                outcome
            }
            CallState::Idle => outcome,
        }
    }

    /// Reports the current call as ended for `reason` now, if one is running
    /// and reports its end; returns what was reported.
    pub(crate) fn end_now(&self, reason: EndReason, message: String) -> Option<RunOutcome> {
        let mut call = self.lock();
        let CallState::Running { started, fuel, reports: true } = *call else { return None };
        let outcome = RunOutcome {
            exit_code: reason.forced_exit_code().unwrap_or(137),
            reason,
            message: Some(message),
            wall_time: started.elapsed(),
            fuel_used: fuel.saturating_sub(self.fuel_left.load(Ordering::Relaxed)),
            peak_memory: self.peak_memory.load(Ordering::Relaxed),
        };
        let _ = self.events.send(SessionEvent::Finished(outcome.clone()));
        *call = CallState::Reported(outcome.clone());
        Some(outcome)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallState> {
        crate::sync::lock(&self.call)
    }
}
