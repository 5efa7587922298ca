//! The DNS face's sockets: `dns_listen` over UDP and TCP, zone transfers, NOTIFY, the
//! UDP rate limit, and the counters.
//!
//! Owns the I/O around [`zone`](crate::proto::zone), which decides every answer: UDP is
//! served by `dns_threads` OS threads, each with its own `SO_REUSEPORT` socket, reading and
//! answering up to `udp::BATCH` queries per `recvmmsg`/`sendmmsg` and reading the table
//! under its read lock (the writer holds the write lock only to swap records in); TCP and
//! NOTIFY are tasks on the async runtime. Must not write the table or the store: an
//! UPDATE goes to the writer, and is answered from its thread once committed.
//!
//! Here: binding and [`Dns::serve`], which starts the rest. `udp`: the answering threads
//! and the response rate limit; `tcp`: connections and zone transfers; `update`: TSIG
//! and UPDATE, sent to the writer; `notify`: NOTIFY;
//! `counters`: [`Counters`]; `interior`: the empty non-terminals and the task that keeps
//! them and the stale addresses current.

mod counters;
mod interior;
mod notify;
mod tcp;
mod udp;
mod update;

pub use counters::Counters;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::DnsConfig;
use crate::edge::net::{self, UdpOptions};
use crate::model::record::Time;
use crate::policy::Policy;
use crate::proto::zone::{Zone, ZoneError};
use crate::state::table::Table;
use crate::writer::Job;
use interior::{keep_interior_and_note_stale, Interior};
use notify::notify;
use tcp::{accept, TcpShared};
use udp::{response_limiter, UdpServer, UpdateAnswers};
use update::Gate;

/// How the UDP threads' sockets are set up.
const UDP: UdpOptions = UdpOptions {
    reuse_port: true,
    // Room for bursts while a thread is busy: 4 MiB is about 40,000 queries.
    recv_buffer: 4 << 20,
    // How often a UDP thread looks up from a quiet socket to see whether to stop.
    read_timeout: Some(Duration::from_millis(200)),
    nonblocking: false,
};
/// TCP connections waiting to be accepted.
const TCP_BACKLOG: i32 = 128;
/// NOTIFYs go out at most this often, however often the zone changes.
const NOTIFY_EVERY: Duration = Duration::from_secs(1);

/// Why the DNS face cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dns settings: {0}")]
    Zone(#[from] ZoneError),
}

/// The DNS face, bound and ready to [`serve`](Dns::serve).
pub struct Dns {
    zone: Arc<Zone>,
    udp: Vec<UdpSocket>,
    tcp: std::net::TcpListener,
    transfer_to: Vec<IpNet>,
    notify: Vec<SocketAddr>,
    rate_limit: u32,
    counters: Arc<Counters>,
}

impl Dns {
    /// Builds the zone and binds `dns_listen` (UDP and TCP on the same port; port 0 picks
    /// one free for both).
    ///
    /// # Errors
    /// A zone the settings cannot make, or an address that cannot be bound.
    pub fn bind(
        config: &DnsConfig,
        listen: SocketAddr,
        stale_after: Duration,
    ) -> Result<Dns, DnsError> {
        let zone = Zone::new(config, stale_after)?;
        let (udp, tcp) =
            bind_all(listen, config.threads.max(1)).map_err(|source| DnsError::Bind {
                addr: listen,
                source,
            })?;
        Ok(Dns {
            zone: Arc::new(zone),
            udp,
            tcp,
            transfer_to: config.transfer_to.clone().unwrap_or_default(),
            notify: config.notify.clone(),
            rate_limit: config.rate_limit,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The address UDP and TCP are bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The counters, for `/metrics`.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Answers queries until `shutdown`, from `table`.
    ///
    /// # Errors
    /// When a thread cannot be started or the TCP socket cannot join the runtime.
    pub async fn serve(
        self,
        table: Arc<Table>,
        writer: mpsc::Sender<Job>,
        policy: watch::Receiver<Arc<Policy>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = self.local_addr()?;
        let gate = Arc::new(Gate {
            zone: Arc::clone(&self.zone),
            policy,
            writer,
            counters: Arc::clone(&self.counters),
        });
        let interior = Arc::new(Interior::default());
        interior.rebuild(&table);
        let limiter = Arc::new(Mutex::new(response_limiter(self.rate_limit)));
        info!("listening dns={local}");
        let mut threads = Vec::new();
        for (idx, socket) in self.udp.into_iter().enumerate() {
            let udp = UdpServer::new(
                Arc::clone(&self.zone),
                Arc::clone(&table),
                Arc::clone(&self.counters),
                Arc::clone(&limiter),
                shutdown.clone(),
                Arc::clone(&interior),
                Arc::clone(&gate),
            );
            let socket = Arc::new(socket);
            let outbox = Arc::new(UpdateAnswers::default());
            let (sender_socket, sender_outbox, stop) =
                (Arc::clone(&socket), Arc::clone(&outbox), shutdown.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dynip-dns-{idx}-out"))
                    .spawn(move || sender_outbox.send_until(&sender_socket, &stop))?,
            );
            let thread = std::thread::Builder::new()
                .name(format!("dynip-dns-{idx}"))
                .spawn(move || udp.run(&socket, &outbox))?;
            threads.push(thread);
        }
        let mut tasks = JoinSet::new();
        let shared = Arc::new(TcpShared {
            zone: Arc::clone(&self.zone),
            table: Arc::clone(&table),
            counters: Arc::clone(&self.counters),
            transfer_to: self.transfer_to,
            interior: Arc::clone(&interior),
            gate,
        });
        tasks.spawn(keep_interior_and_note_stale(
            interior,
            Arc::clone(&table),
            shutdown.clone(),
        ));
        let listener = TcpListener::from_std(self.tcp)?;
        tasks.spawn(accept(listener, shared, shutdown.clone()));
        if !self.notify.is_empty() {
            tasks.spawn(notify(
                Arc::clone(&self.zone),
                table,
                self.notify,
                Arc::clone(&self.counters),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        while tasks.join_next().await.is_some() {}
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().all(|thread| thread.join().is_ok())
        })
        .await;
        if !matches!(joined, Ok(true)) {
            warn!("a DNS thread panicked");
        }
        Ok(())
    }
}

/// The zone's serial now ([`Table::dns_serial`]).
fn serial(table: &Table) -> u32 {
    table.dns_serial(Time::now())
}

fn bind_all(
    listen: SocketAddr,
    n_threads: usize,
) -> std::io::Result<(Vec<UdpSocket>, std::net::TcpListener)> {
    // With port 0 the first UDP socket picks the port, and TCP may find it taken: try
    // again with another.
    let mut last_error = None;
    for _ in 0..16 {
        let first = net::udp_socket(listen, &UDP)?;
        let addr = first.local_addr()?;
        let tcp = match net::tcp_listener(addr, TCP_BACKLOG) {
            Ok(tcp) => tcp,
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut udp = vec![first];
        for _ in 1..n_threads {
            udp.push(net::udp_socket(addr, &UDP)?);
        }
        return Ok((udp, tcp));
    }
    Err(last_error.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// Every host's name and record, read from the table a chunk at a time so that the
/// writer never waits long for its lock.
fn all_hosts(table: &Table) -> Vec<(crate::model::name::Name, crate::model::record::Record)> {
    const CHUNK: usize = 4096;
    let mut hosts = Vec::with_capacity(table.len());
    for chunk in table.chunks(CHUNK) {
        hosts.extend(chunk.into_iter().map(|(name, entry)| (name, entry.record)));
    }
    hosts
}
