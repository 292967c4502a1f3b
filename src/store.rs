//! The server's durable state: one redb database (`state.redb`) in the data
//! folder, holding finished runs (status, timings, placeholders), datasets and
//! the chunks of uploads still in progress.
//!
//! Every write is one redb transaction committed with `Durability::Immediate`
//! (fsynced before `commit` returns), so what a client was told is saved stays
//! saved through a `kill -9` or a power cut, and a half-done write is never
//! seen. Finished runs reach the store through `RunWriter`, which commits
//! whatever has queued up in one transaction (group commit), off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::Error;
use crate::folder::DataFolder;
use crate::language::Language;
use crate::run::{EndReason, RunOutcome};

/// Finished runs by id: JSON `RunRecord`s.
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// Datasets by uuid: JSON `DatasetRecord`s.
const DATASETS: TableDefinition<&str, &[u8]> = TableDefinition::new("datasets");
/// Received chunks of unfinished uploads: (file uuid, byte position) → length.
const CHUNKS: TableDefinition<(&str, u64), u64> = TableDefinition::new("chunks");
/// Counters kept with the data: `PLACEHOLDER_BYTES`, the placeholders all saved runs hold.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PLACEHOLDER_BYTES: &str = "placeholder_bytes";

/// The database of one data folder.
pub(crate) struct Store {
    db: Database,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl Store {
    /// Opens (or creates, owner-only) `state.redb` in the data folder.
    pub(crate) fn open(folder: &DataFolder) -> Result<Arc<Self>, Error> {
        let path = folder.path().join("state.redb");
        let file = folder.open_file("state.redb")?;
        let backend = redb::backends::FileBackend::new(file).map_err(storage)?;
        let db = Database::builder().create_with_backend(backend).map_err(|e| {
            Error::Storage(format!(
                "could not open {}: {e} (is another sandlot using this data folder?)",
                path.display()
            ))
        })?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(RUNS).map_err(storage)?;
        txn.open_table(DATASETS).map_err(storage)?;
        txn.open_table(CHUNKS).map_err(storage)?;
        {
            // Counted once for a store written before the counter existed.
            let mut meta = txn.open_table(META).map_err(storage)?;
            if meta.get(PLACEHOLDER_BYTES).map_err(storage)?.is_none() {
                let runs = txn.open_table(RUNS).map_err(storage)?;
                let mut total = 0u64;
                for row in runs.iter().map_err(storage)? {
                    let (_, json) = row.map_err(storage)?;
                    total += serde_json::from_slice::<RunRecord>(json.value()).map_or(0, |r| r.placeholder_bytes());
                }
                meta.insert(PLACEHOLDER_BYTES, total).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        Ok(Arc::new(Store { db }))
    }

    /// Saves finished runs. Their placeholders are kept while all saved runs'
    /// placeholders stay within `placeholder_budget` bytes; past it a record
    /// is saved without them, marked so.
    pub(crate) fn put_runs(&self, records: &mut [RunRecord], placeholder_budget: u64) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let mut total = meta.get(PLACEHOLDER_BYTES).map_err(storage)?.map_or(0, |v| v.value());
            let mut runs = txn.open_table(RUNS).map_err(storage)?;
            for record in records.iter_mut() {
                let bytes = record.placeholder_bytes();
                if total.saturating_add(bytes) > placeholder_budget {
                    record.drop_placeholders();
                } else {
                    total += bytes;
                }
                let json = serde_json::to_vec(record).map_err(storage)?;
                runs.insert(record.id.as_str(), json.as_slice()).map_err(storage)?;
            }
            meta.insert(PLACEHOLDER_BYTES, total).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    pub(crate) fn run(&self, id: &str) -> Result<Option<RunRecord>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let runs = txn.open_table(RUNS).map_err(storage)?;
        let Some(json) = runs.get(id).map_err(storage)? else { return Ok(None) };
        serde_json::from_slice(json.value()).map(Some).map_err(storage)
    }

    /// Forgets runs that ended before `cutoff`; returns how many.
    pub(crate) fn prune_runs(&self, cutoff: SystemTime) -> Result<usize, Error> {
        let cutoff = millis(cutoff);
        let txn = self.db.begin_write().map_err(storage)?;
        let (mut pruned, mut freed) = (0, 0u64);
        {
            let mut runs = txn.open_table(RUNS).map_err(storage)?;
            runs.retain(|_, json| {
                let record = serde_json::from_slice::<RunRecord>(json).ok();
                let keep = record.as_ref().is_some_and(|r| r.ended_at_ms >= cutoff);
                if !keep {
                    pruned += 1;
                    freed += record.map_or(0, |r| r.placeholder_bytes());
                }
                keep
            })
            .map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let total = meta.get(PLACEHOLDER_BYTES).map_err(storage)?.map_or(0, |v| v.value());
            meta.insert(PLACEHOLDER_BYTES, total.saturating_sub(freed)).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(pruned)
    }

    pub(crate) fn put_dataset(&self, dataset: &DatasetRecord) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut datasets = txn.open_table(DATASETS).map_err(storage)?;
            let json = serde_json::to_vec(dataset).map_err(storage)?;
            datasets.insert(dataset.uuid.as_str(), json.as_slice()).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    pub(crate) fn datasets(&self) -> Result<Vec<DatasetRecord>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let datasets = txn.open_table(DATASETS).map_err(storage)?;
        let mut all = Vec::new();
        for row in datasets.iter().map_err(storage)? {
            let (_, json) = row.map_err(storage)?;
            all.push(serde_json::from_slice(json.value()).map_err(storage)?);
        }
        Ok(all)
    }

    /// Saves `dataset` (or deletes it, when `keep` is false) and forgets the
    /// chunks of its files, in one transaction.
    pub(crate) fn settle_dataset(&self, dataset: &DatasetRecord, keep: bool) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut datasets = txn.open_table(DATASETS).map_err(storage)?;
            if keep {
                let json = serde_json::to_vec(dataset).map_err(storage)?;
                datasets.insert(dataset.uuid.as_str(), json.as_slice()).map_err(storage)?;
            } else {
                datasets.remove(dataset.uuid.as_str()).map_err(storage)?;
            }
            let mut chunks = txn.open_table(CHUNKS).map_err(storage)?;
            for file in &dataset.files {
                let uuid = file.uuid.as_str();
                chunks.retain_in((uuid, 0)..=(uuid, u64::MAX), |_, _| false).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    pub(crate) fn add_chunk(&self, file: &str, position: u64, length: u64) -> Result<(), Error> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut chunks = txn.open_table(CHUNKS).map_err(storage)?;
            chunks.insert((file, position), length).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// The chunks received for `file`, as (position, length), in order.
    pub(crate) fn chunks(&self, file: &str) -> Result<Vec<(u64, u64)>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let chunks = txn.open_table(CHUNKS).map_err(storage)?;
        let mut all = Vec::new();
        for row in chunks.range((file, 0)..=(file, u64::MAX)).map_err(storage)? {
            let (key, length) = row.map_err(storage)?;
            all.push((key.value().1, length.value()));
        }
        Ok(all)
    }
}

pub(crate) fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What is kept of a finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub id: String,
    /// A digest of the client that started the run (hex), the only one its
    /// id answers (`registry.rs`); missing in records saved before owners were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub language: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub wall_time_us: u64,
    pub fuel_used: u64,
    pub peak_memory: usize,
    /// Each placeholder's JSON text, as the run saved it.
    pub placeholders: BTreeMap<String, Arc<RawValue>>,
    /// The store's room for placeholders was full when the run ended: they were not kept.
    #[serde(default)]
    pub placeholders_dropped: bool,
}

impl RunRecord {
    pub(crate) fn new(
        id: &str,
        owner: String,
        language: Language,
        started_at: SystemTime,
        outcome: &RunOutcome,
        placeholders: BTreeMap<String, Arc<RawValue>>,
    ) -> Self {
        RunRecord {
            id: id.to_string(),
            owner: Some(owner),
            language: language.name().to_string(),
            started_at_ms: millis(started_at),
            ended_at_ms: millis(SystemTime::now()),
            exit_code: outcome.exit_code,
            reason: outcome.reason.as_str().to_string(),
            message: outcome.message.clone(),
            wall_time_us: outcome.wall_time.as_micros() as u64,
            fuel_used: outcome.fuel_used,
            peak_memory: outcome.peak_memory,
            placeholders,
            placeholders_dropped: false,
        }
    }

    /// Keeps the record without its placeholders, marked so (`get_placeholder` says they were dropped).
    pub(crate) fn drop_placeholders(&mut self) {
        self.placeholders.clear();
        self.placeholders_dropped = true;
    }

    /// What its placeholders cost: names and JSON texts.
    pub(crate) fn placeholder_bytes(&self) -> u64 {
        self.placeholders.iter().map(|(name, json)| (name.len() + json.get().len()) as u64).sum()
    }

    pub(crate) fn outcome(&self) -> RunOutcome {
        RunOutcome {
            exit_code: self.exit_code,
            reason: EndReason::ALL.into_iter().find(|r| r.as_str() == self.reason).unwrap_or(EndReason::Error),
            message: self.message.clone(),
            wall_time: Duration::from_micros(self.wall_time_us),
            fuel_used: self.fuel_used,
            peak_memory: self.peak_memory,
            value: None,
        }
    }
}

/// Finished runs waiting for the writer (queued, or in the batch it is
/// committing) at most. A disk that stalls costs memory only up to here:
/// past it a run's record is not saved in the data folder (logged, counted in
/// `sandlot_records_unsaved_total`); the registry still answers for it from
/// memory while it keeps it.
pub(crate) const RECORDS_WAITING: usize = 16_384;
/// Placeholder bytes those records may hold together. Past it a record waits
/// without its placeholders, marked so, as past the data folder's budget.
pub(crate) const RECORDS_WAITING_BYTES: u64 = 256 << 20;

/// Saves finished runs in batches on a thread of its own. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RunWriter {
    queue: std_mpsc::Sender<Job>,
    waiting: Arc<Waiting>,
}

/// What waits for the writer, and how much may.
struct Waiting {
    records: AtomicUsize,
    bytes: AtomicU64,
    max_records: usize,
    max_bytes: u64,
}

enum Job {
    Save(Box<RunRecord>),
    /// Answered once everything queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl RunWriter {
    /// Starts the writer; saved runs' placeholders may take `placeholder_budget` bytes in all.
    pub(crate) fn start(store: Arc<Store>, placeholder_budget: u64) -> Result<Self, Error> {
        Self::start_bounded(store, placeholder_budget, RECORDS_WAITING, RECORDS_WAITING_BYTES)
    }

    fn start_bounded(
        store: Arc<Store>,
        placeholder_budget: u64,
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Self, Error> {
        let (queue, pending) = std_mpsc::channel::<Job>();
        let waiting =
            Arc::new(Waiting { records: AtomicUsize::new(0), bytes: AtomicU64::new(0), max_records, max_bytes });
        let counts = waiting.clone();
        std::thread::Builder::new()
            .name("sandlot-records".into())
            .spawn(move || {
                while let Ok(first) = pending.recv() {
                    let (mut batch, mut flushes) = (Vec::new(), Vec::new());
                    for job in std::iter::once(first).chain(pending.try_iter()) {
                        match job {
                            Job::Save(record) => batch.push(*record),
                            Job::Flush(done) => flushes.push(done),
                        }
                    }
                    // Counted as waiting until committed (`put_runs` may drop placeholders).
                    let bytes: u64 = batch.iter().map(RunRecord::placeholder_bytes).sum();
                    if !batch.is_empty()
                        && let Err(e) = store.put_runs(&mut batch, placeholder_budget)
                    {
                        tracing::error!(error = %e, runs = batch.len(), "could not save finished runs");
                    }
                    counts.records.fetch_sub(batch.len(), Ordering::SeqCst);
                    counts.bytes.fetch_sub(bytes, Ordering::SeqCst);
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            })
            .map_err(|e| Error::Storage(format!("could not start the record writer: {e}")))?;
        Ok(RunWriter { queue, waiting })
    }

    /// Queues a finished run to be saved. False if it was not: the writer is
    /// `RECORDS_WAITING` records behind, or has stopped.
    pub(crate) fn save(&self, mut record: RunRecord) -> bool {
        let waiting = &self.waiting;
        if waiting.records.fetch_add(1, Ordering::SeqCst) >= waiting.max_records {
            waiting.records.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(run = %record.id, waiting = waiting.max_records, "the data folder's writer is too far behind; this run's record is kept in memory only");
            return false;
        }
        let bytes = record.placeholder_bytes();
        if waiting.bytes.fetch_add(bytes, Ordering::SeqCst).saturating_add(bytes) > waiting.max_bytes {
            waiting.bytes.fetch_sub(bytes, Ordering::SeqCst);
            record.drop_placeholders();
        }
        let bytes = record.placeholder_bytes();
        if self.queue.send(Job::Save(Box::new(record))).is_err() {
            waiting.records.fetch_sub(1, Ordering::SeqCst);
            waiting.bytes.fetch_sub(bytes, Ordering::SeqCst);
            tracing::error!("the record writer has stopped; a finished run was not saved");
            return false;
        }
        true
    }

    /// Waits until every run saved so far is committed.
    pub(crate) async fn flush(&self) {
        let (done, committed) = tokio::sync::oneshot::channel();
        if self.queue.send(Job::Flush(done)).is_ok() {
            let _ = committed.await;
        }
    }
}

/// The kinds of dataset: one CSV file, or an input and a label file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DatasetKind {
    Csv,
    Mnist,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DatasetState {
    /// Taking chunks.
    Uploading,
    /// Complete; its files are being moved into place (finished at start-up
    /// if the server stopped half-way).
    Finalising,
    /// Visible to sessions under `/data`.
    Ready,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FileRole {
    Input,
    Label,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    pub uuid: String,
    pub role: FileRole,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DatasetRecord {
    pub uuid: String,
    pub name: String,
    pub kind: DatasetKind,
    pub state: DatasetState,
    pub created_at_ms: u64,
    pub files: Vec<FileRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, placeholder: &str) -> RunRecord {
        let outcome = RunOutcome {
            exit_code: 0,
            reason: EndReason::Exit,
            message: None,
            wall_time: Duration::from_millis(1),
            fuel_used: 1,
            peak_memory: 0,
            value: None,
        };
        let json: Arc<RawValue> = RawValue::from_string(placeholder.to_string()).unwrap().into();
        RunRecord::new(
            id,
            "00".repeat(32),
            Language::Python,
            SystemTime::now(),
            &outcome,
            BTreeMap::from([("p".to_string(), json)]),
        )
    }

    #[tokio::test]
    async fn a_stalled_disk_holds_only_so_many_records_and_placeholder_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&DataFolder::open(dir.path()).unwrap()).unwrap();
        let writer = RunWriter::start_bounded(store.clone(), u64::MAX, 4, 100).unwrap();
        // The disk stalls: the writer's commit waits for this transaction.
        let stall = store.db.begin_write().unwrap();
        let placeholder = format!("\"{}\"", "x".repeat(58)); // 61 bytes with its name
        let queued: Vec<bool> = (0..10).map(|i| writer.save(record(&format!("run-{i}"), &placeholder))).collect();
        assert_eq!(queued, [true, true, true, true, false, false, false, false, false, false]);
        drop(stall);
        writer.flush().await;

        let first = store.run("run-0").unwrap().expect("the first run is saved");
        assert_eq!(first.placeholders.len(), 1);
        assert!(!first.placeholders_dropped);
        for i in 1..4 {
            let saved = store.run(&format!("run-{i}")).unwrap().expect("queued runs are saved");
            assert!(saved.placeholders.is_empty() && saved.placeholders_dropped, "run-{i} waited past the byte bound");
        }
        for i in 4..10 {
            assert!(store.run(&format!("run-{i}")).unwrap().is_none(), "run-{i} was refused, so not saved");
        }

        // Committed, they no longer count: there is room again.
        assert!(writer.save(record("run-after", &placeholder)));
        writer.flush().await;
        let after = store.run("run-after").unwrap().expect("saved once the writer caught up");
        assert_eq!(after.placeholders.len(), 1);
        assert_eq!(writer.waiting.records.load(Ordering::SeqCst), 0);
        assert_eq!(writer.waiting.bytes.load(Ordering::SeqCst), 0);
    }
}
