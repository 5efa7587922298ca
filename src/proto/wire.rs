//! The datagrams a client sends and the server answers: bytes ⇄ values ([`Incoming`],
//! [`Signed`], [`Ack`]).
//!
//! Owns the byte formats of reports and acknowledgements (`docs/PROTOCOL.md` is their
//! specification):
//!
//! - the original DynIP datagram (DESIGN 4, "Legacy datagram"): the payload is the host's
//!   name and nothing else;
//! - version 1: a fixed header in clear (magic, version, kind, key identifier, nonce),
//!   then the body sealed with XChaCha20-Poly1305 under the key, the header as associated
//!   data. A report's body holds the client's time and the host's name, padded so that
//!   the acknowledgement, which holds the address and port the server saw, is never
//!   larger than the report.
//!
//! Pure: no sockets, no clock, no randomness; the caller passes the time and the nonce in,
//! and owns the buffer and the loop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;

use crate::model::key::{Key, KeyId, KEY_ID_LEN};
use crate::model::name::{Name, NameError};
use crate::model::record::Time;

/// The first bytes of every version-1 datagram. The leading NUL can never start a legacy
/// datagram (a name has no NUL), so the two formats cannot be confused.
pub const MAGIC: [u8; 4] = *b"\0dyn";
pub const VERSION: u8 = 1;
/// Bytes of nonce: XChaCha20's 192 bits, so random nonces never repeat in practice.
pub const NONCE_LEN: usize = 24;
/// Bytes of Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the clear header: magic, version, kind, key identifier, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + KEY_ID_LEN + NONCE_LEN;
/// Bytes of an acknowledgement's body: report nonce, family, address, port, server time.
pub const ACK_BODY_LEN: usize = NONCE_LEN + 1 + 16 + 2 + 8;
/// Bytes of an acknowledgement: also the least a sealed report may be, since a report's
/// body is padded to at least [`ACK_BODY_LEN`].
pub const ACK_LEN: usize = HEADER_LEN + ACK_BODY_LEN + TAG_LEN;
/// The largest sealed report: a longest name, its length and the time.
pub const MAX_SEALED_LEN: usize = HEADER_LEN + 8 + 1 + crate::model::name::MAX_LEN + TAG_LEN;

/// What a sealed datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Report = 1,
    Ack = 2,
}

/// The largest datagram a legacy report can be: a longest name plus a generous allowance
/// for the trailing whitespace some senders add (`echo` adds a newline, the original's
/// client sent none). Larger datagrams are refused before any UTF-8 or name work.
pub const MAX_LEGACY_LEN: usize = crate::model::name::MAX_LEN + 16;

/// What a datagram says before any key is tried: the original's report, or a sealed one
/// with the key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Legacy(Name),
    Sealed { kind: Kind, key_id: KeyId },
}

/// A version-1 report, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub name: Name,
    /// The client's clock when it sealed the report: must rise per host (the replay rule).
    pub time: Time,
    /// The report's nonce, which the acknowledgement echoes.
    pub nonce: [u8; NONCE_LEN],
}

/// A version-1 acknowledgement, opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The nonce of the report it acknowledges.
    pub report_nonce: [u8; NONCE_LEN],
    /// The source address and port the server saw: the client's public address.
    pub seen: SocketAddr,
    /// The server's clock when it committed the report.
    pub server_time: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty datagram")]
    Empty,
    #[error("datagram of {0} bytes is too large for a report")]
    TooLong(usize),
    #[error("host name is not UTF-8")]
    NotUtf8,
    #[error("bad host name: {0}")]
    BadName(#[from] NameError),
    #[error("sealed datagram of {0} bytes is shorter than a header, a body and a tag")]
    Truncated(usize),
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    #[error("a {0:?} where a {1:?} was expected")]
    WrongKind(Kind, Kind),
    #[error("does not authenticate (wrong key, or changed on the way)")]
    Unauthentic,
    #[error("sealed body is malformed")]
    BadBody,
}

/// Reads what a datagram is, without any key: the original's report, or the kind and key
/// identifier of a sealed one.
///
/// # Errors
/// Says why the datagram is neither.
pub fn peek(datagram: &[u8]) -> Result<Incoming, DecodeError> {
    if !datagram.starts_with(&MAGIC) {
        return decode_legacy(datagram).map(Incoming::Legacy);
    }
    // Every sealed datagram is at least as long as an acknowledgement (reports are padded).
    if datagram.len() < ACK_LEN {
        return Err(DecodeError::Truncated(datagram.len()));
    }
    let version = datagram[MAGIC.len()];
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind = match datagram[MAGIC.len() + 1] {
        1 => Kind::Report,
        2 => Kind::Ack,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let mut key_id = [0u8; KEY_ID_LEN];
    key_id.copy_from_slice(&datagram[MAGIC.len() + 2..MAGIC.len() + 2 + KEY_ID_LEN]);
    Ok(Incoming::Sealed {
        kind,
        key_id: KeyId(key_id),
    })
}

fn header(kind: Kind, key: &Key, nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()] = VERSION;
    header[MAGIC.len() + 1] = kind as u8;
    header[MAGIC.len() + 2..MAGIC.len() + 2 + KEY_ID_LEN].copy_from_slice(&key.id().0);
    header[HEADER_LEN - NONCE_LEN..].copy_from_slice(nonce);
    header
}

fn seal(kind: Kind, key: &Key, nonce: &[u8; NONCE_LEN], body: &[u8]) -> Vec<u8> {
    let header = header(kind, key, nonce);
    let payload = Payload {
        msg: body,
        aad: &header,
    };
    // Encryption fails only for messages over 256 GiB; a body is under 300 bytes.
    let sealed = key
        .cipher
        .encrypt(XNonce::from_slice(nonce), payload)
        .expect("XChaCha20-Poly1305 seals any body under 256 GiB");
    let mut datagram = Vec::with_capacity(HEADER_LEN + sealed.len());
    datagram.extend_from_slice(&header);
    datagram.extend_from_slice(&sealed);
    datagram
}

/// Checks the header against `kind` and `key` and opens the body.
fn open(kind: Kind, key: &Key, datagram: &[u8]) -> Result<(Vec<u8>, [u8; NONCE_LEN]), DecodeError> {
    match peek(datagram)? {
        Incoming::Sealed { kind: found, .. } if found != kind => {
            return Err(DecodeError::WrongKind(found, kind))
        }
        Incoming::Sealed { key_id, .. } if key_id == key.id() => {}
        _ => return Err(DecodeError::Unauthentic),
    }
    let (header, sealed) = datagram.split_at(HEADER_LEN);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&header[HEADER_LEN - NONCE_LEN..]);
    let payload = Payload {
        msg: sealed,
        aad: header,
    };
    let body = key
        .cipher
        .decrypt(XNonce::from_slice(&nonce), payload)
        .map_err(|_| DecodeError::Unauthentic)?;
    Ok((body, nonce))
}

/// Seals a report of `name` at the client's `time` under `key`, with a fresh random
/// `nonce` from the caller.
pub fn seal_report(key: &Key, nonce: &[u8; NONCE_LEN], name: &Name, time: Time) -> Vec<u8> {
    let name = name.as_str().as_bytes();
    let mut body = Vec::with_capacity(ACK_BODY_LEN.max(9 + name.len()));
    body.extend_from_slice(&time.as_micros().to_be_bytes());
    // A Name is at most 253 bytes, so its length fits a byte.
    body.push(name.len() as u8);
    body.extend_from_slice(name);
    body.resize(ACK_BODY_LEN.max(body.len()), 0);
    seal(Kind::Report, key, nonce, &body)
}

/// Opens a sealed report under `key` (the key its identifier names).
///
/// # Errors
/// Anything but an intact report sealed under `key`.
pub fn open_report(key: &Key, datagram: &[u8]) -> Result<Signed, DecodeError> {
    if datagram.len() > MAX_SEALED_LEN {
        return Err(DecodeError::TooLong(datagram.len()));
    }
    let (body, nonce) = open(Kind::Report, key, datagram)?;
    if body.len() < ACK_BODY_LEN {
        return Err(DecodeError::BadBody);
    }
    let time = Time::from_micros(i64::from_be_bytes(
        body[..8].try_into().map_err(|_| DecodeError::BadBody)?,
    ));
    let name_len = usize::from(body[8]);
    let name = body.get(9..9 + name_len).ok_or(DecodeError::BadBody)?;
    // Exactly the padding `seal_report` writes, all zeros: one report, one encoding.
    let padded_len = ACK_BODY_LEN.max(9 + name_len);
    if body.len() != padded_len || body[9 + name_len..].iter().any(|&byte| byte != 0) {
        return Err(DecodeError::BadBody);
    }
    let name = std::str::from_utf8(name).map_err(|_| DecodeError::NotUtf8)?;
    let name = Name::parse(name)?;
    Ok(Signed { name, time, nonce })
}

/// Seals the acknowledgement of a report under the report's key, with a fresh random
/// `nonce` from the caller. It is [`ACK_LEN`] bytes: never more than the report.
pub fn seal_ack(key: &Key, nonce: &[u8; NONCE_LEN], ack: &Ack) -> Vec<u8> {
    let mut body = [0u8; ACK_BODY_LEN];
    body[..NONCE_LEN].copy_from_slice(&ack.report_nonce);
    let (family, address) = match ack.seen.ip().to_canonical() {
        IpAddr::V4(addr) => {
            let mut address = [0u8; 16];
            address[..4].copy_from_slice(&addr.octets());
            (4, address)
        }
        IpAddr::V6(addr) => (6, addr.octets()),
    };
    body[NONCE_LEN] = family;
    body[NONCE_LEN + 1..NONCE_LEN + 17].copy_from_slice(&address);
    body[NONCE_LEN + 17..NONCE_LEN + 19].copy_from_slice(&ack.seen.port().to_be_bytes());
    body[NONCE_LEN + 19..].copy_from_slice(&ack.server_time.as_micros().to_be_bytes());
    seal(Kind::Ack, key, nonce, &body)
}

/// Opens an acknowledgement under `key`.
///
/// # Errors
/// Anything but an intact acknowledgement sealed under `key`.
pub fn open_ack(key: &Key, datagram: &[u8]) -> Result<Ack, DecodeError> {
    if datagram.len() != ACK_LEN {
        return Err(DecodeError::BadBody);
    }
    let (body, _) = open(Kind::Ack, key, datagram)?;
    let mut report_nonce = [0u8; NONCE_LEN];
    report_nonce.copy_from_slice(&body[..NONCE_LEN]);
    let address: [u8; 16] = body[NONCE_LEN + 1..NONCE_LEN + 17]
        .try_into()
        .map_err(|_| DecodeError::BadBody)?;
    let ip = match body[NONCE_LEN] {
        4 if address[4..].iter().all(|&byte| byte == 0) => IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )),
        // An IPv4 address is always sent as family 4: one encoding per address.
        6 if Ipv6Addr::from(address).to_ipv4_mapped().is_none() => {
            IpAddr::V6(Ipv6Addr::from(address))
        }
        _ => return Err(DecodeError::BadBody),
    };
    let port = u16::from_be_bytes([body[NONCE_LEN + 17], body[NONCE_LEN + 18]]);
    let server_time = i64::from_be_bytes(
        body[NONCE_LEN + 19..]
            .try_into()
            .map_err(|_| DecodeError::BadBody)?,
    );
    Ok(Ack {
        report_nonce,
        seen: SocketAddr::new(ip, port),
        server_time: Time::from_micros(server_time),
    })
}

/// Decodes the original's datagram (unauthenticated, unanswered): the host's name.
///
/// Trailing whitespace (spaces, tabs, CR, LF) is trimmed from the name, since shell
/// senders (`echo host | nc -u`) append a newline; the original kept it in the name.
///
/// # Errors
/// Says why the datagram is not a report; the caller drops it.
pub fn decode_legacy(datagram: &[u8]) -> Result<Name, DecodeError> {
    if datagram.len() > MAX_LEGACY_LEN {
        return Err(DecodeError::TooLong(datagram.len()));
    }
    let trimmed = datagram.trim_ascii_end();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| DecodeError::NotUtf8)?;
    Ok(Name::parse(text)?)
}

/// Encodes the original's datagram: the host's name, nothing else.
pub fn encode_legacy(name: &Name) -> Vec<u8> {
    name.as_str().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &[u8], expect: Result<&str, DecodeError>) {
        let res = decode_legacy(input).map(|name| name.as_str().to_string());
        assert_eq!(res, expect.map(str::to_string), "input {input:?}");
    }

    #[test]
    fn decodes_the_original_datagram() {
        check(b"kitchen-pc", Ok("kitchen-pc"));
        check(b"kitchen-pc\n", Ok("kitchen-pc"));
        check(b"kitchen-pc \r\n\t", Ok("kitchen-pc"));
        check("küche".as_bytes(), Ok("küche"));
    }

    #[test]
    fn refuses_what_is_not_a_report() {
        check(b"", Err(DecodeError::Empty));
        check(b" \n", Err(DecodeError::Empty));
        check(&[0xff, 0xfe, b'a'], Err(DecodeError::NotUtf8));
        check(b"a\0b", Err(DecodeError::BadName(NameError::BadChar('\0'))));
        check(b"\0", Err(DecodeError::BadName(NameError::BadChar('\0'))));
        check(
            b" kitchen",
            Err(DecodeError::BadName(NameError::BadChar(' '))),
        );
        check(&[b'a'; 5000], Err(DecodeError::TooLong(5000)));
        check(
            &[b'a'; 254],
            Err(DecodeError::BadName(NameError::TooLong(254))),
        );
        // A long run of padding cannot smuggle a short name past the length check.
        let mut padded = b"a".to_vec();
        padded.extend([b' '; 4999]);
        check(&padded, Err(DecodeError::TooLong(5000)));
    }

    /// The test vectors of docs/PROTOCOL.md, computed independently with libsodium
    /// (`crypto_aead_xchacha20poly1305_ietf_encrypt`) and Python's `hmac` for HKDF.
    const VECTOR_REPORT: &str = "0064796e0101693e81472a1cbb6a404142434445464748494a4b4c4d4e4f5051525354555657594ea5bd3049310c73f122c99ab0fcb62e287c88c3da8b48920e796f050a1b17cb6b29697aa1ee72c6e7756dbd739de615d2b866452dc7f6d20263ee489ceeae0a2244";
    const VECTOR_ACK: &str = "0064796e0102693e81472a1cbb6a808182838485868788898a8b8c8d8e8f909192939495969761bc928507859468ef7c14b9f28ffcabb07b481aaa27a57e080f64fa9395267a5a81258b10d7ebd073ba00e239e79e02a309251e94266fd632a20b1c2a9a15e12e66ed";

    fn vector_key() -> Key {
        let mut secret = [0u8; 32];
        for (idx, byte) in secret.iter_mut().enumerate() {
            *byte = idx as u8;
        }
        Key::from_bytes(secret)
    }

    fn nonce(first: u8) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        for (idx, byte) in nonce.iter_mut().enumerate() {
            *byte = first + idx as u8;
        }
        nonce
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|idx| u8::from_str_radix(&text[idx..idx + 2], 16).unwrap())
            .collect()
    }

    fn vector_ack() -> Ack {
        Ack {
            report_nonce: nonce(0x40),
            seen: "203.0.113.7:40000".parse().unwrap(),
            server_time: Time::from_micros(1_700_000_000_250_000),
        }
    }

    #[test]
    fn matches_the_test_vectors() {
        let key = vector_key();
        let name = Name::parse("kitchen-pc").unwrap();
        let time = Time::from_micros(1_700_000_000_000_000);
        let report = seal_report(&key, &nonce(0x40), &name, time);
        assert_eq!(hex(&report), VECTOR_REPORT);
        let opened = open_report(&key, &unhex(VECTOR_REPORT)).unwrap();
        assert_eq!(
            opened,
            Signed {
                name,
                time,
                nonce: nonce(0x40)
            }
        );

        let ack = seal_ack(&key, &nonce(0x80), &vector_ack());
        assert_eq!(hex(&ack), VECTOR_ACK);
        assert_eq!(open_ack(&key, &unhex(VECTOR_ACK)), Ok(vector_ack()));
        assert_eq!(ack.len(), report.len());
    }

    #[test]
    fn peeks_without_a_key() {
        let key = vector_key();
        assert_eq!(
            peek(&unhex(VECTOR_REPORT)),
            Ok(Incoming::Sealed {
                kind: Kind::Report,
                key_id: key.id()
            })
        );
        assert_eq!(
            peek(b"kitchen-pc\n"),
            Ok(Incoming::Legacy(Name::parse("kitchen-pc").unwrap()))
        );
        let mut future = unhex(VECTOR_REPORT);
        future[4] = 2;
        assert_eq!(peek(&future), Err(DecodeError::UnknownVersion(2)));
        assert_eq!(peek(&future[..40]), Err(DecodeError::Truncated(40)));
    }

    #[test]
    fn refuses_the_wrong_key_and_kind() {
        let report = unhex(VECTOR_REPORT);
        let other = Key::from_bytes([9; 32]);
        assert_eq!(open_report(&other, &report), Err(DecodeError::Unauthentic));
        // A key with the right identifier but other bytes cannot exist in practice; the
        // tag check stands behind the identifier anyway.
        assert_eq!(
            open_ack(&vector_key(), &report),
            Err(DecodeError::WrongKind(Kind::Report, Kind::Ack))
        );
        assert_eq!(
            open_report(&vector_key(), &unhex(VECTOR_ACK)),
            Err(DecodeError::WrongKind(Kind::Ack, Kind::Report))
        );
    }

    #[test]
    fn every_value_has_one_encoding() {
        let key = vector_key();
        let name = Name::parse("kitchen-pc").unwrap();
        // A report with one more byte of zero padding than seal_report writes.
        let mut body = 1_700_000_000_000_000i64.to_be_bytes().to_vec();
        body.push(10);
        body.extend_from_slice(b"kitchen-pc");
        body.resize(ACK_BODY_LEN + 1, 0);
        let overpadded = seal(Kind::Report, &key, &nonce(0x40), &body);
        assert_eq!(open_report(&key, &overpadded), Err(DecodeError::BadBody));
        body.truncate(ACK_BODY_LEN);
        let exact = seal(Kind::Report, &key, &nonce(0x40), &body);
        assert_eq!(
            open_report(&key, &exact).map(|signed| signed.name),
            Ok(name)
        );

        // An acknowledgement of family 6 carrying an IPv4-mapped address.
        let mut body = [0u8; ACK_BODY_LEN];
        body[NONCE_LEN] = 6;
        let mapped: Ipv6Addr = "::ffff:203.0.113.7".parse().unwrap();
        body[NONCE_LEN + 1..NONCE_LEN + 17].copy_from_slice(&mapped.octets());
        let ack = seal(Kind::Ack, &key, &nonce(0x80), &body);
        assert_eq!(open_ack(&key, &ack), Err(DecodeError::BadBody));
    }

    #[test]
    fn acks_are_never_larger_than_reports() {
        let key = vector_key();
        for name in ["a", "kitchen-pc", &"a".repeat(63)] {
            let report = seal_report(
                &key,
                &nonce(0),
                &Name::parse(name).unwrap(),
                Time::from_micros(1),
            );
            assert!(report.len() >= ACK_LEN, "{name}: {} bytes", report.len());
        }
        let v6 = Ack {
            seen: "[2001:db8::1]:1".parse().unwrap(),
            ..vector_ack()
        };
        assert_eq!(seal_ack(&key, &nonce(0), &v6).len(), ACK_LEN);
        assert_eq!(open_ack(&key, &seal_ack(&key, &nonce(0), &v6)), Ok(v6));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_legacy(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_sealed(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut datagram = MAGIC.to_vec();
            datagram.extend([VERSION, 1]);
            datagram.extend(vector_key().id().0);
            datagram.extend(tail);
            let _ = peek(&datagram);
            let _ = open_report(&vector_key(), &datagram);
            let _ = open_ack(&vector_key(), &datagram);
        }

        #[test]
        fn every_single_bit_change_is_refused(name in "[a-z0-9-]{1,63}", time in any::<i64>(), bit in 0usize..(MAX_SEALED_LEN * 8)) {
            let key = vector_key();
            let report = seal_report(&key, &nonce(1), &Name::parse(&name).unwrap(), Time::from_micros(time));
            let bit = bit % (report.len() * 8);
            let mut flipped = report.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_report(&key, &flipped).is_err());
            prop_assert!(open_report(&key, &report).is_ok());
        }

        #[test]
        fn open_inverts_seal(name in "[a-zA-Z0-9_-]{1,63}(\\.[a-zA-Z0-9_-]{1,63}){0,2}", time in any::<i64>()) {
            let key = vector_key();
            let name = Name::parse(&name).unwrap();
            let time = Time::from_micros(time);
            let opened = open_report(&key, &seal_report(&key, &nonce(3), &name, time));
            prop_assert_eq!(opened, Ok(Signed { name, time, nonce: nonce(3) }));
        }

        #[test]
        fn decode_legacy_inverts_encode_legacy(text in "[a-zA-Z0-9_-]{1,63}(\\.[a-zA-Z0-9_-]{1,63}){0,2}") {
            let name = Name::parse(&text).unwrap();
            prop_assert_eq!(decode_legacy(&encode_legacy(&name)), Ok(name));
        }
    }
}
