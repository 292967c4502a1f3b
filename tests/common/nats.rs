//! A real `nats-server` with JetStream (Debian's package, installed by
//! `tests/clients/install.sh`) on a free loopback port, its data in a
//! temporary folder; stopped when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Nats {
    pub port: u16,
    name: String,
    data: tempfile::TempDir,
    /// A configuration file given to nats-server (`-c`), if any.
    config: Option<std::path::PathBuf>,
    child: Child,
}

impl Nats {
    /// A server on a free port. The port is found free and then given to
    /// nats-server, so a test running at the same time may take it first:
    /// the server is known by its name, and started on another port if its
    /// own did not come up.
    pub fn start() -> Nats {
        Nats::start_with(None)
    }

    /// A server with this configuration file's text (authorization, TLS...).
    pub fn start_configured(config: &str) -> Nats {
        Nats::start_with(Some(config))
    }

    fn start_with(config: Option<&str>) -> Nats {
        static SERVERS: AtomicU32 = AtomicU32::new(0);
        let name = format!("sandlot-test-{}-{}", std::process::id(), SERVERS.fetch_add(1, Ordering::Relaxed));
        let data = tempfile::Builder::new().prefix("sandlot-nats-").tempdir().unwrap();
        let config = config.map(|text| {
            let path = data.path().join("nats.conf");
            std::fs::write(&path, text).unwrap();
            path
        });
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(child) = launch(port, data.path(), &name, config.as_deref()) {
                return Nats { port, name, data, config, child };
            }
        }
        panic!("nats-server did not start on any of 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = launch(self.port, self.data.path(), &self.name, self.config.as_deref())
            .expect("nats-server restarts on its port");
    }
}

/// Starts nats-server and waits until it answers on `port` as `name`; `None`
/// if it exited first (its port was taken).
fn launch(port: u16, data: &std::path::Path, name: &str, config: Option<&std::path::Path>) -> Option<Child> {
    let mut command = Command::new("nats-server");
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let mut child = command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", name, "-sd"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server runs (tests/clients/install.sh installs Debian's nats-server)");
    let began = Instant::now();
    while !answers_as(port, name) {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "nats-server did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child)
}

/// Whether the server on `port` is the one named `name` (its INFO line says).
fn answers_as(port: u16, name: &str) -> bool {
    let Ok(tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let mut info = String::new();
    let _ = BufReader::new(tcp).take(64 << 10).read_line(&mut info);
    info.contains(&format!("\"server_name\":\"{name}\""))
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
