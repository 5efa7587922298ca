//! The zone: a DNS query's bytes -> the answer's bytes, from the hosts' records.
//!
//! Owns what `dns_zone` contains (`HOST.ZONE` A and AAAA from each host's latest address
//! of each family, TXT records at the names that have them, the SOA and NS at the apex)
//! and every answering rule: NXDOMAIN and
//! NODATA with the SOA in the authority section, the question's case echoed, EDNS(0)
//! buffer sizes and truncation, `ANY` answered with one RRset (RFC 8482), REFUSED outside
//! the zone, FORMERR for what does not parse, and the messages of a zone transfer. Parsing
//! and building is hickory-proto's.
//!
//! Pure: the caller passes the query, the serial, the time and the hosts
//! ([`ZoneSource`]); no sockets, clock or logging. Sockets, transfers' access rules, rate
//! limits and counters are `dns`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name as DnsName, RData, Record as DnsRecord, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use crate::config::DnsConfig;
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::model::txt::Txt;

/// The largest UDP answer we send, and the buffer size our OPT record advertises: the
/// DNS flag day 2020 figure, which fits an unfragmented datagram on every common path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The UDP answer size for a query without EDNS (RFC 1035).
const PLAIN_UDP_PAYLOAD: usize = 512;
/// A transfer message is cut once its records may exceed this many bytes, well under the
/// 65,535 a TCP message can hold even before name compression.
const TRANSFER_MESSAGE_BYTES: usize = 16_384;

/// What the zone answers from: the hosts' records and the TXT records.
pub trait ZoneSource {
    /// The record of the host named `name`.
    fn record(&self, name: &Name) -> Option<Record>;
    /// The TXT records at `name` (empty: none).
    fn txt(&self, name: &Name) -> Vec<Txt>;
    /// Whether some host's name ends in `.NAME` (`relative` is lowercase): then `NAME`
    /// is an empty non-terminal, answered NODATA, not NXDOMAIN (RFC 8020).
    fn has_below(&self, relative: &str) -> bool;
}

/// How the query came, which decides the size limit and whether a transfer may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send nothing: not a query (shorter than a header, or a response).
    Drop,
    /// The answer is in `out`.
    Answer {
        rcode: ResponseCode,
        truncated: bool,
    },
    /// An AXFR or IXFR over TCP: the caller decides whether the source may transfer, then
    /// sends [`Zone::transfer`] or [`Zone::refuse`].
    Transfer { id: u16, query: Query },
}

/// Why a `dns_*` setting cannot make a zone.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("dns_zone is not set")]
    NoZone,
    #[error("{key} {value:?} is not a usable domain name: {reason}")]
    BadName {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// The zone's fixed parts, built once from the config.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex, lowercase, absolute.
    origin: DnsName,
    /// The apex's labels, lowercase, for comparing without allocating.
    origin_labels: Vec<Vec<u8>>,
    ttl: u32,
    /// The TTL of TXT records (`dns_txt_ttl`).
    txt_ttl: u32,
    ns: Vec<DnsName>,
    /// In-zone NS names (relative, lowercase) with the address to answer for them when no
    /// host of that name reports: `dns_listen`'s address, when it is a specific one.
    glue: Vec<(String, DnsName, IpAddr)>,
    soa: SOA,
    /// How long negative answers may be cached: the SOA's minimum (RFC 2308).
    negative_ttl: u32,
    /// Hide addresses not reported for this long (`dns_hide_stale`).
    hide_after: Option<i64>,
}

/// DNS timers are 32-bit seconds; a longer setting is clamped.
fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

fn signed_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

fn absolute(key: &'static str, text: &str) -> Result<DnsName, ZoneError> {
    let mut name = DnsName::from_ascii(text).map_err(|e| ZoneError::BadName {
        key,
        value: text.to_owned(),
        reason: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

impl Zone {
    /// The zone `config` describes, hiding addresses older than `stale_after` when
    /// `dns_hide_stale` is set.
    ///
    /// # Errors
    /// No `dns_zone`, or a name (zone, NS, contact) hickory cannot hold.
    pub fn new(config: &DnsConfig, stale_after: Duration) -> Result<Zone, ZoneError> {
        let zone = config.zone.as_deref().ok_or(ZoneError::NoZone)?;
        let origin = absolute("dns_zone", zone)?;
        let origin_labels = origin.iter().map(|label| label.to_vec()).collect();
        let ns_texts: Vec<String> = if config.ns.is_empty() {
            vec![format!("ns.{zone}")]
        } else {
            config.ns.clone()
        };
        let ns = ns_texts
            .iter()
            .map(|text| absolute("dns_ns", text))
            .collect::<Result<Vec<_>, _>>()?;
        let listen_ip = config
            .listen
            .map(|addr| addr.ip())
            .filter(|ip| !ip.is_unspecified());
        let suffix = format!(".{zone}");
        let glue = match listen_ip {
            Some(ip) => ns_texts
                .iter()
                .zip(&ns)
                .filter_map(|(text, name)| {
                    let relative = text.strip_suffix(&suffix)?;
                    Some((relative.to_owned(), name.clone(), ip))
                })
                .collect(),
            None => Vec::new(),
        };
        let contact = config
            .soa_contact
            .clone()
            .unwrap_or_else(|| format!("hostmaster.{zone}"));
        let soa = SOA::new(
            ns[0].clone(),
            absolute("dns_soa_contact", &contact)?,
            0,
            signed_seconds(config.soa_refresh),
            signed_seconds(config.soa_retry),
            signed_seconds(config.soa_expire),
            seconds(config.soa_minimum),
        );
        Ok(Zone {
            origin,
            origin_labels,
            ttl: seconds(config.ttl),
            txt_ttl: seconds(config.txt_ttl),
            ns,
            glue,
            soa,
            negative_ttl: seconds(config.soa_minimum),
            hide_after: config
                .hide_stale
                .then(|| i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX)),
        })
    }

    /// The apex, absolute and lowercase.
    pub fn origin(&self) -> &DnsName {
        &self.origin
    }

    /// The SOA record with `serial`.
    pub fn soa_record(&self, serial: u32) -> DnsRecord {
        let soa = SOA::new(
            self.soa.mname().clone(),
            self.soa.rname().clone(),
            serial,
            self.soa.refresh(),
            self.soa.retry(),
            self.soa.expire(),
            self.soa.minimum(),
        );
        DnsRecord::from_rdata(self.origin.clone(), self.negative_ttl, RData::SOA(soa))
    }

    /// Answers one query into `out` (cleared first), from `hosts`.
    pub fn respond(
        &self,
        query: &[u8],
        transport: Transport,
        serial: u32,
        now: Time,
        hosts: &impl ZoneSource,
        out: &mut Vec<u8>,
    ) -> Reply {
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(query)) else {
            return Reply::Drop;
        };
        if header.message_type() != MessageType::Query {
            return Reply::Drop;
        }
        let request = match Message::from_vec(query) {
            Ok(request) => request,
            Err(_) => {
                return self.error(
                    header.id(),
                    header.op_code(),
                    None,
                    None,
                    ResponseCode::FormErr,
                    out,
                )
            }
        };
        let edns = request.extensions().as_ref().map(|_| our_edns());
        // Every error answer to the request: its id and EDNS, with what it asked. (Cloning
        // an `Edns` of ours allocates nothing: it has no options.)
        let answer_error = |op_code, question: Option<&Query>, rcode, out: &mut Vec<u8>| {
            let question = question.cloned();
            self.error(request.id(), op_code, question, edns.clone(), rcode, out)
        };
        if request.op_code() != OpCode::Query {
            let question = request.queries().first();
            return answer_error(request.op_code(), question, ResponseCode::NotImp, out);
        }
        let [question] = request.queries() else {
            return answer_error(request.op_code(), None, ResponseCode::FormErr, out);
        };
        if request
            .extensions()
            .as_ref()
            .is_some_and(|edns| edns.version() > 0)
        {
            return answer_error(OpCode::Query, Some(question), ResponseCode::BADVERS, out);
        }
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => match request.extensions() {
                Some(theirs) => usize::from(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
                None => PLAIN_UDP_PAYLOAD,
            },
        };
        // Outside the zone, or not class IN: never an open resolver.
        let relative = match self.relative(question.name()) {
            Some(relative) if question.query_class() == DNSClass::IN => relative,
            _ => return answer_error(OpCode::Query, Some(question), ResponseCode::Refused, out),
        };
        let qtype = question.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            if transport == Transport::Tcp && relative.is_empty() {
                return Reply::Transfer {
                    id: request.id(),
                    query: question.clone(),
                };
            }
            return answer_error(OpCode::Query, Some(question), ResponseCode::Refused, out);
        }

        let mut response = response_to(&request, question.clone(), edns);
        response.set_authoritative(true);
        let owner = question.name().clone();
        let mut found = true;
        if relative.is_empty() {
            match qtype {
                RecordType::SOA | RecordType::ANY => {
                    response.add_answer(self.soa_record(serial));
                }
                RecordType::NS => {
                    for ns in &self.ns {
                        response.add_answer(DnsRecord::from_rdata(
                            owner.clone(),
                            self.negative_ttl.max(self.ttl),
                            RData::NS(NS(ns.clone())),
                        ));
                    }
                    for (_, name, ip) in &self.glue {
                        response.add_additional(address_record(name.clone(), self.ttl, *ip));
                    }
                }
                _ => {}
            }
        } else {
            let name = Name::parse(&relative).ok();
            let (v4, v6) = match &name {
                Some(name) => self.addresses(name, now, hosts),
                None => (None, None),
            };
            // TXT records are read only when asked for, or to tell NODATA from NXDOMAIN.
            let txt = match &name {
                Some(name) if qtype == RecordType::TXT || (v4.is_none() && v6.is_none()) => {
                    hosts.txt(name)
                }
                _ => Vec::new(),
            };
            found = v4.is_some()
                || v6.is_some()
                || !txt.is_empty()
                || hosts.has_below(&relative.to_ascii_lowercase());
            let ttl = self.ttl;
            match qtype {
                RecordType::A => {
                    response.add_answers(v4.map(|ip| address_record(owner, ttl, IpAddr::V4(ip))))
                }
                RecordType::AAAA => {
                    response.add_answers(v6.map(|ip| address_record(owner, ttl, IpAddr::V6(ip))))
                }
                RecordType::TXT => response.add_answers(
                    txt.iter()
                        .map(|txt| txt_record(owner.clone(), self.txt_ttl, txt)),
                ),
                // RFC 8482: one RRset, the IPv4 address when there is one.
                RecordType::ANY => match v4.map(IpAddr::V4).or(v6.map(IpAddr::V6)) {
                    Some(ip) => response.add_answer(address_record(owner, ttl, ip)),
                    None => response.add_answers(
                        txt.iter()
                            .map(|txt| txt_record(owner.clone(), self.txt_ttl, txt)),
                    ),
                },
                _ => &mut response,
            };
        }
        if !found {
            response.set_response_code(ResponseCode::NXDomain);
        }
        if response.answers().is_empty() {
            response.add_name_server(self.soa_record(serial));
        }
        encode_within(response, limit, out)
    }

    /// An answer of `rcode` to a query (REFUSED for a transfer the source may not have).
    pub fn refuse(&self, id: u16, query: Query, out: &mut Vec<u8>) -> Reply {
        self.error(
            id,
            OpCode::Query,
            Some(query),
            None,
            ResponseCode::Refused,
            out,
        )
    }

    fn error(
        &self,
        id: u16,
        op_code: OpCode,
        question: Option<Query>,
        edns: Option<Edns>,
        rcode: ResponseCode,
        out: &mut Vec<u8>,
    ) -> Reply {
        let mut response = Message::error_msg(id, op_code, rcode);
        if let Some(question) = question {
            response.add_query(question);
        }
        if let Some(edns) = edns {
            response.set_edns(edns);
        }
        encode_within(response, PLAIN_UDP_PAYLOAD, out)
    }

    /// The messages of a transfer of the whole zone at `serial`: SOA, NS, glue, every
    /// host's addresses, every TXT record, SOA (RFC 5936). An IXFR is answered the same
    /// way, as RFC 1995 allows.
    pub fn transfer(
        &self,
        id: u16,
        query: &Query,
        serial: u32,
        now: Time,
        hosts: impl IntoIterator<Item = (Name, Record)>,
        txt: &[(Name, Vec<Txt>)],
    ) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut records: Vec<DnsRecord> = vec![self.soa_record(serial)];
        let mut n_bytes = 0;
        for ns in &self.ns {
            records.push(DnsRecord::from_rdata(
                self.origin.clone(),
                self.negative_ttl.max(self.ttl),
                RData::NS(NS(ns.clone())),
            ));
        }
        let mut glue_needed: Vec<bool> = vec![true; self.glue.len()];
        let flush = |messages: &mut Vec<Vec<u8>>, records: &mut Vec<DnsRecord>| {
            let first = messages.is_empty();
            let mut message = Message::new();
            message
                .set_id(id)
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true);
            if first {
                message.add_query(query.clone());
            }
            message.insert_answers(std::mem::take(records));
            let mut bytes = Vec::with_capacity(TRANSFER_MESSAGE_BYTES * 2);
            // Every record was built from valid names and fits; an error here would be a
            // bug in hickory, and the transfer then ends early (the secondary retries).
            if message.emit(&mut BinEncoder::new(&mut bytes)).is_ok() {
                messages.push(bytes);
            }
        };
        for (name, record) in hosts {
            if let Some(idx) = self
                .glue
                .iter()
                .position(|(relative, _, _)| relative == name.folded())
            {
                glue_needed[idx] = false;
            }
            let (v4, v6) = self.visible(&record, now);
            if v4.is_none() && v6.is_none() {
                continue;
            }
            let Some(owner) = self.absolute(&name) else {
                continue;
            };
            for ip in [v4.map(IpAddr::V4), v6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                n_bytes += owner.len() + 12 + if ip.is_ipv4() { 4 } else { 16 };
                records.push(address_record(owner.clone(), self.ttl, ip));
            }
            if n_bytes > TRANSFER_MESSAGE_BYTES {
                flush(&mut messages, &mut records);
                n_bytes = 0;
            }
        }
        for (name, set) in txt {
            let Some(owner) = self.absolute(name) else {
                continue;
            };
            for txt in set {
                n_bytes += owner.len() + 12 + txt.rdata().len();
                records.push(txt_record(owner.clone(), self.txt_ttl, txt));
            }
            if n_bytes > TRANSFER_MESSAGE_BYTES {
                flush(&mut messages, &mut records);
                n_bytes = 0;
            }
        }
        for ((_, name, ip), needed) in self.glue.iter().zip(glue_needed) {
            if needed {
                records.push(address_record(name.clone(), self.ttl, *ip));
            }
        }
        records.push(self.soa_record(serial));
        flush(&mut messages, &mut records);
        messages
    }

    /// A NOTIFY (RFC 1996) of `serial`: the apex's SOA in the question and the answer.
    pub fn notify(&self, id: u16, serial: u32) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Notify)
            .set_authoritative(true)
            .add_query(Query::query(self.origin.clone(), RecordType::SOA))
            .add_answer(self.soa_record(serial));
        let mut bytes = Vec::with_capacity(128);
        // A question and one SOA of valid names always encode.
        let _ = message.emit(&mut BinEncoder::new(&mut bytes));
        bytes
    }

    /// The query name relative to the apex, lowercase labels joined by dots (empty at the
    /// apex); `None` outside the zone.
    fn relative(&self, name: &DnsName) -> Option<String> {
        let labels: Vec<&[u8]> = name.iter().collect();
        let n_own = labels.len().checked_sub(self.origin_labels.len())?;
        let (own, apex) = labels.split_at(n_own);
        if !apex
            .iter()
            .zip(&self.origin_labels)
            .all(|(label, origin)| label.eq_ignore_ascii_case(origin))
        {
            return None;
        }
        let mut relative = String::new();
        for label in own {
            if !relative.is_empty() {
                relative.push('.');
            }
            // A label that is not UTF-8 names no host; `\u{0}` fails `Name::parse`.
            relative.push_str(std::str::from_utf8(label).unwrap_or("\u{0}"));
        }
        Some(relative)
    }

    /// A host's name under the apex, as the transfer writes it (lowercase).
    fn absolute(&self, name: &Name) -> Option<DnsName> {
        let labels = name.folded().split('.').map(str::as_bytes);
        DnsName::from_labels(labels)
            .ok()?
            .append_domain(&self.origin)
            .ok()
    }

    /// The addresses to answer for a name under the apex.
    fn addresses(
        &self,
        name: &Name,
        now: Time,
        hosts: &impl ZoneSource,
    ) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        if let Some(record) = hosts.record(name) {
            return self.visible(&record, now);
        }
        let glue = self.glue.iter().find(|(glue, _, _)| glue == name.folded());
        match glue.map(|(_, _, ip)| *ip) {
            Some(IpAddr::V4(ip)) => (Some(ip), None),
            Some(IpAddr::V6(ip)) => (None, Some(ip)),
            None => (None, None),
        }
    }

    /// A record's addresses that DNS shows: none while the host is offline (dyndns2
    /// `offline=YES`, until it reports again); else all, or with `dns_hide_stale` those
    /// reported within `stale_after`.
    fn visible(&self, record: &Record, now: Time) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let view = record.dns_view(now, self.hide_after);
        if view.offline {
            (None, None)
        } else {
            (view.v4, view.v6)
        }
    }
}

/// The OPT record of our answers to EDNS queries.
fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
    edns
}

fn response_to(request: &Message, question: Query, edns: Option<Edns>) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_checking_disabled(request.checking_disabled())
        .add_query(question);
    if let Some(edns) = edns {
        response.set_edns(edns);
    }
    response
}

fn address_record(owner: DnsName, ttl: u32, ip: IpAddr) -> DnsRecord {
    let rdata = match ip {
        IpAddr::V4(ip) => RData::A(A(ip)),
        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
    };
    DnsRecord::from_rdata(owner, ttl, rdata)
}

fn txt_record(owner: DnsName, ttl: u32, txt: &Txt) -> DnsRecord {
    DnsRecord::from_rdata(owner, ttl, RData::TXT(TXT::from_bytes(txt.strings())))
}

/// Encodes `response` into `out` within `limit` bytes: whole; else without the additional
/// section (glue may be left out without TC, RFC 2181 9); else only the question and OPT,
/// with TC set so the client retries over TCP.
fn encode_within(mut response: Message, limit: usize, out: &mut Vec<u8>) -> Reply {
    let rcode = response.response_code();
    if encode(&response, out) && out.len() <= limit {
        return Reply::Answer {
            rcode,
            truncated: false,
        };
    }
    if !response.additionals().is_empty() {
        response.take_additionals();
        if encode(&response, out) && out.len() <= limit {
            return Reply::Answer {
                rcode,
                truncated: false,
            };
        }
    }
    let truncated = response.truncate();
    if encode(&truncated, out) && out.len() <= limit {
        return Reply::Answer {
            rcode,
            truncated: true,
        };
    }
    // Only a question longer than the limit gets here; such a query gets no answer.
    out.clear();
    Reply::Drop
}

/// The largest UDP answer to `query`: the size its OPT record advertises, within 512 and
/// [`MAX_UDP_PAYLOAD`], or 512 without one (RFC 1035).
pub fn udp_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|message| {
            message
                .extensions()
                .as_ref()
                .map(|edns| usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)))
        })
        .unwrap_or(PLAIN_UDP_PAYLOAD)
}

/// Replaces an encoded answer with its truncated form (header, question and OPT, TC set);
/// `false` when it does not decode.
pub fn truncate_answer(answer: &mut Vec<u8>) -> bool {
    let Ok(message) = Message::from_vec(answer) else {
        return false;
    };
    encode(&message.truncate(), answer)
}

/// Whether `bytes` answer our NOTIFY `id` (a response with opcode NOTIFY and that id).
pub fn acknowledges_notify(bytes: &[u8], id: u16) -> bool {
    Header::read(&mut BinDecoder::new(bytes)).is_ok_and(|header| {
        header.id() == id
            && header.message_type() == MessageType::Response
            && header.op_code() == OpCode::Notify
    })
}

fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    message.emit(&mut BinEncoder::new(out)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    fn zone(extra: impl FnOnce(&mut DnsConfig)) -> Zone {
        let mut config = DnsConfig {
            listen: Some("127.0.0.1:5353".parse().unwrap()),
            zone: Some("dyn.example.com".to_owned()),
            ..DnsConfig::default()
        };
        extra(&mut config);
        Zone::new(&config, Duration::from_secs(3600)).unwrap()
    }

    /// The zone's hosts and TXT records, for the tests.
    struct Fixture {
        records: BTreeMap<Name, Record>,
        txt: BTreeMap<Name, Vec<Txt>>,
    }

    impl ZoneSource for Fixture {
        fn record(&self, name: &Name) -> Option<Record> {
            self.records.get(name).copied()
        }

        fn txt(&self, name: &Name) -> Vec<Txt> {
            self.txt.get(name).cloned().unwrap_or_default()
        }

        fn has_below(&self, relative: &str) -> bool {
            let suffix = format!(".{relative}");
            let names = self.records.keys().chain(self.txt.keys());
            names.map(Name::folded).any(|name| name.ends_with(&suffix))
        }
    }

    /// Kitchen-PC (both families), old and pi.Garage (IPv4), away (offline), and two
    /// ACME tokens at `_acme-challenge.kitchen-pc` and one at `_acme-challenge.nas`.
    fn hosts() -> Fixture {
        let token = |text: &str| Txt::from_text(text).unwrap();
        let txt = BTreeMap::from([
            (
                Name::parse("_acme-challenge.kitchen-pc").unwrap(),
                vec![token("token-1"), token("token-2")],
            ),
            (
                Name::parse("_acme-challenge.nas").unwrap(),
                vec![token("token-3")],
            ),
        ]);
        let mut hosts = BTreeMap::new();
        let mut pc = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(1_000_000));
        pc.apply("2001:db8::7".parse().unwrap(), Time::from_micros(2_000_000));
        hosts.insert(Name::parse("Kitchen-PC").unwrap(), pc);
        let v4_only = Record::new(
            "198.51.100.1".parse().unwrap(),
            Time::from_micros(1_000_000),
        );
        hosts.insert(Name::parse("old").unwrap(), v4_only);
        hosts.insert(Name::parse("pi.Garage").unwrap(), v4_only);
        let mut away = v4_only;
        away.offline = true;
        hosts.insert(Name::parse("away").unwrap(), away);
        Fixture {
            records: hosts,
            txt,
        }
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(4242)
            .add_query(Query::query(DnsName::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    /// Answers `bytes` over `transport` at second 3 and describes the answer: the rcode,
    /// flags, and each section's records as `name type data`.
    fn answer(zone: &Zone, bytes: &[u8], transport: Transport, now_secs: i64) -> String {
        let hosts = hosts();
        let mut out = Vec::new();
        let reply = zone.respond(
            bytes,
            transport,
            7,
            Time::from_micros(now_secs * 1_000_000),
            &hosts,
            &mut out,
        );
        match reply {
            Reply::Drop => "drop".to_owned(),
            Reply::Transfer { id, query } => format!("transfer {id} {}", query.name()),
            Reply::Answer { rcode, truncated } => {
                let message = Message::from_vec(&out).unwrap();
                assert_eq!(message.response_code(), rcode);
                assert_eq!(message.truncated(), truncated);
                let section = |records: &[DnsRecord]| {
                    records
                        .iter()
                        .map(|record| {
                            format!(
                                "{} {} {}",
                                record.name(),
                                record.record_type(),
                                record.data()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "{rcode}{}{} q=[{}] an=[{}] ns=[{}] ad=[{}] edns={:?}",
                    if message.authoritative() { " aa" } else { "" },
                    if truncated { " tc" } else { "" },
                    message
                        .queries()
                        .iter()
                        .map(|q| format!("{} {}", q.name(), q.query_type()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    section(message.answers()),
                    section(message.name_servers()),
                    section(message.additionals()),
                    message.extensions().as_ref().map(Edns::max_payload),
                )
            }
        }
    }

    fn check(name: &str, qtype: RecordType, expect: &str) {
        let zone = zone(|_| {});
        assert_eq!(
            answer(&zone, &query(name, qtype, None), Transport::Udp, 3),
            expect,
            "{name} {qtype}"
        );
    }

    const SOA: &str =
        "dyn.example.com. SOA ns.dyn.example.com. hostmaster.dyn.example.com. 7 300 60 604800 60";

    #[test]
    fn answers_txt_records_and_nodata_for_what_a_name_lacks() {
        let challenge = "_acme-challenge.kitchen-pc.dyn.example.com.";
        check(challenge, RecordType::TXT, &format!("No Error aa q=[{challenge} TXT] an=[{challenge} TXT token-1, {challenge} TXT token-2] ns=[] ad=[] edns=None"));
        // A name with TXT records only: NODATA for other types, CAA included.
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::CAA,
            RecordType::MX,
        ] {
            check(
                challenge,
                qtype,
                &format!("No Error aa q=[{challenge} {qtype}] an=[] ns=[{SOA}] ad=[] edns=None"),
            );
        }
        // ANY: the TXT RRset when there is no address.
        let nas = "_acme-challenge.nas.dyn.example.com.";
        check(
            nas,
            RecordType::ANY,
            &format!("No Error aa q=[{nas} ANY] an=[{nas} TXT token-3] ns=[] ad=[] edns=None"),
        );
        // `nas` is no host, but a name below it has a TXT record: NODATA (RFC 8020).
        check(
            "nas.dyn.example.com.",
            RecordType::A,
            &format!("No Error aa q=[nas.dyn.example.com. A] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
        // A host without TXT records, and one with addresses: NODATA for TXT and CAA.
        check(
            "kitchen-pc.dyn.example.com.",
            RecordType::TXT,
            &format!(
                "No Error aa q=[kitchen-pc.dyn.example.com. TXT] an=[] ns=[{SOA}] ad=[] edns=None"
            ),
        );
        check(
            "kitchen-pc.dyn.example.com.",
            RecordType::CAA,
            &format!(
                "No Error aa q=[kitchen-pc.dyn.example.com. CAA] an=[] ns=[{SOA}] ad=[] edns=None"
            ),
        );
        check("_acme-challenge.old.dyn.example.com.", RecordType::TXT, &format!("Non-Existent Domain aa q=[_acme-challenge.old.dyn.example.com. TXT] an=[] ns=[{SOA}] ad=[] edns=None"));
        // The SOA asked at a name of the zone: in the authority section, as lego and
        // certbot look the zone up.
        check(
            challenge,
            RecordType::SOA,
            &format!("No Error aa q=[{challenge} SOA] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
    }

    #[test]
    fn answers_hosts_and_the_apex() {
        check("kitchen-pc.dyn.example.com.", RecordType::A, "No Error aa q=[kitchen-pc.dyn.example.com. A] an=[kitchen-pc.dyn.example.com. A 203.0.113.7] ns=[] ad=[] edns=None");
        check("KITCHEN-pc.Dyn.Example.com.", RecordType::AAAA, "No Error aa q=[KITCHEN-pc.Dyn.Example.com. AAAA] an=[KITCHEN-pc.Dyn.Example.com. AAAA 2001:db8::7] ns=[] ad=[] edns=None");
        check(
            "old.dyn.example.com.",
            RecordType::AAAA,
            &format!("No Error aa q=[old.dyn.example.com. AAAA] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
        check(
            "old.dyn.example.com.",
            RecordType::MX,
            &format!("No Error aa q=[old.dyn.example.com. MX] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
        check("nobody.dyn.example.com.", RecordType::A, &format!("Non-Existent Domain aa q=[nobody.dyn.example.com. A] an=[] ns=[{SOA}] ad=[] edns=None"));
        check(
            "dyn.example.com.",
            RecordType::SOA,
            &format!("No Error aa q=[dyn.example.com. SOA] an=[{SOA}] ns=[] ad=[] edns=None"),
        );
        check("dyn.example.com.", RecordType::NS, "No Error aa q=[dyn.example.com. NS] an=[dyn.example.com. NS ns.dyn.example.com.] ns=[] ad=[ns.dyn.example.com. A 127.0.0.1] edns=None");
        check("ns.dyn.example.com.", RecordType::A, "No Error aa q=[ns.dyn.example.com. A] an=[ns.dyn.example.com. A 127.0.0.1] ns=[] ad=[] edns=None");
        check(
            "dyn.example.com.",
            RecordType::A,
            &format!("No Error aa q=[dyn.example.com. A] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
        check("kitchen-pc.dyn.example.com.", RecordType::ANY, "No Error aa q=[kitchen-pc.dyn.example.com. ANY] an=[kitchen-pc.dyn.example.com. A 203.0.113.7] ns=[] ad=[] edns=None");
        check(
            "GARAGE.dyn.example.com.",
            RecordType::A,
            &format!("No Error aa q=[GARAGE.dyn.example.com. A] an=[] ns=[{SOA}] ad=[] edns=None"),
        );
        check("pi.garage.dyn.example.com.", RecordType::A, "No Error aa q=[pi.garage.dyn.example.com. A] an=[pi.garage.dyn.example.com. A 198.51.100.1] ns=[] ad=[] edns=None");
        check(
            "example.com.",
            RecordType::A,
            "Query Refused q=[example.com. A] an=[] ns=[] ad=[] edns=None",
        );
        check(
            "www.example.org.",
            RecordType::A,
            "Query Refused q=[www.example.org. A] an=[] ns=[] ad=[] edns=None",
        );
        check(
            "dyn.example.com.",
            RecordType::AXFR,
            "Query Refused q=[dyn.example.com. AXFR] an=[] ns=[] ad=[] edns=None",
        );
    }

    #[test]
    fn edns_sizes_and_truncation() {
        let many: Vec<String> = (0..40)
            .map(|idx| format!("nameserver-{idx:02}.example.net"))
            .collect();
        let zone = zone(|config| config.ns = many);
        let ns_query = |edns| query("dyn.example.com.", RecordType::NS, edns);
        let plain = answer(&zone, &ns_query(None), Transport::Udp, 3);
        assert!(
            plain.starts_with("No Error aa tc q=[dyn.example.com. NS] an=[] "),
            "{plain}"
        );
        let small = answer(&zone, &ns_query(Some(600)), Transport::Udp, 3);
        assert!(
            small.starts_with("No Error aa tc") && small.ends_with("edns=Some(1232)"),
            "{small}"
        );
        let big = answer(&zone, &ns_query(Some(1232)), Transport::Udp, 3);
        assert!(
            !big.contains(" tc") && big.matches(" NS nameserver-").count() == 40,
            "{big}"
        );
        let tcp = answer(&zone, &ns_query(None), Transport::Tcp, 3);
        assert!(
            !tcp.contains(" tc") && tcp.matches(" NS nameserver-").count() == 40,
            "{tcp}"
        );
        let a = answer(
            &zone,
            &query("old.dyn.example.com.", RecordType::A, Some(4096)),
            Transport::Udp,
            3,
        );
        assert!(a.ends_with("edns=Some(1232)"), "{a}");
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let zone = zone(|_| {});
        assert_eq!(answer(&zone, &[1, 2, 3], Transport::Udp, 3), "drop");
        let mut response = query("old.dyn.example.com.", RecordType::A, None);
        response[2] |= 0x80;
        assert_eq!(
            answer(&zone, &response, Transport::Udp, 3),
            "drop",
            "a response"
        );
        let mut cut = query("old.dyn.example.com.", RecordType::A, None);
        cut.truncate(cut.len() - 3);
        assert_eq!(
            answer(&zone, &cut, Transport::Udp, 3),
            "Form Error q=[] an=[] ns=[] ad=[] edns=None"
        );
        let mut two = Message::new();
        two.add_query(Query::query(
            DnsName::from_ascii("a.dyn.example.com.").unwrap(),
            RecordType::A,
        ));
        two.add_query(Query::query(
            DnsName::from_ascii("b.dyn.example.com.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(
            answer(&zone, &two.to_vec().unwrap(), Transport::Udp, 3),
            "Form Error q=[] an=[] ns=[] ad=[] edns=None"
        );
    }

    #[test]
    fn error_answers_echo_the_id_the_edns_and_the_question() {
        let zone = zone(|_| {});
        let with_edns = |mut message: Message, version: u8| {
            let mut edns = Edns::new();
            edns.set_max_payload(4096).set_version(version);
            message.set_id(4242).set_edns(edns);
            message.to_vec().unwrap()
        };
        let question = |name: &str, qtype| Query::query(DnsName::from_ascii(name).unwrap(), qtype);
        let asking = |name: &str, qtype| {
            let mut message = Message::new();
            message.add_query(question(name, qtype));
            message
        };
        let mut notify = asking("dyn.example.com.", RecordType::SOA);
        notify.set_op_code(OpCode::Notify);
        let mut two = asking("a.dyn.example.com.", RecordType::A);
        two.add_query(question("b.dyn.example.com.", RecordType::A));
        // The rcode as `respond` says and as the wire says (BADVERS is 16: four bits in the
        // header, the rest in the OPT record), the id, the question and our EDNS.
        let describe = |bytes: &[u8]| {
            let mut out = Vec::new();
            let reply = zone.respond(
                bytes,
                Transport::Udp,
                7,
                Time::from_micros(0),
                &hosts(),
                &mut out,
            );
            let Reply::Answer {
                rcode,
                truncated: false,
            } = reply
            else {
                return format!("{reply:?}");
            };
            let message = Message::from_vec(&out).unwrap();
            let queries: Vec<String> = message
                .queries()
                .iter()
                .map(|query| format!("{} {}", query.name(), query.query_type()))
                .collect();
            format!(
                "{rcode:?} {} id={} q=[{}] edns={:?}",
                u16::from(message.response_code()),
                message.id(),
                queries.join(", "),
                message.extensions().as_ref().map(Edns::max_payload),
            )
        };
        for (bytes, expect) in [
            (
                with_edns(notify, 0),
                "NotImp 4 id=4242 q=[dyn.example.com. SOA] edns=Some(1232)",
            ),
            (with_edns(two, 0), "FormErr 1 id=4242 q=[] edns=Some(1232)"),
            (
                with_edns(asking("old.dyn.example.com.", RecordType::A), 1),
                "BADVERS 16 id=4242 q=[old.dyn.example.com. A] edns=Some(1232)",
            ),
            (
                with_edns(asking("www.example.org.", RecordType::A), 0),
                "Refused 5 id=4242 q=[www.example.org. A] edns=Some(1232)",
            ),
            (
                with_edns(asking("dyn.example.com.", RecordType::AXFR), 0),
                "Refused 5 id=4242 q=[dyn.example.com. AXFR] edns=Some(1232)",
            ),
        ] {
            assert_eq!(describe(&bytes), expect);
        }
    }

    #[test]
    fn an_offline_host_does_not_answer() {
        let zone = zone(|_| {});
        let q = query("away.dyn.example.com.", RecordType::A, None);
        assert!(answer(&zone, &q, Transport::Udp, 3).starts_with("Non-Existent Domain"));
    }

    #[test]
    fn stale_addresses_hide_when_asked() {
        let shown = zone(|_| {});
        let hidden = zone(|config| config.hide_stale = true);
        let q = query("old.dyn.example.com.", RecordType::A, None);
        let late = 3601 + 1;
        assert!(answer(&shown, &q, Transport::Udp, late).contains("A 198.51.100.1"));
        assert!(answer(&hidden, &q, Transport::Udp, late).starts_with("Non-Existent Domain"));
        assert!(answer(&hidden, &q, Transport::Udp, 3).contains("A 198.51.100.1"));
    }

    #[test]
    fn transfers_start_over_tcp_and_carry_every_host() {
        let zone = zone(|_| {});
        let q = query("DYN.example.com.", RecordType::AXFR, None);
        assert_eq!(
            answer(&zone, &q, Transport::Tcp, 3),
            "transfer 4242 DYN.example.com."
        );
        let question = Query::query(zone.origin().clone(), RecordType::AXFR);
        let many: Vec<(Name, Record)> = (0..3000)
            .map(|idx| {
                (
                    Name::parse(&format!("host-{idx}")).unwrap(),
                    Record::new(
                        IpAddr::from([10, 0, (idx / 256) as u8, idx as u8]),
                        Time::from_micros(1),
                    ),
                )
            })
            .collect();
        let txt = hosts().txt.into_iter().collect::<Vec<_>>();
        let messages = zone.transfer(9, &question, 7, Time::from_micros(2), many, &txt);
        assert!(messages.len() > 1);
        let records: Vec<DnsRecord> = messages
            .iter()
            .flat_map(|bytes| Message::from_vec(bytes).unwrap().take_answers())
            .collect();
        assert_eq!(
            records.first().map(DnsRecord::record_type),
            Some(RecordType::SOA)
        );
        assert_eq!(
            records.last().map(DnsRecord::record_type),
            Some(RecordType::SOA)
        );
        // SOA, NS, 3000 hosts, 3 TXT records, the glue of ns.dyn.example.com., SOA.
        assert_eq!(records.len(), 3000 + 3 + 4);
        let txt: Vec<String> = records
            .iter()
            .filter(|record| record.record_type() == RecordType::TXT)
            .map(|record| format!("{} {}", record.name(), record.data()))
            .collect();
        assert_eq!(
            txt,
            [
                "_acme-challenge.kitchen-pc.dyn.example.com. token-1",
                "_acme-challenge.kitchen-pc.dyn.example.com. token-2",
                "_acme-challenge.nas.dyn.example.com. token-3"
            ]
        );
        assert!(messages.iter().all(|bytes| bytes.len() < 65_535));
    }

    #[test]
    fn notify_carries_the_serial() {
        let zone = zone(|_| {});
        let bytes = zone.notify(77, 12);
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.op_code(), OpCode::Notify);
        assert_eq!(message.queries()[0].query_type(), RecordType::SOA);
        assert!(message.answers()[0].to_string().contains(" 12 "));
        let mut answer = message.clone();
        answer.set_message_type(MessageType::Response);
        let answer = answer.to_vec().unwrap();
        assert!(acknowledges_notify(&answer, 77));
        assert!(!acknowledges_notify(&answer, 78));
        assert!(!acknowledges_notify(&bytes, 77), "the NOTIFY itself");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let zone = zone(|_| {});
            let hosts = hosts();
            let mut out = Vec::new();
            for transport in [Transport::Udp, Transport::Tcp] {
                let reply = zone.respond(&bytes, transport, 1, Time::from_micros(0), &hosts, &mut out);
                if let Reply::Answer { .. } = reply {
                    prop_assert!(Message::from_vec(&out).is_ok());
                    prop_assert!(transport == Transport::Tcp || out.len() <= usize::from(MAX_UDP_PAYLOAD));
                }
            }
        }

        #[test]
        fn mutated_queries_never_panic(idx in 0usize..64, byte in any::<u8>(), qtype in 0u16..300) {
            let zone = zone(|_| {});
            let hosts = hosts();
            let mut bytes = query("kitchen-pc.dyn.example.com.", RecordType::from(qtype), Some(1232));
            let at = idx % bytes.len();
            bytes[at] = byte;
            let mut out = Vec::new();
            let _ = zone.respond(&bytes, Transport::Udp, 1, Time::from_micros(0), &hosts, &mut out);
        }
    }
}
