//! The caller's scratch: its element type, how it is laid out, and the
//! lookups over it (a page by address, a record by its index in the chain).
//!
//! Layout, for `A` IOMMU and domain pages, `V` device pages, `I` IOMMU
//! slots and `D` device slots (deleted ones included):
//!
//! | region | elements | entry |
//! |---|---|---|
//! | walk order | `A` | (page phys, `nr_objects`), IOMMU then domain chain |
//! | IOMMU keys | `I` | (token, type << 56 \| record index), sorted, live records only |
//! | device walk order | `V` | (page phys, `nr_objects`) |
//! | by address | `A + 1` | (page phys, chain << 56 \| page index), sorted; the root's page too |
//! | devices by address | `V` | (page phys, chain << 56 \| page index), sorted |
//! | device keys | `D` | (segment << 32 \| devid, record index), sorted, live records only |
//!
//! That is `2 (A + V) + 1 + I + D` elements, what
//! [`scratch_len`](super::scratch_len) returns (`2 P + 1 + I + D` for `P`
//! chain pages). While the record passes run,
//! before the device chain's length is known, the regions after the IOMMU
//! keys are laid out otherwise (`PassRegions` in `validate.rs`).
//!
//! When the live devices' keys strictly ascend in chain order, the device
//! key region holds only the entry of each device page's first live
//! device, in chain order, and the rest of it is unused (`DeviceIndex` in
//! `view.rs`).
//!
//! During validation the IOMMU region first holds one element per IOMMU
//! slot, at the slot's record index: (token, type << 56 | live devices
//! counted so far) for a live IOMMU, (0, 0) for a deleted one. Once the
//! counts are checked, the live IOMMUs' keys are moved to its front.

use core::slice::ChunksExact;

use crate::abi::PageSize;
use crate::error::{Chain, RefFault};
use crate::format::{Ref, record_hdr};
use crate::mem::read_page;
use crate::{Memory, PhysAddr};

/// The lengths of the scratch's regions, in the order of the layout above,
/// for `pages` (IOMMU, domain, device) chain pages and `iommu_slots` IOMMU
/// slots: walk order, IOMMU keys, device walk order, by address, devices by
/// address. The device keys follow them. What validation splits the
/// scratch by and what the view re-slices it by, so the two agree.
pub(crate) fn region_lens(pages: [u64; 3], iommu_slots: u64) -> [u64; 6] {
    let [iommu, domain, device] = pages;
    let others = iommu.saturating_add(domain);
    [
        iommu,
        domain,
        iommu_slots,
        device,
        others.saturating_add(1),
        device,
    ]
}

/// One element of the scratch space [`validate`](super::validate) sorts its
/// indexes in: 16 bytes, no meaning outside the reader. Make a slice of
/// [`scratch_len`](super::scratch_len) of them with
/// `[ScratchElem::default(); N]` or `vec![ScratchElem::default(); n]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScratchElem {
    pub(crate) hi: u64,
    pub(crate) lo: u64,
}

impl ScratchElem {
    pub(crate) const fn new(hi: u64, lo: u64) -> Self {
        ScratchElem { hi, lo }
    }
}

/// Bits of `lo` below a tag stored at bit 56.
pub(crate) const TAG_SHIFT: u32 = 56;
pub(crate) const LOW_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Largest page index / record index the packing can hold. The limits are
/// clamped to these (no machine holds 2^40 pages in one chain).
pub(crate) const MAX_PAGES: u64 = 1 << 40;
pub(crate) const MAX_OBJECTS: u64 = 1 << 48;

/// The tag of a page's chain in the sorted page table: 0 for the root's.
pub(crate) const fn chain_tag(chain: Option<Chain>) -> u64 {
    match chain {
        None => 0,
        Some(Chain::Iommu) => 1,
        Some(Chain::Domain) => 2,
        Some(Chain::Device) => 3,
    }
}

/// The chain a tag names (`None`: the root's page).
pub(crate) const fn tag_chain(tag: u64) -> Option<Chain> {
    match tag {
        1 => Some(Chain::Iommu),
        2 => Some(Chain::Domain),
        3 => Some(Chain::Device),
        _ => None,
    }
}

/// Position of `chain` among the three arrays.
pub(crate) const fn slot_of(chain: Chain) -> usize {
    match chain {
        Chain::Iommu => 0,
        Chain::Domain => 1,
        Chain::Device => 2,
    }
}

/// The validated page tables: chain pages in walk order, and every page
/// (root's included) sorted by address, in two tables (the device chain's
/// and the rest), all of size `page_size`, with the
/// geometry of each chain: records of `stride[c]` bytes from offset `hdr`,
/// `cap[c]` per page.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pages<'s> {
    pub page_size: PageSize,
    pub hdr: u64,
    pub stride: [u64; 3],
    pub cap: [u64; 3],
    /// [`reciprocal`] of each stride.
    pub magic: [u64; 3],
    /// The format's `DELETED` flag.
    pub deleted: u32,
    pub walk: [&'s [ScratchElem]; 3],
    /// The root's page and the IOMMU and domain chains' pages, by address.
    pub sorted: &'s [ScratchElem],
    /// The device chain's pages, by address.
    pub sorted_devices: &'s [ScratchElem],
}

/// A record found by address or index: its first `len` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found<'m> {
    /// Index of the record in its chain (page index × capacity + slot).
    pub index: u64,
    pub phys: PhysAddr,
    pub bytes: &'m [u8],
}

impl<'s> Pages<'s> {
    /// The walk-order entries of `chain`.
    pub fn chain(&self, chain: Chain) -> &'s [ScratchElem] {
        self.walk.get(slot_of(chain)).copied().unwrap_or(&[])
    }

    /// Records per page of `chain`.
    pub fn capacity(&self, chain: Chain) -> u64 {
        self.cap.get(slot_of(chain)).copied().unwrap_or(0)
    }

    /// Bytes per record of `chain`.
    pub fn stride(&self, chain: Chain) -> u64 {
        self.stride.get(slot_of(chain)).copied().unwrap_or(0)
    }

    /// The first `nr` records of a page of `chain`, each cut to its first
    /// `len` bytes; `None` if they do not fit. Inlined, so that the record
    /// passes know `len` and drop their own length checks.
    #[inline(always)]
    pub fn records<'m>(
        &self,
        chain: Chain,
        page: &'m [u8],
        nr: u64,
        len: usize,
    ) -> Option<impl Iterator<Item = &'m [u8]> + use<'m>> {
        let slots = self.slots(chain, page, nr, len)?;
        Some(slots.filter_map(move |r| r.get(..len)))
    }

    /// The first `nr` record slots of a page of `chain`, a stride each;
    /// `None` if they do not fit or a stride is shorter than `len`.
    pub fn slots<'m>(
        &self,
        chain: Chain,
        page: &'m [u8],
        nr: u64,
        len: usize,
    ) -> Option<ChunksExact<'m, u8>> {
        let start = usize::try_from(self.hdr).ok()?;
        let stride = usize::try_from(self.stride(chain))
            .ok()
            .filter(|s| *s >= len && *s > 0)?;
        let end = usize::try_from(nr)
            .ok()?
            .checked_mul(stride)?
            .checked_add(start)?;
        Some(page.get(start..end)?.chunks_exact(stride))
    }

    /// The record with index `index` in `chain`, `len` bytes of it.
    pub fn record_at<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        index: u64,
        len: usize,
    ) -> Option<Found<'m>> {
        self.find_index(mem, chain, index, len, false, &mut Cursor::default())
            .ok()
    }

    /// [`fill_here`](Self::fill_here) in a function of its own: the cold
    /// half of [`find_index`](Self::find_index), which is inlined into the
    /// record passes.
    #[cold]
    #[inline(never)]
    fn fill<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        page: u64,
        base: u64,
        cursor: &mut Cursor<'m>,
    ) {
        self.fill_here(mem, chain, page, base, cursor);
    }

    /// Points `cursor` at page `page` of `chain`, at `base`. Inlined into
    /// [`locate_missed`](Self::locate_missed), itself off the hot path, so
    /// that the kernel's deepest stack holds one frame for both.
    #[inline(always)]
    fn fill_here<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        page: u64,
        base: u64,
        cursor: &mut Cursor<'m>,
    ) {
        let nr = usize::try_from(page)
            .ok()
            .and_then(|p| self.chain(chain).get(p))
            .map_or(0, |w| w.lo);
        let bytes = read_page(mem, PhysAddr::new(base), self.page_size);
        *cursor = Cursor {
            start: base.wrapping_add(self.hdr),
            // Validation proved `hdr + nr × stride` fits the page.
            span: nr.saturating_mul(self.stride(chain)),
            first: page.saturating_mul(self.capacity(chain)),
            nr,
            // A page the memory no longer serves has no bytes: every
            // record in it is refused as unreadable.
            recs: bytes
                .and_then(|b| b.get(usize::try_from(self.hdr).ok()?..))
                .unwrap_or(&[]),
        };
    }

    /// The record of `chain` that starts at `phys`, deleted or not; with
    /// `live`, a deleted one is refused too.
    ///
    /// `cursor` remembers the page the last lookup through it landed on
    /// (one cursor per chain): records walked in chain order name their
    /// targets in clustered order (the devices of a page share IOMMUs and
    /// mostly domain pages), so the binary search over the page table and
    /// the `Memory::page` call run only when the target page changes.
    ///
    /// A hit is a subtraction and one compare, whether `phys` falls among
    /// the cursor's page's records (`start` <= `phys` < `start` + `span`,
    /// which also bounds the slot by the count); then a multiplication by
    /// the stride's reciprocal and one back to prove the record start, the
    /// bounds check and the liveness bit. Anything else takes
    /// [`locate_missed`](Self::locate_missed), which also tells the faults
    /// apart.
    #[inline(always)]
    pub fn locate<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        phys: PhysAddr,
        len: usize,
        live: bool,
        cursor: &mut Cursor<'m>,
    ) -> Result<Found<'m>, RefFault> {
        let rel = phys.get().wrapping_sub(cursor.start);
        if rel >= cursor.span {
            return self.locate_missed(mem, chain, phys, len, live, cursor);
        }
        // A record start below `span` is a slot below `nr`.
        self.slot_at(chain, rel).and_then(|slot| {
            cursor.found(
                (phys, slot, rel),
                len,
                live,
                self.deleted,
                RefFault::NotInChain,
            )
        })
    }

    /// [`locate`](Self::locate) when `phys` is not among the records of the
    /// cursor's page: moves the cursor to the page `phys` is in, if that is
    /// a page of `chain`, and finds the record there or the fault.
    #[inline(never)]
    fn locate_missed<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        phys: PhysAddr,
        len: usize,
        live: bool,
        cursor: &mut Cursor<'m>,
    ) -> Result<Found<'m>, RefFault> {
        let size = self.page_size.bytes_u64();
        let mut off = phys.get().wrapping_sub(cursor.start.wrapping_sub(self.hdr));
        // A cursor on no page, or on one without records, never hits (so
        // the first lookup, and any address near `u64::MAX`, searches).
        if off >= size || cursor.nr == 0 {
            let base = phys.page_base(self.page_size).get();
            // The page after the cursor's in chain order first (the first
            // page for a cursor on none): records walked in chain order
            // mostly name their targets in chain order. A page is in the
            // walks once (validation refused one used twice), so this is
            // the page the search would find.
            let next = match cursor.first.checked_div(self.capacity(chain)) {
                Some(page) if cursor.nr != 0 => page.wrapping_add(1),
                _ => 0,
            };
            let hinted = usize::try_from(next)
                .ok()
                .and_then(|p| self.chain(chain).get(p))
                .is_some_and(|w| w.hi == base);
            let page = if hinted {
                next
            } else {
                let table = match chain {
                    Chain::Device => self.sorted_devices,
                    Chain::Iommu | Chain::Domain => self.sorted,
                };
                let pos = table
                    .binary_search_by(|e| e.hi.cmp(&base))
                    .map_err(|_| RefFault::NotInChain)?;
                let e = table.get(pos).ok_or(RefFault::NotInChain)?;
                if tag_chain(e.lo >> TAG_SHIFT) != Some(chain) {
                    return Err(RefFault::NotInChain);
                }
                e.lo & LOW_MASK
            };
            self.fill_here(mem, chain, page, base, cursor);
            off = phys.get().wrapping_sub(base);
        }
        // `off` < the page size (at most 2^16), so `rel` is below 2^16
        // unless the subtraction wrapped, which the bound refuses.
        let rel = off.wrapping_sub(self.hdr);
        if rel >= size {
            return Err(RefFault::NotRecordStart);
        }
        let slot = self.slot_at(chain, rel)?;
        if slot >= cursor.nr {
            return Err(RefFault::BeyondCount);
        }
        let at = (phys, slot, rel);
        cursor.found(at, len, live, self.deleted, RefFault::NotInChain)
    }

    /// The slot of the record of `chain` that starts `rel` bytes after a
    /// page's first record, `rel` below the page size; refused if no record
    /// starts there.
    #[inline(always)]
    fn slot_at(&self, chain: Chain, rel: u64) -> Result<u64, RefFault> {
        let c = slot_of(chain);
        let stride = self.stride.get(c).copied().unwrap_or(0);
        let magic = self.magic.get(c).copied().unwrap_or(0);
        // rel × ⌈2^32 / stride⌉ / 2^32 is rel / stride exactly for rel and
        // stride below 2^16 (the error, rel × e / 2^32 with e < stride, is
        // below 1); multiplying back proves the remainder is 0.
        let slot = rel.wrapping_mul(magic) >> 32;
        if slot.wrapping_mul(stride) != rel {
            return Err(RefFault::NotRecordStart);
        }
        Ok(slot)
    }

    /// The record of `chain` a device's reference names, by address
    /// ([`locate`](Self::locate)) or by index
    /// ([`find_index`](Self::find_index)), through `cursor`; with `live`, a
    /// deleted one is refused.
    #[inline(always)]
    pub fn find<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        to: Ref,
        len: usize,
        live: bool,
        cursor: &mut Cursor<'m>,
    ) -> Result<Found<'m>, RefFault> {
        match to {
            Ref::Phys(phys) => self.locate(mem, chain, phys, len, live, cursor),
            Ref::Index(index) => self.find_index(mem, chain, index, len, live, cursor),
        }
    }

    /// The record with index `index` in `chain`, through `cursor` as
    /// [`locate`](Self::locate): O(1), and no `Memory::page` call while the
    /// index stays in the cursor's page.
    #[inline(always)]
    pub fn find_index<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        index: u64,
        len: usize,
        live: bool,
        cursor: &mut Cursor<'m>,
    ) -> Result<Found<'m>, RefFault> {
        let mut slot = index.wrapping_sub(cursor.first);
        if slot >= cursor.nr {
            let cap = self.capacity(chain);
            let page = index.checked_div(cap).ok_or(RefFault::BeyondCount)?;
            let base = usize::try_from(page)
                .ok()
                .and_then(|p| self.chain(chain).get(p))
                .ok_or(RefFault::BeyondCount)?
                .hi;
            self.fill(mem, chain, page, base, cursor);
            slot = index.wrapping_sub(cursor.first);
            if slot >= cursor.nr {
                return Err(RefFault::BeyondCount);
            }
        }
        let rel = slot
            .checked_mul(self.stride(chain))
            .ok_or(RefFault::BeyondCount)?;
        let phys = PhysAddr::new(cursor.start.wrapping_add(rel));
        let at = (phys, slot, rel);
        cursor.found(at, len, live, self.deleted, RefFault::BeyondCount)
    }
}

/// The page a [`Pages::locate`] or [`Pages::find_index`] lookup last landed
/// on, in the chain the cursor is for: where its records start and how far
/// they reach, the index of its first record in the chain, its
/// `nr_objects` and its bytes. Start with
/// `Cursor::default()`, which matches no address and no index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'m> {
    /// The address of the page's first record (its address plus the
    /// header) and the bytes its `nr` records span (0 before any lookup:
    /// no address is among them).
    start: u64,
    span: u64,
    first: u64,
    /// The page's `nr_objects`: 0 before any lookup.
    nr: u64,
    /// The page's bytes from its first record on (none if the memory did
    /// not serve it).
    recs: &'m [u8],
}

impl<'m> Cursor<'m> {
    /// Record `slot` of the cursor's page, at `phys` and `rel` bytes after
    /// the page's first record, `len` bytes; refused if it is deleted and
    /// `live` asks for a live one, and with `unread` if the memory did not
    /// serve the page.
    #[inline(always)]
    fn found(
        &self,
        (phys, slot, rel): (PhysAddr, u64, u64),
        len: usize,
        live: bool,
        deleted: u32,
        unread: RefFault,
    ) -> Result<Found<'m>, RefFault> {
        let bytes: &'m [u8] = usize::try_from(rel)
            .ok()
            .and_then(|r| self.recs.get(r..)?.get(..len))
            .ok_or(unread)?;
        if live && record_hdr(bytes).1 & deleted != 0 {
            return Err(RefFault::Deleted);
        }
        Ok(Found {
            index: self.first.wrapping_add(slot),
            phys,
            bytes,
        })
    }
}

impl Default for Cursor<'_> {
    fn default() -> Self {
        Cursor {
            start: u64::MAX,
            span: 0,
            first: 0,
            nr: 0,
            recs: &[],
        }
    }
}

/// ⌈2^32 / stride⌉ (0 for a stride of 0, which matches no record start):
/// what [`Pages::locate`] multiplies by instead of dividing.
pub(crate) const fn reciprocal(stride: u64) -> u64 {
    match stride {
        0 => 0,
        s => (1u64 << 32).div_ceil(s),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cursor, Pages, ScratchElem, TAG_SHIFT, chain_tag, reciprocal};
    use crate::PhysAddr;
    use crate::abi::PageSize;
    use crate::error::{Chain, RefFault};
    use crate::mem::FlatMemory;

    /// A domain chain of two 4 KiB pages at 0x3000 (3 records) and 0x1000
    /// (2 records), 40-byte records after a 16-byte header, the second
    /// record of the first page deleted; the page at 0x2000 is the root's.
    fn two_pages() -> ([u8; 4 * 4096], [ScratchElem; 2], [ScratchElem; 3]) {
        let mut bytes = [0u8; 4 * 4096];
        for (base, nr) in [(0x3000usize, 3usize), (0x1000, 2)] {
            for slot in 0..nr {
                let at = base + 16 + slot * 40;
                bytes[at] = 1; // ref_count
                if (base, slot) == (0x3000, 1) {
                    bytes[at + 4] = 1; // DELETED
                }
            }
        }
        let walk = [ScratchElem::new(0x3000, 3), ScratchElem::new(0x1000, 2)];
        let tag = chain_tag(Some(Chain::Domain)) << TAG_SHIFT;
        let sorted = [
            ScratchElem::new(0x1000, tag | 1),
            ScratchElem::new(0x2000, 0),
            ScratchElem::new(0x3000, tag),
        ];
        (bytes, walk, sorted)
    }

    fn pages<'s>(walk: &'s [ScratchElem], sorted: &'s [ScratchElem]) -> Pages<'s> {
        Pages {
            page_size: PageSize::Size4K,
            hdr: 16,
            stride: [0, 40, 0],
            cap: [0, 102, 0],
            magic: [0, reciprocal(40), 0],
            deleted: 1,
            walk: [&[], walk, &[]],
            sorted,
            sorted_devices: &[],
        }
    }

    /// A lookup of the 40-byte record at `phys` in `p`'s domain chain:
    /// where it landed, or the fault.
    fn look<'m>(
        p: &Pages<'_>,
        mem: &'m FlatMemory<'_>,
        phys: u64,
        live: bool,
        cursor: &mut Cursor<'m>,
    ) -> Result<(u64, PhysAddr, *const u8), RefFault> {
        p.locate(mem, Chain::Domain, PhysAddr::new(phys), 40, live, cursor)
            .map(|f| (f.index, f.phys, f.bytes.as_ptr()))
    }

    /// The one-compare hit of `locate` (a cursor already on a page) gives
    /// what a lookup from a fresh cursor gives, for every address in and
    /// around both pages and the root's: the same record, or the same fault.
    #[test]
    fn locate_from_a_warm_cursor_matches_a_cold_lookup_everywhere() {
        let (bytes, walk, sorted) = two_pages();
        let mem = FlatMemory::new(PhysAddr::new(0), &bytes);
        let p = pages(&walk, &sorted);
        let mut warm = [Cursor::default(); 3];
        for (c, on) in warm.iter_mut().zip([0x3010, 0x1010, 0x1038]) {
            assert!(
                look(&p, &mem, on, true, c).is_ok(),
                "{on:#x} is a live record"
            );
        }
        // Under miri, a sample of the addresses (every 7th byte).
        let step = if cfg!(miri) { 7 } else { 1 };
        for phys in (0x800..0x4800).step_by(step) {
            for live in [false, true] {
                let cold = look(&p, &mem, phys, live, &mut Cursor::default());
                for c in &warm {
                    let hit = look(&p, &mem, phys, live, &mut c.clone());
                    assert_eq!(hit, cold, "{phys:#x} live {live}");
                }
            }
        }
        // The faults the range covers, and the five records (the deleted
        // one found only when `live` is off).
        let fault = |phys| look(&p, &mem, phys, true, &mut warm[0].clone()).err();
        assert_eq!(
            fault(0x3008),
            Some(RefFault::NotRecordStart),
            "in the header"
        );
        assert_eq!(
            fault(0x3011),
            Some(RefFault::NotRecordStart),
            "inside a record"
        );
        assert_eq!(
            fault(0x3088),
            Some(RefFault::BeyondCount),
            "past nr_objects"
        );
        assert_eq!(fault(0x2010), Some(RefFault::NotInChain), "the root's page");
        assert_eq!(fault(0x3038), Some(RefFault::Deleted));
        let any = look(&p, &mem, 0x3038, false, &mut warm[0].clone());
        assert!(any.is_ok(), "a deleted record is found when `live` is off");
        for start in [0x3010, 0x3060, 0x1010, 0x1038] {
            assert_eq!(fault(start), None, "{start:#x}");
        }
    }

    /// A cursor that misses tries the page after its own in chain order
    /// before the binary search: both find the record at its chain index,
    /// forwards (the hint), backwards and from no page (the first page in
    /// chain order is tried first).
    #[test]
    fn a_missed_lookup_lands_on_the_same_page_by_hint_or_by_search() {
        let (bytes, walk, sorted) = two_pages();
        let mem = FlatMemory::new(PhysAddr::new(0), &bytes);
        let p = pages(&walk, &sorted);
        // With page 1 left out of the sorted table the search cannot find
        // it: only the hint does.
        let partial = [sorted[1], sorted[2]];
        let q = pages(&walk, &partial);
        // Each run from a cursor on no page: (address, chain index or
        // fault, why).
        type Step<'a> = (u64, Result<u64, RefFault>, &'a str);
        let runs: [(&Pages<'_>, &[Step<'_>]); 3] = [
            (
                &p,
                &[
                    (0x3060, Ok(2), "no page: the first in chain order"),
                    (0x1038, Ok(103), "page 0 to page 1: the hint"),
                    (0x3010, Ok(0), "page 1 to page 0: the search"),
                    (0x1010, Ok(102), "page 0 to page 1 again"),
                ],
            ),
            (
                &p,
                &[
                    (0x1010, Ok(102), "no page, not the first: the search"),
                    (
                        0x2010,
                        Err(RefFault::NotInChain),
                        "past the last page: the root's",
                    ),
                ],
            ),
            (
                &q,
                &[
                    (0x3010, Ok(0), "page 0, in the table"),
                    (0x1010, Ok(102), "the hint, not the search, found page 1"),
                ],
            ),
        ];
        for (pages, steps) in runs {
            let mut c = Cursor::default();
            for &(phys, want, why) in steps {
                let got = look(pages, &mem, phys, true, &mut c).map(|f| f.0);
                assert_eq!(got, want, "{phys:#x}: {why}");
            }
        }
    }

    /// `locate`'s division by multiplication is exact for every offset in
    /// the largest page (64 KiB) and every stride up to a 4 KiB page's
    /// size, and for strides as large as the largest page.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "2^28 multiplications: seconds natively, hours under miri"
    )]
    fn reciprocal_divides_exactly_below_64k() {
        let strides = (1..=4096u64).chain([8191, 8192, 65535, 65536]);
        for stride in strides {
            let magic = reciprocal(stride);
            for rel in 0..1u64 << 16 {
                assert_eq!(
                    rel.wrapping_mul(magic) >> 32,
                    rel / stride,
                    "rel {rel} stride {stride}"
                );
            }
        }
    }
}
