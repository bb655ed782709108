//! The JSON views `lb`, its replicas and the analysis exchange, declared once: `lb` (`core/src/api`)
//! and the replica (`server`) write them, the analysis (`analysis/src/lb_api.rs`) reads them.
//!
//! - [`reply`]: the assignment's `{"message": …, "status": …}` bodies — `/rep`, `/add`, `/rm`
//!   and their errors, the replica's `/home` (its `/heartbeat` answers an empty body).
//! - [`status`]: `GET /_lb/status`.
//! - [`ring`]: `GET /_lb/ring`.
//! - [`plan`]: `POST /_lb/plan` and `lb plan`.
//! - [`python`]: the byte format of Python's `json.dumps`, which the assignment's bodies use.
//!
//! Each view is generic over its string type `S`: the writer borrows (`&str`, `Cow<str>`: no
//! copy of what it shows), the reader owns (`String`, the default). Fields a reader may not get
//! from an older `lb` default when missing.

pub mod plan;
pub mod python;
pub mod reply;
pub mod ring;
pub mod status;

pub use plan::{Plan, PlanMove, PlanReplica};
pub use reply::{Outcome, Replicas, Reply};
pub use ring::{Member, RingTable};
pub use status::{
    BackendTlsInfo, CertificateInfo, ConfigInfo, Handle, Http2Info, Issue, ReplicaStatus, RingInfo,
    Status, SwarmTask, TlsInfo, Vacancy,
};
