//! Where a server listens: the address of its `listening PROTO=ADDR` log line, and a free
//! port for a peer that binds its own (NSD). Shared by `tests/it` and `benches/common`
//! (included there by path), so that one parser reads the line the server logs.

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// The address in `line` if it is a `listening PROTO=ADDR` line for `proto` (`udp`, `dns`,
/// `http`, `https`): the word after `=`. `None` for any other line, and for `http` on an
/// `https=` line.
pub fn listening_addr(line: &str, proto: &str) -> Option<SocketAddr> {
    line.match_indices("listening ").find_map(|(idx, marker)| {
        let rest = line[idx + marker.len()..]
            .strip_prefix(proto)?
            .strip_prefix('=')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A port on 127.0.0.1 free for both UDP and TCP when asked, for a program that binds it
/// itself and cannot be told to take port 0 (NSD).
///
/// The port is released before the program binds it, so another process may take it in
/// between: keep that time short (start the program at once), and for dynip use port 0
/// and [`listening_addr`] instead. Asking for both protocols matters: a port the kernel
/// gave out for UDP alone may be taken for TCP, which a DNS server binds too.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("its address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::listening_addr;

    fn check(line: &str, proto: &str, expect: Option<&str>) {
        let expect = expect.map(|addr| addr.parse().expect("a test address"));
        assert_eq!(listening_addr(line, proto), expect, "{line:?} for {proto}");
    }

    #[test]
    fn listening_lines() {
        let udp =
            "2026-12-01T00:00:00.000000Z  INFO dynip::edge::udp: listening udp=127.0.0.1:4000";
        check(udp, "udp", Some("127.0.0.1:4000"));
        check(udp, "dns", None);
        check("INFO listening dns=[::1]:53 more", "dns", Some("[::1]:53"));
        check("INFO listening https=127.0.0.1:443", "http", None);
        check(
            "INFO listening https=127.0.0.1:443",
            "https",
            Some("127.0.0.1:443"),
        );
        check(
            "INFO listening http=127.0.0.1:80",
            "http",
            Some("127.0.0.1:80"),
        );
        // Only the line's own marker counts, wherever it is.
        check(
            "listening soon; listening udp=0.0.0.0:9",
            "udp",
            Some("0.0.0.0:9"),
        );
        check("INFO listening udp=not-an-address", "udp", None);
        check("INFO report committed host=a addr=1.2.3.4", "udp", None);
    }
}
