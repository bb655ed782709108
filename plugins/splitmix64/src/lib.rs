//! SplitMix64 (Steele, Lea, Flood 2014), the seeding generator of xoshiro:
//!
//! - H(r) = splitmix64(r)
//! - Φ(i, j) = splitmix64((i << 32) ⊕ j)
//!
//! where splitmix64(x): z = x + 0x9e3779b97f4a7c15; z = (z ⊕ (z ≫ 30)) × 0xbf58476d1ce4e5b9;
//! z = (z ⊕ (z ≫ 27)) × 0x94d049bb133111eb; z ⊕ (z ≫ 31) (additions and products wrap).

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn request(r: u64) -> u64 {
    splitmix64(r)
}

fn virtual_node(i: u64, j: u64) -> u64 {
    splitmix64((i << 32) ^ j)
}

lb_plugin_abi::export_plugin! {
    name: "splitmix64",
    description: "SplitMix64: H(r) = splitmix64(r), Φ(i, j) = splitmix64((i << 32) ^ j)",
    request: request,
    virtual_node: virtual_node,
}
