//! `dynipc CONFIG`: the original DynIP's client command (`dynip client CONFIG`).

fn main() -> std::process::ExitCode {
    dynip::cli::dynipc()
}
