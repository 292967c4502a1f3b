//! Hanami's direct IO (seed 003, "Direct interaction with Cluster") over a
//! real server, as its Python SDK does it (`cluster.py`, `direct_io.py`):
//! `set_mode` DIRECT with `X-Auth-Token` and no Content-Type, the socket at
//! `/` with `{"token","target":"cluster","uuid"}`, then `ClusterIO_Message`
//! frames, one reply awaited per frame. The "cluster" is a live session
//! whose run saved a model, in each language's model conventions.

mod common;

use std::time::Duration;

use common::server::{Client, Server, http_with, run_action};
use prost::Message as _;
use serde_json::{Value, json};

/// `ClusterIO_Message`, as protoc generates it for the SDK.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterIoMessage {
    #[prost(string, tag = "1")]
    brick_name: String,
    #[prost(bool, tag = "2")]
    is_last: bool,
    #[prost(int32, tag = "3")]
    process_type: i32,
    #[prost(uint64, tag = "4")]
    number_of_values: u64,
    #[prost(float, repeated, packed = "true", tag = "5")]
    values: Vec<f32>,
}

/// `FileUpload_Message`: the upload socket's frame, sent to the wrong target.
#[derive(Clone, PartialEq, prost::Message)]
struct FileUploadMessage {
    #[prost(uint64, tag = "1")]
    position: u64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

const REQUEST_TYPE: i32 = 0;
const TRAIN_TYPE: i32 = 1;
const TOKEN: &str = "direct-io-token";

async fn sdk_put(server: &Server, path: &str, body: &str) -> (u16, Value) {
    sdk_put_as(server, TOKEN, path, body).await
}

async fn sdk_put_as(server: &Server, token: &str, path: &str, body: &str) -> (u16, Value) {
    http_with(server, "PUT", path, Some(body), &[("x-auth-token", token), ("content-type", "")]).await
}

/// Runs `code` on the actions face (with the token in the header) and returns the session id.
async fn cluster(server: &Server, language: &str, code: &str) -> String {
    cluster_as(server, TOKEN, language, code).await
}

async fn cluster_as(server: &Server, token: &str, language: &str, code: &str) -> String {
    let mut client =
        Client::connect_with(&server.ws_url("/"), &[("authorization", &format!("Bearer {token}"))]).await.unwrap();
    let main = language.parse::<sandlot::Language>().unwrap().main_file();
    let request = json!({ "action": "run", language: { "files": [{ "filename": main, "content": code }] } });
    let (id, stdout, finished) = run_action(&mut client, request).await;
    assert_eq!(finished["exitCode"], 0, "{finished} {stdout}");
    id
}

/// `switch_to_direct_mode`: set_mode DIRECT, then the socket and its first message.
async fn switch_to_direct_mode(server: &Server, uuid: &str) -> Client {
    switch_to_direct_mode_as(server, TOKEN, uuid).await
}

async fn switch_to_direct_mode_as(server: &Server, token: &str, uuid: &str) -> Client {
    let body = format!(r#"{{"new_state": "DIRECT", "uuid": "{uuid}"}}"#);
    let (status, reply) = sdk_put_as(server, token, "/control/v1/cluster/set_mode", &body).await;
    assert_eq!(status, 200, "{reply}");
    direct_socket(server, token, uuid).await
}

/// Another direct-IO socket to a session already in DIRECT mode.
async fn direct_socket(server: &Server, token: &str, uuid: &str) -> Client {
    let mut socket = Client::connect(&server.ws_url("")).await;
    socket.send_text(&format!(r#"{{"token": "{token}", "target": "cluster", "uuid": "{uuid}"}}"#)).await;
    assert_eq!(socket.recv().await["success"], true);
    socket
}

async fn send(socket: &mut Client, brick: &str, values: &[f32], is_last: bool, process_type: i32) -> ClusterIoMessage {
    let message = ClusterIoMessage {
        brick_name: brick.into(),
        is_last,
        process_type,
        number_of_values: values.len() as u64,
        values: values.to_vec(),
    };
    socket.send_binary(message.encode_to_vec()).await;
    ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).expect("a ClusterIO_Message")
}

/// A model that trains on values (adds their sum to its bias) and predicts
/// each value plus the bias: in every language's conventions.
const PYTHON_MODEL: &str = r#"
import sandlot
class Shift:
    def __init__(self):
        self.bias = 0.0
    def partial_fit(self, values):
        self.bias += sum(values)
    def predict(self, values):
        return [[v + self.bias] for v in values]
sandlot.save_model("output", Shift())
"#;

const JS_MODEL: &str = r#"
const model = {
  bias: 0,
  train(values) { this.bias += values.reduce((a, b) => a + b, 0); },
  predict(values) { return values.map((v) => v + this.bias); },
};
sandlot.saveModel("output", model);
"#;

const LUA_MODEL: &str = r#"
local model = { bias = 0 }
function model:train(values)
  for _, v in ipairs(values) do self.bias = self.bias + v end
end
function model:predict(values)
  local out = {}
  for i, v in ipairs(values) do out[i] = v + self.bias end
  return out
end
sandlot.save_model("output", model)
"#;

async fn request_train_request(server: &Server, language: &str, code: &str) {
    let uuid = cluster(server, language, code).await;
    let mut socket = switch_to_direct_mode(server, &uuid).await;
    // Values arrive in two frames; each frame gets one reply.
    let ack = send(&mut socket, "input", &[1.0, 2.0], false, REQUEST_TYPE).await;
    assert_eq!(ack, ClusterIoMessage::default(), "a frame that is not the last gets an empty reply");
    let answer = send(&mut socket, "input", &[3.0], true, REQUEST_TYPE).await;
    assert_eq!(
        (answer.values.clone(), answer.number_of_values, answer.is_last),
        (vec![1.0, 2.0, 3.0], 3, true),
        "{answer:?}"
    );
    let trained = send(&mut socket, "output", &[0.5, 0.5], true, TRAIN_TYPE).await;
    assert_eq!(trained, ClusterIoMessage::default(), "{trained:?}");
    let answer = send(&mut socket, "input", &[1.0], true, REQUEST_TYPE).await;
    assert_eq!(answer.values, [2.0], "{language}: the model trained: {answer:?}");
}

#[tokio::test]
async fn python_javascript_and_lua_models_answer_and_train() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", TOKEN)]);
    request_train_request(&server, "python", PYTHON_MODEL).await;
    request_train_request(&server, "javascript", JS_MODEL).await;
    request_train_request(&server, "lua", LUA_MODEL).await;
}

#[tokio::test]
async fn python_sci_models_answer_and_train() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", TOKEN)]);
    let code = r#"
import numpy as np, sandlot
from sklearn.linear_model import SGDRegressor
class Doubler:
    def __init__(self):
        self.extra = 0.0
    def partial_fit(self, values):
        self.extra += float(np.sum(values))
    def predict(self, values):
        return (np.asarray(values) * 2 + self.extra).tolist()
sandlot.save_model("only", Doubler())
"#;
    let uuid = cluster(&server, "python-sci", code).await;
    let mut socket = switch_to_direct_mode(&server, &uuid).await;
    // The brick's name is no model's: the session's only model answers.
    let answer = send(&mut socket, "input", &[1.0, 4.0], true, REQUEST_TYPE).await;
    assert_eq!(answer.values, [2.0, 8.0], "{answer:?}");
    send(&mut socket, "output", &[1.0], true, TRAIN_TYPE).await;
    assert_eq!(send(&mut socket, "input", &[1.0], true, REQUEST_TYPE).await.values, [3.0]);
}

#[tokio::test]
async fn errors_come_back_as_frames_and_modes_are_checked() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", TOKEN)]);
    let code = "import sandlot\nsandlot.save_model('a', lambda v: v)\nsandlot.save_model('b', lambda v: 'text')\n\
                def boom(v):\n    raise ValueError('the model gave up')\nsandlot.save_model('c', boom)\n\
                sandlot.save_model('d', lambda v: [float('nan')])";
    let uuid = cluster(&server, "python", code).await;

    // Not in DIRECT mode yet: the socket is refused.
    let mut early = Client::connect(&server.ws_url("")).await;
    early.send_text(&format!(r#"{{"token": "{TOKEN}", "target": "cluster", "uuid": "{uuid}"}}"#)).await;
    assert_eq!(early.recv().await["success"], false);
    // set_mode needs a known session and a known state.
    assert_eq!(
        sdk_put(&server, "/control/v1/cluster/set_mode", r#"{"new_state": "DIRECT", "uuid": "nope"}"#).await.0,
        404
    );
    let body = format!(r#"{{"new_state": "SIDEWAYS", "uuid": "{uuid}"}}"#);
    assert_eq!(sdk_put(&server, "/v1/cluster/set_mode", &body).await.0, 400);

    let mut socket = switch_to_direct_mode(&server, &uuid).await;
    let error = |m: &ClusterIoMessage| m.brick_name.starts_with("error: ") && m.values.is_empty() && m.is_last;
    // Two models and a brick that names neither; a model without training; an answer that is not numbers.
    let answer = send(&mut socket, "input", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("models: a, b"), "{answer:?}");
    let answer = send(&mut socket, "a", &[1.0], true, TRAIN_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("partial_fit"), "{answer:?}");
    let answer = send(&mut socket, "b", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("not numbers"), "{answer:?}");
    // A model that raises, or answers NaN.
    let answer = send(&mut socket, "c", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("the model gave up"), "{answer:?}");
    let answer = send(&mut socket, "d", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer), "{answer:?}");
    // NaN and infinities in, as the last frame and as a waiting one.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let answer = send(&mut socket, "a", &[1.0, bad], true, REQUEST_TYPE).await;
        assert!(error(&answer) && answer.brick_name.contains("finite"), "{answer:?}");
    }
    send(&mut socket, "a", &[f32::NAN], false, REQUEST_TYPE).await;
    let answer = send(&mut socket, "a", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("finite"), "{answer:?}");
    // A frame declaring 100M values: in numberOfValues, and in the packed field's length.
    let declared = ClusterIoMessage {
        brick_name: "a".into(),
        is_last: true,
        process_type: REQUEST_TYPE,
        number_of_values: 100_000_000,
        values: vec![1.0],
    };
    socket.send_binary(declared.encode_to_vec()).await;
    let answer = ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).unwrap();
    assert!(error(&answer) && answer.brick_name.contains("100000000"), "{answer:?}");
    let mut lying = vec![0x2a]; // field 5, length-delimited
    prost::encoding::encode_varint(400_000_000, &mut lying);
    lying.extend_from_slice(&[0; 16]);
    socket.send_binary(lying).await;
    assert!(error(&ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).unwrap()));
    // The wrong message type for the target: an upload chunk.
    let chunk = FileUploadMessage { position: 7, data: b"7,8,9\n".to_vec() };
    socket.send_binary(chunk.encode_to_vec()).await;
    assert!(error(&ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).unwrap()));
    // Frames that are not ClusterIO_Messages, and an unknown process type.
    socket.send_binary(vec![0xff, 0xff]).await;
    assert!(error(&ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).unwrap()));
    socket.send_text(r#"{"brickName": "a"}"#).await;
    assert!(error(&ClusterIoMessage::decode(socket.recv_binary().await.as_slice()).unwrap()));
    let answer = send(&mut socket, "a", &[1.0], true, 7).await;
    assert!(error(&answer), "{answer:?}");
    // Too many bricks waiting for their last frame: refused, and the others still wait.
    for brick in 0..64 {
        assert!(send(&mut socket, &format!("b{brick}"), &[1.0], false, REQUEST_TYPE).await.brick_name.is_empty());
    }
    let answer = send(&mut socket, "one too many", &[1.0], false, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("64 bricks"), "{answer:?}");
    // The socket is still up and answers.
    assert_eq!(send(&mut socket, "a", &[4.0, 5.0], true, REQUEST_TYPE).await.values, [4.0, 5.0]);

    // TASK mode: the open socket's frames are refused, and new direct-IO sockets too.
    let body = format!(r#"{{"new_state": "TASK", "uuid": "{uuid}"}}"#);
    assert_eq!(sdk_put(&server, "/control/v1/cluster/set_mode", &body).await.0, 200);
    let answer = send(&mut socket, "a", &[1.0], true, REQUEST_TYPE).await;
    assert!(error(&answer) && answer.brick_name.contains("DIRECT mode"), "{answer:?}");
    let mut late = Client::connect(&server.ws_url("")).await;
    late.send_text(&format!(r#"{{"token": "{TOKEN}", "target": "cluster", "uuid": "{uuid}"}}"#)).await;
    assert_eq!(late.recv().await["success"], false);
}

/// Issue 27 row 3: 40 sockets each sending 4 × 4 MiB frames without
/// `isLast` grew the server by 810 MB: waiting values were bounded per
/// socket only. They are counted, as allocated, per client and in the whole
/// server; past either the frame is refused with what to do, and the server
/// holds no more than the server-wide budget (256 MiB).
#[tokio::test]
async fn values_waiting_for_their_last_frame_are_bounded_per_client_and_per_server() {
    const CLIENTS: usize = 8;
    const SOCKETS: usize = 4;
    const MIB: u64 = 1 << 20;
    let tokens: Vec<String> = (0..=CLIENTS).map(|i| format!("direct-io-token-{i}")).collect();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", &tokens.join(","))]);
    // Each client its own session (a session may answer only its own client).
    let mut sessions = Vec::new();
    for token in &tokens {
        sessions.push(
            cluster_as(&server, token, "python", "import sandlot\nsandlot.save_model('echo', lambda v: v)").await,
        );
        switch_to_direct_mode_as(&server, token, sessions.last().unwrap()).await;
    }
    // Frames of 250,000 values (~1 MB), each reply awaited before the next
    // frame, 16 to a socket (16 MB), 4 sockets to a client (64 MB), from 8
    // clients (512 MB); a socket stops at its first refusal.
    let frame = vec![0.5f32; 250_000];
    let (growth, (held, replies)) = server
        .peak_growth(async {
            let mut held = Vec::new();
            let mut replies = Vec::new();
            for (token, uuid) in tokens.iter().zip(&sessions).take(CLIENTS) {
                for _ in 0..SOCKETS {
                    let mut socket = direct_socket(&server, token, uuid).await;
                    for _ in 0..16 {
                        let reply = send(&mut socket, "input", &frame, false, REQUEST_TYPE).await.brick_name;
                        replies.push(reply);
                        if !replies.last().unwrap().is_empty() {
                            break;
                        }
                    }
                    held.push(socket);
                }
            }
            // A fifth socket of the first client: past its own budget
            // within a few frames.
            let mut fifth = direct_socket(&server, &tokens[0], &sessions[0]).await;
            let mut own = String::new();
            for _ in 0..4 {
                own = send(&mut fifth, "input", &frame, false, REQUEST_TYPE).await.brick_name;
                if !own.is_empty() {
                    break;
                }
            }
            assert!(own.starts_with("error: ") && own.contains("a client may hold"), "{own}");
            assert!(own.contains("isLast") && own.contains("dropped"), "{own}");
            (held, replies)
        })
        .await;
    let taken = replies.iter().filter(|r| r.is_empty()).count();
    let refused: Vec<&String> = replies.iter().filter(|r| !r.is_empty()).collect();
    assert!(refused.iter().all(|r| r.contains("from all clients")), "{refused:?}");
    // 256 MiB hold 16 sockets' 16 MB and 12 frames more: each later
    // socket's 13th frame is refused (and its brick dropped).
    assert_eq!((taken, refused.len()), (16 * 16 + 16 * 12, 16), "refused: {:?}", refused.first());
    // What the budget holds (256 MiB), and each of the 33 sockets' read
    // buffers (a frame or two each; 318 MiB in all was measured). Before
    // the budget the sockets held 512 MB of values.
    assert!(growth < 384 * MIB, "waiting values grew the server by {} MiB", growth / MIB);

    // Meanwhile a complete brick is still answered; once the server-wide
    // budget is full a new brick is refused, and taken again when sockets close.
    let last = tokens.last().unwrap();
    let mut socket = direct_socket(&server, last, sessions.last().unwrap()).await;
    assert_eq!(send(&mut socket, "input", &[4.0, 5.0], true, REQUEST_TYPE).await.values, [4.0, 5.0]);
    let mut full = String::new();
    for brick in 0..16 {
        full = send(&mut socket, &format!("fill {brick}"), &frame, false, REQUEST_TYPE).await.brick_name;
        if !full.is_empty() {
            break;
        }
    }
    assert!(full.contains("from all clients"), "{full}");
    drop(held);
    let mut accepted = false;
    for _ in 0..200 {
        if send(&mut socket, "more", &frame, false, REQUEST_TYPE).await.brick_name.is_empty() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "closed sockets gave their values' memory back");
}

/// The PM QoS target all processes ask for together, as the device reads.
fn cpu_latency_target() -> Option<i32> {
    let bytes = std::fs::read(sandlot::latency::DEVICE).ok()?;
    Some(i32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// CPU time the process has used (user and system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's name, in parentheses: fields 14 and 15 are utime and stime.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// `--low-latency` holds idle CPUs polling for as long as the server runs,
/// and no longer; where it cannot (not root, no device) the log says why.
/// Either way a socket polls for its next message after each one, for a
/// moment only: an open socket whose client has gone quiet costs no CPU.
#[tokio::test]
async fn low_latency_keeps_idle_cpus_polling_while_the_server_runs() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let before = cpu_latency_target();
    let env = [("SANDLOT_LOG", "info"), ("SANDLOT_TOKENS", TOKEN)];
    let server = Server::start_logged(&data.path().join("state"), &["--low-latency"], &env, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    let uuid = cluster(&server, "python", "import sandlot\nsandlot.save_model('echo', lambda v: v)").await;
    let mut socket = switch_to_direct_mode(&server, &uuid).await;
    for i in 0..200 {
        assert_eq!(send(&mut socket, "echo", &[i as f32], true, REQUEST_TYPE).await.values, [i as f32]);
    }
    // The socket stays open and quiet: its polling must have stopped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quiet_from = cpu_time(server.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_time(server.pid()) - quiet_from;
    // A socket that kept polling would keep a CPU busy: ~2 s of it.
    assert!(spent < Duration::from_secs(1), "a quiet socket kept the server busy: {spent:?} of CPU in 2 s");
    assert!(text.contains("low latency: "), "{text}");
    if text.contains(&format!("cannot open {}", sandlot::latency::DEVICE)) {
        eprintln!("note: the PM QoS request could not be held here (not root, or no such device)");
    } else {
        assert_eq!(cpu_latency_target(), Some(0), "held while the server runs");
        drop(socket);
        server.terminate();
        // Other processes may hold their own; ours is gone with the server.
        let after = cpu_latency_target().unwrap();
        assert!(after > 0 || before == Some(0), "still held after the server stopped: {after}");
    }
}
