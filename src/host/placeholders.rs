//! `sandlot:guest/placeholders`: named JSON values a run saves for its clients.
//!
//! The store is shared (`Arc<Mutex<..>>`) so faces can read a session's
//! placeholders while it runs or after its instance is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::HostState;

/// The placeholders of one session.
#[derive(Clone, Debug)]
pub struct Placeholders {
    inner: Arc<Mutex<Saved>>,
}

#[derive(Debug)]
struct Saved {
    values: BTreeMap<String, (Value, usize)>,
    bytes: usize,
    budget: usize,
}

pub(crate) const MAX_NAME_BYTES: usize = 256;

impl Placeholders {
    pub fn new(budget_bytes: usize) -> Self {
        Placeholders { inner: Arc::new(Mutex::new(Saved { values: BTreeMap::new(), bytes: 0, budget: budget_bytes })) }
    }

    /// Placeholders as saved by an earlier run (restored from the store).
    pub(crate) fn restored(budget_bytes: usize, values: serde_json::Map<String, Value>) -> Self {
        let restored = Placeholders::new(budget_bytes);
        {
            let mut saved = restored.lock();
            for (name, value) in values {
                let size = name.len() + value.to_string().len();
                saved.bytes += size;
                saved.values.insert(name, (value, size));
            }
        }
        restored
    }

    /// A copy of every saved value, for the store.
    pub(crate) fn snapshot(&self) -> serde_json::Map<String, Value> {
        self.lock().values.iter().map(|(name, (value, _))| (name.clone(), value.clone())).collect()
    }

    /// The value saved under `name`, if any.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.lock().values.get(name).map(|(v, _)| v.clone())
    }

    /// Names of all saved placeholders, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().values.keys().cloned().collect()
    }

    /// Saves a JSON text under `name`, checking the name, the JSON and the budget.
    pub fn set_json(&self, name: &str, json: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(format!("placeholder names must be 1 to {MAX_NAME_BYTES} bytes long"));
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| format!("placeholder {name:?} is not valid JSON: {e}"))?;
        let size = json.len() + name.len();
        let mut saved = self.lock();
        let replaced = saved.values.get(name).map_or(0, |(_, s)| *s);
        let total = saved.bytes - replaced + size;
        if total > saved.budget {
            return Err(format!(
                "placeholder {name:?} ({size} bytes) would exceed this session's placeholder budget of {} bytes",
                saved.budget
            ));
        }
        saved.bytes = total;
        saved.values.insert(name.to_string(), (value, size));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        // A panic while holding this lock cannot leave the map half-written.
        crate::sync::lock(&self.inner)
    }
}

impl super::sandlot::guest::placeholders::Host for HostState {
    async fn set(&mut self, name: String, value: String) -> Result<(), String> {
        self.placeholders.set_json(&name, &value)
    }

    async fn get(&mut self, name: String) -> Option<String> {
        self.placeholders.get(&name).map(|v| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_replacements_once() {
        let p = Placeholders::new(20);
        p.set_json("a", "[1,2,3]").unwrap();
        p.set_json("a", "[1,2,3,4]").unwrap();
        assert_eq!(p.get("a"), Some(serde_json::json!([1, 2, 3, 4])));
        let err = p.set_json("b", "\"0123456789abcdef\"").unwrap_err();
        assert!(err.contains("budget"), "{err}");
        assert_eq!(p.names(), vec!["a".to_string()]);
    }

    #[test]
    fn bad_names_and_json_are_refused() {
        let p = Placeholders::new(1 << 20);
        assert!(p.set_json("", "1").is_err());
        assert!(p.set_json(&"x".repeat(MAX_NAME_BYTES + 1), "1").is_err());
        assert!(p.set_json("x", "{not json").unwrap_err().contains("not valid JSON"));
    }
}
