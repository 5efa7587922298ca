//! A report's way into the JSON file and the store, through every entry point.

use crate::harness::*;

/// The original's format, to the byte: `{"name": ["ip", "YYYY-MM-DD HH:MM:SS.ffffff"]}`
/// with Python's `json.dump` separators, the time naive local time (UTC here).
#[test]
fn report_lands_in_json_file_in_the_original_format_and_in_list() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    server.send(b"kitchen-pc");

    let export = eventually("kitchen-pc in the JSON file", || {
        dir.export()
            .filter(|export| export.contains_key("kitchen-pc"))
    });
    assert_eq!(export.len(), 1, "{export:?}");
    let (addr, time) = &export["kitchen-pc"];
    assert_eq!(addr, "127.0.0.1");
    assert!(
        is_original_time(time),
        "time {time:?} is not YYYY-MM-DD HH:MM:SS.ffffff"
    );
    let at = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("time {time:?}: {e}"));
    let skew = (chrono::Utc::now().naive_utc() - at).num_seconds().abs();
    assert!(skew < 120, "time {time:?} is not now in UTC (TZ=UTC)");
    assert_eq!(
        dir.read_string(JSON_FILE),
        format!(r#"{{"kitchen-pc": ["127.0.0.1", "{time}"]}}"#)
    );

    let hosts = dir.list();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let host = &hosts["kitchen-pc"];
    assert_eq!(host["ipv4"]["address"], "127.0.0.1");
    assert!(host["ipv6"].is_null(), "{host}");
    assert_eq!(host["first_seen"], host["last_seen"]);
    assert_eq!(host["ipv4"]["last_change"], host["first_seen"]);
    let first_seen = host["first_seen"].as_str().expect("first_seen is a string");
    assert_eq!(
        first_seen,
        at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "list and the JSON file disagree on the time"
    );

    assert_eq!(
        server.committed(),
        [("kitchen-pc".to_string(), "127.0.0.1".to_string())]
    );
    assert_eq!(server.terminate(), 0);
}

/// `dynipd` serves; `dynip client` and `dynipc` (with `hostname =`) deliver to it.
#[test]
fn dynipd_receives_reports_from_dynip_client_and_dynipc() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::spawn(&dir, DYNIPD, &["-v", CONFIG]);
    let port = server.addr().port();
    for (file, name) in [("a.conf", "client-a"), ("b.conf", "client-b")] {
        dir.write(
            file,
            format!(
                "[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n\
                 hostname = {name}\n"
            ),
        );
    }
    let out = dir.dynip(&["client", "a.conf"]);
    assert_eq!(out.code, 0, "dynip client: {out:?}");
    let out = run(DYNIPC, &["b.conf"], dir.path());
    assert_eq!(out.code, 0, "dynipc: {out:?}");

    server.wait_committed("client-a", 1);
    server.wait_committed("client-b", 1);
    let hosts = dir.list();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let table = dir.dynip(&["list", CONFIG]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.starts_with("HOST"), "{table:?}");
    for name in ["client-a", "client-b"] {
        let row = table.stdout.lines().find(|line| line.starts_with(name));
        assert!(
            row.is_some_and(|row| row.contains("127.0.0.1")),
            "{table:?}"
        );
    }
    for name in ["client-a", "client-b"] {
        assert_eq!(hosts[name]["ipv4"]["address"], "127.0.0.1", "{name}");
    }
    let export = eventually("both clients in the JSON file", || {
        dir.export().filter(|export| export.len() == 2)
    });
    for name in ["client-a", "client-b"] {
        assert_eq!(export[name].0, "127.0.0.1", "{name}");
    }

    // Without `hostname`, the client reports the machine's name (when it is a plain one:
    // otherwise this part cannot be checked here).
    let machine = gethostname::gethostname().to_string_lossy().into_owned();
    if is_plain_name(&machine) {
        dir.write(
            "c.conf",
            format!("[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n"),
        );
        let out = run(DYNIPC, &["c.conf"], dir.path());
        assert_eq!(out.code, 0, "dynipc: {out:?}");
        server.wait_committed(&machine, 1);
    }
    assert_eq!(server.terminate(), 0);
}

/// Whether `text` is a host name of ASCII letters, digits, `-` and `_` in dot-separated
/// labels of 1-63 bytes (a subset of what dynip accepts).
fn is_plain_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

/// Names compare case-insensitively; the first spelling is kept, through a restart too.
#[test]
fn names_differing_in_case_are_one_host_spelled_as_first_seen() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    server.send(b"Kitchen-PC");
    server.wait_committed("Kitchen-PC", 1);
    server.send(b"kitchen-pc\n");
    server.wait_committed("kitchen-pc", 1);

    let hosts = dir.hosts();
    assert_eq!(
        hosts,
        ["Kitchen-PC".to_string()].into(),
        "one host, first spelling"
    );
    let history = dir.history("KITCHEN-PC");
    assert_eq!(history.len(), 1, "same address, one entry: {history:?}");
    assert_eq!(history[0].1, "127.0.0.1");

    let ghost = dir.dynip(&["history", CONFIG, "ghost"]);
    assert_eq!(ghost.code, 9, "history of an unknown host: {ghost:?}");
    assert!(ghost.stderr.contains("ghost"), "{ghost:?}");

    assert_eq!(server.terminate(), 0);
    assert_eq!(dir.exported_hosts(), ["Kitchen-PC".to_string()].into());

    let mut server = ServerProcess::start(&dir);
    assert_eq!(
        dir.hosts(),
        ["Kitchen-PC".to_string()].into(),
        "after a restart"
    );
    assert_eq!(dir.exported_hosts(), ["Kitchen-PC".to_string()].into());
    assert_eq!(server.terminate(), 0);
}

/// `server_ip = *` takes reports over both families; IPv4 is stored as IPv4, not as an
/// IPv4-mapped IPv6 address.
#[test]
fn wildcard_server_ip_takes_both_families() {
    let dir = Dir::new();
    dir.server_config("*", "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    send_to("127.0.0.1:0", ([127, 0, 0, 1], port).into(), b"v4-host");
    server.wait_committed("v4-host", 1);
    // Without a usable ::1 (IPv6 disabled), only the IPv4 half can be checked.
    let ipv6 = ipv6_loopback_works();
    if ipv6 {
        let target = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        send_to("[::1]:0", target, b"v6-host");
        server.wait_committed("v6-host", 1);
    }

    let hosts = dir.list();
    let v4 = &hosts["v4-host"];
    assert_eq!(v4["ipv4"]["address"], "127.0.0.1", "{v4}");
    assert!(v4["ipv6"].is_null(), "{v4}");
    let logged: Vec<_> = server.committed();
    assert!(
        logged.contains(&("v4-host".to_string(), "127.0.0.1".to_string())),
        "{logged:?}"
    );
    if ipv6 {
        let v6 = &hosts["v6-host"];
        assert_eq!(v6["ipv6"]["address"], "::1", "{v6}");
        assert!(v6["ipv4"].is_null(), "{v6}");
        assert_eq!(hosts.len(), 2);
    } else {
        assert_eq!(hosts.len(), 1);
    }

    assert_eq!(server.terminate(), 0);
    let export = dir.export().expect("the JSON file");
    assert_eq!(export["v4-host"].0, "127.0.0.1");
    if ipv6 {
        assert_eq!(export["v6-host"].0, "::1");
    }
}

/// Names compare case-insensitively beyond ASCII too (`KÜCHE` is `küche`, one host in
/// `list`), so `history` finds all of that host's changes under any spelling.
#[test]
fn non_ascii_names_differing_in_case_are_one_host_in_history_too() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    server.send("KÜCHE".as_bytes());
    server.wait_committed("KÜCHE", 1);
    server.send_from("127.0.0.2:0", "küche".as_bytes());
    server.wait_committed("küche", 1);

    let hosts = dir.list();
    assert_eq!(hosts.len(), 1, "one host: {hosts:?}");
    assert_eq!(hosts["KÜCHE"]["ipv4"]["address"], "127.0.0.2");
    for spelling in ["KÜCHE", "küche", "Küche"] {
        let out = dir.dynip(&["history", "--json", CONFIG, spelling]);
        assert_eq!(out.code, 0, "history {spelling}: {out:?}");
        let changes: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
        let addresses: Vec<&str> = changes
            .iter()
            .map(|change| change["address"].as_str().expect("address"))
            .collect();
        assert_eq!(addresses, ["127.0.0.1", "127.0.0.2"], "history {spelling}");
    }
    assert_eq!(server.terminate(), 0);
}
