//! Physical addresses.

use core::fmt;

use crate::abi::PageSize;

/// A physical address in the handover image.
///
/// Every address the image stores (`*_phys` fields) and every address the
/// caller passes in is wrapped in this type, so an address cannot be mixed up
/// with a count or an offset. All arithmetic on it is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The null physical address, which the format uses for "none".
    pub const NULL: PhysAddr = PhysAddr(0);

    /// Wraps a raw physical address.
    #[inline]
    pub const fn new(raw: u64) -> Self {
        PhysAddr(raw)
    }

    /// The raw address.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether this is the null address.
    #[inline]
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// Whether the address is a multiple of the page size `page`.
    #[inline]
    pub const fn is_page_aligned(self, page: PageSize) -> bool {
        self.0 & page.mask() == 0
    }

    /// The address of the page of size `page` that contains this address.
    #[inline]
    pub const fn page_base(self, page: PageSize) -> PhysAddr {
        PhysAddr(self.0 & !page.mask())
    }

    /// The offset of this address inside its page of size `page` (always
    /// below `page.bytes()`).
    #[inline]
    pub const fn page_offset(self, page: PageSize) -> usize {
        // Lossless: the masked value is below 2^16, which fits every `usize`.
        #[allow(clippy::as_conversions)]
        let off = (self.0 & page.mask()) as usize;
        off
    }

    /// `self + offset`, or `None` on overflow.
    #[inline]
    pub const fn checked_add(self, offset: u64) -> Option<PhysAddr> {
        match self.0.checked_add(offset) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }

    /// `self - base`, or `None` if `base` is above `self`.
    #[inline]
    pub const fn checked_offset_from(self, base: PhysAddr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<PhysAddr> for u64 {
    fn from(p: PhysAddr) -> u64 {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_arithmetic_splits_address_into_base_and_offset() {
        let a = PhysAddr::new(0x1234_5678);
        assert_eq!(a.page_base(PageSize::Size4K), PhysAddr::new(0x1234_5000));
        assert_eq!(a.page_offset(PageSize::Size4K), 0x678);
        assert_eq!(a.page_base(PageSize::Size16K), PhysAddr::new(0x1234_4000));
        assert_eq!(a.page_offset(PageSize::Size16K), 0x1678);
        assert_eq!(a.page_base(PageSize::Size64K), PhysAddr::new(0x1234_0000));
        assert_eq!(a.page_offset(PageSize::Size64K), 0x5678);
        assert!(!a.is_page_aligned(PageSize::Size4K));
        for ps in PageSize::ALL {
            assert!(a.page_base(ps).is_page_aligned(ps));
        }
        let b = PhysAddr::new(0x4000);
        assert!(b.is_page_aligned(PageSize::Size16K) && !b.is_page_aligned(PageSize::Size64K));
    }

    #[test]
    fn checked_add_refuses_overflow() {
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr::new(1).checked_add(2), Some(PhysAddr::new(3)));
        assert_eq!(PhysAddr::new(1).checked_offset_from(PhysAddr::new(2)), None);
    }
}
