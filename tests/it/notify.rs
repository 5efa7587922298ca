//! Notifications, end to end: the real server tells a webhook receiver (checking the
//! signature), a command (appending its environment to a file) and a real SMTP server
//! (aiosmtpd, with AUTH) about every kind of event; nothing committed is lost to a
//! `kill -9`; a receiver that was down gets everything, per host in order; a flapping
//! host makes only coalesced messages; a sink that cannot work stops the server at start.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::http::{basic, get, update};
use crate::harness::receiver::Receiver;
use crate::harness::schema::check_against;
use crate::harness::*;

const SECRET: &str = "s3cret";

/// The lines of a server config with HTTP, the shared `key`, `stale_after` and `sinks`.
fn config(dir: &Dir, key: &dynip::model::key::Key, stale_after: &str, sinks: &str) {
    dir.server_config(
        "127.0.0.1",
        &format!(
            "http_listen = 127.0.0.1:0\nkey = {}\nstale_after = {stale_after}\n{sinks}",
            key.encode()
        ),
    );
}

fn webhook(name: &str, receiver: &Receiver, coalesce: &str) -> String {
    format!(
        "[DynIP:Notify:{name}]\nkind = webhook\nurl = {}\nsecret = {SECRET}\ncoalesce = {coalesce}\n",
        receiver.url("/hook")
    )
}

/// `pc`'s address, or more, through dyndns2; the answer's first word.
fn report(server: &ServerProcess, key: &dynip::model::key::Key, query: &str) -> String {
    let (status, body) = update(server.listening("http"), key, query);
    assert_eq!(status, 200, "{query}: {body}");
    body.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// An aiosmtpd server (Debian's python3-aiosmtpd) keeping each message in `dir/mail`;
/// killed on drop.
struct Smtp {
    child: Child,
    port: u16,
}

impl Smtp {
    fn start(dir: &Dir) -> Smtp {
        dir.write("smtp_server.py", include_str!("smtp_server.py"));
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        // The Python that has aiosmtpd: the one the package's own script runs.
        let script = std::fs::read_to_string(which("aiosmtpd").unwrap()).unwrap();
        let python = script
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("#!"))
            .map_or("/usr/bin/python3", str::trim)
            .to_string();
        let mut child = command(&python, dir.path())
            .args(["-W", "ignore", "smtp_server.py", "mail"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("aiosmtpd did not start: {line:?}"));
        Smtp { child, port }
    }

    /// Each message's text, in order.
    fn messages(dir: &Dir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("mail"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| dir.read_string(&format!("mail/{name}")))
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header's value in a message's text.
fn mail_header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

#[test]
fn every_event_kind_reaches_a_webhook_a_command_and_a_mailbox() {
    if !peers_present("notify", &["aiosmtpd"]) {
        return;
    }
    let dir = Dir::new();
    let key = test_key(71);
    let receiver = Receiver::start(SECRET);
    let smtp = Smtp::start(&dir);
    let sinks = format!(
        "{}[DynIP:Notify:script]\nkind = command\n\
         command = /bin/sh -c 'env | grep ^DYNIP_ | sort >> events.env; echo --- >> events.env'\n\
         coalesce = 0\n\
         [DynIP:Notify:mail]\nkind = email\n\
         smtp_url = smtp://dynip:s3cret%20pw@127.0.0.1:{}\n\
         from = dynip@example.com\nto = me@example.com, you@example.com\ncoalesce = 0\n",
        webhook("hook", &receiver, "0"),
        smtp.port
    );
    config(&dir, &key, "3s", &sinks);
    let server = ServerProcess::start(&dir);
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.1"), "good");
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.2"), "good");
    assert_eq!(
        report(&server, &key, "hostname=pc&myip=192.0.2.2&offline=YES"),
        "good"
    );
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.2"), "good");
    // No report for stale_after: the scan finds it within a second or so.
    eventually("the stale event", || {
        receiver
            .delivered()
            .iter()
            .any(|got| got.json()["event"] == "stale")
            .then_some(())
    });
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.3"), "good");
    let kinds = [
        "new", "changed", "offline", "online", "stale", "back", "changed",
    ];

    // The webhook: every kind, in order, signed, with the generic body.
    let delivered = eventually("every event at the webhook", || {
        let delivered = receiver.delivered();
        (delivered.len() >= kinds.len()).then_some(delivered)
    });
    let bodies: Vec<Value> = delivered.iter().map(|got| got.json()).collect();
    let got_kinds: Vec<&str> = bodies
        .iter()
        .map(|body| body["event"].as_str().unwrap())
        .collect();
    assert_eq!(got_kinds, kinds);
    for (got, body) in delivered.iter().zip(&bodies) {
        assert!(got.signed, "not signed right: {got:?}");
        assert_eq!(got.path, "/hook");
        assert_eq!(body["version"], 1);
        assert_eq!(body["host"], "pc");
        assert_eq!(
            got.header("X-Dynip-Event-Id"),
            Some(body["id"].to_string().as_str())
        );
    }
    let ids: Vec<i64> = bodies
        .iter()
        .map(|body| body["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert_eq!(bodies[1]["ipv4"]["old"], "192.0.2.1");
    assert_eq!(bodies[1]["ipv4"]["new"], "192.0.2.2");
    assert_eq!(bodies[0]["ipv4"]["old"], Value::Null);
    assert_eq!(bodies[6]["ipv4"]["new"], "192.0.2.3");

    // The command: one environment per event.
    let blocks = eventually("every event at the command", || {
        let text = std::fs::read_to_string(dir.join("events.env")).unwrap_or_default();
        let blocks: Vec<BTreeMap<String, String>> = text
            .split("---\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                block
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect()
            })
            .collect();
        (blocks.len() >= kinds.len()).then_some(blocks)
    });
    let env_kinds: Vec<&str> = blocks
        .iter()
        .map(|env| env["DYNIP_EVENT"].as_str())
        .collect();
    assert_eq!(env_kinds, kinds);
    assert!(blocks.iter().all(|env| env["DYNIP_HOST"] == "pc"));
    assert_eq!(blocks[1]["DYNIP_IPV4"], "192.0.2.2");
    assert_eq!(blocks[1]["DYNIP_OLD_IPV4"], "192.0.2.1");
    let env_ids: Vec<String> = blocks
        .iter()
        .map(|env| env["DYNIP_EVENT_ID"].clone())
        .collect();
    assert_eq!(env_ids, ids.iter().map(i64::to_string).collect::<Vec<_>>());

    // The mailbox: one message per event, to both addresses, after AUTH.
    let messages = eventually("every event in the mailbox", || {
        let messages = Smtp::messages(&dir);
        (messages.len() >= kinds.len()).then_some(messages)
    });
    for (message, id) in messages.iter().zip(&ids) {
        assert_eq!(
            mail_header(message, "X-Dynip-Event-Id"),
            Some(id.to_string().as_str())
        );
        let subject = mail_header(message, "Subject").unwrap();
        assert!(
            subject.starts_with("[dynip]") && subject.contains("pc"),
            "{subject}"
        );
    }
    let rcpt = dir.read_string("mail/0001.rcpt");
    assert_eq!(rcpt, "me@example.com\nyou@example.com");

    // The API and the CLI show the events with every sink's delivery.
    let http = server.listening("http");
    let auth = basic("api", &key.encode());
    let doc: Value = serde_json::from_str(&get(http, "/api/v1/openapi.json", &[]).body).unwrap();
    let listed = eventually("every delivery written down", || {
        let res = get(http, "/api/v1/events", &[("Authorization", &auth)]);
        let listed = check_against(&doc, "/api/v1/events", &res);
        let all_delivered = listed["events"].as_array().unwrap().iter().all(|event| {
            event["deliveries"].as_array().unwrap().len() == 3
                && event["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|delivery| delivery["state"] == "delivered")
        });
        all_delivered.then_some(listed)
    });
    assert_eq!(listed["events"].as_array().unwrap().len(), kinds.len());
    assert_eq!(listed["events"][0]["event"], "changed", "newest first");
    let res = get(
        http,
        "/api/v1/hosts/PC/events?limit=2",
        &[("Authorization", &auth)],
    );
    let host_events = check_against(&doc, "/api/v1/hosts/{name}/events", &res);
    assert_eq!(host_events["events"].as_array().unwrap().len(), 2);
    let res = get(http, "/api/v1/events?limit=0", &[("Authorization", &auth)]);
    check_against(&doc, "/api/v1/events", &res);
    assert_eq!(res.status, 400);
    let page = get(http, "/hosts/pc", &[("Authorization", &auth)]);
    assert!(page.body.contains("<h2>Events</h2>"), "{}", page.body);
    assert!(page.body.contains("192.0.2.1 → 192.0.2.2"), "{}", page.body);

    let out = dir.dynip(&["events", CONFIG, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cli.as_array().unwrap().len(), kinds.len());
    let out = dir.dynip(&["events", CONFIG, "--host", "pc", "--limit", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("ID"), "{}", out.stdout);
    assert!(
        out.stdout.contains("hook=delivered") && out.stdout.contains("mail=delivered"),
        "{}",
        out.stdout
    );
    assert_eq!(dir.dynip(&["events", CONFIG, "--host", "nobody"]).code, 9);

    let metrics = get(http, "/metrics", &[]).body;
    for sink in ["hook", "script", "mail"] {
        let line = format!("dynip_notify_deliveries_total{{sink=\"{sink}\"}} 7");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
        let line = format!("dynip_notify_outbox_events{{sink=\"{sink}\"}} 0");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}

#[test]
fn a_kill_9_in_a_burst_of_changes_loses_no_committed_event() {
    let dir = Dir::new();
    let key = test_key(72);
    let receiver = Receiver::start(SECRET);
    config(&dir, &key, "1h", &webhook("hook", &receiver, "0"));
    let mut server = ServerProcess::start(&dir);
    let http = server.listening("http");
    // A burst from another thread: each report a new address of one of ten hosts; the
    // ones answered `good` are committed.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop, key) = (Arc::clone(&acked), Arc::clone(&stop), key.clone());
        std::thread::spawn(move || {
            for n in 0u32.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let host = format!("h{}", n % 10);
                let addr = format!("10.{}.{}.{}", n / 65_536 % 256, n / 256 % 256, n % 256);
                let answer = std::panic::catch_unwind(|| {
                    update(http, &key, &format!("hostname={host}&myip={addr}"))
                });
                match answer {
                    Ok((200, body)) if body.starts_with("good") => {
                        acked.lock().unwrap().push((host, addr));
                    }
                    _ => break,
                }
            }
        })
    };
    eventually("a burst under way", || {
        (acked.lock().unwrap().len() >= 150).then_some(())
    });
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let _server = ServerProcess::start(&dir);
    // Every acknowledged change reaches the receiver, after the restart if not before.
    let wanted: BTreeSet<(String, String)> = acked.into_iter().collect();
    eventually("every committed change delivered", || {
        let seen: BTreeSet<(String, String)> = receiver
            .delivered()
            .iter()
            .map(|got| got.json())
            .map(|body| {
                (
                    body["host"].as_str().unwrap().to_string(),
                    body["ipv4"]["new"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        wanted.is_subset(&seen).then_some(())
    });
    // And every event the store holds, whether its report was answered or not.
    let out = dir.dynip(&["events", CONFIG, "--json", "--limit", "1000"]);
    let stored: BTreeSet<i64> = serde_json::from_str::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["id"].as_i64().unwrap())
        .collect();
    let delivered: BTreeSet<i64> = receiver
        .delivered()
        .iter()
        .map(|got| got.json()["id"].as_i64().unwrap())
        .collect();
    assert!(
        stored.is_subset(&delivered),
        "never delivered: {:?}",
        stored.difference(&delivered).collect::<Vec<_>>()
    );
}

#[test]
fn a_receiver_that_was_down_gets_everything_per_host_in_order() {
    let dir = Dir::new();
    let key = test_key(73);
    let mut receiver = Receiver::start(SECRET);
    config(&dir, &key, "1h", &webhook("hook", &receiver, "0"));
    let server = ServerProcess::start(&dir);
    receiver.stop();
    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in 1..=5 {
        for host in ["a", "b"] {
            let addr = format!("198.51.100.{n}");
            assert_eq!(
                report(&server, &key, &format!("hostname={host}&myip={addr}")),
                "good"
            );
            sent.entry(host).or_default().push(addr);
        }
    }
    let http = server.listening("http");
    eventually("the outbox holding ten events", || {
        get(http, "/metrics", &[])
            .body
            .contains("dynip_notify_outbox_events{sink=\"hook\"} 10")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(receiver.received().is_empty());
    // Up again, answering 503 for a while first.
    receiver.answer(503);
    receiver.restart();
    eventually("a try answered 503", || {
        (!receiver.received().is_empty()).then_some(())
    });
    receiver.answer(200);
    let delivered = eventually("all ten delivered", || {
        let delivered = receiver.delivered();
        (delivered.len() >= 10).then_some(delivered)
    });
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for body in delivered.iter().map(|got| got.json()) {
        let host = body["host"].as_str().unwrap().to_string();
        let addrs = got.entry(host).or_default();
        let addr = body["ipv4"]["new"].as_str().unwrap().to_string();
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    for (host, addrs) in &sent {
        assert_eq!(&got[*host], addrs, "{host}'s events, in order");
    }
}

#[test]
fn a_flapping_host_makes_only_coalesced_messages() {
    let dir = Dir::new();
    let key = test_key(74);
    let receiver = Receiver::start(SECRET);
    // A minute of a change every second, at four times the speed: 60 changes in 15 s,
    // coalesced over 15 s / 4.
    let coalesce = Duration::from_millis(3750);
    config(
        &dir,
        &key,
        "1h",
        &webhook("hook", &receiver, &format!("{}ms", coalesce.as_millis())),
    );
    let server = ServerProcess::start(&dir);
    let start = Instant::now();
    let mut last = String::new();
    for n in 0..=60 {
        last = format!("203.0.113.{}", 1 + n % 2);
        let answer = report(&server, &key, &format!("hostname=flappy&myip={last}"));
        assert!(answer == "good", "report {n}: {answer}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let flapped = start.elapsed();
    // Every event accounted for: the counts add up to the 61 events (new, then 60
    // changes), the last message carries the last address.
    let delivered = eventually("the last coalesced message", || {
        let delivered = receiver.delivered();
        let total: u64 = delivered
            .iter()
            .map(|got| got.json()["count"].as_u64().unwrap_or(1))
            .sum();
        (total >= 61).then_some(delivered)
    });
    let bodies: Vec<Value> = delivered.iter().map(|got| got.json()).collect();
    let total: u64 = bodies
        .iter()
        .map(|body| body["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, 61, "{bodies:?}");
    assert_eq!(bodies.last().unwrap()["ipv4"]["new"], last.as_str());
    // The first at once, then at most one per interval, and the one after the flapping.
    let most = 2 + (flapped.as_millis() / coalesce.as_millis()) as usize;
    assert!(
        bodies.len() <= most,
        "{} messages for 61 events in {flapped:?} (at most {most})",
        bodies.len()
    );
}

#[test]
fn a_sink_that_cannot_work_stops_the_server_at_start() {
    let dir = Dir::new();
    let key = test_key(75);
    for (sink, expect) in [
        (
            "[DynIP:Notify:x]\nkind = pigeon\n",
            "[DynIP:Notify:x] kind = \"pigeon\": not a sink kind",
        ),
        (
            "[DynIP:Notify:x]\nkind = webhook\nurl = gopher://h/\n",
            "[DynIP:Notify:x] url = \"gopher://h/\"",
        ),
        (
            "[DynIP:Notify:x]\nkind = webhook\nurl = http://127.0.0.1:9/\nsecret_file = missing\n",
            "[DynIP:Notify:x] secret_file: cannot read missing",
        ),
    ] {
        config(&dir, &key, "1h", sink);
        for command in ["server", "check"] {
            let out = dir.dynip(&[command, CONFIG]);
            assert_eq!(out.code, 3, "{command}, {sink}: {}", out.stderr);
            assert!(
                out.stderr.contains(expect),
                "{command}, {sink}: {}",
                out.stderr
            );
        }
    }
    // A sink that works is described, without its URL's credentials.
    config(
        &dir,
        &key,
        "1h",
        "[DynIP:Notify:hook]\nkind = webhook\nurl = https://u:pw@hooks.example.com/x?token=t\n",
    );
    let out = dir.dynip(&["check", CONFIG]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("notify: hook: webhook to https://hooks.example.com/x (generic body)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("pw") && !out.stdout.contains("token"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_hosts_going_stale_is_told_once_across_a_restart() {
    let dir = Dir::new();
    let key = test_key(76);
    let receiver = Receiver::start(SECRET);
    config(&dir, &key, "2s", &webhook("hook", &receiver, "0"));
    let mut server = ServerProcess::start(&dir);
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.1"), "good");
    // Distinct ids, as a receiver de-duplicates: a delivery may come twice, an event
    // must not be made twice.
    let stale = |receiver: &Receiver| {
        receiver
            .delivered()
            .iter()
            .map(|got| got.json())
            .filter(|body| body["event"] == "stale")
            .map(|body| body["id"].as_i64().unwrap())
            .collect::<BTreeSet<i64>>()
            .len()
    };
    eventually("the stale event", || (stale(&receiver) == 1).then_some(()));
    assert_eq!(server.terminate(), 0);
    let server = ServerProcess::start(&dir);
    // The first scan runs at start; give it and a few more the time to (not) tell.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stale(&receiver), 1, "told again after the restart");
    // Back (the same address: `nochg`, and still an event), then stale again: a new
    // stale event.
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.1"), "nochg");
    eventually("the second stale event", || {
        (stale(&receiver) == 2).then_some(())
    });
    let kinds: BTreeMap<i64, String> = receiver
        .delivered()
        .iter()
        .map(|got| got.json())
        .map(|body| {
            (
                body["id"].as_i64().unwrap(),
                body["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds.into_values().collect::<Vec<_>>(),
        ["new", "stale", "back", "stale"]
    );
}

#[test]
fn an_event_undelivered_for_notify_max_age_is_dropped_and_counted() {
    let dir = Dir::new();
    let key = test_key(77);
    let mut receiver = Receiver::start(SECRET);
    receiver.stop();
    config(
        &dir,
        &key,
        "1h",
        &format!("notify_max_age = 3s\n{}", webhook("hook", &receiver, "0")),
    );
    let server = ServerProcess::start(&dir);
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.1"), "good");
    let http = server.listening("http");
    eventually("the event dropped", || {
        get(http, "/metrics", &[])
            .body
            .contains("dynip_notify_dropped_total{sink=\"hook\"} 1")
            .then_some(())
    });
    assert!(
        !server
            .stderr_lines("dropping events not delivered within notify_max_age")
            .is_empty(),
        "{}",
        server.stderr_tail()
    );
    let line = server.stderr_lines("dropping events").remove(0);
    assert!(line.contains("ERROR"), "{line}");
    let auth = basic("api", &key.encode());
    let listed: Value = eventually("the drop written down", || {
        let body = get(http, "/api/v1/events", &[("Authorization", &auth)]).body;
        let listed: Value = serde_json::from_str(&body).unwrap();
        (listed["events"][0]["deliveries"][0]["state"] == "dropped").then_some(listed)
    });
    assert_eq!(listed["events"][0]["event"], "new");
    // Back up: nothing more comes, the dropped event stays dropped.
    receiver.restart();
    assert_eq!(report(&server, &key, "hostname=pc&myip=192.0.2.2"), "good");
    let delivered = eventually("the next event", || {
        let delivered = receiver.delivered();
        (!delivered.is_empty()).then_some(delivered)
    });
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].json()["event"], "changed");
}

#[test]
fn presets_reach_their_receivers_in_their_shapes_with_the_events_and_hosts_asked_for() {
    let dir = Dir::new();
    let key = test_key(78);
    let receiver = Receiver::start(SECRET);
    let preset = |name: &str, path: &str, preset: &str, filter: &str| {
        format!(
            "[DynIP:Notify:{name}]\nkind = webhook\nurl = {}\npreset = {preset}\ncoalesce = 0\n{filter}",
            receiver.url(path)
        )
    };
    let sinks = [
        preset("phone", "/ntfy/home", "ntfy", "events = changed\n"),
        preset(
            "gotify",
            "/message?token=abc",
            "gotify",
            "hosts = kitchen-*\n",
        ),
        preset("chat", "/slack", "slack", "hosts = nas\n"),
    ]
    .concat();
    config(&dir, &key, "1h", &sinks);
    let server = ServerProcess::start(&dir);
    for query in [
        "hostname=kitchen-pc&myip=192.0.2.1",
        "hostname=kitchen-pc&myip=192.0.2.2",
        "hostname=nas&myip=192.0.2.9",
    ] {
        assert_eq!(report(&server, &key, query), "good");
    }
    // ntfy: `changed` only (one); Gotify: kitchen-pc's two; Slack: nas's one.
    eventually("four messages", || {
        (receiver.delivered().len() >= 4).then_some(())
    });
    // And no more: what the filters left out does not come later.
    std::thread::sleep(Duration::from_millis(500));
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    let at = |path: &str| -> Vec<_> {
        delivered
            .iter()
            .filter(|got| got.path == path)
            .cloned()
            .collect()
    };
    let ntfy = at("/ntfy/home");
    assert_eq!(ntfy.len(), 1, "{delivered:?}");
    assert!(
        ntfy[0].header("Title").unwrap().contains("kitchen-pc"),
        "{ntfy:?}"
    );
    assert!(ntfy[0]
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(ntfy[0].body.contains("192.0.2.2"), "{}", ntfy[0].body);
    let gotify = at("/message?token=abc");
    assert_eq!(gotify.len(), 2, "{delivered:?}");
    let message = gotify[1].json();
    assert!(
        message["title"].as_str().unwrap().contains("kitchen-pc"),
        "{message}"
    );
    assert!(
        message["message"].as_str().unwrap().contains("192.0.2.2"),
        "{message}"
    );
    assert!(message["priority"].is_number());
    let slack = at("/slack");
    assert_eq!(slack.len(), 1, "{delivered:?}");
    let text = slack[0].json()["text"].as_str().unwrap().to_string();
    assert!(text.contains("nas") && text.contains("192.0.2.9"), "{text}");
    // Every preset still carries the event id.
    assert!(delivered
        .iter()
        .all(|got| got.header("X-Dynip-Event-Id").is_some()));
}
