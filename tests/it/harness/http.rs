//! A small HTTP/1.1 client on plain sockets: requests are written by hand, so a test sees
//! exactly the bytes a client would, and can send what no client library would (huge
//! heads, slow heads, bad queries).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use base64::Engine;
use dynip::model::key::Key;

use super::TIMEOUT;

/// A response as read off the socket.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The value of the header `name` (any case) among `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
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
