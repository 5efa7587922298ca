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
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::reports::{closed_loop, latency_tail, names, percentile, Generator, Slots, Target};
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
    let echo_run = closed_loop(
        Target::Echo,
        &[echo],
        options.threads,
        options.window,
        options.hosts,
        options.seconds,
    );
    // The echo thread is in this process: the CPU is generator and echo together.
    let echo_cpu = cpu_time("self").saturating_sub(before);
    stop_echo.store(true, Ordering::Relaxed);
    let (echo_rate, echo_sent) = (echo_run.rate, echo_run.sent_rate);

    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(&dir);
    let server_pid = server.pid().to_string();
    let (generator_before, server_before) = (cpu_time("self"), cpu_time(&server_pid));
    let dynip_run = closed_loop(
        Target::Dynip,
        &[server.addr],
        options.threads,
        options.window,
        options.hosts,
        options.seconds,
    );
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
