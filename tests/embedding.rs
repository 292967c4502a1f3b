//! sandlot as a library: `examples/embed.rs` (built by `cargo test`) runs a
//! program and streams its events, and the library without its default
//! `cli` feature pulls in none of the binary's crates.

use std::process::Command;

#[test]
fn the_embedding_example_runs_a_program_and_reads_its_placeholder() {
    // Examples are built next to the test binaries' folder: target/<profile>/examples.
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let example = deps.parent().unwrap().join("examples").join("embed");
    let output = Command::new(&example).output().unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("squares: [0, 1, 4, 9, 16]\n[ended: exit after"), "{stdout}");
    assert!(stdout.ends_with("exit code 0, placeholder squares = [0,1,4,9,16]\n"), "{stdout}");
}

#[test]
fn the_library_alone_has_no_cli_http_client_or_chart_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--no-default-features", "-e", "normal,features", "--prefix", "none", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && tree.contains("wasmtime v"),
        "{tree}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(!["clap", "plotters", "toml", "reqwest"].contains(&name), "the library pulls in {line}");
        assert!(!line.starts_with("hyper feature \"client\""), "the library pulls in hyper's client");
    }
    // And with the default `cli` feature they are there: the check can see them.
    let with_cli = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["tree", "-e", "normal", "--prefix", "none", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(String::from_utf8_lossy(&with_cli.stdout).lines().any(|l| l.starts_with("clap v")));
}
