//! The host side of `wit/sandlot.wit`: the store's data type and one file per
//! WIT interface (`placeholders.rs`, `models.rs`, `stats.rs`, `engine.rs`,
//! `input.rs`; `filesystem.rs` counts `wasi:filesystem`'s writes against the
//! scratch quota). A guest gets exactly what its `HostState` was built with:
//! WASI with no environment of the host's and no network, its own `/tmp`
//! (read-write, bounded: `scratch.rs`) and, on a server, the read-only
//! `/data`; standard input from its session; output into the session's
//! channel; and these capabilities.

pub(crate) mod door;
mod engine;
mod filesystem;
mod input;
mod limiter;
mod models;
mod placeholders;
mod stats;

pub use engine::{EngineAnswer, EngineBridge, NoEngine};
pub(crate) use limiter::MemoryLimiter;
pub use placeholders::{PlaceholderMemory, Placeholders};
pub(crate) use stats::table_stats;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "wit",
    world: "sandbox",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::sandlot::guest::types::{Program as WitProgram, SourceFile as WitSourceFile};

/// Everything one guest instance may touch; owned by its `Store`.
pub(crate) struct HostState {
    /// WASI for either kind of guest: a preview 1 context is a preview 2 one
    /// with an adapter (the components use its preview 2 view).
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) placeholders: Placeholders,
    pub(crate) models: models::ModelNames,
    pub(crate) engine: Arc<dyn EngineBridge>,
    /// The client's context, as JSON text.
    pub(crate) context: Option<Box<serde_json::value::RawValue>>,
    /// A python-sci call's answer (a prediction, or a run's trailing value),
    /// as its door call left it.
    pub(crate) prediction: Option<Result<String, String>>,
    /// The instance's scratch folder (`/tmp`), removed with it.
    pub(crate) scratch: Option<crate::scratch::Scratch>,
}

impl HostState {
    pub(crate) fn new(
        wasi: WasiP1Ctx,
        limiter: MemoryLimiter,
        placeholders: Placeholders,
        engine: Arc<dyn EngineBridge>,
        context: Option<Box<serde_json::value::RawValue>>,
    ) -> Self {
        HostState {
            wasi,
            limiter,
            placeholders,
            models: models::ModelNames::default(),
            engine,
            context,
            prediction: None,
            scratch: None,
        }
    }

    pub(crate) fn has_model(&self, name: &str) -> bool {
        self.models.contains(name)
    }

    pub(crate) fn model_names(&self) -> Vec<String> {
        self.models.names()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

/// The WASI every guest starts from: its output into the session's sinks,
/// its input from what the session's client sends, and nothing else: no
/// network, no host environment, no folders.
pub(crate) fn sandbox_wasi(
    stdin: impl wasmtime_wasi::cli::StdinStream + 'static,
    stdout: impl wasmtime_wasi::cli::StdoutStream + 'static,
    stderr: impl wasmtime_wasi::cli::StdoutStream + 'static,
) -> wasmtime_wasi::WasiCtxBuilder {
    let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
    wasi.stdin(stdin).stdout(stdout).stderr(stderr);
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    wasi
}

/// Links WASI preview 1 and the door, for python-sci's core module.
pub(crate) fn core_linker(engine: &wasmtime::Engine) -> wasmtime::Result<wasmtime::Linker<HostState>> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut HostState| &mut state.wasi)?;
    linker.func_wrap_async("host", "call", |caller, args: (i32, i32, i32, i32)| Box::new(door::call(caller, args)))?;
    Ok(linker)
}

/// Links WASI preview 2 and the sandlot interfaces.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    filesystem::count_writes(&mut linker)?;
    Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

impl sandlot::guest::types::Host for HostState {}
