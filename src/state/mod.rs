//! What the server holds in memory and shares between its threads.
//!
//! Role: shared state. Locks, atomics and tokio's sync primitives; no I/O: no sockets,
//! files, clock or logging (`tests/architecture.rs` checks it). The writer is the only
//! thread that changes a record here; the edges read.

pub mod handoff;
pub mod metrics;
pub mod outbox;
pub mod serial;
pub mod table;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

// A lock is poisoned when a thread panicked holding it. Every lock in dynip guards values
// that are whole between two calls (a push, an insert, a copy in or out: none panics
// half-way), so what a poisoned lock holds is still valid, and the server keeps serving
// it instead of panicking in turn on every later use.

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `lock`, poisoned or not.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `lock`, poisoned or not.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
