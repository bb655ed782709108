//! `lb.toml`: parsing, defaults and validation.
//!
//! Every error names the line and column it comes from, whether it is a TOML syntax error, an
//! unknown field or a rule of the load balancer (duplicate hostname, K·N > M, …).
//!
//! - `sections.rs`: the file's sections as types ([`Config`] and the rest), with their defaults.
//! - `load.rs`: reading a file, parsing and validating a text, the runtime file created from
//!   the shipped default; [`ConfigError`].
//! - `check.rs`: every problem of a text (syntax, unknown keys with suggestions, types), each a
//!   [`Problem`] with its line and column (`problem.rs`).
//! - `rules.rs`: the load balancer's own rules; `plugins.rs`: resolving `[ring] hash`.
//! - `names.rs`: hostname, address and instance validators (also used by the API and Swarm).
//! - [`backend_tls`]: the rustls settings of a backend by address with `tls = true`.
//! - [`acme`]: `[tls.acme]`, automatic certificates (its rules and resolved settings).
//! - [`tls`]: the `[tls]` section; `certs.rs`: reading and checking its certificate files
//!   ([`LoadedCert`], `CertError`), for `lb check`, the start and live reloads.
//! - [`key`]: the `[ring] key` rule; [`own`]: whether an address is one of `lb`'s listeners.

pub(crate) mod acme;
pub(crate) mod backend_tls;
mod certs;
mod check;
pub(crate) mod key;
mod load;
mod names;
pub(crate) mod own;
mod plugins;
pub(crate) mod problem;
mod rules;
mod sections;
pub(crate) mod tls;

pub(crate) use backend_tls::{BackendTls, Protocol};
pub(crate) use certs::{load_all, unix_now, LoadedCert};
pub(crate) use load::{read_text, ConfigError, Loaded, Source, EMBEDDED};
pub use load::{DEFAULTS_PATH, DEFAULT_PATH};
pub(crate) use names::{check_address, check_hostname, check_instance};
pub(crate) use sections::{
    AccessFormat, AccessTarget, AddressMode, Config, FrontSettings, HealthCheck, HealthSection,
    ProxySection, ReplicaEntry, SupervisorKind, SupervisorSection,
};

#[cfg(test)]
mod tests;
