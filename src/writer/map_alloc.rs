//! In-memory allocators for tools and tests: [`MapAlloc`] (feature `alloc`),
//! backed by a [`PageMap`], and [`FailingAlloc`], which fails chosen steps.

#[cfg(feature = "alloc")]
pub use map::{MapAlloc, PageOrder};

use super::PageAlloc;
use crate::PhysAddr;
use crate::abi::PageSize;

/// Wraps an allocator and makes `alloc_page` fail whenever `should_fail`
/// returns `true` for the allocation's step number (0 for the first call,
/// counting every call, failed or not), and, with
/// [`failing_maps`](Self::failing_maps), page mappings (`page_mut` and
/// `pages_mut`, one step per call, counted apart from allocations) too.
/// Needs no heap.
///
/// ```
/// # #[cfg(feature = "alloc")] {
/// use iommu_flb_abi::writer::{FailingAlloc, MapAlloc, Writer, WriteError, PagePurpose};
/// use iommu_flb_abi::PhysAddr;
///
/// // The root is step 0; the IOMMU chain's first page is step 1.
/// let mut pages = FailingAlloc::new(MapAlloc::sequential(PhysAddr::new(0x10_0000)), |s| s == 1);
/// assert!(Writer::start(&mut pages).is_err());
/// assert!(pages.inner().map().is_empty(), "the root was given back");
///
/// // Mappings fail apart from allocations: here the fifth, the root's
/// // (after the four pages' checks that they are zeroed).
/// let mut pages = FailingAlloc::new(MapAlloc::sequential(PhysAddr::new(0x10_0000)), |_| false)
///     .failing_maps(|s| s == 4);
/// let root = PhysAddr::new(0x10_0000);
/// assert_eq!(Writer::start(&mut pages).err(), Some(WriteError::PageUnavailable { phys: root }));
/// assert!(pages.inner().map().is_empty(), "every page was given back");
/// # }
/// ```
#[derive(Debug)]
pub struct FailingAlloc<A, F, G = fn(u64) -> bool> {
    inner: A,
    should_fail: F,
    should_fail_map: G,
    steps: u64,
    failures: u64,
    map_steps: u64,
    map_failures: u64,
}

/// The mapping plan of a [`FailingAlloc::new`]: never fail.
fn never(_step: u64) -> bool {
    false
}

impl<A: PageAlloc, F: FnMut(u64) -> bool> FailingAlloc<A, F> {
    /// Wraps `inner`; `alloc_page` fails on the steps `should_fail` picks,
    /// page mappings never.
    pub fn new(inner: A, should_fail: F) -> Self {
        FailingAlloc {
            inner,
            should_fail,
            should_fail_map: never,
            steps: 0,
            failures: 0,
            map_steps: 0,
            map_failures: 0,
        }
    }
}

impl<A: PageAlloc, F: FnMut(u64) -> bool, G: FnMut(u64) -> bool> FailingAlloc<A, F, G> {
    /// The same allocator, whose page mappings (`page_mut`, `pages_mut`)
    /// also fail, on the mapping steps `should_fail` picks (0 for the first
    /// mapping from now on).
    pub fn failing_maps<H: FnMut(u64) -> bool>(self, should_fail: H) -> FailingAlloc<A, F, H> {
        FailingAlloc {
            inner: self.inner,
            should_fail: self.should_fail,
            should_fail_map: should_fail,
            steps: self.steps,
            failures: self.failures,
            map_steps: 0,
            map_failures: 0,
        }
    }

    /// How many times `alloc_page` was called.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many of those calls were made to fail.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// How many times `page_mut` or `pages_mut` was called.
    pub fn map_steps(&self) -> u64 {
        self.map_steps
    }

    /// How many of those calls were made to fail.
    pub fn map_failures(&self) -> u64 {
        self.map_failures
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The wrapped allocator, mutably.
    pub fn inner_mut(&mut self) -> &mut A {
        &mut self.inner
    }

    /// Unwraps the allocator.
    pub fn into_inner(self) -> A {
        self.inner
    }

    /// Counts one mapping step; whether it is to fail.
    fn map_fails(&mut self) -> bool {
        let step = self.map_steps;
        self.map_steps = self.map_steps.saturating_add(1);
        let fail = (self.should_fail_map)(step);
        if fail {
            self.map_failures = self.map_failures.saturating_add(1);
        }
        fail
    }
}

/// A failure plan for [`FailingAlloc`]: each step fails with probability
/// `1/one_in`, decided by a xorshift generator seeded with `seed` (the same
/// seed fails the same steps). `one_in` 0 never fails.
pub fn random_failures(seed: u64, one_in: u64) -> impl FnMut(u64) -> bool {
    let mut state = seed | 1;
    move |_step| {
        state = xorshift64(state);
        state.checked_rem(one_in) == Some(0)
    }
}

/// One step of Marsaglia's xorshift64; never returns 0 for a non-zero input.
pub(crate) const fn xorshift64(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

impl<A: PageAlloc, F: FnMut(u64) -> bool, G: FnMut(u64) -> bool> PageAlloc
    for FailingAlloc<A, F, G>
{
    fn page_size(&self) -> PageSize {
        self.inner.page_size()
    }

    fn alloc_page(&mut self) -> Option<PhysAddr> {
        let step = self.steps;
        self.steps = self.steps.saturating_add(1);
        if (self.should_fail)(step) {
            self.failures = self.failures.saturating_add(1);
            return None;
        }
        self.inner.alloc_page()
    }

    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
        if self.map_fails() {
            return None;
        }
        self.inner.page_mut(phys)
    }

    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr> {
        if self.map_fails() {
            return Err(phys.first().copied().unwrap_or(PhysAddr::NULL));
        }
        self.inner.pages_mut(phys)
    }

    fn free_page(&mut self, phys: PhysAddr) {
        self.inner.free_page(phys)
    }
}

#[cfg(feature = "alloc")]
mod map {
    use alloc::vec::Vec;

    use super::xorshift64;
    use crate::abi::PageSize;
    use crate::writer::PageAlloc;
    use crate::{Memory, PageMap, PhysAddr};

    /// How [`MapAlloc`] picks the address of the next page.
    #[derive(Clone, Debug)]
    pub enum PageOrder {
        /// `base`, `base + page size`, ... upwards.
        Sequential {
            /// The next address to hand out.
            next: PhysAddr,
        },
        /// The caller's addresses, in the caller's order; then none.
        List {
            /// Addresses not yet handed out, the next one last.
            remaining: Vec<PhysAddr>,
        },
        /// Pseudo-random page-aligned addresses below 2^48, from a seed.
        Scattered {
            /// Generator state.
            state: u64,
        },
    }

    /// A page allocator over a [`PageMap`], recording every page it hands
    /// out and takes back (in order), so tests can check that a writer gave
    /// back every page and in which order. It is also the [`Memory`] the
    /// reader reads the image from. Its pages are 4 KiB unless
    /// [`with_page_size`](Self::with_page_size) says otherwise.
    #[derive(Clone, Debug)]
    pub struct MapAlloc {
        map: PageMap,
        order: PageOrder,
        allocated: Vec<PhysAddr>,
        freed: Vec<PhysAddr>,
    }

    impl MapAlloc {
        /// Hands out `base`, `base + page size`, ... (`base` is rounded down
        /// to a page).
        pub fn sequential(base: PhysAddr) -> Self {
            Self::with_order(PageOrder::Sequential {
                next: base.page_base(PageSize::Size4K),
            })
        }

        /// Hands out exactly these addresses, in this order, then no more.
        /// Unaligned, zero or repeated addresses are handed out as given
        /// (to test that the writer refuses them).
        pub fn from_list(addrs: impl IntoIterator<Item = PhysAddr>) -> Self {
            let mut remaining: Vec<PhysAddr> = addrs.into_iter().collect();
            remaining.reverse();
            Self::with_order(PageOrder::List { remaining })
        }

        /// Hands out pseudo-random, scattered page addresses chosen by `seed`.
        pub fn scattered(seed: u64) -> Self {
            Self::with_order(PageOrder::Scattered { state: seed | 1 })
        }

        /// The same allocator handing out pages of `page_size` (a
        /// sequential base is rounded down to it). Call it before the first
        /// allocation: it starts an empty map.
        #[must_use]
        pub fn with_page_size(mut self, page_size: PageSize) -> Self {
            self.map = PageMap::with_page_size(page_size);
            if let PageOrder::Sequential { next } = &mut self.order {
                *next = next.page_base(page_size);
            }
            self
        }

        fn with_order(order: PageOrder) -> Self {
            MapAlloc {
                map: PageMap::new(),
                order,
                allocated: Vec::new(),
                freed: Vec::new(),
            }
        }

        /// The pages currently handed out.
        pub fn map(&self) -> &PageMap {
            &self.map
        }

        /// Gives up the allocator, keeping its pages.
        pub fn into_map(self) -> PageMap {
            self.map
        }

        /// Every address handed out, in order.
        pub fn allocated(&self) -> &[PhysAddr] {
            &self.allocated
        }

        /// Every address taken back, in order.
        pub fn freed(&self) -> &[PhysAddr] {
            &self.freed
        }

        fn next_addr(&mut self) -> Option<PhysAddr> {
            let ps = self.map.page_size();
            match &mut self.order {
                PageOrder::Sequential { next } => {
                    let a = *next;
                    *next = a.checked_add(ps.bytes_u64())?;
                    Some(a)
                }
                PageOrder::List { remaining } => remaining.pop(),
                PageOrder::Scattered { state } => loop {
                    *state = xorshift64(*state);
                    let a = PhysAddr::new(*state >> 16).page_base(ps);
                    if !a.is_null() && !self.map.contains(a) {
                        return Some(a);
                    }
                },
            }
        }
    }

    impl PageAlloc for MapAlloc {
        fn page_size(&self) -> PageSize {
            self.map.page_size()
        }

        fn alloc_page(&mut self) -> Option<PhysAddr> {
            let a = self.next_addr()?;
            // A list may hold bad addresses on purpose; they are handed out
            // without a backing page (or with the existing one).
            self.map.insert_zeroed(a);
            self.allocated.push(a);
            Some(a)
        }

        fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
            self.map.page_mut(phys)
        }

        fn pages_mut<const K: usize>(
            &mut self,
            phys: [PhysAddr; K],
        ) -> Result<[&mut [u8]; K], PhysAddr> {
            self.map.pages_mut(phys)
        }

        fn free_page(&mut self, phys: PhysAddr) {
            self.map.remove(phys);
            self.freed.push(phys);
        }
    }

    impl Memory for MapAlloc {
        fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
            self.map.page(phys, size)
        }
    }
}
