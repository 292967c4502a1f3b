//! The MCP face with the official MCP client (PyPI `mcp`, installed by
//! `guest-runtimes/tools.sh` into `.tools/mcp-client`), as an agent's host
//! drives it: `sandlot mcp` over stdio, and `/mcp` of a real server with a
//! token. The client script (`tests/clients/mcp_client.py`) lists the tools,
//! runs Python, JavaScript and Lua, exceeds limits and sends bad arguments,
//! and prints what it got.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::server::{Server, http_with};
use serde_json::Value;

fn client_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/mcp-client/bin/python");
    assert!(python.exists(), "no MCP client at {}: run guest-runtimes/tools.sh", python.display());
    python
}

fn drive(args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/mcp_client.py");
    let out = Command::new(client_python()).arg(script).args(args).output().expect("the MCP client starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check(report: &Value) {
    assert_eq!(report["server"], "sandlot");
    assert_eq!(report["tools"], serde_json::json!(["list_languages", "run_code"]));
    let call = |name: &str| &report["calls"][name];
    let ran = |name: &str| &call(name)["structured"];
    assert_eq!((ran("python")["stdout"].as_str(), ran("python")["stderr"].as_str()), (Some("42\n"), Some("oops\n")));
    assert!(call("python")["text"].as_str().unwrap().contains("42"), "the text content has the output too");
    assert_eq!(ran("javascript")["stdout"], "2,4,6\n");
    assert_eq!(ran("lua")["stdout"], "ababab\n");
    assert_eq!(ran("stdin")["stdout"], "hello\n");
    assert_eq!((ran("exit_code")["exit_code"].as_i64(), ran("exit_code")["reason"].as_str()), (Some(3), Some("error")));
    assert_eq!(ran("timeout")["reason"], "timeout", "{}", call("timeout"));
    assert!(ran("timeout")["wall_time_ms"].as_u64().unwrap() < 5_000, "timeout_s: 1 applies: {}", call("timeout"));
    assert_eq!(ran("memory")["reason"], "memory", "{}", call("memory"));
    for (name, says) in [
        ("unknown_language", "unknown language \"cobol\""),
        ("missing_code", "needs \"code\""),
        ("bad_timeout", "timeout_s must be"),
    ] {
        assert_eq!(call(name)["is_error"], true, "{name}: a tool error, {}", call(name));
        assert!(call(name)["text"].as_str().unwrap().contains(says), "{name}: {}", call(name));
    }
    let languages: Vec<&str> =
        ran("languages")["languages"].as_array().unwrap().iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(languages, ["python", "javascript", "python-sci", "lua"]);
    assert!(call("languages")["text"].as_str().unwrap().contains("no network"));
    assert_eq!(ran("after_errors")["stdout"], "still up\n");
}

#[test]
fn over_stdio() {
    check(&drive(&["stdio", env!("CARGO_BIN_EXE_sandlot")]));
}

#[tokio::test]
async fn over_http_with_a_token() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[], &[("SANDLOT_TOKENS", "mcp-token")]);
    let url = server.http_url("/mcp");
    let report = tokio::task::spawn_blocking(move || drive(&["http", &url, "mcp-token"])).await.unwrap();
    check(&report);
    // Without the token: refused before MCP is reached.
    let (status, _) = http_with(&server, "POST", "/mcp", Some("{}"), &[("content-type", "application/json")]).await;
    assert_eq!(status, 401);
}
