//! dyndns2 updates per second over keep-alive connections, against `/healthz` on the same
//! server in the same run.
//!
//! The load generator is the same for both: `--threads` threads, each holding
//! `--connections` keep-alive HTTP/1.1 connections with one request in flight on each (a
//! closed loop: a connection sends its next request when the answer to the last one has
//! come; no pipelining). Each thread writes a request on every connection it holds, then
//! reads the answers in turn. Against `/nic/update` a request carries Basic credentials
//! (the shared key) and a new address for one of `--hosts` hosts, so every update is a
//! change of address and a history row; the server (release build) answers `good` only
//! after the commit, and the generator checks every answer. Against `/healthz` the same
//! connections send requests of the same size, answered without touching the writer:
//! what HTTP itself costs on this machine with this generator.
//!
//! `cargo bench --bench http [-- --seconds S --threads T --connections C --hosts H]`.
//! Run without `--bench` (as `cargo test --benches` does) it is a short smoke run.
//! Bounded in time and count; only 127.0.0.1 is ever addressed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine;

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
    smoke: bool,
}

fn parse_args() -> Result<Options, String> {
    let args = Args::parse(
        &["seconds", "threads", "connections", "hosts"],
        "cargo bench --bench http -- [--seconds S] [--threads T] [--connections C] [--hosts H]",
    )?;
    Ok(Options {
        seconds: args.get("seconds", if args.smoke { 0.5 } else { 5.0 })?,
        threads: args.get("threads", 2)?,
        connections: args.get("connections", 128)?,
        hosts: args.get("hosts", 10_000)?,
        smoke: args.smoke,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Healthz,
    Update,
}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn open(server: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(server)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
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

/// Runs the closed loop against `target` for `seconds`; returns answers per second.
fn closed_loop(target: Target, server: SocketAddr, options: &Options) -> f64 {
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("router:{}", bench_key().encode()));
    let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..options.threads)
        .map(|thread_idx| {
            let auth = auth.clone();
            let (n_threads, n_connections, n_hosts) =
                (options.threads, options.connections, options.hosts);
            std::thread::spawn(move || -> u64 {
                let mut connections: Vec<Connection> = (0..n_connections)
                    .map(|_| Connection::open(server).expect("connect to the server"))
                    .collect();
                let mut counter = thread_idx as u64;
                let mut n_answered = 0u64;
                let mut request = Vec::with_capacity(512);
                let mut expected: Vec<String> = vec![String::new(); n_connections];
                while Instant::now() < deadline {
                    for (conn_idx, connection) in connections.iter_mut().enumerate() {
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
                        expected[conn_idx] = match target {
                            Target::Update => format!("good {addr}\n"),
                            Target::Healthz => "ok\n".to_string(),
                        };
                        connection.stream.write_all(&request).expect("send a request");
                    }
                    for (conn_idx, connection) in connections.iter_mut().enumerate() {
                        let body = connection.read_response().expect("read an answer");
                        assert_eq!(
                            String::from_utf8_lossy(&body),
                            expected[conn_idx],
                            "unexpected answer"
                        );
                        n_answered += 1;
                    }
                }
                n_answered
            })
        })
        .collect();
    let n_answered: u64 = threads
        .into_iter()
        .map(|thread| thread.join().expect("generator thread"))
        .sum();
    n_answered as f64 / started.elapsed().as_secs_f64()
}

/// The server's commits so far and the reports they held, from its `/metrics`.
fn commits(server: SocketAddr) -> (u64, f64) {
    let Ok(mut connection) = Connection::open(server) else {
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

/// The real server with `http_listen`, `key` set, store in `dir`.
fn start_server(dir: &tempfile::TempDir) -> Server {
    let config = format!(
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\nhttp_listen = 127.0.0.1:0\n\
         client_log_path = {}\nkey = {}\n",
        dir.path().join("dynip.json").display(),
        bench_key().encode()
    );
    Server::start(
        dir.path(),
        &config,
        "http",
        "warn,dynip::http=info",
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
        "dyndns2 over keep-alive: {} generator threads, {} connections each, {} hosts, {:.1} s windows",
        options.threads, options.connections, options.hosts, options.seconds
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(&dir);
    let pid = server.pid().to_string();
    let cpu_before = cpu_time(&pid);
    let started = Instant::now();
    let healthz = closed_loop(Target::Healthz, server.addr, &options);
    let healthz_cpu =
        (cpu_time(&pid) - cpu_before).as_secs_f64() / (healthz * started.elapsed().as_secs_f64());
    let cpu_before = cpu_time(&pid);
    let started = Instant::now();
    let updates = closed_loop(Target::Update, server.addr, &options);
    let updates_cpu =
        (cpu_time(&pid) - cpu_before).as_secs_f64() / (updates * started.elapsed().as_secs_f64());
    let (n_commits, n_committed) = commits(server.addr);
    drop(server);
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
