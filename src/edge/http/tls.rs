//! HTTPS: the rustls acceptor built from `tls_cert`/`tls_key`, and `dynip check`'s reading
//! of the same files.
//!
//! Owns reading the PEM files into a `rustls::ServerConfig`. Must not accept connections
//! or time out handshakes: that is the accept loop's, in `http`.

use std::sync::Arc;

use tokio_rustls::rustls;

use super::HttpError;
use crate::config::TlsFiles;

/// Reads the TLS files as [`super::bind`] would, for `dynip check`.
///
/// # Errors
/// Files that cannot be read, hold no certificate or key, or do not match.
pub fn check_tls(files: &TlsFiles) -> Result<(), HttpError> {
    tls_acceptor(files).map(drop)
}

pub(super) fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, HttpError> {
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
