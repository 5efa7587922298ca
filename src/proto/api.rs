//! The JSON API's documents: hosts, one host, a host's history, errors, and the OpenAPI
//! description they follow.
//!
//! Owns the JSON shapes (serde structs) and [`OPENAPI`]. Pure: records and times in, JSON
//! values out; routing, authentication and reading the store are `http`'s. A field added
//! here goes into `openapi.json` too: `tests/it/http.rs` checks every answer against it.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::model::name::Name;
use crate::model::record::{Record, Seen, Time};

/// The OpenAPI 3.1 description of `/api/v1/`, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// One host: `GET /api/v1/hosts/{name}`, and each item of `GET /api/v1/hosts`.
#[derive(Debug, Serialize)]
pub struct HostJson {
    pub host: String,
    pub first_seen: String,
    pub last_seen: String,
    /// The last report is older than `stale_after`.
    pub stale: bool,
    /// The host said `offline=YES` in its last report.
    pub offline: bool,
    pub ipv4: Option<SeenJson>,
    pub ipv6: Option<SeenJson>,
}

/// One family's address.
#[derive(Debug, Serialize)]
pub struct SeenJson {
    pub address: String,
    pub last_seen: String,
    pub last_change: String,
}

impl<A: std::fmt::Display> From<Seen<A>> for SeenJson {
    fn from(seen: Seen<A>) -> SeenJson {
        SeenJson {
            address: seen.addr.to_string(),
            last_seen: seen.last_seen.rfc3339(),
            last_change: seen.last_change.rfc3339(),
        }
    }
}

/// `GET /api/v1/hosts`.
#[derive(Debug, Serialize)]
pub struct HostsJson {
    pub hosts: Vec<HostJson>,
}

/// `GET /api/v1/hosts/{name}/history`: address changes, oldest first.
#[derive(Debug, Serialize)]
pub struct HistoryJson {
    pub host: String,
    pub changes: Vec<ChangeJson>,
}

#[derive(Debug, Serialize)]
pub struct ChangeJson {
    pub time: String,
    pub address: String,
}

/// Any error: `{"error": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    pub error: String,
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

pub fn host(name: &Name, record: &Record, now: Time, stale_after: Duration) -> HostJson {
    HostJson {
        host: name.to_string(),
        first_seen: record.first_seen.rfc3339(),
        last_seen: record.last_seen().rfc3339(),
        stale: is_stale(record.last_seen(), now, stale_after),
        offline: record.offline,
        ipv4: record.v4.map(SeenJson::from),
        ipv6: record.v6.map(SeenJson::from),
    }
}

pub fn history(name: &Name, changes: &[(Time, IpAddr)]) -> HistoryJson {
    HistoryJson {
        host: name.to_string(),
        changes: changes
            .iter()
            .map(|(at, addr)| ChangeJson {
                time: at.rfc3339(),
                address: addr.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_json_and_names_every_path() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/api/v1/hosts",
            "/api/v1/hosts/{name}",
            "/api/v1/hosts/{name}/history",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
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
        let record = Record::new("203.0.113.7".parse().unwrap(), at);
        let json = serde_json::to_value(host(
            &Name::parse("pc").unwrap(),
            &record,
            Time::from_micros(1),
            hour,
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "host": "pc",
                "first_seen": "1970-01-01T00:00:00Z",
                "last_seen": "1970-01-01T00:00:00Z",
                "stale": false,
                "offline": false,
                "ipv4": {
                    "address": "203.0.113.7",
                    "last_seen": "1970-01-01T00:00:00Z",
                    "last_change": "1970-01-01T00:00:00Z"
                },
                "ipv6": null
            })
        );
    }
}
