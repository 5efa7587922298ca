//! Keeps `docs/ARCHITECTURE.md` honest: its codemap names every source file, and each
//! folder of `src/` keeps to its role (ARCHITECTURE.md, "Invariants").
//!
//! The roles, and what each may use (crates from `Cargo.toml`, `std` modules, the
//! crate's other folders):
//!
//! - **pure** (`model/`, `proto/`, `policy/`, `config/`): values, codecs and rules. No
//!   sockets, files, threads, processes, environment, clock, randomness, tokio or
//!   logging; only the value crates in [`PURE_CRATES`]; only other pure folders.
//! - **state** (`state/`): shared in-memory state. Locks, atomics and `tokio::sync`; no
//!   I/O, no clock, no logging; pure folders and itself.
//! - **store** (`store/`): the only folder that knows SQL (rusqlite, and the postgres
//!   driver with its TLS in `store/postgresql/` alone); no sockets of its own, no async
//!   runtime; pure folders and `state`.
//! - **writer** (`writer/`): the one writer thread; no SQL of its own, no sockets; pure
//!   folders, `state` and `store`.
//! - **edge** (`edge/`): the I/O edges. Everything but SQL; axum, hyper and rustls only in
//!   `edge/http/`, hickory only there in `edge/dns/` (and in `proto/zone.rs`).
//! - **wiring** (`cli/`, `server.rs`, `error.rs`, `lib.rs`, `main.rs`, `bin/`): may use
//!   every folder, and alone knows `crate::error` (errors flow one way: each module has
//!   its own error type, wrapped by `Error`).
//!
//! Tests (`#[cfg(test)] mod tests` and `tests.rs` files) are not checked: a test may open
//! a socket or a file to prove a pure function right.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Crates a pure folder may use: values, encodings and cryptography, nothing that does
/// I/O. (`hickory_proto` is allowed in `proto/zone.rs` alone, by [`OWNED_CRATES`].)
const PURE_CRATES: &[&str] = &[
    "base64",
    "chacha20poly1305",
    "chrono",
    "compact_str",
    "form_urlencoded",
    "hickory_proto",
    "hkdf",
    "hmac",
    "humantime",
    "ipnet",
    "md5",
    "serde",
    "serde_json",
    "sha1",
    "sha2",
    "thiserror",
    "url",
];

/// Crates only some places may use: the crate, and the path prefixes that may use it.
const OWNED_CRATES: &[(&str, &[&str])] = &[
    ("rusqlite", &["src/store/"]),
    ("tokio_postgres", &["src/store/postgresql/"]),
    ("tokio_postgres_rustls", &["src/store/postgresql/"]),
    ("webpki_roots", &["src/store/postgresql/"]),
    ("axum", &["src/edge/http/"]),
    ("hyper", &["src/edge/http/"]),
    ("hyper_util", &["src/edge/http/"]),
    ("tokio_rustls", &["src/edge/http/", "src/store/postgresql/"]),
    (
        "rustls_pki_types",
        &["src/edge/http/", "src/store/postgresql/"],
    ),
    ("tower", &["src/edge/http/"]),
    ("tower_http", &["src/edge/http/"]),
    (
        "hickory_proto",
        &["src/proto/zone.rs", "src/proto/update.rs", "src/edge/dns/"],
    ),
    ("sd_notify", &["src/edge/systemd.rs"]),
    ("ureq", &["src/edge/notify/"]),
    ("lettre", &["src/edge/notify/"]),
    ("clap", &["src/cli/"]),
    ("clap_complete", &["src/cli/"]),
    ("clap_mangen", &["src/cli/"]),
    ("tracing_subscriber", &["src/cli/"]),
    ("mimalloc", &["src/lib.rs"]),
];

/// What a pure folder's code must not contain: I/O, the clock, randomness, logging.
const NOT_PURE: &[(&str, &str)] = &[
    ("std::fs", "files"),
    ("std::io", "I/O"),
    ("std::thread", "threads"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("std::os", "the operating system"),
    ("UdpSocket", "sockets"),
    ("TcpListener", "sockets"),
    ("TcpStream", "sockets"),
    ("::now(", "the clock (the caller passes `now` in)"),
    ("OsRng", "the OS's random generator"),
    ("println!", "printing"),
    ("print!", "printing"),
    ("dbg!", "printing"),
    ("tokio", "the async runtime"),
    ("tracing", "logging"),
];

/// What the shared state must not contain: it is memory, shared; no I/O, no clock.
const NOT_STATE: &[(&str, &str)] = &[
    ("std::fs", "files"),
    ("std::thread", "threads"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    ("UdpSocket", "sockets"),
    ("TcpListener", "sockets"),
    ("TcpStream", "sockets"),
    ("::now(", "the clock (the caller passes `now` in)"),
    ("tokio::net", "sockets"),
    ("tokio::time", "the clock"),
    ("tokio::task", "tasks"),
    ("tokio::spawn", "tasks"),
    ("tracing", "logging"),
    ("println!", "printing"),
];

/// Where a named exception to a rule is: the file, what it contains, and why.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "src/model/record.rs",
        "::now(",
        "`Time::now` is the one clock read, for the edges to call",
    ),
    (
        "src/model/key.rs",
        "OsRng",
        "`Key::generate` and `random_nonce` are the one read of the OS's random generator",
    ),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Pure,
    State,
    Store,
    Writer,
    Edge,
    Wiring,
}

impl Role {
    fn of(file: &str) -> Role {
        let folder = |name: &str| file.starts_with(&format!("src/{name}/"));
        if ["model", "proto", "policy", "config"]
            .into_iter()
            .any(folder)
        {
            Role::Pure
        } else if folder("state") {
            Role::State
        } else if folder("store") {
            Role::Store
        } else if folder("writer") {
            Role::Writer
        } else if folder("edge") {
            Role::Edge
        } else {
            Role::Wiring
        }
    }

    /// The crate's folders (as `crate::NAME`) this role may use.
    fn may_import(self) -> &'static [&'static str] {
        const PURE: &[&str] = &["model", "proto", "policy", "config"];
        match self {
            Role::Pure => PURE,
            Role::State => &["model", "proto", "policy", "config", "state"],
            Role::Store => &["model", "proto", "policy", "config", "state", "store"],
            Role::Writer => &[
                "model", "proto", "policy", "config", "state", "store", "writer",
            ],
            Role::Edge => &[
                "model", "proto", "policy", "config", "state", "store", "writer", "edge",
            ],
            Role::Wiring => &[
                "model", "proto", "policy", "config", "state", "store", "writer", "edge", "cli",
                "server", "error", "Error",
            ],
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Role::Pure => {
                "pure (values, codecs, rules): no I/O, clock, randomness, tokio or logging"
            }
            Role::State => "shared state: memory only, no I/O, clock or logging",
            Role::Store => "the store: SQL, nothing of the network",
            Role::Writer => "the writer: commits through the store, knows no SQL or socket",
            Role::Edge => "an I/O edge: knows no SQL and nothing of the commands",
            Role::Wiring => "wiring",
        }
    }
}

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// Every `src/**/*.rs` as (`src/...` with forward slashes, its text).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), &mut files);
    assert!(!files.is_empty());
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root).expect("under the manifest dir");
            let name = relative.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            (name, text)
        })
        .collect()
}

/// The code a rule applies to: without comments, and without the test module.
fn code(file: &str, text: &str) -> String {
    if file.ends_with("/tests.rs") {
        return String::new();
    }
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(idx) => &text[..idx],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string ("http://") is rare in these folders; a false
            // positive there shows up as a violation to look at, never as a pass.
            Some(idx) => &line[..idx],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` (trimmed) without a leading `pub`, `pub(crate)` or `pub(super)`.
fn without_visibility(line: &str) -> &str {
    ["pub(crate) ", "pub(super) ", "pub "]
        .iter()
        .find_map(|prefix| line.strip_prefix(prefix))
        .unwrap_or(line)
}

/// The roots of every path in `code` (`tokio` in `tokio::sync::Notify`), `crate::X`
/// as `crate::X`.
fn path_roots(code: &str) -> BTreeSet<String> {
    let bytes = code.as_bytes();
    let mut roots = BTreeSet::new();
    let mut idx = 0;
    while let Some(found) = code[idx..].find("::") {
        let end = idx + found;
        let mut start = end;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        let preceded_by_path = start >= 2 && &code[start - 2..start] == "::";
        let preceded_by_word = start >= 1 && bytes[start - 1] == b'$';
        if start < end && !preceded_by_path && !preceded_by_word {
            let root = &code[start..end];
            if root == "crate" {
                let rest = &code[end + 2..];
                let item: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if item.is_empty() {
                    // `crate::{a, b}`: every item of the group.
                    if let Some(group) = rest.strip_prefix('{') {
                        let group = &group[..group.find('}').unwrap_or(group.len())];
                        for part in group.split(',') {
                            let part = part.trim();
                            let item = part.split("::").next().unwrap_or("").trim();
                            if !item.is_empty() {
                                roots.insert(format!("crate::{item}"));
                            }
                        }
                    }
                } else {
                    roots.insert(format!("crate::{item}"));
                }
            } else {
                roots.insert(root.to_string());
            }
        }
        idx = end + 2;
    }
    // A crate used whole, or renamed (`use rusqlite as sql;`): its later paths start
    // with the new name, so the `use` itself is the root.
    for line in code.lines() {
        let line = without_visibility(line.trim_start());
        let Some(rest) = line
            .strip_prefix("use ")
            .or_else(|| line.strip_prefix("extern crate "))
        else {
            continue;
        };
        let rest = rest.trim_start_matches("::");
        let root: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !root.is_empty() && !["crate", "self", "super"].contains(&root.as_str()) {
            roots.insert(root);
        }
    }
    roots
}

fn dependencies() -> BTreeSet<String> {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml is readable");
    let section = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .expect("Cargo.toml has [dependencies]");
    let section = &section[..section.find("\n[").unwrap_or(section.len())];
    section
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.trim().replace('-', "_"))
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect()
}

fn is_excepted(file: &str, needle: &str) -> bool {
    EXCEPTIONS
        .iter()
        .any(|(path, what, _)| *path == file && *what == needle)
}

/// Every broken rule in `sources`, one line each, naming the file and the rule.
fn violations(sources: &[(String, String)], dependencies: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for (file, text) in sources {
        let role = Role::of(file);
        let code = code(file, text);
        let roots = path_roots(&code);
        let mut broken = |what: String| {
            found.push(format!("{file}: {what} — {file} is {}", role.rule()));
        };
        for root in &roots {
            if let Some(item) = root.strip_prefix("crate::") {
                let folder_like = [
                    "model", "proto", "policy", "config", "state", "store", "writer", "edge",
                    "cli", "server", "error", "Error",
                ];
                if folder_like.contains(&item) && !role.may_import().contains(&item) {
                    broken(format!(
                        "uses `crate::{item}`, but may use only crate::{{{}}}",
                        role.may_import().join(", ")
                    ));
                }
                continue;
            }
            if !dependencies.contains(root) {
                continue;
            }
            if let Some((_, owners)) = OWNED_CRATES.iter().find(|(name, _)| name == root) {
                if !owners.iter().any(|owner| file.starts_with(owner)) {
                    broken(format!("uses `{root}`, which only {owners:?} may use"));
                    continue;
                }
            }
            if role == Role::Pure && !PURE_CRATES.contains(&root.as_str()) {
                broken(format!(
                    "uses the crate `{root}`, not one of the pure crates"
                ));
            }
        }
        let forbidden: &[(&str, &str)] = match role {
            Role::Pure => NOT_PURE,
            Role::State => NOT_STATE,
            _ => &[],
        };
        for (needle, what) in forbidden {
            if code.contains(needle) && !is_excepted(file, needle) {
                broken(format!("contains `{needle}` ({what})"));
            }
        }
        if matches!(role, Role::Store | Role::Writer | Role::State) {
            for needle in ["UdpSocket", "TcpListener", "TcpStream", "tokio::net"] {
                if role != Role::State && code.contains(needle) {
                    broken(format!("contains `{needle}` (sockets)"));
                }
            }
        }
    }
    found
}

#[test]
fn codemap_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    let missing: Vec<String> = sources()
        .into_iter()
        .map(|(file, _)| file)
        .filter(|file| !architecture.contains(&format!("`{file}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md codemap misses {missing:?}"
    );
}

#[test]
fn every_folder_keeps_to_its_role() {
    let violations = violations(&sources(), &dependencies());
    assert!(
        violations.is_empty(),
        "the folder rules (tests/architecture.rs) are broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_exception_is_still_needed() {
    let sources = sources();
    for (file, needle, why) in EXCEPTIONS {
        let (_, text) = sources
            .iter()
            .find(|(name, _)| name == file)
            .unwrap_or_else(|| panic!("exception for {file}, which does not exist"));
        assert!(
            code(file, text).contains(needle),
            "{file} no longer contains `{needle}`; drop its exception ({why})"
        );
    }
}

/// The types each file declares: structs, enums and traits anywhere, type aliases at the
/// top level (an indented `type X =` is a trait's associated type, named by the trait).
fn declared_types(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let rest = without_visibility(trimmed);
        let indented = trimmed.len() != line.len();
        let name = ["struct ", "enum ", "trait "]
            .iter()
            .find_map(|keyword| rest.strip_prefix(keyword))
            .or_else(|| rest.strip_prefix("type ").filter(|_| !indented));
        if let Some(name) = name {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                names.push(name);
            }
        }
    }
    names
}

/// Two types of one name in two modules make `grep` and imports ambiguous.
#[test]
fn no_two_types_share_a_name() {
    let mut declared: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (file, text) in sources() {
        for name in declared_types(&text) {
            declared.entry(name).or_default().push(file.clone());
        }
    }
    let shared: Vec<String> = declared
        .iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(name, files)| format!("{name}: {}", files.join(", ")))
        .collect();
    assert!(
        shared.is_empty(),
        "types that share a name (rename one):\n{}",
        shared.join("\n")
    );
}

/// The rules catch what they are for: each planted line breaks the rule it names.
#[test]
fn the_rules_catch_what_they_are_for() {
    let dependencies = dependencies();
    let check = |file: &str, line: &str, expect: &str| {
        let sources = vec![(file.to_string(), format!("{line}\n"))];
        let found = violations(&sources, &dependencies);
        assert!(
            found.iter().any(|violation| violation.contains(expect)),
            "{file} with {line:?}: expected a violation containing {expect:?}, got {found:?}"
        );
    };
    check(
        "src/proto/wire.rs",
        "use tokio::net::UdpSocket;",
        "uses the crate `tokio`",
    );
    check(
        "src/proto/wire.rs",
        "let t = std::time::Instant::now();",
        "the clock",
    );
    check("src/model/name.rs", "use tracing::warn;", "logging");
    check(
        "src/config/keys.rs",
        "let text = std::fs::read_to_string(p);",
        "files",
    );
    check(
        "src/policy/mod.rs",
        "use crate::state::table::Table;",
        "uses `crate::state`",
    );
    check("src/state/table.rs", "use tokio::time::sleep;", "the clock");
    check(
        "src/edge/udp.rs",
        "use rusqlite::Connection;",
        "uses `rusqlite`",
    );
    check("src/writer/mod.rs", "use axum::Router;", "uses `axum`");
    check("src/edge/udp.rs", "use rusqlite as sql;", "uses `rusqlite`");
    check(
        "src/proto/zone.rs",
        "extern crate tokio_postgres;",
        "uses `tokio_postgres`",
    );
    check("src/edge/dns/mod.rs", "use axum::Router;", "uses `axum`");
    check(
        "src/edge/http/mod.rs",
        "use hickory_proto::op::Message;",
        "uses `hickory_proto`",
    );
    check(
        "src/store/mod.rs",
        "use crate::edge::udp;",
        "uses `crate::edge`",
    );
    check(
        "src/edge/udp.rs",
        "use crate::error::Error;",
        "uses `crate::error`",
    );
    check(
        "src/edge/udp.rs",
        "use crate::{error::Error, writer};",
        "uses `crate::error`",
    );
    check(
        "src/writer/mod.rs",
        "let s = tokio::net::UdpSocket::bind(a);",
        "sockets",
    );
}
