//! Benchmark (3): the crate's `validate` in handover mode, then a visit of
//! every live object through the validated view.

use iommu_flb_abi::reader::{
    self, DeviceRecord, Domain, Image, Iommu, Options, ScratchElem, Visitor,
};
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
    let sum = any_iommus_and_domains(&image);
    Ok(image.device_records().fold(sum, |sum, d| {
        sum.rotate_left(5)
            ^ u64::from(d.devid())
            ^ d.attachment_id()
            ^ d.domain_ref()
            ^ d.iommu_ref()
    }))
}

/// [`validate_and_visit`] in one pass over the records:
/// `reader::validate_with` hands each live IOMMU, domain and device to the
/// fold as validation accepts it, and the sum is kept only if the image is
/// valid. The checksum is (3)'s: the fold adds, so its order does not
/// matter.
#[inline(never)]
pub fn validate_while_visiting<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let mut sum = Sum(0);
    reader::validate_with(mem, root, &Options::default(), scratch, &mut sum)?;
    Ok(sum.0)
}

/// (3)'s fold of version-1 records, as a visitor.
struct Sum(u64);

impl<'m> Visitor<'m> for Sum {
    #[inline(always)]
    fn iommu(&mut self, i: Iommu<'m>) {
        self.0 = i.v1().map_or(self.0, |i| fold::iommu(self.0, i));
    }

    #[inline(always)]
    fn domain(&mut self, d: Domain<'m>) {
        self.0 = d.v1().map_or(self.0, |d| fold::domain(self.0, d));
    }

    #[inline(always)]
    fn device(&mut self, d: DeviceRecord<'m>) {
        self.0 = d.v1().map_or(self.0, |d| fold::device(self.0, d));
    }
}

/// [`validate_any_version_and_visit`] in one pass over the records, as
/// [`validate_while_visiting`]. Its device fold adds (the order of the
/// visit is validation's), so its checksum is not (6)'s:
/// [`visit_any_version_after`] computes the same one after validation.
#[inline(never)]
pub fn validate_any_version_while_visiting<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let mut sum = AnySum {
        ordered: 0,
        devices: 0,
    };
    reader::validate_with(mem, root, &Options::default(), scratch, &mut sum)?;
    Ok(sum.ordered.wrapping_add(sum.devices))
}

/// The folds of [`visit_any_version_after`], as a visitor: the IOMMUs and
/// domains in chain order (the visitor's order too), the devices adding.
struct AnySum {
    ordered: u64,
    devices: u64,
}

impl<'m> Visitor<'m> for AnySum {
    #[inline(always)]
    fn iommu(&mut self, i: Iommu<'m>) {
        self.ordered = any_iommu(self.ordered, &i);
    }

    #[inline(always)]
    fn domain(&mut self, d: Domain<'m>) {
        self.ordered = any_domain(self.ordered, &d);
    }

    #[inline(always)]
    fn device(&mut self, d: DeviceRecord<'m>) {
        self.devices = any_device(self.devices, &d);
    }
}

/// The checksum of [`validate_any_version_while_visiting`], by validating
/// and then visiting: the reference it is checked against.
pub fn visit_any_version_after<M: Memory>(
    mem: &M,
    root: PhysAddr,
    scratch: &mut [ScratchElem],
) -> Result<u64, Error> {
    let image = reader::validate(mem, root, &Options::default(), scratch)?;
    let devices = image.device_records().fold(0, |sum, d| any_device(sum, &d));
    Ok(any_iommus_and_domains(&image).wrapping_add(devices))
}

/// One device of either version into an adding fold.
#[inline(always)]
fn any_device(sum: u64, d: &DeviceRecord<'_>) -> u64 {
    sum.wrapping_add(u64::from(d.devid()) ^ d.attachment_id() ^ d.domain_ref() ^ d.iommu_ref())
}

/// The IOMMUs and domains of an image of either version, folded as
/// [`validate_any_version_and_visit`] folds them.
fn any_iommus_and_domains<M: Memory>(image: &Image<'_, '_, M>) -> u64 {
    let sum = image.iommus().fold(0u64, |sum, i| any_iommu(sum, &i));
    image.domains().fold(sum, |sum, d| any_domain(sum, &d))
}

/// One IOMMU of either version into an ordered fold.
#[inline(always)]
fn any_iommu(sum: u64, i: &Iommu<'_>) -> u64 {
    sum.rotate_left(5) ^ i.token() ^ u64::from(i.ref_count())
}

/// One domain of either version into an ordered fold.
#[inline(always)]
fn any_domain(sum: u64, d: &Domain<'_>) -> u64 {
    sum.rotate_left(5) ^ d.top_table_phys().get() ^ u64::from(d.vasz())
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
