//! [`Store`]: the SQLite schema, its migrations, and every statement.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use super::journal::{decode_changes, decode_records, encode_changes, encode_records};
use super::txt::SCHEMA_TXT;
use super::{
    crash_point, CrashPoint, HistoryRow, Loaded, LoggedChange, PendingChanges, Progress, Removed,
    StoreError, Turn, DROP_ENTRIES_PER_TURN, PRUNE_ROWS_PER_TURN,
};
use crate::model::name::Name;
use crate::model::record::{Record, Seen, Time};
use crate::state::table::Entry;

/// `PRAGMA application_id`: "dyni" in ASCII, so `file(1)` and we can tell our stores.
const APPLICATION_ID: i64 = 0x6479_6e69;
/// `PRAGMA user_version`: the schema this build writes and reads. Version 2 added
/// `hosts.offline`, version 3 `history_log`, version 4 replaced that table with
/// `journal.changes`; an older store is read as it is, and migrated when the server opens
/// it (an `ALTER TABLE`, and for version 3 its log rows copied into `history`). Version 5
/// added the notifications' `events`, `deliveries` (the outbox) and `stale_hosts`;
/// version 6 the TXT records' `txt`.
pub(super) const SCHEMA_VERSION: i64 = 6;
/// Page cache of the writer's connection, in KiB: large enough that a compaction chunk's
/// pages stay cached between the read and the write of the B-tree, small against the
/// per-host memory budget (300 bytes × 1,000,000 hosts).
const CACHE_KIB: i64 = 8192;
/// The writer's own automatic checkpoint, in pages: only a fallback for when the
/// checkpointer falls behind (64 MiB of log), instead of SQLite's 1,000 pages.
const FALLBACK_CHECKPOINT_PAGES: i64 = 16_384;

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    ipv4 TEXT, ipv4_last_seen INTEGER, ipv4_last_change INTEGER,
    ipv6 TEXT, ipv6_last_seen INTEGER, ipv6_last_change INTEGER,
    signed_at INTEGER,
    offline INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    n_records INTEGER NOT NULL,
    records BLOB NOT NULL,
    changes BLOB
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX history_by_name ON history (name_key, at);
INSERT INTO meta (key, value) VALUES ('reports', 0);
";
/// The notifications' tables (version 5): each event once, and its delivery to each sink
/// that wants it; a `pending` delivery is the outbox. `stale_hosts` holds the hosts whose
/// going stale was announced, so that a restart does not announce it again.
const SCHEMA_EVENTS: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    ipv4_old TEXT, ipv4_new TEXT, ipv6_old TEXT, ipv6_new TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    event INTEGER NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    settled_at INTEGER,
    detail TEXT,
    PRIMARY KEY (event, sink)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stale_hosts (name TEXT PRIMARY KEY, since INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_event', 1);
";
/// From version 3 to 4: the log's rows, settled or not, go into `history`.
const MIGRATE_LOG: &str = "
INSERT OR IGNORE INTO history (id, name, name_key, at, address)
    SELECT id, name, name_key, at, address FROM history_log;
DROP TABLE history_log;
";

/// Each address change is written twice: into its commit's journal entry, then into
/// `history` when the sweep writes its host, in name order (an indexed insert per change
/// was a random 4 KiB page per report, a third of the writer's time). Both hold it until
/// the entry is dropped: the same `id`, read once ([`Store::history`]).
///
/// `name_key` is the name as compared ([`Name::folded`]): SQLite's `NOCASE` folds ASCII
/// only, and names are compared with full Unicode lowercase.
const INSERT_HISTORY: &str =
    "INSERT INTO history (id, name, name_key, at, address) VALUES (?1, ?2, ?3, ?4, ?5)";
const SETTLE_HISTORY: &str =
    "INSERT OR IGNORE INTO history (id, name, name_key, at, address) VALUES (?1, ?2, ?3, ?4, ?5)";

const RECORD_COLUMNS: &str = "name, seq, first_seen, ipv4, ipv4_last_seen, ipv4_last_change, \
                              ipv6, ipv6_last_seen, ipv6_last_change, signed_at, offline";

pub struct Store {
    pub(super) conn: Connection,
    path: PathBuf,
    /// A version-1 store, opened read-only: it has no `offline` column (none is offline).
    before_offline: bool,
    /// A store from before version 4, opened read-only: its journal has no changes.
    before_changes: bool,
    /// A store of version 3, opened read-only: changes not yet settled are in
    /// `history_log`.
    has_log: bool,
    /// A store from before version 5, opened read-only: it has no events.
    pub(super) before_events: bool,
    /// A store from before version 6, opened read-only: it has no TXT records.
    pub(super) before_txt: bool,
}

impl Store {
    /// Opens the store for the server, creating it if there is none, and checks it
    /// (`PRAGMA quick_check`) before writing anything.
    ///
    /// # Errors
    /// A damaged, foreign or newer store is refused untouched.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut store = Store::connect(path, flags)?;
        if store.check_header()? {
            store.check_pages()?;
            store.migrate()?;
        } else {
            store.create()?;
        }
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -{CACHE_KIB}; \
                 PRAGMA wal_autocheckpoint = {FALLBACK_CHECKPOINT_PAGES};"
            ))
            .map_err(|source| store.sql(source))?;
        Ok(store)
    }

    /// Opens an existing store for reading (`list`, `history`), beside a running server
    /// or not. Writes nothing.
    ///
    /// # Errors
    /// A missing store is an error here, as is a damaged, foreign or newer one.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut store = Store::connect(path, flags)?;
        if !store.check_header()? {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let version = store.version()?;
        store.before_offline = version < 2;
        store.before_changes = version < 4;
        store.has_log = version == 3;
        store.before_events = version < 5;
        store.before_txt = version < 6;
        Ok(store)
    }

    pub(super) fn connect(path: &Path, flags: OpenFlags) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            before_offline: false,
            before_changes: false,
            has_log: false,
            before_events: false,
            before_txt: false,
        };
        store
            .conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|source| store.sql(source))?;
        Ok(store)
    }

    /// Reads the header: `true` for a dynip store, `false` for an empty file.
    fn check_header(&self) -> Result<bool, StoreError> {
        let application_id: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        let n_objects: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        if application_id == 0 && n_objects == 0 {
            return Ok(false);
        }
        if application_id != APPLICATION_ID {
            return Err(StoreError::Foreign(self.path.clone()));
        }
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
            });
        }
        Ok(true)
    }

    fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|source| self.classify(source))
    }

    /// Brings an older schema up to this one, in one transaction.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let version = self.version()?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let mut steps = String::new();
        if version < 2 {
            steps.push_str("ALTER TABLE hosts ADD COLUMN offline INTEGER NOT NULL DEFAULT 0;");
        }
        if version == 3 {
            steps.push_str(MIGRATE_LOG);
        }
        if version < 4 {
            steps.push_str("ALTER TABLE journal ADD COLUMN changes BLOB;");
        }
        steps.push_str(SCHEMA_EVENTS);
        steps.push_str(SCHEMA_TXT);
        let tx = self.conn.transaction().map_err(|e| sql(&self.path, e))?;
        tx.execute_batch(&steps)
            .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
            .and_then(|()| tx.commit())
            .map_err(|e| sql(&self.path, e))
    }

    fn check_pages(&self) -> Result<(), StoreError> {
        let verdict: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        if verdict != "ok" {
            return Err(self.corrupt(verdict));
        }
        Ok(())
    }

    fn create(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| sql(&self.path, e))?;
        tx.execute_batch(SCHEMA)
            .and_then(|()| tx.execute_batch(SCHEMA_EVENTS))
            .and_then(|()| tx.execute_batch(SCHEMA_TXT))
            .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
            .and_then(|()| tx.commit())
            .map_err(|e| sql(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store holds no host at all (the condition for importing the original's
    /// JSON file).
    ///
    /// # Errors
    /// On a failed query.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let any: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM hosts) OR EXISTS (SELECT 1 FROM journal)",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.classify(source))?;
        Ok(any.is_none())
    }

    /// Reads the snapshot and replays the journal over it.
    ///
    /// # Errors
    /// A row that does not decode means a damaged store.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut snapshot = Vec::new();
        let mut statement = self
            .conn
            .prepare(&if self.before_offline {
                format!(
                    "SELECT {}, 0 FROM hosts",
                    RECORD_COLUMNS.trim_end_matches(", offline")
                )
            } else {
                format!("SELECT {RECORD_COLUMNS} FROM hosts")
            })
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            snapshot.push(self.decode_row(row)?);
        }
        let mut hosts: BTreeMap<Name, Entry> = snapshot.into_iter().collect();

        let mut next_seq = 1;
        let mut journal_records = 0;
        let settled_max: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM history", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        let mut next_history_id = settled_max.unwrap_or(0) + 1;
        let mut unsettled = Vec::new();
        let mut statement = self
            .conn
            .prepare(self.journal_query())
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let seq: i64 = row.get(0).map_err(|e| self.classify(e))?;
            let blob: Vec<u8> = row.get(1).map_err(|e| self.classify(e))?;
            let changes: Option<Vec<u8>> = row.get(2).map_err(|e| self.classify(e))?;
            next_seq = seq + 1;
            if let Some(changes) = changes {
                let changes = decode_changes(&changes).map_err(|detail| {
                    self.corrupt(format!("journal entry {seq}'s changes: {detail}"))
                })?;
                if let Some(last) = changes.iter().map(|logged| logged.id).max() {
                    next_history_id = next_history_id.max(last + 1);
                }
                unsettled.extend(self.not_settled(changes)?);
            }
            let records = decode_records(&blob)
                .map_err(|detail| self.corrupt(format!("journal entry {seq}: {detail}")))?;
            for (name, record) in records {
                journal_records += 1;
                // Not in the snapshot yet: the next sweep must write it before it drops
                // the journal entry.
                let entry = Entry {
                    record,
                    seq,
                    dirty: true,
                };
                match hosts.get_mut(&name) {
                    Some(current) if current.seq >= entry.seq => {}
                    Some(current) => *current = entry,
                    None => {
                        hosts.insert(name, entry);
                    }
                }
            }
        }
        let last_snapshot_seq: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM hosts", [], |row| row.get(0))
            .map_err(|source| self.classify(source))?;
        next_seq = next_seq.max(last_snapshot_seq.unwrap_or(0) + 1);
        Ok(Loaded {
            hosts,
            txt: self.txt()?,
            accounts: self.acme_accounts()?,
            progress: Progress {
                next_seq,
                journal_records,
                next_history_id,
                unsettled,
            },
        })
    }

    /// The journal's entries in order: sequence number, records, changes (`NULL` before
    /// version 4).
    fn journal_query(&self) -> &'static str {
        if self.before_changes {
            "SELECT seq, records, NULL FROM journal ORDER BY seq"
        } else {
            "SELECT seq, records, changes FROM journal ORDER BY seq"
        }
    }

    /// Those of one journal entry's `changes` that are not in `history` yet.
    fn not_settled(&self, changes: Vec<LoggedChange>) -> Result<Vec<LoggedChange>, StoreError> {
        let (Some(first), Some(last)) = (
            changes.iter().map(|logged| logged.id).min(),
            changes.iter().map(|logged| logged.id).max(),
        ) else {
            return Ok(changes);
        };
        let mut statement = self
            .conn
            .prepare_cached("SELECT id FROM history WHERE id BETWEEN ?1 AND ?2")
            .map_err(|source| self.classify(source))?;
        let settled = statement
            .query_map([first, last], |row| row.get::<_, i64>(0))
            .and_then(Iterator::collect::<rusqlite::Result<std::collections::HashSet<i64>>>)
            .map_err(|source| self.classify(source))?;
        Ok(changes
            .into_iter()
            .filter(|logged| !settled.contains(&logged.id))
            .collect())
    }

    fn decode_row(&self, row: &Row<'_>) -> Result<(Name, Entry), StoreError> {
        let decode = || -> Result<Result<(Name, Entry), String>, rusqlite::Error> {
            let name: String = row.get(0)?;
            let Ok(name) = Name::parse(&name) else {
                return Ok(Err(format!("bad host name {name:?}")));
            };
            let seq: i64 = row.get(1)?;
            let first_seen = Time::from_micros(row.get(2)?);
            let v4 = match decode_seen::<Ipv4Addr>(row, 3)? {
                Ok(seen) => seen,
                Err(detail) => return Ok(Err(format!("host {name}: {detail}"))),
            };
            let v6 = match decode_seen::<Ipv6Addr>(row, 6)? {
                Ok(seen) => seen,
                Err(detail) => return Ok(Err(format!("host {name}: {detail}"))),
            };
            let signed_at = row.get::<_, Option<i64>>(9)?.map(Time::from_micros);
            let offline = row.get::<_, i64>(10)? != 0;
            let record = Record {
                first_seen,
                v4,
                v6,
                signed_at,
                offline,
            };
            let dirty = false;
            Ok(Ok((name, Entry { record, seq, dirty })))
        };
        match decode() {
            Ok(Ok(decoded)) => Ok(decoded),
            Ok(Err(detail)) => Err(self.corrupt(detail)),
            Err(source) => Err(self.corrupt(source.to_string())),
        }
    }

    /// Writes imported hosts straight into the snapshot, and their addresses into the
    /// history, in one transaction.
    ///
    /// # Errors
    /// On a failed write; nothing is written then.
    pub fn import(
        &mut self,
        hosts: &[(Name, Record)],
        history: &[HistoryRow],
    ) -> Result<(), StoreError> {
        self.import_all(hosts, history, &Turn::default())
    }

    /// As [`Store::import`], with the TXT records and acme-dns accounts of `rest` (its
    /// `txt` and `accounts`), in the same transaction: another store's whole state.
    ///
    /// # Errors
    /// On a failed write; nothing is written then.
    pub fn import_all(
        &mut self,
        hosts: &[(Name, Record)],
        history: &[HistoryRow],
        rest: &Turn<'_>,
    ) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(|e| sql(path, e))?;
        {
            let mut insert_host = tx
                .prepare(&insert_sql("INSERT OR REPLACE INTO hosts"))
                .map_err(|e| sql(path, e))?;
            for (name, record) in hosts {
                let entry = Entry {
                    record: *record,
                    seq: 0,
                    dirty: false,
                };
                bind_record(&mut insert_host, name, &entry).map_err(|e| sql(path, e))?;
            }
            insert_history(&tx, INSERT_HISTORY, history.iter().map(|row| (None, row)))
                .map_err(|e| sql(path, e))?;
            super::txt::write(&tx, rest).map_err(|e| sql(path, e))?;
        }
        tx.commit().map_err(|e| sql(path, e))
    }

    /// Every address change, oldest first: those in `history`, and `unsettled` (the
    /// journal's, from [`Store::load`]). For copying the store elsewhere.
    ///
    /// # Errors
    /// On a failed query or a row that does not decode.
    pub fn all_history(&self, unsettled: &[LoggedChange]) -> Result<Vec<HistoryRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT id, name, at, address FROM history")
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        let mut changes = BTreeMap::new();
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let id: i64 = row.get(0).map_err(|e| self.classify(e))?;
            let name: String = row.get(1).map_err(|e| self.classify(e))?;
            let at: i64 = row.get(2).map_err(|e| self.classify(e))?;
            let address: String = row.get(3).map_err(|e| self.classify(e))?;
            let change = HistoryRow {
                name: Name::parse(&name)
                    .map_err(|_| self.corrupt(format!("bad name {name:?} in history")))?,
                at: Time::from_micros(at),
                addr: address
                    .parse()
                    .map_err(|_| self.corrupt(format!("bad address {address:?} in history")))?,
            };
            changes.insert(id, change);
        }
        for logged in unsettled {
            changes.insert(logged.id, logged.change.clone());
        }
        let mut changes: Vec<(i64, HistoryRow)> = changes.into_iter().collect();
        changes.sort_by_key(|(id, change)| (change.at, *id));
        Ok(changes.into_iter().map(|(_, change)| change).collect())
    }

    /// Commits one turn of the writer in one transaction: when this returns `Ok`, all of
    /// it is durable; on an error, none of it was written. Returns what it removed.
    ///
    /// # Errors
    /// On a failed write.
    pub fn commit(&mut self, turn: &Turn<'_>) -> Result<Removed, StoreError> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(|e| sql(path, e))?;
        let removed = (|| -> rusqlite::Result<Removed> {
            if !turn.records.is_empty() || !turn.history.is_empty() {
                let changes = (!turn.history.is_empty()).then(|| encode_changes(turn.history));
                tx.prepare_cached(
                    "INSERT INTO journal (seq, n_records, records, changes) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    turn.seq,
                    turn.records.len() as i64,
                    encode_records(
                        turn.records
                            .iter()
                            .map(|(name, entry)| (name, &entry.record))
                    ),
                    changes
                ])?;
                crash_point(CrashPoint::JournalAppended);
            }
            insert_history(
                &tx,
                SETTLE_HISTORY,
                turn.settle
                    .iter()
                    .map(|logged| (Some(logged.id), &logged.change)),
            )?;
            if !turn.settle.is_empty() {
                crash_point(CrashPoint::HistorySettled);
            }
            if turn.n_reports > 0 {
                tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = 'reports'")?
                    .execute([turn.n_reports as i64])?;
                crash_point(CrashPoint::ReportsCounted);
            }
            if !turn.snapshot.is_empty() {
                let mut upsert = tx.prepare_cached(&insert_sql("INSERT OR REPLACE INTO hosts"))?;
                for (name, entry) in turn.snapshot {
                    bind_record(&mut upsert, name, entry)?;
                }
                crash_point(CrashPoint::SnapshotWritten);
            }
            let mut n_dropped = 0u64;
            if let Some(before) = turn.drop_before {
                let mut delete = tx.prepare_cached(
                    "DELETE FROM journal WHERE seq IN \
                     (SELECT seq FROM journal WHERE seq < ?1 ORDER BY seq LIMIT ?2) \
                     RETURNING n_records",
                )?;
                let mut rows = delete.query(params![before, DROP_ENTRIES_PER_TURN])?;
                while let Some(row) = rows.next()? {
                    n_dropped += row.get::<_, i64>(0)? as u64;
                }
                crash_point(CrashPoint::JournalDropped);
            }
            let mut n_pruned = 0u64;
            if let Some(before) = turn.prune_before {
                // History ids rise with time, so the oldest rows come first by id: the
                // subquery reads at most a chunk of the table, whatever it holds.
                n_pruned = tx
                    .prepare_cached(
                        "DELETE FROM history WHERE id IN \
                         (SELECT id FROM history ORDER BY id LIMIT ?2) AND at < ?1",
                    )?
                    .execute(params![before.as_micros(), PRUNE_ROWS_PER_TURN])?
                    as u64;
                crash_point(CrashPoint::HistoryPruned);
            }
            super::outbox::write(&tx, turn)?;
            super::txt::write(&tx, turn)?;
            if !turn.events.is_empty() || !turn.settled.is_empty() {
                crash_point(CrashPoint::OutboxWritten);
            }
            Ok(Removed {
                n_dropped,
                n_pruned,
            })
        })()
        .map_err(|e| sql(path, e))?;
        tx.commit().map_err(|e| sql(path, e))?;
        crash_point(CrashPoint::Committed);
        Ok(removed)
    }

    /// Whether journal entries below `before` remain.
    ///
    /// # Errors
    /// On a failed query.
    pub fn has_before(&self, before: i64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM journal WHERE seq < ?1)",
                [before],
                |row| row.get(0),
            )
            .map_err(|e| sql(&self.path, e))
    }

    /// A host's address changes, oldest first: those in `history`, and those not yet
    /// settled there, from `pending`.
    ///
    /// # Errors
    /// On a failed query or a row that does not decode.
    pub fn history(
        &self,
        name: &Name,
        pending: PendingChanges<'_>,
    ) -> Result<Vec<(Time, IpAddr)>, StoreError> {
        let query = if self.has_log {
            "SELECT id, at, address FROM history WHERE name_key = ?1 \
             UNION SELECT id, at, address FROM history_log WHERE name_key = ?1"
        } else {
            "SELECT id, at, address FROM history WHERE name_key = ?1"
        };
        let mut statement = self
            .conn
            .prepare_cached(query)
            .map_err(|source| self.classify(source))?;
        let mut rows = statement
            .query([name.folded()])
            .map_err(|source| self.classify(source))?;
        let mut changes = BTreeMap::new();
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let id: i64 = row.get(0).map_err(|e| self.classify(e))?;
            let at: i64 = row.get(1).map_err(|e| self.classify(e))?;
            let address: String = row.get(2).map_err(|e| self.classify(e))?;
            let addr = address
                .parse()
                .map_err(|_| self.corrupt(format!("bad address {address:?} in history")))?;
            changes.insert(id, (Time::from_micros(at), addr));
        }
        let mut add = |logged: &LoggedChange| {
            if logged.change.name == *name {
                changes.insert(logged.id, (logged.change.at, logged.change.addr));
            }
        };
        match pending {
            PendingChanges::Given(given) => given.iter().for_each(add),
            PendingChanges::Journal if self.before_changes => {}
            PendingChanges::Journal => {
                // Every entry's changes: as many as the journal holds records at most
                // (a sweep starts when those outnumber the hosts, or 65,536).
                let mut statement = self
                    .conn
                    .prepare_cached(
                        "SELECT seq, changes FROM journal WHERE changes IS NOT NULL ORDER BY seq",
                    )
                    .map_err(|source| self.classify(source))?;
                let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
                while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
                    let seq: i64 = row.get(0).map_err(|e| self.classify(e))?;
                    let blob: Vec<u8> = row.get(1).map_err(|e| self.classify(e))?;
                    decode_changes(&blob)
                        .map_err(|detail| {
                            self.corrupt(format!("journal entry {seq}'s changes: {detail}"))
                        })?
                        .iter()
                        .for_each(&mut add);
                }
            }
        }
        let mut changes: Vec<(i64, (Time, IpAddr))> = changes.into_iter().collect();
        changes.sort_by_key(|&(id, (at, _))| (at, id));
        Ok(changes.into_iter().map(|(_, change)| change).collect())
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        sql(&self.path, source)
    }

    pub(super) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Maps a read error: damage and "not a database" are the file's fault.
    pub(super) fn classify(&self, source: rusqlite::Error) -> StoreError {
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                self.corrupt(source.to_string())
            }
            _ => self.sql(source),
        }
    }
}

#[cfg(test)]
impl Store {
    /// Closes the store as a crash leaves it: without the checkpoint SQLite makes when
    /// the last connection closes, so the write-ahead log stays for the next open to
    /// recover from.
    pub(crate) fn close_as_crashed(self) {
        self.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .expect("SQLite has had NO_CKPT_ON_CLOSE since 3.16.2");
    }
}

fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_path_buf(),
        source,
    }
}

/// Inserts history rows with `sql` ([`INSERT_HISTORY`] or [`SETTLE_HISTORY`]); an `id` of
/// `None` lets SQLite choose.
fn insert_history<'r>(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    rows: impl IntoIterator<Item = (Option<i64>, &'r HistoryRow)>,
) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached(sql)?;
    for (id, change) in rows {
        statement.execute(params![
            id,
            change.name.as_str(),
            change.name.folded(),
            change.at.as_micros(),
            change.addr.to_string()
        ])?;
    }
    Ok(())
}

fn insert_sql(verb: &str) -> String {
    format!("{verb} ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
}

/// One family's three columns: address, last seen, last change (all NULL when absent).
fn seen_columns<A: std::fmt::Display>(
    seen: Option<Seen<A>>,
) -> (Option<String>, Option<i64>, Option<i64>) {
    match seen {
        Some(seen) => (
            Some(seen.addr.to_string()),
            Some(seen.last_seen.as_micros()),
            Some(seen.last_change.as_micros()),
        ),
        None => (None, None, None),
    }
}

fn bind_record(
    statement: &mut rusqlite::Statement<'_>,
    name: &Name,
    entry: &Entry,
) -> rusqlite::Result<()> {
    let record = &entry.record;
    let v4 = seen_columns(record.v4);
    let v6 = seen_columns(record.v6);
    statement.execute(params![
        name.as_str(),
        entry.seq,
        record.first_seen.as_micros(),
        v4.0,
        v4.1,
        v4.2,
        v6.0,
        v6.1,
        v6.2,
        record.signed_at.map(Time::as_micros),
        record.offline,
    ])?;
    Ok(())
}

/// Reads one family's three columns starting at `first`: all NULL, or all set.
fn decode_seen<A: std::str::FromStr>(
    row: &Row<'_>,
    first: usize,
) -> rusqlite::Result<Result<Option<Seen<A>>, String>> {
    let addr: Option<String> = row.get(first)?;
    let last_seen: Option<i64> = row.get(first + 1)?;
    let last_change: Option<i64> = row.get(first + 2)?;
    Ok(super::seen_from_columns(addr, last_seen, last_change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_survives_in_the_snapshot_and_old_stores_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.sqlite3");
        let mut offline = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(1));
        offline.offline = true;
        let online = Record::new("203.0.113.8".parse().unwrap(), Time::from_micros(2));
        let hosts = vec![
            (Name::parse("away").unwrap(), offline),
            (Name::parse("home").unwrap(), online),
        ];
        let offline_of = |store: &Store| -> Vec<(String, bool)> {
            let loaded = store.load().unwrap().hosts;
            loaded
                .iter()
                .map(|(name, entry)| (name.to_string(), entry.record.offline))
                .collect()
        };
        {
            let mut store = Store::open(&path).unwrap();
            store.import(&hosts, &[]).unwrap();
            assert_eq!(
                offline_of(&store),
                [("away".to_string(), true), ("home".to_string(), false)]
            );
            // As a store of version 1 was: no offline column.
            store
                .conn
                .execute_batch(
                    "ALTER TABLE hosts DROP COLUMN offline; ALTER TABLE journal DROP COLUMN \
                     changes; PRAGMA user_version = 1;",
                )
                .unwrap();
        }
        let old = Store::open_read_only(&path).unwrap();
        assert_eq!(
            offline_of(&old),
            [("away".to_string(), false), ("home".to_string(), false)]
        );
        drop(old);
        let migrated = Store::open(&path).unwrap();
        assert_eq!(migrated.version().unwrap(), SCHEMA_VERSION);
        assert_eq!(
            offline_of(&migrated),
            [("away".to_string(), false), ("home".to_string(), false)]
        );
    }

    #[test]
    fn pruning_deletes_the_oldest_changes_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("dynip.sqlite3")).unwrap();
        let pc = Name::parse("pc").unwrap();
        let n_rows = PRUNE_ROWS_PER_TURN + 10;
        // Change `id` at `id` µs.
        let settled: Vec<LoggedChange> = (1..=n_rows)
            .map(|id| LoggedChange {
                id,
                change: HistoryRow {
                    name: pc.clone(),
                    at: Time::from_micros(id),
                    addr: "203.0.113.1".parse().unwrap(),
                },
            })
            .collect();
        store
            .commit(&Turn {
                settle: &settled,
                ..Turn::default()
            })
            .unwrap();
        let prune = |store: &mut Store, before: i64| {
            store
                .commit(&Turn {
                    prune_before: Some(Time::from_micros(before)),
                    ..Turn::default()
                })
                .unwrap()
                .n_pruned
        };
        let remaining = |store: &Store| {
            let changes = store.history(&pc, PendingChanges::Given(&[])).unwrap();
            changes.first().map(|(at, _)| at.as_micros())
        };
        // Everything but the last 5 is older: a chunk in the first turn, the rest next.
        let before = n_rows - 4;
        assert_eq!(prune(&mut store, before), PRUNE_ROWS_PER_TURN as u64);
        assert_eq!(remaining(&store), Some(PRUNE_ROWS_PER_TURN + 1));
        assert_eq!(prune(&mut store, before), 5);
        assert_eq!(remaining(&store), Some(before));
        assert_eq!(prune(&mut store, before), 0, "nothing older is left");
        assert_eq!(
            store
                .history(&pc, PendingChanges::Given(&[]))
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn history_is_read_whole_while_journaled_settled_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.sqlite3");
        let pc = Name::parse("PC").unwrap();
        let change = |id: i64, addr: &str| LoggedChange {
            id,
            change: HistoryRow {
                name: pc.clone(),
                at: Time::from_micros(id * 10),
                addr: addr.parse().unwrap(),
            },
        };
        let logged = [
            change(1, "203.0.113.1"),
            change(2, "203.0.113.2"),
            change(3, "2001:db8::3"),
        ];
        let expected: Vec<(Time, IpAddr)> = logged
            .iter()
            .map(|logged| (logged.change.at, logged.change.addr))
            .collect();
        let mut store = Store::open(&path).unwrap();
        store
            .commit(&Turn {
                seq: 1,
                history: &logged[..2],
                ..Turn::default()
            })
            .unwrap();
        store
            .commit(&Turn {
                seq: 2,
                history: &logged[2..],
                ..Turn::default()
            })
            .unwrap();
        let folded = Name::parse("pc").unwrap();
        let journal = PendingChanges::Journal;
        assert_eq!(
            store.history(&folded, journal).unwrap(),
            expected,
            "from the journal"
        );
        assert_eq!(
            store.history(&pc, PendingChanges::Given(&[])).unwrap(),
            [],
            "none settled"
        );
        let progress = store.load().unwrap().progress;
        assert_eq!(progress.next_history_id, 4);
        assert_eq!(progress.unsettled, logged);

        // Two changes settled: in `history` and in the journal, read once.
        store
            .commit(&Turn {
                seq: 3,
                settle: &logged[..2],
                ..Turn::default()
            })
            .unwrap();
        assert_eq!(
            store.history(&pc, journal).unwrap(),
            expected,
            "settled in part"
        );
        let given = PendingChanges::Given(&logged[2..]);
        assert_eq!(
            store.history(&pc, given).unwrap(),
            expected,
            "the rest given"
        );
        assert_eq!(store.load().unwrap().progress.unsettled, logged[2..]);

        // The end of a sweep that began before entry 2: entry 1, all settled, goes.
        assert!(store.has_before(2).unwrap());
        store
            .commit(&Turn {
                seq: 4,
                drop_before: Some(2),
                ..Turn::default()
            })
            .unwrap();
        assert!(!store.has_before(2).unwrap());
        assert_eq!(
            store.history(&pc, journal).unwrap(),
            expected,
            "after the drop"
        );
        assert_eq!(store.load().unwrap().progress.next_history_id, 4);
        drop(store);

        // A store of version 3: the unsettled change in `history_log`.
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch(
                "CREATE TABLE history_log (id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 name_key TEXT NOT NULL, at INTEGER NOT NULL, address TEXT NOT NULL); \
                 INSERT INTO history_log VALUES (3, 'PC', 'pc', 30, '2001:db8::3'); \
                 DELETE FROM journal; ALTER TABLE journal DROP COLUMN changes; \
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        drop(store);
        let old = Store::open_read_only(&path).unwrap();
        assert_eq!(old.history(&pc, journal).unwrap(), expected, "version 3");
        drop(old);
        let migrated = Store::open(&path).unwrap();
        assert_eq!(migrated.version().unwrap(), SCHEMA_VERSION);
        assert_eq!(
            migrated.history(&pc, PendingChanges::Given(&[])).unwrap(),
            expected
        );
        assert_eq!(migrated.load().unwrap().progress.next_history_id, 4);
        drop(migrated);

        // A store from before the log: its history is read from the indexed table alone.
        let store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch(
                "DELETE FROM history WHERE id = 3; ALTER TABLE journal DROP COLUMN changes; \
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        drop(store);
        let old = Store::open_read_only(&path).unwrap();
        assert_eq!(old.history(&pc, journal).unwrap(), expected[..2]);
        assert_eq!(old.load().unwrap().progress.next_history_id, 3);
        drop(old);
        let migrated = Store::open(&path).unwrap();
        assert_eq!(migrated.version().unwrap(), SCHEMA_VERSION);
        assert_eq!(migrated.history(&pc, journal).unwrap(), expected[..2]);
    }
}
