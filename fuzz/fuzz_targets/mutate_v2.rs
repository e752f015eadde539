//! Target `mutate_v2`: a version-2 image built by the writer, then byte
//! flips, with or without resealed CRCs (see `iommu_flb_abi_fuzz::v2`).
#![no_main]

use iommu_flb_abi_fuzz::v2::MutateV2Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MutateV2Input| iommu_flb_abi_fuzz::v2::mutate_v2(&input));
