//! Datagrams that are not reports: dropped, logged only at DEBUG, and nothing changes.

use crate::harness::*;

/// Every kind of datagram the server must drop. Each bad name is spelled so that, were it
/// accepted, it would show up in `list` as a host of its own.
fn garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut padded = b"padded-name".to_vec();
    padded.extend([b' '; 4999]);
    let mut cases: Vec<(&'static str, Vec<u8>)> = vec![
        ("not UTF-8", vec![0xff, 0xfe, b'a']),
        ("Latin-1", b"caf\xe9-host".to_vec()),
        ("empty", Vec::new()),
        ("whitespace only", b" \t\r\n".to_vec()),
        ("5,000 bytes", vec![b'a'; 5000]),
        ("space", b"space name".to_vec()),
        ("leading space", b" leading-space".to_vec()),
        ("slash", b"slash/name".to_vec()),
        ("empty label", b"a..b".to_vec()),
        ("254 bytes", vec![b'b'; 254]),
        ("label of 64 bytes", [&[b'c'; 64][..], b".example"].concat()),
        ("leading dot", b".leading-dot".to_vec()),
        ("trailing dot", b"trailing-dot.".to_vec()),
        ("NUL inside", b"nul\0name".to_vec()),
        ("NUL at the end", b"nul-end\0".to_vec()),
        ("NULs only", vec![0; 16]),
        ("right-to-left override", "\u{202e}evil".as_bytes().to_vec()),
        ("padded with 4,999 spaces", padded),
    ];
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    for len in [16, 64, 255, 300, 1500, 65_000] {
        let bytes = random.bytes(len);
        let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || b"-_.".contains(byte);
        assert!(!bytes.iter().all(allowed), "random bytes that make a name");
        cases.push(("random bytes", bytes));
    }
    cases
}

#[test]
fn malformed_datagrams_change_nothing() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
    for (what, datagram) in garbage() {
        socket
            .send_to(&datagram, server.target())
            .unwrap_or_else(|e| panic!("send {what}: {e}"));
    }
    // Same socket, same server socket: on loopback the sentinel arrives after the rest.
    socket
        .send_to(b"sentinel-1", server.target())
        .expect("send the sentinel");
    server.wait_committed("sentinel-1", 1);

    let only_sentinel = ["sentinel-1".to_string()].into();
    assert_eq!(dir.hosts(), only_sentinel);
    assert_eq!(server.committed_hosts(), only_sentinel);
    eventually("the sentinel in the JSON file", || {
        dir.export()
            .filter(|export| export.contains_key("sentinel-1"))
    });
    assert_eq!(dir.exported_hosts(), only_sentinel);
    assert!(server.is_running(), "the server died on garbage");
    // Garbage is logged at DEBUG only: a flood of it cannot flood the log.
    let noise: Vec<String> = server
        .stderr()
        .into_iter()
        .filter(|line| {
            line.contains("dropping datagram") || line.contains("WARN") || line.contains("ERROR")
        })
        .collect();
    assert!(noise.is_empty(), "logged above DEBUG: {noise:?}");

    server.send(b"sentinel-2");
    server.wait_committed("sentinel-2", 1);
    assert_eq!(
        dir.hosts(),
        ["sentinel-1".to_string(), "sentinel-2".to_string()].into()
    );
    assert_eq!(server.terminate(), 0);
    assert_eq!(
        dir.exported_hosts(),
        ["sentinel-1".to_string(), "sentinel-2".to_string()].into()
    );
}

/// `--debug` says why each datagram was dropped.
#[test]
fn debug_logs_why_a_datagram_was_dropped() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::spawn(&dir, DYNIP, &["--debug", "server", CONFIG]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a sender");
    for datagram in [&b"bad name"[..], &[b'a'; 5000], b"sentinel"] {
        socket
            .send_to(datagram, server.target())
            .expect("send a datagram");
    }
    server.wait_committed("sentinel", 1);
    let dropped: Vec<String> = server.stderr_lines("dropping datagram");
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped[0].contains("' '"),
        "names the bad character: {dropped:?}"
    );
    assert!(dropped[1].contains("5000"), "names the size: {dropped:?}");
    for line in &dropped {
        assert!(line.contains("DEBUG"), "{line}");
        assert!(line.contains("127.0.0.1:"), "names the peer: {line}");
    }
    assert_eq!(dir.hosts(), ["sentinel".to_string()].into());
    assert_eq!(server.terminate(), 0);
}
