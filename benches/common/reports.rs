//! The signed-report load generator of the acks benches: threads that each keep a window
//! of sealed reports in flight against a server (or datagrams of the same size against a
//! UDP echo), rotating over their share of the host names, and count the
//! acknowledgements; an open-loop variant paced at a rate that records each latency.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynip::model::key::Key;
use dynip::model::name::Name;
use dynip::model::record::Time;
use dynip::proto::wire;

use super::bench_key;

/// What a generator thread sends and how it reads the answers.
#[derive(Clone, Copy)]
pub enum Target {
    Echo,
    Dynip,
}

/// Datagrams per `sendmmsg`/`recvmmsg` call in the generator and the echo, as in the
/// server's own loops: the cost of the system calls is not what is measured.
pub const BATCH: usize = 64;
/// Bytes per receive slot: more than any answer.
const SLOT_LEN: usize = 512;

/// Sends `datagrams` on a connected socket, [`BATCH`] per `sendmmsg`; returns how many
/// went out (fewer when the socket buffer is full).
pub fn send_connected(socket: &UdpSocket, datagrams: &[Vec<u8>]) -> usize {
    let mut n_sent = 0;
    for chunk in datagrams.chunks(BATCH) {
        let mut iovs: Vec<libc::iovec> = chunk
            .iter()
            .map(|datagram| libc::iovec {
                iov_base: datagram.as_ptr() as *mut libc::c_void,
                iov_len: datagram.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid (no name, no control data).
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        // SAFETY: every header points at an iovec and a buffer that outlive the call.
        let res = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                0,
            )
        };
        if res <= 0 {
            break;
        }
        n_sent += res as usize;
        if (res as usize) < chunk.len() {
            break;
        }
    }
    n_sent
}

/// How much of each name a header offers: room for any address (receiving), or an IPv4
/// address (sending back to the generator).
enum NameLen {
    Any,
    V4,
}

/// One `mmsghdr` per buffer, each with its name.
fn named_headers(
    iovs: &mut [libc::iovec],
    names: &mut [libc::sockaddr_storage],
    name_len: NameLen,
) -> Vec<libc::mmsghdr> {
    let name_len = match name_len {
        NameLen::Any => std::mem::size_of::<libc::sockaddr_storage>(),
        NameLen::V4 => std::mem::size_of::<libc::sockaddr_in>(),
    } as libc::socklen_t;
    iovs.iter_mut()
        .zip(names.iter_mut())
        .map(|(iov, name)| {
            // SAFETY: an all-zero msghdr is valid; name and iovec are set below.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = name_len;
            header
        })
        .collect()
}

/// Receive slots and their headers for `recvmmsg`, reused for every call.
pub struct Slots {
    bufs: Vec<[u8; SLOT_LEN]>,
    lens: Vec<usize>,
    peers: Vec<libc::sockaddr_storage>,
}

impl Slots {
    pub fn new() -> Slots {
        Slots {
            bufs: vec![[0u8; SLOT_LEN]; BATCH],
            lens: vec![0; BATCH],
            // SAFETY: an all-zero sockaddr_storage is valid.
            peers: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Waits (up to the socket's read time-out) for at least one datagram, then takes
    /// whatever else is queued, up to [`BATCH`]; returns how many.
    pub fn receive(&mut self, socket: &UdpSocket) -> usize {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|buf| libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: SLOT_LEN,
            })
            .collect();
        let mut headers = named_headers(&mut iovs, &mut self.peers, NameLen::Any);
        // SAFETY: every header points at a buffer and a name that outlive the call.
        let res = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if res <= 0 {
            return 0;
        }
        let n_received = res as usize;
        for (len, header) in self.lens.iter_mut().zip(&headers[..n_received]) {
            *len = header.msg_len as usize;
        }
        n_received
    }

    pub fn datagram(&self, idx: usize) -> &[u8] {
        &self.bufs[idx][..self.lens[idx].min(SLOT_LEN)]
    }

    /// Sends each of the first `n` datagrams back to where it came from, in one
    /// `sendmmsg`.
    pub fn echo(&mut self, socket: &UdpSocket, n: usize) {
        let mut iovs: Vec<libc::iovec> = self.bufs[..n]
            .iter_mut()
            .zip(&self.lens)
            .map(|(buf, &len)| libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: len.min(SLOT_LEN),
            })
            .collect();
        // The generator's sockets are IPv4.
        let mut headers = named_headers(&mut iovs, &mut self.peers, NameLen::V4);
        // SAFETY: every header points at a buffer and a name that outlive the call.
        unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                0,
            );
        }
    }
}

/// One generator thread's share of the load.
pub struct Generator {
    target: Target,
    socket: UdpSocket,
    key: Key,
    names: Vec<Name>,
    /// Per host, the last client time sent: each report's must be later.
    last_time: Vec<i64>,
    next_host: usize,
    counter: u64,
    epoch: Instant,
}

/// Results of one thread.
#[derive(Default)]
pub struct Tally {
    pub answered: u64,
    pub sent: u64,
    pub latencies_us: Vec<u32>,
}

impl Generator {
    pub fn new(
        target: Target,
        server: SocketAddr,
        names: Vec<Name>,
        epoch: Instant,
    ) -> std::io::Result<Generator> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // A commit acknowledges up to a batch (4,096) at once: the default receive buffer
        // (about 300 datagrams of this size) would drop most of such a burst.
        socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20)?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let n_names = names.len();
        Ok(Generator {
            target,
            socket,
            key: bench_key(),
            names,
            last_time: vec![i64::MIN; n_names],
            next_host: 0,
            counter: 0,
            epoch,
        })
    }

    /// A nonce whose first 8 bytes are the send time (ns since `epoch`) and next 8 a
    /// counter: unique, and the acknowledgement gives the send time back.
    fn nonce(&mut self) -> [u8; wire::NONCE_LEN] {
        self.counter += 1;
        let mut nonce = [0u8; wire::NONCE_LEN];
        let sent = self.epoch.elapsed().as_nanos() as u64;
        nonce[..8].copy_from_slice(&sent.to_be_bytes());
        nonce[8..16].copy_from_slice(&self.counter.to_be_bytes());
        nonce
    }

    /// The next request, for the next host in turn.
    fn request(&mut self) -> Vec<u8> {
        let nonce = self.nonce();
        let idx = self.next_host;
        self.next_host = (self.next_host + 1) % self.names.len();
        let now = Time::now().as_micros();
        let time = now.max(self.last_time[idx] + 1);
        self.last_time[idx] = time;
        match self.target {
            Target::Dynip => {
                wire::seal_report(&self.key, &nonce, &self.names[idx], Time::from_micros(time))
            }
            Target::Echo => {
                let mut payload = vec![0u8; wire::ACK_LEN];
                payload[14..14 + wire::NONCE_LEN].copy_from_slice(&nonce);
                payload
            }
        }
    }

    /// Sends `n` requests, [`BATCH`] per system call; returns how many went out.
    fn send(&mut self, n: usize) -> usize {
        let mut n_sent = 0;
        while n_sent < n {
            let datagrams: Vec<Vec<u8>> = (0..(n - n_sent).min(BATCH))
                .map(|_| self.request())
                .collect();
            let n_out = send_connected(&self.socket, &datagrams);
            n_sent += n_out;
            if n_out < datagrams.len() {
                break;
            }
        }
        n_sent
    }

    /// An answer's send time, in ns since `epoch`; `None` if it is not a valid answer.
    pub fn sent_at(&self, datagram: &[u8]) -> Option<u64> {
        let nonce = match self.target {
            Target::Dynip => wire::open_ack(&self.key, datagram).ok()?.report_nonce,
            Target::Echo => datagram.get(14..14 + wire::NONCE_LEN)?.try_into().ok()?,
        };
        Some(u64::from_be_bytes(nonce[..8].try_into().ok()?))
    }

    /// Closed loop: keep `window` in flight until `stop`.
    pub fn closed_loop(mut self, window: usize, stop: &AtomicBool) -> Tally {
        let mut tally = Tally::default();
        let mut slots = Slots::new();
        let mut in_flight = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let n_sent = self.send(window - in_flight);
            tally.sent += n_sent as u64;
            in_flight += n_sent;
            let n_received = slots.receive(&self.socket);
            if n_received == 0 {
                // A lost datagram: give its slot back after the read time-out.
                in_flight = in_flight.saturating_sub(window / 8 + 1);
            }
            for idx in 0..n_received {
                if self.sent_at(slots.datagram(idx)).is_some() {
                    tally.answered += 1;
                    in_flight = in_flight.saturating_sub(1);
                }
            }
        }
        tally
    }

    /// Open loop: `rate` per second, paced in 0.5 ms ticks, answers read by a second
    /// socket handle; records every latency.
    pub fn open_loop(mut self, rate: f64, duration: Duration) -> Tally {
        let receiver = self.socket.try_clone().expect("clone of a UDP socket");
        let key = self.key.clone();
        let target = self.target;
        let epoch = self.epoch;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let reader = Generator {
                target,
                socket: receiver,
                key,
                names: Vec::new(),
                last_time: Vec::new(),
                next_host: 0,
                counter: 0,
                epoch,
            };
            let mut slots = Slots::new();
            let mut tally = Tally::default();
            while !stop_reader.load(Ordering::Relaxed) {
                let n_received = slots.receive(&reader.socket);
                let now = epoch.elapsed().as_nanos() as u64;
                for idx in 0..n_received {
                    if let Some(sent) = reader.sent_at(slots.datagram(idx)) {
                        tally.answered += 1;
                        tally
                            .latencies_us
                            .push(((now - sent) / 1000).min(u32::MAX as u64) as u32);
                    }
                }
            }
            tally
        });
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if due > sent {
                sent += self.send((due - sent) as usize) as u64;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let mut tally = reader.join().expect("reader thread");
        tally.sent = sent;
        tally
    }
}

pub fn names(n_hosts: usize) -> Vec<Name> {
    (0..n_hosts)
        .map(|idx| Name::parse(&format!("client-{idx:06}")).expect("valid generated name"))
        .collect()
}

/// What one closed-loop run measured.
pub struct Run {
    /// Answers per second.
    pub rate: f64,
    /// Datagrams sent per second.
    pub sent_rate: f64,
    /// Answers in all, warm-up included.
    pub answered: u64,
}

/// Runs `threads` closed-loop generators for `seconds` (after a fifth of that to warm
/// up), each keeping `window` in flight against one of `servers` in turn, over its share
/// of `hosts` host names.
pub fn closed_loop(
    target: Target,
    servers: &[SocketAddr],
    threads: usize,
    window: usize,
    hosts: usize,
    seconds: f64,
) -> Run {
    let epoch = Instant::now();
    let all_names = names(hosts);
    let share = hosts.div_ceil(threads);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (idx, chunk) in all_names.chunks(share).enumerate() {
        let server = servers[idx % servers.len()];
        let generator =
            Generator::new(target, server, chunk.to_vec(), epoch).expect("generator socket");
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            generator.closed_loop(window, &stop)
        }));
    }
    let window = Duration::from_secs_f64(seconds);
    std::thread::sleep(window / 5);
    let started = Instant::now();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed() + window / 5;
    let tallies: Vec<Tally> = handles
        .into_iter()
        .map(|h| h.join().expect("generator"))
        .collect();
    let answered: u64 = tallies.iter().map(|t| t.answered).sum();
    let sent: u64 = tallies.iter().map(|t| t.sent).sum();
    Run {
        rate: answered as f64 / elapsed.as_secs_f64(),
        sent_rate: sent as f64 / elapsed.as_secs_f64(),
        answered,
    }
}

pub fn percentile(sorted: &[u32], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    Duration::from_micros(u64::from(sorted[idx]))
}

/// p50, p90, p99, p99.9 and the maximum of sorted latencies, for printing.
pub fn latency_tail(sorted: &[u32]) -> String {
    [
        (0.50, "p50"),
        (0.90, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
        (1.0, "max"),
    ]
    .iter()
    .map(|&(fraction, label)| {
        format!(
            "{label} {:.2} ms",
            percentile(sorted, fraction).as_secs_f64() * 1000.0
        )
    })
    .collect::<Vec<_>>()
    .join(", ")
}
