//! Datasets: files uploaded in chunks, then finalised into the folder every
//! server session sees read-only at `/data`.
//!
//! A dataset is created with its files' sizes; each file gets a uuid and a
//! sparse `.part` file of that size under `uploads/`. Chunks (a byte position
//! and up to `MAX_CHUNK` bytes) may come in any order over any number of
//! sockets: each is written in place, fsynced, then its range is committed to
//! the store, and only then acknowledged, so an acknowledged chunk survives a
//! crash and a half-written one is simply missing (the client sends it again).
//! Sending a chunk again is harmless; a chunk that partly overlaps one already
//! received, or runs past the file's end, is refused. Finalising checks that
//! every byte arrived and moves the files into `datasets/`:
//! `/data/<name>.csv` for a CSV dataset, `/data/<name>/input` and
//! `/data/<name>/label` for a two-file one. Nothing is ever held in memory
//! beyond one chunk.
//!
//! A chunk sent again must hold the same bytes as the one received (else it
//! is a conflict, not a "duplicate"), and upload uuids are never listed to
//! anyone but by the dataset's creation reply: whoever does not hold a file's
//! uuid cannot write into it. Creating, finalising and deleting are
//! serialised (`changes`), so a finalise and a delete racing cannot both win.
//! Quotas bound the count and total size of datasets, and a dataset is only
//! created when the disk has room for it. Files are reached through the data
//! folder's capability (`folder.rs`), never by joined paths.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cap_std::fs::Dir;

use crate::error::Error;
use crate::folder::{DataFolder, ensure_dir, open_rw, sync_dir};
use crate::store::{DatasetKind, DatasetRecord, DatasetState, FileRecord, FileRole, Store, millis};
use crate::sync::lock;

/// The largest chunk a client may send.
pub const MAX_CHUNK: usize = 1 << 20;
/// Names are 1 to this many of `[A-Za-z0-9_-]`.
const MAX_NAME: usize = 64;
/// Progress lists at most this many missing ranges per file.
const MAX_MISSING_LISTED: usize = 100;

/// What can go wrong with a dataset request; each says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Overlap(String),
    #[error("{0}")]
    Incomplete(String),
    /// A quota of the server's, or its disk, is full.
    #[error("{0}")]
    Quota(String),
    /// This server keeps no datasets.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Server(#[from] Error),
}

impl DatasetError {
    /// The short code faces send with the message.
    pub fn code(&self) -> &'static str {
        match self {
            DatasetError::BadRequest(_) => "bad_request",
            DatasetError::NotFound(_) => "not_found",
            DatasetError::Conflict(_) => "conflict",
            DatasetError::TooLarge(_) => "too_large",
            DatasetError::OutOfRange(_) => "out_of_range",
            DatasetError::Overlap(_) => "overlap",
            DatasetError::Incomplete(_) => "incomplete",
            DatasetError::Quota(_) => "quota",
            DatasetError::Unavailable(_) => "not_supported",
            DatasetError::Server(_) => "server_error",
        }
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> DatasetError {
    DatasetError::Server(Error::Storage(format!("could not {what} {}: {e}", path.display())))
}

/// How many datasets a server keeps, and how much of its disk they may take.
#[derive(Clone, Debug)]
pub struct DatasetLimits {
    /// The largest dataset file accepted.
    pub max_file_bytes: u64,
    /// Datasets at once, uploading or ready.
    pub max_datasets: usize,
    /// The declared sizes of all datasets together.
    pub max_total_bytes: u64,
    /// Disk space left free for everything else: a dataset that would eat
    /// into it is refused at creation.
    pub min_free_bytes: u64,
}

impl Default for DatasetLimits {
    fn default() -> Self {
        DatasetLimits {
            max_file_bytes: 4 << 30,
            max_datasets: 1000,
            max_total_bytes: 64 << 30,
            min_free_bytes: 1 << 30,
        }
    }
}

/// The answer to one chunk.
#[derive(Clone, Debug)]
pub struct ChunkAck {
    pub position: u64,
    pub length: u64,
    /// Bytes of the file received so far.
    pub received: u64,
    pub size: u64,
    /// The same chunk had been received before; nothing was written.
    pub duplicate: bool,
    /// Every byte of this file has arrived.
    pub complete: bool,
}

/// How far a dataset's upload is.
#[derive(Clone, Debug)]
pub struct Progress {
    pub uuid: String,
    pub name: String,
    pub kind: DatasetKind,
    pub state: DatasetState,
    /// Every byte of every file has arrived.
    pub complete: bool,
    pub files: Vec<FileProgress>,
}

#[derive(Clone, Debug)]
pub struct FileProgress {
    /// Shown only to whoever asked by this file's own uuid.
    pub uuid: Option<String>,
    pub role: FileRole,
    pub size: u64,
    pub received: u64,
    /// Byte ranges `[start, end)` not received yet (the first 100).
    pub missing: Vec<[u64; 2]>,
}

/// A dataset as listed to clients.
#[derive(Clone, Debug)]
pub struct Listed {
    pub uuid: String,
    pub name: String,
    pub kind: DatasetKind,
    pub state: DatasetState,
    pub size: u64,
    pub created_at_ms: u64,
    /// Where sessions find its files, once ready.
    pub paths: Vec<String>,
    pub files: Vec<ListedFile>,
}

/// A dataset's file as listed: its upload uuid only once it takes no more chunks.
#[derive(Clone, Debug)]
pub struct ListedFile {
    pub uuid: Option<String>,
    pub role: FileRole,
    pub size: u64,
}

/// One file being uploaded: its `.part` file and the ranges received.
struct Upload {
    file: File,
    size: u64,
    /// position → length; ranges never overlap.
    ranges: BTreeMap<u64, u64>,
    received: u64,
    /// Set when the dataset is finalised or deleted: no more chunks.
    closed: bool,
}

impl Upload {
    fn missing(&self) -> Vec<[u64; 2]> {
        let mut missing = Vec::new();
        let mut at = 0;
        for (&start, &length) in &self.ranges {
            if start > at {
                missing.push([at, start]);
            }
            at = start + length;
        }
        if at < self.size {
            missing.push([at, self.size]);
        }
        missing
    }
}

/// All datasets of a data folder.
pub struct Datasets {
    store: Arc<Store>,
    folder: Arc<DataFolder>,
    /// `datasets/`: finalised files only; mounted read-only at `/data`.
    ready: Dir,
    ready_path: PathBuf,
    /// `uploads/`: the `.part` files of unfinished uploads.
    uploads_dir: Dir,
    uploads_path: PathBuf,
    limits: DatasetLimits,
    records: Mutex<HashMap<String, DatasetRecord>>,
    uploads: Mutex<HashMap<String, Arc<Mutex<Upload>>>>,
    /// Held while a dataset is created, finalised or deleted: one at a time.
    changes: Mutex<()>,
}

impl Datasets {
    /// Opens the datasets of `folder`, finishing any finalisation a stop
    /// interrupted and forgetting ready datasets whose files are gone.
    pub(crate) fn open(folder: Arc<DataFolder>, store: Arc<Store>, limits: DatasetLimits) -> Result<Self, Error> {
        let (ready, ready_path) = folder.subfolder("datasets")?;
        let (uploads_dir, uploads_path) = folder.subfolder("uploads")?;
        let datasets = Datasets {
            store: store.clone(),
            folder,
            ready,
            ready_path,
            uploads_dir,
            uploads_path,
            limits,
            records: Mutex::new(HashMap::new()),
            uploads: Mutex::new(HashMap::new()),
            changes: Mutex::new(()),
        };
        for mut record in store.datasets()? {
            if record.state == DatasetState::Finalising
                && let Err(e) = datasets.move_into_place(&mut record)
            {
                // Kept as it is (sessions don't see it) for the next start to try again.
                tracing::error!(dataset = %record.name, error = %e, "could not finish finalising a dataset");
            }
            if record.state == DatasetState::Ready && !datasets.files_present(&record) {
                tracing::warn!(dataset = %record.name, "a ready dataset's files are gone; forgetting it");
                datasets.store.settle_dataset(&record, false)?;
                continue;
            }
            lock(&datasets.records).insert(record.uuid.clone(), record);
        }
        Ok(datasets)
    }

    /// The folder sessions see at `/data`.
    pub fn mount_dir(&self) -> &Path {
        &self.ready_path
    }

    fn files_present(&self, record: &DatasetRecord) -> bool {
        ready_names(record).iter().all(|name| self.ready.is_file(name))
    }

    /// Creates a dataset of `kind` with files of these sizes (input, then label).
    pub fn create(&self, kind: DatasetKind, name: &str, sizes: &[u64]) -> Result<DatasetRecord, DatasetError> {
        check_name(name)?;
        let _changing = lock(&self.changes);
        let roles: &[FileRole] = match kind {
            DatasetKind::Csv => &[FileRole::Input],
            DatasetKind::Mnist => &[FileRole::Input, FileRole::Label],
        };
        for &size in sizes {
            if size == 0 {
                return Err(DatasetError::BadRequest("a dataset file must have at least one byte".into()));
            }
            if size > self.limits.max_file_bytes {
                return Err(DatasetError::TooLarge(format!(
                    "a file of {size} bytes is over this server's limit of {} bytes per dataset file",
                    self.limits.max_file_bytes
                )));
            }
        }
        self.check_quotas(sizes.iter().sum())?;
        let record = DatasetRecord {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            kind,
            state: DatasetState::Uploading,
            created_at_ms: millis(SystemTime::now()),
            files: roles
                .iter()
                .zip(sizes)
                .map(|(&role, &size)| FileRecord { uuid: uuid::Uuid::new_v4().to_string(), role, size })
                .collect(),
        };
        let mut records = lock(&self.records);
        if records.values().any(|r| r.name == name) {
            return Err(DatasetError::Conflict(format!(
                "a dataset named {name:?} exists already; delete it first or choose another name"
            )));
        }
        for file in &record.files {
            let name = part_name(&file.uuid);
            let path = self.uploads_path.join(&name);
            let part = open_rw(&self.uploads_dir, &name, true).map_err(|e| io("create", &path, e))?;
            part.set_len(file.size).map_err(|e| io("size", &path, e))?;
        }
        self.store.put_dataset(&record)?;
        records.insert(record.uuid.clone(), record.clone());
        Ok(record)
    }

    /// Refuses a new dataset of `bytes` past the count or size quota, or
    /// when the disk would keep less than `min_free_bytes` free.
    fn check_quotas(&self, bytes: u64) -> Result<(), DatasetError> {
        let records = lock(&self.records);
        if records.len() >= self.limits.max_datasets {
            return Err(DatasetError::Quota(format!(
                "this server keeps at most {} datasets; delete one first",
                self.limits.max_datasets
            )));
        }
        let total: u64 = records.values().flat_map(|r| &r.files).map(|f| f.size).sum();
        if total.saturating_add(bytes) > self.limits.max_total_bytes {
            return Err(DatasetError::Quota(format!(
                "datasets may take {} bytes in all on this server and {total} are taken; delete some first",
                self.limits.max_total_bytes
            )));
        }
        drop(records);
        // Files are sparse until their chunks arrive: count them as written.
        if let Some(free) = self.folder.free_bytes()
            && free < bytes.saturating_add(self.limits.min_free_bytes)
        {
            return Err(DatasetError::Quota(format!(
                "the server's disk has {} MiB free; a dataset of {} MiB would leave less than the {} MiB it keeps free",
                free >> 20,
                bytes >> 20,
                self.limits.min_free_bytes >> 20
            )));
        }
        Ok(())
    }

    /// Checks that `file` (a file uuid) takes uploads now.
    pub fn check_upload_target(&self, file: &str) -> Result<(), DatasetError> {
        self.file_record(file).map(|_| ())
    }

    /// Writes one chunk, durably, and says where the file stands.
    /// Blocking (disk writes and fsyncs): call it off the async threads.
    pub fn write_chunk(&self, file: &str, position: u64, bytes: &[u8]) -> Result<ChunkAck, DatasetError> {
        if bytes.is_empty() {
            return Err(DatasetError::BadRequest("a chunk needs at least one byte after its 8-byte position".into()));
        }
        if bytes.len() > MAX_CHUNK {
            return Err(DatasetError::TooLarge(format!(
                "a chunk of {} bytes is over the limit of {MAX_CHUNK}; split it",
                bytes.len()
            )));
        }
        let upload = self.upload(file)?;
        let mut upload = lock(&upload);
        if upload.closed {
            return Err(DatasetError::Conflict(
                "this file takes no more chunks: its dataset was finalised or deleted".into(),
            ));
        }
        let length = bytes.len() as u64;
        let end = position.checked_add(length).filter(|&end| end <= upload.size).ok_or_else(|| {
            DatasetError::OutOfRange(format!(
                "bytes {position}..{} are past the end of this {}-byte file",
                position.saturating_add(length),
                upload.size
            ))
        })?;
        let path = self.uploads_path.join(part_name(file));
        let before = upload.ranges.range(..=position).next_back().map(|(&s, &l)| (s, l));
        if before == Some((position, length)) {
            // The same range again: harmless only if it is the same bytes.
            let mut stored = vec![0; bytes.len()];
            upload.file.read_exact_at(&mut stored, position).map_err(|e| io("read", &path, e))?;
            if stored != bytes {
                return Err(DatasetError::Conflict(format!(
                    "bytes {position}..{end} were received before with different content; a range is written once"
                )));
            }
            let (received, size) = (upload.received, upload.size);
            return Ok(ChunkAck { position, length, received, size, duplicate: true, complete: received == size });
        }
        let overlapping = before
            .filter(|&(start, len)| start + len > position)
            .or_else(|| upload.ranges.range(position..end).next().map(|(&s, &l)| (s, l)));
        if let Some((start, len)) = overlapping {
            return Err(DatasetError::Overlap(format!(
                "bytes {position}..{end} overlap bytes {start}..{} received before; send each range once, \
                 with the same boundaries if you send it again",
                start + len
            )));
        }
        upload.file.write_all_at(bytes, position).map_err(|e| io("write", &path, e))?;
        upload.file.sync_data().map_err(|e| io("sync", &path, e))?;
        self.store.add_chunk(file, position, length)?;
        upload.ranges.insert(position, length);
        upload.received += length;
        let (received, size) = (upload.received, upload.size);
        Ok(ChunkAck { position, length, received, size, duplicate: false, complete: received == size })
    }

    /// Where the upload of a dataset stands; `uuid` is the dataset's or one of its files'.
    pub fn progress(&self, uuid: &str) -> Result<Progress, DatasetError> {
        let record = self.find(uuid)?;
        let mut files = Vec::new();
        for file in &record.files {
            let (received, missing) = if record.state == DatasetState::Uploading {
                let upload = self.upload(&file.uuid)?;
                let upload = lock(&upload);
                let mut missing = upload.missing();
                missing.truncate(MAX_MISSING_LISTED);
                (upload.received, missing)
            } else {
                (file.size, Vec::new())
            };
            // A file's uuid lets its holder write into it: shown only to whoever asked by it.
            let shown = (file.uuid == uuid).then(|| file.uuid.clone());
            files.push(FileProgress { uuid: shown, role: file.role, size: file.size, received, missing });
        }
        Ok(Progress {
            uuid: record.uuid,
            name: record.name,
            kind: record.kind,
            state: record.state,
            complete: files.iter().all(|f| f.received == f.size),
            files,
        })
    }

    /// Checks that every byte arrived and makes the dataset visible to sessions.
    /// Finalising a ready dataset again is a no-op. Blocking (fsyncs, renames).
    pub fn finalise(
        &self,
        kind: DatasetKind,
        uuid: &str,
        input: &str,
        label: Option<&str>,
    ) -> Result<Listed, DatasetError> {
        let _changing = lock(&self.changes);
        let mut record = lock(&self.records).get(uuid).cloned().ok_or_else(|| unknown_dataset(uuid))?;
        if record.kind != kind {
            return Err(DatasetError::BadRequest(format!(
                "dataset {uuid} is a {} dataset, not a {} one",
                kind_name(record.kind),
                kind_name(kind)
            )));
        }
        let expected: Vec<&str> = record.files.iter().map(|f| f.uuid.as_str()).collect();
        let given: Vec<&str> = std::iter::once(input).chain(label).collect();
        if expected != given {
            return Err(DatasetError::BadRequest(format!(
                "the file uuids do not match dataset {uuid}: expected uuid_input_file{} as returned when it was created",
                if kind == DatasetKind::Mnist { " and uuid_label_file" } else { "" }
            )));
        }
        if record.state == DatasetState::Ready {
            return Ok(self.listed(&record));
        }
        // Hold every file's lock while checking and moving, so no chunk lands in between.
        let uploads: Vec<_> = record.files.iter().map(|f| self.upload(&f.uuid)).collect::<Result<_, _>>()?;
        let mut held: Vec<MutexGuard<'_, Upload>> = uploads.iter().map(|u| lock(u)).collect();
        for (file, upload) in record.files.iter().zip(&held) {
            if upload.received != upload.size {
                let missing = upload.missing();
                let first: Vec<String> = missing.iter().take(5).map(|[s, e]| format!("{s}..{e}")).collect();
                return Err(DatasetError::Incomplete(format!(
                    "the {} file has {} of {} bytes; missing {}{}",
                    role_name(file.role),
                    upload.received,
                    upload.size,
                    first.join(", "),
                    if missing.len() > 5 { ", ..." } else { "" }
                )));
            }
        }
        for upload in &mut held {
            upload.file.sync_all().map_err(|e| io("sync", &self.uploads_path, e))?;
            upload.closed = true;
        }
        record.state = DatasetState::Finalising;
        self.store.put_dataset(&record)?;
        self.move_into_place(&mut record)?;
        drop(held);
        let mut uploads = lock(&self.uploads);
        for file in &record.files {
            uploads.remove(&file.uuid);
        }
        drop(uploads);
        let listed = self.listed(&record);
        lock(&self.records).insert(record.uuid.clone(), record);
        Ok(listed)
    }

    /// One dataset, by its uuid (or one of its files').
    pub fn get(&self, uuid: &str) -> Result<Listed, DatasetError> {
        Ok(self.listed(&self.find(uuid)?))
    }

    pub fn list(&self) -> Vec<Listed> {
        let mut all: Vec<Listed> = lock(&self.records).values().map(|r| self.listed(r)).collect();
        all.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
        all
    }

    /// Deletes a dataset, finished or not. Sessions that have its files open keep reading them.
    pub fn delete(&self, uuid: &str) -> Result<Listed, DatasetError> {
        let _changing = lock(&self.changes);
        let record = self.find(uuid)?;
        let uploads: Vec<_> = {
            let mut uploads = lock(&self.uploads);
            record.files.iter().filter_map(|f| uploads.remove(&f.uuid)).collect()
        };
        for upload in &uploads {
            lock(upload).closed = true;
        }
        self.store.settle_dataset(&record, false)?;
        lock(&self.records).remove(&record.uuid);
        for file in &record.files {
            let _ = self.uploads_dir.remove_file(part_name(&file.uuid));
        }
        let _ = match record.kind {
            DatasetKind::Csv => self.ready.remove_file(format!("{}.csv", record.name)),
            DatasetKind::Mnist => self.ready.remove_dir_all(&record.name),
        };
        Ok(self.listed(&record))
    }

    /// Cluster mode: a ready dataset (by its uuid) and its files, opened to
    /// read, in the record's order, to share them.
    #[cfg(feature = "cluster")]
    pub(crate) fn open_ready(&self, uuid: &str) -> Result<(DatasetRecord, Vec<File>), DatasetError> {
        let record = self.find(uuid)?;
        if record.state != DatasetState::Ready {
            return Err(DatasetError::Conflict(format!("dataset {uuid} is not finalised")));
        }
        let files = ready_names(&record)
            .iter()
            .map(|name| {
                self.ready
                    .open(name)
                    .map(cap_std::fs::File::into_std)
                    .map_err(|e| io("open", &self.ready_path.join(name), e))
            })
            .collect::<Result<_, _>>()?;
        Ok((record, files))
    }

    /// Cluster mode: makes room for a dataset another node finalised: an
    /// empty file in `uploads/` for each of its files, to be filled, then
    /// `adopt_finish`ed. `None` when it is here already.
    #[cfg(feature = "cluster")]
    pub(crate) fn adopt_begin(&self, record: &DatasetRecord) -> Result<Option<Vec<File>>, DatasetError> {
        check_name(&record.name)?;
        let _changing = lock(&self.changes);
        {
            let records = lock(&self.records);
            if records.contains_key(&record.uuid) {
                return Ok(None);
            }
            if records.values().any(|r| r.name == record.name) {
                return Err(DatasetError::Conflict(format!("a dataset named {:?} is here already", record.name)));
            }
        }
        self.check_quotas(record.files.iter().map(|f| f.size).sum())?;
        record
            .files
            .iter()
            .map(|file| {
                uuid::Uuid::parse_str(&file.uuid)
                    .map_err(|_| DatasetError::BadRequest("a file uuid is not one".into()))?;
                let name = part_name(&file.uuid);
                let part = open_rw(&self.uploads_dir, &name, true)
                    .map_err(|e| io("create", &self.uploads_path.join(&name), e))?;
                part.set_len(0).map_err(|e| io("empty", &self.uploads_path.join(&name), e))?;
                Ok(part.into_std())
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Cluster mode: forgets the files `adopt_begin` made for `record`
    /// (their fetch failed).
    #[cfg(feature = "cluster")]
    pub(crate) fn adopt_abandon(&self, record: &DatasetRecord) {
        for file in &record.files {
            let _ = self.uploads_dir.remove_file(part_name(&file.uuid));
        }
    }

    /// Cluster mode: makes a dataset another node finalised, whose files
    /// `adopt_begin` made and the caller filled, visible to sessions.
    #[cfg(feature = "cluster")]
    pub(crate) fn adopt_finish(&self, mut record: DatasetRecord) -> Result<(), DatasetError> {
        let _changing = lock(&self.changes);
        if lock(&self.records).contains_key(&record.uuid) {
            return Ok(());
        }
        record.state = DatasetState::Finalising;
        self.store.put_dataset(&record)?;
        self.move_into_place(&mut record)?;
        lock(&self.records).insert(record.uuid.clone(), record);
        Ok(())
    }

    /// Forgets unfinished uploads created before `cutoff`; returns how many.
    pub(crate) fn prune_unfinished(&self, cutoff: SystemTime) -> usize {
        let cutoff = millis(cutoff);
        let stale: Vec<String> = lock(&self.records)
            .values()
            .filter(|r| r.state == DatasetState::Uploading && r.created_at_ms < cutoff)
            .map(|r| r.uuid.clone())
            .collect();
        stale.iter().filter(|uuid| self.delete(uuid).is_ok()).count()
    }

    /// The file behind a session path under `/data`, if it is a ready dataset
    /// file, opened to read (through the folder's capability).
    pub fn resolve(&self, guest_path: &str) -> Result<File, DatasetError> {
        let not_found = || {
            DatasetError::NotFound(format!(
                "{guest_path:?} is not a dataset file; paths look like /data/<name>.csv or /data/<name>/input"
            ))
        };
        let rest = guest_path.strip_prefix("/data/").ok_or_else(not_found)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let valid = match parts.as_slice() {
            [file] => file.strip_suffix(".csv").is_some_and(|n| check_name(n).is_ok()),
            [dir, file] => check_name(dir).is_ok() && matches!(*file, "input" | "label"),
            _ => false,
        };
        if !valid || !self.ready.is_file(rest) {
            return Err(not_found());
        }
        self.ready.open(rest).map(cap_std::fs::File::into_std).map_err(|_| not_found())
    }

    fn listed(&self, record: &DatasetRecord) -> Listed {
        let paths = match record.state {
            DatasetState::Ready => guest_paths(record),
            _ => Vec::new(),
        };
        Listed {
            uuid: record.uuid.clone(),
            name: record.name.clone(),
            kind: record.kind,
            state: record.state,
            size: record.files.iter().map(|f| f.size).sum(),
            created_at_ms: record.created_at_ms,
            paths,
            files: record
                .files
                .iter()
                .map(|f| ListedFile {
                    uuid: (record.state == DatasetState::Ready).then(|| f.uuid.clone()),
                    role: f.role,
                    size: f.size,
                })
                .collect(),
        }
    }

    /// Moves a complete dataset's `.part` files to where sessions see them
    /// and marks it ready. Safe to repeat after a crash half-way.
    fn move_into_place(&self, record: &mut DatasetRecord) -> Result<(), DatasetError> {
        if record.kind == DatasetKind::Mnist {
            ensure_dir(&self.ready, &record.name).map_err(|e| io("create", &self.ready_path.join(&record.name), e))?;
        }
        for (file, target) in record.files.iter().zip(ready_names(record)) {
            let part = part_name(&file.uuid);
            if self.uploads_dir.exists(&part) {
                self.uploads_dir
                    .rename(&part, &self.ready, &target)
                    .map_err(|e| io("move", &self.uploads_path.join(&part), e))?;
            }
        }
        let parent = match record.kind {
            DatasetKind::Csv => self.ready.try_clone(),
            DatasetKind::Mnist => self.ready.open_dir(&record.name),
        };
        parent.and_then(|dir| sync_dir(&dir)).map_err(|e| io("sync", &self.ready_path, e))?;
        record.state = DatasetState::Ready;
        self.store.settle_dataset(record, true)?;
        Ok(())
    }

    fn find(&self, uuid: &str) -> Result<DatasetRecord, DatasetError> {
        let records = lock(&self.records);
        records
            .get(uuid)
            .or_else(|| records.values().find(|r| r.files.iter().any(|f| f.uuid == uuid)))
            .cloned()
            .ok_or_else(|| unknown_dataset(uuid))
    }

    fn file_record(&self, file: &str) -> Result<(DatasetRecord, FileRecord), DatasetError> {
        let records = lock(&self.records);
        let (record, found) = records
            .values()
            .find_map(|r| r.files.iter().find(|f| f.uuid == file).map(|f| (r.clone(), f.clone())))
            .ok_or_else(|| {
                DatasetError::NotFound(format!(
                    "no file {file:?} is being uploaded; use the uuid_input_file or uuid_label_file returned \
                     when the dataset was created"
                ))
            })?;
        if record.state != DatasetState::Uploading {
            return Err(DatasetError::Conflict(format!(
                "dataset {:?} is finalised; it takes no more chunks (delete and create it again to replace it)",
                record.name
            )));
        }
        Ok((record, found))
    }

    /// The upload state of a file, loaded from the store on first use.
    fn upload(&self, file: &str) -> Result<Arc<Mutex<Upload>>, DatasetError> {
        if let Some(upload) = lock(&self.uploads).get(file) {
            return Ok(upload.clone());
        }
        let (_, record) = self.file_record(file)?;
        let name = part_name(file);
        let part = open_rw(&self.uploads_dir, &name, false)
            .map(cap_std::fs::File::into_std)
            .map_err(|e| io("open", &self.uploads_path.join(&name), e))?;
        let ranges: BTreeMap<u64, u64> = self.store.chunks(file)?.into_iter().collect();
        let received = ranges.values().sum();
        let upload = Upload { file: part, size: record.size, ranges, received, closed: false };
        Ok(lock(&self.uploads).entry(file.to_string()).or_insert_with(|| Arc::new(Mutex::new(upload))).clone())
    }
}

fn check_name(name: &str) -> Result<(), DatasetError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(DatasetError::BadRequest(format!(
            "invalid dataset name {name:?}: use 1 to {MAX_NAME} letters, digits, '_' or '-'"
        )))
    }
}

fn unknown_dataset(uuid: &str) -> DatasetError {
    DatasetError::NotFound(format!("no dataset {uuid:?}"))
}

pub(crate) fn state_name(state: DatasetState) -> &'static str {
    match state {
        DatasetState::Uploading => "uploading",
        DatasetState::Finalising => "finalising",
        DatasetState::Ready => "ready",
    }
}

pub(crate) fn kind_name(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Csv => "csv",
        DatasetKind::Mnist => "mnist",
    }
}

pub(crate) fn role_name(role: FileRole) -> &'static str {
    match role {
        FileRole::Input => "input",
        FileRole::Label => "label",
    }
}

/// Where a dataset's files live in a session, in the order of its files.
fn guest_paths(record: &DatasetRecord) -> Vec<String> {
    match record.kind {
        DatasetKind::Csv => vec![format!("/data/{}.csv", record.name)],
        DatasetKind::Mnist => {
            record.files.iter().map(|f| format!("/data/{}/{}", record.name, role_name(f.role))).collect()
        }
    }
}

/// Where a dataset's files are inside `datasets/`, in the order of its files.
fn ready_names(record: &DatasetRecord) -> Vec<String> {
    guest_paths(record).iter().map(|p| p.trim_start_matches("/data/").to_string()).collect()
}

/// The name of a file's upload in `uploads/`.
fn part_name(file: &str) -> String {
    format!("{file}.part")
}
