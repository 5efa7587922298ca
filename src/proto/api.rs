//! The JSON API's documents: hosts, one host, a host's history, errors, and the OpenAPI
//! description they follow.
//!
//! Owns the JSON shapes (serde structs) and [`OPENAPI`]. Pure: records and times in, JSON
//! values out; routing, authentication and reading the store are `http`'s. A field added
//! here goes into `openapi.json` too: `tests/it/http.rs` checks every answer against it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Serialize;

use crate::model::event::EventRecord;
use crate::model::name::Name;
use crate::model::record::{is_stale, Record, Seen, Time};
use crate::proto::notify::FamilyJson;

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

/// `GET /api/v1/txt`: the TXT records by name.
#[derive(Debug, Serialize)]
pub struct TxtRecordsJson {
    pub txt: Vec<TxtJson>,
}

/// One name's TXT records, each as its strings joined.
#[derive(Debug, Serialize)]
pub struct TxtJson {
    pub name: String,
    pub values: Vec<String>,
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

/// `GET /api/v1/events` and `GET /api/v1/hosts/{name}/events`: recent events, newest
/// first, with where each stands with each sink.
#[derive(Debug, Serialize)]
pub struct EventsJson {
    pub events: Vec<EventJson>,
}

/// One event: the fields of the webhooks' generic body, and its deliveries.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub id: i64,
    pub event: &'static str,
    pub host: String,
    pub time: String,
    pub ipv4: FamilyJson<Ipv4Addr>,
    pub ipv6: FamilyJson<Ipv6Addr>,
    pub deliveries: Vec<DeliveryJson>,
}

/// Where an event stands with one sink.
#[derive(Debug, Serialize)]
pub struct DeliveryJson {
    pub sink: String,
    /// `pending`, `delivered`, `failed` or `dropped`.
    pub state: &'static str,
    /// Tries so far.
    pub attempts: u32,
    /// When the last try ended (`null`: none yet).
    pub time: Option<String>,
    /// The last try's outcome (`HTTP 503`, `exit status 2`).
    pub detail: Option<String>,
}

pub fn events(records: &[EventRecord]) -> EventsJson {
    EventsJson {
        events: records
            .iter()
            .map(|record| EventJson {
                id: record.id,
                event: record.event.kind.as_str(),
                host: record.event.host.to_string(),
                time: record.event.at.rfc3339(),
                ipv4: record.event.ipv4.into(),
                ipv6: record.event.ipv6.into(),
                deliveries: record
                    .deliveries
                    .iter()
                    .map(|delivery| DeliveryJson {
                        sink: delivery.sink.clone(),
                        state: delivery.state.as_str(),
                        attempts: delivery.attempts,
                        time: delivery.settled_at.map(Time::rfc3339),
                        detail: delivery.detail.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Any error: `{"error": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    pub error: String,
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
    fn a_host_is_its_record_as_json() {
        let hour = Duration::from_secs(3600);
        let at = Time::from_micros(0);
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
