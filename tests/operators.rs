//! What operators ask of a real server (CONTRACT face 7): `/healthz`,
//! `/readyz` and `/metrics`, the scrape read by Prometheus's own text parser
//! (PyPI `prometheus-client`, installed by `guest-runtimes/tools.sh` into
//! `.tools/test-clients`), and a server that listens at once and says what it
//! is still preparing.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{Client, Server, http_response, http_with, run_action};
use serde_json::{Value, json};

const TOKEN: &str = "operator-token-0001";
const BEARER: &str = "Bearer operator-token-0001";

/// Every sample of a scrape, as Prometheus's Python parser reads it.
struct Scrape {
    types: Value,
    samples: Vec<Value>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`, summed
    /// over the labels not named (0 when none matches).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().expect("a number"))
            .sum()
    }
}

async fn scrape(server: &Server) -> Scrape {
    let (status, headers, body) = http_response(server, "GET", "/metrics", None, &[("authorization", BEARER)]).await;
    assert_eq!(status, 200, "{body}");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = body.as_str().expect("a text body").to_string();
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/test-clients/bin/python");
    assert!(python.exists(), "no test clients at {}: run guest-runtimes/tools.sh", python.display());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/parse_metrics.py");
    let mut parser = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the parser starts");
    parser.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus's parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    Scrape { types: parsed["types"].clone(), samples: parsed["samples"].as_array().unwrap().clone() }
}

async fn exec(server: &Server, language: &str, code: &str) -> Value {
    let body = json!({ "language": language, "code": code }).to_string();
    let (status, reply) = http_with(server, "POST", "/v1/exec", Some(&body), &[("authorization", BEARER)]).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test]
async fn health_readiness_and_metrics_follow_what_the_server_does() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &["--timeout", "1"], &[("SANDLOT_TOKENS", TOKEN)]);

    // Health and readiness need no token: a load balancer asks them.
    // Without one, readiness says ready or not and each language's state,
    // nothing more; its details need the token.
    let (status, health) = http_with(&server, "GET", "/healthz", None, &[]).await;
    assert_eq!((status, health), (200, json!({ "status": "ok" })));
    for wrong in [None, Some("Bearer wrong-token-0002")] {
        let headers: Vec<(&str, &str)> = wrong.map(|w| ("authorization", w)).into_iter().collect();
        let (status, ready) = http_with(&server, "GET", "/readyz", None, &headers).await;
        assert_eq!((status, ready["ready"].clone()), (200, json!(true)), "{ready}");
        let mut keys: Vec<&String> = ready.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["languages", "ready"], "{ready}");
        for language in ready["languages"].as_array().unwrap() {
            assert_eq!(language.as_object().unwrap().len(), 2, "only a name and a state: {language}");
        }
    }
    let (status, ready) = http_with(&server, "GET", "/readyz", None, &[("authorization", BEARER)]).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!((ready["ready"].clone(), ready["store"].clone()), (json!(true), json!("open")));
    let states: Vec<(String, String)> = ready["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["language"].as_str().unwrap().into(), l["state"].as_str().unwrap().into()))
        .collect();
    for language in ["python", "javascript", "python-sci", "lua"] {
        assert!(states.contains(&(language.into(), "ready".into())), "{language} in {states:?}");
    }
    // Metrics do: a refused scrape is itself counted.
    let (status, _) = http_with(&server, "GET", "/metrics", None, &[]).await;
    assert_eq!(status, 401);

    let before = scrape(&server).await;
    assert_eq!(before.types["sandlot_runs"], "counter", "{}", before.types);
    assert_eq!(before.types["sandlot_run_seconds"], "histogram");
    assert_eq!(before.types["sandlot_cold_start_seconds"], "histogram");
    assert_eq!(before.types["sandlot_sessions"], "gauge");
    assert_eq!(before.types["sandlot_connections"], "gauge");
    for family in ["sandlot_kills", "sandlot_limit_hits", "sandlot_upload_bytes", "sandlot_refusals"] {
        assert_eq!(before.types[family], "counter", "{family}");
    }
    assert_eq!(before.value("sandlot_refusals_total", &[("cause", "token")]), 1.0);
    assert_eq!(before.value("sandlot_runs_total", &[]), 0.0);

    // Two ranna runs, one past its time limit.
    assert_eq!(exec(&server, "python", "print('hi')").await["stdout"], "hi\n");
    exec(&server, "lua", "while true do end").await;
    // An actions socket, open while scraped, with a live session and a stopped run.
    let mut actions = Client::connect_with(&server.ws_url("/"), &[("authorization", BEARER)]).await.unwrap();
    let model = json!({ "action": "run", "javascript": { "files": [{ "filename": "m.js",
        "content": "sandlot.saveModel('id', x => x)" }] } });
    let (_, _, finished) = run_action(&mut actions, model).await;
    assert_eq!(finished["exitCode"], 0, "{finished}");
    actions.send(json!({ "action": "run", "python": { "files": [{ "filename": "spin.py", "content": "while True:\n    pass" }] } })).await;
    let spinning = actions.recv().await["sessionId"].as_str().unwrap().to_string();
    actions.send(json!({ "action": "stop", "sessionId": spinning })).await;
    let mut skipped = Vec::new();
    actions.recv_until(|m| m["action"] == "finished", &mut skipped).await;

    let after = scrape(&server).await;
    let runs = |language, face, reason| {
        after.value("sandlot_runs_total", &[("language", language), ("face", face), ("reason", reason)])
    };
    assert_eq!(runs("python", "ranna", "exit"), 1.0);
    assert_eq!(runs("lua", "ranna", "timeout"), 1.0);
    assert_eq!(runs("javascript", "actions", "exit"), 1.0);
    assert_eq!(runs("python", "actions", "killed"), 1.0);
    assert_eq!(after.value("sandlot_runs_total", &[]), 4.0);
    assert_eq!(after.value("sandlot_limit_hits_total", &[("limit", "timeout")]), 1.0);
    assert_eq!(after.value("sandlot_kills_total", &[]), 1.0);
    // Histograms: one observation each, the timed-out run in the buckets
    // from one second on and not below.
    let lua = [("language", "lua"), ("face", "ranna")];
    assert_eq!(after.value("sandlot_run_seconds_count", &lua), 1.0);
    assert!(after.value("sandlot_run_seconds_sum", &lua) >= 1.0);
    let bucket = |le| after.value("sandlot_run_seconds_bucket", &[lua[0], lua[1], ("le", le)]);
    assert_eq!((bucket("0.5"), bucket("2.5"), bucket("+Inf")), (0.0, 1.0, 1.0));
    assert_eq!(after.value("sandlot_cold_start_seconds_count", &[("face", "ranna")]), 2.0);
    assert_eq!(after.value("sandlot_cold_start_seconds_count", &[("face", "actions")]), 2.0);
    assert_eq!(after.value("sandlot_connections", &[("face", "actions")]), 1.0);
    assert_eq!(after.value("sandlot_sessions", &[("state", "live")]), 1.0);
    // Running counts the guests holding a running slot: the killed one gives
    // its slot back at its next epoch check, just after its end is reported.
    let mut after = after;
    for _ in 0..100 {
        if after.value("sandlot_sessions", &[("state", "running")]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = scrape(&server).await;
    }
    assert_eq!(after.value("sandlot_sessions", &[("state", "running")]), 0.0);
    drop(actions);
    let mut closed = scrape(&server).await;
    for _ in 0..100 {
        if closed.value("sandlot_connections", &[("face", "actions")]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        closed = scrape(&server).await;
    }
    assert_eq!(
        closed.value("sandlot_connections", &[("face", "actions")]),
        0.0,
        "a closed socket is no longer counted"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

/// With an empty compile cache a server listens at once, says on `/readyz`
/// what it is still preparing, refuses a python-sci run after a short wait
/// with when to come back, and stops at once and cleanly when told to.
#[tokio::test]
async fn a_server_listens_at_once_and_says_what_it_is_still_preparing() {
    let (cache, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache_dir = cache.path().to_str().unwrap();
    let began = std::time::Instant::now();
    let server = Server::start_unready(data.path(), &[], &[("SANDLOT_CACHE_DIR", cache_dir)]);
    assert!(began.elapsed() < Duration::from_secs(5), "listened after {:?}", began.elapsed());

    let (status, ready) = http_with(&server, "GET", "/readyz", None, &[]).await;
    assert_eq!((status, ready["ready"].clone()), (503, json!(false)), "{ready}");
    let sci = ready["languages"].as_array().unwrap().iter().find(|l| l["language"] == "python-sci").unwrap().clone();
    assert_eq!(sci["state"], "preparing", "{ready}");
    assert!(sci["expected_seconds"].as_u64().unwrap() > 0, "{sci}");
    assert_eq!(http_with(&server, "GET", "/healthz", None, &[]).await.0, 200);

    let body = json!({ "language": "python-sci", "code": "print(1)" }).to_string();
    let asked = std::time::Instant::now();
    let (status, headers, reply) = http_response(&server, "POST", "/v1/exec", Some(&body), &[]).await;
    assert_eq!(status, 503, "{reply}");
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(30), "refused after {waited:?}");
    let message = reply["error"].as_str().unwrap();
    assert!(message.starts_with("python-sci is being prepared (") && message.contains("ready in ~"), "{message}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 5, "Retry-After: {retry}");

    // The server still answers everything else while it compiles.
    let (status, spec) = http_with(&server, "GET", "/v1/spec", None, &[]).await;
    assert_eq!(status, 200, "{spec}");
    let asked = std::time::Instant::now();
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "a stop while compiling is graceful");
    assert!(asked.elapsed() < Duration::from_secs(15), "stopped after {:?}", asked.elapsed());
}

/// `--log-format json` writes one JSON object a line; the lines about a run
/// carry its id and face; neither its code nor the client's token is logged,
/// even at debug level.
#[tokio::test]
async fn json_logs_name_the_run_and_never_its_code_or_token() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let env = [("SANDLOT_TOKENS", TOKEN), ("SANDLOT_LOG", "sandlot=debug")];
    let server = Server::start_logged(data.path(), &["--log-format", "json"], &env, &log);
    let secret = "print('do-not-log-this-code')";
    let reply = exec(&server, "python", secret).await;
    assert_eq!(reply["stdout"], "do-not-log-this-code\n");
    // A refused token is logged as refused, without the token tried.
    let (status, _) =
        http_with(&server, "GET", "/metrics", None, &[("authorization", "Bearer wrong-token-0002")]).await;
    assert_eq!(status, 401);
    assert_eq!(server.terminate().code(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let ended = lines.iter().find(|l| l["message"] == "run ended").unwrap_or_else(|| panic!("no run end in {text}"));
    assert_eq!((ended["span"]["face"].clone(), ended["span"]["language"].clone()), (json!("ranna"), json!("python")));
    assert_eq!(ended["span"]["id"].as_str().map(str::len), Some(36), "{ended}");
    assert_eq!((ended["reason"].clone(), ended["level"].clone()), (json!("exit"), json!("DEBUG")));
    assert!(lines.iter().any(|l| l["message"] == "listening"), "{text}");
    for never in ["do-not-log-this-code", TOKEN, "wrong-token-0002"] {
        assert!(!text.contains(never), "{never:?} is in the log:\n{text}");
    }
}

/// Every route the clients of each face use, as (method, path): the OpenAPI
/// document must list exactly these, and each must reach its handler.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/v1/ws"),
    ("get", "/processor"),
    ("post", "/v1/exec"),
    ("get", "/v1/spec"),
    ("get", "/v1/info"),
    ("post", "/mcp"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/playground"),
    ("get", "/playground/bench.svg"),
    ("post", "/v1/csv/dataset"),
    ("put", "/v1/csv/dataset"),
    ("post", "/v1/mnist/dataset"),
    ("put", "/v1/mnist/dataset"),
    ("get", "/v1/dataset"),
    ("delete", "/v1/dataset"),
    ("get", "/v1/dataset/all"),
    ("get", "/v1/dataset/progress"),
    ("put", "/v1/cluster/set_mode"),
    ("post", "/control/v1/csv/dataset"),
    ("put", "/control/v1/csv/dataset"),
    ("post", "/control/v1/mnist/dataset"),
    ("put", "/control/v1/mnist/dataset"),
    ("get", "/control/v1/dataset"),
    ("delete", "/control/v1/dataset"),
    ("get", "/control/v1/dataset/all"),
    ("get", "/control/v1/dataset/progress"),
    ("put", "/control/v1/cluster/set_mode"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_one_is_served() {
    let server = Server::start(&[]);
    let (status, document) = http_with(&server, "GET", "/v1/openapi.json", None, &[]).await;
    assert_eq!(status, 200, "{document}");
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);

    // A valid OpenAPI 3.1 document, to a validator of its own.
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/test-clients/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/validate_openapi.py");
    let mut validator =
        Command::new(python).arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("the validator");
    validator.stdin.take().unwrap().write_all(document.to_string().as_bytes()).unwrap();
    let out = validator.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Documented: exactly the routes clients use, each operation with an id of its own.
    let mut documented = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.push((method.clone(), path.clone()));
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
            assert!(ids.insert(id.to_string()), "operation id {id} twice");
            assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // The routes behind a token say so, and both error shapes are described.
    assert!(document["paths"]["/v1/exec"]["post"]["security"].is_array());
    assert!(document["paths"]["/healthz"]["get"]["security"].is_null());
    for schema in ["ErrorBody", "DatasetErrorBody", "ExecutionRequest"] {
        assert!(document["components"]["schemas"][schema].is_object(), "{schema}");
    }

    // Served: each reaches a handler, not the fallback (an unknown path) or a
    // 405 (a method the path does not take).
    for (method, path) in ROUTES {
        let (status, body) = http_with(&server, &method.to_uppercase(), path, Some(""), &[]).await;
        let fallback = status == 404 && body["error"].as_str().is_some_and(|e| e.starts_with("no such endpoint"));
        assert!(!fallback && status != 405, "{method} {path}: {status} {body}");
    }
    let (status, body) = http_with(&server, "GET", "/v1/not-a-route", None, &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["context"].as_str().unwrap().contains("/v1/openapi.json"), "{body}");
}

/// The playground in a real browser (Debian's Chromium, driven by
/// Playwright): a run's streamed output with stderr marked, its status and
/// time, its placeholders as a table, an image and JSON; Kill on an endless
/// loop; an answer through the STDIN box. The screenshot is kept at
/// `target/test-artifacts/playground.png`.
#[tokio::test]
async fn the_playground_runs_kills_and_shows_placeholders_in_a_real_browser() {
    let server = Server::start(&[]);
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("playground.png");
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/test-clients/bin/python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/playground.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}", server.address))
        .arg(&shot)
        .output()
        .expect("the browser driver starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();

    let languages = report["languages"].as_array().unwrap();
    for language in ["python", "javascript", "python-sci", "lua"] {
        assert!(languages.contains(&json!(language)), "{report}");
    }
    let status = report["status"].as_str().unwrap();
    assert!(status.starts_with("exit 0 (exit) in "), "{report}");
    assert_eq!(report["stdout"], "line 0\nline 1\nline 2\n");
    assert_eq!(report["stderr"], "careful\n");
    assert_eq!(report["placeholder_names"], json!(["gradient", "note", "scores"]));
    assert_eq!(report["table_cells"], json!(["ada", "3", "alan", "2"]));
    assert_eq!(report["image_width"], 120, "the PNG the program drew is shown");
    assert!(report["json"][0].as_str().unwrap().contains("\"nested\""), "{report}");
    assert!(report["chart_width"].as_u64().unwrap() > 100, "{report}");
    assert!(report["killed"].as_str().unwrap().starts_with("exit 137 (killed)"), "{report}");
    assert!(report["stdin_status"].as_str().unwrap().starts_with("exit 0"), "{report}");
    assert_eq!(report["stdin_stdout"], "who? hello grace\n");
    assert_eq!(report["errors"], json!([]), "the page logged errors");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
}
