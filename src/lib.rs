//! dynip: tells you where your machines are.
//!
//! A client on each machine reports to a server; the server records the address each
//! report came from, keeps the history, and hands it back. A rewrite and extension of
//! DynIP, compatible with its config file, datagram and JSON file.
//!
//! Module map (see `docs/ARCHITECTURE.md` for the path of a report). Only the client's
//! modules build everywhere (`config`, `name`, `wire`, `key`, `record`, `auth`, `client`,
//! `cli`, `error`); the rest is the server's, behind the default `server` feature, and
//! Linux-only (`recvmmsg`, `SO_REUSEPORT` threads, systemd). Built without it
//! (`--no-default-features`: Windows, macOS), `dynip` is the client.
//!
//! - Pure core, no I/O:
//!   - [`config`]: the INI dialect and the typed config.
//!   - [`model::name`]: host names ([`model::name::Name`]).
//!   - [`proto::wire`]: datagram bytes ⇄ reports and acknowledgements.
//!   - [`model::key`]: keys and what is derived from them.
//!   - [`model::record`]: one host's state and how a report changes it.
//!   - [`policy`]: who may report what, and the clock skew allowed.
//!   - [`proto::dyndns`]: the dyndns2 protocol's queries, credentials and answers.
//!   - [`proto::api`]: the JSON API's documents and its OpenAPI description.
//!   - [`proto::status`]: the status page's HTML.
//!   - [`state::metrics`]: counters and histograms in Prometheus's text format.
//!   - [`proto::zone`]: DNS query bytes -> answer bytes for `dns_zone`.
//! - State:
//!   - [`state::table`]: the in-memory table every read uses.
//! - Edges:
//!   - [`edge::client`]: sends a report and waits for its acknowledgement.
//!   - [`edge::udp`]: the report sockets and their receive loop.
//!   - [`edge::http`]: dyndns2, the API, the status page and `/metrics` over HTTP(S).
//!   - [`store`]: the SQLite store (only it knows SQL).
//!   - [`writer`]: the store's one writer thread (group commit, compaction).
//!   - [`edge::export`]: the original's JSON file, imported and kept as a live export.
//!   - [`edge::dns`]: the DNS sockets (UDP, TCP), transfers, NOTIFY, rate limits, counters.
//!   - [`edge::systemd`]: readiness, status and watchdog for the service manager; the journal's
//!     log format.
//! - Wiring:
//!   - [`server`]: start-up and shutdown.
//!   - [`cli`]: the commands.
//!   - [`cli::check`]: `dynip check`: whether the server could start with a config.
//!   - [`error`]: the crate's error and its exit codes.

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
