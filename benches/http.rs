//! dyndns2 updates per second over keep-alive connections, against `/healthz` on the same
//! server in the same run.
//!
//! The load generator is the same for both: `--threads` threads, each holding
//! `--connections` keep-alive HTTP/1.1 connections with one request in flight on each (a
//! closed loop: a connection sends its next request when the answer to the last one has
//! come; no pipelining). Each thread reads its connections' answers in turn and sends
//! each connection its next request as soon as its answer is read. Against `/nic/update` a request carries Basic credentials
//! (the shared key) and a new address for one of `--hosts` hosts, so every update is a
//! change of address and a history row; the server (release build) answers `good` only
//! after the commit, and the generator checks every answer. Against `/healthz` the same
//! connections send requests of the same size, answered without touching the writer:
//! what HTTP itself costs on this machine with this generator.
//!
//! `cargo bench --bench http [-- --seconds S --threads T --connections C --hosts H --rounds R
//! --tls true]`: S seconds against each target, in R windows that alternate between the
//! two; with `--tls true`, over TLS (a certificate generated for the run). The
//! connections are opened (and with TLS, shaken hands) once, before the first window.
//! Run without `--bench` (as `cargo test --benches` does) it is a short smoke run.
//! Bounded in time and count; only 127.0.0.1 is ever addressed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

mod common;
use common::{bench_key, cpu_time, Args, Server};

/// The targets.
const TARGET_RATE: f64 = 50_000.0;
const TARGET_RATIO: f64 = 0.5;

struct Options {
    seconds: f64,
    threads: usize,
    connections: usize,
    hosts: usize,
    rounds: usize,
    tls: bool,
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "threads", "connections", "hosts", "rounds", "tls"],
        "cargo bench --bench http -- [--seconds S] [--threads T] [--connections C] [--hosts H] [--rounds R] [--tls true]",
    )?;
    Ok(Options {
        seconds: args.get("seconds", if args.smoke { 0.5 } else { 10.0 })?,
        threads: args.get("threads", 2)?,
        connections: args.get("connections", 128)?,
        hosts: args.get("hosts", 10_000)?,
        rounds: args.get("rounds", if args.smoke { 1 } else { 5 })?,
        tls: args.get("tls", false)?,
        smoke: args.smoke,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Healthz,
    Update,
}

/// A connection's bytes: plain TCP, or TLS over it.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects, over TLS with `tls` (the handshake done before this returns).
    fn open(
        server: SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Connection> {
        let tcp = TcpStream::connect(server)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let session = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(std::io::Error::other)?;
                let mut stream = rustls::StreamOwned::new(session, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Box::new(stream)
            }
        };
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Reads one whole response (head and a `content-length` body); returns its body.
    fn read_response(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    return Err(std::io::Error::other(format!("not 200: {head}")));
                }
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .ok_or_else(|| std::io::Error::other("no content-length"))?;
                let total = end + 4 + length;
                if self.buf.len() >= total {
                    let body = self.buf[end + 4..total].to_vec();
                    self.buf.drain(..total);
                    return Ok(body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n_read = self.stream.read(&mut chunk)?;
            if n_read == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n_read]);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// What the windows against one target added up to.
#[derive(Default)]
struct Tally {
    n_answered: u64,
    elapsed: Duration,
    server_cpu: Duration,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.n_answered as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_answer(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.n_answered.max(1) as f64
    }
}

/// What one generator thread carries from window to window: its connections, opened
/// (and for TLS, shaken hands) once before the first window, and its request counter, so
/// that every update is still a new address for its host.
struct Generator {
    connections: Vec<Connection>,
    counter: u64,
}

/// Runs the closed loop against `target` for `seconds` on `generators`' connections,
/// adding to `tally`.
fn closed_loop(
    target: Target,
    server: &Server,
    options: &Options,
    seconds: f64,
    generators: &mut Vec<Generator>,
    tally: &mut Tally,
) {
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("router:{}", bench_key().encode()));
    let pid = server.pid().to_string();
    let cpu_before = cpu_time(&pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = std::mem::take(generators)
        .into_iter()
        .map(|generator| {
            let auth = auth.clone();
            let (n_threads, n_hosts) = (options.threads, options.hosts);
            std::thread::spawn(move || -> (u64, Generator) {
                let Generator {
                    mut connections,
                    mut counter,
                } = generator;
                let n_connections = connections.len();
                let mut n_answered = 0u64;
                let mut request = Vec::with_capacity(512);
                let mut expected: Vec<String> = vec![String::new(); n_connections];
                let mut send = |connection: &mut Connection, expected: &mut String| {
                    request.clear();
                    let host = counter as usize % n_hosts;
                    // A new address every time: from 198.18.0.0/15 (RFC 2544, for benchmarks).
                    let addr = std::net::Ipv4Addr::from(0xc612_0000 | (counter as u32 & 0x1_ffff));
                    counter += n_threads as u64;
                    let path = match target {
                        Target::Update => format!("/nic/update?hostname=host-{host}&myip={addr}"),
                        // Same length class as the update's, so parsing costs the same.
                        Target::Healthz => format!("/healthz?hostname=host-{host}&myip={addr}"),
                    };
                    let _ = write!(
                        request,
                        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nUser-Agent: dynip-bench\r\n\r\n"
                    );
                    *expected = match target {
                        Target::Update => format!("good {addr}\n"),
                        Target::Healthz => "ok\n".to_string(),
                    };
                    connection.stream.write_all(&request).expect("send a request");
                };
                for (connection, expected) in connections.iter_mut().zip(expected.iter_mut()) {
                    send(connection, expected);
                }
                // The connections are read in turn, and each one is sent its next request
                // as soon as its answer is read: it does not wait for the other
                // connections' answers, so the requests in flight do not drain between
                // rounds (answers come back in about the order the requests went).
                let mut n_open = n_connections;
                while n_open > 0 {
                    for (connection, expected) in connections.iter_mut().zip(expected.iter_mut()) {
                        if expected.is_empty() {
                            continue;
                        }
                        let body = connection.read_response().expect("read an answer");
                        assert_eq!(String::from_utf8_lossy(&body), *expected, "unexpected answer");
                        n_answered += 1;
                        if Instant::now() < deadline {
                            send(connection, expected);
                        } else {
                            expected.clear();
                            n_open -= 1;
                        }
                    }
                }
                (
                    n_answered,
                    Generator {
                        connections,
                        counter,
                    },
                )
            })
        })
        .collect();
    for thread in threads {
        let (n_answered, generator) = thread.join().expect("generator thread");
        tally.n_answered += n_answered;
        generators.push(generator);
    }
    tally.elapsed += started.elapsed();
    tally.server_cpu += cpu_time(&pid) - cpu_before;
}

/// The server's commits so far and the reports they held, from its `/metrics`.
fn commits(server: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> (u64, f64) {
    let Ok(mut connection) = Connection::open(server, tls) else {
        return (0, 0.0);
    };
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if connection.stream.write_all(request.as_bytes()).is_err() {
        return (0, 0.0);
    }
    let body = connection.read_response().unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("dynip_commit_batch_size_count ") as u64,
        value("dynip_commit_batch_size_sum "),
    )
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
        "warn,dynip::http=info",
        Duration::from_secs(30),
        false,
    );
    (server, client)
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
        "dyndns2 over keep-alive{}: {} generator threads, {} connections each, {} hosts, \
         {:.1} s per target in {} alternating windows",
        if options.tls { " and TLS" } else { "" },
        options.threads,
        options.connections,
        options.hosts,
        options.seconds,
        options.rounds
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, tls) = start_server(&dir, options.tls);
    // Windows against the two targets alternate, so that a change in the machine's speed
    // during the run (a shared VM's neighbours) weighs on both alike.
    let window = options.seconds / options.rounds.max(1) as f64;
    let mut generators: Vec<Generator> = (0..options.threads as u64)
        .map(|first| Generator {
            connections: (0..options.connections)
                .map(|_| {
                    Connection::open(server.addr, tls.as_ref()).expect("connect to the server")
                })
                .collect(),
            counter: first,
        })
        .collect();
    let (mut healthz, mut updates) = (Tally::default(), Tally::default());
    for _ in 0..options.rounds.max(1) {
        for (target, tally) in [
            (Target::Healthz, &mut healthz),
            (Target::Update, &mut updates),
        ] {
            closed_loop(target, &server, &options, window, &mut generators, tally);
        }
    }
    drop(generators);
    let (n_commits, n_committed) = commits(server.addr, tls.as_ref());
    drop(server);
    let (healthz_cpu, updates_cpu) = (healthz.cpu_per_answer(), updates.cpu_per_answer());
    let (healthz, updates) = (healthz.rate(), updates.rate());
    let ratio = updates / healthz;
    println!();
    println!(
        "{:<44} {:>12} {:>16}",
        "", "answers/s", "server CPU µs/answer"
    );
    println!(
        "{:<44} {:>12.0} {:>16.1}",
        "GET /healthz (baseline)",
        healthz,
        healthz_cpu * 1e6
    );
    println!(
        "{:<44} {:>12.0} {:>16.1}",
        "GET /nic/update, committed before `good`",
        updates,
        updates_cpu * 1e6
    );
    println!("ratio updates / healthz: {ratio:.2}");
    println!(
        "commits: {n_commits}, {:.1} reports each on average",
        n_committed / n_commits.max(1) as f64
    );
    if options.smoke {
        return if updates > 0.0 && healthz > 0.0 {
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
        "  >= {TARGET_RATE:.0} updates/s: {}",
        verdict(updates >= TARGET_RATE)
    );
    println!(
        "  ratio to /healthz >= {TARGET_RATIO}: {}",
        verdict(ratio >= TARGET_RATIO)
    );
    ExitCode::SUCCESS
}
