//! What can go wrong while writing an image, and where.

use core::fmt;

use crate::PhysAddr;
use crate::abi::v1::IommuTypeSer;

/// The three kinds of record (and of chain) in an image: the crate's one
/// [`Chain`](crate::error::Chain) enum, by the name the writer's API uses.
pub use crate::error::Chain as ObjectKind;

/// What a page was being allocated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagePurpose {
    /// The root `struct iommu_flb_ser`.
    Root,
    /// An array page of the chain holding records of this kind.
    Chain(ObjectKind),
}

impl fmt::Display for PagePurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagePurpose::Root => f.write_str("the root"),
            PagePurpose::Chain(kind) => write!(f, "the {kind} chain"),
        }
    }
}

/// Why a page the allocator handed out was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadPage {
    /// The address is 0, which the format reads as "no page".
    Null,
    /// The address is not a multiple of the page size.
    Unaligned,
    /// The page is already part of this image (the root or a chain's tail).
    InImage,
    /// `page_mut` refused the address the allocator had just returned, or
    /// mapped it with a length other than the page size.
    Unmapped,
    /// The page is not all zeroes, so it may already be in use.
    NotZeroed,
}

impl fmt::Display for BadPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadPage::Null => "address is 0",
            BadPage::Unaligned => "address is not page-aligned",
            BadPage::InImage => "page is already part of the image",
            BadPage::Unmapped => "page_mut refused it",
            BadPage::NotZeroed => "page is not zeroed",
        })
    }
}

/// A domain parameter the writer refuses, because the reader would refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainField {
    /// `top_table_phys` is zero or not page-aligned.
    TopTablePhys,
    /// `vasz` is above 64.
    Vasz,
    /// `sign_extend` is above 1.
    SignExtend,
}

impl DomainField {
    /// The field's name in the C header.
    pub const fn name(self) -> &'static str {
        match self {
            DomainField::TopTablePhys => "top_table_phys",
            DomainField::Vasz => "vasz",
            DomainField::SignExtend => "sign_extend",
        }
    }
}

/// A refused operation. Each variant says what was wrong and which object
/// (by the physical address of its record) or page it concerns. A refused
/// operation changed nothing in the image: every page holds the bytes it
/// held before, and a page taken from the allocator for the operation was
/// given back (except one refused as [`WriteError::BadPage`]); see
/// [Failures](super#failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteError {
    /// The allocator returned no page. Nothing in the image changed.
    OutOfPages {
        /// What the page was for.
        purpose: PagePurpose,
    },
    /// The allocator returned a page the writer will not use. The page is
    /// neither used nor freed: the writer cannot prove it is not in use.
    BadPage {
        /// What the page was for.
        purpose: PagePurpose,
        /// The address returned.
        phys: PhysAddr,
        /// What is wrong with it.
        problem: BadPage,
    },
    /// `page_mut` or `pages_mut` refused a page the writer had taken
    /// earlier.
    PageUnavailable {
        /// The page (for `pages_mut`, the address it named).
        phys: PhysAddr,
    },
    /// A page of the image no longer holds what the writer put there (it was
    /// changed behind the writer's back, through `alloc_mut` or otherwise).
    Inconsistent {
        /// The page or record.
        phys: PhysAddr,
        /// What did not match.
        what: &'static str,
    },
    /// A handle from another writer.
    ForeignHandle {
        /// The kind of handle.
        kind: ObjectKind,
        /// The record address it names.
        phys: PhysAddr,
    },
    /// A device was to be attached to a domain or IOMMU that was unpreserved.
    AttachToDeleted {
        /// The kind of the unpreserved object.
        kind: ObjectKind,
        /// Its record.
        phys: PhysAddr,
    },
    /// The object was already unpreserved.
    AlreadyUnpreserved {
        /// The kind of object.
        kind: ObjectKind,
        /// Its record.
        phys: PhysAddr,
    },
    /// A live device with this (PCI segment, devid) is already preserved.
    DuplicateDevice {
        /// PCI segment.
        pci_domain_nr: u32,
        /// PCI requester ID.
        devid: u32,
        /// The live device's record.
        existing: PhysAddr,
    },
    /// An IOMMU with this (token, type) is already preserved and not unpreserved.
    DuplicateIommu {
        /// The token.
        token: u64,
        /// The type.
        iommu_type: IommuTypeSer,
        /// The existing IOMMU's record.
        existing: PhysAddr,
    },
    /// The device payload is for another IOMMU type than the IOMMU's.
    PayloadMismatch {
        /// The IOMMU's record.
        iommu: PhysAddr,
        /// The IOMMU's type.
        iommu_type: IommuTypeSer,
        /// The type the device payload is for.
        payload_type: IommuTypeSer,
    },
    /// A domain parameter the reader would refuse.
    InvalidDomain {
        /// Which field.
        field: DomainField,
        /// The value given.
        value: u64,
    },
    /// The domain still has live devices attached.
    DomainInUse {
        /// The domain's record.
        domain: PhysAddr,
        /// One live device attached to it.
        device: PhysAddr,
    },
    /// The IOMMU still has live devices behind it.
    IommuInUse {
        /// The IOMMU's record.
        iommu: PhysAddr,
        /// How many.
        devices: u32,
    },
    /// The IOMMU already counts `u32::MAX` devices.
    RefCountOverflow {
        /// The IOMMU's record.
        iommu: PhysAddr,
    },
    /// The caller-supplied device index has no free slot.
    IndexFull {
        /// Its capacity in devices.
        capacity: usize,
    },
    /// [`Writer::with_config`](super::Writer::with_config) was given a
    /// [`Config`](super::Config) it cannot write: a `version` other than 1
    /// or 2, or a version-1 `generation` other than 0. No page was taken.
    BadConfig {
        /// The field refused: `"version"` or `"generation"`.
        field: &'static str,
    },
}

impl WriteError {
    /// The negative errno a kernel caller returns for this error.
    pub const fn errno(&self) -> i32 {
        let e = match self {
            WriteError::OutOfPages { .. } => crate::errno::ENOMEM,
            WriteError::BadPage { .. } | WriteError::PageUnavailable { .. } => crate::errno::EFAULT,
            WriteError::Inconsistent { .. } => crate::errno::EUCLEAN,
            WriteError::ForeignHandle { .. }
            | WriteError::PayloadMismatch { .. }
            | WriteError::InvalidDomain { .. }
            | WriteError::BadConfig { .. } => crate::errno::EINVAL,
            WriteError::AttachToDeleted { .. } | WriteError::AlreadyUnpreserved { .. } => {
                crate::errno::ENOENT
            }
            WriteError::DuplicateDevice { .. } | WriteError::DuplicateIommu { .. } => {
                crate::errno::EEXIST
            }
            WriteError::DomainInUse { .. } | WriteError::IommuInUse { .. } => crate::errno::EBUSY,
            WriteError::RefCountOverflow { .. } => crate::errno::EOVERFLOW,
            WriteError::IndexFull { .. } => crate::errno::ENOSPC,
        };
        0i32.wrapping_sub(e)
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WriteError::OutOfPages { purpose } => write!(f, "out of pages for {purpose}"),
            WriteError::BadPage {
                purpose,
                phys,
                problem,
            } => {
                write!(f, "allocator returned page {phys} for {purpose}: {problem}")
            }
            WriteError::PageUnavailable { phys } => {
                write!(f, "page {phys} of the image is no longer accessible")
            }
            WriteError::Inconsistent { phys, what } => {
                write!(f, "image changed behind the writer at {phys}: {what}")
            }
            WriteError::ForeignHandle { kind, phys } => {
                write!(f, "{kind} handle {phys} belongs to another image")
            }
            WriteError::AttachToDeleted { kind, phys } => {
                write!(f, "cannot attach a device to unpreserved {kind} {phys}")
            }
            WriteError::AlreadyUnpreserved { kind, phys } => {
                write!(f, "{kind} {phys} is already unpreserved")
            }
            WriteError::DuplicateDevice {
                pci_domain_nr,
                devid,
                existing,
            } => {
                write!(f, "device ")?;
                pci_name(f, pci_domain_nr, devid)?;
                write!(f, " is already preserved at {existing}")
            }
            WriteError::DuplicateIommu {
                token,
                iommu_type,
                existing,
            } => write!(
                f,
                "IOMMU token {token:#x} type {} is already preserved at {existing}",
                iommu_type.wire()
            ),
            WriteError::PayloadMismatch {
                iommu,
                iommu_type,
                payload_type,
            } => write!(
                f,
                "device payload for IOMMU type {} but IOMMU {iommu} has type {}",
                payload_type.wire(),
                iommu_type.wire()
            ),
            WriteError::InvalidDomain { field, value } => {
                write!(f, "invalid domain {}: {value:#x}", field.name())
            }
            WriteError::DomainInUse { domain, device } => {
                write!(f, "domain {domain} is still attached to device {device}")
            }
            WriteError::IommuInUse { iommu, devices } => {
                write!(f, "IOMMU {iommu} still has {devices} preserved devices")
            }
            WriteError::RefCountOverflow { iommu } => {
                write!(f, "IOMMU {iommu} reference count would overflow")
            }
            WriteError::IndexFull { capacity } => {
                write!(f, "device index full ({capacity} devices)")
            }
            WriteError::BadConfig { field } => {
                write!(f, "invalid writer configuration: {field}")
            }
        }
    }
}

/// Writes a device as the kernel names it, `ssss:bb:dd.f`; a devid wider
/// than a PCI requester ID is shown as a number.
fn pci_name(f: &mut fmt::Formatter<'_>, seg: u32, devid: u32) -> fmt::Result {
    if devid > 0xffff {
        return write!(f, "{seg:04x}:devid {devid:#x}");
    }
    let (bus, dev, func) = (devid >> 8, (devid >> 3) & 0x1f, devid & 7);
    write!(f, "{seg:04x}:{bus:02x}:{dev:02x}.{func}")
}

#[cfg(feature = "std")]
impl std::error::Error for WriteError {}
