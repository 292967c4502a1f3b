//! The bench's own clients: a ranna and runtime-actions WebSocket client, a
//! game client on the processor face, a direct-IO client speaking Hanami's
//! `ClusterIO_Message` frames, and a keep-alive HTTP/1.1 client, all on
//! loopback.

use std::net::SocketAddr;

use crate::Language;
use crate::server::proto::{ClusterIoMessage, ClusterProcessType};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BenchResult;

const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    nonce: u64,
}

impl WsClient {
    pub(super) async fn connect(address: SocketAddr, path: &str) -> BenchResult<Self> {
        // As the server's sockets: tungstenite zeroes its whole read buffer before each read.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(crate::server::READ_BUFFER_BYTES);
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(format!("ws://{address}{path}"), Some(config), true).await?;
        Ok(WsClient { socket, nonce: 0 })
    }

    async fn send(&mut self, value: Value) -> BenchResult<()> {
        self.socket.send(Message::text(value.to_string())).await?;
        Ok(())
    }

    /// The next JSON message; an error if none comes within `REPLY_TIMEOUT`,
    /// so the bench always ends.
    async fn recv(&mut self) -> BenchResult<Value> {
        loop {
            let next = tokio::time::timeout(REPLY_TIMEOUT, self.socket.next())
                .await
                .map_err(|_| format!("the server sent nothing for {REPLY_TIMEOUT:?}"))?;
            match next.ok_or("the server closed the socket")?? {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(_) => return Err("the server closed the socket".into()),
                _ => continue,
            }
        }
    }

    /// EXEC → SPAWN; returns the run id. Events of other runs on this socket
    /// that arrive meanwhile are dropped.
    pub(super) async fn spawn(&mut self, language: Language, code: &str) -> BenchResult<String> {
        self.nonce += 1;
        self.send(json!({ "op": 1, "nonce": self.nonce, "args": { "language": language.name(), "code": code } }))
            .await?;
        loop {
            let event = self.recv().await?;
            match event["code"].as_u64() {
                Some(2) if event["nonce"] == self.nonce => {
                    return Ok(event["data"]["runid"].as_str().ok_or("SPAWN without runid")?.to_string());
                }
                Some(1) => return Err(format!("the server refused: {}", event["data"]).into()),
                _ => continue,
            }
        }
    }

    /// EXEC → SPAWN → LOG… → STOP; returns stdout.
    pub(super) async fn exec(&mut self, language: Language, code: &str) -> BenchResult<String> {
        Ok(self.exec_to_stop(language, code).await?.0)
    }

    /// EXEC → SPAWN → LOG… → STOP; returns stdout and the STOP's data.
    pub(super) async fn exec_to_stop(&mut self, language: Language, code: &str) -> BenchResult<(String, Value)> {
        let runid = self.spawn(language, code).await?;
        let mut stdout = String::new();
        loop {
            let event = self.recv().await?;
            if event["data"]["runid"] != runid.as_str() {
                continue;
            }
            match event["code"].as_u64() {
                Some(3) => stdout.push_str(event["data"]["stdout"].as_str().unwrap_or("")),
                Some(4) => return Ok((stdout, event["data"].clone())),
                _ => {}
            }
        }
    }

    /// EXEC → the first LOG that carries `expected`; then waits for the STOP.
    pub(super) async fn first_output(
        &mut self,
        language: Language,
        code: &str,
        expected: &str,
    ) -> BenchResult<std::time::Duration> {
        let started = std::time::Instant::now();
        let runid = self.spawn(language, code).await?;
        let mut first = None;
        loop {
            let event = self.recv().await?;
            if event["data"]["runid"] != runid.as_str() {
                continue;
            }
            match event["code"].as_u64() {
                Some(3)
                    if first.is_none() && event["data"]["stdout"].as_str().is_some_and(|s| s.contains(expected)) =>
                {
                    first = Some(started.elapsed());
                }
                Some(4) => return first.ok_or_else(|| format!("the run printed no {expected:?}: {event}").into()),
                _ => {}
            }
        }
    }

    /// EXEC, and nothing read back (a client that will not read).
    pub(super) async fn start_only(&mut self, language: Language, code: &str) -> BenchResult<()> {
        self.send(json!({ "op": 1, "args": { "language": language.name(), "code": code } })).await
    }

    /// A runtime-actions request and its reply.
    pub(super) async fn request(&mut self, value: Value) -> BenchResult<Value> {
        self.send(value).await?;
        self.recv().await
    }

    /// A runtime-actions `run`, waited for to its end; returns the session id.
    pub(super) async fn run_action(&mut self, language: Language, code: &str) -> BenchResult<String> {
        let file = json!({ "filename": language.main_file(), "content": code });
        let mut request = json!({ "action": "run" });
        request[language.name()] = json!({ "files": [file] });
        let reply = self.request(request).await?;
        let id = reply["sessionId"].as_str().ok_or_else(|| format!("the server refused: {reply}"))?.to_string();
        loop {
            let pushed = self.recv().await?;
            if pushed["action"] == "finished" && pushed["sessionId"] == id.as_str() {
                if pushed["exitCode"] != 0 {
                    return Err(format!("the run failed: {pushed}").into());
                }
                return Ok(id);
            }
        }
    }

    pub(super) async fn kill(&mut self, runid: &str) -> BenchResult<()> {
        self.send(json!({ "op": 2, "args": { "runid": runid } })).await
    }

    /// Waits until every run in `runids` has sent its STOP, in any order.
    pub(super) async fn wait_stops(&mut self, runids: &[String]) -> BenchResult<()> {
        let mut waiting: std::collections::HashSet<&str> = runids.iter().map(String::as_str).collect();
        while !waiting.is_empty() {
            let event = self.recv().await?;
            if event["code"] == 4 {
                waiting.remove(event["data"]["runid"].as_str().unwrap_or(""));
            }
        }
        Ok(())
    }
}

/// A game client on the processor face (`/processor`), answering its
/// script's engine commands.
pub(super) struct ProcessorClient {
    ws: WsClient,
}

impl ProcessorClient {
    /// A socket past its first `ready`.
    pub(super) async fn connect(address: SocketAddr) -> BenchResult<Self> {
        let mut ws = WsClient::connect(address, "/processor").await?;
        let ready = ws.recv().await?;
        if ready["type"] != "ready" {
            return Err(format!("the processor socket opened with {ready}").into());
        }
        Ok(ProcessorClient { ws })
    }

    /// Runs a script (its context first), answering each of its engine
    /// commands at once with `null`; returns when each command arrived. The
    /// socket is ready for the next script after.
    pub(super) async fn run_answering(
        &mut self,
        language: Language,
        code: &str,
    ) -> BenchResult<Vec<std::time::Instant>> {
        let context = json!({ "type": "context", "language": language.name(), "context": {} });
        let ready = self.ws.request(context).await?;
        if ready["type"] != "ready" {
            return Err(format!("the processor socket answered the context with {ready}").into());
        }
        self.ws.socket.send(Message::text(code)).await?;
        let mut arrivals = Vec::new();
        loop {
            let message = self.ws.recv().await?;
            match message["type"].as_str() {
                Some("command") => {
                    arrivals.push(std::time::Instant::now());
                    let id = &message["id"];
                    self.ws.send(json!({ "type": "command_result", "id": id, "ok": true, "result": null })).await?;
                }
                Some("end") if message["exitCode"] == 0 => break,
                Some("end" | "error") => return Err(format!("the script failed: {message}").into()),
                _ => {}
            }
        }
        let ready = self.ws.recv().await?;
        if ready["type"] != "ready" {
            return Err(format!("after the script's end came {ready}, not ready").into());
        }
        Ok(arrivals)
    }
}

pub(super) struct RestClient {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl RestClient {
    pub(super) async fn connect(address: SocketAddr) -> BenchResult<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(RestClient { sender, host: address.to_string() })
    }

    /// `POST /v1/exec`; returns stdout.
    pub(super) async fn exec(&mut self, language: Language, code: &str) -> BenchResult<String> {
        let body = json!({ "language": language.name(), "code": code });
        let reply = self.call(hyper::Method::POST, "/v1/exec", body).await?;
        Ok(reply["stdout"].as_str().unwrap_or("").to_string())
    }

    /// A JSON request; its JSON reply, or an error unless 2xx.
    pub(super) async fn call(&mut self, method: hyper::Method, path: &str, body: Value) -> BenchResult<Value> {
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let reply: Value = serde_json::from_slice(&bytes)?;
        if !status.is_success() {
            return Err(format!("{method} {path} answered {status}: {reply}").into());
        }
        Ok(reply)
    }
}

/// A direct-IO socket (`target: "cluster"`), as Hanami's SDK opens it.
pub(super) struct DirectIoClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl DirectIoClient {
    pub(super) async fn connect(address: SocketAddr, session: &str) -> BenchResult<Self> {
        let mut ws = WsClient::connect(address, "/").await?;
        let hello = ws.request(json!({ "target": "cluster", "uuid": session })).await?;
        if hello["success"] != true {
            return Err(format!("the direct-IO socket was refused: {hello}").into());
        }
        Ok(DirectIoClient { socket: ws.socket })
    }

    /// Sends one REQUEST frame (the brick's only and last), without waiting.
    pub(super) async fn send_request(&mut self, brick: &str, values: &[f32]) -> BenchResult<()> {
        let frame = ClusterIoMessage {
            brick_name: brick.into(),
            is_last: true,
            process_type: ClusterProcessType::RequestType as i32,
            number_of_values: values.len() as u64,
            values: values.to_vec(),
        };
        self.socket.send(Message::binary(frame.encode_to_vec())).await?;
        Ok(())
    }

    /// The next reply's values; an error for an error reply.
    pub(super) async fn recv_values(&mut self) -> BenchResult<Vec<f32>> {
        loop {
            let next = tokio::time::timeout(REPLY_TIMEOUT, self.socket.next())
                .await
                .map_err(|_| format!("the server sent nothing for {REPLY_TIMEOUT:?}"))?;
            match next.ok_or("the server closed the socket")?? {
                Message::Binary(bytes) => {
                    let reply = ClusterIoMessage::decode(bytes)?;
                    if reply.brick_name.starts_with("error: ") {
                        return Err(reply.brick_name.into());
                    }
                    return Ok(reply.values);
                }
                Message::Close(_) => return Err("the server closed the socket".into()),
                _ => continue,
            }
        }
    }
}
