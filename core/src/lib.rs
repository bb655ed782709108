//! `lb`: a consistent-hashing HTTP load balancer.
//!
//! - [`ring`] and [`hash`] — the assignment's ring, pure data and functions; [`plugin`] loads
//!   other hash functions from shared libraries.
//! - [`config`] — `lb.toml`; [`watch`] follows it, [`persist`] writes replica changes back.
//! - [`controller`] — the one writer of the replica set; publishes [`state::Snapshot`]s.
//! - [`supervisor`] — runs replicas (local processes or Docker containers).
//! - [`health`] — heartbeats.
//! - [`proxy`], [`api`], [`admin`], [`body`], [`hop`] — the HTTP front; [`workers`] runs it, one event
//!   loop per thread; [`upstream`] is its batching HTTP/1.1 client to the replicas.

pub mod admin;
pub mod api;
pub mod body;
pub mod config;
pub mod controller;
pub mod hash;
pub mod health;
pub mod hop;
pub mod persist;
pub mod plugin;
pub mod proxy;
pub mod ring;
pub mod state;
pub mod supervisor;
pub mod upstream;
pub mod watch;
pub mod workers;
