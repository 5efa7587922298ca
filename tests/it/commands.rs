//! The other commands and the flags: `init`, the server's exit codes, `demo`, `-h`.

use std::net::UdpSocket;

use crate::harness::*;

/// `dynip init` writes a config the server runs on (once the port and address are set);
/// it never overwrites; `dynip-init PATH` does the same.
#[test]
fn init_writes_a_config_the_server_accepts_and_never_overwrites() {
    let dir = Dir::new();
    let out = dir.dynip(&["init", "init.conf"]);
    assert_eq!(out.code, 0, "{out:?}");
    let template = dir.read_string("init.conf");
    assert!(template.contains("[DynIP:Server]") && template.contains("[DynIP:Client]"));
    // It holds a key: readable by its owner only.
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(name);
        std::fs::metadata(path).expect("file").permissions().mode() & 0o777
    };
    assert_eq!(mode("init.conf"), 0o600);

    // Every key is commented out: set the two the test needs at the top of the section.
    let config = template.replacen(
        "[DynIP:Server]\n",
        "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = 0\n",
        1,
    );
    assert_ne!(config, template, "no [DynIP:Server] line to add keys to");
    dir.write(CONFIG, &config);
    // A copy every user can read is warned about; readable by its group (the packages'
    // root:dynip 640) or kept private, the template warns of nothing.
    let readable = dir.dynip(&["list", CONFIG]);
    assert!(
        readable.stderr.contains("every user can read it"),
        "{readable:?}"
    );
    let chmod = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::Permissions::from_mode(mode);
        std::fs::set_permissions(dir.path().join(CONFIG), permissions).expect("chmod");
    };
    chmod(0o640);
    let group_readable = dir.dynip(&["list", CONFIG]);
    assert!(
        !group_readable.stderr.contains("can read it"),
        "{group_readable:?}"
    );
    chmod(0o600);
    let mut server = ServerProcess::start(&dir);
    let warnings: Vec<String> = server.stderr_lines("WARN");
    assert!(warnings.is_empty(), "the template warns: {warnings:?}");
    // The client side of the same file (a copy, with the server's port) delivers to it.
    let port = server.addr().port();
    let client = template.replacen(
        "[DynIP:Client]\n",
        &format!(
            "[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n\
             hostname = init-host\n"
        ),
        1,
    );
    assert_ne!(client, template, "no [DynIP:Client] line to add keys to");
    dir.write("client.conf", &client);
    let out = dir.dynip(&["client", "client.conf"]);
    assert_eq!(out.code, 0, "{out:?}");
    server.wait_committed("init-host", 1);
    assert_eq!(server.terminate(), 0);
    assert!(
        dir.exists(JSON_FILE),
        "client_log_path defaults to dynip.json"
    );
    assert_eq!(dir.hosts(), ["init-host".to_string()].into());

    let again = dir.dynip(&["init", "init.conf"]);
    assert_eq!(again.code, 8, "{again:?}");
    assert!(again.stderr.contains("init.conf"), "{again:?}");
    assert_eq!(dir.read_string("init.conf"), template, "init overwrote");

    let out = run(DYNIP_INIT, &["legacy.conf"], dir.path());
    assert_eq!(out.code, 0, "{out:?}");
    let legacy = dir.read_string("legacy.conf");
    assert_eq!(without_keys(&legacy), without_keys(&template));
    if !keys(&template).is_empty() {
        assert_ne!(keys(&legacy), keys(&template), "two configs, one key");
    }
    dir.write("legacy.conf", "mine");
    let again = run(DYNIP_INIT, &["legacy.conf"], dir.path());
    assert_eq!(again.code, 8, "{again:?}");
    assert_eq!(
        dir.read_string("legacy.conf"),
        "mine",
        "dynip-init overwrote"
    );

    // Without a path: dynip.conf in the working directory.
    let other = Dir::new();
    let out = other.dynip(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    let default = other.read_string("dynip.conf");
    assert_eq!(without_keys(&default), without_keys(&template));
}

/// The values of `key = VALUE` lines (the key `dynip init` generates afresh each time).
fn keys(config: &str) -> Vec<&str> {
    config
        .lines()
        .filter_map(|line| line.strip_prefix("key = "))
        .collect()
}

/// The config with the values of its `key = VALUE` lines left out.
fn without_keys(config: &str) -> String {
    config
        .lines()
        .map(|line| {
            if line.starts_with("key = ") {
                "key = …"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An unknown key is a warning naming it, not an error.
#[test]
fn unknown_key_is_a_warning() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "frobnicate = 1\n");
    let mut server = ServerProcess::start(&dir);
    let warnings: Vec<String> = server.stderr_lines("WARN");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("frobnicate"), "{warnings:?}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn server_exit_codes() {
    let dir = Dir::new();

    // A port in use: 7, naming the address.
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind a port");
    let port = holder.local_addr().expect("local addr").port();
    dir.write(
        CONFIG,
        format!(
            "[DynIP:Server]\nserver_ip = 127.0.0.1\nserver_port = {port}\n\
             client_log_path = {JSON_FILE}\n"
        ),
    );
    for (program, args) in [(DYNIP, vec!["server", CONFIG]), (DYNIPD, vec![CONFIG])] {
        let out = run(program, &args, dir.path());
        assert_eq!(out.code, 7, "{program}: {out:?}");
        assert!(
            out.stderr.contains(&format!("127.0.0.1:{port}")),
            "{program}: names the address: {out:?}"
        );
    }
    drop(holder);

    // http_listen in use: 7 too, naming it.
    let http_holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let http_port = http_holder.local_addr().expect("local addr").port();
    dir.server_config(
        "127.0.0.1",
        &format!("http_listen = 127.0.0.1:{http_port}\n"),
    );
    let out = dir.dynip(&["server", CONFIG]);
    assert_eq!(out.code, 7, "http_listen in use: {out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{http_port}")),
        "names http_listen: {out:?}"
    );
    drop(http_holder);

    // A bad value: 3, naming the file and the key.
    dir.write("bad.conf", "[DynIP:Server]\nserver_port = abc\n");
    let out = dir.dynip(&["server", "bad.conf"]);
    assert_eq!(out.code, 3, "{out:?}");
    for named in ["bad.conf", "server_port", "abc"] {
        assert!(out.stderr.contains(named), "names {named}: {out:?}");
    }

    // A missing config: 3, naming it.
    for (program, args) in [
        (DYNIP, vec!["server", "nope.conf"]),
        (DYNIPD, vec!["nope.conf"]),
    ] {
        let out = run(program, &args, dir.path());
        assert_eq!(out.code, 3, "{program}: {out:?}");
        assert!(out.stderr.contains("nope.conf"), "{program}: {out:?}");
    }

    // list and history without a store: 2, with a message naming the store.
    let empty = Dir::new();
    empty.server_config("127.0.0.1", "");
    for args in [
        &["list", CONFIG][..],
        &["list", "--json", CONFIG],
        &["history", CONFIG, "kitchen-pc"],
    ] {
        let out = empty.dynip(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("no store"), "{args:?}: {out:?}");
        assert!(out.stderr.contains(STORE_FILE), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    assert!(!empty.exists(STORE_FILE), "list created a store");
}

#[test]
fn demo_shows_a_table_and_the_json_file() {
    let dir = Dir::new();
    let out = run_command(
        command(DYNIP, dir.path())
            .arg("demo")
            .env("TMPDIR", dir.path()),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|line| line.starts_with("HOST"))
        .unwrap_or_else(|| panic!("no table: {out:?}"));
    let row: Vec<&str> = lines[header + 1].split_whitespace().collect();
    assert_eq!(row.get(1), Some(&"127.0.0.1"), "{out:?}");
    let host = row[0];
    let export: std::collections::BTreeMap<String, (String, String)> = lines
        .iter()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON file: {out:?}"));
    assert_eq!(export.len(), 1, "{out:?}");
    let (addr, time) = &export[host];
    assert_eq!(addr, "127.0.0.1");
    assert!(is_original_time(time), "{time:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the temp dir")
        .collect();
    assert!(leftovers.is_empty(), "demo left {leftovers:?}");
}

#[test]
fn help_works_for_every_binary_and_usage_errors_exit_2() {
    let dir = Dir::new();
    for (program, args) in [
        (DYNIP, &["-h"][..]),
        (DYNIP, &["--help"]),
        (DYNIP, &["server", "-h"]),
        (DYNIP, &["client", "--help"]),
        (DYNIP, &["list", "-h"]),
        (DYNIP, &["history", "-h"]),
        (DYNIP, &["init", "-h"]),
        (DYNIP, &["demo", "-h"]),
        (DYNIPD, &["-h"]),
        (DYNIPC, &["-h"]),
        (DYNIP_INIT, &["-h"]),
    ] {
        let out = run(program, args, dir.path());
        assert_eq!(out.code, 0, "{program} {args:?}: {out:?}");
        assert!(out.stdout.contains("Usage"), "{program} {args:?}: {out:?}");
    }
    for program in [DYNIP, DYNIPD, DYNIPC, DYNIP_INIT] {
        let out = run(program, &["--version"], dir.path());
        assert_eq!(out.code, 0, "{program} --version: {out:?}");
    }
    for (program, args) in [
        (DYNIP, &[][..]),
        (DYNIP, &["frobnicate"]),
        (DYNIP, &["server"]),
        (DYNIP, &["--bogus", "list", CONFIG]),
        (DYNIP, &["-q", "-v", "list", CONFIG]),
        (DYNIP, &["client", CONFIG, "--every", "banana"]),
        (DYNIP, &["history", CONFIG]),
        (DYNIPD, &[]),
        (DYNIPD, &["a.conf", "b.conf"]),
        (DYNIPC, &[]),
        (DYNIPC, &[CONFIG, "--every", "banana"]),
        (DYNIP_INIT, &[]),
    ] {
        let out = run(program, args, dir.path());
        assert_eq!(out.code, 2, "{program} {args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{program} {args:?}: says why");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the temp dir")
        .collect();
    assert!(leftovers.is_empty(), "flags wrote files: {leftovers:?}");
}
