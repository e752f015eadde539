//! The writer's side of the chains: taking pages, appending slots, linking
//! a new tail, walking its own chains. The only writer code that follows or
//! writes `next_array_phys`.

use core::ops::ControlFlow;

use zerocopy::{FromBytes, IntoBytes};

use super::error::{BadPage, ObjectKind, PagePurpose};
use super::record::Rec;
use super::{PageAlloc, WriteError};
use crate::PhysAddr;
use crate::abi::PAGE_SIZE;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IOMMU_DEVICE_ARRAY_CAPACITY, IOMMU_DOMAIN_ARRAY_CAPACITY,
    IOMMU_HW_ARRAY_CAPACITY, IommuArrayHdrSer, IommuDeviceSer, IommuDomainSer, IommuHwSer,
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

    /// Records per array page.
    pub(crate) const fn capacity(self) -> u64 {
        match self {
            ObjectKind::Iommu => IOMMU_HW_ARRAY_CAPACITY,
            ObjectKind::Domain => IOMMU_DOMAIN_ARRAY_CAPACITY,
            ObjectKind::Device => IOMMU_DEVICE_ARRAY_CAPACITY,
        }
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
    if !phys.is_page_aligned() {
        return Err(bad(BadPage::Unaligned));
    }
    if in_use.contains(&phys) {
        return Err(bad(BadPage::InImage));
    }
    let page = alloc.page_mut(phys).ok_or(bad(BadPage::Unmapped))?;
    if page.iter().any(|b| *b != 0) {
        return Err(bad(BadPage::NotZeroed));
    }
    Ok(phys)
}

/// Reads a page the writer took, or says it is gone.
pub(crate) fn page<A: PageAlloc>(
    alloc: &mut A,
    phys: PhysAddr,
) -> Result<&mut [u8; PAGE_SIZE], WriteError> {
    alloc
        .page_mut(phys)
        .ok_or(WriteError::PageUnavailable { phys })
}

/// The record of `kind` at `phys` (which the writer handed out as a handle
/// or read from its own record).
pub(crate) fn record<A: PageAlloc>(
    alloc: &mut A,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<Rec<'_>, WriteError> {
    let p = page(alloc, phys.page_base())?;
    let start = phys.page_offset();
    let bytes = start
        .checked_add(kind.record_size())
        .and_then(|end| p.get_mut(start..end))
        .ok_or(WriteError::Inconsistent {
            phys,
            what: "record does not fit its page",
        })?;
    Ok(Rec { phys, bytes })
}

fn array_hdr(phys: PhysAddr, p: &[u8; PAGE_SIZE]) -> Result<IommuArrayHdrSer, WriteError> {
    IommuArrayHdrSer::read_from_prefix(p)
        .map(|(h, _)| h)
        .map_err(|_| WriteError::Inconsistent {
            phys,
            what: "array header unreadable",
        })
}

fn set_array_hdr(p: &mut [u8; PAGE_SIZE], next: PhysAddr, nr: u64) {
    let h = IommuArrayHdrSer {
        next_array_phys: next.get().into(),
        nr_objects: nr.into(),
    };
    // A 16-byte header always fits the 4096-byte page.
    if let Some(dst) = p.get_mut(..size_of::<IommuArrayHdrSer>()) {
        dst.copy_from_slice(h.as_bytes());
    }
}

/// Where slot `index` of a page of `kind` starts, relative to the page.
fn slot_offset(kind: ObjectKind, index: u64) -> Option<u64> {
    let size = u64::try_from(kind.record_size()).ok()?;
    index.checked_mul(size)?.checked_add(IOMMU_ARRAY_HDR_SIZE)
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

    /// Appends one record: links a new zeroed tail page first if the tail
    /// is full (as the kernel does, only when needed), lets `write` fill the
    /// free slot, and only then counts it in the tail's `nr_objects`. If
    /// `write` fails the slot is not counted, so readers never see it; the
    /// image is still valid (at worst a full page followed by an empty tail).
    pub(crate) fn append<A: PageAlloc>(
        &mut self,
        alloc: &mut A,
        in_use: &[PhysAddr],
        write: impl FnOnce(&mut Rec<'_>) -> Result<(), WriteError>,
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
        if self.tail_len >= self.kind.capacity() {
            let new = take_page(alloc, PagePurpose::Chain(self.kind), in_use)?;
            let old = page(alloc, self.tail)?;
            set_array_hdr(old, new, self.tail_len);
            self.tail = new;
            self.tail_len = 0;
            self.pages = self.pages.saturating_add(1);
        }
        let bad = |what| WriteError::Inconsistent {
            phys: self.tail,
            what,
        };
        let start = slot_offset(self.kind, self.tail_len).ok_or(bad("slot offset overflows"))?;
        let phys = self
            .tail
            .checked_add(start)
            .ok_or(bad("slot address overflows"))?;
        let tail = page(alloc, self.tail)?;
        let bytes = usize::try_from(start)
            .ok()
            .and_then(|s| Some(s..s.checked_add(self.kind.record_size())?))
            .and_then(|r| tail.get_mut(r))
            .ok_or(bad("record does not fit its page"))?;
        write(&mut Rec { phys, bytes })?;
        let len = self.tail_len.saturating_add(1);
        set_array_hdr(tail, PhysAddr::NULL, len);
        self.tail_len = len;
        Ok(phys)
    }

    /// Calls `f` on every record of the chain, head to tail, until it
    /// breaks. Checks the chain is still what the writer built.
    pub(crate) fn scan<A: PageAlloc, T>(
        &self,
        alloc: &mut A,
        mut f: impl FnMut(Rec<'_>) -> Result<ControlFlow<T>, WriteError>,
    ) -> Result<Option<T>, WriteError> {
        let mut at = self.head;
        for _ in 0..self.pages {
            let hdr = array_hdr(at, page(alloc, at)?)?;
            let nr = hdr.nr_objects.get();
            if nr > self.kind.capacity() {
                return Err(WriteError::Inconsistent {
                    phys: at,
                    what: "nr_objects above capacity",
                });
            }
            for i in 0..nr {
                let phys = slot_offset(self.kind, i)
                    .and_then(|off| at.checked_add(off))
                    .ok_or(WriteError::Inconsistent {
                        phys: at,
                        what: "slot address overflows",
                    })?;
                if let ControlFlow::Break(t) = f(record(alloc, self.kind, phys)?)? {
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
    /// freeing it. Stops early only if a page became inaccessible (whatever
    /// follows it cannot be found without a heap).
    pub(crate) fn free<A: PageAlloc>(&self, alloc: &mut A) {
        let mut at = self.head;
        for _ in 0..self.pages {
            if at.is_null() {
                return;
            }
            let next = match alloc.page_mut(at) {
                Some(p) => array_hdr(at, p)
                    .map(|h| PhysAddr::new(h.next_array_phys.get()))
                    .unwrap_or(PhysAddr::NULL),
                None => return,
            };
            alloc.free_page(at);
            at = next;
        }
    }
}
