//! The validating reader.
//!
//! Reading is two phases. [`validate`] walks the root and the three chains
//! with no side effect and returns either a validated [`Image`] or an
//! [`Error`] saying what is wrong and where. Only an `Image` gives access to
//! records, and only it can [`restore`](Image::restore) pages: every page of
//! the image, root first, exactly once. [`validate_visiting`] is
//! `validate` handing each live device record to a closure as the device
//! pass accepts it, for a caller that reads every device anyway: one pass
//! over the device records instead of two; [`validate_with`] hands every
//! live record, IOMMUs and domains too, to a [`Visitor`].
//!
//! `validate` allocates nothing. It sorts its indexes in a scratch slice the
//! caller supplies; [`scratch_len`] says how long it must be (it walks the
//! chains, reading one page per chain page, and nothing else). With the
//! `alloc` feature, [`validate_alloc`] allocates the scratch itself.
//!
//! Cost: each chain page is read a constant number of times, each record a
//! constant number of times, and each reference is one lookup: `O(1)` while
//! it lands in the page the one before it did, a binary search over the
//! pages otherwise. The sorts make the whole `O(n log n)` in the number of
//! pages and records at worst; devices preserved in key order skip theirs.

mod index;
mod validate;
mod view;
mod visit;

pub use index::ScratchElem;
pub use view::{
    AnyDevice, AnyIommu, Device, DevicePayload, DeviceRecord, Domain, Features, Image, Iommu,
    IommuPayload, RestoreError,
};
pub use visit::Visitor;

#[cfg(feature = "ffi")]
pub(crate) use validate::{PutShape, validate_into};
#[cfg(feature = "ffi")]
pub(crate) use view::Frozen;
#[cfg(feature = "alloc")]
pub use view::OwnedImage;

use crate::abi::PageSize;
use crate::crc::Crc32;
use crate::error::Error;
use crate::{Memory, PhysAddr};

/// Which state of the image `validate` expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Memory just handed over: the fields the next kernel writes only after
    /// restore (`IOMMU_SER_FLAG_INCOMING`, `restored`, `restored_domain`)
    /// must be zero.
    #[default]
    Handover,
    /// A dump taken after restore: those fields may be set.
    Restored,
}

/// Bounds on the work `validate` does. Exceeding one is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Pages in any one chain (the hop limit). Clamped to 2^40.
    pub max_pages_per_chain: u64,
    /// Records in all three chains together, deleted ones included. Clamped
    /// to 2^48.
    pub max_objects: u64,
}

impl Default for Limits {
    /// 2^20 pages per chain (4 GiB of array pages), 2^25 + 2^16 records.
    ///
    /// The largest image a real host produces: 65,536 devices on each of up
    /// to 256 PCI segments is 2^24 devices, which fill 299,594 device pages;
    /// with a domain per device (164,483 pages) and an IOMMU per segment
    /// that is 2^25 + 256 records. A host that detaches and reattaches many
    /// devices leaves deleted slots, for which the rest of the 2^20 pages
    /// leave room.
    fn default() -> Self {
        Limits {
            max_pages_per_chain: 1 << 20,
            max_objects: (1 << 25) + (1 << 16),
        }
    }
}

/// How to validate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Which state the image must be in.
    pub mode: Mode,
    /// Work bounds.
    pub limits: Limits,
    /// The page size of the kernel that wrote the image (default 4 KiB):
    /// the size of the root's page and of every array page, and so each
    /// page's capacity. Every page is read from the [`Memory`] at this size.
    /// Version 1 only: a version-2 image states its page size in its root.
    pub page_size: PageSize,
    /// The CRC-32 function version 2's checksums are computed with
    /// (`crc32fast` by default; the kernel passes its own).
    pub crc: Crc32,
}

/// How many [`ScratchElem`]s [`validate`] needs for the image at `root`:
/// exactly `2 × P + 1 + I + D` for `P` chain pages, `I` IOMMU slots and `D`
/// device slots (deleted records included; domains need none). An element
/// is 16 bytes, so that is 32 bytes per chain page, 16 per IOMMU or device
/// slot and 16 more (the root's page in the page table). Per record
/// it is not bounded by 16 bytes: 1 IOMMU, 1 domain and 56 devices fill 3
/// pages and need 64 elements, 1024 bytes for 58 records.
///
/// It checks the root and walks the three chains (reading each chain page
/// once, no record), so it fails with the same root and chain errors
/// `validate` would.
pub fn scratch_len<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    opts: &Options,
) -> Result<usize, Error> {
    validate::survey(mem, root, opts).map(|s| s.needed)
}

/// Validates the image whose root is at `root` and returns the view on it.
///
/// `scratch` must hold at least [`scratch_len`] elements (their contents do
/// not matter); the returned [`Image`] borrows it for its indexes. Nothing is
/// allocated and nothing in `mem` is written.
///
/// # Errors
///
/// The first rule the image breaks, in a fixed order: the root (starting
/// its page, readable, version, heads), each chain's pages (pointers, the
/// root's page, counts, cycles, limits), pages used twice, then the IOMMU,
/// domain and device records (flags, reference counts: 1 for a live domain
/// or device, types, references, padding, fields the next kernel writes),
/// IOMMU reference counts, and duplicate IOMMUs and devices. Deleted
/// records are skipped, except for their `flags` (the word that marks them
/// deleted): only known bits, and no `INCOMING` in handover mode. Padding
/// is every byte of a live record no version-1 field gives a meaning: the
/// `padding` members, and the vendor-union bytes past an SMMUv3 IOMMU's
/// 32-byte member. A short `scratch` is
/// [`ErrorKind::ScratchTooSmall`](crate::error::ErrorKind::ScratchTooSmall).
///
/// # Example
///
/// ```
/// use iommu_flb_abi::{FlatMemory, PhysAddr};
/// use iommu_flb_abi::reader::{self, Options, ScratchElem};
///
/// // An empty handover: a dump of physical 0x1000..0x5000 with the root
/// // at 0x1000 and three empty chain pages after it.
/// let mut dump = vec![0u8; 4 * 4096];
/// dump[0..8].copy_from_slice(&1u64.to_le_bytes()); // version
/// for (i, head) in [0x2000u64, 0x3000, 0x4000].iter().enumerate() {
///     let at = 8 + 8 * i;
///     dump[at..at + 8].copy_from_slice(&head.to_le_bytes());
/// }
/// let mem = FlatMemory::new(PhysAddr::new(0x1000), &dump);
/// let root = PhysAddr::new(0x1000);
/// let opts = Options::default();
///
/// let mut scratch = [ScratchElem::default(); 16];
/// let n = reader::scratch_len(&mem, root, &opts)?;
/// let image = reader::validate(&mem, root, &opts, &mut scratch[..n])?;
/// assert_eq!(image.devices().count(), 0);
/// let mut restored = Vec::new();
/// image.restore(|page| { restored.push(page.get()); Ok::<(), ()>(()) }).unwrap();
/// assert_eq!(restored, [0x1000, 0x2000, 0x3000, 0x4000]);
///
/// // A corrupt version is refused with a typed error.
/// dump[0] = 9;
/// let mem = FlatMemory::new(PhysAddr::new(0x1000), &dump);
/// let err = reader::validate(&mem, root, &opts, &mut scratch).unwrap_err();
/// assert_eq!(err.to_string(), "iommu-flb: root at 0x1000 version: unsupported version 9");
/// assert_eq!(err.errno(), -93); // -EPROTONOSUPPORT
/// # Ok::<(), iommu_flb_abi::Error>(())
/// ```
pub fn validate<'m, 's, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &'s mut [ScratchElem],
) -> Result<Image<'m, 's, M>, Error> {
    validate::validate(mem, root, opts, scratch, ())
}

/// [`validate`], handing each live device record to `visit` as validation
/// accepts it: one pass over the device records where `validate` and then
/// [`Image::device_records`] make two.
///
/// When it returns `Ok`, `visit` has seen exactly the records
/// `device_records` yields, in the same order (chain order), each once.
/// Each record it sees has passed every check of its own (flags,
/// `ref_count`, its domain and IOMMU references, its vendor fields), but a
/// later device may fail its own; the device chain is walked as its
/// records are checked, so a device page further on may be refused, as
/// may the scratch's length or a page used twice once the walk ends; and
/// the checks across records come after the device pass: IOMMU reference
/// counts and duplicate IOMMUs and devices. So `visit` may have seen
/// records of an image that is then refused; use it for work whose result
/// is dropped with the error (a fold, filling a table of your own), never to
/// act on a device.
///
/// On a large image this is what makes the visit cheap: the second pass
/// over the device records reads them from memory again (benchmark (3c) in
/// `BENCHMARKS.md`).
///
/// # Errors
///
/// As [`validate`], the same error for the same image.
///
/// # Example
///
/// ```
/// # use iommu_flb_abi::{FlatMemory, PhysAddr};
/// # use iommu_flb_abi::reader::{self, Options, ScratchElem};
/// # let mut dump = vec![0u8; 4 * 4096];
/// # dump[0..8].copy_from_slice(&1u64.to_le_bytes());
/// # for (i, head) in [0x2000u64, 0x3000, 0x4000].iter().enumerate() {
/// #     dump[8 + 8 * i..16 + 8 * i].copy_from_slice(&head.to_le_bytes());
/// # }
/// # let mem = FlatMemory::new(PhysAddr::new(0x1000), &dump);
/// # let root = PhysAddr::new(0x1000);
/// # let opts = Options::default();
/// let mut scratch = vec![ScratchElem::default(); reader::scratch_len(&mem, root, &opts)?];
/// let mut seen = 0u64;
/// let image = reader::validate_visiting(&mem, root, &opts, &mut scratch, |d| {
///     seen = seen.wrapping_add(u64::from(d.devid()));
/// })?;
/// // Only now is `seen` the sum of a valid image's device IDs.
/// assert_eq!(image.device_records().map(|d| u64::from(d.devid())).sum::<u64>(), seen);
/// # Ok::<(), iommu_flb_abi::Error>(())
/// ```
pub fn validate_visiting<'m, 's, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &'s mut [ScratchElem],
    visit: impl FnMut(DeviceRecord<'m>),
) -> Result<Image<'m, 's, M>, Error> {
    validate::validate(mem, root, opts, scratch, visit::Devices(visit))
}

/// [`validate`], handing every live record to `visitor` as validation
/// accepts it: each IOMMU, then each domain, then each device (see
/// [`Visitor`]). One pass over the records where `validate` and then
/// [`Image::iommus`], [`Image::domains`] and [`Image::device_records`]
/// make two.
///
/// When it returns `Ok`, `visitor` has seen exactly what those three
/// yield, in the same order, each record once. On `Err` it may have seen
/// records of the refused image: those before the record refused, those
/// before the pass stopped when the device chain, the scratch's length or a
/// page used twice refuses it (the device chain is walked as its records
/// are checked), or all of them when a check across records (reference
/// counts, duplicates, after the last device) refuses it.
///
/// # Errors
///
/// As [`validate`], the same error for the same image.
///
/// # Example
///
/// ```
/// # use iommu_flb_abi::{FlatMemory, PhysAddr};
/// # use iommu_flb_abi::reader::{self, DeviceRecord, Domain, Options, ScratchElem, Visitor};
/// # let mut dump = vec![0u8; 4 * 4096];
/// # dump[0..8].copy_from_slice(&1u64.to_le_bytes());
/// # for (i, head) in [0x2000u64, 0x3000, 0x4000].iter().enumerate() {
/// #     dump[8 + 8 * i..16 + 8 * i].copy_from_slice(&head.to_le_bytes());
/// # }
/// # let mem = FlatMemory::new(PhysAddr::new(0x1000), &dump);
/// # let root = PhysAddr::new(0x1000);
/// # let opts = Options::default();
/// /// Counts domains and devices.
/// #[derive(Default)]
/// struct Count {
///     domains: usize,
///     devices: usize,
/// }
///
/// impl<'m> Visitor<'m> for Count {
///     fn domain(&mut self, _: Domain<'m>) {
///         self.domains += 1;
///     }
///     fn device(&mut self, _: DeviceRecord<'m>) {
///         self.devices += 1;
///     }
/// }
///
/// let mut scratch = vec![ScratchElem::default(); reader::scratch_len(&mem, root, &opts)?];
/// let mut count = Count::default();
/// let image = reader::validate_with(&mem, root, &opts, &mut scratch, &mut count)?;
/// // Only now are the counts those of a valid image.
/// assert_eq!((count.domains, count.devices), (image.domains().count(), image.live_devices()));
/// # Ok::<(), iommu_flb_abi::Error>(())
/// ```
pub fn validate_with<'m, 's, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &'s mut [ScratchElem],
    visitor: &mut (impl Visitor<'m> + ?Sized),
) -> Result<Image<'m, 's, M>, Error> {
    validate::validate(mem, root, opts, scratch, visitor)
}

/// [`validate`] with scratch it allocates itself.
///
/// # Errors
///
/// As [`validate`].
#[cfg(feature = "alloc")]
pub fn validate_alloc<'m, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
) -> Result<OwnedImage<'m, M>, Error> {
    let n = scratch_len(mem, root, opts)?;
    let mut scratch = alloc::vec![ScratchElem::default(); n];
    let shape = validate::validate_shape(mem, root, opts, &mut scratch, ())?;
    Ok(OwnedImage::new(mem, shape, scratch))
}
