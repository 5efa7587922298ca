//! A zone of numbered hosts for the DNS benches, served by dynip or a peer (NSD, Knot),
//! and `dnsperf` (Debian's package) run against it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::Server;

pub const ZONE: &str = "dyn.example.com";

/// The name of host `idx`: `host-000042`.
pub fn host(idx: usize) -> String {
    format!("host-{idx:06}")
}

/// Host `idx`'s address: `10.a.b.c`, from its index.
pub fn address(idx: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (idx >> 16) & 0xff,
        (idx >> 8) & 0xff,
        idx & 0xff
    )
}

/// A child process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `path` through a buffer with `write`.
///
/// # Panics
/// When the file cannot be written: a bench cannot go on.
pub fn write_file(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes the zone file of `hosts` numbered hosts, for a peer to load.
pub fn write_zone_file(path: &Path, hosts: usize) {
    write_file(path, |out| {
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
}

/// dynip (the release build) with `hosts` numbered hosts imported from an
/// original-format JSON file, DNS for [`ZONE`] on a free port without a rate limit, and
/// `extra` config lines; in `dir`.
pub fn start_dynip(dir: &Path, hosts: usize, extra: &str) -> Server {
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
         dns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\ndns_rate_limit = 0\n{extra}",
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

/// Waits until `server` answers the last of `hosts`' A record (the whole zone is loaded).
///
/// # Panics
/// When it does not within two minutes.
pub fn wait_answering(server: SocketAddr, hosts: usize, what: &str) {
    let name = format!("{}.{ZONE}", host(hosts - 1));
    let deadline = Instant::now() + Duration::from_secs(120);
    while dig_short(server, &name, "A") != address(hosts - 1) {
        assert!(Instant::now() < deadline, "{what} never answered {name}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The machine's load average, as `/proc/loadavg` has it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_owned())
}

/// Writes a query file asking for every one of `hosts` hosts' A record once, in a
/// scattered order: a stride of 7919 (a prime, so coprime to every table size that is
/// not a multiple of it) visits each index exactly once.
pub fn write_query_file(path: &Path, hosts: usize) {
    write_file(path, |out| {
        let stride = if hosts % 7919 == 0 { 1 } else { 7919 };
        for step in 0..hosts {
            writeln!(out, "{}.{ZONE} A", host(step * stride % hosts))?;
        }
        Ok(())
    });
}

/// One `dnsperf` run of queries: its rate and counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryRun {
    pub qps: f64,
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
}

/// `dnsperf -c CLIENTS -l SECONDS` against `server` with the query file `queries`, each
/// query with an OPT record (`-e`) when `edns`.
pub fn query_run(
    server: SocketAddr,
    queries: &Path,
    clients: u32,
    seconds: u32,
    edns: bool,
) -> QueryRun {
    let (clients, seconds) = (clients.to_string(), seconds.to_string());
    let mut args = vec!["-c", &clients, "-l", &seconds];
    if edns {
        args.push("-e");
    }
    let perf = Perf::run(server, queries, &args);
    QueryRun {
        qps: perf.figure("Queries per second:"),
        sent: perf.figure("Queries sent:") as u64,
        completed: perf.figure("Queries completed:") as u64,
        lost: perf.figure("Queries lost:") as u64,
    }
}

/// `dig +short NAME TYPE` against `server`: what it printed, trimmed.
pub fn dig_short(server: SocketAddr, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            "+short",
            "+time=1",
            "+tries=2",
            name,
            rtype,
        ])
        .output()
        .expect("dig (Debian package bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What one `dnsperf` run printed.
pub struct Perf(pub String);

impl Perf {
    /// Runs `dnsperf` against `server` on the input `file`, with `args` after.
    ///
    /// # Panics
    /// When dnsperf cannot be run.
    pub fn run(server: SocketAddr, file: &Path, args: &[&str]) -> Perf {
        let out = Command::new("dnsperf")
            .args([
                "-s",
                &server.ip().to_string(),
                "-p",
                &server.port().to_string(),
                "-d",
            ])
            .arg(file)
            .args(args)
            .output()
            .expect("dnsperf (Debian package dnsperf)");
        Perf(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The number after `label` (`"Queries per second:"`).
    ///
    /// # Panics
    /// When dnsperf printed no such line.
    pub fn figure(&self, label: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in dnsperf's output:\n{}", self.0))
    }
}
