//! The session registry's bounds, through the library.

mod common;

use std::time::Duration;

use sandlot::{Client, Keep, Language, Program, Registry, RegistryConfig, SessionOptions};

#[tokio::test]
async fn finished_records_past_the_cap_are_dropped_least_recently_used_first() {
    let registry = Registry::new(common::runtime(), RegistryConfig { max_records: 3, ..RegistryConfig::default() });
    let mut ids = Vec::new();
    for i in 0..6 {
        let program = Program::single("main.js", format!("console.log({i})"));
        let started = registry
            .start(&Client::Local, Language::JavaScript, program, SessionOptions::default(), Keep::Record)
            .await
            .unwrap();
        started.entry.finished().await;
        ids.push(started.entry.id().to_string());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The expiry task runs once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept: Vec<bool> = ids.iter().map(|id| registry.status(id).is_some()).collect();
    assert_eq!(kept, [false, false, false, true, true, true]);
}
