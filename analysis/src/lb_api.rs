//! The load balancer's API as typed calls: `/rep`, `/add`, `/rm`, `/_lb/status`, `/_lb/ring`,
//! `/_lb/plugins`, and waiting for conditions with a deadline.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{Answer, LbClient, Method};
use crate::error::{Error, Result};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(10);

/// The answer of `GET /rep` (and of a successful `/add` or `/rm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rep {
    /// `N`.
    pub n: usize,
    /// The replicas' hostnames, in server-id order.
    pub replicas: Vec<String>,
}

impl Rep {
    /// Parse a `{"message": {"N": …, "replicas": […]}, "status": "successful"}` body.
    pub fn parse(body: &str) -> Option<Rep> {
        let v: Value = serde_json::from_str(body).ok()?;
        if v["status"] != "successful" {
            return None;
        }
        let n = usize::try_from(v["message"]["N"].as_u64()?).ok()?;
        let replicas = v["message"]["replicas"]
            .as_array()?
            .iter()
            .map(|r| r.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Rep { n, replicas })
    }
}

/// How the supervisor runs a replica (from `/_lb/status`): `{"pid": …}` (process supervisor),
/// `{"container_id": "…"}` (Docker supervisor) or `{"swarm_task": {"service": "…", "task": "…",
/// "container_id": "…"}}` (Swarm supervisor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Handle {
    /// Process id, for local processes.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Container id, for containers.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The running task, for a Swarm service.
    #[serde(default)]
    pub swarm_task: Option<SwarmTask>,
}

impl Handle {
    /// The replica's container id, from either the Docker or the Swarm form.
    pub fn container(&self) -> Option<&str> {
        self.container_id
            .as_deref()
            .or_else(|| self.swarm_task.as_ref().map(|t| t.container_id.as_str()))
            .filter(|id| !id.is_empty())
    }
}

/// A Swarm service's running task, as `/_lb/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SwarmTask {
    /// The service's id.
    #[serde(default)]
    pub service: String,
    /// The task's id.
    #[serde(default)]
    pub task: String,
    /// The task's container (what `docker kill` takes).
    #[serde(default)]
    pub container_id: String,
}

/// One replica in `/_lb/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ReplicaStatus {
    /// Hostname.
    pub hostname: String,
    /// Server id `i`.
    pub id: u64,
    /// Whether its heartbeats are answered.
    #[serde(default)]
    pub healthy: bool,
    /// Process or container.
    #[serde(default)]
    pub handle: Handle,
    /// Requests the load balancer sent it so far (0 from a load balancer that does not say).
    #[serde(default)]
    pub requests: u64,
}

/// Ring parameters in `/_lb/status`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RingInfo {
    /// `M`.
    pub slots: u32,
    /// `K`.
    pub virtual_nodes: u32,
    /// `linear` or `quadratic`.
    pub probing: String,
    /// Active hash.
    pub hash: String,
    /// `ring`, `maglev` or `rendezvous` (empty from a load balancer that does not say).
    #[serde(default)]
    pub algorithm: String,
    /// `[ring] bounded_load`, from a load balancer that has and shows it.
    #[serde(default)]
    pub bounded_load: Option<f64>,
}

/// A problem the load balancer reports, with its time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Issue {
    /// What went wrong.
    pub message: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
}

/// The configuration part of `/_lb/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ConfigInfo {
    /// Directories searched for plugins.
    #[serde(default)]
    pub plugin_dirs: Vec<String>,
    /// When the file was last applied.
    #[serde(default)]
    pub last_applied: Option<String>,
    /// Why the latest version of the file was refused, if it was.
    #[serde(default)]
    pub last_error: Option<Issue>,
}

/// The parts of `GET /_lb/status` the analysis uses.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Status {
    /// The replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// Ring parameters and hash.
    pub ring: RingInfo,
    /// Configuration file and plugin directories.
    #[serde(default)]
    pub config: ConfigInfo,
    /// Requests the load balancer sent on to another replica so far, if it reports them.
    #[serde(default)]
    pub retries: Option<u64>,
    /// The address it serves traffic on (empty from a load balancer that does not say).
    #[serde(default)]
    pub listen: String,
    /// The `Via` value it marks the requests it forwards with, from a load balancer that shows
    /// it (one that refuses requests carrying its own mark: a loop).
    #[serde(default)]
    pub via: Option<String>,
}

impl Status {
    /// The server id of `hostname`.
    pub fn id_of(&self, hostname: &str) -> Option<u64> {
        self.replicas
            .iter()
            .find(|r| r.hostname == hostname)
            .map(|r| r.id)
    }
}

/// The parts of `GET /_lb/ring` the analysis uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RingDump {
    /// `M`.
    pub slots: u32,
    /// Active hash.
    pub hash: String,
    /// Per slot, the hostname serving it.
    pub owners: Vec<String>,
}

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

    fn scale(&self, method: Method, path: &str, n: usize, hostnames: &[String]) -> Result<Rep> {
        let body = if hostnames.is_empty() {
            json!({ "n": n })
        } else {
            json!({ "n": n, "hostnames": hostnames })
        }
        .to_string();
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
        self.scale(Method::POST, "/add", n, hostnames)
    }

    /// `DELETE /rm {"n": n, "hostnames": […]}`; the new replica set.
    pub fn rm(&self, n: usize, hostnames: &[String]) -> Result<Rep> {
        self.scale(Method::DELETE, "/rm", n, hostnames)
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
        assert_eq!(handle(r#"{"address": "10.0.0.1:80"}"#), Handle::default());
    }
}
