//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, not the message, so
//! a proxy drops them — the fixed ones and any the `Connection` field lists — in both directions.
//!
//! And the fields `lb` adds to every request it forwards, on both forwarding paths (the batching
//! client's `request_head` and hyper's, [`add_forwarded`]), as nginx, HAProxy and Traefik do:
//!
//! - `X-Forwarded-For`: the client's address, appended after any the client sent (the usual
//!   chain; a replica must trust only the last entry);
//! - `X-Forwarded-Proto: http` (`lb` does not terminate TLS) and `X-Forwarded-Host`: the
//!   client's `Host`. A client's own values are replaced (as Traefik does for clients it does
//!   not trust) — unless `[proxy] trust_forwarded_for`, when the proxy in front of `lb` sent
//!   them and they are passed on;
//! - no `Via`, like nginx and HAProxy by default; `Host` itself goes on unchanged.
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The client's address, appended after any the client sent.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used: always `http` (`lb` does not terminate TLS).
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The client's `Host`.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The value of `X-Forwarded-Proto`.
pub(crate) const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");

/// Fields that are always hop-by-hop, lower-case.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the (lower-case) field `name` is always hop-by-hop.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// The tokens of `Connection` field values, trimmed and lower-cased (field names, `close`,
/// `keep-alive`), except `host`: a request without it is not HTTP/1.1, so a client cannot have
/// it removed that way. Allocates nothing when there is no `Connection` field.
pub(crate) fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in values {
        let value = std::str::from_utf8(value).unwrap_or("");
        tokens.extend(
            value
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty() && t != "host"),
        );
    }
    tokens
}

/// Remove every hop-by-hop field from `headers`.
pub(crate) fn strip(headers: &mut HeaderMap) {
    let listed = connection_tokens(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    for name in &listed {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Add the forwarding fields to a request's (already stripped) `headers`: append
/// `forwarded_for` to `X-Forwarded-For`, and set `X-Forwarded-Proto: http` and
/// `X-Forwarded-Host` (the `Host` the client sent; none if it sent none), replacing the client's
/// own values unless `trust` (`[proxy] trust_forwarded_for`) and the client sent them.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, forwarded_for: &HeaderValue, trust: bool) {
    headers.append(X_FORWARDED_FOR, forwarded_for.clone());
    if !(trust && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, PROTO_HTTP);
    }
    if !(trust && headers.contains_key(X_FORWARDED_HOST)) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strip_removes_fixed_and_listed_fields_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-request-id", HeaderValue::from_static("42"));
        strip(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-request-id"]);
    }

    #[test]
    fn host_cannot_be_listed_away() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("lb"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Host, x-a"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        strip(&mut headers);
        assert_eq!(headers.get(header::HOST).unwrap(), "lb");
        assert!(!headers.contains_key("x-a"));
    }

    #[test]
    fn connection_tokens_are_trimmed_and_lower_cased() {
        let values: [&[u8]; 2] = [b" Close , ,X-A", b"keep-alive"];
        assert_eq!(
            connection_tokens(values.into_iter()),
            ["close", "x-a", "keep-alive"]
        );
    }

    #[test]
    fn forwarding_fields_are_added_and_the_clients_replaced_unless_trusted() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop.example:5000"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.append(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        headers.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        let sent = headers.clone();

        add_forwarded(&mut headers, &client, false);
        let all = |h: &HeaderMap, name| -> Vec<String> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(all(&headers, X_FORWARDED_FOR), ["1.2.3.4", "10.0.0.9"]);
        assert_eq!(all(&headers, X_FORWARDED_PROTO), ["http"]);
        assert_eq!(all(&headers, X_FORWARDED_HOST), ["shop.example:5000"]);
        assert_eq!(headers.get(header::HOST).unwrap(), "shop.example:5000");

        let mut trusted = sent.clone();
        add_forwarded(&mut trusted, &client, true);
        assert_eq!(all(&trusted, X_FORWARDED_FOR), ["1.2.3.4", "10.0.0.9"]);
        assert_eq!(all(&trusted, X_FORWARDED_PROTO), ["https", "gopher"]);
        assert_eq!(all(&trusted, X_FORWARDED_HOST), ["evil.example"]);

        // Trusted, but the proxy in front sent none: lb's own.
        let mut bare = HeaderMap::new();
        bare.insert(header::HOST, HeaderValue::from_static("a"));
        add_forwarded(&mut bare, &client, true);
        assert_eq!(all(&bare, X_FORWARDED_PROTO), ["http"]);
        assert_eq!(all(&bare, X_FORWARDED_HOST), ["a"]);
        assert!(!bare.contains_key("via"));

        // No Host at all (HTTP/1.0): no X-Forwarded-Host, and not the client's.
        let mut old = HeaderMap::new();
        old.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        add_forwarded(&mut old, &client, false);
        assert!(!old.contains_key(X_FORWARDED_HOST));
        assert_eq!(all(&old, X_FORWARDED_PROTO), ["http"]);
    }
}
