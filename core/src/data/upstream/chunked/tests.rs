//! The chunked decoder, step by step and over whole bodies.

use bytes::BytesMut;

use super::*;

/// Decode a whole chunked body held in one buffer; what is left after it stays in `buf`.
fn decode(buf: &mut BytesMut) -> Result<Vec<u8>, UpstreamError> {
    let mut state = Chunk::Size;
    let mut out = Vec::new();
    loop {
        match chunked_step(state, buf)? {
            ChunkStep::More => return Err(UpstreamError::Invalid("incomplete".into())),
            ChunkStep::State(next) => state = next,
            ChunkStep::Data(next, data) => {
                out.extend_from_slice(&data);
                state = next;
            }
            ChunkStep::Done => return Ok(out),
        }
    }
}

fn decode_all(input: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    decode(&mut BytesMut::from(input))
}

/// One step from `state` over `input`: the step and what is left unread.
fn step(state: Chunk, input: &[u8]) -> (Result<ChunkStep, UpstreamError>, BytesMut) {
    let mut buf = BytesMut::from(input);
    let step = chunked_step(state, &mut buf);
    (step, buf)
}

fn is_invalid(result: &Result<ChunkStep, UpstreamError>, what: &str) -> bool {
    matches!(result, Err(UpstreamError::Invalid(m)) if m.contains(what))
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let body = decode_all(b"5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n");
    assert_eq!(body.unwrap(), b"hello world");
    assert_eq!(
        decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
        b"0123456789"
    );
}

#[test]
fn malformed_chunked_bodies_are_refused() {
    for bad in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"\r\n",
        b"10000000000000000\r\n",
    ] {
        assert!(
            matches!(decode_all(bad), Err(UpstreamError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn chunk_sizes_are_hex_in_either_case() {
    for (line, size) in [
        (&b"1\r\n"[..], 1),
        (b"a\r\n", 10),
        (b"Ff\r\n", 255),
        (b"00010\r\n", 16),
        (b"fffffffffffffff\r\n", 0xfff_ffff_ffff_ffff),
    ] {
        let (result, rest) = step(Chunk::Size, line);
        assert_eq!(
            result.unwrap(),
            ChunkStep::State(Chunk::Data(size)),
            "{line:?}"
        );
        assert!(rest.is_empty(), "{line:?} left {rest:?}");
    }
}

#[test]
fn chunk_extensions_and_whitespace_before_them_are_ignored() {
    for line in [
        &b"5;name=value\r\n"[..],
        b"5;a;b=\"quoted;semi\"\r\n",
        b"5 ;ext\r\n",
        b"5\t; ext=1\r\n",
        b"5;\r\n",
    ] {
        let (result, rest) = step(Chunk::Size, line);
        assert_eq!(
            result.unwrap(),
            ChunkStep::State(Chunk::Data(5)),
            "{line:?}"
        );
        assert!(rest.is_empty());
    }
    // An extension on the last chunk does not hide that it is the last.
    let (result, _) = step(Chunk::Size, b"0;final=yes\r\n");
    assert_eq!(result.unwrap(), ChunkStep::State(Chunk::Trailers));
}

#[test]
fn bad_chunk_sizes_are_refused() {
    for line in [
        &b"zz\r\n"[..],
        b"5g\r\n",
        b"0x5\r\n",
        b"-1\r\n",
        b"+5\r\n",
        b" 5\r\n",
        b";ext\r\n",
        b"\r\n",
        b"\xff\r\n",
        // 16 hex digits: more than the decoder accepts, even when the value would fit.
        b"0000000000000001\r\n",
        b"10000000000000000\r\n",
    ] {
        let (result, _) = step(Chunk::Size, line);
        assert!(
            is_invalid(&result, "bad chunk size"),
            "{line:?}: {result:?}"
        );
    }
}

#[test]
fn a_zero_size_chunk_ends_the_data_and_trailers_are_skipped() {
    let mut buf =
        BytesMut::from(&b"0\r\nx-checksum: 1\r\nx-other: 2\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
    assert_eq!(
        chunked_step(Chunk::Size, &mut buf).unwrap(),
        ChunkStep::State(Chunk::Trailers)
    );
    assert_eq!(
        chunked_step(Chunk::Trailers, &mut buf).unwrap(),
        ChunkStep::State(Chunk::Trailers)
    );
    assert_eq!(
        chunked_step(Chunk::Trailers, &mut buf).unwrap(),
        ChunkStep::State(Chunk::Trailers)
    );
    assert_eq!(
        chunked_step(Chunk::Trailers, &mut buf).unwrap(),
        ChunkStep::Done
    );
    // The next response on the connection is left untouched.
    assert_eq!(&buf[..], b"HTTP/1.1 200 OK\r\n");
}

#[test]
fn trailers_are_not_part_of_the_body() {
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\nx-sum: abc\r\n\r\nnext"[..]);
    assert_eq!(decode(&mut buf).unwrap(), b"abc");
    assert_eq!(&buf[..], b"next");
}

#[test]
fn chunk_data_must_end_with_crlf() {
    let (result, _) = step(Chunk::DataEnd, b"XX0\r\n\r\n");
    assert!(is_invalid(&result, "not followed by CRLF"), "{result:?}");
    for wrong in [&b"\n0\r\n"[..], b"\n\n", b"X\n", b"\r\r"] {
        let (result, _) = step(Chunk::DataEnd, wrong);
        assert!(
            is_invalid(&result, "not followed by CRLF"),
            "{wrong:?}: {result:?}"
        );
    }
    let (result, rest) = step(Chunk::DataEnd, b"\r\n0\r\n");
    assert_eq!(result.unwrap(), ChunkStep::State(Chunk::Size));
    assert_eq!(&rest[..], b"0\r\n");
}

#[test]
fn lines_up_to_the_limit_are_accepted() {
    // A size line of exactly MAX_LINE bytes (the extension fills it up).
    let mut line = b"7;".to_vec();
    line.resize(MAX_LINE, b'x');
    line.extend_from_slice(b"\r\n");
    let (result, rest) = step(Chunk::Size, &line);
    assert_eq!(result.unwrap(), ChunkStep::State(Chunk::Data(7)));
    assert!(rest.is_empty());
    // An incomplete line of exactly MAX_LINE bytes may still end well: wait for more.
    let (result, rest) = step(Chunk::Size, &line[..MAX_LINE]);
    assert_eq!(result.unwrap(), ChunkStep::More);
    assert_eq!(rest.len(), MAX_LINE);
    // Also when its CR has come and its LF has not (found by fuzzing: the same line was taken
    // whole and refused when a read ended between CR and LF).
    for state in [Chunk::Size, Chunk::Trailers] {
        let (result, rest) = step(state, &line[..MAX_LINE + 1]);
        assert_eq!(result.unwrap(), ChunkStep::More, "{state:?}");
        assert_eq!(rest.len(), MAX_LINE + 1);
    }
}

#[test]
fn oversize_lines_are_refused() {
    let mut long = b"7;".to_vec();
    long.resize(MAX_LINE + 1, b'x');
    // Complete but too long, as a size line or as a trailer.
    let mut complete = long.clone();
    complete.extend_from_slice(b"\r\n");
    for state in [Chunk::Size, Chunk::Trailers] {
        let (result, _) = step(state, &complete);
        assert!(
            is_invalid(&result, "line too long"),
            "{state:?}: {result:?}"
        );
    }
    // Still incomplete and already too long: refused without waiting for the end.
    for state in [Chunk::Size, Chunk::Trailers] {
        let (result, _) = step(state, &long);
        assert!(
            is_invalid(&result, "line too long"),
            "{state:?}: {result:?}"
        );
    }
}

#[test]
fn chunk_data_is_handed_over_as_it_arrives() {
    let (result, rest) = step(Chunk::Data(10), b"abcd");
    assert_eq!(
        result.unwrap(),
        ChunkStep::Data(Chunk::Data(6), Bytes::from_static(b"abcd"))
    );
    assert!(rest.is_empty());
    // Only the chunk's own bytes are taken; the CRLF after it is left for the next step.
    let (result, rest) = step(Chunk::Data(3), b"xyz\r\n0\r\n");
    assert_eq!(
        result.unwrap(),
        ChunkStep::Data(Chunk::DataEnd, Bytes::from_static(b"xyz"))
    );
    assert_eq!(&rest[..], b"\r\n0\r\n");
}

#[test]
fn every_state_waits_for_more_on_a_partial_buffer() {
    for (state, input) in [
        (Chunk::Size, &b""[..]),
        (Chunk::Size, b"5"),
        (Chunk::Size, b"5;ext\r"),
        (Chunk::Data(3), b""),
        (Chunk::DataEnd, b""),
        (Chunk::DataEnd, b"\r"),
        (Chunk::Trailers, b"x-trailer: 1"),
        (Chunk::Trailers, b"\r"),
    ] {
        let (result, rest) = step(state, input);
        assert_eq!(result.unwrap(), ChunkStep::More, "{state:?} {input:?}");
        // Nothing is consumed while waiting.
        assert_eq!(&rest[..], input, "{state:?}");
    }
}

#[test]
fn a_body_split_across_reads_decodes_the_same_at_every_split() {
    let wire: &[u8] =
        b"5;ext=1\r\nhello\r\n1B\r\n, and a longer second chunk\r\n0\r\nx-t: 1\r\n\r\n";
    let whole = b"hello, and a longer second chunk";
    // Feed the body in reads of every size from one byte up, as a connection would.
    for read in 1..=wire.len() {
        let mut buf = BytesMut::new();
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        let mut reads = wire.chunks(read);
        let done = loop {
            match chunked_step(state, &mut buf).unwrap() {
                ChunkStep::More => match reads.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => break false,
                },
                ChunkStep::State(next) => state = next,
                ChunkStep::Data(next, data) => {
                    out.extend_from_slice(&data);
                    state = next;
                }
                ChunkStep::Done => break true,
            }
        };
        assert!(done, "reads of {read}: the body never ended");
        assert_eq!(out, whole, "reads of {read}");
        assert!(buf.is_empty() && reads.next().is_none(), "reads of {read}");
    }
}
