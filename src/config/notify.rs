//! `[DynIP:Notify:NAME]`: one section per sink, read into [`SinkConfig`].
//!
//! A sink is where notifications go (a webhook, a command, an e-mail address list), and
//! which events it hears. Every key is checked here, so a sink the server cannot use stops
//! it at start with the section and key named; what needs a file (`secret_file`) is read
//! by the caller, which names the key the same way when it cannot.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::ini::{quoted, Ini};
use super::keys::{duration, path};
use super::ConfigError;
use crate::model::event::EventKind;
use crate::proto::notify::{HostGlob, Preset, SinkFilter};

/// The prefix of a sink's section; the rest of the name is the sink's.
pub const NOTIFY_SECTION_PREFIX: &str = "DynIP:Notify:";

/// `coalesce` when the section names none.
pub const DEFAULT_COALESCE: Duration = Duration::from_secs(60);

/// `timeout` when the section names none: how long one delivery may take.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys a sink's section knows.
pub(super) const SINK_KEYS: &[&str] = &[
    "kind",
    "url",
    "preset",
    "secret",
    "secret_file",
    "command",
    "smtp_url",
    "from",
    "to",
    "events",
    "hosts",
    "coalesce",
    "timeout",
];

/// One sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// The section's name after `DynIP:Notify:`: the sink's name in logs, metrics and
    /// the store.
    pub name: String,
    pub target: SinkTarget,
    /// `events` and `hosts`.
    pub filter: SinkFilter,
    /// `coalesce`, default a minute: a host's events within this long of its last
    /// message go as one. Zero: each event alone.
    pub coalesce: Duration,
    /// `timeout`, default 10 s: how long a command may run, and each step of a request
    /// or an SMTP session may take (connect, send, answer); past it, the delivery
    /// failed and is tried again.
    pub timeout: Duration,
}

/// Where a sink's messages go (`kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// `kind = webhook`: `url`, `preset`, `secret` or `secret_file`.
    Webhook {
        url: Url,
        preset: Preset,
        secret: Option<Secret>,
    },
    /// `kind = command`: `command`, a program and its arguments, run without a shell.
    Command { program: String, args: Vec<String> },
    /// `kind = email`: `smtp_url`, `from`, `to`.
    Email {
        /// `smtp://` (STARTTLS, required unless the host is a loopback address) or
        /// `smtps://` (TLS from the start); user and password in the URL.
        smtp_url: Url,
        from: String,
        to: Vec<String>,
    },
}

/// A webhook's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// `secret`: the bytes of the value.
    Text(String),
    /// `secret_file`: the bytes of the file, read by the caller at start (a trailing
    /// newline is not part of it).
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Text(_) => f.write_str("Secret::Text(..)"),
            Secret::File(path) => f.debug_tuple("Secret::File").field(path).finish(),
        }
    }
}

/// Every `[DynIP:Notify:NAME]` section, in file order.
pub(super) fn read_sinks(ini: &Ini) -> Result<Vec<SinkConfig>, ConfigError> {
    let mut sinks = Vec::new();
    for (section, _) in ini.sections.iter() {
        if let Some(name) = section.strip_prefix(NOTIFY_SECTION_PREFIX) {
            sinks.push(read_sink(ini, section, name)?);
        }
    }
    Ok(sinks)
}

fn read_sink(ini: &Ini, section: &str, name: &str) -> Result<SinkConfig, ConfigError> {
    let get = |key: &str| ini.get(section, key);
    let bad = |key: &str, reason: &'static str| {
        let found = get(key);
        ConfigError::Value {
            section: section.to_owned(),
            key: key.to_owned(),
            value: found
                .as_ref()
                .map(|found| quoted(found.value))
                .unwrap_or_default(),
            from_default: found.is_some_and(|found| found.from_default),
            reason,
        }
    };
    let value = |key: &str| get(key).map(|found| found.value).filter(|v| !v.is_empty());
    let required = |key: &str, reason: &'static str| value(key).ok_or_else(|| bad(key, reason));

    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(bad(
            "kind",
            "the sink's name (after DynIP:Notify:) must be letters, digits, '-', '_' or '.'",
        ));
    }
    let kind = required(
        "kind",
        "missing: a sink needs kind = webhook, command or email",
    )?;
    let target = match kind.to_ascii_lowercase().as_str() {
        "webhook" => {
            let url = web_url(required("url", "missing: a webhook needs its url")?)
                .map_err(|reason| bad("url", reason))?;
            let preset = match value("preset") {
                Some(word) => Preset::parse(word).ok_or_else(|| {
                    bad("preset", "not a preset (generic, ntfy, gotify or slack)")
                })?,
                None => Preset::Generic,
            };
            let secret = match (value("secret"), value("secret_file")) {
                (Some(_), Some(_)) => {
                    return Err(bad("secret_file", "give secret or secret_file, not both"))
                }
                (Some(text), None) => Some(Secret::Text(text.to_owned())),
                (None, Some(file)) => Some(Secret::File(
                    path(file).map_err(|reason| bad("secret_file", reason))?,
                )),
                (None, None) => None,
            };
            SinkTarget::Webhook {
                url,
                preset,
                secret,
            }
        }
        "command" => {
            let line = required("command", "missing: a command sink needs its command")?;
            let mut words = command_words(line).map_err(|reason| bad("command", reason))?;
            let program = words.remove(0);
            SinkTarget::Command {
                program,
                args: words,
            }
        }
        "email" => {
            let smtp_url = smtp_url(required(
                "smtp_url",
                "missing: an e-mail sink needs smtp_url (smtp://... or smtps://...)",
            )?)
            .map_err(|reason| bad("smtp_url", reason))?;
            let from = required("from", "missing: an e-mail sink needs a from address")?;
            if !is_mailbox(from) {
                return Err(bad("from", "not an e-mail address (user@example.com)"));
            }
            let to_value = required("to", "missing: an e-mail sink needs to (addresses)")?;
            let to: Vec<String> = to_value
                .split(|c: char| c == ',' || c.is_ascii_whitespace())
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            if to.is_empty() || !to.iter().all(|address| is_mailbox(address)) {
                return Err(bad(
                    "to",
                    "not a list of e-mail addresses (separated by commas)",
                ));
            }
            SinkTarget::Email {
                smtp_url,
                from: from.to_owned(),
                to,
            }
        }
        _ => return Err(bad("kind", "not a sink kind (webhook, command or email)")),
    };
    let only = |keys: &[&'static str]| -> Option<&'static str> {
        keys.iter().find(|key| value(key).is_some()).copied()
    };
    let foreign = match &target {
        SinkTarget::Webhook { .. } => only(&["command", "smtp_url", "from", "to"]),
        SinkTarget::Command { .. } => only(&["url", "preset", "secret", "secret_file", "smtp_url"]),
        SinkTarget::Email { .. } => only(&["url", "preset", "secret", "secret_file", "command"]),
    };
    if let Some(key) = foreign {
        return Err(bad(key, "does not apply to this kind of sink"));
    }

    let mut filter = SinkFilter::all();
    if let Some(v) = value("events") {
        filter.events = events(v).map_err(|reason| bad("events", reason))?;
    }
    if let Some(v) = value("hosts") {
        filter.hosts = v
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|item| !item.is_empty())
            .map(HostGlob::new)
            .collect();
    }
    let mut coalesce = DEFAULT_COALESCE;
    if let Some(v) = value("coalesce") {
        coalesce = duration(v).map_err(|reason| bad("coalesce", reason))?;
    }
    let mut timeout = DEFAULT_DELIVERY_TIMEOUT;
    if let Some(v) = value("timeout") {
        timeout = duration(v)
            .and_then(|d| {
                if d.is_zero() {
                    Err("must be more than 0")
                } else {
                    Ok(d)
                }
            })
            .map_err(|reason| bad("timeout", reason))?;
    }
    Ok(SinkConfig {
        name: name.to_owned(),
        target,
        filter,
        coalesce,
        timeout,
    })
}

/// `events`: kinds separated by commas or spaces.
fn events(value: &str) -> Result<Vec<EventKind>, &'static str> {
    let mut kinds = Vec::new();
    for word in value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
    {
        let kind = EventKind::parse(word)
            .ok_or("not a list of events (changed, new, stale, back, offline, online)")?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

fn web_url(value: &str) -> Result<Url, &'static str> {
    let url = Url::parse(value).map_err(|_| "not a URL (http://... or https://...)")?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("not an http:// or https:// URL with a host");
    }
    Ok(url)
}

fn smtp_url(value: &str) -> Result<Url, &'static str> {
    let url = Url::parse(value).map_err(|_| "not a URL (smtp://HOST:587 or smtps://HOST:465)")?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host().is_none() {
        return Err("not an smtp:// or smtps:// URL with a host");
    }
    if !url.password().unwrap_or_default().is_empty() && url.username().is_empty() {
        return Err("has a password but no user");
    }
    Ok(url)
}

/// A program and its arguments: words separated by whitespace, with `"..."` or `'...'`
/// keeping a word's spaces (and `\` escaping the next character outside single quotes),
/// as a shell would split them; nothing else of a shell (no variables, globs or pipes).
fn command_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a quote (') is not closed"),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().ok_or("ends in a backslash")?),
                        Some(c) => word.push(c),
                        None => return Err("a quote (\") is not closed"),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .push(chars.next().ok_or("ends in a backslash")?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("empty: a command needs a program");
    }
    Ok(words)
}

/// `user@host`, roughly: what SMTP will take as a mailbox.
fn is_mailbox(value: &str) -> bool {
    let value = value
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .unwrap_or(value);
    match value.split_once('@') {
        Some((user, host)) => {
            !user.is_empty()
                && !host.is_empty()
                && !host.contains('@')
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_split_as_a_shell_would_without_its_powers() {
        let words = |line| command_words(line).unwrap();
        assert_eq!(words("/usr/bin/apprise -vv"), ["/usr/bin/apprise", "-vv"]);
        assert_eq!(
            words("a 'b c' \"d \\\" e\" f\\ g"),
            ["a", "b c", "d \" e", "f g"]
        );
        assert_eq!(words("echo $HOME | cat"), ["echo", "$HOME", "|", "cat"]);
        assert_eq!(words("x ''"), ["x", ""]);
        assert!(command_words("   ").is_err());
        assert!(command_words("a 'b").is_err());
        assert!(command_words("a \\").is_err());
    }

    #[test]
    fn mailboxes() {
        assert!(is_mailbox("me@example.com"));
        assert!(is_mailbox("dynip <dynip@example.com>"));
        assert!(!is_mailbox("example.com"));
        assert!(!is_mailbox("a@b@c"));
        assert!(!is_mailbox("me @example.com"));
    }
}
