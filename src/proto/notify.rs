//! Notifications as they go on the wire: the webhook bodies, their signature, what a
//! receiver's answer means, and when to try again.
//!
//! Owns [`Delivery`] (one event, or a host's coalesced events, with the id receivers
//! de-duplicate by), the generic JSON body ([`generic_body`], version [`BODY_VERSION`])
//! and the presets' shapes ([`request`]: ntfy, Gotify, Slack-compatible), a command's
//! environment ([`command_env`]) and an e-mail's text ([`email`]), the
//! `X-Dynip-Signature` ([`signature`]), the retry rules ([`verdict`], [`backoff`]), and
//! which events a sink hears and when ([`SinkFilter`], [`due_at`]).
//! Pure: events and the time in, bytes and decisions out; sending is the notify edge's.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::model::event::{Addresses, Event, EventKind};
use crate::model::record::Time;

/// The generic body's version: a field removed or changed in meaning makes a new one;
/// fields may be added within a version.
pub const BODY_VERSION: u32 = 1;

/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Dynip-Signature";

/// What one message to a sink says: an event, or the latest of a host's events coalesced
/// over the sink's `coalesce` interval, with how many there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The id of the (latest) event: receivers de-duplicate by it, since a delivery may
    /// arrive more than once.
    pub id: i64,
    /// The latest event, with its addresses before the first of them.
    pub event: Event,
    /// How many events it stands for (1: not coalesced).
    pub count: u32,
}

impl Delivery {
    /// `events` of one host, oldest first, as one delivery: the latest event's kind, time
    /// and new addresses, the first one's old addresses, and the count. `None` for none.
    pub fn coalesced(events: &[(i64, Event)]) -> Option<Delivery> {
        let (first, last) = (events.first()?, events.last()?);
        let mut event = last.1.clone();
        event.ipv4.old = first.1.ipv4.old;
        event.ipv6.old = first.1.ipv6.old;
        Some(Delivery {
            id: last.0,
            event,
            count: u32::try_from(events.len()).unwrap_or(u32::MAX),
        })
    }
}

/// Which shape a webhook's request takes (`preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The generic JSON body.
    Generic,
    /// ntfy: the message as text, its title in a header, to the topic's URL.
    Ntfy,
    /// Gotify: `{"title", "message", "priority"}`, to `/message?token=...`.
    Gotify,
    /// Slack's incoming webhooks, and what copies them (Mattermost, Discord's `/slack`):
    /// `{"text"}`.
    Slack,
}

impl Preset {
    /// The preset a config word names.
    pub fn parse(word: &str) -> Option<Preset> {
        match word.to_ascii_lowercase().as_str() {
            "generic" => Some(Preset::Generic),
            "ntfy" => Some(Preset::Ntfy),
            "gotify" => Some(Preset::Gotify),
            "slack" => Some(Preset::Slack),
            _ => None,
        }
    }
}

/// A webhook request's content: what the edge POSTs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub content_type: &'static str,
    /// Headers beside the content type and the signature.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// One family's addresses before and after, as JSON: `{"old", "new"}`, each an address
/// or null.
#[derive(Debug, Serialize)]
pub struct FamilyJson<A> {
    pub old: Option<A>,
    pub new: Option<A>,
}

impl<A: Copy> From<Addresses<A>> for FamilyJson<A> {
    fn from(addresses: Addresses<A>) -> FamilyJson<A> {
        FamilyJson {
            old: addresses.old,
            new: addresses.new,
        }
    }
}

#[derive(Serialize)]
struct GenericBody<'a> {
    version: u32,
    id: i64,
    event: &'static str,
    host: &'a str,
    time: String,
    ipv4: FamilyJson<Ipv4Addr>,
    ipv6: FamilyJson<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
}

/// The generic body: `{"version", "id", "event", "host", "time", "ipv4": {"old", "new"},
/// "ipv6": {"old", "new"}}`, addresses or null, time in RFC 3339, and `"count"` when the
/// delivery stands for more than one event.
pub fn generic_body(delivery: &Delivery) -> String {
    let event = &delivery.event;
    let body = GenericBody {
        version: BODY_VERSION,
        id: delivery.id,
        event: event.kind.as_str(),
        host: event.host.as_str(),
        time: event.at.rfc3339(),
        ipv4: event.ipv4.into(),
        ipv6: event.ipv6.into(),
        count: (delivery.count > 1).then_some(delivery.count),
    };
    // Strings, numbers and addresses only: serializing cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A one-line title and a short text, for the presets that show a message to a person.
pub fn message(delivery: &Delivery) -> (String, String) {
    let event = &delivery.event;
    let host = event.host.as_str();
    let title = match event.kind {
        EventKind::Changed => format!("{host}: new address"),
        EventKind::New => format!("{host}: new host"),
        EventKind::Stale => format!("{host}: no report"),
        EventKind::Back => format!("{host}: reporting again"),
        EventKind::Offline => format!("{host}: offline"),
        EventKind::Online => format!("{host}: online"),
    };
    let mut text = String::new();
    let family = |text: &mut String, name: &str, old: Option<String>, new: Option<String>| match (
        old, new,
    ) {
        (Some(old), Some(new)) if old != new => {
            let _ = write!(text, "{name} {old} -> {new}. ");
        }
        (None, Some(new)) => {
            let _ = write!(text, "{name} {new}. ");
        }
        (Some(old), None) => {
            let _ = write!(text, "{name} was {old}. ");
        }
        (Some(same), Some(_)) => {
            let _ = write!(text, "{name} {same}. ");
        }
        (None, None) => {}
    };
    let string = |addr: Option<std::net::IpAddr>| addr.map(|addr| addr.to_string());
    family(
        &mut text,
        "IPv4",
        string(event.ipv4.old.map(Into::into)),
        string(event.ipv4.new.map(Into::into)),
    );
    family(
        &mut text,
        "IPv6",
        string(event.ipv6.old.map(Into::into)),
        string(event.ipv6.new.map(Into::into)),
    );
    let _ = write!(text, "At {}", event.at.rfc3339());
    if delivery.count > 1 {
        let _ = write!(text, " ({} events)", delivery.count);
    }
    text.push('.');
    (title, text)
}

/// The request a webhook with `preset` sends for `delivery`.
pub fn request(preset: Preset, delivery: &Delivery) -> Request {
    let id = ("X-Dynip-Event-Id", delivery.id.to_string());
    match preset {
        Preset::Generic => Request {
            content_type: "application/json",
            headers: vec![id],
            body: generic_body(delivery),
        },
        Preset::Ntfy => {
            let (title, text) = message(delivery);
            Request {
                content_type: "text/plain; charset=utf-8",
                headers: vec![id, ("Title", title), ("Tags", "dynip".to_string())],
                body: text,
            }
        }
        Preset::Gotify => {
            let (title, text) = message(delivery);
            let body = serde_json::json!({"title": title, "message": text, "priority": 5});
            Request {
                content_type: "application/json",
                headers: vec![id],
                body: body.to_string(),
            }
        }
        Preset::Slack => {
            let (title, text) = message(delivery);
            let body = serde_json::json!({"text": format!("*{title}* {text}")});
            Request {
                content_type: "application/json",
                headers: vec![id],
                body: body.to_string(),
            }
        }
    }
}

/// The environment a command sink's program runs with (inadyn's hook style): the event,
/// its id, the host, the time, the new and the old address of each family (empty when the
/// host has none), and the count.
pub fn command_env(delivery: &Delivery) -> Vec<(&'static str, String)> {
    let event = &delivery.event;
    let text =
        |addr: Option<std::net::IpAddr>| addr.map(|addr| addr.to_string()).unwrap_or_default();
    vec![
        ("DYNIP_EVENT", event.kind.as_str().to_string()),
        ("DYNIP_EVENT_ID", delivery.id.to_string()),
        ("DYNIP_HOST", event.host.as_str().to_string()),
        ("DYNIP_TIME", event.at.rfc3339()),
        ("DYNIP_IPV4", text(event.ipv4.new.map(Into::into))),
        ("DYNIP_IPV6", text(event.ipv6.new.map(Into::into))),
        ("DYNIP_OLD_IPV4", text(event.ipv4.old.map(Into::into))),
        ("DYNIP_OLD_IPV6", text(event.ipv6.old.map(Into::into))),
        ("DYNIP_COUNT", delivery.count.to_string()),
    ]
}

/// An e-mail's subject and plain-text body: the message a person reads, then the generic
/// body for whatever filters mail by content.
pub fn email(delivery: &Delivery) -> (String, String) {
    let (title, text) = message(delivery);
    let body = format!(
        "{text}\n\nEvent {} from dynip.\n{}\n",
        delivery.id,
        generic_body(delivery)
    );
    (format!("[dynip] {title}"), body)
}

/// The `X-Dynip-Signature` of `body` under `secret`: `sha256=` and the lowercase hex of
/// HMAC-SHA256(secret, body), as GitHub signs its webhooks.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// What a receiver's answer means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    Delivered,
    /// Try again: after the receiver's `Retry-After` when it gave one, else by backoff.
    Retry {
        after: Option<Duration>,
    },
    /// Never try again: the receiver refused it for good (a 4xx but 408 and 429).
    Permanent,
}

/// The verdict on an HTTP answer with `status` and, when it had one, a `Retry-After`
/// header (seconds; the HTTP-date form is read as no hint).
pub fn verdict(status: u16, retry_after: Option<&str>) -> DeliveryVerdict {
    let after = retry_after
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status {
        200..=299 => DeliveryVerdict::Delivered,
        408 | 429 => DeliveryVerdict::Retry { after },
        400..=499 => DeliveryVerdict::Permanent,
        _ => DeliveryVerdict::Retry { after },
    }
}

/// The first retry comes after this long; each next one after twice as long.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// No retry waits longer: a sink that comes back is heard from within this long.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// How long to wait before try `attempt + 1` after `attempt` failed ones (1: the first
/// delivery failed), without a hint from the receiver: [`FIRST_RETRY`] doubled per
/// failure, up to [`MAX_RETRY`]. `jitter` in `[0, 1)` (the caller's randomness) takes off
/// up to a quarter, so sinks that failed together do not retry together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let wait = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    wait.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// A glob over host names (`hosts = ...`): `*` any run of characters, `?` any one,
/// anything else itself, compared case-insensitively as names are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob(String);

impl HostGlob {
    pub fn new(pattern: &str) -> HostGlob {
        HostGlob(pattern.to_ascii_lowercase())
    }

    pub fn matches(&self, name: &str) -> bool {
        let (pattern, name) = (self.0.as_bytes(), name.as_bytes());
        // Iterative matching with one backtrack point: linear for patterns with one `*`,
        // and never exponential.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(&c) if c == b'?' || c == name[n].to_ascii_lowercase() => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((star_p, star_n)) => {
                        p = star_p + 1;
                        n = star_n + 1;
                        star = Some((star_p, star_n + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

/// Which events a sink wants (`events = ...`, `hosts = ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFilter {
    pub events: Vec<EventKind>,
    pub hosts: Vec<HostGlob>,
}

impl SinkFilter {
    /// Every event of every host (the defaults).
    pub fn all() -> SinkFilter {
        SinkFilter {
            events: EventKind::ALL.to_vec(),
            hosts: vec![HostGlob::new("*")],
        }
    }

    pub fn wants(&self, event: &Event) -> bool {
        self.events.contains(&event.kind)
            && self
                .hosts
                .iter()
                .any(|glob| glob.matches(event.host.as_str()))
    }
}

/// When a host's pending events are due to go to a sink, with `coalesce`: the first at
/// once, and after a delivery, what comes within `coalesce` of it waits for the end of
/// that interval and goes as one message. A host that flaps every second for a minute
/// under `coalesce = 1m` makes two messages, not sixty; `coalesce = 0` sends each event
/// when it happens.
pub fn due_at(oldest_pending: Time, last_sent: Option<Time>, coalesce: Duration) -> Time {
    let interval = i64::try_from(coalesce.as_micros()).unwrap_or(i64::MAX);
    match last_sent {
        Some(sent) if interval > 0 => {
            let window_end = sent.as_micros().saturating_add(interval);
            Time::from_micros(window_end.max(oldest_pending.as_micros()))
        }
        _ => oldest_pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::name::Name;

    fn event(kind: EventKind, old: Option<&str>, new: Option<&str>, seconds: i64) -> Event {
        Event {
            kind,
            host: Name::parse("kitchen-pc").unwrap(),
            at: Time::from_micros(seconds * 1_000_000),
            ipv4: Addresses {
                old: old.map(|addr| addr.parse().unwrap()),
                new: new.map(|addr| addr.parse().unwrap()),
            },
            ipv6: Addresses {
                old: None,
                new: None,
            },
        }
    }

    fn delivery(event: Event) -> Delivery {
        Delivery {
            id: 7,
            event,
            count: 1,
        }
    }

    #[test]
    fn the_generic_body_is_the_documented_json() {
        let changed = event(EventKind::Changed, Some("192.0.2.1"), Some("192.0.2.2"), 0);
        assert_eq!(
            generic_body(&delivery(changed.clone())),
            r#"{"version":1,"id":7,"event":"changed","host":"kitchen-pc","time":"1970-01-01T00:00:00Z","ipv4":{"old":"192.0.2.1","new":"192.0.2.2"},"ipv6":{"old":null,"new":null}}"#
        );
        let coalesced = Delivery {
            count: 3,
            ..delivery(changed)
        };
        assert!(generic_body(&coalesced).ends_with(r#","count":3}"#));
    }

    #[test]
    fn coalesced_events_keep_the_first_old_and_the_last_new_address() {
        let events = [
            (
                3,
                event(EventKind::Changed, Some("192.0.2.1"), Some("192.0.2.2"), 1),
            ),
            (
                5,
                event(EventKind::Changed, Some("192.0.2.2"), Some("192.0.2.3"), 2),
            ),
            (
                9,
                event(EventKind::Offline, Some("192.0.2.3"), Some("192.0.2.3"), 3),
            ),
        ];
        let coalesced = Delivery::coalesced(&events).unwrap();
        assert_eq!(coalesced.id, 9);
        assert_eq!(coalesced.count, 3);
        assert_eq!(coalesced.event.kind, EventKind::Offline);
        assert_eq!(coalesced.event.ipv4.old, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(coalesced.event.ipv4.new, Some("192.0.2.3".parse().unwrap()));
        assert_eq!(Delivery::coalesced(&[]), None);
    }

    #[test]
    fn presets_shape_the_message_as_each_receiver_expects() {
        let moved = delivery(event(
            EventKind::Changed,
            Some("192.0.2.1"),
            Some("192.0.2.2"),
            0,
        ));
        let text = "IPv4 192.0.2.1 -> 192.0.2.2. At 1970-01-01T00:00:00Z.";
        let ntfy = request(Preset::Ntfy, &moved);
        assert_eq!(ntfy.body, text);
        assert!(ntfy
            .headers
            .contains(&("Title", "kitchen-pc: new address".to_string())));
        let gotify: serde_json::Value =
            serde_json::from_str(&request(Preset::Gotify, &moved).body).unwrap();
        assert_eq!(gotify["title"], "kitchen-pc: new address");
        assert_eq!(gotify["message"], text);
        let slack: serde_json::Value =
            serde_json::from_str(&request(Preset::Slack, &moved).body).unwrap();
        assert_eq!(slack["text"], format!("*kitchen-pc: new address* {text}"));
        for preset in [Preset::Generic, Preset::Ntfy, Preset::Gotify, Preset::Slack] {
            let request = request(preset, &moved);
            assert!(request
                .headers
                .contains(&("X-Dynip-Event-Id", "7".to_string())));
        }
        let new = delivery(event(EventKind::New, None, Some("192.0.2.1"), 0));
        assert_eq!(message(&new).1, "IPv4 192.0.2.1. At 1970-01-01T00:00:00Z.");
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn answers_are_delivered_retried_or_refused_for_good() {
        assert_eq!(verdict(200, None), DeliveryVerdict::Delivered);
        assert_eq!(verdict(204, None), DeliveryVerdict::Delivered);
        assert_eq!(verdict(500, None), DeliveryVerdict::Retry { after: None });
        assert_eq!(
            verdict(503, Some("120")),
            DeliveryVerdict::Retry {
                after: Some(Duration::from_secs(120))
            }
        );
        assert_eq!(
            verdict(429, Some(" 5 ")),
            DeliveryVerdict::Retry {
                after: Some(Duration::from_secs(5))
            }
        );
        assert_eq!(verdict(408, None), DeliveryVerdict::Retry { after: None });
        assert_eq!(
            verdict(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            DeliveryVerdict::Retry { after: None }
        );
        assert_eq!(verdict(404, None), DeliveryVerdict::Permanent);
        assert_eq!(verdict(401, Some("5")), DeliveryVerdict::Permanent);
        assert_eq!(verdict(301, None), DeliveryVerdict::Retry { after: None });
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_takes_off_a_quarter_at_most() {
        let seconds = |attempt| backoff(attempt, 0.0).as_secs();
        assert_eq!([1, 2, 3, 4, 9].map(seconds), [1, 2, 4, 8, 256]);
        assert_eq!(seconds(10), MAX_RETRY.as_secs());
        assert_eq!(seconds(u32::MAX), MAX_RETRY.as_secs());
        assert_eq!(backoff(3, 0.999_999).as_millis(), 3_000);
        assert_eq!(backoff(3, 7.0), Duration::from_secs(3));
    }

    #[test]
    fn host_globs_match_names_as_names_compare() {
        let check = |pattern: &str, name: &str, expect: bool| {
            assert_eq!(
                HostGlob::new(pattern).matches(name),
                expect,
                "{pattern} ~ {name}"
            );
        };
        check("*", "kitchen-pc", true);
        check("kitchen-*", "kitchen-pc", true);
        check("KITCHEN-*", "kitchen-pc", true);
        check("*-pc", "kitchen-pc", true);
        check("k?tchen-pc", "kitchen-pc", true);
        check("*.home", "nas.home", true);
        check("*.home", "nas.office", false);
        check("kitchen", "kitchen-pc", false);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "aXbY", false);
        check("", "", true);
        check("", "x", false);
        // A pattern made to backtrack still answers at once.
        check("*a*a*a*a*a*a*b", &"a".repeat(200), false);
    }

    #[test]
    fn a_sink_hears_the_kinds_and_hosts_it_asked_for() {
        let moved = event(EventKind::Changed, Some("192.0.2.1"), Some("192.0.2.2"), 0);
        assert!(SinkFilter::all().wants(&moved));
        let stale_only = SinkFilter {
            events: vec![EventKind::Stale],
            hosts: vec![HostGlob::new("*")],
        };
        assert!(!stale_only.wants(&moved));
        let other_hosts = SinkFilter {
            events: EventKind::ALL.to_vec(),
            hosts: vec![HostGlob::new("nas*"), HostGlob::new("router")],
        };
        assert!(!other_hosts.wants(&moved));
    }

    #[test]
    fn the_first_event_goes_at_once_and_the_rest_wait_out_the_interval() {
        let at = |seconds: i64| Time::from_micros(seconds * 1_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(due_at(at(100), None, minute), at(100), "nothing sent yet");
        assert_eq!(
            due_at(at(130), Some(at(100)), minute),
            at(160),
            "inside the interval"
        );
        assert_eq!(due_at(at(200), Some(at(100)), minute), at(200), "after it");
        assert_eq!(
            due_at(at(130), Some(at(100)), Duration::ZERO),
            at(130),
            "coalesce = 0"
        );
        // Flapping every second for a minute: sent at 0, then everything from 1 to 60
        // at 60, then 61 onwards at 120.
        let mut sent = None;
        let mut messages = 0;
        let mut pending: Option<Time> = None;
        for second in 0..=60 {
            pending = pending.or(Some(at(second)));
            let due = due_at(pending.unwrap(), sent, minute);
            if due <= at(second) {
                messages += 1;
                sent = Some(at(second));
                pending = None;
            }
        }
        assert_eq!(messages, 2, "one at once, one for the rest of the minute");
    }

    #[test]
    fn a_command_hears_the_event_in_its_environment() {
        let moved = delivery(event(
            EventKind::Changed,
            Some("192.0.2.1"),
            Some("192.0.2.2"),
            0,
        ));
        let env = command_env(&moved);
        let get = |key: &str| {
            env.iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("DYNIP_EVENT"), Some("changed"));
        assert_eq!(get("DYNIP_EVENT_ID"), Some("7"));
        assert_eq!(get("DYNIP_HOST"), Some("kitchen-pc"));
        assert_eq!(get("DYNIP_TIME"), Some("1970-01-01T00:00:00Z"));
        assert_eq!(get("DYNIP_IPV4"), Some("192.0.2.2"));
        assert_eq!(get("DYNIP_OLD_IPV4"), Some("192.0.2.1"));
        assert_eq!(get("DYNIP_IPV6"), Some(""));
        assert_eq!(get("DYNIP_COUNT"), Some("1"));
    }

    #[test]
    fn an_email_says_it_in_the_subject_and_carries_the_generic_body() {
        let moved = delivery(event(
            EventKind::Changed,
            Some("192.0.2.1"),
            Some("192.0.2.2"),
            0,
        ));
        let (subject, body) = email(&moved);
        assert_eq!(subject, "[dynip] kitchen-pc: new address");
        assert!(body.starts_with("IPv4 192.0.2.1 -> 192.0.2.2."), "{body}");
        assert!(body.contains(&generic_body(&moved)), "{body}");
    }
}
