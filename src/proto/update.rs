//! RFC 2136 UPDATE: a message's zone, prerequisites and changes, read as types
//! ([`UpdatePlan`]), with the RFC's checks of their form (§3.1, §3.2, §3.4.1); the rule
//! of the prerequisites ([`check_prerequisites`], §3.2.5) against a view of the zone
//! ([`RrsetView`]); and what a change does to a name's data ([`NameData::apply`]).
//!
//! dynip keeps A, AAAA and TXT records: a change of any other type is refused. A host
//! has one address per family, so adding an A or AAAA record replaces the host's address
//! of that family, as a report would. Which key may change which name, and the
//! atomicity of a whole update, are the caller's. Pure: a parsed message and the
//! zone's origin in; a plan or the response code to refuse it with out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name as DnsName, RData, Record, RecordData, RecordType};

use crate::model::record::{Record as HostRecord, Time};
use crate::model::txt::{Txt, MAX_TXT_PER_NAME};

/// The types an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RrType {
    A,
    Aaaa,
    Txt,
}

impl RrType {
    fn of(rtype: RecordType) -> Option<RrType> {
        match rtype {
            RecordType::A => Some(RrType::A),
            RecordType::AAAA => Some(RrType::Aaaa),
            RecordType::TXT => Some(RrType::Txt),
            _ => None,
        }
    }
}

/// One record's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RrValue {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// One TXT record.
    Txt(Txt),
}

impl RrValue {
    pub fn rr_type(&self) -> RrType {
        match self {
            RrValue::A(_) => RrType::A,
            RrValue::Aaaa(_) => RrType::Aaaa,
            RrValue::Txt(_) => RrType::Txt,
        }
    }

    /// The value of `rdata`: FORMERR for data of no type dynip keeps, REFUSED for a TXT
    /// record larger than dynip keeps.
    fn of(rdata: &RData) -> Result<RrValue, ResponseCode> {
        match rdata {
            RData::A(a) => Ok(RrValue::A(a.0)),
            RData::AAAA(aaaa) => Ok(RrValue::Aaaa(aaaa.0)),
            RData::TXT(txt) => Txt::from_strings(txt.txt_data())
                .map(RrValue::Txt)
                .map_err(|_| ResponseCode::Refused),
            _ => Err(ResponseCode::FormErr),
        }
    }
}

/// A prerequisite (RFC 2136 §2.4). Names are relative to the zone, lowercase (empty:
/// the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prerequisite {
    /// "Name is in use": some RR at the name.
    NameInUse(String),
    /// "Name is not in use".
    NameNotInUse(String),
    /// "RRset exists (value independent)".
    RrsetExists(String, RrType),
    /// "RRset does not exist".
    RrsetDoesNotExist(String, RrType),
    /// "RRset exists (value dependent)": exactly these values.
    RrsetIs(String, RrType, Vec<RrValue>),
}

/// A change (RFC 2136 §2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RrChange {
    /// Add to an RRset.
    Add {
        name: String,
        value: RrValue,
        ttl: u32,
    },
    /// Delete an RRset.
    DeleteRrset { name: String, rr_type: RrType },
    /// Delete all RRsets from a name.
    DeleteName { name: String },
    /// Delete an RR from an RRset.
    DeleteRr { name: String, value: RrValue },
    /// Add a TXT record and keep only the latest `keep` of the name's (acme-dns's
    /// update: the two most recent tokens). Not an UPDATE message's.
    Rotate { name: String, txt: Txt, keep: usize },
}

impl RrChange {
    /// The name it changes.
    pub fn name(&self) -> &str {
        match self {
            RrChange::Add { name, .. }
            | RrChange::DeleteRrset { name, .. }
            | RrChange::DeleteName { name }
            | RrChange::DeleteRr { name, .. }
            | RrChange::Rotate { name, .. } => name,
        }
    }
}

/// An update, read and found well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePlan {
    pub prerequisites: Vec<Prerequisite>,
    pub changes: Vec<RrChange>,
}

/// Reads the update `message` for the zone `origin`.
///
/// # Errors
/// The response code the RFC answers with: FORMERR for a message of the wrong form,
/// NOTAUTH for another zone, NOTZONE for a name outside it, REFUSED for a type dynip
/// does not keep.
pub fn plan(message: &Message, origin: &DnsName) -> Result<UpdatePlan, ResponseCode> {
    if message.op_code() != OpCode::Update {
        return Err(ResponseCode::NotImp);
    }
    // §3.1: one zone, of type SOA.
    let [zone] = message.queries() else {
        return Err(ResponseCode::FormErr);
    };
    if zone.query_type() != RecordType::SOA {
        return Err(ResponseCode::FormErr);
    }
    // Names compare case-insensitively.
    if zone.name() != origin {
        return Err(ResponseCode::NotAuth);
    }
    let zone_class = zone.query_class();
    let relative =
        |record: &Record| relative_name(record.name(), origin).ok_or(ResponseCode::NotZone);
    let mut prerequisites = Vec::new();
    let mut values: Vec<(String, RrType, RrValue)> = Vec::new();
    // §3.2: the prerequisites (the "answer" section of an UPDATE).
    for record in message.answers() {
        let name = relative(record)?;
        if record.ttl() != 0 {
            return Err(ResponseCode::FormErr);
        }
        let rtype = record.record_type();
        let empty = record.data().is_update();
        match record.dns_class() {
            DNSClass::ANY => {
                if !empty {
                    return Err(ResponseCode::FormErr);
                }
                prerequisites.push(match rtype {
                    RecordType::ANY => Prerequisite::NameInUse(name),
                    _ => Prerequisite::RrsetExists(name, known(rtype)?),
                });
            }
            DNSClass::NONE => {
                if !empty {
                    return Err(ResponseCode::FormErr);
                }
                prerequisites.push(match rtype {
                    RecordType::ANY => Prerequisite::NameNotInUse(name),
                    _ => Prerequisite::RrsetDoesNotExist(name, known(rtype)?),
                });
            }
            class if class == zone_class => {
                let value = RrValue::of(record.data())?;
                values.push((name, known(rtype)?, value));
            }
            _ => return Err(ResponseCode::FormErr),
        }
    }
    // Value-dependent prerequisites: one per RRset, with all its values.
    values.sort();
    let mut grouped: Vec<Prerequisite> = Vec::new();
    for (name, rr_type, value) in values {
        match grouped.last_mut() {
            Some(Prerequisite::RrsetIs(last_name, last_type, set))
                if *last_name == name && *last_type == rr_type =>
            {
                if !set.contains(&value) {
                    set.push(value);
                }
            }
            _ => grouped.push(Prerequisite::RrsetIs(name, rr_type, vec![value])),
        }
    }
    prerequisites.extend(grouped);
    // §3.4.1: the changes (the "authority" section of an UPDATE).
    let mut changes = Vec::new();
    for record in message.name_servers() {
        let name = relative(record)?;
        let rtype = record.record_type();
        let empty = record.data().is_update();
        let change = match record.dns_class() {
            class if class == zone_class => {
                if matches!(rtype, RecordType::ANY | RecordType::AXFR | RecordType::IXFR) || empty {
                    return Err(ResponseCode::FormErr);
                }
                known(rtype)?;
                let value = RrValue::of(record.data())?;
                RrChange::Add {
                    name,
                    value,
                    ttl: record.ttl(),
                }
            }
            DNSClass::ANY => {
                if record.ttl() != 0 || !empty {
                    return Err(ResponseCode::FormErr);
                }
                match rtype {
                    RecordType::ANY => RrChange::DeleteName { name },
                    _ => RrChange::DeleteRrset {
                        name,
                        rr_type: known(rtype)?,
                    },
                }
            }
            DNSClass::NONE => {
                if record.ttl() != 0 || empty || rtype == RecordType::ANY {
                    return Err(ResponseCode::FormErr);
                }
                known(rtype)?;
                let value = RrValue::of(record.data())?;
                RrChange::DeleteRr { name, value }
            }
            _ => return Err(ResponseCode::FormErr),
        };
        changes.push(change);
    }
    Ok(UpdatePlan {
        prerequisites,
        changes,
    })
}

/// A type dynip keeps, or REFUSED.
fn known(rtype: RecordType) -> Result<RrType, ResponseCode> {
    RrType::of(rtype).ok_or(ResponseCode::Refused)
}

/// `name` relative to `origin`, lowercase (empty: the apex); `None` outside the zone.
fn relative_name(name: &DnsName, origin: &DnsName) -> Option<String> {
    if !origin.zone_of(name) {
        return None;
    }
    let labels = name.num_labels() - origin.num_labels();
    let relative: Vec<String> = name
        .iter()
        .take(labels as usize)
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect();
    Some(relative.join("."))
}

/// What the prerequisites are checked against: the zone as the update finds it.
pub trait RrsetView {
    /// The values of the RRset at `name` (relative, lowercase) of `rr_type`.
    fn rrset(&self, name: &str, rr_type: RrType) -> Vec<RrValue>;
    /// Whether any RR is at `name`.
    fn name_in_use(&self, name: &str) -> bool;
}

/// A prerequisite that does not hold, named by the response code the RFC answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("a name that must be in use is not (NXDOMAIN)")]
    NxDomain,
    #[error("a name that must not be in use is (YXDOMAIN)")]
    YxDomain,
    #[error("an RRset that must exist does not, or has other values (NXRRSET)")]
    NxRrset,
    #[error("an RRset that must not exist does (YXRRSET)")]
    YxRrset,
}

impl Unmet {
    pub fn rcode(self) -> ResponseCode {
        match self {
            Unmet::NxDomain => ResponseCode::NXDomain,
            Unmet::YxDomain => ResponseCode::YXDomain,
            Unmet::NxRrset => ResponseCode::NXRRSet,
            Unmet::YxRrset => ResponseCode::YXRRSet,
        }
    }
}

/// Checks `prerequisites` in order (RFC 2136 §3.2.5).
///
/// # Errors
/// The first that fails.
pub fn check_prerequisites(
    prerequisites: &[Prerequisite],
    view: &impl RrsetView,
) -> Result<(), Unmet> {
    for prerequisite in prerequisites {
        let holds = match prerequisite {
            Prerequisite::NameInUse(name) => view.name_in_use(name),
            Prerequisite::NameNotInUse(name) => !view.name_in_use(name),
            Prerequisite::RrsetExists(name, rr_type) => !view.rrset(name, *rr_type).is_empty(),
            Prerequisite::RrsetDoesNotExist(name, rr_type) => view.rrset(name, *rr_type).is_empty(),
            Prerequisite::RrsetIs(name, rr_type, values) => {
                let mut have = view.rrset(name, *rr_type);
                let mut want = values.clone();
                have.sort();
                have.dedup();
                want.sort();
                have == want
            }
        };
        if !holds {
            return Err(match prerequisite {
                Prerequisite::NameInUse(_) => Unmet::NxDomain,
                Prerequisite::NameNotInUse(_) => Unmet::YxDomain,
                Prerequisite::RrsetExists(..) | Prerequisite::RrsetIs(..) => Unmet::NxRrset,
                Prerequisite::RrsetDoesNotExist(..) => Unmet::YxRrset,
            });
        }
    }
    Ok(())
}

/// What one name holds that an update may change: the record of the host of that name
/// (its A and AAAA) and its TXT records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameData {
    pub record: Option<HostRecord>,
    pub txt: Vec<Txt>,
}

/// A change that would leave a name with more TXT records than dynip keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {MAX_TXT_PER_NAME} TXT records at one name")]
pub struct TooManyTxt;

impl NameData {
    /// The values of its RRset of `rr_type`.
    pub fn rrset(&self, rr_type: RrType) -> Vec<RrValue> {
        match rr_type {
            RrType::A => self
                .record
                .and_then(|record| record.v4)
                .map(|seen| RrValue::A(seen.addr))
                .into_iter()
                .collect(),
            RrType::Aaaa => self
                .record
                .and_then(|record| record.v6)
                .map(|seen| RrValue::Aaaa(seen.addr))
                .into_iter()
                .collect(),
            RrType::Txt => self.txt.iter().cloned().map(RrValue::Txt).collect(),
        }
    }

    /// Whether any record is at the name.
    pub fn in_use(&self) -> bool {
        !self.txt.is_empty()
            || self
                .record
                .is_some_and(|record| record.v4.is_some() || record.v6.is_some())
    }

    /// Applies `change` (of this name) at `at`. Adding an address is a report of it: a
    /// host's first makes its record, a new one replaces the family's old one. Deleting
    /// addresses leaves the host known, with none. Deleting what is not there, or adding
    /// what is, changes nothing (RFC 2136 §3.4.2).
    ///
    /// # Errors
    /// A TXT record past [`MAX_TXT_PER_NAME`].
    pub fn apply(&mut self, change: &RrChange, at: Time) -> Result<(), TooManyTxt> {
        match change {
            RrChange::Add { value, .. } => match value {
                RrValue::A(addr) => self.report(IpAddr::V4(*addr), at),
                RrValue::Aaaa(addr) => self.report(IpAddr::V6(*addr), at),
                RrValue::Txt(txt) => {
                    if !self.txt.contains(txt) {
                        if self.txt.len() >= MAX_TXT_PER_NAME {
                            return Err(TooManyTxt);
                        }
                        self.txt.push(txt.clone());
                    }
                }
            },
            RrChange::DeleteRrset { rr_type, .. } => self.delete(*rr_type, |_| true),
            RrChange::DeleteName { .. } => {
                for rr_type in [RrType::A, RrType::Aaaa, RrType::Txt] {
                    self.delete(rr_type, |_| true);
                }
            }
            RrChange::DeleteRr { value, .. } => self.delete(value.rr_type(), |have| have == value),
            RrChange::Rotate { txt, keep, .. } => {
                self.txt.retain(|have| have != txt);
                self.txt.push(txt.clone());
                let excess = self
                    .txt
                    .len()
                    .saturating_sub((*keep).clamp(1, MAX_TXT_PER_NAME));
                self.txt.drain(..excess);
            }
        }
        Ok(())
    }

    fn report(&mut self, addr: IpAddr, at: Time) {
        match &mut self.record {
            Some(record) => {
                record.apply(addr, at);
            }
            None => self.record = Some(HostRecord::new(addr, at)),
        }
    }

    /// Deletes the records of `rr_type` that `which` picks.
    fn delete(&mut self, rr_type: RrType, which: impl Fn(&RrValue) -> bool) {
        match rr_type {
            RrType::A => {
                if let Some(record) = &mut self.record {
                    if record.v4.is_some_and(|seen| which(&RrValue::A(seen.addr))) {
                        record.v4 = None;
                    }
                }
            }
            RrType::Aaaa => {
                if let Some(record) = &mut self.record {
                    if record
                        .v6
                        .is_some_and(|seen| which(&RrValue::Aaaa(seen.addr)))
                    {
                        record.v6 = None;
                    }
                }
            }
            RrType::Txt => self.txt.retain(|txt| !which(&RrValue::Txt(txt.clone()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, AAAA, TXT};

    use super::*;

    fn origin() -> DnsName {
        DnsName::from_str("dyn.example.com.").unwrap()
    }

    fn update(zone: &str, prerequisites: Vec<Record>, changes: Vec<Record>) -> Message {
        let mut message = Message::new();
        message
            .set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .add_query(Query::query(
                DnsName::from_str(zone).unwrap(),
                RecordType::SOA,
            ));
        message.add_answers(prerequisites);
        message.add_name_servers(changes);
        // Through the wire and back, as the server reads it.
        Message::from_vec(&message.to_vec().unwrap()).unwrap()
    }

    fn record(name: &str, class: DNSClass, ttl: u32, rdata: RData) -> Record {
        let mut record = Record::from_rdata(DnsName::from_str(name).unwrap(), ttl, rdata);
        record.set_dns_class(class);
        record
    }

    fn empty(name: &str, class: DNSClass, rtype: RecordType) -> Record {
        let mut record = Record::update0(DnsName::from_str(name).unwrap(), 0, rtype);
        record.set_dns_class(class);
        record
    }

    fn txt(parts: &[&str]) -> RData {
        RData::TXT(TXT::new(
            parts.iter().map(|part| part.to_string()).collect(),
        ))
    }

    const CHALLENGE: &str = "_acme-challenge.kitchen-pc.dyn.example.com.";

    #[test]
    fn the_four_changes_and_the_five_prerequisites_are_read() {
        let message = update(
            "dyn.example.com.",
            vec![
                empty(
                    "kitchen-pc.dyn.example.com.",
                    DNSClass::ANY,
                    RecordType::ANY,
                ),
                empty("new.dyn.example.com.", DNSClass::NONE, RecordType::ANY),
                empty("kitchen-pc.dyn.example.com.", DNSClass::ANY, RecordType::A),
                empty(
                    "kitchen-pc.dyn.example.com.",
                    DNSClass::NONE,
                    RecordType::AAAA,
                ),
                record(CHALLENGE, DNSClass::IN, 0, txt(&["b"])),
                record(CHALLENGE, DNSClass::IN, 0, txt(&["a"])),
            ],
            vec![
                record(CHALLENGE, DNSClass::IN, 60, txt(&["token", "more"])),
                empty("kitchen-pc.dyn.example.com.", DNSClass::ANY, RecordType::A),
                empty("old.dyn.example.com.", DNSClass::ANY, RecordType::ANY),
                record(
                    "Kitchen-PC.dyn.example.com.",
                    DNSClass::NONE,
                    0,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
                ),
                record(
                    "kitchen-pc.dyn.example.com.",
                    DNSClass::IN,
                    300,
                    RData::A(A::new(192, 0, 2, 1)),
                ),
            ],
        );
        let plan = plan(&message, &origin()).unwrap();
        let challenge = "_acme-challenge.kitchen-pc".to_string();
        assert_eq!(
            plan.prerequisites,
            [
                Prerequisite::NameInUse("kitchen-pc".into()),
                Prerequisite::NameNotInUse("new".into()),
                Prerequisite::RrsetExists("kitchen-pc".into(), RrType::A),
                Prerequisite::RrsetDoesNotExist("kitchen-pc".into(), RrType::Aaaa),
                Prerequisite::RrsetIs(
                    challenge.clone(),
                    RrType::Txt,
                    vec![
                        RrValue::Txt(Txt::from_text("a").unwrap()),
                        RrValue::Txt(Txt::from_text("b").unwrap())
                    ]
                ),
            ]
        );
        assert_eq!(
            plan.changes,
            [
                RrChange::Add {
                    name: challenge,
                    value: RrValue::Txt(Txt::from_strings(&["token", "more"]).unwrap()),
                    ttl: 60
                },
                RrChange::DeleteRrset {
                    name: "kitchen-pc".into(),
                    rr_type: RrType::A
                },
                RrChange::DeleteName { name: "old".into() },
                RrChange::DeleteRr {
                    name: "kitchen-pc".into(),
                    value: RrValue::Aaaa("2001:db8::7".parse().unwrap())
                },
                RrChange::Add {
                    name: "kitchen-pc".into(),
                    value: RrValue::A([192, 0, 2, 1].into()),
                    ttl: 300
                },
            ]
        );
    }

    #[test]
    fn the_rfc_answers_for_what_is_not_well_formed() {
        let a = || RData::A(A::new(192, 0, 2, 1));
        let add = |name: &str| record(name, DNSClass::IN, 60, a());
        for (message, expect) in [
            // Another zone, or none, or not SOA.
            (
                update("example.org.", vec![], vec![]),
                ResponseCode::NotAuth,
            ),
            (
                update("pc.dyn.example.com.", vec![], vec![]),
                ResponseCode::NotAuth,
            ),
            (
                update("dyn.example.com.", vec![], vec![add("www.example.org.")]),
                ResponseCode::NotZone,
            ),
            // A prerequisite with a TTL, or with data where none belongs.
            (
                update(
                    "dyn.example.com.",
                    vec![record("pc.dyn.example.com.", DNSClass::IN, 5, a())],
                    vec![],
                ),
                ResponseCode::FormErr,
            ),
            (
                update(
                    "dyn.example.com.",
                    vec![record("pc.dyn.example.com.", DNSClass::ANY, 0, a())],
                    vec![],
                ),
                ResponseCode::FormErr,
            ),
            // Deleting with a TTL; deleting one RR without its value.
            (
                update(
                    "dyn.example.com.",
                    vec![],
                    vec![record("pc.dyn.example.com.", DNSClass::ANY, 5, a())],
                ),
                ResponseCode::FormErr,
            ),
            (
                update(
                    "dyn.example.com.",
                    vec![],
                    vec![empty("pc.dyn.example.com.", DNSClass::NONE, RecordType::A)],
                ),
                ResponseCode::FormErr,
            ),
            // A type dynip does not keep.
            (
                update(
                    "dyn.example.com.",
                    vec![],
                    vec![empty("pc.dyn.example.com.", DNSClass::ANY, RecordType::MX)],
                ),
                ResponseCode::Refused,
            ),
        ] {
            assert_eq!(plan(&message, &origin()), Err(expect), "{message:?}");
        }
        let mut query = update("dyn.example.com.", vec![], vec![]);
        query.set_op_code(OpCode::Query);
        assert_eq!(plan(&query, &origin()), Err(ResponseCode::NotImp));
        // The zone's name in any case.
        assert!(plan(
            &update("DYN.Example.COM.", vec![], vec![add("pc.dyn.example.com.")]),
            &origin()
        )
        .is_ok());
    }

    /// A zone for the prerequisites: name -> values.
    struct View(BTreeMap<&'static str, Vec<RrValue>>);

    impl RrsetView for View {
        fn rrset(&self, name: &str, rr_type: RrType) -> Vec<RrValue> {
            self.0
                .get(name)
                .map(|values| {
                    values
                        .iter()
                        .filter(|value| value.rr_type() == rr_type)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        }

        fn name_in_use(&self, name: &str) -> bool {
            self.0.contains_key(name)
        }
    }

    #[test]
    fn prerequisites_hold_or_name_the_one_that_does_not() {
        let token = |text: &str| RrValue::Txt(Txt::from_text(text).unwrap());
        let view = View(BTreeMap::from([
            ("pc", vec![RrValue::A([192, 0, 2, 1].into())]),
            ("_acme-challenge.pc", vec![token("a"), token("b")]),
        ]));
        let name = |name: &str| name.to_string();
        for (prerequisite, expect) in [
            (Prerequisite::NameInUse(name("pc")), Ok(())),
            (Prerequisite::NameInUse(name("nas")), Err(Unmet::NxDomain)),
            (Prerequisite::NameNotInUse(name("nas")), Ok(())),
            (Prerequisite::NameNotInUse(name("pc")), Err(Unmet::YxDomain)),
            (Prerequisite::RrsetExists(name("pc"), RrType::A), Ok(())),
            (
                Prerequisite::RrsetExists(name("pc"), RrType::Aaaa),
                Err(Unmet::NxRrset),
            ),
            (
                Prerequisite::RrsetDoesNotExist(name("pc"), RrType::Aaaa),
                Ok(()),
            ),
            (
                Prerequisite::RrsetDoesNotExist(name("pc"), RrType::A),
                Err(Unmet::YxRrset),
            ),
            (
                Prerequisite::RrsetIs(
                    name("_acme-challenge.pc"),
                    RrType::Txt,
                    vec![token("b"), token("a")],
                ),
                Ok(()),
            ),
            (
                Prerequisite::RrsetIs(name("_acme-challenge.pc"), RrType::Txt, vec![token("a")]),
                Err(Unmet::NxRrset),
            ),
        ] {
            assert_eq!(
                check_prerequisites(std::slice::from_ref(&prerequisite), &view),
                expect,
                "{prerequisite:?}"
            );
        }
    }

    proptest::proptest! {
        /// Any bytes that parse as a message: a plan or a response code, never a panic.
        #[test]
        fn arbitrary_updates_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 12..400)) {
            let mut bytes = bytes;
            // An UPDATE's opcode, so that most inputs get past the first check.
            bytes[2] = (bytes[2] & 0x87) | (5 << 3);
            if let Ok(message) = Message::from_vec(&bytes) {
                let _ = plan(&message, &origin());
            }
        }
    }
}
