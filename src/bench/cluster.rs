//! `sandlot bench --cluster`: what a cluster costs and gives, on this
//! machine. It starts a real `nats-server -js` (Debian's, from `PATH`) and
//! real `sandlot serve` nodes as child processes, then measures, for Lua and
//! Python hellos over ranna's WebSocket face:
//! - a node alone (no `--cluster`): the baseline;
//! - clusters of 1, 2 and 3 nodes: the same runs. A node runs its own
//!   clients' runs itself while it has a core to spare, and queues the rest;
//! - a cluster of 1 whose node queues every run (`--local-runs 0`): what the
//!   queue costs a run.
//!
//! Latency is sequential EXEC → STOP on one socket of the first node (a
//! cluster of one against the node alone is the per-run overhead).
//! Throughput is `CLIENTS` sockets spread over the nodes, as a load
//! balancer would, each running hellos back to back for a while. Every
//! process shares this machine's cores, so more nodes cannot give more runs
//! per second here: the report gives each cluster's throughput against the
//! node alone, and per node.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::WsClient;
use super::{BenchResult, Summary, summarize};
use crate::Language;

/// Sockets that run hellos at once in the throughput measure.
const CLIENTS: usize = 16;

/// How long and how much.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSettings {
    /// Sequential runs per latency measure (the first tenth left out).
    pub sequential: usize,
    /// How long each throughput measure lasts.
    pub throughput_for: Duration,
    /// The largest cluster measured (clusters of 1..=this).
    pub max_nodes: usize,
}

impl ClusterSettings {
    pub fn full() -> Self {
        ClusterSettings { sequential: 400, throughput_for: Duration::from_secs(8), max_nodes: 3 }
    }

    /// Only checks that every measure runs.
    pub fn quick() -> Self {
        ClusterSettings { sequential: 20, throughput_for: Duration::from_secs(1), max_nodes: 2 }
    }
}

/// One setup's figures for one language.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRow {
    pub language: String,
    /// 0: a node alone, without `--cluster`; else the cluster's size.
    pub nodes: usize,
    /// Every run went through the queue (`--local-runs 0`).
    pub all_queued: bool,
    pub latency: Summary,
    pub runs_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub settings: ClusterSettings,
    pub nats_server: String,
    pub rows: Vec<ClusterRow>,
}

/// A child process, stopped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A folder removed when dropped.
struct Folder(std::path::PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `nats-server -js` on a free loopback port, its data in `folder`.
async fn start_nats(folder: &std::path::Path) -> BenchResult<(Process, String)> {
    let port = free_port()?;
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(folder)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("could not start nats-server ({e}): install Debian's nats-server (tests/clients/install.sh does)")
        })?;
    let process = Process(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok((process, format!("nats://127.0.0.1:{port}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("nats-server did not start listening within 5 s".into())
}

/// Starts a node: alone when `cluster` is `None`, else in the cluster at
/// `cluster.0` as `cluster.1`.
fn start_node(data: &std::path::Path, cluster: Option<(&str, &str, bool)>) -> BenchResult<(Process, SocketAddr)> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--stop-on-stdin-close", "--data-dir"])
        .arg(data)
        .args(["--runs-per-second", "1000000", "--max-running-per-client", "64"])
        .args(["--max-connections-per-address", "1024"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("SANDLOT_LOG", "error");
    if let Some((url, name, all_queued)) = cluster {
        // The bench's own cluster: a secret made for this process.
        static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let secret = SECRET.get_or_init(|| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
        });
        command.args(["--cluster", url, "--node-name", name]).env("SANDLOT_CLUSTER_SECRET", secret);
        if all_queued {
            command.args(["--local-runs", "0"]);
        }
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().ok_or("the node printed nothing (did it fail to join?)")??;
    let address = line.strip_prefix("listening on http://").ok_or_else(|| format!("unexpected {line:?}"))?.parse()?;
    std::thread::spawn(move || for _ in lines {});
    Ok((process, address))
}

/// Waits until `address` says it is ready (every language prepared and
/// warm), for up to five minutes.
async fn ready(address: SocketAddr) -> BenchResult<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let began = Instant::now();
    loop {
        let asked = async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            let request = format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            std::io::Result::Ok(answer.starts_with(b"HTTP/1.1 200"))
        };
        if matches!(asked.await, Ok(true)) {
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(300) {
            return Err(format!("the node at {address} was not ready within 5 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sequential EXEC → STOP on one socket.
async fn latency(address: SocketAddr, language: Language, runs: usize) -> BenchResult<Summary> {
    let mut client = WsClient::connect(address, "/v1/ws").await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        let (stdout, stop) = client.exec_to_stop(language, super::hello(language)).await?;
        super::check_hello(&stdout).map_err(|e| format!("{e} ({stop})"))?;
        samples.push(began.elapsed());
    }
    Ok(summarize(&samples[runs / 10..]))
}

/// `CLIENTS` sockets spread over `nodes`, each running hellos back to back
/// for `duration`: runs finished per second.
async fn throughput(nodes: &[SocketAddr], language: Language, duration: Duration) -> BenchResult<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (address, done) = (nodes[i % nodes.len()], done.clone());
        clients.spawn(async move {
            let mut client = WsClient::connect(address, "/v1/ws").await?;
            while began.elapsed() < duration {
                let (stdout, stop) = client.exec_to_stop(language, super::hello(language)).await?;
                super::check_hello(&stdout).map_err(|e| format!("{e} ({stop})"))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        });
    }
    while let Some(joined) = clients.join_next().await {
        joined??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64())
}

async fn measure(
    nodes: &[SocketAddr],
    size: usize,
    all_queued: bool,
    settings: &ClusterSettings,
) -> BenchResult<Vec<ClusterRow>> {
    let mut rows = Vec::new();
    for &node in nodes {
        ready(node).await?;
    }
    for language in [Language::Lua, Language::Python] {
        let latency = latency(nodes[0], language, settings.sequential).await?;
        let runs_per_second = throughput(nodes, language, settings.throughput_for).await?;
        eprintln!(
            "sandlot bench --cluster: {language}, {}: {:.2} ms p50, {runs_per_second:.0} runs/s",
            setup_name(size, all_queued),
            latency.median_ms
        );
        rows.push(ClusterRow { language: language.name().into(), nodes: size, all_queued, latency, runs_per_second });
    }
    Ok(rows)
}

/// Measures a node alone, then clusters of 1 to `settings.max_nodes`.
pub async fn cluster_bench(settings: ClusterSettings) -> BenchResult<ClusterReport> {
    let version = Command::new("nats-server").arg("--version").output().map_err(|e| {
        format!("nats-server is not installed ({e}): install Debian's nats-server (tests/clients/install.sh does)")
    })?;
    let nats_server = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let scratch = Folder(std::env::temp_dir().join(format!("sandlot-bench-cluster-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let mut rows = Vec::new();
    {
        let (_node, address) = start_node(&scratch.0.join("alone"), None)?;
        rows.extend(measure(&[address], 0, false, &settings).await?);
    }
    let setups = (1..=settings.max_nodes).flat_map(|size| {
        let all_queued = (size == 1).then_some((1, true));
        std::iter::once((size, false)).chain(all_queued)
    });
    for (size, all_queued) in setups {
        // A fresh NATS server per setup: nothing left over from the last.
        let name = format!("{size}{}", if all_queued { "-queued" } else { "" });
        let (_nats, url) = start_nats(&scratch.0.join(format!("nats-{name}"))).await?;
        let mut nodes = Vec::new();
        for i in 0..size {
            let data = scratch.0.join(format!("cluster-{name}-node-{i}"));
            nodes.push(start_node(&data, Some((&url, &format!("bench-{i}"), all_queued)))?);
        }
        let addresses: Vec<SocketAddr> = nodes.iter().map(|(_, address)| *address).collect();
        rows.extend(measure(&addresses, size, all_queued, &settings).await?);
    }
    Ok(ClusterReport { settings, nats_server, rows })
}

impl ClusterReport {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "sandlot bench --cluster ({}; every node and the NATS server on this machine's {} cores)\n\n\
             | language | setup | EXEC → STOP p50 | p90 | added per run | runs/s ({CLIENTS} sockets) | vs alone | per node |\n\
             |---|---|---|---|---|---|---|---|\n",
            self.nats_server,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for row in &self.rows {
            let alone = self.rows.iter().find(|r| r.language == row.language && r.nodes == 0);
            let (added, ratio) = match alone {
                Some(alone) if row.nodes > 0 => (
                    format!("{:+.2} ms", row.latency.median_ms - alone.latency.median_ms),
                    format!("{:.2}×", row.runs_per_second / alone.runs_per_second),
                ),
                _ => ("—".into(), "1.00×".into()),
            };
            let per_node = match row.nodes {
                0 => format!("{:.0}", row.runs_per_second),
                n => format!("{:.0}", row.runs_per_second / n as f64),
            };
            let setup = setup_name(row.nodes, row.all_queued);
            out += &format!(
                "| {} | {setup} | {:.2} ms | {:.2} ms | {added} | {:.0} | {ratio} | {per_node} |\n",
                row.language, row.latency.median_ms, row.latency.p90_ms, row.runs_per_second
            );
        }
        out
    }
}

fn setup_name(nodes: usize, all_queued: bool) -> String {
    match (nodes, all_queued) {
        (0, _) => "alone".into(),
        (1, false) => "1 node".into(),
        (1, true) => "1 node, every run queued".into(),
        (n, _) => format!("{n} nodes"),
    }
}
