//! The sessions a server holds, by id, shared by every connection, and the
//! budgets they share.
//!
//! A run is started for a `Client` (its token, else its address). It takes a
//! running permit, one of `max_running` in all and of the client's share
//! (`RegistryConfig::client_share`), and one token of the client's rate
//! (`runs_per_second_per_client`); past any of them `start` fails at once
//! (busy, or rate limited with when to retry), never queues, so a client over
//! its share never blocks others. Model calls take the same permits.
//!
//! What is kept of a run depends on its `Keep`:
//! - `Nothing` (one-shot runs: ranna, processor): only the face holds it, by
//!   its `Entry`, until its end is sent;
//! - `Record`: once ended, a compact `Record` (outcome and placeholders, a
//!   few hundred bytes), also saved to the store when there is one;
//! - `Live`: as `Record`, and the instance stays for `predict` while it is
//!   used within `idle_expiry`, within `max_live` kept instances and within
//!   `live_memory_bytes` for all kept instances together. Past either bound,
//!   every client holding kept instances has an equal share of it, and the
//!   client that holds the most (over its share, whenever the bound is
//!   passed) loses its least recently used instance first: one client's
//!   sessions never push out another's while it holds no more than its
//!   share. An instance that ended by a trap or a limit is never kept.
//!
//! Records go after `idle_expiry` unused or past `max_records` (least
//! recently used first); with a store they are still found there.
//!
//! A run's id answers only the client that started it (its `owner`, kept in
//! its record as a digest, `Client::owner_key`): to any other client the id
//! is unknown, exactly as one that never existed.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use crate::error::Error;
use crate::host::{PlaceholderMemory, Placeholders};
use crate::input::StdinWriter;
use crate::language::Language;
use crate::metrics::{Face, Metrics, Refusal};
use crate::program::Program;
use crate::report::SessionEvents;
use crate::run::{EndReason, RunOutcome, SessionEvent};
use crate::runtime::{Runtime, SessionOptions};
use crate::scratch::ScratchFile;
use crate::session::{KillHandle, Session};
use crate::store::{RunRecord, RunWriter, Store, millis};
use crate::sync::lock;

/// How many sessions a registry holds, for how long, and what they may share.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Guests running at once (runs and model calls); more are refused as busy.
    pub max_running: usize,
    /// Guests one client may have running at once; `None` is a quarter of
    /// `max_running` (at least one).
    pub max_running_per_client: Option<usize>,
    /// New runs one client may start per second, on average (bursts of twice
    /// as many are let through); infinite for no limit.
    pub runs_per_second_per_client: f64,
    /// How long a finished session (its record, placeholders and models) is kept after its last use.
    pub idle_expiry: Duration,
    /// Finished sessions kept live (with their instance, for `predict`) at
    /// once; past it the client with the most loses its least recently used.
    pub max_live: usize,
    /// Memory all kept instances may hold together; past it the client
    /// holding the most loses its least recently used instance first.
    pub live_memory_bytes: usize,
    /// Finished runs whose records are held in memory; past it the least
    /// recently used are dropped (with a store, they are still found there).
    pub max_records: usize,
    /// Memory all sessions' placeholders may take together.
    pub placeholder_memory_bytes: usize,
    /// Disk the saved runs' placeholders may take together in the data folder
    /// (for the retention period); past it runs are saved without them.
    pub stored_placeholder_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_running: 64,
            max_running_per_client: None,
            runs_per_second_per_client: 50.0,
            idle_expiry: Duration::from_secs(600),
            max_live: 1000,
            live_memory_bytes: 2 << 30,
            max_records: 100_000,
            placeholder_memory_bytes: 1 << 30,
            stored_placeholder_bytes: 4 << 30,
        }
    }
}

impl RegistryConfig {
    /// Guests one client may have running at once.
    pub fn client_share(&self) -> usize {
        self.max_running_per_client.unwrap_or(self.max_running / 4).max(1)
    }
}

/// Cluster mode: where finished runs' records go to be shared with every node.
#[cfg(feature = "cluster")]
pub(crate) type RecordSink = tokio::sync::mpsc::Sender<RunRecord>;

/// How long a new run waits for its language to be prepared before it is refused.
const PREPARING_WAIT: Duration = Duration::from_secs(10);

/// What is kept of a run once it has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the caller holds the run (`Started::entry`) for as long as it needs it.
    Nothing,
    /// Its record and placeholders, found by id.
    Record,
    /// Its record, placeholders and, while it is used, its instance (for `predict`).
    Live,
}

/// Who asked: the unit of fair shares and rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// The embedding program itself: no share or rate applies.
    Local,
    /// A client known by its token (a digest of it).
    Token([u8; 32]),
    /// A client with no token, known by its address (an IPv6 /64 is one address).
    Address(IpAddr),
}

/// What a run's record keeps of the client that started it (a digest, so a
/// record names neither an address nor a token's digest).
type OwnerKey = [u8; 32];

impl Client {
    /// The digest its runs' records keep (`RunRecord::owner`).
    fn owner_key(&self) -> OwnerKey {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        match self {
            Client::Local => digest.update(b"local"),
            Client::Token(token) => {
                digest.update(b"token:");
                digest.update(token);
            }
            Client::Address(ip) => digest.update(format!("address:{ip}").as_bytes()),
        }
        digest.finalize().into()
    }
}

/// A snapshot of one run for status queries.
#[derive(Clone, Debug)]
pub struct RunStatus {
    pub id: String,
    pub language: Language,
    pub started_at: SystemTime,
    /// Set once the run has ended; `None` while it runs.
    pub outcome: Option<RunOutcome>,
    /// Whether its instance is still held (models can predict).
    pub live: bool,
}

/// A run while it goes and, for `Keep::Live`, its live session after it.
pub struct Entry {
    id: String,
    /// The client that started it: the only one its id answers.
    owner: Client,
    language: Language,
    started_at: SystemTime,
    kill: KillHandle,
    stdin: StdinWriter,
    placeholders: Placeholders,
    outcome: watch::Sender<Option<RunOutcome>>,
    session: tokio::sync::Mutex<Option<Box<Session>>>,
    live: AtomicBool,
    /// Bytes its kept instance holds, as counted in the registry's live memory.
    memory: AtomicUsize,
    /// Set by Hanami's `set_mode DIRECT`: the session takes direct-IO sockets.
    direct: AtomicBool,
    last_used: Mutex<Instant>,
    /// Where the record of the run is saved when it ends, if anywhere.
    saver: Option<RunWriter>,
    /// Cluster mode: where its record goes to be shared with every node.
    #[cfg(feature = "cluster")]
    shared: Option<RecordSink>,
    face: Face,
    metrics: Arc<Metrics>,
    /// Cluster mode: another node runs it and counts it in its metrics.
    remote: bool,
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
        if let Some(outcome) = self.kill.kill() {
            self.metrics.killed();
            self.live.store(false, Ordering::SeqCst);
            self.record(outcome);
        }
    }

    /// Records the run's outcome, unless one was recorded already, and saves
    /// the run's record (outcome and placeholders) to the store.
    pub(crate) fn record(&self, outcome: RunOutcome) {
        self.touch();
        // The value went to the run's listener; a record is kept small.
        let outcome = RunOutcome { value: None, ..outcome };
        self.outcome.send_if_modified(|recorded| {
            if recorded.is_some() {
                return false;
            }
            // Counted and saved once, by whoever records first (a kill, or
            // the run's end), and before anyone can see that the run ended:
            // a stopping server waits for its runs' ends, then flushes what
            // was saved (saved after, a record could miss that flush).
            if !self.remote {
                self.metrics.run_ended(self.language, self.face, outcome.reason, outcome.wall_time);
            }
            #[cfg(feature = "cluster")]
            let shared = self.shared.as_ref();
            #[cfg(not(feature = "cluster"))]
            let shared: Option<&()> = None;
            if self.saver.is_some() || shared.is_some() {
                let record = RunRecord::new(
                    &self.id,
                    hex(&self.owner.owner_key()),
                    self.language,
                    self.started_at,
                    &outcome,
                    self.placeholders.snapshot(),
                );
                #[cfg(feature = "cluster")]
                if let Some(shared) = shared
                    && shared.try_send(record.clone()).is_err()
                {
                    tracing::warn!(run = %self.id, "the cluster's queue of records is full; this run's record stays on this node");
                }
                if let Some(saver) = &self.saver
                    && !saver.save(record)
                {
                    self.metrics.record_unsaved();
                }
            }
            *recorded = Some(outcome);
            true
        });
    }

    pub fn status(&self) -> RunStatus {
        self.touch();
        let outcome = self.outcome.borrow().clone();
        RunStatus {
            id: self.id.clone(),
            language: self.language,
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

    /// Writes to the run's standard input, if it was started with it open.
    pub fn stdin(&self) -> &StdinWriter {
        &self.stdin
    }

    pub fn placeholders(&self) -> &Placeholders {
        self.touch();
        &self.placeholders
    }

    /// Calls the model once per input, in order, holding the instance
    /// throughout. Once a call ends the instance the rest are not made.
    async fn call_model(
        &self,
        call: ModelCall,
        model: &str,
        inputs: &[Box<RawValue>],
    ) -> Result<Vec<Result<ModelAnswer, Error>>, Error> {
        self.touch();
        if self.is_running() {
            return Err(Error::StillRunning(self.id.clone()));
        }
        let mut session = self.session.lock().await;
        let mut answers = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Some(live) = session.as_mut() else {
                answers.push(Err(released()));
                continue;
            };
            answers.push(match call {
                ModelCall::Predict => live.predict(model, input).await.map(|r| r.map(Some)),
                ModelCall::Train => live.train(model, input).await.map(|r| r.map(|()| None)),
                ModelCall::Models => serde_json::to_string(&live.models())
                    .ok()
                    .and_then(|names| RawValue::from_string(names).ok())
                    .map(|names| Ok(Some(names)))
                    .ok_or_else(|| Error::InvalidInput("model names that are not JSON".into())),
            });
            if !live.is_live() || live.hit_limit() {
                *session = None;
                self.live.store(false, Ordering::SeqCst);
            }
        }
        Ok(answers)
    }

    /// Runs more code in the live instance, in the global scope its earlier
    /// calls left; the call's output and end go to the run's events, as the
    /// run's did. A call that ends the instance (a limit, a kill, a crash)
    /// releases it.
    async fn eval(&self, code: &str) -> Result<RunOutcome, Error> {
        self.touch();
        if self.is_running() {
            return Err(Error::StillRunning(self.id.clone()));
        }
        let mut session = self.session.lock().await;
        let Some(live) = session.as_mut() else { return Err(released()) };
        let outcome = live.eval(code).await;
        if !live.is_live() || live.hit_limit() {
            *session = None;
            self.live.store(false, Ordering::SeqCst);
        }
        self.touch();
        outcome
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn last_used(&self) -> Instant {
        *lock(&self.last_used)
    }

    fn is_running(&self) -> bool {
        self.outcome.borrow().is_none()
    }

    fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

/// What a model call does: predict, train, or list the models.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ModelCall {
    Predict,
    Train,
    Models,
}

/// A model call's answer: JSON text (a prediction, the models' names) or
/// none (training), or the model's own error message.
type ModelAnswer = Result<Option<Box<RawValue>>, String>;

fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

fn released() -> Error {
    Error::SessionEnded(
        "its instance is gone (released after it sat idle, because the server needed the memory, because it hit \
         a limit, or the server restarted); its record and placeholders are kept; run the program again to use \
         its models"
            .into(),
    )
}

/// What is kept of a finished run: a few hundred bytes plus its placeholders.
struct Record {
    /// Its owner's `Client::owner_key`; `None` (a record saved before owners
    /// were kept) answers no client.
    owner: Option<OwnerKey>,
    language: Language,
    started_at_ms: u64,
    outcome: RunOutcome,
    /// `None` when it saved none.
    placeholders: Option<Placeholders>,
    /// Its placeholders were not kept (the store's room for them was full).
    placeholders_dropped: bool,
    /// Milliseconds since the registry started, at its last use.
    last_used: AtomicU64,
}

impl Record {
    fn status(&self, id: &str) -> RunStatus {
        RunStatus {
            id: id.to_string(),
            language: self.language,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(self.started_at_ms),
            outcome: Some(self.outcome.clone()),
            live: false,
        }
    }
}

/// A run's placeholders, and whether the server could not keep them.
pub struct SavedPlaceholders {
    pub placeholders: Placeholders,
    /// The data folder's room for placeholders was full when the run ended.
    pub dropped: bool,
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

/// A run read to its end: its whole output and how it ended.
pub struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub outcome: RunOutcome,
}

impl RunEvents {
    /// Reads the run to its end (its output is bounded by its output
    /// limit); `None` if its events stopped without an end.
    pub async fn collect(mut self) -> Option<Collected> {
        self.next_call().await
    }

    /// Reads the events of the session's next call (a run, or an eval) to
    /// its end; `None` if its events stopped without an end.
    pub async fn next_call(&mut self) -> Option<Collected> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.recv().await {
            match event {
                SessionEvent::Stdout(bytes) => stdout.extend_from_slice(&bytes),
                SessionEvent::Stderr(bytes) => stderr.extend_from_slice(&bytes),
                SessionEvent::Spawned => {}
                SessionEvent::Finished(outcome) => return Some(Collected { stdout, stderr, outcome }),
            }
        }
        None
    }

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
    maps: Mutex<Maps>,
    running: Arc<Semaphore>,
    clients: Arc<Clients>,
    placeholder_memory: Arc<PlaceholderMemory>,
    /// Bytes all kept instances hold.
    live_memory: AtomicUsize,
    epoch: Instant,
    closing: AtomicBool,
    /// Cluster mode: the first four bytes of every id made here, naming
    /// this node (`cluster::tag_of`).
    id_tag: std::sync::OnceLock<[u8; 4]>,
    /// Cluster mode: where finished runs' records go to be shared.
    #[cfg(feature = "cluster")]
    record_sink: std::sync::OnceLock<RecordSink>,
    /// Where finished runs are saved and found again after a restart.
    store: Option<(Arc<Store>, RunWriter)>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Maps {
    /// Runs going, and live sessions (`Keep::Record` and `Keep::Live` only).
    active: HashMap<String, Arc<Entry>>,
    /// Finished runs.
    records: HashMap<String, Arc<Record>>,
}

enum Found {
    Active(Arc<Entry>),
    Record(Arc<Record>),
}

impl Found {
    /// Whether `client` started the run.
    fn owned_by(&self, client: &Client) -> bool {
        match self {
            Found::Active(entry) => entry.owner == *client,
            Found::Record(record) => record.owner == Some(client.owner_key()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `hex` wrote; `None` for anything else.
fn unhex(text: &str) -> Option<OwnerKey> {
    let mut key = [0u8; 32];
    if text.len() != 2 * key.len() || !text.is_ascii() {
        return None;
    }
    for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(key)
}

impl Registry {
    /// Must be called inside a tokio runtime: it starts the expiry task.
    pub fn new(runtime: Runtime, config: RegistryConfig) -> Self {
        Self::build(runtime, config, None)
    }

    /// A registry that saves every finished run to `store` and answers for
    /// runs of earlier processes from it.
    pub(crate) fn persistent(runtime: Runtime, config: RegistryConfig, store: Arc<Store>) -> Result<Self, Error> {
        let writer = RunWriter::start(store.clone(), config.stored_placeholder_bytes)?;
        Ok(Self::build(runtime, config, Some((store, writer))))
    }

    fn build(runtime: Runtime, config: RegistryConfig, store: Option<(Arc<Store>, RunWriter)>) -> Self {
        let inner = Arc::new(Inner {
            runtime,
            running: Arc::new(Semaphore::new(config.max_running)),
            clients: Arc::new(Clients::new(config.client_share(), config.runs_per_second_per_client)),
            placeholder_memory: PlaceholderMemory::new(config.placeholder_memory_bytes),
            live_memory: AtomicUsize::new(0),
            epoch: Instant::now(),
            config,
            maps: Mutex::new(Maps::default()),
            closing: AtomicBool::new(false),
            id_tag: std::sync::OnceLock::new(),
            #[cfg(feature = "cluster")]
            record_sink: std::sync::OnceLock::new(),
            store,
            metrics: Arc::new(Metrics::new()),
        });
        tokio::spawn(expire(Arc::downgrade(&inner)));
        Registry { inner }
    }

    /// The runtime its sessions run in.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The server's metrics (`GET /metrics`), moved by every run this registry starts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Starts running `program` in a new session for `client` of `face`, or
    /// refuses at once when the server, or the client's share or rate, is used up.
    pub async fn start(
        &self,
        client: &Client,
        face: Face,
        language: Language,
        program: Program,
        options: SessionOptions,
        keep: Keep,
    ) -> Result<Started, Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            self.inner.metrics.refused(Refusal::ShuttingDown);
            return Err(Error::ShuttingDown);
        }
        let program = program.validated()?;
        self.wait_prepared(language).await?;
        let permit = self.permit(client, true)?;
        self.start_permitted(permit, client, face, language, program, options, keep).await
    }

    /// Starts a one-shot run in a running slot taken by `reserve` (cluster
    /// mode: a run another node queued, whose client that node admitted).
    #[cfg(feature = "cluster")]
    pub(crate) async fn start_reserved(
        &self,
        slot: Reserved,
        face: Face,
        language: Language,
        program: Program,
        options: SessionOptions,
    ) -> Result<Started, Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let program = program.validated()?;
        self.wait_prepared(language).await?;
        let permit = RunPermit { _global: slot.0, _client: None };
        // Not kept, so never looked up by id: its owner is the origin's.
        self.start_permitted(permit, &Client::Local, face, language, program, options, Keep::Nothing).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_permitted(
        &self,
        permit: RunPermit,
        client: &Client,
        face: Face,
        language: Language,
        program: Program,
        options: SessionOptions,
        keep: Keep,
    ) -> Result<Started, Error> {
        let options = SessionOptions { placeholders: Some(self.inner.placeholder_memory.clone()), ..options };
        let cold = Instant::now();
        let (mut session, events) = self.inner.runtime.session(language, options).await?;
        self.inner.metrics.cold_start(language, face, cold.elapsed());
        let entry = Arc::new(Entry {
            id: self.new_id(),
            owner: client.clone(),
            language,
            started_at: SystemTime::now(),
            kill: session.kill_handle(),
            stdin: session.stdin(),
            placeholders: session.placeholders(),
            outcome: watch::channel(None).0,
            session: tokio::sync::Mutex::new(None),
            live: AtomicBool::new(keep == Keep::Live),
            memory: AtomicUsize::new(0),
            direct: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            saver: match keep {
                Keep::Nothing => None,
                Keep::Record | Keep::Live => self.inner.store.as_ref().map(|(_, writer)| writer.clone()),
            },
            #[cfg(feature = "cluster")]
            shared: match keep {
                Keep::Nothing => None,
                Keep::Record | Keep::Live => self.inner.record_sink.get().cloned(),
            },
            face,
            metrics: self.inner.metrics.clone(),
            remote: false,
        });
        if keep != Keep::Nothing {
            self.maps().active.insert(entry.id.clone(), entry.clone());
        }
        let (registry, task_entry) = (self.clone(), entry.clone());
        session.accept_run();
        // Every line logged about the run carries its id, face and language
        // (never its code, its output or the client's token).
        let span = tracing::info_span!("run", id = %entry.id, face = face.as_str(), language = language.name());
        tracing::debug!(parent: &span, files = program.files.len(), "run started");
        let run = async move {
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
            drop(permit);
            // The session is in place before the outcome is, so whoever sees
            // the run ended can use its models. Instances that ended by a
            // trap or a limit are not kept.
            let keep_instance = keep == Keep::Live
                && task_entry.is_live()
                && session.is_live()
                && !session.hit_limit()
                && matches!(outcome.reason, EndReason::Exit | EndReason::Error);
            let unkept = if keep_instance {
                let memory = session.memory_bytes();
                task_entry.memory.store(memory, Ordering::SeqCst);
                registry.inner.live_memory.fetch_add(memory, Ordering::SeqCst);
                *task_entry.session.lock().await = Some(Box::new(session));
                // Room is made before the end is reported, so a client that
                // sees it finds the others' instances as they will stay.
                registry.fit_memory_budget().await;
                None
            } else {
                task_entry.live.store(false, Ordering::SeqCst);
                Some(session)
            };
            tracing::debug!(
                reason = outcome.reason.as_str(),
                exit_code = outcome.exit_code,
                wall_ms = outcome.wall_time.as_millis() as u64,
                "run ended"
            );
            task_entry.record(outcome);
            // An instance not kept is dropped once the end is reported: its
            // memory's unmapping (0.5-1 ms for Python) is not the client's wait.
            drop(unkept);
            if keep != Keep::Nothing {
                registry.settle(&task_entry).await;
            }
        };
        self.inner.runtime.guest_tasks().spawn(run.instrument(span));
        Ok(Started { events: RunEvents { events, entry: entry.clone() }, entry })
    }

    /// Admits `client`'s new run that another node will run (cluster mode):
    /// its share and rate are checked here, where the client is; the slot
    /// is held until the run ends.
    #[cfg(feature = "cluster")]
    pub(crate) fn admit(&self, client: &Client) -> Result<Admission, Error> {
        if self.inner.closing.load(Ordering::SeqCst) {
            self.inner.metrics.refused(Refusal::ShuttingDown);
            return Err(Error::ShuttingDown);
        }
        let slot = self.inner.clients.take(client, true);
        if let Some(refusal) = slot.as_ref().err().and_then(Refusal::of) {
            self.inner.metrics.refused(refusal);
        }
        Ok(Admission(slot?))
    }

    /// A free running slot, if there is one now (cluster mode: a node takes
    /// a queued run only into a slot of its own).
    #[cfg(feature = "cluster")]
    pub(crate) fn try_reserve(&self) -> Option<Reserved> {
        self.inner.running.clone().try_acquire_owned().ok().map(Reserved)
    }

    /// The entry and events of a run another node runs (cluster mode); the
    /// returned `RemoteRun` feeds them with what that node reports.
    #[cfg(feature = "cluster")]
    pub(crate) fn remote(
        &self,
        client: &Client,
        face: Face,
        language: Language,
        options: &SessionOptions,
    ) -> (Started, RemoteRun) {
        use crate::input::{InputBinding, Stdin};
        use crate::report::{EventQueue, Reporter};
        use crate::run::StopSignal;
        let limits = options.limits.clone().unwrap_or_else(|| self.inner.runtime.default_limits());
        let (queue, events) = EventQueue::new(options.output_queue_bytes.unwrap_or(limits.output_bytes));
        let reporter = Arc::new(Reporter::new(queue));
        reporter.accept(limits.fuel);
        let stop = StopSignal::new();
        let placeholders = Placeholders::sharing(limits.placeholder_bytes, self.inner.placeholder_memory.clone());
        let entry = Arc::new(Entry {
            id: self.new_id(),
            owner: client.clone(),
            language,
            started_at: SystemTime::now(),
            kill: KillHandle::new(stop.clone(), reporter.clone(), self.inner.runtime.engine().clone()),
            stdin: InputBinding::default().bind(Stdin::Closed),
            placeholders: placeholders.clone(),
            outcome: watch::channel(None).0,
            session: tokio::sync::Mutex::new(None),
            live: AtomicBool::new(false),
            memory: AtomicUsize::new(0),
            direct: AtomicBool::new(false),
            last_used: Mutex::new(Instant::now()),
            saver: None,
            shared: None,
            face,
            metrics: self.inner.metrics.clone(),
            remote: true,
        });
        let started = Started { events: RunEvents { events, entry: entry.clone() }, entry: entry.clone() };
        (started, RemoteRun { entry, reporter, stop, placeholders, limits })
    }

    /// Whether the registry has started to stop.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Running slots free now, and in all.
    #[cfg(feature = "cluster")]
    pub(crate) fn running_slots(&self) -> (usize, usize) {
        (self.inner.running.available_permits(), self.inner.config.max_running)
    }

    /// A new run's id: a random UUID, whose first four bytes name this node
    /// in cluster mode.
    fn new_id(&self) -> String {
        let mut bytes = *uuid::Uuid::new_v4().as_bytes();
        if let Some(tag) = self.inner.id_tag.get() {
            bytes[..4].copy_from_slice(tag);
        }
        uuid::Uuid::from_bytes(bytes).to_string()
    }

    /// Cluster mode: ids made from now on start with `tag`.
    #[cfg(feature = "cluster")]
    pub(crate) fn set_id_tag(&self, tag: [u8; 4]) {
        let _ = self.inner.id_tag.set(tag);
    }

    /// Cluster mode: the records of runs found by id (`Keep::Record` and
    /// `Keep::Live`) go to `sink` as they end, as they go to the store.
    #[cfg(feature = "cluster")]
    pub(crate) fn set_record_sink(&self, sink: RecordSink) {
        let _ = self.inner.record_sink.set(sink);
    }

    /// Cluster mode: takes in the record of a run another node made (read
    /// from the cluster), to be answered for as if it had ended here.
    #[cfg(feature = "cluster")]
    pub(crate) fn adopt(&self, saved: RunRecord) {
        let id = saved.id.clone();
        let record = self.record_of(saved);
        self.maps().records.entry(id).or_insert(record);
    }

    fn record_of(&self, saved: RunRecord) -> Arc<Record> {
        let placeholders = (!saved.placeholders.is_empty()).then(|| {
            Placeholders::restored(
                crate::limits::Limits::DEFAULT_PLACEHOLDER_BYTES,
                self.inner.placeholder_memory.clone(),
                saved.placeholders.clone(),
            )
        });
        Arc::new(Record {
            owner: saved.owner.as_deref().and_then(unhex),
            language: saved.language.parse().unwrap_or(Language::Python),
            started_at_ms: saved.started_at_ms,
            outcome: saved.outcome(),
            placeholders,
            placeholders_dropped: saved.placeholders_dropped,
            last_used: AtomicU64::new(self.now_ms()),
        })
    }

    /// A run `client` started: its status, if it has not expired.
    pub fn status(&self, client: &Client, id: &str) -> Option<RunStatus> {
        match self.find(client, id)? {
            Found::Active(entry) => Some(entry.status()),
            Found::Record(record) => Some(record.status(id)),
        }
    }

    /// A run `client` started: its placeholders, if it has not expired (none saved: empty).
    pub fn placeholders(&self, client: &Client, id: &str) -> Option<SavedPlaceholders> {
        match self.find(client, id)? {
            Found::Active(entry) => {
                Some(SavedPlaceholders { placeholders: entry.placeholders().clone(), dropped: false })
            }
            Found::Record(record) => Some(SavedPlaceholders {
                placeholders: record.placeholders.clone().unwrap_or_else(|| Placeholders::new(0)),
                dropped: record.placeholders_dropped,
            }),
        }
    }

    /// Calls a model the run `id` of `client` saved, on the guest threads
    /// (it takes a running permit as a run does). The outer error is the
    /// host's; the inner one the model's own message.
    pub async fn predict(
        &self,
        client: &Client,
        id: &str,
        model: &str,
        input: Box<RawValue>,
    ) -> Result<Result<Box<RawValue>, String>, Error> {
        let answer = self.model_call_one(client, id, ModelCall::Predict, model, input).await?;
        Ok(answer.map(|json| json.unwrap_or_else(null)))
    }

    /// Several predictions of one model, in order, in one trip to the guest
    /// threads and one running permit (a direct-IO socket's pipelined
    /// frames). Each answer is as `predict`'s; once one ends the instance,
    /// the rest are refused.
    pub async fn predict_many(
        &self,
        client: &Client,
        id: &str,
        model: &str,
        inputs: Vec<Box<RawValue>>,
    ) -> Result<Vec<Result<Result<Box<RawValue>, String>, Error>>, Error> {
        let answers = self.model_call(client, id, ModelCall::Predict, model, inputs).await?;
        Ok(answers.into_iter().map(|answer| answer.map(|a| a.map(|json| json.unwrap_or_else(null)))).collect())
    }

    /// Calls the training method of a model the run `id` saved (see `predict`).
    pub async fn train(
        &self,
        client: &Client,
        id: &str,
        model: &str,
        input: Box<RawValue>,
    ) -> Result<Result<(), String>, Error> {
        Ok(self.model_call_one(client, id, ModelCall::Train, model, input).await?.map(|_| ()))
    }

    /// The names of the models a live session of `client` saved.
    pub async fn models(&self, client: &Client, id: &str) -> Result<Vec<String>, Error> {
        let names = self.model_call_one(client, id, ModelCall::Models, "", null()).await?;
        let names = names.ok().flatten().map(|json| serde_json::from_str(json.get()).unwrap_or_default());
        Ok(names.unwrap_or_default())
    }

    async fn model_call_one(
        &self,
        client: &Client,
        id: &str,
        call: ModelCall,
        model: &str,
        input: Box<RawValue>,
    ) -> Result<ModelAnswer, Error> {
        let mut answers = self.model_call(client, id, call, model, vec![input]).await?;
        answers.pop().unwrap_or_else(|| Err(released()))
    }

    async fn model_call(
        &self,
        client: &Client,
        id: &str,
        call: ModelCall,
        model: &str,
        inputs: Vec<Box<RawValue>>,
    ) -> Result<Vec<Result<ModelAnswer, Error>>, Error> {
        let entry = match self.find(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))? {
            Found::Active(entry) => entry,
            Found::Record(_) => return Err(released()),
        };
        if call == ModelCall::Models {
            // Only the host's list: no guest code runs, so no slot and no guest thread.
            return entry.call_model(call, model, &inputs).await;
        }
        let permit = self.permit(client, false)?;
        let (call_entry, model, single) = (entry.clone(), model.to_string(), inputs.len() == 1);
        let mut call = Box::pin(async move {
            let _permit = permit;
            call_entry.call_model(call, &model, &inputs).await
        });
        // One call's first slice of guest work (`MODEL_CALL_SLICE_FUEL`) runs
        // here: a small prediction is answered without the two thread hops
        // to the guest threads and back. What is left moves there.
        let inline = match single {
            true => std::panic::catch_unwind(AssertUnwindSafe(|| {
                call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
            }))
            .map_err(|_| Error::SessionEnded("the model call crashed".into()))?,
            false => Poll::Pending,
        };
        let result = match inline {
            Poll::Ready(answers) => Ok(answers),
            Poll::Pending => self
                .inner
                .runtime
                .guest_tasks()
                .spawn(call)
                .await
                .map_err(|e| Error::SessionEnded(format!("the model call crashed: {e}"))),
        };
        self.settle(&entry).await;
        result?
    }

    /// Runs more code in the live session `id` (a notebook's next cell), on
    /// the guest threads, for `client` (it takes a running permit and a token
    /// of the client's rate, as a new run does). Its output and end go to the
    /// run's events; the end is also returned.
    pub async fn eval(&self, client: &Client, id: &str, code: String) -> Result<RunOutcome, Error> {
        let entry = match self.find(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))? {
            Found::Active(entry) => entry,
            Found::Record(_) => return Err(released()),
        };
        if !entry.is_live() {
            return Err(if entry.is_running() { Error::StillRunning(id.to_string()) } else { released() });
        }
        let permit = self.permit(client, true)?;
        let call_entry = entry.clone();
        let result = self
            .inner
            .runtime
            .guest_tasks()
            .spawn(async move {
                let _permit = permit;
                call_entry.eval(&code).await
            })
            .await
            .map_err(|e| Error::SessionEnded(format!("the call crashed: {e}")));
        if let Ok(Ok(outcome)) = &result {
            self.inner.metrics.run_ended(entry.language, entry.face, outcome.reason, outcome.wall_time);
        }
        self.settle(&entry).await;
        result?
    }

    /// Ends a session of `client` now: stops its run if one is going, and
    /// drops its instance; its record and placeholders are kept as any finished run's.
    pub async fn close(&self, client: &Client, id: &str) -> Result<(), Error> {
        let entry = match self.find(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))? {
            Found::Active(entry) => entry,
            Found::Record(_) => return Ok(()),
        };
        // A call in progress (a run, or a cell) is stopped; so is the instance.
        entry.kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), entry.finished()).await;
        if !entry.is_running() {
            self.release(&entry).await;
        }
        Ok(())
    }

    /// The files the code of `client`'s live session wrote under `/tmp`.
    pub fn scratch_files(&self, client: &Client, id: &str) -> Result<Vec<ScratchFile>, Error> {
        self.with_instance(client, id, |session| Ok(session.scratch_files()))
    }

    /// A file the code of `client`'s live session wrote under `/tmp`, at most `max_bytes`.
    pub fn scratch_file(&self, client: &Client, id: &str, path: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        self.with_instance(client, id, |session| session.scratch_file(path, max_bytes))
    }

    /// Calls `f` with a live session's instance, if no call is using it.
    fn with_instance<T>(
        &self,
        client: &Client,
        id: &str,
        f: impl FnOnce(&Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let entry = match self.find(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))? {
            Found::Active(entry) => entry,
            Found::Record(_) => return Err(released()),
        };
        entry.touch();
        let session = entry.session.try_lock().map_err(|_| Error::StillRunning(id.to_string()))?;
        match session.as_deref() {
            Some(session) => f(session),
            None if entry.is_running() => Err(Error::StillRunning(id.to_string())),
            None => Err(released()),
        }
    }

    /// Marks a live session of `client` as taking direct IO (or not):
    /// Hanami's DIRECT and TASK modes.
    pub fn set_direct(&self, client: &Client, id: &str, direct: bool) -> Result<(), Error> {
        match self.find(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))? {
            Found::Active(entry) if entry.is_live() => {
                entry.direct.store(direct, Ordering::SeqCst);
                Ok(())
            }
            Found::Active(entry) if entry.is_running() => Err(Error::StillRunning(id.to_string())),
            _ => Err(released()),
        }
    }

    /// Whether a live session of `client` takes direct IO.
    pub fn is_direct(&self, client: &Client, id: &str) -> bool {
        matches!(self.find(client, id), Some(Found::Active(entry)) if entry.is_live() && entry.direct.load(Ordering::SeqCst))
    }

    /// Stops a run of `client` if it is going and waits (briefly) for its
    /// end; its status then.
    pub async fn stop(&self, client: &Client, id: &str) -> Option<RunStatus> {
        match self.find(client, id)? {
            Found::Active(entry) => {
                entry.kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), entry.finished()).await;
                Some(entry.status())
            }
            Found::Record(record) => Some(record.status(id)),
        }
    }

    /// Bytes all kept instances hold now.
    pub fn live_memory(&self) -> usize {
        self.inner.live_memory.load(Ordering::SeqCst)
    }

    /// How many guests are running a call (runs of every face, one-shot ones
    /// included, and model calls: the running slots in use), live sessions
    /// held between calls (their instance kept) and records kept in memory.
    pub fn counts(&self) -> (usize, usize, usize) {
        let running = self.inner.config.max_running - self.inner.running.available_permits();
        let maps = self.maps();
        let live = maps.active.values().filter(|e| !e.is_running() && e.is_live()).count();
        (running, live, maps.records.len())
    }

    /// Refuses new runs, stops the running ones and waits (up to `grace`) for them to end.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let running: Vec<Arc<Entry>> = self.maps().active.values().filter(|e| e.is_running()).cloned().collect();
        for entry in &running {
            entry.kill();
        }
        let all = futures_util::future::join_all(running.iter().map(|e| e.finished()));
        let _ = tokio::time::timeout(grace, all).await;
        if let Some((_, writer)) = &self.inner.store {
            writer.flush().await;
        }
    }

    /// Waits, `PREPARING_WAIT` at most, for `language` if a server is still
    /// preparing it (python-sci's first preparation takes minutes), before
    /// any permit is taken; then refuses, saying when to come back.
    async fn wait_prepared(&self, language: Language) -> Result<(), Error> {
        self.inner.runtime.wait_prepared(language, PREPARING_WAIT).await.map_err(|so_far| {
            self.inner.metrics.refused(Refusal::Preparing);
            Error::Preparing { language, so_far }
        })
    }

    /// Permits for one guest call: the server's, and the client's share (and
    /// for a new run, its rate).
    fn permit(&self, client: &Client, new_run: bool) -> Result<RunPermit, Error> {
        let permit = self.take_permit(client, new_run);
        if let Some(refusal) = permit.as_ref().err().and_then(Refusal::of) {
            self.inner.metrics.refused(refusal);
        }
        permit
    }

    fn take_permit(&self, client: &Client, new_run: bool) -> Result<RunPermit, Error> {
        let slot = self.inner.clients.take(client, new_run)?;
        let global = self.inner.running.clone().try_acquire_owned().map_err(|_| {
            if let Some(slot) = &slot {
                slot.refund(new_run);
            }
            Error::Busy { limit: self.inner.config.max_running }
        })?;
        Ok(RunPermit { _global: global, _client: slot })
    }

    /// The run `id` if `client` started it: to any other client an id is
    /// unknown, as one that never existed.
    fn find(&self, client: &Client, id: &str) -> Option<Found> {
        {
            let maps = self.maps();
            if let Some(entry) = maps.active.get(id) {
                return Some(Found::Active(entry.clone())).filter(|found| found.owned_by(client));
            }
            if let Some(record) = maps.records.get(id) {
                let found = Some(Found::Record(record.clone())).filter(|found| found.owned_by(client));
                if found.is_some() {
                    // Only its owner's use keeps a record.
                    record.last_used.store(self.now_ms(), Ordering::Relaxed);
                }
                return found;
            }
        }
        let (store, _) = self.inner.store.as_ref()?;
        let saved = match store.run(id) {
            Ok(saved) => saved?,
            Err(e) => {
                tracing::error!(run = %id, error = %e, "could not read a saved run");
                return None;
            }
        };
        let record = self.record_of(saved);
        if record.owner != Some(client.owner_key()) {
            return None;
        }
        Some(Found::Record(self.maps().records.entry(id.to_string()).or_insert(record).clone()))
    }

    /// After a run's end or a model call: keeps its instance counted, within
    /// the memory budget, or turns the entry into a record.
    async fn settle(&self, entry: &Arc<Entry>) {
        self.account(entry).await;
        self.fit_memory_budget().await;
    }

    /// Releases kept instances, the heaviest client's least recently used
    /// first (`fair_victims`), until all fit `live_memory_bytes`.
    async fn fit_memory_budget(&self) {
        let budget = self.inner.config.live_memory_bytes;
        loop {
            let over = self.live_memory().saturating_sub(budget);
            if over == 0 {
                return;
            }
            // One at a time, counted again after each: others settle meanwhile.
            let victim = fair_victims(self.kept(), |e| e.memory.load(Ordering::SeqCst), over).into_iter().next();
            let Some(victim) = victim else { return };
            self.release(&victim).await;
        }
    }

    /// The entries that hold (or will hold) their instance: a run just
    /// ended is kept before its end is recorded, and counts for its client.
    fn kept(&self) -> Vec<Arc<Entry>> {
        self.maps().active.values().filter(|e| e.is_live()).cloned().collect()
    }

    /// Brings the live-memory count up to date for `entry`, and releases it
    /// if its instance is gone.
    async fn account(&self, entry: &Arc<Entry>) {
        let held = match entry.session.try_lock() {
            Ok(session) => session.as_ref().map(|s| s.memory_bytes()),
            // A model call is in progress: it accounts when it is done.
            Err(_) => return,
        };
        match held {
            Some(bytes) if entry.is_live() => {
                let before = entry.memory.swap(bytes, Ordering::SeqCst);
                self.inner.live_memory.fetch_add(bytes, Ordering::SeqCst);
                self.inner.live_memory.fetch_sub(before, Ordering::SeqCst);
            }
            _ if !entry.is_running() => self.release(entry).await,
            _ => {}
        }
    }

    /// Drops a finished entry's instance and keeps only its record.
    async fn release(&self, entry: &Arc<Entry>) {
        entry.live.store(false, Ordering::SeqCst);
        let instance = entry.session.lock().await.take();
        drop(instance);
        self.inner.live_memory.fetch_sub(entry.memory.swap(0, Ordering::SeqCst), Ordering::SeqCst);
        let Some(outcome) = entry.outcome.borrow().clone() else { return };
        let saved = entry.placeholders.names();
        let record = Arc::new(Record {
            owner: Some(entry.owner.owner_key()),
            language: entry.language,
            started_at_ms: millis(entry.started_at),
            outcome,
            placeholders: (!saved.is_empty()).then(|| entry.placeholders.clone()),
            placeholders_dropped: false,
            last_used: AtomicU64::new(self.now_ms()),
        });
        let mut maps = self.maps();
        if maps.active.remove(&entry.id).is_some() {
            maps.records.insert(entry.id.clone(), record);
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        lock(&self.inner.maps)
    }
}

/// Which of the `kept` instances to release, in order, to give back `over`
/// (counted in `weight`): each time the least recently used finished
/// instance of the client whose instances weigh the most. With the bound
/// shared equally by the clients holding instances, that client is over its
/// share whenever the total is over the bound, so a client within its share
/// loses nothing while another is over. An entry whose end is not recorded
/// yet weighs for its client but is not released here (its `settle` comes
/// next); if the heaviest client has nothing else, nothing is released.
fn fair_victims(kept: Vec<Arc<Entry>>, weight: impl Fn(&Entry) -> usize, mut over: usize) -> Vec<Arc<Entry>> {
    let mut held: HashMap<Client, (usize, Vec<Arc<Entry>>)> = HashMap::new();
    for entry in kept {
        let (total, entries) = held.entry(entry.owner.clone()).or_default();
        *total += weight(&entry);
        if !entry.is_running() {
            entries.push(entry);
        }
    }
    for (_, entries) in held.values_mut() {
        // The least recently used last, where `pop` takes it.
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_used()));
    }
    let mut victims = Vec::new();
    while over > 0 {
        let heaviest = held
            .values_mut()
            .max_by_key(|(total, entries)| (*total, entries.last().map(|e| std::cmp::Reverse(e.last_used()))));
        let Some((total, entries)) = heaviest else { break };
        let Some(victim) = entries.pop() else { break };
        let freed = weight(&victim);
        *total = total.saturating_sub(freed);
        over = over.saturating_sub(freed);
        victims.push(victim);
    }
    victims
}

/// A guest call's permits, given back when dropped.
/// A client's admitted run in cluster mode: its share, held until dropped.
#[cfg(feature = "cluster")]
pub(crate) struct Admission(#[allow(dead_code)] Option<ClientSlot>);

/// A running slot taken for a queued run (cluster mode).
#[cfg(feature = "cluster")]
pub(crate) struct Reserved(OwnedSemaphorePermit);

/// What feeds a run's entry and events when another node runs it.
#[cfg(feature = "cluster")]
pub(crate) struct RemoteRun {
    pub(crate) entry: Arc<Entry>,
    pub(crate) reporter: Arc<crate::report::Reporter>,
    /// Set by a kill of the entry (`Entry::kill`).
    pub(crate) stop: crate::run::StopSignal,
    pub(crate) placeholders: Placeholders,
    pub(crate) limits: crate::limits::Limits,
}

struct RunPermit {
    _global: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// Every client's running count and rate bucket.
struct Clients {
    share: usize,
    rate: f64,
    burst: f64,
    states: Mutex<HashMap<Client, ClientState>>,
}

struct ClientState {
    running: usize,
    /// Runs it may start now (a token bucket, refilled at `rate` per second).
    tokens: f64,
    refilled: Instant,
}

impl Clients {
    fn new(share: usize, rate: f64) -> Self {
        // No rate (infinite or nonsense) is an unlimited one: an endless bucket.
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { f64::INFINITY };
        Clients { share, rate, burst: (rate * 2.0).max(1.0), states: Mutex::new(HashMap::new()) }
    }

    /// Counts one more guest call for `client` (and one token of its rate for
    /// a new run), or says why not and when to retry.
    fn take(self: &Arc<Self>, client: &Client, new_run: bool) -> Result<Option<ClientSlot>, Error> {
        if *client == Client::Local {
            return Ok(None);
        }
        let mut states = lock(&self.states);
        let state = states.entry(client.clone()).or_insert_with(|| ClientState {
            running: 0,
            tokens: self.burst,
            refilled: Instant::now(),
        });
        let now = Instant::now();
        let refill = now.duration_since(state.refilled).as_secs_f64() * self.rate;
        state.tokens = if refill.is_nan() { self.burst } else { (state.tokens + refill).min(self.burst) };
        state.refilled = now;
        if state.running >= self.share {
            return Err(Error::ClientBusy { share: self.share });
        }
        if new_run && self.rate.is_finite() {
            if state.tokens < 1.0 {
                let wait = Duration::from_secs_f64(((1.0 - state.tokens) / self.rate).min(3600.0));
                return Err(Error::RateLimited { retry_after: wait.max(Duration::from_millis(1)) });
            }
            state.tokens -= 1.0;
        }
        state.running += 1;
        Ok(Some(ClientSlot { clients: self.clone(), client: client.clone() }))
    }

    /// Forgets clients with nothing running and a full bucket.
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.states).retain(|_, state| {
            let tokens = state.tokens + now.duration_since(state.refilled).as_secs_f64() * self.rate;
            state.running > 0 || (self.rate.is_finite() && tokens < self.burst)
        });
    }
}

/// One guest call of a client, counted until dropped.
struct ClientSlot {
    clients: Arc<Clients>,
    client: Client,
}

impl ClientSlot {
    /// Gives the rate token back (the call did not start after all).
    fn refund(&self, new_run: bool) {
        if new_run && let Some(state) = lock(&self.clients.states).get_mut(&self.client) {
            state.tokens = (state.tokens + 1.0).min(self.clients.burst);
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(state) = lock(&self.clients.states).get_mut(&self.client) {
            state.running = state.running.saturating_sub(1);
        }
    }
}

/// Once a second: releases instances idle past `idle_expiry` or past
/// `max_live`, drops records idle past `idle_expiry` or past `max_records`,
/// and forgets idle clients.
async fn expire(registry: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = registry.upgrade() else { return };
        let registry = Registry { inner };
        let config = &registry.inner.config;
        let now = registry.now_ms();
        let expiry = config.idle_expiry.as_millis() as u64;
        let (idle, live) = {
            let mut maps = registry.maps();
            maps.records.retain(|_, r| now.saturating_sub(r.last_used.load(Ordering::Relaxed)) <= expiry);
            if maps.records.len() > config.max_records {
                let mut by_age: Vec<(u64, String)> =
                    maps.records.iter().map(|(id, r)| (r.last_used.load(Ordering::Relaxed), id.clone())).collect();
                by_age.sort_unstable();
                let excess = maps.records.len() - config.max_records;
                for (_, id) in by_age.into_iter().take(excess) {
                    maps.records.remove(&id);
                }
            }
            let finished: Vec<Arc<Entry>> = maps.active.values().filter(|e| !e.is_running()).cloned().collect();
            let (idle, live): (Vec<_>, Vec<_>) =
                finished.into_iter().partition(|e| e.idle_for() > config.idle_expiry || !e.is_live());
            (idle, live)
        };
        for entry in idle {
            registry.release(&entry).await;
        }
        let excess = live.len().saturating_sub(config.max_live);
        for entry in fair_victims(live, |_| 1, excess) {
            registry.release(&entry).await;
        }
        registry.inner.clients.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_runs_record_takes_under_512_bytes_besides_its_placeholders() {
        // The record in its Arc (two counts), its id twice (the map's key and
        // nothing else: a UUID's 36 bytes), the map's slot and control byte,
        // and a short end message ("killed", a limit's).
        let record = std::mem::size_of::<Record>() + 16;
        let key = std::mem::size_of::<String>() + 36;
        let slot = std::mem::size_of::<Arc<Record>>() + 1;
        let message = 64;
        let total = record + key + slot + message;
        assert!(total < 512, "a record costs {total} bytes");
    }

    #[test]
    fn a_client_gets_its_share_and_its_rate() {
        let clients = Arc::new(Clients::new(2, 1.0));
        let me = Client::Address("10.0.0.1".parse().unwrap());
        let other = Client::Address("10.0.0.2".parse().unwrap());
        let a = clients.take(&me, true).unwrap();
        let _b = clients.take(&me, true).unwrap();
        assert!(matches!(clients.take(&me, false), Err(Error::ClientBusy { share: 2 })));
        assert!(clients.take(&other, true).is_ok(), "another client is not held back");
        drop(a);
        // The burst (two runs) is spent: the next run waits about a second.
        match clients.take(&me, true) {
            Err(Error::RateLimited { retry_after }) => assert!(retry_after <= Duration::from_secs(1)),
            other => panic!("expected a rate limit, got {:?}", other.map(|_| ())),
        }
        assert!(clients.take(&me, false).is_ok(), "model calls are not rate limited");
        assert!(clients.take(&Client::Local, true).unwrap().is_none(), "the embedder is not limited");
    }
}
