//! The reads: `/healthz`, `/myip` and `/checkip`, `/metrics`, the JSON API under
//! `/api/v1/`, and the status page.
//!
//! Owns who may read what (the key's scope, or everything when public or keyless), the
//! history read from the store on a blocking thread, and turning the table's records
//! into the `api` and `status` documents. Must not change anything: reports go through
//! `update` and the writer.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path as UrlPath, RawQuery, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::forwarded::{peer, Client};
use super::{challenge, text, Shared, SharedState};
use crate::model::event::EventRecord;
use crate::model::name::Name;
use crate::model::record::{self, Record, Time};
use crate::model::txt::Txt;
use crate::policy::{Policy, Scope, TsigScope};
use crate::proto::api;
use crate::proto::dyndns;
use crate::proto::status;
use crate::state;
use crate::store::{PendingChanges, StoreError, StoreReader};

/// A reader of the API: the scope of the key given as the bearer token.
pub(super) struct ApiReader(Scope);

impl FromRequestParts<Arc<Shared>> for ApiReader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<ApiReader, Response> {
        reader_scope(parts, shared, false, api_unauthorized).map(ApiReader)
    }
}

/// A reader of the status page: the scope of the key given as the Basic password, or
/// everything with `public_status`.
pub(super) struct PageReader(Scope);

impl FromRequestParts<Arc<Shared>> for PageReader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<PageReader, Response> {
        let public = shared.context.public_status;
        reader_scope(parts, shared, public, page_unauthorized).map(PageReader)
    }
}

/// What a request may read ([`Shared::reader`]), everything when `public`; else the
/// answer `rejection` makes. The two extractors differ only in those.
#[expect(
    clippy::result_large_err,
    reason = "the rejection is the Response axum's extractors return"
)]
fn reader_scope(
    parts: &Parts,
    shared: &Shared,
    public: bool,
    rejection: fn() -> Response,
) -> Result<Scope, Response> {
    let client = shared.client_addr(peer(&parts.extensions), &parts.headers);
    shared
        .reader(client, &parts.headers, public)
        .map_err(|_: Unauthorized| rejection())
}

/// Why a request may not read. Each is answered alike (`401` with a challenge), so as
/// not to tell a guesser which it met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unauthorized {
    /// Too many failed credentials from the source: its credentials are not looked at.
    Throttled,
    /// No credentials, or none the route reads (neither a bearer token nor Basic).
    NoCredentials,
    /// A token or password that is no key of this server; charged to the source.
    NotAKey,
}

/// Who may read: with `Authorization` (Bearer for the API, Basic for the page), the
/// key's scope; without, everything when `public` or when no key is configured (anyone
/// may then report anything anyway), else nothing. A `throttled` source's credentials
/// are not looked at.
fn read_scope(
    policy: &Policy,
    public: bool,
    throttled: bool,
    authorization: Option<&HeaderValue>,
) -> Result<Scope, Unauthorized> {
    if public || policy.has_no_keys() {
        return Ok(Scope::Any);
    }
    if throttled {
        return Err(Unauthorized::Throttled);
    }
    let password = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            if scheme.eq_ignore_ascii_case("bearer") {
                Some(token.trim().to_string())
            } else {
                dyndns::parse_basic(value.as_bytes())
                    .ok()
                    .map(|credentials| credentials.password)
            }
        });
    let Some(password) = password else {
        return Err(Unauthorized::NoCredentials);
    };
    match policy.scope_of_password(&password) {
        Some(scope) => Ok(scope.clone()),
        None => Err(Unauthorized::NotAKey),
    }
}

/// Why a read of the store (a history, events) failed.
#[derive(Debug, thiserror::Error)]
enum StoreRead {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read on its blocking thread panicked, or was cancelled at shutdown.
    #[error("the read of the store did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// `ok`, or 503 while the database (`database_url`) does not answer: the server then
/// refuses every write, though it still answers reads from memory.
pub(super) async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let down_since = shared
        .context
        .database
        .as_ref()
        .and_then(|health| health.down_since());
    match down_since {
        None => text(StatusCode::OK, "ok\n".to_string()),
        Some(since) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "database unreachable since {}: writes are refused, reads answered from memory\n",
                since.rfc3339()
            ),
        ),
    }
}

/// The caller's address, plain, for clients that detect their address here.
pub(super) async fn myip(Client(client): Client) -> Response {
    text(StatusCode::OK, format!("{client}\n"))
}

/// The caller's address in checkip.dyndns.org's form, which every dyndns2 client's
/// address-detection parser reads.
pub(super) async fn checkip(Client(client): Client) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        format!(
            "<html><head><title>Current IP Check</title></head><body>Current IP Address: {client}</body></html>\n"
        ),
    )
        .into_response()
}

/// The counters, to anyone with `public_metrics`, else to the shared key only (a per-host
/// key reads its own host, not the whole server's figures).
pub(super) async fn metrics(
    State(shared): SharedState,
    Client(client): Client,
    headers: HeaderMap,
) -> Response {
    if !shared.context.public_metrics {
        match shared.reader(client, &headers, false) {
            Ok(Scope::Any) => {}
            Ok(_) => {
                return text(
                    StatusCode::FORBIDDEN,
                    "/metrics needs the server's key, not a host's\n".to_string(),
                )
            }
            Err(_) => {
                return challenge(
                    text(
                        StatusCode::UNAUTHORIZED,
                        "/metrics needs the server's key as the bearer token\n".to_string(),
                    ),
                    "Bearer realm=\"dynip\"",
                )
            }
        }
    }
    let body = shared.context.metrics.render(shared.context.table.len());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

impl Shared {
    /// Who may read ([`read_scope`]); a token or password that is no key is charged to
    /// `client`.
    fn reader(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        public: bool,
    ) -> Result<Scope, Unauthorized> {
        let res = read_scope(
            &self.policy(),
            public,
            self.is_throttled(client),
            headers.get(header::AUTHORIZATION),
        );
        if matches!(res, Err(Unauthorized::NotAKey)) {
            self.charge(client);
        }
        res
    }

    /// A host's history from the store (no older than `history_max_age`), on a blocking
    /// thread.
    async fn history(self: &Arc<Self>, name: Name) -> Result<Vec<(Time, IpAddr)>, StoreRead> {
        let shared = Arc::clone(self);
        let changes = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut store = state::lock(&shared.history);
            if store.is_none() {
                *store = Some(StoreReader::open(
                    &shared.context.store_path,
                    shared.context.database_url.as_ref(),
                )?);
            }
            match store.as_mut() {
                Some(store) => {
                    let recent = shared.context.recent.of(&name);
                    let changes = store.history(&name, PendingChanges::Given(&recent))?;
                    Ok(record::within_max_age(
                        changes,
                        Time::now(),
                        shared.context.history_max_age,
                    ))
                }
                None => Ok(Vec::new()),
            }
        })
        .await??;
        Ok(changes)
    }

    /// The latest `limit` events of `host` (or of every host), newest first, from the
    /// store on a blocking thread.
    async fn events(
        self: &Arc<Self>,
        host: Option<Name>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreRead> {
        let shared = Arc::clone(self);
        let events = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let mut store = state::lock(&shared.history);
            if store.is_none() {
                *store = Some(StoreReader::open(
                    &shared.context.store_path,
                    shared.context.database_url.as_ref(),
                )?);
            }
            match store.as_mut() {
                Some(store) => store.events(host.as_ref(), limit),
                None => Ok(Vec::new()),
            }
        })
        .await??;
        Ok(events)
    }

    /// Up to `limit` hosts of `scope` in name order, after `after`; and how many `scope`
    /// covers in all.
    fn hosts(
        &self,
        scope: &Scope,
        after: Option<&Name>,
        limit: usize,
    ) -> (Vec<(Name, Record)>, usize) {
        match scope {
            Scope::Any => {
                let n_hosts = self.context.table.len();
                let hosts = self
                    .context
                    .table
                    .chunk_after(after, limit)
                    .into_iter()
                    .map(|(name, entry)| (name, entry.record))
                    .collect();
                (hosts, n_hosts)
            }
            Scope::Hosts(names) => {
                let mut hosts: Vec<(Name, Record)> = names
                    .iter()
                    .filter_map(|name| {
                        let entry = self.context.table.get(name)?;
                        Some((name.clone(), entry.record))
                    })
                    .collect();
                hosts.sort_by(|a, b| a.0.cmp(&b.0));
                let n_hosts = hosts.len();
                hosts.retain(|(name, _)| after.is_none_or(|after| name > after));
                hosts.truncate(limit);
                (hosts, n_hosts)
            }
        }
    }

    /// The name in a URL, its record and its spelling as first reported, for `scope`.
    fn lookup(&self, scope: &Scope, name: &str) -> Result<(Name, Record), Lookup> {
        let name = Name::parse(name).map_err(|e| Lookup::BadName(e.to_string()))?;
        if !scope.covers(&name) {
            return Err(Lookup::Forbidden);
        }
        let (spelled, entry) = self
            .context
            .table
            .get_named(&name)
            .ok_or(Lookup::NotFound)?;
        Ok((spelled, entry.record))
    }
}

/// Why a host in a URL cannot be shown.
enum Lookup {
    BadName(String),
    Forbidden,
    NotFound,
}

pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    // Serializing plain structs of strings cannot fail.
    let body = serde_json::to_string(value).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &api::ErrorJson {
            error: message.to_string(),
        },
    )
}

fn api_unauthorized() -> Response {
    challenge(
        json_error(
            StatusCode::UNAUTHORIZED,
            "a key of this server is needed as the bearer token",
        ),
        "Bearer realm=\"dynip\"",
    )
}

fn lookup_error(error: Lookup) -> Response {
    match error {
        Lookup::BadName(reason) => json_error(
            StatusCode::BAD_REQUEST,
            &format!("not a host name: {reason}"),
        ),
        Lookup::Forbidden => json_error(StatusCode::FORBIDDEN, "this key is for another host"),
        Lookup::NotFound => json_error(StatusCode::NOT_FOUND, "no such host"),
    }
}

pub(super) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        api::OPENAPI,
    )
        .into_response()
}

pub(super) async fn api_hosts(State(shared): SharedState, ApiReader(scope): ApiReader) -> Response {
    let (hosts, _) = shared.hosts(&scope, None, usize::MAX);
    let now = Time::now();
    let stale_after = shared.context.stale_after;
    let hosts = hosts
        .iter()
        .map(|(name, record)| api::host(name, record, now, stale_after))
        .collect();
    json(StatusCode::OK, &api::HostsJson { hosts })
}

/// `GET /api/v1/txt`: the TXT records at the names the key may change (with a host's
/// key, its own name and its `_acme-challenge`).
pub(super) async fn api_txt(State(shared): SharedState, ApiReader(scope): ApiReader) -> Response {
    let txt = shared
        .context
        .table
        .all_txt()
        .into_iter()
        .filter(|(name, _)| match &scope {
            Scope::Any => true,
            Scope::Hosts(hosts) => hosts
                .iter()
                .any(|host| TsigScope::Host(host.clone()).may_change(name.folded())),
        })
        .map(|(name, values)| api::TxtJson {
            name: name.as_str().to_owned(),
            values: values.iter().map(Txt::text).collect(),
        })
        .collect();
    json(StatusCode::OK, &api::TxtRecordsJson { txt })
}

pub(super) async fn api_host(
    State(shared): SharedState,
    ApiReader(scope): ApiReader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match shared.lookup(&scope, &name) {
        Ok((name, record)) => json(
            StatusCode::OK,
            &api::host(&name, &record, Time::now(), shared.context.stale_after),
        ),
        Err(e) => lookup_error(e),
    }
}

pub(super) async fn api_history(
    State(shared): SharedState,
    ApiReader(scope): ApiReader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let name = match shared.lookup(&scope, &name) {
        Ok((name, _)) => name,
        Err(e) => return lookup_error(e),
    };
    match shared.history(name.clone()).await {
        Ok(changes) => json(StatusCode::OK, &api::history(&name, &changes)),
        Err(e) => {
            warn!(error = %e, "cannot read a history");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store")
        }
    }
}

/// Events the API gives when the request names no `limit`, and the most it gives.
const DEFAULT_EVENTS: usize = 50;
const MAX_EVENTS: usize = 1000;

/// Events a host's page shows.
const PAGE_EVENTS: usize = 20;

/// The `limit` of an events request.
fn events_limit(query: Option<&str>) -> Result<usize, &'static str> {
    let limit = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "limit")
        .map(|(_, value)| value.into_owned());
    match limit {
        None => Ok(DEFAULT_EVENTS),
        Some(value) => match value.parse::<usize>() {
            Ok(limit @ 1..=MAX_EVENTS) => Ok(limit),
            _ => Err("limit must be a number from 1 to 1000"),
        },
    }
}

/// `GET /api/v1/events`: every host's the key may read.
pub(super) async fn api_events(
    State(shared): SharedState,
    ApiReader(scope): ApiReader,
    RawQuery(query): RawQuery,
) -> Response {
    let limit = match events_limit(query.as_deref()) {
        Ok(limit) => limit,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, reason),
    };
    let read = match &scope {
        Scope::Any => shared.events(None, limit).await,
        Scope::Hosts(names) => {
            let mut all = Vec::new();
            let mut res = Ok(());
            for name in names {
                match shared.events(Some(name.clone()), limit).await {
                    Ok(events) => all.extend(events),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            all.sort_by_key(|event| std::cmp::Reverse(event.id));
            all.truncate(limit);
            res.map(|()| all)
        }
    };
    match read {
        Ok(events) => json(StatusCode::OK, &api::events(&events)),
        Err(e) => {
            warn!(error = %e, "cannot read the events");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store")
        }
    }
}

/// `GET /api/v1/hosts/{name}/events`.
pub(super) async fn api_host_events(
    State(shared): SharedState,
    ApiReader(scope): ApiReader,
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let name = match shared.lookup(&scope, &name) {
        Ok((name, _)) => name,
        Err(e) => return lookup_error(e),
    };
    let limit = match events_limit(query.as_deref()) {
        Ok(limit) => limit,
        Err(reason) => return json_error(StatusCode::BAD_REQUEST, reason),
    };
    match shared.events(Some(name), limit).await {
        Ok(events) => json(StatusCode::OK, &api::events(&events)),
        Err(e) => {
            warn!(error = %e, "cannot read a host's events");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store")
        }
    }
}

fn html(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn page_unauthorized() -> Response {
    challenge(
        text(
            StatusCode::UNAUTHORIZED,
            "the status page needs a key of this server as the password\n".to_string(),
        ),
        "Basic realm=\"dynip\", charset=\"UTF-8\"",
    )
}

/// The status page: the first [`status::MAX_HOSTS_SHOWN`] hosts, or with `?after=NAME`
/// those after NAME (the page's "next" link).
pub(super) async fn status_page(
    State(shared): SharedState,
    PageReader(scope): PageReader,
    RawQuery(query): RawQuery,
) -> Response {
    let after = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(key, _)| key == "after")
        .map(|(_, value)| Name::parse(&value));
    let after = match after {
        None => None,
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("after: not a host name: {e}\n"),
            )
        }
    };
    // One more than a page, to know whether there is a next one.
    let (mut hosts, n_hosts) = shared.hosts(&scope, after.as_ref(), status::MAX_HOSTS_SHOWN + 1);
    let more = hosts.len() > status::MAX_HOSTS_SHOWN;
    hosts.truncate(status::MAX_HOSTS_SHOWN);
    let rows: Vec<status::Row<'_>> = hosts
        .iter()
        .map(|(name, record)| status::Row { name, record })
        .collect();
    let page = status::Page {
        n_hosts,
        after: after.as_ref(),
        next: if more {
            hosts.last().map(|(name, _)| name)
        } else {
            None
        },
    };
    html(status::page(
        &rows,
        &page,
        Time::now(),
        shared.context.stale_after,
    ))
}

pub(super) async fn host_page(
    State(shared): SharedState,
    PageReader(scope): PageReader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let (name, record) = match shared.lookup(&scope, &name) {
        Ok(found) => found,
        Err(Lookup::BadName(reason)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("not a host name: {reason}\n"),
            )
        }
        Err(Lookup::Forbidden) => {
            return text(
                StatusCode::FORBIDDEN,
                "this key is for another host\n".to_string(),
            )
        }
        Err(Lookup::NotFound) => return text(StatusCode::NOT_FOUND, "no such host\n".to_string()),
    };
    let events = match shared.events(Some(name.clone()), PAGE_EVENTS).await {
        Ok(events) => events,
        Err(e) => {
            warn!(error = %e, "cannot read a host's events");
            Vec::new()
        }
    };
    match shared.history(name.clone()).await {
        Ok(changes) => html(status::host_page(
            &name,
            &record,
            &changes,
            &events,
            Time::now(),
            shared.context.stale_after,
        )),
        Err(e) => {
            warn!(error = %e, "cannot read a history");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the store\n".to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const PC_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

    /// Who may read, under the server config `config`, with `Authorization:
    /// authorization` (if any), compared with `expect`: `any`, the names of a per-host
    /// key's scope, or why not.
    fn check(
        config: &str,
        public: bool,
        throttled: bool,
        authorization: Option<&str>,
        expect: &str,
    ) {
        let policy = Policy::new(&crate::config::parse(config).unwrap().server);
        let authorization = authorization.map(|value| HeaderValue::from_str(value).unwrap());
        let actual = match read_scope(&policy, public, throttled, authorization.as_ref()) {
            Ok(Scope::Any) => "any".to_string(),
            Ok(Scope::Hosts(names)) => {
                let names: Vec<String> = names.iter().map(Name::to_string).collect();
                names.join(",")
            }
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(
            actual, expect,
            "config {config:?}, public {public}, throttled {throttled}, authorization {authorization:?}"
        );
    }

    #[test]
    fn readers_are_told_apart_by_why_they_may_not_read() {
        let keyed = format!("[DynIP:Server]\nkey = {KEY}\n[DynIP:Hosts]\npc = {PC_KEY}\n");
        let bearer = |key: &str| format!("Bearer {key}");
        let basic = |key: &str| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("me:{key}"));
            format!("Basic {encoded}")
        };
        check(&keyed, false, false, Some(&bearer(KEY)), "any");
        check(&keyed, false, false, Some(&basic(KEY)), "any");
        check(&keyed, false, false, Some(&bearer(PC_KEY)), "pc");
        check(&keyed, false, false, None, "NoCredentials");
        check(
            &keyed,
            false,
            false,
            Some("Digest whatever"),
            "NoCredentials",
        );
        check(&keyed, false, false, Some("Basic !!!"), "NoCredentials");
        check(&keyed, false, false, Some(&bearer("not-a-key")), "NotAKey");
        check(&keyed, false, true, Some(&bearer(KEY)), "Throttled");
        // Public, or nothing to authenticate with: everyone reads everything.
        check(&keyed, true, true, None, "any");
        check("", false, true, Some(&bearer("not-a-key")), "any");
    }
}
