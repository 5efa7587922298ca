//! What the server holds in memory and shares between its threads.
//!
//! Role: shared state. Locks and atomics, no I/O: no sockets, files, clock, tokio or
//! logging (`tests/architecture.rs` checks it). The writer is the only thread that
//! changes a record here; the edges read.

pub mod metrics;
pub mod table;
