//! The sockets' shared mechanics, for the report sockets (`udp`), DNS and HTTP.
//!
//! Owns batched receiving and sending ([`RecvBatch`], [`send_batch`]: one `recvmmsg` or
//! `sendmmsg` per batch), the conversion of the kernel's addresses ([`socket_addr`]),
//! making sockets with their options ([`udp_socket`], [`tcp_listener`]), the bounded
//! accept loop ([`accept_bounded`]) and the periodic tick that stops at shutdown
//! ([`every`]).
//!
//! Knows nothing of what a datagram or a connection means: no `wire`, `zone` or `policy`;
//! deciding, logging what was decided and counting are the callers'. The hot loops run
//! through here, so nothing here allocates or copies per datagram.

use std::future::Future;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The headers `recvmmsg` fills in, one per datagram of a batch. They hold raw pointers,
/// so they cannot live in a task that moves between threads: a task makes them per call,
/// a thread of its own keeps them.
#[derive(Debug)]
pub struct RecvHeaders(MultiHeaders<SockaddrStorage>);

/// The headers `sendmmsg` fills in: apart from [`RecvHeaders`], because nix's `sendmmsg`
/// leaves each header pointing at the address it was given, where a later `recvmmsg`
/// through the same headers would write the source's.
#[derive(Debug)]
pub struct SendHeaders(MultiHeaders<SockaddrStorage>);

impl RecvHeaders {
    /// Headers for batches of up to `n_datagrams`.
    pub fn new(n_datagrams: usize) -> RecvHeaders {
        RecvHeaders(MultiHeaders::preallocate(n_datagrams, None))
    }
}

impl SendHeaders {
    /// Headers for batches of up to `n_datagrams`.
    pub fn new(n_datagrams: usize) -> SendHeaders {
        SendHeaders(MultiHeaders::preallocate(n_datagrams, None))
    }
}

/// Whether a batched call may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Return at once with what there is (`MSG_DONTWAIT`): for a non-blocking socket
    /// driven by the runtime's readiness.
    No,
    /// Block, up to the socket's time-out: a receive for the first datagram only, then
    /// take what else is there (`MSG_WAITFORONE`); a send as the socket does.
    Yes,
}

/// One datagram of the last [`RecvBatch::receive`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes, cut to the slot.
    pub bytes: &'a [u8],
    /// Its length, which is more than `bytes` holds when it was cut.
    pub len: usize,
    /// Where it came from: `None` only for an address family the kernel should never
    /// give a UDP socket.
    pub peer: Option<SocketAddr>,
    /// Whether it was longer than a slot, and so cut.
    pub truncated: bool,
}

/// What the kernel said about one datagram.
#[derive(Debug, Clone, Copy)]
struct Received {
    len: usize,
    peer: Option<SocketAddr>,
    truncated: bool,
}

/// Buffers for `recvmmsg`, reused for every call: a slot per datagram.
#[derive(Debug)]
pub struct RecvBatch {
    /// The slots, one after the other.
    buffer: Vec<u8>,
    slot_len: usize,
    /// Per datagram of the last call.
    received: Vec<Received>,
}

impl RecvBatch {
    /// Room for `n_slots` datagrams of up to `slot_len` bytes each.
    pub fn new(n_slots: usize, slot_len: usize) -> RecvBatch {
        RecvBatch {
            buffer: vec![0; n_slots * slot_len],
            slot_len,
            received: Vec::with_capacity(n_slots),
        }
    }

    /// Receives a datagram per slot at most (and per header) with one `recvmmsg` on `fd`;
    /// returns how many.
    ///
    /// # Errors
    /// The call's: `EAGAIN` when nothing came (at once with [`Wait::No`], after the
    /// socket's read time-out with [`Wait::Yes`]), `EINTR`, or what the socket reports.
    pub fn receive(
        &mut self,
        fd: RawFd,
        headers: &mut RecvHeaders,
        wait: Wait,
    ) -> Result<usize, Errno> {
        self.received.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .buffer
            .chunks_exact_mut(self.slot_len)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        // MSG_TRUNC in: the length returned is the datagram's, not what fit.
        let flags = MsgFlags::MSG_TRUNC
            | match wait {
                Wait::No => MsgFlags::MSG_DONTWAIT,
                Wait::Yes => MsgFlags::MSG_WAITFORONE,
            };
        let results = recvmmsg(fd, &mut headers.0, iovs.iter_mut(), flags, None)?;
        for msg in results {
            self.received.push(Received {
                len: msg.bytes,
                peer: msg.address.as_ref().and_then(socket_addr),
                truncated: msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > self.slot_len,
            });
        }
        Ok(self.received.len())
    }

    /// The `idx`th datagram of the last call.
    ///
    /// # Panics
    /// When `idx` is not below what the last [`receive`](RecvBatch::receive) returned.
    pub fn datagram(&self, idx: usize) -> Datagram<'_> {
        let Received {
            len,
            peer,
            truncated,
        } = self.received[idx];
        let start = idx * self.slot_len;
        Datagram {
            bytes: &self.buffer[start..start + len.min(self.slot_len)],
            len,
            peer,
            truncated,
        }
    }
}

/// Sends `datagrams` (bytes, destination) on `fd` with one `sendmmsg`, in order; returns
/// how many the kernel took. No more are sent than `headers` holds.
///
/// # Errors
/// The call's, when it sent none: `EAGAIN` with [`Wait::No`] and a full buffer, `EINTR`,
/// or what the first datagram's destination gives.
pub fn send_batch<'a>(
    fd: RawFd,
    headers: &mut SendHeaders,
    datagrams: impl Iterator<Item = (&'a [u8], SocketAddr)>,
    wait: Wait,
) -> Result<usize, Errno> {
    let (n_datagrams, _) = datagrams.size_hint();
    let mut iovs: Vec<[IoSlice<'_>; 1]> = Vec::with_capacity(n_datagrams);
    let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(n_datagrams);
    for (bytes, peer) in datagrams {
        iovs.push([IoSlice::new(bytes)]);
        addrs.push(Some(SockaddrStorage::from(peer)));
    }
    let flags = match wait {
        Wait::No => MsgFlags::MSG_DONTWAIT,
        Wait::Yes => MsgFlags::empty(),
    };
    let results = sendmmsg(fd, &mut headers.0, &iovs, &addrs, [], flags)?;
    Ok(results.count())
}

/// The standard address for one the kernel gave, with IPv6's flow label and scope (a
/// link-local peer is answered through the interface it came in on). `None` for a family
/// other than IPv4 and IPv6.
pub fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from(SocketAddrV6::from(*v6)))
}

/// How a UDP socket is set up, beyond what every one gets (an IPv6 socket also takes
/// IPv4, as `[::]` binds both families).
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    /// `SO_REUSEPORT`: several sockets on one port, the kernel spreading the sources over
    /// them (one per thread).
    pub reuse_port: bool,
    /// The receive buffer asked of the kernel, which caps it at `net.core.rmem_max`; a
    /// refusal is logged, not fatal.
    pub recv_buffer: usize,
    /// How long a blocking receive waits before it returns `EAGAIN`, for a thread to look
    /// up and see whether to stop.
    pub read_timeout: Option<Duration>,
    /// Non-blocking, for the async runtime.
    pub nonblocking: bool,
}

/// A UDP socket bound to `addr`, set up as `options` say.
///
/// # Errors
/// When the socket cannot be made, set up or bound.
pub fn udp_socket(addr: SocketAddr, options: &UdpOptions) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(options.recv_buffer) {
        warn!(error = %e, "cannot enlarge the receive buffer");
    }
    if options.read_timeout.is_some() {
        socket.set_read_timeout(options.read_timeout)?;
    }
    socket.set_nonblocking(options.nonblocking)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A non-blocking TCP listener on `addr` (with `SO_REUSEADDR`, and IPv4 too on an IPv6
/// address), with `backlog` connections waiting at most.
///
/// # Errors
/// When the socket cannot be made, set up, bound or listen.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// How an accept loop bounds itself.
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    /// Connections served at once; more wait in the listen backlog.
    pub max_open: usize,
    /// The pause after a failed accept (out of file descriptors and the like), so the
    /// loop waits instead of spinning.
    pub pause_after_error: Duration,
    /// Logs a failed accept, as the caller words it.
    pub log_error: fn(&std::io::Error),
}

/// Accepts connections on `listener` until `shutdown`, spawning `serve(stream, peer)` for
/// each while at most [`Accept::max_open`] are open. Returns the connections still open,
/// for the caller to drain or cut as its protocol wants.
pub async fn accept_bounded<S, F>(
    listener: &TcpListener,
    limits: Accept,
    shutdown: &CancellationToken,
    mut serve: S,
) -> JoinSet<()>
where
    S: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_open));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(accepted) => accepted,
                Err(e) => {
                    (limits.log_error)(&e);
                    tokio::time::sleep(limits.pause_after_error).await;
                    continue;
                }
            },
        };
        let connection = serve(stream, peer);
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    connections
}

/// A tick every `period` until `shutdown`: the loop of a periodic task.
pub fn every(period: Duration, shutdown: &CancellationToken) -> Every {
    let mut ticks = tokio::time::interval(period);
    // After a slow turn, the next waits a whole period: no burst of turns to catch up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Every {
        ticks,
        shutdown: shutdown.clone(),
    }
}

/// What [`every`] returns.
#[derive(Debug)]
pub struct Every {
    ticks: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Every {
    /// Waits for the next tick (the first comes at once): `true`, or `false` once
    /// shutdown has begun.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            _ = self.ticks.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn socket() -> std::net::UdpSocket {
        let options = UdpOptions {
            reuse_port: false,
            recv_buffer: 1 << 16,
            read_timeout: Some(Duration::from_millis(500)),
            nonblocking: false,
        };
        udp_socket("127.0.0.1:0".parse().unwrap(), &options).unwrap()
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_with_its_sources_and_cuts() {
        let receiver = socket();
        let sender = socket();
        let to = receiver.local_addr().unwrap();
        let from = sender.local_addr().unwrap();
        let long = [7u8; 40];
        let datagrams: [&[u8]; 3] = [b"one", b"", &long];
        let n_sent = send_batch(
            sender.as_raw_fd(),
            &mut SendHeaders::new(4),
            datagrams.iter().map(|bytes| (*bytes, to)),
            Wait::Yes,
        )
        .unwrap();
        assert_eq!(n_sent, 3);
        let mut batch = RecvBatch::new(4, 16);
        let mut headers = RecvHeaders::new(4);
        let mut n_received = 0;
        // Loopback delivers all three at once, but nothing promises one call takes them.
        let mut got = Vec::new();
        while n_received < 3 {
            let n = batch
                .receive(receiver.as_raw_fd(), &mut headers, Wait::Yes)
                .unwrap();
            for idx in 0..n {
                let datagram = batch.datagram(idx);
                got.push((
                    datagram.bytes.to_vec(),
                    datagram.len,
                    datagram.peer,
                    datagram.truncated,
                ));
            }
            n_received += n;
        }
        assert_eq!(
            got,
            [
                (b"one".to_vec(), 3, Some(from), false),
                (Vec::new(), 0, Some(from), false),
                (vec![7; 16], 40, Some(from), true),
            ]
        );
        assert_eq!(
            batch.receive(receiver.as_raw_fd(), &mut headers, Wait::No),
            Err(Errno::EAGAIN)
        );
    }

    #[tokio::test]
    async fn at_most_max_open_connections_are_served_until_shutdown() {
        use tokio::io::AsyncReadExt;
        let listener = tcp_listener("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (served, mut n_served) = tokio::sync::mpsc::unbounded_channel();
        let limits = Accept {
            max_open: 1,
            pause_after_error: Duration::from_millis(10),
            log_error: |_| {},
        };
        let accepting = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let serve = move |mut stream: TcpStream, _| {
                    let _ = served.send(());
                    // Open until the client closes.
                    async move {
                        let _ = stream.read(&mut [0u8; 1]).await;
                    }
                };
                accept_bounded(&listener, limits, &shutdown, serve)
                    .await
                    .len()
            }
        });
        let first = TcpStream::connect(addr).await.unwrap();
        n_served.recv().await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(100), n_served.recv()).await;
        assert!(waited.is_err(), "the second waits while the first is open");
        drop(first);
        n_served.recv().await.unwrap();
        shutdown.cancel();
        assert_eq!(accepting.await.unwrap(), 1, "the second is still open");
        drop(second);
    }

    #[tokio::test]
    async fn every_ticks_at_once_then_stops_at_shutdown() {
        let shutdown = CancellationToken::new();
        let mut ticks = every(Duration::from_secs(3600), &shutdown);
        assert!(ticks.tick().await, "the first tick comes at once");
        shutdown.cancel();
        assert!(!ticks.tick().await);
    }

    #[test]
    fn kernel_addresses_convert_with_their_scope() {
        for text in ["192.0.2.1:53", "[2001:db8::1]:5353", "[fe80::1%2]:53"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_addr(&SockaddrStorage::from(addr)), Some(addr));
        }
    }
}
