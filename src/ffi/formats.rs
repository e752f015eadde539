//! Upgrade and rollback from C: the library's formats descriptor, the
//! negotiation with the next kernel's, and the writer configuration that
//! follows from it.

use core::ffi::c_int;

use super::error::errno;
use super::reader::read_arg;
use super::usable;
use super::writer::IommuFlbWriterConfig;
use crate::abi::formats::IommuFlbFormats;
use crate::formats::{FORMATS, Formats, Negotiated, negotiate};

/// struct iommu_flb_negotiated - What iommu_flb_negotiate() agreed: the
/// image the outgoing kernel writes for the next one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IommuFlbNegotiated {
    /// @version: The format version to write: the newest one the outgoing
    /// kernel writes and the next one reads; 0 after a failed negotiation.
    pub version: u32,
    /// @reserved: Zero.
    pub reserved: u32,
    /// @compat: The version's compatible feature bits both kernels know
    /// (those the next kernel acts on).
    pub compat: u64,
    /// @incompat: The version's incompatible feature bits both kernels know:
    /// the only ones the writer may set. The library's writer sets none
    /// (versions 1 and 2 define none).
    pub incompat: u64,
}

impl From<Negotiated> for IommuFlbNegotiated {
    fn from(n: Negotiated) -> Self {
        IommuFlbNegotiated {
            version: n.version,
            reserved: 0,
            compat: n.compat,
            incompat: n.incompat,
        }
    }
}

/// The library's descriptor as stored, for iommu_flb_library_formats().
static LIBRARY_FORMATS: IommuFlbFormats = FORMATS.to_ser();

/// iommu_flb_library_formats() - The formats descriptor of this library.
///
/// The image format versions it reads and writes (1 and 2) and the feature
/// bits it knows of each: the descriptor IOMMU_FLB_DECLARE_FORMATS() puts in
/// the section IOMMU_FLB_FORMATS_SECTION, byte for byte. The outgoing
/// kernel passes it as @ours to iommu_flb_negotiate().
///
/// Context: Any context.
///
/// Return: A pointer to the library's static, read-only descriptor; never
/// NULL.
#[unsafe(no_mangle)]
pub extern "C" fn iommu_flb_library_formats() -> *const IommuFlbFormats {
    &LIBRARY_FORMATS
}

/// The checked descriptor at `p`, or the negative errno of its refusal.
///
/// # Safety
///
/// `p` must be NULL or point to `sizeof(struct iommu_flb_formats)` readable
/// bytes.
unsafe fn formats_arg(p: *const IommuFlbFormats) -> Result<Formats, c_int> {
    // SAFETY: forwarded from this function's contract.
    let ser = unsafe { read_arg(p, c"formats") }.map_err(|f| f.errno())?;
    Formats::from_ser(&ser).map_err(|e| e.errno())
}

/// iommu_flb_negotiate() - Agree on the image format to write for the next
/// kernel.
/// @ours: The outgoing kernel's descriptor: iommu_flb_library_formats().
/// @theirs: The next kernel's descriptor, as read from the section
///          IOMMU_FLB_FORMATS_SECTION of its ELF file (vmlinux or module).
///          Untrusted: every field is checked. A later descriptor may be
///          longer (its size says so); only the fields of struct
///          iommu_flb_formats are read.
/// @out: Where to store the result.
///
/// Picks the newest format version @ours writes and @theirs reads, and the
/// feature bits of that version both know. Before kexec, an upgrade to a
/// kernel that reads version 2 gets version 2, a rollback to one that reads
/// only version 1 gets version 1; fill the writer's configuration from
/// @out with iommu_flb_writer_config_negotiated(). Both descriptors are
/// read whole before @out is written.
///
/// Context: Any context; reads only its arguments.
///
/// Return: 0 with @out filled; on failure @out (if usable) is zeroed, which
/// iommu_flb_writer_config_negotiated() refuses, and the return is
/// -EINVAL for a NULL @ours, @theirs or @out (or a misaligned @out);
/// -EPROTO for a descriptor whose magic is wrong; -EOPNOTSUPP for one of a
/// descriptor version this library does not know or with unknown entry
/// flags; -EBADMSG for one that is otherwise malformed (size below
/// IOMMU_FLB_FORMATS_SIZE, count above IOMMU_FLB_FORMATS_MAX_ENTRIES, a
/// version 0 or twice, an unused entry not zero); -EPROTONOSUPPORT when no
/// version is written by @ours and read by @theirs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_negotiate(
    ours: *const IommuFlbFormats,
    theirs: *const IommuFlbFormats,
    out: *mut IommuFlbNegotiated,
) -> c_int {
    if !usable(out.cast_const()) {
        return errno::EINVAL;
    }
    let run = || -> Result<IommuFlbNegotiated, c_int> {
        // SAFETY: `ours` and `theirs` are NULL or readable descriptors
        // (this function's contract).
        let (ours, theirs) = unsafe { (formats_arg(ours)?, formats_arg(theirs)?) };
        negotiate(&ours, &theirs)
            .map(IommuFlbNegotiated::from)
            .map_err(|e| e.errno())
    };
    let (result, ret) = match run() {
        Ok(n) => (n, 0),
        Err(e) => (IommuFlbNegotiated::default(), e),
    };
    // SAFETY: `out` is non-NULL and aligned (checked above) and writable
    // (this function's contract); nothing borrows the descriptors any more.
    unsafe { out.write(result) };
    ret
}

/// iommu_flb_writer_config_negotiated() - Fill a writer configuration from
/// a negotiation.
/// @agreed: What iommu_flb_negotiate() stored, with @ours the library's
///          descriptor.
/// @generation: This handover's generation, for version 2 (see
///              &struct iommu_flb_writer_config.generation); dropped for
///              version 1, which has none, so the caller need not know in
///              advance which version is agreed.
/// @cfg: The configuration to fill, for iommu_flb_writer_start_config().
///
/// Context: Any context; reads and writes only its arguments.
///
/// Return: 0 with @cfg filled; -EINVAL for a NULL or misaligned @agreed or
/// @cfg, a non-zero @agreed->reserved, or feature bits the library does not
/// know for the version; -EPROTONOSUPPORT for a version this library does
/// not write (0 after a failed negotiation included). @cfg is written only
/// on success.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_config_negotiated(
    agreed: *const IommuFlbNegotiated,
    generation: u64,
    cfg: *mut IommuFlbWriterConfig,
) -> c_int {
    if !usable(cfg.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: `agreed` is NULL or a readable `struct iommu_flb_negotiated`
    // (this function's contract).
    let agreed = match unsafe { read_arg(agreed, c"agreed") } {
        Ok(a) => a,
        Err(f) => return f.errno(),
    };
    if agreed.reserved != 0 {
        return errno::EINVAL;
    }
    let Some(entry) = FORMATS.get(agreed.version).filter(|e| e.write) else {
        return errno::EPROTONOSUPPORT;
    };
    if agreed.compat & !entry.compat != 0 || agreed.incompat & !entry.incompat != 0 {
        return errno::EINVAL;
    }
    let config = crate::writer::Config::negotiated(
        &Negotiated {
            version: agreed.version,
            compat: agreed.compat,
            incompat: agreed.incompat,
        },
        generation,
    );
    let filled = IommuFlbWriterConfig {
        version: agreed.version,
        reserved: 0,
        generation: config.generation,
    };
    // SAFETY: `cfg` is non-NULL and aligned (checked above) and writable
    // (this function's contract).
    unsafe { cfg.write(filled) };
    0
}
