//! What the benches share: the test-vector key, a real `dynip server` started on free
//! loopback ports and killed on drop, its `/metrics`, and what `/proc` says about CPU
//! time (per process, per thread, the whole machine) and resident memory.
//!
//! Each bench is a crate of its own that uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dynip::model::key::Key;

pub mod load;
pub mod reports;
pub mod zone;

/// The outside programs (NSD, dnsperf, wrk): one rule with the integration tests.
#[path = "../../tests/it/peers.rs"]
pub mod peers;

/// The `listening PROTO=ADDR` line and a free port for NSD: one parser with the
/// integration tests.
#[path = "../../tests/it/harness/ports.rs"]
pub mod ports;

/// A throwaway PostgreSQL cluster: one with the integration tests.
#[path = "../../tests/it/harness/postgres.rs"]
pub mod postgres;

pub use ports::free_port;

/// The test-vector key of docs/PROTOCOL.md.
pub fn bench_key() -> Key {
    let mut secret = [0u8; 32];
    for (idx, byte) in secret.iter_mut().enumerate() {
        *byte = idx as u8;
    }
    Key::from_bytes(secret)
}

/// A running `dynip server` (the release build), its stderr read for its whole life.
/// Killed on drop.
pub struct Server {
    child: Child,
    /// The address of its `listening PROTO=ADDR` line.
    pub addr: SocketAddr,
    /// Every line it has logged so far.
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Writes `config` to `dir/dynip.conf`, starts `dynip server` on it in `dir` with
    /// `RUST_LOG` at `log`, and waits up to `timeout` for its `listening PROTO=ADDR` line.
    /// With `echo`, the server's other log lines are passed on to stderr.
    ///
    /// # Panics
    /// When the server cannot be started or does not listen in time: a bench cannot go on.
    pub fn start(
        dir: &Path,
        config: &str,
        proto: &str,
        log: &str,
        timeout: Duration,
        echo: bool,
    ) -> Server {
        Server::try_start(dir, config, proto, log, timeout, echo).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`start`](Server::start), for a bench that reports the failure and goes on.
    ///
    /// # Errors
    /// When the server cannot be started or does not listen in time (it is killed then).
    pub fn try_start(
        dir: &Path,
        config: &str,
        proto: &str,
        log: &str,
        timeout: Duration,
        echo: bool,
    ) -> Result<Server, String> {
        let path = dir.join("dynip.conf");
        std::fs::write(&path, config).map_err(|e| format!("the server's config: {e}"))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynip"))
            .arg("server")
            .arg(&path)
            .current_dir(dir)
            .env("RUST_LOG", log)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("dynip server: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let lines = Arc::clone(&lines);
            let proto = proto.to_owned();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    match ports::listening_addr(&line, &proto) {
                        Some(addr) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(addr);
                            }
                        }
                        None if echo => eprintln!("dynip: {line}"),
                        None => {}
                    }
                    unpoisoned(&lines).push(line);
                }
            })
        };
        let mut server = Server {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            reader: Some(reader),
        };
        server.addr = rx
            .recv_timeout(timeout)
            .map_err(|e| format!("no `listening {proto}=` line from the server: {e}"))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of its `listening PROTO=ADDR` line for another `proto` than the one
    /// [`start`](Server::start) waited for, waiting up to `timeout`.
    ///
    /// # Errors
    /// When the server exits first or logs no such line in time.
    pub fn listening(&mut self, proto: &str, timeout: Duration) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = unpoisoned(&self.lines)
                .iter()
                .find_map(|line| ports::listening_addr(line, proto));
            if let Some(addr) = found {
                return Ok(addr);
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                return Err(format!("no `listening {proto}=` line from the server"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines it has logged so far; once it has exited, all of them.
    pub fn log(&mut self) -> Vec<String> {
        if !matches!(self.child.try_wait(), Ok(None)) {
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
        }
        unpoisoned(&self.lines).clone()
    }

    /// Whether it is still running; its log when it is not.
    ///
    /// # Errors
    /// When it has exited, or cannot be waited for.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "server exited early with {status}; its log:\n{}",
                self.log().join("\n")
            )),
            Err(e) => Err(format!("cannot check on the server: {e}")),
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that).
    ///
    /// # Errors
    /// When it does not exit in time, or cannot be waited for.
    pub fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let asked = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if asked.elapsed() > timeout => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("server did not stop {timeout:?} after SIGTERM"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("cannot wait for the server: {e}")),
            }
        }
    }
}

/// The lines so far. The reader thread only pushes, so a poisoned lock (a panic in the
/// bench while it held the lock) still holds whole lines.
fn unpoisoned(lines: &Mutex<Vec<String>>) -> MutexGuard<'_, Vec<String>> {
    lines.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server's `/metrics` at one moment, over plain HTTP.
pub struct Metrics(pub String);

impl Metrics {
    /// `GET /metrics` from the HTTP face at `addr` (`http_listen`).
    ///
    /// # Errors
    /// When the server does not answer 200 within 5 s.
    pub fn fetch(addr: SocketAddr) -> Result<Metrics, String> {
        let fail = |e: std::io::Error| format!("GET /metrics from {addr}: {e}");
        let wait = Duration::from_secs(5);
        let mut stream = TcpStream::connect_timeout(&addr, wait).map_err(fail)?;
        stream.set_read_timeout(Some(wait)).map_err(fail)?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .map_err(fail)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(fail)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(Metrics(body.to_owned())),
            _ => Err(format!("GET /metrics from {addr}: {response:?}")),
        }
    }

    /// The value of the sample named `name`, without labels, if there is one.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }

    /// The sum of each sample whose name (with its labels) starts with `prefix`.
    pub fn sum(&self, prefix: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(_, value)| value.parse::<f64>().ok())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------
// What /proc says

/// CPU time a process has used so far (user and system, all threads), from
/// `/proc/PID/stat`; `pid` is a number or `self`. Zero where that cannot be read.
pub fn cpu_time(pid: &str) -> Duration {
    task_cpu(Path::new(&format!("/proc/{pid}/stat"))).map_or(Duration::ZERO, |(_, time)| time)
}

/// CPU time every process named `name` (`postgres`: the database's server and its
/// backends) has used so far, those that ended excepted.
pub fn cpu_time_named(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| task_cpu(&entry.path().join("stat")))
        .filter(|(task, _)| task == name)
        .map(|(_, time)| time)
        .sum()
}

/// Each thread of process `pid` (a number or `self`): its name and the CPU time it has
/// used so far. Empty where that cannot be read.
pub fn thread_cpu_times(pid: &str) -> Vec<(String, Duration)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task_cpu(&task.path().join("stat")))
        .collect()
}

/// The CPU time one thread of this process has used so far, by its kernel id (`gettid`).
pub fn own_thread_cpu_time(tid: i32) -> Option<Duration> {
    task_cpu(Path::new(&format!("/proc/self/task/{tid}/stat"))).map(|(_, time)| time)
}

/// A task's name and its user + system CPU time, from its `stat` file (a process's
/// `/proc/PID/stat` counts all its threads, a thread's `/proc/PID/task/TID/stat` its own).
fn task_cpu(stat: &Path) -> Option<(String, Duration)> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // The name is in parentheses and may hold spaces and parentheses itself.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    // Fields after the name start at field 3 (state); utime and stime are fields 14, 15,
    // in clock ticks.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((
        name.to_owned(),
        Duration::from_micros((utime + stime) * 1_000_000 / clock_ticks()),
    ))
}

/// Clock ticks per second, the unit of `/proc`'s CPU times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// The machine's CPU seconds so far, summed over all CPUs, from `/proc/stat`.
#[derive(Default, Clone, Copy)]
pub struct MachineCpu {
    pub busy: f64,
    /// Interrupt time (the loopback's packet delivery runs in softirq), in `busy` too.
    pub irq: f64,
    pub idle: f64,
}

/// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal`.
pub fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    let hz = clock_ticks() as f64;
    Some(MachineCpu {
        busy: (user + nice + system + irq + softirq + steal) / hz,
        irq: (irq + softirq) / hz,
        idle: (idle + iowait) / hz,
    })
}

/// VmRSS and VmHWM (the peak) of `pid`, in bytes, from `/proc/PID/status`.
///
/// # Errors
/// When the file cannot be read or lacks either.
pub fn resident_memory(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let field = |key: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .ok_or(format!("no {key} in {path}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A bench's command line: `--bench` (a full run: `cargo bench` passes it; without it, as
/// `cargo test --benches` runs a bench, a short smoke run) and `--NAME VALUE` pairs.
pub struct Args {
    pub smoke: bool,
    values: Vec<(String, String)>,
}

impl Args {
    /// Reads the process's arguments; `names` are the options the bench takes (without
    /// `--`), `usage` what to say when another is given.
    ///
    /// # Errors
    /// An unknown option, or one without a value.
    pub fn parse(names: &[&str], usage: &str) -> Result<Args, String> {
        let mut smoke = true;
        let mut values = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                smoke = false;
                continue;
            }
            match arg.strip_prefix("--") {
                Some(name) if names.contains(&name) => {
                    let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                    values.push((name.to_owned(), value));
                }
                _ => return Err(format!("unknown argument {arg:?}; usage: {usage}")),
            }
        }
        Ok(Args { smoke, values })
    }

    /// The last value given for `--name`, or `default`.
    ///
    /// # Errors
    /// A value that does not parse as a `T`.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.iter().rev().find(|(given, _)| given == name) {
            Some((_, value)) => value
                .parse()
                .map_err(|e| format!("--{name} {value:?}: {e}")),
            None => Ok(default),
        }
    }
}
