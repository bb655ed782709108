//! The C ABI between `lb` and its hash-function plugins.
//!
//! A plugin is a shared library (`cdylib`) that exports one symbol, [`ENTRY_SYMBOL`]: a function
//! taking nothing and returning a pointer to a static [`PluginV1`] table. Only `#[repr(C)]` data
//! and `extern "C"` functions cross the boundary: no Rust types, no allocations changing hands,
//! and no panics — the functions report a panic as a status code instead.
//!
//! Writing a plugin takes two plain functions and one macro call:
//!
//! ```
//! fn h(r: u64) -> u64 { r.wrapping_mul(0x9e37_79b9_7f4a_7c15) }
//! fn phi(i: u64, j: u64) -> u64 { (i << 32 ^ j).wrapping_mul(0xff51_afd7_ed55_8ccd) }
//!
//! lb_plugin_abi::export_plugin! {
//!     name: "golden",
//!     description: "Fibonacci hashing: multiply by 2^64/φ",
//!     request: h,
//!     virtual_node: phi,
//! }
//! ```
//!
//! and in `Cargo.toml`: `[lib] crate-type = ["cdylib"]` with the package named
//! `lb-hash-<name>`, so the built file is `liblb_hash_<name>.so` (dashes become underscores),
//! which is where `lb` looks for the plugin called `<name>`.

// The ABI is raw pointers and `extern "C"` functions by nature: this crate is one of the few
// places `unsafe` is allowed (with the plugin loader in lb-balance).
#![allow(unsafe_code)]

use std::os::raw::c_char;
use std::panic::{catch_unwind, UnwindSafe};

/// The ABI version this crate describes. `lb` refuses a table with any other version.
pub const ABI_VERSION: u32 = 1;

/// The exported entry point: `extern "C" fn() -> *const PluginV1`.
pub const ENTRY_SYMBOL: &str = "lb_hash_plugin";

/// Status of a call: the value was written.
pub const STATUS_OK: u32 = 0;
/// Status of a call: the function panicked; nothing was written.
pub const STATUS_PANICKED: u32 = 1;

/// `H`: hash a request id into `*out`; returns a `STATUS_*` code.
pub type RequestFn = unsafe extern "C" fn(request_id: u64, out: *mut u64) -> u32;
/// `Φ`: hash virtual node `replica` of server `server_id` into `*out`; returns a `STATUS_*` code.
pub type VirtualNodeFn = unsafe extern "C" fn(server_id: u64, replica: u64, out: *mut u64) -> u32;
/// The signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginV1;

/// What a plugin exports. `abi_version` comes first in every version of the ABI, so a loader
/// can read it before trusting anything else.
#[repr(C)]
#[derive(Debug)]
pub struct PluginV1 {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// The plugin's name: NUL-terminated UTF-8, static.
    pub name: *const c_char,
    /// One line saying what the functions are: NUL-terminated UTF-8, static.
    pub description: *const c_char,
    /// `H`.
    pub hash_request: RequestFn,
    /// `Φ`.
    pub hash_virtual: VirtualNodeFn,
}

// SAFETY: the table is immutable static data: pointers to static strings and functions.
unsafe impl Sync for PluginV1 {}

/// Run `f`, write its value to `out` and return [`STATUS_OK`], or return [`STATUS_PANICKED`] if
/// it panicked. Used by [`export_plugin!`]; a panic never unwinds into `lb`.
///
/// # Safety
/// `out` must be valid for a write of one `u64`.
pub unsafe fn call(out: *mut u64, f: impl FnOnce() -> u64 + UnwindSafe) -> u32 {
    match catch_unwind(f) {
        Ok(value) => {
            // SAFETY: the caller guarantees `out` is writable.
            unsafe { out.write(value) };
            STATUS_OK
        }
        Err(_) => STATUS_PANICKED,
    }
}

/// Export a plugin from two plain Rust functions `fn(u64) -> u64` (H) and
/// `fn(u64, u64) -> u64` (Φ). Panics inside them are caught and reported to `lb`.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:literal,
        description: $description:literal,
        request: $request:path,
        virtual_node: $virtual_node:path $(,)?
    ) => {
        /// The plugin's entry point (see `lb_plugin_abi`).
        #[no_mangle]
        pub extern "C" fn lb_hash_plugin() -> *const $crate::PluginV1 {
            unsafe extern "C" fn hash_request(request_id: u64, out: *mut u64) -> u32 {
                // SAFETY: lb passes a valid pointer.
                unsafe { $crate::call(out, || $request(request_id)) }
            }
            unsafe extern "C" fn hash_virtual(server_id: u64, replica: u64, out: *mut u64) -> u32 {
                // SAFETY: lb passes a valid pointer.
                unsafe { $crate::call(out, || $virtual_node(server_id, replica)) }
            }
            static TABLE: $crate::PluginV1 = $crate::PluginV1 {
                abi_version: $crate::ABI_VERSION,
                name: concat!($name, "\0").as_ptr().cast(),
                description: concat!($description, "\0").as_ptr().cast(),
                hash_request,
                hash_virtual,
            };
            &TABLE
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn h(r: u64) -> u64 {
        r + 1
    }
    fn phi(i: u64, j: u64) -> u64 {
        if j == 99 {
            panic!("no virtual node 99");
        }
        i * 100 + j
    }

    export_plugin! {
        name: "test",
        description: "adds one",
        request: h,
        virtual_node: phi,
    }

    #[test]
    fn the_exported_table_works_and_contains_panics() {
        let table = unsafe { &*lb_hash_plugin() };
        assert_eq!(table.abi_version, ABI_VERSION);
        assert_eq!(unsafe { CStr::from_ptr(table.name) }.to_str(), Ok("test"));
        assert_eq!(
            unsafe { CStr::from_ptr(table.description) }.to_str(),
            Ok("adds one")
        );
        let mut out = 0;
        assert_eq!(unsafe { (table.hash_request)(41, &mut out) }, STATUS_OK);
        assert_eq!(out, 42);
        assert_eq!(unsafe { (table.hash_virtual)(3, 4, &mut out) }, STATUS_OK);
        assert_eq!(out, 304);
        out = 7;
        assert_eq!(
            unsafe { (table.hash_virtual)(3, 99, &mut out) },
            STATUS_PANICKED
        );
        assert_eq!(out, 7, "nothing is written on a panic");
    }
}
