//! The errors of the sandbox core. Faces turn these into their own wire errors.

use std::time::Duration;

use crate::language::{Language, UnknownLanguage};
use crate::scratch::ScratchReadError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    UnknownLanguage(#[from] UnknownLanguage),
    #[error("invalid program: {0}")]
    InvalidProgram(String),
    #[error("could not prepare the {language} guest: {message}")]
    GuestLoad { language: Language, message: String },
    #[error("could not start a {language} session: {message}")]
    Instantiate { language: Language, message: String },
    #[error("the session has ended ({0}); start a new session to run more code")]
    SessionEnded(String),
    #[error("no model named {name:?} in this session; models saved: {available}")]
    UnknownModel { name: String, available: String },
    /// JSON that should be JSON and is not (a model's answer, its names).
    #[error("the input is not valid JSON: {0}")]
    InvalidInput(String),
    /// A file of a session's scratch folder (`/tmp`) a client asked for.
    #[error(transparent)]
    Scratch(#[from] ScratchReadError),
    #[error("session {0} is still running a cell; wait for its result, then send the next")]
    CellRunning(String),
    #[error("you have {open} sessions open, the most one client may; close one (session_close) first")]
    TooManySessions { open: usize },
    /// A request too large to be sent where it must go (in cluster mode, to
    /// the node that holds its session); the message says what to do.
    #[error("{0}")]
    RequestTooLarge(String),
    #[error("the server is busy: {limit} runs are going already; try again shortly")]
    Busy { limit: usize },
    #[error("you have {share} runs going, your share of this server; wait for one to end")]
    ClientBusy { share: usize },
    #[error("rate limited: too many new runs; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: std::time::Duration },
    #[error("no session {0}: it never existed or has expired")]
    UnknownSession(String),
    #[error("the model's answer is {bytes} bytes, over the limit of {limit}; predict on less data at a time")]
    PredictionTooLarge { bytes: usize, limit: usize },
    #[error(
        "{language} is being prepared ({} s so far), ready in ~{} s; try again then",
        so_far.as_secs(),
        preparation_left(*language, *so_far).as_secs()
    )]
    Preparing { language: Language, so_far: std::time::Duration },
    #[error("the server is shutting down; no new runs are accepted")]
    ShuttingDown,
    #[error("run {0} is still going; wait for it to end first")]
    StillRunning(String),
    #[error("the engine could not be set up: {0}")]
    Engine(String),
    #[error("the server's data store failed: {0}")]
    Storage(String),
    /// Cluster mode: joining, or the cluster's queue or buckets.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// About how long a preparation that has gone on for `so_far` still takes.
fn preparation_left(language: Language, so_far: Duration) -> Duration {
    language.first_preparation().saturating_sub(so_far).max(Duration::from_secs(5))
}

impl Error {
    /// For a refusal that passes with time (busy, rate, preparing), about
    /// when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => Some(*retry_after),
            Error::ClientBusy { .. } | Error::Busy { .. } => Some(Duration::from_secs(1)),
            Error::Preparing { language, so_far } => Some(preparation_left(*language, *so_far)),
            _ => None,
        }
    }
}
