//! The PostgreSQL store (`database_url`): what several servers on one database share.
//!
//! Owns the database's schema (the tables of the schema `dynip`, versioned in
//! `dynip.meta`, created and migrated here) and every statement on it. The same design as
//! the SQLite store, for the same reason: each commit appends one `dynip.journal` row
//! holding every record it changed (the `journal` codec's blob) with its transaction's
//! id (`xid`); a fold ([`Database::fold`]) now and then writes the older entries into the
//! `dynip.hosts` snapshot and deletes them. Updating a row per report instead cost
//! PostgreSQL 37 µs of CPU per report, measured: more than the whole SQLite server. The
//! history, TXT records and acme-dns accounts are rows, written in the turn.
//!
//! Servers write at the same time; what keeps them one truth:
//!
//! - **Each host is decided by one turn at a time.** A turn of reports takes a
//!   transaction-scoped advisory lock per host of its batch (sorted, so two turns never
//!   wait on each other in a circle), then reads the journal after its last entry: so it
//!   decides against every commit of its hosts, and the replay rule and `good` or `nochg`
//!   hold across servers. A turn with zone updates or new accounts, which read and write
//!   more than hosts, takes the global lock ([`GLOBAL_LOCK`]) exclusively; turns of
//!   reports hold it shared.
//! - **Readers miss no commit, though servers commit at once.** Each journal entry
//!   carries its transaction's id (`xid`). A reader reads the entries from its horizon
//!   on, in `xid` order, and moves its horizon to the oldest transaction still running
//!   (`pg_snapshot_xmin`): every entry below it is committed and read, so none is
//!   skipped, and those above it are read again next time (applied again, in order: the
//!   same result). A turn reads in its turn, on a notification ([`CHANNEL`]) and after
//!   every reconnection. One folded away before a server read it sends that server
//!   back to the snapshot. Nothing is serialised across servers but the hosts they share.
//!
//! Every value but the journal's blobs is a column an operator can query; times are
//! microseconds since the Unix epoch, as in the SQLite store. A database whose `dynip`
//! schema is from a newer dynip is refused before anything is written to it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, IsolationLevel};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{HistoryRow, Loaded, LoggedChange, StoreError};
use crate::config::DatabaseUrl;
use crate::model::account::AcmeAccount;
use crate::model::event::Event;
use crate::model::name::Name;
use crate::model::record::{Record, Seen, Time};
use crate::model::txt::Txt;
use crate::state::table::Entry;

mod outbox;

pub use outbox::{NoticeWrites, CLAIM_FOR};

/// This server process among those on the database: its host, its process id and a
/// random number (two hosts may share a name, two containers a process id). The same for
/// every connection of the process: its claims on deliveries and its own journal
/// entries are known by it.
fn server_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let random: [u8; 4] = crate::model::key::random_bytes();
        format!(
            "{} pid {} {:08x}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id(),
            u32::from_be_bytes(random)
        )
    })
}

/// The driver's error: a failed connection or statement.
pub type DriverError = postgres::Error;

/// A driver error with its causes ("error connecting to server: Connection refused"):
/// its own message leaves them out.
pub fn detail(error: &DriverError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The version of the `dynip` schema this dynip writes.
pub(super) const PG_SCHEMA_VERSION: i64 = 1;

/// The global advisory lock: held shared by turns of reports, exclusively by turns that
/// change TXT records or accounts, by imports and by the creation of the schema ("dynip"
/// in ASCII).
pub const GLOBAL_LOCK: i64 = 0x0064_796e_6970;

/// The advisory lock of a fold: one server folds at a time.
const FOLD_LOCK: i64 = 0x66_6f6c_6400;

/// Hosts written into the snapshot per statement of a fold.
const FOLD_CHUNK: usize = 10_000;

/// The class of the per-host advisory locks (two-key locks, a key space apart from
/// [`GLOBAL_LOCK`]'s); the second key is the host's `hashtext`.
const HOST_LOCK_CLASS: i32 = 0x6479_6e69;

/// The channel commits are announced on (a wake-up: the payload is empty).
pub const CHANNEL: &str = "dynip";

/// How long a connection attempt may take before the server calls the database
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long after a failed attempt the next one is made: writes in between are refused
/// at once instead of each waiting for a connection that will not come.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS dynip;
CREATE TABLE dynip.meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO dynip.meta (key, value) VALUES ('folded', 0);
CREATE SEQUENCE dynip.tx;
CREATE TABLE dynip.journal (
    seq BIGSERIAL PRIMARY KEY,
    xid BIGINT NOT NULL,
    tx BIGINT NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    server TEXT NOT NULL,
    n_reports BIGINT NOT NULL,
    n_records BIGINT NOT NULL,
    records BYTEA NOT NULL,
    has_txt BOOLEAN NOT NULL,
    has_accounts BOOLEAN NOT NULL
);
ALTER TABLE dynip.journal ALTER COLUMN records SET STORAGE EXTERNAL;
CREATE INDEX journal_by_xid ON dynip.journal (xid);
CREATE TABLE dynip.hosts (
    name_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    ipv4 TEXT, ipv4_last_seen BIGINT, ipv4_last_change BIGINT,
    ipv6 TEXT, ipv6_last_seen BIGINT, ipv6_last_change BIGINT,
    signed_at BIGINT,
    offline BOOLEAN NOT NULL
);
CREATE TABLE dynip.history (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX history_by_name ON dynip.history (name_key, at);
CREATE TABLE dynip.txt (
    name_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tx BIGINT NOT NULL,
    at BIGINT NOT NULL,
    rdata BYTEA[] NOT NULL
);
CREATE INDEX txt_by_tx ON dynip.txt (tx);
CREATE TABLE dynip.acme_accounts (
    username TEXT PRIMARY KEY,
    password_sha256 BYTEA NOT NULL,
    subdomain TEXT NOT NULL UNIQUE,
    txt_name TEXT NOT NULL,
    allow_from TEXT NOT NULL,
    created BIGINT NOT NULL,
    tx BIGINT NOT NULL
);
CREATE INDEX acme_accounts_by_tx ON dynip.acme_accounts (tx);
";

const HOST_COLUMNS: &str = "h.name, h.seq, h.first_seen, h.ipv4, h.ipv4_last_seen, \
                            h.ipv4_last_change, h.ipv6, h.ipv6_last_seen, h.ipv6_last_change, \
                            h.signed_at, h.offline";

/// Journal entries younger than this are never folded: a server that is up reads them
/// long before (within a second); one that was away longer reads the snapshot again.
pub const FOLD_AFTER: Duration = Duration::from_secs(60);

/// Records the journal may hold before a fold is due (or as many as there are hosts,
/// when more): as the SQLite store's sweep.
pub const FOLD_RECORDS: i64 = 65_536;

/// Whether the database answers, for `/healthz` and `/metrics`; shared by the threads
/// that hold a connection.
#[derive(Debug)]
pub struct DatabaseHealth {
    up: AtomicBool,
    /// When it stopped answering (µs since the Unix epoch), while it does not.
    down_since: AtomicI64,
    /// Failed connections and statements.
    errors: AtomicU64,
    /// Records and TXT sets learned from other servers' commits.
    remote_changes: AtomicU64,
}

impl Default for DatabaseHealth {
    fn default() -> DatabaseHealth {
        DatabaseHealth {
            up: AtomicBool::new(true),
            down_since: AtomicI64::new(0),
            errors: AtomicU64::new(0),
            remote_changes: AtomicU64::new(0),
        }
    }
}

impl DatabaseHealth {
    /// `None` while the database answers; else since when it has not.
    pub fn down_since(&self) -> Option<Time> {
        (!self.up.load(Ordering::Acquire))
            .then(|| Time::from_micros(self.down_since.load(Ordering::Acquire)))
    }

    fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            self.down_since
                .store(Time::now().as_micros(), Ordering::Release);
        }
    }

    fn answered(&self) {
        self.up.store(true, Ordering::Release);
    }

    /// Counts records learned from other servers.
    pub fn learned(&self, n: usize) {
        self.remote_changes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus families, appended to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let up = u8::from(self.up.load(Ordering::Acquire));
        let _ = write!(
            out,
            "# HELP dynip_database_up Whether the PostgreSQL database answered the last statement (1) or not (0).\n\
             # TYPE dynip_database_up gauge\n\
             dynip_database_up {up}\n\
             # HELP dynip_database_errors_total Connections and statements to the PostgreSQL database that failed.\n\
             # TYPE dynip_database_errors_total counter\n\
             dynip_database_errors_total {}\n\
             # HELP dynip_database_remote_changes_total Records and TXT sets learned from other servers' commits.\n\
             # TYPE dynip_database_remote_changes_total counter\n\
             dynip_database_remote_changes_total {}\n",
            self.errors.load(Ordering::Relaxed),
            self.remote_changes.load(Ordering::Relaxed),
        );
    }
}

/// What other servers committed after a sequence number, in the order to apply it.
#[derive(Debug, Default)]
pub struct Changes {
    /// Each changed host's record as it is now (its entry's `seq`: the commit's).
    pub hosts: Vec<(Name, Entry)>,
    /// Each changed name's TXT set as it is now (empty: none left).
    pub txt: Vec<(Name, Vec<Txt>)>,
    /// New acme-dns accounts.
    pub accounts: Vec<AcmeAccount>,
    /// Where the next read starts (the oldest transaction running when this one read:
    /// every commit below it is in this read or an earlier one), and the time of the
    /// last entry read (`None`: not read from the journal).
    pub last: Option<(i64, Time)>,
}

impl Changes {
    /// How many records and TXT sets it holds.
    pub fn len(&self) -> usize {
        self.hosts.len() + self.txt.len() + self.accounts.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Writes<'_> {
    /// Whether there is nothing to write.
    fn is_empty(&self) -> bool {
        !self.has_entry()
            && self.history.is_empty()
            && self.notice.as_ref().is_none_or(NoticeWrites::is_empty)
    }

    /// Whether the turn changed what the journal carries to other servers.
    fn has_entry(&self) -> bool {
        !self.records.is_empty() || !self.txt.is_empty() || !self.accounts.is_empty()
    }
}

/// What became of a [`Database::turn`].
#[derive(Debug)]
pub struct Turned<D> {
    /// The decision (`None`: the changes could not be read).
    pub decided: Option<D>,
    /// Once committed: the transaction id of the turn's journal entry, which its records
    /// carry as their `seq` (the read horizon, when it wrote no entry).
    pub committed: Result<i64, StoreError>,
    /// Every commit up to this one has been handed over (in `decide`'s changes or the
    /// turn's own): where the next read starts.
    pub through: i64,
    /// Per event of the turn's notification rows: its id in the database, or `None`
    /// when it was not written (a staleness another server announced first).
    pub event_ids: Vec<Option<i64>>,
}

impl<D> Turned<D> {
    fn failed(decided: Option<D>, through: i64, e: StoreError) -> Turned<D> {
        Turned {
            decided,
            committed: Err(e),
            through,
            event_ids: Vec::new(),
        }
    }
}

/// What a turn writes, decided against [`Changes`] under the lock.
#[derive(Debug, Default)]
pub struct Writes<'a> {
    /// The records the turn's reports and updates changed (their `seq` is ignored: the
    /// commit's is written).
    pub records: &'a [(Name, Entry)],
    /// The turn's address changes (their ids are ignored: the database numbers them).
    pub history: &'a [LoggedChange],
    /// Names whose TXT records changed, each with its whole new set.
    pub txt: &'a [(Name, Vec<Txt>)],
    /// New acme-dns accounts.
    pub accounts: &'a [AcmeAccount],
    /// Reports the turn committed.
    pub n_reports: u64,
    /// When the turn was decided: the commit's time, which every server's SOA serial
    /// counts from.
    pub at: Time,
    /// With sinks: the turn's notification rows.
    pub notice: Option<NoticeWrites<'a>>,
}

/// The statements every turn runs, prepared once per connection: unprepared, each would
/// cost a round trip more.
struct Statements {
    /// Takes the per-host locks of `$1` (keys, lock class `$2`), in one order.
    lock_hosts: postgres::Statement,
    /// The fold point, and the journal entries after `$1`, in order.
    feed: postgres::Statement,
    /// The TXT sets and accounts of transactions `$1`.
    txt_of: postgres::Statement,
    accounts_of: postgres::Statement,
    history_write: postgres::Statement,
    txt_write: postgres::Statement,
    account_write: postgres::Statement,
    /// A turn's journal entry under the next commit number, and its notification.
    commit: postgres::Statement,
}

const LOCK_HOSTS: &str = "SELECT count(pg_advisory_xact_lock($2, h)) FROM \
     (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s";

const FEED: &str = "SELECT f.value, pg_snapshot_xmin(pg_current_snapshot())::text::int8, \
     j.xid, j.at, j.records, j.has_txt, j.has_accounts, j.tx \
     FROM (SELECT value FROM dynip.meta WHERE key = 'folded') AS f \
     LEFT JOIN LATERAL (SELECT * FROM dynip.journal WHERE xid >= $1 AND server <> $2 \
     ORDER BY xid) AS j ON true";

/// A turn's journal entry, with its transaction's id (returned: the records' `seq`, by
/// which a reader tells an older record from a newer), and its notification.
const COMMIT: &str = "WITH j AS (INSERT INTO dynip.journal (xid, tx, at, server, n_reports, \
     n_records, records, has_txt, has_accounts) VALUES (pg_current_xact_id()::text::int8, \
     COALESCE($1::int8, nextval('dynip.tx')), $2, $3, $4, $5, $6, $7, $8) RETURNING xid) \
     SELECT j.xid, pg_notify('dynip', '')::text FROM j";

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            lock_hosts: client.prepare(LOCK_HOSTS)?,
            feed: client.prepare(FEED)?,
            txt_of: client.prepare(
                "SELECT name, rdata FROM dynip.txt WHERE tx = ANY($1) ORDER BY name_key",
            )?,
            accounts_of: client.prepare(
                "SELECT username, password_sha256, subdomain, txt_name, allow_from, created \
                 FROM dynip.acme_accounts WHERE tx = ANY($1)",
            )?,
            history_write: client.prepare(
                "INSERT INTO dynip.history (name, name_key, at, address) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])",
            )?,
            txt_write: client.prepare(
                "INSERT INTO dynip.txt (name_key, name, tx, at, rdata) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name_key) DO UPDATE SET name = EXCLUDED.name, \
                 tx = EXCLUDED.tx, at = EXCLUDED.at, rdata = EXCLUDED.rdata",
            )?,
            account_write: client.prepare(
                "INSERT INTO dynip.acme_accounts (username, password_sha256, subdomain, \
                 txt_name, allow_from, created, tx) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )?,
            commit: client.prepare(COMMIT)?,
        })
    }
}

/// A connection, and its statements once the schema is there.
struct Connection {
    client: Client,
    statements: Option<Statements>,
}

impl Connection {
    /// The connection and its prepared statements.
    fn prepared(&mut self) -> Result<(&mut Client, &Statements), postgres::Error> {
        if self.statements.is_none() {
            self.statements = Some(Statements::prepare(&mut self.client)?);
        }
        match &self.statements {
            Some(statements) => Ok((&mut self.client, statements)),
            None => unreachable!("prepared just above"),
        }
    }
}

/// A connection to the database, made again after it breaks.
pub struct Database {
    config: Config,
    tls: MakeRustlsConnect,
    /// The URL without its password, for messages.
    shown: String,
    /// Who writes: the host name and process, in `dynip.commits`.
    server: String,
    connection: Option<Connection>,
    /// No connection attempt before this.
    retry_at: Option<Instant>,
    health: Arc<DatabaseHealth>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.shown)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl Database {
    /// Connects to the database at `url`, creates the `dynip` schema in it if it has none,
    /// and checks its version.
    ///
    /// # Errors
    /// A URL the driver cannot read, a CA file that cannot be read, a database that cannot
    /// be reached, a schema from a newer dynip.
    pub fn open(url: &DatabaseUrl, health: Arc<DatabaseHealth>) -> Result<Database, StoreError> {
        let shown = url.shown();
        let (config, tls) = driver_config(url)?;
        let server = server_id().to_string();
        let mut database = Database {
            config,
            tls,
            shown,
            server,
            connection: None,
            retry_at: None,
            health,
        };
        database.migrate()?;
        Ok(database)
    }

    /// What `dynip check` says of the database at `url`, read without writing anything:
    /// whether it holds a dynip schema yet, of which version, and whether it has hosts.
    ///
    /// # Errors
    /// A URL the driver cannot read, a database that cannot be reached, a schema from a
    /// newer dynip.
    pub fn probe(url: &DatabaseUrl) -> Result<(bool, &'static str), StoreError> {
        let shown = url.shown();
        let database_error = |source| StoreError::Database {
            url: shown.clone(),
            source,
        };
        let (config, tls) = driver_config(url)?;
        let mut client = config.connect(tls).map_err(database_error)?;
        let exists: bool = client
            .query_one("SELECT to_regclass('dynip.meta') IS NOT NULL", &[])
            .map_err(database_error)?
            .get(0);
        if !exists {
            return Ok((
                true,
                "reachable, no dynip schema yet: created at the first start",
            ));
        }
        let found: i64 = client
            .query_opt("SELECT value FROM dynip.meta WHERE key = 'version'", &[])
            .map_err(database_error)?
            .map_or(0, |row| row.get(0));
        if found > PG_SCHEMA_VERSION {
            return Err(StoreError::DatabaseTooNew { url: shown, found });
        }
        let any: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM dynip.hosts) \
                 OR EXISTS (SELECT 1 FROM dynip.journal WHERE n_records > 0)",
                &[],
            )
            .map_err(database_error)?
            .get(0);
        Ok((
            false,
            if any {
                "reachable, a dynip database, has hosts"
            } else {
                "reachable, a dynip database, no hosts yet"
            },
        ))
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The shared health this connection reports into.
    pub fn health(&self) -> Arc<DatabaseHealth> {
        Arc::clone(&self.health)
    }

    /// The connection, made again if it broke, unless the last attempt failed less than
    /// [`RETRY_AFTER`] ago.
    fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|connection| connection.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(StoreError::DatabaseDown(self.shown.clone()));
            }
            match self.config.connect(self.tls.clone()) {
                Ok(client) => {
                    self.retry_at = None;
                    self.connection = Some(Connection {
                        client,
                        statements: None,
                    });
                }
                Err(source) => {
                    self.retry_at = Some(Instant::now() + RETRY_AFTER);
                    self.health.failed();
                    return Err(StoreError::Database {
                        url: self.shown.clone(),
                        source,
                    });
                }
            }
        }
        match self.connection.as_mut() {
            Some(connection) => Ok(connection),
            None => Err(StoreError::DatabaseDown(self.shown.clone())),
        }
    }

    /// Runs `work` on the connection, noting in the health whether the database answered;
    /// a connection that broke is dropped, to be made again next time.
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = &mut self.connection()?.client;
        match work(client) {
            Ok(value) => {
                self.health.answered();
                Ok(value)
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// Notes a failed statement; the error to return.
    fn failed(&mut self, source: postgres::Error) -> StoreError {
        if source.as_db_error().is_none() {
            // Not an answer from the database: the connection is gone.
            self.connection = None;
        }
        self.health.failed();
        StoreError::Database {
            url: self.shown.clone(),
            source,
        }
    }

    /// Creates the schema in a database without one; refuses one from a newer dynip.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let shown = self.shown.clone();
        let found = self.with(|client| {
            // Most opens find the schema: no lock then (every turn of every server would
            // wait for the global lock this takes).
            let exists: bool = client
                .query_one("SELECT to_regclass('dynip.meta') IS NOT NULL", &[])?
                .get(0);
            if exists {
                let row =
                    client.query_opt("SELECT value FROM dynip.meta WHERE key = 'version'", &[])?;
                return Ok(row.map_or(0, |row| row.get(0)));
            }
            let mut tx = client.transaction()?;
            // Two servers starting at once: one creates, the other finds.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GLOBAL_LOCK])?;
            let exists: bool = tx
                .query_one("SELECT to_regclass('dynip.meta') IS NOT NULL", &[])?
                .get(0);
            let found = if exists {
                let row =
                    tx.query_opt("SELECT value FROM dynip.meta WHERE key = 'version'", &[])?;
                row.map_or(0, |row| row.get(0))
            } else {
                tx.batch_execute(SCHEMA)?;
                tx.batch_execute(outbox::SCHEMA_OUTBOX)?;
                tx.execute(
                    "INSERT INTO dynip.meta (key, value) VALUES ('version', $1)",
                    &[&PG_SCHEMA_VERSION],
                )?;
                PG_SCHEMA_VERSION
            };
            tx.commit()?;
            Ok(found)
        })?;
        if found > PG_SCHEMA_VERSION {
            return Err(StoreError::DatabaseTooNew { url: shown, found });
        }
        if found < 1 {
            return Err(StoreError::DatabaseCorrupt {
                url: shown,
                detail: "dynip.meta has no version".to_string(),
            });
        }
        Ok(())
    }

    /// Whether the database holds no host, history, TXT record or account.
    ///
    /// # Errors
    /// When the database does not answer.
    pub fn is_empty(&mut self) -> Result<bool, StoreError> {
        self.with(|client| {
            let row = client.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM dynip.hosts) \
                 AND NOT EXISTS (SELECT 1 FROM dynip.journal WHERE n_records > 0) \
                 AND NOT EXISTS (SELECT 1 FROM dynip.history) \
                 AND NOT EXISTS (SELECT 1 FROM dynip.txt) \
                 AND NOT EXISTS (SELECT 1 FROM dynip.acme_accounts)",
                &[],
            )?;
            Ok(row.get(0))
        })
    }

    /// Everything the database holds of the current state, and the last commit's
    /// sequence number: changes are read after it.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn load(&mut self) -> Result<(Loaded, i64), StoreError> {
        let shown = self.shown.clone();
        let rows = self.with(|client| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let rows = read_all(&mut tx)?;
            tx.commit()?;
            Ok(rows)
        })?;
        let changes = rows.decode(&shown)?;
        let last = changes.last.map_or(0, |(seq, _)| seq);
        let loaded = Loaded {
            hosts: changes.hosts.into_iter().collect(),
            txt: changes
                .txt
                .into_iter()
                .filter(|(_, set)| !set.is_empty())
                .collect(),
            accounts: changes.accounts,
            progress: super::Progress::default(),
        };
        Ok((loaded, last))
    }

    /// What was committed after `after`: for a server woken by another's commit.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn changes_since(&mut self, after: i64) -> Result<Changes, StoreError> {
        let shown = self.shown.clone();
        let server = self.server.clone();
        let rows = match self.connection()?.prepared() {
            Ok((client, statements)) => read_feed(client, statements, after, &server, false),
            Err(source) => Err(source),
        };
        match rows {
            Ok(rows) => {
                self.health.answered();
                rows.decode(&shown)
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// One writing turn. A turn of reports alone (`hosts`: their keys) takes the global
    /// lock shared and its hosts' locks; any other takes the global lock exclusively.
    /// Then what was committed after `after` is handed to `decide`, which shows it and
    /// decides the batch; what `writes` makes of the decision is committed as the next
    /// journal entry. `decide` runs once the changes are read, also when the write then
    /// fails: what it was given is committed whatever happens to the turn.
    pub fn turn<D>(
        &mut self,
        after: i64,
        hosts: Option<&[&str]>,
        decide: impl FnOnce(Changes) -> D,
        writes: impl FnOnce(&D) -> Writes<'_>,
    ) -> Turned<D> {
        let shown = self.shown.clone();
        let server = self.server.clone();
        let (client, statements) = match self.connection() {
            Ok(connection) => match connection.prepared() {
                Ok(prepared) => prepared,
                Err(source) => return Turned::failed(None, after, self.failed(source)),
            },
            Err(e) => return Turned::failed(None, after, e),
        };
        let mut decided = None;
        let mut through = after;
        let mut event_ids = Vec::new();
        let res = (|| -> Result<Result<i64, StoreError>, postgres::Error> {
            // The transaction by hand: BEGIN and the global lock in one round trip.
            match hosts {
                Some(hosts) => {
                    client.batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock_shared({GLOBAL_LOCK})"
                    ))?;
                    client.query_one(&statements.lock_hosts, &[&hosts, &HOST_LOCK_CLASS])?;
                }
                None => client.batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({GLOBAL_LOCK})"
                ))?,
            }
            let rows = read_feed(client, statements, after, &server, true)?;
            let changes = match rows.decode(&shown) {
                Ok(changes) => changes,
                Err(e) => {
                    client.batch_execute("ROLLBACK")?;
                    return Ok(Err(e));
                }
            };
            let last = changes.last.map_or(after, |(seq, _)| seq);
            through = last;
            let d = decided.insert(decide(changes));
            let writes = writes(d);
            if writes.is_empty() {
                client.batch_execute("ROLLBACK")?;
                return Ok(Ok(last));
            }
            let tx = write(client, statements, &writes)?;
            if let Some(notice) = &writes.notice {
                event_ids = outbox::write_notice(client, notice, &server, writes.at)?;
            }
            if !writes.has_entry() {
                // Nothing other servers need to learn: no journal entry, no number.
                client.batch_execute("COMMIT")?;
                return Ok(Ok(last));
            }
            let seq = commit(client, statements, tx, &writes, &server)?;
            // Its own entry is above the horizon: read again, and applied again, next time.
            Ok(Ok(seq))
        })();
        match res {
            Ok(Ok(seq)) => {
                self.health.answered();
                Turned {
                    decided,
                    committed: Ok(seq),
                    through,
                    event_ids,
                }
            }
            Ok(Err(e)) => Turned::failed(decided, through, e),
            Err(source) => {
                // A transaction left open on a live connection is rolled back; a dead
                // one is dropped by `failed`.
                let _ = client.batch_execute("ROLLBACK");
                let e = self.failed(source);
                Turned::failed(decided, through, e)
            }
        }
    }

    /// Folds the journal's entries older than [`FOLD_AFTER`] at `now` into the `hosts`
    /// snapshot and deletes them, when it holds more than `min_records` records (the
    /// server: [`FOLD_RECORDS`]) and more than there are hosts, and no other server is
    /// folding; returns how many records were folded. Takes no lock a turn waits for.
    ///
    /// # Errors
    /// When the database does not answer, or an entry does not decode (nothing is folded
    /// then).
    pub fn fold(&mut self, now: Time, min_records: i64) -> Result<u64, StoreError> {
        let shown = self.shown.clone();
        let before = now.as_micros() - FOLD_AFTER.as_micros() as i64;
        let folded = self.with(|client| -> Result<Result<u64, String>, postgres::Error> {
            let mut tx = client.transaction()?;
            let folding: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])?
                .get(0);
            if !folding {
                return Ok(Ok(0));
            }
            let due: bool = tx
                .query_one(
                    "SELECT COALESCE(SUM(n_records), 0) > GREATEST($1::int8, \
                     (SELECT count(*) FROM dynip.hosts)) FROM dynip.journal",
                    &[&min_records],
                )?
                .get(0);
            if !due {
                return Ok(Ok(0));
            }
            // Below `to`, every transaction has ended and every entry is older than
            // `before`.
            let to: i64 = tx
                .query_one(
                    "SELECT LEAST(pg_snapshot_xmin(pg_current_snapshot())::text::int8, \
                     (SELECT min(xid) FROM dynip.journal WHERE at >= $1))",
                    &[&before],
                )?
                .get(0);
            let entries = tx.query(
                "SELECT xid, records FROM dynip.journal WHERE xid < $1 ORDER BY xid",
                &[&to],
            )?;
            if entries.is_empty() {
                return Ok(Ok(0));
            }
            // The latest record of each host, in entry order.
            let mut latest: std::collections::HashMap<Name, Entry> =
                std::collections::HashMap::new();
            let mut n_records = 0u64;
            for row in &entries {
                let seq: i64 = row.get(0);
                let blob: &[u8] = row.get(1);
                let records = match super::journal::decode_records(blob) {
                    Ok(records) => records,
                    Err(e) => return Ok(Err(format!("journal entry {seq}: {e}"))),
                };
                n_records += records.len() as u64;
                for (name, record) in records {
                    let entry = Entry {
                        record,
                        seq,
                        dirty: false,
                    };
                    latest.insert(name, entry);
                }
            }
            let records: Vec<(Name, Entry)> = latest.into_iter().collect();
            for chunk in records.chunks(FOLD_CHUNK) {
                upsert_hosts(&mut tx, chunk)?;
            }
            tx.execute(
                "UPDATE dynip.meta SET value = $1 WHERE key = 'folded'",
                &[&to],
            )?;
            tx.execute("DELETE FROM dynip.journal WHERE xid < $1", &[&to])?;
            tx.commit()?;
            Ok(Ok(n_records))
        })?;
        folded.map_err(|detail| StoreError::DatabaseCorrupt { url: shown, detail })
    }

    /// Writes hosts and their history into the database as one commit: the original's
    /// file at the first start, or another store's contents.
    ///
    /// # Errors
    /// On a failed write; nothing is written then.
    pub fn import(
        &mut self,
        hosts: &[(Name, Record)],
        history: &[HistoryRow],
        txt: &[(Name, Vec<Txt>)],
        accounts: &[AcmeAccount],
    ) -> Result<(), StoreError> {
        let server = self.server.clone();
        let records: Vec<(Name, Entry)> = hosts
            .iter()
            .map(|(name, record)| {
                let entry = Entry {
                    record: *record,
                    seq: 0,
                    dirty: false,
                };
                (name.clone(), entry)
            })
            .collect();
        let history: Vec<LoggedChange> = history
            .iter()
            .map(|change| LoggedChange {
                id: 0,
                change: change.clone(),
            })
            .collect();
        let writes = Writes {
            records: &records,
            history: &history,
            txt,
            accounts,
            n_reports: 0,
            at: Time::now(),
            notice: None,
        };
        let connection = self.connection()?;
        let res = connection.prepared().and_then(|(client, statements)| {
            client.batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({GLOBAL_LOCK})"
            ))?;
            match write(client, statements, &writes)
                .and_then(|tx| commit(client, statements, tx, &writes, &server))
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        });
        match res {
            Ok(()) => {
                self.health.answered();
                Ok(())
            }
            Err(source) => Err(self.failed(source)),
        }
    }

    /// A host's address changes, oldest first.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn history(&mut self, name: &Name) -> Result<Vec<(Time, IpAddr)>, StoreError> {
        let shown = self.shown.clone();
        let rows = self.with(|client| {
            client.query(
                "SELECT at, address FROM dynip.history WHERE name_key = $1 ORDER BY at, id",
                &[&name.folded()],
            )
        })?;
        rows.iter()
            .map(|row| {
                let address: String = row.get(1);
                let addr = address.parse().map_err(|_| StoreError::DatabaseCorrupt {
                    url: shown.clone(),
                    detail: format!("bad address {address:?} in history"),
                })?;
                Ok((Time::from_micros(row.get(0)), addr))
            })
            .collect()
    }

    /// Every address change, oldest first: for copying the database into another store.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn all_history(&mut self) -> Result<Vec<HistoryRow>, StoreError> {
        let shown = self.shown.clone();
        let rows = self.with(|client| {
            client.query(
                "SELECT name, at, address FROM dynip.history ORDER BY id",
                &[],
            )
        })?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let address: String = row.get(2);
                let bad = |what: String| StoreError::DatabaseCorrupt {
                    url: shown.clone(),
                    detail: what,
                };
                Ok(HistoryRow {
                    name: Name::parse(&name)
                        .map_err(|_| bad(format!("bad name {name:?} in history")))?,
                    at: Time::from_micros(row.get(1)),
                    addr: address
                        .parse()
                        .map_err(|_| bad(format!("bad address {address:?} in history")))?,
                })
            })
            .collect()
    }
}

/// The rows of a read, before decoding.
struct Rows {
    /// Rows of the `hosts` snapshot (a load, or a reader sent back to it), shown first.
    snapshot: Vec<postgres::Row>,
    /// Journal entries, in order: their numbers and blobs.
    entries: Vec<(i64, Vec<u8>)>,
    txt: Vec<postgres::Row>,
    accounts: Vec<postgres::Row>,
    /// The last entry read and its time.
    last: Option<(i64, i64)>,
}

/// What was committed after `after`: the journal's entries, with the TXT sets and
/// accounts their transactions wrote; or, when entries after `after` were folded away
/// already, everything ([`read_all`]).
fn read_feed(
    client: &mut Client,
    statements: &Statements,
    after: i64,
    server: &str,
    in_transaction: bool,
) -> Result<Rows, postgres::Error> {
    // Not this server's own entries: it showed them when it made them.
    let feed = client.query(&statements.feed, &[&after, &server])?;
    let folded: i64 = feed.first().map_or(0, |row| row.get(0));
    let horizon: i64 = feed.first().map_or(after, |row| row.get(1));
    if folded > after {
        // A fold may not run while this reads the snapshot and then the journal: its
        // lock, held shared to the end of the transaction (one of its own if the caller
        // is not in one).
        if in_transaction {
            client.query_one("SELECT pg_advisory_xact_lock_shared($1)", &[&FOLD_LOCK])?;
            return read_all(client);
        }
        let mut tx = client.transaction()?;
        tx.query_one("SELECT pg_advisory_xact_lock_shared($1)", &[&FOLD_LOCK])?;
        let rows = read_all(&mut tx)?;
        tx.commit()?;
        return Ok(rows);
    }
    let mut rows = Rows {
        snapshot: Vec::new(),
        entries: Vec::with_capacity(feed.len()),
        txt: Vec::new(),
        accounts: Vec::new(),
        last: None,
    };
    let (mut txt_of, mut accounts_of) = (Vec::new(), Vec::new());
    let mut at = Time::now().as_micros();
    for row in feed {
        let Some(seq) = row.get::<_, Option<i64>>(2) else {
            continue;
        };
        at = row.get(3);
        rows.entries.push((seq, row.get(4)));
        let tx: i64 = row.get(7);
        if row.get::<_, bool>(5) {
            txt_of.push(tx);
        }
        if row.get::<_, bool>(6) {
            accounts_of.push(tx);
        }
    }
    rows.last = Some((horizon, at));
    if !txt_of.is_empty() {
        rows.txt = client.query(&statements.txt_of, &[&txt_of])?;
    }
    if !accounts_of.is_empty() {
        rows.accounts = client.query(&statements.accounts_of, &[&accounts_of])?;
    }
    Ok(rows)
}

/// Everything: the snapshot, the journal's entries, every TXT set and account; the last
/// entry read (or the fold point, when the journal is empty). In one snapshot when the
/// caller's transaction is one, or with folds kept out.
fn read_all(client: &mut impl postgres::GenericClient) -> Result<Rows, postgres::Error> {
    let horizon: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8",
            &[],
        )?
        .get(0);
    let snapshot = client.query(&format!("SELECT {HOST_COLUMNS} FROM dynip.hosts AS h"), &[])?;
    let entries: Vec<(i64, i64, Vec<u8>)> = client
        .query(
            "SELECT xid, at, records FROM dynip.journal ORDER BY xid",
            &[],
        )?
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let txt = client.query("SELECT name, rdata FROM dynip.txt ORDER BY name_key", &[])?;
    let accounts = client.query(
        "SELECT username, password_sha256, subdomain, txt_name, allow_from, created \
         FROM dynip.acme_accounts",
        &[],
    )?;
    let last = Some((
        horizon,
        entries
            .last()
            .map_or(Time::now().as_micros(), |&(_, at, _)| at),
    ));
    Ok(Rows {
        snapshot,
        entries: entries
            .into_iter()
            .map(|(seq, _, records)| (seq, records))
            .collect(),
        txt,
        accounts,
        last,
    })
}

impl Rows {
    fn decode(self, shown: &str) -> Result<Changes, StoreError> {
        let bad = |detail: String| StoreError::DatabaseCorrupt {
            url: shown.to_string(),
            detail,
        };
        let n_records: usize = self.entries.iter().map(|(_, blob)| blob.len() / 40).sum();
        let mut hosts = Vec::with_capacity(self.snapshot.len() + n_records);
        for row in &self.snapshot {
            let name: String = row.get(0);
            let parsed = Name::parse(&name).map_err(|_| bad(format!("bad host name {name:?}")))?;
            let v4 = seen(row, 3).map_err(|what| bad(format!("host {name}: {what}")))?;
            let v6 = seen(row, 6).map_err(|what| bad(format!("host {name}: {what}")))?;
            let record = Record {
                first_seen: Time::from_micros(row.get(2)),
                v4,
                v6,
                signed_at: row.get::<_, Option<i64>>(9).map(Time::from_micros),
                offline: row.get(10),
            };
            let entry = Entry {
                record,
                seq: row.get(1),
                dirty: false,
            };
            hosts.push((parsed, entry));
        }
        for (seq, blob) in &self.entries {
            let records = super::journal::decode_records(blob)
                .map_err(|e| bad(format!("journal entry {seq}: {e}")))?;
            hosts.extend(records.into_iter().map(|(name, record)| {
                let entry = Entry {
                    record,
                    seq: *seq,
                    dirty: false,
                };
                (name, entry)
            }));
        }
        let mut txt = Vec::with_capacity(self.txt.len());
        for row in &self.txt {
            let name: String = row.get(0);
            let parsed = Name::parse(&name).map_err(|_| bad(format!("bad TXT name {name:?}")))?;
            let rdata: Vec<Vec<u8>> = row.get(1);
            let set = rdata
                .into_iter()
                .map(Txt::from_rdata)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("TXT at {name}: {e}")))?;
            txt.push((parsed, set));
        }
        let mut accounts = Vec::with_capacity(self.accounts.len());
        for row in &self.accounts {
            let username: String = row.get(0);
            let what = |what: &str| bad(format!("acme-dns account {username}: {what}"));
            let hash: Vec<u8> = row.get(1);
            let txt_name: String = row.get(3);
            let allow_from: String = row.get(4);
            accounts.push(AcmeAccount {
                password_sha256: hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| what("a password hash that is not 32 bytes"))?,
                subdomain: row.get(2),
                txt_name: Name::parse(&txt_name).map_err(|_| what("a bad TXT name"))?,
                allow_from: allow_from
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| what("a bad network in allow_from"))?,
                created: Time::from_micros(row.get(5)),
                username,
            });
        }
        Ok(Changes {
            hosts,
            txt,
            accounts,
            last: self.last.map(|(seq, at)| (seq, Time::from_micros(at))),
        })
    }
}

/// One family's three columns from `first`: all NULL, or all set.
fn seen<A: std::str::FromStr>(
    row: &postgres::Row,
    first: usize,
) -> Result<Option<Seen<A>>, String> {
    super::seen_from_columns(row.get(first), row.get(first + 1), row.get(first + 2))
}

/// One family's columns, as arrays for `unnest`.
#[derive(Default)]
struct SeenColumns {
    addr: Vec<Option<String>>,
    last_seen: Vec<Option<i64>>,
    last_change: Vec<Option<i64>>,
}

impl SeenColumns {
    fn push<A: std::fmt::Display>(&mut self, seen: Option<Seen<A>>) {
        self.addr
            .push(seen.as_ref().map(|seen| seen.addr.to_string()));
        self.last_seen
            .push(seen.as_ref().map(|seen| seen.last_seen.as_micros()));
        self.last_change
            .push(seen.as_ref().map(|seen| seen.last_change.as_micros()));
    }
}

/// Writes a turn's history, TXT sets and accounts (its records go in its journal entry);
/// returns the transaction number the TXT sets and accounts carry, when there are any.
fn write(
    client: &mut Client,
    statements: &Statements,
    writes: &Writes<'_>,
) -> Result<Option<i64>, postgres::Error> {
    if !writes.history.is_empty() {
        let n = writes.history.len();
        let mut names = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut address = Vec::with_capacity(n);
        for logged in writes.history {
            names.push(logged.change.name.as_str());
            keys.push(logged.change.name.folded());
            at.push(logged.change.at.as_micros());
            address.push(logged.change.addr.to_string());
        }
        client.execute(&statements.history_write, &[&names, &keys, &at, &address])?;
    }
    if writes.txt.is_empty() && writes.accounts.is_empty() {
        return Ok(None);
    }
    let tx: i64 = client.query_one("SELECT nextval('dynip.tx')", &[])?.get(0);
    for (name, set) in writes.txt {
        let rdata: Vec<&[u8]> = set.iter().map(Txt::rdata).collect();
        client.execute(
            &statements.txt_write,
            &[
                &name.folded(),
                &name.as_str(),
                &tx,
                &writes.at.as_micros(),
                &rdata,
            ],
        )?;
    }
    for account in writes.accounts {
        let allow_from: Vec<String> = account.allow_from.iter().map(ToString::to_string).collect();
        client.execute(
            &statements.account_write,
            &[
                &account.username,
                &&account.password_sha256[..],
                &account.subdomain,
                &account.txt_name.as_str(),
                &allow_from.join(" "),
                &account.created.as_micros(),
                &tx,
            ],
        )?;
    }
    Ok(Some(tx))
}

/// Appends the turn's journal entry, notifies, and commits; returns the entry's
/// transaction id.
fn commit(
    client: &mut Client,
    statements: &Statements,
    tx: Option<i64>,
    writes: &Writes<'_>,
    server: &str,
) -> Result<i64, postgres::Error> {
    let n_reports = i64::try_from(writes.n_reports).unwrap_or(i64::MAX);
    let n_records = writes.records.len() as i64;
    let records = super::journal::encode_records(
        writes
            .records
            .iter()
            .map(|(name, entry)| (name, &entry.record)),
    );
    let xid: i64 = client
        .query_one(
            &statements.commit,
            &[
                &tx,
                &writes.at.as_micros(),
                &server,
                &n_reports,
                &n_records,
                &records,
                &!writes.txt.is_empty(),
                &!writes.accounts.is_empty(),
            ],
        )?
        .get(0);
    client.batch_execute("COMMIT")?;
    Ok(xid)
}

/// Writes records into the `hosts` snapshot (a fold), in one statement.
fn upsert_hosts(
    client: &mut impl postgres::GenericClient,
    records: &[(Name, Entry)],
) -> Result<u64, postgres::Error> {
    let n = records.len();
    let mut keys = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut first_seen = Vec::with_capacity(n);
    let (mut v4, mut v6) = (SeenColumns::default(), SeenColumns::default());
    let mut signed_at = Vec::with_capacity(n);
    let mut offline = Vec::with_capacity(n);
    for (name, entry) in records {
        let record = &entry.record;
        keys.push(name.folded());
        names.push(name.as_str());
        seqs.push(entry.seq);
        first_seen.push(record.first_seen.as_micros());
        v4.push(record.v4);
        v6.push(record.v6);
        signed_at.push(record.signed_at.map(Time::as_micros));
        offline.push(record.offline);
    }
    client.execute(
        "INSERT INTO dynip.hosts (name_key, name, seq, first_seen, ipv4, ipv4_last_seen, \
         ipv4_last_change, ipv6, ipv6_last_seen, ipv6_last_change, signed_at, offline) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], \
         $6::int8[], $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::int8[], \
         $12::bool[]) \
         ON CONFLICT (name_key) DO UPDATE SET name = EXCLUDED.name, seq = EXCLUDED.seq, \
         first_seen = EXCLUDED.first_seen, ipv4 = EXCLUDED.ipv4, \
         ipv4_last_seen = EXCLUDED.ipv4_last_seen, ipv4_last_change = EXCLUDED.ipv4_last_change, \
         ipv6 = EXCLUDED.ipv6, ipv6_last_seen = EXCLUDED.ipv6_last_seen, \
         ipv6_last_change = EXCLUDED.ipv6_last_change, signed_at = EXCLUDED.signed_at, \
         offline = EXCLUDED.offline",
        &[
            &keys,
            &names,
            &seqs,
            &first_seen,
            &v4.addr,
            &v4.last_seen,
            &v4.last_change,
            &v6.addr,
            &v6.last_seen,
            &v6.last_change,
            &signed_at,
            &offline,
        ],
    )
}

/// How often a server looks whether a fold is due.
pub const FOLD_EVERY: Duration = Duration::from_secs(10);

/// The database's upkeep, on a connection of its own to the database at `url`, every
/// [`FOLD_EVERY`] until `stop` says so: folds the journal ([`Database::fold`]); with
/// sinks (`outlets`: each sink's name and where its events go), renews this server's
/// claims on its pending deliveries and takes over those nobody renews (their server
/// gone), handing them to the sinks. Failures (the database away) are logged and tried
/// again at the next look.
pub fn keep_up(
    url: &DatabaseUrl,
    outlets: &[(String, std::sync::mpsc::Sender<(i64, Event)>)],
    stop: &std::sync::mpsc::Receiver<()>,
) {
    let mut database = None;
    let sinks: Vec<String> = outlets.iter().map(|(name, _)| name.clone()).collect();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(FOLD_EVERY) {
        if database.is_none() {
            database = Database::open(url, Arc::default())
                .map_err(|e| tracing::debug!(error = %e, "no upkeep: the database is away"))
                .ok();
        }
        let Some(database) = database.as_mut() else {
            continue;
        };
        match database.fold(Time::now(), FOLD_RECORDS) {
            Ok(0) => {}
            Ok(n_records) => tracing::debug!(n_records, "journal folded into the snapshot"),
            Err(e) => tracing::warn!(error = %e, "the journal could not be folded"),
        }
        if outlets.is_empty() {
            continue;
        }
        let now = Time::now();
        if let Err(e) = database.renew_claims(now) {
            tracing::warn!(error = %e, "claims on pending deliveries not renewed");
        }
        match database.claim_outbox(&sinks, now) {
            Ok(outbox) => {
                for (sink, pending) in outbox.pending {
                    let Some((_, events)) = outlets.iter().find(|(name, _)| *name == sink) else {
                        continue;
                    };
                    tracing::info!(%sink, n_events = pending.len(), "taking over deliveries another server left");
                    for event in pending {
                        let _ = events.send(event);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "pending deliveries not looked at"),
        }
    }
}

/// Listens for other servers' commits on its own connection: calls `woken` for each
/// notification, and once after each (re)connection, since notifications sent while it
/// was not connected are lost. Returns when `stop` is set (it looks every
/// `poll` at most).
pub fn listen(
    url: &DatabaseUrl,
    health: &DatabaseHealth,
    stop: &AtomicBool,
    poll: Duration,
    mut woken: impl FnMut(),
) {
    let Ok((config, tls)) = driver_config(url) else {
        // `Database::open` read the same URL and CA file: not reached.
        return;
    };
    while !stop.load(Ordering::Acquire) {
        let mut client = match config.connect(tls.clone()) {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "the listener cannot reach the database");
                health.failed();
                std::thread::sleep(RETRY_AFTER.min(poll));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::debug!(error = %e, "the listener cannot LISTEN");
            std::thread::sleep(RETRY_AFTER.min(poll));
            continue;
        }
        // What was committed while this listener was away.
        woken();
        while !stop.load(Ordering::Acquire) && !client.is_closed() {
            let woke = {
                let mut notifications = client.notifications();
                let first = notifications.timeout_iter(poll).next();
                match first {
                    Ok(Some(_)) => {
                        // Drain what else came: one wake-up reads it all.
                        while let Ok(Some(_)) = notifications.iter().next() {}
                        Ok(true)
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            };
            match woke {
                Ok(true) => woken(),
                // A quiet interval: a dead connection shows when it is used.
                Ok(false) => {
                    if client.simple_query("").is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// The driver's settings for `url` (its own, and dynip's defaults: [`CONNECT_TIMEOUT`],
/// TCP keepalives, the application name `dynip`) and its TLS connector.
///
/// # Errors
/// A URL the driver cannot read, a CA file that cannot be read.
fn driver_config(url: &DatabaseUrl) -> Result<(Config, MakeRustlsConnect), StoreError> {
    let (text, root) = split_root_cert(url.as_str());
    let mut config: Config = text.parse().map_err(|source| StoreError::Database {
        url: url.shown(),
        source,
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives_idle(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("dynip");
    }
    let tls = tls_connector(root.as_deref()).map_err(|detail| StoreError::DatabaseTls {
        url: url.shown(),
        detail,
    })?;
    Ok((config, tls))
}

/// Takes `sslrootcert=PATH` out of a URL's query (the driver does not read it): the
/// certificates of the authority the server's certificate must chain to, instead of the
/// public ones.
fn split_root_cert(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                root = Some(std::path::PathBuf::from(path));
                false
            }
            _ => true,
        })
        .collect();
    let text = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (text, root)
}

/// rustls with the public authorities, or the one in `root`'s PEM file.
fn tls_connector(root: Option<&std::path::Path>) -> Result<MakeRustlsConnect, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in sslrootcert {}", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_certificate_is_taken_out_of_the_url() {
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u@h/db?sslmode=require".to_string(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslrootcert=ca.pem"),
            ("postgres://u@h/db".to_string(), Some("ca.pem".into()))
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
    }

    #[test]
    fn health_goes_down_and_up() {
        let health = DatabaseHealth::default();
        assert_eq!(health.down_since(), None);
        health.failed();
        assert!(health.down_since().is_some());
        let mut out = String::new();
        health.render_prometheus(&mut out);
        assert!(out.contains("dynip_database_up 0\n"), "{out}");
        assert!(out.contains("dynip_database_errors_total 1\n"), "{out}");
        health.answered();
        assert_eq!(health.down_since(), None);
    }
}
