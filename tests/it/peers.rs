//! The real outside programs the tests and the benches' smoke runs use (dig, NSD,
//! ddclient, Chromium...): found on `PATH`, or the test skipped with a printed reason,
//! unless `DYNIP_REAL_PEERS=1` (set by `.ci/run`) makes a missing one a failure. Shared
//! by `tests/it` and `benches/common` (included there by path), so that one rule decides.

use std::path::PathBuf;

/// The Debian package each outside program the tests run comes from (`.ci/run`
/// installs them), for the message of a test skipped without it.
const PEER_PACKAGES: &[(&str, &str)] = &[
    ("dig", "bind9-dnsutils"),
    ("kdig", "knot-dnsutils"),
    ("nsupdate", "bind9-dnsutils"),
    ("knsupdate", "knot-dnsutils"),
    ("nsd", "nsd"),
    ("knotd", "knot"),
    ("ddclient", "ddclient"),
    ("inadyn", "inadyn"),
    ("curl", "curl"),
    ("chromium", "chromium"),
    ("promtool", "prometheus"),
    ("dnsperf", "dnsperf"),
    ("wrk", "wrk"),
    ("aiosmtpd", "python3-aiosmtpd"),
    ("pebble", "pebble"),
    ("lego", "lego"),
    ("certbot", "certbot"),
    ("openssl", "openssl"),
];

/// Where `program` is on `PATH`, if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Whether the real outside programs `test` needs are on `PATH`. When one is missing,
/// the test is skipped: this says so on stderr (past the test harness's capture, so the
/// skip shows) and returns false, and `cargo test` passes on a machine without Debian's
/// peers. With `DYNIP_REAL_PEERS=1`, which `.ci/run` sets, a missing program fails the
/// test instead: CI never skips a peer.
///
/// # Panics
/// When a program is missing and `DYNIP_REAL_PEERS=1`.
pub fn peers_present(test: &str, programs: &[&str]) -> bool {
    use std::io::Write;
    let missing: Vec<String> = programs
        .iter()
        .filter(|program| which(program).is_none())
        .map(|program| {
            let package = PEER_PACKAGES
                .iter()
                .find(|(name, _)| name == program)
                .map_or(*program, |(_, package)| package);
            format!("{program} (Debian package {package})")
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var_os("DYNIP_REAL_PEERS").is_none_or(|value| value != "1"),
        "{test}: not on PATH: {missing}; DYNIP_REAL_PEERS=1 wants every peer"
    );
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped: not on PATH: {missing} (bash .ci/run installs them)"
    );
    false
}
