//! One connection's task: it writes the requests handed to it, reads their responses in order
//! and hands each one over, streaming bodies that do not arrive with their head.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::body::{PipeBody, ProxyBody};
use super::chunked::{chunked_step, ChunkStep};
use super::framing::{parse_head, Framing, Head, ParsedHead};
use super::shared::{micros, Conn, Job, Latency, Pool, Reply};
use super::{UpstreamError, BODY_QUEUE, IDLE_TIMEOUT, MAX_INTERIM, READ_CHUNK};

/// A connection's task: connect, then write jobs and read responses until the connection ends
/// or stays idle for [`IDLE_TIMEOUT`]; then fail whatever is left and leave the pool.
pub(crate) async fn run(
    addr: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    conn: Arc<Conn>,
    latency: Arc<Latency>,
    pool: Weak<Pool>,
    connect_timeout: Duration,
) {
    let connected = tokio::time::timeout(connect_timeout, TcpStream::connect(addr.as_str())).await;
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
            reason: Arc::new(e),
        },
        Err(_) => UpstreamError::Connect {
            addr: addr.clone(),
            reason: Arc::new(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {connect_timeout:?}"),
            )),
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
    /// Interim (1xx) responses received so far.
    interim: u8,
    /// When the request was queued for writing.
    sent: Instant,
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

/// A connected socket, the requests written to it and the response being read.
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
        if self.pending.is_empty() {
            self.conn.oldest.store(micros(now), Relaxed);
        }
        self.pending.push_back(Pending {
            reply: Some(job.reply),
            head_only: job.head_only,
            interim: 0,
            sent: now,
        });
    }

    /// Write what the socket takes now.
    fn flush(&mut self) -> Result<(), UpstreamError> {
        while !self.wbuf.is_empty() {
            match self.wr.try_write(&self.wbuf) {
                Ok(0) => return Err(io_error(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
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
                return Err(io_error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the replica closed the connection mid-response",
                )));
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
        let (len, head) = match parse_head(&self.rbuf, front.head_only)? {
            ParsedHead::Partial => return Ok(Step::More),
            ParsedHead::Interim(len) => {
                // 100 Continue, 103 Early Hints: the final response follows, soon.
                front.interim += 1;
                if front.interim > MAX_INTERIM {
                    return Err(UpstreamError::Invalid(format!(
                        "more than {MAX_INTERIM} interim (1xx) responses to one request"
                    )));
                }
                self.rbuf.advance(len);
                return Ok(Step::Progress);
            }
            ParsedHead::Final(len, head) => (len, head),
        };
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
        let oldest = self.pending.front().map_or(0, |p| micros(p.sent));
        self.conn.oldest.store(oldest, Relaxed);
        self.conn.outstanding.fetch_sub(1, Relaxed);
        self.conn.streaming.store(false, Relaxed);
        self.last_active = Instant::now();
    }

    /// The connection is over: tell every waiting request why. A body being streamed ends
    /// with an error (its sink is dropped without being finished).
    ///
    /// A malformed response is the answer to the request at the front: that request fails with
    /// it (it is not sent again — the replica did answer). The requests behind it had no answer
    /// yet and are sent again on a fresh connection, so they do not pay for another's response.
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
        } else if let Some(invalid @ UpstreamError::Invalid(_)) = &failure {
            if let Some(mut front) = self.pending.pop_front() {
                if let Some(reply) = front.reply.take() {
                    let _ = reply.send(Err(invalid.clone()));
                }
            }
        }
        for pending in self.pending.drain(..) {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(UpstreamError::NotStarted(reason.clone())));
            }
        }
    }
}

/// A failed read or write on the connection, kept as the error's source.
fn io_error(e: io::Error) -> UpstreamError {
    UpstreamError::Io(Arc::new(e))
}

/// Hand a response to the waiting request; `false` if it is gone.
fn deliver(reply: Option<Reply>, response: Response<PipeBody>) -> bool {
    match reply {
        Some(reply) => reply.send(Ok(response.map(ProxyBody::from))).is_ok(),
        None => false,
    }
}
