//! Target `mutate`: a valid image built by the writer from the input's
//! operations, then the input's corruptions, validated in both modes.
//! Without corruptions the image must be accepted; with them, a refusal
//! must be a well-formed typed error and an acceptance must satisfy every
//! invariant of the view.
#![no_main]

use iommu_flb_abi_fuzz::input::MutateInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MutateInput| iommu_flb_abi_fuzz::targets::mutate(&input));
