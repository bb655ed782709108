//! The load balancer's API as typed calls: `/rep`, `/add`, `/rm`, `/_lb/status`, `/_lb/ring`,
//! `/_lb/plugins`, `/_lb/plan`, and waiting for conditions with a deadline.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{Answer, LbClient, Method};
use crate::error::{Error, Result};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(10);

/// The answer of `GET /rep` (and of a successful `/add` or `/rm`): `n` and the hostnames in
/// server-id order; [`Rep::parse`] reads a body.
pub type Rep = lb_views::Replicas;

/// How the supervisor runs a replica (from `/_lb/status`): `pid` (process supervisor),
/// `container_id` (Docker supervisor), `swarm_task` (Swarm supervisor) or `address` (a backend
/// by address, which nothing runs).
pub type Handle = lb_views::Handle;

/// A Swarm service's running task, as `/_lb/status` shows it.
pub type SwarmTask = lb_views::SwarmTask;

/// One replica in `/_lb/status`.
pub type ReplicaStatus = lb_views::ReplicaStatus;

/// Ring parameters in `/_lb/status`.
pub type RingInfo = lb_views::RingInfo;

/// A problem the load balancer reports, with its time.
pub type Issue = lb_views::Issue;

/// The configuration part of `/_lb/status`.
pub type ConfigInfo = lb_views::ConfigInfo;

/// `GET /_lb/status`.
pub type Status = lb_views::Status;

/// `GET /_lb/ring`.
pub type RingDump = lb_views::RingTable;

/// The answer of `POST /_lb/plan`: what a change would move, and every slot's owner after it.
pub type Plan = lb_views::Plan;

/// One entry of `GET /_lb/plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PluginEntry {
    /// Plugin name.
    pub name: String,
    /// Why it cannot be used, if it cannot.
    #[serde(default)]
    pub error: Option<String>,
    /// Compiled into `lb`.
    #[serde(default)]
    pub builtin: bool,
}

#[derive(Deserialize)]
struct PluginList {
    plugins: Vec<PluginEntry>,
}

fn unexpected(request: &str, answer: &Answer, what: &str) -> Error {
    Error::Unexpected {
        request: request.to_owned(),
        reason: format!("{what}; got {} {}", answer.status, answer.body),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(request: &str, answer: &Answer) -> Result<T> {
    if answer.status != 200 {
        return Err(unexpected(request, answer, "expected 200"));
    }
    serde_json::from_str(&answer.body)
        .map_err(|e| unexpected(request, answer, &format!("unexpected JSON ({e})")))
}

impl LbClient {
    /// `GET /rep`.
    pub fn rep(&self) -> Result<Rep> {
        let answer = self.get("/rep")?;
        match (answer.status, Rep::parse(&answer.body)) {
            (200, Some(rep)) => Ok(rep),
            _ => Err(unexpected(
                "GET /rep",
                &answer,
                "expected 200 with N and replicas",
            )),
        }
    }

    /// `GET /_lb/status`.
    pub fn status(&self) -> Result<Status> {
        parse_json("GET /_lb/status", &self.get("/_lb/status")?)
    }

    /// The value of the unlabelled sample `name` in `GET /_lb/metrics` (`None`: not there, as
    /// from a load balancer without that counter).
    pub fn metric(&self, name: &str) -> Result<Option<f64>> {
        let answer = self.get("/_lb/metrics")?;
        if answer.status != 200 {
            return Err(unexpected("GET /_lb/metrics", &answer, "expected 200"));
        }
        Ok(metric_value(&answer.body, name))
    }

    /// `GET /_lb/ring`.
    pub fn ring(&self) -> Result<RingDump> {
        parse_json("GET /_lb/ring", &self.get("/_lb/ring")?)
    }

    /// `GET /_lb/plugins`: every hash the load balancer can find.
    pub fn plugins(&self) -> Result<Vec<PluginEntry>> {
        let list: PluginList = parse_json("GET /_lb/plugins", &self.get("/_lb/plugins")?)?;
        Ok(list.plugins)
    }

    /// `/add` or `/rm` with `n`, `hostnames` and (an `/add`) `weights`, each left out when
    /// empty; the new replica set.
    fn scale(
        &self,
        method: Method,
        path: &str,
        n: usize,
        hostnames: &[String],
        weights: &[u32],
    ) -> Result<Rep> {
        let mut body = json!({ "n": n });
        if !hostnames.is_empty() {
            body["hostnames"] = json!(hostnames);
        }
        if !weights.is_empty() {
            body["weights"] = json!(weights);
        }
        let body = body.to_string();
        let request = format!("{method} {path} {body}");
        let answer = self.send(method, path, Some(&body), None)?;
        match (answer.status, Rep::parse(&answer.body)) {
            (200, Some(rep)) => Ok(rep),
            _ => Err(unexpected(
                &request,
                &answer,
                "expected 200 with the new replica set",
            )),
        }
    }

    /// `POST /add {"n": n, "hostnames": […]}`; the new replica set.
    pub fn add(&self, n: usize, hostnames: &[String]) -> Result<Rep> {
        self.scale(Method::POST, "/add", n, hostnames, &[])
    }

    /// `POST /add {"n": hostnames.len(), "hostnames": […], "weights": […]}`: replicas with these
    /// names and weights (paired by position); the new replica set.
    pub fn add_weighted(&self, hostnames: &[String], weights: &[u32]) -> Result<Rep> {
        self.scale(Method::POST, "/add", hostnames.len(), hostnames, weights)
    }

    /// `POST /_lb/plan` with `body` (`{"add": …}`, `{"rm": …}`, `{"weights": …}` or
    /// `{"config": …}`): what the change would move; nothing is changed.
    pub fn plan(&self, body: &serde_json::Value) -> Result<Plan> {
        let text = body.to_string();
        let answer = self.send(Method::POST, "/_lb/plan", Some(&text), None)?;
        parse_json(&format!("POST /_lb/plan {text}"), &answer)
    }

    /// `DELETE /rm {"n": n, "hostnames": […]}`; the new replica set.
    pub fn rm(&self, n: usize, hostnames: &[String]) -> Result<Rep> {
        self.scale(Method::DELETE, "/rm", n, hostnames, &[])
    }

    /// Bring the load balancer to `n` replicas with server ids exactly `1..=n`: remove every
    /// replica whose id is above `n`, then `/add` the missing ones (the load balancer gives a new
    /// replica the lowest free id). Answers the final `/_lb/status`.
    pub fn scale_to(&self, n: usize) -> Result<Status> {
        let status = self.status()?;
        let above: Vec<String> = status
            .replicas
            .iter()
            .filter(|r| r.id > n as u64)
            .map(|r| r.hostname.clone())
            .collect();
        let mut count = status.replicas.len();
        if !above.is_empty() {
            count = self.rm(above.len(), &above)?.n;
        }
        if count < n {
            self.add(n - count, &[])?;
        }
        let status = self.status()?;
        let mut ids: Vec<u64> = status.replicas.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        if ids != (1..=n as u64).collect::<Vec<_>>() {
            return Err(Error::Unexpected {
                request: format!("scaling to {n} replicas"),
                reason: format!("server ids are {ids:?}, not 1..={n}"),
            });
        }
        Ok(status)
    }

    /// Poll `/_lb/ring` until its hash is `name`; the time it took.
    pub fn wait_for_hash(&self, name: &str, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        eventually(limit, &format!("hash {name:?} in /_lb/ring"), || {
            Ok(self.ring()?.hash == name)
        })?;
        Ok(started.elapsed())
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Poll `check` every [`POLL`] until it answers `true` (errors end the wait), at most `limit`.
pub fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(Error::Timeout {
                what: what.to_owned(),
                limit,
            });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rep() {
        let rep = Rep::parse(
            r#"{"message": {"N": 2, "replicas": ["Server 1", "S5"]}, "status": "successful"}"#,
        )
        .unwrap();
        assert_eq!(rep.n, 2);
        assert_eq!(rep.replicas, ["Server 1", "S5"]);
        assert!(Rep::parse(r#"{"message": "<Error> x", "status": "failure"}"#).is_none());
        assert!(Rep::parse("not json").is_none());
    }

    #[test]
    fn reads_unlabelled_metrics() {
        let page =
            "# HELP lb_control_panics_total Panics.\n# TYPE lb_control_panics_total counter\n\
                    lb_control_panics_total 2\nlb_replica_restarts_total 5\n\
                    lb_replica_restarts_totally 9\nlb_requests_total{replica=\"a\"} 3\n";
        assert_eq!(metric_value(page, "lb_control_panics_total"), Some(2.0));
        assert_eq!(metric_value(page, "lb_replica_restarts_total"), Some(5.0));
        assert_eq!(metric_value(page, "lb_requests_total"), None);
        assert_eq!(metric_value(page, "lb_missing"), None);
    }

    #[test]
    fn parses_every_handle() {
        let handle = |json: &str| serde_json::from_str::<Handle>(json).unwrap();
        let pid = handle(r#"{"pid": 42}"#);
        assert_eq!((pid.pid, pid.container()), (Some(42), None));
        assert_eq!(handle(r#"{"container_id": "c1"}"#).container(), Some("c1"));
        let task =
            handle(r#"{"swarm_task": {"service": "s1", "task": "t1", "container_id": "c2"}}"#);
        assert_eq!(task.container(), Some("c2"));
        assert_eq!(
            task.swarm_task.as_ref().map(|t| t.service.as_str()),
            Some("s1")
        );
        let address = handle(r#"{"address": "10.0.0.1:80"}"#);
        assert_eq!((address.pid, address.container()), (None, None));
        assert_eq!(address.address.as_deref(), Some("10.0.0.1:80"));
    }
}
