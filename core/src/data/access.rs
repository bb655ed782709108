//! The access log (`[log] access`, `access_format`): one line per proxied request, written off
//! the request path.
//!
//! A worker hands each finished request's [`Record`] to a bounded channel ([`Sink::send`]: never
//! blocks, never grows); one writer thread formats the lines into a buffer and writes it when it
//! holds 64 KiB, at least every second, and when `lb` exits. When the channel is full the line
//! is dropped and counted (`lb_access_log_dropped_total`; the writer also logs how many). A log
//! file is appended to and reopened on SIGHUP ([`AccessLog::reopen`]), for logrotate.
//!
//! A write that fails (a full disk: `ENOSPC`, `EIO`) loses the lines not written whole, and
//! counts them in `lb_access_log_dropped_total` too; it never leaves a cut record: a record a
//! short write cut is taken back (the file is shortened to the last whole record), or, where
//! that cannot be done (standard output), finished first on the next write. The error is logged
//! at most once a second; the writer tries again at every flush and says when it works again.
//!
//! Lines cannot be broken by what a client sends: JSON strings are JSON-encoded; text values
//! are quoted with `"`, `\` and control characters escaped.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Uri};
use serde::Serialize;

use crate::config::{AccessFormat, AccessTarget};
use crate::state::Shared;

/// Records waiting for the writer; beyond this, lines are dropped.
const QUEUE: usize = 16 * 1024;
/// The writer writes its buffer out at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// ... and whenever it holds this much.
const BUFFER: usize = 64 * 1024;
/// How long [`AccessLog::close`] waits for the last lines to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The facts of one access log line.
#[derive(Debug)]
pub(crate) struct Record {
    /// When the request's head had been read.
    pub(crate) ts: SystemTime,
    /// The client's address (the TCP peer).
    pub(crate) client: IpAddr,
    /// The request method.
    pub(crate) method: Method,
    /// The request target, as [`target`] gives it.
    pub(crate) target: Box<str>,
    /// The status sent (499: the client went away first).
    pub(crate) status: u16,
    /// The replica that answered or was tried last (`None`: none was chosen).
    pub(crate) replica: Option<Arc<str>>,
    /// The request id the ring hashed.
    pub(crate) request_id: Option<u64>,
    /// From sending to a replica until its response head.
    pub(crate) upstream: Option<Duration>,
    /// From the request head until the response was done.
    pub(crate) total: Duration,
    /// Response body bytes sent.
    pub(crate) bytes: u64,
    /// The TLS version of the connection (`"1.2"`, `"1.3"`); `None` on the plain listener.
    pub(crate) tls: Option<&'static str>,
    /// The name the client asked for in its TLS handshake (SNI), if any.
    pub(crate) sni: Option<Arc<str>>,
    /// A WebSocket tunnel (status 101, logged when it closes): the bytes the client sent
    /// through it (`bytes`: what it received). `None` for any other request.
    pub(crate) bytes_in: Option<u64>,
    /// The protocol the client spoke: `HTTP/1.1`, `HTTP/1.0` or `HTTP/2` ([`proto`]).
    pub(crate) proto: &'static str,
}

/// The access log's `proto` of a request of `version`.
pub(crate) fn proto(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A worker's end of the access log.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: SyncSender<Record>,
}

impl Sink {
    /// Hand `record` to the writer; false if it was dropped (the writer is behind, or gone).
    #[inline]
    pub(crate) fn send(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("cannot open the access log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access log writer: {0}")]
    Spawn(std::io::Error),
}

/// The running access log: the writer thread and the workers' way to it.
#[derive(Debug)]
pub(crate) struct AccessLog {
    /// `None` once retired: the writer ends when the workers' sinks are gone too.
    sink: Option<Sink>,
    reopen: Arc<AtomicBool>,
    done: Receiver<()>,
}

impl AccessLog {
    /// Start writing to `target` in `format`; `None` when the target is [`AccessTarget::Off`].
    /// Lines dropped are read from `shared`'s counters (to say so in the log).
    pub(crate) fn start(
        target: &AccessTarget,
        format: AccessFormat,
        shared: &Arc<Shared>,
    ) -> Result<Option<AccessLog>, AccessLogError> {
        let output = match target {
            AccessTarget::Off => return Ok(None),
            AccessTarget::Stdout => Output::stdout()?,
            AccessTarget::File(path) => Output {
                file: open(path)?,
                path: Some(path.clone()),
            },
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let (finished, done) = mpsc::channel();
        let writer = Writer {
            output,
            format,
            pending: Pending {
                buffer: Vec::with_capacity(BUFFER * 2),
                begun: 0,
            },
            reopen: Arc::clone(&reopen),
            shared: Arc::clone(shared),
            dropped: 0,
            failing: None,
            logged: None,
            lost: 0,
        };
        std::thread::Builder::new()
            .name("lb-access-log".into())
            .spawn(move || {
                writer.run(&rx);
                let _ = finished.send(());
            })
            .map_err(AccessLogError::Spawn)?;
        Ok(Some(AccessLog {
            sink: Some(Sink { tx }),
            reopen,
            done,
        }))
    }

    /// The end workers send records to.
    /// (`None` once [retired](AccessLog::retire).)
    pub(crate) fn sink(&self) -> Option<Sink> {
        self.sink.clone()
    }

    /// Replaced by another: hand out no more sinks, and let the writer end once the lines of
    /// the connections still sending to it are written ([`AccessLog::finished`]).
    pub(crate) fn retire(mut self) -> AccessLog {
        self.sink = None;
        self
    }

    /// Reopen the file (SIGHUP: logrotate moved it away). Takes effect within a second.
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Whether the writer has ended (every sink is gone and its lines are written).
    pub(crate) fn finished(&self) -> bool {
        !matches!(self.done.try_recv(), Err(mpsc::TryRecvError::Empty))
    }

    /// Write out what is buffered and stop the writer, once the workers are gone (their ends of
    /// the channel with them). Waits at most two seconds.
    pub(crate) fn close(self) {
        let AccessLog { sink, done, .. } = self;
        drop(sink);
        let _ = done.recv_timeout(CLOSE_WAIT);
    }
}

fn open(path: &std::path::Path) -> Result<std::fs::File, AccessLogError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Where the writer writes: the file, or a copy of the standard output's descriptor (written
/// unbuffered, so that the writer knows exactly what a failed write left behind).
struct Output {
    file: std::fs::File,
    /// The file's path; `None` for the standard output.
    path: Option<PathBuf>,
}

impl Output {
    fn stdout() -> Result<Output, AccessLogError> {
        use std::os::fd::AsFd as _;
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| AccessLogError::Open {
                path: "(standard output)".into(),
                source,
            })?;
        Ok(Output {
            file: fd.into(),
            path: None,
        })
    }
}

/// What the writer needs of where lines go (a trait, so that tests can make writes fail).
trait Destination {
    /// Write some of `bytes`; how many.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize>;
    /// Remove the last `n` bytes written (the start of a record a failed write cut short); an
    /// error where that cannot be done.
    fn take_back(&mut self, n: u64) -> std::io::Result<()>;
}

impl Destination for Output {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file.write(bytes)
    }

    fn take_back(&mut self, n: u64) -> std::io::Result<()> {
        if self.path.is_none() {
            // A pipe or a terminal cannot be shortened (and a redirected standard output is not
            // opened for appending: shortening it would leave a hole).
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        // Opened for appending: writes go to the end wherever the length is.
        let len = self.file.metadata()?.len();
        self.file.set_len(len.saturating_sub(n))
    }
}

/// Lines not yet written, and the start of a record a failed write cut short.
#[derive(Debug, Default)]
struct Pending {
    /// Whole records, each ending in its only line feed; the first may have begun already.
    buffer: Vec<u8>,
    /// Bytes of the first record already written (a write failed in it and they could not be
    /// taken back): they are finished, not written again.
    begun: usize,
}

/// What writing the pending lines did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flushed {
    /// Records written whole.
    written: u64,
    /// Records lost: not written, or cut and taken back.
    lost: u64,
}

impl Pending {
    /// Write every pending record to `out`. On a failed write, the records not written whole are
    /// lost and counted, except one it cut short that could not be taken back: the rest of that
    /// one stays pending, to be finished first next time. Never leaves a cut record behind
    /// otherwise.
    fn flush(&mut self, out: &mut impl Destination) -> (Flushed, Option<std::io::Error>) {
        let mut done = 0;
        let error = loop {
            if done == self.buffer.len() {
                break None;
            }
            match out.write(&self.buffer[done..]) {
                Ok(0) => break Some(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let lines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let mut flushed = Flushed {
            written: lines(&self.buffer[..done]),
            lost: 0,
        };
        if error.is_none() {
            self.buffer.clear();
            self.begun = 0;
            return (flushed, None);
        }
        // Where the record the failure is in begins (in the buffer), and how much of it went out.
        let start = self.buffer[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let cut = (done - start) + if start == 0 { self.begun } else { 0 };
        let end = start
            + self.buffer[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.buffer.len() - start, |i| i + 1);
        if cut > 0 && out.take_back(cut as u64).is_err() {
            // The record cannot be taken back: finish it next time; the rest are lost.
            flushed.lost = lines(&self.buffer[end..]);
            self.buffer.truncate(end);
            self.buffer.drain(..done);
            self.begun = cut;
        } else {
            flushed.lost = lines(&self.buffer[start..]);
            self.buffer.clear();
            self.begun = 0;
        }
        (flushed, error)
    }
}

/// The writer thread's state.
struct Writer {
    output: Output,
    format: AccessFormat,
    pending: Pending,
    reopen: Arc<AtomicBool>,
    shared: Arc<Shared>,
    /// Lines dropped by the queue, as last reported.
    dropped: u64,
    /// Since when writes fail (`None`: the last one worked).
    failing: Option<Instant>,
    /// When a failure was last logged: at most once a [`FLUSH_EVERY`].
    logged: Option<Instant>,
    /// Lines lost to failed writes since the last line that said so.
    lost: u64,
}

impl Writer {
    fn run(mut self, rx: &Receiver<Record>) {
        let mut last_flush = Instant::now();
        loop {
            let wait = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
            match rx.recv_timeout(wait) {
                Ok(record) => {
                    self.line(&record);
                    while self.pending.buffer.len() < BUFFER {
                        match rx.try_recv() {
                            Ok(record) => self.line(&record),
                            Err(_) => break,
                        }
                    }
                    if self.pending.buffer.len() >= BUFFER {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            if self.reopen.swap(false, Ordering::Relaxed) {
                self.flush();
                self.reopen_file();
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                self.flush();
                self.report_dropped();
                last_flush = Instant::now();
            }
        }
    }

    fn line(&mut self, record: &Record) {
        match self.format {
            AccessFormat::Json => write_json(record, &mut self.pending.buffer),
            AccessFormat::Text => write_text(record, &mut self.pending.buffer),
        }
    }

    /// Write the pending lines; count and report (at most once a second) the lines a failed
    /// write lost, and say when writing works again.
    fn flush(&mut self) {
        if self.pending.buffer.is_empty() {
            return;
        }
        let (flushed, error) = self.pending.flush(&mut self.output);
        if flushed.lost > 0 {
            self.shared.metrics.access_lost(flushed.lost);
            self.lost += flushed.lost;
        }
        let now = Instant::now();
        match error {
            Some(e) => {
                self.failing.get_or_insert(now);
                if self
                    .logged
                    .is_none_or(|at| now.duration_since(at) >= FLUSH_EVERY)
                {
                    tracing::error!(
                        error = %e,
                        lines_lost = self.lost,
                        "cannot write the access log; lines are lost (counted in \
                         lb_access_log_dropped_total) until it works again"
                    );
                    self.logged = Some(now);
                    self.lost = 0;
                }
            }
            None => {
                if let Some(since) = self.failing.take() {
                    tracing::info!(
                        lines_lost = self.lost,
                        failed_for_ms = now.duration_since(since).as_millis() as u64,
                        "the access log is written again"
                    );
                    self.logged = None;
                    self.lost = 0;
                }
            }
        }
    }

    fn reopen_file(&mut self) {
        if let Some(path) = &self.output.path {
            match open(path) {
                Ok(new) => {
                    self.output.file = new;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(e) => tracing::error!(error = %e, "keeping the access log file open before"),
            }
        }
    }

    fn report_dropped(&mut self) {
        let dropped = self.shared.metrics.access_dropped();
        if dropped > self.dropped {
            tracing::warn!(
                lines = dropped - self.dropped,
                "access log lines dropped: the writer could not keep up"
            );
            self.dropped = dropped;
        }
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// The request target as logged: path and query (the whole target for the rare other forms).
pub(crate) fn target(uri: &Uri) -> std::borrow::Cow<'_, str> {
    match uri.path_and_query() {
        Some(p) if uri.authority().is_none() => p.as_str().into(),
        _ => uri.to_string().into(),
    }
}

/// One JSON object and a line feed.
pub(crate) fn write_json(record: &Record, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Json<'a> {
        ts: String,
        client: IpAddr,
        method: &'a str,
        path: &'a str,
        status: u16,
        replica: &'a str,
        request_id: Option<u64>,
        upstream_ms: Option<f64>,
        total_ms: f64,
        bytes: u64,
        tls: &'a str,
        sni: &'a str,
        proto: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_in: Option<u64>,
    }
    let line = Json {
        ts: humantime::format_rfc3339_millis(record.ts).to_string(),
        client: record.client,
        method: record.method.as_str(),
        path: &record.target,
        status: record.status,
        replica: record.replica.as_deref().unwrap_or(""),
        request_id: record.request_id,
        upstream_ms: record.upstream.map(millis),
        total_ms: millis(record.total),
        bytes: record.bytes,
        tls: record.tls.unwrap_or(""),
        sni: record.sni.as_deref().unwrap_or(""),
        proto: record.proto,
        bytes_in: record.bytes_in,
    };
    serde_json::to_writer(&mut *out, &line).expect("an access log line serializes");
    out.push(b'\n');
}

/// One line of `key=value` pairs (logfmt), in the JSON fields' order; strings quoted and
/// escaped, a missing value `-`.
pub(crate) fn write_text(record: &Record, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "ts={} client={} method=",
        humantime::format_rfc3339_millis(record.ts),
        record.client
    );
    let method = record.method.as_str();
    if method.bytes().all(is_tchar) {
        out.extend_from_slice(method.as_bytes());
    } else {
        quoted(method, out);
    }
    out.extend_from_slice(b" path=");
    quoted(&record.target, out);
    let _ = write!(out, " status={} replica=", record.status);
    quoted(record.replica.as_deref().unwrap_or(""), out);
    out.extend_from_slice(b" request_id=");
    match record.request_id {
        Some(id) => {
            let _ = write!(out, "{id}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" upstream_ms=");
    match record.upstream {
        Some(d) => {
            let _ = write!(out, "{}", millis(d));
        }
        None => out.push(b'-'),
    }
    let _ = write!(
        out,
        " total_ms={} bytes={} tls=",
        millis(record.total),
        record.bytes
    );
    quoted(record.tls.unwrap_or(""), out);
    out.extend_from_slice(b" sni=");
    quoted(record.sni.as_deref().unwrap_or(""), out);
    out.extend_from_slice(b" proto=");
    out.extend_from_slice(record.proto.as_bytes());
    if let Some(n) = record.bytes_in {
        let _ = write!(out, " bytes_in={n}");
    }
    out.push(b'\n');
}

/// A token character (RFC 9110 §5.6.2): what a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `text` in double quotes: `"` and `\` escaped with `\`, line breaks and other control
/// characters as `\n`, `\r`, `\t` or `\u{…}`.
fn quoted(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> Record {
        Record {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: "127.0.0.1".parse().unwrap(),
            method: Method::GET,
            target: target(&path.parse().unwrap()).into(),
            status: 200,
            replica: Some("Server 1".into()),
            request_id: Some(123_456),
            upstream: Some(Duration::from_micros(512)),
            total: Duration::from_micros(731),
            bytes: 57,
            tls: None,
            sni: None,
            proto: "HTTP/1.1",
            bytes_in: None,
        }
    }

    #[test]
    fn json_lines_have_every_field_in_order() {
        let mut out = Vec::new();
        write_json(&record("/home?x=1"), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"client\":\"127.0.0.1\",\"method\":\"GET\",\
             \"path\":\"/home?x=1\",\"status\":200,\"replica\":\"Server 1\",\"request_id\":123456,\
             \"upstream_ms\":0.512,\"total_ms\":0.731,\"bytes\":57,\"tls\":\"\",\"sni\":\"\",\"proto\":\"HTTP/1.1\"}\n"
        );
    }

    #[test]
    fn text_lines_have_the_same_fields_in_the_same_order() {
        let mut out = Vec::new();
        let mut r = record("/home");
        r.request_id = None;
        r.upstream = None;
        r.replica = None;
        r.status = 503;
        r.tls = Some("1.3");
        r.sni = Some("a\"b.test".into());
        r.proto = proto(http::Version::HTTP_2);
        write_text(&r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ts=2023-11-14T22:13:20.123Z client=127.0.0.1 method=GET path=\"/home\" status=503 \
             replica=\"\" request_id=- upstream_ms=- total_ms=0.731 bytes=57 tls=\"1.3\" \
             sni=\"a\\\"b.test\" proto=HTTP/2\n"
        );
    }

    #[test]
    fn a_hostile_path_cannot_break_a_line() {
        // What `http` lets through in a path (quotes, backslashes) and what it would not (line
        // breaks, escapes), built directly.
        let hostile = "/a\"b\\c\n\u{1b}[31m\u{2028}x";
        let mut text = Vec::new();
        quoted(hostile, &mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text, r#""/a\"b\\c\n\u{1b}[31m\u{2028}x""#);
        assert!(!text.contains('\n'));

        // `http` takes `"` and `\` in a path, `\` in a query, and any UTF-8 (U+0085 is a control
        // character, U+2028 a line separator).
        let path = "/a\"b\\c/\u{85}\u{2028}?q=\\{x}";
        let mut json = Vec::new();
        write_json(&record(path), &mut json);
        let line = String::from_utf8(json).unwrap();
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], path);
        let mut text = Vec::new();
        write_text(&record(path), &mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#" path="/a\"b\\c/\u{85}\u{2028}?q=\\{x}" "#),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }

    /// A destination with room for `room` more bytes; then writes fail with `ENOSPC` (after a
    /// short write, like a filling disk). `shortens`: whether bytes can be taken back (a file)
    /// or not (a pipe).
    struct Disk {
        data: Vec<u8>,
        room: usize,
        shortens: bool,
    }

    impl Destination for Disk {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = bytes.len().min(self.room);
            self.data.extend_from_slice(&bytes[..n]);
            self.room -= n;
            Ok(n)
        }

        fn take_back(&mut self, n: u64) -> std::io::Result<()> {
            if !self.shortens {
                return Err(std::io::ErrorKind::Unsupported.into());
            }
            self.data.truncate(self.data.len() - n as usize);
            Ok(())
        }
    }

    fn pending(lines: &[&str]) -> Pending {
        let mut p = Pending::default();
        for line in lines {
            p.buffer.extend_from_slice(line.as_bytes());
            p.buffer.push(b'\n');
        }
        p
    }

    fn whole_lines(data: &[u8]) -> Vec<&str> {
        let text = std::str::from_utf8(data).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a cut record: {text:?}"
        );
        text.lines().collect()
    }

    #[test]
    fn a_write_failing_mid_record_leaves_no_cut_record_and_counts_every_lost_line() {
        let mut disk = Disk {
            data: Vec::new(),
            room: "first\n".len() + 3,
            shortens: true,
        };
        let mut p = pending(&["first", "second", "third"]);
        let (flushed, error) = p.flush(&mut disk);
        assert_eq!(error.unwrap().raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(
            flushed,
            Flushed {
                written: 1,
                lost: 2
            }
        );
        assert_eq!(whole_lines(&disk.data), ["first"]);
        assert!(p.buffer.is_empty());

        // Still full: every line lost, nothing written.
        let mut p2 = pending(&["fourth"]);
        std::mem::swap(&mut p, &mut p2);
        assert_eq!(
            p.flush(&mut disk).0,
            Flushed {
                written: 0,
                lost: 1
            }
        );
        assert_eq!(whole_lines(&disk.data), ["first"]);

        // Room again: writing recovers.
        disk.room = 1024;
        let mut p = pending(&["fifth", "sixth"]);
        let (flushed, error) = p.flush(&mut disk);
        assert!(error.is_none());
        assert_eq!(
            flushed,
            Flushed {
                written: 2,
                lost: 0
            }
        );
        assert_eq!(whole_lines(&disk.data), ["first", "fifth", "sixth"]);
    }

    #[test]
    fn a_cut_record_that_cannot_be_taken_back_is_finished_first() {
        let mut pipe = Disk {
            data: Vec::new(),
            room: "first\n".len() + 3,
            shortens: false,
        };
        let mut p = pending(&["first", "second", "third"]);
        let (flushed, error) = p.flush(&mut pipe);
        assert!(error.is_some());
        // "second" is half out: it is finished later, "third" is lost.
        assert_eq!(
            flushed,
            Flushed {
                written: 1,
                lost: 1
            }
        );
        assert_eq!(p.buffer, b"ond\n");
        assert_eq!(p.begun, 3);

        // Still full: the new line is lost, the cut one still waits (a byte more of it went).
        pipe.room = 1;
        p.buffer.extend_from_slice(b"fourth\n");
        assert_eq!(
            p.flush(&mut pipe).0,
            Flushed {
                written: 0,
                lost: 1
            }
        );
        assert_eq!(p.buffer, b"nd\n");
        assert_eq!(p.begun, 4);

        pipe.room = 1024;
        p.buffer.extend_from_slice(b"fifth\n");
        let (flushed, error) = p.flush(&mut pipe);
        assert!(error.is_none());
        assert_eq!(
            flushed,
            Flushed {
                written: 2,
                lost: 0
            }
        );
        assert_eq!(whole_lines(&pipe.data), ["first", "second", "fifth"]);
    }

    #[test]
    fn the_queue_drops_instead_of_blocking() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let sink = Sink { tx };
        assert!(sink.send(record("/")));
        assert!(!sink.send(record("/")), "full: dropped");
    }
}
