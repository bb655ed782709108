//! The chunked transfer coding's decoder (RFC 9112 §7.1), one step at a time over a read buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::{UpstreamError, MAX_LINE};

#[cfg(test)]
mod tests;

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
}

/// One step of the chunked-body decoder.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkStep {
    /// Need more bytes.
    More,
    /// Consumed framing only; go on from this state.
    State(Chunk),
    /// A piece of body data; go on from this state.
    Data(Chunk, Bytes),
    /// The body is complete (last chunk and trailers consumed).
    Done,
}

/// Decode the next part of a chunked body (RFC 9112 §7.1) from `buf`.
pub(crate) fn chunked_step(state: Chunk, buf: &mut BytesMut) -> Result<ChunkStep, UpstreamError> {
    let invalid = |what: &str| UpstreamError::Invalid(format!("chunked body: {what}"));
    match state {
        Chunk::Size => {
            let Some(line) = take_line(buf)? else {
                return Ok(ChunkStep::More);
            };
            let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let digits = digits.trim_ascii_end();
            // Hex digits only (RFC 9112 §7.1): from_str_radix alone would take a leading '+'.
            if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err(invalid("bad chunk size"));
            }
            let size = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| invalid("bad chunk size"))?;
            Ok(ChunkStep::State(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::More);
            }
            let n = (buf.len() as u64).min(left);
            let data = buf.split_to(n as usize).freeze();
            let next = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(ChunkStep::Data(next, data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(ChunkStep::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            Ok(ChunkStep::State(Chunk::Size))
        }
        Chunk::Trailers => match take_line(buf)? {
            None => Ok(ChunkStep::More),
            Some(line) if line.is_empty() => Ok(ChunkStep::Done),
            Some(_) => Ok(ChunkStep::State(Chunk::Trailers)),
        },
    }
}

/// Take one CRLF-terminated line from `buf` (without the CRLF), if it is complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, UpstreamError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => {
            let line = buf.split_to(end).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(UpstreamError::Invalid("chunked body: line too long".into())),
        // Refused as soon as the line is longer than the limit; a line of exactly the limit
        // whose CR has come but not yet its LF is still waiting (whatever the reads' sizes).
        None if buf.strip_suffix(b"\r").unwrap_or(buf).len() > MAX_LINE => {
            Err(UpstreamError::Invalid("chunked body: line too long".into()))
        }
        None => Ok(None),
    }
}
