//! Conversion between format versions: the same live objects come out, and
//! an image the target cannot express is refused before anything is
//! written.
#![cfg(feature = "alloc")]

mod common;
mod v2_support;

use iommu_flb_abi::convert::{ConvertError, Converted, Inexpressible, convert};
use iommu_flb_abi::error::Chain;
use iommu_flb_abi::reader::{self, DevicePayload, Image, IommuPayload, Mode, Options};
use iommu_flb_abi::writer::*;
use iommu_flb_abi::{Memory, PageMap, PhysAddr};

fn p(a: u64) -> PhysAddr {
    PhysAddr::new(a)
}

/// Every live object with every field a writer takes, and a device's
/// domain and IOMMU by their fields: equal lists mean the same objects,
/// whatever the version, the addresses and the deleted slots.
fn live<M: Memory + ?Sized>(image: &Image<'_, '_, M>) -> Vec<String> {
    let mut out = Vec::new();
    let iommu = |u: &reader::Iommu<'_>| {
        let payload = match u.payload() {
            IommuPayload::Intel(p) => format!(
                "intel {:#x} {:#x} {:?}",
                p.phys_addr.get(),
                p.root_table.get(),
                p.context_tables_bitmap.map(|w| w.get())
            ),
            IommuPayload::IntelV2(p) => format!(
                "intel {:#x} {:#x} {:?}",
                p.phys_addr.get(),
                p.root_table.get(),
                p.context_tables_bitmap.map(|w| w.get())
            ),
            IommuPayload::Smmuv3(p) => format!(
                "smmuv3 {:#x} {:#x} {:#x} {:#x}",
                p.phys_addr.get(),
                p.strtab_base_cfg.get(),
                p.l1_strtab_lu_state.get(),
                p.l2_strtab_lu_states_phys.get()
            ),
        };
        format!("iommu {:#x} refs {} {payload}", u.token(), u.ref_count())
    };
    let domain = |d: &reader::Domain<'_>| {
        format!(
            "domain {} {} {} {} refs {}",
            d.top_table_phys(),
            d.top_level(),
            d.vasz(),
            d.sign_extend(),
            d.ref_count()
        )
    };
    out.extend(image.iommus().map(|u| iommu(&u)));
    out.extend(image.domains().map(|d| domain(&d)));
    for d in image.devices() {
        let payload = match d.payload() {
            DevicePayload::Intel(p) => format!("{} {}", p.pasid_table.get(), p.max_pasid.get()),
            DevicePayload::IntelV2(p) => format!("{} {}", p.pasid_table.get(), p.max_pasid.get()),
            DevicePayload::Smmuv3(p) => format!(
                "{} {} {}",
                p.l1_cdtab_lu_state.get(),
                p.num_l2_cdtables.get(),
                p.l2_cdtab_lu_states_phys.get()
            ),
        };
        out.push(format!(
            "device {}:{:#x} owner {} attach {} [{payload}] in [{}] on [{}]",
            d.segment(),
            d.devid(),
            d.dma_owner_token(),
            d.attachment_id(),
            domain(&d.domain()),
            iommu(&d.iommu()),
        ));
    }
    out
}

fn intel(n: u64) -> IommuPayloadInit {
    IommuPayloadInit::Intel(IntelIommuInit {
        phys_addr: p(0xfed9_0000 + n * 0x1000),
        root_table: p(0x7000_0000 + n * 0x1000),
        context_tables_bitmap: [n, 0, 1, 0, 0, 0, 0, 1 << 63],
    })
}

fn smmu(n: u64) -> IommuPayloadInit {
    IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
        phys_addr: p(0x0900_0000 + n * 0x2_0000),
        strtab_base_cfg: 0x3_0008 + n,
        l1_strtab_lu_state: 0xabc0 + n,
        l2_strtab_lu_states_phys: p(0x7100_0000 + n * 0x1000),
    })
}

/// Domains of [`source`]: a page and a half (one page under miri, where
/// the multi-page round trips take minutes; the native run covers them).
const DOMAINS: u64 = if cfg!(miri) { 12 } else { 140 };
/// Devices of [`source`]: over two pages (one under miri).
const DEVICES: u32 = if cfg!(miri) { 16 } else { 64 };
/// The devices [`source`] unpreserves: the first, one inside, the last.
const UNPRESERVED: [usize; 3] = [0, 5, DEVICES as usize - 1];
/// Live devices of [`source`].
const LIVE_DEVICES: usize = DEVICES as usize - UNPRESERVED.len();

/// Three IOMMUs of both vendors, [`DOMAINS`] domains, [`DEVICES`] devices,
/// [`UNPRESERVED`] of them unpreserved, in `version`.
fn source(version: u64) -> (PhysAddr, PageMap) {
    let config = if version == 1 {
        Config::v1()
    } else {
        Config::v2(0x1234)
    };
    let mut w = Writer::with_config(MapAlloc::scattered(11), config).unwrap();
    let hws = [
        (w.preserve_iommu(0x1000, intel(0)).unwrap(), false),
        (w.preserve_iommu(0x2000, smmu(1)).unwrap(), true),
        (w.preserve_iommu(0x3000, intel(2)).unwrap(), false),
    ];
    let doms: Vec<_> = (0..DOMAINS)
        .map(|n| {
            w.preserve_domain(DomainInit {
                top_table_phys: p(0x4000_0000 + n * 0x1000),
                top_level: 3 + n % 2,
                vasz: 39 + (n % 2) as u32 * 9,
                sign_extend: (n % 3 == 0) as u8,
            })
            .unwrap()
        })
        .collect();
    let mut devs = Vec::new();
    for n in 0..DEVICES {
        let (hw, is_smmu) = hws[n as usize % 3];
        let payload = if is_smmu {
            DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                l1_cdtab_lu_state: u64::from(n) + 7,
                num_l2_cdtables: n % 5,
                l2_cdtab_lu_states_phys: p(0x7200_0000 + u64::from(n) * 0x1000),
            })
        } else {
            DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: p(0x7300_0000 + u64::from(n) * 0x1000),
                max_pasid: 1 << (n % 20),
            })
        };
        let init = DeviceInit {
            pci_domain_nr: n / 40,
            devid: n * 8 + 1,
            dma_owner_token: 0xf11e_0000 + u64::from(n),
            attachment_id: u64::from(n % 7),
            payload,
        };
        devs.push(
            w.preserve_device(init, doms[n as usize * 3 % doms.len()], hw)
                .unwrap(),
        );
    }
    for k in UNPRESERVED {
        w.unpreserve_device(devs[k]).unwrap();
    }
    let (root, alloc) = w.finish();
    (root, alloc.into_map())
}

fn validated(root: PhysAddr, mem: &PageMap) -> reader::OwnedImage<'_, PageMap> {
    reader::validate_alloc(mem, root, &Options::default()).unwrap()
}

/// Converts the image at `root` into a new writer of `config`.
fn into(root: PhysAddr, mem: &PageMap, config: Config) -> (PhysAddr, PageMap, Converted) {
    let owned = validated(root, mem);
    let mut w = Writer::with_config(MapAlloc::scattered(29), config).unwrap();
    let done = convert(&owned.image(), &mut w).unwrap();
    let (root, alloc) = w.finish();
    (root, alloc.into_map(), done)
}

#[test]
fn v1_to_v2_to_v1_keeps_every_live_object() {
    let (root1, mem1) = source(1);
    let want = live(&validated(root1, &mem1).image());
    assert_eq!(want.len(), 3 + DOMAINS as usize + LIVE_DEVICES);

    let (root2, mem2, done) = into(root1, &mem1, Config::v2(77));
    assert_eq!(
        done,
        Converted {
            iommus: 3,
            domains: DOMAINS as usize,
            devices: LIVE_DEVICES
        }
    );
    let v2 = validated(root2, &mem2);
    assert_eq!(v2.image().version(), 2);
    assert_eq!(live(&v2.image()), want);
    // Deleted slots are not carried over.
    assert_eq!(v2.image().all_devices().count(), LIVE_DEVICES);

    let (root3, mem3, _) = into(root2, &mem2, Config::v1());
    let back = validated(root3, &mem3);
    assert_eq!(back.image().version(), 1);
    assert_eq!(live(&back.image()), want);
}

#[test]
fn v2_to_v1_to_v2_keeps_every_live_object() {
    let (root2, mem2) = source(2);
    let want = live(&validated(root2, &mem2).image());
    let (root1, mem1, _) = into(root2, &mem2, Config::v1());
    assert_eq!(live(&validated(root1, &mem1).image()), want);
    let (again, mem, _) = into(root1, &mem1, Config::v2(5));
    let img = validated(again, &mem);
    assert_eq!(img.image().generation(), Some(5));
    assert_eq!(live(&img.image()), want);
}

#[test]
fn an_empty_image_converts_to_an_empty_image() {
    let w = Writer::with_config(MapAlloc::scattered(1), Config::v2(9)).unwrap();
    let (root, alloc) = w.finish();
    let mem = alloc.into_map();
    let (r1, m1, done) = into(root, &mem, Config::v1());
    assert_eq!(done, Converted::default());
    assert!(live(&validated(r1, &m1).image()).is_empty());
}

/// Converts a version-2 image built byte by byte to each version and
/// returns what `convert` said.
fn convert_synthetic(img: &v2_support::Img, config: Config) -> Result<Converted, ConvertError> {
    let mem = img.mem();
    let owned = reader::validate_alloc(&mem, img.root, &Options::default()).unwrap();
    let mut w = Writer::with_config(MapAlloc::scattered(3), config).unwrap();
    let fresh = w.alloc().map().clone();
    let r = convert(&owned.image(), &mut w);
    if matches!(r, Err(ConvertError::Inexpressible(_))) {
        // Refused before anything was written.
        assert!(
            w.alloc().map().iter().eq(fresh.iter()),
            "the writer's pages changed"
        );
    }
    r
}

#[test]
fn compat_features_of_a_later_writer_are_refused() {
    let mut img = v2_support::Img::build(&v2_support::Spec::typical(4));
    let root = img.root.get() as usize - img.base as usize;
    img.put_u64(root + 32, 1 << 5);
    img.seal();
    for config in [Config::v1(), Config::v2(1)] {
        assert_eq!(
            convert_synthetic(&img, config),
            Err(ConvertError::Inexpressible(Inexpressible::CompatFeatures {
                bits: 1 << 5
            }))
        );
    }
}

#[test]
fn longer_records_convert_when_their_extra_bytes_are_zero_and_are_refused_when_not() {
    let mut spec = v2_support::Spec::typical(5);
    spec.strides = [0, 0, 80];
    let mut img = v2_support::Img::build(&spec);
    assert_eq!(
        convert_synthetic(&img, Config::v1()).map(|c| c.devices),
        Ok(5)
    );
    // Device 3's byte 75: past the 72 bytes version 2.0 defines.
    let at = img.record(2, 3);
    img.bytes[at + 75] = 0x5a;
    img.seal();
    let phys = p(img.base + at as u64);
    assert_eq!(
        convert_synthetic(&img, Config::v2(1)),
        Err(ConvertError::Inexpressible(
            Inexpressible::RecordExtension {
                chain: Chain::Device,
                phys,
                offset: 75
            }
        ))
    );
}

#[test]
fn a_longer_root_converts_only_when_its_extra_bytes_are_zero() {
    let mut img = v2_support::Img::build(&v2_support::Spec::typical(2));
    let root = img.root.get() as usize - img.base as usize;
    img.put_u32(root + 12, 136);
    img.seal();
    assert!(convert_synthetic(&img, Config::v1()).is_ok());
    img.bytes[root + 130] = 1;
    img.seal();
    assert_eq!(
        convert_synthetic(&img, Config::v1()),
        Err(ConvertError::Inexpressible(Inexpressible::RootExtension {
            root_size: 136,
            offset: 130
        }))
    );
}

/// Every field the next kernel writes after restore (version 1's
/// `INCOMING` flag, the Intel IOMMU's and device's `restored`, the domain's
/// `restored_domain`) makes the image one that cannot be handed over again.
#[test]
fn a_restored_image_is_refused_naming_the_restored_record() {
    use common::off::{DEV_VENDOR, DOM_RESTORED, FLAGS, HW_VENDOR};
    let incoming = iommu_flb_abi::abi::v1::IOMMU_SER_FLAG_INCOMING;
    let cases: [(Chain, usize, usize, bool); 4] = [
        (Chain::Device, 1, FLAGS, true),
        (Chain::Iommu, 0, HW_VENDOR, false),
        (Chain::Domain, 0, DOM_RESTORED, false),
        (Chain::Device, 0, DEV_VENDOR, false),
    ];
    for (chain, index, field, flag) in cases {
        let spec = common::Spec::simple(1, 1, 2);
        let mut img = spec.build();
        let at = img.field(chain, index, field);
        if flag {
            img.put_u32(at, incoming);
        } else {
            img.put_u8(at, 1);
        }
        let opts = Options {
            mode: Mode::Restored,
            ..Options::default()
        };
        let owned = reader::validate_alloc(&img.mem, img.root, &opts)
            .unwrap_or_else(|e| panic!("{chain:?} field {field}: {e}"));
        for config in [Config::v1(), Config::v2(1)] {
            let mut w = Writer::with_config(MapAlloc::scattered(3), config).unwrap();
            assert_eq!(
                convert(&owned.image(), &mut w),
                Err(ConvertError::Inexpressible(Inexpressible::RestoredState {
                    chain,
                    phys: img.record(chain, index)
                })),
                "{chain:?} field {field}"
            );
            assert_eq!(w.counts().devices, 0, "nothing written");
        }
    }
}

#[test]
fn a_writer_that_already_holds_objects_is_refused() {
    let (root, mem) = source(1);
    let owned = validated(root, &mem);
    let mut w = Writer::with_config(MapAlloc::scattered(3), Config::v2(1)).unwrap();
    w.preserve_iommu(1, intel(1)).unwrap();
    assert_eq!(convert(&owned.image(), &mut w), Err(ConvertError::NotEmpty));
}

#[test]
fn running_out_of_pages_names_the_object_and_leaves_a_valid_image() {
    let (root, mem) = source(1);
    let owned = validated(root, &mem);
    // Pages: the root, one IOMMU page, the domain pages, then none.
    let per_page = iommu_flb_abi::abi::v2::records_per_page(
        iommu_flb_abi::abi::PageSize::Size4K,
        size_of::<iommu_flb_abi::abi::v2::IommuDomainV2Ser>(),
    );
    let pages = 2 + DOMAINS.div_ceil(per_page);
    let alloc = FailingAlloc::new(MapAlloc::scattered(3), move |step| step >= pages);
    let mut w = Writer::with_config(alloc, Config::v2(1)).unwrap();
    let e = convert(&owned.image(), &mut w).unwrap_err();
    let ConvertError::Write { chain, error, .. } = e else {
        panic!("{e}");
    };
    assert_eq!(chain, Chain::Device);
    assert!(matches!(error, WriteError::OutOfPages { .. }), "{error}");
    let (r, alloc) = w.finish();
    let map = alloc.into_inner().into_map();
    let img = validated(r, &map);
    assert_eq!(img.image().devices().count(), 0);
    assert_eq!(img.image().domains().count(), DOMAINS as usize);
}
