//! What `/metrics` shows of each sink: events, deliveries, failures, and the outbox.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::record::Time;
use crate::proto::prometheus::{self, MetricType};

/// One sink's counters, kept by its thread.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events handed to the sink.
    pub events: AtomicU64,
    /// Messages the sink took (a coalesced one counts once).
    pub deliveries: AtomicU64,
    /// Tries that failed and will be tried again.
    pub retries: AtomicU64,
    /// Events refused for good.
    pub failed: AtomicU64,
    /// Events given up after `notify_max_age`.
    pub dropped: AtomicU64,
    /// Events in the sink's queue.
    pub pending: AtomicU64,
    /// The oldest pending event's time in microseconds; 0 with none.
    pub oldest_pending: AtomicI64,
}

impl SinkCounters {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Writes every sink's families at `now`.
pub fn render(sinks: &[(String, Arc<SinkCounters>)], now: Time, out: &mut String) {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    type Pick = fn(&SinkCounters) -> &AtomicU64;
    let families: [(&str, MetricType, &str, Pick); 6] = [
        (
            "dynip_notify_events_total",
            MetricType::Counter,
            "Events handed to a sink.",
            |c| &c.events,
        ),
        (
            "dynip_notify_deliveries_total",
            MetricType::Counter,
            "Messages a sink took (a coalesced message counts once).",
            |c| &c.deliveries,
        ),
        (
            "dynip_notify_retries_total",
            MetricType::Counter,
            "Deliveries that failed and are tried again (sink down, 5xx, 408, 429, timeouts).",
            |c| &c.retries,
        ),
        (
            "dynip_notify_failed_total",
            MetricType::Counter,
            "Events a sink refused for good (other 4xx, SMTP 5xx): not tried again.",
            |c| &c.failed,
        ),
        (
            "dynip_notify_dropped_total",
            MetricType::Counter,
            "Events given up undelivered after notify_max_age.",
            |c| &c.dropped,
        ),
        (
            "dynip_notify_outbox_events",
            MetricType::Gauge,
            "Events waiting to be delivered to a sink.",
            |c| &c.pending,
        ),
    ];
    for (name, kind, help, pick) in families {
        prometheus::family(out, name, kind, help);
        for (sink, counters) in sinks {
            prometheus::sample(out, name, &[("sink", sink)], load(pick(counters)));
        }
    }
    let oldest = "dynip_notify_outbox_oldest_seconds";
    prometheus::family(
        out,
        oldest,
        MetricType::Gauge,
        "Age of the oldest event waiting for a sink (0 with none).",
    );
    for (sink, counters) in sinks {
        let since = counters.oldest_pending.load(Ordering::Relaxed);
        let age = match since {
            0 => 0,
            since => (now.as_micros().saturating_sub(since) / 1_000_000).max(0) as u64,
        };
        prometheus::sample(out, oldest, &[("sink", sink)], age);
    }
}
