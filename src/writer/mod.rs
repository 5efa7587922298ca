//! The store's one writer: a thread that owns the [`Store`] and commits reports in batches.
//!
//! Handlers send [`Report`]s on a bounded channel. The writer takes one, drains what else
//! is queued (up to [`MAX_BATCH`]), commits them all in one transaction (group commit),
//! then updates the in-memory table and calls each report's `done`. So nothing reads a
//! record before it is durable, and no report is acknowledged before its commit.
//!
//! The writer is where the replay rule is decided, since it alone sees every report in
//! order: a signed report whose client time is not later than the host's last one is
//! refused, and changes nothing. The decision on a batch is `decide`, a pure function of
//! the batch and the current records; the thread reads the clock once per turn and
//! passes it in (`Now`).
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
mod notice;
mod shared;
mod update;

pub use compaction::Recent;
use compaction::{hold, logged, Limits, Phase, Prune, Sweep, SWEEP_SCAN_PER_CHUNK_ENTRY};
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

/// A batch's reports, decided: the records they change and their history, and which
/// reports the replay rule refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decided<S> {
    /// Each changed host's new record, once, whatever the number of its reports.
    pub records: Vec<(Name, Entry)>,
    /// Where each record's host lives in the table (`None`: a new host).
    pub slots: Vec<Option<S>>,
    /// The batch's address changes, in arrival order, with their history ids.
    pub history: Vec<LoggedChange>,
    /// Per report: refused by the replay rule, or else whether it changed its host.
    pub verdicts: Vec<Verdict>,
    /// The names whose TXT records changed, with their whole new sets, in name order.
    pub txt: Vec<(Name, Vec<Txt>)>,
    /// Per zone update: applied, or why not.
    pub update_verdicts: Vec<UpdateOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Replayed,
    /// A new address, or into or out of offline: dyndns2's `good`.
    Changed,
    /// Only the last-seen time moved: `nochg`.
    Unchanged,
}

/// Applies a batch to copies of the current records, in arrival order (a report sees
/// what the batch's earlier reports did to its host): the replay rule (a signed report's
/// client time must be later than the host's `signed_at`), good or nochg, offline, and the
/// address changes, numbered from `next_history_id`. `lookup` finds a host's record
/// and where it lives (`S`, the table's slot); the records come out with `seq` and dirty.
/// `applied` sees each report that is not refused, with its host's record before (`None`:
/// a new host) and after it.
#[cfg(test)]
pub(crate) fn decide<S: Copy>(
    batch: &[Report],
    lookup: impl FnMut(&Name) -> Option<(S, Record)>,
    next_history_id: i64,
    seq: i64,
    applied: impl FnMut(&Name, Time, Option<&Record>, &Record),
) -> Decided<S> {
    let mut deciding = Deciding::new(lookup, |_: &Name| Vec::new(), next_history_id, applied);
    for report in batch {
        deciding.report(report);
    }
    deciding.finish(seq)
}

/// A batch being decided: the records and TXT sets it changed so far, over the table's
/// (`lookup`, `lookup_txt`), so that each request sees what the earlier ones did.
pub(crate) struct Deciding<S, L, T, A> {
    lookup: L,
    lookup_txt: T,
    applied: A,
    next_history_id: i64,
    pending: HashMap<Name, (Option<S>, Record)>,
    pending_txt: HashMap<Name, Vec<Txt>>,
    history: Vec<LoggedChange>,
    verdicts: Vec<Verdict>,
    update_verdicts: Vec<UpdateOutcome>,
}

impl<S, L, T, A> Deciding<S, L, T, A>
where
    S: Copy,
    L: FnMut(&Name) -> Option<(S, Record)>,
    T: FnMut(&Name) -> Vec<Txt>,
    A: FnMut(&Name, Time, Option<&Record>, &Record),
{
    pub(crate) fn new(lookup: L, lookup_txt: T, next_history_id: i64, applied: A) -> Self {
        Deciding {
            lookup,
            lookup_txt,
            applied,
            next_history_id,
            pending: HashMap::new(),
            pending_txt: HashMap::new(),
            history: Vec::new(),
            verdicts: Vec::new(),
            update_verdicts: Vec::new(),
        }
    }

    /// A host's record as the batch has it so far, and where it lives.
    fn current(&mut self, name: &Name) -> (Option<S>, Option<Record>) {
        match self.pending.get(name) {
            Some(&(slot, record)) => (slot, Some(record)),
            None => match (self.lookup)(name) {
                Some((slot, record)) => (Some(slot), Some(record)),
                None => (None, None),
            },
        }
    }

    /// A name's TXT records as the batch has them so far.
    fn current_txt(&mut self, name: &Name) -> Vec<Txt> {
        match self.pending_txt.get(name) {
            Some(txt) => txt.clone(),
            None => (self.lookup_txt)(name),
        }
    }

    /// Records a change of `addr` for the history.
    fn log_change(&mut self, name: &Name, at: Time, addr: IpAddr) {
        self.history.push(LoggedChange {
            id: self.next_history_id + self.history.len() as i64,
            change: HistoryRow {
                name: name.clone(),
                at,
                addr: addr.to_canonical(),
            },
        });
    }

    pub(crate) fn report(&mut self, report: &Report) {
        let (slot, current) = self.current(&report.name);
        if let (Some(signed_at), Some(record)) = (report.signed_at, &current) {
            if !record.is_fresh(signed_at) {
                self.verdicts.push(Verdict::Replayed);
                return;
            }
        }
        let (mut record, change, was_offline) = match current {
            Some(mut record) => {
                let was_offline = record.offline;
                let change = record.apply(report.addr, report.at);
                (record, change, was_offline)
            }
            None => (
                Record::new(report.addr, report.at),
                Change::NewAddress,
                report.offline,
            ),
        };
        if report.signed_at.is_some() {
            record.signed_at = report.signed_at;
        }
        record.offline = report.offline;
        (self.applied)(&report.name, report.at, current.as_ref(), &record);
        self.verdicts.push(
            if change == Change::NewAddress || was_offline != report.offline {
                Verdict::Changed
            } else {
                Verdict::Unchanged
            },
        );
        self.pending.insert(report.name.clone(), (slot, record));
        if change == Change::NewAddress {
            self.log_change(&report.name, report.at, report.addr);
        }
    }

    /// The batch decided; the records come out with `seq` and dirty.
    pub(crate) fn finish(self, seq: i64) -> Decided<S> {
        let dirty = true;
        let (slots, records) = self
            .pending
            .into_iter()
            .map(|(name, (slot, record))| (slot, (name, Entry { record, seq, dirty })))
            .unzip();
        let mut txt: Vec<(Name, Vec<Txt>)> = self.pending_txt.into_iter().collect();
        txt.sort_by(|(one, _), (other, _)| one.cmp(other));
        Decided {
            records,
            slots,
            history: self.history,
            verdicts: self.verdicts,
            txt,
            update_verdicts: self.update_verdicts,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Changed, Replayed, Unchanged};

    fn secs(secs: i64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    /// A host in the table before the batch: name, address, last report (s), the client's
    /// time of its last signed report (s), offline.
    type KnownHost = (&'static str, &'static str, i64, Option<i64>, bool);

    /// A report: host, address, receive time (s), the client's time if signed (s), offline.
    fn report(name: &str, addr: &str, at: i64, signed_at: Option<i64>, offline: bool) -> Report {
        Report {
            name: Name::parse(name).unwrap(),
            addr: addr.parse().unwrap(),
            at: secs(at),
            signed_at: signed_at.map(secs),
            offline,
            done: None,
        }
    }

    fn unsigned(name: &str, addr: &str, at: i64) -> Report {
        report(name, addr, at, None, false)
    }

    fn signed(name: &str, addr: &str, at: i64, signed_at: i64) -> Report {
        report(name, addr, at, Some(signed_at), false)
    }

    /// A record as the tests compare it: the name as spelled, the host's slot (its index
    /// in the table), the IPv4 and IPv6 addresses, the client's time of the last signed report (s), offline.
    type Shown<S> = (S, Option<usize>, Option<S>, Option<S>, Option<i64>, bool);

    /// Decides `batch` over a table of `known` hosts, with history ids from 100 and
    /// journal entry 7, and compares each report's verdict, the address changes as
    /// (host, address, time in s), and the records (by name).
    fn check(
        known: &[KnownHost],
        batch: &[Report],
        verdicts: &[Verdict],
        history: &[(&str, &str, i64)],
        records: &[Shown<&str>],
    ) {
        let table: HashMap<Name, (usize, Record)> = known
            .iter()
            .enumerate()
            .map(|(idx, &(name, addr, at, signed_at, offline))| {
                let mut record = Record::new(addr.parse().unwrap(), secs(at));
                record.signed_at = signed_at.map(secs);
                record.offline = offline;
                (Name::parse(name).unwrap(), (idx, record))
            })
            .collect();
        let decided = decide(
            batch,
            |name| table.get(name).copied(),
            100,
            7,
            |_, _, _, _| {},
        );
        let what = format!("{batch:?} over {known:?}");
        assert_eq!(decided.verdicts, verdicts, "verdicts of {what}");
        let expect: Vec<LoggedChange> = history
            .iter()
            .enumerate()
            .map(|(idx, &(name, addr, at))| LoggedChange {
                id: 100 + idx as i64,
                change: HistoryRow {
                    name: Name::parse(name).unwrap(),
                    at: secs(at),
                    addr: addr.parse().unwrap(),
                },
            })
            .collect();
        assert_eq!(decided.history, expect, "history of {what}");
        let mut shown: Vec<Shown<String>> = decided
            .slots
            .iter()
            .zip(&decided.records)
            .map(|(&slot, (name, entry))| {
                assert_eq!((entry.seq, entry.dirty), (7, true), "{name}'s entry");
                let record = &entry.record;
                (
                    name.as_str().to_string(),
                    slot,
                    record.v4.map(|seen| seen.addr.to_string()),
                    record.v6.map(|seen| seen.addr.to_string()),
                    record.signed_at.map(|at| at.as_micros() / 1_000_000),
                    record.offline,
                )
            })
            .collect();
        shown.sort();
        let expect: Vec<Shown<String>> = records
            .iter()
            .map(|&(name, slot, v4, v6, signed_at, offline)| {
                (
                    name.to_string(),
                    slot,
                    v4.map(str::to_string),
                    v6.map(str::to_string),
                    signed_at,
                    offline,
                )
            })
            .collect();
        assert_eq!(shown, expect, "records of {what}");
    }

    #[test]
    fn a_new_host_is_changed_and_its_address_goes_into_the_history() {
        check(
            &[],
            &[unsigned("pc", "203.0.113.1", 10)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
        check(
            &[],
            &[signed("pc", "2001:db8::1", 10, 9)],
            &[Changed],
            &[("pc", "2001:db8::1", 10)],
            &[("pc", None, None, Some("2001:db8::1"), Some(9), false)],
        );
        check(
            &[],
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, true)],
        );
        // An IPv4-mapped address is IPv4, in the record and in the history.
        check(
            &[],
            &[unsigned("pc", "::ffff:203.0.113.1", 10)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
    }

    #[test]
    fn the_same_address_is_nochg_and_a_new_one_of_either_family_is_good() {
        let known: &[KnownHost] = &[
            ("laptop", "198.51.100.9", 1, None, false),
            ("pc", "203.0.113.1", 1, None, false),
        ];
        // The record goes to the journal as the report spelled the name.
        check(
            known,
            &[unsigned("PC", "203.0.113.1", 10)],
            &[Unchanged],
            &[],
            &[("PC", Some(1), Some("203.0.113.1"), None, None, false)],
        );
        check(
            known,
            &[unsigned("pc", "::ffff:203.0.113.1", 10)],
            &[Unchanged],
            &[],
            &[("pc", Some(1), Some("203.0.113.1"), None, None, false)],
        );
        check(
            known,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(1), Some("203.0.113.2"), None, None, false)],
        );
        // The first IPv6 address of a host with IPv4: a change, and the IPv4 stays.
        check(
            known,
            &[unsigned("pc", "2001:db8::1", 10)],
            &[Changed],
            &[("pc", "2001:db8::1", 10)],
            &[(
                "pc",
                Some(1),
                Some("203.0.113.1"),
                Some("2001:db8::1"),
                None,
                false,
            )],
        );
    }

    #[test]
    fn a_signed_report_needs_a_client_time_later_than_the_hosts() {
        let known: &[KnownHost] = &[("pc", "203.0.113.1", 1, Some(50), false)];
        let replayed = |report: Report| check(known, &[report], &[Replayed], &[], &[]);
        replayed(signed("pc", "203.0.113.1", 10, 49));
        replayed(signed("pc", "203.0.113.1", 10, 50));
        // A replay changes nothing, not even with a new address.
        replayed(signed("pc", "203.0.113.2", 10, 50));
        check(
            known,
            &[signed("pc", "203.0.113.1", 10, 51)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(51), false)],
        );
        // Unsigned reports are not replays, and keep the signed time.
        check(
            known,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(0), Some("203.0.113.2"), None, Some(50), false)],
        );
        // A host that never signed takes any time.
        check(
            &[("pc", "203.0.113.1", 1, None, false)],
            &[signed("pc", "203.0.113.1", 10, -5)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(-5), false)],
        );
    }

    #[test]
    fn going_offline_and_coming_back_are_changes() {
        let online: &[KnownHost] = &[("pc", "203.0.113.1", 1, None, false)];
        let offline: &[KnownHost] = &[("pc", "203.0.113.1", 1, None, true)];
        check(
            online,
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, true)],
        );
        check(
            offline,
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, true)],
        );
        check(
            offline,
            &[unsigned("pc", "203.0.113.1", 10)],
            &[Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, false)],
        );
        check(
            offline,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(0), Some("203.0.113.2"), None, None, false)],
        );
    }

    #[test]
    fn reports_of_one_host_in_one_batch_are_decided_in_arrival_order() {
        let known: &[KnownHost] = &[("pc", "203.0.113.1", 1, Some(50), false)];
        check(
            &[],
            &[
                unsigned("pc", "203.0.113.1", 10),
                unsigned("pc", "203.0.113.2", 11),
            ],
            &[Changed, Changed],
            &[("pc", "203.0.113.1", 10), ("pc", "203.0.113.2", 11)],
            &[("pc", None, Some("203.0.113.2"), None, None, false)],
        );
        check(
            &[],
            &[
                unsigned("pc", "203.0.113.1", 10),
                unsigned("PC", "203.0.113.1", 11),
            ],
            &[Changed, Unchanged],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
        // The second of two reports with one client time is a replay of the first.
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 60),
                signed("pc", "203.0.113.2", 11, 60),
            ],
            &[Unchanged, Replayed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(60), false)],
        );
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 61),
                signed("pc", "203.0.113.1", 11, 60),
            ],
            &[Unchanged, Replayed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(61), false)],
        );
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 60),
                signed("pc", "203.0.113.2", 11, 61),
            ],
            &[Unchanged, Changed],
            &[("pc", "203.0.113.2", 11)],
            &[("pc", Some(0), Some("203.0.113.2"), None, Some(61), false)],
        );
        check(
            known,
            &[
                report("pc", "203.0.113.1", 10, None, true),
                unsigned("pc", "203.0.113.1", 11),
            ],
            &[Changed, Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(50), false)],
        );
        // Changes of several hosts are numbered in arrival order.
        check(
            known,
            &[
                unsigned("tv", "198.51.100.1", 10),
                unsigned("pc", "2001:db8::1", 11),
                unsigned("tv", "198.51.100.2", 12),
            ],
            &[Changed, Changed, Changed],
            &[
                ("tv", "198.51.100.1", 10),
                ("pc", "2001:db8::1", 11),
                ("tv", "198.51.100.2", 12),
            ],
            &[
                (
                    "pc",
                    Some(0),
                    Some("203.0.113.1"),
                    Some("2001:db8::1"),
                    Some(50),
                    false,
                ),
                ("tv", None, Some("198.51.100.2"), None, None, false),
            ],
        );
    }
}
