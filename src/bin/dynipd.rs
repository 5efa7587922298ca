//! `dynipd CONFIG`: the original DynIP's server command (`dynip server CONFIG`).
//!
//! The server is Linux-only (the `server` feature); Cargo builds every binary of a
//! client-only build too, so there `dynipd` only says so, and exits 2 as a command line
//! clap refuses does.

#[cfg(feature = "server")]
fn main() -> std::process::ExitCode {
    dynip::cli::dynipd()
}

#[cfg(not(feature = "server"))]
fn main() -> std::process::ExitCode {
    eprintln!("dynipd: error: the server runs on Linux only; this build is the client (dynip client CONFIG)");
    std::process::ExitCode::from(2)
}
