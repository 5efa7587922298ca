//! The original's JSON file into an empty store, once, at the first start.
//!
//! Owns the copy kept beside the file (`PATH.orig`) and the choice among the original's
//! duplicate spellings of a name. Must not read or parse the file (`edge::export` does)
//! nor import into a store that holds anything (the caller checks `Store::is_empty`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{HistoryRow, StoreError};
use crate::model::name::Name;
use crate::model::record::Record;

/// Imports the original's file at `path`, read into `hosts` (and `skipped`, why each other
/// entry was not), into the empty store, after keeping a copy of the file beside itself
/// (`PATH.orig`, never overwritten): entries that could not be imported are still in the
/// copy when the export replaces the file.
///
/// # Errors
/// When the copy cannot be written, or the store cannot commit the import (then nothing
/// is imported).
pub fn import_original(
    path: &Path,
    hosts: &[(Name, Record)],
    skipped: &[String],
    import: impl FnOnce(&[(Name, Record)], &[HistoryRow]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut backup = path.as_os_str().to_owned();
    backup.push(".orig");
    let backup = PathBuf::from(backup);
    if !backup.exists() {
        std::fs::copy(path, &backup).map_err(|source| StoreError::Backup {
            path: backup.clone(),
            source,
        })?;
    }
    for reason in skipped {
        warn!(file = %path.display(), entry = %reason, "entry not imported (kept in the copy)");
    }
    let deduplicated = deduplicate(hosts);
    import(&deduplicated.hosts, &deduplicated.history)?;
    warn!(
        file = %path.display(),
        n_hosts = deduplicated.hosts.len(),
        n_skipped = skipped.len(),
        copy = %backup.display(),
        "imported the original DynIP client log into the store"
    );
    Ok(())
}

/// What the original's entries make in the store.
#[derive(Debug, PartialEq, Eq)]
struct Deduplicated {
    /// One record per name, in name order.
    hosts: Vec<(Name, Record)>,
    /// Every entry's latest address, as it spelled its name, oldest first.
    history: Vec<HistoryRow>,
}

/// The original compared names as bytes, so a renamed machine may have left two
/// spellings of one name: keep the record reported last (the first of equals), under the
/// spelling met first. The history keeps every entry's address.
fn deduplicate(hosts: &[(Name, Record)]) -> Deduplicated {
    let mut latest: BTreeMap<&Name, &Record> = BTreeMap::new();
    for (name, record) in hosts {
        match latest.get(name) {
            Some(kept) if kept.last_seen() >= record.last_seen() => {}
            _ => {
                // The map keeps the key it has: the spelling met first.
                latest.insert(name, record);
            }
        }
    }
    // The map goes before the history is built: at 1,000,000 hosts the two together
    // raised the start-up peak by 26 MiB.
    let kept: Vec<(Name, Record)> = latest
        .into_iter()
        .map(|(name, record)| (name.clone(), *record))
        .collect();
    let mut history: Vec<HistoryRow> = hosts
        .iter()
        .filter_map(|(name, record)| {
            let (addr, at) = record.latest()?;
            Some(HistoryRow {
                name: name.clone(),
                at,
                addr,
            })
        })
        .collect();
    history.sort_by_key(|change| change.at);
    Deduplicated {
        hosts: kept,
        history,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::record::Time;

    /// An entry of the original's file: name as spelled, address, time (µs).
    type ImportRow = (&'static str, &'static str, i64);

    /// Deduplicates `entries` and compares what is kept, and the history, with the same
    /// shape.
    fn check(entries: &[ImportRow], hosts: &[ImportRow], history: &[ImportRow]) {
        let parse = |&(name, addr, at): &ImportRow| {
            let addr: IpAddr = addr.parse().unwrap();
            (Name::parse(name).unwrap(), addr, Time::from_micros(at))
        };
        let entries: Vec<(Name, Record)> = entries
            .iter()
            .map(parse)
            .map(|(name, addr, at)| (name, Record::new(addr, at)))
            .collect();
        let deduplicated = deduplicate(&entries);
        let kept: Vec<(String, IpAddr, Time)> = deduplicated
            .hosts
            .iter()
            .map(|(name, record)| {
                let (addr, at) = record.latest().unwrap();
                (name.as_str().to_string(), addr, at)
            })
            .collect();
        let expect: Vec<(String, IpAddr, Time)> = hosts
            .iter()
            .map(parse)
            .map(|(name, addr, at)| (name.as_str().to_string(), addr, at))
            .collect();
        assert_eq!(kept, expect, "hosts of {entries:?}");
        let changes: Vec<(String, IpAddr, Time)> = deduplicated
            .history
            .iter()
            .map(|row| (row.name.as_str().to_string(), row.addr, row.at))
            .collect();
        let expect: Vec<(String, IpAddr, Time)> = history
            .iter()
            .map(parse)
            .map(|(name, addr, at)| (name.as_str().to_string(), addr, at))
            .collect();
        assert_eq!(changes, expect, "history of {entries:?}");
    }

    #[test]
    fn distinct_names_are_kept_in_name_order_with_their_history_by_time() {
        check(
            &[("pc", "203.0.113.1", 20), ("laptop", "2001:db8::1", 10)],
            &[("laptop", "2001:db8::1", 10), ("pc", "203.0.113.1", 20)],
            &[("laptop", "2001:db8::1", 10), ("pc", "203.0.113.1", 20)],
        );
        check(&[], &[], &[]);
    }

    #[test]
    fn of_two_spellings_the_record_reported_last_is_kept_under_the_first_spelling() {
        // The later record second, then first in the file.
        check(
            &[("PC", "203.0.113.1", 10), ("pc", "203.0.113.2", 20)],
            &[("PC", "203.0.113.2", 20)],
            &[("PC", "203.0.113.1", 10), ("pc", "203.0.113.2", 20)],
        );
        check(
            &[("pc", "203.0.113.2", 20), ("PC", "203.0.113.1", 10)],
            &[("pc", "203.0.113.2", 20)],
            &[("PC", "203.0.113.1", 10), ("pc", "203.0.113.2", 20)],
        );
        // Reported at the same time: the first in the file; the history keeps the file's
        // order for equal times.
        check(
            &[
                ("Pc", "203.0.113.1", 10),
                ("pC", "203.0.113.2", 10),
                ("PC", "203.0.113.3", 5),
            ],
            &[("Pc", "203.0.113.1", 10)],
            &[
                ("PC", "203.0.113.3", 5),
                ("Pc", "203.0.113.1", 10),
                ("pC", "203.0.113.2", 10),
            ],
        );
    }
}
