//! The DNS face's counters, and their Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;

use crate::proto::prometheus::{self, MetricType};
use crate::proto::zone::Reply;

/// The response codes counted one by one; any other is counted as `other`.
const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];

pub(super) fn rcode_index(rcode: ResponseCode) -> usize {
    RCODES
        .iter()
        .position(|(code, _)| *code == rcode)
        .unwrap_or(RCODES.len())
}

/// What the DNS face has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses sent, by response code ([`RCODES`], then other).
    pub(super) responses: [AtomicU64; RCODES.len() + 1],
    /// Datagrams not answered because they were not queries (too short, a response, too
    /// long).
    pub(super) dropped_malformed: AtomicU64,
    /// Responses not sent because their source network was over `dns_rate_limit`.
    pub(super) dropped_rate_limited: AtomicU64,
    /// Responses sent with TC set (too large for UDP, or a rate-limited "slip").
    pub(super) truncated: AtomicU64,
    /// Zone transfers sent, and refused (source not in `dns_transfer_to`).
    pub(super) transfers: AtomicU64,
    pub(super) transfers_refused: AtomicU64,
    /// NOTIFY datagrams sent (retries included).
    pub(super) notifies_sent: AtomicU64,
}

/// One UDP thread's counts for one batch, added to [`Counters`] once per batch so that
/// the threads do not bounce the counters' cache line per query.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) responses: [u64; RCODES.len() + 1],
    pub(super) dropped_malformed: u64,
    pub(super) dropped_rate_limited: u64,
    pub(super) truncated: u64,
}

impl Counters {
    pub(super) fn add(&self, counts: &Counts) {
        for (total, &n) in self.responses.iter().zip(&counts.responses) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        for (total, n) in [
            (&self.dropped_malformed, counts.dropped_malformed),
            (&self.dropped_rate_limited, counts.dropped_rate_limited),
            (&self.truncated, counts.truncated),
        ] {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn count_reply(&self, reply: &Reply) {
        if let Reply::Answer { rcode, truncated } = reply {
            self.responses[rcode_index(*rcode)].fetch_add(1, Ordering::Relaxed);
            if *truncated {
                self.truncated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Responses sent with `rcode` (`"NOERROR"`, ...; `"other"`).
    pub fn responses(&self, rcode: &str) -> u64 {
        let idx = RCODES
            .iter()
            .position(|(_, name)| *name == rcode)
            .unwrap_or(RCODES.len());
        self.responses[idx].load(Ordering::Relaxed)
    }

    /// Appends the counters in Prometheus' text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let responses = "dynip_dns_responses_total";
        prometheus::family(
            out,
            responses,
            MetricType::Counter,
            "DNS responses sent, by response code.",
        );
        let names = RCODES.iter().map(|(_, name)| *name).chain(["other"]);
        for (name, counter) in names.zip(&self.responses) {
            prometheus::sample(out, responses, &[("rcode", name)], load(counter));
        }
        let dropped = "dynip_dns_dropped_total";
        prometheus::family(
            out,
            dropped,
            MetricType::Counter,
            "DNS datagrams not answered, by reason.",
        );
        for (reason, counter) in [
            ("malformed", &self.dropped_malformed),
            ("rate_limit", &self.dropped_rate_limited),
        ] {
            prometheus::sample(out, dropped, &[("reason", reason)], load(counter));
        }
        for (name, help, counter) in [
            (
                "dynip_dns_truncated_total",
                "DNS responses sent with TC set.",
                &self.truncated,
            ),
            (
                "dynip_dns_transfers_total",
                "Zone transfers sent.",
                &self.transfers,
            ),
            (
                "dynip_dns_transfers_refused_total",
                "Zone transfers refused (source not in dns_transfer_to).",
                &self.transfers_refused,
            ),
            (
                "dynip_dns_notifies_sent_total",
                "NOTIFY datagrams sent, retries included.",
                &self.notifies_sent,
            ),
        ] {
            prometheus::single(out, name, MetricType::Counter, help, load(counter));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let counters = Counters::default();
        let mut counts = Counts::default();
        counts.responses[rcode_index(ResponseCode::NoError)] = 12;
        counts.responses[rcode_index(ResponseCode::NXDomain)] = 2;
        counts.truncated = 1;
        counters.add(&counts);
        counters.notifies_sent.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        counters.render_prometheus(&mut out);
        for line in [
            "# TYPE dynip_dns_responses_total counter",
            "dynip_dns_responses_total{rcode=\"NOERROR\"} 12",
            "dynip_dns_responses_total{rcode=\"NXDOMAIN\"} 2",
            "dynip_dns_responses_total{rcode=\"REFUSED\"} 0",
            "dynip_dns_responses_total{rcode=\"other\"} 0",
            "dynip_dns_dropped_total{reason=\"rate_limit\"} 0",
            "dynip_dns_truncated_total 1",
            "dynip_dns_notifies_sent_total 3",
        ] {
            assert!(
                out.lines().any(|got| got == line),
                "{line:?} missing from:\n{out}"
            );
        }
        assert_eq!(counters.responses("NOERROR"), 12);
    }

    #[test]
    fn the_exposition_is_exactly_this() {
        let counters = Counters::default();
        let mut counts = Counts::default();
        counts.responses[rcode_index(ResponseCode::NoError)] = 12;
        counts.responses[rcode_index(ResponseCode::NXDomain)] = 2;
        counts.responses[rcode_index(ResponseCode::YXDomain)] = 5;
        counts.dropped_malformed = 7;
        counts.dropped_rate_limited = 8;
        counts.truncated = 1;
        counters.add(&counts);
        counters.transfers.fetch_add(2, Ordering::Relaxed);
        counters.transfers_refused.fetch_add(1, Ordering::Relaxed);
        counters.notifies_sent.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        counters.render_prometheus(&mut out);
        assert_eq!(out, EXPOSITION);
    }

    const EXPOSITION: &str = r#"# HELP dynip_dns_responses_total DNS responses sent, by response code.
# TYPE dynip_dns_responses_total counter
dynip_dns_responses_total{rcode="NOERROR"} 12
dynip_dns_responses_total{rcode="FORMERR"} 0
dynip_dns_responses_total{rcode="SERVFAIL"} 0
dynip_dns_responses_total{rcode="NXDOMAIN"} 2
dynip_dns_responses_total{rcode="NOTIMP"} 0
dynip_dns_responses_total{rcode="REFUSED"} 0
dynip_dns_responses_total{rcode="BADVERS"} 0
dynip_dns_responses_total{rcode="other"} 5
# HELP dynip_dns_dropped_total DNS datagrams not answered, by reason.
# TYPE dynip_dns_dropped_total counter
dynip_dns_dropped_total{reason="malformed"} 7
dynip_dns_dropped_total{reason="rate_limit"} 8
# HELP dynip_dns_truncated_total DNS responses sent with TC set.
# TYPE dynip_dns_truncated_total counter
dynip_dns_truncated_total 1
# HELP dynip_dns_transfers_total Zone transfers sent.
# TYPE dynip_dns_transfers_total counter
dynip_dns_transfers_total 2
# HELP dynip_dns_transfers_refused_total Zone transfers refused (source not in dns_transfer_to).
# TYPE dynip_dns_transfers_refused_total counter
dynip_dns_transfers_refused_total 1
# HELP dynip_dns_notifies_sent_total NOTIFY datagrams sent, retries included.
# TYPE dynip_dns_notifies_sent_total counter
dynip_dns_notifies_sent_total 3
"#;
}
