//! `dynipd CONFIG`: the original DynIP's server command (`dynip server CONFIG`).

fn main() -> std::process::ExitCode {
    dynip::cli::dynipd()
}
