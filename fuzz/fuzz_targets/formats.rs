//! Target `formats`: a kernel file's formats descriptor from arbitrary
//! bytes (as they are, or XORed over the library's own), through
//! `Formats::parse`, negotiation both ways, `accepts`, the C API's
//! `iommu_flb_negotiate` and the tool's ELF section reader. See
//! `iommu_flb_abi_fuzz::targets::formats` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iommu_flb_abi_fuzz::targets::formats(data));
