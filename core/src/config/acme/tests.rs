//! `[tls.acme]` in a configuration text.
use std::path::Path;
use std::time::Duration;

use super::super::sections::Config;
use super::super::ConfigError;
use super::{check_domain, Challenge};

fn text(acme: &str) -> String {
    format!("[tls]\nlisten = \"127.0.0.1:5443\"\n[tls.acme]\n{acme}")
}

const GOOD: &str = "directory = \"https://acme.test/dir\"\nemail = \"ops@example.com\"\n\
                    domains = [\"www.example.com\", \"example.com\"]\n";

/// The first problem of `text`: line, column, message.
fn invalid(text: &str) -> (usize, usize, String) {
    match Config::parse(text) {
        Err(ConfigError::Invalid(problems)) => {
            let first = problems.into_iter().next().expect("never empty");
            (first.line, first.column, first.message)
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn acme_alone_is_enough_for_a_listener_and_defaults_apply() {
    let dir = std::env::temp_dir();
    let config = Config::parse_file(&text(GOOD), &dir.join("lb.toml")).unwrap();
    let s = config.acme_settings().expect("acme");
    assert_eq!(s.directory, "https://acme.test/dir");
    assert_eq!(s.contact, ["mailto:ops@example.com"]);
    assert_eq!(s.domains, ["www.example.com", "example.com"]);
    assert_eq!(s.state_dir, dir.join("acme"));
    assert_eq!(s.renew_before, Duration::from_secs(30 * 86_400));
    assert_eq!(s.challenge, Challenge::Http01);
    assert_eq!(s.ca, None);
    assert!(config.certificate_files().is_empty());
}

#[test]
fn every_key_is_read() {
    let dir = tempdir();
    let ca = dir.join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let root = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&ca, root.pem()).unwrap();
    let config = Config::parse_file(
        &text(&format!(
            "{GOOD}state_dir = \"state\"\nrenew_before_days = 10\nchallenge = \"tls-alpn-01\"\nca = \"ca.pem\"\n"
        )),
        &dir.join("lb.toml"),
    )
    .unwrap();
    let s = config.acme_settings().unwrap();
    assert_eq!(s.state_dir, dir.join("state"));
    assert_eq!(s.renew_before, Duration::from_secs(10 * 86_400));
    assert_eq!(s.challenge, Challenge::TlsAlpn01);
    assert_eq!(s.ca.as_deref(), Some(ca.as_path()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_values_are_problems_at_their_place() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "directory = \"http://acme.test/dir\"\ndomains = [\"a.test\"]\n",
            4,
            "must be an https:// URL",
        ),
        (
            "directory = \"not a url\"\ndomains = [\"a.test\"]\n",
            4,
            "not a URL",
        ),
        (
            "directory = \"https://acme.test/\"\nemail = \"nobody\"\ndomains = [\"a.test\"]\n",
            5,
            "not an email address",
        ),
        (
            "directory = \"https://acme.test/\"\nemail = \"a@b\"\ndomains = [\"a.test\"]\n",
            5,
            "no domain",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = []\n",
            5,
            "tls.acme.domains is empty",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"a.test\",\n \"A.test\"]\n",
            6,
            "listed twice",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"bad_name.test\"]\n",
            5,
            "not a valid DNS name",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"*.a.test\"]\n",
            5,
            "wildcard",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"127.0.0.1\"]\n",
            5,
            "IP address",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"a.test\"]\nrenew_before_days = 0\n",
            6,
            "from 1 to 365",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"a.test\"]\nchallenge = \"dns-01\"\n",
            6,
            "",
        ),
        (
            "directory = \"https://acme.test/\"\ndomains = [\"a.test\"]\nemial = \"a@b.c\"\n",
            6,
            "did you mean `email`",
        ),
    ];
    for (acme, line, needle) in cases {
        let (l, _, message) = invalid(&text(acme));
        assert_eq!(l, *line, "{acme}: {message}");
        assert!(message.contains(needle), "{acme}: {message}");
    }
}

#[test]
fn a_state_dir_that_cannot_be_made_or_a_bad_ca_is_a_problem() {
    let dir = tempdir();
    std::fs::write(dir.join("file"), "x").unwrap();
    let (line, _, message) = match Config::parse_file(
        &text(&format!("{GOOD}state_dir = \"file/sub\"\n")),
        &dir.join("lb.toml"),
    ) {
        Err(ConfigError::Invalid(p)) => (p[0].line, p[0].column, p[0].message.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(line, 7, "{message}");
    assert!(message.contains("is not a directory"), "{message}");
    std::fs::write(dir.join("ca.pem"), "no pem here").unwrap();
    let e = Config::parse_file(
        &text(&format!("{GOOD}ca = \"ca.pem\"\n")),
        &dir.join("lb.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 7") && e.contains("tls.acme.ca"), "{e}");
    // A directory not there yet, under a writable one, is fine (and not created).
    Config::parse_file(
        &text(&format!("{GOOD}state_dir = \"new/deeper\"\n")),
        &dir.join("lb.toml"),
    )
    .unwrap();
    assert!(!dir.join("new").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn domain_rules() {
    for good in ["localhost", "a.b-c.test", "example.com.", "x1.y2"] {
        assert_eq!(check_domain(good), Ok(()), "{good}");
    }
    for bad in [
        "", "-a.test", "a..test", "a test", "é.test", "::1", "*.x.test",
    ] {
        assert!(check_domain(bad).is_err(), "{bad}");
    }
    let long = format!("{}.test", "a".repeat(64));
    assert!(check_domain(&long).is_err());
}

/// A fresh directory of this test's own.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lb-acme-config-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Path::new(&dir).is_dir());
    dir
}
