//! The server under a service manager: `sd_notify` messages on a real `NOTIFY_SOCKET`
//! (readiness only once every listener answers, watchdog keep-alives that stop while the
//! writer is stuck, `STOPPING=1`), syslog priorities on lines into the journal, and
//! `dynip check`.

use std::ffi::OsStr;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::dns::{query, ZONE};
use crate::harness::http::get;
use crate::harness::*;

/// `WATCHDOG_USEC` for the tests: keep-alives every second, and a writer stuck for a
/// second counts as stuck. Short enough for a quick test, long enough that a loaded CI
/// machine's scheduling does not make a healthy server miss one.
const WATCHDOG: Duration = Duration::from_secs(2);

/// The service manager's end: a Unix datagram socket in the test's directory.
struct Manager {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Manager {
    fn bind(dir: &Dir) -> Manager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { socket, path }
    }

    /// The next message within `wait`: its `KEY=VALUE` lines.
    fn recv_within(&self, wait: Duration) -> Option<Vec<String>> {
        self.socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(len) => Some(
                String::from_utf8_lossy(&buf[..len])
                    .lines()
                    .map(str::to_string)
                    .collect(),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("receive on the notify socket: {e}"),
        }
    }

    /// Waits (up to [`TIMEOUT`]) for a message with the line `line`; returns the
    /// messages before it and the message itself.
    fn wait_for(&self, line: &str) -> (Vec<Vec<String>>, Vec<String>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        while let Some(message) =
            self.recv_within(deadline.saturating_duration_since(Instant::now()))
        {
            if message.iter().any(|l| l == line) {
                return (before, message);
            }
            before.push(message);
        }
        panic!("no {line} within {TIMEOUT:?}; got {before:?}");
    }

    /// The times at which `WATCHDOG=1` arrived during the next `window`.
    fn keep_alives_during(&self, window: Duration) -> Vec<Instant> {
        let end = Instant::now() + window;
        let mut times = Vec::new();
        while let Some(message) = self.recv_within(end.saturating_duration_since(Instant::now())) {
            if message.iter().any(|l| l == "WATCHDOG=1") {
                times.push(Instant::now());
            }
        }
        times
    }
}

#[test]
fn notify_socket_sees_ready_watchdog_and_stopping() {
    let dir = Dir::new();
    let key = test_key(0x51);
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\nhttp_listen = 127.0.0.1:0\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n",
            key.encode()
        ),
    );
    let manager = Manager::bind(&dir);
    let watchdog_usec = WATCHDOG.as_micros().to_string();
    let mut server = ServerProcess::spawn_with_env(
        &dir,
        DYNIP,
        &["-v", "server", CONFIG],
        &[
            ("NOTIFY_SOCKET", manager.path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new(&watchdog_usec)),
        ],
    );

    // READY=1 comes once, with a status, and when it does every listener answers.
    let (before, ready) = manager.wait_for("READY=1");
    assert!(before.is_empty(), "messages before READY=1: {before:?}");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("hosts known")),
        "{ready:?}"
    );
    let peer = Peer::bind("127.0.0.1:0", server.target());
    peer.report(&key, "ready-check");
    assert_eq!(get(server.listening_http(), "/healthz", &[]).status, 200);
    let dns = UdpSocket::bind("127.0.0.1:0").expect("bind a DNS client socket");
    dns.set_read_timeout(Some(TIMEOUT)).expect("set a timeout");
    dns.send_to(
        &query(&format!("ready-check.{ZONE}"), 7),
        server.listening("dns"),
    )
    .expect("send a DNS query");
    let mut answer = [0u8; 512];
    dns.recv(&mut answer).expect("a DNS answer");
    TcpStream::connect(server.listening("dns")).expect("DNS over TCP accepts");

    // An idle writer is alive: keep-alives at half the interval.
    let idle = manager.keep_alives_during(WATCHDOG * 2);
    assert!(
        idle.len() >= 3,
        "{} keep-alives in {:?}",
        idle.len(),
        WATCHDOG * 2
    );
    for pair in idle.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= WATCHDOG / 4 && gap < WATCHDOG,
            "keep-alives {gap:?} apart with WatchdogSec={WATCHDOG:?}"
        );
    }

    // Another program holds the store's write lock: the writer's next commit waits
    // inside its turn (SQLite's busy timeout is longer than this test holds the lock).
    let store = rusqlite::Connection::open(dir.join(STORE_FILE)).expect("open the store");
    store
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the store's write lock");
    let report = seal(&key, "stalled", dynip::model::record::Time::now());
    peer.send(&report);
    let stalled_at = Instant::now();
    let during = manager.keep_alives_during(WATCHDOG * 2);
    // A keep-alive may still come in the first half interval, before the turn counts
    // as stuck; none after.
    let late: Vec<Duration> = during
        .iter()
        .map(|at| *at - stalled_at)
        .filter(|since| *since > WATCHDOG * 3 / 4)
        .collect();
    assert!(
        late.is_empty(),
        "keep-alives {late:?} after the writer stalled"
    );
    assert!(
        server.stderr_lines("keep-alives stop").len() == 1,
        "{}",
        server.stderr_tail()
    );

    // The lock goes: the commit goes through, its report is acknowledged, and the
    // keep-alives come back.
    store.execute_batch("ROLLBACK").expect("release the lock");
    peer.expect_ack(&key, &report, "the stalled report");
    let after = manager.keep_alives_during(WATCHDOG);
    assert!(!after.is_empty(), "no keep-alive once the writer moved on");

    // SIGTERM: a clean exit, and STOPPING=1 on the way.
    assert_eq!(server.terminate(), 0, "{}", server.stderr_tail());
    manager.wait_for("STOPPING=1");
}

#[test]
fn lines_into_the_journal_carry_priorities_and_no_time() {
    let dir = Dir::new();
    // A key in a file every user can read (a warning), and no store (an error).
    dir.server_config("127.0.0.1", &format!("key = {}\n", test_key(0x52).encode()));
    let stderr_path = dir.join("stderr");
    let run_list = |journal_stream: Option<String>| {
        let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
        let stream = journal_stream.unwrap_or_else(|| {
            use std::os::unix::fs::MetadataExt;
            let meta = stderr.metadata().expect("stat the stderr file");
            format!("{}:{}", meta.dev(), meta.ino())
        });
        let status = command(DYNIP, dir.path())
            .args(["list", CONFIG])
            .env("JOURNAL_STREAM", stream)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .expect("run dynip list");
        (
            exit_code(status),
            String::from_utf8(dir.read("stderr")).expect("UTF-8"),
        )
    };

    let (code, journal) = run_list(None);
    assert_eq!(code, 2, "{journal}");
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("every user can read it")),
        "{journal}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>dynip: error: no store")),
        "{journal}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with('<') && !l.contains(&year())),
        "a line without a priority, or with a time of its own: {journal}"
    );

    // JOURNAL_STREAM inherited by a process whose stderr went elsewhere: plain lines.
    let (code, plain) = run_list(Some("1:1".to_string()));
    assert_eq!(code, 2, "{plain}");
    assert!(plain.lines().all(|l| !l.starts_with('<')), "{plain}");
    assert!(plain.contains(&year()), "no time on the warning: {plain}");
}

/// This year and month (`2026-12`), as log lines' times start with them.
fn year() -> String {
    let now = dynip::model::record::Time::now().rfc3339();
    now[..7].to_string()
}

#[test]
fn check_says_what_the_server_would_do_and_fails_as_it_would() {
    let dir = Dir::new();
    let key = test_key(0x53);
    dir.server_config(
        "127.0.0.1",
        &format!("key = {}\nhttp_listen = 127.0.0.1:0\n", key.encode()),
    );
    let ok = dir.dynip(&["check", CONFIG]);
    assert_eq!(ok.code, 0, "{ok:?}");
    for expected in [
        "store: dynip.sqlite3 (new: created at the first start)",
        "reports: udp on 127.0.0.1:0",
        "accepts: signed with the shared key; unsigned reports refused; from anywhere",
        "http: http on 127.0.0.1:0",
        "dns: off",
    ] {
        assert!(ok.stdout.contains(expected), "no {expected:?} in {ok:?}");
    }
    assert!(!dir.exists(STORE_FILE), "check created the store");

    // Beside a running server it binds none of the server's ports and changes nothing.
    let server = ServerProcess::start(&dir);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    peer.report(&key, "before-check");
    let beside = dir.dynip(&["check", CONFIG]);
    assert_eq!(beside.code, 0, "{beside:?}");
    assert!(
        beside.stdout.contains("a dynip store, has hosts"),
        "{beside:?}"
    );
    peer.report(&key, "after-check");
    drop(server);

    // What would stop the server stops the check, with the server's exit code.
    let cases: [(&str, &str, &str, i32); 3] = [
        (
            "http_listen = 203.0.113.9:8080\n",
            "",
            "not an address of this machine",
            7,
        ),
        ("key = not-a-key\n", "", "key", 3),
        ("", "garbage", "dynip.json", 6),
    ];
    for (extra, json, message, code) in cases {
        let dir = Dir::new();
        dir.server_config("127.0.0.1", extra);
        if !json.is_empty() {
            dir.write(JSON_FILE, json);
        }
        let out = dir.dynip(&["check", CONFIG]);
        assert_eq!(out.code, code, "{extra:?} {json:?}: {out:?}");
        assert!(out.stderr.contains(message), "{extra:?}: {out:?}");
        if !json.is_empty() {
            assert_eq!(
                dir.read(JSON_FILE),
                json.as_bytes(),
                "check changed the file"
            );
        }
    }
}
