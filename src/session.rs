//! One guest instance and everything that happens to it.
//!
//! A `Session` owns a wasmtime `Store` and its instance. Each call into the
//! guest (`run`, `eval`, `predict`) is driven here, on the caller's tokio task,
//! under the session's `Limits`: the guest yields to tokio at every epoch tick,
//! so a wall-clock timeout or a stop signal (kill, output limit) drops the call
//! within a tick and other sessions keep running meanwhile. Any trap or stopped
//! call ends the instance; placeholders stay readable after that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use wasmtime::{Engine, Store};

use crate::error::Error;
use crate::guest::{Call, Instance, Returned};
use crate::host::{HostState, Placeholders};
use crate::input::StdinWriter;
use crate::language::Language;
use crate::limits::Limits;
use crate::output::OutputBudget;
use crate::program::Program;
use crate::report::{Begin, Reporter};
use crate::run::{EndReason, RunOutcome, StopSignal, bounded_value};
use crate::scratch::{self, Scratch, ScratchFile, ScratchReadError};

/// Stops a session's current and future calls, from any thread or task.
#[derive(Clone)]
pub struct KillHandle {
    signal: StopSignal,
    reporter: Arc<Reporter>,
    engine: Engine,
}

impl KillHandle {
    #[cfg(feature = "cluster")]
    pub(crate) fn new(signal: StopSignal, reporter: Arc<Reporter>, engine: Engine) -> Self {
        KillHandle { signal, reporter, engine }
    }

    /// Stops the running call and ends the session. A running `run` or `eval`
    /// is reported ended (`SessionEvent::Finished`) right here, without
    /// waiting for its task to be polled; the outcome reported is returned.
    /// The guest stops at its next epoch check, which this brings forward.
    pub fn kill(&self) -> Option<RunOutcome> {
        let mut stopped = false;
        let stop = || {
            stopped = self.signal.stop(EndReason::Killed);
            stopped
        };
        let reported = self.reporter.stop_and_end_now(stop, EndReason::Killed, "killed".into());
        if stopped {
            // Every running guest reaches its epoch deadline now; the killed
            // one traps there, the others yield once and go on.
            self.engine.increment_epoch();
        }
        reported
    }
}

impl std::fmt::Debug for KillHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillHandle").field("signal", &self.signal).finish_non_exhaustive()
    }
}

/// A live guest instance of one language.
/// Built by `Runtime::session`, which sends `SessionEvent::Spawned` first.
pub struct Session {
    pub(crate) language: Language,
    pub(crate) limits: Limits,
    pub(crate) store: Store<HostState>,
    pub(crate) guest: Instance,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) stop: StopSignal,
    pub(crate) budget: Arc<OutputBudget>,
    pub(crate) placeholders: Placeholders,
    /// Writes to the guest's standard input (if the session opened it).
    pub(crate) stdin: StdinWriter,
    /// Set once the instance can take no more calls, with the reason why.
    pub(crate) ended: Option<String>,
    /// When its scratch folder was last measured at a call's end.
    pub(crate) scratch_checked: Instant,
}

/// Fuel a model call burns between yields: 0.1–0.3 ms of guest work, five
/// times what a small Python prediction needs (~90,000; JavaScript ~25,000).
pub const MODEL_CALL_SLICE_FUEL: u64 = 500_000;

impl Session {
    pub fn language(&self) -> Language {
        self.language
    }

    /// A handle that stops this session from elsewhere.
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle { signal: self.stop.clone(), reporter: self.reporter.clone(), engine: self.store.engine().clone() }
    }

    /// Writes to the guest's standard input while calls run, when the session
    /// opened it (`Stdin::Open`); otherwise every write is refused as closed.
    pub fn stdin(&self) -> StdinWriter {
        self.stdin.clone()
    }

    /// The session's placeholders; readable while a call runs and after the session ends.
    pub fn placeholders(&self) -> Placeholders {
        self.placeholders.clone()
    }

    /// Whether the instance can still take calls.
    pub fn is_live(&self) -> bool {
        self.ended.is_none() && self.stop.reason().is_none()
    }

    /// Names of the models the program saved.
    pub fn models(&self) -> Vec<String> {
        self.store.data().model_names()
    }

    /// Linear memory the instance holds now (beyond python-sci's warmed image).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.held()
    }

    /// The files the guest wrote in its scratch folder (`/tmp`).
    pub fn scratch_files(&self) -> Vec<ScratchFile> {
        self.store.data().scratch.as_ref().map(Scratch::files).unwrap_or_default()
    }

    /// A file of its scratch folder, by its path under `/tmp`; at most
    /// `max_bytes` are read (a larger file is an error that says so).
    pub fn scratch_file(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        let scratch = self.store.data().scratch.as_ref().ok_or(ScratchReadError::NoFolder)?;
        Ok(scratch.read(path, max_bytes)?)
    }

    /// Whether the last call was refused memory (the instance may have
    /// recovered, but a server does not keep it).
    pub fn hit_limit(&self) -> bool {
        self.store.data().limiter.refused()
    }

    /// Runs a program's main file. The instance stays live afterwards unless the
    /// call was stopped or trapped, so `eval` and `predict` can follow.
    pub async fn run(&mut self, program: Program) -> Result<RunOutcome, Error> {
        let program = program.validated()?;
        let (_, outcome) = self.call(Call::Run(program)).await?;
        Ok(outcome)
    }

    /// Runs more code in the global scope of the last run.
    pub async fn eval(&mut self, code: &str) -> Result<RunOutcome, Error> {
        let (_, outcome) = self.call(Call::Eval(code.to_string())).await?;
        Ok(outcome)
    }

    /// Asks the model the program saved as `name` to predict `input` (JSON
    /// text). The outer error is the host's (no such model, session ended, a
    /// limit hit, an answer over `Limits::prediction_bytes`); the inner one is
    /// the model's own error message. The answer is JSON text, checked but
    /// not expanded.
    pub async fn predict(&mut self, name: &str, input: &RawValue) -> Result<Result<Box<RawValue>, String>, Error> {
        self.check_model(name)?;
        let (returned, outcome) = self.call(Call::Predict(name.to_string(), input.get().to_string())).await?;
        match returned {
            Some(Returned::Prediction(Ok(json))) => {
                let limit = self.limits.prediction_bytes;
                if json.len() > limit {
                    return Err(Error::PredictionTooLarge { bytes: json.len(), limit });
                }
                Ok(Ok(RawValue::from_string(json).map_err(|e| Error::InvalidInput(e.to_string()))?))
            }
            Some(Returned::Prediction(Err(message))) => Ok(Err(message)),
            _ => Err(Error::SessionEnded(outcome.message.unwrap_or_else(|| outcome.reason.to_string()))),
        }
    }

    /// Calls the training method of the model the program saved as `name`
    /// (Python `partial_fit` or `train`, JavaScript `train`) on `input` (JSON
    /// text). The errors are as `predict`'s.
    pub async fn train(&mut self, name: &str, input: &RawValue) -> Result<Result<(), String>, Error> {
        self.check_model(name)?;
        let (returned, outcome) = self.call(Call::Train(name.to_string(), input.get().to_string())).await?;
        match returned {
            Some(Returned::Trained(result)) => Ok(result),
            _ => Err(Error::SessionEnded(outcome.message.unwrap_or_else(|| outcome.reason.to_string()))),
        }
    }

    fn check_model(&self, name: &str) -> Result<(), Error> {
        self.check_live()?;
        if self.store.data().has_model(name) {
            return Ok(());
        }
        let models = self.models();
        Err(Error::UnknownModel {
            name: name.to_string(),
            available: if models.is_empty() { "none".into() } else { models.join(", ") },
        })
    }

    /// Marks a run as accepted before the task that drives it is scheduled, so
    /// a kill in between is reported at once.
    pub(crate) fn accept_run(&self) {
        self.reporter.accept(self.limits.fuel);
    }

    /// Ends the session after a call that could not run or did not finish
    /// normally, reporting it as failed (its end is always reported).
    pub(crate) fn abandon(&mut self, message: String) -> RunOutcome {
        self.ended = Some(message.clone());
        let outcome = RunOutcome {
            exit_code: 1,
            reason: EndReason::Error,
            message: Some(message),
            wall_time: Duration::ZERO,
            fuel_used: 0,
            peak_memory: 0,
            value: None,
        };
        self.reporter.accept(0);
        self.reporter.finish(outcome)
    }

    fn check_live(&self) -> Result<(), Error> {
        if let Some(reason) = self.stop.reason() {
            return Err(Error::SessionEnded(format!("stopped: {reason}")));
        }
        if let Some(why) = &self.ended {
            return Err(Error::SessionEnded(why.clone()));
        }
        Ok(())
    }

    async fn call(&mut self, call: Call) -> Result<(Option<Returned>, RunOutcome), Error> {
        if let Some(why) = &self.ended {
            return Err(Error::SessionEnded(why.clone()));
        }
        let reports = !call.is_model_call();
        let limits = self.limits.clone();
        // A model call yields every slice of fuel, so the first slice may run
        // on the caller's thread (`Registry::model_call`) and the rest moves on.
        let slice = if reports { None } else { Some(MODEL_CALL_SLICE_FUEL) };
        self.store.fuel_async_yield_interval(slice).map_err(|e| Error::Engine(e.to_string()))?;
        self.store.set_fuel(limits.fuel).map_err(|e| Error::Engine(e.to_string()))?;
        let started = match self.reporter.begin(limits.fuel, reports) {
            Begin::Run(started) => started,
            Begin::AlreadyEnded(outcome) => {
                self.ended = outcome.message.clone().or_else(|| Some(outcome.reason.to_string()));
                return Ok((None, outcome));
            }
        };
        if let Some(reason) = self.stop.reason() {
            // Stopped before this call began (a KILL right after SPAWN): it
            // ends here without running, and still reports its end.
            let message = self.stop_message(reason);
            self.ended = Some(message.clone());
            let outcome = RunOutcome {
                exit_code: reason.forced_exit_code().unwrap_or(137),
                reason,
                message: Some(message),
                wall_time: Duration::ZERO,
                fuel_used: 0,
                peak_memory: 0,
                value: None,
            };
            return Ok((None, self.reporter.finish(outcome)));
        }
        self.store.set_epoch_deadline(1);
        self.store.data_mut().limiter.start_call();
        self.budget.reset(limits.output_bytes);

        let mut stopped = self.stop.subscribe();
        let store = &mut self.store;
        let guest = &self.guest;
        let finished = tokio::select! {
            biased;
            reason = stopped.wait_for(Option::is_some) => {
                CallEnd::Stopped(reason.map(|r| r.unwrap_or(EndReason::Killed)).unwrap_or(EndReason::Killed))
            }
            result = tokio::time::timeout(limits.wall_clock, guest.call(store, call)) => match result {
                Err(_) => CallEnd::Stopped(EndReason::Timeout),
                Ok(Ok(returned)) => CallEnd::Returned(returned),
                Ok(Err(trap)) => CallEnd::Trapped(trap),
            },
        };
        // A stop seen at an epoch check traps the guest (see `Runtime::session`).
        let finished = match (finished, self.stop.reason()) {
            (CallEnd::Trapped(_), Some(reason)) => CallEnd::Stopped(reason),
            (finished, _) => finished,
        };
        let wall_time = started.elapsed();
        let fuel_used = limits.fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let memory_refused = self.store.data().limiter.refused();
        let peak_memory = self.store.data().limiter.peak();

        let (returned, exit_code, mut reason, message, value) = match finished {
            CallEnd::Returned(Returned::Status(status, value)) => {
                let reason = if status == 0 { EndReason::Exit } else { EndReason::Error };
                (None, status, reason, None, value.map(bounded_value))
            }
            CallEnd::Returned(prediction) => (Some(prediction), 0, EndReason::Exit, None, None),
            CallEnd::Stopped(reason) => {
                let message = self.stop_message(reason);
                self.ended = Some(message.clone());
                (None, 0, reason, Some(message), None)
            }
            CallEnd::Trapped(error) => {
                let (reason, exit_code, message) = classify_trap(&error);
                self.ended = Some(message.clone());
                (None, exit_code, reason, Some(message), None)
            }
        };
        if reason == EndReason::Error && memory_refused {
            reason = EndReason::Memory;
        }
        if self.budget.exceeded() {
            reason = EndReason::OutputLimit;
            self.stop.stop(EndReason::OutputLimit);
        }
        // Files written past the scratch budget (seen here, or at a tick).
        let scratch_due = reports || self.scratch_checked.elapsed() >= scratch::CHECK_INTERVAL;
        if scratch_due {
            self.scratch_checked = Instant::now();
        }
        let scratch = self.store.data().scratch.as_ref();
        let scratch_over = scratch_due && scratch.is_some_and(|s| s.over(limits.scratch_bytes));
        if scratch_over || self.stop.reason() == Some(EndReason::ScratchLimit) {
            reason = EndReason::ScratchLimit;
            self.stop.stop(EndReason::ScratchLimit);
        }
        let message = message.or_else(|| match reason {
            EndReason::Memory => {
                Some(format!("the memory limit of {} MiB was reached", self.store.data().limiter.limit() >> 20))
            }
            EndReason::OutputLimit => Some(format!("the output limit of {} bytes was reached", limits.output_bytes)),
            EndReason::ScratchLimit => Some(self.stop_message(EndReason::ScratchLimit)),
            _ => None,
        });
        let outcome = RunOutcome {
            exit_code: reason.forced_exit_code().unwrap_or(exit_code),
            reason,
            message,
            wall_time,
            fuel_used,
            peak_memory,
            value,
        };
        Ok((returned, self.reporter.finish(outcome)))
    }

    fn stop_message(&self, reason: EndReason) -> String {
        match reason {
            EndReason::Timeout => format!("the time limit of {:?} was exceeded", self.limits.wall_clock),
            EndReason::OutputLimit => format!("the output limit of {} bytes was reached", self.limits.output_bytes),
            EndReason::ScratchLimit => format!(
                "the files under /tmp passed their limit of {} bytes or {} files",
                self.limits.scratch_bytes,
                crate::scratch::MAX_ENTRIES
            ),
            EndReason::Killed => "killed".to_string(),
            other => other.to_string(),
        }
    }
}

enum CallEnd {
    Returned(Returned),
    Stopped(EndReason),
    Trapped(wasmtime::Error),
}

/// Turns a trap into a reason, an exit code and a message for the user.
fn classify_trap(error: &wasmtime::Error) -> (EndReason, i32, String) {
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            if exit.0 == 0 { EndReason::Exit } else { EndReason::Error },
            exit.0,
            format!("the program exited the interpreter with status {}", exit.0),
        );
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => (EndReason::Fuel, 124, "the fuel (CPU) limit was exhausted".into()),
        Some(wasmtime::Trap::Interrupt) => (EndReason::Timeout, 124, "the time limit was exceeded".into()),
        Some(wasmtime::Trap::StackOverflow) => {
            (EndReason::Error, 1, "the interpreter's stack overflowed (recursion too deep)".into())
        }
        Some(trap) => (EndReason::Error, 1, format!("the interpreter crashed: {trap}")),
        None => (EndReason::Error, 1, format!("the interpreter crashed: {error}")),
    }
}
