//! Signed messages and zone updates on the DNS face: a message's TSIG record checked
//! against the keys in force (RFC 8945), its answer signed; an UPDATE (RFC 2136) read,
//! held to its key's names, and sent to the writer, its answer sent once the writer has
//! committed it (or refused it).
//!
//! The shared key (TSIG key `dynip`) may change any name of the zone and transfer it; a
//! host's key (TSIG key named after the host) only the host and `_acme-challenge.HOST`.
//! An UPDATE must be signed. Nothing here changes state: the writer does.

use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::counters::{rcode_index, Counters, Rejected};
use crate::model::record::Time;
use crate::policy::{Policy, TsigScope};
use crate::proto::tsig::{self, Algorithm, Failure, SigningKey};
use crate::proto::update::{self, RrChange};
use crate::proto::zone::Zone;
use crate::writer::{Job, UpdateDone, UpdateRefused, ZoneUpdate};

/// Sends an update's answer to whoever asked: called once, on the writer's thread.
pub(super) type Deliver = Box<dyn FnOnce(Vec<u8>) + Send>;

/// What the DNS face checks signatures and takes updates with.
pub(super) struct Gate {
    pub(super) zone: Arc<Zone>,
    /// The keys in force; replaced whole on SIGHUP.
    pub(super) policy: watch::Receiver<Arc<Policy>>,
    pub(super) writer: mpsc::Sender<Job>,
    pub(super) counters: Arc<Counters>,
}

/// The key a request was signed with, and its MAC: what signs the answers to it.
pub(super) struct Signer {
    key_name: String,
    algorithm: Algorithm,
    secret: Vec<u8>,
    request_mac: Vec<u8>,
    scope: TsigScope,
}

impl Signer {
    fn key(&self) -> SigningKey<'_> {
        SigningKey {
            name: &self.key_name,
            algorithm: self.algorithm,
            secret: &self.secret,
        }
    }

    /// How many bytes signing adds to an answer.
    pub(super) fn overhead(&self) -> usize {
        tsig::record_len(self.key())
    }

    /// Signs an answer to the request; returns its MAC.
    pub(super) fn sign(&self, answer: &mut Vec<u8>, now: Time) -> Vec<u8> {
        tsig::sign(
            answer,
            self.key(),
            Some(&self.request_mac),
            seconds(now),
            0,
            &[],
        )
    }

    /// Signs a transfer's message after the first, over the MAC of the one before.
    pub(super) fn sign_next(&self, message: &mut Vec<u8>, prior_mac: &[u8], now: Time) -> Vec<u8> {
        tsig::sign_continuation(message, self.key(), prior_mac, seconds(now))
    }

    /// Whether the key may transfer the zone: the shared key may, a host's key may not
    /// (the zone is every host's address).
    pub(super) fn may_transfer(&self) -> bool {
        self.scope == TsigScope::Zone
    }
}

/// What [`Gate::check`] made of a message.
pub(super) enum Gated {
    /// Neither signed nor an update: the zone answers it as it is.
    Plain,
    /// Signed with a key in force: the zone answers it, and the answer is signed.
    Signed(Signer),
    /// Answered here (a refusal, an error): the answer is in `out`, with this code.
    Answered(ResponseCode),
    /// An update, sent to the writer: its answer goes to the `Deliver` later.
    Sent,
}

/// Seconds since the epoch: TSIG's clock.
fn seconds(at: Time) -> u64 {
    u64::try_from(at.as_micros() / 1_000_000).unwrap_or(0)
}

impl Gate {
    /// Checks `message` received at `now`: its signature if it has one, and if it is an
    /// UPDATE, the update itself, which goes to the writer with `deliver()` to answer it.
    pub(super) fn check(
        &self,
        message: &[u8],
        now: Time,
        out: &mut Vec<u8>,
        deliver: impl FnOnce() -> Deliver,
    ) -> Gated {
        out.clear();
        // Not a query: the zone drops it.
        if message.len() < 12 || message[2] & 0x80 != 0 {
            return Gated::Plain;
        }
        let id = u16::from_be_bytes([message[0], message[1]]);
        let op_code = OpCode::from_u8((message[2] >> 3) & 0x0f);
        let is_update = op_code == OpCode::Update;
        let n_additional = u16::from_be_bytes([message[10], message[11]]);
        // The usual query: no additional record, so no signature to look for.
        if !is_update && n_additional == 0 {
            return Gated::Plain;
        }
        let signed = match tsig::find(message) {
            Ok(Some(signed)) => signed,
            Ok(None) if is_update => {
                debug!("update refused: not signed");
                return self.refuse(id, op_code, Rejected::Unsigned, ResponseCode::Refused, out);
            }
            Ok(None) => return Gated::Plain,
            Err(e) => {
                debug!(error = %e, "signed message refused: malformed");
                return self.refuse(id, op_code, Rejected::Malformed, ResponseCode::FormErr, out);
            }
        };
        let policy = Arc::clone(&self.policy.borrow());
        let key = policy.tsig_key(&signed.tsig.key_name);
        let secret = key.map(|(secret, _)| secret);
        let verified = tsig::verify(&signed, secret, None, seconds(now));
        let (algorithm, secret, scope) = match (verified, key) {
            (Ok(algorithm), Some((secret, scope))) => (algorithm, secret, scope),
            // `verify` knows no key without a secret: that is BADKEY.
            (failure, _) => {
                let failure = failure.err().unwrap_or(Failure::BadKey);
                return self.refuse_signature(id, &signed, failure, secret, now, out);
            }
        };
        let signer = Signer {
            key_name: signed.tsig.key_name.clone(),
            algorithm,
            secret: secret.to_vec(),
            request_mac: signed.tsig.mac.clone(),
            scope: scope.clone(),
        };
        if !is_update {
            return Gated::Signed(signer);
        }
        self.update(&signed.unsigned, signer, now, out, deliver)
    }

    /// Answers `rcode`, unsigned, and counts why.
    fn refuse(
        &self,
        id: u16,
        op_code: OpCode,
        why: Rejected,
        rcode: ResponseCode,
        out: &mut Vec<u8>,
    ) -> Gated {
        self.counters.reject(why);
        encode(&Message::error_msg(id, op_code, rcode), out);
        Gated::Answered(rcode)
    }

    /// Answers a signature that does not check as the RFC says (§5.2): NOTAUTH, with the
    /// TSIG error; unsigned, but for BADTIME, which is signed with the key's `secret` and
    /// carries our time.
    fn refuse_signature(
        &self,
        id: u16,
        signed: &tsig::TsigSigned,
        failure: Failure,
        secret: Option<&[u8]>,
        now: Time,
        out: &mut Vec<u8>,
    ) -> Gated {
        debug!(key = %signed.tsig.key_name, %failure, "signed message refused");
        self.counters.reject(match failure {
            Failure::BadKey => Rejected::BadKey,
            Failure::BadSig | Failure::BadTrunc => Rejected::BadSig,
            Failure::BadTime => Rejected::BadTime,
        });
        let rcode = ResponseCode::NotAuth;
        let op_code = OpCode::from_u8((signed.unsigned[2] >> 3) & 0x0f);
        encode(&Message::error_msg(id, op_code, rcode), out);
        match (failure, secret, signed.tsig.algorithm) {
            (Failure::BadTime, Some(secret), Some(algorithm)) => {
                let key = SigningKey {
                    name: &signed.tsig.key_name,
                    algorithm,
                    secret,
                };
                let our_time = &seconds(now).to_be_bytes()[2..];
                tsig::sign(
                    out,
                    key,
                    Some(&signed.tsig.mac),
                    signed.tsig.time_signed,
                    failure.code(),
                    our_time,
                );
            }
            _ => tsig::append_unsigned(out, &signed.tsig, failure.code()),
        }
        Gated::Answered(rcode)
    }

    /// An UPDATE signed by `signer`: read (FORMERR, NOTAUTH, NOTZONE or REFUSED for what
    /// the RFC refuses), held to the key's names and never the apex (REFUSED), then sent
    /// to the writer, which answers through `deliver`.
    fn update(
        &self,
        unsigned: &[u8],
        signer: Signer,
        now: Time,
        out: &mut Vec<u8>,
        deliver: impl FnOnce() -> Deliver,
    ) -> Gated {
        let id = u16::from_be_bytes([unsigned[0], unsigned[1]]);
        let request = match Message::from_vec(unsigned) {
            Ok(request) => request,
            Err(_) => {
                self.counters.reject(Rejected::Malformed);
                return answer_update(id, None, ResponseCode::FormErr, &signer, now, out);
            }
        };
        let question = request.queries().first().cloned();
        let plan = match update::plan(&request, self.zone.origin()) {
            Ok(plan) => plan,
            Err(rcode) => {
                self.counters.reject(match rcode {
                    ResponseCode::FormErr => Rejected::Malformed,
                    _ => Rejected::NotOurs,
                });
                debug!(%rcode, "update refused");
                return answer_update(id, question, rcode, &signer, now, out);
            }
        };
        let out_of_scope = plan
            .changes
            .iter()
            .map(RrChange::name)
            .find(|name| name.is_empty() || !signer.scope.may_change(name));
        if let Some(name) = out_of_scope {
            debug!(key = %signer.key_name, name, "update refused: not the key's to change");
            self.counters.reject(Rejected::Scope);
            return answer_update(id, question, ResponseCode::Refused, &signer, now, out);
        }
        let counters = Arc::clone(&self.counters);
        let deliver = deliver();
        let done: UpdateDone = Box::new(move |outcome| {
            let rcode = match outcome {
                Ok(_) => {
                    counters
                        .updates
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ResponseCode::NoError
                }
                Err(refused) => {
                    let (why, rcode) = match refused {
                        UpdateRefused::Unmet(unmet) => (Rejected::Prerequisite, unmet.rcode()),
                        UpdateRefused::TooManyTxt => (Rejected::TooManyTxt, ResponseCode::Refused),
                        UpdateRefused::BadName => (Rejected::Scope, ResponseCode::Refused),
                        UpdateRefused::CommitFailed => {
                            (Rejected::NotCommitted, ResponseCode::ServFail)
                        }
                    };
                    counters.reject(why);
                    rcode
                }
            };
            let mut answer = Vec::with_capacity(128);
            answer_update(id, question, rcode, &signer, Time::now(), &mut answer);
            counters.responses[rcode_index(rcode)]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            deliver(answer);
        });
        let job = Job::Update(ZoneUpdate {
            plan,
            at: now,
            done: Some(done),
        });
        if let Err(e) = self.writer.try_send(job) {
            // A writer too far behind (or stopping): answered SERVFAIL now, so the
            // client tries again.
            if let Job::Update(ZoneUpdate {
                done: Some(done), ..
            }) = e.into_inner()
            {
                done(Err(UpdateRefused::CommitFailed));
            }
        }
        Gated::Sent
    }
}

/// An UPDATE's answer: its id, the zone it named, `rcode`, signed by `signer`.
fn answer_update(
    id: u16,
    question: Option<Query>,
    rcode: ResponseCode,
    signer: &Signer,
    now: Time,
    out: &mut Vec<u8>,
) -> Gated {
    let mut response = Message::new();
    response
        .set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Update)
        .set_response_code(rcode);
    if let Some(question) = question {
        response.add_query(question);
    }
    encode(&response, out);
    signer.sign(out, now);
    Gated::Answered(rcode)
}

fn encode(message: &Message, out: &mut Vec<u8>) {
    out.clear();
    // A header and at most a question of a name that was read: always encodes.
    let _ = message.emit(&mut BinEncoder::new(out));
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{Name as DnsName, RData, Record, RecordType};
    use proptest::prelude::*;

    use super::*;
    use crate::config::DnsConfig;

    const SHARED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const NOW: i64 = 1_800_000_000;

    /// A gate for `dyn.example.com` with the shared key [`SHARED`] and `pc`'s own key,
    /// and the writer's end of its channel.
    fn gate() -> (Gate, mpsc::Receiver<Job>) {
        let config = crate::config::parse(&format!(
            "[DynIP:Server]\nkey = {SHARED}\n[DynIP:Hosts]\npc = {}\n",
            crate::model::key::Key::from_bytes([9; 32]).encode()
        ))
        .unwrap()
        .server;
        let zone = Zone::new(
            &DnsConfig {
                zone: Some("dyn.example.com".to_owned()),
                ..DnsConfig::default()
            },
            Duration::from_secs(3600),
        )
        .unwrap();
        let (writer, jobs) = mpsc::channel(64);
        let (_, policy) = watch::channel(Arc::new(Policy::new(&config)));
        let gate = Gate {
            zone: Arc::new(zone),
            policy,
            writer,
            counters: Arc::new(Counters::default()),
        };
        (gate, jobs)
    }

    fn now() -> Time {
        Time::from_micros(NOW * 1_000_000)
    }

    /// An UPDATE adding a TXT record at `_acme-challenge.pc`, signed with the shared key
    /// at `signed_at` (seconds).
    fn signed_update(signed_at: u64) -> Vec<u8> {
        let mut message = Message::new();
        let name = DnsName::from_str("_acme-challenge.pc.dyn.example.com.").unwrap();
        message
            .set_id(99)
            .set_op_code(OpCode::Update)
            .add_query(Query::query(
                DnsName::from_str("dyn.example.com.").unwrap(),
                RecordType::SOA,
            ))
            .add_name_server(Record::from_rdata(
                name,
                60,
                RData::TXT(TXT::new(vec!["token".to_owned()])),
            ));
        let mut bytes = message.to_vec().unwrap();
        let secret =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, SHARED).unwrap();
        let key = SigningKey {
            name: "dynip",
            algorithm: Algorithm::HmacSha256,
            secret: &secret,
        };
        tsig::sign(&mut bytes, key, None, signed_at, 0, &[]);
        bytes
    }

    fn check(gate: &Gate, message: &[u8]) -> (&'static str, Option<ResponseCode>) {
        let mut out = Vec::new();
        let deliver = || -> Deliver { Box::new(|_| {}) };
        match gate.check(message, now(), &mut out, deliver) {
            Gated::Plain => ("plain", None),
            Gated::Signed(_) => ("signed", None),
            Gated::Answered(rcode) => {
                assert!(Message::from_vec(&out).is_ok(), "an answer that parses");
                ("answered", Some(rcode))
            }
            Gated::Sent => ("sent", None),
        }
    }

    #[test]
    fn a_signed_update_goes_to_the_writer_and_a_forged_one_does_not() {
        let (gate, mut jobs) = gate();
        let good = signed_update(NOW as u64);
        assert_eq!(check(&gate, &good), ("sent", None));
        let Ok(Job::Update(update)) = jobs.try_recv() else {
            panic!("no update sent");
        };
        assert_eq!(update.plan.changes.len(), 1);
        // The MAC's last byte changed: BADSIG; a day late: BADTIME.
        let mut forged = good.clone();
        let last = forged.len() - 7;
        forged[last] ^= 1;
        assert_eq!(
            check(&gate, &forged),
            ("answered", Some(ResponseCode::NotAuth))
        );
        let late = signed_update(NOW as u64 - 86_400);
        assert_eq!(
            check(&gate, &late),
            ("answered", Some(ResponseCode::NotAuth))
        );
        // Unsigned: REFUSED.
        let mut unsigned = Message::from_vec(&good[..]).unwrap();
        unsigned.take_additionals();
        unsigned.take_signature();
        let unsigned = unsigned.to_vec().unwrap();
        assert_eq!(
            check(&gate, &unsigned),
            ("answered", Some(ResponseCode::Refused))
        );
        assert!(jobs.try_recv().is_err(), "nothing else reached the writer");
    }

    proptest! {
        /// Bytes of any kind, made an UPDATE or not: never a panic, and never a job for
        /// the writer (a valid MAC is out of reach).
        #[test]
        fn arbitrary_messages_never_reach_the_writer(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
            update in any::<bool>(),
        ) {
            let (gate, mut jobs) = gate();
            if update && bytes.len() > 2 {
                bytes[2] = (bytes[2] & 0x87) | (5 << 3);
            }
            let _ = check(&gate, &bytes);
            prop_assert!(jobs.try_recv().is_err());
        }

        /// A signed update with one byte changed: refused, or (a change the MAC does not
        /// cover, such as the header's id) the same update.
        #[test]
        fn a_changed_byte_never_changes_what_reaches_the_writer(idx in 0usize..200, byte in any::<u8>()) {
            let (gate, mut jobs) = gate();
            let good = signed_update(NOW as u64);
            check(&gate, &good);
            let Ok(Job::Update(original)) = jobs.try_recv() else {
                panic!("the good update was not sent");
            };
            let mut changed = good;
            let at = idx % changed.len();
            changed[at] = byte;
            let _ = check(&gate, &changed);
            if let Ok(Job::Update(update)) = jobs.try_recv() {
                prop_assert_eq!(update.plan, original.plan);
            }
        }
    }
}
