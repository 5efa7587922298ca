//! The typed layer: one table of keys per section, each row a key name and the function
//! that reads its value into [`ServerConfig`] or [`ClientConfig`]. A new key is one row
//! here and one field in `mod.rs`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::ini::{quoted, strip, Ini};
use super::*;
use crate::model::key::Key;
use crate::model::name::Name;

/// Reads one key's value into its section's config, or says what is wrong with it.
pub(super) type Apply<T> = fn(&mut T, &str) -> Result<(), &'static str>;

/// One key a section knows.
pub(super) struct Setting<T> {
    pub(super) name: &'static str,
    pub(super) apply: Apply<T>,
}

/// The keys of `[DynIP:Server]`. A new key is one row here and one field.
#[rustfmt::skip]
pub(super) const SERVER_KEYS: &[Setting<ServerConfig>] = &[
    Setting { name: "server_ip",       apply: |c, v| set(&mut c.server_ip, bind_host(v)) },
    Setting { name: "server_port",     apply: |c, v| set(&mut c.server_port, port(v, 0)) },
    Setting { name: "client_log_path", apply: |c, v| set(&mut c.client_log_path, path(v)) },
    Setting { name: "store_path",      apply: |c, v| set(&mut c.store_path, path(v)) },
    Setting { name: "database_url",    apply: |c, v| set(&mut c.database_url, DatabaseUrl::parse(v).map(Some)) },
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
    Setting { name: "acme_dns_register", apply: |c, v| set(&mut c.acme_dns_register, match v.to_ascii_lowercase().as_str() { "no" => Ok(AcmeDnsRegister::No), "key" => Ok(AcmeDnsRegister::Key), "open" => Ok(AcmeDnsRegister::Open), _ => Err("not no, key or open") }) },
    Setting { name: "notify_max_age",  apply: |c, v| set(&mut c.notify_max_age, positive_duration(v)) },
    Setting { name: "dns_listen",      apply: |c, v| set(&mut c.dns.listen, socket_addr(v, None).map(Some)) },
    Setting { name: "dns_zone",        apply: |c, v| set(&mut c.dns.zone, domain(v).map(Some)) },
    Setting { name: "dns_ttl",         apply: |c, v| set(&mut c.dns.ttl, duration(v)) },
    Setting { name: "dns_txt_ttl",     apply: |c, v| set(&mut c.dns.txt_ttl, duration(v)) },
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
pub(super) const CLIENT_KEYS: &[Setting<ClientConfig>] = &[
    Setting { name: "server_hostname", apply: |c, v| set(&mut c.server_hostname, Ok(v.to_owned())) },
    Setting { name: "server_port",     apply: |c, v| set(&mut c.server_port, port(v, 1)) },
    Setting { name: "hostname",        apply: |c, v| set(&mut c.hostname, Ok(non_empty(v))) },
    Setting { name: "key",             apply: |c, v| set(&mut c.key, key(v)) },
];

/// A section this module reads, for warnings.
pub(super) struct KnownSection {
    pub(super) name: &'static str,
    /// Whether `key` is one of the section's keys.
    pub(super) knows: fn(&str) -> bool,
}

/// Every section this module reads. A new section is one row here.
pub(super) const SECTIONS: &[KnownSection] = &[
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

pub(super) fn knows<T>(keys: &[Setting<T>], name: &str) -> bool {
    keys.iter().any(|key| key.name == name)
}

/// Stores a value a key's reader produced.
pub(super) fn set<V>(field: &mut V, value: Result<V, &'static str>) -> Result<(), &'static str> {
    *field = value?;
    Ok(())
}

/// Starts from the defaults and applies every key the section (or `[DEFAULT]`) sets, in
/// table order, so the first bad value reported is always the same one.
pub(super) fn read_section<T: Default>(
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
pub(super) fn warnings(ini: &Ini) -> Vec<String> {
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
            #[cfg(feature = "server")]
            None if name.starts_with(NOTIFY_SECTION_PREFIX) => {
                for (key, _) in options
                    .iter()
                    .filter(|(key, _)| !super::notify::SINK_KEYS.contains(key))
                {
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
pub(super) fn read_hosts(ini: &Ini) -> Result<Vec<(Name, Key)>, ConfigError> {
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
pub(super) fn key(value: &str) -> Result<Option<Key>, &'static str> {
    if value.is_empty() {
        return Ok(None);
    }
    Key::parse(value)
        .map(Some)
        .map_err(|_| "not a key (base64 of 32 bytes, as `dynip init` and `dynip add-host` write)")
}

pub(super) fn boolean(value: &str) -> Result<bool, &'static str> {
    parse_bool(value).ok_or("not yes/no (also true/false, on/off, 1/0)")
}

/// `allow_from`: addresses or CIDR networks, separated by commas or whitespace.
pub(super) fn networks(value: &str) -> Result<Option<Vec<IpNet>>, &'static str> {
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
pub(super) fn duration(value: &str) -> Result<Duration, &'static str> {
    if let Ok(secs) = value.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(value).map_err(|_| "not a duration (e.g. 60, 90s, 5m, 1h, 1w)")
}

/// `ADDR:PORT` (IPv6 in brackets), or a bare address with `default_port`.
pub(super) fn socket_addr(
    value: &str,
    default_port: Option<u16>,
) -> Result<SocketAddr, &'static str> {
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
pub(super) fn socket_addrs(
    value: &str,
    default_port: u16,
) -> Result<Vec<SocketAddr>, &'static str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| socket_addr(item, Some(default_port)))
        .collect()
}

/// A domain name: labels of letters, digits, `-` and `_`, 1-63 bytes each, at most 253
/// bytes, a final dot allowed; lowercased, without the final dot.
pub(super) fn domain(value: &str) -> Result<String, &'static str> {
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
pub(super) fn domains(value: &str) -> Result<Vec<String>, &'static str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|item| !item.is_empty())
        .map(domain)
        .collect()
}

/// The SOA's mailbox: a name, or a mail address whose `@` becomes a dot.
pub(super) fn mailbox(value: &str) -> Result<String, &'static str> {
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
pub(super) fn bind_host(value: &str) -> Result<BindHost, &'static str> {
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
pub(super) fn listen_addr(value: &str) -> Result<Option<SocketAddr>, &'static str> {
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
pub(super) fn set_tls(
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
pub(super) fn check_tls(ini: &Ini, server: &ServerConfig) -> Result<(), ConfigError> {
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
pub(super) fn positive_duration(value: &str) -> Result<Duration, &'static str> {
    match duration(value)? {
        duration if duration.is_zero() => Err("must be longer than zero"),
        duration => Ok(duration),
    }
}

/// A port number, at least `min` (0 or 1, the two ranges the messages name).
pub(super) fn port(value: &str, min: u16) -> Result<u16, &'static str> {
    match value.parse::<u16>() {
        Ok(port) if port >= min => Ok(port),
        _ if min == 0 => Err("not a port number (0-65535)"),
        _ => Err("not a port number (1-65535)"),
    }
}

/// `None` for an empty value.
pub(super) fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// A path, which must not be empty (an empty path opens nothing).
pub(super) fn path(value: &str) -> Result<PathBuf, &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    Ok(PathBuf::from(value))
}

/// `dynip.sqlite3` in the directory of `client_log_path` (for a bare file name, the
/// working directory).
pub(super) fn default_store_path(client_log_path: &Path) -> PathBuf {
    // `parent()` is `None` only for a root or an empty path; then the root itself (or
    // the working directory) is the directory.
    client_log_path
        .parent()
        .unwrap_or(client_log_path)
        .join(STORE_FILE_NAME)
}
