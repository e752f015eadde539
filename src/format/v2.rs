//! Version 2's rules (the layout and its reasons are in `abi::v2`).

use zerocopy::FromBytes;

use super::{DeviceFields, DomainFields, Fault, Format, PageHdr, Ref, Root, le32, zero_from};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer};
use crate::abi::v2::{
    IOMMU_FLB_V2_FLAG_DELETED, IOMMU_FLB_V2_FLAGS_KNOWN, IOMMU_FLB_V2_INCOMPAT_KNOWN,
    IOMMU_FLB_V2_PAGE_CRC_OFFSET, IOMMU_FLB_V2_PAGE_HDR_SIZE, IOMMU_FLB_V2_PAGE_MAGIC,
    IOMMU_FLB_V2_ROOT_CRC_OFFSET, IOMMU_FLB_V2_ROOT_MAGIC, IOMMU_FLB_V2_STRIDE_ALIGN,
    IOMMU_FLB_V2_VERSION, IommuArrayV2HdrSer, IommuDeviceIntelV2Ser, IommuDeviceV2Ser,
    IommuDomainV2Ser, IommuFlbV2ChainSer, IommuFlbV2Ser, IommuHwV2Ser, IommuIntelV2Ser,
};
use crate::crc::Crc32;
use crate::error::{Chain, Error, ErrorKind, Location};
use crate::mem::read_page;
use crate::reader::{DevicePayload, IommuPayload, Options};
use crate::{Memory, chain::ARRAYS};

/// Version 2.
pub(crate) struct V2;

/// Offset of the vendor union in an IOMMU record and in a device record.
const HW_VENDOR: usize = 24;
const DEV_VENDOR: usize = 48;

/// The root's chain record of `chain`, and its fields' names.
pub(crate) const fn chain_fields(chain: Chain) -> [&'static str; 3] {
    match chain {
        Chain::Iommu => ["iommus.head_phys", "iommus.nr_pages", "iommus.nr_records"],
        Chain::Domain => [
            "domains.head_phys",
            "domains.nr_pages",
            "domains.nr_records",
        ],
        _ => [
            "devices.head_phys",
            "devices.nr_pages",
            "devices.nr_records",
        ],
    }
}

use crate::abi::v2::{
    IOMMU_FLB_V2_CHAIN_DEVICE, IOMMU_FLB_V2_CHAIN_DOMAIN, IOMMU_FLB_V2_CHAIN_IOMMU,
};

/// The `chain` value of a page of `chain` (`IOMMU_FLB_V2_CHAIN_*`), for
/// the reader and the writer.
pub(crate) const fn chain_code(chain: Chain) -> u16 {
    match chain {
        Chain::Iommu => IOMMU_FLB_V2_CHAIN_IOMMU,
        Chain::Domain => IOMMU_FLB_V2_CHAIN_DOMAIN,
        Chain::Device => IOMMU_FLB_V2_CHAIN_DEVICE,
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Format for V2 {
    const KIND: super::Version = super::Version::V2;
    const PAGE_HDR: u64 = 48;
    const HW: usize = size_of::<IommuHwV2Ser>();
    const DOM: usize = size_of::<IommuDomainV2Ser>();
    const DEV: usize = size_of::<IommuDeviceV2Ser>();
    const FLAGS_KNOWN: u32 = IOMMU_FLB_V2_FLAGS_KNOWN;
    const DELETED: u32 = IOMMU_FLB_V2_FLAG_DELETED;
    const INCOMING: u32 = 0;
    const EMPTY_CHAINS: bool = true;
    const DOMAIN_REF: &'static str = "domain_index";
    const IOMMU_REF: &'static str = "iommu_index";

    fn head_field(chain: Chain) -> &'static str {
        chain_fields(chain)[0]
    }

    /// In order: 4 KiB-aligned, readable, magic, versions, page size,
    /// aligned to it, the page's CRC, `root_size`, `reserved`, unknown
    /// incompatible features, then per chain: a zero or page-aligned head.
    /// Each chain's page and record counts are checked against its walk,
    /// which finds the real ones (`CountMismatch` says both).
    /// Unknown compatible features are ignored. `opts.page_size` is only
    /// the size the root's page is first read at: the root states the
    /// image's page size, and its page is read again at that size when it
    /// differs.
    #[inline(never)]
    fn root<'m, M: Memory + ?Sized>(
        mem: &'m M,
        root: PhysAddr,
        opts: &Options,
        first: Option<&'m [u8]>,
    ) -> Result<Root<'m>, Error> {
        let at = |field| Location::root(root, field);
        let err = |kind, field| Err(Error::new(kind, at(field)));
        if !root.is_page_aligned(PageSize::Size4K) {
            return err(ErrorKind::Unaligned { value: root }, None);
        }
        let first = first.ok_or(Error::new(ErrorKind::RootUnreadable, at(None)))?;
        let (ser, _) = IommuFlbV2Ser::ref_from_prefix(first)
            .map_err(|_| Error::new(ErrorKind::RootUnreadable, at(None)))?;
        let found = ser.magic.get();
        if found != IOMMU_FLB_V2_ROOT_MAGIC {
            return err(ErrorKind::BadMagic { found }, Some("magic"));
        }
        let version = ser.version.get();
        let last_compatible = ser.last_compatible_version.get();
        if u64::from(last_compatible) != IOMMU_FLB_V2_VERSION || version < IOMMU_FLB_V2_VERSION {
            return err(
                ErrorKind::IncompatibleVersion {
                    version,
                    last_compatible,
                },
                Some("last_compatible_version"),
            );
        }
        let bytes = ser.page_size.get();
        let Some(page_size) = PageSize::from_bytes(u64::from(bytes)) else {
            return err(ErrorKind::BadPageSize { found: bytes }, Some("page_size"));
        };
        if !root.is_page_aligned(page_size) {
            return err(ErrorKind::Unaligned { value: root }, None);
        }
        let page = if page_size == opts.page_size {
            first
        } else {
            read_page(mem, root, page_size)
                .ok_or(Error::new(ErrorKind::RootUnreadable, at(None)))?
        };
        let (ser, _) = IommuFlbV2Ser::ref_from_prefix(page)
            .map_err(|_| Error::new(ErrorKind::RootUnreadable, at(None)))?;
        let computed = opts
            .crc
            .page(page, IOMMU_FLB_V2_ROOT_CRC_OFFSET)
            .unwrap_or(0);
        let stored = ser.crc.get();
        if stored != computed {
            return err(
                ErrorKind::ChecksumMismatch { stored, computed },
                Some("crc"),
            );
        }
        let (min, max) = (u32_of(size_of::<IommuFlbV2Ser>()), bytes);
        let size = ser.root_size.get();
        if size < min || size > max {
            return err(
                ErrorKind::BadRootSize {
                    found: size,
                    min,
                    max,
                },
                Some("root_size"),
            );
        }
        if ser.reserved.get() != 0 {
            return err(ErrorKind::NonZeroPadding, Some("reserved"));
        }
        let unknown = ser.incompat_features.get() & !IOMMU_FLB_V2_INCOMPAT_KNOWN;
        if unknown != 0 {
            return err(
                ErrorKind::UnknownFeatures { bits: unknown },
                Some("incompat_features"),
            );
        }
        let chains: [&IommuFlbV2ChainSer; 3] = [&ser.iommus, &ser.domains, &ser.devices];
        let mut heads = [PhysAddr::NULL; 3];
        let mut counts = [(0u64, 0u64); 3];
        for (((chain, c), head), count) in ARRAYS
            .into_iter()
            .zip(chains)
            .zip(heads.iter_mut())
            .zip(counts.iter_mut())
        {
            let [head_f, _, _] = chain_fields(chain);
            let (h, pages, records) = (
                PhysAddr::new(c.head_phys.get()),
                c.nr_pages.get(),
                c.nr_records.get(),
            );
            if !h.is_page_aligned(page_size) {
                return err(ErrorKind::Unaligned { value: h }, Some(head_f));
            }
            *head = h;
            *count = (pages, records);
        }
        Ok(Root {
            version,
            page_size,
            heads,
            counts: Some(counts),
            generation: ser.generation.get(),
            bytes: page,
        })
    }

    /// In order: magic, CRC, chain, index, generation, reserved, stride.
    fn page(
        page: &[u8],
        chain: Chain,
        index: u64,
        root: &Root<'_>,
        crc: Option<&Crc32>,
        here: Location,
    ) -> Result<PageHdr, Error> {
        let err = |kind, field| Err(Error::new(kind, here.field(field)));
        let Ok((h, _)) = IommuArrayV2HdrSer::ref_from_prefix(page) else {
            return err(
                ErrorKind::Unreadable {
                    target: here.page_phys,
                },
                "magic",
            );
        };
        let found = h.magic.get();
        if found != IOMMU_FLB_V2_PAGE_MAGIC {
            return err(ErrorKind::BadMagic { found }, "magic");
        }
        if let Some(crc) = crc {
            let computed = crc.page(page, IOMMU_FLB_V2_PAGE_CRC_OFFSET).unwrap_or(0);
            let stored = h.crc.get();
            if stored != computed {
                return err(ErrorKind::ChecksumMismatch { stored, computed }, "crc");
            }
        }
        let found = h.chain.get();
        if found != chain_code(chain) {
            return err(ErrorKind::WrongChain { found }, "chain");
        }
        let found = h.index.get();
        if found != index {
            return err(
                ErrorKind::WrongIndex {
                    found,
                    expected: index,
                },
                "index",
            );
        }
        let found = h.generation.get();
        if found != root.generation {
            return err(
                ErrorKind::StaleGeneration {
                    found,
                    expected: root.generation,
                },
                "generation",
            );
        }
        if h.reserved.get() != 0 {
            return err(ErrorKind::NonZeroPadding, "reserved");
        }
        let stride = h.stride.get();
        let min = <V2 as Format>::record_size(chain);
        let max = root
            .page_size
            .bytes()
            .saturating_sub(IOMMU_FLB_V2_PAGE_HDR_SIZE);
        let s = usize::from(stride);
        if s < min || s > max || s % IOMMU_FLB_V2_STRIDE_ALIGN != 0 {
            return err(
                ErrorKind::BadStride {
                    stride,
                    min: u16::try_from(min).unwrap_or(u16::MAX),
                    max: u32_of(max),
                },
                "stride",
            );
        }
        Ok(PageHdr {
            next: PhysAddr::new(h.blk.next_array_phys.get()),
            nr_objects: h.blk.nr_objects.get(),
            stride: u64::from(stride),
        })
    }

    #[inline]
    fn hw(rec: &[u8]) -> (u64, u64) {
        match IommuHwV2Ser::ref_from_prefix(rec) {
            Ok((r, _)) => (r.token.get(), r.r#type.get()),
            Err(_) => (0, 0),
        }
    }

    /// Bytes of the union past the member in use are zero (Intel's fills it).
    fn check_hw_vendor(
        rec: &[u8],
        ty: IommuTypeSer,
        loc: Location,
        _handover: bool,
    ) -> Result<(), Error> {
        let vendor = rec.get(HW_VENDOR..).unwrap_or(&[]);
        let used = match ty {
            IommuTypeSer::IommuIntel => size_of::<IommuIntelV2Ser>(),
            _ => size_of::<IommuSmmuv3HwSer>(),
        };
        if zero_from(vendor, used) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::NonZeroPadding, loc.field("vendor")))
        }
    }

    #[inline]
    fn hw_payload(rec: &[u8], ty: IommuTypeSer) -> Option<IommuPayload<'_>> {
        let vendor = rec.get(HW_VENDOR..)?;
        Some(match ty {
            IommuTypeSer::IommuIntel => {
                IommuPayload::IntelV2(IommuIntelV2Ser::ref_from_prefix(vendor).ok()?.0)
            }
            _ => IommuPayload::Smmuv3(IommuSmmuv3HwSer::ref_from_prefix(vendor).ok()?.0),
        })
    }

    #[inline]
    fn domain(rec: &[u8]) -> DomainFields {
        match IommuDomainV2Ser::ref_from_prefix(rec) {
            Ok((d, _)) => DomainFields {
                top_table_phys: d.top_table_phys.get(),
                top_level: d.top_level.get(),
                vasz: d.vasz.get(),
                sign_extend: d.sign_extend,
                padding: d.padding,
                restored: 0,
            },
            Err(_) => DomainFields::ZERO,
        }
    }

    #[inline]
    fn device(rec: &[u8]) -> DeviceFields {
        match IommuDeviceV2Ser::ref_from_prefix(rec) {
            Ok((d, _)) => DeviceFields {
                devid: d.devid.get(),
                segment: d.pci_domain_nr.get(),
                dma_owner_token: d.dma_owner_token.get(),
                attachment_id: d.attachment_id.get(),
                domain: Ref::Index(d.domain_index.get()),
                iommu: Ref::Index(d.iommu_index.get()),
            },
            Err(_) => DeviceFields::ZERO,
        }
    }

    /// Intel's member leaves 8 union bytes, which are zero; SMMUv3's
    /// `padding` is zero.
    #[inline]
    fn check_dev_vendor(rec: &[u8], ty: IommuTypeSer, _handover: bool) -> Result<(), Fault> {
        let vendor = rec.get(DEV_VENDOR..).unwrap_or(&[]);
        if ty == IommuTypeSer::IommuIntel {
            let used = size_of::<IommuDeviceIntelV2Ser>();
            if !zero_from(vendor, used) {
                return Err((ErrorKind::NonZeroPadding, "vendor"));
            }
        } else if le32(vendor, 12) != 0 {
            return Err((ErrorKind::NonZeroPadding, "padding"));
        }
        Ok(())
    }

    #[inline]
    fn dev_payload(rec: &[u8], ty: IommuTypeSer) -> Option<DevicePayload<'_>> {
        let vendor = rec.get(DEV_VENDOR..)?;
        Some(match ty {
            IommuTypeSer::IommuIntel => {
                DevicePayload::IntelV2(IommuDeviceIntelV2Ser::ref_from_prefix(vendor).ok()?.0)
            }
            _ => DevicePayload::Smmuv3(IommuMasterSmmuv3Ser::ref_from_prefix(vendor).ok()?.0),
        })
    }
}
