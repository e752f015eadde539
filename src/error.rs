//! The one error type of the reader: what is wrong ([`ErrorKind`]) and where
//! ([`Location`]: chain, page, object, field).
//!
//! Every refusal names the place that holds the offending bytes: a bad
//! pointer is reported at the root or array header that stores it (the
//! unreadable or misplaced target address is carried in the kind), a bad
//! record field at the record. [`Error::errno`] maps each kind to a stable
//! negative Linux errno for C callers; the table is on [`ErrorKind::errno`].

use core::fmt;

use crate::PhysAddr;

/// The three chains of an image, and the kind of record each holds: the
/// one enum the reader, the writer (as
/// [`writer::ObjectKind`](crate::writer::ObjectKind)), the errors and the C
/// boundary share. The root is not a chain: a location in it has no chain
/// (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    /// The chain of `iommu_hw_ser` array pages (IOMMU records).
    Iommu = 1,
    /// The chain of `iommu_domain_ser` array pages (domain records).
    Domain = 2,
    /// The chain of `iommu_device_ser` array pages (device records).
    Device = 3,
}

impl Chain {
    /// A short lower-case name (`"iommu"`, `"domain"`, `"device"`).
    pub const fn name(self) -> &'static str {
        match self {
            Chain::Iommu => "iommu",
            Chain::Domain => "domain",
            Chain::Device => "device",
        }
    }

    /// The name of a location's chain: the chain's, or `"root"`.
    pub const fn name_of(chain: Option<Chain>) -> &'static str {
        match chain {
            Some(c) => c.name(),
            None => "root",
        }
    }

    /// The name a log line uses for a record of this kind (`"IOMMU"`,
    /// `"domain"`, `"device"`).
    pub const fn noun(self) -> &'static str {
        match self {
            Chain::Iommu => "IOMMU",
            Chain::Domain => "domain",
            Chain::Device => "device",
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which configurable limit was exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `Limits::max_pages_per_chain`.
    PagesPerChain,
    /// `Limits::max_objects` (all three chains together).
    Objects,
}

/// How a device's `domain_phys` or `iommu_phys` fails to name a live record
/// of the right kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefFault {
    /// The address is not inside a page of the expected chain.
    NotInChain,
    /// The address is inside such a page but not at the start of a record.
    NotRecordStart,
    /// The address names a slot at or past the page's `nr_objects`.
    BeyondCount,
    /// The record it names is deleted.
    Deleted,
}

impl fmt::Display for RefFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefFault::NotInChain => "not in a page of that chain",
            RefFault::NotRecordStart => "not the start of a record",
            RefFault::BeyondCount => "past the page's nr_objects",
            RefFault::Deleted => "the record is deleted",
        })
    }
}

/// What is wrong. The variants are stable; new ones may be added
/// (`#[non_exhaustive]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The page holding the root cannot be read through the `Memory`.
    RootUnreadable,
    /// The root's `version` is not one this reader supports.
    UnsupportedVersion {
        /// The stored version.
        found: u64,
    },
    /// A pointer that must be non-zero is zero (a chain head,
    /// `top_table_phys`).
    NullPointer,
    /// A pointer that must be page-aligned is not (a chain head or
    /// `next_array_phys`, `top_table_phys`, or the root's own address: the
    /// root starts a page of its own).
    Unaligned {
        /// The stored address.
        value: PhysAddr,
    },
    /// A chain page cannot be read through the `Memory`.
    Unreadable {
        /// The address of the page that could not be read.
        target: PhysAddr,
    },
    /// `nr_objects` is above what one page holds.
    CountOverCapacity {
        /// The stored count.
        nr_objects: u64,
        /// Records per page for this chain.
        capacity: u64,
    },
    /// A page that is not the chain's last is not full.
    PartialPage {
        /// The stored count.
        nr_objects: u64,
        /// Records per page for this chain.
        capacity: u64,
    },
    /// `next_array_phys` leads back to a page already in the same chain:
    /// the page it names is the one at index `earlier`.
    Cycle {
        /// The page this pointer names again.
        target: PhysAddr,
        /// Its first position in the chain.
        earlier: u64,
    },
    /// The page this pointer names is also used by an earlier chain (or
    /// holds the root).
    PageReused {
        /// The page used twice.
        target: PhysAddr,
        /// The chain that uses the page first (in walk order: root, IOMMU,
        /// domain, device); `None` for the root's page.
        other_chain: Option<Chain>,
        /// The page's index there (`None` for the root's page).
        other_page: Option<u64>,
    },
    /// A configurable limit is exceeded.
    LimitExceeded {
        /// Which limit.
        what: Limit,
        /// Its value.
        limit: u64,
    },
    /// `flags` has a bit version 1 does not define.
    UnknownFlags {
        /// The stored flags.
        flags: u32,
    },
    /// A live record has `ref_count` 0.
    ZeroRefCount,
    /// A live domain or device has a `ref_count` other than 1 (and not 0,
    /// which is [`ErrorKind::ZeroRefCount`]): the kernel never changes it
    /// from the 1 it starts at.
    RefCountNotOne {
        /// The stored `ref_count`.
        stored: u32,
    },
    /// A live IOMMU's `ref_count` differs from the number of live devices
    /// that name it.
    RefCountMismatch {
        /// The stored `ref_count`.
        stored: u32,
        /// Live devices naming this IOMMU.
        counted: u64,
    },
    /// A live IOMMU's `type` is neither Intel nor SMMUv3.
    UnknownIommuType {
        /// The stored type.
        raw: u64,
    },
    /// Two live IOMMUs have the same (token, type).
    DuplicateIommu {
        /// Page index of the earlier one.
        other_page: u64,
        /// Its slot in that page.
        other_object: u64,
    },
    /// Two live devices have the same (PCI segment, devid).
    DuplicateDevice {
        /// Page index of the earlier one.
        other_page: u64,
        /// Its slot in that page.
        other_object: u64,
    },
    /// A live device's `domain_phys` or `iommu_phys` does not name the start
    /// of a live record of the right kind.
    BadReference {
        /// The stored address.
        target: PhysAddr,
        /// Why it does not.
        fault: RefFault,
    },
    /// A domain's `vasz` is above 64.
    VaszTooLarge {
        /// The stored value.
        vasz: u32,
    },
    /// A domain's `sign_extend` is neither 0 nor 1.
    SignExtendInvalid {
        /// The stored value.
        value: u8,
    },
    /// A padding field is not zero: the `padding` of a domain, of an Intel
    /// IOMMU or device payload or of an SMMUv3 device payload, or the bytes
    /// of an SMMUv3 IOMMU's vendor union past `iommu_smmuv3_hw_ser` (field
    /// `vendor`), which no member of version 1 uses. Checked on live records.
    NonZeroPadding,
    /// In handover mode, a field the next kernel writes only after restore
    /// (`INCOMING`, `restored`, `restored_domain`) is set.
    AlreadyRestored,
    /// The caller's scratch slice is shorter than `scratch_len` said.
    ScratchTooSmall {
        /// Elements this image needs.
        needed: usize,
        /// Elements supplied.
        got: usize,
    },
    /// Version 2: the root's or a page's `magic` is wrong (a page reached
    /// through a bad pointer, or not an image at all).
    BadMagic {
        /// The stored value.
        found: u32,
    },
    /// Version 2: the page's stored `crc` is not the CRC-32 of its bytes.
    ChecksumMismatch {
        /// The value in the page.
        stored: u32,
        /// The CRC of the page as read.
        computed: u32,
    },
    /// Version 2: the page says it belongs to another chain (`chain`).
    WrongChain {
        /// The stored `chain` value.
        found: u16,
    },
    /// Version 2: the page's `index` is not its position in the chain.
    WrongIndex {
        /// The stored value.
        found: u64,
        /// Its position in the walk.
        expected: u64,
    },
    /// Version 2: the page's `generation` is not the root's: a page of an
    /// earlier handover.
    StaleGeneration {
        /// The page's value.
        found: u64,
        /// The root's.
        expected: u64,
    },
    /// Version 2: the root's page or record count of a chain disagrees
    /// with the chain as walked (a chain cut short or lengthened).
    CountMismatch {
        /// The root's value.
        stored: u64,
        /// What the walk found.
        counted: u64,
    },
    /// Version 2: incompatible feature bits this reader does not know.
    UnknownFeatures {
        /// The unknown bits.
        bits: u64,
    },
    /// Version 2: the image's writer needs a newer reader
    /// (`last_compatible_version` above 2), or `last_compatible_version` is
    /// not between 2 and `version`.
    IncompatibleVersion {
        /// The root's `version`.
        version: u64,
        /// The root's `last_compatible_version`.
        last_compatible: u32,
    },
    /// Version 2: the root's `page_size` is not 4096, 16384 or 65536.
    BadPageSize {
        /// The stored value.
        found: u32,
    },
    /// Version 2: the root's `root_size` is below the version-2 root or
    /// above the page.
    BadRootSize {
        /// The stored value.
        found: u32,
        /// sizeof(struct iommu_flb_v2_ser).
        min: u32,
        /// The page size.
        max: u32,
    },
    /// Version 2: a page's `stride` is not a multiple of 8 between the
    /// record's size and the room in a page.
    BadStride {
        /// The stored value.
        stride: u16,
        /// The record's size in version 2.
        min: u16,
        /// The page size less the page header.
        max: u32,
    },
    /// Version 2: a page's `stride` differs from the chain's first page.
    StrideChanged {
        /// The stored value.
        stride: u16,
        /// The head page's.
        first: u16,
    },
    /// Version 2: an array page with no records (an empty chain has no
    /// pages).
    EmptyPage,
    /// Version 2: a device's `domain_index` or `iommu_index` names no live
    /// record of that chain.
    BadIndex {
        /// The stored index.
        index: u64,
        /// Why: past the chain's records (`BeyondCount`) or deleted.
        fault: RefFault,
    },
}

impl ErrorKind {
    /// The stable negative errno for this kind:
    ///
    /// | kind | errno |
    /// |---|---|
    /// | `RootUnreadable`, `Unreadable` | `-EFAULT` (-14) |
    /// | `NullPointer`, `Unaligned` | `-EINVAL` (-22) |
    /// | `UnsupportedVersion` | `-EPROTONOSUPPORT` (-93) |
    /// | `CountOverCapacity` | `-EOVERFLOW` (-75) |
    /// | `PartialPage`, `ZeroRefCount`, `RefCountNotOne`, `RefCountMismatch`, `NonZeroPadding` | `-EBADMSG` (-74) |
    /// | `Cycle` | `-ELOOP` (-40) |
    /// | `PageReused` | `-EADDRINUSE` (-98) |
    /// | `LimitExceeded` | `-E2BIG` (-7) |
    /// | `UnknownFlags`, `UnknownIommuType` | `-EOPNOTSUPP` (-95) |
    /// | `DuplicateIommu`, `DuplicateDevice` | `-EEXIST` (-17) |
    /// | `BadReference` | `-ENOENT` (-2) |
    /// | `VaszTooLarge`, `SignExtendInvalid` | `-ERANGE` (-34) |
    /// | `AlreadyRestored` | `-EALREADY` (-114) |
    /// | `ScratchTooSmall` | `-ENOSPC` (-28) |
    /// | `BadMagic` | `-EPROTO` (-71) |
    /// | `ChecksumMismatch`, `WrongChain`, `WrongIndex`, `CountMismatch`, `EmptyPage` | `-EBADMSG` (-74) |
    /// | `StaleGeneration` | `-ESTALE` (-116) |
    /// | `UnknownFeatures` | `-EOPNOTSUPP` (-95) |
    /// | `IncompatibleVersion` | `-EPROTONOSUPPORT` (-93) |
    /// | `BadPageSize`, `BadRootSize`, `BadStride`, `StrideChanged` | `-EINVAL` (-22) |
    /// | `BadIndex` | `-ENOENT` (-2) |
    pub const fn errno(&self) -> i32 {
        use crate::errno::*;
        let e = match self {
            ErrorKind::RootUnreadable | ErrorKind::Unreadable { .. } => EFAULT,
            ErrorKind::NullPointer | ErrorKind::Unaligned { .. } => EINVAL,
            ErrorKind::UnsupportedVersion { .. } => EPROTONOSUPPORT,
            ErrorKind::CountOverCapacity { .. } => EOVERFLOW,
            ErrorKind::PartialPage { .. }
            | ErrorKind::ZeroRefCount
            | ErrorKind::RefCountNotOne { .. }
            | ErrorKind::RefCountMismatch { .. }
            | ErrorKind::NonZeroPadding => EBADMSG,
            ErrorKind::Cycle { .. } => ELOOP,
            ErrorKind::PageReused { .. } => EADDRINUSE,
            ErrorKind::LimitExceeded { .. } => E2BIG,
            ErrorKind::UnknownFlags { .. } | ErrorKind::UnknownIommuType { .. } => EOPNOTSUPP,
            ErrorKind::DuplicateIommu { .. } | ErrorKind::DuplicateDevice { .. } => EEXIST,
            ErrorKind::BadReference { .. } => ENOENT,
            ErrorKind::VaszTooLarge { .. } | ErrorKind::SignExtendInvalid { .. } => ERANGE,
            ErrorKind::AlreadyRestored => EALREADY,
            ErrorKind::ScratchTooSmall { .. } => ENOSPC,
            ErrorKind::BadMagic { .. } => EPROTO,
            ErrorKind::ChecksumMismatch { .. }
            | ErrorKind::WrongChain { .. }
            | ErrorKind::WrongIndex { .. }
            | ErrorKind::CountMismatch { .. }
            | ErrorKind::EmptyPage => EBADMSG,
            ErrorKind::StaleGeneration { .. } => ESTALE,
            ErrorKind::UnknownFeatures { .. } => EOPNOTSUPP,
            ErrorKind::IncompatibleVersion { .. } => EPROTONOSUPPORT,
            ErrorKind::BadPageSize { .. }
            | ErrorKind::BadRootSize { .. }
            | ErrorKind::BadStride { .. }
            | ErrorKind::StrideChanged { .. } => EINVAL,
            ErrorKind::BadIndex { .. } => ENOENT,
        };
        // The constants are small positive numbers: negation is exact.
        e.wrapping_neg()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::RootUnreadable => f.write_str("root page unreadable"),
            ErrorKind::UnsupportedVersion { found } => write!(f, "unsupported version {found}"),
            ErrorKind::NullPointer => f.write_str("is zero"),
            ErrorKind::Unaligned { value } => write!(f, "{value} is not page-aligned"),
            ErrorKind::Unreadable { target } => write!(f, "page {target} unreadable"),
            ErrorKind::CountOverCapacity {
                nr_objects,
                capacity,
            } => write!(f, "nr_objects {nr_objects} above page capacity {capacity}"),
            ErrorKind::PartialPage {
                nr_objects,
                capacity,
            } => write!(f, "not the last page but holds {nr_objects} of {capacity}"),
            ErrorKind::Cycle { target, earlier } => {
                write!(f, "cycle: {target} is page {earlier} of this chain again")
            }
            ErrorKind::PageReused {
                target,
                other_chain: Some(c),
                other_page: Some(p),
            } => write!(f, "{target} is also {c} chain page {p}"),
            ErrorKind::PageReused { target, .. } => {
                write!(f, "{target} is also the root's page")
            }
            ErrorKind::LimitExceeded { what, limit } => match what {
                Limit::PagesPerChain => write!(f, "more than {limit} pages in the chain"),
                Limit::Objects => write!(f, "more than {limit} objects"),
            },
            ErrorKind::UnknownFlags { flags } => write!(f, "unknown flag bits in {flags:#x}"),
            ErrorKind::ZeroRefCount => f.write_str("live object with ref_count 0"),
            ErrorKind::RefCountNotOne { stored } => {
                write!(f, "ref_count {stored}, not 1, on a live domain or device")
            }
            ErrorKind::RefCountMismatch { stored, counted } => {
                write!(f, "ref_count {stored} but {counted} live devices name it")
            }
            ErrorKind::UnknownIommuType { raw } => write!(f, "unknown IOMMU type {raw}"),
            ErrorKind::DuplicateIommu {
                other_page,
                other_object,
            } => write!(
                f,
                "same (token, type) as page {other_page} object {other_object}"
            ),
            ErrorKind::DuplicateDevice {
                other_page,
                other_object,
            } => write!(
                f,
                "same (segment, devid) as page {other_page} object {other_object}"
            ),
            ErrorKind::BadReference { target, fault } => {
                write!(f, "{target} names no live record: {fault}")
            }
            ErrorKind::VaszTooLarge { vasz } => write!(f, "vasz {vasz} above 64"),
            ErrorKind::SignExtendInvalid { value } => write!(f, "sign_extend {value} above 1"),
            ErrorKind::NonZeroPadding => f.write_str("padding not zero"),
            ErrorKind::AlreadyRestored => f.write_str("set before restore (handover mode)"),
            ErrorKind::ScratchTooSmall { needed, got } => {
                write!(f, "scratch has {got} elements, image needs {needed}")
            }
            ErrorKind::BadMagic { found } => write!(f, "bad magic {found:#010x}"),
            ErrorKind::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum {stored:#010x} stored, {computed:#010x} computed"
                )
            }
            ErrorKind::WrongChain { found } => write!(f, "page of chain {found}, not this one"),
            ErrorKind::WrongIndex { found, expected } => {
                write!(
                    f,
                    "page says index {found}, is page {expected} of the chain"
                )
            }
            ErrorKind::StaleGeneration { found, expected } => write!(
                f,
                "generation {found:#x}, root's is {expected:#x}: a page of an earlier handover"
            ),
            ErrorKind::CountMismatch { stored, counted } => {
                write!(f, "root says {stored}, chain holds {counted}")
            }
            ErrorKind::UnknownFeatures { bits } => {
                write!(f, "unknown incompatible features {bits:#x}")
            }
            ErrorKind::IncompatibleVersion {
                version,
                last_compatible,
            } => {
                if u64::from(last_compatible) <= version && last_compatible > 2 {
                    write!(
                        f,
                        "version {version} needs a reader of version {last_compatible} or later"
                    )
                } else {
                    write!(
                        f,
                        "last_compatible_version {last_compatible} not between 2 and version {version}"
                    )
                }
            }
            ErrorKind::BadPageSize { found } => {
                write!(f, "page size {found}, not 4096, 16384 or 65536")
            }
            ErrorKind::BadRootSize { found, min, max } => {
                write!(f, "root_size {found} not between {min} and {max}")
            }
            ErrorKind::BadStride { stride, min, max } => write!(
                f,
                "stride {stride} not a multiple of 8 between {min} and {max}"
            ),
            ErrorKind::StrideChanged { stride, first } => {
                write!(f, "stride {stride}, the chain's first page has {first}")
            }
            ErrorKind::EmptyPage => f.write_str("array page with no records"),
            ErrorKind::BadIndex { index, fault } => {
                write!(f, "index {index} names no live record: {fault}")
            }
        }
    }
}

/// Where an error is: the chain, the page in it, the record in the page and
/// the field. Fields that do not apply are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The chain; `None` for the root.
    pub chain: Option<Chain>,
    /// Index of the page in its chain (0 = head); `None` for the root.
    pub page: Option<u64>,
    /// Physical address of that page (for the root: the root's address).
    pub page_phys: PhysAddr,
    /// Slot of the record in the page (0-based), if the error is in a record.
    pub object: Option<u64>,
    /// The C name of the offending field, if one is to blame.
    pub field: Option<&'static str>,
}

impl Location {
    /// The root struct at `phys`, field `field`.
    pub const fn root(phys: PhysAddr, field: Option<&'static str>) -> Self {
        Location {
            chain: None,
            page: None,
            page_phys: phys,
            object: None,
            field,
        }
    }

    /// Page `page` (at `page_phys`) of `chain`.
    pub const fn page(chain: Chain, page: u64, page_phys: PhysAddr) -> Self {
        Location {
            chain: Some(chain),
            page: Some(page),
            page_phys,
            object: None,
            field: None,
        }
    }

    /// The same place, narrowed to record slot `object`.
    #[must_use]
    pub const fn object(mut self, object: u64) -> Self {
        self.object = Some(object);
        self
    }

    /// The same place, narrowed to field `field`.
    #[must_use]
    pub const fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.page {
            None => write!(f, "{} at {}", Chain::name_of(self.chain), self.page_phys)?,
            Some(p) => write!(
                f,
                "{} chain page {} ({})",
                Chain::name_of(self.chain),
                p,
                self.page_phys
            )?,
        }
        if let Some(o) = self.object {
            write!(f, " object {o}")?;
        }
        if let Some(field) = self.field {
            write!(f, " {field}")?;
        }
        Ok(())
    }
}

/// A refusal: what is wrong and where.
///
/// `Display` gives one line a kernel log can carry, e.g.
/// `iommu-flb: device chain page 2 (0x7000) object 5 domain_phys: 0x3028 names
/// no live record: the record is deleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    kind: ErrorKind,
    location: Location,
}

impl Error {
    /// An error of `kind` at `location`.
    pub const fn new(kind: ErrorKind, location: Location) -> Self {
        Error { kind, location }
    }

    /// What is wrong.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where.
    pub const fn location(&self) -> Location {
        self.location
    }

    /// The chain the error is in; `None` for the root.
    pub const fn chain(&self) -> Option<Chain> {
        self.location.chain
    }

    /// Index of the page in its chain, `None` for the root.
    pub const fn page(&self) -> Option<u64> {
        self.location.page
    }

    /// Physical address of the page (the root's address for the root).
    pub const fn page_phys(&self) -> PhysAddr {
        self.location.page_phys
    }

    /// Slot of the record in its page, if any.
    pub const fn object(&self) -> Option<u64> {
        self.location.object
    }

    /// The offending field's C name, if any.
    pub const fn field(&self) -> Option<&'static str> {
        self.location.field
    }

    /// The stable negative errno for C callers (see [`ErrorKind::errno`]).
    pub const fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iommu-flb: {}: {}", self.location, self.kind)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn display_names_chain_page_object_field_and_what() {
        let e = Error::new(
            ErrorKind::BadReference {
                target: PhysAddr::new(0x3028),
                fault: RefFault::Deleted,
            },
            Location::page(Chain::Device, 2, PhysAddr::new(0x7000))
                .object(5)
                .field("domain_phys"),
        );
        assert_eq!(
            e.to_string(),
            "iommu-flb: device chain page 2 (0x7000) object 5 domain_phys: \
             0x3028 names no live record: the record is deleted"
        );
        assert_eq!(e.errno(), -2);
    }

    #[test]
    fn errno_values_are_the_documented_linux_numbers() {
        let p = PhysAddr::new(0x1000);
        let table: [(ErrorKind, i32); 23] = [
            (ErrorKind::RootUnreadable, -14),
            (ErrorKind::Unreadable { target: p }, -14),
            (ErrorKind::NullPointer, -22),
            (ErrorKind::Unaligned { value: p }, -22),
            (ErrorKind::UnsupportedVersion { found: 2 }, -93),
            (
                ErrorKind::CountOverCapacity {
                    nr_objects: 57,
                    capacity: 56,
                },
                -75,
            ),
            (
                ErrorKind::PartialPage {
                    nr_objects: 1,
                    capacity: 56,
                },
                -74,
            ),
            (ErrorKind::ZeroRefCount, -74),
            (ErrorKind::RefCountNotOne { stored: 2 }, -74),
            (
                ErrorKind::RefCountMismatch {
                    stored: 1,
                    counted: 2,
                },
                -74,
            ),
            (ErrorKind::NonZeroPadding, -74),
            (
                ErrorKind::Cycle {
                    target: p,
                    earlier: 0,
                },
                -40,
            ),
            (
                ErrorKind::PageReused {
                    target: p,
                    other_chain: None,
                    other_page: None,
                },
                -98,
            ),
            (
                ErrorKind::LimitExceeded {
                    what: Limit::Objects,
                    limit: 1,
                },
                -7,
            ),
            (ErrorKind::UnknownFlags { flags: 4 }, -95),
            (ErrorKind::UnknownIommuType { raw: 3 }, -95),
            (
                ErrorKind::DuplicateIommu {
                    other_page: 0,
                    other_object: 0,
                },
                -17,
            ),
            (
                ErrorKind::DuplicateDevice {
                    other_page: 0,
                    other_object: 0,
                },
                -17,
            ),
            (
                ErrorKind::BadReference {
                    target: p,
                    fault: RefFault::NotInChain,
                },
                -2,
            ),
            (ErrorKind::VaszTooLarge { vasz: 65 }, -34),
            (ErrorKind::SignExtendInvalid { value: 2 }, -34),
            (ErrorKind::AlreadyRestored, -114),
            (ErrorKind::ScratchTooSmall { needed: 2, got: 1 }, -28),
        ];
        for (kind, errno) in table {
            assert_eq!(kind.errno(), errno, "{kind:?}");
        }
    }

    #[test]
    fn root_errors_display_the_root_address_and_version() {
        let e = Error::new(
            ErrorKind::UnsupportedVersion { found: 7 },
            Location::root(PhysAddr::new(0x1010), Some("version")),
        );
        assert_eq!(
            e.to_string(),
            "iommu-flb: root at 0x1010 version: unsupported version 7"
        );
        assert_eq!(e.errno(), -93);
    }
}
