//! The acme-dns API under `/acme-dns/`, so that acme-dns's many clients (lego, acme.sh,
//! Caddy, cert-manager, Traefik...) set ACME challenges in the zone unchanged:
//! `POST /acme-dns/register`, `POST /acme-dns/update`, `GET /acme-dns/health`.
//!
//! An account registered with a host's key (`Authorization: Bearer KEY`) sets that
//! host's `_acme-challenge` name, so a certificate for `HOST.ZONE` needs no CNAME; one
//! registered with the shared key (or by anyone, with `acme_dns_register = open`) sets
//! its own `SUBDOMAIN.ZONE`, for a name elsewhere whose `_acme-challenge` is a CNAME to
//! it, as with acme-dns. An update keeps the account's two latest values, as acme-dns
//! does (a certificate for a name and its wildcard). Reading the requests is
//! `proto::acme_dns`'s; accounts and TXT records are committed by the writer before the
//! answer.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::info;

use super::forwarded::peer;
use super::read::{json, json_error};
use super::{Shared, SharedState, MAX_BODY_BYTES};
use crate::config::AcmeDnsRegister;
use crate::model::account::AcmeAccount;
use crate::model::name::Name;
use crate::model::record::Time;
use crate::model::txt::Txt;
use crate::policy::{Scope, ACME_CHALLENGE};
use crate::proto::acme_dns::{self, AcmeDnsError};
use crate::proto::update::{RrChange, UpdatePlan};
use crate::state::metrics::Reason;
use crate::writer::{Job, Registration, UpdateRefused, ZoneUpdate};

/// The TXT values an account keeps: acme-dns's two.
const KEEP: usize = 2;

/// What `register` answers: acme-dns's document.
#[derive(Serialize)]
struct Registered {
    username: String,
    password: String,
    fulldomain: String,
    subdomain: String,
    allowfrom: Vec<String>,
}

/// What `update` answers: the value set, which acme.sh looks for in the one line.
#[derive(Serialize)]
struct Updated {
    txt: String,
}

/// `GET /acme-dns/health`.
pub(super) async fn acme_dns_health() -> Response {
    json(StatusCode::OK, &serde_json::json!({}))
}

/// The refusal of a request without the credentials it needs.
fn forbidden() -> Response {
    json_error(StatusCode::UNAUTHORIZED, "forbidden")
}

/// A request to the acme-dns API, read: who sent it, its headers and body, the zone.
struct AcmeRequest {
    client: IpAddr,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
    zone: String,
}

impl Shared {
    /// Reads `request`: its client, headers and body; refused (the answer in `Err`) when
    /// the body is too large, there is no zone to put records in, or the client is
    /// throttled for failed credentials.
    async fn read_acme(
        &self,
        request: axum::extract::Request,
    ) -> Result<AcmeRequest, Box<Response>> {
        let (parts, body) = request.into_parts();
        let headers = parts.headers;
        let client = self.client_addr(peer(&parts.extensions), &headers);
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return Err(Box::new(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            )));
        };
        let Some(zone) = self.context.dns_zone.clone() else {
            return Err(Box::new(json_error(
                StatusCode::NOT_FOUND,
                "no dns_zone: dynip serves no zone",
            )));
        };
        if self.is_throttled(client) {
            self.refuse(client, Reason::RateLimited, &"too many failed credentials");
            return Err(Box::new(forbidden()));
        }
        Ok(AcmeRequest {
            client,
            headers,
            body,
            zone,
        })
    }

    /// Sends `job` to the writer and waits for it to be committed.
    async fn commit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Box<dyn FnOnce(Result<T, UpdateRefused>) + Send>) -> Job,
    ) -> Result<T, UpdateRefused> {
        let (done, decided) = oneshot::channel();
        let job = job(Box::new(move |outcome| {
            let _ = done.send(outcome);
        }));
        if self.context.reports.send(job).await.is_err() {
            return Err(UpdateRefused::CommitFailed);
        }
        decided.await.unwrap_or(Err(UpdateRefused::CommitFailed))
    }
}

/// `POST /acme-dns/register`: a new account, for the host whose key is the bearer token,
/// or for a name elsewhere (the shared key, or anyone when registration is open).
pub(super) async fn acme_dns_register(
    State(shared): SharedState,
    request: axum::extract::Request,
) -> Response {
    let AcmeRequest {
        client,
        headers,
        body,
        zone,
    } = match shared.read_acme(request).await {
        Ok(read) => read,
        Err(response) => return *response,
    };
    if shared.context.acme_dns_register == AcmeDnsRegister::No {
        shared.refuse(client, Reason::NotAllowed, &"acme_dns_register = no");
        return json_error(StatusCode::FORBIDDEN, "registration_closed");
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let policy = shared.policy();
    let scope = match bearer {
        Some(token) => match policy.scope_of_password(token) {
            Some(scope) => Some(scope.clone()),
            None => {
                shared.charge(client);
                shared.refuse(client, Reason::BadAuth, &"a bearer token that is no key");
                return forbidden();
            }
        },
        None if shared.context.acme_dns_register == AcmeDnsRegister::Open => {
            // Each account is kept for good: without a key, a source pays for one as for
            // a failed credential, so it may register a burst of 20, then one a second.
            shared.charge(client);
            None
        }
        None => {
            shared.refuse(client, Reason::Unsigned, &"no bearer token");
            return forbidden();
        }
    };
    let allow_from = match acme_dns::register(&body) {
        Ok(allow_from) => allow_from,
        Err(e) => {
            shared.refuse(client, Reason::Malformed, &e);
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    // A host's key: the host's challenge name. (A key several hosts share names the
    // first of them.)
    let txt_name = match &scope {
        Some(Scope::Hosts(names)) => names
            .first()
            .and_then(|host| Name::parse(&format!("{ACME_CHALLENGE}.{}", host.folded())).ok()),
        _ => None,
    };
    let (account, password) = AcmeAccount::generate(txt_name, allow_from, Time::now());
    let registered = Registered {
        username: account.username.clone(),
        password,
        fulldomain: format!("{}.{zone}", account.txt_name.folded()),
        subdomain: account.subdomain.clone(),
        allowfrom: account.allow_from.iter().map(ToString::to_string).collect(),
    };
    let kept = shared
        .commit(|done| {
            Job::Register(Registration {
                account,
                done: Some(done),
            })
        })
        .await;
    match kept {
        Ok(()) => {
            info!(%client, fulldomain = %registered.fulldomain, "acme-dns account registered");
            json(StatusCode::CREATED, &registered)
        }
        Err(e) => {
            shared.refuse(client, Reason::CommitFailed, &e);
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "db_error")
        }
    }
}

/// `POST /acme-dns/update`: the account's TXT value, its two latest kept.
pub(super) async fn acme_dns_update(
    State(shared): SharedState,
    request: axum::extract::Request,
) -> Response {
    let AcmeRequest {
        client,
        headers,
        body,
        zone,
    } = match shared.read_acme(request).await {
        Ok(read) => read,
        Err(response) => return *response,
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let account = match (header("x-api-user"), header("x-api-key")) {
        (Some(user), Some(key)) => shared
            .context
            .table
            .acme_account(&user.to_ascii_lowercase())
            .filter(|account| account.has_password(key)),
        _ => None,
    };
    let Some(account) = account else {
        shared.charge(client);
        shared.refuse(client, Reason::BadAuth, &"unknown user or wrong key");
        return forbidden();
    };
    if !account.allows(client) {
        shared.refuse(
            client,
            Reason::NotAllowed,
            &"outside the account's allowfrom",
        );
        return forbidden();
    }
    let update = match acme_dns::update(&body) {
        Ok(update) => update,
        Err(e) => {
            shared.refuse(client, Reason::Malformed, &e);
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    if update.subdomain != account.subdomain {
        shared.refuse(client, Reason::WrongHost, &AcmeDnsError::BadSubdomain);
        return forbidden();
    }
    let Ok(txt) = Txt::from_text(&update.txt) else {
        return json_error(StatusCode::BAD_REQUEST, &AcmeDnsError::BadTxt.to_string());
    };
    let plan = UpdatePlan {
        prerequisites: Vec::new(),
        changes: vec![RrChange::Rotate {
            name: account.txt_name.folded().to_owned(),
            txt,
            keep: KEEP,
        }],
    };
    let at = Time::now();
    let applied = shared
        .commit(|done| {
            Job::Update(ZoneUpdate {
                plan,
                at,
                done: Some(Box::new(move |outcome| done(outcome.map(|_| ())))),
            })
        })
        .await;
    match applied {
        Ok(()) => {
            info!(%client, name = %format!("{}.{zone}", account.txt_name), "acme-dns update committed");
            json(StatusCode::OK, &Updated { txt: update.txt })
        }
        Err(e) => {
            shared.refuse(client, Reason::CommitFailed, &e);
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "db_error")
        }
    }
}
