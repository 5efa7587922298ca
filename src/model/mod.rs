//! The values everything else speaks of: host names, keys and a host's record.
//!
//! Role: pure values. Nothing here touches a socket, a file, the clock, a thread, tokio
//! or the log (`tests/architecture.rs` checks it); the two exceptions are named where
//! they are: [`record::Time::now`], the one clock read, for the edges to call, and
//! [`key::Key::generate`] with [`key::random_nonce`], the one read of the OS's random
//! generator. Builds on every platform: the client speaks these too.

pub mod account;
pub mod event;
pub mod key;
pub mod name;
pub mod record;
pub mod txt;
