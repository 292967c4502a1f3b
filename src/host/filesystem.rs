//! The writes of `wasi:filesystem`, counted against the instance's scratch
//! quota before they reach the disk (see `scratch.rs`).
//!
//! wasmtime-wasi implements the interface; this shadows the three functions
//! through which a component writes file bytes (`write`, `write-via-stream`,
//! `append-via-stream`) with wrappers that call wasmtime-wasi's own code and
//! count what passes: a direct write is counted before it is made, a write
//! stream is wrapped in a `CountedStream` that counts each write before its
//! inner stream makes it. A write past the quota fails with "no space left
//! on device" and the call ends with `scratch-limit` at its next tick. Every
//! file opened for writing is also noted, so that one the guest deletes
//! while it still holds it open goes on counting.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, HostDescriptor};
use wasmtime_wasi::p2::{DynOutputStream, FsError, OutputStream, Pollable, StreamError, StreamResult};

use super::HostState;
use crate::scratch::Quota;

/// The interface whose functions are shadowed, as wasmtime-wasi names it (a
/// guest importing an older 0.2 version is matched to it by semver).
const INTERFACE: &str = "wasi:filesystem/types@0.2.12";

/// Shadows the writing functions of `wasi:filesystem/types` in `linker`,
/// which must already hold wasmtime-wasi's.
pub(crate) fn count_writes(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(INTERFACE)?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, HostState>, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            stream(state, fd, |fs, fd| HostDescriptor::write_via_stream(fs, fd, offset))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, HostState>, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            stream(state, fd, |fs, fd| HostDescriptor::append_via_stream(fs, fd))
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, HostState>, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Some(quota) = quota_of(state) {
                    if !track(state, &quota, &fd)? {
                        return Ok((Err(ErrorCode::InsufficientSpace),));
                    }
                    if !quota.take(buf.len() as u64) {
                        return Ok((Err(ErrorCode::InsufficientSpace),));
                    }
                }
                let mut fs = state.filesystem();
                result(HostDescriptor::write(&mut fs, fd, buf, offset).await)
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Opens a write stream through wasmtime-wasi's `open`, then wraps it.
fn stream(
    state: &mut HostState,
    fd: Resource<Descriptor>,
    open: impl FnOnce(
        &mut wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
        Resource<Descriptor>,
    ) -> Result<Resource<DynOutputStream>, FsError>,
) -> wasmtime::Result<(Result<Resource<DynOutputStream>, ErrorCode>,)> {
    let quota = quota_of(state);
    if let Some(quota) = &quota
        && !track(state, quota, &fd)?
    {
        return Ok((Err(ErrorCode::InsufficientSpace),));
    }
    let mut fs = state.filesystem();
    let stream = match open(&mut fs, fd) {
        Ok(stream) => stream,
        Err(e) => return Ok((Err(e.downcast()?),)),
    };
    let Some(quota) = quota else { return Ok((Ok(stream),)) };
    let inner = fs.table.delete(stream)?;
    let counted: DynOutputStream = Box::new(CountedStream { inner, quota });
    Ok((Ok(fs.table.push(counted)?),))
}

fn quota_of(state: &HostState) -> Option<Arc<Quota>> {
    state.scratch.as_ref().map(|scratch| scratch.quota().clone())
}

/// Notes the file behind `fd` as open for writing; false if too many are.
fn track(state: &mut HostState, quota: &Quota, fd: &Resource<Descriptor>) -> wasmtime::Result<bool> {
    let fs = state.filesystem();
    match fs.table.get(fd)? {
        Descriptor::File(file) => Ok(quota.track(&file.file)),
        Descriptor::Dir(_) => Ok(true),
    }
}

fn result<T>(answer: Result<T, FsError>) -> wasmtime::Result<(Result<T, ErrorCode>,)> {
    match answer {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// A file's write stream whose every write is counted against the quota
/// before the inner stream makes it.
struct CountedStream {
    inner: DynOutputStream,
    quota: Arc<Quota>,
}

impl CountedStream {
    fn take(&self, bytes: usize) -> StreamResult<()> {
        if self.quota.take(bytes as u64) {
            Ok(())
        } else {
            Err(StreamError::LastOperationFailed(std::io::Error::from(rustix::io::Errno::NOSPC).into()))
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CountedStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CountedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, zeroes: usize) -> StreamResult<()> {
        self.take(zeroes)?;
        self.inner.write_zeroes(zeroes)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}
