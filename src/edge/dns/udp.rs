//! DNS over UDP: the answering threads, each on its own `SO_REUSEPORT` socket, and the
//! response rate limit they share.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use nix::errno::Errno;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::counters::{rcode_index, Counters, Counts};
use super::interior::Interior;
use super::serial;
use super::update::{Deliver, Gate, Gated};
use crate::edge::net::{self, RecvBatch, RecvHeaders, SendHeaders, Wait};
use crate::model::record::Time;
use crate::policy::{Limiter, RateDecision};
use crate::proto::zone::{self, Reply, Transport, Zone};
use crate::state;
use crate::state::table::Table;

/// Queries per `recvmmsg` (and answers per `sendmmsg`): past 32 a system call's cost is
/// already spread thin, and a batch stays within the L1 cache.
pub(super) const BATCH: usize = 32;
/// Room for one query. A longer datagram (flagged `MSG_TRUNC`) is dropped: no valid query
/// for this zone comes near it.
const SLOT: usize = 4096;

/// A query of the batch that has an answer, waiting for the rate limit's decision.
#[derive(Debug, Clone, Copy)]
struct Answered {
    /// Its slot in the batch, and its answer's.
    idx: usize,
    peer: SocketAddr,
    rcode: ResponseCode,
    truncated: bool,
}

/// One UDP thread.
pub(super) struct UdpServer {
    zone: Arc<Zone>,
    table: Arc<Table>,
    counters: Arc<Counters>,
    /// Shared by the UDP threads, taken once per batch.
    limiter: Arc<Mutex<Limiter>>,
    shutdown: CancellationToken,
    /// Where each name answered so far lives in the table.
    slots: Slots,
    interior: Arc<Interior>,
    gate: Arc<Gate>,
}

impl UdpServer {
    pub(super) fn new(
        zone: Arc<Zone>,
        table: Arc<Table>,
        counters: Arc<Counters>,
        limiter: Arc<Mutex<Limiter>>,
        shutdown: CancellationToken,
        interior: Arc<Interior>,
        gate: Arc<Gate>,
    ) -> UdpServer {
        UdpServer {
            zone,
            table,
            counters,
            limiter,
            shutdown,
            slots: Slots::default(),
            interior,
            gate,
        }
    }

    pub(super) fn run(self, socket: &UdpSocket, outbox: &Arc<UpdateAnswers>) {
        let fd = socket.as_raw_fd();
        let mut batch = RecvBatch::new(BATCH, SLOT);
        let mut answers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
        let mut recv_headers = RecvHeaders::new(BATCH);
        let mut send_headers = SendHeaders::new(BATCH);
        let mut outgoing: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut answered: Vec<Answered> = Vec::with_capacity(BATCH);
        let mut decisions: Vec<RateDecision> = Vec::with_capacity(BATCH);
        while !self.shutdown.is_cancelled() {
            let n_received = match batch.receive(fd, &mut recv_headers, Wait::Yes) {
                Ok(n_received) => n_received,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "dns receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let now = Time::now();
            let serial = serial(&self.table);
            let mut counts = Counts::default();
            outgoing.clear();
            let hosts = UdpHosts {
                table: &self.table,
                slots: &self.slots,
                interior: &self.interior,
            };
            answered.clear();
            for (idx, answer) in answers.iter_mut().enumerate().take(n_received) {
                let datagram = batch.datagram(idx);
                let Some(peer) = datagram.peer else { continue };
                // Cut, so longer than any query: dropped as malformed.
                let query = if datagram.truncated {
                    &[]
                } else {
                    datagram.bytes
                };
                let deliver = || -> Deliver {
                    let outbox = Arc::clone(outbox);
                    Box::new(move |answer| outbox.push(peer, answer))
                };
                let signer = match self.gate.check(query, now, answer, deliver) {
                    Gated::Plain => None,
                    Gated::Signed(signer) => Some(signer),
                    Gated::Answered(rcode) => {
                        answered.push(Answered {
                            idx,
                            peer,
                            rcode,
                            truncated: false,
                        });
                        continue;
                    }
                    // Answered by the writer once committed.
                    Gated::Sent => continue,
                };
                let mut reply =
                    self.zone
                        .respond(query, Transport::Udp, serial, now, &hosts, answer);
                if let (Some(signer), Reply::Answer { truncated, .. }) = (&signer, &mut reply) {
                    // The answer fits the client's size; signed, it must still (RFC 8945
                    // 5.3): else it goes truncated, and the client asks over TCP.
                    if answer.len() + signer.overhead() > zone::udp_limit(query)
                        && zone::truncate_answer(answer)
                    {
                        *truncated = true;
                    }
                    signer.sign(answer, now);
                }
                let Reply::Answer { rcode, truncated } = reply else {
                    counts.dropped_malformed += 1;
                    continue;
                };
                answered.push(Answered {
                    idx,
                    peer,
                    rcode,
                    truncated,
                });
            }
            // One lock for the batch, held only for the buckets' arithmetic.
            decisions.clear();
            {
                let mut limiter = state::lock(&self.limiter);
                decisions.extend(
                    answered
                        .iter()
                        .map(|answered| limiter.take(answered.peer.ip(), now)),
                );
            }
            for (answered, &decision) in answered.iter().zip(&decisions) {
                let Answered {
                    idx,
                    peer,
                    rcode,
                    mut truncated,
                } = *answered;
                let answer = &mut answers[idx];
                match decision {
                    RateDecision::Send => {}
                    RateDecision::Drop => {
                        counts.dropped_rate_limited += 1;
                        continue;
                    }
                    RateDecision::Slip => {
                        if !zone::truncate_answer(answer) {
                            counts.dropped_rate_limited += 1;
                            continue;
                        }
                        truncated = true;
                    }
                }
                counts.responses[rcode_index(rcode)] += 1;
                if truncated {
                    counts.truncated += 1;
                }
                outgoing.push((idx, peer));
            }
            send_all(fd, &mut send_headers, &answers, &outgoing);
            self.counters.add(&counts);
        }
        debug!("dns udp thread stops");
    }
}

/// A host's record, through this thread's map of names to table slots: a hash
/// lookup instead of a walk of the table's index (a walk was a fifth of the thread's
/// user time at 100,000 hosts). Names not in the table are not kept, since they may
/// appear at any time.
fn lookup(
    table: &Table,
    slots: &Slots,
    name: &crate::model::name::Name,
) -> Option<crate::model::record::Record> {
    let known = slots.borrow().get(name).copied();
    if let Some(slot) = known {
        return Some(table.entry_at(slot).record);
    }
    let (slot, entry) = table.find(name)?;
    slots.borrow_mut().insert(name.clone(), slot);
    Some(entry.record)
}

/// The names a UDP thread answers from.
struct UdpHosts<'a> {
    table: &'a Table,
    slots: &'a Slots,
    interior: &'a Interior,
}

impl zone::ZoneSource for UdpHosts<'_> {
    fn record(&self, name: &crate::model::name::Name) -> Option<crate::model::record::Record> {
        lookup(self.table, self.slots, name)
    }

    fn txt(&self, name: &crate::model::name::Name) -> Vec<crate::model::txt::Txt> {
        self.table.txt(name)
    }

    fn has_below(&self, relative: &str) -> bool {
        self.interior.contains(relative)
    }
}

/// A UDP thread's map of names to where they live in the table. Only names of hosts go
/// in (a query for any other name never reaches it), so a query cannot choose its keys
/// and a fast hash needs no protection against collisions chosen by an attacker.
type Slots = std::cell::RefCell<
    HashMap<
        crate::model::name::Name,
        crate::state::table::Slot,
        std::hash::BuildHasherDefault<Fnv>,
    >,
>;

/// FNV-1a (64-bit): SipHash, the standard map's hash, was most of the lookup's time for
/// names of 10 to 30 bytes.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Answers to updates, from the writer's thread (once each is committed) to the socket's
/// sender thread, which sends them in `sendmmsg` batches: one `sendto` per answer on the
/// writer's thread was a fifth of its time under a flood of updates.
#[derive(Default)]
pub(super) struct UpdateAnswers {
    pending: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
    ready: std::sync::Condvar,
}

impl UpdateAnswers {
    /// Queues `answer` for `peer`; the first into an empty queue wakes the sender.
    fn push(&self, peer: SocketAddr, answer: Vec<u8>) {
        let was_empty = {
            let mut pending = state::lock(&self.pending);
            pending.push((peer, answer));
            pending.len() == 1
        };
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Sends what is queued on `socket`, in batches, until `shutdown` (and then what was
    /// queued by then).
    pub(super) fn send_until(&self, socket: &UdpSocket, shutdown: &CancellationToken) {
        let fd = socket.as_raw_fd();
        let mut headers = SendHeaders::new(BATCH);
        let mut taken: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(BATCH);
        loop {
            {
                let mut pending = state::lock(&self.pending);
                if pending.is_empty() {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    pending = self
                        .ready
                        .wait_timeout(pending, Duration::from_millis(200))
                        .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
                }
                std::mem::swap(&mut taken, &mut pending);
            }
            let (peers, answers): (Vec<SocketAddr>, Vec<Vec<u8>>) = taken.drain(..).unzip();
            let outgoing: Vec<(usize, SocketAddr)> = peers.into_iter().enumerate().collect();
            // `send_all` sends up to a batch per `sendmmsg`, as many times as it takes.
            send_all(fd, &mut headers, &answers, &outgoing);
        }
    }
}

/// Sends each `(answer index, peer)`; what the kernel will not take now is dropped (the
/// client retries, as it would after any loss).
fn send_all(
    fd: RawFd,
    headers: &mut SendHeaders,
    answers: &[Vec<u8>],
    outgoing: &[(usize, SocketAddr)],
) {
    let mut start = 0;
    while start < outgoing.len() {
        let pending = outgoing[start..]
            .iter()
            .map(|&(idx, peer)| (&answers[idx][..], peer));
        match net::send_batch(fd, headers, pending, Wait::Yes) {
            Ok(0) => return,
            Ok(n_sent) => start += n_sent,
            Err(Errno::EINTR) => {}
            Err(e) => {
                debug!(error = %e, "dns send failed; skipping one answer");
                start += 1;
            }
        }
    }
}

/// The response rate limit: per source network (/24 for IPv4, /56 for IPv6), a token
/// bucket of `rate` responses per second, holding at most one second's worth; none for a
/// rate of 0. One for all the UDP threads: the kernel sends one source address and port
/// to one socket, but a network's many ports reach every socket.
pub(super) fn response_limiter(rate: u32) -> Limiter {
    Limiter::new(f64::from(rate), f64::from(rate)).by_prefix(24, 56)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_fnv_1a() {
        use std::hash::Hasher;
        let hash = |bytes: &[u8]| {
            let mut fnv = Fnv::default();
            fnv.write(bytes);
            fnv.finish()
        };
        // The published FNV-1a 64-bit values of "a" and "foobar".
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
