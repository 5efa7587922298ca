//! `dynip list` and `dynip history`: what the store holds, read without a server, as a
//! table or as the API's JSON documents; `dynip copy-store`, all of it into another.

use std::path::Path;

use super::{load_config, print};
use crate::error::Error;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::store::{read_contents, write_contents, PendingChanges, StoreLocation, StoreReader};

pub(super) fn list(path: &Path, json: bool) -> Result<(), Error> {
    let config = load_config(path)?;
    let hosts = StoreReader::open(
        &config.server.store_path,
        config.server.database_url.as_ref(),
    )?
    .hosts()?;
    let hosts = hosts.iter().map(|(name, entry)| (name, &entry.record));
    let out = if json {
        list_json(hosts, config.server.stale_after)
    } else {
        list_table(hosts)
    };
    print(&out)
}

pub(super) fn list_table<'a>(hosts: impl Iterator<Item = (&'a Name, &'a Record)>) -> String {
    let header = ["HOST", "IPV4", "IPV6", "LAST SEEN", "LAST CHANGE"].map(String::from);
    let rows: Vec<[String; 5]> = hosts
        .map(|(name, record)| {
            let last_change = [
                record.v4.map(|s| s.last_change),
                record.v6.map(|s| s.last_change),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(record.first_seen);
            [
                name.to_string(),
                record.v4.map_or("-".to_string(), |s| s.addr.to_string()),
                record.v6.map_or("-".to_string(), |s| s.addr.to_string()),
                record.last_seen().rfc3339(),
                last_change.rfc3339(),
            ]
        })
        .collect();
    columns(&header, &rows)
}

/// `header` and `rows` in columns two spaces apart, each as wide as its widest cell.
fn columns<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `list --json`: the API's host documents (`api::host`), as an array.
fn list_json<'a>(
    hosts: impl Iterator<Item = (&'a Name, &'a Record)>,
    stale_after: std::time::Duration,
) -> String {
    let now = Time::now();
    let hosts: Vec<crate::proto::api::HostJson> = hosts
        .map(|(name, record)| crate::proto::api::host(name, record, now, stale_after))
        .collect();
    to_json(&hosts)
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Serializing plain structs of strings cannot fail.
    let mut out = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push('\n');
    out
}

pub(super) fn history(path: &Path, host: &str, json: bool) -> Result<(), Error> {
    let name = Name::parse(host).map_err(|source| Error::BadName {
        value: host.to_string(),
        source,
    })?;
    let config = load_config(path)?;
    let mut store = StoreReader::open(
        &config.server.store_path,
        config.server.database_url.as_ref(),
    )?;
    let changes = crate::model::record::within_max_age(
        store.history(&name, PendingChanges::Journal)?,
        Time::now(),
        config.server.history_max_age,
    );
    if changes.is_empty() {
        // With `history_max_age` a known host may have no change left to show.
        let known = config.server.history_max_age.is_some() && store.hosts()?.contains_key(&name);
        if !known {
            return Err(Error::UnknownHost(host.to_string()));
        }
    }
    let out = if json {
        // The API's change documents (`{"time", "address"}`), as an array.
        to_json(&crate::proto::api::history(&name, &changes).changes)
    } else {
        let mut out = format!("{:<20}  {:<6}  ADDRESS\n", "TIME", "FAMILY");
        for (at, addr) in &changes {
            let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
            out.push_str(&format!("{:<20}  {family:<6}  {addr}\n", at.rfc3339()));
        }
        out
    };
    print(&out)
}

/// `dynip events`: the store's recent events, newest first, with their deliveries.
pub(super) fn events(
    path: &Path,
    host: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<(), Error> {
    let name = host
        .map(|host| {
            Name::parse(host).map_err(|source| Error::BadName {
                value: host.to_string(),
                source,
            })
        })
        .transpose()?;
    let config = load_config(path)?;
    let mut store = StoreReader::open(
        &config.server.store_path,
        config.server.database_url.as_ref(),
    )?;
    let events = store.events(name.as_ref(), limit)?;
    if let (Some(name), true) = (&name, events.is_empty()) {
        if !store.hosts()?.contains_key(name) {
            return Err(Error::UnknownHost(name.to_string()));
        }
    }
    let out = if json {
        to_json(&crate::proto::api::events(&events).events)
    } else {
        events_table(&events)
    };
    print(&out)
}

/// Events as a table: one line per event, its deliveries as `sink=state` words.
fn events_table(events: &[crate::model::event::EventRecord]) -> String {
    let shown = |old: Option<String>, new: Option<String>| match (old, new) {
        (old, new) if old == new => new.unwrap_or_else(|| "-".to_string()),
        (None, Some(new)) => new,
        (old, new) => format!(
            "{}>{}",
            old.unwrap_or_else(|| "-".to_string()),
            new.unwrap_or_else(|| "-".to_string())
        ),
    };
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|record| {
            let event = &record.event;
            let text = |addr: Option<std::net::Ipv4Addr>| addr.map(|addr| addr.to_string());
            let text6 = |addr: Option<std::net::Ipv6Addr>| addr.map(|addr| addr.to_string());
            let deliveries: Vec<String> = record
                .deliveries
                .iter()
                .map(|delivery| format!("{}={}", delivery.sink, delivery.state.as_str()))
                .collect();
            [
                record.id.to_string(),
                event.at.rfc3339(),
                event.kind.as_str().to_string(),
                event.host.to_string(),
                [
                    shown(text(event.ipv4.old), text(event.ipv4.new)),
                    shown(text6(event.ipv6.old), text6(event.ipv6.new)),
                ]
                .join(" "),
                deliveries.join(" "),
            ]
        })
        .collect();
    let header = ["ID", "TIME", "EVENT", "HOST", "IPV4 IPV6", "DELIVERIES"].map(String::from);
    columns(&header, &rows)
}

/// `dynip copy-store FROM TO`.
pub(super) fn copy_store(from: &str, to: &str) -> Result<(), Error> {
    let (from, to) = (StoreLocation::parse(from), StoreLocation::parse(to));
    let contents = read_contents(&from)?;
    write_contents(&to, &contents)?;
    print(&format!(
        "copied {} hosts, {} address changes, {} TXT names and {} acme-dns accounts from {} to {}\n",
        contents.hosts.len(),
        contents.history.len(),
        contents.txt.len(),
        contents.accounts.len(),
        from.shown(),
        to.shown(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_table_aligns_columns() {
        let name = Name::parse("kitchen-pc").unwrap();
        let record = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(0));
        let table = list_table([(&name, &record)].into_iter());
        assert_eq!(
            table,
            "HOST        IPV4         IPV6  LAST SEEN             LAST CHANGE\n\
             kitchen-pc  203.0.113.7  -     1970-01-01T00:00:00Z  1970-01-01T00:00:00Z\n"
        );
    }
}
