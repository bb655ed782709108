//! MurmurHash3's 64-bit finalizer, `fmix64`, a bijection on u64 with full avalanche:
//!
//! - H(r) = fmix64(r)
//! - Φ(i, j) = fmix64((i << 32) ⊕ j)
//!
//! where fmix64(k) = k ⊕= k ≫ 33; k ×= 0xff51afd7ed558ccd; k ⊕= k ≫ 33; k ×= 0xc4ceb9fe1a85ec53;
//! k ⊕= k ≫ 33 (multiplications wrap).

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

fn request(r: u64) -> u64 {
    fmix64(r)
}

fn virtual_node(i: u64, j: u64) -> u64 {
    fmix64((i << 32) ^ j)
}

lb_plugin_abi::export_plugin! {
    name: "murmur3",
    description: "MurmurHash3 fmix64: H(r) = fmix64(r), Φ(i, j) = fmix64((i << 32) ^ j)",
    request: request,
    virtual_node: virtual_node,
}
