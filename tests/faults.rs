//! Faults a server must survive without losing what it acknowledged: a
//! `kill -9` in the middle of uploads, dataset changes and runs, and a disk
//! that fills up under the data folder.

mod common;

use std::collections::HashMap;

use common::server::{Client, Server, http};
use serde_json::{Value, json};

const CHUNK: usize = 32 << 10;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed as u32).to_le_bytes()[1]).collect()
}

fn frame(position: usize, data: &[u8]) -> Vec<u8> {
    [(position as u64).to_le_bytes().as_slice(), data].concat()
}

async fn create(server: &Server, name: &str, size: usize) -> (u16, Value) {
    let body = json!({ "name": name, "input_data_size": size }).to_string();
    http(server, "POST", "/v1/csv/dataset", Some(&body)).await
}

async fn upload_socket(server: &Server, file: &str) -> Client {
    let mut socket = Client::connect(&server.ws_url("/")).await;
    socket.send(json!({ "uuid": file, "target": "file_upload", "framing": "raw" })).await;
    let hello = socket.recv().await;
    assert_eq!(hello["success"], true, "{hello}");
    socket
}

fn missing_ranges(progress: &Value) -> Vec<(usize, usize)> {
    progress["files"][0]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize))
        .collect()
}

/// While three uploads, dataset creates and deletes, and busy runs go on,
/// the process is killed with SIGKILL. After a restart, every acknowledged
/// chunk and every acknowledged dataset change is there.
#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &["--runs-per-second", "100000"], &[]);
    let size = 64 * CHUNK;
    let mut uploads = Vec::new();
    for n in 0..3u8 {
        let (status, created) = create(&server, &format!("load{n}"), size).await;
        assert_eq!(status, 200, "{created}");
        let file = created["uuid_input_file"].as_str().unwrap().to_string();
        let socket = upload_socket(&server, &file).await;
        uploads.push((created["uuid"].as_str().unwrap().to_string(), file, socket, bytes(size, n)));
    }
    // Busy guests, to load the machine while it dies.
    let mut busy = Client::connect(&server.ws_url("/v1/ws")).await;
    for _ in 0..4 {
        busy.send(json!({ "op": 1, "args": { "language": "js", "code": "for (;;) {}" } })).await;
    }
    let mut acked: Vec<HashMap<usize, bool>> = vec![HashMap::new(); 3];
    let mut created_names = Vec::new();
    let mut deleted_names = Vec::new();
    for round in 0..24 {
        for (n, (_, _, socket, content)) in uploads.iter_mut().enumerate() {
            let i = (round * 7 + n * 3) % 64;
            let start = i * CHUNK;
            socket.send_binary(frame(start, &content[start..start + CHUNK])).await;
            let ack = socket.recv().await;
            if ack["success"] == true {
                acked[n].insert(i, true);
            }
        }
        let name = format!("churn{round}");
        let (status, created) = create(&server, &name, 10).await;
        assert_eq!(status, 200, "{created}");
        created_names.push(name);
        if round % 3 == 0 {
            let uuid = created["uuid"].as_str().unwrap();
            assert_eq!(http(&server, "DELETE", &format!("/v1/dataset?uuid={uuid}"), None).await.0, 200);
            deleted_names.push(created_names.pop().unwrap());
        }
    }
    // The last chunks go out and the process dies before their answers.
    for (_, _, socket, content) in uploads.iter_mut() {
        socket.send_binary(frame(63 * CHUNK, &content[63 * CHUNK..])).await;
    }
    server.kill9();

    let server = Server::start_in(data.path(), &[], &[]);
    for (n, (uuid, _, _, _)) in uploads.iter().enumerate() {
        let (_, progress) = http(&server, "GET", &format!("/v1/dataset/progress?uuid={uuid}"), None).await;
        let missing = missing_ranges(&progress);
        for &i in acked[n].keys() {
            let start = i * CHUNK;
            assert!(!missing.iter().any(|&(a, b)| a <= start && start < b), "upload {n}: chunk {i} was lost");
        }
    }
    let (_, listed) = http(&server, "GET", "/v1/dataset", None).await;
    let names: Vec<&str> = listed["datasets"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    for name in &created_names {
        assert!(names.contains(&name.as_str()), "{name} was created and acknowledged: {names:?}");
    }
    for name in &deleted_names {
        assert!(!names.contains(&name.as_str()), "{name} was deleted and acknowledged: {names:?}");
    }
    // And every upload completes byte-exact from where it stood.
    for (uuid, file, _, content) in &uploads {
        let (_, progress) = http(&server, "GET", &format!("/v1/dataset/progress?uuid={uuid}"), None).await;
        let mut socket = upload_socket(&server, file).await;
        for (a, b) in missing_ranges(&progress) {
            for start in (a..b).step_by(CHUNK) {
                let end = (start + CHUNK).min(b);
                socket.send_binary(frame(start, &content[start..end])).await;
                assert_eq!(socket.recv().await["success"], true);
            }
        }
        let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
        let (status, reply) = http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await;
        assert_eq!(status, 200, "{reply}");
        let name = reply["name"].as_str().unwrap();
        assert_eq!(&std::fs::read(data.path().join(format!("datasets/{name}.csv"))).unwrap(), content);
    }
}

/// A small file system under the data folder, filled up while an upload
/// goes on: the chunk that does not fit gets a clear error and no
/// acknowledgement, nothing is corrupted, and once there is room again the
/// upload finishes byte-exact.
#[tokio::test]
async fn a_full_disk_gives_clear_errors_and_no_corruption() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: this machine does not let the tests mount a small file system (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_path_buf());
    let data = mount.path().join("data");
    let server = Server::start_in(&data, &["--min-free-disk-mib", "0"], &[]);
    let size = 2 << 20;
    let (status, created) = create(&server, "full", size).await;
    assert_eq!(status, 200, "{created}");
    let (uuid, file) =
        (created["uuid"].as_str().unwrap().to_string(), created["uuid_input_file"].as_str().unwrap().to_string());
    let content = bytes(size, 9);
    let mut socket = upload_socket(&server, &file).await;
    for i in 0..8 {
        let start = i * CHUNK;
        socket.send_binary(frame(start, &content[start..start + CHUNK])).await;
        assert_eq!(socket.recv().await["success"], true);
    }
    // Fill what is left of the disk.
    let filler = mount.path().join("filler");
    let free = {
        let stats = rustix::fs::statvfs(mount.path()).unwrap();
        stats.f_bavail * stats.f_frsize
    };
    std::fs::write(&filler, vec![0u8; free as usize]).ok();
    let mut refused = 0;
    for i in 8..(size / CHUNK) {
        let start = i * CHUNK;
        socket.send_binary(frame(start, &content[start..start + CHUNK])).await;
        let reply = socket.recv().await;
        if reply["success"] != true {
            refused += 1;
            assert_eq!(reply["code"], "server_error", "{reply}");
            let error = reply["error"].as_str().unwrap();
            assert!(error.contains("reference") && !error.contains(&*data.to_string_lossy()), "{reply}");
        }
    }
    assert!(refused > 0, "the full disk refused some chunks");
    // The server lives, and its state is whole: what was acknowledged is there.
    let (status, progress) = http(&server, "GET", &format!("/v1/dataset/progress?uuid={uuid}"), None).await;
    assert_eq!(status, 200, "{progress}");
    std::fs::remove_file(&filler).unwrap();
    let mut socket = upload_socket(&server, &file).await;
    for (a, b) in missing_ranges(&progress) {
        for start in (a..b).step_by(CHUNK) {
            let end = (start + CHUNK).min(b);
            socket.send_binary(frame(start, &content[start..end])).await;
            let ack = socket.recv().await;
            assert_eq!(ack["success"], true, "{ack}");
        }
    }
    let body = json!({ "uuid": uuid, "uuid_input_file": file }).to_string();
    let (status, reply) = http(&server, "PUT", "/v1/csv/dataset", Some(&body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(std::fs::read(data.join("datasets/full.csv")).unwrap(), content);
    drop(server);
    // A restart reads the store that lived through the full disk.
    let server = Server::start_in(&data, &["--min-free-disk-mib", "0"], &[]);
    let (_, listed) = http(&server, "GET", "/v1/dataset", None).await;
    assert_eq!(listed["datasets"][0]["state"], "ready", "{listed}");
}
