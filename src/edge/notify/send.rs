//! Sending one message to a sink: [`Messenger`], built once per sink at start, and the
//! [`Attempt`] each send ends in.
//!
//! - A webhook is an HTTP(S) POST with ureq (rustls, ring, the Mozilla roots from
//!   webpki-roots): the preset's body and headers (`proto::notify::request`), signed
//!   with the secret when there is one, redirects not followed. The status decides
//!   (`proto::notify::verdict`); no answer at all is tried again.
//! - A command runs without a shell, with the event in its environment
//!   (`proto::notify::command_env`), stdin closed; exit status 0 is a delivery, anything
//!   else (a failure to start, a non-zero status, the time limit) is tried again. At the
//!   time limit its whole process group is killed.
//! - An e-mail goes through lettre's SMTP client (rustls): `smtps://` is TLS from the
//!   start (port 465), `smtp://` STARTTLS (port 587), required, except to a loopback
//!   address, where it is used if offered (a local relay often has no certificate); user
//!   and password from the URL are sent with AUTH. An SMTP 5xx is a refusal for good; a
//!   4xx, a lost connection or the time limit is tried again.

use std::io::Read;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use url::Url;

use crate::config::{SinkConfig, SinkTarget};
use crate::proto::notify::{
    command_env, email, request, signature, verdict, Delivery, DeliveryVerdict, Preset,
    SIGNATURE_HEADER,
};

/// How much of a failed command's stderr the log shows.
const STDERR_TAIL: usize = 500;

/// How often a running command is looked at.
const COMMAND_POLL: Duration = Duration::from_millis(10);

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: DeliveryVerdict,
    /// What happened, for the log and the API: `HTTP 503`, `exit status 2`, `timed out
    /// after 10s`, `550 mailbox unavailable`.
    pub detail: String,
}

impl Attempt {
    fn retry(detail: String) -> Attempt {
        Attempt {
            verdict: DeliveryVerdict::Retry { after: None },
            detail,
        }
    }
}

/// One sink's way of sending.
pub struct Messenger {
    timeout: Duration,
    way: Way,
}

enum Way {
    Webhook {
        agent: ureq::Agent,
        url: Url,
        preset: Preset,
        secret: Option<Vec<u8>>,
    },
    Command {
        program: String,
        args: Vec<String>,
    },
    Email {
        transport: SmtpTransport,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
}

impl Messenger {
    /// Sets `sink` up, with its webhook secret's bytes (read by the caller).
    ///
    /// # Errors
    /// What cannot be set up: an address or a TLS name the mail client refuses.
    pub fn new(sink: &SinkConfig, secret: Option<Vec<u8>>) -> Result<Messenger, String> {
        let timeout = sink.timeout;
        let way = match &sink.target {
            SinkTarget::Webhook { url, preset, .. } => {
                // Each step has the time limit, not the whole call: a limit on the whole
                // call makes ureq resolve the host on a thread of its own, one thread
                // per message (a third of the sink's CPU under load, measured).
                let step = Some(timeout);
                let agent = ureq::Agent::config_builder()
                    .timeout_connect(step)
                    .timeout_send_request(step)
                    .timeout_send_body(step)
                    .timeout_recv_response(step)
                    .timeout_recv_body(step)
                    .http_status_as_error(false)
                    .max_redirects(0)
                    .user_agent(format!("dynip/{}", env!("CARGO_PKG_VERSION")))
                    .build()
                    .into();
                Way::Webhook {
                    agent,
                    url: url.clone(),
                    preset: *preset,
                    secret,
                }
            }
            SinkTarget::Command { program, args } => Way::Command {
                program: program.clone(),
                args: args.clone(),
            },
            SinkTarget::Email { smtp_url, from, to } => {
                let mailbox = |address: &str| {
                    address
                        .parse::<Mailbox>()
                        .map_err(|e| format!("{address:?} is not a mailbox: {e}"))
                };
                Way::Email {
                    transport: smtp_transport(smtp_url, timeout)?,
                    from: mailbox(from)?,
                    to: to.iter().map(|to| mailbox(to)).collect::<Result<_, _>>()?,
                }
            }
        };
        Ok(Messenger { timeout, way })
    }

    /// Sends `delivery`, blocking, within the sink's `timeout`.
    pub fn send(&self, delivery: &Delivery) -> Attempt {
        match &self.way {
            Way::Webhook {
                agent,
                url,
                preset,
                secret,
            } => post(agent, url, *preset, secret.as_deref(), delivery),
            Way::Command { program, args } => run(program, args, delivery, self.timeout),
            Way::Email {
                transport,
                from,
                to,
            } => mail(transport, from, to, delivery),
        }
    }
}

fn post(
    agent: &ureq::Agent,
    url: &Url,
    preset: Preset,
    secret: Option<&[u8]>,
    delivery: &Delivery,
) -> Attempt {
    let request = request(preset, delivery);
    let mut post = agent
        .post(url.as_str())
        .header("Content-Type", request.content_type);
    for (name, value) in &request.headers {
        post = post.header(*name, value);
    }
    if let Some(secret) = secret {
        post = post.header(SIGNATURE_HEADER, signature(secret, request.body.as_bytes()));
    }
    match post.send(request.body.as_bytes()) {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok());
            Attempt {
                verdict: verdict(status, retry_after),
                detail: format!("HTTP {status}"),
            }
        }
        Err(e) => Attempt::retry(e.to_string()),
    }
}

fn run(program: &str, args: &[String], delivery: &Delivery, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let mut child = match Command::new(program)
        .args(args)
        .envs(command_env(delivery))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: at the time limit, its children go with it.
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Attempt::retry(format!("cannot run {program}: {e}")),
    };
    let (tail_tx, tail_rx) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            let _ = tail_tx.send(tail);
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => break None,
            Ok(None) => std::thread::sleep(COMMAND_POLL),
            Err(e) => return Attempt::retry(format!("cannot wait for {program}: {e}")),
        }
    };
    let Some(status) = status else {
        // SAFETY: kill only reads its arguments; the group is the child's own.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
        return Attempt::retry(format!(
            "timed out after {}; killed",
            humantime::format_duration(timeout)
        ));
    };
    if status.success() {
        return Attempt {
            verdict: DeliveryVerdict::Delivered,
            detail: "exit status 0".to_string(),
        };
    }
    let tail = tail_rx
        .recv_timeout(Duration::from_millis(100))
        .unwrap_or_default();
    let tail = String::from_utf8_lossy(&tail);
    let tail = tail.trim();
    let what = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("ended by a signal ({status})"),
    };
    Attempt::retry(match tail.is_empty() {
        true => what,
        false => format!("{what}: {tail}"),
    })
}

/// The SMTP client for `url`.
fn smtp_transport(url: &Url, timeout: Duration) -> Result<SmtpTransport, String> {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|addr| addr.is_loopback());
    let tls = |host: &str| {
        TlsParameters::new(host.to_string()).map_err(|e| format!("TLS for {host}: {e}"))
    };
    let builder = match url.scheme() {
        "smtps" => SmtpTransport::builder_dangerous(host)
            .port(url.port().unwrap_or(465))
            .tls(Tls::Wrapper(tls(host)?)),
        _ if loopback => SmtpTransport::builder_dangerous(host)
            .port(url.port().unwrap_or(587))
            .tls(Tls::Opportunistic(tls(host)?)),
        _ => SmtpTransport::builder_dangerous(host)
            .port(url.port().unwrap_or(587))
            .tls(Tls::Required(tls(host)?)),
    };
    let mut builder = builder.timeout(Some(timeout)).hello_name(ClientId::Domain(
        gethostname::gethostname().to_string_lossy().into_owned(),
    ));
    if !url.username().is_empty() {
        let decode = |text: &str| {
            percent_decode(text).ok_or_else(|| "the user or password is not UTF-8".to_string())
        };
        builder = builder.credentials(Credentials::new(
            decode(url.username())?,
            decode(url.password().unwrap_or_default())?,
        ));
    }
    Ok(builder.build())
}

/// `%XX` decoded, as URLs carry a user and password.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `X-Dynip-Event-Id`, the id receivers de-duplicate by.
#[derive(Debug, Clone)]
struct EventIdHeader(String);

impl Header for EventIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Dynip-Event-Id")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(EventIdHeader(text.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

fn mail(transport: &SmtpTransport, from: &Mailbox, to: &[Mailbox], delivery: &Delivery) -> Attempt {
    let (subject, text) = email(delivery);
    let mut message = Message::builder()
        .from(from.clone())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .header(EventIdHeader(delivery.id.to_string()));
    for to in to {
        message = message.to(to.clone());
    }
    let message = match message.body(text) {
        Ok(message) => message,
        Err(e) => {
            return Attempt {
                verdict: DeliveryVerdict::Permanent,
                detail: format!("cannot build the message: {e}"),
            }
        }
    };
    match transport.send(&message) {
        Ok(response) => Attempt {
            verdict: DeliveryVerdict::Delivered,
            detail: format!("SMTP {}", response.code()),
        },
        Err(e) if e.is_permanent() => Attempt {
            verdict: DeliveryVerdict::Permanent,
            detail: e.to_string(),
        },
        Err(e) => Attempt::retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;

    use super::*;
    use crate::config::DEFAULT_COALESCE;
    use crate::model::event::{Addresses, Event, EventKind};
    use crate::model::name::Name;
    use crate::model::record::Time;
    use crate::proto::notify::SinkFilter;

    fn delivery() -> Delivery {
        Delivery {
            id: 42,
            event: Event {
                kind: EventKind::Changed,
                host: Name::parse("kitchen-pc").unwrap(),
                at: Time::from_micros(1_700_000_000_000_000),
                ipv4: Addresses {
                    old: Some([203, 0, 113, 7].into()),
                    new: Some([198, 51, 100, 23].into()),
                },
                ipv6: Addresses {
                    old: None,
                    new: None,
                },
            },
            count: 1,
        }
    }

    fn sink(target: SinkTarget, timeout: Duration) -> SinkConfig {
        SinkConfig {
            name: "test".into(),
            target,
            filter: SinkFilter::all(),
            coalesce: DEFAULT_COALESCE,
            timeout,
        }
    }

    /// A server on a loopback port that takes one connection and plays `script` on it:
    /// for each line it reads (or request, for HTTP), what it answers. Returns what it
    /// read, whole.
    fn serve_once(
        script: impl FnOnce(&mut BufReader<TcpStream>, &mut TcpStream) -> String + Send + 'static,
    ) -> (u16, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            script(&mut reader, &mut writer)
        });
        (port, thread)
    }

    /// Reads one HTTP request (head and body) and answers `answer`.
    fn http(answer: &'static str) -> (u16, JoinHandle<String>) {
        serve_once(move |reader, writer| {
            let mut request = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            std::io::Read::read_exact(reader, &mut body).unwrap();
            request.push_str(&String::from_utf8(body).unwrap());
            writer.write_all(answer.as_bytes()).unwrap();
            request
        })
    }

    fn webhook(port: u16, secret: Option<&str>) -> Messenger {
        let target = SinkTarget::Webhook {
            url: Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap(),
            preset: Preset::Generic,
            secret: None,
        };
        Messenger::new(
            &sink(target, Duration::from_secs(1)),
            secret.map(|s| s.as_bytes().to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn a_webhook_posts_the_signed_body_and_reads_the_status() {
        let (port, server) = http("HTTP/1.1 204 No Content\r\n\r\n");
        let attempt = webhook(port, Some("s3cret")).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Delivered, "{attempt:?}");
        assert_eq!(attempt.detail, "HTTP 204");
        let request = server.join().unwrap();
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
        let header = |name: &str| {
            head.lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {name} in {head}"))
        };
        assert_eq!(
            header("x-dynip-signature"),
            signature(b"s3cret", body.as_bytes())
        );
        assert_eq!(header("x-dynip-event-id"), "42");
        assert_eq!(header("content-type"), "application/json");
        assert!(header("user-agent").starts_with("dynip/"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["event"], "changed");
        assert_eq!(json["ipv4"]["old"], "203.0.113.7");
    }

    #[test]
    fn a_webhooks_answers_decide_what_comes_next() {
        for (answer, verdict) in [
            (
                "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
                DeliveryVerdict::Retry {
                    after: Some(Duration::from_secs(7)),
                },
            ),
            (
                "HTTP/1.1 429 Slow Down\r\nContent-Length: 0\r\n\r\n",
                DeliveryVerdict::Retry { after: None },
            ),
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                DeliveryVerdict::Permanent,
            ),
        ] {
            let (port, server) = http(answer);
            let attempt = webhook(port, None).send(&delivery());
            assert_eq!(attempt.verdict, verdict, "{answer:?}: {attempt:?}");
            assert!(!server.join().unwrap().contains("x-dynip-signature"));
        }
    }

    #[test]
    fn a_webhook_nobody_answers_is_tried_again() {
        // Nothing listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let attempt = webhook(port, None).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Retry { after: None });
        // A receiver that takes the request and never answers: the sink's timeout.
        let (port, server) = serve_once(|reader, _| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            std::thread::sleep(Duration::from_secs(3));
            line
        });
        let started = Instant::now();
        let attempt = webhook(port, None).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Retry { after: None });
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{attempt:?}"
        );
        server.join().unwrap();
    }

    fn command(args: &[&str], timeout: Duration) -> Messenger {
        let target = SinkTarget::Command {
            program: args[0].to_string(),
            args: args[1..].iter().map(|arg| arg.to_string()).collect(),
        };
        Messenger::new(&sink(target, timeout), None).unwrap()
    }

    #[test]
    fn a_command_gets_the_event_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!("env | grep ^DYNIP_ | sort > {}", out.display());
        let attempt =
            command(&["/bin/sh", "-c", &script], Duration::from_secs(10)).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Delivered, "{attempt:?}");
        let env = std::fs::read_to_string(out).unwrap();
        for line in [
            "DYNIP_EVENT=changed",
            "DYNIP_EVENT_ID=42",
            "DYNIP_HOST=kitchen-pc",
            "DYNIP_IPV4=198.51.100.23",
            "DYNIP_OLD_IPV4=203.0.113.7",
            "DYNIP_IPV6=",
            "DYNIP_COUNT=1",
        ] {
            assert!(env.lines().any(|got| got == line), "{line} in {env}");
        }
    }

    #[test]
    fn a_failing_command_is_tried_again_with_its_stderr() {
        let attempt = command(
            &["/bin/sh", "-c", "echo no route >&2; exit 3"],
            Duration::from_secs(10),
        )
        .send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Retry { after: None });
        assert_eq!(attempt.detail, "exit status 3: no route");
        let attempt = command(&["/nonexistent/notify"], Duration::from_secs(10)).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Retry { after: None });
        assert!(
            attempt.detail.starts_with("cannot run /nonexistent/notify"),
            "{attempt:?}"
        );
    }

    #[test]
    fn a_command_past_its_time_limit_is_killed_with_its_children() {
        let started = Instant::now();
        // The shell's child (sleep) holds stderr: it must die too for the send to end.
        let attempt = command(
            &["/bin/sh", "-c", "sleep 30; true"],
            Duration::from_millis(200),
        )
        .send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Retry { after: None });
        assert!(
            attempt.detail.starts_with("timed out after 200ms"),
            "{attempt:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// An SMTP server that answers RCPT with `rcpt`, and records the session.
    fn smtp(rcpt: &'static str) -> (u16, JoinHandle<String>) {
        serve_once(move |reader, writer| {
            let mut session = String::new();
            writer.write_all(b"220 test ESMTP\r\n").unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                session.push_str(&line);
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        writer.write_all(b"250 2.0.0 queued\r\n").unwrap();
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let answer = match verb.as_str() {
                    "EHLO" => "250-test\r\n250 AUTH PLAIN LOGIN\r\n",
                    "AUTH" => "235 2.7.0 ok\r\n",
                    "MAIL" => "250 ok\r\n",
                    "RCPT" => rcpt,
                    "DATA" => {
                        in_data = true;
                        "354 go on\r\n"
                    }
                    "QUIT" => {
                        writer.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => "250 ok\r\n",
                };
                writer.write_all(answer.as_bytes()).unwrap();
            }
            session
        })
    }

    fn email(port: u16) -> Messenger {
        let target = SinkTarget::Email {
            smtp_url: Url::parse(&format!("smtp://me%40example.com:pa%20ss@127.0.0.1:{port}"))
                .unwrap(),
            from: "dynip@example.com".into(),
            to: vec!["a@example.com".into(), "b@example.com".into()],
        };
        Messenger::new(&sink(target, Duration::from_secs(5)), None).unwrap()
    }

    #[test]
    fn an_email_goes_to_every_recipient_with_the_event_id() {
        let (port, server) = smtp("250 ok\r\n");
        let attempt = email(port).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Delivered, "{attempt:?}");
        let session = server.join().unwrap();
        assert!(session.contains("RCPT TO:<a@example.com>"), "{session}");
        assert!(session.contains("RCPT TO:<b@example.com>"), "{session}");
        assert!(session.contains("X-Dynip-Event-Id: 42"), "{session}");
        assert!(session.contains("Subject: [dynip] "), "{session}");
        // AUTH with the URL's user and password, decoded.
        let plain = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "\0me@example.com\0pa ss",
        );
        assert!(session.contains(&plain), "{session}");
    }

    #[test]
    fn smtp_refusals_are_for_good_or_for_now() {
        let (port, server) = smtp("550 5.1.1 no such mailbox\r\n");
        let attempt = email(port).send(&delivery());
        assert_eq!(attempt.verdict, DeliveryVerdict::Permanent, "{attempt:?}");
        server.join().unwrap();
        let (port, server) = smtp("451 4.3.0 try later\r\n");
        let attempt = email(port).send(&delivery());
        assert_eq!(
            attempt.verdict,
            DeliveryVerdict::Retry { after: None },
            "{attempt:?}"
        );
        server.join().unwrap();
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%40c").as_deref(), Some("a b@c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
