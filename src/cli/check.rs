//! `dynip check CONFIG`: whether the server could start with a config, and what it would
//! do, without starting anything (as `nginx -t` and `named-checkconf` are used, and as
//! the service unit's `ExecStartPre=`).
//!
//! Owns the checks the server's start-up would fail on: the store and the JSON file are
//! dynip's and writable, the TLS files load, the DNS settings make a zone, and every
//! listen address is this machine's and may be bound by this user. It touches nothing:
//! the store is opened read-only, writability is tested by creating and removing a file
//! of its own, and addresses are bound on port 0 (any free port), so a running server
//! loses nothing and `check` can be run beside it. Must not print: it returns the
//! [`Checked`] summary for the CLI.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{BindHost, Config, SinkConfig, SinkTarget};
use crate::error::Error;
use crate::store::postgresql::Database;
use crate::store::{Store, StoreError};

/// Ports below this need `CAP_NET_BIND_SERVICE` (or root) unless the kernel was told
/// otherwise (`net.ipv4.ip_unprivileged_port_start`).
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;
/// The capability's bit in `/proc/self/status`'s `CapEff` (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;

/// What the server would do with a config that passed every check.
#[derive(Debug, Default)]
pub struct Checked {
    /// One line per thing the server would do, in the order it starts them.
    pub lines: Vec<String>,
    /// Things that would not stop the server but deserve a look (unknown keys, a key
    /// readable by every user).
    pub warnings: Vec<String>,
}

/// Checks `config`, read from `path`, as the server's start would, and describes it.
///
/// # Errors
/// The first check that fails, as the server would have failed: a damaged store or JSON
/// file (exit 6), one that cannot be written (2), TLS files or DNS settings that do not
/// work (3), an address that is not this machine's or a port this user may not bind (7).
pub fn check(path: &Path, config: &Config) -> Result<Checked, Error> {
    let server = &config.server;
    let mut checked = Checked {
        warnings: config.warnings.clone(),
        ..Checked::default()
    };
    if let Some(warning) = crate::cli::world_readable_key(path, config) {
        checked.warnings.push(warning);
    }

    let store_is_new = match &server.database_url {
        Some(url) => {
            // The driver blocks on a runtime of its own, and check may run inside one.
            let probed = std::thread::scope(|scope| {
                scope
                    .spawn(|| Database::probe(url))
                    .join()
                    .map_err(|_| Error::Internal("the database check panicked".to_string()))
            })??;
            let (is_new, what) = probed;
            checked
                .lines
                .push(format!("store: database {} ({what})", url.shown()));
            is_new
        }
        None => {
            let (store_is_new, store) = match Store::open_read_only(&server.store_path) {
                Ok(store) if store.is_empty()? => (false, "a dynip store, no hosts yet"),
                Ok(_) => (false, "a dynip store, has hosts"),
                Err(StoreError::Missing(_)) => (true, "new: created at the first start"),
                Err(e) => return Err(e.into()),
            };
            writable(&server.store_path)?;
            checked
                .lines
                .push(format!("store: {} ({store})", server.store_path.display()));
            store_is_new
        }
    };

    let imported = crate::edge::export::read(&server.client_log_path)?;
    writable(&server.client_log_path)?;
    let json = if imported.n_entries > 0 && store_is_new {
        format!(
            "the original's file with {} entries: imported into the new store",
            imported.n_entries
        )
    } else {
        "rewritten about once a second while hosts report".to_string()
    };
    checked.lines.push(format!(
        "json file: {} ({json})",
        server.client_log_path.display()
    ));

    let udp_addrs = resolve_bind_host(&server.server_ip, server.server_port)?;
    for addr in &udp_addrs {
        may_bind(*addr, SocketKind::Udp)?;
    }
    let where_udp = match &server.server_ip {
        BindHost::All => format!(
            "every address of both families, port {}",
            server.server_port
        ),
        _ => join(udp_addrs.iter()),
    };
    checked.lines.push(format!("reports: udp on {where_udp}"));
    checked
        .lines
        .push(format!("accepts: {}", who_may_report(config)));

    match server.http_listen {
        Some(addr) => {
            may_bind(addr, SocketKind::Tcp)?;
            let scheme = match &server.tls {
                Some(files) => {
                    crate::edge::http::check_tls(files)?;
                    format!("https (certificate {})", files.cert.display())
                }
                None => "http".to_string(),
            };
            checked.lines.push(format!(
                "http: {scheme} on {addr}: dyndns2, the API, the status page{}, /metrics{}",
                if server.public_status {
                    " (public)"
                } else {
                    ""
                },
                if server.public_metrics {
                    " (public)"
                } else {
                    ""
                },
            ));
        }
        None => checked.lines.push("http: off".to_string()),
    }

    match server.dns.listen {
        Some(addr) => {
            crate::proto::zone::Zone::new(&server.dns, server.stale_after)
                .map_err(|e| Error::Dns(crate::edge::dns::DnsError::Zone(e)))?;
            may_bind(addr, SocketKind::Udp)?;
            may_bind(addr, SocketKind::Tcp)?;
            let zone = server.dns.zone.as_deref().unwrap_or_default();
            checked
                .lines
                .push(format!("dns: zone {zone} on {addr}, udp and tcp"));
            checked
                .lines
                .push(format!("dns updates: {}", who_may_update(config)));
        }
        None => checked.lines.push("dns: off".to_string()),
    }

    if server.notify.is_empty() {
        checked.lines.push("notify: no sinks".to_string());
    }
    for (sink, _) in crate::server::prepare_sinks(server)? {
        checked
            .lines
            .push(format!("notify: {}", describe_sink(&sink)));
    }

    let client = &config.client;
    let signed = if client.key.is_some() {
        "signed, waiting for the acknowledgement"
    } else {
        "unsigned (the original's datagram)"
    };
    checked.lines.push(format!(
        "client: reports as {} to {}:{}, {signed}",
        client.hostname.as_deref().unwrap_or("this machine's name"),
        client.server_hostname,
        client.server_port
    ));
    Ok(checked)
}

/// A sink in words: where its messages go, and which.
fn describe_sink(sink: &SinkConfig) -> String {
    let target = match &sink.target {
        SinkTarget::Webhook {
            url,
            preset,
            secret,
        } => format!(
            "webhook to {}{} ({} body{})",
            url.origin().ascii_serialization(),
            url.path(),
            format!("{preset:?}").to_lowercase(),
            if secret.is_some() { ", signed" } else { "" }
        ),
        SinkTarget::Command { program, args } => {
            format!("command {program} with {} argument(s)", args.len())
        }
        SinkTarget::Email { smtp_url, to, .. } => format!(
            "e-mail to {} through {}://{}",
            to.join(", "),
            smtp_url.scheme(),
            smtp_url.host_str().unwrap_or_default()
        ),
    };
    let events: Vec<&str> = sink
        .filter
        .events
        .iter()
        .map(|kind| kind.as_str())
        .collect();
    let coalesce = match sink.coalesce.is_zero() {
        true => "each event alone".to_string(),
        false => format!(
            "coalesced over {}",
            humantime::format_duration(sink.coalesce)
        ),
    };
    format!(
        "{}: {target}; events {}; {coalesce}",
        sink.name,
        events.join(" ")
    )
}

/// Who the server takes reports from, in words.
fn who_may_report(config: &Config) -> String {
    let server = &config.server;
    let mut keys = Vec::new();
    if server.key.is_some() {
        keys.push("the shared key".to_string());
    }
    if !server.hosts.is_empty() {
        keys.push(format!("{} host key(s)", server.hosts.len()));
    }
    let signed = if keys.is_empty() {
        "no keys".to_string()
    } else {
        format!("signed with {}", keys.join(" or "))
    };
    let unsigned = if server.accepts_unsigned() {
        "unsigned reports too (anyone may claim any name)"
    } else {
        "unsigned reports refused"
    };
    let from = match &server.allow_from {
        Some(networks) => format!("from {}", join(networks.iter())),
        None => "from anywhere".to_string(),
    };
    format!("{signed}; {unsigned}; {from}")
}

/// Which TSIG keys may update the zone, and who may register on the acme-dns API.
fn who_may_update(config: &Config) -> String {
    let server = &config.server;
    let mut keys = Vec::new();
    if server.key.is_some() {
        keys.push(format!(
            "TSIG key {} (the shared key) any name",
            crate::policy::SHARED_TSIG_KEY
        ));
    }
    if !server.hosts.is_empty() {
        keys.push(format!(
            "{} host key(s) as TSIG keys named after their hosts, each its host and its \
             _acme-challenge",
            server.hosts.len()
        ));
    }
    let tsig = if keys.is_empty() {
        "none (no keys: UPDATE is refused)".to_string()
    } else {
        keys.join("; ")
    };
    let acme_dns = match (server.http_listen, server.acme_dns_register) {
        (None, _) => "no acme-dns API (http off)",
        (Some(_), crate::config::AcmeDnsRegister::No) => "acme-dns API, registration closed",
        (Some(_), crate::config::AcmeDnsRegister::Key) => {
            "acme-dns API under /acme-dns/, registration with a key"
        }
        (Some(_), crate::config::AcmeDnsRegister::Open) => {
            "acme-dns API under /acme-dns/, registration open to anyone"
        }
    };
    format!("{tsig}; {acme_dns}")
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tests that the server could create `file` or, when it exists, write it: its
/// directory must exist and take a new file (SQLite's journal and the export's temporary
/// file go beside it).
fn writable(file: &Path) -> Result<(), Error> {
    let write_error = |path: &Path, source| Error::NotWritable {
        path: path.to_path_buf(),
        source,
    };
    if file.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map_err(|e| write_error(file, e))?;
    }
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(".dynip-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| write_error(dir, e))?;
    // The probe is ours, created just now; failing to remove it changes nothing else.
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The addresses `server_ip` names, with `port`; none for `*` (every address, which any
/// machine can bind).
fn resolve_bind_host(host: &BindHost, port: u16) -> Result<Vec<SocketAddr>, Error> {
    match host {
        BindHost::All => {
            may_bind_port(SocketAddr::new(
                std::net::Ipv6Addr::UNSPECIFIED.into(),
                port,
            ))?;
            Ok(Vec::new())
        }
        BindHost::Addr(addr) => Ok(vec![SocketAddr::new(*addr, port)]),
        BindHost::Name(name) => Ok(crate::edge::udp::resolve(name, port)?),
    }
}

#[derive(Debug, Clone, Copy)]
enum SocketKind {
    Udp,
    Tcp,
}

/// Tests that `addr`'s address is this machine's, by binding it on port 0 (a running
/// server keeps its port), and that this user may bind `addr`'s port.
fn may_bind(addr: SocketAddr, transport: SocketKind) -> Result<(), Error> {
    let any_port = SocketAddr::new(addr.ip(), 0);
    let bound = match transport {
        SocketKind::Udp => std::net::UdpSocket::bind(any_port).map(drop),
        SocketKind::Tcp => std::net::TcpListener::bind(any_port).map(drop),
    };
    bound.map_err(|source| Error::Bind {
        addr,
        source: std::io::Error::new(
            source.kind(),
            format!("{source}: {} is not an address of this machine", addr.ip()),
        ),
    })?;
    may_bind_port(addr)
}

/// Tests that this user may bind `addr`'s port: a port below 1024 needs root or
/// `CAP_NET_BIND_SERVICE` (the service unit grants it), unless the kernel lowered the
/// limit.
fn may_bind_port(addr: SocketAddr) -> Result<(), Error> {
    let port = addr.port();
    if port == 0 || port >= unprivileged_port_start() || may_bind_privileged() {
        return Ok(());
    }
    Err(Error::Bind {
        addr,
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "ports below 1024 need root or CAP_NET_BIND_SERVICE \
             (AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit)",
        ),
    })
}

/// The first port anyone may bind (`net.ipv4.ip_unprivileged_port_start`).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(FIRST_UNPRIVILEGED_PORT)
}

/// Whether this process has `CAP_NET_BIND_SERVICE` in its effective set (root has it).
/// Without `/proc`, assumed so: the server's own bind says otherwise soon enough.
fn may_bind_privileged() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_BIND_SERVICE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_may_be_bound_and_another_machines_address_may_not() {
        may_bind("127.0.0.1:0".parse().unwrap(), SocketKind::Udp).unwrap();
        may_bind("127.0.0.1:0".parse().unwrap(), SocketKind::Tcp).unwrap();
        // TEST-NET-3 (RFC 5737): never an address of this machine; nothing is sent.
        let err = may_bind("203.0.113.9:8080".parse().unwrap(), SocketKind::Tcp).unwrap_err();
        assert_eq!(err.exit_code(), 7, "{err}");
        assert!(
            err.to_string().contains("not an address of this machine"),
            "{err}"
        );
    }

    #[test]
    fn a_file_in_a_missing_directory_is_not_writable() {
        let err = writable(Path::new("/nonexistent-dynip-dir/dynip.sqlite3")).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}
