//! `cargo bench`: the same measurements as `sandlot bench` (full setting),
//! printed as the Markdown table; results go to target/bench-results/.

fn main() {
    let tokio =
        tokio::runtime::Builder::new_multi_thread().enable_all().event_interval(1).build().expect("tokio starts");
    let quick = std::env::args().any(|a| a == "--quick");
    let mut settings = if quick { sandlot::bench::Settings::quick() } else { sandlot::bench::Settings::full() };
    settings.server_binary = Some(env!("CARGO_BIN_EXE_sandlot").into());
    let report = tokio.block_on(async {
        let runtime = sandlot::Runtime::new(sandlot::RuntimeConfig::default()).expect("runtime starts");
        sandlot::bench::run(runtime, settings, "target/bench-results".into()).await.expect("the bench runs")
    });
    println!("{}", sandlot::bench::markdown(&report));
}
