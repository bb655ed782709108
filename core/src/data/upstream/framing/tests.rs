//! How response bodies are framed (RFC 9112 §6.3), and what a parsed head keeps.

use super::*;

/// Header fields as httparse hands them over.
fn fields<'a>(pairs: &[(&'a str, &'a [u8])]) -> Vec<httparse::Header<'a>> {
    pairs
        .iter()
        .map(|&(name, value)| httparse::Header { name, value })
        .collect()
}

/// The framing of a `GET` response with `status` and `pairs`.
fn of(status: u16, pairs: &[(&str, &[u8])]) -> Result<BodyFraming, UpstreamError> {
    framing(false, StatusCode::from_u16(status).unwrap(), &fields(pairs))
}

fn reused(framing: Framing) -> BodyFraming {
    BodyFraming {
        framing,
        transfer_encoded: false,
        close_after: false,
    }
}

fn invalid(result: Result<BodyFraming, UpstreamError>) -> String {
    match result {
        Err(UpstreamError::Invalid(reason)) => reason,
        other => panic!("expected an invalid response, got {other:?}"),
    }
}

const CHUNKED: Framing = Framing::Chunked(Chunk::Size);

#[test]
fn a_response_to_head_has_no_body_whatever_its_fields_say() {
    for pairs in [
        &[("content-length", &b"120"[..])][..],
        &[("transfer-encoding", b"chunked")],
        &[],
    ] {
        let framing = framing(true, StatusCode::OK, &fields(pairs)).unwrap();
        assert_eq!(framing.framing, Framing::Length(0), "{pairs:?}");
    }
}

#[test]
fn interim_responses_have_no_body() {
    for status in [100, 102, 103] {
        assert_eq!(
            of(status, &[("content-length", b"5")]).unwrap().framing,
            Framing::Length(0),
            "{status}"
        );
    }
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    for status in [204, 304] {
        for pairs in [
            &[("content-length", &b"42"[..])][..],
            &[("transfer-encoding", b"chunked")],
            &[],
        ] {
            assert_eq!(
                of(status, pairs).unwrap().framing,
                Framing::Length(0),
                "{status} {pairs:?}"
            );
        }
    }
    // Other statuses with the same fields do have a body.
    assert_eq!(
        of(200, &[("content-length", b"42")]).unwrap().framing,
        Framing::Length(42)
    );
    assert_eq!(of(205, &[]).unwrap().framing, Framing::UntilClose);
}

#[test]
fn chunked_as_the_final_coding_means_a_chunked_body() {
    for value in [
        &b"chunked"[..],
        b"Chunked",
        b"CHUNKED",
        b"gzip, chunked",
        b"gzip,chunked ",
        b"br , gzip ,  chunked",
    ] {
        assert_eq!(
            of(200, &[("transfer-encoding", value)]).unwrap(),
            BodyFraming {
                framing: CHUNKED,
                transfer_encoded: true,
                close_after: false,
            },
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    // The field name is matched in any case.
    assert_eq!(
        of(200, &[("Transfer-Encoding", b"chunked")])
            .unwrap()
            .framing,
        CHUNKED
    );
}

#[test]
fn a_transfer_coding_not_ending_in_chunked_runs_until_close() {
    for value in [
        &b"gzip"[..],
        b"chunked, gzip",
        b"chunked,",
        b"identity",
        b"",
        b"\xffchunked",
    ] {
        assert_eq!(
            of(200, &[("transfer-encoding", value)]).unwrap(),
            BodyFraming {
                framing: Framing::UntilClose,
                transfer_encoded: true,
                close_after: false,
            },
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn with_several_transfer_encoding_fields_the_last_decides() {
    let te = "transfer-encoding";
    assert_eq!(
        of(200, &[(te, b"gzip"), (te, b"chunked")]).unwrap().framing,
        CHUNKED
    );
    assert_eq!(
        of(200, &[(te, b"chunked"), (te, b"gzip")]).unwrap().framing,
        Framing::UntilClose
    );
}

#[test]
fn transfer_encoding_overrides_content_length_and_closes_the_connection() {
    for pairs in [
        &[
            ("content-length", &b"5"[..]),
            ("transfer-encoding", b"chunked"),
        ][..],
        &[("transfer-encoding", b"chunked"), ("content-length", b"5")],
    ] {
        assert_eq!(
            of(200, pairs).unwrap(),
            BodyFraming {
                framing: CHUNKED,
                transfer_encoded: true,
                close_after: true,
            },
            "{pairs:?}"
        );
    }
    assert_eq!(
        of(
            200,
            &[("transfer-encoding", b"gzip"), ("content-length", b"5")]
        )
        .unwrap(),
        BodyFraming {
            framing: Framing::UntilClose,
            transfer_encoded: true,
            close_after: true,
        }
    );
    // Even without a body the pair is not trusted with another response.
    let head = framing(
        true,
        StatusCode::OK,
        &fields(&[("transfer-encoding", b"chunked"), ("content-length", b"5")]),
    )
    .unwrap();
    assert_eq!(head.framing, Framing::Length(0));
    assert!(head.close_after);
}

#[test]
fn differing_content_lengths_are_refused() {
    let cl = "content-length";
    for pairs in [
        &[(cl, &b"3"[..]), (cl, b"4")][..],
        &[(cl, b"3, 4")],
        &[(cl, b"3"), (cl, b"3, 4")],
    ] {
        assert!(invalid(of(200, pairs)).contains("disagree"), "{pairs:?}");
    }
}

#[test]
fn repeated_equal_content_lengths_are_one_length() {
    let cl = "content-length";
    for pairs in [
        &[(cl, &b"7"[..]), (cl, b"7")][..],
        &[(cl, b"7,7")],
        &[(cl, b"7 , 7"), (cl, b"007")],
    ] {
        assert_eq!(
            of(200, pairs).unwrap(),
            reused(Framing::Length(7)),
            "{pairs:?}"
        );
    }
}

#[test]
fn content_lengths_that_are_not_decimal_numbers_are_refused() {
    for value in [
        &b"-3"[..],
        b"+3",
        b"abc",
        b"0x10",
        b"",
        b"5 5",
        b"5,",
        b"1.0",
        b"\xff",
        b"99999999999999999999999",
    ] {
        let reason = invalid(of(200, &[("content-length", value)]));
        assert!(
            reason.starts_with("content-length "),
            "{:?}: {reason}",
            String::from_utf8_lossy(value)
        );
    }
    // Checked whatever the response, even where it frames nothing.
    let result = framing(
        true,
        StatusCode::NO_CONTENT,
        &fields(&[("content-length", b"nope")]),
    );
    assert!(invalid(result).contains("content-length"));
    let result = of(
        200,
        &[("transfer-encoding", b"chunked"), ("content-length", b"-1")],
    );
    assert!(invalid(result).contains("content-length"));
}

#[test]
fn content_length_gives_the_length() {
    for (value, n) in [
        (&b"0"[..], 0),
        (b"11", 11),
        (b" 11 ", 11),
        (b"18446744073709551615", u64::MAX),
    ] {
        assert_eq!(
            of(200, &[("Content-Length", value)]).unwrap(),
            reused(Framing::Length(n))
        );
    }
    assert_eq!(
        of(404, &[("content-length", b"9")]).unwrap().framing,
        Framing::Length(9)
    );
}

#[test]
fn without_framing_fields_the_body_runs_until_close() {
    assert_eq!(
        of(200, &[("content-type", b"text/plain"), ("x-length", b"5")]).unwrap(),
        reused(Framing::UntilClose)
    );
    assert_eq!(of(500, &[]).unwrap(), reused(Framing::UntilClose));
}

/// Parse a final response head that is all of `wire`.
fn head(wire: &[u8], head_only: bool) -> Head {
    match parse_head(wire, head_only) {
        Ok(ParsedHead::Final(len, head)) => {
            assert_eq!(len, wire.len());
            head
        }
        Ok(ParsedHead::Partial) => panic!("partial"),
        Ok(ParsedHead::Interim(_)) => panic!("interim"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn parsed_heads_drop_hop_by_hop_fields_and_content_length_beside_transfer_encoding() {
    let parsed = head(
        b"HTTP/1.1 200 OK\r\nconnection: x-private\r\nx-private: 1\r\nkeep-alive: 5\r\n\
          transfer-encoding: chunked\r\ncontent-length: 5\r\nx-kept: yes\r\n\r\n",
        false,
    );
    assert_eq!(parsed.framing, CHUNKED);
    assert!(parsed.close_after);
    let response = parsed.into_response(PipeBody::Full(None));
    let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
    // Content-Length alone is forwarded.
    let response = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false)
        .into_response(PipeBody::Full(None));
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "5");
}

#[test]
fn parsed_heads_know_when_the_replica_will_close() {
    for (wire, close) in [
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..], false),
        (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", true),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
    ] {
        assert_eq!(
            head(wire, false).close_after,
            close,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn interim_partial_and_upgrade_heads() {
    let wire = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n";
    assert!(matches!(parse_head(wire, false), Ok(ParsedHead::Interim(n)) if n == wire.len() - 17));
    assert!(matches!(
        parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false),
        Ok(ParsedHead::Partial)
    ));
    assert!(matches!(
        parse_head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
        Err(UpstreamError::Invalid(m)) if m.contains("101")
    ));
    let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    huge.resize(MAX_HEAD + 1, b'a');
    assert!(matches!(
        parse_head(&huge, false),
        Err(UpstreamError::Invalid(m)) if m.contains("larger than")
    ));
}
