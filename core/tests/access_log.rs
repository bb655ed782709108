//! `[log] access`: one line per proxied request, in JSON or text, that says what the client saw
//! (status, replica, bytes), cannot be broken by a hostile path, follows logrotate on SIGHUP and
//! is written out when `lb` exits.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, Lb, THREE};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(10);

/// `lb` with three replicas and the access log in `format` to `access.log` next to its file.
fn start(format: &str) -> (Lb, PathBuf) {
    let lb = Lb::start(&format!(
        "[log]\naccess = \"access.log\"\naccess_format = \"{format}\"\n{THREE}"
    ));
    let path = lb.config.parent().unwrap().join("access.log");
    (lb, path)
}

/// The lines of `path` once it holds at least `n` (lines are written within a second).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    eventually(
        DEADLINE,
        &format!("{n} lines in {}", path.display()),
        || async {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            (lines.len() >= n).then_some(lines)
        },
    )
    .await
}

/// A text line's `key=value` pairs, in order, with quoted values unescaped.
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (i, c) = chars.next().expect("a closing quote");
                match c {
                    '"' => break i + 1,
                    '\\' => match chars.next().expect("an escape").1 {
                        'n' => value.push('\n'),
                        'u' => {
                            let rest = &quoted[i + 2..];
                            let close = rest.find('}').unwrap();
                            let code = u32::from_str_radix(&rest[1..close], 16).unwrap();
                            value.push(char::from_u32(code).unwrap());
                            for _ in 0..=close {
                                chars.next();
                            }
                        }
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            };
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        pairs.push((key.to_owned(), value));
        rest = after.trim_start_matches(' ');
    }
    pairs
}

const FIELDS: [&str; 13] = [
    "ts",
    "client",
    "method",
    "path",
    "status",
    "replica",
    "request_id",
    "upstream_ms",
    "total_ms",
    "bytes",
    "tls",
    "sni",
    "proto",
];

/// Each JSON line says what its client saw: status, replica, bytes, request id.
#[tokio::test(flavor = "multi_thread")]
async fn json_lines_match_what_the_client_saw() {
    let (lb, path) = start("json");
    let mut seen = Vec::new();
    for id in ["11", "222", "3333"] {
        let answer = lb
            .send("GET", "/home?x=1", b"", &[("X-Request-Id", id)])
            .await;
        assert_eq!(answer.status, 200);
        seen.push((
            id,
            "/home?x=1",
            200,
            common::served_by(&answer.body),
            answer.body.len(),
        ));
    }
    let answer = lb
        .send("GET", "/nothing", b"", &[("X-Request-Id", "0")])
        .await;
    assert_eq!(answer.status, 400);
    let owner = lb.get("/_lb/ring").await.json()["owners"][17]
        .as_str()
        .unwrap()
        .to_owned();
    seen.push(("0", "/nothing", 400, owner, answer.body.len()));
    let lines = lines(&path, seen.len()).await;
    assert_eq!(
        lines.len(),
        seen.len(),
        "one line per proxied request: {lines:#?}"
    );
    for (line, (id, target, status, replica, bytes)) in lines.iter().zip(&seen) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), FIELDS.len(), "{line}");
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|f| line.find(&format!("\"{f}\":")).expect(f))
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "fields in order: {line}"
        );
        assert_eq!(v["status"], *status, "{line}");
        assert_eq!(v["replica"], replica.as_str(), "{line}");
        assert_eq!(v["request_id"], id.parse::<u64>().unwrap(), "{line}");
        assert_eq!(v["path"], *target);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["proto"], "HTTP/1.1", "{line}");
        assert_eq!(v["bytes"], *bytes as u64, "{line}");
        humantime::parse_rfc3339(v["ts"].as_str().unwrap()).expect("an RFC 3339 time");
        let total = v["total_ms"].as_f64().unwrap();
        let upstream = v["upstream_ms"].as_f64().unwrap();
        assert!(upstream > 0.0 && upstream <= total, "{line}");
    }
}

/// A text line has the same fields in the same order, readable and parseable.
#[tokio::test(flavor = "multi_thread")]
async fn text_lines_have_the_same_fields_in_the_same_order() {
    let (lb, path) = start("text");
    let answer = lb
        .send("GET", "/home", b"", &[("X-Request-Id", "42")])
        .await;
    let replica = common::served_by(&answer.body);
    let lines = lines(&path, 1).await;
    assert_eq!(lines.len(), 1);
    let pairs = logfmt(&lines[0]);
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, FIELDS, "{}", lines[0]);
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!(get("status"), "200");
    assert_eq!(get("replica"), replica);
    assert_eq!(get("request_id"), "42");
    assert_eq!(get("method"), "GET");
    assert_eq!(get("path"), "/home");
    assert_eq!(get("bytes"), answer.body.len().to_string());
    assert!(
        lines[0].contains(&format!("replica=\"{replica}\"")),
        "{}",
        lines[0]
    );
}

/// A request `lb` answers itself (no replica) is logged with an empty replica and no upstream
/// time.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_a_replica_is_logged_too() {
    let lb = Lb::start("[log]\naccess = \"access.log\"\naccess_format = \"json\"\n");
    let path = lb.config.parent().unwrap().join("access.log");
    assert_eq!(
        lb.send("GET", "/x", b"", &[("X-Request-Id", "7")])
            .await
            .status,
        503
    );
    // lb's own endpoints are not logged: the next line is the next proxied request's.
    lb.get("/rep").await;
    lb.get("/_lb/status").await;
    lb.send("GET", "/y", b"", &[("X-Request-Id", "8")]).await;
    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut ids = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["replica"], "");
        assert_eq!(v["upstream_ms"], Value::Null);
        ids.push(v["request_id"].as_u64().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, [7, 8]);
}

/// What `http` lets into a path — quotes, backslashes, a control character and a line
/// separator in UTF-8 — is escaped: the line stays one line and says the path exactly.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_path_cannot_break_a_line() {
    for format in ["json", "text"] {
        let (lb, path) = start(format);
        let target = "/a\"b\\c/\u{85}\u{2028}?q=\\{x}";
        let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
        stream
            .write_all(
                format!("GET {target} HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 5\r\n\r\n").as_bytes(),
            )
            .unwrap();
        let got = common::read_response(&mut stream, DEADLINE).expect("an answer");
        let status: u16 = got[9..12].parse().unwrap();
        let lines = lines(&path, 1).await;
        assert_eq!(lines.len(), 1, "{format}: {lines:?}");
        let (logged_path, logged_status) = if format == "json" {
            let v: Value = serde_json::from_str(&lines[0]).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                v["status"].as_u64().unwrap() as u16,
            )
        } else {
            let pairs = logfmt(&lines[0]);
            let get = |key: &str| pairs.iter().find(|(k, _)| k == key).unwrap().1.clone();
            (get("path"), get("status").parse().unwrap())
        };
        assert_eq!(logged_path, target, "{format}: {}", lines[0]);
        assert_eq!(logged_status, status);
        if format == "text" {
            assert!(
                !lines[0].contains(['\u{85}', '\u{2028}']),
                "escaped: {}",
                lines[0]
            );
        }
    }
}

/// SIGHUP reopens the file (logrotate moved it away); the last lines are written when `lb`
/// exits.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reopens_the_file_and_exit_writes_the_rest() {
    let (mut lb, path) = start("json");
    lb.home(&[("X-Request-Id", "1")]).await;
    lines(&path, 1).await;
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    common::signal(lb.pid(), libc::SIGHUP);
    eventually(DEADLINE, "the file reopened", || async {
        path.exists().then_some(())
    })
    .await;
    lb.home(&[("X-Request-Id", "2")]).await;
    let after = lines(&path, 1).await;
    assert!(after[0].contains("\"request_id\":2"), "{after:?}");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );

    // Lines still buffered when lb stops are written before it exits.
    for id in 3..8 {
        lb.home(&[("X-Request-Id", &id.to_string())]).await;
    }
    let status = lb
        .signal_and_wait(libc::SIGTERM, DEADLINE)
        .expect("lb exits");
    assert!(status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
}

/// `stdout` writes the lines on lb's standard output; "off" (the default) writes none.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_can_go_to_stdout() {
    let lb = Lb::start(&format!(
        "[log]\naccess = \"stdout\"\naccess_format = \"text\"\n{THREE}"
    ));
    lb.home(&[("X-Request-Id", "9")]).await;
    eventually(DEADLINE, "a line on stdout", || async {
        lb.stdout()
            .lines()
            .any(|l| l.contains("request_id=9") && l.contains("status=200"))
            .then_some(())
    })
    .await;
}

/// A log whose writes fail (`/dev/full`: every write is `ENOSPC`, as on a full disk): every line
/// lost is counted in `lb_access_log_dropped_total`, the error is logged (not once per line) and
/// requests are served as usual.
#[tokio::test(flavor = "multi_thread")]
async fn lines_a_full_disk_loses_are_counted_as_dropped() {
    let lb = Lb::start(&format!(
        "[log]\naccess = \"/dev/full\"\naccess_format = \"json\"\n{THREE}"
    ));
    let started = std::time::Instant::now();
    const SENT: u64 = 25;
    for id in 0..SENT {
        lb.home(&[("X-Request-Id", &id.to_string())]).await;
    }
    eventually(DEADLINE, "every line counted as dropped", || async {
        (lb.metric("lb_access_log_dropped_total").await == SENT).then_some(())
    })
    .await;
    // A second batch, written after the first failed: counted too.
    for id in 0..SENT {
        lb.home(&[("X-Request-Id", &id.to_string())]).await;
    }
    eventually(DEADLINE, "the second batch counted", || async {
        (lb.metric("lb_access_log_dropped_total").await == 2 * SENT).then_some(())
    })
    .await;
    let log = lb.log();
    let errors = log.matches("cannot write the access log").count() as u64;
    let most = started.elapsed().as_secs() + 1;
    assert!(
        (1..=most).contains(&errors),
        "{errors} error lines in {most} s:\n{log}"
    );
}
