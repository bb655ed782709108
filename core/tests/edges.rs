//! Requests at the edges of HTTP: `CONNECT` (`lb` does not tunnel), the `Authorization` scheme in
//! any case, and `/_lb/ring` in pages.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{eventually, Lb, THREE};
use serde_json::Value;

/// `CONNECT` asks for a tunnel, which a reverse proxy does not give: a 405 with `Allow` and a
/// failure body that says so — the status the access log records too — and the connection
/// goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused_with_405_and_logged_as_sent() {
    let lb = Lb::start(&format!(
        "[log]\naccess = \"access.log\"\naccess_format = \"json\"\n{THREE}"
    ));
    let log = lb.config.parent().unwrap().join("access.log");
    let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .unwrap();
    let answer =
        common::read_response(&mut stream, Duration::from_secs(10)).expect("an answer to CONNECT");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 405"), "{answer}");
    let allow = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("allow:")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no Allow: {answer}"));
    assert!(
        allow.contains("get") && !allow.contains("connect"),
        "{allow}"
    );
    let json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["status"], "failure");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("does not tunnel"),
        "{json}"
    );
    // The same connection answers the next request.
    stream
        .write_all(b"GET /rep HTTP/1.1\r\nHost: lb\r\n\r\n")
        .unwrap();
    let next = common::read_response(&mut stream, Duration::from_secs(10))
        .expect("an answer to the request after CONNECT");
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    let line: Value = eventually(Duration::from_secs(10), "the CONNECT log line", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["method"] == "CONNECT")
    })
    .await;
    assert_eq!(line["status"], 405, "{line}");
}

/// The `Bearer` scheme is case-insensitive (RFC 9110 §11.1); the token is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let lb = Lb::start(&format!("[admin]\ntoken = \"s3cret\"\n{THREE}"));
    for credentials in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "bearer  s3cret",
    ] {
        let answer = lb
            .send("GET", "/_lb/status", b"", &[("Authorization", credentials)])
            .await;
        assert_eq!(answer.status, 200, "{credentials}: {}", answer.body);
    }
    for credentials in ["bearer S3CRET", "Basic s3cret", "bearers3cret", "bearer"] {
        let answer = lb
            .send("GET", "/_lb/status", b"", &[("Authorization", credentials)])
            .await;
        assert_eq!(answer.status, 401, "{credentials}: {}", answer.body);
    }
}

/// `/_lb/ring?from=F&count=C` gives that part of `owners` and says which; without parameters the
/// whole table as before; bad values are a 400 with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_ring_comes_in_pages() {
    let lb = Lb::start(THREE);
    let whole = lb.get("/_lb/ring").await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let whole = whole.json();
    assert!(whole.get("from").is_none() && whole.get("count").is_none());
    let owners = whole["owners"].as_array().unwrap().clone();
    assert_eq!(owners.len(), 512);
    for (query, from, count) in [
        ("from=0&count=10", 0, 10),
        ("from=500&count=20", 500, 12),
        ("count=3&from=511", 511, 1),
        ("count=7", 0, 7),
        ("from=100", 100, 412),
    ] {
        let page = lb.get(&format!("/_lb/ring?{query}")).await;
        assert_eq!(page.status, 200, "{query}: {}", page.body);
        let page = page.json();
        assert_eq!(
            (page["from"].as_u64(), page["count"].as_u64()),
            (Some(from), Some(count)),
            "{query}"
        );
        assert_eq!(
            page["owners"].as_array().unwrap()[..],
            owners[from as usize..(from + count) as usize],
            "{query}"
        );
        assert_eq!(page["slots"], whole["slots"]);
        assert_eq!(page["replicas"], whole["replicas"]);
    }
    for (query, says) in [
        ("from=512", "past the last slot"),
        ("from=-1", "whole number"),
        ("count=0", "at least 1"),
        ("count=65537", "at most 65536"),
        ("from=x&count=2", "whole number"),
        ("from=1&from=1", "twice"),
        ("offset=3", "unknown parameter 'offset'"),
    ] {
        let answer = lb.get(&format!("/_lb/ring?{query}")).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let json = answer.json();
        assert_eq!(json["status"], "failure");
        assert!(
            json["message"].as_str().unwrap().contains(says),
            "{query}: {json}"
        );
    }
}
