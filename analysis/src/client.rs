//! A small blocking HTTP/1.1 client for the load balancer: plain `http://` over
//! [`std::net::TcpStream`], keep-alive connections, `Content-Length`, chunked and
//! read-until-close bodies, and a deadline on every request.
//!
//! [`LbClient::send`] keeps one idle connection for the API calls; the load generator gives each
//! of its threads a [`Connection`] of its own ([`LbClient::connection`]).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long one request may take, answer body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take (within [`REQUEST_TIMEOUT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest status line plus header section accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How far a socket timeout may be from what is left of the deadline before it is set again (a
/// read that times out early is simply retried with the exact rest).
const SLACK: Duration = Duration::from_millis(50);
/// A kept connection idle longer than this is checked for a close by the server before a `GET`
/// is sent on it (other methods always check: they are not sent twice).
const FRESH: Duration = Duration::from_millis(100);

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
    idle: Mutex<Option<Connection>>,
}

impl Clone for LbClient {
    fn clone(&self) -> LbClient {
        LbClient {
            base: self.base.clone(),
            authority: self.authority.clone(),
            host: self.host.clone(),
            port: self.port,
            idle: Mutex::new(None),
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
        Ok(LbClient {
            base: format!("http://{authority}"),
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            idle: Mutex::new(None),
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
        Connection {
            authority: self.authority.clone(),
            host: self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: self.port,
            socket: None,
        }
    }

    /// Send `method path` with an optional body and `X-Request-Id`, within [`REQUEST_TIMEOUT`],
    /// over the client's keep-alive connection.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
    ) -> Result<Answer> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut conn = idle.unwrap_or_else(|| self.connection());
        let answer = conn.send(method, path, body, request_id);
        if conn.socket.is_some() {
            *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
        }
        answer
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Answer> {
        self.send(Method::GET, path, None, None)
    }

    /// A plain TCP connection to the load balancer, connected within `limit` (at most 5 s), for
    /// callers that write their own bytes (the slow-loris phase of A-3).
    pub fn tcp(&self, limit: Duration) -> Result<TcpStream> {
        let conn = self.connection();
        conn.connect(Instant::now() + limit)
            .map_err(|failure| Error::Connect {
                authority: self.authority.clone(),
                reason: match failure {
                    Failure::Timeout => format!("no connection within {limit:?}"),
                    Failure::Stale(why) | Failure::Other(why) => why,
                },
            })
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

/// One keep-alive HTTP/1.1 connection, opened on the first request and again whenever the server
/// closed it.
#[derive(Debug)]
pub struct Connection {
    authority: String,
    host: String,
    port: u16,
    socket: Option<Socket>,
}

/// An open TCP connection and the timeouts last set on it.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// `SO_RCVTIMEO` as last set.
    read_timeout: Option<Duration>,
    /// `SO_SNDTIMEO` as last set.
    write_timeout: Option<Duration>,
    /// When its last answer was complete.
    idle_since: Instant,
}

/// Why an exchange failed.
enum Failure {
    /// The deadline passed.
    Timeout,
    /// A reused connection was closed by the server before it answered anything.
    Stale(String),
    /// Anything else.
    Other(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Other(e.to_string()),
        }
    }
}

impl Connection {
    /// Send `method path` with an optional body and `X-Request-Id`, within [`REQUEST_TIMEOUT`].
    ///
    /// A connection found closed before the request is replaced. A `GET` whose reused connection
    /// closes before any answer arrives is sent once more on a new connection; other methods are
    /// not repeated, since the server may have acted on them.
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
    /// (connecting, sending and the whole answer); past it the error is [`Error::NoAnswer`] and
    /// the connection is dropped.
    pub fn send_within(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        timeout: Duration,
    ) -> Result<Answer> {
        self.send_with_fields(method, path, body, request_id, &[], timeout)
    }

    /// [`Connection::send_within`] with extra header fields, `(name, value)`, sent as given
    /// after the others (e.g. a `Via` field). A name or value with a line break is refused
    /// before anything is sent.
    pub fn send_with_fields(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        fields: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer> {
        if let Some((name, _)) = fields
            .iter()
            .find(|(n, v)| n.is_empty() || [n, v].iter().any(|t| t.contains(['\r', '\n'])))
        {
            return Err(Error::Http {
                method: method.to_string(),
                path: path.to_owned(),
                reason: format!("header field {name:?} is empty or has a line break"),
            });
        }
        let deadline = Instant::now() + timeout;
        let request = self.request(method, path, body, request_id, fields);
        let get = method == Method::GET;
        let mut result = self.exchange(&request, !get, deadline);
        if get {
            if let Err(Failure::Stale(_)) = result {
                result = self.exchange(&request, false, deadline);
            }
        }
        result.map_err(|failure| match failure {
            Failure::Timeout => Error::NoAnswer {
                method: method.to_string(),
                path: path.to_owned(),
                limit: timeout,
            },
            Failure::Stale(why) | Failure::Other(why) => Error::Http {
                method: method.to_string(),
                path: path.to_owned(),
                reason: why,
            },
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<u64>,
        fields: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.authority);
        if let Some(id) = request_id {
            head.push_str(&format!("x-request-id: {id}\r\n"));
        }
        for (name, value) in fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if body.is_some() {
            head.push_str("content-type: application/json\r\n");
        }
        if body.is_some() || method != Method::GET {
            head.push_str(&format!("content-length: {}\r\n", body.unwrap_or("").len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or("").as_bytes());
        request
    }

    /// Whether the idle connection can take a request: the server has neither closed it nor sent
    /// anything unasked.
    fn usable(stream: &TcpStream) -> bool {
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let quiet = matches!(
            stream.peek(&mut [0u8; 1]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        );
        stream.set_nonblocking(false).is_ok() && quiet
    }

    fn connect(&self, deadline: Instant) -> Result<TcpStream, Failure> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| Failure::Other(format!("resolving {}: {e}", self.host)))?
            .collect();
        let mut last = Failure::Other(format!("{} has no address", self.host));
        for addr in addrs {
            let limit = remaining(deadline)?.min(CONNECT_TIMEOUT);
            match TcpStream::connect_timeout(&addr, limit) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => {
                    last = match Failure::from(e) {
                        Failure::Timeout => Failure::Other(format!(
                            "connecting to {addr}: no connection within {limit:?}"
                        )),
                        Failure::Other(why) | Failure::Stale(why) => {
                            Failure::Other(format!("connecting to {addr}: {why}"))
                        }
                    }
                }
            }
        }
        Err(last)
    }

    /// Send `request` and read the answer. A kept connection is checked first when `check` is
    /// set or it has been idle for a while.
    fn exchange(
        &mut self,
        request: &[u8],
        check: bool,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        // The connection goes back into `self.socket` only after a complete, reusable answer.
        let (mut socket, reused) = match self.socket.take() {
            Some(s) if !(check || s.idle_since.elapsed() > FRESH) || Self::usable(&s.stream) => {
                (s, true)
            }
            _ => (
                Socket {
                    stream: self.connect(deadline)?,
                    read_timeout: None,
                    write_timeout: None,
                    idle_since: Instant::now(),
                },
                false,
            ),
        };
        // On a reused connection, an error before any byte of the answer means the server had
        // closed it: the caller may try again on a new one.
        let stale = |failure: Failure, answered: bool| match failure {
            Failure::Other(why) if reused && !answered => Failure::Stale(why),
            other => other,
        };
        let Socket {
            stream,
            write_timeout,
            ..
        } = &mut socket;
        arm(write_timeout, deadline, |t| stream.set_write_timeout(t))?;
        (&*stream)
            .write_all(request)
            .map_err(|e| stale(e.into(), false))?;
        let mut reader = BufReader::new(Deadlined {
            socket: &mut socket,
            deadline,
            received: 0,
        });
        let head = loop {
            let head =
                read_head(&mut reader).map_err(|e| stale(e, reader.get_ref().received > 0))?;
            // 1xx answers are followed by the real one.
            if !(100..200).contains(&head.status) {
                break head;
            }
        };
        let (body, framed) = if matches!(head.status, 204 | 304) {
            (Vec::new(), true)
        } else if head.chunked {
            (read_chunked(&mut reader)?, true)
        } else if let Some(len) = head.content_length {
            let mut body = Vec::new();
            (&mut reader).take(len).read_to_end(&mut body)?;
            if (body.len() as u64) < len {
                return Err(Failure::Other(format!(
                    "connection closed after {} of {len} body bytes",
                    body.len()
                )));
            }
            (body, true)
        } else {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            (body, false)
        };
        if framed && head.keep_alive && reader.buffer().is_empty() {
            drop(reader);
            socket.idle_since = Instant::now();
            self.socket = Some(socket);
        }
        Ok(Answer {
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Time left before `deadline`, or a timeout.
fn remaining(deadline: Instant) -> Result<Duration, Failure> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Failure::Timeout),
    }
}

/// Make a socket timeout, last set to `current`, match what is left before `deadline` within
/// [`SLACK`] (one `setsockopt` per connection while requests are quick).
fn arm(
    current: &mut Option<Duration>,
    deadline: Instant,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let left = remaining(deadline).map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
    let close = current.is_some_and(|c| c.max(left) - c.min(left) <= SLACK);
    if !close {
        *current = None;
        set(Some(left))?;
        *current = Some(left);
    }
    Ok(())
}

/// Reads from a socket, each read bounded by what is left of the request's deadline.
struct Deadlined<'a> {
    socket: &'a mut Socket,
    deadline: Instant,
    /// Bytes read so far.
    received: usize,
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Socket {
                stream,
                read_timeout,
                ..
            } = &mut *self.socket;
            arm(read_timeout, self.deadline, |t| stream.set_read_timeout(t))?;
            match (&*stream).read(buf) {
                Ok(n) => {
                    self.received += n;
                    return Ok(n);
                }
                // Early by up to SLACK: set the exact rest, or time out if none is left.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    *read_timeout = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The parts of a response head that matter here.
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

/// One line, without its CRLF (or LF); `budget` bounds the bytes read.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> Result<String, Failure> {
    let mut line = Vec::new();
    (&mut *reader)
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.len() > *budget {
        return Err(Failure::Other("answer head too long".into()));
    }
    *budget -= line.len();
    if line.last() != Some(&b'\n') {
        return Err(Failure::Other(if line.is_empty() {
            "connection closed before an answer".into()
        } else {
            "connection closed in the middle of a line".into()
        }));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| Failure::Other("answer head is not UTF-8".into()))
}

fn read_head(reader: &mut impl BufRead) -> Result<Head, Failure> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(reader, &mut budget)?;
    let bad = || Failure::Other(format!("bad status line {status_line:?}"));
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(bad)?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        keep_alive: match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return Err(bad()),
        },
    };
    loop {
        let line = read_line(reader, &mut budget)?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Failure::Other(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        let tokens = || value.split(',').map(|t| t.trim().to_ascii_lowercase());
        if name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse()
                .map_err(|_| Failure::Other(format!("bad content-length {value:?}")))?;
            if head.content_length.is_some_and(|l| l != len) {
                return Err(Failure::Other("conflicting content-length".into()));
            }
            head.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = tokens().next_back().is_some_and(|t| t == "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens() {
                match token.as_str() {
                    "close" => head.keep_alive = false,
                    "keep-alive" if version == "HTTP/1.0" => head.keep_alive = true,
                    _ => {}
                }
            }
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_HEAD;
        let line = read_line(reader, &mut budget)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| Failure::Other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !read_line(reader, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        let before = body.len();
        (&mut *reader).take(size).read_to_end(&mut body)?;
        if ((body.len() - before) as u64) < size || !read_line(reader, &mut budget)?.is_empty() {
            return Err(Failure::Other("bad chunked body".into()));
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn socket_timeouts_are_set_only_when_they_drift() {
        let sets = std::cell::Cell::new(0);
        let mut current = None;
        let mut arm_for = |left: Duration| {
            arm(&mut current, Instant::now() + left, |_| {
                sets.set(sets.get() + 1);
                Ok(())
            })
        };
        arm_for(REQUEST_TIMEOUT).unwrap();
        assert_eq!(sets.get(), 1);
        // A new request moments later: its deadline is within SLACK of the timeout set.
        arm_for(REQUEST_TIMEOUT).unwrap();
        assert_eq!(sets.get(), 1);
        // Late in a slow request: the rest is shorter than the timeout set, so it is set again.
        arm_for(Duration::from_secs(2)).unwrap();
        assert_eq!(sets.get(), 2);
        // And a full deadline after that is set again, not left at the short value.
        arm_for(REQUEST_TIMEOUT).unwrap();
        assert_eq!(sets.get(), 3);
        // No time left: a timeout, nothing set.
        let e = arm_for(Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(sets.get(), 3);
        assert!(current.is_some_and(|c| c > Duration::from_secs(14)));
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
        let b = client.get("/2").unwrap_err().to_string();
        assert!(b.contains("connection closed before an answer"), "{b}");
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
    fn extra_fields_are_sent_and_line_breaks_refused() {
        let conn = LbClient::new("http://127.0.0.1:9").unwrap().connection();
        let request = conn.request(
            Method::GET,
            "/home",
            None,
            Some(123456),
            &[("via", "1.1 lb-00000000000000ff")],
        );
        let text = String::from_utf8(request).unwrap();
        assert!(
            text.ends_with("x-request-id: 123456\r\nvia: 1.1 lb-00000000000000ff\r\n\r\n"),
            "{text:?}"
        );
        let mut conn = conn;
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
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conn = LbClient::new(&format!("http://{}", listener.local_addr().unwrap()))
            .unwrap()
            .connection();
        // Accepted by the kernel's backlog, never answered; a short deadline instead of 15 s.
        let started = Instant::now();
        let request = conn.request(Method::GET, "/home", None, None, &[]);
        let result = conn.exchange(&request, false, started + Duration::from_millis(300));
        assert!(matches!(result, Err(Failure::Timeout)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        drop(listener);
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
    fn timeouts_are_reported_as_such() {
        let e: Failure = io::Error::from(io::ErrorKind::WouldBlock).into();
        assert!(matches!(e, Failure::Timeout));
        let e: Failure = io::Error::from(io::ErrorKind::ConnectionReset).into();
        assert!(matches!(e, Failure::Other(_)));
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
        let e = client.get("/").unwrap_err().to_string();
        assert!(e.contains("5 of 10 body bytes"), "{e}");
    }
}
