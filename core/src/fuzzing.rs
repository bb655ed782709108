//! The properties the fuzz targets in `fuzz/` check, one function per target, each taking the
//! fuzzer's raw bytes and panicking only when a property fails (never on hostile input).
//!
//! Compiled with the `fuzzing` feature (for `fuzz/`) and in `lb`'s own tests, which replay
//! every input kept under `fuzz/regressions/` and `fuzz/corpus/` (`fuzzing/tests.rs`), so a
//! crash once found stays fixed without cargo-fuzz. The functions are thin: they reach the
//! parsers where they live (`data/upstream/framing.rs`, `data/upstream/chunked.rs`,
//! `config/`, `config/key.rs` with `data/key.rs`) and assert what must hold of their answers.
//!
//! - [`framing`]: a replica's response head (status line, fields) and how its body is framed.
//! - [`chunked`]: the chunked decoder, fed the same bytes whole and split at arbitrary points.
//! - [`config`]: what `lb check` runs on an `lb.toml`; an `ok` means the file loads.
//! - [`key`]: a `[ring] key` rule and the request id it reads from an arbitrary request head.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};

use crate::config::key::{KeyFallback, KeyRule, KeySource};
use crate::config::problem::MAX_PROBLEMS;
use crate::config::{Config, ConfigError};
use crate::data::key::{cookie, query, request_id, Peer};
use crate::data::upstream::chunked::{chunked_step, Chunk, ChunkStep};
use crate::data::upstream::framing::{framing as body_framing, parse_head, Framing, ParsedHead};
use crate::data::upstream::{UpstreamError, MAX_HEAD};

#[cfg(test)]
mod tests;

/// Most header fields the framing target parses itself to compare (as many as the client).
const FIELDS: usize = 100;

/// A response head from a replica: `data[0]`'s low bit says whether it answers `HEAD`, its next
/// byte where the rest is cut for the prefix check; the rest is the bytes the replica sent.
///
/// Holds: a complete head's length is within the input and at most `MAX_HEAD`; an incomplete
/// input is no larger than `MAX_HEAD`; a shorter prefix of a complete head is never complete;
/// the framing of a final response is the one `framing::framing` gives for its fields, empty for `HEAD`,
/// 1xx, 204 and 304; a Transfer-Encoding beside a Content-Length closes the connection; the
/// fields handed on hold no Content-Length beside a Transfer-Encoding; a body read by that
/// framing never takes more bytes than follow the head.
pub fn framing(data: &[u8]) {
    let [flags, cut, buf @ ..] = data else {
        return;
    };
    let head_only = flags & 1 == 1;
    let parsed = parse_head(buf, head_only);
    let len = match &parsed {
        Ok(ParsedHead::Partial) => {
            assert!(
                buf.len() <= MAX_HEAD,
                "{} bytes are still partial",
                buf.len()
            );
            return;
        }
        Ok(ParsedHead::Interim(len)) | Ok(ParsedHead::Final(len, _)) => *len,
        Err(UpstreamError::Invalid(_)) => return,
        Err(e) => panic!("parsing a head failed with {e:?}, not as invalid"),
    };
    assert!(len <= buf.len() && len <= MAX_HEAD, "head of {len} bytes");
    // A head that arrives in two reads is not taken as complete after the first.
    let prefix = usize::from(*cut) * len / 256;
    if prefix < len {
        let early = parse_head(&buf[..prefix], head_only);
        assert!(
            !matches!(early, Ok(ParsedHead::Interim(_) | ParsedHead::Final(..))),
            "the first {prefix} of a {len}-byte head parse as complete"
        );
    }
    let Ok(ParsedHead::Final(_, head)) = parsed else {
        return;
    };
    // The same head parsed here: its status and fields, framed directly.
    let mut fields = [httparse::EMPTY_HEADER; FIELDS];
    let mut again = httparse::Response::new(&mut fields);
    assert!(matches!(again.parse(buf), Ok(httparse::Status::Complete(n)) if n == len));
    let status = StatusCode::from_u16(again.code.unwrap_or(0)).expect("the client took it");
    let direct = body_framing(head_only, status, again.headers).expect("the client framed it");
    assert_eq!(head.framing, direct.framing);
    if head_only || status.is_informational() || status == 204 || status == 304 {
        assert_eq!(
            head.framing,
            Framing::Length(0),
            "a response without a body"
        );
    }
    if direct.close_after {
        assert!(
            head.close_after,
            "Transfer-Encoding beside Content-Length keeps the connection"
        );
    }
    let framing = head.framing;
    let transfer_encoded = direct.transfer_encoded;
    let response = head.into_response(crate::data::body::Source::Full(None));
    if transfer_encoded {
        assert!(
            !response
                .headers()
                .contains_key(http::header::CONTENT_LENGTH),
            "Content-Length handed on beside Transfer-Encoding"
        );
    }
    for hop in ["connection", "transfer-encoding", "keep-alive", "upgrade"] {
        assert!(!response.headers().contains_key(hop), "{hop} handed on");
    }
    let body = &buf[len..];
    let taken = match framing {
        Framing::Length(n) => usize::try_from(n).map_or(body.len(), |n| n.min(body.len())),
        Framing::UntilClose => body.len(),
        Framing::Chunked(state) => decode(state, &mut BytesMut::from(body)).taken,
    };
    assert!(
        taken <= body.len(),
        "a body of {taken} bytes from {}",
        body.len()
    );
}

/// What decoding a chunked body from one buffer came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ended; these bytes were left after it.
    Done(Vec<u8>),
    /// The input ended first, in this state.
    More(Chunk),
    /// The decoder refused the input.
    Invalid,
}

/// A chunked body decoded step by step from `buf`, as the connection task does.
struct Decoded {
    /// The body's data.
    body: Vec<u8>,
    /// Input bytes consumed (framing and data).
    taken: usize,
    /// How it ended.
    outcome: Outcome,
}

/// Decode from `state` until the decoder needs more than `buf` holds, ends or refuses; each
/// step's promises checked on the way.
fn decode(mut state: Chunk, buf: &mut BytesMut) -> Decoded {
    let given = buf.len();
    let mut body = Vec::new();
    let outcome = loop {
        let before = buf.len();
        let step = chunked_step(state, buf);
        assert!(buf.len() <= before, "a step grew the buffer");
        match step {
            Ok(ChunkStep::More) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "a step that asks for more consumed bytes"
                );
                break Outcome::More(state);
            }
            Ok(ChunkStep::State(next)) => {
                assert!(buf.len() < before, "a framing step consumed nothing");
                state = next;
            }
            Ok(ChunkStep::Data(next, data)) => {
                let Chunk::Data(left) = state else {
                    panic!("data from state {state:?}");
                };
                assert!(
                    !data.is_empty() && data.len() as u64 <= left,
                    "{} of {left}",
                    data.len()
                );
                assert_eq!(before - buf.len(), data.len(), "data is what was consumed");
                let rest = left - data.len() as u64;
                assert_eq!(
                    next,
                    if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    }
                );
                body.extend_from_slice(&data);
                state = next;
            }
            Ok(ChunkStep::Done) => break Outcome::Done(buf.to_vec()),
            Err(UpstreamError::Invalid(_)) => break Outcome::Invalid,
            Err(e) => panic!("the decoder failed with {e:?}, not as invalid"),
        }
    };
    let taken = given - buf.len();
    assert!(
        body.len() <= taken,
        "{} body bytes from {taken} consumed",
        body.len()
    );
    Decoded {
        body,
        taken,
        outcome,
    }
}

/// A chunked body: `data[0]` seeds where the rest is split into reads; the rest is the bytes
/// after the response head.
///
/// Holds: no step consumes more than it was given or hands out more data than its chunk has
/// left; the body never exceeds the bytes consumed; and the body, where it ends, what is left
/// after it, or the refusal, are the same whether the bytes arrive whole or in pieces.
pub fn chunked(data: &[u8]) {
    let [seed, input @ ..] = data else {
        return;
    };
    let whole = decode(Chunk::Size, &mut BytesMut::from(input));
    // The same bytes in reads of 1 to 16 bytes (sizes from a small generator seeded by `seed`).
    let mut rng = u32::from(*seed) | 1;
    let mut buf = BytesMut::new();
    let mut state = Chunk::Size;
    let mut body = Vec::new();
    let mut rest = input;
    let split = loop {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (rng as usize % 16 + 1).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let step = decode(state, &mut buf);
        body.extend_from_slice(&step.body);
        match step.outcome {
            Outcome::More(next) if !rest.is_empty() => state = next,
            Outcome::Done(mut left) => {
                left.extend_from_slice(rest);
                break Outcome::Done(left);
            }
            outcome => break outcome,
        }
    };
    assert_eq!(whole.outcome, split, "whole and in pieces end differently");
    if whole.outcome != Outcome::Invalid {
        assert_eq!(whole.body, body, "whole and in pieces decode differently");
    }
}

/// An `lb.toml`: what `lb check FILE` runs (parse, check, resolve the hash), with plugins
/// looked up nowhere (only the compiled-in hashes), on the bytes as UTF-8.
///
/// Holds: a refusal lists between 1 and [`MAX_PROBLEMS`] problems, each at a line and column
/// inside the text; an accepted file parses again the same from its own text, and its balancer
/// places its replicas (what `lb` does first with it) when that is cheap enough to try here.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = Config::parse_file(text, Path::new("fuzz/lb.toml"))
        .and_then(|config| config.resolve_hash_in(&[]).map(|hash| (config, hash)));
    let (config, hash) = match checked {
        Ok(ok) => ok,
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty() && problems.len() <= MAX_PROBLEMS);
            let lines = text.split('\n').count();
            for problem in &problems {
                assert!(
                    (1..=lines).contains(&problem.line) && problem.column >= 1,
                    "{problem} in a text of {lines} lines"
                );
                let line = text.split('\n').nth(problem.line - 1).unwrap_or("");
                assert!(
                    problem.column <= line.chars().count() + 1,
                    "{problem}: line {} has {} characters",
                    problem.line,
                    line.chars().count()
                );
            }
            return;
        }
        Err(e) => panic!("a text was refused as {e:?}, not as invalid"),
    };
    let again = Config::parse(text).expect("an accepted text parses again");
    assert_eq!(again.replicas.len(), config.replicas.len());
    assert_eq!(again.ring_params(), config.ring_params());
    assert_eq!(again.listening(), config.listening());
    assert_eq!(again.ring.key_rule(), config.ring.key_rule());
    let balancer = config.balancer();
    let ids: Vec<u64> = config.replicas.iter().map(|r| *r.id.get_ref()).collect();
    if balancer.build_cost(ids.len()) <= 1 << 20 {
        let placement = balancer
            .place(hash, &ids)
            .unwrap_or_else(|e| panic!("a checked file's replicas cannot be placed: {e}"));
        assert_eq!(placement.server_ids(), &ids[..]);
        if !ids.is_empty() {
            for id in [0, 1, u64::MAX] {
                let member = placement.lookup(id).expect("a replica for every request");
                assert!(member < ids.len());
            }
        }
    }
}

/// A `[ring] key` rule and a request: `data[0]` picks the fallback (bit 0), whether
/// `X-Forwarded-For` is trusted (bit 1) and the peer's address family (bit 2); the rule text runs
/// to the first newline; the rest is a request head (completed with an empty line if it has
/// none), taken as hyper would take it or not at all.
///
/// Holds: the rule is accepted in `lb.toml` exactly when it parses alone, and prints back as
/// itself; a request's id is the same twice (unless it is the random fallback, then it is a
/// 6-digit number); a header key's id is its first field's value hashed; a cookie's or query
/// parameter's value is a piece of the field or query it came from, without delimiters.
pub fn key(data: &[u8]) {
    let [flags, rest @ ..] = data else {
        return;
    };
    let (rule, head) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => (&rest[..end], &rest[end + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(rule) = std::str::from_utf8(rule) else {
        return;
    };
    let source = rule.parse::<KeySource>();
    let file = format!("[ring]\nkey = {}\n", toml_string(rule));
    let in_file = Config::parse(&file);
    assert_eq!(
        source.is_ok(),
        in_file.is_ok(),
        "{rule:?} alone: {source:?}; in lb.toml: {:?}",
        in_file.as_ref().err()
    );
    let Ok(source) = source else {
        return;
    };
    assert_eq!(source.to_string(), rule, "a rule prints back as itself");
    assert_eq!(
        in_file.expect("checked above").ring.key_rule().source,
        source
    );
    let rule = KeyRule {
        source,
        fallback: if flags & 1 == 1 {
            KeyFallback::ClientIp
        } else {
            KeyFallback::Random
        },
    };
    let trust = flags & 2 == 2;
    let peer = Peer::new(
        if flags & 4 == 4 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(*flags)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, *flags))
        },
        None,
    );
    let Some((headers, uri)) = request(head) else {
        return;
    };
    let id = request_id(&rule, &headers, &uri, &peer, trust);
    let present = match &rule.source {
        KeySource::Header { name, .. } => {
            if let Some(value) = headers.get(name) {
                assert_eq!(
                    id,
                    lb_balance::hash::request_id_from_header(value.as_bytes())
                );
            }
            headers.contains_key(name)
        }
        KeySource::Cookie(name) => {
            let value = cookie(&headers, name.as_bytes());
            if let Some(value) = value {
                let within = headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .any(|field| is_within(value, field.as_bytes()));
                assert!(within, "cookie value not from a Cookie field");
                assert!(!value.is_empty() && !value.contains(&b';'));
            }
            value.is_some()
        }
        KeySource::Query(name) => {
            let q = uri.query().unwrap_or("").as_bytes();
            let value = query(q, name.as_bytes());
            if let Some(value) = value {
                assert!(is_within(value, q), "query value not from the query");
                assert!(!value.is_empty() && !value.contains(&b'&'));
            }
            value.is_some()
        }
        KeySource::Path | KeySource::ClientIp => true,
    };
    if !present && rule.fallback == KeyFallback::Random {
        assert!((100_000..=999_999).contains(&id), "random fallback {id}");
    } else {
        assert_eq!(id, request_id(&rule, &headers, &uri, &peer, trust));
    }
}

/// `text` as a TOML basic string. (Written here: `toml`'s own writer panics on a run of a few
/// hundred `'` in a debug build, found by this target — a bug of `toml_write` 0.1, not of `lb`,
/// which never writes a key rule.)
fn toml_string(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `part` lies inside `whole` (the same memory, not an equal copy).
fn is_within(part: &[u8], whole: &[u8]) -> bool {
    let (start, end) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    start >= end && start + part.len() <= end + whole.len()
}

/// A request head's fields and target, as hyper hands them to `lb` (`None` where hyper would
/// answer 400 instead).
fn request(head: &[u8]) -> Option<(HeaderMap, Uri)> {
    let head: std::borrow::Cow<'_, [u8]> = if head.windows(4).any(|w| w == b"\r\n\r\n") {
        head.into()
    } else {
        [head, b"\r\n\r\n"].concat().into()
    };
    let mut fields = [httparse::EMPTY_HEADER; FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    if !matches!(parsed.parse(&head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let uri = Uri::try_from(parsed.path?).ok()?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(field.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(field.value).ok()?,
        );
    }
    Some((headers, uri))
}
