//! [`Handle`]: how a supervisor refers to a running replica (a process id, a container, a Swarm
//! task) or, for a backend by address, its configured `HOST:PORT`. The controller keeps one per
//! replica beside the [`crate::state::Backend`] readers see; the shared state layer only sees
//! its JSON description ([`Handle::describe`]).

use serde::Serialize;

/// How the supervisor refers to a running replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handle {
    /// A local child process.
    Pid(u32),
    /// A container.
    ContainerId(String),
    /// A backend by address, which no supervisor runs: its configured `HOST:PORT`.
    Address(String),
    /// A Swarm service's running task.
    SwarmTask {
        /// The service's id (what `/rm` removes).
        service: String,
        /// The task's id.
        task: String,
        /// The task's container (what `docker kill` takes, on the node that runs it).
        container_id: String,
    },
}

impl Handle {
    /// Whether a supervisor runs it (and may stop it).
    pub fn is_supervised(&self) -> bool {
        !matches!(self, Handle::Address(_))
    }

    /// The configured `HOST:PORT` of a backend by address.
    pub fn address(&self) -> Option<&str> {
        match self {
            Handle::Address(address) => Some(address),
            Handle::Pid(_) | Handle::ContainerId(_) | Handle::SwarmTask { .. } => None,
        }
    }

    /// What `/_lb/status` shows as the replica's `handle` (e.g. `{"pid": 12}`).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::Pid(p) => write!(f, "pid {p}"),
            Handle::ContainerId(c) => write!(f, "container {c}"),
            Handle::Address(a) => write!(f, "address {a}"),
            Handle::SwarmTask { service, task, .. } => {
                write!(f, "swarm task {task} of service {service}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/_lb/status`'s `handle` keeps the shape tests, scripts and the analysis read.
    #[test]
    fn a_handle_is_described_as_before() {
        assert_eq!(Handle::Pid(7).describe(), serde_json::json!({"pid": 7}));
        assert_eq!(
            Handle::Address("a:1".into()).describe(),
            serde_json::json!({"address": "a:1"})
        );
        let task = Handle::SwarmTask {
            service: "s".into(),
            task: "t".into(),
            container_id: "c".into(),
        };
        assert_eq!(
            task.describe(),
            serde_json::json!({"swarm_task": {"service": "s", "task": "t", "container_id": "c"}})
        );
        assert!(!Handle::Address("a:1".into()).is_supervised() && Handle::Pid(1).is_supervised());
    }
}
