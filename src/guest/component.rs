//! Guests that are WASI preview 2 components built into the binary: their
//! exports and imports are `wit/sandlot.wit`, linked by `host::linker`.

use std::path::Path;

use wasmtime::Store;
use wasmtime::component::Linker;
use wasmtime_wasi::FsPerms;

use super::{Call, Exports, Kind, Returned, Wasi, immortal, prebake};
use crate::cache;
use crate::error::Error;
use crate::host::{self, HostState, Sandbox, SandboxPre, WitProgram, WitSourceFile};
use crate::language::Language;
use crate::output::GuestIo;

/// The environment variables of every component session (a program's own
/// come through its `run` call).
pub(crate) const ENVIRONMENT: &[(&str, &str)] = &[("TMPDIR", "/tmp")];

/// What a prebake makes, named in the cache key with `immortal::VERSION`:
/// a change to either changes the key.
const PREBAKE_VERSION: &str = "prebake-1";

/// A component compiled for this engine and linked, ready to instantiate.
pub(crate) struct Prepared {
    pre: SandboxPre<HostState>,
}

/// One instance's exports.
pub(crate) struct Instance(Sandbox);

impl Prepared {
    /// Loads the compiled component from the cache, compiling it first if needed.
    pub(crate) fn load(
        engine: &wasmtime::Engine,
        linker: &Linker<HostState>,
        cache_dir: &Path,
        language: Language,
    ) -> Result<Self, Error> {
        let variant = format!("{PREBAKE_VERSION} {}", immortal::VERSION);
        let component = cache::load_or_compile(engine, cache_dir, language, &variant, |shipped| {
            let started = std::time::Instant::now();
            match prebake::prebake(engine, shipped) {
                Ok(Some(baked)) => {
                    tracing::info!(%language, elapsed = ?started.elapsed(), "interpreter started and baked in");
                    return Some(baked);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%language, "the interpreter could not be started ahead (each instance starts it): {e}");
                    return None;
                }
            }
            match immortal::immortalize_component(shipped) {
                Ok(Some((patched, done))) => {
                    tracing::info!(%language, objects = done.objects, skipped = done.skipped, elapsed = ?started.elapsed(),
                        "the snapshot's objects made immortal");
                    Some(patched)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(%language, "the snapshot's objects could not be made immortal (each instance copies what it uses): {e}");
                    None
                }
            }
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(SandboxPre::new)
            .map_err(|e| Error::GuestLoad { language, message: format!("{e:#}") })?;
        Ok(Prepared { pre })
    }
}

impl Kind for Prepared {
    type Instance = Instance;

    fn wasi(&self, io: GuestIo, data: Option<&Path>, scratch: &Path) -> Result<Wasi, Error> {
        let mut wasi = host::sandbox_wasi(io.stdin, io.stdout, io.stderr);
        wasi.preopened_dir(scratch, "/tmp", FsPerms::ReadWrite)
            .map_err(|e| Error::Engine(format!("could not open the scratch folder {}: {e}", scratch.display())))?;
        for (name, value) in ENVIRONMENT {
            wasi.env(name, value);
        }
        if let Some(data) = data {
            wasi.preopened_dir(data, "/data", FsPerms::ReadOnly).map_err(|e| {
                Error::Engine(format!("could not open the datasets folder {} for the guest: {e}", data.display()))
            })?;
        }
        Ok(Wasi { ctx: wasi.build_p1(), image_bytes: 0 })
    }

    async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(Instance(self.pre.instantiate_async(store).await?))
    }
}

impl Exports for Instance {
    async fn call(&self, store: &mut Store<HostState>, call: Call) -> wasmtime::Result<Returned> {
        let exports = &self.0;
        match call {
            Call::Run(program) => {
                let program = WitProgram {
                    files: program
                        .files
                        .into_iter()
                        .map(|f| WitSourceFile { name: f.name, content: f.content })
                        .collect(),
                    main_file: program.main_file,
                    args: program.args,
                    env: program.env,
                };
                exports.call_run(store, &program).await.map(|o| Returned::Status(o.status, o.value))
            }
            Call::Eval(code) => exports.call_eval(store, &code).await.map(|o| Returned::Status(o.status, o.value)),
            Call::Predict(name, input) => exports.call_predict(store, &name, &input).await.map(Returned::Prediction),
            Call::Train(name, input) => exports.call_train(store, &name, &input).await.map(Returned::Trained),
        }
    }
}
