//! The config file: the INI dialect of Python 2.7's `ConfigParser` and the typed
//! [`Config`] read from it.
//!
//! This module owns the text -> value step and nothing else. Role: pure, like `model`
//! (`tests/architecture.rs` checks it): no file reads, no clock, no logging, no
//! printing, no name resolution. The caller reads the
//! file (and decides what to do with bytes that are not UTF-8), hands the text to
//! [`parse`], logs [`Config::warnings`], resolves [`BindHost::Name`] and validates the
//! client's `hostname`, and puts the file's path in front of a [`ConfigError`].
//!
//! It works in two layers, low then high: a generic INI layer (`Ini`: sections of string
//! options, no knowledge of any key) and a typed layer (one table of keys per section,
//! each row a key name and the function that reads its value).
//!
//! # The dialect
//!
//! The same files the original DynIP read must mean the same thing here, so the INI layer
//! follows `ConfigParser.RawConfigParser._read` of Python 2.7 rule for rule:
//!
//! - A section header is a line that starts with `[`; the name is everything up to the
//!   first `]` (at least one character, kept as written, case-sensitive). Text after the
//!   `]` is ignored, as Python ignores it. A section may appear more than once: its
//!   options merge, a later value wins.
//! - An option is `key = value` or `key: value`; the delimiter is the first `=` or `:`
//!   on the line. The key is what precedes it, stripped and lowercased (keys are
//!   case-insensitive), and must not be empty. A repeated key: the last one wins.
//! - A line whose first character is `#` or `;` is a comment, as is a line whose first
//!   character is `r`/`R` and whose first word is `rem` in any case (a Python 2 quirk:
//!   `rem = 1` is a comment). Blank lines are skipped.
//! - In a value, the first `;` starts a comment when whitespace precedes it; only that
//!   first `;` is looked at (so in `a;b ;c` nothing is cut). An inline `#` is kept. The
//!   value is then stripped, and a value that is exactly `""` becomes empty. `key =` is
//!   an empty value. Other quotes are kept as written.
//! - A line that starts with whitespace while an option is open continues that option:
//!   value + "\n" + the stripped line. Blank and comment lines in between do not close
//!   the option; a section header does. No comment is cut from a continuation line, and
//!   an indented `#` line under an option is part of its value (as in Python).
//! - `[DEFAULT]` (exactly) holds fallbacks: a key missing from a section is looked up
//!   there.
//! - Errors: an option (or any other content) before the first section header; an
//!   indented line with no option to continue; any other line that is neither a header,
//!   an option, a comment nor blank. Each names the 1-based line and the line's text.
//! - "Whitespace" is Python 2's byte-string whitespace (space, `\t`, `\n`, `\r`, `\v`,
//!   `\f`) and lowercasing is ASCII-only, as on Python 2's byte strings.
//!
//! Decisions where we differ from Python 2.7, written down:
//!
//! - No interpolation: `%` is literal and `%(name)s` is not expanded, so keys and
//!   passwords in `database_url` need no escaping.
//! - A UTF-8 byte-order mark at the start is skipped (Python 2 failed on it with a
//!   missing-section-header error). `\r\n` line endings work, as they did in Python.
//! - A `;` at the very start of a value starts a comment when whitespace separates it
//!   from the delimiter: `key = ;x` is empty, `key=;x` is `;x`. Python looked at index
//!   -1 there, the last character of the line, so its answer depended on trailing
//!   whitespace and on `\r\n` line ends (checked against Python 2.7.18 on 20,000
//!   generated files: this is the only difference).
//! - The first syntax error is reported, not all of them.
//! - `[DEFAULT]` keys also apply when a section is missing altogether (Python raised
//!   `NoSectionError`, and the original exited 3; we apply defaults for missing sections).
//!
//! # The typed config
//!
//! `[DynIP:Server]` and `[DynIP:Client]` (exact names) become [`ServerConfig`] and
//! [`ClientConfig`]. Every key is optional and a missing section means all defaults;
//! the defaults are those of the original's example config. Unknown keys and sections
//! (and `[DEFAULT]` keys no section knows) are warnings, not errors, so that a file
//! written for a newer dynip still loads. A bad value is an error naming the section,
//! key and value. Beyond the brief's types: `server_ip` in brackets must be an IPv6
//! address, and a `server_ip` with whitespace in it (say, a stray continuation line) is
//! refused here rather than left for the resolver.
//!
//! Each section is a table of keys (`SERVER_KEYS`, `CLIENT_KEYS`): a new key is one row
//! and one field; a new section is one row in `SECTIONS` and one `read_section` call.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::model::key::Key;
use crate::model::name::Name;

/// The port of both sides when the file names none: the original's example config.
pub const DEFAULT_PORT: u16 = 28630;

/// The server's section. Section names are case-sensitive.
pub const SERVER_SECTION: &str = "DynIP:Server";

/// The client's section.
pub const CLIENT_SECTION: &str = "DynIP:Client";

/// The section of per-host keys: `NAME = KEY`.
pub const HOSTS_SECTION: &str = "DynIP:Hosts";

/// The section whose keys are fallbacks for every other section (Python's `DEFAULTSECT`).
const DEFAULT_SECTION: &str = "DEFAULT";

/// `client_log_path` when the file names none: the original's example config, relative to
/// the server's working directory.
pub const DEFAULT_CLIENT_LOG_PATH: &str = "dynip.json";

/// The file name of the SQLite store when `store_path` is not set; it goes in the
/// directory of `client_log_path`.
pub const STORE_FILE_NAME: &str = "dynip.sqlite3";

/// `server_hostname` when the file names none: the original's example config.
pub const DEFAULT_SERVER_HOSTNAME: &str = "localhost";

/// The config `dynip init` writes: every key with its default and what it means, and
/// `key` set in both sections, so one file serves both sides as in the original.
/// `{KEY}` stands for the key.
const TEMPLATE: &str = r#"# dynip config. One file serves both sides, as in the original DynIP: the server
# reads [DynIP:Server], the client reads [DynIP:Client].
#
# Syntax: "key = value" (or "key: value"); lines starting with # or ; are comments;
# " ;" after a value starts a comment. Every key is optional: a commented-out key
# shows its default.

[DynIP:Server]
# The address to receive reports on. "*" listens on every address of both families
# (IPv4 and IPv6); an address (127.0.0.1, ::1) or a name listens there only.
;server_ip = *

# The UDP port to receive reports on.
;server_port = 28630

# The original DynIP's JSON file: {"host": ["address", "YYYY-MM-DD HH:MM:SS.ffffff"]},
# in local time. Rewritten atomically about once a second while hosts report, so
# scripts that read it keep working. Relative paths are from the server's working
# directory. On first start with an empty store, the server imports this file.
;client_log_path = dynip.json

# The SQLite store: hosts, their addresses of both families, and their history.
# Default: dynip.sqlite3 in the directory of client_log_path.
;store_path = dynip.sqlite3

# The shared key: clients holding it may report any name, signed, and are
# acknowledged. Freshly generated by dynip init; keep it secret. With a key set,
# the original's unsigned datagrams are refused unless allow_unsigned = yes.
key = {KEY}

# Also accept the original DynIP's unsigned datagrams (anyone may claim any name).
# Default: yes when no key is configured, no when one is.
;allow_unsigned = no

# Where reports may come from: addresses or networks, separated by commas.
# Default: anywhere.
;allow_from = 192.0.2.0/24, 2001:db8::/32

# HTTP: dyndns2 updates from routers, ddclient and inadyn (/nic/update), the JSON
# API (/api/v1/), the status page (/) and /metrics. Default: off.
;http_listen = 0.0.0.0:8080

# HTTPS instead of HTTP on http_listen: a PEM certificate chain and its private key.
# dyndns2 sends the key as its password in every request: use HTTPS beyond a LAN.
;tls_cert = /etc/dynip/cert.pem
;tls_key = /etc/dynip/key.pem

# Reverse proxies whose X-Forwarded-For header is believed. Default: none.
;trusted_proxies = 127.0.0.1, ::1

# Show the status page at / without credentials. Default: no.
;public_status = no

# Serve /metrics without credentials. With no, Prometheus must send the key (as a
# bearer token or a Basic password). Default: yes.
;public_metrics = yes

# Mark a host stale on the status page when its last report is older than this.
;stale_after = 1h

# Forget address changes older than this (history, API, status page). Default:
# keep them all.
;history_max_age = 365d

# DNS: answer HOST.ZONE (A, AAAA) and the zone's SOA and NS, over UDP and TCP, for
# the zone delegated to this server. Default: off. dns_listen needs dns_zone.
;dns_listen = 0.0.0.0:53
;dns_zone = dyn.example.com
# The TTL of host records.
;dns_ttl = 60
# The apex's NS names (default ns.ZONE) and the SOA's contact (hostmaster.ZONE).
;dns_ns = ns1.example.com, ns2.example.com
;dns_soa_contact = hostmaster@example.com
# Secondaries (NSD, Knot, BIND) that may transfer the zone, and where to NOTIFY.
;dns_transfer_to = 192.0.2.53
;dns_notify = 192.0.2.53
# Stop answering for addresses not reported for stale_after. Default: no.
;dns_hide_stale = no

[DynIP:Hosts]
# Per-host keys: NAME = KEY. A name listed here may only be reported with its
# own key (or the shared key). "dynip add-host CONFIG NAME" mints one and prints
# the lines for both configs. The server re-reads keys on SIGHUP.
;kitchen-pc = (a key from dynip add-host)

[DynIP:Client]
# The server to report to: a name or an address.
;server_hostname = localhost

# The server's UDP port.
;server_port = 28630

# The name to report. Default: this machine's name. Letters, digits, "-", "_" and
# ".", at most 253 bytes.
;hostname = kitchen-pc

# The key reports are signed with: the server's shared key, or this host's own key
# from [DynIP:Hosts]. Signed reports are acknowledged, and the client prints the
# address and port the server saw. Without a key the client sends the original's
# unsigned datagram and hears nothing back.
key = {KEY}
"#;

/// The config `dynip init` writes, with `key` in both sections.
pub fn template(key: &Key) -> String {
    TEMPLATE.replace("{KEY}", &key.encode())
}

/// [`template`] with the server's files in `state_dir` (`dynip init --state-dir`, as a
/// package writes `/etc/dynip/dynip.conf` for `/var/lib/dynip`): `client_log_path` and
/// `store_path` set there instead of commented out at their defaults.
pub fn template_in(key: &Key, state_dir: &str) -> String {
    // "/var/lib/dynip/" and "/" join as "/var/lib/dynip/FILE" and "/FILE".
    let state_dir = state_dir.trim_end_matches('/');
    let join = |file: &str| format!("{state_dir}/{file}");
    template(key)
        .replace(
            &format!(";client_log_path = {DEFAULT_CLIENT_LOG_PATH}"),
            &format!("client_log_path = {}", join(DEFAULT_CLIENT_LOG_PATH)),
        )
        .replace(
            &format!(";store_path = {STORE_FILE_NAME}"),
            &format!("store_path = {}", join(STORE_FILE_NAME)),
        )
}

/// How much of a line or value an error or warning quotes. Enough for any sane line;
/// it keeps a megabyte of garbage out of the log.
const MAX_QUOTED_CHARS: usize = 80;

/// Everything the config file says, for both sides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub client: ClientConfig,
    /// Things the file says that this version ignores (unknown keys and sections), for
    /// the caller to log. Not errors, so that a file written for a newer dynip, or one
    /// with sections for other tools, still loads.
    pub warnings: Vec<String>,
}

/// Where the server listens (`server_ip`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BindHost {
    /// `*` or empty: every address of the machine. The original bound to the one address
    /// the machine's own name resolved to (often 127.0.1.1); we bind the wildcard.
    #[default]
    All,
    /// An IP address literal.
    Addr(IpAddr),
    /// Anything else: a name, resolved by the caller when it binds.
    Name(String),
}

/// `[DynIP:Server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `server_ip`, default `*`.
    pub server_ip: BindHost,
    /// `server_port`, default 28630. 0 is allowed (an ephemeral port, which the tests use
    /// with the `listening` log line).
    pub server_port: u16,
    /// `client_log_path`, default `dynip.json`: the JSON export in the original's format,
    /// which existing scripts read.
    pub client_log_path: PathBuf,
    /// `store_path`, default `dynip.sqlite3` in the directory of `client_log_path`, so a
    /// server that moved its JSON file somewhere writable finds its store there too.
    pub store_path: PathBuf,
    /// `key`: the shared key; any holder may report any name. None: no shared key.
    pub key: Option<Key>,
    /// `allow_unsigned`: whether the original's unsigned datagrams are accepted. `None`
    /// when the file does not say: then yes without any key, no with one
    /// (see [`ServerConfig::accepts_unsigned`]).
    pub allow_unsigned: Option<bool>,
    /// `allow_from`: the networks reports may come from (addresses or CIDR networks,
    /// separated by commas or spaces). `None`: from anywhere.
    pub allow_from: Option<Vec<IpNet>>,
    /// `[DynIP:Hosts]`: per-host keys. NAME may only be reported with its key.
    pub hosts: Vec<(Name, Key)>,
    /// `http_listen`: where the HTTP face listens (dyndns2, the API, the status page,
    /// `/metrics`). `None`: no HTTP at all, as in the original.
    pub http_listen: Option<SocketAddr>,
    /// `tls_cert` and `tls_key`: PEM files; with both, `http_listen` speaks HTTPS only
    /// (dyndns2 sends its password in every request). The caller reads the files.
    pub tls: Option<TlsFiles>,
    /// `trusted_proxies`: the proxies whose `X-Forwarded-For` is believed. `None`: no
    /// proxy's, the connection's source address is the client's.
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// `public_status`: the status page at `/` without credentials. Default no.
    pub public_status: bool,
    /// `public_metrics`: `/metrics` without credentials. Default yes.
    pub public_metrics: bool,
    /// `stale_after`: a host whose last report is older than this is marked stale.
    pub stale_after: Duration,
    /// `history_max_age`: address changes older than this are no longer shown and are
    /// deleted from the store. `None` (the default): all are kept.
    pub history_max_age: Option<Duration>,
    /// The `dns_*` keys: the DNS responder.
    pub dns: DnsConfig,
}

/// The `dns_*` keys of `[DynIP:Server]`: the authoritative DNS responder for `dns_zone`.
/// Off unless `dns_listen` is set (which then needs `dns_zone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `dns_listen`: `ADDR:PORT` for UDP and TCP. `None`: no DNS.
    pub listen: Option<SocketAddr>,
    /// `dns_zone`: the zone, lowercase, without the final dot (`dyn.example.com`).
    pub zone: Option<String>,
    /// `dns_ttl`, default 60 s: the TTL of host records.
    pub ttl: Duration,
    /// `dns_ns`: the apex NS names, absolute, lowercase. Empty: `ns.ZONE`.
    pub ns: Vec<String>,
    /// `dns_soa_contact`: the SOA's mailbox as a name (`hostmaster.example.com`; an
    /// address with `@` is converted). `None`: `hostmaster.ZONE`.
    pub soa_contact: Option<String>,
    /// `dns_soa_refresh`, `dns_soa_retry`, `dns_soa_expire`, `dns_soa_minimum`: the SOA
    /// timers (the minimum is also the TTL of negative answers).
    pub soa_refresh: Duration,
    pub soa_retry: Duration,
    pub soa_expire: Duration,
    pub soa_minimum: Duration,
    /// `dns_transfer_to`: who may transfer the zone (AXFR over TCP). `None`: nobody.
    pub transfer_to: Option<Vec<IpNet>>,
    /// `dns_notify`: where to send NOTIFY when the zone changes (port 53 unless given).
    pub notify: Vec<SocketAddr>,
    /// `dns_hide_stale`, default no: stop answering for addresses not reported for
    /// `stale_after`.
    pub hide_stale: bool,
    /// `dns_rate_limit`, default 100: UDP responses per second per source network (/24
    /// for IPv4, /56 for IPv6) before responses are dropped or truncated. 0: no limit.
    pub rate_limit: u32,
    /// `dns_threads`, default 1: UDP threads, each with its own `SO_REUSEPORT` socket.
    /// One measured fastest on 2 cores shared with the load generator
    /// (`docs/BENCHMARKS.md`); more suit machines with cores to spare.
    pub threads: usize,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            listen: None,
            zone: None,
            ttl: Duration::from_secs(60),
            ns: Vec::new(),
            soa_contact: None,
            // Secondaries also hear NOTIFY at once; the refresh is for lost NOTIFYs.
            soa_refresh: Duration::from_secs(300),
            soa_retry: Duration::from_secs(60),
            soa_expire: Duration::from_secs(7 * 24 * 3600),
            soa_minimum: Duration::from_secs(60),
            transfer_to: None,
            notify: Vec::new(),
            hide_stale: false,
            rate_limit: 100,
            threads: 1,
        }
    }
}

/// The certificate chain and private key files of `tls_cert` and `tls_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `stale_after` when the file names none: an hour, twelve times the usual cron interval
/// of five minutes, so one missed report or a short outage does not mark a host.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60 * 60);

impl ServerConfig {
    /// Whether unsigned (original) datagrams are accepted: as `allow_unsigned` says, else
    /// only when no key of any kind is configured.
    pub fn accepts_unsigned(&self) -> bool {
        self.allow_unsigned
            .unwrap_or(self.key.is_none() && self.hosts.is_empty())
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let client_log_path = PathBuf::from(DEFAULT_CLIENT_LOG_PATH);
        ServerConfig {
            server_ip: BindHost::All,
            server_port: DEFAULT_PORT,
            store_path: default_store_path(&client_log_path),
            client_log_path,
            key: None,
            allow_unsigned: None,
            allow_from: None,
            hosts: Vec::new(),
            http_listen: None,
            tls: None,
            trusted_proxies: None,
            public_status: false,
            public_metrics: true,
            stale_after: DEFAULT_STALE_AFTER,
            history_max_age: None,
            dns: DnsConfig::default(),
        }
    }
}

/// `[DynIP:Client]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `server_hostname`, default `localhost`. It may be empty here: the caller exits 4
    /// on an empty one, as the original did.
    pub server_hostname: String,
    /// `server_port`, default 28630, 1-65535 (a client cannot send to port 0).
    pub server_port: u16,
    /// `hostname`, the name to report: `None` when absent or empty (then the caller uses
    /// the machine's name). Kept as written; the caller validates it as a host name.
    pub hostname: Option<String>,
    /// `key`: the key reports are sealed with (the shared key, or this host's own).
    /// None: the client sends the original's unsigned datagram.
    pub key: Option<Key>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            server_hostname: DEFAULT_SERVER_HOSTNAME.to_owned(),
            server_port: DEFAULT_PORT,
            hostname: None,
            key: None,
        }
    }
}

/// Why a config file was refused. The caller puts the file's path in front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Content before the first section header (Python's `MissingSectionHeaderError`).
    #[error("line {line}: expected a section header such as \"[{SERVER_SECTION}]\" first, found {text:?}")]
    MissingSectionHeader { line: usize, text: String },
    /// An indented line with no option above it to continue.
    #[error("line {line}: expected \"key = value\" before an indented (continuation) line, found {text:?}")]
    NothingToContinue { line: usize, text: String },
    /// A line that is not a header, an option, a comment or blank.
    #[error(
        "line {line}: expected \"[section]\", \"key = value\" or \"key: value\", found {text:?}"
    )]
    Syntax { line: usize, text: String },
    /// A key whose value cannot be used.
    #[error(
        "[{section}] {key} = {value:?}{}: {reason}",
        from_default_note(from_default)
    )]
    Value {
        /// The section the value was read for.
        section: String,
        key: String,
        value: String,
        /// The value was written in `[DEFAULT]`, not in `section`.
        from_default: bool,
        reason: &'static str,
    },
}

fn from_default_note(from_default: &bool) -> &'static str {
    if *from_default {
        " (from [DEFAULT])"
    } else {
        ""
    }
}

/// Reads a config file's text.
///
/// # Errors
///
/// A syntax error (with its line) or a value that cannot be used (with its section,
/// key and value); see [`ConfigError`].
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let ini = Ini::parse(text)?;
    let mut server: ServerConfig = read_section(&ini, SERVER_SECTION, SERVER_KEYS)?;
    if ini.get(SERVER_SECTION, "store_path").is_none() {
        server.store_path = default_store_path(&server.client_log_path);
    }
    server.hosts = read_hosts(&ini)?;
    check_tls(&ini, &server)?;
    if server.dns.listen.is_some() && server.dns.zone.is_none() {
        let found = ini.get(SERVER_SECTION, "dns_listen");
        return Err(ConfigError::Value {
            section: SERVER_SECTION.to_owned(),
            key: "dns_listen".to_owned(),
            value: found
                .as_ref()
                .map(|found| quoted(found.value))
                .unwrap_or_default(),
            from_default: found.is_some_and(|found| found.from_default),
            reason: "needs dns_zone, the zone to answer for (e.g. dns_zone = dyn.example.com)",
        });
    }
    let client = read_section(&ini, CLIENT_SECTION, CLIENT_KEYS)?;
    Ok(Config {
        server,
        client,
        warnings: warnings(&ini),
    })
}

/// `ConfigParser.getboolean`: `1`, `yes`, `true`, `on` and `0`, `no`, `false`, `off`, in
/// any case; `None` for anything else.
pub fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["1", "yes", "true", "on"];
    const FALSE: [&str; 4] = ["0", "no", "false", "off"];
    if TRUE.iter().any(|word| word.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if FALSE.iter().any(|word| word.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------
// Typed layer: one table of keys per section.

/// Reads one key's value into its section's config, or says what is wrong with it.
type Apply<T> = fn(&mut T, &str) -> Result<(), &'static str>;

/// One key a section knows.
struct Setting<T> {
    name: &'static str,
    apply: Apply<T>,
}

/// The keys of `[DynIP:Server]`. A new key is one row here and one field.
#[rustfmt::skip]
const SERVER_KEYS: &[Setting<ServerConfig>] = &[
    Setting { name: "server_ip",       apply: |c, v| set(&mut c.server_ip, bind_host(v)) },
    Setting { name: "server_port",     apply: |c, v| set(&mut c.server_port, port(v, 0)) },
    Setting { name: "client_log_path", apply: |c, v| set(&mut c.client_log_path, path(v)) },
    Setting { name: "store_path",      apply: |c, v| set(&mut c.store_path, path(v)) },
    Setting { name: "key",             apply: |c, v| set(&mut c.key, key(v)) },
    Setting { name: "allow_unsigned",  apply: |c, v| set(&mut c.allow_unsigned, boolean(v).map(Some)) },
    Setting { name: "allow_from",      apply: |c, v| set(&mut c.allow_from, networks(v)) },
    Setting { name: "http_listen",     apply: |c, v| set(&mut c.http_listen, listen_addr(v)) },
    Setting { name: "tls_cert",        apply: |c, v| set_tls(c, v, |tls, path| tls.cert = path) },
    Setting { name: "tls_key",         apply: |c, v| set_tls(c, v, |tls, path| tls.key = path) },
    Setting { name: "trusted_proxies", apply: |c, v| set(&mut c.trusted_proxies, networks(v)) },
    Setting { name: "public_status",   apply: |c, v| set(&mut c.public_status, boolean(v)) },
    Setting { name: "public_metrics",  apply: |c, v| set(&mut c.public_metrics, boolean(v)) },
    Setting { name: "stale_after",     apply: |c, v| set(&mut c.stale_after, positive_duration(v)) },
    Setting { name: "history_max_age", apply: |c, v| set(&mut c.history_max_age, positive_duration(v).map(Some)) },
    Setting { name: "dns_listen",      apply: |c, v| set(&mut c.dns.listen, socket_addr(v, None).map(Some)) },
    Setting { name: "dns_zone",        apply: |c, v| set(&mut c.dns.zone, domain(v).map(Some)) },
    Setting { name: "dns_ttl",         apply: |c, v| set(&mut c.dns.ttl, duration(v)) },
    Setting { name: "dns_ns",          apply: |c, v| set(&mut c.dns.ns, domains(v)) },
    Setting { name: "dns_soa_contact", apply: |c, v| set(&mut c.dns.soa_contact, mailbox(v).map(Some)) },
    Setting { name: "dns_soa_refresh", apply: |c, v| set(&mut c.dns.soa_refresh, duration(v)) },
    Setting { name: "dns_soa_retry",   apply: |c, v| set(&mut c.dns.soa_retry, duration(v)) },
    Setting { name: "dns_soa_expire",  apply: |c, v| set(&mut c.dns.soa_expire, duration(v)) },
    Setting { name: "dns_soa_minimum", apply: |c, v| set(&mut c.dns.soa_minimum, duration(v)) },
    Setting { name: "dns_transfer_to", apply: |c, v| set(&mut c.dns.transfer_to, networks(v)) },
    Setting { name: "dns_notify",      apply: |c, v| set(&mut c.dns.notify, socket_addrs(v, 53)) },
    Setting { name: "dns_hide_stale",  apply: |c, v| set(&mut c.dns.hide_stale, boolean(v)) },
    Setting { name: "dns_threads",     apply: |c, v| set(&mut c.dns.threads, match v.parse() { Ok(n @ 1..=64) => Ok(n), _ => Err("not a number of threads (1-64)") }) },
    Setting { name: "dns_rate_limit",  apply: |c, v| set(&mut c.dns.rate_limit, v.parse().map_err(|_| "not a number of responses per second (0: no limit)")) },
];

/// The keys of `[DynIP:Client]`. A new key is one row here and one field.
#[rustfmt::skip]
const CLIENT_KEYS: &[Setting<ClientConfig>] = &[
    Setting { name: "server_hostname", apply: |c, v| set(&mut c.server_hostname, Ok(v.to_owned())) },
    Setting { name: "server_port",     apply: |c, v| set(&mut c.server_port, port(v, 1)) },
    Setting { name: "hostname",        apply: |c, v| set(&mut c.hostname, Ok(non_empty(v))) },
    Setting { name: "key",             apply: |c, v| set(&mut c.key, key(v)) },
];

/// A section this module reads, for warnings.
struct KnownSection {
    name: &'static str,
    /// Whether `key` is one of the section's keys.
    knows: fn(&str) -> bool,
}

/// Every section this module reads. A new section is one row here.
const SECTIONS: &[KnownSection] = &[
    KnownSection {
        name: SERVER_SECTION,
        knows: |key| knows(SERVER_KEYS, key),
    },
    KnownSection {
        name: CLIENT_SECTION,
        knows: |key| knows(CLIENT_KEYS, key),
    },
    // Every key of [DynIP:Hosts] is a host's name.
    KnownSection {
        name: HOSTS_SECTION,
        knows: |_| true,
    },
];

fn knows<T>(keys: &[Setting<T>], name: &str) -> bool {
    keys.iter().any(|key| key.name == name)
}

/// Stores a value a key's reader produced.
fn set<V>(field: &mut V, value: Result<V, &'static str>) -> Result<(), &'static str> {
    *field = value?;
    Ok(())
}

/// Starts from the defaults and applies every key the section (or `[DEFAULT]`) sets, in
/// table order, so the first bad value reported is always the same one.
fn read_section<T: Default>(
    ini: &Ini,
    section: &str,
    keys: &[Setting<T>],
) -> Result<T, ConfigError> {
    let mut config = T::default();
    for key in keys {
        let Some(found) = ini.get(section, key.name) else {
            continue;
        };
        (key.apply)(&mut config, found.value).map_err(|reason| ConfigError::Value {
            section: section.to_owned(),
            key: key.name.to_owned(),
            value: quoted(found.value),
            from_default: found.from_default,
            reason,
        })?;
    }
    Ok(config)
}

/// The unknown keys and sections, in file order (`[DEFAULT]` first).
fn warnings(ini: &Ini) -> Vec<String> {
    let mut warnings = Vec::new();
    for (key, _) in ini.defaults.iter() {
        // [DynIP:Hosts] takes no fallbacks from [DEFAULT]: its keys are host names.
        let mut sections = SECTIONS
            .iter()
            .filter(|section| section.name != HOSTS_SECTION);
        if !sections.any(|section| (section.knows)(key)) {
            warnings.push(format!(
                "unknown key {:?} in [{DEFAULT_SECTION}], ignored",
                quoted(key)
            ));
        }
    }
    for (name, options) in ini.sections.iter() {
        let shown = quoted(name).escape_debug().to_string();
        match SECTIONS.iter().find(|section| section.name == name) {
            Some(section) => {
                for (key, _) in options.iter().filter(|(key, _)| !(section.knows)(key)) {
                    warnings.push(format!(
                        "unknown key {:?} in [{shown}], ignored",
                        quoted(key)
                    ));
                }
            }
            None => {
                let near = SECTIONS
                    .iter()
                    .find(|section| section.name.eq_ignore_ascii_case(strip(name)));
                warnings.push(match near {
                    Some(section) => format!(
                        "unknown section [{shown}], ignored \
                         (did you mean [{}]? section names are exact)",
                        section.name
                    ),
                    None => format!("unknown section [{shown}], ignored"),
                });
            }
        }
    }
    warnings
}

/// `[DynIP:Hosts]`: each option is `NAME = KEY`. `[DEFAULT]` does not apply here (its
/// keys are not host names).
fn read_hosts(ini: &Ini) -> Result<Vec<(Name, Key)>, ConfigError> {
    let Some(options) = ini.sections.get(HOSTS_SECTION) else {
        return Ok(Vec::new());
    };
    let bad = |name: &str, value: &str, reason: &'static str| ConfigError::Value {
        section: HOSTS_SECTION.to_owned(),
        key: name.to_owned(),
        value: quoted(value),
        from_default: false,
        reason,
    };
    let mut hosts: Vec<(Name, Key)> = Vec::new();
    for (name, value) in options.iter() {
        let host = Name::parse(name).map_err(|_| bad(name, value, "not a valid host name"))?;
        let key = key(value)
            .and_then(|key| key.ok_or("empty: a host needs its key"))
            .map_err(|reason| bad(name, value, reason))?;
        hosts.push((host, key));
    }
    Ok(hosts)
}

/// A key as `dynip init` writes it.
fn key(value: &str) -> Result<Option<Key>, &'static str> {
    if value.is_empty() {
        return Ok(None);
    }
    Key::parse(value)
        .map(Some)
        .map_err(|_| "not a key (base64 of 32 bytes, as `dynip init` and `dynip add-host` write)")
}

fn boolean(value: &str) -> Result<bool, &'static str> {
    parse_bool(value).ok_or("not yes/no (also true/false, on/off, 1/0)")
}

/// `allow_from`: addresses or CIDR networks, separated by commas or whitespace.
fn networks(value: &str) -> Result<Option<Vec<IpNet>>, &'static str> {
    let mut networks = Vec::new();
    for item in value.split(|c: char| c == ',' || c.is_ascii_whitespace()) {
        if item.is_empty() {
            continue;
        }
        let network = match item.parse::<IpNet>() {
            Ok(network) => network,
            Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                "not a list of addresses or networks (e.g. 192.0.2.0/24, 2001:db8::/32)"
            })?,
        };
        networks.push(network);
    }
    if networks.is_empty() {
        return Err("empty: remove the key to allow reports from anywhere");
    }
    Ok(Some(networks))
}

/// A duration: a number of seconds (`60`, as DNS timers are written) or humantime
/// (`90s`, `5m`, `1h 30m`, `1w`).
fn duration(value: &str) -> Result<Duration, &'static str> {
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(value).map_err(|_| "not a duration (e.g. 60, 90s, 5m, 1h, 1w)")
}

/// `ADDR:PORT` (IPv6 in brackets), or a bare address with `default_port`.
fn socket_addr(value: &str, default_port: Option<u16>) -> Result<SocketAddr, &'static str> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(value);
    match (bare.parse::<IpAddr>(), default_port) {
        (Ok(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        _ if default_port.is_some() => {
            Err("not an address or ADDR:PORT (e.g. 192.0.2.1, [2001:db8::1]:5353)")
        }
        _ => Err("not ADDR:PORT (e.g. 127.0.0.1:53, [::]:53)"),
    }
}

/// Addresses (`ADDR` or `ADDR:PORT`), separated by commas or whitespace.
fn socket_addrs(value: &str, default_port: u16) -> Result<Vec<SocketAddr>, &'static str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| socket_addr(item, Some(default_port)))
        .collect()
}

/// A domain name: labels of letters, digits, `-` and `_`, 1-63 bytes each, at most 253
/// bytes, a final dot allowed; lowercased, without the final dot.
fn domain(value: &str) -> Result<String, &'static str> {
    let name = value.strip_suffix('.').unwrap_or(value);
    let good_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(good_label) {
        return Err("not a domain name (e.g. dyn.example.com)");
    }
    Ok(name.to_ascii_lowercase())
}

/// Domain names, separated by commas or whitespace.
fn domains(value: &str) -> Result<Vec<String>, &'static str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
        .map(domain)
        .collect()
}

/// The SOA's mailbox: a name, or a mail address whose `@` becomes a dot.
fn mailbox(value: &str) -> Result<String, &'static str> {
    let name = match value.split_once('@') {
        Some((local, host)) if !local.contains('.') => format!("{local}.{host}"),
        Some(_) => {
            return Err("a mail address whose local part has no dot (e.g. hostmaster@example.com)")
        }
        None => value.to_owned(),
    };
    domain(&name).map_err(|_| "not a mail address or a name (e.g. hostmaster@example.com)")
}

/// `server_ip`: `*` or empty for all addresses, an IP literal (IPv6 with or without
/// brackets), or a name for the caller to resolve.
fn bind_host(value: &str) -> Result<BindHost, &'static str> {
    if value.is_empty() || value == "*" {
        return Ok(BindHost::All);
    }
    if let Some(inner) = value.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
            .map(|addr| BindHost::Addr(IpAddr::V6(addr)))
            .ok_or("not an IPv6 address in brackets");
    }
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Ok(BindHost::Addr(addr));
    }
    // A continuation line or a stray word makes a value no resolver accepts; say so now
    // rather than as a resolver error at bind time.
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not \"*\", an IP address or a host name");
    }
    Ok(BindHost::Name(value.to_owned()))
}

/// `http_listen`: `ADDR:PORT`, an IPv6 address in brackets (`[::]:8080`). Port 0 is
/// allowed (any free port, logged as `listening http=ADDR`).
fn listen_addr(value: &str) -> Result<Option<SocketAddr>, &'static str> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| "not ADDRESS:PORT (e.g. 0.0.0.0:8080, [::]:8080, 127.0.0.1:8080)")
}

/// `tls_cert` or `tls_key`: a path, kept until both are read ([`check_tls`] checks that
/// neither is alone).
fn set_tls(
    config: &mut ServerConfig,
    value: &str,
    put: fn(&mut TlsFiles, PathBuf),
) -> Result<(), &'static str> {
    let path = path(value)?;
    let tls = config.tls.get_or_insert_with(|| TlsFiles {
        cert: PathBuf::new(),
        key: PathBuf::new(),
    });
    put(tls, path);
    Ok(())
}

/// `tls_cert` without `tls_key`, or the other way round, is an error naming the one given.
fn check_tls(ini: &Ini, server: &ServerConfig) -> Result<(), ConfigError> {
    let Some(tls) = &server.tls else {
        return Ok(());
    };
    let (given, value) = if tls.key.as_os_str().is_empty() {
        ("tls_cert", &tls.cert)
    } else if tls.cert.as_os_str().is_empty() {
        ("tls_key", &tls.key)
    } else {
        return Ok(());
    };
    Err(ConfigError::Value {
        section: SERVER_SECTION.to_owned(),
        key: given.to_owned(),
        value: quoted(&value.to_string_lossy()),
        from_default: ini
            .get(SERVER_SECTION, given)
            .is_some_and(|found| found.from_default),
        reason: "tls_cert and tls_key go together: set both, or neither",
    })
}

/// A [`duration`] longer than zero (`stale_after`, `history_max_age`).
fn positive_duration(value: &str) -> Result<Duration, &'static str> {
    match duration(value)? {
        duration if duration.is_zero() => Err("must be longer than zero"),
        duration => Ok(duration),
    }
}

/// A port number, at least `min` (0 or 1, the two ranges the messages name).
fn port(value: &str, min: u16) -> Result<u16, &'static str> {
    match value.parse::<u16>() {
        Ok(port) if port >= min => Ok(port),
        _ if min == 0 => Err("not a port number (0-65535)"),
        _ => Err("not a port number (1-65535)"),
    }
}

/// `None` for an empty value.
fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// A path, which must not be empty (an empty path opens nothing).
fn path(value: &str) -> Result<PathBuf, &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    Ok(PathBuf::from(value))
}

/// `dynip.sqlite3` in the directory of `client_log_path` (for a bare file name, the
/// working directory).
fn default_store_path(client_log_path: &Path) -> PathBuf {
    // `parent()` is `None` only for a root or an empty path; then the root itself (or
    // the working directory) is the directory.
    client_log_path
        .parent()
        .unwrap_or(client_log_path)
        .join(STORE_FILE_NAME)
}

// ---------------------------------------------------------------------------------------
// INI layer: Python 2.7 `RawConfigParser._read`, knowing no key.

/// A parsed INI file: string options by section, merged, in file order.
#[derive(Debug, Default)]
struct Ini {
    /// `[DEFAULT]`: fallbacks for every other section.
    defaults: Options,
    /// Every other section, by exact name.
    sections: OrderedMap<Options>,
}

/// One section's options: lowercased key -> value.
type Options = OrderedMap<String>;

/// A value found by [`Ini::get`].
struct Found<'a> {
    value: &'a str,
    /// It came from `[DEFAULT]`.
    from_default: bool,
}

/// The section options go to.
#[derive(Clone, Copy)]
enum Target {
    Defaults,
    Section(usize),
}

/// What one line is, before the parser's state is considered.
enum Line<'a> {
    /// Blank or a comment.
    Skip,
    /// Starts with whitespace: a continuation if an option is open. Holds the stripped text.
    Indented(&'a str),
    Header(&'a str),
    Option {
        key: String,
        value: String,
    },
    Garbage,
}

impl Ini {
    /// # Errors
    ///
    /// The first line that is not a header, option, continuation, comment or blank.
    fn parse(text: &str) -> Result<Ini, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ini = Ini::default();
        let mut current: Option<Target> = None;
        // The option an indented line continues: its index in `current`'s options.
        let mut open: Option<usize> = None;
        for (idx, raw) in text.split('\n').enumerate() {
            let line_no = idx + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let error_text = || quoted(line);
            match (classify(line), current) {
                (Line::Skip, _) => {}
                (Line::Header(name), _) => {
                    current = Some(if name == DEFAULT_SECTION {
                        Target::Defaults
                    } else {
                        Target::Section(ini.sections.entry(name, Options::default))
                    });
                    open = None;
                }
                (_, None) => {
                    return Err(ConfigError::MissingSectionHeader {
                        line: line_no,
                        text: error_text(),
                    })
                }
                (Line::Indented(more), Some(target)) => {
                    let Some(option_idx) = open else {
                        return Err(ConfigError::NothingToContinue {
                            line: line_no,
                            text: error_text(),
                        });
                    };
                    if let Some(value) = ini.options_mut(target).value_mut(option_idx) {
                        value.push('\n');
                        value.push_str(more);
                    }
                }
                (Line::Option { key, value }, Some(target)) => {
                    open = Some(ini.options_mut(target).insert(key, value));
                }
                (Line::Garbage, Some(_)) => {
                    return Err(ConfigError::Syntax {
                        line: line_no,
                        text: error_text(),
                    })
                }
            }
        }
        Ok(ini)
    }

    fn options_mut(&mut self, target: Target) -> &mut Options {
        match target {
            Target::Defaults => &mut self.defaults,
            Target::Section(idx) => self
                .sections
                .value_mut(idx)
                // `Section(idx)` is only made from an index `entry` just returned, and
                // sections are never removed.
                .expect("section index from OrderedMap::entry"),
        }
    }

    /// `key` in `section`, else in `[DEFAULT]` (even when `section` is missing).
    fn get(&self, section: &str, key: &str) -> Option<Found<'_>> {
        if let Some(value) = self
            .sections
            .get(section)
            .and_then(|options| options.get(key))
        {
            return Some(Found {
                value,
                from_default: false,
            });
        }
        self.defaults.get(key).map(|value| Found {
            value,
            from_default: true,
        })
    }
}

/// Sorts one line (without its `\n` or `\r\n`) into a [`Line`], in Python's order:
/// blank or comment, `rem`, indented, header, option.
fn classify(line: &str) -> Line<'_> {
    let Some(first) = line.chars().next() else {
        return Line::Skip;
    };
    if strip(line).is_empty() || first == '#' || first == ';' {
        return Line::Skip;
    }
    if matches!(first, 'r' | 'R')
        && line
            .split(is_space)
            .next()
            .is_some_and(|word| word.eq_ignore_ascii_case("rem"))
    {
        return Line::Skip;
    }
    if is_space(first) {
        return Line::Indented(strip(line));
    }
    if let Some(name) = header(line) {
        return Line::Header(name);
    }
    match option(line) {
        Some((key, value)) => Line::Option { key, value },
        None => Line::Garbage,
    }
}

/// `\[(?P<header>[^]]+)\]` matched at the start of the line.
fn header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    (end > 0).then(|| &rest[..end])
}

/// `(?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$`, then the inline comment,
/// the strip and the `""` rule. The caller has ruled out a leading space.
fn option(line: &str) -> Option<(String, String)> {
    let delimiter = line.find([':', '='])?;
    if delimiter == 0 {
        return None;
    }
    let key = line[..delimiter].trim_end_matches(is_space);
    let after = &line[delimiter + 1..];
    let mut value = after.trim_start_matches(is_space);
    if let Some(semicolon) = value.find(';') {
        let after_space = if semicolon == 0 {
            value.len() < after.len()
        } else {
            value[..semicolon].ends_with(is_space)
        };
        if after_space {
            value = &value[..semicolon];
        }
    }
    let value = match strip(value) {
        "\"\"" => "",
        value => value,
    };
    Some((key.to_ascii_lowercase(), value.to_owned()))
}

/// Python 2's byte-string whitespace (`str.isspace`, `str.strip`, `re`'s `\s`). Not
/// `char::is_ascii_whitespace`, which lacks `\v`, nor Unicode's, which adds NBSP.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Python 2's `str.strip()`.
fn strip(text: &str) -> &str {
    text.trim_matches(is_space)
}

/// `text` cut to [`MAX_QUOTED_CHARS`] characters for a message (then shown with `{:?}`,
/// which escapes control characters).
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A map that keeps first-insertion order, as Python 2.7's `OrderedDict` does:
/// replacing a value keeps its place.
#[derive(Debug)]
struct OrderedMap<V> {
    entries: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V> Default for OrderedMap<V> {
    fn default() -> OrderedMap<V> {
        OrderedMap {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> OrderedMap<V> {
    fn get(&self, key: &str) -> Option<&V> {
        let idx = *self.index.get(key)?;
        self.entries.get(idx).map(|(_, value)| value)
    }

    fn value_mut(&mut self, idx: usize) -> Option<&mut V> {
        self.entries.get_mut(idx).map(|(_, value)| value)
    }

    /// The index of `key`, inserting `make()` first if it is missing.
    fn entry(&mut self, key: &str, make: impl FnOnce() -> V) -> usize {
        match self.index.get(key) {
            Some(&idx) => idx,
            None => self.push(key.to_owned(), make()),
        }
    }

    /// Sets `key` to `value` (in its old place if present) and returns its index.
    fn insert(&mut self, key: String, value: V) -> usize {
        match self.index.get(&key) {
            Some(&idx) => {
                if let Some(slot) = self.value_mut(idx) {
                    *slot = value;
                }
                idx
            }
            None => self.push(key, value),
        }
    }

    fn push(&mut self, key: String, value: V) -> usize {
        let idx = self.entries.len();
        self.index.insert(key.clone(), idx);
        self.entries.push((key, value));
        idx
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries
            .iter()
            .map(|(key, value)| (key.as_str(), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` with the INI layer alone and compares a dump of it (or the error)
    /// with `expect`: `[DEFAULT]` first when it has options, then every section in file
    /// order, each option as `key = "value"`.
    fn check_ini(input: &str, expect: &str) {
        let actual = match Ini::parse(input) {
            Ok(ini) => dump_ini(&ini),
            Err(err) => format!("error: {err}\n"),
        };
        assert_eq!(actual.trim_end(), expect.trim(), "input: {input:?}");
    }

    fn dump_ini(ini: &Ini) -> String {
        let mut out = String::new();
        let dump_section = |out: &mut String, name: &str, options: &Options| {
            out.push_str(&format!("[{name}]\n"));
            for (key, value) in options.iter() {
                out.push_str(&format!("{key} = {value:?}\n"));
            }
        };
        if ini.defaults.iter().next().is_some() {
            dump_section(&mut out, DEFAULT_SECTION, &ini.defaults);
        }
        for (name, options) in ini.sections.iter() {
            dump_section(&mut out, name, options);
        }
        out
    }

    /// Parses `input` into a [`Config`] and compares what differs from the defaults, one
    /// `field = value` line each, then the warnings, with `expect`; or the error.
    fn check(input: &str, expect: &str) {
        let actual = match parse(input) {
            Ok(config) => dump_config(&config),
            Err(err) => format!("error: {err}\n"),
        };
        assert_eq!(actual.trim_end(), expect.trim(), "input: {input:?}");
    }

    fn dump_config(config: &Config) -> String {
        // Destructured so that a new field does not compile until it is dumped here.
        let Config {
            server:
                ServerConfig {
                    server_ip,
                    server_port,
                    client_log_path,
                    store_path,
                    key: server_key,
                    allow_unsigned,
                    allow_from,
                    hosts,
                    http_listen,
                    tls,
                    trusted_proxies,
                    public_status,
                    public_metrics,
                    stale_after,
                    history_max_age,
                    dns,
                },
            client:
                ClientConfig {
                    server_hostname,
                    server_port: client_server_port,
                    hostname,
                    key: client_key,
                },
            warnings,
        } = config;
        let server = ServerConfig::default();
        let client = ClientConfig::default();
        let mut out = String::new();
        let mut field = |name: &str, differs: bool, value: &dyn std::fmt::Debug| {
            if differs {
                out.push_str(&format!("{name} = {value:?}\n"));
            }
        };
        field(
            "server.server_ip",
            *server_ip != server.server_ip,
            server_ip,
        );
        field(
            "server.server_port",
            *server_port != server.server_port,
            server_port,
        );
        field(
            "server.client_log_path",
            *client_log_path != server.client_log_path,
            client_log_path,
        );
        field(
            "server.store_path",
            *store_path != server.store_path,
            store_path,
        );
        field("server.key", *server_key != server.key, server_key);
        field(
            "server.allow_unsigned",
            *allow_unsigned != server.allow_unsigned,
            allow_unsigned,
        );
        field(
            "server.allow_from",
            *allow_from != server.allow_from,
            allow_from,
        );
        field("server.hosts", *hosts != server.hosts, hosts);
        field(
            "server.http_listen",
            *http_listen != server.http_listen,
            http_listen,
        );
        field("server.tls", *tls != server.tls, tls);
        field(
            "server.trusted_proxies",
            *trusted_proxies != server.trusted_proxies,
            trusted_proxies,
        );
        field(
            "server.public_status",
            *public_status != server.public_status,
            public_status,
        );
        field(
            "server.public_metrics",
            *public_metrics != server.public_metrics,
            public_metrics,
        );
        field(
            "server.stale_after",
            *stale_after != server.stale_after,
            stale_after,
        );
        field(
            "server.history_max_age",
            *history_max_age != server.history_max_age,
            history_max_age,
        );
        field("server.dns", *dns != server.dns, dns);
        field("client.key", *client_key != client.key, client_key);
        field(
            "client.server_hostname",
            *server_hostname != client.server_hostname,
            server_hostname,
        );
        field(
            "client.server_port",
            *client_server_port != client.server_port,
            client_server_port,
        );
        field("client.hostname", *hostname != client.hostname, hostname);
        for warning in warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }

    // --- INI layer -------------------------------------------------------------------

    #[test]
    fn both_delimiters_and_the_first_one_wins() {
        check_ini(
            "[s]\na = 1\nb: 2\nc=3\nd:4\ne = x=y:z\nf: a=b\nurl = http://example.com/\ng:h = i\n",
            r#"
[s]
a = "1"
b = "2"
c = "3"
d = "4"
e = "x=y:z"
f = "a=b"
url = "http://example.com/"
g = "h = i"
"#,
        );
    }

    #[test]
    fn option_names_are_stripped_and_lowercased() {
        check_ini(
            "[s]\nServer_PORT   = 1\nTwo Words\t: 2\n\u{c9}T\u{c9} = 3\n",
            // ASCII-only lowercasing, as on Python 2's byte strings.
            "[s]\nserver_port = \"1\"\ntwo words = \"2\"\n\u{c9}t\u{c9} = \"3\"",
        );
    }

    #[test]
    fn sections_are_case_sensitive_and_kept_as_written() {
        check_ini(
            "[A]\nk = 1\n[a]\nk = 2\n[ spaced ]\nk = 3\n",
            "[A]\nk = \"1\"\n[a]\nk = \"2\"\n[ spaced ]\nk = \"3\"",
        );
    }

    #[test]
    fn header_ends_at_the_first_bracket_and_ignores_the_rest() {
        check_ini(
            "[s] ; the server\na = 1\n[t]x = 2\nb = 3\n[u]v]\n[x = 4\n[]= 5\n",
            r#"
[s]
a = "1"
[t]
b = "3"
[u]
[x = "4"
[] = "5"
"#,
        );
    }

    #[test]
    fn whole_line_comments_and_blank_lines() {
        check_ini(
            "# hash\n; semicolon\n\n   \n\t\n[s]\n#a = 1\n;b = 2\nc = 3\n# d = 4\n",
            "[s]\nc = \"3\"",
        );
    }

    #[test]
    fn rem_lines_are_comments() {
        check_ini(
            "rem before any section\n[s]\nrem a = 1\nREM b = 2\nRem = 3\nrEm\tc\nremark = 4\nrem=5\n",
            // `rem=5`: the first word is `rem=5`, not `rem`.
            "[s]\nremark = \"4\"\nrem = \"5\"",
        );
    }

    #[test]
    fn inline_semicolon_after_whitespace_starts_a_comment() {
        check_ini(
            "[s]\na = x ; comment\nb = x\t;comment\nc = x;not a comment\nd = x;y ;z\ne = ;comment\nf =;kept\ng = x ;\n",
            r#"
[s]
a = "x"
b = "x"
c = "x;not a comment"
d = "x;y ;z"
e = ""
f = ";kept"
g = "x"
"#,
        );
    }

    #[test]
    fn inline_hash_is_not_a_comment() {
        check_ini(
            "[s]\na = x # not a comment\nb = #x\n",
            "[s]\na = \"x # not a comment\"\nb = \"#x\"",
        );
    }

    #[test]
    fn empty_values_and_double_quotes() {
        check_ini(
            "[s]\na =\nb:\nc = \"\"\nd = \"\" ; comment\ne = \"x\"\nf = '\"\"'\ng = \"\"\"\"\nh =   \n",
            r#"
[s]
a = ""
b = ""
c = ""
d = ""
e = "\"x\""
f = "'\"\"'"
g = "\"\"\"\""
h = ""
"#,
        );
    }

    #[test]
    fn percent_is_literal() {
        check_ini(
            "[s]\na = 100%\nb = %(a)s\n",
            "[s]\na = \"100%\"\nb = \"%(a)s\"",
        );
    }

    #[test]
    fn continuation_lines() {
        check_ini(
            "[s]\na = 1\n  2\n\t3 ; not cut\n\n# comment\n   4\n  # indented, so a value line\nb = x ; cut\n y\n",
            r#"
[s]
a = "1\n2\n3 ; not cut\n4\n# indented, so a value line"
b = "x\ny"
"#,
        );
        check_ini("[s]\na =\n  x\n", "[s]\na = \"\\nx\"");
        check_ini("[DEFAULT]\na = 1\n 2\n", "[DEFAULT]\na = \"1\\n2\"");
    }

    #[test]
    fn a_header_closes_the_open_option() {
        check_ini(
            "[s]\na = 1\n[t]\n  2\n",
            r#"error: line 4: expected "key = value" before an indented (continuation) line, found "  2""#,
        );
        check_ini(
            "[s]\n  # indented comment\n",
            r#"error: line 2: expected "key = value" before an indented (continuation) line, found "  # indented comment""#,
        );
    }

    #[test]
    fn repeated_options_and_sections_merge_and_the_last_wins() {
        check_ini(
            "[s]\na = 1\nb = 2\n[t]\nc = 3\n[s]\nA = 10\nd = 4\n",
            r#"
[s]
a = "10"
b = "2"
d = "4"
[t]
c = "3"
"#,
        );
    }

    #[test]
    fn default_section_is_kept_apart() {
        check_ini(
            "[s]\na = 1\n[DEFAULT]\nb = 2\n[default]\nc = 3\n",
            r#"
[DEFAULT]
b = "2"
[s]
a = "1"
[default]
c = "3"
"#,
        );
    }

    #[test]
    fn bom_and_crlf() {
        check_ini(
            "\u{feff}[s]\r\na = 1 ; c\r\nb = x\r\n  y\r\n\r\n# c\r\nc =\r\n",
            "[s]\na = \"1\"\nb = \"x\\ny\"\nc = \"\"",
        );
        check_ini("\u{feff}", "");
    }

    #[test]
    fn python_whitespace_is_ascii_with_vertical_tab() {
        check_ini(
            "[s]\na = \x0bx\x0c\nb = \u{a0}x\u{a0}\n",
            "[s]\na = \"x\"\nb = \"\\u{a0}x\\u{a0}\"",
        );
    }

    #[test]
    fn option_before_any_section_header() {
        check_ini(
            "# comment\n\nserver_port = 1\n[DynIP:Server]\n",
            r#"error: line 3: expected a section header such as "[DynIP:Server]" first, found "server_port = 1""#,
        );
        check_ini(
            "  indented\n",
            r#"error: line 1: expected a section header such as "[DynIP:Server]" first, found "  indented""#,
        );
        // Python 2 did not skip a byte-order mark; we do, and a BOM before an option is
        // still an option before the header.
        check_ini(
            "\u{feff}a = 1\r\n",
            r#"error: line 1: expected a section header such as "[DynIP:Server]" first, found "a = 1""#,
        );
    }

    #[test]
    fn garbage_lines() {
        let expected = |line: usize, text: &str| {
            format!(
                r#"error: line {line}: expected "[section]", "key = value" or "key: value", found {text:?}"#
            )
        };
        check_ini("[s]\na = 1\n\nfoo\n", &expected(4, "foo"));
        check_ini("[s]\n= 1\n", &expected(2, "= 1"));
        check_ini("[s]\n: 1\n", &expected(2, ": 1"));
        check_ini("[s]\n[]\n", &expected(2, "[]"));
        check_ini("[s]\n[x\r\n", &expected(2, "[x"));
        check_ini("[s]\n\u{0}\n", &expected(2, "\u{0}"));
        let long = "\u{e9}".repeat(200);
        check_ini(
            &format!("[s]\n{long}\n"),
            &expected(2, &format!("{}...", "\u{e9}".repeat(MAX_QUOTED_CHARS))),
        );
    }

    #[test]
    fn get_falls_back_to_default() {
        let ini = Ini::parse("[DEFAULT]\na = d\nb = d\n[s]\nb = s\n").expect("valid ini");
        let get = |section, key| {
            ini.get(section, key)
                .map(|found| (found.value.to_owned(), found.from_default))
        };
        assert_eq!(get("s", "a"), Some(("d".to_owned(), true)));
        assert_eq!(get("s", "b"), Some(("s".to_owned(), false)));
        assert_eq!(get("missing", "a"), Some(("d".to_owned(), true)));
        assert_eq!(get("s", "c"), None);
    }

    // --- Typed layer -----------------------------------------------------------------

    #[test]
    fn defaults() {
        let config = parse("").expect("empty file");
        assert_eq!(config, Config::default());
        assert_eq!(config.server.server_ip, BindHost::All);
        assert_eq!(config.server.server_port, 28630);
        assert_eq!(config.server.client_log_path, PathBuf::from("dynip.json"));
        assert_eq!(config.server.store_path, PathBuf::from("dynip.sqlite3"));
        assert_eq!(config.client.server_hostname, "localhost");
        assert_eq!(config.client.server_port, 28630);
        assert_eq!(config.client.hostname, None);
        assert!(config.warnings.is_empty());
        // Empty sections are missing sections.
        check("[DynIP:Server]\n[DynIP:Client]\n", "");
    }

    #[test]
    fn original_example_config() {
        check(
            r#"
# DynIP configuration

[DynIP:Server]
# The IP address to listen on; * for all.
server_ip = *
server_port = 28630
; Where the hosts and their addresses are written.
client_log_path = dynip.json

[DynIP:Client]
server_hostname = dynip.example.com
server_port = 28630
"#,
            r#"client.server_hostname = "dynip.example.com""#,
        );
    }

    #[test]
    fn server_ip() {
        check("[DynIP:Server]\nserver_ip = *", "");
        check("[DynIP:Server]\nserver_ip =", "");
        check("[DynIP:Server]\nserver_ip = \"\"", "");
        check(
            "[DynIP:Server]\nserver_ip = 192.0.2.1",
            "server.server_ip = Addr(192.0.2.1)",
        );
        check(
            "[DynIP:Server]\nserver_ip = ::",
            "server.server_ip = Addr(::)",
        );
        check(
            "[DynIP:Server]\nserver_ip = 2001:db8::1",
            "server.server_ip = Addr(2001:db8::1)",
        );
        check(
            "[DynIP:Server]\nserver_ip = [2001:db8::1]",
            "server.server_ip = Addr(2001:db8::1)",
        );
        check(
            "[DynIP:Server]\nserver_ip = dynip.example.com",
            r#"server.server_ip = Name("dynip.example.com")"#,
        );
        check(
            "[DynIP:Server]\nserver_ip = [192.0.2.1]",
            r#"error: [DynIP:Server] server_ip = "[192.0.2.1]": not an IPv6 address in brackets"#,
        );
        check(
            "[DynIP:Server]\nserver_ip = [::1",
            r#"error: [DynIP:Server] server_ip = "[::1": not an IPv6 address in brackets"#,
        );
        check(
            "[DynIP:Server]\nserver_ip = example.com\n  example.org\n",
            r#"error: [DynIP:Server] server_ip = "example.com\nexample.org": not "*", an IP address or a host name"#,
        );
    }

    #[test]
    fn server_port() {
        check("[DynIP:Server]\nserver_port = 0", "server.server_port = 0");
        check("[DynIP:Server]\nserver_port = 1", "server.server_port = 1");
        check(
            "[DynIP:Server]\nserver_port = 65535",
            "server.server_port = 65535",
        );
        for bad in [
            "abc",
            "65536",
            "-1",
            "",
            "1 2",
            "0x10",
            "99999999999999999999",
        ] {
            check(
                &format!("[DynIP:Server]\nserver_port = {bad}"),
                &format!(
                    "error: [DynIP:Server] server_port = {bad:?}: not a port number (0-65535)"
                ),
            );
        }
    }

    #[test]
    fn client_server_port() {
        check("[DynIP:Client]\nserver_port = 1", "client.server_port = 1");
        check(
            "[DynIP:Client]\nserver_port = 65535",
            "client.server_port = 65535",
        );
        for bad in ["0", "abc", "65536", "-1", ""] {
            check(
                &format!("[DynIP:Client]\nserver_port = {bad}"),
                &format!(
                    "error: [DynIP:Client] server_port = {bad:?}: not a port number (1-65535)"
                ),
            );
        }
    }

    // The server's paths, written with Unix separators (Windows joins with `\`).
    #[cfg(unix)]
    #[test]
    fn client_log_path_and_store_path() {
        check(
            "[DynIP:Server]\nclient_log_path = /var/lib/dynip/hosts.json",
            r#"
server.client_log_path = "/var/lib/dynip/hosts.json"
server.store_path = "/var/lib/dynip/dynip.sqlite3"
"#,
        );
        check(
            "[DynIP:Server]\nclient_log_path = data/hosts.json",
            r#"
server.client_log_path = "data/hosts.json"
server.store_path = "data/dynip.sqlite3"
"#,
        );
        check(
            "[DynIP:Server]\nclient_log_path = hosts.json",
            r#"server.client_log_path = "hosts.json""#,
        );
        check(
            "[DynIP:Server]\nclient_log_path = /hosts.json",
            r#"
server.client_log_path = "/hosts.json"
server.store_path = "/dynip.sqlite3"
"#,
        );
        check(
            "[DynIP:Server]\nclient_log_path = /var/lib/dynip/hosts.json\nstore_path = /srv/store.db",
            r#"
server.client_log_path = "/var/lib/dynip/hosts.json"
server.store_path = "/srv/store.db"
"#,
        );
        check(
            "[DynIP:Server]\nstore_path = store.db",
            r#"server.store_path = "store.db""#,
        );
        check(
            "[DynIP:Server]\nclient_log_path =",
            r#"error: [DynIP:Server] client_log_path = "": must not be empty"#,
        );
        check(
            "[DynIP:Server]\nstore_path = \"\"",
            r#"error: [DynIP:Server] store_path = "": must not be empty"#,
        );
    }

    #[test]
    fn default_store_path_is_beside_the_client_log() {
        let cases = [
            ("dynip.json", "dynip.sqlite3"),
            ("/var/lib/dynip/hosts.json", "/var/lib/dynip/dynip.sqlite3"),
            ("./hosts.json", "./dynip.sqlite3"),
            ("/", "/dynip.sqlite3"),
            ("", "dynip.sqlite3"),
        ];
        for (client_log_path, store_path) in cases {
            assert_eq!(
                default_store_path(Path::new(client_log_path)),
                PathBuf::from(store_path),
                "{client_log_path:?}"
            );
        }
    }

    #[test]
    fn client_server_hostname() {
        check(
            "[DynIP:Client]\nserver_hostname = dynip.example.com",
            r#"client.server_hostname = "dynip.example.com""#,
        );
        // Empty is the caller's to refuse (exit 4, as the original).
        check(
            "[DynIP:Client]\nserver_hostname =",
            r#"client.server_hostname = """#,
        );
    }

    #[test]
    fn client_hostname() {
        check("[DynIP:Client]\nhostname =", "");
        check("[DynIP:Client]\nhostname = \"\"", "");
        check(
            "[DynIP:Client]\nhostname = kitchen-pc",
            r#"client.hostname = Some("kitchen-pc")"#,
        );
        // Kept as written: the caller validates it as a host name.
        check(
            "[DynIP:Client]\nhostname = Kitchen PC",
            r#"client.hostname = Some("Kitchen PC")"#,
        );
    }

    #[test]
    fn keys_are_case_insensitive_and_sections_are_not() {
        check(
            "[DynIP:Server]\nSERVER_PORT = 1\n[DynIP:Client]\nServer_Hostname: h\n",
            "server.server_port = 1\nclient.server_hostname = \"h\"",
        );
        check(
            "[dynip:server]\nserver_port = 1\n[DynIP:client]\n",
            r#"
warning: unknown section [dynip:server], ignored (did you mean [DynIP:Server]? section names are exact)
warning: unknown section [DynIP:client], ignored (did you mean [DynIP:Client]? section names are exact)
"#,
        );
    }

    #[test]
    fn default_section_fills_in_and_is_overridden() {
        check(
            "[DEFAULT]\nserver_port = 1000\n[DynIP:Server]\n[DynIP:Client]\n",
            "server.server_port = 1000\nclient.server_port = 1000",
        );
        check(
            "[DEFAULT]\nserver_port = 1000\n[DynIP:Server]\nserver_port = 2000\n",
            "server.server_port = 2000\nclient.server_port = 1000",
        );
        // Also for a missing section.
        check(
            "[DEFAULT]\nserver_hostname = h\n",
            r#"client.server_hostname = "h""#,
        );
        // The server's paths, written with Unix separators (Windows joins with `\`).
        #[cfg(unix)]
        check(
            "[DEFAULT]\nclient_log_path = /d/hosts.json\n",
            r#"
server.client_log_path = "/d/hosts.json"
server.store_path = "/d/dynip.sqlite3"
"#,
        );
        // A bad value from [DEFAULT] names both sections.
        check(
            "[DEFAULT]\nserver_port = 0\n",
            r#"error: [DynIP:Client] server_port = "0" (from [DEFAULT]): not a port number (1-65535)"#,
        );
    }

    #[test]
    fn duplicate_sections_merge() {
        check(
            "[DynIP:Server]\nserver_port = 1\nserver_ip = ::1\n[DynIP:Client]\n[DynIP:Server]\nserver_port = 2\n",
            "server.server_ip = Addr(::1)\nserver.server_port = 2",
        );
    }

    #[test]
    fn first_bad_value_in_table_order() {
        check(
            "[DynIP:Client]\nserver_port = x\n[DynIP:Server]\nclient_log_path =\nserver_port = x\n",
            r#"error: [DynIP:Server] server_port = "x": not a port number (0-65535)"#,
        );
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = "9".repeat(200);
        check(
            &format!("[DynIP:Server]\nserver_port = {long}"),
            &format!(
                "error: [DynIP:Server] server_port = \"{}...\": not a port number (0-65535)",
                "9".repeat(MAX_QUOTED_CHARS)
            ),
        );
    }

    #[test]
    fn warnings() {
        check(
            r#"
[DEFAULT]
server_port = 1000
server_hostname = h
colour = blue
[DynIP:Server]
foo = 1
zone = abc
[Foo]
x = 1
[DynIP:Client]
server_ip = *
[DynIP:Server]
bar = 2
"#,
            r#"
server.server_port = 1000
client.server_hostname = "h"
client.server_port = 1000
warning: unknown key "colour" in [DEFAULT], ignored
warning: unknown key "foo" in [DynIP:Server], ignored
warning: unknown key "zone" in [DynIP:Server], ignored
warning: unknown key "bar" in [DynIP:Server], ignored
warning: unknown section [Foo], ignored
warning: unknown key "server_ip" in [DynIP:Client], ignored
"#,
        );
    }

    #[test]
    fn http_keys() {
        check(
            "[DynIP:Server]\nhttp_listen = [::]:8080\ntls_cert = c.pem\ntls_key = k.pem\n\
             trusted_proxies = 127.0.0.1, ::1\npublic_status = yes\nstale_after = 2h 30m\n\
             history_max_age = 30d\n",
            r#"
server.http_listen = Some([::]:8080)
server.tls = Some(TlsFiles { cert: "c.pem", key: "k.pem" })
server.trusted_proxies = Some([127.0.0.1/32, ::1/128])
server.public_status = true
server.stale_after = 9000s
server.history_max_age = Some(2592000s)
"#,
        );
        check(
            "[DynIP:Server]\nhistory_max_age = 0\n",
            "error: [DynIP:Server] history_max_age = \"0\": must be longer than zero",
        );
        check(
            "[DynIP:Server]\nhttp_listen = localhost:80\n",
            "error: [DynIP:Server] http_listen = \"localhost:80\": not ADDRESS:PORT (e.g. 0.0.0.0:8080, [::]:8080, 127.0.0.1:8080)",
        );
        check(
            "[DynIP:Server]\ntls_key = k.pem\n",
            "error: [DynIP:Server] tls_key = \"k.pem\": tls_cert and tls_key go together: set both, or neither",
        );
        check(
            "[DynIP:Server]\nstale_after = 0s\n",
            "error: [DynIP:Server] stale_after = \"0s\": must be longer than zero",
        );
        check(
            "[DynIP:Server]\nstale_after = soon\n",
            "error: [DynIP:Server] stale_after = \"soon\": not a duration (e.g. 60, 90s, 5m, 1h, 1w)",
        );
    }

    #[test]
    fn parse_bool_is_getboolean() {
        for word in ["1", "yes", "true", "on", "YES", "True", "oN"] {
            assert_eq!(parse_bool(word), Some(true), "{word:?}");
        }
        for word in ["0", "no", "false", "off", "NO", "False", "OFF"] {
            assert_eq!(parse_bool(word), Some(false), "{word:?}");
        }
        for word in ["", "2", "y", "n", "t", "enabled", " yes", "yes ", "on\n"] {
            assert_eq!(parse_bool(word), None, "{word:?}");
        }
    }

    #[test]
    fn nasty_inputs_never_panic() {
        let nasty = [
            "",
            "[",
            "]",
            "=",
            ":",
            ";",
            "[]",
            "[]]",
            "[[]]",
            "\u{feff}",
            "\u{feff}\u{feff}",
            "\0",
            "[\0]\n\0=\0\n \0",
            "[DynIP:Server]\nserver_port = \0",
            "[DynIP:Server]\nserver_ip = [",
            "[DynIP:Server]\nserver_ip = []",
            "[DynIP:Server]\nserver_ip = ]",
            "[DynIP:Server]\nclient_log_path = \0",
            "\r",
            "\r\n\r\n",
            "\n\n\n",
            " ",
            " x",
            "[a]\n x",
            "[a]\nx=;",
            "[a]\nx= ;",
            "[a]\nx=\u{e9};",
            "[a]\n\u{e9}",
            "[\u{e9}\u{301}]",
            "r",
            "rem",
            "R\u{e9}m",
            "[DEFAULT]",
            "[DEFAULT]\n=",
            "[DynIP:Server]\n\u{2028}= x",
            &"[".repeat(1000),
            &"é".repeat(1000),
        ];
        for input in nasty {
            // Either answer is fine; a panic fails the test.
            let _ = parse(input);
        }
    }

    #[test]
    fn template_is_the_defaults_with_the_key() {
        let key = Key::from_bytes([7; 32]);
        let mut config = parse(&template(&key)).unwrap();
        assert_eq!(config.warnings, Vec::<String>::new());
        assert_eq!(config.server.key.take(), Some(key.clone()));
        assert_eq!(config.client.key.take(), Some(key));
        assert_eq!(config, Config::default());
    }

    #[test]
    fn template_in_a_state_dir_puts_both_files_there() {
        let key = Key::from_bytes([7; 32]);
        for dir in ["/var/lib/dynip", "/var/lib/dynip/"] {
            let config = parse(&template_in(&key, dir)).unwrap();
            assert_eq!(config.warnings, Vec::<String>::new());
            assert_eq!(
                config.server.client_log_path,
                PathBuf::from("/var/lib/dynip/dynip.json")
            );
            assert_eq!(
                config.server.store_path,
                PathBuf::from("/var/lib/dynip/dynip.sqlite3")
            );
            assert_eq!(config.server.key, Some(key.clone()));
        }
        let root = parse(&template_in(&key, "/")).unwrap();
        assert_eq!(root.server.store_path, PathBuf::from("/dynip.sqlite3"));
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn reads_keys_and_who_may_report() {
        check(
            &format!("[DynIP:Server]\nkey = {KEY}\n[DynIP:Client]\nkey = {KEY}\n"),
            "server.key = Some(Key(id 693e81472a1cbb6a))\nclient.key = Some(Key(id 693e81472a1cbb6a))",
        );
        check(
            &format!("[DynIP:Hosts]\nKitchen-PC = {KEY}\n"),
            "server.hosts = [(\"kitchen-pc\", Key(id 693e81472a1cbb6a))]",
        );
        check(
            "[DynIP:Server]\nallow_unsigned = Yes\nallow_from = 192.0.2.0/24, 2001:db8::/32 10.0.0.1\n",
            "server.allow_unsigned = Some(true)\nserver.allow_from = Some([192.0.2.0/24, 2001:db8::/32, 10.0.0.1/32])",
        );
        check(
            "[DynIP:Server]\nkey = abc\n",
            "error: [DynIP:Server] key = \"abc\": not a key (base64 of 32 bytes, as `dynip init` and `dynip add-host` write)",
        );
        check(
            "[DynIP:Hosts]\nbad..name = x\n",
            "error: [DynIP:Hosts] bad..name = \"x\": not a valid host name",
        );
        check(
            "[DynIP:Hosts]\npc =\n",
            "error: [DynIP:Hosts] pc = \"\": empty: a host needs its key",
        );
        check(
            "[DynIP:Server]\nallow_from = 192.0.2.0/33\n",
            "error: [DynIP:Server] allow_from = \"192.0.2.0/33\": not a list of addresses or networks (e.g. 192.0.2.0/24, 2001:db8::/32)",
        );
        check(
            "[DynIP:Server]\nallow_unsigned = maybe\n",
            "error: [DynIP:Server] allow_unsigned = \"maybe\": not yes/no (also true/false, on/off, 1/0)",
        );
    }

    #[test]
    fn unsigned_reports_follow_the_keys() {
        let accepts = |text: &str| parse(text).unwrap().server.accepts_unsigned();
        assert!(accepts(""));
        assert!(!accepts(&format!("[DynIP:Server]\nkey = {KEY}\n")));
        assert!(!accepts(&format!("[DynIP:Hosts]\npc = {KEY}\n")));
        assert!(accepts(&format!(
            "[DynIP:Server]\nkey = {KEY}\nallow_unsigned = yes\n"
        )));
        assert!(!accepts("[DynIP:Server]\nallow_unsigned = no\n"));
    }

    #[test]
    fn dns_keys_read_and_refuse() {
        let dns = |text: &str| parse(text).unwrap().server.dns;
        let read = dns(
            "[DynIP:Server]\ndns_listen = 127.0.0.1:5353\ndns_zone = Dyn.Example.COM.\n\
             dns_ttl = 30\ndns_ns = ns1.example.net, ns2.dyn.example.com\n\
             dns_soa_contact = admin@example.com\ndns_soa_refresh = 10m\n\
             dns_transfer_to = 127.0.0.1, 192.0.2.0/24\ndns_notify = 127.0.0.1:5300 [::1]\n\
             dns_hide_stale = yes\ndns_rate_limit = 0\ndns_threads = 2\n",
        );
        assert_eq!(read.listen, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(read.zone.as_deref(), Some("dyn.example.com"));
        assert_eq!(read.ttl, Duration::from_secs(30));
        assert_eq!(read.ns, ["ns1.example.net", "ns2.dyn.example.com"]);
        assert_eq!(read.soa_contact.as_deref(), Some("admin.example.com"));
        assert_eq!(read.soa_refresh, Duration::from_secs(600));
        assert_eq!(read.transfer_to.map(|nets| nets.len()), Some(2));
        assert_eq!(
            read.notify,
            [
                "127.0.0.1:5300".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(read.hide_stale);
        assert_eq!(read.rate_limit, 0);
        assert_eq!(read.threads, 2);
        let stale = parse("[DynIP:Server]\nstale_after = 90m\n").unwrap();
        assert_eq!(stale.server.stale_after, Duration::from_secs(5400));
        check(
            "[DynIP:Server]\ndns_listen = 127.0.0.1:53\n",
            "error: [DynIP:Server] dns_listen = \"127.0.0.1:53\": needs dns_zone, the zone to answer for (e.g. dns_zone = dyn.example.com)",
        );
        check(
            "[DynIP:Server]\ndns_listen = 127.0.0.1\n",
            "error: [DynIP:Server] dns_listen = \"127.0.0.1\": not ADDR:PORT (e.g. 127.0.0.1:53, [::]:53)",
        );
        check(
            "[DynIP:Server]\ndns_zone = bad..zone\n",
            "error: [DynIP:Server] dns_zone = \"bad..zone\": not a domain name (e.g. dyn.example.com)",
        );
        check(
            "[DynIP:Server]\ndns_ttl = soon\n",
            "error: [DynIP:Server] dns_ttl = \"soon\": not a duration (e.g. 60, 90s, 5m, 1h, 1w)",
        );
    }
}
