//! `dynip`: every command as a subcommand.

fn main() -> std::process::ExitCode {
    dynip::cli::main()
}
