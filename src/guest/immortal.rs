//! Python's snapshotted objects made immortal before the guest is compiled.
//!
//! componentize-py snapshots CPython's heap after the guest's top level has
//! run (`guest-runtimes/python/app.py`), so an instance starts with some
//! 600 modules' objects already in its memory, mapped copy-on-write from the
//! compiled image. Each instance then writes to the reference count of every
//! object it merely uses (a function, a module's dict, a name), and each such
//! write copies a whole 4 KiB page of the image into that instance's private
//! memory: most of what an idle Python session holds, and, in the profile,
//! much of its CPU (a copy-on-write fault and a TLB shoot-down per page).
//!
//! CPython never writes the count of an immortal object (on wasm32, one whose
//! count is at least 2^30). The guest's top level ends by listing every
//! object it can reach, keeping them all alive, and leaving their addresses
//! in the heap behind a marker. Here, before the component is compiled, the
//! list is found in the main module's data segments and each listed object's
//! count is set to CPython's own initial immortal value, in place: the
//! component keeps its layout, only those four bytes per object change.
//!
//! Only counts that look like a live object's are touched (above zero, below
//! immortal, with a type pointer): an address whose count lies outside the
//! data segments, or across two of them, is left as it is. An object made
//! immortal is never freed, which is what a snapshotted module's objects
//! already were in practice; an object a run unlinks stays where it is.
//! Anything unexpected (no list, two lists, a list that does not fit) is an
//! error, and the caller compiles the component as shipped.

use std::ops::Range;

use wasmparser::{DataKind, Operator, Parser, Payload};

/// Named in the cache keys: a change to what a patch does changes it.
pub(crate) const VERSION: &str = "immortal-1";
/// The list's marker, before and after it (`census` in
/// guest-runtimes/python/_sandlot_driver.py).
const MARKER: &[u8] = b"SANDLOT-IMMORTAL-1";
/// `_Py_IMMORTAL_INITIAL_REFCNT` and `_Py_IMMORTAL_MINIMUM_REFCNT` on 32-bit targets.
const IMMORTAL_INITIAL: u32 = 5 << 28;
const IMMORTAL_MINIMUM: u32 = 1 << 30;

/// What a patch did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Immortalized {
    /// Objects whose counts were set.
    pub(crate) objects: usize,
    /// Listed objects left alone: already immortal, or not laid out as expected.
    pub(crate) skipped: usize,
}

/// One active data segment of a core module: where it lands in memory and
/// where its bytes are in the component.
struct Segment {
    memory: Range<usize>,
    at: usize,
}

/// The component with its listed objects made immortal; `None` when no core
/// module holds a list (javascript, lua).
pub(crate) fn immortalize_component(component: &[u8]) -> Result<Option<(Vec<u8>, Immortalized)>, String> {
    let mut found = None;
    for segments in modules_segments(component)? {
        let Some(listed) = listed(&image(component, &segments))? else { continue };
        if found.is_some() {
            return Err("two lists of objects to make immortal".into());
        }
        found = Some((segments, listed));
    }
    let Some((segments, (addresses, mut skipped))) = found else { return Ok(None) };
    let mut out = component.to_vec();
    let mut objects = 0;
    for address in addresses {
        // The last segment starting at or before the address (they are sorted).
        let segment = segments.partition_point(|s| s.memory.start <= address).checked_sub(1).map(|i| &segments[i]);
        match segment.filter(|s| address + 4 <= s.memory.end) {
            Some(segment) => {
                let at = segment.at + (address - segment.memory.start);
                out[at..at + 4].copy_from_slice(&IMMORTAL_INITIAL.to_le_bytes());
                objects += 1;
            }
            None => skipped += 1,
        }
    }
    if objects == 0 {
        return Err("the list of objects to make immortal named none that could be".into());
    }
    Ok(Some((out, Immortalized { objects, skipped })))
}

/// A warmed instance's memory with its listed objects made immortal, before
/// it is baked (python-sci).
pub(crate) fn immortalize_memory(memory: &mut [u8]) -> Result<Immortalized, String> {
    let (addresses, skipped) = listed(memory)?.ok_or("the warmed memory holds no list of objects to make immortal")?;
    if addresses.is_empty() {
        return Err("the list of objects to make immortal named none that could be".into());
    }
    for &address in &addresses {
        memory[address..address + 4].copy_from_slice(&IMMORTAL_INITIAL.to_le_bytes());
    }
    Ok(Immortalized { objects: addresses.len(), skipped })
}

/// The listed objects in `image` whose counts look like a live object's
/// (above zero, below immortal, with a type), and how many others there were.
fn listed(image: &[u8]) -> Result<Option<(Vec<usize>, usize)>, String> {
    let mut lists = lists(image);
    let list = match lists.len() {
        0 => return Ok(None),
        1 => lists.remove(0),
        _ => return Err("two lists of objects to make immortal".into()),
    };
    let word = |at: usize| image.get(at..at.checked_add(4)?).map(|w| u32::from_le_bytes(w.try_into().unwrap()));
    let (mut addresses, mut skipped) = (Vec::with_capacity(list.len() / 4), 0);
    for address in list.chunks_exact(4).map(|a| u32::from_le_bytes(a.try_into().unwrap()) as usize) {
        match (word(address), word(address + 4)) {
            (Some(count), Some(kind)) if count > 0 && count < IMMORTAL_MINIMUM && kind != 0 => addresses.push(address),
            _ => skipped += 1,
        }
    }
    Ok(Some((addresses, skipped)))
}

/// Each top-level core module's active segments, in memory order.
fn modules_segments(component: &[u8]) -> Result<Vec<Vec<Segment>>, String> {
    let bad = |e: wasmparser::BinaryReaderError| format!("the component does not parse: {e}");
    let mut modules = Vec::new();
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(component) {
        match payload.map_err(bad)? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ModuleSection { .. } if depth == 1 => modules.push(Vec::new()),
            Payload::DataSection(reader) if depth == 2 => {
                let segments = modules.last_mut().ok_or("a data section outside a core module")?;
                for data in reader {
                    let data = data.map_err(bad)?;
                    let DataKind::Active { memory_index: 0, offset_expr } = data.kind else { continue };
                    let mut operators = offset_expr.get_operators_reader();
                    let Ok(Operator::I32Const { value }) = operators.read() else { continue };
                    let start = value as u32 as usize;
                    let at = data.data.as_ptr() as usize - component.as_ptr() as usize;
                    segments.push(Segment { memory: start..start + data.data.len(), at });
                }
            }
            _ => {}
        }
    }
    for segments in &mut modules {
        segments.sort_by_key(|s| s.memory.start);
        // Overlapping segments would make the image depend on their order in
        // the module, which this does not follow.
        if segments.windows(2).any(|pair| pair[1].memory.start < pair[0].memory.end) {
            return Err("a core module's data segments overlap".into());
        }
    }
    Ok(modules)
}

/// The memory a module's active segments lay out.
fn image(component: &[u8], segments: &[Segment]) -> Vec<u8> {
    let size = segments.iter().map(|s| s.memory.end).max().unwrap_or(0);
    let mut image = vec![0; size];
    for s in segments {
        image[s.memory.clone()].copy_from_slice(&component[s.at..s.at + s.memory.len()]);
    }
    image
}

/// The address lists in `image`: a marker, a count, that many addresses and
/// the marker again. A marker not followed so is something else (the
/// marker's own bytes, or a copy freed while the list was made).
fn lists(image: &[u8]) -> Vec<&[u8]> {
    let mut lists = Vec::new();
    let mut from = 0;
    while let Some(found) = image[from..].windows(MARKER.len()).position(|w| w == MARKER) {
        let start = from + found + MARKER.len();
        from = start;
        let Some(count) = image.get(start..start + 4) else { break };
        let count = u32::from_le_bytes(count.try_into().unwrap()) as usize;
        let body = start + 4..start + 4 + count * 4;
        if count > 0 && image.get(body.end..body.end + MARKER.len()) == Some(MARKER) {
            lists.push(&image[body.clone()]);
            from = body.end + MARKER.len();
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with one core module whose data segments hold `segments`
    /// (address, bytes).
    fn component(segments: &[(u32, Vec<u8>)]) -> Vec<u8> {
        use wasm_encoder::{Component, ConstExpr, DataSection, MemorySection, MemoryType, Module, ModuleSection};
        let mut module = Module::new();
        let mut memory = MemorySection::new();
        memory.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
        module.section(&memory);
        let mut data = DataSection::new();
        for (address, bytes) in segments {
            data.active(0, &ConstExpr::i32_const(*address as i32), bytes.iter().copied());
        }
        module.section(&data);
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        component.finish()
    }

    fn list(addresses: &[u32]) -> Vec<u8> {
        let mut out = MARKER.to_vec();
        out.extend((addresses.len() as u32).to_le_bytes());
        out.extend(addresses.iter().flat_map(|a| a.to_le_bytes()));
        out.extend(MARKER);
        out
    }

    fn object(count: u32, kind: u32) -> Vec<u8> {
        [count.to_le_bytes(), kind.to_le_bytes()].concat()
    }

    fn count_at(component: &[u8], address: u32) -> u32 {
        let segments = modules_segments(component).unwrap().remove(0);
        let image = image(component, &segments);
        u32::from_le_bytes(image[address as usize..address as usize + 4].try_into().unwrap())
    }

    #[test]
    fn listed_objects_become_immortal_and_nothing_else_changes() {
        let objects = [object(3, 0x500), object(1, 0x500), object(7 << 28, 0x500), object(2, 0)].concat();
        // The marker alone (as the guest's own constant) is not a list.
        let shipped = component(&[
            (0x100, objects),
            (0x200, MARKER.to_vec()),
            (0x300, list(&[0x100, 0x108, 0x110, 0x118, 0x800])),
            (0x900, object(9, 0x500)),
        ]);
        let (patched, report) = immortalize_component(&shipped).unwrap().unwrap();
        assert_eq!(report, Immortalized { objects: 2, skipped: 3 });
        assert_eq!(patched.len(), shipped.len());
        assert_eq!(count_at(&patched, 0x100), IMMORTAL_INITIAL);
        assert_eq!(count_at(&patched, 0x108), IMMORTAL_INITIAL);
        // Already immortal (statically allocated), no type, not listed: as shipped.
        assert_eq!(count_at(&patched, 0x110), 7 << 28);
        assert_eq!(count_at(&patched, 0x118), 2);
        assert_eq!(count_at(&patched, 0x900), 9);
        let changed = shipped.iter().zip(&patched).filter(|(a, b)| a != b).count();
        assert!(changed <= 8, "{changed} bytes changed");
    }

    #[test]
    fn a_warmed_memory_has_its_listed_objects_made_immortal_in_place() {
        let mut memory = vec![0u8; 0x400];
        memory[0x100..0x110].copy_from_slice(&[object(3, 0x500), object(0, 0x500)].concat());
        let listing = list(&[0x100, 0x108, 0x3fe]);
        memory[0x200..0x200 + listing.len()].copy_from_slice(&listing);
        let before = memory.clone();
        assert_eq!(immortalize_memory(&mut memory).unwrap(), Immortalized { objects: 1, skipped: 2 });
        assert_eq!(memory[0x100..0x104], IMMORTAL_INITIAL.to_le_bytes());
        assert!(memory.iter().zip(&before).filter(|(a, b)| a != b).count() <= 4);
        assert!(immortalize_memory(&mut [0u8; 64]).unwrap_err().contains("no list"));
    }

    #[test]
    fn a_component_without_a_list_is_left_to_the_caller_and_two_lists_are_refused() {
        assert_eq!(immortalize_component(&component(&[(0x100, object(3, 0x500))])).unwrap(), None);
        let two = component(&[(0x100, object(3, 0x500)), (0x200, list(&[0x100])), (0x400, list(&[0x100]))]);
        assert!(immortalize_component(&two).unwrap_err().contains("two lists"));
        let overlapping = component(&[(0x100, object(3, 0x500)), (0x104, object(3, 0x500)), (0x200, list(&[0x100]))]);
        assert!(immortalize_component(&overlapping).unwrap_err().contains("overlap"));
        let useless = component(&[(0x100, object(0, 0x500)), (0x200, list(&[0x100]))]);
        assert!(immortalize_component(&useless).unwrap_err().contains("none that could be"));
    }
}
