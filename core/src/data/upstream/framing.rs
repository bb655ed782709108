//! Response heads from a replica: parsing them, and deciding how the body that follows is
//! delimited (RFC 9112 §6.3).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::PipeBody;
use super::chunked::Chunk;
use super::{UpstreamError, MAX_HEAD, MAX_HEADERS};
use crate::data::hop;

#[cfg(test)]
mod tests;

/// How the body of the response being read ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes (left) to read; `Length(0)` is no body.
    Length(u64),
    /// Chunked transfer coding, with the decoder's state.
    Chunked(Chunk),
    /// Everything until the replica closes the connection.
    UntilClose,
}

/// What a response's framing fields say about its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyFraming {
    /// How the body ends.
    pub(crate) framing: Framing,
    /// The response has a Transfer-Encoding field: it overrides any Content-Length, which is
    /// therefore not forwarded (RFC 9112 §6.3 rule 3).
    pub(crate) transfer_encoded: bool,
    /// The connection must not carry another response: Transfer-Encoding together with
    /// Content-Length is a request-smuggling pattern (RFC 9112 §6.3 rule 3).
    pub(crate) close_after: bool,
}

/// Decide how a response's body is framed (RFC 9112 §6.3) from its status, whether it answers a
/// `HEAD` request, and its header `fields`:
///
/// 1. a response to `HEAD`, an interim (1xx), `204 No Content` or `304 Not Modified` response
///    has no body, whatever its fields say;
/// 2. else a Transfer-Encoding whose final coding is `chunked` means a chunked body, and one whose
///    final coding is anything else means a body read until the connection closes (rule 4); when
///    there are several Transfer-Encoding fields the last one's final coding decides;
/// 3. a Transfer-Encoding overrides any Content-Length, but the pair closes the connection after
///    the response (rule 3);
/// 4. else a Content-Length gives the body's length (rule 6);
/// 5. else the body runs until the connection closes (rule 8).
///
/// Content-Length is checked whatever the response: a value that is not a list of decimal
/// numbers, or numbers (across fields or within a list) that differ, is an error (rule 5).
pub(crate) fn framing(
    head_only: bool,
    status: StatusCode,
    fields: &[httparse::Header<'_>],
) -> Result<BodyFraming, UpstreamError> {
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for field in fields {
        if field.name.eq_ignore_ascii_case("transfer-encoding") {
            let value = std::str::from_utf8(field.value).unwrap_or("");
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("content-length") {
            for part in std::str::from_utf8(field.value).unwrap_or("x").split(',') {
                let part = part.trim();
                let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| UpstreamError::Invalid(format!("content-length {part:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamError::Invalid(
                        "content-length fields disagree".into(),
                    ));
                }
                length = Some(n);
            }
        }
    }
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (chunked, length) {
        _ if no_body => Framing::Length(0),
        (Some(true), _) => Framing::Chunked(Chunk::Size),
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    Ok(BodyFraming {
        framing,
        transfer_encoded: chunked.is_some(),
        close_after: chunked.is_some() && length.is_some(),
    })
}

/// What the start of a read buffer holds.
pub(crate) enum ParsedHead {
    /// Not a complete response head yet.
    Partial,
    /// An interim response (`100 Continue`, `103 Early Hints`) of this many bytes: skip it, the
    /// final response follows.
    Interim(usize),
    /// A final response head of this many bytes.
    Final(usize, Head),
}

/// Parse the response head at the start of `buf`, the answer to a `HEAD` request if
/// `head_only`.
pub(crate) fn parse_head(buf: &[u8], head_only: bool) -> Result<ParsedHead, UpstreamError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        // A whole head that arrived in one read is held to the same limit.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(UpstreamError::Invalid(format!(
                "response head larger than {MAX_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(UpstreamError::Invalid(format!(
                "response head larger than {MAX_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(ParsedHead::Partial),
        Err(e) => return Err(UpstreamError::Invalid(e.to_string())),
    };
    let code = parsed.code.unwrap_or(0);
    // RFC 9110 §15: status codes are 100–599 (the parser takes any three digits).
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.as_u16() <= 599)
        .ok_or_else(|| UpstreamError::Invalid(format!("status code {code}")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(UpstreamError::Invalid(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ));
        }
        // 100 Continue, 103 Early Hints: interim, the final response follows.
        return Ok(ParsedHead::Interim(len));
    }
    let head = Head::from_parsed(&parsed, head_only, status)?;
    Ok(ParsedHead::Final(len, head))
}

/// A parsed response head.
pub(crate) struct Head {
    status: StatusCode,
    /// The fields to forward: hop-by-hop ones, and Content-Length beside Transfer-Encoding,
    /// removed.
    headers: HeaderMap,
    /// How the body ends.
    pub(crate) framing: Framing,
    /// The replica will close the connection after this response.
    pub(crate) close_after: bool,
}

impl Head {
    fn from_parsed(
        parsed: &httparse::Response<'_, '_>,
        head_only: bool,
        status: StatusCode,
    ) -> Result<Head, UpstreamError> {
        let http10 = parsed.version == Some(0);
        let connection = hop::connection_tokens(
            parsed
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .map(|f| f.value),
        );
        let close = connection.iter().any(|t| t == "close");
        let keep_alive = connection.iter().any(|t| t == "keep-alive");
        let body = framing(head_only, status, parsed.headers)?;
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| UpstreamError::Invalid(format!("header name {:?}", field.name)))?;
            if hop::is_hop_by_hop(name.as_str()) || connection.iter().any(|t| t == name.as_str()) {
                continue;
            }
            if name == header::CONTENT_LENGTH && body.transfer_encoded {
                continue;
            }
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| UpstreamError::Invalid(format!("value of header {:?}", field.name)))?;
            headers.append(name, value);
        }
        Ok(Head {
            status,
            headers,
            framing: body.framing,
            close_after: close || (http10 && !keep_alive) || body.close_after,
        })
    }

    /// The response to hand over, with `body`.
    pub(crate) fn into_response(self, body: PipeBody) -> Response<PipeBody> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}
