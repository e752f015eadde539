//! `libiommu_flb.a`: the C API of [`iommu_flb_abi::ffi`] as a static library.
//!
//! This crate has no code of its own. It exists so the library crate stays
//! a plain `no_std` rlib (no panic handler, no `#[no_mangle]` symbols unless
//! its `ffi` feature is on) while C programs get one archive to link:
//!
//! ```sh
//! cargo build --release -p iommu-flb-capi
//! gcc -std=gnu11 -Iinclude prog.c target/release/libiommu_flb.a -lpthread -ldl
//! ```
//!
//! The release profile builds it with `panic = "abort"`. The archive
//! carries Rust's standard library (the `std` runtime of a static library);
//! the API itself allocates nothing and never panics into C.

// Links the library, and with it every `#[no_mangle]` function of its `ffi`
// module, into the archive.
pub use iommu_flb_abi::ffi;
