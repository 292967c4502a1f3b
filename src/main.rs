//! The `sandlot` command line: `run` a program locally, `serve` the faces,
//! `bench` ourselves, `prepare` the guests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sandlot::config::{ServeSettings, limits};
use sandlot::progress::{LogWriter, Preparing};
use sandlot::{
    Language, Limits, Program, Runtime, RuntimeConfig, SessionEvent, SessionOptions, SourceFile, Stdin, StdinError,
    StdinWriter, bench,
};

#[derive(Parser)]
#[command(name = "sandlot", version, about = "Runs untrusted Python, JavaScript and Lua in WebAssembly sandboxes")]
struct Cli {
    /// Folder for compiled guests (default: $SANDLOT_CACHE_DIR, else ~/.cache/sandlot).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// How log lines (stderr) are written: `human` for a terminal, `json` for
    /// a log collector, one object a line (default: $SANDLOT_LOG_FORMAT, else human).
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs files in a sandbox, streams their output and exits with their status
    /// (1 for an uncaught error, 124 for a time limit, 137 for memory, output or kill).
    Run {
        /// A language or alias (python, javascript, lua, python-sci); guessed from the extension if omitted.
        #[arg(long)]
        lang: Option<String>,
        /// The file to run; the first FILE if omitted.
        #[arg(long, value_name = "FILE")]
        main: Option<PathBuf>,
        /// Wall-clock limit in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = Limits::DEFAULT_WALL_CLOCK.as_secs_f64())]
        timeout: f64,
        /// Memory limit in MiB.
        #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT_MEMORY_BYTES >> 20)]
        memory: usize,
        /// Fuel (CPU) limit, in wasm instructions.
        #[arg(long, default_value_t = Limits::DEFAULT_FUEL)]
        fuel: u64,
        /// Refuse the system calls sandlot never makes, with a seccomp filter (as `serve` does).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        seccomp: bool,
        /// The program's files; arguments for the program follow `--`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Arguments passed to the program.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Serves the WebSocket and HTTP faces (ranna, runtime actions, processor, datasets).
    ///
    /// Settings come from the flags, then the --config file (a TOML file with
    /// the same names, in snake_case, plus `tokens`), then the defaults;
    /// tokens also from $SANDLOT_TOKENS (comma-separated).
    Serve {
        #[command(flatten)]
        settings: Box<ServeSettings>,
        /// A TOML file with any of the settings above (e.g. `max_running = 32`)
        /// and `tokens = ["..."]`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also stop when standard input closes (for a supervisor that holds a pipe).
        #[arg(long)]
        stop_on_stdin_close: bool,
    },
    /// Measures cold start, round trips, throughput, density, kill latency and
    /// compile costs against spawning native interpreters; prints a Markdown
    /// table and writes bench.json and cold-start.svg.
    Bench {
        /// A tiny setting that only checks every measurement runs.
        #[arg(long)]
        quick: bool,
        /// Where to write bench.json and cold-start.svg.
        #[arg(long, value_name = "DIR", default_value = "bench-results")]
        out: PathBuf,
        /// Measures cluster mode instead: a node alone against clusters of 1,
        /// 2 and 3 nodes on a NATS server (Debian's nats-server, on PATH),
        /// all on this machine; writes cluster.json.
        #[arg(long)]
        cluster: bool,
    },
    /// Holds a real server under steady, partly hostile load (idle live
    /// sessions, busy ones, clients that stop reading, one-shot runs) and
    /// reports whether its memory and open files stay flat; exits 1 if not.
    Soak {
        /// Twenty seconds of a small load, to check the soak works.
        #[arg(long)]
        quick: bool,
        /// How long to soak, in minutes [default: 10].
        #[arg(long)]
        minutes: Option<f64>,
        /// Where to write soak.json.
        #[arg(long, value_name = "DIR", default_value = "bench-results")]
        out: PathBuf,
    },
    /// Compiles the guests to native code now, so the first session doesn't wait.
    Prepare,
    /// Serves the Model Context Protocol over stdin/stdout, for an AI agent's
    /// MCP client to start (tools: list_languages, run_code). Logs go to stderr.
    Mcp {
        /// Wall-clock limit of each run, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = Limits::DEFAULT_WALL_CLOCK.as_secs_f64())]
        timeout: f64,
        /// Memory limit of each run, in MiB.
        #[arg(long, value_name = "MIB", default_value_t = Limits::DEFAULT_MEMORY_BYTES >> 20)]
        memory: usize,
        /// Refuse the system calls sandlot never makes, with a seccomp filter (as `serve` does).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
        seccomp: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match cli.log_format.map(Ok).or_else(|| {
        let asked = std::env::var("SANDLOT_LOG_FORMAT").ok()?;
        Some(LogFormat::from_str(&asked, true).map_err(|_| asked))
    }) {
        Some(Ok(format)) => format,
        None => LogFormat::Human,
        Some(Err(asked)) => {
            eprintln!("error: SANDLOT_LOG_FORMAT is {asked:?}; it can be human or json");
            return ExitCode::from(2);
        }
    };
    init_logging(log_format);
    // `serve` resolves its settings and restricts the process before any
    // thread starts (Landlock binds only threads started after it).
    let serving = match &cli.command {
        Command::Serve { settings, config, .. } => match serve_config(settings, config.as_deref(), &cli.cache_dir) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("sandlot: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // `serve` applies its filter once it runs as its user (`sandlot::serve`).
    if let Command::Run { seccomp: true, .. } | Command::Mcp { seccomp: true, .. } = &cli.command {
        let status = sandlot::harden::restrict_syscalls();
        tracing::debug!("seccomp: {status}");
    }
    // Guests run for a whole epoch tick between yields, so a worker thread
    // would check sockets and timers only every 61 ticks (~300 ms) by default:
    // too late for KILL and deadlines. Check them after every task instead.
    let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(1).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandlot: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = tokio.block_on(async {
        // Listening for SIGTERM starts before anything slow (the warm-up, the
        // store): a stop asked for at any moment after start is a graceful
        // one, which saves what finished runs left, never the default death.
        // (Only `serve` handles them; elsewhere Ctrl-C keeps its default.)
        let stopping = matches!(cli.command, Command::Serve { .. }).then(StopSignals::listen);
        // A one-off run has no later sessions to keep instances ready for.
        let warm_instances = matches!(cli.command, Command::Run { .. }).then_some(0);
        let data_dir = serving.as_ref().and_then(|c| c.data_dir.as_deref());
        let scratch_dir = Some(sandlot::scratch_base(data_dir));
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: cli.cache_dir,
            warm_instances,
            scratch_dir,
            ..RuntimeConfig::default()
        })?;
        match cli.command {
            Command::Run { lang, main, timeout, memory, fuel, files, args, .. } => {
                let limits = limits(timeout, memory)?.with_fuel(fuel);
                run(&runtime, lang, main, files, args, limits).await
            }
            Command::Serve { stop_on_stdin_close, .. } => {
                let config = serving.ok_or("the server's settings were not read")?;
                let stopping = stopping.ok_or("the stop signals were not listened for")?;
                let stop = async move {
                    if stop_on_stdin_close {
                        tokio::select! {
                            _ = stopping.recv() => {}
                            _ = stdin_closed() => {}
                        }
                    } else {
                        stopping.recv().await;
                    }
                };
                sandlot::serve(runtime, config, stop).await?;
                Ok(0)
            }
            Command::Bench { quick, out, cluster: true } => {
                let settings = if quick { bench::ClusterSettings::quick() } else { bench::ClusterSettings::full() };
                let report = bench::cluster_bench(settings).await.map_err(|e| e as Box<dyn std::error::Error>)?;
                println!("{}", report.markdown());
                std::fs::create_dir_all(&out)?;
                std::fs::write(out.join("cluster.json"), serde_json::to_string_pretty(&report)?)?;
                eprintln!("sandlot: wrote {}", out.join("cluster.json").display());
                Ok(0)
            }
            Command::Bench { quick, out, cluster: false } => {
                let mut settings = if quick { bench::Settings::quick() } else { bench::Settings::full() };
                settings.server_binary = std::env::current_exe().ok();
                let report =
                    bench::run(runtime, settings, out.clone()).await.map_err(|e| e as Box<dyn std::error::Error>)?;
                println!("{}", bench::markdown(&report));
                eprintln!(
                    "sandlot: wrote {} and {}",
                    out.join("bench.json").display(),
                    out.join("cold-start.svg").display()
                );
                Ok(0)
            }
            Command::Soak { quick, minutes, out } => {
                let mut settings = if quick { bench::SoakSettings::quick() } else { bench::SoakSettings::full() };
                if let Some(minutes) = minutes {
                    settings.duration =
                        Duration::try_from_secs_f64(minutes * 60.0).map_err(|e| format!("--minutes: {e}"))?;
                }
                let report = bench::soak(settings).await.map_err(|e| e as Box<dyn std::error::Error>)?;
                println!("{}", report.markdown());
                std::fs::create_dir_all(&out)?;
                std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&report)?)?;
                eprintln!("sandlot: wrote {}", out.join("soak.json").display());
                Ok(if report.flat { 0 } else { 1 })
            }
            Command::Mcp { timeout, memory, .. } => {
                use rmcp::ServiceExt;
                let limits = limits(timeout, memory)?;
                let registry = sandlot::Registry::new(runtime, sandlot::RegistryConfig::default());
                let options = SessionOptions { limits: Some(limits), ..SessionOptions::default() };
                let tools = sandlot::McpTools::new(registry, options, sandlot::Client::Local);
                let service = tools.serve(rmcp::transport::stdio()).await.map_err(|e| format!("MCP: {e}"))?;
                service.waiting().await.map_err(|e| format!("MCP: {e}"))?;
                Ok(0)
            }
            Command::Prepare => {
                for language in Language::preparation_order() {
                    let preparing = Preparing::start(language);
                    runtime.prepare(language).await?;
                    eprintln!("sandlot: {language} guest ready ({:.1} s)", preparing.done().as_secs_f64());
                }
                Ok(0)
            }
        }
    });
    // Blocking work still going is left behind: a compile (written to a
    // temporary file and renamed, so never half-seen), the wait for stdin
    // to close. Dropping the runtime would wait for it, for minutes or forever.
    tokio.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("sandlot: {e}");
            ExitCode::from(2)
        }
    }
}

/// The server's settings (flags, then the config file), with the process
/// restricted to its folders where Landlock is available and not turned off.
fn serve_config(
    settings: &ServeSettings,
    file: Option<&Path>,
    cache_dir: &Option<PathBuf>,
) -> Result<sandlot::ServerConfig, String> {
    let from_file = match file {
        Some(path) => ServeSettings::read(path)?,
        None => ServeSettings::default(),
    };
    let settings = Box::new(settings.clone()).or(from_file);
    let landlock = settings.landlock();
    let low_latency = settings.low_latency();
    let config = settings.into_config()?;
    // Opened before Landlock closes the file system, and before `--user`
    // gives up root: the device is root's.
    if low_latency {
        match sandlot::latency::Hold::for_process().idle_cpus() {
            Ok(()) => tracing::info!(
                "low latency: idle CPUs poll instead of halting, and sockets poll for their next message"
            ),
            Err(e) => tracing::warn!("low latency: sockets poll for their next message, but idle CPUs still halt: {e}"),
        }
    }
    if landlock && let Some(data_dir) = &config.data_dir {
        let scratch = sandlot::scratch_base(Some(data_dir));
        let status = sandlot::harden::restrict_files(
            data_dir,
            cache_dir.as_deref(),
            &scratch,
            &config.files_read_while_serving(),
        );
        tracing::info!("landlock: {status}");
    } else {
        tracing::info!("landlock: off (turned off in the settings)");
    }
    Ok(config)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Logs to stderr, filtered by `$SANDLOT_LOG` (default `sandlot=info`), as
/// text or as one JSON object a line (with the run's span: its id, face and
/// language). Other crates log only at INFO and above whatever is asked: at
/// DEBUG and TRACE, HTTP and WebSocket libraries log whole headers and
/// messages, and with them clients' tokens and code.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let asked = tracing_subscriber::EnvFilter::try_from_env("SANDLOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sandlot=info"));
    // The hint lets records below what was asked be dropped where they are
    // made: without it, every `log` record of the WebSocket library (one
    // per frame at TRACE) went through the subscriber to be refused.
    let most = asked.max_level_hint().unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    let ours_or_quiet = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("sandlot") || *meta.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(most);
    let layer = tracing_subscriber::fmt::layer().with_writer(|| LogWriter);
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(asked).with_filter(ours_or_quiet)).init();
}

/// Ctrl-C and SIGTERM, listened for from the moment this is made.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals { term: signal(SignalKind::terminate()).ok(), interrupt: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves on the first Ctrl-C or SIGTERM.
    async fn recv(mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Gives the guest this process's standard input as it comes, on a thread
/// of its own (left blocked in its read if the guest ends first: the
/// process exits without waiting for it).
fn forward_stdin(stdin: StdinWriter) {
    use std::io::Read;
    let forward = move || {
        let mut buffer = vec![0; 64 << 10];
        let mut input = std::io::stdin().lock();
        loop {
            let read = match input.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let chunk = bytes::Bytes::copy_from_slice(&buffer[..read]);
            // What the guest has not read yet is bounded: wait for it to read.
            loop {
                match stdin.write(chunk.clone()) {
                    Ok(()) => break,
                    Err(StdinError::Full { .. }) => std::thread::sleep(Duration::from_millis(5)),
                    Err(StdinError::Closed) => return,
                }
            }
        }
        stdin.close();
    };
    if let Err(e) = std::thread::Builder::new().name("sandlot-stdin".into()).spawn(forward) {
        eprintln!("sandlot: standard input is not passed on: {e}");
    }
}

/// Resolves when standard input reaches its end.
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
}

type CliResult = Result<i32, Box<dyn std::error::Error>>;

async fn run(
    runtime: &Runtime,
    lang: Option<String>,
    main: Option<PathBuf>,
    files: Vec<PathBuf>,
    args: Vec<String>,
    limits: Limits,
) -> CliResult {
    let main = main.unwrap_or_else(|| files[0].clone());
    let language = match lang {
        Some(name) => name.parse::<Language>()?,
        None => Language::from_path(&main.to_string_lossy())
            .ok_or_else(|| format!("cannot tell the language of {}; pass --lang", main.display()))?,
    };
    let base = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut sources = Vec::new();
    let mut all = files.clone();
    if !all.contains(&main) {
        all.push(main.clone());
    }
    for path in &all {
        let content = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        sources.push(SourceFile { name: program_name(&base, path), content });
    }
    let program = Program { files: sources, main_file: program_name(&base, &main), args, env: Vec::new() };

    let options = SessionOptions { limits: Some(limits), stdin: Stdin::Open(Default::default()), ..Default::default() };
    if !runtime.is_prepared(language) {
        // Cleared before the program writes anything.
        let _preparing = Preparing::start(language);
        runtime.prepare(language).await?;
    }
    let (mut session, mut events) = runtime.session(language, options).await?;
    forward_stdin(session.stdin());
    let printer = tokio::spawn(async move {
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        while let Some(event) = events.recv().await {
            match event {
                SessionEvent::Stdout(bytes) => {
                    let _ = stdout.write_all(&bytes).and_then(|_| stdout.flush());
                }
                SessionEvent::Stderr(bytes) => {
                    let _ = stderr.write_all(&bytes).and_then(|_| stderr.flush());
                }
                SessionEvent::Spawned | SessionEvent::Finished(_) => {}
            }
        }
    });
    let outcome = session.run(program).await?;
    drop(session);
    let _ = printer.await;
    if let Some(message) = &outcome.message {
        eprintln!("sandlot: {message} ({})", outcome.reason);
    }
    Ok(outcome.exit_code)
}

/// The name a file has inside the sandbox: its path relative to the main file's folder.
fn program_name(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new(path.file_name().unwrap_or(path.as_os_str())))
        .to_string_lossy()
        .replace('\\', "/")
}
