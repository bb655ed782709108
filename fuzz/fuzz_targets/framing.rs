//! A replica's response head and how its body is framed (`data/upstream/framing.rs`).
//! The properties checked are `lb::fuzzing::framing`'s.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb::fuzzing::framing(data));
