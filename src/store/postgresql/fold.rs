//! The fold (the journal's older entries written into the `dynip.hosts` snapshot) and
//! the upkeep thread that runs it and keeps this server's delivery claims.

use super::*;

/// The advisory lock of a fold: one server folds at a time.
pub(super) const FOLD_LOCK: i64 = 0x66_6f6c_6400;

/// Hosts written into the snapshot per statement of a fold.
const FOLD_CHUNK: usize = 10_000;

/// Journal entries younger than this are never folded: a server that is up reads them
/// long before (within a second); one that was away longer reads the snapshot again.
pub const FOLD_AFTER: Duration = Duration::from_secs(60);

/// Records the journal may hold before a fold is due (or as many as there are hosts,
/// when more): as the SQLite store's sweep.
pub const FOLD_RECORDS: i64 = 65_536;

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

/// Writes records into the `hosts` snapshot (a fold), in one statement.
fn upsert_hosts(
    client: &mut Session,
    records: &[(Name, Entry)],
) -> Result<u64, tokio_postgres::Error> {
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

impl Database {
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
        let folded = self.with(
            |client| -> Result<Result<u64, String>, tokio_postgres::Error> {
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
                    let records = match crate::store::journal::decode_records(blob) {
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
            },
        )?;
        folded.map_err(|detail| StoreError::DatabaseCorrupt { url: shown, detail })
    }
}
