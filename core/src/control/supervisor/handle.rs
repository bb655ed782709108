//! [`Handle`]: how a supervisor refers to a running replica (a process id, a container, a Swarm
//! task) or, for a backend by address, its configured `HOST:PORT`. The controller keeps one per
//! replica beside the [`crate::state::Backend`] readers see; the shared state layer only sees
//! its JSON description ([`Handle::describe`]).

/// How the supervisor refers to a running replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Handle {
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
    pub(crate) fn is_supervised(&self) -> bool {
        !matches!(self, Handle::Address(_))
    }

    /// The configured `HOST:PORT` of a backend by address.
    pub(crate) fn address(&self) -> Option<&str> {
        match self {
            Handle::Address(address) => Some(address),
            Handle::Pid(_) | Handle::ContainerId(_) | Handle::SwarmTask { .. } => None,
        }
    }

    /// What `/_lb/status` shows as the replica's `handle` (e.g. `{"pid": 12}`).
    pub(crate) fn describe(&self) -> lb_views::status::Handle {
        let mut view = lb_views::status::Handle::default();
        match self {
            Handle::Pid(pid) => view.pid = Some(*pid),
            Handle::ContainerId(id) => view.container_id = Some(id.clone()),
            Handle::Address(address) => view.address = Some(address.clone()),
            Handle::SwarmTask {
                service,
                task,
                container_id,
            } => {
                view.swarm_task = Some(lb_views::status::SwarmTask {
                    service: service.clone(),
                    task: task.clone(),
                    container_id: container_id.clone(),
                })
            }
        }
        view
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

    fn json(handle: &Handle) -> serde_json::Value {
        serde_json::to_value(handle.describe()).unwrap()
    }

    /// `/_lb/status`'s `handle` keeps the shape tests, scripts and the analysis read.
    #[test]
    fn a_handle_is_described_as_before() {
        assert_eq!(json(&Handle::Pid(7)), serde_json::json!({"pid": 7}));
        assert_eq!(
            json(&Handle::Address("a:1".into())),
            serde_json::json!({"address": "a:1"})
        );
        let task = Handle::SwarmTask {
            service: "s".into(),
            task: "t".into(),
            container_id: "c".into(),
        };
        assert_eq!(
            json(&task),
            serde_json::json!({"swarm_task": {"service": "s", "task": "t", "container_id": "c"}})
        );
        assert!(!Handle::Address("a:1".into()).is_supervised() && Handle::Pid(1).is_supervised());
    }
}
