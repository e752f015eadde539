//! Walking and looking up the records of a validated image, and the
//! page-restore walk of the reader's second phase.

use core::ffi::{c_int, c_void};
use core::ptr;

use super::error::{IOMMU_FLB_NONE, errno};
use super::reader::{CMem, IommuFlbImage, View, answer, read_arg};
use super::usable;
use crate::PhysAddr;
use crate::abi::v1::{IommuDeviceSer, IommuDomainSer, IommuHwSer, IommuTypeSer};
use crate::abi::v2::{IommuDeviceV2Ser, IommuDomainV2Ser, IommuHwV2Ser};
use crate::error::Chain;
use crate::reader::{self, Image};

/// struct iommu_flb_cursor - Position of a walk.
///
/// Initialize with IOMMU_FLB_CURSOR_INIT (all zero) to start at the first
/// record; each iommu_flb_next_*() call advances it. One cursor per walk:
/// its first use ties it to the image and to the kind of walk, and it is
/// refused for any other (-ESTALE for an image validated later into the
/// same scratch, -EINVAL for another kind of walk). Start a new walk with a
/// new IOMMU_FLB_CURSOR_INIT; the iommu_flb_for_each_*() macros do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbCursor {
    /// @pos: Private: the index of the next record slot (or page) to look
    /// at.
    pub pos: u64,
    /// @owner: Private: the image and walk the cursor belongs to; 0 until
    /// its first use.
    pub owner: u64,
}

/// Which walk a cursor is for (the low bits of its `owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    Iommu = 0,
    Domain = 1,
    Device = 2,
    Page = 3,
}

/// Walks per image: `owner` is `generation * WALKS + walk`.
const WALKS: u64 = 4;

impl Walk {
    const fn code(self) -> u64 {
        // A field-less enum's discriminant, small and non-negative.
        #[allow(clippy::as_conversions)]
        let c = self as u64;
        c
    }
}

/// struct iommu_flb_iommu_ref - A live IOMMU record in the image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbIommuRef {
    /// @ser: The version-1 record, inside an image page (read-only); NULL
    /// in a version-2 image.
    pub ser: *const IommuHwSer,
    /// @ser_v2: The version-2 record, inside an image page (read-only);
    /// NULL in a version-1 image.
    pub ser_v2: *const IommuHwV2Ser,
    /// @phys: Its physical address (what devices' iommu_phys holds).
    pub phys: u64,
}

/// struct iommu_flb_domain_ref - A live domain record in the image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbDomainRef {
    /// @ser: The version-1 record, inside an image page (read-only); NULL
    /// in a version-2 image.
    pub ser: *const IommuDomainSer,
    /// @ser_v2: The version-2 record, inside an image page (read-only);
    /// NULL in a version-1 image.
    pub ser_v2: *const IommuDomainV2Ser,
    /// @phys: Its physical address (what devices' domain_phys holds).
    pub phys: u64,
}

/// struct iommu_flb_device_ref - A live device record in the image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbDeviceRef {
    /// @ser: The version-1 record, inside an image page (read-only); NULL
    /// in a version-2 image.
    pub ser: *const IommuDeviceSer,
    /// @ser_v2: The version-2 record, inside an image page (read-only);
    /// NULL in a version-1 image.
    pub ser_v2: *const IommuDeviceV2Ser,
    /// @phys: Its physical address; iommu_flb_device_domain() and
    /// iommu_flb_device_iommu() find the device by it.
    pub phys: u64,
}

const NULL_IOMMU: IommuFlbIommuRef = IommuFlbIommuRef {
    ser: ptr::null(),
    ser_v2: ptr::null(),
    phys: 0,
};
const NULL_DOMAIN: IommuFlbDomainRef = IommuFlbDomainRef {
    ser: ptr::null(),
    ser_v2: ptr::null(),
    phys: 0,
};
const NULL_DEVICE: IommuFlbDeviceRef = IommuFlbDeviceRef {
    ser: ptr::null(),
    ser_v2: ptr::null(),
    phys: 0,
};

/// The next live record at or after `cursor`, found with `at` (record by
/// index, `None` past the end; `Some(None)` for a deleted slot). Returns
/// `(found, 1)` and advances the cursor past it, or `(empty, 0)` at the
/// end, leaving the cursor at the end. A fresh cursor is tied to `view`'s
/// image and to `walk`; a cursor tied to another is refused.
///
/// # Safety
///
/// `cursor` must be NULL, misaligned, or valid for reading and writing one
/// cursor.
unsafe fn step<T: Copy>(
    view: &View<'_, '_>,
    walk: Walk,
    cursor: *mut IommuFlbCursor,
    empty: T,
    mut at: impl FnMut(u64) -> Option<Option<T>>,
) -> Result<(T, c_int), c_int> {
    if !usable(cursor.cast_const()) {
        return Err(errno::EINVAL);
    }
    let owner = view
        .generation
        .checked_mul(WALKS)
        .and_then(|g| g.checked_add(walk.code()))
        .ok_or(errno::EOVERFLOW)?;
    // SAFETY: `cursor` is non-NULL and aligned (checked above) and, by the
    // contract, a readable and writable `struct iommu_flb_cursor`, two
    // `u64`s: every bit pattern is valid. The borrow is a local of this
    // call.
    let cur = unsafe { &mut *cursor };
    if cur.owner == 0 {
        if cur.pos != 0 {
            // Not from IOMMU_FLB_CURSOR_INIT.
            return Err(errno::EINVAL);
        }
        cur.owner = owner;
    } else if cur.owner != owner {
        return Err(if cur.owner.checked_div(WALKS) == Some(view.generation) {
            errno::EINVAL
        } else {
            errno::ESTALE
        });
    }
    loop {
        let Some(slot) = at(cur.pos) else {
            return Ok((empty, 0));
        };
        cur.pos = cur.pos.checked_add(1).ok_or(errno::EINVAL)?;
        if let Some(found) = slot {
            return Ok((found, 1));
        }
    }
}

/// iommu_flb_next_iommu() - Walk the live IOMMUs, in chain order.
/// @img: A validated image.
/// @cursor: The walk's position (start with IOMMU_FLB_CURSOR_INIT).
/// @out: Where to store the next live IOMMU.
///
/// Deleted slots are skipped. The records are those validation saw; the
/// fields the next kernel sets may be written between calls ("Concurrency
/// and writes" at the top of the header).
///
/// Context: Any context the image's page callback allows.
///
/// Return: 1 with *@out set, 0 at the end (*@out zeroed), or a negative
/// errno: -EINVAL for a NULL or misaligned pointer, a pointer that is not
/// an image (or is a copy of one), or a cursor of another kind of walk or
/// not from IOMMU_FLB_CURSOR_INIT; -ESTALE if the last
/// iommu_flb_validate() into @img's scratch failed, or @cursor walked an
/// earlier image in it; -EFAULT if the root page can no longer be read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_next_iommu(
    img: *const IommuFlbImage,
    cursor: *mut IommuFlbCursor,
    out: *mut IommuFlbIommuRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            step(view, Walk::Iommu, cursor, NULL_IOMMU, |i| {
                let r = view.image.iommu_by_index(i)?;
                Some(r.iommu().filter(|_| !r.is_deleted()).map(iommu_ref))
            })
        })
    }
}

/// iommu_flb_next_domain() - Walk the live domains, in chain order.
/// @img: A validated image.
/// @cursor: The walk's position (start with IOMMU_FLB_CURSOR_INIT).
/// @out: Where to store the next live domain.
///
/// Context: Any context the image's page callback allows.
///
/// Return: As iommu_flb_next_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_next_domain(
    img: *const IommuFlbImage,
    cursor: *mut IommuFlbCursor,
    out: *mut IommuFlbDomainRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            step(view, Walk::Domain, cursor, NULL_DOMAIN, |i| {
                let d = view.image.domain_by_index(i)?;
                Some((!d.is_deleted()).then(|| domain_ref(d)))
            })
        })
    }
}

/// The record as a C pointer, NULL for `None`.
fn opt_ptr<T>(r: Option<&T>) -> *const T {
    r.map_or(ptr::null(), ptr::from_ref)
}

fn domain_ref(d: reader::Domain<'_>) -> IommuFlbDomainRef {
    IommuFlbDomainRef {
        ser: opt_ptr(d.v1()),
        ser_v2: opt_ptr(d.v2()),
        phys: d.phys().get(),
    }
}

fn iommu_ref(m: reader::Iommu<'_>) -> IommuFlbIommuRef {
    IommuFlbIommuRef {
        ser: opt_ptr(m.v1()),
        ser_v2: opt_ptr(m.v2()),
        phys: m.phys().get(),
    }
}

fn device_ref(d: reader::Device<'_>) -> IommuFlbDeviceRef {
    device_ser_ref(d.v1(), d.v2(), d.phys())
}

fn record_ref(d: reader::DeviceRecord<'_>) -> IommuFlbDeviceRef {
    device_ser_ref(d.v1(), d.v2(), d.phys())
}

fn device_ser_ref(
    v1: Option<&IommuDeviceSer>,
    v2: Option<&IommuDeviceV2Ser>,
    phys: PhysAddr,
) -> IommuFlbDeviceRef {
    IommuFlbDeviceRef {
        ser: opt_ptr(v1),
        ser_v2: opt_ptr(v2),
        phys: phys.get(),
    }
}

/// iommu_flb_next_device() - Walk the live devices, in chain order.
/// @img: A validated image.
/// @cursor: The walk's position (start with IOMMU_FLB_CURSOR_INIT).
/// @out: Where to store the next live device.
///
/// The records as stored: the walk does not look up each device's domain
/// and IOMMU (validation proved them); iommu_flb_device_domain() and
/// iommu_flb_device_iommu() do, for the devices the caller asks about.
///
/// Context: Any context the image's page callback allows.
///
/// Return: As iommu_flb_next_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_next_device(
    img: *const IommuFlbImage,
    cursor: *mut IommuFlbCursor,
    out: *mut IommuFlbDeviceRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            step(view, Walk::Device, cursor, NULL_DEVICE, |i| {
                let r = view.image.device_record_by_index(i)?;
                Some((!r.is_deleted()).then(|| record_ref(r)))
            })
        })
    }
}

/// iommu_flb_find_iommu() - Look up a live IOMMU by (token, type).
/// @img: A validated image.
/// @token: The IOMMU's token (its MMIO base).
/// @iommu_type: IOMMU_INTEL or IOMMU_ARM_SMMUV3.
/// @out: Where to store the IOMMU.
///
/// Cost O(log n).
///
/// Context: Any context the image's page callback allows.
///
/// Return: 0 with *@out set; -ENOENT if there is no such live IOMMU (*@out
/// zeroed); -EINVAL for a bad pointer (as for iommu_flb_next_iommu()) or
/// an @iommu_type other than IOMMU_INTEL and IOMMU_ARM_SMMUV3; -ESTALE if
/// the last iommu_flb_validate() into @img's scratch failed; -EFAULT if the
/// root page can no longer be read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_find_iommu(
    img: *const IommuFlbImage,
    token: u64,
    iommu_type: u64,
    out: *mut IommuFlbIommuRef,
) -> c_int {
    let ty = match IommuTypeSer::from_wire(iommu_type) {
        Some(t @ (IommuTypeSer::IommuIntel | IommuTypeSer::IommuArmSmmuv3)) => t,
        _ => return errno::EINVAL,
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            Ok(view
                .image
                .find_iommu(token, ty)
                .map_or((NULL_IOMMU, errno::ENOENT), |m| (iommu_ref(m), 0)))
        })
    }
}

/// iommu_flb_find_device() - Look up a live device by PCI segment and devid.
/// @img: A validated image.
/// @segment: The PCI segment (pci_domain_nr).
/// @devid: The PCI requester ID, bus << 8 | devfn.
/// @out: Where to store the device.
///
/// Cost O(log n).
///
/// Context: Any context the image's page callback allows.
///
/// Return: 0 with *@out set; -ENOENT if there is no such live device (*@out
/// zeroed); -EINVAL for a bad pointer; -ESTALE if the last
/// iommu_flb_validate() into @img's scratch failed; -EFAULT if the root
/// page can no longer be read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_find_device(
    img: *const IommuFlbImage,
    segment: u32,
    devid: u32,
    out: *mut IommuFlbDeviceRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            Ok(view
                .image
                .find_device(segment, devid)
                .map_or((NULL_DEVICE, errno::ENOENT), |d| (device_ref(d), 0)))
        })
    }
}

/// The live device `dev` names (by its `phys`).
///
/// # Safety
///
/// `dev` must be NULL or point to a readable `struct iommu_flb_device_ref`.
unsafe fn device_of<'m>(
    image: &Image<'m, '_, CMem>,
    dev: *const IommuFlbDeviceRef,
) -> Result<reader::Device<'m>, c_int> {
    // SAFETY: forwarded from this function's contract.
    let dev = unsafe { read_arg(dev, c"dev") }.map_err(|_| errno::EINVAL)?;
    image
        .device_at(PhysAddr::new(dev.phys))
        .ok_or(errno::ENOENT)
}

/// iommu_flb_device_domain() - Resolve a device's domain.
/// @img: A validated image.
/// @dev: A live device of @img (from iommu_flb_next_device() or
///       iommu_flb_find_device()); only its @phys is used.
/// @out: Where to store the domain its domain_phys names.
///
/// Validation proved the domain live, so this fails only for a @dev that is
/// not a live device of @img. Cost O(log n).
///
/// Context: Any context the image's page callback allows.
///
/// Return: 0 with *@out set; -ENOENT if @dev->phys is not a live device of
/// @img; -EINVAL for a bad pointer; -ESTALE if the last
/// iommu_flb_validate() into @img's scratch failed; -EFAULT if the root
/// page can no longer be read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_device_domain(
    img: *const IommuFlbImage,
    dev: *const IommuFlbDeviceRef,
    out: *mut IommuFlbDomainRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            Ok(device_of(&view.image, dev)
                .map_or_else(|code| (NULL_DOMAIN, code), |d| (domain_ref(d.domain()), 0)))
        })
    }
}

/// iommu_flb_device_iommu() - Resolve a device's IOMMU.
/// @img: A validated image.
/// @dev: A live device of @img; only its @phys is used.
/// @out: Where to store the IOMMU its iommu_phys names. Its type selects
///       the member of the device's vendor union.
///
/// Context: Any context the image's page callback allows.
///
/// Return: As iommu_flb_device_domain().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_device_iommu(
    img: *const IommuFlbImage,
    dev: *const IommuFlbDeviceRef,
    out: *mut IommuFlbIommuRef,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            Ok(device_of(&view.image, dev)
                .map_or_else(|code| (NULL_IOMMU, code), |d| (iommu_ref(d.iommu()), 0)))
        })
    }
}

/// struct iommu_flb_image_info - Counts of a validated image.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbImageInfo {
    /// @root_phys: The root's physical address.
    pub root_phys: u64,
    /// @version: The format version (IOMMU_LUO_FLB_VERSION).
    pub version: u64,
    /// @page_size: The page size the image was validated with, in bytes.
    pub page_size: u64,
    /// @pages: Pages iommu_flb_restore() visits: the root's and every chain
    /// page.
    pub pages: u64,
    /// @iommu_pages: Pages in the IOMMU chain.
    pub iommu_pages: u64,
    /// @domain_pages: Pages in the domain chain.
    pub domain_pages: u64,
    /// @device_pages: Pages in the device chain.
    pub device_pages: u64,
    /// @live_iommus: Live IOMMUs.
    pub live_iommus: u64,
    /// @live_devices: Live devices.
    pub live_devices: u64,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// iommu_flb_image_info() - Count what a validated image holds.
/// @img: A validated image.
/// @out: Where to store the counts.
///
/// Context: Any context the image's page callback allows.
///
/// Return: 0 with *@out set; -EINVAL for a bad pointer; -ESTALE if the last
/// iommu_flb_validate() into @img's scratch failed; -EFAULT if the root
/// page can no longer be read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_image_info(
    img: *const IommuFlbImage,
    out: *mut IommuFlbImageInfo,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, out, |view| {
            let image = &view.image;
            Ok((
                IommuFlbImageInfo {
                    root_phys: image.root_phys().get(),
                    version: image.version(),
                    page_size: image.page_size().bytes_u64(),
                    pages: count(image.page_count()),
                    iommu_pages: count(image.chain_pages(Chain::Iommu)),
                    domain_pages: count(image.chain_pages(Chain::Domain)),
                    device_pages: count(image.chain_pages(Chain::Device)),
                    live_iommus: count(image.live_iommus()),
                    live_devices: count(image.live_devices()),
                },
                0,
            ))
        })
    }
}

/// iommu_flb_next_page() - Walk the image's pages in restore order.
/// @img: A validated image.
/// @cursor: The walk's position (start with IOMMU_FLB_CURSOR_INIT).
/// @phys: Where to store the next page's physical address.
///
/// The order is the one iommu_flb_restore() uses: the root's page, then the
/// IOMMU, domain and device chains, each from its head. After a failed
/// restore, the first &struct iommu_flb_restore_status.restored pages of
/// this walk are the ones that were restored.
///
/// Context: Any context the image's page callback allows.
///
/// Return: As iommu_flb_next_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_next_page(
    img: *const IommuFlbImage,
    cursor: *mut IommuFlbCursor,
    phys: *mut u64,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe {
        answer(img, phys, |view| {
            step(view, Walk::Page, cursor, 0, |i| {
                let i = usize::try_from(i).ok()?;
                Some(Some(view.image.page_by_index(i)?.get()))
            })
        })
    }
}

/// struct iommu_flb_restore_status - How far iommu_flb_restore() got.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbRestoreStatus {
    /// @restored: Pages restored: all of them on success, else those before
    /// the failed one (the first @restored of iommu_flb_next_page()).
    pub restored: u64,
    /// @failed_phys: The page whose restore failed, or IOMMU_FLB_NONE.
    pub failed_phys: u64,
    /// @ret: What the callback returned for it (0 on success).
    pub ret: c_int,
}

/// iommu_flb_restore() - Restore every page of a validated image (phase two).
/// @img: A validated image.
/// @restore: Called once per page with its physical address, in the order
///           of iommu_flb_next_page(): the root's page first. In the kernel:
///           kho_restore_folio(). Returns 0, or a negative errno to stop.
///           Must not write to image pages or to @img's scratch, nor call
///           iommu_flb_validate() on that scratch.
/// @ctx: Passed to @restore unchanged; may be NULL.
/// @status: Where to store how far the walk got; written whenever the
///          walk ran (not for a bad argument).
///
/// Every page of the image is visited exactly once, and only pages
/// validation proved part of the image. The first failure stops the walk.
///
/// Context: Whatever @restore needs.
///
/// Return: 0 when every page was restored, else the negative errno
/// @restore returned (-EINVAL if it returned a positive value); then
/// @status says which page failed and how many were restored before it,
/// for the caller to unwind. -EINVAL for a bad pointer, -ESTALE if the last
/// iommu_flb_validate() into @img's scratch failed, -EFAULT if the root
/// page can no longer be read (nothing restored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_restore(
    img: *const IommuFlbImage,
    restore: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> c_int>,
    ctx: *mut c_void,
    status: *mut IommuFlbRestoreStatus,
) -> c_int {
    let Some(restore) = restore else {
        return errno::EINVAL;
    };
    let walk = |view: &View<'_, '_>| {
        let done = view.image.restore(|page| {
            // SAFETY: `restore` is the caller's non-NULL callback, called as
            // its contract says: with `ctx` and a page of the image.
            match unsafe { restore(ctx, page.get()) } {
                0 => Ok(()),
                r => Err(r),
            }
        });
        Ok(match done {
            Ok(n) => (
                IommuFlbRestoreStatus {
                    restored: count(n),
                    failed_phys: IOMMU_FLB_NONE,
                    ret: 0,
                },
                0,
            ),
            Err(e) => (
                IommuFlbRestoreStatus {
                    restored: count(e.restored()),
                    failed_phys: e.page.get(),
                    ret: e.error,
                },
                if e.error < 0 { e.error } else { errno::EINVAL },
            ),
        })
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { answer(img, status, walk) }
}
