//! What the benches share: the test-vector key, a real `dynip server` started on free
//! loopback ports and killed on drop, and a process's CPU time from `/proc`.
//!
//! Each bench is a crate of its own that uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dynip::model::key::Key;

/// The outside programs (NSD, dnsperf, wrk): one rule with the integration tests.
#[path = "../../tests/it/peers.rs"]
pub mod peers;

/// The `listening PROTO=ADDR` line and a free port for NSD: one parser with the
/// integration tests.
#[path = "../../tests/it/harness/ports.rs"]
pub mod ports;

/// The test-vector key of docs/PROTOCOL.md.
pub fn bench_key() -> Key {
    let mut secret = [0u8; 32];
    for (idx, byte) in secret.iter_mut().enumerate() {
        *byte = idx as u8;
    }
    Key::from_bytes(secret)
}

/// A running `dynip server` (the release build), killed on drop.
pub struct Server {
    pub child: Child,
    /// The address of its `listening PROTO=ADDR` line.
    pub addr: SocketAddr,
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
        let path = dir.join("dynip.conf");
        std::fs::write(&path, config).expect("the server's config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynip"))
            .arg("server")
            .arg(&path)
            .current_dir(dir)
            .env("RUST_LOG", log)
            .stderr(Stdio::piped())
            .spawn()
            .expect("dynip server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = proto.to_owned();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match ports::listening_addr(&line, &marker) {
                    Some(addr) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    None if echo => eprintln!("dynip: {line}"),
                    None => {}
                }
            }
        });
        let addr = rx
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no `listening {proto}=` line from the server: {e}"));
        Server { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time a process has used so far (user and system, all threads), from
/// `/proc/PID/stat`; `pid` is a number or `self`. Zero where that cannot be read.
pub fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks.
    let ticks: u64 = fields
        .get(11..13)
        .map(|times| times.iter().filter_map(|t| t.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
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
