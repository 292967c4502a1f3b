//! `sandlot:guest/models`: the names of models a run keeps in its live instance.
//!
//! The model itself never leaves the guest; the host only learns its name so
//! it can check a prediction request before calling the guest's `predict`.

use std::collections::BTreeSet;

use super::HostState;

const MAX_MODELS: usize = 1000;
const MAX_NAME_BYTES: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct ModelNames(BTreeSet<String>);

impl ModelNames {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl super::sandlot::guest::models::Host for HostState {
    async fn register(&mut self, name: String) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(format!("model names must be 1 to {MAX_NAME_BYTES} bytes long"));
        }
        if !self.models.0.contains(&name) && self.models.0.len() >= MAX_MODELS {
            return Err(format!("a session may hold at most {MAX_MODELS} models"));
        }
        self.models.0.insert(name);
        Ok(())
    }
}
