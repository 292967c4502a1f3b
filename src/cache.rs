//! The `.cwasm` cache: each guest compiled to native code once per machine.
//!
//! A compiled guest is only valid for the wasmtime version, engine `Config` and
//! CPU that made it, so the file name carries a hash of all three
//! (`Engine::precompile_compatibility_hash`) and of the guest's own bytes.
//! Files are written to a temporary name and renamed, so a reader never sees
//! half a file, and several processes can fill the cache at once.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Error;
use crate::guests;
use crate::language::Language;

/// The default cache folder.
pub(crate) fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SANDLOT_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("sandlot")
}

/// Feeds `Hash` output into SHA-256, so the key is stable across processes.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A short hex digest of this engine's compatibility (wasmtime version,
/// config, CPU) and `parts`: what a compiled artefact's name must change with.
pub(crate) fn engine_digest(engine: &Engine, parts: &[&[u8]]) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    for part in parts {
        hasher.write(part);
    }
    hasher.0.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
pub(crate) fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes).and_then(|_| std::fs::rename(&temporary, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// The file name of a language's compiled guest: the engine, the guest's
/// SHA-256 and `variant` (what the caller makes of the guest before it is
/// compiled) decide it.
pub(crate) fn key(engine: &Engine, language: Language, variant: &str) -> Result<String, Error> {
    let hex = engine_digest(engine, &[guests::digest(language)?.as_bytes(), variant.as_bytes()]);
    Ok(format!("{}-{}-{hex}.cwasm", language.name(), env!("CARGO_PKG_VERSION")))
}

/// Loads a language's compiled guest from `dir`; if it is not there yet,
/// compiles `make(the shipped component)` (`variant` names what `make`
/// does, for the file name) and saves it first.
pub(crate) fn load_or_compile(
    engine: &Engine,
    dir: &Path,
    language: Language,
    variant: &str,
    make: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<Component, Error> {
    let fail = |message: String| Error::GuestLoad { language, message };
    let path = dir.join(key(engine, language, variant)?);
    if path.exists() {
        // SAFETY: the file was written by this function for this exact engine
        // configuration (its name says so), renamed into place only once complete.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cached guest unusable; compiling again"),
        }
    }
    let started = std::time::Instant::now();
    tracing::info!(%language, "compiling the guest to native code (once per machine)");
    let shipped = guests::bytes(language)?;
    let made = make(shipped);
    let bytes = engine
        .precompile_component(made.as_deref().unwrap_or(shipped))
        .map_err(|e| fail(format!("compilation failed: {e:#}")))?;
    tracing::info!(%language, elapsed = ?started.elapsed(), size = bytes.len(), "guest compiled");
    write_whole(&path, &bytes).map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    // SAFETY: as above; this file was written just now from `precompile_component`.
    unsafe { Component::deserialize_file(engine, &path) }
        .map_err(|e| fail(format!("cannot load {}: {e:#}", path.display())))
}

/// What it costs to make a guest ready, measured afresh (the cache is not touched).
#[derive(Clone, Debug)]
pub struct CompileReport {
    /// Size of the guest component as shipped.
    pub component_bytes: usize,
    /// Cranelift compile time to native code.
    pub compile: std::time::Duration,
    /// Size of the compiled `.cwasm`.
    pub native_bytes: usize,
    /// Time to load (mmap) the `.cwasm`, as every process start does.
    pub load: std::time::Duration,
}

pub(crate) fn measure(engine: &Engine, language: Language, scratch: &Path) -> Result<CompileReport, Error> {
    let fail = |message: String| Error::GuestLoad { language, message };
    let component = guests::bytes(language)?;
    let started = std::time::Instant::now();
    let native = engine.precompile_component(component).map_err(|e| fail(format!("compilation failed: {e:#}")))?;
    let compile = started.elapsed();
    std::fs::create_dir_all(scratch).map_err(|e| fail(e.to_string()))?;
    let path = scratch.join(format!(".measure-{}-{}.cwasm", language.name(), std::process::id()));
    std::fs::write(&path, &native).map_err(|e| fail(e.to_string()))?;
    let started = std::time::Instant::now();
    // SAFETY: written just above from `precompile_component` of this engine.
    let loaded = unsafe { Component::deserialize_file(engine, &path) };
    let load = started.elapsed();
    let _ = std::fs::remove_file(&path);
    loaded.map_err(|e| fail(format!("cannot load: {e:#}")))?;
    Ok(CompileReport { component_bytes: component.len(), compile, native_bytes: native.len(), load })
}
