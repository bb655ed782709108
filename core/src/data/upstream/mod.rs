//! The proxy's connections to the replicas: an HTTP/1.1 client that batches requests.
//!
//! Requests that are safe to repeat and carry no body (`GET`, `HEAD`) go through here. Each
//! worker keeps, per replica, up to [`MAX_CONNECTIONS`] keep-alive connections, each owned by one
//! task. A request goes to a connection that is about to write (so requests arriving in the same
//! turn of the event loop leave in one `write` and their responses come back in one `read`) while
//! the replica answers within [`BATCH_WHILE_FASTER_THAN`]; else to an idle connection, else to a
//! new one; only when every connection is taken and the cap is reached is it queued behind others
//! (HTTP/1.1 pipelining, RFC 9112 §9.3.2). Batching cuts the system calls per request on both
//! sides of the replica connection, which is where a proxy on a loaded machine spends its time.
//!
//! Failure rules: a request whose response has not begun when its connection fails (the replica
//! closed an idle connection, answered `Connection: close` to an earlier request, or reset) is
//! sent again once on a fresh connection — allowed because only idempotent methods come here
//! (RFC 9110 §9.2.2). A response cut off midway ends the client's response with an error, never
//! with a silently shortened body. Responses are framed strictly (RFC 9112 §6.3); anything
//! ambiguous closes the connection.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::hop;

/// Connections a worker keeps open to one replica before it pipelines.
pub const MAX_CONNECTIONS: usize = 32;
/// Requests a connection takes on while others are waiting to be written to it.
pub const MAX_BATCH: usize = 16;
/// Requests batch onto a connection only while the replica answers faster than this (moving
/// average of the time from writing a request to reading its response head). A slower replica
/// is busy handling requests, not waiting on system calls: its requests spread over connections
/// instead, so a slow request does not hold up others behind it.
pub const BATCH_WHILE_FASTER_THAN: Duration = Duration::from_millis(1);
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to a replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;
/// Bytes read at once.
const READ_CHUNK: usize = 16 * 1024;
/// Body pieces buffered between a connection and a slow client before the connection waits.
const BODY_QUEUE: usize = 8;

/// Why a request through a replica connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The replica could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where.
        addr: String,
        /// What the OS said.
        reason: String,
    },
    /// The connection ended before this request's response began; safe to send it again.
    #[error("the connection closed before the response began ({0})")]
    NotStarted(String),
    /// The connection failed after the response began.
    #[error("the connection failed: {0}")]
    Io(String),
    /// The replica's response is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// A response body coming from a replica connection.
#[derive(Debug)]
pub enum PipeBody {
    /// The whole body, read with the head (the common case: no copying, no task hand-off).
    Full(Option<Bytes>),
    /// A body still arriving, handed over piece by piece by the connection.
    Stream {
        /// Pieces from the connection task.
        rx: mpsc::Receiver<Bytes>,
        /// Set by the connection before it lets go of the sender: `Ok` when the body is
        /// complete, else why it was cut off. A stream that ends without it was cut off too.
        outcome: Arc<OnceLock<Result<(), String>>>,
        /// The length the replica announced, if any.
        length: Option<u64>,
        /// Set once the stream ended.
        done: bool,
    },
}

/// A body cut off because the replica connection failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("the replica's response was cut off: {0}")]
pub struct BodyError(String);

impl Body for PipeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            PipeBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            PipeBody::Stream { done: true, .. } => Poll::Ready(None),
            PipeBody::Stream {
                rx, outcome, done, ..
            } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(None) => {
                    *done = true;
                    match outcome.get() {
                        Some(Ok(())) => Poll::Ready(None),
                        Some(Err(reason)) => Poll::Ready(Some(Err(BodyError(reason.clone())))),
                        None => Poll::Ready(Some(Err(BodyError(
                            "the connection to the replica ended mid-body".into(),
                        )))),
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PipeBody::Full(bytes) => bytes.is_none(),
            PipeBody::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PipeBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            PipeBody::Stream {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            PipeBody::Stream { .. } => SizeHint::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<Response<PipeBody>, UpstreamError>>;

/// A request handed to a connection task.
struct Job {
    /// The serialized request head (no body follows).
    head: Bytes,
    /// A `HEAD` request: the response has no body whatever its headers say.
    head_only: bool,
    reply: Reply,
}

/// What the pool knows about a connection, updated by its task.
struct Conn {
    jobs: mpsc::UnboundedSender<Job>,
    /// Jobs sent to the task and not yet written.
    queued: AtomicUsize,
    /// Jobs sent to the task whose response is not complete.
    outstanding: AtomicUsize,
    /// A body is being streamed (possibly to a slow client): do not queue behind it.
    streaming: AtomicBool,
    /// No new jobs: the task ended or will after the current response.
    closed: AtomicBool,
}

/// A worker's view of one replica: its connections and how fast it answers.
#[derive(Default)]
struct Replica {
    conns: Vec<Arc<Conn>>,
    latency: Arc<Latency>,
}

/// Moving average (1/8 weight per sample) of a replica's time to response head, in µs.
#[derive(Default)]
struct Latency(AtomicU64);

impl Latency {
    fn record(&self, sample: Duration) {
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.0.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new, Relaxed);
    }

    /// Fast enough to batch (no sample yet counts as fast).
    fn fast(&self) -> bool {
        self.0.load(Relaxed) < BATCH_WHILE_FASTER_THAN.as_micros() as u64
    }
}

type Pool = Mutex<HashMap<String, Replica>>;

/// One worker's connections to every replica.
#[derive(Default)]
pub struct Upstreams {
    pool: Arc<Pool>,
}

/// Serialize a request head for a replica: `method target HTTP/1.1`, a `host` field if the
/// client sent none, the client's fields minus hop-by-hop ones (RFC 9110 §7.6.1), and
/// `x-forwarded-for`.
pub fn request_head(
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    authority: &str,
    forwarded_for: &HeaderValue,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let listed = hop::connection_tokens(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    for (name, value) in headers {
        if hop::is_hop_by_hop(name.as_str()) || listed.iter().any(|t| t == name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(forwarded_for.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.freeze()
}

impl Upstreams {
    /// Connections to no replica yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Send a bodiless idempotent request (`head`, from [`request_head`]) to the replica at
    /// `addr` and wait for its response head. Must run on the worker's runtime.
    pub async fn request(
        &self,
        addr: &str,
        head: Bytes,
        head_only: bool,
    ) -> Result<Response<PipeBody>, UpstreamError> {
        let mut fresh = false;
        loop {
            let conn = self.pick(addr, fresh);
            let (reply, answer) = oneshot::channel();
            conn.queued.fetch_add(1, Relaxed);
            conn.outstanding.fetch_add(1, Relaxed);
            let job = Job {
                head: head.clone(),
                head_only,
                reply,
            };
            let result = match conn.jobs.send(job) {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Err(UpstreamError::NotStarted("the connection ended".into()))
                }),
                Err(_) => {
                    conn.closed.store(true, Relaxed);
                    Err(UpstreamError::NotStarted("the connection ended".into()))
                }
            };
            match result {
                Err(UpstreamError::NotStarted(_)) if !fresh => fresh = true,
                other => return other,
            }
        }
    }

    /// The connection for the next request to `addr` (see the module's documentation);
    /// `fresh` asks for a new one.
    fn pick(&self, addr: &str, fresh: bool) -> Arc<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let replica = match pool.get_mut(addr) {
            Some(replica) => replica,
            None => pool.entry(addr.to_owned()).or_default(),
        };
        let conns = &mut replica.conns;
        conns.retain(|c| !c.closed.load(Relaxed));
        if !fresh {
            let usable = |c: &&Arc<Conn>| !c.streaming.load(Relaxed);
            if replica.latency.fast() {
                if let Some(c) = conns
                    .iter()
                    .filter(usable)
                    .find(|c| c.queued.load(Relaxed) > 0 && c.outstanding.load(Relaxed) < MAX_BATCH)
                {
                    return Arc::clone(c);
                }
            }
            if let Some(c) = conns
                .iter()
                .filter(usable)
                .find(|c| c.outstanding.load(Relaxed) == 0)
            {
                return Arc::clone(c);
            }
            if conns.len() >= MAX_CONNECTIONS {
                if let Some(c) = conns
                    .iter()
                    .min_by_key(|c| (c.streaming.load(Relaxed), c.outstanding.load(Relaxed)))
                {
                    return Arc::clone(c);
                }
            }
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            jobs,
            queued: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            streaming: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        conns.push(Arc::clone(&conn));
        tokio::spawn(run(
            addr.to_owned(),
            rx,
            Arc::clone(&conn),
            Arc::clone(&replica.latency),
            Arc::downgrade(&self.pool),
        ));
        conn
    }

    /// Open connections per replica address.
    pub fn connections(&self) -> HashMap<String, usize> {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.iter()
            .map(|(addr, replica)| {
                let open = replica
                    .conns
                    .iter()
                    .filter(|c| !c.closed.load(Relaxed))
                    .count();
                (addr.clone(), open)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A connection's task: connect, then write jobs and read responses until the connection ends
/// or stays idle for [`IDLE_TIMEOUT`]; then fail whatever is left and leave the pool.
async fn run(
    addr: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    conn: Arc<Conn>,
    latency: Arc<Latency>,
    pool: Weak<Pool>,
) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await;
    let failure = match connected {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let mut pipeline = Pipeline::new(stream, &conn, &latency);
            let failure = pipeline.drive(&mut jobs).await.err();
            if let Some(e) = &failure {
                tracing::warn!(replica = %addr, error = %e, "replica connection failed");
            }
            conn.closed.store(true, Relaxed);
            pipeline.fail_all(failure.clone());
            failure.unwrap_or_else(|| UpstreamError::NotStarted("the connection closed".into()))
        }
        Ok(Err(e)) => UpstreamError::Connect {
            addr: addr.clone(),
            reason: e.to_string(),
        },
        Err(_) => UpstreamError::Connect {
            addr: addr.clone(),
            reason: format!("timed out after {CONNECT_TIMEOUT:?}"),
        },
    };
    conn.closed.store(true, Relaxed);
    jobs.close();
    let unsent = match &failure {
        UpstreamError::Connect { .. } => failure,
        other => UpstreamError::NotStarted(other.to_string()),
    };
    while let Ok(job) = jobs.try_recv() {
        let _ = job.reply.send(Err(unsent.clone()));
    }
    if let Some(pool) = pool.upgrade() {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(replica) = pool.get_mut(&addr) {
            replica.conns.retain(|c| !Arc::ptr_eq(c, &conn));
            if replica.conns.is_empty() {
                pool.remove(&addr);
            }
        }
    }
}

/// A request written and waiting for (the rest of) its response.
struct Pending {
    /// `None` once the response head was handed over.
    reply: Option<Reply>,
    head_only: bool,
    /// When the request was queued for writing.
    sent: Instant,
}

/// How the body of the response being read ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
}

/// Where a streamed body's pieces go.
struct Sink {
    tx: mpsc::Sender<Bytes>,
    outcome: Arc<OnceLock<Result<(), String>>>,
}

impl Sink {
    /// The body is complete: the client's stream ends normally once it has taken every piece.
    fn finish(self) {
        let _ = self.outcome.set(Ok(()));
    }

    /// The body was cut off: the client's stream ends with this reason.
    fn fail(self, reason: String) {
        let _ = self.outcome.set(Err(reason));
    }
}

/// The body being read for the front request.
struct Reading {
    framing: Framing,
    /// Where the pieces go; `None` when the client is gone (the body is read and dropped).
    sink: Option<Sink>,
    /// The connection cannot carry another response after this one.
    close_after: bool,
}

/// One step of the response parser.
enum Step {
    /// Need more bytes.
    More,
    /// A piece is ready but the client has not taken the previous ones: wait for room.
    Blocked(Bytes),
    /// Made progress; go on.
    Progress,
    /// The connection must end now (the responses so far are delivered).
    Close,
}

struct Pipeline<'c> {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    conn: &'c Conn,
    latency: &'c Latency,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pending: VecDeque<Pending>,
    reading: Option<Reading>,
    /// A piece waiting for room in the client's queue.
    blocked: Option<Bytes>,
    last_active: Instant,
}

impl<'c> Pipeline<'c> {
    fn new(stream: TcpStream, conn: &'c Conn, latency: &'c Latency) -> Self {
        let (rd, wr) = stream.into_split();
        Pipeline {
            rd,
            wr,
            conn,
            latency,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            pending: VecDeque::new(),
            reading: None,
            blocked: None,
            last_active: Instant::now(),
        }
    }

    /// Serve jobs until the connection ends (`Ok`) or fails (`Err`).
    async fn drive(
        &mut self,
        jobs: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Result<(), UpstreamError> {
        let idle = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(idle);
        loop {
            self.flush()?;
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let sink = match (&self.blocked, &self.reading) {
                (Some(_), Some(Reading { sink: Some(s), .. })) => Some(s.tx.clone()),
                _ => None,
            };
            let waiting = sink.is_some();
            tokio::select! {
                biased;
                read = self.rd.read_buf(&mut self.rbuf), if !waiting => {
                    if read.map_err(io_error)? == 0 {
                        return self.at_eof();
                    }
                    if self.parse()? {
                        return Ok(());
                    }
                }
                permit = async { sink.expect("enabled only with a sink").reserve_owned().await }, if waiting => {
                    let piece = self.blocked.take().expect("enabled only when blocked");
                    match permit {
                        Ok(permit) => {
                            permit.send(piece);
                        }
                        // The client is gone: read the rest of the body and drop it.
                        Err(_) => {
                            if let Some(reading) = self.reading.as_mut() {
                                reading.sink = None;
                            }
                        }
                    }
                    if self.parse()? {
                        return Ok(());
                    }
                }
                writable = self.wr.writable(), if !self.wbuf.is_empty() => {
                    writable.map_err(io_error)?;
                }
                Some(job) = jobs.recv() => {
                    let now = Instant::now();
                    self.take(job, now);
                    while let Ok(job) = jobs.try_recv() {
                        self.take(job, now);
                    }
                }
                () = &mut idle, if self.pending.is_empty() => {
                    let quiet = self.last_active.elapsed();
                    if quiet >= IDLE_TIMEOUT {
                        return Ok(());
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + (IDLE_TIMEOUT - quiet));
                }
            }
        }
    }

    /// Queue a job's request for writing.
    fn take(&mut self, job: Job, now: Instant) {
        self.conn.queued.fetch_sub(1, Relaxed);
        if job.reply.is_closed() {
            // The client left before its request was written: do not send it.
            self.conn.outstanding.fetch_sub(1, Relaxed);
            return;
        }
        self.wbuf.extend_from_slice(&job.head);
        self.pending.push_back(Pending {
            reply: Some(job.reply),
            head_only: job.head_only,
            sent: now,
        });
    }

    /// Write what the socket takes now.
    fn flush(&mut self) -> Result<(), UpstreamError> {
        while !self.wbuf.is_empty() {
            match self.wr.try_write(&self.wbuf) {
                Ok(0) => return Err(io_error(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(())
    }

    /// The replica closed the connection.
    fn at_eof(&mut self) -> Result<(), UpstreamError> {
        if let Some(reading) = self.reading.take() {
            if reading.framing != Framing::UntilClose {
                self.reading = Some(reading);
                return Err(UpstreamError::Io(
                    "the replica closed the connection mid-response".into(),
                ));
            }
            if let Some(sink) = reading.sink {
                sink.finish();
            }
            self.finish_response();
        }
        if !self.rbuf.is_empty() {
            return Err(UpstreamError::Invalid(
                "the replica closed the connection inside a response head".into(),
            ));
        }
        Ok(())
    }

    /// Parse what has been read; `true` when the connection must end now.
    fn parse(&mut self) -> Result<bool, UpstreamError> {
        loop {
            match self.step()? {
                Step::More => return Ok(false),
                Step::Blocked(piece) => {
                    self.blocked = Some(piece);
                    return Ok(false);
                }
                Step::Progress => {}
                Step::Close => return Ok(true),
            }
        }
    }

    fn step(&mut self) -> Result<Step, UpstreamError> {
        if self.reading.is_some() {
            return self.body_step();
        }
        let Some(front) = self.pending.front_mut() else {
            if self.rbuf.is_empty() {
                return Ok(Step::More);
            }
            return Err(UpstreamError::Invalid(
                "the replica sent data no request asked for".into(),
            ));
        };
        if self.rbuf.is_empty() {
            return Ok(Step::More);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(&self.rbuf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.rbuf.len() > MAX_HEAD => {
                return Err(UpstreamError::Invalid(format!(
                    "response head larger than {MAX_HEAD} bytes"
                )))
            }
            Ok(httparse::Status::Partial) => return Ok(Step::More),
            Err(e) => return Err(UpstreamError::Invalid(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| UpstreamError::Invalid(format!("status code {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(UpstreamError::Invalid(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            }
            // 100 Continue, 103 Early Hints: interim, the final response follows.
            self.rbuf.advance(len);
            return Ok(Step::Progress);
        }
        let head = Head::from_parsed(&parsed, front.head_only, status)?;
        self.rbuf.advance(len);
        self.latency.record(front.sent.elapsed());
        let reply = front.reply.take();
        let Head {
            framing,
            close_after,
            ..
        } = head;
        let done = if close_after {
            Step::Close
        } else {
            Step::Progress
        };
        if let Framing::Length(n) = framing {
            if self.rbuf.len() as u64 >= n {
                // The whole body is here: hand it over as one piece.
                let body = (n > 0).then(|| self.rbuf.split_to(n as usize).freeze());
                deliver(reply, head.into_response(PipeBody::Full(body)));
                self.finish_response();
                return Ok(done);
            }
        }
        let (tx, rx) = mpsc::channel(BODY_QUEUE);
        let outcome = Arc::new(OnceLock::new());
        let length = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let delivered = deliver(
            reply,
            head.into_response(PipeBody::Stream {
                rx,
                outcome: Arc::clone(&outcome),
                length,
                done: false,
            }),
        );
        self.conn.streaming.store(true, Relaxed);
        let close_after = close_after || framing == Framing::UntilClose;
        if close_after {
            self.conn.closed.store(true, Relaxed);
        }
        self.reading = Some(Reading {
            framing,
            sink: delivered.then_some(Sink { tx, outcome }),
            close_after,
        });
        Ok(Step::Progress)
    }

    /// Move body bytes from the read buffer to the client.
    fn body_step(&mut self) -> Result<Step, UpstreamError> {
        let reading = self.reading.as_mut().expect("called while reading a body");
        let piece = match reading.framing {
            Framing::Length(0) => None,
            Framing::Length(left) => {
                if self.rbuf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (self.rbuf.len() as u64).min(left);
                reading.framing = Framing::Length(left - n);
                Some(self.rbuf.split_to(n as usize).freeze())
            }
            Framing::UntilClose => {
                if self.rbuf.is_empty() {
                    return Ok(Step::More);
                }
                Some(self.rbuf.split().freeze())
            }
            Framing::Chunked(state) => match chunked_step(state, &mut self.rbuf)? {
                ChunkStep::More => return Ok(Step::More),
                ChunkStep::State(next) => {
                    reading.framing = Framing::Chunked(next);
                    return Ok(Step::Progress);
                }
                ChunkStep::Data(next, data) => {
                    reading.framing = Framing::Chunked(next);
                    Some(data)
                }
                ChunkStep::Done => None,
            },
        };
        let Some(piece) = piece else {
            // The body is complete.
            let reading = self.reading.take().expect("checked above");
            if let Some(sink) = reading.sink {
                sink.finish();
            }
            self.finish_response();
            return Ok(if reading.close_after {
                Step::Close
            } else {
                Step::Progress
            });
        };
        if let Some(sink) = &reading.sink {
            match sink.tx.try_send(piece) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(piece)) => return Ok(Step::Blocked(piece)),
                Err(mpsc::error::TrySendError::Closed(_)) => reading.sink = None,
            }
        }
        Ok(Step::Progress)
    }

    /// The front response is complete.
    fn finish_response(&mut self) {
        self.pending.pop_front();
        self.conn.outstanding.fetch_sub(1, Relaxed);
        self.conn.streaming.store(false, Relaxed);
        self.last_active = Instant::now();
    }

    /// The connection is over: tell every waiting request why. A body being streamed ends
    /// with an error (its sink is dropped without being finished).
    fn fail_all(&mut self, failure: Option<UpstreamError>) {
        let reason = failure.as_ref().map_or_else(
            || "the replica closed the connection".to_owned(),
            |e| e.to_string(),
        );
        if let Some(reading) = self.reading.take() {
            if let Some(sink) = reading.sink {
                sink.fail(reason.clone());
            }
            self.pending.pop_front();
        }
        for pending in self.pending.drain(..) {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(UpstreamError::NotStarted(reason.clone())));
            }
        }
    }
}

fn io_error(e: std::io::Error) -> UpstreamError {
    UpstreamError::Io(e.to_string())
}

/// Hand a response to the waiting request; `false` if it is gone.
fn deliver(reply: Option<Reply>, response: Response<PipeBody>) -> bool {
    match reply {
        Some(reply) => reply.send(Ok(response)).is_ok(),
        None => false,
    }
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The replica will close the connection after this response.
    close_after: bool,
}

impl Head {
    fn from_parsed(
        parsed: &httparse::Response<'_, '_>,
        head_only: bool,
        status: StatusCode,
    ) -> Result<Head, UpstreamError> {
        let http10 = parsed.version == Some(0);
        let connection = hop::connection_tokens(
            parsed
                .headers
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                .map(|f| f.value),
        );
        let close = connection.iter().any(|t| t == "close");
        let keep_alive = connection.iter().any(|t| t == "keep-alive");
        let mut chunked = None;
        let mut length: Option<u64> = None;
        for field in parsed.headers.iter() {
            if field.name.eq_ignore_ascii_case("transfer-encoding") {
                let value = std::str::from_utf8(field.value).unwrap_or("");
                let last = value.rsplit(',').next().unwrap_or("").trim();
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            } else if field.name.eq_ignore_ascii_case("content-length") {
                for part in std::str::from_utf8(field.value).unwrap_or("x").split(',') {
                    let part = part.trim();
                    let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| part.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| {
                            UpstreamError::Invalid(format!("content-length {part:?}"))
                        })?;
                    if length.is_some_and(|l| l != n) {
                        return Err(UpstreamError::Invalid(
                            "content-length fields disagree".into(),
                        ));
                    }
                    length = Some(n);
                }
            }
        }
        let mut headers = HeaderMap::with_capacity(parsed.headers.len());
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| UpstreamError::Invalid(format!("header name {:?}", field.name)))?;
            if hop::is_hop_by_hop(name.as_str()) || connection.iter().any(|t| t == name.as_str()) {
                continue;
            }
            if name == header::CONTENT_LENGTH && chunked.is_some() {
                continue;
            }
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| UpstreamError::Invalid(format!("value of header {:?}", field.name)))?;
            headers.append(name, value);
        }
        let no_body =
            head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = match (chunked, length) {
            _ if no_body => Framing::Length(0),
            (Some(true), _) => Framing::Chunked(Chunk::Size),
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        };
        Ok(Head {
            status,
            headers,
            framing,
            // Transfer-Encoding with Content-Length is a smuggling pattern: never reuse.
            close_after: close
                || (http10 && !keep_alive)
                || (chunked.is_some() && length.is_some()),
        })
    }

    fn into_response(self, body: PipeBody) -> Response<PipeBody> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// One step of the chunked-body decoder.
enum ChunkStep {
    More,
    State(Chunk),
    Data(Chunk, Bytes),
    Done,
}

/// Decode the next part of a chunked body (RFC 9112 §7.1) from `buf`.
fn chunked_step(state: Chunk, buf: &mut BytesMut) -> Result<ChunkStep, UpstreamError> {
    let invalid = |what: &str| UpstreamError::Invalid(format!("chunked body: {what}"));
    match state {
        Chunk::Size => {
            let Some(line) = take_line(buf)? else {
                return Ok(ChunkStep::More);
            };
            let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
            let digits = digits.trim_ascii_end();
            if digits.is_empty() || digits.len() > 15 {
                return Err(invalid("bad chunk size"));
            }
            let size = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| invalid("bad chunk size"))?;
            Ok(ChunkStep::State(if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(ChunkStep::More);
            }
            let n = (buf.len() as u64).min(left);
            let data = buf.split_to(n as usize).freeze();
            let next = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(ChunkStep::Data(next, data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(ChunkStep::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            Ok(ChunkStep::State(Chunk::Size))
        }
        Chunk::Trailers => match take_line(buf)? {
            None => Ok(ChunkStep::More),
            Some(line) if line.is_empty() => Ok(ChunkStep::Done),
            Some(_) => Ok(ChunkStep::State(Chunk::Trailers)),
        },
    }
}

/// Take one CRLF-terminated line from `buf` (without the CRLF), if it is complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, UpstreamError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_LINE => {
            let line = buf.split_to(end).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(UpstreamError::Invalid("chunked body: line too long".into())),
        None if buf.len() > MAX_LINE => {
            Err(UpstreamError::Invalid("chunked body: line too long".into()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        let mut buf = BytesMut::from(input);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match chunked_step(state, &mut buf)? {
                ChunkStep::More => return Err(UpstreamError::Invalid("incomplete".into())),
                ChunkStep::State(next) => state = next,
                ChunkStep::Data(next, data) => {
                    out.extend_from_slice(&data);
                    state = next;
                }
                ChunkStep::Done => return Ok(out),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = decode_all(b"5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n");
        assert_eq!(body.unwrap(), b"hello world");
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(
                matches!(decode_all(bad), Err(UpstreamError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_heads_drop_hop_by_hop_fields_and_add_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("lb:5000"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-request-id", HeaderValue::from_static("42"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        let head = request_head(
            &http::Method::GET,
            "/home?x=1",
            &headers,
            "127.0.0.1:9",
            &HeaderValue::from_static("10.0.0.1"),
        );
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "GET /home?x=1 HTTP/1.1\r\nhost: lb:5000\r\nx-request-id: 42\r\n\
             x-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        let head = request_head(
            &http::Method::HEAD,
            "/",
            &HeaderMap::new(),
            "127.0.0.1:9",
            &HeaderValue::from_static("::1"),
        );
        assert!(head.starts_with(b"HEAD / HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"));
    }
}
