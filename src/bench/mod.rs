//! The benchmark behind `sandlot bench` and `cargo bench`: cold start, server round trips, throughput, direct-IO
//! predictions, density, kill latency and compile costs, each measured in this one process next to a
//! native-interpreter baseline spawned the way process-based runners do.
//!
//! Everything stays on loopback, every loop is bounded in count and time, and
//! the bench stops by itself. Results: a Markdown table on stdout,
//! `bench.json` and `cold-start.svg` in the output folder.

mod chart;
mod client;
mod cluster;
mod soak;

pub use cluster::{ClusterReport, ClusterRow, ClusterSettings, cluster_bench};
pub use soak::{Sample, SoakReport, SoakSettings, soak};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Language, Limits, Program, RegistryConfig, Runtime, ServerConfig, SessionEvent, SessionOptions};
use serde::Serialize;
use tokio::net::TcpListener;

use client::{DirectIoClient, ProcessorClient, RestClient, WsClient};

/// How much to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Cold starts and round trips per language and path.
    pub runs: usize,
    /// Native interpreter spawns per language.
    pub baseline_runs: usize,
    /// Concurrent clients for throughput.
    pub clients: Vec<usize>,
    /// How long each throughput level runs.
    pub level_seconds: f64,
    /// Idle live sessions held for the density measurement.
    pub density_sessions: usize,
    /// Kills timed per language.
    pub kill_samples: usize,
    /// Busy sessions running while kills are timed.
    pub kill_background: usize,
    /// Whether to compile each guest afresh (Python takes 10–25 s).
    pub compile: bool,
    /// The `sandlot` binary, to time a server process from its start to its
    /// first answered run; not measured when `None`.
    pub server_binary: Option<PathBuf>,
    /// Server processes started for that measurement.
    pub process_starts: usize,
}

impl Settings {
    pub fn full() -> Self {
        Settings {
            runs: 200,
            baseline_runs: 40,
            clients: vec![1, 8, 64, 256],
            level_seconds: 3.0,
            density_sessions: 5000,
            kill_samples: 50,
            kill_background: 100,
            compile: true,
            server_binary: None,
            process_starts: 10,
        }
    }

    /// A tiny setting that checks every measurement runs, in seconds.
    pub fn quick() -> Self {
        Settings {
            runs: 5,
            baseline_runs: 2,
            clients: vec![1, 4],
            level_seconds: 0.3,
            density_sessions: 50,
            kill_samples: 3,
            kill_background: 4,
            compile: false,
            server_binary: None,
            process_starts: 1,
        }
    }
}

/// Percentiles of a set of timings, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| if ms.is_empty() { f64::NAN } else { ms[((ms.len() - 1) as f64 * q).round() as usize] };
    Summary {
        n: ms.len(),
        median_ms: pick(0.5),
        p90_ms: pick(0.9),
        p99_ms: pick(0.99),
        mean_ms: if ms.is_empty() { f64::NAN } else { ms.iter().sum::<f64>() / ms.len() as f64 },
    }
}

/// A session through the library: getting an instance, running hello in
/// it, dropping it.
#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub instantiate: Summary,
    pub run: Summary,
    pub total: Summary,
}

#[derive(Debug, Serialize)]
pub struct Baseline {
    pub command: String,
    pub spawn: Summary,
}

/// Sessions per second through the library alone, one worker per core,
/// each making sessions back to back: what the server's throughput is
/// measured against.
#[derive(Debug, Serialize)]
pub struct LibraryThroughput {
    pub workers: usize,
    pub sessions_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub completed: usize,
    pub errors: usize,
    pub sessions_per_second: f64,
}

/// Frames a direct-IO client keeps in flight for the pipelined measurement.
const DIRECT_IO_IN_FLIGHT: usize = 64;

/// A model behind direct IO (Hanami's `ClusterIO_Message` frames), measured
/// by the bench's own client on one socket.
#[derive(Debug, Serialize)]
pub struct DirectIo {
    /// One REQUEST frame → its prediction, one at a time.
    pub round_trip: Summary,
    /// The same with low latency held (`--low-latency`): the socket polls
    /// for its next frame, and idle CPUs poll where this process may ask it
    /// (root, a cpuidle driver).
    pub round_trip_low_latency: Summary,
    /// Frames kept in flight on the socket for `predictions_per_second`.
    pub in_flight: usize,
    /// Small predictions answered per second, replies checked in order.
    pub predictions_per_second: f64,
}

/// A game script's engine commands on the processor face, each answered
/// at once by the bench's own client, one socket.
#[derive(Debug, Serialize)]
pub struct EngineCommands {
    /// One command's round trip, script → client → script: from one
    /// command's arrival at the client to the next one's.
    pub round_trip: Summary,
    pub commands_per_second: f64,
    /// The same with low latency held (`--low-latency`).
    pub round_trip_low_latency: Summary,
    pub commands_per_second_low_latency: f64,
}

/// `run_model` on the runtime-actions face, one request at a time.
#[derive(Debug, Serialize)]
pub struct RunModel {
    pub round_trip: Summary,
    /// The same with low latency held (`--low-latency`).
    pub round_trip_low_latency: Summary,
}

#[derive(Debug, Serialize)]
pub struct Density {
    pub sessions: usize,
    pub private_bytes_per_session: f64,
}

#[derive(Debug, Serialize)]
pub struct Compile {
    pub component_bytes: usize,
    pub compile_seconds: f64,
    pub native_bytes: usize,
    pub load_ms: f64,
}

/// Baseline median over ours: how many times faster sandlot is.
#[derive(Debug, Serialize)]
pub struct Ratios {
    /// A session from a warm instance.
    pub library: Option<f64>,
    pub websocket: Option<f64>,
    pub rest: Option<f64>,
    /// A true cold start (no warm instance ready).
    pub library_cold: Option<f64>,
    pub websocket_cold: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct LanguageReport {
    pub language: String,
    /// Through the library, every session in an instance ready before it
    /// was asked for (`Runtime::warm_instances`), the shelf refilled between runs.
    pub warm_start: ColdStart,
    /// Through the library with no instance ready: a true cold start.
    pub cold_start: ColdStart,
    /// EXEC → STOP, from a warm instance.
    pub websocket_exec: Summary,
    /// EXEC → STOP with no instance ready.
    pub websocket_exec_cold: Summary,
    /// `POST /v1/exec`, from a warm instance.
    pub rest_exec: Summary,
    pub baseline: Option<Baseline>,
    pub faster_than_baseline: Ratios,
    pub throughput: Vec<Throughput>,
    pub library_throughput: LibraryThroughput,
    /// The best server throughput over the library's.
    pub server_share: f64,
    pub direct_io: DirectIo,
    pub engine_commands: EngineCommands,
    pub run_model: RunModel,
    pub density: Density,
    pub kill_latency: Summary,
    pub compile: Option<Compile>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub sandlot: String,
    pub wasmtime: String,
    pub machine: Machine,
    pub settings: Settings,
    pub languages: Vec<LanguageReport>,
    /// python-sci through the WebSocket: EXEC → first output of a program
    /// that imports pandas and scikit-learn (already imported in its image),
    /// from a warm instance and with none ready.
    pub python_sci_first_output: Summary,
    pub python_sci_first_output_cold: Summary,
    /// `sandlot serve` started as a process → its first `POST /v1/exec`
    /// (Python hello) answered, compiled guests already cached.
    pub process_start: Option<Summary>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs every measurement and writes the results into `out_dir`.
pub async fn run(runtime: Runtime, settings: Settings, out_dir: PathBuf) -> BenchResult<Report> {
    for language in Language::ALL {
        runtime.prepare(language).await?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let config = ServerConfig {
        listen: address,
        // The busy sessions of the kill measurement must keep spinning for the
        // whole measurement: bound them by time only, not by fuel.
        limits: Limits::default().with_wall_clock(Duration::from_secs(120)).with_fuel(u64::MAX / 2),
        // One client (the bench) measures the server: no share or rate limits it.
        registry: RegistryConfig {
            max_running: 4096,
            max_running_per_client: Some(4096),
            runs_per_second_per_client: f64::INFINITY,
            max_live: 4096,
            ..RegistryConfig::default()
        },
        max_runs_per_connection: 4096,
        // All of the bench's clients come from one address.
        max_connections_per_address: usize::MAX,
        ..ServerConfig::default()
    };
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve_on(runtime.clone(), config, listener, async move {
        let _ = stopped.await;
    }));

    let mut languages = Vec::new();
    for language in Language::components() {
        languages.push(measure_language(&runtime, &settings, address, language).await?);
    }
    eprintln!("bench: python-sci: EXEC to first output with pandas and scikit-learn");
    let mut ws = WsClient::connect(address, "/v1/ws").await?;
    let code = "import pandas, sklearn.ensemble\nprint('ready')";
    let mut first_output = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        shelf_full(&runtime, Language::PythonSci).await;
        first_output.push(ws.first_output(Language::PythonSci, code, "ready").await?);
    }
    let python_sci_first_output = summarize(&first_output);
    let mut first_output = Vec::with_capacity(settings.runs);
    let cold = Cold::start(&runtime);
    for _ in 0..settings.runs {
        first_output.push(ws.first_output(Language::PythonSci, code, "ready").await?);
    }
    drop(cold);
    let python_sci_first_output_cold = summarize(&first_output);
    let _ = stop_server.send(());
    server.await??;
    let process_start = match &settings.server_binary {
        Some(binary) => {
            eprintln!("bench: a server process from its start to its first answered run");
            Some(process_start(binary, &runtime.cache_dir(), settings.process_starts).await?)
        }
        None => None,
    };

    let report = Report {
        date: crate::utc_date(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()),
        sandlot: env!("CARGO_PKG_VERSION").into(),
        wasmtime: crate::WASMTIME_VERSION.into(),
        machine: machine(),
        settings,
        languages,
        python_sci_first_output,
        python_sci_first_output_cold,
        process_start,
    };
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("bench.json"), serde_json::to_string_pretty(&report)?)?;
    chart::cold_start(&report, &out_dir.join("cold-start.svg"))?;
    Ok(report)
}

async fn measure_language(
    runtime: &Runtime,
    settings: &Settings,
    address: std::net::SocketAddr,
    language: Language,
) -> BenchResult<LanguageReport> {
    let hello = hello(language);
    let step = |what: &str| eprintln!("bench: {language}: {what}");
    step("a session through the library, from a warm instance and from none");
    let warm_start = library_session(runtime, language, settings.runs, true).await?;
    let cold = Cold::start(runtime);
    let cold_start = library_session(runtime, language, settings.runs, false).await?;
    drop(cold);
    step("round trips through the server");

    let mut ws = WsClient::connect(address, "/v1/ws").await?;
    let mut websocket = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        shelf_full(runtime, language).await;
        let started = Instant::now();
        let stdout = ws.exec(language, hello).await?;
        websocket.push(started.elapsed());
        check_hello(&stdout)?;
    }
    let mut rest = RestClient::connect(address).await?;
    let mut rest_times = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        shelf_full(runtime, language).await;
        let started = Instant::now();
        let stdout = rest.exec(language, hello).await?;
        rest_times.push(started.elapsed());
        check_hello(&stdout)?;
    }
    let cold = Cold::start(runtime);
    let mut websocket_cold = Vec::with_capacity(settings.runs);
    for _ in 0..settings.runs {
        let started = Instant::now();
        let stdout = ws.exec(language, hello).await?;
        websocket_cold.push(started.elapsed());
        check_hello(&stdout)?;
    }
    drop(cold);
    let websocket_exec = summarize(&websocket);
    let websocket_exec_cold = summarize(&websocket_cold);
    let rest_exec = summarize(&rest_times);
    step("native interpreter baseline");
    let baseline = baseline(language, settings.baseline_runs);
    let ratio = |ours: &Summary| baseline.as_ref().map(|b| b.spawn.median_ms / ours.median_ms);
    let faster_than_baseline = Ratios {
        library: ratio(&warm_start.total),
        websocket: ratio(&websocket_exec),
        rest: ratio(&rest_exec),
        library_cold: ratio(&cold_start.total),
        websocket_cold: ratio(&websocket_exec_cold),
    };

    let level = Duration::from_secs_f64(settings.level_seconds);
    let mut throughput = Vec::new();
    for &clients in &settings.clients {
        step(&format!("throughput with {clients} clients"));
        throughput.push(throughput_level(address, language, clients, level).await?);
    }
    step("throughput of the library alone");
    let library_throughput = library_throughput(runtime, language, level).await?;
    let best = throughput.iter().map(|t| t.sessions_per_second).fold(0.0, f64::max);
    let server_share = best / library_throughput.sessions_per_second;
    step("direct IO: predictions over ClusterIO_Message frames");
    let direct_io =
        direct_io(address, language, settings.runs * 5, Duration::from_secs_f64(settings.level_seconds)).await?;
    step("game-engine commands over the processor face");
    let engine_commands = engine_commands(address, language, settings.runs * 5).await?;
    step("run_model over the runtime actions");
    let run_model = run_model(address, language, settings.runs * 5).await?;
    step("memory per idle session");
    let density = density(runtime, language, settings.density_sessions).await?;
    step("kill latency under load");
    let kill_latency = kill_latency(address, language, settings.kill_samples, settings.kill_background).await?;
    let compile = if settings.compile || language == Language::JavaScript {
        step("compile and load");
        let report = runtime.compile_report(language)?;
        Some(Compile {
            component_bytes: report.component_bytes,
            compile_seconds: report.compile.as_secs_f64(),
            native_bytes: report.native_bytes,
            load_ms: report.load.as_secs_f64() * 1e3,
        })
    } else {
        None
    };
    Ok(LanguageReport {
        language: language.name().into(),
        warm_start,
        cold_start,
        websocket_exec,
        websocket_exec_cold,
        rest_exec,
        baseline,
        faster_than_baseline,
        throughput,
        library_throughput,
        server_share,
        direct_io,
        engine_commands,
        run_model,
        density,
        kill_latency,
        compile,
    })
}

fn hello(language: Language) -> &'static str {
    language.spec().hello
}

fn check_hello(stdout: &str) -> BenchResult<()> {
    if stdout == "hello\n" { Ok(()) } else { Err(format!("expected hello, got {stdout:?}").into()) }
}

/// Waits (a second at most) until the language's warm instances are all
/// ready again, so that the next session is served from them.
async fn shelf_full(runtime: &Runtime, language: Language) {
    runtime.wait_warm(language, Duration::from_secs(1)).await;
}

/// Keeps no warm instances while it lives (every session starts cold), and
/// restores the runtime's setting when dropped.
struct Cold<'a> {
    runtime: &'a Runtime,
    warm_instances: usize,
}

impl<'a> Cold<'a> {
    fn start(runtime: &'a Runtime) -> Self {
        let warm_instances = runtime.warm_instances();
        runtime.set_warm_instances(0);
        Cold { runtime, warm_instances }
    }
}

impl Drop for Cold<'_> {
    fn drop(&mut self) {
        self.runtime.set_warm_instances(self.warm_instances);
    }
}

/// A session → "hello" printed → session dropped, through the library; each
/// from a warm instance (the shelf refilled before it) or as it comes.
async fn library_session(runtime: &Runtime, language: Language, runs: usize, warm: bool) -> BenchResult<ColdStart> {
    let program = Program::single(language.main_file(), hello(language));
    let (mut instantiate, mut run, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        if warm {
            shelf_full(runtime, language).await;
        }
        let started = Instant::now();
        let (mut session, mut events) = runtime.session(language, SessionOptions::default()).await?;
        let instantiated = started.elapsed();
        session.run(program.clone()).await?;
        let ran = started.elapsed();
        drop(session);
        total.push(started.elapsed());
        instantiate.push(instantiated);
        run.push(ran - instantiated);
        let mut stdout = Vec::new();
        while let Some(event) = events.try_recv() {
            if let SessionEvent::Stdout(bytes) = event {
                stdout.extend_from_slice(&bytes);
            }
        }
        check_hello(&String::from_utf8_lossy(&stdout))?;
    }
    Ok(ColdStart { instantiate: summarize(&instantiate), run: summarize(&run), total: summarize(&total) })
}

/// Spawning the native interpreter per run, as process-based runners do:
/// the interpreter's own executable, not a wrapper `PATH` may put first,
/// and of the interpreters `PATH` holds under that name the fastest to start
/// (the ratios are against the best a process-based runner could do here).
fn baseline(language: Language, runs: usize) -> Option<Baseline> {
    let native = language.spec().baseline?;
    let spawn = |program: &str| {
        let started = Instant::now();
        let output = Command::new(program).args(native.hello).output().ok()?;
        (output.stdout == b"hello\n").then(|| started.elapsed())
    };
    let mut candidates: Vec<String> = Vec::new();
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let found = dir.join(native.program);
        if !found.is_file() {
            continue;
        }
        let own = native
            .own_path
            .and_then(|args| Command::new(&found).args(args).output().ok())
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|path| path.trim().to_string())
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| found.display().to_string());
        if !candidates.contains(&own) {
            candidates.push(own);
        }
    }
    // Three spawns each (the first also brings its files into the page cache).
    let program = candidates
        .into_iter()
        .filter_map(|c| {
            let best = (0..3).filter_map(|_| spawn(&c)).min()?;
            Some((best, c))
        })
        .min()?
        .1;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(spawn(&program)?);
    }
    let [flag, code] = native.hello else { return None };
    Some(Baseline { command: format!("{program} {flag} \"{code}\""), spawn: summarize(&times) })
}

/// Hello-world sessions completed per second by `clients` WebSocket clients, each
/// with its own socket, running EXEC → STOP back to back for `duration`.
async fn throughput_level(
    address: std::net::SocketAddr,
    language: Language,
    clients: usize,
    duration: Duration,
) -> BenchResult<Throughput> {
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        sockets.push(WsClient::connect(address, "/v1/ws").await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (mut done, mut errors) = (0usize, 0usize);
                while Instant::now() < deadline {
                    match ws.exec(language, hello(language)).await {
                        Ok(out) if out == "hello\n" => done += 1,
                        _ => errors += 1,
                    }
                }
                (done, errors)
            })
        })
        .collect();
    let (mut completed, mut errors) = (0, 0);
    for task in tasks {
        let (done, failed) = task.await?;
        completed += done;
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Throughput { clients, completed, errors, sessions_per_second: completed as f64 / elapsed })
}

/// Sessions per second the library alone makes (session → hello → drop),
/// with one worker per core for `duration`.
async fn library_throughput(
    runtime: &Runtime,
    language: Language,
    duration: Duration,
) -> BenchResult<LibraryThroughput> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let program = Program::single(language.main_file(), hello(language));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (runtime, program) = (runtime.clone(), program.clone());
            tokio::spawn(async move {
                let mut done = 0usize;
                while Instant::now() < deadline {
                    let (mut session, _events) = runtime.session(language, SessionOptions::default()).await?;
                    session.run(program.clone()).await?;
                    done += 1;
                }
                Ok::<_, crate::Error>(done)
            })
        })
        .collect();
    let mut completed = 0;
    for task in tasks {
        completed += task.await??;
    }
    Ok(LibraryThroughput { workers, sessions_per_second: completed as f64 / started.elapsed().as_secs_f64() })
}

/// `sandlot serve` as a new process (its compiled guests cached in
/// `cache_dir`) → the first `POST /v1/exec` it answers, `runs` times.
async fn process_start(binary: &std::path::Path, cache_dir: &std::path::Path, runs: usize) -> BenchResult<Summary> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let data = std::env::temp_dir().join(format!("sandlot-bench-{}-{i}", std::process::id()));
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(["serve", "--listen", &address.to_string(), "--landlock", "false", "--data-dir"])
            .arg(&data)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let answered = async {
            loop {
                match RestClient::connect(address).await {
                    Ok(mut rest) => return rest.exec(Language::Python, hello(Language::Python)).await,
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        };
        let stdout = tokio::time::timeout(Duration::from_secs(60), answered).await;
        let elapsed = started.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&data);
        check_hello(&stdout.map_err(|_| "the server process did not answer within 60 s")??)?;
        times.push(elapsed);
    }
    Ok(summarize(&times))
}

/// Direct IO against a session whose model echoes its input: `round_trips`
/// sequential predictions, then as many as one socket answers in `duration`
/// with `DIRECT_IO_IN_FLIGHT` frames in flight, each reply checked to be the
/// one for its frame (in order).
async fn direct_io(
    address: std::net::SocketAddr,
    language: Language,
    round_trips: usize,
    duration: Duration,
) -> BenchResult<DirectIo> {
    let code = language.spec().echo_model;
    let mut actions = WsClient::connect(address, "/").await?;
    let session = actions.run_action(language, code).await?;
    let body = serde_json::json!({ "uuid": session, "new_state": "DIRECT" });
    RestClient::connect(address).await?.call(hyper::Method::PUT, "/control/v1/cluster/set_mode", body).await?;
    let mut io = DirectIoClient::connect(address, &session).await?;
    // Small integers: exact as f32.
    let value = |i: usize| (i % 1_000_000) as f32;
    let expect = |i: usize, got: Vec<f32>| {
        if got == [value(i)] { Ok(()) } else { Err(format!("frame {i} was answered {got:?}, not [{}]", value(i))) }
    };
    let sequential = async |io: &mut DirectIoClient| -> BenchResult<Summary> {
        let mut times = Vec::with_capacity(round_trips);
        for i in 0..round_trips {
            let started = Instant::now();
            io.send_request("echo", &[value(i)]).await?;
            let got = io.recv_values().await?;
            times.push(started.elapsed());
            expect(i, got)?;
        }
        Ok(summarize(&times))
    };
    let round_trip = sequential(&mut io).await?;
    let round_trip_low_latency = {
        let _hold = crate::latency::Hold::start();
        sequential(&mut io).await?
    };
    let started = Instant::now();
    let deadline = started + duration;
    let mut sent = 0;
    while sent < DIRECT_IO_IN_FLIGHT {
        io.send_request("echo", &[value(sent)]).await?;
        sent += 1;
    }
    let mut answered = 0;
    while answered < sent {
        expect(answered, io.recv_values().await?)?;
        answered += 1;
        if Instant::now() < deadline {
            io.send_request("echo", &[value(sent)]).await?;
            sent += 1;
        }
    }
    let predictions_per_second = answered as f64 / started.elapsed().as_secs_f64();
    drop(actions);
    Ok(DirectIo { round_trip, round_trip_low_latency, in_flight: DIRECT_IO_IN_FLIGHT, predictions_per_second })
}

/// A game script sending `count` engine commands, each answered at once,
/// with and without low latency held.
async fn engine_commands(
    address: std::net::SocketAddr,
    language: Language,
    count: usize,
) -> BenchResult<EngineCommands> {
    let code = language.spec().engine_loop.replace("COUNT", &count.to_string());
    let mut client = ProcessorClient::connect(address).await?;
    let measure = async |client: &mut ProcessorClient| -> BenchResult<(Summary, f64)> {
        let arrivals = client.run_answering(language, &code).await?;
        let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
            return Err("the script sent no engine command".into());
        };
        if arrivals.len() != count {
            return Err(format!("the script sent {} engine commands, not {count}", arrivals.len()).into());
        }
        let gaps: Vec<Duration> = arrivals.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let per_second = gaps.len() as f64 / (*last - *first).as_secs_f64();
        Ok((summarize(&gaps), per_second))
    };
    let (round_trip, commands_per_second) = measure(&mut client).await?;
    let (round_trip_low_latency, commands_per_second_low_latency) = {
        let _hold = crate::latency::Hold::start();
        measure(&mut client).await?
    };
    Ok(EngineCommands { round_trip, commands_per_second, round_trip_low_latency, commands_per_second_low_latency })
}

/// `run_model` of a model that echoes its input, `round_trips` requests one
/// at a time, with and without low latency held.
async fn run_model(address: std::net::SocketAddr, language: Language, round_trips: usize) -> BenchResult<RunModel> {
    let mut actions = WsClient::connect(address, "/").await?;
    let session = actions.run_action(language, language.spec().echo_model).await?;
    let sequential = async |actions: &mut WsClient| -> BenchResult<Summary> {
        let mut times = Vec::with_capacity(round_trips);
        for i in 0..round_trips {
            let model = serde_json::json!({ "sessionId": session, "name": "echo", "is_data": true, "data": [i] });
            let started = Instant::now();
            let reply = actions.request(serde_json::json!({ "action": "run_model", "model": model })).await?;
            times.push(started.elapsed());
            if reply["prediction"] != serde_json::json!([i]) {
                return Err(format!("run_model {i} was answered {reply}").into());
            }
        }
        Ok(summarize(&times))
    };
    let round_trip = sequential(&mut actions).await?;
    let round_trip_low_latency = {
        let _hold = crate::latency::Hold::start();
        sequential(&mut actions).await?
    };
    Ok(RunModel { round_trip, round_trip_low_latency })
}

/// Private (not shared copy-on-write) memory of this process, from smaps_rollup.
fn private_bytes() -> BenchResult<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup")?;
    let kib: u64 = rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Ok(kib * 1024)
}

/// Private memory per idle live session (after a hello run), with `count` held at once.
async fn density(runtime: &Runtime, language: Language, count: usize) -> BenchResult<Density> {
    let program = Program::single(language.main_file(), hello(language));
    // One session first, so one-time costs (code pages, caches) are not counted.
    let (mut warm, _) = runtime.session(language, SessionOptions::default()).await?;
    warm.run(program.clone()).await?;
    // Sockets of the steps before close on the server's side meanwhile; let
    // them, so what they free is not taken off this count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = private_bytes()?;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut session, events) = runtime.session(language, SessionOptions::default()).await?;
        session.run(program.clone()).await?;
        drop(events);
        held.push(session);
    }
    let after = private_bytes()?;
    drop(held);
    Ok(Density { sessions: count, private_bytes_per_session: after.saturating_sub(before) as f64 / count as f64 })
}

/// KILL sent → STOP received over the WebSocket, while `background` other
/// sessions spin.
async fn kill_latency(
    address: std::net::SocketAddr,
    language: Language,
    samples: usize,
    background: usize,
) -> BenchResult<Summary> {
    let spin = language.spec().endless;
    let mut busy = WsClient::connect(address, "/v1/ws").await?;
    for _ in 0..background {
        busy.spawn(language, spin).await?;
    }
    let mut sampler = WsClient::connect(address, "/v1/ws").await?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let runid = sampler.spawn(language, spin).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        sampler.kill(&runid).await?;
        sampler.wait_stops(std::slice::from_ref(&runid)).await?;
        times.push(started.elapsed());
    }
    // Closing the socket stops its runs (the ranna face kills a leaving
    // client's runs); one sample's STOP shows the server has caught up.
    drop(busy);
    let runid = sampler.spawn(language, spin).await?;
    sampler.kill(&runid).await?;
    sampler.wait_stops(std::slice::from_ref(&runid)).await?;
    Ok(summarize(&times))
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "unknown".into());
    let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{r:.0}×"))
}

/// The report as a Markdown table.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "sandlot {} on wasmtime {}, {} ({} CPUs, {} GiB), {}\n\n",
        report.sandlot,
        report.wasmtime,
        report.machine.cpu_model,
        report.machine.cpus,
        report.machine.memory_gib,
        report.date
    );
    let names: Vec<&str> = report.languages.iter().map(|l| l.language.as_str()).collect();
    out.push_str(&format!("| measure | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len())));
    let mut row = |label: &str, cell: &dyn Fn(&LanguageReport) -> String| {
        let cells: Vec<String> = report.languages.iter().map(cell).collect();
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    };
    let spread = |s: &Summary| format!("{} ms (p90 {}, p99 {})", ms(s.median_ms), ms(s.p90_ms), ms(s.p99_ms));
    row("library, warm instance: get instance", &|l| spread(&l.warm_start.instantiate));
    row("library, warm instance: run hello", &|l| spread(&l.warm_start.run));
    row("library, warm instance: total", &|l| spread(&l.warm_start.total));
    row("library, cold (none ready): instantiate", &|l| spread(&l.cold_start.instantiate));
    row("library, cold: run hello", &|l| spread(&l.cold_start.run));
    row("library, cold: total", &|l| spread(&l.cold_start.total));
    row("WebSocket EXEC → STOP, warm instance", &|l| spread(&l.websocket_exec));
    row("WebSocket EXEC → STOP, cold", &|l| spread(&l.websocket_exec_cold));
    row("POST /v1/exec, warm instance", &|l| spread(&l.rest_exec));
    row("baseline: spawn native interpreter", &|l| {
        l.baseline.as_ref().map_or("not installed".into(), |b| format!("{} (`{}`)", spread(&b.spawn), b.command))
    });
    row("faster than baseline, warm: library / WS / REST", &|l| {
        let r = &l.faster_than_baseline;
        format!("{} / {} / {}", times(r.library), times(r.websocket), times(r.rest))
    });
    row("faster than baseline, cold: library / WS", &|l| {
        let r = &l.faster_than_baseline;
        format!("{} / {}", times(r.library_cold), times(r.websocket_cold))
    });
    for (i, clients) in report.settings.clients.iter().enumerate() {
        row(&format!("throughput, {clients} clients"), &|l| {
            l.throughput.get(i).map_or("–".into(), |t| format!("{:.0} sessions/s", t.sessions_per_second))
        });
    }
    row("throughput, library alone", &|l| {
        let t = &l.library_throughput;
        format!(
            "{:.0} sessions/s ({} workers); server {:.0}% of it",
            t.sessions_per_second,
            t.workers,
            l.server_share * 100.0
        )
    });
    row("direct IO: prediction round trip", &|l| spread(&l.direct_io.round_trip));
    row("direct IO: round trip, `--low-latency`", &|l| spread(&l.direct_io.round_trip_low_latency));
    row("direct IO: predictions on one socket", &|l| {
        format!("{:.0}/s ({} in flight)", l.direct_io.predictions_per_second, l.direct_io.in_flight)
    });
    row("game-engine command round trip (processor)", &|l| {
        format!("{} = {:.0}/s", spread(&l.engine_commands.round_trip), l.engine_commands.commands_per_second)
    });
    row("game-engine command, `--low-latency`", &|l| {
        let e = &l.engine_commands;
        format!("{} = {:.0}/s", spread(&e.round_trip_low_latency), e.commands_per_second_low_latency)
    });
    row("`run_model` round trip (actions)", &|l| spread(&l.run_model.round_trip));
    row("`run_model`, `--low-latency`", &|l| spread(&l.run_model.round_trip_low_latency));
    row("private memory per idle live session", &|l| {
        format!("{:.2} MiB ({} held)", l.density.private_bytes_per_session / 1048576.0, l.density.sessions)
    });
    row("kill latency under load", &|l| {
        format!(
            "p50 {} ms, p99 {} ms ({} busy)",
            ms(l.kill_latency.median_ms),
            ms(l.kill_latency.p99_ms),
            report.settings.kill_background
        )
    });
    row("guest compile / .cwasm / load", &|l| {
        l.compile.as_ref().map_or("skipped (--quick)".into(), |c| {
            format!("{:.1} s / {:.1} MiB / {} ms", c.compile_seconds, c.native_bytes as f64 / 1048576.0, ms(c.load_ms))
        })
    });
    out.push_str(&format!(
        "\npython-sci (pandas + scikit-learn imported), WebSocket EXEC → first output: {} warm instance, {} cold\n",
        spread(&report.python_sci_first_output),
        spread(&report.python_sci_first_output_cold),
    ));
    if let Some(start) = &report.process_start {
        out.push_str(&format!(
            "\n`sandlot serve` process start → first run answered (POST /v1/exec, Python hello, compiled guests cached): {}\n",
            spread(start)
        ));
    }
    out
}
