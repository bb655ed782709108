//! A-3's slow loris: [`LORIS_CONNECTIONS`] connections each send the start of a request head and
//! then one more header byte every [`LORIS_TRICKLE`], never finishing it, while normal clients
//! keep sending `GET /home`. Measured: which connections the load balancer answered (408) or
//! closed, after how long, and what the normal clients saw.
//!
//! The one place of the analysis that writes raw bytes on its own sockets (through
//! [`LbClient::tcp`]): an HTTP client cannot send a head that never ends. Bounded in time (the
//! attack by [`loris_bound`], its traffic by its stop flag and per-request deadlines) and in
//! count (request ids, connections).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rlimit::Resource;
use rustix::event::{PollFd, PollFlags, Timespec};
use serde::Serialize;

use super::faults::{timeline, Bin, Traffic, FIRST_ANSWER_LIMIT, PHASE_IDS};
use crate::client::LbClient;
use crate::config_file;
use crate::error::{Error, Result};
use crate::experiments::Context;
use crate::load::Tally;
use crate::progress;
use crate::stats::Summary;

/// Slow-loris connections opened (fewer if the open-files limit cannot be raised for them).
pub const LORIS_CONNECTIONS: usize = 200;
/// What each slow-loris connection sends at once: a request head without its end.
pub const LORIS_HEAD: &[u8] = b"GET /home HTTP/1.1\r\nHost: x\r\n";
/// Then a header line that never ends, one byte per [`LORIS_TRICKLE`]: `X-Slow: aaaa…`.
const LORIS_LINE: &[u8] = b"X-Slow: ";
/// The pace of the trickled bytes.
pub const LORIS_TRICKLE: Duration = Duration::from_secs(1);
/// The attack's bound when the load balancer's header timeout is not known (it was given with
/// `--lb`), and the most it may be otherwise.
pub const LORIS_BOUND: Duration = Duration::from_secs(20);
/// Most normal clients during the attack (and the fewest).
const LORIS_CLIENTS: std::ops::RangeInclusive<usize> = 8..=32;
/// Timeout for opening one slow-loris connection.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);
/// Longest wait in one `poll(2)` of the attack loop.
const LORIS_TICK: Duration = Duration::from_millis(100);
/// Answer bytes kept per slow-loris connection (enough for the status line).
const LORIS_KEEP: usize = 1024;
/// Open files kept free for everything else (normal clients, API calls, the process itself).
const SPARE_FILES: u64 = 64;

/// One slow-loris connection.
#[derive(Debug, Clone, Serialize)]
pub struct LorisConnection {
    /// When it was connected, ms since the phase's traffic started.
    pub opened_ms: f64,
    /// Bytes of the unfinished head it sent.
    pub bytes_sent: usize,
    /// The status of the answer it got (0 if the answer was not HTTP), and when its first bytes
    /// came, ms after connecting.
    pub answer: Option<(u16, f64)>,
    /// When the load balancer closed it (end of stream or reset), ms after connecting.
    pub closed_after_ms: Option<f64>,
}

/// The slow-loris measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Slowloris {
    /// Connections meant to be opened.
    pub planned: usize,
    /// Connections opened.
    pub opened: usize,
    /// Connections that could not be opened, and the first reason.
    pub connect_failed: (usize, Option<String>),
    /// The load balancer's `[proxy] client_header_timeout_ms`, when known (analysis wrote it).
    pub header_timeout_ms: Option<u64>,
    /// The attack's bound, milliseconds.
    pub bound_ms: f64,
    /// Time between trickled bytes, milliseconds.
    pub trickle_ms: u64,
    /// Connections answered `408 Request Timeout`.
    pub answered_408: usize,
    /// Connections answered with any other status.
    pub answered_other: usize,
    /// Connections the load balancer closed.
    pub closed: usize,
    /// Connections it closed without answering.
    pub closed_without_answer: usize,
    /// Connections still open when the bound was reached.
    pub still_open: usize,
    /// From connecting to the 408, milliseconds.
    pub to_408_ms: Option<Summary>,
    /// From connecting to the close, milliseconds.
    pub to_close_ms: Option<Summary>,
    /// From the first connection to the end of the attack, milliseconds.
    pub attack_ms: f64,
    /// When the first connection was opened, ms since the phase's traffic started.
    pub attack_started_ms: f64,
    /// Every connection.
    pub connections: Vec<LorisConnection>,
    /// Normal clients sending `GET /home` meanwhile.
    pub clients: usize,
    /// Their traffic.
    pub traffic: Tally,
    /// Their requests answered with 200.
    pub answered: u64,
    /// Their failed requests.
    pub failed: u64,
    /// Their latency, failed requests included, milliseconds.
    pub latency_ms: Option<Summary>,
    /// Their timeline in [`super::BIN`] bins.
    pub timeline: Vec<Bin>,
}

/// The slow-loris attack's bound: twice the header timeout plus 2 s when it is known, at most
/// [`LORIS_BOUND`].
pub fn loris_bound(header_timeout_ms: Option<u64>) -> Duration {
    header_timeout_ms.map_or(LORIS_BOUND, |t| {
        (Duration::from_millis(t.saturating_mul(2)) + Duration::from_secs(2)).min(LORIS_BOUND)
    })
}

/// Raise the soft limit of open files to `want` (within the hard limit); the soft limit after.
fn raise_open_files(want: u64) -> Option<u64> {
    let (soft, hard) = Resource::NOFILE.get().ok()?;
    if soft >= want {
        return Some(soft);
    }
    let raised = want.min(hard);
    match Resource::NOFILE.set(raised, hard) {
        Ok(()) => Some(raised),
        Err(_) => Some(soft),
    }
}

/// One slow-loris connection while the attack runs.
struct Loris {
    stream: TcpStream,
    connected: Instant,
    opened_ms: f64,
    next_byte: Instant,
    bytes_sent: usize,
    received: Vec<u8>,
    answer: Option<(u16, f64)>,
    closed_after_ms: Option<f64>,
}

impl Loris {
    fn open(client: &LbClient, origin: Instant) -> Result<Loris> {
        let mut stream = client.tcp(CONNECT_LIMIT)?;
        let connected = Instant::now();
        let io = |source| Error::Io {
            path: format!("slow-loris connection to {}", client.base()).into(),
            source,
        };
        stream.write_all(LORIS_HEAD).map_err(io)?;
        stream.set_nonblocking(true).map_err(io)?;
        Ok(Loris {
            stream,
            connected,
            opened_ms: connected.duration_since(origin).as_secs_f64() * 1000.0,
            next_byte: connected + LORIS_TRICKLE,
            bytes_sent: LORIS_HEAD.len(),
            received: Vec::new(),
            answer: None,
            closed_after_ms: None,
        })
    }

    fn done(&self) -> bool {
        self.closed_after_ms.is_some()
    }

    fn since(&self, now: Instant) -> f64 {
        now.duration_since(self.connected).as_secs_f64() * 1000.0
    }

    /// Read what arrived: the answer's status line, or the close.
    fn read(&mut self, now: Instant) {
        let mut buf = [0u8; 4096];
        // Bounded: each read takes bytes off the socket, and the bytes kept are bounded.
        for _ in 0..64 {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed_after_ms = Some(self.since(now));
                    return;
                }
                Ok(n) => {
                    if self.received.len() < LORIS_KEEP {
                        self.received.extend_from_slice(&buf[..n]);
                    }
                    if self.answer.is_none() {
                        self.answer = Some((0, self.since(now)));
                    }
                    if let Some((status @ 0, at)) = self.answer {
                        let line_end = self.received.windows(2).position(|w| w == b"\r\n");
                        if line_end.is_some() || self.received.len() >= LORIS_KEEP {
                            let line = &self.received[..line_end.unwrap_or(self.received.len())];
                            let code = std::str::from_utf8(line)
                                .ok()
                                .and_then(|l| l.split(' ').nth(1))
                                .and_then(|c| c.parse().ok())
                                .unwrap_or(status);
                            self.answer = Some((code, at));
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // Reset by the load balancer: closed too.
                    self.closed_after_ms = Some(self.since(now));
                    return;
                }
            }
        }
    }

    /// Send the next byte of the never-ending header line when it is due (until answered).
    fn trickle(&mut self, now: Instant) {
        if self.answer.is_some() || self.done() || now < self.next_byte {
            return;
        }
        let index = self.bytes_sent - LORIS_HEAD.len();
        let byte = LORIS_LINE.get(index).copied().unwrap_or(b'a');
        match self.stream.write(&[byte]) {
            Ok(1) => {
                self.bytes_sent += 1;
                self.next_byte += LORIS_TRICKLE;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.closed_after_ms = Some(self.since(now)),
        }
    }
}

/// Open `count` slow-loris connections (until `deadline`) and keep them trickling until the load
/// balancer has closed every one of them, or `deadline`.
fn attack(
    client: &LbClient,
    count: usize,
    origin: Instant,
    deadline: Instant,
    spinner: &ProgressBar,
) -> (Vec<Loris>, usize, Option<String>) {
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    for _ in 0..count {
        if Instant::now() >= deadline {
            failed += 1;
            first_error.get_or_insert_with(|| "the bound passed while connecting".to_owned());
            continue;
        }
        match Loris::open(client, origin) {
            Ok(loris) => open.push(loris),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    spinner.set_message(format!("{} slow-loris connections open", open.len()));
    // A round either waits 1 ms at least or handles an event (a trickled byte, answer bytes, a
    // close), and each connection has a bounded number of those before the deadline: the time
    // bound ends the loop, the cap only guards against a busy loop.
    let left = deadline.saturating_duration_since(Instant::now());
    let max_rounds = left.as_millis() as usize + open.len() * (left.as_secs() as usize + 8) + 16;
    for _ in 0..max_rounds {
        let now = Instant::now();
        let waiting: Vec<usize> = (0..open.len()).filter(|&i| !open[i].done()).collect();
        if waiting.is_empty() || now >= deadline {
            break;
        }
        let next_byte = waiting
            .iter()
            .filter(|&&i| open[i].answer.is_none())
            .map(|&i| open[i].next_byte)
            .min()
            .unwrap_or(deadline);
        let wait = next_byte
            .min(deadline)
            .saturating_duration_since(now)
            .min(LORIS_TICK);
        let mut fds: Vec<PollFd<'_>> = waiting
            .iter()
            .map(|&i| PollFd::new(&open[i].stream, PollFlags::IN))
            .collect();
        let timeout = Timespec::try_from(Duration::from_millis(wait.as_millis().max(1) as u64))
            .unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            });
        // An error (EINTR) counts as nothing ready: the round ends and the next one polls again.
        let ready = rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0);
        let readable: Vec<usize> = if ready > 0 {
            fds.iter()
                .zip(&waiting)
                .filter(|(fd, _)| !fd.revents().is_empty())
                .map(|(_, &i)| i)
                .collect()
        } else {
            Vec::new()
        };
        drop(fds);
        let now = Instant::now();
        for i in readable {
            open[i].read(now);
        }
        for &i in &waiting {
            open[i].trickle(now);
        }
        let closed = open.iter().filter(|l| l.done()).count();
        spinner.set_message(format!(
            "slow loris: {closed} of {} closed by the load balancer",
            open.len()
        ));
    }
    (open, failed, first_error)
}

/// The slow-loris attack next to normal clients.
pub fn run(ctx: &Context) -> Result<Slowloris> {
    let header_timeout_ms = match &ctx.owned_config {
        Some(path) => config_file::header_timeout_ms(path)?,
        None => None,
    };
    let bound = loris_bound(header_timeout_ms);
    let clients = ctx
        .concurrency
        .clamp(*LORIS_CLIENTS.start(), *LORIS_CLIENTS.end());
    let want = (LORIS_CONNECTIONS + clients) as u64 + SPARE_FILES;
    let planned = match raise_open_files(want) {
        Some(limit) if limit < want => {
            let fit = limit.saturating_sub(clients as u64 + SPARE_FILES) as usize;
            progress::note(&format!(
                "A-3 slow loris: the open-files limit is {limit}; {fit} connections instead of {LORIS_CONNECTIONS}"
            ));
            fit
        }
        _ => LORIS_CONNECTIONS,
    };

    let traffic = Traffic::start(
        ctx,
        "a3-slowloris",
        PHASE_IDS,
        clients,
        FIRST_ANSWER_LIMIT + bound,
    );
    traffic.warmed_up(Duration::ZERO)?;
    let attack_start = Instant::now();
    let attack_started = attack_start.duration_since(traffic.origin());
    let (connections, connect_failed, first_error) = attack(
        &ctx.client,
        planned,
        traffic.origin(),
        attack_start + bound,
        traffic.spinner(),
    );
    let attack_time = attack_start.elapsed();
    let run = traffic.finish()?;

    let connections: Vec<LorisConnection> = connections
        .into_iter()
        .map(|l| LorisConnection {
            opened_ms: l.opened_ms,
            bytes_sent: l.bytes_sent,
            answer: l.answer,
            closed_after_ms: l.closed_after_ms,
        })
        .collect();
    let to_408: Vec<f64> = connections
        .iter()
        .filter_map(|c| c.answer.filter(|a| a.0 == 408).map(|a| a.1))
        .collect();
    let to_close: Vec<f64> = connections
        .iter()
        .filter_map(|c| c.closed_after_ms)
        .collect();
    let tally = run.tally();
    let result = Slowloris {
        planned,
        opened: connections.len(),
        connect_failed: (connect_failed, first_error),
        header_timeout_ms,
        bound_ms: bound.as_secs_f64() * 1000.0,
        trickle_ms: LORIS_TRICKLE.as_millis() as u64,
        answered_408: to_408.len(),
        answered_other: connections
            .iter()
            .filter(|c| c.answer.is_some_and(|a| a.0 != 408))
            .count(),
        closed: to_close.len(),
        closed_without_answer: connections
            .iter()
            .filter(|c| c.answer.is_none() && c.closed_after_ms.is_some())
            .count(),
        still_open: connections
            .iter()
            .filter(|c| c.closed_after_ms.is_none())
            .count(),
        to_408_ms: Summary::of(&to_408),
        to_close_ms: Summary::of(&to_close),
        attack_ms: attack_time.as_secs_f64() * 1000.0,
        attack_started_ms: attack_started.as_secs_f64() * 1000.0,
        connections,
        clients,
        answered: tally.successes(),
        failed: tally.failures(),
        latency_ms: run.latency(),
        timeline: timeline(&run.samples),
        traffic: tally,
    };
    progress::note(&format!(
        "A-3 slow loris: {} of {} connections answered 408 (median after {} ms), {} closed, {} still open after {:.1} s; \
         normal clients: {} of {} requests failed, p99 {} ms",
        result.answered_408,
        result.opened,
        result.to_408_ms.map_or("?".into(), |s| format!("{:.0}", s.median)),
        result.closed,
        result.still_open,
        result.attack_ms / 1000.0,
        result.failed,
        result.traffic.sent,
        result.latency_ms.map_or("?".into(), |l| format!("{:.0}", l.p99)),
    ));
    Ok(result)
}

/// The number of slow-loris connections open over time (ms since the phase's traffic started):
/// a step line from the first connection to the end of the attack.
pub fn open_over_time(s: &Slowloris) -> Vec<(f64, f64)> {
    let mut events: BTreeMap<u64, i64> = BTreeMap::new();
    for c in &s.connections {
        *events.entry((c.opened_ms * 1000.0) as u64).or_default() += 1;
        if let Some(after) = c.closed_after_ms {
            *events
                .entry(((c.opened_ms + after) * 1000.0) as u64)
                .or_default() -= 1;
        }
    }
    let mut points = vec![(s.attack_started_ms, 0.0)];
    let mut open = 0i64;
    for (micros, change) in events {
        let t = micros as f64 / 1000.0;
        points.push((t, open as f64));
        open += change;
        points.push((t, open as f64));
    }
    points.push((s.attack_started_ms + s.attack_ms, open as f64));
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_bound_follows_the_header_timeout() {
        assert_eq!(loris_bound(None), LORIS_BOUND);
        assert_eq!(loris_bound(Some(3000)), Duration::from_secs(8));
        assert_eq!(loris_bound(Some(60_000)), LORIS_BOUND);
    }

    #[test]
    fn open_connections_step_down_as_they_close() {
        let c = |opened_ms, closed_after_ms| LorisConnection {
            opened_ms,
            bytes_sent: LORIS_HEAD.len(),
            answer: None,
            closed_after_ms,
        };
        let s = Slowloris {
            planned: 3,
            opened: 3,
            connect_failed: (0, None),
            header_timeout_ms: None,
            bound_ms: 1000.0,
            trickle_ms: 1000,
            answered_408: 0,
            answered_other: 0,
            closed: 2,
            closed_without_answer: 2,
            still_open: 1,
            to_408_ms: None,
            to_close_ms: None,
            attack_ms: 1000.0,
            attack_started_ms: 10.0,
            connections: vec![c(10.0, Some(100.0)), c(10.0, Some(200.0)), c(20.0, None)],
            clients: 8,
            traffic: Tally::default(),
            answered: 0,
            failed: 0,
            latency_ms: None,
            timeline: Vec::new(),
        };
        let points = open_over_time(&s);
        assert_eq!(points.first(), Some(&(10.0, 0.0)));
        assert!(points.contains(&(10.0, 2.0)) && points.contains(&(20.0, 3.0)));
        assert!(points.contains(&(110.0, 2.0)) && points.contains(&(210.0, 1.0)));
        assert_eq!(points.last(), Some(&(1010.0, 1.0)));
    }

    /// Against a server that answers 408 once it has read the partial head and then closes, the
    /// attack sees the answer and the close; against one that only reads, nothing but its bound.
    #[test]
    fn the_attack_sees_408s_and_closes_and_keeps_its_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = LbClient::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut stream = stream.unwrap();
                let mut head = vec![0u8; LORIS_HEAD.len()];
                stream.read_exact(&mut head).unwrap();
                assert_eq!(head, LORIS_HEAD);
                if i < 2 {
                    stream
                        .write_all(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n")
                        .unwrap();
                } else {
                    held.push(stream);
                }
            }
            held
        });
        let origin = Instant::now();
        let bound = Duration::from_millis(1500);
        let spinner = ProgressBar::hidden();
        let (conns, failed, _) = attack(&client, 3, origin, origin + bound, &spinner);
        let took = origin.elapsed();
        let held = server.join().unwrap();
        assert_eq!((conns.len(), failed), (3, 0));
        let answered: Vec<u16> = conns.iter().filter_map(|c| c.answer.map(|a| a.0)).collect();
        assert_eq!(answered, [408, 408]);
        assert_eq!(conns.iter().filter(|c| c.done()).count(), 2);
        assert!(conns[2].answer.is_none() && !conns[2].done());
        // The held connection got its head and at least one trickled byte.
        assert!(
            conns[2].bytes_sent > LORIS_HEAD.len(),
            "{}",
            conns[2].bytes_sent
        );
        assert!(
            took >= bound && took < bound + Duration::from_secs(2),
            "{took:?}"
        );
        drop(held);
    }
}
