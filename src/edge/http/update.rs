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
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::Response;
use tokio::sync::oneshot;
use tracing::debug;

use super::forwarded::peer;
use super::{text, Shared, SharedState};
use crate::model::record::Time;
use crate::policy::Scope;
use crate::proto::dyndns::{self, Answer, Credentials, QueryError};
use crate::state::handoff::Handoff;
use crate::state::metrics::{Reason, Via};
use crate::writer::{Outcome, Report};

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
    let reply = shared.update(client, request.headers(), query).await;
    match reply {
        Reply::Lines(answers) => {
            let mut body = String::with_capacity(32);
            for answer in &answers {
                let _ = writeln!(body, "{answer}");
            }
            text(StatusCode::OK, body)
        }
        Reply::NoCredentials => {
            let mut response = text(StatusCode::UNAUTHORIZED, "badauth\n".to_string());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dynip\""),
            );
            response
        }
        Reply::BadRequest(message) => text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    }
}

/// What an update request is answered.
enum Reply {
    /// `200` and one line per host (or one line for the whole request).
    Lines(Vec<Answer>),
    /// `401` with `WWW-Authenticate: Basic`: no credentials where they are needed.
    NoCredentials,
    /// `400`: a query no dyndns2 answer fits.
    BadRequest(String),
}

/// Who a request authenticated as.
enum Caller {
    /// A key of this scope.
    Key(Scope),
    /// No credentials: allowed where unsigned reports are.
    Anonymous,
}

impl Shared {
    fn refuse(&self, client: IpAddr, reason: Reason, detail: &dyn std::fmt::Display) {
        self.edge.metrics.refused(Via::Http, reason);
        debug!(%client, reason = ?reason, %detail, "refusing update");
    }

    async fn update(&self, client: IpAddr, headers: &HeaderMap, query: &str) -> Reply {
        let policy = self.policy();
        if let Err(refusal) = policy.admit(client) {
            self.refuse(client, Reason::NotAllowed, &refusal);
            return Reply::Lines(vec![Answer::BadAuth]);
        }
        if self.is_throttled(client) {
            self.refuse(client, Reason::RateLimited, &"too many failed credentials");
            return Reply::Lines(vec![Answer::Abuse]);
        }
        let update = match dyndns::parse_query(query) {
            Ok(update) => update,
            Err(e @ QueryError::NoHostname) => {
                self.refuse(client, Reason::Malformed, &e);
                return Reply::Lines(vec![Answer::NotFqdn]);
            }
            Err(e @ QueryError::TooManyHosts(_)) => {
                self.refuse(client, Reason::TooManyHosts, &e);
                return Reply::Lines(vec![Answer::NumHost]);
            }
            Err(e @ QueryError::BadAddress { .. }) => {
                self.refuse(client, Reason::Malformed, &e);
                return Reply::BadRequest(e.to_string());
            }
        };
        let credentials = match headers.get(header::AUTHORIZATION) {
            Some(value) => match dyndns::parse_basic(value.as_bytes()) {
                Ok(credentials) => Some(credentials),
                Err(e) => {
                    self.charge(client);
                    self.refuse(client, Reason::BadAuth, &e);
                    return Reply::Lines(vec![Answer::BadAuth]);
                }
            },
            None => update.credentials.clone(),
        };
        let caller = match &credentials {
            Some(Credentials { password, .. }) => match policy.scope_of_password(password) {
                Some(scope) => Caller::Key(scope.clone()),
                None => {
                    self.charge(client);
                    self.refuse(client, Reason::BadAuth, &"the password is not a key");
                    return Reply::Lines(vec![Answer::BadAuth]);
                }
            },
            None => {
                let refused = update
                    .hostnames
                    .iter()
                    .flatten()
                    .find_map(|name| policy.admit_unsigned(name).err());
                if let Some(refusal) = refused {
                    self.refuse(client, Reason::Unsigned, &refusal);
                    return Reply::NoCredentials;
                }
                Caller::Anonymous
            }
        };
        let addrs: Vec<IpAddr> = match (update.ipv4, update.ipv6) {
            (None, None) => vec![client],
            (v4, v6) => v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(v6.map(IpAddr::V6))
                .collect(),
        };
        let at = Time::now();
        let mut pending = Vec::with_capacity(update.hostnames.len());
        for name in &update.hostnames {
            let Some(name) = name else {
                self.refuse(client, Reason::Malformed, &"not a host name");
                pending.push(Pending::Answered(Answer::NotFqdn));
                continue;
            };
            if let Caller::Key(scope) = &caller {
                if !scope.covers(name) {
                    self.refuse(client, Reason::WrongHost, name);
                    pending.push(Pending::Answered(Answer::NoHost));
                    continue;
                }
            }
            let mut waits = Vec::with_capacity(addrs.len());
            for addr in &addrs {
                let (done, committed) = oneshot::channel();
                let outcomes = Arc::clone(&self.outcomes);
                let report = Report {
                    name: name.clone(),
                    addr: *addr,
                    at,
                    signed_at: None,
                    offline: update.offline,
                    done: Some(Box::new(move |outcome| outcomes.push((done, outcome)))),
                };
                if self.edge.reports.send(report).await.is_err() {
                    break;
                }
                waits.push(committed);
            }
            pending.push(Pending::Waiting {
                waits,
                n_addrs: addrs.len(),
            });
        }
        let mut answers = Vec::with_capacity(pending.len());
        for pending in pending {
            answers.push(match pending {
                Pending::Answered(answer) => answer,
                Pending::Waiting { waits, n_addrs } => {
                    self.wait(client, waits, n_addrs, &addrs).await
                }
            });
        }
        Reply::Lines(answers)
    }

    /// Waits for one host's reports to be decided, and says how it went: `good` when any
    /// of them changed the host (as the writer found it, so of two requests with the
    /// same new address only the first is `good`), else `nochg`.
    async fn wait(
        &self,
        client: IpAddr,
        waits: Vec<oneshot::Receiver<Outcome>>,
        n_addrs: usize,
        addrs: &[IpAddr],
    ) -> Answer {
        let mut failed = false;
        let mut changed = false;
        if waits.len() < n_addrs {
            self.refuse(client, Reason::Unavailable, &"the writer stopped");
            return Answer::ServerError;
        }
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        for committed in waits {
            let Ok(committed) = tokio::time::timeout_at(deadline, committed).await else {
                self.refuse(client, Reason::Unavailable, &"no commit in time");
                return Answer::ServerError;
            };
            match committed {
                Ok(Ok(committed)) => {
                    self.edge.metrics.accepted(Via::Http);
                    changed |= committed.changed;
                }
                // An unsigned report is never refused as a replay; either way it was
                // not committed.
                Ok(Err(refused)) => {
                    self.refuse(client, Reason::CommitFailed, &refused);
                    failed = true;
                }
                Err(_) => {
                    self.refuse(client, Reason::Unavailable, &"the writer stopped");
                    return Answer::ServerError;
                }
            }
        }
        if failed {
            Answer::DnsErr
        } else if changed {
            Answer::Good(addrs.to_vec())
        } else {
            Answer::NoChange(addrs.to_vec())
        }
    }
}

/// One host's reports of an update, on their way through the writer.
enum Pending {
    Answered(Answer),
    Waiting {
        waits: Vec<oneshot::Receiver<Outcome>>,
        n_addrs: usize,
    },
}
