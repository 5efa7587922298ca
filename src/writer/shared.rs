//! The writer on a shared PostgreSQL database (`database_url`): the same jobs, decided
//! the same way ([`Deciding`]), against the database's latest state.
//!
//! Each turn holds the locks of its hosts ([`Database::turn`]; the whole database for a
//! turn with zone updates or new accounts): it reads what other servers committed since
//! its last read and shows it in the table, decides its batch against the table, commits
//! its journal entry, shows its own changes, and only then answers. So the replay rule
//! and good or nochg are decided against every commit of the batch's hosts, whichever
//! server made it, and nothing is acknowledged before it is in the database. The
//! database numbers the commits and the history; this thread keeps only the number it
//! has read through, moved only as far as the store says. A [`Job::Wake`] (the listener
//! heard another server's commit) shows the changes without a lock.
//!
//! When the database does not answer, every job of the turn is refused as not committed
//! (dyndns2 answers `dnserr`, UDP gets no acknowledgement, UPDATE SERVFAIL), the table keeps answering
//! reads, and the next turn tries again ([`Database`] paces the attempts).
//!
//! Must not know SQL (`store::postgres` does), nor change the table or answer a job
//! before the commit that holds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{
    answer, idle_clock, Answers, Deciding, Job, Liveness, Notice, Now, Refused, Verdict, IDLE_TICK,
    MAX_BATCH, QUEUE_LEN,
};
use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::state::metrics::Metrics;
use crate::state::table::{Entry, Table};
use crate::store::postgresql::{Changes, Database, NoticeWrites, Writes};

/// What the shared writer starts from.
pub struct SharedSetup {
    pub database: Database,
    pub table: Arc<Table>,
    /// The last commit the table shows (from [`Database::load`]).
    pub last_seq: i64,
    pub metrics: Arc<Metrics>,
    pub liveness: Arc<Liveness>,
    /// Set by the listener when it sends a [`Job::Wake`], cleared when the writer takes
    /// it: one wake-up queued at a time, however many commits it covers.
    pub wake_pending: Arc<AtomicBool>,
    /// With sinks: the notifications' part of each turn.
    pub notice: Option<Notice>,
}

/// Starts the shared writer thread.
///
/// # Errors
/// When the OS cannot start a thread.
pub fn spawn_shared(setup: SharedSetup) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let liveness = Arc::clone(&setup.liveness);
    let mut writer = SharedWriter {
        database: setup.database,
        table: setup.table,
        last_seq: setup.last_seq,
        metrics: setup.metrics,
        wake_pending: setup.wake_pending,
        notice: setup.notice,
        down: false,
    };
    let handle = std::thread::Builder::new()
        .name("dynip-writer".to_string())
        .spawn(move || writer.run(rx, &liveness))?;
    Ok((tx, handle))
}

struct SharedWriter {
    database: Database,
    table: Arc<Table>,
    last_seq: i64,
    metrics: Arc<Metrics>,
    wake_pending: Arc<AtomicBool>,
    notice: Option<Notice>,
    /// The last turn could not reach the database: logged once, until it answers again.
    down: bool,
}

impl SharedWriter {
    fn run(&mut self, mut rx: mpsc::Receiver<Job>, liveness: &Liveness) {
        let idle = idle_clock(self.notice.is_some());
        loop {
            let first = match &idle {
                Some(idle) => {
                    match idle.block_on(async { tokio::time::timeout(IDLE_TICK, rx.recv()).await })
                    {
                        Ok(Some(job)) => Some(job),
                        Ok(None) => break,
                        Err(_) => None,
                    }
                }
                None => match rx.blocking_recv() {
                    Some(job) => Some(job),
                    None => break,
                },
            };
            let wants_turn = self
                .notice
                .as_ref()
                .is_some_and(|notice| notice.wants_turn(Instant::now()));
            if first.is_none() && !wants_turn {
                continue;
            }
            let mut jobs = Vec::with_capacity(64);
            jobs.extend(first);
            while !jobs.is_empty() && jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            liveness.turn_starts();
            self.turn(jobs);
            liveness.turn_ends();
        }
        // What the sinks delivered is written down, so that a restart does not send it
        // again.
        if self.notice.as_ref().is_some_and(Notice::has_settlements) {
            self.turn(Vec::new());
        }
        debug!("writer stops: no more reports");
    }

    fn turn(&mut self, jobs: Vec<Job>) {
        let mut reports = Vec::with_capacity(jobs.len());
        let mut updates = Vec::new();
        let mut registrations = Vec::new();
        let mut woken = false;
        for job in jobs {
            match job {
                Job::Report(report) => reports.push(report),
                Job::Update(update) => updates.push(update),
                Job::Register(registration) => registrations.push(registration),
                Job::Wake => woken = true,
            }
        }
        if woken {
            self.wake_pending.store(false, Ordering::Release);
        }
        let noticing = self
            .notice
            .as_ref()
            .is_some_and(|notice| notice.wants_turn(Instant::now()));
        if reports.is_empty() && updates.is_empty() && registrations.is_empty() && !noticing {
            self.catch_up();
            return;
        }
        let now = Now::read();
        let accounts: Vec<AcmeAccount> = registrations
            .iter()
            .map(|registration| registration.account.clone())
            .collect();
        let at = Time::now();
        // With sinks, the hosts reported are no longer stale, whoever announced it.
        let (sink_names, reported): (Vec<String>, Vec<String>) = match &self.notice {
            Some(notice) => (
                notice.sink_names().to_vec(),
                reports
                    .iter()
                    .map(|report| report.name.folded().to_string())
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let table = &self.table;
        let notice = &mut self.notice;
        let health = self.database.health();
        let n_jobs = reports.len() + updates.len();
        let started = Instant::now();
        // Reports alone lock only their hosts; zone updates and new accounts, which read
        // and write more, lock the whole database.
        let keys: Vec<&str> = reports.iter().map(|report| report.name.folded()).collect();
        let only = (updates.is_empty() && registrations.is_empty()).then_some(keys.as_slice());
        let turned = self.database.turn(
            self.last_seq,
            only,
            |changes| {
                if changes.last.is_some() {
                    health.learned(changes.len());
                }
                show(table, changes);
                // Reports first, then the updates, each seeing what those before did.
                let mut events = Vec::new();
                let decided = {
                    let noticing = notice.as_ref();
                    let mut deciding = Deciding::new(
                        |name: &Name| table.find(name).map(|(slot, entry)| (slot, entry.record)),
                        |name: &Name| table.txt(name),
                        0,
                        |name: &Name, at, before: Option<&Record>, after: &Record| {
                            if let Some(notice) = noticing {
                                notice.applied(name, before, after, at, &mut events);
                            }
                        },
                    );
                    for report in &reports {
                        deciding.report(report);
                    }
                    for update in &updates {
                        deciding.update(update);
                    }
                    deciding.finish(0)
                };
                let noticed = notice
                    .as_mut()
                    .map(|notice| notice.notice(events, &decided.records, table, now));
                (decided, accounts, noticed, sink_names, reported)
            },
            |(decided, accounts, noticed, sink_names, reported)| Writes {
                records: &decided.records,
                history: &decided.history,
                txt: &decided.txt,
                accounts,
                n_reports: decided
                    .verdicts
                    .iter()
                    .filter(|&&verdict| verdict != Verdict::Replayed)
                    .count() as u64,
                at,
                notice: noticed.as_ref().map(|noticed| NoticeWrites {
                    sink_names: sink_names.as_slice(),
                    events: &noticed.events,
                    settled: &noticed.settled,
                    stale: &noticed.stale,
                    reported,
                    prune_before: noticed.prune_before,
                }),
            },
        );
        if n_jobs > 0 {
            self.metrics.committed(n_jobs, started.elapsed());
        }
        self.last_seq = self.last_seq.max(turned.through);
        let (decided, outcome) = match (turned.decided, turned.committed) {
            (Some((decided, accounts, noticed, _, _)), Ok(seq)) => {
                self.reachable();
                if let (Some(notice), Some(mut noticed)) = (&mut self.notice, noticed) {
                    // The database's ids; a staleness another server announced first
                    // is not handed to the sinks.
                    let mut ids = turned.event_ids.iter();
                    noticed.events.retain_mut(|new| match ids.next() {
                        Some(Some(id)) => {
                            new.id = *id;
                            true
                        }
                        _ => false,
                    });
                    notice.committed(noticed, now);
                }
                let records =
                    decided
                        .slots
                        .iter()
                        .zip(&decided.records)
                        .map(|(&slot, (name, entry))| {
                            let entry = Entry {
                                seq,
                                dirty: false,
                                ..*entry
                            };
                            (slot, name.clone(), entry)
                        });
                let mut dns_changed = self.table.update_found(records);
                dns_changed |= !decided.txt.is_empty();
                self.table.set_txt(&decided.txt);
                self.table.add_acme_accounts(&accounts);
                let shown_at = Time::now();
                if dns_changed {
                    self.table.note_dns_commit(at, shown_at);
                }
                (Some(decided), Ok(shown_at))
            }
            (decided, res) => {
                let e = res.err();
                self.unreachable(e.as_ref().map(ToString::to_string));
                let decided = decided.map(|(decided, _, noticed, _, _)| {
                    if let (Some(notice), Some(noticed)) = (&mut self.notice, noticed) {
                        notice.not_committed(noticed);
                    }
                    decided
                });
                (decided, Err(Refused::CommitFailed))
            }
        };
        let (verdicts, update_verdicts) = match decided {
            Some(decided) => (decided.verdicts, decided.update_verdicts),
            // Not decided: every job is answered as not committed.
            None => (
                vec![Verdict::Unchanged; reports.len()],
                updates.iter().map(|update| Ok(update.at)).collect(),
            ),
        };
        answer(
            Answers {
                reports,
                verdicts,
                updates,
                update_verdicts,
                registrations,
            },
            outcome,
        );
    }

    /// Reads and shows what other servers committed since the last turn.
    fn catch_up(&mut self) {
        match self.database.changes_since(self.last_seq) {
            Ok(changes) => {
                self.reachable();
                if let Some((seq, _)) = changes.last {
                    self.database.health().learned(changes.len());
                    self.last_seq = seq;
                    show(&self.table, changes);
                }
            }
            Err(e) => self.unreachable(Some(e.to_string())),
        }
    }

    fn reachable(&mut self) {
        if self.down {
            self.down = false;
            info!(database = %self.database.shown(), "the database answers again; writes resume");
        }
    }

    fn unreachable(&mut self, error: Option<String>) {
        if !self.down {
            self.down = true;
            error!(
                database = %self.database.shown(),
                error = error.as_deref().unwrap_or("a row that does not decode"),
                "the database does not answer: refusing writes, answering reads from memory"
            );
        } else if let Some(error) = error {
            debug!(%error, "the database still does not answer");
        }
    }
}

/// Shows committed changes in the table (other servers', or the latest rows of a
/// batch's hosts), and notes them for the serial at the last commit's time.
fn show(table: &Table, changes: Changes) {
    let at = changes.last.map_or_else(Time::now, |(_, at)| at);
    let n = changes.len();
    // A record is its entry's transaction's (`seq`): one the table has a later one of
    // (a read again, below the horizon) is not shown over it.
    let records: Vec<_> = changes
        .hosts
        .into_iter()
        .filter_map(|(name, entry)| match table.find(&name) {
            Some((_, current)) if current.seq >= entry.seq => None,
            found => Some((found.map(|(slot, _)| slot), name, entry)),
        })
        .collect();
    let mut dns_changed = table.update_found(records);
    dns_changed |= !changes.txt.is_empty();
    table.set_txt(&changes.txt);
    table.add_acme_accounts(&changes.accounts);
    if dns_changed {
        table.note_dns_commit(at, Time::now());
    }
    if n > 0 {
        debug!(n_changes = n, "showing other servers' commits");
    }
    if n > 100_000 {
        warn!(
            n_changes = n,
            "a large catch-up: was this server away long?"
        );
    }
}
