//! Locking shared state. A thread that panics while holding a lock leaves its data valid
//! in every critical section of this crate (each one finishes its change or makes none),
//! so a poisoned lock is taken as it is: one panic must not take the daemon down with it.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning (see the module's doc).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
