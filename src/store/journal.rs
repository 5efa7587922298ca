//! The journal entries' binary codec: a commit's records and its address changes as
//! blobs, and back.
//!
//! Pure: bytes in, values out; no SQL, no I/O. A blob that does not decode means a damaged
//! store, so decoding never panics, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{HistoryRow, LoggedChange};
use crate::model::name::Name;
use crate::model::record::{Record, Seen, Time};
use crate::state::table::Entry;

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
pub fn encode_records(records: &[(Name, Entry)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 64);
    for (name, entry) in records {
        let record = &entry.record;
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
pub fn decode_records(mut blob: &[u8]) -> Result<Vec<(Name, Record)>, String> {
    /// One family's address and times, when `present`.
    fn seen<A: From<[u8; N]>, const N: usize>(
        blob: &mut &[u8],
        present: bool,
    ) -> Result<Option<Seen<A>>, String> {
        if !present {
            return Ok(None);
        }
        let octets: [u8; N] = take(blob, N)?.try_into().map_err(|_| "bad address")?;
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
        let flags = take(&mut blob, 1)?[0];
        if flags & !(HAS_V4 | HAS_V6 | HAS_SIGNED | OFFLINE) != 0 {
            return Err(format!("unknown flags {flags:#x}"));
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

/// Decodes what [`encode_changes`] wrote.
pub fn decode_changes(mut blob: &[u8]) -> Result<Vec<LoggedChange>, String> {
    let mut changes = Vec::new();
    while !blob.is_empty() {
        let id: [u8; 8] = take(&mut blob, 8)?.try_into().map_err(|_| "bad id")?;
        let name = name(&mut blob)?;
        let at = time(&mut blob)?;
        let addr = match take(&mut blob, 1)?[0] {
            4 => IpAddr::from(<[u8; 4]>::try_from(take(&mut blob, 4)?).map_err(|_| "bad address")?),
            16 => {
                IpAddr::from(<[u8; 16]>::try_from(take(&mut blob, 16)?).map_err(|_| "bad address")?)
            }
            len => return Err(format!("bad address length {len}")),
        };
        changes.push(LoggedChange {
            id: i64::from_be_bytes(id),
            change: HistoryRow { name, at, addr },
        });
    }
    Ok(changes)
}

fn take<'a>(blob: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if blob.len() < n {
        return Err("truncated record".to_string());
    }
    let (head, rest) = blob.split_at(n);
    *blob = rest;
    Ok(head)
}

fn time(blob: &mut &[u8]) -> Result<Time, String> {
    let bytes: [u8; 8] = take(blob, 8)?.try_into().map_err(|_| "bad time")?;
    Ok(Time::from_micros(i64::from_be_bytes(bytes)))
}

/// A host name: its length (1 byte) and bytes.
fn name(blob: &mut &[u8]) -> Result<Name, String> {
    let len = usize::from(take(blob, 1)?[0]);
    let name = std::str::from_utf8(take(blob, len)?).map_err(|_| "name not UTF-8")?;
    Name::parse(name).map_err(|e| format!("bad host name {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(record: Record) -> Entry {
        Entry {
            record,
            seq: 7,
            dirty: true,
        }
    }

    #[test]
    fn journal_records_round_trip() {
        let mut both = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(-5));
        both.apply("2001:db8::1".parse().unwrap(), Time::from_micros(i64::MAX));
        both.signed_at = Some(Time::from_micros(42));
        let mut v6_only = Record::new("::1".parse().unwrap(), Time::from_micros(1));
        v6_only.offline = true;
        let records = vec![
            (Name::parse("kitchen-pc").unwrap(), entry(both)),
            (Name::parse(&"k".repeat(63)).unwrap(), entry(v6_only)),
        ];
        let decoded = decode_records(&encode_records(&records)).unwrap();
        let expect: Vec<(Name, Record)> = records
            .iter()
            .map(|(name, entry)| (name.clone(), entry.record))
            .collect();
        assert_eq!(decoded, expect);
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
        assert!(decode_changes(&bad_length).is_err());
    }

    #[test]
    fn damaged_journal_records_are_errors() {
        let records = vec![(
            Name::parse("pc").unwrap(),
            entry(Record::new(
                "203.0.113.7".parse().unwrap(),
                Time::from_micros(1),
            )),
        )];
        let blob = encode_records(&records);
        for len in 0..blob.len() {
            let res = decode_records(&blob[..len]);
            assert!(len == 0 || res.is_err(), "{len} bytes decoded: {res:?}");
        }
        let mut bad_flags = blob.clone();
        bad_flags[3 + 8] = 0x80;
        assert!(decode_records(&bad_flags).is_err());
    }
}
