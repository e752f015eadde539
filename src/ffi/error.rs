//! The error record C callers get (`struct iommu_flb_error`), the numbered
//! error kinds, and the one place that turns a reader or writer error into
//! them.

use core::ffi::{CStr, c_char, c_int};
use core::fmt::{self, Write as _};

use crate::error::{Chain, Error, ErrorKind, Location};
use crate::writer::{ObjectKind, WriteError};

/// The errno values the boundary itself returns, negated as C callers get
/// them; the values are the crate's one table (`crate::errno`).
pub(super) mod errno {
    use crate::errno as positive;
    use core::ffi::c_int;
    /// `-ENOENT`: no such object.
    pub(in crate::ffi) const ENOENT: c_int = -positive::ENOENT;
    /// `-EFAULT`: a page the image needs can no longer be read.
    pub(in crate::ffi) const EFAULT: c_int = -positive::EFAULT;
    /// `-EBUSY`: the writer is in use (started, or inside a call).
    pub(in crate::ffi) const EBUSY: c_int = -positive::EBUSY;
    /// `-EINVAL`: a bad argument.
    pub(in crate::ffi) const EINVAL: c_int = -positive::EINVAL;
    /// `-EPROTONOSUPPORT`: a format version the library does not write.
    pub(in crate::ffi) const EPROTONOSUPPORT: c_int = -positive::EPROTONOSUPPORT;
    /// `-ENOSPC`: the scratch is too small.
    pub(in crate::ffi) const ENOSPC: c_int = -positive::ENOSPC;
    /// `-EOVERFLOW`: a size does not fit `size_t`.
    pub(in crate::ffi) const EOVERFLOW: c_int = -positive::EOVERFLOW;
    /// `-ESTALE`: the scratch no longer holds the image (or the cursor's
    /// image) the pointer came from.
    pub(in crate::ffi) const ESTALE: c_int = -positive::ESTALE;
}

/// IOMMU_FLB_NONE - The value of an index or address in
/// `struct iommu_flb_error` or `struct iommu_flb_restore_status` that does
/// not apply.
pub const IOMMU_FLB_NONE: u64 = 0xffff_ffff_ffff_ffff;

/// IOMMU_FLB_MESSAGE_LEN - Size of `struct iommu_flb_error.message`,
/// terminating NUL included.
pub const IOMMU_FLB_MESSAGE_LEN: usize = 192;

/// enum iommu_flb_chain - Which part of an image an error is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum IommuFlbChain {
    /// @IOMMU_FLB_CHAIN_ROOT: The root `struct iommu_flb_ser` (or, for an
    /// argument error, no part of the image).
    IommuFlbChainRoot = 0,
    /// @IOMMU_FLB_CHAIN_IOMMU: The chain of `struct iommu_hw_ser` pages.
    IommuFlbChainIommu = 1,
    /// @IOMMU_FLB_CHAIN_DOMAIN: The chain of `struct iommu_domain_ser` pages.
    IommuFlbChainDomain = 2,
    /// @IOMMU_FLB_CHAIN_DEVICE: The chain of `struct iommu_device_ser` pages.
    IommuFlbChainDevice = 3,
}

impl IommuFlbChain {
    /// The C code of a location's chain (`None`: the root).
    pub(super) fn of(chain: Option<Chain>) -> Self {
        match chain {
            None => IommuFlbChain::IommuFlbChainRoot,
            Some(Chain::Iommu) => IommuFlbChain::IommuFlbChainIommu,
            Some(Chain::Domain) => IommuFlbChain::IommuFlbChainDomain,
            Some(Chain::Device) => IommuFlbChain::IommuFlbChainDevice,
        }
    }

    pub(super) const fn code(self) -> u32 {
        // A field-less enum's discriminant; all are small and non-negative.
        #[allow(clippy::as_conversions)]
        let c = self as u32;
        c
    }
}

/// enum iommu_flb_error_kind - What is wrong, as stored in
/// `struct iommu_flb_error.kind`. The values are stable; the errno each
/// kind is returned as is part of the contract.
///
/// 1 to 63 are refusals of the image by `iommu_flb_scratch_size()` and
/// `iommu_flb_validate()`, 64 to 127 misuse of the API, 128 and above
/// refusals by the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum IommuFlbErrorKind {
    /// @IOMMU_FLB_ERR_NONE: No error. Returned as 0.
    IommuFlbErrNone = 0,
    /// @IOMMU_FLB_ERR_ROOT_UNREADABLE: The page holding the root cannot be
    /// read (the memory callback returned NULL). Returned as -EFAULT.
    IommuFlbErrRootUnreadable = 1,
    /// @IOMMU_FLB_ERR_ROOT_CROSSES_PAGE: Retired, never returned: the root
    /// must start its page (IOMMU_FLB_ERR_UNALIGNED otherwise), so it cannot
    /// cross the page end. The value stays reserved.
    IommuFlbErrRootCrossesPage = 2,
    /// @IOMMU_FLB_ERR_UNSUPPORTED_VERSION: The root's version is not 1.
    /// Returned as -EPROTONOSUPPORT.
    IommuFlbErrUnsupportedVersion = 3,
    /// @IOMMU_FLB_ERR_NULL_POINTER: A pointer that must be non-zero is zero
    /// (a chain head, top_table_phys). Returned as -EINVAL.
    IommuFlbErrNullPointer = 4,
    /// @IOMMU_FLB_ERR_UNALIGNED: A pointer that must be page-aligned is not
    /// (the root's address included). Returned as -EINVAL.
    IommuFlbErrUnaligned = 5,
    /// @IOMMU_FLB_ERR_UNREADABLE: A chain page cannot be read (the memory
    /// callback returned NULL: not preserved, or not memory). Returned as
    /// -EFAULT.
    IommuFlbErrUnreadable = 6,
    /// @IOMMU_FLB_ERR_COUNT_OVER_CAPACITY: nr_objects is above what one page
    /// holds. Returned as -EOVERFLOW.
    IommuFlbErrCountOverCapacity = 7,
    /// @IOMMU_FLB_ERR_PARTIAL_PAGE: A page that is not its chain's last is
    /// not full. Returned as -EBADMSG.
    IommuFlbErrPartialPage = 8,
    /// @IOMMU_FLB_ERR_CYCLE: next_array_phys leads back into its own chain.
    /// Returned as -ELOOP.
    IommuFlbErrCycle = 9,
    /// @IOMMU_FLB_ERR_PAGE_REUSED: A page is used twice (by two chains, or
    /// also holds the root). Returned as -EADDRINUSE.
    IommuFlbErrPageReused = 10,
    /// @IOMMU_FLB_ERR_LIMIT_EXCEEDED: More pages in a chain, or more records
    /// in all, than the reader's limits allow. Returned as -E2BIG.
    IommuFlbErrLimitExceeded = 11,
    /// @IOMMU_FLB_ERR_UNKNOWN_FLAGS: A record's flags has a bit version 1
    /// does not define. Returned as -EOPNOTSUPP.
    IommuFlbErrUnknownFlags = 12,
    /// @IOMMU_FLB_ERR_ZERO_REF_COUNT: A live record has ref_count 0.
    /// Returned as -EBADMSG.
    IommuFlbErrZeroRefCount = 13,
    /// @IOMMU_FLB_ERR_REF_COUNT_MISMATCH: A live IOMMU's ref_count is not
    /// its number of live devices. Returned as -EBADMSG.
    IommuFlbErrRefCountMismatch = 14,
    /// @IOMMU_FLB_ERR_UNKNOWN_IOMMU_TYPE: A live IOMMU's type is neither
    /// IOMMU_INTEL nor IOMMU_ARM_SMMUV3. Returned as -EOPNOTSUPP.
    IommuFlbErrUnknownIommuType = 15,
    /// @IOMMU_FLB_ERR_DUPLICATE_IOMMU: Two live IOMMUs have the same (token,
    /// type). Returned as -EEXIST.
    IommuFlbErrDuplicateIommu = 16,
    /// @IOMMU_FLB_ERR_DUPLICATE_DEVICE: Two live devices have the same
    /// (segment, devid). Returned as -EEXIST.
    IommuFlbErrDuplicateDevice = 17,
    /// @IOMMU_FLB_ERR_BAD_REFERENCE: A live device's domain_phys or
    /// iommu_phys does not name the start of a live record of the right
    /// kind. Returned as -ENOENT.
    IommuFlbErrBadReference = 18,
    /// @IOMMU_FLB_ERR_VASZ_TOO_LARGE: A domain's vasz is above 64. Returned
    /// as -ERANGE.
    IommuFlbErrVaszTooLarge = 19,
    /// @IOMMU_FLB_ERR_SIGN_EXTEND_INVALID: A domain's sign_extend is above 1.
    /// Returned as -ERANGE.
    IommuFlbErrSignExtendInvalid = 20,
    /// @IOMMU_FLB_ERR_NON_ZERO_PADDING: A padding field is not zero.
    /// Returned as -EBADMSG.
    IommuFlbErrNonZeroPadding = 21,
    /// @IOMMU_FLB_ERR_ALREADY_RESTORED: In IOMMU_FLB_MODE_HANDOVER, a field
    /// only the next kernel writes (INCOMING, restored, restored_domain) is
    /// set. Returned as -EALREADY.
    IommuFlbErrAlreadyRestored = 22,
    /// @IOMMU_FLB_ERR_SCRATCH_TOO_SMALL: The scratch is smaller than
    /// iommu_flb_scratch_size() said. Returned as -ENOSPC.
    IommuFlbErrScratchTooSmall = 23,
    /// @IOMMU_FLB_ERR_REF_COUNT_NOT_ONE: A live domain or device has a
    /// ref_count other than 0 or 1. Returned as -EBADMSG.
    IommuFlbErrRefCountNotOne = 24,
    /// @IOMMU_FLB_ERR_BAD_MAGIC: Version 2: the root's or a page's magic is
    /// wrong. Returned as -EPROTO.
    IommuFlbErrBadMagic = 25,
    /// @IOMMU_FLB_ERR_CHECKSUM_MISMATCH: Version 2: a page's crc is not the
    /// CRC-32 of its bytes. Returned as -EBADMSG.
    IommuFlbErrChecksumMismatch = 26,
    /// @IOMMU_FLB_ERR_WRONG_CHAIN: Version 2: a page names another chain.
    /// Returned as -EBADMSG.
    IommuFlbErrWrongChain = 27,
    /// @IOMMU_FLB_ERR_WRONG_INDEX: Version 2: a page's index is not its
    /// position in the chain. Returned as -EBADMSG.
    IommuFlbErrWrongIndex = 28,
    /// @IOMMU_FLB_ERR_STALE_GENERATION: Version 2: a page's generation is
    /// not the root's. Returned as -ESTALE.
    IommuFlbErrStaleGeneration = 29,
    /// @IOMMU_FLB_ERR_COUNT_MISMATCH: Version 2: the root's page or record
    /// count of a chain disagrees with the chain. Returned as -EBADMSG.
    IommuFlbErrCountMismatch = 30,
    /// @IOMMU_FLB_ERR_UNKNOWN_FEATURES: Version 2: unknown incompatible
    /// feature bits. Returned as -EOPNOTSUPP.
    IommuFlbErrUnknownFeatures = 31,
    /// @IOMMU_FLB_ERR_INCOMPATIBLE_VERSION: Version 2: the image needs a
    /// newer reader, or its last_compatible_version is invalid. Returned as
    /// -EPROTONOSUPPORT.
    IommuFlbErrIncompatibleVersion = 32,
    /// @IOMMU_FLB_ERR_BAD_PAGE_SIZE: Version 2: the root's page_size is not
    /// 4096, 16384 or 65536. Returned as -EINVAL.
    IommuFlbErrBadPageSize = 33,
    /// @IOMMU_FLB_ERR_BAD_ROOT_SIZE: Version 2: root_size out of range.
    /// Returned as -EINVAL.
    IommuFlbErrBadRootSize = 34,
    /// @IOMMU_FLB_ERR_BAD_STRIDE: Version 2: a page's stride is not a
    /// multiple of 8 between the record size and the page's room. Returned
    /// as -EINVAL.
    IommuFlbErrBadStride = 35,
    /// @IOMMU_FLB_ERR_STRIDE_CHANGED: Version 2: a page's stride differs
    /// from its chain's first page. Returned as -EINVAL.
    IommuFlbErrStrideChanged = 36,
    /// @IOMMU_FLB_ERR_EMPTY_PAGE: Version 2: an array page holds no
    /// records. Returned as -EBADMSG.
    IommuFlbErrEmptyPage = 37,
    /// @IOMMU_FLB_ERR_BAD_INDEX: Version 2: a device's domain_index or
    /// iommu_index names no live record. Returned as -ENOENT.
    IommuFlbErrBadIndex = 38,
    /// @IOMMU_FLB_ERR_INVALID_ARGUMENT: A pointer argument is NULL or
    /// misaligned, or a value argument is out of range; @field names the
    /// argument. Returned as -EINVAL.
    IommuFlbErrInvalidArgument = 64,
    /// @IOMMU_FLB_ERR_TOO_LARGE: The scratch the image needs does not fit in
    /// a size_t (only possible on 32-bit machines). Returned as -EOVERFLOW.
    IommuFlbErrTooLarge = 65,
    /// @IOMMU_FLB_ERR_OUT_OF_PAGES: The page allocator returned no page
    /// (alloc_page() returned 0); nothing changed. Returned as -ENOMEM.
    IommuFlbErrOutOfPages = 128,
    /// @IOMMU_FLB_ERR_BAD_PAGE: The page allocator returned a page the
    /// writer will not use (unaligned, already in the image, unmapped, not
    /// zeroed). Returned as -EFAULT.
    IommuFlbErrBadPage = 129,
    /// @IOMMU_FLB_ERR_PAGE_UNAVAILABLE: The page callback refused a page the
    /// writer took earlier. Returned as -EFAULT.
    IommuFlbErrPageUnavailable = 130,
    /// @IOMMU_FLB_ERR_INCONSISTENT: A page of the image was changed behind
    /// the writer's back. Returned as -EUCLEAN.
    IommuFlbErrInconsistent = 131,
    /// @IOMMU_FLB_ERR_FOREIGN_HANDLE: A handle this writer did not hand
    /// out: from another writer or an earlier start of this one, or
    /// changed since (its check value does not match); @page_phys is its
    /// address. Returned as -EINVAL.
    IommuFlbErrForeignHandle = 132,
    /// @IOMMU_FLB_ERR_ATTACH_TO_DELETED: A device was to be attached to an
    /// unpreserved domain or IOMMU. Returned as -ENOENT.
    IommuFlbErrAttachToDeleted = 133,
    /// @IOMMU_FLB_ERR_ALREADY_UNPRESERVED: The object was already
    /// unpreserved. Returned as -ENOENT.
    IommuFlbErrAlreadyUnpreserved = 134,
    /// @IOMMU_FLB_ERR_DEVICE_EXISTS: A live device with this (segment,
    /// devid) is already preserved. Returned as -EEXIST.
    IommuFlbErrDeviceExists = 135,
    /// @IOMMU_FLB_ERR_IOMMU_EXISTS: An IOMMU with this (token, type) is
    /// already preserved. Returned as -EEXIST.
    IommuFlbErrIommuExists = 136,
    /// @IOMMU_FLB_ERR_PAYLOAD_MISMATCH: The device's vendor payload is for
    /// another IOMMU type than its IOMMU's. Returned as -EINVAL.
    IommuFlbErrPayloadMismatch = 137,
    /// @IOMMU_FLB_ERR_INVALID_DOMAIN: A domain the reader would refuse
    /// (top_table_phys zero or unaligned, vasz above 64, sign_extend above
    /// 1); @field names the field. Returned as -EINVAL.
    IommuFlbErrInvalidDomain = 138,
    /// @IOMMU_FLB_ERR_ATTACHMENT_ID_ON_SMMUV3: Retired, never returned: a
    /// device behind an SMMUv3 carries its ASID (stage 1) or VMID (stage 2)
    /// in attachment_id, which the writer once refused. The value stays
    /// reserved.
    IommuFlbErrAttachmentIdOnSmmuv3 = 139,
    /// @IOMMU_FLB_ERR_DOMAIN_IN_USE: The domain still has live devices.
    /// Returned as -EBUSY.
    IommuFlbErrDomainInUse = 140,
    /// @IOMMU_FLB_ERR_IOMMU_IN_USE: The IOMMU still has live devices.
    /// Returned as -EBUSY.
    IommuFlbErrIommuInUse = 141,
    /// @IOMMU_FLB_ERR_REF_COUNT_OVERFLOW: The IOMMU already counts
    /// UINT32_MAX devices. Returned as -EOVERFLOW.
    IommuFlbErrRefCountOverflow = 142,
    /// @IOMMU_FLB_ERR_INDEX_FULL: The device index given to
    /// iommu_flb_writer_start_indexed() is full. Returned as -ENOSPC.
    IommuFlbErrIndexFull = 143,
}

impl IommuFlbErrorKind {
    /// The value stored in `struct iommu_flb_error.kind`.
    pub const fn code(self) -> u32 {
        // A field-less enum's discriminant; all are small and non-negative.
        #[allow(clippy::as_conversions)]
        let c = self as u32;
        c
    }

    /// The kind C sees for a reader error.
    pub fn of_read(kind: &ErrorKind) -> Self {
        use IommuFlbErrorKind as K;
        match kind {
            ErrorKind::RootUnreadable => K::IommuFlbErrRootUnreadable,
            ErrorKind::UnsupportedVersion { .. } => K::IommuFlbErrUnsupportedVersion,
            ErrorKind::NullPointer => K::IommuFlbErrNullPointer,
            ErrorKind::Unaligned { .. } => K::IommuFlbErrUnaligned,
            ErrorKind::Unreadable { .. } => K::IommuFlbErrUnreadable,
            ErrorKind::CountOverCapacity { .. } => K::IommuFlbErrCountOverCapacity,
            ErrorKind::PartialPage { .. } => K::IommuFlbErrPartialPage,
            ErrorKind::Cycle { .. } => K::IommuFlbErrCycle,
            ErrorKind::PageReused { .. } => K::IommuFlbErrPageReused,
            ErrorKind::LimitExceeded { .. } => K::IommuFlbErrLimitExceeded,
            ErrorKind::UnknownFlags { .. } => K::IommuFlbErrUnknownFlags,
            ErrorKind::ZeroRefCount => K::IommuFlbErrZeroRefCount,
            ErrorKind::RefCountNotOne { .. } => K::IommuFlbErrRefCountNotOne,
            ErrorKind::RefCountMismatch { .. } => K::IommuFlbErrRefCountMismatch,
            ErrorKind::UnknownIommuType { .. } => K::IommuFlbErrUnknownIommuType,
            ErrorKind::DuplicateIommu { .. } => K::IommuFlbErrDuplicateIommu,
            ErrorKind::DuplicateDevice { .. } => K::IommuFlbErrDuplicateDevice,
            ErrorKind::BadReference { .. } => K::IommuFlbErrBadReference,
            ErrorKind::VaszTooLarge { .. } => K::IommuFlbErrVaszTooLarge,
            ErrorKind::SignExtendInvalid { .. } => K::IommuFlbErrSignExtendInvalid,
            ErrorKind::NonZeroPadding => K::IommuFlbErrNonZeroPadding,
            ErrorKind::AlreadyRestored => K::IommuFlbErrAlreadyRestored,
            ErrorKind::ScratchTooSmall { .. } => K::IommuFlbErrScratchTooSmall,
            ErrorKind::BadMagic { .. } => K::IommuFlbErrBadMagic,
            ErrorKind::ChecksumMismatch { .. } => K::IommuFlbErrChecksumMismatch,
            ErrorKind::WrongChain { .. } => K::IommuFlbErrWrongChain,
            ErrorKind::WrongIndex { .. } => K::IommuFlbErrWrongIndex,
            ErrorKind::StaleGeneration { .. } => K::IommuFlbErrStaleGeneration,
            ErrorKind::CountMismatch { .. } => K::IommuFlbErrCountMismatch,
            ErrorKind::UnknownFeatures { .. } => K::IommuFlbErrUnknownFeatures,
            ErrorKind::IncompatibleVersion { .. } => K::IommuFlbErrIncompatibleVersion,
            ErrorKind::BadPageSize { .. } => K::IommuFlbErrBadPageSize,
            ErrorKind::BadRootSize { .. } => K::IommuFlbErrBadRootSize,
            ErrorKind::BadStride { .. } => K::IommuFlbErrBadStride,
            ErrorKind::StrideChanged { .. } => K::IommuFlbErrStrideChanged,
            ErrorKind::EmptyPage => K::IommuFlbErrEmptyPage,
            ErrorKind::BadIndex { .. } => K::IommuFlbErrBadIndex,
        }
    }

    /// The kind C sees for a writer error.
    pub fn of_write(e: &WriteError) -> Self {
        use IommuFlbErrorKind as K;
        match e {
            WriteError::OutOfPages { .. } => K::IommuFlbErrOutOfPages,
            WriteError::BadPage { .. } => K::IommuFlbErrBadPage,
            WriteError::PageUnavailable { .. } => K::IommuFlbErrPageUnavailable,
            WriteError::Inconsistent { .. } => K::IommuFlbErrInconsistent,
            WriteError::ForeignHandle { .. } => K::IommuFlbErrForeignHandle,
            WriteError::AttachToDeleted { .. } => K::IommuFlbErrAttachToDeleted,
            WriteError::AlreadyUnpreserved { .. } => K::IommuFlbErrAlreadyUnpreserved,
            WriteError::DuplicateDevice { .. } => K::IommuFlbErrDeviceExists,
            WriteError::DuplicateIommu { .. } => K::IommuFlbErrIommuExists,
            WriteError::PayloadMismatch { .. } => K::IommuFlbErrPayloadMismatch,
            WriteError::InvalidDomain { .. } => K::IommuFlbErrInvalidDomain,
            WriteError::DomainInUse { .. } => K::IommuFlbErrDomainInUse,
            WriteError::IommuInUse { .. } => K::IommuFlbErrIommuInUse,
            WriteError::RefCountOverflow { .. } => K::IommuFlbErrRefCountOverflow,
            WriteError::IndexFull { .. } => K::IommuFlbErrIndexFull,
            // The C API starts version-1 writers only, so never reaches it.
            WriteError::BadConfig { .. } => K::IommuFlbErrInvalidArgument,
        }
    }
}

/// struct iommu_flb_error - Why a call failed, and where.
///
/// Filled by iommu_flb_scratch_size(), iommu_flb_validate() and
/// iommu_flb_writer_last_error(). Every field is written, also on success
/// (@kind IOMMU_FLB_ERR_NONE, @error 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbError {
    /// @error: The negative errno the call returned (0 for none). Not named
    /// `errno`, which userspace <errno.h> defines as a macro.
    pub error: c_int,
    /// @kind: An enum iommu_flb_error_kind value.
    pub kind: u32,
    /// @chain: An enum iommu_flb_chain value: where the error is. For the
    /// writer's errors, the kind of object concerned.
    pub chain: u32,
    /// @page: Index of the page in its chain (0 is the head), or
    /// IOMMU_FLB_NONE for the root and for errors not in a chain page.
    pub page: u64,
    /// @page_phys: Physical address of that page; for the root, the root's
    /// address; for the writer's errors, the object's record or the page
    /// concerned; IOMMU_FLB_NONE if none applies.
    pub page_phys: u64,
    /// @object: Slot of the record in its page (0-based), or IOMMU_FLB_NONE.
    pub object: u64,
    /// @field: The C name of the offending field or argument (a static
    /// string), or NULL.
    pub field: *const c_char,
    /// @message: The whole error as one NUL-terminated line a kernel log can
    /// carry, e.g. "iommu-flb: device chain page 2 (0x7000) object 5
    /// domain_phys: 0x3028 names no live record: the record is deleted".
    pub message: [c_char; IOMMU_FLB_MESSAGE_LEN],
}

impl IommuFlbError {
    /// The record of a successful call.
    pub(super) const fn none() -> Self {
        IommuFlbError {
            error: 0,
            kind: IommuFlbErrorKind::IommuFlbErrNone.code(),
            chain: IommuFlbChain::IommuFlbChainRoot.code(),
            page: IOMMU_FLB_NONE,
            page_phys: IOMMU_FLB_NONE,
            object: IOMMU_FLB_NONE,
            field: core::ptr::null(),
            message: [0; IOMMU_FLB_MESSAGE_LEN],
        }
    }

    /// The record of a failure.
    pub(super) fn of(fail: &Fail) -> Self {
        let mut rec = IommuFlbError::none();
        rec.error = fail.errno();
        match fail {
            Fail::Invalid(arg) => {
                rec.kind = IommuFlbErrorKind::IommuFlbErrInvalidArgument.code();
                rec.field = arg.as_ptr();
                rec.set_message(format_args!(
                    "iommu-flb: invalid argument {}",
                    Lossy(arg.to_bytes())
                ));
            }
            Fail::TooLarge { root } => {
                rec.kind = IommuFlbErrorKind::IommuFlbErrTooLarge.code();
                rec.page_phys = *root;
                rec.set_message(format_args!(
                    "iommu-flb: root at {root:#x}: scratch size does not fit size_t"
                ));
            }
            Fail::Read(e) => {
                rec.kind = IommuFlbErrorKind::of_read(&e.kind()).code();
                rec.set_location(&e.location());
                rec.set_message(format_args!("{e}"));
            }
            Fail::ScratchBytes { root, needed, got } => {
                rec.kind = IommuFlbErrorKind::IommuFlbErrScratchTooSmall.code();
                rec.page_phys = *root;
                rec.set_message(format_args!(
                    "iommu-flb: root at {root:#x}: scratch has {got} bytes, image needs {needed}"
                ));
            }
            Fail::Write(e) => {
                rec.kind = IommuFlbErrorKind::of_write(e).code();
                let (kind, phys, field) = write_location(e);
                if let Some(k) = kind {
                    rec.chain = IommuFlbChain::of(Some(k)).code();
                }
                if let Some(p) = phys {
                    rec.page_phys = p;
                }
                if let Some(f) = field {
                    rec.field = c_field(f);
                }
                rec.set_message(format_args!("iommu-flb: {e}"));
            }
        }
        rec
    }

    fn set_location(&mut self, loc: &Location) {
        self.chain = IommuFlbChain::of(loc.chain).code();
        self.page = loc.page.unwrap_or(IOMMU_FLB_NONE);
        self.page_phys = loc.page_phys.get();
        self.object = loc.object.unwrap_or(IOMMU_FLB_NONE);
        self.field = loc.field.map_or(core::ptr::null(), c_field);
    }

    fn set_message(&mut self, args: fmt::Arguments<'_>) {
        let mut out = MessageBuf {
            buf: &mut self.message,
            len: 0,
        };
        // `MessageBuf` truncates instead of failing, so this cannot fail.
        let _ = out.write_fmt(args);
    }
}

/// Writes a message into a fixed C buffer, truncating, always leaving a
/// terminating NUL.
struct MessageBuf<'a> {
    buf: &'a mut [c_char; IOMMU_FLB_MESSAGE_LEN],
    len: usize,
}

impl fmt::Write for MessageBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // Keep the last byte for the NUL the buffer already holds.
            let Some(next) = self.len.checked_add(1) else {
                break;
            };
            if next >= IOMMU_FLB_MESSAGE_LEN {
                break;
            }
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = c_char::from_ne_bytes([b]);
            }
            self.len = next;
        }
        Ok(())
    }
}

/// Bytes shown as text (argument names are ASCII).
struct Lossy<'a>(&'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|&b| f.write_char(char::from(b)))
    }
}

/// Which object a writer error concerns, the address it names, and the
/// field it blames.
fn write_location(e: &WriteError) -> (Option<ObjectKind>, Option<u64>, Option<&'static str>) {
    use crate::writer::PagePurpose;
    let purpose_kind = |p: &PagePurpose| match p {
        PagePurpose::Root => None,
        PagePurpose::Chain(k) => Some(*k),
    };
    match *e {
        WriteError::OutOfPages { purpose } => (purpose_kind(&purpose), None, None),
        WriteError::BadPage { purpose, phys, .. } => {
            (purpose_kind(&purpose), Some(phys.get()), None)
        }
        WriteError::PageUnavailable { phys } | WriteError::Inconsistent { phys, .. } => {
            (None, Some(phys.get()), None)
        }
        WriteError::ForeignHandle { kind, phys }
        | WriteError::AttachToDeleted { kind, phys }
        | WriteError::AlreadyUnpreserved { kind, phys } => (Some(kind), Some(phys.get()), None),
        WriteError::DuplicateDevice { existing, .. } => (
            Some(ObjectKind::Device),
            Some(existing.get()),
            Some("devid"),
        ),
        WriteError::DuplicateIommu { existing, .. } => {
            (Some(ObjectKind::Iommu), Some(existing.get()), Some("token"))
        }
        WriteError::PayloadMismatch { iommu, .. } => {
            (Some(ObjectKind::Iommu), Some(iommu.get()), Some("type"))
        }
        WriteError::InvalidDomain { field, .. } => {
            (Some(ObjectKind::Domain), None, Some(field.name()))
        }
        WriteError::DomainInUse { domain, .. } => {
            (Some(ObjectKind::Domain), Some(domain.get()), None)
        }
        WriteError::IommuInUse { iommu, .. } | WriteError::RefCountOverflow { iommu } => (
            Some(ObjectKind::Iommu),
            Some(iommu.get()),
            Some("ref_count"),
        ),
        WriteError::IndexFull { .. } => (Some(ObjectKind::Device), None, None),
        WriteError::BadConfig { field } => (None, None, Some(field)),
    }
}

/// A failed call, before it is written out for C.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fail {
    /// A bad argument, by its C name.
    Invalid(&'static CStr),
    /// The scratch size overflows `size_t`.
    TooLarge {
        /// The root's address.
        root: u64,
    },
    /// The reader refused the image.
    Read(Error),
    /// The scratch is too small, in bytes.
    ScratchBytes {
        /// The root's address.
        root: u64,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The writer refused an operation.
    Write(WriteError),
}

impl Fail {
    /// The negative errno returned for it.
    pub(super) fn errno(&self) -> c_int {
        match self {
            Fail::Invalid(_) => errno::EINVAL,
            Fail::TooLarge { .. } => errno::EOVERFLOW,
            Fail::Read(e) => e.errno(),
            Fail::ScratchBytes { .. } => errno::ENOSPC,
            Fail::Write(e) => e.errno(),
        }
    }
}

/// Every field name of the wire structs, as static C strings: the names
/// `Location::field` and the writer's errors can carry. A test checks the
/// list covers every field of every `abi` layout.
const FIELDS: &[&CStr] = &[
    c"version",
    c"iommu_array_phys",
    c"iommu_domain_array_phys",
    c"device_array_phys",
    c"next_array_phys",
    c"nr_objects",
    c"ref_count",
    c"flags",
    c"hdr",
    c"top_table_phys",
    c"top_level",
    c"vasz",
    c"sign_extend",
    c"padding",
    c"restored_domain",
    c"attachment_id",
    c"domain_phys",
    c"iommu_phys",
    c"restored",
    c"pasid_table",
    c"max_pasid",
    c"l1_cdtab_lu_state",
    c"num_l2_cdtables",
    c"l2_cdtab_lu_states_phys",
    c"devid",
    c"pci_domain_nr",
    c"dma_owner_token",
    c"domain_iommu_ser",
    c"vendor",
    c"intel",
    c"smmuv3",
    c"token",
    c"type",
    c"phys_addr",
    c"root_table",
    c"context_tables_bitmap",
    c"strtab_base_cfg",
    c"l1_strtab_lu_state",
    c"l2_strtab_lu_states_phys",
    c"head_phys",
    c"nr_pages",
    c"nr_records",
    c"magic",
    c"root_size",
    c"last_compatible_version",
    c"page_size",
    c"generation",
    c"compat_features",
    c"incompat_features",
    c"crc",
    c"reserved",
    c"iommus",
    c"domains",
    c"devices",
    c"blk",
    c"chain",
    c"stride",
    c"index",
    c"domain_index",
    c"iommu_index",
    c"iommus.head_phys",
    c"iommus.nr_pages",
    c"iommus.nr_records",
    c"domains.head_phys",
    c"domains.nr_pages",
    c"domains.nr_records",
    c"devices.head_phys",
    c"devices.nr_pages",
    c"devices.nr_records",
];

/// The static C string for a field name; NULL for a name not in [`FIELDS`]
/// (the message still names it).
pub(super) fn c_field(name: &str) -> *const c_char {
    FIELDS
        .iter()
        .find(|c| c.to_bytes() == name.as_bytes())
        .map_or(core::ptr::null(), |c| c.as_ptr())
}

/// Writes the record for `result` through `err` (which the caller checked)
/// and returns the errno.
///
/// # Safety
///
/// `err` must be valid for writing one `IommuFlbError`.
pub(super) unsafe fn report(err: *mut IommuFlbError, result: Result<(), Fail>) -> c_int {
    let (rec, code) = match result {
        Ok(()) => (IommuFlbError::none(), 0),
        Err(f) => (IommuFlbError::of(&f), f.errno()),
    };
    // SAFETY: the caller guarantees `err` is valid for a write of one
    // `IommuFlbError` (non-NULL, aligned, writable); `write` does not read
    // or drop the old contents, which may be uninitialized.
    unsafe { err.write(rec) };
    code
}

#[cfg(test)]
pub(super) fn field_names() -> impl Iterator<Item = &'static CStr> {
    FIELDS.iter().copied()
}
