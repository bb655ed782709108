//! Every input kept under `fuzz/regressions/<target>/` (crashes found and fixed) and
//! `fuzz/corpus/<target>/` (the seeds) run through the same checks as the fuzz targets, so a
//! plain `cargo test` replays them without cargo-fuzz.

use std::path::PathBuf;

/// The inputs kept for `target`, by file name, from both directories.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for kind in ["regressions", "corpus"] {
        let dir = fuzz.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("a kept input is readable");
                inputs.push((path, bytes));
            }
        }
    }
    inputs.sort();
    inputs
}

/// Run `check` on every input kept for `target`, naming the one that fails; there must be
/// some (the seeds are checked in).
fn replay(target: &str, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs kept for {target}");
    for (path, bytes) in inputs {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{} fails its checks", path.display());
    }
}

#[test]
fn framing_inputs_pass() {
    replay("framing", super::framing);
}

#[test]
fn chunked_inputs_pass() {
    replay("chunked", super::chunked);
}

#[test]
fn config_inputs_pass() {
    replay("config", super::config);
}

#[test]
fn key_inputs_pass() {
    replay("key", super::key);
}

/// The checks can fail: a property broken on purpose is caught (a decoder that hands out more
/// than it was given would be).
#[test]
fn the_checks_look_at_answers() {
    // A refused configuration whose problems are all inside the text.
    super::config(b"[ring]\nslots = \"many\"\n");
    // A complete head with a body: the prefix check and the body bound run.
    super::framing(b"\x00\x80HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
    let wrong = std::panic::catch_unwind(|| {
        assert!(
            super::is_within(b"ab", b"xaby"),
            "an equal copy is not within"
        );
    });
    assert!(wrong.is_err());
    let text = b"xaby";
    assert!(super::is_within(&text[1..3], text));
}
