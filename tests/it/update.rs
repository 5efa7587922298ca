//! RFC 2136 UPDATE with TSIG, from the real clients: `nsupdate` (bind9-dnsutils) with
//! hmac-sha256 and hmac-md5 over UDP and TCP, `knsupdate` (knot-dnsutils), ddclient with
//! `protocol=nsupdate`; a host's key held to its own names, bad signatures and unsigned
//! updates refused and counted, prerequisites, TXT records kept across a restart, and
//! signed queries and transfers (`dig -y`).

use std::net::SocketAddr;

use dynip::model::key::Key;

use crate::dns::{ask, serial, ZONE};
use crate::harness::*;

/// A server with the shared key `shared`, `kitchen-pc`'s own key `host`, DNS for
/// [`ZONE`] and HTTP (`/metrics`, the acme-dns API), plus `extra` lines; returns it with
/// its DNS and HTTP addresses.
pub fn start(
    dir: &Dir,
    shared: &Key,
    host: &Key,
    extra: &str,
) -> (ServerProcess, SocketAddr, SocketAddr) {
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\nhttp_listen = 127.0.0.1:0\n\
             public_metrics = yes\n{extra}\n[DynIP:Hosts]\nkitchen-pc = {}\n",
            shared.encode(),
            host.encode()
        ),
    );
    let server = ServerProcess::start(dir);
    let dns = server.listening("dns");
    let http = server.listening("http");
    (server, dns, http)
}

/// Runs `program` (`nsupdate` or `knsupdate`) with `args` on the commands in `script`,
/// after a `server` line for `dns`.
pub fn update_with(
    dir: &Dir,
    program: &str,
    args: &[&str],
    dns: SocketAddr,
    script: &str,
) -> Output {
    let path = dir.join(&format!("{program}.txt"));
    std::fs::write(
        &path,
        format!("server {} {}\n{script}", dns.ip(), dns.port()),
    )
    .expect("write the update script");
    let mut all: Vec<&str> = args.to_vec();
    let path = path.to_string_lossy().into_owned();
    all.push(&path);
    run(program, &all, dir.path())
}

/// `-y ALGORITHM:NAME:SECRET`, as nsupdate and knsupdate take a key.
pub fn key_arg(algorithm: &str, name: &str, key: &Key) -> String {
    format!("{algorithm}:{name}:{}", key.encode())
}

/// The answer section of `dig NAME TYPE` against `dns`, sorted.
fn records(dir: &Dir, dns: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let answer = ask(dir, "dig", dns, &[name, rtype]);
    let mut records = answer.answer;
    records.sort();
    records
}

fn metric(addr: SocketAddr, line_start: &str) -> Option<u64> {
    let metrics = http::get(addr, "/metrics", &[]).body;
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn nsupdate_changes_txt_and_addresses_with_sha256_and_md5_over_udp_and_tcp() {
    if !peers_present(
        "update::nsupdate_changes_txt_and_addresses_with_sha256_and_md5_over_udp_and_tcp",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(61), test_key(62));
    let (_server, dns, http) = start(&dir, &shared, &host, "");
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    let before = serial(&ask(&dir, "dig", dns, &[ZONE, "SOA"]));
    for (idx, (algorithm, key_name, key, tcp)) in [
        ("hmac-sha256", "dynip", &shared, false),
        ("hmac-sha256", "dynip", &shared, true),
        ("hmac-md5", "kitchen-pc", &host, false),
        ("hmac-md5", "kitchen-pc", &host, true),
    ]
    .into_iter()
    .enumerate()
    {
        let key = key_arg(algorithm, key_name, key);
        let mut args = vec!["-y", key.as_str()];
        if tcp {
            args.push("-v");
        }
        // A certificate for the name and its wildcard: two tokens at once.
        let out = update_with(
            &dir,
            "nsupdate",
            &args,
            dns,
            &format!(
                "zone {ZONE}\nupdate delete {challenge} TXT\n\
                 update add {challenge} 60 TXT \"token-{idx}-a\"\n\
                 update add {challenge} 60 TXT \"token-{idx}-b\"\n\
                 update delete kitchen-pc.{ZONE} A\n\
                 update add kitchen-pc.{ZONE} 60 A 192.0.2.{idx}\nsend\n"
            ),
        );
        assert_eq!(out.code, 0, "{algorithm} {key_name} tcp={tcp}: {out:?}");
        // Answered after the commit: the next query sees it.
        assert_eq!(
            records(&dir, dns, &challenge, "TXT"),
            [
                format!("{challenge}. 10 IN TXT \"token-{idx}-a\""),
                format!("{challenge}. 10 IN TXT \"token-{idx}-b\"")
            ],
            "{algorithm} tcp={tcp}"
        );
        assert_eq!(
            records(&dir, dns, &format!("kitchen-pc.{ZONE}"), "A"),
            [format!("kitchen-pc.{ZONE}. 60 IN A 192.0.2.{idx}")]
        );
    }
    // The serial shows a change once its second is over.
    eventually("the serial to rise", || {
        (serial(&ask(&dir, "dig", dns, &[ZONE, "SOA"])) > before).then_some(())
    });
    // The address went into the history, as a report's would.
    let history = dir.history("kitchen-pc");
    assert_eq!(
        history.last().map(|(_, addr)| addr.as_str()),
        Some("192.0.2.3")
    );
    // Deleting the TXT RRset leaves the name empty: NXDOMAIN.
    let key = key_arg("hmac-sha256", "dynip", &shared);
    let out = update_with(
        &dir,
        "nsupdate",
        &["-y", &key],
        dns,
        &format!("zone {ZONE}\nupdate delete {challenge} TXT\nsend\n"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        ask(&dir, "dig", dns, &[&challenge, "TXT"]).status,
        "NXDOMAIN"
    );
    assert_eq!(metric(http, "dynip_dns_updates_total"), Some(5));
}

#[test]
fn a_hosts_key_changes_only_its_names_and_bad_updates_change_nothing() {
    if !peers_present(
        "update::a_hosts_key_changes_only_its_names_and_bad_updates_change_nothing",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(63), test_key(64));
    let (_server, dns, http) = start(&dir, &shared, &host, "");
    let host_key = key_arg("hmac-sha256", "kitchen-pc", &host);
    let refused = |args: &[&str], script: &str, expect: &str| {
        let out = update_with(
            &dir,
            "nsupdate",
            args,
            dns,
            &format!("zone {ZONE}\n{script}send\n"),
        );
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(out.code != 0 && said.contains(expect), "{script}: {out:?}");
    };
    // Another host's names, the apex, a name outside the zone.
    refused(
        &["-y", &host_key],
        &format!("update add _acme-challenge.nas.{ZONE} 60 TXT \"x\"\n"),
        "REFUSED",
    );
    refused(
        &["-y", &host_key],
        &format!("update add nas.{ZONE} 60 A 192.0.2.9\n"),
        "REFUSED",
    );
    let shared_key = key_arg("hmac-sha256", "dynip", &shared);
    refused(
        &["-y", &shared_key],
        &format!("update add {ZONE} 60 TXT \"apex\"\n"),
        "REFUSED",
    );
    // A key the server does not have, a wrong secret, no signature.
    let unknown = key_arg("hmac-sha256", "nobody", &host);
    refused(
        &["-y", &unknown],
        &format!("update add kitchen-pc.{ZONE} 60 A 192.0.2.9\n"),
        "NOTAUTH",
    );
    let wrong = key_arg("hmac-sha256", "kitchen-pc", &shared);
    refused(
        &["-y", &wrong],
        &format!("update add kitchen-pc.{ZONE} 60 A 192.0.2.9\n"),
        "NOTAUTH",
    );
    refused(
        &[],
        &format!("update add kitchen-pc.{ZONE} 60 A 192.0.2.9\n"),
        "REFUSED",
    );
    // A type dynip does not keep.
    refused(
        &["-y", &shared_key],
        &format!("update add kitchen-pc.{ZONE} 60 MX 10 mail.{ZONE}\n"),
        "REFUSED",
    );
    // Nothing of it is in the zone.
    for (name, rtype) in [
        (format!("_acme-challenge.nas.{ZONE}"), "TXT"),
        (format!("nas.{ZONE}"), "A"),
        (format!("kitchen-pc.{ZONE}"), "A"),
    ] {
        assert_eq!(
            ask(&dir, "dig", dns, &[&name, rtype]).status,
            "NXDOMAIN",
            "{name}"
        );
    }
    assert!(dir.hosts().is_empty(), "{:?}", dir.hosts());
    // Its own names, it may.
    let out = update_with(
        &dir,
        "nsupdate",
        &["-y", &host_key],
        dns,
        &format!(
            "zone {ZONE}\nupdate add _acme-challenge.kitchen-pc.{ZONE} 60 TXT \"mine\"\n\
             update add kitchen-pc.{ZONE} 60 AAAA 2001:db8::62\nsend\n"
        ),
    );
    assert_eq!(out.code, 0, "{out:?}");
    for (reason, n) in [
        ("out_of_scope", 3),
        ("bad_key", 1),
        ("bad_signature", 1),
        ("unsigned", 1),
        ("not_this_zone", 1),
    ] {
        assert_eq!(
            metric(
                http,
                &format!("dynip_dns_refused_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason}"
        );
    }
}

#[test]
fn prerequisites_decide_and_txt_records_survive_a_restart() {
    if !peers_present(
        "update::prerequisites_decide_and_txt_records_survive_a_restart",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(65), test_key(66));
    let (server, dns, _http) = start(&dir, &shared, &host, "");
    let key = key_arg("hmac-sha512", "dynip", &shared);
    // Kea's way: add only if the name is not in use.
    let add_if_new = format!(
        "zone {ZONE}\nprereq nxdomain nas.{ZONE}\nupdate add nas.{ZONE} 60 A 192.0.2.20\n\
         update add _acme-challenge.nas.{ZONE} 60 TXT \"kept\"\nsend\n"
    );
    let out = update_with(&dir, "nsupdate", &["-y", &key], dns, &add_if_new);
    assert_eq!(out.code, 0, "{out:?}");
    let again = update_with(&dir, "nsupdate", &["-y", &key], dns, &add_if_new);
    assert!(
        again.code != 0 && again.stderr.contains("YXDOMAIN"),
        "{again:?}"
    );
    // Value-dependent: the RRset must be exactly this.
    let out = update_with(
        &dir,
        "nsupdate",
        &["-y", &key],
        dns,
        &format!(
            "zone {ZONE}\nprereq yxrrset nas.{ZONE} A 192.0.2.99\n\
             update delete nas.{ZONE} A\nsend\n"
        ),
    );
    assert!(out.code != 0 && out.stderr.contains("NXRRSET"), "{out:?}");
    drop(server);
    let server = ServerProcess::start(&dir);
    let dns = server.listening("dns");
    assert_eq!(
        records(&dir, dns, &format!("_acme-challenge.nas.{ZONE}"), "TXT"),
        [format!("_acme-challenge.nas.{ZONE}. 10 IN TXT \"kept\"")]
    );
    assert_eq!(
        records(&dir, dns, &format!("nas.{ZONE}"), "A"),
        [format!("nas.{ZONE}. 60 IN A 192.0.2.20")]
    );
}

#[test]
fn knsupdate_updates_with_sha384_over_udp_and_tcp() {
    if !peers_present(
        "update::knsupdate_updates_with_sha384_over_udp_and_tcp",
        &["knsupdate", "kdig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(67), test_key(68));
    let (_server, dns, _http) = start(&dir, &shared, &host, "");
    let key = key_arg("hmac-sha384", "dynip", &shared);
    for (idx, tcp) in [(1, false), (2, true)] {
        let mut args = vec!["-y", key.as_str()];
        if tcp {
            args.push("-v");
        }
        let out = update_with(
            &dir,
            "knsupdate",
            &args,
            dns,
            &format!(
                "zone {ZONE}.\norigin {ZONE}.\nupdate add tv 60 AAAA 2001:db8::{idx}\n\
                 update add _acme-challenge.tv 60 TXT \"k-{idx}\"\nsend\n"
            ),
        );
        assert_eq!(out.code, 0, "tcp={tcp}: {out:?}");
        let answer = ask(&dir, "kdig", dns, &[&format!("tv.{ZONE}"), "AAAA"]);
        assert!(
            answer
                .answer
                .iter()
                .any(|record| record.ends_with(&format!("2001:db8::{idx}"))),
            "{answer:?}"
        );
    }
    let txt = ask(
        &dir,
        "kdig",
        dns,
        &[&format!("_acme-challenge.tv.{ZONE}"), "TXT"],
    );
    assert_eq!(txt.answer.len(), 2, "both tokens: {txt:?}");
}

#[test]
fn ddclient_with_protocol_nsupdate_sets_the_address() {
    if !peers_present(
        "update::ddclient_with_protocol_nsupdate_sets_the_address",
        &["ddclient", "nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(69), test_key(70));
    let (_server, dns, _http) = start(&dir, &shared, &host, "");
    dir.write(
        "kitchen-pc.key",
        format!(
            "key \"kitchen-pc\" {{\n  algorithm hmac-sha256;\n  secret \"{}\";\n}};\n",
            host.encode()
        ),
    );
    let nsupdate = which("nsupdate").expect("checked above");
    dir.write(
        "ddclient.conf",
        format!(
            "daemon=0\nuse=ip, ip=203.0.113.70\nprotocol=nsupdate\nserver=127.0.0.1:{}\n\
             login={}\npassword={}\nzone={ZONE}\nttl=60\nkitchen-pc.{ZONE}\n",
            dns.port(),
            nsupdate.display(),
            dir.join("kitchen-pc.key").display()
        ),
    );
    let (said, out) = ddclient(&dir, &[]);
    assert!(said.contains("IP address set to 203.0.113.70"), "{out:?}");
    assert_eq!(
        records(&dir, dns, &format!("kitchen-pc.{ZONE}"), "A"),
        [format!("kitchen-pc.{ZONE}. 60 IN A 203.0.113.70")]
    );
}

#[test]
fn signed_queries_and_transfers_are_answered_signed() {
    if !peers_present(
        "update::signed_queries_and_transfers_are_answered_signed",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(71), test_key(72));
    // No dns_transfer_to: only a signed transfer with the shared key is allowed.
    let (_server, dns, _http) = start(&dir, &shared, &host, "");
    let shared_key = key_arg("hmac-sha1", "dynip", &shared);
    let mut script = format!("zone {ZONE}\n");
    for idx in 0..1500 {
        if idx % 500 == 499 {
            script.push_str("send\n");
        }
        script.push_str(&format!(
            "update add host-{idx}.{ZONE} 60 A 10.0.{}.{}\n",
            idx / 256,
            idx % 256
        ));
    }
    script.push_str(&format!(
        "update add _acme-challenge.host-1.{ZONE} 60 TXT \"t\"\nsend\n"
    ));
    let out = update_with(&dir, "nsupdate", &["-y", &shared_key], dns, &script);
    assert_eq!(out.code, 0, "{out:?}");
    // dig checks the answer's signature, and says so.
    let signed = ask(
        &dir,
        "dig",
        dns,
        &["-y", &shared_key, &format!("host-7.{ZONE}"), "A"],
    );
    assert_eq!(signed.answer, [format!("host-7.{ZONE}. 60 IN A 10.0.0.7")]);
    assert!(signed.text.contains("TSIG"), "{}", signed.text);
    // A transfer of several messages, each signed (dig fails on a bad one).
    let transfer = run(
        "dig",
        &[
            "@127.0.0.1",
            "-p",
            &dns.port().to_string(),
            "-y",
            &shared_key,
            ZONE,
            "AXFR",
            "+time=5",
            "+tries=1",
        ],
        dir.path(),
    );
    assert_eq!(transfer.code, 0, "{transfer:?}");
    let said = format!("{}{}", transfer.stdout, transfer.stderr);
    assert!(
        !said.contains("failed") && !said.contains("verify"),
        "{said}"
    );
    let n_a = transfer
        .stdout
        .lines()
        .filter(|line| line.starts_with("host-") && line.contains("\tA\t"))
        .count();
    assert_eq!(n_a, 1500, "{}", transfer.stdout);
    assert!(
        !transfer.stdout.contains("(messages 1,"),
        "{}",
        transfer.stdout
    );
    assert!(transfer
        .stdout
        .contains(&format!("_acme-challenge.host-1.{ZONE}.")));
    // A host's key may not transfer the zone; nor may an unsigned request here.
    let host_key = key_arg("hmac-sha256", "kitchen-pc", &host);
    for args in [vec!["-y", host_key.as_str()], vec![]] {
        let port = dns.port().to_string();
        let mut all = vec![
            "@127.0.0.1",
            "-p",
            port.as_str(),
            ZONE,
            "AXFR",
            "+time=5",
            "+tries=1",
        ];
        all.extend(args);
        let refused = run("dig", &all, dir.path());
        assert!(refused.stdout.contains("Transfer failed"), "{refused:?}");
    }
}

#[test]
fn add_host_prints_the_lines_for_a_hosts_certificates() {
    if !peers_present(
        "update::add_host_prints_the_lines_for_a_hosts_certificates",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let port = free_port();
    let base = format!(
        "key = {}\ndns_listen = 127.0.0.1:{port}\ndns_zone = {ZONE}\n",
        test_key(73).encode()
    );
    dir.server_config("127.0.0.1", &base);
    let out = dir.dynip(&["add-host", CONFIG, "Kitchen-PC"]);
    assert_eq!(out.code, 0, "{out:?}");
    let blocks: Vec<&str> = out.stdout.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 5, "{}", out.stdout);
    let minted = settings(blocks[0]);
    let key = minted[0].1.clone();
    // certbot's credentials file and lego's environment, as printed.
    assert_eq!(
        settings(blocks[3]),
        [
            ("dns_rfc2136_server".to_owned(), "127.0.0.1".to_owned()),
            ("dns_rfc2136_port".to_owned(), port.to_string()),
            ("dns_rfc2136_name".to_owned(), "kitchen-pc".to_owned()),
            ("dns_rfc2136_secret".to_owned(), key.clone()),
            ("dns_rfc2136_algorithm".to_owned(), "HMAC-SHA256".to_owned()),
        ]
    );
    let lego: Vec<&str> = blocks[4]
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(
        lego,
        [
            format!("RFC2136_NAMESERVER=127.0.0.1:{port}"),
            "RFC2136_TSIG_KEY=kitchen-pc".to_owned(),
            format!("RFC2136_TSIG_SECRET={key}"),
            "RFC2136_TSIG_ALGORITHM=hmac-sha256.".to_owned(),
        ]
    );
    // nsupdate's key, as printed, works once the host's line is in the server's config.
    let nsupdate_key = blocks[2]
        .lines()
        .find_map(|line| line.strip_prefix("# nsupdate -y "))
        .expect("the nsupdate line")
        .to_owned();
    dir.server_config(
        "127.0.0.1",
        &format!(
            "{base}[DynIP:Hosts]\n{}\n",
            blocks[0].lines().last().unwrap()
        ),
    );
    let server = ServerProcess::start(&dir);
    let dns = server.listening("dns");
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    let updated = update_with(
        &dir,
        "nsupdate",
        &["-y", &nsupdate_key],
        dns,
        &format!("zone {ZONE}\nupdate add {challenge} 60 TXT \"printed\"\nsend\n"),
    );
    assert_eq!(updated.code, 0, "{updated:?}");
    assert_eq!(
        records(&dir, dns, &challenge, "TXT"),
        [format!("{challenge}. 10 IN TXT \"printed\"")]
    );
}

#[test]
fn check_says_who_may_update_the_zone() {
    let dir = Dir::new();
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\nhttp_listen = 127.0.0.1:0\n\
             acme_dns_register = open\n[DynIP:Hosts]\nkitchen-pc = {}\n",
            test_key(74).encode(),
            test_key(75).encode()
        ),
    );
    let out = dir.dynip(&["check", CONFIG]);
    assert_eq!(out.code, 0, "{out:?}");
    let expected = "dns updates: TSIG key dynip (the shared key) any name; 1 host key(s) as TSIG \
                    keys named after their hosts, each its host and its _acme-challenge; \
                    acme-dns API under /acme-dns/, registration open to anyone";
    assert!(out.stdout.contains(expected), "{out:?}");
}

#[test]
fn a_signed_answer_too_large_for_udp_once_signed_goes_truncated() {
    if !peers_present(
        "update::a_signed_answer_too_large_for_udp_once_signed_goes_truncated",
        &["nsupdate", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(76), test_key(77));
    let (_server, dns, _http) = start(&dir, &shared, &host, "");
    let key = key_arg("hmac-sha256", "dynip", &shared);
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    // Five records of 60 characters: 436 bytes unsigned, 514 signed (over 512).
    let mut script = format!("zone {ZONE}\n");
    for idx in 0..5 {
        script.push_str(&format!(
            "update add {challenge} 60 TXT \"{}{idx}\"\n",
            "t".repeat(59)
        ));
    }
    script.push_str("send\n");
    let out = update_with(&dir, "nsupdate", &["-y", &key], dns, &script);
    assert_eq!(out.code, 0, "{out:?}");
    let small = ["+bufsize=512", "+ignore"];
    let unsigned = ask(
        &dir,
        "dig",
        dns,
        &[&small[..], &[&challenge, "TXT"]].concat(),
    );
    assert!(!unsigned.has_flag("tc"), "{}", unsigned.text);
    assert_eq!(unsigned.answer.len(), 5, "{}", unsigned.text);
    let signed = ask(
        &dir,
        "dig",
        dns,
        &[&small[..], &["-y", &key, &challenge, "TXT"]].concat(),
    );
    assert!(signed.has_flag("tc"), "{}", signed.text);
    assert!(!signed.text.contains("verify"), "{}", signed.text);
    // Without +ignore, dig asks again over TCP and gets all five, signed.
    let retried = ask(
        &dir,
        "dig",
        dns,
        &["+bufsize=512", "-y", &key, &challenge, "TXT"],
    );
    assert_eq!(retried.answer.len(), 5, "{}", retried.text);
    assert!(!retried.text.contains("verify"), "{}", retried.text);
}
