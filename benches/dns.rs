//! DNS queries per second: dynip against NSD serving the same zone, in the same run, both
//! measured with the real `dnsperf` (Debian's package).
//!
//! The zone holds `--hosts` hosts (`host-000000` ...), each with one IPv4 address. dynip
//! (release build) imports them from an original-format JSON file on first start; NSD
//! (`nsd -d`, a non-daemon child with its own temp config) loads the same names from a
//! zone file. The query file asks for every host's A record, in a shuffled order.
//! `dnsperf -c 10 -l SECONDS` runs against each in turn, `--rounds` times alternately
//! (NSD first), so that a change in the machine's load hits both. Printed: each run's
//! queries per second and lost queries, the best rate of each, and the ratio.
//!
//! `cargo bench --bench dns [-- --seconds S --hosts H --rounds R --clients C]`. Run
//! without `--bench` (as `cargo test --benches` does) it is a short smoke run with 1,000
//! hosts. Only 127.0.0.1 is ever addressed.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::ports::free_port;
use common::{Args, Server};

const ZONE: &str = "dyn.example.com";
/// The target: dynip's rate at least this many times NSD's.
const TARGET_RATIO: f64 = 1.0;

struct Options {
    seconds: u32,
    hosts: usize,
    rounds: usize,
    clients: u32,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "hosts", "rounds", "clients"],
        "cargo bench --bench dns -- [--seconds S] [--hosts H] [--rounds R] [--clients C]",
    )?;
    let smoke = args.smoke;
    Ok(Options {
        seconds: args.get("seconds", if smoke { 1 } else { 10 })?,
        hosts: args.get("hosts", if smoke { 1_000 } else { 100_000 })?,
        rounds: args.get("rounds", if smoke { 1 } else { 2 })?.max(1),
        clients: args.get("clients", 10)?,
        smoke,
    })
}

fn host(idx: usize) -> String {
    format!("host-{idx:06}")
}

fn address(idx: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (idx >> 16) & 0xff,
        (idx >> 8) & 0xff,
        idx & 0xff
    )
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_file(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// dynip with `hosts` imported from an original-format JSON file, DNS on a free port.
fn start_dynip(dir: &Path, hosts: usize) -> Server {
    let json = dir.join("dynip.json");
    write_file(&json, |out| {
        out.write_all(b"{")?;
        for idx in 0..hosts {
            let comma = if idx == 0 { "" } else { ", " };
            write!(
                out,
                "{comma}\"{}\": [\"{}\", \"2026-12-01 00:00:00.000000\"]",
                host(idx),
                address(idx)
            )?;
        }
        out.write_all(b"}")
    });
    let config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nclient_log_path = {}\n\
         dns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\ndns_rate_limit = 0\n",
        json.display()
    );
    // Importing 100,000 hosts takes a few seconds before the server listens.
    Server::start(
        dir,
        &config,
        "dns",
        "warn,dynip::edge::dns=info",
        Duration::from_secs(120),
        true,
    )
}

/// NSD serving the same hosts from a zone file, as a non-daemon child.
fn start_nsd(dir: &Path, hosts: usize) -> (Running, SocketAddr) {
    let state = dir.join("nsd");
    std::fs::create_dir_all(&state).expect("NSD's directory");
    let zonefile = state.join("zone");
    write_file(&zonefile, |out| {
        writeln!(out, "$ORIGIN {ZONE}.\n$TTL 60")?;
        writeln!(
            out,
            "@ SOA ns.{ZONE}. hostmaster.{ZONE}. 1 300 60 604800 60"
        )?;
        writeln!(out, "@ NS ns.{ZONE}.\nns A 127.0.0.1")?;
        for idx in 0..hosts {
            writeln!(out, "{} A {}", host(idx), address(idx))?;
        }
        Ok(())
    });
    let port = free_port();
    let s = state.display();
    let config = state.join("nsd.conf");
    std::fs::write(
        &config,
        format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n\
             \x20 zonesdir: \"{s}\"\n  database: \"\"\n  zonelistfile: \"{s}/zone.list\"\n\
             \x20 xfrdfile: \"{s}/xfrd.state\"\n  xfrdir: \"{s}\"\n  pidfile: \"{s}/nsd.pid\"\n\
             \x20 logfile: \"{s}/nsd.log\"\n  verbosity: 1\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: \"{ZONE}\"\n  zonefile: \"{}\"\n",
            zonefile.display()
        ),
    )
    .expect("nsd.conf");
    // main has checked with `peers_present`.
    let nsd = common::peers::which("nsd").expect("nsd on PATH");
    let child = Command::new(nsd)
        .args(["-d", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nsd (Debian package nsd)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (Running(child), addr)
}

/// Waits until `server` answers the last host's A record (the whole zone is loaded).
fn wait_answering(server: SocketAddr, hosts: usize, what: &str) {
    let name = format!("{}.{ZONE}", host(hosts - 1));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new("dig")
            .args([
                &format!("@{}", server.ip()),
                "-p",
                &server.port().to_string(),
                "+short",
                "+time=1",
                "+tries=1",
                &name,
                "A",
            ])
            .output()
            .expect("dig (Debian package bind9-dnsutils)");
        if String::from_utf8_lossy(&out.stdout).trim() == address(hosts - 1) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never answered {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One dnsperf run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    qps: f64,
    sent: u64,
    lost: u64,
}

fn dnsperf(server: SocketAddr, queries: &Path, options: &Options) -> Run {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
            "-d",
        ])
        .arg(queries)
        .args([
            "-c",
            &options.clients.to_string(),
            "-l",
            &options.seconds.to_string(),
        ])
        .output()
        .expect("dnsperf (Debian package dnsperf)");
    let text = String::from_utf8_lossy(&out.stdout);
    let figure = |label: &str| -> f64 {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in dnsperf's output:\n{text}"))
    };
    Run {
        qps: figure("Queries per second:"),
        sent: figure("Queries sent:") as u64,
        lost: figure("Queries lost:") as u64,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_owned())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !common::peers::peers_present("benches/dns.rs", &["nsd", "dnsperf", "dig"]) {
        return ExitCode::SUCCESS;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "dns: {} hosts, dnsperf -c {} -l {}, {} round(s), load average {}",
        options.hosts,
        options.clients,
        options.seconds,
        options.rounds,
        load_average()
    );
    let queries: PathBuf = dir.path().join("queries");
    // Every host once, in a scattered order: a stride of 7919 (a prime, so coprime to
    // every table size that is not a multiple of it) visits each index exactly once.
    write_file(&queries, |out| {
        let n = options.hosts;
        let stride = if n % 7919 == 0 { 1 } else { 7919 };
        for step in 0..n {
            writeln!(out, "{}.{ZONE} A", host(step * stride % n))?;
        }
        Ok(())
    });

    let started = Instant::now();
    let (nsd, nsd_addr) = start_nsd(dir.path(), options.hosts);
    let dynip = start_dynip(dir.path(), options.hosts);
    let dynip_addr = dynip.addr;
    wait_answering(nsd_addr, options.hosts, "nsd");
    wait_answering(dynip_addr, options.hosts, "dynip");
    println!("both loaded in {:.1} s", started.elapsed().as_secs_f64());

    let mut nsd_runs = Vec::new();
    let mut dynip_runs = Vec::new();
    for round in 1..=options.rounds {
        let nsd_run = dnsperf(nsd_addr, &queries, &options);
        println!(
            "round {round}: nsd   {:>10.0} queries/s, {} sent, {} lost (load {})",
            nsd_run.qps,
            nsd_run.sent,
            nsd_run.lost,
            load_average()
        );
        let dynip_run = dnsperf(dynip_addr, &queries, &options);
        println!(
            "round {round}: dynip {:>10.0} queries/s, {} sent, {} lost (load {})",
            dynip_run.qps,
            dynip_run.sent,
            dynip_run.lost,
            load_average()
        );
        nsd_runs.push(nsd_run);
        dynip_runs.push(dynip_run);
    }
    drop(nsd);
    drop(dynip);

    let best = |runs: &[Run]| runs.iter().map(|run| run.qps).fold(0.0, f64::max);
    let lost = |runs: &[Run]| runs.iter().map(|run| run.lost).sum::<u64>();
    let (nsd_best, dynip_best) = (best(&nsd_runs), best(&dynip_runs));
    let ratio = dynip_best / nsd_best;
    println!();
    println!(
        "nsd:   {nsd_best:>10.0} queries/s (best of {}), {} lost",
        nsd_runs.len(),
        lost(&nsd_runs)
    );
    println!(
        "dynip: {dynip_best:>10.0} queries/s (best of {}), {} lost",
        dynip_runs.len(),
        lost(&dynip_runs)
    );
    println!("ratio dynip / nsd: {ratio:.2} (target >= {TARGET_RATIO:.1}, no lost answers)");
    if options.smoke {
        // A smoke run only shows the benchmark works: both answered.
        if nsd_best > 0.0 && dynip_best > 0.0 {
            return ExitCode::SUCCESS;
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
