//! The Windows client: `dynip.exe` (built for `x86_64-pc-windows-gnu`) run under Wine
//! writes a config, mints a host key, and reports to the real Linux server.
//!
//! Runs only when `DYNIP_WINDOWS_EXE` names the exe (`bash .ci/run` builds it and sets
//! it); otherwise it says it is skipped and passes, so that `cargo test` needs neither
//! the Windows target nor Wine. `DYNIP_WINE` may name Wine's loader (default
//! `/usr/lib/wine/wine64`, Debian's, else `wine64` on `PATH`).
//!
//! Wine 8 (Debian 12's) lacks `bcryptprimitives.dll`, which Rust's standard library
//! imports: the test builds the one-function shim in `tests/windows/bcryptprimitives.c`
//! with mingw-w64 and puts it beside the exe. That patches Wine, not dynip: Windows 10
//! and later have the DLL, and the shim is never shipped.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dynip::model::key::Key;

use crate::harness::*;

/// The variable that names the exe; unset, the test is skipped.
const EXE_VAR: &str = "DYNIP_WINDOWS_EXE";
/// The variable that may name Wine's loader.
const WINE_VAR: &str = "DYNIP_WINE";
/// Where Debian's `wine64` package puts the 64-bit loader (not on `PATH`).
const DEBIAN_WINE64: &str = "/usr/lib/wine/wine64";
/// The mingw-w64 compiler that builds the shim.
const MINGW_CC: &str = "x86_64-w64-mingw32-gcc";
/// The first `wineboot` creates the prefix: 6 s on an idle 2-core machine, and much
/// more on a loaded one; generous, yet a hung Wine still fails the test.
const WINEBOOT_LIMIT: Duration = Duration::from_secs(180);
/// One run of `dynip.exe`: well under a second once the prefix exists, the client's
/// retries included (about 8 s when nothing answers).
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The host the Windows machine reports as.
const HOST: &str = "windows-pc";

/// Wine with a prefix of its own in the test's dir, for console programs (no X). Ends
/// the prefix's wineserver on drop, so that no process outlives the test.
struct Wine {
    loader: PathBuf,
    dir: PathBuf,
}

impl Wine {
    /// Creates the prefix (`wineboot --init`).
    ///
    /// Its output goes to a file, not a pipe: the Wine services it starts inherit the
    /// pipe and keep it open for seconds after it exits.
    fn boot(loader: PathBuf, dir: &Dir) -> Wine {
        std::fs::create_dir_all(dir.join("home")).expect("create Wine's HOME");
        let wine = Wine {
            loader,
            dir: dir.path().to_path_buf(),
        };
        let log = std::fs::File::create(dir.join("wineboot.log")).expect("create wineboot.log");
        let mut child = wine
            .command("wineboot")
            .arg("--init")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second handle on wineboot.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", wine.loader.display()));
        let status = wait_for_exit_within(&mut child, WINEBOOT_LIMIT);
        assert!(
            status.is_some_and(|status| status.success()),
            "wineboot --init: {status:?} (None: killed after {WINEBOOT_LIMIT:?}):\n{}",
            dir.read_string("wineboot.log")
        );
        wine
    }

    /// `wine PROGRAM` in the test's dir, in the scrubbed environment plus Wine's own.
    fn command(&self, program: &str) -> Command {
        let loader = self.loader.to_str().expect("a UTF-8 path to Wine");
        let mut command = command(loader, &self.dir);
        command
            .arg(program)
            .env("WINEPREFIX", self.dir.join("wineprefix"))
            .env("HOME", self.dir.join("home"))
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko install prompts, no desktop menu entries.
            .env("WINEDLLOVERRIDES", "mscoree,mshtml,winemenubuilder.exe=");
        command
    }

    /// `wine dynip.exe ARGS` to completion.
    fn dynip(&self, args: &[&str]) -> Output {
        run_command_within(self.command("dynip.exe").args(args), RUN_LIMIT)
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        // `wineserver` beside the loader: the same installation's.
        let server = self.loader.with_file_name("wineserver");
        let _ = Command::new(server)
            .arg("-k")
            .env("WINEPREFIX", self.dir.join("wineprefix"))
            .status();
    }
}

/// Wine's loader: `DYNIP_WINE`, Debian's `wine64`, or `wine64` on `PATH`.
fn wine_loader() -> PathBuf {
    if let Some(path) = std::env::var_os(WINE_VAR) {
        return PathBuf::from(path);
    }
    if Path::new(DEBIAN_WINE64).exists() {
        return PathBuf::from(DEBIAN_WINE64);
    }
    PathBuf::from("wine64")
}

/// Builds the `bcryptprimitives.dll` shim into `dir` (a fraction of a second: it is one
/// function, so building beats keeping a binary in the repository).
fn build_shim(dir: &Dir) {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/windows/bcryptprimitives.c"
    );
    let out = run(
        MINGW_CC,
        &[
            "-shared",
            "-O2",
            "-s",
            "-o",
            "bcryptprimitives.dll",
            source,
            "-ladvapi32",
        ],
        dir.path(),
    );
    assert_eq!(out.code, 0, "{MINGW_CC} bcryptprimitives.c: {out:?}");
}

/// `path` as Windows sees it under Wine: on drive `Z:`, which maps `/`.
fn windows_path(path: &Path) -> String {
    let path = path.to_str().expect("a UTF-8 temp dir");
    format!("Z:{}", path.replace('/', "\\"))
}

/// On a Windows machine (here Wine), `dynip.exe init` writes a keyed config,
/// `add-host` mints a key for the machine, and `client` reports to the real Linux
/// server with it: exit 0, the address the server saw printed, the host listed. The
/// server's commands do not exist in `dynip.exe`.
#[test]
fn the_windows_client_under_wine_reports_to_the_real_server() {
    let Some(exe) = std::env::var_os(EXE_VAR) else {
        assert!(
            std::env::var_os("DYNIP_REAL_PEERS").is_none_or(|value| value != "1"),
            "{EXE_VAR} is unset; DYNIP_REAL_PEERS=1 wants the Windows client tested"
        );
        // Straight to stderr, past the test harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "windows: skipped: {EXE_VAR} is unset (bash .ci/run builds dynip.exe with \
             --no-default-features for x86_64-pc-windows-gnu and sets it)"
        );
        return;
    };
    let dir = Dir::new();
    std::fs::copy(&exe, dir.join("dynip.exe"))
        .unwrap_or_else(|e| panic!("copy {EXE_VAR}={}: {e}", Path::new(&exe).display()));
    build_shim(&dir);
    let wine = Wine::boot(wine_loader(), &dir);

    // `init` on Windows: a config with a fresh key in both sections, never overwritten.
    let windows_conf = windows_path(&dir.join("windows.conf"));
    let init = wine.dynip(&["init", &windows_conf]);
    assert_eq!(init.code, 0, "dynip.exe init: {init:?}");
    let written = dir.read_string("windows.conf");
    for section in ["[DynIP:Server]", "[DynIP:Client]"] {
        assert!(written.contains(section), "{section} in:\n{written}");
    }
    let keys: BTreeSet<&str> = written
        .lines()
        .filter_map(|line| line.strip_prefix("key = "))
        .collect();
    assert_eq!(keys.len(), 1, "one key in both sections:\n{written}");
    let shared = *keys.first().expect("one key");
    Key::parse(shared).unwrap_or_else(|e| panic!("init's key {shared:?}: {e}"));
    let again = wine.dynip(&["init", &windows_conf]);
    assert_eq!(again.code, 8, "dynip.exe init over a file: {again:?}");
    assert_eq!(dir.read_string("windows.conf"), written);

    // `add-host` on Windows (a relative path this time): the lines for both configs.
    let minted = wine.dynip(&["add-host", "windows.conf", HOST]);
    assert_eq!(minted.code, 0, "dynip.exe add-host: {minted:?}");
    let blocks: Vec<&str> = minted.stdout.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "two blocks: {minted:?}");
    let host_key = settings(blocks[0]);
    assert_eq!(host_key.len(), 1, "{minted:?}");
    assert_eq!(host_key[0].0, HOST, "{minted:?}");

    // The real server on Linux, with init's key and the minted one.
    dir.server_config(
        "127.0.0.1",
        &format!("key = {shared}\n[DynIP:Hosts]\n{}\n", blocks[0]),
    );
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    dir.write(
        "client.conf",
        format!(
            "[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n{}\n",
            blocks[1]
        ),
    );
    let client = wine.dynip(&["client", &windows_path(&dir.join("client.conf"))]);
    assert_eq!(client.code, 0, "dynip.exe client: {client:?}");
    let seen: SocketAddr = client
        .stdout
        .strip_suffix('\n')
        .and_then(|line| line.parse().ok())
        .unwrap_or_else(|| panic!("not one ADDRESS:PORT line: {client:?}"));
    assert_eq!(seen.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "{client:?}");
    assert_ne!(seen.port(), 0, "{client:?}");
    let hosts = dir.list();
    assert_eq!(
        hosts.keys().collect::<Vec<_>>(),
        [HOST],
        "dynip list: {hosts:?}"
    );
    assert_eq!(hosts[HOST]["ipv4"]["address"], "127.0.0.1", "{hosts:?}");

    // The server's commands are not in the Windows build: clap refuses them.
    let refused = wine.dynip(&["server", "dynip.conf"]);
    assert_eq!(refused.code, 2, "dynip.exe server: {refused:?}");
    assert!(
        refused.stderr.contains("unrecognized subcommand 'server'"),
        "{refused:?}"
    );
    assert_eq!(server.terminate(), 0);
}
