//! `lb-balance`: the load balancer's balancing, as pure data and pure functions.
//!
//! The crate map, each file depending only on the ones listed before it:
//!
//! - [`hash`]: the hash trait `H`/`Φ` ([`RingHash`]) and the compiled-in functions;
//!   [`plugin`] loads other hash functions from shared libraries (the crate's only `unsafe`).
//! - `balancer.rs`: the choice, as plain data: [`Algorithm`], [`Balancer`] (an algorithm with
//!   its parameters), the ring's [`RingParams`] and [`Probing`].
//! - `error.rs`: [`PlaceError`], the one error of placement (also named [`RingError`]), and
//!   [`is_prime`] its messages need.
//! - `table.rs`: [`Placement`], the immutable slot → member table every algorithm fills and
//!   every request is looked up in, with its fallback order ([`Placement::next_member`]) stored
//!   as data the algorithm chose; the rules on ids and slots every table obeys.
//! - [`algorithm`]: the dispatch ([`Balancer::place`], [`Balancer::place_from`], the capacity
//!   rules, build costs) and the algorithms, each filling the owners (+ marks) and choosing its
//!   fallback: [`ring`], the assignment's ring (`M` slots, `K` virtual nodes, linear or
//!   quadratic probing); [`maglev`], Maglev hashing (permutation preference lists, round-robin
//!   fill; `M` prime); [`rendezvous`], rendezvous (highest random weight) hashing, one winner per
//!   slot.
//! - [`compare`]: how two tables differ (owners by server id, the share of slots that moved)
//!   and the whole transfer a change makes ([`compare::plan`]), for the tests, the example, the
//!   analysis and plans.
//!
//! Every algorithm also takes a weight per replica ([`Balancer::place_weighted`], 1 to
//! [`MAX_WEIGHT`]): a replica of weight `w` serves about `w/Σw` of the slots.
//!
//! No file imports one that imports it back (`scripts/check-layers.py` checks it).
//!
//! Every algorithm builds the same kind of table (docs/ALGORITHMS.md compares them), so the
//! algorithm never changes what a request costs.
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
//!
//! // The same replicas with Maglev over M = 7 slots (the table docs/ALGORITHMS.md fills by
//! // hand): H(3) = 32 ≡ 4 (mod 7), and slot 4 is server 2's.
//! let maglev = Balancer::Maglev { slots: 7 }
//!     .place(Arc::new(SpecHash), &[1, 2, 3])
//!     .unwrap();
//! assert_eq!(maglev.slot_of(3), 4);
//! assert_eq!(maglev.server_ids()[maglev.lookup(3).unwrap()], 2);
//! ```

pub mod algorithm;
mod balancer;
pub mod compare;
mod error;
pub mod hash;
#[allow(unsafe_code)] // loading a shared library and calling into it
pub mod plugin;
mod table;

pub use algorithm::{maglev, rendezvous, ring, MAX_SCALE};
pub use balancer::{Algorithm, Balancer, Probing, RingParams};
pub use error::{is_prime, PlaceError, RingError, MAX_WEIGHT};
pub use hash::RingHash;
pub use table::Placement;
