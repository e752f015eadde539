//! Physical addresses.

use core::fmt;

use crate::abi::PAGE_SIZE;

/// A physical address in the handover image.
///
/// Every address the image stores (`*_phys` fields) and every address the
/// caller passes in is wrapped in this type, so an address cannot be mixed up
/// with a count or an offset. All arithmetic on it is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PhysAddr(u64);

/// [`PAGE_SIZE`] as a `u64`, for address arithmetic.
const PAGE_SIZE_U64: u64 = 4096;
/// Mask of the in-page offset bits of an address.
const PAGE_MASK: u64 = PAGE_SIZE_U64 - 1;
#[allow(clippy::as_conversions)] // Compile-time check that the two agree.
const _: () = assert!(PAGE_SIZE_U64 as usize == PAGE_SIZE && PAGE_SIZE.is_power_of_two());

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

    /// Whether the address is a multiple of [`PAGE_SIZE`].
    #[inline]
    pub const fn is_page_aligned(self) -> bool {
        self.0 & PAGE_MASK == 0
    }

    /// The address of the page that contains this address.
    #[inline]
    pub const fn page_base(self) -> PhysAddr {
        PhysAddr(self.0 & !PAGE_MASK)
    }

    /// The offset of this address inside its page (always below [`PAGE_SIZE`]).
    #[inline]
    pub const fn page_offset(self) -> usize {
        // Lossless: the masked value is below 4096, which fits every `usize`.
        #[allow(clippy::as_conversions)]
        let off = (self.0 & PAGE_MASK) as usize;
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
        assert_eq!(a.page_base(), PhysAddr::new(0x1234_5000));
        assert_eq!(a.page_offset(), 0x678);
        assert!(!a.is_page_aligned());
        assert!(a.page_base().is_page_aligned());
    }

    #[test]
    fn checked_add_refuses_overflow() {
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
        assert_eq!(PhysAddr::new(1).checked_add(2), Some(PhysAddr::new(3)));
        assert_eq!(PhysAddr::new(1).checked_offset_from(PhysAddr::new(2)), None);
    }
}
