//! Benchmarks of `iommu-flb-abi`'s validation: the images, the baselines it
//! is measured against, and the visit every benchmark makes. The criterion
//! harness is `benches/validate.rs`; `BENCHMARKS.md` at the repository root
//! has the results and how to reproduce them.
//!
//! The baselines:
//! 1. memcpy of the image's bytes (in the harness);
//! 2. [`kernel_walk`]: the kernel's walk as it is today, in C at -O2;
//! 3. the crate's `validate` plus a visit of every live object ([`validate`]);
//! 4. [`kho::check_and_visit`]: upstream's generic chained-block check;
//! 5. rkyv 0.8 validated access (in the harness, which alone depends on rkyv).
//!
//! Every visit folds the same fields ([`fold`]), so all of them must return the
//! same checksum for the same image, which the harness asserts before timing.

pub mod fold;
pub mod image;
pub mod kho;
pub mod plan;
pub mod pool;
pub mod validate;
pub mod work;

pub use image::Built;

unsafe extern "C" {
    /// `benches/kernel_walk.c`: the kernel's walk, which trusts the image.
    fn iommu_flb_kernel_walk(mem: *const u8, base: u64, root_phys: u64) -> u64;
}

/// Benchmark (2): the kernel's walk as it is today (C, -O2), over the same
/// bytes the reader reads. Returns its checksum of every live object.
pub fn kernel_walk(built: &Built) -> u64 {
    let mem = built.memory();
    // SAFETY: the C walk dereferences `mem + (phys - base)` for the root, each
    // chain page and each of its `nr_objects` records, and stops at a zero
    // `next_array_phys`. `Built::new` validated the image with the crate's
    // reader against this same `FlatMemory` and it cannot be changed
    // afterwards (the buffer is private and borrowed immutably here): so
    // every page it names lies inside `mem.bytes()` (FlatMemory served it),
    // `nr_objects` is within the page capacity, and every chain ends. The C
    // function only reads.
    unsafe { iommu_flb_kernel_walk(mem.bytes().as_ptr(), mem.base().get(), built.root().get()) }
}
