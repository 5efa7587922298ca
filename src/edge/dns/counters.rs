//! The DNS face's counters, and their Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;

use crate::proto::prometheus::{self, MetricType};
use crate::proto::zone::Reply;

/// The response codes counted one by one; any other is counted as `other`.
const RCODES: [(ResponseCode, &str); 8] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::NotAuth, "NOTAUTH"),
    (ResponseCode::BADVERS, "BADVERS"),
];

/// Why an update, or a signed message, was refused: `dynip_dns_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// An UPDATE without a TSIG record (REFUSED).
    Unsigned,
    /// A key or algorithm not known (NOTAUTH, BADKEY).
    BadKey,
    /// A MAC that does not verify (NOTAUTH, BADSIG), or one cut too short (BADTRUNC).
    BadSig,
    /// Signed too long ago or ahead (NOTAUTH, BADTIME).
    BadTime,
    /// A message that does not parse, or a malformed UPDATE (FORMERR).
    Malformed,
    /// An UPDATE of another zone (NOTAUTH), a name outside it (NOTZONE), or a type dynip
    /// does not keep (REFUSED).
    NotOurs,
    /// A name the key may not change, or the apex (REFUSED).
    Scope,
    /// A prerequisite that does not hold (YXDOMAIN, NXDOMAIN, YXRRSET, NXRRSET).
    Prerequisite,
    /// More TXT records at a name than dynip keeps (REFUSED).
    TooManyTxt,
    /// The writer's queue was full, or its commit failed (SERVFAIL).
    NotCommitted,
    /// A transfer with a host's key (REFUSED): only the shared key transfers the zone.
    Transfer,
}

impl Rejected {
    const ALL: [Rejected; 11] = [
        Rejected::Unsigned,
        Rejected::BadKey,
        Rejected::BadSig,
        Rejected::BadTime,
        Rejected::Malformed,
        Rejected::NotOurs,
        Rejected::Scope,
        Rejected::Prerequisite,
        Rejected::TooManyTxt,
        Rejected::NotCommitted,
        Rejected::Transfer,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejected::Unsigned => "unsigned",
            Rejected::BadKey => "bad_key",
            Rejected::BadSig => "bad_signature",
            Rejected::BadTime => "bad_time",
            Rejected::Malformed => "malformed",
            Rejected::NotOurs => "not_this_zone",
            Rejected::Scope => "out_of_scope",
            Rejected::Prerequisite => "prerequisite",
            Rejected::TooManyTxt => "too_many_txt",
            Rejected::NotCommitted => "not_committed",
            Rejected::Transfer => "transfer",
        }
    }
}

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
    /// UPDATEs committed.
    pub(super) updates: AtomicU64,
    /// Updates and signed messages refused, by [`Rejected`] (in its `ALL` order).
    pub(super) refused: [AtomicU64; Rejected::ALL.len()],
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

    pub(super) fn reject(&self, why: Rejected) {
        let idx = Rejected::ALL
            .iter()
            .position(|&one| one == why)
            .unwrap_or(0);
        self.refused[idx].fetch_add(1, Ordering::Relaxed);
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
        let refused = "dynip_dns_refused_total";
        prometheus::family(
            out,
            refused,
            MetricType::Counter,
            "DNS updates and signed messages refused, by reason.",
        );
        for (why, counter) in Rejected::ALL.iter().zip(&self.refused) {
            prometheus::sample(out, refused, &[("reason", why.label())], load(counter));
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
            (
                "dynip_dns_updates_total",
                "DNS UPDATEs committed.",
                &self.updates,
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
        counters.reject(Rejected::BadKey);
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
dynip_dns_responses_total{rcode="NOTAUTH"} 0
dynip_dns_responses_total{rcode="BADVERS"} 0
dynip_dns_responses_total{rcode="other"} 5
# HELP dynip_dns_dropped_total DNS datagrams not answered, by reason.
# TYPE dynip_dns_dropped_total counter
dynip_dns_dropped_total{reason="malformed"} 7
dynip_dns_dropped_total{reason="rate_limit"} 8
# HELP dynip_dns_refused_total DNS updates and signed messages refused, by reason.
# TYPE dynip_dns_refused_total counter
dynip_dns_refused_total{reason="unsigned"} 0
dynip_dns_refused_total{reason="bad_key"} 1
dynip_dns_refused_total{reason="bad_signature"} 0
dynip_dns_refused_total{reason="bad_time"} 0
dynip_dns_refused_total{reason="malformed"} 0
dynip_dns_refused_total{reason="not_this_zone"} 0
dynip_dns_refused_total{reason="out_of_scope"} 0
dynip_dns_refused_total{reason="prerequisite"} 0
dynip_dns_refused_total{reason="too_many_txt"} 0
dynip_dns_refused_total{reason="not_committed"} 0
dynip_dns_refused_total{reason="transfer"} 0
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
# HELP dynip_dns_updates_total DNS UPDATEs committed.
# TYPE dynip_dns_updates_total counter
dynip_dns_updates_total 0
"#;
}
