//! The UDP edge: binds the report sockets and turns datagrams into reports for the writer.
//!
//! Owns the receive loop and the acknowledgements: decoding is `wire`'s, who may report is
//! `auth`'s, committing is the writer's. A datagram that is refused is dropped with its
//! reason at DEBUG, so a flood cannot flood the log, and gets no answer; nothing a peer
//! sends can stop the loop. An acknowledgement goes out only after the writer committed
//! its report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{self, Limiter, Policy};
use crate::config::BindHost;
use crate::error::Error;
use crate::key::Key;
use crate::record::Time;
use crate::table::Table;
use crate::wire::{self, Ack, Incoming, Kind};
use crate::writer::{Committed, Done, Refused, Report};

/// Receive buffer size asked of the kernel: about 20 ms of datagrams at 100,000 reports/s
/// with Linux's per-datagram overhead, to ride out a commit. The kernel caps it at
/// `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;
/// Datagrams handled per wake-up before checking for shutdown again.
const MAX_PER_TURN: usize = 1024;
/// The largest UDP payload: a datagram is never truncated into something that decodes.
const MAX_DATAGRAM: usize = 65_536;

/// Binds the report sockets for `server_ip`: `*` (or empty) is every address of both
/// families, through one dual-stack socket where the OS has IPv6; a name binds every
/// address it resolves to.
///
/// # Errors
/// When an address cannot be resolved or bound.
pub fn bind(host: &BindHost, port: u16) -> Result<Vec<std::net::UdpSocket>, Error> {
    match host {
        BindHost::All => {
            let any_v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match bind_one(any_v6) {
                Ok(socket) => Ok(vec![socket]),
                Err(e) => {
                    debug!(error = %e, "no dual-stack IPv6 socket; binding IPv4 only");
                    let any_v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                    Ok(vec![bind_one(any_v4).map_err(|e| bind_error(any_v4, e))?])
                }
            }
        }
        BindHost::Addr(addr) => {
            let addr = SocketAddr::new(*addr, port);
            Ok(vec![bind_one(addr).map_err(|e| bind_error(addr, e))?])
        }
        BindHost::Name(name) => {
            let mut addrs: Vec<SocketAddr> = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|source| Error::Bind {
                    addr: format!("{name}:{port}"),
                    source,
                })?
                .collect();
            addrs.sort();
            addrs.dedup();
            addrs
                .into_iter()
                .map(|addr| bind_one(addr).map_err(|e| bind_error(addr, e)))
                .collect()
        }
    }
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> Error {
    Error::Bind {
        addr: addr.to_string(),
        source,
    }
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        warn!(error = %e, "cannot enlarge the receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// What a receive loop shares with the rest of the server.
#[derive(Clone)]
pub struct Edge {
    pub reports: mpsc::Sender<Report>,
    /// The keys and rules in force; replaced whole on SIGHUP.
    pub policy: watch::Receiver<Arc<Policy>>,
    /// For the replay rule's early check (the writer decides).
    pub table: Arc<Table>,
    pub shutdown: CancellationToken,
}

/// An acknowledgement to seal and send once its report is committed.
struct PendingAck {
    peer: SocketAddr,
    key: Arc<Key>,
    ack: Ack,
}

/// Receives datagrams until `shutdown`, sending each report to the writer and each
/// acknowledgement back once the writer has committed its report. After `shutdown` it
/// stops receiving but keeps sending acknowledgements until the writer has decided on
/// every report it was given.
///
/// # Errors
/// When the socket cannot be registered with the runtime.
pub async fn serve(socket: std::net::UdpSocket, edge: Edge) -> std::io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    info!("listening udp={local}");
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<PendingAck>();
    let mut receiver = Receiver {
        edge: edge.clone(),
        ack_tx,
        limiter: Limiter::default(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    'serve: loop {
        tokio::select! {
            biased;
            () = edge.shutdown.cancelled() => break,
            Some(pending) = ack_rx.recv() => {
                send_ack(&socket, pending);
                while let Ok(pending) = ack_rx.try_recv() {
                    send_ack(&socket, pending);
                }
            }
            res = socket.readable() => res?,
        }
        for _ in 0..MAX_PER_TURN {
            let (len, peer) = match socket.try_recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(error = %e, "receive failed");
                    continue;
                }
            };
            let Some(report) = receiver.accept(&buf[..len], peer) else {
                continue;
            };
            if edge.reports.send(report).await.is_err() {
                debug!("writer gone; receiver stops");
                break 'serve;
            }
        }
    }
    debug!(%local, "receiver stops; sending the last acknowledgements");
    // Dropping every sender of reports lets the writer finish; it then drops the last
    // senders of acknowledgements, which ends this loop.
    drop(receiver);
    drop(edge);
    while let Some(pending) = ack_rx.recv().await {
        send_ack(&socket, pending);
    }
    Ok(())
}

/// Seals and sends one acknowledgement. A full socket buffer drops it: the client
/// retries, and its retry is acknowledged.
fn send_ack(socket: &UdpSocket, pending: PendingAck) {
    let datagram = wire::seal_ack(&pending.key, &random_nonce(), &pending.ack);
    if let Err(e) = socket.try_send_to(&datagram, pending.peer) {
        debug!(peer = %pending.peer, error = %e, "acknowledgement not sent");
    }
}

/// A fresh nonce from the OS's generator.
pub fn random_nonce() -> [u8; wire::NONCE_LEN] {
    let mut nonce = [0u8; wire::NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Turns datagrams into reports, under the policy in force.
struct Receiver {
    edge: Edge,
    ack_tx: mpsc::UnboundedSender<PendingAck>,
    limiter: Limiter,
}

impl Receiver {
    fn accept(&mut self, datagram: &[u8], peer: SocketAddr) -> Option<Report> {
        let addr = peer.ip().to_canonical();
        let now = Instant::now();
        let policy = Arc::clone(&self.edge.policy.borrow());
        let res = policy
            .admit(addr)
            .and_then(|()| self.limiter.check(addr, now))
            .map_err(|refusal| refusal.to_string())
            .and_then(|()| self.decode(&policy, datagram, peer));
        match res {
            Ok(report) => report,
            Err(reason) => {
                debug!(%peer, %reason, "dropping datagram");
                None
            }
        }
    }

    /// Decodes and authenticates; charges the source for what does not authenticate.
    fn decode(
        &mut self,
        policy: &Policy,
        datagram: &[u8],
        peer: SocketAddr,
    ) -> Result<Option<Report>, String> {
        let addr = peer.ip().to_canonical();
        let at = Time::now();
        let unauthenticated = |limiter: &mut Limiter, reason: String| {
            limiter.charge(addr, Instant::now());
            Err(reason)
        };
        let (key, scope, signed) = match wire::peek(datagram) {
            Err(e) => return unauthenticated(&mut self.limiter, e.to_string()),
            Ok(Incoming::Legacy(name)) => {
                if let Err(refusal) = policy.admit_unsigned() {
                    return unauthenticated(&mut self.limiter, refusal.to_string());
                }
                let report = Report {
                    name,
                    addr,
                    at,
                    signed_at: None,
                    done: None,
                };
                return Ok(Some(report));
            }
            Ok(Incoming::Sealed {
                kind: Kind::Ack, ..
            }) => {
                return unauthenticated(
                    &mut self.limiter,
                    "an acknowledgement, not a report".to_string(),
                )
            }
            Ok(Incoming::Sealed {
                kind: Kind::Report,
                key_id,
            }) => {
                let (key, scope) = match policy.key(key_id) {
                    Ok(found) => found,
                    Err(refusal) => return unauthenticated(&mut self.limiter, refusal.to_string()),
                };
                match wire::open_report(key, datagram) {
                    Ok(signed) => (Arc::clone(key), scope, signed),
                    Err(e) => return unauthenticated(&mut self.limiter, e.to_string()),
                }
            }
        };
        auth::check_signed(scope, &signed.name, signed.time, at)
            .map_err(|refusal| refusal.to_string())?;
        let stale = self
            .edge
            .table
            .get(&signed.name)
            .is_some_and(|entry| !entry.record.is_fresh(signed.time));
        if stale {
            return Err("replayed: not later than the host's last signed report".to_string());
        }
        let ack_tx = self.ack_tx.clone();
        let report_nonce = signed.nonce;
        let done: Done = Box::new(move |outcome: Result<Committed, Refused>| {
            if let Ok(committed) = outcome {
                let ack = Ack {
                    report_nonce,
                    seen: peer,
                    server_time: committed.at,
                };
                // The receiver may have stopped; the client then retries elsewhere.
                let _ = ack_tx.send(PendingAck { peer, key, ack });
            }
        });
        Ok(Some(Report {
            name: signed.name,
            addr,
            at,
            signed_at: Some(signed.time),
            done: Some(done),
        }))
    }
}
