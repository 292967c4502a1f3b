//! The datasets face (seed 003) over a real server: REST create / finalise /
//! list / delete / progress, chunked uploads over WebSocket, the files read
//! back from inside Python and JavaScript sessions at `/data`, and what
//! survives a restart or a `kill -9`.

mod common;

use std::time::Duration;

use common::server::{Client, Server, http, run_action};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CHUNK: usize = 64 << 10;

/// A CSV of `rows` numeric rows under a header; a little over 20 bytes a row.
fn csv(rows: usize) -> Vec<u8> {
    let mut text = String::from("id,double,mod7,label\n");
    for i in 0..rows {
        text.push_str(&format!("{i},{},{},{}\n", i * 2, i % 7, if i % 3 == 0 { 1.5 } else { 0.25 }));
    }
    text.into_bytes()
}

/// Bytes that are not text, for the two-file form.
fn binary(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x01000193))
}

/// 0..n in a fixed shuffled order.
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    order
}

fn frame(position: u64, bytes: &[u8]) -> Vec<u8> {
    let mut frame = position.to_le_bytes().to_vec();
    frame.extend_from_slice(bytes);
    frame
}

async fn create(server: &Server, kind: &str, body: Value) -> Value {
    let (status, reply) = http(server, "POST", &format!("/v1/{kind}/dataset"), Some(&body.to_string())).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Opens an upload socket for one file.
async fn upload_socket(server: &Server, file: &str) -> Client {
    let mut socket = Client::connect(&server.ws_url("/")).await;
    socket.send(json!({ "token": "", "uuid": file, "target": "file_upload", "framing": "raw" })).await;
    let hello = socket.recv().await;
    assert_eq!(hello["success"], true, "{hello}");
    socket
}

async fn send_chunk(socket: &mut Client, position: u64, bytes: &[u8]) -> Value {
    socket.send_binary(frame(position, bytes)).await;
    socket.recv().await
}

/// Sends the chunks of `content` whose index `pick` keeps, in a shuffled order,
/// sending every fifth one twice; checks each acknowledgement.
async fn upload(socket: &mut Client, content: &[u8], seed: u64, pick: impl Fn(usize) -> bool) {
    let count = content.len().div_ceil(CHUNK);
    for (n, i) in shuffled(count, seed).into_iter().filter(|&i| pick(i)).enumerate() {
        let start = i * CHUNK;
        let bytes = &content[start..(start + CHUNK).min(content.len())];
        let ack = send_chunk(socket, start as u64, bytes).await;
        assert_eq!((ack["success"].clone(), ack["duplicate"].clone()), (json!(true), json!(false)), "{ack}");
        assert_eq!((ack["position"].as_u64(), ack["length"].as_u64()), (Some(start as u64), Some(bytes.len() as u64)));
        if n % 5 == 0 {
            let again = send_chunk(socket, start as u64, bytes).await;
            assert_eq!((again["success"].clone(), again["duplicate"].clone()), (json!(true), json!(true)), "{again}");
            assert_eq!(again["received"], ack["received"], "a retransmit counts once");
        }
    }
}

async fn progress(server: &Server, uuid: &str) -> Value {
    let (status, reply) = http(server, "GET", &format!("/v1/dataset/progress?uuid={uuid}"), None).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Runs one file of `language` on the actions face; returns its stdout (and
/// checks it exited 0).
async fn run(server: &Server, language: &str, code: &str) -> String {
    let mut client = Client::connect(&server.ws_url("/")).await;
    let main = if language == "python" { "main.py" } else { "main.js" };
    let request = json!({ "action": "run", language: { "files": [{ "filename": main, "content": code }] } });
    let (_, stdout, finished) = run_action(&mut client, request).await;
    assert_eq!(finished["exitCode"], 0, "{finished}\n{stdout}");
    stdout
}

const PY_READ: &str = r#"
import csv, hashlib, os, sys
path = sys.argv[1] if len(sys.argv) > 1 else '/data/numbers.csv'
data = open(path, 'rb').read()
print(len(data), hashlib.sha256(data).hexdigest())
with open(path, newline='') as f:
    rows = list(csv.reader(f))
print(len(rows), rows[0], rows[-1])
print(sorted(os.listdir('/data')))
"#;

const JS_READ: &str = r#"
const fs = require('fs');
const bytes = fs.readFileSync('/data/numbers.csv');
let h = 0x811c9dc5;
for (const b of bytes) { h ^= b; h = Math.imul(h, 0x01000193) >>> 0; }
const text = fs.readFileSync('/data/numbers.csv', 'utf8');
const lines = text.trim().split('\n');
console.log(bytes.length, h, lines.length, lines[lines.length - 1], JSON.stringify(fs.readdirSync('/data').sort()));
"#;

#[tokio::test]
async fn a_csv_uploaded_in_shuffled_chunks_reads_back_byte_exact_in_python_and_javascript() {
    let server = Server::start(&[]);
    let content = csv(60_000);
    assert!(content.len() > 15 * CHUNK);
    let created = create(&server, "csv", json!({ "name": "numbers", "input_data_size": content.len() })).await;
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    assert!(created.get("uuid_label_file").is_none(), "{created}");

    let mut socket = upload_socket(&server, file).await;
    upload(&mut socket, &content, 7, |_| true).await;
    let done = progress(&server, uuid).await;
    assert_eq!((done["complete"].clone(), done["files"][0]["missing"].clone()), (json!(true), json!([])), "{done}");

    let (status, ready) =
        http(&server, "PUT", "/v1/csv/dataset", Some(&json!({ "uuid": uuid, "uuid_input_file": file }).to_string()))
            .await;
    assert_eq!(
        (status, ready["state"].clone(), ready["paths"].clone()),
        (200, json!("ready"), json!(["/data/numbers.csv"]))
    );
    let (_, listed) = http(&server, "GET", "/v1/dataset", None).await;
    assert_eq!(listed["datasets"][0]["name"], "numbers", "{listed}");

    let last = String::from_utf8_lossy(&content).lines().last().unwrap().to_string();
    let py = run(&server, "python", PY_READ).await;
    let expected_rows: Vec<String> = last.split(',').map(|c| format!("'{c}'")).collect();
    assert_eq!(
        py,
        format!(
            "{} {}\n60001 ['id', 'double', 'mod7', 'label'] [{}]\n['numbers.csv']\n",
            content.len(),
            sha256(&content),
            expected_rows.join(", ")
        )
    );
    let js = run(&server, "javascript", JS_READ).await;
    assert_eq!(js, format!("{} {} 60001 {last} [\"numbers.csv\"]\n", content.len(), fnv1a(&content)));
}

#[tokio::test]
async fn run_model_reads_its_input_from_a_dataset_path() {
    let server = Server::start(&[]);
    let content = b"x,y\n1,2\n3,4.5\n10,-1\n".to_vec();
    let created = create(&server, "csv", json!({ "name": "points", "input_data_size": content.len() })).await;
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    let mut socket = upload_socket(&server, file).await;
    assert_eq!(send_chunk(&mut socket, 0, &content).await["complete"], true);
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    assert_eq!(http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);

    let mut client = Client::connect(&server.ws_url("/")).await;
    let code = "import sandlot\nsandlot.save_model('sums', lambda rows: [sum(r) for r in rows])";
    let request = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": code }] } });
    let (id, _, _) = run_action(&mut client, request).await;
    let ask = |data: &str| json!({ "action": "run_model", "model": { "sessionId": id, "name": "sums", "is_data": false, "data": data } });
    client.send(ask("/data/points.csv")).await;
    let reply = client.recv().await;
    assert_eq!(reply["prediction"], json!([3, 7.5, 9]), "the header row is skipped: {reply}");
    for path in ["/data/../state.redb", "/data/nope.csv", "/etc/passwd", "/data/points.csv/../../uploads"] {
        client.send(ask(path)).await;
        let reply = client.recv().await;
        assert_eq!(reply["code"], "not_found", "{path}: {reply}");
    }
}

#[tokio::test]
async fn a_two_file_dataset_mounts_its_input_and_label() {
    let server = Server::start(&[]);
    let (input, label) = (binary(300_000, 1), binary(70_000, 2));
    let created = create(
        &server,
        "mnist",
        json!({ "name": "digits", "input_data_size": input.len(), "label_data_size": label.len() }),
    )
    .await;
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let input_file = created["uuid_input_file"].as_str().unwrap().to_string();
    let label_file = created["uuid_label_file"].as_str().unwrap().to_string();
    // Both files at once, on two sockets, as the seed's client does.
    let (mut a, mut b) = (upload_socket(&server, &input_file).await, upload_socket(&server, &label_file).await);
    tokio::join!(upload(&mut a, &input, 3, |_| true), upload(&mut b, &label, 5, |_| true));

    let body = json!({ "uuid": uuid, "uuid_input_file": input_file, "uuid_label_file": label_file }).to_string();
    let (status, ready) = http(&server, "PUT", "/v1/mnist/dataset", Some(&body)).await;
    assert_eq!((status, ready["paths"].clone()), (200, json!(["/data/digits/input", "/data/digits/label"])), "{ready}");
    let code = "import hashlib, os\n\
                for p in ['/data/digits/input', '/data/digits/label']:\n    \
                    d = open(p, 'rb').read()\n    print(len(d), hashlib.sha256(d).hexdigest())\n\
                print(sorted(os.listdir('/data/digits')))";
    let expected =
        format!("{} {}\n{} {}\n['input', 'label']\n", input.len(), sha256(&input), label.len(), sha256(&label));
    assert_eq!(run(&server, "python", code).await, expected);

    // Deleted, it is gone from the list and from new sessions.
    let (status, _) = http(&server, "DELETE", &format!("/v1/dataset?uuid={uuid}"), None).await;
    assert_eq!(status, 200);
    let (_, listed) = http(&server, "GET", "/v1/dataset", None).await;
    assert_eq!(listed["datasets"], json!([]));
    let gone = run(&server, "python", "import os\nprint(os.path.exists('/data/digits'), os.listdir('/data'))").await;
    assert_eq!(gone, "False []\n");
}

#[tokio::test]
async fn malformed_uploads_get_clear_errors_and_the_socket_stays_up() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("sandlot.toml");
    std::fs::write(&config, "max_dataset_file_mib = 1\n").unwrap();
    let server = Server::start_in(&data.path().join("state"), &["--config", config.to_str().unwrap()], &[]);

    // Creating.
    let cases = [
        (json!({ "name": "../escape", "input_data_size": 10 }), 400, "invalid dataset name"),
        (json!({ "name": "", "input_data_size": 10 }), 400, "invalid dataset name"),
        (json!({ "name": "ok" }), 400, "input_data_size"),
        (json!({ "name": "ok", "input_data_size": 0 }), 400, "at least one byte"),
        (json!({ "name": "ok", "input_data_size": 2 << 20 }), 413, "over this server's limit"),
        (json!({ "name": "ok", "input_data_size": -5 }), 400, "input_data_size"),
    ];
    for (body, status, message) in cases {
        let (got, reply) = http(&server, "POST", "/v1/csv/dataset", Some(&body.to_string())).await;
        assert_eq!(got, status, "{body} -> {reply}");
        assert!(reply["error"].as_str().unwrap().contains(message), "{body} -> {reply}");
    }
    let (status, reply) = http(&server, "POST", "/v1/csv/dataset", Some("{not json")).await;
    assert_eq!((status, reply["reason"].clone()), (400, json!("bad_request")), "{reply}");
    let size = 100_000usize;
    let created = create(&server, "csv", json!({ "name": "ok", "input_data_size": size })).await;
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    let (status, reply) =
        http(&server, "POST", "/v1/csv/dataset", Some(&json!({ "name": "ok", "input_data_size": 5 }).to_string()))
            .await;
    assert_eq!((status, reply["reason"].clone()), (409, json!("conflict")), "{reply}");

    // Opening an upload.
    for (first, code) in [
        (json!({ "uuid": "no-such-file", "target": "file_upload" }), "not_found"),
        (json!({ "uuid": uuid, "target": "file_upload" }), "not_found"),
        (json!({ "target": "file_upload" }), "bad_request"),
    ] {
        let mut socket = Client::connect(&server.ws_url("/")).await;
        socket.send(first.clone()).await;
        let reply = socket.recv().await;
        assert_eq!(
            (reply["success"].clone(), reply["code"].clone()),
            (json!(false), json!(code)),
            "{first} -> {reply}"
        );
        assert!(socket.closed_within(Duration::from_secs(5)).await);
    }
    let mut socket = Client::connect(&server.ws_url("/")).await;
    socket.send(json!({ "uuid": file, "target": "printer" })).await;
    assert!(socket.recv().await["error"].as_str().unwrap().contains("unknown target"));

    // Chunks: every bad one is refused with a reason, and the socket goes on.
    let mut socket = upload_socket(&server, file).await;
    let content = binary(size, 9);
    assert_eq!(send_chunk(&mut socket, 1000, &content[1000..3000]).await["success"], true);
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "bad_request"),
        (frame(0, &[]), "bad_request"),
        (frame(size as u64 - 10, &content[..20]), "out_of_range"),
        (frame(u64::MAX - 2, &content[..20]), "out_of_range"),
        (frame(500, &content[500..1500]), "overlap"),
        (frame(2000, &content[2000..2500]), "overlap"),
        (frame(1000, &content[1000..2000]), "overlap"),
        (frame(0, &vec![0; (1 << 20) + 1]), "too_large"),
    ];
    for (frame, code) in bad {
        socket.send_binary(frame).await;
        let reply = socket.recv().await;
        assert_eq!((reply["success"].clone(), reply["code"].clone()), (json!(false), json!(code)), "{reply}");
        assert!(reply["error"].as_str().unwrap().len() > 20, "{reply}");
    }
    socket.send(json!({ "oops": "text" })).await;
    assert_eq!(socket.recv().await["code"], "bad_request");
    let (_, half) = http(&server, "GET", &format!("/v1/dataset/progress?uuid={uuid}"), None).await;
    assert_eq!(half["files"][0]["received"], 2000);
    assert_eq!(half["files"][0]["missing"], json!([[0, 1000], [3000, size]]));

    // Finalising too early, or with the wrong uuids or kind.
    let finalise = |body: Value, kind: &str| {
        let server = &server;
        let path = format!("/v1/{kind}/dataset");
        async move { http(server, "PUT", &path, Some(&body.to_string())).await }
    };
    let (status, reply) = finalise(json!({ "uuid": uuid, "uuid_input_file": file }), "csv").await;
    assert_eq!((status, reply["reason"].clone()), (409, json!("incomplete")), "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("missing 0..1000, 3000..100000"), "{reply}");
    let (status, reply) = finalise(json!({ "uuid": uuid, "uuid_input_file": uuid }), "csv").await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) =
        finalise(json!({ "uuid": uuid, "uuid_input_file": file, "uuid_label_file": file }), "mnist").await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = finalise(json!({ "uuid": "nope", "uuid_input_file": file }), "csv").await;
    assert_eq!(status, 404);
    assert_eq!(http(&server, "GET", "/v1/dataset/progress?uuid=nope", None).await.0, 404);
    assert_eq!(http(&server, "GET", "/v1/dataset/progress", None).await.0, 400);

    // Completed and finalised, the file takes no more chunks.
    assert_eq!(send_chunk(&mut socket, 0, &content[..1000]).await["success"], true);
    let ack = send_chunk(&mut socket, 3000, &content[3000..]).await;
    assert_eq!(ack["complete"], true, "{ack}");
    assert_eq!(finalise(json!({ "uuid": uuid, "uuid_input_file": file }), "csv").await.0, 200);
    let reply = send_chunk(&mut socket, 0, &content[..10]).await;
    assert_eq!((reply["success"].clone(), reply["code"].clone()), (json!(false), json!("conflict")), "{reply}");
    let sum =
        run(&server, "python", "import hashlib\nprint(hashlib.sha256(open('/data/ok.csv','rb').read()).hexdigest())")
            .await;
    assert_eq!(sum.trim(), sha256(&content));
}

#[tokio::test]
async fn sessions_cannot_write_to_or_escape_data() {
    let server = Server::start(&[]);
    let created = create(&server, "csv", json!({ "name": "fixed", "input_data_size": 4 })).await;
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    send_chunk(&mut upload_socket(&server, file).await, 0, b"a,b\n").await;
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    assert_eq!(http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);

    let py = r#"
import os, shutil
attempts = {
    'write': lambda: open('/data/fixed.csv', 'w').write('x'),
    'append': lambda: open('/data/fixed.csv', 'a').write('x'),
    'create': lambda: open('/data/new.csv', 'w').write('x'),
    'remove': lambda: os.remove('/data/fixed.csv'),
    'rename': lambda: os.rename('/data/fixed.csv', '/data/moved.csv'),
    'mkdir': lambda: os.mkdir('/data/sub'),
    'parent': lambda: open('/data/../state.redb', 'rb').read(),
    'uploads': lambda: os.listdir('/data/../uploads'),
    'etc': lambda: open('/etc/passwd').read(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, 'ALLOWED')
    except OSError as e:
        print(name, 'refused')
print(open('/data/fixed.csv').read().strip(), sorted(os.listdir('/data')))
"#;
    let out = run(&server, "python", py).await;
    assert!(!out.contains("ALLOWED"), "{out}");
    assert!(out.ends_with("a,b ['fixed.csv']\n"), "{out}");

    let js = r#"
const fs = require('fs');
const tries = {
  write: () => fs.writeFileSync('/data/fixed.csv', 'x'),
  append: () => fs.appendFileSync('/data/fixed.csv', 'x'),
  create: () => fs.writeFileSync('/data/new.csv', 'x'),
  parent: () => fs.readFileSync('/data/../state.redb'),
  etc: () => fs.readFileSync('/etc/passwd'),
};
for (const [name, attempt] of Object.entries(tries)) {
  try { attempt(); console.log(name, 'ALLOWED'); } catch (e) { console.log(name, 'refused', e.code); }
}
console.log(fs.readFileSync('/data/fixed.csv', 'utf8').trim(), fs.existsSync('/data/fixed.csv'), fs.existsSync('/data/nope'));
"#;
    let out = run(&server, "javascript", js).await;
    assert!(!out.contains("ALLOWED"), "{out}");
    assert!(out.ends_with("a,b true false\n"), "{out}");
}

#[tokio::test]
async fn an_upload_resumes_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[]);
    let content = csv(20_000);
    let created = create(&server, "csv", json!({ "name": "resumed", "input_data_size": content.len() })).await;
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let file = created["uuid_input_file"].as_str().unwrap().to_string();
    let mut socket = upload_socket(&server, &file).await;
    upload(&mut socket, &content, 11, |i| i % 2 == 0).await;
    drop(socket);
    server.terminate();

    // A real restart: a new process on the same data folder.
    let server = Server::start_in(data.path(), &[], &[]);
    let half = progress(&server, &uuid).await;
    assert_eq!(half["complete"], false);
    let count = content.len().div_ceil(CHUNK);
    let expected_missing: Vec<Value> =
        (0..count).filter(|i| i % 2 == 1).map(|i| json!([i * CHUNK, ((i + 1) * CHUNK).min(content.len())])).collect();
    assert_eq!(half["files"][0]["missing"], json!(expected_missing), "{half}");

    let mut socket = upload_socket(&server, &file).await;
    upload(&mut socket, &content, 13, |i| i % 2 == 1).await;
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    assert_eq!(http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);
    let py = run(&server, "python", &PY_READ.replace("numbers.csv", "resumed.csv")).await;
    assert!(py.starts_with(&format!("{} {}\n", content.len(), sha256(&content))), "{py}");
    server.terminate();

    // Finalised datasets stay listed and mounted across restarts too.
    let server = Server::start_in(data.path(), &[], &[]);
    let (_, listed) = http(&server, "GET", "/v1/dataset", None).await;
    assert_eq!(
        (listed["datasets"][0]["name"].clone(), listed["datasets"][0]["state"].clone()),
        (json!("resumed"), json!("ready"))
    );
    let js = run(&server, "javascript", &JS_READ.replace("numbers.csv", "resumed.csv")).await;
    assert!(js.starts_with(&format!("{} {} ", content.len(), fnv1a(&content))), "{js}");
}

#[tokio::test]
async fn acknowledged_chunks_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[]);
    let content = binary(40 * CHUNK + 123, 4);
    let created = create(&server, "csv", json!({ "name": "crashy", "input_data_size": content.len() })).await;
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let file = created["uuid_input_file"].as_str().unwrap().to_string();
    let mut socket = upload_socket(&server, &file).await;
    let order = shuffled(content.len().div_ceil(CHUNK), 17);
    let (acked, rest) = order.split_at(25);
    upload(&mut socket, &content, 17, |i| acked.contains(&i)).await;
    // Chunks in flight when the process dies: sent, never acknowledged.
    for &i in &rest[..5] {
        let start = i * CHUNK;
        socket.send_binary(frame(start as u64, &content[start..(start + CHUNK).min(content.len())])).await;
    }
    server.kill9();

    let server = Server::start_in(data.path(), &[], &[]);
    let after = progress(&server, &uuid).await;
    let missing: Vec<(u64, u64)> = after["files"][0]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    for &i in acked {
        let start = (i * CHUNK) as u64;
        assert!(!missing.iter().any(|&(a, b)| a <= start && start < b), "acknowledged chunk {i} was lost: {after}");
    }
    // Send whatever is missing (the in-flight chunks may or may not have landed), then check every byte.
    let mut socket = upload_socket(&server, &file).await;
    for (a, b) in missing {
        for start in (a..b).step_by(CHUNK) {
            let end = (start + CHUNK as u64).min(b);
            let ack = send_chunk(&mut socket, start, &content[start as usize..end as usize]).await;
            assert_eq!(ack["success"], true, "{ack}");
        }
    }
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    assert_eq!(http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);
    let sum = run(
        &server,
        "python",
        "import hashlib\nprint(hashlib.sha256(open('/data/crashy.csv','rb').read()).hexdigest())",
    )
    .await;
    assert_eq!(sum.trim(), sha256(&content));
}

#[tokio::test]
async fn finished_runs_answer_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    let code = "import sandlot\n\
                sandlot.set_placeholder('scores', [1, 2, 3, 4, 10])\n\
                sandlot.set_placeholder('TrainX', [{'a': 1, 'b': 10}, {'a': 3, 'b': 30}])\n\
                sandlot.save_model('double', lambda xs: [2 * x for x in xs])\n\
                print('trained')";
    let request = json!({ "action": "run", "python": { "files": [{ "filename": "train.py", "content": code }] } });
    let (id, stdout, finished) = run_action(&mut client, request).await;
    assert_eq!((stdout.as_str(), finished["status"].clone()), ("trained\n", json!("finished")));
    client.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "scores" } })).await;
    let stats_before = client.recv().await["stats"].clone();
    drop(client);
    server.terminate();

    let server = Server::start_in(data.path(), &[], &[]);
    let mut client = Client::connect(&server.ws_url("/")).await;
    client.send(json!({ "action": "status", "sessionId": id })).await;
    let status = client.recv().await;
    assert_eq!(
        (status["status"].clone(), status["exitCode"].clone(), status["live"].clone(), status["language"].clone()),
        (json!("finished"), json!(0), json!(false), json!("python")),
        "{status}"
    );
    assert_eq!(status["exectimems"], finished["exectimems"]);
    client.send(json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "TrainX" } })).await;
    assert_eq!(client.recv().await["value"], json!([{ "a": 1, "b": 10 }, { "a": 3, "b": 30 }]));
    client.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "scores" } })).await;
    let stats = client.recv().await["stats"].clone();
    assert_eq!(stats, stats_before);
    assert_eq!(
        (stats["count"].clone(), stats["mean"].clone(), stats["max"].clone()),
        (json!(5), json!(4.0), json!(10.0)),
        "{stats}"
    );
    client.send(json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "TrainX" } })).await;
    assert_eq!(client.recv().await["stats"]["b"]["mean"], json!(20.0));
    client.send(json!({ "action": "run_model", "model": { "sessionId": id, "name": "double", "data": [1] } })).await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "session_ended", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("run the program again"), "{reply}");
}

const TOKENS: &[(&str, &str)] = &[("SANDLOT_TOKENS", "alpha-token-1234, beta-token-5678")];

#[tokio::test]
async fn tokens_are_required_refused_and_accepted_on_every_face() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server = Server::start_logged(&data.path().join("state"), &[], TOKENS, &log);
    use common::server::http_with;

    // REST: every route.
    for (method, path, body) in [
        ("GET", "/v1/info", None),
        ("GET", "/v1/spec", None),
        ("POST", "/v1/exec", Some(json!({ "language": "python", "code": "print(1)" }).to_string())),
        ("GET", "/v1/dataset", None),
        ("POST", "/v1/csv/dataset", Some(json!({ "name": "t", "input_data_size": 3 }).to_string())),
    ] {
        let (status, reply) = http(&server, method, path, body.as_deref()).await;
        assert_eq!(status, 401, "{path} without a token: {reply}");
        assert!(reply["error"].as_str().unwrap().contains("Authorization: Bearer"), "{reply}");
        let wrong = [("authorization", "Bearer alpha-token-123")];
        let (status, reply) = http_with(&server, method, path, body.as_deref(), &wrong).await;
        assert_eq!(status, 401, "{path} with a wrong token: {reply}");
        let right = [("authorization", "Bearer beta-token-5678")];
        let (status, reply) = http_with(&server, method, path, body.as_deref(), &right).await;
        assert_eq!(status, 200, "{path} with a token: {reply}");
    }

    // Sockets: the first message carries the token.
    type Refused = Box<dyn Fn(&Value) -> bool>;
    let faces: [(&str, Value, Refused); 3] = [
        ("/", json!({ "action": "status", "sessionId": "1" }), Box::new(|r: &Value| r["code"] == "unauthorized")),
        ("/v1/ws", json!({ "op": 0 }), Box::new(|r: &Value| r["code"] == 1)),
        (
            "/processor",
            json!({ "type": "context", "language": "python", "context": {} }),
            Box::new(|r: &Value| r["code"] == "UNAUTHORIZED"),
        ),
    ];
    for (path, first, refused) in &faces {
        for token in [None, Some("nope")] {
            let mut socket = Client::connect(&server.ws_url(path)).await;
            let mut message = first.clone();
            if let Some(token) = token {
                message["token"] = json!(token);
            }
            socket.send(message).await;
            let mut seen = Vec::new();
            let reply = socket.recv_until(|r| r.get("code").is_some() && r["type"] != "ready", &mut seen).await;
            assert!(refused(&reply), "{path} {token:?}: {reply}");
            assert!(socket.closed_within(Duration::from_secs(5)).await, "{path} closes after refusing");
        }
    }
    let mut socket = Client::connect(&server.ws_url("/")).await;
    socket
        .send(json!({ "token": "alpha-token-1234", "action": "run", "python": { "files": [{ "filename": "a.py", "content": "print(6*7)" }] } }))
        .await;
    assert!(socket.recv().await["sessionId"].is_string());
    let mut ranna = Client::connect(&server.ws_url("/v1/ws")).await;
    ranna.send(json!({ "op": 0, "token": "alpha-token-1234" })).await;
    assert_eq!(ranna.recv().await["code"], 0, "PONG");
    let mut processor = Client::connect(&server.ws_url("/processor")).await;
    processor.send(json!({ "type": "context", "language": "python", "context": {}, "token": "beta-token-5678" })).await;
    let mut seen = Vec::new();
    let wants_code = |r: &Value| r["message"].as_str().is_some_and(|m| m.contains("send the code"));
    processor.recv_until(wants_code, &mut seen).await;
    assert!(seen.iter().all(|r| r["type"] == "ready"), "{seen:?}");
    let mut upload = Client::connect(&server.ws_url("/")).await;
    upload.send(json!({ "token": "wrong", "uuid": "x", "target": "file_upload" })).await;
    assert_eq!(upload.recv().await["code"], "unauthorized");

    // The log says what was refused, never the token given.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("refused"), "{log}");
    for secret in ["alpha-token", "beta-token", "nope"] {
        assert!(!log.contains(secret), "the log shows a token: {log}");
    }
}

#[test]
fn the_server_refuses_to_listen_beyond_loopback_without_a_token() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .env_remove("SANDLOT_TOKENS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without a token"), "{stderr}");
    // With a token it starts.
    let server = Server::start_in(data.path(), &["--listen", "0.0.0.0:0"], TOKENS);
    assert!(server.address.starts_with("0.0.0.0:"), "{}", server.address);
}

/// Hanami's Python SDK (`hanami_sdk/dataset.py`, `hanami_request.py`), as it
/// is: routes under `/control/v1`, the token as `X-Auth-Token`, JSON bodies
/// from `json.dumps` with no Content-Type, the upload socket at `/` with
/// 128 KiB chunks as protobuf `FileUpload_Message`s, one reply awaited per
/// chunk, then progress polled until complete, then finalised.
mod hanami_sdk {
    use super::*;
    use common::server::http_with;
    use prost::Message as _;

    /// `FileUpload_Message`, as protoc generates it for the SDK.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileUploadMessage {
        #[prost(uint64, tag = "1")]
        position: u64,
        #[prost(bytes = "vec", tag = "2")]
        data: Vec<u8>,
    }

    /// `FileUploadResponse_Message`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileUploadResponse {
        #[prost(bool, tag = "1")]
        success: bool,
        #[prost(string, tag = "2")]
        error_message: String,
    }

    const TOKEN: &str = "hanami-sdk-token";
    const SDK_CHUNK: usize = 128 * 1024;

    /// `send_*_request`: only `X-Auth-Token`; no Content-Type at all.
    async fn sdk(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        http_with(server, method, path, body, &[("x-auth-token", TOKEN), ("content-type", "")]).await
    }

    /// `send_data`: the first message, then every chunk and its reply.
    async fn send_data(server: &Server, file: &str, data: &[u8]) {
        let mut socket = Client::connect(&server.ws_url("")).await;
        socket.send_text(&format!(r#"{{"token": "{TOKEN}", "target": "file_upload", "uuid": "{file}"}}"#)).await;
        assert_eq!(socket.recv().await["success"], true);
        for (i, chunk) in data.chunks(SDK_CHUNK).enumerate() {
            let message = FileUploadMessage { position: (i * SDK_CHUNK) as u64, data: chunk.to_vec() };
            socket.send_binary(message.encode_to_vec()).await;
            let reply = socket.recv_binary().await;
            let reply = FileUploadResponse::decode(reply.as_slice()).expect("a FileUploadResponse_Message");
            assert!(reply.success, "{}", reply.error_message);
        }
    }

    async fn wait_until_upload_complete(server: &Server, uuid: &str) {
        for _ in 0..100 {
            let (status, progress) =
                sdk(server, "GET", &format!("/control/v1/dataset/progress?uuid={uuid}"), None).await;
            assert_eq!(status, 200, "{progress}");
            if progress["complete"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the upload never completed");
    }

    #[tokio::test]
    async fn upload_csv_and_mnist_files_as_the_sdk_does() {
        let data = tempfile::tempdir().unwrap();
        let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", TOKEN)]);

        // upload_csv_files
        let content = csv(20_000);
        let body = format!(r#"{{"name": "iris", "input_data_size": {}}}"#, content.len());
        let (status, created) = sdk(&server, "POST", "/control/v1/csv/dataset", Some(&body)).await;
        assert_eq!(status, 200, "{created}");
        let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
        send_data(&server, file, &content).await;
        wait_until_upload_complete(&server, uuid).await;
        let body = format!(r#"{{"uuid": "{uuid}", "uuid_input_file": "{file}"}}"#);
        let (status, finalised) = sdk(&server, "PUT", "/control/v1/csv/dataset", Some(&body)).await;
        assert_eq!(status, 200, "{finalised}");
        assert_eq!(sha256(&std::fs::read(data.path().join("datasets/iris.csv")).unwrap()), sha256(&content));

        // upload_mnist_files
        let (input, label) = (binary_content(300_000, 1), binary_content(70_000, 2));
        let body =
            format!(r#"{{"name": "digits", "input_data_size": {}, "label_data_size": {}}}"#, input.len(), label.len());
        let (status, created) = sdk(&server, "POST", "/control/v1/mnist/dataset", Some(&body)).await;
        assert_eq!(status, 200, "{created}");
        let uuid = created["uuid"].as_str().unwrap();
        let (input_file, label_file) =
            (created["uuid_input_file"].as_str().unwrap(), created["uuid_label_file"].as_str().unwrap());
        send_data(&server, input_file, &input).await;
        send_data(&server, label_file, &label).await;
        wait_until_upload_complete(&server, uuid).await;
        let body =
            format!(r#"{{"uuid": "{uuid}", "uuid_input_file": "{input_file}", "uuid_label_file": "{label_file}"}}"#);
        assert_eq!(sdk(&server, "PUT", "/control/v1/mnist/dataset", Some(&body)).await.0, 200);
        assert_eq!(std::fs::read(data.path().join("datasets/digits/label")).unwrap(), label);

        // list_datasets, get_dataset, delete_dataset
        let (status, all) = sdk(&server, "GET", "/control/v1/dataset/all", None).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = all["datasets"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
        assert_eq!(names, ["iris", "digits"]);
        let (status, one) = sdk(&server, "GET", &format!("/control/v1/dataset?uuid={uuid}"), None).await;
        assert_eq!((status, one["name"].as_str()), (200, Some("digits")), "{one}");
        assert_eq!(sdk(&server, "DELETE", &format!("/control/v1/dataset?uuid={uuid}"), None).await.0, 200);
        let (status, _) = sdk(&server, "GET", &format!("/control/v1/dataset?uuid={uuid}"), None).await;
        assert_eq!(status, 404);

        // Without the token, the SDK's requests are refused.
        let (status, _) = http_with(&server, "GET", "/control/v1/dataset/all", None, &[("content-type", "")]).await;
        assert_eq!(status, 401);
    }

    fn binary_content(len: usize, seed: u8) -> Vec<u8> {
        super::binary(len, seed)
    }

    #[tokio::test]
    async fn bad_frames_get_an_unsuccessful_response_and_the_socket_stays_up() {
        let server = Server::start(&[]);
        let body = r#"{"name": "frames", "input_data_size": 4}"#;
        let (_, created) =
            http_with(&server, "POST", "/control/v1/csv/dataset", Some(body), &[("content-type", "")]).await;
        let file = created["uuid_input_file"].as_str().unwrap();
        let mut socket = Client::connect(&server.ws_url("")).await;
        socket.send_text(&format!(r#"{{"target": "file_upload", "uuid": "{file}"}}"#)).await;
        assert_eq!(socket.recv().await["success"], true);
        // Garbage, a chunk past the end, and the direct-IO socket's ClusterIO_Message
        // {brickName: "x", isLast: true, values: [1.0]} (the wrong message for this target).
        let cluster_io = vec![0x0a, 1, b'x', 0x10, 1, 0x2a, 4, 0, 0, 0x80, 0x3f];
        let refusals: [Vec<u8>; 3] = [
            vec![0xff, 0xff, 0xff],
            FileUploadMessage { position: 2, data: b"long".to_vec() }.encode_to_vec(),
            cluster_io,
        ];
        for frame in refusals {
            socket.send_binary(frame).await;
            let reply = FileUploadResponse::decode(socket.recv_binary().await.as_slice()).unwrap();
            assert!(!reply.success && !reply.error_message.is_empty(), "{reply:?}");
        }
        socket.send_text("not a chunk").await;
        assert!(!FileUploadResponse::decode(socket.recv_binary().await.as_slice()).unwrap().success);
        socket.send_binary(FileUploadMessage { position: 0, data: b"1,2\n".to_vec() }.encode_to_vec()).await;
        assert!(FileUploadResponse::decode(socket.recv_binary().await.as_slice()).unwrap().success);
    }
}
