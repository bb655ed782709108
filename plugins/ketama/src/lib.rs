//! Ketama-style placement (libketama, as used by memcached clients): MD5 of a text key, first 8
//! digest bytes read little-endian.
//!
//! - H(r) = md5("r")[0..8] — the decimal request id
//! - Φ(i, j) = md5("server-i-j")[0..8]
//!
//! Slower than the others (one MD5 per request) but the classic, well-distributed reference.

use md5::{Digest, Md5};

fn md5_u64(text: &str) -> u64 {
    let digest = Md5::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

fn request(r: u64) -> u64 {
    md5_u64(&r.to_string())
}

fn virtual_node(i: u64, j: u64) -> u64 {
    md5_u64(&format!("server-{i}-{j}"))
}

lb_plugin_abi::export_plugin! {
    name: "ketama",
    description: "ketama-style MD5: H(r) = md5(\"r\")[0..8], Φ(i, j) = md5(\"server-i-j\")[0..8]",
    request: request,
    virtual_node: virtual_node,
}
