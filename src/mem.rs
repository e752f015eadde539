//! Memory access: how the reader reaches the pages of an image.
//!
//! The reader never dereferences a physical address itself. It asks a
//! [`Memory`] for one whole page at a time, and only for pages it has proven
//! it needs (a chain head, a `next_array_phys`, the page a record pointer
//! names). In the kernel, the implementation checks that the page was
//! preserved by KHO and returns its `phys_to_virt` mapping; in tools and
//! tests, [`FlatMemory`] (a physical dump in a byte slice) or, with the
//! `alloc` feature, [`PageMap`] (a sparse map of pages) serve.

use crate::PhysAddr;
use crate::abi::PAGE_SIZE;

/// A source of whole, page-aligned 4 KiB pages by physical address.
pub trait Memory {
    /// The page at `phys`, or `None` if it cannot be read (not preserved,
    /// outside the dump, or `phys` not page-aligned).
    ///
    /// Implementations must return the same bytes for the same address for as
    /// long as the borrow lasts; they must not panic.
    fn page(&self, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]>;
}

impl<M: Memory + ?Sized> Memory for &M {
    fn page(&self, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]> {
        (**self).page(phys)
    }
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
    fn page(&self, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]> {
        if !phys.is_page_aligned() {
            return None;
        }
        let start = usize::try_from(phys.checked_offset_from(self.base)?).ok()?;
        let end = start.checked_add(PAGE_SIZE)?;
        self.bytes.get(start..end)?.try_into().ok()
    }
}

#[cfg(feature = "alloc")]
pub use page_map::PageMap;

#[cfg(feature = "alloc")]
mod page_map {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;

    use super::Memory;
    use crate::PhysAddr;
    use crate::abi::PAGE_SIZE;

    /// A sparse set of 4 KiB pages at chosen physical addresses (which may be
    /// scattered). Readable through [`Memory`]; the writer allocates from it.
    #[derive(Clone, Debug, Default)]
    pub struct PageMap {
        pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
    }

    impl PageMap {
        /// An empty map.
        pub fn new() -> Self {
            PageMap::default()
        }

        /// Adds a zeroed page at `phys`. Returns `false` (and changes nothing)
        /// if `phys` is not page-aligned or already present.
        pub fn insert_zeroed(&mut self, phys: PhysAddr) -> bool {
            if !phys.is_page_aligned() || self.pages.contains_key(&phys.get()) {
                return false;
            }
            self.pages.insert(phys.get(), Box::new([0; PAGE_SIZE]));
            true
        }

        /// Removes the page at `phys`, returning its bytes.
        pub fn remove(&mut self, phys: PhysAddr) -> Option<Box<[u8; PAGE_SIZE]>> {
            self.pages.remove(&phys.get())
        }

        /// Whether a page is present at `phys`.
        pub fn contains(&self, phys: PhysAddr) -> bool {
            self.pages.contains_key(&phys.get())
        }

        /// Mutable access to the page at `phys`.
        pub fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8; PAGE_SIZE]> {
            self.pages.get_mut(&phys.get()).map(|b| &mut **b)
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
        pub fn iter(&self) -> impl Iterator<Item = (PhysAddr, &[u8; PAGE_SIZE])> + '_ {
            self.pages.iter().map(|(a, p)| (PhysAddr::new(*a), &**p))
        }
    }

    impl Memory for PageMap {
        fn page(&self, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]> {
            self.pages.get(&phys.get()).map(|b| &**b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_memory_serves_only_whole_aligned_pages_inside_the_dump() {
        let bytes = [7u8; 2 * PAGE_SIZE + 100];
        let m = FlatMemory::new(PhysAddr::new(0x10_0000), &bytes);
        assert!(m.page(PhysAddr::new(0x10_0000)).is_some());
        assert!(m.page(PhysAddr::new(0x10_1000)).is_some());
        assert!(
            m.page(PhysAddr::new(0x10_2000)).is_none(),
            "only 100 bytes of the third page"
        );
        assert!(m.page(PhysAddr::new(0x0f_f000)).is_none(), "below base");
        assert!(m.page(PhysAddr::new(0x10_0008)).is_none(), "unaligned");
        assert!(m.page(PhysAddr::new(!0xfff)).is_none());
    }

    #[test]
    fn flat_memory_with_unaligned_base_maps_pages_by_offset() {
        let mut bytes = [0u8; 2 * PAGE_SIZE];
        bytes[0x800] = 0xaa;
        let m = FlatMemory::new(PhysAddr::new(0x800), &bytes);
        let p = m.page(PhysAddr::new(0x1000)).expect("page at 0x1000");
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
        assert_eq!(m.page(PhysAddr::new(0x5000)).expect("present")[3], 9);
        assert_eq!(m.len(), 1);
    }
}
