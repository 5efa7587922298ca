//! The acme-dns API under `/acme-dns/` and dyndns2's `txt=`: accounts registered with
//! the shared key or a host's key (or refused), updates keeping the two latest values,
//! loose clients' JSON, `allowfrom`, accounts kept across a restart, and what `dig`
//! sees of it all.

use std::net::SocketAddr;

use dynip::model::key::Key;

use crate::dns::{ask, ZONE};
use crate::harness::http::{get, send_raw, update, Response};
use crate::harness::*;

pub const TOKEN_A: &str = "LPsIwTo7o8BoG0-vjCyGQGBWSVIPxI-i_X336eUOQZo";
pub const TOKEN_B: &str = "vG4KaK9C8UW2jSaH2xZqzrWb_fnkb1Mm6AyDpCXlZtE";
const TOKEN_C: &str = "Zx7gTnC9mLcGk3y7b1bW1H3rH8qH0eC9dQz2R7pP1vU";

/// A server with the shared key, `kitchen-pc`'s key, DNS for [`ZONE`] and HTTP, plus
/// `extra` lines ([`crate::update::start`]); returns it with its HTTP and DNS addresses.
fn start(
    dir: &Dir,
    shared: &Key,
    host: &Key,
    extra: &str,
) -> (ServerProcess, SocketAddr, SocketAddr) {
    let (server, dns, http) = crate::update::start(dir, shared, host, extra);
    (server, http, dns)
}

/// `POST path` with `headers` and `body`.
pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (key, value) in headers {
        raw.push_str(&format!("{key}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    send_raw(addr, raw.as_bytes())
}

pub fn json(response: &Response) -> serde_json::Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
}

/// Registers with `bearer` (if any) and `body`; the account document.
pub fn register(http: SocketAddr, bearer: Option<&Key>, body: &str) -> serde_json::Value {
    let auth = bearer.map(|key| format!("Bearer {}", key.encode()));
    let headers: Vec<(&str, &str)> = auth
        .iter()
        .map(|auth| ("Authorization", auth.as_str()))
        .collect();
    let response = post(http, "/acme-dns/register", &headers, body);
    assert_eq!(response.status, 201, "{response:?}");
    json(&response)
}

/// Updates `account`'s TXT value with `body` (keys as given), from the account's own
/// credentials.
pub fn acme_update(http: SocketAddr, account: &serde_json::Value, body: &str) -> Response {
    post(
        http,
        "/acme-dns/update",
        &[
            ("X-Api-User", account["username"].as_str().unwrap()),
            ("X-Api-Key", account["password"].as_str().unwrap()),
        ],
        body,
    )
}

pub fn txt_values(dir: &Dir, dns: SocketAddr, name: &str) -> Vec<String> {
    let answer = ask(dir, "dig", dns, &[name, "TXT", "+short"]);
    let mut values: Vec<String> = answer
        .text
        .lines()
        .filter(|line| line.starts_with('"'))
        .map(|line| line.trim_matches('"').to_owned())
        .collect();
    values.sort();
    values
}

#[test]
fn acme_dns_accounts_set_challenges_keeping_the_latest_two() {
    if !peers_present(
        "acme_dns::acme_dns_accounts_set_challenges_keeping_the_latest_two",
        &["dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(81), test_key(82));
    let (server, http, dns) = start(&dir, &shared, &host, "");
    assert_eq!(get(http, "/acme-dns/health", &[]).status, 200);
    // With a host's key: the host's own challenge name, no CNAME needed.
    let mine = register(http, Some(&host), "");
    assert_eq!(
        mine["fulldomain"],
        format!("_acme-challenge.kitchen-pc.{ZONE}")
    );
    // With the shared key: a name of its own, for a domain elsewhere (a CNAME to it).
    let other = register(http, Some(&shared), r#"{"allowfrom": ["127.0.0.0/8"]}"#);
    let subdomain = other["subdomain"].as_str().unwrap().to_owned();
    assert_eq!(other["fulldomain"], format!("{subdomain}.{ZONE}"));
    assert_eq!(other["allowfrom"], serde_json::json!(["127.0.0.0/8"]));
    // Three updates, as clients send them: the two latest stay.
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    let subdomain_of = mine["subdomain"].as_str().unwrap();
    for (body, token) in [
        (
            format!(r#"{{"subdomain": "{subdomain_of}", "txt": "{TOKEN_A}"}}"#),
            TOKEN_A,
        ),
        // Older clients: capitalised keys.
        (
            format!(r#"{{"SubDomain": "{subdomain_of}", "Txt": "{TOKEN_B}"}}"#),
            TOKEN_B,
        ),
        (
            format!(r#"{{"subdomain":"{subdomain_of}","txt":"{TOKEN_C}"}}"#),
            TOKEN_C,
        ),
    ] {
        let response = acme_update(http, &mine, &body);
        assert_eq!(response.status, 200, "{response:?}");
        // acme.sh looks for the value in the one-line answer.
        assert_eq!(response.body, format!(r#"{{"txt":"{token}"}}"#));
    }
    let mut latest = vec![TOKEN_B.to_owned(), TOKEN_C.to_owned()];
    latest.sort();
    assert_eq!(txt_values(&dir, dns, &challenge), latest);
    // The API shows them, to the host's key as to the shared key, in the order set.
    let bearer = format!("Bearer {}", host.encode());
    let listed = get(http, "/api/v1/txt", &[("Authorization", &bearer)]);
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        json(&listed),
        serde_json::json!({"txt": [{"name": "_acme-challenge.kitchen-pc", "values": [TOKEN_B, TOKEN_C]}]})
    );
    // The other account's name.
    let response = acme_update(
        http,
        &other,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_A}"}}"#),
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        txt_values(&dir, dns, &format!("{subdomain}.{ZONE}")),
        [TOKEN_A]
    );
    // Refused: another account's subdomain, a wrong key, a bad value, no body.
    let wrong_subdomain = acme_update(
        http,
        &mine,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_A}"}}"#),
    );
    assert_eq!(wrong_subdomain.status, 401, "{wrong_subdomain:?}");
    let mut forged = mine.clone();
    forged["password"] = serde_json::json!("x".repeat(40));
    let body = format!(r#"{{"subdomain": "{subdomain_of}", "txt": "{TOKEN_A}"}}"#);
    assert_eq!(acme_update(http, &forged, &body).status, 401);
    let bad = acme_update(
        http,
        &mine,
        &format!(r#"{{"subdomain": "{subdomain_of}", "txt": "short"}}"#),
    );
    assert_eq!(
        (bad.status, json(&bad)["error"].as_str()),
        (400, Some("bad_txt"))
    );
    assert_eq!(acme_update(http, &mine, "").status, 400);
    assert_eq!(txt_values(&dir, dns, &challenge), latest, "nothing changed");
    // Registration needs a key by default.
    assert_eq!(post(http, "/acme-dns/register", &[], "").status, 401);
    let forged_bearer = format!("Bearer {}", test_key(99).encode());
    assert_eq!(
        post(
            http,
            "/acme-dns/register",
            &[("Authorization", &forged_bearer)],
            ""
        )
        .status,
        401
    );
    // Accounts and their values survive a restart.
    drop(server);
    let server = ServerProcess::start(&dir);
    let (http, dns) = (server.listening("http"), server.listening("dns"));
    assert_eq!(txt_values(&dir, dns, &challenge), latest);
    let response = acme_update(http, &mine, &body);
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn registration_open_closed_and_allowfrom() {
    let dir = Dir::new();
    let (shared, host) = (test_key(83), test_key(84));
    let (_server, http, _dns) = start(&dir, &shared, &host, "acme_dns_register = open");
    // Open: anyone, as acme-dns; the account may only update from where it says.
    let account = register(http, None, r#"{"allowfrom": ["192.0.2.0/24"]}"#);
    let subdomain = account["subdomain"].as_str().unwrap();
    let response = acme_update(
        http,
        &account,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_A}"}}"#),
    );
    assert_eq!(
        response.status, 401,
        "from 127.0.0.1, outside allowfrom: {response:?}"
    );
    let bad = post(
        http,
        "/acme-dns/register",
        &[],
        r#"{"allowfrom": ["nowhere"]}"#,
    );
    assert_eq!(
        (bad.status, json(&bad)["error"].as_str()),
        (400, Some("invalid_allowfrom_cidr"))
    );
    // Without a key a source registers a burst of 20 (two above), then no more for now.
    let statuses: Vec<u16> = (0..25)
        .map(|_| post(http, "/acme-dns/register", &[], "").status)
        .collect();
    let created = statuses.iter().filter(|&&status| status == 201).count();
    assert!((17..=19).contains(&created), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&401), "{statuses:?}");
    let closed_dir = Dir::new();
    let (_closed, closed_http, _) = start(&closed_dir, &shared, &host, "acme_dns_register = no");
    let auth = format!("Bearer {}", shared.encode());
    let refused = post(
        closed_http,
        "/acme-dns/register",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(refused.status, 403, "{refused:?}");
}

#[test]
fn dyndns2_txt_sets_and_clears_the_challenge() {
    if !peers_present(
        "acme_dns::dyndns2_txt_sets_and_clears_the_challenge",
        &["dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(85), test_key(86));
    let (_server, http, dns) = start(&dir, &shared, &host, "");
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    let (status, body) = update(http, &host, &format!("hostname=kitchen-pc&txt={TOKEN_A}"));
    assert_eq!((status, body.as_str()), (200, "good\n"));
    assert_eq!(txt_values(&dir, dns, &challenge), [TOKEN_A]);
    // A new value replaces it; no address was reported.
    let (_, body) = update(http, &host, &format!("hostname=kitchen-pc&txt={TOKEN_B}"));
    assert_eq!(body, "good\n");
    assert_eq!(txt_values(&dir, dns, &challenge), [TOKEN_B]);
    assert!(dir.hosts().is_empty(), "{:?}", dir.hosts());
    // Another host's name with this key: nohost.
    let (_, body) = update(http, &host, &format!("hostname=nas&txt={TOKEN_A}"));
    assert_eq!(body, "nohost\n");
    // Without credentials: 401, whatever allow_unsigned.
    let response = get(
        http,
        &format!("/nic/update?hostname=kitchen-pc&txt={TOKEN_A}"),
        &[],
    );
    assert_eq!(response.status, 401);
    // Empty, or clear=true: gone.
    let (_, body) = update(http, &host, "hostname=kitchen-pc&txt=");
    assert_eq!(body, "good\n");
    assert_eq!(
        ask(&dir, "dig", dns, &[&challenge, "TXT"]).status,
        "NXDOMAIN"
    );
    update(http, &host, &format!("hostname=kitchen-pc&txt={TOKEN_C}"));
    let (_, body) = update(http, &shared, "hostname=kitchen-pc&clear=true");
    assert_eq!(body, "good\n");
    assert_eq!(
        ask(&dir, "dig", dns, &[&challenge, "TXT"]).status,
        "NXDOMAIN"
    );
}
