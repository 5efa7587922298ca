//! `dynip::config::parse` on arbitrary UTF-8 must never panic; nor may showing its
//! result as the CLI does (the error's message, the warnings).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dynip::config::parse(text) {
        Ok(config) => {
            for warning in &config.warnings {
                std::hint::black_box(warning.len());
            }
            std::hint::black_box(format!("{config:?}"));
        }
        Err(err) => {
            std::hint::black_box(err.to_string());
        }
    }
});
