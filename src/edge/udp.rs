//! The UDP edge: binds the report sockets and turns datagrams into reports for the writer.
//!
//! Owns the receive loop and the acknowledgements: whether a datagram is a report that may
//! go to the writer is `policy::admit_datagram`'s (over `wire`), committing is the
//! writer's; here are the sockets, the counting and logging of what was decided, and the
//! writer's `Report` with its `Done` callback, which seals the acknowledgement. A datagram
//! that is refused is dropped with its reason at DEBUG, so a flood cannot flood the log,
//! and gets no answer; nothing a peer sends can stop the loop. An acknowledgement goes out
//! only after the writer committed its report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::BindHost;
use crate::edge::net::{self, RecvBatch, RecvHeaders, SendHeaders, UdpOptions, Wait};
use crate::model::key::Key;
use crate::model::record::Time;
use crate::policy::{self, Admitted, Limiter, Policy};
use crate::proto::wire::{self, Ack, Signed};
use crate::state::handoff::Handoff;
use crate::state::metrics::{Metrics, Reason, Via};
use crate::writer::{Committed, Done, Job, Refused, Report};

/// Receive buffer size asked of the kernel: about 20 ms of datagrams at 100,000 reports/s
/// with Linux's per-datagram overhead, to ride out a commit. The kernel caps it at
/// `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;
/// How a report socket is set up: non-blocking, for the runtime.
const SOCKET: UdpOptions = UdpOptions {
    reuse_port: false,
    recv_buffer: RECV_BUFFER,
    read_timeout: None,
    nonblocking: true,
};
/// Datagrams per `recvmmsg` call: one system call for up to this many reports, where
/// `recv_from` costs one each (about 2 µs here, as much as the rest of a report's path).
const RECV_BATCH: usize = 64;
/// `recvmmsg` calls per wake-up before checking for shutdown again.
const MAX_BATCHES_PER_TURN: usize = 16;
/// Acknowledgements sent between two `recvmmsg` calls: twice what one call receives, so a
/// backlog (the burst after a slow commit) drains quickly, but never stops receiving for
/// long: sending thousands at once held up the next reports by milliseconds.
const ACKS_PER_BATCH: usize = 2 * RECV_BATCH;
/// Bytes per receive slot: more than any report (316 bytes at most). A longer datagram
/// arrives cut, flagged `MSG_TRUNC`, and is refused as too long: a datagram is never
/// truncated into something that decodes.
const SLOT_LEN: usize = 2048;

/// Why the report sockets cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {name}:{port}: {source}")]
    Resolve {
        name: String,
        port: u16,
        source: std::io::Error,
    },
}

/// Binds the report sockets for `server_ip`: `*` (or empty) is every address of both
/// families, through one dual-stack socket where the OS has IPv6; a name binds every
/// address it resolves to.
///
/// # Errors
/// When an address cannot be resolved or bound.
pub fn bind(host: &BindHost, port: u16) -> Result<Vec<std::net::UdpSocket>, UdpError> {
    match host {
        BindHost::All => {
            let any_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match net::udp_socket(any_v6, &SOCKET) {
                Ok(socket) => Ok(vec![socket]),
                Err(e) => {
                    debug!(error = %e, "no dual-stack IPv6 socket; binding IPv4 only");
                    let any_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                    Ok(vec![bind_one(any_v4)?])
                }
            }
        }
        BindHost::Addr(addr) => Ok(vec![bind_one(SocketAddr::new(*addr, port))?]),
        BindHost::Name(name) => resolve(name, port)?.into_iter().map(bind_one).collect(),
    }
}

/// The addresses a `server_ip` name resolves to, with `port`, each once.
///
/// # Errors
/// When the name does not resolve.
pub fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, UdpError> {
    let mut addrs: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|source| UdpError::Resolve {
            name: name.to_owned(),
            port,
            source,
        })?
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

fn bind_one(addr: SocketAddr) -> Result<std::net::UdpSocket, UdpError> {
    net::udp_socket(addr, &SOCKET).map_err(|source| UdpError::Bind { addr, source })
}

/// What a receive loop shares with the rest of the server.
#[derive(Clone)]
pub struct UdpContext {
    pub reports: mpsc::Sender<Job>,
    /// The keys and rules in force; replaced whole on SIGHUP.
    pub policy: watch::Receiver<Arc<Policy>>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// An acknowledgement, sealed, waiting to be sent to `peer`.
struct PendingAck {
    peer: SocketAddr,
    datagram: Vec<u8>,
}

/// Acknowledgements sealed on the writer thread, waiting for their receive loop to send
/// them: one wake-up of the loop per commit.
type AckQueue = Handoff<PendingAck>;

/// What an acknowledgement's `Done` callback holds: the queue, and a token whose drop
/// tells the loop, at shutdown, that no more acknowledgements can come.
#[derive(Clone)]
struct AckSender {
    queue: Arc<AckQueue>,
    _alive: mpsc::UnboundedSender<std::convert::Infallible>,
}

/// Receives datagrams until `shutdown`, sending each report to the writer and each
/// acknowledgement back once the writer has committed its report. After `shutdown` it
/// stops receiving but keeps sending acknowledgements until the writer has decided on
/// every report it was given.
///
/// # Errors
/// When the socket cannot be registered with the runtime.
pub async fn serve(socket: std::net::UdpSocket, context: UdpContext) -> std::io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    info!("listening udp={local}");
    let queue = Arc::new(AckQueue::default());
    let (alive, mut all_gone) = mpsc::unbounded_channel::<std::convert::Infallible>();
    let mut receiver = Receiver {
        context: context.clone(),
        acks: AckSender {
            queue: Arc::clone(&queue),
            _alive: alive,
        },
        nonces: Arc::new(Nonces::new()),
        limiter: policy::datagram_limiter(),
    };
    let mut batch = RecvBatch::new(RECV_BATCH, SLOT_LEN);
    let mut acks = AckBatch::default();
    'serve: loop {
        tokio::select! {
            biased;
            () = context.shutdown.cancelled() => break,
            () = queue.ready() => {}
            () = std::future::ready(()), if acks.has_pending() => {}
            res = socket.readable() => res?,
        }
        acks.send_queued(&queue, &socket, ACKS_PER_BATCH);
        for _ in 0..MAX_BATCHES_PER_TURN {
            let n_received =
                match socket.try_io(Interest::READABLE, || receive(&mut batch, &socket)) {
                    Ok(n_received) => n_received,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        debug!(error = %e, "receive failed");
                        break;
                    }
                };
            for idx in 0..n_received {
                let report = receiver.receive(batch.datagram(idx));
                let Some(report) = report else {
                    continue;
                };
                if context.reports.send(report.into()).await.is_err() {
                    debug!("writer gone; receiver stops");
                    break 'serve;
                }
            }
            // Acknowledgements committed meanwhile go out between batches, not after a
            // whole turn of receiving.
            acks.send_queued(&queue, &socket, ACKS_PER_BATCH);
            if n_received < RECV_BATCH {
                break;
            }
        }
    }
    debug!(%local, "receiver stops; sending the last acknowledgements");
    // Dropping every sender of reports lets the writer finish; it then drops the last
    // callbacks holding an `AckSender`, which closes `all_gone`.
    drop(receiver);
    drop(context);
    loop {
        tokio::select! {
            () = queue.ready() => acks.send_queued(&queue, &socket, usize::MAX),
            None = all_gone.recv() => break,
        }
    }
    acks.send_queued(&queue, &socket, usize::MAX);
    Ok(())
}

/// Nonces for acknowledgements without a system call each: 16 random bytes from the OS per
/// receive loop, then a counter. Unique for as long as the prefix is (2^-128 a start).
struct Nonces {
    prefix: [u8; 16],
    counter: AtomicU64,
}

impl Nonces {
    fn new() -> Nonces {
        let mut prefix = [0u8; 16];
        OsRng.fill_bytes(&mut prefix);
        Nonces {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> [u8; wire::NONCE_LEN] {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; wire::NONCE_LEN];
        nonce[..16].copy_from_slice(&self.prefix);
        nonce[16..].copy_from_slice(&counter.to_be_bytes());
        nonce
    }
}

/// Acknowledgements waiting to be sealed and sent together.
#[derive(Default)]
struct AckBatch {
    pending: Vec<PendingAck>,
}

/// Acknowledgements per `sendmmsg` call, as many as datagrams per `recvmmsg`.
const SEND_BATCH: usize = RECV_BATCH;

impl AckBatch {
    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes what `queue` holds and sends up to `limit` of the pending acknowledgements,
    /// oldest first, [`SEND_BATCH`] per system call; the rest wait for the next call.
    /// What the socket buffer cannot take is dropped: the client retries, and its retry is
    /// acknowledged.
    fn send_queued(&mut self, queue: &AckQueue, socket: &UdpSocket, limit: usize) {
        queue.take(&mut self.pending);
        let n_taken = self.pending.len().min(limit);
        let mut offset = 0;
        while offset < n_taken {
            let chunk = &self.pending[offset..n_taken.min(offset + SEND_BATCH)];
            match send_batch(socket, chunk) {
                Ok(n_sent) => offset += n_sent.max(1),
                Err(e) => {
                    debug!(error = %e, n_dropped = chunk.len(), "acknowledgements not sent");
                    offset += chunk.len();
                }
            }
        }
        self.pending.drain(..n_taken);
    }
}

/// One `sendmmsg` call; returns how many datagrams went out.
fn send_batch(socket: &UdpSocket, pending: &[PendingAck]) -> std::io::Result<usize> {
    // Made per call: the headers cannot live in a task (see [`RecvHeaders`]).
    let mut headers = SendHeaders::new(pending.len());
    let datagrams = pending
        .iter()
        .map(|pending| (&pending.datagram[..], pending.peer));
    net::send_batch(socket.as_raw_fd(), &mut headers, datagrams, Wait::No)
        .map_err(std::io::Error::from)
}

/// Receives up to [`RECV_BATCH`] datagrams into `batch` without blocking; returns how
/// many.
fn receive(batch: &mut RecvBatch, socket: &UdpSocket) -> std::io::Result<usize> {
    // Made per call: the headers cannot live in a task (see [`RecvHeaders`]); two small
    // allocations per batch.
    let mut headers = RecvHeaders::new(RECV_BATCH);
    batch
        .receive(socket.as_raw_fd(), &mut headers, Wait::No)
        .map_err(std::io::Error::from)
}

/// Turns datagrams into reports, under the policy in force.
struct Receiver {
    context: UdpContext,
    acks: AckSender,
    nonces: Arc<Nonces>,
    /// The buckets of sources sending what does not authenticate; `policy` decides.
    limiter: Limiter,
}

impl Receiver {
    /// The report `datagram` makes, or `None` when it is dropped (counted, and logged
    /// with its reason at DEBUG).
    fn receive(&mut self, datagram: net::Datagram<'_>) -> Option<Report> {
        // A datagram without a source address (not possible on a UDP socket) reads as
        // cut, from the unspecified address, and is refused.
        let (peer, cut) = match datagram.peer {
            Some(peer) => (peer, datagram.truncated),
            None => (SocketAddr::from(([0u8; 4], 0)), true),
        };
        let addr = peer.ip().to_canonical();
        let now = Time::now();
        let admitted = if cut {
            Err(policy::drop_cut_datagram(
                &mut self.limiter,
                addr,
                datagram.len,
                now,
            ))
        } else {
            let policy = Arc::clone(&self.context.policy.borrow());
            policy::admit_datagram(&policy, &mut self.limiter, datagram.bytes, addr, now)
        };
        match admitted {
            Ok(Admitted::Legacy { name }) => {
                self.context.metrics.accepted(Via::Udp);
                Some(Report {
                    name,
                    addr,
                    at: now,
                    signed_at: None,
                    offline: false,
                    done: None,
                })
            }
            Ok(Admitted::Signed { signed, key }) => Some(self.signed(signed, key, peer, now)),
            Err(dropped) => {
                self.context
                    .metrics
                    .refused(Via::Udp, Reason::from(&dropped));
                debug!(%peer, reason = %dropped, "dropping datagram");
                None
            }
        }
    }

    /// The report of an admitted signed datagram, with the callback that counts the
    /// writer's outcome and, once committed, seals the acknowledgement to `peer`.
    fn signed(&self, signed: Signed, key: Arc<Key>, peer: SocketAddr, now: Time) -> Report {
        // The replay rule is the writer's to decide, in arrival order.
        let acks = self.acks.clone();
        let nonces = Arc::clone(&self.nonces);
        let report_nonce = signed.nonce;
        let metrics = Arc::clone(&self.context.metrics);
        // Sealed on the writer thread, which has time between commits; the receive loop
        // only sends.
        let done: Done = Box::new(move |outcome: Result<Committed, Refused>| {
            match outcome {
                Ok(_) => metrics.accepted(Via::Udp),
                Err(Refused::Replayed) => metrics.refused(Via::Udp, Reason::Replayed),
                Err(Refused::CommitFailed) => metrics.refused(Via::Udp, Reason::CommitFailed),
            }
            if let Ok(committed) = outcome {
                let ack = Ack {
                    report_nonce,
                    seen: peer,
                    server_time: committed.at,
                };
                let datagram = wire::seal_ack(&key, &nonces.next(), &ack);
                acks.queue.push(PendingAck { peer, datagram });
            }
        });
        Report {
            name: signed.name,
            addr: peer.ip().to_canonical(),
            at: now,
            signed_at: Some(signed.time),
            offline: false,
            done: Some(done),
        }
    }
}
