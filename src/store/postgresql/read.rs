//! Reading what other servers committed: the journal from a horizon of transaction ids,
//! or the snapshot and the whole journal when a fold went past it; decoding its rows.

use super::*;

/// The fold point, the read horizon, and the journal's entries from `$1` on (other
/// servers': `$2` is this one), in order. Run only in a transaction begun with
/// [`BEGIN_READ`].
pub(super) const FEED: &str =
    "SELECT f.value, pg_snapshot_xmin(pg_current_snapshot())::text::int8, \
     j.xid, j.at, j.records, j.has_txt, j.has_accounts, j.tx \
     FROM (SELECT value FROM dynip.meta WHERE key = 'folded') AS f \
     LEFT JOIN LATERAL (SELECT * FROM dynip.journal WHERE xid >= $1 AND server <> $2 \
     ORDER BY xid) AS j ON true";

/// Begins a transaction that reads the journal ([`FEED`]), in one round trip with what
/// follows it.
///
/// Without sequential scans: [`FEED`] is a prepared statement, whose plan the server
/// makes once for the session, and a plan made while the journal was small scanned the
/// whole journal at every read for as long as the session lasted (0.3-0.6 ms a turn in
/// the bench, and growing with the journal). Planned without them, it finds the few
/// entries after the horizon through the index, whatever the journal's size then.
pub(super) const BEGIN_READ: &str = "BEGIN; SET LOCAL enable_seqscan = off";

const HOST_COLUMNS: &str = "h.name, h.seq, h.first_seen, h.ipv4, h.ipv4_last_seen, \
                            h.ipv4_last_change, h.ipv6, h.ipv6_last_seen, h.ipv6_last_change, \
                            h.signed_at, h.offline";

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

/// The rows of a read, before decoding.
pub(super) struct Rows {
    /// Rows of the `hosts` snapshot (a load, or a reader sent back to it), shown first.
    snapshot: Vec<tokio_postgres::Row>,
    /// Journal entries, in order: their numbers and blobs.
    entries: Vec<(i64, Vec<u8>)>,
    txt: Vec<tokio_postgres::Row>,
    accounts: Vec<tokio_postgres::Row>,
    /// The last entry read and its time.
    last: Option<(i64, i64)>,
}

/// What was committed after `after`, from [`FEED`]'s rows (`feed`, read in the same
/// transaction, begun with [`BEGIN_READ`]): the journal's entries, with the TXT sets and
/// accounts their transactions wrote; or, when entries after `after` were folded away
/// already, everything ([`read_all`]).
pub(super) fn read_feed(
    client: &mut Session,
    statements: &Statements,
    after: i64,
    feed: Vec<tokio_postgres::Row>,
) -> Result<Rows, tokio_postgres::Error> {
    let folded: i64 = feed.first().map_or(0, |row| row.get(0));
    let horizon: i64 = feed.first().map_or(after, |row| row.get(1));
    if folded > after {
        // A fold may not run while this reads the snapshot and then the journal: its
        // lock, held shared to the end of the transaction. Whole tables are read as they
        // lie.
        client.query_one("SELECT pg_advisory_xact_lock_shared($1)", &[&FOLD_LOCK])?;
        client.batch_execute("SET LOCAL enable_seqscan = on")?;
        return read_all(client);
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
pub(super) fn read_all(client: &mut Session) -> Result<Rows, tokio_postgres::Error> {
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
    pub(super) fn decode(self, shown: &str) -> Result<Changes, StoreError> {
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
            let records = crate::store::journal::decode_records(blob)
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
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<Option<Seen<A>>, String> {
    crate::store::seen_from_columns(row.get(first), row.get(first + 1), row.get(first + 2))
}

impl Database {
    /// What was committed after `after`: for a server woken by another's commit.
    ///
    /// # Errors
    /// When the database does not answer, or a row does not decode.
    pub fn changes_since(&mut self, after: i64) -> Result<Changes, StoreError> {
        let shown = self.shown.clone();
        let server = self.server.clone();
        let rows = match self.connection()?.prepared() {
            Ok((client, statements)) => (|| {
                let db = client.client();
                let feed_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                    [&after, &server];
                let (begun, feed) = client.wait(async {
                    tokio::join!(biased;
                        db.batch_execute(BEGIN_READ),
                        // Not this server's own entries: it showed them when it made them.
                        db.query(&statements.feed, &feed_params),
                    )
                });
                let rows = begun
                    .and(feed)
                    .and_then(|feed| read_feed(client, statements, after, feed));
                client.batch_execute(if rows.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
                rows
            })(),
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
}
