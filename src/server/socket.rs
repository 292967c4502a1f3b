//! The plumbing every WebSocket face shares: one writer task per socket fed
//! by a bounded queue (so a client that stops reading slows its own runs,
//! never the server's memory), the size checks on incoming messages, and the
//! connection's part in a graceful shutdown.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::App;

const OUTBOX_CAPACITY: usize = 512;

/// The sending half of a socket; cheap to clone, usable from any task.
#[derive(Clone)]
pub(crate) struct Outbox {
    queue: mpsc::Sender<Message>,
}

impl Outbox {
    /// Queues a JSON message; returns false once the socket is gone.
    pub(crate) async fn json(&self, value: Value) -> bool {
        self.queue.send(Message::text(value.to_string())).await.is_ok()
    }

    async fn close(&self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason.to_string()) };
        let _ = self.queue.send(Message::Close(Some(frame))).await;
    }
}

/// What a face reads from its socket.
pub(crate) enum Incoming {
    Text(String),
    /// A message the face cannot take, already discarded.
    Refused(Unreadable),
}

/// Why an incoming message was discarded.
pub(crate) enum Unreadable {
    /// A binary frame (no face takes one yet).
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

/// One accepted WebSocket: the reading half, the outbox and the writer task.
pub(crate) struct Connection {
    pub(crate) outbox: Outbox,
    reader: SplitStream<WebSocket>,
    writer: JoinHandle<()>,
    app: App,
}

impl Connection {
    pub(crate) fn new(socket: WebSocket, app: App) -> Self {
        let (mut sink, reader) = socket.split();
        let (queue, mut pending) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
        let writer = tokio::spawn(async move {
            while let Some(message) = pending.recv().await {
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        Connection { outbox: Outbox { queue }, reader, writer, app }
    }

    /// The next message from the client; `None` when the client left or the
    /// server is stopping.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        let limit = self.app.config.max_message_bytes;
        let mut closing = self.app.closing.clone();
        loop {
            if *closing.borrow() {
                return None;
            }
            let message = tokio::select! {
                message = self.reader.next() => message,
                _ = closing.changed() => return None,
            };
            match message? {
                Ok(Message::Text(text)) if text.len() > limit => {
                    return Some(Incoming::Refused(Unreadable::TooLarge { size: text.len(), limit }));
                }
                Ok(Message::Binary(bytes)) if bytes.len() > limit => {
                    return Some(Incoming::Refused(Unreadable::TooLarge { size: bytes.len(), limit }));
                }
                Ok(Message::Text(text)) => return Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => return Some(Incoming::Refused(Unreadable::Binary)),
                Ok(Message::Close(_)) => return None,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    return None;
                }
            }
        }
    }

    /// Sends what is queued, then a close frame, and waits for the writer.
    pub(crate) async fn close(self) {
        let reason = if *self.app.closing.borrow() { "the server is shutting down" } else { "bye" };
        let code = if *self.app.closing.borrow() { close_code::AWAY } else { close_code::NORMAL };
        self.outbox.close(code, reason).await;
        drop(self.outbox);
        let _ = self.writer.await;
    }
}
