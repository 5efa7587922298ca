//! The store's one writer: a thread that owns the [`Store`] and commits reports in batches.
//!
//! Handlers send [`Report`]s on a bounded channel. The writer takes one, drains what else
//! is queued (up to [`MAX_BATCH`]), commits them all in one transaction (group commit),
//! then updates the in-memory table and calls each report's `done`. So nothing reads a
//! record before it is durable, and no report is acknowledged before its commit.
//!
//! The writer is where the replay rule is decided, since it alone sees every report in
//! order: a signed report whose client time is not later than the host's last one is
//! refused, and changes nothing.
//!
//! Each commit also carries a step of the compaction, in the same transaction: a chunk of
//! the sweep that folds the journal into the snapshot and settles address changes into
//! the store's history, and with `history_max_age` a chunk of the history's oldest
//! changes to delete. The state machine is in `compaction` (`writer/compaction.rs`).
//!
//! The writer exits when the last sender is dropped, after committing what was queued.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::model::name::Name;
use crate::model::record::{Change, Record, Time};
use crate::state::metrics::Metrics;
use crate::state::table::{Entry, Slot, Table};
use crate::store::{HistoryRow, LoggedChange, Progress, Removed, Store, Turn, PRUNE_ROWS_PER_TURN};

mod compaction;

pub use compaction::Recent;
use compaction::{
    hold, logged, sweep_chunk, sweep_due, Phase, Prune, Sweep, PRUNE_EVERY, PRUNE_PAUSE,
    SWEEP_SCAN_PER_CHUNK_ENTRY,
};

/// The most reports in one transaction. At 100,000 reports/s a full batch is 40 ms of
/// traffic; larger batches save little (one fsync is about 0.2 ms here) and delay acks.
pub const MAX_BATCH: usize = 4096;
/// Reports that may wait for the writer. When full, receivers wait, and the kernel's socket
/// buffer holds the rest: backpressure instead of unbounded memory.
pub const QUEUE_LEN: usize = 4 * MAX_BATCH;

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

/// Starts the writer thread, going on from where the store's journal left off, with the
/// unsettled changes of `progress` put into `recent`, each commit's batch size and
/// latency recorded in `metrics`, and each turn's start and end in `liveness`; with
/// `history_max_age`, pruning older changes.
///
/// # Errors
/// When the OS cannot start a thread.
pub fn spawn(
    store: Store,
    table: Arc<Table>,
    progress: Progress,
    recent: Arc<Recent>,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    history_max_age: Option<std::time::Duration>,
) -> std::io::Result<(mpsc::Sender<Report>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let n_unsettled = progress.unsettled.len() as u64;
    hold(&mut recent.lock(), progress.unsettled);
    metrics.backlog(progress.journal_records, n_unsettled);
    let writer = Writer {
        store,
        table,
        rx,
        next_seq: progress.next_seq,
        journal_records: progress.journal_records,
        next_history_id: progress.next_history_id,
        n_unsettled,
        recent,
        sweep: None,
        metrics,
        liveness,
        prune: history_max_age.map(|max_age| Prune {
            max_age,
            next: Instant::now(),
        }),
    };
    let handle = std::thread::Builder::new()
        .name("dynip-writer".to_string())
        .spawn(move || writer.run())?;
    Ok((tx, handle))
}

struct Writer {
    store: Store,
    table: Arc<Table>,
    rx: mpsc::Receiver<Report>,
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
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    prune: Option<Prune>,
}

/// A batch's reports, decided: the records they change and their history, and which
/// reports the replay rule refused.
struct Decided {
    records: Vec<(Name, Entry)>,
    /// Where each record's host lives in the table (`None`: a new host).
    slots: Vec<Option<Slot>>,
    history: Vec<LoggedChange>,
    /// Per report: refused by the replay rule, or else whether it changed its host.
    verdicts: Vec<Verdict>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Replayed,
    Changed,
    Unchanged,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = if self.sweep.is_some() {
                match self.rx.try_recv() {
                    Ok(report) => Some(report),
                    // Nothing queued: a turn of sweeping alone.
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.blocking_recv() {
                    Some(report) => Some(report),
                    None => break,
                }
            };
            let mut batch = Vec::with_capacity(64);
            batch.extend(first);
            while !batch.is_empty() && batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
            }
            self.liveness.turn_starts();
            self.turn(batch);
            self.liveness.turn_ends();
            if self.sweep.is_none()
                && sweep_due(self.journal_records, self.n_unsettled, self.table.len())
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
        debug!("writer stops: no more reports");
    }

    /// One transaction: the batch, and a step of the sweep if one is under way.
    fn turn(&mut self, batch: Vec<Report>) {
        let decided = self.decide(&batch);
        let seq = self.next_seq;
        let (snapshot, snapshot_slots, scanned_to) = match &self.sweep {
            Some(Sweep {
                phase: Phase::Scan { after },
                ..
            }) => self.table.dirty_after(
                after.as_ref(),
                sweep_chunk(batch.len()),
                SWEEP_SCAN_PER_CHUNK_ENTRY * sweep_chunk(batch.len()),
            ),
            _ => (Vec::new(), Vec::new(), None),
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
            prune_before: self.prune_before(),
        };
        let pruning = turn.prune_before.is_some();
        let started = Instant::now();
        let committed = self.store.commit(&turn);
        if !batch.is_empty() {
            self.metrics.committed(batch.len(), started.elapsed());
        }
        let outcome = match committed {
            Ok(Removed {
                n_dropped,
                n_pruned,
            }) => {
                if !decided.records.is_empty() {
                    self.next_seq += 1;
                }
                self.n_unsettled =
                    self.n_unsettled + decided.history.len() as u64 - settle.len() as u64;
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
                    self.pruned(n_pruned);
                }
                self.metrics.backlog(self.journal_records, self.n_unsettled);
                let updates = decided.slots.into_iter().zip(decided.records);
                if self
                    .table
                    .update_found(updates.map(|(slot, (name, entry))| (slot, name, entry)))
                {
                    // Taken after the table shows the change, as the serial needs.
                    self.table.note_dns_change(Time::now());
                }
                let written: Vec<(Slot, i64)> = snapshot_slots
                    .into_iter()
                    .zip(&snapshot)
                    .map(|(slot, (_, entry))| (slot, entry.seq))
                    .collect();
                self.table.mark_clean(&written);
                self.advance_sweep(scanned_to);
                Ok(Time::now())
            }
            Err(e) => {
                error!(error = %e, n_reports = batch.len(), "dropping reports: commit failed");
                // The journal keeps everything; a later sweep starts over.
                self.sweep = None;
                Err(Refused::CommitFailed)
            }
        };
        for (report, verdict) in batch.into_iter().zip(decided.verdicts) {
            let outcome = match verdict {
                Verdict::Replayed => Err(Refused::Replayed),
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
    }

    /// Moves the sweep on after a committed turn.
    /// The time before which this turn prunes the history, when a prune is due.
    fn prune_before(&self) -> Option<Time> {
        let prune = self
            .prune
            .as_ref()
            .filter(|prune| prune.next <= Instant::now())?;
        let max_age = i64::try_from(prune.max_age.as_micros()).unwrap_or(i64::MAX);
        Some(Time::from_micros(
            Time::now().as_micros().saturating_sub(max_age),
        ))
    }

    /// After a prune that deleted `n_pruned` rows: the next one after [`PRUNE_PAUSE`]
    /// while there are more, else in [`PRUNE_EVERY`].
    fn pruned(&mut self, n_pruned: u64) {
        if let Some(prune) = &mut self.prune {
            if n_pruned > 0 {
                debug!(n_pruned, "history pruned");
                self.metrics.pruned(n_pruned);
            }
            prune.next = if n_pruned as i64 >= PRUNE_ROWS_PER_TURN {
                Instant::now() + PRUNE_PAUSE
            } else {
                Instant::now() + PRUNE_EVERY
            };
        }
    }

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

    /// Applies a batch to copies of the current records, deciding the replay rule in
    /// arrival order.
    fn decide(&self, batch: &[Report]) -> Decided {
        let mut pending: HashMap<Name, (Option<Slot>, Record)> =
            HashMap::with_capacity(batch.len());
        let mut history = Vec::new();
        let mut verdicts = Vec::with_capacity(batch.len());
        for report in batch {
            let (slot, current) = match pending.get(&report.name) {
                Some(&(slot, record)) => (slot, Some(record)),
                None => match self.table.find(&report.name) {
                    Some((slot, entry)) => (Some(slot), Some(entry.record)),
                    None => (None, None),
                },
            };
            if let (Some(signed_at), Some(record)) = (report.signed_at, &current) {
                if !record.is_fresh(signed_at) {
                    debug!(host = %report.name, addr = %report.addr, "refusing replayed report");
                    verdicts.push(Verdict::Replayed);
                    continue;
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
            verdicts.push(
                if change == Change::NewAddress || was_offline != report.offline {
                    Verdict::Changed
                } else {
                    Verdict::Unchanged
                },
            );
            pending.insert(report.name.clone(), (slot, record));
            if change == Change::NewAddress {
                history.push(LoggedChange {
                    id: self.next_history_id + history.len() as i64,
                    change: HistoryRow {
                        name: report.name.clone(),
                        at: report.at,
                        addr: report.addr.to_canonical(),
                    },
                });
            }
        }
        let seq = self.next_seq;
        let dirty = true;
        let (slots, records) = pending
            .into_iter()
            .map(|(name, (slot, record))| (slot, (name, Entry { record, seq, dirty })))
            .unzip();
        Decided {
            records,
            slots,
            history,
            verdicts,
        }
    }
}
