//! Entry points for fuzzing every parser of client input: ranna ops, runtime
//! actions (the lenient object-literal parser included), processor messages,
//! upload frames, direct-IO frames, MCP tool arguments, the config file,
//! python-sci's door and placeholder stats.
//!
//! `tests/fuzz.rs` runs each on its corpus (`tests/__fuzz__/<target>/corpus`)
//! and on random inputs for a few seconds in `./dev.sh test`; `./dev.sh fuzz`
//! runs them coverage-guided for longer. Each takes any bytes: what matters
//! is that it returns (no panic, no unbounded recursion or allocation), not
//! what it returns.

#![doc(hidden)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::server::json::{Fields, field, parse_fields, parse_lenient};
use crate::server::{actions, datasets, processor, ranna};

fn text(input: &[u8]) -> Option<&str> {
    std::str::from_utf8(input).ok()
}

/// The lenient JSON / object-literal parser, and the fields it gives.
pub fn lenient_json(input: &[u8]) {
    if let Some(text) = text(input) {
        let _ = parse_lenient(text);
        let _ = parse_fields(text);
    }
}

/// A ranna op (`{"op","nonce","args"}`), read as the WebSocket face reads it.
pub fn ranna_op(input: &[u8]) {
    if let Ok(message) = serde_json::from_slice::<ranna::OpMessage>(input) {
        let _ = ranna::parse_op(&message);
    }
}

/// A runtime-actions request: its fields, its program, its placeholder.
pub fn actions_request(input: &[u8]) {
    let Some(Ok(request)) = text(input).map(parse_fields) else { return };
    let _ = actions::program_of(&request);
    let _ = actions::placeholder_request(&request);
    let _ = field::<crate::server::json::IdText>(&request, "sessionId", "sessionId");
    let _ = field::<Fields>(&request, "model", "model");
}

/// A processor message: a context, or a command's result.
pub fn processor_message(input: &[u8]) {
    let message = || serde_json::from_slice::<processor::ClientMessage>(input).map_err(|e| e.to_string());
    let _ = processor::context(message());
    let pending: processor::Pending = Arc::new(Mutex::new(HashMap::new()));
    let _ = processor::command_result(message(), &pending);
}

/// An upload socket's binary frame (protobuf, or raw), and its first message.
pub fn upload_frame(input: &[u8]) {
    use prost::Message;
    let _ = crate::server::proto::FileUploadMessage::decode(bytes::Bytes::copy_from_slice(input));
    let _ = datasets::parse_chunk(input);
    if let Some(Ok(first)) = text(input).map(parse_fields) {
        let _ = field::<String>(&first, "uuid", "uuid");
    }
}

/// A direct-IO frame (`ClusterIO_Message`), and a model's answer flattened to floats.
pub fn direct_io_frame(input: &[u8]) {
    use prost::Message;
    if let Ok(message) = crate::server::proto::ClusterIoMessage::decode(bytes::Bytes::copy_from_slice(input)) {
        let _ = crate::server::proto::ClusterProcessType::try_from(message.process_type);
        let _ = message.values.iter().filter(|v| v.is_finite()).count();
    }
    if let Some(Ok(answer)) = text(input).map(|t| serde_json::value::RawValue::from_string(t.to_string())) {
        let _ = crate::server::direct_io::floats(&answer);
    }
}

/// An MCP tool call's arguments, as each tool reads and checks them.
#[cfg(feature = "mcp")]
pub fn mcp_arguments(input: &[u8]) {
    crate::server::mcp::check_arguments(input);
}

/// The `serve --config` file.
#[cfg(feature = "cli")]
pub fn config_file(input: &[u8]) {
    if let Some(text) = text(input)
        && let Ok(settings) = crate::config::ServeSettings::parse(text)
    {
        let _ = Box::new(settings).or(Default::default()).into_config();
    }
}

/// A statistics request over a saved placeholder's JSON text.
pub fn placeholder_stats(input: &[u8]) {
    if let Some(text) = text(input) {
        let _ = crate::host::table_stats(text);
    }
}

/// A frame through python-sci's door, answered by a host with no guest.
pub fn door_frame(input: &[u8]) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the door")
    });
    let mut state = crate::host::HostState::new(
        crate::host::sandbox_wasi(std::io::empty(), std::io::empty(), std::io::empty()).build_p1(),
        crate::host::MemoryLimiter::new(1 << 20, 1000),
        crate::host::Placeholders::new(1 << 16),
        Arc::new(crate::host::NoEngine),
        None,
    );
    let _ = runtime.block_on(crate::host::door::answer(&mut state, input));
}
