//! The dyndns2 protocol, as routers, ddclient and inadyn speak it: a query string and
//! an `Authorization` header in, one answer line per host out.
//!
//! Owns [`Update`] (what `/nic/update?...` asks), [`Credentials`] (HTTP Basic) and
//! [`Answer`] (`good IP`, `nochg IP`, `badauth`, ...). Pure: bytes and strings in,
//! values out; no sockets, no clock, no logging. Who may update what is `auth`'s;
//! committing is the writer's; the HTTP edge (`http`) puts the pieces together.
//!
//! Accepted forms, so that the URL templates of common routers work as they are:
//!
//! - `hostname`: one name or a comma-separated list (at most [`MAX_HOSTS`]).
//! - `myip`: an IPv4 or IPv6 address, or one of each separated by a comma (FRITZ!Box's
//!   `myip=<ipaddr>,<ip6addr>`). Empty or absent: the request's source address.
//! - `myipv6` and `myip6` (dyndnsd's name): an IPv6 address.
//! - An IPv6 address may carry a `/prefix` (FRITZ!Box sends `<ip6lanprefix>` forms such
//!   as `2001:db8:1:2::1/64`): the address is kept, the prefix length dropped. Brackets
//!   (`[2001:db8::1]`) are accepted too.
//! - `offline=YES`: the host is marked offline until it reports again.
//! - `user`/`username` and `pass`/`password` in the query, for routers that put the
//!   credentials in the URL instead of sending HTTP Basic.
//! - Other parameters (`wildcard`, `mx`, `backmx`, `system`, `url`) are ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::model::name::Name;

/// Host names one request may update. dyndns2 servers answer `numhost` above a small
/// limit (Dyn's was 20); a router updates one or two names.
pub const MAX_HOSTS: usize = 20;

/// What one `/nic/update` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Each requested name in order: `None` for one that is not a valid host name
    /// (answered `notfqdn`).
    pub hostnames: Vec<Option<Name>>,
    /// The addresses given; both `None` means "the request's source address".
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// `offline=YES`.
    pub offline: bool,
    /// Credentials given in the query (`user`, `pass`), for routers that send no header.
    pub credentials: Option<Credentials>,
}

/// Why a query cannot be an update at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No `hostname`, or an empty one: answered `notfqdn`.
    #[error("no hostname")]
    NoHostname,
    /// More than [`MAX_HOSTS`] names: answered `numhost`.
    #[error("{0} host names in one request; at most {MAX_HOSTS}")]
    TooManyHosts(usize),
    /// An address that does not parse: a client error (400), since dyndns2 has no answer
    /// for it and guessing would record a wrong address.
    #[error("{key}={value:?} is not {expected}")]
    BadAddress {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// HTTP Basic credentials. The user name is not checked against anything (any holder of
/// a key may use any user name); the password is a key as the config writes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never a key in a log line.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why an `Authorization` header does not hold Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not HTTP Basic credentials")]
    NotBasic,
    #[error("Basic credentials that are not base64 of user:password")]
    Malformed,
}

/// One answer line of dyndns2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Committed; the addresses now recorded.
    Good(Vec<IpAddr>),
    /// Committed, and the addresses were already those.
    NoChange(Vec<IpAddr>),
    /// The credentials are not a key, or the source may not report.
    BadAuth,
    /// Not a valid host name.
    NotFqdn,
    /// A per-host key used for another host.
    NoHost,
    /// Too many hosts in one request.
    NumHost,
    /// Too many failed attempts from this source: try later.
    Abuse,
    /// The store could not commit the update.
    DnsErr,
    /// The server cannot take updates now (shutting down, or overloaded).
    ServerError,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs = |f: &mut fmt::Formatter<'_>, word: &str, addrs: &[IpAddr]| {
            f.write_str(word)?;
            for (idx, addr) in addrs.iter().enumerate() {
                f.write_str(if idx == 0 { " " } else { "," })?;
                write!(f, "{addr}")?;
            }
            Ok(())
        };
        match self {
            Answer::Good(ips) => addrs(f, "good", ips),
            Answer::NoChange(ips) => addrs(f, "nochg", ips),
            Answer::BadAuth => f.write_str("badauth"),
            Answer::NotFqdn => f.write_str("notfqdn"),
            Answer::NoHost => f.write_str("nohost"),
            Answer::NumHost => f.write_str("numhost"),
            Answer::Abuse => f.write_str("abuse"),
            Answer::DnsErr => f.write_str("dnserr"),
            Answer::ServerError => f.write_str("911"),
        }
    }
}

/// Reads a `/nic/update` query string (without the `?`).
///
/// # Errors
/// No host name, too many, or an address that does not parse; see [`QueryError`].
pub fn parse_query(query: &str) -> Result<Update, QueryError> {
    let mut hostname = None;
    let mut myip = None;
    let mut myipv6 = None;
    let mut offline = false;
    let mut user = None;
    let mut password = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "hostname" => hostname = Some(value.into_owned()),
            "myip" => myip = Some(value.into_owned()),
            "myipv6" | "myip6" => myipv6 = Some(("myipv6", value.into_owned())),
            "offline" => offline = value.eq_ignore_ascii_case("yes"),
            "user" | "username" => user = Some(value.into_owned()),
            "pass" | "password" => password = Some(value.into_owned()),
            _ => {}
        }
    }
    let hostname = hostname.unwrap_or_default();
    let names: Vec<&str> = hostname
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        return Err(QueryError::NoHostname);
    }
    if names.len() > MAX_HOSTS {
        return Err(QueryError::TooManyHosts(names.len()));
    }
    let hostnames = names.iter().map(|name| Name::parse(name).ok()).collect();
    let (mut ipv4, mut ipv6) = (None, None);
    if let Some(myip) = myip.as_deref().filter(|value| !value.trim().is_empty()) {
        let bad = || QueryError::BadAddress {
            key: "myip",
            value: myip.to_string(),
            expected: "an IPv4 or IPv6 address, or one of each separated by a comma",
        };
        let parts: Vec<&str> = myip.split(',').map(str::trim).collect();
        if parts.len() > 2 {
            return Err(bad());
        }
        for part in parts {
            match parse_addr(part).ok_or_else(bad)? {
                IpAddr::V4(addr) if ipv4.is_none() => ipv4 = Some(addr),
                IpAddr::V6(addr) if ipv6.is_none() => ipv6 = Some(addr),
                _ => return Err(bad()),
            }
        }
    }
    if let Some((key, value)) = myipv6.filter(|(_, value)| !value.trim().is_empty()) {
        let addr = match parse_addr(value.trim()) {
            Some(IpAddr::V6(addr)) => addr,
            _ => {
                return Err(QueryError::BadAddress {
                    key,
                    value,
                    expected: "an IPv6 address",
                })
            }
        };
        ipv6 = Some(addr);
    }
    let credentials = match (user, password) {
        (user, Some(password)) => Some(Credentials {
            user: user.unwrap_or_default(),
            password,
        }),
        _ => None,
    };
    Ok(Update {
        hostnames,
        ipv4,
        ipv6,
        offline,
        credentials,
    })
}

/// An address as routers send it: IPv4, IPv6 (optionally in brackets, optionally with a
/// `/prefix` of 0–128 after it). An IPv4-mapped IPv6 address counts as IPv4.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    if let Ok(addr) = text.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(addr));
    }
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    if let Some(prefix) = prefix {
        prefix.parse::<u8>().ok().filter(|len| *len <= 128)?;
    }
    let addr = addr
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(addr);
    let addr = addr.parse::<Ipv6Addr>().ok()?;
    Some(IpAddr::V6(addr).to_canonical())
}

/// Reads an `Authorization` header's value as HTTP Basic credentials (RFC 7617).
///
/// # Errors
/// Another scheme, or a value that is not base64 of `user:password` in UTF-8.
pub fn parse_basic(header: &[u8]) -> Result<Credentials, CredentialsError> {
    let header = std::str::from_utf8(header).map_err(|_| CredentialsError::Malformed)?;
    let (scheme, encoded) = header
        .trim()
        .split_once(' ')
        .ok_or(CredentialsError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(CredentialsError::NotBasic);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| CredentialsError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| CredentialsError::Malformed)?;
    let (user, password) = decoded.split_once(':').ok_or(CredentialsError::Malformed)?;
    Ok(Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `query` and compares a one-line summary of it (or the error) with `expect`.
    fn check(query: &str, expect: &str) {
        let actual = match parse_query(query) {
            Ok(update) => {
                let names: Vec<String> = update
                    .hostnames
                    .iter()
                    .map(|name| name.as_ref().map_or("!".to_string(), Name::to_string))
                    .collect();
                let show = |addr: Option<String>| addr.unwrap_or_else(|| "-".to_string());
                format!(
                    "{} v4={} v6={}{}{}",
                    names.join(","),
                    show(update.ipv4.map(|a| a.to_string())),
                    show(update.ipv6.map(|a| a.to_string())),
                    if update.offline { " offline" } else { "" },
                    update
                        .credentials
                        .map(|c| format!(" {}:{}", c.user, c.password))
                        .unwrap_or_default(),
                )
            }
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expect, "query: {query:?}");
    }

    #[test]
    fn reads_the_forms_clients_send() {
        // ddclient
        check(
            "system=dyndns&hostname=kitchen-pc&myip=203.0.113.7",
            "kitchen-pc v4=203.0.113.7 v6=-",
        );
        // inadyn, no address: the source's.
        check("hostname=nas.example.com", "nas.example.com v4=- v6=-");
        // FRITZ!Box: both families in myip, a prefix on the IPv6 one.
        check(
            "hostname=fritz&myip=203.0.113.7,2001:db8:1:2::1/64",
            "fritz v4=203.0.113.7 v6=2001:db8:1:2::1",
        );
        // FRITZ!Box without IPv6: the template's field left empty.
        check(
            "hostname=fritz&myip=203.0.113.7&myipv6=",
            "fritz v4=203.0.113.7 v6=-",
        );
        // OpenWrt ddns-scripts: credentials in the URL.
        check(
            "hostname=owrt&myip=198.51.100.1&username=u&password=p%2Bq%3D",
            "owrt v4=198.51.100.1 v6=- u:p+q=",
        );
        check(
            "hostname=a,b,%20c&myip6=%5B2001:db8::1%5D&offline=YES",
            "a,b,c v4=- v6=2001:db8::1 offline",
        );
        check(
            "hostname=a&myipv6=2001:db8::2&offline=no",
            "a v4=- v6=2001:db8::2",
        );
        check("hostname=a&myip=::ffff:192.0.2.1", "a v4=192.0.2.1 v6=-");
        check("hostname=a,bad%20name,-x", "a,!,-x v4=- v6=-");
    }

    #[test]
    fn refuses_what_is_not_an_update() {
        check("", "error: no hostname");
        check("hostname=&myip=1.2.3.4", "error: no hostname");
        check("hostname=,,", "error: no hostname");
        let many: Vec<String> = (0..=MAX_HOSTS).map(|idx| format!("h{idx}")).collect();
        check(
            &format!("hostname={}", many.join(",")),
            "error: 21 host names in one request; at most 20",
        );
        check(
            "hostname=a&myip=1.2.3",
            "error: myip=\"1.2.3\" is not an IPv4 or IPv6 address, or one of each separated by a comma",
        );
        check(
            "hostname=a&myip=1.2.3.4,5.6.7.8",
            "error: myip=\"1.2.3.4,5.6.7.8\" is not an IPv4 or IPv6 address, or one of each separated by a comma",
        );
        check(
            "hostname=a&myipv6=1.2.3.4",
            "error: myipv6=\"1.2.3.4\" is not an IPv6 address",
        );
        check(
            "hostname=a&myipv6=2001:db8::1/129",
            "error: myipv6=\"2001:db8::1/129\" is not an IPv6 address",
        );
    }

    #[test]
    fn answers_are_dyndns2_lines() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let lines: Vec<String> = [
            Answer::Good(vec![v4]),
            Answer::NoChange(vec![v4, v6]),
            Answer::BadAuth,
            Answer::NotFqdn,
            Answer::NoHost,
            Answer::NumHost,
            Answer::Abuse,
            Answer::DnsErr,
            Answer::ServerError,
        ]
        .iter()
        .map(Answer::to_string)
        .collect();
        assert_eq!(
            lines,
            [
                "good 203.0.113.7",
                "nochg 203.0.113.7,2001:db8::1",
                "badauth",
                "notfqdn",
                "nohost",
                "numhost",
                "abuse",
                "dnserr",
                "911"
            ]
        );
    }

    #[test]
    fn basic_credentials() {
        let encoded = STANDARD.encode("router:c2VjcmV0:with:colons");
        assert_eq!(
            parse_basic(format!("Basic {encoded}").as_bytes()),
            Ok(Credentials {
                user: "router".to_string(),
                password: "c2VjcmV0:with:colons".to_string()
            })
        );
        assert_eq!(parse_basic(b"Bearer abc"), Err(CredentialsError::NotBasic));
        assert_eq!(parse_basic(b"Basic"), Err(CredentialsError::NotBasic));
        assert_eq!(parse_basic(b"basic !!!"), Err(CredentialsError::Malformed));
        let no_colon = STANDARD.encode("router");
        assert_eq!(
            parse_basic(format!("Basic {no_colon}").as_bytes()),
            Err(CredentialsError::Malformed)
        );
        assert_eq!(parse_basic(b"\xff\xfe"), Err(CredentialsError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_queries_never_panic(query in ".{0,200}") {
            let _ = parse_query(&query);
        }

        #[test]
        fn arbitrary_headers_never_panic(header in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_basic(&header);
        }
    }
}
