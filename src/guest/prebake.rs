//! Interpreters started before they are compiled. A component whose main
//! core module exports `sandlot-init` (javascript, lua) has that module
//! instantiated on its own, once, before the component is compiled, and
//! `sandlot-init` called: it builds the interpreter's runtime, context and
//! prelude. Its memory is baked into the module (`snapshot.rs`) and the
//! module spliced back into the component, so every instance starts with its
//! interpreter already built, mapped copy-on-write, instead of building it.
//!
//! `_initialize` (wasi-libc's constructors, which list the preopens) is not
//! called: each instance calls it once, as the component does at
//! instantiation (newer wasi-libc traps on a second call), so wasi-libc's
//! table of preopens is baked empty and filled with that session's folders.
//! The start sees nothing of the host: every import is a trap except the
//! clock and the environment (the one every component session has, which
//! wasi-libc keeps once read). So nothing of this machine or of any session
//! is in the image. What a guest must not share between sessions it makes
//! anew on its first call: the seeds of `Math.random` and `math.random`
//! (`guest-runtimes/*/main.c`).
//!
//! Anything unexpected (a start that traps, a module with other mutable
//! globals than its stack pointer, a section layout this does not know) is
//! an error, and the caller uses the component as shipped.

use std::ops::Range;

use wasmparser::{Parser, Payload};
use wasmtime::{Caller, Engine, Linker, Module, Store, UpdateDeadline};

use super::snapshot;

/// The export that starts a guest's interpreter; it returns 0 once started.
const INIT_EXPORT: &str = "sandlot-init";

/// The component with its interpreter started and baked in; `None` when its
/// main module has no `sandlot-init`. Blocking: call it off the async
/// threads, inside a tokio runtime.
pub(crate) fn prebake(engine: &Engine, component: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some(range) = main_module(component)? else { return Ok(None) };
    let module = &component[range.clone()];
    only_the_stack_pointer_changes(module)?;
    let memory = start(engine, module)?;
    let baked = snapshot::bake(module, &memory)?;
    splice(component, range, &baked).map(Some)
}

/// Where the top-level core module that exports `sandlot-init` lies.
fn main_module(component: &[u8]) -> Result<Option<Range<usize>>, String> {
    let bad = |e: wasmparser::BinaryReaderError| format!("the component does not parse: {e}");
    // parse_all walks nested modules and components too: each starts with
    // its own Version and ends with its own End.
    let mut depth = 0;
    let mut found = None;
    for payload in Parser::new(0).parse_all(component) {
        match payload.map_err(bad)? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ModuleSection { unchecked_range, .. }
                if depth == 1 && exports_init(&component[unchecked_range.clone()])? =>
            {
                if found.is_some() {
                    return Err(format!("two core modules export {INIT_EXPORT}"));
                }
                found = Some(unchecked_range);
            }
            _ => {}
        }
    }
    Ok(found)
}

fn exports_init(module: &[u8]) -> Result<bool, String> {
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ExportSection(reader) = payload.map_err(|e| e.to_string())? {
            for export in reader {
                let export = export.map_err(|e| e.to_string())?;
                if export.name == INIT_EXPORT && export.kind == wasmparser::ExternalKind::Func {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The bake keeps globals at their initial values: right only when the one
/// mutable global is the stack pointer, which is back at its start between
/// calls.
fn only_the_stack_pointer_changes(module: &[u8]) -> Result<(), String> {
    let mut mutable = 0;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(|e| e.to_string())? {
            Payload::GlobalSection(reader) => {
                for global in reader {
                    mutable += usize::from(global.map_err(|e| e.to_string())?.ty.mutable);
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let wasmparser::TypeRef::Global(ty) = import.map_err(|e| e.to_string())?.ty
                        && ty.mutable
                    {
                        return Err("the module imports a mutable global".into());
                    }
                }
            }
            _ => {}
        }
    }
    match mutable {
        1 => Ok(()),
        n => Err(format!("the module has {n} mutable globals; only a stack pointer can be baked")),
    }
}

/// Instantiates the module alone, starts its interpreter, and returns its memory.
fn start(engine: &Engine, module: &[u8]) -> Result<Vec<u8>, String> {
    let module = Module::new(engine, module).map_err(|e| format!("the module does not compile: {e:#}"))?;
    let mut linker: Linker<()> = Linker::new(engine);
    let wasi = "wasi_snapshot_preview1";
    let clock = |mut caller: Caller<'_, ()>, _id: i32, _precision: i64, at: i32| -> i32 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        write(&mut caller, &[(at, &(now.as_nanos() as u64).to_le_bytes()[..])])
    };
    // The environment every component session has, as wasi-libc lays it
    // out: a pointer per variable, then the "NAME=value\0" strings.
    let mut strings = Vec::new();
    let mut offsets = Vec::new();
    for (name, value) in super::component::ENVIRONMENT {
        offsets.push(strings.len() as u32);
        strings.extend_from_slice(format!("{name}={value}\0").as_bytes());
    }
    let (count, bytes) = ((offsets.len() as u32).to_le_bytes(), (strings.len() as u32).to_le_bytes());
    let sizes = move |mut caller: Caller<'_, ()>, count_at: i32, bytes_at: i32| -> i32 {
        write(&mut caller, &[(count_at, &count[..]), (bytes_at, &bytes[..])])
    };
    let environ = move |mut caller: Caller<'_, ()>, pointers_at: i32, strings_at: i32| -> i32 {
        let pointers: Vec<u8> = offsets.iter().flat_map(|offset| (strings_at as u32 + offset).to_le_bytes()).collect();
        write(&mut caller, &[(pointers_at, &pointers[..]), (strings_at, &strings[..])])
    };
    let setup = |linker: &mut Linker<()>| -> wasmtime::Result<()> {
        linker.func_wrap(wasi, "clock_time_get", clock)?;
        linker.func_wrap(wasi, "environ_sizes_get", sizes)?;
        linker.func_wrap(wasi, "environ_get", environ)?;
        linker.define_unknown_imports_as_traps(&module)
    };
    setup(&mut linker).map_err(|e| format!("cannot link the module: {e:#}"))?;
    let mut store = Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).map_err(|e| e.to_string())?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1)));
    let started: wasmtime::Result<(i32, Vec<u8>)> = tokio::runtime::Handle::current().block_on(async {
        let instance = linker.instantiate_async(&mut store, &module).await?;
        let init = instance.get_typed_func::<(), i32>(&mut store, INIT_EXPORT)?;
        let status = init.call_async(&mut store, ()).await?;
        let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| wasmtime::format_err!("no memory"))?;
        Ok((status, memory.data(&store).to_vec()))
    });
    match started.map_err(|e| format!("starting the interpreter failed: {e:#}"))? {
        (0, memory) => Ok(memory),
        (status, _) => Err(format!("starting the interpreter returned {status}")),
    }
}

/// Writes each of `writes` (an address, its bytes) into the caller's memory:
/// wasi's 0 when all fit, else EFAULT.
fn write(caller: &mut Caller<'_, ()>, writes: &[(i32, &[u8])]) -> i32 {
    const EFAULT: i32 = 21;
    let Some(memory) = caller.get_export("memory").and_then(|m| m.into_memory()) else { return EFAULT };
    for (at, bytes) in writes {
        if memory.write(&mut *caller, *at as u32 as usize, bytes).is_err() {
            return EFAULT;
        }
    }
    0
}

/// The component with the core module at `range` replaced by `module`.
fn splice(component: &[u8], range: Range<usize>, module: &[u8]) -> Result<Vec<u8>, String> {
    // The module's section header (id 1, its size as LEB128) ends where it starts.
    let size = leb128(range.len());
    let header = range.start.checked_sub(1 + size.len()).ok_or("a module section without its header")?;
    if component[header] != 1 || component[header + 1..range.start] != size[..] {
        return Err("the module section's header is not the one expected".into());
    }
    let mut out = Vec::with_capacity(component.len() + module.len());
    out.extend_from_slice(&component[..header]);
    out.push(1);
    out.extend_from_slice(&leb128(module.len()));
    out.extend_from_slice(module);
    out.extend_from_slice(&component[range.end..]);
    Ok(out)
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_is_minimal() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [127]);
        assert_eq!(leb128(128), [0x80, 1]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }
}
