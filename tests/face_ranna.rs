//! The ranna face over a real server: ops over `/v1/ws` and the REST calls,
//! as seed 002 describes them.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::server::{Client, Server, http};
use serde_json::{Value, json};

async fn ws() -> Client {
    Client::connect(&Server::shared().ws_url("/v1/ws")).await
}

/// Runs one EXEC and returns (runid, stdout, stderr, STOP data), checking the
/// event order and that every event carries the nonce.
async fn exec(client: &mut Client, nonce: u64, args: Value) -> (String, String, String, Value) {
    client.send(json!({ "op": 1, "nonce": nonce, "args": args })).await;
    let spawn = client.recv().await;
    assert_eq!(spawn["code"], 2, "{spawn}");
    assert_eq!(spawn["nonce"], nonce);
    let runid = spawn["data"]["runid"].as_str().expect("SPAWN carries a runid").to_string();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    loop {
        let event = client.recv().await;
        assert_eq!(event["nonce"], nonce, "{event}");
        assert_eq!(event["data"]["runid"], runid.as_str(), "{event}");
        match event["code"].as_u64() {
            Some(3) => {
                stdout.push_str(event["data"]["stdout"].as_str().unwrap_or(""));
                stderr.push_str(event["data"]["stderr"].as_str().unwrap_or(""));
            }
            Some(4) => return (runid, stdout, stderr, event["data"].clone()),
            _ => panic!("unexpected event {event}"),
        }
    }
}

#[tokio::test]
async fn ping_pongs_with_the_nonce() {
    let mut client = ws().await;
    client.send(json!({ "op": 0, "nonce": 7 })).await;
    assert_eq!(client.recv().await, json!({ "code": 0, "nonce": 7, "data": "Pong!" }));
    client.send(json!({ "op": 0 })).await;
    assert_eq!(client.recv().await, json!({ "code": 0, "data": "Pong!" }));
}

#[tokio::test]
async fn exec_runs_every_language() {
    let mut client = ws().await;
    for (language, code) in [
        ("python", "print('hi from py')"),
        ("javascript", "console.log('hi from js')"),
        ("python3", "print('hi from py')"),
        ("node", "console.log('hi from js')"),
        ("lua", "print('hi from lua')"),
        ("python-sci", "import pandas\nprint('hi from', 'sci')"),
    ] {
        let (_, stdout, stderr, stop) = exec(&mut client, 1, json!({ "language": language, "code": code })).await;
        assert!(stdout.starts_with("hi from"), "{language}: {stdout} {stderr}");
        assert_eq!(stop["exitcode"], 0);
        assert_eq!(stop["reason"], "exit");
        assert!(stop["exectimems"].is_u64());
    }
}

#[tokio::test]
async fn arguments_environment_and_inline_expressions() {
    let mut client = ws().await;
    let args = json!({
        "language": "python",
        "code": "import os, sys\nprint(sys.argv[1:], os.environ.get('COLOUR'), len(os.environ))",
        "arguments": ["a", "b c"],
        "environment": { "COLOUR": "teal" },
    });
    let (_, stdout, _, _) = exec(&mut client, 2, args).await;
    assert_eq!(stdout, "['a', 'b c'] teal 1\n");
    let (_, stdout, _, _) =
        exec(&mut client, 3, json!({ "language": "py", "code": "6 * 7", "inline_expression": true })).await;
    assert_eq!(stdout, "42\n");
    let (_, stdout, _, _) = exec(
        &mut client,
        4,
        json!({ "language": "js", "code": "[1, 2].map((x) => x * 2)", "inline_expression": true }),
    )
    .await;
    assert_eq!(stdout, "[ 2, 4 ]\n");
    let js_env = json!({ "language": "js", "code": "console.log(process.env.COLOUR, process.argv.slice(2))", "arguments": ["x"], "environment": { "COLOUR": "red" } });
    let (_, stdout, _, _) = exec(&mut client, 5, js_env).await;
    assert_eq!(stdout, "red [ \"x\" ]\n");
    let lua = json!({ "language": "lua", "code": "local s = require('sandlot')\ns.stats({1, 2, 3}).mean * 14", "inline_expression": true, "arguments": null });
    let (_, stdout, stderr, _) = exec(&mut client, 6, lua).await;
    assert_eq!(stdout, "28.0\n", "{stderr}");
}

#[tokio::test]
async fn logs_stream_while_the_guest_runs() {
    let mut client = ws().await;
    for (language, code) in [
        ("python", "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')"),
        ("javascript", "console.log('first'); setTimeout(() => console.log('second'), 1500);"),
    ] {
        client.send(json!({ "op": 1, "nonce": 9, "args": { "language": language, "code": code } })).await;
        let spawned = Instant::now();
        assert_eq!(client.recv().await["code"], 2);
        let mut stdout = String::new();
        let mut first_at = None;
        loop {
            let event = client.recv().await;
            if event["code"] == 4 {
                break;
            }
            stdout.push_str(event["data"]["stdout"].as_str().unwrap_or(""));
            if stdout.starts_with("first\n") && first_at.is_none() {
                first_at = Some(spawned.elapsed());
            }
        }
        assert_eq!(stdout, "first\nsecond\n");
        let first_at = first_at.expect("the first line arrived");
        assert!(
            spawned.elapsed() - first_at >= Duration::from_millis(1000),
            "{language}: the first line came only at the end"
        );
    }
}

#[tokio::test]
async fn errors_exit_codes_and_limits_reach_stop() {
    let mut client = ws().await;
    let (_, _, stderr, stop) =
        exec(&mut client, 1, json!({ "language": "python", "code": "x = 1\nraise ValueError('nope')" })).await;
    assert!(stderr.contains("line 2") && stderr.contains("ValueError: nope"), "{stderr}");
    assert_eq!((stop["exitcode"].clone(), stop["reason"].clone()), (json!(1), json!("error")));
    let (_, _, _, stop) = exec(&mut client, 2, json!({ "language": "js", "code": "process.exit(4)" })).await;
    assert_eq!(stop["exitcode"], 4);
    let (_, stdout, _, stop) =
        exec(&mut client, 3, json!({ "language": "js", "code": "for (;;) console.log('flood '.repeat(100))" })).await;
    assert_eq!(stop["reason"], "output-limit");
    assert!(stdout.len() <= 1 << 20);
}

#[tokio::test]
async fn kill_stops_a_run_within_a_tick() {
    let mut client = ws().await;
    client
        .send(json!({ "op": 1, "nonce": 5, "args": { "language": "python", "code": "while True:\n    pass" } }))
        .await;
    let runid = client.recv().await["data"]["runid"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    client.send(json!({ "op": 2, "nonce": 6, "args": { "runid": runid } })).await;
    let stop = client.recv().await;
    assert!(sent.elapsed() < Duration::from_secs(1), "STOP came after {:?}", sent.elapsed());
    assert_eq!(stop["code"], 4, "{stop}");
    assert_eq!(stop["nonce"], 5);
    assert_eq!(stop["data"]["reason"], "killed");
    assert_eq!(stop["data"]["exitcode"], 137);
}

#[tokio::test]
async fn several_runs_share_one_socket() {
    let mut client = ws().await;
    for nonce in 0..3u64 {
        let code = format!("import time\ntime.sleep(0.{})\nprint({nonce})", 3 - nonce);
        client.send(json!({ "op": 1, "nonce": nonce, "args": { "language": "python", "code": code } })).await;
    }
    let mut outputs: HashMap<u64, String> = HashMap::new();
    let mut stops = 0;
    while stops < 3 {
        let event = client.recv().await;
        let nonce = event["nonce"].as_u64().unwrap();
        match event["code"].as_u64() {
            Some(3) => outputs.entry(nonce).or_default().push_str(event["data"]["stdout"].as_str().unwrap_or("")),
            Some(4) => stops += 1,
            _ => {}
        }
    }
    for nonce in 0..3u64 {
        assert_eq!(outputs[&nonce], format!("{nonce}\n"));
    }
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_socket_stays_up() {
    let mut client = ws().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "op": 9, "nonce": 1 }), "unknown op 9"),
        (json!({ "nonce": 2 }), "numeric \"op\""),
        (json!({ "op": 1, "nonce": 3, "args": { "language": "cobol", "code": "x" } }), "unknown language"),
        (json!({ "op": 1, "nonce": 4, "args": { "language": "python" } }), "missing field `code`"),
        (json!({ "op": 1, "nonce": 5, "args": { "language": "python", "code": 5 } }), "invalid type"),
        (json!({ "op": 1, "nonce": 6 }), "EXEC args"),
        (json!({ "op": 2, "nonce": 7, "args": { "runid": "12345" } }), "no running run 12345"),
        (json!({ "op": 2, "nonce": 8, "args": {} }), "needs args.runid"),
    ];
    for (op, expected) in cases {
        client.send(op.clone()).await;
        let reply = client.recv().await;
        assert_eq!(reply["code"], 1, "{op} -> {reply}");
        assert_eq!(reply["nonce"], op["nonce"]);
        assert!(reply["data"].as_str().unwrap().contains(expected), "{op} -> {reply}");
    }
    client.send_text("{not json").await;
    assert!(client.recv().await["data"].as_str().unwrap().contains("not valid JSON"));
    client.send_binary(vec![0, 1, 2]).await;
    assert!(client.recv().await["data"].as_str().unwrap().contains("binary frames"));
    client.send_text(&"x".repeat(9 << 20)).await;
    assert!(client.recv().await["data"].as_str().unwrap().contains("over the limit"));
    client.send(json!({ "op": 0, "nonce": 99 })).await;
    assert_eq!(client.recv().await["data"], "Pong!");
}

#[tokio::test]
async fn a_flood_of_pings_is_answered_in_order() {
    let mut client = ws().await;
    for nonce in 0..2000u64 {
        client.send(json!({ "op": 0, "nonce": nonce })).await;
    }
    for nonce in 0..2000u64 {
        assert_eq!(client.recv().await["nonce"], nonce);
    }
}

#[tokio::test]
async fn two_clients_do_not_see_or_kill_each_others_runs() {
    let mut alice = ws().await;
    let mut bob = ws().await;
    alice.send(json!({ "op": 1, "nonce": 1, "args": { "language": "python", "code": "import time\ntime.sleep(1)\nprint('alice')" } })).await;
    let alice_run = alice.recv().await["data"]["runid"].as_str().unwrap().to_string();
    bob.send(json!({ "op": 2, "nonce": 2, "args": { "runid": alice_run } })).await;
    let refused = bob.recv().await;
    assert_eq!(refused["code"], 1, "bob may not kill alice's run: {refused}");
    let (_, stdout, _, _) = exec(&mut bob, 3, json!({ "language": "js", "code": "console.log('bob')" })).await;
    assert_eq!(stdout, "bob\n");
    let mut alice_out = String::new();
    loop {
        let event = alice.recv().await;
        if event["code"] == 4 {
            assert_eq!(event["data"]["reason"], "exit");
            break;
        }
        alice_out.push_str(event["data"]["stdout"].as_str().unwrap_or(""));
    }
    assert_eq!(alice_out, "alice\n");
}

#[tokio::test]
async fn past_the_running_cap_execs_are_refused_as_busy() {
    let server = Server::start(&["--max-running", "2", "--max-running-per-client", "3"]);
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    for nonce in 0..2 {
        client.send(json!({ "op": 1, "nonce": nonce, "args": { "language": "python", "code": "import time\ntime.sleep(2)" } })).await;
        assert_eq!(client.recv().await["code"], 2);
    }
    client.send(json!({ "op": 1, "nonce": 2, "args": { "language": "js", "code": "console.log(1)" } })).await;
    let busy = client.recv().await;
    assert_eq!((busy["code"].clone(), busy["nonce"].clone()), (json!(1), json!(2)));
    assert!(busy["data"].as_str().unwrap().contains("busy"), "{busy}");
    let mut stops = 0;
    while stops < 2 {
        if client.recv().await["code"] == 4 {
            stops += 1;
        }
    }
    let (_, stdout, _, _) =
        exec(&mut client, 3, json!({ "language": "js", "code": "console.log('room again')" })).await;
    assert_eq!(stdout, "room again\n");
}

#[tokio::test]
async fn two_hundred_execs_over_twenty_sockets() {
    let tasks: Vec<_> = (0..20)
        .map(|socket| {
            tokio::spawn(async move {
                let mut client = ws().await;
                for i in 0..10u64 {
                    let n = socket * 10 + i;
                    let (language, code) = if n % 2 == 0 {
                        ("python", format!("print({n} * {n})"))
                    } else {
                        ("javascript", format!("console.log({n} * {n})"))
                    };
                    client.send(json!({ "op": 1, "nonce": n, "args": { "language": language, "code": code } })).await;
                }
                let mut outputs: HashMap<u64, String> = HashMap::new();
                let mut stops = 0;
                while stops < 10 {
                    let event = client.recv_within(Duration::from_secs(60)).await;
                    let nonce = event["nonce"].as_u64().expect("events carry the nonce");
                    match event["code"].as_u64() {
                        Some(3) => {
                            outputs.entry(nonce).or_default().push_str(event["data"]["stdout"].as_str().unwrap_or(""))
                        }
                        Some(4) => {
                            assert_eq!(event["data"]["exitcode"], 0, "{event}");
                            stops += 1;
                        }
                        Some(2) => {}
                        _ => panic!("unexpected {event}"),
                    }
                }
                outputs
            })
        })
        .collect();
    let mut seen = 0;
    for task in tasks {
        for (n, out) in task.await.unwrap() {
            assert_eq!(out, format!("{}\n", n * n));
            seen += 1;
        }
    }
    assert_eq!(seen, 200);
}

#[tokio::test]
async fn rest_exec_spec_and_info() {
    let server = Server::shared();
    let body =
        json!({ "language": "python", "code": "import sys\nprint('out')\nprint('err', file=sys.stderr)" }).to_string();
    let (status, reply) = http(server, "POST", "/v1/exec", Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!((reply["stdout"].clone(), reply["stderr"].clone()), (json!("out\n"), json!("err\n")));
    assert!(reply["exectimems"].is_u64());

    let (status, reply) = http(server, "POST", "/v1/exec", Some("{oops")).await;
    assert_eq!((status, reply["code"].clone()), (400, json!(400)));
    assert!(reply["error"].as_str().unwrap().contains("not valid JSON"), "{reply}");
    assert!(reply["context"].is_string());
    let (status, reply) = http(server, "POST", "/v1/exec", Some(r#"{"language": "brainfuck", "code": "+"}"#)).await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("unknown language"), "{reply}");
    let (status, _) = http(server, "POST", "/v1/exec", Some(&"x".repeat(9 << 20))).await;
    assert_eq!(status, 413);

    let (_, spec) = http(server, "GET", "/v1/spec", None).await;
    assert_eq!(spec["python"]["filename"], "main.py");
    assert_eq!(spec["python3"]["use"], "python");
    assert_eq!(spec["js"]["use"], "javascript");
    assert!(spec["javascript"]["inline"]["template"].as_str().unwrap().contains("$${CODE}"));

    let (_, info) = http(server, "GET", "/v1/info", None).await;
    assert_eq!(info["sandbox"]["type"], "wasmtime");
    assert_eq!(info["sandbox"]["version"], "48.0.8");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let (status, missing) = http(server, "GET", "/nope", None).await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("/nope"));
}

#[tokio::test]
async fn one_socket_may_not_hold_more_than_its_share_of_runs() {
    let mut client = ws().await;
    for nonce in 0..33u64 {
        client.send(json!({ "op": 1, "nonce": nonce, "args": { "language": "python", "code": "import time\ntime.sleep(1)" } })).await;
    }
    let mut refused = Vec::new();
    let mut stops = 0;
    while stops < 32 {
        let event = client.recv().await;
        match event["code"].as_u64() {
            Some(1) => refused.push(event),
            Some(4) => stops += 1,
            _ => {}
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["nonce"], 32);
    assert!(refused[0]["data"].as_str().unwrap().contains("32 runs going already"), "{refused:?}");
}

/// ranna's Go client (`pkg/client`, `pkg/models`), as it is: its headers,
/// its bodies (Go's encoder writes `null` for unset slices and maps, and a
/// newline), and its decoding of the spec map and of error bodies.
mod go_client {
    use std::collections::HashMap;

    use super::*;
    use common::server::http_response;
    use serde::Deserialize;

    /// `models.Spec`: every field a string but `inline`, an object.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Spec {
        image: Option<String>,
        entrypoint: Option<String>,
        filename: Option<String>,
        cmd: Option<String>,
        registry: Option<String>,
        #[serde(rename = "use")]
        uses: Option<String>,
        language: Option<String>,
        example: Option<String>,
        inline: Option<InlineSpec>,
    }

    #[derive(Debug, Deserialize)]
    struct InlineSpec {
        import_regex: String,
        template: String,
    }

    /// `models.ErrorModel`.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct ErrorModel {
        error: String,
        code: i64,
        context: Option<String>,
    }

    fn headers(authorization: Option<&str>) -> Vec<(&str, &str)> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("user-agent", "ranna/pkg/client"),
        ];
        headers.extend(authorization.map(|a| ("authorization", a)));
        headers
    }

    /// What `Exec` sends for a request with no arguments and no environment.
    fn exec_body(language: &str, code: &str, inline: bool) -> String {
        format!(
            "{}\n",
            json!({ "language": language, "code": code, "inline_expression": inline, "arguments": null, "environment": null })
        )
    }

    #[tokio::test]
    async fn spec_exec_and_errors_decode_as_the_go_client_decodes_them() {
        let server = Server::shared();
        let (status, response_headers, spec) = http_response(server, "GET", "/v1/spec", None, &headers(None)).await;
        assert_eq!(status, 200);
        assert!(response_headers["content-type"].to_str().unwrap().starts_with("application/json"));
        let spec: HashMap<String, Spec> = serde_json::from_value(spec).expect("models.SpecMap decodes");
        // SpecMap.Get follows `use`; SupportsTemplating needs $${CODE} in the template.
        for name in ["python", "py", "python3", "js", "node", "javascript"] {
            let mut spec_of = &spec[name];
            while let Some(target) = &spec_of.uses {
                spec_of = &spec[target];
            }
            let inline = spec_of.inline.as_ref().expect("inline expressions are supported");
            assert!(inline.template.contains("$${CODE}"), "{name}: {inline:?}");
            assert!(regex::Regex::new(&inline.import_regex).is_ok(), "{name}: Go compiles it with regexp.MustCompile");
        }

        let go = |language, code, inline| exec_body(language, code, inline);
        for (body, expected) in [
            (go("python", "print(6 * 7)", false), "42\n"),
            (go("javascript", "6 * 7", true), "42\n"),
            (go("python", "import math\nmath.floor(2.5)", true), "2\n"),
            (go("node", "const fs = require('fs');\ntypeof fs.readFileSync", true), "function\n"),
        ] {
            let (status, _, reply) = http_response(server, "POST", "/v1/exec", Some(&body), &headers(None)).await;
            assert_eq!(status, 200, "{body} -> {reply}");
            assert_eq!(reply["stdout"], expected, "{body} -> {reply}");
            assert!(reply["exectimems"].is_u64());
        }

        // Errors: JSON, with Content-Type and Content-Length, as models.ErrorModel.
        for (body, status_wanted) in [
            (go("cobol", "DISPLAY 'x'", false), 400),
            ("{\"language\": 5}\n".to_string(), 400),
            ("x".repeat(9 << 20), 413),
        ] {
            let (status, response_headers, reply) =
                http_response(server, "POST", "/v1/exec", Some(&body), &headers(None)).await;
            assert_eq!(status, status_wanted, "{reply}");
            assert!(response_headers["content-type"].to_str().unwrap().starts_with("application/json"));
            let length: usize = response_headers["content-length"].to_str().unwrap().parse().unwrap();
            assert!(length > 0);
            let error: ErrorModel = serde_json::from_value(reply).expect("models.ErrorModel decodes");
            assert_eq!(error.code, status_wanted as i64);
            assert!(!error.error.is_empty());
        }
    }

    #[tokio::test]
    async fn the_authorization_the_user_configured_is_accepted() {
        let data = tempfile::tempdir().unwrap();
        let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", "go-client-token")]);
        let body = exec_body("python", "print('ok')", false);
        for configured in ["Bearer go-client-token", "go-client-token", "Token go-client-token"] {
            let (status, _, reply) =
                http_response(&server, "POST", "/v1/exec", Some(&body), &headers(Some(configured))).await;
            assert_eq!((status, reply["stdout"].as_str()), (200, Some("ok\n")), "{configured}");
        }
        let (status, _, reply) =
            http_response(&server, "POST", "/v1/exec", Some(&body), &headers(Some("Bearer wrong"))).await;
        assert_eq!(status, 401, "{reply}");
    }
}

/// sandlot's extension: STOP carries the placeholders a run saved, but only
/// up to 64 KiB of them (a STOP waits in the socket's outbox like any event
/// for a client that does not read); past that it says how many it left out.
#[tokio::test]
async fn stop_carries_small_placeholders_and_counts_large_ones() {
    let mut client = ws().await;
    let small = "import sandlot\nsandlot.set_placeholder('rows', [{'a': 1}])\nsandlot.set_placeholder('n', 3)";
    let (_, _, _, stop) = exec(&mut client, 1, json!({ "language": "python", "code": small })).await;
    assert_eq!(stop["placeholders"], json!({ "n": 3, "rows": [{ "a": 1 }] }), "{stop}");
    assert!(stop.get("placeholders_omitted").is_none(), "{stop}");
    let large = "import sandlot\nsandlot.set_placeholder('big', 'x' * 100_000)\nsandlot.set_placeholder('n', 3)";
    let (_, _, _, stop) = exec(&mut client, 2, json!({ "language": "python", "code": large })).await;
    assert_eq!((stop["placeholders_omitted"].clone(), stop["exitcode"].clone()), (json!(2), json!(0)), "{stop}");
    assert!(stop.get("placeholders").is_none());
    let (_, _, _, stop) = exec(&mut client, 3, json!({ "language": "python", "code": "print(1)" })).await;
    assert!(stop.get("placeholders").is_none() && stop.get("placeholders_omitted").is_none(), "{stop}");
}
