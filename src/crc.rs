//! CRC-32 (IEEE 802.3), as version 2's page checksums use it.
//!
//! The function is the caller's choice: the kernel passes its
//! arch-accelerated `crc32_le()` (wrapped to the zlib convention below),
//! userspace gets `crc32fast`. Every function takes and returns the
//! finished CRC in zlib's convention: `crc(crc(0, a), b) == crc(0, a ++ b)`,
//! so a page is summed in two calls around its `crc` field.

/// A CRC-32/IEEE function in zlib's convention: it continues the finished
/// CRC `crc` (0 to start) over `bytes` and returns the finished CRC. zlib's
/// `crc32(crc, buf, len)` is one; the kernel's is `~crc32_le(~crc, buf,
/// len)`.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(Imp);

#[derive(Clone, Copy, Debug)]
enum Imp {
    Plain(fn(u32, &[u8]) -> u32),
    /// A function and the context word it is called with (the C boundary
    /// keeps its callback there).
    Context(fn(usize, u32, &[u8]) -> u32, usize),
}

impl Crc32 {
    /// `crc32fast`'s implementation.
    pub const FAST: Crc32 = Crc32(Imp::Plain(crc32fast_update));

    /// The CRC function `f(crc, bytes)`.
    pub const fn new(f: fn(u32, &[u8]) -> u32) -> Crc32 {
        Crc32(Imp::Plain(f))
    }

    /// The CRC function `f(ctx, crc, bytes)`, called with `ctx` each time.
    pub const fn with_context(f: fn(usize, u32, &[u8]) -> u32, ctx: usize) -> Crc32 {
        Crc32(Imp::Context(f, ctx))
    }

    /// Continues the finished CRC `crc` over `bytes`.
    pub fn update(&self, crc: u32, bytes: &[u8]) -> u32 {
        match self.0 {
            Imp::Plain(f) => f(crc, bytes),
            Imp::Context(f, ctx) => f(ctx, crc, bytes),
        }
    }

    /// The CRC of `page` with the 4 bytes at `crc_at` left out: the bytes
    /// before them, then the bytes after them. `None` if the field does not
    /// fit in the page.
    pub fn page(&self, page: &[u8], crc_at: usize) -> Option<u32> {
        let before = page.get(..crc_at)?;
        let after = page.get(crc_at.checked_add(4)?..)?;
        Some(self.update(self.update(0, before), after))
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Crc32::FAST
    }
}

fn crc32fast_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(bytes);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_value_and_chains() {
        // The CRC-32/ISO-HDLC check value of "123456789".
        let c = Crc32::FAST;
        assert_eq!(c.update(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(c.update(c.update(0, b"1234"), b"56789"), 0xcbf4_3926);
        // A context word reaches the function.
        let ctx = Crc32::with_context(|k, crc, b| crc32fast_update(crc, b) ^ (k as u32), 1);
        assert_eq!(ctx.update(0, b"123456789"), 0xcbf4_3927);
    }

    #[test]
    fn page_leaves_out_exactly_the_crc_field() {
        let mut page = [7u8; 64];
        let a = Crc32::FAST.page(&page, 40).unwrap();
        page[40..44].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(Crc32::FAST.page(&page, 40), Some(a));
        page[44] ^= 1;
        assert_ne!(Crc32::FAST.page(&page, 40), Some(a));
        assert_eq!(Crc32::FAST.page(&page, 61), None);
    }
}
