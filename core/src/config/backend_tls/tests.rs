//! Building [`BackendTls`] from a CA made with rcgen, and the CA file's refusals.

use super::*;

/// A CA certificate (PEM) made with rcgen.
fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn a_ca_file_made_with_rcgen_gives_settings_with_its_name_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
    let tls = BackendTls::build(
        "127.0.0.1:8443",
        Some("backend.test"),
        Some("ca.pem"),
        true,
        dir.path(),
        Protocol::Http1,
    )
    .unwrap();
    assert_eq!(
        tls.server_name,
        ServerName::try_from("backend.test").unwrap()
    );
    assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(tls.verify);
    // The default name is the host of the address; an IP is verified as an IP.
    let by_ip = BackendTls::build(
        "127.0.0.1:8443",
        None,
        Some("ca.pem"),
        true,
        dir.path(),
        Protocol::Http1,
    )
    .unwrap();
    assert!(matches!(by_ip.server_name, ServerName::IpAddress(_)));
    assert_ne!(tls, by_ip);
    let again = BackendTls::build(
        "127.0.0.1:8443",
        Some("backend.test"),
        Some("ca.pem"),
        true,
        dir.path(),
        Protocol::Http1,
    )
    .unwrap();
    assert_eq!(tls, again, "the same entry and file give equal settings");
    // A renewed CA file at the same path is a change.
    std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
    let renewed = BackendTls::build(
        "127.0.0.1:8443",
        Some("backend.test"),
        Some("ca.pem"),
        true,
        dir.path(),
        Protocol::Http1,
    )
    .unwrap();
    assert_ne!(tls, renewed);
    let unverified =
        BackendTls::build("[::1]:8443", None, None, false, dir.path(), Protocol::Http1).unwrap();
    assert!(!unverified.verify);
    assert!(matches!(unverified.server_name, ServerName::IpAddress(_)));
}

#[test]
fn bad_ca_files_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let build = |ca: &str| {
        BackendTls::build(
            "127.0.0.1:1",
            Some("backend.test"),
            Some(ca),
            true,
            dir.path(),
            Protocol::Http1,
        )
        .unwrap_err()
        .to_string()
    };
    let missing = build("missing.pem");
    assert!(missing.contains("missing.pem: cannot be read"), "{missing}");
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let empty = build("empty.pem");
    assert!(
        empty.contains("empty.pem: holds no PEM certificate"),
        "{empty}"
    );
    std::fs::write(
        dir.path().join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = build("garbage.pem");
    assert!(
        garbage.contains("garbage.pem: certificate 1 does not parse"),
        "{garbage}"
    );
    std::fs::write(dir.path().join("big.pem"), vec![b'a'; 1024 * 1024 + 1]).unwrap();
    let big = build("big.pem");
    assert!(big.contains("at most 1048576 bytes"), "{big}");
    std::fs::create_dir(dir.path().join("dir.pem")).unwrap();
    let not_file = build("dir.pem");
    assert!(
        not_file.contains("dir.pem: not a regular file"),
        "{not_file}"
    );
    // A FIFO is refused without being opened (opening one blocks until a writer comes).
    let fifo = dir.path().join("fifo.pem");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let refused = build("fifo.pem");
        assert!(
            refused.contains("fifo.pem: not a regular file"),
            "{refused}"
        );
    }
}

#[test]
fn server_names_are_dns_names_or_ip_addresses() {
    assert!(server_name("api.internal").is_ok());
    assert!(server_name("10.0.0.5").is_ok());
    assert!(server_name("[::1]").is_ok());
    assert!(server_name("not a name").is_err());
    assert!(server_name("").is_err());
    assert_eq!(host_of("api.internal:8443"), "api.internal");
    assert_eq!(host_of("[::1]:8443"), "::1");
}
