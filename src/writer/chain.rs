//! The writer's side of the chains: taking pages, finding the next slot,
//! mapping what an operation writes, linking a new tail, walking its own
//! chains. The only writer code that follows or writes `next_array_phys`.

use core::ops::ControlFlow;

use zerocopy::FromBytes;

use super::error::{BadPage, ObjectKind, PagePurpose};
use super::record::Rec;
use super::{PageAlloc, WriteError};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IommuArrayHdrSer, IommuDeviceSer, IommuDomainSer, IommuHdrSer,
    IommuHwSer, objects_per_page,
};

impl ObjectKind {
    /// Size of one record in bytes.
    pub(crate) const fn record_size(self) -> usize {
        match self {
            ObjectKind::Iommu => size_of::<IommuHwSer>(),
            ObjectKind::Domain => size_of::<IommuDomainSer>(),
            ObjectKind::Device => size_of::<IommuDeviceSer>(),
        }
    }

    /// Records per array page of size `page`.
    pub(crate) const fn capacity(self, page: PageSize) -> u64 {
        objects_per_page(page, self.record_size())
    }
}

/// Takes one page from the allocator and proves it fresh: non-zero,
/// aligned, not the root or a tail (`in_use`), accessible and all zeroes.
/// A page in use elsewhere in the image is a full array page (its
/// `nr_objects` is non-zero), so these checks exclude every page already
/// linked. A refused page is not freed (it may be in use).
pub(crate) fn take_page<A: PageAlloc>(
    alloc: &mut A,
    purpose: PagePurpose,
    in_use: &[PhysAddr],
) -> Result<PhysAddr, WriteError> {
    let phys = alloc
        .alloc_page()
        .ok_or(WriteError::OutOfPages { purpose })?;
    let bad = |problem| WriteError::BadPage {
        purpose,
        phys,
        problem,
    };
    if phys.is_null() {
        return Err(bad(BadPage::Null));
    }
    if !phys.is_page_aligned(alloc.page_size()) {
        return Err(bad(BadPage::Unaligned));
    }
    if in_use.contains(&phys) {
        return Err(bad(BadPage::InImage));
    }
    let page = mapped(alloc, phys).ok_or(bad(BadPage::Unmapped))?;
    if page.iter().any(|b| *b != 0) {
        return Err(bad(BadPage::NotZeroed));
    }
    Ok(phys)
}

/// The page at `phys`, only if the allocator maps exactly one page there:
/// the one way the writer reaches a page.
fn mapped<A: PageAlloc>(alloc: &mut A, phys: PhysAddr) -> Option<&mut [u8]> {
    let size = alloc.page_size().bytes();
    alloc.page_mut(phys).filter(|p| p.len() == size)
}

/// Reads a page the writer took, or says it is gone.
pub(crate) fn page<A: PageAlloc>(alloc: &mut A, phys: PhysAddr) -> Result<&mut [u8], WriteError> {
    mapped(alloc, phys).ok_or(WriteError::PageUnavailable { phys })
}

/// Maps the pages of one operation at once (see [`PageAlloc::pages_mut`]),
/// or says which is gone. Two equal pages mean the image changed behind the
/// writer (no operation writes two records of different chains in one
/// page).
pub(crate) fn pages<A: PageAlloc, const K: usize>(
    alloc: &mut A,
    phys: [PhysAddr; K],
) -> Result<[&mut [u8]; K], WriteError> {
    for (i, p) in phys.iter().enumerate() {
        if phys.iter().take(i).any(|q| q == p) {
            return Err(WriteError::Inconsistent {
                phys: *p,
                what: "records of one operation share a page",
            });
        }
    }
    let size = alloc.page_size().bytes();
    let mapped = alloc
        .pages_mut(phys)
        .map_err(|phys| WriteError::PageUnavailable { phys })?;
    // A mapping of another length than the page size is no mapping.
    if let Some((p, _)) = phys.iter().zip(&mapped).find(|(_, m)| m.len() != size) {
        return Err(WriteError::PageUnavailable { phys: *p });
    }
    Ok(mapped)
}

/// The offset of `phys` in its mapped `page`, whose length is the page
/// size.
fn offset_in(page: &[u8], phys: PhysAddr) -> Option<usize> {
    let ps = PageSize::from_bytes(u64::try_from(page.len()).ok()?)?;
    Some(phys.page_offset(ps))
}

/// The `N` bytes of the record at `phys` (which the writer handed out as a
/// handle or read from its own record) in its mapped page, for writing.
pub(crate) fn record_mut<const N: usize>(
    page: &mut [u8],
    phys: PhysAddr,
) -> Result<&mut [u8; N], WriteError> {
    offset_in(page, phys)
        .and_then(|start| Some(start..start.checked_add(N)?))
        .and_then(|r| page.get_mut(r))
        .and_then(|b| b.try_into().ok())
        .ok_or(WriteError::Inconsistent {
            phys,
            what: "record does not fit its page",
        })
}

/// The header of the `N`-byte record at `phys` in its mapped page, for
/// writing (checking the whole record fits, as reading it did).
pub(crate) fn hdr_mut<const N: usize>(
    page: &mut [u8],
    phys: PhysAddr,
) -> Result<&mut IommuHdrSer, WriteError> {
    let rec: &mut [u8; N] = record_mut(page, phys)?;
    IommuHdrSer::mut_from_prefix(rec)
        .map(|(h, _)| h)
        .map_err(|_| WriteError::Inconsistent {
            phys,
            what: "record does not fit its page",
        })
}

/// The record of `kind` at `phys`, for reading.
pub(crate) fn record<A: PageAlloc>(
    alloc: &mut A,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<Rec<&[u8]>, WriteError> {
    let ps = alloc.page_size();
    let p = page(alloc, phys.page_base(ps))?;
    let start = phys.page_offset(ps);
    let bytes = start
        .checked_add(kind.record_size())
        .and_then(|end| p.get(start..end))
        .ok_or(WriteError::Inconsistent {
            phys,
            what: "record does not fit its page",
        })?;
    Ok(Rec { phys, bytes })
}

fn array_hdr(phys: PhysAddr, p: &[u8]) -> Result<IommuArrayHdrSer, WriteError> {
    IommuArrayHdrSer::read_from_prefix(p)
        .map(|(h, _)| h)
        .map_err(|_| WriteError::Inconsistent {
            phys,
            what: "array header unreadable",
        })
}

fn array_hdr_mut(phys: PhysAddr, p: &mut [u8]) -> Result<&mut IommuArrayHdrSer, WriteError> {
    IommuArrayHdrSer::mut_from_prefix(p)
        .map(|(h, _)| h)
        .map_err(|_| WriteError::Inconsistent {
            phys,
            what: "array header unreadable",
        })
}

/// Size of an IOMMU record, whose header a device's append rewrites.
const IOMMU_RECORD: usize = size_of::<IommuHwSer>();

/// Where slot `index` of a page of `kind` starts, relative to the page.
fn slot_offset(kind: ObjectKind, index: u64) -> Option<u64> {
    let size = u64::try_from(kind.record_size()).ok()?;
    index.checked_mul(size)?.checked_add(IOMMU_ARRAY_HDR_SIZE)
}

/// The next free slot of a chain, found with nothing in the image written.
/// If the tail was full, a fresh page was taken for it, which
/// [`Slot::abandon`] gives back if the operation fails before its writes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    kind: ObjectKind,
    /// The full tail the fresh page is to be linked behind, if there is one.
    link: Option<PhysAddr>,
    /// The page the record goes in: the tail, or the fresh page.
    page: PhysAddr,
    /// The record's slot in that page; its `nr_objects` becomes `index + 1`.
    index: u64,
    /// The record's address (what its handle names).
    phys: PhysAddr,
    /// The image's page size.
    page_size: PageSize,
}

/// Everything one append writes, mapped and checked: the slot, the header
/// of its page, and the old tail's header when a page is linked.
/// [`Append::commit`] writes them and cannot fail.
struct Append<'a, const N: usize> {
    slot: &'a mut [u8; N],
    hdr: &'a mut IommuArrayHdrSer,
    /// The old tail's header, the page it will link to, and its count.
    link: Option<(&'a mut IommuArrayHdrSer, PhysAddr, u64)>,
    /// The new `nr_objects` of the slot's page.
    nr: u64,
}

impl<const N: usize> Append<'_, N> {
    /// Writes the record, counts it in its page, then links the page
    /// behind the old tail if it is a fresh one. Plain assignments: nothing
    /// here can fail.
    fn commit(self, record: [u8; N]) {
        *self.slot = record;
        *self.hdr = IommuArrayHdrSer {
            next_array_phys: 0.into(),
            nr_objects: self.nr.into(),
        };
        if let Some((old, next, nr)) = self.link {
            *old = IommuArrayHdrSer {
                next_array_phys: next.get().into(),
                nr_objects: nr.into(),
            };
        }
    }
}

impl Slot {
    /// Gives back the page taken for this slot, if any. For an operation
    /// that failed before writing anything: the page was never linked.
    fn abandon<A: PageAlloc>(&self, alloc: &mut A) {
        if self.link.is_some() {
            alloc.free_page(self.page);
        }
    }

    /// Maps every page an append of an `N`-byte record writes (the old
    /// tail when linking, the slot's page, and the page holding `extra`, a
    /// record of another chain the operation updates) with one
    /// `pages_mut` call, and returns the write targets and `extra`'s page.
    fn map<'a, A: PageAlloc, const N: usize>(
        &self,
        alloc: &'a mut A,
        extra: Option<PhysAddr>,
    ) -> Result<(Append<'a, N>, Option<&'a mut [u8]>), WriteError> {
        if N != self.kind.record_size() {
            return Err(WriteError::Inconsistent {
                phys: self.phys,
                what: "record size is not its chain's",
            });
        }
        let extra_page = extra.map(|x| x.page_base(self.page_size));
        let (old, page, extra) = match (self.link, extra_page) {
            (None, None) => {
                let [p] = pages(alloc, [self.page])?;
                (None, p, None)
            }
            (None, Some(x)) => {
                let [p, x] = pages(alloc, [self.page, x])?;
                (None, p, Some(x))
            }
            (Some(old), None) => {
                let [o, p] = pages(alloc, [old, self.page])?;
                (Some((old, o)), p, None)
            }
            (Some(old), Some(x)) => {
                let [o, p, x] = pages(alloc, [old, self.page, x])?;
                (Some((old, o)), p, Some(x))
            }
        };
        let link = match old {
            Some((phys, o)) => Some((
                array_hdr_mut(phys, o)?,
                self.page,
                self.kind.capacity(self.page_size),
            )),
            None => None,
        };
        let unreadable = WriteError::Inconsistent {
            phys: self.page,
            what: "array header unreadable",
        };
        let (hdr, rest) = page
            .split_at_mut_checked(size_of::<IommuArrayHdrSer>())
            .ok_or(unreadable)?;
        let hdr = IommuArrayHdrSer::mut_from_bytes(hdr).map_err(|_| unreadable)?;
        let bad = WriteError::Inconsistent {
            phys: self.phys,
            what: "record does not fit its page",
        };
        let start = self
            .phys
            .page_offset(self.page_size)
            .checked_sub(size_of::<IommuArrayHdrSer>())
            .ok_or(bad)?;
        let slot = start
            .checked_add(N)
            .and_then(|end| rest.get_mut(start..end))
            .and_then(|b| b.try_into().ok())
            .ok_or(bad)?;
        let nr = self.index.saturating_add(1);
        Ok((
            Append {
                slot,
                hdr,
                link,
                nr,
            },
            extra,
        ))
    }
}

/// One chain as the writer keeps it: the head, and the tail it appends to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chain {
    pub(crate) kind: ObjectKind,
    pub(crate) head: PhysAddr,
    pub(crate) tail: PhysAddr,
    /// The tail's `nr_objects`.
    pub(crate) tail_len: u64,
    /// Pages in the chain.
    pub(crate) pages: u64,
}

impl Chain {
    /// A chain of one empty page (its header is the page's zeroes).
    pub(crate) fn start<A: PageAlloc>(
        alloc: &mut A,
        kind: ObjectKind,
        in_use: &[PhysAddr],
    ) -> Result<Chain, WriteError> {
        let head = take_page(alloc, PagePurpose::Chain(kind), in_use)?;
        Ok(Chain {
            kind,
            head,
            tail: head,
            tail_len: 0,
            pages: 1,
        })
    }

    /// The slot the next record goes in: the tail's next one, or, if the
    /// tail is full, the first of a fresh page taken from `alloc` (which
    /// must not be one of `in_use`). Writes nothing.
    fn next_slot<A: PageAlloc>(
        &self,
        alloc: &mut A,
        in_use: &[PhysAddr],
    ) -> Result<Slot, WriteError> {
        let page_size = alloc.page_size();
        let (link, page, index) = if self.tail_len >= self.kind.capacity(page_size) {
            let new = take_page(alloc, PagePurpose::Chain(self.kind), in_use)?;
            (Some(self.tail), new, 0)
        } else {
            (None, self.tail, self.tail_len)
        };
        let phys = slot_offset(self.kind, index).and_then(|off| page.checked_add(off));
        let Some(phys) = phys else {
            if link.is_some() {
                alloc.free_page(page);
            }
            return Err(WriteError::Inconsistent {
                phys: page,
                what: "slot address overflows",
            });
        };
        Ok(Slot {
            kind: self.kind,
            link,
            page,
            index,
            phys,
            page_size,
        })
    }

    /// Takes the slot's record into the writer's bookkeeping, once
    /// [`Append::commit`] wrote it.
    fn commit(&mut self, slot: &Slot) {
        if slot.link.is_some() {
            self.tail = slot.page;
            self.pages = self.pages.saturating_add(1);
        }
        self.tail_len = slot.index.saturating_add(1);
    }

    /// Appends one `N`-byte record, whole or not at all (see
    /// [Failures](super#failures)): finds the slot (taking a fresh page if
    /// the tail is full), has `build` make the record's bytes for the slot's
    /// address, maps every page written at once (with the page of the IOMMU
    /// record whose header `iommu` rewrites, if any), runs `last` (the final
    /// step that may fail; the device index), then writes. On any failure
    /// the fresh page is given back and nothing was written.
    pub(crate) fn append<A: PageAlloc, const N: usize>(
        &mut self,
        alloc: &mut A,
        in_use: &[PhysAddr],
        iommu: Option<(PhysAddr, IommuHdrSer)>,
        build: impl FnOnce(PhysAddr) -> Result<[u8; N], WriteError>,
        last: impl FnOnce(PhysAddr) -> Result<(), WriteError>,
    ) -> Result<PhysAddr, WriteError> {
        // The tail must be as this bookkeeping left it: a stale copy of the
        // writer (C callers can copy its state back over it) would hand out
        // a used slot again, or relink a page that already has a successor.
        let hdr = array_hdr(self.tail, page(alloc, self.tail)?)?;
        if hdr.nr_objects.get() != self.tail_len || hdr.next_array_phys.get() != 0 {
            return Err(WriteError::Inconsistent {
                phys: self.tail,
                what: "the tail page is not where the writer left it",
            });
        }
        let slot = self.next_slot(alloc, in_use)?;
        let staged = build(slot.phys).and_then(|rec| {
            let (target, hw_page) = slot.map::<A, N>(alloc, iommu.map(|(p, _)| p))?;
            let hw = match (iommu, hw_page) {
                (Some((phys, h)), Some(page)) => Some((hdr_mut::<IOMMU_RECORD>(page, phys)?, h)),
                _ => None,
            };
            last(slot.phys)?;
            Ok((rec, target, hw))
        });
        match staged {
            Ok((rec, target, hw)) => {
                target.commit(rec);
                if let Some((dst, h)) = hw {
                    *dst = h;
                }
            }
            Err(e) => {
                slot.abandon(alloc);
                return Err(e);
            }
        }
        self.commit(&slot);
        Ok(slot.phys)
    }

    /// Calls `f` on every record of the chain, head to tail, until it
    /// breaks. Checks the chain is still what the writer built.
    pub(crate) fn scan<A: PageAlloc, T>(
        &self,
        alloc: &mut A,
        mut f: impl FnMut(Rec<&[u8]>) -> Result<ControlFlow<T>, WriteError>,
    ) -> Result<Option<T>, WriteError> {
        let size = self.kind.record_size();
        let capacity = self.kind.capacity(alloc.page_size());
        let mut at = self.head;
        for _ in 0..self.pages {
            let p = page(alloc, at)?;
            let hdr = array_hdr(at, p)?;
            let nr = hdr.nr_objects.get();
            if nr > capacity {
                return Err(WriteError::Inconsistent {
                    phys: at,
                    what: "nr_objects above capacity",
                });
            }
            for i in 0..nr {
                let bad = |what| WriteError::Inconsistent { phys: at, what };
                let off = slot_offset(self.kind, i).ok_or(bad("slot address overflows"))?;
                let phys = at.checked_add(off).ok_or(bad("slot address overflows"))?;
                let bytes = usize::try_from(off)
                    .ok()
                    .and_then(|s| p.get(s..s.checked_add(size)?))
                    .ok_or(bad("record does not fit its page"))?;
                if let ControlFlow::Break(t) = f(Rec { phys, bytes })? {
                    return Ok(Some(t));
                }
            }
            at = PhysAddr::new(hdr.next_array_phys.get());
        }
        if at.is_null() {
            Ok(None)
        } else {
            Err(WriteError::Inconsistent {
                phys: self.tail,
                what: "chain longer than the writer built",
            })
        }
    }

    /// Gives every page back, head to tail, reading each page's link before
    /// freeing it. A page that cannot be mapped is given back all the same
    /// (its address is known), but the walk stops there: whatever follows it
    /// cannot be found without a heap, and stays with the allocator.
    pub(crate) fn free<A: PageAlloc>(&self, alloc: &mut A) {
        let mut at = self.head;
        for _ in 0..self.pages {
            if at.is_null() {
                return;
            }
            let next = mapped(alloc, at).map(|p| {
                array_hdr(at, p)
                    .map(|h| PhysAddr::new(h.next_array_phys.get()))
                    .unwrap_or(PhysAddr::NULL)
            });
            alloc.free_page(at);
            match next {
                Some(n) => at = n,
                None => return,
            }
        }
    }
}
