//! sandlot runs untrusted Python, JavaScript and Lua inside WebAssembly interpreters.
//!
//! A [`Runtime`] holds one wasmtime engine and the precompiled guests; each
//! [`Session`] is one guest instance with its own [`Limits`], emitting
//! [`SessionEvent`]s as it runs. See ARCHITECTURE.md for the map.

#[cfg(feature = "cli")]
pub mod bench;
mod cache;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(feature = "cli")]
pub mod config;
mod datasets;
mod date;
mod error;
mod folder;
pub mod fuzz;
mod guest;
mod guests;
pub mod harden;
mod host;
mod input;
mod language;
pub mod latency;
mod limits;
mod metrics;
mod notebook;
mod output;
mod program;
#[cfg(feature = "cli")]
pub mod progress;
mod registry;
mod report;
mod run;
mod runtime;
mod scratch;
mod server;
mod session;
mod store;
mod sync;
mod warm;

pub use cache::CompileReport;
pub use datasets::DatasetLimits;
pub use date::utc_date;
pub use error::Error;
pub use host::{EngineAnswer, EngineBridge, PlaceholderMemory, Placeholders};
pub use input::{STDIN_BUFFER_BYTES, Stdin, StdinError, StdinWriter};
pub use language::{Language, LanguageSpec, NativeBaseline, UnknownLanguage};
pub use limits::Limits;
pub use metrics::{Face, Metrics};
pub use notebook::{Cell, NotebookConfig, Notebooks};
pub use program::{Program, SourceFile};
pub use registry::{Client, Entry, Keep, Registry, RegistryConfig, RunEvents, RunStatus, SavedPlaceholders, Started};
pub use report::SessionEvents;
pub use run::{EndReason, RunOutcome, SessionEvent, VALUE_BYTES};
pub use runtime::{EPOCH_TICK, Runtime, RuntimeConfig, SessionOptions, scratch_base};
pub use scratch::{MAX_ENTRIES as SCRATCH_ENTRIES, ScratchFile, ScratchReadError};
#[cfg(feature = "mcp")]
pub use server::mcp::McpTools;
pub use server::{ServerConfig, serve, serve_on};
pub use session::{KillHandle, Session};
pub use warm::{DEFAULT_WARM_INSTANCES, MAX_WARM_INSTANCES};

/// The wasmtime version guests run on.
pub const WASMTIME_VERSION: &str = env!("SANDLOT_WASMTIME_VERSION");
