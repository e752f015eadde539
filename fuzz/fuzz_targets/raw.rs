//! Target `raw`: arbitrary bytes as a flat physical dump with a root
//! address in it, validated in both modes, with the input's limits and the
//! defaults. A refusal must be a well-formed typed error; an accepted image
//! must agree with an independent reading of its bytes through every
//! accessor.
#![no_main]

use iommu_flb_abi_fuzz::input::RawInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: RawInput<'_>| iommu_flb_abi_fuzz::targets::raw(&input));
