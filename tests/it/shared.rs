//! Several servers on one PostgreSQL database (`database_url`), each test with its own
//! throwaway cluster: a report to one is answered by the others' DNS and API within a
//! second; a replay to another server is refused; `kill -9` of one server under load
//! loses nothing acknowledged; the database stopped for ten seconds under load refuses
//! writes without acknowledging them (dyndns2 `dnserr`), keeps the reads, and writes resume by themselves;
//! a client with two servers listed reports while the first is down.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dynip::model::key::Key;

use crate::dns::{ask, serial, ZONE};
use crate::harness::http::{get, update};
use crate::harness::*;

/// One dynip server on the shared database: its dir, process, and faces.
struct Member {
    dir: Dir,
    /// `Bearer KEY`, for the API.
    bearer: String,
    server: ServerProcess,
    dns: SocketAddr,
    http: SocketAddr,
}

/// Starts a server on `url` with the shared key `key`, DNS for [`ZONE`] and HTTP.
fn member(url: &str, key: &Key) -> Member {
    member_in(Dir::new(), url, key, "")
}

/// As [`member`], in `dir`, with `extra` lines (sections) after the server's.
fn member_in(dir: Dir, url: &str, key: &Key, extra: &str) -> Member {
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndatabase_url = {url}\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n\
             http_listen = 127.0.0.1:0\npublic_metrics = yes\npublic_status = yes\n{extra}",
            key.encode()
        ),
    );
    let server = ServerProcess::start(&dir);
    let dns = server.listening("dns");
    let http = server.listening("http");
    Member {
        dir,
        bearer: format!("Bearer {}", key.encode()),
        server,
        dns,
        http,
    }
}

impl Member {
    /// The A records `dig` gets for `host` in the zone.
    fn a(&self, host: &str) -> Vec<String> {
        let answer = ask(
            &self.dir,
            "dig",
            self.dns,
            &[&format!("{host}.{ZONE}"), "A"],
        );
        answer
            .answer
            .iter()
            .filter_map(|line| line.split_whitespace().last().map(String::from))
            .collect()
    }

    fn serial(&self) -> u64 {
        serial(&ask(&self.dir, "dig", self.dns, &[ZONE, "SOA"]))
    }

    /// The hosts the API lists.
    fn api_hosts(&self) -> BTreeSet<String> {
        let res = get(
            self.http,
            "/api/v1/hosts?limit=100000",
            &[("Authorization", &self.bearer)],
        );
        assert_eq!(res.status, 200, "{}", res.body);
        let doc: serde_json::Value = serde_json::from_str(&res.body).expect("JSON");
        doc["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|host| host["host"].as_str().expect("a name").to_string())
            .collect()
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let res = get(self.http, "/metrics", &[]);
        res.body.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
    }
}

fn cluster(test: &str) -> Option<Postgres> {
    if !postgres_present(test) || !peers_present(test, &["dig", "nsupdate"]) {
        return None;
    }
    let pg = Postgres::start();
    pg.create_database("dynip");
    Some(pg)
}

/// Two servers, then a third: a signed report to one is in every other's DNS and API
/// within a second, with the same SOA serial; the same datagram replayed to another
/// server is refused; a server started later loads everything.
#[test]
fn servers_on_one_database_answer_alike() {
    let Some(pg) = cluster("shared::servers_on_one_database_answer_alike") else {
        return;
    };
    let key = test_key(41);
    let url = pg.url("dynip");
    let one = member(&url, &key);
    let two = member(&url, &key);

    let peer = Peer::bind("127.0.0.1:0", one.server.target());
    let (report, _) = peer.report(&key, "kitchen-pc");
    let acked = Instant::now();
    let (a, waited) = eventually("kitchen-pc in the other server's DNS", || {
        let a = two.a("kitchen-pc");
        (!a.is_empty()).then(|| (a, acked.elapsed()))
    });
    assert_eq!(a, ["127.0.0.1"]);
    assert!(waited < Duration::from_secs(1), "seen after {waited:?}");
    assert!(two.api_hosts().contains("kitchen-pc"));
    // The serials agree once the second of the change is over.
    eventually("the same serial on both", || {
        (one.serial() == two.serial()).then_some(())
    });

    // The same datagram, replayed to the other server: refused, unanswered.
    let replayer = Peer::bind("127.0.0.2:0", two.server.target());
    replayer.send(&report);
    assert!(
        replayer.recv_within(Duration::from_secs(1)).is_none(),
        "a replay to another server was acknowledged"
    );
    eventually("the replay refused", || {
        let refused = two.metric(r#"dynip_reports_refused_total{path="udp",reason="replayed"}"#);
        (refused == Some(1.0)).then_some(())
    });
    assert_eq!(
        one.a("kitchen-pc"),
        ["127.0.0.1"],
        "the replay changed nothing"
    );
    assert_eq!(two.a("kitchen-pc"), ["127.0.0.1"]);

    // A move reported to the second server reaches the first.
    let mover = Peer::bind("127.0.0.3:0", two.server.target());
    mover.report(&key, "kitchen-pc");
    eventually("the move in the first server's DNS", || {
        (one.a("kitchen-pc") == ["127.0.0.3"]).then_some(())
    });

    // A third server starts from the database, and learns from the others.
    let three = member(&url, &key);
    assert_eq!(three.a("kitchen-pc"), ["127.0.0.3"]);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "nas");
    eventually("nas on the third server", || {
        (three.a("nas") == ["127.0.0.1"]).then_some(())
    });
    let history = get(
        three.http,
        "/api/v1/hosts/kitchen-pc/history",
        &[("Authorization", &three.bearer)],
    );
    assert!(
        history.body.contains("127.0.0.1") && history.body.contains("127.0.0.3"),
        "{}",
        history.body
    );
    let commits = pg.psql("dynip", "SELECT count(DISTINCT server) FROM dynip.journal");
    assert_eq!(commits.stdout.trim(), "2", "two servers committed");
    assert!(
        two.metric("dynip_database_remote_changes_total")
            .is_some_and(|n| n >= 1.0),
        "the second server counts what it learned from the first"
    );
    assert_eq!(two.metric("dynip_database_up"), Some(1.0));

    // `dynip check` connects and says what it found, writing nothing.
    let out = three.dir.dynip(&["check", CONFIG]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("(reachable, a dynip database, has hosts)"),
        "{}",
        out.stdout
    );
    drop(pg);
    let out = three.dir.dynip(&["check", CONFIG]);
    assert_eq!(out.code, 2, "check with the database gone: {}", out.stderr);
    assert!(out.stderr.contains("error connecting"), "{}", out.stderr);
}

/// Signed reports, each of a new host, sent in turn to the servers in `targets` while
/// `stop` is not set; the hosts whose report was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<u64>>,
}

impl Load {
    fn start(targets: Vec<SocketAddr>, key: Key, prefix: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let peers: Vec<Peer> = targets
                    .iter()
                    .map(|&target| Peer::bind("127.0.0.1:0", target))
                    .collect();
                let mut n_sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let peer = &peers[n_sent as usize % peers.len()];
                    let name = format!("{prefix}-{n_sent}");
                    let report = seal(&key, &name, dynip::model::record::Time::now());
                    peer.send(&report);
                    n_sent += 1;
                    // An acknowledgement of this report, or none in time (a server down,
                    // a database away): only acknowledged names count.
                    let deadline = Instant::now() + Duration::from_millis(300);
                    while let Some(bytes) =
                        peer.recv_within(deadline.saturating_duration_since(Instant::now()))
                    {
                        let ack = dynip::proto::wire::open_ack(&key, &bytes);
                        if ack.is_ok_and(|ack| ack.report_nonce == nonce_of(&report)) {
                            acked.lock().expect("acked").push(name.clone());
                            break;
                        }
                    }
                }
                n_sent
            })
        };
        Load {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn n_acked(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    /// Stops the load; returns the acknowledged hosts and how many were sent.
    fn stop(mut self) -> (BTreeSet<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let n_sent = self
            .thread
            .take()
            .expect("a running load")
            .join()
            .expect("the load thread");
        let acked = self.acked.lock().expect("acked").iter().cloned().collect();
        (acked, n_sent)
    }
}

/// `kill -9` of one of two servers while both take reports: every report either
/// acknowledged is in the database and in the survivor's API, and the survivor goes on.
#[test]
fn kill_9_of_one_server_under_load_loses_nothing_acknowledged() {
    let Some(pg) = cluster("shared::kill_9_of_one_server_under_load_loses_nothing_acknowledged")
    else {
        return;
    };
    let key = test_key(42);
    let url = pg.url("dynip");
    let mut one = member(&url, &key);
    let two = member(&url, &key);
    let load = Load::start(
        vec![one.server.target(), two.server.target()],
        key.clone(),
        "load",
    );
    eventually("reports acknowledged by both", || {
        (load.n_acked() >= 40).then_some(())
    });
    one.server.kill9();
    let after_kill = load.n_acked();
    eventually("the survivor acknowledging on", || {
        (load.n_acked() >= after_kill + 20).then_some(())
    });
    let (acked, n_sent) = load.stop();
    assert!(acked.len() >= 60, "{} of {n_sent}", acked.len());
    // `dynip list` reads the database, as a restarted server would.
    let stored = one.dir.hosts();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let shown = two.api_hosts();
    let missing: Vec<&String> = acked.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not shown by the survivor: {missing:?}"
    );
}

/// PostgreSQL stopped for ten seconds under load: no report is acknowledged while it is
/// away, dyndns2 answers `dnserr`, `/healthz` says so and `/metrics` counts it, DNS and the
/// API answer from memory; then writes resume by themselves, and every acknowledged
/// report is in the database.
#[test]
fn database_away_for_ten_seconds_refuses_writes_then_resumes() {
    let Some(pg) = cluster("shared::database_away_for_ten_seconds_refuses_writes_then_resumes")
    else {
        return;
    };
    let key = test_key(43);
    let url = pg.url("dynip");
    let one = member(&url, &key);
    let two = member(&url, &key);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "kitchen-pc");
    eventually("kitchen-pc on the second server", || {
        (two.a("kitchen-pc") == ["127.0.0.1"]).then_some(())
    });
    let load = Load::start(
        vec![one.server.target(), two.server.target()],
        key.clone(),
        "load",
    );
    eventually("reports acknowledged", || {
        (load.n_acked() >= 20).then_some(())
    });

    pg.stop();
    let stopped = Instant::now();
    // What was in flight when it stopped settles within a few tries.
    std::thread::sleep(Duration::from_secs(1));
    let during_start = load.n_acked();
    for member in [&one, &two] {
        eventually("/healthz saying the database is away", || {
            let res = get(member.http, "/healthz", &[]);
            (res.status == 503 && res.body.contains("database unreachable")).then_some(())
        });
        assert_eq!(member.metric("dynip_database_up"), Some(0.0));
        assert_eq!(
            member.a("kitchen-pc"),
            ["127.0.0.1"],
            "DNS answers from memory"
        );
        assert!(member.api_hosts().contains("kitchen-pc"));
        let (status, body) = update(member.http, &key, "hostname=kitchen-pc&myip=192.0.2.9");
        assert_eq!((status, body.trim()), (200, "dnserr"), "dyndns2 while away");
        let out = crate::update::update_with(
            &member.dir,
            "nsupdate",
            &["-y", &crate::update::key_arg("hmac-sha256", "dynip", &key)],
            member.dns,
            &format!("add _acme-challenge.kitchen-pc.{ZONE} 60 TXT \"token\"\nsend\n"),
        );
        assert!(
            out.stderr.contains("SERVFAIL"),
            "nsupdate while away: {out:?}"
        );
    }
    let remaining = Duration::from_secs(10).saturating_sub(stopped.elapsed());
    std::thread::sleep(remaining);
    let during = load.n_acked() - during_start;
    assert_eq!(
        during, 0,
        "reports acknowledged while the database was away"
    );
    pg.start_again();
    let restarted = Instant::now();
    eventually("reports acknowledged again", || {
        (load.n_acked() >= during_start + 20).then_some(())
    });
    let resumed_after = restarted.elapsed();
    let (acked, n_sent) = load.stop();
    assert!(
        resumed_after < Duration::from_secs(10),
        "writes resumed {resumed_after:?} after the database came back"
    );
    for member in [&one, &two] {
        let res = get(member.http, "/healthz", &[]);
        assert_eq!((res.status, res.body.as_str()), (200, "ok\n"));
        assert!(member.metric("dynip_database_errors_total").unwrap_or(0.0) >= 1.0);
    }
    let stored = one.dir.list();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|name| !stored.contains_key(*name))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not stored: {lost:?} ({n_sent} sent)"
    );
    // The refused updates changed nothing.
    assert_eq!(stored["kitchen-pc"]["ipv4"]["address"], "127.0.0.1");
}

/// A client with two servers listed, the first killed: the report is acknowledged by the
/// second and is in the first's database when it comes back.
#[test]
fn a_client_reports_to_the_second_server_while_the_first_is_down() {
    let Some(pg) = cluster("shared::a_client_reports_to_the_second_server_while_the_first_is_down")
    else {
        return;
    };
    let key = test_key(44);
    let url = pg.url("dynip");
    let mut one = member(&url, &key);
    let two = member(&url, &key);
    let (first, second) = (one.server.target(), two.server.target());
    one.server.kill9();
    let client = Dir::new();
    client.write(
        CONFIG,
        format!(
            "[DynIP:Client]\nserver_hostname = {first}, {second}\nhostname = laptop\nkey = {}\n",
            key.encode()
        ),
    );
    let out = client.dynip(&["client", CONFIG]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains(&second.to_string()), "{}", out.stderr);
    assert_eq!(two.a("laptop"), ["127.0.0.1"]);
    let again = member_in(one.dir, &url, &key, "");
    assert_eq!(again.a("laptop"), ["127.0.0.1"]);
}

/// A fold writes the journal's entries into the snapshot and deletes them: `list`,
/// a server started after it and the history show the same; a reader that had not read
/// the folded entries yet reads the snapshot again instead of missing them.
#[test]
fn a_fold_keeps_everything() {
    use dynip::store::postgresql::Database;
    let Some(pg) = cluster("shared::a_fold_keeps_everything") else {
        return;
    };
    let key = test_key(45);
    let url = pg.url("dynip");
    let one = member(&url, &key);
    let database_url = dynip::config::DatabaseUrl::parse(&url).expect("a postgres URL");
    let mut reader = Database::open(&database_url, Arc::default()).expect("the database");
    let (_, read_to) = reader.load().expect("a load");
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "alpha");
    Peer::bind("127.0.0.2:0", one.server.target()).report(&key, "alpha");
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "beta");
    let before = one.dir.list();
    let history = one.dir.history("alpha");
    assert_eq!(history.len(), 2);

    // Every entry, however young and few.
    let later = dynip::model::record::Time::from_micros(
        dynip::model::record::Time::now().as_micros() + 120_000_000,
    );
    let mut folder = Database::open(&database_url, Arc::default()).expect("the database");
    let n_folded = folder.fold(later, 0).expect("a fold");
    assert_eq!(n_folded, 3, "the three reports' records");
    let count = |sql: &str| pg.psql("dynip", sql).stdout.trim().to_string();
    assert_eq!(count("SELECT count(*) FROM dynip.journal"), "0");
    assert_eq!(count("SELECT count(*) FROM dynip.hosts"), "2");
    assert_eq!(
        count("SELECT ipv4 FROM dynip.hosts WHERE name_key = 'alpha'"),
        "127.0.0.2"
    );
    assert_eq!(one.dir.list(), before, "list after the fold");
    assert_eq!(one.dir.history("alpha"), history);

    let changes = reader.changes_since(read_to).expect("changes");
    let alpha = changes
        .hosts
        .iter()
        .rev()
        .find(|(name, _)| name.as_str() == "alpha")
        .map(|(_, entry)| entry.record.v4.map(|seen| seen.addr.to_string()));
    assert_eq!(alpha, Some(Some("127.0.0.2".to_string())), "{changes:?}");
    assert!(changes
        .hosts
        .iter()
        .any(|(name, _)| name.as_str() == "beta"));

    Peer::bind("127.0.0.3:0", one.server.target()).report(&key, "alpha");
    let two = member(&url, &key);
    assert_eq!(two.a("alpha"), ["127.0.0.3"]);
    assert_eq!(two.a("beta"), ["127.0.0.1"]);
    assert_eq!(one.dir.history("alpha").len(), 3);
}

/// Both servers taking reports at once: each shows every report the other
/// acknowledged, however their commits interleave.
#[test]
fn servers_writing_at_once_each_show_all() {
    let Some(pg) = cluster("shared::servers_writing_at_once_each_show_all") else {
        return;
    };
    let key = test_key(46);
    let url = pg.url("dynip");
    let one = member(&url, &key);
    let two = member(&url, &key);
    // Three clients of each server, each with its own hosts.
    let loads: Vec<Load> = ["one-a", "one-b", "one-c", "two-a", "two-b", "two-c"]
        .into_iter()
        .map(|prefix| {
            let member = if prefix.starts_with("one") {
                &one
            } else {
                &two
            };
            Load::start(vec![member.server.target()], key.clone(), prefix)
        })
        .collect();
    eventually("reports acknowledged by both", || {
        (loads.iter().all(|load| load.n_acked() >= 30)).then_some(())
    });
    let acked: BTreeSet<String> = loads.into_iter().flat_map(|load| load.stop().0).collect();
    for member in [&one, &two] {
        eventually("every acknowledged report shown", || {
            let shown = member.api_hosts();
            acked.is_subset(&shown).then_some(())
        });
    }
}

/// TLS to the database: `sslmode=require` with the cluster's authority in `sslrootcert`
/// works (the cluster takes nothing but TLS); without it, the public authorities do not
/// vouch for the cluster's certificate and the server does not start (exit 2, saying
/// why).
#[test]
fn the_database_over_tls() {
    if !postgres_present("shared::the_database_over_tls") {
        return;
    }
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("a CA");
    let server_key = rcgen::KeyPair::generate().expect("a server key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server parameters")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("a server certificate");
    let pg = Postgres::start_tls(&server_cert.pem(), &server_key.serialize_pem());
    pg.create_database("dynip");
    let ca_path = pg.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write the CA");
    let key = test_key(47);
    let url = format!(
        "{}?sslmode=require&sslrootcert={}",
        pg.url("dynip"),
        ca_path.display()
    );
    let one = member(&url, &key);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "kitchen-pc");
    assert_eq!(one.dir.hosts(), BTreeSet::from(["kitchen-pc".to_string()]));

    let untrusted = Dir::new();
    untrusted.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndatabase_url = {}?sslmode=require\n",
            key.encode(),
            pg.url("dynip")
        ),
    );
    let out = untrusted.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    let plain = Dir::new();
    plain.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndatabase_url = {}?sslmode=disable\n",
            key.encode(),
            pg.url("dynip")
        ),
    );
    let out = plain.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 2, "without TLS: {}", out.stderr);
}

/// Notifications from servers on one database: each event is delivered once, by the
/// server whose turn made it, and both servers' events API show it delivered. A server
/// killed while a delivery is failing leaves it to the other, which delivers it once the
/// dead server's claim has run out (`CLAIM_FOR`, renewed every `FOLD_EVERY`).
#[test]
fn notifications_are_delivered_once_across_servers() {
    use crate::harness::receiver::Receiver;
    use dynip::store::postgresql::{CLAIM_FOR, FOLD_EVERY};
    let Some(pg) = cluster("shared::notifications_are_delivered_once_across_servers") else {
        return;
    };
    let receiver = Receiver::start("s3cret");
    let key = test_key(48);
    let url = pg.url("dynip");
    let sink = format!(
        "[DynIP:Notify:hook]\nkind = webhook\nurl = {}\nsecret = s3cret\ncoalesce = 0\n",
        receiver.url("/hook")
    );
    let mut one = member_in(Dir::new(), &url, &key, &sink);
    let two = member_in(Dir::new(), &url, &key, &sink);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "kitchen-pc");
    Peer::bind("127.0.0.1:0", two.server.target()).report(&key, "nas");
    let delivered = |host: &str| -> Vec<i64> {
        receiver
            .delivered()
            .iter()
            .map(|got| got.json())
            .filter(|body| body["host"] == host)
            .map(|body| body["id"].as_i64().expect("an id"))
            .collect()
    };
    eventually("both new hosts announced", || {
        (!delivered("kitchen-pc").is_empty() && !delivered("nas").is_empty()).then_some(())
    });
    // Time for a second delivery, if one were coming.
    std::thread::sleep(Duration::from_secs(2));
    let (kitchen, nas) = (delivered("kitchen-pc"), delivered("nas"));
    assert_eq!(
        kitchen.len(),
        1,
        "kitchen-pc's event delivered once: {kitchen:?}"
    );
    assert_eq!(nas.len(), 1, "nas's event delivered once: {nas:?}");
    assert_ne!(kitchen, nas, "one id per event across servers");
    for member in [&one, &two] {
        eventually("both events listed as delivered", || {
            let res = get(
                member.http,
                "/api/v1/events",
                &[("Authorization", &member.bearer)],
            );
            let listed: serde_json::Value = serde_json::from_str(&res.body).ok()?;
            let events = listed["events"].as_array()?;
            let all = events.len() == 2
                && events
                    .iter()
                    .all(|event| event["deliveries"][0]["state"] == "delivered");
            all.then_some(())
        });
    }

    // The receiver fails; the first server keeps trying laptop's event, then dies.
    receiver.answer(503);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "laptop");
    eventually("a failed try of laptop's event", || {
        receiver
            .received()
            .iter()
            .any(|got| got.status == 503 && got.json()["host"] == "laptop")
            .then_some(())
    });
    one.server.kill9();
    receiver.answer(200);
    let deadline = Instant::now() + CLAIM_FOR + FOLD_EVERY * 2 + Duration::from_secs(10);
    while delivered("laptop").is_empty() {
        assert!(
            Instant::now() < deadline,
            "laptop's event never delivered by the second server:\n{}",
            two.server.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        delivered("laptop").len(),
        1,
        "laptop's event delivered once"
    );
    assert!(
        !two.server
            .stderr_lines("taking over deliveries another server left")
            .is_empty(),
        "{}",
        two.server.stderr_tail()
    );
}

/// A host going stale is announced once, though both servers' scans find it; its return
/// once, by the server it reports to.
#[test]
fn a_host_going_stale_is_announced_once() {
    use crate::harness::receiver::Receiver;
    let Some(pg) = cluster("shared::a_host_going_stale_is_announced_once") else {
        return;
    };
    let receiver = Receiver::start("s3cret");
    let key = test_key(49);
    let url = pg.url("dynip");
    let sink = format!(
        "[DynIP:Notify:hook]\nkind = webhook\nurl = {}\nsecret = s3cret\ncoalesce = 0\n",
        receiver.url("/hook")
    );
    let stale = format!("stale_after = 2s\n{sink}");
    let one = member_in(Dir::new(), &url, &key, &stale);
    let two = member_in(Dir::new(), &url, &key, &stale);
    Peer::bind("127.0.0.1:0", one.server.target()).report(&key, "kitchen-pc");
    let kinds = || -> Vec<String> {
        receiver
            .delivered()
            .iter()
            .map(|got| got.json())
            .filter(|body| body["host"] == "kitchen-pc")
            .map(|body| body["event"].as_str().expect("an event").to_string())
            .collect()
    };
    eventually("kitchen-pc announced stale", || {
        kinds().contains(&"stale".to_string()).then_some(())
    });
    // Both servers scan every second: time for a second announcement, if one came.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(kinds(), ["new", "stale"], "announced once");
    Peer::bind("127.0.0.1:0", two.server.target()).report(&key, "kitchen-pc");
    eventually("kitchen-pc back", || {
        kinds().contains(&"back".to_string()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(kinds(), ["new", "stale", "back"]);
    // Stale again, announced again: the return cleared the announcement on both.
    eventually("kitchen-pc stale again", || {
        (kinds().len() == 4).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(kinds(), ["new", "stale", "back", "stale"]);
}
