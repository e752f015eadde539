//! Target `mutate_v2`: a version-2 image built by the writer from the
//! input's operations, then byte flips, validated in both modes.
//!
//! The oracle is version 2's promise: without the flips the image is
//! accepted; with flips and no resealing every changed image is refused
//! (each page's CRC covers every byte); with the CRCs resealed after the
//! flips, the deeper checks see the corruption and must refuse it with a
//! well-formed error or accept an image whose view is consistent.

use arbitrary::{Arbitrary, Result, Unstructured};
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::crc::Crc32;
use iommu_flb_abi::reader::{self, Mode, Options};
use iommu_flb_abi::writer::{Config, Writer};
use iommu_flb_abi::{Memory, PageMap, PhysAddr};

use crate::image::allocator;
use crate::input::{Op, PageOrder};
use crate::model::Model;

/// One flip: `xor` into byte `at` (modulo the image's bytes) of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flip {
    /// Byte offset into the image's pages, in address order.
    pub at: u32,
    /// What is xored in (0 changes nothing).
    pub xor: u8,
}

/// The input of `mutate_v2`: page order (9 bytes), flags (1 byte: bit 0
/// reseals the CRCs after flipping), the number of flips (1 byte, modulo
/// 9), 5 bytes per flip, then operations to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutateV2Input {
    /// Where the pages come from.
    pub order: PageOrder,
    /// Recompute every page's CRC after the flips.
    pub reseal: bool,
    /// The flips.
    pub flips: Vec<Flip>,
    /// How the image is built.
    pub ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for MutateV2Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let order = PageOrder::arbitrary(u)?;
        let reseal = u8::arbitrary(u)? & 1 == 1;
        let n = u8::arbitrary(u)? % 9;
        let flips = (0..n)
            .map(|_| {
                Ok(Flip {
                    at: u32::arbitrary(u)?,
                    xor: u8::arbitrary(u)?,
                })
            })
            .collect::<Result<_>>()?;
        let mut ops = Vec::new();
        while !u.is_empty() {
            ops.push(Op::arbitrary(u)?);
        }
        Ok(MutateV2Input {
            order,
            reseal,
            flips,
            ops,
        })
    }
}

const GENERATION: u64 = 0x0f1b_2026;

/// Recomputes the CRC of every page of `mem` (the root's at 48, the
/// others' at 40).
fn reseal(mem: &mut PageMap, root: PhysAddr) {
    let addrs: Vec<PhysAddr> = mem.iter().map(|(a, _)| a).collect();
    for a in addrs {
        let at = if a == root { 48 } else { 40 };
        if let Some(page) = mem.page_mut(a)
            && let Some(crc) = Crc32::FAST.page(page, at)
        {
            page[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// Runs the target.
pub fn mutate_v2(input: &MutateV2Input) {
    let mut w = match Writer::with_config(allocator(input.order), Config::v2(GENERATION)) {
        Ok(w) => w,
        Err(e) => panic!("the writer cannot start: {e}"),
    };
    let mut model = Model::default();
    for op in &input.ops {
        if let Err(e) = model.apply(&mut w, op) {
            panic!("writer disagrees with the model at {op:?}: {e}");
        }
    }
    let (root, alloc) = w.finish();
    let mut mem = alloc.into_map();
    let ps = PageSize::Size4K;
    let validate = |mem: &PageMap, mode| {
        let opts = Options {
            mode,
            ..Options::default()
        };
        reader::validate_alloc(mem, root, &opts).map(|owned| {
            let image = owned.image();
            // The view is consistent with itself.
            assert_eq!(image.devices().count(), image.live_devices());
            assert_eq!(image.iommus().count(), image.live_iommus());
            assert_eq!(image.pages().count(), image.page_count());
            for d in image.devices() {
                assert!(!d.domain().is_deleted() && !d.iommu().is_deleted());
                let found = image.find_device(d.segment(), d.devid()).map(|f| f.phys());
                assert_eq!(found, Some(d.phys()));
            }
            image.version()
        })
    };
    match validate(&mem, Mode::Handover) {
        Ok(2) => {}
        other => panic!("the writer's version-2 image is not accepted as one: {other:?}"),
    }
    let total = mem.iter().count() * ps.bytes();
    if total == 0 || input.flips.is_empty() {
        return;
    }
    let addrs: Vec<PhysAddr> = {
        let mut a: Vec<PhysAddr> = mem.iter().map(|(a, _)| a).collect();
        a.sort();
        a
    };
    let before: Vec<Vec<u8>> = addrs
        .iter()
        .map(|a| mem.page(*a, ps).map(<[u8]>::to_vec).unwrap_or_default())
        .collect();
    for f in &input.flips {
        let at = usize::try_from(f.at).unwrap_or(0) % total;
        let (page, off) = (at / ps.bytes(), at % ps.bytes());
        if let Some(p) = mem.page_mut(addrs[page]) {
            p[off] ^= f.xor;
        }
    }
    let changed = addrs
        .iter()
        .zip(&before)
        .any(|(a, b)| mem.page(*a, ps).is_some_and(|p| p != &b[..]));
    if input.reseal {
        reseal(&mut mem, root);
        for mode in [Mode::Handover, Mode::Restored] {
            if let Err(e) = validate(&mem, mode) {
                assert!(e.errno() < 0, "{e}");
                assert!(!e.to_string().is_empty());
            }
        }
    } else if changed {
        for mode in [Mode::Handover, Mode::Restored] {
            assert!(
                validate(&mem, mode).is_err(),
                "a changed version-2 image without resealed CRCs is accepted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_without_reseal_are_all_refused_and_resealed_ones_do_not_panic() {
        let ops = vec![
            Op::Iommu {
                token: 1,
                intel: true,
            },
            Op::Domain {
                top: 1,
                unaligned: false,
                level: 4,
                vasz: 48,
                sign_extend: 0,
            },
            Op::Device {
                seg: 0,
                devid: 8,
                domain: 0,
                iommu: 0,
                intel: true,
                attachment: 1,
            },
        ];
        for reseal in [false, true] {
            for at in (0..16384u32).step_by(97) {
                mutate_v2(&MutateV2Input {
                    order: PageOrder::Sequential { base: 16 },
                    reseal,
                    flips: vec![Flip { at, xor: 0x41 }],
                    ops: ops.clone(),
                });
            }
        }
    }
}
