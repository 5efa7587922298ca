//! Where dynip meets the world: the report sockets, HTTP, DNS, the client's socket, the
//! original's JSON file and the service manager.
//!
//! Role: the I/O edges. Each owns its sockets or files, its buffers and its loop, and
//! calls the pure code (`proto`, `policy`) for every decision; reports go to the writer,
//! reads come from `state`. None of them knows SQL; only [`http`] knows axum, hyper and
//! rustls, and only [`dns`] (with `proto::zone`) knows hickory (`tests/architecture.rs`
//! checks it). Only [`client`] builds without the `server` feature.

pub mod client;
#[cfg(feature = "server")]
pub mod dns;
#[cfg(feature = "server")]
pub mod export;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod net;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod systemd;
#[cfg(feature = "server")]
pub mod udp;
