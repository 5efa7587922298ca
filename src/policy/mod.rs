//! Who may report what: the keys, `allow_from`, `allow_unsigned`, and the rate limit on
//! traffic that does not authenticate.
//!
//! Owns [`Policy`] (built from the server's config, swapped whole on SIGHUP); the
//! per-source token buckets ([`Limiter`]) are `limit`'s.
//!
//! Role: pure, like `model` and `proto`: the caller passes addresses and the time in; no
//! sockets, files, clock, threads, tokio or logging (`tests/architecture.rs` checks it).

mod limit;
#[cfg(feature = "server")]
pub mod outbox;

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
use crate::proto::wire::{self, DecodeError, Incoming, Kind, Signed};

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

/// The name of the TSIG key the shared `key` is (DESIGN §6); a host's own key is the TSIG
/// key named after the host.
pub const SHARED_TSIG_KEY: &str = "dynip";

/// The label under a host where ACME's DNS-01 challenge goes.
pub const ACME_CHALLENGE: &str = "_acme-challenge";

/// Which names a TSIG key may change in the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsigScope {
    /// The shared key: any name in the zone.
    Zone,
    /// A host's key: the host and its `_acme-challenge` name.
    Host(Name),
}

impl TsigScope {
    /// Whether a key of this scope may change `relative` (a name relative to the zone,
    /// lowercase; empty: the apex).
    pub fn may_change(&self, relative: &str) -> bool {
        match self {
            TsigScope::Zone => true,
            TsigScope::Host(host) => {
                let host = host.folded();
                relative == host
                    || relative
                        .strip_prefix(ACME_CHALLENGE)
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|rest| rest == host)
            }
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
    /// The TSIG keys by name (lowercase): the shared key as [`SHARED_TSIG_KEY`], each
    /// host's key as the host's name.
    tsig: HashMap<String, (Arc<Key>, TsigScope)>,
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
        let mut tsig: HashMap<String, (Arc<Key>, TsigScope)> = config
            .hosts
            .iter()
            .map(|(name, key)| {
                let scope = TsigScope::Host(name.clone());
                (name.folded().to_string(), (Arc::new(key.clone()), scope))
            })
            .collect();
        if let Some(key) = &config.key {
            tsig.insert(
                SHARED_TSIG_KEY.to_string(),
                (Arc::new(key.clone()), TsigScope::Zone),
            );
        }
        Policy {
            passwords,
            tsig,
            keys,
            keyed_hosts: config.hosts.iter().map(|(name, _)| name.clone()).collect(),
            accepts_unsigned: config.accepts_unsigned(),
            allow_from: config.allow_from.clone(),
        }
    }

    /// The TSIG key named `name` (any case, final dot or not): its secret and what it
    /// may change.
    pub fn tsig_key(&self, name: &str) -> Option<(&[u8], &TsigScope)> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.tsig
            .get(&name)
            .map(|(key, scope)| (key.secret(), scope))
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

/// A report datagram that may go to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// The original's datagram, unsigned: accepted as it is, and never answered.
    Legacy { name: Name },
    /// A signed report, authenticated and in its key's scope and time; the writer still
    /// applies the replay rule. Its acknowledgement is sealed under `key`.
    Signed { signed: Signed, key: Arc<Key> },
}

/// Why a report datagram is dropped. What it says is the log's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Undecodable(#[from] DecodeError),
    #[error("an acknowledgement, not a report")]
    Ack,
}

/// Decides on one report datagram from `addr` at `now`: the source against `allow_from`
/// and `limiter`, then the original's datagram against `allow_unsigned`, or a sealed one
/// opened under the key it names and checked against that key's scope and the clock.
/// A datagram that does not authenticate costs its source a token of `limiter`.
///
/// # Errors
/// Why the datagram is dropped.
pub fn admit_datagram(
    policy: &Policy,
    limiter: &mut Limiter,
    datagram: &[u8],
    addr: IpAddr,
    now: Time,
) -> Result<Admitted, Dropped> {
    policy.admit(addr)?;
    limiter.check(addr, now)?;
    let (signed, key, scope) = match authenticate(policy, datagram) {
        Ok(Authenticated::Legacy(name)) => return Ok(Admitted::Legacy { name }),
        Ok(Authenticated::Signed { signed, key, scope }) => (signed, key, scope),
        Err(dropped) => {
            limiter.charge(addr, now);
            return Err(dropped);
        }
    };
    check_signed(scope, &signed.name, signed.time, now)?;
    Ok(Admitted::Signed {
        signed,
        key: Arc::clone(key),
    })
}

/// Drops a datagram the socket cut (longer than any report), charging its source as for
/// any datagram that does not authenticate.
pub fn drop_cut_datagram(limiter: &mut Limiter, addr: IpAddr, len: usize, now: Time) -> Dropped {
    limiter.charge(addr, now);
    Dropped::Undecodable(DecodeError::TooLong(len))
}

/// A datagram that authenticated, or needs not.
enum Authenticated<'a> {
    Legacy(Name),
    Signed {
        signed: Signed,
        key: &'a Arc<Key>,
        scope: &'a Scope,
    },
}

/// Opens a datagram: every error here is one its source is charged for.
fn authenticate<'a>(policy: &'a Policy, datagram: &[u8]) -> Result<Authenticated<'a>, Dropped> {
    match wire::peek(datagram)? {
        Incoming::Legacy(name) => {
            policy.admit_unsigned(&name)?;
            Ok(Authenticated::Legacy(name))
        }
        Incoming::Sealed {
            kind: Kind::Ack, ..
        } => Err(Dropped::Ack),
        Incoming::Sealed {
            kind: Kind::Report,
            key_id,
        } => {
            let (key, scope) = policy.key(key_id)?;
            let signed = wire::open_report(key, datagram)?;
            Ok(Authenticated::Signed { signed, key, scope })
        }
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
    fn keys_are_tsig_keys_the_shared_one_for_the_zone_a_hosts_for_its_names() {
        let policy = Policy::new(&config(&format!(
            "[DynIP:Server]\nkey = {KEY}\n[DynIP:Hosts]\nKitchen-PC = {OTHER}\n"
        )));
        let (secret, scope) = policy.tsig_key("dynip.").unwrap();
        assert_eq!(secret, Key::parse(KEY).unwrap().secret());
        assert_eq!(scope, &TsigScope::Zone);
        assert!(scope.may_change("anything.at.all") && scope.may_change(""));
        let (secret, scope) = policy.tsig_key("KITCHEN-pc").unwrap();
        assert_eq!(secret, Key::parse(OTHER).unwrap().secret());
        for (relative, may) in [
            ("kitchen-pc", true),
            ("_acme-challenge.kitchen-pc", true),
            ("", false),
            ("nas", false),
            ("_acme-challenge.nas", false),
            ("www.kitchen-pc", false),
            ("_acme-challenge", false),
            ("_acme-challengekitchen-pc", false),
        ] {
            assert_eq!(scope.may_change(relative), may, "{relative:?}");
        }
        assert!(policy.tsig_key("nas").is_none());
        assert!(Policy::new(&config("[DynIP:Server]\n"))
            .tsig_key("dynip")
            .is_none());
    }

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

    /// One datagram through admission: what it gives, and whether its source was
    /// charged for it (a limiter of one token, which a charge empties).
    fn check(
        config_text: &str,
        datagram: &[u8],
        source: &str,
        drained: bool,
        expect: Result<Admitted, Dropped>,
        charged: bool,
    ) {
        let policy = Policy::new(&config(config_text));
        let mut limiter = Limiter::new(1.0, 1.0);
        let addr: IpAddr = source.parse().unwrap();
        let now = Time::from_micros(NOW);
        if drained {
            limiter.charge(addr, now);
        }
        let got = admit_datagram(&policy, &mut limiter, datagram, addr, now);
        assert_eq!(got, expect, "{source}, {datagram:?}");
        assert_eq!(
            limiter.check(addr, now).is_err(),
            charged,
            "charged for {expect:?}"
        );
    }

    const NOW: i64 = 1_700_000_000_000_000;

    fn sealed(key: &str, name: &str, minutes_off: i64) -> (Vec<u8>, Signed) {
        let key = Key::parse(key).unwrap();
        let name = Name::parse(name).unwrap();
        let time = Time::from_micros(NOW + minutes_off * 60_000_000);
        let nonce = [9u8; wire::NONCE_LEN];
        let datagram = wire::seal_report(&key, &nonce, &name, time);
        (datagram, Signed { name, time, nonce })
    }

    fn signed(key: &str, signed: Signed) -> Result<Admitted, Dropped> {
        Ok(Admitted::Signed {
            signed,
            key: Arc::new(Key::parse(key).unwrap()),
        })
    }

    #[test]
    fn datagrams_are_admitted_or_dropped_for_their_reason() {
        let keyed = format!("[DynIP:Server]\nkey = {KEY}\n[DynIP:Hosts]\npc = {OTHER}\n");
        let open = format!("[DynIP:Server]\nallow_unsigned = yes\n[DynIP:Hosts]\npc = {OTHER}\n");
        let fenced = format!("[DynIP:Server]\nkey = {KEY}\nallow_from = 192.0.2.0/24\n");
        let from = "198.51.100.7";
        let name = |text: &str| Name::parse(text).unwrap();
        let refused = |refusal| Err(Dropped::Refused(refusal));
        let undecodable = |error| Err(Dropped::Undecodable(error));

        // Unsigned: allowed with allow_unsigned, never for a name with a key.
        let tv = Ok(Admitted::Legacy { name: name("tv") });
        check(&open, b"tv\n", from, false, tv, false);
        check(&keyed, b"tv", from, false, refused(Refusal::Unsigned), true);
        let keyed_host = refused(Refusal::UnsignedForKeyedHost(name("pc")));
        check(&open, b"pc", from, false, keyed_host, true);

        // Signed: the shared key for any name, the host's key for its name.
        let (datagram, report) = sealed(KEY, "nas", 0);
        check(&keyed, &datagram, from, false, signed(KEY, report), false);
        let (datagram, report) = sealed(OTHER, "pc", 4);
        check(&keyed, &datagram, from, false, signed(OTHER, report), false);

        // A key the server does not know, a tag that does not verify.
        let stranger = Key::from_bytes([1; 32]);
        let (datagram, _) = sealed(&stranger.encode(), "pc", 0);
        let unknown = refused(Refusal::UnknownKey(stranger.id()));
        check(&keyed, &datagram, from, false, unknown, true);
        let (mut datagram, _) = sealed(KEY, "pc", 0);
        *datagram.last_mut().unwrap() ^= 1;
        let forged = undecodable(DecodeError::Unauthentic);
        check(&keyed, &datagram, from, false, forged, true);

        // Authentic, but out of scope or out of time: not charged.
        let (datagram, _) = sealed(OTHER, "nas", 0);
        let wrong_host = refused(Refusal::WrongHost { name: name("nas") });
        check(&keyed, &datagram, from, false, wrong_host, false);
        let (datagram, _) = sealed(KEY, "pc", 6);
        let ahead = refused(Refusal::Skew { skew_secs: 360 });
        check(&keyed, &datagram, from, false, ahead, false);
        let (datagram, _) = sealed(KEY, "pc", -6);
        let behind = refused(Refusal::Skew { skew_secs: -360 });
        check(&keyed, &datagram, from, false, behind, false);

        // Not a report at all.
        let empty = undecodable(DecodeError::Empty);
        check(&keyed, b"", from, false, empty, true);
        let ack = wire::Ack {
            report_nonce: [9; wire::NONCE_LEN],
            seen: "198.51.100.7:4000".parse().unwrap(),
            server_time: Time::from_micros(NOW),
        };
        let ack = wire::seal_ack(&Key::parse(KEY).unwrap(), &[3; wire::NONCE_LEN], &ack);
        check(&keyed, &ack, from, false, Err(Dropped::Ack), true);

        // The source first: outside allow_from, or out of tokens, nothing is opened.
        let (datagram, report) = sealed(KEY, "pc", 0);
        let inside = "192.0.2.1";
        check(
            &fenced,
            &datagram,
            inside,
            false,
            signed(KEY, report),
            false,
        );
        let outside = refused(Refusal::NotAllowed);
        check(&fenced, &datagram, from, false, outside, false);
        let limited = refused(Refusal::RateLimited);
        check(&keyed, &datagram, from, true, limited, true);
    }

    #[test]
    fn a_cut_datagram_is_dropped_as_too_long_and_charged() {
        let mut limiter = Limiter::new(1.0, 1.0);
        let addr: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Time::from_micros(NOW);
        let dropped = drop_cut_datagram(&mut limiter, addr, 4000, now);
        assert_eq!(dropped, Dropped::Undecodable(DecodeError::TooLong(4000)));
        assert_eq!(
            dropped.to_string(),
            "datagram of 4000 bytes is too large for a report"
        );
        assert_eq!(limiter.check(addr, now), Err(Refusal::RateLimited));
    }
}
