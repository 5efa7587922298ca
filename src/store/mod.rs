//! The SQLite store: what survives a restart.
//!
//! Owns the schema and every SQL statement; nothing else in the crate knows SQL. The
//! store is a snapshot (`hosts`, one row per host) plus an append-only `journal` of the
//! records written since (one row per commit, holding every record the commit changed,
//! encoded by [`journal`]), plus `history` (address changes only). Loading reads the snapshot
//! and replays the journal; the writer's compaction sweep folds the journal into the
//! snapshot a chunk at a time (see `writer`), in the same transactions as its commits.
//!
//! Appending one blob per commit costs a few bytes per report, written sequentially,
//! where updating each host's row in place would dirty a random page per report: at
//! 1,000,000 hosts that is the difference between about 60,000 and several hundred
//! thousand reports a second.
//!
//! A store that is not a dynip store, is damaged, or is from a newer dynip is refused
//! before anything is written to it.
//!
//! The folder: this file holds what the writer and the readers speak ([`Loaded`],
//! [`Progress`], [`Turn`], [`StoreError`]); `sqlite` the [`Store`] itself, its schema and
//! statements; `journal` the journal entries' binary codec (pure); `checkpoint` the
//! checkpointer thread; `import` the original's JSON file into an empty store; `outbox`
//! the notifications' events and their deliveries; `txt` the TXT records and the acme-dns accounts; `crash` the points where a test stops
//! a writer's turn as a crash would.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::model::account::AcmeAccount;
use crate::model::event::{Event, Settlement};
use crate::model::name::Name;
use crate::model::record::Time;
use crate::model::txt::Txt;
use crate::state::table::Entry;

mod checkpoint;
mod copy;
mod crash;
mod import;
pub mod journal;
mod outbox;
#[cfg(test)]
pub(crate) use outbox::pending_of as outbox_pending_of;
pub mod postgresql;
mod sqlite;
mod txt;

pub use checkpoint::keep_checkpointed;
pub use copy::{read_contents, write_contents, Contents, StoreLocation};
pub(crate) use crash::{crash_point, CrashPoint};
#[cfg(test)]
pub(crate) use crash::{set_hook as set_crash_hook, Hook as CrashHook};
pub use import::import_original;
use postgresql::PG_SCHEMA_VERSION;
pub use sqlite::Store;
use sqlite::SCHEMA_VERSION;

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
    #[error("database {url}: {}", postgresql::detail(source))]
    Database {
        url: String,
        source: postgresql::DriverError,
    },
    /// `copy-store` into a store that already holds something.
    #[error("{0} already holds hosts, TXT records or accounts; a copy never writes over a store (choose an empty one)")]
    NotEmpty(String),
    #[error("database {0} is unreachable (retrying)")]
    DatabaseDown(String),
    #[error("database {url}: {detail}")]
    DatabaseSetup { url: String, detail: String },
    #[error(
        "database {url} holds a dynip schema of version {found}, newer than this dynip \
         ({PG_SCHEMA_VERSION}); upgrade dynip"
    )]
    DatabaseTooNew { url: String, found: i64 },
    #[error("database {url} is damaged ({detail}); it was left as it is")]
    DatabaseCorrupt { url: String, detail: String },
    /// The copy of the original's JSON file kept before importing it.
    #[error("cannot write client log {path}: {source}")]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the file itself is the problem (damaged, foreign, too new), as opposed to
    /// the system (permissions, disk): the two have different exit codes.
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::Foreign(_)
                | StoreError::TooNew { .. }
                | StoreError::DatabaseTooNew { .. }
                | StoreError::DatabaseCorrupt { .. }
        )
    }
}

/// Everything the store holds of the current state, ready for the in-memory table.
#[derive(Debug)]
pub struct Loaded {
    pub hosts: BTreeMap<Name, Entry>,
    /// The TXT records, by name.
    pub txt: BTreeMap<Name, Vec<Txt>>,
    /// The acme-dns accounts.
    pub accounts: Vec<AcmeAccount>,
    pub progress: Progress,
}

/// Where the writer goes on from: what the journal holds, and the next history id.
#[derive(Debug, Default)]
pub struct Progress {
    /// The next journal sequence number to use.
    pub next_seq: i64,
    /// Records in the journal, not yet folded into the snapshot.
    pub journal_records: u64,
    /// The next history row's `id`.
    pub next_history_id: i64,
    /// Address changes in the journal not yet settled into `history`, oldest first.
    pub unsettled: Vec<LoggedChange>,
}

/// Where a history read finds the changes not yet settled into `history`.
#[derive(Debug, Clone, Copy)]
pub enum PendingChanges<'a> {
    /// In the journal: for a reader beside the server, or without one (`dynip history`).
    Journal,
    /// Given: the host's changes the server's writer holds in memory (a subset of the
    /// journal's, so the journal need not be read).
    Given(&'a [LoggedChange]),
}

/// One address change, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub name: Name,
    pub at: Time,
    pub addr: IpAddr,
}

/// An address change as the writer journals it, with the `id` it gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    pub id: i64,
    pub change: HistoryRow,
}

/// What one turn of the writer commits, in one transaction.
#[derive(Debug, Default)]
pub struct Turn<'a> {
    /// The journal entry's sequence number: every record in it carries it.
    pub seq: i64,
    /// The records the turn's reports changed, for the journal.
    pub records: &'a [(Name, Entry)],
    /// The turn's address changes, for its journal entry.
    pub history: &'a [LoggedChange],
    /// Reports committed by the turn (some may have changed the same record).
    pub n_reports: u64,
    /// A chunk of the compaction sweep: records to write into the snapshot.
    pub snapshot: &'a [(Name, Entry)],
    /// Unsettled address changes of the chunk's hosts, in the chunk's order: written
    /// into `history`.
    pub settle: &'a [LoggedChange],
    /// Drop up to [`DROP_ENTRIES_PER_TURN`] journal entries below this sequence number
    /// (the end of a sweep: everything in them is folded and settled).
    pub drop_before: Option<i64>,
    /// Delete the history's changes from before this time (`history_max_age`), oldest
    /// first, up to [`PRUNE_ROWS_PER_TURN`].
    pub prune_before: Option<Time>,
    /// The sinks' names, which `events` and `settled` refer to by index.
    pub sink_names: &'a [String],
    /// Events the turn's reports (or the stale scan) made, each with the sinks that
    /// want it: written with a pending delivery per sink (the outbox).
    pub events: &'a [NewEvent],
    /// The next event id, kept when `events` is not empty.
    pub next_event: i64,
    /// Deliveries the sinks finished since the last turn.
    pub settled: &'a [Settlement],
    /// Hosts whose going stale was announced (`Some(since)`), or which reported again
    /// after it (`None`).
    pub stale: &'a [(Name, Option<Time>)],
    /// Delete events from before this time, oldest first, up to
    /// [`PRUNE_ROWS_PER_TURN`], with their deliveries.
    pub prune_events_before: Option<Time>,
    /// Names whose TXT records the turn changed, each with its whole new set (empty:
    /// none left).
    pub txt: &'a [(Name, Vec<Txt>)],
    /// When those were set.
    pub txt_at: Time,
    /// New acme-dns accounts.
    pub accounts: &'a [AcmeAccount],
}

/// An event for the outbox, numbered by the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: i64,
    pub event: Event,
    /// The sinks (indexes into [`Turn::sink_names`]) it goes to.
    pub sinks: Vec<usize>,
}

/// What the notifications go on from after a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outbox {
    /// The next event id.
    pub next_event: i64,
    /// Pending deliveries, by sink name, oldest first.
    pub pending: BTreeMap<String, Vec<(i64, Event)>>,
    /// Hosts whose going stale was announced.
    pub stale: Vec<Name>,
}

/// What a turn's commit removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Records the journal entries it dropped held.
    pub n_dropped: u64,
    /// History rows it pruned.
    pub n_pruned: u64,
}

/// One address family's three columns (address, last seen, last change, µs), as both
/// stores keep them: all NULL (no address of the family), or all set.
///
/// # Errors
/// An address that does not parse, or an address without its times: a damaged store.
pub(crate) fn seen_from_columns<A: std::str::FromStr>(
    addr: Option<String>,
    last_seen: Option<i64>,
    last_change: Option<i64>,
) -> Result<Option<crate::model::record::Seen<A>>, String> {
    match (addr, last_seen, last_change) {
        (None, None, None) => Ok(None),
        (Some(addr), Some(last_seen), Some(last_change)) => match addr.parse() {
            Ok(addr) => Ok(Some(crate::model::record::Seen {
                addr,
                last_seen: Time::from_micros(last_seen),
                last_change: Time::from_micros(last_change),
            })),
            Err(_) => Err(format!("bad address {addr:?}")),
        },
        _ => Err("address without its times".to_string()),
    }
}

/// An event from its columns, as both stores keep them: its kind's word, the host's name,
/// its time (µs), and the old and new IPv4 and IPv6 addresses.
///
/// # Errors
/// What does not parse ("kind", "name", "address"): a damaged store.
pub(crate) fn event_from_columns(
    kind: &str,
    name: &str,
    at: i64,
    addresses: [Option<String>; 4],
) -> Result<Event, &'static str> {
    use crate::model::event::{Addresses, EventKind};
    fn addr<A: std::str::FromStr>(text: &Option<String>) -> Result<Option<A>, &'static str> {
        text.as_deref()
            .map(|text| text.parse().map_err(|_| "address"))
            .transpose()
    }
    let [ipv4_old, ipv4_new, ipv6_old, ipv6_new] = &addresses;
    Ok(Event {
        kind: EventKind::parse(kind).ok_or("kind")?,
        host: Name::parse(name).map_err(|_| "name")?,
        at: Time::from_micros(at),
        ipv4: Addresses {
            old: addr(ipv4_old)?,
            new: addr(ipv4_new)?,
        },
        ipv6: Addresses {
            old: addr(ipv6_old)?,
            new: addr(ipv6_new)?,
        },
    })
}

/// Journal entries a turn may drop: each holds up to a batch of records, so dropping is
/// spread over turns instead of holding one commit for a whole journal's worth.
pub const DROP_ENTRIES_PER_TURN: i64 = 16;

/// History rows a turn may prune. Each may dirty a page of the history's name index of
/// its own (the rows of one time are of many hosts): 1,024 rows took about 20 ms of a
/// commit under load, so a chunk is a quarter of that.
pub const PRUNE_ROWS_PER_TURN: i64 = 256;

/// Where the server keeps what survives a restart: the SQLite file, or a PostgreSQL
/// database shared with other servers.
pub enum StoreReader {
    Sqlite(Store),
    Postgres(Box<postgresql::Database>),
}

impl StoreReader {
    /// Opens the store `server` names for reading beside the server (or without one):
    /// the SQLite file read-only, or a connection to the database.
    ///
    /// # Errors
    /// A store that is missing or damaged, a database that cannot be reached.
    pub fn open(
        store_path: &std::path::Path,
        database_url: Option<&crate::config::DatabaseUrl>,
    ) -> Result<StoreReader, StoreError> {
        match database_url {
            Some(url) => Ok(StoreReader::Postgres(Box::new(postgresql::Database::open(
                url,
                std::sync::Arc::default(),
            )?))),
            None => Ok(StoreReader::Sqlite(Store::open_read_only(store_path)?)),
        }
    }

    /// Every host's record.
    ///
    /// # Errors
    /// A failed read, a row that does not decode.
    pub fn hosts(&mut self) -> Result<BTreeMap<Name, Entry>, StoreError> {
        match self {
            StoreReader::Sqlite(store) => Ok(store.load()?.hosts),
            StoreReader::Postgres(database) => Ok(database.load()?.0.hosts),
        }
    }

    /// A host's address changes, oldest first; `pending` says where the SQLite store's
    /// changes not yet settled are (a database has none).
    ///
    /// # Errors
    /// A failed read, a row that does not decode.
    pub fn history(
        &mut self,
        name: &Name,
        pending: PendingChanges<'_>,
    ) -> Result<Vec<(Time, IpAddr)>, StoreError> {
        match self {
            StoreReader::Sqlite(store) => store.history(name, pending),
            StoreReader::Postgres(database) => database.history(name),
        }
    }

    /// The latest `limit` events of `host` (or of every host), newest first.
    ///
    /// # Errors
    /// A failed read, a row that does not decode.
    pub fn events(
        &mut self,
        host: Option<&Name>,
        limit: usize,
    ) -> Result<Vec<crate::model::event::EventRecord>, StoreError> {
        match self {
            StoreReader::Sqlite(store) => store.events(host, limit),
            StoreReader::Postgres(database) => database.events(host, limit),
        }
    }
}
