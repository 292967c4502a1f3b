//! The processor face over a real server (seed 004): the lifecycle, engine
//! command round trips, interpreter errors, and clients that misbehave.

mod common;

use std::time::{Duration, Instant};

use common::server::{Client, Server};
use serde_json::{Value, json};

async fn ready_client(server: &Server, language: &str, context: Value) -> Client {
    let mut client = Client::connect(&server.ws_url("/processor")).await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "ready", "{hello}");
    assert!(hello["time"].as_str().unwrap().parse::<u128>().is_ok());
    client.send(json!({ "type": "context", "language": language, "context": context })).await;
    assert_eq!(client.recv().await["type"], "ready");
    client
}

/// Collects messages until `end`, answering engine commands with `answer`.
async fn until_end(client: &mut Client, answer: impl Fn(&Value) -> Option<Value>) -> (String, Vec<Value>, Value) {
    let mut stdout = String::new();
    let mut others = Vec::new();
    loop {
        let message = client.recv().await;
        match message["type"].as_str() {
            Some("stdout") => stdout.push_str(message["message"].as_str().unwrap()),
            Some("command") => {
                if let Some(reply) = answer(&message) {
                    client.send(reply).await;
                }
                others.push(message);
            }
            Some("end") => return (stdout, others, message),
            _ => others.push(message),
        }
    }
}

#[tokio::test]
async fn the_lifecycle_with_engine_commands_in_every_language() {
    let server = Server::shared();
    let scripts = [
        (
            "python",
            "import sandlot\nprint('hero', sandlot.context['hero'])\nfor step in range(3):\n    pos = sandlot.engine('move', {'dx': 1})\n    print('at', pos['x'])\ntry:\n    sandlot.engine('fly', {})\nexcept sandlot.EngineError as e:\n    print('refused:', e)",
        ),
        (
            "javascript",
            "console.log('hero', sandlot.context.hero);\nfor (let step = 0; step < 3; step++) {\n  const pos = sandlot.engine('move', {dx: 1});\n  console.log('at', pos.x);\n}\ntry { sandlot.engine('fly', {}) } catch (e) { console.log('refused:', e.message) }",
        ),
        (
            "lua",
            "print('hero ' .. sandlot.context.hero)\nfor step = 1, 3 do\n  local pos = sandlot.engine('move', {dx = 1})\n  print('at ' .. pos.x)\nend\nlocal ok, e = pcall(sandlot.engine, 'fly', {})\nprint('refused: ' .. e.message)",
        ),
    ];
    for (language, code) in scripts {
        let mut client = ready_client(server, language, json!({ "hero": "ada" })).await;
        client.send_text(code).await;
        let x = std::sync::atomic::AtomicI64::new(0);
        let (stdout, others, end) = until_end(&mut client, |command| {
            let id = command["id"].clone();
            Some(match command["command"].as_str() {
                Some("move") => {
                    let now =
                        x.fetch_add(command["args"]["dx"].as_i64().unwrap(), std::sync::atomic::Ordering::SeqCst) + 1;
                    json!({ "type": "command_result", "id": id, "ok": true, "result": { "x": now } })
                }
                _ => json!({ "type": "command_result", "id": id, "ok": false, "error": "cannot fly here" }),
            })
        })
        .await;
        assert_eq!(stdout, "hero ada\nat 1\nat 2\nat 3\nrefused: cannot fly here\n", "{language}: {others:?}");
        assert_eq!(others.iter().filter(|m| m["type"] == "command").count(), 4);
        assert_eq!((end["exitCode"].clone(), end["reason"].clone()), (json!(0), json!("exit")), "{end}");
        // Ready for another run on the same socket.
        assert_eq!(client.recv().await["type"], "ready");
    }
}

#[tokio::test]
async fn interpreter_errors_carry_the_message_and_line() {
    let server = Server::shared();
    for (language, code, expected) in [
        ("python", "x = 1\nraise RuntimeError('lost')", "line 2"),
        ("javascript", "let x = 1;\nthrow new Error('lost');", "main.js:2"),
        ("python", "def f(:\n    pass", "SyntaxError"),
    ] {
        let mut client = ready_client(server, language, json!({})).await;
        client.send_text(code).await;
        let (_, others, end) = until_end(&mut client, |_| None).await;
        let error = others.iter().find(|m| m["type"] == "error").unwrap_or_else(|| panic!("no error in {others:?}"));
        assert_eq!(error["code"], "INTERPRETER_ERROR");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(expected), "{language}: {message}");
        assert_eq!(end["exitCode"], 1);
    }
}

#[tokio::test]
async fn a_client_that_never_answers_hits_the_deadline() {
    let server = Server::start(&["--timeout", "1"]);
    let mut client = ready_client(&server, "python", json!(null)).await;
    client.send_text("import sandlot\nsandlot.engine('wait', {})\nprint('never')").await;
    let started = Instant::now();
    let (stdout, others, end) = until_end(&mut client, |_| None).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stdout, "");
    assert_eq!((end["reason"].clone(), end["exitCode"].clone()), (json!("timeout"), json!(124)));
    let error = others.iter().find(|m| m["type"] == "error").expect("the timeout is explained");
    assert_eq!(error["code"], "SERVER_ERROR");
}

#[tokio::test]
async fn a_slow_client_does_not_block_other_sessions() {
    let server = Server::shared();
    let mut slow = ready_client(server, "javascript", json!({})).await;
    slow.send_text("const r = sandlot.engine('think', {}); console.log('answer', r)").await;
    let command = slow.recv().await;
    assert_eq!(command["type"], "command");
    // While the slow client sits on its answer, another session runs to its end.
    let mut quick = ready_client(server, "python", json!({})).await;
    quick.send_text("print('quick')").await;
    let (stdout, _, end) = until_end(&mut quick, |_| None).await;
    assert_eq!((stdout.as_str(), end["exitCode"].clone()), ("quick\n", json!(0)));
    slow.send(json!({ "type": "command_result", "id": command["id"], "ok": true, "result": 42 })).await;
    let (stdout, _, _) = until_end(&mut slow, |_| None).await;
    assert_eq!(stdout, "answer 42\n");
}

#[tokio::test]
async fn a_disconnect_ends_the_run() {
    // One running slot, and a time limit far off: the next run gets the slot
    // soon only if the abandoned one was stopped.
    let server = Server::start(&["--max-running", "1", "--max-running-per-client", "1", "--timeout", "120"]);
    let mut client = ready_client(&server, "python", json!({})).await;
    client.send_text("import sandlot\nsandlot.set_placeholder('started', True)\nwhile True:\n    pass").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    // The server keeps serving, and the abandoned guest is gone from the running count.
    let mut next = ready_client(&server, "python", json!({})).await;
    let started = Instant::now();
    loop {
        next.send_text("print('still serving')").await;
        let first = next.recv().await;
        if first["type"] != "error" {
            let (stdout, _, end) = until_end(&mut next, |_| None).await;
            let stdout = format!("{}{stdout}", first["message"].as_str().unwrap_or(""));
            assert_eq!((stdout.as_str(), end["exitCode"].clone()), ("still serving\n", json!(0)), "{first}");
            break;
        }
        // Refused while the slot is taken: the kill may take a moment to free
        // it, never as long as the spinning loop would run (its fuel lasts ~4 s).
        assert!(started.elapsed() < Duration::from_secs(2), "the abandoned run still holds the slot: {first}");
        assert_eq!(next.recv().await["type"], "ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
        next.send(json!({ "type": "context", "language": "python", "context": {} })).await;
        assert_eq!(next.recv().await["type"], "ready");
    }
}

#[tokio::test]
async fn out_of_order_and_malformed_messages_get_server_errors() {
    let server = Server::shared();
    let mut client = Client::connect(&server.ws_url("/processor")).await;
    assert_eq!(client.recv().await["type"], "ready");
    for (message, expected) in [
        ("print('code before context')", "expected the context message"),
        ("{\"type\": \"command_result\", \"id\": 1, \"ok\": true}", "{\"type\":\"context\""),
        ("{\"type\": \"context\", \"language\": \"cobol\"}", "unknown language"),
        ("{\"type\": \"context\"}", "needs a \"language\""),
    ] {
        client.send_text(message).await;
        let reply = client.recv().await;
        assert_eq!(
            (reply["type"].clone(), reply["code"].clone()),
            (json!("error"), json!("SERVER_ERROR")),
            "{message} -> {reply}"
        );
        assert!(reply["message"].as_str().unwrap().contains(expected), "{message} -> {reply}");
    }
    client.send_binary(vec![0; 4]).await;
    assert_eq!(client.recv().await["code"], "SERVER_ERROR");
    client.send(json!({ "type": "context", "language": "js", "context": {} })).await;
    assert_eq!(client.recv().await["type"], "ready");
    client.send_text("const r = sandlot.engine('go', {}); console.log(r)").await;
    let command = client.recv().await;
    for bad in [
        json!({ "type": "command_result", "id": 999, "ok": true }),
        json!({ "type": "command_result", "ok": true }),
        json!({ "type": "command_result", "id": command["id"] }),
        json!({ "type": "context", "language": "python" }),
    ] {
        client.send(bad.clone()).await;
        let reply = client.recv().await;
        assert_eq!(reply["code"], "SERVER_ERROR", "{bad} -> {reply}");
    }
    client.send(json!({ "type": "command_result", "id": command["id"], "ok": true, "result": "fine" })).await;
    let (stdout, _, end) = until_end(&mut client, |_| None).await;
    assert_eq!((stdout.as_str(), end["exitCode"].clone()), ("fine\n", json!(0)));
}

#[tokio::test]
async fn shutdown_stops_running_guests_and_reports_their_end() {
    let server = Server::start(&[]);
    let mut client = ready_client(&server, "python", json!({})).await;
    client.send_text("print('working', flush=True)\nwhile True:\n    pass").await;
    assert_eq!(client.recv().await["message"], "working\n");
    let stopping = std::thread::spawn(move || server.terminate());
    let (_, _, end) = until_end(&mut client, |_| None).await;
    assert_eq!(end["reason"], "killed");
    assert!(client.closed_within(Duration::from_secs(5)).await);
    let status = stopping.join().unwrap();
    assert!(status.success(), "{status:?}");
}

/// With `--low-latency` the script's thread polls for its engine's answer
/// before it waits: answers still come back in order, and a client that
/// never answers still meets the deadline.
#[tokio::test]
async fn under_low_latency_commands_are_answered_in_order_and_a_silent_client_times_out() {
    let server = Server::start(&["--low-latency", "--timeout", "2"]);
    let mut client = ready_client(&server, "python", json!({})).await;
    client
        .send_text("import sandlot\ntotal = 0\nfor i in range(300):\n    total += sandlot.engine('add', {'i': i})['n']\nprint(total)")
        .await;
    let (stdout, commands, end) = until_end(&mut client, |m| {
        Some(json!({ "type": "command_result", "id": m["id"], "ok": true, "result": { "n": m["args"]["i"] } }))
    })
    .await;
    assert_eq!((stdout.as_str(), end["exitCode"].clone()), ("44850\n", json!(0)), "{end}");
    assert_eq!(commands.iter().filter(|m| m["type"] == "command").count(), 300);

    let mut silent = ready_client(&server, "lua", json!({})).await;
    silent.send_text("sandlot.engine('wait', {})\nprint('never')").await;
    let started = Instant::now();
    let (stdout, _, end) = until_end(&mut silent, |_| None).await;
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert_eq!((stdout.as_str(), end["reason"].clone()), ("", json!("timeout")));
}
