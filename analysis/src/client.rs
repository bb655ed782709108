//! The HTTP client for the load balancer: [`ureq`] (plain `http://`, keep-alive, a deadline on
//! every request, non-2xx answers read like any other) behind the few calls the experiments
//! make, and the one raw TCP connection the slow-loris phase needs ([`LbClient::tcp`]).
//!
//! [`LbClient::send`] keeps one idle connection for the API calls; the load generator gives each
//! of its threads a [`Connection`] of its own ([`LbClient::connection`]).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ureq::config::AutoHeaderValue;
use ureq::http;
use ureq::Agent;

use crate::error::{Error, Result};

/// How long one request may take, answer body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take (within [`REQUEST_TIMEOUT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest status line plus header section accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest answer body read (the largest the load balancer sends, `/_lb/ring` with 4 194 304
/// slots, is some 50 MB).
const MAX_BODY: u64 = 256 * 1024 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(&'static str);

impl Method {
    /// `GET`.
    pub const GET: Method = Method("GET");
    /// `POST`.
    pub const POST: Method = Method("POST");
    /// `DELETE`.
    pub const DELETE: Method = Method("DELETE");
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body, as text (lossy UTF-8).
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Client for one load balancer, identified by its base URL. Clones share nothing but the URL.
#[derive(Debug)]
pub struct LbClient {
    base: String,
    authority: String,
    host: String,
    port: u16,
    /// The API calls' agent: one kept connection.
    api: Connection,
}

impl Clone for LbClient {
    fn clone(&self) -> LbClient {
        LbClient {
            base: self.base.clone(),
            authority: self.authority.clone(),
            host: self.host.clone(),
            port: self.port,
            api: self.connection(),
        }
    }
}

impl LbClient {
    /// A client for `base_url` (`http://HOST:PORT`, no path).
    pub fn new(base_url: &str) -> Result<LbClient> {
        let bad = |reason: &str| Error::BadUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = match base_url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            _ => return Err(bad("only http:// URLs are supported")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !matches!(tail, "" | "/") {
            return Err(bad("give the base URL only, without a path"));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains(['@', ' ']) {
            return Err(bad("unexpected characters in the host"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let base = format!("http://{authority}");
        let api = Connection::new(&base, authority);
        Ok(LbClient {
            base,
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            api,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host part of the base URL (without port).
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// A connection of its own (connected on its first request), for a thread sending many
    /// requests one after another.
    pub fn connection(&self) -> Connection {
        Connection::new(&self.base, &self.authority)
    }

    /// Send `method path` with an optional body and `X-Request-Id`, within [`REQUEST_TIMEOUT`],
    /// over the client's keep-alive connection (callers at the same time get one each).
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
    ) -> Result<Answer> {
        self.api
            .exchange(method, path, body, request_id, &[], REQUEST_TIMEOUT)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer> {
        self.send(Method::GET, path, None, None)
    }

    /// A plain TCP connection to the load balancer, connected within `limit` (at most 5 s), for
    /// the one caller that writes its own bytes: the slow-loris phase of A-3, whose request
    /// heads never end (no HTTP client sends that).
    pub fn tcp(&self, limit: Duration) -> Result<TcpStream> {
        let failed = |reason: String| Error::Connect {
            authority: self.authority.clone(),
            reason,
        };
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, self.port)
            .to_socket_addrs()
            .map_err(|e| failed(format!("resolving {host}: {e}")))?
            .collect();
        let deadline = Instant::now() + limit;
        let mut last = format!("{host} has no address");
        for addr in addrs {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| failed(format!("no connection within {limit:?}")))?
                .min(CONNECT_TIMEOUT);
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .map_err(|e| failed(e.to_string()))?;
                    return Ok(stream);
                }
                Err(e) if is_timeout(&e) => last = format!("no connection within {limit:?}"),
                Err(e) => last = format!("connecting to {addr}: {e}"),
            }
        }
        Err(failed(last))
    }
}

/// `host:port`, `host`, `[v6]:port` or `[v6]`; the port defaults to 80.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().ok()?,
    };
    let plain = !host.is_empty() && !host.contains(':');
    (plain || host.starts_with('[')).then_some((host, port))
}

/// A keep-alive HTTP/1.1 connection of its own: an agent with one kept connection, opened on
/// the first request and again whenever the server closed it.
#[derive(Debug)]
pub struct Connection {
    agent: Agent,
    base: String,
    authority: String,
    /// Whether the last answer left a connection to reuse (the next request may find it closed
    /// by the server: then a `GET` goes once more, on a new one).
    kept: std::sync::atomic::AtomicBool,
}

impl Connection {
    fn new(base: &str, authority: &str) -> Connection {
        let config = Agent::config_builder()
            // A 4xx or 5xx is an answer like any other: its status and body are read.
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .max_response_header_size(MAX_HEAD)
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .user_agent(AutoHeaderValue::None)
            .build();
        Connection {
            agent: Agent::new_with_config(config),
            base: base.to_owned(),
            authority: authority.to_owned(),
            kept: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Send `method path` with an optional body and `X-Request-Id`, within [`REQUEST_TIMEOUT`].
    ///
    /// A kept connection the server has closed is found before the request and replaced. A
    /// `GET` whose kept connection closes before an answer arrives is sent once more on a new
    /// connection (within the same deadline); other methods are not repeated, since the server
    /// may have acted on them.
    pub fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
    ) -> Result<Answer> {
        self.send_within(method, path, body, request_id, REQUEST_TIMEOUT)
    }

    /// [`Connection::send`] with a deadline of `timeout` instead of [`REQUEST_TIMEOUT`]
    /// (connecting, sending and the whole answer); past it the error is [`Error::NoAnswer`].
    pub fn send_within(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        timeout: Duration,
    ) -> Result<Answer> {
        self.exchange(method, path, body, request_id, &[], timeout)
    }

    /// [`Connection::send_within`] with extra header fields, `(name, value)`, sent after the
    /// others (e.g. a `Via` field). A name or value with a line break is refused before
    /// anything is sent.
    pub fn send_with_fields(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer> {
        self.exchange(method, path, body, request_id, fields, timeout)
    }

    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer> {
        use std::sync::atomic::Ordering;
        let http_error = |reason: String| Error::Http {
            method: method.to_string(),
            path: path.to_owned(),
            reason,
        };
        if let Some((name, _)) = fields
            .iter()
            .find(|(n, v)| n.is_empty() || [n, v].iter().any(|t| t.contains(['\r', '\n'])))
        {
            return Err(http_error(format!(
                "header field {name:?} is empty or has a line break"
            )));
        }
        let no_answer = || Error::NoAnswer {
            method: method.to_string(),
            path: path.to_owned(),
            limit: timeout,
        };
        let deadline = Instant::now() + timeout;
        let reused = self.kept.swap(false, Ordering::Relaxed);
        let mut result = self.attempt(method, path, body, request_id, fields, deadline);
        if method == Method::GET && reused {
            if let Err(Failure::Closed(_)) = &result {
                result = self.attempt(method, path, body, request_id, fields, deadline);
            }
        }
        match result {
            Ok((answer, keep)) => {
                self.kept.store(keep, Ordering::Relaxed);
                Ok(answer)
            }
            Err(Failure::Timeout) => Err(no_answer()),
            Err(Failure::Closed(e)) | Err(Failure::Other(e)) => Err(http_error(self.reason(e))),
        }
    }

    /// One request and its whole answer, before `deadline`; the answer and whether its
    /// connection can be used again.
    fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        fields: &[(&str, &str)],
        deadline: Instant,
    ) -> std::result::Result<(Answer, bool), Failure> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Failure::Timeout)?;
        let mut request = http::Request::builder()
            .method(method.0)
            .uri(format!("{}{path}", self.base));
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        let sent = match body {
            // A bodiless GET is sent without a body; any other request says how long its body is.
            None if method == Method::GET => self.run(request.body(()), left),
            None => self.run(request.body(""), left),
            Some(text) => self.run(
                request
                    .header("content-type", "application/json")
                    .body(text),
                left,
            ),
        };
        // Nothing of the answer arrived: the connection was found closed, or the deadline hit.
        let response = sent.map_err(|e| match Failure::from(e) {
            Failure::Other(e) if closed(&e) => Failure::Closed(e),
            other => other,
        })?;
        let status = response.status().as_u16();
        let keep = response.version() == http::Version::HTTP_11
            && !response
                .headers()
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("close")));
        let body = response
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(Failure::from)?;
        Ok((
            Answer {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
            keep,
        ))
    }

    fn run<B: ureq::AsSendBody>(
        &self,
        request: std::result::Result<http::Request<B>, http::Error>,
        left: Duration,
    ) -> std::result::Result<http::Response<ureq::Body>, ureq::Error> {
        let request = self
            .agent
            .configure_request(request?)
            .timeout_global(Some(left))
            .build();
        self.agent.run(request)
    }

    /// What an error says, a failed connection with the address it was for.
    fn reason(&self, e: ureq::Error) -> String {
        match e {
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                format!("connecting to {}: {e}", self.authority)
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                format!("connecting to {}: {e}", self.authority)
            }
            e => e.to_string(),
        }
    }
}

/// Why an exchange failed.
enum Failure {
    /// The deadline passed.
    Timeout,
    /// The connection closed before any answer arrived.
    Closed(ureq::Error),
    /// Anything else.
    Other(ureq::Error),
}

impl From<ureq::Error> for Failure {
    fn from(e: ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => Failure::Timeout,
            ureq::Error::Io(ref io) if is_timeout(io) => Failure::Timeout,
            e => Failure::Other(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Whether `e` says the server closed the connection (before anything of an answer came).
fn closed(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ),
        ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    #[test]
    fn accepts_base_urls_only() {
        assert_eq!(
            LbClient::new("http://127.0.0.1:5000").unwrap().base(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            LbClient::new("http://localhost:80/").unwrap().host(),
            "localhost"
        );
        assert_eq!(LbClient::new("http://[::1]:8/").unwrap().host(), "[::1]");
        assert_eq!(LbClient::new("http://example").unwrap().port, 80);
        assert!(LbClient::new("https://127.0.0.1").is_err());
        assert!(LbClient::new("http://127.0.0.1/rep").is_err());
        assert!(LbClient::new("http://127.0.0.1:5000?x").is_err());
        assert!(LbClient::new("127.0.0.1:5000").is_err());
        assert!(LbClient::new("http://").is_err());
        assert!(LbClient::new("http://h:port").is_err());
        assert!(LbClient::new("ftp://127.0.0.1:1")
            .unwrap_err()
            .to_string()
            .contains("only http:// URLs"));
    }

    /// What the test server saw of one request.
    #[derive(Debug)]
    struct Seen {
        connection: usize,
        head: String,
        body: String,
    }

    /// A server on a free loopback port that answers the requests on each accepted connection
    /// with the next of `answers` (raw bytes; `None` closes the connection without answering; an
    /// HTTP/1.0 answer, one with `connection: close` or one ending in [`HANG_UP`] (not sent)
    /// closes it after answering), and reports every request it read.
    fn server(answers: Vec<Option<&'static str>>) -> (LbClient, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = LbClient::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut answers = answers.into_iter();
            for (connection, stream) in listener.incoming().enumerate() {
                let stream = stream.unwrap();
                let mut reader = BufReader::new(&stream);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if head.is_empty() {
                        break;
                    }
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |l| l.parse().unwrap());
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let _ = tx.send(Seen {
                        connection,
                        head,
                        body: String::from_utf8(body).unwrap(),
                    });
                    match answers.next() {
                        Some(Some(answer)) => {
                            let (answer, hang_up) = match answer.strip_suffix(HANG_UP) {
                                Some(answer) => (answer, true),
                                None => (answer, false),
                            };
                            (&stream).write_all(answer.as_bytes()).unwrap();
                            let lower = answer.to_ascii_lowercase();
                            if hang_up
                                || lower.starts_with("http/1.0")
                                || lower.contains("connection: close")
                            {
                                break;
                            }
                        }
                        Some(None) => break,
                        None => return,
                    }
                }
            }
        });
        (client, rx)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";
    /// Marks an answer after which the test server closes the connection without saying so.
    const HANG_UP: &str = "<hang up>";

    #[test]
    fn a_kept_connection_the_server_closed_is_noticed_before_a_post() {
        let (client, seen) = server(vec![
            Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi<hang up>"),
            Some(OK),
        ]);
        assert_eq!(client.get("/a").unwrap().body, "hi");
        assert_eq!(seen.recv().unwrap().connection, 0);
        // Let the close arrive; the POST must not be sent on the dead connection.
        thread::sleep(Duration::from_millis(100));
        let b = client.send(Method::POST, "/add", Some("{}"), None).unwrap();
        assert_eq!(b.body, "hi");
        assert_eq!(seen.recv().unwrap().connection, 1);
    }

    #[test]
    fn keeps_the_connection_and_sends_the_fields() {
        let (client, seen) = server(vec![Some(OK), Some(OK)]);
        let a = client
            .send(Method::GET, "/home", None, Some(123456))
            .unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "hi"));
        let b = client
            .send(Method::POST, "/add", Some(r#"{"n":1}"#), None)
            .unwrap();
        assert_eq!(b.body, "hi");
        let (first, second) = (seen.recv().unwrap(), seen.recv().unwrap());
        assert!(first.head.starts_with("GET /home HTTP/1.1\r\n"));
        assert!(first.head.contains("x-request-id: 123456\r\n"));
        assert!(!first.head.contains("content-length"));
        assert!(second.head.starts_with("POST /add HTTP/1.1\r\n"));
        assert!(second.head.contains("content-type: application/json\r\n"));
        assert_eq!(second.body, r#"{"n":1}"#);
        assert_eq!((first.connection, second.connection), (0, 0));
    }

    #[test]
    fn reads_chunked_bodies() {
        let (client, seen) = server(vec![
            Some("HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: t\r\n\r\n"),
            Some(OK),
        ]);
        let a = client.get("/x").unwrap();
        assert_eq!((a.status, a.body.as_str()), (400, "hello, world"));
        assert_eq!(client.get("/y").unwrap().body, "hi");
        assert_eq!(seen.recv().unwrap().connection, 0);
        assert_eq!(seen.recv().unwrap().connection, 0, "reused after chunks");
    }

    #[test]
    fn connection_close_and_bodies_until_close_open_a_new_connection() {
        let (client, seen) = server(vec![
            Some("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\na"),
            None,
            Some("HTTP/1.1 204 No Content\r\n\r\n"),
            Some("HTTP/1.0 200 OK\r\n\r\nuntil close"),
        ]);
        assert_eq!(client.get("/1").unwrap().body, "a");
        // After "close", /2 goes on a new connection, which the server closes unanswered: on a
        // fresh connection that is an error, not a reason to try again.
        let b = client.get("/2").unwrap_err();
        assert!(matches!(b, Error::Http { .. }), "{b}");
        let c = client.get("/3").unwrap();
        assert_eq!((c.status, c.body.as_str()), (204, ""));
        let d = client.get("/4").unwrap();
        assert_eq!(d.body, "until close");
        let connections: Vec<usize> = seen.iter().take(4).map(|s| s.connection).collect();
        assert_eq!(connections, [0, 1, 2, 2]);
    }

    #[test]
    fn a_get_is_retried_once_when_the_kept_connection_was_closed() {
        // Connection 0 answers once, then reads the next request and closes without answering
        // (as a server closing an idle connection does); the GET goes again on connection 1.
        let (client, seen) = server(vec![Some(OK), None, Some(OK)]);
        assert_eq!(client.get("/a").unwrap().body, "hi");
        assert_eq!(client.get("/b").unwrap().body, "hi");
        let connections: Vec<(usize, String)> = seen
            .iter()
            .take(3)
            .map(|s| (s.connection, s.head.lines().next().unwrap().to_owned()))
            .collect();
        assert_eq!(
            connections,
            [
                (0, "GET /a HTTP/1.1".into()),
                (0, "GET /b HTTP/1.1".into()),
                (1, "GET /b HTTP/1.1".into())
            ]
        );
        // A POST is not sent twice.
        let (client, seen) = server(vec![Some(OK), None, Some(OK)]);
        client.get("/a").unwrap();
        assert!(client.send(Method::POST, "/add", Some("{}"), None).is_err());
        assert_eq!(seen.iter().take(2).count(), 2);
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_request_timeout_of_its_own_is_kept_and_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conn = LbClient::new(&format!("http://{}", listener.local_addr().unwrap()))
            .unwrap()
            .connection();
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let e = conn
            .send_within(Method::GET, "/home", None, Some(123456), limit)
            .unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(&e, Error::NoAnswer { limit: l, .. } if *l == limit),
            "{e}"
        );
        assert_eq!(e.to_string(), "GET /home: no answer within 300ms");
        assert!(
            waited >= limit && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        drop(listener);
    }

    #[test]
    fn refused_connections_fail_quickly() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = LbClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = client.get("/rep").unwrap_err().to_string();
        assert!(e.starts_with("GET /rep: connecting to 127.0.0.1:"), "{e}");
        assert!(!e.contains("no answer within"), "{e}");
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let (client, _seen) = server(vec![Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nshort",
        )]);
        let e = client.get("/").unwrap_err();
        assert!(matches!(e, Error::Http { .. }), "{e}");
    }
    #[test]
    fn extra_fields_are_sent_and_line_breaks_refused() {
        let (client, seen) = server(vec![Some(OK)]);
        let mut conn = client.connection();
        let a = conn
            .send_with_fields(
                Method::GET,
                "/home",
                None,
                Some(123456),
                &[("via", "1.1 lb-00000000000000ff")],
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(a.body, "hi");
        let head = seen.recv().unwrap().head;
        assert!(
            head.contains("x-request-id: 123456\r\nvia: 1.1 lb-00000000000000ff\r\n"),
            "{head:?}"
        );
        for fields in [[("via", "a\r\nx-evil: 1")], [("", "x")]] {
            let e = conn
                .send_with_fields(
                    Method::GET,
                    "/",
                    None,
                    None,
                    &fields,
                    Duration::from_secs(1),
                )
                .unwrap_err();
            assert!(e.to_string().contains("line break"), "{e}");
        }
        // Refused before anything was sent.
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conn = LbClient::new(&format!("http://{}", listener.local_addr().unwrap()))
            .unwrap()
            .connection();
        // Accepted by the kernel's backlog, never answered; a short deadline instead of 15 s.
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let result = conn.send_within(Method::GET, "/home", None, None, limit);
        assert!(matches!(result, Err(Error::NoAnswer { .. })), "{result:?}");
        let waited = started.elapsed();
        assert!(
            waited >= limit && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        drop(listener);
    }

    #[test]
    fn timeouts_are_reported_as_such() {
        let e: Failure = ureq::Error::Io(io::Error::from(io::ErrorKind::WouldBlock)).into();
        assert!(matches!(e, Failure::Timeout));
        let e: Failure = ureq::Error::Timeout(ureq::Timeout::Global).into();
        assert!(matches!(e, Failure::Timeout));
        let e: Failure = ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionReset)).into();
        assert!(matches!(e, Failure::Other(_)));
    }
}
