//! Notifications under load: dyndns2 updates per second, each a new address (so each an
//! event), on a server with a webhook sink to a receiver on loopback, against the same
//! load on a server without sinks, in the same run.
//!
//! The load is `benches/common/load.rs`'s closed loop (as `http.rs`'s): `--threads`
//! threads of `--connections` keep-alive connections, one update in flight on each,
//! `good` only after the commit. The windows alternate between the two servers. The
//! receiver (in this process) answers 200 to every POST and counts the events each
//! message stands for (`count`, or 1). After the last window the bench waits for the
//! sink's outbox to drain and checks that the receiver heard every event the server
//! counted.
//!
//! `cargo bench --bench notify [-- --seconds S --threads T --connections C --hosts H
//! --rounds R --coalesce DURATION]`: S seconds against each server, in R windows each;
//! `--coalesce` is the sink's (default `2s`; `0` sends each event alone). Run without
//! `--bench` (as `cargo test --benches` does) it is a short smoke run. Only 127.0.0.1 is
//! ever addressed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::load::{closed_loop, read_metrics, Load, Tally, Target, Worker};
use common::{bench_key, Args, Metrics, Server};

/// The targets: the rate with a sink against the rate without, and how soon
/// after the load the outbox is empty.
const TARGET_RATIO: f64 = 0.8;
const TARGET_DRAIN: Duration = Duration::from_secs(5);

struct Options {
    seconds: f64,
    load: Load,
    rounds: usize,
    coalesce: String,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &[
            "seconds",
            "threads",
            "connections",
            "hosts",
            "rounds",
            "coalesce",
        ],
        "cargo bench --bench notify -- [--seconds S] [--threads T] [--connections C] \
         [--hosts H] [--rounds R] [--coalesce DURATION]",
    )?;
    Ok(Options {
        seconds: args.get("seconds", if args.smoke { 1.0 } else { 10.0 })?,
        load: Load {
            threads: args.get("threads", 2)?,
            connections: args.get("connections", 64)?,
            hosts: args.get("hosts", 10_000)?,
        },
        rounds: args.get("rounds", if args.smoke { 1 } else { 5 })?,
        coalesce: args.get("coalesce", "2s".to_string())?,
        smoke: args.smoke,
    })
}

/// What the receiver heard.
#[derive(Default)]
struct Heard {
    messages: AtomicU64,
    /// The events the messages stand for.
    events: AtomicU64,
}

/// A webhook receiver on a loopback port: a thread per connection, 200 to every POST.
fn start_receiver() -> (SocketAddr, Arc<Heard>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let addr = listener.local_addr().unwrap();
    let heard = Arc::new(Heard::default());
    let shared = Arc::clone(&heard);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let heard = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream, &heard));
        }
    });
    (addr, heard)
}

fn serve(stream: TcpStream, heard: &Heard) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        let mut length = 0;
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body);
        let count = body
            .split_once("\"count\":")
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(1);
        heard.messages.fetch_add(1, Ordering::Relaxed);
        heard.events.fetch_add(count, Ordering::Relaxed);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A server with `http_listen` and the bench key, and `sink` (a section, or nothing).
fn start_server(dir: &tempfile::TempDir, sink: &str) -> Server {
    let config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nhttp_listen = 127.0.0.1:0\n\
         client_log_path = {}\nkey = {}\n{sink}",
        dir.path().join("dynip.json").display(),
        bench_key().encode()
    );
    Server::start(
        dir.path(),
        &config,
        "http",
        "warn,dynip::edge::http=info",
        Duration::from_secs(30),
        false,
    )
}

fn sink_metric(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .value(&format!("{name}{{sink=\"hook\"}}"))
        .unwrap_or(0.0) as u64
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rounds = options.rounds.max(1);
    let window = options.seconds / rounds as f64;
    let load = options.load;
    println!(
        "dyndns2 updates, each a new address, over keep-alive: {} threads, {} connections \
         each, {} hosts, {rounds} windows of {window} s per server, alternating; the sink's \
         coalesce = {}",
        load.threads, load.connections, load.hosts, options.coalesce
    );
    let (receiver, heard) = start_receiver();
    let (plain_dir, sink_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plain = start_server(&plain_dir, "");
    let sink = format!(
        "[DynIP:Notify:hook]\nkind = webhook\nurl = http://{receiver}/hook\nsecret = bench\n\
         coalesce = {}\n",
        options.coalesce
    );
    let notified = start_server(&sink_dir, &sink);
    let mut plain_workers = Worker::open_all(plain.addr, None, &load);
    let mut notified_workers = Worker::open_all(notified.addr, None, &load);
    let (mut plain_tally, mut notified_tally) = (Tally::default(), Tally::default());
    for _ in 0..rounds {
        // Each server's connections sat idle through the other's window, which may be
        // longer than the server keeps an idle connection: each window opens its own.
        Worker::reconnect(&mut plain_workers, plain.addr, &load);
        closed_loop(
            Target::Update,
            &plain,
            &load,
            window,
            &mut plain_workers,
            &mut plain_tally,
        );
        Worker::reconnect(&mut notified_workers, notified.addr, &load);
        closed_loop(
            Target::Update,
            &notified,
            &load,
            window,
            &mut notified_workers,
            &mut notified_tally,
        );
    }
    // The load has stopped: how long until every event is out.
    let stopped = Instant::now();
    let (drained, metrics) = loop {
        let metrics = read_metrics(notified.addr, None);
        let n_events = sink_metric(&metrics, "dynip_notify_events_total");
        let pending = sink_metric(&metrics, "dynip_notify_outbox_events");
        if pending == 0 && heard.events.load(Ordering::Relaxed) >= n_events {
            break (Some(stopped.elapsed()), metrics);
        }
        if stopped.elapsed() > Duration::from_secs(120) {
            break (None, metrics);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let n_events = sink_metric(&metrics, "dynip_notify_events_total");
    let n_heard = heard.events.load(Ordering::Relaxed);
    let n_messages = heard.messages.load(Ordering::Relaxed);
    let retries = sink_metric(&metrics, "dynip_notify_retries_total");
    let failed = sink_metric(&metrics, "dynip_notify_failed_total")
        + sink_metric(&metrics, "dynip_notify_dropped_total");
    let ratio = notified_tally.rate() / plain_tally.rate();
    println!();
    println!("{:<40} {:>12} {:>12}", "", "updates/s", "server CPU");
    println!("{:<40} {:>12} {:>12}", "", "", "µs/update");
    for (name, tally) in [
        ("no sink (baseline)", &plain_tally),
        ("a webhook sink on loopback", &notified_tally),
    ] {
        println!(
            "{name:<40} {:>12.0} {:>12.1}",
            tally.rate(),
            tally.cpu_per_answer() * 1e6
        );
    }
    println!("ratio with sink / without: {ratio:.2}");
    println!(
        "events: {n_events} counted by the server, {n_heard} heard by the receiver in \
         {n_messages} messages ({retries} retries, {failed} failed or dropped)"
    );
    match drained {
        Some(took) => println!(
            "outbox drained {:.2} s after the load stopped",
            took.as_secs_f64()
        ),
        None => println!("outbox NOT drained within 120 s of the load stopping"),
    }
    drop(notified);
    drop(plain);
    let every = n_heard >= n_events && n_events > 0 && failed == 0;
    if options.smoke {
        return if every && drained.is_some() {
            ExitCode::SUCCESS
        } else {
            eprintln!("smoke run: not every event was delivered");
            ExitCode::FAILURE
        };
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!("targets:");
    println!(
        "  ratio with a sink >= {TARGET_RATIO}: {}",
        verdict(ratio >= TARGET_RATIO)
    );
    println!("  every event delivered: {}", verdict(every));
    println!(
        "  outbox drained within {} s: {}",
        TARGET_DRAIN.as_secs(),
        verdict(drained.is_some_and(|took| took <= TARGET_DRAIN))
    );
    ExitCode::SUCCESS
}
