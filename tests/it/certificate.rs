//! Real certificates through the RFC 2136 face: Pebble (Debian's `pebble`, the ACME test
//! server) resolves through dynip, checks the DNS-01 challenge there, and issues a
//! certificate for `kitchen-pc.dyn.example.com` to lego (`rfc2136` provider) and to
//! certbot (`--dns-rfc2136`), each signing its updates with the host's own key, and to
//! certbot again through the acme-dns API (PyPI's certbot-dns-acmedns, in the venv
//! `.ci/run` makes: Debian's lego is built without its acme-dns provider), with an
//! account registered with the host's key. The certificate names the host and chains to that Pebble's root, the
//! RFC 2136 clients' cleanup leaves no `_acme-challenge` TXT record behind (acme-dns
//! has no delete: the account's latest values stay), and the host's key gets no
//! certificate for another host's name.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use dynip::model::key::Key;

use crate::dns::{ask, ZONE};
use crate::harness::*;

/// The host whose key signs the clients' updates, and whose name the certificate is for.
const HOST: &str = "kitchen-pc";
/// How long one client may take for a whole issuance: account, order, two updates,
/// validation, finalisation. Pebble answers at once (`PEBBLE_VA_NOSLEEP`); the rest is
/// lego's and certbot's start-up and polling on two loaded cores, well under a minute.
const CLIENT_LIMIT: Duration = Duration::from_secs(120);
/// How many lines of a client's log a failing test shows.
const MAX_LOG_LINES: usize = 80;

/// A server with the shared key `shared`, [`HOST`]'s own key `host`, DNS for [`ZONE`]
/// and HTTP ([`crate::update::start`]); returns it with its DNS address.
fn start(dir: &Dir, shared: &Key, host: &Key) -> (ServerProcess, SocketAddr) {
    let (server, dns, _) = crate::update::start(dir, shared, host, "");
    (server, dns)
}

/// Pebble as a child process, its config, TLS certificate and log in the test's dir,
/// listening on loopback and resolving through `dns`. Killed on drop.
struct Pebble {
    child: Child,
    /// The ACME directory URL.
    directory: String,
    /// The management interface, which hands out the root of the certificates Pebble
    /// issues (a new one each run).
    management: SocketAddr,
    /// Pebble's own TLS certificate (self-signed), the trust anchor the clients get for
    /// its HTTPS listeners.
    tls_cert: PathBuf,
    log: PathBuf,
}

impl Pebble {
    /// Starts Pebble with DNS-01 checked against `dns`, and waits for both of its
    /// listeners.
    ///
    /// # Panics
    /// When Pebble exits or does not listen within [`TIMEOUT`].
    fn start(dir: &Dir, dns: SocketAddr) -> Pebble {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate Pebble's TLS certificate");
        dir.write("pebble-cert.pem", certified.cert.pem());
        dir.write("pebble-key.pem", certified.key_pair.serialize_pem());
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // Pebble offers HTTP-01 and TLS-ALPN-01 too, which the clients leave alone: free
        // ports all the same, so that no other program here could answer those.
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        dir.write("pebble.json", config.to_string());
        let log = dir.join("pebble.log");
        let log_file = std::fs::File::create(&log).expect("create pebble.log");
        let child = command("pebble", dir.path())
            .args(["-config", "pebble.json", "-dnsserver", &dns.to_string()])
            // No random sleep before a validation, and no nonce rejected for practice.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("pebble.log for stdout"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn pebble (Debian package pebble): {e}"));
        let mut pebble = Pebble {
            child,
            directory: format!("https://{listen}/dir"),
            management,
            tls_cert: dir.join("pebble-cert.pem"),
            log,
        };
        for addr in [listen, management] {
            eventually(&format!("Pebble to listen on {addr}"), || {
                if let Some(status) = pebble.child.try_wait().expect("try_wait pebble") {
                    panic!("pebble exited ({status}) before listening");
                }
                TcpStream::connect(addr).ok().map(drop)
            });
        }
        pebble
    }

    /// Pebble's root certificate, written to `root.pem` in `dir`; its path.
    fn root(&self, dir: &Dir) -> PathBuf {
        let path = dir.join("root.pem");
        let out = run(
            "curl",
            &[
                "--silent",
                "--show-error",
                "--fail",
                "--cacert",
                &self.tls_cert.to_string_lossy(),
                "--output",
                &path.to_string_lossy(),
                &format!("https://{}/roots/0", self.management),
            ],
            dir.path(),
        );
        assert_eq!(out.code, 0, "Pebble's root: {out:?}");
        path
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}", tail(&self.log(), MAX_LOG_LINES));
        }
    }
}

/// The last `n_lines` lines of `text`.
fn tail(text: &str, n_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n_lines)..].join("\n")
}

/// The certificate's name: the host in [`ZONE`].
fn domain() -> String {
    format!("{HOST}.{ZONE}")
}

/// Checks that the first certificate in `cert` names exactly [`domain`], and that it
/// chains through the intermediate in `chain` to `root`, Pebble's root of this run.
fn assert_issued(dir: &Dir, cert: &Path, chain: &Path, root: &Path) {
    assert!(cert.is_file(), "no certificate at {}", cert.display());
    let cert_arg = cert.to_string_lossy();
    let text = run(
        "openssl",
        &["x509", "-noout", "-text", "-in", &cert_arg],
        dir.path(),
    );
    assert_eq!(text.code, 0, "{text:?}");
    let names = text
        .stdout
        .lines()
        .skip_while(|line| !line.contains("X509v3 Subject Alternative Name:"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no subjectAltName in\n{}", text.stdout));
    assert_eq!(names, format!("DNS:{}", domain()), "{}", text.stdout);
    let verify = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &root.to_string_lossy(),
            "-untrusted",
            &chain.to_string_lossy(),
            &cert_arg,
        ],
        dir.path(),
    );
    assert_eq!(verify.code, 0, "{verify:?}\n{}", text.stdout);
}

/// Checks that nothing is left at the challenge's name: the clients delete their TXT
/// records once the order is done.
fn assert_no_challenge_left(dir: &Dir, dns: SocketAddr) {
    let challenge = format!("_acme-challenge.{}", domain());
    let answer = ask(dir, "dig", dns, &[&challenge, "TXT"]);
    // Nothing else is at that name, so it is gone: NXDOMAIN, not an empty answer.
    assert_eq!(
        answer.status, "NXDOMAIN",
        "a TXT record left behind:\n{}",
        answer.text
    );
}

/// Runs lego for a certificate for `domain` from `pebble`, its updates to `dns` signed
/// with [`HOST`]'s key `host` (hmac-sha256), its state in `lego/` in `dir`.
fn lego(dir: &Dir, pebble: &Pebble, dns: SocketAddr, host: &Key, domain: &str) -> Output {
    // lego finds the zone by asking its resolvers for the SOA (dynip, here), and by
    // default also checks the TXT record at the zone's NS names on port 53, which a
    // server on another port cannot be: `--dns.disable-cp` leaves that out.
    run_command_within(
        command("lego", dir.path())
            .args([
                "--accept-tos",
                "--email",
                "admin@kitchen-pc.dyn.example.com",
                "--server",
                &pebble.directory,
                "--path",
                &dir.join("lego").to_string_lossy(),
                "--dns",
                "rfc2136",
                "--dns.resolvers",
                &dns.to_string(),
                "--dns.disable-cp",
                "--domains",
                domain,
                "run",
            ])
            .env("LEGO_CA_CERTIFICATES", &pebble.tls_cert)
            .env("RFC2136_NAMESERVER", dns.to_string())
            .env("RFC2136_TSIG_KEY", HOST)
            .env("RFC2136_TSIG_SECRET", host.encode())
            .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
            .env("RFC2136_POLLING_INTERVAL", "1")
            .env("RFC2136_PROPAGATION_TIMEOUT", "30"),
        CLIENT_LIMIT,
    )
}

/// Runs certbot (`program` and its first `args`: the Debian command, or the acme-dns
/// venv's Python) for a certificate for [`domain`] from `pebble`, its state in `certbot/`
/// in `dir`, with `plugin` (the authenticator's arguments) after the common ones; checks
/// it succeeded (showing its log if not) and that the certificate is Pebble's for the
/// host.
fn certbot(dir: &Dir, pebble: &Pebble, program: &[&str], plugin: &[&str]) {
    let certbot_dir = dir.join("certbot");
    let config_dir = certbot_dir.join("config");
    let logs_dir = certbot_dir.join("logs");
    let out = run_command_within(
        command(program[0], dir.path())
            .args(&program[1..])
            .args([
                "certonly",
                "--non-interactive",
                "--agree-tos",
                "--register-unsafely-without-email",
                "--server",
                &pebble.directory,
                "--config-dir",
                &config_dir.to_string_lossy(),
                "--work-dir",
                &certbot_dir.join("work").to_string_lossy(),
                "--logs-dir",
                &logs_dir.to_string_lossy(),
                "--domain",
                &domain(),
            ])
            .args(plugin)
            .env("REQUESTS_CA_BUNDLE", &pebble.tls_cert),
        CLIENT_LIMIT,
    );
    assert_eq!(
        out.code,
        0,
        "certbot failed:\n{}\n{}\n--- letsencrypt.log ---\n{}",
        out.stdout,
        out.stderr,
        tail(
            &std::fs::read_to_string(logs_dir.join("letsencrypt.log")).unwrap_or_default(),
            MAX_LOG_LINES
        )
    );
    let live = config_dir.join("live").join(domain());
    let root = pebble.root(dir);
    assert_issued(dir, &live.join("cert.pem"), &live.join("chain.pem"), &root);
}

#[test]
fn lego_gets_a_certificate_for_the_hosts_name_only() {
    if !peers_present(
        "certificate::lego_gets_a_certificate_for_the_hosts_name_only",
        &["pebble", "lego", "openssl", "curl", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(81), test_key(82));
    let (_server, dns) = start(&dir, &shared, &host);
    let pebble = Pebble::start(&dir, dns);
    let certificates = dir.join("lego").join("certificates");
    // Another host's name: its TXT record is not this key's to add, and no certificate
    // comes of it.
    let nas = format!("nas.{ZONE}");
    let refused = lego(&dir, &pebble, dns, &host, &nas);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.code != 0 && said.contains("server replied: REFUSED"),
        "{said}"
    );
    assert!(!certificates.join(format!("{nas}.crt")).exists());
    let out = lego(&dir, &pebble, dns, &host, &domain());
    assert_eq!(out.code, 0, "lego failed:\n{}\n{}", out.stdout, out.stderr);
    let root = pebble.root(&dir);
    assert_issued(
        &dir,
        &certificates.join(format!("{}.crt", domain())),
        &certificates.join(format!("{}.issuer.crt", domain())),
        &root,
    );
    assert_no_challenge_left(&dir, dns);
}

#[test]
fn certbot_gets_a_certificate_with_the_hosts_key() {
    if !peers_present(
        "certificate::certbot_gets_a_certificate_with_the_hosts_key",
        &["pebble", "certbot", "openssl", "curl", "dig"],
    ) {
        return;
    }
    let dir = Dir::new();
    let (shared, host) = (test_key(83), test_key(84));
    let (_server, dns) = start(&dir, &shared, &host);
    let pebble = Pebble::start(&dir, dns);
    // The plugin (Debian's python3-certbot-dns-rfc2136) finds the zone with signed SOA
    // queries to this server, then adds and deletes the TXT record over TCP.
    dir.write(
        "rfc2136.ini",
        format!(
            "dns_rfc2136_server = {}\ndns_rfc2136_port = {}\ndns_rfc2136_name = {HOST}\n\
             dns_rfc2136_secret = {}\ndns_rfc2136_algorithm = HMAC-MD5\n",
            dns.ip(),
            dns.port(),
            host.encode()
        ),
    );
    let credentials = dir.join("rfc2136.ini");
    // certbot warns about a credentials file others can read.
    std::fs::set_permissions(
        &credentials,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod the credentials");
    certbot(
        &dir,
        &pebble,
        &["certbot"],
        &[
            "--dns-rfc2136",
            "--dns-rfc2136-credentials",
            &credentials.to_string_lossy(),
            "--dns-rfc2136-propagation-seconds",
            "1",
        ],
    );
    assert_no_challenge_left(&dir, dns);
}

/// The Python of the venv `.ci/run` makes for certbot's acme-dns plugin (PyPI's
/// certbot-dns-acmedns over Debian's certbot), if it is there.
fn acme_dns_certbot() -> Option<PathBuf> {
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/certbot-acmedns/bin/python");
    if python.is_file() {
        return Some(python);
    }
    let needed = std::env::var("DYNIP_REAL_PEERS").is_ok_and(|value| value == "1");
    assert!(!needed, "no {} (.ci/run makes it)", python.display());
    eprintln!(
        "skipping the acme-dns certificate test: no {} (.ci/run makes it)",
        python.display()
    );
    None
}

#[test]
fn certbot_gets_a_certificate_through_the_acme_dns_api() {
    if !peers_present(
        "certificate::certbot_gets_a_certificate_through_the_acme_dns_api",
        &["pebble", "openssl", "curl", "dig"],
    ) {
        return;
    }
    let Some(python) = acme_dns_certbot() else {
        return;
    };
    let dir = Dir::new();
    let (shared, host) = (test_key(85), test_key(86));
    let (server, dns) = start(&dir, &shared, &host);
    let http = server.listening("http");
    let pebble = Pebble::start(&dir, dns);
    // The account, registered with the host's key: its name is the host's challenge, so
    // no CNAME is needed. The plugin reads accounts from a JSON file, by domain.
    let base = format!("http://{http}/acme-dns");
    let registered = run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--fail",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {}", host.encode()),
            &format!("{base}/register"),
        ],
        dir.path(),
    );
    assert_eq!(registered.code, 0, "{registered:?}");
    let account: serde_json::Value =
        serde_json::from_str(&registered.stdout).expect("the account document");
    assert_eq!(
        account["fulldomain"],
        format!("_acme-challenge.{}", domain())
    );
    let accounts = dir.join("acme-dns-accounts.json");
    dir.write(
        "acme-dns-accounts.json",
        serde_json::json!({ domain(): account }).to_string(),
    );
    dir.write(
        "acme-dns.ini",
        format!(
            "dns_acmedns_api_url = {base}\ndns_acmedns_registration_file = {}\n",
            accounts.display()
        ),
    );
    for file in ["acme-dns-accounts.json", "acme-dns.ini"] {
        std::fs::set_permissions(
            dir.join(file),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod the plugin's files");
    }
    let python = python.to_string_lossy();
    certbot(
        &dir,
        &pebble,
        &[
            &python,
            "-c",
            "import sys; from certbot.main import main; sys.argv[0] = 'certbot'; sys.exit(main())",
        ],
        &[
            "--authenticator",
            "dns-acmedns",
            "--dns-acmedns-credentials",
            &dir.join("acme-dns.ini").to_string_lossy(),
            "--dns-acmedns-propagation-seconds",
            "1",
        ],
    );
    // The value the plugin set is the one Pebble checked; acme-dns keeps it (no delete).
    let challenge = format!("_acme-challenge.{}", domain());
    let answer = ask(&dir, "dig", dns, &[&challenge, "TXT"]);
    assert_eq!(answer.answer.len(), 1, "{}", answer.text);
    assert!(
        !server.stderr_lines("acme-dns update committed").is_empty(),
        "{}",
        server.stderr_tail()
    );
}
