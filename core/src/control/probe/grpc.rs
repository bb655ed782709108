//! The standard gRPC health check (`grpc.health.v1.Health/Check`) by hand: the request's one
//! gRPC message (a 5-byte prefix, then the `HealthCheckRequest` protobuf) and the verdict on an
//! answer (`grpc-status`, then the `HealthCheckResponse`'s `status`). No protobuf library: the
//! two messages have one field each.

/// The method's path.
pub(crate) const PATH: &str = "/grpc.health.v1.Health/Check";

/// The most answer body read: a hostile backend cannot make `lb` buffer more (a real answer
/// is 7 bytes).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The longest `grpc-message` quoted in a reason.
const MAX_MESSAGE_CHARS: usize = 200;

/// The request body: one uncompressed gRPC message holding a `HealthCheckRequest` whose
/// `service` (field 1, a string) is `service` (left out when empty, as proto3 does).
pub(crate) fn request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(service.len() as u64, &mut message);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Why a gRPC health check failed (after an HTTP 200): the words a vacancy's reason and the log
/// show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GrpcFailure {
    /// The answer had no `grpc-status` (neither in its trailers nor its headers).
    #[error("no grpc-status in the answer")]
    NoStatus,
    /// `grpc-status` was not a number.
    #[error("grpc-status {0:?} is not a number")]
    BadStatus(String),
    /// A `grpc-status` other than 0 (OK).
    #[error("grpc-status {code} ({}): {message}", code_name(*.code))]
    Status {
        /// The status code.
        code: u32,
        /// `grpc-message`, percent-decoded and cut short.
        message: String,
    },
    /// The server answered with a serving status other than SERVING.
    #[error("{}", serving_name(*.0))]
    NotServing(u64),
    /// `grpc-status` 0 but no message.
    #[error("no HealthCheckResponse in the answer")]
    NoMessage,
    /// The message is shorter than its prefix says.
    #[error("truncated gRPC message ({got} bytes of {expected})")]
    Truncated {
        /// Bytes there.
        got: usize,
        /// Bytes announced (with the 5-byte prefix).
        expected: usize,
    },
    /// The message is marked compressed (`lb` asked for none).
    #[error("compressed gRPC message (lb asks for none)")]
    Compressed,
    /// The answer is larger than [`MAX_ANSWER_BYTES`].
    #[error("answer larger than {} KiB", MAX_ANSWER_BYTES / 1024)]
    TooLarge,
    /// The message is not a `HealthCheckResponse` (or more than one message came).
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// Over TLS, the backend did not agree to HTTP/2 (ALPN `h2`): gRPC needs it.
    #[error("the backend did not agree to HTTP/2 over TLS (ALPN h2); gRPC needs it")]
    NoH2,
}

/// The name of gRPC status `code`.
fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .get(code as usize)
        .copied()
        .unwrap_or("not a known code")
}

/// The name of a `HealthCheckResponse.ServingStatus`.
fn serving_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("serving status {other} (not a known one)"),
    }
}

/// The verdict on an answer that came with HTTP 200: `grpc_status` and `grpc_message` from its
/// trailers (or its headers, for a trailers-only answer), `body` its bytes (at most
/// [`MAX_ANSWER_BYTES`]). Healthy only when `grpc-status` is 0 and the one message says SERVING.
pub(crate) fn verdict(
    grpc_status: Option<&[u8]>,
    grpc_message: Option<&[u8]>,
    body: &[u8],
) -> Result<(), GrpcFailure> {
    let status = grpc_status.ok_or(GrpcFailure::NoStatus)?;
    let code = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            GrpcFailure::BadStatus(String::from_utf8_lossy(status).chars().take(20).collect())
        })?;
    if code != 0 {
        return Err(GrpcFailure::Status {
            code,
            message: grpc_message.map(decode_message).unwrap_or_default(),
        });
    }
    match serving_status(body)? {
        1 => Ok(()),
        other => Err(GrpcFailure::NotServing(other)),
    }
}

/// `grpc-message` as text: percent-decoded (as gRPC encodes it), lossy UTF-8, cut short.
fn decode_message(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len().min(4 * MAX_MESSAGE_CHARS));
    let mut i = 0;
    while i < raw.len() && bytes.len() < 4 * MAX_MESSAGE_CHARS {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                bytes.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

/// The `status` (field 1) of the one `HealthCheckResponse` in `body` (0 = UNKNOWN when the
/// field is left out, as proto3 does for its default).
pub(crate) fn serving_status(body: &[u8]) -> Result<u64, GrpcFailure> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(GrpcFailure::TooLarge);
    }
    if body.is_empty() {
        return Err(GrpcFailure::NoMessage);
    }
    let Some(prefix) = body.get(..5) else {
        return Err(GrpcFailure::Truncated {
            got: body.len(),
            expected: 5,
        });
    };
    match prefix[0] {
        0 => {}
        1 => return Err(GrpcFailure::Compressed),
        _ => {
            return Err(GrpcFailure::Malformed(
                "the message's flag is neither 0 nor 1",
            ))
        }
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length > MAX_ANSWER_BYTES {
        return Err(GrpcFailure::TooLarge);
    }
    let expected = 5 + length;
    if body.len() < expected {
        return Err(GrpcFailure::Truncated {
            got: body.len(),
            expected,
        });
    }
    if body.len() > expected {
        return Err(GrpcFailure::Malformed("more than one message"));
    }
    status_field(&body[5..])
}

/// Field 1 (a varint) of a protobuf message, skipping the others.
fn status_field(mut message: &[u8]) -> Result<u64, GrpcFailure> {
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        match (key >> 3, key & 7) {
            (0, _) => return Err(GrpcFailure::Malformed("field number 0")),
            (field, 0) => {
                let value = varint(&mut message)?;
                if field == 1 {
                    status = value;
                }
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let len = varint(&mut message)?;
                skip(&mut message, usize::try_from(len).unwrap_or(usize::MAX))?;
            }
            (_, 5) => skip(&mut message, 4)?,
            _ => return Err(GrpcFailure::Malformed("unknown protobuf wire type")),
        }
    }
    Ok(status)
}

/// A varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Result<u64, GrpcFailure> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(GrpcFailure::Malformed("a varint runs past its end"))
}

/// `n` bytes off the front of `bytes`.
fn skip(bytes: &mut &[u8], n: usize) -> Result<(), GrpcFailure> {
    if bytes.len() < n {
        return Err(GrpcFailure::Malformed(
            "a field runs past the message's end",
        ));
    }
    *bytes = &bytes[n..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_one_uncompressed_message() {
        // HealthCheckRequest{} is empty: a prefix announcing 0 bytes.
        assert_eq!(request(""), [0, 0, 0, 0, 0]);
        // service = "shard": tag 0x0a, length 5, the bytes; the prefix announces 7.
        assert_eq!(
            request("shard"),
            [0, 0, 0, 0, 7, 0x0a, 5, b's', b'h', b'a', b'r', b'd']
        );
        // A 200-byte name: its length is a two-byte varint (200 = 0xc8 0x01).
        let long = "x".repeat(200);
        let frame = request(&long);
        assert_eq!(&frame[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 203);
    }

    const OK: Option<&[u8]> = Some(b"0");

    #[test]
    fn serving_passes_and_every_other_status_fails_by_name() {
        // status = SERVING (field 1, varint 1).
        assert_eq!(verdict(OK, None, &[0, 0, 0, 0, 2, 0x08, 1]), Ok(()));
        let not_serving = verdict(OK, None, &[0, 0, 0, 0, 2, 0x08, 2]).unwrap_err();
        assert_eq!(not_serving, GrpcFailure::NotServing(2));
        assert_eq!(not_serving.to_string(), "NOT_SERVING");
        // An empty message is status UNKNOWN (proto3 leaves the default out).
        let unknown = verdict(OK, None, &[0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(unknown.to_string(), "UNKNOWN");
        assert_eq!(
            verdict(OK, None, &[0, 0, 0, 0, 2, 0x08, 3])
                .unwrap_err()
                .to_string(),
            "SERVICE_UNKNOWN"
        );
        // Unknown fields around it are skipped: field 2 varint, field 3 bytes, field 4 fixed32.
        let body = [
            0, 0, 0, 0, 14, 0x10, 0x96, 0x01, 0x1a, 2, b'h', b'i', 0x08, 1, 0x25, 1, 2, 3, 4,
        ];
        assert_eq!(body.len(), 5 + 14);
        assert_eq!(verdict(OK, None, &body), Ok(()));
    }

    #[test]
    fn grpc_status_is_required_and_named() {
        let serving = [0, 0, 0, 0, 2, 0x08, 1];
        assert_eq!(verdict(None, None, &serving), Err(GrpcFailure::NoStatus));
        assert_eq!(
            verdict(None, None, &serving).unwrap_err().to_string(),
            "no grpc-status in the answer"
        );
        let e = verdict(Some(b"12"), Some(b"Method%20not%20found!"), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "grpc-status 12 (UNIMPLEMENTED): Method not found!"
        );
        let e = verdict(Some(b"5"), None, &serving).unwrap_err();
        assert_eq!(e.to_string(), "grpc-status 5 (NOT_FOUND): ");
        assert!(matches!(
            verdict(Some(b"zero"), None, &serving),
            Err(GrpcFailure::BadStatus(_))
        ));
        // A long message is cut short.
        let long = vec![b'a'; 10_000];
        match verdict(Some(b"13"), Some(&long), &[]) {
            Err(GrpcFailure::Status { code: 13, message }) => {
                assert_eq!(message.len(), MAX_MESSAGE_CHARS)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_oversized_compressed_and_malformed_answers_fail() {
        assert_eq!(verdict(OK, None, &[]), Err(GrpcFailure::NoMessage));
        assert_eq!(
            verdict(OK, None, &[0, 0, 0]),
            Err(GrpcFailure::Truncated {
                got: 3,
                expected: 5
            })
        );
        // Announces 2 bytes, has 1.
        assert_eq!(
            verdict(OK, None, &[0, 0, 0, 0, 2, 0x08]),
            Err(GrpcFailure::Truncated {
                got: 6,
                expected: 7
            })
        );
        // Announces 16 MiB: refused from the prefix alone.
        assert_eq!(
            verdict(OK, None, &[0, 1, 0, 0, 0, 0x08, 1]),
            Err(GrpcFailure::TooLarge)
        );
        // More than the bound, whatever it says.
        let huge = vec![0u8; MAX_ANSWER_BYTES + 1];
        assert_eq!(verdict(OK, None, &huge), Err(GrpcFailure::TooLarge));
        // Flag 1: compressed.
        assert_eq!(
            verdict(OK, None, &[1, 0, 0, 0, 2, 0x08, 1]),
            Err(GrpcFailure::Compressed)
        );
        assert!(matches!(
            verdict(OK, None, &[2, 0, 0, 0, 2, 0x08, 1]),
            Err(GrpcFailure::Malformed(_))
        ));
        // Two messages.
        assert!(matches!(
            verdict(OK, None, &[0, 0, 0, 0, 2, 0x08, 1, 0, 0, 0, 0, 0]),
            Err(GrpcFailure::Malformed(_))
        ));
        // A varint that never ends, a length past the end, wire type 7.
        for message in [&[0x08, 0x80][..], &[0x1a, 5, 1], &[0x0f]] {
            let mut body = vec![0, 0, 0, 0, message.len() as u8];
            body.extend_from_slice(message);
            assert!(
                matches!(verdict(OK, None, &body), Err(GrpcFailure::Malformed(_))),
                "{message:?}"
            );
        }
    }
}
