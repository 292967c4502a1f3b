//! A real `sandlot serve` process for face tests, and a small WebSocket client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A server process, stopped when dropped or, for the shared one, when the
/// test process exits and its stdin pipe closes.
pub struct Server {
    pub address: String,
    /// The server's data folder (records, datasets).
    pub data_dir: PathBuf,
    child: Child,
    /// Removes a data folder made for this server when it is dropped.
    _own_data: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `sandlot serve` on a free loopback port, with a fresh data
    /// folder and extra flags, and waits for its `listening on` line and
    /// then for `/readyz` (every guest prepared and warm): a test measures
    /// the server, not its start.
    pub fn start(extra: &[&str]) -> Server {
        let data = tempfile::Builder::new().prefix("sandlot-test-").tempdir().expect("a temporary folder");
        let mut server = Server::start_in(data.path(), extra, &[]);
        server._own_data = Some(data);
        server
    }

    /// `start`, with extra environment.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let data = tempfile::Builder::new().prefix("sandlot-test-").tempdir().expect("a temporary folder");
        let mut server = Server::start_in(data.path(), extra, env);
        server._own_data = Some(data);
        server
    }

    /// Starts `sandlot serve` on `data_dir` (kept when the server stops),
    /// with extra flags and environment.
    pub fn start_in(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(data_dir, extra, env, Stdio::inherit(), None).ready()
    }

    /// As `start_in`, with the process's open-files limit (soft and hard)
    /// set to `files`, and its log (stderr) written to `log`.
    pub fn start_with_open_files(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        files: u64,
        log: &Path,
    ) -> Server {
        let log = std::fs::File::create(log).expect("a log file").into();
        Server::launch(data_dir, extra, env, log, Some(files)).ready()
    }

    /// As `start_in`, with the server's log (stderr) written to `log`.
    pub fn start_logged(data_dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Server {
        Server::launch(data_dir, extra, env, std::fs::File::create(log).expect("a log file").into(), None).ready()
    }

    /// As `start_in`, returning as soon as the server listens, while it may
    /// still be preparing its guests.
    pub fn start_unready(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(data_dir, extra, env, Stdio::inherit(), None)
    }

    /// Waits (5 minutes at most) until `GET /readyz` answers 200.
    fn ready(mut self) -> Server {
        let began = std::time::Instant::now();
        loop {
            if self.readyz_status() == Some(200) {
                return self;
            }
            assert!(self.is_running(), "the server exited before it was ready");
            assert!(began.elapsed() < Duration::from_secs(300), "the server was not ready within 5 minutes");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status `GET /readyz` answers with, asked over a plain blocking socket.
    pub fn readyz_status(&self) -> Option<u16> {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&self.address).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(tcp, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    fn launch(data_dir: &Path, extra: &[&str], env: &[(&str, &str)], stderr: Stdio, files: Option<u64>) -> Server {
        let listen: &[&str] = if extra.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        // SANDLOT_TEST_SERVER points the tests at another build (to check that
        // an attack's test fails on the build before its fix).
        let binary = std::env::var_os("SANDLOT_TEST_SERVER").unwrap_or_else(|| env!("CARGO_BIN_EXE_sandlot").into());
        let mut command = Command::new(binary);
        if let Some(files) = files {
            use std::os::unix::process::CommandExt;
            let limit = rustix::process::Rlimit { current: Some(files), maximum: Some(files) };
            // Safety: between fork and exec only setrlimit runs (a system call, no allocation).
            unsafe {
                command.pre_exec(move || {
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).map_err(Into::into)
                });
            }
        }
        let mut child = command
            .arg("serve")
            .args(listen)
            .args(["--stop-on-stdin-close", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("SANDLOT_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sandlot serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("the server prints a line").expect("readable");
        let address = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        Server { address, data_dir: data_dir.to_path_buf(), child, _own_data: None }
    }

    /// Kills the process with SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// One server shared by every test of a binary.
    pub fn shared() -> &'static Server {
        static SERVER: OnceLock<Server> = OnceLock::new();
        // Every test of a binary shares it from one address: no per-client share or rate gets in the way.
        SERVER.get_or_init(|| {
            Server::start(&["--max-running", "256", "--max-running-per-client", "256", "--runs-per-second", "100000"])
        })
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.address, path)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        let status = self.child.wait().expect("server exits");
        // A graceful stop exits 0; death by the signal would skip the flush.
        assert!(status.success(), "the server did not stop gracefully: {status}");
        let data = self._own_data.take();
        std::mem::forget(self);
        drop(data);
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("waitable").is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the server's status");
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {status}"));
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB")
    }

    /// The server's resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") << 10
    }

    /// The most resident memory the server has held since `reset_peak`, in bytes.
    pub fn peak(&self) -> u64 {
        self.status_kib("VmHWM:") << 10
    }

    /// Starts counting the peak again from now (Linux's clear_refs).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("the peak can be reset");
    }

    /// How much `attack` makes the server hold at its peak beyond what it held before.
    pub async fn peak_growth<F: std::future::Future>(&self, attack: F) -> (u64, F::Output) {
        self.reset_peak();
        let before = self.rss();
        let output = attack.await;
        (self.peak().saturating_sub(before), output)
    }

    /// Open file descriptors of the server.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("the server's fds").count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One HTTP/1.1 request to the server; returns the status and the JSON body.
pub async fn http(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_with(server, method, path, body, &[]).await
}

/// `http` with extra headers (they replace the default Host and Content-Type).
pub async fn http_with(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let (status, _, body) = http_response(server, method, path, body, headers).await;
    (status, body)
}

/// One HTTP/1.1 request; the status, the response's headers and its JSON body.
pub async fn http_response(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Value) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let stream = TcpStream::connect(&server.address).await.expect("the server accepts");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path);
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("host") {
        request = request.header("host", &server.address);
    }
    if !given("content-type") {
        request = request.header("content-type", "application/json");
    }
    // An empty value leaves the header out (and its default too).
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or("").to_string()))).expect("a valid request");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("a body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, body)
}

/// A WebSocket client that speaks JSON.
pub struct Client {
    pub socket: Socket,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Client { socket }
    }

    /// Connects to `server`'s `path` from the loopback address `source`
    /// (every 127.x.y.z is this machine's); a refusal is an error.
    pub async fn connect_from(server: &Server, source: std::net::Ipv4Addr, path: &str) -> Result<Client, String> {
        let tcp = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        tcp.bind((source, 0).into()).map_err(|e| e.to_string())?;
        let address = server.address.parse().expect("the server's address");
        let tcp = tcp.connect(address).await.map_err(|e| e.to_string())?;
        let (socket, _) = tokio_tungstenite::client_async(server.ws_url(path), MaybeTlsStream::Plain(tcp))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Client { socket })
    }

    /// Connects with extra headers on the upgrade request; the server's
    /// refusal (an HTTP status) is an error.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("a valid URL");
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(Client { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(format!("HTTP {}", response.status().as_u16()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next JSON message, or a panic after `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> Value {
        loop {
            let message = tokio::time::timeout(timeout, self.socket.next())
                .await
                .expect("a message arrives in time")
                .expect("the socket stays open")
                .expect("a readable message");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("the server sends JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next binary message (pings skipped), or a panic after 30 s.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.socket.next()).await.unwrap().unwrap().unwrap() {
                Message::Binary(bytes) => return bytes.to_vec(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a binary reply, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(Duration::from_secs(20)).await
    }

    /// The next message for which `keep` is true; others are collected into `skipped`.
    pub async fn recv_until(&mut self, keep: impl Fn(&Value) -> bool, skipped: &mut Vec<Value>) -> Value {
        loop {
            let message = self.recv().await;
            if keep(&message) {
                return message;
            }
            skipped.push(message);
        }
    }

    /// Whether the server closed the socket (or it ended) within `timeout`.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        loop {
            match tokio::time::timeout(timeout, self.socket.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Starts a run on the runtime actions face and returns its session id and,
/// once it has ended, its stdout and the `finished` message.
pub async fn run_action(client: &mut Client, request: Value) -> (String, String, Value) {
    client.send(request).await;
    let reply = client.recv().await;
    assert_eq!(reply["action"], "run", "{reply}");
    let id = reply["sessionId"].as_str().unwrap_or_else(|| panic!("no sessionId in {reply}")).to_string();
    let mut stdout = String::new();
    loop {
        let pushed = client.recv().await;
        assert_eq!(pushed["sessionId"], id.as_str(), "{pushed}");
        match pushed["action"].as_str() {
            Some("output") if pushed["stream"] == "stdout" => stdout.push_str(pushed["data"].as_str().unwrap()),
            Some("output") => {}
            Some("finished") => return (id, stdout, pushed),
            _ => panic!("unexpected {pushed}"),
        }
    }
}
