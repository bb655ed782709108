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
//! - [`key`]: the `[ring] key` rule; [`own`]: whether an address is one of `lb`'s listeners.

mod check;
pub mod key;
mod load;
mod names;
pub mod own;
mod plugins;
mod problem;
mod rules;
mod sections;

pub use load::{
    read_text, ConfigError, Loaded, Source, DEFAULTS_PATH, DEFAULT_PATH, EMBEDDED, MAX_CONFIG_BYTES,
};
pub use names::{
    check_address, check_hostname, check_instance, AddressError, HostnameError, MAX_ADDRESS_LEN,
    MAX_HOSTNAME_LEN,
};
pub use problem::{Problem, MAX_PROBLEMS, MAX_PROBLEM_LEN};
pub use sections::{
    AccessFormat, AccessTarget, AddressMode, AdminSection, Config, HealthSection, LimitsSection,
    LogSection, PluginsSection, ProxySection, ReplicaEntry, RingSection, SupervisorKind,
    SupervisorSection, MAX_SLOTS,
};

#[cfg(test)]
mod tests;
