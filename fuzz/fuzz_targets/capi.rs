//! Target `capi`: the C API driven through its `extern "C"` functions by
//! the input's calls (validate and re-validate into the same scratch, walk
//! with old image pointers and cursors, write with copied, forged and
//! stale handles and copied writer structs, callbacks failing at chosen
//! calls). The C writer must agree with the Rust writer call by call over
//! identical pages, the C reader with the Rust reader, and every misuse
//! must be refused as the header documents, changing nothing.
#![no_main]

use iommu_flb_abi_fuzz::input::CapiInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: CapiInput| iommu_flb_abi_fuzz::targets::capi(&input));
