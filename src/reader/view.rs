//! The validated view: [`Image`] and the record handles it hands out.
//!
//! One view serves every format version: handles read the fields all
//! versions share through the version's functions ([`Ops`]), and give the
//! version's own struct through `v1()` / `v2()`.

use core::fmt;
use core::slice::ChunksExact;

use zerocopy::FromBytes;

use super::index::{Cursor, Found, Pages, ScratchElem, TAG_SHIFT};
use super::validate::iommu_type;
use crate::abi::PageSize;
use crate::abi::records_in_page;
use crate::abi::v1::{
    IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer, IommuFlbSer, IommuHwSer, IommuIntelSer,
    IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::abi::v2::{
    IommuDeviceIntelV2Ser, IommuDeviceV2Ser, IommuDomainV2Ser, IommuFlbV2Ser, IommuHwV2Ser,
    IommuIntelV2Ser,
};
use crate::error::Chain;
use crate::format::{DeviceFields, DomainFields, Ops, Ref, Root, Version, device_key, record_hdr};
use crate::mem::read_page;
use crate::{Memory, PhysAddr};

/// What validation proved about the image, besides the scratch contents.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape<'m> {
    pub ops: &'static Ops,
    pub root_phys: PhysAddr,
    pub root: Root<'m>,
    pub pages: [u64; 3],
    pub strides: [u64; 3],
    /// Only re-slicing the scratch (`Image::from_scratch`) needs it.
    pub iommu_slots: u64,
    pub live_iommus: usize,
    pub live_devices: usize,
    pub device_index: DeviceIndex,
}

/// What the device-key region of the scratch holds, which `find_device`
/// searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceIndex {
    /// Every live device's (key, device index), sorted by key.
    Full,
    /// The live devices' keys ascend in chain order (devices preserved in
    /// PCI enumeration order), so the chain is its own sorted index: the
    /// region holds the (key, device index) of the first live device of
    /// each device page that has one, this many, in chain order.
    PerPage(usize),
}

/// A validated handover image, of any format version.
///
/// Only [`validate`](super::validate) makes one, so everything it hands out
/// has been checked: live records only reference live records of the right
/// kind, IOMMUs are Intel or SMMUv3, keys are unique. It borrows the memory
/// (`'m`) and the caller's scratch (`'s`), where its indexes live.
///
/// Accessors re-read pages through the `Memory`, which must keep returning
/// the pages it returned during validation. If it does not, iterators end
/// early and lookups return `None`; nothing panics.
pub struct Image<'m, 's, M: ?Sized> {
    mem: &'m M,
    shape: Shape<'m>,
    pages: Pages<'s>,
    iommu_keys: &'s [ScratchElem],
    device_keys: &'s [ScratchElem],
}

impl<M: ?Sized> Clone for Image<'_, '_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: ?Sized> Copy for Image<'_, '_, M> {}

impl<M: ?Sized> fmt::Debug for Image<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("version", &self.shape.root.version)
            .field("root_phys", &self.shape.root_phys)
            .field("pages", &self.shape.pages)
            .field("live_iommus", &self.shape.live_iommus)
            .field("live_devices", &self.shape.live_devices)
            .finish_non_exhaustive()
    }
}

/// Feature bits of a version-2 root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features {
    /// `compat_features`: bits a reader may ignore (unknown ones are).
    pub compat: u64,
    /// `incompat_features`: bits a reader must know (unknown ones were
    /// refused).
    pub incompat: u64,
}

impl<'m, 's, M: Memory + ?Sized> Image<'m, 's, M> {
    pub(crate) fn from_parts(
        mem: &'m M,
        shape: Shape<'m>,
        walk: [&'s [ScratchElem]; 3],
        sorted: [&'s [ScratchElem]; 2],
        iommu_keys: &'s [ScratchElem],
        device_keys: &'s [ScratchElem],
    ) -> Self {
        let ps = shape.root.page_size;
        let hdr = shape.ops.page_hdr;
        Image {
            mem,
            shape,
            pages: Pages {
                page_size: ps,
                hdr,
                stride: shape.strides,
                cap: shape.strides.map(|st| records_in_page(ps, hdr, st)),
                magic: shape.strides.map(super::index::reciprocal),
                deleted: shape.ops.deleted,
                walk,
                sorted: sorted[0],
                sorted_devices: sorted[1],
            },
            iommu_keys,
            device_keys,
        }
    }

    /// The view on a scratch slice `validate` filled for `shape`: the
    /// regions in the order `validate` took them (see `index`).
    #[cfg_attr(not(any(feature = "alloc", feature = "ffi")), allow(dead_code))]
    pub(crate) fn from_scratch(mem: &'m M, shape: Shape<'m>, scratch: &'s [ScratchElem]) -> Self {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let start = at;
            at = at.saturating_add(n);
            scratch.get(start..at).unwrap_or(&[])
        };
        let len = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let [
            walk_iommu,
            walk_domain,
            iommu_region,
            walk_device,
            sorted,
            sorted_devices,
        ] = super::index::region_lens(shape.pages, shape.iommu_slots).map(|n| take(len(n)));
        let iommu_keys = iommu_region.get(..shape.live_iommus).unwrap_or(&[]);
        let walk = [walk_iommu, walk_domain, walk_device];
        let device_keys = take(match shape.device_index {
            DeviceIndex::Full => shape.live_devices,
            DeviceIndex::PerPage(n) => n,
        });
        let sorted = [sorted, sorted_devices];
        Image::from_parts(mem, shape, walk, sorted, iommu_keys, device_keys)
    }

    /// The root's stored `version`: 1 or 2, or a later version that a
    /// version-2 reader may read (see [`format`](Self::format)).
    pub fn version(&self) -> u64 {
        self.shape.root.version
    }

    /// The format version whose rules the image was validated by (1 or 2).
    pub fn format(&self) -> u64 {
        self.shape.ops.kind.number()
    }

    /// The page size of the image: the one validation was given for version
    /// 1, the root's for version 2.
    pub fn page_size(&self) -> PageSize {
        self.shape.root.page_size
    }

    /// The physical address of the root.
    pub fn root_phys(&self) -> PhysAddr {
        self.shape.root_phys
    }

    /// The version-1 root struct, for a version-1 image.
    pub fn root_v1(&self) -> Option<&'m IommuFlbSer> {
        (self.format() == 1)
            .then(|| IommuFlbSer::ref_from_prefix(self.shape.root.bytes).ok())
            .flatten()
            .map(|(r, _)| r)
    }

    /// The version-2 root struct, for a version-2 image.
    pub fn root_v2(&self) -> Option<&'m IommuFlbV2Ser> {
        (self.format() == 2)
            .then(|| IommuFlbV2Ser::ref_from_prefix(self.shape.root.bytes).ok())
            .flatten()
            .map(|(r, _)| r)
    }

    /// The root's feature bits (version 2; `None` for version 1, which has
    /// none).
    pub fn features(&self) -> Option<Features> {
        self.root_v2().map(|r| Features {
            compat: r.compat_features.get(),
            incompat: r.incompat_features.get(),
        })
    }

    /// The root's generation (version 2; `None` for version 1).
    pub fn generation(&self) -> Option<u64> {
        self.root_v2().map(|_| self.shape.root.generation)
    }

    /// Bytes per record of `chain` (the record size in version 1; the
    /// pages' `stride` in version 2; 0 for an empty version-2 chain or the
    /// root).
    pub fn chain_stride(&self, chain: Chain) -> u64 {
        self.pages.stride(chain)
    }

    /// The size of a record of `chain` in the image's version (a stride
    /// may be longer).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    pub(crate) fn record_size(&self, chain: Chain) -> usize {
        let ops = self.shape.ops;
        match chain {
            Chain::Iommu => ops.hw,
            Chain::Domain => ops.dom,
            Chain::Device => ops.dev,
        }
    }

    /// The memory the image is in.
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    pub(crate) fn memory(&self) -> &'m M {
        self.mem
    }

    /// Number of pages: the root's page and every chain page.
    pub fn page_count(&self) -> usize {
        self.pages
            .walk
            .iter()
            .map(|w| w.len())
            .fold(1, usize::saturating_add)
    }

    /// Number of pages in `chain`.
    pub fn chain_pages(&self, chain: Chain) -> usize {
        self.pages.chain(chain).len()
    }

    /// Number of live IOMMUs.
    pub fn live_iommus(&self) -> usize {
        self.shape.live_iommus
    }

    /// Number of live devices.
    pub fn live_devices(&self) -> usize {
        self.shape.live_devices
    }

    /// Every record slot of `chain`, `len` bytes of each.
    fn records(&self, chain: Chain, len: usize) -> Records<'m, 's, M> {
        Records {
            mem: self.mem,
            pages: self.pages,
            chain,
            len,
            walk: self.pages.chain(chain).iter(),
            next: 0,
            slots: [].chunks_exact(1),
        }
    }

    /// Every IOMMU record, deleted ones included, in chain order.
    pub fn all_iommus(&self) -> impl Iterator<Item = AnyIommu<'m>> + use<'m, 's, M> {
        let ops = self.shape.ops;
        self.records(Chain::Iommu, ops.hw)
            .map(move |(phys, bytes)| AnyIommu { phys, bytes, ops })
    }

    /// The live IOMMUs, in chain order.
    pub fn iommus(&self) -> impl Iterator<Item = Iommu<'m>> + use<'m, 's, M> {
        self.all_iommus()
            .filter(|r| !r.is_deleted())
            .filter_map(|r| r.iommu())
    }

    /// Every domain record, deleted ones included, in chain order.
    pub fn all_domains(&self) -> impl Iterator<Item = Domain<'m>> + use<'m, 's, M> {
        let ops = self.shape.ops;
        self.records(Chain::Domain, ops.dom)
            .map(move |(phys, bytes)| Domain { phys, bytes, ops })
    }

    /// The live domains, in chain order.
    pub fn domains(&self) -> impl Iterator<Item = Domain<'m>> + use<'m, 's, M> {
        self.all_domains().filter(|d| !d.is_deleted())
    }

    /// Every device record, deleted ones included, in chain order, with its
    /// domain and IOMMU resolved where its (possibly stale) references name
    /// a record of the right kind.
    pub fn all_devices(&self) -> impl Iterator<Item = AnyDevice<'m>> + use<'m, 's, M> {
        let this = *self;
        self.records(Chain::Device, self.shape.ops.dev)
            .scan(Lookups::default(), move |lookups, (phys, bytes)| {
                Some(this.any_device(phys, bytes, lookups))
            })
    }

    /// The live devices, in chain order.
    ///
    /// Each device's domain is looked up through a cursor on the domain
    /// page the previous one landed on, and a device naming the same IOMMU
    /// as the one before it shares that IOMMU's handle:
    /// devices preserved behind one IOMMU cost one IOMMU lookup between
    /// them. A caller that reads only the records' own fields skips the
    /// lookups with [`device_records`](Self::device_records).
    pub fn devices(&self) -> impl Iterator<Item = Device<'m>> + use<'m, 's, M> {
        let this = *self;
        let mut lookups = Lookups::default();
        self.device_records()
            .filter_map(move |r| this.any_device(r.phys, r.bytes, &mut lookups).device())
    }

    /// The live devices' records, in chain order, as they are stored:
    /// their own fields, with the domain and IOMMU they name not looked
    /// up. Validation proved every live device's references, so a caller
    /// that reads only the records' fields (as the kernel's walk does)
    /// pays for no lookup; [`resolve_device`](Self::resolve_device)
    /// resolves one, and [`devices`](Self::devices) resolves them all.
    ///
    /// Like every record iterator of the view, it is fastest driven from
    /// inside (`fold`, `for_each`, `sum`), which runs one loop per page; a
    /// `for` loop steps through `next`, one record at a time.
    pub fn device_records(&self) -> impl Iterator<Item = DeviceRecord<'m>> + use<'m, 's, M> {
        let ops = self.shape.ops;
        self.records(Chain::Device, ops.dev)
            .filter(move |(_, bytes)| record_hdr(bytes).1 & ops.deleted == 0)
            .map(move |(phys, bytes)| DeviceRecord { phys, bytes, ops })
    }

    /// A record of [`device_records`](Self::device_records) with its
    /// domain and IOMMU resolved, as [`devices`](Self::devices) yields it;
    /// `None` if they do not resolve in this image (a record of another
    /// image, or a memory that stopped serving the pages). Each call looks
    /// both up afresh, in `O(log P)`.
    pub fn resolve_device(&self, record: &DeviceRecord<'m>) -> Option<Device<'m>> {
        self.any_device(record.phys, record.bytes, &mut Lookups::default())
            .device()
    }

    /// The record a device's reference names in `chain`, deleted or not.
    #[inline(always)]
    fn resolve(
        &self,
        chain: Chain,
        to: Ref,
        len: usize,
        cursor: &mut Cursor<'m>,
    ) -> Option<Found<'m>> {
        self.pages
            .find(self.mem, chain, to, len, false, cursor)
            .ok()
    }

    /// The IOMMU a device's reference names, if it names one of a known
    /// type.
    #[inline(always)]
    fn resolve_iommu(&self, to: Ref, cursor: &mut Cursor<'m>) -> Option<Iommu<'m>> {
        let ops = self.shape.ops;
        let f = self.resolve(Chain::Iommu, to, ops.hw, cursor)?;
        AnyIommu {
            phys: f.phys,
            bytes: f.bytes,
            ops,
        }
        .iommu()
    }

    /// A device record with its references resolved through `lookups`.
    #[inline(always)]
    fn any_device(
        &self,
        phys: PhysAddr,
        bytes: &'m [u8],
        lookups: &mut Lookups<'m>,
    ) -> AnyDevice<'m> {
        let ops = self.shape.ops;
        let d = ops.device(bytes);
        let domain = self
            .resolve(Chain::Domain, d.domain, ops.dom, &mut lookups.domains)
            .map(|f| Domain {
                phys: f.phys,
                bytes: f.bytes,
                ops,
            });
        let iommu = match lookups.last {
            Some((to, iommu)) if to == d.iommu => iommu,
            _ => {
                let iommu = self.resolve_iommu(d.iommu, &mut lookups.iommus);
                lookups.last = Some((d.iommu, iommu));
                iommu
            }
        };
        AnyDevice {
            phys,
            bytes,
            ops,
            domain,
            iommu,
        }
    }

    /// The live IOMMU with this (token, type), in `O(log n)`.
    pub fn find_iommu(&self, token: u64, ty: IommuTypeSer) -> Option<Iommu<'m>> {
        let key = (token, ty.wire());
        let i = self
            .iommu_keys
            .binary_search_by(|e| (e.hi, e.lo >> TAG_SHIFT).cmp(&key))
            .ok()?;
        let index = self.iommu_keys.get(i)?.lo & super::index::LOW_MASK;
        self.iommu_by_index(index)?.iommu()
    }

    /// The live device with this PCI segment and devid (bus << 8 | devfn),
    /// in `O(log n)` (`O(log P + 56)`, a search over the device pages and
    /// a scan of one, when the keys ascend in chain order).
    pub fn find_device(&self, segment: u32, devid: u32) -> Option<Device<'m>> {
        let key = device_key(segment, devid);
        let index = match self.shape.device_index {
            DeviceIndex::Full => {
                let i = self.device_keys.binary_search_by(|e| e.hi.cmp(&key)).ok()?;
                self.device_keys.get(i)?.lo
            }
            DeviceIndex::PerPage(_) => self.find_in_page(key)?,
        };
        self.device_by_index(index)?.device()
    }

    /// The index of the live device with key `key` when the keys ascend in
    /// chain order ([`DeviceIndex::PerPage`]): the page whose first live
    /// device has the largest key not above `key` holds it, if any does
    /// (a page in between holds none live, or it would have an entry), so
    /// one binary search and one page's records, `O(log P + capacity)`.
    fn find_in_page(&self, key: u64) -> Option<u64> {
        let i = self.device_keys.partition_point(|e| e.hi <= key);
        let first = self.device_keys.get(i.checked_sub(1)?)?.lo;
        let cap = self.pages.capacity(Chain::Device);
        let page = first.checked_div(cap)?;
        let e = self
            .pages
            .chain(Chain::Device)
            .get(usize::try_from(page).ok()?)?;
        let bytes = read_page(self.mem, PhysAddr::new(e.hi), self.pages.page_size)?;
        let ops = self.shape.ops;
        let skip = usize::try_from(first.checked_rem(cap)?).ok()?;
        let mut recs = self.pages.records(Chain::Device, bytes, e.lo, ops.dev)?;
        let at = recs
            .by_ref()
            .skip(skip)
            .position(|rec| record_hdr(rec).1 & ops.deleted == 0 && ops.device(rec).key() == key)?;
        first.checked_add(u64::try_from(at).ok()?)
    }

    /// IOMMU record `index` of the chain (page × capacity + slot), deleted
    /// or not; `None` past the last.
    pub fn iommu_by_index(&self, index: u64) -> Option<AnyIommu<'m>> {
        let ops = self.shape.ops;
        let f = self
            .pages
            .record_at(self.mem, Chain::Iommu, index, ops.hw)?;
        Some(AnyIommu {
            phys: f.phys,
            bytes: f.bytes,
            ops,
        })
    }

    /// Domain record `index` of the chain, deleted or not.
    pub fn domain_by_index(&self, index: u64) -> Option<Domain<'m>> {
        let ops = self.shape.ops;
        let f = self
            .pages
            .record_at(self.mem, Chain::Domain, index, ops.dom)?;
        Some(Domain {
            phys: f.phys,
            bytes: f.bytes,
            ops,
        })
    }

    /// Device record `index` of the chain, deleted or not.
    pub fn device_by_index(&self, index: u64) -> Option<AnyDevice<'m>> {
        let r = self.device_record_by_index(index)?;
        Some(self.any_device(r.phys, r.bytes, &mut Lookups::default()))
    }

    /// Device record `index` of the chain as stored, deleted or not, the
    /// domain and IOMMU it names not looked up (as
    /// [`device_records`](Self::device_records) yields the live ones).
    pub fn device_record_by_index(&self, index: u64) -> Option<DeviceRecord<'m>> {
        let ops = self.shape.ops;
        let f = self
            .pages
            .record_at(self.mem, Chain::Device, index, ops.dev)?;
        Some(DeviceRecord {
            phys: f.phys,
            bytes: f.bytes,
            ops,
        })
    }

    /// Every page of the image exactly once, in restore order: the root's
    /// page, then the IOMMU, domain and device chains, each from its head.
    pub fn pages(&self) -> impl Iterator<Item = PhysAddr> + use<'m, 's, M> {
        let root = self.shape.root_phys.page_base(self.page_size());
        let [a, b, c] = self.pages.walk;
        core::iter::once(root).chain(a.iter().chain(b).chain(c).map(|e| PhysAddr::new(e.hi)))
    }

    /// Every page of the image in [`pages`](Self::pages) order, with its
    /// chain (`None` for the root's) and its index in the chain.
    pub fn chain_pages_iter(
        &self,
    ) -> impl Iterator<Item = (PhysAddr, Option<Chain>, u64)> + use<'m, 's, M> {
        let root = self.shape.root_phys.page_base(self.page_size());
        let [a, b, c] = self.pages.walk;
        let tag = |chain: Chain, w: &'s [ScratchElem]| {
            (0u64..)
                .zip(w)
                .map(move |(i, e)| (PhysAddr::new(e.hi), Some(chain), i))
        };
        core::iter::once((root, None, 0))
            .chain(tag(Chain::Iommu, a))
            .chain(tag(Chain::Domain, b))
            .chain(tag(Chain::Device, c))
    }

    /// Calls `restore` on every page in [`pages`](Self::pages) order and
    /// returns how many it restored (all of them).
    ///
    /// # Errors
    ///
    /// The first failure stops the walk; [`RestoreError`] says which page
    /// failed, its index, and so which pages were restored before it
    /// (`self.pages().take(err.restored())`).
    pub fn restore<E>(
        &self,
        mut restore: impl FnMut(PhysAddr) -> Result<(), E>,
    ) -> Result<usize, RestoreError<E>> {
        let mut done = 0usize;
        for page in self.pages() {
            restore(page).map_err(|error| RestoreError {
                page,
                index: done,
                error,
            })?;
            done = done.saturating_add(1);
        }
        Ok(done)
    }
}

/// The record slots of one chain, in chain order, with their addresses: one
/// `Memory::page` call per page. Ends early if the memory stops serving a
/// page.
struct Records<'m, 's, M: ?Sized> {
    mem: &'m M,
    pages: Pages<'s>,
    chain: Chain,
    len: usize,
    walk: core::slice::Iter<'s, ScratchElem>,
    /// The address of the next record of the current page.
    next: u64,
    /// The current page's record slots, from the next one on.
    slots: ChunksExact<'m, u8>,
}

impl<'m, M: Memory + ?Sized> Iterator for Records<'m, '_, M> {
    type Item = (PhysAddr, &'m [u8]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(slot) = self.slots.next() {
                // Validation proved the records fit their page, so the
                // address after the last is at most the page's end (which
                // wraps only for the top page, and is not used then).
                let phys = self.next;
                self.next = phys.wrapping_add(self.pages.stride(self.chain));
                // `slots` makes them at least `len` long.
                return slot.get(..self.len).map(|rec| (PhysAddr::new(phys), rec));
            }
            let e = self.walk.next()?;
            let phys = PhysAddr::new(e.hi);
            let slots = read_page(self.mem, phys, self.pages.page_size)
                .and_then(|page| self.pages.slots(self.chain, page, e.lo, self.len));
            let Some(slots) = slots else {
                return self.stop();
            };
            self.slots = slots;
            self.next = e.hi.wrapping_add(self.pages.hdr);
        }
    }

    /// [`next`](Self::next) page by page, each page's records in a loop of
    /// their own: what `for_each`, `fold` and `sum` over the records (and
    /// over `filter` and `map` of them) run, with the iterator's state in
    /// registers rather than stored back after every record.
    #[inline(always)]
    fn fold<B, G: FnMut(B, Self::Item) -> B>(mut self, init: B, mut g: G) -> B {
        let stride = self.pages.stride(self.chain);
        let mut acc = init;
        loop {
            let mut phys = self.next;
            for slot in self.slots {
                let Some(rec) = slot.get(..self.len) else {
                    return acc;
                };
                acc = g(acc, (PhysAddr::new(phys), rec));
                phys = phys.wrapping_add(stride);
            }
            // The page turn of `next`, written out again: a helper shared
            // by both cost 1.8% more instructions on benchmark (3), image
            // (a) (callgrind), the loop's state no longer in registers.
            let Some(e) = self.walk.next() else {
                return acc;
            };
            let slots = read_page(self.mem, PhysAddr::new(e.hi), self.pages.page_size)
                .and_then(|page| self.pages.slots(self.chain, page, e.lo, self.len));
            let Some(slots) = slots else {
                return acc;
            };
            self.slots = slots;
            self.next = e.hi.wrapping_add(self.pages.hdr);
        }
    }
}

impl<M: ?Sized> Records<'_, '_, M> {
    /// Ends the iteration for good.
    #[cold]
    fn stop<T>(&mut self) -> Option<T> {
        self.walk = [].iter();
        self.slots = [].chunks_exact(1);
        None
    }
}

/// The lookups a walk over device records keeps between records: a cursor
/// per target chain (see `Pages::locate`), and the last IOMMU reference
/// with what it resolved to. A reference resolves by its value alone, so a
/// device naming the IOMMU the one before it named reuses that answer.
#[derive(Default)]
struct Lookups<'m> {
    domains: Cursor<'m>,
    iommus: Cursor<'m>,
    last: Option<(Ref, Option<Iommu<'m>>)>,
}

/// A failed [`Image::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreError<E> {
    /// The page whose restore failed.
    pub page: PhysAddr,
    /// Its index in [`Image::pages`] order; the pages before it were
    /// restored.
    pub index: usize,
    /// What the restore callback returned.
    pub error: E,
}

impl<E> RestoreError<E> {
    /// How many pages were restored before the failure: the first
    /// `restored()` of [`Image::pages`].
    pub fn restored(&self) -> usize {
        self.index
    }
}

impl<E: fmt::Display> fmt::Display for RestoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iommu-flb: restoring page {} ({}) failed after {} pages: {}",
            self.index, self.page, self.index, self.error
        )
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for RestoreError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The vendor part of an IOMMU record, chosen by its `type`: the wire
/// struct of the image's version.
#[derive(Clone, Copy, Debug)]
pub enum IommuPayload<'m> {
    /// `IOMMU_INTEL`, version 1.
    Intel(&'m IommuIntelSer),
    /// `IOMMU_ARM_SMMUV3` (the same struct in both versions).
    Smmuv3(&'m IommuSmmuv3HwSer),
    /// `IOMMU_INTEL`, version 2.
    IntelV2(&'m IommuIntelV2Ser),
}

/// The vendor part of a device record, chosen by its IOMMU's `type`: the
/// wire struct of the image's version.
#[derive(Clone, Copy, Debug)]
pub enum DevicePayload<'m> {
    /// The device's IOMMU is `IOMMU_INTEL`, version 1.
    Intel(&'m IommuDeviceIntelSer),
    /// The device's IOMMU is `IOMMU_ARM_SMMUV3` (the same struct in both
    /// versions).
    Smmuv3(&'m IommuMasterSmmuv3Ser),
    /// The device's IOMMU is `IOMMU_INTEL`, version 2.
    IntelV2(&'m IommuDeviceIntelV2Ser),
}

/// The struct `T` over `bytes`, if the record is of version `version`.
fn as_version<'m, T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    ops: &Ops,
    version: Version,
    bytes: &'m [u8],
) -> Option<&'m T> {
    (ops.kind == version)
        .then(|| T::ref_from_prefix(bytes).ok())
        .flatten()
        .map(|(t, _)| t)
}

/// `v1()` and `v2()` of a record handle: the record as the struct of its
/// image's version, `None` in an image of the other.
macro_rules! versioned {
    ($v1:ty, $v2:ty) => {
        /// The version-1 record, in a version-1 image.
        #[inline]
        pub fn v1(&self) -> Option<&'m $v1> {
            as_version(self.ops, Version::V1, self.bytes)
        }

        /// The version-2 record, in a version-2 image.
        #[inline]
        pub fn v2(&self) -> Option<&'m $v2> {
            as_version(self.ops, Version::V2, self.bytes)
        }
    };
}

/// An IOMMU record whose type is Intel or SMMUv3 (every live one is).
#[derive(Clone, Copy)]
pub struct Iommu<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
    ty: IommuTypeSer,
    payload: IommuPayload<'m>,
}

impl<'m> Iommu<'m> {
    /// The record's physical address.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    versioned!(IommuHwSer, IommuHwV2Ser);

    /// Intel or SMMUv3.
    #[inline]
    pub fn iommu_type(&self) -> IommuTypeSer {
        self.ty
    }

    /// The IOMMU's token (its MMIO base).
    #[inline]
    pub fn token(&self) -> u64 {
        self.ops.hw_fields(self.bytes).0
    }

    /// Live devices behind it.
    #[inline]
    pub fn ref_count(&self) -> u32 {
        record_hdr(self.bytes).0
    }

    /// The record's flag bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        record_hdr(self.bytes).1
    }

    /// Whether the record is deleted (never, for one from
    /// [`Image::iommus`]).
    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.flags() & self.ops.deleted != 0
    }

    /// The vendor state.
    #[inline]
    pub fn payload(&self) -> IommuPayload<'m> {
        self.payload
    }
}

impl fmt::Debug for Iommu<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommu")
            .field("phys", &self.phys)
            .field("type", &self.ty)
            .field("token", &self.token())
            .field("ref_count", &self.ref_count())
            .field("flags", &self.flags())
            .field("payload", &self.payload())
            .finish()
    }
}

/// Any IOMMU record, deleted or not (from [`Image::all_iommus`]). A deleted
/// record is not validated: its type may be anything.
#[derive(Clone, Copy)]
pub struct AnyIommu<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
}

impl<'m> AnyIommu<'m> {
    /// The record of format `ops` at `phys`, its bytes `bytes`.
    #[inline(always)]
    pub(crate) fn new(phys: PhysAddr, bytes: &'m [u8], ops: &'static Ops) -> Self {
        AnyIommu { phys, bytes, ops }
    }

    /// The record's physical address.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    versioned!(IommuHwSer, IommuHwV2Ser);

    /// The stored `token`.
    #[inline]
    pub fn token(&self) -> u64 {
        self.ops.hw_fields(self.bytes).0
    }

    /// The stored `type`, which a deleted record may hold any value in.
    #[inline]
    pub fn raw_type(&self) -> u64 {
        self.ops.hw_fields(self.bytes).1
    }

    /// The record's flag bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        record_hdr(self.bytes).1
    }

    /// Whether the record is deleted.
    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.flags() & self.ops.deleted != 0
    }

    /// The record as an [`Iommu`], if its type is Intel or SMMUv3 (always,
    /// when it is live).
    #[inline]
    pub fn iommu(&self) -> Option<Iommu<'m>> {
        let ty = iommu_type(self.raw_type())?;
        Some(Iommu {
            phys: self.phys,
            bytes: self.bytes,
            ops: self.ops,
            ty,
            payload: self.ops.hw_payload(self.bytes, ty)?,
        })
    }
}

impl fmt::Debug for AnyIommu<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyIommu")
            .field("phys", &self.phys)
            .field("type", &self.raw_type())
            .field("token", &self.token())
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}

/// A domain record.
#[derive(Clone, Copy)]
pub struct Domain<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
}

impl<'m> Domain<'m> {
    /// The record of format `ops` at `phys`, its bytes `bytes`.
    #[inline(always)]
    pub(crate) fn new(phys: PhysAddr, bytes: &'m [u8], ops: &'static Ops) -> Self {
        Domain { phys, bytes, ops }
    }

    /// The record's physical address.
    #[inline]
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    versioned!(IommuDomainSer, IommuDomainV2Ser);

    #[inline]
    fn fields(&self) -> DomainFields {
        self.ops.domain(self.bytes)
    }

    /// The record's flag bits.
    #[inline]
    pub fn flags(&self) -> u32 {
        record_hdr(self.bytes).1
    }

    /// The stored `ref_count` (1 when live).
    #[inline]
    pub fn ref_count(&self) -> u32 {
        record_hdr(self.bytes).0
    }

    /// Whether the record is deleted (never, for one from
    /// [`Image::domains`] or [`Device::domain`]).
    #[inline]
    pub fn is_deleted(&self) -> bool {
        self.flags() & self.ops.deleted != 0
    }

    /// The top-level page table (non-zero and 4 KiB-aligned when live).
    #[inline]
    pub fn top_table_phys(&self) -> PhysAddr {
        PhysAddr::new(self.fields().top_table_phys)
    }

    /// The level of the top-level table.
    #[inline]
    pub fn top_level(&self) -> u64 {
        self.fields().top_level
    }

    /// The virtual address size in bits.
    #[inline]
    pub fn vasz(&self) -> u32 {
        self.fields().vasz
    }

    /// Whether addresses are sign-extended (0 or 1).
    #[inline]
    pub fn sign_extend(&self) -> u8 {
        self.fields().sign_extend
    }
}

impl fmt::Debug for Domain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("phys", &self.phys)
            .field("flags", &self.flags())
            .field("top_table_phys", &self.top_table_phys())
            .field("top_level", &self.top_level())
            .field("vasz", &self.vasz())
            .finish_non_exhaustive()
    }
}

/// A device record with its domain and IOMMU resolved. Every one from
/// [`Image::devices`] or [`Image::find_device`] is live; one from
/// [`AnyDevice::device`] may be deleted.
#[derive(Clone, Copy)]
pub struct Device<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
    domain: Domain<'m>,
    iommu: Iommu<'m>,
    payload: DevicePayload<'m>,
}

/// The accessors device handles share.
macro_rules! device_fields {
    () => {
        /// The record's physical address.
        #[inline]
        pub fn phys(&self) -> PhysAddr {
            self.phys
        }

        versioned!(IommuDeviceSer, IommuDeviceV2Ser);

        #[inline]
        fn fields(&self) -> DeviceFields {
            self.ops.device(self.bytes)
        }

        /// The PCI segment (`pci_domain_nr`).
        #[inline]
        pub fn segment(&self) -> u32 {
            self.fields().segment
        }

        /// The PCI requester ID, bus << 8 | devfn.
        #[inline]
        pub fn devid(&self) -> u32 {
            self.fields().devid
        }

        /// The DMA owner's token.
        #[inline]
        pub fn dma_owner_token(&self) -> u64 {
            self.fields().dma_owner_token
        }

        /// The attachment's hardware ID.
        #[inline]
        pub fn attachment_id(&self) -> u64 {
            self.fields().attachment_id
        }

        /// The stored reference to the device's domain: the domain
        /// record's physical address in version 1, its index in the domain
        /// chain in version 2.
        #[inline]
        pub fn domain_ref(&self) -> u64 {
            self.fields().domain.raw()
        }

        /// The stored reference to the device's IOMMU: the IOMMU record's
        /// physical address in version 1, its index in the IOMMU chain in
        /// version 2.
        #[inline]
        pub fn iommu_ref(&self) -> u64 {
            self.fields().iommu.raw()
        }

        /// The record's flag bits.
        #[inline]
        pub fn flags(&self) -> u32 {
            record_hdr(self.bytes).1
        }

        /// The stored `ref_count` (1 when live).
        #[inline]
        pub fn ref_count(&self) -> u32 {
            record_hdr(self.bytes).0
        }

        /// Whether the record is deleted.
        #[inline]
        pub fn is_deleted(&self) -> bool {
            self.flags() & self.ops.deleted != 0
        }
    };
}

impl<'m> Device<'m> {
    device_fields!();

    /// The domain the device names.
    #[inline]
    pub fn domain(&self) -> Domain<'m> {
        self.domain
    }

    /// The IOMMU the device names.
    #[inline]
    pub fn iommu(&self) -> Iommu<'m> {
        self.iommu
    }

    /// The vendor state, chosen by the IOMMU's type.
    #[inline]
    pub fn payload(&self) -> DevicePayload<'m> {
        self.payload
    }
}

impl fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("phys", &self.phys)
            .field("segment", &self.segment())
            .field("devid", &self.devid())
            .field("domain", &self.domain.phys)
            .field("iommu", &self.iommu.phys)
            .field("payload", &self.payload())
            .finish_non_exhaustive()
    }
}

/// A live device record as it is stored (from [`Image::device_records`]):
/// its own fields; the domain and IOMMU it names are not looked up
/// ([`Image::resolve_device`] does).
#[derive(Clone, Copy)]
pub struct DeviceRecord<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
}

impl<'m> DeviceRecord<'m> {
    /// The record of format `ops` at `phys`, its bytes `bytes`.
    #[inline(always)]
    pub(crate) fn new(phys: PhysAddr, bytes: &'m [u8], ops: &'static Ops) -> Self {
        DeviceRecord { phys, bytes, ops }
    }

    device_fields!();
}

impl fmt::Debug for DeviceRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRecord")
            .field("phys", &self.phys)
            .field("segment", &self.segment())
            .field("devid", &self.devid())
            .field("domain_ref", &self.domain_ref())
            .field("iommu_ref", &self.iommu_ref())
            .finish_non_exhaustive()
    }
}

/// Any device record, deleted or not (from [`Image::all_devices`]). A
/// deleted record is not validated: its references may be stale, so its
/// domain and IOMMU are resolved only where they name a record of the right
/// kind.
#[derive(Clone, Copy)]
pub struct AnyDevice<'m> {
    phys: PhysAddr,
    bytes: &'m [u8],
    ops: &'static Ops,
    domain: Option<Domain<'m>>,
    iommu: Option<Iommu<'m>>,
}

impl<'m> AnyDevice<'m> {
    device_fields!();

    /// The domain record the device names, if it names one.
    #[inline]
    pub fn domain(&self) -> Option<Domain<'m>> {
        self.domain
    }

    /// The IOMMU record the device names, if it names one of a known type.
    #[inline]
    pub fn iommu(&self) -> Option<Iommu<'m>> {
        self.iommu
    }

    /// The vendor state, if the IOMMU resolves.
    #[inline]
    pub fn payload(&self) -> Option<DevicePayload<'m>> {
        self.iommu
            .and_then(|i| self.ops.dev_payload(self.bytes, i.ty))
    }

    /// The record as a [`Device`], if both its domain and its IOMMU resolve
    /// (always, when it is live).
    #[inline]
    pub fn device(&self) -> Option<Device<'m>> {
        Some(Device {
            phys: self.phys,
            bytes: self.bytes,
            ops: self.ops,
            domain: self.domain?,
            iommu: self.iommu?,
            payload: self.payload()?,
        })
    }
}

impl fmt::Debug for AnyDevice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyDevice")
            .field("phys", &self.phys)
            .field("segment", &self.segment())
            .field("devid", &self.devid())
            .field("flags", &self.flags())
            .field("domain", &self.domain.map(|d| d.phys))
            .field("iommu", &self.iommu.map(|i| i.phys))
            .finish_non_exhaustive()
    }
}

/// What an [`Image`] knows besides its scratch, without borrows, so the C
/// boundary (`src/ffi`) can keep it in caller memory between calls and
/// [`Image::thaw`] it again.
#[cfg(feature = "ffi")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frozen {
    ops: &'static Ops,
    page_size: PageSize,
    root_phys: PhysAddr,
    root_version: u64,
    heads: [PhysAddr; 3],
    counts: Option<[(u64, u64); 3]>,
    generation: u64,
    pages: [u64; 3],
    strides: [u64; 3],
    iommu_slots: u64,
    live_iommus: usize,
    live_devices: usize,
    device_index: DeviceIndex,
}

#[cfg(feature = "ffi")]
impl<'m> super::PutShape<'m> for Option<&mut Frozen> {
    fn put(
        &mut self,
        ops: &'static Ops,
        root_phys: PhysAddr,
        r: &Root<'m>,
        s: &super::validate::Survey,
        (live_iommus, live_devices, device_index): (usize, usize, DeviceIndex),
    ) {
        if let Some(f) = self {
            **f = Frozen {
                ops,
                page_size: r.page_size,
                root_phys,
                root_version: r.version,
                heads: r.heads,
                counts: r.counts,
                generation: r.generation,
                pages: s.pages,
                strides: s.strides,
                iommu_slots: s.objects[0],
                live_iommus,
                live_devices,
                device_index,
            };
        }
    }
}

#[cfg(feature = "ffi")]
impl Frozen {
    /// What a scratch holds before a validation puts an image's shape
    /// there: an image of no pages, never handed out (its state says
    /// `DEAD_MAGIC` until the shape is in).
    pub(crate) const UNSET: Frozen = Frozen {
        ops: <crate::format::v1::V1 as super::validate::HasOps>::OPS,
        page_size: crate::abi::PageSize::Size4K,
        root_phys: PhysAddr::NULL,
        root_version: 0,
        heads: [PhysAddr::NULL; 3],
        counts: None,
        generation: 0,
        pages: [0; 3],
        strides: [0; 3],
        iommu_slots: 0,
        live_iommus: 0,
        live_devices: 0,
        device_index: DeviceIndex::PerPage(0),
    };
}

/// Crate-internal access by position, for the C boundary's cursors and
/// lookups (`src/ffi`): each call costs O(1) or O(log n), where the public
/// iterators would have to start over.
#[cfg(feature = "ffi")]
impl<'m, 's, M: Memory + ?Sized> Image<'m, 's, M> {
    /// The image whose shape validation put into `f`, over the same memory and the same
    /// scratch; `None` if the root can no longer be read.
    pub(crate) fn thaw(mem: &'m M, f: Frozen, scratch: &'s [ScratchElem]) -> Option<Self> {
        let ps = f.page_size;
        let bytes = read_page(mem, f.root_phys.page_base(ps), ps)?;
        let shape = Shape {
            ops: f.ops,
            root_phys: f.root_phys,
            root: Root {
                version: f.root_version,
                page_size: ps,
                heads: f.heads,
                counts: f.counts,
                generation: f.generation,
                bytes,
            },
            pages: f.pages,
            strides: f.strides,
            iommu_slots: f.iommu_slots,
            live_iommus: f.live_iommus,
            live_devices: f.live_devices,
            device_index: f.device_index,
        };
        Some(Image::from_scratch(mem, shape, scratch))
    }

    /// The live device whose record starts at `phys`.
    pub(crate) fn device_at(&self, phys: PhysAddr) -> Option<Device<'m>> {
        let f = self
            .pages
            .locate(
                self.mem,
                Chain::Device,
                phys,
                self.shape.ops.dev,
                true,
                &mut Cursor::default(),
            )
            .ok()?;
        self.any_device(f.phys, f.bytes, &mut Lookups::default())
            .device()
    }

    /// Page `index` in [`pages`](Self::pages) order.
    pub(crate) fn page_by_index(&self, index: usize) -> Option<PhysAddr> {
        let Some(mut rest) = index.checked_sub(1) else {
            return Some(self.shape.root_phys.page_base(self.page_size()));
        };
        for walk in self.pages.walk {
            match walk.get(rest) {
                Some(e) => return Some(PhysAddr::new(e.hi)),
                None => rest = rest.checked_sub(walk.len())?,
            }
        }
        None
    }
}

/// An [`Image`] that owns its scratch (from
/// [`validate_alloc`](super::validate_alloc)).
#[cfg(feature = "alloc")]
pub struct OwnedImage<'m, M: ?Sized> {
    mem: &'m M,
    shape: Shape<'m>,
    scratch: alloc::vec::Vec<ScratchElem>,
}

#[cfg(feature = "alloc")]
impl<'m, M: Memory + ?Sized> OwnedImage<'m, M> {
    pub(crate) fn new(mem: &'m M, shape: Shape<'m>, scratch: alloc::vec::Vec<ScratchElem>) -> Self {
        OwnedImage {
            mem,
            shape,
            scratch,
        }
    }

    /// The validated view.
    pub fn image(&self) -> Image<'m, '_, M> {
        Image::from_scratch(self.mem, self.shape, &self.scratch)
    }
}

#[cfg(feature = "alloc")]
impl<M: ?Sized> fmt::Debug for OwnedImage<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedImage")
            .field("root_phys", &self.shape.root_phys)
            .field("scratch_len", &self.scratch.len())
            .finish_non_exhaustive()
    }
}
