//! The batching HTTP/1.1 client (`data::upstream`) against scripted replicas on loopback: request
//! batching, response order, framing (length, chunked, close-delimited, HEAD/204/304, interim
//! responses), resending after a closed connection, and cut-off or malformed responses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{request_head, UpstreamError, Upstreams, MAX_CONNECTIONS, MAX_CONNECTIONS_WHEN_HELD};
use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a scripted replica does with one request.
enum Act {
    /// Write these bytes (one or more responses) and go on.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Take this long to handle the request (a handler at work), then write these bytes.
    SendAfter(std::time::Duration, Vec<u8>),
}

/// (connection number, request number on that connection, request target) → what to do.
type Script = dyn Fn(usize, usize, &str) -> Act + Send + Sync;

/// A replica on loopback that answers by script and records what it saw.
struct Fake {
    addr: String,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// The most requests that arrived in one read.
    max_batch: Arc<AtomicUsize>,
    /// Request targets in the order they were read.
    seen: Arc<Mutex<Vec<String>>>,
}

async fn fake(script: impl Fn(usize, usize, &str) -> Act + Send + Sync + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let script: Arc<Script> = Arc::new(script);
    let connections = Arc::new(AtomicUsize::new(0));
    let max_batch = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, m, s) = (connections.clone(), max_batch.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let conn = c.fetch_add(1, Ordering::SeqCst);
            let (script, max_batch, seen) = (script.clone(), m.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut index = 0;
                loop {
                    let mut chunk = [0u8; 65536];
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut out = Vec::new();
                    let mut batch = 0;
                    let mut close = false;
                    loop {
                        let mut fields = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut fields);
                        let Ok(httparse::Status::Complete(len)) = req.parse(&buf) else {
                            break;
                        };
                        let target = req.path.unwrap().to_owned();
                        buf.drain(..len);
                        batch += 1;
                        seen.lock().unwrap().push(target.clone());
                        match script(conn, index, &target) {
                            Act::Send(bytes) => out.extend_from_slice(&bytes),
                            Act::SendAndClose(bytes) => {
                                out.extend_from_slice(&bytes);
                                close = true;
                                break;
                            }
                            Act::SendAfter(delay, bytes) => {
                                tokio::time::sleep(delay).await;
                                out.extend_from_slice(&bytes);
                            }
                        }
                        index += 1;
                    }
                    max_batch.fetch_max(batch, Ordering::SeqCst);
                    if stream.write_all(&out).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Fake {
        addr,
        connections,
        max_batch,
        seen,
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn head(method: Method, target: &str) -> Bytes {
    request_head(
        &method,
        target,
        &HeaderMap::new(),
        "replica",
        &HeaderValue::from_static("127.0.0.1"),
        &crate::data::hop::PROTO_HTTP,
        false,
    )
}

/// Send one GET and collect the response: status and body, or the error.
async fn get(up: &Upstreams, addr: &str, target: &str) -> Result<(u16, Bytes), String> {
    let resp = up
        .request(addr, head(Method::GET, target), false)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

#[tokio::test]
async fn requests_sent_together_share_one_write_and_get_their_own_responses() {
    let replica = fake(|_, _, target| Act::Send(ok(&format!("answer to {target}")))).await;
    let up = Upstreams::new();
    let targets: Vec<String> = (0..10).map(|i| format!("/home?i={i}")).collect();
    let answers = join_all(targets.iter().map(|t| get(&up, &replica.addr, t))).await;
    for (target, answer) in targets.iter().zip(answers) {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("answer to {target}"));
    }
    assert_eq!(replica.connections.load(Ordering::SeqCst), 1);
    assert!(
        replica.max_batch.load(Ordering::SeqCst) > 1,
        "requests issued together should arrive together"
    );
    assert_eq!(*replica.seen.lock().unwrap(), targets);
}

#[tokio::test]
async fn connection_close_mid_pipeline_resends_the_unanswered_requests() {
    // The first connection answers its first request with `Connection: close` and drops the
    // rest; later connections answer everything.
    let replica = fake(|conn, index, target| {
        let body = format!("answer to {target}");
        if conn == 0 && index == 0 {
            Act::SendAndClose(
                format!(
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        } else {
            Act::Send(ok(&body))
        }
    })
    .await;
    let up = Upstreams::new();
    let targets: Vec<String> = (0..6).map(|i| format!("/r{i}")).collect();
    let answers = join_all(targets.iter().map(|t| get(&up, &replica.addr, t))).await;
    for (target, answer) in targets.iter().zip(answers) {
        assert_eq!(answer.unwrap().1, format!("answer to {target}"));
    }
    assert!(replica.connections.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn a_connection_the_replica_closed_while_idle_is_not_an_error() {
    // Every connection serves one response and closes without saying so (an idle timeout).
    let replica = fake(|_, _, target| Act::SendAndClose(ok(target))).await;
    let up = Upstreams::new();
    for i in 0..5 {
        let target = format!("/n{i}");
        assert_eq!(get(&up, &replica.addr, &target).await.unwrap().1, target);
    }
    assert_eq!(replica.connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn chunked_close_delimited_and_large_bodies_arrive_whole() {
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big2 = big.clone();
    let replica = fake(move |_, _, target| match target {
        "/chunked" => Act::Send(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
                .to_vec(),
        ),
        "/big" => Act::Send(ok(&big2)),
        "/until-close" => {
            Act::SendAndClose(b"HTTP/1.0 200 OK\r\n\r\nall of it until the end".to_vec())
        }
        _ => Act::Send(ok("after")),
    })
    .await;
    let up = Upstreams::new();
    let body = |r: Result<(u16, Bytes), String>| r.unwrap().1;
    assert_eq!(
        body(get(&up, &replica.addr, "/chunked").await),
        "hello, world"
    );
    assert_eq!(body(get(&up, &replica.addr, "/after").await), "after");
    assert_eq!(body(get(&up, &replica.addr, "/big").await), big.as_bytes());
    assert_eq!(
        body(get(&up, &replica.addr, "/until-close").await),
        "all of it until the end"
    );
    assert_eq!(body(get(&up, &replica.addr, "/after").await), "after");
}

#[tokio::test]
async fn head_204_304_and_interim_responses_carry_no_body() {
    // Each answer is followed on the same connection by the next; reading a body where there is
    // none would swallow the next response.
    let replica = fake(|_, _, target| match target {
        "/head" => Act::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n".to_vec()),
        "/204" => Act::Send(b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n".to_vec()),
        "/304" => Act::Send(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n".to_vec()),
        "/103" => Act::Send(
            [
                &b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"[..],
                &ok("final"),
            ]
            .concat(),
        ),
        _ => Act::Send(ok("next")),
    })
    .await;
    let up = Upstreams::new();
    let resp = up
        .request(&replica.addr, head(Method::HEAD, "/head"), true)
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-length"], "50");
    assert!(resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    assert_eq!(get(&up, &replica.addr, "/x").await.unwrap().1, "next");
    assert_eq!(
        get(&up, &replica.addr, "/204").await.unwrap(),
        (204, Bytes::new())
    );
    assert_eq!(
        get(&up, &replica.addr, "/304").await.unwrap(),
        (304, Bytes::new())
    );
    assert_eq!(
        get(&up, &replica.addr, "/103").await.unwrap(),
        (200, "final".into())
    );
    assert_eq!(get(&up, &replica.addr, "/x").await.unwrap().1, "next");
    assert_eq!(replica.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_cut_off_midway_fails_instead_of_ending_short() {
    let replica = fake(|_, _, target| match target {
        "/length" => {
            Act::SendAndClose(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..".to_vec())
        }
        _ => Act::SendAndClose(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
        ),
    })
    .await;
    let up = Upstreams::new();
    for target in ["/length", "/chunked"] {
        let err = get(&up, &replica.addr, target).await.unwrap_err();
        assert!(err.contains("cut off"), "{target}: {err}");
    }
}

#[tokio::test]
async fn malformed_responses_are_refused_with_the_reason() {
    let replica = fake(|_, _, target| match target {
        "/two-lengths" => Act::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd".to_vec(),
        ),
        "/bad-length" => Act::Send(b"HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\nabc".to_vec()),
        "/bad-chunk" => Act::Send(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
        ),
        "/garbage" => Act::Send(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
        _ => Act::Send(ok("fine")),
    })
    .await;
    let up = Upstreams::new();
    for (target, reason) in [
        ("/two-lengths", "disagree"),
        ("/bad-length", "content-length"),
        ("/bad-chunk", "chunk size"),
        ("/garbage", "invalid response"),
    ] {
        let err = get(&up, &replica.addr, target).await.unwrap_err();
        assert!(err.contains(reason), "{target}: {err}");
        // The connection that carried it is gone; the next request still works.
        assert_eq!(get(&up, &replica.addr, "/ok").await.unwrap().1, "fine");
    }
}

#[tokio::test]
async fn an_unreachable_replica_fails_fast_with_a_connect_error() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let up = Upstreams::new();
    let err = up
        .request(&addr, head(Method::GET, "/home"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err}");
    assert!(up.connections().is_empty());
}

#[tokio::test]
async fn busy_connections_grow_to_the_cap_and_then_pipeline() {
    // A replica that answers nothing until 40 requests are waiting, then everything: more
    // requests than MAX_CONNECTIONS are outstanding at once, so some must share connections.
    let waiting = Arc::new(Mutex::new(Vec::<tokio::sync::oneshot::Sender<()>>::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let total = MAX_CONNECTIONS + 8;
    let accepted = Arc::new(AtomicUsize::new(0));
    let (w, a) = (waiting.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let w = w.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut count = 0;
                    loop {
                        let mut fields = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut fields);
                        let Ok(httparse::Status::Complete(len)) = req.parse(&buf) else {
                            break;
                        };
                        buf.drain(..len);
                        count += 1;
                    }
                    let mut gates = Vec::new();
                    {
                        let mut list = w.lock().unwrap();
                        for _ in 0..count {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            list.push(tx);
                            gates.push(rx);
                        }
                        if list.len() >= total {
                            for tx in list.drain(..) {
                                let _ = tx.send(());
                            }
                        }
                    }
                    for gate in gates {
                        let _ = gate.await;
                        if stream.write_all(&ok("late")).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    // Queue behind anything younger than a minute: on a loaded machine the requests below may
    // take more than QUEUE_BEHIND to be issued, and this test is about the cap.
    let up = Upstreams::new().queue_behind(std::time::Duration::from_secs(60));
    let answers = join_all((0..total).map(|i| {
        let up = &up;
        let addr = addr.clone();
        async move {
            // Spread over turns of the event loop, as clients arriving one by one would.
            for _ in 0..i {
                tokio::task::yield_now().await;
            }
            get(up, &addr, "/slow").await
        }
    }))
    .await;
    assert!(answers.iter().all(|a| a.as_ref().unwrap().1 == "late"));
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        connections <= MAX_CONNECTIONS,
        "{connections} connections for {total} requests"
    );
}

/// A replica where `/held…` requests are answered only when `release` fires and every other
/// request at once (in order on each connection, as HTTP/1.1 requires). Returns its address
/// and its counts of accepted connections and of requests read.
async fn holding_replica(
    release: Arc<tokio::sync::Notify>,
) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let read = Arc::new(AtomicUsize::new(0));
    let (count, reads) = (Arc::clone(&accepted), Arc::clone(&read));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (release, reads) = (Arc::clone(&release), Arc::clone(&reads));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    loop {
                        let mut fields = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut fields);
                        let Ok(httparse::Status::Complete(len)) = req.parse(&buf) else {
                            break;
                        };
                        let target = req.path.unwrap().to_owned();
                        buf.drain(..len);
                        reads.fetch_add(1, Ordering::SeqCst);
                        if target.starts_with("/held") {
                            release.notified().await;
                        }
                        if stream.write_all(&ok(&target)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted, read)
}

/// Requests held by a slow replica on every connection (more than [`MAX_CONNECTIONS`]) do not
/// hold up unrelated requests to it: those get connections of their own instead of queueing
/// behind a request older than `QUEUE_BEHIND`.
#[tokio::test]
async fn unrelated_requests_never_queue_behind_held_ones() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (addr, accepted, read) = holding_replica(Arc::clone(&release)).await;
    let up = Arc::new(Upstreams::new());
    let held_count = MAX_CONNECTIONS + 8;
    // One at a time, each read by the replica before the next (clients arriving one by one,
    // not a batch): each takes a connection of its own up to the cap, then they pipeline.
    let mut held = Vec::new();
    for i in 0..held_count {
        let (up, addr) = (Arc::clone(&up), addr.clone());
        held.push(tokio::spawn(async move {
            get(&up, &addr, &format!("/held{i}")).await
        }));
        if i < MAX_CONNECTIONS {
            eventually_async(|| read.load(Ordering::SeqCst) > i).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), MAX_CONNECTIONS);
    // Let the held requests grow older than QUEUE_BEHIND (5 ms): the rule under test is an age.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for i in 0..10 {
        let target = format!("/fast{i}");
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(10), get(&up, &addr, &target))
                .await
                .expect("an unrelated request waited behind a held one");
        assert_eq!(answer.unwrap().1, target.as_str());
    }
    assert!(held.iter().all(|h| !h.is_finished()), "released too early");
    let open = up.connections()[&addr];
    assert!(
        open > MAX_CONNECTIONS && open <= MAX_CONNECTIONS_WHEN_HELD,
        "{open} connections"
    );
    // Release every held request (one notification each; more than enough).
    for _ in 0..held_count * 2 {
        release.notify_one();
        tokio::task::yield_now().await;
    }
    for h in held {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), h)
            .await
            .expect("a held request was never answered")
            .unwrap();
        assert!(answer.unwrap().1.starts_with(b"/held"));
    }
}

/// Poll `done` until it holds (10 s at most).
async fn eventually_async(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_slow_replica_gets_concurrent_requests_on_separate_connections() {
    // 20 ms per request: batching would make the last of a batch wait for all before it.
    let replica =
        fake(|_, _, target| Act::SendAfter(std::time::Duration::from_millis(20), ok(target))).await;
    let up = Upstreams::new();
    for _ in 0..2 {
        assert_eq!(get(&up, &replica.addr, "/warm").await.unwrap().1, "/warm");
    }
    replica.max_batch.store(0, Ordering::SeqCst);
    let targets: Vec<String> = (0..8).map(|i| format!("/slow{i}")).collect();
    let answers = join_all(targets.iter().map(|t| get(&up, &replica.addr, t))).await;
    for (target, answer) in targets.iter().zip(answers) {
        assert_eq!(answer.unwrap().1, target.as_str());
    }
    assert_eq!(
        replica.max_batch.load(Ordering::SeqCst),
        1,
        "requests were batched"
    );
    assert!(replica.connections.load(Ordering::SeqCst) >= 8);
}

#[tokio::test]
async fn hostile_responses_fail_their_request_once_and_spare_the_others() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "a".repeat(70 * 1024)
    );
    let replica = fake(move |_, _, target| match target {
        "/status-999" => Act::Send(b"HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok".to_vec()),
        "/many-1xx" => Act::Send(
            "HTTP/1.1 103 Early Hints\r\n\r\n"
                .repeat(9)
                .into_bytes()
                .into_iter()
                .chain(ok("late"))
                .collect(),
        ),
        "/big-head" => Act::Send(big.clone().into_bytes()),
        "/garbage" => Act::Send(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
        _ => Act::Send(ok("fine")),
    })
    .await;
    let up = Upstreams::new();
    for (target, reason) in [
        ("/status-999", "status code 999"),
        ("/many-1xx", "more than 8 interim"),
        ("/big-head", "larger than 65536 bytes"),
        ("/garbage", "invalid response"),
    ] {
        let before = replica.seen.lock().unwrap().len();
        // The hostile response and two requests queued behind it on the same connection.
        let (bad, next, last) = tokio::join!(
            get(&up, &replica.addr, target),
            get(&up, &replica.addr, "/after-1"),
            get(&up, &replica.addr, "/after-2"),
        );
        let err = bad.unwrap_err();
        assert!(err.contains(reason), "{target}: {err}");
        assert_eq!(next.unwrap().1, "fine", "after {target}");
        assert_eq!(last.unwrap().1, "fine", "after {target}");
        let seen = replica.seen.lock().unwrap()[before..].to_vec();
        assert_eq!(
            seen.iter().filter(|t| *t == target).count(),
            1,
            "{target} was answered, so it is not sent again: {seen:?}"
        );
    }
}
