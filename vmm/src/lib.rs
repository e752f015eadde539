//! Validating an IOMMU handover image in a guest's memory, for VMMs built
//! on [rust-vmm](https://github.com/rust-vmm)'s `vm-memory`.
//!
//! A guest kernel that hands its IOMMU state over in a live update leaves
//! the image in its own RAM and names its root by guest physical address.
//! [`GuestImage`] is the [`Memory`] through which
//! [`iommu_flb_abi::reader`] reads that image out of any
//! [`GuestMemory`]: `GuestMemoryMmap`, a Xen mapping, or the VMM's own
//! backend. It reads at the `GuestMemory`'s addresses: for the guest's RAM
//! itself (not an `IommuMemory` view of it, whose addresses are I/O
//! virtual) those are the guest physical addresses the guest's kernel wrote
//! into the image.
//!
//! # Example
//!
//! ```
//! use iommu_flb_abi::PhysAddr;
//! use iommu_flb_abi::reader::{self, Options};
//! use iommu_flb_abi::writer::*;
//! use iommu_flb_vmm::GuestImage;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! // A guest with 1 MiB of RAM at 1 MiB.
//! let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x10_0000)])?;
//!
//! // What the guest's kernel does: write an image into its RAM.
//! let mut w = Writer::start(MapAlloc::sequential(PhysAddr::new(0x10_0000)))?;
//! let iommu = w.preserve_iommu(0xfed9_0000, IommuPayloadInit::Intel(IntelIommuInit::default()))?;
//! let domain = w.preserve_domain(DomainInit {
//!     top_table_phys: PhysAddr::new(0x30_0000), top_level: 4, vasz: 48, sign_extend: 0,
//! })?;
//! w.preserve_device(DeviceInit {
//!     pci_domain_nr: 0, devid: 0x0300, dma_owner_token: 7, attachment_id: 1,
//!     payload: DevicePayloadInit::Intel(IntelDeviceInit::default()),
//! }, domain, iommu)?;
//! let (root, pages) = w.finish();
//! for (phys, page) in pages.map().iter() {
//!     guest.write_slice(page, GuestAddress(phys.get()))?;
//! }
//!
//! // What the VMM does with the root address the guest handed over.
//! let mem = GuestImage::new(&guest);
//! let image = reader::validate_alloc(&mem, root, &Options::default())?;
//! let device = image.image().find_device(0, 0x0300).expect("preserved");
//! assert_eq!(device.domain().top_table_phys(), PhysAddr::new(0x30_0000));
//! assert_eq!(device.iommu().token(), 0xfed9_0000);
//!
//! // A root in no guest RAM is refused, not read.
//! let err = reader::validate_alloc(&mem, PhysAddr::new(0x4000_0000), &Options::default())
//!     .unwrap_err();
//! assert_eq!(err.kind(), iommu_flb_abi::error::ErrorKind::RootUnreadable);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which pages are readable
//!
//! A page of size `size` at `phys` is readable when `phys` is a multiple of
//! `size` and every one of its bytes is guest memory readable through the
//! `GuestMemory` (vm-memory's [`Bytes::read_slice`] with read permission
//! succeeds for the whole page). A page that touches a hole between
//! regions, lies outside guest memory, or is refused by an IOMMU view is
//! unreadable, which the reader reports as
//! [`ErrorKind::RootUnreadable`](iommu_flb_abi::error::ErrorKind::RootUnreadable)
//! or [`ErrorKind::Unreadable`](iommu_flb_abi::error::ErrorKind::Unreadable)
//! with the page's address. A page that spans two regions with no hole
//! between them is read whole: regions are the VMM's bookkeeping, not the
//! guest's (a guest's 64 KiB page may cross a boundary the VMM put at a
//! 4 KiB multiple, and an IOMMU view splits a page wherever its
//! translations do). Nothing is read outside guest memory and no address
//! arithmetic can overflow: a page's last byte is computed with a checked
//! addition, and vm-memory checks every range it is given. A request never
//! panics.
//!
//! # Why pages are copied
//!
//! Each page the reader asks for is copied out of the guest once, into a
//! buffer the `GuestImage` owns, and every later request for it is
//! answered from that copy (an unreadable answer is remembered too):
//!
//! - [`Memory::page`] hands out `&[u8]`, and a shared reference promises
//!   that the bytes do not change while it lives. Guest memory is written
//!   by the guest's vCPUs, by devices and by other VMM threads at any time,
//!   so a `&[u8]` into it would be undefined behaviour; vm-memory's safe
//!   API never gives one out, only volatile access (`VolatileSlice`,
//!   `read_slice`).
//! - The reader reads a page more than once (the chain walk, the record
//!   checks, then the view's accessors) and trusts later reads because an
//!   earlier one was checked. Were each read to go to the guest, a guest
//!   that rewrites a page between two reads would get records past
//!   validation that validation never saw. With one copy per page, the
//!   checks and the view see the same bytes.
//!
//! The cost is one copy of each page the reader needs, held until the
//! `GuestImage` is dropped (the validated image borrows it). Each page is a
//! snapshot of the moment it was first asked for: a guest that keeps
//! running may change a page after another was copied, and the image is
//! then a consistent mix the reader validated as a whole. For one point in
//! time, pause the vCPUs while validating, as a VMM does for a live update
//! anyway. The image's page list (`pages`, `restore`) comes from the copies
//! too, so it is the list that was validated.
//!
//! The crate has no `unsafe` code (`#![forbid(unsafe_code)]`): the copies
//! live in write-once cells ([`OnceLock`]) that are never moved or freed
//! while the `GuestImage` lives, which is what lets it hand out references
//! to them through `&self`.
//!
//! # Versions
//!
//! This release is for vm-memory 0.18, whose `GuestMemory` is the
//! permission-checked trait (`IommuMemory` implements it; every
//! `GuestMemoryBackend`, `GuestMemoryMmap` among them, does through
//! vm-memory's blanket implementation). It needs no vm-memory feature.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// A guest's memory as the [`Memory`] the reader reads an image from: the
/// page at `phys` is the guest's page at guest physical address `phys`,
/// copied out of the guest the first time it is asked for (see the
/// [crate documentation](crate) for which pages are readable, and why they
/// are copied).
///
/// It is `Send` and `Sync` when `G` is; a page two threads ask for at once
/// is still read from the guest once.
pub struct GuestImage<'a, G: GuestMemory + ?Sized> {
    guest: &'a G,
    copies: Copies,
}

impl<'a, G: GuestMemory + ?Sized> GuestImage<'a, G> {
    /// A view of `guest` that has copied nothing yet.
    pub fn new(guest: &'a G) -> Self {
        GuestImage {
            guest,
            copies: Copies::new(),
        }
    }

    /// The guest memory it reads.
    pub fn guest(&self) -> &'a G {
        self.guest
    }

    /// How many distinct pages (address and size) have been asked for,
    /// readable or not: each was read from the guest exactly once. The
    /// readable ones are the copies it holds.
    pub fn pages_asked(&self) -> usize {
        self.copies.len()
    }
}

impl<G: GuestMemory + ?Sized> fmt::Debug for GuestImage<'_, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestImage")
            .field("pages_asked", &self.pages_asked())
            .finish_non_exhaustive()
    }
}

impl<G: GuestMemory + ?Sized> Memory for GuestImage<'_, G> {
    /// The copy of the guest's page at `phys`, or `None` if `phys` is not a
    /// multiple of `size` or the page is not wholly readable guest memory
    /// (when it was first asked for).
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if !phys.is_page_aligned(size) {
            return None;
        }
        self.copies
            .slot(phys, size)?
            .get_or_init(|| copy_page(self.guest, phys, size))
            .as_deref()
    }
}

/// The bytes of the page of `size` at `phys`, read from `guest` into a
/// buffer of our own, or `None` if any of them is not readable.
fn copy_page<G: GuestMemory + ?Sized>(
    guest: &G,
    phys: PhysAddr,
    size: PageSize,
) -> Option<Box<[u8]>> {
    // The page's last byte must be an address. For an aligned page it
    // always is (the top page ends at u64::MAX), but the range vm-memory
    // gets is then known not to wrap whatever its own checks do.
    phys.checked_add(size.mask())?;
    let mut copy = vec![0u8; size.bytes()].into_boxed_slice();
    guest.read_slice(&mut copy, GuestAddress(phys.get())).ok()?;
    Some(copy)
}

/// What the guest held at each page asked for: its copy, or `None` if it
/// could not be read. Filled once per page, never changed or moved after.
type Slot = OnceLock<Option<Box<[u8]>>>;

/// Slot storage: buckets of 1, 2, 4, ... slots, each allocated when its
/// first slot is needed.
const BUCKETS: usize = 64;

/// The pages asked for so far and their slots, append-only.
struct Copies {
    /// Each page's slot number, by (address, size), numbered in the order
    /// the pages were first asked for.
    index: Mutex<BTreeMap<(u64, PageSize), usize>>,
    /// Slot `n` is at offset `n + 1 - 2^b` of bucket `b = log2(n + 1)`,
    /// which holds `2^b` slots: storage that grows without moving a slot,
    /// so a reference to one lives as long as `&self`.
    buckets: [OnceLock<Box<[Slot]>>; BUCKETS],
}

impl Copies {
    fn new() -> Self {
        Copies {
            index: Mutex::new(BTreeMap::new()),
            buckets: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// How many pages have a slot.
    fn len(&self) -> usize {
        self.index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The slot of the page of `size` at `phys`, made on its first request.
    /// `None` only past 2^64 - 1 pages.
    fn slot(&self, phys: PhysAddr, size: PageSize) -> Option<&Slot> {
        let n = {
            // Nothing below panics with the lock held, and the map is
            // consistent after each insert: a poisoned lock is still good.
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            let next = index.len();
            *index.entry((phys.get(), size)).or_insert(next)
        };
        let pos = n.checked_add(1)?;
        let b = pos.ilog2();
        let offset = pos ^ (1usize << b);
        self.buckets
            .get(usize::try_from(b).ok()?)?
            .get_or_init(|| (0..1usize << b).map(|_| OnceLock::new()).collect())
            .get(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_stable_and_numbered_by_first_request() {
        let c = Copies::new();
        let k4 = PageSize::Size4K;
        let addrs: Vec<PhysAddr> = (0..100u64).map(|i| PhysAddr::new(i << 12)).collect();
        let first: Vec<*const Slot> = addrs
            .iter()
            .map(|&a| std::ptr::from_ref(c.slot(a, k4).expect("slot")))
            .collect();
        assert_eq!(c.len(), 100);
        let again: Vec<*const Slot> = addrs
            .iter()
            .rev()
            .map(|&a| std::ptr::from_ref(c.slot(a, k4).expect("slot")))
            .rev()
            .collect();
        assert_eq!(first, again, "a page keeps its slot");
        let mut sorted = first.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100, "no two pages share a slot");
        let other_size = c.slot(addrs[0], PageSize::Size16K).expect("slot");
        assert!(
            !std::ptr::eq(other_size, first[0]),
            "size is part of the key"
        );
        assert_eq!(c.len(), 101);
    }
}
