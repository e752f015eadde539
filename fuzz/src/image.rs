//! Building images with the writer, finding their pages, corrupting them,
//! and flattening them into dumps.

use crate::{PAGE_SIZE, PS};
use core::mem::offset_of;

use iommu_flb_abi::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IommuDevMapSer, IommuDeviceSer, IommuDomainSer, IommuHwSer,
};
use iommu_flb_abi::writer::{MapAlloc, Writer};
use iommu_flb_abi::{Memory, PageMap, PhysAddr};

use crate::input::{Corruption, Op, PageOrder};
use crate::model::Model;

/// The allocator a [`PageOrder`] stands for. Page 0 would be refused by the
/// writer (it is the null address), so a sequential order starts at page 1
/// or above.
pub fn allocator(order: PageOrder) -> MapAlloc {
    match order {
        PageOrder::Sequential { base } => {
            MapAlloc::sequential(PhysAddr::new(u64::from(base.max(1)) << 12))
        }
        PageOrder::Scattered { seed } => MapAlloc::scattered(seed),
    }
}

/// A valid image: its pages, its root, and what it holds.
#[derive(Clone, Debug)]
pub struct Built {
    /// The pages.
    pub mem: PageMap,
    /// The root's address.
    pub root: PhysAddr,
    /// What the writer was asked to keep.
    pub model: Model,
}

/// Builds an image with the writer from `ops` (`Op::Check` does nothing
/// here). Panics if the writer disagrees with the model: that is a writer
/// bug.
pub fn build(order: PageOrder, ops: &[Op]) -> Built {
    let mut w = match Writer::start(allocator(order)) {
        Ok(w) => w,
        Err(e) => panic!("the writer cannot start: {e}"),
    };
    let mut model = Model::default();
    for op in ops {
        if let Err(e) = model.apply(&mut w, op) {
            panic!("writer disagrees with the model at {op:?}: {e}");
        }
    }
    let (root, alloc) = w.finish();
    Built {
        mem: alloc.into_map(),
        root,
        model,
    }
}

/// Bytes of the record of `chain` (0 IOMMU, 1 domain, 2 device).
pub fn record_size(chain: usize) -> u64 {
    [
        size_of::<IommuHwSer>(),
        size_of::<IommuDomainSer>(),
        size_of::<IommuDeviceSer>(),
    ][chain] as u64
}

fn read_u64(mem: &impl Memory, at: PhysAddr) -> Option<u64> {
    let page = mem.page(at.page_base(PS), PS)?;
    let off = at.page_offset(PS);
    let b = page.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The pages of an image, found by following its pointers (at most
/// `max_pages` per chain), and the `nr_objects` of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The root's page.
    pub root_page: PhysAddr,
    /// Each chain's pages with their counts, in order.
    pub chains: [Vec<(PhysAddr, u64)>; 3],
}

impl Layout {
    /// Walks the image at `root`. `None` if a pointer leads out of `mem`
    /// or a chain has more than `max_pages` pages.
    pub fn walk(mem: &impl Memory, root: PhysAddr, max_pages: usize) -> Option<Layout> {
        let mut chains: [Vec<(PhysAddr, u64)>; 3] = Default::default();
        for (c, pages) in chains.iter_mut().enumerate() {
            let mut p = PhysAddr::new(read_u64(mem, root.checked_add(8 * (c as u64 + 1))?)?);
            while !p.is_null() {
                if pages.len() >= max_pages {
                    return None;
                }
                let next = read_u64(mem, p)?;
                let nr = read_u64(mem, p.checked_add(8)?)?;
                pages.push((p, nr));
                p = PhysAddr::new(next);
            }
        }
        Some(Layout {
            root_page: root.page_base(PS),
            chains,
        })
    }

    /// Every page: the root's, then each chain's.
    pub fn pages(&self) -> Vec<PhysAddr> {
        let mut v = vec![self.root_page];
        for c in &self.chains {
            v.extend(c.iter().map(|(p, _)| *p));
        }
        v
    }

    /// The address of record `index` of `chain` (counting the slots in use
    /// page by page), if there is one.
    pub fn record(&self, chain: usize, index: usize) -> Option<PhysAddr> {
        let mut left = index as u64;
        for (p, nr) in &self.chains[chain] {
            if left < *nr {
                return p.checked_add(IOMMU_ARRAY_HDR_SIZE + left * record_size(chain));
            }
            left -= nr;
        }
        None
    }

    /// Records in use in `chain`.
    pub fn records(&self, chain: usize) -> usize {
        self.chains[chain].iter().map(|(_, nr)| *nr as usize).sum()
    }
}

fn put(mem: &mut PageMap, at: PhysAddr, bytes: &[u8]) {
    let off = at.page_offset(PS);
    if let Some(page) = mem.page_mut(at.page_base(PS))
        && let Some(dst) = page.get_mut(off..off + bytes.len())
    {
        dst.copy_from_slice(bytes);
    }
}

/// Applies `c` to the image laid out as `layout` (the layout before any
/// corruption: later corruptions name pages and records as they were).
pub fn corrupt(mem: &mut PageMap, layout: &Layout, c: &Corruption) {
    let pages = layout.pages();
    let page = |i: u8| pages[usize::from(i) % pages.len()];
    let at = |p: PhysAddr, off: u16, len: usize| {
        PhysAddr::new(p.get() + u64::from(off) % (PAGE_SIZE + 1 - len) as u64)
    };
    let record = |chain: u8, index: u16| {
        let chain = usize::from(chain) % 3;
        let n = layout.records(chain);
        (n > 0)
            .then(|| layout.record(chain, usize::from(index) % n))
            .flatten()
    };
    match *c {
        Corruption::FlipBit { page: p, byte, bit } => {
            let a = at(page(p), byte, 1);
            if let Some(pg) = mem.page_mut(a.page_base(PS)) {
                pg[a.page_offset(PS)] ^= 1 << (bit % 8);
            }
        }
        Corruption::SetU64 {
            page: p,
            offset,
            value,
        } => put(mem, at(page(p), offset, 8), &value.to_le_bytes()),
        Corruption::Redirect {
            page: p,
            offset,
            target,
            target_off,
        } => {
            let to = at(page(target), target_off, 1);
            put(mem, at(page(p), offset, 8), &to.get().to_le_bytes());
        }
        Corruption::Relink { from, head, to } => {
            let from = page(from);
            let holder = if from == layout.root_page {
                // The writer puts the root at the start of its page.
                PhysAddr::new(from.get() + 8 * (u64::from(head % 3) + 1))
            } else {
                from
            };
            put(mem, holder, &page(to).get().to_le_bytes());
        }
        Corruption::Retarget {
            device,
            iommu,
            chain,
            index,
        } => {
            if let (Some(d), Some(t)) = (record(2, device), record(chain, index)) {
                let map = offset_of!(IommuDeviceSer, domain_iommu_ser);
                let field = if iommu {
                    offset_of!(IommuDevMapSer, iommu_phys)
                } else {
                    offset_of!(IommuDevMapSer, domain_phys)
                };
                let at = PhysAddr::new(d.get() + (map + field) as u64);
                put(mem, at, &t.get().to_le_bytes());
            }
        }
        Corruption::SetCount { page: p, value } => {
            let p = page(p);
            if p != layout.root_page {
                put(
                    mem,
                    PhysAddr::new(p.get() + 8),
                    &u64::from(value).to_le_bytes(),
                );
            }
        }
        Corruption::SetHeader {
            chain,
            index,
            ref_count,
            flags,
        } => {
            if let Some(r) = record(chain, index) {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&ref_count.to_le_bytes());
                b[4..].copy_from_slice(&flags.to_le_bytes());
                put(mem, r, &b);
            }
        }
        Corruption::SwapPages { a, b } => {
            let (a, b) = (page(a), page(b));
            if let (Some(x), Some(y)) = (mem.remove(a), mem.remove(b)) {
                insert(mem, a, &y);
                insert(mem, b, &x);
            }
        }
        Corruption::CopyPage { from, to } => {
            if let Some(src) = mem.page(page(from), PS).map(<[u8]>::to_vec) {
                mem.remove(page(to));
                insert(mem, page(to), &src);
            }
        }
        Corruption::DropPage { page: p } => {
            mem.remove(page(p));
        }
    }
}

fn insert(mem: &mut PageMap, at: PhysAddr, bytes: &[u8]) {
    if mem.insert_zeroed(at)
        && let Some(p) = mem.page_mut(at)
    {
        p.copy_from_slice(bytes);
    }
}

/// The pages of `mem` as one flat dump from its lowest page to its highest
/// (gaps zero-filled), with the dump's base address; `None` if empty or if
/// the span is over `max_bytes`.
pub fn flatten(mem: &PageMap, max_bytes: usize) -> Option<(PhysAddr, Vec<u8>)> {
    let (lo, _) = mem.iter().next()?;
    let (hi, _) = mem.iter().last()?;
    let span = usize::try_from(hi.get() - lo.get()).ok()? + PAGE_SIZE;
    if span > max_bytes {
        return None;
    }
    let mut dump = vec![0u8; span];
    for (p, bytes) in mem.iter() {
        let off = (p.get() - lo.get()) as usize;
        dump[off..off + PAGE_SIZE].copy_from_slice(bytes);
    }
    Some((lo, dump))
}
