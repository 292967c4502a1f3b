//! Datasets across a cluster. A dataset is uploaded to one node, as ever;
//! when it is finalised there its files go into the JetStream object store
//! `sandlot_dataset_files` (by file uuid; the store keeps each file's
//! SHA-256 and checks it on every read), then its record into the key-value
//! bucket `sandlot_datasets` (by dataset uuid). Every node follows that
//! bucket: it fetches a dataset it does not have into its own data folder,
//! once, and from then on its sessions see it under `/data` as if it had
//! been uploaded there. A delete on any node removes the entry, and every
//! node deletes its copy.
//!
//! Records are sealed with the cluster secret for their key, and files in
//! segments (`SEGMENT` bytes each, numbered, the last marked), each sealed
//! for its file, number and mark, so a file opens only whole and in order.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store::ObjectStore};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::seal::{self, Seal, entry_place};
use crate::datasets::{DatasetError, Datasets};
use crate::error::Error;
use crate::store::DatasetRecord;

const RECORDS_BUCKET: &str = "sandlot_datasets";
const FILES_BUCKET: &str = "sandlot_dataset_files";
/// Bytes of a file sealed together.
const SEGMENT: usize = 64 << 10;
/// The mark of a file's last segment, in its length's top bit.
const LAST: u32 = 1 << 31;
/// A deleted dataset's entry (sealed like a record).
const DELETED: &[u8] = b"deleted";

/// The cluster's datasets: their records and their files.
#[derive(Clone)]
pub(crate) struct SharedDatasets {
    records: kv::Store,
    files: ObjectStore,
    seal: Arc<Seal>,
}

/// The place a segment of a file is sealed for.
fn segment_place(file: &str, index: u64, last: bool) -> String {
    format!("$O.{FILES_BUCKET}.{file}.{index}{}", if last { ".last" } else { "" })
}

/// Reads up to `SEGMENT` bytes: fewer only at the end.
async fn read_segment(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut segment = Vec::with_capacity(SEGMENT);
    while segment.len() < SEGMENT {
        let read = (&mut *file).take((SEGMENT - segment.len()) as u64).read_to_end(&mut segment).await?;
        if read == 0 {
            break;
        }
    }
    Ok(segment)
}

/// Writes `file` sealed, segment by segment, into `out`.
async fn seal_file(
    seal: &Seal,
    uuid: &str,
    file: &mut tokio::fs::File,
    out: &mut tokio::io::DuplexStream,
) -> std::io::Result<()> {
    let mut current = read_segment(file).await?;
    for index in 0u64.. {
        let next = if current.len() == SEGMENT { read_segment(file).await? } else { Vec::new() };
        let last = next.is_empty();
        let sealed = seal.seal(&segment_place(uuid, index, last), &current);
        let length = u32::try_from(sealed.len()).expect("a segment is small") | if last { LAST } else { 0 };
        out.write_all(&length.to_be_bytes()).await?;
        out.write_all(&sealed).await?;
        if last {
            break;
        }
        current = next;
    }
    out.shutdown().await
}

impl SharedDatasets {
    /// Opens (or makes) the bucket and the object store.
    pub(crate) async fn open(js: &jetstream::Context, seal: Arc<Seal>) -> Result<Self, Error> {
        let records = super::bucket(js, RECORDS_BUCKET, Duration::ZERO).await?;
        // Made by hand, as `create_object_store` would, for the same reason
        // as the buckets (`super::bucket`).
        let stream = jetstream::stream::Config {
            name: format!("OBJ_{FILES_BUCKET}"),
            subjects: vec![format!("$O.{FILES_BUCKET}.C.>"), format!("$O.{FILES_BUCKET}.M.>")],
            storage: jetstream::stream::StorageType::File,
            num_replicas: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            allow_direct: true,
            ..Default::default()
        };
        let unreachable =
            |e: &dyn std::fmt::Display| Error::Cluster(format!("could not open the object store {FILES_BUCKET}: {e}"));
        js.get_or_create_stream(stream).await.map_err(|e| unreachable(&e))?;
        let files = js.get_object_store(FILES_BUCKET).await.map_err(|e| unreachable(&e))?;
        Ok(SharedDatasets { records, files, seal })
    }

    /// Shares the ready dataset `uuid` of `datasets`: its files, then its
    /// record. Sharing one again puts it again (the same content).
    pub(crate) async fn share(&self, datasets: &Arc<Datasets>, uuid: &str) -> Result<(), DatasetError> {
        let (found, uuid) = (datasets.clone(), uuid.to_string());
        let (record, files) = tokio::task::spawn_blocking(move || found.open_ready(&uuid))
            .await
            .map_err(|e| unavailable(format!("the task failed: {e}")))??;
        for (file, opened) in record.files.iter().zip(files) {
            let mut reader = tokio::fs::File::from_std(opened);
            // Sealed as it is read, through a pipe, so a file is never whole in memory.
            let (mut sealed, mut writer) = tokio::io::duplex(2 * SEGMENT);
            let put = self.files.put(file.uuid.as_str(), &mut sealed);
            let write = async {
                let written = seal_file(&self.seal, &file.uuid, &mut reader, &mut writer).await;
                drop(writer);
                written
            };
            let (put, written) = tokio::join!(put, write);
            written.map_err(|e| unavailable(format!("could not read its files to share them: {e}")))?;
            put.map_err(|e| unavailable(format!("could not put its files in the cluster's object store: {e}")))?;
        }
        let json = serde_json::to_vec(&record).expect("a dataset record is JSON");
        self.records
            .put(&record.uuid, self.seal.seal(&entry_place(RECORDS_BUCKET, &record.uuid), &json))
            .await
            .map_err(|e| unavailable(format!("could not put its record in the cluster: {e}")))?;
        Ok(())
    }

    /// Deletes `record` cluster-wide: its entry becomes a sealed `DELETED`
    /// (a KV delete is no node's: anyone could send one), then its files go.
    pub(crate) async fn unshare(&self, record_uuid: &str, file_uuids: &[String]) -> Result<(), DatasetError> {
        self.records
            .put(record_uuid, self.seal.seal(&entry_place(RECORDS_BUCKET, record_uuid), DELETED))
            .await
            .map_err(|e| unavailable(format!("could not delete it from the cluster: {e}")))?;
        for file in file_uuids {
            // A file never shared (deleted before its finalise) is not there.
            let _ = self.files.delete(file).await;
        }
        Ok(())
    }

    /// Follows the cluster's datasets for good: fetches each one `datasets`
    /// lacks, deletes each one deleted elsewhere.
    pub(crate) fn follow(&self, datasets: Arc<Datasets>) {
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                match shared.records.watch_with_history(">").await {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            let Ok(entry) = entry else { break };
                            shared.apply(&datasets, entry).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not follow the cluster's datasets; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn apply(&self, datasets: &Arc<Datasets>, entry: kv::Entry) {
        match entry.operation {
            kv::Operation::Put => {
                let Ok(opened) = self.seal.open(&entry_place(RECORDS_BUCKET, &entry.key), &entry.value) else { return };
                if opened.body == DELETED {
                    let (datasets, uuid) = (datasets.clone(), entry.key);
                    let _ = tokio::task::spawn_blocking(move || datasets.delete(&uuid)).await;
                    return;
                }
                let Ok(record) = serde_json::from_slice::<DatasetRecord>(&opened.body) else {
                    tracing::warn!(dataset = %entry.key, "the cluster's record of a dataset is unreadable");
                    return;
                };
                let name = record.name.clone();
                if let Err(e) = self.fetch(datasets, record).await {
                    tracing::warn!(dataset = %name, error = %e, "could not fetch a dataset from the cluster");
                }
            }
            // No node deletes an entry: this one is no node's.
            kv::Operation::Delete | kv::Operation::Purge => {
                self.seal.refuse_unsealed(&entry_place(RECORDS_BUCKET, &entry.key));
            }
        }
    }

    /// Fetches `record`'s files into `datasets`, unless it has it already.
    async fn fetch(&self, datasets: &Arc<Datasets>, record: DatasetRecord) -> Result<(), DatasetError> {
        let (begun, made) = (datasets.clone(), record.clone());
        let Some(files) = tokio::task::spawn_blocking(move || begun.adopt_begin(&made))
            .await
            .map_err(|e| unavailable(format!("the task failed: {e}")))??
        else {
            return Ok(());
        };
        let mut fetched = Ok(());
        for (file, part) in record.files.iter().zip(files) {
            fetched = self.fetch_file(&file.uuid, file.size, part).await;
            if fetched.is_err() {
                break;
            }
        }
        let datasets = datasets.clone();
        tokio::task::spawn_blocking(move || match fetched {
            Ok(()) => datasets.adopt_finish(record),
            Err(e) => {
                datasets.adopt_abandon(&record);
                Err(e)
            }
        })
        .await
        .map_err(|e| unavailable(format!("the task failed: {e}")))?
    }

    /// Copies one file from the object store into `part`, opening it
    /// segment by segment; its digest is checked as it is read, and its size
    /// against the record's.
    async fn fetch_file(&self, uuid: &str, size: u64, part: std::fs::File) -> Result<(), DatasetError> {
        let mut object = self
            .files
            .get(uuid)
            .await
            .map_err(|e| unavailable(format!("its file {uuid} is not in the cluster: {e}")))?;
        let mut part = tokio::fs::File::from_std(part);
        let broken =
            |e: &dyn std::fmt::Display| unavailable(format!("its file {uuid} could not be fetched whole: {e}"));
        let mut copied = 0u64;
        for index in 0u64.. {
            let length = object.read_u32().await.map_err(|e| broken(&e))?;
            let (last, length) = (length & LAST != 0, (length & !LAST) as usize);
            if length > SEGMENT + seal::OVERHEAD {
                return Err(broken(&"a segment is larger than any this version writes"));
            }
            let mut sealed = vec![0u8; length];
            object.read_exact(&mut sealed).await.map_err(|e| broken(&e))?;
            let opened = self
                .seal
                .open(&segment_place(uuid, index, last), &sealed)
                .map_err(|why| broken(&format_args!("a segment is {why}")))?;
            copied += opened.body.len() as u64;
            if copied > size {
                break;
            }
            part.write_all(&opened.body).await.map_err(|e| broken(&e))?;
            if last {
                break;
            }
        }
        if copied != size {
            return Err(unavailable(format!("its file {uuid} has {copied} bytes, not {size}")));
        }
        part.flush().await.map_err(|e| unavailable(format!("could not save its file {uuid}: {e}")))?;
        part.sync_all().await.map_err(|e| unavailable(format!("could not save its file {uuid}: {e}")))
    }
}

/// A dataset the cluster could not share, fetch or delete (503: try again).
fn unavailable(message: String) -> DatasetError {
    DatasetError::Unavailable(message)
}
