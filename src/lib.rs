//! dynip: tells you where your machines are.
//!
//! A client on each machine reports to a server; the server records the address each
//! report came from, keeps the history, and hands it back. A rewrite and extension of
//! DynIP, compatible with its config file, datagram and JSON file.
//!
//! Module map: a folder is a role, stated in its module doc and checked by
//! `tests/architecture.rs`; `docs/ARCHITECTURE.md` has the path of a report and the
//! invariants. Only the client's parts build everywhere (`model`, `proto::wire`,
//! `policy`, `config`, `edge::client`, `cli`, `error`); the rest is the server's, behind
//! the default `server` feature, and Linux-only (`recvmmsg`, `SO_REUSEPORT` threads,
//! systemd). Built without it (`--no-default-features`: Windows, macOS), `dynip` is the
//! client.
//!
//! - Pure (values, codecs and rules: bytes or text and `now` in, values out; no I/O):
//!   - [`model`]: host names, keys, a host's record.
//!   - [`proto`]: the datagrams, dyndns2, the DNS zone, the API's documents, the status
//!     page.
//!   - [`policy`]: who may report what; the rate limits.
//!   - [`config`]: the INI dialect and the typed config.
//! - Shared state (memory, no I/O): [`state`]: the table every read uses, the zone's
//!   serial, the metrics, the hand-off from the writer to the edges.
//! - [`store`]: the SQLite store; the only module that knows SQL.
//! - [`writer`]: the store's one writer thread: batching, the replay rule, group commit,
//!   compaction.
//! - [`edge`]: the I/O edges: the report sockets, HTTP, DNS, the client, the original's
//!   JSON file, the service manager.
//! - Wiring: [`server`] (start-up and shutdown), [`cli`] (the commands), [`error`] (the
//!   crate's error and its exit codes).

/// mimalloc instead of glibc's allocator, for every binary and test. The HTTP edge
/// allocates a request's state on its thread and the writer frees much of it on its own,
/// which sends glibc through its slow paths (`malloc_consolidate`, `unlink_chunk`): 16%
/// of the HTTP thread's samples were in the allocator during dyndns2 updates, 5% during
/// `/healthz`. In three interleaved pairs of `cargo bench --bench http` runs, mimalloc
/// took 54-60 µs of server CPU per update against glibc's 62-64, and a ratio to
/// `/healthz` of 0.53-0.57 against 0.50-0.52. With the server only: the client
/// alone allocates too little to care.
#[cfg(feature = "server")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The client's modules: every platform.
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
pub mod model;
pub mod policy;
pub mod proto;

// The server's: Linux only, with the `server` feature.
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod writer;

pub use error::Error;

#[cfg(all(feature = "server", not(target_os = "linux")))]
compile_error!("the dynip server runs on Linux only; build the client with --no-default-features");
