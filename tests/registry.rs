//! The session registry's bounds, through the library.

mod common;

use std::time::Duration;

use sandlot::{Client, Face, Keep, Language, Program, Registry, RegistryConfig, SessionOptions};

#[tokio::test]
async fn finished_records_past_the_cap_are_dropped_least_recently_used_first() {
    let registry = Registry::new(common::runtime(), RegistryConfig { max_records: 3, ..RegistryConfig::default() });
    let mut ids = Vec::new();
    for i in 0..6 {
        let program = Program::single("main.js", format!("console.log({i})"));
        let started = registry
            .start(
                &Client::Local,
                Face::Library,
                Language::JavaScript,
                program,
                SessionOptions::default(),
                Keep::Record,
            )
            .await
            .unwrap();
        started.entry.finished().await;
        ids.push(started.entry.id().to_string());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The expiry task runs once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept: Vec<bool> = ids.iter().map(|id| registry.status(&Client::Local, id).is_some()).collect();
    assert_eq!(kept, [false, false, false, true, true, true]);
}

/// Notebook sessions' bounds: the idle time-out, the cap per client and in
/// all, one cell at a time, and the owner only.
#[tokio::test]
async fn notebooks_are_capped_closed_when_idle_and_run_one_cell_at_a_time() {
    use sandlot::{Error, NotebookConfig, Notebooks};
    let registry = Registry::new(common::runtime(), RegistryConfig::default());
    let config = NotebookConfig { max: 3, max_per_client: 2, idle: Duration::from_secs(2) };
    let notebooks = Notebooks::new(registry, config);
    let (alice, bob) = (Client::Address([10, 0, 0, 1].into()), Client::Address([10, 0, 0, 2].into()));
    let start = |client: Client| {
        let notebooks = notebooks.clone();
        async move { notebooks.start(&client, Language::Lua, SessionOptions::default()).await }
    };
    let first = start(alice.clone()).await.unwrap();
    let _second = start(alice.clone()).await.unwrap();
    let refused = start(alice.clone()).await.expect_err("a third for one client is refused");
    assert!(refused.to_string().contains("the most one client may"), "{refused}");
    let _bobs = start(bob.clone()).await.unwrap();
    assert!(matches!(start(bob.clone()).await, Err(Error::Busy { limit: 3 })), "the server's cap");

    // Another client does not see alice's session.
    let code = || "x = 41".to_string();
    assert!(matches!(notebooks.exec(&bob, &first, code()).await, Err(Error::UnknownSession(_))));
    notebooks.exec(&alice, &first, code()).await.unwrap();
    // One cell at a time: a second one while the first runs is refused.
    let slow = notebooks.exec(&alice, &first, "local t = os.clock() while os.clock() - t < 1 do end x = x + 1".into());
    let (slow, second) = tokio::join!(slow, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        notebooks.exec(&alice, &first, "x".into()).await
    });
    assert!(second.err().is_some_and(|e| e.to_string().contains("still running a cell")), "refused while busy");
    assert_eq!(slow.unwrap().outcome.reason, sandlot::EndReason::Exit);
    assert_eq!(notebooks.exec(&alice, &first, "x".into()).await.unwrap().outcome.value.as_deref(), Some("42"));

    // Unused for the idle time-out, every notebook is closed, and room is made.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(notebooks.open(), 0);
    assert!(matches!(notebooks.exec(&alice, &first, code()).await, Err(Error::UnknownSession(_))));
    start(alice).await.expect("room again after the idle ones closed");
}

/// Issue 27, row 7: past `max_live`, the least recently used instance went,
/// whoever held it, so one client's sessions ended another's. Now the client
/// holding the most gives back its own least recently used first.
#[tokio::test]
async fn past_max_live_the_client_holding_the_most_gives_back_first() {
    let registry = Registry::new(common::runtime(), RegistryConfig { max_live: 2, ..RegistryConfig::default() });
    let (alice, bob) = (Client::Address([10, 0, 0, 1].into()), Client::Address([10, 0, 0, 2].into()));
    let start = |client: Client| {
        let registry = registry.clone();
        async move {
            let program = Program::single("main.lua", "x = 1");
            let options = SessionOptions::default();
            let started =
                registry.start(&client, Face::Library, Language::Lua, program, options, Keep::Live).await.unwrap();
            started.events.collect().await.expect("the run ends");
            started.entry.id().to_string()
        }
    };
    let alices = start(alice.clone()).await;
    let bobs = [start(bob.clone()).await, start(bob.clone()).await];
    // The expiry task runs once a second.
    let began = std::time::Instant::now();
    while registry.counts().1 > 2 {
        assert!(began.elapsed() < Duration::from_secs(30), "nothing was released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live = |client: &Client, id: &str| registry.status(client, id).is_some_and(|s| s.live);
    assert!(live(&alice, &alices), "alice, within her share, keeps her session");
    assert_eq!([live(&bob, &bobs[0]), live(&bob, &bobs[1])], [false, true], "bob's oldest went");
}
