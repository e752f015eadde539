//! Version 1's rules: what the kernel writes today.

use zerocopy::FromBytes;

use super::{DeviceFields, DomainFields, Fault, Format, PageHdr, Ref, Root, le32, zero_from};
use crate::PhysAddr;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IOMMU_LUO_FLB_VERSION, IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING,
    IOMMU_SER_FLAGS_KNOWN, IommuArrayHdrSer, IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer,
    IommuFlbSer, IommuHwSer, IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::crc::Crc32;
use crate::error::{Chain, Error, ErrorKind, Location};
use crate::reader::{DevicePayload, IommuPayload, Options};
use crate::{Memory, chain::head_field};

/// Version 1.
pub(crate) struct V1;

/// Offset of the vendor union in an IOMMU record and in a device record.
const HW_VENDOR: usize = 24;
const DEV_VENDOR: usize = 48;

/// Checks the first 8 bytes both Intel payloads start with: `restored`,
/// which only the next kernel sets, and `padding[7]`. The common case is
/// one compare, inlined into the record passes: all eight zero (or only
/// `restored` set, outside a handover).
#[inline(always)]
fn check_intel_head(head: &[u8], handover: bool) -> Result<(), Fault> {
    let word = head
        .first_chunk()
        .map_or(u64::MAX, |b| u64::from_le_bytes(*b));
    let restored = if handover { 0 } else { 0xff };
    if word & !restored == 0 {
        return Ok(());
    }
    intel_head_fault(head, handover)
}

/// [`check_intel_head`] off the common case: which byte is wrong.
#[cold]
#[inline(never)]
fn intel_head_fault(head: &[u8], handover: bool) -> Result<(), Fault> {
    if handover && head.first().is_some_and(|b| *b != 0) {
        return Err((ErrorKind::AlreadyRestored, "restored"));
    }
    if head.get(1..8).is_some_and(|p| p != [0u8; 7]) {
        return Err((ErrorKind::NonZeroPadding, "padding"));
    }
    Ok(())
}

impl Format for V1 {
    const KIND: super::Version = super::Version::V1;
    const PAGE_HDR: u64 = IOMMU_ARRAY_HDR_SIZE;
    const HW: usize = size_of::<IommuHwSer>();
    const DOM: usize = size_of::<IommuDomainSer>();
    const DEV: usize = size_of::<IommuDeviceSer>();
    const FLAGS_KNOWN: u32 = IOMMU_SER_FLAGS_KNOWN;
    const DELETED: u32 = IOMMU_SER_FLAG_DELETED;
    const INCOMING: u32 = IOMMU_SER_FLAG_INCOMING;
    const EMPTY_CHAINS: bool = false;
    const DOMAIN_REF: &'static str = "domain_phys";
    const IOMMU_REF: &'static str = "iommu_phys";

    fn head_field(chain: Chain) -> &'static str {
        head_field(chain)
    }

    /// In order: page-aligned (the kernel allocates the root as a preserved
    /// page of its own, which `restore` hands back whole), readable,
    /// version, then each head non-zero and page-aligned.
    #[inline(never)]
    fn root<'m, M: Memory + ?Sized>(
        mem: &'m M,
        root: PhysAddr,
        opts: &Options,
        first: Option<&'m [u8]>,
    ) -> Result<Root<'m>, Error> {
        let page_size = opts.page_size;
        let at = |field| Location::root(root, field);
        if !root.is_page_aligned(page_size) {
            return Err(Error::new(ErrorKind::Unaligned { value: root }, at(None)));
        }
        let _ = mem;
        let page = first.ok_or(Error::new(ErrorKind::RootUnreadable, at(None)))?;
        // A page is longer than the 32-byte root, so this cannot fail.
        let (ser, _) = IommuFlbSer::ref_from_prefix(page)
            .map_err(|_| Error::new(ErrorKind::RootUnreadable, at(None)))?;
        let found = ser.version.get();
        if found != IOMMU_LUO_FLB_VERSION {
            return Err(Error::new(
                ErrorKind::UnsupportedVersion { found },
                at(Some("version")),
            ));
        }
        let heads = [
            ser.iommu_array_phys.get(),
            ser.iommu_domain_array_phys.get(),
            ser.device_array_phys.get(),
        ]
        .map(PhysAddr::new);
        for (chain, head) in crate::chain::ARRAYS.into_iter().zip(heads) {
            let loc = at(Some(head_field(chain)));
            if head.is_null() {
                return Err(Error::new(ErrorKind::NullPointer, loc));
            }
            if !head.is_page_aligned(page_size) {
                return Err(Error::new(ErrorKind::Unaligned { value: head }, loc));
            }
        }
        Ok(Root {
            version: found,
            page_size,
            heads,
            counts: None,
            generation: 0,
            bytes: page,
        })
    }

    fn page(
        page: &[u8],
        chain: Chain,
        _index: u64,
        _root: &Root<'_>,
        _crc: Option<&Crc32>,
        _here: Location,
    ) -> Result<PageHdr, Error> {
        let (next, nr_objects) = match IommuArrayHdrSer::read_from_prefix(page) {
            Ok((h, _)) => (PhysAddr::new(h.next_array_phys.get()), h.nr_objects.get()),
            // Unreachable: a page is longer than the 16-byte header.
            Err(_) => (PhysAddr::NULL, 0),
        };
        let size = match chain {
            Chain::Iommu => Self::HW,
            Chain::Domain => Self::DOM,
            _ => Self::DEV,
        };
        Ok(PageHdr {
            next,
            nr_objects,
            stride: u64::try_from(size).unwrap_or(u64::MAX),
        })
    }

    #[inline]
    fn hw(rec: &[u8]) -> (u64, u64) {
        match IommuHwSer::ref_from_prefix(rec) {
            Ok((r, _)) => (r.token.get(), r.r#type.get()),
            Err(_) => (0, 0),
        }
    }

    /// Intel's member fills the union; SMMUv3's leaves bytes no version-1
    /// member uses, which the kernel's zeroed slot holds as zeros: they are
    /// padding (a non-zero byte there is corruption, or a longer SMMUv3
    /// struct under the same version).
    fn check_hw_vendor(
        rec: &[u8],
        ty: IommuTypeSer,
        loc: Location,
        handover: bool,
    ) -> Result<(), Error> {
        let vendor = rec.get(HW_VENDOR..).unwrap_or(&[]);
        match ty {
            IommuTypeSer::IommuIntel => check_intel_head(vendor, handover)
                .map_err(|(kind, field)| Error::new(kind, loc.field(field))),
            _ if zero_from(vendor, size_of::<IommuSmmuv3HwSer>()) => Ok(()),
            _ => Err(Error::new(ErrorKind::NonZeroPadding, loc.field("vendor"))),
        }
    }

    #[inline]
    fn hw_payload(rec: &[u8], ty: IommuTypeSer) -> Option<IommuPayload<'_>> {
        let vendor = rec.get(HW_VENDOR..)?;
        Some(match ty {
            IommuTypeSer::IommuIntel => {
                IommuPayload::Intel(IommuIntelSer::ref_from_prefix(vendor).ok()?.0)
            }
            _ => IommuPayload::Smmuv3(IommuSmmuv3HwSer::ref_from_prefix(vendor).ok()?.0),
        })
    }

    #[inline]
    fn domain(rec: &[u8]) -> DomainFields {
        match IommuDomainSer::ref_from_prefix(rec) {
            Ok((d, _)) => DomainFields {
                top_table_phys: d.top_table_phys.get(),
                top_level: d.top_level.get(),
                vasz: d.vasz.get(),
                sign_extend: d.sign_extend,
                padding: d.padding,
                restored: d.restored_domain.get(),
            },
            Err(_) => DomainFields::ZERO,
        }
    }

    #[inline]
    fn device(rec: &[u8]) -> DeviceFields {
        match IommuDeviceSer::ref_from_prefix(rec) {
            Ok((d, _)) => {
                let m = &d.domain_iommu_ser;
                DeviceFields {
                    devid: d.devid.get(),
                    segment: d.pci_domain_nr.get(),
                    dma_owner_token: d.dma_owner_token.get(),
                    attachment_id: m.attachment_id.get(),
                    domain: Ref::Phys(PhysAddr::new(m.domain_phys.get())),
                    iommu: Ref::Phys(PhysAddr::new(m.iommu_phys.get())),
                }
            }
            Err(_) => DeviceFields::ZERO,
        }
    }

    #[inline]
    fn check_dev_vendor(rec: &[u8], ty: IommuTypeSer, handover: bool) -> Result<(), Fault> {
        let vendor = rec.get(DEV_VENDOR..).unwrap_or(&[]);
        if ty == IommuTypeSer::IommuIntel {
            check_intel_head(vendor, handover)
        } else if le32(vendor, 12) != 0 {
            Err((ErrorKind::NonZeroPadding, "padding"))
        } else {
            Ok(())
        }
    }

    #[inline]
    fn dev_payload(rec: &[u8], ty: IommuTypeSer) -> Option<DevicePayload<'_>> {
        let vendor = rec.get(DEV_VENDOR..)?;
        Some(match ty {
            IommuTypeSer::IommuIntel => {
                DevicePayload::Intel(IommuDeviceIntelSer::ref_from_prefix(vendor).ok()?.0)
            }
            _ => DevicePayload::Smmuv3(IommuMasterSmmuv3Ser::ref_from_prefix(vendor).ok()?.0),
        })
    }
}
