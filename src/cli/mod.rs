//! The commands: `dynip init|server|client|list|history|events|demo` and the original's entry
//! points (`dynipd`, `dynipc`, `dynip-init`), as clap parsers and the functions they run.
//! The server's commands (`server`, `check`, `list`, `history`, `demo`, `dynipd`) come
//! with the server (the `server` feature, Linux only): in a client-only build (Windows,
//! macOS) they do not exist, and clap refuses them as unknown.
//!
//! Owns argument parsing, logging set-up, reading the config file, and what the commands
//! print. The binaries in `src/main.rs` and `src/bin/` only call [`main`], [`dynipd`],
//! [`dynipc`] and [`dynip_init`].
//!
//! Role: the CLI, with `server` and `error` the wiring: it may use every other folder,
//! but knows no SQL, axum or hickory itself (`tests/architecture.rs` checks it).

#[cfg(feature = "server")]
pub mod check;
#[cfg(feature = "server")]
mod demo;
#[cfg(feature = "server")]
mod hosts;
mod log;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
#[cfg(feature = "server")]
use tracing::error;
use tracing::{info, warn};

use crate::config::{self, ClientConfig, Config};
use crate::edge::client::{self, Acked, ClientError};
use crate::error::Error;
use crate::model::key::Key;
use crate::model::name::Name;
#[cfg(feature = "server")]
use crate::server::{PolicyHandle, Server};
#[cfg(feature = "server")]
use demo::demo;
#[cfg(feature = "server")]
use hosts::{events, history, list};
use log::{init_logging, stderr_is_journal};

/// Logging flags, shared by every command (the original's `-v` and `--debug`).
#[derive(Args, Debug, Clone, Copy)]
pub struct Verbosity {
    /// Log what happens: one line per report (INFO)
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Log everything, including why each refused datagram was refused (DEBUG)
    #[arg(long, global = true)]
    debug: bool,
    /// Log errors only
    #[arg(short, long, global = true, conflicts_with_all = ["verbose", "debug"])]
    quiet: bool,
}

/// The exit codes, for `--help` and the man pages (the README's table, shorter).
const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   unexpected internal error
  2   usage error; the store or the JSON file cannot be read or written
  3   the config cannot be read or is invalid; the TLS files or a sink do not work
  4   server_hostname is empty or cannot be resolved
  5   the report could not be sent
  6   the store or the JSON file is damaged or not dynip's (left as it was)
  7   cannot listen on an address (in use, not this machine's, or a port below 1024
      without CAP_NET_BIND_SERVICE)
  8   init: the file exists, or cannot be written
  9   history, events: no such host
  10  client: no acknowledgement came back";

#[derive(Parser, Debug)]
#[command(
    name = "dynip",
    version,
    about = "Tells you where your machines are",
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented config file with a fresh key (never overwrites one)
    ///
    /// The original's `dynip-init PATH` is the same command.
    Init {
        /// Where to write it
        #[arg(default_value = "dynip.conf")]
        path: PathBuf,
        /// Put the server's store and JSON file in this directory (as the packages do
        /// with /var/lib/dynip) instead of beside the server's working directory
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check a config without starting anything: print what the server would do, or
    /// why it could not start
    ///
    /// Checks both sections, that the store and the JSON file are dynip's and writable,
    /// the TLS files, the DNS settings, and that every listen address is this machine's
    /// and its port may be bound by this user. Exits 0, or with the code the server
    /// would have exited with. Safe beside a running server: it binds no port the server
    /// uses, and writes nothing.
    #[cfg(feature = "server")]
    Check {
        /// The config file
        config: PathBuf,
    },
    /// Print a shell completion script for dynip
    ///
    /// For example: dynip completions bash > /etc/bash_completion.d/dynip
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the dynip(1) man page, or write every command's page into a directory
    Man {
        /// Write dynip.1, dynip-SUBCOMMAND.1, dynipd.1 and dynipc.1 here
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the server in the foreground until SIGINT or SIGTERM
    #[cfg(feature = "server")]
    Server {
        /// The config file ([DynIP:Server])
        config: PathBuf,
    },
    /// Send one report to the server (or one every DURATION)
    Client {
        /// The config file ([DynIP:Client])
        config: PathBuf,
        /// Keep reporting at this interval, e.g. 5m, 30s, 1h
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        every: Option<Duration>,
    },
    /// List the known hosts (reads the store; no server needed)
    #[cfg(feature = "server")]
    List {
        /// The config file ([DynIP:Server])
        config: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a host's address changes
    #[cfg(feature = "server")]
    History {
        /// The config file ([DynIP:Server])
        config: PathBuf,
        /// The host's name
        host: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show recent events (address changes, new, stale and returning hosts, offline and
    /// online) and whether each sink has had them, newest first
    #[cfg(feature = "server")]
    Events {
        /// The config file ([DynIP:Server])
        config: PathBuf,
        /// Only this host's
        #[arg(long)]
        host: Option<String>,
        /// How many at most
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON (the API's event documents) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Mint a key for one host; prints the lines for the server's and the host's config
    /// (and with dns_listen, for nsupdate, certbot and lego to get its certificates)
    AddHost {
        /// The server's config file
        config: PathBuf,
        /// The host's name
        host: String,
    },
    /// Run a server and a client reporting to it on loopback, with a throwaway store, and
    /// show what the server recorded
    #[cfg(feature = "server")]
    Demo,
    /// Copy a store into an empty other one: an SQLite file into a PostgreSQL database
    /// (database_url) or back
    ///
    /// Copies the hosts, every address change, the TXT records and the acme-dns accounts
    /// in one transaction; never writes into a store that holds any of those (exit 8).
    /// Stop the server that writes to FROM first. For example:
    /// dynip copy-store /var/lib/dynip/dynip.sqlite3 postgres://dynip@db.example.com/dynip
    #[cfg(feature = "server")]
    CopyStore {
        /// The store to copy: an SQLite file, or a postgres:// URL
        from: String,
        /// The store to copy into: an SQLite file (created), or a postgres:// URL
        to: String,
    },
}

/// `dynipd CONFIG`: the original's server command.
#[cfg(feature = "server")]
#[derive(Parser, Debug)]
#[command(name = "dynipd", version, about = "DynIP server (dynip server)")]
struct DynipdCli {
    #[command(flatten)]
    verbosity: Verbosity,
    /// The config file
    config: PathBuf,
}

/// `dynipc CONFIG`: the original's client command.
#[derive(Parser, Debug)]
#[command(name = "dynipc", version, about = "DynIP client (dynip client)")]
struct DynipcCli {
    #[command(flatten)]
    verbosity: Verbosity,
    /// The config file
    config: PathBuf,
    /// Keep reporting at this interval, e.g. 5m, 30s, 1h
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    every: Option<Duration>,
}

/// `dynip-init PATH`: the original's command to write an example config.
#[derive(Parser, Debug)]
#[command(
    name = "dynip-init",
    version,
    about = "Write a commented DynIP config (dynip init)"
)]
struct DynipInitCli {
    #[command(flatten)]
    verbosity: Verbosity,
    /// Where to write it
    path: PathBuf,
}

/// `dynip`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    finish("dynip", cli.verbosity, || run(cli.command))
}

/// `dynipd`.
#[cfg(feature = "server")]
pub fn dynipd() -> ExitCode {
    let cli = DynipdCli::parse();
    finish("dynipd", cli.verbosity, || server(&cli.config))
}

/// `dynipc`.
pub fn dynipc() -> ExitCode {
    let cli = DynipcCli::parse();
    finish("dynipc", cli.verbosity, || client(&cli.config, cli.every))
}

/// `dynip-init`.
pub fn dynip_init() -> ExitCode {
    let cli = DynipInitCli::parse();
    finish("dynip-init", cli.verbosity, || init(&cli.path, None))
}

fn finish(
    program: &str,
    verbosity: Verbosity,
    command: impl FnOnce() -> Result<(), Error>,
) -> ExitCode {
    let journal = stderr_is_journal();
    init_logging(verbosity, journal);
    match command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `<3>`: the journal's priority for an error, as the log lines carry theirs.
            let priority = if journal { "<3>" } else { "" };
            eprintln!("{priority}{program}: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Init { path, state_dir } => init(&path, state_dir.as_deref()),
        #[cfg(feature = "server")]
        Command::Check { config } => check(&config),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
        #[cfg(feature = "server")]
        Command::Server { config } => server(&config),
        Command::Client { config, every } => client(&config, every),
        #[cfg(feature = "server")]
        Command::List { config, json } => list(&config, json),
        #[cfg(feature = "server")]
        Command::History { config, host, json } => history(&config, &host, json),
        #[cfg(feature = "server")]
        Command::Events {
            config,
            host,
            limit,
            json,
        } => events(&config, host.as_deref(), limit, json),
        Command::AddHost { config, host } => add_host(&config, &host),
        #[cfg(feature = "server")]
        Command::Demo => demo(),
        #[cfg(feature = "server")]
        Command::CopyStore { from, to } => hosts::copy_store(&from, &to),
    }
}

/// Reads and parses a config file, logging its warnings.
fn load_config(path: &Path) -> Result<Config, Error> {
    let config = read_config(path)?;
    for warning in &config.warnings {
        warn!(config = %path.display(), "{warning}");
    }
    // Windows keeps who may read a file in its ACL, which has no mode bits to check; the
    // README's Windows section says how to restrict the file with `icacls`.
    #[cfg(unix)]
    if let Some(warning) = world_readable_key(path, &config) {
        warn!("{warning}");
    }
    Ok(config)
}

/// The warning for a config holding a key that every user of the machine can read: a
/// key is a secret, as ssh says of private keys (a warning, not a refusal: the
/// original's configs were 0644). Readable by a group is a choice: the packages make
/// the config `root:dynip`, mode 640, for the service's user.
#[cfg(unix)]
pub(crate) fn world_readable_key(path: &Path, config: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let holds_key = config.server.key.is_some()
        || config.client.key.is_some()
        || !config.server.hosts.is_empty();
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (holds_key && mode & 0o007 != 0).then(|| {
        format!(
            "{} holds a key but every user can read it (mode {:o}); run chmod o-rwx on it",
            path.display(),
            mode & 0o777
        )
    })
}

/// Reads and parses a config file; its warnings are the caller's to show.
fn read_config(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    config::parse(&text).map_err(|source| Error::Config {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// `dynip check`: what the server would do with the config, or the error it would stop
/// with.
#[cfg(feature = "server")]
fn check(path: &Path) -> Result<(), Error> {
    let config = read_config(path)?;
    let checked = crate::cli::check::check(path, &config)?;
    let mut out = format!("{}: ok\n", path.display());
    for line in &checked.lines {
        out.push_str(&format!("  {line}\n"));
    }
    for warning in &checked.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    print(&out)
}

/// `dynip completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Result<(), Error> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dynip", &mut out);
    print(&String::from_utf8_lossy(&out))
}

/// `dynip man`: dynip(1) on stdout, or with `dir` every page: the subcommands'
/// (`dynip-server.1`, ...) and the original's entry points' (`dynipd.1`, `dynipc.1`;
/// `dynip-init.1` is the `init` subcommand's page).
fn man(dir: Option<&Path>) -> Result<(), Error> {
    use clap::CommandFactory;
    let write_error = |path: &Path, source| Error::InitWrite {
        path: path.to_path_buf(),
        source,
    };
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .map_err(|e| Error::Internal(format!("cannot render the man page: {e}")))?;
        return print(&String::from_utf8_lossy(&out));
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(|e| write_error(dir, e))?;
    let entry_points = [
        DynipcCli::command(),
        #[cfg(feature = "server")]
        DynipdCli::command(),
    ];
    for command in entry_points {
        clap_mangen::Man::new(command)
            .generate_to(dir)
            .map_err(|e| write_error(dir, e))?;
    }
    Ok(())
}

/// The async runtime: one thread. The receive loops are a few tasks that each keep a core
/// busy on their own; a second worker only made them hop between threads (measured: a
/// fifth of the server's time went to switching), and the writer has its own thread.
fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// A token cancelled by the first SIGINT or SIGTERM (on Windows, by Ctrl-C).
fn shutdown_on_signal() -> Result<CancellationToken, Error> {
    let token = CancellationToken::new();
    let terminate = terminate_signal()?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
            () = terminate => info!("SIGTERM: shutting down"),
        }
        cancel.cancel();
    });
    Ok(token)
}

/// The first SIGTERM.
#[cfg(unix)]
fn terminate_signal() -> Result<impl std::future::Future<Output = ()>, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Error::Internal(format!("cannot handle SIGTERM: {e}")))?;
    Ok(async move {
        terminate.recv().await;
    })
}

/// Windows has no SIGTERM: a stopped scheduled task or `taskkill /F` ends the process
/// outright, and nothing is left to flush on the client's side.
#[cfg(not(unix))]
fn terminate_signal() -> Result<std::future::Pending<()>, Error> {
    Ok(std::future::pending())
}

/// Mints a key for one host and prints the lines for both configs; writes nothing.
fn add_host(path: &Path, host: &str) -> Result<(), Error> {
    let name = Name::parse(host).map_err(|source| Error::BadName {
        value: host.to_string(),
        source,
    })?;
    let config = load_config(path)?;
    if config.server.hosts.iter().any(|(known, _)| *known == name) {
        warn!(host = %name, config = %path.display(), "the config has a key for this host already; the new one replaces it only if you replace the line");
    }
    let key = Key::generate().encode();
    let mut text = format!(
        "# In {config} on the server, under [DynIP:Hosts] (then reload: kill -HUP the server):\n\
         {name} = {key}\n\
         \n\
         # In the config on {name}, under [DynIP:Client]:\n\
         hostname = {name}\n\
         key = {key}\n",
        config = path.display()
    );
    if let (Some(listen), Some(zone)) = (config.server.dns.listen, &config.server.dns.zone) {
        text.push_str(&certificate_lines(&name, &key, listen, zone));
    }
    print(&text)
}

/// What a host needs for certificates by DNS-01 with its own key (TSIG key named after
/// the host): nsupdate's key, certbot's rfc2136 credentials file, lego's environment.
fn certificate_lines(name: &Name, key: &str, listen: std::net::SocketAddr, zone: &str) -> String {
    let server = if listen.ip().is_unspecified() {
        "<this server's address>".to_owned()
    } else {
        listen.ip().to_string()
    };
    let port = listen.port();
    let folded = name.folded();
    format!(
        "\n# Certificates for {folded}.{zone} by DNS-01 (RFC 2136 with the TSIG key {folded}):\n\
         # nsupdate -y hmac-sha256:{folded}:{key}\n\
         #   (then: server {server} {port}, zone {zone}, update add _acme-challenge.{folded}.{zone} 60 TXT \"...\")\n\
         \n\
         # certbot --dns-rfc2136 --dns-rfc2136-credentials FILE, with FILE (chmod 600):\n\
         dns_rfc2136_server = {server}\n\
         dns_rfc2136_port = {port}\n\
         dns_rfc2136_name = {folded}\n\
         dns_rfc2136_secret = {key}\n\
         dns_rfc2136_algorithm = HMAC-SHA256\n\
         \n\
         # lego --dns rfc2136, in its environment:\n\
         RFC2136_NAMESERVER={server}:{port}\n\
         RFC2136_TSIG_KEY={folded}\n\
         RFC2136_TSIG_SECRET={key}\n\
         RFC2136_TSIG_ALGORITHM=hmac-sha256.\n"
    )
}

/// On SIGHUP, re-reads the config and puts its keys, `allow_from` and `allow_unsigned` in
/// force; a config that no longer reads is refused and the old rules stay.
#[cfg(feature = "server")]
fn reload_on_hangup(path: PathBuf, policy: PolicyHandle) -> Result<(), Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| Error::Internal(format!("cannot handle SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match load_config(&path) {
                Ok(config) => {
                    policy.replace(&config.server);
                    info!(config = %path.display(), "SIGHUP: keys, allow_from and allow_unsigned reloaded (other keys need a restart)");
                }
                Err(e) => {
                    error!(error = %e, "SIGHUP: config refused; the old keys and rules stay in force")
                }
            }
        }
    });
    Ok(())
}

/// Writes a fresh config at `path`, with the server's files in `state_dir` when given.
fn init(path: &Path, state_dir: Option<&Path>) -> Result<(), Error> {
    let key = Key::generate();
    let text = match state_dir {
        None => config::template(&key),
        Some(dir) => {
            let dir = dir.to_str().ok_or_else(|| Error::InitWrite {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("--state-dir {} is not UTF-8", dir.display()),
                ),
            })?;
            config::template_in(&key, dir)
        }
    };
    // It holds a fresh key: readable by its owner only.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .owner_only()
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InitExists(path.to_path_buf())
            } else {
                Error::InitWrite {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::InitWrite {
            path: path.to_path_buf(),
            source,
        })?;
    info!(path = %path.display(), "config written");
    Ok(())
}

/// Creating a file only its owner may read.
trait OwnerOnly {
    fn owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    /// Mode 0600 on Unix. Windows has no modes: the file takes its directory's ACL, which
    /// under `C:\ProgramData` lets every user read (see `load_config`).
    fn owner_only(&mut self) -> &mut Self {
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600);
        self
    }
}

#[cfg(feature = "server")]
fn server(path: &Path) -> Result<(), Error> {
    let config = load_config(path)?;
    runtime()?.block_on(async {
        let shutdown = shutdown_on_signal()?;
        let server = Server::open(&config.server)?;
        reload_on_hangup(path.to_path_buf(), server.policy())?;
        server.run(shutdown).await
    })
}

fn client(path: &Path, every: Option<Duration>) -> Result<(), Error> {
    let config = load_config(path)?;
    let name = client_name(path, &config.client)?;
    runtime()?.block_on(async {
        let Some(every) = every else {
            let acked = report_once(&config.client, &name, path).await?;
            return print(&seen_lines(&acked));
        };
        let shutdown = shutdown_on_signal()?;
        let mut last_seen = None;
        loop {
            match report_once(&config.client, &name, path).await {
                Ok(acked) => {
                    let seen = seen_lines(&acked);
                    if last_seen.as_ref() != Some(&seen) {
                        print(&seen)?;
                        last_seen = Some(seen);
                    }
                }
                Err(e @ Error::Client(ClientError::EmptyServerHostname { .. })) => return Err(e),
                Err(e) => warn!(
                    error = %e,
                    "report failed; trying again in {}",
                    humantime::format_duration(every)
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// One report: signed and acknowledged with a key, else the original's datagram.
async fn report_once(config: &ClientConfig, name: &Name, path: &Path) -> Result<Vec<Acked>, Error> {
    let servers = client::resolve(config, path)?;
    let acked = match &config.key {
        Some(key) => client::send_signed(&servers, name, key).await?,
        None => client::send_unsigned(&servers, name).map(|()| Vec::new())?,
    };
    Ok(acked)
}

/// The addresses the server saw, one per line, as `ADDRESS:PORT` (`[ADDRESS]:PORT` for
/// IPv6).
fn seen_lines(acked: &[Acked]) -> String {
    acked.iter().map(|ack| format!("{}\n", ack.seen)).collect()
}

/// The name to report: the `hostname` key, or the machine's name.
fn client_name(path: &Path, config: &ClientConfig) -> Result<Name, Error> {
    let value = match &config.hostname {
        Some(hostname) => hostname.clone(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    Name::parse(&value).map_err(|source| Error::BadHostname {
        path: path.to_path_buf(),
        value,
        source,
    })
}

fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // `dynip list | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        res => res.map_err(|e| Error::Internal(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        #[cfg(feature = "server")]
        DynipdCli::command().debug_assert();
        DynipcCli::command().debug_assert();
        DynipInitCli::command().debug_assert();
    }
}
