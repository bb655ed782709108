//! Request heads as they go to a replica.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};

use crate::data::hop::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::state::Via;

/// Serialize a request head for a replica: `method target HTTP/1.1`, a `host` field if the
/// client sent none, the client's fields minus hop-by-hop ones (RFC 9110 §7.6.1), and the
/// forwarding fields ([`hop`]): one `x-forwarded-for` line (the client's values, then
/// `forwarded_for`), `x-forwarded-proto: ` `proto` (`http` or `https`) and `x-forwarded-host` (the client's `Host`),
/// which replace the client's own unless `trust_forwarded` (`[proxy] trust_forwarded_for`) and
/// the client sent them, and `via` with `lb`'s mark ([`Via`]) last. A client's `Forwarded` and
/// `X-Real-IP` go on only when trusted.
pub(crate) fn request_head(
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    authority: &str,
    forwarded_for: &HeaderValue,
    proto: &HeaderValue,
    trust_forwarded: bool,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let host = headers.get(header::HOST);
    if host.is_none() {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let listed = hop::connection_tokens(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let hop_by_hop = |name: &str| hop::is_hop_by_hop(name) || listed.iter().any(|t| t == name);
    // Whether the client's own X-Forwarded-Proto / -Host went on (trusted): then lb adds none.
    let (mut sent_proto, mut sent_host) = (false, false);
    for (name, value) in headers {
        if hop_by_hop(name.as_str()) || *name == X_FORWARDED_FOR {
            continue;
        }
        if hop::trusted_only(name) {
            if !trust_forwarded {
                continue;
            }
            if *name == X_FORWARDED_PROTO {
                sent_proto = true;
            } else if *name == X_FORWARDED_HOST {
                sent_host = true;
            }
        }
        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    let chain = headers.get_all(X_FORWARDED_FOR);
    let client_chain = (!hop_by_hop(X_FORWARDED_FOR.as_str())).then(|| chain.iter());
    hop::forwarded_chain(&mut out, client_chain.into_iter().flatten(), forwarded_for);
    out.extend_from_slice(b"\r\n");
    if !sent_proto {
        field(&mut out, b"x-forwarded-proto", proto.as_bytes());
    }
    if let Some(host) = host.filter(|_| !sent_host) {
        field(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    field(&mut out, b"via", Via::mine().value().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Append `name: value\r\n`.
fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(head: &Bytes) -> &str {
        std::str::from_utf8(head).unwrap()
    }

    /// This process's `via` line.
    fn via() -> String {
        format!("via: {}\r\n", Via::mine().value().to_str().unwrap())
    }

    #[test]
    fn request_heads_drop_hop_by_hop_fields_and_add_the_forwarding_fields() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("lb:5000"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-request-id", HeaderValue::from_static("42"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        let head = request_head(
            &http::Method::GET,
            "/home?x=1",
            &headers,
            "127.0.0.1:9",
            &HeaderValue::from_static("10.0.0.1"),
            &hop::PROTO_HTTP,
            false,
        );
        assert_eq!(
            text(&head),
            "GET /home?x=1 HTTP/1.1\r\nhost: lb:5000\r\nx-request-id: 42\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: lb:5000\r\n"
                .to_owned()
                + &via()
                + "\r\n"
        );
        // No Host from the client (HTTP/1.0): the replica's, and no X-Forwarded-Host; over TLS,
        // X-Forwarded-Proto says https.
        let head = request_head(
            &http::Method::HEAD,
            "/",
            &HeaderMap::new(),
            "127.0.0.1:9",
            &HeaderValue::from_static("::1"),
            &hop::PROTO_HTTPS,
            false,
        );
        assert_eq!(
            text(&head),
            "HEAD / HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-forwarded-for: ::1\r\n\
             x-forwarded-proto: https\r\n"
                .to_owned()
                + &via()
                + "\r\n"
        );
    }

    #[test]
    fn a_clients_forwarding_fields_are_replaced_unless_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        let client = HeaderValue::from_static("10.0.0.1");
        let head = request_head(
            &http::Method::GET,
            "/",
            &headers,
            "r:1",
            &client,
            &hop::PROTO_HTTP,
            false,
        );
        assert_eq!(
            text(&head),
            "GET / HTTP/1.1\r\nhost: shop.example\r\n\
             x-forwarded-for: 1.2.3.4, 10.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: shop.example\r\n"
                .to_owned()
                + &via()
                + "\r\n"
        );
        let head = request_head(
            &http::Method::GET,
            "/",
            &headers,
            "r:1",
            &client,
            &hop::PROTO_HTTP,
            true,
        );
        assert_eq!(
            text(&head),
            "GET / HTTP/1.1\r\nhost: shop.example\r\n\
             x-forwarded-proto: https\r\nx-forwarded-host: evil.example\r\n\
             x-forwarded-for: 1.2.3.4, 10.0.0.1\r\n"
                .to_owned()
                + &via()
                + "\r\n"
        );
        // Trusted, but listed as hop-by-hop by the client: dropped, and lb's own go on.
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-proto"),
        );
        let head = request_head(
            &http::Method::GET,
            "/",
            &headers,
            "r:1",
            &client,
            &hop::PROTO_HTTP,
            true,
        );
        assert!(
            text(&head).contains("x-forwarded-proto: http\r\n") && !text(&head).contains("https"),
            "{}",
            text(&head)
        );
        assert!(text(&head).ends_with(&(via() + "\r\n")));
    }

    /// Several `X-Forwarded-For` lines from the client go on as one, the peer last; a client's
    /// `Forwarded` and `X-Real-IP` only when trusted.
    #[test]
    fn one_forwarded_for_line_and_no_untrusted_client_addresses() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("h"));
        headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        headers.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        headers.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        headers.insert("via", HeaderValue::from_static("1.0 fred"));
        let client = HeaderValue::from_static("10.0.0.1");
        for trust in [false, true] {
            let head = request_head(
                &http::Method::GET,
                "/",
                &headers,
                "r:1",
                &client,
                &hop::PROTO_HTTP,
                trust,
            );
            let head = text(&head);
            assert_eq!(head.matches("x-forwarded-for").count(), 1, "{head}");
            assert!(
                head.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1\r\n"),
                "{head}"
            );
            assert_eq!(head.contains("forwarded: for=6.6.6.6"), trust, "{head}");
            assert_eq!(head.contains("x-real-ip"), trust, "{head}");
            assert!(head.contains("via: 1.0 fred\r\n"), "{head}");
            assert!(head.ends_with(&(via() + "\r\n")), "{head}");
        }
        // The client listed X-Forwarded-For as hop-by-hop: only the peer goes on.
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-for"),
        );
        let head = request_head(
            &http::Method::GET,
            "/",
            &headers,
            "r:1",
            &client,
            &hop::PROTO_HTTP,
            false,
        );
        assert!(
            text(&head).contains("x-forwarded-for: 10.0.0.1\r\n"),
            "{}",
            text(&head)
        );
    }
}
