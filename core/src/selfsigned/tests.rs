use std::os::unix::fs::PermissionsExt;

use super::*;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn writes_a_ca_a_chain_and_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let files = self_signed(&names(&["localhost", "127.0.0.1", "*.lb.test"]), &out).unwrap();
    assert_eq!(files.cert, out.join("cert.pem"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let blocks = |text: &str| text.matches("-----BEGIN CERTIFICATE-----").count();
    assert_eq!(blocks(&read(&files.ca)), 1);
    assert_eq!(blocks(&read(&files.cert)), 2, "the leaf, then the CA");
    assert!(read(&files.cert).ends_with(&read(&files.ca)));
    for key in [&files.key, &files.ca_key] {
        assert!(read(key).starts_with("-----BEGIN PRIVATE KEY-----"));
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    assert_ne!(read(&files.key), read(&files.ca_key));
}

#[test]
fn never_overwrites_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(&names(&["localhost"]), dir.path()).unwrap();
    let key = std::fs::read(dir.path().join("key.pem")).unwrap();
    let again = self_signed(&names(&["localhost"]), dir.path()).unwrap_err();
    assert!(
        matches!(again, SelfSignedError::Exists(ref p) if p.ends_with("ca.pem")),
        "{again}"
    );
    assert_eq!(std::fs::read(dir.path().join("key.pem")).unwrap(), key);

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        self_signed(&[], empty.path()),
        Err(SelfSignedError::NoName)
    ));
    let long = "a".repeat(64);
    for bad in [
        "",
        "a b",
        "-x.test",
        "x..test",
        "ünï.test",
        long.as_str(),
        "*",
    ] {
        let err = self_signed(&names(&[bad]), empty.path()).unwrap_err();
        assert!(
            matches!(err, SelfSignedError::BadName { .. }),
            "{bad:?}: {err}"
        );
    }
    let many: Vec<String> = (0..=MAX_NAMES).map(|i| format!("h{i}.test")).collect();
    assert!(matches!(
        self_signed(&many, empty.path()),
        Err(SelfSignedError::TooManyNames(101))
    ));
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
