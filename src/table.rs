//! The in-memory table: host name → current record, the truth every read uses.
//!
//! Owns [`Table`], shared by the store's writer (its only mutator) and every reader (the
//! JSON export, and later DNS and HTTP). Readers never touch the store on the hot path.
//! Must not do I/O or hold its lock across any.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// Where an entry lives in the table: found by one walk of the index, it lets the writer
/// replace the entry after its commit without walking again (the second walk per report
/// was a sixth of the writer's time at 1,000,000 hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

/// The entries, and the index of names into them. Entries are never removed, so a slot
/// stays valid for the table's life.
#[derive(Debug, Default)]
struct Hosts {
    index: BTreeMap<Name, Slot>,
    entries: Vec<Entry>,
}

impl Hosts {
    fn entry(&self, slot: Slot) -> &Entry {
        // Slots are only made by `insert` from the index of a pushed entry.
        &self.entries[slot.0 as usize]
    }

    fn entry_mut(&mut self, slot: Slot) -> &mut Entry {
        &mut self.entries[slot.0 as usize]
    }

    fn insert(&mut self, name: Name, entry: Entry) -> Slot {
        if let Some(&slot) = self.index.get(&name) {
            *self.entry_mut(slot) = entry;
            return slot;
        }
        // More than 4 billion hosts would not fit in memory long before.
        let slot = Slot(u32::try_from(self.entries.len()).expect("fewer than 2^32 hosts"));
        self.entries.push(entry);
        self.index.insert(name, slot);
        slot
    }
}

/// Host name → entry, ordered by name (case-insensitively), so readers can walk it in
/// chunks and resume after the last name they saw.
#[derive(Debug, Default)]
pub struct Table {
    hosts: RwLock<Hosts>,
    /// Bumped on every change, so a reader can tell whether anything happened since it
    /// last looked (the export does).
    generation: AtomicU64,
    /// The journal sequence number of the newest write that changed an address, added a
    /// host or took one offline or back (at load, the newest of any entry): the DNS zone's
    /// serial. It only rises,
    /// also across restarts, since every entry keeps its `seq` in the store.
    address_seq: AtomicI64,
}

impl Table {
    pub fn new(loaded: BTreeMap<Name, Entry>) -> Table {
        let entries: Vec<Entry> = loaded.values().copied().collect();
        let address_seq = entries.iter().map(|entry| entry.seq).max().unwrap_or(0);
        // Collected from sorted names, the index is built with full nodes.
        let index: BTreeMap<Name, Slot> = loaded
            .into_keys()
            .enumerate()
            .map(|(idx, name)| {
                (
                    name,
                    Slot(u32::try_from(idx).expect("fewer than 2^32 hosts")),
                )
            })
            .collect();
        let hosts = Hosts { index, entries };
        Table {
            hosts: RwLock::new(hosts),
            generation: AtomicU64::new(0),
            address_seq: AtomicI64::new(address_seq),
        }
    }

    /// The journal sequence number of the newest write that changed an address or added a
    /// host: rises with every change DNS can see, never goes back.
    pub fn address_seq(&self) -> i64 {
        self.address_seq.load(Ordering::Acquire)
    }

    pub fn get(&self, name: &Name) -> Option<Entry> {
        self.find(name).map(|(_, entry)| entry)
    }

    /// The entry of `name` with the name as the table spells it (as first reported).
    pub fn get_named(&self, name: &Name) -> Option<(Name, Entry)> {
        let hosts = self.read();
        let (spelled, &slot) = hosts.index.get_key_value(name)?;
        Some((spelled.clone(), *hosts.entry(slot)))
    }

    /// The entry of `name` and where it lives, for [`Table::update_found`].
    pub fn find(&self, name: &Name) -> Option<(Slot, Entry)> {
        let hosts = self.read();
        let slot = *hosts.index.get(name)?;
        Some((slot, *hosts.entry(slot)))
    }

    /// The entry at `slot` (from [`Table::find`]): a reader that keeps slots skips the
    /// walk of the index (slots stay valid for the table's life).
    pub fn entry_at(&self, slot: Slot) -> Entry {
        *self.read().entry(slot)
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
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
            .index
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(name, &slot)| (name.clone(), *hosts.entry(slot)))
            .collect()
    }

    /// Inserts or replaces entries.
    pub fn update(&self, entries: impl IntoIterator<Item = (Name, Entry)>) {
        self.update_found(entries.into_iter().map(|(name, entry)| (None, name, entry)));
    }

    /// Inserts or replaces entries, replacing those with a slot from [`Table::find`] in
    /// place: the writer's way in, after its commit.
    pub fn update_found(&self, entries: impl IntoIterator<Item = (Option<Slot>, Name, Entry)>) {
        let mut hosts = self.write();
        let mut address_seq = None;
        for (slot, name, entry) in entries {
            match slot {
                Some(slot) => {
                    let current = hosts.entry_mut(slot);
                    if dns_view(&current.record) != dns_view(&entry.record) {
                        address_seq = address_seq.max(Some(entry.seq));
                    }
                    *current = entry;
                }
                None => {
                    address_seq = address_seq.max(Some(entry.seq));
                    hosts.insert(name, entry);
                }
            }
        }
        if let Some(seq) = address_seq {
            self.address_seq.fetch_max(seq, Ordering::AcqRel);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Marks entries clean whose `seq` is still the one the snapshot wrote.
    pub fn mark_clean(&self, written: &[(Slot, i64)]) {
        let mut hosts = self.write();
        for &(slot, seq) in written {
            let entry = hosts.entry_mut(slot);
            if entry.seq == seq {
                entry.dirty = false;
            }
        }
    }

    /// Up to `limit` dirty entries after `after`, scanning at most `scan` entries; returns
    /// them with their slots, and the last name scanned (`None` when the scan reached the
    /// end).
    #[allow(clippy::type_complexity)]
    pub fn dirty_after(
        &self,
        after: Option<&Name>,
        limit: usize,
        scan: usize,
    ) -> (Vec<(Name, Entry)>, Vec<Slot>, Option<Name>) {
        let hosts = self.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut dirty = Vec::new();
        let mut slots = Vec::new();
        let mut last = None;
        for (n_scanned, (name, &slot)) in hosts.index.range((lower, Bound::Unbounded)).enumerate() {
            if n_scanned == scan || dirty.len() == limit {
                return (dirty, slots, last);
            }
            let entry = hosts.entry(slot);
            if entry.dirty {
                dirty.push((name.clone(), *entry));
                slots.push(slot);
            }
            last = Some(name.clone());
        }
        (dirty, slots, None)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Hosts> {
        // A poisoned lock means a writer panicked mid-update; the map itself is still a
        // valid map (BTreeMap::insert does not leave it torn), so keep serving it.
        self.hosts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Hosts> {
        self.hosts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What DNS answers from a record: its address of each family.
/// What DNS answers from a record: its addresses, unless it went offline.
fn dns_view(record: &Record) -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>, bool) {
    (
        record.v4.map(|seen| seen.addr),
        record.v6.map(|seen| seen.addr),
        record.offline,
    )
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
        let (dirty, _, last) = table.dirty_after(None, 10, 2);
        assert_eq!(names(&dirty), ["b"]);
        assert_eq!(last.as_ref().map(Name::as_str), Some("b"));
        let (dirty, _, last) = table.dirty_after(last.as_ref(), 10, 10);
        assert_eq!(names(&dirty), ["d"]);
        assert_eq!(last, None);
    }

    #[test]
    fn mark_clean_spares_entries_written_since() {
        let table = table(&[("a", true), ("b", true)]);
        let a = Name::parse("a").unwrap();
        let b = Name::parse("b").unwrap();
        table.update([(b.clone(), entry(2, true))]);
        let (slot_a, slot_b) = (table.find(&a).unwrap().0, table.find(&b).unwrap().0);
        table.mark_clean(&[(slot_a, 1), (slot_b, 1)]);
        assert!(!table.get(&a).unwrap().dirty);
        assert!(table.get(&b).unwrap().dirty);
    }

    #[test]
    fn address_seq_follows_address_changes_only() {
        let table = table(&[("a", true)]);
        assert_eq!(table.address_seq(), 1);
        let a = Name::parse("a").unwrap();
        let (slot, mut same) = table.find(&a).unwrap();
        same.seq = 2;
        same.record
            .apply("203.0.113.7".parse().unwrap(), Time::from_micros(5));
        table.update_found([(Some(slot), a.clone(), same)]);
        assert_eq!(table.address_seq(), 1, "a report of the same address");
        let mut moved = same;
        moved.seq = 3;
        moved
            .record
            .apply("2001:db8::1".parse().unwrap(), Time::from_micros(6));
        table.update_found([(Some(slot), a, moved)]);
        assert_eq!(table.address_seq(), 3, "a new address");
    }
}
