//! The benches' HTTP load: keep-alive connections (plain or TLS) in blocking threads, a
//! closed loop of dyndns2 updates (each a new address) or `/healthz` requests, and what
//! the windows add up to. Used by `http.rs` and `notify.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls_pki_types::ServerName;
use tokio_rustls::rustls;

use super::{bench_key, cpu_time, Metrics, Server};

/// The shape of the load: `threads` threads, each with `connections` keep-alive
/// connections, updating `hosts` hosts.
#[derive(Clone, Copy)]
pub struct Load {
    pub threads: usize,
    pub connections: usize,
    pub hosts: usize,
}

impl Worker {
    /// Each thread's connections to `server`, opened (with TLS, shaken hands) now.
    pub fn open_all(
        server: SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        load: &Load,
    ) -> Vec<Worker> {
        (0..load.threads as u64)
            .map(|first| Worker {
                connections: (0..load.connections)
                    .map(|_| Connection::open(server, tls).expect("connect to the server"))
                    .collect(),
                counter: first,
            })
            .collect()
    }

    /// Opens each worker's connections again (the server closes keep-alive connections
    /// left idle), keeping its request counter, so every update is still a new address.
    pub fn reconnect(workers: &mut [Worker], server: SocketAddr, load: &Load) {
        for worker in workers {
            worker.connections = (0..load.connections)
                .map(|_| Connection::open(server, None).expect("connect to the server"))
                .collect();
        }
    }
}

/// What a window asks for.
#[derive(Clone, Copy, PartialEq)]
pub enum Target {
    Healthz,
    Update,
}

/// A connection's bytes: plain TCP, or TLS over it.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One keep-alive connection and its read buffer.
pub struct Connection {
    pub stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects, over TLS with `tls` (the handshake done before this returns).
    pub fn open(
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
    pub fn read_response(&mut self) -> std::io::Result<Vec<u8>> {
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

/// The Basic credentials both generators send (`router:KEY`, base64).
pub fn basic_credentials() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("router:{}", bench_key().encode()))
}

/// What the windows against one target added up to.
#[derive(Default)]
pub struct Tally {
    pub n_answered: u64,
    pub elapsed: Duration,
    pub server_cpu: Duration,
    /// The generator's own: this process's threads, or the wrk processes.
    pub generator_cpu: Duration,
    /// Per window, when wrk measured them: the latencies' median and 99th percentile (µs).
    pub latencies: Vec<(u64, u64)>,
}

impl Tally {
    pub fn rate(&self) -> f64 {
        self.n_answered as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_per_answer(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.n_answered.max(1) as f64
    }

    pub fn generator_cpu_per_answer(&self) -> f64 {
        self.generator_cpu.as_secs_f64() / self.n_answered.max(1) as f64
    }
}

/// CPU time (user and system) of this process's children that have been waited for.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What one generator thread carries from window to window: its connections, opened
/// (and for TLS, shaken hands) once before the first window, and its request counter, so
/// that every update is still a new address for its host.
pub struct Worker {
    pub connections: Vec<Connection>,
    pub counter: u64,
}

/// Runs the closed loop against `target` for `seconds` on `workers`' connections,
/// adding to `tally`.
pub fn closed_loop(
    target: Target,
    server: &Server,
    options: &Load,
    seconds: f64,
    workers: &mut Vec<Worker>,
    tally: &mut Tally,
) {
    let auth = basic_credentials();
    let pid = server.pid().to_string();
    let cpu_before = cpu_time(&pid);
    let own_before = cpu_time("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = std::mem::take(workers)
        .into_iter()
        .map(|worker| {
            let auth = auth.clone();
            let (n_threads, n_hosts) = (options.threads, options.hosts);
            std::thread::spawn(move || -> (u64, Worker) {
                let Worker {
                    mut connections,
                    mut counter,
                } = worker;
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
                    Worker {
                        connections,
                        counter,
                    },
                )
            })
        })
        .collect();
    for thread in threads {
        let (n_answered, worker) = thread.join().expect("generator thread");
        tally.n_answered += n_answered;
        workers.push(worker);
    }
    tally.elapsed += started.elapsed();
    tally.server_cpu += cpu_time(&pid) - cpu_before;
    tally.generator_cpu += cpu_time("self") - own_before;
}

/// The server's `/metrics` now, over HTTP or HTTPS. Panics when the server does not
/// answer, as the bench cannot go on.
pub fn read_metrics(server: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Metrics {
    let mut connection = Connection::open(server, tls).expect("connect for /metrics");
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    connection
        .stream
        .write_all(request.as_bytes())
        .expect("ask for /metrics");
    let body = connection.read_response().expect("read /metrics");
    Metrics(String::from_utf8_lossy(&body).into_owned())
}

/// HTTP reports committed so far, and refused.
pub fn http_reports(metrics: &Metrics) -> (u64, u64) {
    (
        metrics.sum("dynip_reports_accepted_total{path=\"http\"}") as u64,
        metrics.sum("dynip_reports_refused_total{path=\"http\",") as u64,
    )
}
