//! Keys: what a client proves it holds.
//!
//! Owns [`Key`] (32 secret bytes, written as base64 in config files), its key identifier
//! (sent in clear so the server picks the key without trial decryption) and its AEAD key,
//! both derived with HKDF-SHA256 (RFC 5869), and the randomness that makes new keys and
//! nonces. No I/O but the OS's random generator ([`Key::generate`], [`random_nonce`]):
//! no sockets, files, clock or logging.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::proto::wire::NONCE_LEN;

/// Bytes of secret in a key: XChaCha20-Poly1305's key size, 256 bits.
pub const KEY_LEN: usize = 32;
/// Bytes of key identifier on the wire: 64 bits make a collision between the keys of
/// one server (a few thousand at most) about 1 in 10^12.
pub const KEY_ID_LEN: usize = 8;

/// HKDF salt: names the protocol, so keys derived here serve nothing else.
const SALT: &[u8] = b"dynip v1";
const INFO_AEAD: &[u8] = b"dynip v1 aead key";
const INFO_KEY_ID: &[u8] = b"dynip v1 key id";

/// The identifier of a key, as sent in clear in every sealed datagram.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A shared or per-host key, with what is derived from it.
#[derive(Clone)]
pub struct Key {
    secret: [u8; KEY_LEN],
    id: KeyId,
    pub(crate) cipher: XChaCha20Poly1305,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64")]
    NotBase64,
    #[error(
        "{0} bytes of key; a key is {KEY_LEN} bytes (44 base64 characters, as `dynip init` writes)"
    )]
    WrongLength(usize),
}

impl Key {
    pub fn from_bytes(secret: [u8; KEY_LEN]) -> Key {
        let hkdf = Hkdf::<Sha256>::new(Some(SALT), &secret);
        let mut aead_key = [0u8; KEY_LEN];
        let mut id = [0u8; KEY_ID_LEN];
        // Both lengths are far below HKDF-SHA256's limit of 255 × 32 bytes.
        hkdf.expand(INFO_AEAD, &mut aead_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hkdf.expand(INFO_KEY_ID, &mut id)
            .expect("8 bytes is a valid HKDF-SHA256 output length");
        let cipher = XChaCha20Poly1305::new(&aead_key.into());
        Key {
            secret,
            id: KeyId(id),
            cipher,
        }
    }

    /// A new key from the OS's random generator, for `init` and `add-host`.
    pub fn generate() -> Key {
        let mut secret = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut secret);
        Key::from_bytes(secret)
    }

    /// Parses a key as written in a config file.
    ///
    /// # Errors
    /// When the text is not base64 of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let secret: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Key::from_bytes(secret))
    }

    /// The key as written in a config file.
    pub fn encode(&self) -> String {
        STANDARD.encode(self.secret)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's 32 bytes: the secret of the TSIG key it also is (DNS UPDATE and
    /// transfers), which TSIG uses as it is.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// `N` bytes from the OS's random generator: acme-dns accounts' identifiers and
/// passwords.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A fresh nonce from the OS's random generator, for a datagram sealed under a key: 192
/// random bits never repeat in practice, so no counter has to survive a restart.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.secret == other.secret
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    /// Never prints the secret, so a key in a logged config stays secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<&str, KeyError>) {
        let res = Key::parse(text).map(|key| key.id().to_string());
        assert_eq!(res, expect.map(str::to_string), "input {text:?}");
    }

    #[test]
    fn parses_base64_keys() {
        // The test vector key of docs/PROTOCOL.md: bytes 0, 1, ..., 31.
        let text = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        check(text, Ok("693e81472a1cbb6a"));
        check(&format!("  {text}\n"), Ok("693e81472a1cbb6a"));
        assert_eq!(Key::parse(text).unwrap().encode(), text);
    }

    #[test]
    fn refuses_other_text() {
        check("not a key!", Err(KeyError::NotBase64));
        check("AAEC", Err(KeyError::WrongLength(3)));
        check("", Err(KeyError::WrongLength(0)));
    }

    #[test]
    fn generated_keys_and_nonces_differ() {
        assert_ne!(Key::generate(), Key::generate());
        assert_ne!(random_nonce(), random_nonce());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = Key::from_bytes([7; KEY_LEN]);
        assert!(!format!("{key:?}").contains(&key.encode()));
    }
}
