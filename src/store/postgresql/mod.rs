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

use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{HistoryRow, Loaded, LoggedChange, StoreError};
use crate::config::DatabaseUrl;
use crate::model::account::AcmeAccount;
use crate::model::event::Event;
use crate::model::name::Name;
use crate::model::record::{Record, Seen, Time};
use crate::model::txt::Txt;
use crate::state::table::Entry;

mod connect;
mod fold;
mod health;
mod outbox;
mod read;
mod schema;
mod session;
mod turn;

pub use connect::listen;
pub use fold::{keep_up, FOLD_AFTER, FOLD_EVERY, FOLD_RECORDS};
pub use health::DatabaseHealth;
pub use outbox::{NoticeWrites, CLAIM_FOR};
pub use read::Changes;
pub(in crate::store) use schema::PG_SCHEMA_VERSION;
pub use turn::{Turned, Writes};

use connect::driver_config;
use fold::FOLD_LOCK;
use read::{read_all, read_feed, BEGIN_READ, FEED};
use session::{Listening, Session};
use turn::{commit, write, Statements};

/// The runtime of a store's connections ([`session::runtime`]).
///
/// # Errors
/// When the OS refuses what it needs.
fn runtime(shown: &str) -> Result<Arc<tokio::runtime::Runtime>, StoreError> {
    session::runtime().map_err(|e| StoreError::DatabaseSetup {
        url: shown.to_string(),
        detail: format!("cannot start its connections' runtime: {e}"),
    })
}

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
pub type DriverError = tokio_postgres::Error;

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

/// The global advisory lock: held shared by turns of reports, exclusively by turns that
/// change TXT records or accounts, by imports and by the creation of the schema ("dynip"
/// in ASCII).
pub const GLOBAL_LOCK: i64 = 0x0064_796e_6970;

/// The channel commits are announced on (a wake-up: the payload is empty).
pub const CHANNEL: &str = "dynip";

/// How long a connection attempt may take before the server calls the database
/// unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long after a failed attempt the next one is made: writes in between are refused
/// at once instead of each waiting for a connection that will not come.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A connection, and its statements once the schema is there.
struct Connection {
    client: Session,
    statements: Option<Statements>,
}

impl Connection {
    /// The connection and its prepared statements.
    fn prepared(&mut self) -> Result<(&mut Session, &Statements), tokio_postgres::Error> {
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
    runtime: Arc<tokio::runtime::Runtime>,
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
            runtime: runtime(&shown)?,
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
        let mut client =
            Session::connect(&runtime(&shown)?, &config, tls).map_err(database_error)?;
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
            match Session::connect(&self.runtime, &self.config, self.tls.clone()) {
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
        work: impl FnOnce(&mut Session) -> Result<T, tokio_postgres::Error>,
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
    fn failed(&mut self, source: tokio_postgres::Error) -> StoreError {
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
            let mut tx = client.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
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
