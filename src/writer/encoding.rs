//! What differs between the format versions the writer writes, behind one
//! small type: the root, the array page header, the record layouts, how a
//! device names its domain and IOMMU, whether an empty chain has a page,
//! and the page checksums. The chains and the operations are shared and
//! ask an [`Encoding`] whenever the version matters.
//!
//! Everything an operation writes is built first, as [`Patch`]es (bytes and
//! where they go) checked to fit their page as a [`PagePlan`], before any
//! page is mapped; only then is each written by [`Encoding::commit`], which
//! cannot fail and recomputes the checksum of the page it wrote (version
//! 2).

use core::mem::size_of;

use static_assertions::const_assert;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::WriteError;
use super::chain::Chain;
use super::error::ObjectKind;
use super::record::Rec;
use super::types::{DeviceInit, IommuPayloadInit};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_LUO_FLB_VERSION, IOMMU_SER_FLAG_DELETED, IommuArrayHdrSer, IommuDeviceSer,
    IommuDomainSer, IommuFlbSer, IommuHdrSer, IommuHwSer, objects_per_page,
};
use crate::abi::v2::{
    IOMMU_FLB_V2_FLAG_DELETED, IOMMU_FLB_V2_PAGE_CRC_OFFSET, IOMMU_FLB_V2_PAGE_HDR_SIZE,
    IOMMU_FLB_V2_PAGE_MAGIC, IOMMU_FLB_V2_ROOT_CRC_OFFSET, IOMMU_FLB_V2_ROOT_MAGIC,
    IOMMU_FLB_V2_VERSION, IommuArrayV2HdrSer, IommuDeviceV2Ser, IommuDomainV2Ser,
    IommuFlbV2ChainSer, IommuFlbV2Ser, IommuHwV2Ser, records_per_page,
};
use crate::crc::Crc32;
use crate::format::Format;
use crate::format::v1::V1;
use crate::format::v2::V2;
use crate::formats::Negotiated;

/// The format an image is written in, chosen when it is started
/// ([`Writer::with_config`](super::Writer::with_config)).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The format version: 1 (what kernels write today) or 2 (the
    /// self-checking format of [`abi::v2`](crate::abi::v2)).
    pub version: u64,
    /// Version 2's `generation`, which every array page repeats; 0 for
    /// version 1, which has none.
    pub generation: u64,
    /// The CRC-32 function of version 2's page checksums (unused by
    /// version 1).
    pub crc: Crc32,
}

impl Config {
    /// Version 1, as [`Writer::start`](super::Writer::start) writes it.
    pub const fn v1() -> Self {
        Config {
            version: IOMMU_LUO_FLB_VERSION,
            generation: 0,
            crc: Crc32::FAST,
        }
    }

    /// Version 2 with this handover's `generation`, checksummed with
    /// [`Crc32::FAST`].
    pub const fn v2(generation: u64) -> Self {
        Config {
            version: IOMMU_FLB_V2_VERSION,
            generation,
            crc: Crc32::FAST,
        }
    }

    /// What [`negotiate`](crate::formats::negotiate) agreed with the next
    /// kernel: its version, with this handover's `generation` for version
    /// 2 (version 1 has none, so it is dropped there: the caller need not
    /// know in advance which version is agreed). The writer sets no feature
    /// bits (versions 1 and 2 define none), so those of `agreed` change
    /// nothing yet. A version the writer does not write is refused by
    /// [`Writer::with_config`](super::Writer::with_config)
    /// ([`WriteError::BadConfig`]).
    ///
    /// ```
    /// use iommu_flb_abi::formats::Negotiated;
    /// use iommu_flb_abi::writer::Config;
    ///
    /// let v1 = Negotiated { version: 1, compat: 0, incompat: 0 };
    /// assert_eq!(Config::negotiated(&v1, 7).generation, 0);
    /// let v2 = Negotiated { version: 2, ..v1 };
    /// assert_eq!(Config::negotiated(&v2, 7).generation, 7);
    /// ```
    pub fn negotiated(agreed: &Negotiated, generation: u64) -> Self {
        let version = u64::from(agreed.version);
        if version == IOMMU_LUO_FLB_VERSION {
            Config::v1()
        } else {
            Config {
                version,
                ..Config::v2(generation)
            }
        }
    }

    /// The same configuration with another CRC-32 function (the kernel's).
    #[must_use]
    pub const fn with_crc(self, crc: Crc32) -> Self {
        Config { crc, ..self }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::v1()
    }
}

/// The largest record the writer builds in its own memory: an IOMMU's.
pub(crate) const PATCH_MAX: usize = if size_of::<IommuHwSer>() > size_of::<IommuHwV2Ser>() {
    size_of::<IommuHwSer>()
} else {
    size_of::<IommuHwV2Ser>()
};
const_assert!(size_of::<IommuDomainSer>() <= PATCH_MAX);
const_assert!(size_of::<IommuDeviceSer>() <= PATCH_MAX);
const_assert!(size_of::<IommuDomainV2Ser>() <= PATCH_MAX);
const_assert!(size_of::<IommuDeviceV2Ser>() <= PATCH_MAX);
// The writer marks deletion with one bit, the same in both versions.
const_assert!(IOMMU_SER_FLAG_DELETED == IOMMU_FLB_V2_FLAG_DELETED);

/// Up to [`PATCH_MAX`] bytes built in the writer's own memory: a record, a
/// header, a root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bytes {
    buf: [u8; PATCH_MAX],
    len: usize,
}

impl Bytes {
    /// A copy of `src`; `None` if it is longer than any patch.
    pub(crate) fn of(src: &[u8]) -> Option<Bytes> {
        let mut buf = [0; PATCH_MAX];
        buf.get_mut(..src.len())?.copy_from_slice(src);
        Some(Bytes {
            buf,
            len: src.len(),
        })
    }

    /// A copy of `src` that `write` changes in place (through a [`Rec`]
    /// for `phys`); its error is returned as is.
    pub(crate) fn edited(
        phys: PhysAddr,
        src: &[u8],
        write: impl FnOnce(&mut Rec<&mut [u8]>) -> Result<(), WriteError>,
    ) -> Result<Bytes, WriteError> {
        let mut b = Bytes::of(src).ok_or(unfit(phys))?;
        b.edit(phys, write)?;
        Ok(b)
    }

    /// Has `write` change the bytes in place, through a [`Rec`] for
    /// `phys`; its error is returned as is.
    fn edit(
        &mut self,
        phys: PhysAddr,
        write: impl FnOnce(&mut Rec<&mut [u8]>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let bytes = self.buf.get_mut(..self.len).ok_or(unfit(phys))?;
        write(&mut Rec { phys, bytes })
    }

    /// The bytes.
    pub(crate) fn get(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Bytes to put at offset `at` of a page, borrowed from where they were
/// built: an operation's writes hold no copies (the kernel's stack is small).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Patch<'b> {
    pub(crate) at: usize,
    pub(crate) bytes: &'b [u8],
}

impl<'b> Patch<'b> {
    /// `bytes` at `at`.
    pub(crate) fn new(at: usize, bytes: &'b [u8]) -> Patch<'b> {
        Patch { at, bytes }
    }
}

fn unfit(phys: PhysAddr) -> WriteError {
    WriteError::Inconsistent {
        phys,
        what: "record does not fit its page",
    }
}

/// Which header a page starts with, and so where its checksum is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageRole {
    /// The root.
    Root,
    /// A chain's array page.
    Array,
}

/// What an operation writes into one page: up to two patches, checked to
/// fit a page of the image's size before any page is mapped, so that
/// [`Encoding::commit`] cannot fail. Only borrows its bytes: an operation
/// plans every page it writes before writing one, in a kernel's small stack.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PagePlan<'b> {
    role: PageRole,
    patches: [Option<Patch<'b>>; 2],
}

/// Where version 2's root describes its chains, the part an append
/// rewrites.
pub(crate) const ROOT_CHAINS_AT: usize = core::mem::offset_of!(IommuFlbV2Ser, iommus);
// The rewritten chains do not overlap the root's checksum.
const_assert!(ROOT_CHAINS_AT >= IOMMU_FLB_V2_ROOT_CRC_OFFSET + 4);

/// A root as an encoding writes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RootSer {
    /// Version 1's `struct iommu_flb_ser`.
    V1(IommuFlbSer),
    /// Version 2's root.
    V2(IommuFlbV2Ser),
}

impl RootSer {
    /// The root's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            RootSer::V1(r) => r.as_bytes(),
            RootSer::V2(r) => r.as_bytes(),
        }
    }
}

/// An array page's header as an encoding writes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ArrayHdr {
    /// Version 1's `{next, count}`.
    V1(IommuArrayHdrSer),
    /// Version 2's page header.
    V2(IommuArrayV2HdrSer),
}

impl ArrayHdr {
    /// The header's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            ArrayHdr::V1(h) => h.as_bytes(),
            ArrayHdr::V2(h) => h.as_bytes(),
        }
    }
}

/// How a device names its domain and IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reference {
    /// By the record's physical address (version 1).
    Phys,
    /// By the record's index in its chain (version 2).
    Index,
}

/// The format version's rules, for the shared writer code.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Encoding {
    /// Version 1.
    V1,
    /// Version 2, with the image's generation and CRC function.
    V2 {
        /// The root's `generation`, repeated in every array page.
        generation: u64,
        /// The checksum function.
        crc: Crc32,
    },
}

impl Encoding {
    /// The encoding `config` asks for, or the field it cannot have.
    pub(crate) fn from_config(config: &Config) -> Result<Encoding, WriteError> {
        let bad = |field| Err(WriteError::BadConfig { field });
        match config.version {
            IOMMU_LUO_FLB_VERSION if config.generation != 0 => bad("generation"),
            IOMMU_LUO_FLB_VERSION => Ok(Encoding::V1),
            IOMMU_FLB_V2_VERSION => Ok(Encoding::V2 {
                generation: config.generation,
                crc: config.crc,
            }),
            _ => bad("version"),
        }
    }

    /// The format version written.
    pub(crate) const fn version(self) -> u64 {
        match self {
            Encoding::V1 => IOMMU_LUO_FLB_VERSION,
            Encoding::V2 { .. } => IOMMU_FLB_V2_VERSION,
        }
    }

    /// Whether every chain has a page from the start (version 1), or only
    /// from its first record (version 2, whose pages are never empty).
    pub(crate) const fn empty_chain_has_page(self) -> bool {
        matches!(self, Encoding::V1)
    }

    /// Whether the root records the chains' lengths, and so is written by
    /// every append (version 2), or only by `start` (version 1).
    pub(crate) const fn root_counts_records(self) -> bool {
        matches!(self, Encoding::V2 { .. })
    }

    /// How a device names its domain and IOMMU.
    pub(crate) const fn reference(self) -> Reference {
        match self {
            Encoding::V1 => Reference::Phys,
            Encoding::V2 { .. } => Reference::Index,
        }
    }

    /// Size of an array page's header: where its records start.
    pub(crate) const fn hdr_size(self) -> usize {
        match self {
            Encoding::V1 => size_of::<IommuArrayHdrSer>(),
            Encoding::V2 { .. } => IOMMU_FLB_V2_PAGE_HDR_SIZE,
        }
    }

    /// Size of one record of `kind` (version 2's stride).
    pub(crate) fn record_size(self, kind: ObjectKind) -> usize {
        match self {
            Encoding::V1 => <V1 as Format>::record_size(kind),
            Encoding::V2 { .. } => <V2 as Format>::record_size(kind),
        }
    }

    /// Records of `kind` per array page of size `page`.
    pub(crate) fn capacity(self, kind: ObjectKind, page: PageSize) -> u64 {
        let size = self.record_size(kind);
        match self {
            Encoding::V1 => objects_per_page(page, size),
            Encoding::V2 { .. } => records_per_page(page, size),
        }
    }

    /// Where slot `slot` of a page of `kind` starts, relative to the page.
    pub(crate) fn slot_offset(self, kind: ObjectKind, slot: u64) -> Option<u64> {
        let size = u64::try_from(self.record_size(kind)).ok()?;
        let hdr = u64::try_from(self.hdr_size()).ok()?;
        slot.checked_mul(size)?.checked_add(hdr)
    }

    /// The slot of the record of `kind` starting at `offset` in its page;
    /// `None` if no slot starts there.
    pub(crate) fn slot_at(self, kind: ObjectKind, offset: usize) -> Option<u64> {
        let rel = offset.checked_sub(self.hdr_size())?;
        let size = self.record_size(kind);
        if rel.checked_rem(size)? != 0 {
            return None;
        }
        u64::try_from(rel.checked_div(size)?).ok()
    }

    /// Where a page of `role` keeps its checksum, if it has one.
    const fn crc_offset(self, role: PageRole) -> Option<usize> {
        match (self, role) {
            (Encoding::V1, _) => None,
            (Encoding::V2 { .. }, PageRole::Root) => Some(IOMMU_FLB_V2_ROOT_CRC_OFFSET),
            (Encoding::V2 { .. }, PageRole::Array) => Some(IOMMU_FLB_V2_PAGE_CRC_OFFSET),
        }
    }

    /// Checks that `patches` (and the checksum) fit in a page of `ps`, the
    /// one at `phys`, and returns them as the plan of its write.
    pub(crate) fn plan(
        self,
        phys: PhysAddr,
        ps: PageSize,
        role: PageRole,
        patches: [Option<Patch<'_>>; 2],
    ) -> Result<PagePlan<'_>, WriteError> {
        let crc_end = self
            .crc_offset(role)
            .map_or(Some(0), |at| at.checked_add(4));
        let ends = patches
            .iter()
            .flatten()
            .map(|p| p.at.checked_add(p.bytes.len()));
        for end in ends.chain([crc_end]) {
            if end.is_none_or(|end| end > ps.bytes()) {
                return Err(unfit(phys));
            }
        }
        Ok(PagePlan { role, patches })
    }

    /// Writes the plan's patches into `page`, in order, then the page's
    /// checksum over the result (version 2). `page` is a mapping of the
    /// planned page, whose length [`chain::pages`](super::chain::pages)
    /// checked is the page size: plain copies into ranges checked to fit,
    /// nothing can fail.
    pub(crate) fn commit(self, plan: &PagePlan<'_>, page: &mut [u8]) {
        for p in plan.patches.iter().flatten() {
            if let Some(dst) =
                p.at.checked_add(p.bytes.len())
                    .and_then(|end| page.get_mut(p.at..end))
            {
                dst.copy_from_slice(p.bytes);
            }
        }
        let (Encoding::V2 { crc, .. }, Some(at)) = (self, self.crc_offset(plan.role)) else {
            return;
        };
        if let Some(sum) = crc.page(page, at) {
            if let Some(dst) = at.checked_add(4).and_then(|end| page.get_mut(at..end)) {
                dst.copy_from_slice(&sum.to_le_bytes());
            }
        }
    }

    /// The root of an image of `chains` (`[iommus, domains, devices]`) in
    /// pages of `page`.
    #[inline(never)]
    pub(crate) fn root(self, page: PageSize, chains: &[Chain; 3]) -> Result<RootSer, WriteError> {
        let [iommus, domains, devices] = chains;
        let Encoding::V2 { generation, .. } = self else {
            return Ok(RootSer::V1(IommuFlbSer {
                version: IOMMU_LUO_FLB_VERSION.into(),
                iommu_array_phys: iommus.head.get().into(),
                iommu_domain_array_phys: domains.head.get().into(),
                device_array_phys: devices.head.get().into(),
            }));
        };
        let sizes = (
            u32::try_from(size_of::<IommuFlbV2Ser>()),
            u32::try_from(page.bytes()),
            u32::try_from(IOMMU_FLB_V2_VERSION),
        );
        let (Ok(root_size), Ok(page_size), Ok(version)) = sizes else {
            return Err(WriteError::Inconsistent {
                phys: PhysAddr::NULL,
                what: "page size does not fit the root",
            });
        };
        let [iommus, domains, devices] = self.root_chains(page, chains, None)?;
        Ok(RootSer::V2(IommuFlbV2Ser {
            version: IOMMU_FLB_V2_VERSION.into(),
            magic: IOMMU_FLB_V2_ROOT_MAGIC.into(),
            root_size: root_size.into(),
            last_compatible_version: version.into(),
            page_size: page_size.into(),
            generation: generation.into(),
            compat_features: 0.into(),
            incompat_features: 0.into(),
            crc: 0.into(),
            reserved: 0.into(),
            iommus,
            domains,
            devices,
        }))
    }

    /// Version 2's description of `chains` in the root (at
    /// [`ROOT_CHAINS_AT`]), with `new` in place of the chain of its kind:
    /// the only part of the root an append changes.
    pub(crate) fn root_chains(
        self,
        page: PageSize,
        chains: &[Chain; 3],
        new: Option<&Chain>,
    ) -> Result<[IommuFlbV2ChainSer; 3], WriteError> {
        let mut out = [IommuFlbV2ChainSer::new_zeroed(); 3];
        for (o, c) in out.iter_mut().zip(chains) {
            let c = new.filter(|n| n.kind == c.kind).unwrap_or(c);
            o.head_phys = c.head.get().into();
            o.nr_pages = c.pages.into();
            o.nr_records = c.records(self, page)?.into();
        }
        Ok(out)
    }

    /// The header of the `index`-th page of a chain of `kind`, the chain's
    /// tail, holding `nr` records.
    pub(crate) fn array_hdr(self, kind: ObjectKind, index: u64, nr: u64) -> Option<ArrayHdr> {
        let blk = IommuArrayHdrSer {
            next_array_phys: 0.into(),
            nr_objects: nr.into(),
        };
        match self {
            Encoding::V1 => Some(ArrayHdr::V1(blk)),
            Encoding::V2 { generation, .. } => {
                let chain = crate::format::v2::chain_code(kind);
                let stride = u16::try_from(self.record_size(kind)).ok()?;
                Some(ArrayHdr::V2(IommuArrayV2HdrSer {
                    blk,
                    magic: IOMMU_FLB_V2_PAGE_MAGIC.into(),
                    chain: chain.into(),
                    stride: stride.into(),
                    index: index.into(),
                    generation: generation.into(),
                    crc: 0.into(),
                    reserved: 0.into(),
                }))
            }
        }
    }

    /// The index of the page `page` of a chain of `kind` (version 2 pages
    /// say so in their header); `None` if its header is not one this
    /// encoding wrote for that chain, or has no index (version 1).
    pub(crate) fn page_index(self, kind: ObjectKind, page: &[u8]) -> Option<u64> {
        let Encoding::V2 { generation, .. } = self else {
            return None;
        };
        let (hdr, _) = IommuArrayV2HdrSer::read_from_prefix(page).ok()?;
        let same = hdr.magic.get() == IOMMU_FLB_V2_PAGE_MAGIC
            && usize::from(hdr.stride.get()) == self.record_size(kind)
            && hdr.generation.get() == generation;
        same.then_some(hdr.index.get())
    }

    /// Writes a new IOMMU record into `r`, the record's zeroed bytes.
    pub(crate) fn iommu_record(
        self,
        r: &mut Rec<&mut [u8]>,
        token: u64,
        payload: &IommuPayloadInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        match self {
            Encoding::V1 => r.write_iommu(token, payload, hdr),
            Encoding::V2 { .. } => r.write_iommu_v2(token, payload, hdr),
        }
    }

    /// Writes a new device record into `r`, the record's zeroed bytes,
    /// naming its domain and IOMMU with the references `domain` and `iommu`
    /// (see [`Encoding::reference`]).
    pub(crate) fn device_record(
        self,
        r: &mut Rec<&mut [u8]>,
        d: &DeviceInit,
        domain: u64,
        iommu: u64,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        match self {
            Encoding::V1 => r.write_device(d, PhysAddr::new(domain), PhysAddr::new(iommu), hdr),
            Encoding::V2 { .. } => r.write_device_v2(d, domain, iommu, hdr),
        }
    }
}
