//! A batch's decision, as a pure function of the batch and the current records: the
//! replay rule, `good` or `nochg`, offline, the address changes. Both writers decide
//! through [`Deciding`]; the loops only move the jobs and the answers.

use super::*;

/// A batch's reports, decided: the records they change and their history, and which
/// reports the replay rule refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decided<S> {
    /// Each changed host's new record, once, whatever the number of its reports.
    pub records: Vec<(Name, Entry)>,
    /// Where each record's host lives in the table (`None`: a new host).
    pub slots: Vec<Option<S>>,
    /// The batch's address changes, in arrival order, with their history ids.
    pub history: Vec<LoggedChange>,
    /// Per report: refused by the replay rule, or else whether it changed its host.
    pub verdicts: Vec<Verdict>,
    /// The names whose TXT records changed, with their whole new sets, in name order.
    pub txt: Vec<(Name, Vec<Txt>)>,
    /// Per zone update: applied, or why not.
    pub update_verdicts: Vec<UpdateOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Replayed,
    /// A new address, or into or out of offline: dyndns2's `good`.
    Changed,
    /// Only the last-seen time moved: `nochg`.
    Unchanged,
}

/// Applies a batch to copies of the current records, in arrival order (a report sees
/// what the batch's earlier reports did to its host): the replay rule (a signed report's
/// client time must be later than the host's `signed_at`), good or nochg, offline, and the
/// address changes, numbered from `next_history_id`. `lookup` finds a host's record
/// and where it lives (`S`, the table's slot); the records come out with `seq` and dirty.
/// `applied` sees each report that is not refused, with its host's record before (`None`:
/// a new host) and after it.
#[cfg(test)]
pub(crate) fn decide<S: Copy>(
    batch: &[Report],
    lookup: impl FnMut(&Name) -> Option<(S, Record)>,
    next_history_id: i64,
    seq: i64,
    applied: impl FnMut(&Name, Time, Option<&Record>, &Record),
) -> Decided<S> {
    let mut deciding = Deciding::new(lookup, |_: &Name| Vec::new(), next_history_id, applied);
    for report in batch {
        deciding.report(report);
    }
    deciding.finish(seq)
}

/// A batch being decided: the records and TXT sets it changed so far, over the table's
/// (`lookup`, `lookup_txt`), so that each request sees what the earlier ones did.
pub(crate) struct Deciding<S, L, T, A> {
    pub(super) lookup: L,
    pub(super) lookup_txt: T,
    pub(super) applied: A,
    pub(super) next_history_id: i64,
    pub(super) pending: HashMap<Name, (Option<S>, Record)>,
    pub(super) pending_txt: HashMap<Name, Vec<Txt>>,
    pub(super) history: Vec<LoggedChange>,
    pub(super) verdicts: Vec<Verdict>,
    pub(super) update_verdicts: Vec<UpdateOutcome>,
}

impl<S, L, T, A> Deciding<S, L, T, A>
where
    S: Copy,
    L: FnMut(&Name) -> Option<(S, Record)>,
    T: FnMut(&Name) -> Vec<Txt>,
    A: FnMut(&Name, Time, Option<&Record>, &Record),
{
    pub(crate) fn new(lookup: L, lookup_txt: T, next_history_id: i64, applied: A) -> Self {
        Deciding {
            lookup,
            lookup_txt,
            applied,
            next_history_id,
            pending: HashMap::new(),
            pending_txt: HashMap::new(),
            history: Vec::new(),
            verdicts: Vec::new(),
            update_verdicts: Vec::new(),
        }
    }

    /// A host's record as the batch has it so far, and where it lives.
    pub(super) fn current(&mut self, name: &Name) -> (Option<S>, Option<Record>) {
        match self.pending.get(name) {
            Some(&(slot, record)) => (slot, Some(record)),
            None => match (self.lookup)(name) {
                Some((slot, record)) => (Some(slot), Some(record)),
                None => (None, None),
            },
        }
    }

    /// A name's TXT records as the batch has them so far.
    pub(super) fn current_txt(&mut self, name: &Name) -> Vec<Txt> {
        match self.pending_txt.get(name) {
            Some(txt) => txt.clone(),
            None => (self.lookup_txt)(name),
        }
    }

    /// Records a change of `addr` for the history.
    pub(super) fn log_change(&mut self, name: &Name, at: Time, addr: IpAddr) {
        self.history.push(LoggedChange {
            id: self.next_history_id + self.history.len() as i64,
            change: HistoryRow {
                name: name.clone(),
                at,
                addr: addr.to_canonical(),
            },
        });
    }

    pub(crate) fn report(&mut self, report: &Report) {
        let (slot, current) = self.current(&report.name);
        if let (Some(signed_at), Some(record)) = (report.signed_at, &current) {
            if !record.is_fresh(signed_at) {
                self.verdicts.push(Verdict::Replayed);
                return;
            }
        }
        let (mut record, change, was_offline) = match current {
            Some(mut record) => {
                let was_offline = record.offline;
                let change = record.apply(report.addr, report.at);
                (record, change, was_offline)
            }
            None => (
                Record::new(report.addr, report.at),
                Change::NewAddress,
                report.offline,
            ),
        };
        if report.signed_at.is_some() {
            record.signed_at = report.signed_at;
        }
        record.offline = report.offline;
        (self.applied)(&report.name, report.at, current.as_ref(), &record);
        self.verdicts.push(
            if change == Change::NewAddress || was_offline != report.offline {
                Verdict::Changed
            } else {
                Verdict::Unchanged
            },
        );
        self.pending.insert(report.name.clone(), (slot, record));
        if change == Change::NewAddress {
            self.log_change(&report.name, report.at, report.addr);
        }
    }

    /// The batch decided; the records come out with `seq` and dirty.
    pub(crate) fn finish(self, seq: i64) -> Decided<S> {
        let dirty = true;
        let (slots, records) = self
            .pending
            .into_iter()
            .map(|(name, (slot, record))| (slot, (name, Entry { record, seq, dirty })))
            .unzip();
        let mut txt: Vec<(Name, Vec<Txt>)> = self.pending_txt.into_iter().collect();
        txt.sort_by(|(one, _), (other, _)| one.cmp(other));
        Decided {
            records,
            slots,
            history: self.history,
            verdicts: self.verdicts,
            txt,
            update_verdicts: self.update_verdicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Changed, Replayed, Unchanged};

    fn secs(secs: i64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    /// A host in the table before the batch: name, address, last report (s), the client's
    /// time of its last signed report (s), offline.
    type KnownHost = (&'static str, &'static str, i64, Option<i64>, bool);

    /// A report: host, address, receive time (s), the client's time if signed (s), offline.
    fn report(name: &str, addr: &str, at: i64, signed_at: Option<i64>, offline: bool) -> Report {
        Report {
            name: Name::parse(name).unwrap(),
            addr: addr.parse().unwrap(),
            at: secs(at),
            signed_at: signed_at.map(secs),
            offline,
            done: None,
        }
    }

    fn unsigned(name: &str, addr: &str, at: i64) -> Report {
        report(name, addr, at, None, false)
    }

    fn signed(name: &str, addr: &str, at: i64, signed_at: i64) -> Report {
        report(name, addr, at, Some(signed_at), false)
    }

    /// A record as the tests compare it: the name as spelled, the host's slot (its index
    /// in the table), the IPv4 and IPv6 addresses, the client's time of the last signed report (s), offline.
    type Shown<S> = (S, Option<usize>, Option<S>, Option<S>, Option<i64>, bool);

    /// Decides `batch` over a table of `known` hosts, with history ids from 100 and
    /// journal entry 7, and compares each report's verdict, the address changes as
    /// (host, address, time in s), and the records (by name).
    fn check(
        known: &[KnownHost],
        batch: &[Report],
        verdicts: &[Verdict],
        history: &[(&str, &str, i64)],
        records: &[Shown<&str>],
    ) {
        let table: HashMap<Name, (usize, Record)> = known
            .iter()
            .enumerate()
            .map(|(idx, &(name, addr, at, signed_at, offline))| {
                let mut record = Record::new(addr.parse().unwrap(), secs(at));
                record.signed_at = signed_at.map(secs);
                record.offline = offline;
                (Name::parse(name).unwrap(), (idx, record))
            })
            .collect();
        let decided = decide(
            batch,
            |name| table.get(name).copied(),
            100,
            7,
            |_, _, _, _| {},
        );
        let what = format!("{batch:?} over {known:?}");
        assert_eq!(decided.verdicts, verdicts, "verdicts of {what}");
        let expect: Vec<LoggedChange> = history
            .iter()
            .enumerate()
            .map(|(idx, &(name, addr, at))| LoggedChange {
                id: 100 + idx as i64,
                change: HistoryRow {
                    name: Name::parse(name).unwrap(),
                    at: secs(at),
                    addr: addr.parse().unwrap(),
                },
            })
            .collect();
        assert_eq!(decided.history, expect, "history of {what}");
        let mut shown: Vec<Shown<String>> = decided
            .slots
            .iter()
            .zip(&decided.records)
            .map(|(&slot, (name, entry))| {
                assert_eq!((entry.seq, entry.dirty), (7, true), "{name}'s entry");
                let record = &entry.record;
                (
                    name.as_str().to_string(),
                    slot,
                    record.v4.map(|seen| seen.addr.to_string()),
                    record.v6.map(|seen| seen.addr.to_string()),
                    record.signed_at.map(|at| at.as_micros() / 1_000_000),
                    record.offline,
                )
            })
            .collect();
        shown.sort();
        let expect: Vec<Shown<String>> = records
            .iter()
            .map(|&(name, slot, v4, v6, signed_at, offline)| {
                (
                    name.to_string(),
                    slot,
                    v4.map(str::to_string),
                    v6.map(str::to_string),
                    signed_at,
                    offline,
                )
            })
            .collect();
        assert_eq!(shown, expect, "records of {what}");
    }

    #[test]
    fn a_new_host_is_changed_and_its_address_goes_into_the_history() {
        check(
            &[],
            &[unsigned("pc", "203.0.113.1", 10)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
        check(
            &[],
            &[signed("pc", "2001:db8::1", 10, 9)],
            &[Changed],
            &[("pc", "2001:db8::1", 10)],
            &[("pc", None, None, Some("2001:db8::1"), Some(9), false)],
        );
        check(
            &[],
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, true)],
        );
        // An IPv4-mapped address is IPv4, in the record and in the history.
        check(
            &[],
            &[unsigned("pc", "::ffff:203.0.113.1", 10)],
            &[Changed],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
    }

    #[test]
    fn the_same_address_is_nochg_and_a_new_one_of_either_family_is_good() {
        let known: &[KnownHost] = &[
            ("laptop", "198.51.100.9", 1, None, false),
            ("pc", "203.0.113.1", 1, None, false),
        ];
        // The record goes to the journal as the report spelled the name.
        check(
            known,
            &[unsigned("PC", "203.0.113.1", 10)],
            &[Unchanged],
            &[],
            &[("PC", Some(1), Some("203.0.113.1"), None, None, false)],
        );
        check(
            known,
            &[unsigned("pc", "::ffff:203.0.113.1", 10)],
            &[Unchanged],
            &[],
            &[("pc", Some(1), Some("203.0.113.1"), None, None, false)],
        );
        check(
            known,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(1), Some("203.0.113.2"), None, None, false)],
        );
        // The first IPv6 address of a host with IPv4: a change, and the IPv4 stays.
        check(
            known,
            &[unsigned("pc", "2001:db8::1", 10)],
            &[Changed],
            &[("pc", "2001:db8::1", 10)],
            &[(
                "pc",
                Some(1),
                Some("203.0.113.1"),
                Some("2001:db8::1"),
                None,
                false,
            )],
        );
    }

    #[test]
    fn a_signed_report_needs_a_client_time_later_than_the_hosts() {
        let known: &[KnownHost] = &[("pc", "203.0.113.1", 1, Some(50), false)];
        let replayed = |report: Report| check(known, &[report], &[Replayed], &[], &[]);
        replayed(signed("pc", "203.0.113.1", 10, 49));
        replayed(signed("pc", "203.0.113.1", 10, 50));
        // A replay changes nothing, not even with a new address.
        replayed(signed("pc", "203.0.113.2", 10, 50));
        check(
            known,
            &[signed("pc", "203.0.113.1", 10, 51)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(51), false)],
        );
        // Unsigned reports are not replays, and keep the signed time.
        check(
            known,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(0), Some("203.0.113.2"), None, Some(50), false)],
        );
        // A host that never signed takes any time.
        check(
            &[("pc", "203.0.113.1", 1, None, false)],
            &[signed("pc", "203.0.113.1", 10, -5)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(-5), false)],
        );
    }

    #[test]
    fn going_offline_and_coming_back_are_changes() {
        let online: &[KnownHost] = &[("pc", "203.0.113.1", 1, None, false)];
        let offline: &[KnownHost] = &[("pc", "203.0.113.1", 1, None, true)];
        check(
            online,
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, true)],
        );
        check(
            offline,
            &[report("pc", "203.0.113.1", 10, None, true)],
            &[Unchanged],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, true)],
        );
        check(
            offline,
            &[unsigned("pc", "203.0.113.1", 10)],
            &[Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, None, false)],
        );
        check(
            offline,
            &[unsigned("pc", "203.0.113.2", 10)],
            &[Changed],
            &[("pc", "203.0.113.2", 10)],
            &[("pc", Some(0), Some("203.0.113.2"), None, None, false)],
        );
    }

    #[test]
    fn reports_of_one_host_in_one_batch_are_decided_in_arrival_order() {
        let known: &[KnownHost] = &[("pc", "203.0.113.1", 1, Some(50), false)];
        check(
            &[],
            &[
                unsigned("pc", "203.0.113.1", 10),
                unsigned("pc", "203.0.113.2", 11),
            ],
            &[Changed, Changed],
            &[("pc", "203.0.113.1", 10), ("pc", "203.0.113.2", 11)],
            &[("pc", None, Some("203.0.113.2"), None, None, false)],
        );
        check(
            &[],
            &[
                unsigned("pc", "203.0.113.1", 10),
                unsigned("PC", "203.0.113.1", 11),
            ],
            &[Changed, Unchanged],
            &[("pc", "203.0.113.1", 10)],
            &[("pc", None, Some("203.0.113.1"), None, None, false)],
        );
        // The second of two reports with one client time is a replay of the first.
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 60),
                signed("pc", "203.0.113.2", 11, 60),
            ],
            &[Unchanged, Replayed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(60), false)],
        );
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 61),
                signed("pc", "203.0.113.1", 11, 60),
            ],
            &[Unchanged, Replayed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(61), false)],
        );
        check(
            known,
            &[
                signed("pc", "203.0.113.1", 10, 60),
                signed("pc", "203.0.113.2", 11, 61),
            ],
            &[Unchanged, Changed],
            &[("pc", "203.0.113.2", 11)],
            &[("pc", Some(0), Some("203.0.113.2"), None, Some(61), false)],
        );
        check(
            known,
            &[
                report("pc", "203.0.113.1", 10, None, true),
                unsigned("pc", "203.0.113.1", 11),
            ],
            &[Changed, Changed],
            &[],
            &[("pc", Some(0), Some("203.0.113.1"), None, Some(50), false)],
        );
        // Changes of several hosts are numbered in arrival order.
        check(
            known,
            &[
                unsigned("tv", "198.51.100.1", 10),
                unsigned("pc", "2001:db8::1", 11),
                unsigned("tv", "198.51.100.2", 12),
            ],
            &[Changed, Changed, Changed],
            &[
                ("tv", "198.51.100.1", 10),
                ("pc", "2001:db8::1", 11),
                ("tv", "198.51.100.2", 12),
            ],
            &[
                (
                    "pc",
                    Some(0),
                    Some("203.0.113.1"),
                    Some("2001:db8::1"),
                    Some(50),
                    false,
                ),
                ("tv", None, Some("198.51.100.2"), None, None, false),
            ],
        );
    }
}
