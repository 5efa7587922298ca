//! The HTTP edge: dyndns2 updates, `/myip`, the JSON API, the status page, `/metrics` and
//! `/healthz`, over HTTP or HTTPS (rustls) on `http_listen`.
//!
//! Owns the listener, the accept loop, each connection's limits and time-outs, and the
//! router; the only module that knows axum, hyper or rustls. The routes live beside it:
//! `update` (dyndns2), `read` (everything that only reads), `forwarded` (who the client
//! is), `tls` (the acceptor). The protocol is `dyndns`'s, who may update or read what is
//! `policy`'s, committing is the writer's, the documents are `api`'s and `status`'s. A
//! dyndns2 update is answered `good` only after the writer has committed it. Nothing a
//! client sends can stop the accept loop or change anything but the hosts its
//! credentials cover.
//!
//! Limits, each answered with a clear status and changing nothing:
//! - a request head over [`MAX_HEAD_BYTES`]: `431`; a body over [`MAX_BODY_BYTES`]: `413`;
//! - a request head not complete within [`HEAD_TIMEOUT`] (a slow client): the connection
//!   is closed; a TLS handshake not done within [`HEAD_TIMEOUT`]: likewise;
//! - a request not answered within [`REQUEST_TIMEOUT`]: `408`;
//! - at most [`MAX_CONNECTIONS`] connections at once: the rest wait in the kernel's
//!   backlog.

mod acme_dns;
mod forwarded;
mod read;
mod tls;
mod update;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use crate::config::{AcmeDnsRegister, DatabaseUrl, ServerConfig};
use crate::edge::net::{self, Accept};
use crate::model::record::Time;
use crate::policy::{Limiter, Policy};
use crate::state;
use crate::state::metrics::Metrics;
use crate::state::table::Table;
use crate::store::postgresql::DatabaseHealth;
use crate::store::StoreReader;
use crate::writer::{Job, Recent};
use acme_dns::{acme_dns_health, acme_dns_register, acme_dns_update};
use read::{
    api_events, api_history, api_host, api_host_events, api_hosts, api_txt, checkip, healthz,
    host_page, metrics, myip, openapi, status_page,
};
pub use tls::check_tls;
use tls::tls_acceptor;
use update::{relay, update, Outcomes};

/// The largest request head (request line and headers). A router's update URL with its
/// headers is well under 1 KiB; browsers send a few KiB of cookies at most.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The largest request body: the acme-dns API's JSON documents are well under it; every
/// other route is a GET.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// How long a client may take to send a request head, or to finish a TLS handshake.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take to be answered. An update waits for its commit, which
/// takes milliseconds; this only bounds a stuck store.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. Each costs a task and its buffers (tens of KiB);
/// thousands of routers reporting every few minutes need a few at a time.
pub const MAX_CONNECTIONS: usize = 4096;
/// Failed credentials a source may cause per second, and in a burst, before it is
/// answered `abuse`: a router with a wrong password retries every few minutes, a
/// password guesser thousands of times a second.
const CREDENTIAL_FAILURES_PER_SEC: f64 = 1.0;
const CREDENTIAL_FAILURE_BURST: f64 = 20.0;
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
    let tcp = net::tcp_listener(addr, 1024).map_err(|source| HttpError::Bind { addr, source })?;
    Ok(Some(Listener { tcp, tls }))
}

/// What the HTTP edge shares with the rest of the server.
#[derive(Clone)]
pub struct HttpContext {
    pub reports: mpsc::Sender<Job>,
    /// The keys and rules in force; replaced whole on SIGHUP, as for UDP.
    pub policy: watch::Receiver<Arc<Policy>>,
    pub table: Arc<Table>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub store_path: PathBuf,
    /// `database_url`: the store is this database instead.
    pub database_url: Option<DatabaseUrl>,
    /// With `database_url`: whether the database answers (`/healthz`).
    pub database: Option<Arc<DatabaseHealth>>,
    /// The address changes not yet in the store's `history`.
    pub recent: Arc<Recent>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub public_status: bool,
    pub public_metrics: bool,
    pub stale_after: Duration,
    /// `history_max_age`: older changes are not shown.
    pub history_max_age: Option<Duration>,
    /// `dns_zone`: where acme-dns accounts' TXT records go (`None`: no acme-dns API).
    pub dns_zone: Option<String>,
    /// `acme_dns_register`: who may register acme-dns accounts.
    pub acme_dns_register: AcmeDnsRegister,
}

/// The routes' shared state.
struct Shared {
    context: HttpContext,
    /// Failed credentials per source; a source without tokens is answered `abuse`.
    limiter: Mutex<Limiter>,
    /// A read-only connection to the store, for histories (the table has none), opened
    /// on first use.
    history: Mutex<Option<StoreReader>>,
    outcomes: Arc<Outcomes>,
}

/// Serves HTTP on `listener` until `shutdown`, then lets open requests finish (for at
/// most a few seconds) and drops its senders of reports, so the writer can finish.
///
/// # Errors
/// When the socket cannot be registered with the runtime.
pub async fn serve(listener: Listener, context: HttpContext) -> std::io::Result<()> {
    let tcp = TcpListener::from_std(listener.tcp)?;
    let local = tcp.local_addr()?;
    let proto = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!("listening {proto}={local}");
    let shutdown = context.shutdown.clone();
    let outcomes = Arc::new(Outcomes::default());
    let relay = tokio::spawn(relay(Arc::clone(&outcomes)));
    let router = router(Arc::new(Shared {
        context,
        limiter: Mutex::new(Limiter::new(
            CREDENTIAL_FAILURES_PER_SEC,
            CREDENTIAL_FAILURE_BURST,
        )),
        history: Mutex::new(None),
        outcomes,
    }));
    let limits = Accept {
        max_open: MAX_CONNECTIONS,
        pause_after_error: Duration::from_millis(50),
        log_error: |e| debug!(error = %e, "accept failed"),
    };
    let tls = listener.tls;
    let serve = |stream: tokio::net::TcpStream, peer| {
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        async move {
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
        }
    };
    let mut connections = net::accept_bounded(&tcp, limits, &shutdown, serve).await;
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
        .route("/api/v1/hosts/{name}/events", get(api_host_events))
        .route("/api/v1/events", get(api_events))
        .route("/api/v1/txt", get(api_txt))
        .route("/acme-dns/register", post(acme_dns_register))
        .route("/acme-dns/update", post(acme_dns_update))
        .route("/acme-dns/health", get(acme_dns_health))
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

impl Shared {
    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.context.policy.borrow())
    }

    /// Charges `client` for failed credentials.
    fn charge(&self, client: IpAddr) {
        state::lock(&self.limiter).charge(client, Time::now());
    }

    fn is_throttled(&self, client: IpAddr) -> bool {
        state::lock(&self.limiter)
            .check(client, Time::now())
            .is_err()
    }
}

/// `response` with a `WWW-Authenticate` challenge.
fn challenge(mut response: Response, scheme: &'static str) -> Response {
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    response
}
