//! Memory access: how the reader reaches the pages of an image.
//!
//! The reader never dereferences a physical address itself. It asks a
//! [`Memory`] for one whole page of the image's page size at a time, and only for pages it has proven
//! it needs (a chain head, a `next_array_phys`, the page a record pointer
//! names). In the kernel, the implementation checks that the page was
//! preserved by KHO and returns its `phys_to_virt` mapping; in tools and
//! tests, [`FlatMemory`] (a physical dump in a byte slice) or, with the
//! `alloc` feature, [`PageMap`] (a sparse map of pages) serve.

use crate::PhysAddr;
use crate::abi::PageSize;

/// A source of whole, aligned pages by physical address.
pub trait Memory {
    /// The page of size `size` at `phys` (a multiple of `size`), or `None`
    /// if it cannot be read (not part of the handover, outside the dump, or
    /// `phys` not aligned).
    ///
    /// A returned slice must be exactly `size.bytes()` long (the reader
    /// treats any other length as unreadable). Implementations must return
    /// the same bytes for the same address for as long as the borrow lasts;
    /// they must not panic.
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]>;
}

impl<M: Memory + ?Sized> Memory for &M {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        (**self).page(phys, size)
    }
}

/// The page of `size` at `phys` through `mem`, only if `phys` is aligned and
/// the memory returned exactly one page: the one way the reader reads pages.
#[inline]
pub(crate) fn read_page<M: Memory + ?Sized>(
    mem: &M,
    phys: PhysAddr,
    size: PageSize,
) -> Option<&[u8]> {
    if !phys.is_page_aligned(size) {
        return None;
    }
    mem.page(phys, size).filter(|p| p.len() == size.bytes())
}

/// The cache line of the machines the reader runs on (x86-64, arm64): the
/// step at which [`touch`] reads.
const CACHE_LINE: usize = 64;

/// Reads one byte of each cache line of `bytes` and discards them: the
/// loads are issued back to back, as many in flight as the core's miss
/// buffers hold, so the lines of a page read soon arrive together, not one
/// after the other as the hardware prefetcher, which does not cross a
/// page, would fetch them. (A 4 KiB page is 64 loads; a 64 KiB one 1024,
/// a case not measured.) A load the
/// compiler must keep, not a prefetch instruction: those need `unsafe`
/// (or are unstable), and this changes no result, only when lines arrive.
#[inline(always)]
pub(crate) fn touch(bytes: &[u8]) {
    let folded = bytes
        .chunks_exact(CACHE_LINE)
        .fold(0u8, |a, line| a ^ line.first().copied().unwrap_or(0));
    core::hint::black_box(folded);
}

/// Whether every byte of `bytes` (a whole page) is zero: compared against
/// zeros a block at a time, a `memcmp` per 256 bytes. (Miri runs `memcmp`
/// natively; a loop over the bytes it interprets one at a time, which made
/// taking a page over half a second of every writer test there.)
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; 256] = [0; 256];
    bytes
        .chunks(ZEROS.len())
        .all(|c| ZEROS.get(..c.len()) == Some(c))
}

/// A flat physical dump: byte `i` of `bytes` is physical address `base + i`
/// (as `/dev/mem` or QEMU `pmemsave` produce).
#[derive(Clone, Copy, Debug)]
pub struct FlatMemory<'a> {
    base: PhysAddr,
    bytes: &'a [u8],
}

impl<'a> FlatMemory<'a> {
    /// A dump whose first byte is at physical address `base`.
    pub const fn new(base: PhysAddr, bytes: &'a [u8]) -> Self {
        FlatMemory { base, bytes }
    }

    /// The physical address of the first byte.
    pub const fn base(&self) -> PhysAddr {
        self.base
    }

    /// The dump's bytes.
    pub const fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl Memory for FlatMemory<'_> {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if !phys.is_page_aligned(size) {
            return None;
        }
        let start = usize::try_from(phys.checked_offset_from(self.base)?).ok()?;
        let end = start.checked_add(size.bytes())?;
        self.bytes.get(start..end)
    }
}

#[cfg(feature = "alloc")]
pub use page_map::PageMap;

#[cfg(feature = "alloc")]
mod page_map {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::Memory;
    use crate::PhysAddr;
    use crate::abi::PageSize;

    /// A sparse set of pages of one page size at chosen physical addresses
    /// (which may be scattered). Readable through [`Memory`]; the writer
    /// allocates from it.
    #[derive(Clone, Debug, Default)]
    pub struct PageMap {
        page_size: PageSize,
        pages: BTreeMap<u64, Box<[u8]>>,
    }

    impl PageMap {
        /// An empty map of 4 KiB pages.
        pub fn new() -> Self {
            PageMap::default()
        }

        /// An empty map of pages of size `page_size`.
        pub fn with_page_size(page_size: PageSize) -> Self {
            PageMap {
                page_size,
                pages: BTreeMap::new(),
            }
        }

        /// The size of every page in the map.
        pub fn page_size(&self) -> PageSize {
            self.page_size
        }

        /// Adds a zeroed page at `phys`. Returns `false` (and changes nothing)
        /// if `phys` is not aligned to the page size or already present.
        pub fn insert_zeroed(&mut self, phys: PhysAddr) -> bool {
            if !phys.is_page_aligned(self.page_size) || self.pages.contains_key(&phys.get()) {
                return false;
            }
            let page = vec![0u8; self.page_size.bytes()].into_boxed_slice();
            self.pages.insert(phys.get(), page);
            true
        }

        /// Removes the page at `phys`, returning its bytes.
        pub fn remove(&mut self, phys: PhysAddr) -> Option<Box<[u8]>> {
            self.pages.remove(&phys.get())
        }

        /// Whether a page is present at `phys`.
        pub fn contains(&self, phys: PhysAddr) -> bool {
            self.pages.contains_key(&phys.get())
        }

        /// Mutable access to the page at `phys` (`page_size().bytes()` long).
        pub fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
            self.pages.get_mut(&phys.get()).map(|b| &mut **b)
        }

        /// Mutable access to the pages at `phys`, all at once, in the order
        /// given. `Err` names the first address that is not present or
        /// repeats an earlier one.
        ///
        /// Costs O(K log n) for K ≤ 2; a third or later page is searched
        /// for from the highest one downwards (the writer's third page is
        /// a chain tail, close to the fresh page it links).
        ///
        /// # Errors
        ///
        /// The refused address, as above.
        pub fn pages_mut<const K: usize>(
            &mut self,
            phys: [PhysAddr; K],
        ) -> Result<[&mut [u8]; K], PhysAddr> {
            for (i, p) in phys.iter().enumerate() {
                if !self.contains(*p) || phys.iter().take(i).any(|q| q == p) {
                    return Err(*p);
                }
            }
            // Every address is present and distinct: the search below finds
            // them all, so its failure paths are unreachable.
            let first = phys.first().copied().unwrap_or(PhysAddr::NULL);
            let mut want: [(u64, usize); K] = phys.map(|p| (p.get(), 0));
            for (i, w) in want.iter_mut().enumerate() {
                w.1 = i;
            }
            want.sort_unstable();
            let mut found: Vec<(usize, &mut [u8])> = Vec::with_capacity(K);
            if let (Some(lo), Some(hi)) = (want.first(), want.last()) {
                let mut range = self.pages.range_mut(lo.0..=hi.0);
                if let Some((_, page)) = range.next() {
                    found.push((lo.1, &mut **page));
                }
                for w in want.iter().skip(1).rev() {
                    for (k, page) in range.by_ref().rev() {
                        if *k == w.0 {
                            found.push((w.1, &mut **page));
                            break;
                        }
                    }
                }
            }
            found.sort_unstable_by_key(|(i, _)| *i);
            let pages: Vec<&mut [u8]> = found.into_iter().map(|(_, p)| p).collect();
            pages.try_into().map_err(|_| first)
        }

        /// Number of pages present.
        pub fn len(&self) -> usize {
            self.pages.len()
        }

        /// Whether no page is present.
        pub fn is_empty(&self) -> bool {
            self.pages.is_empty()
        }

        /// Every page, in ascending physical order.
        pub fn iter(&self) -> impl Iterator<Item = (PhysAddr, &[u8])> + '_ {
            self.pages.iter().map(|(a, p)| (PhysAddr::new(*a), &**p))
        }
    }

    impl Memory for PageMap {
        /// The page at `phys`, if present and `size` is the map's page size.
        fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
            if size != self.page_size {
                return None;
            }
            self.pages.get(&phys.get()).map(|b| &**b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K4: PageSize = PageSize::Size4K;

    #[test]
    fn all_zero_sees_a_set_byte_anywhere_including_a_partial_last_block() {
        // 4 KiB and a length that leaves a partial last block (0 and 1
        // also: no block, and a partial one only).
        for len in [0usize, 1, 255, 256, 4096, 1000] {
            let mut buf = [0u8; 4096];
            let page = &mut buf[..len];
            assert!(all_zero(page), "{len} zero bytes");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    page[at] = 0x80;
                    assert!(!all_zero(page), "byte {at} of {len} set");
                    page[at] = 0;
                }
            }
        }
    }

    #[test]
    fn flat_memory_serves_only_whole_aligned_pages_inside_the_dump() {
        let bytes = [7u8; 2 * 4096 + 100];
        let m = FlatMemory::new(PhysAddr::new(0x10_0000), &bytes);
        assert!(m.page(PhysAddr::new(0x10_0000), K4).is_some());
        assert!(m.page(PhysAddr::new(0x10_1000), K4).is_some());
        assert!(
            m.page(PhysAddr::new(0x10_2000), K4).is_none(),
            "only 100 bytes of the third page"
        );
        assert!(m.page(PhysAddr::new(0x0f_f000), K4).is_none(), "below base");
        assert!(m.page(PhysAddr::new(0x10_0008), K4).is_none(), "unaligned");
        assert!(m.page(PhysAddr::new(!0xfff), K4).is_none());
        assert!(
            m.page(PhysAddr::new(0x10_0000), PageSize::Size16K)
                .is_none(),
            "a 16 KiB page does not fit the 8 KiB dump"
        );
    }

    #[test]
    fn flat_memory_serves_pages_of_the_size_asked_for() {
        let bytes = [1u8; 0x2_0000];
        let m = FlatMemory::new(PhysAddr::new(0), &bytes);
        for ps in PageSize::ALL {
            let p = m
                .page(PhysAddr::new(0x1_0000), ps)
                .expect("inside the dump");
            assert_eq!(p.len(), ps.bytes());
        }
        assert!(
            m.page(PhysAddr::new(0x1000), PageSize::Size16K).is_none(),
            "unaligned"
        );
    }

    #[test]
    fn read_page_refuses_a_memory_that_returns_the_wrong_length() {
        struct Short([u8; 100]);
        impl Memory for Short {
            fn page(&self, _: PhysAddr, _: PageSize) -> Option<&[u8]> {
                Some(&self.0)
            }
        }
        assert!(read_page(&Short([0; 100]), PhysAddr::new(0x1000), K4).is_none());
    }

    #[test]
    fn flat_memory_with_unaligned_base_maps_pages_by_offset() {
        let mut bytes = [0u8; 2 * 4096];
        bytes[0x800] = 0xaa;
        let m = FlatMemory::new(PhysAddr::new(0x800), &bytes);
        let p = m.page(PhysAddr::new(0x1000), K4).expect("page at 0x1000");
        assert_eq!(p[0], 0xaa);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn page_map_refuses_unaligned_and_duplicate_pages() {
        let mut m = PageMap::new();
        assert!(m.insert_zeroed(PhysAddr::new(0x5000)));
        assert!(!m.insert_zeroed(PhysAddr::new(0x5000)));
        assert!(!m.insert_zeroed(PhysAddr::new(0x5001)));
        m.page_mut(PhysAddr::new(0x5000)).expect("present")[3] = 9;
        assert_eq!(m.page(PhysAddr::new(0x5000), K4).expect("present")[3], 9);
        assert_eq!(m.len(), 1);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn page_map_holds_pages_of_its_own_size_only() {
        let mut m = PageMap::with_page_size(PageSize::Size64K);
        assert!(
            !m.insert_zeroed(PhysAddr::new(0x1000)),
            "not 64 KiB-aligned"
        );
        assert!(m.insert_zeroed(PhysAddr::new(0x1_0000)));
        let at = PhysAddr::new(0x1_0000);
        assert_eq!(m.page(at, PageSize::Size64K).map(<[u8]>::len), Some(65536));
        assert!(m.page(at, K4).is_none(), "asked for the wrong size");
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn page_map_maps_several_pages_at_once_in_the_order_asked_or_none() {
        let mut m = PageMap::new();
        let at = [0x9000, 0x2000, 0x5000, 0x7000].map(PhysAddr::new);
        for (i, p) in at.iter().enumerate() {
            assert!(m.insert_zeroed(*p));
            m.page_mut(*p).expect("present")[0] = u8::try_from(i).expect("small");
        }
        let [a, b, c] = m.pages_mut([at[0], at[1], at[3]]).expect("all present");
        assert_eq!((a[0], b[0], c[0]), (0, 1, 3));
        (a[1], b[1], c[1]) = (10, 11, 13);
        assert_eq!(m.page(at[3], K4).expect("present")[1], 13);
        let [one] = m.pages_mut([at[2]]).expect("present");
        assert_eq!(one[0], 2);
        let missing = PhysAddr::new(0x3000);
        assert_eq!(m.pages_mut([at[1], missing]).err(), Some(missing));
        assert_eq!(m.pages_mut([at[1], at[2], at[1]]).err(), Some(at[1]));
        assert!(m.pages_mut([]).is_ok());
    }
}
