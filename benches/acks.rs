//! Acknowledged reports per second, end to end, against a plain UDP echo in the same run.
//!
//! The load generator is the same for both: `--threads` threads, each with one socket,
//! each keeping `--window` requests in flight (a closed loop), rotating over its own share
//! of `--hosts` host names ("many concurrent clients"). Against dynip a request is a
//! signed report (sealed here with the test-vector key; the real server, release build,
//! commits it to its store before it acknowledges); against the echo it is a datagram of
//! the same size that a thread in this process sends straight back (`recv_from`,
//! `send_to`): the physical limit of loopback UDP on this machine with this generator.
//!
//! Then a second phase offers dynip half the rate it reached (open loop, paced) and
//! measures the report-to-acknowledgement latency; each report's nonce carries its send
//! time, which the acknowledgement echoes.
//!
//! `cargo bench --bench acks [-- --seconds S --threads T --window W --hosts H]`. Run
//! without `--bench` (as `cargo test --benches` does) it is a short smoke run. Bounded in
//! time and count; only 127.0.0.1 is ever addressed.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynip::model::key::Key;
use dynip::model::name::Name;
use dynip::model::record::Time;
use dynip::proto::wire;

mod common;
use common::{bench_key, cpu_time, Args, Server};

/// The targets.
const TARGET_RATE: f64 = 100_000.0;
const TARGET_RATIO: f64 = 0.3;
const TARGET_P99: Duration = Duration::from_millis(5);

struct Options {
    seconds: f64,
    threads: usize,
    window: usize,
    hosts: usize,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "threads", "window", "hosts"],
        "cargo bench --bench acks -- [--seconds S] [--threads T] [--window W] [--hosts H]",
    )?;
    Ok(Options {
        seconds: args.get("seconds", if args.smoke { 0.5 } else { 5.0 })?,
        threads: args.get("threads", 2)?,
        window: args.get("window", 128)?,
        hosts: args.get("hosts", 10_000)?,
        smoke: args.smoke,
    })
}

/// What a generator thread sends and how it reads the answers.
#[derive(Clone, Copy)]
enum Target {
    Echo,
    Dynip,
}

/// Datagrams per `sendmmsg`/`recvmmsg` call in the generator and the echo, as in the
/// server's own loops: the cost of the system calls is not what is measured.
const BATCH: usize = 64;
/// Bytes per receive slot: more than any answer.
const SLOT_LEN: usize = 512;

/// Sends `datagrams` on a connected socket, [`BATCH`] per `sendmmsg`; returns how many
/// went out (fewer when the socket buffer is full).
fn send_connected(socket: &UdpSocket, datagrams: &[Vec<u8>]) -> usize {
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
struct Slots {
    bufs: Vec<[u8; SLOT_LEN]>,
    lens: Vec<usize>,
    peers: Vec<libc::sockaddr_storage>,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            bufs: vec![[0u8; SLOT_LEN]; BATCH],
            lens: vec![0; BATCH],
            // SAFETY: an all-zero sockaddr_storage is valid.
            peers: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Waits (up to the socket's read time-out) for at least one datagram, then takes
    /// whatever else is queued, up to [`BATCH`]; returns how many.
    fn receive(&mut self, socket: &UdpSocket) -> usize {
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

    fn datagram(&self, idx: usize) -> &[u8] {
        &self.bufs[idx][..self.lens[idx].min(SLOT_LEN)]
    }

    /// Sends each of the first `n` datagrams back to where it came from, in one
    /// `sendmmsg`.
    fn echo(&mut self, socket: &UdpSocket, n: usize) {
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
struct Generator {
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
struct Tally {
    answered: u64,
    sent: u64,
    latencies_us: Vec<u32>,
}

impl Generator {
    fn new(
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
    fn sent_at(&self, datagram: &[u8]) -> Option<u64> {
        let nonce = match self.target {
            Target::Dynip => wire::open_ack(&self.key, datagram).ok()?.report_nonce,
            Target::Echo => datagram.get(14..14 + wire::NONCE_LEN)?.try_into().ok()?,
        };
        Some(u64::from_be_bytes(nonce[..8].try_into().ok()?))
    }

    /// Closed loop: keep `window` in flight until `stop`.
    fn closed_loop(mut self, window: usize, stop: &AtomicBool) -> Tally {
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
    fn open_loop(mut self, rate: f64, duration: Duration) -> Tally {
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

fn names(n_hosts: usize) -> Vec<Name> {
    (0..n_hosts)
        .map(|idx| Name::parse(&format!("client-{idx:06}")).expect("valid generated name"))
        .collect()
}

/// What one closed-loop run measured.
struct Run {
    /// Answers per second.
    rate: f64,
    /// Datagrams sent per second.
    sent_rate: f64,
    /// Answers in all, warm-up included.
    answered: u64,
}

/// Runs `threads` closed-loop generators against `server` for `seconds`.
fn closed_loop(target: Target, server: SocketAddr, options: &Options) -> Run {
    let epoch = Instant::now();
    let all_names = names(options.hosts);
    let share = options.hosts.div_ceil(options.threads);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for chunk in all_names.chunks(share) {
        let generator =
            Generator::new(target, server, chunk.to_vec(), epoch).expect("generator socket");
        let stop = Arc::clone(&stop);
        let window = options.window;
        handles.push(std::thread::spawn(move || {
            generator.closed_loop(window, &stop)
        }));
    }
    let window = Duration::from_secs_f64(options.seconds);
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

/// Microseconds of CPU per answer.
fn per_answer(cpu: Duration, answered: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / answered.max(1) as f64
}

/// A plain UDP echo on loopback, until `stop`: [`BATCH`] datagrams per `recvmmsg` and
/// per `sendmmsg`, as the server's loops.
fn spawn_echo(stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("echo socket");
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(4 << 20)
        .expect("receive buffer");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let addr = socket.local_addr().expect("echo address");
    std::thread::spawn(move || {
        let mut slots = Slots::new();
        while !stop.load(Ordering::Relaxed) {
            let n_received = slots.receive(&socket);
            if n_received > 0 {
                slots.echo(&socket, n_received);
            }
        }
    });
    addr
}

/// The real server, `key` set, store in a temp dir (dropped after the server).
fn start_server(dir: &tempfile::TempDir) -> Server {
    let config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nclient_log_path = {}\nkey = {}\n",
        dir.path().join("dynip.json").display(),
        bench_key().encode()
    );
    Server::start(
        dir.path(),
        &config,
        "udp",
        "warn,dynip::edge::udp=info",
        Duration::from_secs(30),
        false,
    )
}

fn percentile(sorted: &[u32], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    Duration::from_micros(u64::from(sorted[idx]))
}

/// p50, p90, p99, p99.9 and the maximum of sorted latencies, for printing.
fn latency_tail(sorted: &[u32]) -> String {
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

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "acknowledged reports: {} generator threads, window {} each, {} hosts, {:.1} s windows",
        options.threads, options.window, options.hosts, options.seconds
    );

    let stop_echo = Arc::new(AtomicBool::new(false));
    let echo = spawn_echo(Arc::clone(&stop_echo));
    let before = cpu_time("self");
    let echo_run = closed_loop(Target::Echo, echo, &options);
    // The echo thread is in this process: the CPU is generator and echo together.
    let echo_cpu = cpu_time("self").saturating_sub(before);
    stop_echo.store(true, Ordering::Relaxed);
    let (echo_rate, echo_sent) = (echo_run.rate, echo_run.sent_rate);

    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(&dir);
    let server_pid = server.pid().to_string();
    let (generator_before, server_before) = (cpu_time("self"), cpu_time(&server_pid));
    let dynip_run = closed_loop(Target::Dynip, server.addr, &options);
    let generator_cpu = cpu_time("self").saturating_sub(generator_before);
    let server_cpu = cpu_time(&server_pid).saturating_sub(server_before);
    let (dynip_rate, dynip_sent) = (dynip_run.rate, dynip_run.sent_rate);

    let half = dynip_rate / 2.0;
    let generator = Generator::new(
        Target::Dynip,
        server.addr,
        names(options.hosts),
        Instant::now(),
    )
    .expect("generator socket");
    let tally = generator.open_loop(half, Duration::from_secs_f64(options.seconds));
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let tail = latency_tail(&latencies);
    let lost = tally.sent.saturating_sub(tally.answered);
    drop(server);

    // The same open loop against the echo: what the generator, the scheduler and loopback
    // add to a latency by themselves.
    let stop_echo = Arc::new(AtomicBool::new(false));
    let echo = spawn_echo(Arc::clone(&stop_echo));
    let generator = Generator::new(Target::Echo, echo, names(options.hosts), Instant::now())
        .expect("generator socket");
    let echo_tally = generator.open_loop(half, Duration::from_secs_f64(options.seconds));
    stop_echo.store(true, Ordering::Relaxed);
    let mut echo_latencies = echo_tally.latencies_us;
    echo_latencies.sort_unstable();

    let ratio = dynip_rate / echo_rate;
    println!();
    println!("{:<38} {:>12} {:>12}", "", "answered/s", "sent/s");
    println!(
        "{:<38} {:>12.0} {:>12.0}",
        "plain UDP echo (baseline)", echo_rate, echo_sent
    );
    println!(
        "{:<38} {:>12.0} {:>12.0}",
        "dynip signed, committed, acknowledged", dynip_rate, dynip_sent
    );
    println!("ratio dynip / echo: {ratio:.2}");
    println!(
        "CPU per answer: echo and its generator {:.2} us; dynip server {:.2} us, its generator {:.2} us",
        per_answer(echo_cpu, echo_run.answered),
        per_answer(server_cpu, dynip_run.answered),
        per_answer(generator_cpu, dynip_run.answered),
    );
    println!(
        "at half load ({half:.0}/s offered, open loop): p50 {:.2} ms, p99 {:.2} ms, {} of {} unanswered",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        lost,
        tally.sent
    );
    println!("  dynip latency: {tail}");
    println!(
        "  echo latency at the same rate: {}",
        latency_tail(&echo_latencies)
    );
    if options.smoke {
        return if dynip_rate > 0.0 && echo_rate > 0.0 {
            ExitCode::SUCCESS
        } else {
            eprintln!("smoke run: nothing was answered");
            ExitCode::FAILURE
        };
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!("targets:");
    println!(
        "  >= {TARGET_RATE:.0} acknowledged reports/s: {}",
        verdict(dynip_rate >= TARGET_RATE)
    );
    println!(
        "  ratio to the echo >= {TARGET_RATIO}: {}",
        verdict(ratio >= TARGET_RATIO)
    );
    println!(
        "  p99 < {} ms at half load: {}",
        TARGET_P99.as_millis(),
        verdict(p99 < TARGET_P99)
    );
    ExitCode::SUCCESS
}
