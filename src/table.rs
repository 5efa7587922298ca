//! The in-memory table: host name → current record, the truth every read uses.
//!
//! Owns [`Table`], shared by the store's writer (its only mutator) and every reader (the
//! JSON export, and later DNS and HTTP). Readers never touch the store on the hot path.
//! Must not do I/O or hold its lock across any.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::name::Name;
use crate::record::Record;

/// A record with the store's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub record: Record,
    /// The journal sequence number of the last write of this record (0: from the
    /// snapshot). Replaying the journal skips rows at or below it.
    pub seq: i64,
    /// Changed since it was last written to the snapshot: the compaction sweep writes it.
    pub dirty: bool,
}

/// Host name → entry, ordered by name (case-insensitively), so readers can walk it in
/// chunks and resume after the last name they saw.
#[derive(Debug, Default)]
pub struct Table {
    hosts: RwLock<BTreeMap<Name, Entry>>,
    /// Bumped on every change, so a reader can tell whether anything happened since it
    /// last looked (the export does).
    generation: AtomicU64,
}

impl Table {
    pub fn new(hosts: BTreeMap<Name, Entry>) -> Table {
        Table {
            hosts: RwLock::new(hosts),
            generation: AtomicU64::new(0),
        }
    }

    pub fn get(&self, name: &Name) -> Option<Entry> {
        self.read().get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Up to `limit` entries with names after `after` (from the start when `None`), in
    /// order. Holds the read lock only for the copy.
    pub fn chunk_after(&self, after: Option<&Name>, limit: usize) -> Vec<(Name, Entry)> {
        let hosts = self.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        hosts
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(name, entry)| (name.clone(), *entry))
            .collect()
    }

    /// Inserts or replaces entries: the writer's one way in, after its commit.
    pub fn update(&self, entries: impl IntoIterator<Item = (Name, Entry)>) {
        let mut hosts = self.write();
        for (name, entry) in entries {
            hosts.insert(name, entry);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Marks entries clean whose `seq` is still the one the snapshot wrote.
    pub fn mark_clean(&self, written: &[(Name, i64)]) {
        let mut hosts = self.write();
        for (name, seq) in written {
            if let Some(entry) = hosts.get_mut(name) {
                if entry.seq == *seq {
                    entry.dirty = false;
                }
            }
        }
    }

    /// Up to `limit` dirty entries after `after`, scanning at most `scan` entries; returns
    /// them and the last name scanned (`None` when the scan reached the end).
    pub fn dirty_after(
        &self,
        after: Option<&Name>,
        limit: usize,
        scan: usize,
    ) -> (Vec<(Name, Entry)>, Option<Name>) {
        let hosts = self.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut dirty = Vec::new();
        let mut last = None;
        for (n_scanned, (name, entry)) in hosts.range((lower, Bound::Unbounded)).enumerate() {
            if n_scanned == scan || dirty.len() == limit {
                return (dirty, last);
            }
            if entry.dirty {
                dirty.push((name.clone(), *entry));
            }
            last = Some(name.clone());
        }
        (dirty, None)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Name, Entry>> {
        // A poisoned lock means a writer panicked mid-update; the map itself is still a
        // valid map (BTreeMap::insert does not leave it torn), so keep serving it.
        self.hosts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Name, Entry>> {
        self.hosts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Time;

    fn entry(seq: i64, dirty: bool) -> Entry {
        Entry {
            record: Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(1)),
            seq,
            dirty,
        }
    }

    fn names(entries: &[(Name, Entry)]) -> Vec<&str> {
        entries.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn table(spec: &[(&str, bool)]) -> Table {
        let table = Table::default();
        table.update(
            spec.iter()
                .map(|&(name, dirty)| (Name::parse(name).unwrap(), entry(1, dirty))),
        );
        table
    }

    #[test]
    fn chunks_resume_after_the_last_name() {
        let table = table(&[("b", true), ("A", true), ("c", true)]);
        let first = table.chunk_after(None, 2);
        assert_eq!(names(&first), ["A", "b"]);
        let rest = table.chunk_after(Some(&first[1].0), 2);
        assert_eq!(names(&rest), ["c"]);
    }

    #[test]
    fn dirty_scan_is_bounded_and_resumable() {
        let table = table(&[("a", false), ("b", true), ("c", false), ("d", true)]);
        let (dirty, last) = table.dirty_after(None, 10, 2);
        assert_eq!(names(&dirty), ["b"]);
        assert_eq!(last.as_ref().map(Name::as_str), Some("b"));
        let (dirty, last) = table.dirty_after(last.as_ref(), 10, 10);
        assert_eq!(names(&dirty), ["d"]);
        assert_eq!(last, None);
    }

    #[test]
    fn mark_clean_spares_entries_written_since() {
        let table = table(&[("a", true), ("b", true)]);
        let a = Name::parse("a").unwrap();
        let b = Name::parse("b").unwrap();
        table.update([(b.clone(), entry(2, true))]);
        table.mark_clean(&[(a.clone(), 1), (b.clone(), 1)]);
        assert!(!table.get(&a).unwrap().dirty);
        assert!(table.get(&b).unwrap().dirty);
    }
}
