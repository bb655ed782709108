//! Request loops through `lb` itself: a backend by address that is `lb` (however its address is
//! written, or however it is reached) never joins the ring, and a request that comes back
//! carrying `lb`'s own `Via` mark is answered 508 instead of being sent round again. Another
//! `lb` in front is not a loop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

use common::{eventually, Lb};

const DEADLINE: Duration = Duration::from_secs(10);

/// Fast health checks on `/heartbeat`, which the assignment's replicas and the test backends
/// answer 200 — and which `lb` itself proxies to a replica when a client asks.
const HEALTH: &str = "[health]\npath = \"/heartbeat\"\ninterval_ms = 100\ntimeout_ms = 300\n\
                      fall = 2\nrise = 2\nstart_timeout_ms = 3000\n";

fn entry(name: &str, id: u64, address: &str, extra: &str) -> String {
    format!("[[replicas]]\nhostname = \"{name}\"\nid = {id}\naddress = \"{address}\"\n{extra}")
}

/// A backend written for these tests: answers every request on a keep-alive connection with
/// `200` and, as the body, the request head exactly as it arrived (field lines and all).
fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || echo(stream));
        }
    });
    addr
}

fn echo(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            head.len()
        )
        .into_bytes();
        answer.extend_from_slice(&head);
        if stream.write_all(&answer).is_err() {
            return;
        }
    }
}

/// A plain TCP relay on a new loopback port to `to`: another way to reach `lb` than any of its
/// own addresses (a NAT, a tunnel, a name `lb` cannot see through).
fn relay_to(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(to) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    addr
}

/// The vacancy of `hostname` once `attempts` tries to bring it into the ring have failed.
async fn vacancy_after(lb: &Lb, hostname: &str, attempts: u64) -> Value {
    let what = format!("{attempts} failed attempts of {hostname}");
    eventually(Duration::from_secs(20), &what, || async {
        lb.status().await["vacancies"]
            .as_array()?
            .iter()
            .find(|v| {
                v["hostname"] == hostname
                    && v["failed_attempts"].as_u64().is_some_and(|n| n >= attempts)
            })
            .cloned()
    })
    .await
}

/// The slot owners `/_lb/ring` lists.
async fn owners(lb: &Lb) -> Vec<String> {
    lb.get("/_lb/ring").await.json()["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect()
}

/// `/add` with an address that is `lb` itself — its traffic or admin listener, by any spelling
/// of a loopback or wildcard host — is a 400 naming the address, and nothing is added.
#[tokio::test(flavor = "multi_thread")]
async fn add_refuses_every_spelling_of_lbs_own_addresses() {
    let lb = Lb::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{HEALTH}[[replicas]]\nhostname = \"Server 1\"\nid = 1\n"
    ));
    let admin = lb.admin.expect("an admin address");
    let (port, admin_port) = (lb.addr.port(), admin.port());
    for address in [
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("127.0.0.1:{port}"),
        format!("localhost:{admin_port}"),
        format!("[::ffff:127.0.0.1]:{admin_port}"),
        format!("127.0.0.1:{admin_port}"),
    ] {
        let body = format!(r#"{{"n": 1, "hostnames": ["self"], "addresses": ["{address}"]}}"#);
        let answer = lb
            .send_to(admin, "POST", "/add", body.as_bytes(), &[])
            .await;
        assert_eq!(answer.status, 400, "{address}: {}", answer.body);
        let message = answer.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&address) && message.contains("lb's own listening address"),
            "{address}: {message}"
        );
        let rep = lb.get("/rep").await.json();
        assert_eq!(rep["message"]["N"], 1, "{address} was added: {rep}");
    }
}

/// A file entry whose name resolves to `lb`'s own listener (the port `lb` bound, which the file
/// cannot know) is refused when it would join, with the reason under `vacancies`; it never
/// enters the ring and requests keep going to the real replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_entry_that_resolves_to_lb_itself_never_joins() {
    let text = format!("{HEALTH}[[replicas]]\nhostname = \"Server 1\"\nid = 1\n");
    let lb = Lb::start(&text);
    let address = format!("localhost:{}", lb.addr.port());
    std::fs::write(
        &lb.config,
        format!("{text}{}", entry("self", 2, &address, "")),
    )
    .unwrap();
    // Refused again at every health interval; through the proxy it would have passed its
    // `rise` checks long before the fifth refusal.
    let vacancy = vacancy_after(&lb, "self", 5).await;
    let reason = vacancy["reason"].as_str().unwrap();
    assert!(
        reason.contains("resolves to this load balancer itself") && reason.contains(&address),
        "{vacancy}"
    );
    assert_eq!(common::status_of(&lb, "self").await["health"], "down");
    assert!(!owners(&lb).await.contains(&"self".to_owned()));
    let home = lb.send("GET", "/home", b"", &[]).await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(common::served_by(&home.body), "Server 1");
}

/// A backend that is `lb` itself reached another way (a relay on another port, so no address
/// check can tell): `lb`'s health checks carry its mark, `lb` answers them 508, and the backend
/// never passes. Requests never loop.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_leads_back_to_lb_never_passes_its_health_check() {
    let text = format!("{HEALTH}[[replicas]]\nhostname = \"Server 1\"\nid = 1\n");
    let lb = Lb::start(&text);
    let relay = relay_to(lb.addr);
    std::fs::write(
        &lb.config,
        format!("{text}{}", entry("around", 2, &relay.to_string(), "")),
    )
    .unwrap();
    // One attempt lasts `start_timeout_ms` (3 s), many times `rise` checks 100 ms apart.
    let vacancy = vacancy_after(&lb, "around", 1).await;
    assert!(
        vacancy["reason"].as_str().unwrap().contains("508"),
        "{vacancy}"
    );
    assert_eq!(common::status_of(&lb, "around").await["health"], "down");
    assert!(!owners(&lb).await.contains(&"around".to_owned()));
    // A client's own /heartbeat is still proxied to a replica (the assignment's contract).
    let beat = lb.send("GET", "/heartbeat", b"", &[]).await;
    assert_eq!(beat.status, 200, "{}", beat.body);
    // And through the relay, a client's request is answered once, not sent round: lb proxies
    // it to Server 1, whose answer comes back.
    let through = lb.send_to(relay, "GET", "/home", b"", &[]).await;
    assert_eq!(through.status, 200, "{}", through.body);
}

/// Two `lb`s in a chain (A → B → a backend): not a loop. The backend sees one `X-Forwarded-For`
/// line with the whole chain, both marks in order, and no client `Forwarded`/`X-Real-IP`; A
/// sends over its batching client (pipelining on) and B over hyper's, so both forwarding paths
/// are checked. A request that carries an `lb`'s own mark is a 508 there.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_two_lbs_works_and_a_forged_mark_is_a_508() {
    let backend = echo_backend();
    let b = Lb::start(&format!(
        "{HEALTH}{}",
        entry("echo", 1, &backend.to_string(), "")
    ));
    let a = Lb::start(&format!(
        "{HEALTH}{}",
        entry("lb-b", 1, &b.addr.to_string(), "pipelining = true\n")
    ));
    eventually(DEADLINE, "B in A's ring", || async {
        (common::status_of(&a, "lb-b").await["health"] == "up").then_some(())
    })
    .await;
    let via_a = a.status().await["via"].as_str().unwrap().to_owned();
    let via_b = b.status().await["via"].as_str().unwrap().to_owned();
    assert!(
        via_a.starts_with("1.1 lb-") && via_a.len() == "1.1 lb-".len() + 16,
        "{via_a}"
    );
    assert_ne!(via_a, via_b);

    let answer = a
        .send(
            "GET",
            "/chain",
            b"",
            &[
                ("X-Forwarded-For", "1.2.3.4"),
                ("X-Forwarded-For", "5.6.7.8"),
                ("Forwarded", "for=6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let head = answer.body.to_ascii_lowercase();
    let lines: Vec<&str> = head.split("\r\n").collect();
    let named = |name: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    assert_eq!(
        named("x-forwarded-for"),
        ["1.2.3.4, 5.6.7.8, 127.0.0.1, 127.0.0.1"],
        "{}",
        answer.body
    );
    assert!(named("forwarded").is_empty(), "{}", answer.body);
    assert!(named("x-real-ip").is_empty(), "{}", answer.body);
    assert_eq!(
        named("via"),
        [via_a.to_ascii_lowercase(), via_b.to_ascii_lowercase()],
        "{}",
        answer.body
    );

    // The mark sent back to the lb it names: 508, before anything is proxied.
    let served = b.served().await;
    for (lb, via) in [(&b, via_b.as_str()), (&a, via_a.as_str())] {
        for forged in [via.to_owned(), format!("1.0 fred, {via}")] {
            let looped = lb.send("GET", "/home", b"", &[("Via", &forged)]).await;
            assert_eq!(looped.status, 508, "{forged}: {}", looped.body);
            let json = looped.json();
            assert_eq!(json["status"], "failure");
            let message = json["message"].as_str().unwrap();
            assert!(message.starts_with("<Error> request loop"), "{message}");
        }
    }
    assert_eq!(b.served().await, served, "B proxied a looping request");
    // B's mark reaching A is just a proxy in front: A passes it on, and B refuses it.
    let via_b_at_a = a.send("GET", "/x", b"", &[("Via", &via_b)]).await;
    assert_eq!(via_b_at_a.status, 508, "{}", via_b_at_a.body);
    // Counted with its status.
    let metrics = b.send("GET", "/_lb/metrics", b"", &[]).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lb_requests_total") && l.contains("code=\"508\"")),
        "{metrics}"
    );
}
