//! A writing turn: the locks, the read, the decision and the commit, in one transaction.

use super::*;

/// The class of the per-host advisory locks (two-key locks, a key space apart from
/// [`GLOBAL_LOCK`]'s); the second key is the host's `hashtext`.
const HOST_LOCK_CLASS: i32 = 0x6479_6e69;

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
pub(super) struct Statements {
    /// Takes the per-host locks of `$1` (keys, lock class `$2`), in one order.
    pub(super) lock_hosts: tokio_postgres::Statement,
    /// [`FEED`].
    pub(super) feed: tokio_postgres::Statement,
    /// The TXT sets and accounts of transactions `$1`.
    pub(super) txt_of: tokio_postgres::Statement,
    pub(super) accounts_of: tokio_postgres::Statement,
    pub(super) history_write: tokio_postgres::Statement,
    pub(super) txt_write: tokio_postgres::Statement,
    pub(super) account_write: tokio_postgres::Statement,
    /// A turn's journal entry under the next commit number, and its notification.
    pub(super) commit: tokio_postgres::Statement,
}

const LOCK_HOSTS: &str = "SELECT count(pg_advisory_xact_lock($2, h)) FROM \
     (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s";

/// A turn's journal entry, with its transaction's id (returned: the records' `seq`, by
/// which a reader tells an older record from a newer), and its notification.
const COMMIT: &str = "WITH j AS (INSERT INTO dynip.journal (xid, tx, at, server, n_reports, \
     n_records, records, has_txt, has_accounts) VALUES (pg_current_xact_id()::text::int8, \
     COALESCE($1::int8, nextval('dynip.tx')), $2, $3, $4, $5, $6, $7, $8) RETURNING xid) \
     SELECT j.xid, pg_notify('dynip', '')::text FROM j";

impl Statements {
    pub(super) fn prepare(client: &mut Session) -> Result<Statements, tokio_postgres::Error> {
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

/// Writes a turn's TXT sets and accounts; returns the transaction number they carry,
/// when there are any.
pub(super) fn write(
    client: &mut Session,
    statements: &Statements,
    writes: &Writes<'_>,
) -> Result<Option<i64>, tokio_postgres::Error> {
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

/// Writes the turn's address changes and its journal entry (when it has one: with its
/// notification) and commits, the three sent together; returns the entry's transaction
/// id. Any statement failing fails the whole: the database then answers the COMMIT with
/// a rollback.
pub(super) fn commit(
    client: &mut Session,
    statements: &Statements,
    tx: Option<i64>,
    writes: &Writes<'_>,
    server: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let n = writes.history.len();
    let (mut names, mut keys) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut at, mut address) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for logged in writes.history {
        names.push(logged.change.name.as_str());
        keys.push(logged.change.name.folded());
        at.push(logged.change.at.as_micros());
        address.push(logged.change.addr.to_string());
    }
    let n_reports = i64::try_from(writes.n_reports).unwrap_or(i64::MAX);
    let n_records = writes.records.len() as i64;
    let records = crate::store::journal::encode_records(
        writes
            .records
            .iter()
            .map(|(name, entry)| (name, &entry.record)),
    );
    let (turn_at, has_txt, has_accounts) = (
        writes.at.as_micros(),
        !writes.txt.is_empty(),
        !writes.accounts.is_empty(),
    );
    let db = client.client();
    let (history, entry, committed) = client.wait(async {
        tokio::join!(biased;
            async {
                if n == 0 {
                    return Ok(0);
                }
                db.execute(&statements.history_write, &[&names, &keys, &at, &address])
                    .await
            },
            async {
                if !writes.has_entry() {
                    return Ok(None);
                }
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
                    &tx,
                    &turn_at,
                    &server,
                    &n_reports,
                    &n_records,
                    &records,
                    &has_txt,
                    &has_accounts,
                ];
                let row = db.query_one(&statements.commit, &params).await?;
                Ok(Some(row.get::<_, i64>(0)))
            },
            db.batch_execute("COMMIT"),
        )
    });
    history?;
    let xid = entry?;
    committed?;
    Ok(xid)
}

impl Database {
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
        let res = (|| -> Result<Result<i64, StoreError>, tokio_postgres::Error> {
            // The transaction by hand, sent together: BEGIN with the global lock, the
            // hosts' locks, and the read, which the database runs once it holds them.
            let begin = match hosts {
                Some(_) => {
                    format!("{BEGIN_READ}; SELECT pg_advisory_xact_lock_shared({GLOBAL_LOCK})")
                }
                None => format!("{BEGIN_READ}; SELECT pg_advisory_xact_lock({GLOBAL_LOCK})"),
            };
            let db = client.client();
            let feed_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&after, &server];
            let (begun, locked, feed) = client.wait(async {
                tokio::join!(biased;
                    db.batch_execute(&begin),
                    async {
                        match hosts {
                            Some(hosts) => db
                                .query_one(&statements.lock_hosts, &[&hosts, &HOST_LOCK_CLASS])
                                .await
                                .map(drop),
                            None => Ok(()),
                        }
                    },
                    // Not this server's own entries: it showed them when it made them.
                    db.query(&statements.feed, &feed_params),
                )
            });
            begun?;
            locked?;
            let rows = read_feed(client, statements, after, feed?)?;
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
            // Without an entry (nothing other servers need to learn), no number.
            let seq = commit(client, statements, tx, &writes, &server)?;
            Ok(Ok(seq.unwrap_or(last)))
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
}
