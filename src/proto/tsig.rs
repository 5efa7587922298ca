//! TSIG (RFC 8945): a DNS message signed with a shared secret, as `nsupdate -y`, certbot's
//! rfc2136 plugin, lego, Kea and the secondaries send them.
//!
//! Owns finding the TSIG record of a message ([`find`]: it must be the last record of
//! the additional section), checking it against a secret ([`verify`]: the MAC first,
//! then the time, as the RFC orders them, with [`Failure`] naming the answer the RFC
//! asks for), and signing a message ([`sign`]: a request's, or a response's over the
//! request's MAC). The six algorithms clients use ([`Algorithm`]), each with RustCrypto's
//! `hmac` over its hash crate. Pure: bytes, secrets and the time in; bytes and verdicts
//! out. Which key may do what is the caller's.

use hmac::{Hmac, Mac};

/// The TSIG record's type.
pub const TSIG_TYPE: u16 = 250;
/// Class ANY: the TSIG record's class.
const CLASS_ANY: u16 = 255;
/// The fudge a signature of ours carries: how far the other side's clock may be off.
pub const FUDGE: u16 = 300;

/// The error field's values (RFC 8945 §5.3, RFC 6895).
pub const BADSIG: u16 = 16;
pub const BADKEY: u16 = 17;
pub const BADTIME: u16 = 18;
pub const BADTRUNC: u16 = 22;

/// A MAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    HmacMd5,
    HmacSha1,
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::HmacMd5,
        Algorithm::HmacSha1,
        Algorithm::HmacSha224,
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// The algorithm's name, as a DNS name without the final dot.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacMd5 => "hmac-md5.sig-alg.reg.int",
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha224 => "hmac-sha224",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm a name (any case, final dot or not) stands for.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let name = name.strip_suffix('.').unwrap_or(name);
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name().eq_ignore_ascii_case(name))
    }

    /// The MAC's length in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            Algorithm::HmacMd5 => 16,
            Algorithm::HmacSha1 => 20,
            Algorithm::HmacSha224 => 28,
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }

    /// The MAC of `parts`, in order, under `secret`.
    fn mac(self, secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes a key of any length.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Algorithm::HmacMd5 => run::<Hmac<md5::Md5>>(secret, parts),
            Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, parts),
            Algorithm::HmacSha224 => run::<Hmac<sha2::Sha224>>(secret, parts),
            Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, parts),
            Algorithm::HmacSha384 => run::<Hmac<sha2::Sha384>>(secret, parts),
            Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(secret, parts),
        }
    }
}

/// A message's TSIG record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tsig {
    /// The key's name: lowercase, dot-separated, without the final dot.
    pub key_name: String,
    /// `None`: an algorithm this server does not know (answered BADKEY).
    pub algorithm: Option<Algorithm>,
    /// The algorithm's name as sent, lowercase: what the MAC covers.
    algorithm_name: String,
    /// Seconds since the epoch, 48 bits.
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
}

/// A signed message, split: its TSIG record and the message as it was before it was
/// signed (the TSIG record taken off, the additional count one less, the original id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigSigned {
    pub tsig: Tsig,
    pub unsigned: Vec<u8>,
}

/// Why a message's TSIG record cannot be read: the message is answered FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsigError {
    #[error("the message ends inside a record")]
    Truncated,
    #[error("a name in the message is malformed")]
    BadName,
    #[error("a TSIG record that is not the last record")]
    NotLast,
    #[error("a TSIG record of a class other than ANY")]
    BadClass,
}

/// Why a TSIG record does not verify, as the RFC answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// An unknown key or algorithm: NOTAUTH with error BADKEY, unsigned.
    #[error("unknown key or algorithm (BADKEY)")]
    BadKey,
    /// A MAC that does not verify: NOTAUTH with error BADSIG, unsigned.
    #[error("the MAC does not verify (BADSIG)")]
    BadSig,
    /// A MAC shorter than the RFC allows: NOTAUTH with error BADTRUNC.
    #[error("the MAC is truncated too far (BADTRUNC)")]
    BadTrunc,
    /// The time signed is more than `fudge` from ours: NOTAUTH with error BADTIME,
    /// signed, carrying our time.
    #[error("the time signed is outside the fudge (BADTIME)")]
    BadTime,
}

impl Failure {
    /// The TSIG error field of the answer.
    pub fn code(self) -> u16 {
        match self {
            Failure::BadKey => BADKEY,
            Failure::BadSig => BADSIG,
            Failure::BadTrunc => BADTRUNC,
            Failure::BadTime => BADTIME,
        }
    }
}

/// A cursor over a message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TsigError> {
        let end = self.at.checked_add(n).ok_or(TsigError::Truncated)?;
        let taken = self.bytes.get(self.at..end).ok_or(TsigError::Truncated)?;
        self.at = end;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, TsigError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, TsigError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Moves past a name at the cursor without reading it: its labels up to the root, or
    /// a compression pointer. (Reading every name cost an allocation per label of every
    /// query with an OPT record, the usual query.)
    fn skip_name(&mut self) -> Result<(), TsigError> {
        loop {
            let len = *self.bytes.get(self.at).ok_or(TsigError::Truncated)? as usize;
            match len {
                0 => {
                    self.at += 1;
                    return Ok(());
                }
                1..=63 => {
                    self.take(1 + len)?;
                }
                0xc0..=0xff => {
                    self.take(2)?;
                    return Ok(());
                }
                _ => return Err(TsigError::BadName),
            }
        }
    }

    /// A name at the cursor, following compression pointers (each only backwards),
    /// lowercase and dot-separated, without the final dot.
    fn name(&mut self) -> Result<String, TsigError> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut jumped = false;
        let mut length = 0usize;
        loop {
            let len = *self.bytes.get(at).ok_or(TsigError::Truncated)? as usize;
            match len {
                0 => {
                    if !jumped {
                        self.at = at + 1;
                    }
                    break;
                }
                1..=63 => {
                    let label = self
                        .bytes
                        .get(at + 1..at + 1 + len)
                        .ok_or(TsigError::Truncated)?;
                    length += len + 1;
                    if length > 255 {
                        return Err(TsigError::BadName);
                    }
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    at += 1 + len;
                }
                0xc0..=0xff => {
                    let low = *self.bytes.get(at + 1).ok_or(TsigError::Truncated)? as usize;
                    let target = ((len & 0x3f) << 8) | low;
                    if target >= at {
                        return Err(TsigError::BadName);
                    }
                    if !jumped {
                        self.at = at + 2;
                        jumped = true;
                    }
                    at = target;
                }
                _ => return Err(TsigError::BadName),
            }
        }
        Ok(labels.join("."))
    }
}

/// A name in canonical wire form: lowercase labels, uncompressed.
fn wire_name(name: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|label| !label.is_empty()) {
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    wire.push(0);
    wire
}

/// The TSIG record of `message`, if it has one, and the message without it.
///
/// # Errors
/// A message that does not parse as far as its records go, or whose TSIG record is not
/// its last record or not of class ANY: the RFC answers FORMERR.
pub fn find(message: &[u8]) -> Result<Option<TsigSigned>, TsigError> {
    let mut reader = Reader {
        bytes: message,
        at: 12,
    };
    let header = message.get(..12).ok_or(TsigError::Truncated)?;
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (n_questions, n_records) = (count(4), count(6) + count(8) + count(10));
    for _ in 0..n_questions {
        reader.skip_name()?;
        reader.take(4)?;
    }
    for index in 0..n_records {
        let start = reader.at;
        reader.skip_name()?;
        let rtype = reader.u16()?;
        let class = reader.u16()?;
        reader.u32()?;
        let rdlength = usize::from(reader.u16()?);
        let rdata_start = reader.at;
        reader.take(rdlength)?;
        if rtype != TSIG_TYPE {
            continue;
        }
        if index + 1 != n_records || count(10) == 0 {
            return Err(TsigError::NotLast);
        }
        if class != CLASS_ANY {
            return Err(TsigError::BadClass);
        }
        let owner = Reader {
            bytes: message,
            at: start,
        }
        .name()?;
        let mut rdata = Reader {
            bytes: &message[..rdata_start + rdlength],
            at: rdata_start,
        };
        let algorithm_name = rdata.name()?;
        let time = rdata.take(6)?;
        let time_signed = time
            .iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        let fudge = rdata.u16()?;
        let mac_len = usize::from(rdata.u16()?);
        let mac = rdata.take(mac_len)?.to_vec();
        let original_id = rdata.u16()?;
        let error = rdata.u16()?;
        let other_len = usize::from(rdata.u16()?);
        let other = rdata.take(other_len)?.to_vec();
        let mut unsigned = message[..start].to_vec();
        unsigned[..2].copy_from_slice(&original_id.to_be_bytes());
        let n_additional = (count(10) - 1) as u16;
        unsigned[10..12].copy_from_slice(&n_additional.to_be_bytes());
        return Ok(Some(TsigSigned {
            tsig: Tsig {
                key_name: owner,
                algorithm: Algorithm::from_name(&algorithm_name),
                algorithm_name,
                time_signed,
                fudge,
                mac,
                original_id,
                error,
                other,
            },
            unsigned,
        }));
    }
    Ok(None)
}

/// The TSIG variables the MAC covers after the message (RFC 8945 §4.3.3).
fn variables(
    tsig_key: &str,
    algorithm: &str,
    time: u64,
    fudge: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut out = wire_name(tsig_key);
    out.extend(CLASS_ANY.to_be_bytes());
    out.extend(0u32.to_be_bytes());
    out.extend(wire_name(algorithm));
    out.extend(&time.to_be_bytes()[2..]);
    out.extend(fudge.to_be_bytes());
    out.extend(error.to_be_bytes());
    out.extend((other.len() as u16).to_be_bytes());
    out.extend(other);
    out
}

/// Checks `signed` against `secret` (`None`: the key is not known) at `now` (seconds
/// since the epoch). `request_mac`: for a response, the MAC of the request it answers.
///
/// # Errors
/// The [`Failure`] the RFC answers with.
pub fn verify(
    signed: &TsigSigned,
    secret: Option<&[u8]>,
    request_mac: Option<&[u8]>,
    now: u64,
) -> Result<Algorithm, Failure> {
    let tsig = &signed.tsig;
    let (Some(secret), Some(algorithm)) = (secret, tsig.algorithm) else {
        return Err(Failure::BadKey);
    };
    let full = algorithm.mac_len();
    // A truncated MAC (RFC 8945 §5.2.2.1): at least 10 bytes and half the full length.
    if tsig.mac.len() > full {
        return Err(Failure::BadSig);
    }
    if tsig.mac.len() < full && (tsig.mac.len() < 10 || tsig.mac.len() < full / 2) {
        return Err(Failure::BadTrunc);
    }
    let vars = variables(
        &tsig.key_name,
        &tsig.algorithm_name,
        tsig.time_signed,
        tsig.fudge,
        tsig.error,
        &tsig.other,
    );
    let prefix = request_mac.map(prefixed).unwrap_or_default();
    let expected = algorithm.mac(secret, &[&prefix, &signed.unsigned, &vars]);
    if !constant_time_eq(&expected[..tsig.mac.len()], &tsig.mac) {
        return Err(Failure::BadSig);
    }
    if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
        return Err(Failure::BadTime);
    }
    Ok(algorithm)
}

/// A request MAC as a response's MAC covers it: its length, then itself.
fn prefixed(mac: &[u8]) -> Vec<u8> {
    let mut out = (mac.len() as u16).to_be_bytes().to_vec();
    out.extend(mac);
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a signature is made with.
#[derive(Debug, Clone, Copy)]
pub struct SigningKey<'a> {
    /// The key's name, without the final dot.
    pub name: &'a str,
    pub algorithm: Algorithm,
    pub secret: &'a [u8],
}

/// How many bytes signing a message with `key` adds to it (its TSIG record, without
/// `other` data).
pub fn record_len(key: SigningKey<'_>) -> usize {
    let rdata = wire_name(key.algorithm.name()).len() + 6 + 2 + 2 + key.algorithm.mac_len() + 6;
    wire_name(key.name).len() + 10 + rdata
}

/// Signs `message` (a whole DNS message, without a TSIG record) in place with `key` at
/// `time`: appends the TSIG record and counts it in the additional section. For a
/// response, `request_mac` is the request's MAC; `error` and `other` are the TSIG
/// error (0, or BADTIME with our time in `other`). Returns the MAC.
pub fn sign(
    message: &mut Vec<u8>,
    key: SigningKey<'_>,
    request_mac: Option<&[u8]>,
    time: u64,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let vars = variables(key.name, key.algorithm.name(), time, FUDGE, error, other);
    let prefix = request_mac.map(prefixed).unwrap_or_default();
    let mac = key.algorithm.mac(key.secret, &[&prefix, message, &vars]);
    let record = TsigRecord {
        key_name: key.name,
        algorithm_name: key.algorithm.name(),
        time,
        fudge: FUDGE,
        mac: &mac,
        error,
        other,
    };
    record.append_to(message);
    mac
}

/// Signs a message of a transfer after its first (RFC 8945 §5.3.1): the MAC covers the
/// previous message's MAC, this message, and only the time and the fudge. Returns the
/// MAC, which the next message's covers.
pub fn sign_continuation(
    message: &mut Vec<u8>,
    key: SigningKey<'_>,
    prior_mac: &[u8],
    time: u64,
) -> Vec<u8> {
    let mut timers = time.to_be_bytes()[2..].to_vec();
    timers.extend(FUDGE.to_be_bytes());
    let mac = key
        .algorithm
        .mac(key.secret, &[&prefixed(prior_mac), message, &timers]);
    let record = TsigRecord {
        key_name: key.name,
        algorithm_name: key.algorithm.name(),
        time,
        fudge: FUDGE,
        mac: &mac,
        error: 0,
        other: &[],
    };
    record.append_to(message);
    mac
}

/// Appends to `message` (an answer to a request signed with `request`'s TSIG record) an
/// unsigned TSIG record carrying `error`: how the RFC answers a key it does not know or a
/// MAC that does not verify (§5.3.2), with the request's key, algorithm and times.
pub fn append_unsigned(message: &mut Vec<u8>, request: &Tsig, error: u16) {
    let record = TsigRecord {
        key_name: &request.key_name,
        algorithm_name: &request.algorithm_name,
        time: request.time_signed,
        fudge: request.fudge,
        mac: &[],
        error,
        other: &[],
    };
    record.append_to(message);
}

/// A TSIG record's fields, for writing.
struct TsigRecord<'a> {
    key_name: &'a str,
    algorithm_name: &'a str,
    time: u64,
    fudge: u16,
    mac: &'a [u8],
    error: u16,
    other: &'a [u8],
}

impl TsigRecord<'_> {
    /// Appends the record to `message` and counts it in the additional section; the
    /// original id is the message's.
    fn append_to(&self, message: &mut Vec<u8>) {
        let id = [message[0], message[1]];
        let mut rdata = wire_name(self.algorithm_name);
        rdata.extend(&self.time.to_be_bytes()[2..]);
        rdata.extend(self.fudge.to_be_bytes());
        rdata.extend((self.mac.len() as u16).to_be_bytes());
        rdata.extend(self.mac);
        rdata.extend(id);
        rdata.extend(self.error.to_be_bytes());
        rdata.extend((self.other.len() as u16).to_be_bytes());
        rdata.extend(self.other);
        message.extend(wire_name(self.key_name));
        message.extend(TSIG_TYPE.to_be_bytes());
        message.extend(CLASS_ANY.to_be_bytes());
        message.extend(0u32.to_be_bytes());
        message.extend((rdata.len() as u16).to_be_bytes());
        message.extend(rdata);
        let n_additional = u16::from_be_bytes([message[10], message[11]]).saturating_add(1);
        message[10..12].copy_from_slice(&n_additional.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the vectors: bytes 0 to 31.
    fn secret() -> Vec<u8> {
        (0u8..32).collect()
    }

    const TIME: u64 = 1_700_000_000;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `kitchen-pc.dyn.example.com. A`, id 0x1234, signed by dnspython 2.7.0 with key
    /// `dynip.` (bytes 0-31) at 1,700,000,000, fudge 300: an implementation of its own.
    const SIGNED_QUERIES: [(Algorithm, &str); 6] = [
        (Algorithm::HmacMd5, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000003a08484d41432d4d4435075349472d414c470352454703494e540000006553f100012c0010db6f1c2c366ec8bd5e8c8ba402cc0a12123400000000"),
        (Algorithm::HmacSha1, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000002f09686d61632d736861310000006553f100012c0014fa949bd4c91c944b18f995cab352ba3c9c772e55123400000000"),
        (Algorithm::HmacSha224, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff0000000000390b686d61632d7368613232340000006553f100012c001c896e51d4b54294a456b190d7be9d11e8a47f731df47461351efd9bc1123400000000"),
        (Algorithm::HmacSha256, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000003d0b686d61632d7368613235360000006553f100012c0020ab5dae4dd3deec8ab368462696c252da2d94d077784445d854fd667c940bbdf4123400000000"),
        (Algorithm::HmacSha384, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000004d0b686d61632d7368613338340000006553f100012c00302404fd1056d0919a654ceccba929abb52b26ec419fb079d33d6e748c14db471fe32f61e4badf0ae9f7c0918924b8b452123400000000"),
        (Algorithm::HmacSha512, "1234010000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000005d0b686d61632d7368613531320000006553f100012c00403bda17c20561436d1a8fa6c5ad050c1f2af111b4c8479b8180bc684a577aa60b0e9a0dc9b6cf06556d1718b4e2e1064a385b7d02981ee3ecaef5a50fe9391f62123400000000"),
    ];

    /// dnspython's response to the hmac-sha256 query, signed at 1,700,000,005 over the
    /// query's MAC.
    const SIGNED_RESPONSE: &str = "1234810000010000000000010a6b69746368656e2d70630364796e076578616d706c6503636f6d00000100010564796e69700000fa00ff00000000003d0b686d61632d7368613235360000006553f105012c0020955d502b5757b5551f02ea036efaae844919ce8ab2a84ca34acc40e68f629a1b123400000000";

    #[test]
    fn another_implementations_signatures_verify_with_every_algorithm() {
        for (algorithm, wire) in SIGNED_QUERIES {
            let signed = find(&hex(wire)).unwrap().expect("a TSIG record");
            assert_eq!(signed.tsig.key_name, "dynip");
            assert_eq!(signed.tsig.algorithm, Some(algorithm));
            assert_eq!((signed.tsig.time_signed, signed.tsig.fudge), (TIME, 300));
            assert_eq!(
                verify(&signed, Some(&secret()), None, TIME + 10),
                Ok(algorithm),
                "{algorithm:?}"
            );
            // The message as it was before it was signed: no additional record.
            assert_eq!(&signed.unsigned[10..12], [0, 0]);
        }
    }

    #[test]
    fn a_response_signed_here_is_what_the_other_implementation_signs() {
        let query = find(&hex(SIGNED_QUERIES[3].1)).unwrap().unwrap();
        let expected = hex(SIGNED_RESPONSE);
        let mut response = find(&expected).unwrap().unwrap().unsigned;
        let key = SigningKey {
            name: "dynip",
            algorithm: Algorithm::HmacSha256,
            secret: &secret(),
        };
        sign(&mut response, key, Some(&query.tsig.mac), TIME + 5, 0, &[]);
        assert_eq!(response, expected);
        // And it verifies as a response to that query, and not as a query.
        let signed = find(&response).unwrap().unwrap();
        let request_mac = Some(query.tsig.mac.as_slice());
        assert!(verify(&signed, Some(&secret()), request_mac, TIME + 5).is_ok());
        assert_eq!(
            verify(&signed, Some(&secret()), None, TIME + 5),
            Err(Failure::BadSig)
        );
    }

    #[test]
    fn the_rfc_answers_for_what_does_not_verify() {
        let wire = hex(SIGNED_QUERIES[3].1);
        let signed = find(&wire).unwrap().unwrap();
        let key = secret();
        assert_eq!(verify(&signed, None, None, TIME), Err(Failure::BadKey));
        let mut other_key = key.clone();
        other_key[0] ^= 1;
        assert_eq!(
            verify(&signed, Some(&other_key), None, TIME),
            Err(Failure::BadSig)
        );
        assert_eq!(
            verify(&signed, Some(&key), None, TIME + 301),
            Err(Failure::BadTime)
        );
        assert_eq!(
            verify(&signed, Some(&key), None, TIME - 301),
            Err(Failure::BadTime)
        );
        assert!(verify(&signed, Some(&key), None, TIME - 300).is_ok());
        // Any byte of the message changed: the MAC no longer verifies.
        for at in 0..signed.unsigned.len() {
            let mut changed = signed.clone();
            changed.unsigned[at] ^= 0x20;
            assert_eq!(
                verify(&changed, Some(&key), None, TIME),
                Err(Failure::BadSig),
                "byte {at}"
            );
        }
        // An unknown algorithm is an unknown key.
        let mut unknown = signed.clone();
        unknown.tsig.algorithm = None;
        assert_eq!(
            verify(&unknown, Some(&key), None, TIME),
            Err(Failure::BadKey)
        );
        // Truncated MACs: 16 of 32 bytes is allowed, 8 is not.
        let mut half = signed.clone();
        half.tsig.mac.truncate(16);
        assert!(verify(&half, Some(&key), None, TIME).is_ok());
        let mut short = signed;
        short.tsig.mac.truncate(8);
        assert_eq!(
            verify(&short, Some(&key), None, TIME),
            Err(Failure::BadTrunc)
        );
    }

    #[test]
    fn signing_and_verifying_agree_for_every_algorithm() {
        let unsigned = find(&hex(SIGNED_QUERIES[0].1)).unwrap().unwrap().unsigned;
        for algorithm in Algorithm::ALL {
            let mut message = unsigned.clone();
            let key = SigningKey {
                name: "Kitchen-PC.",
                algorithm,
                secret: b"a secret",
            };
            let mac = sign(&mut message, key, None, TIME, 0, &[]);
            assert_eq!(mac.len(), algorithm.mac_len());
            let signed = find(&message).unwrap().unwrap();
            assert_eq!(signed.tsig.key_name, "kitchen-pc");
            assert_eq!(signed.unsigned, unsigned);
            assert_eq!(
                verify(&signed, Some(b"a secret"), None, TIME),
                Ok(algorithm)
            );
        }
    }

    #[test]
    fn messages_without_or_with_a_misplaced_tsig() {
        let unsigned = find(&hex(SIGNED_QUERIES[3].1)).unwrap().unwrap().unsigned;
        assert_eq!(find(&unsigned), Ok(None));
        // A TSIG record followed by another record.
        let mut misplaced = hex(SIGNED_QUERIES[3].1);
        misplaced.extend([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        misplaced[11] = 2;
        assert_eq!(find(&misplaced), Err(TsigError::NotLast));
        // Cut anywhere: an error, never a panic.
        let whole = hex(SIGNED_QUERIES[5].1);
        for end in 0..whole.len() {
            assert!(find(&whole[..end]).is_err(), "cut at {end}");
        }
        // A key name that is a compression pointer pointing at itself. (Other names are
        // only skipped: the message's parser judges them.)
        let signed = hex(SIGNED_QUERIES[3].1);
        let at = unsigned.len();
        let mut looped = signed[..at].to_vec();
        looped.extend([0xc0 | (at >> 8) as u8, at as u8]);
        looped.extend(&signed[at + "\x05dynip\x00".len()..]);
        assert_eq!(find(&looped), Err(TsigError::BadName));
    }

    #[test]
    fn record_len_is_what_signing_adds() {
        let secret = secret();
        for algorithm in Algorithm::ALL {
            let key = SigningKey {
                name: "kitchen-pc",
                algorithm,
                secret: &secret,
            };
            let mut message = hex(SIGNED_QUERIES[0].1)[..12].to_vec();
            let before = message.len();
            sign(&mut message, key, Some(&[1, 2, 3]), TIME, 0, &[]);
            assert_eq!(message.len() - before, record_len(key), "{algorithm:?}");
        }
    }

    #[test]
    fn algorithm_names_in_any_case() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(algorithm.name()), Some(algorithm));
            let upper = format!("{}.", algorithm.name().to_uppercase());
            assert_eq!(Algorithm::from_name(&upper), Some(algorithm));
        }
        assert_eq!(Algorithm::from_name("gss-tsig"), None);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes: an answer or an error, never a panic; and what `find` returns
        /// verifies only with the right secret.
        #[test]
        fn arbitrary_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(signed)) = find(&bytes) {
                let _ = verify(&signed, Some(b"secret"), None, 0);
            }
        }

        /// A signed message with any byte of its body changed does not verify, or fails
        /// to parse. (Not the header's id, which the MAC leaves to the TSIG record's
        /// original id so that a forwarder may change it, nor the case of the TSIG
        /// record's names, which the MAC takes in lowercase.)
        #[test]
        fn a_changed_byte_never_verifies(at in 0usize..200, flip in 1u8..=255) {
            let mut message = vec![0x12, 0x34, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0];
            message.extend(wire_name("dyn.example.com"));
            message.extend([0, 6, 0, 1]);
            message.extend(wire_name("kitchen-pc.dyn.example.com"));
            message.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            let key = SigningKey { name: "dynip", algorithm: Algorithm::HmacSha256, secret: b"k" };
            let body = message.len();
            sign(&mut message, key, None, 1000, 0, &[]);
            let at = 2 + at % (body - 2);
            message[at] ^= flip;
            if let Ok(Some(signed)) = find(&message) {
                let verified = verify(&signed, Some(b"k"), None, 1000);
                prop_assert!(verified.is_err(), "byte {} changed and it verified", at);
            }
        }
    }
}
