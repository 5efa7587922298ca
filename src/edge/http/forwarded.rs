//! Who the client is: the connection's peer, or, behind a trusted proxy, the address
//! `X-Forwarded-For` names.
//!
//! Owns the [`Client`] extractor and the `X-Forwarded-For` walk. Believes the header only
//! from `trusted_proxies`; must not decide anything from the address (that is `policy`'s).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::Shared;
use crate::proto::dyndns;

/// The client's address ([`Shared::client_addr`]): the connection's source, or the
/// client behind a trusted proxy.
pub(super) struct Client(pub(super) IpAddr);

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
pub(super) fn peer(extensions: &axum::http::Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |info| info.0)
}

impl Shared {
    /// The client's address: the connection's source, or, when that is a trusted proxy,
    /// the last address in `X-Forwarded-For` that is not one.
    pub(super) fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        let Some(trusted) = &self.context.trusted_proxies else {
            return peer;
        };
        forwarded_client(peer, headers, trusted)
    }
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

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
