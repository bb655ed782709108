//! Hash functions for the consistent-hashing ring.
//!
//! A ring needs two functions: `H(r)` maps a request id to a position and `Φ(i, j)` maps virtual
//! node `j` of server `i` to a position. Both return a raw `u64`; the ring reduces the result
//! modulo its slot count `M` (see [`crate::Placement`]). Every algorithm uses `H`; only the ring
//! uses `Φ` — Maglev and rendezvous place a replica by [`splitmix64`] of its id.
//!
//! The compiled-in functions are listed in [`BUILTIN_HASHES`] and resolved with [`builtin`].
//! [`request_id_from_header`] turns an `X-Request-Id` header value into the `u64` request id
//! that is fed to `H`.

use std::fmt::Debug;
use std::sync::Arc;

/// The two hash functions a ring uses: H for requests, Φ for virtual nodes. The ring takes results mod M.
pub trait RingHash: Send + Sync + Debug {
    /// Short name shown in status/config (e.g. "spec").
    fn name(&self) -> &str;
    /// H(r).
    fn request(&self, request_id: u64) -> u64;
    /// Φ(i, j). Fallible because a plugin's Φ may fail (panic); a ring is never built from a
    /// failed Φ.
    fn virtual_node(&self, server_id: u64, replica: u64) -> Result<u64, HashError>;
}

/// A hash function failed to produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash {hash:?} failed for Φ({server_id}, {replica}): {reason}")]
pub struct HashError {
    /// The hash's name.
    pub hash: String,
    /// `i`.
    pub server_id: u64,
    /// `j`.
    pub replica: u64,
    /// What went wrong.
    pub reason: String,
}

/// The assignment's functions (wrapping u64).
///
/// * `H(r) = r² + 2r + 17`
/// * `Φ(i, j) = i² + j² + 2j + 25`
///
/// All arithmetic wraps modulo 2⁶⁴, so no input panics. `H` is exact for `r ≤ 2³² − 2`
/// (`H(2³² − 1) = 2⁶⁴ + 16` is the first value that wraps) and `Φ` for `i, j < 2³¹`; beyond
/// that the results are the exact values reduced mod 2⁶⁴.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpecHash;

impl RingHash for SpecHash {
    fn name(&self) -> &str {
        "spec"
    }

    #[inline]
    fn request(&self, request_id: u64) -> u64 {
        let r = request_id;
        r.wrapping_mul(r)
            .wrapping_add(r.wrapping_mul(2))
            .wrapping_add(17)
    }

    #[inline]
    fn virtual_node(&self, server_id: u64, replica: u64) -> Result<u64, HashError> {
        let (i, j) = (server_id, replica);
        Ok(i.wrapping_mul(i)
            .wrapping_add(j.wrapping_mul(j))
            .wrapping_add(j.wrapping_mul(2))
            .wrapping_add(25))
    }
}

/// Names of the hash functions compiled in (["spec"]).
pub const BUILTIN_HASHES: &[&str] = &["spec"];

/// Look up a compiled-in hash by name.
///
/// Names are matched exactly (case-sensitive) against [`BUILTIN_HASHES`]; unknown names give `None`.
pub fn builtin(name: &str) -> Option<Arc<dyn RingHash>> {
    match name {
        "spec" => Some(Arc::new(SpecHash)),
        _ => None,
    }
}

/// splitmix64's increment γ = ⌊2⁶⁴ / φ⌋ (the golden ratio), an odd constant.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function (Stafford's "Mix13"), a bijection on `u64`:
///
/// ```text
/// z ← (z ⊕ (z ≫ 30)) · 0xbf58476d1ce4e5b9
/// z ← (z ⊕ (z ≫ 27)) · 0x94d049bb133111eb
/// z ← z ⊕ (z ≫ 31)                                  (all mod 2⁶⁴)
/// ```
///
/// Being a bijection, distinct inputs always give distinct outputs.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `k`-th output (`k ≥ 1`) of a splitmix64 generator seeded with `seed`:
/// `mix64(seed + k·γ)` (mod 2⁶⁴). Seeded with 0 the first outputs are `0xe220a8397b1dcdaf`,
/// `0x6e789e6aa1b965f4`, `0x06c45d188009454f` (the published reference values).
///
/// Maglev and rendezvous derive everything about a replica from this mix of its server id alone
/// (never from a hash plugin's Φ), so a replica's placement depends only on its id:
/// Maglev's `h1(i) = splitmix64(i, 1)`, `h2(i) = splitmix64(i, 2)`; rendezvous's weight of
/// replica `i` for slot `s` is `splitmix64(splitmix64(i, 1), s + 1)`.
#[inline]
pub const fn splitmix64(seed: u64, k: u64) -> u64 {
    mix64(seed.wrapping_add(k.wrapping_mul(GOLDEN_GAMMA)))
}

/// Turn an `X-Request-Id` header value into a request id.
///
/// * If the value, after trimming leading and trailing ASCII whitespace, is a non-empty run of
///   ASCII decimal digits (no sign, leading zeros allowed) whose value fits in a `u64`, that
///   number is the request id (`b" 42 "` → `42`).
/// * Otherwise (empty, signs, other characters, or overflow) the id is the 64-bit FNV-1a hash of
///   the **raw, untrimmed** bytes: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`,
///   for each byte `h = (h ^ byte) * prime` (wrapping).
///
/// Never panics and never allocates.
pub fn request_id_from_header(value: &[u8]) -> u64 {
    parse_decimal_u64(value.trim_ascii()).unwrap_or_else(|| fnv1a_64(value))
}

/// FNV-1a offset basis (64-bit).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV prime (64-bit).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Parse a non-empty string of ASCII digits as a `u64`; `None` on any other byte or on overflow.
fn parse_decimal_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_request_hash_small_values() {
        let h = SpecHash;
        // H(r) = r² + 2r + 17
        assert_eq!(h.request(0), 17); // 0 + 0 + 17
        assert_eq!(h.request(3), 32); // 9 + 6 + 17
        assert_eq!(h.request(5), 52); // 25 + 10 + 17
        assert_eq!(h.request(10), 137); // 100 + 20 + 17
        assert_eq!(h.request(100_000), 10_000_200_017); // 10¹⁰ + 2·10⁵ + 17
    }

    #[test]
    fn spec_virtual_node_hash_small_values() {
        let h = SpecHash;
        // Φ(i, j) = i² + j² + 2j + 25
        assert_eq!(h.virtual_node(1, 0).unwrap(), 26); // 1 + 0 + 0 + 25
        assert_eq!(h.virtual_node(1, 8).unwrap(), 106); // 1 + 64 + 16 + 25
        assert_eq!(h.virtual_node(2, 0).unwrap(), 29); // 4 + 0 + 0 + 25
        assert_eq!(h.virtual_node(3, 1).unwrap(), 37); // 9 + 1 + 2 + 25
        assert_eq!(h.virtual_node(2, 8).unwrap(), 109); // 4 + 64 + 16 + 25
    }

    #[test]
    fn spec_hash_wraps_instead_of_panicking_at_u64_max() {
        let h = SpecHash;
        // u64::MAX ≡ −1 (mod 2⁶⁴): H(−1) = 1 − 2 + 17 = 16.
        assert_eq!(h.request(u64::MAX), 16);
        // Φ(−1, −1) = 1 + 1 − 2 + 25 = 25.
        assert_eq!(h.virtual_node(u64::MAX, u64::MAX).unwrap(), 25);
        // Φ(−1, 0) = 1 + 25 = 26; Φ(0, −1) = 1 − 2 + 25 = 24.
        assert_eq!(h.virtual_node(u64::MAX, 0).unwrap(), 26);
        assert_eq!(h.virtual_node(0, u64::MAX).unwrap(), 24);
        // H(2³²) = 2⁶⁴ + 2³³ + 17 ≡ 2³³ + 17 (mod 2⁶⁴).
        assert_eq!(h.request(1 << 32), (1 << 33) + 17);
        // H(2³² − 1) is still exact: (2³² − 1)² + 2(2³² − 1) + 17 = 2⁶⁴ − 2³³ + 1 + 2³³ − 2 + 17
        // = 2⁶⁴ + 16 ≡ 16 — the first wrap happens here, exactly at the documented edge.
        assert_eq!(h.request((1 << 32) - 1), 16);
    }

    #[test]
    fn builtin_lookup() {
        let spec = builtin("spec").expect("spec is built in");
        assert_eq!(spec.name(), "spec");
        assert_eq!(spec.request(3), 32);
        assert!(builtin("Spec").is_none());
        assert!(builtin("").is_none());
        assert!(builtin("md5").is_none());
        for name in BUILTIN_HASHES {
            let h = builtin(name).expect("every listed name resolves");
            assert_eq!(h.name(), *name);
        }
        assert!(BUILTIN_HASHES.contains(&"spec"));
    }

    #[test]
    fn splitmix64_reference_values() {
        // Vigna's splitmix64.c seeded with 0: the first three outputs.
        assert_eq!(splitmix64(0, 1), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0, 2), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(0, 3), 0x06c4_5d18_8009_454f);
        // The k-th output is the mix of seed + k·γ.
        assert_eq!(
            splitmix64(7, 3),
            mix64(GOLDEN_GAMMA.wrapping_mul(3).wrapping_add(7))
        );
        assert_eq!(mix64(0), 0);
        // Server ids 1..=3 (the values docs/ALGORITHMS.md uses).
        assert_eq!(splitmix64(1, 1), 0x910a_2dec_8902_5cc1);
        assert_eq!(splitmix64(1, 2), 0xbeeb_8da1_658e_ec67);
        assert_eq!(splitmix64(2, 1), 0x9758_35de_1c97_56ce);
        assert_eq!(splitmix64(3, 1), 0x1d0b_14e4_db01_8fed);
    }

    #[test]
    fn fnv1a_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn header_decimal_values_are_the_id() {
        assert_eq!(request_id_from_header(b"0"), 0);
        assert_eq!(request_id_from_header(b"42"), 42);
        assert_eq!(request_id_from_header(b"0042"), 42);
        assert_eq!(request_id_from_header(b"  42\t\r\n"), 42);
        assert_eq!(request_id_from_header(b"18446744073709551615"), u64::MAX);
    }

    #[test]
    fn header_non_decimal_values_are_hashed_raw() {
        // Published vector: the empty value hashes to the offset basis.
        assert_eq!(request_id_from_header(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(request_id_from_header(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(request_id_from_header(b"foobar"), 0x8594_4171_f739_67e8);
        // Everything else falls back to FNV-1a of the untrimmed bytes.
        for raw in [
            &b"   "[..],
            b"18446744073709551616", // u64::MAX + 1 overflows
            b"99999999999999999999999",
            b"+5",
            b"-5",
            b"4 2",
            b"0x10",
            b"12a",
            b" abc ",
            "\u{0663}".as_bytes(), // ARABIC-INDIC DIGIT THREE is not ASCII
        ] {
            assert_eq!(request_id_from_header(raw), fnv1a_64(raw), "{raw:?}");
        }
        // Raw, not trimmed: surrounding whitespace changes the hash of a non-numeric value.
        assert_ne!(request_id_from_header(b" a"), request_id_from_header(b"a"));
        // Hand-computed one-step FNV-1a of " " (0x20):
        // (0xcbf29ce484222325 ^ 0x20) * 0x100000001b3 = 0xcbf29ce484222305 * 0x100000001b3.
        assert_eq!(
            request_id_from_header(b" "),
            0xcbf2_9ce4_8422_2305u64.wrapping_mul(0x0000_0100_0000_01b3)
        );
    }

    #[test]
    fn spec_hash_is_object_safe_and_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Arc<dyn RingHash>>();
        let h: Arc<dyn RingHash> = Arc::new(SpecHash);
        assert!(format!("{h:?}").contains("SpecHash"));
    }
}
