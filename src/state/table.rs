//! The in-memory table: host name → current record, the truth every read uses.
//!
//! Owns [`Table`], shared by the writer (its only mutator) and every reader (the JSON
//! export, DNS, HTTP), with the zone's TXT records and the acme-dns accounts beside the
//! hosts. Readers never touch the store on the hot path. Must not do I/O or
//! hold its lock across any. The zone's serial it carries is [`Serial`]'s.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::model::txt::Txt;
use crate::state::serial::{Serial, Staleness};

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
    /// The zone's serial: when what DNS shows of this table last changed.
    serial: Serial,
    /// With `dns_hide_stale`: DNS hides an address not reported for longer than this (µs).
    hide_after: Option<i64>,
    /// The TXT records, by the name they are at (`_acme-challenge.HOST` mostly): few
    /// beside the hosts, and only read for TXT queries and names that are not hosts.
    txt: RwLock<BTreeMap<Name, Vec<Txt>>>,
    /// Bumped on every change of `txt`'s names, so the DNS face knows to rebuild the
    /// names they make exist.
    txt_generation: AtomicU64,
    /// The acme-dns accounts, by user name.
    accounts: RwLock<HashMap<String, AcmeAccount>>,
}

impl Table {
    pub fn new(loaded: BTreeMap<Name, Entry>) -> Table {
        let entries: Vec<Entry> = loaded.values().copied().collect();
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
            serial: Serial::default(),
            hide_after: None,
            txt: RwLock::default(),
            txt_generation: AtomicU64::new(0),
            accounts: RwLock::default(),
        }
    }

    /// The table with the acme-dns accounts the store holds.
    pub fn with_acme_accounts(self, accounts: Vec<AcmeAccount>) -> Table {
        self.add_acme_accounts(&accounts);
        self
    }

    /// The acme-dns account of `username`.
    pub fn acme_account(&self, username: &str) -> Option<AcmeAccount> {
        super::read(&self.accounts).get(username).cloned()
    }

    /// Adds acme-dns accounts: the writer's way in, after its commit.
    pub fn add_acme_accounts(&self, accounts: &[AcmeAccount]) {
        if accounts.is_empty() {
            return;
        }
        let mut known = super::write(&self.accounts);
        for account in accounts {
            known.insert(account.username.clone(), account.clone());
        }
    }

    /// The table with the TXT records the store holds.
    pub fn with_txt(self, txt: BTreeMap<Name, Vec<Txt>>) -> Table {
        *super::write(&self.txt) = txt;
        self
    }

    /// The TXT records at `name` (empty: none).
    pub fn txt(&self, name: &Name) -> Vec<Txt> {
        super::read(&self.txt)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Every name's TXT records, in name order.
    pub fn all_txt(&self) -> Vec<(Name, Vec<Txt>)> {
        super::read(&self.txt)
            .iter()
            .map(|(name, txt)| (name.clone(), txt.clone()))
            .collect()
    }

    /// Changes with every TXT name added or removed.
    pub fn txt_generation(&self) -> u64 {
        self.txt_generation.load(Ordering::Acquire)
    }

    /// Replaces the TXT records of each name (an empty set removes the name): the
    /// writer's way in, after its commit. The caller notes the change for the serial.
    pub fn set_txt(&self, changes: &[(Name, Vec<Txt>)]) {
        if changes.is_empty() {
            return;
        }
        let mut txt = super::write(&self.txt);
        for (name, set) in changes {
            if set.is_empty() {
                txt.remove(name);
            } else {
                txt.insert(name.clone(), set.clone());
            }
        }
        drop(txt);
        self.txt_generation.fetch_add(1, Ordering::Release);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The table, with DNS hiding addresses not reported for longer than `after`
    /// (`dns_hide_stale`): reports that bring a stale address back change what DNS shows.
    pub fn hiding_stale(mut self, after: Option<std::time::Duration>) -> Table {
        self.hide_after = after.map(|after| i64::try_from(after.as_micros()).unwrap_or(i64::MAX));
        self
    }

    /// Notes that what DNS shows changed at `at` ([`Serial::note_change`]). The server
    /// notes its start, since it cannot know what changed while it was down.
    pub fn note_dns_change(&self, at: Time) {
        self.serial.note_change(at);
    }

    /// Notes a commit on a shared database that changed what DNS shows
    /// ([`Serial::note_commit`]).
    pub fn note_dns_commit(&self, at: Time, now: Time) {
        self.serial.note_commit(at, now);
    }

    /// The zone's SOA serial at `now` ([`Serial::at`]).
    pub fn dns_serial(&self, now: Time) -> u32 {
        self.serial.at(now)
    }

    /// With `dns_hide_stale`, notes every address that went stale by `now` as a change
    /// DNS can see, at the moment it did; returns when the next one will (`None`: none is
    /// fresh, or nothing is hidden). A walk of the whole table under its read lock.
    pub fn note_stale(&self, now: Time) -> Option<Time> {
        let after = self.hide_after?;
        let hosts = self.read();
        let last_seen = hosts.entries.iter().flat_map(|entry| {
            let record = &entry.record;
            [
                record.v4.map(|seen| seen.last_seen),
                record.v6.map(|seen| seen.last_seen),
            ]
            .into_iter()
            .flatten()
        });
        let staleness = Staleness::of(last_seen, after, now);
        drop(hosts);
        if let Some(at) = staleness.went_stale {
            self.note_dns_change(at);
        }
        staleness.next
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

    /// Every entry, in order, `limit` at a time: each chunk is copied under the read lock
    /// and the walk resumes after its last name, so a long walk (the export, a zone
    /// transfer) never holds the lock for more than one chunk and sees each name once.
    pub fn chunks(&self, limit: usize) -> Chunks<'_> {
        Chunks {
            table: self,
            after: None,
            limit,
            done: false,
        }
    }

    /// Inserts or replaces entries; true when that changed what DNS shows.
    pub fn update(&self, entries: impl IntoIterator<Item = (Name, Entry)>) -> bool {
        self.update_found(entries.into_iter().map(|(name, entry)| (None, name, entry)))
    }

    /// Inserts or replaces entries, replacing those with a slot from [`Table::find`] in
    /// place: the writer's way in, after its commit. True when that changed what DNS
    /// shows: the caller then notes the change ([`Table::note_dns_change`]) with the time
    /// after this returns.
    pub fn update_found(
        &self,
        entries: impl IntoIterator<Item = (Option<Slot>, Name, Entry)>,
    ) -> bool {
        let mut hosts = self.write();
        let mut changed = false;
        for (slot, name, entry) in entries {
            match slot {
                Some(slot) => {
                    let current = hosts.entry_mut(slot);
                    // Both seen at the time of the report, so that a stale address
                    // reported again counts as a change.
                    let at = entry.record.last_seen();
                    changed |= current.record.dns_view(at, self.hide_after)
                        != entry.record.dns_view(at, self.hide_after);
                    *current = entry;
                }
                None => {
                    changed = true;
                    hosts.insert(name, entry);
                }
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
        changed
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

    /// Up to `limit` dirty entries after `after`, scanning at most `scan` entries.
    pub fn dirty_after(&self, after: Option<&Name>, limit: usize, scan: usize) -> Dirty {
        let hosts = self.read();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut dirty = Vec::new();
        let mut slots = Vec::new();
        let mut last = None;
        for (n_scanned, (name, &slot)) in hosts.index.range((lower, Bound::Unbounded)).enumerate() {
            if n_scanned == scan || dirty.len() == limit {
                return Dirty {
                    entries: dirty,
                    slots,
                    scanned_to: last,
                };
            }
            let entry = hosts.entry(slot);
            if entry.dirty {
                dirty.push((name.clone(), *entry));
                slots.push(slot);
            }
            last = Some(name.clone());
        }
        Dirty {
            entries: dirty,
            slots,
            scanned_to: None,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Hosts> {
        // BTreeMap::insert does not leave the map torn if it panics.
        super::read(&self.hosts)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Hosts> {
        super::write(&self.hosts)
    }
}

/// What [`Table::dirty_after`] found: the compaction sweep's next chunk.
#[derive(Debug, Default)]
pub struct Dirty {
    /// The dirty entries, in name order.
    pub entries: Vec<(Name, Entry)>,
    /// Where each lives, for [`Table::mark_clean`].
    pub slots: Vec<Slot>,
    /// The last name scanned; `None` when the scan reached the end of the table.
    pub scanned_to: Option<Name>,
}

/// The walk of [`Table::chunks`].
pub struct Chunks<'a> {
    table: &'a Table,
    after: Option<Name>,
    limit: usize,
    done: bool,
}

impl Iterator for Chunks<'_> {
    type Item = Vec<(Name, Entry)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let chunk = self.table.chunk_after(self.after.as_ref(), self.limit);
        match chunk.last() {
            Some((last, _)) => self.after = Some(last.clone()),
            None => {
                self.done = true;
                return None;
            }
        }
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
    fn chunks_walk_every_name_once_in_order() {
        let table = table(&[
            ("a", false),
            ("b", true),
            ("c", false),
            ("d", true),
            ("e", false),
        ]);
        let walked: Vec<Vec<String>> = table
            .chunks(2)
            .map(|chunk| names(&chunk).into_iter().map(str::to_string).collect())
            .collect();
        assert_eq!(walked, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        assert_eq!(Table::default().chunks(2).count(), 0);
    }

    #[test]
    fn dirty_scan_is_bounded_and_resumable() {
        let table = table(&[("a", false), ("b", true), ("c", false), ("d", true)]);
        let first = table.dirty_after(None, 10, 2);
        assert_eq!(names(&first.entries), ["b"]);
        assert_eq!(first.scanned_to.as_ref().map(Name::as_str), Some("b"));
        let second = table.dirty_after(first.scanned_to.as_ref(), 10, 10);
        assert_eq!(names(&second.entries), ["d"]);
        assert_eq!(second.scanned_to, None);
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
    fn only_changes_dns_can_see_count() {
        let table = Table::default();
        let a = Name::parse("a").unwrap();
        assert!(table.update([(a.clone(), entry(1, true))]), "a new host");
        let (slot, mut same) = table.find(&a).unwrap();
        same.seq = 2;
        same.record
            .apply("203.0.113.7".parse().unwrap(), Time::from_micros(5));
        assert!(
            !table.update_found([(Some(slot), a.clone(), same)]),
            "a report of the same address"
        );
        let mut moved = same;
        moved.seq = 3;
        moved
            .record
            .apply("2001:db8::1".parse().unwrap(), Time::from_micros(6));
        assert!(
            table.update_found([(Some(slot), a, moved)]),
            "a new address"
        );
    }

    #[test]
    fn a_stale_address_reported_again_is_a_change_when_stale_ones_are_hidden() {
        let report_again = |table: &Table, at: i64| {
            let a = Name::parse("a").unwrap();
            let (slot, mut again) = table.find(&a).unwrap();
            again
                .record
                .apply("203.0.113.7".parse().unwrap(), Time::from_micros(at));
            table.update_found([(Some(slot), a, again)])
        };
        let hiding = table(&[("a", true)]).hiding_stale(Some(Duration::from_micros(10)));
        assert!(!report_again(&hiding, 11), "10 µs old: still fresh");
        assert!(report_again(&hiding, 22), "11 µs old: it was hidden");
        let showing = table(&[("a", true)]);
        assert!(!report_again(&showing, 1_000), "nothing is hidden");
    }

    #[test]
    fn addresses_going_stale_are_changes_at_the_moment_they_go() {
        let table = table(&[("a", true)]).hiding_stale(Some(Duration::from_secs(10)));
        // `a`'s address was last seen at 1 µs: hidden from 10 s + 2 µs.
        let hidden_at = Time::from_micros(10_000_002);
        assert_eq!(
            table.note_stale(Time::from_micros(5_000_000)),
            Some(hidden_at)
        );
        assert_eq!(table.dns_serial(Time::from_micros(30_000_000)), 0);
        assert_eq!(table.note_stale(Time::from_micros(20_000_000)), None);
        assert_eq!(table.dns_serial(Time::from_micros(30_000_000)), 10);
        let showing = table.hiding_stale(None);
        assert_eq!(showing.note_stale(Time::from_micros(5_000_000)), None);
    }
}
