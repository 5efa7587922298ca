//! The harness: what every integration test uses to run the real binaries and talk to
//! them.
//!
//! - [`process`]: the temp dir, commands in a scrubbed environment, the server process
//!   (killed on drop), polling with a deadline ([`eventually`]).
//! - [`peer`]: version 1 from the client's side: keys, sealed reports, a UDP [`Peer`].
//! - [`relay`]: a NAT [`Relay`] between client and server.
//! - [`http`]: a small HTTP/1.1 client on plain sockets.
//! - [`schema`]: a small JSON-Schema check against `openapi.json`.
//! - [`receiver`]: a webhook receiver that checks signatures and records deliveries.
//! - [`postgres`]: a throwaway PostgreSQL cluster (`initdb`, `pg_ctl`) for one test.
//! - [`ports`]: the one parser of the server's `listening PROTO=ADDR` line, and a free
//!   port for NSD (shared with `benches/common`).
//!
//! `process`, `peer`, `relay` and `ports` are re-exported here (`use crate::harness::*`);
//! `http` and `schema` are named where they are used.

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};

pub mod http;
mod peer;
mod ports;
mod postgres;
mod process;
pub mod receiver;
mod relay;
pub mod schema;

pub use crate::peers::{peers_present, which};
pub use peer::*;
pub use ports::*;
pub use postgres::*;
pub use process::*;
pub use relay::*;

pub const DYNIP: &str = env!("CARGO_BIN_EXE_dynip");
pub const DYNIPD: &str = env!("CARGO_BIN_EXE_dynipd");
pub const DYNIPC: &str = env!("CARGO_BIN_EXE_dynipc");
pub const DYNIP_INIT: &str = env!("CARGO_BIN_EXE_dynip-init");

/// The config file every server test writes in its temp dir.
pub const CONFIG: &str = "dynip.conf";
/// `client_log_path` of that config, relative to the temp dir (the server's working dir).
pub const JSON_FILE: &str = "dynip.json";
/// The store beside it (the default `store_path`).
pub const STORE_FILE: &str = "dynip.sqlite3";

/// Runs ddclient once in the foreground on `dir`'s `ddclient.conf` (made private first,
/// as ddclient asks of a file with a password), its cache in `dir`, with `extra` flags;
/// what it said, stdout and stderr together, and its output.
pub fn ddclient(dir: &Dir, extra: &[&str]) -> (String, Output) {
    let config = dir.join("ddclient.conf");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the ddclient config");
    let mut args = vec![
        "-foreground".to_owned(),
        "-daemon=0".to_owned(),
        "-verbose".to_owned(),
        "-noquiet".to_owned(),
        "-file".to_owned(),
        config.to_string_lossy().into_owned(),
        "-cache".to_owned(),
        dir.join("ddclient.cache").to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("ddclient", &args, dir.path());
    (format!("{}{}", out.stdout, out.stderr), out)
}

/// The `key = value` lines of a block `dynip add-host` prints, comments left out.
pub fn settings(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{line:?} is not key = value"));
            (key.trim().to_string(), value.trim().to_string())
        })
        .collect()
}

/// The value of `key=VALUE` in a log line (empty when absent).
pub fn field(line: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .unwrap_or_default()
        .to_string()
}

/// Sends one datagram from a socket bound to `local` to `target`.
pub fn send_to(local: &str, target: SocketAddr, bytes: &[u8]) {
    let socket = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
    let n_sent = socket
        .send_to(bytes, target)
        .unwrap_or_else(|e| panic!("send {} bytes to {target}: {e}", bytes.len()));
    assert_eq!(n_sent, bytes.len());
}

/// Whether this machine can use `::1`.
pub fn ipv6_loopback_works() -> bool {
    UdpSocket::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))).is_ok()
}

/// Whether `text` is the original's time format, `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn is_original_time(text: &str) -> bool {
    text.len() == 26
        && text.bytes().enumerate().all(|(idx, byte)| match idx {
            4 | 7 => byte == b'-',
            10 => byte == b' ',
            13 | 16 => byte == b':',
            19 => byte == b'.',
            _ => byte.is_ascii_digit(),
        })
}

/// A small deterministic generator of bytes (xorshift64), for garbage datagrams.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}
