//! What dynip tells its owner: the moments in a host's life a notification is about.
//!
//! Owns [`EventKind`] (the six kinds, with the words the config file and the JSON body
//! use), [`Event`] (a kind, the host, when, and its addresses before and after), and the
//! rules that find a report's events ([`events_of_report`]) and a host's going stale
//! ([`stale_since`]). Pure: records and times in, events out. Numbering events, keeping
//! them until delivered, and delivering them are the store's and the edges'.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::model::name::Name;
use crate::model::record::{is_stale, stale_from, Record, Time};

/// What happened to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A new address of either family (the other family's is unchanged).
    Changed,
    /// The host's first report.
    New,
    /// No report for `stale_after`.
    Stale,
    /// A report from a host that was stale.
    Back,
    /// The host's report said it is going offline (dyndns2 `offline=YES`).
    Offline,
    /// A report from a host that was offline.
    Online,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 6] = [
        EventKind::Changed,
        EventKind::New,
        EventKind::Stale,
        EventKind::Back,
        EventKind::Offline,
        EventKind::Online,
    ];

    /// The kind's word in the config file (`events = ...`) and in notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Changed => "changed",
            EventKind::New => "new",
            EventKind::Stale => "stale",
            EventKind::Back => "back",
            EventKind::Offline => "offline",
            EventKind::Online => "online",
        }
    }

    /// The kind a word names, in any case.
    pub fn parse(word: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(word))
    }
}

/// Where one event stands with one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not delivered yet: in the outbox.
    Pending,
    /// The sink took it (a 2xx, a command's exit 0, an accepted e-mail).
    Delivered,
    /// The sink refused it for good (a 4xx, an SMTP 5xx): not tried again.
    Failed,
    /// Not delivered within `notify_max_age`: given up.
    Dropped,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::Dropped,
    ];

    /// The state's word in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Dropped => "dropped",
        }
    }

    pub fn parse(word: &str) -> Option<DeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == word)
    }
}

/// What became of a message's events with a sink: what the sink's thread tells the
/// writer, which writes it down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The sink, by its index in the config's order.
    pub sink: usize,
    /// The events (one message's: they share the outcome).
    pub ids: Vec<i64>,
    pub state: DeliveryState,
    /// Tries it took.
    pub attempts: u32,
    pub at: Time,
    /// The last try's outcome, for the operator ("HTTP 503", "exit status 2").
    pub detail: String,
}

/// A recorded event with its deliveries, for the API, the status page and `dynip events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: i64,
    pub event: Event,
    pub deliveries: Vec<DeliveryRecord>,
}

/// One sink's delivery of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub sink: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub settled_at: Option<Time>,
    pub detail: Option<String>,
}

/// One family's address before and after the event (`None`: the host had none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses<A> {
    pub old: Option<A>,
    pub new: Option<A>,
}

/// One event of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub host: Name,
    /// When it happened: the report's time, or the moment the host went stale.
    pub at: Time,
    pub ipv4: Addresses<Ipv4Addr>,
    pub ipv6: Addresses<Ipv6Addr>,
}

impl Event {
    fn between(
        kind: EventKind,
        host: &Name,
        at: Time,
        before: Option<&Record>,
        after: &Record,
    ) -> Event {
        Event {
            kind,
            host: host.clone(),
            at,
            ipv4: Addresses {
                old: before.and_then(|record| record.v4).map(|seen| seen.addr),
                new: after.v4.map(|seen| seen.addr),
            },
            ipv6: Addresses {
                old: before.and_then(|record| record.v6).map(|seen| seen.addr),
                new: after.v6.map(|seen| seen.addr),
            },
        }
    }
}

/// The events a report at `at` makes, which turned `host`'s record from `before` (`None`:
/// its first report) into `after`, appended to `out` in the order they happened: the
/// host coming back (from stale, then from offline), then its new address, or its going
/// offline. A report that changes nothing a notification is about appends nothing, and
/// allocates nothing.
pub fn events_of_report(
    host: &Name,
    before: Option<&Record>,
    after: &Record,
    at: Time,
    stale_after: Duration,
    out: &mut Vec<Event>,
) {
    let Some(before_record) = before else {
        out.push(Event::between(EventKind::New, host, at, None, after));
        return;
    };
    let mut push = |kind| out.push(Event::between(kind, host, at, before, after));
    if is_stale(before_record.last_seen(), at, stale_after) {
        push(EventKind::Back);
    }
    if before_record.offline && !after.offline {
        push(EventKind::Online);
    }
    let v4_changed = after.v4.map(|seen| seen.addr) != before_record.v4.map(|seen| seen.addr);
    let v6_changed = after.v6.map(|seen| seen.addr) != before_record.v6.map(|seen| seen.addr);
    if v4_changed || v6_changed {
        push(EventKind::Changed);
    }
    if !before_record.offline && after.offline {
        push(EventKind::Offline);
    }
}

/// When `record`'s host went stale, if it had by `now`: the first moment it was more than
/// `stale_after` without a report. A host that is offline does not go stale: it said it
/// would stop reporting.
pub fn stale_since(record: &Record, now: Time, stale_after: Duration) -> Option<Time> {
    if record.offline || !is_stale(record.last_seen(), now, stale_after) {
        return None;
    }
    let after = i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX);
    Some(stale_from(record.last_seen(), after))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const STALE_AFTER: Duration = Duration::from_secs(3600);

    fn at(seconds: i64) -> Time {
        Time::from_micros(seconds * 1_000_000)
    }

    fn reported(addrs: &[(&str, i64)]) -> Record {
        let (first, rest) = addrs.split_first().expect("at least one report");
        let mut record = Record::new(first.0.parse().unwrap(), at(first.1));
        for (addr, seconds) in rest {
            record.apply(addr.parse::<IpAddr>().unwrap(), at(*seconds));
        }
        record
    }

    /// The kinds of the events a report makes, with both families' (old, new) addresses
    /// of the first event.
    fn check(before: Option<&Record>, after: &Record, now: i64, expect: &[EventKind]) {
        let host = Name::parse("pc").unwrap();
        let mut out = Vec::new();
        events_of_report(&host, before, after, at(now), STALE_AFTER, &mut out);
        let kinds: Vec<EventKind> = out.iter().map(|event| event.kind).collect();
        assert_eq!(kinds, expect, "before {before:?}, after {after:?}");
        for event in &out {
            assert_eq!(event.host, host);
            assert_eq!(event.at, at(now));
            assert_eq!(event.ipv4.new, after.v4.map(|seen| seen.addr));
            assert_eq!(
                event.ipv4.old,
                before.and_then(|r| r.v4).map(|seen| seen.addr)
            );
            assert_eq!(
                event.ipv6.old,
                before.and_then(|r| r.v6).map(|seen| seen.addr)
            );
        }
    }

    #[test]
    fn a_report_makes_the_events_of_what_it_changed() {
        use EventKind::*;
        let first = reported(&[("192.0.2.1", 10)]);
        check(None, &first, 10, &[New]);
        let same = reported(&[("192.0.2.1", 10), ("192.0.2.1", 20)]);
        check(Some(&first), &same, 20, &[]);
        let moved = reported(&[("192.0.2.1", 10), ("192.0.2.2", 20)]);
        check(Some(&first), &moved, 20, &[Changed]);
        let dual = reported(&[("192.0.2.1", 10), ("2001:db8::1", 20)]);
        check(Some(&first), &dual, 20, &[Changed]);
        let later = 10 + STALE_AFTER.as_secs() as i64 + 1;
        let back = reported(&[("192.0.2.1", 10), ("192.0.2.1", later)]);
        check(Some(&first), &back, later, &[Back]);
        let back_moved = reported(&[("192.0.2.1", 10), ("192.0.2.9", later)]);
        check(Some(&first), &back_moved, later, &[Back, Changed]);
        let just_in_time = later - 1;
        let fresh = reported(&[("192.0.2.1", 10), ("192.0.2.1", just_in_time)]);
        check(Some(&first), &fresh, just_in_time, &[]);
    }

    #[test]
    fn offline_and_online_are_events_in_their_order() {
        use EventKind::*;
        let online = reported(&[("192.0.2.1", 10)]);
        let offline = Record {
            offline: true,
            ..reported(&[("192.0.2.1", 10), ("192.0.2.1", 20)])
        };
        check(Some(&online), &offline, 20, &[Offline]);
        let moved_offline = Record {
            offline: true,
            ..reported(&[("192.0.2.1", 10), ("192.0.2.5", 20)])
        };
        check(Some(&online), &moved_offline, 20, &[Changed, Offline]);
        let again = reported(&[("192.0.2.1", 10), ("192.0.2.1", 30)]);
        check(Some(&offline), &again, 30, &[Online]);
        let elsewhere = reported(&[("192.0.2.1", 10), ("192.0.2.7", 30)]);
        check(Some(&offline), &elsewhere, 30, &[Online, Changed]);
    }

    #[test]
    fn a_host_goes_stale_the_first_microsecond_past_stale_after() {
        let record = reported(&[("192.0.2.1", 10)]);
        let limit = 10 + STALE_AFTER.as_secs() as i64;
        assert_eq!(stale_since(&record, at(limit), STALE_AFTER), None);
        let went = Some(Time::from_micros(at(limit).as_micros() + 1));
        assert_eq!(stale_since(&record, at(limit + 1), STALE_AFTER), went);
        assert_eq!(stale_since(&record, at(limit + 999), STALE_AFTER), went);
        let offline = Record {
            offline: true,
            ..record
        };
        assert_eq!(stale_since(&offline, at(limit + 999), STALE_AFTER), None);
    }

    #[test]
    fn kinds_read_their_words_in_any_case() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(EventKind::parse(&kind.as_str().to_uppercase()), Some(kind));
        }
        assert_eq!(EventKind::parse("moved"), None);
    }
}
