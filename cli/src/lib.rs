//! The library half of the `iommu-flb` command-line tool.
//!
//! The binary (`src/main.rs`) only parses arguments and maps results to exit
//! codes; everything it does lives here, so tests and a fuzz target can call
//! the same code on arbitrary bytes:
//!
//! - [`load`]: turns the bytes of a dump file (an ELF64 core, a
//!   kdump-compressed or makedumpfile flattened dump, or a flat physical
//!   dump) into a [`iommu_flb_abi::Memory`], refusing malformed
//!   containers with a [`load::LoadError`], never a panic, and keeping in
//!   memory only the pages the reader asks for;
//! - [`source`]: where those bytes come from (a slice or an open file, read
//!   at an offset, nothing cached);
//! - [`cmd`]: the commands; [`cmd::report`] is the whole read path of
//!   `validate` and `inspect` on a file's contents;
//! - [`render`]: the `inspect` listing (text and JSON) and the `validate`
//!   summary;
//! - [`plan`] and [`rng`]: what `gen` and `demo` preserve, from counts and a
//!   seed;
//! - [`elfcore`]: writes the minimal ELF64 core files `gen --format elf`
//!   produces, with the root address in an `IOMMUFLB` note;
//! - [`scan`]: finds the roots in a dump (by magic, by structure, by
//!   LUO's FLB table) for `scan` and for `validate`/`inspect` without
//!   `--root`;
//! - [`formats`]: a kernel file's formats descriptor (`formats`,
//!   `validate --for`);
//! - [`num`]: the address and number syntax every option accepts.
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

pub mod cmd;
pub mod elfcore;
pub mod formats;
pub mod load;
pub mod num;
pub mod plan;
pub mod render;
pub mod rng;
pub mod scan;
pub mod source;
