//! The keyed check value that binds a `struct iommu_flb_handle` to the
//! writer that handed it out: SipHash-2-4 (Aumasson and Bernstein, 2012)
//! over the handle's kind and address, keyed by a secret each
//! `iommu_flb_writer_start()` derives afresh.
//!
//! What it is for: a handle copied from another writer, kept from an
//! earlier start of the same `struct iommu_flb_writer`, or edited (its
//! address moved to another record, its kind changed) does not verify, so
//! the writer never maps or reads what such a handle names. Its 64 bits
//! make a chance match negligible (2^-64 per handle). What it is not: a
//! defence against code that reads the writer's private state and computes
//! check values itself; kernel code that does that can write any memory
//! anyway.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::PhysAddr;

/// A writer's secret: SipHash's 128-bit key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key([u64; 2]);

impl Key {
    /// A fresh key for a writer whose state is at `this`, with its root at
    /// `root` and its allocator's `ctx`: from a process-wide counter (so no
    /// two starts share a key), those addresses, and the address of a stack
    /// slot (which varies with the caller's stack), mixed by SipHash under
    /// two fixed keys.
    pub(super) fn derive(this: usize, root: PhysAddr, ctx: usize) -> Key {
        static STARTS: AtomicU64 = AtomicU64::new(1);
        // Relaxed: only uniqueness matters, which fetch_add gives.
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let local = 0u8;
        let stack = core::ptr::addr_of!(local).addr();
        let word = |a: usize| u64::try_from(a).unwrap_or(u64::MAX);
        let seed = [n, word(this), root.get(), word(ctx), word(stack)];
        Key([siphash24(DERIVE[0], &seed), siphash24(DERIVE[1], &seed)])
    }

    /// The check value of a handle of kind `kind` (an `enum
    /// iommu_flb_chain` value) at `phys`.
    pub(super) fn check(&self, kind: u32, phys: PhysAddr) -> u64 {
        siphash24(self.0, &[u64::from(kind), phys.get()])
    }
}

/// The fixed keys `Key::derive` mixes its inputs with (the first 32 bytes
/// of the fractional part of pi, as SipHash's own constants are nothing-up-
/// my-sleeve numbers).
const DERIVE: [[u64; 2]; 2] = [
    [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344],
    [0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89],
];

/// One SipRound.
fn round(v: &mut [u64; 4]) {
    let [mut v0, mut v1, mut v2, mut v3] = *v;
    v0 = v0.wrapping_add(v1);
    v1 = v1.rotate_left(13) ^ v0;
    v0 = v0.rotate_left(32);
    v2 = v2.wrapping_add(v3);
    v3 = v3.rotate_left(16) ^ v2;
    v0 = v0.wrapping_add(v3);
    v3 = v3.rotate_left(21) ^ v0;
    v2 = v2.wrapping_add(v1);
    v1 = v1.rotate_left(17) ^ v2;
    v2 = v2.rotate_left(32);
    *v = [v0, v1, v2, v3];
}

/// SipHash-2-4 of the message whose bytes are `words` in little-endian
/// order (so its length is a multiple of 8 and the last block holds only
/// the length byte).
fn siphash24(key: [u64; 2], words: &[u64]) -> u64 {
    let [k0, k1] = key;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut absorb = |m: u64| {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    };
    for &m in words {
        absorb(m);
    }
    // The length in bytes, modulo 256, in the last block's top byte; the
    // messages here are a few words long.
    let len = u64::try_from(words.len()).unwrap_or(0).wrapping_mul(8) & 0xff;
    absorb(len << 56);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference key 00 01 .. 0f.
    const K: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    #[test]
    fn siphash24_matches_the_reference_vectors() {
        // The reference implementation's vectors.h: the messages 00 01 ..
        // (n - 1) of 0, 8 and 16 bytes under the key 00 01 .. 0f, its
        // output bytes read little-endian.
        assert_eq!(siphash24(K, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(
            siphash24(K, &[0x0706_0504_0302_0100]),
            0x93f5_f579_9a93_2462
        );
        assert_eq!(
            siphash24(K, &[0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]),
            0x3f2a_cc7f_57c2_9bdb
        );
    }

    #[test]
    #[allow(deprecated)] // core's SipHasher: SipHash-2-4, kept for comparison.
    fn siphash24_agrees_with_core() {
        use core::hash::{Hasher, SipHasher};
        for words in [&[][..], &[1], &[u64::MAX, 0, 42], &[3, 1, 4, 1, 5]] {
            let mut h = SipHasher::new_with_keys(K[0], K[1]);
            for w in words {
                h.write(&w.to_le_bytes());
            }
            assert_eq!(siphash24(K, words), h.finish(), "{words:?}");
        }
    }

    #[test]
    fn check_values_differ_by_kind_address_and_key() {
        let k = Key(K);
        let p = PhysAddr::new(0x1000_0010);
        let c = k.check(2, p);
        assert_ne!(c, k.check(3, p));
        assert_ne!(c, k.check(2, PhysAddr::new(0x1000_0010 + 64)));
        assert_ne!(c, Key([K[0] ^ 1, K[1]]).check(2, p));
        let a = Key::derive(0x1000, p, 0);
        let b = Key::derive(0x1000, p, 0);
        assert_ne!(a, b, "every start gets its own key");
    }
}
