//! The TXT records (`txt`, version 6), one row per record, and the acme-dns accounts
//! that may set some of them (`acme_accounts`): written in the writer's turn with the
//! change that made them, read at start into the table.

use std::collections::BTreeMap;

use rusqlite::{params, Transaction};

use super::{crash_point, sqlite::Store, CrashPoint, StoreError, Turn};
use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::Time;
use crate::model::txt::Txt;

/// The tables (version 6). `name_key` is the name as compared ([`Name::folded`]); `at`
/// when the record was set, for the APIs. An account's `allow_from` is its networks
/// separated by spaces.
pub(super) const SCHEMA_TXT: &str = "
CREATE TABLE IF NOT EXISTS txt (
    name_key TEXT NOT NULL,
    name TEXT NOT NULL,
    rdata BLOB NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (name_key, rdata)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS acme_accounts (
    username TEXT PRIMARY KEY,
    password_sha256 BLOB NOT NULL,
    subdomain TEXT NOT NULL UNIQUE,
    txt_name TEXT NOT NULL,
    allow_from TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Writes the turn's TXT changes: each changed name's set replaces what it had.
pub(super) fn write(tx: &Transaction<'_>, turn: &Turn<'_>) -> rusqlite::Result<()> {
    if !turn.accounts.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO acme_accounts (username, password_sha256, subdomain, txt_name, \
             allow_from, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for account in turn.accounts {
            let allow_from: Vec<String> =
                account.allow_from.iter().map(ToString::to_string).collect();
            insert.execute(params![
                account.username,
                &account.password_sha256[..],
                account.subdomain,
                account.txt_name.as_str(),
                allow_from.join(" "),
                account.created.as_micros(),
            ])?;
        }
    }
    if turn.txt.is_empty() {
        if !turn.accounts.is_empty() {
            crash_point(CrashPoint::TxtWritten);
        }
        return Ok(());
    }
    let mut clear = tx.prepare_cached("DELETE FROM txt WHERE name_key = ?1")?;
    let mut insert =
        tx.prepare_cached("INSERT INTO txt (name_key, name, rdata, at) VALUES (?1, ?2, ?3, ?4)")?;
    for (name, set) in turn.txt {
        clear.execute([name.folded()])?;
        for txt in set {
            insert.execute(params![
                name.folded(),
                name.as_str(),
                txt.rdata(),
                turn.txt_at.as_micros()
            ])?;
        }
    }
    crash_point(CrashPoint::TxtWritten);
    Ok(())
}

impl Store {
    /// Every name's TXT records, in name order, each name's in the order they were set.
    ///
    /// # Errors
    /// On a failed query, or a row that does not decode (a damaged store).
    pub fn txt(&self) -> Result<BTreeMap<Name, Vec<Txt>>, StoreError> {
        let mut all: BTreeMap<Name, Vec<Txt>> = BTreeMap::new();
        if self.before_txt {
            return Ok(all);
        }
        let mut statement = self
            .conn
            .prepare("SELECT name, rdata FROM txt ORDER BY name_key, at, rdata")
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let name: String = row.get(0).map_err(|e| self.classify(e))?;
            let rdata: Vec<u8> = row.get(1).map_err(|e| self.classify(e))?;
            let name = Name::parse(&name)
                .map_err(|e| self.corrupt(format!("TXT record at {name:?}: {e}")))?;
            let txt = Txt::from_rdata(rdata)
                .map_err(|e| self.corrupt(format!("TXT record at {name}: {e}")))?;
            all.entry(name).or_default().push(txt);
        }
        Ok(all)
    }

    /// The acme-dns accounts.
    ///
    /// # Errors
    /// On a failed query, or a row that does not decode (a damaged store).
    pub fn acme_accounts(&self) -> Result<Vec<AcmeAccount>, StoreError> {
        if self.before_txt {
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare(
                "SELECT username, password_sha256, subdomain, txt_name, allow_from, created \
                 FROM acme_accounts ORDER BY created",
            )
            .map_err(|source| self.classify(source))?;
        let mut rows = statement.query([]).map_err(|e| self.classify(e))?;
        let mut accounts = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.classify(e))? {
            let read = || -> rusqlite::Result<(String, Vec<u8>, String, String, String, i64)> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            };
            let (username, hash, subdomain, txt_name, allow_from, created) =
                read().map_err(|e| self.classify(e))?;
            let bad = |what: &str| self.corrupt(format!("acme-dns account {username}: {what}"));
            let password_sha256: [u8; 32] = hash
                .as_slice()
                .try_into()
                .map_err(|_| bad("a password hash that is not 32 bytes"))?;
            let txt_name = Name::parse(&txt_name).map_err(|_| bad("a bad TXT name"))?;
            let allow_from = allow_from
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("a bad network in allow_from"))?;
            accounts.push(AcmeAccount {
                username,
                password_sha256,
                subdomain,
                txt_name,
                allow_from,
                created: Time::from_micros(created),
            });
        }
        Ok(accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Time;

    #[test]
    fn a_names_set_replaces_what_it_had_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dynip.sqlite3");
        let mut store = Store::open(&path).unwrap();
        let name = |text: &str| Name::parse(text).unwrap();
        let token = |text: &str| Txt::from_text(text).unwrap();
        let first = [
            (name("_acme-challenge.PC"), vec![token("a"), token("b")]),
            (name("_acme-challenge.tv"), vec![token("c")]),
        ];
        store
            .commit(&Turn {
                txt: &first,
                txt_at: Time::from_micros(1),
                ..Turn::default()
            })
            .unwrap();
        let second = [
            (name("_acme-challenge.pc"), vec![token("d")]),
            (name("_acme-challenge.tv"), vec![]),
        ];
        store
            .commit(&Turn {
                txt: &second,
                txt_at: Time::from_micros(2),
                ..Turn::default()
            })
            .unwrap();
        drop(store);
        let loaded = Store::open_read_only(&path).unwrap().load().unwrap();
        let txt: Vec<(String, Vec<Txt>)> = loaded
            .txt
            .into_iter()
            .map(|(name, set)| (name.as_str().to_owned(), set))
            .collect();
        assert_eq!(txt, [("_acme-challenge.pc".to_owned(), vec![token("d")])]);
    }
}
