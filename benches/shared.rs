//! Several servers on one PostgreSQL database against one server on SQLite, in the same
//! run: acknowledged signed reports per second, and how long after one server
//! acknowledges a report another server's DNS answers it.
//!
//! 1. One server on its SQLite store: the acks bench's closed loop (`--threads`
//!    generators, `--window` in flight each, `--hosts` names), acknowledged reports per
//!    second. The baseline.
//! 2. A throwaway PostgreSQL cluster (Debian's, default settings: `fsync` and
//!    `synchronous_commit` on), two servers on it; the same closed loop, its threads
//!    spread over the two servers (each server gets its own share of the hosts, as
//!    clients that each report to one server). Target: at least [`TARGET_RATIO`] of the
//!    baseline.
//! 3. Half the rate phase 2 reached, offered open loop to both servers, while a prober
//!    reports a new host to the first server every 20 ms and, from its acknowledgement,
//!    asks the second server's DNS every millisecond until the name answers. Target: p99
//!    under [`TARGET_P99`].
//!
//! `cargo bench --bench shared [-- --seconds S --threads T --window W --hosts H --probes
//! N]`. Run without `--bench` (as `cargo test --benches` does) it is a short smoke run.
//! Needs PostgreSQL (Debian's `postgresql`); only 127.0.0.1 is ever addressed.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dynip::model::record::Time;
use dynip::proto::wire;

mod common;
use common::postgres::Postgres;
use common::reports::{closed_loop, latency_tail, names, percentile, Generator, Target};
use common::{bench_key, cpu_time, cpu_time_named, Args, Server};

/// The targets.
const TARGET_RATIO: f64 = 0.5;
const TARGET_P99: Duration = Duration::from_secs(1);

const ZONE: &str = "dyn.example.com";

struct Options {
    seconds: f64,
    threads: usize,
    window: usize,
    hosts: usize,
    probes: usize,
    /// With more than 0: PostgreSQL counts its statements (`pg_stat_statements`), and
    /// the most costly this many are printed after the closed loop, with the journal's
    /// scans.
    statements: usize,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "threads", "window", "hosts", "probes", "statements"],
        "cargo bench --bench shared -- [--seconds S] [--threads T] [--window W] [--hosts H] [--probes N] [--statements N]",
    )?;
    Ok(Options {
        seconds: args.get("seconds", if args.smoke { 0.5 } else { 5.0 })?,
        threads: args.get("threads", 2)?,
        window: args.get("window", 128)?,
        hosts: args.get("hosts", 10_000)?,
        probes: args.get("probes", if args.smoke { 5 } else { 300 })?,
        statements: args.get("statements", 0)?,
        smoke: args.smoke,
    })
}

/// A server with the bench key and DNS for [`ZONE`], plus `extra` lines; its UDP and DNS
/// addresses.
fn start_server(dir: &tempfile::TempDir, extra: &str) -> (Server, SocketAddr) {
    let config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nclient_log_path = {}\nkey = {}\n\
         dns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n{extra}",
        dir.path().join("dynip.json").display(),
        bench_key().encode()
    );
    let mut server = Server::start(
        dir.path(),
        &config,
        "udp",
        "warn,dynip::edge=info",
        Duration::from_secs(30),
        false,
    );
    let dns = server
        .listening("dns", Duration::from_secs(10))
        .expect("the DNS face");
    (server, dns)
}

/// A DNS query for `NAME.ZONE` A, with id `id`.
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').chain(ZONE.split('.')) {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// Whether `answer` is the answer to query `id` and holds a record.
fn answers(answer: &[u8], id: u16) -> bool {
    answer.len() >= 12 && answer[..2] == id.to_be_bytes() && answer[6..8] != [0, 0]
}

/// The prober: `n` new hosts, one every 20 ms, each reported to `first` and, from its
/// acknowledgement, asked of `second`'s DNS every millisecond until it answers (5 s at
/// most). The times from acknowledgement to answer, in µs, sorted; and how many never
/// answered (or were never acknowledged).
fn probe(first: SocketAddr, second_dns: SocketAddr, n: usize) -> (Vec<u32>, usize) {
    let key = bench_key();
    let reporter = UdpSocket::bind("127.0.0.1:0").expect("a prober socket");
    reporter.connect(first).expect("connect");
    let asker = UdpSocket::bind("127.0.0.1:0").expect("a DNS socket");
    asker.connect(second_dns).expect("connect");
    asker
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("read timeout");
    let mut latencies = Vec::with_capacity(n);
    let mut missed = 0;
    let mut buf = [0u8; 512];
    for idx in 0..n {
        std::thread::sleep(Duration::from_millis(20));
        let name = format!("probe-{idx}");
        let mut nonce = [0u8; wire::NONCE_LEN];
        nonce[..8].copy_from_slice(&(idx as u64).to_be_bytes());
        let report = wire::seal_report(
            &key,
            &nonce,
            &dynip::model::name::Name::parse(&name).expect("a probe name"),
            Time::now(),
        );
        let _ = reporter.send(&report);
        reporter
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("read timeout");
        let acked = loop {
            match reporter.recv(&mut buf) {
                Ok(len) => match wire::open_ack(&key, &buf[..len]) {
                    Ok(ack) if ack.report_nonce == nonce => break Some(Instant::now()),
                    _ => continue,
                },
                Err(_) => break None,
            }
        };
        let Some(acked) = acked else {
            missed += 1;
            continue;
        };
        let id = idx as u16;
        let query = a_query(id, &name);
        let seen = loop {
            if acked.elapsed() > Duration::from_secs(5) {
                break None;
            }
            let _ = asker.send(&query);
            let asked = Instant::now();
            let mut found = false;
            while asked.elapsed() < Duration::from_millis(1) {
                match asker.recv(&mut buf) {
                    Ok(len) if answers(&buf[..len], id) => {
                        found = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if found {
                break Some(acked.elapsed());
            }
        };
        match seen {
            Some(after) => latencies.push(after.as_micros().min(u32::MAX as u128) as u32),
            None => missed += 1,
        }
    }
    latencies.sort_unstable();
    (latencies, missed)
}

/// PostgreSQL's most costly statements so far (calls, time in ms, rows), and how the
/// journal was scanned: where a run's database time went.
fn print_statements(pg: &Postgres, n: usize) {
    let out = pg.psql("dynip", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    assert!(out.code == 0, "pg_stat_statements: {}", out.stderr);
    let out = pg.psql(
        "dynip",
        &format!(
            "SELECT calls, round(total_exec_time::numeric), rows, \
             left(regexp_replace(query, '\\s+', ' ', 'g'), 80) \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT {n}"
        ),
    );
    println!("statements (calls | ms | rows | text):\n{}", out.stdout);
    let out = pg.psql(
        "dynip",
        "SELECT seq_scan, seq_tup_read, idx_scan, idx_tup_fetch FROM pg_stat_user_tables \
         WHERE relname = 'journal'",
    );
    println!(
        "journal: seq_scan | seq_tup_read | idx_scan | idx_tup_fetch: {}",
        out.stdout
    );
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !common::postgres::postgres_present("bench shared") {
        return ExitCode::SUCCESS;
    }
    println!(
        "several servers on one PostgreSQL: {} generator threads, window {} each, {} hosts, {:.1} s windows",
        options.threads, options.window, options.hosts, options.seconds
    );
    let run = |servers: &[SocketAddr]| {
        closed_loop(
            Target::Dynip,
            servers,
            options.threads,
            options.window,
            options.hosts,
            options.seconds,
        )
    };

    let sqlite_dir = tempfile::tempdir().expect("temp dir");
    let (sqlite, _) = start_server(&sqlite_dir, "");
    let sqlite_pid = sqlite.pid().to_string();
    let (generator_before, server_before) = (cpu_time("self"), cpu_time(&sqlite_pid));
    let sqlite_run = run(&[sqlite.addr]);
    let sqlite_cpu = (
        cpu_time(&sqlite_pid).saturating_sub(server_before),
        cpu_time("self").saturating_sub(generator_before),
    );
    drop(sqlite);

    let mut settings = vec!["synchronous_commit=on", "fsync=on"];
    if options.statements > 0 {
        settings.extend([
            "shared_preload_libraries=pg_stat_statements",
            "pg_stat_statements.track_utility=on",
        ]);
    }
    let pg = Postgres::start_with(&settings);
    pg.create_database("dynip");
    let url = pg.url("dynip");
    let (one_dir, two_dir) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let line = format!("database_url = {url}\n");
    let (one, _) = start_server(&one_dir, &line);
    let (two, two_dns) = start_server(&two_dir, &line);
    let (one_pid, two_pid) = (one.pid().to_string(), two.pid().to_string());
    let servers_cpu = || cpu_time(&one_pid) + cpu_time(&two_pid);
    let (generator_before, servers_before, database_before) =
        (cpu_time("self"), servers_cpu(), cpu_time_named("postgres"));
    let pg_run = run(&[one.addr, two.addr]);
    let pg_cpu = (
        servers_cpu().saturating_sub(servers_before),
        cpu_time("self").saturating_sub(generator_before),
        cpu_time_named("postgres").saturating_sub(database_before),
    );
    let ratio = pg_run.rate / sqlite_run.rate;
    if options.statements > 0 {
        print_statements(&pg, options.statements);
    }

    // Half load, open loop, over both servers, while the prober measures.
    let half = pg_run.rate / 2.0;
    let duration = Duration::from_secs_f64(options.seconds.max(options.probes as f64 * 0.03 + 1.0));
    let loaders: Vec<_> = [one.addr, two.addr]
        .into_iter()
        .enumerate()
        .map(|(idx, server)| {
            let share: Vec<_> = names(options.hosts)
                .into_iter()
                .skip(idx)
                .step_by(2)
                .collect();
            let generator = Generator::new(Target::Dynip, server, share, Instant::now())
                .expect("generator socket");
            std::thread::spawn(move || generator.open_loop(half / 2.0, duration))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (latencies, missed) = probe(one.addr, two_dns, options.probes);
    let tallies: Vec<_> = loaders
        .into_iter()
        .map(|loader| loader.join().expect("a loader"))
        .collect();
    let offered: u64 = tallies.iter().map(|tally| tally.sent).sum();
    let answered: u64 = tallies.iter().map(|tally| tally.answered).sum();
    let p99 = percentile(&latencies, 0.99);
    drop((one, two));

    println!();
    println!("{:<44} {:>12} {:>12}", "", "answered/s", "sent/s");
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "one server, SQLite (baseline)", sqlite_run.rate, sqlite_run.sent_rate
    );
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "two servers, one PostgreSQL", pg_run.rate, pg_run.sent_rate
    );
    println!("ratio two on PostgreSQL / one on SQLite: {ratio:.2}");
    let per = |cpu: Duration, answered: u64| cpu.as_secs_f64() * 1e6 / answered.max(1) as f64;
    println!(
        "CPU per acknowledged report: SQLite server {:.1} us (generator {:.1} us); two servers {:.1} us, PostgreSQL {:.1} us (generator {:.1} us)",
        per(sqlite_cpu.0, sqlite_run.answered),
        per(sqlite_cpu.1, sqlite_run.answered),
        per(pg_cpu.0, pg_run.answered),
        per(pg_cpu.2, pg_run.answered),
        per(pg_cpu.1, pg_run.answered),
    );
    println!(
        "acknowledged by one, answered by the other's DNS, at half load ({half:.0}/s offered; {answered} of {offered} acknowledged): {} probes, {missed} missed",
        latencies.len()
    );
    println!("  {}", latency_tail(&latencies));
    if options.smoke {
        return if sqlite_run.rate > 0.0 && pg_run.rate > 0.0 && !latencies.is_empty() {
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
        "  ratio >= {TARGET_RATIO}: {}",
        verdict(ratio >= TARGET_RATIO)
    );
    println!(
        "  p99 acknowledgement to the other server's answer < {} ms: {}",
        TARGET_P99.as_millis(),
        verdict(p99 < TARGET_P99 && missed == 0)
    );
    ExitCode::SUCCESS
}
