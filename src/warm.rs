//! Instances made before they are asked for.
//!
//! A cold start is an instantiation plus the interpreter's own start (Python's
//! first touch of its snapshotted image; for QuickJS and Lua, whose
//! interpreters are built into their image at compile time, the first touch
//! of that). The runtime keeps a few instances per language
//! that have done both, made in the background on a thread of their own, and a
//! new session takes one if there is one. Each instance is given to exactly
//! one session and never comes back: a session still starts in an instance no
//! other code has run in, only sooner. A session that finds its shelf empty
//! makes its own, as without the pool.
//!
//! A shelf holds instances of one kind `K` (for the runtime: the `/data`
//! folder an instance sees and its memory limit), the kind its last session
//! asked for; a server always asks for the same. This file keeps the shelves;
//! `runtime.rs` makes what goes on them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::language::Language;

/// Instances kept ready per language unless configured otherwise.
pub const DEFAULT_WARM_INSTANCES: usize = 4;
/// Instances kept ready per language at most: each is a whole instance in
/// memory (a Python one holds a few MiB once it has run its warm-up), made on
/// the refill thread whenever one is taken. More asked for keeps this many.
pub const MAX_WARM_INSTANCES: usize = 64;

/// One shelf of ready instances per language.
pub(crate) struct Shelves<K, T> {
    target: AtomicUsize,
    /// Instances handed out so far.
    served: AtomicU64,
    shelves: HashMap<Language, Shelf<K, T>>,
}

struct Shelf<K, T> {
    state: Mutex<ShelfState<K, T>>,
    /// Woken when an instance is taken: time to make another.
    taken: Notify,
    /// Whether this language's refill task has been started.
    refilling: AtomicBool,
}

struct ShelfState<K, T> {
    /// The kind of instance the shelf holds; `None` until one is asked for.
    kind: Option<K>,
    ready: VecDeque<T>,
}

impl<K: PartialEq + Clone, T> Shelves<K, T> {
    pub(crate) fn new(target: usize) -> Self {
        let shelf = || Shelf {
            state: Mutex::new(ShelfState { kind: None, ready: VecDeque::new() }),
            taken: Notify::new(),
            refilling: AtomicBool::new(false),
        };
        Shelves {
            target: AtomicUsize::new(target.min(MAX_WARM_INSTANCES)),
            served: AtomicU64::new(0),
            shelves: Language::ALL.into_iter().map(|l| (l, shelf())).collect(),
        }
    }

    fn shelf(&self, language: Language) -> &Shelf<K, T> {
        self.shelves.get(&language).expect("every language has a shelf")
    }

    fn lock(&self, language: Language) -> std::sync::MutexGuard<'_, ShelfState<K, T>> {
        // Nothing panics while holding it; a poisoned shelf is still consistent.
        self.shelf(language).state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many instances each shelf keeps.
    pub(crate) fn target(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    /// Changes how many instances each shelf keeps; extra ones are dropped.
    pub(crate) fn set_target(&self, target: usize) {
        let target = target.min(MAX_WARM_INSTANCES);
        self.target.store(target, Ordering::Relaxed);
        for language in Language::ALL {
            let dropped: Vec<T> = {
                let mut state = self.lock(language);
                let keep = state.ready.len().min(target);
                state.ready.drain(keep..).collect()
            };
            drop(dropped);
            self.shelf(language).taken.notify_one();
        }
    }

    /// A ready instance of this kind, if one is on the shelf. Whether or not
    /// there was one, the shelf now stocks this kind (see `stock`).
    pub(crate) fn take(&self, language: Language, kind: &K) -> (Option<T>, bool) {
        if self.target() == 0 {
            return (None, false);
        }
        let (taken, stale) = {
            let mut state = self.lock(language);
            let stale = Self::restock_for(&mut state, kind);
            (state.ready.pop_front(), stale)
        };
        drop(stale);
        if taken.is_some() {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        (taken, self.wake(language))
    }

    /// Makes the shelf stock this kind and wakes its refill; true the first
    /// time a language is asked for, when the caller starts its refill task.
    pub(crate) fn stock(&self, language: Language, kind: &K) -> bool {
        if self.target() == 0 {
            return false;
        }
        let stale = Self::restock_for(&mut self.lock(language), kind);
        drop(stale);
        self.wake(language)
    }

    /// Points the shelf at a kind, returning what it held of another.
    fn restock_for(state: &mut ShelfState<K, T>, kind: &K) -> VecDeque<T> {
        if state.kind.as_ref() == Some(kind) {
            return VecDeque::new();
        }
        state.kind = Some(kind.clone());
        std::mem::take(&mut state.ready)
    }

    fn wake(&self, language: Language) -> bool {
        let shelf = self.shelf(language);
        shelf.taken.notify_one();
        !shelf.refilling.swap(true, Ordering::AcqRel)
    }

    /// The kind of instance to make next, if the shelf is short.
    pub(crate) fn wanted(&self, language: Language) -> Option<K> {
        let state = self.lock(language);
        state.kind.clone().filter(|_| state.ready.len() < self.target())
    }

    /// Shelves an instance of a kind; it is dropped instead if the shelf is
    /// full or now stocks another kind.
    pub(crate) fn put(&self, language: Language, kind: &K, instance: T) {
        let mut state = self.lock(language);
        if state.kind.as_ref() == Some(kind) && state.ready.len() < self.target() {
            state.ready.push_back(instance);
            return;
        }
        drop(state);
        drop(instance);
    }

    /// Instances handed out so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Instances ready now.
    pub(crate) fn ready(&self, language: Language) -> usize {
        self.lock(language).ready.len()
    }

    /// Waits until an instance of `language` is taken (or the target changes).
    pub(crate) async fn taken(&self, language: Language) {
        self.shelf(language).taken.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shelf_stocks_the_kind_last_asked_for_and_hands_each_instance_out_once() {
        let shelves = Shelves::<&str, u32>::new(2);
        let (none, start) = shelves.take(Language::Python, &"none");
        assert!(none.is_none() && start, "the first demand starts the refill");
        assert_eq!(shelves.wanted(Language::Python), Some("none"));
        shelves.put(Language::Python, &"none", 1);
        shelves.put(Language::Python, &"none", 2);
        shelves.put(Language::Python, &"none", 3);
        assert_eq!(shelves.ready(Language::Python), 2, "never more than the target");
        assert_eq!(shelves.wanted(Language::Python), None);
        assert_eq!(shelves.take(Language::Python, &"none"), (Some(1), false));
        assert_eq!(shelves.ready(Language::Python), 1, "taken is gone");

        // Another kind: what was shelved of the old one is dropped.
        let data = "/srv/datasets";
        assert_eq!(shelves.take(Language::Python, &data), (None, false));
        assert_eq!(shelves.ready(Language::Python), 0);
        shelves.put(Language::Python, &"none", 4);
        assert_eq!(shelves.ready(Language::Python), 0, "an instance of the old kind is not shelved");
        assert_eq!(shelves.wanted(Language::Python), Some(data));
        shelves.put(Language::Python, &data, 5);
        assert_eq!(shelves.take(Language::Python, &data), (Some(5), false));
        assert_eq!(shelves.ready(Language::JavaScript), 0, "languages have their own shelves");
        assert!(shelves.stock(Language::JavaScript, &"none"), "the first demand for JavaScript");
        assert!(!shelves.stock(Language::JavaScript, &"none"));
    }

    #[test]
    fn a_target_of_zero_keeps_nothing() {
        let shelves = Shelves::<&str, u32>::new(3);
        shelves.take(Language::Lua, &"none");
        shelves.put(Language::Lua, &"none", 1);
        shelves.put(Language::Lua, &"none", 2);
        shelves.set_target(1);
        assert_eq!(shelves.ready(Language::Lua), 1);
        shelves.set_target(0);
        assert_eq!(shelves.ready(Language::Lua), 0);
        assert_eq!(shelves.take(Language::Lua, &"none"), (None, false));
        assert_eq!(shelves.wanted(Language::Lua), None);
    }

    #[test]
    fn a_target_past_the_most_keeps_the_most() {
        let shelves = Shelves::<&str, u32>::new(usize::MAX);
        assert_eq!(shelves.target(), MAX_WARM_INSTANCES);
        shelves.set_target(MAX_WARM_INSTANCES + 1);
        assert_eq!(shelves.target(), MAX_WARM_INSTANCES);
        shelves.take(Language::Lua, &"none");
        for i in 0..=MAX_WARM_INSTANCES as u32 {
            shelves.put(Language::Lua, &"none", i);
        }
        assert_eq!(shelves.ready(Language::Lua), MAX_WARM_INSTANCES);
    }
}
