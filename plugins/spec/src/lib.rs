//! The assignment's functions as a plugin (identical to lb's built-in `spec`):
//!
//! - H(i) = i² + 2i + 17
//! - Φ(i, j) = i² + j² + 2j + 25
//!
//! All arithmetic wraps modulo 2⁶⁴.

fn request(i: u64) -> u64 {
    i.wrapping_mul(i)
        .wrapping_add(i.wrapping_mul(2))
        .wrapping_add(17)
}

fn virtual_node(i: u64, j: u64) -> u64 {
    i.wrapping_mul(i)
        .wrapping_add(j.wrapping_mul(j))
        .wrapping_add(j.wrapping_mul(2))
        .wrapping_add(25)
}

lb_plugin_abi::export_plugin! {
    name: "spec",
    description: "the assignment's H(i) = i² + 2i + 17, Φ(i, j) = i² + j² + 2j + 25",
    request: request,
    virtual_node: virtual_node,
}
