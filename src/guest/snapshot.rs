//! Bakes a warmed instance's linear memory into a module (as Wizer does), so
//! that every new instance starts from that memory by copy-on-write mapping
//! instead of re-running the warm-up.
//!
//! The new module is the original with three sections replaced: the memory's
//! minimum size becomes the warmed size, the data section holds the warmed
//! memory (its non-zero 4 KiB pages, merged into runs) after the original's
//! passive segments (kept first, so `memory.init`/`data.drop` indices still
//! hold), and the data count follows. Globals keep their initial values: the
//! snapshot is taken between calls, when the only mutable global, the shadow
//! stack pointer, is back at its initial value (the caller checks this).

use std::ops::Range;

use wasm_encoder::{ConstExpr, DataCountSection, DataSection, MemorySection, MemoryType, Module, RawSection};
use wasmparser::{DataKind, Parser, Payload};

const PAGE: usize = 4096;

/// The original module with `memory` (the warmed contents of its one memory) baked in.
pub(crate) fn bake(original: &[u8], memory: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: wasmparser::BinaryReaderError| format!("the module does not parse: {e}");
    // First pass: the passive segments, which keep their indices.
    let mut passive: Vec<&[u8]> = Vec::new();
    for payload in Parser::new(0).parse_all(original) {
        if let Payload::DataSection(reader) = payload.map_err(bad)? {
            for segment in reader {
                let segment = segment.map_err(bad)?;
                if let DataKind::Passive = segment.kind {
                    passive.push(segment.data);
                }
            }
        }
    }
    let runs = nonzero_runs(memory);
    let mut out = Module::new();
    let (mut memories, mut data_written) = (0, false);
    for payload in Parser::new(0).parse_all(original) {
        let payload = payload.map_err(bad)?;
        match &payload {
            Payload::MemorySection(reader) => {
                let mut section = MemorySection::new();
                for ty in reader.clone() {
                    let ty = ty.map_err(bad)?;
                    memories += 1;
                    if ty.memory64 || ty.shared || ty.page_size_log2.is_some() {
                        return Err("only a plain 32-bit memory can be baked".into());
                    }
                    let minimum = memory.len().div_ceil(65536) as u64;
                    if ty.maximum.is_some_and(|max| max < minimum) {
                        return Err("the warmed memory is over the module's maximum".into());
                    }
                    section.memory(MemoryType {
                        minimum,
                        maximum: ty.maximum,
                        memory64: false,
                        shared: false,
                        page_size_log2: None,
                    });
                }
                out.section(&section);
            }
            Payload::DataCountSection { .. } => {
                out.section(&DataCountSection { count: (passive.len() + runs.len()) as u32 });
            }
            Payload::DataSection(_) => {
                let mut section = DataSection::new();
                for bytes in &passive {
                    section.passive(bytes.iter().copied());
                }
                for run in &runs {
                    section.active(0, &ConstExpr::i32_const(run.start as i32), memory[run.clone()].iter().copied());
                }
                out.section(&section);
                data_written = true;
            }
            Payload::CodeSectionEntry(_) | Payload::Version { .. } | Payload::End(_) => {}
            other => {
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection { id, data: &original[range] });
                }
            }
        }
    }
    if memories != 1 {
        return Err(format!("the module defines {memories} memories; one is needed"));
    }
    if !data_written {
        return Err("the module has no data section to replace".into());
    }
    Ok(out.finish())
}

/// Runs of 4 KiB pages holding any non-zero byte.
fn nonzero_runs(memory: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (index, page) in memory.chunks(PAGE).enumerate() {
        if page.iter().all(|&b| b == 0) {
            continue;
        }
        let start = index * PAGE;
        let end = start + page.len();
        match runs.last_mut() {
            Some(run) if run.end == start => run.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use wasm_encoder::{CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, TypeSection};
    use wasmtime::{Engine, Instance, Module as WasmModule, Store};

    use super::*;

    /// A module with one memory, an active segment "abc" at 16, and a passive
    /// segment "xyz" that `init` copies to 200.
    fn module() -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: Some(4),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&memories);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0).export("init", ExportKind::Func, 0);
        m.section(&exports);
        m.section(&DataCountSection { count: 2 });
        let mut code = CodeSection::new();
        let mut init = Function::new([]);
        init.instruction(&Instruction::I32Const(200))
            .instruction(&Instruction::I32Const(0))
            .instruction(&Instruction::I32Const(3))
            .instruction(&Instruction::MemoryInit { mem: 0, data_index: 0 })
            .instruction(&Instruction::DataDrop(0))
            .instruction(&Instruction::End);
        code.function(&init);
        m.section(&code);
        let mut data = DataSection::new();
        data.passive(b"xyz".iter().copied());
        data.active(0, &ConstExpr::i32_const(16), b"abc".iter().copied());
        m.section(&data);
        m.finish()
    }

    #[test]
    fn a_baked_module_starts_with_the_warmed_memory_and_keeps_its_passive_segments() {
        let engine = Engine::default();
        let original = module();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &WasmModule::new(&engine, &original).unwrap(), &[]).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        memory.grow(&mut store, 1).unwrap();
        memory.write(&mut store, 1000, b"warm").unwrap();
        memory.write(&mut store, 70_000, b"second page").unwrap();
        let warmed = memory.data(&store).to_vec();

        let baked = bake(&original, &warmed).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &WasmModule::new(&engine, &baked).unwrap(), &[]).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        assert_eq!(memory.data_size(&store), 2 * 65536);
        let data = memory.data(&store);
        assert_eq!(
            (&data[16..19], &data[1000..1004], &data[70_000..70_011]),
            (&b"abc"[..], &b"warm"[..], &b"second page"[..])
        );
        instance.get_typed_func::<(), ()>(&mut store, "init").unwrap().call(&mut store, ()).unwrap();
        assert_eq!(&memory.data(&store)[200..203], b"xyz");
    }

    #[test]
    fn only_pages_with_data_become_segments() {
        let mut memory = vec![0u8; 10 * PAGE];
        memory[5] = 1;
        memory[PAGE + 7] = 1;
        memory[5 * PAGE] = 1;
        assert_eq!(nonzero_runs(&memory), vec![0..2 * PAGE, 5 * PAGE..6 * PAGE]);
    }
}
