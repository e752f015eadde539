//! The caller's scratch: its element type, how it is laid out, and the
//! lookups over it (a page by address, a record by its index in the chain).
//!
//! Layout, for `P` chain pages, `I` IOMMU slots and `D` device slots (deleted
//! ones included):
//!
//! | region | elements | entry |
//! |---|---|---|
//! | walk order | `P` | (page phys, `nr_objects`), IOMMU then domain then device chain |
//! | by address | `P + 1` | (page phys, chain << 56 \| page index), sorted; the root's page too |
//! | IOMMU keys | `I` | (token, type << 56 \| record index), sorted, live records only |
//! | device keys | `D` | (segment << 32 \| devid, record index), sorted, live records only |
//!
//! During validation the IOMMU region first holds one element per IOMMU
//! slot, at the slot's record index: (token, type << 56 | live devices
//! counted so far) for a live IOMMU, (0, 0) for a deleted one. Once the
//! counts are checked, the live IOMMUs' keys are moved to its front.

use crate::abi::PageSize;
use crate::error::{Chain, RefFault};
use crate::format::record_hdr;
use crate::mem::read_page;
use crate::{Memory, PhysAddr};

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
/// (root's included) sorted by address, all of size `page_size`, with the
/// geometry of each chain: records of `stride[c]` bytes from offset `hdr`,
/// `cap[c]` per page.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pages<'s> {
    pub page_size: PageSize,
    pub hdr: u64,
    pub stride: [u64; 3],
    pub cap: [u64; 3],
    /// The format's `DELETED` flag.
    pub deleted: u32,
    pub walk: [&'s [ScratchElem]; 3],
    pub sorted: &'s [ScratchElem],
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

    /// Byte offset of record `slot` of `chain` from its page's start.
    fn offset(&self, chain: Chain, slot: u64) -> Option<u64> {
        slot.checked_mul(self.stride(chain))?.checked_add(self.hdr)
    }

    /// The first `len` bytes of record `slot` of a page of `chain`.
    fn record_bytes<'m>(
        &self,
        chain: Chain,
        page: &'m [u8],
        slot: u64,
        len: usize,
    ) -> Option<&'m [u8]> {
        let off = usize::try_from(self.offset(chain, slot)?).ok()?;
        page.get(off..off.checked_add(len)?)
    }

    /// The first `nr` records of a page of `chain`, each cut to its first
    /// `len` bytes; `None` if they do not fit.
    pub fn records<'m>(
        &self,
        chain: Chain,
        page: &'m [u8],
        nr: u64,
        len: usize,
    ) -> Option<impl Iterator<Item = &'m [u8]> + use<'m>> {
        let start = usize::try_from(self.hdr).ok()?;
        let stride = usize::try_from(self.stride(chain))
            .ok()
            .filter(|s| *s >= len && *s > 0)?;
        let end = usize::try_from(nr)
            .ok()?
            .checked_mul(stride)?
            .checked_add(start)?;
        let body = page.get(start..end)?;
        Some(body.chunks_exact(stride).filter_map(move |r| r.get(..len)))
    }

    /// The record with index `index` in `chain`, `len` bytes of it.
    pub fn record_at<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        index: u64,
        len: usize,
    ) -> Option<Found<'m>> {
        let cap = self.capacity(chain);
        let page = index.checked_div(cap)?;
        let slot = index.checked_rem(cap)?;
        let e = self.chain(chain).get(usize::try_from(page).ok()?)?;
        if slot >= e.lo {
            return None;
        }
        let phys = PhysAddr::new(e.hi);
        let bytes = self.record_bytes(chain, read_page(mem, phys, self.page_size)?, slot, len)?;
        Some(Found {
            index,
            phys: phys.checked_add(self.offset(chain, slot)?)?,
            bytes,
        })
    }

    /// The live record with index `index` in `chain` (an O(1) lookup).
    pub fn live_at<'m, M: Memory + ?Sized>(
        &self,
        mem: &'m M,
        chain: Chain,
        index: u64,
        len: usize,
    ) -> Result<Found<'m>, RefFault> {
        let found = self
            .record_at(mem, chain, index, len)
            .ok_or(RefFault::BeyondCount)?;
        if record_hdr(found.bytes).1 & self.deleted != 0 {
            return Err(RefFault::Deleted);
        }
        Ok(found)
    }

    /// The record of `chain` that starts at `phys`, deleted or not; with
    /// `live`, a deleted one is refused too.
    ///
    /// `cursor` remembers the page the last lookup through it landed on:
    /// records walked in chain order name their targets in clustered order
    /// (the devices of a page share IOMMUs and mostly domain pages), so with
    /// one cursor per kind of target the search and the `Memory::page` call
    /// run only when the target page changes. The checks on the record
    /// itself run on every lookup.
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
        let base = phys.page_base(self.page_size).get();
        // Page bases have their low 12 bits clear: the chain's tag fits.
        let key = base | chain_tag(Some(chain));
        if cursor.key != key {
            let pos = self
                .sorted
                .binary_search_by(|e| e.hi.cmp(&base))
                .map_err(|_| RefFault::NotInChain)?;
            let e = self.sorted.get(pos).ok_or(RefFault::NotInChain)?;
            if tag_chain(e.lo >> TAG_SHIFT) != Some(chain) {
                return Err(RefFault::NotInChain);
            }
            let page = e.lo & LOW_MASK;
            let nr = usize::try_from(page)
                .ok()
                .and_then(|p| self.chain(chain).get(p))
                .map_or(0, |w| w.lo);
            *cursor = Cursor {
                key,
                first: page.checked_mul(self.capacity(chain)),
                nr,
                bytes: read_page(mem, PhysAddr::new(base), self.page_size),
            };
        }
        let off = phys.page_offset(self.page_size);
        // Offsets and strides are below 2^16 (a page is at most 64 KiB):
        // one 32-bit division, checked by multiplying back, instead of a
        // 64-bit remainder and quotient.
        let rel = u32::try_from(off)
            .ok()
            .and_then(|o| o.checked_sub(u32::try_from(self.hdr).ok()?))
            .ok_or(RefFault::NotRecordStart)?;
        let size = u32::try_from(self.stride(chain)).map_err(|_| RefFault::NotRecordStart)?;
        let slot = rel.checked_div(size).ok_or(RefFault::NotRecordStart)?;
        if slot.checked_mul(size) != Some(rel) {
            return Err(RefFault::NotRecordStart);
        }
        let slot = u64::from(slot);
        if slot >= cursor.nr {
            return Err(RefFault::BeyondCount);
        }
        let index = cursor
            .first
            .and_then(|i| i.checked_add(slot))
            .ok_or(RefFault::BeyondCount)?;
        let bytes: &'m [u8] = cursor
            .bytes
            .and_then(|p| p.get(off..off.checked_add(len)?))
            .ok_or(RefFault::NotInChain)?;
        if live && record_hdr(bytes).1 & self.deleted != 0 {
            return Err(RefFault::Deleted);
        }
        Ok(Found { index, phys, bytes })
    }
}

/// The page a [`Pages::locate`] lookup last landed on, in the chain it was
/// looked up in: the index of its first record in that chain, its
/// `nr_objects` and its bytes (`None` if the memory did not serve it).
/// Start with `Cursor::default()`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'m> {
    /// The page's address | the chain's tag (below 4); `u64::MAX`, which no
    /// such key equals, before any lookup.
    key: u64,
    first: Option<u64>,
    nr: u64,
    bytes: Option<&'m [u8]>,
}

impl Default for Cursor<'_> {
    fn default() -> Self {
        Cursor {
            key: u64::MAX,
            first: None,
            nr: 0,
            bytes: None,
        }
    }
}
