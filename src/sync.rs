//! Locking that outlives a panic elsewhere: a poisoned mutex still guards
//! consistent data here (every critical section is a few plain assignments),
//! so the server carries on instead of failing every later request.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
