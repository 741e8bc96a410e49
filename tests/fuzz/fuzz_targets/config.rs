//! The config parser on arbitrary text: it must never panic, and every rejection must come
//! with at least one located error.
#![no_main]

use croissant::config::Config;
use croissant::sinks::registry::TYPES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = Config::parse(text, "fuzz.toml", &TYPES) {
        assert!(!errors.is_empty(), "a rejection names its errors");
        for error in errors {
            assert!(!error.to_string().is_empty());
        }
    }
});
