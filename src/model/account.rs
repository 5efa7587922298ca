//! acme-dns accounts: who may set the TXT records of one name through the acme-dns API.
//!
//! Owns [`AcmeAccount`]: its user name and subdomain (UUIDs, as acme-dns makes them),
//! the SHA-256 of its password (40 random characters, so a fast hash is enough: nothing
//! to guess), the name its TXT records go to, and the networks its updates may come
//! from. Pure but for the OS's random generator ([`AcmeAccount::generate`], through
//! [`random_bytes`]).

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::model::key::random_bytes;
use crate::model::name::Name;
use crate::model::record::Time;

/// An acme-dns account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccount {
    /// A UUID, lowercase: the `X-Api-User` of its updates.
    pub username: String,
    /// SHA-256 of the password (`X-Api-Key`).
    pub password_sha256: [u8; 32],
    /// A UUID, lowercase: the `subdomain` its updates name.
    pub subdomain: String,
    /// Where its TXT records go, relative to the zone: `SUBDOMAIN` (for a name elsewhere,
    /// whose `_acme-challenge` is a CNAME to it), or `_acme-challenge.HOST` for an account
    /// registered with a host's key (no CNAME needed).
    pub txt_name: Name,
    /// The networks its updates may come from; empty: anywhere.
    pub allow_from: Vec<IpNet>,
    pub created: Time,
}

impl AcmeAccount {
    /// A new account with fresh random credentials, its TXT records at `txt_name` (`None`:
    /// at its subdomain); returns it with its password, which is shown once and kept
    /// only hashed.
    pub fn generate(
        txt_name: Option<Name>,
        allow_from: Vec<IpNet>,
        created: Time,
    ) -> (AcmeAccount, String) {
        let subdomain = uuid(random_bytes());
        let password = URL_SAFE_NO_PAD.encode(random_bytes::<30>());
        let txt_name =
            txt_name.unwrap_or_else(|| Name::parse(&subdomain).expect("a UUID is a valid name"));
        let account = AcmeAccount {
            username: uuid(random_bytes()),
            password_sha256: Sha256::digest(password.as_bytes()).into(),
            subdomain,
            txt_name,
            allow_from,
            created,
        };
        (account, password)
    }

    /// Whether `password` is this account's.
    pub fn has_password(&self, password: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        given
            .iter()
            .zip(&self.password_sha256)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Whether its updates may come from `addr`.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(&addr))
    }
}

/// 16 bytes as a version 4 UUID, lowercase.
fn uuid(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::acme_dns::is_uuid;

    #[test]
    fn generated_accounts_have_uuids_and_a_password_only_they_take() {
        let (account, password) = AcmeAccount::generate(None, vec![], Time::from_micros(1));
        assert!(is_uuid(&account.username) && is_uuid(&account.subdomain));
        assert_ne!(account.username, account.subdomain);
        assert_eq!(account.txt_name.as_str(), account.subdomain);
        assert_eq!(password.len(), 40);
        assert!(account.has_password(&password));
        assert!(!account.has_password(&password[1..]));
        let (other, other_password) = AcmeAccount::generate(None, vec![], Time::from_micros(1));
        assert_ne!(account.username, other.username);
        assert_ne!(password, other_password);
    }

    #[test]
    fn uuids_are_version_4() {
        assert_eq!(uuid([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn allow_from_limits_where_updates_come_from() {
        let host = Name::parse("_acme-challenge.pc").unwrap();
        let nets = vec!["192.0.2.0/24".parse().unwrap()];
        let (account, _) = AcmeAccount::generate(Some(host), nets, Time::from_micros(1));
        assert_eq!(account.txt_name.as_str(), "_acme-challenge.pc");
        assert!(account.allows("192.0.2.9".parse().unwrap()));
        assert!(account.allows("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!account.allows("198.51.100.1".parse().unwrap()));
    }
}
