//! 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3):
//!
//! - H(r) = FNV-1a(r as 8 little-endian bytes)
//! - Φ(i, j) = FNV-1a(i as 8 little-endian bytes ‖ j as 8 little-endian bytes)
//!
//! Popular because it is tiny; its low bits mix poorly for small integers, which is exactly what
//! `mod M` keeps — see this plugin's README for the measured balance.

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn request(r: u64) -> u64 {
    fnv1a(&r.to_le_bytes())
}

fn virtual_node(i: u64, j: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&i.to_le_bytes());
    bytes[8..].copy_from_slice(&j.to_le_bytes());
    fnv1a(&bytes)
}

lb_plugin_abi::export_plugin! {
    name: "fnv1a",
    description: "64-bit FNV-1a of the little-endian bytes of r, and of i then j",
    request: request,
    virtual_node: virtual_node,
}
