//! What survives: SIGTERM, a restart, and `kill -9` in the middle of a flood.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

/// SIGTERM while reports are still arriving: exit 0, and everything the server logged as
/// committed is in the store and in the JSON file, nothing more.
#[test]
fn sigterm_commits_and_exports_everything_received() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    // A burst, then a flood that is still running when SIGTERM arrives.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
    for idx in 0..200 {
        let _ = socket.send_to(format!("burst-{idx}").as_bytes(), server.target());
    }
    let flood = Flood::start(server.target(), "flood");
    // SIGTERM as soon as the server is busy (and never before: the test must not be
    // vacuous).
    eventually("a first committed report", || {
        (server.n_committed() > 0).then_some(())
    });
    assert_eq!(server.terminate(), 0, "exit status after SIGTERM");
    let n_flooded = flood.stop();

    let committed = server.committed_hosts();
    assert!(!committed.is_empty());
    for name in &committed {
        assert!(
            was_sent(name, "burst", 200) || was_sent(name, "flood", n_flooded),
            "{name}"
        );
    }
    assert_eq!(dir.hosts(), committed, "the store holds what was logged");
    assert_eq!(
        dir.exported_hosts(),
        committed,
        "the JSON file holds what was logged"
    );
}

/// A restart keeps the hosts and the history; new reports add to them; an address change
/// adds a history entry, which survives another restart.
#[test]
fn restart_keeps_hosts_and_history() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    server.send(b"alpha");
    server.send(b"beta");
    server.wait_committed("alpha", 1);
    server.wait_committed("beta", 1);
    let before = dir.list();
    assert_eq!(server.interrupt(), 0, "exit status after SIGINT");
    assert_eq!(dir.list(), before, "after a clean stop");
    assert_eq!(dir.exported_hosts(), before.keys().cloned().collect());

    let mut server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), before, "after a restart");
    let alpha_history = dir.history("alpha");
    assert_eq!(alpha_history.len(), 1, "{alpha_history:?}");
    assert_eq!(alpha_history[0].1, "127.0.0.1");

    server.send(b"gamma");
    server.wait_committed("gamma", 1);
    let hosts = dir.hosts();
    let expect: BTreeSet<String> = ["alpha", "beta", "gamma"].map(String::from).into();
    assert_eq!(hosts, expect);

    server.send_from("127.0.0.2:0", b"alpha");
    server.wait_committed("alpha", 1);
    let after_move = dir.list();
    let alpha = &after_move["alpha"];
    assert_eq!(alpha["ipv4"]["address"], "127.0.0.2", "{alpha}");
    assert_eq!(
        alpha["first_seen"], before["alpha"]["first_seen"],
        "{alpha}"
    );
    assert_eq!(
        after_move["beta"], before["beta"],
        "beta did not report again"
    );
    let alpha_history = dir.history("alpha");
    assert_eq!(alpha_history.len(), 2, "{alpha_history:?}");
    assert_eq!(alpha_history[0], dir.history("ALPHA")[0]);
    assert_eq!(alpha_history[0].1, "127.0.0.1");
    assert_eq!(alpha_history[1].1, "127.0.0.2");
    assert_eq!(dir.history("beta").len(), 1);
    assert_eq!(server.terminate(), 0);
    let export = dir.export().expect("the JSON file");
    assert_eq!(export["alpha"].0, "127.0.0.2");
    assert_eq!(export.len(), 3, "{export:?}");

    let mut server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), after_move, "after a second restart");
    assert_eq!(dir.history("alpha"), alpha_history);
    assert_eq!(server.terminate(), 0);
}

/// `kill -9` in the middle of a flood of reports: the store opens, keeps every host that
/// `list` ever showed, holds only hosts that were sent; the JSON file parses; the server
/// starts again on the same files and changes nothing.
#[test]
fn kill_9_under_load_loses_nothing_committed() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    let flood = Flood::start(server.target(), "host");

    let started = Instant::now();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut n_snapshots = 0;
    while started.elapsed() < Duration::from_millis(1500) || seen.is_empty() {
        assert!(
            started.elapsed() < TIMEOUT,
            "nothing committed after {TIMEOUT:?} of reports"
        );
        seen.extend(dir.hosts());
        n_snapshots += 1;
    }
    assert!(server.is_running(), "the server died under load");
    server.kill9();
    let n_sent = flood.stop();

    let after = dir.list();
    let missing: Vec<&String> = seen
        .iter()
        .filter(|name| !after.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "{} hosts listed before kill -9 are gone (of {} seen in {n_snapshots} snapshots): {:?}",
        missing.len(),
        seen.len(),
        &missing[..missing.len().min(10)]
    );
    for name in after.keys() {
        assert!(was_sent(name, "host", n_sent), "{name} was never sent");
    }
    if let Some(export) = dir.export() {
        for name in export.keys() {
            assert!(after.contains_key(name), "{name} exported but not stored");
        }
    }

    let mut server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), after, "the restarted server changed the store");
    assert_eq!(server.terminate(), 0);
    assert_eq!(dir.list(), after, "after the restarted server stopped");
    let exported = dir.exported_hosts();
    assert_eq!(
        exported,
        after.into_keys().collect(),
        "the JSON file after restart"
    );
}

/// A thread sending reports for `PREFIX-0`, `PREFIX-1`, ... as fast as it can.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Flood {
    fn start(target: SocketAddr, prefix: &'static str) -> Flood {
        Flood::cycling(target, prefix, u64::MAX)
    }

    /// Sends for `PREFIX-0` to `PREFIX-(n_names - 1)`, round and round.
    fn cycling(target: SocketAddr, prefix: &'static str, n_names: u64) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
                let mut n_sent: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    // The kernel may drop some when the server falls behind, or refuse
                    // them once it is gone: fine.
                    let _ =
                        socket.send_to(format!("{prefix}-{}", n_sent % n_names).as_bytes(), target);
                    n_sent += 1;
                }
                n_sent
            })
        };
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; returns how many reports it sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("a running flood");
        thread.join().expect("the flood thread")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether `name` is `PREFIX-IDX` with `IDX < n_sent`.
fn was_sent(name: &str, prefix: &str, n_sent: u64) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|idx| idx.parse::<u64>().ok())
        .is_some_and(|idx| idx < n_sent)
}

/// The store folds its journal into its snapshot once the journal is long (more than
/// 65,536 rows): a host that last reported before a restart must survive that, in the
/// store and in the JSON file.
#[test]
fn compaction_after_a_restart_keeps_hosts_that_did_not_report_since() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    server.send(b"quiet-host");
    server.wait_committed("quiet-host", 1);
    assert_eq!(server.terminate(), 0);
    let quiet = dir.list()["quiet-host"].clone();
    let quiet_history = dir.history("quiet-host");
    assert_eq!(quiet_history.len(), 1, "{quiet_history:?}");

    // Enough reports from other hosts to start a compaction sweep; --debug says when the
    // sweep is done.
    let mut server = ServerProcess::spawn(&dir, DYNIP, &["--debug", "server", CONFIG]);
    // At most WINDOW reports in flight, so that none is dropped and the sender leaves the
    // CPU to the server; so a batch holds at most WINDOW reports, of as many names (the
    // journal gets a row per name per batch, and the sweep starts at 65,536 rows). Few
    // names beyond that, so that the sweep has few chunks to write.
    const N_NAMES: usize = 8192;
    const WINDOW: usize = 4096;
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
    let started = Instant::now();
    let mut n_sent = 0;
    let mut n_lines_seen = 0;
    while !server.logged_since("compaction sweep done", &mut n_lines_seen) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no compaction sweep after 90 s of reports ({} committed)",
            server.n_committed()
        );
        let n_committed = server.n_committed();
        if n_sent > n_committed + WINDOW {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for _ in 0..WINDOW / 4 {
            let name = format!("busy-{}", n_sent % N_NAMES);
            let _ = socket.send_to(name.as_bytes(), server.target());
            n_sent += 1;
        }
    }
    assert_eq!(server.terminate(), 0);

    let hosts = dir.list();
    assert_eq!(
        hosts.get("quiet-host"),
        Some(&quiet),
        "quiet-host lost by the compaction"
    );
    // Its history row was logged before the restart and settled by the sweep after it;
    // the busy hosts' rows were logged and settled in this run: each is read once.
    assert_eq!(dir.history("quiet-host"), quiet_history);
    assert_eq!(dir.history("busy-0").len(), 1);
    assert_eq!(dir.history(&format!("busy-{}", N_NAMES - 1)).len(), 1);
    // The store agrees with the JSON file the server wrote from memory at shutdown.
    let export = dir.export().expect("the JSON file");
    assert_eq!(
        export.keys().collect::<Vec<_>>(),
        hosts.keys().collect::<Vec<_>>()
    );
    for (name, (addr, time)) in &export {
        let host = &hosts[name];
        assert_eq!(host["ipv4"]["address"], addr.as_str(), "{name}");
        let second = format!("{}Z", time[..19].replace(' ', "T"));
        assert_eq!(host["last_seen"], second.as_str(), "{name}");
    }

    let mut server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), hosts, "after a restart");
    assert_eq!(dir.history("quiet-host"), quiet_history, "after a restart");
    assert!(dir.exported_hosts().contains("quiet-host"));
    assert_eq!(server.terminate(), 0);
}

/// A store that cannot grow (the file size limit, as on a full disk): updates past it
/// are answered `dnserr`, never `good`; the server keeps running; and after a restart
/// without the limit every host answered `good` is there, with its address and history.
#[test]
fn a_full_disk_refuses_reports_and_loses_none_it_acknowledged() {
    let dir = Dir::new();
    let key = test_key(70);
    dir.server_config(
        "127.0.0.1",
        &format!("http_listen = 127.0.0.1:0\nkey = {}\n", key.encode()),
    );
    // 2,048 blocks a file (1 MiB in dash's 512-byte blocks, 2 MiB in bash's), and EFBIG
    // instead of SIGXFSZ past it.
    let limited = format!("trap '' XFSZ; ulimit -f 2048; exec {DYNIP} -v server {CONFIG}");
    let mut server = ServerProcess::spawn(&dir, "sh", &["-c", &limited]);
    let addr = server.listening_http();
    // Until the store has refused 50 updates: commits fail while the log or the file is
    // at the limit, and may succeed again once a checkpoint lets the log start over.
    let mut good = Vec::new();
    let mut n_refused = 0;
    for i in 0..20_000u32 {
        let host = format!("host-{i}");
        let ip = std::net::Ipv4Addr::from(0xc612_0000 | (i & 0x1_ffff));
        let (status, body) =
            crate::harness::http::update(addr, &key, &format!("hostname={host}&myip={ip}"));
        assert_eq!(status, 200, "{body}");
        match body.trim() {
            answer if answer == format!("good {ip}") => good.push((host, ip.to_string())),
            "dnserr" => n_refused += 1,
            other => panic!("unexpected answer {other:?} for {host}"),
        }
        if n_refused == 50 {
            break;
        }
    }
    assert_eq!(
        n_refused,
        50,
        "the store never filled up ({} good)",
        good.len()
    );
    assert!(!good.is_empty(), "nothing fitted");
    assert!(server.is_running(), "the server stopped at a full store");
    assert!(
        server
            .stderr()
            .iter()
            .any(|line| line.contains("commit failed")),
        "no ERROR line for the failed commits"
    );
    // The checkpointer copies the log into the file, the log starts over, and commits
    // succeed again: the writer does not stay broken after a failure.
    let started = Instant::now();
    loop {
        let (_, body) = crate::harness::http::update(addr, &key, "hostname=later&myip=192.0.2.1");
        match body.trim() {
            "good 192.0.2.1" => break,
            "dnserr" if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("no recovery after a full log: {other:?}"),
        }
    }
    good.push(("later".to_string(), "192.0.2.1".to_string()));
    assert_eq!(server.terminate(), 0);

    let server = ServerProcess::start(&dir);
    let hosts = dir.list();
    for (host, ip) in &good {
        assert_eq!(
            hosts.get(host).map(|h| h["ipv4"]["address"].as_str()),
            Some(Some(ip.as_str())),
            "{host} was answered good and is gone"
        );
    }
    for (host, ip) in [good.first(), good.last()].into_iter().flatten() {
        let history = dir.history(host);
        assert_eq!(history.len(), 1, "{host}: {history:?}");
        assert_eq!(&history[0].1, ip, "{host}");
    }
    drop(server);
}
