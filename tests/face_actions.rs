//! The runtime actions face over a real server (seeds 000/001): run,
//! get_placeholder, run_model, get_stats, status and stop, in JSON and in the
//! seed's JavaScript-object-literal style.

mod common;

use std::time::Duration;

use common::server::{Client, Server, run_action as run};
use serde_json::json;

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

async fn client() -> Client {
    Client::connect(&Server::shared().ws_url("/")).await
}

const TRAINING: &str = r#"
import sandlot
from model import Line

xs = [1, 2, 3, 4, 5]
ys = [2 * x + 1 for x in xs]
sandlot.set_placeholder("TrainX", xs)
sandlot.set_placeholder("table", [{"x": x, "y": y, "label": "p"} for x, y in zip(xs, ys)])
sandlot.set_placeholder("message", "trained")
sandlot.save_model("line", Line.fit(xs, ys))
print("done")
"#;

const MODEL: &str = r#"
class Line:
    def __init__(self, a, b):
        self.a, self.b = a, b

    @classmethod
    def fit(cls, xs, ys):
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        return cls(a, my - a * mx)

    def predict(self, xs):
        return [self.a * x + self.b for x in xs]
"#;

#[tokio::test]
async fn a_run_then_placeholders_models_stats_and_status_from_another_socket() {
    let mut trainer = client().await;
    let request = json!({
        "action": "run",
        "python": { "number": 2, "files": [
            { "filename": "speedmain.py", "content": TRAINING },
            { "filename": "model.py", "content": MODEL },
        ], "mainfile": "speedmain.py" },
    });
    let (id, stdout, finished) = run(&mut trainer, request).await;
    assert_eq!(stdout, "done\n");
    assert_eq!((finished["status"].clone(), finished["exitCode"].clone()), (json!("finished"), json!(0)), "{finished}");

    // Any connection of the client that made it (here: one address) may use
    // the session id. Ids are unguessable (a random UUID); a number is still
    // read as an id, and matches none.
    let mut other = client().await;
    assert!(uuid_like(&id), "{id}");
    other.send(json!({ "action": "status", "sessionId": 123123123123u64 })).await;
    assert_eq!(other.recv().await["code"], "unknown_session");
    other.send(json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "message" } })).await;
    let reply = other.recv().await;
    assert_eq!(reply, json!({ "action": "get_placeholder", "sessionId": id, "name": "message", "value": "trained" }));

    other.send(json!({ "action": "run_model", "model": { "sessionId": id, "name": "line", "is_data": true, "data": [10, 0.5] } })).await;
    let reply = other.recv().await;
    let prediction: Vec<f64> =
        serde_json::from_value(reply["prediction"].clone()).unwrap_or_else(|_| panic!("{reply}"));
    assert!((prediction[0] - 21.0).abs() < 1e-9 && (prediction[1] - 2.0).abs() < 1e-9, "{reply}");

    other.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "TrainX" } })).await;
    let stats = other.recv().await["stats"].clone();
    assert_eq!(
        (stats["count"].clone(), stats["mean"].clone(), stats["50%"].clone()),
        (json!(5), json!(3.0), json!(3.0))
    );
    assert!((stats["std"].as_f64().unwrap() - 1.5811388300841898).abs() < 1e-12);
    other.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "table" } })).await;
    let stats = other.recv().await["stats"].clone();
    assert_eq!((stats["y"]["min"].clone(), stats["y"]["max"].clone()), (json!(3.0), json!(11.0)));
    assert!(stats.get("label").is_none(), "text columns have no statistics: {stats}");

    other.send(json!({ "action": "status", "sessionId": id })).await;
    let status = other.recv().await;
    assert_eq!(
        (status["status"].clone(), status["exitCode"].clone(), status["live"].clone()),
        (json!("finished"), json!(0), json!(true))
    );
    assert!(status["exectimems"].is_u64());
}

#[tokio::test]
async fn object_literal_requests_are_accepted() {
    let mut client = client().await;
    let literal = "{action: 'run', javascript: {number: 2, files: [{filename: 'main.js', content: \"const h = require('./h.js'); sandlot.setPlaceholder('sum', h.add(2, 3)); console.log('ok')\"}, {filename: 'h.js', content: 'exports.add = (a, b) => a + b;'}], mainfile: 'main.js'}}";
    client.send_text(literal).await;
    let id = client.recv().await["sessionId"].as_str().unwrap().to_string();
    let mut skipped = Vec::new();
    let finished = client.recv_until(|m| m["action"] == "finished", &mut skipped).await;
    assert_eq!(finished["exitCode"], 0, "{finished} {skipped:?}");
    client.send_text(&format!("{{action: 'get_placeholder', placeholder: {{sessionId: '{id}', name: 'sum'}}}}")).await;
    assert_eq!(client.recv().await["value"], 5);
}

#[tokio::test]
async fn status_moves_from_running_to_stopped_with_stop() {
    let mut client = client().await;
    client.send(json!({ "action": "run", "python": { "files": [{ "filename": "spin.py", "content": "while True:\n    pass" }] } })).await;
    let id = client.recv().await["sessionId"].as_str().unwrap().to_string();
    let mut watcher = Client::connect(&Server::shared().ws_url("/")).await;
    watcher.send(json!({ "action": "status", "sessionId": id })).await;
    assert_eq!(watcher.recv().await["status"], "running");
    watcher.send(json!({ "action": "stop", "sessionId": id })).await;
    let stopped = watcher.recv().await;
    assert_eq!(
        (stopped["action"].clone(), stopped["status"].clone(), stopped["exitCode"].clone()),
        (json!("stop"), json!("stopped"), json!(137)),
        "{stopped}"
    );
    let finished = client.recv().await;
    assert_eq!((finished["action"].clone(), finished["status"].clone()), (json!("finished"), json!("stopped")));
}

#[tokio::test]
async fn failures_and_timeouts_show_in_status() {
    let server = Server::start(&["--timeout", "1"]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    let (id, _, finished) = run(
        &mut client,
        json!({ "action": "run", "javascript": { "files": [{ "filename": "a.js", "content": "for (;;) {}" }] } }),
    )
    .await;
    assert_eq!((finished["status"].clone(), finished["exitCode"].clone()), (json!("timeout"), json!(124)));
    client.send(json!({ "action": "status", "sessionId": id })).await;
    assert_eq!(client.recv().await["reason"], "timeout");
    let (_, _, finished) =
        run(&mut client, json!({ "action": "run", "python": { "files": [{ "filename": "a.py", "content": "1/0" }] } }))
            .await;
    assert_eq!((finished["status"].clone(), finished["exitCode"].clone()), (json!("failed"), json!(1)));
}

#[tokio::test]
async fn bad_requests_get_named_errors_and_the_socket_stays_up() {
    let mut c = client().await;
    let (id, _, _) = run(&mut c, json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": "import sandlot\nsandlot.set_placeholder('word', 'abc')\nsandlot.save_model('boom', lambda x: 1 / 0)" }] } })).await;
    let cases: Vec<(String, &str, &str)> = vec![
        ("{\"action\": \"fly\"}".into(), "unknown_action", "unknown action \"fly\""),
        ("{\"placeholder\": {}}".into(), "bad_request", "\"action\""),
        ("[1, 2]".into(), "bad_request", "JSON object"),
        ("{action: 'run'".into(), "bad_request", "not valid JSON"),
        (json!({ "action": "run", "cobol": {} }).to_string(), "unknown_language", "unknown language \"cobol\""),
        (json!({ "action": "run" }).to_string(), "bad_request", "language key"),
        (json!({ "action": "run", "python": { "files": "main.py" } }).to_string(), "bad_request", "files must be a list"),
        (json!({ "action": "run", "python": { "number": 3, "files": [{ "filename": "a.py", "content": "" }] } }).to_string(), "bad_request", "number says 3"),
        (json!({ "action": "run", "python": { "files": [{ "filename": "a.py", "content": "" }, { "filename": "b.py", "content": "" }] } }).to_string(), "bad_request", "mainfile"),
        (json!({ "action": "run", "python": { "files": [{ "filename": "../x.py", "content": "" }] } }).to_string(), "bad_request", "`..`"),
        (json!({ "action": "status", "sessionId": "999" }).to_string(), "unknown_session", "no session 999"),
        (json!({ "action": "status", "sessionId": [1] }).to_string(), "bad_request", "number or a string"),
        (json!({ "action": "status" }).to_string(), "bad_request", "\"sessionId\""),
        (json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "nope" } }).to_string(), "unknown_placeholder", "saved: word"),
        (json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "word" } }).to_string(), "not_numeric", "stats need"),
        (json!({ "action": "run_model", "model": { "sessionId": id, "name": "nope", "data": 1 } }).to_string(), "unknown_model", "models saved: boom"),
        (json!({ "action": "run_model", "model": { "sessionId": id, "name": "boom", "data": 1 } }).to_string(), "model_error", "ZeroDivisionError"),
        (json!({ "action": "run_model", "model": { "sessionId": id, "name": "boom", "is_data": false, "data": "/data/x.csv" } }).to_string(), "not_found", "not a dataset file"),
    ];
    for (request, code, message) in cases {
        c.send_text(&request).await;
        let reply = c.recv().await;
        assert_eq!(reply["code"], code, "{request} -> {reply}");
        assert!(reply["error"].as_str().unwrap().contains(message), "{request} -> {reply}");
    }
    c.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.recv().await["code"], "bad_request");
    c.send_text(&"y".repeat(9 << 20)).await;
    assert_eq!(c.recv().await["code"], "too_large");
    c.send(json!({ "action": "status", "sessionId": id })).await;
    assert_eq!(c.recv_within(Duration::from_secs(5)).await["status"], "finished");
}

#[tokio::test]
async fn shutdown_reports_the_end_of_running_sessions() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    client.send(json!({ "action": "run", "javascript": { "files": [{ "filename": "spin.js", "content": "for (;;) {}" }] } })).await;
    let id = client.recv().await["sessionId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::thread::spawn(move || server.terminate());
    let finished = client.recv().await;
    assert_eq!((finished["action"].clone(), finished["sessionId"].clone()), (json!("finished"), json!(id)));
    assert_eq!(finished["status"], "stopped");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert!(stopping.join().unwrap().success());
}

#[tokio::test]
async fn idle_sessions_lose_their_instance_and_records_expire_with_retention() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &["--idle-expiry", "1"], &[]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    let code = "import sandlot\nsandlot.set_placeholder('x', 1)\nsandlot.save_model('m', lambda d: d)";
    let (id, _, _) =
        run(&mut client, json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": code }] } }))
            .await;
    let predict = json!({ "action": "run_model", "model": { "sessionId": id, "name": "m", "data": [1] } });
    client.send(predict.clone()).await;
    assert_eq!(client.recv().await["prediction"], json!([1]));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The instance is released; the record and placeholders stay.
    client.send(predict).await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "session_ended", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("instance is gone"), "{reply}");
    let get = json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "x" } });
    client.send(get.clone()).await;
    assert_eq!(client.recv().await["value"], 1);
    drop(client);
    server.terminate();
    // Past the retention (0 hours here), a restarted server has forgotten it.
    let server = Server::start_in(data.path(), &["--retention-hours", "0"], &[]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    client.send(get).await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "unknown_session", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("expired"), "{reply}");
}

#[tokio::test]
async fn a_message_past_the_hard_cap_closes_only_its_own_socket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let mut bystander = client().await;
    let mut flooder = client().await;
    // 8 MiB is the soft cap (an error reply); past 2 × 8 + 1 MiB the socket closes.
    let _ = flooder.socket.send(Message::text("z".repeat(18 << 20))).await;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match flooder.socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the server closes the socket");
    assert_eq!(closed, Some(CloseCode::Size));
    bystander.send(json!({ "action": "status", "sessionId": "1" })).await;
    assert_eq!(bystander.recv().await["code"], "unknown_session", "the other socket is unharmed");
}

#[tokio::test]
async fn lua_runs_saves_and_answers_like_the_others() {
    let mut trainer = client().await;
    let code = "local xs = {1, 2, 3}\nsandlot.set_placeholder('TrainX', xs)\n\
                sandlot.save_model('scale', function(values)\n  local out = {}\n  \
                for i, v in ipairs(values) do out[i] = 10 * v end\n  return out\nend)\nprint('done')";
    let request = json!({ "action": "run", "lua": { "files": [{ "filename": "main.lua", "content": code }] } });
    let (id, stdout, finished) = run(&mut trainer, request).await;
    assert_eq!((stdout.as_str(), finished["status"].clone()), ("done\n", json!("finished")), "{finished}");
    let mut other = client().await;
    other.send(json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "TrainX" } })).await;
    assert_eq!(other.recv().await["value"], json!([1, 2, 3]));
    other.send(json!({ "action": "run_model", "model": { "sessionId": id, "name": "scale", "is_data": true, "data": [1, 2] } })).await;
    assert_eq!(other.recv().await["prediction"], json!([10, 20]));
    other.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "TrainX" } })).await;
    assert_eq!(other.recv().await["stats"]["mean"], json!(2.0));
}

/// A run's scratch folder: written at `/tmp`, listed and fetched from another
/// socket, confined, capped.
#[tokio::test]
async fn files_a_run_wrote_under_tmp_are_listed_and_fetched() {
    let mut writer = client().await;
    let code = "import os\nos.makedirs('/tmp/out', exist_ok=True)\nopen('/tmp/out/data.csv', 'w').write('a,b\\n1,2\\n')\n\
                open('/tmp/blob.bin', 'wb').write(bytes(range(256)))\n\
                try:\n    open('/tmp/../../etc/hostname').read()\n    print('escaped')\nexcept OSError as e:\n    print('confined')\n";
    let request = json!({ "action": "run", "python": { "files": [{ "filename": "main.py", "content": code }] } });
    let (id, stdout, finished) = run(&mut writer, request).await;
    assert_eq!((stdout.as_str(), finished["status"].as_str()), ("confined\n", Some("finished")), "{finished}");

    let mut other = client().await;
    other.send(json!({ "action": "list_files", "sessionId": id })).await;
    let listed = other.recv().await;
    assert_eq!(
        listed["files"],
        json!([{ "path": "blob.bin", "bytes": 256 }, { "path": "out/data.csv", "bytes": 8 }]),
        "{listed}"
    );
    other.send(json!({ "action": "get_file", "sessionId": id, "path": "/tmp/out/data.csv" })).await;
    let text = other.recv().await;
    assert_eq!((text["action"].as_str(), text["text"].as_str()), (Some("get_file"), Some("a,b\n1,2\n")), "{text}");
    other.send(json!({ "action": "get_file", "sessionId": id, "path": "blob.bin" })).await;
    let binary = other.recv().await;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(binary["base64"].as_str().unwrap()).unwrap();
    assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    // Each refusal with its own code and message (issue 27 row 12: not "the input is not valid JSON").
    for (path, code, says) in [
        ("../../etc/passwd", "bad_request", "not a file under /tmp"),
        ("missing.txt", "not_found", "no file"),
        ("out", "bad_request", "not a file"),
    ] {
        other.send(json!({ "action": "get_file", "sessionId": id, "path": path })).await;
        let refused = other.recv().await;
        assert_eq!(refused["code"], code, "{path}: {refused}");
        let error = refused["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{path:?}")) || error.starts_with(says), "{path}: {refused}");
        assert!(error.contains(says) && error.contains("list_files"), "{path}: {refused}");
    }
    other.send(json!({ "action": "list_files", "sessionId": "no-such-session" })).await;
    assert_eq!(other.recv().await["code"], "unknown_session");

    // Past 16 MiB the run is stopped, and its instance (and folder) is not kept.
    let flood = "open('/tmp/big', 'wb').write(b'x' * (20 << 20))\nprint('written')";
    let request = json!({ "action": "run", "python": { "files": [{ "filename": "main.py", "content": flood }] } });
    let (flooded, _, finished) = run(&mut writer, request).await;
    assert_eq!(finished["reason"], "scratch-limit", "{finished}");
    other.send(json!({ "action": "list_files", "sessionId": flooded })).await;
    assert_eq!(other.recv().await["code"], "session_ended");
    // So are more than 256 files, however small.
    let many = "for (let i = 0; i < 300; i++) require('fs').writeFileSync('/tmp/f' + i, 'x')";
    let request = json!({ "action": "run", "javascript": { "files": [{ "filename": "main.js", "content": many }] } });
    let (_, _, finished) = run(&mut writer, request).await;
    assert_eq!(finished["reason"], "scratch-limit", "{finished}");
    // The socket and the first session are unharmed.
    other.send(json!({ "action": "list_files", "sessionId": id })).await;
    assert_eq!(other.recv().await["files"].as_array().map(Vec::len), Some(2));
}

const ALICE: &str = "alice-token-0001";
const BOB: &str = "bob-token-0002";

async fn as_client(server: &Server, token: &str) -> Client {
    let auth = format!("Bearer {token}");
    Client::connect_with(&server.ws_url("/"), &[("authorization", &auth)]).await.expect("an accepted token")
}

/// A reply with the session id it names made anonymous, to compare two replies.
fn without_id(reply: &serde_json::Value, id: &str) -> String {
    reply.to_string().replace(id, "<id>")
}

/// Issue 27, row 9: a session's id worked for any token that had it
/// (placeholders, files, models, stop, DIRECT mode). Now a session answers
/// only the client that started it; to another its id is unknown, in
/// exactly the words of an id that never existed.
#[tokio::test]
async fn a_session_answers_only_the_client_that_started_it() {
    let data = tempfile::tempdir().unwrap();
    let tokens = [("SANDLOT_TOKENS", "alice-token-0001,bob-token-0002")];
    let server = Server::start_in(data.path(), &[], &tokens);
    let mut alice = as_client(&server, ALICE).await;
    let code = "import sandlot\nsandlot.set_placeholder('word', 'secret')\nsandlot.set_placeholder('xs', [1, 2, 3])\n\
                sandlot.save_model('double', lambda xs: [2 * x for x in xs])\nopen('/tmp/note.txt', 'w').write('mine')\n";
    let request = json!({ "action": "run", "python": { "files": [{ "filename": "main.py", "content": code }] } });
    let (id, _, finished) = run(&mut alice, request).await;
    assert_eq!(finished["status"], "finished", "{finished}");
    let spin = json!({ "action": "run", "python": { "files": [{ "filename": "main.py", "content": "while True:\n    pass" }] } });
    alice.send(spin).await;
    let running = alice.recv().await["sessionId"].as_str().unwrap().to_string();

    let asks = |id: &str| {
        vec![
            json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "word" } }),
            json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "xs" } }),
            json!({ "action": "run_model", "model": { "sessionId": id, "name": "double", "data": [1] } }),
            json!({ "action": "status", "sessionId": id }),
            json!({ "action": "list_files", "sessionId": id }),
            json!({ "action": "get_file", "sessionId": id, "path": "note.txt" }),
            json!({ "action": "stop", "sessionId": id }),
        ]
    };
    let unknown = "7f3e9a52-0c4b-4d1e-9a7b-2f6c8d0e1a3b";
    let mut bob = as_client(&server, BOB).await;
    for session in [&id, &running] {
        for (foreign, never) in asks(session).into_iter().zip(asks(unknown)) {
            bob.send(foreign.clone()).await;
            let foreign_reply = bob.recv().await;
            bob.send(never).await;
            let unknown_reply = bob.recv().await;
            assert_eq!(foreign_reply["code"], "unknown_session", "{foreign}: {foreign_reply}");
            assert_eq!(without_id(&foreign_reply, session), without_id(&unknown_reply, unknown), "{foreign}");
        }
    }
    // Bob's stop stopped nothing; Alice's does.
    alice.send(json!({ "action": "status", "sessionId": running })).await;
    assert_eq!(alice.recv().await["status"], "running");
    alice.send(json!({ "action": "stop", "sessionId": running })).await;
    let mut skipped = Vec::new();
    let stopped = alice.recv_until(|m| m["action"] == "stop", &mut skipped).await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");

    // DIRECT mode: Bob can neither switch Alice's session nor open its socket.
    let set_mode = |token: &str, uuid: &str| {
        let (body, auth) = (json!({ "uuid": uuid, "new_state": "DIRECT" }).to_string(), format!("Bearer {token}"));
        let server = &server;
        async move {
            common::server::http_with(server, "PUT", "/v1/cluster/set_mode", Some(&body), &[("authorization", &auth)])
                .await
        }
    };
    let (status, foreign) = set_mode(BOB, &id).await;
    let (never_status, never) = set_mode(BOB, unknown).await;
    assert_eq!((status, never_status), (404, 404), "{foreign}");
    assert_eq!(without_id(&foreign, &id), without_id(&never, unknown));
    assert_eq!(set_mode(ALICE, &id).await.0, 200);
    let direct_socket = |token: &'static str, uuid: String| {
        let server = &server;
        async move {
            let mut socket = Client::connect(&server.ws_url("/")).await;
            socket.send(json!({ "token": token, "target": "cluster", "uuid": uuid })).await;
            socket.recv().await
        }
    };
    let refused = direct_socket(BOB, id.clone()).await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    assert_eq!(refused, direct_socket(BOB, unknown.to_string()).await);
    assert_eq!(direct_socket(ALICE, id.clone()).await["success"], true);

    // Alice still has it all, and so it is after a restart (from the store).
    alice.send(asks(&id)[0].clone()).await;
    let word = alice.recv_until(|m| m["action"] == "get_placeholder", &mut skipped).await;
    assert_eq!(word["value"], "secret", "{word}");
    drop((alice, bob));
    server.terminate();
    let server = Server::start_in(data.path(), &[], &tokens);
    let mut bob = as_client(&server, BOB).await;
    bob.send(asks(&id)[0].clone()).await;
    let foreign = bob.recv().await;
    assert_eq!(foreign["code"], "unknown_session", "{foreign}");
    let mut alice = as_client(&server, ALICE).await;
    alice.send(asks(&id)[0].clone()).await;
    assert_eq!(alice.recv().await["value"], "secret");
}
