//! What differs between format versions, for the reader: one module per
//! version implements [`Format`]; the chain walk, the indexes, the record
//! checks, the view and the C boundary are written once over it.
//!
//! Adding a version is one new module here (its rules) beside its layout in
//! `abi/`, and one line in [`Version`]'s dispatch.

pub(crate) mod v1;
pub(crate) mod v2;

use zerocopy::FromBytes;

use crate::abi::PageSize;
use crate::abi::v1::{IommuHdrSer, IommuTypeSer};
use crate::crc::Crc32;
use crate::error::{Chain, Error, ErrorKind, Location};
use crate::mem::read_page;
use crate::reader::{DevicePayload, IommuPayload, Options};
use crate::{Memory, PhysAddr};

/// The checked root, whatever its version.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Root<'m> {
    /// The stored `version`.
    pub version: u64,
    /// The page size of every page of the image.
    pub page_size: PageSize,
    /// The three chain heads (IOMMU, domain, device); `NULL` only for an
    /// empty chain of a format that allows one.
    pub heads: [PhysAddr; 3],
    /// The root's (pages, records) per chain, in formats that record them.
    pub counts: Option<[(u64, u64); 3]>,
    /// The generation every page must repeat (0 in version 1).
    pub generation: u64,
    /// The root's page.
    pub bytes: &'m [u8],
}

/// A checked array-page header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageHdr {
    pub next: PhysAddr,
    pub nr_objects: u64,
    /// Bytes per record in this page.
    pub stride: u64,
}

/// A device's key in the reader's device index: segment << 32 | devid,
/// any `u64` (both halves are full `u32`s).
#[inline(always)]
pub(crate) fn device_key(segment: u32, devid: u32) -> u64 {
    (u64::from(segment) << 32) | u64::from(devid)
}

/// What is wrong with a record, and the C name of the field to blame.
pub(crate) type Fault = (ErrorKind, &'static str);

/// How a device names its domain or IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ref {
    /// The physical address of the record (version 1).
    Phys(PhysAddr),
    /// The record's index in its chain (version 2).
    Index(u64),
}

impl Ref {
    /// The stored value: an address or an index.
    pub(crate) const fn raw(self) -> u64 {
        match self {
            Ref::Phys(p) => p.get(),
            Ref::Index(i) => i,
        }
    }
}

/// The fields of a domain record the checks and the view read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DomainFields {
    pub top_table_phys: u64,
    pub top_level: u64,
    pub vasz: u32,
    pub sign_extend: u8,
    pub padding: [u8; 3],
    /// `restored_domain` in version 1; 0 in formats without it.
    pub restored: u64,
}

impl DomainFields {
    /// All zero (a record too short to read, which callers never pass).
    pub(crate) const ZERO: DomainFields = DomainFields {
        top_table_phys: 0,
        top_level: 0,
        vasz: 0,
        sign_extend: 0,
        padding: [0; 3],
        restored: 0,
    };
}

/// The fields of a device record the checks and the view read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceFields {
    pub segment: u32,
    pub devid: u32,
    pub dma_owner_token: u64,
    pub attachment_id: u64,
    pub domain: Ref,
    pub iommu: Ref,
}

impl DeviceFields {
    /// The device's key in the duplicate check and the device index.
    #[inline(always)]
    pub(crate) fn key(&self) -> u64 {
        device_key(self.segment, self.devid)
    }

    /// All zero (a record too short to read, which callers never pass).
    pub(crate) const ZERO: DeviceFields = DeviceFields {
        segment: 0,
        devid: 0,
        dma_owner_token: 0,
        attachment_id: 0,
        domain: Ref::Index(u64::MAX),
        iommu: Ref::Index(u64::MAX),
    };
}

/// The rules of one format version. Record arguments are exactly the
/// version's record size (`HW`, `DOM`, `DEV`) long; the functions return
/// zeros for a shorter slice rather than fail, since the callers cut them.
pub(crate) trait Format {
    /// The version whose rules these are.
    const KIND: Version;
    /// Bytes before the first record of an array page.
    const PAGE_HDR: u64;
    /// Bytes of an IOMMU, domain and device record this version defines.
    const HW: usize;
    const DOM: usize;
    const DEV: usize;
    /// Every record flag this version defines, and its `DELETED` and
    /// `INCOMING` bits (0 where the version has none).
    const FLAGS_KNOWN: u32;
    const DELETED: u32;
    const INCOMING: u32;
    /// Whether an empty chain has no pages (a zero head).
    const EMPTY_CHAINS: bool;
    /// The device fields that name the domain and the IOMMU.
    const DOMAIN_REF: &'static str;
    const IOMMU_REF: &'static str;

    /// The root field that holds the head of `chain`.
    fn head_field(chain: Chain) -> &'static str;

    /// The size of a record of `chain` this version defines (version 2's
    /// smallest stride): what the reader checks and the writer writes.
    fn record_size(chain: Chain) -> usize {
        match chain {
            Chain::Iommu => Self::HW,
            Chain::Domain => Self::DOM,
            Chain::Device => Self::DEV,
        }
    }

    /// Checks the root and returns what it says. `first` is the root's
    /// page as [`Version::detect`] read it (`None`: it could not).
    fn root<'m, M: Memory + ?Sized>(
        mem: &'m M,
        root: PhysAddr,
        opts: &Options,
        first: Option<&'m [u8]>,
    ) -> Result<Root<'m>, Error>;

    /// Checks the header of `page`, page `index` of `chain`, located at
    /// `here`.
    fn page(
        page: &[u8],
        chain: Chain,
        index: u64,
        root: &Root<'_>,
        crc: Option<&Crc32>,
        here: Location,
    ) -> Result<PageHdr, Error>;

    /// An IOMMU record's (token, type).
    fn hw(rec: &[u8]) -> (u64, u64);
    /// Checks the vendor part of a live IOMMU record of type `ty`.
    fn check_hw_vendor(
        rec: &[u8],
        ty: IommuTypeSer,
        loc: Location,
        handover: bool,
    ) -> Result<(), Error>;
    /// The vendor part of a valid IOMMU record of type `ty`.
    fn hw_payload(rec: &[u8], ty: IommuTypeSer) -> Option<IommuPayload<'_>>;

    /// A domain record's fields.
    fn domain(rec: &[u8]) -> DomainFields;

    /// A device record's fields.
    fn device(rec: &[u8]) -> DeviceFields;
    /// Checks the vendor part of a live device record whose IOMMU has type
    /// `ty`. The caller, which knows where the record is, makes the error:
    /// the device pass's fast half then builds nothing for it.
    fn check_dev_vendor(rec: &[u8], ty: IommuTypeSer, handover: bool) -> Result<(), Fault>;
    /// The vendor part of a valid device record whose IOMMU has type `ty`.
    fn dev_payload(rec: &[u8], ty: IommuTypeSer) -> Option<DevicePayload<'_>>;
}

/// The format versions this reader knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Version {
    V1,
    V2,
}

impl Version {
    /// Which format's rules apply to the root at `root`: version 2 for a
    /// first word of 2 or more followed by version 2's root magic (2, or a
    /// later writer that may allow version-2 readers); version 1
    /// otherwise, whose root check then reports a bad alignment, an
    /// unreadable root or an unsupported version exactly as before version
    /// 2 existed. A word of 2 without the magic is not a version-2 root, so
    /// it is an unsupported version.
    ///
    /// The root is read once, at `opts.page_size` (the size version 1 reads
    /// it at), and the page returned for the root check to use, so a
    /// version-1 image costs the reads it cost before version 2 existed.
    pub(crate) fn detect<'m, M: Memory + ?Sized>(
        mem: &'m M,
        root: PhysAddr,
        opts: &Options,
    ) -> (Self, Option<&'m [u8]>) {
        let page = read_page(mem, root, opts.page_size);
        let word = |at: usize, len: usize| -> Option<u64> {
            let b = page?.get(at..at.checked_add(len)?)?;
            let mut w = [0u8; 8];
            w.get_mut(..len)?.copy_from_slice(b);
            Some(u64::from_le_bytes(w))
        };
        let magic = word(8, 4) == Some(u64::from(crate::abi::v2::IOMMU_FLB_V2_ROOT_MAGIC));
        let version = match word(0, 8) {
            Some(v) if v >= 2 && magic => Version::V2,
            _ => Version::V1,
        };
        (version, page)
    }

    /// The version's number.
    pub(crate) const fn number(self) -> u64 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }
}

/// The view's per-version functions, so that record handles need only a
/// reference to them. Each dispatches on the version with a `match` the
/// compiler inlines (a function pointer would be an indirect call on every
/// field read).
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    /// The format version these are the rules of, which the view's
    /// dispatch matches on exhaustively.
    pub kind: Version,
    pub page_hdr: u64,
    pub hw: usize,
    pub dom: usize,
    pub dev: usize,
    pub deleted: u32,
}

/// Evaluates `$e` with `$f` naming the format whose rules `$ops` are: the
/// one place a new version adds a line to the view.
macro_rules! by_version {
    ($ops:expr, $f:ident => $e:expr) => {
        match $ops.kind {
            Version::V1 => {
                type $f = v1::V1;
                $e
            }
            Version::V2 => {
                type $f = v2::V2;
                $e
            }
        }
    };
}

impl core::fmt::Debug for Ops {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ops")
            .field("version", &self.kind.number())
            .field("page_hdr", &self.page_hdr)
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// The functions of format `F`.
    pub(crate) const fn of<F: Format>() -> Ops {
        Ops {
            kind: F::KIND,
            page_hdr: F::PAGE_HDR,
            hw: F::HW,
            dom: F::DOM,
            dev: F::DEV,
            deleted: F::DELETED,
        }
    }

    /// [`Format::hw`].
    #[inline(always)]
    pub(crate) fn hw_fields(&self, rec: &[u8]) -> (u64, u64) {
        by_version!(self, F => F::hw(rec))
    }

    /// [`Format::hw_payload`].
    #[inline(always)]
    pub(crate) fn hw_payload<'a>(
        &self,
        rec: &'a [u8],
        ty: IommuTypeSer,
    ) -> Option<IommuPayload<'a>> {
        by_version!(self, F => F::hw_payload(rec, ty))
    }

    /// [`Format::domain`].
    #[inline(always)]
    pub(crate) fn domain(&self, rec: &[u8]) -> DomainFields {
        by_version!(self, F => F::domain(rec))
    }

    /// [`Format::device`].
    #[inline(always)]
    pub(crate) fn device(&self, rec: &[u8]) -> DeviceFields {
        by_version!(self, F => F::device(rec))
    }

    /// [`Format::dev_payload`].
    #[inline(always)]
    pub(crate) fn dev_payload<'a>(
        &self,
        rec: &'a [u8],
        ty: IommuTypeSer,
    ) -> Option<DevicePayload<'a>> {
        by_version!(self, F => F::dev_payload(rec, ty))
    }
}

/// `(ref_count, flags)` of a record's header (the same 8 bytes in every
/// version).
#[inline]
pub(crate) fn record_hdr(bytes: &[u8]) -> (u32, u32) {
    match IommuHdrSer::read_from_prefix(bytes) {
        Ok((h, _)) => (h.ref_count.get(), h.flags.get()),
        Err(_) => (0, 0),
    }
}

/// The little-endian `u32` at `at`, 0 if it does not fit.
#[inline]
pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    at.checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

/// Whether every byte of `bytes[from..]` is zero (true past the end). An
/// OR over the bytes, with no early exit, so that it vectorises.
#[inline]
pub(crate) fn zero_from(bytes: &[u8], from: usize) -> bool {
    bytes
        .get(from..)
        .is_none_or(|t| t.iter().fold(0u8, |a, b| a | b) == 0)
}
