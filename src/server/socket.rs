//! The plumbing every WebSocket face shares: one writer task per socket fed
//! by a bounded queue (so a client that stops reading slows its own runs,
//! never the server's memory), the size checks on incoming messages, the
//! first-message token check with its small budget, the first-message
//! deadline (with or without tokens), the idle time-out, the close of a
//! socket the listener evicts to make room (`listener::Activity`), and the
//! connection's part in a graceful shutdown.

use std::future::Future;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{App, Peer, parse_lenient};
use crate::metrics::{ConnectionGauge, Face, Refusal};
use crate::registry::Client;

/// Messages queued for a client at most; a writer past it waits.
const OUTBOX_CAPACITY: usize = 64;
/// How much a socket reads at once (and holds while idle). tungstenite
/// zeroes this much of its buffer before every read: at its default of
/// 128 KiB that was 4% of the server's CPU time in one-at-a-time direct IO,
/// more than decoding the frames. A larger frame still arrives whole: the
/// buffer grows to hold it.
pub(crate) const READ_BUFFER_BYTES: usize = 16 << 10;
/// The largest first message of a socket that must still show its token.
pub(crate) const FIRST_MESSAGE_BYTES: usize = 64 << 10;
/// What a client may send before its token is accepted: one first message
/// and the WebSocket framing around it (pings included).
const UNAUTHENTICATED_READ_BYTES: u64 = FIRST_MESSAGE_BYTES as u64 + 4096;

/// The sending half of a socket; cheap to clone, usable from any task.
#[derive(Clone)]
pub(crate) struct Outbox {
    queue: mpsc::Sender<Message>,
}

impl Outbox {
    /// Queues a JSON message; returns false once the socket is gone.
    pub(crate) async fn json(&self, value: Value) -> bool {
        self.text(value.to_string()).await
    }

    /// Queues a binary message.
    pub(crate) async fn binary(&self, bytes: Vec<u8>) -> bool {
        self.queue.send(Message::binary(bytes)).await.is_ok()
    }

    /// Queues a message already written as JSON text.
    pub(crate) async fn text(&self, text: String) -> bool {
        self.queue.send(Message::text(text)).await.is_ok()
    }

    async fn close(&self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) };
        let _ = self.queue.send(Message::Close(Some(frame))).await;
    }
}

/// What a face reads from its socket.
pub(crate) enum Incoming {
    Text(String),
    /// A binary frame, on a socket that takes them (`Connection::accept_binary`).
    Binary(Bytes),
    /// A message the face cannot take, already discarded.
    Refused(Unreadable),
}

/// Why an incoming message was discarded.
pub(crate) enum Unreadable {
    /// A binary frame, on a socket that takes only text.
    Binary,
    /// A message over the size limit.
    TooLarge { size: usize, limit: usize },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Binary => f.write_str("binary frames are not understood here; send text (JSON)"),
            Unreadable::TooLarge { size, limit } => write!(f, "message of {size} bytes is over the limit of {limit}"),
        }
    }
}

/// Upgrades a request to a WebSocket of the face `connection`, with the
/// server's hard size cap and `refusal` as the face's reply to a refused token.
pub(crate) fn accept<Handler, Served>(
    app: App,
    peer: Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
    (face, refusal): (Face, fn(&str) -> Value),
    connection: Handler,
) -> Response
where
    Handler: FnOnce(App, Connection) -> Served + Send + 'static,
    Served: Future<Output = ()> + Send + 'static,
{
    let hard = app.config.hard_message_limit();
    upgrade.max_message_size(hard).max_frame_size(hard).read_buffer_size(READ_BUFFER_BYTES).on_upgrade(move |socket| {
        let mut socket = Connection::new(socket, app.clone(), &headers, &peer, refusal);
        socket.set_face(face);
        connection(app, socket)
    })
}

/// One accepted WebSocket: the reading half, the outbox and the writer task.
pub(crate) struct Connection {
    pub(crate) outbox: Outbox,
    reader: SplitStream<WebSocket>,
    writer: JoinHandle<()>,
    app: App,
    /// Whether the client has shown a token (or none is needed).
    admitted: bool,
    /// The face's error reply, for a refused token.
    refusal: fn(&str) -> Value,
    binary: bool,
    /// Set when the client broke the connection's rules (a message past the
    /// hard size cap) or idled out: the close frame to send instead of a normal one.
    broken: Option<(u16, &'static str)>,
    /// Whether the face has work going for this client (then it is not idle).
    busy: bool,
    /// Whether the client has sent a message yet.
    heard: bool,
    /// When a socket whose client has sent no message is closed (refused,
    /// if it must show a token), counted from its start: pings do not push
    /// it back.
    admit_by: tokio::time::Instant,
    peer: Peer,
    /// Who the client is, once admitted.
    client: Client,
    /// Counts the socket in `sandlot_connections{face}` while it is open.
    counted: Option<ConnectionGauge>,
    /// Low latency's polling for the next message.
    poller: std::sync::Arc<crate::latency::Poller>,
}

impl Connection {
    /// `headers` are the upgrade request's: an accepted bearer token there
    /// admits the socket; otherwise (when tokens are configured) its first
    /// message must carry one, or the client gets `refusal(why)` and the
    /// socket closes (1008).
    pub(crate) fn new(
        socket: WebSocket,
        app: App,
        headers: &HeaderMap,
        peer: &Peer,
        refusal: fn(&str) -> Value,
    ) -> Self {
        let (mut sink, reader) = socket.split();
        let (queue, mut pending) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
        let writer = tokio::spawn(async move {
            // Whatever is queued when the writer wakes goes out in one flush
            // (one write to the socket, not one per message): a pipelining
            // client's replies, a burst of output events.
            'writing: while let Some(first) = pending.recv().await {
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    let closing = matches!(message, Message::Close(_));
                    if sink.feed(message).await.is_err() {
                        break 'writing;
                    }
                    if closing {
                        let _ = sink.flush().await;
                        break 'writing;
                    }
                    next = pending.try_recv().ok();
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let token = app.tokens.accepts_header(headers);
        let admitted = !app.tokens.required() || token.is_some();
        let client = app.tokens.client(token, peer);
        if !admitted {
            peer.budget.limit(UNAUTHENTICATED_READ_BYTES);
        }
        let admit_by = tokio::time::Instant::now() + app.config.first_message_timeout;
        Connection {
            outbox: Outbox { queue },
            reader,
            writer,
            app,
            admitted,
            refusal,
            binary: false,
            broken: None,
            busy: false,
            heard: false,
            admit_by,
            peer: peer.clone(),
            client,
            counted: None,
            poller: Default::default(),
        }
    }

    /// Who the client is (for fair shares and rate limits).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Tells whether the face has work going for this client: a busy socket
    /// is never closed as idle.
    pub(crate) fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
        self.peer.activity.set_socket_busy(busy);
    }

    /// From now on binary frames come through as `Incoming::Binary`.
    pub(crate) fn accept_binary(&mut self) {
        self.binary = true;
    }

    /// Checks the token of the first message; false (after telling the
    /// client and closing) when it is missing or wrong.
    async fn admit(&mut self, first: Option<&str>) -> bool {
        let checked = match first {
            Some(text) if text.len() > FIRST_MESSAGE_BYTES => {
                Err("the first message of a socket may be 64 KiB at most; send the token first, alone")
            }
            Some(text) => match parse_lenient(text) {
                Ok(message) => self.app.tokens.check_message(&message),
                Err(_) => Err("this server needs a JSON first message with a \"token\""),
            },
            None => Err("this server needs a JSON first message with a \"token\""),
        };
        match checked {
            Ok(digest) => {
                self.admitted = true;
                self.client = self.app.tokens.client(Some(digest), &self.peer);
                self.peer.budget.lift();
                true
            }
            Err(why) => {
                self.refuse(why).await;
                false
            }
        }
    }

    /// Counts the socket as one of `face` (a socket of the actions face
    /// becomes an upload or a direct-IO socket by its first message).
    pub(crate) fn set_face(&mut self, face: Face) {
        self.counted = Some(self.app.registry.metrics().connection(face));
    }

    async fn refuse(&mut self, why: &'static str) {
        self.app.registry.metrics().refused(Refusal::Token);
        tracing::warn!("refused a socket: {why}");
        self.outbox.json((self.refusal)(why)).await;
        self.outbox.close(close_code::POLICY, why).await;
    }

    /// The next message from the client; `None` when the client left or the
    /// server is stopping. While low latency is held, the socket is polled
    /// for a moment before it is waited for (see `latency::SOCKET_POLL`).
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        if !crate::latency::held() {
            return self.wait().await;
        }
        let poller = self.poller.clone();
        poller.wait(self.wait()).await
    }

    async fn wait(&mut self) -> Option<Incoming> {
        let limit = self.app.config.max_message_bytes;
        let mut closing = self.app.closing.clone();
        loop {
            if *closing.borrow() {
                return None;
            }
            let idle_by = tokio::time::Instant::now() + self.app.config.idle_timeout;
            let deadline = match (self.heard, self.busy) {
                (false, _) => Some(self.admit_by.min(idle_by)),
                (true, false) => Some(idle_by),
                (true, true) => None,
            };
            let timer = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let activity = self.peer.activity.clone();
            let message = tokio::select! {
                message = self.reader.next() => message,
                _ = closing.changed() => return None,
                () = activity.evicted() => {
                    tracing::debug!("closing an idle socket to make room for another connection");
                    self.broken = Some((close_code::AGAIN, "closed to make room: the server is full; reconnect when \
                                                           you have something to send"));
                    return None;
                }
                _ = timer => {
                    if !self.admitted {
                        self.refuse("no first message with a token came in time").await;
                    } else if !self.heard {
                        tracing::debug!("closing a socket that sent no first message");
                        self.broken = Some((close_code::POLICY, "closed: no first message came in time"));
                    } else {
                        tracing::debug!("closing an idle socket");
                        self.broken = Some((close_code::NORMAL, "closed: no message for too long"));
                    }
                    return None;
                }
            };
            if matches!(message, Some(Ok(Message::Text(_) | Message::Binary(_)))) {
                self.heard = true;
                activity.heard();
            }
            match message? {
                Ok(Message::Text(text)) if text.len() > limit => {
                    self.app.registry.metrics().refused(Refusal::TooLarge);
                    return Some(Incoming::Refused(Unreadable::TooLarge { size: text.len(), limit }));
                }
                Ok(Message::Binary(bytes)) if bytes.len() > limit => {
                    self.app.registry.metrics().refused(Refusal::TooLarge);
                    return Some(Incoming::Refused(Unreadable::TooLarge { size: bytes.len(), limit }));
                }
                Ok(Message::Text(text)) if !self.admitted => {
                    return if self.admit(Some(text.as_str())).await {
                        Some(Incoming::Text(text.to_string()))
                    } else {
                        None
                    };
                }
                Ok(Message::Binary(_)) if !self.admitted => {
                    self.admit(None).await;
                    return None;
                }
                Ok(Message::Text(text)) => return Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(bytes)) if self.binary => return Some(Incoming::Binary(bytes)),
                Ok(Message::Binary(_)) => return Some(Incoming::Refused(Unreadable::Binary)),
                Ok(Message::Close(_)) => return None,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(e) => {
                    let error = e.into_inner();
                    if let Some(tokio_tungstenite::tungstenite::Error::Capacity(why)) = error.downcast_ref() {
                        self.app.registry.metrics().refused(Refusal::TooLarge);
                        tracing::warn!(%why, "closing a socket whose message is past the hard size limit");
                        self.broken = Some((close_code::SIZE, "message too large"));
                    } else {
                        tracing::debug!(%error, "websocket read failed");
                    }
                    return None;
                }
            }
        }
    }

    /// Sends what is queued, then a close frame, and waits for the writer.
    pub(crate) async fn close(self) {
        let (code, reason) = match self.broken {
            Some(broken) => broken,
            None if *self.app.closing.borrow() => (close_code::AWAY, "the server is shutting down"),
            None => (close_code::NORMAL, "bye"),
        };
        self.outbox.close(code, reason).await;
        drop(self.outbox);
        let _ = self.writer.await;
    }
}
