//! The writer's part in notifications: finding each turn's events and writing them into
//! the outbox in the turn's transaction, so that nothing committed goes unannounced.
//!
//! A report's events come from what it changed (`events_of_report`); a host's going
//! stale from a scan of the table, a chunk per turn, every [`STALE_SCAN_EVERY`] at most.
//! A host announced stale is written down (`stale_hosts`), so that a restart does not
//! announce it again, until it reports. Only the sinks' threads deliver: after the
//! commit, each sink is handed the new events it wants; what they finish comes back
//! through [`Settlements`] and is written down in a later turn.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::event::{events_of_report, stale_since, Addresses, Event, EventKind, Settlement};
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::proto::notify::SinkFilter;
use crate::state::outbox::Settlements;
use crate::state::table::{Entry, Table};
use crate::store::NewEvent;

use super::Now;

/// The longest a host's going stale waits to be noticed; a shorter `stale_after` scans
/// more often (a sixtieth of it, at least every second).
pub const STALE_SCAN_EVERY: Duration = Duration::from_secs(60);

/// Hosts the stale scan looks at per turn: a few milliseconds of the writer's time.
const STALE_SCAN_CHUNK: usize = 4096;

/// How often a turn deletes a chunk of old events.
const PRUNE_EVENTS_EVERY: Duration = Duration::from_secs(10);

/// One sink, as the writer sees it: its name, what it wants, and where its new events go.
pub struct Outlet {
    pub name: String,
    pub filter: SinkFilter,
    pub events: Sender<(i64, Event)>,
}

/// The writer's notification state.
pub struct Notice {
    sink_names: Vec<String>,
    filters: Vec<SinkFilter>,
    outlets: Vec<Sender<(i64, Event)>>,
    stale_after: Duration,
    /// Events older than this are deleted (delivered or not: by then every one is
    /// settled, since `notify_max_age` is no longer).
    keep: Duration,
    /// Hosts announced stale that have not reported since.
    announced: HashSet<Name>,
    next_event: i64,
    settlements: Arc<Settlements>,
    /// Where the stale scan goes on from while one is under way.
    scan_after: Option<Name>,
    /// When the next scan starts.
    next_scan: Instant,
    next_prune: Instant,
}

/// One turn's notification rows, ready for the commit.
#[derive(Debug, Default)]
pub(super) struct Noticed {
    pub events: Vec<NewEvent>,
    pub next_event: i64,
    pub settled: Vec<Settlement>,
    pub stale: Vec<(Name, Option<Time>)>,
    pub prune_before: Option<Time>,
    /// Where the scan goes on from after this turn: `None` when it is done.
    scanned_to: Option<Option<Name>>,
}

impl Notice {
    /// `next_event` and `announced` as the store left them.
    pub fn new(
        outlets: Vec<Outlet>,
        stale_after: Duration,
        keep: Duration,
        next_event: i64,
        announced: Vec<Name>,
        settlements: Arc<Settlements>,
        now: Instant,
    ) -> Notice {
        let (sink_names, (filters, outlets)) = outlets
            .into_iter()
            .map(|outlet| (outlet.name, (outlet.filter, outlet.events)))
            .unzip();
        Notice {
            sink_names,
            filters,
            outlets,
            stale_after,
            keep,
            announced: announced.into_iter().collect(),
            next_event,
            settlements,
            scan_after: None,
            // The first scan at once: hosts that went stale while the server was down.
            next_scan: now,
            next_prune: now,
        }
    }

    pub(super) fn sink_names(&self) -> &[String] {
        &self.sink_names
    }

    /// How often the stale scan runs.
    fn scan_every(&self) -> Duration {
        (self.stale_after / 60).clamp(Duration::from_secs(1), STALE_SCAN_EVERY)
    }

    fn scan_due(&self, now: Instant) -> bool {
        self.scan_after.is_some() || now >= self.next_scan
    }

    /// Whether an idle writer has a turn to take at `now`: deliveries to write down, a
    /// scan or a prune due.
    pub(super) fn wants_turn(&self, now: Instant) -> bool {
        self.settlements.is_waiting() || self.scan_due(now) || now >= self.next_prune
    }

    /// Whether the sinks finished deliveries the store does not know of yet.
    pub(super) fn has_settlements(&self) -> bool {
        self.settlements.is_waiting()
    }

    /// The events of a report that turned `before` into `after`, appended to `events`.
    pub(super) fn applied(
        &self,
        host: &Name,
        before: Option<&Record>,
        after: &Record,
        at: Time,
        events: &mut Vec<Event>,
    ) {
        events_of_report(host, before, after, at, self.stale_after, events);
    }

    /// The turn's rows: `events` (the batch's, in order) numbered and given their sinks,
    /// the hosts among `records` (the batch's) that come back from being announced
    /// stale, a chunk of the stale scan when one is due, what the sinks finished, and a
    /// chunk of old events to delete.
    pub(super) fn notice(
        &mut self,
        events: Vec<Event>,
        records: &[(Name, Entry)],
        table: &Table,
        now: Now,
    ) -> Noticed {
        let mut noticed = Noticed {
            settled: self.settlements.take(),
            next_event: self.next_event,
            ..Noticed::default()
        };
        for (name, _) in records {
            if self.announced.contains(name) {
                noticed.stale.push((name.clone(), None));
            }
        }
        let mut events = events;
        if self.scan_due(now.instant) {
            let chunk = table.chunk_after(self.scan_after.as_ref(), STALE_SCAN_CHUNK);
            let reported: HashSet<&Name> = records.iter().map(|(name, _)| name).collect();
            for (name, entry) in &chunk {
                if self.announced.contains(name) || reported.contains(name) {
                    continue;
                }
                let Some(since) = stale_since(&entry.record, now.time, self.stale_after) else {
                    continue;
                };
                let v4 = entry.record.v4.map(|seen| seen.addr);
                let v6 = entry.record.v6.map(|seen| seen.addr);
                events.push(Event {
                    kind: EventKind::Stale,
                    host: name.clone(),
                    at: since,
                    ipv4: Addresses { old: v4, new: v4 },
                    ipv6: Addresses { old: v6, new: v6 },
                });
                noticed.stale.push((name.clone(), Some(since)));
            }
            noticed.scanned_to = Some(match chunk.len() {
                n if n == STALE_SCAN_CHUNK => chunk.last().map(|(name, _)| name.clone()),
                _ => None,
            });
        }
        for event in events {
            let sinks: Vec<usize> = self
                .filters
                .iter()
                .enumerate()
                .filter(|(_, filter)| filter.wants(&event))
                .map(|(index, _)| index)
                .collect();
            if sinks.is_empty() {
                continue;
            }
            noticed.events.push(NewEvent {
                id: noticed.next_event,
                event,
                sinks,
            });
            noticed.next_event += 1;
        }
        if now.instant >= self.next_prune {
            let keep = i64::try_from(self.keep.as_micros()).unwrap_or(i64::MAX);
            noticed.prune_before =
                Some(Time::from_micros(now.time.as_micros().saturating_sub(keep)));
        }
        noticed
    }

    /// After the commit that wrote `noticed`: hands each sink its new events, and moves
    /// the scan on.
    pub(super) fn committed(&mut self, noticed: Noticed, now: Now) {
        self.next_event = noticed.next_event;
        for (name, since) in noticed.stale {
            match since {
                Some(_) => self.announced.insert(name),
                None => self.announced.remove(&name),
            };
        }
        for new in noticed.events {
            for &sink in &new.sinks {
                // A sink whose thread is gone has nothing to hand to: its events wait in
                // the store for the next start.
                let _ = self.outlets[sink].send((new.id, new.event.clone()));
            }
        }
        if let Some(scanned_to) = noticed.scanned_to {
            if scanned_to.is_none() {
                self.next_scan = now.instant + self.scan_every();
            }
            self.scan_after = scanned_to;
        }
        if noticed.prune_before.is_some() {
            self.next_prune = now.instant + PRUNE_EVENTS_EVERY;
        }
    }

    /// After a commit that failed: what the sinks finished waits for the next turn; the
    /// events were not written and their reports not acknowledged; the scan tries again.
    pub(super) fn not_committed(&mut self, noticed: Noticed) {
        self.settlements.put_back(noticed.settled);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};

    use super::*;
    use crate::model::event::{DeliveryState, EventKind};
    use crate::state::metrics::Metrics;
    use crate::store::Store;
    use crate::writer::{compaction::Limits, Job, Recent, Report, Writer};

    const STALE_AFTER: Duration = Duration::from_secs(100);

    fn report(name: &str, addr: &str, seconds: i64) -> Report {
        Report {
            name: Name::parse(name).unwrap(),
            addr: addr.parse().unwrap(),
            at: Time::from_micros(seconds * 1_000_000),
            signed_at: None,
            offline: false,
            done: None,
        }
    }

    struct Rig {
        writer: Writer,
        every: Receiver<(i64, Event)>,
        stale_only: Receiver<(i64, Event)>,
        settlements: Arc<Settlements>,
        start: Instant,
    }

    impl Rig {
        /// A writer over the store at `path` with two sinks: `every` hears every event,
        /// `stale` only stale ones.
        fn open(path: &std::path::Path, start: Instant) -> Rig {
            let store = Store::open(path).unwrap();
            let loaded = store.load().unwrap();
            let outbox = store.outbox().unwrap();
            let table = Arc::new(Table::new(loaded.hosts));
            let mut writer = Writer::new(
                store,
                table,
                loaded.progress,
                Arc::new(Recent::default()),
                Arc::new(Metrics::default()),
                None,
                Limits::default(),
            );
            let (every_tx, every) = channel();
            let (stale_tx, stale_only) = channel();
            let settlements = Arc::new(Settlements::default());
            let outlets = vec![
                Outlet {
                    name: "every".into(),
                    filter: SinkFilter::all(),
                    events: every_tx,
                },
                Outlet {
                    name: "stale".into(),
                    filter: SinkFilter {
                        events: vec![EventKind::Stale],
                        ..SinkFilter::all()
                    },
                    events: stale_tx,
                },
            ];
            writer.notice = Some(Notice::new(
                outlets,
                STALE_AFTER,
                Duration::from_secs(3600),
                outbox.next_event,
                outbox.stale,
                Arc::clone(&settlements),
                start,
            ));
            Rig {
                writer,
                every,
                stale_only,
                settlements,
                start,
            }
        }

        fn turn(&mut self, batch: Vec<Report>, seconds: i64) {
            let now = Now {
                time: Time::from_micros(seconds * 1_000_000),
                instant: self.start + Duration::from_secs(seconds as u64),
            };
            self.writer
                .turn(batch.into_iter().map(Job::from).collect(), now);
        }

        fn heard(receiver: &Receiver<(i64, Event)>) -> Vec<(i64, EventKind, String)> {
            receiver
                .try_iter()
                .map(|(id, event)| (id, event.kind, event.host.to_string()))
                .collect()
        }
    }

    #[test]
    fn events_are_committed_then_handed_to_the_sinks_that_want_them() {
        use EventKind::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.sqlite3");
        let start = Instant::now();
        let mut rig = Rig::open(&path, start);
        rig.turn(vec![report("pc", "192.0.2.1", 10)], 10);
        rig.turn(
            vec![
                report("pc", "192.0.2.2", 20),
                report("nas", "192.0.2.9", 20),
            ],
            20,
        );
        assert_eq!(
            Rig::heard(&rig.every),
            [
                (1, New, "pc".into()),
                (2, Changed, "pc".into()),
                (3, New, "nas".into())
            ]
        );
        assert!(Rig::heard(&rig.stale_only).is_empty());

        // Past stale_after with no report: the scan (due every second here) finds both.
        rig.turn(vec![], 20 + 101);
        let stale = [(4, Stale, "nas".into()), (5, Stale, "pc".into())];
        assert_eq!(Rig::heard(&rig.every), stale);
        assert_eq!(Rig::heard(&rig.stale_only), stale);
        rig.turn(vec![], 20 + 200);
        assert!(Rig::heard(&rig.every).is_empty(), "announced once");

        // The sinks finish some; the next turn writes it down.
        rig.settlements.push([Settlement {
            sink: 0,
            ids: vec![1, 2, 3],
            state: DeliveryState::Delivered,
            attempts: 1,
            at: Time::from_micros(300_000_000),
            detail: "HTTP 204".into(),
        }]);
        rig.turn(vec![], 300);
        drop(rig);

        // A restart: the stale hosts stay announced, the rest is still pending.
        let mut rig = Rig::open(&path, start);
        let outbox = Store::open_read_only(&path).unwrap().outbox().unwrap();
        assert_eq!(outbox.next_event, 6);
        assert_eq!(
            crate::store::outbox_pending_of(&outbox),
            [
                ("every".to_string(), vec![4, 5]),
                ("stale".to_string(), vec![4, 5])
            ]
            .into_iter()
            .collect()
        );
        rig.turn(vec![], 400);
        assert!(Rig::heard(&rig.every).is_empty(), "not announced again");
        rig.turn(vec![report("pc", "192.0.2.2", 500)], 500);
        assert_eq!(Rig::heard(&rig.every), [(6, Back, "pc".into())]);
        drop(rig);
        let outbox = Store::open_read_only(&path).unwrap().outbox().unwrap();
        assert_eq!(outbox.stale, [Name::parse("nas").unwrap()]);
    }
}
