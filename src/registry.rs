//! The sessions a server holds, by id, shared by every connection.
//!
//! A run gets an id, a semaphore permit (the cap on concurrently running
//! guests: past it, `start` fails at once with `Error::Busy`, never queues),
//! and a task that drives it. When the run ends its session stays live for
//! `predict` until it has been idle for `idle_expiry`; past `max_live` live
//! sessions the least recently used lose their instance first (their record
//! and placeholders stay until expiry). Faces find runs here by id, from any
//! connection.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::error::Error;
use crate::host::Placeholders;
use crate::language::Language;
use crate::program::Program;
use crate::runtime::{Runtime, SessionOptions};
use crate::session::{EndReason, KillHandle, RunOutcome, Session, SessionEvent, SessionEvents};
use crate::store::{RunRecord, RunWriter, Store};
use crate::sync::lock;

/// How many sessions a registry holds and for how long.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Guests running at once; more are refused as busy.
    pub max_running: usize,
    /// How long a finished session (its record, placeholders and models) is kept after its last use.
    pub idle_expiry: Duration,
    /// Finished sessions kept live (with their instance, for `predict`) at once.
    pub max_live: usize,
    /// Finished runs whose records are held in memory; past it the least
    /// recently used are dropped (with a store, they are still found there).
    pub max_records: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { max_running: 64, idle_expiry: Duration::from_secs(600), max_live: 1000, max_records: 100_000 }
    }
}

/// Where a run is in its life, as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Ended with exit code 0.
    Finished,
    /// Ended with an error, a non-zero exit, or a memory or output limit.
    Failed,
    /// Killed or stopped by a client.
    Stopped,
    /// Stopped by the wall-clock or fuel limit.
    Timeout,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Timeout => "timeout",
        }
    }

    pub(crate) fn of_outcome(outcome: &RunOutcome) -> RunState {
        match outcome.reason {
            EndReason::Exit if outcome.exit_code == 0 => RunState::Finished,
            EndReason::Killed => RunState::Stopped,
            EndReason::Timeout | EndReason::Fuel => RunState::Timeout,
            _ => RunState::Failed,
        }
    }
}

/// A snapshot of one run for status queries.
#[derive(Clone, Debug)]
pub struct RunStatus {
    pub id: String,
    pub language: Language,
    pub state: RunState,
    pub started_at: SystemTime,
    /// Set once the run has ended.
    pub outcome: Option<RunOutcome>,
    /// Whether its instance is still held (models can predict).
    pub live: bool,
}

/// One run and, after it, its live session.
pub struct Entry {
    id: String,
    language: Language,
    started_at: SystemTime,
    /// `None` for a run restored from the store: it ended before this process started.
    kill: Option<KillHandle>,
    placeholders: Placeholders,
    outcome: watch::Sender<Option<RunOutcome>>,
    session: tokio::sync::Mutex<Option<Session>>,
    live: AtomicBool,
    last_used: Mutex<Instant>,
    /// The guest threads its calls run on.
    guests: tokio::runtime::Handle,
    /// Where the record of the run is saved when it ends, if anywhere.
    saver: Option<RunWriter>,
}

impl Entry {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// Stops the run if it is still going; a finished session is left alone.
    /// The run is recorded as ended at once (its events get their Finished
    /// now); its guest is torn down at its next epoch check.
    pub fn kill(&self) {
        if let Some(outcome) = self.kill.as_ref().and_then(KillHandle::kill) {
            self.live.store(false, Ordering::SeqCst);
            self.record(outcome);
        }
    }

    /// Records the run's outcome, unless one was recorded already, and saves
    /// the run's record (outcome and placeholders) to the store.
    fn record(&self, outcome: RunOutcome) {
        self.touch();
        let mut first = None;
        self.outcome.send_if_modified(|recorded| {
            if recorded.is_some() {
                return false;
            }
            first = Some(outcome.clone());
            *recorded = Some(outcome);
            true
        });
        // Saved once, by whoever recorded first (a kill, or the run's end).
        if let (Some(outcome), Some(saver)) = (first, &self.saver) {
            saver.save(RunRecord::new(
                &self.id,
                self.language,
                self.started_at,
                &outcome,
                self.placeholders.snapshot(),
            ));
        }
    }

    /// A run that ended before this process started, as the store kept it.
    fn restored(record: RunRecord, guests: tokio::runtime::Handle, placeholder_budget: usize) -> Self {
        Entry {
            language: record.language.parse().unwrap_or(Language::Python),
            started_at: record.started_at(),
            kill: None,
            outcome: watch::channel(Some(record.outcome())).0,
            placeholders: Placeholders::restored(placeholder_budget, record.placeholders),
            id: record.id,
            session: tokio::sync::Mutex::new(None),
            live: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            guests,
            saver: None,
        }
    }

    pub fn status(&self) -> RunStatus {
        self.touch();
        let outcome = self.outcome.borrow().clone();
        RunStatus {
            id: self.id.clone(),
            language: self.language,
            state: outcome.as_ref().map_or(RunState::Running, RunState::of_outcome),
            started_at: self.started_at,
            outcome,
            live: self.live.load(Ordering::SeqCst),
        }
    }

    /// Waits for the run to end.
    pub async fn finished(&self) -> RunOutcome {
        let mut rx = self.outcome.subscribe();
        let outcome = rx.wait_for(Option::is_some).await.map(|o| o.clone());
        outcome.ok().flatten().expect("a run always records its outcome before its sender is dropped")
    }

    pub fn placeholders(&self) -> &Placeholders {
        self.touch();
        &self.placeholders
    }

    /// Calls a model the run saved, on the guest threads. Waits if another
    /// call on this session is in progress.
    pub async fn predict(self: &Arc<Self>, model: &str, input: &Value) -> Result<Result<Value, String>, Error> {
        let (entry, model, input) = (self.clone(), model.to_string(), input.clone());
        let call = self.guests.spawn(async move { entry.predict_here(&model, &input).await });
        call.await.map_err(|e| Error::SessionEnded(format!("the model call crashed: {e}")))?
    }

    async fn predict_here(&self, model: &str, input: &Value) -> Result<Result<Value, String>, Error> {
        self.touch();
        if self.outcome.borrow().is_none() {
            return Err(Error::StillRunning(self.id.clone()));
        }
        let mut session = self.session.lock().await;
        let Some(live) = session.as_mut() else {
            let why = if self.kill.is_none() {
                "its instance is gone (released after it sat idle, or the server restarted); only its record and \
                 placeholders are kept; run the program again"
            } else {
                "its instance was released; run the program again"
            };
            return Err(Error::SessionEnded(why.into()));
        };
        let result = live.predict(model, input).await;
        if !live.is_live() {
            *session = None;
            self.live.store(false, Ordering::SeqCst);
        }
        result
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn is_running(&self) -> bool {
        self.outcome.borrow().is_none()
    }
}

/// A run that has just started: its entry and its event stream.
pub struct Started {
    pub entry: Arc<Entry>,
    pub events: RunEvents,
}

/// A run's events, in order. Its `Finished` comes out only once the entry has
/// recorded the outcome (and kept the instance, if asked), so a client that
/// sees the end and asks for the run's status or models gets them.
pub struct RunEvents {
    events: SessionEvents,
    entry: Arc<Entry>,
}

impl RunEvents {
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        let event = self.events.recv().await?;
        if matches!(event, SessionEvent::Finished(_)) {
            self.entry.finished().await;
        }
        Some(event)
    }
}

/// The sessions of a server. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Runtime,
    config: RegistryConfig,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    running: Arc<Semaphore>,
    closing: AtomicBool,
    /// Where finished runs are saved and found again after a restart.
    store: Option<(Arc<Store>, RunWriter)>,
}

impl Registry {
    /// Must be called inside a tokio runtime: it starts the expiry task.
    pub fn new(runtime: Runtime, config: RegistryConfig) -> Self {
        Self::build(runtime, config, None)
    }

    /// A registry that saves every finished run to `store` and answers for
    /// runs of earlier processes from it.
    pub(crate) fn persistent(runtime: Runtime, config: RegistryConfig, store: Arc<Store>) -> Result<Self, Error> {
        let writer = RunWriter::start(store.clone())?;
        Ok(Self::build(runtime, config, Some((store, writer))))
    }

    fn build(runtime: Runtime, config: RegistryConfig, store: Option<(Arc<Store>, RunWriter)>) -> Self {
        let inner = Arc::new(Inner {
            runtime,
            running: Arc::new(Semaphore::new(config.max_running)),
            config,
            entries: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            store,
        });
        tokio::spawn(expire(Arc::downgrade(&inner)));
        Registry { inner }
    }

    /// Starts running `program` in a new session, or refuses at once when busy.
    /// With `keep_live`, the instance stays after the run for `predict`;
    /// otherwise only the record and placeholders do.
    pub async fn start(
        &self,
        language: Language,
        program: Program,
        options: SessionOptions,
        keep_live: bool,
    ) -> Result<Started, Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let program = program.validated()?;
        let permit = self
            .inner
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy { limit: self.inner.config.max_running })?;
        let (mut session, events) = self.inner.runtime.session(language, options).await?;
        let entry = Arc::new(Entry {
            id: new_id(),
            language,
            started_at: SystemTime::now(),
            kill: Some(session.kill_handle()),
            placeholders: session.placeholders(),
            outcome: watch::channel(None).0,
            session: tokio::sync::Mutex::new(None),
            live: AtomicBool::new(true),
            last_used: Mutex::new(Instant::now()),
            guests: self.inner.runtime.guest_tasks().clone(),
            saver: self.inner.store.as_ref().map(|(_, writer)| writer.clone()),
        });
        self.lock().insert(entry.id.clone(), entry.clone());
        let task_entry = entry.clone();
        session.accept_run();
        entry.guests.spawn(async move {
            let _permit = permit;
            // Whatever happens to the run, its end is reported: faces wait for
            // the Finished event to send their STOP.
            let outcome = match AssertUnwindSafe(session.run(program)).catch_unwind().await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => session.abandon(e.to_string()),
                Err(_) => {
                    tracing::error!(run = %task_entry.id, "a run panicked; it is reported as failed");
                    session.abandon("internal error: the run crashed; the server log has the details".into())
                }
            };
            // The session is in place before the outcome is, so whoever sees
            // the run ended can use its models.
            if keep_live && session.is_live() {
                *task_entry.session.lock().await = Some(session);
            } else {
                task_entry.live.store(false, Ordering::SeqCst);
            }
            task_entry.record(outcome);
        });
        Ok(Started { events: RunEvents { events, entry: entry.clone() }, entry })
    }

    /// The run with this id, if it has not expired: held here, or (with a
    /// store) saved by this or an earlier process and within its retention.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        if let Some(entry) = self.lock().get(id).cloned() {
            return Some(entry);
        }
        let (store, _) = self.inner.store.as_ref()?;
        let record = match store.run(id) {
            Ok(record) => record?,
            Err(e) => {
                tracing::error!(run = %id, error = %e, "could not read a saved run");
                return None;
            }
        };
        let budget = crate::limits::Limits::DEFAULT_PLACEHOLDER_BYTES;
        let entry = Arc::new(Entry::restored(record, self.inner.runtime.guest_tasks().clone(), budget));
        Some(self.lock().entry(id.to_string()).or_insert(entry).clone())
    }

    /// Refuses new runs, stops the running ones and waits (up to `grace`) for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let running: Vec<Arc<Entry>> = self.lock().values().filter(|e| e.is_running()).cloned().collect();
        for entry in &running {
            entry.kill();
        }
        let all = futures_util::future::join_all(running.iter().map(|e| e.finished()));
        let _ = tokio::time::timeout(grace, all).await;
        if let Some((_, writer)) = &self.inner.store {
            writer.flush().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        lock(&self.inner.entries)
    }
}

/// Run ids are decimal numbers below 2^53, so JavaScript clients can hold
/// them as numbers without losing digits, as the seed protocol's clients do.
fn new_id() -> String {
    (rand::random::<u64>() % (1 << 53)).max(1).to_string()
}

/// Drops expired records, instances past `max_live` and records past
/// `max_records`, once a second.
async fn expire(registry: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = registry.upgrade() else { return };
        let (expired, mut live): (Vec<Arc<Entry>>, Vec<Arc<Entry>>) = {
            let mut entries = lock(&inner.entries);
            let mut expired: Vec<Arc<Entry>> = entries
                .values()
                .filter(|e| !e.is_running() && e.idle_for() > inner.config.idle_expiry)
                .cloned()
                .collect();
            for entry in &expired {
                entries.remove(&entry.id);
            }
            let mut finished: Vec<Arc<Entry>> = entries.values().filter(|e| !e.is_running()).cloned().collect();
            if finished.len() > inner.config.max_records {
                finished.sort_by_key(|e| std::cmp::Reverse(e.idle_for()));
                let excess = finished.len() - inner.config.max_records;
                for entry in finished.drain(..excess) {
                    entries.remove(&entry.id);
                    expired.push(entry);
                }
            }
            let live = finished.into_iter().filter(|e| e.live.load(Ordering::SeqCst)).collect();
            (expired, live)
        };
        for entry in expired {
            release(&entry).await;
        }
        if live.len() > inner.config.max_live {
            live.sort_by_key(|e| std::cmp::Reverse(e.idle_for()));
            let excess = live.len() - inner.config.max_live;
            for entry in live.into_iter().take(excess) {
                release(&entry).await;
            }
        }
    }
}

async fn release(entry: &Entry) {
    entry.live.store(false, Ordering::SeqCst);
    entry.session.lock().await.take();
}
