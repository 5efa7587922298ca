//! dynip: tells you where your machines are.
//!
//! A client on each machine reports to a server; the server records the address each
//! report came from, keeps the history, and hands it back. A rewrite and extension of
//! DynIP, compatible with its config file, datagram and JSON file.
//!
//! Module map (see `docs/ARCHITECTURE.md` for the path of a report). Only the client's
//! modules build everywhere (`config`, `name`, `wire`, `key`, `record`, `auth`, `client`,
//! `cli`, `error`): on Windows `dynip` is the client; the rest is the server's and
//! Unix-only (`recvmmsg`, Unix signals, the SQLite writer).
//!
//! - Pure core, no I/O:
//!   - [`config`]: the INI dialect and the typed config.
//!   - [`name`]: host names ([`name::Name`]).
//!   - [`wire`]: datagram bytes ⇄ reports and acknowledgements.
//!   - [`key`]: keys and what is derived from them.
//!   - [`record`]: one host's state and how a report changes it.
//!   - [`auth`]: who may report what, and the clock skew allowed.
//!   - [`dyndns`]: the dyndns2 protocol's queries, credentials and answers.
//!   - [`api`]: the JSON API's documents and its OpenAPI description.
//!   - [`status`]: the status page's HTML.
//!   - [`metrics`]: counters and histograms in Prometheus's text format.
//!   - [`zone`]: DNS query bytes -> answer bytes for `dns_zone`.
//! - State:
//!   - [`table`]: the in-memory table every read uses.
//! - Edges:
//!   - [`client`]: sends a report and waits for its acknowledgement.
//!   - [`udp`]: the report sockets and their receive loop.
//!   - [`http`]: dyndns2, the API, the status page and `/metrics` over HTTP(S).
//!   - [`store`]: the SQLite store (only it knows SQL).
//!   - [`writer`]: the store's one writer thread (group commit, compaction).
//!   - [`export`]: the original's JSON file, imported and kept as a live export.
//!   - [`dns`]: the DNS sockets (UDP, TCP), transfers, NOTIFY, rate limits, counters.
//! - Wiring:
//!   - [`server`]: start-up and shutdown.
//!   - [`cli`]: the commands.
//!   - [`error`]: the crate's error and its exit codes.

/// mimalloc instead of glibc's allocator, for every binary and test. The HTTP edge
/// allocates a request's state on its thread and the writer frees much of it on its own,
/// which sends glibc through its slow paths (`malloc_consolidate`, `unlink_chunk`): 16%
/// of the HTTP thread's samples were in the allocator during dyndns2 updates, 5% during
/// `/healthz`. In three interleaved pairs of `cargo bench --bench http` runs, mimalloc
/// took 54-60 µs of server CPU per update against glibc's 62-64, and a ratio to
/// `/healthz` of 0.53-0.57 against 0.50-0.52. Unix only, with the server: the client
/// alone allocates too little to care.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The client's modules: every platform.
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod key;
pub mod name;
pub mod record;
pub mod wire;

// The server's: Unix only.
#[cfg(unix)]
pub mod api;
#[cfg(unix)]
pub mod dns;
#[cfg(unix)]
pub mod dyndns;
#[cfg(unix)]
pub mod export;
#[cfg(unix)]
pub mod http;
#[cfg(unix)]
pub mod metrics;
#[cfg(unix)]
pub mod server;
#[cfg(unix)]
pub mod status;
#[cfg(unix)]
pub mod store;
#[cfg(unix)]
pub mod table;
#[cfg(unix)]
pub mod udp;
#[cfg(unix)]
pub mod writer;
#[cfg(unix)]
pub mod zone;

pub use error::Error;
