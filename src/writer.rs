//! The store's one writer: a thread that owns the [`Store`] and commits reports in batches.
//!
//! Handlers send [`Report`]s on a bounded channel. The writer takes one, drains what else
//! is queued (up to [`MAX_BATCH`]), commits them all in one transaction (group commit),
//! then updates the in-memory table and answers each report's `done` channel. So nothing
//! reads a record before it is durable, and no report is answered before its commit.
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

use tokio::sync::{mpsc, oneshot};
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
#[derive(Debug)]
pub struct Report {
    pub name: Name,
    /// The source address of the datagram or request.
    pub addr: IpAddr,
    pub at: Time,
    /// Answered after the commit (`Ok`) or its failure (`Err`); `None` for reports nobody
    /// waits on (the original's datagrams).
    pub done: Option<oneshot::Sender<Result<(), CommitFailed>>>,
}

/// A report that could not be committed; the cause is logged by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store could not commit the report")]
pub struct CommitFailed;

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
        for report in &batch {
            let change = match pending.get_mut(&report.name) {
                Some(record) => record.apply(report.addr, report.at),
                None => {
                    let (record, change) = match self.table.get(&report.name) {
                        Some(entry) => {
                            let mut record = entry.record;
                            let change = record.apply(report.addr, report.at);
                            (record, change)
                        }
                        None => (Record::new(report.addr, report.at), Change::NewAddress),
                    };
                    pending.insert(report.name.clone(), record);
                    change
                }
            };
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

        let res = self.store.commit(&records, &history, batch.len() as u64);
        let outcome = match res {
            Ok(()) => {
                self.journal_rows += records.len() as u64;
                self.table.update(records);
                for report in &batch {
                    info!(host = %report.name, addr = %report.addr.to_canonical(), "report committed");
                }
                Ok(())
            }
            Err(e) => {
                error!(error = %e, n_reports = batch.len(), "dropping reports: commit failed");
                Err(CommitFailed)
            }
        };
        for report in batch {
            if let Some(done) = report.done {
                // The waiter may have given up; its report is committed all the same.
                let _ = done.send(outcome);
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
