//! Every parser of client input, fuzzed (targets in `src/fuzz.rs`).
//!
//! Under `cargo test` each target replays its corpus
//! (`tests/__fuzz__/<target>/corpus/`) and then takes random inputs for a
//! bounded time (`SANDLOT_FUZZ_SECONDS`, 2 by default). `./dev.sh fuzz
//! TARGET` runs one coverage-guided with libFuzzer (cargo-bolero) for as long
//! as asked; new inputs it finds can be added to the corpus.

use std::time::Duration;

fn budget() -> Duration {
    let seconds = std::env::var("SANDLOT_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    Duration::from_secs_f64(seconds)
}

macro_rules! target {
    ($name:ident) => {
        #[test]
        fn $name() {
            bolero::check!()
                .with_test_time(budget())
                .with_max_len(1 << 16)
                .for_each(|input: &[u8]| sandlot::fuzz::$name(input));
        }
    };
}

target!(lenient_json);
target!(ranna_op);
target!(actions_request);
target!(processor_message);
target!(upload_frame);
target!(direct_io_frame);
target!(mcp_arguments);
target!(config_file);
target!(placeholder_stats);
target!(door_frame);
