//! Benchmark (4): the check upstream's generic chained-block helper makes,
//! applied to the three chains of a version-1 image, followed by the same
//! visit of every live object as the kernel's walk.
//!
//! This follows `kho_block_set_restore()` (kernel/liveupdate/kho_block.c):
//! first Floyd's cycle finding over the whole chain, bounded by a block limit,
//! then one walk that refuses a block whose count is 0 or above the block's
//! capacity, and the block past the limit (`kho_block_add()`'s `-ENOSPC`).
//! Upstream also allocates a tracking struct per block during that walk; that
//! is bookkeeping for its own later use, not a check, and is left out here so
//! the reference is as cheap as it can honestly be. Nothing else is checked: not alignment, not that a page is
//! shared between chains, not the records.
//!
//! Pages are reached through the same [`Memory`] the validating reader uses,
//! so the two pay the same price for every page they touch.

use core::fmt;

use iommu_flb_abi::abi::Le64;
use iommu_flb_abi::abi::v1::{
    IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_DOMAIN_ARRAY_CAPACITY_4K, IOMMU_HW_ARRAY_CAPACITY_4K,
    IOMMU_SER_FLAG_DELETED, IommuArrayHdrSer, IommuDeviceSer, IommuDomainSer, IommuFlbSer,
    IommuHwSer,
};
use iommu_flb_abi::{Memory, PhysAddr};
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::fold;

/// Upstream's block limit (`KHO_MAX_BLOCKS`). It caps a chain at 10,000 pages,
/// i.e. 560,000 device records: image (b)'s device chain (19,018 pages) is
/// above it, so the benchmark passes a larger limit.
pub const KHO_MAX_BLOCKS: u64 = 10_000;

/// Why the upstream-style check refused an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KhoError {
    /// The root page cannot be read.
    RootUnreadable,
    /// A chain's page cannot be read (or is not page-aligned).
    Unreadable {
        /// The page's physical address.
        page: PhysAddr,
    },
    /// Floyd's walk met the same page twice, or ran past the block limit.
    Cyclic,
    /// The chain has more blocks than the limit.
    TooManyBlocks,
    /// A block holds no record or more than fit in a page.
    BadCount {
        /// The page's physical address.
        page: PhysAddr,
        /// Its `nr_objects`.
        count: u64,
    },
}

impl fmt::Display for KhoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KhoError::RootUnreadable => write!(f, "root page unreadable"),
            KhoError::Unreadable { page } => write!(f, "block {page} unreadable"),
            KhoError::Cyclic => write!(f, "block set is corrupted (cycle or too many blocks)"),
            KhoError::TooManyBlocks => write!(f, "more blocks than the limit"),
            KhoError::BadCount { page, count } => {
                write!(f, "block {page} contains invalid entry count: {count}")
            }
        }
    }
}

/// Checks all three chains of the image whose root is at `root` as upstream
/// checks a block set, then visits every live record; returns the same
/// checksum as the kernel's walk ([`crate::kernel_walk`]). Never inlined,
/// so that callgrind's `--toggle-collect` finds it.
#[inline(never)]
pub fn check_and_visit<M: Memory>(
    mem: &M,
    root: PhysAddr,
    max_blocks: u64,
) -> Result<u64, KhoError> {
    let page = mem
        .page(root, crate::pool::PS)
        .ok_or(KhoError::RootUnreadable)?;
    let (ser, _) = IommuFlbSer::read_from_prefix(page).map_err(|_| KhoError::RootUnreadable)?;
    let mut sum = 0u64;
    sum = chain::<M, IommuHwSer>(
        mem,
        ser.iommu_array_phys,
        IOMMU_HW_ARRAY_CAPACITY_4K,
        max_blocks,
        sum,
        fold::iommu,
    )?;
    sum = chain::<M, IommuDomainSer>(
        mem,
        ser.iommu_domain_array_phys,
        IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
        max_blocks,
        sum,
        fold::domain,
    )?;
    chain::<M, IommuDeviceSer>(
        mem,
        ser.device_array_phys,
        IOMMU_DEVICE_ARRAY_CAPACITY_4K,
        max_blocks,
        sum,
        fold::device,
    )
}

/// One record type's chain: the two upstream passes, then the visit folded
/// into the second pass.
fn chain<M, T>(
    mem: &M,
    head: Le64,
    capacity: u64,
    max_blocks: u64,
    mut sum: u64,
    visit: fn(u64, &T) -> u64,
) -> Result<u64, KhoError>
where
    M: Memory,
    T: FromBytes + Immutable + KnownLayout + Header,
{
    let head = PhysAddr::new(head.get());
    if head.is_null() {
        return Ok(sum);
    }
    if is_cyclic(mem, head, max_blocks)? {
        return Err(KhoError::Cyclic);
    }
    let mut phys = head;
    let mut blocks = 0u64;
    while !phys.is_null() {
        if blocks >= max_blocks {
            return Err(KhoError::TooManyBlocks);
        }
        blocks += 1;
        let page = mem
            .page(phys, crate::pool::PS)
            .ok_or(KhoError::Unreadable { page: phys })?;
        let (hdr, body) = IommuArrayHdrSer::ref_from_prefix(page)
            .map_err(|_| KhoError::Unreadable { page: phys })?;
        let count = hdr.nr_objects.get();
        if count == 0 || count > capacity {
            return Err(KhoError::BadCount { page: phys, count });
        }
        // `count <= capacity`, and `capacity` records fit in the page body.
        let n = usize::try_from(count).map_err(|_| KhoError::BadCount { page: phys, count })?;
        let (records, _) = <[T]>::ref_from_prefix_with_elems(body, n)
            .map_err(|_| KhoError::BadCount { page: phys, count })?;
        for r in records {
            if r.flags() & IOMMU_SER_FLAG_DELETED == 0 {
                sum = visit(sum, r);
            }
        }
        phys = PhysAddr::new(hdr.next_array_phys.get());
    }
    Ok(sum)
}

/// `kho_block_set_is_cyclic()`: Floyd's tortoise and hare, at most
/// `max_blocks` rounds (each moves the hare two blocks).
fn is_cyclic<M: Memory>(mem: &M, head: PhysAddr, max_blocks: u64) -> Result<bool, KhoError> {
    let next = |phys: PhysAddr| -> Result<PhysAddr, KhoError> {
        let page = mem
            .page(phys, crate::pool::PS)
            .ok_or(KhoError::Unreadable { page: phys })?;
        let (hdr, _) = IommuArrayHdrSer::ref_from_prefix(page)
            .map_err(|_| KhoError::Unreadable { page: phys })?;
        Ok(PhysAddr::new(hdr.next_array_phys.get()))
    };
    let mut fast = head;
    let mut slow = head;
    let mut rounds = 0u64;
    loop {
        if rounds >= max_blocks {
            return Ok(true);
        }
        rounds = rounds.saturating_add(1);
        let f1 = next(fast)?;
        if f1.is_null() {
            return Ok(false);
        }
        let f2 = next(f1)?;
        if f2.is_null() {
            return Ok(false);
        }
        fast = f2;
        slow = next(slow)?;
        if slow == fast {
            return Ok(true);
        }
    }
}

/// The record header every array element starts with.
pub(crate) trait Header {
    /// The record's `hdr.flags`.
    fn flags(&self) -> u32;
}

impl Header for IommuHwSer {
    fn flags(&self) -> u32 {
        self.hdr.flags.get()
    }
}

impl Header for IommuDomainSer {
    fn flags(&self) -> u32 {
        self.hdr.flags.get()
    }
}

impl Header for IommuDeviceSer {
    fn flags(&self) -> u32 {
        self.hdr.flags.get()
    }
}
