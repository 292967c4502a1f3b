//! sandlot embedded as a library (no server, no CLI): run a Python program
//! in a sandbox, stream its output as it is written, read back a value it
//! saved. Build without the binary's crates: `default-features = false`.
//!
//!     cargo run --release --example embed

use sandlot::{Language, Program, Runtime, RuntimeConfig, SessionEvent, SessionOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let (mut session, mut events) = runtime.session(Language::Python, SessionOptions::default()).await?;
    // The events arrive while the program runs: print them as they come.
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                SessionEvent::Stdout(bytes) => print!("{}", String::from_utf8_lossy(&bytes)),
                SessionEvent::Stderr(bytes) => eprint!("{}", String::from_utf8_lossy(&bytes)),
                SessionEvent::Finished(outcome) => {
                    println!("[ended: {} after {:?}]", outcome.reason, outcome.wall_time)
                }
                SessionEvent::Spawned => {}
            }
        }
    });
    let code = "import sandlot\nsquares = [n * n for n in range(5)]\nprint('squares:', squares)\n\
                sandlot.set_placeholder('squares', squares)";
    let outcome = session.run(Program::single("main.py", code)).await?;
    let saved = session.placeholders().get("squares");
    drop(session); // ends the event stream
    printer.await?;
    println!("exit code {}, placeholder squares = {}", outcome.exit_code, saved.unwrap_or_default());
    Ok(())
}
