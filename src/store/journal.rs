//! The journal entries' binary codec: a commit's records and its address changes as
//! blobs, and back.
//!
//! Pure: bytes in, values out; no SQL, no I/O. A blob that does not decode means a damaged
//! store, so decoding never panics, whatever the bytes, and every value has one encoding
//! (`encode(decode(blob)) == blob` whenever `decode` succeeds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{HistoryRow, LoggedChange};
use crate::model::name::{Name, NameError};
use crate::model::record::{Record, Seen, Time};

/// Why a journal blob does not decode: the store that holds it is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("truncated record")]
    Truncated,
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u8),
    #[error("name not UTF-8")]
    NameNotUtf8,
    #[error("bad host name {name:?}: {source}")]
    BadName { name: String, source: NameError },
    #[error("bad address length {0}")]
    BadAddressLength(u8),
}

/// Flags of a record's encoding in the journal.
const HAS_V4: u8 = 1;
const HAS_V6: u8 = 2;
const HAS_SIGNED: u8 = 4;
const OFFLINE: u8 = 8;

/// Encodes records for one journal entry: per record, the name's length (1 byte) and
/// bytes, `first_seen`, a flags byte, then the IPv4 address (4 bytes) with its last-seen
/// and last-change times, the IPv6 address (16 bytes) with its two times, and
/// `signed_at`, each only if present (the flags say which, and whether the host is
/// offline). Times are i64 microseconds, big-endian.
pub fn encode_records<'a>(
    records: impl ExactSizeIterator<Item = (&'a Name, &'a Record)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 64);
    for (name, record) in records {
        let name = name.as_str().as_bytes();
        // A Name is at most 253 bytes.
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&record.first_seen.as_micros().to_be_bytes());
        let flags = record.v4.map_or(0, |_| HAS_V4)
            | record.v6.map_or(0, |_| HAS_V6)
            | record.signed_at.map_or(0, |_| HAS_SIGNED)
            | if record.offline { OFFLINE } else { 0 };
        out.push(flags);
        if let Some(seen) = record.v4 {
            encode_seen(
                &mut out,
                &seen.addr.octets(),
                seen.last_seen,
                seen.last_change,
            );
        }
        if let Some(seen) = record.v6 {
            encode_seen(
                &mut out,
                &seen.addr.octets(),
                seen.last_seen,
                seen.last_change,
            );
        }
        if let Some(signed_at) = record.signed_at {
            out.extend_from_slice(&signed_at.as_micros().to_be_bytes());
        }
    }
    out
}

fn encode_seen(out: &mut Vec<u8>, octets: &[u8], last_seen: Time, last_change: Time) {
    out.extend_from_slice(octets);
    out.extend_from_slice(&last_seen.as_micros().to_be_bytes());
    out.extend_from_slice(&last_change.as_micros().to_be_bytes());
}

/// Reads what [`encode_records`] wrote.
///
/// # Errors
/// The first thing in `blob` that is not an encoded record.
pub fn decode_records(mut blob: &[u8]) -> Result<Vec<(Name, Record)>, JournalError> {
    /// One family's address and times, when `present`.
    fn seen<A: From<[u8; N]>, const N: usize>(
        blob: &mut &[u8],
        present: bool,
    ) -> Result<Option<Seen<A>>, JournalError> {
        if !present {
            return Ok(None);
        }
        let octets: [u8; N] = take(blob)?;
        let (last_seen, last_change) = (time(blob)?, time(blob)?);
        Ok(Some(Seen {
            addr: A::from(octets),
            last_seen,
            last_change,
        }))
    }
    let mut records = Vec::new();
    while !blob.is_empty() {
        let name = name(&mut blob)?;
        let first_seen = time(&mut blob)?;
        let [flags] = take(&mut blob)?;
        if flags & !(HAS_V4 | HAS_V6 | HAS_SIGNED | OFFLINE) != 0 {
            return Err(JournalError::UnknownFlags(flags));
        }
        let v4 = seen::<Ipv4Addr, 4>(&mut blob, flags & HAS_V4 != 0)?;
        let v6 = seen::<Ipv6Addr, 16>(&mut blob, flags & HAS_V6 != 0)?;
        let signed_at = if flags & HAS_SIGNED != 0 {
            Some(time(&mut blob)?)
        } else {
            None
        };
        records.push((
            name,
            Record {
                first_seen,
                v4,
                v6,
                signed_at,
                offline: flags & OFFLINE != 0,
            },
        ));
    }
    Ok(records)
}

/// Encodes a turn's address changes for its journal entry: per change, its history id
/// (i64), the name's length (1 byte) and bytes, the time (i64 microseconds), and the
/// address's length (4 or 16) and octets; integers big-endian.
pub fn encode_changes(changes: &[LoggedChange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.len() * 48);
    for LoggedChange { id, change } in changes {
        out.extend_from_slice(&id.to_be_bytes());
        let name = change.name.as_str().as_bytes();
        // A Name is at most 253 bytes.
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&change.at.as_micros().to_be_bytes());
        match change.addr {
            IpAddr::V4(addr) => {
                out.push(4);
                out.extend_from_slice(&addr.octets());
            }
            IpAddr::V6(addr) => {
                out.push(16);
                out.extend_from_slice(&addr.octets());
            }
        }
    }
    out
}

/// Reads what [`encode_changes`] wrote.
///
/// # Errors
/// The first thing in `blob` that is not an encoded change.
pub fn decode_changes(mut blob: &[u8]) -> Result<Vec<LoggedChange>, JournalError> {
    let mut changes = Vec::new();
    while !blob.is_empty() {
        let id = i64::from_be_bytes(take(&mut blob)?);
        let name = name(&mut blob)?;
        let at = time(&mut blob)?;
        let addr = match take(&mut blob)? {
            [4] => IpAddr::from(take::<4>(&mut blob)?),
            [16] => IpAddr::from(take::<16>(&mut blob)?),
            [len] => return Err(JournalError::BadAddressLength(len)),
        };
        changes.push(LoggedChange {
            id,
            change: HistoryRow { name, at, addr },
        });
    }
    Ok(changes)
}

/// The next `N` bytes.
fn take<const N: usize>(blob: &mut &[u8]) -> Result<[u8; N], JournalError> {
    let (head, rest) = blob
        .split_first_chunk::<N>()
        .ok_or(JournalError::Truncated)?;
    *blob = rest;
    Ok(*head)
}

fn time(blob: &mut &[u8]) -> Result<Time, JournalError> {
    Ok(Time::from_micros(i64::from_be_bytes(take(blob)?)))
}

/// A host name: its length (1 byte) and bytes.
fn name(blob: &mut &[u8]) -> Result<Name, JournalError> {
    let [len] = take(blob)?;
    let len = usize::from(len);
    if blob.len() < len {
        return Err(JournalError::Truncated);
    }
    let (name, rest) = blob.split_at(len);
    *blob = rest;
    let name = std::str::from_utf8(name).map_err(|_| JournalError::NameNotUtf8)?;
    Name::parse(name).map_err(|source| JournalError::BadName {
        name: name.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encode(records: &[(Name, Record)]) -> Vec<u8> {
        encode_records(records.iter().map(|(name, record)| (name, record)))
    }

    #[test]
    fn journal_records_round_trip() {
        let mut both = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(-5));
        both.apply("2001:db8::1".parse().unwrap(), Time::from_micros(i64::MAX));
        both.signed_at = Some(Time::from_micros(42));
        let mut v6_only = Record::new("::1".parse().unwrap(), Time::from_micros(1));
        v6_only.offline = true;
        let records = vec![
            (Name::parse("kitchen-pc").unwrap(), both),
            (Name::parse(&"k".repeat(63)).unwrap(), v6_only),
        ];
        assert_eq!(decode_records(&encode(&records)).unwrap(), records);
    }

    #[test]
    fn journal_changes_round_trip_and_damaged_ones_are_errors() {
        let changes = vec![
            LoggedChange {
                id: 1,
                change: HistoryRow {
                    name: Name::parse("Kitchen-PC").unwrap(),
                    at: Time::from_micros(-5),
                    addr: "203.0.113.7".parse().unwrap(),
                },
            },
            LoggedChange {
                id: i64::MAX,
                change: HistoryRow {
                    name: Name::parse(&"k".repeat(63)).unwrap(),
                    at: Time::from_micros(i64::MAX),
                    addr: "2001:db8::1".parse().unwrap(),
                },
            },
        ];
        let blob = encode_changes(&changes);
        assert_eq!(decode_changes(&blob).unwrap(), changes);
        for len in 1..blob.len() {
            let res = decode_changes(&blob[..len]);
            assert!(
                res.is_err() || len == 8 + 1 + 10 + 8 + 5,
                "{len} bytes decoded: {res:?}"
            );
        }
        let mut bad_length = blob.clone();
        bad_length[8 + 1 + 10 + 8] = 6;
        assert_eq!(
            decode_changes(&bad_length),
            Err(JournalError::BadAddressLength(6))
        );
    }

    #[test]
    fn damaged_journal_records_are_errors() {
        let records = vec![(
            Name::parse("pc").unwrap(),
            Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(1)),
        )];
        let blob = encode(&records);
        for len in 0..blob.len() {
            let res = decode_records(&blob[..len]);
            assert!(len == 0 || res.is_err(), "{len} bytes decoded: {res:?}");
        }
        let mut bad_flags = blob.clone();
        bad_flags[3 + 8] = 0x80;
        assert_eq!(
            decode_records(&bad_flags),
            Err(JournalError::UnknownFlags(0x80))
        );
        let mut bad_name = blob.clone();
        bad_name[1] = b'!';
        assert_eq!(
            decode_records(&bad_name).unwrap_err().to_string(),
            "bad host name \"!c\": character '!' is not allowed (letters, digits, \"-\", \"_\", \".\")"
        );
        bad_name[1] = 0xff;
        assert_eq!(decode_records(&bad_name), Err(JournalError::NameNotUtf8));
    }

    /// Valid names: labels of letters (some not ASCII, some capital), digits, `-`, `_`.
    fn any_name() -> impl Strategy<Value = Name> {
        "[a-zA-Z0-9äÄİß_-]{1,20}(\\.[a-zA-Z0-9_-]{1,63}){0,3}"
            .prop_filter_map("a valid name", |text| Name::parse(&text).ok())
    }

    fn any_time() -> impl Strategy<Value = Time> {
        any::<i64>().prop_map(Time::from_micros)
    }

    fn any_seen<A: std::fmt::Debug + Arbitrary>() -> impl Strategy<Value = Option<Seen<A>>> {
        proptest::option::of((any::<A>(), any_time(), any_time()).prop_map(
            |(addr, last_seen, last_change)| Seen {
                addr,
                last_seen,
                last_change,
            },
        ))
    }

    fn any_record() -> impl Strategy<Value = Record> {
        (
            any_time(),
            any_seen::<Ipv4Addr>(),
            any_seen::<Ipv6Addr>(),
            proptest::option::of(any_time()),
            any::<bool>(),
        )
            .prop_map(|(first_seen, v4, v6, signed_at, offline)| Record {
                first_seen,
                v4,
                v6,
                signed_at,
                offline,
            })
    }

    fn any_change() -> impl Strategy<Value = LoggedChange> {
        (any::<i64>(), any_name(), any_time(), any::<IpAddr>()).prop_map(|(id, name, at, addr)| {
            LoggedChange {
                id,
                change: HistoryRow { name, at, addr },
            }
        })
    }

    /// Names compare without case: the spelling must survive too.
    fn spelled(records: &[(Name, Record)]) -> Vec<(String, Record)> {
        records
            .iter()
            .map(|(name, record)| (name.as_str().to_string(), *record))
            .collect()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_decode_to_their_one_encoding(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(records) = decode_records(&bytes) {
                prop_assert_eq!(encode(&records), bytes.clone());
            }
            if let Ok(changes) = decode_changes(&bytes) {
                prop_assert_eq!(encode_changes(&changes), bytes);
            }
        }

        #[test]
        fn records_round_trip(
            records in proptest::collection::vec((any_name(), any_record()), 0..8),
        ) {
            let decoded = decode_records(&encode(&records)).unwrap();
            prop_assert_eq!(spelled(&decoded), spelled(&records));
        }

        #[test]
        fn changes_round_trip(changes in proptest::collection::vec(any_change(), 0..8)) {
            let decoded = decode_changes(&encode_changes(&changes)).unwrap();
            let spellings = |changes: &[LoggedChange]| -> Vec<String> {
                changes.iter().map(|logged| logged.change.name.as_str().to_string()).collect()
            };
            prop_assert_eq!(spellings(&decoded), spellings(&changes));
            prop_assert_eq!(decoded, changes);
        }
    }
}
