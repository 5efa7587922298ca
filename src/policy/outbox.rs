//! When a sink's events go, and what becomes of them: [`SinkQueue`], the schedule of one
//! sink's thread.
//!
//! The rules: a host's events go oldest first, and a host whose delivery fails waits
//! (its later events are not sent past it) while other hosts go on. The first event of a
//! quiet host goes at once; after a message, what comes within `coalesce` waits for the
//! end of that interval and goes as one message with the latest state and the count
//! ([`due_at`], [`Delivery::coalesced`]); with `coalesce = 0` each event goes alone. A
//! failed try is tried again after the receiver's `Retry-After` when it gave one (at least
//! [`FIRST_RETRY`], at most [`MAX_RETRY_AFTER`]), else after [`backoff`]; a refusal for good ends the events it
//! carried; an event older than `max_age` is not sent but given back as expired.
//!
//! Pure: the caller passes the time and the jitter in. The thread takes a due batch,
//! sends it, and settles it before it takes the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::model::event::Event;
use crate::model::name::Name;
use crate::model::record::Time;
use crate::proto::notify::{backoff, due_at, Delivery, DeliveryVerdict, FIRST_RETRY};

/// The longest a receiver's `Retry-After` is honoured: a receiver asking for a day is
/// asked again within the hour.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One sink's pending events, by host, and when each host is due.
#[derive(Debug)]
pub struct SinkQueue {
    coalesce: Duration,
    max_age: Duration,
    hosts: HashMap<Name, HostQueue>,
    /// Hosts with events to send and none in flight, by when they are due.
    schedule: BTreeSet<(Time, Name)>,
    /// Every pending event's time, by id: the oldest, and how many.
    pending: BTreeMap<i64, Time>,
    /// When hosts were last sent to, oldest first: a host with nothing pending is
    /// forgotten once its interval is over.
    sent: VecDeque<(Time, Name)>,
}

#[derive(Debug, Default)]
struct HostQueue {
    events: VecDeque<(i64, Event)>,
    last_sent: Option<Time>,
    /// Failed tries of what is at the head.
    failures: u32,
    retry_at: Option<Time>,
    in_flight: bool,
}

/// What a sink's thread sends next: one host's due events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub host: Name,
    /// The ids `delivery` stands for, oldest first.
    pub ids: Vec<i64>,
    /// The message; `None` when every due event had expired.
    pub delivery: Option<Delivery>,
    /// Events older than `max_age`, not sent: given up.
    pub expired: Vec<i64>,
    /// Which try this is (1: the first).
    pub attempt: u32,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchEnd {
    pub delivered: Vec<i64>,
    pub failed: Vec<i64>,
    /// Tried again at this time.
    pub retry_at: Option<Time>,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn later(at: Time, by: Duration) -> Time {
    Time::from_micros(at.as_micros().saturating_add(micros(by)))
}

impl SinkQueue {
    pub fn new(coalesce: Duration, max_age: Duration) -> SinkQueue {
        SinkQueue {
            coalesce,
            max_age,
            hosts: HashMap::new(),
            schedule: BTreeSet::new(),
            pending: BTreeMap::new(),
            sent: VecDeque::new(),
        }
    }

    /// Queues an event (ids rise with each call).
    pub fn push(&mut self, id: i64, event: Event) {
        self.pending.insert(id, event.at);
        let host = event.host.clone();
        let queue = self.hosts.entry(host.clone()).or_default();
        let was_idle = queue.events.is_empty() && !queue.in_flight;
        queue.events.push_back((id, event));
        if was_idle {
            let due = self.due(&host);
            self.schedule.insert((due, host));
        }
    }

    /// When `host` (with events, none in flight) is due.
    fn due(&self, host: &Name) -> Time {
        let queue = &self.hosts[host];
        match queue.retry_at {
            Some(at) => at,
            None => {
                let oldest = queue
                    .events
                    .front()
                    .map_or(Time::from_micros(0), |e| e.1.at);
                due_at(oldest, queue.last_sent, self.coalesce)
            }
        }
    }

    /// The earliest time a host is due; `None` with nothing to send.
    pub fn next_due(&self) -> Option<Time> {
        self.schedule.first().map(|(at, _)| *at)
    }

    /// A due host's batch at `now`, if one is due.
    pub fn take(&mut self, now: Time) -> Option<Batch> {
        self.forget_quiet_hosts(now);
        let (due, _) = self.schedule.first()?;
        if *due > now {
            return None;
        }
        let (_, host) = self.schedule.pop_first()?;
        let cutoff = now.as_micros().saturating_sub(micros(self.max_age));
        let queue = self.hosts.get_mut(&host)?;
        let mut expired = Vec::new();
        queue.events.retain(|(id, event)| {
            let keep = event.at.as_micros() >= cutoff;
            if !keep {
                expired.push(*id);
            }
            keep
        });
        for id in &expired {
            self.pending.remove(id);
        }
        let n_sent = match self.coalesce.is_zero() {
            true => queue.events.len().min(1),
            false => queue.events.len(),
        };
        let sent: Vec<(i64, Event)> = queue.events.iter().take(n_sent).cloned().collect();
        queue.in_flight = true;
        Some(Batch {
            host,
            ids: sent.iter().map(|(id, _)| *id).collect(),
            delivery: Delivery::coalesced(&sent),
            expired,
            attempt: queue.failures + 1,
        })
    }

    /// What became of `batch`, taken last for its host, at `now`; `jitter` in `[0, 1)`
    /// spreads retries ([`backoff`]).
    pub fn settle(
        &mut self,
        batch: Batch,
        verdict: DeliveryVerdict,
        now: Time,
        jitter: f64,
    ) -> BatchEnd {
        let mut end = BatchEnd::default();
        let Some(queue) = self.hosts.get_mut(&batch.host) else {
            return end;
        };
        queue.in_flight = false;
        let n_sent = batch.ids.len();
        match verdict {
            _ if batch.delivery.is_none() => {}
            DeliveryVerdict::Delivered | DeliveryVerdict::Permanent => {
                let done: Vec<i64> = queue.events.drain(..n_sent).map(|(id, _)| id).collect();
                for id in &done {
                    self.pending.remove(id);
                }
                queue.failures = 0;
                queue.retry_at = None;
                queue.last_sent = Some(now);
                if !self.coalesce.is_zero() {
                    self.sent.push_back((now, batch.host.clone()));
                }
                match verdict {
                    DeliveryVerdict::Delivered => end.delivered = done,
                    _ => end.failed = done,
                }
            }
            DeliveryVerdict::Retry { after } => {
                queue.failures += 1;
                let wait = match after {
                    // At least a second: `Retry-After: 0` must not make the thread spin.
                    Some(after) => after.clamp(FIRST_RETRY, MAX_RETRY_AFTER),
                    None => backoff(queue.failures, jitter),
                };
                let at = later(now, wait);
                queue.retry_at = Some(at);
                end.retry_at = Some(at);
            }
        }
        if queue.events.is_empty() {
            queue.failures = 0;
            queue.retry_at = None;
            if queue.last_sent.is_none() || self.coalesce.is_zero() {
                self.hosts.remove(&batch.host);
            }
        } else {
            let due = self.due(&batch.host);
            self.schedule.insert((due, batch.host));
        }
        end
    }

    /// Forgets hosts with nothing pending whose last message is older than `coalesce`.
    fn forget_quiet_hosts(&mut self, now: Time) {
        while let Some((at, _)) = self.sent.front() {
            if later(*at, self.coalesce) > now {
                break;
            }
            let Some((at, host)) = self.sent.pop_front() else {
                break;
            };
            let quiet = self.hosts.get(&host).is_some_and(|queue| {
                queue.events.is_empty() && !queue.in_flight && queue.last_sent == Some(at)
            });
            if quiet {
                self.hosts.remove(&host);
            }
        }
    }

    /// Pending events (in flight included).
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The time of the oldest pending event (by id), for the metrics.
    pub fn oldest(&self) -> Option<Time> {
        self.pending.first_key_value().map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::event::{Addresses, EventKind};

    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    fn at(seconds: i64) -> Time {
        Time::from_micros(seconds * 1_000_000)
    }

    fn event(host: &str, seconds: i64, last_octet: u8) -> Event {
        Event {
            kind: EventKind::Changed,
            host: Name::parse(host).unwrap(),
            at: at(seconds),
            ipv4: Addresses {
                old: None,
                new: Some([192, 0, 2, last_octet].into()),
            },
            ipv6: Addresses {
                old: None,
                new: None,
            },
        }
    }

    /// Takes and settles everything due at `now` with `verdict`; returns the batches.
    fn run(queue: &mut SinkQueue, now: Time, verdict: DeliveryVerdict) -> Vec<Batch> {
        let mut batches = Vec::new();
        while let Some(batch) = queue.take(now) {
            queue.settle(batch.clone(), verdict, now, 0.0);
            batches.push(batch);
        }
        batches
    }

    #[test]
    fn a_quiet_hosts_first_event_goes_at_once() {
        let mut queue = SinkQueue::new(MINUTE, DAY);
        assert_eq!(queue.next_due(), None);
        queue.push(1, event("pc", 10, 1));
        assert_eq!(queue.next_due(), Some(at(10)));
        assert_eq!(queue.take(at(9)), None);
        let batch = queue.take(at(10)).unwrap();
        assert_eq!((batch.ids.clone(), batch.attempt), (vec![1], 1));
        let delivery = batch.delivery.clone().unwrap();
        assert_eq!((delivery.id, delivery.count), (1, 1));
        let end = queue.settle(batch, DeliveryVerdict::Delivered, at(10), 0.0);
        assert_eq!(end.delivered, [1]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_host_flapping_every_second_for_a_minute_makes_two_messages() {
        let mut queue = SinkQueue::new(MINUTE, DAY);
        let mut messages = Vec::new();
        for second in 0..60 {
            queue.push(second + 1, event("flappy", second, (second % 2) as u8));
            messages.extend(run(&mut queue, at(second), DeliveryVerdict::Delivered));
        }
        assert_eq!(messages.len(), 1, "only the first during the minute");
        assert_eq!(queue.next_due(), Some(at(60)));
        messages.extend(run(&mut queue, at(60), DeliveryVerdict::Delivered));
        let counts: Vec<u32> = messages
            .iter()
            .map(|batch| batch.delivery.as_ref().unwrap().count)
            .collect();
        assert_eq!(counts, [1, 59]);
        let last = messages[1].delivery.as_ref().unwrap();
        assert_eq!(
            (last.id, last.event.ipv4.new),
            (60, Some([192, 0, 2, 1].into()))
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn without_coalescing_each_event_goes_alone_in_order() {
        let mut queue = SinkQueue::new(Duration::ZERO, DAY);
        for id in 1..=3 {
            queue.push(id, event("pc", 10, id as u8));
        }
        let ids: Vec<Vec<i64>> = run(&mut queue, at(10), DeliveryVerdict::Delivered)
            .into_iter()
            .map(|batch| batch.ids)
            .collect();
        assert_eq!(ids, [[1], [2], [3]]);
    }

    #[test]
    fn a_failing_host_waits_in_order_while_others_go_on() {
        let mut queue = SinkQueue::new(Duration::ZERO, DAY);
        queue.push(1, event("a", 10, 1));
        queue.push(2, event("b", 10, 1));
        queue.push(3, event("a", 11, 2));
        let first = queue.take(at(11)).unwrap();
        assert_eq!((first.host.as_str(), first.ids.clone()), ("a", vec![1]));
        let end = queue.settle(first, DeliveryVerdict::Retry { after: None }, at(11), 0.0);
        assert_eq!(end.retry_at, Some(at(12)), "the first retry after a second");
        // b goes; a's later event does not pass its head.
        let b = run(&mut queue, at(11), DeliveryVerdict::Delivered);
        assert_eq!(
            b.iter().map(|batch| batch.ids.clone()).collect::<Vec<_>>(),
            [[2]]
        );
        assert_eq!(queue.next_due(), Some(at(12)));
        let again = queue.take(at(12)).unwrap();
        assert_eq!((again.ids.clone(), again.attempt), (vec![1], 2));
        queue.settle(again, DeliveryVerdict::Delivered, at(12), 0.0);
        let rest = run(&mut queue, at(12), DeliveryVerdict::Delivered);
        assert_eq!(rest[0].ids, [3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn retries_back_off_to_the_cap_and_honour_retry_after() {
        let mut queue = SinkQueue::new(Duration::ZERO, DAY);
        queue.push(1, event("pc", 0, 1));
        let mut now = at(0);
        let mut waits = Vec::new();
        for _ in 0..12 {
            let batch = queue.take(now).unwrap();
            let end = queue.settle(batch, DeliveryVerdict::Retry { after: None }, now, 0.0);
            let next = end.retry_at.unwrap();
            waits.push((next.as_micros() - now.as_micros()) / 1_000_000);
            now = next;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let batch = queue.take(now).unwrap();
        let hint = DeliveryVerdict::Retry {
            after: Some(Duration::from_secs(7)),
        };
        let end = queue.settle(batch, hint, now, 0.0);
        assert_eq!(end.retry_at, Some(later(now, Duration::from_secs(7))));
        let batch = queue.take(end.retry_at.unwrap()).unwrap();
        let days = DeliveryVerdict::Retry { after: Some(DAY) };
        let end = queue.settle(batch, days, now, 0.0);
        assert_eq!(end.retry_at, Some(later(now, MAX_RETRY_AFTER)));
        let batch = queue.take(end.retry_at.unwrap()).unwrap();
        let at_once = DeliveryVerdict::Retry {
            after: Some(Duration::ZERO),
        };
        let end = queue.settle(batch, at_once, now, 0.0);
        assert_eq!(end.retry_at, Some(later(now, FIRST_RETRY)), "no spinning");
    }

    #[test]
    fn a_refusal_for_good_ends_the_batch_and_the_host_goes_on() {
        let mut queue = SinkQueue::new(MINUTE, DAY);
        queue.push(1, event("pc", 10, 1));
        let batch = queue.take(at(10)).unwrap();
        queue.push(2, event("pc", 11, 2));
        let end = queue.settle(batch, DeliveryVerdict::Permanent, at(10), 0.0);
        assert_eq!((end.failed, end.delivered), (vec![1], vec![]));
        assert_eq!(queue.len(), 1);
        assert_eq!(
            queue.next_due(),
            Some(at(70)),
            "coalesced after the last try"
        );
    }

    #[test]
    fn events_older_than_max_age_are_given_back_not_sent() {
        let mut queue = SinkQueue::new(Duration::ZERO, Duration::from_secs(100));
        queue.push(1, event("pc", 0, 1));
        queue.push(2, event("pc", 150, 2));
        let batch = queue.take(at(160)).unwrap();
        assert_eq!(
            (batch.expired.clone(), batch.ids.clone()),
            (vec![1], vec![2])
        );
        queue.settle(batch, DeliveryVerdict::Delivered, at(160), 0.0);
        // Only expired ones: nothing to send, and the host does not stick.
        queue.push(3, event("nas", 0, 1));
        let batch = queue.take(at(200)).unwrap();
        assert_eq!(
            (batch.expired.clone(), batch.delivery.clone()),
            (vec![3], None)
        );
        queue.settle(batch, DeliveryVerdict::Delivered, at(200), 0.0);
        assert!(queue.is_empty());
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn len_and_oldest_follow_the_pending_events() {
        let mut queue = SinkQueue::new(Duration::ZERO, DAY);
        queue.push(1, event("a", 5, 1));
        queue.push(2, event("b", 7, 1));
        assert_eq!((queue.len(), queue.oldest()), (2, Some(at(5))));
        run(&mut queue, at(5), DeliveryVerdict::Delivered);
        assert_eq!((queue.len(), queue.oldest()), (1, Some(at(7))));
        run(&mut queue, at(7), DeliveryVerdict::Delivered);
        assert_eq!((queue.len(), queue.oldest()), (0, None));
    }

    proptest! {
        /// Whatever the order of pushes, failures and refusals, every event ends once
        /// (delivered, failed or expired) when the sink finally takes everything, and a
        /// host's delivered events go in id order.
        #[test]
        fn every_event_ends_once_and_hosts_keep_their_order(
            steps in proptest::collection::vec((0u8..4, 0u8..3, 0u8..10), 1..120),
            coalesce in 0u64..5,
        ) {
            let mut queue = SinkQueue::new(Duration::from_secs(coalesce), Duration::from_secs(50));
            let (mut next_id, mut now) = (1i64, 0i64);
            let mut ended: Vec<i64> = Vec::new();
            let mut delivered: BTreeMap<Name, Vec<i64>> = BTreeMap::new();
            let mut settle = |queue: &mut SinkQueue, batch: Batch, verdict, now| {
                ended.extend(&batch.expired);
                let host = batch.host.clone();
                let end = queue.settle(batch, verdict, at(now), 0.5);
                delivered.entry(host).or_default().extend(&end.delivered);
                ended.extend(end.delivered);
                ended.extend(end.failed);
            };
            for (host, outcome, wait) in steps {
                queue.push(next_id, event(&format!("h{host}"), now, 1));
                next_id += 1;
                now += i64::from(wait);
                while let Some(batch) = queue.take(at(now)) {
                    let verdict = match outcome {
                        0 => DeliveryVerdict::Retry { after: None },
                        1 => DeliveryVerdict::Permanent,
                        _ => DeliveryVerdict::Delivered,
                    };
                    let failing = matches!(verdict, DeliveryVerdict::Retry { .. });
                    settle(&mut queue, batch, verdict, now);
                    if failing {
                        break;
                    }
                }
            }
            // The sink comes back for good.
            while let Some(due) = queue.next_due() {
                now = now.max(due.as_micros() / 1_000_000 + 1);
                while let Some(batch) = queue.take(at(now)) {
                    settle(&mut queue, batch, DeliveryVerdict::Delivered, now);
                }
            }
            ended.sort_unstable();
            prop_assert_eq!(ended, (1..next_id).collect::<Vec<_>>());
            for ids in delivered.values() {
                prop_assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
            }
            prop_assert!(queue.is_empty());
        }
    }
}
