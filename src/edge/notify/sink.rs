//! A sink's thread: takes the events the writer hands it (and, at start, what the outbox
//! held), and delivers them through its [`Messenger`] as its [`SinkQueue`] schedules them:
//! per host in order, coalesced, retried with backoff, given up after `notify_max_age`.
//! What it finishes goes back to the writer through [`Settlements`].
//!
//! One thread per sink, so that a slow or dead sink delays only its own messages.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::counters::SinkCounters;
use super::send::{Attempt, Messenger};
use crate::config::SinkConfig;
use crate::model::event::{DeliveryState, Event, Settlement};
use crate::model::record::Time;
use crate::policy::outbox::SinkQueue;
use crate::proto::notify::DeliveryVerdict;
use crate::state::outbox::Settlements;

/// The longest a sink's thread sleeps with nothing due: it looks at its queue again.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// What a sink's thread starts with.
pub struct SinkStart {
    /// The sink's index in the config's order: what its settlements carry.
    pub index: usize,
    pub config: SinkConfig,
    pub messenger: Messenger,
    /// What the outbox held for it at start, oldest first.
    pub pending: Vec<(i64, Event)>,
    /// New events from the writer, after their commit.
    pub events: Receiver<(i64, Event)>,
    pub settlements: Arc<Settlements>,
    pub counters: Arc<SinkCounters>,
    pub max_age: Duration,
}

/// Starts a sink's thread. It ends when the writer is gone.
///
/// # Errors
/// When the OS cannot start a thread.
pub fn spawn(start: SinkStart) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("dynip-notify-{}", start.config.name))
        .spawn(move || run(start))
}

fn run(start: SinkStart) {
    let SinkStart {
        index,
        config,
        messenger,
        pending,
        events,
        settlements,
        counters,
        max_age,
    } = start;
    let name = config.name.as_str();
    let mut queue = SinkQueue::new(config.coalesce, max_age);
    if !pending.is_empty() {
        info!(
            sink = name,
            n_events = pending.len(),
            "delivering what the outbox held"
        );
    }
    for (id, event) in pending {
        queue.push(id, event);
    }
    let random = RandomState::new();
    let mut n_draws = 0u64;
    let mut jitter = || {
        n_draws += 1;
        (random.hash_one(n_draws) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut open = true;
    loop {
        // Everything the writer has handed over so far.
        loop {
            match events.try_recv() {
                Ok((id, event)) => {
                    SinkCounters::add(&counters.events, 1);
                    queue.push(id, event);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !open {
            // The writer is gone: the server is stopping, and what is pending stays in
            // the outbox for the next start.
            break;
        }
        while let Some(batch) = queue.take(Time::now()) {
            let now = Time::now();
            if !batch.expired.is_empty() {
                error!(
                    sink = name,
                    host = %batch.host,
                    n_events = batch.expired.len(),
                    max_age = %humantime::format_duration(max_age),
                    "dropping events not delivered within notify_max_age"
                );
                SinkCounters::add(&counters.dropped, batch.expired.len());
                settlements.push([Settlement {
                    sink: index,
                    ids: batch.expired.clone(),
                    state: DeliveryState::Dropped,
                    attempts: batch.attempt.saturating_sub(1),
                    at: now,
                    detail: "not delivered within notify_max_age".to_string(),
                }]);
            }
            let Some(delivery) = batch.delivery.as_ref() else {
                queue.settle(batch, DeliveryVerdict::Delivered, now, 0.0);
                continue;
            };
            let Attempt { verdict, detail } = messenger.send(delivery);
            let now = Time::now();
            let attempt = batch.attempt;
            let host = batch.host.clone();
            let ids = batch.ids.clone();
            let state = match verdict {
                DeliveryVerdict::Delivered => {
                    debug!(sink = name, host = %host, id = delivery.id, count = delivery.count, "delivered");
                    SinkCounters::add(&counters.deliveries, 1);
                    DeliveryState::Delivered
                }
                DeliveryVerdict::Retry { .. } => {
                    warn!(sink = name, host = %host, id = delivery.id, attempt, detail = %detail, "delivery failed; trying again later");
                    SinkCounters::add(&counters.retries, 1);
                    DeliveryState::Pending
                }
                DeliveryVerdict::Permanent => {
                    error!(sink = name, host = %host, id = delivery.id, detail = %detail, "delivery refused for good; not trying again");
                    SinkCounters::add(&counters.failed, ids.len());
                    DeliveryState::Failed
                }
            };
            queue.settle(batch, verdict, now, jitter());
            settlements.push([Settlement {
                sink: index,
                ids,
                state,
                attempts: attempt,
                at: now,
                detail,
            }]);
        }
        counters
            .pending
            .store(queue.len() as u64, Ordering::Relaxed);
        counters
            .oldest_pending
            .store(queue.oldest().map_or(0, Time::as_micros), Ordering::Relaxed);
        let wait = match queue.next_due() {
            Some(due) => {
                let micros = due.as_micros().saturating_sub(Time::now().as_micros());
                Duration::from_micros(micros.max(0) as u64).min(IDLE_WAIT)
            }
            None => IDLE_WAIT,
        };
        match events.recv_timeout(wait) {
            Ok((id, event)) => {
                SinkCounters::add(&counters.events, 1);
                queue.push(id, event);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
    }
    debug!(sink = name, "sink stops");
}
