//! `[tls]` in a configuration text.
use std::path::PathBuf;

use super::super::sections::Config;
use super::MinVersion;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text).map_err(|e| e.to_string())
}

#[test]
fn no_section_no_listener() {
    let config = parse("").unwrap();
    assert!(config.tls.is_none());
    assert!(config.certificate_files().is_empty());
}

#[test]
fn a_section_with_certificates() {
    let config = parse(
        "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_version = \"1.3\"\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
         [[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\n",
    )
    .unwrap();
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.min_version, MinVersion::Tls13);
    assert_eq!(tls.listen.port(), 5443);
    let files = config.certificate_files();
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].key, PathBuf::from("b.key"));
}

#[test]
fn a_listener_without_certificates_is_refused() {
    let e = parse("[tls]\nlisten = \"127.0.0.1:5443\"\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("at least one"), "{e}");
}

#[test]
fn unknown_keys_and_bad_versions_are_refused_with_their_place() {
    let e = parse(
        "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_versoin = \"1.2\"\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkye = \"a.key\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains("line 3") && e.contains("did you mean `min_version`"),
        "{e}"
    );
    assert!(e.contains("line 6") && e.contains("`kye`"), "{e}");
    let e = parse(
        "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_version = \"1.1\"\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
    )
    .unwrap_err();
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn the_same_address_as_the_plain_listener_is_refused() {
    let e = parse(
        "listen = \"127.0.0.1:5000\"\n[tls]\nlisten = \"127.0.0.1:5000\"\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
    )
    .unwrap_err();
    assert!(e.contains("plain HTTP"), "{e}");
}

#[test]
fn port_zero_on_both_listeners_is_two_free_ports() {
    parse(
        "listen = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
    )
    .unwrap();
}
