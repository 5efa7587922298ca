//! The dyndns2 protocol, as routers, ddclient and inadyn speak it: a query string and
//! an `Authorization` header in, one answer line per host out.
//!
//! Owns [`Update`] (what `/nic/update?...` asks), [`Credentials`] (HTTP Basic),
//! [`Answer`] (`good IP`, `nochg IP`, `badauth`, ...), and the two decisions around the
//! writer: [`plan`] (refuse the request, or which reports to send for which names) and
//! [`answer`] (each name's line from what became of its reports). Pure: bytes, strings
//! and the policy in, values out; no sockets, no clock, no logging. Who may update what
//! is `policy`'s; committing is the writer's; the HTTP edge (`edge/http/update.rs`) sends
//! the reports, waits, counts and logs.
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
//! - `txt=VALUE`: instead of an address, set the TXT record at `_acme-challenge.HOST`
//!   to VALUE (an ACME DNS-01 challenge, as DuckDNS-style scripts send it); `txt=`
//!   empty, or `clear=true`, removes it. Answered `good` once committed.
//! - `user`/`username` and `pass`/`password` in the query, for routers that put the
//!   credentials in the URL instead of sending HTTP Basic.
//! - Other parameters (`wildcard`, `mx`, `backmx`, `system`, `url`) are ignored.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::model::name::Name;
use crate::model::txt::{Txt, TxtError};
use crate::policy::{Policy, Refusal};

/// Host names one request may update. dyndns2 servers answer `numhost` above a small
/// limit (Dyn's was 20); a router updates one or two names.
pub const MAX_HOSTS: usize = 20;

/// Addresses one update reports: one of each family.
pub const MAX_ADDRS: usize = 2;

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
    /// `txt=` or `clear=true`: a TXT change instead of a report.
    pub txt: Option<TxtRequest>,
}

/// What `txt=` asks for each name's `_acme-challenge` TXT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtRequest {
    /// `txt=VALUE`: this one record, replacing any there.
    Set(Txt),
    /// `txt=` empty, or `clear=true`: none.
    Clear,
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
    /// A `txt` value dynip does not keep (400).
    #[error("txt: {0}")]
    BadTxt(TxtError),
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
    Good(Addrs),
    /// A TXT change committed.
    GoodTxt,
    /// Committed, and the addresses were already those.
    NoChange(Addrs),
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
            Answer::Good(ips) => addrs(f, "good", ips.as_slice()),
            Answer::GoodTxt => f.write_str("good"),
            Answer::NoChange(ips) => addrs(f, "nochg", ips.as_slice()),
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

/// The addresses one update reports, one report each: those the query gives, else the
/// client's. At most one of each family, IPv4 first. Inline: every name's answer line
/// repeats them, and an allocation per name showed in the update path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    addrs: [IpAddr; MAX_ADDRS],
    len: usize,
}

impl Addrs {
    /// The addresses of an update giving `ipv4` and `ipv6` (both `None`: `client`'s).
    pub fn new(ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>, client: IpAddr) -> Addrs {
        let one = |addr: IpAddr| Addrs {
            addrs: [addr; MAX_ADDRS],
            len: 1,
        };
        match (ipv4, ipv6) {
            (None, None) => one(client),
            (Some(v4), None) => one(IpAddr::V4(v4)),
            (None, Some(v6)) => one(IpAddr::V6(v6)),
            (Some(v4), Some(v6)) => Addrs {
                addrs: [IpAddr::V4(v4), IpAddr::V6(v6)],
                len: 2,
            },
        }
    }

    pub fn as_slice(&self) -> &[IpAddr] {
        &self.addrs[..self.len]
    }
}

impl fmt::Debug for Addrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
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
    let mut txt = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "txt" if value.is_empty() => txt = Some(TxtRequest::Clear),
            "txt" => {
                let record = Txt::from_text(&value).map_err(QueryError::BadTxt)?;
                txt = Some(TxtRequest::Set(record));
            }
            "clear" if value.eq_ignore_ascii_case("true") => txt = Some(TxtRequest::Clear),
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
        txt,
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

/// What to do with an update request, as [`plan`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A query no dyndns2 answer fits (always [`QueryError::BadAddress`]): HTTP `400`
    /// with the error, and nothing recorded.
    BadRequest(QueryError),
    /// Refuse the whole request with one answer line.
    Refuse(Denial),
    /// Send one report per address of `addrs` for each name planned
    /// [`HostPlan::Report`], and answer each name in order.
    Report {
        hosts: Vec<HostPlan>,
        addrs: Addrs,
        /// `offline=YES`: every report marks its host offline.
        offline: bool,
    },
    /// Change the `_acme-challenge` TXT record of each name planned
    /// [`HostPlan::Report`], and answer each name in order.
    Txt {
        hosts: Vec<HostPlan>,
        txt: TxtRequest,
    },
}

/// What to do with one name of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPlan {
    /// Report it, and answer from the reports' outcomes ([`answer`]).
    Report(Name),
    /// Answer at once, without a report.
    Refuse(Denial),
}

/// Why dyndns2 refuses an update, or one name of it. The text is the detail the edge
/// logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The source is outside `allow_from`: `badauth`.
    #[error("{0}")]
    NotAllowed(Refusal),
    /// Too many failed credentials from the source: `abuse`.
    #[error("too many failed credentials")]
    Throttled,
    /// No `hostname`: `notfqdn`.
    #[error("{}", QueryError::NoHostname)]
    NoHostname,
    /// More than [`MAX_HOSTS`] names: `numhost`.
    #[error("{}", QueryError::TooManyHosts(*.0))]
    TooManyHosts(usize),
    /// An `Authorization` header that is not Basic credentials: `badauth`.
    #[error("{0}")]
    Credentials(CredentialsError),
    /// A password that is no key of this server: `badauth`.
    #[error("the password is not a key")]
    NotAKey,
    /// No credentials, for a name that needs them: `badauth`, which HTTP sends as a `401`
    /// with a Basic challenge, so that clients send their credentials.
    #[error("{0}")]
    Unsigned(Refusal),
    /// One name that is not a valid host name: `notfqdn` for it.
    #[error("not a host name")]
    BadName,
    /// One name outside the key's scope (a per-host key used for another host): `nohost`
    /// for it.
    #[error("{0}")]
    WrongHost(Name),
}

impl Denial {
    /// The answer line.
    pub fn answer(&self) -> Answer {
        match self {
            Denial::NotAllowed(_)
            | Denial::Credentials(_)
            | Denial::NotAKey
            | Denial::Unsigned(_) => Answer::BadAuth,
            Denial::Throttled => Answer::Abuse,
            Denial::NoHostname | Denial::BadName => Answer::NotFqdn,
            Denial::TooManyHosts(_) => Answer::NumHost,
            Denial::WrongHost(_) => Answer::NoHost,
        }
    }

    /// Whether credentials were needed and none came: HTTP answers `401` with a Basic
    /// challenge, not `200`.
    pub fn needs_credentials(&self) -> bool {
        matches!(self, Denial::Unsigned(_))
    }

    /// Whether the source is charged for failed credentials (a source out of its budget
    /// is [`Denial::Throttled`]). Absent credentials are not charged: a router without a
    /// configured password is not guessing one.
    pub fn charges_source(&self) -> bool {
        matches!(self, Denial::Credentials(_) | Denial::NotAKey)
    }
}

/// Decides what an update request gets, from the policy in force, the client's address,
/// whether it is `throttled` for failed credentials, the query string and the
/// `Authorization` header. The first that applies, in this order: a source outside
/// `allow_from` (`badauth`); a throttled source (`abuse`); a query that is not an update
/// (`notfqdn`, `numhost`, or `400` for a bad address); credentials in the header (else
/// those in the query) that are not Basic or not a key (`badauth`); no credentials where
/// a name needs them (`401`). Then, per name: not a host name (`notfqdn`), outside the
/// key's scope (`nohost`), else one report per address.
pub fn plan(
    policy: &Policy,
    client: IpAddr,
    throttled: bool,
    query: &str,
    authorization: Option<&[u8]>,
) -> Plan {
    if let Err(refusal) = policy.admit(client) {
        return Plan::Refuse(Denial::NotAllowed(refusal));
    }
    if throttled {
        return Plan::Refuse(Denial::Throttled);
    }
    let update = match parse_query(query) {
        Ok(update) => update,
        Err(QueryError::NoHostname) => return Plan::Refuse(Denial::NoHostname),
        Err(QueryError::TooManyHosts(n_hosts)) => {
            return Plan::Refuse(Denial::TooManyHosts(n_hosts))
        }
        Err(e @ (QueryError::BadAddress { .. } | QueryError::BadTxt(_))) => {
            return Plan::BadRequest(e)
        }
    };
    let credentials = match authorization {
        Some(header) => match parse_basic(header) {
            Ok(credentials) => Some(credentials),
            Err(e) => return Plan::Refuse(Denial::Credentials(e)),
        },
        None => update.credentials,
    };
    // `None`: no credentials, for names that may be reported unsigned.
    let scope = match &credentials {
        Some(Credentials { password, .. }) => match policy.scope_of_password(password) {
            Some(scope) => Some(scope),
            None => return Plan::Refuse(Denial::NotAKey),
        },
        None => {
            let refused = update
                .hostnames
                .iter()
                .flatten()
                .find_map(|name| policy.admit_unsigned(name).err());
            if let Some(refusal) = refused {
                return Plan::Refuse(Denial::Unsigned(refusal));
            }
            None
        }
    };
    let hosts = update
        .hostnames
        .into_iter()
        .map(|name| match name {
            None => HostPlan::Refuse(Denial::BadName),
            Some(name) if scope.is_some_and(|scope| !scope.covers(&name)) => {
                HostPlan::Refuse(Denial::WrongHost(name))
            }
            Some(name) => HostPlan::Report(name),
        })
        .collect();
    if let Some(txt) = update.txt {
        // A challenge decides who gets a certificate for the name: never without a key,
        // whatever `allow_unsigned`.
        if scope.is_none() {
            return Plan::Refuse(Denial::Unsigned(Refusal::Unsigned));
        }
        return Plan::Txt { hosts, txt };
    }
    Plan::Report {
        hosts,
        addrs: Addrs::new(update.ipv4, update.ipv6, client),
        offline: update.offline,
    }
}

/// What became of one report, as the edge learned it from the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Committed, and it changed the host: a new address, or into or out of offline.
    Changed,
    /// Committed; the host already had it (only its last-seen time moved).
    Unchanged,
    /// Not committed: the store could not commit it, or (never for an unsigned report)
    /// it was refused as a replay.
    NotCommitted,
    /// No decision: the writer has stopped, or none came in time (the report may still
    /// commit).
    Unavailable,
}

/// A name's answer line from the fates of its reports (one per address of `addrs`, or
/// fewer when the edge stopped waiting at an [`Fate::Unavailable`]): `911` when any went
/// undecided; else `dnserr` when any was not committed; else `good` when any changed the
/// host (as the writer found it, so of two requests with the same new address only the
/// first is `good`); else `nochg`.
pub fn answer(fates: &[Fate], addrs: Addrs) -> Answer {
    if fates.contains(&Fate::Unavailable) {
        Answer::ServerError
    } else if fates.contains(&Fate::NotCommitted) {
        Answer::DnsErr
    } else if fates.contains(&Fate::Changed) {
        Answer::Good(addrs)
    } else {
        Answer::NoChange(addrs)
    }
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
    fn txt_sets_or_clears_the_challenge_instead_of_reporting() {
        let txt = |query: &str| parse_query(query).map(|update| update.txt);
        let token = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";
        assert_eq!(
            txt(&format!("hostname=pc&txt={token}")),
            Ok(Some(TxtRequest::Set(Txt::from_text(token).unwrap())))
        );
        assert_eq!(txt("hostname=pc&txt="), Ok(Some(TxtRequest::Clear)));
        assert_eq!(txt("hostname=pc&clear=true"), Ok(Some(TxtRequest::Clear)));
        assert_eq!(txt("hostname=pc&myip=192.0.2.1"), Ok(None));
        assert!(matches!(
            txt(&format!("hostname=pc&txt={}", "a".repeat(600))),
            Err(QueryError::BadTxt(_))
        ));
        let policy = super::tests::policy(&format!("[DynIP:Server]\nkey = {KEY}\n"));
        let client = "192.0.2.1".parse().unwrap();
        let query = "hostname=pc,bad!name&txt=";
        let authorization = super::tests::basic(KEY);
        assert_eq!(
            plan(&policy, client, false, query, None),
            Plan::Refuse(Denial::Unsigned(Refusal::Unsigned)),
            "never without a key"
        );
        assert_eq!(
            plan(
                &policy,
                client,
                false,
                query,
                Some(authorization.as_bytes())
            ),
            Plan::Txt {
                hosts: vec![
                    HostPlan::Report(Name::parse("pc").unwrap()),
                    HostPlan::Refuse(Denial::BadName)
                ],
                txt: TxtRequest::Clear
            }
        );
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
        let v4: Ipv4Addr = "203.0.113.7".parse().unwrap();
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let lines: Vec<String> = [
            Answer::Good(Addrs::new(Some(v4), None, client)),
            Answer::NoChange(Addrs::new(Some(v4), Some(v6), client)),
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

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NAS_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const CLIENT: &str = "192.0.2.1";

    fn policy(config: &str) -> Policy {
        Policy::new(&crate::config::parse(config).unwrap().server)
    }

    fn basic(password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("router:{password}")))
    }

    /// Plans an update from `client` (with `Authorization: authorization`, if any) under
    /// the server config `config`, and compares a one-line summary with `expect`: `400
    /// ERROR`; `[401] LINE [DETAIL] (charged)` for a request refused whole; or `report
    /// ADDRS[ offline]: NAME | LINE [DETAIL], ...`.
    fn check_plan(
        config: &str,
        client: &str,
        throttled: bool,
        query: &str,
        authorization: Option<&str>,
        expect: &str,
    ) {
        let plan = plan(
            &policy(config),
            client.parse().unwrap(),
            throttled,
            query,
            authorization.map(str::as_bytes),
        );
        let refused = |denial: &Denial| format!("{} [{denial}]", denial.answer());
        let actual = match &plan {
            Plan::BadRequest(e) => format!("400 {e}"),
            Plan::Refuse(denial) => format!(
                "{}{}{}",
                if denial.needs_credentials() {
                    "401 "
                } else {
                    ""
                },
                refused(denial),
                if denial.charges_source() {
                    " (charged)"
                } else {
                    ""
                },
            ),
            Plan::Report {
                hosts,
                addrs,
                offline,
            } => {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|host| match host {
                        HostPlan::Report(name) => name.to_string(),
                        HostPlan::Refuse(denial) => refused(denial),
                    })
                    .collect();
                let addrs: Vec<String> = addrs.as_slice().iter().map(IpAddr::to_string).collect();
                format!(
                    "report {}{}: {}",
                    addrs.join(","),
                    if *offline { " offline" } else { "" },
                    hosts.join(", ")
                )
            }
            Plan::Txt { hosts, txt } => {
                let hosts: Vec<String> = hosts
                    .iter()
                    .map(|host| match host {
                        HostPlan::Report(name) => name.to_string(),
                        HostPlan::Refuse(denial) => refused(denial),
                    })
                    .collect();
                format!("txt {txt:?}: {}", hosts.join(", "))
            }
        };
        assert_eq!(
            actual, expect,
            "config {config:?}, client {client}, throttled {throttled}, query {query:?}, \
             authorization {authorization:?}"
        );
    }

    #[test]
    fn plans_refuse_the_whole_request_in_order() {
        let keyed = format!("[DynIP:Server]\nkey = {KEY}\nallow_from = 192.0.2.0/24\n");
        let good = basic(KEY);
        let good = Some(good.as_str());
        let wrong = basic(NAS_KEY);
        let wrong = Some(wrong.as_str());
        let query = "hostname=pc&myip=203.0.113.7";
        check_plan(&keyed, CLIENT, false, query, good, "report 203.0.113.7: pc");
        // Outside allow_from comes first, even with the right key or when throttled.
        check_plan(
            &keyed,
            "198.51.100.1",
            false,
            query,
            good,
            "badauth [source not in allow_from]",
        );
        check_plan(
            &keyed,
            "198.51.100.1",
            true,
            query,
            good,
            "badauth [source not in allow_from]",
        );
        // A throttled source hears `abuse`, whatever it sends.
        check_plan(
            &keyed,
            CLIENT,
            true,
            query,
            good,
            "abuse [too many failed credentials]",
        );
        check_plan(
            &keyed,
            CLIENT,
            true,
            "",
            wrong,
            "abuse [too many failed credentials]",
        );
        // The query before the credentials: a bad query with a wrong key is not charged.
        check_plan(
            &keyed,
            CLIENT,
            false,
            "myip=203.0.113.7",
            wrong,
            "notfqdn [no hostname]",
        );
        let many: Vec<String> = (0..=MAX_HOSTS).map(|idx| format!("h{idx}")).collect();
        check_plan(
            &keyed,
            CLIENT,
            false,
            &format!("hostname={}", many.join(",")),
            wrong,
            "numhost [21 host names in one request; at most 20]",
        );
        check_plan(
            &keyed,
            CLIENT,
            false,
            "hostname=pc&myip=300.1.2.3",
            wrong,
            "400 myip=\"300.1.2.3\" is not an IPv4 or IPv6 address, or one of each separated by a comma",
        );
        // Credentials that are not a key are charged to the source.
        check_plan(
            &keyed,
            CLIENT,
            false,
            query,
            wrong,
            "badauth [the password is not a key] (charged)",
        );
        check_plan(
            &keyed,
            CLIENT,
            false,
            query,
            Some("Bearer whatever"),
            "badauth [not HTTP Basic credentials] (charged)",
        );
        check_plan(
            &keyed,
            CLIENT,
            false,
            query,
            Some("Basic !!!"),
            "badauth [Basic credentials that are not base64 of user:password] (charged)",
        );
        // No credentials where a key is needed: a challenge, not a charge.
        check_plan(
            &keyed,
            CLIENT,
            false,
            query,
            None,
            "401 badauth [unsigned reports are not accepted (a key is configured)]",
        );
    }

    #[test]
    fn plans_take_credentials_from_the_header_else_the_query() {
        let keyed = format!("[DynIP:Server]\nkey = {KEY}\n");
        let good = basic(KEY);
        let wrong = basic(NAS_KEY);
        check_plan(
            &keyed,
            CLIENT,
            false,
            &format!("hostname=pc&user=u&pass={}", url_encoded(KEY)),
            None,
            "report 192.0.2.1: pc",
        );
        check_plan(
            &keyed,
            CLIENT,
            false,
            &format!("hostname=pc&pass={}", url_encoded(NAS_KEY)),
            None,
            "badauth [the password is not a key] (charged)",
        );
        // The header wins over the query, either way.
        check_plan(
            &keyed,
            CLIENT,
            false,
            &format!("hostname=pc&pass={}", url_encoded(NAS_KEY)),
            Some(&good),
            "report 192.0.2.1: pc",
        );
        check_plan(
            &keyed,
            CLIENT,
            false,
            &format!("hostname=pc&pass={}", url_encoded(KEY)),
            Some(&wrong),
            "badauth [the password is not a key] (charged)",
        );
    }

    #[test]
    fn plans_answer_each_name_by_the_key_s_scope() {
        let config = format!("[DynIP:Server]\nkey = {KEY}\n[DynIP:Hosts]\nnas = {NAS_KEY}\n");
        let nas = basic(NAS_KEY);
        let shared = basic(KEY);
        // One entry per name, in order: a per-host key reports its own host only.
        check_plan(
            &config,
            CLIENT,
            false,
            "hostname=nas,pc,bad..name&myip=198.51.100.1",
            Some(&nas),
            "report 198.51.100.1: nas, nohost [pc], notfqdn [not a host name]",
        );
        check_plan(
            &config,
            CLIENT,
            false,
            "hostname=NAS,pc,bad..name&myip=198.51.100.1",
            Some(&shared),
            "report 198.51.100.1: NAS, pc, notfqdn [not a host name]",
        );
    }

    #[test]
    fn plans_without_credentials_where_unsigned_reports_are_accepted() {
        // No key at all: anyone reports any name.
        check_plan(
            "",
            CLIENT,
            false,
            "hostname=pc,bad..name",
            None,
            "report 192.0.2.1: pc, notfqdn [not a host name]",
        );
        // allow_unsigned with per-host keys: only the hosts without a key of their own.
        let config =
            format!("[DynIP:Server]\nallow_unsigned = yes\n[DynIP:Hosts]\nnas = {NAS_KEY}\n");
        check_plan(
            &config,
            CLIENT,
            false,
            "hostname=pc",
            None,
            "report 192.0.2.1: pc",
        );
        check_plan(
            &config,
            CLIENT,
            false,
            "hostname=pc,nas",
            None,
            "401 badauth [unsigned report for nas, which has a key of its own]",
        );
        // Credentials count where they are given, even when none are needed.
        let wrong = basic(KEY);
        check_plan(
            &config,
            CLIENT,
            false,
            "hostname=pc",
            Some(&wrong),
            "badauth [the password is not a key] (charged)",
        );
    }

    #[test]
    fn plans_report_the_given_addresses_else_the_client_s() {
        let config = "";
        check_plan(
            config,
            CLIENT,
            false,
            "hostname=pc",
            None,
            "report 192.0.2.1: pc",
        );
        check_plan(
            config,
            "2001:db8::7",
            false,
            "hostname=pc",
            None,
            "report 2001:db8::7: pc",
        );
        check_plan(
            config,
            CLIENT,
            false,
            "hostname=pc&myip=203.0.113.7",
            None,
            "report 203.0.113.7: pc",
        );
        check_plan(
            config,
            CLIENT,
            false,
            "hostname=pc&myipv6=2001:db8::1",
            None,
            "report 2001:db8::1: pc",
        );
        check_plan(
            config,
            CLIENT,
            false,
            "hostname=a,b&myip=2001:db8::1,203.0.113.7&offline=yes",
            None,
            "report 203.0.113.7,2001:db8::1 offline: a, b",
        );
    }

    fn url_encoded(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    /// Answers a name whose reports met `fates`, for an update of 203.0.113.7 and
    /// 2001:db8::1, and compares the line with `expect`.
    fn check_answer(fates: &[Fate], expect: &str) {
        let addrs = Addrs::new(
            Some("203.0.113.7".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
            CLIENT.parse().unwrap(),
        );
        assert_eq!(answer(fates, addrs).to_string(), expect, "{fates:?}");
    }

    #[test]
    fn answers_follow_the_fates_of_a_name_s_reports() {
        use Fate::{Changed, NotCommitted, Unavailable, Unchanged};
        check_answer(&[Changed, Changed], "good 203.0.113.7,2001:db8::1");
        check_answer(&[Unchanged, Changed], "good 203.0.113.7,2001:db8::1");
        check_answer(&[Changed, Unchanged], "good 203.0.113.7,2001:db8::1");
        check_answer(&[Unchanged, Unchanged], "nochg 203.0.113.7,2001:db8::1");
        // Not committed beats changed: the update did not (all) happen.
        check_answer(&[Changed, NotCommitted], "dnserr");
        check_answer(&[NotCommitted, Unchanged], "dnserr");
        // Undecided beats all: the report may still commit; try again later.
        check_answer(&[NotCommitted, Unavailable], "911");
        check_answer(&[Unavailable], "911");
        check_answer(&[Changed, Unavailable], "911");
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
