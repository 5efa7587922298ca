use std::path::Path;

use super::ini::Options;
use super::*;
use crate::model::event::EventKind;
use crate::proto::notify::{HostGlob, Preset, SinkFilter};

/// Parses `input` with the INI layer alone and compares a dump of it (or the error)
/// with `expect`: `[DEFAULT]` first when it has options, then every section in file
/// order, each option as `key = "value"`.
fn check_ini(input: &str, expect: &str) {
    let actual = match Ini::parse(input) {
        Ok(ini) => dump_ini(&ini),
        Err(err) => format!("error: {err}\n"),
    };
    assert_eq!(actual.trim_end(), expect.trim(), "input: {input:?}");
}

fn dump_ini(ini: &Ini) -> String {
    let mut out = String::new();
    let dump_section = |out: &mut String, name: &str, options: &Options| {
        out.push_str(&format!("[{name}]\n"));
        for (key, value) in options.iter() {
            out.push_str(&format!("{key} = {value:?}\n"));
        }
    };
    if ini.defaults.iter().next().is_some() {
        dump_section(&mut out, DEFAULT_SECTION, &ini.defaults);
    }
    for (name, options) in ini.sections.iter() {
        dump_section(&mut out, name, options);
    }
    out
}

/// Parses `input` into a [`Config`] and compares what differs from the defaults, one
/// `field = value` line each, then the warnings, with `expect`; or the error.
fn check(input: &str, expect: &str) {
    let actual = match parse(input) {
        Ok(config) => dump_config(&config),
        Err(err) => format!("error: {err}\n"),
    };
    assert_eq!(actual.trim_end(), expect.trim(), "input: {input:?}");
}

fn dump_config(config: &Config) -> String {
    // Destructured so that a new field does not compile until it is dumped here.
    let Config {
        server:
            ServerConfig {
                server_ip,
                server_port,
                client_log_path,
                store_path,
                key: server_key,
                database_url,
                allow_unsigned,
                allow_from,
                hosts,
                http_listen,
                tls,
                trusted_proxies,
                public_status,
                public_metrics,
                stale_after,
                history_max_age,
                dns,
                notify,
                notify_max_age,
                acme_dns_register,
            },
        client:
            ClientConfig {
                server_hostname,
                server_port: client_server_port,
                hostname,
                key: client_key,
            },
        warnings,
    } = config;
    let server = ServerConfig::default();
    let client = ClientConfig::default();
    let mut out = String::new();
    // One line per field that differs from the default: `side.field = value`.
    macro_rules! field {
        ($side:ident . $field:ident, $value:expr) => {
            if *$value != $side.$field {
                out.push_str(&format!(
                    "{}.{} = {:?}\n",
                    stringify!($side),
                    stringify!($field),
                    $value
                ));
            }
        };
    }
    field!(server.server_ip, server_ip);
    field!(server.server_port, server_port);
    field!(server.client_log_path, client_log_path);
    field!(server.store_path, store_path);
    field!(server.key, server_key);
    field!(server.allow_unsigned, allow_unsigned);
    field!(server.allow_from, allow_from);
    field!(server.hosts, hosts);
    field!(server.http_listen, http_listen);
    field!(server.database_url, database_url);
    field!(server.tls, tls);
    field!(server.trusted_proxies, trusted_proxies);
    field!(server.public_status, public_status);
    field!(server.public_metrics, public_metrics);
    field!(server.stale_after, stale_after);
    field!(server.history_max_age, history_max_age);
    field!(server.dns, dns);
    field!(server.notify, notify);
    field!(server.notify_max_age, notify_max_age);
    field!(server.acme_dns_register, acme_dns_register);
    field!(client.key, client_key);
    field!(client.server_hostname, server_hostname);
    field!(client.server_port, client_server_port);
    field!(client.hostname, hostname);
    for warning in warnings {
        out.push_str(&format!("warning: {warning}\n"));
    }
    out
}

// --- INI layer -------------------------------------------------------------------

#[test]
fn both_delimiters_and_the_first_one_wins() {
    check_ini(
        "[s]\na = 1\nb: 2\nc=3\nd:4\ne = x=y:z\nf: a=b\nurl = http://example.com/\ng:h = i\n",
        r#"
[s]
a = "1"
b = "2"
c = "3"
d = "4"
e = "x=y:z"
f = "a=b"
url = "http://example.com/"
g = "h = i"
"#,
    );
}

#[test]
fn option_names_are_stripped_and_lowercased() {
    check_ini(
        "[s]\nServer_PORT   = 1\nTwo Words\t: 2\n\u{c9}T\u{c9} = 3\n",
        // ASCII-only lowercasing, as on Python 2's byte strings.
        "[s]\nserver_port = \"1\"\ntwo words = \"2\"\n\u{c9}t\u{c9} = \"3\"",
    );
}

#[test]
fn sections_are_case_sensitive_and_kept_as_written() {
    check_ini(
        "[A]\nk = 1\n[a]\nk = 2\n[ spaced ]\nk = 3\n",
        "[A]\nk = \"1\"\n[a]\nk = \"2\"\n[ spaced ]\nk = \"3\"",
    );
}

#[test]
fn header_ends_at_the_first_bracket_and_ignores_the_rest() {
    check_ini(
        "[s] ; the server\na = 1\n[t]x = 2\nb = 3\n[u]v]\n[x = 4\n[]= 5\n",
        r#"
[s]
a = "1"
[t]
b = "3"
[u]
[x = "4"
[] = "5"
"#,
    );
}

#[test]
fn whole_line_comments_and_blank_lines() {
    check_ini(
        "# hash\n; semicolon\n\n   \n\t\n[s]\n#a = 1\n;b = 2\nc = 3\n# d = 4\n",
        "[s]\nc = \"3\"",
    );
}

#[test]
fn rem_lines_are_comments() {
    check_ini(
        "rem before any section\n[s]\nrem a = 1\nREM b = 2\nRem = 3\nrEm\tc\nremark = 4\nrem=5\n",
        // `rem=5`: the first word is `rem=5`, not `rem`.
        "[s]\nremark = \"4\"\nrem = \"5\"",
    );
}

#[test]
fn inline_semicolon_after_whitespace_starts_a_comment() {
    check_ini(
        "[s]\na = x ; comment\nb = x\t;comment\nc = x;not a comment\nd = x;y ;z\ne = ;comment\nf =;kept\ng = x ;\n",
        r#"
[s]
a = "x"
b = "x"
c = "x;not a comment"
d = "x;y ;z"
e = ""
f = ";kept"
g = "x"
"#,
    );
}

#[test]
fn inline_hash_is_not_a_comment() {
    check_ini(
        "[s]\na = x # not a comment\nb = #x\n",
        "[s]\na = \"x # not a comment\"\nb = \"#x\"",
    );
}

#[test]
fn empty_values_and_double_quotes() {
    check_ini(
        "[s]\na =\nb:\nc = \"\"\nd = \"\" ; comment\ne = \"x\"\nf = '\"\"'\ng = \"\"\"\"\nh =   \n",
        r#"
[s]
a = ""
b = ""
c = ""
d = ""
e = "\"x\""
f = "'\"\"'"
g = "\"\"\"\""
h = ""
"#,
    );
}

#[test]
fn percent_is_literal() {
    check_ini(
        "[s]\na = 100%\nb = %(a)s\n",
        "[s]\na = \"100%\"\nb = \"%(a)s\"",
    );
}

#[test]
fn continuation_lines() {
    check_ini(
        "[s]\na = 1\n  2\n\t3 ; not cut\n\n# comment\n   4\n  # indented, so a value line\nb = x ; cut\n y\n",
        r#"
[s]
a = "1\n2\n3 ; not cut\n4\n# indented, so a value line"
b = "x\ny"
"#,
    );
    check_ini("[s]\na =\n  x\n", "[s]\na = \"\\nx\"");
    check_ini("[DEFAULT]\na = 1\n 2\n", "[DEFAULT]\na = \"1\\n2\"");
}

#[test]
fn a_header_closes_the_open_option() {
    check_ini(
        "[s]\na = 1\n[t]\n  2\n",
        r#"error: line 4: expected "key = value" before an indented (continuation) line, found "  2""#,
    );
    check_ini(
        "[s]\n  # indented comment\n",
        r#"error: line 2: expected "key = value" before an indented (continuation) line, found "  # indented comment""#,
    );
}

#[test]
fn repeated_options_and_sections_merge_and_the_last_wins() {
    check_ini(
        "[s]\na = 1\nb = 2\n[t]\nc = 3\n[s]\nA = 10\nd = 4\n",
        r#"
[s]
a = "10"
b = "2"
d = "4"
[t]
c = "3"
"#,
    );
}

#[test]
fn default_section_is_kept_apart() {
    check_ini(
        "[s]\na = 1\n[DEFAULT]\nb = 2\n[default]\nc = 3\n",
        r#"
[DEFAULT]
b = "2"
[s]
a = "1"
[default]
c = "3"
"#,
    );
}

#[test]
fn bom_and_crlf() {
    check_ini(
        "\u{feff}[s]\r\na = 1 ; c\r\nb = x\r\n  y\r\n\r\n# c\r\nc =\r\n",
        "[s]\na = \"1\"\nb = \"x\\ny\"\nc = \"\"",
    );
    check_ini("\u{feff}", "");
}

#[test]
fn python_whitespace_is_ascii_with_vertical_tab() {
    check_ini(
        "[s]\na = \x0bx\x0c\nb = \u{a0}x\u{a0}\n",
        "[s]\na = \"x\"\nb = \"\\u{a0}x\\u{a0}\"",
    );
}

#[test]
fn option_before_any_section_header() {
    check_ini(
        "# comment\n\nserver_port = 1\n[DynIP:Server]\n",
        r#"error: line 3: expected a section header such as "[DynIP:Server]" first, found "server_port = 1""#,
    );
    check_ini(
        "  indented\n",
        r#"error: line 1: expected a section header such as "[DynIP:Server]" first, found "  indented""#,
    );
    // Python 2 did not skip a byte-order mark; we do, and a BOM before an option is
    // still an option before the header.
    check_ini(
        "\u{feff}a = 1\r\n",
        r#"error: line 1: expected a section header such as "[DynIP:Server]" first, found "a = 1""#,
    );
}

#[test]
fn garbage_lines() {
    let expected = |line: usize, text: &str| {
        format!(
            r#"error: line {line}: expected "[section]", "key = value" or "key: value", found {text:?}"#
        )
    };
    check_ini("[s]\na = 1\n\nfoo\n", &expected(4, "foo"));
    check_ini("[s]\n= 1\n", &expected(2, "= 1"));
    check_ini("[s]\n: 1\n", &expected(2, ": 1"));
    check_ini("[s]\n[]\n", &expected(2, "[]"));
    check_ini("[s]\n[x\r\n", &expected(2, "[x"));
    check_ini("[s]\n\u{0}\n", &expected(2, "\u{0}"));
    let long = "\u{e9}".repeat(200);
    check_ini(
        &format!("[s]\n{long}\n"),
        &expected(2, &format!("{}...", "\u{e9}".repeat(MAX_QUOTED_CHARS))),
    );
}

#[test]
fn get_falls_back_to_default() {
    let ini = Ini::parse("[DEFAULT]\na = d\nb = d\n[s]\nb = s\n").expect("valid ini");
    let get = |section, key| {
        ini.get(section, key)
            .map(|found| (found.value.to_owned(), found.from_default))
    };
    assert_eq!(get("s", "a"), Some(("d".to_owned(), true)));
    assert_eq!(get("s", "b"), Some(("s".to_owned(), false)));
    assert_eq!(get("missing", "a"), Some(("d".to_owned(), true)));
    assert_eq!(get("s", "c"), None);
}

// --- Typed layer -----------------------------------------------------------------

#[test]
fn defaults() {
    let config = parse("").expect("empty file");
    assert_eq!(config, Config::default());
    assert_eq!(config.server.server_ip, BindHost::All);
    assert_eq!(config.server.server_port, 28630);
    assert_eq!(config.server.client_log_path, PathBuf::from("dynip.json"));
    assert_eq!(config.server.store_path, PathBuf::from("dynip.sqlite3"));
    assert_eq!(config.client.server_hostname, "localhost");
    assert_eq!(config.client.server_port, 28630);
    assert_eq!(config.client.hostname, None);
    assert!(config.warnings.is_empty());
    // Empty sections are missing sections.
    check("[DynIP:Server]\n[DynIP:Client]\n", "");
}

#[test]
fn original_example_config() {
    check(
        r#"
# DynIP configuration

[DynIP:Server]
# The IP address to listen on; * for all.
server_ip = *
server_port = 28630
; Where the hosts and their addresses are written.
client_log_path = dynip.json

[DynIP:Client]
server_hostname = dynip.example.com
server_port = 28630
"#,
        r#"client.server_hostname = "dynip.example.com""#,
    );
}

#[test]
fn server_ip() {
    check("[DynIP:Server]\nserver_ip = *", "");
    check("[DynIP:Server]\nserver_ip =", "");
    check("[DynIP:Server]\nserver_ip = \"\"", "");
    check(
        "[DynIP:Server]\nserver_ip = 192.0.2.1",
        "server.server_ip = Addr(192.0.2.1)",
    );
    check(
        "[DynIP:Server]\nserver_ip = ::",
        "server.server_ip = Addr(::)",
    );
    check(
        "[DynIP:Server]\nserver_ip = 2001:db8::1",
        "server.server_ip = Addr(2001:db8::1)",
    );
    check(
        "[DynIP:Server]\nserver_ip = [2001:db8::1]",
        "server.server_ip = Addr(2001:db8::1)",
    );
    check(
        "[DynIP:Server]\nserver_ip = dynip.example.com",
        r#"server.server_ip = Name("dynip.example.com")"#,
    );
    check(
        "[DynIP:Server]\nserver_ip = [192.0.2.1]",
        r#"error: [DynIP:Server] server_ip = "[192.0.2.1]": not an IPv6 address in brackets"#,
    );
    check(
        "[DynIP:Server]\nserver_ip = [::1",
        r#"error: [DynIP:Server] server_ip = "[::1": not an IPv6 address in brackets"#,
    );
    check(
        "[DynIP:Server]\nserver_ip = example.com\n  example.org\n",
        r#"error: [DynIP:Server] server_ip = "example.com\nexample.org": not "*", an IP address or a host name"#,
    );
}

#[test]
fn server_port() {
    check("[DynIP:Server]\nserver_port = 0", "server.server_port = 0");
    check("[DynIP:Server]\nserver_port = 1", "server.server_port = 1");
    check(
        "[DynIP:Server]\nserver_port = 65535",
        "server.server_port = 65535",
    );
    for bad in [
        "abc",
        "65536",
        "-1",
        "",
        "1 2",
        "0x10",
        "99999999999999999999",
    ] {
        check(
            &format!("[DynIP:Server]\nserver_port = {bad}"),
            &format!("error: [DynIP:Server] server_port = {bad:?}: not a port number (0-65535)"),
        );
    }
}

#[test]
fn client_server_port() {
    check("[DynIP:Client]\nserver_port = 1", "client.server_port = 1");
    check(
        "[DynIP:Client]\nserver_port = 65535",
        "client.server_port = 65535",
    );
    for bad in ["0", "abc", "65536", "-1", ""] {
        check(
            &format!("[DynIP:Client]\nserver_port = {bad}"),
            &format!("error: [DynIP:Client] server_port = {bad:?}: not a port number (1-65535)"),
        );
    }
}

// The server's paths, written with Unix separators (Windows joins with `\`).
#[cfg(unix)]
#[test]
fn client_log_path_and_store_path() {
    check(
        "[DynIP:Server]\nclient_log_path = /var/lib/dynip/hosts.json",
        r#"
server.client_log_path = "/var/lib/dynip/hosts.json"
server.store_path = "/var/lib/dynip/dynip.sqlite3"
"#,
    );
    check(
        "[DynIP:Server]\nclient_log_path = data/hosts.json",
        r#"
server.client_log_path = "data/hosts.json"
server.store_path = "data/dynip.sqlite3"
"#,
    );
    check(
        "[DynIP:Server]\nclient_log_path = hosts.json",
        r#"server.client_log_path = "hosts.json""#,
    );
    check(
        "[DynIP:Server]\nclient_log_path = /hosts.json",
        r#"
server.client_log_path = "/hosts.json"
server.store_path = "/dynip.sqlite3"
"#,
    );
    check(
        "[DynIP:Server]\nclient_log_path = /var/lib/dynip/hosts.json\nstore_path = /srv/store.db",
        r#"
server.client_log_path = "/var/lib/dynip/hosts.json"
server.store_path = "/srv/store.db"
"#,
    );
    check(
        "[DynIP:Server]\nstore_path = store.db",
        r#"server.store_path = "store.db""#,
    );
    check(
        "[DynIP:Server]\nclient_log_path =",
        r#"error: [DynIP:Server] client_log_path = "": must not be empty"#,
    );
    check(
        "[DynIP:Server]\nstore_path = \"\"",
        r#"error: [DynIP:Server] store_path = "": must not be empty"#,
    );
}

#[test]
fn default_store_path_is_beside_the_client_log() {
    let cases = [
        ("dynip.json", "dynip.sqlite3"),
        ("/var/lib/dynip/hosts.json", "/var/lib/dynip/dynip.sqlite3"),
        ("./hosts.json", "./dynip.sqlite3"),
        ("/", "/dynip.sqlite3"),
        ("", "dynip.sqlite3"),
    ];
    for (client_log_path, store_path) in cases {
        assert_eq!(
            default_store_path(Path::new(client_log_path)),
            PathBuf::from(store_path),
            "{client_log_path:?}"
        );
    }
}

#[test]
fn client_server_hostname() {
    check(
        "[DynIP:Client]\nserver_hostname = dynip.example.com",
        r#"client.server_hostname = "dynip.example.com""#,
    );
    // Empty is the caller's to refuse (exit 4, as the original).
    check(
        "[DynIP:Client]\nserver_hostname =",
        r#"client.server_hostname = """#,
    );
}

#[test]
fn client_hostname() {
    check("[DynIP:Client]\nhostname =", "");
    check("[DynIP:Client]\nhostname = \"\"", "");
    check(
        "[DynIP:Client]\nhostname = kitchen-pc",
        r#"client.hostname = Some("kitchen-pc")"#,
    );
    // Kept as written: the caller validates it as a host name.
    check(
        "[DynIP:Client]\nhostname = Kitchen PC",
        r#"client.hostname = Some("Kitchen PC")"#,
    );
}

#[test]
fn keys_are_case_insensitive_and_sections_are_not() {
    check(
        "[DynIP:Server]\nSERVER_PORT = 1\n[DynIP:Client]\nServer_Hostname: h\n",
        "server.server_port = 1\nclient.server_hostname = \"h\"",
    );
    check(
        "[dynip:server]\nserver_port = 1\n[DynIP:client]\n",
        r#"
warning: unknown section [dynip:server], ignored (did you mean [DynIP:Server]? section names are exact)
warning: unknown section [DynIP:client], ignored (did you mean [DynIP:Client]? section names are exact)
"#,
    );
}

#[test]
fn default_section_fills_in_and_is_overridden() {
    check(
        "[DEFAULT]\nserver_port = 1000\n[DynIP:Server]\n[DynIP:Client]\n",
        "server.server_port = 1000\nclient.server_port = 1000",
    );
    check(
        "[DEFAULT]\nserver_port = 1000\n[DynIP:Server]\nserver_port = 2000\n",
        "server.server_port = 2000\nclient.server_port = 1000",
    );
    // Also for a missing section.
    check(
        "[DEFAULT]\nserver_hostname = h\n",
        r#"client.server_hostname = "h""#,
    );
    // The server's paths, written with Unix separators (Windows joins with `\`).
    #[cfg(unix)]
    check(
        "[DEFAULT]\nclient_log_path = /d/hosts.json\n",
        r#"
server.client_log_path = "/d/hosts.json"
server.store_path = "/d/dynip.sqlite3"
"#,
    );
    // A bad value from [DEFAULT] names both sections.
    check(
        "[DEFAULT]\nserver_port = 0\n",
        r#"error: [DynIP:Client] server_port = "0" (from [DEFAULT]): not a port number (1-65535)"#,
    );
}

#[test]
fn duplicate_sections_merge() {
    check(
        "[DynIP:Server]\nserver_port = 1\nserver_ip = ::1\n[DynIP:Client]\n[DynIP:Server]\nserver_port = 2\n",
        "server.server_ip = Addr(::1)\nserver.server_port = 2",
    );
}

#[test]
fn first_bad_value_in_table_order() {
    check(
        "[DynIP:Client]\nserver_port = x\n[DynIP:Server]\nclient_log_path =\nserver_port = x\n",
        r#"error: [DynIP:Server] server_port = "x": not a port number (0-65535)"#,
    );
}

#[test]
fn long_values_are_cut_in_errors() {
    let long = "9".repeat(200);
    check(
        &format!("[DynIP:Server]\nserver_port = {long}"),
        &format!(
            "error: [DynIP:Server] server_port = \"{}...\": not a port number (0-65535)",
            "9".repeat(MAX_QUOTED_CHARS)
        ),
    );
}

#[test]
fn warnings() {
    check(
        r#"
[DEFAULT]
server_port = 1000
server_hostname = h
colour = blue
[DynIP:Server]
foo = 1
zone = abc
[Foo]
x = 1
[DynIP:Client]
server_ip = *
[DynIP:Server]
bar = 2
"#,
        r#"
server.server_port = 1000
client.server_hostname = "h"
client.server_port = 1000
warning: unknown key "colour" in [DEFAULT], ignored
warning: unknown key "foo" in [DynIP:Server], ignored
warning: unknown key "zone" in [DynIP:Server], ignored
warning: unknown key "bar" in [DynIP:Server], ignored
warning: unknown section [Foo], ignored
warning: unknown key "server_ip" in [DynIP:Client], ignored
"#,
    );
}

#[test]
fn http_keys() {
    check(
        "[DynIP:Server]\nhttp_listen = [::]:8080\ntls_cert = c.pem\ntls_key = k.pem\n\
         trusted_proxies = 127.0.0.1, ::1\npublic_status = yes\nstale_after = 2h 30m\n\
         history_max_age = 30d\n",
        r#"
server.http_listen = Some([::]:8080)
server.tls = Some(TlsFiles { cert: "c.pem", key: "k.pem" })
server.trusted_proxies = Some([127.0.0.1/32, ::1/128])
server.public_status = true
server.stale_after = 9000s
server.history_max_age = Some(2592000s)
"#,
    );
    check(
        "[DynIP:Server]\nhistory_max_age = 0\n",
        "error: [DynIP:Server] history_max_age = \"0\": must be longer than zero",
    );
    check(
        "[DynIP:Server]\nhttp_listen = localhost:80\n",
        "error: [DynIP:Server] http_listen = \"localhost:80\": not ADDRESS:PORT (e.g. 0.0.0.0:8080, [::]:8080, 127.0.0.1:8080)",
    );
    check(
        "[DynIP:Server]\ntls_key = k.pem\n",
        "error: [DynIP:Server] tls_key = \"k.pem\": tls_cert and tls_key go together: set both, or neither",
    );
    check(
        "[DynIP:Server]\nstale_after = 0s\n",
        "error: [DynIP:Server] stale_after = \"0s\": must be longer than zero",
    );
    check(
        "[DynIP:Server]\nstale_after = soon\n",
        "error: [DynIP:Server] stale_after = \"soon\": not a duration (e.g. 60, 90s, 5m, 1h, 1w)",
    );
}

#[test]
fn parse_bool_is_getboolean() {
    for word in ["1", "yes", "true", "on", "YES", "True", "oN"] {
        assert_eq!(parse_bool(word), Some(true), "{word:?}");
    }
    for word in ["0", "no", "false", "off", "NO", "False", "OFF"] {
        assert_eq!(parse_bool(word), Some(false), "{word:?}");
    }
    for word in ["", "2", "y", "n", "t", "enabled", " yes", "yes ", "on\n"] {
        assert_eq!(parse_bool(word), None, "{word:?}");
    }
}

#[test]
fn nasty_inputs_never_panic() {
    let nasty = [
        "",
        "[",
        "]",
        "=",
        ":",
        ";",
        "[]",
        "[]]",
        "[[]]",
        "\u{feff}",
        "\u{feff}\u{feff}",
        "\0",
        "[\0]\n\0=\0\n \0",
        "[DynIP:Server]\nserver_port = \0",
        "[DynIP:Server]\nserver_ip = [",
        "[DynIP:Server]\nserver_ip = []",
        "[DynIP:Server]\nserver_ip = ]",
        "[DynIP:Server]\nclient_log_path = \0",
        "\r",
        "\r\n\r\n",
        "\n\n\n",
        " ",
        " x",
        "[a]\n x",
        "[a]\nx=;",
        "[a]\nx= ;",
        "[a]\nx=\u{e9};",
        "[a]\n\u{e9}",
        "[\u{e9}\u{301}]",
        "r",
        "rem",
        "R\u{e9}m",
        "[DEFAULT]",
        "[DEFAULT]\n=",
        "[DynIP:Server]\n\u{2028}= x",
        &"[".repeat(1000),
        &"é".repeat(1000),
    ];
    for input in nasty {
        // Either answer is fine; a panic fails the test.
        let _ = parse(input);
    }
}

#[test]
fn template_is_the_defaults_with_the_key() {
    let key = Key::from_bytes([7; 32]);
    let mut config = parse(&template(&key)).unwrap();
    assert_eq!(config.warnings, Vec::<String>::new());
    assert_eq!(config.server.key.take(), Some(key.clone()));
    assert_eq!(config.client.key.take(), Some(key));
    assert_eq!(config, Config::default());
}

#[test]
fn template_in_a_state_dir_puts_both_files_there() {
    let key = Key::from_bytes([7; 32]);
    for dir in ["/var/lib/dynip", "/var/lib/dynip/"] {
        let config = parse(&template_in(&key, dir)).unwrap();
        assert_eq!(config.warnings, Vec::<String>::new());
        assert_eq!(
            config.server.client_log_path,
            PathBuf::from("/var/lib/dynip/dynip.json")
        );
        assert_eq!(
            config.server.store_path,
            PathBuf::from("/var/lib/dynip/dynip.sqlite3")
        );
        assert_eq!(config.server.key, Some(key.clone()));
    }
    let root = parse(&template_in(&key, "/")).unwrap();
    assert_eq!(root.server.store_path, PathBuf::from("/dynip.sqlite3"));
}

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn reads_keys_and_who_may_report() {
    check(
        &format!("[DynIP:Server]\nkey = {KEY}\n[DynIP:Client]\nkey = {KEY}\n"),
        "server.key = Some(Key(id 693e81472a1cbb6a))\nclient.key = Some(Key(id 693e81472a1cbb6a))",
    );
    check(
        &format!("[DynIP:Hosts]\nKitchen-PC = {KEY}\n"),
        "server.hosts = [(\"kitchen-pc\", Key(id 693e81472a1cbb6a))]",
    );
    check(
        "[DynIP:Server]\nallow_unsigned = Yes\nallow_from = 192.0.2.0/24, 2001:db8::/32 10.0.0.1\n",
        "server.allow_unsigned = Some(true)\nserver.allow_from = Some([192.0.2.0/24, 2001:db8::/32, 10.0.0.1/32])",
    );
    check(
        "[DynIP:Server]\nkey = abc\n",
        "error: [DynIP:Server] key = \"abc\": not a key (base64 of 32 bytes, as `dynip init` and `dynip add-host` write)",
    );
    check(
        "[DynIP:Hosts]\nbad..name = x\n",
        "error: [DynIP:Hosts] bad..name = \"x\": not a valid host name",
    );
    check(
        "[DynIP:Hosts]\npc =\n",
        "error: [DynIP:Hosts] pc = \"\": empty: a host needs its key",
    );
    check(
        "[DynIP:Server]\nallow_from = 192.0.2.0/33\n",
        "error: [DynIP:Server] allow_from = \"192.0.2.0/33\": not a list of addresses or networks (e.g. 192.0.2.0/24, 2001:db8::/32)",
    );
    check(
        "[DynIP:Server]\nallow_unsigned = maybe\n",
        "error: [DynIP:Server] allow_unsigned = \"maybe\": not yes/no (also true/false, on/off, 1/0)",
    );
}

#[test]
fn unsigned_reports_follow_the_keys() {
    let accepts = |text: &str| parse(text).unwrap().server.accepts_unsigned();
    assert!(accepts(""));
    assert!(!accepts(&format!("[DynIP:Server]\nkey = {KEY}\n")));
    assert!(!accepts(&format!("[DynIP:Hosts]\npc = {KEY}\n")));
    assert!(accepts(&format!(
        "[DynIP:Server]\nkey = {KEY}\nallow_unsigned = yes\n"
    )));
    assert!(!accepts("[DynIP:Server]\nallow_unsigned = no\n"));
}

#[test]
fn dns_keys_read_and_refuse() {
    let dns = |text: &str| parse(text).unwrap().server.dns;
    let read = dns(
        "[DynIP:Server]\ndns_listen = 127.0.0.1:5353\ndns_zone = Dyn.Example.COM.\n\
         dns_ttl = 30\ndns_ns = ns1.example.net, ns2.dyn.example.com\n\
         dns_soa_contact = admin@example.com\ndns_soa_refresh = 10m\n\
         dns_transfer_to = 127.0.0.1, 192.0.2.0/24\ndns_notify = 127.0.0.1:5300 [::1]\n\
         dns_hide_stale = yes\ndns_rate_limit = 0\ndns_threads = 2\ndns_txt_ttl = 1m\n",
    );
    assert_eq!(read.txt_ttl, Duration::from_secs(60));
    assert_eq!(read.listen, Some("127.0.0.1:5353".parse().unwrap()));
    assert_eq!(read.zone.as_deref(), Some("dyn.example.com"));
    assert_eq!(read.ttl, Duration::from_secs(30));
    assert_eq!(read.ns, ["ns1.example.net", "ns2.dyn.example.com"]);
    assert_eq!(read.soa_contact.as_deref(), Some("admin.example.com"));
    assert_eq!(read.soa_refresh, Duration::from_secs(600));
    assert_eq!(read.transfer_to.map(|nets| nets.len()), Some(2));
    assert_eq!(
        read.notify,
        [
            "127.0.0.1:5300".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(read.hide_stale);
    assert_eq!(read.rate_limit, 0);
    assert_eq!(read.threads, 2);
    let stale = parse("[DynIP:Server]\nstale_after = 90m\n").unwrap();
    assert_eq!(stale.server.stale_after, Duration::from_secs(5400));
    check(
        "[DynIP:Server]\ndns_listen = 127.0.0.1:53\n",
        "error: [DynIP:Server] dns_listen = \"127.0.0.1:53\": needs dns_zone, the zone to answer for (e.g. dns_zone = dyn.example.com)",
    );
    check(
        "[DynIP:Server]\ndns_listen = 127.0.0.1\n",
        "error: [DynIP:Server] dns_listen = \"127.0.0.1\": not ADDR:PORT (e.g. 127.0.0.1:53, [::]:53)",
    );
    check(
        "[DynIP:Server]\ndns_zone = bad..zone\n",
        "error: [DynIP:Server] dns_zone = \"bad..zone\": not a domain name (e.g. dyn.example.com)",
    );
    check(
        "[DynIP:Server]\nacme_dns_register = open\n",
        "server.acme_dns_register = Open",
    );
    check(
        "[DynIP:Server]\nacme_dns_register = maybe\n",
        "error: [DynIP:Server] acme_dns_register = \"maybe\": not no, key or open",
    );
    check(
        "[DynIP:Server]\ndns_ttl = soon\n",
        "error: [DynIP:Server] dns_ttl = \"soon\": not a duration (e.g. 60, 90s, 5m, 1h, 1w)",
    );
}

#[test]
fn notify_sinks_are_read_with_their_defaults() {
    let config = parse(
        "[DynIP:Server]\nnotify_max_age = 2h\n\
         [DynIP:Notify:chat]\nkind = webhook\nurl = https://ntfy.example.com/home\npreset = ntfy\n\
         secret = s3cret\nevents = changed, stale back\nhosts = kitchen-* pc?\ncoalesce = 0\n\
         [DynIP:Notify:hook]\nkind = command\ncommand = /usr/bin/apprise -b 'a b'\ntimeout = 30s\n\
         [DynIP:Notify:mail]\nkind = email\nsmtp_url = smtps://me:pw@mail.example.com\n\
         from = dynip@example.com\nto = a@example.com, b@example.com\n",
    )
    .unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.server.notify_max_age, Duration::from_secs(7200));
    let [chat, hook, mail] = &config.server.notify[..] else {
        panic!("three sinks: {:?}", config.server.notify);
    };
    assert_eq!(chat.name, "chat");
    assert!(matches!(
        &chat.target,
        SinkTarget::Webhook { url, preset: Preset::Ntfy, secret: Some(Secret::Text(secret)) }
            if url.as_str() == "https://ntfy.example.com/home" && secret == "s3cret"
    ));
    assert_eq!(
        chat.filter.events,
        [EventKind::Changed, EventKind::Stale, EventKind::Back]
    );
    assert_eq!(
        chat.filter.hosts,
        [HostGlob::new("kitchen-*"), HostGlob::new("pc?")]
    );
    assert_eq!(chat.coalesce, Duration::ZERO);
    assert_eq!(chat.timeout, DEFAULT_DELIVERY_TIMEOUT);
    assert_eq!(
        hook.target,
        SinkTarget::Command {
            program: "/usr/bin/apprise".into(),
            args: vec!["-b".into(), "a b".into()]
        }
    );
    assert_eq!(hook.filter, SinkFilter::all());
    assert_eq!(hook.coalesce, DEFAULT_COALESCE);
    assert_eq!(hook.timeout, Duration::from_secs(30));
    assert!(matches!(
        &mail.target,
        SinkTarget::Email { smtp_url, from, to }
            if smtp_url.scheme() == "smtps" && from == "dynip@example.com"
                && to == &["a@example.com", "b@example.com"]
    ));
}

#[test]
fn bad_notify_sinks_name_the_key() {
    let sink = |body: &str| {
        parse(&format!("[DynIP:Notify:x]\n{body}"))
            .unwrap_err()
            .to_string()
    };
    for (body, expect) in [
        ("url = http://h/", "[DynIP:Notify:x] kind = \"\": missing"),
        (
            "kind = pigeon",
            "[DynIP:Notify:x] kind = \"pigeon\": not a sink kind",
        ),
        ("kind = webhook", "[DynIP:Notify:x] url = \"\": missing"),
        (
            "kind = webhook\nurl = ftp://h/",
            "[DynIP:Notify:x] url = \"ftp://h/\": not an http",
        ),
        (
            "kind = webhook\nurl = h",
            "[DynIP:Notify:x] url = \"h\": not a URL",
        ),
        (
            "kind = webhook\nurl = http://h/\npreset = teams",
            "preset = \"teams\": not a preset",
        ),
        (
            "kind = webhook\nurl = http://h/\nsecret = a\nsecret_file = /b",
            "secret_file = \"/b\": give secret or secret_file",
        ),
        (
            "kind = webhook\nurl = http://h/\ncommand = x",
            "command = \"x\": does not apply",
        ),
        ("kind = command\ncommand = 'x", "command = \"'x\": a quote"),
        (
            "kind = email\nsmtp_url = http://h\nfrom = a@b\nto = c@d",
            "smtp_url = \"http://h\": not an smtp",
        ),
        (
            "kind = email\nsmtp_url = smtp://h\nfrom = a@b\nto = c",
            "to = \"c\": not a list of e-mail",
        ),
        (
            "kind = email\nsmtp_url = smtp://h\nto = c@d",
            "from = \"\": missing",
        ),
        (
            "kind = command\ncommand = x\nevents = changed moved",
            "events = \"changed moved\": not a list of events",
        ),
        (
            "kind = command\ncommand = x\ncoalesce = soon",
            "coalesce = \"soon\"",
        ),
        (
            "kind = command\ncommand = x\ntimeout = 0",
            "timeout = \"0\": must be more than 0",
        ),
    ] {
        let error = sink(body);
        assert!(error.contains(expect), "{body:?}: {error}");
    }
    let error = parse("[DynIP:Notify:a b]\nkind = command\ncommand = x\n").unwrap_err();
    assert!(error.to_string().contains("the sink's name"), "{error}");
}

#[test]
fn unknown_keys_of_a_sink_are_warnings() {
    let config = parse("[DynIP:Notify:x]\nkind = command\ncommand = x\ncolour = red\n").unwrap();
    assert_eq!(
        config.warnings,
        ["unknown key \"colour\" in [DynIP:Notify:x], ignored"]
    );
}

#[test]
fn server_hostname_may_list_several_servers_each_with_a_port() {
    let config = parse(
        "[DynIP:Client]\nserver_port = 5000\n\
         server_hostname = one.example.net, 192.0.2.1:6000 [2001:db8::1]:7000\n\
         \t2001:db8::2 two.example.net:8000 [2001:db8::3]\n",
    )
    .unwrap();
    let servers: Vec<(String, u16)> = config.client.servers();
    let expect: Vec<(String, u16)> = [
        ("one.example.net", 5000),
        ("192.0.2.1", 6000),
        ("2001:db8::1", 7000),
        ("2001:db8::2", 5000),
        ("two.example.net", 8000),
        ("2001:db8::3", 5000),
    ]
    .iter()
    .map(|(host, port)| ((*host).to_owned(), *port))
    .collect();
    assert_eq!(servers, expect);
    let one = parse("[DynIP:Client]\nserver_hostname = dynip.example.com\n").unwrap();
    assert_eq!(
        one.client.servers(),
        [("dynip.example.com".to_owned(), 28630)]
    );
    let empty = parse("[DynIP:Client]\nserver_hostname =\n").unwrap();
    assert!(empty.client.servers().is_empty());
}

#[test]
fn a_database_url_is_never_shown_with_its_password() {
    let url =
        DatabaseUrl::parse("postgres://dynip:s3cret@db.example.com:5433/dynip?sslmode=require")
            .unwrap();
    assert_eq!(
        url.shown(),
        "postgres://dynip:…@db.example.com:5433/dynip?sslmode=require"
    );
    assert!(!format!("{url:?}").contains("s3cret"));
    let config = parse("[DynIP:Server]\ndatabase_url = postgresql://dynip@db/dynip\n").unwrap();
    assert_eq!(
        config.server.database_url.map(|url| url.shown()),
        Some("postgresql://dynip@db/dynip".to_string())
    );
    for bad in ["mysql://db/dynip", "postgres://", "/var/lib/dynip.sqlite3"] {
        let err = parse(&format!("[DynIP:Server]\ndatabase_url = {bad}\n")).unwrap_err();
        assert!(
            err.to_string().contains("not a postgres:// URL"),
            "{bad}: {err}"
        );
    }
}
