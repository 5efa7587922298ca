//! The compaction: folding the journal into the snapshot, settling address changes into
//! `history`, and pruning the history, a step per turn of the writer, in the turn's own
//! transaction (one fsync).
//!
//! Why: a commit appends one journal entry (every record its batch changed, and its
//! address changes with their history ids), a few bytes per report written
//! sequentially. Writing each report's host row and history row in place would dirty a
//! random page per report (an indexed history insert per change was one 4 KiB page
//! each, over half of what the server wrote). The sweep writes the same rows later, in
//! name order, a chunk of neighbouring pages per commit: amortised, a report costs at
//! most one snapshot row and its history rows, written in page order.
//!
//! The sweep is a state machine ([`Sweep`], its [`Phase`]), stepped once per turn:
//!
//! ```text
//!             sweep_due after a turn: start = the next journal seq
//!   (none) ──────────────────────────────────────────────► Scan { after: None }
//!   Scan { after } ── a chunk written, the scan stopped at N ──► Scan { after: N }
//!   Scan { after } ── the scan reached the end of the table ──► Drop
//!   Drop ── up to DROP_ENTRIES_PER_TURN entries below start dropped ──► Drop
//!   Drop ── no entry below start is left ──────────────────────► (none)
//!   any ── a commit failed, or the store could not say what is left ──► (none)
//! ```
//!
//! - **Start** ([`Limits::sweep_due`]): when the journal holds more records than the table has
//!   hosts, or the unsettled changes pass an eighth of the hosts (never below
//!   [`SWEEP_MIN_JOURNAL`] of either). `start` is the next journal sequence number: every
//!   entry below it was written before the sweep began, so every host it touches was
//!   dirty then, and the sweep will write it.
//! - **Scan**: each turn takes the next dirty entries after `after` in name order (a
//!   chunk as large as the turn's batch, [`Limits::sweep_chunk`], scanning at most
//!   [`SWEEP_SCAN_PER_CHUNK_ENTRY`] entries per chunk entry), writes them into `hosts`,
//!   and writes those hosts' unsettled changes (from [`Recent`]) into `history`, whose
//!   index by name is then written in name order too. After the commit the table marks
//!   the entries clean, unless a report of the same turn moved their `seq` (then the next
//!   sweep writes them again), and their changes leave [`Recent`].
//! - **Drop**: each turn deletes up to `store::DROP_ENTRIES_PER_TURN` journal entries
//!   below `start` (one `DELETE` of a whole journal took 0.3–0.4 s at 1,000,000 hosts):
//!   everything they hold is in the snapshot and in `history` by now.
//! - **A failed commit** ends the sweep: the journal keeps everything, and a later sweep
//!   starts over.
//!
//! What makes a crash anywhere safe: every record in the journal is whole, and loading
//! replays the journal over the snapshot ("the newest sequence number wins"), so a host
//! written by a chunk and still in the journal loads the same. A change can be both in
//! `history` (settled) and in the journal (not yet dropped): the same id, read once.
//!
//! The unsettled changes live in memory ([`Recent`], shared with the HTTP face's history
//! readers), found again at start-up as the journal's changes whose ids are not in
//! `history`; `dynip history`, without the server's memory, decodes the journal's.
//!
//! **Pruning** (`history_max_age`, [`Prune`]): a turn also deletes up to
//! `store::PRUNE_ROWS_PER_TURN` of the oldest rows of `history` (ids rise with time, so
//! the oldest come first by id), once every [`PRUNE_EVERY`], or every [`PRUNE_PAUSE`]
//! while a prune found a whole chunk (each row can dirty a page of the name index, so
//! catching up on a long history is paced). Every history reader leaves out changes
//! older than the limit, also those not yet settled or pruned.
//!
//! Owns the sweep's and the prune's state and schedule, and [`Recent`]; the writer's turn
//! carries out each step. Must not know SQL (the store does) or the replay rule.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::Now;
use crate::model::name::Name;
use crate::model::record::Time;
use crate::state;
use crate::store::{HistoryRow, LoggedChange, PRUNE_ROWS_PER_TURN};

/// Dirty entries the sweep writes in one turn: as many as the turn's batch, so the sweep
/// keeps pace with the journal (a batch adds at most one record per report), within these
/// bounds.
/// A full chunk costs 3-4 ms of commit: given to every turn, it held up each report
/// that came during a sweep (every second or so at 50,000 reports/s with 10,000 hosts) by
/// that much, the p99 latency; a small batch now gets a small chunk.
const MIN_SWEEP_CHUNK: usize = 128;
const MAX_SWEEP_CHUNK: usize = 2048;
/// Entries the sweep may scan per turn to find its chunk's dirty ones, per entry written.
pub(super) const SWEEP_SCAN_PER_CHUNK_ENTRY: usize = 32;
/// A sweep starts once the journal holds more rows than the table has hosts (but not for
/// fewer than this many): the journal stays at most about twice the snapshot, and every
/// report costs at most one journal row and one snapshot row.
const SWEEP_MIN_JOURNAL: u64 = 65_536;
/// A sweep also starts once this many address changes per host wait in memory (never for
/// fewer than [`SWEEP_MIN_JOURNAL`]): [`Recent`] costs about 130 bytes a host with one
/// (map entry, [`HeldChange`], allocator), so a renumbered fleet costs 16 bytes a host,
/// not all its changes until the journal outgrows the table. Changes for hosts a sweep
/// has passed wait for the next one.
const SWEEP_UNSETTLED_PER_HOST: f64 = 0.125;

/// How often a turn prunes the history (`history_max_age`) once a prune found less than a
/// chunk to delete.
pub(super) const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The pause between two chunks while a prune catches up (after the limit is first set
/// on a long history): 2,560 rows a second at most, so that catching up does not slow
/// every commit.
pub(super) const PRUNE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The compaction's sizes: the constants above while serving; smaller in tests, so that a
/// few reports make a sweep of several chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// [`SWEEP_MIN_JOURNAL`].
    pub(super) min_journal: u64,
    /// [`MIN_SWEEP_CHUNK`].
    pub(super) min_chunk: usize,
    /// [`MAX_SWEEP_CHUNK`].
    pub(super) max_chunk: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            min_journal: SWEEP_MIN_JOURNAL,
            min_chunk: MIN_SWEEP_CHUNK,
            max_chunk: MAX_SWEEP_CHUNK,
        }
    }
}

impl Limits {
    /// Whether a compaction sweep is due: the journal outgrew the table, or the unsettled
    /// changes the writer keeps in memory grew past their share.
    pub(super) fn sweep_due(&self, journal_records: u64, n_unsettled: u64, n_hosts: usize) -> bool {
        let n_hosts = n_hosts as u64;
        journal_records > self.min_journal.max(n_hosts)
            || n_unsettled
                > self
                    .min_journal
                    .max((n_hosts as f64 * SWEEP_UNSETTLED_PER_HOST) as u64)
    }

    /// How many dirty entries the sweep writes in a turn with `n_reports` reports.
    pub(super) fn sweep_chunk(&self, n_reports: usize) -> usize {
        n_reports.clamp(self.min_chunk, self.max_chunk)
    }
}

/// Address changes in the journal that the sweep has not yet settled into the store's
/// `history`, by host. The writer adds a commit's changes and removes those it settles;
/// the server's history readers add a host's to what the store's `history` holds, which
/// spares them decoding the whole journal.
#[derive(Debug, Default)]
pub struct Recent {
    by_host: Mutex<HashMap<Name, Vec<HeldChange>>>,
}

/// One unsettled change of a host, as [`Recent`] holds it: the host is the map's key, not
/// repeated (40 bytes a change, beside a 64-byte map entry a host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeldChange {
    /// The history id the commit gave it.
    id: i64,
    at: Time,
    addr: IpAddr,
}

impl Recent {
    /// A host's unsettled changes.
    pub fn of(&self, name: &Name) -> Vec<LoggedChange> {
        self.lock()
            .get_key_value(name)
            .map(|(name, changes)| logged(name, changes).collect())
            .unwrap_or_default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<Name, Vec<HeldChange>>> {
        state::lock(&self.by_host)
    }
}

/// Adds `changes`, just committed (or found unsettled in the journal at start-up).
pub(super) fn hold(by_host: &mut HashMap<Name, Vec<HeldChange>>, changes: Vec<LoggedChange>) {
    for LoggedChange { id, change } in changes {
        by_host.entry(change.name).or_default().push(HeldChange {
            id,
            at: change.at,
            addr: change.addr,
        });
    }
}

/// A host's unsettled changes as the store takes them.
pub(super) fn logged<'a>(
    name: &'a Name,
    changes: &'a [HeldChange],
) -> impl Iterator<Item = LoggedChange> + 'a {
    changes
        .iter()
        .map(|&HeldChange { id, at, addr }| LoggedChange {
            id,
            change: HistoryRow {
                name: name.clone(),
                at,
                addr,
            },
        })
}

pub(super) struct Sweep {
    /// Journal entries below this were written before the sweep began: every host they
    /// touch was dirty then and is written (and its changes settled) by the sweep, so
    /// they can go when it ends.
    pub(super) start: i64,
    pub(super) phase: Phase,
}

pub(super) enum Phase {
    /// Writing dirty records; the next chunk starts after this name.
    Scan { after: Option<Name> },
    /// Every dirty record is written: dropping the journal entries below `start`.
    Drop,
}

/// When the history is next pruned, of changes older than `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prune {
    pub(super) max_age: std::time::Duration,
    pub(super) next: Instant,
}

impl Prune {
    /// Pruning from `now` on: the first turn prunes.
    pub(super) fn new(max_age: std::time::Duration, now: Instant) -> Prune {
        Prune { max_age, next: now }
    }

    /// The time before which a turn at `now` prunes the history, when a prune is due.
    pub(super) fn before(&self, now: Now) -> Option<Time> {
        if self.next > now.instant {
            return None;
        }
        let max_age = i64::try_from(self.max_age.as_micros()).unwrap_or(i64::MAX);
        Some(Time::from_micros(
            now.time.as_micros().saturating_sub(max_age),
        ))
    }

    /// After a prune at `now` that deleted `n_pruned` rows: the next one after
    /// [`PRUNE_PAUSE`] while there are more (it found a whole chunk), else in
    /// [`PRUNE_EVERY`].
    pub(super) fn pruned(&mut self, n_pruned: u64, now: Instant) {
        self.next = if n_pruned >= PRUNE_ROWS_PER_TURN as u64 {
            now + PRUNE_PAUSE
        } else {
            now + PRUNE_EVERY
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a sweep is due with `journal_records` and `n_unsettled` over `n_hosts`.
    fn check_due(journal_records: u64, n_unsettled: u64, n_hosts: usize, expect: bool) {
        assert_eq!(
            Limits::default().sweep_due(journal_records, n_unsettled, n_hosts),
            expect,
            "{journal_records} journal records, {n_unsettled} unsettled, {n_hosts} hosts"
        );
    }

    #[test]
    fn a_sweep_is_due_when_the_journal_or_the_unsettled_history_outgrows_its_share() {
        // Few hosts: 65,536 of either.
        check_due(65_536, 65_536, 10, false);
        check_due(65_537, 0, 10, true);
        check_due(0, 65_537, 10, true);
        check_due(0, 0, 0, false);
        // 1,000,000 hosts: a journal record each, or an unsettled change per eight.
        check_due(1_000_000, 125_000, 1_000_000, false);
        check_due(1_000_001, 0, 1_000_000, true);
        check_due(0, 125_001, 1_000_000, true);
        // 100,000 hosts: an eighth is below the floor, so the floor counts.
        check_due(100_000, 65_536, 100_000, false);
        check_due(100_001, 0, 100_000, true);
        check_due(0, 65_537, 100_000, true);
    }

    #[test]
    fn a_held_change_is_40_bytes_as_the_sweep_threshold_counts() {
        assert_eq!(std::mem::size_of::<HeldChange>(), 40);
    }

    #[test]
    fn a_sweep_chunk_is_the_batch_within_its_bounds() {
        let limits = Limits::default();
        for (n_reports, expect) in [
            (0, 128),
            (1, 128),
            (128, 128),
            (500, 500),
            (2048, 2048),
            (4096, 2048),
        ] {
            assert_eq!(limits.sweep_chunk(n_reports), expect, "{n_reports} reports");
        }
    }

    /// The clock at `secs` seconds after `start`, the wall clock reading `secs` s too.
    fn at(start: Instant, secs: f64) -> Now {
        Now {
            time: Time::from_micros((secs * 1e6) as i64),
            instant: start + std::time::Duration::from_secs_f64(secs),
        }
    }

    #[test]
    fn a_prune_is_due_at_its_time_and_deletes_what_is_older_than_the_limit() {
        let start = Instant::now();
        let prune = Prune::new(std::time::Duration::from_secs(10), at(start, 5.0).instant);
        for (secs, expect) in [
            (4.9, None),
            (5.0, Some(Time::from_micros(-5_000_000))),
            (100.0, Some(Time::from_micros(90_000_000))),
        ] {
            assert_eq!(prune.before(at(start, secs)), expect, "at {secs} s");
        }
        // A limit longer than the clock can count: nothing is older.
        let forever = Prune::new(std::time::Duration::MAX, start);
        assert_eq!(
            forever.before(at(start, 1.0)),
            Some(Time::from_micros(1_000_000 - i64::MAX))
        );
    }

    #[test]
    fn a_prune_comes_back_in_a_minute_or_in_100_ms_while_it_is_behind() {
        let start = Instant::now();
        let chunk = PRUNE_ROWS_PER_TURN as u64;
        for (n_pruned, pause) in [
            (0, PRUNE_EVERY),
            (1, PRUNE_EVERY),
            (chunk - 1, PRUNE_EVERY),
            (chunk, PRUNE_PAUSE),
        ] {
            let mut prune = Prune::new(std::time::Duration::from_secs(10), start);
            let now = at(start, 30.0);
            prune.pruned(n_pruned, now.instant);
            assert_eq!(prune.next, now.instant + pause, "after {n_pruned} rows");
            assert_eq!(
                prune.before(at(start, 30.0 + pause.as_secs_f64() - 0.001)),
                None
            );
            assert!(prune
                .before(at(start, 30.0 + pause.as_secs_f64()))
                .is_some());
        }
        // Behind on a long history: ten chunks a second at most.
        assert_eq!(PRUNE_PAUSE, std::time::Duration::from_millis(100));
        assert_eq!(PRUNE_EVERY, std::time::Duration::from_secs(60));
    }
}
