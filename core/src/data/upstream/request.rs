//! Request heads as they go to a replica.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};

use crate::data::hop;

/// Serialize a request head for a replica: `method target HTTP/1.1`, a `host` field if the
/// client sent none, the client's fields minus hop-by-hop ones (RFC 9110 §7.6.1), and
/// `x-forwarded-for`.
pub fn request_head(
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    authority: &str,
    forwarded_for: &HeaderValue,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
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
    for (name, value) in headers {
        if hop::is_hop_by_hop(name.as_str()) || listed.iter().any(|t| t == name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_drop_hop_by_hop_fields_and_add_forwarded_for() {
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
        );
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "GET /home?x=1 HTTP/1.1\r\nhost: lb:5000\r\nx-request-id: 42\r\n\
             x-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        let head = request_head(
            &http::Method::HEAD,
            "/",
            &HeaderMap::new(),
            "127.0.0.1:9",
            &HeaderValue::from_static("::1"),
        );
        assert!(head.starts_with(b"HEAD / HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"));
    }
}
