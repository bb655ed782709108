//! Load generation: `GET /home` with given 6-digit `X-Request-Id`s, a bounded number in flight,
//! bounded in count (the ids) and time (a deadline, and a stop flag for open-ended traffic).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::client::{LbClient, Method};
use crate::error::Error;
use crate::stats::Summary;

/// The prefix of the replica name in a `/home` answer (SPEC §1).
pub const HELLO: &str = "Hello from Server: ";

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 from this replica.
    Served(String),
    /// Anything else: `HTTP 502`, `connection error`, `unexpected body`, …
    Failed(String),
}

/// One request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The request id sent.
    pub id: u32,
    /// When it was sent, since the run's origin.
    pub sent: Duration,
    /// When its answer (or error) came, since the run's origin.
    pub done: Duration,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Every request of one run.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// How many ids were planned.
    pub planned: usize,
    /// The requests sent, in completion order per worker.
    pub samples: Vec<Sample>,
    /// From the origin to the last answer.
    pub elapsed: Duration,
}

/// Requests per replica and failures per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests planned.
    pub planned: u64,
    /// Requests sent (answered or failed).
    pub sent: u64,
    /// 200s per replica hostname.
    pub served: BTreeMap<String, u64>,
    /// Failures per kind.
    pub failed: BTreeMap<String, u64>,
}

impl Tally {
    /// Total failures.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Total 200s.
    pub fn successes(&self) -> u64 {
        self.served.values().sum()
    }
}

impl LoadRun {
    /// Latency of every request (from sending to its answer or failure), milliseconds; `None`
    /// when none was sent.
    pub fn latency(&self) -> Option<Summary> {
        let ms: Vec<f64> = self
            .samples
            .iter()
            .map(|s| s.done.saturating_sub(s.sent).as_secs_f64() * 1000.0)
            .collect();
        Summary::of(&ms)
    }

    /// Count the outcomes.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally {
            planned: self.planned as u64,
            sent: self.samples.len() as u64,
            ..Tally::default()
        };
        for sample in &self.samples {
            match &sample.outcome {
                Outcome::Served(host) => *tally.served.entry(host.clone()).or_default() += 1,
                Outcome::Failed(kind) => *tally.failed.entry(kind.clone()).or_default() += 1,
            }
        }
        tally
    }
}

/// The replica name in a `/home` body, if it has the SPEC §1 shape.
pub fn served_by(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v["status"] != "successful" {
        return None;
    }
    v["message"]
        .as_str()?
        .strip_prefix(HELLO)
        .map(str::to_owned)
}

/// `count` random 6-digit request ids (100000..=999999) from `seed`, reproducibly; `phase` makes
/// the sequences of different measurements independent.
pub fn request_ids(seed: u64, phase: &str, count: usize) -> Vec<u32> {
    let salt = phase.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = fastrand::Rng::with_seed(seed ^ salt);
    (0..count).map(|_| rng.u32(100_000..=999_999)).collect()
}

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// No request is started after `origin + time`.
    pub time: Duration,
    /// No request is started once this is set.
    pub stop: Arc<AtomicBool>,
    /// How long one request may take (then it counts as failed, `timeout`).
    pub request_timeout: Duration,
}

/// Stack size of a load thread (it only holds a connection and its samples).
const WORKER_STACK: usize = 256 * 1024;

/// Send `GET /home` once for each id (fewer if the time limit or the stop flag comes first), at
/// most `limits.concurrency` at once: that many threads, each with a keep-alive connection of its
/// own, take the next id until none is left. Times are measured from `origin`.
pub fn run(
    client: &LbClient,
    ids: Arc<Vec<u32>>,
    limits: Limits,
    origin: Instant,
    progress: &ProgressBar,
) -> LoadRun {
    let next = AtomicUsize::new(0);
    let deadline = origin + limits.time;
    let worker = || {
        let mut connection = client.connection();
        let mut samples = Vec::new();
        while !limits.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(&id) = ids.get(index) else { break };
            let sent = origin.elapsed();
            let answer = connection.send_within(
                Method::GET,
                "/home",
                None,
                Some(u64::from(id)),
                limits.request_timeout,
            );
            let outcome = match answer {
                Ok(answer) if answer.status == 200 => match served_by(&answer.body) {
                    Some(host) => Outcome::Served(host),
                    None => Outcome::Failed("unexpected body".into()),
                },
                Ok(answer) => Outcome::Failed(format!("HTTP {}", answer.status)),
                Err(Error::NoAnswer { .. }) => Outcome::Failed("timeout".into()),
                Err(_) => Outcome::Failed("connection error".into()),
            };
            samples.push(Sample {
                id,
                sent,
                done: origin.elapsed(),
                outcome,
            });
            progress.inc(1);
        }
        samples
    };
    let mut samples = Vec::with_capacity(ids.len().min(1 << 20));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..limits.concurrency.max(1))
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(scope, worker)
            })
            .collect();
        for worker in workers {
            // A worker that could not be started sends nothing; the others take its share. A
            // worker only ends by returning; a panic would be a bug in this loop.
            if let Ok(Ok(mut part)) = worker.map(|w| w.join()) {
                samples.append(&mut part);
            }
        }
    });
    LoadRun {
        planned: ids.len(),
        samples,
        elapsed: origin.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_six_digits_and_reproducible() {
        let a = request_ids(7, "a1", 1000);
        assert_eq!(a, request_ids(7, "a1", 1000));
        assert_ne!(a, request_ids(8, "a1", 1000));
        assert_ne!(a, request_ids(7, "a2-n2", 1000));
        assert!(a.iter().all(|id| (100_000..=999_999).contains(id)));
    }

    #[test]
    fn parses_the_home_body() {
        assert_eq!(
            served_by(r#"{"message": "Hello from Server: Server 2", "status": "successful"}"#),
            Some("Server 2".into())
        );
        assert_eq!(
            served_by(r#"{"message": "hi", "status": "successful"}"#),
            None
        );
        assert_eq!(served_by("<html>"), None);
    }
}
