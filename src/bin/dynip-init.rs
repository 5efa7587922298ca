//! `dynip-init PATH`: the original DynIP's command to write a config
//! (`dynip init PATH`).

fn main() -> std::process::ExitCode {
    dynip::cli::dynip_init()
}
