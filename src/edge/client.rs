//! The client's network edge: sends a report and, for a signed one, waits for the
//! acknowledgement.
//!
//! Owns resolving the servers, the sockets, the retries and their backoff, and failing
//! over. A signed report goes over IPv4 and then over IPv6 (when the servers have
//! addresses of both), so a server learns both of the host's addresses; in each family
//! to the first server address that acknowledges it, in the order `server_hostname`
//! lists them (a name with several addresses counts as several). Every retry is sealed
//! afresh, with a later time: an identical datagram sent again would be a replay, and
//! refused. The original's unsigned datagram, which nothing acknowledges, goes to the
//! first address of every listed server.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::config::ClientConfig;
use crate::model::key::{random_nonce, Key};
use crate::model::name::Name;
use crate::model::record::Time;
use crate::policy::MAX_CLOCK_SKEW;
use crate::proto::wire;

/// Why a report could not be sent or was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("config {path}: server_hostname is empty in [DynIP:Client]")]
    EmptyServerHostname { path: PathBuf },
    #[error("cannot resolve server {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot send report to {addr}: {source}")]
    Send {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "no acknowledgement from {server} after {attempts} tries over {:.1} s{}: \
         the key may not be the server's (or not this host's), this machine's clock may be \
         more than 5 minutes off, or a firewall may drop UDP to or from port {}",
        waited.as_secs_f64(),
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default(),
        server.port()
    )]
    NoAck {
        server: SocketAddr,
        attempts: u32,
        waited: std::time::Duration,
        last_error: Option<String>,
    },
}

/// Tries per address, and the wait for the first acknowledgement; each later wait doubles
/// (0.25 + 0.5 + 1 + 2 + 4 s): a lost datagram costs a quarter second, and a server that
/// is down is given up on after about 8 s, well inside a cron minute.
const ATTEMPTS: u32 = 5;
/// Tries per address when another address may be tried next (0.25 + 0.5 + 1 s): a server
/// that is down costs under 2 s before the next is asked.
const FAILOVER_ATTEMPTS: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// Skew from the server's clock worth a warning: a fifth of what the server allows.
const WARN_SKEW: Duration = Duration::from_secs(60);

/// A signed report that was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Where the report went.
    pub server: SocketAddr,
    /// The address and port the server saw: this host's public address.
    pub seen: SocketAddr,
}

/// The servers `server_hostname` lists, resolved: for each, in the listed order, every
/// address, IPv4 first (the original resolved IPv4 only).
///
/// # Errors
/// An empty `server_hostname`, or one of which no server resolves (a server that does
/// not, among others that do, is warned about and left out).
pub fn resolve(
    config: &ClientConfig,
    config_path: &std::path::Path,
) -> Result<Vec<Vec<SocketAddr>>, ClientError> {
    let servers = config.servers();
    if servers.is_empty() {
        return Err(ClientError::EmptyServerHostname {
            path: config_path.to_path_buf(),
        });
    }
    let mut resolved = Vec::new();
    let mut last_error = None;
    for (host, port) in servers {
        let addrs = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|addrs| {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort_by_key(|addr| addr.is_ipv6());
                addrs.dedup();
                if addrs.is_empty() {
                    Err("no address".to_string())
                } else {
                    Ok(addrs)
                }
            });
        match addrs {
            Ok(addrs) => resolved.push(addrs),
            Err(reason) => {
                warn!(server = %host, %reason, "cannot resolve a server; trying the others");
                last_error = Some(ClientError::Resolve { host, reason });
            }
        }
    }
    match (resolved.is_empty(), last_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(resolved),
    }
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    if server.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    }
}

/// Sends the original's datagram to the first address of each server. Nothing comes back.
///
/// # Errors
/// When the datagram could be sent to none of them.
pub fn send_unsigned(servers: &[Vec<SocketAddr>], name: &Name) -> Result<(), ClientError> {
    let datagram = wire::encode_legacy(name);
    let mut first_error = None;
    let mut sent = false;
    for server in servers.iter().filter_map(|addrs| addrs.first().copied()) {
        match std::net::UdpSocket::bind(unspecified(server))
            .and_then(|socket| socket.send_to(&datagram, server))
        {
            Ok(_) => {
                sent = true;
                info!(%server, host = %name, "unsigned report sent");
            }
            Err(source) => {
                warn!(%server, error = %source, "cannot send the report to this server");
                first_error.get_or_insert(ClientError::Send {
                    addr: server,
                    source,
                });
            }
        }
    }
    match (sent, first_error) {
        (false, Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Sends a signed report over IPv4 and over IPv6, each to the servers' addresses of that
/// family in order until one acknowledges it.
///
/// # Errors
/// [`ClientError::NoAck`] when no address acknowledged; a send error when nothing could be
/// sent at all.
pub async fn send_signed(
    servers: &[Vec<SocketAddr>],
    name: &Name,
    key: &Key,
) -> Result<Vec<Acked>, ClientError> {
    let all: Vec<SocketAddr> = servers.iter().flatten().copied().collect();
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    // One family after the other: reports of one host must arrive with rising client
    // times, and two sent at once may arrive in either order (the later-sealed first would
    // make the other a replay). Each normally takes one round trip.
    for family_is_v6 in [false, true] {
        let candidates: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|addr| addr.is_ipv6() == family_is_v6)
            .collect();
        let attempts = if candidates.len() > 1 {
            FAILOVER_ATTEMPTS
        } else {
            ATTEMPTS
        };
        let mut unanswered = Vec::new();
        for server in candidates {
            match report_to(server, name, key, attempts).await {
                Ok(ack) => {
                    if !unanswered.is_empty() {
                        warn!(%server, unanswered = ?unanswered, "acknowledged by this server after no answer from the others");
                    }
                    info!(%server, seen = %ack.seen, "report acknowledged");
                    acked.push(ack);
                    break;
                }
                Err(e) => {
                    debug!(%server, error = %e, "no acknowledgement; trying the next server");
                    unanswered.push(server);
                    failures.push(e);
                }
            }
        }
    }
    if acked.is_empty() {
        // `servers` holds an address at least, so one was tried and failed.
        return Err(failures.remove(0));
    }
    for e in failures {
        info!(error = %e, "no acknowledgement from this server");
    }
    Ok(acked)
}

async fn report_to(
    server: SocketAddr,
    name: &Name,
    key: &Key,
    attempts: u32,
) -> Result<Acked, ClientError> {
    let socket = UdpSocket::bind(unspecified(server))
        .await
        .map_err(|source| ClientError::Send {
            addr: server,
            source,
        })?;
    socket
        .connect(server)
        .await
        .map_err(|source| ClientError::Send {
            addr: server,
            source,
        })?;
    let mut sent_nonces = Vec::new();
    let mut last_time = Time::from_micros(i64::MIN);
    let mut last_error: Option<std::io::Error> = None;
    let mut buf = [0u8; 2048];
    let mut wait = FIRST_WAIT;
    let started = std::time::Instant::now();
    for attempt in 1..=attempts {
        // Later than any time sent before, even if the clock stepped back.
        let now = Time::now();
        let time = if now > last_time {
            now
        } else {
            Time::from_micros(last_time.as_micros() + 1)
        };
        last_time = time;
        let nonce = random_nonce();
        sent_nonces.push(nonce);
        let datagram = wire::seal_report(key, &nonce, name, time);
        if let Err(e) = socket.send(&datagram).await {
            debug!(%server, attempt, error = %e, "send failed");
            if sent_nonces.len() == 1 && attempt == attempts {
                return Err(ClientError::Send {
                    addr: server,
                    source: e,
                });
            }
            last_error = Some(e);
        } else {
            debug!(%server, attempt, "signed report sent");
        }
        let deadline = Instant::now() + wait;
        loop {
            let received = match timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_elapsed) => break,
                Ok(received) => received,
            };
            let len = match received {
                Ok(len) => len,
                Err(e) => {
                    // An ICMP "port unreachable" shows up here on a connected socket.
                    debug!(%server, error = %e, "receive failed");
                    last_error = Some(e);
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
            };
            match wire::open_ack(key, &buf[..len]) {
                Ok(ack) if sent_nonces.contains(&ack.report_nonce) => {
                    warn_on_skew(server, time, ack.server_time);
                    return Ok(Acked {
                        server,
                        seen: ack.seen,
                    });
                }
                Ok(_) => debug!(%server, "acknowledgement of another report; ignored"),
                Err(e) => debug!(%server, error = %e, "not an acknowledgement; ignored"),
            }
        }
        wait *= 2;
    }
    Err(ClientError::NoAck {
        server,
        attempts,
        waited: started.elapsed(),
        last_error: last_error.map(|e| e.to_string()),
    })
}

fn warn_on_skew(server: SocketAddr, client_time: Time, server_time: Time) {
    let skew_micros = client_time
        .as_micros()
        .saturating_sub(server_time.as_micros());
    let skew = Duration::from_micros(skew_micros.unsigned_abs());
    if skew > WARN_SKEW {
        let direction = if skew_micros > 0 {
            "ahead of"
        } else {
            "behind"
        };
        warn!(
            %server,
            "this machine's clock is {} s {direction} the server's; beyond {} s its reports are refused",
            skew.as_secs(),
            MAX_CLOCK_SKEW.as_secs()
        );
    }
}
