//! Hanami's direct IO (seed 003, "Direct interaction with Cluster"), as its
//! Python SDK speaks it. A "cluster" here is a live session whose run saved
//! a model; its uuid is the session id.
//!
//! `PUT /control/v1/cluster/set_mode {"uuid","new_state":"DIRECT"|"TASK"}`
//! switches a session; then a socket on `GET /` whose first message is
//! `{"token","uuid","target":"cluster"}` takes binary `ClusterIO_Message`
//! frames (`proto.rs`). Values accumulate per `brickName` until a frame with
//! `isLast`; then REQUEST asks the model named `brickName` (or the session's
//! only model) to predict them and answers with the prediction flattened to
//! floats, and TRAIN calls the model's training method. Every frame gets
//! exactly one binary `ClusterIO_Message` back: an empty one for a frame that
//! is not the last, or after training; an error is a message whose
//! `brickName` starts with "error: " (the SDK reads only `values`, so it sees
//! none).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use prost::Message as _;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, de::DeserializeSeed};
use serde_json::json;
use serde_json::value::RawValue;

use super::openapi::ErrorBody;
use super::proto::{ClusterIoMessage, ClusterProcessType};
use super::socket::{Connection, Incoming};
use super::{App, Fields, IdText, field, parse_typed_off_thread, public_message};
use crate::error::Error;
use crate::metrics::Face;
use crate::registry::Client;
use crate::sync::lock;

/// Bricks with values waiting for their last frame, per socket.
const MAX_BRICKS: usize = 64;
/// Values of one brick, its last frame's included.
const MAX_WAITING_VALUES: usize = 1 << 22;
/// Memory the values waiting for their last frame may hold: per socket, per
/// client (all its sockets) and in the whole server. Counted as allocated:
/// each frame's values as the capacity of their `Vec`, plus `FRAME_OVERHEAD`
/// per frame and `BRICK_OVERHEAD` per brick, so many tiny frames cost what
/// they hold.
pub(crate) const SOCKET_WAITING_BYTES: usize = 16 << 20;
pub(crate) const CLIENT_WAITING_BYTES: usize = 64 << 20;
pub(crate) const SERVER_WAITING_BYTES: usize = 256 << 20;
/// A waiting frame's `Vec` header (in a list that may be twice as long as
/// it needs) and its allocation's header and rounding.
const FRAME_OVERHEAD: usize = 64;
/// A waiting brick's map entry, name and list of frames.
const BRICK_OVERHEAD: usize = 128;
/// Frames already received that are answered together: at most this many,
/// and no more read once they hold this many bytes. A batch only takes
/// frames whose bytes have already arrived (so the socket's buffers bound it
/// too), but a frame may be 8 MiB and this bound does not depend on them.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 1 << 20;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct SetMode {
    /// The session's id.
    #[schema(value_type = String)]
    uuid: Option<IdText>,
    /// "DIRECT" or "TASK".
    new_state: Option<String>,
}

/// `PUT /control/v1/cluster/set_mode`: a live session's mode, DIRECT (it
/// takes direct-IO sockets) or TASK.
#[utoipa::path(
    put,
    path = "/v1/cluster/set_mode",
    tag = "datasets",
    request_body(content = SetMode, content_type = "application/json"),
    responses(
        (status = 200, description = "{uuid, new_state}", body = Object),
        (status = 400, description = "a malformed request", body = ErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such session", body = ErrorBody),
        (status = 409, description = "the session cannot take it (ended, not live)", body = ErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn set_mode(State(app): State<App>, Extension(client): Extension<Client>, body: Bytes) -> Response {
    let refused = |status: StatusCode, error: String| {
        let body = json!({ "code": status.as_u16(), "error": error, "context": "cluster/set_mode" });
        (status, Json(body)).into_response()
    };
    let Ok(text) = String::from_utf8(body.into()) else {
        return refused(StatusCode::BAD_REQUEST, "the body must be UTF-8 JSON".into());
    };
    let request: SetMode = match parse_typed_off_thread(text).await {
        Ok(request) => request,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("the body {e}")),
    };
    let Some(IdText(uuid)) = request.uuid else {
        return refused(StatusCode::BAD_REQUEST, "the body needs \"uuid\": the session's id".into());
    };
    let direct = match request.new_state.as_deref() {
        Some("DIRECT") => true,
        Some("TASK") => false,
        _ => return refused(StatusCode::BAD_REQUEST, "\"new_state\" is \"DIRECT\" or \"TASK\"".into()),
    };
    match app.registry.set_direct(&client, &uuid, direct) {
        Ok(()) => Json(json!({ "uuid": uuid, "new_state": request.new_state })).into_response(),
        Err(e @ Error::UnknownSession(_)) => refused(StatusCode::NOT_FOUND, public_message(&e)),
        Err(e) => refused(StatusCode::CONFLICT, public_message(&e)),
    }
}

/// One direct-IO socket, from its accepted first message to its close.
pub(crate) async fn connection(app: App, mut connection: Connection, first: Fields) {
    connection.set_face(Face::DirectIo);
    let outbox = connection.outbox.clone();
    let uuid = field::<IdText>(&first, "uuid", "uuid").ok().flatten().map(|id| id.0);
    let client = connection.client().clone();
    let Some(uuid) = uuid.filter(|id| app.registry.is_direct(&client, id)) else {
        let error = "no live session in DIRECT mode has this \"uuid\": run a program that saves a model, then \
                     PUT /control/v1/cluster/set_mode {\"uuid\": <session id>, \"new_state\": \"DIRECT\"}";
        outbox.json(json!({ "success": false, "error": error, "code": "not_found" })).await;
        connection.close().await;
        return;
    };
    outbox.json(json!({ "success": true, "uuid": uuid })).await;
    connection.accept_binary();
    let mut waiting = Waiting::new(app.waiting_values.clone(), client.clone());
    loop {
        // The frames a pipelining client has already sent are answered
        // together: their predictions take one trip to the guest threads.
        let Some(incoming) = connection.next().await else { break };
        let size = |incoming: &Incoming| match incoming {
            Incoming::Binary(frame) => frame.len(),
            Incoming::Text(text) => text.len(),
            Incoming::Refused(_) => 0,
        };
        let mut held = size(&incoming);
        let mut frames = vec![incoming];
        let mut left = false;
        while frames.len() < MAX_BATCH && held < MAX_BATCH_BYTES {
            match connection.next().now_or_never() {
                Some(Some(incoming)) => {
                    held += size(&incoming);
                    frames.push(incoming);
                }
                Some(None) => {
                    left = true;
                    break;
                }
                None => break,
            }
        }
        connection.set_busy(true);
        let replies = Batch::new(&app, &client, &uuid, frames.len()).answer(&mut waiting, frames).await;
        connection.set_busy(false);
        for reply in replies {
            if !outbox.binary(reply.encode_to_vec()).await {
                left = true;
                break;
            }
        }
        if left {
            break;
        }
    }
    connection.close().await;
}

/// The memory direct-IO sockets' waiting values hold, per client and in
/// all; shared by the server's sockets.
pub(crate) struct WaitingMemory {
    per_client: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    clients: HashMap<Client, usize>,
}

impl WaitingMemory {
    pub(crate) fn new(per_client: usize, total: usize) -> Arc<Self> {
        Arc::new(WaitingMemory { per_client, total, held: Mutex::default() })
    }

    /// Takes `bytes` more for `client`, or says which budget it would pass.
    fn take(&self, client: &Client, bytes: usize) -> Result<(), String> {
        let mut held = lock(&self.held);
        let mine = held.clients.get(client).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.per_client {
            return Err(format!(
                "your sockets' values waiting for their last frame hold {} KiB, and a client may hold {} KiB; \
                 send the last frame (isLast) of the bricks you started before starting more",
                mine >> 10,
                self.per_client >> 10
            ));
        }
        if held.total.saturating_add(bytes) > self.total {
            return Err(format!(
                "the server holds {} KiB of values waiting for their last frame, at most {} KiB from all clients; \
                 try again shortly, or send smaller bricks",
                held.total >> 10,
                self.total >> 10
            ));
        }
        held.total += bytes;
        *held.clients.entry(client.clone()).or_default() += bytes;
        Ok(())
    }

    fn give_back(&self, client: &Client, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut held = lock(&self.held);
        held.total -= bytes;
        if let Some(mine) = held.clients.get_mut(client) {
            *mine -= bytes;
            if *mine == 0 {
                held.clients.remove(client);
            }
        }
    }

    /// Bytes held now, by every socket.
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.held).total
    }
}

/// Values of bricks whose last frame has not come yet, one socket's: each
/// frame's values kept as they came (no copy, no growing list that holds
/// twice what it needs), joined at the last frame.
struct Waiting {
    bricks: HashMap<String, Brick>,
    /// Bytes this socket holds (counted in `memory` too).
    bytes: usize,
    memory: Arc<WaitingMemory>,
    client: Client,
}

#[derive(Default)]
struct Brick {
    frames: Vec<Vec<f32>>,
    values: usize,
    bytes: usize,
}

impl Waiting {
    fn new(memory: Arc<WaitingMemory>, client: Client) -> Self {
        Waiting { bricks: HashMap::new(), bytes: 0, memory, client }
    }

    fn add(&mut self, name: &str, mut values: Vec<f32>) -> Result<(), String> {
        let new = !self.bricks.contains_key(name);
        if new && self.bricks.len() >= MAX_BRICKS {
            return Err(format!("at most {MAX_BRICKS} bricks may wait for their last frame at once"));
        }
        let had = self.bricks.get(name).map_or(0, |b| b.values);
        if had.saturating_add(values.len()) > MAX_WAITING_VALUES {
            self.drop_brick(name);
            return Err(format!("a brick has at most {MAX_WAITING_VALUES} values; this brick's were dropped"));
        }
        values.shrink_to_fit();
        let cost =
            values.capacity() * size_of::<f32>() + FRAME_OVERHEAD + if new { BRICK_OVERHEAD + name.len() } else { 0 };
        let taken = match self.bytes.saturating_add(cost) > SOCKET_WAITING_BYTES {
            true => Err(format!(
                "this socket's values waiting for their last frame would hold {} KiB, at most {} KiB; \
                 send the last frame (isLast) of a brick before more values",
                self.bytes.saturating_add(cost) >> 10,
                SOCKET_WAITING_BYTES >> 10
            )),
            false => self.memory.take(&self.client, cost),
        };
        if let Err(why) = taken {
            self.drop_brick(name);
            return Err(format!("{why}; this brick's values were dropped"));
        }
        self.bytes += cost;
        let brick = self.bricks.entry(name.to_string()).or_default();
        brick.values += values.len();
        brick.bytes += cost;
        brick.frames.push(values);
        Ok(())
    }

    /// A brick's values with its last frame's: it no longer waits.
    fn finish(&mut self, name: &str, last: Vec<f32>) -> Result<Vec<f32>, String> {
        let Some(brick) = self.take_brick(name) else { return Ok(last) };
        if brick.values + last.len() > MAX_WAITING_VALUES {
            return Err(format!("a brick has at most {MAX_WAITING_VALUES} values; this one's were dropped"));
        }
        let mut values = Vec::with_capacity(brick.values + last.len());
        for frame in brick.frames {
            values.extend(frame);
        }
        values.extend(last);
        Ok(values)
    }

    fn take_brick(&mut self, name: &str) -> Option<Brick> {
        let brick = self.bricks.remove(name)?;
        self.bytes -= brick.bytes;
        self.memory.give_back(&self.client, brick.bytes);
        Some(brick)
    }

    fn drop_brick(&mut self, name: &str) {
        self.take_brick(name);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.memory.give_back(&self.client, self.bytes);
    }
}

/// What a frame asks for, once its values are complete.
enum Step {
    /// Answered as it is (a frame that is not the last, or an error).
    Reply(ClusterIoMessage),
    Predict {
        brick: String,
        model: String,
        input: Box<RawValue>,
    },
    Train {
        model: String,
        input: Box<RawValue>,
    },
}

/// The replies to a batch of frames, in order. Consecutive predictions of
/// one model go to the guest together; a training call waits for the
/// predictions before it and goes before those after it.
struct Batch<'a> {
    app: &'a App,
    client: &'a Client,
    uuid: &'a str,
    replies: Vec<Option<ClusterIoMessage>>,
    /// The predictions not made yet: reply index, brick, input, all of `model`.
    model: String,
    predictions: Vec<(usize, String, Box<RawValue>)>,
}

impl<'a> Batch<'a> {
    fn new(app: &'a App, client: &'a Client, uuid: &'a str, frames: usize) -> Self {
        Batch { app, client, uuid, replies: vec![None; frames], model: String::new(), predictions: Vec::new() }
    }

    async fn answer(mut self, waiting: &mut Waiting, frames: Vec<Incoming>) -> Vec<ClusterIoMessage> {
        // Frames that arrived together are answered in the session's mode
        // and with its models as they were when the batch began.
        let mut session = Bricks { direct: self.app.registry.is_direct(self.client, self.uuid), models: None };
        for (at, incoming) in frames.into_iter().enumerate() {
            let step = match incoming {
                Incoming::Binary(frame) => match ClusterIoMessage::decode(frame) {
                    Ok(message) => step(self.app, self.client, self.uuid, &mut session, waiting, message).await,
                    Err(_) => Err("a frame is one ClusterIO_Message".to_string()),
                },
                Incoming::Text(_) => Err("this socket takes binary ClusterIO_Message frames".to_string()),
                Incoming::Refused(why) => Err(why.to_string()),
            };
            match step {
                Err(error) => self.replies[at] = Some(error_reply(error)),
                Ok(Step::Reply(reply)) => self.replies[at] = Some(reply),
                Ok(Step::Predict { brick, model, input }) => {
                    if model != self.model {
                        self.predict().await;
                        self.model = model;
                    }
                    self.predictions.push((at, brick, input));
                }
                Ok(Step::Train { model, input }) => {
                    self.predict().await;
                    let trained = self.app.registry.train(self.client, self.uuid, &model, input).await;
                    self.replies[at] = Some(match trained {
                        Ok(Ok(())) => ClusterIoMessage::default(),
                        Ok(Err(error)) => error_reply(error),
                        Err(error) => error_reply(public_message(&error)),
                    });
                }
            }
        }
        self.predict().await;
        self.replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| error_reply("the frame was not answered".into())))
            .collect()
    }

    /// Makes the predictions waiting, and fills in their replies.
    async fn predict(&mut self) {
        if self.predictions.is_empty() {
            return;
        }
        let (places, inputs): (Vec<(usize, String)>, Vec<Box<RawValue>>) =
            std::mem::take(&mut self.predictions).into_iter().map(|(at, brick, input)| ((at, brick), input)).unzip();
        match self.app.registry.predict_many(self.client, self.uuid, &self.model, inputs).await {
            Ok(answers) => {
                for ((at, brick), answer) in places.into_iter().zip(answers) {
                    self.replies[at] = Some(match answer {
                        Ok(Ok(prediction)) => match floats(&prediction) {
                            Ok(values) => ClusterIoMessage {
                                brick_name: brick,
                                is_last: true,
                                process_type: ClusterProcessType::RequestType as i32,
                                number_of_values: values.len() as u64,
                                values,
                            },
                            Err(error) => error_reply(error),
                        },
                        Ok(Err(error)) => error_reply(error),
                        Err(error) => error_reply(public_message(&error)),
                    });
                }
            }
            Err(error) => {
                let error = public_message(&error);
                for (at, _) in places {
                    self.replies[at] = Some(error_reply(error.clone()));
                }
            }
        }
    }
}

/// An error, as a reply the SDK can read: no values, the reason in `brickName`.
fn error_reply(error: String) -> ClusterIoMessage {
    ClusterIoMessage { brick_name: format!("error: {error}"), is_last: true, ..ClusterIoMessage::default() }
}

/// What a batch knows of its session: whether it takes direct IO, and its
/// models' names once a frame needed them.
struct Bricks {
    direct: bool,
    models: Option<Vec<String>>,
}

/// What one frame asks for.
async fn step(
    app: &App,
    client: &Client,
    uuid: &str,
    session: &mut Bricks,
    waiting: &mut Waiting,
    message: ClusterIoMessage,
) -> Result<Step, String> {
    if !session.direct {
        return Err("the session is no longer in DIRECT mode (set_mode TASK, or it expired)".into());
    }
    if message.number_of_values != message.values.len() as u64 {
        return Err(format!(
            "numberOfValues is {} but the frame carries {} values",
            message.number_of_values,
            message.values.len()
        ));
    }
    let brick = message.brick_name;
    if !message.is_last {
        waiting.add(&brick, message.values)?;
        return Ok(Step::Reply(ClusterIoMessage::default()));
    }
    let values = waiting.finish(&brick, message.values)?;
    let kind = ClusterProcessType::try_from(message.process_type).map_err(|_| "an unknown processType".to_string())?;
    let models = match &mut session.models {
        Some(models) => models,
        None => session.models.insert(app.registry.models(client, uuid).await.map_err(|e| public_message(&e))?),
    };
    let model = model_for(models, &brick)?;
    let input = numbers_json(&values)?;
    Ok(match kind {
        ClusterProcessType::RequestType => Step::Predict { brick, model, input },
        ClusterProcessType::TrainType => Step::Train { model, input },
    })
}

/// The model a brick names, or the session's only model.
fn model_for(models: &[String], brick: &str) -> Result<String, String> {
    if models.iter().any(|m| m == brick) {
        return Ok(brick.to_string());
    }
    match models {
        [only] => Ok(only.clone()),
        [] => Err("the session saved no model".into()),
        _ => Err(format!("no model named {brick:?}; the session's models: {}", models.join(", "))),
    }
}

/// The values as a JSON list of numbers.
fn numbers_json(values: &[f32]) -> Result<Box<RawValue>, String> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err("values must be finite numbers".into());
    }
    let text = serde_json::to_string(&values.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>())
        .map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

/// A prediction flattened to floats: a number, or lists of them, nested.
/// Read in one pass over the answer's text (serde_json bounds the nesting).
pub(crate) fn floats(answer: &RawValue) -> Result<Vec<f32>, String> {
    let mut out = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(answer.get());
    Flatten(&mut out)
        .deserialize(&mut deserializer)
        .map_err(|e| format!("the model's answer is not numbers or lists of numbers ({e})"))?;
    Ok(out)
}

struct Flatten<'o>(&'o mut Vec<f32>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a list of numbers")
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(v as f32);
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(if v { 1.0 } else { 0.0 });
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap()
    }

    #[test]
    fn predictions_flatten_to_floats() {
        assert_eq!(floats(&raw("[[1, 2.5], [true, 3]]")).unwrap(), [1.0, 2.5, 1.0, 3.0]);
        assert_eq!(floats(&raw("7")).unwrap(), [7.0]);
        assert!(floats(&raw(r#"{"a": 1}"#)).is_err());
        assert!(floats(&raw(r#"["x"]"#)).is_err());
    }

    #[test]
    fn waiting_values_are_bounded() {
        let memory = WaitingMemory::new(usize::MAX, usize::MAX);
        let mut waiting = Waiting::new(memory.clone(), Client::Local);
        waiting.add("a", vec![1.0; 10]).unwrap();
        assert!(waiting.add("a", vec![0.0; MAX_WAITING_VALUES]).is_err());
        assert_eq!((waiting.bytes, memory.held()), (0, 0), "the brick's values were dropped");
        for i in 0..MAX_BRICKS {
            waiting.add(&i.to_string(), vec![1.0]).unwrap();
        }
        assert!(waiting.add("one more", vec![1.0]).is_err());
        assert_eq!(waiting.finish("one more", vec![2.0]).unwrap(), [2.0], "a last frame need not wait");
        assert_eq!(waiting.finish("0", vec![2.0]).unwrap(), [1.0, 2.0]);
        assert_eq!(waiting.bricks.len(), MAX_BRICKS - 1);
        assert_eq!(memory.held(), waiting.bytes);
        drop(waiting);
        assert_eq!(memory.held(), 0, "a socket that goes gives its memory back");
    }

    #[test]
    fn waiting_memory_counts_each_frame_and_is_shared() {
        let (alice, bob) = (Client::Token([1; 32]), Client::Token([2; 32]));
        let memory = WaitingMemory::new(3 << 20, 4 << 20);
        let frame = || vec![0.0f32; 1 << 18]; // 1 MiB
        let mut one = Waiting::new(memory.clone(), alice.clone());
        let mut two = Waiting::new(memory.clone(), alice);
        one.add("a", frame()).unwrap();
        one.add("a", frame()).unwrap();
        two.add("b", vec![1.0]).unwrap();
        let why = two.add("b", frame()).unwrap_err();
        assert!(why.contains("a client may hold") && why.contains("dropped"), "{why}");
        let mut other = Waiting::new(memory.clone(), bob);
        other.add("c", frame()).unwrap();
        let why = other.add("c", frame()).unwrap_err();
        assert!(why.contains("from all clients"), "{why}");
        assert_eq!(memory.held(), one.bytes + two.bytes, "the refused brick's values were dropped");
        // One-value frames cost their overhead, not four bytes.
        let mut tiny = Waiting::new(WaitingMemory::new(usize::MAX, usize::MAX), Client::Local);
        let mut refused = None;
        for i in 0..(1 << 20) {
            if let Err(why) = tiny.add("t", vec![1.0]) {
                refused = Some((i, why));
                break;
            }
        }
        let (frames, why) = refused.expect("a socket's bytes are bounded");
        assert!(frames < SOCKET_WAITING_BYTES / FRAME_OVERHEAD && why.contains("this socket"), "{frames}: {why}");
    }
}
