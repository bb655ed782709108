//! The common misreading of the assignment's functions (the PDF's superscripts lost):
//!
//! - H(i) = i + 2i² + 17
//! - Φ(i, j) = i + j + 2j² + 25
//!
//! Shipped so that published results of other implementations can be reproduced and compared.
//! All arithmetic wraps modulo 2⁶⁴.

fn request(i: u64) -> u64 {
    i.wrapping_add(i.wrapping_mul(i).wrapping_mul(2))
        .wrapping_add(17)
}

fn virtual_node(i: u64, j: u64) -> u64 {
    i.wrapping_add(j)
        .wrapping_add(j.wrapping_mul(j).wrapping_mul(2))
        .wrapping_add(25)
}

lb_plugin_abi::export_plugin! {
    name: "spec-misread",
    description: "the common misreading H(i) = i + 2i² + 17, Φ(i, j) = i + j + 2j² + 25",
    request: request,
    virtual_node: virtual_node,
}
