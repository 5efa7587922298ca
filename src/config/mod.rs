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
//! - No interpolation: `%` is literal and `%(name)s` is not expanded, so keys, passwords
//!   and percent-encoded URLs need no escaping.
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

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::key::Key;
use crate::model::name::Name;

mod ini;
mod keys;
#[cfg(feature = "server")]
mod notify;
mod template;

use ini::{quoted, Ini};
use keys::{
    check_tls, default_store_path, read_hosts, read_section, warnings, CLIENT_KEYS, SERVER_KEYS,
};
#[cfg(feature = "server")]
pub use notify::{
    Secret, SinkConfig, SinkTarget, DEFAULT_COALESCE, DEFAULT_DELIVERY_TIMEOUT,
    NOTIFY_SECTION_PREFIX,
};
pub use template::{template, template_in};

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
    /// `database_url`: a PostgreSQL database to keep everything in instead of the SQLite
    /// store, shared by every server given the same URL. `None`: `store_path`.
    pub database_url: Option<DatabaseUrl>,
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
    /// `[DynIP:Notify:NAME]` sections: where notifications go. Empty: no events are
    /// kept at all.
    #[cfg(feature = "server")]
    pub notify: Vec<SinkConfig>,
    /// `notify_max_age`, default a day: an event not delivered by then is dropped, with
    /// an error logged and counted.
    pub notify_max_age: Duration,
    /// `acme_dns_register`, default `key`: who may register acme-dns accounts.
    pub acme_dns_register: AcmeDnsRegister,
}

/// `database_url`: where the PostgreSQL database is, as a `postgres://` URL (or
/// `postgresql://`). It may hold a password, so it is never shown whole: `Debug` and
/// [`DatabaseUrl::shown`] leave the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// A URL of the `postgres` or `postgresql` scheme; the driver reads the rest when it
    /// connects.
    ///
    /// # Errors
    /// Any other text.
    pub fn parse(text: &str) -> Result<DatabaseUrl, &'static str> {
        let text = text.trim();
        match text.split_once("://") {
            Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {
                Ok(DatabaseUrl(text.to_string()))
            }
            _ => Err("not a postgres:// URL"),
        }
    }

    /// The URL as written, password included: for the driver only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without its password, for messages and logs.
    pub fn shown(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        // The authority ends at the first '/', '?' or '#'; its userinfo at its last '@'.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                let hidden = if user.len() < userinfo.len() {
                    ":…"
                } else {
                    ""
                };
                format!("{scheme}://{user}{hidden}@{host}{tail}")
            }
            None => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.shown())
    }
}

/// Who may register an account on the acme-dns API (`acme_dns_register`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeDnsRegister {
    /// Nobody: `/acme-dns/register` answers 403.
    No,
    /// A holder of the shared key (an account for a name elsewhere) or of a host's key
    /// (an account for that host), as `Authorization: Bearer KEY`.
    Key,
    /// Anyone, as acme-dns does by default; a host's key still makes the account the
    /// host's.
    Open,
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
    /// `dns_txt_ttl`, default 10 s: the TTL of TXT records (ACME challenges change
    /// within minutes; a resolver must not keep the last one long).
    pub txt_ttl: Duration,
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
            txt_ttl: Duration::from_secs(10),
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

/// `notify_max_age` when the file names none.
pub const DEFAULT_NOTIFY_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

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
            database_url: None,
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
            #[cfg(feature = "server")]
            notify: Vec::new(),
            notify_max_age: DEFAULT_NOTIFY_MAX_AGE,
            acme_dns_register: AcmeDnsRegister::Key,
        }
    }
}

/// `[DynIP:Client]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `server_hostname`, default `localhost`: one server, or several separated by commas
    /// or spaces, each a name or an address with an optional `:PORT`
    /// ([`ClientConfig::servers`]). It may be empty here: the caller exits 4 on an empty
    /// one, as the original did.
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

impl ClientConfig {
    /// The servers `server_hostname` lists, in order, each as a host (a name or an
    /// address) and a port: its own `:PORT`, else `server_port`. An IPv6 address with a
    /// port is written in brackets (`[2001:db8::1]:28630`); one without, bare.
    pub fn servers(&self) -> Vec<(String, u16)> {
        self.server_hostname
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                if let Some(rest) = entry.strip_prefix('[') {
                    if let Some((addr, tail)) = rest.split_once(']') {
                        let port = tail.strip_prefix(':').and_then(|port| port.parse().ok());
                        return (addr.to_owned(), port.unwrap_or(self.server_port));
                    }
                }
                match entry.split_once(':') {
                    // One colon: NAME:PORT or IPV4:PORT; more: a bare IPv6 address.
                    Some((host, port)) if !port.contains(':') => match port.parse() {
                        Ok(port) => (host.to_owned(), port),
                        Err(_) => (entry.to_owned(), self.server_port),
                    },
                    _ => (entry.to_owned(), self.server_port),
                }
            })
            .collect()
    }
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
    #[cfg(feature = "server")]
    {
        server.notify = notify::read_sinks(&ini)?;
    }
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

#[cfg(test)]
mod tests;
