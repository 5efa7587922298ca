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
//! Between batches it folds the journal into the snapshot: a sweep walks the table in name
//! order, writes the entries changed since the last sweep in chunks, and when it reaches
//! the end drops the journal rows from before it began. Each chunk touches neighbouring
//! pages of the snapshot, so a sweep rewrites the snapshot about once, sequentially.
//!
//! The writer exits when the last sender is dropped, after committing what was queued.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tracing::{debug, error, info};

use crate::name::Name;
use crate::record::{Change, Record, Time};
use crate::store::{HistoryRow, Store, StoreError};
use crate::table::{Entry, Table};

/// The most reports in one transaction. At 100,000 reports/s a full batch is 40 ms of
/// traffic; larger batches save little (one fsync is about 0.2 ms here) and delay acks.
pub const MAX_BATCH: usize = 4096;
/// Reports that may wait for the writer. When full, receivers wait, and the kernel's socket
/// buffer holds the rest: backpressure instead of unbounded memory.
pub const QUEUE_LEN: usize = 4 * MAX_BATCH;
/// Dirty entries the sweep writes per chunk, and entries it may scan to find them: a chunk
/// costs a few milliseconds, so batches are never held up long.
const SWEEP_CHUNK: usize = 2048;
const SWEEP_SCAN: usize = 32 * SWEEP_CHUNK;
/// A sweep starts once the journal holds more rows than the table has hosts (but not for
/// fewer than this many): the journal stays at most about twice the snapshot, and every
/// report costs at most one journal row and one snapshot row.
const SWEEP_MIN_JOURNAL: u64 = 65_536;

/// One report for the writer.
pub struct Report {
    pub name: Name,
    /// The source address of the datagram or request.
    pub addr: IpAddr,
    /// When the server received it.
    pub at: Time,
    /// For a signed report, the client's time in it: the replay rule's input.
    pub signed_at: Option<Time>,
    /// Called after the commit (`Ok`) or with why the report was not committed; `None`
    /// for reports nobody waits on (the original's datagrams).
    pub done: Option<Done>,
}

/// What the edge that received a report does once the writer has decided on it (send an
/// acknowledgement, answer a request). Called on the writer thread: it must not block.
pub type Done = Box<dyn FnOnce(Result<Committed, Refused>) + Send>;

/// A committed report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// When its batch committed.
    pub at: Time,
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
            .field("waited_on", &self.done.is_some())
            .finish()
    }
}

/// Starts the writer thread, continuing the journal at `next_seq` with `journal_rows`
/// rows not yet folded into the snapshot.
///
/// # Errors
/// When the OS cannot start a thread.
pub fn spawn(
    store: Store,
    table: Arc<Table>,
    next_seq: i64,
    journal_rows: u64,
) -> std::io::Result<(mpsc::Sender<Report>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let writer = Writer {
        store,
        table,
        rx,
        next_seq,
        journal_rows,
        sweep: None,
    };
    let handle = std::thread::Builder::new()
        .name("dynip-writer".to_string())
        .spawn(move || writer.run())?;
    Ok((tx, handle))
}

struct Sweep {
    /// Journal rows below this were written before the sweep began: every host they touch
    /// was dirty then and is written by the sweep, so they can go when it ends.
    start_seq: i64,
    /// The last name visited; the next chunk starts after it.
    after: Option<Name>,
}

struct Writer {
    store: Store,
    table: Arc<Table>,
    rx: mpsc::Receiver<Report>,
    next_seq: i64,
    journal_rows: u64,
    sweep: Option<Sweep>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = if self.sweep.is_some() {
                match self.rx.try_recv() {
                    Ok(report) => report,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.sweep_step();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.blocking_recv() {
                    Some(report) => report,
                    None => break,
                }
            };
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
            }
            self.commit(batch);
            if self.sweep.is_some() {
                self.sweep_step();
            } else if self.journal_rows > SWEEP_MIN_JOURNAL.max(self.table.len() as u64) {
                debug!(journal_rows = self.journal_rows, "compaction sweep starts");
                self.sweep = Some(Sweep {
                    start_seq: self.next_seq,
                    after: None,
                });
            }
        }
        debug!("writer stops: no more reports");
    }

    fn commit(&mut self, batch: Vec<Report>) {
        let mut pending: HashMap<Name, Record> = HashMap::with_capacity(batch.len());
        let mut history = Vec::new();
        let mut refused: Vec<bool> = Vec::with_capacity(batch.len());
        for report in &batch {
            let current = match pending.get(&report.name) {
                Some(record) => Some(*record),
                None => self.table.get(&report.name).map(|entry| entry.record),
            };
            if let (Some(signed_at), Some(record)) = (report.signed_at, &current) {
                if !record.is_fresh(signed_at) {
                    debug!(host = %report.name, addr = %report.addr, "refusing replayed report");
                    refused.push(true);
                    continue;
                }
            }
            refused.push(false);
            let (mut record, change) = match current {
                Some(mut record) => {
                    let change = record.apply(report.addr, report.at);
                    (record, change)
                }
                None => (Record::new(report.addr, report.at), Change::NewAddress),
            };
            if report.signed_at.is_some() {
                record.signed_at = report.signed_at;
            }
            pending.insert(report.name.clone(), record);
            if change == Change::NewAddress {
                history.push(HistoryRow {
                    name: report.name.clone(),
                    at: report.at,
                    addr: report.addr.to_canonical(),
                });
            }
        }
        let first_seq = self.next_seq;
        let records: Vec<(Name, Entry)> = pending
            .into_iter()
            .enumerate()
            .map(|(idx, (name, record))| {
                let seq = first_seq + idx as i64;
                let dirty = true;
                (name, Entry { record, seq, dirty })
            })
            .collect();
        self.next_seq += records.len() as i64;

        let n_committed = refused.iter().filter(|&&refused| !refused).count();
        let outcome = if records.is_empty() {
            Ok(Committed { at: Time::now() })
        } else {
            match self.store.commit(&records, &history, n_committed as u64) {
                Ok(()) => {
                    self.journal_rows += records.len() as u64;
                    self.table.update(records);
                    Ok(Committed { at: Time::now() })
                }
                Err(e) => {
                    error!(error = %e, n_reports = batch.len(), "dropping reports: commit failed");
                    Err(Refused::CommitFailed)
                }
            }
        };
        for (report, refused) in batch.into_iter().zip(refused) {
            let outcome = if refused {
                Err(Refused::Replayed)
            } else {
                outcome
            };
            if outcome.is_ok() {
                info!(host = %report.name, addr = %report.addr.to_canonical(), "report committed");
            }
            if let Some(done) = report.done {
                done(outcome);
            }
        }
    }

    fn sweep_step(&mut self) {
        let Some(mut sweep) = self.sweep.take() else {
            return;
        };
        match self.sweep_chunk(&mut sweep) {
            Ok(true) => debug!("compaction sweep done"),
            Ok(false) => self.sweep = Some(sweep),
            // The journal still holds everything: give up this sweep; a later one retries.
            Err(e) => error!(error = %e, "compaction failed; the journal keeps every report"),
        }
    }

    /// Writes one chunk of the sweep; `true` when the sweep is done.
    fn sweep_chunk(&mut self, sweep: &mut Sweep) -> Result<bool, StoreError> {
        let (dirty, last) = self
            .table
            .dirty_after(sweep.after.as_ref(), SWEEP_CHUNK, SWEEP_SCAN);
        if !dirty.is_empty() {
            self.store.write_snapshot(&dirty)?;
            let written: Vec<(Name, i64)> = dirty
                .into_iter()
                .map(|(name, entry)| (name, entry.seq))
                .collect();
            self.table.mark_clean(&written);
        }
        if last.is_some() {
            sweep.after = last;
            return Ok(false);
        }
        let n_dropped = self.store.drop_journal_before(sweep.start_seq)?;
        self.journal_rows = self.journal_rows.saturating_sub(n_dropped);
        Ok(true)
    }
}
