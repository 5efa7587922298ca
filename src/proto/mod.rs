//! The protocols dynip speaks, as codecs and rules: bytes or text (and the time) in,
//! values out.
//!
//! Role: pure, like `model`. No sockets, files, clock, threads, tokio or logging
//! (`tests/architecture.rs` checks it): the edges own the buffers and the loops and call
//! in here. hickory-proto is known only to [`zone`] and [`update`] here and to the DNS edge. Only
//! [`wire`] builds without the `server` feature: the client speaks it.

#[cfg(feature = "server")]
pub mod acme_dns;
#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod dyndns;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod prometheus;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod tsig;
#[cfg(feature = "server")]
pub mod update;
pub mod wire;
#[cfg(feature = "server")]
pub mod zone;
