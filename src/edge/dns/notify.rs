//! NOTIFY: telling the secondaries in `dns_notify` that the serial has changed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::counters::Counters;
use super::{serial, NOTIFY_EVERY};
use crate::edge::net;
use crate::model::record::Time;
use crate::proto::zone::{self, Zone};
use crate::state::table::Table;

/// A NOTIFY unanswered this long is sent again, up to [`NOTIFY_TRIES`] times.
const NOTIFY_WAIT: Duration = Duration::from_secs(1);
const NOTIFY_TRIES: u32 = 5;

/// Sends NOTIFY to every target whenever the serial has changed, at most once per
/// [`NOTIFY_EVERY`], each retried until answered (up to [`NOTIFY_TRIES`] times). The
/// first goes out at start, so secondaries catch up with changes made while it was down.
pub(super) async fn notify(
    zone: Arc<Zone>,
    table: Arc<Table>,
    targets: Vec<SocketAddr>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let bind = |addr: &str| {
        std::net::UdpSocket::bind(addr).and_then(|socket| {
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        })
    };
    let v4 = bind("0.0.0.0:0");
    let v6 = bind("[::]:0");
    let mut notified: Option<u32> = None;
    let mut id: u16 = (Time::now().as_micros() & 0xffff) as u16;
    let mut ticks = net::every(NOTIFY_EVERY, &shutdown);
    while ticks.tick().await {
        let serial = serial(&table);
        if notified == Some(serial) {
            continue;
        }
        notified = Some(serial);
        id = id.wrapping_add(1);
        let message = zone.notify(id, serial);
        let mut pending: Vec<SocketAddr> = targets.clone();
        for attempt in 1..=NOTIFY_TRIES {
            for target in &pending {
                let socket = if target.is_ipv4() { &v4 } else { &v6 };
                match socket {
                    Ok(socket) => match socket.send_to(&message, target).await {
                        Ok(_) => {
                            counters.notifies_sent.fetch_add(1, Ordering::Relaxed);
                            debug!(%target, serial, attempt, "notify sent");
                        }
                        Err(e) => warn!(%target, error = %e, "cannot send notify"),
                    },
                    Err(e) => warn!(%target, error = %e, "no socket to send notify from"),
                }
            }
            let deadline = tokio::time::Instant::now() + NOTIFY_WAIT;
            let mut buf = [0u8; 512];
            while !pending.is_empty() {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => break,
                    res = recv_either(&v4, &v6, &mut buf) => res,
                };
                if let Some((len, from)) = received {
                    if zone::acknowledges_notify(&buf[..len], id) {
                        pending.retain(|target| !same_peer(*target, from));
                        info!(target = %from, serial, "notify acknowledged");
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        for target in &pending {
            warn!(%target, serial, "notify not acknowledged");
        }
    }
}

fn same_peer(target: SocketAddr, from: SocketAddr) -> bool {
    target.ip().to_canonical() == from.ip().to_canonical() && target.port() == from.port()
}

/// A datagram from whichever NOTIFY socket has one.
async fn recv_either(
    v4: &std::io::Result<tokio::net::UdpSocket>,
    v6: &std::io::Result<tokio::net::UdpSocket>,
    buf: &mut [u8; 512],
) -> Option<(usize, SocketAddr)> {
    let mut other = [0u8; 512];
    let (len, from, from_v6) = tokio::select! {
        res = async { v4.as_ref().ok()?.recv_from(buf).await.ok() }, if v4.is_ok() => {
            let (len, from) = res?;
            (len, from, false)
        }
        res = async { v6.as_ref().ok()?.recv_from(&mut other).await.ok() }, if v6.is_ok() => {
            let (len, from) = res?;
            (len, from, true)
        }
        else => std::future::pending().await,
    };
    if from_v6 {
        buf[..len].copy_from_slice(&other[..len]);
    }
    Some((len, from))
}
