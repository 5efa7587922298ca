//! `dynipd CONFIG`: the original DynIP's server command (`dynip server CONFIG`).
//!
//! The server is Unix-only; Cargo builds every binary for every target, so on Windows
//! `dynipd.exe` only says so, and exits 2 as a command line clap refuses does.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    dynip::cli::dynipd()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("dynipd: error: the server runs on Unix only; on Windows, run the client (dynip client CONFIG)");
    std::process::ExitCode::from(2)
}
