//! Property tests: random valid images are accepted and read back exactly;
//! any single corrupted byte gives either a valid image or a typed error,
//! never a panic.

mod common;

use common::{DeviceSpec, DomainSpec, INTEL, IommuSpec, SMMUV3, Spec, check_view};
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::IommuTypeSer;
use iommu_flb_abi::reader::{self, ScratchElem};
use proptest::prelude::*;

/// Miri runs every case slowly; a few still cover the paths.
const CASES: u32 = if cfg!(miri) { 4 } else { 256 };

/// A random valid image: every live IOMMU has a live device, every record
/// a live device names is live, keys are unique; deletions, both vendors,
/// multi-page chains, pages in random order.
fn valid_spec() -> impl Strategy<Value = Spec> {
    let sizes = prop_oneof![
        3 => (1usize..=4, 1usize..=4, 0usize..=8),
        1 => (30usize..=40, 95usize..=110, 0usize..=70),
        1 => Just((0usize, 0usize, 0usize)),
    ];
    let page_size = prop_oneof![
        3 => Just(PageSize::Size4K),
        1 => Just(PageSize::Size16K),
        1 => Just(PageSize::Size64K),
    ];
    (sizes, any::<u64>(), 1u64..=3, page_size).prop_map(|((ni, nd, extra), seed, stride, ps)| {
        let mut rng = Rng(seed | 1);
        let nv = if nd == 0 { 0 } else { ni + extra };
        let ni = if nv == 0 { 0 } else { ni };
        let devices: Vec<DeviceSpec> = (0..nv)
            .map(|i| DeviceSpec {
                segment: rng.below(3) as u32,
                devid: i as u32,
                domain: rng.below(nd as u64) as usize,
                // The first `ni` devices give every IOMMU one.
                iommu: if i < ni {
                    i
                } else {
                    rng.below(ni as u64) as usize
                },
                deleted: i >= ni && rng.below(4) == 0,
            })
            .collect();
        let used_domain = |d: usize| devices.iter().any(|v| !v.deleted && v.domain == d);
        let domains = (0..nd)
            .map(|d| DomainSpec {
                top: 0x4000_0000 + 0x1000 * rng.below(1 << 20),
                vasz: rng.below(65) as u32,
                deleted: !used_domain(d) && rng.below(2) == 0,
            })
            .collect();
        let iommus = (0..ni)
            .map(|i| IommuSpec {
                token: 0xfe00_0000 + 0x1000 * i as u64,
                ty: if rng.below(2) == 0 { INTEL } else { SMMUV3 },
                deleted: false,
            })
            .collect();
        let mut spec = Spec {
            iommus,
            domains,
            devices,
            root_offset: 0,
            page_order: None,
            page_size: ps,
        };
        let pages = 1 + common::CHAINS
            .iter()
            .zip([ni, nd, nv])
            .map(|(&c, n)| n.div_ceil(common::capacity(c, ps) as usize).max(1))
            .sum::<usize>();
        let mut order: Vec<u64> = (0..pages as u64).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        spec.page_order = Some(
            order
                .iter()
                .map(|p| 0x20_0000 + p * stride * ps.bytes_u64())
                .collect(),
        );
        spec
    })
}

/// xorshift64: the strategy draws one seed and derives the rest, so
/// shrinking stays simple.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_images_are_accepted_and_read_back(spec in valid_spec()) {
        let img = spec.build();
        let opts = img.opts();
        let n = reader::scratch_len(&img.mem, img.root, &opts).expect("scratch_len");
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(&img.mem, img.root, &opts, &mut scratch).expect("valid");
        check_view(&spec, &img, &image);
        common::check_visiting(&img.mem, img.root, &opts, &image);
    }

    #[test]
    fn one_corrupted_byte_gives_a_valid_image_or_a_typed_error(
        spec in valid_spec(),
        page in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        anywhere in prop::bool::weighted(0.2),
        flip in 1u8..=255,
    ) {
        let mut img = spec.build();
        let pages: Vec<PhysAddr> = img.mem.iter().map(|(p, _)| p).collect();
        let target = *page.get(&pages);
        // Mostly a byte in use: the root struct, or a page's header and
        // records; sometimes anywhere in the page.
        let (start, len) = if anywhere {
            (0, img.page_size.bytes())
        } else if target == img.root.page_base(img.page_size) {
            (img.root.page_offset(img.page_size), 32)
        } else {
            let nr = img.get_u64(PhysAddr::new(target.get() + 8)) as usize;
            let size = [common::HW, common::DOM, common::DEV]
                .into_iter()
                .zip(common::CHAINS)
                .find(|(_, c)| img.chain(*c).contains(&target))
                .map_or(0, |(s, _)| s);
            (0, 16 + nr * size)
        };
        let at = PhysAddr::new(target.get() + (start + pos.index(len)) as u64);
        let b = img.bytes_mut(at, 1);
        b[0] ^= flip;

        let opts = img.opts();
        let len = reader::scratch_len(&img.mem, img.root, &opts);
        let mut scratch = vec![ScratchElem::default(); *len.as_ref().unwrap_or(&0)];
        let visiting = common::visit_devices(&img.mem, img.root, &opts);
        match reader::validate(&img.mem, img.root, &opts, &mut scratch) {
            Err(e) => {
                prop_assert_eq!(visiting.map(|_| ()), Err(e), "the visiting form refuses it alike");
                let with = common::visit_all(&img.mem, img.root, &opts);
                prop_assert_eq!(with.map(|_| ()), Err(e), "so does a visitor's");
                prop_assert!(e.errno() < 0);
                prop_assert!(!e.to_string().is_empty());
                if let Err(first) = len {
                    prop_assert_eq!(first, e, "scratch_len and validate agree");
                }
            }
            Ok(image) => {
                // Everything a caller can reach must work without panicking.
                for m in image.all_iommus() {
                    let _ = (m.phys(), m.is_deleted(), m.iommu().map(|i| i.payload()));
                }
                for d in image.all_devices() {
                    let _ = (d.domain(), d.iommu(), d.payload(), d.device());
                }
                prop_assert_eq!(image.iommus().count(), image.live_iommus());
                prop_assert_eq!(image.devices().count(), image.live_devices());
                for d in image.devices() {
                    let found = image.find_device(d.segment(), d.devid());
                    prop_assert_eq!(found.map(|f| f.phys()), Some(d.phys()));
                    prop_assert!(!d.domain().is_deleted() && !d.iommu().is_deleted());
                }
                for m in image.iommus() {
                    let found = image.find_iommu(m.token(), m.iommu_type());
                    prop_assert_eq!(found.map(|f| f.phys()), Some(m.phys()));
                    prop_assert!(matches!(
                        m.iommu_type(),
                        IommuTypeSer::IommuIntel | IommuTypeSer::IommuArmSmmuv3
                    ));
                }
                let mut all: Vec<_> = image.pages().collect();
                let n = all.len();
                all.sort();
                all.dedup();
                prop_assert_eq!(all.len(), n, "every page once");
                let records: Vec<_> = image
                    .device_records()
                    .map(|d| (d.phys(), d.segment(), d.devid()))
                    .collect();
                prop_assert_eq!(visiting.map(|(seen, _)| seen), Ok(records), "the visit sees the live records");
            }
        }
    }
}
