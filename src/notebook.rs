//! Notebook sessions: a live instance a client runs code in cell after cell,
//! keeping earlier definitions and imports, as a notebook kernel does (MCP's
//! `session_start`, `session_exec`, `session_get`, `session_close`).
//!
//! A notebook is a `Keep::Live` run of an empty program whose events it holds
//! for its life; each cell is a `Registry::eval`, and its output is read from
//! those events up to the cell's end. Time, fuel and output limits apply to
//! each cell; the memory limit to the instance. A cell that ends the instance
//! (a limit, a crash) ends the notebook; an error in the code does not.
//!
//! Everything a client can make here is bounded: at most `max` notebooks in
//! all and `max_per_client` for one client (the stdio client, `Client::Local`,
//! only by `max`); one cell at a time per notebook (a second is refused, not
//! queued); a notebook unused for `idle` is closed. A notebook answers only
//! the client that started it: to any other its id is unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::error::Error;
use crate::language::Language;
use crate::metrics::Face;
use crate::program::Program;
use crate::registry::{Client, Collected, Keep, Registry, RunEvents};
use crate::run::RunOutcome;
use crate::runtime::SessionOptions;
use crate::scratch::ScratchFile;
use crate::sync::lock;

/// How many notebooks a server holds, and for how long.
#[derive(Clone, Debug)]
pub struct NotebookConfig {
    /// Notebooks open at once, for all clients together.
    pub max: usize,
    /// Notebooks one client may have open at once.
    pub max_per_client: usize,
    /// A notebook unused this long is closed.
    pub idle: Duration,
}

impl Default for NotebookConfig {
    fn default() -> Self {
        NotebookConfig { max: 256, max_per_client: 8, idle: Duration::from_secs(600) }
    }
}

/// The notebooks of a server. Cheap to clone.
#[derive(Clone)]
pub struct Notebooks {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    config: NotebookConfig,
    open: Mutex<HashMap<String, Arc<Notebook>>>,
}

struct Notebook {
    client: Client,
    /// The session's events; held by the cell running, if any.
    events: Arc<tokio::sync::Mutex<RunEvents>>,
    last_used: Mutex<Instant>,
}

/// What one cell did.
pub struct Cell {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// How it ended; `outcome.value` is its trailing expression's value.
    pub outcome: RunOutcome,
    /// Placeholders the cell saved or replaced, by name.
    pub saved: BTreeMap<String, Arc<RawValue>>,
    /// Files under `/tmp` the cell wrote (new, or of another size than before).
    pub written: Vec<ScratchFile>,
    /// Whether the notebook can take more cells (false once a limit or a
    /// crash ended its instance).
    pub alive: bool,
}

impl Notebooks {
    /// Notebooks over `registry`'s sessions. Must be called inside a tokio
    /// runtime: it starts the task that closes idle notebooks.
    pub fn new(registry: Registry, config: NotebookConfig) -> Self {
        let inner = Arc::new(Inner { registry, config, open: Mutex::new(HashMap::new()) });
        tokio::spawn(close_idle(Arc::downgrade(&inner)));
        Notebooks { inner }
    }

    /// Starts a notebook in `language` for `client`; its id.
    pub async fn start(&self, client: &Client, language: Language, options: SessionOptions) -> Result<String, Error> {
        self.check_room(client)?;
        let program = Program::single(language.main_file(), "");
        let started = self.inner.registry.start(client, Face::Mcp, language, program, options, Keep::Live).await?;
        let id = started.entry.id().to_string();
        let mut events = started.events;
        // The empty program's run: it makes the instance the cells run in.
        let end = events.next_call().await;
        if !started.entry.status().live {
            let why = end.map_or_else(|| "the session did not start".to_string(), |c| describe(&c.outcome));
            self.inner.registry.close(client, &id).await.ok();
            return Err(Error::SessionEnded(format!("the {language} session could not start: {why}")));
        }
        let notebook = Notebook {
            client: client.clone(),
            events: Arc::new(tokio::sync::Mutex::new(events)),
            last_used: Mutex::new(Instant::now()),
        };
        let admitted = {
            // Checked again: others may have started notebooks meanwhile.
            let mut open = lock(&self.inner.open);
            let room = self.room(&open, client);
            if room.is_ok() {
                open.insert(id.clone(), Arc::new(notebook));
            }
            room
        };
        if let Err(e) = admitted {
            self.inner.registry.close(client, &id).await.ok();
            return Err(e);
        }
        Ok(id)
    }

    /// Runs `code` as the notebook's next cell. The cell is read to its end
    /// even if the caller stops waiting, so the next cell starts clean.
    pub async fn exec(&self, client: &Client, id: &str, code: String) -> Result<Cell, Error> {
        let notebook = self.find(client, id)?;
        let mut events = notebook.events.clone().try_lock_owned().map_err(|_| Error::CellRunning(id.to_string()))?;
        let placeholders = self.inner.registry.placeholders(client, id).map(|saved| saved.placeholders);
        let before = placeholders.as_ref().map(|p| p.snapshot()).unwrap_or_default();
        let files_before = self.inner.registry.scratch_files(client, id).unwrap_or_default();
        let (registry, call_client, call_id) = (self.inner.registry.clone(), client.clone(), id.to_string());
        let cell = tokio::spawn(async move { run_cell(&registry, &call_client, &call_id, code, &mut events).await })
            .await
            .map_err(|_| Error::SessionEnded("the cell crashed; the server log has the details".into()))??;
        *lock(&notebook.last_used) = Instant::now();
        let after = placeholders.map(|p| p.snapshot()).unwrap_or_default();
        let saved = after
            .into_iter()
            .filter(|(name, value)| before.get(name).is_none_or(|old| !Arc::ptr_eq(old, value)))
            .collect();
        let alive = self.inner.registry.status(client, id).is_some_and(|s| s.live);
        if !alive {
            lock(&self.inner.open).remove(id);
        }
        let written = match alive {
            true => self.inner.registry.scratch_files(client, id).unwrap_or_default(),
            false => Vec::new(),
        };
        let written = written.into_iter().filter(|file| !files_before.contains(file)).collect();
        Ok(Cell { stdout: cell.stdout, stderr: cell.stderr, outcome: cell.outcome, saved, written, alive })
    }

    /// A placeholder the notebook's cells saved, as JSON text (`None` if unset).
    pub fn placeholder(&self, client: &Client, id: &str, name: &str) -> Result<Option<Arc<RawValue>>, Error> {
        self.find(client, id)?;
        let saved =
            self.inner.registry.placeholders(client, id).ok_or_else(|| Error::UnknownSession(id.to_string()))?;
        Ok(saved.placeholders.get_json(name))
    }

    /// The files the notebook's code wrote under `/tmp`.
    pub fn files(&self, client: &Client, id: &str) -> Result<Vec<ScratchFile>, Error> {
        self.find(client, id)?;
        self.inner.registry.scratch_files(client, id)
    }

    /// A file the notebook's code wrote under `/tmp`, at most `max_bytes`.
    pub fn file(&self, client: &Client, id: &str, path: &str, max_bytes: u64) -> Result<Vec<u8>, Error> {
        self.find(client, id)?;
        self.inner.registry.scratch_file(client, id, path, max_bytes)
    }

    /// Closes a notebook: a cell still running is stopped, the instance dropped.
    pub async fn close(&self, client: &Client, id: &str) -> Result<(), Error> {
        self.find(client, id)?;
        lock(&self.inner.open).remove(id);
        self.inner.registry.close(client, id).await
    }

    /// How many notebooks are open.
    pub fn open(&self) -> usize {
        lock(&self.inner.open).len()
    }

    fn find(&self, client: &Client, id: &str) -> Result<Arc<Notebook>, Error> {
        let open = lock(&self.inner.open);
        match open.get(id) {
            Some(notebook) if notebook.client == *client => {
                *lock(&notebook.last_used) = Instant::now();
                Ok(notebook.clone())
            }
            _ => Err(Error::UnknownSession(id.to_string())),
        }
    }

    fn check_room(&self, client: &Client) -> Result<(), Error> {
        let open = lock(&self.inner.open);
        self.room(&open, client)
    }

    fn room(&self, open: &HashMap<String, Arc<Notebook>>, client: &Client) -> Result<(), Error> {
        let config = &self.inner.config;
        if open.len() >= config.max {
            return Err(Error::Busy { limit: config.max });
        }
        let mine = open.values().filter(|n| n.client == *client).count();
        if *client != Client::Local && mine >= config.max_per_client {
            return Err(Error::TooManySessions { open: mine });
        }
        Ok(())
    }
}

/// One cell: the eval, and its output read from the session's events
/// meanwhile, up to its end. A refused call (busy, rate, released) sends no
/// events and is the error; otherwise the end the events report is the
/// cell's (a kill reports it before the guest returns).
async fn run_cell(
    registry: &Registry,
    client: &Client,
    id: &str,
    code: String,
    events: &mut RunEvents,
) -> Result<Collected, Error> {
    let call = registry.eval(client, id, code);
    let read = events.next_call();
    tokio::pin!(call, read);
    let collected = tokio::select! {
        returned = &mut call => {
            returned?;
            read.await
        }
        collected = &mut read => {
            call.await?;
            collected
        }
    };
    collected.ok_or_else(|| Error::SessionEnded("the session's events stopped".into()))
}

fn describe(outcome: &RunOutcome) -> String {
    outcome.message.clone().unwrap_or_else(|| format!("{} (exit code {})", outcome.reason, outcome.exit_code))
}

/// Closes notebooks unused for their idle time, and forgets those whose
/// instance is gone (released by the registry under memory pressure).
async fn close_idle(notebooks: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = notebooks.upgrade() else { return };
        let idle = inner.config.idle;
        let gone: Vec<(String, Client)> = {
            let mut open = lock(&inner.open);
            let gone: Vec<(String, Client)> = open
                .iter()
                .filter(|(id, n)| {
                    lock(&n.last_used).elapsed() > idle
                        || (n.events.try_lock().is_ok()
                            && !inner.registry.status(&n.client, id).is_some_and(|s| s.live))
                })
                .map(|(id, n)| (id.clone(), n.client.clone()))
                .collect();
            for (id, _) in &gone {
                open.remove(id);
            }
            gone
        };
        for (id, client) in gone {
            inner.registry.close(&client, &id).await.ok();
        }
    }
}
