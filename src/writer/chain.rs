//! The writer's side of the chains: taking pages, finding the next slot,
//! mapping what an operation writes, linking a new tail, walking its own
//! chains. The only writer code that follows or writes `next_array_phys`.

use core::ops::ControlFlow;

use zerocopy::{FromBytes, IntoBytes};

use super::encoding::{Encoding, PATCH_MAX, PagePlan, PageRole, Patch, ROOT_CHAINS_AT, Reference};
use super::error::{BadPage, ObjectKind, PagePurpose};
use super::record::Rec;
use super::{PageAlloc, WriteError};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{IommuArrayHdrSer, IommuHdrSer};

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
    if !crate::mem::all_zero(page) {
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

/// Maps up to four pages of one operation with one
/// [`PageAlloc::pages_mut`] call (see [`pages`]): the `Some` addresses, in
/// order; each mapping comes back in its address's place.
#[inline(always)]
fn some_pages<A: PageAlloc>(
    alloc: &mut A,
    want: [Option<PhysAddr>; 4],
) -> Result<[Option<&mut [u8]>; 4], WriteError> {
    let mut it = want.iter().flatten().copied();
    let mapped: [Option<&mut [u8]>; 4] = match (it.next(), it.next(), it.next(), it.next()) {
        (Some(a), None, _, _) => {
            let [a] = pages(alloc, [a])?;
            [Some(a), None, None, None]
        }
        (Some(a), Some(b), None, _) => {
            let [a, b] = pages(alloc, [a, b])?;
            [Some(a), Some(b), None, None]
        }
        (Some(a), Some(b), Some(c), None) => {
            let [a, b, c] = pages(alloc, [a, b, c])?;
            [Some(a), Some(b), Some(c), None]
        }
        (Some(a), Some(b), Some(c), Some(d)) => {
            let [a, b, c, d] = pages(alloc, [a, b, c, d])?;
            [Some(a), Some(b), Some(c), Some(d)]
        }
        _ => [None, None, None, None],
    };
    let mut got = mapped.into_iter().flatten();
    Ok(want.map(|w| w.and_then(|_| got.next())))
}

fn unfit(phys: PhysAddr) -> WriteError {
    WriteError::Inconsistent {
        phys,
        what: "record does not fit its page",
    }
}

/// The offset of the record of `kind` at `phys` in its page of `ps`,
/// checking the whole record fits.
pub(crate) fn record_offset(
    enc: Encoding,
    kind: ObjectKind,
    ps: PageSize,
    phys: PhysAddr,
) -> Result<usize, WriteError> {
    let start = phys.page_offset(ps);
    match start.checked_add(enc.record_size(kind)) {
        Some(end) if end <= ps.bytes() => Ok(start),
        _ => Err(unfit(phys)),
    }
}

/// The plan of writing a new header `hdr` into the record of `kind` at
/// `phys`, in a page of `ps`.
pub(crate) fn hdr_plan(
    enc: Encoding,
    kind: ObjectKind,
    ps: PageSize,
    phys: PhysAddr,
    hdr: &IommuHdrSer,
) -> Result<PagePlan<'_>, WriteError> {
    let at = record_offset(enc, kind, ps, phys)?;
    let patch = Patch::new(at, hdr.as_bytes());
    enc.plan(phys, ps, PageRole::Array, [Some(patch), None])
}

/// The record of `kind` at `phys`, for reading.
pub(crate) fn record<A: PageAlloc>(
    alloc: &mut A,
    enc: Encoding,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<Rec<&[u8]>, WriteError> {
    let ps = alloc.page_size();
    let p = page(alloc, phys.page_base(ps))?;
    let start = phys.page_offset(ps);
    let bytes = start
        .checked_add(enc.record_size(kind))
        .and_then(|end| p.get(start..end))
        .ok_or(unfit(phys))?;
    Ok(Rec { phys, bytes })
}

/// What a device stores to name the record of `kind` at `phys` (see
/// [`Reference`]): its address, or its index in its chain, from the index
/// its page's header states.
pub(crate) fn reference_to<A: PageAlloc>(
    alloc: &mut A,
    enc: Encoding,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<u64, WriteError> {
    if enc.reference() == Reference::Phys {
        return Ok(phys.get());
    }
    let ps = alloc.page_size();
    let p = page(alloc, phys.page_base(ps))?;
    let bad = |what| WriteError::Inconsistent { phys, what };
    let page_index = enc
        .page_index(kind, p)
        .ok_or(bad("page header is not the writer's"))?;
    let slot = enc
        .slot_at(kind, phys.page_offset(ps))
        .ok_or(bad("the handle names no record slot"))?;
    page_index
        .checked_mul(enc.capacity(kind, ps))
        .and_then(|first| first.checked_add(slot))
        .ok_or(bad("record index overflows"))
}

fn array_hdr(phys: PhysAddr, p: &[u8]) -> Result<IommuArrayHdrSer, WriteError> {
    IommuArrayHdrSer::read_from_prefix(p)
        .map(|(h, _)| h)
        .map_err(|_| WriteError::Inconsistent {
            phys,
            what: "array header unreadable",
        })
}

/// How a new slot's page joins its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// It is the tail already.
    Tail,
    /// It is a fresh page, linked behind this full tail.
    Behind(PhysAddr),
    /// It is a fresh page heading an empty chain (version 2).
    Head,
}

/// The next free slot of a chain, found with nothing in the image written.
/// If the tail was full (or there was none), a fresh page was taken for
/// it, which [`Slot::abandon`] gives back if the operation fails before its
/// writes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    link: Link,
    /// The page the record goes in: the tail, or the fresh page.
    page: PhysAddr,
    /// The page's position in its chain.
    page_index: u64,
    /// The record's slot in that page; its `nr_objects` becomes `index + 1`.
    index: u64,
    /// The record's address (what its handle names).
    phys: PhysAddr,
}

impl Slot {
    /// Gives back the page taken for this slot, if any. For an operation
    /// that failed before writing anything: the page was never linked.
    fn abandon<A: PageAlloc>(&self, alloc: &mut A) {
        if self.link != Link::Tail {
            alloc.free_page(self.page);
        }
    }
}

/// One chain as the writer keeps it: the head, and the tail it appends to.
/// A version-2 chain without records has no pages: head and tail 0.
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

/// The root of an image and its chains, `[iommus, domains, devices]`: what
/// an append needs to know about the rest of the image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Image {
    pub(crate) root: PhysAddr,
    pub(crate) chains: [Chain; 3],
}

impl Image {
    /// The root and the current tails: the pages a fresh page must not be.
    pub(crate) fn in_use(&self) -> [PhysAddr; 4] {
        let [i, d, v] = &self.chains;
        [self.root, i.tail, d.tail, v.tail]
    }
}

impl Chain {
    /// A chain with no pages.
    pub(crate) const fn empty(kind: ObjectKind) -> Chain {
        Chain {
            kind,
            head: PhysAddr::NULL,
            tail: PhysAddr::NULL,
            tail_len: 0,
            pages: 0,
        }
    }

    /// A chain of one empty page (its header is the page's zeroes), as
    /// version 1 starts every chain.
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

    /// Records in the chain, deleted ones included: every page but the
    /// tail is full.
    pub(crate) fn records(&self, enc: Encoding, page: PageSize) -> Result<u64, WriteError> {
        let Some(full) = self.pages.checked_sub(1) else {
            return Ok(0);
        };
        full.checked_mul(enc.capacity(self.kind, page))
            .and_then(|n| n.checked_add(self.tail_len))
            .ok_or(WriteError::Inconsistent {
                phys: self.tail,
                what: "record count overflows",
            })
    }

    /// The slot the next record goes in: the tail's next one, or, if the
    /// tail is full or there is none, the first of a fresh page taken from
    /// `alloc` (which must not be one of `in_use`). Writes nothing.
    fn next_slot<A: PageAlloc>(
        &self,
        enc: Encoding,
        alloc: &mut A,
        in_use: &[PhysAddr],
    ) -> Result<Slot, WriteError> {
        let page_size = alloc.page_size();
        let last = self.pages.checked_sub(1);
        let (link, page, page_index, index) = match last {
            Some(last) if self.tail_len < enc.capacity(self.kind, page_size) => {
                (Link::Tail, self.tail, last, self.tail_len)
            }
            _ => {
                let new = take_page(alloc, PagePurpose::Chain(self.kind), in_use)?;
                let link = match last {
                    Some(_) => Link::Behind(self.tail),
                    None => Link::Head,
                };
                (link, new, self.pages, 0)
            }
        };
        let phys = enc
            .slot_offset(self.kind, index)
            .and_then(|off| page.checked_add(off));
        let Some(phys) = phys else {
            if link != Link::Tail {
                alloc.free_page(page);
            }
            return Err(WriteError::Inconsistent {
                phys: page,
                what: "slot address overflows",
            });
        };
        Ok(Slot {
            link,
            page,
            page_index,
            index,
            phys,
        })
    }

    /// The chain once the slot's record is in.
    fn with(&self, slot: &Slot) -> Chain {
        let mut next = *self;
        match slot.link {
            Link::Tail => {}
            Link::Head => {
                next.head = slot.page;
                next.tail = slot.page;
                next.pages = 1;
            }
            Link::Behind(_) => {
                next.tail = slot.page;
                next.pages = self.pages.saturating_add(1);
            }
        }
        next.tail_len = slot.index.saturating_add(1);
        next
    }

    /// Appends one record, whole or not at all (see
    /// [Failures](super#failures)): finds the slot (taking a fresh page if
    /// the tail is full or there is none), has `build` make the record's
    /// bytes for the slot's address, maps every page written at once (the
    /// root if it counts records, the old tail when linking, the slot's
    /// page, and the page of the IOMMU record whose header `iommu`
    /// rewrites, if any), runs `last` (the final step that may fail; the
    /// device index), then writes and checksums those pages. On any failure
    /// the fresh page is given back and nothing was written.
    #[inline(never)]
    pub(crate) fn append<A: PageAlloc>(
        &mut self,
        enc: Encoding,
        alloc: &mut A,
        image: &Image,
        iommu: Option<(PhysAddr, IommuHdrSer)>,
        build: impl FnOnce(&mut Rec<&mut [u8]>) -> Result<(), WriteError>,
        last: impl FnOnce(PhysAddr) -> Result<(), WriteError>,
    ) -> Result<PhysAddr, WriteError> {
        // The tail must be as this bookkeeping left it: a stale copy of the
        // writer (C callers can copy its state back over it) would hand out
        // a used slot again, or relink a page that already has a successor.
        if self.pages > 0 {
            let hdr = array_hdr(self.tail, page(alloc, self.tail)?)?;
            if hdr.nr_objects.get() != self.tail_len || hdr.next_array_phys.get() != 0 {
                return Err(WriteError::Inconsistent {
                    phys: self.tail,
                    what: "the tail page is not where the writer left it",
                });
            }
        }
        let slot = self.next_slot(enc, alloc, &image.in_use())?;
        let next = self.with(&slot);
        match self.fill(enc, alloc, image, &slot, &next, iommu, build, last) {
            Ok(()) => {
                *self = next;
                Ok(slot.phys)
            }
            Err(e) => {
                slot.abandon(alloc);
                Err(e)
            }
        }
    }

    /// The writes of [`append`](Self::append) once its slot is found:
    /// builds every byte it writes, once, plans each page's write, maps the
    /// pages, runs `last`, and only then writes.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fill<A: PageAlloc>(
        &self,
        enc: Encoding,
        alloc: &mut A,
        image: &Image,
        slot: &Slot,
        next: &Chain,
        iommu: Option<(PhysAddr, IommuHdrSer)>,
        build: impl FnOnce(&mut Rec<&mut [u8]>) -> Result<(), WriteError>,
        last: impl FnOnce(PhysAddr) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let ps = alloc.page_size();
        // The bytes.
        let mut buf = [0; PATCH_MAX];
        let rec = buf
            .get_mut(..enc.record_size(self.kind))
            .ok_or(unfit(slot.phys))?;
        build(&mut Rec {
            phys: slot.phys,
            bytes: &mut *rec,
        })?;
        let chains = match enc.root_counts_records() {
            true => Some(enc.root_chains(ps, &image.chains, Some(next))?),
            false => None,
        };
        let old = match slot.link {
            Link::Behind(tail) => Some(tail),
            _ => None,
        };
        let blk = IommuArrayHdrSer {
            next_array_phys: slot.page.get().into(),
            nr_objects: enc.capacity(self.kind, ps).into(),
        };
        let hdr = enc
            .array_hdr(self.kind, slot.page_index, next.tail_len)
            .ok_or(unfit(slot.page))?;
        // The plans: the root's chains, the old tail's link, the new
        // record and its page's header, the IOMMU's header.
        let root = match &chains {
            Some(c) => {
                let patch = Patch::new(ROOT_CHAINS_AT, c.as_bytes());
                Some(enc.plan(image.root, ps, PageRole::Root, [Some(patch), None])?)
            }
            None => None,
        };
        let link = match old {
            Some(tail) => {
                let patch = Patch::new(0, blk.as_bytes());
                Some(enc.plan(tail, ps, PageRole::Array, [Some(patch), None])?)
            }
            None => None,
        };
        let at = record_offset(enc, self.kind, ps, slot.phys)?;
        let patches = [
            Some(Patch::new(0, hdr.as_bytes())),
            Some(Patch::new(at, rec)),
        ];
        let target = enc.plan(slot.phys, ps, PageRole::Array, patches)?;
        let hw = match &iommu {
            Some((phys, h)) => Some(hdr_plan(enc, ObjectKind::Iommu, ps, *phys, h)?),
            None => None,
        };
        // The pages, and the last step that may fail.
        let want = [
            root.map(|_| image.root),
            old,
            Some(slot.page),
            iommu.map(|(hw, _)| hw.page_base(ps)),
        ];
        let mapped = some_pages(alloc, want)?;
        last(slot.phys)?;
        // The writes.
        let plans = [root.as_ref(), link.as_ref(), Some(&target), hw.as_ref()];
        for (plan, page) in plans.into_iter().zip(mapped) {
            if let (Some(plan), Some(page)) = (plan, page) {
                enc.commit(plan, page);
            }
        }
        Ok(())
    }

    /// The address of the record the reference `r` names in this chain
    /// (see [`Reference`]): the address itself, or the record at that
    /// index, found by walking the chain to its page.
    pub(crate) fn resolve<A: PageAlloc>(
        &self,
        enc: Encoding,
        alloc: &mut A,
        r: u64,
    ) -> Result<PhysAddr, WriteError> {
        if enc.reference() == Reference::Phys {
            return Ok(PhysAddr::new(r));
        }
        let bad = WriteError::Inconsistent {
            phys: self.head,
            what: "a device's reference is past the end of its chain",
        };
        let cap = enc.capacity(self.kind, alloc.page_size());
        let (Some(page_no), Some(slot)) = (r.checked_div(cap), r.checked_rem(cap)) else {
            return Err(bad);
        };
        let last = self.pages.checked_sub(1).ok_or(bad)?;
        if page_no > last || (page_no == last && slot >= self.tail_len) {
            return Err(bad);
        }
        let mut at = self.head;
        for _ in 0..page_no {
            at = PhysAddr::new(array_hdr(at, page(alloc, at)?)?.next_array_phys.get());
            if at.is_null() {
                return Err(bad);
            }
        }
        enc.slot_offset(self.kind, slot)
            .and_then(|off| at.checked_add(off))
            .ok_or(bad)
    }

    /// Calls `f` on every record of the chain, head to tail, until it
    /// breaks. Checks the chain is still what the writer built.
    #[inline(never)]
    pub(crate) fn scan<A: PageAlloc, T>(
        &self,
        enc: Encoding,
        alloc: &mut A,
        mut f: impl FnMut(Rec<&[u8]>) -> Result<ControlFlow<T>, WriteError>,
    ) -> Result<Option<T>, WriteError> {
        let size = enc.record_size(self.kind);
        let capacity = enc.capacity(self.kind, alloc.page_size());
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
                let off = enc
                    .slot_offset(self.kind, i)
                    .ok_or(bad("slot address overflows"))?;
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
