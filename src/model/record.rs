//! What dynip knows of one host, and how a report changes it.
//!
//! Owns [`Record`] (the latest IPv4 and IPv6 address of a host with their times),
//! [`Time`], the one rule for applying a report ([`Record::apply`]), and the two age
//! rules every reader applies: [`is_stale`] (`stale_after`) and [`within_max_age`]
//! (`history_max_age`). Pure: the caller passes the time in; no clock, no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// A moment, as microseconds since the Unix epoch in UTC: what the store keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i64);

/// The original's time format, naive local time: `2011-08-22 22:57:01.123456`.
const ORIGINAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

impl Time {
    pub fn from_micros(micros: i64) -> Time {
        Time(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// The current time; the only clock read in this module, for the edges to call.
    pub fn now() -> Time {
        Time(Utc::now().timestamp_micros())
    }

    fn utc(self) -> DateTime<Utc> {
        // Every i64 of microseconds fits chrono's range (±262,000 years).
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }

    /// RFC 3339 in UTC with seconds, as the APIs and tables show it.
    pub fn rfc3339(self) -> String {
        self.utc().to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The original's format: naive local time with microseconds.
    pub fn original(self) -> String {
        self.utc()
            .with_timezone(&Local)
            .format(ORIGINAL_FORMAT)
            .to_string()
    }

    /// Reads the original's format (naive local time, microseconds optional, as Python's
    /// `str(datetime)` leaves them out when zero). An ambiguous local time (the hour a
    /// clock goes back) takes the earlier instant.
    pub fn parse_original(text: &str) -> Option<Time> {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()?;
        let local = Local.from_local_datetime(&naive).earliest()?;
        Some(Time(local.with_timezone(&Utc).timestamp_micros()))
    }
}

/// One address family's latest address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<A> {
    pub addr: A,
    /// The last report from this address.
    pub last_seen: Time,
    /// When the host first reported this address (after another one, or ever).
    pub last_change: Time,
}

/// The current state of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub first_seen: Time,
    pub v4: Option<Seen<Ipv4Addr>>,
    pub v6: Option<Seen<Ipv6Addr>>,
    /// The client's time in the last signed report accepted for this host: a signed
    /// report must carry a later one (the replay rule). `None`: never a signed report.
    pub signed_at: Option<Time>,
    /// The host's last report said it is offline (dyndns2 `offline=YES`): it stops
    /// answering (in DNS) until it reports again. Any other report clears it.
    pub offline: bool,
}

/// What DNS shows of a record at one moment ([`Record::dns_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsView {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Offline (dyndns2 `offline=YES`): DNS shows no address at all.
    pub offline: bool,
}

/// What a report did to a record's address, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same address as before: only the last-seen time moved.
    Same,
    /// A new address for this family (or the family's first).
    NewAddress,
}

impl Record {
    /// A host's record made by its first report.
    pub fn new(addr: IpAddr, at: Time) -> Record {
        let mut record = Record {
            first_seen: at,
            v4: None,
            v6: None,
            signed_at: None,
            offline: false,
        };
        record.apply(addr, at);
        record
    }

    /// Applies one report from `addr` at `at`. An IPv4-mapped IPv6 address counts as IPv4.
    pub fn apply(&mut self, addr: IpAddr, at: Time) -> Change {
        self.offline = false;
        match addr.to_canonical() {
            IpAddr::V4(addr) => see(&mut self.v4, addr, at),
            IpAddr::V6(addr) => see(&mut self.v6, addr, at),
        }
    }

    /// What DNS shows of the record at `at`: its addresses (with `hide_after`, in µs,
    /// only those reported within that long before `at`), and whether it went offline.
    pub fn dns_view(&self, at: Time, hide_after: Option<i64>) -> DnsView {
        let fresh = |last_seen: Time| {
            hide_after
                .is_none_or(|after| at.as_micros().saturating_sub(last_seen.as_micros()) <= after)
        };
        DnsView {
            v4: self
                .v4
                .filter(|seen| fresh(seen.last_seen))
                .map(|seen| seen.addr),
            v6: self
                .v6
                .filter(|seen| fresh(seen.last_seen))
                .map(|seen| seen.addr),
            offline: self.offline,
        }
    }

    /// The address most recently reported, of either family: what the original's one
    /// address slot holds.
    pub fn latest(&self) -> Option<(IpAddr, Time)> {
        let v4 = self.v4.map(|seen| (IpAddr::V4(seen.addr), seen.last_seen));
        let v6 = self.v6.map(|seen| (IpAddr::V6(seen.addr), seen.last_seen));
        match (v4, v6) {
            (Some(v4), Some(v6)) => Some(if v6.1 > v4.1 { v6 } else { v4 }),
            (one, other) => one.or(other),
        }
    }

    /// Whether a signed report with the client's time `signed_at` passes the replay rule:
    /// its time must be later than that of every signed report accepted before.
    pub fn is_fresh(&self, signed_at: Time) -> bool {
        self.signed_at.is_none_or(|last| signed_at > last)
    }

    /// The last report of either family.
    pub fn last_seen(&self) -> Time {
        self.latest().map_or(self.first_seen, |(_, at)| at)
    }
}

fn see<A: PartialEq + Copy>(slot: &mut Option<Seen<A>>, addr: A, at: Time) -> Change {
    match slot {
        Some(seen) if seen.addr == addr => {
            seen.last_seen = at;
            Change::Same
        }
        _ => {
            *slot = Some(Seen {
                addr,
                last_seen: at,
                last_change: at,
            });
            Change::NewAddress
        }
    }
}

/// The first moment a host (or an address) last seen at `last_seen` is stale: more than
/// `after_micros` later. [`is_stale`] is `now` at or past it.
pub fn stale_from(last_seen: Time, after_micros: i64) -> Time {
    Time(last_seen.0.saturating_add(after_micros).saturating_add(1))
}

/// Whether a host whose last report was at `last_seen` is stale at `now`.
pub fn is_stale(last_seen: Time, now: Time, stale_after: Duration) -> bool {
    let age = now.as_micros().saturating_sub(last_seen.as_micros());
    age > i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX)
}

/// The changes of `changes` no older than `max_age` at `now` (`history_max_age`; `None`:
/// all of them).
pub fn within_max_age(
    mut changes: Vec<(Time, IpAddr)>,
    now: Time,
    max_age: Option<Duration>,
) -> Vec<(Time, IpAddr)> {
    if let Some(max_age) = max_age {
        let max_age = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
        let oldest = now.as_micros().saturating_sub(max_age);
        changes.retain(|(at, _)| at.as_micros() >= oldest);
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reports: &[(&str, i64)], expect_changes: &[Change], expect: Record) {
        let mut changes = Vec::new();
        let mut record: Option<Record> = None;
        for &(addr, at) in reports {
            let addr: IpAddr = addr.parse().unwrap();
            match &mut record {
                None => {
                    record = Some(Record::new(addr, Time(at)));
                    changes.push(Change::NewAddress);
                }
                Some(record) => changes.push(record.apply(addr, Time(at))),
            }
        }
        assert_eq!(changes, expect_changes);
        assert_eq!(record, Some(expect));
    }

    fn v4(addr: &str, last_seen: i64, last_change: i64) -> Option<Seen<Ipv4Addr>> {
        Some(Seen {
            addr: addr.parse().unwrap(),
            last_seen: Time(last_seen),
            last_change: Time(last_change),
        })
    }

    #[test]
    fn keeps_each_family_with_its_times() {
        use Change::*;
        check(
            &[
                ("203.0.113.7", 10),
                ("203.0.113.7", 20),
                ("198.51.100.1", 30),
            ],
            &[NewAddress, Same, NewAddress],
            Record {
                first_seen: Time(10),
                v4: v4("198.51.100.1", 30, 30),
                v6: None,
                signed_at: None,
                offline: false,
            },
        );
        check(
            &[
                ("203.0.113.7", 10),
                ("2001:db8::1", 20),
                ("203.0.113.7", 30),
            ],
            &[NewAddress, NewAddress, Same],
            Record {
                first_seen: Time(10),
                v4: v4("203.0.113.7", 30, 10),
                v6: Some(Seen {
                    addr: "2001:db8::1".parse().unwrap(),
                    last_seen: Time(20),
                    last_change: Time(20),
                }),
                signed_at: None,
                offline: false,
            },
        );
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        check(
            &[("::ffff:203.0.113.7", 10), ("203.0.113.7", 20)],
            &[Change::NewAddress, Change::Same],
            Record {
                first_seen: Time(10),
                v4: v4("203.0.113.7", 20, 10),
                v6: None,
                signed_at: None,
                offline: false,
            },
        );
    }

    #[test]
    fn dns_view_hides_only_what_is_older_than_hide_after() {
        let mut record = Record::new("192.0.2.1".parse().unwrap(), Time::from_micros(100));
        record.apply("2001:db8::1".parse().unwrap(), Time::from_micros(200));
        let v4 = Some("192.0.2.1".parse().unwrap());
        let v6 = Some("2001:db8::1".parse().unwrap());
        let view =
            |at: i64, hide_after: Option<i64>| record.dns_view(Time::from_micros(at), hide_after);
        let shown = |v4, v6| DnsView {
            v4,
            v6,
            offline: false,
        };
        assert_eq!(view(10_000, None), shown(v4, v6), "nothing hidden");
        assert_eq!(view(150, Some(50)), shown(v4, v6), "50 µs old: shown");
        assert_eq!(view(151, Some(50)), shown(None, v6), "51 µs old: hidden");
        assert_eq!(view(251, Some(50)), shown(None, None));
        let offline = Record {
            offline: true,
            ..record
        };
        assert_eq!(
            offline.dns_view(Time::from_micros(150), Some(50)),
            DnsView {
                v4,
                v6,
                offline: true
            }
        );
    }

    #[test]
    fn latest_is_the_most_recent_family() {
        let mut record = Record::new("203.0.113.7".parse().unwrap(), Time(10));
        record.apply("2001:db8::1".parse().unwrap(), Time(20));
        assert_eq!(
            record.latest(),
            Some(("2001:db8::1".parse().unwrap(), Time(20)))
        );
        record.apply("203.0.113.7".parse().unwrap(), Time(30));
        assert_eq!(
            record.latest(),
            Some(("203.0.113.7".parse().unwrap(), Time(30)))
        );
    }

    #[test]
    fn original_time_format_round_trips() {
        let at = Time(1_314_053_821_123_456);
        assert_eq!(Time::parse_original(&at.original()), Some(at));
        let whole_second = Time(1_314_053_821_000_000);
        let without_fraction = whole_second.original().replace(".000000", "");
        assert_eq!(Time::parse_original(&without_fraction), Some(whole_second));
        assert_eq!(Time::parse_original("yesterday"), None);
        assert_eq!(at.rfc3339(), "2011-08-22T22:57:01Z");
    }

    #[test]
    fn changes_older_than_the_max_age_are_not_shown() {
        let at = |secs: i64| Time::from_micros(secs * 1_000_000);
        let addr: IpAddr = "203.0.113.1".parse().unwrap();
        let changes = vec![(at(10), addr), (at(50), addr), (at(90), addr)];
        let kept = within_max_age(changes.clone(), at(100), Some(Duration::from_secs(50)));
        assert_eq!(kept, [(at(50), addr), (at(90), addr)]);
        assert_eq!(within_max_age(changes.clone(), at(100), None), changes);
    }

    #[test]
    fn hosts_go_stale_after_the_limit() {
        let hour = Duration::from_secs(3600);
        let at = Time::from_micros(0);
        assert!(!is_stale(at, Time::from_micros(3_600_000_000), hour));
        assert!(is_stale(at, Time::from_micros(3_600_000_001), hour));
    }
}
