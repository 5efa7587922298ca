//! TXT records: what an ACME client proves a name with.
//!
//! Owns [`Txt`] (one TXT record: its character-strings, kept as the record's wire
//! RDATA) and the limits on them. A TXT record lives at a [`Name`](crate::model::name::Name)
//! under the zone, so never at its apex (the empty name is no name). The set of a name
//! is the writer's and the table's. Pure: no I/O.

use std::fmt;

/// The most TXT records one name holds. A certificate for a name and its wildcard needs
/// two at once; acme-dns keeps two; a client renewing several certificates for one name
/// at once needs a few more.
pub const MAX_TXT_PER_NAME: usize = 16;
/// The longest TXT record kept, in RDATA bytes: far above an ACME token (44 bytes) and
/// small enough that a full set of a name fits one UDP answer.
pub const MAX_TXT_LEN: usize = 512;

/// One TXT record: its character-strings, each at most 255 bytes, as the wire carries
/// them (each prefixed by its length). At least one string (RFC 1035 3.3.14); an empty
/// string is a string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Txt(Vec<u8>);

/// Why bytes or text are not a TXT record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    #[error("a TXT record of {0} bytes; at most {MAX_TXT_LEN} are kept")]
    TooLong(usize),
    #[error("a TXT record has at least one string")]
    NoString,
    #[error("a TXT record's strings do not add up to its length")]
    Malformed,
}

impl Txt {
    /// The record of `strings`, in order.
    ///
    /// # Errors
    /// No string, a string over 255 bytes, or more than [`MAX_TXT_LEN`] bytes in all.
    pub fn from_strings<S: AsRef<[u8]>>(strings: &[S]) -> Result<Txt, TxtError> {
        if strings.is_empty() {
            return Err(TxtError::NoString);
        }
        let mut rdata = Vec::new();
        for string in strings {
            let string = string.as_ref();
            let len = u8::try_from(string.len()).map_err(|_| TxtError::Malformed)?;
            rdata.push(len);
            rdata.extend_from_slice(string);
        }
        Txt::from_rdata(rdata)
    }

    /// A record of one text, cut into strings of 255 bytes when it is longer (as zone
    /// files and nsupdate do).
    ///
    /// # Errors
    /// A text over [`MAX_TXT_LEN`] bytes.
    pub fn from_text(text: &str) -> Result<Txt, TxtError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Txt::from_strings(&[b""]);
        }
        let strings: Vec<&[u8]> = bytes.chunks(255).collect();
        Txt::from_strings(&strings)
    }

    /// A record from its RDATA, as the store keeps it.
    ///
    /// # Errors
    /// Bytes that are not whole length-prefixed strings, or too many of them.
    pub fn from_rdata(rdata: Vec<u8>) -> Result<Txt, TxtError> {
        if rdata.len() > MAX_TXT_LEN {
            return Err(TxtError::TooLong(rdata.len()));
        }
        if rdata.is_empty() {
            return Err(TxtError::NoString);
        }
        let mut at = 0;
        while at < rdata.len() {
            at += 1 + usize::from(rdata[at]);
        }
        if at != rdata.len() {
            return Err(TxtError::Malformed);
        }
        Ok(Txt(rdata))
    }

    /// The RDATA: each string prefixed by its length.
    pub fn rdata(&self) -> &[u8] {
        &self.0
    }

    /// The strings, in order.
    pub fn strings(&self) -> Vec<&[u8]> {
        let mut strings = Vec::new();
        let mut at = 0;
        while at < self.0.len() {
            let len = usize::from(self.0[at]);
            strings.push(&self.0[at + 1..at + 1 + len]);
            at += 1 + len;
        }
        strings
    }

    /// The strings joined, as the APIs show a record (an ACME token is one string).
    pub fn text(&self) -> String {
        let joined: Vec<u8> = self.strings().concat();
        String::from_utf8_lossy(&joined).into_owned()
    }
}

impl fmt::Debug for Txt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Txt({:?})", self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_the_rdata() {
        let txt = Txt::from_strings(&[&b"v=spf1"[..], b"", b"-all"]).unwrap();
        assert_eq!(txt.rdata(), b"\x06v=spf1\x00\x04-all");
        assert_eq!(txt.strings(), [&b"v=spf1"[..], b"", b"-all"]);
        assert_eq!(Txt::from_rdata(txt.rdata().to_vec()), Ok(txt.clone()));
        assert_eq!(txt.text(), "v=spf1-all");
    }

    #[test]
    fn a_long_text_is_cut_into_strings_of_255() {
        let text = "a".repeat(300);
        let txt = Txt::from_text(&text).unwrap();
        let lens: Vec<usize> = txt.strings().iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 45]);
        assert_eq!(txt.text(), text);
        assert_eq!(Txt::from_text("").unwrap().strings(), [&b""[..]]);
    }

    #[test]
    fn malformed_or_oversized_rdata_is_refused() {
        assert_eq!(Txt::from_rdata(vec![]), Err(TxtError::NoString));
        assert_eq!(Txt::from_rdata(vec![5, b'a']), Err(TxtError::Malformed));
        assert_eq!(
            Txt::from_text(&"a".repeat(600)),
            Err(TxtError::TooLong(600 + 3))
        );
        assert_eq!(
            Txt::from_strings(&[vec![b'a'; 256]]),
            Err(TxtError::Malformed)
        );
    }
}
