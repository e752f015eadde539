//! A page allocator over one flat buffer that hands pages out in scrambled
//! physical order, so the image's chains jump around memory as they do in a
//! kernel that allocated its pages over time.

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::writer::PageAlloc;
use iommu_flb_abi::{FlatMemory, PhysAddr};

/// The benchmarks' page size: the x86-64 kernel's.
pub const PS: PageSize = PageSize::Size4K;
/// [`PS`] in bytes.
const PAGE_SIZE: usize = PS.bytes();
/// [`PS`] as a `u64`.
const PAGE: u64 = PS.bytes_u64();

/// `pages` pages at `base..base + pages * 4096`, zeroed, handed out in a
/// pseudo-random permutation chosen by a seed.
#[derive(Debug)]
pub struct ScrambledPool {
    base: PhysAddr,
    bytes: Vec<u8>,
    /// Page indices in the order they are handed out.
    order: Vec<u32>,
    next: usize,
    /// Whether each page is handed out (and not given back).
    taken: Vec<bool>,
}

impl ScrambledPool {
    /// A pool of `pages` zeroed pages starting at `base` (page-aligned).
    pub fn new(base: PhysAddr, pages: usize, seed: u64) -> ScrambledPool {
        assert!(base.is_page_aligned(PS) && !base.is_null());
        let n = u32::try_from(pages).expect("fewer than 2^32 pages");
        let mut order: Vec<u32> = (0..n).collect();
        let mut state = seed | 1;
        // Fisher-Yates with xorshift64*.
        for i in (1..order.len()).rev() {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let j = usize::try_from(r % (u64::try_from(i).expect("fits") + 1)).expect("fits");
            order.swap(i, j);
        }
        ScrambledPool {
            base,
            bytes: vec![0; pages * PAGE_SIZE],
            order,
            next: 0,
            taken: vec![false; pages],
        }
    }

    /// How many pages were handed out (given-back ones included).
    pub fn handed_out(&self) -> usize {
        self.next
    }

    /// The whole buffer as the physical memory the reader and the C walk read.
    pub fn memory(&self) -> FlatMemory<'_> {
        FlatMemory::new(self.base, &self.bytes)
    }

    /// The physical address of the first byte.
    pub fn base(&self) -> PhysAddr {
        self.base
    }

    /// The buffer.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn index(&self, phys: PhysAddr) -> Option<usize> {
        if !phys.is_page_aligned(PS) {
            return None;
        }
        let off = phys.checked_offset_from(self.base)?;
        let i = usize::try_from(off / PAGE).ok()?;
        (i < self.taken.len()).then_some(i)
    }
}

impl PageAlloc for ScrambledPool {
    fn page_size(&self) -> PageSize {
        PS
    }

    fn alloc_page(&mut self) -> Option<PhysAddr> {
        let i = *self.order.get(self.next)?;
        self.next += 1;
        let i = usize::try_from(i).ok()?;
        self.taken[i] = true;
        self.base.checked_add(u64::try_from(i).ok()? * PAGE)
    }

    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
        self.pages_mut([phys]).ok().map(|[p]| p)
    }

    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr> {
        // (page index, position asked for), sorted by page, to split the
        // buffer front to back.
        let mut want = Vec::with_capacity(K);
        for (pos, p) in phys.iter().enumerate() {
            match self.index(*p) {
                Some(i) if self.taken[i] && !want.iter().any(|&(j, _)| j == i) => {
                    want.push((i, pos))
                }
                _ => return Err(*p),
            }
        }
        want.sort_unstable();
        let mut found = Vec::with_capacity(K);
        let mut rest = &mut self.bytes[..];
        let mut next = 0;
        for (i, pos) in want {
            let tail = std::mem::take(&mut rest)
                .split_at_mut((i - next) * PAGE_SIZE)
                .1;
            let (page, after) = tail.split_at_mut(PAGE_SIZE);
            found.push((pos, page));
            rest = after;
            next = i + 1;
        }
        found.sort_unstable_by_key(|&(pos, _)| pos);
        let pages: Vec<_> = found.into_iter().map(|(_, p)| p).collect();
        Ok(pages
            .try_into()
            .unwrap_or_else(|_| unreachable!("one page per address")))
    }

    fn free_page(&mut self, phys: PhysAddr) {
        if let Some(i) = self.index(phys) {
            self.taken[i] = false;
            let start = i * PAGE_SIZE;
            self.bytes[start..start + PAGE_SIZE].fill(0);
        }
    }
}
