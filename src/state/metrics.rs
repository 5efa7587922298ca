//! Counters the edges and the writer keep, rendered in Prometheus's text format.
//!
//! Owns [`Metrics`]: lock-free counters and histograms, shared by `Arc` between the
//! edges (reports accepted and refused, by path and reason) and the writer (commit batch
//! sizes and latency). Other modules add their own families with
//! [`Metrics::add_family`]. The text is written by `proto::prometheus`; serving it is
//! `http`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::policy::{Dropped, Refusal};
use crate::proto::prometheus::{self, MetricType};
use crate::proto::wire::DecodeError;

/// The way a report came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Http,
}

impl Via {
    const ALL: [Via; 2] = [Via::Udp, Via::Http];

    fn label(self) -> &'static str {
        match self {
            Via::Udp => "udp",
            Via::Http => "http",
        }
    }
}

/// Why a report was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A datagram or request that is not a report (bad bytes, a bad name, a bad address).
    Malformed,
    /// The source is outside `allow_from`.
    NotAllowed,
    /// The source sent too much that did not authenticate.
    RateLimited,
    /// Unsigned, or without credentials, where a key is required.
    Unsigned,
    /// A key the server does not know.
    UnknownKey,
    /// A datagram whose tag does not verify, or a password that is no key.
    BadAuth,
    /// A per-host key used for another name.
    WrongHost,
    /// A signed report whose client clock is too far off.
    Skew,
    /// A signed report not later than the host's last.
    Replayed,
    /// Too many names in one dyndns2 request.
    TooManyHosts,
    /// The store could not commit it.
    CommitFailed,
    /// The server could not take it (shutting down).
    Unavailable,
}

impl Reason {
    const ALL: [Reason; 12] = [
        Reason::Malformed,
        Reason::NotAllowed,
        Reason::RateLimited,
        Reason::Unsigned,
        Reason::UnknownKey,
        Reason::BadAuth,
        Reason::WrongHost,
        Reason::Skew,
        Reason::Replayed,
        Reason::TooManyHosts,
        Reason::CommitFailed,
        Reason::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::NotAllowed => "not_allowed",
            Reason::RateLimited => "rate_limited",
            Reason::Unsigned => "unsigned",
            Reason::UnknownKey => "unknown_key",
            Reason::BadAuth => "bad_auth",
            Reason::WrongHost => "wrong_host",
            Reason::Skew => "skew",
            Reason::Replayed => "replayed",
            Reason::TooManyHosts => "too_many_hosts",
            Reason::CommitFailed => "commit_failed",
            Reason::Unavailable => "unavailable",
        }
    }

    /// Whether this reason can happen on `via` (only those are rendered, at zero too).
    fn applies_to(self, via: Via) -> bool {
        match self {
            Reason::UnknownKey | Reason::Skew | Reason::Replayed => via == Via::Udp,
            Reason::TooManyHosts | Reason::Unavailable => via == Via::Http,
            _ => true,
        }
    }
}

impl From<&Refusal> for Reason {
    fn from(refusal: &Refusal) -> Reason {
        match refusal {
            Refusal::NotAllowed => Reason::NotAllowed,
            Refusal::RateLimited => Reason::RateLimited,
            Refusal::Unsigned | Refusal::UnsignedForKeyedHost(_) => Reason::Unsigned,
            Refusal::UnknownKey(_) => Reason::UnknownKey,
            Refusal::WrongHost { .. } => Reason::WrongHost,
            Refusal::Skew { .. } => Reason::Skew,
        }
    }
}

impl From<&Dropped> for Reason {
    fn from(dropped: &Dropped) -> Reason {
        match dropped {
            Dropped::Refused(refusal) => Reason::from(refusal),
            Dropped::Undecodable(error) => Reason::from(error),
            Dropped::Ack => Reason::Malformed,
        }
    }
}

/// A datagram that does not decode is malformed, unless it decodes but does not
/// authenticate.
impl From<&DecodeError> for Reason {
    fn from(error: &DecodeError) -> Reason {
        match error {
            DecodeError::Unauthentic => Reason::BadAuth,
            _ => Reason::Malformed,
        }
    }
}

/// Upper bounds of the batch size buckets: powers of two up to the writer's largest batch.
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Upper bounds of the commit latency buckets, in seconds: one fsync is about 0.2 ms
/// here, a sweep's chunk a few milliseconds, a slow disk tens of them.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus histogram of fixed buckets, lock-free.
struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Per bucket (not cumulative), plus one for above the last bound.
    counts: [AtomicU64; N],
    above: AtomicU64,
    /// The sum of observations, in millionths of the unit (µs, or millionths of a report).
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [f64; N]) -> Histogram<N> {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            above: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        match self.bounds.iter().position(|bound| value <= *bound) {
            Some(idx) => self.counts[idx].fetch_add(1, Ordering::Relaxed),
            None => self.above.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)));
        let above = self.above.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        prometheus::histogram(out, name, help, buckets, above, sum);
    }
}

/// Renders more families into the exposition (another module's counters).
pub type Family = Box<dyn Fn(&mut String) + Send + Sync>;

/// The server's counters. One per server, shared by `Arc`.
pub struct Metrics {
    accepted: [AtomicU64; 2],
    refused: [[AtomicU64; Reason::ALL.len()]; 2],
    batch_size: Histogram<{ BATCH_BUCKETS.len() }>,
    commit_seconds: Histogram<{ LATENCY_BUCKETS.len() }>,
    journal_records: AtomicU64,
    unsettled_history: AtomicU64,
    pruned_history: AtomicU64,
    families: RwLock<Vec<Family>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            accepted: std::array::from_fn(|_| AtomicU64::new(0)),
            refused: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            commit_seconds: Histogram::new(&LATENCY_BUCKETS),
            journal_records: AtomicU64::new(0),
            unsettled_history: AtomicU64::new(0),
            pruned_history: AtomicU64::new(0),
            families: RwLock::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A report committed.
    pub fn accepted(&self, via: Via) {
        self.accepted[via as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The reports committed since the server started, by every path.
    pub fn n_accepted(&self) -> u64 {
        self.accepted
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// A report refused, and why.
    pub fn refused(&self, path: Via, reason: Reason) {
        let idx = Reason::ALL
            .iter()
            .position(|known| *known == reason)
            .unwrap_or(0);
        self.refused[path as usize][idx].fetch_add(1, Ordering::Relaxed);
    }

    /// One commit of `n_reports` reports that took `took`.
    pub fn committed(&self, n_reports: usize, took: Duration) {
        self.batch_size.observe(n_reports as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// What the compaction has still to fold: records in the journal, and the journal's
    /// address changes not yet settled into the history table. Both fall back after each
    /// sweep; a backlog that only grows means the compaction has stopped.
    pub fn backlog(&self, journal_records: u64, unsettled_history: u64) {
        self.journal_records
            .store(journal_records, Ordering::Relaxed);
        self.unsettled_history
            .store(unsettled_history, Ordering::Relaxed);
    }

    /// History rows deleted as older than `history_max_age`.
    pub fn pruned(&self, n_rows: u64) {
        self.pruned_history.fetch_add(n_rows, Ordering::Relaxed);
    }

    /// Adds a family rendered after the built-in ones, on every scrape: `render` appends
    /// complete `# HELP`/`# TYPE`/sample lines to the string it is given.
    pub fn add_family(&self, render: Family) {
        super::write(&self.families).push(render);
    }

    /// The exposition in Prometheus's text format (version 0.0.4), with `n_hosts` as the
    /// number of hosts known.
    pub fn render(&self, n_hosts: usize) -> String {
        let mut out = String::with_capacity(4096);
        let accepted = "dynip_reports_accepted_total";
        prometheus::family(
            &mut out,
            accepted,
            MetricType::Counter,
            "Reports accepted, by the way they came in: signed reports and dyndns2 updates once committed, the original's unanswered datagrams once admitted.",
        );
        for path in Via::ALL {
            let n = self.accepted[path as usize].load(Ordering::Relaxed);
            prometheus::sample(&mut out, accepted, &[("path", path.label())], n);
        }
        let refused = "dynip_reports_refused_total";
        prometheus::family(
            &mut out,
            refused,
            MetricType::Counter,
            "Reports refused, by the way they came in and why.",
        );
        for path in Via::ALL {
            for (idx, reason) in Reason::ALL.iter().enumerate() {
                if !reason.applies_to(path) {
                    continue;
                }
                let n = self.refused[path as usize][idx].load(Ordering::Relaxed);
                let labels = [("path", path.label()), ("reason", reason.label())];
                prometheus::sample(&mut out, refused, &labels, n);
            }
        }
        for (name, kind, help, value) in [
            (
                "dynip_hosts",
                MetricType::Gauge,
                "Hosts known.",
                n_hosts as u64,
            ),
            (
                "dynip_journal_records",
                MetricType::Gauge,
                "Records in the store's journal, not yet folded into the snapshot.",
                self.journal_records.load(Ordering::Relaxed),
            ),
            (
                "dynip_history_unsettled",
                MetricType::Gauge,
                "Address changes in the store's journal, not yet settled into the history.",
                self.unsettled_history.load(Ordering::Relaxed),
            ),
            (
                "dynip_history_pruned_total",
                MetricType::Counter,
                "Address changes deleted from the history as older than history_max_age.",
                self.pruned_history.load(Ordering::Relaxed),
            ),
        ] {
            prometheus::single(&mut out, name, kind, help, value);
        }
        self.batch_size.render(
            &mut out,
            "dynip_commit_batch_size",
            "Reports per store commit (group commit).",
        );
        self.commit_seconds.render(
            &mut out,
            "dynip_commit_duration_seconds",
            "Time to commit one batch to the store.",
        );
        for family in super::read(&self.families).iter() {
            family(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::key::KeyId;
    use crate::model::name::Name;

    #[test]
    fn renders_counters_and_histograms() {
        let metrics = Metrics::default();
        metrics.accepted(Via::Http);
        metrics.accepted(Via::Http);
        metrics.refused(Via::Udp, Reason::BadAuth);
        metrics.committed(3, Duration::from_micros(300));
        metrics.committed(5000, Duration::from_secs(2));
        metrics.pruned(256);
        metrics.pruned(3);
        metrics.add_family(Box::new(|out: &mut String| {
            out.push_str("# HELP x_total X.\n# TYPE x_total counter\nx_total 7\n");
        }));
        let text = metrics.render(42);
        for line in [
            "dynip_reports_accepted_total{path=\"http\"} 2",
            "dynip_reports_accepted_total{path=\"udp\"} 0",
            "dynip_reports_refused_total{path=\"udp\",reason=\"bad_auth\"} 1",
            "dynip_reports_refused_total{path=\"http\",reason=\"bad_auth\"} 0",
            "dynip_hosts 42",
            "dynip_history_pruned_total 259",
            "dynip_commit_batch_size_bucket{le=\"2\"} 0",
            "dynip_commit_batch_size_bucket{le=\"4\"} 1",
            "dynip_commit_batch_size_bucket{le=\"4096\"} 1",
            "dynip_commit_batch_size_bucket{le=\"+Inf\"} 2",
            "dynip_commit_batch_size_sum 5003",
            "dynip_commit_batch_size_count 2",
            "dynip_commit_duration_seconds_bucket{le=\"0.0005\"} 1",
            "dynip_commit_duration_seconds_sum 2.0003",
            "x_total 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("path=\"udp\",reason=\"too_many_hosts\""));
        assert!(!text.contains("path=\"http\",reason=\"replayed\""));
    }

    #[test]
    fn refusals_drops_and_decode_errors_map_to_their_reasons() {
        let name = Name::parse("pc").unwrap();
        let refusals = [
            (Refusal::NotAllowed, Reason::NotAllowed),
            (Refusal::RateLimited, Reason::RateLimited),
            (Refusal::Unsigned, Reason::Unsigned),
            (
                Refusal::UnsignedForKeyedHost(name.clone()),
                Reason::Unsigned,
            ),
            (Refusal::UnknownKey(KeyId([0; 8])), Reason::UnknownKey),
            (Refusal::WrongHost { name }, Reason::WrongHost),
            (Refusal::Skew { skew_secs: 400 }, Reason::Skew),
        ];
        for (refusal, reason) in refusals {
            assert_eq!(Reason::from(&refusal), reason, "{refusal}");
        }
        for (dropped, reason) in [
            (Dropped::Ack, Reason::Malformed),
            (
                Dropped::Refused(Refusal::Skew { skew_secs: 400 }),
                Reason::Skew,
            ),
            (
                Dropped::Undecodable(DecodeError::Unauthentic),
                Reason::BadAuth,
            ),
            (
                Dropped::Undecodable(DecodeError::TooLong(4000)),
                Reason::Malformed,
            ),
        ] {
            assert_eq!(Reason::from(&dropped), reason, "{dropped}");
        }
        for (error, reason) in [
            (DecodeError::Unauthentic, Reason::BadAuth),
            (DecodeError::Empty, Reason::Malformed),
            (DecodeError::BadBody, Reason::Malformed),
        ] {
            assert_eq!(Reason::from(&error), reason, "{error}");
        }
    }

    /// The whole exposition of known counts, byte for byte: scrapers and dashboards
    /// depend on every name, label and HELP text.
    #[test]
    fn the_exposition_is_exactly_this() {
        let metrics = Metrics::default();
        metrics.accepted(Via::Udp);
        metrics.accepted(Via::Http);
        metrics.accepted(Via::Http);
        metrics.refused(Via::Udp, Reason::BadAuth);
        metrics.refused(Via::Http, Reason::TooManyHosts);
        metrics.committed(3, Duration::from_micros(300));
        metrics.committed(5000, Duration::from_secs(2));
        metrics.backlog(17, 4);
        metrics.pruned(259);
        assert_eq!(metrics.render(42), EXPOSITION);
    }

    const EXPOSITION: &str = r#"# HELP dynip_reports_accepted_total Reports accepted, by the way they came in: signed reports and dyndns2 updates once committed, the original's unanswered datagrams once admitted.
# TYPE dynip_reports_accepted_total counter
dynip_reports_accepted_total{path="udp"} 1
dynip_reports_accepted_total{path="http"} 2
# HELP dynip_reports_refused_total Reports refused, by the way they came in and why.
# TYPE dynip_reports_refused_total counter
dynip_reports_refused_total{path="udp",reason="malformed"} 0
dynip_reports_refused_total{path="udp",reason="not_allowed"} 0
dynip_reports_refused_total{path="udp",reason="rate_limited"} 0
dynip_reports_refused_total{path="udp",reason="unsigned"} 0
dynip_reports_refused_total{path="udp",reason="unknown_key"} 0
dynip_reports_refused_total{path="udp",reason="bad_auth"} 1
dynip_reports_refused_total{path="udp",reason="wrong_host"} 0
dynip_reports_refused_total{path="udp",reason="skew"} 0
dynip_reports_refused_total{path="udp",reason="replayed"} 0
dynip_reports_refused_total{path="udp",reason="commit_failed"} 0
dynip_reports_refused_total{path="http",reason="malformed"} 0
dynip_reports_refused_total{path="http",reason="not_allowed"} 0
dynip_reports_refused_total{path="http",reason="rate_limited"} 0
dynip_reports_refused_total{path="http",reason="unsigned"} 0
dynip_reports_refused_total{path="http",reason="bad_auth"} 0
dynip_reports_refused_total{path="http",reason="wrong_host"} 0
dynip_reports_refused_total{path="http",reason="too_many_hosts"} 1
dynip_reports_refused_total{path="http",reason="commit_failed"} 0
dynip_reports_refused_total{path="http",reason="unavailable"} 0
# HELP dynip_hosts Hosts known.
# TYPE dynip_hosts gauge
dynip_hosts 42
# HELP dynip_journal_records Records in the store's journal, not yet folded into the snapshot.
# TYPE dynip_journal_records gauge
dynip_journal_records 17
# HELP dynip_history_unsettled Address changes in the store's journal, not yet settled into the history.
# TYPE dynip_history_unsettled gauge
dynip_history_unsettled 4
# HELP dynip_history_pruned_total Address changes deleted from the history as older than history_max_age.
# TYPE dynip_history_pruned_total counter
dynip_history_pruned_total 259
# HELP dynip_commit_batch_size Reports per store commit (group commit).
# TYPE dynip_commit_batch_size histogram
dynip_commit_batch_size_bucket{le="1"} 0
dynip_commit_batch_size_bucket{le="2"} 0
dynip_commit_batch_size_bucket{le="4"} 1
dynip_commit_batch_size_bucket{le="8"} 1
dynip_commit_batch_size_bucket{le="16"} 1
dynip_commit_batch_size_bucket{le="32"} 1
dynip_commit_batch_size_bucket{le="64"} 1
dynip_commit_batch_size_bucket{le="128"} 1
dynip_commit_batch_size_bucket{le="256"} 1
dynip_commit_batch_size_bucket{le="512"} 1
dynip_commit_batch_size_bucket{le="1024"} 1
dynip_commit_batch_size_bucket{le="2048"} 1
dynip_commit_batch_size_bucket{le="4096"} 1
dynip_commit_batch_size_bucket{le="+Inf"} 2
dynip_commit_batch_size_sum 5003
dynip_commit_batch_size_count 2
# HELP dynip_commit_duration_seconds Time to commit one batch to the store.
# TYPE dynip_commit_duration_seconds histogram
dynip_commit_duration_seconds_bucket{le="0.0001"} 0
dynip_commit_duration_seconds_bucket{le="0.00025"} 0
dynip_commit_duration_seconds_bucket{le="0.0005"} 1
dynip_commit_duration_seconds_bucket{le="0.001"} 1
dynip_commit_duration_seconds_bucket{le="0.0025"} 1
dynip_commit_duration_seconds_bucket{le="0.005"} 1
dynip_commit_duration_seconds_bucket{le="0.01"} 1
dynip_commit_duration_seconds_bucket{le="0.025"} 1
dynip_commit_duration_seconds_bucket{le="0.05"} 1
dynip_commit_duration_seconds_bucket{le="0.1"} 1
dynip_commit_duration_seconds_bucket{le="0.25"} 1
dynip_commit_duration_seconds_bucket{le="1"} 1
dynip_commit_duration_seconds_bucket{le="+Inf"} 2
dynip_commit_duration_seconds_sum 2.0003
dynip_commit_duration_seconds_count 2
"#;
}
