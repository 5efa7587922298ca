//! The zone's SOA serial: when what DNS shows last changed, and the serial handed out.
//!
//! Owns [`Serial`] (two atomics the writer, the server's start and the DNS task note
//! changes into, and every DNS thread reads) and [`Staleness`], when addresses go stale
//! under `dns_hide_stale`. What counts as a change DNS can see is
//! [`Record::dns_view`](crate::model::record::Record::dns_view)'s; the table notes one
//! when a commit changes it. No clock: every moment is passed in.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::model::record::{stale_from, Time};

/// When what DNS shows last changed, and the highest serial handed out.
#[derive(Debug, Default)]
pub struct Serial {
    /// When what DNS shows last changed (µs since the Unix epoch): a host added, an
    /// address changed, a host taken offline or back, and with `dns_hide_stale` an
    /// address going stale or reported again after it was. Only rises.
    changed: AtomicI64,
    /// The highest serial handed out, so the serial never goes back even if the clock
    /// does.
    served: AtomicI64,
}

impl Serial {
    /// Notes that what DNS shows changed at `at`, which must be no earlier than the
    /// change became visible to readers.
    pub fn note_change(&self, at: Time) {
        self.changed.fetch_max(at.as_micros(), Ordering::AcqRel);
    }

    /// Notes a commit made at `at` (by this server or another on the same database) that
    /// became visible here at `now`. Every server notes the commit's own time, so their
    /// serials agree; but a change that became visible only in a later second than it was
    /// made may come after a serial counting its second was handed out here, so it is
    /// noted at `now` instead (see [`Serial::at`]).
    pub fn note_commit(&self, at: Time, now: Time) {
        let second = |time: Time| time.as_micros().div_euclid(1_000_000);
        self.note_change(if second(now) > second(at) { now } else { at });
    }

    /// The serial at `now`: the Unix time, in seconds, of the last change DNS can see,
    /// but never later than the second before `now`'s. A change in the current second
    /// therefore shows in the serial only once that second is over, so a secondary that
    /// read the zone during it, before a second change in the same second, still sees the
    /// serial rise after it. The serial rises with every change, also across restarts
    /// (the start is a change), and never goes back.
    pub fn at(&self, now: Time) -> u32 {
        let changed = self.changed.load(Ordering::Acquire).div_euclid(1_000_000);
        let latest = now.as_micros().div_euclid(1_000_000) - 1;
        let candidate = changed.min(latest);
        let served = self.served.load(Ordering::Acquire);
        // Written only when it rises: every DNS thread reads it for every batch.
        let serial = if candidate > served {
            self.served
                .fetch_max(candidate, Ordering::AcqRel)
                .max(candidate)
        } else {
            served
        };
        // SOA serials are 32 bits, compared in RFC 1982 arithmetic: wrapping is fine.
        serial as u32
    }
}

/// With `dns_hide_stale`: what went stale by a moment, and when the next address will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// The latest moment an address went stale, at or before `now` (a change DNS saw).
    pub went_stale: Option<Time>,
    /// The next moment one will (`None`: every address is stale already).
    pub next: Option<Time>,
}

impl Staleness {
    /// Of addresses last seen at `last_seen`, hidden when more than `after` µs old, at
    /// `now`.
    pub fn of(last_seen: impl Iterator<Item = Time>, after: i64, now: Time) -> Staleness {
        let (mut went_stale, mut next): (Option<i64>, Option<i64>) = (None, None);
        for last_seen in last_seen {
            // Hidden from the first microsecond it is more than `after` old.
            let hidden_at = stale_from(last_seen, after).as_micros();
            if hidden_at <= now.as_micros() {
                went_stale = went_stale.max(Some(hidden_at));
            } else {
                next = Some(next.map_or(hidden_at, |next| next.min(hidden_at)));
            }
        }
        Staleness {
            went_stale: went_stale.map(Time::from_micros),
            next: next.map(Time::from_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Time {
        Time::from_micros((seconds * 1e6) as i64)
    }

    #[test]
    fn the_serial_is_the_second_of_the_last_change_once_that_second_is_over() {
        let serial = Serial::default();
        serial.note_change(at(5.5));
        assert_eq!(serial.at(at(5.7)), 4, "the change's second is not over");
        assert_eq!(serial.at(at(6.0)), 5);
        assert_eq!(serial.at(at(100.0)), 5, "nothing changed since");
        serial.note_change(at(100.2));
        assert_eq!(serial.at(at(100.3)), 99);
        assert_eq!(serial.at(at(101.0)), 100);
        assert_eq!(serial.at(at(50.0)), 100, "a clock set back");
        serial.note_change(at(3.0));
        assert_eq!(serial.at(at(200.0)), 100, "changes only rise");
    }

    #[test]
    fn staleness_is_the_latest_gone_and_the_next_to_go() {
        let check =
            |last_seen: &[f64], after_s: f64, now_s: f64, expect: (Option<i64>, Option<i64>)| {
                let staleness = Staleness::of(
                    last_seen.iter().map(|&s| at(s)),
                    (after_s * 1e6) as i64,
                    at(now_s),
                );
                let micros = |t: Option<Time>| t.map(Time::as_micros);
                assert_eq!(
                    (micros(staleness.went_stale), micros(staleness.next)),
                    expect,
                    "last seen {last_seen:?}, hidden after {after_s} s, at {now_s} s"
                );
            };
        // Hidden from the first microsecond more than `after` old.
        check(&[1.0], 10.0, 5.0, (None, Some(11_000_001)));
        check(&[1.0], 10.0, 11.0, (None, Some(11_000_001)));
        check(&[1.0], 10.0, 11.000_001, (Some(11_000_001), None));
        // The latest that went, the earliest still to go.
        check(
            &[1.0, 2.0, 30.0, 40.0],
            10.0,
            20.0,
            (Some(12_000_001), Some(40_000_001)),
        );
        check(&[], 10.0, 20.0, (None, None));
    }
}
