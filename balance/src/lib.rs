//! `lb-balance`: the load balancer's balancing, as pure data and pure functions.
//!
//! - [`hash`]: the hash trait `H`/`Φ` ([`RingHash`]) and the compiled-in functions;
//!   [`plugin`] loads other hash functions from shared libraries (the crate's only `unsafe`).
//! - [`Balancer`]: an algorithm with its parameters; [`Balancer::place`] turns sorted replica ids
//!   and a hash into an immutable [`Placement`], the slot → member table.
//! - [`ring`]: the assignment's ring (`M` slots, `K` virtual nodes, linear or quadratic probing).
//!
//! No I/O but the plugin loader, no async runtime. A request costs one hash, one modulo and one
//! table load:
//!
//! ```
//! use std::sync::Arc;
//! use lb_balance::{hash::SpecHash, ring::RingParams, Balancer};
//!
//! let placement = Balancer::Ring(RingParams::default())
//!     .place(Arc::new(SpecHash), &[1, 2, 3])
//!     .unwrap();
//! // H(3) = 3² + 2·3 + 17 = 32; slot 32 is served by server 2's virtual node at 32.
//! assert_eq!(placement.slot_of(3), 32);
//! let member = placement.lookup(3).unwrap();
//! assert_eq!(placement.server_ids()[member], 2);
//! ```

pub mod hash;
mod placement;
#[allow(unsafe_code)] // loading a shared library and calling into it
pub mod plugin;
pub mod ring;

pub use hash::RingHash;
pub use placement::{Balancer, Placement};
pub use ring::{RingError, RingParams};
