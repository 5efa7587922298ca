//! The store's one writer: a thread that owns the [`Store`] and commits reports in batches.
//!
//! Handlers send [`Report`]s on a bounded channel. The writer takes one, drains what else
//! is queued (up to [`MAX_BATCH`]), commits them all in one transaction (group commit),
//! then updates the in-memory table and calls each report's `done`. So nothing reads a
//! record before it is durable, and no report is acknowledged before its commit.
//!
//! The writer is where the replay rule is decided, since it alone sees every report in
//! order: a signed report whose client time is not later than the host's last one is
//! refused, and changes nothing. The decision on a batch is `Deciding`
//! (`writer/decide.rs`), a pure function of the batch and the current records; the
//! thread reads the clock once per turn and passes it in (`Now`).
//!
//! Each commit also carries a step of the compaction, in the same transaction: a chunk of
//! the sweep that folds the journal into the snapshot and settles address changes into
//! the store's history, and with `history_max_age` a chunk of the history's oldest
//! changes to delete. The state machine is in `compaction` (`writer/compaction.rs`).
//!
//! The writer exits when the last sender is dropped, after committing what was queued.
//!
//! Must not know SQL (the store does), nor change the table or answer a report before
//! the commit that holds it (`writer/crash_tests.rs` checks both at every step).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::{Change, Record, Time};
use crate::model::txt::Txt;
use crate::state::metrics::Metrics;
use crate::state::table::{Dirty, Entry, Slot, Table};
use crate::store::{
    crash_point, CrashPoint, HistoryRow, LoggedChange, Progress, Removed, Store, Turn,
};

mod compaction;
#[cfg(test)]
mod crash_tests;
mod decide;
mod notice;
mod shared;
mod update;

pub use compaction::Recent;
use compaction::{hold, logged, Limits, Phase, Prune, Sweep, SWEEP_SCAN_PER_CHUNK_ENTRY};
pub(crate) use decide::{Deciding, Verdict};
pub use notice::{Notice, Outlet, STALE_SCAN_EVERY};
pub use shared::{spawn_shared, SharedSetup};
pub use update::{
    Registration, RegistrationDone, UpdateDone, UpdateOutcome, UpdateRefused, ZoneUpdate,
};

/// The most reports in one transaction. At 100,000 reports/s a full batch is 40 ms of
/// traffic; larger batches save little (one fsync is about 0.2 ms here) and delay acks.
pub const MAX_BATCH: usize = 4096;
/// Reports that may wait for the writer. When full, receivers wait, and the kernel's socket
/// buffer holds the rest: backpressure instead of unbounded memory.
pub const QUEUE_LEN: usize = 4 * MAX_BATCH;

/// One job for the writer: a report, or an update of the zone.
#[derive(Debug)]
pub enum Job {
    /// A host's report of its address.
    Report(Report),
    /// A change of the zone's records (RFC 2136 UPDATE, acme-dns, dyndns2 `txt=`).
    Update(ZoneUpdate),
    /// A new acme-dns account.
    Register(Registration),
    /// Another server committed (on a shared database): read and show its changes.
    Wake,
}

impl From<Report> for Job {
    fn from(report: Report) -> Job {
        Job::Report(report)
    }
}

/// One report for the writer.
pub struct Report {
    pub name: Name,
    /// The source address of the datagram or request.
    pub addr: IpAddr,
    /// When the server received it.
    pub at: Time,
    /// For a signed report, the client's time in it: the replay rule's input.
    pub signed_at: Option<Time>,
    /// The report says the host is going offline (dyndns2 `offline=YES`); any other
    /// report brings it back.
    pub offline: bool,
    /// Called after the commit (`Ok`) or with why the report was not committed; `None`
    /// for reports nobody waits on (the original's datagrams).
    pub done: Option<Done>,
}

/// What the edge that received a report does once the writer has decided on it (send an
/// acknowledgement, answer a request). Called on the writer thread: it must not block.
pub type Done = Box<dyn FnOnce(Outcome) + Send>;

/// What the writer decided on a report.
pub type Outcome = Result<Committed, Refused>;

/// A committed report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// When its batch committed.
    pub at: Time,
    /// The report changed its host's record beyond the last-seen time: a new address,
    /// or into or out of offline (dyndns2 answers `good`, not `nochg`).
    pub changed: bool,
}

/// Why a report was not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("replayed: not later than the host's last signed report")]
    Replayed,
    #[error("the store could not commit the report")]
    CommitFailed,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("at", &self.at)
            .field("signed_at", &self.signed_at)
            .field("offline", &self.offline)
            .field("waited_on", &self.done.is_some())
            .finish()
    }
}

/// Whether the writer is making progress, for the service manager's watchdog: how long
/// it has been inside its current turn. A writer waiting for reports is not busy, so an
/// idle server is alive; one whose commit hangs (a dead disk, a store locked by another
/// program) is busy for ever longer.
#[derive(Debug)]
pub struct Liveness {
    /// What `busy_since_ms` counts from.
    epoch: Instant,
    /// Milliseconds from `epoch` to the start of the current turn, plus one; 0 between
    /// turns.
    busy_since_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            epoch: Instant::now(),
            busy_since_ms: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// How long the writer has been inside its current turn; `None` between turns.
    pub fn busy_for(&self) -> Option<std::time::Duration> {
        let since = self.busy_since_ms.load(Ordering::Relaxed).checked_sub(1)?;
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(std::time::Duration::from_millis(now.saturating_sub(since)))
    }

    fn turn_starts(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.busy_since_ms.store(now + 1, Ordering::Relaxed);
    }

    fn turn_ends(&self) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
    }
}

/// What the writer thread starts from.
pub struct Setup {
    pub store: Store,
    pub table: Arc<Table>,
    /// Where the store's journal left off.
    pub progress: Progress,
    /// Where `progress`'s unsettled changes go.
    pub recent: Arc<Recent>,
    /// Each commit's batch size and latency.
    pub metrics: Arc<Metrics>,
    /// Each turn's start and end.
    pub liveness: Arc<Liveness>,
    /// With it, older changes are pruned from the history.
    pub history_max_age: Option<std::time::Duration>,
    /// With sinks: the notifications' part of each turn.
    pub notice: Option<Notice>,
}

/// Starts the writer thread.
///
/// # Errors
/// When the OS cannot start a thread.
pub fn spawn(setup: Setup) -> std::io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let mut writer = Writer::new(
        setup.store,
        setup.table,
        setup.progress,
        setup.recent,
        setup.metrics,
        setup
            .history_max_age
            .map(|max_age| Prune::new(max_age, Instant::now())),
        Limits::default(),
    );
    writer.notice = setup.notice;
    let liveness = setup.liveness;
    let handle = std::thread::Builder::new()
        .name("dynip-writer".to_string())
        .spawn(move || writer.run(rx, &liveness))?;
    Ok((tx, handle))
}

/// The clock, read once per turn by the writer thread and passed into the turn, whose
/// decisions read no clock of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// The wall clock: what the history's times are compared with.
    pub time: Time,
    /// The monotonic clock: what paces the prune (a wall clock set back must not stop it).
    pub instant: Instant,
}

impl Now {
    fn read() -> Now {
        Now {
            time: Time::now(),
            instant: Instant::now(),
        }
    }
}

struct Writer {
    store: Store,
    table: Arc<Table>,
    /// The next journal entry's sequence number.
    next_seq: i64,
    /// Records in the journal, not yet folded into the snapshot.
    journal_records: u64,
    /// The next history row's id.
    next_history_id: i64,
    /// Each host's changes not yet settled into `history`: the sweep settles them when
    /// it writes the host.
    recent: Arc<Recent>,
    /// The changes in `recent`.
    n_unsettled: u64,
    sweep: Option<Sweep>,
    limits: Limits,
    metrics: Arc<Metrics>,
    prune: Option<Prune>,
    /// With sinks configured: the events of each turn, for the outbox.
    notice: Option<Notice>,
}

/// How long an idle writer with sinks waits for a report before it looks at what the
/// sinks finished and whether a host went stale.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

impl Writer {
    /// A writer going on from `progress`, with its unsettled changes put into `recent`.
    fn new(
        store: Store,
        table: Arc<Table>,
        progress: Progress,
        recent: Arc<Recent>,
        metrics: Arc<Metrics>,
        prune: Option<Prune>,
        limits: Limits,
    ) -> Writer {
        let n_unsettled = progress.unsettled.len() as u64;
        hold(&mut recent.lock(), progress.unsettled);
        metrics.backlog(progress.journal_records, n_unsettled);
        Writer {
            store,
            table,
            next_seq: progress.next_seq,
            journal_records: progress.journal_records,
            next_history_id: progress.next_history_id,
            n_unsettled,
            recent,
            sweep: None,
            limits,
            metrics,
            prune,
            notice: None,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>, liveness: &Liveness) {
        // A clock to wait on, for a writer with sinks.
        let idle = idle_clock(self.notice.is_some());
        loop {
            let busy = self.sweep.is_some()
                || self
                    .notice
                    .as_ref()
                    .is_some_and(|notice| notice.wants_turn(Instant::now()));
            let first = if busy {
                match rx.try_recv() {
                    Ok(report) => Some(report),
                    // Nothing queued: a turn of sweeping alone.
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else if let Some(idle) = &idle {
                // With sinks, an idle writer still has turns to take (`wants_turn`).
                // The timer is made inside `block_on`: it needs the runtime's clock.
                match idle.block_on(async { tokio::time::timeout(IDLE_TICK, rx.recv()).await }) {
                    Ok(Some(report)) => Some(report),
                    Ok(None) => break,
                    Err(_) => continue,
                }
            } else {
                match rx.blocking_recv() {
                    Some(report) => Some(report),
                    None => break,
                }
            };
            let mut batch = Vec::with_capacity(64);
            batch.extend(first);
            while !batch.is_empty() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
            }
            liveness.turn_starts();
            self.turn(batch, Now::read());
            liveness.turn_ends();
            self.start_sweep_if_due();
        }
        // What the sinks delivered is written down, so that a restart does not send it
        // again (it would be at least once anyway; this makes it once when it can).
        if self.notice.as_ref().is_some_and(Notice::has_settlements) {
            self.turn(Vec::new(), Now::read());
        }
        debug!("writer stops: no more reports");
    }

    /// After a turn: a sweep starts when the journal or the unsettled changes outgrew
    /// their share.
    fn start_sweep_if_due(&mut self) {
        if self.sweep.is_none()
            && self
                .limits
                .sweep_due(self.journal_records, self.n_unsettled, self.table.len())
        {
            debug!(
                journal_records = self.journal_records,
                "compaction sweep starts"
            );
            self.sweep = Some(Sweep {
                start: self.next_seq,
                phase: Phase::Scan { after: None },
            });
        }
    }

    /// One transaction: the batch, and a step of the sweep if one is under way, and of
    /// the prune if one is due at `now`.
    fn turn(&mut self, jobs: Vec<Job>, now: Now) {
        let mut events = Vec::new();
        let table = &self.table;
        let notice = &self.notice;
        let mut batch = Vec::with_capacity(jobs.len());
        let mut updates = Vec::new();
        let mut registrations = Vec::new();
        for job in jobs {
            match job {
                Job::Report(report) => batch.push(report),
                Job::Update(update) => updates.push(update),
                Job::Register(registration) => registrations.push(registration),
                // Sent only on a shared database (`shared`).
                Job::Wake => {}
            }
        }
        let accounts: Vec<AcmeAccount> = registrations
            .iter()
            .map(|registration| registration.account.clone())
            .collect();
        // Reports first, then the updates, each seeing what those before it did.
        let mut deciding = Deciding::new(
            |name: &Name| table.find(name).map(|(slot, entry)| (slot, entry.record)),
            |name: &Name| table.txt(name),
            self.next_history_id,
            |name: &Name, at, before: Option<&Record>, after: &Record| {
                if let Some(notice) = notice {
                    notice.applied(name, before, after, at, &mut events);
                }
            },
        );
        for report in &batch {
            deciding.report(report);
        }
        for update in &updates {
            deciding.update(update);
        }
        let decided = deciding.finish(self.next_seq);
        let noticed = self
            .notice
            .as_mut()
            .map(|notice| notice.notice(events, &decided.records, &self.table, now));
        let no_sinks: &[String] = &[];
        let seq = self.next_seq;
        let Dirty {
            entries: snapshot,
            slots: snapshot_slots,
            scanned_to,
        } = match &self.sweep {
            Some(Sweep {
                phase: Phase::Scan { after },
                ..
            }) => {
                let chunk = self.limits.sweep_chunk(batch.len());
                self.table
                    .dirty_after(after.as_ref(), chunk, SWEEP_SCAN_PER_CHUNK_ENTRY * chunk)
            }
            _ => Dirty::default(),
        };
        let settle: Vec<LoggedChange> = {
            let by_host = self.recent.lock();
            snapshot
                .iter()
                .filter_map(|(name, _)| by_host.get_key_value(name))
                .flat_map(|(name, changes)| logged(name, changes))
                .collect()
        };
        let drop_before = match &self.sweep {
            Some(Sweep {
                start,
                phase: Phase::Drop,
            }) => Some(*start),
            _ => None,
        };
        let n_committed = decided
            .verdicts
            .iter()
            .filter(|&&verdict| verdict != Verdict::Replayed)
            .count();
        let turn = Turn {
            seq,
            records: &decided.records,
            history: &decided.history,
            n_reports: n_committed as u64,
            snapshot: &snapshot,
            settle: &settle,
            drop_before,
            prune_before: self.prune.as_ref().and_then(|prune| prune.before(now)),
            sink_names: self.notice.as_ref().map_or(no_sinks, Notice::sink_names),
            events: noticed.as_ref().map_or(&[], |noticed| &noticed.events),
            next_event: noticed.as_ref().map_or(0, |noticed| noticed.next_event),
            settled: noticed.as_ref().map_or(&[], |noticed| &noticed.settled),
            stale: noticed.as_ref().map_or(&[], |noticed| &noticed.stale),
            prune_events_before: noticed.as_ref().and_then(|noticed| noticed.prune_before),
            txt: &decided.txt,
            txt_at: now.time,
            accounts: &accounts,
        };
        let pruning = turn.prune_before.is_some();
        crash_point(CrashPoint::BeforeCommit);
        // The commit's latency, for the metrics: measured, not a decision's input.
        let started = Instant::now();
        let committed = self.store.commit(&turn);
        if !batch.is_empty() || !updates.is_empty() {
            self.metrics
                .committed(batch.len() + updates.len(), started.elapsed());
        }
        let outcome = match committed {
            Ok(Removed {
                n_dropped,
                n_pruned,
            }) => {
                if !decided.records.is_empty() {
                    self.next_seq += 1;
                }
                // `settle` is every held change of the chunk's hosts, copied out of
                // `recent` under its lock, and only this thread changes `recent`: it is
                // part of what `n_unsettled` counts.
                debug_assert!(settle.len() as u64 <= self.n_unsettled);
                self.n_unsettled = self.n_unsettled.saturating_sub(settle.len() as u64)
                    + decided.history.len() as u64;
                self.next_history_id += decided.history.len() as i64;
                {
                    let mut by_host = self.recent.lock();
                    for (name, _) in &snapshot {
                        by_host.remove(name);
                    }
                    hold(&mut by_host, decided.history);
                }
                self.journal_records =
                    (self.journal_records + decided.records.len() as u64).saturating_sub(n_dropped);
                if pruning {
                    self.pruned(n_pruned, now);
                }
                self.metrics.backlog(self.journal_records, self.n_unsettled);
                let updates = decided.slots.into_iter().zip(decided.records);
                let mut dns_changed = self
                    .table
                    .update_found(updates.map(|(slot, (name, entry))| (slot, name, entry)));
                dns_changed |= !decided.txt.is_empty();
                self.table.set_txt(&decided.txt);
                self.table.add_acme_accounts(&accounts);
                // Read after the table shows the batch, not `now`: the DNS serial needs a
                // time no earlier than the change became visible (a transfer in between
                // must not keep a serial that already counts it), and acknowledgements
                // say when their report committed.
                let shown_at = Time::now();
                if dns_changed {
                    self.table.note_dns_change(shown_at);
                }
                let written: Vec<(Slot, i64)> = snapshot_slots
                    .into_iter()
                    .zip(&snapshot)
                    .map(|(slot, (_, entry))| (slot, entry.seq))
                    .collect();
                self.table.mark_clean(&written);
                self.advance_sweep(scanned_to);
                if let (Some(notice), Some(noticed)) = (&mut self.notice, noticed) {
                    notice.committed(noticed, now);
                }
                crash_point(CrashPoint::TableUpdated);
                Ok(shown_at)
            }
            Err(e) => {
                error!(error = %e, n_reports = batch.len(), "dropping reports: commit failed");
                // The journal keeps everything; a later sweep starts over.
                self.sweep = None;
                if let (Some(notice), Some(noticed)) = (&mut self.notice, noticed) {
                    notice.not_committed(noticed);
                }
                Err(Refused::CommitFailed)
            }
        };
        answer(
            Answers {
                reports: batch,
                verdicts: decided.verdicts,
                updates,
                update_verdicts: decided.update_verdicts,
                registrations,
            },
            outcome,
        );
        crash_point(CrashPoint::Answered);
    }

    /// After a prune at `now` that deleted `n_pruned` rows: counts them, and schedules
    /// the next.
    fn pruned(&mut self, n_pruned: u64, now: Now) {
        if let Some(prune) = &mut self.prune {
            if n_pruned > 0 {
                debug!(n_pruned, "history pruned");
                self.metrics.pruned(n_pruned);
            }
            prune.pruned(n_pruned, now.instant);
        }
    }

    /// Moves the sweep on after a committed turn: to the next chunk, from the last chunk
    /// to dropping, and from dropping to done once no journal entry from before the sweep
    /// is left.
    fn advance_sweep(&mut self, scanned_to: Option<Name>) {
        let Some(sweep) = &mut self.sweep else {
            return;
        };
        match &mut sweep.phase {
            Phase::Scan { after } => match scanned_to {
                Some(name) => *after = Some(name),
                None => sweep.phase = Phase::Drop,
            },
            Phase::Drop => match self.store.has_before(sweep.start) {
                Ok(true) => {}
                Ok(false) => {
                    debug!(
                        journal_records = self.journal_records,
                        "compaction sweep done"
                    );
                    self.sweep = None;
                    // After a burst of changes (a fleet renumbered) the map would keep
                    // its buckets for good; what is left in it now is what came during
                    // the sweep.
                    self.recent.lock().shrink_to_fit();
                }
                Err(e) => {
                    error!(error = %e, "compaction stopped; the journal keeps every report");
                    self.sweep = None;
                }
            },
        }
    }
}

/// With sinks (`noticing`), a clock for the writer to wait on: an idle writer still has
/// turns to take ([`Notice::wants_turn`]), so it waits for a job at most [`IDLE_TICK`].
fn idle_clock(noticing: bool) -> Option<tokio::runtime::Runtime> {
    if !noticing {
        return None;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            error!(error = %e, "no timer for the writer: stale hosts are noticed only as reports come");
            None
        }
    }
}

/// A turn's jobs with what was decided on each, to answer once the commit is known.
pub(crate) struct Answers {
    pub reports: Vec<Report>,
    /// Per report (a report without one is answered with the commit's outcome alone).
    pub verdicts: Vec<Verdict>,
    pub updates: Vec<ZoneUpdate>,
    /// Per update.
    pub update_verdicts: Vec<UpdateOutcome>,
    pub registrations: Vec<Registration>,
}

/// Answers a turn's jobs: each report, update and registration gets its verdict, or the
/// commit's failure (`outcome`: when the commit showed its changes, or why not).
pub(crate) fn answer(answers: Answers, outcome: Result<Time, Refused>) {
    for (report, verdict) in answers.reports.into_iter().zip(answers.verdicts) {
        let outcome = match verdict {
            Verdict::Replayed => {
                debug!(host = %report.name, addr = %report.addr, "refusing replayed report");
                Err(Refused::Replayed)
            }
            Verdict::Changed | Verdict::Unchanged => outcome.map(|at| Committed {
                at,
                changed: verdict == Verdict::Changed,
            }),
        };
        if outcome.is_ok() {
            info!(host = %report.name, addr = %report.addr.to_canonical(), "report committed");
        }
        if let Some(done) = report.done {
            done(outcome);
        }
    }
    for (update, verdict) in answers.updates.into_iter().zip(answers.update_verdicts) {
        let outcome = match verdict {
            Ok(_) => outcome.map_err(|_| UpdateRefused::CommitFailed),
            Err(refused) => Err(refused),
        };
        match &outcome {
            Ok(_) => info!(changes = ?update.plan.changes, "zone update committed"),
            Err(refused) => debug!(%refused, "zone update refused"),
        }
        if let Some(done) = update.done {
            done(outcome);
        }
    }
    for registration in answers.registrations {
        let kept = outcome.map(|_| ()).map_err(|_| UpdateRefused::CommitFailed);
        if kept.is_ok() {
            info!(username = %registration.account.username, txt_name = %registration.account.txt_name, "acme-dns account registered");
        }
        if let Some(done) = registration.done {
            done(kept);
        }
    }
}
