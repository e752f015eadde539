//! Shared code of the fuzz targets (one file per target under
//! `fuzz_targets/`):
//!
//! - [`input`]: each target's input type, decoded with `arbitrary` and
//!   encoded back, so seeds are written as the values they stand for;
//! - [`check`]: what every validation result must satisfy (a refusal is a
//!   well-formed typed error; an accepted image agrees with its bytes);
//! - [`model`]: what the writer should have written, for `roundtrip`;
//! - [`image`]: building images with the writer, corrupting and flattening
//!   them;
//! - [`capi`]: target `capi`, the C API through its `extern "C"` functions
//!   against the Rust writer and reader.
//!
//! The unit tests of this crate write the seed corpus under `seeds/` (see
//! `README.md`).

/// The page size the fuzz targets build and read images in.
pub const PS: iommu_flb_abi::abi::PageSize = iommu_flb_abi::abi::PageSize::Size4K;
/// [`PS`] in bytes.
pub const PAGE_SIZE: usize = PS.bytes();

pub mod capi;
pub mod check;
pub mod image;
pub mod input;
pub mod model;
#[cfg(test)]
mod regressions;
#[cfg(test)]
mod seeds;
pub mod targets;
pub mod v2;
