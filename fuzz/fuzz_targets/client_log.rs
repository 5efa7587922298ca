//! `dynip::edge::export::decode` (the original's JSON file, read once at start-up to import)
//! on arbitrary bytes must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(imported) = dynip::edge::export::decode(data) {
        assert_eq!(
            imported.hosts.len() + imported.skipped.len(),
            imported.n_entries,
            "every entry is either imported or skipped"
        );
    }
});
