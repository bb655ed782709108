//! The chunked decoder, fed bytes whole and split into reads (`data/upstream/chunked.rs`).
//! The properties checked are `lb::fuzzing::chunked`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::chunked(data));
