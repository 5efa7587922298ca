//! Where notifications leave: one thread per sink ([`sink`]) delivering through its
//! [`send::Messenger`] (a webhook, a command, an e-mail), and the sinks' counters for
//! `/metrics` ([`counters`]).
//!
//! The writer hands each sink the events it wants after their commit; the outbox in the
//! store keeps them until the sink's thread settles them, so a crash or a restart
//! delivers what was pending (at least once: receivers de-duplicate by the event id).
//! Only this folder knows ureq and lettre.

pub mod counters;
pub mod send;
pub mod sink;
