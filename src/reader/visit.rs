//! What validation hands the live records to as it accepts them (see
//! [`validate_with`](super::validate_with)).

use super::view::{DeviceRecord, Domain, Iommu};

/// Receives each live record as validation accepts it: the IOMMUs in chain
/// order, then the domains, then the devices, each once. Every method does
/// nothing unless implemented.
///
/// A record handed over has passed every check of its own. A visitor may
/// still have seen records of an image that is then refused: one of a
/// later record's own checks may fail (a device is checked after every
/// IOMMU and domain was handed over); the device chain is walked as its
/// records are checked, so its pages further on, the scratch's length and
/// pages used twice are refused after records were handed over; and the
/// checks across records (IOMMU reference counts, duplicate IOMMUs and
/// devices) come after the last device. Use it for work whose result is
/// dropped with the error (a fold, a table of your own), never to act on a
/// record.
pub trait Visitor<'m> {
    /// A live IOMMU record, after its header, type and vendor checks.
    #[inline(always)]
    fn iommu(&mut self, iommu: Iommu<'m>) {
        let _ = iommu;
    }

    /// A live domain record, after its header and field checks.
    #[inline(always)]
    fn domain(&mut self, domain: Domain<'m>) {
        let _ = domain;
    }

    /// A live device record, after its header, reference and vendor checks.
    #[inline(always)]
    fn device(&mut self, device: DeviceRecord<'m>) {
        let _ = device;
    }
}

/// Visits nothing: what [`validate`](super::validate) runs with.
impl Visitor<'_> for () {}

impl<'m, V: Visitor<'m> + ?Sized> Visitor<'m> for &mut V {
    #[inline(always)]
    fn iommu(&mut self, iommu: Iommu<'m>) {
        (**self).iommu(iommu);
    }

    #[inline(always)]
    fn domain(&mut self, domain: Domain<'m>) {
        (**self).domain(domain);
    }

    #[inline(always)]
    fn device(&mut self, device: DeviceRecord<'m>) {
        (**self).device(device);
    }
}

/// A closure that visits the device records only (what
/// [`validate_visiting`](super::validate_visiting) takes).
pub(crate) struct Devices<F>(pub F);

impl<'m, F: FnMut(DeviceRecord<'m>)> Visitor<'m> for Devices<F> {
    #[inline(always)]
    fn device(&mut self, device: DeviceRecord<'m>) {
        (self.0)(device);
    }
}
