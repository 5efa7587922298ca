//! The UDP edge: binds the report sockets and turns datagrams into reports for the writer.
//!
//! Owns the receive loop and nothing else: decoding is `wire`'s, names are `name`'s,
//! committing is the writer's. A datagram that does not decode is dropped with its reason
//! at DEBUG, so a flood cannot flood the log; nothing a peer sends can stop the loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::BindHost;
use crate::error::Error;
use crate::record::Time;
use crate::wire::{self, Report as WireReport};
use crate::writer::Report;

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

/// Receives datagrams until `shutdown`, sending each report to the writer.
///
/// # Errors
/// When the socket cannot be registered with the runtime.
pub async fn serve(
    socket: std::net::UdpSocket,
    reports: mpsc::Sender<Report>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let socket = UdpSocket::from_std(socket)?;
    let local = socket.local_addr()?;
    info!("listening udp={local}");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
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
            let Some(report) = accept(&buf[..len], peer) else {
                continue;
            };
            if reports.send(report).await.is_err() {
                debug!("writer gone; receiver stops");
                return Ok(());
            }
        }
    }
    debug!(%local, "receiver stops");
    Ok(())
}

fn accept(datagram: &[u8], peer: SocketAddr) -> Option<Report> {
    match wire::decode(datagram) {
        Ok(WireReport::Legacy { name }) => Some(Report {
            name,
            addr: peer.ip().to_canonical(),
            at: Time::now(),
            done: None,
        }),
        Err(e) => {
            debug!(%peer, error = %e, "dropping datagram");
            None
        }
    }
}
