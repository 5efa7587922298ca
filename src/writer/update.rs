//! Zone updates in the writer's turn: an RFC 2136 UPDATE (or an acme-dns or dyndns2
//! TXT change) applied as a whole or not at all, over what the batch's earlier
//! requests left, and answered after the commit that holds it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Deciding, Job};
use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::model::txt::Txt;
use crate::proto::update::{
    check_prerequisites, NameData, RrType, RrValue, RrsetView, Unmet, UpdatePlan,
};

/// One update of the zone for the writer: changes to names of the zone, checked by the
/// edge against the key's scope, under prerequisites.
pub struct ZoneUpdate {
    pub plan: UpdatePlan,
    /// When the server received it: the time of the addresses it adds.
    pub at: Time,
    /// Called after the commit (`Ok`) or with why the update was not applied.
    pub done: Option<UpdateDone>,
}

/// What the edge does once the writer has decided on an update (answer it). Called on
/// the writer thread: it must not block.
pub type UpdateDone = Box<dyn FnOnce(UpdateOutcome) + Send>;

/// Applied (when its batch committed), or why not.
pub type UpdateOutcome = Result<Time, UpdateRefused>;

/// Why an update was not applied: nothing of it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpdateRefused {
    #[error("a prerequisite does not hold: {0}")]
    Unmet(#[from] Unmet),
    #[error("it would leave a name with more TXT records than dynip keeps")]
    TooManyTxt,
    #[error("it names what cannot be a name of the zone (the apex, or a name not valid)")]
    BadName,
    #[error("the store could not commit it")]
    CommitFailed,
}

/// What the edge does once the writer has kept an account (or not): answer.
pub type RegistrationDone = Box<dyn FnOnce(Result<(), UpdateRefused>) + Send>;

/// A new acme-dns account for the writer to keep.
pub struct Registration {
    pub account: AcmeAccount,
    /// Called after the commit (`Ok`) or with why the account was not kept.
    pub done: Option<RegistrationDone>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("username", &self.account.username)
            .field("txt_name", &self.account.txt_name)
            .finish()
    }
}

impl std::fmt::Debug for ZoneUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneUpdate")
            .field("plan", &self.plan)
            .field("at", &self.at)
            .field("waited_on", &self.done.is_some())
            .finish()
    }
}

impl From<ZoneUpdate> for Job {
    fn from(update: ZoneUpdate) -> Job {
        Job::Update(update)
    }
}

/// The zone as an update's prerequisites see it: the batch's state so far.
struct BatchView<'a, S, L, T, A>(std::cell::RefCell<&'a mut Deciding<S, L, T, A>>);

impl<S, L, T, A> BatchView<'_, S, L, T, A>
where
    S: Copy,
    L: FnMut(&Name) -> Option<(S, Record)>,
    T: FnMut(&Name) -> Vec<Txt>,
    A: FnMut(&Name, Time, Option<&Record>, &Record),
{
    fn data(&self, relative: &str) -> NameData {
        let Ok(name) = Name::parse(relative) else {
            // The apex holds no record an update may name.
            return NameData::default();
        };
        let mut deciding = self.0.borrow_mut();
        NameData {
            record: deciding.current(&name).1,
            txt: deciding.current_txt(&name),
        }
    }
}

impl<S, L, T, A> RrsetView for BatchView<'_, S, L, T, A>
where
    S: Copy,
    L: FnMut(&Name) -> Option<(S, Record)>,
    T: FnMut(&Name) -> Vec<Txt>,
    A: FnMut(&Name, Time, Option<&Record>, &Record),
{
    fn rrset(&self, name: &str, rr_type: RrType) -> Vec<RrValue> {
        self.data(name).rrset(rr_type)
    }

    fn name_in_use(&self, name: &str) -> bool {
        self.data(name).in_use()
    }
}

impl<S, L, T, A> Deciding<S, L, T, A>
where
    S: Copy,
    L: FnMut(&Name) -> Option<(S, Record)>,
    T: FnMut(&Name) -> Vec<Txt>,
    A: FnMut(&Name, Time, Option<&Record>, &Record),
{
    /// Decides one zone update: its prerequisites against the batch's state so far, then
    /// its changes in order on copies of the names' data; if every change applies, the
    /// copies become the batch's state (new addresses go into the history, like a
    /// report's). Else nothing changes.
    pub(crate) fn update(&mut self, update: &ZoneUpdate) {
        let verdict = self.try_update(update);
        self.update_verdicts.push(verdict.map(|()| update.at));
    }

    fn try_update(&mut self, update: &ZoneUpdate) -> Result<(), UpdateRefused> {
        check_prerequisites(
            &update.plan.prerequisites,
            &BatchView(std::cell::RefCell::new(self)),
        )?;
        // The names' data before and after, in the order first changed.
        let mut touched: BTreeMap<Name, (Option<S>, NameData, NameData)> = BTreeMap::new();
        for change in &update.plan.changes {
            let name = Name::parse(change.name()).map_err(|_| UpdateRefused::BadName)?;
            if !touched.contains_key(&name) {
                let (slot, record) = self.current(&name);
                let before = NameData {
                    record,
                    txt: self.current_txt(&name),
                };
                touched.insert(name.clone(), (slot, before.clone(), before));
            }
            let (_, _, after) = touched.get_mut(&name).expect("inserted above");
            after
                .apply(change, update.at)
                .map_err(|_| UpdateRefused::TooManyTxt)?;
        }
        for (name, (slot, before, after)) in touched {
            if after.txt != before.txt {
                self.pending_txt.insert(name.clone(), after.txt);
            }
            let Some(record) = after.record else { continue };
            if before.record == Some(record) {
                continue;
            }
            (self.applied)(&name, update.at, before.record.as_ref(), &record);
            let old = before.record;
            let new_v4 = record
                .v4
                .filter(|seen| old.and_then(|old| old.v4).map(|old| old.addr) != Some(seen.addr));
            let new_v6 = record
                .v6
                .filter(|seen| old.and_then(|old| old.v6).map(|old| old.addr) != Some(seen.addr));
            if let Some(seen) = new_v4 {
                self.log_change(&name, update.at, IpAddr::V4(seen.addr));
            }
            if let Some(seen) = new_v6 {
                self.log_change(&name, update.at, IpAddr::V6(seen.addr));
            }
            self.pending.insert(name, (slot, record));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::model::txt::MAX_TXT_PER_NAME;
    use crate::proto::update::{Prerequisite, RrChange};
    use crate::writer::decide::Decided;

    fn at(secs: i64) -> Time {
        Time::from_micros(secs * 1_000_000)
    }

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    fn token(text: &str) -> Txt {
        Txt::from_text(text).unwrap()
    }

    fn update(prerequisites: Vec<Prerequisite>, changes: Vec<RrChange>) -> ZoneUpdate {
        ZoneUpdate {
            plan: UpdatePlan {
                prerequisites,
                changes,
            },
            at: at(100),
            done: None,
        }
    }

    fn add(host: &str, value: RrValue) -> RrChange {
        RrChange::Add {
            name: host.to_owned(),
            value,
            ttl: 60,
        }
    }

    /// Decides `updates` in order over a zone where `pc` has 192.0.2.1 (slot 0) and
    /// `_acme-challenge.pc` the token "old"; returns what was decided and the hosts the
    /// callback saw change.
    fn decide_updates(updates: &[ZoneUpdate]) -> (Decided<usize>, Vec<String>) {
        let hosts = HashMap::from([(
            name("pc"),
            (0usize, Record::new("192.0.2.1".parse().unwrap(), at(1))),
        )]);
        let txt = HashMap::from([(name("_acme-challenge.pc"), vec![token("old")])]);
        let mut seen = Vec::new();
        let mut deciding = Deciding::new(
            |name: &Name| hosts.get(name).copied(),
            |name: &Name| txt.get(name).cloned().unwrap_or_default(),
            50,
            |name: &Name, _, _: Option<&Record>, _: &Record| seen.push(name.to_string()),
        );
        for update in updates {
            deciding.update(update);
        }
        let decided = deciding.finish(3);
        (decided, seen)
    }

    #[test]
    fn a_delete_then_add_replaces_the_address_and_logs_it() {
        // ddclient's protocol=nsupdate: delete the RRset, add the new address.
        let (decided, seen) = decide_updates(&[update(
            vec![],
            vec![
                RrChange::DeleteRrset {
                    name: "pc".into(),
                    rr_type: RrType::A,
                },
                add("pc", RrValue::A("198.51.100.7".parse().unwrap())),
            ],
        )]);
        assert_eq!(decided.update_verdicts, [Ok(at(100))]);
        assert_eq!(seen, ["pc"]);
        let (host, entry) = &decided.records[0];
        assert_eq!((host.as_str(), decided.slots[0]), ("pc", Some(0)));
        assert_eq!(entry.record.v4.unwrap().addr.to_string(), "198.51.100.7");
        assert_eq!(decided.history.len(), 1);
        assert_eq!(decided.history[0].id, 50);
        assert!(decided.txt.is_empty());
    }

    #[test]
    fn txt_records_are_added_and_deleted_as_sets() {
        let challenge = "_acme-challenge.pc";
        let (decided, seen) = decide_updates(&[
            update(
                vec![],
                vec![
                    add(challenge, RrValue::Txt(token("a"))),
                    add(challenge, RrValue::Txt(token("b"))),
                    add(challenge, RrValue::Txt(token("a"))),
                ],
            ),
            update(
                vec![],
                vec![RrChange::DeleteRr {
                    name: challenge.into(),
                    value: RrValue::Txt(token("old")),
                }],
            ),
        ]);
        assert_eq!(decided.update_verdicts, [Ok(at(100)), Ok(at(100))]);
        assert!(seen.is_empty(), "no host changed");
        assert!(decided.records.is_empty() && decided.history.is_empty());
        assert_eq!(
            decided.txt,
            [(name(challenge), vec![token("a"), token("b")])]
        );
    }

    #[test]
    fn an_update_whose_prerequisite_fails_changes_nothing() {
        let (decided, _) = decide_updates(&[
            update(
                vec![Prerequisite::NameNotInUse("pc".into())],
                vec![add("pc", RrValue::A("198.51.100.7".parse().unwrap()))],
            ),
            update(
                vec![Prerequisite::RrsetIs(
                    "_acme-challenge.pc".into(),
                    RrType::Txt,
                    vec![RrValue::Txt(token("old"))],
                )],
                vec![RrChange::DeleteName { name: "pc".into() }],
            ),
        ]);
        assert_eq!(
            decided.update_verdicts,
            [Err(UpdateRefused::Unmet(Unmet::YxDomain)), Ok(at(100))]
        );
        // The second deleted the host's address: it stays known, with none.
        let (_, entry) = &decided.records[0];
        assert_eq!((entry.record.v4, entry.record.v6), (None, None));
        assert!(decided.history.is_empty());
    }

    #[test]
    fn a_later_update_sees_an_earlier_ones_changes() {
        let (decided, _) = decide_updates(&[
            update(
                vec![],
                vec![add("nas", RrValue::Aaaa("2001:db8::5".parse().unwrap()))],
            ),
            update(
                vec![Prerequisite::RrsetExists("nas".into(), RrType::Aaaa)],
                vec![add("nas", RrValue::A("192.0.2.9".parse().unwrap()))],
            ),
        ]);
        assert_eq!(decided.update_verdicts, [Ok(at(100)), Ok(at(100))]);
        let (host, entry) = &decided.records[0];
        assert_eq!((host.as_str(), decided.slots[0]), ("nas", None));
        assert!(entry.record.v4.is_some() && entry.record.v6.is_some());
        assert_eq!(decided.history.len(), 2);
    }

    #[test]
    fn too_many_txt_records_or_the_apex_refuse_the_whole_update() {
        let mut changes: Vec<RrChange> = (0..MAX_TXT_PER_NAME)
            .map(|idx| add("_acme-challenge.pc", RrValue::Txt(token(&idx.to_string()))))
            .collect();
        changes.insert(0, add("tv", RrValue::A("192.0.2.8".parse().unwrap())));
        let (decided, _) = decide_updates(&[
            update(vec![], changes),
            update(vec![], vec![add("", RrValue::Txt(token("apex")))]),
        ]);
        assert_eq!(
            decided.update_verdicts,
            [Err(UpdateRefused::TooManyTxt), Err(UpdateRefused::BadName)]
        );
        assert!(decided.records.is_empty() && decided.txt.is_empty());
    }

    #[test]
    fn acme_dns_keeps_the_latest_two_tokens() {
        let rotate = |text: &str| RrChange::Rotate {
            name: "_acme-challenge.pc".into(),
            txt: token(text),
            keep: 2,
        };
        let (decided, _) = decide_updates(&[
            update(vec![], vec![rotate("one")]),
            update(vec![], vec![rotate("two")]),
        ]);
        assert_eq!(
            decided.txt,
            [(name("_acme-challenge.pc"), vec![token("one"), token("two")])]
        );
    }
}
