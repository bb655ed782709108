//! `[ring] key`: what a request is hashed by. For every kind of key, requests with the same key
//! go to the same replica, different keys spread over the replicas, and a request without the
//! key falls back (a random id spreads, the client's address sticks); a change of `key` in the
//! file takes effect live, a bad one keeps the running rule. And what replicas receive: the
//! `X-Forwarded-*` fields on both forwarding paths.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{eventually, served_by, Lb};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(15);

/// Replicas that echo what they received (`tests/fixtures/echo_replica.py`).
const ECHO_REPLICA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/echo_replica.py"
);

/// Three echoing replicas, hashed by `key` with `fallback`; `proxy` is the `[proxy]` section.
fn config(key: &str, fallback: &str, proxy: &str) -> String {
    format!(
        r#"# Hash keys under test.
[ring]
key = "{key}"
key_fallback = "{fallback}"

[proxy]
{proxy}

[health]
interval_ms = 100
timeout_ms = 200

[supervisor]
command = ["python3", "{ECHO_REPLICA}"]

[[replicas]]
hostname = "Server 1"
id = 1

[[replicas]]
hostname = "Server 2"
id = 2

[[replicas]]
hostname = "Server 3"
id = 3
"#
    )
}

/// The replica that served `GET path` with `headers`.
async fn served(lb: &Lb, path: &str, headers: &[(&str, &str)]) -> String {
    let a = lb.send("GET", path, b"", headers).await;
    assert_eq!(a.status, 200, "GET {path} {headers:?}: {}", a.body);
    served_by(&a.body)
}

/// Save `key` and `fallback` in the file and wait until `/_lb/ring` shows them.
async fn switch(lb: &Lb, key: &str, fallback: &str) {
    std::fs::write(&lb.config, config(key, fallback, "")).unwrap();
    eventually(
        DEADLINE,
        &format!("key {key}, fallback {fallback}"),
        || async {
            let ring = lb.get("/_lb/ring").await.json();
            (ring["key"] == key && ring["key_fallback"] == fallback).then_some(())
        },
    )
    .await;
}

/// How a request carries key number `i` (a path and header fields).
type Carry = fn(usize) -> (String, Vec<(String, String)>);

/// Requests with equal keys go to one replica; 30 different keys reach more than one.
async fn sticky_and_spread(lb: &Lb, kind: &str, carry: Carry) {
    let send = |i: usize| async move {
        let (path, fields) = carry(i);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        served(lb, &path, &fields).await
    };
    for i in 0..5 {
        let first = send(i).await;
        for _ in 0..5 {
            assert_eq!(send(i).await, first, "{kind}: key {i} moved");
        }
    }
    let mut replicas = BTreeSet::new();
    for i in 0..30 {
        replicas.insert(send(i).await);
    }
    assert!(replicas.len() > 1, "{kind}: 30 keys all on {replicas:?}");
}

/// Replicas that served `n` requests for `/home` without any key.
async fn without_key(lb: &Lb, n: usize) -> BTreeSet<String> {
    let mut replicas = BTreeSet::new();
    for _ in 0..n {
        replicas.insert(served(lb, "/home", &[]).await);
    }
    replicas
}

fn header(i: usize) -> (String, Vec<(String, String)>) {
    ("/home".into(), vec![("X-User".into(), format!("user-{i}"))])
}

fn request_id(i: usize) -> (String, Vec<(String, String)>) {
    (
        "/home".into(),
        vec![("X-Request-Id".into(), format!("{}", 100_003 + 7 * i))],
    )
}

fn cookie(i: usize) -> (String, Vec<(String, String)>) {
    let value = format!("theme=dark; sid=\"s{i}\"; lang=en");
    ("/home".into(), vec![("Cookie".into(), value)])
}

fn query(i: usize) -> (String, Vec<(String, String)>) {
    (format!("/home?a=1&user=u{i}&user=ignored"), Vec::new())
}

fn path(i: usize) -> (String, Vec<(String, String)>) {
    (format!("/items/{i}?page={}", i % 2), Vec::new())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_sticks_spreads_falls_back_and_changes_live() {
    let lb = Lb::start(&config("header:X-Request-Id", "random", ""));
    // The default: X-Request-Id.
    sticky_and_spread(&lb, "header:X-Request-Id", request_id).await;
    assert!(without_key(&lb, 100).await.len() > 1, "random spreads");

    let kinds: [(&str, Carry); 4] = [
        ("header:X-User", header),
        ("cookie:sid", cookie),
        ("query:user", query),
        ("path", path),
    ];
    for (key, carry) in kinds {
        switch(&lb, key, "random").await;
        sticky_and_spread(&lb, key, carry).await;
        if key != "path" {
            // Without the key: random ids spread, the client's address sticks.
            let random = without_key(&lb, 100).await;
            assert!(
                random.len() > 1,
                "{key}: random fallback on {random:?} only"
            );
            switch(&lb, key, "client_ip").await;
            let sticky = without_key(&lb, 20).await;
            assert_eq!(
                sticky.len(),
                1,
                "{key}: client_ip fallback moved: {sticky:?}"
            );
            // The key still decides when it is there.
            sticky_and_spread(&lb, key, carry).await;
        }
    }
    let log = lb.log();
    for change in [
        "configuration change: key header:X-Request-Id → header:X-User",
        "configuration change: key_fallback random → client_ip",
        "configuration change: key query:user → path",
    ] {
        assert!(log.contains(change), "{change:?} not logged:\n{log}");
    }

    // A bad key changes nothing: the error is shown, requests stay routed by the path.
    let before = served(&lb, "/items/7", &[]).await;
    std::fs::write(&lb.config, config("cookie:", "random", "")).unwrap();
    let error = lb.last_error(DEADLINE).await;
    assert!(
        error.contains("line 3, column 7") && error.contains("names no cookie"),
        "{error}"
    );
    assert_eq!(lb.get("/_lb/ring").await.json()["key"], "path");
    for _ in 0..10 {
        assert_eq!(served(&lb, "/items/7", &[]).await, before);
    }
    // Fixed: applied, the error cleared.
    switch(&lb, "query:user", "random").await;
    assert_eq!(lb.status().await["config"]["last_error"], Value::Null);
    sticky_and_spread(&lb, "query:user", query).await;
}

/// `GET /home` from a client bound to `local` (any 127.x.y.z is this machine), with `fields`;
/// the replica that served it.
async fn home_from(lb: SocketAddr, local: IpAddr, fields: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let mut stream = socket.connect(lb).await.unwrap();
    let request = format!("GET /home HTTP/1.1\r\nHost: lb\r\n{fields}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    served_by(body)
}

fn client(i: u8) -> IpAddr {
    IpAddr::from([127, 0, 1, i])
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_is_the_tcp_peer_unless_forwarded_for_is_trusted() {
    let lb = Lb::start(&config("client_ip", "random", ""));
    // One client address: one replica, whatever X-Forwarded-For it claims.
    let first = home_from(lb.addr, client(1), "").await;
    for i in 0..10 {
        let claim = format!("X-Forwarded-For: 203.0.113.{i}\r\n");
        assert_eq!(home_from(lb.addr, client(1), &claim).await, first);
    }
    // Different client addresses spread.
    let mut replicas = BTreeSet::new();
    for i in 1..=40 {
        let got = home_from(lb.addr, client(i), "").await;
        assert_eq!(
            home_from(lb.addr, client(i), "").await,
            got,
            "client {i} moved"
        );
        replicas.insert(got);
    }
    assert!(replicas.len() > 1, "40 clients all on {replicas:?}");
    drop(lb);

    // Behind a proxy lb trusts: the first address of X-Forwarded-For is the client.
    let lb = Lb::start(&config("client_ip", "random", "trust_forwarded_for = true"));
    let mut replicas = BTreeSet::new();
    for i in 0..40 {
        let claim = format!("X-Forwarded-For: 203.0.113.{i}, 10.0.0.1\r\n");
        let got = home_from(lb.addr, client(1), &claim).await;
        // Sticky across client connections and proxy addresses.
        let other_hop = format!("X-Forwarded-For: 203.0.113.{i}, 10.9.9.9\r\n");
        assert_eq!(home_from(lb.addr, client(2), &other_hop).await, got);
        replicas.insert(got);
    }
    assert!(
        replicas.len() > 1,
        "40 forwarded clients all on {replicas:?}"
    );
    // No X-Forwarded-For: the proxy's own address.
    let direct = home_from(lb.addr, client(3), "").await;
    for _ in 0..5 {
        assert_eq!(home_from(lb.addr, client(3), "").await, direct);
    }
}

/// The values of field `name` a replica received, from an echo body.
fn received(body: &Value, name: &str) -> Vec<String> {
    body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_receive_the_forwarding_fields_on_both_paths() {
    let lb = Lb::start(&config("header:X-Request-Id", "random", ""));
    let sent = [
        ("Host", "shop.example:8080"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Via", "1.1 somewhere"),
        ("Forwarded", "for=203.0.113.66"),
        ("X-Real-IP", "203.0.113.66"),
    ];
    let via = lb.status().await["via"].as_str().unwrap().to_owned();
    // GET goes over the batching client, POST over hyper's.
    for (method, body) in [("GET", &b""[..]), ("POST", &b"x=1"[..])] {
        let a = lb.send(method, "/echo?q=1", body, &sent).await;
        assert_eq!(a.status, 200, "{method}: {}", a.body);
        let echo = a.json();
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/echo?q=1");
        assert_eq!(received(&echo, "host"), ["shop.example:8080"], "{method}");
        assert_eq!(
            received(&echo, "x-forwarded-for"),
            ["198.51.100.1, 127.0.0.1"],
            "{method}: appended, in one field line"
        );
        assert_eq!(received(&echo, "x-forwarded-proto"), ["http"], "{method}");
        assert_eq!(
            received(&echo, "x-forwarded-host"),
            ["shop.example:8080"],
            "{method}"
        );
        // The client's Via goes on like any end-to-end field, lb's mark after it.
        assert_eq!(
            received(&echo, "via"),
            ["1.1 somewhere", via.as_str()],
            "{method}"
        );
        // Client addresses only a trusted proxy may give are removed.
        assert!(received(&echo, "forwarded").is_empty(), "{method}");
        assert!(received(&echo, "x-real-ip").is_empty(), "{method}");
    }
    drop(lb);

    // Behind a trusted proxy, its X-Forwarded-Proto and -Host go on.
    let lb = Lb::start(&config(
        "header:X-Request-Id",
        "random",
        "trust_forwarded_for = true",
    ));
    for (method, body) in [("GET", &b""[..]), ("POST", &b"x=1"[..])] {
        let echo = lb.send(method, "/echo", body, &sent).await.json();
        assert_eq!(received(&echo, "x-forwarded-proto"), ["https"], "{method}");
        assert_eq!(
            received(&echo, "x-forwarded-host"),
            ["evil.example"],
            "{method}"
        );
        assert_eq!(received(&echo, "host"), ["shop.example:8080"], "{method}");
        assert_eq!(
            received(&echo, "x-forwarded-for"),
            ["198.51.100.1, 127.0.0.1"],
            "{method}"
        );
        assert_eq!(
            received(&echo, "forwarded"),
            ["for=203.0.113.66"],
            "{method}"
        );
        assert_eq!(received(&echo, "x-real-ip"), ["203.0.113.66"], "{method}");
    }
    // Sent without any: lb's own.
    let echo = lb.send("GET", "/echo", b"", &[]).await.json();
    assert_eq!(received(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(received(&echo, "x-forwarded-host"), received(&echo, "host"));
}
