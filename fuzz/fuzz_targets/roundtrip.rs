//! Target `roundtrip`: the input's operations run on the writer and on a
//! [`Model`], with allocations failing at the input's steps. Every result
//! must be the one the model predicts; at every `Op::Check` and at the end
//! the reader must see exactly the model's objects (slots, live records,
//! fields, ref counts, references, payloads, lookups, pages per chain)
//! besides every invariant of the view; abort must then give every page
//! back.
#![no_main]

use iommu_flb_abi_fuzz::input::RoundtripInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: RoundtripInput| iommu_flb_abi_fuzz::targets::roundtrip(&input));
