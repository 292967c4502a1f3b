//! The host side of `wit/sandlot.wit`: the store's data type and one file per
//! WIT interface (`placeholders.rs`, `models.rs`, `stats.rs`, `engine.rs`,
//! `input.rs`). A guest gets exactly what its `HostState` was built with: WASI
//! with no preopens, no environment of the host's, no network; output into
//! the session's channel; and these capabilities.

mod engine;
mod input;
mod limiter;
mod models;
mod placeholders;
mod stats;

pub use engine::{EngineBridge, NoEngine};
pub(crate) use limiter::MemoryLimiter;
pub use placeholders::Placeholders;
pub(crate) use stats::describe;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "wit",
    world: "sandbox",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::sandlot::guest::types::{Program as WitProgram, SourceFile as WitSourceFile};

/// Everything one guest instance may touch; owned by its `Store`.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) placeholders: Placeholders,
    pub(crate) models: models::ModelNames,
    pub(crate) engine: Arc<dyn EngineBridge>,
    pub(crate) context: Option<serde_json::Value>,
}

impl HostState {
    pub(crate) fn new(
        wasi: WasiCtx,
        limiter: MemoryLimiter,
        placeholders: Placeholders,
        engine: Arc<dyn EngineBridge>,
        context: Option<serde_json::Value>,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            placeholders,
            models: models::ModelNames::default(),
            engine,
            context,
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
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Links WASI preview 2 and the sandlot interfaces.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Sandbox::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
    Ok(linker)
}

impl sandlot::guest::types::Host for HostState {}
