//! `/nic/update` (and its aliases): a dyndns2 update, answered once the writer has
//! decided on each of its reports.
//!
//! Owns the route's glue: reading the request, sending each report to the writer with a
//! `Done` callback, waiting (at most [`COMMIT_WAIT`]) for the outcomes, which come back
//! through the relay task, and writing the answer lines. The protocol is `dyndns`'s; who
//! may report what is `policy`'s.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::debug;

use super::forwarded::peer;
use super::{challenge, text, Shared, SharedState};
use crate::model::record::Time;
use crate::policy::ACME_CHALLENGE;
use crate::proto::dyndns::{
    self, Addrs, Answer, Denial, Fate, HostPlan, Plan, TxtRequest, MAX_ADDRS,
};
use crate::proto::update::{RrChange, RrType, RrValue, UpdatePlan};
use crate::state::handoff::Handoff;
use crate::state::metrics::{Reason, Via};
use crate::writer::{Outcome, Refused, Report, ZoneUpdate};

/// How long an update waits for its commit before it is answered `911` (the report may
/// still commit): far above a commit's milliseconds, below clients' own time-outs
/// (ddclient's and inadyn's are 120 and 30 s).
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Outcomes on their way from the writer's thread to the requests waiting for them. The
/// writer queues a commit's outcomes here and wakes the relay task once; the relay hands
/// them to the requests on the runtime's own thread. Waking each request from the
/// writer's thread cost one system call and one run-queue lock per report.
pub(super) type Outcomes = Handoff<(oneshot::Sender<Outcome>, Outcome)>;

/// Hands queued outcomes to their requests, for as long as the server serves.
pub(super) async fn relay(outcomes: Arc<Outcomes>) {
    let mut batch = Vec::new();
    loop {
        outcomes.ready().await;
        outcomes.take(&mut batch);
        for (done, outcome) in batch.drain(..) {
            // The request may have gone (client closed); nothing to tell then.
            let _ = done.send(outcome);
        }
    }
}

/// The request is taken whole, not through the `HeaderMap` and `RawQuery` extractors,
/// which copy the headers and the query for every update.
pub(super) async fn update(
    State(shared): SharedState,
    request: axum::extract::Request,
) -> Response {
    let client = shared.client_addr(peer(request.extensions()), request.headers());
    let query = request.uri().query().unwrap_or("");
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let throttled = shared.is_throttled(client);
    let plan = dyndns::plan(&shared.policy(), client, throttled, query, authorization);
    match plan {
        Plan::Report {
            hosts,
            addrs,
            offline,
        } => {
            let body = shared.report(client, hosts, addrs, offline).await;
            text(StatusCode::OK, body)
        }
        Plan::Txt { hosts, txt } => {
            let body = shared.set_txt(client, hosts, txt).await;
            text(StatusCode::OK, body)
        }
        Plan::Refuse(denial) => {
            if denial.charges_source() {
                shared.charge(client);
            }
            shared.refuse(client, reason(&denial), &denial);
            let body = format!("{}\n", denial.answer());
            if denial.needs_credentials() {
                challenge(
                    text(StatusCode::UNAUTHORIZED, body),
                    "Basic realm=\"dynip\"",
                )
            } else {
                text(StatusCode::OK, body)
            }
        }
        Plan::BadRequest(e) => {
            shared.refuse(client, Reason::Malformed, &e);
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

/// One name's reports on their way through the writer: a receiver per address, `None`
/// where the report could not be sent (the writer has stopped).
type Waits = [Option<oneshot::Receiver<Outcome>>; MAX_ADDRS];

/// One name of an update, between sending its reports and answering it.
enum Pending {
    Answered(Answer),
    Waiting(Waits),
}

impl Shared {
    /// Counts a refused request (dyndns2 or acme-dns) under `reason`, and logs why.
    pub(super) fn refuse(&self, client: IpAddr, reason: Reason, detail: &dyn std::fmt::Display) {
        self.context.metrics.refused(Via::Http, reason);
        debug!(%client, reason = ?reason, %detail, "refusing request");
    }

    /// Sends the reports of each name `hosts` plans one for, then waits for them; the
    /// answer lines, one per name in order. Every name's reports are sent before any is
    /// awaited, so that the writer can take them in one turn.
    async fn report(
        &self,
        client: IpAddr,
        hosts: Vec<HostPlan>,
        addrs: Addrs,
        offline: bool,
    ) -> String {
        let at = Time::now();
        let mut pending = Vec::with_capacity(hosts.len());
        for host in hosts {
            let name = match host {
                HostPlan::Report(name) => name,
                HostPlan::Refuse(denial) => {
                    self.refuse(client, reason(&denial), &denial);
                    pending.push(Pending::Answered(denial.answer()));
                    continue;
                }
            };
            let mut waits: Waits = [None, None];
            for (wait, addr) in waits.iter_mut().zip(addrs.as_slice()) {
                let (done, committed) = oneshot::channel();
                let outcomes = Arc::clone(&self.outcomes);
                let report = Report {
                    name: name.clone(),
                    addr: *addr,
                    at,
                    signed_at: None,
                    offline,
                    done: Some(Box::new(move |outcome| outcomes.push((done, outcome)))),
                };
                if self.context.reports.send(report.into()).await.is_err() {
                    break;
                }
                *wait = Some(committed);
            }
            pending.push(Pending::Waiting(waits));
        }
        let mut body = String::with_capacity(32);
        for pending in pending {
            let answer = match pending {
                Pending::Answered(answer) => answer,
                Pending::Waiting(waits) => self.wait(client, waits, addrs).await,
            };
            let _ = writeln!(body, "{answer}");
        }
        body
    }

    /// Sets (or clears) the `_acme-challenge` TXT record of each name `hosts` plans one
    /// for, one zone update per name; the answer lines, one per name in order.
    async fn set_txt(&self, client: IpAddr, hosts: Vec<HostPlan>, txt: TxtRequest) -> String {
        let at = Time::now();
        let mut body = String::with_capacity(32);
        for host in hosts {
            let name = match host {
                HostPlan::Report(name) => name,
                HostPlan::Refuse(denial) => {
                    self.refuse(client, reason(&denial), &denial);
                    let _ = writeln!(body, "{}", denial.answer());
                    continue;
                }
            };
            let challenge = format!("{ACME_CHALLENGE}.{}", name.folded());
            let mut changes = vec![RrChange::DeleteRrset {
                name: challenge.clone(),
                rr_type: RrType::Txt,
            }];
            if let TxtRequest::Set(record) = &txt {
                changes.push(RrChange::Add {
                    name: challenge,
                    value: RrValue::Txt(record.clone()),
                    ttl: 0,
                });
            }
            let (done, decided) = oneshot::channel();
            let update = ZoneUpdate {
                plan: UpdatePlan {
                    prerequisites: Vec::new(),
                    changes,
                },
                at,
                done: Some(Box::new(move |outcome| {
                    let _ = done.send(outcome);
                })),
            };
            let answer = if self.context.reports.send(update.into()).await.is_err() {
                self.refuse(client, Reason::Unavailable, &"the writer stopped");
                Answer::ServerError
            } else {
                match tokio::time::timeout(COMMIT_WAIT, decided).await {
                    Ok(Ok(Ok(_))) => {
                        self.context.metrics.accepted(Via::Http);
                        Answer::GoodTxt
                    }
                    Ok(Ok(Err(refused))) => {
                        self.refuse(client, Reason::CommitFailed, &refused);
                        Answer::DnsErr
                    }
                    Ok(Err(_)) | Err(_) => {
                        self.refuse(client, Reason::Unavailable, &"no commit in time");
                        Answer::ServerError
                    }
                }
            };
            let _ = writeln!(body, "{answer}");
        }
        body
    }

    /// Waits (at most [`COMMIT_WAIT`]) for one name's reports to be decided, counts and
    /// logs each outcome, and answers the name from them.
    async fn wait(&self, client: IpAddr, waits: Waits, addrs: Addrs) -> Answer {
        let n_addrs = addrs.as_slice().len();
        if waits[..n_addrs].iter().any(Option::is_none) {
            self.refuse(client, Reason::Unavailable, &"the writer stopped");
            return dyndns::answer(&[Fate::Unavailable], addrs);
        }
        let mut fates = [Fate::Unavailable; MAX_ADDRS];
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        for (idx, committed) in waits.into_iter().flatten().enumerate() {
            fates[idx] = match tokio::time::timeout_at(deadline, committed).await {
                Ok(Ok(outcome)) => {
                    match &outcome {
                        Ok(_) => self.context.metrics.accepted(Via::Http),
                        Err(refused) => self.refuse(client, Reason::CommitFailed, refused),
                    }
                    fate(&outcome)
                }
                Ok(Err(_)) => {
                    self.refuse(client, Reason::Unavailable, &"the writer stopped");
                    Fate::Unavailable
                }
                Err(_) => {
                    self.refuse(client, Reason::Unavailable, &"no commit in time");
                    Fate::Unavailable
                }
            };
            // One undecided report makes the answer `911`, whatever the others' fates.
            if fates[idx] == Fate::Unavailable {
                return dyndns::answer(&fates[..=idx], addrs);
            }
        }
        dyndns::answer(&fates[..n_addrs], addrs)
    }
}

/// What the writer's outcome means for the answer. An unsigned report is never refused
/// as a replay; either way it was not committed.
fn fate(outcome: &Outcome) -> Fate {
    match outcome {
        Ok(committed) if committed.changed => Fate::Changed,
        Ok(_) => Fate::Unchanged,
        Err(Refused::Replayed | Refused::CommitFailed) => Fate::NotCommitted,
    }
}

/// Under which reason the metrics count a refusal.
fn reason(denial: &Denial) -> Reason {
    match denial {
        Denial::NotAllowed(_) => Reason::NotAllowed,
        Denial::Throttled => Reason::RateLimited,
        Denial::NoHostname | Denial::BadName => Reason::Malformed,
        Denial::TooManyHosts(_) => Reason::TooManyHosts,
        Denial::Credentials(_) | Denial::NotAKey => Reason::BadAuth,
        Denial::Unsigned(_) => Reason::Unsigned,
        Denial::WrongHost(_) => Reason::WrongHost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Refusal;
    use crate::proto::dyndns::CredentialsError;
    use crate::writer::Committed;

    #[test]
    fn the_writer_s_outcomes_are_fates() {
        let committed = |changed| {
            Ok(Committed {
                at: Time::from_micros(0),
                changed,
            })
        };
        let check =
            |outcome: Outcome, expect: Fate| assert_eq!(fate(&outcome), expect, "{outcome:?}");
        check(committed(true), Fate::Changed);
        check(committed(false), Fate::Unchanged);
        check(Err(Refused::CommitFailed), Fate::NotCommitted);
        check(Err(Refused::Replayed), Fate::NotCommitted);
    }

    #[test]
    fn refusals_are_counted_under_their_reason() {
        let check =
            |denial: Denial, expect: Reason| assert_eq!(reason(&denial), expect, "{denial:?}");
        check(Denial::NotAllowed(Refusal::NotAllowed), Reason::NotAllowed);
        check(Denial::Throttled, Reason::RateLimited);
        check(Denial::NoHostname, Reason::Malformed);
        check(Denial::TooManyHosts(21), Reason::TooManyHosts);
        check(
            Denial::Credentials(CredentialsError::NotBasic),
            Reason::BadAuth,
        );
        check(Denial::NotAKey, Reason::BadAuth);
        check(Denial::Unsigned(Refusal::Unsigned), Reason::Unsigned);
        check(Denial::BadName, Reason::Malformed);
        let name = crate::model::name::Name::parse("pc").unwrap();
        check(Denial::WrongHost(name), Reason::WrongHost);
    }
}
