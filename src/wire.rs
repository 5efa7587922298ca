//! The datagrams a client sends: bytes ⇄ [`Report`].
//!
//! Owns the byte formats of reports. Today that is the original DynIP datagram (DESIGN 4,
//! "Legacy datagram"): the payload is the host's name and nothing else. Pure: no sockets,
//! no clock; the caller owns the buffer and the loop.

use crate::name::{Name, NameError};

/// The largest datagram a legacy report can be: a longest name plus a generous allowance
/// for the trailing whitespace some senders add (`echo` adds a newline, the original's
/// client sent none). Larger datagrams are refused before any UTF-8 or name work.
pub const MAX_LEGACY_LEN: usize = crate::name::MAX_LEN + 16;

/// One report, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The original's datagram: unauthenticated, unanswered.
    Legacy { name: Name },
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
}

/// Decodes one datagram.
///
/// Trailing whitespace (spaces, tabs, CR, LF) is trimmed from a legacy name, since shell
/// senders (`echo host | nc -u`) append a newline; the original kept it in the name.
///
/// # Errors
/// Says why the datagram is not a report; the caller drops it.
pub fn decode(datagram: &[u8]) -> Result<Report, DecodeError> {
    if datagram.len() > MAX_LEGACY_LEN {
        return Err(DecodeError::TooLong(datagram.len()));
    }
    let trimmed = datagram.trim_ascii_end();
    if trimmed.is_empty() {
        return Err(DecodeError::Empty);
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| DecodeError::NotUtf8)?;
    let name = Name::parse(text)?;
    Ok(Report::Legacy { name })
}

/// Encodes a report as the bytes to send.
pub fn encode(report: &Report) -> Vec<u8> {
    match report {
        Report::Legacy { name } => name.as_str().as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &[u8], expect: Result<&str, DecodeError>) {
        let res = decode(input).map(|Report::Legacy { name }| name.as_str().to_string());
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_inverts_encode(text in "[a-zA-Z0-9_-]{1,63}(\\.[a-zA-Z0-9_-]{1,63}){0,2}") {
            let report = Report::Legacy { name: Name::parse(&text).unwrap() };
            prop_assert_eq!(decode(&encode(&report)), Ok(report));
        }
    }
}
