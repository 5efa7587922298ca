//! The HTTP edge: dyndns2 updates, `/myip`, the JSON API, the status page, `/metrics` and
//! `/healthz`, over HTTP or HTTPS (rustls) on `http_listen`.
//!
//! Owns the listener, the accept loop, each connection's limits and time-outs, and the
//! routes; the only module that knows axum, hyper or rustls. The protocol is `dyndns`'s,
//! who may update or read what is `auth`'s, committing is the writer's, the documents are
//! `api`'s and `status`'s. A dyndns2 update is answered `good` only after the writer has
//! committed it. Nothing a client sends can stop the accept loop or change anything but
//! the hosts its credentials cover.
//!
//! Limits, each answered with a clear status and changing nothing:
//! - a request head over [`MAX_HEAD_BYTES`]: `431`; a body over [`MAX_BODY_BYTES`]: `413`;
//! - a request head not complete within [`HEAD_TIMEOUT`] (a slow client): the connection
//!   is closed; a TLS handshake not done within [`HEAD_TIMEOUT`]: likewise;
//! - a request not answered within [`REQUEST_TIMEOUT`]: `408`;
//! - at most [`MAX_CONNECTIONS`] connections at once: the rest wait in the kernel's
//!   backlog.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Path as UrlPath, RawQuery, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::config::{ServerConfig, TlsFiles};
use crate::model::name::Name;
use crate::model::record::{Record, Time};
use crate::policy::{Limiter, Policy, Scope};
use crate::proto::api;
use crate::proto::dyndns::{self, Answer, Credentials, QueryError};
use crate::proto::status;
use crate::state::handoff::Handoff;
use crate::state::metrics::{Metrics, Reason, Via};
use crate::state::table::Table;
use crate::store::{PendingChanges, Store, StoreError};
use crate::writer::{Outcome, Recent, Report};

/// The largest request head (request line and headers). A router's update URL with its
/// headers is well under 1 KiB; browsers send a few KiB of cookies at most.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body. Every route is a GET; a body is never needed.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// How long a client may take to send a request head, or to finish a TLS handshake.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take to be answered. An update waits for its commit, which
/// takes milliseconds; this only bounds a stuck store.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. Each costs a task and its buffers (tens of KiB);
/// thousands of routers reporting every few minutes need a few at a time.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long an update waits for its commit before it is answered `911` (the report may
/// still commit): far above a commit's milliseconds, below clients' own time-outs
/// (ddclient's and inadyn's are 120 and 30 s).
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Failed credentials a source may cause per second, and in a burst, before it is
/// answered `abuse`: a router with a wrong password retries every few minutes, a
/// password guesser thousands of times a second.
const FAILURES_PER_SEC: f64 = 1.0;
const FAILURE_BURST: f64 = 20.0;
/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the HTTP edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read tls_cert {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("tls_cert {0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCert(PathBuf),
    #[error("cannot read tls_key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("tls_cert {cert} and tls_key {key} do not make a TLS configuration: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A bound HTTP listener, with its TLS configuration when `tls_cert`/`tls_key` are set.
pub struct Listener {
    tcp: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }
}

/// Binds `http_listen` (when set) and reads the TLS files.
///
/// # Errors
/// An address that cannot be bound, TLS files that cannot be read or do not match.
pub fn bind(config: &ServerConfig) -> Result<Option<Listener>, HttpError> {
    let Some(addr) = config.http_listen else {
        return Ok(None);
    };
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let bind_error = |source| HttpError::Bind { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_error)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).map_err(bind_error)?;
    }
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)?;
    Ok(Some(Listener {
        tcp: socket.into(),
        tls,
    }))
}

/// Reads the TLS files as [`bind`] would, for `dynip check`.
///
/// # Errors
/// Files that cannot be read, hold no certificate or key, or do not match.
pub fn check_tls(files: &TlsFiles) -> Result<(), HttpError> {
    tls_acceptor(files).map(drop)
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| HttpError::Cert {
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(HttpError::NoCert(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| HttpError::Key {
        path: files.key.clone(),
        source,
    })?;
    let tls_error = |source| HttpError::Tls {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What the HTTP edge shares with the rest of the server.
#[derive(Clone)]
pub struct Edge {
    pub reports: mpsc::Sender<Report>,
    /// The keys and rules in force; replaced whole on SIGHUP, as for UDP.
    pub policy: watch::Receiver<Arc<Policy>>,
    pub table: Arc<Table>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub store_path: PathBuf,
    /// The address changes not yet in the store's `history`.
    pub recent: Arc<Recent>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub public_status: bool,
    pub public_metrics: bool,
    pub stale_after: Duration,
    /// `history_max_age`: older changes are not shown.
    pub history_max_age: Option<Duration>,
}

/// The routes' shared state.
struct Shared {
    edge: Edge,
    /// Failed credentials per source; a source without tokens is answered `abuse`.
    limiter: Mutex<Limiter>,
    /// A read-only connection to the store, for histories (the table has none), opened
    /// on first use.
    history: Mutex<Option<Store>>,
    outcomes: Arc<Outcomes>,
}

/// Outcomes on their way from the writer's thread to the requests waiting for them. The
/// writer queues a commit's outcomes here and wakes the relay task once; the relay hands
/// them to the requests on the runtime's own thread. Waking each request from the
/// writer's thread cost one system call and one run-queue lock per report.
type Outcomes = Handoff<(oneshot::Sender<Outcome>, Outcome)>;

/// Hands queued outcomes to their requests, for as long as the server serves.
async fn relay(outcomes: Arc<Outcomes>) {
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

/// Serves HTTP on `listener` until `shutdown`, then lets open requests finish (for at
/// most a few seconds) and drops its senders of reports, so the writer can finish.
///
/// # Errors
/// When the socket cannot be registered with the runtime.
pub async fn serve(listener: Listener, edge: Edge) -> std::io::Result<()> {
    let tcp = TcpListener::from_std(listener.tcp)?;
    let local = tcp.local_addr()?;
    let proto = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!("listening {proto}={local}");
    let shutdown = edge.shutdown.clone();
    let outcomes = Arc::new(Outcomes::default());
    let relay = tokio::spawn(relay(Arc::clone(&outcomes)));
    let router = router(Arc::new(Shared {
        edge,
        limiter: Mutex::new(Limiter::new(FAILURES_PER_SEC, FAILURE_BURST)),
        history: Mutex::new(None),
        outcomes,
    }));
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            res = tcp.accept() => match res {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = listener.tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, router, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, router, shutdown).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(router);
    debug!(%local, n_open = connections.len(), "HTTP stops; finishing open requests");
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(
            n_open = connections.len(),
            "closing HTTP connections still open"
        );
        connections.shutdown().await;
    }
    relay.abort();
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, until the client closes it, a limit is
/// hit, or the server shuts down (then after the request in progress).
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let res = tokio::select! {
        res = connection.as_mut() => res,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = res {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/nic/update", get(update))
        .route("/update", get(update))
        .route("/v3/update", get(update))
        .route("/myip", get(myip))
        .route("/checkip", get(checkip))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/hosts", get(api_hosts))
        .route("/api/v1/hosts/{name}", get(api_host))
        .route("/api/v1/hosts/{name}/history", get(api_history))
        .route("/", get(status_page))
        .route("/hosts/{name}", get(host_page))
        .fallback(not_found)
        .with_state(shared)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

type SharedState = State<Arc<Shared>>;

/// The client's address ([`Shared::client_addr`]): the connection's source, or the
/// client behind a trusted proxy.
struct Client(IpAddr);

impl FromRequestParts<Arc<Shared>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Client, Self::Rejection> {
        let peer = peer(&parts.extensions);
        Ok(Client(shared.client_addr(peer, &parts.headers)))
    }
}

/// The connection's peer: every connection's requests carry it (`serve_connection`).
fn peer(extensions: &axum::http::Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0)
}

/// A reader of the API: the scope of the key given as the bearer token.
struct ApiReader(Scope);

impl FromRequestParts<Arc<Shared>> for ApiReader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<ApiReader, Response> {
        let Ok(Client(client)) = Client::from_request_parts(parts, shared).await;
        shared
            .reader(client, &parts.headers, false)
            .map(ApiReader)
            .map_err(|()| api_unauthorized())
    }
}

/// A reader of the status page: the scope of the key given as the Basic password, or
/// everything with `public_status`.
struct PageReader(Scope);

impl FromRequestParts<Arc<Shared>> for PageReader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<PageReader, Response> {
        let Ok(Client(client)) = Client::from_request_parts(parts, shared).await;
        shared
            .reader(client, &parts.headers, shared.edge.public_status)
            .map(PageReader)
            .map_err(|()| page_unauthorized())
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".to_string())
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_string())
}

/// The caller's address, plain, for clients that detect their address here.
async fn myip(Client(client): Client) -> Response {
    text(StatusCode::OK, format!("{client}\n"))
}

/// The caller's address in checkip.dyndns.org's form, which every dyndns2 client's
/// address-detection parser reads.
async fn checkip(Client(client): Client) -> Response {
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
async fn metrics(
    State(shared): SharedState,
    Client(client): Client,
    headers: HeaderMap,
) -> Response {
    if !shared.edge.public_metrics {
        match shared.reader(client, &headers, false) {
            Ok(Scope::Any) => {}
            Ok(_) => {
                return text(
                    StatusCode::FORBIDDEN,
                    "/metrics needs the server's key, not a host's\n".to_string(),
                )
            }
            Err(()) => {
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
    let body = shared.edge.metrics.render(shared.edge.table.len());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The request is taken whole, not through the `HeaderMap` and `RawQuery` extractors,
/// which copy the headers and the query for every update.
async fn update(State(shared): SharedState, request: axum::extract::Request) -> Response {
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
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.edge.policy.borrow())
    }

    fn refuse(&self, client: IpAddr, reason: Reason, detail: &dyn std::fmt::Display) {
        self.edge.metrics.refused(Via::Http, reason);
        debug!(%client, reason = ?reason, %detail, "refusing update");
    }

    /// The client's address: the connection's source, or, when that is a trusted proxy,
    /// the last address in `X-Forwarded-For` that is not one.
    fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        let Some(trusted) = &self.edge.trusted_proxies else {
            return peer;
        };
        forwarded_client(peer, headers, trusted)
    }

    /// Charges `client` for failed credentials.
    fn charge(&self, client: IpAddr) {
        self.limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .charge(client, Instant::now());
    }

    fn is_throttled(&self, client: IpAddr) -> bool {
        self.limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(client, Instant::now())
            .is_err()
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

    /// Who may read: with `Authorization` (Bearer for the API, Basic for the page), the
    /// key's scope; without, everything when no key is configured (anyone may then
    /// report anything anyway), else nothing.
    fn reader(&self, client: IpAddr, headers: &HeaderMap, public: bool) -> Result<Scope, ()> {
        let policy = self.policy();
        if public || policy.has_no_keys() {
            return Ok(Scope::Any);
        }
        if self.is_throttled(client) {
            return Err(());
        }
        let password = headers
            .get(header::AUTHORIZATION)
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
            return Err(());
        };
        match policy.scope_of_password(&password) {
            Some(scope) => Ok(scope.clone()),
            None => {
                self.charge(client);
                Err(())
            }
        }
    }

    /// A host's history from the store, on a blocking thread.
    async fn history(self: &Arc<Self>, name: Name) -> Result<Vec<(Time, IpAddr)>, StoreError> {
        let shared = Arc::clone(self);
        let res = tokio::task::spawn_blocking(move || {
            let mut store = shared
                .history
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if store.is_none() {
                *store = Some(Store::open_read_only(&shared.edge.store_path)?);
            }
            match store.as_ref() {
                Some(store) => {
                    let recent = shared.edge.recent.of(&name);
                    let changes = store.history(&name, PendingChanges::Given(&recent))?;
                    Ok(api::within_max_age(
                        changes,
                        Time::now(),
                        shared.edge.history_max_age,
                    ))
                }
                None => Ok(Vec::new()),
            }
        })
        .await;
        res.unwrap_or_else(|e| Err(StoreError::Missing(PathBuf::from(e.to_string()))))
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
                let n_hosts = self.edge.table.len();
                let hosts = self
                    .edge
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
                        let entry = self.edge.table.get(name)?;
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
        let (spelled, entry) = self.edge.table.get_named(&name).ok_or(Lookup::NotFound)?;
        Ok((spelled, entry.record))
    }
}

/// Why a host in a URL cannot be shown.
enum Lookup {
    BadName(String),
    Forbidden,
    NotFound,
}

/// One host's reports of an update, on their way through the writer.
enum Pending {
    Answered(Answer),
    Waiting {
        waits: Vec<oneshot::Receiver<Outcome>>,
        n_addrs: usize,
    },
}

/// The client behind trusted proxies: `X-Forwarded-For` read from the right (the hop
/// nearest to us), skipping trusted proxies; the first address that is not one is the
/// client. An entry that is not an address stops the walk at the hop before it.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = dyndns::parse_addr(hop) else {
            break;
        };
        client = addr;
        if !is_trusted(&addr) {
            break;
        }
    }
    client
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
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

fn json_error(status: StatusCode, message: &str) -> Response {
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

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        api::OPENAPI,
    )
        .into_response()
}

async fn api_hosts(State(shared): SharedState, ApiReader(scope): ApiReader) -> Response {
    let (hosts, _) = shared.hosts(&scope, None, usize::MAX);
    let now = Time::now();
    let stale_after = shared.edge.stale_after;
    let hosts = hosts
        .iter()
        .map(|(name, record)| api::host(name, record, now, stale_after))
        .collect();
    json(StatusCode::OK, &api::HostsJson { hosts })
}

async fn api_host(
    State(shared): SharedState,
    ApiReader(scope): ApiReader,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match shared.lookup(&scope, &name) {
        Ok((name, record)) => json(
            StatusCode::OK,
            &api::host(&name, &record, Time::now(), shared.edge.stale_after),
        ),
        Err(e) => lookup_error(e),
    }
}

async fn api_history(
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

/// `response` with a `WWW-Authenticate` challenge.
fn challenge(mut response: Response, scheme: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    response
}

/// The status page: the first [`status::MAX_HOSTS_SHOWN`] hosts, or with `?after=NAME`
/// those after NAME (the page's "next" link).
async fn status_page(
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
        shared.edge.stale_after,
    ))
}

async fn host_page(
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
    match shared.history(name.clone()).await {
        Ok(changes) => html(status::host_page(
            &name,
            &record,
            &changes,
            Time::now(),
            shared.edge.stale_after,
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
    use super::*;

    fn check(peer: &str, forwarded: &[&str], trusted: &[&str], expect: &str) {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|net| net.parse().unwrap()).collect();
        let client = forwarded_client(peer.parse().unwrap(), &headers, &trusted);
        assert_eq!(
            client.to_string(),
            expect,
            "{peer} {forwarded:?} {trusted:?}"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        check(
            "198.51.100.1",
            &["203.0.113.7"],
            &["127.0.0.1/32"],
            "198.51.100.1",
        );
        check(
            "127.0.0.1",
            &["203.0.113.7"],
            &["127.0.0.1/32"],
            "203.0.113.7",
        );
        check("127.0.0.1", &[], &["127.0.0.1/32"], "127.0.0.1");
        // A client cannot forge the left part: the nearest untrusted hop wins.
        check(
            "127.0.0.1",
            &["192.0.2.66, 203.0.113.7, 10.0.0.2"],
            &["127.0.0.1/32", "10.0.0.0/8"],
            "203.0.113.7",
        );
        check(
            "127.0.0.1",
            &["192.0.2.66", "203.0.113.7"],
            &["127.0.0.1/32"],
            "203.0.113.7",
        );
        check("127.0.0.1", &["garbage"], &["127.0.0.1/32"], "127.0.0.1");
        check(
            "127.0.0.1",
            &["2001:db8::1"],
            &["127.0.0.0/8"],
            "2001:db8::1",
        );
    }
}
