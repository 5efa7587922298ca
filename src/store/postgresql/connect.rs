//! Connecting: the driver's settings and TLS from `database_url`, and the listener for
//! other servers' notifications.

use super::*;

/// Listens for other servers' commits on its own connection: calls `woken` for each
/// notification, and once after each (re)connection, since notifications sent while it
/// was not connected are lost. Returns when `stop` is set (it looks every
/// `poll` at most).
pub fn listen(
    url: &DatabaseUrl,
    health: &DatabaseHealth,
    stop: &AtomicBool,
    poll: Duration,
    mut woken: impl FnMut(),
) {
    let Ok((config, tls)) = driver_config(url) else {
        // `Database::open` read the same URL and CA file: not reached.
        return;
    };
    let Ok(runtime) = session::runtime() else {
        tracing::error!("the listener cannot start its runtime: other servers' commits are read at each turn only");
        return;
    };
    while !stop.load(Ordering::Acquire) {
        let mut listening = match Listening::connect(&runtime, &config, tls.clone(), CHANNEL) {
            Ok(listening) => listening,
            Err(e) => {
                tracing::debug!(error = %e, "the listener cannot reach the database");
                health.failed();
                std::thread::sleep(RETRY_AFTER.min(poll));
                continue;
            }
        };
        // What was committed while this listener was away.
        woken();
        while !stop.load(Ordering::Acquire) {
            match listening.next(poll) {
                Some(true) => woken(),
                Some(false) => {}
                None => break,
            }
        }
    }
}

/// The driver's settings for `url` (its own, and dynip's defaults: [`CONNECT_TIMEOUT`],
/// TCP keepalives, the application name `dynip`) and its TLS connector.
///
/// # Errors
/// A URL the driver cannot read, a CA file that cannot be read.
pub(super) fn driver_config(url: &DatabaseUrl) -> Result<(Config, MakeRustlsConnect), StoreError> {
    let (text, root) = split_root_cert(url.as_str());
    let mut config: Config = text.parse().map_err(|source| StoreError::Database {
        url: url.shown(),
        source,
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives_idle(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("dynip");
    }
    // Each statement reads or writes a few rows; the planner's guess, before the
    // journal's statistics catch up with it, once made a read of 4 entries start a
    // parallel worker (4 ms instead of 0.1). No parallel plans and no JIT for dynip's
    // sessions; the URL's own `options` come after, and win.
    let own = config.get_options().unwrap_or_default().to_string();
    config.options(format!("{SESSION_OPTIONS} {own}").trim_end());
    let tls = tls_connector(root.as_deref()).map_err(|detail| StoreError::DatabaseSetup {
        url: url.shown(),
        detail,
    })?;
    Ok((config, tls))
}

/// The settings of every dynip session (`-c NAME=VALUE`, as libpq's `options`).
const SESSION_OPTIONS: &str = "-c max_parallel_workers_per_gather=0 -c jit=off";

/// Takes `sslrootcert=PATH` out of a URL's query (the driver does not read it): the
/// certificates of the authority the server's certificate must chain to, instead of the
/// public ones.
fn split_root_cert(url: &str) -> (String, Option<std::path::PathBuf>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut root = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslrootcert", path)) => {
                root = Some(std::path::PathBuf::from(path));
                false
            }
            _ => true,
        })
        .collect();
    let text = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (text, root)
}

/// rustls with the public authorities, or the one in `root`'s PEM file.
fn tls_connector(root: Option<&std::path::Path>) -> Result<MakeRustlsConnect, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in sslrootcert {}", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_certificate_is_taken_out_of_the_url() {
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem"),
            (
                "postgres://u@h/db?sslmode=require".to_string(),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db?sslrootcert=ca.pem"),
            ("postgres://u@h/db".to_string(), Some("ca.pem".into()))
        );
        assert_eq!(
            split_root_cert("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
    }
}
