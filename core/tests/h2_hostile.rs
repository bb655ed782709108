//! Hostile HTTP/2 clients cannot hurt the others: a rapid reset flood (CVE-2023-44487: HEADERS
//! then RST_STREAM, again and again, with the `h2` crate as a raw client) and a CONTINUATION
//! flood (raw frames: HEADERS without END_HEADERS, then CONTINUATION frames without end), each
//! from one connection while another client's requests keep being answered. The flooding
//! connection is closed (GOAWAY, counted as a protocol error) and `lb`'s memory stays bounded.
//! Every loop is bounded in count and time; no timing is asserted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Lb, THREE};

/// The HTTP/2 client preface (RFC 9113 §3.4) and an empty SETTINGS frame.
const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// `lb`'s resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Another client: HTTP/1.1 `GET /home` one after the other until `stop` (at most 5 000
/// requests and 60 s); every answer's status.
fn bystander(lb: &Arc<Lb>, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u16>> {
    let lb = Arc::clone(lb);
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut statuses = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && statuses.len() < 5_000 && Instant::now() < deadline {
            statuses.push(lb.send("GET", "/home", b"", &[]).await.status);
        }
        statuses
    })
}

/// Wait for the bystander to have had `n` answers more than `from` (at most 30 s).
async fn answered(lb: &Lb, from: u64, n: u64) {
    eventually(
        Duration::from_secs(30),
        "the other client's answers",
        || async { (lb.served().await >= from + n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rapid_reset_flood_is_sent_away_and_spares_other_clients() {
    let lb = Arc::new(Lb::start(THREE));
    let pid = lb.pid();
    let errors_before = lb.metric("lb_http2_protocol_errors_total").await;
    let rss_before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let others = bystander(&lb, &stop);
    let served = lb.served().await;

    // The flood, on a runtime of its own (one thread: the h2 client writes its frames in
    // batches, as an attacker's tool does).
    let addr = lb.addr;
    let flood = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
            let conn = tokio::spawn(conn);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut sent = 0u32;
            let why = loop {
                if sent >= 100_000 || Instant::now() > deadline {
                    break None;
                }
                send = match send.ready().await {
                    Ok(send) => send,
                    Err(e) => break Some(e),
                };
                let req = http::Request::get(format!("http://{addr}/home"))
                    .header("x-request-id", sent.to_string())
                    .body(())
                    .unwrap();
                match send.send_request(req, true) {
                    Ok((_response, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                    Err(e) => break Some(e),
                }
                sent += 1;
                // Let the connection task write now and then (every 64 streams).
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            };
            let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
            let calm =
                why.as_ref().and_then(h2::Error::reason) == Some(h2::Reason::ENHANCE_YOUR_CALM);
            (
                sent,
                why.map(|e| e.to_string()),
                ended.ok().map(|r| r.unwrap().map_err(|e| e.to_string())),
                calm,
            )
        })
    });
    let (sent, why, ended, calm) = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    // lb sent the flood away before the client's 100 000 streams were through.
    assert!(
        why.is_some() || matches!(ended, Some(Err(_))),
        "the flooding connection was not closed after {sent} streams (ended: {ended:?})"
    );
    let conn_error = ended.and_then(Result::err).unwrap_or_default();
    // h2's answer to rapid resets is GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets"); the client
    // may see the close (a reset of what it was still writing) before it reads the GOAWAY, so
    // lb's own count of the protocol error is what is asserted.
    eventually(Duration::from_secs(10), "the flood counted", || async {
        (lb.metric("lb_http2_protocol_errors_total").await > errors_before).then_some(())
    })
    .await;
    // The other client goes on being answered, during and after the flood.
    answered(&lb, served, 20).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = others.await.unwrap();
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    eprintln!(
        "rapid reset: {sent} streams sent before the GOAWAY (ENHANCE_YOUR_CALM seen: {calm}; \
         {why:?} / {conn_error}); \
         RSS {rss_before} → {rss_after} KiB; the other client: {} answers",
        statuses.len()
    );
}

/// A frame header: `len` bytes of `kind` with `flags` on `stream`.
fn frame_header(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_is_sent_away_and_spares_other_clients() {
    let lb = Arc::new(Lb::start(THREE));
    let pid = lb.pid();
    let errors_before = lb.metric("lb_http2_protocol_errors_total").await;
    let rss_before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let others = bystander(&lb, &stop);
    let served = lb.served().await;

    let addr = lb.addr;
    let flood = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tcp.write_all(PREFACE_AND_SETTINGS).unwrap();
        // HEADERS on stream 1: END_STREAM, no END_HEADERS; `:method: GET` (indexed 2).
        let mut first = frame_header(1, 0x1, 0x1, 1).to_vec();
        first.push(0x82);
        tcp.write_all(&first).unwrap();
        // CONTINUATION frames that never end: each a literal field `a: <4 KiB>` without
        // indexing (valid HPACK), 10 000 of them (40 MiB) at most, or 30 s.
        let mut field = vec![0x00, 0x01, b'a', 0x7f, 0x81, 0x1f];
        field.extend(std::iter::repeat_n(b'x', 4096));
        let mut continuation = frame_header(field.len(), 0x9, 0x0, 1).to_vec();
        continuation.extend_from_slice(&field);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut written = 0u32;
        while written < 10_000 && Instant::now() < deadline {
            if tcp.write_all(&continuation).is_err() {
                break;
            }
            written += 1;
        }
        // What lb said, until it closed.
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let until = Instant::now() + Duration::from_secs(10);
        let closed = loop {
            if Instant::now() > until {
                break false;
            }
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        };
        (written, closed, got)
    });
    let (written, closed, got) = flood.await.unwrap();
    assert!(
        closed,
        "the flooding connection stayed open after {written} frames"
    );
    assert!(
        written < 10_000,
        "lb took all 10 000 CONTINUATION frames (40 MiB) without closing"
    );
    // A GOAWAY, when it arrived before the reset (the client was still writing).
    let goaway = got
        .windows(4)
        .any(|w| w[3] == 0x7 && w[0] == 0 && w[1] == 0 && w[2] >= 8);
    eprintln!(
        "CONTINUATION flood: closed after {written} frames; GOAWAY seen: {goaway}; {} bytes",
        got.len()
    );
    eventually(Duration::from_secs(10), "the flood counted", || async {
        (lb.metric("lb_http2_protocol_errors_total").await > errors_before).then_some(())
    })
    .await;
    answered(&lb, served, 20).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = others.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_beyond_the_limit_are_refused_and_the_rest_answered() {
    let lb = Lb::start(&format!("[proxy]\nh2_max_concurrent_streams = 5\n{THREE}"));
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    // The h2 client's own limit off, so it sends beyond what lb announced.
    let (send, conn) = h2::client::Builder::new()
        .initial_max_send_streams(50)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let mut responses = Vec::new();
    for i in 0..20 {
        let request = || {
            http::Request::get(format!("http://{}/home", lb.addr))
                .header("x-request-id", i.to_string())
                .body(())
                .unwrap()
        };
        let response = match send.send_request(request(), true) {
            Ok((response, _)) => response,
            // lb's SETTINGS arrived and the client is at the limit: it waits for a free stream.
            Err(_) => {
                send = tokio::time::timeout(Duration::from_secs(30), send.ready())
                    .await
                    .expect("a free stream within 30 s")
                    .unwrap();
                send.send_request(request(), true).unwrap().0
            }
        };
        responses.push(response);
    }
    let mut ok = 0;
    let mut refused = 0;
    for response in responses {
        match tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("an answer or a reset within 30 s")
        {
            Ok(resp) if resp.status() == 200 => ok += 1,
            Ok(resp) => panic!("status {}", resp.status()),
            Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok >= 5, "{ok} answered, {refused} refused");
    // The client's stream limit comes from lb's SETTINGS once they arrive: streams sent before
    // are refused past the limit, after it the client waits. Either way, none is lost.
    assert_eq!(ok + refused, 20);
}
