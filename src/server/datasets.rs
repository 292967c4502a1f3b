//! The datasets face (seed 003, as Hanami's Python SDK speaks it): REST calls
//! under `/control/v1/...` and `/v1/...` to create, finalise, list, get and
//! delete datasets and to see an upload's progress, and the upload socket on
//! `GET /` whose first message is `{"token","uuid":<file uuid>,"target":"file_upload"}`.
//!
//! Upload frames are binary `FileUpload_Message`s (protobuf, `proto.rs`),
//! each answered by a `FileUploadResponse_Message` once its bytes are on
//! disk. With `"framing":"raw"` in the first message, frames are an 8-byte
//! little-endian position then the bytes, answered `{"success":true,"position",
//! "length","received","size","duplicate","complete"}` or `{"success":false,
//! "error","code","position"}`. The socket stays open either way.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::{DatasetErrorBody, ErrorBody};
use super::proto::{FileUploadMessage, FileUploadResponse};
use super::socket::{Connection, Incoming};
use super::{App, Fields, field, parse_fields_off_thread, public_message};

use crate::datasets::{
    ChunkAck, DatasetError, Datasets, FileProgress, Listed, MAX_CHUNK, Progress, kind_name, role_name, state_name,
};
use crate::metrics::Face;
use crate::store::DatasetKind;

/// A refused REST request: `{code, error, context}` as the other REST routes,
/// plus the short `reason`.
pub(crate) struct Refused(DatasetError);

impl From<DatasetError> for Refused {
    fn from(error: DatasetError) -> Self {
        Refused(error)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = match &error {
            DatasetError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DatasetError::NotFound(_) => StatusCode::NOT_FOUND,
            DatasetError::Conflict(_) | DatasetError::Overlap(_) | DatasetError::Incomplete(_) => StatusCode::CONFLICT,
            DatasetError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DatasetError::Quota(_) => StatusCode::INSUFFICIENT_STORAGE,
            DatasetError::OutOfRange(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            DatasetError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DatasetError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({
            "code": status.as_u16(),
            "reason": error.code(),
            "error": public_dataset_message(&error),
            "context": "datasets: POST/PUT /v1/csv/dataset or /v1/mnist/dataset, GET /v1/dataset, GET /v1/dataset/progress?uuid=, DELETE /v1/dataset?uuid=",
        });
        (status, Json(body)).into_response()
    }
}

/// What a client is told of a dataset error: a server error's detail (host
/// paths) goes to the log only.
/// What a client is told of a dataset error: the domain's message, and
/// where in this face to look next.
pub(crate) fn public_dataset_message(error: &DatasetError) -> String {
    match error {
        DatasetError::Server(e) => public_message(e),
        DatasetError::NotFound(message) => format!("{message}; GET /v1/dataset lists the datasets"),
        DatasetError::Incomplete(message) => {
            format!("{message} (GET /v1/dataset/progress?uuid=<dataset uuid> shows what is missing)")
        }
        other => other.to_string(),
    }
}

fn bad(message: impl Into<String>) -> DatasetError {
    DatasetError::BadRequest(message.into())
}

fn datasets(app: &App) -> Result<Arc<Datasets>, DatasetError> {
    app.datasets.clone().ok_or_else(|| {
        DatasetError::Unavailable(
            "this server keeps no datasets: it was started without a data folder (sandlot serve --data-dir DIR)".into(),
        )
    })
}

async fn body_object(body: Bytes) -> Result<Fields, DatasetError> {
    let text = String::from_utf8(body.into()).map_err(|_| bad("the body must be UTF-8 JSON"))?;
    parse_fields_off_thread(text).await.map_err(|e| bad(format!("the body: {e}")))
}

fn text_field(body: &Fields, key: &str) -> Result<String, DatasetError> {
    field::<String>(body, key, key).ok().flatten().ok_or_else(|| bad(format!("the body needs a \"{key}\" string")))
}

fn size_field(body: &Fields, key: &str) -> Result<u64, DatasetError> {
    field::<u64>(body, key, key)
        .ok()
        .flatten()
        .ok_or_else(|| bad(format!("the body needs \"{key}\": the file's size in bytes")))
}

/// Runs blocking dataset work (disk writes, fsyncs) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DatasetError> + Send + 'static,
) -> Result<T, DatasetError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(DatasetError::Server(crate::Error::Storage(format!("the task failed: {e}")))))
}

/// A REST reply: the JSON body, or why not.
type Reply = Result<Json<Value>, Refused>;

/// `POST csv/dataset`'s body (read field by field: these are its fields).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct CreateCsv {
    name: String,
    /// The file's size in bytes.
    input_data_size: u64,
}

/// `POST mnist/dataset`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct CreateMnist {
    name: String,
    input_data_size: u64,
    label_data_size: u64,
}

/// `PUT csv/dataset`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct FinaliseCsv {
    uuid: String,
    uuid_input_file: String,
}

/// `PUT mnist/dataset`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct FinaliseMnist {
    uuid: String,
    uuid_input_file: String,
    uuid_label_file: String,
}

async fn create(app: App, kind: DatasetKind, body: Bytes) -> Reply {
    let datasets = datasets(&app)?;
    let body = body_object(body).await?;
    let name = text_field(&body, "name")?;
    let mut sizes = vec![size_field(&body, "input_data_size")?];
    if kind == DatasetKind::Mnist {
        sizes.push(size_field(&body, "label_data_size")?);
    }
    let record = blocking(move || datasets.create(kind, &name, &sizes)).await?;
    let mut reply = json!({ "uuid": record.uuid, "name": record.name, "uuid_input_file": record.files[0].uuid });
    if let Some(label) = record.files.get(1) {
        reply["uuid_label_file"] = json!(label.uuid);
    }
    Ok(Json(reply))
}

async fn finalise(app: App, kind: DatasetKind, body: Bytes) -> Reply {
    let datasets = datasets(&app)?;
    let body = body_object(body).await?;
    let uuid = text_field(&body, "uuid")?;
    let input = text_field(&body, "uuid_input_file")?;
    let label = match kind {
        DatasetKind::Mnist => Some(text_field(&body, "uuid_label_file")?),
        DatasetKind::Csv => None,
    };
    let here = datasets.clone();
    let listed = blocking(move || here.finalise(kind, &uuid, &input, label.as_deref())).await?;
    // In a cluster it is ready once every node can fetch it.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster {
        cluster.datasets().share(&datasets, &listed.uuid).await.map_err(|e| {
            let why =
                format!("it is finalised on this node but not shared with the cluster yet ({e}); finalise it again");
            DatasetError::Unavailable(why)
        })?;
    }
    #[cfg(not(feature = "cluster"))]
    let _ = datasets;
    Ok(Json(listed_json(&listed)))
}

/// Creates a CSV dataset to upload: its uuid and its file's.
#[utoipa::path(
    post,
    path = "/v1/csv/dataset",
    tag = "datasets",
    request_body(content = CreateCsv, content_type = "application/json"),
    responses(
        (status = 200, description = "{uuid, name, uuid_input_file}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 507, description = "over a quota: count, total size, free disk", body = DatasetErrorBody),
        (status = 413, description = "a file larger than the limit", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn create_csv(State(app): State<App>, body: Bytes) -> Reply {
    create(app, DatasetKind::Csv, body).await
}

/// Creates an MNIST dataset (images and labels) to upload: its uuid and its files'.
#[utoipa::path(
    post,
    path = "/v1/mnist/dataset",
    tag = "datasets",
    request_body(content = CreateMnist, content_type = "application/json"),
    responses(
        (status = 200, description = "{uuid, name, uuid_input_file, uuid_label_file}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 507, description = "over a quota: count, total size, free disk", body = DatasetErrorBody),
        (status = 413, description = "a file larger than the limit", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn create_mnist(State(app): State<App>, body: Bytes) -> Reply {
    create(app, DatasetKind::Mnist, body).await
}

/// Finalises an uploaded CSV dataset: every byte present, it is mounted at /data.
#[utoipa::path(
    put,
    path = "/v1/csv/dataset",
    tag = "datasets",
    request_body(content = FinaliseCsv, content_type = "application/json"),
    responses(
        (status = 200, description = "the dataset: {uuid, name, kind, state, size, createdAt, paths, files}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such dataset or file", body = DatasetErrorBody),
        (status = 409, description = "not every byte has arrived, or the dataset is not in that state", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn finalise_csv(State(app): State<App>, body: Bytes) -> Reply {
    finalise(app, DatasetKind::Csv, body).await
}

/// Finalises an uploaded MNIST dataset.
#[utoipa::path(
    put,
    path = "/v1/mnist/dataset",
    tag = "datasets",
    request_body(content = FinaliseMnist, content_type = "application/json"),
    responses(
        (status = 200, description = "the dataset: {uuid, name, kind, state, size, createdAt, paths, files}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such dataset or file", body = DatasetErrorBody),
        (status = 409, description = "not every byte has arrived, or the dataset is not in that state", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn finalise_mnist(State(app): State<App>, body: Bytes) -> Reply {
    finalise(app, DatasetKind::Mnist, body).await
}

#[derive(Deserialize)]
pub(crate) struct ByUuid {
    uuid: Option<String>,
}

fn uuid_param(query: ByUuid) -> Result<String, DatasetError> {
    query.uuid.filter(|u| !u.is_empty()).ok_or_else(|| bad("add ?uuid=<dataset uuid> to the path"))
}

/// How much of each file of an upload has arrived.
#[utoipa::path(
    get,
    path = "/v1/dataset/progress",
    tag = "datasets",
    params(("uuid" = String, Query, description = "the dataset's uuid")),
    responses(
        (status = 200, description = "{uuid, name, kind, state, complete, files}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such dataset", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn progress(State(app): State<App>, Query(query): Query<ByUuid>) -> Reply {
    let datasets = datasets(&app)?;
    let uuid = uuid_param(query)?;
    let progress = blocking(move || datasets.progress(&uuid)).await?;
    Ok(Json(progress_json(&progress)))
}

/// Every dataset.
#[utoipa::path(
    get,
    path = "/v1/dataset/all",
    tag = "datasets",
    responses(
        (status = 200, description = "{datasets: [...]}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn list(State(app): State<App>) -> Reply {
    Ok(Json(json!({ "datasets": datasets(&app)?.list().iter().map(listed_json).collect::<Vec<_>>() })))
}

/// `GET dataset?uuid=`: one dataset; without a uuid, all of them.
#[utoipa::path(
    get,
    path = "/v1/dataset",
    tag = "datasets",
    params(("uuid" = Option<String>, Query, description = "the dataset's uuid")),
    responses(
        (status = 200, description = "the dataset, or {datasets: [...]} without a uuid", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such dataset", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn get(State(app): State<App>, Query(query): Query<ByUuid>) -> Reply {
    let datasets = datasets(&app)?;
    match query.uuid.filter(|u| !u.is_empty()) {
        Some(uuid) => Ok(Json(listed_json(&datasets.get(&uuid)?))),
        None => Ok(Json(json!({ "datasets": datasets.list().iter().map(listed_json).collect::<Vec<_>>() }))),
    }
}

/// Deletes a dataset (and its files) or an unfinished upload.
#[utoipa::path(
    delete,
    path = "/v1/dataset",
    tag = "datasets",
    params(("uuid" = String, Query, description = "the dataset's uuid")),
    responses(
        (status = 200, description = "{deleted: the dataset}", body = Object),
        (status = 400, description = "a malformed request", body = DatasetErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 404, description = "no such dataset", body = DatasetErrorBody),
        (status = 503, description = "the server keeps no datasets (no data folder)", body = DatasetErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn delete(State(app): State<App>, Query(query): Query<ByUuid>) -> Reply {
    let datasets = datasets(&app)?;
    let uuid = uuid_param(query)?;
    let deleted = blocking(move || datasets.delete(&uuid)).await?;
    // In a cluster, every node deletes its copy.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster {
        let files: Vec<String> = deleted.files.iter().filter_map(|f| f.uuid.clone()).collect();
        cluster.datasets().unshare(&deleted.uuid, &files).await?;
    }
    Ok(Json(json!({ "deleted": listed_json(&deleted) })))
}

/// One file's upload socket, from its accepted first message to its close.
pub(crate) async fn upload(app: App, mut connection: Connection, first: Fields) {
    connection.set_face(Face::Datasets);
    let outbox = connection.outbox.clone();
    let fail = |error: String, code: &str| json!({ "success": false, "error": error, "code": code });
    let opened = async {
        let datasets = app.datasets.clone().ok_or_else(|| {
            fail("this server keeps no datasets: it was started without a data folder".into(), "not_supported")
        })?;
        let framing = framing(&first).map_err(|e| fail(e, "bad_request"))?;
        let file = field::<String>(&first, "uuid", "uuid").ok().flatten().ok_or_else(|| {
            fail(
                "an upload's first message needs \"uuid\": the file's uuid (uuid_input_file or uuid_label_file)".into(),
                "bad_request",
            )
        })?;
        let (d, f) = (datasets.clone(), file.clone());
        let progress = blocking(move || {
            d.check_upload_target(&f)?;
            d.progress(&f)
        })
        .await
        .map_err(|e| fail(public_dataset_message(&e), e.code()))?;
        let dataset = json!({ "uuid": progress.uuid, "name": progress.name, "kind": kind_name(progress.kind) });
        let state = progress
            .files
            .into_iter()
            .find(|f| f.uuid.as_deref() == Some(&file))
            .map(|f| file_progress_json(&f))
            .unwrap_or(Value::Null);
        Ok::<_, Value>((datasets, file, dataset, state, framing))
    };
    let (datasets, file, dataset, state, framing) = match opened.await {
        Ok(opened) => opened,
        Err(refusal) => {
            outbox.json(refusal).await;
            connection.close().await;
            return;
        }
    };
    let mut hello = json!({ "success": true, "dataset": dataset, "maxChunk": MAX_CHUNK });
    if let (Value::Object(fields), Some(hello)) = (state, hello.as_object_mut()) {
        hello.extend(fields);
    }
    outbox.json(hello).await;
    connection.accept_binary();
    let metrics = app.registry.metrics().clone();
    let write = |position: u64, data: Bytes| {
        let (d, f, metrics) = (datasets.clone(), file.clone(), metrics.clone());
        blocking(move || {
            let written = d.write_chunk(&f, position, &data);
            if written.is_ok() {
                metrics.uploaded(data.len() as u64);
            }
            written
        })
    };
    while let Some(incoming) = connection.next().await {
        let sent = match framing {
            Framing::Protobuf => {
                let (success, error_message) = match incoming {
                    Incoming::Binary(frame) => match FileUploadMessage::decode(frame) {
                        Ok(chunk) => match write(chunk.position, chunk.data).await {
                            Ok(_) => (true, String::new()),
                            Err(e) => (false, format!("{}: {}", e.code(), public_dataset_message(&e))),
                        },
                        Err(_) => (false, "bad_request: a chunk is one FileUpload_Message {position, data}".into()),
                    },
                    Incoming::Text(_) => {
                        (false, "bad_request: this socket takes chunks as binary FileUpload_Message frames".into())
                    }
                    Incoming::Refused(why) => (false, format!("too_large: {why}")),
                };
                outbox.binary(FileUploadResponse { success, error_message }.encode_to_vec()).await
            }
            Framing::Raw => {
                let reply = match incoming {
                    Incoming::Binary(frame) => match parse_chunk(&frame) {
                        Ok((position, _)) => match write(position, frame.slice(8..)).await {
                            Ok(ack) => {
                                let mut reply = ack_json(&ack);
                                reply["success"] = json!(true);
                                reply
                            }
                            Err(e) => {
                                let mut reply = fail(public_dataset_message(&e), e.code());
                                reply["position"] = json!(position);
                                reply
                            }
                        },
                        Err(()) => fail(
                            "a chunk starts with its 8-byte little-endian position, then the bytes".into(),
                            "bad_request",
                        ),
                    },
                    Incoming::Text(_) => fail(
                        "this socket takes the file as binary frames: an 8-byte little-endian position, then up to \
                         1 MiB"
                            .into(),
                        "bad_request",
                    ),
                    Incoming::Refused(why) => fail(why.to_string(), "too_large"),
                };
                outbox.json(reply).await
            }
        };
        if !sent {
            break;
        }
    }
    connection.close().await;
}

/// How an upload socket's chunks are framed: Hanami's protobuf messages
/// (the default: what its SDK sends, each answered by a
/// `FileUploadResponse_Message`), or, when the first message says
/// `"framing": "raw"`, an 8-byte little-endian position then the bytes,
/// answered in JSON with the file's progress. Never guessed from the bytes.
#[derive(Clone, Copy)]
enum Framing {
    Protobuf,
    Raw,
}

fn framing(first: &Fields) -> Result<Framing, String> {
    match field::<String>(first, "framing", "framing").ok().flatten().as_deref() {
        None | Some("protobuf") => Ok(Framing::Protobuf),
        Some("raw") => Ok(Framing::Raw),
        Some(other) => Err(format!("unknown framing {other:?}: \"protobuf\" (the default) or \"raw\"")),
    }
}

/// An upload frame: its 8-byte little-endian position, then the bytes.
pub(crate) fn parse_chunk(frame: &[u8]) -> Result<(u64, &[u8]), ()> {
    let (position, bytes) = frame.split_first_chunk::<8>().ok_or(())?;
    Ok((u64::from_le_bytes(*position), bytes))
}

/// Reads a dataset file for `run_model` with `is_data: false`: its CSV rows,
/// numbers where cells are numbers; a header row (text over numbers) is dropped.
pub(crate) async fn rows(
    datasets: &Datasets,
    guest_path: &str,
    max_bytes: usize,
) -> Result<Box<serde_json::value::RawValue>, DatasetError> {
    let file = datasets.resolve(guest_path)?;
    let guest_path = guest_path.to_string();
    blocking(move || {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > max_bytes as u64 {
            return Err(DatasetError::TooLarge(format!(
                "{guest_path} has {size} bytes; run_model reads at most {max_bytes}: predict on a smaller file or send the data inline"
            )));
        }
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(file);
        // Written out as JSON row by row (a tree of a few MiB of cells would
        // cost twenty times that); a header row, text over numbers, is dropped.
        let mut out = String::from("[");
        let mut first: Option<Vec<Value>> = None;
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DatasetError::BadRequest(format!("{guest_path} is not valid CSV: {e}")))?;
            let row: Vec<Value> = record.iter().map(cell).collect();
            let numeric = row.iter().all(Value::is_number);
            match (i, first.take()) {
                (0, _) => {
                    first = Some(row);
                    continue;
                }
                (1, Some(header)) if !header.iter().all(Value::is_number) && numeric => {}
                (1, Some(header)) => push_row(&mut out, &header),
                _ => {}
            }
            push_row(&mut out, &row);
        }
        if let Some(only) = first {
            push_row(&mut out, &only);
        }
        out.push(']');
        serde_json::value::RawValue::from_string(out)
            .map_err(|e| DatasetError::Server(crate::Error::Storage(format!("rows of {guest_path}: {e}"))))
    })
    .await
}

fn push_row(out: &mut String, row: &[Value]) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&Value::Array(row.to_vec()).to_string());
}

fn cell(text: &str) -> Value {
    let trimmed = text.trim();
    if let Ok(n) = trimmed.parse::<i64>() {
        return json!(n);
    }
    match trimmed.parse::<f64>() {
        Ok(x) if x.is_finite() => json!(x),
        _ => json!(text),
    }
}

// ---- the wire shapes of the domain's answers (Hanami's field names) ----

fn listed_json(listed: &Listed) -> Value {
    let files: Vec<Value> = listed
        .files
        .iter()
        .map(|f| {
            let mut file = json!({ "role": role_name(f.role), "size": f.size });
            if let Some(uuid) = &f.uuid {
                file["uuid"] = json!(uuid);
            }
            file
        })
        .collect();
    json!({
        "uuid": listed.uuid,
        "name": listed.name,
        "kind": kind_name(listed.kind),
        "state": state_name(listed.state),
        "size": listed.size,
        "createdAt": listed.created_at_ms,
        "paths": listed.paths,
        "files": files,
    })
}

fn file_progress_json(file: &FileProgress) -> Value {
    let mut reply = json!({
        "role": role_name(file.role),
        "size": file.size,
        "received": file.received,
        "missing": file.missing,
    });
    if let Some(uuid) = &file.uuid {
        reply["uuid"] = json!(uuid);
    }
    reply
}

fn progress_json(progress: &Progress) -> Value {
    json!({
        "uuid": progress.uuid,
        "name": progress.name,
        "kind": kind_name(progress.kind),
        "state": state_name(progress.state),
        "complete": progress.complete,
        "files": progress.files.iter().map(file_progress_json).collect::<Vec<_>>(),
    })
}

fn ack_json(ack: &ChunkAck) -> Value {
    json!({
        "position": ack.position,
        "length": ack.length,
        "received": ack.received,
        "size": ack.size,
        "duplicate": ack.duplicate,
        "complete": ack.complete,
    })
}
