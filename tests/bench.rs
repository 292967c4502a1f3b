//! `sandlot bench` runs end to end on its tiny setting and writes what it
//! promises. (What it measures is not asserted: speed belongs to the bench.)

use std::process::Command;

/// Runs `sandlot bench --quick` with `args`, writing into a fresh folder
/// named after `name`; that folder and the printed table, once it succeeded.
fn quick_bench(name: &str, args: &[&str]) -> (std::path::PathBuf, String) {
    let out = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .arg("bench")
        .args(args)
        .args(["--quick", "--out"])
        .arg(&out)
        .env("SANDLOT_LOG", "warn")
        .output()
        .expect("sandlot bench starts");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    (out, stdout)
}

#[test]
fn the_quick_bench_runs_and_writes_its_results() {
    let (out, stdout) = quick_bench("sandlot-bench", &[]);
    assert!(stdout.contains("| measure | python | javascript | lua |"), "{stdout}");
    for row in [
        "library, warm instance: total",
        "library, cold: total",
        "WebSocket EXEC → STOP, warm instance",
        "WebSocket EXEC → STOP, cold",
        "POST /v1/exec",
        "baseline",
        "throughput, 4 clients",
        "throughput, library alone",
        "kill latency",
        "direct IO: prediction round trip",
        "direct IO: round trip, `--low-latency`",
        "direct IO: predictions on one socket",
        "game-engine command round trip (processor)",
        "game-engine command, `--low-latency`",
        "`run_model` round trip (actions)",
        "`run_model`, `--low-latency`",
        "python-sci",
        "process start → first run answered",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in {stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).expect("bench.json written"))
            .expect("valid JSON");
    let languages = report["languages"].as_array().expect("languages");
    assert_eq!(languages.len(), sandlot::Language::components().count());
    for language in languages {
        for start in ["warm_start", "cold_start"] {
            assert_eq!(language[start]["total"]["n"], 5, "{language}");
            assert!(language[start]["total"]["median_ms"].as_f64().unwrap() > 0.0);
        }
        assert!(language["library_throughput"]["sessions_per_second"].as_f64().unwrap() > 0.0);
        assert_eq!(language["throughput"].as_array().unwrap().len(), 2);
        assert!(language["density"]["private_bytes_per_session"].as_f64().unwrap() > 0.0, "{language}");
        // Measured with and without low latency, wherever the bench runs.
        for measure in ["direct_io", "engine_commands", "run_model"] {
            for round_trip in ["round_trip", "round_trip_low_latency"] {
                assert!(language[measure][round_trip]["median_ms"].as_f64().unwrap() > 0.0, "{language}");
            }
        }
        for per_second in ["commands_per_second", "commands_per_second_low_latency"] {
            assert!(language["engine_commands"][per_second].as_f64().unwrap() > 0.0, "{language}");
        }
    }
    assert_eq!(report["process_start"]["n"], 1, "one server process timed: {}", report["process_start"]);
    let svg = std::fs::read_to_string(out.join("cold-start.svg")).expect("the chart is written");
    assert!(
        svg.starts_with("<svg")
            && svg.contains("python")
            && svg.contains("javascript")
            && svg.contains("lua")
            && svg.contains("python-sci"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_quick_soak_runs_and_reports_flat_or_not() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(["soak", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("sandlot soak starts");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("| time | RSS | open files | runs done |"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("soak.json")).expect("soak.json written")).unwrap();
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 5, "{report}");
    assert!(samples.last().unwrap()["runs"].as_u64().unwrap() > 0, "the load ran: {report}");
    assert_eq!(run.status.success(), report["flat"] == true, "the exit status says whether it was flat");
}

/// `sandlot bench --cluster --quick` starts its own nats-server and nodes,
/// and reports a node alone, clusters of 1 and 2, and a cluster of 1 that
/// queues every run, for Lua and Python.
#[test]
fn the_quick_cluster_bench_runs_and_writes_its_results() {
    let (out, stdout) = quick_bench("sandlot-bench-cluster", &["--cluster"]);
    for setup in ["| lua | alone |", "| python | 1 node |", "| lua | 1 node, every run queued |", "| lua | 2 nodes |"] {
        assert!(stdout.contains(setup), "no {setup:?} row in {stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cluster.json")).expect("cluster.json written"))
            .expect("valid JSON");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 8, "alone, 1 node, 1 queuing all, 2 nodes, for two languages: {report}");
    assert_eq!(rows.iter().filter(|row| row["all_queued"] == true).count(), 2, "{report}");
    for row in rows {
        assert!(row["runs_per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["latency"]["n"], 18, "{row}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
