//! The pages the reader asked for, kept for as long as the dump lives.
//!
//! [`Memory::page`](iommu_flb_abi::Memory::page) hands out references that
//! live as long as the borrow of the memory, so a page, once read, cannot be
//! dropped or moved while the dump lives. [`PageCache`] is an append-only
//! store that allows exactly that without `unsafe`: every page is a
//! `Box<[u8]>` that never moves once inserted, in a slot of a chunk that is
//! never reallocated. It holds the pages inserted into it and nothing else;
//! the loader inserts a page only when the reader asks for it.
//!
//! Cost per page: the page itself, one slot (8 bytes, and chunks are at
//! most twice the slots in use) and one index entry; [`PER_PAGE_OVERHEAD`]
//! bounds the last two.

use core::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

/// Bytes of bookkeeping per cached page, beyond the page itself (its slot,
/// its index entry, and the allocator's header on the page's allocation),
/// rounded up: the README's memory bound uses it.
pub const PER_PAGE_OVERHEAD: u64 = 128;

/// Number of chunks: chunk `k` holds `2^k` slots, so 48 chunks hold
/// 2^48 - 1 pages, more than any address space has.
const CHUNKS: usize = 48;

/// One slot per page, filled once.
type Chunk = Box<[OnceCell<Box<[u8]>>]>;

/// An append-only map from physical address to page.
pub struct PageCache {
    /// The slot of each page.
    index: RefCell<BTreeMap<u64, usize>>,
    /// Slot `i` is entry `i + 1 - 2^k` of chunk `k = ilog2(i + 1)`; a chunk
    /// is allocated when its first slot is used.
    chunks: [OnceCell<Chunk>; CHUNKS],
}

impl Default for PageCache {
    fn default() -> Self {
        PageCache {
            index: RefCell::new(BTreeMap::new()),
            chunks: core::array::from_fn(|_| OnceCell::new()),
        }
    }
}

/// The chunk of slot `slot`, the entry in it, and the chunk's length.
fn place(slot: usize) -> Option<(usize, usize, usize)> {
    let n = slot.checked_add(1)?;
    let k = n.ilog2();
    let len = 1usize.checked_shl(k)?;
    Some((usize::try_from(k).ok()?, n.checked_sub(len)?, len))
}

impl PageCache {
    /// The page cached for `phys`, if any.
    pub fn get(&self, phys: u64) -> Option<&[u8]> {
        let slot = *self.index.borrow().get(&phys)?;
        self.slot(slot)
    }

    fn slot(&self, slot: usize) -> Option<&[u8]> {
        let (k, i, _) = place(slot)?;
        self.chunks.get(k)?.get()?.get(i)?.get().map(|p| &**p)
    }

    /// Caches `page` for `phys` and returns it; if `phys` already has a
    /// page, that one is kept and returned and `page` is dropped. `None`
    /// only if the cache is full (2^48 - 1 pages).
    pub fn insert(&self, phys: u64, page: Box<[u8]>) -> Option<&[u8]> {
        let mut index = self.index.borrow_mut();
        if let Some(&slot) = index.get(&phys) {
            drop(index);
            return self.slot(slot);
        }
        // Slots are used in order and never freed: the next one is the
        // number of pages held.
        let slot = index.len();
        let (k, i, len) = place(slot)?;
        let chunk = self
            .chunks
            .get(k)?
            .get_or_init(|| (0..len).map(|_| OnceCell::new()).collect());
        let cell = chunk.get(i)?;
        cell.set(page).ok()?;
        index.insert(phys, slot);
        cell.get().map(|p| &**p)
    }

    /// How many pages are cached.
    pub fn len(&self) -> usize {
        self.index.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(tag: u8) -> Box<[u8]> {
        vec![tag; 16].into_boxed_slice()
    }

    #[test]
    fn slots_fill_chunks_in_order() {
        assert_eq!(place(0), Some((0, 0, 1)));
        assert_eq!(place(1), Some((1, 0, 2)));
        assert_eq!(place(2), Some((1, 1, 2)));
        assert_eq!(place(3), Some((2, 0, 4)));
        assert_eq!(place(6), Some((2, 3, 4)));
        assert_eq!(place(7), Some((3, 0, 8)));
    }

    #[test]
    fn pages_stay_where_they_were_while_more_are_inserted() {
        let tag = |a: u64| u8::try_from(a % 251).unwrap();
        let cache = PageCache::default();
        let first = cache.insert(0x1000, page(1)).unwrap();
        let first_ptr = first.as_ptr();
        for a in 2..1000u64 {
            assert_eq!(
                cache.insert(a * 0x1000, page(tag(a))),
                Some(&page(tag(a))[..])
            );
        }
        // `first` is still borrowed here: the store never moved it.
        assert_eq!(first, &page(1)[..]);
        assert_eq!(cache.get(0x1000).unwrap().as_ptr(), first_ptr);
        assert_eq!(cache.get(999 * 0x1000), Some(&page(tag(999))[..]));
        assert_eq!(cache.get(1000 * 0x1000), None);
        assert_eq!(cache.len(), 999);
    }

    #[test]
    fn a_page_inserted_twice_is_kept_once_with_its_first_bytes() {
        let cache = PageCache::default();
        cache.insert(0x2000, page(1));
        assert_eq!(cache.insert(0x2000, page(2)), Some(&page(1)[..]));
        assert_eq!(cache.len(), 1);
    }
}
