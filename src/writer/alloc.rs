//! Where the writer's pages come from: the [`PageAlloc`] trait.

use crate::PhysAddr;
use crate::abi::PageSize;

/// A source of zeroed pages that survive the handover, implemented by the
/// caller. In the kernel: `kho_alloc_preserve` / `phys_to_virt` /
/// `kho_unpreserve_free`; in tools and tests, [`MapAlloc`](super::MapAlloc)
/// (feature `alloc`).
///
/// The writer checks every page it is given (non-zero, page-aligned, not
/// already in the image, accessible, all zeroes) and refuses one that fails
/// with [`WriteError::BadPage`](super::WriteError::BadPage), so a buggy
/// allocator cannot make it link a page twice.
///
/// Every operation maps all the pages it writes with one
/// [`pages_mut`](Self::pages_mut) call before it writes anything, so a page
/// that cannot be mapped fails the operation with the image unchanged; see
/// [Failures](super#failures).
pub trait PageAlloc {
    /// The size of every page this allocator hands out: the kernel's
    /// `PAGE_SIZE`. The image is made of pages of this size, and each
    /// array page's capacity follows from it.
    fn page_size(&self) -> PageSize;

    /// Allocates one zeroed, preserved page and returns its physical
    /// address, or `None` when no page is available.
    fn alloc_page(&mut self) -> Option<PhysAddr>;

    /// Mutable access to a page this allocator handed out and has not had
    /// back: exactly `page_size().bytes()` bytes (the writer treats another
    /// length as unmapped). `None` for any other address.
    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]>;

    /// Mutable access to `K` pages at once, all or none, in the order
    /// given. `Err` names the first address (in that order) that is not a
    /// page this allocator handed out and has not had back, or that repeats
    /// an earlier one: the pages must be distinct, so the references never
    /// alias.
    ///
    /// # Errors
    ///
    /// The refused address, as above.
    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr>;

    /// Takes back a page this allocator handed out; the writer never uses it
    /// again.
    fn free_page(&mut self, phys: PhysAddr);
}

/// Lets a writer borrow an allocator, so the caller keeps it (and every
/// page) even if [`Writer::start`](super::Writer::start) fails.
impl<A: PageAlloc + ?Sized> PageAlloc for &mut A {
    fn page_size(&self) -> PageSize {
        (**self).page_size()
    }

    fn alloc_page(&mut self) -> Option<PhysAddr> {
        (**self).alloc_page()
    }

    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
        (**self).page_mut(phys)
    }

    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr> {
        (**self).pages_mut(phys)
    }

    fn free_page(&mut self, phys: PhysAddr) {
        (**self).free_page(phys)
    }
}
