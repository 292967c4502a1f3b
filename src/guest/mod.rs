//! The guest-kind seam: how an interpreter is loaded, what WASI it sees, how
//! it is instantiated and how a call reaches it. Two kinds implement it:
//!
//! - `component`: a WASI preview 2 component built into the binary, whose
//!   exports and imports are `wit/sandlot.wit` (python, javascript, lua);
//!   one whose interpreter can start before any run is started and baked
//!   when it is compiled (`prebake.rs`: javascript, lua);
//! - `sci`: a WASI preview 1 core module with one import, a JSON door onto the
//!   same host code, warmed and baked at `prepare` (python-sci).
//!
//! `Runtime` picks the kind from the language table (`GuestKind`) and holds a
//! `Prepared` guest per language; a `Session` holds an `Instance` and drives
//! its calls under limits without knowing its kind.

pub(crate) mod component;
pub(crate) mod immortal;
pub(crate) mod prebake;
pub(crate) mod sci;
pub(crate) mod snapshot;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::error::Error;
use crate::host::HostState;
use crate::language::{GuestKind, Language};
use crate::output::GuestIo;
use crate::program::Program;

/// A call into a guest, in the host's terms.
pub(crate) enum Call {
    Run(Program),
    Eval(String),
    /// A model's name and its JSON input.
    Predict(String, String),
    Train(String, String),
}

impl Call {
    /// Whether the call is a model's (and not a run's or an eval's).
    pub(crate) fn is_model_call(&self) -> bool {
        matches!(self, Call::Predict(..) | Call::Train(..))
    }
}

/// What a call returned, when it returned.
pub(crate) enum Returned {
    /// A run's or an eval's exit status, and the display of its trailing
    /// expression's value (if it had one that was not None/undefined/nil).
    Status(i32, Option<String>),
    /// A prediction as JSON text, or the model's error.
    Prediction(Result<String, String>),
    Trained(Result<(), String>),
}

/// WASI for a new instance, and the memory it starts with that its limit
/// does not count (python-sci's warmed image).
pub(crate) struct Wasi {
    pub(crate) ctx: WasiP1Ctx,
    pub(crate) image_bytes: usize,
}

/// One kind of guest, prepared for a language.
pub(crate) trait Kind {
    type Instance: Exports;

    /// WASI for an instance: stdout and stderr into the session, the
    /// read-only datasets folder at `/data` if given, its scratch folder at
    /// `/tmp` (the only place it may write), nothing else of the host.
    fn wasi(&self, io: GuestIo, data: Option<&Path>, scratch: &Path) -> Result<Wasi, Error>;

    fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send;
}

/// The calls an instance takes.
pub(crate) trait Exports {
    /// Makes one call; a trap (a limit, a kill, an exit) is the error.
    fn call(&self, store: &mut Store<HostState>, call: Call)
    -> impl Future<Output = wasmtime::Result<Returned>> + Send;
}

/// A language's guest, ready to instantiate.
pub(crate) enum Prepared {
    Component(component::Prepared),
    Sci(Arc<sci::SciGuest>),
}

/// One instance of a guest.
pub(crate) enum Instance {
    Component(component::Instance),
    Sci(sci::Exports),
}

impl Prepared {
    /// Loads a language's guest (compiling it, or python-sci's warm-up, the
    /// first time on a machine; cached after that). Blocking: call it off the
    /// async threads, inside a tokio runtime.
    pub(crate) fn load(
        engine: &wasmtime::Engine,
        linker: &Linker<HostState>,
        cache_dir: &Path,
        language: Language,
    ) -> Result<Prepared, Error> {
        Ok(match language.spec().guest {
            GuestKind::Component { .. } => {
                Prepared::Component(component::Prepared::load(engine, linker, cache_dir, language)?)
            }
            GuestKind::SciCore => Prepared::Sci(Arc::new(sci::SciGuest::load(engine, cache_dir)?)),
        })
    }

    pub(crate) fn wasi(&self, io: GuestIo, data: Option<&Path>, scratch: &Path) -> Result<Wasi, Error> {
        match self {
            Prepared::Component(guest) => guest.wasi(io, data, scratch),
            Prepared::Sci(guest) => guest.wasi(io, data, scratch),
        }
    }

    pub(crate) async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Prepared::Component(guest) => Instance::Component(guest.instantiate(store).await?),
            Prepared::Sci(guest) => Instance::Sci(guest.instantiate(store).await?),
        })
    }
}

impl Instance {
    pub(crate) async fn call(&self, store: &mut Store<HostState>, call: Call) -> wasmtime::Result<Returned> {
        match self {
            Instance::Component(instance) => instance.call(store, call).await,
            Instance::Sci(instance) => instance.call(store, call).await,
        }
    }
}
