//! The client examples (`examples/clients/`), each run as a user would run
//! it, in Python (with the packages `tests/clients/install.sh` pins) and in
//! Node, against a real server: their whole output is checked.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::Server;

/// Each example and what it prints; `None` for JavaScript's where it prints the same.
const EXAMPLES: &[(&str, &str, Option<&str>)] = &[
    ("ranna", "42\nwebsocket run: exit 0\n2 4 6\nrest run: exit 0\n", None),
    (
        "actions",
        "trained\nfinished: finished 0\nprediction: [2, 4, 6]\ngreeting: hello\nstatus: finished\n",
        Some("trained\nfinished: finished 0\nprediction: [ 2, 4, 6 ]\ngreeting: hello\nstatus: finished\n"),
    ),
    ("processor", "ada is at [1, 2]\nend: 0\n", Some("ada is at [1,2]\nend: 0\n")),
    (
        "datasets",
        "progress: True\n1000 rows, y sums to 999000\n",
        Some("progress: true\n1000 rows, y sums to 999000\n"),
    ),
    (
        "direct_io",
        "prediction: [2.0, 4.0, 6.0]\nafter training: [10.0, 20.0, 30.0]\n",
        Some("prediction: [ 2, 4, 6 ]\nafter training: [ 10, 20, 30 ]\n"),
    ),
];

fn run(program: &str, args: &[&str], file: PathBuf, server: &Server) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(&file)
        .current_dir(file.parent().unwrap())
        .env("SANDLOT_URL", format!("http://{}", server.address))
        .output()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}: {stdout}\n{}", file.display(), String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn every_client_example_runs_against_a_real_server_in_python_and_javascript() {
    let server = Server::start(&[]);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/clients");
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/test-clients/bin/python");
    let python = python.to_str().unwrap();
    for (name, expected, javascript) in EXAMPLES {
        let printed = run(python, &[], dir.join(format!("{name}.py")), &server);
        assert_eq!(printed, *expected, "{name}.py");
        let printed = run("node", &["--experimental-websocket"], dir.join(format!("{name}.mjs")), &server);
        assert_eq!(printed, javascript.unwrap_or(expected), "{name}.mjs");
    }
    for printed in
        [run(python, &[], dir.join("mcp_http.py"), &server), run("node", &[], dir.join("mcp_http.mjs"), &server)]
    {
        let lines: Vec<&str> = printed.lines().collect();
        assert!(lines[0].starts_with("tools: ") && lines[0].contains("run_code"), "{printed}");
        assert_eq!(&lines[1..], ["working", "value: 42 exit: 0"], "{printed}");
    }
}
