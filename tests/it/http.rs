//! The HTTP face: dyndns2 updates from the real ddclient and inadyn, every answer code,
//! the router URL forms, `/myip`, `X-Forwarded-For`, SIGHUP, commit failures, `/metrics`
//! under promtool, the JSON API against its OpenAPI description, the status page in
//! headless Chromium, TLS, and the limits.
//!
//! Requests are written by hand on plain sockets ([`get`], in the harness), so a test
//! sees exactly the bytes a client would, and can send what no client library would
//! (huge heads, slow heads, bad queries).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use dynip::model::key::Key;
use serde_json::Value;

use crate::harness::http::*;
use crate::harness::schema::check_against;
use crate::harness::*;

/// A server with `http_listen` on a free loopback port, and that port.
pub struct HttpServer {
    pub process: ServerProcess,
    pub addr: SocketAddr,
}

/// Starts `dynip -v server` with `[DynIP:Server]` on `127.0.0.1`, `http_listen =
/// 127.0.0.1:0`, then `extra`; returns once both sockets listen.
pub fn start(dir: &Dir, extra: &str) -> HttpServer {
    dir.server_config("127.0.0.1", &format!("http_listen = 127.0.0.1:0\n{extra}"));
    let process = ServerProcess::start(dir);
    let addr = process.listening_http();
    HttpServer { process, addr }
}

/// A key's text percent-encoded for a URL (base64 has `+`, `/` and `=`).
fn url_encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The IPv4 address `list --json` shows for `host`.
fn listed_ipv4(dir: &Dir, host: &str) -> Option<String> {
    let hosts = dir.list();
    let host = hosts.get(host)?;
    host["ipv4"]["address"].as_str().map(str::to_string)
}

fn listed_ipv6(dir: &Dir, host: &str) -> Option<String> {
    let hosts = dir.list();
    let host = hosts.get(host)?;
    host["ipv6"]["address"].as_str().map(str::to_string)
}

#[test]
fn ddclient_updates_a_host() {
    if !peers_present("http::ddclient_updates_a_host", &["ddclient"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(51);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let port = server.addr.port();
    // Its address from the server's own /myip, then the update: the whole of dyndns2.
    dir.write(
        "ddclient.conf",
        format!(
            "daemon=0\nssl=no\nuse=web, web=http://127.0.0.1:{port}/myip\n\
             protocol=dyndns2\nserver=127.0.0.1:{port}\nlogin=router\n\
             password='{}'\ndd-host.example\n",
            key.encode()
        ),
    );
    let (said, out) = ddclient(&dir, &[]);
    assert!(
        said.contains("SUCCESS:  updating dd-host.example: good: IP address set to 127.0.0.1"),
        "{out:?}"
    );
    assert_eq!(
        listed_ipv4(&dir, "dd-host.example").as_deref(),
        Some("127.0.0.1")
    );
    // Again with an address of its own: ddclient sends it as myip.
    let text = dir.read_string("ddclient.conf").replace(
        &format!("use=web, web=http://127.0.0.1:{port}/myip"),
        "use=ip, ip=203.0.113.7",
    );
    dir.write("ddclient.conf", text);
    let (said, again) = ddclient(&dir, &["-force"]);
    assert!(
        said.contains("good: IP address set to 203.0.113.7"),
        "{again:?}"
    );
    assert_eq!(
        listed_ipv4(&dir, "dd-host.example").as_deref(),
        Some("203.0.113.7")
    );
}

#[test]
fn inadyn_updates_a_host() {
    if !peers_present("http::inadyn_updates_a_host", &["inadyn"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(52);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let port = server.addr.port();
    std::fs::create_dir(dir.join("inadyn-cache")).expect("mkdir");
    // A custom provider: inadyn's own dyndns2 client, its checkip at the server's /myip.
    // `verify-address = false`: inadyn refuses loopback addresses by default.
    dir.write(
        "inadyn.conf",
        format!(
            "verify-address = false\n\
             custom dynip {{\n    ssl = false\n    username = router\n    password = \"{}\"\n\
             \x20   checkip-server = 127.0.0.1:{port}\n    checkip-path = /myip\n\
             \x20   checkip-ssl = false\n    ddns-server = 127.0.0.1:{port}\n\
             \x20   ddns-path = \"/nic/update?hostname=%h&myip=%i\"\n\
             \x20   hostname = in-host.example\n}}\n",
            key.encode()
        ),
    );
    let config = dir.join("inadyn.conf");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the inadyn config");
    let out = run(
        "inadyn",
        &[
            "--once",
            "--foreground",
            "--no-pidfile",
            "--loglevel=debug",
            &format!("--config={}", config.display()),
            &format!("--cache-dir={}", dir.join("inadyn-cache").display()),
        ],
        dir.path(),
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("myip=127.0.0.1 HTTP/1.0"),
        "inadyn did not use /myip: {out:?}"
    );
    assert!(
        said.contains("Successful alias table update for in-host.example"),
        "{out:?}"
    );
    assert_eq!(
        listed_ipv4(&dir, "in-host.example").as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn of_requests_with_the_same_new_address_in_flight_together_one_is_good() {
    let dir = Dir::new();
    let key = test_key(55);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let addr = server.addr;
    for round in 1..=5u8 {
        let query = format!("hostname=pc&myip=203.0.113.{round}");
        let answers: Vec<String> = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| update(addr, &key, &query)))
                .collect();
            requests
                .into_iter()
                .map(|request| {
                    let (status, body) = request.join().expect("request thread");
                    assert_eq!(status, 200, "{body}");
                    body
                })
                .collect()
        });
        let count = |prefix: &str| answers.iter().filter(|a| a.starts_with(prefix)).count();
        // Whichever the writer committed first changed the address; the others found
        // it already there, in the same batch or a later one.
        assert_eq!(
            (count("good "), count("nochg ")),
            (1, 3),
            "round {round}: {answers:?}"
        );
    }
}

#[test]
fn every_answer_code() {
    let dir = Dir::new();
    let shared = test_key(53);
    let own = test_key(54);
    let server = start(
        &dir,
        &format!(
            "key = {}\n[DynIP:Hosts]\nnas = {}\n",
            shared.encode(),
            own.encode()
        ),
    );
    let addr = server.addr;
    assert_eq!(
        update(addr, &shared, "hostname=pc&myip=203.0.113.7"),
        (200, "good 203.0.113.7\n".to_string())
    );
    assert_eq!(
        update(addr, &shared, "hostname=pc&myip=203.0.113.7"),
        (200, "nochg 203.0.113.7\n".to_string())
    );
    // One line per host, in order.
    assert_eq!(
        update(addr, &own, "hostname=nas,pc,bad..name&myip=198.51.100.1"),
        (200, "good 198.51.100.1\nnohost\nnotfqdn\n".to_string())
    );
    assert_eq!(
        update(addr, &shared, "myip=203.0.113.7"),
        (200, "notfqdn\n".to_string())
    );
    let many: Vec<String> = (0..21).map(|idx| format!("h{idx}")).collect();
    assert_eq!(
        update(addr, &shared, &format!("hostname={}", many.join(","))),
        (200, "numhost\n".to_string())
    );
    // Wrong credentials: 200 badauth (ddclient takes any other status for a transport
    // error); none at all: 401 with a challenge.
    assert_eq!(
        update(addr, &test_key(99), "hostname=pc&myip=192.0.2.1"),
        (200, "badauth\n".to_string())
    );
    let none = get(addr, "/nic/update?hostname=pc&myip=192.0.2.1", &[]);
    assert_eq!((none.status, none.body.as_str()), (401, "badauth\n"));
    assert_eq!(
        none.header("www-authenticate"),
        Some("Basic realm=\"dynip\"")
    );
    let not_basic = get(
        addr,
        "/nic/update?hostname=pc",
        &[("Authorization", "Bearer whatever")],
    );
    assert_eq!(
        (not_basic.status, not_basic.body.as_str()),
        (200, "badauth\n")
    );
    // A bad address: no dyndns2 answer fits, and nothing is recorded.
    let (status, body) = update(addr, &shared, "hostname=pc&myip=300.1.2.3");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("myip=\"300.1.2.3\""), "{body}");
    assert_eq!(listed_ipv4(&dir, "pc").as_deref(), Some("203.0.113.7"));
    // Repeated bad credentials from one address: abuse, even with the right key after.
    let wrong = test_key(98);
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let (_, answer) = update(addr, &wrong, "hostname=pc&myip=192.0.2.1");
        let throttled = answer == "abuse\n";
        answers.insert(answer);
        if throttled {
            break;
        }
    }
    assert!(answers.contains("abuse\n"), "{answers:?}");
    assert_eq!(
        update(addr, &shared, "hostname=pc&myip=192.0.2.1"),
        (200, "abuse\n".to_string())
    );
    assert_eq!(listed_ipv4(&dir, "pc").as_deref(), Some("203.0.113.7"));
    assert_eq!(listed_ipv4(&dir, "nas").as_deref(), Some("198.51.100.1"));
    assert!(!dir.hosts().contains("192.0.2.1"));
}

#[test]
fn commit_failures_answer_dnserr_and_a_stuck_store_911() {
    let dir = Dir::new();
    let key = test_key(55);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let addr = server.addr;
    assert_eq!(update(addr, &key, "hostname=pc&myip=203.0.113.7").0, 200);
    // The store refuses every journal entry: the commit fails, nothing is recorded.
    let store = rusqlite::Connection::open(dir.join(STORE_FILE)).expect("open the store");
    store.busy_timeout(TIMEOUT).expect("busy timeout");
    store
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .expect("add a trigger");
    assert_eq!(
        update(addr, &key, "hostname=pc&myip=198.51.100.1"),
        (200, "dnserr\n".to_string())
    );
    store
        .execute_batch("DROP TRIGGER refuse")
        .expect("drop the trigger");
    // The store is locked for longer than an update waits: 911, try again later.
    store
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the store");
    let started = Instant::now();
    assert_eq!(
        update(addr, &key, "hostname=pc&myip=198.51.100.2"),
        (200, "911\n".to_string())
    );
    assert!(started.elapsed() >= Duration::from_secs(4));
    store.execute_batch("ROLLBACK").expect("unlock the store");
    // And the server goes on.
    assert_eq!(
        update(addr, &key, "hostname=pc&myip=198.51.100.3"),
        (200, "good 198.51.100.3\n".to_string())
    );
    assert_eq!(listed_ipv4(&dir, "pc").as_deref(), Some("198.51.100.3"));
    let history: Vec<String> = dir
        .history("pc")
        .into_iter()
        .map(|(_, address)| address)
        .collect();
    assert!(
        !history.contains(&"198.51.100.1".to_string()),
        "{history:?}"
    );
}

#[test]
fn router_url_forms() {
    if !peers_present("http::router_url_forms", &["curl"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(56);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let addr = server.addr;
    // FRITZ!Box: update URL `/nic/update?hostname=<domain>&myip=<ipaddr>,<ip6addr>`,
    // or `<ip6lanprefix>` with its prefix length.
    assert_eq!(
        update(
            addr,
            &key,
            "hostname=fritz.example&myip=203.0.113.7,2001:db8:1:2::1/64"
        ),
        (200, "good 203.0.113.7,2001:db8:1:2::1\n".to_string())
    );
    assert_eq!(
        listed_ipv4(&dir, "fritz.example").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        listed_ipv6(&dir, "fritz.example").as_deref(),
        Some("2001:db8:1:2::1")
    );
    // FRITZ!Box without IPv6: the field is empty.
    assert_eq!(
        update(
            addr,
            &key,
            "hostname=fritz.example&myip=203.0.113.8&myipv6="
        ),
        (200, "good 203.0.113.8\n".to_string())
    );
    // OpenWrt ddns-scripts: `http://[USERNAME]:[PASSWORD]@host/nic/update?hostname=
    // [DOMAIN]&myip=[IP]`, the password URL-encoded; curl sends it as Basic (as
    // ddns-scripts does with curl or wget).
    let url = format!(
        "http://router:{}@{addr}/nic/update?wildcard=ON&hostname=owrt.example&myip=198.51.100.1",
        url_encoded(&key.encode())
    );
    let out = run("curl", &["-sS", &url], dir.path());
    assert_eq!(out.stdout, "good 198.51.100.1\n", "{out:?}");
    // The full form of the DynDNS specification, as built-in DynDNS clients send it:
    // `system`, `wildcard`, `mx` and `backmx` are accepted and ignored.
    assert_eq!(
        update(
            addr,
            &key,
            "system=dyndns&hostname=classic.example&myip=198.51.100.9&wildcard=NOCHG&mx=NOCHG&backmx=NOCHG"
        ),
        (200, "good 198.51.100.9\n".to_string())
    );
    assert_eq!(
        listed_ipv4(&dir, "classic.example").as_deref(),
        Some("198.51.100.9")
    );
    // Credentials in the query, for routers that send no header.
    let res = get(
        addr,
        &format!(
            "/update?hostname=query.example&myip=198.51.100.2&username=r&password={}",
            url_encoded(&key.encode())
        ),
        &[],
    );
    assert_eq!(
        (res.status, res.body.as_str()),
        (200, "good 198.51.100.2\n")
    );
    // /v3/update, myip6 (dyndnsd's name), no myip: the source address for IPv4.
    let auth = basic("router", &key.encode());
    let res = get(
        addr,
        "/v3/update?hostname=v3.example&myip6=2001:db8::7",
        &[("Authorization", &auth)],
    );
    assert_eq!((res.status, res.body.as_str()), (200, "good 2001:db8::7\n"));
    let res = get(
        addr,
        "/nic/update?hostname=source.example",
        &[("Authorization", &auth)],
    );
    assert_eq!((res.status, res.body.as_str()), (200, "good 127.0.0.1\n"));
    assert_eq!(
        listed_ipv4(&dir, "source.example").as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn myip_and_forwarded_for() {
    let dir = Dir::new();
    let key = test_key(57);
    let server = start(
        &dir,
        &format!("key = {}\ntrusted_proxies = 127.0.0.1\n", key.encode()),
    );
    let addr = server.addr;
    let res = get(addr, "/myip", &[]);
    assert_eq!((res.status, res.body.as_str()), (200, "127.0.0.1\n"));
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let res = get(addr, "/checkip", &[]);
    assert!(
        res.body.contains("Current IP Address: 127.0.0.1</body>"),
        "{res:?}"
    );
    // Behind a trusted proxy (loopback here), the last untrusted hop is the client.
    let res = get(
        addr,
        "/myip",
        &[("X-Forwarded-For", "192.0.2.66, 203.0.113.9")],
    );
    assert_eq!(res.body, "203.0.113.9\n");
    let auth = basic("router", &key.encode());
    let res = get(
        addr,
        "/nic/update?hostname=proxied",
        &[("Authorization", &auth), ("X-Forwarded-For", "203.0.113.9")],
    );
    assert_eq!(res.body, "good 203.0.113.9\n");
    let res = get(addr, "/healthz", &[]);
    assert_eq!((res.status, res.body.as_str()), (200, "ok\n"));
    let res = get(addr, "/no/such/page", &[]);
    assert_eq!(res.status, 404);

    // Not trusted: the header is ignored.
    let dir = Dir::new();
    let server = start(&dir, "");
    let res = get(server.addr, "/myip", &[("X-Forwarded-For", "203.0.113.9")]);
    assert_eq!(res.body, "127.0.0.1\n");
}

#[test]
fn without_any_key_updates_need_no_credentials() {
    let dir = Dir::new();
    let server = start(&dir, "");
    let res = get(server.addr, "/nic/update?hostname=open&myip=192.0.2.5", &[]);
    assert_eq!((res.status, res.body.as_str()), (200, "good 192.0.2.5\n"));
}

#[test]
fn sighup_applies_to_http() {
    let dir = Dir::new();
    let old = test_key(58);
    let new = test_key(59);
    let server = start(&dir, &format!("key = {}\n", old.encode()));
    let addr = server.addr;
    assert_eq!(update(addr, &new, "hostname=pc").1, "badauth\n");
    dir.server_config(
        "127.0.0.1",
        &format!(
            "http_listen = 127.0.0.1:{}\nkey = {}\n",
            addr.port(),
            new.encode()
        ),
    );
    let mut from = 0;
    server.process.hangup();
    eventually("the SIGHUP reload", || {
        server
            .process
            .logged_since("SIGHUP: keys", &mut from)
            .then_some(())
    });
    assert_eq!(update(addr, &new, "hostname=pc").1, "good 127.0.0.1\n");
    assert_eq!(update(addr, &old, "hostname=pc").1, "badauth\n");
}

/// `/metrics` after a few reports of each kind, checked by `promtool check metrics`.
#[test]
fn metrics_pass_promtool() {
    if !peers_present("http::metrics_pass_promtool", &["promtool"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(60);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let addr = server.addr;
    update(addr, &key, "hostname=a&myip=192.0.2.1");
    update(addr, &key, "hostname=b&myip=192.0.2.2,2001:db8::2");
    update(addr, &test_key(1), "hostname=a");
    // A signed UDP report too, and a datagram that is not one.
    let peer = Peer::bind("127.0.0.1:0", server.process.target());
    peer.report(&key, "udp-host");
    server.process.send(b"\x00\x64\x79\x6e garbage");
    let res = eventually("the garbage datagram to be counted", || {
        let res = get(addr, "/metrics", &[]);
        res.body
            .contains("dynip_reports_refused_total{path=\"udp\",reason=\"malformed\"} 1")
            .then_some(res)
    });
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        "dynip_reports_accepted_total{path=\"http\"} 3",
        "dynip_reports_accepted_total{path=\"udp\"} 1",
        "dynip_reports_refused_total{path=\"http\",reason=\"bad_auth\"} 1",
        "dynip_hosts 3",
        // Four address changes logged (b has two), no sweep yet to settle them.
        "dynip_history_unsettled 4",
    ] {
        assert!(
            res.body.lines().any(|l| l == line),
            "no {line:?} in:\n{}",
            res.body
        );
    }
    let value = |name: &str| -> u64 {
        res.body
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{}", res.body))
    };
    let count = value("dynip_commit_batch_size_count");
    assert!((1..=4).contains(&count), "{count} commits for 4 reports");
    // A record per host per commit: b's two addresses may have come in one or two.
    let journal = value("dynip_journal_records");
    assert!((3..=4).contains(&journal), "{journal} journal records");
    dir.write("metrics.txt", &res.body);
    let out = run_command(
        Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics < metrics.txt")
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, 0, "promtool: {out:?}\n{}", res.body);
    assert_eq!(out.stdout.trim(), "", "promtool found problems: {out:?}");
}

/// With `public_metrics = no`, `/metrics` answers the shared key only: `401` with a
/// challenge without credentials or with a wrong key, `403` for a host's key.
#[test]
fn metrics_can_require_the_key() {
    let dir = Dir::new();
    let (key, nas_key) = (test_key(61), test_key(62));
    let server = start(
        &dir,
        &format!(
            "key = {}
public_metrics = no
[DynIP:Hosts]
nas = {}
",
            key.encode(),
            nas_key.encode()
        ),
    );
    let addr = server.addr;
    let anonymous = get(addr, "/metrics", &[]);
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"dynip\"")
    );
    assert!(!anonymous.body.contains("dynip_hosts"), "{anonymous:?}");
    let bearer = |key: &str| format!("Bearer {key}");
    let wrong = get(
        addr,
        "/metrics",
        &[("authorization", &bearer(&test_key(63).encode()))],
    );
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let host = get(
        addr,
        "/metrics",
        &[("authorization", &bearer(&nas_key.encode()))],
    );
    assert_eq!(host.status, 403, "{host:?}");
    let scraped = get(
        addr,
        "/metrics",
        &[("authorization", &bearer(&key.encode()))],
    );
    assert_eq!(scraped.status, 200, "{scraped:?}");
    assert!(
        scraped.body.lines().any(|line| line == "dynip_hosts 0"),
        "{scraped:?}"
    );
    // Prometheus's basic_auth: the key as the password.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("prometheus:{}", key.encode()))
    );
    assert_eq!(
        get(addr, "/metrics", &[("authorization", &basic)]).status,
        200
    );
    // /healthz stays open, for load balancers.
    assert_eq!(get(addr, "/healthz", &[]).status, 200);
}

#[test]
fn the_api_follows_its_openapi_description() {
    let dir = Dir::new();
    let shared = test_key(61);
    let own = test_key(62);
    let server = start(
        &dir,
        &format!(
            "key = {}\n[DynIP:Hosts]\nNas = {}\n",
            shared.encode(),
            own.encode()
        ),
    );
    let addr = server.addr;
    update(addr, &shared, "hostname=Kitchen-PC&myip=203.0.113.7");
    update(
        addr,
        &shared,
        "hostname=kitchen-pc&myip=198.51.100.7,2001:db8::7",
    );
    update(addr, &own, "hostname=nas&myip=192.0.2.9");
    update(addr, &own, "hostname=nas&txt=challenge-token");
    let doc_res = get(addr, "/api/v1/openapi.json", &[]);
    assert_eq!(doc_res.status, 200);
    let doc: Value = serde_json::from_str(&doc_res.body).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let bearer = |key: &Key| format!("Bearer {}", key.encode());
    let with = |path: &str, key: Option<&Key>| match key {
        Some(key) => get(addr, path, &[("Authorization", &bearer(key))]),
        None => get(addr, path, &[]),
    };

    let hosts = check_against(&doc, "/api/v1/hosts", &with("/api/v1/hosts", Some(&shared)));
    let names: Vec<&str> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|host| host["host"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Kitchen-PC", "nas"]);
    let pc = check_against(
        &doc,
        "/api/v1/hosts/{name}",
        &with("/api/v1/hosts/KITCHEN-PC", Some(&shared)),
    );
    assert_eq!(pc["host"], "Kitchen-PC");
    assert_eq!(pc["ipv4"]["address"], "198.51.100.7");
    assert_eq!(pc["ipv6"]["address"], "2001:db8::7");
    assert_eq!(pc["stale"], false);
    let history = check_against(
        &doc,
        "/api/v1/hosts/{name}/history",
        &with("/api/v1/hosts/kitchen-pc/history", Some(&shared)),
    );
    let addresses: Vec<&str> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["203.0.113.7", "198.51.100.7", "2001:db8::7"]);

    let txt = check_against(&doc, "/api/v1/txt", &with("/api/v1/txt", Some(&shared)));
    assert_eq!(txt["txt"][0]["name"], "_acme-challenge.nas");
    assert_eq!(txt["txt"][0]["values"][0], "challenge-token");
    check_against(&doc, "/api/v1/txt", &with("/api/v1/txt", None));

    // A per-host key reads its own host only.
    let own_list = check_against(&doc, "/api/v1/hosts", &with("/api/v1/hosts", Some(&own)));
    assert_eq!(own_list["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(own_list["hosts"][0]["host"], "nas");
    check_against(
        &doc,
        "/api/v1/hosts/{name}",
        &with("/api/v1/hosts/nas", Some(&own)),
    );
    let forbidden = with("/api/v1/hosts/kitchen-pc", Some(&own));
    assert_eq!(forbidden.status, 403);
    check_against(&doc, "/api/v1/hosts/{name}", &forbidden);
    let forbidden = with("/api/v1/hosts/kitchen-pc/history", Some(&own));
    assert_eq!(forbidden.status, 403);
    check_against(&doc, "/api/v1/hosts/{name}/history", &forbidden);

    // Errors are described too.
    let missing = with("/api/v1/hosts/nobody", Some(&shared));
    assert_eq!(missing.status, 404);
    check_against(&doc, "/api/v1/hosts/{name}", &missing);
    let bad = with("/api/v1/hosts/bad..name", Some(&shared));
    assert_eq!(bad.status, 400);
    check_against(&doc, "/api/v1/hosts/{name}", &bad);
    for path in [
        "/api/v1/hosts",
        "/api/v1/hosts/nas",
        "/api/v1/hosts/nas/history",
    ] {
        let template = match path {
            "/api/v1/hosts" => "/api/v1/hosts",
            "/api/v1/hosts/nas" => "/api/v1/hosts/{name}",
            _ => "/api/v1/hosts/{name}/history",
        };
        for res in [with(path, None), with(path, Some(&test_key(2)))] {
            assert_eq!(res.status, 401, "{path}: {res:?}");
            assert_eq!(
                res.header("www-authenticate"),
                Some("Bearer realm=\"dynip\"")
            );
            check_against(&doc, template, &res);
        }
    }
}

/// Headless Chromium, as a person on a phone would open the page.
fn chromium(dir: &Dir, args: &[&str]) -> Output {
    let profile = dir.join("chromium-profile");
    let mut all = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let profile_arg = format!("--user-data-dir={}", profile.display());
    all.push(&profile_arg);
    all.extend_from_slice(args);
    run("chromium", &all, dir.path())
}

#[test]
fn the_status_page_shows_the_hosts_in_chromium() {
    if !peers_present(
        "http::the_status_page_shows_the_hosts_in_chromium",
        &["chromium"],
    ) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(63);
    // A host last seen long ago, from the original's file (imported at the first start).
    dir.write(
        JSON_FILE,
        r#"{"old-router": ["198.51.100.1", "2026-01-01 00:00:00.000000"]}"#,
    );
    let server = start(
        &dir,
        &format!("key = {}\npublic_status = yes\n", key.encode()),
    );
    let addr = server.addr;
    update(
        addr,
        &key,
        "hostname=kitchen-pc&myip=203.0.113.7,2001:db8::7",
    );
    let url = format!("http://{addr}/");
    let dom = chromium(&dir, &["--dump-dom", &url]);
    assert_eq!(dom.code, 0, "{dom:?}");
    let html = &dom.stdout;
    assert!(html.contains("<h1>dynip: 2 hosts</h1>"), "{html}");
    assert!(
        html.contains("<tr class=\"host\"><td><a href=\"/hosts/kitchen-pc\">kitchen-pc</a></td>"),
        "{html}"
    );
    assert!(html.contains(">203.0.113.7</td>") && html.contains(">2001:db8::7</td>"));
    assert!(
        html.contains("<tr class=\"host stale\"><td><a href=\"/hosts/old-router\">old-router</a>"),
        "{html}"
    );
    // A host's own page, its history.
    let host = chromium(&dir, &["--dump-dom", &format!("{url}hosts/kitchen-pc")]);
    assert!(host.stdout.contains("<h1>kitchen-pc</h1>"), "{host:?}");
    assert!(host.stdout.contains(">2001:db8::7</td></tr>"), "{host:?}");
    // A screenshot at a phone's width: a PNG is made.
    let shot = dir.join("status.png");
    let out = chromium(
        &dir,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=390,844",
            &url,
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn the_status_page_needs_credentials_unless_public() {
    let dir = Dir::new();
    let key = test_key(64);
    let own = test_key(65);
    let server = start(
        &dir,
        &format!(
            "key = {}\n[DynIP:Hosts]\nnas = {}\n",
            key.encode(),
            own.encode()
        ),
    );
    let addr = server.addr;
    update(addr, &key, "hostname=pc&myip=203.0.113.7");
    update(addr, &own, "hostname=nas&myip=192.0.2.9");
    let res = get(addr, "/", &[]);
    assert_eq!(res.status, 401);
    assert!(res
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Basic"));
    let res = get(
        addr,
        "/",
        &[("Authorization", &basic("me", &test_key(3).encode()))],
    );
    assert_eq!(res.status, 401);
    let res = get(addr, "/", &[("Authorization", &basic("me", &key.encode()))]);
    assert_eq!(res.status, 200);
    assert!(res.body.contains(">pc</a>") && res.body.contains(">nas</a>"));
    // A per-host key sees its own host only.
    let res = get(addr, "/", &[("Authorization", &basic("me", &own.encode()))]);
    assert!(
        res.body.contains(">nas</a>") && !res.body.contains(">pc</a>"),
        "{res:?}"
    );
    let res = get(
        addr,
        "/hosts/pc",
        &[("Authorization", &basic("me", &own.encode()))],
    );
    assert_eq!(res.status, 403);
}

/// More hosts than a page holds: the page links the next one, which starts after the
/// last host shown, and the last page links back to the first.
#[test]
fn the_status_page_pages_through_a_long_list() {
    let dir = Dir::new();
    let server = start(&dir, "");
    // Unsigned datagrams (no key is set), 1,005 names that sort as numbered.
    for i in 0..1005 {
        server.process.send(format!("host-{i:04}").as_bytes());
    }
    eventually("1,005 committed reports", || {
        (server.process.n_committed() >= 1005).then_some(())
    });
    let first = get(server.addr, "/", &[]);
    assert_eq!(first.status, 200);
    assert!(
        first.body.contains("<h1>dynip: 1005 hosts</h1>"),
        "{first:?}"
    );
    assert_eq!(first.body.matches("<tr class=\"host").count(), 1000);
    assert!(first.body.contains(">host-0999</a>"));
    assert!(!first.body.contains(">host-1000</a>"));
    assert!(
        first
            .body
            .contains("<a href=\"/?after=host-0999\" rel=\"next\">Next 1000 →</a>"),
        "{}",
        first.body
    );
    let last = get(server.addr, "/?after=host-0999", &[]);
    assert_eq!(last.status, 200);
    assert_eq!(last.body.matches("<tr class=\"host").count(), 5);
    assert!(last.body.contains(">host-1000</a>") && last.body.contains(">host-1004</a>"));
    assert!(last.body.contains("<a href=\"/\">First page</a>"));
    assert!(!last.body.contains("rel=\"next\""));
    let bad = get(server.addr, "/?after=..", &[]);
    assert_eq!(bad.status, 400, "{bad:?}");
}

#[test]
fn tls_with_a_generated_certificate() {
    if !peers_present("http::tls_with_a_generated_certificate", &["curl"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(66);
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generate a certificate");
    dir.write("cert.pem", certified.cert.pem());
    dir.write("key.pem", certified.key_pair.serialize_pem());
    let server = start(
        &dir,
        &format!(
            "key = {}\ntls_cert = cert.pem\ntls_key = key.pem\n",
            key.encode()
        ),
    );
    let addr = server.addr;
    assert!(
        !server.process.stderr_lines("listening https=").is_empty(),
        "{}",
        server.process.stderr_tail()
    );
    let url = format!(
        "https://router:{}@127.0.0.1:{}/nic/update?hostname=tls-host&myip=203.0.113.70",
        url_encoded(&key.encode()),
        addr.port()
    );
    let out = run("curl", &["-sS", "--cacert", "cert.pem", &url], dir.path());
    assert_eq!(out.stdout, "good 203.0.113.70\n", "{out:?}");
    // Plain HTTP to the TLS port: no answer but a closed connection, and the server goes on.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    assert!(!String::from_utf8_lossy(&bytes).contains("ok"), "{bytes:?}");
    // Without the certificate, curl refuses the server: it is not a public CA's.
    let out = run(
        "curl",
        &["-sS", &format!("https://127.0.0.1:{}/healthz", addr.port())],
        dir.path(),
    );
    assert_ne!(out.code, 0, "{out:?}");
    let out = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            "cert.pem",
            &format!("https://127.0.0.1:{}/healthz", addr.port()),
        ],
        dir.path(),
    );
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    assert_eq!(
        listed_ipv4(&dir, "tls-host").as_deref(),
        Some("203.0.113.70")
    );
}

#[test]
fn bad_tls_files_stop_the_server_with_exit_3() {
    let dir = Dir::new();
    dir.write("cert.pem", "not a certificate");
    dir.write("key.pem", "not a key");
    dir.server_config(
        "127.0.0.1",
        "http_listen = 127.0.0.1:0\ntls_cert = cert.pem\ntls_key = key.pem\n",
    );
    let out = dir.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("tls_cert cert.pem"), "{out:?}");
}

#[test]
fn limits_and_time_outs() {
    let dir = Dir::new();
    let key = test_key(67);
    let server = start(&dir, &format!("key = {}\n", key.encode()));
    let addr = server.addr;
    let auth = basic("router", &key.encode());
    // A huge head: 431, nothing recorded.
    let huge = format!(
        "GET /nic/update?hostname=huge&myip=192.0.2.1 HTTP/1.1\r\nHost: x\r\n\
         Authorization: {auth}\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let res = send_raw(addr, huge.as_bytes());
    assert_eq!(res.status, 431, "{res:?}");
    // A body: 413.
    let body = format!(
        "GET /nic/update?hostname=body&myip=192.0.2.1 HTTP/1.1\r\nHost: x\r\n\
         Authorization: {auth}\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n{}",
        "b".repeat(100_000)
    );
    let res = send_raw(addr, body.as_bytes());
    assert_eq!(res.status, 413, "{res:?}");
    // Not HTTP: 400.
    let res = send_raw(addr, b"HELLO THERE\r\n\r\n");
    assert_eq!(res.status, 400, "{res:?}");
    // A query that is not UTF-8 when decoded, a name with a NUL: clear answers.
    let res = get(
        addr,
        "/nic/update?hostname=%ff%fe&myip=192.0.2.1",
        &[("Authorization", &auth)],
    );
    assert_eq!((res.status, res.body.as_str()), (200, "notfqdn\n"));
    let res = get(
        addr,
        "/nic/update?hostname=a%00b&myip=192.0.2.1",
        &[("Authorization", &auth)],
    );
    assert_eq!((res.status, res.body.as_str()), (200, "notfqdn\n"));
    // A slow client: a head not finished in time is cut off.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /nic/update?hostname=slow HTTP/1.1\r\nHost: x\r\n")
        .expect("send half a head");
    slow.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let started = Instant::now();
    let mut bytes = Vec::new();
    let _ = slow.read_to_end(&mut bytes);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < TIMEOUT,
        "closed after {waited:?}"
    );
    // Meanwhile and after, others are served.
    let res = get(addr, "/healthz", &[]);
    assert_eq!(res.body, "ok\n");
    assert!(dir.hosts().is_empty(), "{:?}", dir.hosts());
}

#[test]
fn offline_lasts_until_the_next_report_and_across_restarts() {
    let dir = Dir::new();
    let key = test_key(68);
    let mut server = start(
        &dir,
        &format!("key = {}\npublic_status = yes\n", key.encode()),
    );
    let bearer = format!("Bearer {}", key.encode());
    let offline_of = |addr: SocketAddr| -> Value {
        let res = get(addr, "/api/v1/hosts/laptop", &[("Authorization", &bearer)]);
        assert_eq!(res.status, 200, "{res:?}");
        let host: Value = serde_json::from_str(&res.body).expect("JSON");
        host["offline"].clone()
    };
    assert_eq!(
        update(server.addr, &key, "hostname=laptop&myip=203.0.113.5"),
        (200, "good 203.0.113.5\n".to_string())
    );
    assert_eq!(offline_of(server.addr), false);
    // Going offline at the same address is a change, not a nochg.
    assert_eq!(
        update(
            server.addr,
            &key,
            "hostname=laptop&myip=203.0.113.5&offline=YES"
        ),
        (200, "good 203.0.113.5\n".to_string())
    );
    assert_eq!(offline_of(server.addr), true);
    let page = get(server.addr, "/", &[]);
    assert!(page.body.contains(">offline</span>"), "{page:?}");
    assert_eq!(server.process.terminate(), 0);
    let server = start(
        &dir,
        &format!("key = {}\npublic_status = yes\n", key.encode()),
    );
    assert_eq!(offline_of(server.addr), true, "offline after a restart");
    assert_eq!(
        update(server.addr, &key, "hostname=laptop&myip=203.0.113.5"),
        (200, "good 203.0.113.5\n".to_string())
    );
    assert_eq!(offline_of(server.addr), false);
}

#[test]
fn allow_from_applies_to_http() {
    let dir = Dir::new();
    let key = test_key(69);
    let server = start(
        &dir,
        &format!("key = {}\nallow_from = 192.0.2.0/24\n", key.encode()),
    );
    assert_eq!(
        update(server.addr, &key, "hostname=pc&myip=192.0.2.1"),
        (200, "badauth\n".to_string())
    );
    assert!(dir.hosts().is_empty());
}

#[test]
fn http_listens_on_ipv6() {
    if !ipv6_loopback_works() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let dir = Dir::new();
    let key = test_key(70);
    dir.server_config(
        "127.0.0.1",
        &format!("http_listen = [::1]:0\nkey = {}\n", key.encode()),
    );
    let process = ServerProcess::start(&dir);
    let addr = process.listening_http();
    assert!(addr.is_ipv6(), "{addr}");
    let res = get(addr, "/myip", &[]);
    assert_eq!(res.body, "::1\n");
    assert_eq!(
        update(addr, &key, "hostname=six"),
        (200, "good ::1\n".to_string())
    );
    assert_eq!(listed_ipv6(&dir, "six").as_deref(), Some("::1"));
}

/// `good` means committed: after a `kill -9` right after the answers, every host answered
/// `good` is in the store.
#[test]
fn good_means_committed_even_after_kill_9() {
    let dir = Dir::new();
    let key = test_key(71);
    let mut server = start(&dir, &format!("key = {}\n", key.encode()));
    let mut answered = Vec::new();
    for idx in 0..50 {
        let (status, body) = update(
            server.addr,
            &key,
            &format!("hostname=h{idx}&myip=198.51.100.{idx}"),
        );
        assert_eq!(
            (status, body.as_str()),
            (200, format!("good 198.51.100.{idx}\n").as_str())
        );
        answered.push(format!("h{idx}"));
    }
    server.process.kill9();
    let hosts = dir.list();
    for host in &answered {
        let ipv4 = hosts.get(host).map(|h| h["ipv4"]["address"].clone());
        assert!(ipv4.is_some(), "{host} answered good but not in the store");
    }
}

/// With `history_max_age`, changes older than it are shown neither by `dynip history` nor
/// by the API, the host stays known, and a new change shows at once.
#[test]
fn changes_older_than_history_max_age_are_forgotten() {
    let dir = Dir::new();
    let key = test_key(72);
    dir.server_config(
        "127.0.0.1",
        &format!(
            "http_listen = 127.0.0.1:0\nkey = {}\nhistory_max_age = 2s\n",
            key.encode()
        ),
    );
    let server = ServerProcess::start(&dir);
    let addr = server.listening_http();
    let bearer = format!("Bearer {}", key.encode());
    let api_changes = || {
        let res = get(
            addr,
            "/api/v1/hosts/roamer/history",
            &[("Authorization", &bearer)],
        );
        assert_eq!(res.status, 200, "{}", res.body);
        let body: serde_json::Value = serde_json::from_str(&res.body).expect("JSON");
        body["changes"].as_array().expect("changes").len()
    };
    for myip in ["198.51.100.1", "198.51.100.2"] {
        let (status, body) = update(addr, &key, &format!("hostname=roamer&myip={myip}"));
        assert_eq!((status, body), (200, format!("good {myip}\n")));
    }
    assert_eq!(dir.history("roamer").len(), 2);
    assert_eq!(api_changes(), 2);

    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        dir.history("roamer"),
        [],
        "known, with no change left to show"
    );
    assert_eq!(api_changes(), 0);
    let (status, _) = update(addr, &key, "hostname=roamer&myip=198.51.100.3");
    assert_eq!(status, 200);
    let shown: Vec<String> = dir
        .history("roamer")
        .into_iter()
        .map(|(_, address)| address)
        .collect();
    assert_eq!(shown, ["198.51.100.3"]);
    assert_eq!(api_changes(), 1);
    let unknown = dir.dynip(&["history", CONFIG, "nobody"]);
    assert_eq!(unknown.code, 9, "{unknown:?}");
}
