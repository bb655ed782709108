//! `[ring] key` and `[ring] key_fallback`: what a request is hashed by, as plain data.
//!
//! A key is read and checked with the rest of `lb.toml` (a bad one is a problem with line and
//! column, and a bad live reload keeps the running rule), published in every
//! [`Snapshot`](crate::state::Snapshot), and applied to each request by the data plane
//! (`data/key.rs`), which reads it from the snapshot it loads anyway.
//!
//! | `key` | a request is hashed by |
//! |---|---|
//! | `"header:NAME"` | the first `NAME` header field (names are case-insensitive) |
//! | `"cookie:NAME"` | cookie `NAME` (names are case-sensitive) |
//! | `"query:NAME"` | the first query parameter `NAME`, raw (not percent-decoded) |
//! | `"path"` | the path, without the query, raw |
//! | `"client_ip"` | the client's address |
//!
//! The default, `"header:X-Request-Id"`, is the assignment's request id.

use std::fmt;

use http::HeaderName;
use serde::Deserialize;

/// The key `lb` hashes requests by unless `[ring] key` says otherwise.
pub(crate) const DEFAULT_KEY: &str = "header:X-Request-Id";

/// What a request is hashed by (`[ring] key`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum KeySource {
    /// The value of the first header field with this name.
    Header {
        /// The name, as the data plane looks it up.
        name: HeaderName,
        /// The name as the file spells it (shown in the log and `/_lb/ring`).
        spelled: Box<str>,
    },
    /// The value of this cookie, from any `Cookie` field.
    Cookie(Box<str>),
    /// The raw value of the first query parameter with this (raw) name.
    Query(Box<str>),
    /// The raw path of the request target, without the query.
    Path,
    /// The client's IP address.
    ClientIp,
}

impl Default for KeySource {
    fn default() -> Self {
        DEFAULT_KEY.parse().expect("the default key is valid")
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Header { spelled, .. } => write!(f, "header:{spelled}"),
            KeySource::Cookie(name) => write!(f, "cookie:{name}"),
            KeySource::Query(name) => write!(f, "query:{name}"),
            KeySource::Path => f.write_str("path"),
            KeySource::ClientIp => f.write_str("client_ip"),
        }
    }
}

/// What a request that lacks its key is hashed by (`[ring] key_fallback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyFallback {
    /// A random number in 100000–999999, as the assignment has it.
    #[default]
    Random,
    /// The client's address (so a client without the key still sticks to one replica).
    ClientIp,
}

impl fmt::Display for KeyFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFallback::Random => "random",
            KeyFallback::ClientIp => "client_ip",
        })
    }
}

/// The whole rule: the key and what replaces it when a request lacks it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KeyRule {
    /// What a request is hashed by.
    pub source: KeySource,
    /// What a request without it is hashed by.
    pub fallback: KeyFallback,
}

/// Why a `[ring] key` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// Not one of the forms.
    #[error(
        "ring.key {0:?} is not a known key; expected \"header:NAME\", \"cookie:NAME\", \
         \"query:NAME\", \"path\" or \"client_ip\""
    )]
    Unknown(String),
    /// `header:`, `cookie:` or `query:` with nothing after it.
    #[error("ring.key {0:?} names no {1}; write \"{1}:NAME\"")]
    NoName(String, &'static str),
    /// `path:…` or `client_ip:…`.
    #[error("ring.key {0:?}: \"{1}\" takes no name")]
    TakesNoName(String, &'static str),
    /// A name with characters its kind does not allow.
    #[error("ring.key {key:?}: {name:?} is not a {what}; {rule}")]
    BadName {
        /// The whole value.
        key: String,
        /// The name part.
        name: String,
        /// "header field name", …
        what: &'static str,
        /// Which characters are allowed.
        rule: &'static str,
    },
}

/// The characters of an RFC 9110 token (header field names; cookie names by RFC 6265).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A query parameter name as it appears in a raw query string: visible ASCII without the
/// characters that delimit parameters.
fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#'))
}

/// At most 40 characters of `s`, for messages (a value may be huge).
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

const TOKEN_RULE: &str = "allowed are letters, digits and !#$%&'*+-.^_`|~ (no spaces)";

impl std::str::FromStr for KeySource {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        /// The kinds that take a name, as `'static` strings for messages.
        const NAMED: [&str; 3] = ["header", "cookie", "query"];
        let key = || shown(text);
        let (kind, name) = text.split_once(':').unwrap_or((text, ""));
        if let Some(kind) = NAMED.into_iter().find(|k| *k == kind) {
            if name.is_empty() {
                return Err(KeyError::NoName(key(), kind));
            }
        }
        let bad = |what, rule| KeyError::BadName {
            key: key(),
            name: shown(name),
            what,
            rule,
        };
        match (kind, text.contains(':')) {
            ("path", false) => Ok(KeySource::Path),
            ("client_ip", false) => Ok(KeySource::ClientIp),
            ("path", true) => Err(KeyError::TakesNoName(key(), "path")),
            ("client_ip", true) => Err(KeyError::TakesNoName(key(), "client_ip")),
            ("header", _) => {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .filter(|_| is_token(name))
                    .ok_or_else(|| bad("header field name", TOKEN_RULE))?;
                Ok(KeySource::Header {
                    name: header,
                    spelled: name.into(),
                })
            }
            ("cookie", _) if is_token(name) => Ok(KeySource::Cookie(name.into())),
            ("cookie", _) => Err(bad("cookie name", TOKEN_RULE)),
            ("query", _) if is_query_name(name) => Ok(KeySource::Query(name.into())),
            ("query", _) => Err(bad(
                "query parameter name",
                "allowed are visible ASCII characters but '&', '=' and '#' (raw, as in the URL: \
                 no spaces)",
            )),
            _ => Err(KeyError::Unknown(key())),
        }
    }
}

impl TryFrom<String> for KeySource {
    type Error = KeyError;

    fn try_from(text: String) -> Result<Self, KeyError> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KeySource, String> {
        text.parse::<KeySource>().map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        for text in [
            "header:X-Request-Id",
            "header:x-user",
            "cookie:session_id",
            "cookie:SID",
            "query:user",
            "query:user%20id",
            "query:a[b]",
            "path",
            "client_ip",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        let KeySource::Header { name, .. } = parse("header:X-Request-Id").unwrap() else {
            panic!("a header key");
        };
        assert_eq!(name, "x-request-id", "looked up case-insensitively");
        assert_eq!(KeySource::default().to_string(), DEFAULT_KEY);
        assert_eq!(
            KeyRule::default(),
            KeyRule {
                source: parse(DEFAULT_KEY).unwrap(),
                fallback: KeyFallback::Random
            }
        );
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let unknown = parse("foo").unwrap_err();
        assert!(
            unknown.contains("\"foo\" is not a known key") && unknown.contains("\"cookie:NAME\""),
            "{unknown}"
        );
        for (text, expected) in [
            ("", "is not a known key"),
            ("Header:X", "is not a known key"),
            ("ip", "is not a known key"),
            ("cookie:", "names no cookie; write \"cookie:NAME\""),
            ("header", "names no header"),
            ("query:", "names no query"),
            ("header:bad name", "\"bad name\" is not a header field name"),
            ("header:x:y", "is not a header field name"),
            ("header:é", "is not a header field name"),
            ("cookie:a=b", "is not a cookie name"),
            ("cookie:a;b", "is not a cookie name"),
            ("query:a&b", "is not a query parameter name"),
            ("query:a b", "is not a query parameter name"),
            ("query:a=", "is not a query parameter name"),
            ("path:/x", "\"path\" takes no name"),
            ("client_ip:v4", "\"client_ip\" takes no name"),
        ] {
            let message = parse(text).unwrap_err();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
        // A huge value is not echoed whole.
        let long = format!("header:{}", " ".repeat(100_000));
        assert!(parse(&long).unwrap_err().len() < 300);
    }
}
