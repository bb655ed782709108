//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, not the message, so
//! a proxy drops them — the fixed ones and any the `Connection` field lists — in both directions.

use http::header::{self, HeaderMap, HeaderName};

/// The client's address, appended after any the client sent.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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
}
