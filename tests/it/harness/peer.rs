//! Version 1 from the client's side: test keys, fresh nonces, sealed reports, and a UDP
//! [`Peer`] that sends them and checks the acknowledgements (or their absence).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{eventually, TIMEOUT};

/// How long a test waits to see that the server answers nothing. Each test first makes
/// sure the server has processed the datagram (see [`Peer::assert_unanswered`]), so this
/// only catches an answer that would come late; it is not what the test relies on.
pub const SILENCE: Duration = Duration::from_secs(1);

/// A key made of one byte repeated: distinct bytes give distinct keys, the same byte the
/// same key in every run.
pub fn test_key(byte: u8) -> dynip::model::key::Key {
    dynip::model::key::Key::from_bytes([byte; dynip::model::key::KEY_LEN])
}

/// A nonce used nowhere else: the process id, a counter and the clock's nanoseconds (the
/// test binary has no random generator, and only uniqueness matters here).
pub fn fresh_nonce() -> [u8; dynip::proto::wire::NONCE_LEN] {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut nonce = [0u8; dynip::proto::wire::NONCE_LEN];
    nonce[..4].copy_from_slice(&std::process::id().to_be_bytes());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    nonce[4..12].copy_from_slice(&count.to_be_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    nonce[12..].copy_from_slice(&nanos.to_be_bytes()[4..]);
    nonce
}

/// A report of `name` at `time` under `key`, sealed with a fresh nonce.
pub fn seal(key: &dynip::model::key::Key, name: &str, time: dynip::model::record::Time) -> Vec<u8> {
    let name =
        dynip::model::name::Name::parse(name).unwrap_or_else(|e| panic!("name {name:?}: {e}"));
    dynip::proto::wire::seal_report(key, &fresh_nonce(), &name, time)
}

/// The nonce in a sealed datagram's header.
pub fn nonce_of(datagram: &[u8]) -> [u8; dynip::proto::wire::NONCE_LEN] {
    let start = dynip::proto::wire::HEADER_LEN - dynip::proto::wire::NONCE_LEN;
    datagram[start..dynip::proto::wire::HEADER_LEN]
        .try_into()
        .expect("a sealed datagram has a whole header")
}

/// Waits until the clock has passed into the second after the current one, so that a
/// report committed from now on shows a later `last_seen` than one committed before
/// (`list` shows whole seconds).
pub fn wait_for_next_second() {
    let second = || dynip::model::record::Time::now().as_micros() / 1_000_000;
    let start = second();
    eventually("the clock to pass into the next second", || {
        (second() > start).then_some(())
    });
}

/// A UDP socket that speaks version 1 to a server: sends sealed reports (or any bytes)
/// and receives what comes back.
pub struct Peer {
    socket: UdpSocket,
    target: SocketAddr,
}

impl Peer {
    /// A socket bound to `local` (`127.0.0.1:0`, `[::1]:0`) that sends to `target`.
    pub fn bind(local: &str, target: SocketAddr) -> Peer {
        let socket = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
        Peer { socket, target }
    }

    /// The address and port the socket is bound to: what the server sees.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket's address")
    }

    pub fn send(&self, bytes: &[u8]) {
        let n_sent = self
            .socket
            .send_to(bytes, self.target)
            .unwrap_or_else(|e| panic!("send {} bytes to {}: {e}", bytes.len(), self.target));
        assert_eq!(n_sent, bytes.len());
    }

    /// The next datagram to arrive within `wait`, if any.
    pub fn recv_within(&self, wait: Duration) -> Option<Vec<u8>> {
        // A zero timeout means "block forever" to the OS.
        let wait = wait.max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(wait))
            .expect("set a read timeout");
        let mut buf = vec![0u8; 65_536];
        match self.socket.recv_from(&mut buf) {
            Ok((len, _)) => {
                buf.truncate(len);
                Some(buf)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("receive on {}: {e}", self.local_addr()),
        }
    }

    /// Waits (up to [`TIMEOUT`]) for the acknowledgement of `report`, which must be the
    /// next datagram to arrive; checks that it opens under `key`, echoes the report's
    /// nonce and carries this socket's address and port. Returns the ack's bytes and
    /// contents.
    pub fn expect_ack(
        &self,
        key: &dynip::model::key::Key,
        report: &[u8],
        what: &str,
    ) -> (Vec<u8>, dynip::proto::wire::Ack) {
        let bytes = self
            .recv_within(TIMEOUT)
            .unwrap_or_else(|| panic!("{what}: no acknowledgement within {TIMEOUT:?}"));
        let ack = dynip::proto::wire::open_ack(key, &bytes).unwrap_or_else(|e| {
            panic!(
                "{what}: {} bytes back that are not an acknowledgement ({e})",
                bytes.len()
            )
        });
        assert_eq!(
            ack.report_nonce,
            nonce_of(report),
            "{what}: the acknowledgement of another report"
        );
        assert_eq!(
            ack.seen,
            self.local_addr(),
            "{what}: the address the server saw"
        );
        (bytes, ack)
    }

    /// Sends a report of `name` under `key` at the current time and waits for its
    /// acknowledgement (see [`expect_ack`](Peer::expect_ack)). Returns the report's bytes
    /// and the ack's.
    pub fn report(&self, key: &dynip::model::key::Key, name: &str) -> (Vec<u8>, Vec<u8>) {
        let report = seal(key, name, dynip::model::record::Time::now());
        self.send(&report);
        let (ack, _) = self.expect_ack(key, &report, &format!("report of {name}"));
        (report, ack)
    }

    /// Sends `bytes`, then a fresh report of `sentinel` under `key` from the same socket,
    /// and checks that the first datagram back is the sentinel's acknowledgement.
    ///
    /// The server reads one socket's datagrams in order and acknowledges in commit order,
    /// so an answer to `bytes` would arrive first, and once the sentinel is acknowledged
    /// anything `bytes` did is committed (and visible to `dynip list`). The caller waits
    /// [`SILENCE`] for late answers ([`assert_silent`]).
    pub fn assert_unanswered(
        &self,
        bytes: &[u8],
        key: &dynip::model::key::Key,
        sentinel: &str,
        what: &str,
    ) {
        self.send(bytes);
        let report = seal(key, sentinel, dynip::model::record::Time::now());
        self.send(&report);
        let back = self.recv_within(TIMEOUT).unwrap_or_else(|| {
            panic!("{what}: no acknowledgement of the sentinel within {TIMEOUT:?}")
        });
        let opened = dynip::proto::wire::open_ack(key, &back);
        assert!(
            opened
                .as_ref()
                .is_ok_and(|ack| ack.report_nonce == nonce_of(&report)),
            "{what}: answered ({} bytes back before the sentinel's acknowledgement: {opened:?})",
            back.len()
        );
    }
}

/// Waits [`SILENCE`] once, then checks that no datagram arrived at any of `peers`: each
/// had at least that long to be answered.
pub fn assert_silent(peers: &[(&str, &Peer)]) {
    let start = Instant::now();
    for (what, peer) in peers {
        let left = SILENCE.saturating_sub(start.elapsed());
        if let Some(bytes) = peer.recv_within(left) {
            panic!(
                "{what}: answered late with {} bytes ({:?} of the server's)",
                bytes.len(),
                dynip::proto::wire::peek(&bytes)
            );
        }
    }
}
