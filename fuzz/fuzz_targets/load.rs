//! Target `load`: arbitrary file bytes through the command-line tool's
//! loading path (`iommu_flb_cli::load::load`, an ELF64 core or a flat
//! dump), then validation of the image in it when a root address is known
//! (the input's `--root`, else the file's `IOMMUFLB` note, else the one
//! root the tool's scan chooses). Loading either
//! succeeds or returns a `LoadError` with a message (`Empty` for an empty
//! file, else `BaseWithElf` exactly when a base is given for an ELF file); a flat dump must read exactly as
//! the library's `FlatMemory` over the same bytes (validation answers the
//! same through both); the image meets everything `raw` checks; and the
//! tool's whole `validate` and `inspect --all --json` path (`cmd::report`)
//! returns a report exactly when validation accepts, a refusal exactly when
//! it refuses, and a usage error only for a container or root problem.
#![no_main]

use iommu_flb_abi_fuzz::input::LoadInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: LoadInput<'_>| iommu_flb_abi_fuzz::targets::load(&input));
