//! The connector's TLS failure classification.

use super::*;

fn io(e: rustls::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

#[test]
fn handshake_errors_are_classified_in_a_few_words() {
    use rustls::CertificateError as C;
    let of = |e| TlsFailure::of(&io(rustls::Error::InvalidCertificate(e)));
    assert_eq!(
        of(C::UnknownIssuer),
        TlsFailure::NotTrusted("UnknownIssuer".into())
    );
    assert_eq!(
        of(C::UnknownIssuer).to_string(),
        "certificate not trusted (UnknownIssuer)"
    );
    assert!(matches!(of(C::NotValidForName), TlsFailure::WrongName(_)));
    assert_eq!(of(C::Expired), TlsFailure::Expired("Expired".into()));
    assert_eq!(of(C::Revoked), TlsFailure::BadCertificate("Revoked".into()));
    let other = TlsFailure::of(&io(rustls::Error::General("no".into())));
    assert!(matches!(other, TlsFailure::Handshake(_)), "{other:?}");
    let reset = TlsFailure::of(&std::io::ErrorKind::ConnectionReset.into());
    assert!(matches!(reset, TlsFailure::Handshake(_)), "{reset:?}");
}

/// An error that holds another as its source, as hyper's errors hold the connector's.
#[derive(Debug, thiserror::Error)]
#[error("client error (Connect)")]
struct Outer(#[source] BoxError);

#[test]
fn a_tls_failure_is_found_in_an_error_chain_and_a_tcp_one_is_not() {
    let tls = ConnectError::Tls {
        addr: "127.0.0.1:1".into(),
        failure: TlsFailure::NotTrusted("UnknownIssuer".into()),
        source: io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )),
    };
    let outer = Outer(Box::new(tls));
    assert_eq!(
        tls_failure(&outer),
        Some(&TlsFailure::NotTrusted("UnknownIssuer".into()))
    );
    let tcp = Outer(Box::new(ConnectError::Tcp(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )))));
    assert_eq!(tls_failure(&tcp), None);
    assert_eq!(
        ConnectError::NoSettings("a:1".into()).to_string(),
        "no TLS settings for a:1"
    );
}

#[test]
fn the_address_of_a_uri_leaves_out_the_settings_id() {
    let uri: Uri = "https://7@127.0.0.1:8443/home".parse().unwrap();
    assert_eq!(address_of(&uri), Some("127.0.0.1:8443"));
    let uri: Uri = "http://127.0.0.1:80/".parse().unwrap();
    assert_eq!(address_of(&uri), Some("127.0.0.1:80"));
}
