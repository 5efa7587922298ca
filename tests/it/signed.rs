//! Version 1: signed reports and their acknowledgements, end to end (docs/PROTOCOL.md).
//!
//! Most tests seal datagrams themselves with `dynip::proto::wire` and send them from their own
//! sockets ([`Peer`]), so that they can replay, alter, truncate and misdirect them. A
//! datagram the server must refuse is followed by a sentinel report from the same socket
//! ([`Peer::assert_unanswered`]): its acknowledgement proves the server has dealt with
//! the datagram before, so the test need not guess how long that takes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use dynip::model::key::Key;
use dynip::model::record::Time;
use dynip::proto::wire;

use crate::harness::*;

/// The host every [`Peer::assert_unanswered`] reports.
const SENTINEL: &str = "sentinel";

/// `[DynIP:Server]` on `server_ip` with the shared key `key`, then `extra`.
fn keyed_config(dir: &Dir, server_ip: &str, key: &Key, extra: &str) {
    dir.server_config(server_ip, &format!("key = {}\n{extra}", key.encode()));
}

/// `[DynIP:Client]` reporting `host` under `key` to `server_hostname`:`port`.
fn client_section(server_hostname: &str, port: u16, host: &str, key: &Key) -> String {
    format!(
        "[DynIP:Client]\nserver_hostname = {server_hostname}\nserver_port = {port}\n\
         hostname = {host}\nkey = {}\n",
        key.encode()
    )
}

/// What a client printed: one `ADDRESS:PORT` per line.
fn seen_lines(out: &Output) -> Vec<SocketAddr> {
    assert!(out.stdout.ends_with('\n'), "{out:?}");
    out.stdout
        .lines()
        .map(|line| {
            line.parse()
                .unwrap_or_else(|e| panic!("{line:?} is not ADDRESS:PORT ({e}): {out:?}"))
        })
        .collect()
}

/// `list --json` without the sentinel host, whose times every check moves.
fn list_without_sentinel(dir: &Dir) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut hosts = dir.list();
    hosts.remove(SENTINEL);
    hosts
}

/// Names for a set of hosts.
fn names(hosts: &[&str]) -> std::collections::BTreeSet<String> {
    hosts.iter().map(|host| host.to_string()).collect()
}

/// A time `minutes` from now.
fn minutes_from_now(minutes: i64) -> Time {
    Time::from_micros(Time::now().as_micros() + minutes * 60_000_000)
}

/// One key in both sections: `dynip client` and `dynipc` are acknowledged, print the
/// address the server saw, and the host is listed as soon as they exit (the server
/// acknowledges only what it has committed).
#[test]
fn client_and_server_with_one_key_agree() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    let cases: [(&str, &[&str], &str); 2] = [
        (DYNIP, &["client", CONFIG], "dynip-host"),
        (DYNIPC, &[CONFIG], "dynipc-host"),
    ];
    for (program, args, host) in cases {
        // One file serves both sides, as in the original (the server read its section
        // when it started).
        keyed_config(
            &dir,
            "127.0.0.1",
            &key,
            &client_section("127.0.0.1", port, host, &key),
        );
        let out = run(program, args, dir.path());
        assert_eq!(out.code, 0, "{program}: {out:?}");
        let seen = seen_lines(&out);
        assert_eq!(seen.len(), 1, "{program}: one line: {out:?}");
        assert_eq!(seen[0].ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{out:?}");
        assert_ne!(seen[0].port(), 0, "{out:?}");
        assert_ne!(seen[0].port(), port, "the server's own port: {out:?}");
        let hosts = dir.list();
        let listed = hosts
            .get(host)
            .unwrap_or_else(|| panic!("{host} not listed after {program} exited: {hosts:?}"));
        assert_eq!(listed["ipv4"]["address"], "127.0.0.1", "{listed}");
    }
    assert_eq!(dir.hosts(), names(&["dynip-host", "dynipc-host"]));
    assert_eq!(server.terminate(), 0);
}

/// The line the client prints is the source the server saw, not the client's own
/// address: behind a relay (as behind a NAT) it is the relay's.
#[test]
fn client_prints_the_source_the_server_saw() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "");
    let mut server = ServerProcess::start(&dir);
    let relay = Relay::start(server.target());
    dir.write(
        "client.conf",
        client_section("127.0.0.1", relay.addr().port(), "behind-nat", &key),
    );
    let out = dir.dynip(&["client", "client.conf"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(seen_lines(&out), [relay.upstream()], "{out:?}");
    assert_eq!(dir.hosts(), names(&["behind-nat"]));
    assert_eq!(server.terminate(), 0);
}

/// A captured report sent again (from its own socket, from another address, after a
/// restart by SIGTERM and after one by `kill -9`) gets no answer and changes nothing:
/// the replay rule's state is in the store, written before the first acknowledgement.
#[test]
fn a_replayed_report_gets_no_answer_and_changes_nothing_even_after_restarts() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "");
    let mut server = ServerProcess::start(&dir);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    let report = seal(&key, "replayed", Time::now());
    peer.send(&report);
    let (_, ack) = peer.expect_ack(&key, &report, "the original report");
    let skew = ack
        .server_time
        .as_micros()
        .abs_diff(Time::now().as_micros());
    assert!(
        skew < 60_000_000,
        "server time {:?} is not now",
        ack.server_time
    );
    let before = dir.list()["replayed"].clone();
    // So that a replay committed from now on would show a later last_seen.
    wait_for_next_second();

    let what = "the report sent again";
    peer.assert_unanswered(&report, &key, SENTINEL, what);
    assert_silent(&[(what, &peer)]);
    assert_eq!(dir.list()["replayed"], before, "{what}: the host changed");

    for how in ["SIGTERM", "kill -9"] {
        if how == "SIGTERM" {
            assert_eq!(server.terminate(), 0);
        } else {
            server.kill9();
        }
        server = ServerProcess::start(&dir);
        // From another address: a replay must not move the host either.
        let peer = Peer::bind("127.0.0.2:0", server.target());
        let what = format!("the report sent again after a restart ({how})");
        peer.assert_unanswered(&report, &key, SENTINEL, &what);
        assert_silent(&[(&what, &peer)]);
        assert_eq!(dir.list()["replayed"], before, "{what}: the host changed");
    }
    assert_eq!(dir.history("replayed").len(), 1);
    // Once the reader has the sentinel's line, it has every line logged before it.
    server.wait_committed(SENTINEL, 1);
    let committed: Vec<(String, String)> = server.committed();
    assert!(
        !committed.iter().any(|(host, _)| host == "replayed"),
        "{committed:?}"
    );

    // The host's next report, sealed afresh, is accepted.
    Peer::bind("127.0.0.1:0", server.target()).report(&key, "replayed");
    assert_eq!(server.terminate(), 0);
}

/// Altered, forged, misused, stale, truncated and misdirected datagrams: no answer,
/// nothing listed, nothing committed. A per-host key reports its own name and the shared
/// key any name.
#[test]
fn forged_altered_and_misused_datagrams_get_no_answer_and_change_nothing() {
    let dir = Dir::new();
    let shared = test_key(1);
    let pc_key = test_key(2);
    let stranger = test_key(3);
    keyed_config(
        &dir,
        "127.0.0.1",
        &shared,
        &format!("[DynIP:Hosts]\npc = {}\n", pc_key.encode()),
    );
    let mut server = ServerProcess::start(&dir);
    let target = server.target();
    let first = Peer::bind("127.0.0.1:0", target);
    let (_, genuine_ack) = first.report(&shared, SENTINEL);
    let before = list_without_sentinel(&dir);
    assert!(before.is_empty(), "{before:?}");

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // One bit flipped in each part of a report: header (magic, version, kind), key
    // identifier, nonce, ciphertext, tag. Each names a host of its own, which would be
    // listed were the report accepted.
    let tag_at = wire::ACK_LEN - wire::TAG_LEN;
    let flips = [
        ("magic", 1),
        ("version", 4),
        ("kind", 5),
        ("key id", 6),
        ("key id", 13),
        ("nonce", 14),
        ("nonce", 37),
        ("ciphertext", 38),
        ("ciphertext", 60),
        ("ciphertext", tag_at - 1),
        ("tag", tag_at),
        ("tag", wire::ACK_LEN - 1),
    ];
    for (part, offset) in flips {
        let mut report = seal(&shared, &format!("flipped-{offset}"), Time::now());
        assert_eq!(report.len(), wire::ACK_LEN, "a short name's report");
        report[offset] ^= 1;
        cases.push((format!("bit flipped in the {part} (byte {offset})"), report));
    }
    cases.push((
        "sealed with a key the server does not know".to_string(),
        seal(&stranger, "stranger", Time::now()),
    ));
    cases.push((
        "pc's key used for nas".to_string(),
        seal(&pc_key, "nas", Time::now()),
    ));
    cases.push((
        "the original's unsigned datagram".to_string(),
        b"legacy-host".to_vec(),
    ));
    cases.push((
        "sealed 10 minutes ago".to_string(),
        seal(&shared, "past-host", minutes_from_now(-10)),
    ));
    cases.push((
        "sealed 10 minutes from now".to_string(),
        seal(&shared, "future-host", minutes_from_now(10)),
    ));
    // A name long enough that the report is longer than an acknowledgement.
    let long = seal(&shared, &"t".repeat(60), Time::now());
    assert!(long.len() > wire::ACK_LEN);
    for len in [
        long.len() - 1,
        long.len() - wire::TAG_LEN,
        wire::ACK_LEN - 1,
        wire::HEADER_LEN,
        wire::MAGIC.len(),
    ] {
        cases.push((format!("truncated to {len} bytes"), long[..len].to_vec()));
    }
    cases.push(("one byte appended".to_string(), [&long[..], &[0]].concat()));
    let forged_ack = wire::Ack {
        report_nonce: fresh_nonce(),
        seen: first.local_addr(),
        server_time: Time::now(),
    };
    cases.push((
        "an acknowledgement".to_string(),
        wire::seal_ack(&shared, &fresh_nonce(), &forged_ack),
    ));
    cases.push((
        "the server's own acknowledgement, sent back".to_string(),
        genuine_ack,
    ));

    let mut peers = Vec::new();
    for (what, datagram) in cases {
        let peer = Peer::bind("127.0.0.1:0", target);
        peer.assert_unanswered(&datagram, &shared, SENTINEL, &what);
        assert_eq!(
            list_without_sentinel(&dir),
            before,
            "{what}: the list changed"
        );
        peers.push((what, peer));
    }
    let peers: Vec<(&str, &Peer)> = peers
        .iter()
        .map(|(what, peer)| (what.as_str(), peer))
        .collect();
    assert_silent(&peers);
    assert_eq!(list_without_sentinel(&dir), before);

    // What is allowed is acknowledged: a per-host key for its own name, the shared key for
    // any name, a clock 4 minutes off (inside the 5 the server allows).
    let peer = Peer::bind("127.0.0.1:0", target);
    peer.report(&pc_key, "pc");
    peer.report(&shared, "pc");
    peer.report(&shared, "nas");
    let skewed = seal(&shared, "skewed-host", minutes_from_now(-4));
    peer.send(&skewed);
    peer.expect_ack(&shared, &skewed, "a report sealed 4 minutes ago");
    let expected = names(&[SENTINEL, "pc", "nas", "skewed-host"]);
    assert_eq!(dir.hosts(), expected);
    server.wait_committed("skewed-host", 1);
    assert_eq!(server.committed_hosts(), expected);
    assert_eq!(server.terminate(), 0);
}

/// A name of `len` bytes: labels of 63 letters between dots.
fn name_of_len(len: usize) -> String {
    (0..len)
        .map(|idx| if idx % 64 == 63 { '.' } else { 'a' })
        .collect()
}

/// The server cannot be used to amplify traffic: whatever the name's length, the
/// acknowledgement is no larger than the report.
#[test]
fn acknowledgements_are_never_larger_than_reports() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "");
    let mut server = ServerProcess::start(&dir);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    let mut hosts = Vec::new();
    for len in [1, 10, 63, 253] {
        let name = name_of_len(len);
        assert_eq!(name.len(), len);
        let (report, ack) = peer.report(&key, &name);
        assert!(
            ack.len() <= report.len(),
            "name of {len} bytes: a {}-byte report, a {}-byte acknowledgement",
            report.len(),
            ack.len()
        );
        hosts.push(name);
    }
    assert_eq!(dir.hosts(), hosts.into_iter().collect());
    assert_eq!(server.terminate(), 0);
}

/// Forged datagrams sent in the flood of the rate-limit test.
const N_FORGED: usize = 300;

/// A source sending much that does not authenticate is dropped for a while (20
/// failures a second, bursts of 100); another source is not, and the first is heard again
/// once its bucket refills.
#[test]
fn a_flood_of_forgeries_is_rate_limited_per_source() {
    let dir = Dir::new();
    let key = test_key(1);
    let forger = test_key(9);
    keyed_config(&dir, "127.0.0.1", &key, "");
    let mut server = ServerProcess::spawn(&dir, DYNIP, &["--debug", "server", CONFIG]);
    let target = server.target();

    // Sealed beforehand, so that the flood is fast: reports under a key the server does not
    // know, and a genuine report with its tag altered.
    let mut altered = seal(&key, "altered", Time::now());
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let forged: Vec<Vec<u8>> = (0..N_FORGED)
        .map(|idx| {
            if idx % 2 == 0 {
                seal(&forger, "forged", Time::now())
            } else {
                altered.clone()
            }
        })
        .collect();
    let flooder = Peer::bind("127.0.0.1:0", target);
    let flood_started = Instant::now();
    for datagram in &forged {
        flooder.send(datagram);
    }
    // A genuine report right after, from the same socket: it may be refused.
    let mut sent = Vec::new();
    let at_once = seal(&key, "flooder", Time::now());
    flooder.send(&at_once);
    sent.push(nonce_of(&at_once));

    // Another source is heard at once: its first report is acknowledged.
    let bystander = Peer::bind("127.0.0.2:0", target);
    bystander.report(&key, "bystander");

    // The flooding source is heard again once it has tokens, within a few seconds.
    let deadline = flood_started + Duration::from_secs(10);
    loop {
        if let Some(bytes) = flooder.recv_within(Duration::from_millis(500)) {
            let ack = wire::open_ack(&key, &bytes)
                .unwrap_or_else(|e| panic!("the flooder got {} bytes back: {e}", bytes.len()));
            assert!(sent.contains(&ack.report_nonce), "an ack of a forgery");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flooding source is still not heard 10 s after its flood"
        );
        let retry = seal(&key, "flooder", Time::now());
        flooder.send(&retry);
        sent.push(nonce_of(&retry));
    }

    // Every forgery was dropped (the flooder's report came after them), and most of them
    // without being looked at: at most the burst of 100 and 20 a second were charged.
    let flooder_addr = flooder.local_addr().to_string();
    let dropped_from = |reason: &str| -> Vec<String> {
        server
            .stderr_lines("dropping datagram")
            .into_iter()
            .filter(|line| line.contains(reason))
            .collect()
    };
    eventually("every forgery dropped", || {
        let n_dropped = dropped_from("")
            .iter()
            .filter(|line| field(line, "peer") == flooder_addr)
            .count();
        (n_dropped >= N_FORGED).then_some(())
    });
    let limited = dropped_from("rate-limited");
    assert!(
        limited.len() >= 100,
        "only {} of {N_FORGED} forgeries rate-limited",
        limited.len()
    );
    for line in &limited {
        assert_eq!(field(line, "peer"), flooder_addr, "{line}");
    }
    assert_eq!(dir.hosts(), names(&["bystander", "flooder"]));
    assert_eq!(server.terminate(), 0);
}

/// `allow_from`: a source outside it is ignored, even with a valid report.
#[test]
fn allow_from_ignores_other_sources() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "allow_from = 127.0.0.2/32\n");
    let mut server = ServerProcess::spawn(&dir, DYNIP, &["--debug", "server", CONFIG]);
    let target = server.target();
    let outsider = Peer::bind("127.0.0.1:0", target);
    outsider.send(&seal(&key, "outsider", Time::now()));
    let outsider_addr = outsider.local_addr().to_string();
    eventually("the outsider's report dropped", || {
        server
            .stderr_lines("not in allow_from")
            .iter()
            .any(|line| field(line, "peer") == outsider_addr)
            .then_some(())
    });
    let insider = Peer::bind("127.0.0.2:0", target);
    insider.report(&key, "insider");
    assert_silent(&[("a report from outside allow_from", &outsider)]);
    assert_eq!(dir.hosts(), names(&["insider"]));
    assert_eq!(server.terminate(), 0);
}

/// SIGHUP puts a new per-host key in force; a config that no longer parses is logged
/// as an error and the keys in force stay.
#[test]
fn sighup_reloads_keys_and_keeps_them_when_the_config_is_broken() {
    let dir = Dir::new();
    let shared = test_key(1);
    let pc_key = test_key(2);
    keyed_config(&dir, "127.0.0.1", &shared, "");
    let mut server = ServerProcess::start(&dir);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    let early = seal(&pc_key, "pc", Time::now());
    let what = "pc's key before the server has it";
    peer.assert_unanswered(&early, &shared, SENTINEL, what);
    assert_eq!(dir.hosts(), names(&[SENTINEL]), "{what}");

    keyed_config(
        &dir,
        "127.0.0.1",
        &shared,
        &format!("[DynIP:Hosts]\npc = {}\n", pc_key.encode()),
    );
    let mut seen_lines = 0;
    server.hangup();
    eventually("the reload logged", || {
        server
            .logged_since("reloaded", &mut seen_lines)
            .then_some(())
    });
    peer.report(&pc_key, "pc");

    dir.write(
        CONFIG,
        "[DynIP:Server]\nthis line is neither a section nor a key\n",
    );
    server.hangup();
    eventually("the refused reload logged", || {
        server
            .logged_since("config refused", &mut seen_lines)
            .then_some(())
    });
    let errors = server.stderr_lines("config refused");
    assert!(
        errors
            .iter()
            .all(|line| line.contains("ERROR") && line.contains(CONFIG)),
        "{errors:?}"
    );
    assert!(server.is_running(), "the server died on a broken config");
    peer.report(&pc_key, "pc");
    peer.report(&shared, SENTINEL);
    // `dynip list` reads the config too: give it one that parses (no SIGHUP).
    keyed_config(&dir, "127.0.0.1", &shared, "");
    assert_eq!(dir.hosts(), names(&[SENTINEL, "pc"]));
    assert_eq!(server.terminate(), 0);
}

/// `allow_unsigned = yes` beside a key: both the original's datagram and a signed
/// report are accepted.
#[test]
fn allow_unsigned_accepts_both_kinds() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "127.0.0.1", &key, "allow_unsigned = yes\n");
    let mut server = ServerProcess::start(&dir);
    server.send(b"legacy-host\n");
    server.wait_committed("legacy-host", 1);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    peer.report(&key, "signed-host");
    let hosts = dir.list();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for host in ["legacy-host", "signed-host"] {
        assert_eq!(hosts[host]["ipv4"]["address"], "127.0.0.1", "{host}");
    }
    assert_eq!(server.terminate(), 0);
}

/// A client whose key the server does not have hears nothing, gives up after its
/// retries, exits 10, and says what to check.
#[test]
fn client_with_a_wrong_key_exits_10_naming_the_likely_causes() {
    let dir = Dir::new();
    keyed_config(&dir, "127.0.0.1", &test_key(1), "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    dir.write(
        "client.conf",
        client_section("127.0.0.1", port, "wrong-key-host", &test_key(2)),
    );
    let started = Instant::now();
    let out = dir.dynip(&["client", "client.conf"]);
    let took = started.elapsed();
    assert_eq!(out.code, 10, "{out:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    for cause in ["key", "clock", "firewall"] {
        assert!(out.stderr.contains(cause), "names the {cause}: {out:?}");
    }
    assert!(dir.hosts().is_empty());
    assert_eq!(server.terminate(), 0);
}

/// `dynip add-host` prints two blocks; pasted into the server's and the host's
/// configs, they make a working pair, and the key reports that name only.
#[test]
fn add_host_prints_lines_that_make_a_working_pair() {
    let dir = Dir::new();
    let shared = test_key(1);
    keyed_config(&dir, "127.0.0.1", &shared, "");
    let out = dir.dynip(&["add-host", CONFIG, "kitchen-pc"]);
    assert_eq!(out.code, 0, "{out:?}");
    let blocks: Vec<&str> = out.stdout.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "two blocks: {out:?}");
    let server_lines = settings(blocks[0]);
    let client_lines = settings(blocks[1]);
    assert_eq!(server_lines.len(), 1, "{server_lines:?}");
    assert_eq!(server_lines[0].0, "kitchen-pc", "{server_lines:?}");
    let minted = &server_lines[0].1;
    assert_eq!(
        client_lines,
        [
            ("hostname".to_string(), "kitchen-pc".to_string()),
            ("key".to_string(), minted.clone())
        ],
        "{out:?}"
    );
    let minted = Key::parse(minted).unwrap_or_else(|e| panic!("{minted:?}: {e}"));
    assert_ne!(minted, shared, "the shared key handed out");
    let again = dir.dynip(&["add-host", CONFIG, "kitchen-pc"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_ne!(again.stdout, out.stdout, "the same key minted twice");

    keyed_config(
        &dir,
        "127.0.0.1",
        &shared,
        &format!("[DynIP:Hosts]\n{}\n", blocks[0]),
    );
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    dir.write(
        "client.conf",
        format!(
            "[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n{}\n",
            blocks[1]
        ),
    );
    let client = dir.dynip(&["client", "client.conf"]);
    assert_eq!(client.code, 0, "{client:?}");
    let seen = seen_lines(&client);
    assert_eq!(seen.len(), 1, "{client:?}");
    assert_eq!(seen[0].ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{client:?}");
    assert_eq!(dir.hosts(), names(&["kitchen-pc"]));

    let peer = Peer::bind("127.0.0.1:0", server.target());
    let what = "kitchen-pc's key used for another name";
    peer.assert_unanswered(
        &seal(&minted, "other", Time::now()),
        &shared,
        SENTINEL,
        what,
    );
    assert_silent(&[(what, &peer)]);
    assert_eq!(dir.hosts(), names(&["kitchen-pc", SENTINEL]));
    assert_eq!(server.terminate(), 0);
}

/// A host that reported over both families has both addresses in `list` and both
/// changes in `history`.
#[test]
fn list_and_history_show_both_families() {
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "*", &key, "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    let v4 = Peer::bind("127.0.0.1:0", SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    v4.report(&key, "dual");
    // Without a usable ::1 (IPv6 disabled), only the IPv4 half can be checked.
    let ipv6 = ipv6_loopback_works();
    if ipv6 {
        let v6 = Peer::bind("[::1]:0", SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
        v6.report(&key, "dual");
    }

    let host = dir.list()["dual"].clone();
    assert_eq!(host["ipv4"]["address"], "127.0.0.1", "{host}");
    let history: Vec<String> = dir
        .history("dual")
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    let table = dir.dynip(&["history", CONFIG, "dual"]);
    assert_eq!(table.code, 0, "{table:?}");
    let list_table = dir.dynip(&["list", CONFIG]);
    assert_eq!(list_table.code, 0, "{list_table:?}");
    let row = list_table
        .stdout
        .lines()
        .find(|line| line.starts_with("dual"))
        .unwrap_or_else(|| panic!("no row for dual: {list_table:?}"));
    assert!(row.contains("127.0.0.1"), "{list_table:?}");
    if ipv6 {
        assert_eq!(host["ipv6"]["address"], "::1", "{host}");
        assert_eq!(history, ["127.0.0.1", "::1"]);
        for (family, addr) in [("ipv4", "127.0.0.1"), ("ipv6", "::1")] {
            assert!(
                table
                    .stdout
                    .lines()
                    .any(|line| line.contains(family) && line.ends_with(addr)),
                "no {family} line in history: {table:?}"
            );
        }
        assert!(row.contains("::1"), "{list_table:?}");
    } else {
        assert!(host["ipv6"].is_null(), "{host}");
        assert_eq!(history, ["127.0.0.1"]);
    }
    assert_eq!(server.terminate(), 0);
}

/// When the server's name resolves to both families, the client reports over each,
/// prints one line per family, and the server records both.
#[test]
fn client_reports_over_both_families_of_the_servers_name() {
    let resolved: Vec<SocketAddr> = match ("localhost", 1).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        // Without a resolvable localhost there is nothing to check here.
        Err(_) => return,
    };
    let first_v4 = resolved.iter().find(|addr| addr.is_ipv4()).map(|a| a.ip());
    // Where localhost has no IPv6 address (or ::1 is unusable), only one family can be
    // checked: the client must then print that one line.
    let first_v6 = resolved
        .iter()
        .find(|addr| addr.is_ipv6())
        .map(|a| a.ip())
        .filter(|_| ipv6_loopback_works());
    let dir = Dir::new();
    let key = test_key(1);
    keyed_config(&dir, "*", &key, "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    dir.write(
        "client.conf",
        client_section("localhost", port, "both-families", &key),
    );
    let out = dir.dynip(&["client", "client.conf"]);
    assert_eq!(out.code, 0, "{out:?}");
    let seen = seen_lines(&out);
    let expected: Vec<IpAddr> = first_v4.into_iter().chain(first_v6).collect();
    let seen_ips: Vec<IpAddr> = seen.iter().map(SocketAddr::ip).collect();
    assert_eq!(
        seen_ips.len(),
        expected.len(),
        "one line per family: {out:?}"
    );
    for (seen, expected) in seen_ips.iter().zip(&expected) {
        assert!(seen.is_loopback(), "{out:?}");
        assert_eq!(seen.is_ipv4(), expected.is_ipv4(), "v4 first: {out:?}");
    }

    let host = dir.list()["both-families"].clone();
    for (family, ip) in [
        ("ipv4", seen_ips.iter().find(|ip| ip.is_ipv4())),
        ("ipv6", seen_ips.iter().find(|ip| ip.is_ipv6())),
    ] {
        match ip {
            Some(ip) => assert_eq!(host[family]["address"], ip.to_string(), "{host}"),
            None => assert!(host[family].is_null(), "{host}"),
        }
    }
    assert_eq!(server.terminate(), 0);
}

/// Two hosts given the same per-host key (one key copied to two machines). DESIGN 4 says
/// of a per-host key that "that name may only be reported with that key": each name's
/// key is this one, so each may report with it. Today the last host listed takes the key
/// and the other's reports are dropped, with nothing above DEBUG in the log, and its
/// client exits 10.
#[test]
fn one_key_given_to_two_hosts_serves_both() {
    let dir = Dir::new();
    let shared = test_key(1);
    let copied = test_key(2);
    keyed_config(
        &dir,
        "127.0.0.1",
        &shared,
        &format!(
            "[DynIP:Hosts]\nlaptop-a = {copied}\nlaptop-b = {copied}\n",
            copied = copied.encode()
        ),
    );
    let mut server = ServerProcess::start(&dir);
    let peer = Peer::bind("127.0.0.1:0", server.target());
    for host in ["laptop-a", "laptop-b"] {
        // A sentinel after the report: if the sentinel's ack comes first, the report was
        // dropped (no need to wait out a timeout).
        let report = seal(&copied, host, Time::now());
        peer.send(&report);
        let sentinel = seal(&shared, SENTINEL, Time::now());
        peer.send(&sentinel);
        let first = peer.recv_within(TIMEOUT).expect("an answer");
        let ack = wire::open_ack(&copied, &first);
        assert!(
            ack.as_ref()
                .is_ok_and(|ack| ack.report_nonce == nonce_of(&report)),
            "{host}: its key from [DynIP:Hosts] is refused for it (no acknowledgement before the \
             sentinel's; the first answer opened with that key: {ack:?})"
        );
        let second = peer.recv_within(TIMEOUT).expect("the sentinel's ack");
        let ack = wire::open_ack(&shared, &second).expect("the sentinel's ack");
        assert_eq!(ack.report_nonce, nonce_of(&sentinel));
    }
    assert_eq!(dir.hosts(), names(&["laptop-a", "laptop-b", SENTINEL]));
    assert_eq!(server.terminate(), 0);
}
