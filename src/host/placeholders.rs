//! `sandlot:guest/placeholders`: named JSON values a run saves for its clients.
//!
//! A value is held as the JSON text the guest sent (`RawValue`: checked to
//! be JSON, never expanded into a tree, which costs 10–20 times its text),
//! and its size is checked against the session's budget and the server's
//! `PlaceholderMemory` before it is even checked to be JSON. The store is
//! shared (`Arc<Mutex<..>>`) so faces can read a session's placeholders while
//! it runs or after its instance is gone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use serde_json::value::RawValue;

use super::HostState;

/// The memory all sessions' placeholders may take together, in bytes (the
/// JSON texts and names); shared by the sessions of a server.
#[derive(Debug)]
pub struct PlaceholderMemory {
    limit: usize,
    used: AtomicUsize,
}

impl PlaceholderMemory {
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(PlaceholderMemory { limit: limit_bytes, used: AtomicUsize::new(0) })
    }

    /// A budget for one session that shares nothing (for a lone session).
    fn unshared() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` more, or false when that would pass the limit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

/// The placeholders of one session.
#[derive(Clone, Debug)]
pub struct Placeholders {
    inner: Arc<Mutex<Saved>>,
}

#[derive(Debug)]
struct Saved {
    values: BTreeMap<String, Arc<RawValue>>,
    bytes: usize,
    budget: usize,
    memory: Arc<PlaceholderMemory>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        self.memory.give_back(self.bytes);
    }
}

pub(crate) const MAX_NAME_BYTES: usize = 256;

/// What a placeholder costs: its name and its JSON text.
fn cost(name: &str, json: &str) -> usize {
    name.len() + json.len()
}

impl Placeholders {
    /// Placeholders of one session, `budget_bytes` at most, sharing nothing.
    pub fn new(budget_bytes: usize) -> Self {
        Self::sharing(budget_bytes, PlaceholderMemory::unshared())
    }

    /// Placeholders of one session, `budget_bytes` at most, and taken from `memory`.
    pub fn sharing(budget_bytes: usize, memory: Arc<PlaceholderMemory>) -> Self {
        let saved = Saved { values: BTreeMap::new(), bytes: 0, budget: budget_bytes, memory };
        Placeholders { inner: Arc::new(Mutex::new(saved)) }
    }

    /// Placeholders as saved by an earlier run (restored from the store); they
    /// count against `memory` (past its limit too: they were accepted once).
    pub(crate) fn restored(
        budget_bytes: usize,
        memory: Arc<PlaceholderMemory>,
        values: BTreeMap<String, Arc<RawValue>>,
    ) -> Self {
        let bytes = values.iter().map(|(name, json)| cost(name, json.get())).sum();
        memory.used.fetch_add(bytes, Ordering::SeqCst);
        let saved = Saved { values, bytes, budget: budget_bytes, memory };
        Placeholders { inner: Arc::new(Mutex::new(saved)) }
    }

    /// Every saved value, for the store (shared, not copied).
    pub(crate) fn snapshot(&self) -> BTreeMap<String, Arc<RawValue>> {
        self.lock().values.clone()
    }

    /// The JSON text saved under `name`, if any.
    pub fn get_json(&self, name: &str) -> Option<Arc<RawValue>> {
        self.lock().values.get(name).cloned()
    }

    /// The value saved under `name`, parsed (a large value costs many times
    /// its text: servers use `get_json`).
    pub fn get(&self, name: &str) -> Option<Value> {
        self.get_json(name).and_then(|json| serde_json::from_str(json.get()).ok())
    }

    /// Names of all saved placeholders, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().values.keys().cloned().collect()
    }

    /// The most bytes this session's placeholders may hold.
    pub fn budget(&self) -> usize {
        self.lock().budget
    }

    /// Bytes this session's placeholders hold.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Saves a JSON text under `name`. The name and the sizes are checked
    /// first (the session's budget, then the server's memory), then that the
    /// text is JSON (without building it).
    pub fn set_json(&self, name: &str, json: String) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(format!("placeholder names must be 1 to {MAX_NAME_BYTES} bytes long"));
        }
        let size = cost(name, &json);
        let mut saved = self.lock();
        let replaced = saved.values.get(name).map_or(0, |json| cost(name, json.get()));
        let total = saved.bytes - replaced + size;
        if total > saved.budget {
            return Err(format!(
                "placeholder {name:?} ({size} bytes) would exceed this session's placeholder budget of {} bytes",
                saved.budget
            ));
        }
        let growth = size.saturating_sub(replaced);
        if !saved.memory.take(growth) {
            return Err(format!(
                "placeholder {name:?} ({size} bytes) does not fit: the server's memory for placeholders \
                 ({} MiB) is full; save less, or try again later",
                saved.memory.limit >> 20
            ));
        }
        let value = match RawValue::from_string(json) {
            Ok(value) => Arc::<RawValue>::from(value),
            Err(e) => {
                saved.memory.give_back(growth);
                return Err(format!("placeholder {name:?} is not valid JSON: {e}"));
            }
        };
        saved.memory.give_back(replaced.saturating_sub(size));
        saved.bytes = total;
        saved.values.insert(name.to_string(), value);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        // A panic while holding this lock cannot leave the map half-written.
        crate::sync::lock(&self.inner)
    }
}

impl super::sandlot::guest::placeholders::Host for HostState {
    async fn set(&mut self, name: String, value: String) -> Result<(), String> {
        self.placeholders.set_json(&name, value)
    }

    async fn get(&mut self, name: String) -> Option<String> {
        self.placeholders.get_json(&name).map(|json| json.get().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_replacements_once() {
        let p = Placeholders::new(20);
        p.set_json("a", "[1,2,3]".into()).unwrap();
        p.set_json("a", "[1,2,3,4]".into()).unwrap();
        assert_eq!(p.get("a"), Some(serde_json::json!([1, 2, 3, 4])));
        let err = p.set_json("b", "\"0123456789abcdef\"".into()).unwrap_err();
        assert!(err.contains("budget"), "{err}");
        assert_eq!(p.names(), vec!["a".to_string()]);
    }

    #[test]
    fn bad_names_and_json_are_refused() {
        let p = Placeholders::new(1 << 20);
        assert!(p.set_json("", "1".into()).is_err());
        assert!(p.set_json(&"x".repeat(MAX_NAME_BYTES + 1), "1".into()).is_err());
        assert!(p.set_json("x", "{not json".into()).unwrap_err().contains("not valid JSON"));
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn sizes_are_checked_before_the_text_is_parsed() {
        let p = Placeholders::new(1000);
        // Not JSON, but refused for its size: it was never parsed.
        let err = p.set_json("big", "[".repeat(5000)).unwrap_err();
        assert!(err.contains("budget"), "{err}");
    }

    #[test]
    fn the_servers_memory_is_shared_and_given_back() {
        let memory = PlaceholderMemory::new(100);
        let a = Placeholders::sharing(1000, memory.clone());
        let b = Placeholders::sharing(1000, memory.clone());
        a.set_json("x", "1".repeat(60)).unwrap();
        let err = b.set_json("y", "2".repeat(60)).unwrap_err();
        assert!(err.contains("server's memory"), "{err}");
        a.set_json("x", "1".repeat(10)).unwrap();
        assert_eq!(memory.used(), 11);
        b.set_json("y", "2".repeat(60)).unwrap();
        assert!(b.set_json("z", "nope".into()).is_err());
        assert_eq!(memory.used(), 72);
        drop(a);
        assert_eq!(memory.used(), 61);
        drop(b);
        assert_eq!(memory.used(), 0);
    }
}
