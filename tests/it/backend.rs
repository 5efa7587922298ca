//! The backend battery: the same scenarios on the SQLite store and on a PostgreSQL
//! database (`database_url`, a throwaway cluster per test), through the real server and
//! commands; and `dynip copy-store` from one to the other and back.

use dynip::model::key::Key;

use crate::acme_dns::{acme_update, register, txt_values, TOKEN_A, TOKEN_B};
use crate::dns::{ask, ZONE};
use crate::harness::http::update;
use crate::harness::*;

/// Where a battery scenario's server keeps its state.
enum Backend {
    Sqlite,
    Postgres(Postgres),
}

impl Backend {
    /// The config lines that choose the backend.
    fn lines(&self) -> String {
        match self {
            Backend::Sqlite => String::new(),
            Backend::Postgres(pg) => format!("database_url = {}\n", pg.url("dynip")),
        }
    }
}

/// Runs each scenario twice, as `backend::sqlite::NAME` and `backend::postgres::NAME`.
macro_rules! battery {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(super::Backend::Sqlite);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $scenario() {
                    let test = concat!("backend::postgres::", stringify!($scenario));
                    if !crate::harness::postgres_present(test) {
                        return;
                    }
                    let pg = crate::harness::Postgres::start();
                    pg.create_database("dynip");
                    super::$scenario(super::Backend::Postgres(pg));
                }
            )*
        }
    };
}

battery!(
    restarts_keep_hosts_history_txt_and_accounts,
    replays_are_refused_across_a_restart,
    the_original_file_is_imported_once,
);

/// The A records of `host` in the zone.
fn a(dir: &Dir, dns: std::net::SocketAddr, host: &str) -> Vec<String> {
    ask(dir, "dig", dns, &[&format!("{host}.{ZONE}"), "A", "+short"])
        .text
        .lines()
        .map(String::from)
        .collect()
}

/// Reports, a move, TXT records from dyndns2 and an acme-dns account, a restart: all of
/// it is there after, for DNS, the API and `dynip list`/`history`.
fn restarts_keep_hosts_history_txt_and_accounts(backend: Backend) {
    if !peers_present(
        "backend::restarts_keep_hosts_history_txt_and_accounts",
        &["dig"],
    ) {
        return;
    }
    let (shared, host) = (test_key(51), test_key(52));
    let dir = Dir::new();
    let (server, dns, http) = crate::update::start(&dir, &shared, &host, &backend.lines());
    Peer::bind("127.0.0.1:0", server.target()).report(&host, "kitchen-pc");
    Peer::bind("127.0.0.2:0", server.target()).report(&host, "kitchen-pc");
    Peer::bind("127.0.0.1:0", server.target()).report(&shared, "nas");
    let (status, body) = update(http, &host, &format!("hostname=kitchen-pc&txt={TOKEN_A}"));
    assert_eq!((status, body.trim()), (200, "good"), "dyndns2 txt=");
    let account = register(http, Some(&shared), "");
    let subdomain = account["subdomain"]
        .as_str()
        .expect("a subdomain")
        .to_string();
    let set = acme_update(
        http,
        &account,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_B}"}}"#),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let before = dir.list();
    let history = dir.history("kitchen-pc");
    assert_eq!(history.len(), 2, "{history:?}");
    drop(server);

    let (server, dns_again, http) = crate::update::start(&dir, &shared, &host, &backend.lines());
    assert_eq!(dir.list(), before);
    assert_eq!(dir.history("kitchen-pc"), history);
    assert_eq!(a(&dir, dns_again, "kitchen-pc"), ["127.0.0.2"]);
    let challenge = format!("_acme-challenge.kitchen-pc.{ZONE}");
    assert_eq!(txt_values(&dir, dns_again, &challenge), [TOKEN_A]);
    assert_eq!(
        txt_values(&dir, dns_again, &format!("{subdomain}.{ZONE}")),
        [TOKEN_B]
    );
    // The account is kept: it may still update.
    let again = acme_update(
        http,
        &account,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_A}"}}"#),
    );
    assert_eq!(again.status, 200, "{again:?}");
    let _ = (server, dns);
}

/// A signed report replayed to the server after a restart is not acknowledged and
/// changes nothing.
fn replays_are_refused_across_a_restart(backend: Backend) {
    let key = test_key(53);
    let dir = Dir::new();
    let config = format!("key = {}\n{}", key.encode(), backend.lines());
    dir.server_config("127.0.0.1", &config);
    let server = ServerProcess::start(&dir);
    let (report, _) = Peer::bind("127.0.0.1:0", server.target()).report(&key, "laptop");
    drop(server);
    let server = ServerProcess::start(&dir);
    let replayer = Peer::bind("127.0.0.2:0", server.target());
    replayer.assert_unanswered(&report, &key, "sentinel", "a replay after a restart");
    assert_silent(&[("the replayer", &replayer)]);
    let hosts = dir.list();
    assert_eq!(hosts["laptop"]["ipv4"]["address"], "127.0.0.1", "{hosts:?}");
}

/// The original's JSON file is imported into an empty store at the first start, and
/// not again.
fn the_original_file_is_imported_once(backend: Backend) {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", &backend.lines());
    dir.write(JSON_FILE, crate::files::ORIGINAL);
    let server = ServerProcess::start(&dir);
    let hosts = dir.list();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert_eq!(hosts["nas"]["ipv4"]["address"], "198.51.100.2");
    assert_eq!(dir.history("kitchen-pc").len(), 1);
    drop(server);
    // The export wrote the file anew; an import again would add a history row.
    let server = ServerProcess::start(&dir);
    assert_eq!(dir.list(), hosts);
    assert_eq!(dir.history("kitchen-pc").len(), 1);
    drop(server);
}

/// A config for a server of key `key` on `store` (`database_url` or `store_path`).
fn config_on(dir: &Dir, key: &Key, store: &str) {
    let line = if store.starts_with("postgres://") {
        format!("database_url = {store}\n")
    } else {
        format!("store_path = {store}\n")
    };
    dir.server_config(
        "127.0.0.1",
        &format!(
            "key = {}\n{line}http_listen = 127.0.0.1:0\ndns_listen = 127.0.0.1:0\ndns_zone = {ZONE}\n",
            key.encode()
        ),
    );
}

/// `copy-store`: an SQLite store into PostgreSQL and back, everything kept; never into a
/// store that holds something (exit 8, nothing written).
#[test]
fn copy_store_moves_sqlite_to_postgres_and_back() {
    let test = "backend::copy_store_moves_sqlite_to_postgres_and_back";
    if !postgres_present(test) || !peers_present(test, &["dig"]) {
        return;
    }
    let pg = Postgres::start();
    pg.create_database("dynip");
    pg.create_database("busy");
    let key = test_key(54);
    let dir = Dir::new();
    config_on(&dir, &key, STORE_FILE);
    let server = ServerProcess::start(&dir);
    Peer::bind("127.0.0.1:0", server.target()).report(&key, "alpha");
    Peer::bind("127.0.0.2:0", server.target()).report(&key, "alpha");
    Peer::bind("127.0.0.1:0", server.target()).report(&key, "beta");
    let http = server.listening("http");
    let (status, body) = update(http, &key, &format!("hostname=alpha&txt={TOKEN_A}"));
    assert_eq!((status, body.trim()), (200, "good"), "{body}");
    let account = register(http, Some(&key), "");
    drop(server);
    let hosts = dir.list();
    let history = dir.history("alpha");
    assert_eq!(history.len(), 2);

    let url = pg.url("dynip");
    let out = dir.dynip(&["copy-store", STORE_FILE, &url]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("copied 2 hosts, 3 address changes, 1 TXT names and 1 acme-dns accounts"),
        "{}",
        out.stdout
    );
    let on_pg = Dir::new();
    config_on(&on_pg, &key, &url);
    assert_eq!(on_pg.list(), hosts);
    assert_eq!(on_pg.history("alpha"), history);

    // Never over a store with data: not again into the database, not into a busy one.
    let out = dir.dynip(&["copy-store", STORE_FILE, &url]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert!(out.stderr.contains("already holds"), "{}", out.stderr);
    assert_eq!(on_pg.history("alpha"), history, "nothing written twice");
    let busy = pg.url("busy");
    let busy_dir = Dir::new();
    config_on(&busy_dir, &key, &busy);
    let server = ServerProcess::start(&busy_dir);
    Peer::bind("127.0.0.1:0", server.target()).report(&key, "gamma");
    drop(server);
    let out = dir.dynip(&["copy-store", STORE_FILE, &busy]);
    assert_eq!(out.code, 8, "{}", out.stderr);
    assert_eq!(busy_dir.hosts().len(), 1);

    // And back, into a new SQLite file, which a server then runs on.
    let back = Dir::new();
    let path = back.join("moved.sqlite3");
    let out = dir.dynip(&["copy-store", &url, path.to_str().expect("a UTF-8 path")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    config_on(&back, &key, "moved.sqlite3");
    assert_eq!(back.list(), hosts);
    assert_eq!(back.history("alpha"), history);
    let server = ServerProcess::start(&back);
    let (dns, http) = (server.listening("dns"), server.listening("http"));
    let challenge = format!("_acme-challenge.alpha.{ZONE}");
    assert_eq!(txt_values(&back, dns, &challenge), [TOKEN_A]);
    let subdomain = account["subdomain"].as_str().expect("a subdomain");
    let set = acme_update(
        http,
        &account,
        &format!(r#"{{"subdomain": "{subdomain}", "txt": "{TOKEN_B}"}}"#),
    );
    assert_eq!(set.status, 200, "the account came along: {set:?}");
    Peer::bind("127.0.0.3:0", server.target()).report(&key, "alpha");
    drop(server);
    assert_eq!(back.history("alpha").len(), 3);
    // Into itself: refused.
    let out = back.dynip(&["copy-store", "moved.sqlite3", "moved.sqlite3"]);
    assert_eq!(out.code, 8, "{}", out.stderr);
}
