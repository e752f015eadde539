//! Benchmark (3): the crate's `validate` in handover mode, then a visit of
//! every live object through the validated view.

use iommu_flb_abi::reader::{self, Image, Options, ScratchElem};
use iommu_flb_abi::{Error, Memory, PhysAddr};

use crate::fold;
use crate::image::Built;

/// Scratch for validating `built`, allocated once, outside any timed loop.
pub fn scratch_for(built: &Built) -> Vec<ScratchElem> {
    let n = reader::scratch_len(&built.memory(), built.root(), &Options::default())
        .expect("the benchmark image is valid");
    vec![ScratchElem::default(); n]
}

/// Validates the image at `root` with the default options (handover mode,
/// default limits) in `scratch`, then folds every live IOMMU, domain and
/// device into the checksum the kernel's walk computes. The devices are
/// read as stored records (`Image::device_records`): the kernel's walk
/// folds each device's references without following them, and validation
/// has proved them.
///
/// Never inlined, here and in the other functions of this module, so that
/// callgrind's `--toggle-collect` finds the function to count in
/// ([`crate::work::Work::collect_in`]); one call per image costs nothing
/// measurable.
#[inline(never)]
pub fn validate_and_visit<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let image = reader::validate(mem, root, &Options::default(), scratch)?;
    let devices = image.device_records().filter_map(|d| d.v1());
    Ok(devices.fold(iommus_and_domains(&image), fold::device))
}

/// The fold of the live IOMMUs and domains (the benchmark images are
/// version 1, which the kernel's walk reads).
fn iommus_and_domains<M: Memory>(image: &Image<'_, '_, M>) -> u64 {
    let iommus = image.iommus().filter_map(|i| i.v1());
    let sum = iommus.fold(0, fold::iommu);
    image
        .domains()
        .filter_map(|d| d.v1())
        .fold(sum, fold::domain)
}

/// [`validate_and_visit`] with every device resolved (`Image::devices`:
/// its domain, its IOMMU and its vendor payload looked up), folding the
/// same fields: what resolving costs on top.
#[inline(never)]
pub fn validate_visit_resolving<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let image = reader::validate(mem, root, &Options::default(), scratch)?;
    let devices = image.devices().filter_map(|d| d.v1());
    Ok(devices.fold(iommus_and_domains(&image), fold::device))
}

/// [`validate_and_visit`] for an image of any version: the visit reads
/// the fields both versions share through the view's accessors (a
/// version-2 image has no version-1 records for `fold` to take).
///
/// Its name does not contain `validate_and_visit`, so that a callgrind
/// pattern `*validate_and_visit*` does not also toggle collection in it.
#[inline(never)]
pub fn validate_any_version_and_visit<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let image = reader::validate(mem, root, &Options::default(), scratch)?;
    let sum = image.iommus().fold(0u64, |sum, i| {
        sum.rotate_left(5) ^ i.token() ^ u64::from(i.ref_count())
    });
    let sum = image.domains().fold(sum, |sum, d| {
        sum.rotate_left(5) ^ d.top_table_phys().get() ^ u64::from(d.vasz())
    });
    Ok(image.device_records().fold(sum, |sum, d| {
        sum.rotate_left(5)
            ^ u64::from(d.devid())
            ^ d.attachment_id()
            ^ d.domain_ref()
            ^ d.iommu_ref()
    }))
}

/// [`validate_and_visit`] without the visit: what validation alone costs.
#[inline(never)]
pub fn validate_only<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<usize, Error> {
    reader::validate(mem, root, &Options::default(), scratch).map(|image| image.live_devices())
}
