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
//! With `--edns 1`, every query carries an OPT record (`dnsperf -e`), as resolvers send
//! them.
//!
//! `cargo bench --bench dns [-- --seconds S --hosts H --rounds R --clients C --edns 1]`. Run
//! without `--bench` (as `cargo test --benches` does) it is a short smoke run with 1,000
//! hosts. Only 127.0.0.1 is ever addressed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

mod common;
use common::ports::free_port;
use common::zone::{
    load_average, query_run, start_dynip, wait_answering, write_query_file, write_zone_file,
    QueryRun, Running, ZONE,
};
use common::Args;

/// The target: dynip's rate at least this many times NSD's.
const TARGET_RATIO: f64 = 1.0;

struct Options {
    seconds: u32,
    hosts: usize,
    rounds: usize,
    clients: u32,
    /// Queries with an OPT record (`dnsperf -e`).
    edns: bool,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "hosts", "rounds", "clients", "edns"],
        "cargo bench --bench dns -- [--seconds S] [--hosts H] [--rounds R] [--clients C] \
         [--edns 0|1]",
    )?;
    let smoke = args.smoke;
    Ok(Options {
        seconds: args.get("seconds", if smoke { 1 } else { 10 })?,
        hosts: args.get("hosts", if smoke { 1_000 } else { 100_000 })?,
        rounds: args.get("rounds", if smoke { 1 } else { 2 })?.max(1),
        clients: args.get("clients", 10)?,
        edns: args.get::<u32>("edns", 0)? == 1,
        smoke,
    })
}

/// NSD serving the same hosts from a zone file, as a non-daemon child.
fn start_nsd(dir: &Path, hosts: usize) -> (Running, SocketAddr) {
    let state = dir.join("nsd");
    std::fs::create_dir_all(&state).expect("NSD's directory");
    let zonefile = state.join("zone");
    write_zone_file(&zonefile, hosts);
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
        "dns: {} hosts, dnsperf -c {} -l {}{}, {} round(s), load average {}",
        options.hosts,
        options.clients,
        options.seconds,
        if options.edns { " -e" } else { "" },
        options.rounds,
        load_average()
    );
    let queries: PathBuf = dir.path().join("queries");
    write_query_file(&queries, options.hosts);

    let started = Instant::now();
    let (nsd, nsd_addr) = start_nsd(dir.path(), options.hosts);
    let dynip = start_dynip(dir.path(), options.hosts, "");
    let dynip_addr = dynip.addr;
    wait_answering(nsd_addr, options.hosts, "nsd");
    wait_answering(dynip_addr, options.hosts, "dynip");
    println!("both loaded in {:.1} s", started.elapsed().as_secs_f64());

    let mut nsd_runs = Vec::new();
    let mut dynip_runs = Vec::new();
    for round in 1..=options.rounds {
        let nsd_run = query_run(
            nsd_addr,
            &queries,
            options.clients,
            options.seconds,
            options.edns,
        );
        println!(
            "round {round}: nsd   {:>10.0} queries/s, {} sent, {} lost (load {})",
            nsd_run.qps,
            nsd_run.sent,
            nsd_run.lost,
            load_average()
        );
        let dynip_run = query_run(
            dynip_addr,
            &queries,
            options.clients,
            options.seconds,
            options.edns,
        );
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

    let best = |runs: &[QueryRun]| runs.iter().map(|run| run.qps).fold(0.0, f64::max);
    let lost = |runs: &[QueryRun]| runs.iter().map(|run| run.lost).sum::<u64>();
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
