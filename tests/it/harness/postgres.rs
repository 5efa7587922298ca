//! A throwaway PostgreSQL cluster for one test or bench: Debian's `initdb` and `pg_ctl`
//! (run as the `postgres` user when the tests run as root, since PostgreSQL refuses
//! root), on a free loopback port, its socket and data in a temp dir; stopped and removed
//! on drop. Shared with `benches/common` (included there by path): std and `free_port`
//! only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::free_port;

/// A command's outcome.
#[derive(Debug)]
pub struct PgOutput {
    /// The exit code (-1: ended by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn run_pg(command: &mut Command) -> PgOutput {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    PgOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The server's `-c` options.
    settings: String,
}

/// Where Debian keeps the server's programs and its `psql`:
/// `/usr/lib/postgresql/VERSION/bin`, the newest version with both installed.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("psql").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether the cluster's programs are installed: the test is skipped (or, with
/// `DYNIP_REAL_PEERS=1`, fails) without them, as for any other peer.
pub fn postgres_present(test: &str) -> bool {
    if bin_dir().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("DYNIP_REAL_PEERS").is_none_or(|v| v != "1"),
        "{test}: PostgreSQL is missing (Debian packages postgresql, postgresql-client) and DYNIP_REAL_PEERS=1"
    );
    eprintln!(
        "skipping {test}: PostgreSQL is missing (Debian packages postgresql, postgresql-client)"
    );
    false
}

fn is_root() -> bool {
    // SAFETY: geteuid only reads the process's credentials.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    /// Creates and starts a cluster with a trusted superuser `dynip` and the default
    /// settings but `fsync = off` (a test never crashes the machine).
    ///
    /// # Panics
    /// When the cluster cannot be made or started.
    pub fn start() -> Postgres {
        Postgres::start_with(&["fsync=off"])
    }

    /// As [`Postgres::start`], with `settings` (`NAME=VALUE`, each given to the server
    /// as `-c`) instead.
    ///
    /// # Panics
    /// When the cluster cannot be made or started.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = bin_dir().expect("PostgreSQL's programs (checked by postgres_present)");
        let dir = tempfile::Builder::new()
            .prefix("dynip-pg.")
            .tempdir()
            .expect("a temp dir");
        if is_root() {
            let res = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(res.success(), "chown the cluster's dir to postgres");
        }
        let postgres = Postgres {
            dir,
            bin,
            port: free_port(),
            settings: settings
                .iter()
                .map(|setting| format!(" -c {setting}"))
                .collect(),
        };
        let data = postgres.data();
        let out = postgres.as_owner(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "dynip",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        assert!(out.code == 0, "initdb: {}", out.stderr);
        postgres.start_again();
        postgres
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the cluster's programs as its owner.
    fn as_owner(&self, program: &str, args: &[&str]) -> PgOutput {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(self.dir.path());
        run_pg(&mut command)
    }

    /// As [`Postgres::start`], speaking TLS only (`hostssl` in `pg_hba.conf`) with the
    /// certificate and key of `cert_pem` and `key_pem`.
    ///
    /// # Panics
    /// When the cluster cannot be made or started.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        let postgres = Postgres::start();
        postgres.stop();
        let cert = postgres.dir.path().join("server.crt");
        let key = postgres.dir.path().join("server.key");
        std::fs::write(&cert, cert_pem).expect("write the certificate");
        std::fs::write(&key, key_pem).expect("write the key");
        let hba = postgres.data().join("pg_hba.conf");
        std::fs::write(&hba, "hostssl all all 127.0.0.1/32 trust\n").expect("write pg_hba.conf");
        if is_root() {
            for path in [&cert, &key, &hba] {
                let res = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(path)
                    .status()
                    .expect("chown");
                assert!(res.success(), "chown {}", path.display());
            }
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the key");
        }
        let mut postgres = postgres;
        postgres.settings.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            path_str(&cert),
            path_str(&key)
        ));
        postgres.start_again();
        postgres
    }

    /// Where the cluster keeps its files (and a test may put its own).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the cluster (again), waiting until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1{}",
            self.port,
            path_str(self.dir.path()),
            self.settings
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.as_owner(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-l",
                path_str(&log),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        assert!(out.code == 0, "pg_ctl start: {}{}", out.stdout, out.stderr);
    }

    /// Stops the cluster (`-m fast`: open connections are cut, as when a database
    /// server goes away).
    pub fn stop(&self) {
        let out = self.as_owner(
            "pg_ctl",
            &["-D", path_str(&self.data()), "-m", "fast", "-w", "stop"],
        );
        assert!(out.code == 0, "pg_ctl stop: {}{}", out.stdout, out.stderr);
    }

    /// The URL of database `database` on the cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://dynip@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        let out = self.psql("postgres", &format!("CREATE DATABASE {name}"));
        assert!(out.code == 0, "create database {name}: {}", out.stderr);
    }

    /// Runs `sql` on `database` with the cluster's own psql; its output unaligned,
    /// without headers.
    pub fn psql(&self, database: &str, sql: &str) -> PgOutput {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql]);
        run_pg(&mut command)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.as_owner(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}
