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

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynip::key::Key;
use dynip::name::Name;
use dynip::record::Time;
use dynip::wire;

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|arg| arg == "--bench");
    let mut options = Options {
        seconds: if smoke { 0.5 } else { 5.0 },
        threads: 2,
        window: 128,
        hosts: 10_000,
        smoke,
    };
    let mut args = args.iter().filter(|arg| *arg != "--bench");
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--threads" => options.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--window" => options.window = value()?.parse().map_err(|e| format!("--window: {e}"))?,
            "--hosts" => options.hosts = value()?.parse().map_err(|e| format!("--hosts: {e}"))?,
            other => return Err(format!("unknown argument {other:?}; usage: cargo bench --bench acks -- [--seconds S] [--threads T] [--window W] [--hosts H]")),
        }
    }
    Ok(options)
}

/// The test-vector key of docs/PROTOCOL.md.
fn bench_key() -> Key {
    let mut secret = [0u8; 32];
    for (idx, byte) in secret.iter_mut().enumerate() {
        *byte = idx as u8;
    }
    Key::from_bytes(secret)
}

/// What a generator thread sends and how it reads the answers.
#[derive(Clone, Copy)]
enum Target {
    Echo,
    Dynip,
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

    fn send_one(&mut self) -> std::io::Result<()> {
        let nonce = self.nonce();
        let idx = self.next_host;
        self.next_host = (self.next_host + 1) % self.names.len();
        let now = Time::now().as_micros();
        let time = now.max(self.last_time[idx] + 1);
        self.last_time[idx] = time;
        let datagram = match self.target {
            Target::Dynip => {
                wire::seal_report(&self.key, &nonce, &self.names[idx], Time::from_micros(time))
            }
            Target::Echo => {
                let mut payload = vec![0u8; wire::ACK_LEN];
                payload[14..14 + wire::NONCE_LEN].copy_from_slice(&nonce);
                payload
            }
        };
        self.socket.send(&datagram).map(|_| ())
    }

    /// Reads one answer; its send time, in ns since `epoch`.
    fn receive_one(&mut self, buf: &mut [u8]) -> Option<u64> {
        let len = self.socket.recv(buf).ok()?;
        let nonce = match self.target {
            Target::Dynip => wire::open_ack(&self.key, &buf[..len]).ok()?.report_nonce,
            Target::Echo => buf.get(14..14 + wire::NONCE_LEN)?.try_into().ok()?,
        };
        Some(u64::from_be_bytes(nonce[..8].try_into().ok()?))
    }

    /// Closed loop: keep `window` in flight until `stop`.
    fn closed_loop(mut self, window: usize, stop: &AtomicBool) -> Tally {
        let mut tally = Tally::default();
        let mut buf = [0u8; 2048];
        let mut in_flight = 0usize;
        while !stop.load(Ordering::Relaxed) {
            while in_flight < window {
                if self.send_one().is_ok() {
                    tally.sent += 1;
                    in_flight += 1;
                } else {
                    break;
                }
            }
            match self.receive_one(&mut buf) {
                Some(_) => {
                    tally.answered += 1;
                    in_flight -= 1;
                }
                // A lost datagram: give its slot back after the read time-out.
                None => in_flight = in_flight.saturating_sub(window / 8 + 1),
            }
        }
        tally
    }

    /// Open loop: `rate` per second, paced in 1 ms ticks, answers read by a second socket
    /// handle; records every latency.
    fn open_loop(mut self, rate: f64, duration: Duration) -> Tally {
        let receiver = self.socket.try_clone().expect("clone of a UDP socket");
        let key = self.key.clone();
        let target = self.target;
        let epoch = self.epoch;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reader = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut reader = Generator {
                target,
                socket: receiver,
                key,
                names: Vec::new(),
                last_time: Vec::new(),
                next_host: 0,
                counter: 0,
                epoch,
            };
            let mut buf = [0u8; 2048];
            let mut tally = Tally::default();
            while !stop_reader.load(Ordering::Relaxed) {
                if let Some(sent) = reader.receive_one(&mut buf) {
                    let latency = epoch.elapsed().as_nanos() as u64 - sent;
                    tally.answered += 1;
                    tally
                        .latencies_us
                        .push((latency / 1000).min(u32::MAX as u64) as u32);
                }
            }
            tally
        });
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                if self.send_one().is_ok() {
                    sent += 1;
                }
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

/// Runs `threads` closed-loop generators against `server` for `seconds`; returns answers
/// per second, and datagrams sent per second.
fn closed_loop(target: Target, server: SocketAddr, options: &Options) -> (f64, f64) {
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
    (
        answered as f64 / elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
    )
}

/// A plain UDP echo on loopback, until `stop`.
fn spawn_echo(stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("echo socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let addr = socket.local_addr().expect("echo address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((len, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..len], peer);
            }
        }
    });
    addr
}

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dynip.conf");
    std::fs::write(
        &config,
        format!(
            "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nclient_log_path = {}\nkey = {}\n",
            dir.path().join("dynip.json").display(),
            bench_key().encode()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dynip"))
        .args(["server"])
        .arg(&config)
        .env("RUST_LOG", "warn,dynip::udp=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("dynip server");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening udp=").nth(1) {
                if let (Some(tx), Ok(addr)) = (tx.take(), addr.trim().parse::<SocketAddr>()) {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server's listening line");
    Server {
        child,
        addr,
        _dir: dir,
    }
}

fn percentile(sorted: &[u32], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    Duration::from_micros(u64::from(sorted[idx]))
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
    let (echo_rate, echo_sent) = closed_loop(Target::Echo, echo, &options);
    stop_echo.store(true, Ordering::Relaxed);

    let server = start_server();
    let (dynip_rate, dynip_sent) = closed_loop(Target::Dynip, server.addr, &options);

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
    let lost = tally.sent.saturating_sub(tally.answered);
    drop(server);

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
        "at half load ({half:.0}/s offered, open loop): p50 {:.2} ms, p99 {:.2} ms, {} of {} unanswered",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        lost,
        tally.sent
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
