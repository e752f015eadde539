//! The IOMMU live-update FLB handover format.
//!
//! In a Linux live update the outgoing kernel keeps IOMMU translations
//! running across kexec and hands the next kernel one physical address: the
//! root [`abi::v1::IommuFlbSer`]. From it hang three chains of array
//! pages holding the preserved IOMMUs, domains and devices. This crate is the
//! single source of truth for that format: the wire types ([`abi`]), from
//! which the C header `include/iommu_flb.h` is generated, the validating
//! zero-copy [`reader`] the incoming kernel uses, and the [`writer`] that
//! builds images the way the outgoing kernel does.
//!
//! Data flows one way: bytes, through [`Memory`], to the chain walk, to a
//! validated [`reader::Image`], to typed records.
#![no_std]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod abi;
mod addr;
mod chain;
#[cfg(feature = "alloc")]
pub mod convert;
pub mod crc;
mod errno;
pub mod error;
#[cfg(feature = "ffi")]
pub mod ffi;
mod format;
pub mod formats;
pub mod mem;
pub mod reader;
pub mod writer;

pub use addr::PhysAddr;
pub use error::Error;
#[cfg(feature = "alloc")]
pub use mem::PageMap;
pub use mem::{FlatMemory, Memory};
