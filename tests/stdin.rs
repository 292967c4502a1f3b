//! Standard input over a real server: ranna's EXEC with `stdin` (the whole
//! input) or `interactive` (kept open for op 3 STDIN), and `POST /v1/exec`'s
//! `stdin`. A run sent nothing reads EOF; a read waits for the client, and is
//! still ended by a KILL and by the wall clock; what waits is bounded.

mod common;

use std::time::{Duration, Instant};

use common::server::{Client, Server, http};
use serde_json::{Value, json};

async fn ws(server: &Server) -> Client {
    Client::connect(&server.ws_url("/v1/ws")).await
}

/// Sends an EXEC and returns its run id.
async fn spawn(client: &mut Client, args: Value) -> String {
    client.send(json!({ "op": 1, "nonce": 1, "args": args })).await;
    let spawn = client.recv().await;
    assert_eq!(spawn["code"], 2, "{spawn}");
    spawn["data"]["runid"].as_str().unwrap().to_string()
}

/// Reads events until the run's STOP: (stdout, STOP data).
async fn until_stop(client: &mut Client) -> (String, Value) {
    let mut stdout = String::new();
    loop {
        let event = client.recv().await;
        match event["code"].as_u64() {
            Some(3) => stdout.push_str(event["data"]["stdout"].as_str().unwrap_or("")),
            Some(4) => return (stdout, event["data"].clone()),
            _ => panic!("unexpected event {event}"),
        }
    }
}

/// Reads LOG events until stdout ends with one of `ends`; what came.
async fn until_output(client: &mut Client, ends: &[&str]) -> String {
    let mut stdout = String::new();
    while !ends.iter().any(|end| stdout.ends_with(end)) {
        let event = client.recv().await;
        assert_eq!(event["code"], 3, "expected output, got {event} after {stdout:?}");
        stdout.push_str(event["data"]["stdout"].as_str().unwrap_or(""));
    }
    stdout
}

fn stdin_op(runid: &str, data: Option<&str>, eof: bool) -> Value {
    let mut args = json!({ "runid": runid });
    if let Some(data) = data {
        args["data"] = json!(data);
    }
    if eof {
        args["eof"] = json!(true);
    }
    json!({ "op": 3, "nonce": 9, "args": args })
}

/// Reads every line of its input and prints their sum, then what a read past the end gives.
const SUM: [(&str, &str); 5] = [
    (
        "javascript",
        "const text = require('fs').readFileSync(0, 'utf8');\nconsole.log(text.split('\\n').filter(Boolean).map(Number).reduce((a, b) => a + b, 0));\nconsole.log(require('fs').readFileSync('/dev/stdin') === '' ? 'eof' : 'more');",
    ),
    (
        "js",
        "let sum = 0;\nconst rl = require('readline').createInterface({ input: process.stdin });\nrl.on('line', (l) => { sum += Number(l); });\nrl.on('close', () => { console.log(sum); console.log('eof'); });",
    ),
    (
        "python",
        "import sys\nprint(sum(int(l) for l in sys.stdin))\ntry:\n    input()\nexcept EOFError:\n    print('eof')",
    ),
    (
        "python-sci",
        "import sys\nprint(sum(int(l) for l in sys.stdin))\ntry:\n    input()\nexcept EOFError:\n    print('eof')",
    ),
    ("lua", "local s = 0\nfor l in io.lines() do s = s + tonumber(l) end\nprint(s)\nprint(io.read() == nil and 'eof')"),
];

#[tokio::test]
async fn a_run_sent_nothing_reads_eof_and_a_given_input_is_read_whole() {
    let server = Server::shared();
    let mut client = ws(server).await;
    for (language, code) in SUM {
        spawn(&mut client, json!({ "language": language, "code": code })).await;
        let (stdout, stop) = until_stop(&mut client).await;
        assert_eq!((stdout.as_str(), &stop["exitcode"]), ("0\neof\n", &json!(0)), "{language}: {stop}");

        spawn(&mut client, json!({ "language": language, "code": code, "stdin": "3\n4\n35\n" })).await;
        let (stdout, stop) = until_stop(&mut client).await;
        assert_eq!(stdout, "42\neof\n", "{language}: {stop}");

        let body = json!({ "language": language, "code": code, "stdin": "1\n2\n" });
        let (status, reply) = http(server, "POST", "/v1/exec", Some(&body.to_string())).await;
        assert_eq!((status, reply["stdout"].as_str()), (200, Some("3\neof\n")), "{language}: {reply}");
    }
}

#[tokio::test]
async fn guess_a_number_over_the_ranna_socket() {
    let programs = [
        (
            "javascript",
            "const rl = require('readline').createInterface({ input: process.stdin, output: process.stdout });\nconst ask = () => rl.question('guess: ', (answer) => {\n  const guess = Number(answer);\n  if (guess === 37) { console.log('right'); rl.close(); return; }\n  console.log(guess < 37 ? 'higher' : 'lower');\n  ask();\n});\nask();",
        ),
        (
            "python",
            "secret = 37\nwhile True:\n    guess = int(input('guess: '))\n    if guess == secret:\n        print('right')\n        break\n    print('higher' if guess < secret else 'lower')",
        ),
        (
            "lua",
            "local secret = 37\nwhile true do\n  io.write('guess: ')\n  io.flush()\n  local guess = tonumber(io.read())\n  if guess == secret then print('right') break end\n  print(guess < secret and 'higher' or 'lower')\nend",
        ),
    ];
    let server = Server::shared();
    let mut client = ws(server).await;
    for (language, code) in programs {
        let runid = spawn(&mut client, json!({ "language": language, "code": code, "interactive": true })).await;
        let (mut low, mut high, mut guesses) = (0, 100, 0);
        until_output(&mut client, &["guess: "]).await;
        loop {
            let guess = (low + high) / 2;
            guesses += 1;
            client.send(stdin_op(&runid, Some(&format!("{guess}\n")), false)).await;
            // The answer, then the next prompt (in one LOG event or more).
            let answer = until_output(&mut client, &["guess: ", "right\n"]).await;
            match answer.lines().next().unwrap_or_default() {
                "right" => break,
                "higher" => low = guess + 1,
                "lower" => high = guess - 1,
                other => panic!("{language}: unexpected answer {other:?}"),
            }
        }
        assert!(guesses <= 7, "{language}: a binary search takes 7 guesses at most, took {guesses}");
        let (_, stop) = until_stop(&mut client).await;
        assert_eq!((stop["exitcode"].clone(), stop["reason"].clone()), (json!(0), json!("exit")), "{language}");
    }
}

#[tokio::test]
async fn a_run_waiting_on_stdin_is_killed_and_one_past_its_deadline_ends() {
    let server = Server::start(&["--timeout", "1"]);
    let mut client = ws(&server).await;
    for (language, code) in [
        ("python", "print('waiting')\ninput()"),
        ("lua", "print('waiting')\nio.read()"),
        ("javascript", "console.log('waiting');\nprocess.stdin.on('data', (d) => console.log(d));"),
    ] {
        let runid = spawn(&mut client, json!({ "language": language, "code": code, "interactive": true })).await;
        until_output(&mut client, &["waiting\n"]).await;
        let asked = Instant::now();
        client.send(json!({ "op": 2, "args": { "runid": runid } })).await;
        let (_, stop) = until_stop(&mut client).await;
        assert_eq!(stop["reason"], "killed", "{language}: {stop}");
        assert!(asked.elapsed() < Duration::from_millis(500), "{language}: KILL took {:?}", asked.elapsed());

        spawn(&mut client, json!({ "language": language, "code": code, "interactive": true })).await;
        let (_, stop) = until_stop(&mut client).await;
        assert_eq!(stop["reason"], "timeout", "{language}: {stop}");
        assert!(stop["exectimems"].as_u64().unwrap() < 2_000, "{language}: {stop}");
    }
}

#[tokio::test]
async fn bad_stdin_ops_get_errors_and_the_socket_stays_up() {
    let server = Server::shared();
    let mut client = ws(server).await;
    let error = async |client: &mut Client, op: Value| -> String {
        client.send(op).await;
        let reply = client.recv().await;
        assert_eq!((reply["code"].clone(), reply["nonce"].clone()), (json!(1), json!(9)), "{reply}");
        reply["data"].as_str().unwrap().to_string()
    };
    // A run not started interactive takes no STDIN.
    let runid = spawn(&mut client, json!({ "language": "python", "code": "import time\ntime.sleep(5)" })).await;
    let why = error(&mut client, stdin_op(&runid, Some("x"), false)).await;
    assert!(why.contains("\"interactive\": true"), "{why}");
    client.send(json!({ "op": 2, "args": { "runid": runid } })).await;
    until_stop(&mut client).await;
    // What waits unread is bounded; after EOF nothing more is taken.
    let runid = spawn(
        &mut client,
        json!({ "language": "python", "code": "print('waiting')\nimport time\ntime.sleep(5)", "interactive": true }),
    )
    .await;
    until_output(&mut client, &["waiting\n"]).await;
    let half = "x".repeat(600 << 10);
    client.send(stdin_op(&runid, Some(&half), false)).await;
    let why = error(&mut client, stdin_op(&runid, Some(&half), false)).await;
    assert!(why.contains("at most 1048576"), "{why}");
    client.send(stdin_op(&runid, None, true)).await;
    let why = error(&mut client, stdin_op(&runid, Some("more"), false)).await;
    assert!(why.contains("closed"), "{why}");
    // Unknown runs, missing ids and wrong shapes.
    assert!(error(&mut client, stdin_op("nope", Some("x"), false)).await.contains("no running run nope"));
    assert!(error(&mut client, json!({ "op": 3, "nonce": 9, "args": {} })).await.contains("runid"));
    assert!(
        error(&mut client, json!({ "op": 3, "nonce": 9, "args": { "runid": runid, "data": 5 } }))
            .await
            .contains("STDIN")
    );
    client.send(json!({ "op": 2, "args": { "runid": runid } })).await;
    until_stop(&mut client).await;
    client.send(json!({ "op": 0, "nonce": 2 })).await;
    assert_eq!(client.recv().await["code"], 0, "the socket is still up");
}

#[tokio::test]
async fn the_actions_face_takes_a_whole_input() {
    let server = Server::shared();
    let mut client = Client::connect(&server.ws_url("/")).await;
    for (language, (_, code)) in [("python", SUM[2]), ("lua", SUM[4]), ("javascript", SUM[0])] {
        let main = language.parse::<sandlot::Language>().unwrap().main_file();
        let files = json!([{ "filename": main, "content": code }]);
        let run = json!({ "action": "run", language: { "files": files, "stdin": "30\n12\n" } });
        let (_, stdout, finished) = common::server::run_action(&mut client, run).await;
        assert_eq!(stdout, "42\neof\n", "{language}: {finished}");
        let (_, stdout, _) =
            common::server::run_action(&mut client, json!({ "action": "run", language: { "files": files } })).await;
        assert_eq!(stdout, "0\neof\n", "{language}: sent nothing, it reads EOF");
    }
    let files = json!([{ "filename": "main.py", "content": "input()" }]);
    client.send(json!({ "action": "run", "python": { "files": files, "stdin": 5 } })).await;
    let reply = client.recv().await;
    assert!(reply["error"].as_str().unwrap().contains("stdin must be a string"), "{reply}");
}
