//! The store's journal codec (`dynip::store::journal`): a damaged store must never panic
//! the server at start-up.
//!
//! Each input is used twice:
//!
//! 1. As a journal entry's blob, as `Store::load` reads it: `decode_records` and
//!    `decode_changes` must not panic, and whatever decodes must encode to the same bytes
//!    (every value has one encoding).
//! 2. Structure-aware: the bytes drive the building of records and address changes (names
//!    of up to four labels, capitals and non-ASCII letters among them, any times,
//!    addresses of both families), which must decode to themselves, spelling included. A
//!    mutated blob almost never holds a valid name, so without this the code after the
//!    name would rarely run with values worth checking.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dynip::model::name::Name;
use dynip::model::record::{Record, Seen, Time};
use dynip::store::journal::{decode_changes, decode_records, encode_changes, encode_records};
use dynip::store::{HistoryRow, LoggedChange};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// What a name's labels are made of: every kind of character a name may hold.
const NAME_CHARS: &[char] = &['a', 'z', 'K', 'P', '0', '9', '-', '_', 'ä', 'Ä', 'İ', 'ß'];

fn name(input: &mut Unstructured<'_>) -> Result<Option<Name>> {
    let n_labels = input.int_in_range(1..=4)?;
    let mut text = String::new();
    for idx in 0..n_labels {
        if idx > 0 {
            text.push('.');
        }
        for _ in 0..input.int_in_range(1..=64)? {
            text.push(*input.choose(NAME_CHARS)?);
        }
    }
    // Too long a label or name: not a value the journal can hold.
    Ok(Name::parse(&text).ok())
}

fn time(input: &mut Unstructured<'_>) -> Result<Time> {
    Ok(Time::from_micros(input.arbitrary()?))
}

fn seen<A>(
    input: &mut Unstructured<'_>,
    addr: fn(&mut Unstructured<'_>) -> Result<A>,
) -> Result<Option<Seen<A>>> {
    if !input.arbitrary::<bool>()? {
        return Ok(None);
    }
    Ok(Some(Seen {
        addr: addr(input)?,
        last_seen: time(input)?,
        last_change: time(input)?,
    }))
}

fn record(input: &mut Unstructured<'_>) -> Result<Record> {
    Ok(Record {
        first_seen: time(input)?,
        v4: seen(input, |input| Ok(Ipv4Addr::from(input.arbitrary::<u32>()?)))?,
        v6: seen(input, |input| {
            Ok(Ipv6Addr::from(input.arbitrary::<u128>()?))
        })?,
        signed_at: if input.arbitrary()? {
            Some(time(input)?)
        } else {
            None
        },
        offline: input.arbitrary()?,
    })
}

fn change(input: &mut Unstructured<'_>, name: Name) -> Result<LoggedChange> {
    let addr = if input.arbitrary()? {
        IpAddr::V4(Ipv4Addr::from(input.arbitrary::<u32>()?))
    } else {
        IpAddr::V6(Ipv6Addr::from(input.arbitrary::<u128>()?))
    };
    Ok(LoggedChange {
        id: input.arbitrary()?,
        change: HistoryRow {
            name,
            at: time(input)?,
            addr,
        },
    })
}

/// Names compare without case: the spelling must survive too.
fn spelled(records: &[(Name, Record)]) -> Vec<(String, Record)> {
    records
        .iter()
        .map(|(name, record)| (name.as_str().to_string(), *record))
        .collect()
}

/// A record or an address change, built from the input.
enum Value {
    Record(Name, Record),
    Change(LoggedChange),
}

fn value(input: &mut Unstructured<'_>) -> Result<Option<Value>> {
    let Some(name) = name(input)? else {
        return Ok(None);
    };
    Ok(Some(if input.arbitrary()? {
        Value::Change(change(input, name)?)
    } else {
        Value::Record(name, record(input)?)
    }))
}

/// Values built from `data` until it runs out, each kind encoded and decoded again.
fn round_trips(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let mut records = Vec::new();
    let mut changes = Vec::new();
    while !input.is_empty() && records.len() + changes.len() < 64 {
        match value(&mut input) {
            Ok(Some(Value::Record(name, record))) => records.push((name, record)),
            Ok(Some(Value::Change(change))) => changes.push(change),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    let blob = encode_records(records.iter().map(|(name, record)| (name, record)));
    let decoded = decode_records(&blob).expect("encoded records decode");
    assert_eq!(spelled(&decoded), spelled(&records));
    let blob = encode_changes(&changes);
    let decoded = decode_changes(&blob).expect("encoded changes decode");
    assert_eq!(decoded, changes);
    for (decoded, change) in decoded.iter().zip(&changes) {
        assert_eq!(decoded.change.name.as_str(), change.change.name.as_str());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = decode_records(data) {
        let blob = encode_records(records.iter().map(|(name, record)| (name, record)));
        assert_eq!(blob, data, "{records:?} decoded but encodes to other bytes");
    }
    if let Ok(changes) = decode_changes(data) {
        assert_eq!(
            encode_changes(&changes),
            data,
            "{changes:?} decoded but encodes to other bytes"
        );
    }
    round_trips(data);
});
