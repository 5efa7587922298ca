//! The status page: the hosts, their addresses, how long ago each reported, stale hosts
//! marked, and each host's history, as server-rendered HTML.
//!
//! Owns the HTML. Pure: records, the history and `now` in, a page out; no JavaScript, no
//! external resources (one inline style sheet), readable on a phone (the table turns into
//! one card per host on narrow screens). Serving and authentication are `http`'s.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::model::event::{DeliveryState, EventKind, EventRecord};
use crate::model::name::Name;
use crate::model::record::{is_stale, Record, Time};

/// Hosts listed on one page: a page of this size renders in a few milliseconds and a
/// browser shows it at once; beyond it the API lists everything.
pub const MAX_HOSTS_SHOWN: usize = 1000;

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#222}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}\
td.addr{font-family:ui-monospace,monospace;word-break:break-all}\
tr.stale td{color:#888}.badge{font-size:.8rem;padding:.05rem .4rem;border-radius:.6rem}\
.ok{background:#dfd;color:#060}.off{background:#eee;color:#555}.stale .badge{background:#fdd;color:#900}\
.muted{color:#777;font-size:.9rem}a{color:#036}\
@media (max-width:40rem){thead{display:none}table,tbody,tr,td{display:block;width:auto}\
tr{border:1px solid #ddd;border-radius:.4rem;margin:.6rem 0;padding:.3rem}\
td{border:none;padding:.15rem .4rem}td[data-label]::before{content:attr(data-label) \": \";\
color:#777;font-family:system-ui,sans-serif}}";

/// One host as the page shows it.
pub struct Row<'a> {
    pub name: &'a Name,
    pub record: &'a Record,
}

/// Where a page of the list is among all the hosts.
pub struct Page<'a> {
    /// Hosts the reader may see, in all.
    pub n_hosts: usize,
    /// The page starts after this host (`None`: the first page).
    pub after: Option<&'a Name>,
    /// The last host shown, when more follow it.
    pub next: Option<&'a Name>,
}

/// The page at `/`: `rows` (in name order), where `place` says among all the hosts.
pub fn page(rows: &[Row<'_>], place: &Page<'_>, now: Time, stale_after: Duration) -> String {
    let n_hosts = place.n_hosts;
    let n_stale = rows
        .iter()
        .filter(|row| is_stale(row.record.last_seen(), now, stale_after))
        .count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>dynip: {n_hosts} host{}</h1>\n<p class=\"muted\">{}{} reported within {}; \
         {n_stale} stale. As of {}.</p>\n",
        if n_hosts == 1 { "" } else { "s" },
        match place.after {
            Some(after) => format!(
                "The {} hosts after {}: ",
                rows.len(),
                escape(after.as_str())
            ),
            None if rows.len() < n_hosts => format!("The first {}: ", rows.len()),
            None => String::new(),
        },
        rows.len() - n_stale,
        humantime::format_duration(stale_after),
        now.rfc3339(),
    );
    if rows.is_empty() {
        body.push_str("<p>No host has reported yet.</p>\n");
    } else {
        body.push_str(
            "<table>\n<thead><tr><th>Host</th><th>IPv4</th><th>IPv6</th><th>Last report</th>\
             <th>Status</th></tr></thead>\n<tbody>\n",
        );
        for row in rows {
            let last_seen = row.record.last_seen();
            let stale = is_stale(last_seen, now, stale_after);
            let name = escape(row.name.as_str());
            let _ = writeln!(
                body,
                "<tr class=\"{class}\"><td><a href=\"/hosts/{name}\">{name}</a></td>\
                 <td class=\"addr\" data-label=\"IPv4\">{v4}</td>\
                 <td class=\"addr\" data-label=\"IPv6\">{v6}</td>\
                 <td data-label=\"Last report\"><time datetime=\"{at}\" title=\"{at}\">{ago}</time></td>\
                 <td><span class=\"badge{badge}\">{status}</span></td></tr>",
                class = if stale { "host stale" } else { "host" },
                v4 = row.record.v4.map_or("–".to_string(), |seen| seen.addr.to_string()),
                v6 = row.record.v6.map_or("–".to_string(), |seen| seen.addr.to_string()),
                at = last_seen.rfc3339(),
                ago = ago(last_seen, now),
                badge = badge_class(row.record, stale),
                status = status_word(row.record, stale),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }
    if place.after.is_some() || place.next.is_some() {
        body.push_str("<p>");
        if place.after.is_some() {
            body.push_str("<a href=\"/\">First page</a>");
        }
        if let Some(next) = place.next {
            let _ = write!(
                body,
                "{}<a href=\"/?after={}\" rel=\"next\">Next {MAX_HOSTS_SHOWN} →</a>",
                if place.after.is_some() { " · " } else { "" },
                escape(
                    &form_urlencoded::byte_serialize(next.as_str().as_bytes()).collect::<String>()
                )
            );
        }
        body.push_str(
            " <span class=\"muted\">(<a href=\"/api/v1/hosts\">/api/v1/hosts</a> lists \
             all)</span></p>\n",
        );
    }
    document("dynip", &body)
}

/// The page of one host: its addresses, its history of address changes, and its recent
/// events with where each stands with each sink (none without sinks), newest first.
pub fn host_page(
    name: &Name,
    record: &Record,
    changes: &[(Time, IpAddr)],
    events: &[EventRecord],
    now: Time,
    stale_after: Duration,
) -> String {
    let name = escape(name.as_str());
    let last_seen = record.last_seen();
    let stale = is_stale(last_seen, now, stale_after);
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"/\">← all hosts</a></p>\n<h1>{name}</h1>\n<table>\n\
         <tr><th>IPv4</th><td class=\"addr\">{v4}</td></tr>\n\
         <tr><th>IPv6</th><td class=\"addr\">{v6}</td></tr>\n\
         <tr{class}><th>Last report</th><td><time datetime=\"{at}\">{ago}</time> ({at}) \
         <span class=\"badge{badge}\">{status}</span></td></tr>\n\
         <tr><th>First seen</th><td>{first}</td></tr>\n</table>\n\
         <h2>History</h2>\n",
        v4 = record
            .v4
            .map_or("–".to_string(), |seen| seen.addr.to_string()),
        v6 = record
            .v6
            .map_or("–".to_string(), |seen| seen.addr.to_string()),
        class = if stale { " class=\"stale\"" } else { "" },
        at = last_seen.rfc3339(),
        ago = ago(last_seen, now),
        badge = badge_class(record, stale),
        status = status_word(record, stale),
        first = record.first_seen.rfc3339(),
    );
    body.push_str(
        "<table class=\"history\">\n<thead><tr><th>Since</th><th>Address</th></tr></thead>\n<tbody>\n",
    );
    for (at, addr) in changes.iter().rev() {
        let _ = writeln!(
            body,
            "<tr><td><time datetime=\"{at}\">{at}</time></td><td class=\"addr\">{addr}</td></tr>",
            at = at.rfc3339()
        );
    }
    body.push_str("</tbody>\n</table>\n");
    if !events.is_empty() {
        body.push_str(
            "<h2>Events</h2>\n<table class=\"events\">\n<thead><tr><th>When</th><th>Event</th>\
             <th>Addresses</th><th>Notifications</th></tr></thead>\n<tbody>\n",
        );
        for record in events {
            let event = &record.event;
            let mut addresses = Vec::new();
            if event.ipv4.old != event.ipv4.new || event.kind == EventKind::New {
                addresses.push(moved(event.ipv4.old, event.ipv4.new));
            }
            if event.ipv6.old != event.ipv6.new {
                addresses.push(moved(event.ipv6.old, event.ipv6.new));
            }
            let deliveries: Vec<String> = record
                .deliveries
                .iter()
                .map(|delivery| {
                    format!(
                        "{}: <span class=\"badge{}\">{}</span>",
                        escape(&delivery.sink),
                        match delivery.state {
                            DeliveryState::Delivered => " ok",
                            DeliveryState::Pending => " off",
                            DeliveryState::Failed | DeliveryState::Dropped => "",
                        },
                        delivery.state.as_str()
                    )
                })
                .collect();
            let _ = writeln!(
                body,
                "<tr><td><time datetime=\"{at}\">{at}</time></td><td>{kind}</td>\
                 <td class=\"addr\">{addresses}</td><td>{deliveries}</td></tr>",
                at = event.at.rfc3339(),
                kind = event.kind.as_str(),
                addresses = addresses.join("<br>"),
                deliveries = deliveries.join(" "),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }
    document(&format!("dynip: {name}"), &body)
}

/// An address's move, `old → new`, with `–` for none.
fn moved<A: std::fmt::Display>(old: Option<A>, new: Option<A>) -> String {
    let shown = |addr: Option<A>| addr.map_or("–".to_string(), |addr| addr.to_string());
    match old {
        Some(_) => format!("{} → {}", shown(old), shown(new)),
        None => shown(new),
    }
}

/// A host's state in a word: `stale` (no report for `stale_after`), `offline` (it said
/// so), or `ok`.
fn status_word(record: &Record, stale: bool) -> &'static str {
    match (stale, record.offline) {
        (true, _) => "stale",
        (false, true) => "offline",
        (false, false) => "ok",
    }
}

/// The badge's extra class for [`status_word`]: stale badges take the row's colours.
fn badge_class(record: &Record, stale: bool) -> &'static str {
    match status_word(record, stale) {
        "ok" => " ok",
        "offline" => " off",
        _ => "",
    }
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// How long before `now` `at` was, in the largest whole unit: `42 s ago`, `5 min ago`.
pub fn ago(at: Time, now: Time) -> String {
    let secs = now.as_micros().saturating_sub(at.as_micros()).max(0) / 1_000_000;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: i64) -> Time {
        Time::from_micros(n * 1_000_000)
    }

    #[test]
    fn says_how_long_ago() {
        let now = secs(100_000);
        for (at, expect) in [
            (secs(100_000), "0 s ago"),
            (secs(99_941), "59 s ago"),
            (secs(99_940), "1 min ago"),
            (secs(96_401), "59 min ago"),
            (secs(96_400), "1 h ago"),
            (secs(13_600), "1 d ago"),
            (secs(200_000), "0 s ago"),
        ] {
            assert_eq!(ago(at, now), expect);
        }
    }

    #[test]
    fn marks_stale_hosts() {
        let fresh = Name::parse("fresh").unwrap();
        let old = Name::parse("old").unwrap();
        let fresh_record = Record::new("203.0.113.7".parse().unwrap(), secs(7000));
        let old_record = Record::new("2001:db8::1".parse().unwrap(), secs(0));
        let rows = [
            Row {
                name: &fresh,
                record: &fresh_record,
            },
            Row {
                name: &old,
                record: &old_record,
            },
        ];
        let all = Page {
            n_hosts: 2,
            after: None,
            next: None,
        };
        let html = page(&rows, &all, secs(7200), Duration::from_secs(3600));
        assert!(html.contains("<h1>dynip: 2 hosts</h1>"), "{html}");
        assert!(html.contains("1 reported within 1h; 1 stale."), "{html}");
        assert!(!html.contains("rel=\"next\""), "{html}");
        assert!(!html.contains("First page"), "{html}");
        assert!(html.contains(
            "<tr class=\"host\"><td><a href=\"/hosts/fresh\">fresh</a></td>\
             <td class=\"addr\" data-label=\"IPv4\">203.0.113.7</td>"
        ));
        assert!(html.contains("<tr class=\"host stale\"><td><a href=\"/hosts/old\">old</a>"));
        assert!(html.contains(">2001:db8::1</td>"));
        assert!(html.contains(">3 min ago</time>"));
        assert!(html.contains(">2 h ago</time>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn links_the_pages_of_a_long_list() {
        let (a, b) = (Name::parse("a").unwrap(), Name::parse("Straße").unwrap());
        let record = Record::new("203.0.113.7".parse().unwrap(), secs(7000));
        let rows = [Row {
            name: &b,
            record: &record,
        }];
        let middle = Page {
            n_hosts: 3000,
            after: Some(&a),
            next: Some(&b),
        };
        let html = page(&rows, &middle, secs(7200), Duration::from_secs(3600));
        assert!(html.contains("<h1>dynip: 3000 hosts</h1>"), "{html}");
        assert!(html.contains("The 1 hosts after a: 1 reported"), "{html}");
        assert!(html.contains("<a href=\"/\">First page</a>"), "{html}");
        assert!(
            html.contains("<a href=\"/?after=Stra%C3%9Fe\" rel=\"next\">Next 1000 →</a>"),
            "{html}"
        );
        let first = Page {
            n_hosts: 3000,
            after: None,
            next: Some(&b),
        };
        let html = page(&rows, &first, secs(7200), Duration::from_secs(3600));
        assert!(html.contains("The first 1: 1 reported"), "{html}");
        assert!(!html.contains("First page"), "{html}");
        assert!(html.contains("rel=\"next\""), "{html}");
    }

    #[test]
    fn shows_a_hosts_history_newest_first() {
        let name = Name::parse("pc").unwrap();
        let mut record = Record::new("203.0.113.7".parse().unwrap(), secs(10));
        record.apply("198.51.100.1".parse().unwrap(), secs(20));
        let changes = [
            (secs(10), "203.0.113.7".parse().unwrap()),
            (secs(20), "198.51.100.1".parse().unwrap()),
        ];
        let html = host_page(
            &name,
            &record,
            &changes,
            &[],
            secs(30),
            Duration::from_secs(3600),
        );
        assert!(!html.contains("<h2>Events</h2>"), "none without sinks");
        let newer = html.find(">198.51.100.1</td></tr>").unwrap();
        let older = html.find(">203.0.113.7</td></tr>").unwrap();
        assert!(newer < older, "{html}");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn shows_a_hosts_events_with_their_deliveries() {
        use crate::model::event::{Addresses, DeliveryRecord, Event};
        let name = Name::parse("pc").unwrap();
        let record = Record::new("198.51.100.1".parse().unwrap(), secs(20));
        let moved = EventRecord {
            id: 7,
            event: Event {
                kind: EventKind::Changed,
                host: name.clone(),
                at: secs(20),
                ipv4: Addresses {
                    old: Some("203.0.113.7".parse().unwrap()),
                    new: Some("198.51.100.1".parse().unwrap()),
                },
                ipv6: Addresses {
                    old: None,
                    new: None,
                },
            },
            deliveries: vec![DeliveryRecord {
                sink: "<chat>".into(),
                state: DeliveryState::Pending,
                attempts: 3,
                settled_at: None,
                detail: Some("HTTP 503".into()),
            }],
        };
        let html = host_page(
            &name,
            &record,
            &[],
            &[moved],
            secs(30),
            Duration::from_secs(3600),
        );
        assert!(html.contains("<td>changed</td>"), "{html}");
        assert!(html.contains("203.0.113.7 → 198.51.100.1"), "{html}");
        assert!(
            html.contains("&lt;chat&gt;: <span class=\"badge off\">pending</span>"),
            "{html}"
        );
    }
}
