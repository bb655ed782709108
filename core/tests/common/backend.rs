//! A backend written for tests, reached as a backend by address: it answers each request head
//! with what a script says for its path — raw bytes (hostile answers), or a large body streamed
//! as the client takes it — and counts the requests it got. `GET /health` always gets `200 ok`
//! (for `[health] path = "/health"`) and is not counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the backend sends for a request.
pub enum Reply {
    /// These bytes; then the connection serves the next request.
    Raw(Vec<u8>),
    /// These bytes; then the connection is closed.
    RawClose(Vec<u8>),
    /// `count` interim responses (`100 Continue`) one every `every`, then `final_answer`; the
    /// connection is closed after that (or when a write fails).
    Trickle {
        count: usize,
        every: Duration,
        final_answer: Vec<u8>,
    },
    /// `200 OK` with a body of `len` bytes, written 64 KiB at a time as the socket takes them
    /// (the connection is closed when a write fails).
    Body(usize),
}

/// A running test backend.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it got (not counting `/health`).
    pub requests: Arc<AtomicUsize>,
    /// Interim responses written before their connection failed or they were all sent.
    pub interim_written: Arc<AtomicUsize>,
    /// [`Reply::Trickle`]s over (all sent, or a write failed).
    pub trickles_done: Arc<AtomicUsize>,
}

/// `200 OK` with `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Backend {
    /// Listen on a free loopback port and answer each request by `script(path)`.
    pub fn start(script: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let interim_written = Arc::new(AtomicUsize::new(0));
        let trickles_done = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let counters = Counters {
            requests: Arc::clone(&requests),
            interim: Arc::clone(&interim_written),
            trickles: Arc::clone(&trickles_done),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let script = Arc::clone(&script);
                let counters = counters.clone();
                std::thread::spawn(move || serve(stream, &*script, &counters));
            }
        });
        Backend {
            addr,
            requests,
            interim_written,
            trickles_done,
        }
    }

    /// Requests it got so far (not counting `/health`).
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Its `[[replicas]]` entry as a backend by address.
    pub fn entry(&self, hostname: &str, id: u64, pipelining: bool) -> String {
        format!(
            "[[replicas]]\nhostname = \"{hostname}\"\nid = {id}\naddress = \"{}\"\npipelining = {pipelining}\n",
            self.addr
        )
    }
}

/// Health checks every 100 ms on `/health`, in the ring after one good one.
pub const HEALTH: &str = "[health]\npath = \"/health\"\ninterval_ms = 100\nrise = 1\n";

#[derive(Clone)]
struct Counters {
    requests: Arc<AtomicUsize>,
    interim: Arc<AtomicUsize>,
    trickles: Arc<AtomicUsize>,
}

fn serve(mut stream: TcpStream, script: &(dyn Fn(&str) -> Reply + Send + Sync), c: &Counters) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        if path == "/health" {
            if stream.write_all(&ok("ok")).is_err() {
                return;
            }
            continue;
        }
        c.requests.fetch_add(1, Ordering::SeqCst);
        match script(&path) {
            Reply::Raw(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::RawClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Reply::Trickle {
                count,
                every,
                final_answer,
            } => {
                for _ in 0..count {
                    if stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                        break;
                    }
                    c.interim.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(every);
                }
                let _ = stream.write_all(&final_answer);
                c.trickles.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Reply::Body(len) => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let piece = vec![b'x'; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(piece.len());
                    if stream.write_all(&piece[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            }
        }
    }
}

/// Read up to `n` responses (each with a `Content-Length` body) from `stream` within `limit`:
/// their status codes and bodies, in order; fewer if the connection closed first.
pub fn read_responses(stream: &mut TcpStream, n: usize, limit: Duration) -> Vec<(u16, String)> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let mut got: Vec<u8> = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 4096];
    while answers.len() < n && std::time::Instant::now() < deadline {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                got.drain(..end + 4 + length);
                answers.push((status, body));
                continue;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
    }
    answers
}
