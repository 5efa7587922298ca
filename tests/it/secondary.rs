//! A real secondary (NSD, Debian's `nsd`) follows the zone: it transfers it over AXFR,
//! hears NOTIFY after a report, transfers again, and answers the new address itself;
//! with `dns_hide_stale` it follows a host going stale and coming back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::dns::{ask, serial, try_ask, ZONE};
use crate::harness::*;

/// NSD as a non-daemon child (`nsd -d`) with its config, zone files and state in `dir`,
/// never dropping privileges (`username: ""`), killed on drop.
pub struct Nsd {
    child: Child,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Nsd {
    /// NSD on `127.0.0.1@port`; `zone_config` goes under `zone:` (after `name:`).
    pub fn start_on(dir: &Path, port: u16, zone_config: &str) -> Nsd {
        let state = dir.join("nsd");
        std::fs::create_dir_all(&state).expect("NSD's directory");
        let state = state.display();
        let config = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n\
             \x20 zonesdir: \"{state}\"\n  database: \"\"\n  zonelistfile: \"{state}/zone.list\"\n\
             \x20 xfrdfile: \"{state}/xfrd.state\"\n  xfrdir: \"{state}\"\n  pidfile: \"{state}/nsd.pid\"\n\
             \x20 logfile: \"{state}/nsd.log\"\n  verbosity: 2\n  server-count: 1\n  tcp-count: 10\n\
             \x20 reuseport: no\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: \"{ZONE}\"\n{zone_config}"
        );
        let config_path = dir.join("nsd.conf");
        std::fs::write(&config_path, config).expect("write nsd.conf");
        // Every test that starts one has checked with `peers_present`.
        let nsd = which("nsd").expect("nsd on PATH");
        let child = command(nsd.to_str().expect("a UTF-8 path"), dir)
            .args(["-d", "-c"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsd (Debian package nsd): {e}"));
        Nsd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("nsd").join("nsd.log"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nsd log ---\n{}", self.log());
        }
    }
}

/// A primary with `extra` config that lets 127.0.0.1 transfer the zone and notifies
/// NSD on `nsd_port`, once it knows the host `first`.
fn start_primary(dir: &Dir, nsd_port: u16, extra: &str, first: &str) -> ServerProcess {
    dir.server_config(
        "127.0.0.1",
        &format!(
            "dns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\ndns_transfer_to = 127.0.0.1/32\n\
             dns_notify = 127.0.0.1:{nsd_port}\n{extra}"
        ),
    );
    let server = ServerProcess::start(dir);
    server.send(first.as_bytes());
    server.wait_committed(first, 1);
    server
}

/// NSD on `nsd_port`, a secondary of `primary` that transfers with `protocol` (`AXFR `,
/// or empty for IXFR first) and hears its NOTIFY.
fn start_secondary(dir: &Dir, nsd_port: u16, primary: SocketAddr, protocol: &str) -> Nsd {
    Nsd::start_on(
        dir.path(),
        nsd_port,
        &format!(
            "  zonefile: \"{ZONE}.zone\"\n  request-xfr: {protocol}127.0.0.1@{} NOKEY\n  allow-notify: 127.0.0.1 NOKEY\n",
            primary.port()
        ),
    )
}

#[test]
fn nsd_transfers_the_zone_hears_notify_and_answers_new_addresses() {
    if !peers_present(
        "secondary::nsd_transfers_the_zone_hears_notify_and_answers_new_addresses",
        &["nsd", "dig", "kdig"],
    ) {
        return;
    }
    follows_the_zone("AXFR ");
}

/// NSD asks for IXFR first when `request-xfr` names no protocol; dynip answers with the
/// whole zone, as RFC 1995 allows.
#[test]
fn nsd_asking_for_ixfr_gets_the_whole_zone() {
    if !peers_present(
        "secondary::nsd_asking_for_ixfr_gets_the_whole_zone",
        &["nsd", "dig", "kdig"],
    ) {
        return;
    }
    follows_the_zone("");
}

fn follows_the_zone(protocol: &str) {
    let dir = Dir::new();
    // NSD's port is only known once it is chosen; dynip must know it to notify.
    let nsd_port = free_port();
    let mut server = start_primary(&dir, nsd_port, "", "alpha");
    let primary = server.listening("dns");
    let nsd = start_secondary(&dir, nsd_port, primary, protocol);
    // NSD may not listen yet: a refused query is tried again, as an empty answer is.
    let first = eventually("NSD to answer alpha after its first transfer", || {
        let answer = try_ask(&dir, "dig", nsd.addr, &["alpha.dyn.example.com", "A"]).ok()?;
        (answer.answer.len() == 1).then_some(answer)
    });
    assert_eq!(
        first.answer,
        ["alpha.dyn.example.com. 60 IN A 127.0.0.1"],
        "{}",
        first.text
    );
    assert!(
        first.has_flag("aa"),
        "NSD answers authoritatively\n{}",
        first.text
    );
    let serial_before = serial(&ask(&dir, "dig", nsd.addr, &[ZONE, "SOA"]));

    // A new host and a moved one: NSD's refresh is 300 s, so only a NOTIFY brings them
    // within the wait.
    server.send_from("127.0.0.2:0", b"beta");
    server.send_from("127.0.0.3:0", b"alpha");
    server.wait_committed("beta", 1);
    server.wait_committed("alpha", 2);
    let beta = eventually("NSD to answer beta after a NOTIFY", || {
        let answer = ask(&dir, "kdig", nsd.addr, &["beta.dyn.example.com", "A"]);
        (answer.answer.len() == 1).then_some(answer)
    });
    assert_eq!(
        beta.answer,
        ["beta.dyn.example.com. 60 IN A 127.0.0.2"],
        "{}",
        beta.text
    );
    let alpha = ask(&dir, "dig", nsd.addr, &["alpha.dyn.example.com", "A"]);
    assert_eq!(
        alpha.answer,
        ["alpha.dyn.example.com. 60 IN A 127.0.0.3"],
        "{}",
        alpha.text
    );
    let serial_after = serial(&ask(&dir, "dig", nsd.addr, &[ZONE, "SOA"]));
    assert!(
        serial_after > serial_before,
        "{serial_before} -> {serial_after}"
    );
    assert!(
        !server.stderr_lines("notify acknowledged").is_empty(),
        "{}",
        server.stderr_tail()
    );
    assert!(
        server.stderr_lines("zone transferred").len() >= 2,
        "{}",
        server.stderr_tail()
    );
    if protocol.is_empty() {
        let asked = server.stderr_lines("qtype=IXFR");
        assert!(
            !asked.is_empty(),
            "NSD asked for IXFR\n{}",
            server.stderr_tail()
        );
    }
    let nxdomain = ask(&dir, "dig", nsd.addr, &["gamma.dyn.example.com", "A"]);
    assert_eq!(nxdomain.status, "NXDOMAIN", "{}", nxdomain.text);

    // Nobody outside dns_transfer_to gets the zone.
    let out = run(
        "dig",
        &[
            "@127.0.0.1",
            "-p",
            &primary.port().to_string(),
            "-b",
            "127.0.0.9",
            "+time=2",
            "+tries=1",
            ZONE,
            "AXFR",
        ],
        dir.path(),
    );
    assert!(
        out.stdout.contains("Transfer failed") || out.stdout.contains("REFUSED"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("alpha"), "{out:?}");
    assert!(!server.stderr_lines("zone transfer refused").is_empty());
    drop(nsd);
    assert_eq!(server.terminate(), 0);
}

/// With `dns_hide_stale`, a host going stale changes the zone with no report at all: the
/// serial rises, NSD hears NOTIFY and stops answering for it too, and answers again once
/// the host reports the same address again.
#[test]
fn nsd_follows_a_host_going_stale_and_coming_back() {
    if !peers_present(
        "secondary::nsd_follows_a_host_going_stale_and_coming_back",
        &["nsd", "dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let nsd_port = free_port();
    let extra = "stale_after = 2s\ndns_hide_stale = yes\n";
    let mut server = start_primary(&dir, nsd_port, extra, "fading");
    let primary = server.listening("dns");
    let nsd = start_secondary(&dir, nsd_port, primary, "AXFR ");
    let name = "fading.dyn.example.com";
    let status = |dir: &Dir| {
        try_ask(dir, "dig", nsd.addr, &[name, "A"])
            .ok()
            .map(|answer| (answer.status.clone(), answer.answer.len()))
    };
    eventually("NSD to answer fading", || {
        (status(&dir) == Some(("NOERROR".to_owned(), 1))).then_some(())
    });
    eventually("NSD to stop answering fading once it is stale", || {
        (status(&dir).is_some_and(|(status, _)| status == "NXDOMAIN")).then_some(())
    });
    server.send(b"fading");
    server.wait_committed("fading", 2);
    eventually("NSD to answer fading again", || {
        (status(&dir) == Some(("NOERROR".to_owned(), 1))).then_some(())
    });
    drop(nsd);
    assert_eq!(server.terminate(), 0);
}

/// NSD transfers the zone signed with the shared key (TSIG key `dynip`, no
/// `dns_transfer_to`), and after an UPDATE and its NOTIFY answers the new TXT records.
#[test]
fn nsd_receives_txt_records_over_a_signed_transfer_after_notify() {
    if !peers_present(
        "secondary::nsd_receives_txt_records_over_a_signed_transfer_after_notify",
        &["nsd", "dig", "nsupdate"],
    ) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(91);
    let nsd_port = free_port();
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n\
             dns_notify = 127.0.0.1:{nsd_port}\n",
            key.encode()
        ),
    );
    let server = ServerProcess::start(&dir);
    let primary = server.listening("dns");
    let nsd = Nsd::start_on(
        dir.path(),
        nsd_port,
        &format!(
            "  zonefile: \"{ZONE}.zone\"\n  request-xfr: AXFR 127.0.0.1@{} dynip\n\
             \x20 allow-notify: 127.0.0.1 NOKEY\n\
             key:\n  name: \"dynip\"\n  algorithm: hmac-sha256\n  secret: \"{}\"\n",
            primary.port(),
            key.encode()
        ),
    );
    // The first transfer: NSD answers for the apex.
    eventually("NSD to load the zone", || {
        let answer = try_ask(&dir, "dig", nsd.addr, &[ZONE, "SOA"]).ok()?;
        (answer.status == "NOERROR" && answer.has_flag("aa")).then_some(())
    });
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    let script = dir.join("update.txt");
    std::fs::write(
        &script,
        format!(
            "server 127.0.0.1 {}\nzone {ZONE}\nupdate add {challenge} 60 TXT \"token-one\"\n\
             update add {challenge} 60 TXT \"token-two\"\nsend\n",
            primary.port()
        ),
    )
    .expect("write the update");
    let out = run(
        "nsupdate",
        &[
            "-y",
            &format!("hmac-sha256:dynip:{}", key.encode()),
            &script.to_string_lossy(),
        ],
        dir.path(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    // NSD's refresh is 300 s: only the NOTIFY brings the records within the wait.
    let txt = eventually("NSD to answer the TXT records after a NOTIFY", || {
        let answer = ask(&dir, "dig", nsd.addr, &[&challenge, "TXT"]);
        (answer.answer.len() == 2).then_some(answer)
    });
    let mut records = txt.answer.clone();
    records.sort();
    assert_eq!(
        records,
        [
            format!("{challenge}. 10 IN TXT \"token-one\""),
            format!("{challenge}. 10 IN TXT \"token-two\"")
        ],
        "{}",
        txt.text
    );
    assert!(
        server.stderr_lines("zone transferred").len() >= 2,
        "{}",
        server.stderr_tail()
    );
}
