//! The DNS face against the real `dig` (bind9-dnsutils) and `kdig` (knot-dnsutils): every
//! answer kind, case, TCP, EDNS and truncation, a report answered at once, stale hosts,
//! the rate limit, and bytes that are not queries.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name as DnsName, RecordType};

use crate::harness::*;

pub const ZONE: &str = "dyn.example.com";

/// Writes a config with reports on loopback and DNS for [`ZONE`] on `127.0.0.1:0`, plus
/// `extra` lines, starts the server and returns it with its DNS address.
pub fn start(dir: &Dir, extra: &str) -> (ServerProcess, SocketAddr) {
    start_on(dir, "127.0.0.1", extra)
}

/// As [`start`], with reports received on `server_ip`.
pub fn start_on(dir: &Dir, server_ip: &str, extra: &str) -> (ServerProcess, SocketAddr) {
    dir.server_config(
        server_ip,
        &format!("dns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n{extra}"),
    );
    let server = ServerProcess::start(dir);
    let addr = server.listening("dns");
    (server, addr)
}

/// What `dig` or `kdig` printed, taken apart.
#[derive(Debug)]
pub struct Answer {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub text: String,
}

impl Answer {
    fn parse(text: &str) -> Answer {
        let status = text
            .split("status: ")
            .nth(1)
            .map(|rest| rest.chars().take_while(char::is_ascii_alphabetic).collect())
            .unwrap_or_default();
        let flags = text
            .lines()
            .find_map(|line| {
                let idx = line.to_ascii_lowercase().find(";; flags:")?;
                let rest = &line[idx + ";; flags:".len()..];
                Some(
                    rest.split(';')
                        .next()
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect(),
                )
            })
            .unwrap_or_default();
        let section = |title: &str| -> Vec<String> {
            let mut lines = text
                .lines()
                .skip_while(|line| !line.starts_with(title))
                .skip(1);
            let mut records = Vec::new();
            for line in lines.by_ref() {
                if line.trim().is_empty() || line.starts_with(";;") {
                    break;
                }
                if !line.starts_with(';') {
                    records.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
            records
        };
        Answer {
            status,
            flags,
            answer: section(";; ANSWER SECTION:"),
            authority: section(";; AUTHORITY SECTION:"),
            additional: section(";; ADDITIONAL SECTION:"),
            text: text.to_owned(),
        }
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|have| have == flag)
    }
}

/// Runs `program` (`dig` or `kdig`) against `server` with `args`; one try, 2 s.
pub fn ask(dir: &Dir, program: &str, server: SocketAddr, args: &[&str]) -> Answer {
    try_ask(dir, program, server, args).unwrap_or_else(|out| panic!("{program}: {out:?}"))
}

/// As [`ask`], with what the program printed when it could not ask (a server not
/// listening yet, say).
pub fn try_ask(
    dir: &Dir,
    program: &str,
    server: SocketAddr,
    args: &[&str],
) -> Result<Answer, Output> {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let mut all = vec![at.as_str(), "-p", port.as_str(), "+time=2", "+tries=1"];
    if program == "dig" {
        all.push("+nocookie");
    } else {
        all.push("+retry=0");
        all.retain(|arg| *arg != "+tries=1");
    }
    all.extend_from_slice(args);
    let out = run(program, &all, dir.path());
    if out.code != 0 {
        return Err(out);
    }
    Ok(Answer::parse(&out.stdout))
}

fn dig(dir: &Dir, server: SocketAddr, args: &[&str]) -> Answer {
    ask(dir, "dig", server, args)
}

fn kdig(dir: &Dir, server: SocketAddr, args: &[&str]) -> Answer {
    ask(dir, "kdig", server, args)
}

/// The SOA's serial in an answer's SOA record (answer or authority section).
pub fn serial(answer: &Answer) -> u64 {
    let soa = answer
        .answer
        .iter()
        .chain(&answer.authority)
        .find(|record| record.contains(" SOA "))
        .unwrap_or_else(|| panic!("no SOA in:\n{}", answer.text));
    soa.split_whitespace()
        .nth(6)
        .and_then(|serial| serial.parse().ok())
        .unwrap_or_else(|| panic!("no serial in {soa:?}"))
}

#[test]
fn dig_and_kdig_get_every_kind_of_answer() {
    if !peers_present(
        "dns::dig_and_kdig_get_every_kind_of_answer",
        &["dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (mut server, dns) = start_on(&dir, "*", "");
    server.send(b"kitchen-pc");
    server.send_from("127.0.0.2:0", b"v4-only");
    if ipv6_loopback_works() {
        send_to(
            "[::1]:0",
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], server.addr().port())),
            b"kitchen-pc",
        );
    }
    server.wait_committed("v4-only", 1);
    server.wait_committed("kitchen-pc", 1);
    let ttl_a = "60 IN A";

    let a = dig(&dir, dns, &["Kitchen-PC.Dyn.Example.COM", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert!(a.has_flag("aa") && !a.has_flag("ra"), "{}", a.text);
    assert_eq!(
        a.answer,
        [format!("Kitchen-PC.Dyn.Example.COM. {ttl_a} 127.0.0.1")],
        "the question's case, echoed"
    );

    let a = kdig(&dir, dns, &["v4-only.dyn.example.com", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert_eq!(
        a.answer,
        [format!("v4-only.dyn.example.com. {ttl_a} 127.0.0.2")]
    );

    let nodata = dig(&dir, dns, &["v4-only.dyn.example.com", "AAAA"]);
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.text);
    assert!(nodata.answer.is_empty(), "{}", nodata.text);
    assert!(!nodata.authority.is_empty(), "{}", nodata.text);
    assert!(
        nodata.authority[0]
            .starts_with(&format!("{ZONE}. 60 IN SOA ns.{ZONE}. hostmaster.{ZONE}. ")),
        "{}",
        nodata.text
    );

    let nxdomain = kdig(&dir, dns, &["nobody.dyn.example.com", "A"]);
    assert_eq!(nxdomain.status, "NXDOMAIN", "{}", nxdomain.text);
    assert!(nxdomain.has_flag("aa"));
    assert!(nxdomain.authority[0].contains(" SOA "), "{}", nxdomain.text);

    let soa = dig(&dir, dns, &[ZONE, "SOA"]);
    assert_eq!(soa.status, "NOERROR");
    assert!(soa.answer[0].ends_with(" 300 60 604800 60"), "{}", soa.text);
    let ns = kdig(&dir, dns, &[ZONE, "NS"]);
    assert_eq!(
        ns.answer,
        [format!("{ZONE}. 60 IN NS ns.{ZONE}.")],
        "{}",
        ns.text
    );
    assert_eq!(
        ns.additional,
        [format!("ns.{ZONE}. 60 IN A 127.0.0.1")],
        "{}",
        ns.text
    );

    let any = dig(&dir, dns, &["kitchen-pc.dyn.example.com", "ANY"]);
    assert_eq!(any.answer.len(), 1, "RFC 8482: one RRset\n{}", any.text);

    for outside in ["example.com", "www.example.org", "com"] {
        let refused = dig(&dir, dns, &[outside, "A"]);
        assert_eq!(refused.status, "REFUSED", "{outside}: {}", refused.text);
        assert!(!refused.has_flag("aa") && refused.answer.is_empty());
    }
    let recursion = kdig(&dir, dns, &["+rec", "www.example.org", "A"]);
    assert_eq!(recursion.status, "REFUSED", "never an open resolver");

    if ipv6_loopback_works() {
        let aaaa = kdig(&dir, dns, &["+tcp", "kitchen-pc.dyn.example.com", "AAAA"]);
        assert_eq!(
            aaaa.answer,
            ["kitchen-pc.dyn.example.com. 60 IN AAAA ::1"],
            "{}",
            aaaa.text
        );
    }
    let tcp = dig(&dir, dns, &["+tcp", "kitchen-pc.dyn.example.com", "A"]);
    assert_eq!(tcp.answer.len(), 1, "{}", tcp.text);
    assert!(tcp.text.contains("(TCP)"), "{}", tcp.text);
    assert_eq!(server.terminate(), 0);
}

#[test]
fn a_report_is_answered_by_dns_at_once_and_the_serial_rises() {
    if !peers_present(
        "dns::a_report_is_answered_by_dns_at_once_and_the_serial_rises",
        &["dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (mut server, dns) = start(&dir, "dns_ttl = 30\n");
    let before = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
    server.send(b"laptop");
    server.wait_committed("laptop", 1);
    let answer = dig(&dir, dns, &["laptop.dyn.example.com", "A"]);
    assert_eq!(
        answer.answer,
        ["laptop.dyn.example.com. 30 IN A 127.0.0.1"],
        "{}",
        answer.text
    );
    // The serial is the second of the last change, once that second is over.
    let after_new = eventually("the serial to rise after a new host", || {
        let now = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
        (now > before).then_some(now)
    });
    std::thread::sleep(Duration::from_millis(1100));
    let settled = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
    assert!(settled >= after_new, "{after_new} -> {settled}");

    server.send(b"laptop");
    server.wait_committed("laptop", 2);
    std::thread::sleep(Duration::from_millis(1100));
    let same = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
    assert_eq!(
        same, settled,
        "the same address again changes nothing DNS shows"
    );

    server.send_from("127.0.0.3:0", b"laptop");
    server.wait_committed("laptop", 3);
    let moved = kdig(&dir, dns, &["laptop.dyn.example.com", "A"]);
    assert_eq!(
        moved.answer,
        ["laptop.dyn.example.com. 30 IN A 127.0.0.3"],
        "{}",
        moved.text
    );
    let after_move = eventually("the serial to rise after a move", || {
        let now = serial(&moved_soa(&dir, dns));
        (now > settled).then_some(now)
    });

    // A restart is a change: the serial never goes back, and rises.
    assert_eq!(server.terminate(), 0);
    let mut server = ServerProcess::start(&dir);
    let dns = server.listening("dns");
    let restarted = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
    assert!(
        restarted >= after_move,
        "{after_move} -> {restarted} after a restart"
    );
    eventually("the serial to rise after a restart", || {
        (serial(&dig(&dir, dns, &[ZONE, "SOA"])) > after_move).then_some(())
    });
    assert_eq!(server.terminate(), 0);
}

fn moved_soa(dir: &Dir, dns: SocketAddr) -> Answer {
    dig(dir, dns, &[ZONE, "SOA"])
}

#[test]
fn edns_sizes_are_honoured_and_tc_is_set_when_the_answer_does_not_fit() {
    if !peers_present(
        "dns::edns_sizes_are_honoured_and_tc_is_set_when_the_answer_does_not_fit",
        &["dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    // 40 name servers: an NS answer of about 1,000 bytes, more than 512 and than 600.
    let names: Vec<String> = (0..40)
        .map(|idx| format!("nameserver-{idx:02}.example.net"))
        .collect();
    let (mut server, dns) = start(&dir, &format!("dns_ns = {}\n", names.join(", ")));
    let plain = dig(&dir, dns, &["+noedns", "+ignore", ZONE, "NS"]);
    assert!(plain.has_flag("tc"), "no EDNS: 512 bytes\n{}", plain.text);
    assert!(plain.answer.is_empty());
    let small = kdig(
        &dir,
        dns,
        &["+notcp", "+bufsize=600", "+ignore", ZONE, "NS"],
    );
    assert!(small.has_flag("tc"), "{}", small.text);
    assert!(
        small.text.contains("UDP size: 1232 B"),
        "our OPT record\n{}",
        small.text
    );
    let fits = dig(&dir, dns, &["+bufsize=1232", "+ignore", ZONE, "NS"]);
    assert!(!fits.has_flag("tc"), "{}", fits.text);
    assert_eq!(fits.answer.len(), 40, "{}", fits.text);
    let tcp = kdig(&dir, dns, &["+tcp", "+noedns", ZONE, "NS"]);
    assert!(!tcp.has_flag("tc"));
    assert_eq!(tcp.answer.len(), 40, "{}", tcp.text);
    // dig retries a truncated answer over TCP by itself.
    let retried = dig(&dir, dns, &["+noedns", ZONE, "NS"]);
    assert_eq!(retried.answer.len(), 40, "{}", retried.text);
    assert_eq!(server.terminate(), 0);
}

#[test]
fn stale_hosts_stop_answering_when_configured() {
    if !peers_present("dns::stale_hosts_stop_answering_when_configured", &["dig"]) {
        return;
    }
    let dir = Dir::new();
    let (mut server, dns) = start(&dir, "stale_after = 1s\ndns_hide_stale = yes\n");
    let sent = Instant::now();
    server.send(b"sleepy");
    server.wait_committed("sleepy", 1);
    let fresh = dig(&dir, dns, &["sleepy.dyn.example.com", "A"]);
    assert_eq!(fresh.answer.len(), 1, "{}", fresh.text);
    let stale = eventually("sleepy to go stale", || {
        let answer = dig(&dir, dns, &["sleepy.dyn.example.com", "A"]);
        (answer.status == "NXDOMAIN").then_some(answer)
    });
    // Received after `sent`, so stale no earlier than `stale_after` after it.
    assert!(sent.elapsed() >= Duration::from_secs(1), "stale too early");
    assert!(stale.authority[0].contains(" SOA "));
    // Going stale changed what DNS shows, so the serial rises (secondaries follow), and
    // so does it when the host reports the same address again and comes back.
    let hidden = eventually("the serial to rise after going stale", || {
        let now = serial(&stale);
        let asked = serial(&dig(&dir, dns, &[ZONE, "SOA"]));
        (asked > now).then_some(asked)
    });
    server.send(b"sleepy");
    server.wait_committed("sleepy", 2);
    let back = dig(&dir, dns, &["sleepy.dyn.example.com", "A"]);
    assert_eq!(back.answer.len(), 1, "{}", back.text);
    eventually("the serial to rise after coming back", || {
        (serial(&dig(&dir, dns, &[ZONE, "SOA"])) > hidden).then_some(())
    });
    assert_eq!(server.terminate(), 0);
}

/// A query for `name`, type A, with id `id`.
pub fn query(name: &str, id: u16) -> Vec<u8> {
    let mut message = Message::new();
    message.set_id(id).add_query(Query::query(
        DnsName::from_ascii(name).expect("a name"),
        RecordType::A,
    ));
    message.to_vec().expect("a query encodes")
}

/// The server with `extra` config, once it knows the host `target`.
fn start_with_target(dir: &Dir, extra: &str) -> (ServerProcess, SocketAddr) {
    let (server, dns) = start(dir, extra);
    server.send(b"target");
    server.wait_committed("target", 1);
    (server, dns)
}

/// A client socket on 127.0.0.1 whose reads wait at most `timeout`.
fn client_socket(timeout: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket
}

#[test]
fn the_rate_limit_drops_or_truncates_past_the_rate_per_network() {
    if !peers_present(
        "dns::the_rate_limit_drops_or_truncates_past_the_rate_per_network",
        &["dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (mut server, dns) = start_with_target(&dir, "dns_rate_limit = 10\n");
    let socket = client_socket(Duration::from_millis(300));
    let n_sent = 100;
    for id in 0..n_sent {
        socket
            .send_to(&query("target.dyn.example.com.", id), dns)
            .expect("send");
    }
    let (mut n_full, mut n_truncated) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        let message = Message::from_vec(&buf[..len]).expect("an answer decodes");
        if message.truncated() {
            assert!(message.answers().is_empty());
            n_truncated += 1;
        } else {
            n_full += 1;
        }
    }
    // A burst of one second's worth (10), a little refill while the 100 go out, and every
    // other one past the limit slips through truncated.
    assert!((10..=20).contains(&n_full), "{n_full} full answers");
    assert!(
        (30..=50).contains(&n_truncated),
        "{n_truncated} truncated answers"
    );
    // Another network is not limited; TCP is not limited.
    let other = dig(
        &dir,
        dns,
        &["-b", "127.0.1.1", "target.dyn.example.com", "A"],
    );
    assert_eq!(other.answer.len(), 1, "{}", other.text);
    let tcp = dig(&dir, dns, &["+tcp", "target.dyn.example.com", "A"]);
    assert_eq!(tcp.answer.len(), 1, "{}", tcp.text);
    // After a second the bucket is full again.
    std::thread::sleep(Duration::from_millis(1100));
    let again = dig(&dir, dns, &["target.dyn.example.com", "A"]);
    assert_eq!(again.answer.len(), 1, "{}", again.text);
    assert_eq!(server.terminate(), 0);
}

/// With two UDP threads, a network that queries from many ports reaches both sockets,
/// and still gets one budget: the threads share their buckets.
#[test]
fn the_rate_limit_is_one_budget_across_udp_threads() {
    let dir = Dir::new();
    let (mut server, dns) = start_with_target(&dir, "dns_rate_limit = 20\ndns_threads = 2\n");
    // 40 sockets, 5 queries each: the kernel spreads the ports over the two sockets.
    let sockets: Vec<UdpSocket> = (0..40)
        .map(|_| client_socket(Duration::from_millis(50)))
        .collect();
    for (n, socket) in sockets.iter().enumerate() {
        for id in 0..5 {
            socket
                .send_to(&query("target.dyn.example.com.", (n * 5 + id) as u16), dns)
                .expect("send");
        }
    }
    // The answers are all in the sockets' buffers by then.
    std::thread::sleep(Duration::from_millis(300));
    let mut n_full = 0;
    let mut buf = [0u8; 2048];
    for socket in &sockets {
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            let message = Message::from_vec(&buf[..len]).expect("an answer decodes");
            if !message.truncated() {
                n_full += 1;
            }
        }
    }
    // One burst of 20 and a little refill; a budget per thread would have let about 40.
    assert!((20..=30).contains(&n_full), "{n_full} full answers of 200");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn bytes_that_are_not_queries_never_stop_the_server() {
    if !peers_present(
        "dns::bytes_that_are_not_queries_never_stop_the_server",
        &["dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    // Two UDP threads: each socket of the pair must survive.
    let (mut server, dns) = start(&dir, "dns_rate_limit = 0\ndns_threads = 2\n");
    server.send(b"survivor");
    server.wait_committed("survivor", 1);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut random = Xorshift(0x5eed_d115);
    let good = query("survivor.dyn.example.com.", 7);
    for round in 0..3000usize {
        let bytes = match round % 3 {
            // Random bytes of any length up to 600.
            0 => random.bytes(round % 600),
            // A real query with a few bytes changed: deeper into the parser.
            1 => {
                let mut bytes = good.clone();
                let noise = random.bytes(4);
                for pair in noise.chunks(2) {
                    let at = usize::from(pair[0]) % bytes.len();
                    bytes[at] = pair[1];
                }
                bytes
            }
            // A header claiming many records, then garbage.
            _ => {
                let mut bytes = vec![
                    0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ];
                bytes.extend(random.bytes(round % 100));
                bytes
            }
        };
        let _ = socket.send_to(&bytes, dns);
        if round % 500 == 0 {
            // Let the server drain between bursts, so nothing is lost to the socket buffer.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // TCP: garbage, a length with nothing after it, a huge length, a half query.
    for bytes in [
        random.bytes(300),
        vec![0x00],
        vec![0xff, 0xff, 1, 2, 3],
        good[..good.len() / 2].to_vec(),
    ] {
        if let Ok(mut stream) = TcpStream::connect(dns) {
            use std::io::Write;
            let _ = stream.write_all(&bytes);
        }
    }
    let answer = dig(&dir, dns, &["survivor.dyn.example.com", "A"]);
    assert_eq!(answer.answer.len(), 1, "{}", answer.text);
    let tcp = kdig(&dir, dns, &["+tcp", "survivor.dyn.example.com", "A"]);
    assert_eq!(tcp.answer.len(), 1, "{}", tcp.text);
    assert!(server.is_running());
    assert_eq!(server.terminate(), 0);
}

#[test]
fn dns_settings_are_checked_at_start() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "dns_listen = 127.0.0.1:0\n");
    let out = dir.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 3, "dns_listen without dns_zone: {out:?}");
    assert!(out.stderr.contains("needs dns_zone"), "{out:?}");
    let taken = TcpListenerGuard::bind();
    dir.server_config(
        "127.0.0.1",
        &format!("dns_listen = {}\ndns_zone = {ZONE}\n", taken.addr()),
    );
    let out = dir.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 7, "dns_listen in use: {out:?}");
    assert!(out.stderr.contains("cannot listen for DNS"), "{out:?}");
}

/// A TCP port held open for a test.
struct TcpListenerGuard(std::net::TcpListener);

impl TcpListenerGuard {
    fn bind() -> TcpListenerGuard {
        TcpListenerGuard(std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port"))
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().expect("its address")
    }
}

#[test]
fn a_dotted_host_makes_its_parent_an_empty_non_terminal() {
    if !peers_present(
        "dns::a_dotted_host_makes_its_parent_an_empty_non_terminal",
        &["dig", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (mut server, dns) = start(&dir, "");
    let before = dig(&dir, dns, &["garage.dyn.example.com", "A"]);
    assert_eq!(before.status, "NXDOMAIN", "{}", before.text);
    server.send(b"pi.garage");
    server.wait_committed("pi.garage", 1);
    let host = dig(&dir, dns, &["pi.garage.dyn.example.com", "A"]);
    assert_eq!(
        host.answer,
        ["pi.garage.dyn.example.com. 60 IN A 127.0.0.1"],
        "{}",
        host.text
    );
    // RFC 8020: NXDOMAIN would tell resolvers (QNAME minimisation asks for the parent
    // first) that nothing exists below it.
    let parent = eventually("garage to become an empty non-terminal", || {
        let answer = kdig(&dir, dns, &["Garage.dyn.example.com", "A"]);
        (answer.status == "NOERROR").then_some(answer)
    });
    assert!(
        parent.answer.is_empty() && parent.authority[0].contains(" SOA "),
        "{}",
        parent.text
    );
    assert_eq!(server.terminate(), 0);
}

/// The DNS counters are served at `/metrics` beside the HTTP face's, and the whole
/// exposition still passes `promtool check metrics`.
#[test]
fn dns_counters_are_served_at_metrics() {
    if !peers_present(
        "dns::dns_counters_are_served_at_metrics",
        &["dig", "promtool"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (server, dns) = start(&dir, "http_listen = 127.0.0.1:0\n");
    let http = server.listening_http();
    server.send(b"kitchen-pc");
    server.wait_committed("kitchen-pc", 1);
    assert_eq!(
        dig(&dir, dns, &["kitchen-pc.dyn.example.com", "A"]).status,
        "NOERROR"
    );
    assert_eq!(
        dig(&dir, dns, &["nobody.dyn.example.com", "A"]).status,
        "NXDOMAIN"
    );
    assert_eq!(dig(&dir, dns, &["example.org", "A"]).status, "REFUSED");
    let body = crate::harness::http::get(http, "/metrics", &[]).body;
    for line in [
        "dynip_dns_responses_total{rcode=\"NOERROR\"} 1",
        "dynip_dns_responses_total{rcode=\"NXDOMAIN\"} 1",
        "dynip_dns_responses_total{rcode=\"REFUSED\"} 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }
    dir.write("metrics.txt", &body);
    let out = run_command(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics < metrics.txt")
            .current_dir(dir.path()),
    );
    assert_eq!(out.code, 0, "promtool: {out:?}\n{body}");
    assert_eq!(out.stdout.trim(), "", "promtool found problems: {out:?}");
}

/// A host that said `offline=YES` over dyndns2 stops answering, and the zone's serial
/// rises so that secondaries hear of it; its next report brings it back.
#[test]
fn an_offline_host_stops_answering_until_it_reports_again() {
    if !peers_present(
        "dns::an_offline_host_stops_answering_until_it_reports_again",
        &["dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(61);
    let (server, dns) = start(
        &dir,
        &format!("http_listen = 127.0.0.1:0\nkey = {}\n", key.encode()),
    );
    let http = server.listening_http();
    let name = "away.dyn.example.com";
    let good = crate::harness::http::update(http, &key, "hostname=away&myip=192.0.2.7");
    assert_eq!(good, (200, "good 192.0.2.7\n".to_owned()));
    assert_eq!(dig(&dir, dns, &[name, "A"]).answer.len(), 1);
    let before = serial(&dig(&dir, dns, &["dyn.example.com", "SOA"]));
    let (status, _) =
        crate::harness::http::update(http, &key, "hostname=away&myip=192.0.2.7&offline=YES");
    assert_eq!(status, 200);
    let gone = dig(&dir, dns, &[name, "A"]);
    assert_eq!(gone.status, "NXDOMAIN", "{}", gone.text);
    eventually("the serial to rise after offline=YES", || {
        (serial(&dig(&dir, dns, &["dyn.example.com", "SOA"])) > before).then_some(())
    });
    let listed = &dir.list()["away"];
    assert_eq!(listed["offline"], true, "list --json: {listed}");
    assert_eq!(listed["stale"], false, "list --json: {listed}");
    crate::harness::http::update(http, &key, "hostname=away&myip=192.0.2.7");
    let back = dig(&dir, dns, &[name, "A"]);
    assert_eq!(back.status, "NOERROR", "{}", back.text);
    assert_eq!(back.answer.len(), 1, "{}", back.text);
}
