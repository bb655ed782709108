//! The assignment's analysis (SPEC §4): experiments A-1..A-6 run against a live `lb`, with charts,
//! raw data and a Markdown report.
//!
//! The binary (`src/main.rs`) parses the command line ([`cli`]), starts its own load balancer
//! ([`lb_process`]) or uses the one given with `--lb`, runs the chosen experiments
//! ([`experiments`]) through an HTTP client ([`client`], [`lb_api`], [`load`]), and writes
//! charts ([`charts`]), CSV/JSON data ([`data`]) and `report.md` ([`report`]).

#![warn(missing_docs)]

pub mod charts;
pub mod cli;
pub mod client;
pub mod config_file;
pub mod data;
pub mod error;
pub mod experiments;
pub mod figures;
pub mod lb_api;
pub mod lb_process;
pub mod load;
pub mod progress;
pub mod report;
pub mod stats;

pub use error::{Error, Result};
