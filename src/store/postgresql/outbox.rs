//! The notifications' tables on a shared database: each event once (`dynip.events`, ids
//! from the database), its delivery to each sink that wants it (`dynip.deliveries`), and
//! the hosts whose going stale was announced (`dynip.stale_hosts`), written in the turn
//! that made them.
//!
//! Every pending delivery is claimed by one server (`claimed_by`, until `claimed_until`):
//! the one whose turn made the event hands it to its own sinks and renews its claims
//! every [`super::FOLD_EVERY`]; a claim not renewed for [`CLAIM_FOR`] (its server is
//! gone) is taken over by another server with the same sink. So each delivery is made by
//! one server at a time, and by another only once the first has stopped renewing.
//! A host's going stale is announced by the server whose row in `stale_hosts` is first.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{Database, DriverError, Session};
use crate::model::event::{
    DeliveryRecord, DeliveryState, Event, EventKind, EventRecord, Settlement,
};
use crate::model::name::Name;
use crate::model::record::Time;
use crate::store::{event_from_columns, NewEvent, Outbox, StoreError, PRUNE_ROWS_PER_TURN};

/// How long a server's claim on a pending delivery lasts unless renewed.
pub const CLAIM_FOR: Duration = Duration::from_secs(30);

pub(super) const SCHEMA_OUTBOX: &str = "
CREATE TABLE dynip.events (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    ipv4_old TEXT, ipv4_new TEXT, ipv6_old TEXT, ipv6_new TEXT
);
CREATE INDEX events_by_name ON dynip.events (name_key, id);
CREATE TABLE dynip.deliveries (
    event BIGINT NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    settled_at BIGINT,
    detail TEXT,
    claimed_by TEXT NOT NULL,
    claimed_until BIGINT NOT NULL,
    PRIMARY KEY (event, sink)
);
CREATE INDEX deliveries_pending ON dynip.deliveries (claimed_until) WHERE state = 'pending';
CREATE TABLE dynip.stale_hosts (name_key TEXT PRIMARY KEY, name TEXT NOT NULL, since BIGINT NOT NULL);
";

const EVENT_COLUMNS: &str = "id, kind, name, at, ipv4_old, ipv4_new, ipv6_old, ipv6_new";

/// A turn's notification rows.
#[derive(Debug, Default)]
pub struct NoticeWrites<'a> {
    /// The sinks' names, which `events` and `settled` refer to by index.
    pub sink_names: &'a [String],
    /// The turn's events (their ids are the writer's; the database gives its own).
    pub events: &'a [NewEvent],
    /// Deliveries the sinks finished.
    pub settled: &'a [Settlement],
    /// Hosts announced stale (`Some(since)`), or back from it (`None`).
    pub stale: &'a [(Name, Option<Time>)],
    /// The keys of the hosts the turn's reports named: no longer stale, whichever
    /// server announced it.
    pub reported: &'a [String],
    /// Delete a chunk of events from before this time.
    pub prune_before: Option<Time>,
}

impl NoticeWrites<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.settled.is_empty()
            && self.stale.is_empty()
            && self.prune_before.is_none()
    }
}

/// Writes a turn's notification rows; returns each event's id in the database, or `None`
/// for an announcement of staleness another server made first (not written).
pub(super) fn write_notice(
    client: &mut Session,
    notice: &NoticeWrites<'_>,
    server: &str,
    now: Time,
) -> Result<Vec<Option<i64>>, DriverError> {
    if !notice.reported.is_empty() {
        client.execute(
            "DELETE FROM dynip.stale_hosts WHERE name_key = ANY($1)",
            &[&notice.reported],
        )?;
    }
    let mut announced: HashSet<String> = HashSet::new();
    let stale: Vec<(&Name, Time)> = notice
        .stale
        .iter()
        .filter_map(|(name, since)| since.map(|since| (name, since)))
        .collect();
    if !stale.is_empty() {
        let keys: Vec<&str> = stale.iter().map(|(name, _)| name.folded()).collect();
        let names: Vec<&str> = stale.iter().map(|(name, _)| name.as_str()).collect();
        let since: Vec<i64> = stale.iter().map(|(_, since)| since.as_micros()).collect();
        for row in client.query(
            "INSERT INTO dynip.stale_hosts (name_key, name, since) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
             ON CONFLICT (name_key) DO NOTHING RETURNING name_key",
            &[&keys, &names, &since],
        )? {
            announced.insert(row.get(0));
        }
    }
    // A staleness another server announced first is not announced again.
    let kept: Vec<&NewEvent> = notice
        .events
        .iter()
        .filter(|new| {
            new.event.kind != EventKind::Stale || announced.contains(new.event.host.folded())
        })
        .collect();
    let mut ids: Vec<Option<i64>> = Vec::with_capacity(notice.events.len());
    if !kept.is_empty() {
        let n = i64::try_from(kept.len()).unwrap_or(i64::MAX);
        let allocated: Vec<i64> = client
            .query(
                "SELECT nextval(pg_get_serial_sequence('dynip.events', 'id')) \
                 FROM generate_series(1, $1::int8)",
                &[&n],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut columns: [Vec<Option<String>>; 4] = Default::default();
        let (mut kinds, mut names, mut keys, mut at) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut delivery_events, mut delivery_sinks) = (Vec::new(), Vec::new());
        for (new, &id) in kept.iter().zip(&allocated) {
            let e = &new.event;
            kinds.push(e.kind.as_str());
            names.push(e.host.as_str());
            keys.push(e.host.folded());
            at.push(e.at.as_micros());
            columns[0].push(e.ipv4.old.map(|addr| addr.to_string()));
            columns[1].push(e.ipv4.new.map(|addr| addr.to_string()));
            columns[2].push(e.ipv6.old.map(|addr| addr.to_string()));
            columns[3].push(e.ipv6.new.map(|addr| addr.to_string()));
            for &sink in &new.sinks {
                delivery_events.push(id);
                delivery_sinks.push(notice.sink_names[sink].as_str());
            }
        }
        client.execute(
            "INSERT INTO dynip.events (id, kind, name, name_key, at, ipv4_old, ipv4_new, \
             ipv6_old, ipv6_new) SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], \
             $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[])",
            &[
                &allocated,
                &kinds,
                &names,
                &keys,
                &at,
                &columns[0],
                &columns[1],
                &columns[2],
                &columns[3],
            ],
        )?;
        let until = claimed_until(now);
        client.execute(
            "INSERT INTO dynip.deliveries (event, sink, state, claimed_by, claimed_until) \
             SELECT e, s, 'pending', $3, $4 FROM unnest($1::int8[], $2::text[]) AS d(e, s)",
            &[&delivery_events, &delivery_sinks, &server, &until],
        )?;
        let mut allocated = allocated.into_iter();
        for new in notice.events {
            let kept =
                new.event.kind != EventKind::Stale || announced.contains(new.event.host.folded());
            ids.push(if kept { allocated.next() } else { None });
        }
    } else {
        ids.resize(notice.events.len(), None);
    }
    for settled in notice.settled {
        client.execute(
            "UPDATE dynip.deliveries SET state = $3, attempts = $4, settled_at = $5, \
             detail = $6 WHERE sink = $2 AND event = ANY($1)",
            &[
                &settled.ids,
                &notice.sink_names[settled.sink],
                &settled.state.as_str(),
                &i32::try_from(settled.attempts).unwrap_or(i32::MAX),
                &settled.at.as_micros(),
                &settled.detail,
            ],
        )?;
    }
    if let Some(before) = notice.prune_before {
        // Ids rise with time, so the oldest events come first by id.
        client.execute(
            "WITH old AS (SELECT id FROM dynip.events WHERE at < $1 ORDER BY id LIMIT $2), \
             d AS (DELETE FROM dynip.deliveries WHERE event IN (SELECT id FROM old)) \
             DELETE FROM dynip.events WHERE id IN (SELECT id FROM old)",
            &[&before.as_micros(), &PRUNE_ROWS_PER_TURN],
        )?;
    }
    Ok(ids)
}

/// Until when a claim made or renewed at `now` lasts.
fn claimed_until(now: Time) -> i64 {
    now.as_micros() + CLAIM_FOR.as_micros() as i64
}

impl Database {
    /// Claims the pending deliveries to `sinks` that nobody holds a claim on at `now`
    /// (their server gone), and returns them with the hosts announced stale: what this
    /// server's sinks go on from.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn claim_outbox(&mut self, sinks: &[String], now: Time) -> Result<Outbox, StoreError> {
        let shown = self.shown.clone();
        let server = self.server.clone();
        let rows = self.with(|client| {
            let claimed = client.query(
                &format!(
                    "WITH c AS (UPDATE dynip.deliveries SET claimed_by = $1, claimed_until = $2 \
                     WHERE state = 'pending' AND claimed_until < $3 AND sink = ANY($4) \
                     RETURNING event, sink) \
                     SELECT c.sink, {} FROM c JOIN dynip.events AS e ON e.id = c.event \
                     ORDER BY c.sink, e.id",
                    EVENT_COLUMNS
                        .split(", ")
                        .map(|column| format!("e.{column}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&server, &claimed_until(now), &now.as_micros(), &sinks],
            )?;
            let stale = client.query("SELECT name FROM dynip.stale_hosts", &[])?;
            Ok((claimed, stale))
        })?;
        let (claimed, stale) = rows;
        let mut outbox = Outbox::default();
        for row in &claimed {
            let sink: String = row.get(0);
            let (id, event) = decode_event(row, 1, &shown)?;
            outbox
                .pending
                .entry(sink)
                .or_insert_with(Vec::new)
                .push((id, event));
        }
        for row in &stale {
            let name: String = row.get(0);
            outbox
                .stale
                .push(Name::parse(&name).map_err(|_| StoreError::DatabaseCorrupt {
                    url: shown.clone(),
                    detail: format!("stale_hosts: bad name {name:?}"),
                })?);
        }
        Ok(outbox)
    }

    /// Renews this server's claims on its pending deliveries at `now`.
    ///
    /// # Errors
    /// When the database does not answer.
    pub fn renew_claims(&mut self, now: Time) -> Result<u64, StoreError> {
        let server = self.server.clone();
        self.with(|client| {
            client.execute(
                "UPDATE dynip.deliveries SET claimed_until = $2 \
                 WHERE claimed_by = $1 AND state = 'pending'",
                &[&server, &claimed_until(now)],
            )
        })
    }

    /// The latest `limit` events, newest first, of every host or of `host`, with their
    /// deliveries.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn events(
        &mut self,
        host: Option<&Name>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let shown = self.shown.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let key = host.map(Name::folded);
        let rows = self.with(|client| {
            let events = client.query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM dynip.events \
                     WHERE $1::text IS NULL OR name_key = $1 ORDER BY id DESC LIMIT $2"
                ),
                &[&key, &limit],
            )?;
            let ids: Vec<i64> = events.iter().map(|row| row.get(0)).collect();
            let deliveries = client.query(
                "SELECT event, sink, state, attempts, settled_at, detail \
                 FROM dynip.deliveries WHERE event = ANY($1) ORDER BY event, sink",
                &[&ids],
            )?;
            Ok((events, deliveries))
        })?;
        let (events, deliveries) = rows;
        let mut by_event: BTreeMap<i64, Vec<DeliveryRecord>> = BTreeMap::new();
        for row in &deliveries {
            let state: String = row.get(2);
            let state =
                DeliveryState::parse(&state).ok_or_else(|| StoreError::DatabaseCorrupt {
                    url: shown.clone(),
                    detail: format!("deliveries: bad state {state:?}"),
                })?;
            by_event
                .entry(row.get(0))
                .or_default()
                .push(DeliveryRecord {
                    sink: row.get(1),
                    state,
                    attempts: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                    settled_at: row.get::<_, Option<i64>>(4).map(Time::from_micros),
                    detail: row.get(5),
                });
        }
        events
            .iter()
            .map(|row| {
                let (id, event) = decode_event(row, 0, &shown)?;
                Ok(EventRecord {
                    id,
                    event,
                    deliveries: by_event.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// An event from the columns of [`EVENT_COLUMNS`] starting at `first`.
fn decode_event(
    row: &tokio_postgres::Row,
    first: usize,
    shown: &str,
) -> Result<(i64, Event), StoreError> {
    let id: i64 = row.get(first);
    let kind: String = row.get(first + 1);
    let name: String = row.get(first + 2);
    let event = event_from_columns(
        &kind,
        &name,
        row.get(first + 3),
        [
            row.get(first + 4),
            row.get(first + 5),
            row.get(first + 6),
            row.get(first + 7),
        ],
    )
    .map_err(|what| StoreError::DatabaseCorrupt {
        url: shown.to_string(),
        detail: format!("event {id}: bad {what}"),
    })?;
    Ok((id, event))
}
