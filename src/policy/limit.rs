//! Token buckets per source: how much one source may do per second, and in a burst.
//!
//! Owns [`Limiter`], configured twice: the report edges (UDP, HTTP) charge it for traffic
//! that does not authenticate, per host ([`Limiter::new`]: an IPv4 address, an IPv6 /64);
//! the DNS threads take one token per response, per network ([`Limiter::by_prefix`]: a
//! /24 and a /56), and say [`RateDecision::Slip`] every other time over the rate.
//!
//! Pure: the caller passes `now`; no clock, sockets or logging.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Refusal;
use crate::model::record::Time;

/// Sources tracked at most by one limiter. When full, buckets that have refilled are
/// forgotten (their sources are not over the limit); a flood from more sources than this
/// still costs each what it costs to handle.
const MAX_SOURCES: usize = 65_536;

/// What the rate limit says about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Send,
    /// Over the limit: send nothing.
    Drop,
    /// Over the limit, but every other time send an empty answer with TC set, so a real
    /// client behind a busy network retries over TCP (BIND's "slip 2").
    Slip,
}

/// Per-source token buckets: `per_sec` tokens a second, at most `burst` saved up. A rate
/// of zero is no limit.
#[derive(Debug)]
pub struct Limiter {
    buckets: HashMap<u128, Bucket>,
    per_sec: f64,
    burst: f64,
    /// The bits of an IPv4 address (as an IPv4-mapped IPv6 address) that name its
    /// source, and of an IPv6 address.
    v4_mask: u128,
    v6_mask: u128,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Time,
    /// Times over the limit, for [`RateDecision::Slip`] every other time.
    n_limited: u64,
}

/// The first `len` bits of 128.
fn prefix_mask(len: u8) -> u128 {
    match len {
        0 => 0,
        len => u128::MAX << (128 - u32::from(len.min(128))),
    }
}

impl Limiter {
    /// A limiter of `per_sec` tokens a second and `burst` at most, per host: an IPv4
    /// address, or an IPv6 /64 (one customer's allocation).
    pub fn new(per_sec: f64, burst: f64) -> Limiter {
        Limiter {
            buckets: HashMap::new(),
            per_sec,
            burst,
            v4_mask: prefix_mask(96 + 32),
            v6_mask: prefix_mask(64),
        }
    }

    /// The same limiter, per network instead: an IPv4 address's first `v4_len` bits, an
    /// IPv6 address's first `v6_len`.
    pub fn by_prefix(self, v4_len: u8, v6_len: u8) -> Limiter {
        Limiter {
            v4_mask: prefix_mask(96 + v4_len.min(32)),
            v6_mask: prefix_mask(v6_len),
            ..self
        }
    }

    /// The source `addr` is counted as: its network, IPv4 tagged by IPv4 mapping.
    fn source(&self, addr: IpAddr) -> u128 {
        match addr.to_canonical() {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()) & self.v4_mask,
            IpAddr::V6(v6) => u128::from(v6) & self.v6_mask,
        }
    }

    fn is_off(&self) -> bool {
        self.per_sec == 0.0
    }

    /// Whether `addr` may still be heard, spending nothing: a source never charged may.
    ///
    /// # Errors
    /// [`Refusal::RateLimited`] while the source has no token.
    pub fn check(&mut self, addr: IpAddr, now: Time) -> Result<(), Refusal> {
        if self.is_off() {
            return Ok(());
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let Some(bucket) = self.buckets.get_mut(&self.source(addr)) else {
            return Ok(());
        };
        bucket.refill(now, per_sec, burst);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Refusal::RateLimited)
        }
    }

    /// Charges `addr` one token (for a datagram or request that did not authenticate);
    /// an empty bucket stays empty.
    pub fn charge(&mut self, addr: IpAddr, now: Time) {
        if self.is_off() {
            return;
        }
        let bucket = self.bucket(addr, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Takes a token for one response to `addr`, if it has one.
    pub fn take(&mut self, addr: IpAddr, now: Time) -> RateDecision {
        if self.is_off() {
            return RateDecision::Send;
        }
        let bucket = self.bucket(addr, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return RateDecision::Send;
        }
        bucket.n_limited += 1;
        if bucket.n_limited % 2 == 0 {
            RateDecision::Slip
        } else {
            RateDecision::Drop
        }
    }

    /// `addr`'s bucket, refilled to `now`; a new one is full.
    fn bucket(&mut self, addr: IpAddr, now: Time) -> &mut Bucket {
        let (per_sec, burst) = (self.per_sec, self.burst);
        if self.buckets.len() >= MAX_SOURCES {
            self.buckets.retain(|_, bucket| {
                bucket.refill(now, per_sec, burst);
                bucket.tokens < burst
            });
        }
        let bucket = self.buckets.entry(self.source(addr)).or_insert(Bucket {
            tokens: burst,
            updated: now,
            n_limited: 0,
        });
        bucket.refill(now, per_sec, burst);
        bucket
    }
}

impl Bucket {
    fn refill(&mut self, now: Time, per_sec: f64, burst: f64) {
        let elapsed_secs = now
            .as_micros()
            .saturating_sub(self.updated.as_micros())
            .max(0) as f64
            / 1e6;
        self.tokens = (self.tokens + elapsed_secs * per_sec).min(burst);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Time {
        Time::from_micros(millis * 1000)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_is_allowed_then_one_token_per_period() {
        let mut limiter = Limiter::new(2.0, 3.0);
        let source = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.check(source, at(0)), Ok(()));
            limiter.charge(source, at(0));
        }
        assert_eq!(limiter.check(source, at(0)), Err(Refusal::RateLimited));
        assert_eq!(limiter.check(source, at(499)), Err(Refusal::RateLimited));
        assert_eq!(
            limiter.check(source, at(500)),
            Ok(()),
            "half a second: one token"
        );
        limiter.charge(source, at(500));
        assert_eq!(limiter.check(source, at(500)), Err(Refusal::RateLimited));
        // An hour's rest refills to the burst, no more.
        let later = 3_600_000;
        for _ in 0..3 {
            assert_eq!(limiter.check(source, at(later)), Ok(()));
            limiter.charge(source, at(later));
        }
        assert_eq!(limiter.check(source, at(later)), Err(Refusal::RateLimited));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut limiter = Limiter::new(1.0, 1.0);
        let source = ip("192.0.2.1");
        limiter.charge(source, at(10_000));
        assert_eq!(limiter.check(source, at(0)), Err(Refusal::RateLimited));
        assert_eq!(limiter.check(source, at(999)), Err(Refusal::RateLimited));
        assert_eq!(limiter.check(source, at(1_000)), Ok(()));
    }

    #[test]
    fn sources_are_hosts_or_networks() {
        // (configuration, first, second, counted as one source)
        let hosts = || Limiter::new(1.0, 1.0);
        let networks = || Limiter::new(1.0, 1.0).by_prefix(24, 56);
        let cases = [
            (hosts(), "192.0.2.1", "192.0.2.1", true),
            (hosts(), "192.0.2.1", "192.0.2.2", false),
            (hosts(), "::ffff:192.0.2.1", "192.0.2.1", true),
            (hosts(), "2001:db8:0:1::1", "2001:db8:0:1:ffff::2", true),
            (hosts(), "2001:db8:0:1::1", "2001:db8:0:2::1", false),
            (hosts(), "0.0.0.1", "::1", false),
            (networks(), "192.0.2.1", "192.0.2.254", true),
            (networks(), "192.0.2.1", "192.0.3.1", false),
            (networks(), "::ffff:192.0.2.1", "192.0.2.9", true),
            (networks(), "2001:db8:0:ff::1", "2001:db8:0:1::2", true),
            (networks(), "2001:db8:0:100::1", "2001:db8::1", false),
        ];
        for (mut limiter, first, second, same) in cases {
            limiter.charge(ip(first), at(0));
            let limited = limiter.check(ip(second), at(0)).is_err();
            assert_eq!(limited, same, "{first} and {second}");
        }
    }

    #[test]
    fn responses_over_the_rate_are_dropped_or_slip_in_turn() {
        use RateDecision::*;
        let mut limiter = Limiter::new(3.0, 3.0).by_prefix(24, 56);
        let source = ip("192.0.2.7");
        let decisions: Vec<RateDecision> = (0..7).map(|_| limiter.take(source, at(0))).collect();
        assert_eq!(decisions, [Send, Send, Send, Drop, Slip, Drop, Slip]);
        assert_eq!(limiter.take(ip("192.0.2.200"), at(0)), Drop, "the same /24");
        assert_eq!(limiter.take(ip("198.51.100.1"), at(0)), Send);
        assert_eq!(limiter.take(source, at(400)), Send, "refilled after 0.4 s");
        assert_eq!(limiter.take(source, at(400)), Slip);
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let mut limiter = Limiter::new(0.0, 0.0).by_prefix(24, 56);
        let source = ip("192.0.2.7");
        for _ in 0..10 {
            assert_eq!(limiter.take(source, at(0)), RateDecision::Send);
            limiter.charge(source, at(0));
        }
        assert_eq!(limiter.check(source, at(0)), Ok(()));
        assert!(limiter.buckets.is_empty());
    }

    #[test]
    fn a_full_table_forgets_the_sources_that_refilled() {
        let mut limiter = Limiter::new(1.0, 3.0);
        let drained = ip("198.51.100.1");
        for _ in 0..3 {
            limiter.charge(drained, at(0));
        }
        for idx in 0..MAX_SOURCES - 1 {
            let other = std::net::Ipv4Addr::from(0x0a00_0000 + idx as u32);
            limiter.charge(IpAddr::V4(other), at(0));
        }
        assert_eq!(limiter.buckets.len(), MAX_SOURCES);
        // 1.5 s later the others are full again, the drained source is not.
        limiter.charge(ip("203.0.113.1"), at(1_500));
        assert_eq!(limiter.buckets.len(), 2);
        limiter.charge(drained, at(1_500));
        assert_eq!(
            limiter.check(drained, at(1_500)),
            Err(Refusal::RateLimited),
            "remembered: 1.5 tokens, less one"
        );
    }
}
