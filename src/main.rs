//! The `sandlot` command line: `run` a program locally, `serve` the faces,
//! `bench` ourselves, `prepare` the guests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sandlot::{
    Language, Limits, Program, RegistryConfig, Runtime, RuntimeConfig, ServerConfig, SessionEvent, SessionOptions,
    SourceFile, bench,
};

#[derive(Parser)]
#[command(name = "sandlot", version, about = "Runs untrusted Python and JavaScript in WebAssembly sandboxes")]
struct Cli {
    /// Folder for compiled guests (default: $SANDLOT_CACHE_DIR, else ~/.cache/sandlot).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs files in a sandbox, streams their output and exits with their status
    /// (1 for an uncaught error, 124 for a time limit, 137 for memory, output or kill).
    Run {
        /// python (python3, py) or javascript (js, node); guessed from the extension if omitted.
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
        settings: ServeSettings,
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
    },
    /// Compiles the guests to native code now, so the first session doesn't wait.
    Prepare,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
        let runtime = Runtime::new(RuntimeConfig { cache_dir: cli.cache_dir, ..RuntimeConfig::default() })?;
        match cli.command {
            Command::Run { lang, main, timeout, memory, fuel, files, args } => {
                let limits = limits(timeout, memory)?.with_fuel(fuel);
                run(&runtime, lang, main, files, args, limits).await
            }
            Command::Serve { settings, config, stop_on_stdin_close } => {
                let file = match &config {
                    Some(path) => ServeSettings::read(path)?,
                    None => ServeSettings::default(),
                };
                let config = settings.or(file).into_config()?;
                let stop = async move {
                    if stop_on_stdin_close {
                        tokio::select! {
                            _ = shutdown_signal() => {}
                            _ = stdin_closed() => {}
                        }
                    } else {
                        shutdown_signal().await;
                    }
                };
                sandlot::serve(runtime, config, stop).await?;
                Ok(0)
            }
            Command::Bench { quick, out } => {
                let settings = if quick { bench::Settings::quick() } else { bench::Settings::full() };
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
            Command::Prepare => {
                for language in Language::ALL {
                    runtime.prepare(language).await?;
                    eprintln!("sandlot: {language} guest ready");
                }
                Ok(0)
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("sandlot: {e}");
            ExitCode::from(2)
        }
    }
}

/// The settings of `serve`, as flags and as `--config` keys: every one
/// optional (the defaults fill in), unknown keys refused.
#[derive(clap::Args, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:8765]; anything but loopback needs a token.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Folder for the records of runs and for datasets
    /// [default: $SANDLOT_DATA_DIR, else $XDG_DATA_HOME/sandlot, else ~/.local/share/sandlot].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accepted tokens (config file only: a command line is visible to every user).
    #[arg(skip)]
    tokens: Option<Vec<String>>,
    /// Wall-clock limit of each run, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Memory limit of each run, in MiB [default: 256].
    #[arg(long, value_name = "MIB")]
    memory: Option<usize>,
    /// Runs (and model calls) going at once; more are refused as busy [default: 64].
    #[arg(long)]
    max_running: Option<usize>,
    /// Runs one client (token, else address) may have going [default: a quarter of --max-running].
    #[arg(long)]
    max_running_per_client: Option<usize>,
    /// New runs one client may start per second, on average; bursts of twice as many pass [default: 50].
    #[arg(long, value_name = "RUNS")]
    runs_per_second: Option<f64>,
    /// Seconds a finished session is kept in memory after its last use [default: 600].
    #[arg(long, value_name = "SECONDS")]
    idle_expiry: Option<u64>,
    /// Memory all kept (idle, live) instances may hold together, in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    live_memory: Option<usize>,
    /// Memory all sessions' placeholders may take together, in MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    placeholder_memory: Option<usize>,
    /// Hours the records of finished runs, and unfinished uploads, are kept [default: 168].
    #[arg(long, value_name = "HOURS")]
    retention_hours: Option<u64>,
    /// Connections held at once [default: 1024, lowered to fit the open-files limit].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Connections held at once from one client address [default: 128].
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Seconds a client has to send a request's headers [default: 10].
    #[arg(long, value_name = "SECONDS")]
    header_timeout: Option<f64>,
    /// Seconds a socket that must show a token has to send its first message [default: 10].
    #[arg(long, value_name = "SECONDS")]
    first_message_timeout: Option<f64>,
    /// Seconds after which a socket with nothing going and nothing sent is closed [default: 300].
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// A host name the server answers to besides IP addresses and localhost (repeatable).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Option<Vec<String>>,
    /// A web origin (https://example.org) whose pages may use the server (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Option<Vec<String>>,
    /// The largest dataset file accepted, in MiB [default: 4096].
    #[arg(long, value_name = "MIB")]
    max_dataset_file_mib: Option<u64>,
    /// Datasets kept at once [default: 1000].
    #[arg(long)]
    max_datasets: Option<usize>,
    /// All datasets together, in MiB [default: 65536].
    #[arg(long, value_name = "MIB")]
    max_datasets_mib: Option<u64>,
    /// Disk space datasets must leave free, in MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    min_free_disk_mib: Option<u64>,
}

/// `a.or(b)` for each named field.
macro_rules! either {
    ($a:ident, $b:ident; $($field:ident),*) => {
        ServeSettings { $($field: $a.$field.or($b.$field)),* }
    };
}

impl ServeSettings {
    fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{} is not a valid config file: {e}", path.display()))
    }

    /// These settings, with `other`'s where these have none.
    fn or(self, other: ServeSettings) -> ServeSettings {
        either!(self, other; listen, data_dir, tokens, timeout, memory, max_running, max_running_per_client,
            runs_per_second, idle_expiry, live_memory, placeholder_memory, retention_hours, max_connections,
            max_connections_per_address, header_timeout, first_message_timeout, idle_timeout, allowed_hosts,
            allowed_origins, max_dataset_file_mib, max_datasets, max_datasets_mib, min_free_disk_mib)
    }

    fn into_config(self) -> Result<ServerConfig, String> {
        let mut tokens = self.tokens.unwrap_or_default();
        if let Some(env) = std::env::var_os("SANDLOT_TOKENS") {
            let env = env.into_string().map_err(|_| "SANDLOT_TOKENS is not valid UTF-8")?;
            tokens.extend(env.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string));
        }
        let defaults = ServerConfig::default();
        let registry = RegistryConfig::default();
        let mib = |m: usize| m.saturating_mul(1 << 20);
        let mib64 = |m: u64| m.saturating_mul(1 << 20);
        let seconds = |s: Option<f64>, default: Duration, what: &str| match s {
            Some(s) => Duration::try_from_secs_f64(s).map_err(|e| format!("{what}: {e}")),
            None => Ok(default),
        };
        Ok(ServerConfig {
            listen: self.listen.unwrap_or(defaults.listen),
            limits: limits(
                self.timeout.unwrap_or(Limits::DEFAULT_WALL_CLOCK.as_secs_f64()),
                self.memory.unwrap_or(Limits::DEFAULT_MEMORY_BYTES >> 20),
            )?,
            registry: RegistryConfig {
                max_running: self.max_running.unwrap_or(registry.max_running),
                max_running_per_client: self.max_running_per_client.or(registry.max_running_per_client),
                runs_per_second_per_client: self.runs_per_second.unwrap_or(registry.runs_per_second_per_client),
                idle_expiry: self.idle_expiry.map_or(registry.idle_expiry, Duration::from_secs),
                live_memory_bytes: self.live_memory.map_or(registry.live_memory_bytes, mib),
                placeholder_memory_bytes: self.placeholder_memory.map_or(registry.placeholder_memory_bytes, mib),
                ..registry
            },
            data_dir: Some(self.data_dir.unwrap_or_else(default_data_dir)),
            tokens,
            retention: self.retention_hours.map_or(defaults.retention, |h| Duration::from_secs(h.saturating_mul(3600))),
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_address: self
                .max_connections_per_address
                .unwrap_or(defaults.max_connections_per_address),
            header_timeout: seconds(self.header_timeout, defaults.header_timeout, "header_timeout")?,
            first_message_timeout: seconds(
                self.first_message_timeout,
                defaults.first_message_timeout,
                "first_message_timeout",
            )?,
            idle_timeout: seconds(self.idle_timeout, defaults.idle_timeout, "idle_timeout")?,
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            allowed_origins: self.allowed_origins.unwrap_or_default(),
            datasets: sandlot::DatasetLimits {
                max_file_bytes: self.max_dataset_file_mib.map_or(defaults.datasets.max_file_bytes, mib64),
                max_datasets: self.max_datasets.unwrap_or(defaults.datasets.max_datasets),
                max_total_bytes: self.max_datasets_mib.map_or(defaults.datasets.max_total_bytes, mib64),
                min_free_bytes: self.min_free_disk_mib.map_or(defaults.datasets.min_free_bytes, mib64),
            },
            ..defaults
        })
    }
}

/// Logs to stderr, filtered by `$SANDLOT_LOG` (default `sandlot=info`).
/// Other crates log only at INFO and above whatever is asked: at DEBUG and
/// TRACE, HTTP and WebSocket libraries log whole headers and messages, and
/// with them clients' tokens and code.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let asked = tracing_subscriber::EnvFilter::try_from_env("SANDLOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("sandlot=info"));
    let ours_or_quiet = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("sandlot") || *meta.level() <= tracing::Level::INFO
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(asked).with_filter(ours_or_quiet),
        )
        .init();
}

/// `$SANDLOT_DATA_DIR`, else `$XDG_DATA_HOME/sandlot`, else `~/.local/share/sandlot`.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SANDLOT_DATA_DIR") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("sandlot")
}

/// The limits `--timeout SECONDS` and `--memory MIB` ask for.
fn limits(timeout: f64, memory: usize) -> Result<Limits, String> {
    let wall_clock = Duration::try_from_secs_f64(timeout).map_err(|e| format!("--timeout: {e}"))?;
    Ok(Limits::default().with_wall_clock(wall_clock).with_memory_bytes(memory.saturating_mul(1 << 20)))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
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

    let (mut session, mut events) =
        runtime.session(language, SessionOptions { limits: Some(limits), ..SessionOptions::default() }).await?;
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
