//! The client: its exit codes, `--every`, and failing over between the servers it lists.

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

/// `server_hostname` listing two servers, the first down (a socket that never answers,
/// as behind a firewall): the signed report goes to the second, and the client says so;
/// the original's datagram goes to both.
#[test]
fn a_client_with_two_servers_listed_reports_while_the_first_is_down() {
    let dir = Dir::new();
    let key = test_key(31);
    dir.server_config("127.0.0.1", &format!("key = {}\n", key.encode()));
    let server = ServerProcess::start(&dir);
    let port = server.addr().port();
    let down = std::net::UdpSocket::bind("127.0.0.2:0").expect("a silent socket");
    let down_addr = down.local_addr().expect("its address");
    dir.write(
        "client.conf",
        format!(
            "[DynIP:Client]\nserver_hostname = {down_addr}, 127.0.0.1\nserver_port = {port}\n\
             hostname = failover-host\nkey = {}\n",
            key.encode()
        ),
    );
    let started = std::time::Instant::now();
    let out = run(DYNIP, &["client", "client.conf"], dir.path());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("127.0.0.1:"), "{out:?}");
    assert!(
        out.stderr
            .contains("acknowledged by this server after no answer from the others")
            && out.stderr.contains(&format!("server=127.0.0.1:{port}"))
            && out.stderr.contains(&down_addr.to_string()),
        "says which server answered: {out:?}"
    );
    // Three tries at the silent one (0.25 + 0.5 + 1 s), not the five of a lone server.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 2048];
    down.set_nonblocking(true).expect("non-blocking");
    let mut heard = 0;
    while down.recv(&mut buf).is_ok() {
        heard += 1;
    }
    assert_eq!(heard, 3, "the silent server was tried three times");
    assert!(dir.hosts().contains("failover-host"), "{:?}", dir.hosts());

    // Both down: exit 10, naming the last tried.
    dir.write(
        "both-down.conf",
        format!(
            "[DynIP:Client]\nserver_hostname = {down_addr} {down_addr}\nhostname = nobody\nkey = {}\n",
            key.encode()
        ),
    );
    let out = run(DYNIP, &["client", "both-down.conf"], dir.path());
    assert_eq!(out.code, 10, "{out:?}");
    assert!(out.stderr.contains(&down_addr.to_string()), "{out:?}");
}

/// Without a key nothing is acknowledged, so the original's datagram goes to every
/// listed server.
#[test]
fn an_unsigned_report_goes_to_every_listed_server() {
    let (one, two) = (Dir::new(), Dir::new());
    one.server_config("127.0.0.1", "");
    two.server_config("127.0.0.1", "");
    let first = ServerProcess::start(&one);
    let second = ServerProcess::start(&two);
    let servers = format!(
        "127.0.0.1:{}, 127.0.0.1:{}",
        first.addr().port(),
        second.addr().port()
    );
    one.write(
        "client.conf",
        format!("[DynIP:Client]\nserver_hostname = {servers}\nhostname = everywhere\n"),
    );
    let out = run(DYNIP, &["client", "client.conf"], one.path());
    assert_eq!(out.code, 0, "{out:?}");
    first.wait_committed("everywhere", 1);
    second.wait_committed("everywhere", 1);
    assert!(one.hosts().contains("everywhere") && two.hosts().contains("everywhere"));
}
