//! `sandlot soak`: a real `sandlot serve` process held under a steady,
//! partly hostile load for a while, watched for growth of its memory and
//! file descriptors. The load: idle live sessions (finished runs that saved
//! a model, kept for it), busy sessions (endless loops ended by the time
//! limit and started again), clients that start floods of output and never
//! read, a stream of one-shot runs, and model calls on the idle sessions.
//!
//! Flat means: from the end of the warm-up (the first quarter) to the end,
//! resident memory grew by at most 5% (or 16 MiB), and open files by at most
//! 32 (connections come and go).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::BenchResult;
use super::client::WsClient;
use crate::Language;

/// How long and how hard to soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSettings {
    pub duration: Duration,
    /// Live sessions held idle.
    pub idle: usize,
    /// Runs kept busy at once.
    pub busy: usize,
    /// Clients that stop reading.
    pub sluggards: usize,
    pub sample_every: Duration,
}

impl SoakSettings {
    /// Ten minutes: 1,000 idle sessions, 100 busy, 20 clients that don't read.
    pub fn full() -> Self {
        SoakSettings {
            duration: Duration::from_secs(600),
            idle: 1000,
            busy: 100,
            sluggards: 20,
            sample_every: Duration::from_secs(10),
        }
    }

    /// A short run that only checks the soak works.
    pub fn quick() -> Self {
        SoakSettings {
            duration: Duration::from_secs(20),
            idle: 50,
            busy: 8,
            sluggards: 2,
            sample_every: Duration::from_secs(2),
        }
    }
}

/// One look at the server.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub seconds: f64,
    pub rss_bytes: u64,
    pub open_files: usize,
    /// Runs finished so far (busy, one-shot and flooding ones).
    pub runs: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub settings: SoakSettings,
    pub samples: Vec<Sample>,
    pub rss_growth_bytes: i64,
    pub open_files_growth: i64,
    pub flat: bool,
}

impl SoakReport {
    pub fn markdown(&self) -> String {
        let mut out = String::from("| time | RSS | open files | runs done |\n|---|---|---|---|\n");
        for s in &self.samples {
            out.push_str(&format!(
                "| {:.0} s | {:.1} MiB | {} | {} |\n",
                s.seconds,
                s.rss_bytes as f64 / (1 << 20) as f64,
                s.open_files,
                s.runs
            ));
        }
        out.push_str(&format!(
            "\nAfter the warm-up: RSS {:+.1} MiB, open files {:+}: {}\n",
            self.rss_growth_bytes as f64 / (1 << 20) as f64,
            self.open_files_growth,
            if self.flat { "flat" } else { "GROWING" }
        ));
        out
    }
}

/// The server under test: a child process, stopped when dropped.
struct Served {
    child: Child,
    address: std::net::SocketAddr,
    _data: tempfile_dir::Dir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data folder of its own, removed at the end.
mod tempfile_dir {
    pub(super) struct Dir(pub(super) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn start_server(settings: &SoakSettings) -> BenchResult<Served> {
    let data = std::env::temp_dir().join(format!("sandlot-soak-{}", std::process::id()));
    let data = tempfile_dir::Dir(data);
    let running = (settings.busy + settings.sluggards + 16).to_string();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--stop-on-stdin-close", "--data-dir"])
        .arg(&data.0)
        .args(["--timeout", "5", "--idle-expiry", "3600", "--runs-per-second", "1000000"])
        .args(["--max-running", &running, "--max-running-per-client", &running])
        .args(["--max-connections", "8192", "--max-connections-per-address", "8192"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("SANDLOT_LOG", "error")
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().ok_or("the server printed nothing")??;
    let address = line.strip_prefix("listening on http://").ok_or_else(|| format!("unexpected {line:?}"))?.parse()?;
    std::thread::spawn(move || for _ in lines {});
    Ok(Served { child, address, _data: data })
}

fn look(pid: u32, started: Instant, runs: u64) -> BenchResult<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or("no VmRSS")?;
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Sample { seconds: started.elapsed().as_secs_f64(), rss_bytes: rss_kib << 10, open_files, runs })
}

/// Soaks a server and reports what its memory and descriptors did.
pub async fn soak(settings: SoakSettings) -> BenchResult<SoakReport> {
    let served = start_server(&settings)?;
    let address = served.address;
    let pid = served.child.id();
    eprintln!("soak: holding {} idle live sessions", settings.idle);
    let mut idle_ids = Vec::with_capacity(settings.idle);
    let mut makers = Vec::new();
    for chunk in 0..8usize {
        let count = settings.idle / 8 + usize::from(chunk < settings.idle % 8);
        makers.push(tokio::spawn(async move {
            let mut client = WsClient::connect(address, "/").await?;
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let code = "sandlot.saveModel('echo', (x) => x); console.log('ready')";
                ids.push(client.run_action(Language::JavaScript, code).await?);
            }
            BenchResult::Ok(ids)
        }));
    }
    for maker in makers {
        idle_ids.extend(maker.await??);
    }
    let idle_ids = Arc::new(idle_ids);

    eprintln!(
        "soak: {} busy runs, {} clients that don't read, one-shot runs, for {:?}",
        settings.busy, settings.sluggards, settings.duration
    );
    let done = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..settings.busy {
        let (done, runs) = (done.clone(), runs.clone());
        load.push(tokio::spawn(async move {
            let mut client = WsClient::connect(address, "/v1/ws").await?;
            while !done.load(Ordering::Relaxed) {
                client.exec(Language::JavaScript, "for (;;) {}").await?;
                runs.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        }));
    }
    for _ in 0..settings.sluggards {
        let (done, runs) = (done.clone(), runs.clone());
        load.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let mut sluggard = WsClient::connect(address, "/v1/ws").await?;
                sluggard.start_only(Language::JavaScript, "for (;;) process.stdout.write('x'.repeat(1000))").await?;
                tokio::time::sleep(Duration::from_secs(6)).await;
                drop(sluggard);
                runs.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        }));
    }
    for _ in 0..2 {
        let (done, runs) = (done.clone(), runs.clone());
        load.push(tokio::spawn(async move {
            let mut client = WsClient::connect(address, "/v1/ws").await?;
            while !done.load(Ordering::Relaxed) {
                client.exec(Language::Python, "print('hello')").await?;
                runs.fetch_add(1, Ordering::Relaxed);
            }
            BenchResult::Ok(())
        }));
    }
    {
        let (done, ids) = (done.clone(), idle_ids.clone());
        load.push(tokio::spawn(async move {
            let mut client = WsClient::connect(address, "/").await?;
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) && !ids.is_empty() {
                client.request(json!({ "action": "run_model", "model": { "sessionId": ids[i % ids.len()], "name": "echo", "data": [i] } })).await?;
                i = i.wrapping_add(7919);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            BenchResult::Ok(())
        }));
    }

    let started = Instant::now();
    let mut samples = vec![look(pid, started, 0)?];
    while started.elapsed() < settings.duration {
        tokio::time::sleep(settings.sample_every.min(settings.duration.saturating_sub(started.elapsed()))).await;
        let sample = look(pid, started, runs.load(Ordering::Relaxed))?;
        eprintln!(
            "soak: {:>4.0} s  RSS {:>7.1} MiB  open files {:>5}  runs {}",
            sample.seconds,
            sample.rss_bytes as f64 / (1 << 20) as f64,
            sample.open_files,
            sample.runs
        );
        samples.push(sample);
    }
    done.store(true, Ordering::Relaxed);
    for task in load {
        task.abort();
    }
    drop(served);

    let warm = samples.iter().find(|s| s.seconds >= settings.duration.as_secs_f64() / 4.0).unwrap_or(&samples[0]);
    let tail = &samples[samples.len().saturating_sub(3)..];
    let rss_end = tail.iter().map(|s| s.rss_bytes).max().unwrap_or(warm.rss_bytes);
    let files_end = tail.iter().map(|s| s.open_files).max().unwrap_or(warm.open_files);
    let rss_growth = rss_end as i64 - warm.rss_bytes as i64;
    let files_growth = files_end as i64 - warm.open_files as i64;
    let allowed = (warm.rss_bytes / 20).max(16 << 20) as i64;
    let flat = rss_growth <= allowed && files_growth <= 32;
    Ok(SoakReport { settings, samples, rss_growth_bytes: rss_growth, open_files_growth: files_growth, flat })
}
