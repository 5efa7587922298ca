//! DNS over TCP: the accept loop, queries (and updates) answered in order, and zone
//! transfers, signed when their request was.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::counters::{rcode_index, Counters, Rejected};
use super::interior::Interior;
use super::update::{Deliver, Gate, Gated};
use super::{all_hosts, serial};
use crate::edge::net::{self, Accept};
use crate::model::record::Time;
use crate::proto::zone::{self, Reply, Transport, Zone};
use crate::state::table::Table;

/// Open TCP connections at once; more wait to be accepted.
const MAX_TCP: usize = 64;
/// A TCP connection idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every TCP connection shares.
pub(super) struct TcpShared {
    pub(super) zone: Arc<Zone>,
    pub(super) table: Arc<Table>,
    pub(super) counters: Arc<Counters>,
    pub(super) transfer_to: Vec<IpNet>,
    pub(super) interior: Arc<Interior>,
    pub(super) gate: Arc<Gate>,
}

/// Serves TCP until `shutdown`, [`MAX_TCP`] connections at once; those still open then
/// are cut.
pub(super) async fn accept(
    listener: TcpListener,
    shared: Arc<TcpShared>,
    shutdown: CancellationToken,
) {
    let limits = Accept {
        max_open: MAX_TCP,
        pause_after_error: Duration::from_millis(10),
        log_error: |e| warn!(error = %e, "dns tcp accept failed"),
    };
    let serve = |stream, peer| {
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                res = connection(stream, peer, &shared) => {
                    if let Err(e) = res {
                        debug!(%peer, error = %e, "dns tcp connection ends");
                    }
                }
            }
        }
    };
    let mut connections = net::accept_bounded(&listener, limits, &shutdown, serve).await;
    connections.shutdown().await;
}

/// Serves one TCP connection: length-prefixed queries, answered in order, until the
/// client closes it or is idle for [`TCP_IDLE`].
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &TcpShared,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut query = Vec::new();
    let mut answer = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        query.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(res) => {
                res?;
            }
            Err(_) => return Ok(()),
        }
        let now = Time::now();
        let hosts = TcpHosts(shared);
        let (answered_tx, answered) = oneshot::channel();
        let deliver = move || -> Deliver {
            Box::new(move |answer| {
                let _ = answered_tx.send(answer);
            })
        };
        let signer = match shared.gate.check(&query, now, &mut answer, deliver) {
            Gated::Plain => None,
            Gated::Signed(signer) => Some(signer),
            Gated::Answered(rcode) => {
                shared.counters.count_reply(&Reply::Answer {
                    rcode,
                    truncated: false,
                });
                write_message(&mut stream, &answer).await?;
                continue;
            }
            Gated::Sent => {
                // The writer answers once the update is committed (or refused); a
                // writer that stopped drops the sender.
                let Ok(answer) = answered.await else {
                    return Ok(());
                };
                write_message(&mut stream, &answer).await?;
                continue;
            }
        };
        let reply = shared.zone.respond(
            &query,
            Transport::Tcp,
            serial(&shared.table),
            now,
            &hosts,
            &mut answer,
        );
        if let (Some(signer), Reply::Answer { .. }) = (&signer, &reply) {
            signer.sign(&mut answer, now);
        }
        match reply {
            Reply::Drop => {
                shared
                    .counters
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
            }
            Reply::Answer { .. } => {
                shared.counters.count_reply(&reply);
                write_message(&mut stream, &answer).await?;
            }
            Reply::Transfer { id, query } => {
                let allowed = match &signer {
                    // A signed request: the key decides, wherever it comes from.
                    Some(signer) => signer.may_transfer(),
                    None => shared
                        .transfer_to
                        .iter()
                        .any(|net| net.contains(&peer.ip().to_canonical())),
                };
                if !allowed {
                    if signer.is_some() {
                        info!(%peer, "zone transfer refused: a host's key may not transfer the zone");
                        shared.counters.reject(Rejected::Transfer);
                    } else {
                        info!(%peer, "zone transfer refused: not in dns_transfer_to");
                    }
                    shared
                        .counters
                        .transfers_refused
                        .fetch_add(1, Ordering::Relaxed);
                    let reply = shared.zone.refuse(id, query, &mut answer);
                    if let Some(signer) = &signer {
                        signer.sign(&mut answer, now);
                    }
                    shared.counters.count_reply(&reply);
                    write_message(&mut stream, &answer).await?;
                    continue;
                }
                let qtype = query.query_type();
                let zone = Arc::clone(&shared.zone);
                let table = Arc::clone(&shared.table);
                // Reading and encoding 100,000 hosts takes tens of milliseconds: not on
                // the runtime's one thread, which also receives reports.
                let messages = tokio::task::spawn_blocking(move || {
                    let serial = serial(&table);
                    let hosts = all_hosts(&table);
                    let txt = table.all_txt();
                    (serial, zone.transfer(id, &query, serial, now, hosts, &txt))
                })
                .await;
                let Ok((serial, mut messages)) = messages else {
                    return Err(std::io::Error::other("transfer task failed"));
                };
                // Signed: each message, the first over the request's MAC, each later one
                // over the one before (RFC 8945 §5.3.1).
                if let Some(signer) = &signer {
                    let mut prior: Option<Vec<u8>> = None;
                    for message in &mut messages {
                        prior = Some(match &prior {
                            None => signer.sign(message, now),
                            Some(prior) => signer.sign_next(message, prior, now),
                        });
                    }
                }
                for message in &messages {
                    write_message(&mut stream, message).await?;
                }
                shared.counters.transfers.fetch_add(1, Ordering::Relaxed);
                shared.counters.responses[rcode_index(ResponseCode::NoError)]
                    .fetch_add(1, Ordering::Relaxed);
                info!(%peer, serial, n_messages = messages.len(), qtype = %qtype, "zone transferred");
            }
        }
    }
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("message over 65,535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// The names a TCP connection answers from.
struct TcpHosts<'a>(&'a TcpShared);

impl zone::ZoneSource for TcpHosts<'_> {
    fn record(&self, name: &crate::model::name::Name) -> Option<crate::model::record::Record> {
        self.0.table.get(name).map(|entry| entry.record)
    }

    fn txt(&self, name: &crate::model::name::Name) -> Vec<crate::model::txt::Txt> {
        self.0.table.txt(name)
    }

    fn has_below(&self, relative: &str) -> bool {
        self.0.interior.contains(relative)
    }
}
