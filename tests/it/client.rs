//! The client: its exit codes, and `--every`.

use std::process::Stdio;

use crate::harness::*;

#[test]
fn client_exit_codes() {
    let dir = Dir::new();
    // (file, contents, exit code, what stderr must name)
    let cases: [(&str, Option<&str>, i32, &[&str]); 6] = [
        (
            "empty.conf",
            Some("[DynIP:Client]\nserver_hostname =\nhostname = a\n"),
            4,
            &["empty.conf", "server_hostname"],
        ),
        (
            "unresolvable.conf",
            Some("[DynIP:Client]\nserver_hostname = no-such-host.invalid\nhostname = a\n"),
            4,
            &["no-such-host.invalid"],
        ),
        ("missing.conf", None, 3, &["missing.conf"]),
        (
            // Linux refuses a broadcast from a socket without SO_BROADCAST.
            "broadcast.conf",
            Some("[DynIP:Client]\nserver_hostname = 255.255.255.255\nhostname = a\n"),
            5,
            &["255.255.255.255"],
        ),
        (
            "port.conf",
            Some("[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = abc\nhostname = a\n"),
            3,
            &["port.conf", "server_port", "abc"],
        ),
        (
            "hostname.conf",
            Some("[DynIP:Client]\nserver_hostname = 127.0.0.1\nhostname = bad name\n"),
            3,
            &["hostname.conf", "hostname", "bad name"],
        ),
    ];
    for (file, contents, code, named) in cases {
        if let Some(contents) = contents {
            dir.write(file, contents);
        }
        for (program, args) in [(DYNIP, vec!["client", file]), (DYNIPC, vec![file])] {
            let out = run(program, &args, dir.path());
            assert_eq!(out.code, code, "{program} {args:?}: {out:?}");
            for name in named {
                assert!(
                    out.stderr.contains(name),
                    "{program} {file}: names {name}: {out:?}"
                );
            }
        }
    }
}

/// `--every 100ms` reports again and again, and exits 0 on SIGTERM.
#[test]
fn client_every_keeps_reporting_until_sigterm() {
    let dir = Dir::new();
    dir.server_config("127.0.0.1", "");
    let mut server = ServerProcess::start(&dir);
    let port = server.addr().port();
    let mut clients = Vec::new();
    for (program, subcommand, file, name) in [
        (DYNIP, Some("client"), "a.conf", "every-a"),
        (DYNIPC, None, "b.conf", "every-b"),
    ] {
        let mut args: Vec<&str> = subcommand.into_iter().collect();
        args.extend([file, "--every", "100ms"]);
        dir.write(
            file,
            format!(
                "[DynIP:Client]\nserver_hostname = 127.0.0.1\nserver_port = {port}\n\
                 hostname = {name}\n"
            ),
        );
        let stderr = std::fs::File::create(dir.join(&format!("{name}.err"))).expect("log");
        let child = command(program, dir.path())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the client");
        clients.push((Running(child), name));
    }
    for (_, name) in &clients {
        server.wait_committed(name, 2);
    }
    for (mut client, name) in clients {
        sigterm(&client.0);
        let status = wait_for_exit(&mut client.0)
            .unwrap_or_else(|| panic!("{name}: still running {TIMEOUT:?} after SIGTERM"));
        let log = dir.read_string(&format!("{name}.err"));
        assert_eq!(exit_code(status), 0, "{name}: {log}");
    }
    assert_eq!(
        dir.hosts(),
        ["every-a".to_string(), "every-b".to_string()].into()
    );
    assert_eq!(server.terminate(), 0);
}
