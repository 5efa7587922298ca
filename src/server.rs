//! The server: wires the edges to the writer, the table and the export.
//!
//! Owns start-up (check the files, import the original's JSON file into an empty store,
//! load the table, bind) and shutdown (stop receiving, let the writer commit what it has,
//! write the export). Must not decode, validate or store anything itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Secret, ServerConfig, SinkConfig, SinkTarget, NOTIFY_SECTION_PREFIX};
use crate::edge::dns::Dns;
use crate::edge::export;
use crate::edge::notify::counters::{self, SinkCounters};
use crate::edge::notify::send::Messenger;
use crate::edge::notify::sink::{self, SinkStart};
use crate::error::Error;
use crate::model::record::Time;
use crate::policy::Policy;
use crate::state::metrics::Metrics;
use crate::state::outbox::Settlements;
use crate::state::table::Table;
use crate::store::postgresql::Database;
use crate::store::{self, Loaded, Progress, Store};
use crate::writer::{Liveness, Recent};
use crate::{edge::http, edge::systemd, edge::udp, writer};

/// A server that has checked its files, loaded its table and bound its sockets, ready to
/// [`run`](Server::run).
pub struct Server {
    config: ServerConfig,
    ledger: Ledger,
    table: Arc<Table>,
    udp: Vec<std::net::UdpSocket>,
    policy: Arc<watch::Sender<Arc<Policy>>>,
    /// The HTTP listener, when `http_listen` is set.
    http: Option<http::Listener>,
    metrics: Arc<Metrics>,
    /// The DNS face, when `dns_listen` is set.
    dns: Option<Dns>,
    /// The sinks, ready to start, when any is configured.
    notify: Option<Notify>,
}

/// Where the writer commits, and where it goes on from.
enum Ledger {
    /// The SQLite store, and where its journal left off (from [`Loaded`]).
    Sqlite { store: Store, progress: Progress },
    /// A PostgreSQL database shared with other servers, and the last commit the table
    /// shows.
    Postgres {
        database: Box<Database>,
        /// Where it is, for the listener's and the upkeep's connections.
        url: crate::config::DatabaseUrl,
        last_seq: i64,
        /// With sinks: the pending deliveries this server claimed at start.
        outbox: Option<store::Outbox>,
    },
}

/// What the store's background thread keeps doing: checkpointing the SQLite file's WAL,
/// or the database's upkeep (`keep_up`: folding its journal, renewing and taking over
/// claims on deliveries for the sinks).
enum Upkeep {
    Checkpoint(std::path::PathBuf),
    Database(
        crate::config::DatabaseUrl,
        Vec<(
            String,
            std::sync::mpsc::Sender<(i64, crate::model::event::Event)>,
        )>,
    ),
}

/// The sinks, set up at start, and what the outbox held for them.
struct Notify {
    sinks: Vec<(SinkConfig, Messenger, Arc<SinkCounters>)>,
    outbox: store::Outbox,
}

impl Notify {
    /// Sets up each sink, with what the outbox holds for them.
    fn prepare(config: &ServerConfig, outbox: store::Outbox) -> Result<Notify, Error> {
        let sinks = prepare_sinks(config)?
            .into_iter()
            .map(|(sink, messenger)| (sink, messenger, Arc::new(SinkCounters::default())))
            .collect();
        for (name, pending) in &outbox.pending {
            if !config.notify.iter().any(|sink| &sink.name == name) {
                warn!(
                    sink = %name,
                    n_events = pending.len(),
                    "events pending for a sink no longer configured stay in the store"
                );
            }
        }
        Ok(Notify { sinks, outbox })
    }

    /// Starts each sink's thread; returns the writer's part, and each sink's name with
    /// where its events go (for deliveries taken over from another server).
    fn start(self, config: &ServerConfig, metrics: &Metrics) -> Result<Started, Error> {
        let Notify { sinks, mut outbox } = self;
        let settlements = Arc::new(Settlements::default());
        let shown: Vec<(String, Arc<SinkCounters>)> = sinks
            .iter()
            .map(|(sink, _, counters)| (sink.name.clone(), Arc::clone(counters)))
            .collect();
        metrics.add_family(Box::new(move |out: &mut String| {
            counters::render(&shown, Time::now(), out)
        }));
        let mut outlets = Vec::new();
        let mut takeover = Vec::new();
        for (index, (sink, messenger, counters)) in sinks.into_iter().enumerate() {
            let (events_tx, events_rx) = std::sync::mpsc::channel();
            takeover.push((sink.name.clone(), events_tx.clone()));
            outlets.push(writer::Outlet {
                name: sink.name.clone(),
                filter: sink.filter.clone(),
                events: events_tx,
            });
            sink::spawn(SinkStart {
                index,
                pending: outbox.pending.remove(&sink.name).unwrap_or_default(),
                config: sink,
                messenger,
                events: events_rx,
                settlements: Arc::clone(&settlements),
                counters,
                max_age: config.notify_max_age,
            })
            .map_err(|e| Error::Internal(format!("cannot start a sink's thread: {e}")))?;
        }
        let notice = writer::Notice::new(
            outlets,
            config.stale_after,
            config.notify_max_age.max(EVENTS_KEEP),
            outbox.next_event,
            outbox.stale,
            settlements,
            std::time::Instant::now(),
        );
        Ok(Started { notice, takeover })
    }
}

/// The sinks, started.
struct Started {
    /// The writer's part.
    notice: writer::Notice,
    /// Each sink's name and where its events go.
    takeover: Vec<(
        String,
        std::sync::mpsc::Sender<(i64, crate::model::event::Event)>,
    )>,
}

/// Sets up each sink of `config` (its secret read, its client built), as the server's
/// start does: what cannot be set up is an error naming the section and key.
///
/// # Errors
/// An unreadable or empty `secret_file`, an address the mail client refuses.
pub fn prepare_sinks(config: &ServerConfig) -> Result<Vec<(SinkConfig, Messenger)>, Error> {
    let mut sinks = Vec::new();
    for sink in &config.notify {
        let section = format!("{NOTIFY_SECTION_PREFIX}{}", sink.name);
        let secret = match &sink.target {
            SinkTarget::Webhook {
                secret: Some(Secret::Text(text)),
                ..
            } => Some(text.as_bytes().to_vec()),
            SinkTarget::Webhook {
                secret: Some(Secret::File(path)),
                ..
            } => {
                let mut bytes = std::fs::read(path).map_err(|e| Error::Sink {
                    section: section.clone(),
                    key: "secret_file",
                    reason: format!("cannot read {}: {e}", path.display()),
                })?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(Error::Sink {
                        section,
                        key: "secret_file",
                        reason: format!("{} is empty", path.display()),
                    });
                }
                Some(bytes)
            }
            _ => None,
        };
        let messenger = Messenger::new(sink, secret).map_err(|reason| Error::Sink {
            section: section.clone(),
            key: "kind",
            reason,
        })?;
        sinks.push((sink.clone(), messenger));
    }
    Ok(sinks)
}

/// How long events are kept for the API, the status page and `dynip events` (longer
/// with a longer `notify_max_age`).
const EVENTS_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Replaces the keys and rules in force (SIGHUP), without stopping anything.
#[derive(Clone)]
pub struct PolicyHandle(Arc<watch::Sender<Arc<Policy>>>);

impl PolicyHandle {
    /// Puts `config`'s keys, `allow_from` and `allow_unsigned` in force for every datagram
    /// received from now on. Other keys (addresses, paths) need a restart.
    pub fn replace(&self, config: &ServerConfig) {
        self.0.send_replace(Arc::new(Policy::new(config)));
    }
}

impl Server {
    /// Checks the client log and the store, imports the original's file into an empty
    /// store, loads the table, binds, and writes the export once (so a file that cannot be
    /// written is found now, not in an hour).
    ///
    /// # Errors
    /// A damaged client log or store (left as they are), a socket that cannot be bound, a
    /// client log that cannot be written.
    pub fn open(config: &ServerConfig) -> Result<Server, Error> {
        let imported = export::read(&config.client_log_path)?;
        let (mut ledger, loaded) = match &config.database_url {
            None => {
                let mut store = Store::open(&config.store_path)?;
                if store.is_empty()? && imported.n_entries > 0 {
                    store::import_original(
                        &config.client_log_path,
                        &imported.hosts,
                        &imported.skipped,
                        |hosts, history| store.import(hosts, history),
                    )?;
                }
                let mut loaded = store.load()?;
                let progress = std::mem::take(&mut loaded.progress);
                (Ledger::Sqlite { store, progress }, loaded)
            }
            Some(url) => {
                // The driver blocks on a runtime of its own: not on this one's thread.
                let opened = std::thread::scope(|scope| {
                    scope
                        .spawn(|| -> Result<_, store::StoreError> {
                            let mut database = Database::open(url, Arc::default())?;
                            if database.is_empty()? && imported.n_entries > 0 {
                                store::import_original(
                                    &config.client_log_path,
                                    &imported.hosts,
                                    &imported.skipped,
                                    |hosts, history| database.import(hosts, history, &[], &[]),
                                )?;
                            }
                            let (loaded, last_seq) = database.load()?;
                            let outbox = match config.notify.is_empty() {
                                true => None,
                                false => {
                                    let sinks: Vec<String> = config
                                        .notify
                                        .iter()
                                        .map(|sink| sink.name.clone())
                                        .collect();
                                    Some(database.claim_outbox(&sinks, Time::now())?)
                                }
                            };
                            Ok((database, loaded, last_seq, outbox))
                        })
                        .join()
                });
                let (database, loaded, last_seq, outbox) = opened
                    .map_err(|_| Error::Internal("opening the database panicked".to_string()))??;
                let database = Box::new(database);
                let ledger = Ledger::Postgres {
                    database,
                    url: url.clone(),
                    last_seq,
                    outbox,
                };
                (ledger, loaded)
            }
        };
        // A million imported hosts are over 100 MiB: gone before the table is loaded.
        drop(imported);
        let Loaded {
            hosts,
            txt,
            accounts,
            progress: _,
        } = loaded;
        let table = Table::new(hosts)
            .hiding_stale(config.dns.hide_stale.then_some(config.stale_after))
            .with_txt(txt)
            .with_acme_accounts(accounts);
        // What changed while the server was down is not known: its start is a change.
        table.note_dns_change(Time::now());
        let table = Arc::new(table);
        let notify = match &mut ledger {
            _ if config.notify.is_empty() => None,
            Ledger::Sqlite { store, .. } => Some(Notify::prepare(config, store.outbox()?)?),
            Ledger::Postgres { outbox, .. } => {
                Some(Notify::prepare(config, outbox.take().unwrap_or_default())?)
            }
        };
        let metrics = Arc::new(Metrics::default());
        match &ledger {
            Ledger::Sqlite { .. } => info!(
                hosts = table.len(),
                store = %config.store_path.display(),
                "store loaded"
            ),
            Ledger::Postgres {
                database, last_seq, ..
            } => {
                info!(hosts = table.len(), database = %database.shown(), last_commit = last_seq, "database loaded");
                let health = database.health();
                metrics.add_family(Box::new(move |out: &mut String| {
                    health.render_prometheus(out)
                }));
            }
        }
        let policy = Arc::new(watch::Sender::new(Arc::new(Policy::new(config))));
        let dns = match config.dns.listen {
            Some(listen) => Some(Dns::bind(&config.dns, listen, config.stale_after)?),
            None => None,
        };
        let udp = udp::bind(&config.server_ip, config.server_port)?;
        let http = http::bind(config)?;
        export::write(&config.client_log_path, &table)?;
        if let Some(dns) = &dns {
            let counters = dns.counters();
            metrics.add_family(Box::new(move |out: &mut String| {
                counters.render_prometheus(out)
            }));
        }
        Ok(Server {
            config: config.clone(),
            ledger,
            table,
            udp,
            policy,
            http,
            metrics,
            dns,
            notify,
        })
    }

    /// A handle to replace the keys and rules in force while the server runs.
    pub fn policy(&self) -> PolicyHandle {
        PolicyHandle(Arc::clone(&self.policy))
    }

    /// The addresses the report sockets are bound to.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|socket| socket.local_addr().ok())
            .collect()
    }

    /// The address the HTTP listener is bound to, when `http_listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(http::Listener::local_addr)
    }

    /// The server's counters, for modules that add their own families.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The in-memory table, for readers in the same process.
    pub fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table)
    }

    /// Serves until `shutdown` is cancelled, then commits what was received and writes
    /// the export.
    ///
    /// # Errors
    /// When a thread cannot be started, or the final export fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let table = Arc::clone(&self.table);
        let recent = Arc::new(Recent::default());
        let liveness = Arc::new(Liveness::default());
        let (notice, takeover) = match self.notify {
            Some(notify) => {
                let started = notify.start(&self.config, &self.metrics)?;
                (Some(started.notice), started.takeover)
            }
            None => (None, Vec::new()),
        };
        let database = match &self.ledger {
            Ledger::Postgres { database, .. } => Some(database.health()),
            Ledger::Sqlite { .. } => None,
        };
        let (reports, writer, upkeep) = match self.ledger {
            Ledger::Sqlite { store, progress } => {
                let (reports, writer) = writer::spawn(writer::Setup {
                    store,
                    table,
                    progress,
                    recent: Arc::clone(&recent),
                    metrics: Arc::clone(&self.metrics),
                    liveness: Arc::clone(&liveness),
                    history_max_age: self.config.history_max_age,
                    notice,
                })
                .map_err(|e| Error::Internal(format!("cannot start the writer: {e}")))?;
                (
                    reports,
                    writer,
                    Upkeep::Checkpoint(self.config.store_path.clone()),
                )
            }
            Ledger::Postgres {
                database,
                url,
                last_seq,
                ..
            } => {
                let wake_pending = Arc::new(AtomicBool::new(false));
                let health = database.health();
                let (reports, writer) = writer::spawn_shared(writer::SharedSetup {
                    database: *database,
                    table,
                    last_seq,
                    metrics: Arc::clone(&self.metrics),
                    liveness: Arc::clone(&liveness),
                    wake_pending: Arc::clone(&wake_pending),
                    notice,
                })
                .map_err(|e| Error::Internal(format!("cannot start the writer: {e}")))?;
                start_listener(url.clone(), health, reports.downgrade(), wake_pending)?;
                (reports, writer, Upkeep::Database(url, takeover))
            }
        };
        let (stop_export, stop_rx) = std::sync::mpsc::channel::<()>();
        let export_path = self.config.client_log_path.clone();
        let export_table = Arc::clone(&self.table);
        let generation = self.table.generation();
        let exporter = std::thread::Builder::new()
            .name("dynip-export".to_string())
            .spawn(move || {
                yield_to_reports();
                export::keep_current(&export_path, &export_table, &stop_rx, generation)
            })
            .map_err(|e| Error::Internal(format!("cannot start the exporter: {e}")))?;

        let (stop_checkpoints, checkpoint_rx) = std::sync::mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("dynip-checkpoint".to_string())
            .spawn(move || {
                yield_to_reports();
                match upkeep {
                    Upkeep::Checkpoint(store_path) => {
                        store::keep_checkpointed(&store_path, &checkpoint_rx)
                    }
                    Upkeep::Database(url, takeover) => {
                        store::postgresql::keep_up(&url, &takeover, &checkpoint_rx);
                        Ok(())
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the checkpointer: {e}")))?;

        let mut edges = JoinSet::new();
        let edge = udp::UdpContext {
            reports: reports.clone(),
            policy: self.policy.subscribe(),
            shutdown: shutdown.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        for socket in self.udp {
            edges.spawn(udp::serve(socket, edge.clone()));
        }
        drop(edge);
        if let Some(listener) = self.http {
            let edge = http::HttpContext {
                reports: reports.clone(),
                policy: self.policy.subscribe(),
                table: Arc::clone(&self.table),
                metrics: Arc::clone(&self.metrics),
                shutdown: shutdown.clone(),
                store_path: self.config.store_path.clone(),
                database_url: self.config.database_url.clone(),
                database,
                recent,
                trusted_proxies: self.config.trusted_proxies.clone(),
                public_status: self.config.public_status,
                public_metrics: self.config.public_metrics,
                stale_after: self.config.stale_after,
                history_max_age: self.config.history_max_age,
                dns_zone: self.config.dns.zone.clone(),
                acme_dns_register: self.config.acme_dns_register,
            };
            edges.spawn(http::serve(listener, edge));
        }
        if let Some(dns) = self.dns {
            edges.spawn(dns.serve(
                Arc::clone(&self.table),
                reports.clone(),
                self.policy.subscribe(),
                shutdown.clone(),
            ));
        }
        drop(reports);
        // Every listener was bound in `open` and is served from here on.
        systemd::ready(&self.table, &self.metrics);
        let keep_alive = tokio::spawn(systemd::keep_alive(
            liveness,
            Arc::clone(&self.table),
            Arc::clone(&self.metrics),
            shutdown.clone(),
        ));
        while let Some(res) = edges.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "receiver failed"),
                Err(e) => warn!(error = %e, "receiver task failed"),
            }
            // One edge down means the server is going down: stop the others too.
            shutdown.cancel();
        }
        info!("receivers stopped; committing what was received");
        let _ = keep_alive.await;
        let joined = tokio::task::spawn_blocking(move || {
            let writer_res = writer.join();
            drop(stop_export);
            drop(stop_checkpoints);
            (writer_res, exporter.join(), checkpointer.join())
        })
        .await
        .map_err(|e| Error::Internal(format!("shutdown task failed: {e}")))?;
        match joined {
            (Ok(()), Ok(export_res), Ok(checkpoint_res)) => {
                if let Err(e) = checkpoint_res {
                    warn!(error = %e, "the store's background thread could not open the store");
                }
                export_res?;
                info!("stopped");
                Ok(())
            }
            _ => Err(Error::Internal("a server thread panicked".to_string())),
        }
    }
}

/// How often the listener makes sure its connection is alive when no commit is heard.
const LISTEN_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the thread that listens for other servers' commits and wakes the writer for
/// them. It holds the writer's queue weakly, so the writer still stops when the edges do;
/// the thread then ends at its next look.
fn start_listener(
    url: crate::config::DatabaseUrl,
    health: Arc<crate::store::postgresql::DatabaseHealth>,
    jobs: tokio::sync::mpsc::WeakSender<writer::Job>,
    wake_pending: Arc<AtomicBool>,
) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("dynip-listen".to_string())
        .spawn(move || {
            let stop = AtomicBool::new(false);
            crate::store::postgresql::listen(&url, &health, &stop, LISTEN_POLL, || {
                match jobs.upgrade() {
                    Some(jobs) => {
                        if !wake_pending.swap(true, Ordering::AcqRel)
                            && jobs.blocking_send(writer::Job::Wake).is_err()
                        {
                            stop.store(true, Ordering::Release);
                        }
                    }
                    None => stop.store(true, Ordering::Release),
                }
            });
        })
        .map(drop)
        .map_err(|e| Error::Internal(format!("cannot start the listener: {e}")))
}

/// Background threads' CPU priority, as a nice value: below the receive loop and the
/// writer, which hold a report's latency. On 2 cores the export's second of JSON
/// serialising a large table competed with them for a core.
const BACKGROUND_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICENESS`] (on Linux a nice
/// value is per thread). Raising one's niceness needs no privilege; a failure only costs
/// latency, so it is logged and ignored.
fn yield_to_reports() {
    // SAFETY: setpriority only reads its arguments; `who = 0` is the calling thread.
    let res = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICENESS) };
    if res != 0 {
        debug!(error = %std::io::Error::last_os_error(), "cannot lower a background thread's priority");
    }
}
