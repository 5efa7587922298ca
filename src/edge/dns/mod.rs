//! The DNS face's sockets: `dns_listen` over UDP and TCP, zone transfers, NOTIFY, the
//! UDP rate limit, and the counters.
//!
//! Owns the I/O around [`zone`], which decides every answer: UDP is served by
//! `dns_threads` OS threads, each with its own `SO_REUSEPORT` socket, reading and
//! answering up to [`BATCH`] queries per `recvmmsg`/`sendmmsg` and reading the table
//! under its read lock (the writer holds the write lock only to swap records in); TCP and
//! NOTIFY are tasks on the async runtime. Must not write the table or the store.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use ipnet::IpNet;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::DnsConfig;
use crate::model::record::Time;
use crate::proto::zone::{self, Reply, Transport, Zone, ZoneError};
use crate::state::table::Table;

/// Queries per `recvmmsg` (and answers per `sendmmsg`): past 32 a system call's cost is
/// already spread thin, and a batch stays within the L1 cache.
pub const BATCH: usize = 32;
/// Room for one query. A longer datagram (flagged `MSG_TRUNC`) is dropped: no valid query
/// for this zone comes near it.
const SLOT: usize = 4096;
/// How often a UDP thread looks up from a quiet socket to see whether to stop.
const WAKE: Duration = Duration::from_millis(200);
/// Open TCP connections at once; more wait to be accepted.
const MAX_TCP: usize = 64;
/// A TCP connection idle this long is closed (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// NOTIFYs go out at most this often, however often the zone changes.
const NOTIFY_EVERY: Duration = Duration::from_secs(1);
/// A NOTIFY unanswered this long is sent again, up to [`NOTIFY_TRIES`] times.
const NOTIFY_WAIT: Duration = Duration::from_secs(1);
const NOTIFY_TRIES: u32 = 5;
/// Rate-limit buckets a UDP thread keeps before it forgets the sources that are quiet.
const MAX_BUCKETS: usize = 65_536;

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

/// The response codes counted one by one; any other is counted as `other`.
const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::BADVERS, "BADVERS"),
];

fn rcode_index(rcode: ResponseCode) -> usize {
    RCODES
        .iter()
        .position(|(code, _)| *code == rcode)
        .unwrap_or(RCODES.len())
}

/// What the DNS face has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses sent, by response code ([`RCODES`], then other).
    responses: [AtomicU64; RCODES.len() + 1],
    /// Datagrams not answered because they were not queries (too short, a response, too
    /// long).
    dropped_malformed: AtomicU64,
    /// Responses not sent because their source network was over `dns_rate_limit`.
    dropped_rate_limited: AtomicU64,
    /// Responses sent with TC set (too large for UDP, or a rate-limited "slip").
    truncated: AtomicU64,
    /// Zone transfers sent, and refused (source not in `dns_transfer_to`).
    transfers: AtomicU64,
    transfers_refused: AtomicU64,
    /// NOTIFY datagrams sent (retries included).
    notifies_sent: AtomicU64,
}

/// One UDP thread's counts for one batch, added to [`Counters`] once per batch so that
/// the threads do not bounce the counters' cache line per query.
#[derive(Default)]
struct Counts {
    responses: [u64; RCODES.len() + 1],
    dropped_malformed: u64,
    dropped_rate_limited: u64,
    truncated: u64,
}

impl Counters {
    fn add(&self, counts: &Counts) {
        for (total, &n) in self.responses.iter().zip(&counts.responses) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        for (total, n) in [
            (&self.dropped_malformed, counts.dropped_malformed),
            (&self.dropped_rate_limited, counts.dropped_rate_limited),
            (&self.truncated, counts.truncated),
        ] {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn count_reply(&self, reply: &Reply) {
        if let Reply::Answer { rcode, truncated } = reply {
            self.responses[rcode_index(*rcode)].fetch_add(1, Ordering::Relaxed);
            if *truncated {
                self.truncated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Responses sent with `rcode` (`"NOERROR"`, ...; `"other"`).
    pub fn responses(&self, rcode: &str) -> u64 {
        let idx = RCODES
            .iter()
            .position(|(_, name)| *name == rcode)
            .unwrap_or(RCODES.len());
        self.responses[idx].load(Ordering::Relaxed)
    }

    /// Appends the counters in Prometheus' text format.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.push_str("# HELP dynip_dns_responses_total DNS responses sent, by response code.\n");
        out.push_str("# TYPE dynip_dns_responses_total counter\n");
        let names = RCODES.iter().map(|(_, name)| *name).chain(["other"]);
        for (name, counter) in names.zip(&self.responses) {
            let _ = writeln!(
                out,
                "dynip_dns_responses_total{{rcode=\"{name}\"}} {}",
                load(counter)
            );
        }
        out.push_str("# HELP dynip_dns_dropped_total DNS datagrams not answered, by reason.\n");
        out.push_str("# TYPE dynip_dns_dropped_total counter\n");
        let _ = writeln!(
            out,
            "dynip_dns_dropped_total{{reason=\"malformed\"}} {}",
            load(&self.dropped_malformed)
        );
        let _ = writeln!(
            out,
            "dynip_dns_dropped_total{{reason=\"rate_limit\"}} {}",
            load(&self.dropped_rate_limited)
        );
        for (name, help, counter) in [
            (
                "dynip_dns_truncated_total",
                "DNS responses sent with TC set.",
                &self.truncated,
            ),
            (
                "dynip_dns_transfers_total",
                "Zone transfers sent.",
                &self.transfers,
            ),
            (
                "dynip_dns_transfers_refused_total",
                "Zone transfers refused (source not in dns_transfer_to).",
                &self.transfers_refused,
            ),
            (
                "dynip_dns_notifies_sent_total",
                "NOTIFY datagrams sent, retries included.",
                &self.notifies_sent,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                load(counter)
            );
        }
    }
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
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = self.local_addr()?;
        let interior = Arc::new(Interior::default());
        interior.rebuild(&table);
        let limiter = Arc::new(Mutex::new(Limiter::new(self.rate_limit)));
        info!("listening dns={local}");
        let mut threads = Vec::new();
        for (idx, socket) in self.udp.into_iter().enumerate() {
            let udp = UdpServer {
                zone: Arc::clone(&self.zone),
                table: Arc::clone(&table),
                counters: Arc::clone(&self.counters),
                limiter: Arc::clone(&limiter),
                shutdown: shutdown.clone(),
                slots: Default::default(),
                interior: Arc::clone(&interior),
            };
            let thread = std::thread::Builder::new()
                .name(format!("dynip-dns-{idx}"))
                .spawn(move || udp.run(&socket))?;
            threads.push(thread);
        }
        let mut tasks = JoinSet::new();
        let shared = Arc::new(TcpShared {
            zone: Arc::clone(&self.zone),
            table: Arc::clone(&table),
            counters: Arc::clone(&self.counters),
            transfer_to: self.transfer_to,
            interior: Arc::clone(&interior),
        });
        tasks.spawn(keep_interior(
            interior,
            Arc::clone(&table),
            shutdown.clone(),
        ));
        self.tcp.set_nonblocking(true)?;
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
        let first = udp_socket(listen)?;
        let addr = first.local_addr()?;
        let tcp = match tcp_listener(addr) {
            Ok(tcp) => tcp,
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                last_error = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut udp = vec![first];
        for _ in 1..n_threads {
            udp.push(udp_socket(addr)?);
        }
        return Ok((udp, tcp));
    }
    Err(last_error.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` then answers IPv4 as well, as `server_ip = *` does for reports.
        let _ = socket.set_only_v6(false);
    }
    // Room for bursts while a thread is busy: 4 MiB is about 40,000 queries.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_read_timeout(Some(WAKE))?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// One UDP thread.
struct UdpServer {
    zone: Arc<Zone>,
    table: Arc<Table>,
    counters: Arc<Counters>,
    /// Shared by the UDP threads, taken once per batch.
    limiter: Arc<Mutex<Limiter>>,
    shutdown: CancellationToken,
    /// Where each name answered so far lives in the table.
    slots: Slots,
    interior: Arc<Interior>,
}

impl UdpServer {
    fn run(self, socket: &UdpSocket) {
        let fd = socket.as_raw_fd();
        let mut slots = vec![[0u8; SLOT]; BATCH];
        let mut answers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
        let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
        let mut outgoing: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(BATCH);
        let mut answered: Vec<(usize, SocketAddr, ResponseCode, bool)> = Vec::with_capacity(BATCH);
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(BATCH);
        while !self.shutdown.is_cancelled() {
            received.clear();
            {
                let mut buffers: Vec<[IoSliceMut<'_>; 1]> = slots
                    .iter_mut()
                    .map(|slot| [IoSliceMut::new(slot)])
                    .collect();
                match recvmmsg(
                    fd,
                    &mut recv_headers,
                    buffers.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(results) => {
                        for msg in results {
                            let len = if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                                0
                            } else {
                                msg.bytes
                            };
                            received.push((len, msg.address.and_then(std_addr)));
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "dns receive failed");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            }
            let now = Time::now();
            let serial = serial(&self.table);
            let mut counts = Counts::default();
            outgoing.clear();
            let hosts = UdpHosts {
                table: &self.table,
                slots: &self.slots,
                interior: &self.interior,
            };
            answered.clear();
            for (idx, &(len, peer)) in received.iter().enumerate() {
                let Some(peer) = peer else { continue };
                let reply = self.zone.respond(
                    &slots[idx][..len],
                    Transport::Udp,
                    serial,
                    now,
                    &hosts,
                    &mut answers[idx],
                );
                let Reply::Answer { rcode, truncated } = reply else {
                    counts.dropped_malformed += 1;
                    continue;
                };
                answered.push((idx, peer, rcode, truncated));
            }
            // One lock for the batch, held only for the buckets' arithmetic.
            verdicts.clear();
            {
                let mut limiter = self
                    .limiter
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                verdicts.extend(
                    answered
                        .iter()
                        .map(|&(_, peer, _, _)| limiter.check(peer.ip(), now)),
                );
            }
            for (&(idx, peer, rcode, mut truncated), &verdict) in answered.iter().zip(&verdicts) {
                let answer = &mut answers[idx];
                match verdict {
                    Verdict::Send => {}
                    Verdict::Drop => {
                        counts.dropped_rate_limited += 1;
                        continue;
                    }
                    Verdict::Slip => {
                        if !zone::truncate_answer(answer) {
                            counts.dropped_rate_limited += 1;
                            continue;
                        }
                        truncated = true;
                    }
                }
                counts.responses[rcode_index(rcode)] += 1;
                if truncated {
                    counts.truncated += 1;
                }
                outgoing.push((idx, SockaddrStorage::from(peer)));
            }
            send_all(fd, &mut send_headers, &answers, &outgoing);
            self.counters.add(&counts);
        }
        debug!("dns udp thread stops");
    }
}

/// A host's record, through this thread's map of names to table slots: a hash
/// lookup instead of a walk of the table's index (a walk was a fifth of the thread's
/// user time at 100,000 hosts). Names not in the table are not kept, since they may
/// appear at any time.
fn lookup(
    table: &Table,
    slots: &Slots,
    name: &crate::model::name::Name,
) -> Option<crate::model::record::Record> {
    let known = slots.borrow().get(name).copied();
    if let Some(slot) = known {
        return Some(table.entry_at(slot).record);
    }
    let (slot, entry) = table.find(name)?;
    slots.borrow_mut().insert(name.clone(), slot);
    Some(entry.record)
}

/// The names a UDP thread answers from.
struct UdpHosts<'a> {
    table: &'a Table,
    slots: &'a Slots,
    interior: &'a Interior,
}

impl zone::Hosts for UdpHosts<'_> {
    fn record(&self, name: &crate::model::name::Name) -> Option<crate::model::record::Record> {
        lookup(self.table, self.slots, name)
    }

    fn has_below(&self, relative: &str) -> bool {
        self.interior.contains(relative)
    }
}

/// The names a TCP connection answers from.
struct TcpHosts<'a>(&'a TcpShared);

impl zone::Hosts for TcpHosts<'_> {
    fn record(&self, name: &crate::model::name::Name) -> Option<crate::model::record::Record> {
        self.0.table.get(name).map(|entry| entry.record)
    }

    fn has_below(&self, relative: &str) -> bool {
        self.0.interior.contains(relative)
    }
}

/// The zone's empty non-terminals: `garage` while `pi.garage` is a host. Rebuilt when a
/// host is added (the serial moves), at most once per [`NOTIFY_EVERY`]; read only for
/// names that are not hosts.
#[derive(Debug, Default)]
struct Interior(std::sync::RwLock<std::collections::HashSet<String>>);

impl Interior {
    fn contains(&self, relative: &str) -> bool {
        let names = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        !names.is_empty() && names.contains(relative)
    }

    fn rebuild(&self, table: &Table) {
        let mut names = std::collections::HashSet::new();
        for (name, _) in all_hosts(table) {
            let folded = name.folded();
            for (idx, _) in folded.match_indices('.') {
                names.insert(folded[idx + 1..].to_owned());
            }
        }
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = names;
    }
}

/// Keeps the interior up to date (rebuilt when hosts were added) and, with
/// `dns_hide_stale`, notes addresses going stale as changes, so the serial rises when
/// one does. Looks once per [`NOTIFY_EVERY`]; walks the table only when one is due.
async fn keep_interior(interior: Arc<Interior>, table: Arc<Table>, shutdown: CancellationToken) {
    let mut n_hosts = table.len();
    // When the next address goes stale, as of the last walk, and the table then.
    let mut next_stale = Some(Time::from_micros(i64::MIN));
    let mut generation = table.generation();
    let mut ticks = tokio::time::interval(NOTIFY_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Hosts are never removed: a new count is a new host.
        if table.len() != n_hosts {
            n_hosts = table.len();
            let (interior, table) = (Arc::clone(&interior), Arc::clone(&table));
            // A walk of the whole table: not on the runtime's one thread.
            let _ = tokio::task::spawn_blocking(move || interior.rebuild(&table)).await;
        }
        let now = Time::now();
        // A report only makes an address go stale later than the earliest one known;
        // when none was fresh, it may have made one.
        let due = match next_stale {
            Some(next) => next <= now,
            None => table.generation() != generation,
        };
        if due {
            generation = table.generation();
            let walked = Arc::clone(&table);
            if let Ok(next) = tokio::task::spawn_blocking(move || walked.note_stale(now)).await {
                next_stale = next;
            }
        }
    }
}

/// A UDP thread's map of names to where they live in the table. Only names of hosts go
/// in (a query for any other name never reaches it), so a query cannot choose its keys
/// and a fast hash needs no protection against collisions chosen by an attacker.
type Slots = std::cell::RefCell<
    HashMap<
        crate::model::name::Name,
        crate::state::table::Slot,
        std::hash::BuildHasherDefault<Fnv>,
    >,
>;

/// FNV-1a (64-bit): SipHash, the standard map's hash, was most of the lookup's time for
/// names of 10 to 30 bytes.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Sends each `(answer index, peer)`; what the kernel will not take now is dropped (the
/// client retries, as it would after any loss).
fn send_all(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    answers: &[Vec<u8>],
    outgoing: &[(usize, SockaddrStorage)],
) {
    let mut start = 0;
    while start < outgoing.len() {
        let pending = &outgoing[start..];
        let slices: Vec<[IoSlice<'_>; 1]> = pending
            .iter()
            .map(|(idx, _)| [IoSlice::new(&answers[*idx])])
            .collect();
        let addrs: Vec<Option<SockaddrStorage>> =
            pending.iter().map(|(_, peer)| Some(*peer)).collect();
        match sendmmsg(fd, headers, slices.iter(), &addrs, [], MsgFlags::empty()) {
            Ok(results) => {
                let n_sent = results.count();
                if n_sent == 0 {
                    return;
                }
                start += n_sent;
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                debug!(error = %e, "dns send failed; skipping one answer");
                start += 1;
            }
        }
    }
}

fn std_addr(addr: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

/// What the rate limit says about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Send,
    /// Over the limit: send nothing.
    Drop,
    /// Over the limit, but every other time send an empty answer with TC set, so a real
    /// client behind a busy network retries over TCP (BIND's "slip 2").
    Slip,
}

/// Response rate limiting per source network (/24 for IPv4, /56 for IPv6): a token
/// bucket of `rate` responses per second, holding at most one second's worth. One for
/// all the UDP threads: the kernel sends one source address and port to one socket, but
/// a network's many ports reach every socket.
struct Limiter {
    rate: u32,
    buckets: HashMap<u128, Bucket>,
}

struct Bucket {
    tokens: f64,
    last: Time,
    n_limited: u64,
}

impl Limiter {
    fn new(rate: u32) -> Limiter {
        Limiter {
            rate,
            buckets: HashMap::new(),
        }
    }

    fn check(&mut self, ip: IpAddr, now: Time) -> Verdict {
        if self.rate == 0 {
            return Verdict::Send;
        }
        let rate = f64::from(self.rate);
        if self.buckets.len() >= MAX_BUCKETS {
            // Forget the networks whose buckets have refilled: they are not over the limit.
            self.buckets.retain(|_, bucket| {
                bucket.tokens + (now.as_micros() - bucket.last.as_micros()) as f64 * rate / 1e6
                    < rate
            });
        }
        let bucket = self.buckets.entry(network(ip)).or_insert(Bucket {
            tokens: rate,
            last: now,
            n_limited: 0,
        });
        let elapsed = now
            .as_micros()
            .saturating_sub(bucket.last.as_micros())
            .max(0) as f64
            / 1e6;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Send;
        }
        bucket.n_limited += 1;
        if bucket.n_limited % 2 == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The network a source address is limited as: a /24 or a /56, tagged by family.
fn network(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(ip) => u128::from(u32::from(ip) & 0xffff_ff00) | (1 << 64),
        IpAddr::V6(ip) => u128::from(ip) & !((1u128 << 72) - 1),
    }
}

/// What every TCP connection shares.
struct TcpShared {
    zone: Arc<Zone>,
    table: Arc<Table>,
    counters: Arc<Counters>,
    transfer_to: Vec<IpNet>,
    interior: Arc<Interior>,
}

async fn accept(listener: TcpListener, shared: Arc<TcpShared>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        res = connection(stream, peer, &shared) => {
                            if let Err(e) = res {
                                debug!(%peer, error = %e, "dns tcp connection ends");
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                warn!(error = %e, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
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
        let reply = shared.zone.respond(
            &query,
            Transport::Tcp,
            serial(&shared.table),
            now,
            &hosts,
            &mut answer,
        );
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
                if !shared
                    .transfer_to
                    .iter()
                    .any(|net| net.contains(&peer.ip().to_canonical()))
                {
                    info!(%peer, "zone transfer refused: not in dns_transfer_to");
                    shared
                        .counters
                        .transfers_refused
                        .fetch_add(1, Ordering::Relaxed);
                    let reply = shared.zone.refuse(id, query, &mut answer);
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
                    (serial, zone.transfer(id, &query, serial, now, hosts))
                })
                .await;
                let Ok((serial, messages)) = messages else {
                    return Err(std::io::Error::other("transfer task failed"));
                };
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

/// Every host's name and record, read from the table a chunk at a time so that the
/// writer never waits long for its lock.
fn all_hosts(table: &Table) -> Vec<(crate::model::name::Name, crate::model::record::Record)> {
    const CHUNK: usize = 4096;
    let mut hosts = Vec::with_capacity(table.len());
    let mut after = None;
    loop {
        let chunk = table.chunk_after(after.as_ref(), CHUNK);
        let Some((last, _)) = chunk.last() else {
            return hosts;
        };
        after = Some(last.clone());
        hosts.extend(chunk.into_iter().map(|(name, entry)| (name, entry.record)));
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

/// Sends NOTIFY to every target whenever the serial has changed, at most once per
/// [`NOTIFY_EVERY`], each retried until answered (up to [`NOTIFY_TRIES`] times). The
/// first goes out at start, so secondaries catch up with changes made while it was down.
async fn notify(
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
    let mut ticks = tokio::time::interval(NOTIFY_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_drops_and_slips_over_the_rate() {
        let mut limiter = Limiter::new(3);
        let at = |micros| Time::from_micros(micros);
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.200".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..6).map(|_| limiter.check(source, at(0))).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Send, Send, Send, Drop, Slip, Drop]);
        assert_eq!(limiter.check(neighbour, at(0)), Slip, "the same /24");
        assert_eq!(limiter.check("198.51.100.1".parse().unwrap(), at(0)), Send);
        assert_eq!(
            limiter.check(source, at(400_000)),
            Send,
            "refilled after 0.4 s"
        );
        assert_eq!(Limiter::new(0).check(source, at(0)), Send);
    }

    #[test]
    fn fnv_is_fnv_1a() {
        use std::hash::Hasher;
        let hash = |bytes: &[u8]| {
            let mut fnv = Fnv::default();
            fnv.write(bytes);
            fnv.finish()
        };
        // The published FNV-1a 64-bit values of "a" and "foobar".
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn networks_are_a_24_and_a_56() {
        let net = |text: &str| network(text.parse().unwrap());
        assert_eq!(net("192.0.2.1"), net("192.0.2.254"));
        assert_ne!(net("192.0.2.1"), net("192.0.3.1"));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.9"));
        assert_eq!(net("2001:db8:0:ff::1"), net("2001:db8:0:1::2"));
        assert_ne!(net("2001:db8:0:100::1"), net("2001:db8::1"));
    }

    #[test]
    fn counters_render_as_prometheus_text() {
        let counters = Counters::default();
        let mut counts = Counts::default();
        counts.responses[rcode_index(ResponseCode::NoError)] = 12;
        counts.responses[rcode_index(ResponseCode::NXDomain)] = 2;
        counts.truncated = 1;
        counters.add(&counts);
        counters.notifies_sent.fetch_add(3, Ordering::Relaxed);
        let mut out = String::new();
        counters.render_prometheus(&mut out);
        for line in [
            "# TYPE dynip_dns_responses_total counter",
            "dynip_dns_responses_total{rcode=\"NOERROR\"} 12",
            "dynip_dns_responses_total{rcode=\"NXDOMAIN\"} 2",
            "dynip_dns_responses_total{rcode=\"REFUSED\"} 0",
            "dynip_dns_responses_total{rcode=\"other\"} 0",
            "dynip_dns_dropped_total{reason=\"rate_limit\"} 0",
            "dynip_dns_truncated_total 1",
            "dynip_dns_notifies_sent_total 3",
        ] {
            assert!(
                out.lines().any(|got| got == line),
                "{line:?} missing from:\n{out}"
            );
        }
        assert_eq!(counters.responses("NOERROR"), 12);
    }
}
