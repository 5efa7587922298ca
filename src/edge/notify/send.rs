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
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(timeout))
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
