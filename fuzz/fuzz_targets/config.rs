//! An `lb.toml` through what `lb check` runs (`config/`).
//! The properties checked are `lb::fuzzing::config`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::config(data));
