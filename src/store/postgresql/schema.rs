//! The `dynip` schema: its tables, created in a database without them, and its version,
//! checked before anything is written.

use super::*;

/// The version of the `dynip` schema this dynip writes.
pub(in crate::store) const PG_SCHEMA_VERSION: i64 = 1;

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
-- Entries kept whole in their row up to a page (about 110 records), never compressed:
-- pglz compressing every entry, and the TOAST table's rows and index, cost more CPU
-- than the bytes they saved.
ALTER TABLE dynip.journal ALTER COLUMN records SET STORAGE EXTERNAL;
ALTER TABLE dynip.journal SET (toast_tuple_target = 8160);
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

impl Database {
    /// Creates the schema in a database without one; refuses one from a newer dynip.
    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
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
}
