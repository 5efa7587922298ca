//! `dynip copy-store FROM TO`: a store's whole state into an empty other store, from the
//! SQLite file to a PostgreSQL database or back, for moving to several servers (or back
//! to one).
//!
//! Owns what is copied (the hosts, every address change, the TXT records and the
//! acme-dns accounts) and the refusal to write into a store that holds any of those. The
//! notifications' events and deliveries stay behind: a database keeps none (see
//! `database_url` in the README). Must not be run while a server writes to FROM: the copy
//! is of one moment, and what comes after it is not in TO.

use std::path::PathBuf;

use super::postgresql::Database;
use super::{HistoryRow, Store, StoreError, Turn};
use crate::config::DatabaseUrl;
use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::model::txt::Txt;

/// Where a store is: a `postgres://` URL, or else the path of an SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(DatabaseUrl),
}

impl StoreLocation {
    /// A `postgres://` (or `postgresql://`) URL, or else a path.
    pub fn parse(text: &str) -> StoreLocation {
        match DatabaseUrl::parse(text) {
            Ok(url) => StoreLocation::Postgres(url),
            Err(_) => StoreLocation::Sqlite(PathBuf::from(text)),
        }
    }

    /// As the user wrote it, without a password.
    pub fn shown(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => url.shown(),
        }
    }
}

/// A store's whole state, as it is copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub hosts: Vec<(Name, Record)>,
    /// Every address change, oldest first.
    pub history: Vec<HistoryRow>,
    pub txt: Vec<(Name, Vec<Txt>)>,
    pub accounts: Vec<AcmeAccount>,
}

impl Contents {
    fn of(loaded: super::Loaded, history: Vec<HistoryRow>) -> Contents {
        Contents {
            hosts: loaded
                .hosts
                .into_iter()
                .map(|(name, entry)| (name, entry.record))
                .collect(),
            history,
            txt: loaded.txt.into_iter().collect(),
            accounts: loaded.accounts,
        }
    }
}

/// Reads the whole state of the store at `from`.
///
/// # Errors
/// A store that is missing or damaged, a database that cannot be reached.
pub fn read_contents(from: &StoreLocation) -> Result<Contents, StoreError> {
    match from {
        StoreLocation::Sqlite(path) => {
            let store = Store::open_read_only(path)?;
            let loaded = store.load()?;
            let history = store.all_history(&loaded.progress.unsettled)?;
            Ok(Contents::of(loaded, history))
        }
        StoreLocation::Postgres(url) => {
            let mut database = Database::open(url, std::sync::Arc::default())?;
            let (loaded, _) = database.load()?;
            let history = database.all_history()?;
            Ok(Contents::of(loaded, history))
        }
    }
}

/// Writes `contents` into the store at `to` (an SQLite file is created), in one
/// transaction, if that store holds nothing yet.
///
/// # Errors
/// [`StoreError::NotEmpty`] when `to` holds anything; a store that cannot be opened or
/// written (nothing is written then).
pub fn write_contents(to: &StoreLocation, contents: &Contents) -> Result<(), StoreError> {
    let not_empty = || StoreError::NotEmpty(to.shown());
    match to {
        StoreLocation::Sqlite(path) => {
            let mut store = Store::open(path)?;
            if !store.is_empty()? || !store.txt()?.is_empty() || !store.acme_accounts()?.is_empty()
            {
                return Err(not_empty());
            }
            store.import_all(
                &contents.hosts,
                &contents.history,
                &Turn {
                    txt: &contents.txt,
                    txt_at: Time::now(),
                    accounts: &contents.accounts,
                    ..Turn::default()
                },
            )
        }
        StoreLocation::Postgres(url) => {
            let mut database = Database::open(url, std::sync::Arc::default())?;
            if !database.is_empty()? {
                return Err(not_empty());
            }
            database.import(
                &contents.hosts,
                &contents.history,
                &contents.txt,
                &contents.accounts,
            )
        }
    }
}
