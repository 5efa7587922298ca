//! The processes a test runs: its temp dir, the real binaries in a scrubbed environment,
//! a server process that logs to a pipe drained for its whole life (killed on drop), and
//! polling with a deadline.
//!
//! Nothing here sleeps a fixed time to wait for something that can be observed: every wait
//! is [`eventually`], which polls real state (a log line, `dynip list`, the JSON file).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{field, listening_addr, send_to, CONFIG, DYNIP, JSON_FILE};

/// How long any one wait may take. Generous: the suite runs in parallel on two loaded
/// cores, and a passing test never waits this long (every wait polls).
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// How many of a server's last stderr lines a failing test shows.
const MAX_LINES_SHOWN: usize = 40;
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, for at most [`TIMEOUT`].
///
/// # Panics
/// When the deadline passes, naming `what`.
pub fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A test's own directory: the working directory of every process it runs.
pub struct Dir {
    temp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let temp = tempfile::Builder::new()
            .prefix("dynip-it-")
            .tempdir()
            .expect("create a temp dir");
        Dir { temp }
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.join(name), bytes).expect("write a test file");
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn read_string(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).expect("UTF-8 file")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.join(name).exists()
    }

    /// Writes [`CONFIG`]: `[DynIP:Server]` on `server_ip`, port 0, [`JSON_FILE`], then
    /// `extra` (more lines, or more sections).
    pub fn server_config(&self, server_ip: &str, extra: &str) {
        self.write(
            CONFIG,
            format!(
                "[DynIP:Server]\nserver_ip = {server_ip}\nserver_port = 0\n\
                 client_log_path = {JSON_FILE}\n{extra}"
            ),
        );
    }

    /// Runs `dynip ARGS` here to completion.
    pub fn dynip(&self, args: &[&str]) -> Output {
        run(DYNIP, args, self.path())
    }

    /// `dynip list --json CONFIG`, which must succeed: host name -> its object.
    pub fn list(&self) -> BTreeMap<String, serde_json::Value> {
        let out = self.dynip(&["list", "--json", CONFIG]);
        assert_eq!(out.code, 0, "dynip list failed: {out:?}");
        let hosts: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("dynip list --json is not JSON ({e}): {out:?}"));
        hosts
            .into_iter()
            .map(|host| {
                let name = host["host"].as_str().expect("host is a string").to_string();
                (name, host)
            })
            .collect()
    }

    /// The host names `dynip list` shows.
    pub fn hosts(&self) -> BTreeSet<String> {
        self.list().into_keys().collect()
    }

    /// `dynip history --json CONFIG HOST`, which must succeed: (time, address) pairs.
    pub fn history(&self, host: &str) -> Vec<(String, String)> {
        let out = self.dynip(&["history", "--json", CONFIG, host]);
        assert_eq!(out.code, 0, "dynip history failed: {out:?}");
        let changes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("dynip history --json is not JSON ({e}): {out:?}"));
        changes
            .iter()
            .map(|change| {
                let field = |key: &str| change[key].as_str().expect("a string").to_string();
                (field("time"), field("address"))
            })
            .collect()
    }

    /// The JSON file, parsed: `None` when it does not exist. Panics when it does not parse
    /// as the original's format (an object of name -> [address, time]).
    pub fn export(&self) -> Option<BTreeMap<String, (String, String)>> {
        let bytes = match std::fs::read(self.join(JSON_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("read {JSON_FILE}: {e}"),
        };
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{JSON_FILE} is not the original's format ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        }))
    }

    /// The host names in the JSON file (none when it does not exist).
    pub fn exported_hosts(&self) -> BTreeSet<String> {
        self.export().unwrap_or_default().into_keys().collect()
    }
}

/// The outcome of a command run to completion.
#[derive(Debug)]
pub struct Output {
    /// The exit code, or minus the signal number that ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A command for `program` in `dir` with a scrubbed environment: `PATH` kept, `TZ=UTC` so
/// the JSON file's naive local times are UTC, nothing else (no `RUST_LOG`).
pub fn command(program: &str, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env_clear().env("TZ", "UTC");
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// Runs `program ARGS` in `dir` to completion (killed and a panic after [`TIMEOUT`]).
pub fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    run_command(command(program, dir).args(args))
}

/// Runs a prepared command to completion (killed and a panic after [`TIMEOUT`]).
pub fn run_command(command: &mut Command) -> Output {
    run_command_within(command, TIMEOUT)
}

/// Runs a prepared command to completion (killed and a panic after `limit`), for the
/// few commands that may take longer than [`TIMEOUT`] on a loaded machine.
pub fn run_command_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_for_exit_within(&mut child, limit)
        .unwrap_or_else(|| panic!("{command:?} still running after {limit:?}; killed"));
    Output {
        code: exit_code(status),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` to exit, for at most [`TIMEOUT`]; kills it and returns `None` then.
pub fn wait_for_exit(child: &mut Child) -> Option<ExitStatus> {
    wait_for_exit_within(child, TIMEOUT)
}

/// Waits for `child` to exit, for at most `limit`; kills it and returns `None` then.
pub fn wait_for_exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The exit code, or minus the signal number that ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &Child) {
    signal(child, libc::SIGTERM);
}

/// Sends `signal` to a child process.
fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet; no memory involved.
    let res = unsafe { libc::kill(pid, signal) };
    assert_eq!(res, 0, "kill -{signal} {pid}");
}

/// A running server (`dynip -v server CONFIG` or another command line), its stderr read
/// line by line for its whole life. Killed on drop.
pub struct ServerProcess {
    child: Child,
    /// The address of the `listening udp=ADDR` line.
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// How many `report committed` lines the reader has seen, for cheap flow control.
    n_committed: Arc<AtomicUsize>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl ServerProcess {
    /// `dynip -v server CONFIG` in `dir`.
    pub fn start(dir: &Dir) -> ServerProcess {
        ServerProcess::spawn(dir, DYNIP, &["-v", "server", CONFIG])
    }

    /// `program ARGS` in `dir`; returns once it logs `listening udp=ADDR`.
    ///
    /// # Panics
    /// When the process exits first, or does not listen within [`TIMEOUT`].
    pub fn spawn(dir: &Dir, program: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::spawn_with_env(dir, program, args, &[])
    }

    /// As [`spawn`](ServerProcess::spawn), with `env` added to the scrubbed environment.
    pub fn spawn_with_env(
        dir: &Dir,
        program: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> ServerProcess {
        let mut child = command(program, dir.path())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let n_committed = Arc::new(AtomicUsize::new(0));
        let (listening, listening_rx) = mpsc::channel();
        let reader = {
            let lines = Arc::clone(&lines);
            let n_committed = Arc::clone(&n_committed);
            std::thread::spawn(move || read_lines(stderr, &lines, &n_committed, listening))
        };
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            n_committed,
            reader: Some(reader),
            status: None,
        };
        match listening_rx.recv_timeout(TIMEOUT) {
            Ok(addr) => server.addr = addr,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.wait_exit();
                panic!(
                    "{program} {args:?} exited ({status:?}) before listening:\n{}",
                    server.stderr_tail()
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                server.kill9();
                panic!(
                    "{program} {args:?} did not listen within {TIMEOUT:?}:\n{}",
                    server.stderr_tail()
                );
            }
        }
        server
    }

    /// The address of the `listening udp=ADDR` line, as logged (read at start-up: the
    /// same as [`listening("udp")`](ServerProcess::listening)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the first `listening PROTO=ADDR` line for `proto` (`dns`, `http`,
    /// `https`), waiting for it up to [`TIMEOUT`].
    ///
    /// # Panics
    /// When the server logs no such line in time.
    pub fn listening(&self, proto: &str) -> SocketAddr {
        self.listening_any(&[proto])
    }

    /// The address of the HTTP face, whether it speaks HTTP or HTTPS (`tls_cert`).
    pub fn listening_http(&self) -> SocketAddr {
        self.listening_any(&["http", "https"])
    }

    fn listening_any(&self, protos: &[&str]) -> SocketAddr {
        eventually(
            &format!("a `listening {}=` line", protos.join("=` or `")),
            || {
                self.lines()
                    .iter()
                    .find_map(|line| protos.iter().find_map(|proto| listening_addr(line, proto)))
            },
        )
    }

    /// Where to send to reach the server: its address, loopback for a wildcard.
    pub fn target(&self) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// Sends one datagram from a socket bound to `127.0.0.1:0`.
    pub fn send(&self, bytes: &[u8]) {
        self.send_from("127.0.0.1:0", bytes);
    }

    /// Sends one datagram from a socket bound to `local`.
    pub fn send_from(&self, local: &str, bytes: &[u8]) {
        let target = self.target();
        send_to(local, target, bytes);
    }

    /// The stderr lines so far, locked. A panic while this is held poisons the lock, and
    /// the test fails anyway.
    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.lines.lock().expect("lines lock")
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.lines().clone()
    }

    /// The last stderr lines so far, for a failing test's message.
    pub fn stderr_tail(&self) -> String {
        let lines = self.lines();
        let tail = &lines[lines.len().saturating_sub(MAX_LINES_SHOWN)..];
        format!(
            "(last {} of {} lines)\n{}",
            tail.len(),
            lines.len(),
            tail.join("\n")
        )
    }

    /// The stderr lines so far that contain `text`.
    pub fn stderr_lines(&self, text: &str) -> Vec<String> {
        let lines = self.lines();
        lines
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// Whether a stderr line from index `*from` on contains `text`; moves `*from` past
    /// the lines looked at, so that polling a long log costs only its new lines.
    pub fn logged_since(&self, text: &str, from: &mut usize) -> bool {
        let lines = self.lines();
        let found = lines[*from..].iter().any(|line| line.contains(text));
        *from = lines.len();
        found
    }

    /// The `report committed` lines so far, as (host, addr).
    pub fn committed(&self) -> Vec<(String, String)> {
        self.stderr_lines("report committed")
            .iter()
            .map(|line| (field(line, "host"), field(line, "addr")))
            .collect()
    }

    /// How many reports the server has logged as committed so far.
    pub fn n_committed(&self) -> usize {
        self.n_committed.load(Ordering::Relaxed)
    }

    /// The hosts logged as committed so far.
    pub fn committed_hosts(&self) -> BTreeSet<String> {
        self.committed().into_iter().map(|(host, _)| host).collect()
    }

    /// Waits until the server has logged `n` committed reports for `host` (as spelled).
    pub fn wait_committed(&self, host: &str, n: usize) {
        eventually(&format!("{n} committed report(s) for {host}"), || {
            let n_seen = self.committed().iter().filter(|(h, _)| h == host).count();
            (n_seen >= n).then_some(())
        });
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits for the exit (a panic after [`TIMEOUT`]) and for the end of
    /// its stderr; returns the exit code.
    pub fn terminate(&mut self) -> i32 {
        self.stop_with(libc::SIGTERM)
    }

    /// SIGINT (Ctrl-C), then as [`terminate`](ServerProcess::terminate).
    pub fn interrupt(&mut self) -> i32 {
        self.stop_with(libc::SIGINT)
    }

    /// SIGHUP: the server re-reads its keys, `allow_from` and `allow_unsigned`.
    pub fn hangup(&self) {
        signal(&self.child, libc::SIGHUP);
    }

    fn stop_with(&mut self, signal_number: libc::c_int) -> i32 {
        signal(&self.child, signal_number);
        let status = self.wait_exit().unwrap_or_else(|| {
            panic!(
                "server still running {TIMEOUT:?} after signal {signal_number}; killed:\n{}",
                self.stderr_tail()
            )
        });
        exit_code(status)
    }

    /// SIGKILL, then waits for the exit and the end of its stderr.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        self.status = Some(self.child.wait().expect("wait after kill"));
        self.join_reader();
    }

    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let status = wait_for_exit(&mut self.child);
        self.status = Some(status.unwrap_or_else(|| self.child.wait().expect("wait")));
        self.join_reader();
        status
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader thread");
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- server stderr ---\n{}", self.stderr_tail());
        }
    }
}

/// Reads `stderr` line by line until EOF, keeping every line and sending the address of
/// the first `listening udp=ADDR` line.
fn read_lines(
    stderr: impl Read,
    lines: &Mutex<Vec<String>>,
    n_committed: &AtomicUsize,
    listening: mpsc::Sender<SocketAddr>,
) {
    let mut reader = BufReader::new(stderr);
    let mut listening = Some(listening);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(addr) = listening_addr(&line, "udp") {
            if let Some(tx) = listening.take() {
                let _ = tx.send(addr);
            }
        }
        if line.contains("report committed") {
            n_committed.fetch_add(1, Ordering::Relaxed);
        }
        lines.lock().expect("lines lock").push(line);
    }
}

/// A child process (say, a client with `--every`) killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
