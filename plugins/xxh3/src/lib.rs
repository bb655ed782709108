//! XXH3, 64-bit, seed 0 (the xxHash family's current algorithm):
//!
//! - H(r) = XXH3_64(r as 8 little-endian bytes)
//! - Φ(i, j) = XXH3_64(i as 8 little-endian bytes ‖ j as 8 little-endian bytes)

use xxhash_rust::xxh3::xxh3_64;

fn request(r: u64) -> u64 {
    xxh3_64(&r.to_le_bytes())
}

fn virtual_node(i: u64, j: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8..].copy_from_slice(&j.to_le_bytes());
    xxh3_64(&bytes)
}

lb_plugin_abi::export_plugin! {
    name: "xxh3",
    description: "XXH3-64 of the little-endian bytes of r, and of i then j",
    request: request,
    virtual_node: virtual_node,
}
