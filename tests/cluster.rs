//! Cluster mode against a real `nats-server -js` and real sandlot nodes:
//! a node with a core to spare runs its clients' one-shot runs itself;
//! runs queued at one node run on another with room, whole and in order; a KILL reaches them there; a node killed mid-run leaves its runs
//! `node-lost` and the cluster working; a run no node has room for times
//! out and is not run later; a session made through one node (actions or
//! MCP) is queried, used and stopped through another, and answered for
//! from the cluster's records once its node is gone; a dataset uploaded
//! through one node is read on the others and deleted everywhere (by a
//! node, not by a NATS client without the secret); records
//! and runs go on through a NATS restart; a node whose configuration
//! differs, or whose name is taken, is refused at start. A NATS client
//! without the cluster secret reads nothing, starts nothing and
//! impersonates no one; nodes join a NATS server that wants TLS and a
//! password, and warn of one that admits anyone; a node that stops
//! gracefully leaves its sessions answered from its records at once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::nats::Nats;
use common::server::{Client, Server, http, http_with, run_action};
use serde_json::{Value, json};

/// All of a test's nodes share these (a node whose limits differ is refused).
const SHARED: [&str; 4] = ["--timeout", "30", "--max-running-per-client", "16"];
/// The cluster secret of the tests' nodes.
const SECRET: &str = "the-cluster-secret-of-the-tests-0123456789";

fn node(nats: &Nats, name: &str, extra: &[&str]) -> Server {
    node_with(nats, name, extra, &[])
}

/// `node` with extra environment (the secret is `SECRET` unless given).
fn node_with(nats: &Nats, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let url = nats.url();
    let mut args = vec!["--cluster", url.as_str(), "--node-name", name];
    args.extend(SHARED);
    args.extend(extra);
    Server::start_env(&args, &with_secret(env))
}

fn with_secret<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = env.to_vec();
    if !env.iter().any(|(name, _)| *name == "SANDLOT_CLUSTER_SECRET") {
        env.push(("SANDLOT_CLUSTER_SECRET", SECRET));
    }
    env
}

/// A series of a node's `/metrics`, summed over the label sets that contain `labels`.
async fn metric(server: &Server, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = http(server, "GET", "/metrics", None).await;
    series(&body, name, labels)
}

/// `metric`, asked with a token.
async fn metric_as(server: &Server, token: &str, name: &str, labels: &[&str]) -> f64 {
    let bearer = format!("Bearer {token}");
    let (_, body) = http_with(server, "GET", "/metrics", None, &[("authorization", &bearer)]).await;
    series(&body, name, labels)
}

fn series(body: &Value, name: &str, labels: &[&str]) -> f64 {
    let text = body.as_str().expect("metrics are text").to_string();
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to `within` for `check` to hold.
async fn eventually<F: std::future::Future<Output = bool>>(within: Duration, mut check: impl FnMut() -> F) -> bool {
    let began = Instant::now();
    while began.elapsed() < within {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits until every node sees `count` nodes.
async fn joined(nodes: &[&Server], count: f64) {
    for node in nodes {
        let seen =
            eventually(Duration::from_secs(15), || async { metric(node, "sandlot_cluster_nodes", &[]).await == count });
        assert!(seen.await, "a node did not see {count} nodes");
    }
}

/// Sends a ranna EXEC and returns the run's id.
async fn exec(client: &mut Client, nonce: u64, args: Value) -> String {
    client.send(json!({ "op": 1, "nonce": nonce, "args": args })).await;
    loop {
        let event = client.recv_within(Duration::from_secs(30)).await;
        match event["code"].as_u64() {
            Some(2) if event["nonce"] == nonce => return event["data"]["runid"].as_str().unwrap().to_string(),
            Some(1) => panic!("refused: {event}"),
            _ => {}
        }
    }
}

/// Reads a run's LOG events to its STOP: (stdout, stderr, STOP data).
async fn follow(client: &mut Client, runid: &str, within: Duration) -> (String, String, Value) {
    follow_all(client, &[runid.to_string()], within).await.remove(runid).unwrap()
}

/// Reads the LOG events of the runs of one socket to their STOPs, by run.
async fn follow_all(
    client: &mut Client,
    runids: &[String],
    within: Duration,
) -> std::collections::HashMap<String, (String, String, Value)> {
    let mut runs: std::collections::HashMap<String, (String, String, Value)> =
        runids.iter().map(|id| (id.clone(), (String::new(), String::new(), Value::Null))).collect();
    let mut open = runids.len();
    while open > 0 {
        let event = client.recv_within(within).await;
        let Some(run) = event["data"]["runid"].as_str().and_then(|id| runs.get_mut(id)) else { continue };
        match event["code"].as_u64() {
            Some(3) => {
                run.0.push_str(event["data"]["stdout"].as_str().unwrap_or(""));
                run.1.push_str(event["data"]["stderr"].as_str().unwrap_or(""));
            }
            Some(4) => {
                run.2 = event["data"].clone();
                open -= 1;
            }
            _ => {}
        }
    }
    runs
}

/// Holds `server`'s only running slot with a run that waits for input
/// (runs with an open standard input run where their client is).
async fn hold_slot(server: &Server) -> Client {
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    exec(&mut client, 1, json!({ "language": "python", "code": "input()", "interactive": true })).await;
    let held = eventually(Duration::from_secs(10), || async {
        metric(server, "sandlot_sessions", &["state=\"running\""]).await == 1.0
    });
    assert!(held.await, "the interactive run did not start on its own node");
    client
}

/// Node a, whose one running slot is held (by the client returned), and
/// node b, free: runs queued at a run on b.
async fn full_and_free(nats: &Nats) -> (Server, Server, Client) {
    let a = node(nats, "a", &["--max-running", "1"]);
    let b = node(nats, "b", &[]);
    joined(&[&a, &b], 2.0).await;
    let holder = hold_slot(&a).await;
    (a, b, holder)
}

const PRINTS: &str = "import sys\nfor i in range(3000):\n    print('out', i)\n    if i % 100 == 0:\n        \
                      print('err', i, file=sys.stderr)\n";

fn expected_output() -> (String, String) {
    let stdout: String = (0..3000).map(|i| format!("out {i}\n")).collect();
    let stderr: String = (0..3000).step_by(100).map(|i| format!("err {i}\n")).collect();
    (stdout, stderr)
}

#[tokio::test]
async fn runs_queued_at_a_full_node_run_on_another_whole_and_in_order() {
    let nats = Nats::start();
    let (a, b, _holder) = full_and_free(&nats).await;

    let mut client = Client::connect(&a.ws_url("/v1/ws")).await;
    let mut runs = Vec::new();
    for nonce in 0..3 {
        runs.push(exec(&mut client, 10 + nonce, json!({ "language": "python", "code": PRINTS })).await);
    }
    let (want_out, want_err) = expected_output();
    for (stdout, stderr, stop) in follow_all(&mut client, &runs, Duration::from_secs(30)).await.into_values() {
        assert_eq!(stop["reason"], "exit", "{stop}");
        assert_eq!(stdout, want_out, "stdout whole and in order");
        assert_eq!(stderr, want_err, "stderr whole and in order");
    }
    // They ran on b: a counts only its own runs.
    let ran =
        |server| async move { metric(server, "sandlot_runs_total", &["face=\"ranna\"", "reason=\"exit\""]).await };
    assert_eq!(ran(&b).await, 3.0);
    assert_eq!(ran(&a).await, 0.0);

    // The REST face goes through the cluster too.
    let body = json!({ "language": "python", "code": "print(6 * 7)" }).to_string();
    let (status, answer) = http(&a, "POST", "/v1/exec", Some(&body)).await;
    assert_eq!((status, answer["stdout"].as_str()), (200, Some("42\n")), "{answer}");
    assert_eq!(ran(&b).await, 4.0);

    // /readyz shows the cluster as this node sees it.
    let (_, ready) = http(&a, "GET", "/readyz", None).await;
    assert_eq!(ready["cluster"]["node"], "a", "{ready}");
    assert_eq!(ready["cluster"]["nodes"], 2, "{ready}");
    assert_eq!(ready["cluster"]["connected"], true, "{ready}");
}

/// Issue 27 row 10: `/readyz` showed anyone the cluster's topology (node
/// names, counts, slots, queue). Without a token it says ready or not, and
/// each language's state; the cluster needs the token.
#[tokio::test]
async fn readiness_shows_the_cluster_only_to_a_token() {
    let nats = Nats::start();
    let data = tempfile::tempdir().unwrap();
    let url = nats.url();
    let mut args = vec!["--cluster", url.as_str(), "--node-name", "secret-node"];
    args.extend(SHARED);
    let a = Server::start_in(data.path(), &args, &with_secret(&[("SANDLOT_TOKENS", "cluster-token")]));
    let (status, ready) = http(&a, "GET", "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready.as_object().unwrap().len(), 2, "ready and languages only: {ready}");
    assert!(!ready.to_string().contains("secret-node"), "{ready}");
    let (_, ready) = http_with(&a, "GET", "/readyz", None, &[("authorization", "Bearer cluster-token")]).await;
    assert_eq!(ready["cluster"]["node"], "secret-node", "{ready}");
    assert_eq!(ready["cluster"]["connected"], true, "{ready}");
}

#[tokio::test]
async fn a_node_with_a_core_to_spare_runs_its_clients_runs_itself_unless_told_to_queue_them() {
    let nats = Nats::start();
    let a = node(&nats, "a", &[]);
    let b = node(&nats, "b", &["--local-runs", "0"]);
    joined(&[&a, &b], 2.0).await;
    let routed = |server, to| async move { metric(server, "sandlot_cluster_routed_total", &[to]).await };
    let ran = |server| async move { metric(server, "sandlot_runs_total", &["reason=\"exit\""]).await };

    // a is idle: its client's runs run on a, without the queue.
    three_runs_whole(&a).await;
    assert_eq!((routed(&a, "to=\"here\"").await, routed(&a, "to=\"queue\"").await), (3.0, 0.0));
    assert_eq!((ran(&a).await, ran(&b).await), (3.0, 0.0));

    // b queues every run (--local-runs 0): they run on whichever node pulls them.
    three_runs_whole(&b).await;
    assert_eq!((routed(&b, "to=\"here\"").await, routed(&b, "to=\"queue\"").await), (0.0, 3.0));
    assert_eq!(ran(&a).await + ran(&b).await, 6.0);
}

/// Three runs of `PRINTS` sent to `server`, one after another, each whole.
async fn three_runs_whole(server: &Server) {
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    for nonce in 0..3 {
        let runid = exec(&mut client, nonce, json!({ "language": "python", "code": PRINTS })).await;
        let (stdout, _, stop) = follow(&mut client, &runid, Duration::from_secs(30)).await;
        assert_eq!((stop["reason"].as_str(), stdout), (Some("exit"), expected_output().0));
    }
}

const SESSION: &str = "import sandlot\nsandlot.set_placeholder('word', 'abc')\n\
                       sandlot.set_placeholder('xs', [1, 2, 3, 4])\n\
                       sandlot.save_model('double', lambda xs: [2 * x for x in xs])\n\
                       open('/tmp/note.txt', 'w').write('written on a')\nprint('trained')\n";

#[tokio::test]
async fn a_session_made_through_one_node_is_used_and_stopped_through_another() {
    let nats = Nats::start();
    let (a, b, c) = (node(&nats, "a", &[]), node(&nats, "b", &[]), node(&nats, "c", &[]));
    joined(&[&a, &b, &c], 3.0).await;

    let mut at_a = Client::connect(&a.ws_url("/")).await;
    let program =
        |code: &str| json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": code }] } });
    let (id, stdout, finished) = run_action(&mut at_a, program(SESSION)).await;
    assert_eq!((stdout.as_str(), &finished["status"]), ("trained\n", &json!("finished")), "{finished}");

    // Every session action sent to c is answered by a, which holds the session.
    let mut at_c = Client::connect(&c.ws_url("/")).await;
    let status = ask(&mut at_c, json!({ "action": "status", "sessionId": id })).await;
    assert_eq!(
        (&status["status"], &status["live"], &status["exitCode"]),
        (&json!("finished"), &json!(true), &json!(0))
    );
    let word =
        ask(&mut at_c, json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "word" } }))
            .await;
    assert_eq!((&word["action"], &word["value"]), (&json!("get_placeholder"), &json!("abc")), "{word}");
    let model = json!({ "action": "run_model", "model": { "sessionId": id, "name": "double", "data": [1, 2.5] } });
    let predicted = ask(&mut at_c, model).await;
    assert_eq!(predicted["prediction"], json!([2, 5.0]), "{predicted}");
    let stats =
        ask(&mut at_c, json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "xs" } })).await;
    assert_eq!(stats["stats"]["mean"], json!(2.5), "{stats}");
    let files = ask(&mut at_c, json!({ "action": "list_files", "sessionId": id })).await;
    assert!(files["files"].to_string().contains("note.txt"), "{files}");
    let file = ask(&mut at_c, json!({ "action": "get_file", "sessionId": id, "path": "note.txt" })).await;
    assert_eq!(file["text"], "written on a", "{file}");
    // Errors come back as a would give them.
    let missing =
        ask(&mut at_c, json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "nope" } }))
            .await;
    assert_eq!(missing["code"], "unknown_placeholder", "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("saved: word, xs"), "{missing}");
    let unknown = ask(&mut at_c, json!({ "action": "status", "sessionId": uuid_on(&id, 'f') })).await;
    assert_eq!(unknown["code"], "unknown_session", "{unknown}");

    // A run still going on a is stopped through b; a's client sees it end.
    let (looping, _) = start_action(&mut at_a, program("import time\nwhile True:\n    time.sleep(0.01)\n")).await;
    let mut at_b = Client::connect(&b.ws_url("/")).await;
    at_b.send(json!({ "action": "stop", "sessionId": looping })).await;
    let stopped = at_b.recv_within(Duration::from_secs(30)).await;
    assert_eq!((&stopped["action"], &stopped["status"]), (&json!("stop"), &json!("stopped")), "{stopped}");
    let mut skipped = Vec::new();
    let end = at_a.recv_until(|m| m["action"] == "finished" && m["sessionId"] == looping.as_str(), &mut skipped).await;
    assert_eq!(end["status"], "stopped", "{end}");

    // Nothing ran anywhere but a.
    for other in [&b, &c] {
        assert_eq!(metric(other, "sandlot_runs_total", &[]).await, 0.0);
    }
    assert_eq!(metric(&a, "sandlot_runs_total", &["face=\"actions\""]).await, 2.0);

    // With a gone, its runs' records and placeholders are still answered,
    // from the cluster's records; its models went with it.
    drop(at_a);
    a.kill9();
    joined(&[&b, &c], 2.0).await;
    let status = ask(&mut at_c, json!({ "action": "status", "sessionId": id })).await;
    assert_eq!(
        (&status["status"], &status["live"], &status["exitCode"]),
        (&json!("finished"), &json!(false), &json!(0))
    );
    let word =
        ask(&mut at_c, json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "word" } }))
            .await;
    assert_eq!(word["value"], "abc", "{word}");
    let stats =
        ask(&mut at_c, json!({ "action": "get_stats", "placeholder": { "sessionId": id, "name": "xs" } })).await;
    assert_eq!(stats["stats"]["mean"], json!(2.5), "{stats}");
    let stopped = ask(&mut at_c, json!({ "action": "status", "sessionId": looping })).await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let model = json!({ "action": "run_model", "model": { "sessionId": id, "name": "double", "data": [1] } });
    let gone = ask(&mut at_c, model).await;
    assert_eq!(gone["code"], "session_ended", "{gone}");
}

#[tokio::test]
async fn what_is_larger_than_a_nats_message_is_refused_with_a_way_out_or_shared_without_its_placeholders() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a", &[]), node(&nats, "b", &[]));
    joined(&[&a, &b], 2.0).await;
    // A session on a saves a placeholder of 2 MiB: more than the NATS
    // server's largest message (1 MiB by default).
    let code = "import sandlot\nsandlot.set_placeholder('big', 'x' * (2 << 20))\n\
                sandlot.set_placeholder('small', 'y')\nsandlot.save_model('size', lambda d: len(d))\n";
    let mut at_a = Client::connect(&a.ws_url("/")).await;
    let program = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": code }] } });
    let (id, _, finished) = run_action(&mut at_a, program).await;
    assert_eq!(finished["status"], "finished", "{finished}");

    // A request of 2 MiB sent to b cannot be forwarded to a: b says so, and where to send it.
    let mut at_b = Client::connect(&b.ws_url("/")).await;
    let big = "z".repeat(2 << 20);
    let model =
        |data: &str| json!({ "action": "run_model", "model": { "sessionId": id, "name": "size", "data": data } });
    let refused = ask(&mut at_b, model(&big)).await;
    assert_eq!(refused["code"], "too_large", "{}", refused.to_string().chars().take(500).collect::<String>());
    let message = refused["error"].as_str().unwrap();
    assert!(message.contains("max_payload") && message.contains("send it to a itself"), "{message}");
    // The same request sent to a itself is answered, and b still forwards small ones.
    assert_eq!(ask(&mut at_a, model(&big)).await["prediction"], json!(2 << 20));
    assert_eq!(ask(&mut at_b, model("four")).await["prediction"], json!(4));

    // a's record was larger than a message: it reached the cluster without
    // its placeholders, and with a gone, b says they were not kept.
    drop(at_a);
    a.kill9();
    joined(&[&b], 1.0).await;
    let status = ask(&mut at_b, json!({ "action": "status", "sessionId": id })).await;
    assert_eq!((&status["status"], &status["live"]), (&json!("finished"), &json!(false)), "{status}");
    let small =
        ask(&mut at_b, json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "small" } }))
            .await;
    assert_eq!(small["code"], "unknown_placeholder", "{small}");
    assert!(small["error"].as_str().unwrap().contains("larger than a message"), "{small}");
}

/// Sends an actions request on `client` and reads the reply.
async fn ask(client: &mut Client, request: Value) -> Value {
    client.send(request).await;
    client.recv_within(Duration::from_secs(30)).await
}

/// Calls an MCP tool over `server`'s `/mcp` (stateless JSON-RPC); its result.
async fn mcp_call(server: &Server, tool: &str, arguments: Value) -> Value {
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": tool, "arguments": arguments } });
    let headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    let (status, reply) = http_with(server, "POST", "/mcp", Some(&call.to_string()), &headers).await;
    assert_eq!(status, 200, "{tool}: {reply}");
    reply["result"].clone()
}

#[tokio::test]
async fn an_mcp_session_started_on_one_node_is_used_and_closed_through_another() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a", &[]), node(&nats, "b", &[]));
    joined(&[&a, &b], 2.0).await;
    let started = mcp_call(&a, "session_start", json!({ "language": "python" })).await;
    let id = started["structuredContent"]["session_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
    let defined = mcp_call(
        &a,
        "session_exec",
        json!({ "session_id": id, "code": "import sandlot\nx = 41\nsandlot.set_placeholder('x', x)" }),
    )
    .await;
    assert_eq!(defined["isError"], false, "{defined}");

    // Through b, the session's state is a's.
    let cell =
        mcp_call(&b, "session_exec", json!({ "session_id": id, "code": "open('/tmp/f.txt', 'w').write('hi')\nx + 1" }))
            .await;
    assert_eq!(cell["structuredContent"]["value"], "42", "the value as the session shows it: {cell}");
    let got = mcp_call(&b, "session_get", json!({ "session_id": id, "name": "x" })).await;
    assert_eq!(got["structuredContent"]["value"], json!(41), "{got}");
    let file = mcp_call(&b, "session_file", json!({ "session_id": id, "path": "/tmp/f.txt" })).await;
    assert_eq!(file["structuredContent"]["text"], "hi", "{file}");
    let closed = mcp_call(&b, "session_close", json!({ "session_id": id })).await;
    assert_eq!(closed["structuredContent"]["closed"], true, "{closed}");
    // Closed on a, where it was.
    let after = mcp_call(&a, "session_exec", json!({ "session_id": id, "code": "x" })).await;
    assert_eq!(after["isError"], true, "{after}");
    assert!(after["content"][0]["text"].as_str().unwrap().contains("no session"), "{after}");
    assert_eq!(metric(&b, "sandlot_runs_total", &[]).await, 0.0, "nothing ran on b");
}

/// The datasets `server` lists, as (name, state).
async fn datasets_on(server: &Server) -> Vec<(String, String)> {
    let (status, listed) = http(server, "GET", "/v1/dataset", None).await;
    assert_eq!(status, 200, "{listed}");
    let all = listed["datasets"].as_array().cloned().unwrap_or_default();
    all.iter().map(|d| (d["name"].as_str().unwrap().to_string(), d["state"].as_str().unwrap().to_string())).collect()
}

#[tokio::test]
async fn a_dataset_uploaded_through_one_node_is_read_on_the_others_and_deleted_everywhere() {
    use sha2::Digest;
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a", &[]), node(&nats, "b", &[]));
    joined(&[&a, &b], 2.0).await;
    // 3 MiB: several of the object store's chunks.
    let content: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i},{}\n", i * 7 % 1000).into_bytes()).collect();
    let body = json!({ "name": "shared", "input_data_size": content.len() }).to_string();
    let (status, created) = http(&a, "POST", "/v1/csv/dataset", Some(&body)).await;
    assert_eq!(status, 200, "{created}");
    let (uuid, file) = (created["uuid"].as_str().unwrap(), created["uuid_input_file"].as_str().unwrap());
    let mut socket = Client::connect(&a.ws_url("/")).await;
    socket.send(json!({ "token": "", "uuid": file, "target": "file_upload", "framing": "raw" })).await;
    assert_eq!(socket.recv().await["success"], true);
    for (n, chunk) in content.chunks(1 << 20).enumerate() {
        let mut frame = ((n << 20) as u64).to_le_bytes().to_vec();
        frame.extend_from_slice(chunk);
        socket.send_binary(frame).await;
        assert_eq!(socket.recv().await["success"], true);
    }
    let finalise = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    let (status, ready) = http(&a, "PUT", "/v1/csv/dataset", Some(&finalise)).await;
    assert_eq!((status, &ready["state"]), (200, &json!("ready")), "{ready}");

    // b fetches it; c, started after, too. A run there reads it byte-exact.
    let c = node(&nats, "c", &[]);
    let want = format!("{} {:x}\n", content.len(), sha2::Sha256::digest(&content));
    let read = "import hashlib\ndata = open('/data/shared.csv', 'rb').read()\nprint(len(data), hashlib.sha256(data).hexdigest())";
    for other in [&b, &c] {
        let fetched = eventually(Duration::from_secs(30), || async {
            datasets_on(other).await == [("shared".to_string(), "ready".to_string())]
        });
        assert!(fetched.await, "a node did not fetch the dataset: {:?}", datasets_on(other).await);
        let mut client = Client::connect(&other.ws_url("/")).await;
        let run = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": read }] } });
        let (_, stdout, finished) = run_action(&mut client, run).await;
        assert_eq!(stdout, want, "{finished}");
    }

    // A NATS client without the secret cannot delete it: a KV delete is no node's.
    let rogue = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("the rogue connects"));
    let refused_before = metric(&b, "sandlot_cluster_refused_total", &["why=\"unauthenticated\""]).await;
    rogue.get_key_value("sandlot_datasets").await.unwrap().delete(uuid).await.unwrap();
    let refused = eventually(Duration::from_secs(30), || async {
        metric(&b, "sandlot_cluster_refused_total", &["why=\"unauthenticated\""]).await > refused_before
            || datasets_on(&b).await.is_empty()
    });
    assert!(refused.await, "b neither refused nor applied the rogue's delete");
    assert_eq!(datasets_on(&b).await, [("shared".to_string(), "ready".to_string())], "the rogue deleted it");

    // Deleted through b: gone on every node.
    let (status, deleted) = http(&b, "DELETE", &format!("/v1/dataset?uuid={uuid}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    for other in [&a, &c] {
        let gone = eventually(Duration::from_secs(30), || async { datasets_on(other).await.is_empty() });
        assert!(gone.await, "a node kept a deleted dataset: {:?}", datasets_on(other).await);
    }
}

/// `id` with its last hex digit set to `digit`: the same node's tag, no session.
fn uuid_on(id: &str, digit: char) -> String {
    let mut other = id[..id.len() - 1].to_string();
    other.push(if id.ends_with(digit) { '0' } else { digit });
    other
}

/// Sends an actions `run` and returns its session id once it is accepted
/// (and the reply).
async fn start_action(client: &mut Client, request: Value) -> (String, Value) {
    client.send(request).await;
    let reply = client.recv_within(Duration::from_secs(30)).await;
    let id = reply["sessionId"].as_str().unwrap_or_else(|| panic!("not started: {reply}")).to_string();
    (id, reply)
}

#[tokio::test]
async fn a_kill_at_the_client_s_node_stops_the_run_where_it_runs() {
    let nats = Nats::start();
    let (a, b, _holder) = full_and_free(&nats).await;

    let mut client = Client::connect(&a.ws_url("/v1/ws")).await;
    let runid = exec(&mut client, 2, json!({ "language": "python", "code": "while True:\n    pass" })).await;
    let running = eventually(Duration::from_secs(10), || async {
        metric(&b, "sandlot_sessions", &["state=\"running\""]).await == 1.0
    });
    assert!(running.await, "the run did not start on b");
    client.send(json!({ "op": 2, "args": { "runid": runid } })).await;
    let (_, _, stop) = follow(&mut client, &runid, Duration::from_secs(5)).await;
    assert_eq!((stop["reason"].as_str(), stop["exitcode"].as_i64()), (Some("killed"), Some(137)), "{stop}");
    let stopped = eventually(Duration::from_secs(5), || async {
        metric(&b, "sandlot_sessions", &["state=\"running\""]).await == 0.0
    });
    assert!(stopped.await, "the kill did not reach b");
    assert_eq!(metric(&b, "sandlot_kills_total", &[]).await, 1.0);
}

#[tokio::test]
async fn a_node_killed_mid_run_leaves_its_runs_node_lost_and_the_cluster_working() {
    let nats = Nats::start();
    let a = node(&nats, "a", &["--max-running", "1"]);
    let b = node(&nats, "b", &[]);
    let c = node(&nats, "c", &[]);
    joined(&[&a, &b, &c], 3.0).await;
    let _holder = hold_slot(&a).await;

    let mut client = Client::connect(&a.ws_url("/v1/ws")).await;
    let runid = exec(&mut client, 3, json!({ "language": "python", "code": "while True:\n    pass" })).await;
    let running = |server| async move { metric(server, "sandlot_sessions", &["state=\"running\""]).await };
    let started = eventually(Duration::from_secs(10), || async { running(&b).await + running(&c).await == 1.0 });
    assert!(started.await, "the run did not start on b or c");
    let (lost, kept) = if running(&b).await == 1.0 { (b, c) } else { (c, b) };
    let killed_at = Instant::now();
    lost.kill9();
    let (_, _, stop) = follow(&mut client, &runid, Duration::from_secs(15)).await;
    assert_eq!(stop["reason"], "node-lost", "{stop}");
    assert!(stop["message"].as_str().unwrap().contains("stopped answering"), "{stop}");
    assert!(killed_at.elapsed() < Duration::from_secs(10), "node-lost took {:?}", killed_at.elapsed());

    // The rest of the cluster goes on.
    let runid = exec(&mut client, 4, json!({ "language": "python", "code": PRINTS })).await;
    let (stdout, _, stop) = follow(&mut client, &runid, Duration::from_secs(30)).await;
    assert_eq!((stop["reason"].as_str(), stdout), (Some("exit"), expected_output().0));
    assert_eq!(metric(&kept, "sandlot_runs_total", &["face=\"ranna\"", "reason=\"exit\""]).await, 1.0);
}

#[tokio::test]
async fn a_run_no_node_has_room_for_times_out_and_is_not_run_later() {
    let nats = Nats::start();
    let a = node(&nats, "a", &["--max-running", "1", "--queue-wait", "2"]);
    let b = node(&nats, "b", &["--max-running", "1"]);
    joined(&[&a, &b], 2.0).await;
    let _held_a = hold_slot(&a).await;
    let held_b = hold_slot(&b).await;

    let mut client = Client::connect(&a.ws_url("/v1/ws")).await;
    let queued_at = Instant::now();
    let runid = exec(&mut client, 5, json!({ "language": "python", "code": "print('late')" })).await;
    let (stdout, _, stop) = follow(&mut client, &runid, Duration::from_secs(10)).await;
    assert_eq!(stop["reason"], "timeout", "{stop}");
    assert!(
        stop["message"].as_str().unwrap().contains("no node of the cluster had room to start this run within 2.0 s"),
        "{stop}"
    );
    assert!(stdout.is_empty());
    assert!(queued_at.elapsed() >= Duration::from_secs(2));

    // b gets room (its client leaves, which kills its run); the expired
    // run is not started there.
    drop(held_b);
    let freed = eventually(Duration::from_secs(10), || async {
        metric(&b, "sandlot_sessions", &["state=\"running\""]).await == 0.0
    });
    assert!(freed.await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&b, "sandlot_runs_total", &["reason=\"exit\""]).await, 0.0);
}

/// `sandlot serve` with these flags, expected to refuse to start: its stderr.
fn refused(args: &[&str]) -> String {
    refused_with(args, &[])
}

fn refused_with(args: &[&str], env: &[(&str, &str)]) -> String {
    refused_in(args, &with_secret(env))
}

fn refused_in(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .env("SANDLOT_LOG", "warn")
        .env_remove("SANDLOT_CLUSTER_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the node started: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_node_whose_configuration_differs_or_whose_name_is_taken_is_refused() {
    let nats = Nats::start();
    let url = nats.url();
    let a = node(&nats, "a", &[]);
    joined(&[&a], 1.0).await;

    let differs =
        refused(&["--cluster", &url, "--node-name", "b", "--timeout", "20", "--max-running-per-client", "16"]);
    assert!(differs.contains("differs from the cluster's") && differs.contains("limits"), "{differs}");
    let same = [&["--cluster", url.as_str(), "--node-name", "b"], &SHARED[..]].concat();
    let tokens = refused_with(&same, &[("SANDLOT_TOKENS", "a-token-the-others-do-not-take")]);
    assert!(
        tokens.contains("differs from the cluster's") && tokens.contains("tokens: this node has 1 tokens"),
        "{tokens}"
    );
    let taken = refused(&[&["--cluster", url.as_str(), "--node-name", "a"], &SHARED[..]].concat());
    assert!(taken.contains("a node named a is in the cluster already"), "{taken}");
    // Without a secret, or with another one, it does not join either.
    let no_secret = refused_in(&same, &[]);
    assert!(no_secret.contains("needs a cluster secret") && no_secret.contains("/dev/urandom"), "{no_secret}");
    let short = refused_in(&same, &[("SANDLOT_CLUSTER_SECRET", "too short")]);
    assert!(short.contains("at least 32"), "{short}");
    let other = refused_with(&same, &[("SANDLOT_CLUSTER_SECRET", "another-secret-than-the-cluster-s-0123456789")]);
    assert!(other.contains("not sealed with this node's cluster secret"), "{other}");
    let bad_name = refused(&["--cluster", &url, "--node-name", "a.b"]);
    assert!(bad_name.contains("is not valid"), "{bad_name}");
    let unreachable = refused(&["--cluster", "nats://127.0.0.1:1"]);
    assert!(unreachable.contains("could not reach the cluster's NATS server"), "{unreachable}");
    // The cluster is unharmed.
    let body = json!({ "language": "python", "code": "print(1)" }).to_string();
    let (status, answer) = http(&a, "POST", "/v1/exec", Some(&body)).await;
    assert_eq!((status, answer["stdout"].as_str()), (200, Some("1\n")), "{answer}");
}

#[tokio::test]
async fn after_nats_restarts_the_nodes_reconnect_and_runs_go_on() {
    let mut nats = Nats::start();
    let (a, b, _holder) = full_and_free(&nats).await;
    let mut client = Client::connect(&a.ws_url("/v1/ws")).await;
    let run = |nonce| json!({ "language": "python", "code": format!("print('run {nonce}')") });
    let runid = exec(&mut client, 20, run(20)).await;
    assert_eq!(follow(&mut client, &runid, Duration::from_secs(30)).await.0, "run 20\n");

    // A run in flight while NATS restarts ends whole, or says what it lost.
    let ticks = "import time\nfor i in range(20):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\n";
    let in_flight = exec(&mut client, 30, json!({ "language": "python", "code": ticks })).await;
    // A session on b that ends while NATS is away: its record reaches the
    // cluster once NATS is back.
    let mut at_b = Client::connect(&b.ws_url("/")).await;
    let code = "import sandlot, time\ntime.sleep(0.5)\nsandlot.set_placeholder('saved', 'through the restart')\n";
    let session = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": code }] } });
    let (session, _) = start_action(&mut at_b, session).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart();
    let (stdout, _, stop) = follow(&mut client, &in_flight, Duration::from_secs(60)).await;
    let whole: String = (0..20).map(|i| format!("tick {i}\n")).collect();
    match stop["reason"].as_str() {
        Some("exit") => assert_eq!(stdout, whole, "{stop}"),
        _ => assert!(stop["message"].as_str().is_some_and(|m| !m.is_empty()), "{stop}"),
    }
    eprintln!("in flight through the restart: {stop}");
    // While the nodes reconnect, runs are still answered: through the
    // cluster once it is back, or here while it is not (a has no room
    // then, and says so).
    let back = eventually(Duration::from_secs(30), || async {
        let (_, ready) = http(&a, "GET", "/readyz", None).await;
        ready["cluster"]["connected"] == true && metric(&a, "sandlot_cluster_nodes", &[]).await == 2.0
    });
    assert!(back.await, "a did not reconnect to the cluster");
    for nonce in 21..26 {
        let runid = exec(&mut client, nonce, run(nonce)).await;
        let (stdout, _, stop) = follow(&mut client, &runid, Duration::from_secs(30)).await;
        assert_eq!((stdout, stop["reason"].as_str()), (format!("run {nonce}\n"), Some("exit")), "{stop}");
    }
    let on_b = metric(&b, "sandlot_runs_total", &["face=\"ranna\""]).await;
    let on_a = metric(&a, "sandlot_runs_total", &["face=\"ranna\""]).await;
    assert_eq!((on_b, on_a), (7.0, 0.0), "runs counted on b and a");

    // With b gone, a answers for b's session from the record b shared.
    drop(at_b);
    b.kill9();
    joined(&[&a], 1.0).await;
    let mut at_a = Client::connect(&a.ws_url("/")).await;
    at_a.send(json!({ "action": "get_placeholder", "placeholder": { "sessionId": session, "name": "saved" } })).await;
    let saved = at_a.recv_within(Duration::from_secs(30)).await;
    assert_eq!(saved["value"], "through the restart", "{saved}");
}

/// Whether `server` sees `count` nodes within 15 s (`/metrics` with a token).
async fn sees(server: &Server, count: f64) -> bool {
    let auth = [("authorization", "Bearer alice-token-0001")];
    eventually(Duration::from_secs(15), || async {
        let (_, body) = http_with(server, "GET", "/metrics", None, &auth).await;
        let text = body.as_str().unwrap_or("").to_string();
        text.lines().filter_map(|l| l.strip_prefix("sandlot_cluster_nodes ")).any(|n| n.parse() == Ok(count))
    })
    .await
}

/// Issue 27, row 9: a session answers only the client that started it, on
/// every node: a request forwarded to the session's node carries its client,
/// and once that node is gone its shared record keeps its owner.
#[tokio::test]
async fn another_clients_session_is_unknown_through_every_node() {
    let nats = Nats::start();
    let tokens = [("SANDLOT_TOKENS", "alice-token-0001,bob-token-0002")];
    let folders = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |name: &str, folder: &tempfile::TempDir| {
        let url = nats.url();
        let mut args = vec!["--cluster", url.as_str(), "--node-name", name];
        args.extend(SHARED);
        Server::start_in(folder.path(), &args, &with_secret(&tokens))
    };
    let (a, b) = (start("a", &folders[0]), start("b", &folders[1]));
    assert!(sees(&a, 2.0).await && sees(&b, 2.0).await, "the nodes did not see each other");
    let connect = |server: &Server, token: &str| {
        let (url, auth) = (server.ws_url("/"), format!("Bearer {token}"));
        async move { Client::connect_with(&url, &[("authorization", &auth)]).await.unwrap() }
    };
    let mut alice_at_a = connect(&a, "alice-token-0001").await;
    let program = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": SESSION }] } });
    let (id, _, finished) = run_action(&mut alice_at_a, program).await;
    assert_eq!(finished["status"], "finished", "{finished}");

    let word = |id: &str| json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "word" } });
    let unknown = uuid_on(&id, 'f');
    let (mut alice_at_b, mut bob_at_b) = (connect(&b, "alice-token-0001").await, connect(&b, "bob-token-0002").await);
    let same_as_unknown = |foreign: &Value, never: &Value, id: &str| {
        assert_eq!(foreign["code"], "unknown_session", "{foreign}");
        assert_eq!(foreign.to_string().replace(id, "<id>"), never.to_string().replace(&unknown, "<id>"));
    };
    // Forwarded to a, which holds the session.
    let foreign = ask(&mut bob_at_b, word(&id)).await;
    same_as_unknown(&foreign, &ask(&mut bob_at_b, word(&unknown)).await, &id);
    let stopped = ask(&mut bob_at_b, json!({ "action": "stop", "sessionId": id })).await;
    same_as_unknown(&stopped, &ask(&mut bob_at_b, json!({ "action": "stop", "sessionId": unknown })).await, &id);
    assert_eq!(ask(&mut alice_at_b, word(&id)).await["value"], "abc");

    // From the cluster's record, once a is gone.
    drop(alice_at_a);
    a.kill9();
    assert!(sees(&b, 1.0).await, "b did not see a leave");
    let foreign = ask(&mut bob_at_b, word(&id)).await;
    same_as_unknown(&foreign, &ask(&mut bob_at_b, word(&unknown)).await, &id);
    assert_eq!(ask(&mut alice_at_b, word(&id)).await["value"], "abc");
}

const TOKEN_A: &str = "rogue-test-token-a-0123456789";
const TOKEN_B: &str = "rogue-test-token-b-0123456789";

/// `mcp_call` with a token.
async fn mcp_call_as(server: &Server, token: &str, tool: &str, arguments: Value) -> Value {
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": tool, "arguments": arguments } });
    let bearer = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", bearer.as_str()),
    ];
    let (status, reply) = http_with(server, "POST", "/mcp", Some(&call.to_string()), &headers).await;
    assert_eq!(status, 200, "{tool}: {reply}");
    reply["result"].clone()
}

#[tokio::test]
async fn a_nats_client_without_the_secret_reads_nothing_starts_nothing_and_impersonates_no_one() {
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex};
    let nats = Nats::start();
    let tokens = format!("{TOKEN_A},{TOKEN_B}");
    let env = [("SANDLOT_TOKENS", tokens.as_str())];
    // Every run queued: each one crosses the bus.
    let (a, b) =
        (node_with(&nats, "a", &["--local-runs", "0"], &env), node_with(&nats, "b", &["--local-runs", "0"], &env));
    for node in [&a, &b] {
        let seen = eventually(Duration::from_secs(15), || async {
            metric_as(node, TOKEN_A, "sandlot_cluster_nodes", &[]).await == 2.0
        });
        assert!(seen.await, "the nodes did not see each other");
    }

    // The rogue: a NATS client the server admits, without the secret, listening to every subject.
    let rogue = async_nats::connect(nats.url()).await.expect("the rogue connects");
    let mut everything = rogue.subscribe(">").await.unwrap();
    rogue.flush().await.unwrap();
    let sniffed = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let sink = sniffed.clone();
    tokio::spawn(async move {
        while let Some(message) = everything.next().await {
            let mut seen = message.payload.to_vec();
            seen.extend_from_slice(format!("{:?}", message.headers).as_bytes());
            sink.lock().unwrap().push((message.subject.to_string(), seen));
        }
    });

    // Token A's one-shot run, through a (and the queue).
    let code = "word = 'marmal' + 'ade-vortex'\nprint(word, 'ran')";
    let bearer_a = format!("Bearer {TOKEN_A}");
    let body = json!({ "language": "python", "code": code }).to_string();
    let (status, answer) = http_with(&a, "POST", "/v1/exec", Some(&body), &[("authorization", &bearer_a)]).await;
    assert_eq!((status, answer["stdout"].as_str()), (200, Some("marmalade-vortex ran\n")), "{answer}");
    // Token A's notebook on a, read through b (forwarded to a).
    let started = mcp_call_as(&a, TOKEN_A, "session_start", json!({ "language": "python" })).await;
    let id = started["structuredContent"]["session_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
    let cell = "import sandlot\nx = 'quince-' + 'lantern'\nsandlot.set_placeholder('x', x)";
    let defined = mcp_call_as(&a, TOKEN_A, "session_exec", json!({ "session_id": id, "code": cell })).await;
    assert_eq!(defined["isError"], false, "{defined}");
    let got = mcp_call_as(&b, TOKEN_A, "session_get", json!({ "session_id": id, "name": "x" })).await;
    assert_eq!(got["structuredContent"]["value"], "quince-lantern", "{got}");
    // What the bus carried of them (the rogue's own messages come after),
    // once its reader has caught up (on loaded cores it may lag behind).
    let carried = |subject: &str| {
        let sniffed = sniffed.lock().unwrap();
        sniffed.iter().any(|(s, _)| s == subject || (subject == "sandlot.to.a." && s.starts_with(subject)))
    };
    let caught_up = eventually(Duration::from_secs(15), || {
        let all = ["sandlot.runs", "sandlot.node.a.mcp", "sandlot.to.a."].into_iter().all(carried);
        async move { all }
    });
    caught_up.await;
    let sniffed = sniffed.lock().unwrap().clone();
    // How a node names token A's client (`client_text`).
    let digest = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(TOKEN_A.as_bytes()))
    };
    // It read nothing: the bus carried the run, its output, the notebook's
    // cell and value, and who asked, all sealed.
    for subject in ["sandlot.runs", "sandlot.node.a.mcp"] {
        assert!(sniffed.iter().any(|(s, _)| s == subject), "the rogue did not see {subject}");
    }
    assert!(sniffed.iter().any(|(s, _)| s.starts_with("sandlot.to.a.")), "the rogue saw no run's output");
    let markers = ["marmal", "ade-vortex", "quince", "lantern", &digest, TOKEN_A];
    for (subject, seen) in sniffed.iter() {
        for marker in markers {
            assert!(
                !seen.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{subject} carried {marker:?} readably"
            );
        }
    }

    // It cannot start a run: a job it queues (as from a node "rogue") is dropped unread.
    let running = |server| async move { metric_as(server, TOKEN_A, "sandlot_sessions", &["state=\"running\""]).await };
    let ran = |server| async move { metric_as(server, TOKEN_A, "sandlot_runs_total", &[]).await };
    let refused = |server| async move {
        metric_as(server, TOKEN_A, "sandlot_cluster_refused_total", &["why=\"unauthenticated\""]).await
    };
    let runs_before = ran(&a).await + ran(&b).await;
    let not_after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 60_000;
    let forged = json!({
        "id": "0badc0de-0000-4000-8000-000000000001", "origin": "rogue", "face": "ranna", "language": "python",
        "files": [{ "name": "main.py", "content": "import time\nprint('forged', flush=True)\ntime.sleep(20)" }],
        "main_file": "main.py", "args": [], "env": [], "stdin": null, "wall_clock_ms": 20_000,
        "limits": { "wall_clock_ms": 20_000, "fuel": 1u64 << 40, "memory_bytes": 1u64 << 30, "output_bytes": 1 << 20 },
        "context": null, "not_after_ms": not_after,
    });
    rogue.publish("sandlot.runs", forged.to_string().into()).await.unwrap();
    rogue.flush().await.unwrap();
    let settled = eventually(Duration::from_secs(30), || async {
        refused(&a).await + refused(&b).await >= 1.0 || running(&a).await + running(&b).await >= 1.0
    });
    assert!(settled.await, "the forged run was neither refused nor started");
    assert_eq!(running(&a).await + running(&b).await, 0.0, "the forged run started");
    assert_eq!(ran(&a).await + ran(&b).await, runs_before, "the forged run ran");

    // It cannot ask a node for token A's notebook by naming token A.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sandlot-Client", format!("token:{digest}").as_str());
    let inbox = rogue.new_inbox();
    let mut replies = rogue.subscribe(inbox.clone()).await.unwrap();
    let request = json!({ "tool": "session_get", "arguments": { "session_id": id, "name": "x" } });
    let refused_before = refused(&a).await;
    rogue
        .publish_with_reply_and_headers("sandlot.node.a.mcp", inbox, headers, request.to_string().into())
        .await
        .unwrap();
    rogue.flush().await.unwrap();
    let began = Instant::now();
    let answer = loop {
        if let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(100), replies.next()).await {
            break Some(String::from_utf8_lossy(&reply.payload).into_owned());
        }
        if refused(&a).await > refused_before {
            break None;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "a neither refused nor answered the forged request");
    };
    assert_eq!(answer, None, "a answered a request no node sent");
}

#[tokio::test]
async fn a_session_of_a_node_that_stopped_gracefully_is_answered_from_its_record_at_once() {
    let nats = Nats::start();
    let (a, b) = (node(&nats, "a", &[]), node(&nats, "b", &[]));
    joined(&[&a, &b], 2.0).await;
    let mut at_a = Client::connect(&a.ws_url("/")).await;
    let program = json!({ "action": "run", "python": { "files": [{ "filename": "m.py", "content": SESSION }] } });
    let (id, _, finished) = run_action(&mut at_a, program).await;
    assert_eq!(finished["status"], "finished", "{finished}");
    drop(at_a);
    let mut at_b = Client::connect(&b.ws_url("/")).await;
    let get = json!({ "action": "get_placeholder", "placeholder": { "sessionId": id, "name": "word" } });
    assert_eq!(ask(&mut at_b, get.clone()).await["value"], "abc", "answered by a");

    // a stops (SIGTERM); at once, b answers from the record a shared.
    a.terminate();
    let word = ask(&mut at_b, get).await;
    assert_eq!(word["value"], "abc", "{word}");
    let status = ask(&mut at_b, json!({ "action": "status", "sessionId": id })).await;
    assert_eq!((&status["status"], &status["live"]), (&json!("finished"), &json!(false)), "{status}");
}

/// A certificate authority, a server certificate for 127.0.0.1 and a
/// client certificate, made with openssl in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"]]
        .concat());
    for (name, extensions) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        std::fs::write(dir.join(&ext), extensions).unwrap();
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

#[tokio::test]
async fn nodes_join_a_nats_server_that_wants_tls_and_a_password_and_warn_of_one_that_admits_anyone() {
    let folder = tempfile::tempdir().unwrap();
    make_certificates(folder.path());
    let path = |name: &str| folder.path().join(name).to_str().unwrap().to_string();
    let password = "a-password-for-the-nats-user";
    let nats = Nats::start_configured(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n\
         authorization {{\n  user: sandlot\n  password: \"{password}\"\n}}\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem")
    ));
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let tls = ["--nats-tls-ca", ca.as_str(), "--nats-tls-cert", cert.as_str(), "--nats-tls-key", key.as_str()];
    let access = [&tls[..], &["--nats-user", "sandlot"]].concat();
    let env = with_secret(&[("SANDLOT_NATS_PASSWORD", password)]);
    let url = nats.url();
    let args = |name: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["--cluster", url.as_str(), "--node-name", name].iter().map(|s| s.to_string()).collect();
        args.extend(SHARED.iter().chain(access.iter()).chain(extra).map(|s| s.to_string()));
        args
    };
    let log = folder.path().join("a.log");
    let data_a = tempfile::tempdir().unwrap();
    let a_args = args("a", &["--local-runs", "0"]);
    let a = Server::start_logged(data_a.path(), &a_args.iter().map(String::as_str).collect::<Vec<_>>(), &env, &log);
    let b_args = args("b", &[]);
    let b = Server::start_env(&b_args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    joined(&[&a, &b], 2.0).await;
    let body = json!({ "language": "python", "code": "print(6 * 7)" }).to_string();
    let (status, answer) = http(&a, "POST", "/v1/exec", Some(&body)).await;
    assert_eq!((status, answer["stdout"].as_str()), (200, Some("42\n")), "{answer}");
    assert_eq!(metric(&a, "sandlot_cluster_routed_total", &["to=\"queue\""]).await, 1.0, "it went through the queue");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("ADMITS CLIENTS WITHOUT CREDENTIALS"), "{logged}");

    // Without the password, or without the server's authority, a node is refused and told what to check.
    let base = [&["--cluster", url.as_str(), "--node-name", "c"][..], &SHARED[..]].concat();
    let no_password = refused(&[&base[..], &tls[..]].concat());
    assert!(
        no_password.contains("could not reach the cluster's NATS server") && no_password.contains("NATS credentials"),
        "{no_password}"
    );
    let no_ca = refused_with(&[&base[..], &access[2..]].concat(), &env);
    assert!(no_ca.contains("could not reach the cluster's NATS server") && no_ca.contains("--nats-tls-ca"), "{no_ca}");

    // A NATS server that admits anyone: the node says so, loudly.
    let open = Nats::start();
    let open_log = folder.path().join("open.log");
    let data_c = tempfile::tempdir().unwrap();
    let open_url = open.url();
    let c_args = [&["--cluster", open_url.as_str(), "--node-name", "c"][..], &SHARED[..]].concat();
    let _c = Server::start_logged(data_c.path(), &c_args, &with_secret(&[]), &open_log);
    let logged = std::fs::read_to_string(&open_log).unwrap();
    assert!(logged.contains("ADMITS CLIENTS WITHOUT CREDENTIALS"), "{logged}");
}
