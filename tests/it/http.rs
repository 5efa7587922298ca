//! The HTTP face: dyndns2 updates from the real ddclient and inadyn, every answer code,
//! the router URL forms, `/myip`, `X-Forwarded-For`, SIGHUP, commit failures, `/metrics`
//! under promtool, the JSON API against its OpenAPI description, the status page in
//! headless Chromium, TLS, and the limits.
//!
//! Requests are written by hand on plain sockets ([`get`]), so a test sees exactly the
//! bytes a client would, and can send what no client library would (huge heads, slow
//! heads, bad queries).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use dynip::key::Key;

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
    let addr = http_addr(&process);
    HttpServer { process, addr }
}

/// The address of the server's `listening http=ADDR` (or `https=`) line.
pub fn http_addr(process: &ServerProcess) -> SocketAddr {
    eventually("the listening http= line", || {
        process.stderr().iter().find_map(|line| {
            let idx = line
                .find("listening http=")
                .map(|idx| idx + "listening http=".len())
                .or_else(|| {
                    line.find("listening https=")
                        .map(|idx| idx + "listening https=".len())
                })?;
            line[idx..].split_whitespace().next()?.parse().ok()
        })
    })
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Parses one whole response (head and body up to the end of `bytes`).
pub fn parse_response(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Sends `raw` (a whole request) on a new connection and reads until the server closes.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(raw).expect("send a request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read a response");
    parse_response(&bytes)
}

/// `GET path` with `headers`, `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (key, value) in headers {
        raw.push_str(&format!("{key}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    send_raw(addr, raw.as_bytes())
}

/// The value of an `Authorization: Basic` header.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// `GET /nic/update?QUERY` with Basic credentials `router:KEY`; returns status and body.
pub fn update(addr: SocketAddr, key: &Key, query: &str) -> (u16, String) {
    let auth = basic("router", &key.encode());
    let res = get(
        addr,
        &format!("/nic/update?{query}"),
        &[("Authorization", &auth)],
    );
    (res.status, res.body)
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
    let config = dir.join("ddclient.conf");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the ddclient config");
    let out = run(
        "ddclient",
        &[
            "-foreground",
            "-daemon=0",
            "-verbose",
            "-noquiet",
            "-file",
            &config.to_string_lossy(),
            "-cache",
            &dir.join("ddclient.cache").to_string_lossy(),
        ],
        dir.path(),
    );
    let said = format!("{}{}", out.stdout, out.stderr);
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
    let again = run(
        "ddclient",
        &[
            "-foreground",
            "-daemon=0",
            "-verbose",
            "-noquiet",
            "-force",
            "-file",
            &config.to_string_lossy(),
            "-cache",
            &dir.join("ddclient.cache").to_string_lossy(),
        ],
        dir.path(),
    );
    let said = format!("{}{}", again.stdout, again.stderr);
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
