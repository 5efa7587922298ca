//! Who may report what: the keys, `allow_from`, `allow_unsigned`, and the rate limit on
//! traffic that does not authenticate.
//!
//! Owns [`Policy`] (built from the server's config, swapped whole on SIGHUP); the
//! per-source token buckets ([`Limiter`]) are `limit`'s.
//!
//! Role: pure, like `model` and `proto`: the caller passes addresses and the time in; no
//! sockets, files, clock, threads, tokio or logging (`tests/architecture.rs` checks it).

mod limit;

pub use limit::{Limiter, RateDecision};

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::ServerConfig;
use crate::model::key::{Key, KeyId};
use crate::model::name::Name;
use crate::model::record::Time;

/// How far a signed report's client time may be from the server's clock. Clients keep
/// their clocks by NTP; five minutes is Kerberos's allowance for the same problem. A
/// client outside it hears nothing back and says to check the clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Datagrams that do not authenticate a source may send per second, and in a burst,
/// before it is dropped: far above what a misconfigured client (one report a minute)
/// produces, far below a flood.
const DATAGRAM_FAILURES_PER_SEC: f64 = 20.0;
const DATAGRAM_FAILURE_BURST: f64 = 100.0;

/// The limiter on report datagrams that do not authenticate: each failure spends a
/// token, and a source without tokens is dropped before any decoding or cryptography.
pub fn datagram_limiter() -> Limiter {
    Limiter::new(DATAGRAM_FAILURES_PER_SEC, DATAGRAM_FAILURE_BURST)
}

/// Which names a key may report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The shared key: any name.
    Any,
    /// A per-host key: those names only (one, unless the config gave the same key to
    /// several hosts).
    Hosts(Vec<Name>),
}

impl Scope {
    /// Whether a key of this scope may report (or read) `name`.
    pub fn covers(&self, name: &Name) -> bool {
        match self {
            Scope::Any => true,
            Scope::Hosts(names) => names.contains(name),
        }
    }
}

/// Why a datagram is refused before it reaches the writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("source not in allow_from")]
    NotAllowed,
    #[error("unsigned reports are not accepted (a key is configured)")]
    Unsigned,
    #[error("unknown key {0}")]
    UnknownKey(KeyId),
    #[error("a per-host key used for {name}, which is not its host")]
    WrongHost { name: Name },
    #[error("unsigned report for {0}, which has a key of its own")]
    UnsignedForKeyedHost(Name),
    #[error("client clock {skew_secs} s off the server's (more than {} s)", MAX_CLOCK_SKEW.as_secs())]
    Skew { skew_secs: i64 },
    #[error("rate-limited: too much unauthenticated traffic from this source")]
    RateLimited,
}

/// The keys and rules in force.
#[derive(Debug, Default)]
pub struct Policy {
    keys: HashMap<KeyId, (Arc<Key>, Scope)>,
    /// The names in `[DynIP:Hosts]`: never reported unsigned, whatever `allow_unsigned`.
    keyed_hosts: HashSet<Name>,
    accepts_unsigned: bool,
    allow_from: Option<Vec<IpNet>>,
    /// Each key's text (as the config writes it) → its scope, for HTTP, which gets keys
    /// as passwords: a hash lookup, where parsing the key would cost an HKDF derivation
    /// per request.
    passwords: HashMap<String, Scope>,
}

impl Policy {
    pub fn new(config: &ServerConfig) -> Policy {
        let mut keys: HashMap<KeyId, (Arc<Key>, Scope)> = HashMap::new();
        for (name, key) in &config.hosts {
            let (_, scope) = keys
                .entry(key.id())
                .or_insert_with(|| (Arc::new(key.clone()), Scope::Hosts(Vec::new())));
            if let Scope::Hosts(names) = scope {
                names.push(name.clone());
            }
        }
        // The shared key wins where the same key is also a host's.
        if let Some(key) = &config.key {
            keys.insert(key.id(), (Arc::new(key.clone()), Scope::Any));
        }
        let passwords = keys
            .values()
            .map(|(key, scope)| (key.encode(), scope.clone()))
            .collect();
        Policy {
            passwords,
            keys,
            keyed_hosts: config.hosts.iter().map(|(name, _)| name.clone()).collect(),
            accepts_unsigned: config.accepts_unsigned(),
            allow_from: config.allow_from.clone(),
        }
    }

    /// Whether reports from `addr` are considered at all.
    ///
    /// # Errors
    /// [`Refusal::NotAllowed`] outside `allow_from`.
    pub fn admit(&self, addr: IpAddr) -> Result<(), Refusal> {
        let addr = addr.to_canonical();
        match &self.allow_from {
            Some(networks) if !networks.iter().any(|network| network.contains(&addr)) => {
                Err(Refusal::NotAllowed)
            }
            _ => Ok(()),
        }
    }

    /// Whether an unsigned report for `name` is accepted.
    ///
    /// # Errors
    /// [`Refusal::Unsigned`] when unsigned reports are not accepted at all;
    /// [`Refusal::UnsignedForKeyedHost`] for a name with a key of its own.
    pub fn admit_unsigned(&self, name: &Name) -> Result<(), Refusal> {
        if !self.accepts_unsigned {
            Err(Refusal::Unsigned)
        } else if self.keyed_hosts.contains(name) {
            Err(Refusal::UnsignedForKeyedHost(name.clone()))
        } else {
            Ok(())
        }
    }

    /// The scope of the key written as `password` (its base64 text, as in the config):
    /// how HTTP authenticates (dyndns2's Basic password, the API's bearer token).
    pub fn scope_of_password(&self, password: &str) -> Option<&Scope> {
        self.passwords.get(password.trim())
    }

    /// Whether no key of any kind is configured: then there is nothing to authenticate
    /// readers with, and anyone may already report any name.
    pub fn has_no_keys(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key a datagram names.
    ///
    /// # Errors
    /// [`Refusal::UnknownKey`].
    pub fn key(&self, key_id: KeyId) -> Result<&(Arc<Key>, Scope), Refusal> {
        self.keys.get(&key_id).ok_or(Refusal::UnknownKey(key_id))
    }
}

/// Checks a signed report's name against its key's scope, and its time against the
/// server's clock.
///
/// # Errors
/// [`Refusal::WrongHost`] or [`Refusal::Skew`].
pub fn check_signed(scope: &Scope, name: &Name, signed_at: Time, now: Time) -> Result<(), Refusal> {
    if let Scope::Hosts(names) = scope {
        if !names.contains(name) {
            return Err(Refusal::WrongHost { name: name.clone() });
        }
    }
    let skew = signed_at.as_micros().saturating_sub(now.as_micros());
    let max = MAX_CLOCK_SKEW.as_micros() as i64;
    if !(-max..=max).contains(&skew) {
        return Err(Refusal::Skew {
            skew_secs: skew / 1_000_000,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServerConfig {
        crate::config::parse(text).unwrap().server
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OTHER: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    #[test]
    fn keys_have_scopes() {
        let policy = Policy::new(&config(&format!(
            "[DynIP:Server]\nkey = {KEY}\n[DynIP:Hosts]\npc = {OTHER}\n"
        )));
        let shared = Key::parse(KEY).unwrap();
        let host = Key::parse(OTHER).unwrap();
        assert_eq!(policy.key(shared.id()).unwrap().1, Scope::Any);
        assert_eq!(
            policy.key(host.id()).unwrap().1,
            Scope::Hosts(vec![Name::parse("PC").unwrap()])
        );
        let stranger = Key::from_bytes([1; 32]);
        assert_eq!(
            policy.key(stranger.id()).map(|_| ()),
            Err(Refusal::UnknownKey(stranger.id()))
        );
        let pc = Name::parse("pc").unwrap();
        assert_eq!(policy.admit_unsigned(&pc), Err(Refusal::Unsigned));
        let open = Policy::new(&config(&format!(
            "[DynIP:Server]\nallow_unsigned = yes\n[DynIP:Hosts]\npc = {OTHER}\nnas = {OTHER}\n"
        )));
        assert_eq!(
            open.admit_unsigned(&pc),
            Err(Refusal::UnsignedForKeyedHost(pc.clone()))
        );
        assert_eq!(open.admit_unsigned(&Name::parse("tv").unwrap()), Ok(()));
        assert_eq!(policy.scope_of_password(KEY), Some(&Scope::Any));
        assert_eq!(
            policy.scope_of_password(OTHER),
            Some(&Scope::Hosts(vec![pc.clone()]))
        );
        assert_eq!(policy.scope_of_password(&stranger.encode()), None);
        assert_eq!(policy.scope_of_password("not a key"), None);
        assert!(!policy.has_no_keys());
        assert!(Policy::new(&config("")).has_no_keys());
        let (_, scope) = open.key(host.id()).unwrap();
        assert_eq!(
            check_signed(
                scope,
                &Name::parse("NAS").unwrap(),
                Time::from_micros(0),
                Time::from_micros(0)
            ),
            Ok(())
        );
    }

    #[test]
    fn allow_from_restricts_sources() {
        let policy = Policy::new(&config(
            "[DynIP:Server]\nallow_from = 192.0.2.0/24, 2001:db8::/32\n",
        ));
        assert_eq!(policy.admit("192.0.2.9".parse().unwrap()), Ok(()));
        assert_eq!(policy.admit("::ffff:192.0.2.9".parse().unwrap()), Ok(()));
        assert_eq!(policy.admit("2001:db8::1".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.admit("198.51.100.1".parse().unwrap()),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            Policy::new(&config("")).admit("198.51.100.1".parse().unwrap()),
            Ok(())
        );
    }

    #[test]
    fn signed_reports_stay_in_scope_and_in_time() {
        let pc = Name::parse("pc").unwrap();
        let nas = Name::parse("nas").unwrap();
        let now = Time::from_micros(1_000_000_000_000_000);
        let minutes = |n: i64| Time::from_micros(now.as_micros() + n * 60_000_000);
        assert_eq!(check_signed(&Scope::Any, &nas, now, now), Ok(()));
        let pc_only = Scope::Hosts(vec![pc.clone()]);
        assert_eq!(check_signed(&pc_only, &pc, minutes(4), now), Ok(()));
        assert_eq!(
            check_signed(&pc_only, &nas, now, now),
            Err(Refusal::WrongHost { name: nas })
        );
        assert_eq!(
            check_signed(&Scope::Any, &pc, minutes(-6), now),
            Err(Refusal::Skew { skew_secs: -360 })
        );
    }
}
