//! A `[ring] key` rule and the request id it reads from a request head (`config/key.rs`, `data/key.rs`).
//! The properties checked are `lb::fuzzing::key`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::key(data));
