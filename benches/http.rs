//! dyndns2 updates per second over keep-alive connections, against `/healthz` on the same
//! server in the same run.
//!
//! The load is the same for both: `--threads` threads, each holding `--connections`
//! keep-alive HTTP/1.1 connections with one request in flight on each (a closed loop: a
//! connection sends its next request when the answer to the last one has come; no
//! pipelining). Against `/nic/update` a request carries Basic credentials (the shared
//! key) and a new address for one of `--hosts` hosts, so every update is a change of
//! address and a history row; the server (release build) answers `good` only after the
//! commit. Against `/healthz` the same connections send requests of the same size,
//! answered without touching the writer: what HTTP itself costs on this machine.
//!
//! Two generators make that load (`--generator`):
//! - `builtin` (the default): blocking threads in this file, which read and check every
//!   answer's body (`good ADDR`), and open the connections (and with TLS, shake hands)
//!   once, before the first window.
//! - `wrk` (Debian's package), driven by `benches/http_wrk.lua`: an independent client,
//!   C on epoll, that also measures latency. It does not read the bodies; the bench
//!   checks each update window against the server's `/metrics` instead: no error and no
//!   status other than 2xx, no report refused, and at least as many reports committed as
//!   wrk counted answers (and no more than the requests it could have had in flight
//!   besides). It opens its connections at the start of each window.
//!
//! `cargo bench --bench http [-- --generator builtin|wrk --seconds S --threads T
//! --connections C --hosts H --rounds R --tls true]`: S seconds against each target, in R
//! windows that alternate between the two (with wrk, whole seconds each); with
//! `--tls true`, over TLS (a certificate generated for the run). Run without `--bench`
//! (as `cargo test --benches` does) it is a short smoke run of each generator. Bounded
//! in time and count; only 127.0.0.1 is ever addressed.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls;

mod common;
use common::load::{
    basic_credentials, children_cpu, closed_loop, http_reports, read_metrics, Load, Tally, Target,
    Worker,
};
use common::{bench_key, cpu_time, Args, Server};

/// The targets.
const TARGET_RATE: f64 = 50_000.0;
const TARGET_RATIO: f64 = 0.5;

/// What makes the load.
#[derive(Clone, Copy, PartialEq)]
enum Generator {
    Wrk,
    Builtin,
}

impl std::str::FromStr for Generator {
    type Err = String;

    fn from_str(text: &str) -> Result<Generator, String> {
        match text {
            "wrk" => Ok(Generator::Wrk),
            "builtin" => Ok(Generator::Builtin),
            _ => Err("wrk or builtin".to_string()),
        }
    }
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Generator::Wrk => "wrk",
            Generator::Builtin => "builtin",
        }
    }
}

struct Options {
    generator: Generator,
    seconds: f64,
    threads: usize,
    connections: usize,
    hosts: usize,
    rounds: usize,
    tls: bool,
    smoke: bool,
}

impl Options {
    fn load(&self) -> Load {
        Load {
            threads: self.threads,
            connections: self.connections,
            hosts: self.hosts,
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &[
            "generator",
            "seconds",
            "threads",
            "connections",
            "hosts",
            "rounds",
            "tls",
        ],
        "cargo bench --bench http -- [--generator builtin|wrk] [--seconds S] [--threads T] \
         [--connections C] [--hosts H] [--rounds R] [--tls true]",
    )?;
    Ok(Options {
        generator: args.get("generator", Generator::Builtin)?,
        seconds: args.get("seconds", if args.smoke { 1.0 } else { 10.0 })?,
        threads: args.get("threads", 2)?,
        connections: args.get("connections", 128)?,
        hosts: args.get("hosts", 10_000)?,
        rounds: args.get("rounds", if args.smoke { 1 } else { 5 })?,
        tls: args.get("tls", false)?,
        smoke: args.smoke,
    })
}

/// The wrk script and what carries from one of its windows to the next: the first
/// request counter not yet used, so that every update is still a new address.
struct Wrk {
    script: std::path::PathBuf,
    url: String,
    next: u64,
}

impl Wrk {
    fn new(dir: &tempfile::TempDir, server: &Server, tls: bool) -> Wrk {
        let script = dir.path().join("http_wrk.lua");
        std::fs::write(&script, include_str!("http_wrk.lua")).expect("write the wrk script");
        let scheme = if tls { "https" } else { "http" };
        Wrk {
            script,
            url: format!("{scheme}://{}", server.addr),
            next: 0,
        }
    }

    /// Runs wrk against `target` for `seconds` (whole, at least 1), adding to `tally`
    /// (with the window's latencies). Checks an update window against the server's counters.
    ///
    /// # Panics
    /// When wrk is missing or fails, or its answers and the server's counters disagree.
    fn window(
        &mut self,
        target: Target,
        server: &Server,
        tls: Option<&Arc<rustls::ClientConfig>>,
        options: &Options,
        seconds: u64,
        tally: &mut Tally,
    ) {
        let auth = basic_credentials();
        let path = match target {
            Target::Update => "/nic/update",
            Target::Healthz => "/healthz",
        };
        let n_connections = options.threads * options.connections;
        let (accepted_before, refused_before) = http_reports(&read_metrics(server.addr, tls));
        let pid = server.pid().to_string();
        let cpu_before = cpu_time(&pid);
        let wrk_before = children_cpu();
        let out = std::process::Command::new("wrk")
            .arg(format!("--threads={}", options.threads))
            .arg(format!("--connections={n_connections}"))
            .arg(format!("--duration={seconds}s"))
            .arg("--timeout=30s")
            .arg(format!("--script={}", self.script.display()))
            .arg(&self.url)
            .arg("--")
            .args([
                self.next.to_string(),
                options.threads.to_string(),
                options.hosts.to_string(),
                path.to_string(),
                auth,
            ])
            .output()
            .expect("wrk (Debian package wrk; or run with --generator builtin)");
        tally.server_cpu += cpu_time(&pid) - cpu_before;
        tally.generator_cpu += children_cpu() - wrk_before;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "wrk failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix("dynip-bench "))
            .unwrap_or_else(|| panic!("no dynip-bench line in wrk's output:\n{text}"));
        let figure = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in wrk's line: {line}"))
        };
        let n_errors: u64 = ["connect", "read", "write", "status", "timeout"]
            .iter()
            .map(|name| figure(name))
            .sum();
        assert_eq!(
            n_errors, 0,
            "wrk saw errors or answers other than 2xx: {line}"
        );
        let n_answered = figure("answered");
        tally.n_answered += n_answered;
        tally.elapsed += Duration::from_micros(figure("duration_us"));
        tally.latencies.push((figure("p50_us"), figure("p99_us")));
        self.next = figure("next");
        if target == Target::Update {
            // Every answer wrk counted was committed first; those still in flight when
            // it stopped may have been committed too.
            let (accepted, refused) = http_reports(&read_metrics(server.addr, tls));
            let n_accepted = accepted - accepted_before;
            assert_eq!(refused, refused_before, "the server refused reports");
            assert!(
                (n_answered..=n_answered + n_connections as u64).contains(&n_accepted),
                "wrk counted {n_answered} answers, the server committed {n_accepted} reports"
            );
        }
    }
}

/// The real server with `http_listen`, `key` set, store in `dir`; with `tls`, over TLS
/// with a certificate generated here, and the client's config that trusts it.
fn start_server(dir: &tempfile::TempDir, tls: bool) -> (Server, Option<Arc<rustls::ClientConfig>>) {
    let mut config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nhttp_listen = 127.0.0.1:0\n\
         client_log_path = {}\nkey = {}\n",
        dir.path().join("dynip.json").display(),
        bench_key().encode()
    );
    let client = tls.then(|| {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("generate a certificate");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("cert.pem");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.key_pair.serialize_pem(),
        )
        .expect("key.pem");
        config.push_str("tls_cert = cert.pem\ntls_key = key.pem\n");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(certified.cert.der().to_vec()))
            .expect("trust the certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(client)
    });
    let server = Server::start(
        dir.path(),
        &config,
        if tls { "https" } else { "http" },
        "warn,dynip::edge::http=info",
        Duration::from_secs(30),
        false,
    );
    (server, client)
}

/// What one run measured.
struct Figures {
    healthz: f64,
    updates: f64,
}

/// Starts a server and runs the alternating windows with `generator`; prints the figures.
fn run(options: &Options, generator: Generator) -> Figures {
    let rounds = options.rounds.max(1);
    // wrk takes whole seconds.
    let window = match generator {
        Generator::Wrk => (options.seconds / rounds as f64).round().max(1.0),
        Generator::Builtin => options.seconds / rounds as f64,
    };
    println!(
        "dyndns2 over keep-alive{}, generator {}: {} threads, {} connections each, {} hosts, \
         {} windows of {window} s per target, alternating",
        if options.tls { " and TLS" } else { "" },
        generator.name(),
        options.threads,
        options.connections,
        options.hosts,
        rounds,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, tls) = start_server(&dir, options.tls);
    let (mut healthz, mut updates) = (Tally::default(), Tally::default());
    // Windows against the two targets alternate, so that a change in the machine's speed
    // during the run (a shared VM's neighbours) weighs on both alike.
    match generator {
        Generator::Wrk => {
            let mut wrk = Wrk::new(&dir, &server, options.tls);
            for _ in 0..rounds {
                for (target, tally) in [
                    (Target::Healthz, &mut healthz),
                    (Target::Update, &mut updates),
                ] {
                    wrk.window(target, &server, tls.as_ref(), options, window as u64, tally);
                }
            }
        }
        Generator::Builtin => {
            let mut workers = Worker::open_all(server.addr, tls.as_ref(), &options.load());
            for _ in 0..rounds {
                for (target, tally) in [
                    (Target::Healthz, &mut healthz),
                    (Target::Update, &mut updates),
                ] {
                    closed_loop(
                        target,
                        &server,
                        &options.load(),
                        window,
                        &mut workers,
                        tally,
                    );
                }
            }
        }
    }
    let metrics = read_metrics(server.addr, tls.as_ref());
    drop(server);
    let n_commits = metrics.sum("dynip_commit_batch_size_count ");
    let n_committed = metrics.sum("dynip_commit_batch_size_sum ");
    let cpu = |tally: &Tally| {
        (
            tally.cpu_per_answer() * 1e6,
            tally.generator_cpu_per_answer() * 1e6,
        )
    };
    let ((healthz_cpu, healthz_own), (updates_cpu, updates_own)) = (cpu(&healthz), cpu(&updates));
    let figures = Figures {
        healthz: healthz.rate(),
        updates: updates.rate(),
    };
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "", "answers/s", "server CPU", "generator CPU"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "", "", "µs/answer", "µs/answer"
    );
    println!(
        "{:<44} {:>12.0} {:>12.1} {:>12.1}",
        "GET /healthz (baseline)", figures.healthz, healthz_cpu, healthz_own
    );
    println!(
        "{:<44} {:>12.0} {:>12.1} {:>12.1}",
        "GET /nic/update, committed before `good`", figures.updates, updates_cpu, updates_own
    );
    println!(
        "ratio updates / healthz: {:.2}",
        figures.updates / figures.healthz
    );
    println!(
        "commits: {n_commits}, {:.1} reports each on average",
        n_committed / n_commits.max(1.0)
    );
    let latencies = &updates.latencies;
    if !latencies.is_empty() {
        let ms = |us: u64| us as f64 / 1000.0;
        let (p50_low, p50_high) = min_max(latencies.iter().map(|(p50, _)| *p50));
        let (p99_low, p99_high) = min_max(latencies.iter().map(|(_, p99)| *p99));
        println!(
            "update latency (wrk, per window): median {:.1}–{:.1} ms, 99th percentile {:.1}–{:.1} ms",
            ms(p50_low),
            ms(p50_high),
            ms(p99_low),
            ms(p99_high)
        );
    }
    figures
}

fn min_max(values: impl Iterator<Item = u64>) -> (u64, u64) {
    values.fold((u64::MAX, 0), |(low, high), value| {
        (low.min(value), high.max(value))
    })
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if options.smoke {
        // Both generators, so that neither rots.
        for generator in [Generator::Builtin, Generator::Wrk] {
            if matches!(generator, Generator::Wrk)
                && !common::peers::peers_present("benches/http.rs (wrk)", &["wrk"])
            {
                continue;
            }
            let figures = run(&options, generator);
            if figures.updates <= 0.0 || figures.healthz <= 0.0 {
                eprintln!("smoke run: nothing was answered");
                return ExitCode::FAILURE;
            }
            println!();
        }
        return ExitCode::SUCCESS;
    }
    let figures = run(&options, options.generator);
    let ratio = figures.updates / figures.healthz;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!("targets:");
    println!(
        "  >= {TARGET_RATE:.0} updates/s: {}",
        verdict(figures.updates >= TARGET_RATE)
    );
    println!(
        "  ratio to /healthz >= {TARGET_RATIO}: {}",
        verdict(ratio >= TARGET_RATIO)
    );
    ExitCode::SUCCESS
}
