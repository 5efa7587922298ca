//! The commands: `dynip init|server|client|list|history|demo` and the original's entry
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

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
#[cfg(feature = "server")]
use tracing::error;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{self, ClientConfig, Config};
use crate::edge::client::{self, Acked};
use crate::error::Error;
use crate::model::key::Key;
use crate::model::name::Name;
#[cfg(feature = "server")]
use crate::{
    config::{BindHost, ServerConfig},
    model::record::{Record, Time},
    server::{PolicyHandle, Server},
    store::{PendingChanges, Store},
};

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
  3   the config cannot be read or is invalid; the TLS files do not work
  4   server_hostname is empty or cannot be resolved
  5   the report could not be sent
  6   the store or the JSON file is damaged or not dynip's (left as it was)
  7   cannot listen on an address (in use, not this machine's, or a port below 1024
      without CAP_NET_BIND_SERVICE)
  8   init: the file exists, or cannot be written
  9   history: no such host
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
    /// Mint a key for one host; prints the lines for the server's and the host's config
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

/// Whether stderr is the journal (only under systemd, on Unix).
fn stderr_is_journal() -> bool {
    #[cfg(feature = "server")]
    return crate::edge::systemd::stderr_is_journal();
    #[cfg(not(feature = "server"))]
    return false;
}

/// Logs to stderr at WARN by default, as the original did; `RUST_LOG` overrides the flags.
/// Into the journal, each line starts with its syslog priority (`<3>` for an error) and
/// has no time of its own (the journal keeps one), so `journalctl -p err` finds errors.
fn init_logging(verbosity: Verbosity, journal: bool) {
    let default = if verbosity.quiet {
        "error"
    } else if verbosity.debug {
        "debug"
    } else if verbosity.verbose {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journal {
        let format = tracing_subscriber::fmt::format().without_time();
        subscriber
            .with_ansi(false)
            .event_format(Prioritized(format))
            .init();
    } else {
        subscriber.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// A log line format with the syslog priority of the event's level in front (`<3>`
/// error, `<4>` warning, `<6>` info, `<7>` debug and trace), as systemd reads lines on a
/// unit's stderr (sd-daemon(3)).
struct Prioritized<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prioritized<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
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
        Command::AddHost { config, host } => add_host(&config, &host),
        #[cfg(feature = "server")]
        Command::Demo => demo(),
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
    print(&format!(
        "# In {config} on the server, under [DynIP:Hosts] (then reload: kill -HUP the server):\n\
         {name} = {key}\n\
         \n\
         # In the config on {name}, under [DynIP:Client]:\n\
         hostname = {name}\n\
         key = {key}\n",
        config = path.display()
    ))
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
                Err(e @ Error::EmptyServerHostname { .. }) => return Err(e),
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
    let addrs = client::resolve(config, path)?;
    match &config.key {
        Some(key) => client::send_signed(&addrs, name, key).await,
        None => client::send_unsigned(&addrs, name).map(|_| Vec::new()),
    }
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

#[cfg(feature = "server")]
fn list(path: &Path, json: bool) -> Result<(), Error> {
    let config = load_config(path)?;
    let store = Store::open_read_only(&config.server.store_path)?;
    let hosts = store.load()?.hosts;
    let hosts = hosts.iter().map(|(name, entry)| (name, &entry.record));
    let out = if json {
        list_json(hosts, config.server.stale_after)
    } else {
        list_table(hosts)
    };
    print(&out)
}

fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // `dynip list | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        res => res.map_err(|e| Error::Internal(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(feature = "server")]
fn list_table<'a>(hosts: impl Iterator<Item = (&'a Name, &'a Record)>) -> String {
    let header = ["HOST", "IPV4", "IPV6", "LAST SEEN", "LAST CHANGE"].map(String::from);
    let rows: Vec<[String; 5]> = hosts
        .map(|(name, record)| {
            let last_change = [
                record.v4.map(|s| s.last_change),
                record.v6.map(|s| s.last_change),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(record.first_seen);
            [
                name.to_string(),
                record.v4.map_or("-".to_string(), |s| s.addr.to_string()),
                record.v6.map_or("-".to_string(), |s| s.addr.to_string()),
                record.last_seen().rfc3339(),
                last_change.rfc3339(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `list --json`: the API's host documents (`api::host`), as an array.
#[cfg(feature = "server")]
fn list_json<'a>(
    hosts: impl Iterator<Item = (&'a Name, &'a Record)>,
    stale_after: std::time::Duration,
) -> String {
    let now = Time::now();
    let hosts: Vec<crate::proto::api::HostJson> = hosts
        .map(|(name, record)| crate::proto::api::host(name, record, now, stale_after))
        .collect();
    to_json(&hosts)
}

#[cfg(feature = "server")]
fn to_json(value: &impl serde::Serialize) -> String {
    // Serializing plain structs of strings cannot fail.
    let mut out = serde_json::to_string_pretty(value).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(feature = "server")]
fn history(path: &Path, host: &str, json: bool) -> Result<(), Error> {
    let name = Name::parse(host).map_err(|source| Error::BadName {
        value: host.to_string(),
        source,
    })?;
    let config = load_config(path)?;
    let store = Store::open_read_only(&config.server.store_path)?;
    let changes = crate::proto::api::within_max_age(
        store.history(&name, PendingChanges::Journal)?,
        Time::now(),
        config.server.history_max_age,
    );
    if changes.is_empty() {
        // With `history_max_age` a known host may have no change left to show.
        let known =
            config.server.history_max_age.is_some() && store.load()?.hosts.contains_key(&name);
        if !known {
            return Err(Error::UnknownHost(host.to_string()));
        }
    }
    let out = if json {
        let changes: Vec<serde_json::Value> = changes
            .iter()
            .map(
                |(at, addr)| serde_json::json!({"time": at.rfc3339(), "address": addr.to_string()}),
            )
            .collect();
        serde_json::to_string_pretty(&changes).unwrap_or_default() + "\n"
    } else {
        let mut out = format!("{:<20}  {:<6}  ADDRESS\n", "TIME", "FAMILY");
        for (at, addr) in &changes {
            let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
            out.push_str(&format!("{:<20}  {family:<6}  {addr}\n", at.rfc3339()));
        }
        out
    };
    print(&out)
}

/// Runs a server on loopback with a throwaway store, reports to it once with the client's
/// own code, and prints what the server recorded: the table and the original's JSON file.
#[cfg(feature = "server")]
fn demo() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("dynip-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::InitWrite {
        path: dir.clone(),
        source,
    })?;
    let res = demo_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

#[cfg(feature = "server")]
fn demo_in(dir: &Path) -> Result<(), Error> {
    let key = Key::generate();
    let server_config = ServerConfig {
        server_ip: BindHost::Addr([127, 0, 0, 1].into()),
        server_port: 0,
        client_log_path: dir.join("dynip.json"),
        store_path: dir.join("dynip.sqlite3"),
        key: Some(key.clone()),
        ..ServerConfig::default()
    };
    runtime()?.block_on(async {
        let server = Server::open(&server_config)?;
        let addr = server.udp_addrs()[0];
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(server.run(shutdown.clone()));
        print(
            &(format!(
                "server: listening on udp {addr}, store {}",
                server_config.store_path.display()
            ) + "\n"),
        )?;

        let client_config = ClientConfig {
            server_hostname: addr.ip().to_string(),
            server_port: addr.port(),
            hostname: None,
            key: Some(key),
        };
        let config_path = dir.join("(demo)");
        let name = client_name(&config_path, &client_config)
            .or_else(|_| Name::parse("demo-host").map_err(|e| Error::Internal(e.to_string())))?;
        let acked = report_once(&client_config, &name, &config_path).await;
        shutdown.cancel();
        running
            .await
            .map_err(|e| Error::Internal(format!("server task failed: {e}")))??;
        let acked = acked?;
        for ack in &acked {
            print(
                &(format!(
                    "client: reported as {name}, signed; acknowledged by {}: seen as {}",
                    ack.server, ack.seen
                ) + "\n"),
            )?;
        }

        let store = Store::open_read_only(&server_config.store_path)?;
        let hosts = store.load()?.hosts;
        print("\n$ dynip list CONFIG\n")?;
        print(&list_table(
            hosts.iter().map(|(name, entry)| (name, &entry.record)),
        ))?;
        let exported = std::fs::read_to_string(&server_config.client_log_path).unwrap_or_default();
        print(
            &(format!(
                "\n$ cat {}  (the original DynIP format)",
                server_config.client_log_path.display()
            ) + "\n"),
        )?;
        print(&format!("{exported}\n"))?;
        Ok(())
    })
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

    #[cfg(feature = "server")]
    #[test]
    fn list_table_aligns_columns() {
        let name = Name::parse("kitchen-pc").unwrap();
        let record = Record::new("203.0.113.7".parse().unwrap(), Time::from_micros(0));
        let table = list_table([(&name, &record)].into_iter());
        assert_eq!(
            table,
            "HOST        IPV4         IPV6  LAST SEEN             LAST CHANGE\n\
             kitchen-pc  203.0.113.7  -     1970-01-01T00:00:00Z  1970-01-01T00:00:00Z\n"
        );
    }
}
