//! The writer: builds a version-1 or version-2 image the way the outgoing
//! kernel does (see [Versions](#versions)).
//!
//! [`Writer::start`] takes the root and one zeroed page per chain, exactly
//! as the kernel's first preserve does, so the three heads are set even in
//! an image with nothing in it. Records are only appended, in place in the
//! pages; a full tail gets a new zeroed page linked behind it only when the
//! next record needs it; unpreserving sets `IOMMU_SER_FLAG_DELETED` and
//! never reuses a domain or device slot. At every step the image is one the
//! reader accepts, and an operation that fails changes nothing (see
//! [Failures](#failures)).
//!
//! # Versions
//!
//! [`Writer::start`] writes version 1, the layout kernels write today.
//! [`Writer::with_config`] with [`Config::v2`] writes version 2
//! ([`abi::v2`](crate::abi::v2)) with the same operations, guarantees and
//! handles. What differs:
//!
//! - The root is `iommu_flb_v2_ser` and records each chain's head, page
//!   count and record count (deleted records included), so every append
//!   rewrites it.
//! - A chain has no pages until its first record (a version-2 page never
//!   holds 0 records): `with_config` takes only the root, and a chain's
//!   first record takes its head page and sets the root's head.
//! - Every array page starts with `iommu_array_v2_hdr_ser` (magic, chain,
//!   stride, its index in the chain, the root's generation), records follow
//!   it at 48, and have version 2's layouts (no next-kernel state).
//! - A device names its domain and IOMMU by their index in their chain
//!   (page index × capacity + slot), not by address.
//! - Every page carries a CRC-32 of its bytes. An operation recomputes the
//!   CRC of exactly the pages it writes, after its other writes to them, in
//!   its last phase (which cannot fail); the whole image is never
//!   re-hashed.
//!
//! The parts that differ live in one internal type, chosen from the
//! version; the chains and operations are shared.
//!
//! # IOMMUs and their reference counts
//!
//! In the image, a live IOMMU's `ref_count` is the number of live devices
//! behind it: the kernel preserves an IOMMU with its first device and
//! deletes it when its last device goes. The writer keeps that rule while
//! letting the caller preserve an IOMMU first and attach devices to its
//! handle: [`Writer::preserve_iommu`] writes the full record but marks it
//! `DELETED` with `ref_count` 0 (invisible to readers; an "idle" IOMMU);
//! the first device makes it live with `ref_count` 1; each further device
//! adds one; when the last device is unpreserved it is `DELETED` again, as
//! in the kernel, and a later device revives the same slot (the kernel
//! would append a new slot there; readers cannot tell the difference).
//! [`Writer::unpreserve_iommu`] is refused while devices remain, and marks
//! an idle IOMMU unpreserved for good by also setting its stale `type` to
//! `IOMMU_INVALID`, the writer's only use of a deleted record's stale
//! fields.
//!
//! # Failures
//!
//! An operation happens whole or not at all, whatever the allocator does:
//! a refused operation leaves every byte of the image as it was. Each
//! operation runs in three phases:
//!
//! 1. It reads and checks (handles, duplicates, reference counts, the
//!    records it updates), builds the new record's bytes in a buffer of its
//!    own, and, if the chain's tail is full, takes a fresh page and proves it
//!    zeroed. Nothing in the image is written.
//! 2. It maps every page it writes with one
//!    [`PageAlloc::pages_mut`] call: in version 2 the root (whose counts
//!    change with every append), the old tail and the fresh page when it
//!    links one, the record's page, and for a device the IOMMU's page (whose
//!    `ref_count` changes with it). A mapping failure here is
//!    [`WriteError::PageUnavailable`]; the fresh page, never linked, is
//!    given back. A device's index entry is made last in this phase.
//! 3. It writes, with plain copies into the mapped pages, then (version
//!    2) recomputes those pages' CRCs: no step can fail.
//!
//! A page the allocator hands out and the writer refuses
//! ([`WriteError::BadPage`]) is neither used nor given back, as the writer
//! cannot prove it is not in use elsewhere.
//!
//! # Page order
//!
//! [`Writer::start`] takes the root, then the IOMMU, domain and device
//! chain heads (the root's field order); version 2 takes only the root.
//! [`Writer::abort`] gives pages back
//! in the order of the kernel's FLB code, which walks (to restore or to
//! free) the domain chain, then the device chain, then the IOMMU chain, each
//! head to tail, and frees the root last, because the chain heads are read
//! from it; an empty version-2 chain has no pages to give back. Each page's
//! link is read before the page is freed.
//!
//! # Cost
//!
//! Appending is O(1). Finding a live duplicate device is O(1) with a
//! [`SliceIndex`], or with no index when devices come in ascending
//! (segment, devid) order; otherwise it scans the device chain (see
//! [`index`]). Checking a duplicate IOMMU scans the IOMMU chain (IOMMUs are
//! few). Unpreserving a domain scans the device chain for devices still
//! attached to it.
//!
//! ```
//! # #[cfg(feature = "alloc")]
//! # fn main() -> Result<(), iommu_flb_abi::writer::WriteError> {
//! use iommu_flb_abi::PhysAddr;
//! use iommu_flb_abi::writer::*;
//!
//! let mut w = Writer::start(MapAlloc::sequential(PhysAddr::new(0x10_0000)))?;
//! let iommu = w.preserve_iommu(0xfed9_0000, IommuPayloadInit::Intel(IntelIommuInit {
//!     phys_addr: PhysAddr::new(0xfed9_0000),
//!     root_table: PhysAddr::new(0x20_0000),
//!     context_tables_bitmap: [1, 0, 0, 0, 0, 0, 0, 0],
//! }))?;
//! let domain = w.preserve_domain(DomainInit {
//!     top_table_phys: PhysAddr::new(0x30_0000), top_level: 4, vasz: 48, sign_extend: 0,
//! })?;
//! w.preserve_device(DeviceInit {
//!     pci_domain_nr: 0, devid: 0x0300, dma_owner_token: 7, attachment_id: 1,
//!     payload: DevicePayloadInit::Intel(IntelDeviceInit::default()),
//! }, domain, iommu)?;
//! let (root, pages) = w.finish();
//! assert_eq!(root, PhysAddr::new(0x10_0000));
//! assert_eq!(pages.map().len(), 4);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "alloc"))]
//! # fn main() {}
//! ```

mod alloc;
mod chain;
mod encoding;
mod error;
pub mod index;
mod map_alloc;
mod ops;
mod record;
mod types;

pub use self::alloc::PageAlloc;
pub use self::encoding::Config;
pub use self::error::{BadPage, DomainField, ObjectKind, PagePurpose, WriteError};
pub use self::index::{DeviceIndex, IndexSlot, Lookup, NoIndex, SliceIndex};
pub use self::map_alloc::{FailingAlloc, random_failures};
#[cfg(feature = "alloc")]
pub use self::map_alloc::{MapAlloc, PageOrder};
pub use self::types::{
    DeviceHandle, DeviceInit, DeviceKey, DevicePayloadInit, DomainHandle, DomainInit,
    IntelDeviceInit, IntelIommuInit, IommuHandle, IommuPayloadInit, Smmuv3DeviceInit,
    Smmuv3IommuInit,
};

use self::chain::{Chain, Image, take_page};
use self::encoding::{Encoding, PageRole, Patch};
pub(crate) use self::types::WriterId;
use crate::PhysAddr;
use crate::abi::PageSize;

/// How many objects and pages an image holds, as the writer counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Pages taken: the root plus every array page.
    pub pages: u64,
    /// IOMMUs preserved and not unpreserved (live or idle).
    pub iommus: u64,
    /// IOMMUs with at least one live device: the live IOMMUs a reader sees.
    pub live_iommus: u64,
    /// Live domains.
    pub domains: u64,
    /// Live devices.
    pub devices: u64,
}

/// Builds one image in pages from `A`; see the [module docs](self).
///
/// `X` finds duplicate devices; the default [`NoIndex`] needs no storage.
#[derive(Debug)]
pub struct Writer<A: PageAlloc, X: DeviceIndex = NoIndex> {
    alloc: A,
    index: X,
    enc: Encoding,
    id: WriterId,
    root: PhysAddr,
    iommus: Chain,
    domains: Chain,
    devices: Chain,
    /// The highest device key ever written, if any: a key above it cannot
    /// be a duplicate, so ascending preserves need no scan.
    max_device_key: Option<DeviceKey>,
    counts: Counts,
}

/// Frees `root` and the chains `[iommus, domains, devices]` in the kernel's
/// order: domain, device and IOMMU chains head to tail, then the root. A
/// chain not started yet has no pages.
fn give_back<A: PageAlloc>(alloc: &mut A, root: PhysAddr, chains: &[Chain; 3]) {
    let [iommus, domains, devices] = chains;
    for c in [domains, devices, iommus] {
        c.free(alloc);
    }
    alloc.free_page(root);
}

/// A fresh identity for each writer, so handles cannot cross images.
fn next_writer_id() -> WriterId {
    use core::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    // Relaxed: only uniqueness matters, which fetch_add gives in any order.
    WriterId(NEXT.fetch_add(1, Ordering::Relaxed))
}

impl<A: PageAlloc> Writer<A> {
    /// Starts an image: the root (version 1) and one empty page per chain.
    /// On failure, every page taken is given back to `alloc`, which is then
    /// dropped; pass `&mut alloc` to keep it.
    pub fn start(alloc: A) -> Result<Self, WriteError> {
        Writer::with_index(alloc, NoIndex)
    }

    /// Starts an image in the format `config` names (see
    /// [Versions](self#versions)). Version 1 is [`Writer::start`]; version
    /// 2 takes only the root, as its chains have no pages until their first
    /// record. Refuses a version other than 1 or 2, and a version-1
    /// `generation` other than 0, with [`WriteError::BadConfig`] (before
    /// taking any page).
    ///
    /// ```
    /// # #[cfg(feature = "alloc")]
    /// # fn main() -> Result<(), iommu_flb_abi::writer::WriteError> {
    /// use iommu_flb_abi::PhysAddr;
    /// use iommu_flb_abi::writer::*;
    ///
    /// let pages = MapAlloc::sequential(PhysAddr::new(0x10_0000));
    /// let mut w = Writer::with_config(pages, Config::v2(0x2a))?;
    /// assert_eq!((w.version(), w.counts().pages), (2, 1));
    /// let domain = w.preserve_domain(DomainInit {
    ///     top_table_phys: PhysAddr::new(0x30_0000), top_level: 4, vasz: 48, sign_extend: 0,
    /// })?;
    /// // The domain chain's head page came with its first record, which
    /// // starts after the 48-byte version-2 page header.
    /// assert_eq!(domain.phys(), PhysAddr::new(0x10_1000 + 48));
    /// assert_eq!(w.counts().pages, 2);
    /// assert_eq!(
    ///     Writer::with_config(MapAlloc::sequential(PhysAddr::new(0x10_0000)), Config { version: 3, ..Config::v2(1) }).err(),
    ///     Some(WriteError::BadConfig { field: "version" }),
    /// );
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "alloc"))]
    /// # fn main() {}
    /// ```
    pub fn with_config(alloc: A, config: Config) -> Result<Self, WriteError> {
        Writer::with_config_and_index(alloc, config, NoIndex)
    }
}

impl<A: PageAlloc, X: DeviceIndex> Writer<A, X> {
    /// [`Writer::start`] with a device index (which should be empty).
    pub fn with_index(alloc: A, index: X) -> Result<Self, WriteError> {
        Writer::with_config_and_index(alloc, Config::v1(), index)
    }

    /// [`Writer::with_config`] with a device index (which should be empty).
    pub fn with_config_and_index(
        mut alloc: A,
        config: Config,
        index: X,
    ) -> Result<Self, WriteError> {
        let enc = Encoding::from_config(&config)?;
        let root = take_page(&mut alloc, PagePurpose::Root, &[])?;
        let mut taken = [root, PhysAddr::NULL, PhysAddr::NULL, PhysAddr::NULL];
        let mut chains =
            [ObjectKind::Iommu, ObjectKind::Domain, ObjectKind::Device].map(Chain::empty);
        let heads = chains.iter_mut().filter(|_| enc.empty_chain_has_page());
        for (i, chain) in (1..).zip(heads) {
            match Chain::start(&mut alloc, chain.kind, &taken) {
                Ok(c) => {
                    *chain = c;
                    if let Some(t) = taken.get_mut(i) {
                        *t = c.head;
                    }
                }
                Err(e) => {
                    give_back(&mut alloc, root, &chains);
                    return Err(e);
                }
            }
        }
        let ps = alloc.page_size();
        let written = enc.root(ps, &chains).and_then(|r| {
            let patch = Some(Patch::new(0, r.as_bytes()));
            let plan = enc.plan(root, ps, PageRole::Root, [patch, None])?;
            let page = alloc
                .page_mut(root)
                .filter(|p| p.len() == ps.bytes())
                .ok_or(WriteError::PageUnavailable { phys: root })?;
            enc.commit(&plan, page);
            Ok(())
        });
        if let Err(e) = written {
            give_back(&mut alloc, root, &chains);
            return Err(e);
        }
        let [iommus, domains, devices] = chains;
        Ok(Writer {
            alloc,
            index,
            enc,
            id: next_writer_id(),
            root,
            iommus,
            domains,
            devices,
            max_device_key: None,
            counts: Counts::default(),
        })
    }

    /// The root's physical address: what LUO hands to the next kernel.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The format version the image is written in (1 or 2).
    pub fn version(&self) -> u64 {
        self.enc.version()
    }

    /// The size of the image's pages (the allocator's page size).
    pub fn page_size(&self) -> PageSize {
        self.alloc.page_size()
    }

    /// The identity this writer's handles carry: the C boundary
    /// (`src/ffi`) makes handles from the addresses a C caller passes once
    /// it has proven them this writer's.
    #[cfg(feature = "ffi")]
    pub(crate) fn id(&self) -> WriterId {
        self.id
    }

    /// What the image holds.
    pub fn counts(&self) -> Counts {
        let pages = [self.iommus, self.domains, self.devices]
            .iter()
            .fold(1u64, |n, c| n.saturating_add(c.pages));
        Counts {
            pages,
            ..self.counts
        }
    }

    /// The allocator (for tests and tools: with [`MapAlloc`] it is also the
    /// [`Memory`](crate::Memory) the image can be read from).
    pub fn alloc(&self) -> &A {
        &self.alloc
    }

    /// The allocator, mutably. Changing the image's pages through it voids
    /// the writer's guarantees; it detects some changes as
    /// [`WriteError::Inconsistent`].
    pub fn alloc_mut(&mut self) -> &mut A {
        &mut self.alloc
    }

    /// The device index.
    pub fn index(&self) -> &X {
        &self.index
    }

    /// Ends writing; returns the root's address for the handover, and the
    /// allocator, which still holds every page.
    pub fn finish(self) -> (PhysAddr, A) {
        (self.root, self.alloc)
    }

    /// Abandons the image and gives every page back to the allocator in the
    /// kernel's order (see [Page order](self#page-order)): the domain,
    /// device and IOMMU chains, each head to tail, then the root. A chain
    /// page that cannot be mapped (to read its link) is given back too, but
    /// the pages after it in its chain cannot be found and stay with the
    /// allocator.
    pub fn abort(mut self) -> A {
        give_back(
            &mut self.alloc,
            self.root,
            &[self.iommus, self.domains, self.devices],
        );
        self.alloc
    }

    /// The root and the chains as they are now.
    fn image(&self) -> Image {
        Image {
            root: self.root,
            chains: [self.iommus, self.domains, self.devices],
        }
    }
}
