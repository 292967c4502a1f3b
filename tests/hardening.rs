//! The server process's own defences: an owner-only data folder, dropping
//! root for `--user`, saying so when it runs as root, Landlock, the seccomp
//! filter, and guests running below the threads that serve sockets and kills.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::server::{Client, Server, http};
use sandlot::Language;
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:\t0\t"))
}

async fn upload_one(server: &Server, name: &str, content: &[u8]) {
    let body = json!({ "name": name, "input_data_size": content.len() }).to_string();
    let (status, created) = http(server, "POST", "/v1/csv/dataset", Some(&body)).await;
    assert_eq!(status, 200, "{created}");
    let file = created["uuid_input_file"].as_str().unwrap();
    let mut socket = Client::connect(&server.ws_url("/")).await;
    socket.send(json!({ "uuid": file, "target": "file_upload", "framing": "raw" })).await;
    socket.recv().await;
    socket.send_binary([0u64.to_le_bytes().as_slice(), content].concat()).await;
    assert_eq!(socket.recv().await["complete"], true);
    let body = json!({ "uuid": created["uuid"], "uuid_input_file": file }).to_string();
    assert_eq!(http(server, "PUT", "/v1/csv/dataset", Some(&body)).await.0, 200);
}

#[tokio::test]
async fn the_data_folder_is_owner_only() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("state");
    let server = Server::start_in(&folder, &[], &[]);
    upload_one(&server, "secret", b"1,2\n").await;
    let body = json!({ "name": "pending", "input_data_size": 10 }).to_string();
    let (_, pending) = http(&server, "POST", "/v1/csv/dataset", Some(&body)).await;
    for dir in [folder.clone(), folder.join("datasets"), folder.join("uploads")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let part = folder.join(format!("uploads/{}.part", pending["uuid_input_file"].as_str().unwrap()));
    for file in [folder.join("state.redb"), folder.join("datasets/secret.csv"), part] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn started_as_root_with_user_it_drops_to_that_user() {
    if !is_root() {
        eprintln!("SKIPPED: --user needs the tests to run as root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("state");
    let log = data.path().join("server.log");
    let server = Server::start_logged(&folder, &["--user", "nobody"], &[("SANDLOT_LOG", "info")], &log);
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
        assert_eq!(uid, "Uid:\t65534\t65534\t65534\t65534", "every thread runs as nobody");
    }
    assert_eq!(std::fs::metadata(&folder).unwrap().uid(), 65534, "the data folder is nobody's");
    // Everything still works as nobody: runs, and datasets written and read.
    upload_one(&server, "kept", b"3,4\n").await;
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    client
        .send(json!({ "op": 1, "args": { "language": "python", "code": "print(open('/data/kept.csv').read())" } }))
        .await;
    let mut out = String::new();
    loop {
        let event = client.recv_within(Duration::from_secs(30)).await;
        match event["code"].as_u64() {
            Some(3) => out.push_str(event["data"]["stdout"].as_str().unwrap_or("")),
            Some(4) => break,
            _ => {}
        }
    }
    assert_eq!(out, "3,4\n\n");
    assert!(std::fs::read_to_string(&log).unwrap().contains("running as nobody"));
}

#[tokio::test]
async fn it_says_whether_it_runs_as_root_and_whether_landlock_is_on() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server = Server::start_logged(&data.path().join("state"), &[], &[("SANDLOT_LOG", "info")], &log);
    let (status, _) = http(&server, "GET", "/v1/info", None).await;
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("landlock: on") || text.contains("landlock: off ("), "{text}");
    assert_eq!(text.contains("running as root"), is_root(), "{text}");
}

/// A `/proc/.../status` line's value.
fn status_field(status_file: &Path, field: &str) -> String {
    let status = std::fs::read_to_string(status_file).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
    line.split_once(':').unwrap().1.trim().to_string()
}

/// Runs `code` through ranna and returns its stdout.
async fn ranna_stdout(server: &Server, language: Language, code: &str) -> String {
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    client.send(json!({ "op": 1, "args": { "language": language.name(), "code": code } })).await;
    let mut out = String::new();
    loop {
        let event = client.recv_within(Duration::from_secs(60)).await;
        match event["code"].as_u64() {
            Some(3) => out.push_str(event["data"]["stdout"].as_str().unwrap_or("")),
            Some(4) => return out,
            _ => {}
        }
    }
}

/// The server refuses the system calls it never makes (`harden::syscall_filters`,
/// whose effect the library's unit tests check call by call): it says so,
/// every one of its threads carries the filters, those started later too
/// (sessions, uploads), and every language still runs under them.
#[tokio::test]
async fn every_thread_of_the_server_runs_under_the_seccomp_filter() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server = Server::start_logged(&data.path().join("state"), &[], &[("SANDLOT_LOG", "info")], &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("seccomp: on ("), "{text}");
    // This process's own filters (a container's, say) are inherited too.
    let inherited: usize = status_field(Path::new("/proc/self/status"), "Seccomp_filters").parse().unwrap();
    let ours = sandlot::harden::syscall_filters().unwrap().len();
    for language in Language::ALL {
        let hello = ranna_stdout(&server, language, language.spec().hello).await;
        assert_eq!(hello, "hello\n", "{language}");
    }
    upload_one(&server, "under-filter", b"5,6\n").await;
    let read = ranna_stdout(&server, Language::Python, "print(open('/data/under-filter.csv').read(), end='')").await;
    assert_eq!(read, "5,6\n");
    // And whatever is logged (the filter's status is worked out whether or not it is logged).
    let quiet = Server::start(&[]);
    for pid in [server.pid(), quiet.pid()] {
        let mut threads = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let status = task.unwrap().path().join("status");
            assert_eq!(status_field(&status, "Seccomp"), "2", "{}", status.display());
            let filters: usize = status_field(&status, "Seccomp_filters").parse().unwrap();
            assert_eq!(filters, inherited + ours, "{}", status.display());
            threads += 1;
        }
        assert!(threads > 2, "{threads} threads");
    }
}

#[tokio::test]
async fn seccomp_false_leaves_the_server_unfiltered() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server =
        Server::start_logged(&data.path().join("state"), &["--seccomp", "false"], &[("SANDLOT_LOG", "info")], &log);
    assert!(std::fs::read_to_string(&log).unwrap().contains("seccomp: off (turned off in the settings)"));
    let own = status_field(Path::new("/proc/self/status"), "Seccomp_filters");
    let status = format!("/proc/{}/status", server.pid());
    assert_eq!(status_field(Path::new(&status), "Seccomp_filters"), own);
    assert_eq!(ranna_stdout(&server, Language::Lua, "print('hi')").await, "hi\n");
}

/// Each thread of the server: its name, nice value and CPU ticks used.
fn threads(pid: u32) -> Vec<(String, i32, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else { continue };
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        // After the name: state is field 3, utime 14, nice 19.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        threads.push((name, fields[16].parse().unwrap(), fields[11].parse().unwrap()));
    }
    threads
}

#[tokio::test]
async fn guests_run_below_the_server_s_own_threads() {
    let server = Server::start(&[]);
    let mut client = Client::connect(&server.ws_url("/v1/ws")).await;
    client.send(json!({ "op": 1, "args": { "language": "python", "code": "while True:\n    pass" } })).await;
    let runid = loop {
        let event = client.recv_within(Duration::from_secs(30)).await;
        if event["code"] == 2 {
            break event["data"]["runid"].as_str().unwrap().to_string();
        }
    };
    let before = threads(server.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = threads(server.pid());
    for (name, nice, _) in &after {
        // The guests' threads, and the one that makes warm instances ahead.
        let expected = if matches!(name.as_str(), "sandlot-guest" | "sandlot-refill") { 10 } else { 0 };
        assert_eq!(*nice, expected, "thread {name}: {after:?}");
    }
    // The busy guest's ticks went to a guest thread.
    let used = |name: &str| -> u64 {
        let total = |list: &[(String, i32, u64)]| list.iter().filter(|t| t.0 == name).map(|t| t.2).sum::<u64>();
        total(&after) - total(&before)
    };
    assert!(used("sandlot-guest") > used("tokio-rt-worker"), "before {before:?}, after {after:?}");
    // And it is killed as ever.
    client.send(json!({ "op": 2, "args": { "runid": runid } })).await;
    loop {
        let event = client.recv_within(Duration::from_secs(10)).await;
        if event["code"] == 4 {
            assert_eq!(event["data"]["runid"], runid.as_str());
            break;
        }
    }
}
