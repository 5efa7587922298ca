//! The SQLite store: what survives a restart.
//!
//! Owns the schema and every SQL statement; nothing else in the crate knows SQL. The
//! store is a snapshot (`hosts`, one row per host) plus an append-only `journal` of the
//! records written since (one row per host per commit), plus `history` (address changes
//! only). Loading reads the snapshot and replays the journal; the writer's compaction
//! sweep folds the journal into the snapshot a chunk at a time (see `writer`).
//!
//! Appending to the journal costs one sequential row per report, where updating the host's
//! row in place would dirty a random page per report: at 1,000,000 hosts that is the
//! difference between about 60,000 and several hundred thousand reports a second.
//!
//! A store that is not a dynip store, is damaged, or is from a newer dynip is refused
//! before anything is written to it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use crate::name::Name;
use crate::record::{Record, Seen, Time};
use crate::table::Entry;

/// `PRAGMA application_id`: "dyni" in ASCII, so `file(1)` and we can tell our stores.
const APPLICATION_ID: i64 = 0x6479_6e69;
/// `PRAGMA user_version`: the schema this build writes and reads.
const SCHEMA_VERSION: i64 = 1;
/// Page cache of the writer's connection, in KiB: large enough that a compaction chunk's
/// pages stay cached between the read and the write of the B-tree, small against the
/// per-host memory budget (300 bytes × 1,000,000 hosts).
const CACHE_KIB: i64 = 8192;

/// How often the checkpointer copies the write-ahead log into the database. Checkpoints
/// run on their own connection and thread, so a commit never waits for one (on the
/// writer's connection SQLite's automatic checkpoint held commits for 10–20 ms at a time).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
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
    signed_at INTEGER
) WITHOUT ROWID;
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    ipv4 TEXT, ipv4_last_seen INTEGER, ipv4_last_change INTEGER,
    ipv6 TEXT, ipv6_last_seen INTEGER, ipv6_last_change INTEGER,
    signed_at INTEGER
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

/// `name_key` is the name as compared ([`Name::folded`]): SQLite's `NOCASE` folds ASCII
/// only, and names are compared with full Unicode lowercase.
const INSERT_HISTORY: &str =
    "INSERT INTO history (name, name_key, at, address) VALUES (?1, ?2, ?3, ?4)";

const RECORD_COLUMNS: &str = "name, seq, first_seen, ipv4, ipv4_last_seen, ipv4_last_change, \
                              ipv6, ipv6_last_seen, ipv6_last_change, signed_at";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("no store at {0} (has the server run with this config?)")]
    Missing(PathBuf),
    #[error(
        "store {path} is damaged ({detail}); it was left as it is: restore it from a backup, \
         or move it away to start an empty store"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{0} is an SQLite database but not a dynip store; it was left as it is: \
         point store_path at another file"
    )]
    Foreign(PathBuf),
    #[error("store {path} has schema version {found}, newer than this dynip ({SCHEMA_VERSION}); upgrade dynip")]
    TooNew { path: PathBuf, found: i64 },
    #[error("store {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether the file itself is the problem (damaged, foreign, too new), as opposed to
    /// the system (permissions, disk): the two have different exit codes.
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::Foreign(_) | StoreError::TooNew { .. }
        )
    }
}

/// Everything the store holds of the current state, ready for the in-memory table.
#[derive(Debug)]
pub struct Loaded {
    pub hosts: BTreeMap<Name, Entry>,
    /// The next journal sequence number to use.
    pub next_seq: i64,
    /// Journal rows not yet folded into the snapshot.
    pub journal_rows: u64,
}

/// One address change, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub name: Name,
    pub at: Time,
    pub addr: IpAddr,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
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
        let store = Store::connect(path, flags)?;
        if !store.check_header()? {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        Ok(store)
    }

    fn connect(path: &Path, flags: OpenFlags) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
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
            .prepare(&format!("SELECT {RECORD_COLUMNS} FROM hosts"))
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            snapshot.push(self.decode_row(row)?);
        }
        let mut hosts: BTreeMap<Name, Entry> = snapshot.into_iter().collect();

        let mut next_seq = 1;
        let mut journal_rows = 0;
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM journal ORDER BY seq"
            ))
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let (name, mut entry) = self.decode_row(row)?;
            // Not in the snapshot yet: the next sweep must write it before it drops the
            // journal rows.
            entry.dirty = true;
            next_seq = entry.seq + 1;
            journal_rows += 1;
            match hosts.get_mut(&name) {
                Some(current) if current.seq >= entry.seq => {}
                Some(current) => *current = entry,
                None => {
                    hosts.insert(name, entry);
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
            next_seq,
            journal_rows,
        })
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
            let record = Record {
                first_seen,
                v4,
                v6,
                signed_at,
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
            insert_history(&tx, history).map_err(|e| sql(path, e))?;
        }
        tx.commit().map_err(|e| sql(path, e))
    }

    /// Commits one batch: the new records to the journal, the address changes to the
    /// history, and the count of reports. When this returns `Ok` the batch is durable.
    ///
    /// # Errors
    /// On a failed write; nothing of the batch is written then.
    pub fn commit(
        &mut self,
        records: &[(Name, Entry)],
        history: &[HistoryRow],
        n_reports: u64,
    ) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(|e| sql(path, e))?;
        {
            let mut insert_journal = tx
                .prepare_cached(&insert_sql("INSERT INTO journal"))
                .map_err(|e| sql(path, e))?;
            for (name, entry) in records {
                bind_record(&mut insert_journal, name, entry).map_err(|e| sql(path, e))?;
            }
            insert_history(&tx, history).map_err(|e| sql(path, e))?;
            tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = 'reports'")
                .and_then(|mut statement| statement.execute([n_reports as i64]))
                .map_err(|e| sql(path, e))?;
        }
        tx.commit().map_err(|e| sql(path, e))
    }

    /// Writes records into the snapshot (the compaction sweep's chunk).
    ///
    /// # Errors
    /// On a failed write; nothing of the chunk is written then.
    pub fn write_snapshot(&mut self, records: &[(Name, Entry)]) -> Result<(), StoreError> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(|e| sql(path, e))?;
        {
            let mut upsert = tx
                .prepare_cached(&insert_sql("INSERT OR REPLACE INTO hosts"))
                .map_err(|e| sql(path, e))?;
            for (name, entry) in records {
                bind_record(&mut upsert, name, entry).map_err(|e| sql(path, e))?;
            }
        }
        tx.commit().map_err(|e| sql(path, e))
    }

    /// Deletes journal rows below `seq`, which the snapshot now holds; returns how many.
    ///
    /// # Errors
    /// On a failed write.
    pub fn drop_journal_before(&mut self, seq: i64) -> Result<u64, StoreError> {
        let n_deleted = self
            .conn
            .execute("DELETE FROM journal WHERE seq < ?1", [seq])
            .map_err(|e| sql(&self.path, e))?;
        Ok(n_deleted as u64)
    }

    /// How many reports the store has committed since it was created.
    ///
    /// # Errors
    /// On a failed query.
    pub fn reports(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'reports'", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n_reports| n_reports as u64)
            .map_err(|source| self.classify(source))
    }

    /// A host's address changes, oldest first.
    ///
    /// # Errors
    /// On a failed query or a row that does not decode.
    pub fn history(&self, name: &Name) -> Result<Vec<(Time, IpAddr)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT at, address FROM history WHERE name_key = ?1 ORDER BY at, id")
            .map_err(|source| self.classify(source))?;
        let mut rows = statement
            .query([name.folded()])
            .map_err(|source| self.classify(source))?;
        let mut changes = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let at: i64 = row.get(0).map_err(|e| self.classify(e))?;
            let address: String = row.get(1).map_err(|e| self.classify(e))?;
            let addr = address
                .parse()
                .map_err(|_| self.corrupt(format!("bad address {address:?} in history")))?;
            changes.push((Time::from_micros(at), addr));
        }
        Ok(changes)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        sql(&self.path, source)
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// Maps a read error: damage and "not a database" are the file's fault.
    fn classify(&self, source: rusqlite::Error) -> StoreError {
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                self.corrupt(source.to_string())
            }
            _ => self.sql(source),
        }
    }
}

/// Checkpoints the store's write-ahead log every [`CHECKPOINT_INTERVAL`] on a connection
/// of its own (`PASSIVE`: it never blocks the writer), until `stop` is dropped.
///
/// # Errors
/// When the store cannot be opened; a failed checkpoint is only logged (the writer's
/// fallback checkpoint still bounds the log).
pub fn keep_checkpointed(
    path: &Path,
    stop: &std::sync::mpsc::Receiver<()>,
) -> Result<(), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let store = Store::connect(path, flags)?;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        let res = store
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                row.get::<_, i64>(0)
            });
        if let Err(e) = res {
            tracing::warn!(store = %path.display(), error = %e, "checkpoint failed");
        }
    }
    Ok(())
}

fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_path_buf(),
        source,
    }
}

fn insert_history(tx: &rusqlite::Transaction<'_>, history: &[HistoryRow]) -> rusqlite::Result<()> {
    let mut statement = tx.prepare_cached(INSERT_HISTORY)?;
    for change in history {
        statement.execute(params![
            change.name.as_str(),
            change.name.folded(),
            change.at.as_micros(),
            change.addr.to_string()
        ])?;
    }
    Ok(())
}

fn insert_sql(verb: &str) -> String {
    format!("{verb} ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
}

fn bind_record(
    statement: &mut rusqlite::Statement<'_>,
    name: &Name,
    entry: &Entry,
) -> rusqlite::Result<()> {
    let record = &entry.record;
    let v4 = record.v4.map(|seen| {
        (
            seen.addr.to_string(),
            seen.last_seen.as_micros(),
            seen.last_change.as_micros(),
        )
    });
    let v6 = record.v6.map(|seen| {
        (
            seen.addr.to_string(),
            seen.last_seen.as_micros(),
            seen.last_change.as_micros(),
        )
    });
    statement.execute(params![
        name.as_str(),
        entry.seq,
        record.first_seen.as_micros(),
        v4.as_ref().map(|seen| &seen.0),
        v4.as_ref().map(|seen| seen.1),
        v4.as_ref().map(|seen| seen.2),
        v6.as_ref().map(|seen| &seen.0),
        v6.as_ref().map(|seen| seen.1),
        v6.as_ref().map(|seen| seen.2),
        record.signed_at.map(Time::as_micros),
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
    Ok(match (addr, last_seen, last_change) {
        (None, None, None) => Ok(None),
        (Some(addr), Some(last_seen), Some(last_change)) => match addr.parse() {
            Ok(addr) => Ok(Some(Seen {
                addr,
                last_seen: Time::from_micros(last_seen),
                last_change: Time::from_micros(last_change),
            })),
            Err(_) => Err(format!("bad address {addr:?}")),
        },
        _ => Err("address without its times".to_string()),
    })
}
