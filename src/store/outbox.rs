//! The notifications' tables: each event once (`events`), its delivery to each sink that
//! wants it (`deliveries`, whose `pending` rows are the outbox), and the hosts whose
//! going stale was announced (`stale_hosts`). Written in the writer's turn, in the same
//! transaction as the change that made the event; read at start and by the readers.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{sqlite::Store, Outbox, StoreError, Turn, PRUNE_ROWS_PER_TURN};
use crate::model::event::{DeliveryRecord, DeliveryState, Event, EventRecord};
use crate::model::name::Name;
use crate::model::record::Time;

/// How far back a host's events are looked for: the latest this many events of all
/// hosts. Its cost is a scan of that many rows at most (about 30 ms).
pub const HOST_EVENTS_SCANNED: i64 = 100_000;

const EVENT_COLUMNS: &str = "id, kind, name, at, ipv4_old, ipv4_new, ipv6_old, ipv6_new";

/// Writes the turn's notification rows: its events and their pending deliveries, the
/// finished deliveries, the stale hosts, and a chunk of old events to delete.
pub(super) fn write(tx: &Transaction<'_>, turn: &Turn<'_>) -> rusqlite::Result<()> {
    if !turn.events.is_empty() {
        let mut event = tx.prepare_cached(
            "INSERT INTO events (id, kind, name, name_key, at, ipv4_old, ipv4_new, ipv6_old, \
             ipv6_new) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut delivery = tx.prepare_cached(
            "INSERT INTO deliveries (event, sink, state) VALUES (?1, ?2, 'pending')",
        )?;
        for new in turn.events {
            let e = &new.event;
            event.execute(params![
                new.id,
                e.kind.as_str(),
                e.host.as_str(),
                e.host.folded(),
                e.at.as_micros(),
                e.ipv4.old.map(|addr| addr.to_string()),
                e.ipv4.new.map(|addr| addr.to_string()),
                e.ipv6.old.map(|addr| addr.to_string()),
                e.ipv6.new.map(|addr| addr.to_string()),
            ])?;
            for &sink in &new.sinks {
                delivery.execute(params![new.id, turn.sink_names[sink]])?;
            }
        }
        tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('next_event', ?1)")?
            .execute([turn.next_event])?;
    }
    if !turn.settled.is_empty() {
        // One statement per message, whatever the number of events it stood for. `OR
        // FAIL`: no row can fail (the values are never NULL), and a statement that may
        // abort half-way over several rows costs SQLite a statement journal.
        let mut settle = tx.prepare_cached(
            "UPDATE OR FAIL deliveries SET state = ?3, attempts = ?4, settled_at = ?5, detail = ?6 \
             WHERE sink = ?2 AND event IN (SELECT value FROM json_each(?1))",
        )?;
        for settled in turn.settled {
            let ids = format!(
                "[{}]",
                settled
                    .ids
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            );
            settle.execute(params![
                ids,
                turn.sink_names[settled.sink],
                settled.state.as_str(),
                settled.attempts,
                settled.at.as_micros(),
                settled.detail,
            ])?;
        }
    }
    for (name, since) in turn.stale {
        match since {
            Some(since) => tx
                .prepare_cached("INSERT OR REPLACE INTO stale_hosts (name, since) VALUES (?1, ?2)")?
                .execute(params![name.as_str(), since.as_micros()])?,
            None => tx
                .prepare_cached("DELETE FROM stale_hosts WHERE name = ?1")?
                .execute([name.as_str()])?,
        };
    }
    if let Some(before) = turn.prune_events_before {
        // Ids rise with time, so the oldest events come first by id.
        tx.prepare_cached(
            "DELETE FROM deliveries WHERE event IN \
             (SELECT id FROM events WHERE id IN \
              (SELECT id FROM events ORDER BY id LIMIT ?2) AND at < ?1)",
        )?
        .execute(params![before.as_micros(), PRUNE_ROWS_PER_TURN])?;
        tx.prepare_cached(
            "DELETE FROM events WHERE id IN \
             (SELECT id FROM events ORDER BY id LIMIT ?2) AND at < ?1",
        )?
        .execute(params![before.as_micros(), PRUNE_ROWS_PER_TURN])?;
    }
    Ok(())
}

impl Store {
    /// What the notifications go on from: the next event id, every pending delivery, and
    /// the hosts announced stale.
    ///
    /// # Errors
    /// On a failed read, or a row that does not decode.
    pub fn outbox(&self) -> Result<Outbox, StoreError> {
        let mut outbox = Outbox {
            next_event: 1,
            ..Outbox::default()
        };
        if self.before_events {
            return Ok(outbox);
        }
        let next: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'next_event'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.classify(e))?;
        outbox.next_event = next.unwrap_or(1);
        // A scan of every delivery, once at start: an index of the pending ones would
        // cost each event two more B-tree writes in the writer's turn.
        let mut statement = self
            .conn
            .prepare(
                "SELECT d.sink, e.id, e.kind, e.name, e.at, e.ipv4_old, e.ipv4_new, e.ipv6_old, \
                 e.ipv6_new FROM deliveries d JOIN events e ON e.id = d.event \
                 WHERE d.state = 'pending' ORDER BY d.sink, d.event",
            )
            .map_err(|e| self.classify(e))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let sink: String = row.get(0).map_err(|e| self.classify(e))?;
            let (id, event) = self.decode_event(row, 1)?;
            outbox.pending.entry(sink).or_default().push((id, event));
        }
        let mut statement = self
            .conn
            .prepare("SELECT name FROM stale_hosts")
            .map_err(|e| self.classify(e))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let name: String = row.get(0).map_err(|e| self.classify(e))?;
            let name = Name::parse(&name)
                .map_err(|_| self.corrupt(format!("stale_hosts: bad name {name:?}")))?;
            outbox.stale.push(name);
        }
        Ok(outbox)
    }

    /// The latest `limit` events, newest first, of every host, or of `host` among the
    /// latest `HOST_EVENTS_SCANNED` events, with their deliveries.
    ///
    /// # Errors
    /// On a failed read, or a row that does not decode.
    pub fn events(
        &self,
        host: Option<&Name>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        if self.before_events {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Newest first by id (the table's order), a host's among the latest
        // HOST_EVENTS_SCANNED only: an index by name would put each event's entry on a
        // random page, which cost the writer more than the event itself.
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                 WHERE id > (SELECT coalesce(max(id), 0) FROM events) - ?3 \
                 AND (?1 IS NULL OR name_key = ?1) ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(|e| self.classify(e))?;
        let mut rows = statement
            .query(params![host.map(Name::folded), limit, HOST_EVENTS_SCANNED])
            .map_err(|e| self.classify(e))?;
        let mut events = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let (id, event) = self.decode_event(row, 0)?;
            events.push(EventRecord {
                id,
                event,
                deliveries: Vec::new(),
            });
        }
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT sink, state, attempts, settled_at, detail FROM deliveries \
                 WHERE event = ?1 ORDER BY sink",
            )
            .map_err(|e| self.classify(e))?;
        for record in &mut events {
            let mut rows = statement.query([record.id]).map_err(|e| self.classify(e))?;
            while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
                let state: String = row.get(1).map_err(|e| self.classify(e))?;
                let state = DeliveryState::parse(&state)
                    .ok_or_else(|| self.corrupt(format!("deliveries: bad state {state:?}")))?;
                record.deliveries.push(DeliveryRecord {
                    sink: row.get(0).map_err(|e| self.classify(e))?,
                    state,
                    attempts: row.get(2).map_err(|e| self.classify(e))?,
                    settled_at: row
                        .get::<_, Option<i64>>(3)
                        .map_err(|e| self.classify(e))?
                        .map(Time::from_micros),
                    detail: row.get(4).map_err(|e| self.classify(e))?,
                });
            }
        }
        Ok(events)
    }

    /// An event from the columns of [`EVENT_COLUMNS`] starting at `first`.
    fn decode_event(&self, row: &Row<'_>, first: usize) -> Result<(i64, Event), StoreError> {
        let text = |i: usize| -> Result<Option<String>, StoreError> {
            row.get(first + i).map_err(|e| self.classify(e))
        };
        let id: i64 = row.get(first).map_err(|e| self.classify(e))?;
        let at: i64 = row.get(first + 3).map_err(|e| self.classify(e))?;
        let event = super::event_from_columns(
            &text(1)?.unwrap_or_default(),
            &text(2)?.unwrap_or_default(),
            at,
            [text(4)?, text(5)?, text(6)?, text(7)?],
        )
        .map_err(|what| self.corrupt(format!("event {id}: bad {what}")))?;
        Ok((id, event))
    }
}

/// Pending deliveries by sink, for tests: (sink, id).
#[cfg(test)]
pub(crate) fn pending_of(outbox: &Outbox) -> std::collections::BTreeMap<String, Vec<i64>> {
    outbox
        .pending
        .iter()
        .map(|(sink, events)| (sink.clone(), events.iter().map(|(id, _)| *id).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Settlement;
    use crate::model::event::{Addresses, EventKind};
    use crate::store::NewEvent;

    fn event(kind: EventKind, host: &str, seconds: i64, old: Option<&str>, new: &str) -> Event {
        Event {
            kind,
            host: Name::parse(host).unwrap(),
            at: Time::from_micros(seconds * 1_000_000),
            ipv4: Addresses {
                old: old.map(|addr| addr.parse().unwrap()),
                new: Some(new.parse().unwrap()),
            },
            ipv6: Addresses {
                old: None,
                new: Some("2001:db8::1".parse().unwrap()),
            },
        }
    }

    #[test]
    fn the_outbox_keeps_what_is_pending_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.sqlite3");
        let sinks = ["chat".to_string(), "mail".to_string()];
        let moved = event(
            EventKind::Changed,
            "Kitchen-PC",
            10,
            Some("192.0.2.1"),
            "192.0.2.2",
        );
        let new = event(EventKind::New, "nas", 11, None, "192.0.2.9");
        let stale = Name::parse("attic").unwrap();
        {
            let mut store = Store::open(&path).unwrap();
            assert_eq!(store.outbox().unwrap().next_event, 1);
            let events = [
                NewEvent {
                    id: 1,
                    event: moved.clone(),
                    sinks: vec![0, 1],
                },
                NewEvent {
                    id: 2,
                    event: new.clone(),
                    sinks: vec![1],
                },
            ];
            let stale_rows = [(stale.clone(), Some(Time::from_micros(5)))];
            store
                .commit(&Turn {
                    seq: 1,
                    sink_names: &sinks,
                    events: &events,
                    next_event: 3,
                    stale: &stale_rows,
                    ..Turn::default()
                })
                .unwrap();
            let settled = [Settlement {
                sink: 1,
                ids: vec![1],
                state: DeliveryState::Delivered,
                attempts: 2,
                at: Time::from_micros(20_000_000),
                detail: "HTTP 200".into(),
            }];
            store
                .commit(&Turn {
                    seq: 2,
                    sink_names: &sinks,
                    settled: &settled,
                    ..Turn::default()
                })
                .unwrap();
            store.close_as_crashed();
        }
        let store = Store::open(&path).unwrap();
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.next_event, 3);
        assert_eq!(outbox.stale, std::slice::from_ref(&stale));
        assert_eq!(
            pending_of(&outbox),
            [("chat".to_string(), vec![1]), ("mail".to_string(), vec![2])]
                .into_iter()
                .collect()
        );
        assert_eq!(outbox.pending["chat"][0].1, moved);
        let listed = store.events(None, 10).unwrap();
        assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 1]);
        let first = &listed[1];
        assert_eq!(first.event, moved);
        assert_eq!(
            first
                .deliveries
                .iter()
                .map(|d| (d.sink.as_str(), d.state, d.attempts, d.detail.as_deref()))
                .collect::<Vec<_>>(),
            [
                ("chat", DeliveryState::Pending, 0, None),
                ("mail", DeliveryState::Delivered, 2, Some("HTTP 200"))
            ]
        );
        // By host, as names compare.
        let kitchen = store
            .events(Some(&Name::parse("kitchen-pc").unwrap()), 10)
            .unwrap();
        assert_eq!(kitchen.len(), 1);
        drop(store);

        // The host reports again, and old events go.
        let mut store = Store::open(&path).unwrap();
        let back = [(stale, None)];
        store
            .commit(&Turn {
                seq: 3,
                sink_names: &sinks,
                stale: &back,
                prune_events_before: Some(Time::from_micros(10_500_000)),
                ..Turn::default()
            })
            .unwrap();
        let outbox = store.outbox().unwrap();
        assert!(outbox.stale.is_empty());
        assert_eq!(
            pending_of(&outbox),
            [("mail".to_string(), vec![2])].into_iter().collect()
        );
        assert_eq!(store.events(None, 10).unwrap().len(), 1);
    }
}
