//! What the server holds in memory and shares between its threads.
//!
//! Role: shared state. Locks, atomics and tokio's sync primitives; no I/O: no sockets,
//! files, clock or logging (`tests/architecture.rs` checks it). The writer is the only
//! thread that changes a record here; the edges read.

pub mod handoff;
pub mod metrics;
pub mod serial;
pub mod table;
