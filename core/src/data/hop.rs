//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one connection, not the message, so
//! a proxy drops them — the fixed ones and any the `Connection` field lists — in both directions.
//!
//! And the fields `lb` adds to every request it forwards, on both forwarding paths (the batching
//! client's `request_head` and hyper's, [`add_forwarded`]), as nginx, HAProxy and Traefik do:
//!
//! - `X-Forwarded-For`: the client's address, after any the client sent (the usual chain; a
//!   replica must trust only the last entry), as one field line: the client's values joined
//!   with `, `, then the peer — a backend that reads only the first line sees the whole chain;
//! - `X-Forwarded-Proto: http`, or `https` for a request that came over the TLS listener, and `X-Forwarded-Host`: the
//!   client's `Host`. A client's own values are replaced (as Traefik does for clients it does
//!   not trust) — unless `[proxy] trust_forwarded_for`, when the proxy in front of `lb` sent
//!   them and they are passed on. For the same reason a client's `Forwarded` and `X-Real-IP`
//!   are removed unless trusted (`lb` sets neither);
//! - `Via: 1.1 lb-<id>` ([`Via`]), appended: this process's mark, which lets `lb` refuse a
//!   request that comes back to it (a loop); `Host` itself goes on unchanged.
use bytes::BytesMut;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::Request;

use crate::state::Via;

/// The client's address, appended after any the client sent.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used: `http`, or `https` on the TLS listener.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The client's `Host`.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The value of `X-Forwarded-Proto` on the plain listener.
pub(crate) const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
/// The value of `X-Forwarded-Proto` on the TLS listener.
pub(crate) const PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");
/// A client address some proxies set; removed from untrusted clients' requests.
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether a client's field `name` is one only a trusted proxy may send (removed from other
/// clients' requests): `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`, `X-Real-IP`.
#[inline]
pub(crate) fn trusted_only(name: &HeaderName) -> bool {
    *name == X_FORWARDED_PROTO
        || *name == X_FORWARDED_HOST
        || *name == header::FORWARDED
        || *name == X_REAL_IP
}

/// `X-Forwarded-For` as one value: the client's `values` (empty ones skipped) joined with `, `,
/// then `peer`, written to `out`.
pub(crate) fn forwarded_chain<'a>(
    out: &mut BytesMut,
    values: impl Iterator<Item = &'a HeaderValue>,
    peer: &HeaderValue,
) {
    for value in values {
        let value = value.as_bytes().trim_ascii();
        if !value.is_empty() {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(peer.as_bytes());
}

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

/// Add the forwarding fields to a request's (already stripped) `headers`: `forwarded_for` after
/// the client's `X-Forwarded-For` values, in one field line; `X-Forwarded-Proto: proto` and
/// `X-Forwarded-Host` (the `Host` the client sent; none if it sent none), replacing the client's
/// own values unless `trust` (`[proxy] trust_forwarded_for`) and the client sent them; the
/// client's `Forwarded` and `X-Real-IP` removed unless `trust`; and `lb`'s [`Via`] appended.
/// Allocates only when the client sent `X-Forwarded-For` itself.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    forwarded_for: &HeaderValue,
    proto: &HeaderValue,
    trust: bool,
) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(forwarded_for.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut chain = BytesMut::new();
            forwarded_chain(&mut chain, entry.iter(), forwarded_for);
            // Valid: made of valid field values, commas and spaces.
            let joined = HeaderValue::from_maybe_shared(chain.freeze())
                .unwrap_or_else(|_| forwarded_for.clone());
            entry.insert(joined);
        }
    }
    if !(trust && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, proto.clone());
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
    if !trust {
        headers.remove(header::FORWARDED);
        headers.remove(X_REAL_IP);
    }
    headers.append(header::VIA, Via::mine().value().clone());
}

/// Prepare a client's request head to go to a replica, as both hyper forwarding paths need it
/// (the transport's and the WebSocket upgrade's): the hop-by-hop fields stripped ([`strip`]),
/// the forwarding fields added ([`add_forwarded`]: `forwarded_for` and `proto` are the client's
/// `Peer::forwarded_for` and `Peer::proto`, `trust` is `[proxy] trust_forwarded_for`), and the
/// target it goes with, in origin form: its path and query (`/` when it has none). Allocates
/// only as [`strip`] and [`add_forwarded`] do.
pub(crate) fn outgoing_head(
    parts: &mut http::request::Parts,
    forwarded_for: &HeaderValue,
    proto: &HeaderValue,
    trust: bool,
) -> PathAndQuery {
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    strip(&mut parts.headers);
    add_forwarded(&mut parts.headers, forwarded_for, proto, trust);
    path_and_query
}

/// Make a request that came over HTTP/2 (a stream) one that can go to a replica over
/// HTTP/1.1, as RFC 9113 §8.3.1 and §8.2.3 say: `Host` from `:authority` (replacing any
/// `Host` the client sent), its cookie fields joined into one with `; `, and the target in
/// origin form (path and query; `*` stays). The version is left for the caller to change once
/// it has been logged. Connection-specific fields cannot be in it (h2 refuses them) and `te`
/// goes with the other hop-by-hop fields ([`strip`]). Allocates only for several cookies.
pub(crate) fn from_h2<B>(req: &mut Request<B>) {
    if let Some(authority) = req.uri().authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    if let Entry::Occupied(mut cookies) = req.headers_mut().entry(header::COOKIE) {
        if cookies.iter().nth(1).is_some() {
            let mut joined = BytesMut::new();
            for (i, value) in cookies.iter().enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            // Valid: made of valid field values and "; ".
            if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
                cookies.insert(value);
            }
        }
    }
    if req.uri().authority().is_some() {
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn an_http2_request_becomes_an_http1_one() {
        let mut req = Request::builder()
            .version(http::Version::HTTP_2)
            .uri("https://shop.example:5443/cart?x=1")
            .header(header::HOST, "other.example")
            .header(header::COOKIE, "a=1")
            .header(header::COOKIE, "b=2")
            .header("x-request-id", "7")
            .body(())
            .unwrap();
        from_h2(&mut req);
        assert_eq!(req.uri(), "/cart?x=1");
        assert_eq!(req.headers()[header::HOST], "shop.example:5443");
        let cookies: Vec<_> = req.headers().get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        assert_eq!(req.headers()["x-request-id"], "7");
        // Without an authority (a client that sent none): the Host it sent stays.
        let mut req = Request::builder()
            .uri("/p")
            .header(header::HOST, "h")
            .body(())
            .unwrap();
        from_h2(&mut req);
        assert_eq!(req.uri(), "/p");
        assert_eq!(req.headers()[header::HOST], "h");
    }

    #[test]
    fn an_outgoing_head_is_stripped_forwarded_and_its_target_in_origin_form() {
        let client = HeaderValue::from_static("10.0.0.9");
        let req = Request::builder()
            .uri("/chat?room=a")
            .header(header::HOST, "lb.example")
            .header(header::CONNECTION, "upgrade, x-secret")
            .header(header::UPGRADE, "websocket")
            .header("x-secret", "1")
            .header("x-request-id", "7")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let path = outgoing_head(&mut parts, &client, &PROTO_HTTP, false);
        assert_eq!(path.as_str(), "/chat?room=a");
        for gone in ["connection", "upgrade", "x-secret"] {
            assert!(!parts.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(parts.headers["x-request-id"], "7");
        assert_eq!(parts.headers[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(parts.headers[X_FORWARDED_PROTO], "http");
        assert_eq!(parts.headers[X_FORWARDED_HOST], "lb.example");
        assert!(parts.headers.contains_key(header::VIA));
        // A target without a path: `/` goes out.
        let (mut parts, ()) = Request::builder()
            .uri("http://h")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            outgoing_head(&mut parts, &client, &PROTO_HTTP, false).as_str(),
            "/"
        );
    }

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

        add_forwarded(&mut headers, &client, &PROTO_HTTP, false);
        let all = |h: &HeaderMap, name| -> Vec<String> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(all(&headers, X_FORWARDED_FOR), ["1.2.3.4, 10.0.0.9"]);
        assert_eq!(all(&headers, X_FORWARDED_PROTO), ["http"]);
        assert_eq!(all(&headers, X_FORWARDED_HOST), ["shop.example:5000"]);
        assert_eq!(headers.get(header::HOST).unwrap(), "shop.example:5000");

        let mut trusted = sent.clone();
        add_forwarded(&mut trusted, &client, &PROTO_HTTP, true);
        assert_eq!(all(&trusted, X_FORWARDED_FOR), ["1.2.3.4, 10.0.0.9"]);
        assert_eq!(all(&trusted, X_FORWARDED_PROTO), ["https", "gopher"]);
        assert_eq!(all(&trusted, X_FORWARDED_HOST), ["evil.example"]);

        // Trusted, but the proxy in front sent none: lb's own.
        let mut bare = HeaderMap::new();
        bare.insert(header::HOST, HeaderValue::from_static("a"));
        add_forwarded(&mut bare, &client, &PROTO_HTTP, true);
        assert_eq!(all(&bare, X_FORWARDED_PROTO), ["http"]);
        assert_eq!(all(&bare, X_FORWARDED_HOST), ["a"]);
        assert_eq!(all(&bare, X_FORWARDED_FOR), ["10.0.0.9"]);
        assert_eq!(bare.get_all(header::VIA).iter().count(), 1);

        // No Host at all (HTTP/1.0): no X-Forwarded-Host, and not the client's.
        let mut old = HeaderMap::new();
        old.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        add_forwarded(&mut old, &client, &PROTO_HTTP, false);
        assert!(!old.contains_key(X_FORWARDED_HOST));
        assert_eq!(all(&old, X_FORWARDED_PROTO), ["http"]);
    }

    /// A client's `X-Forwarded-For` lines become one line with the peer last (a backend that
    /// reads only the first line sees the whole chain); `Forwarded` and `X-Real-IP` go unless
    /// trusted; `Via` is appended after a client's own.
    #[test]
    fn one_forwarded_for_line_no_untrusted_client_addresses_and_lbs_via() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut sent = HeaderMap::new();
        sent.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        sent.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static(" 2.2.2.2, 3.3.3.3 "),
        );
        sent.append(X_FORWARDED_FOR, HeaderValue::from_static(""));
        sent.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        sent.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        sent.insert(header::VIA, HeaderValue::from_static("1.0 fred"));
        let values = |h: &HeaderMap, name: HeaderName| -> Vec<String> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        let mine = Via::mine().value().to_str().unwrap().to_owned();
        for trust in [false, true] {
            let mut headers = sent.clone();
            add_forwarded(&mut headers, &client, &PROTO_HTTP, trust);
            assert_eq!(
                values(&headers, X_FORWARDED_FOR),
                ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"],
                "trust {trust}"
            );
            assert_eq!(
                values(&headers, header::VIA),
                ["1.0 fred".to_owned(), mine.clone()]
            );
            let kept = |name| headers.contains_key(name);
            assert_eq!(kept(header::FORWARDED), trust);
            assert_eq!(kept(X_REAL_IP), trust);
        }
        for name in [
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            header::FORWARDED,
            X_REAL_IP,
        ] {
            assert!(trusted_only(&name), "{name}");
        }
        assert!(!trusted_only(&X_FORWARDED_FOR) && !trusted_only(&header::VIA));
    }
}
