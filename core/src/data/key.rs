//! The request id `r` a request is routed by: the value `[ring] key` names
//! ([`KeyRule`], read from the snapshot the request loads anyway), turned into a number by
//! [`request_id_from_header`] — a decimal number is itself, anything else the FNV-1a hash of its
//! bytes — or, when the request lacks it, `[ring] key_fallback`: a random 6-digit number or the
//! client's address.
//!
//! Values are hashed as the bytes that arrived, never decoded: `query:user` hashes `a%20b`,
//! `a+b` and `a b` as three different keys, and a path is hashed before any `%XX` is resolved.
//! Nothing here allocates or copies a value (cookies and query strings are scanned in place), so
//! a hostile value costs one pass over bytes the request head already holds (at most 32 KiB),
//! and nothing here panics. The default, `header:X-Request-Id` with a random fallback, is one
//! header lookup, as before keys were configurable.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderValue};
use http::Uri;
use lb_balance::hash::request_id_from_header;

use crate::config::key::{KeyFallback, KeyRule, KeySource};

use super::hop::{PROTO_HTTP, PROTO_HTTPS, X_FORWARDED_FOR};
use super::tls::ConnTls;

/// The client at the other end of a connection, worked out once per connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The TCP peer's address as the value `lb` appends to `X-Forwarded-For`.
    pub(crate) forwarded_for: HeaderValue,
    /// The scheme it used, as `X-Forwarded-Proto` says it: `http`, or `https` over TLS.
    pub(crate) proto: HeaderValue,
    /// What its TLS handshake settled; `None` on the plain listener.
    pub(crate) tls: Option<ConnTls>,
    /// The TCP peer's address as a request id (for `client_ip`).
    id: u64,
}

impl Peer {
    /// The client connected from `ip` (over TLS when `tls` says what its handshake settled).
    pub(crate) fn new(ip: IpAddr, tls: Option<ConnTls>) -> Peer {
        Peer {
            forwarded_for: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            proto: if tls.is_some() {
                PROTO_HTTPS
            } else {
                PROTO_HTTP
            },
            tls,
            id: ip_id(ip),
        }
    }
}

/// The request id of a request with these `headers` and this `uri`, from `peer`, by `rule`.
/// `trust_forwarded_for`: the client's address is the first of its `X-Forwarded-For`.
pub(crate) fn request_id(
    rule: &KeyRule,
    headers: &HeaderMap,
    uri: &Uri,
    peer: &Peer,
    trust_forwarded_for: bool,
) -> u64 {
    let key = match &rule.source {
        KeySource::Header { name, .. } => headers.get(name).map(HeaderValue::as_bytes),
        KeySource::Cookie(name) => cookie(headers, name.as_bytes()),
        KeySource::Query(name) => uri
            .query()
            .and_then(|q| query(q.as_bytes(), name.as_bytes())),
        KeySource::Path => Some(uri.path().as_bytes()),
        KeySource::ClientIp => return client_id(headers, peer, trust_forwarded_for),
    };
    match (key, rule.fallback) {
        (Some(value), _) => request_id_from_header(value),
        (None, KeyFallback::Random) => fastrand::u64(100_000..=999_999),
        (None, KeyFallback::ClientIp) => client_id(headers, peer, trust_forwarded_for),
    }
}

/// The value of cookie `name`: the first `name=value` pair in the `Cookie` fields, in order
/// (clients that split cookies over several fields are read whole). Pairs are separated by `;`
/// with optional spaces; names match exactly (case-sensitive); one pair of double quotes around
/// a value is removed (RFC 6265's quoted form: `sid="a"` is `sid=a`). `None` when it is missing
/// or its value is empty.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    for field in headers.get_all(header::COOKIE) {
        for pair in field.as_bytes().split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if pair[..eq].trim_ascii() != name {
                continue;
            }
            let mut value = pair[eq + 1..].trim_ascii();
            if let [b'"', inner @ .., b'"'] = value {
                value = inner;
            }
            return (!value.is_empty()).then_some(value);
        }
    }
    None
}

/// The raw value of the first parameter `name` (raw, matched exactly) in the query string
/// `query` (`a=1&b=2`, no `?`). Later repetitions are ignored; `None` when it is missing, has
/// no `=`, or its value is empty.
pub(crate) fn query<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    for pair in query.split(|&b| b == b'&') {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if key == name {
            return (!value.is_empty()).then_some(value);
        }
    }
    None
}

/// The client's address as a request id: the TCP peer's, or with `trust_forwarded_for` the first
/// address of `X-Forwarded-For` when it holds one.
fn client_id(headers: &HeaderMap, peer: &Peer, trust_forwarded_for: bool) -> u64 {
    if trust_forwarded_for {
        if let Some(ip) = headers.get(X_FORWARDED_FOR).and_then(first_forwarded_for) {
            return ip_id(ip);
        }
    }
    peer.id
}

/// The first entry of an `X-Forwarded-For` value, if it is an IP address (`1.2.3.4`, `::1`),
/// possibly with a port (`1.2.3.4:80`, `[::1]:80`) — not `unknown` or an obfuscated name.
pub(crate) fn first_forwarded_for(value: &HeaderValue) -> Option<IpAddr> {
    let bytes = value.as_bytes();
    let first = bytes.split(|&b| b == b',').next()?.trim_ascii();
    // The longest IPv6 address with a port is 47 characters; anything longer is not one.
    if first.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(first).ok()?;
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
}

/// An address as a request id: its text (`::ffff:1.2.3.4` as `1.2.3.4`) hashed like any key.
fn ip_id(ip: IpAddr) -> u64 {
    use std::io::Write as _;
    let mut buf = [0u8; 64];
    let mut rest = &mut buf[..];
    let written = write!(rest, "{}", ip.to_canonical()).map(|()| 64 - rest.len());
    // 64 bytes hold any address (at most 45 characters).
    request_id_from_header(&buf[..written.unwrap_or(0)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::key::DEFAULT_KEY;

    fn rule(key: &str, fallback: KeyFallback) -> KeyRule {
        KeyRule {
            source: key.parse().unwrap(),
            fallback,
        }
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn peer() -> Peer {
        Peer::new("10.1.2.3".parse().unwrap(), None)
    }

    fn id(key: &str, fields: &[(&str, &str)], uri: &str) -> u64 {
        request_id(
            &rule(key, KeyFallback::ClientIp),
            &headers(fields),
            &uri.parse().unwrap(),
            &peer(),
            false,
        )
    }

    fn is_random(id: u64) -> bool {
        (100_000..=999_999).contains(&id)
    }

    #[test]
    fn the_default_is_the_assignments_request_id() {
        let default = KeyRule::default();
        let uri: Uri = "/home".parse().unwrap();
        let get =
            |fields: &[(&str, &str)]| request_id(&default, &headers(fields), &uri, &peer(), false);
        assert_eq!(get(&[("X-Request-Id", "3")]), 3);
        assert_eq!(get(&[("x-request-id", " 42 ")]), 42);
        assert_eq!(
            get(&[("X-Request-Id", "user-7")]),
            request_id_from_header(b"user-7")
        );
        // Present but empty is a key (as before): FNV-1a of nothing.
        assert_eq!(get(&[("X-Request-Id", "")]), request_id_from_header(b""));
        // Two fields: the first.
        assert_eq!(get(&[("X-Request-Id", "5"), ("X-Request-Id", "6")]), 5);
        for _ in 0..100 {
            assert!(is_random(get(&[])));
        }
        assert_eq!(default.source.to_string(), DEFAULT_KEY);
    }

    #[test]
    fn each_kind_reads_its_value() {
        let ip = request_id_from_header(b"10.1.2.3");
        assert_eq!(id("header:X-User", &[("x-user", "ann")], "/"), {
            request_id_from_header(b"ann")
        });
        assert_eq!(id("header:X-User", &[], "/"), ip, "missing: the fallback");
        assert_eq!(
            id("cookie:sid", &[("cookie", "a=1; sid=xyz; b=2")], "/"),
            request_id_from_header(b"xyz")
        );
        assert_eq!(id("query:user", &[], "/home?x=1&user=77"), 77);
        assert_eq!(id("path", &[], "/a/b?x=1"), request_id_from_header(b"/a/b"));
        assert_eq!(id("client_ip", &[], "/"), ip);
        // client_ip is never missing: the fallback is not used.
        let random = rule("client_ip", KeyFallback::Random);
        let got = request_id(
            &random,
            &headers(&[]),
            &"/".parse().unwrap(),
            &peer(),
            false,
        );
        assert_eq!(got, ip);
    }

    #[test]
    fn cookies_from_hostile_clients() {
        let find = |fields: &[&str], name: &str| -> Option<String> {
            let fields: Vec<(&str, &str)> = fields.iter().map(|f| ("cookie", *f)).collect();
            cookie(&headers(&fields), name.as_bytes())
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(find(&["sid=1"], "sid").as_deref(), Some("1"));
        // Several Cookie fields: all are read, in order; the first match wins.
        assert_eq!(
            find(&["a=1", "sid=2; sid=3", "sid=4"], "sid").as_deref(),
            Some("2")
        );
        // Spaces and tabs around pairs, names and values; none after the separator.
        assert_eq!(find(&["a=1;sid=x"], "sid").as_deref(), Some("x"));
        assert_eq!(
            find(&["a=1 ;\t sid = y \t; b"], "sid").as_deref(),
            Some("y")
        );
        // Spaces inside a value stay.
        assert_eq!(find(&["sid=a b"], "sid").as_deref(), Some("a b"));
        // Quoted values lose one pair of quotes; a lone quote stays.
        assert_eq!(find(&["sid=\"q v\""], "sid").as_deref(), Some("q v"));
        assert_eq!(find(&["sid=\"\"x\"\""], "sid").as_deref(), Some("\"x\""));
        assert_eq!(find(&["sid=\""], "sid").as_deref(), Some("\""));
        // The value runs to the `;`: an `=` inside it is part of it.
        assert_eq!(find(&["sid=a=b"], "sid").as_deref(), Some("a=b"));
        // Names are case-sensitive and whole.
        assert_eq!(find(&["SID=1; xsid=2; sidx=3"], "sid"), None);
        // Empty, quoted-empty, valueless and garbage are missing.
        for fields in [
            &["sid="][..],
            &["sid=\"\""],
            &["sid"],
            &[";;;;"],
            &[""],
            &["=", "=sid", " = "],
        ] {
            assert_eq!(find(fields, "sid"), None, "{fields:?}");
        }
        // An empty first value is the answer: it is not looked past.
        assert_eq!(find(&["sid=; sid=2"], "sid"), None);
        // Huge: found at the end of 32 KiB of pairs, without a copy.
        let mut big = "x=1;".repeat(8_000);
        big.push_str("sid=end");
        assert_eq!(find(&[&big], "sid").as_deref(), Some("end"));
        // Bytes that are not UTF-8 (obs-text) are compared and hashed as bytes.
        let mut map = HeaderMap::new();
        map.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"sid=\xff\xfe").unwrap(),
        );
        assert_eq!(cookie(&map, b"sid"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn query_parameters_raw_and_first() {
        let find = |q: &str, name: &str| {
            query(q.as_bytes(), name.as_bytes()).map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(find("user=1", "user").as_deref(), Some("1"));
        assert_eq!(find("a=1&user=2&user=3", "user").as_deref(), Some("2"));
        // Not decoded: each spelling is its own key.
        assert_eq!(find("user=a%20b", "user").as_deref(), Some("a%20b"));
        assert_eq!(find("user=a+b", "user").as_deref(), Some("a+b"));
        assert_eq!(find("user%5B%5D=1", "user%5B%5D").as_deref(), Some("1"));
        assert_eq!(find("user%5B%5D=1", "user[]"), None);
        assert_eq!(find("user=a=b", "user").as_deref(), Some("a=b"));
        for q in [
            "",
            "user",
            "user=",
            "user=&user=2",
            "xuser=1",
            "User=1",
            "&&&",
            "=1",
        ] {
            assert_eq!(find(q, "user"), None, "{q:?}");
        }
        let mut big = "x=1&".repeat(8_000);
        big.push_str("user=end");
        assert_eq!(find(&big, "user").as_deref(), Some("end"));
        // Through the URI: no query at all is missing too.
        assert!(is_random(request_id(
            &rule("query:user", KeyFallback::Random),
            &HeaderMap::new(),
            &"/home".parse().unwrap(),
            &peer(),
            false,
        )));
    }

    #[test]
    fn paths_are_hashed_raw_without_the_query() {
        assert_eq!(id("path", &[], "/a%2Fb"), request_id_from_header(b"/a%2Fb"));
        assert_ne!(id("path", &[], "/a%2Fb"), id("path", &[], "/a/b"));
        assert_eq!(id("path", &[], "/a?x=1"), id("path", &[], "/a?x=2"));
        assert_eq!(id("path", &[], "/123"), request_id_from_header(b"/123"));
        assert_eq!(
            id("path", &[], "http://host:1/p?q"),
            request_id_from_header(b"/p")
        );
    }

    #[test]
    fn client_addresses_and_forwarded_for() {
        let from = |xff: &[&str], trust: bool| {
            let fields: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            request_id(
                &rule("client_ip", KeyFallback::Random),
                &headers(&fields),
                &"/".parse().unwrap(),
                &peer(),
                trust,
            )
        };
        let tcp = request_id_from_header(b"10.1.2.3");
        let first = request_id_from_header(b"203.0.113.7");
        // Not trusted: the header is ignored.
        assert_eq!(from(&["203.0.113.7"], false), tcp);
        // Trusted: the first address of the first field.
        assert_eq!(from(&["203.0.113.7"], true), first);
        assert_eq!(from(&[" 203.0.113.7 , 10.0.0.1", "10.0.0.2"], true), first);
        assert_eq!(from(&["203.0.113.7:4711, 10.0.0.1"], true), first);
        assert_eq!(
            from(&["[2001:db8::1]:80"], true),
            request_id_from_header(b"2001:db8::1")
        );
        assert_eq!(
            from(&["::ffff:203.0.113.7"], true),
            first,
            "an IPv4 address written as IPv6 is the same client"
        );
        // Trusted but absent or not an address: the TCP peer.
        for bad in [&[][..], &[""], &["unknown"], &[", 1.2.3.4"], &["1.2.3.4.5"]] {
            assert_eq!(from(bad, true), tcp, "{bad:?}");
        }
        let long = format!("{}, 1.2.3.4", "1".repeat(10_000));
        assert_eq!(from(&[&long], true), tcp);
        let padded = format!("{}1.2.3.4", " ".repeat(10_000));
        assert_eq!(from(&[&padded], true), request_id_from_header(b"1.2.3.4"));
        // The fallback follows the same rule.
        let fallback = request_id(
            &rule("cookie:sid", KeyFallback::ClientIp),
            &headers(&[("x-forwarded-for", "203.0.113.7")]),
            &"/".parse().unwrap(),
            &peer(),
            true,
        );
        assert_eq!(fallback, first);
        // A mapped peer address is the IPv4 one.
        let mapped = Peer::new("::ffff:10.1.2.3".parse().unwrap(), None);
        assert_eq!(mapped.id, tcp);
        assert_eq!(
            Peer::new("::1".parse().unwrap(), None).id,
            request_id_from_header(b"::1")
        );
    }

    #[test]
    fn a_missing_key_falls_back() {
        let random = rule("cookie:sid", KeyFallback::Random);
        let uri: Uri = "/".parse().unwrap();
        let ids: std::collections::HashSet<u64> = (0..50)
            .map(|_| request_id(&random, &HeaderMap::new(), &uri, &peer(), false))
            .collect();
        assert!(ids.iter().all(|&i| is_random(i)));
        assert!(ids.len() > 1, "random spreads");
        let sticky = rule("cookie:sid", KeyFallback::ClientIp);
        let a = request_id(&sticky, &HeaderMap::new(), &uri, &peer(), false);
        let b = request_id(&sticky, &HeaderMap::new(), &uri, &peer(), false);
        assert_eq!((a, b), (peer().id, peer().id));
    }
}
