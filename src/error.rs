//! The crate's error, and the one place that maps errors to exit codes.
//!
//! Codes 0–5 mean what they meant in the original DynIP; 6 and up are new. The README's
//! table of exit codes is this `match`, in prose. The server's errors (store, JSON file,
//! HTTP, DNS) exist on Unix only, as their modules do.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::edge::client::ClientError;
use crate::model::name::NameError;
#[cfg(feature = "server")]
use crate::{
    edge::dns::DnsError, edge::export::ExportError, edge::http::HttpError, edge::udp::UdpError,
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Config {
        path: PathBuf,
        /// Boxed: with a bad value's three strings beside a `PathBuf` (32 bytes on
        /// Windows), every `Result<_, Error>` passed clippy's `result_large_err` limit there.
        source: Box<ConfigError>,
    },
    /// A sink that cannot be set up at start: its secret file unreadable, its TLS setup
    /// refused.
    #[error("[{section}] {key}: {reason}")]
    Sink {
        section: String,
        key: &'static str,
        reason: String,
    },
    #[error("config {path}: hostname {value:?}: {source} (set hostname in [DynIP:Client])")]
    BadHostname {
        path: PathBuf,
        value: String,
        source: NameError,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[cfg(feature = "server")]
    #[error(transparent)]
    Store(#[from] StoreError),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot write {path}: {source} (the server creates and replaces files there)")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; dynip init never overwrites a file (choose another path, or remove it)")]
    InitExists(PathBuf),
    #[error("cannot write {path}: {source}")]
    InitWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no host named {0:?} in the store")]
    UnknownHost(String),
    #[error("bad host name {value:?}: {source}")]
    BadName { value: String, source: NameError },
    #[error("{0}")]
    Internal(String),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Http(#[from] HttpError),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[cfg(feature = "server")]
    #[error(transparent)]
    Udp(#[from] UdpError),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Internal(_) => 1,
            #[cfg(feature = "server")]
            Error::Store(e) if e.is_bad_file() => 6,
            #[cfg(feature = "server")]
            Error::Store(StoreError::NotEmpty(_)) => 8,
            #[cfg(feature = "server")]
            Error::Export(ExportError::Corrupt { .. }) => 6,
            #[cfg(feature = "server")]
            Error::Store(_) | Error::Export(_) => 2,
            Error::NotWritable { .. } => 2,
            Error::ConfigRead { .. }
            | Error::Config { .. }
            | Error::BadHostname { .. }
            | Error::Sink { .. } => 3,
            Error::Client(
                ClientError::EmptyServerHostname { .. } | ClientError::Resolve { .. },
            ) => 4,
            Error::Client(ClientError::Send { .. }) => 5,
            Error::Bind { .. } => 7,
            Error::InitExists(_) | Error::InitWrite { .. } => 8,
            Error::UnknownHost(_) | Error::BadName { .. } => 9,
            Error::Client(ClientError::NoAck { .. }) => 10,
            #[cfg(feature = "server")]
            Error::Http(HttpError::Bind { .. }) => 7,
            #[cfg(feature = "server")]
            Error::Http(_) => 3,
            #[cfg(feature = "server")]
            Error::Dns(DnsError::Bind { .. }) => 7,
            #[cfg(feature = "server")]
            Error::Dns(DnsError::Zone(_)) => 3,
            #[cfg(feature = "server")]
            Error::Udp(UdpError::Bind { .. } | UdpError::Resolve { .. }) => 7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_codes_keep_their_meaning() {
        let config = Error::ConfigRead {
            path: "x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(config.exit_code(), 3);
        let empty = Error::from(ClientError::EmptyServerHostname { path: "x".into() });
        assert_eq!(empty.exit_code(), 4);
        let send = Error::from(ClientError::Send {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::ErrorKind::Other.into(),
        });
        assert_eq!(send.exit_code(), 5);
    }

    #[cfg(feature = "server")]
    #[test]
    fn json_file_codes_keep_their_meaning() {
        let log = Error::Export(ExportError::Write {
            path: "x".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        });
        assert_eq!(log.exit_code(), 2);
        let corrupt = Error::Export(ExportError::Corrupt {
            path: "x".into(),
            detail: String::new(),
        });
        assert_eq!(corrupt.exit_code(), 6);
    }

    #[cfg(feature = "server")]
    #[test]
    fn report_sockets_that_cannot_be_bound_exit_7() {
        let bind = Error::from(UdpError::Bind {
            addr: "192.0.2.1:1979".parse().unwrap(),
            source: std::io::ErrorKind::AddrNotAvailable.into(),
        });
        assert_eq!(bind.exit_code(), 7);
        assert!(bind
            .to_string()
            .starts_with("cannot listen on 192.0.2.1:1979: "));
        let resolve = Error::from(UdpError::Resolve {
            name: "nowhere.invalid".into(),
            port: 1979,
            source: std::io::ErrorKind::NotFound.into(),
        });
        assert_eq!(resolve.exit_code(), 7);
        assert!(resolve
            .to_string()
            .starts_with("cannot listen on nowhere.invalid:1979: "));
    }
}
