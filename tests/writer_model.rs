//! Random operation sequences against a simple model: after every step the
//! image's bytes hold exactly the model's objects, flags, reference counts
//! and links, and the reader accepts the image and reports exactly the
//! model's live objects and reference counts; abort gives back every page in
//! the promised order. The same with an allocator whose allocations and page
//! mappings fail at random steps, and with every operation failed at each
//! allocation and mapping it makes in turn: a failed operation leaves every
//! byte of the image as it was.
#![cfg(feature = "alloc")] // The tests allocate from MapAlloc.

mod writer_support;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::v1::*;
use iommu_flb_abi::reader::{self, Options};
use iommu_flb_abi::writer::*;
use std::cell::Cell;
use std::rc::Rc;

use iommu_flb_abi::PageMap;
use proptest::prelude::*;
use writer_support::{Dump, Faults, is_fault, pages_for, unchanged, walk};

#[derive(Clone, Debug)]
enum Op {
    Iommu {
        token: u64,
        intel: bool,
    },
    Domain {
        top: u64,
        vasz: u32,
        sign_extend: u8,
    },
    Device {
        seg: u32,
        devid: u32,
        dom: usize,
        iommu: usize,
        intel: bool,
        attach: u64,
    },
    UnDevice(usize),
    UnDomain(usize),
    UnIommu(usize),
}

/// One random operation. `wide` draws from key spaces large enough (and
/// preserves often enough) that every chain grows past one page.
fn op(wide: bool) -> impl Strategy<Value = Op> {
    let (tokens, devids, tops): (u64, u32, u64) = if wide { (48, 400, 16) } else { (4, 40, 4) };
    let (vasz_end, sign_end): (u32, u8) = if wide { (66, 2) } else { (67, 3) };
    let (w_dom, w_dev, w_un) = if wide { (9, 8, 1) } else { (2, 6, 3) };
    let index = || any::<prop::sample::Index>().prop_map(|i| i.index(usize::MAX));
    prop_oneof![
        2 => (0..tokens, any::<bool>()).prop_map(|(token, intel)| Op::Iommu { token, intel }),
        w_dom => (0..tops, 60..vasz_end, 0..sign_end).prop_map(|(t, vasz, sign_extend)| Op::Domain {
            // 0 is null, 1 unaligned, the rest valid.
            top: if t < 2 { t * 0x1001 } else { t * 0x4000 },
            vasz,
            sign_extend,
        }),
        w_dev => ((0u32..2, 0..devids), index(), index(), any::<bool>(), 0u64..2).prop_map(
            |((seg, devid), dom, iommu, intel, attach)| Op::Device {
                seg,
                devid,
                dom,
                iommu,
                intel,
                attach,
            }
        ),
        w_un => index().prop_map(Op::UnDevice),
        1 => index().prop_map(Op::UnDomain),
        1 => index().prop_map(Op::UnIommu),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum IommuState {
    Live(u32),
    Idle,
    Gone,
}

struct MIommu {
    h: IommuHandle,
    token: u64,
    ty: IommuTypeSer,
    state: IommuState,
}
struct MDomain {
    h: DomainHandle,
    init: DomainInit,
    deleted: bool,
}
struct MDevice {
    h: DeviceHandle,
    init: DeviceInit,
    dom: usize,
    iommu: usize,
    deleted: bool,
}

#[derive(Default)]
struct Model {
    iommus: Vec<MIommu>,
    domains: Vec<MDomain>,
    devices: Vec<MDevice>,
}

fn ty(intel: bool) -> IommuTypeSer {
    if intel {
        IommuTypeSer::IommuIntel
    } else {
        IommuTypeSer::IommuArmSmmuv3
    }
}

fn iommu_payload(intel: bool, token: u64) -> IommuPayloadInit {
    if intel {
        IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: PhysAddr::new(token),
            root_table: PhysAddr::new(0x77_0000),
            context_tables_bitmap: [token; 8],
        })
    } else {
        IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
            phys_addr: PhysAddr::new(token),
            strtab_base_cfg: 3,
            l1_strtab_lu_state: 4,
            l2_strtab_lu_states_phys: PhysAddr::new(0x5000),
        })
    }
}

fn device_payload(intel: bool) -> DevicePayloadInit {
    if intel {
        DevicePayloadInit::Intel(IntelDeviceInit {
            pasid_table: PhysAddr::new(0x9000),
            max_pasid: 20,
        })
    } else {
        DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
            l1_cdtab_lu_state: 1,
            num_l2_cdtables: 2,
            l2_cdtab_lu_states_phys: PhysAddr::new(0xa000),
        })
    }
}

/// The page a preserve of `kind` would need, if the chain's tail is full.
fn needs_page(slots: usize, cap: u64) -> bool {
    slots > 0 && slots % cap as usize == 0
}

/// The allocator failure `r` holds, if the operation would otherwise have
/// gone through (`accepted`): a page is taken only after every check.
fn fault(r: Result<(), WriteError>, accepted: bool) -> Result<Option<WriteError>, TestCaseError> {
    let e = r.err();
    if matches!(
        e,
        Some(WriteError::OutOfPages { .. } | WriteError::BadPage { .. })
    ) {
        prop_assert!(accepted, "a page was taken for an operation to refuse");
    }
    Ok(e)
}

/// Applies `op` to the writer and the model; returns an error message on any
/// disagreement. An allocation or mapping failure is returned (the model is
/// then unchanged; the caller checks the image is too).
fn step<A: PageAlloc, X: DeviceIndex>(
    w: &mut Writer<A, X>,
    m: &mut Model,
    op: &Op,
) -> Result<Option<WriteError>, TestCaseError> {
    // A failing allocator is the allocator's choice; the model only checks
    // a fresh page was asked for when one was needed, and only for an
    // operation it would accept (checks come before the page).
    let oom = |r: &Result<(), WriteError>, kind, slots, cap| -> Result<bool, TestCaseError> {
        match r {
            Err(WriteError::OutOfPages { purpose } | WriteError::BadPage { purpose, .. }) => {
                prop_assert_eq!(*purpose, PagePurpose::Chain(kind));
                prop_assert!(needs_page(slots, cap), "a page taken without needing one");
                Ok(true)
            }
            Err(e) => Ok(is_fault(e)),
            Ok(()) => Ok(false),
        }
    };
    // Operations that take no page fail only in a mapping.
    macro_rules! mapping_failure {
        ($got:expr) => {
            if let Err(e) = $got {
                if is_fault(&e) {
                    prop_assert!(matches!(e, WriteError::PageUnavailable { .. }), "{e}");
                    return Ok(Some(e));
                }
            }
        };
    }
    match *op {
        Op::Iommu { token, intel } => {
            let expect = m
                .iommus
                .iter()
                .find(|i| i.state != IommuState::Gone && i.token == token && i.ty == ty(intel))
                .map(|i| WriteError::DuplicateIommu {
                    token,
                    iommu_type: ty(intel),
                    existing: i.h.phys(),
                });
            let got = w.preserve_iommu(token, iommu_payload(intel, token));
            let r = got.map(|_| ());
            if oom(
                &r,
                ObjectKind::Iommu,
                m.iommus.len(),
                IOMMU_HW_ARRAY_CAPACITY_4K,
            )? {
                return fault(r, expect.is_none());
            }
            match (expect, got) {
                (Some(e), got) => prop_assert_eq!(got, Err(e)),
                (None, Ok(h)) => m.iommus.push(MIommu {
                    h,
                    token,
                    ty: ty(intel),
                    state: IommuState::Idle,
                }),
                (None, Err(e)) => prop_assert!(false, "unexpected {e}"),
            }
        }
        Op::Domain {
            top,
            vasz,
            sign_extend,
        } => {
            let init = DomainInit {
                top_table_phys: PhysAddr::new(top),
                top_level: 3,
                vasz,
                sign_extend,
            };
            let expect = if top == 0 || top % 4096 != 0 {
                Some(WriteError::InvalidDomain {
                    field: DomainField::TopTablePhys,
                    value: top,
                })
            } else if vasz > 64 {
                Some(WriteError::InvalidDomain {
                    field: DomainField::Vasz,
                    value: vasz.into(),
                })
            } else if sign_extend > 1 {
                Some(WriteError::InvalidDomain {
                    field: DomainField::SignExtend,
                    value: sign_extend.into(),
                })
            } else {
                None
            };
            let got = w.preserve_domain(init);
            let r = got.map(|_| ());
            if oom(
                &r,
                ObjectKind::Domain,
                m.domains.len(),
                IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
            )? {
                return fault(r, expect.is_none());
            }
            match (expect, got) {
                (Some(e), got) => prop_assert_eq!(got, Err(e)),
                (None, Ok(h)) => m.domains.push(MDomain {
                    h,
                    init,
                    deleted: false,
                }),
                (None, Err(e)) => prop_assert!(false, "unexpected {e}"),
            }
        }
        Op::Device {
            seg,
            devid,
            dom,
            iommu,
            intel,
            attach,
        } => {
            if m.domains.is_empty() || m.iommus.is_empty() {
                return Ok(None);
            }
            let (di, ii) = (dom % m.domains.len(), iommu % m.iommus.len());
            let init = DeviceInit {
                pci_domain_nr: seg,
                devid,
                dma_owner_token: 0xd0 + u64::from(devid),
                attachment_id: attach,
                payload: device_payload(intel),
            };
            let (d, i) = (&m.domains[di], &m.iommus[ii]);
            let dup = m
                .devices
                .iter()
                .find(|x| !x.deleted && x.init.pci_domain_nr == seg && x.init.devid == devid);
            let expect = if d.deleted {
                Some(WriteError::AttachToDeleted {
                    kind: ObjectKind::Domain,
                    phys: d.h.phys(),
                })
            } else if i.state == IommuState::Gone {
                Some(WriteError::AttachToDeleted {
                    kind: ObjectKind::Iommu,
                    phys: i.h.phys(),
                })
            } else if i.ty != ty(intel) {
                Some(WriteError::PayloadMismatch {
                    iommu: i.h.phys(),
                    iommu_type: i.ty,
                    payload_type: ty(intel),
                })
            } else {
                dup.map(|x| WriteError::DuplicateDevice {
                    pci_domain_nr: seg,
                    devid,
                    existing: x.h.phys(),
                })
            };
            let got = w.preserve_device(init, d.h, i.h);
            let r = got.map(|_| ());
            if oom(
                &r,
                ObjectKind::Device,
                m.devices.len(),
                IOMMU_DEVICE_ARRAY_CAPACITY_4K,
            )? {
                return fault(r, expect.is_none());
            }
            match (expect, got) {
                (Some(e), got) => prop_assert_eq!(got, Err(e)),
                (None, Ok(h)) => {
                    let st = &mut m.iommus[ii].state;
                    *st = match *st {
                        IommuState::Idle => IommuState::Live(1),
                        IommuState::Live(n) => IommuState::Live(n + 1),
                        IommuState::Gone => unreachable!(),
                    };
                    m.devices.push(MDevice {
                        h,
                        init,
                        dom: di,
                        iommu: ii,
                        deleted: false,
                    });
                }
                (None, Err(e)) => prop_assert!(false, "unexpected {e}"),
            }
        }
        Op::UnDevice(k) => {
            if m.devices.is_empty() {
                return Ok(None);
            }
            let n = m.devices.len();
            let x = &mut m.devices[k % n];
            let got = w.unpreserve_device(x.h);
            mapping_failure!(got);
            if x.deleted {
                prop_assert_eq!(
                    got,
                    Err(WriteError::AlreadyUnpreserved {
                        kind: ObjectKind::Device,
                        phys: x.h.phys()
                    })
                );
            } else {
                prop_assert_eq!(got, Ok(()));
                x.deleted = true;
                let st = &mut m.iommus[x.iommu].state;
                *st = match *st {
                    IommuState::Live(1) => IommuState::Idle,
                    IommuState::Live(n) => IommuState::Live(n - 1),
                    s => panic!("model: device behind {s:?}"),
                };
            }
        }
        Op::UnDomain(k) => {
            if m.domains.is_empty() {
                return Ok(None);
            }
            let di = k % m.domains.len();
            let d = &m.domains[di];
            let user = m.devices.iter().find(|x| !x.deleted && x.dom == di);
            let got = w.unpreserve_domain(d.h);
            mapping_failure!(got);
            if d.deleted {
                prop_assert_eq!(
                    got,
                    Err(WriteError::AlreadyUnpreserved {
                        kind: ObjectKind::Domain,
                        phys: d.h.phys()
                    })
                );
            } else if let Some(u) = user {
                prop_assert_eq!(
                    got,
                    Err(WriteError::DomainInUse {
                        domain: d.h.phys(),
                        device: u.h.phys()
                    })
                );
            } else {
                prop_assert_eq!(got, Ok(()));
                m.domains[di].deleted = true;
            }
        }
        Op::UnIommu(k) => {
            if m.iommus.is_empty() {
                return Ok(None);
            }
            let n = m.iommus.len();
            let i = &mut m.iommus[k % n];
            let got = w.unpreserve_iommu(i.h);
            mapping_failure!(got);
            let phys = i.h.phys();
            match i.state {
                IommuState::Gone => prop_assert_eq!(
                    got,
                    Err(WriteError::AlreadyUnpreserved {
                        kind: ObjectKind::Iommu,
                        phys
                    })
                ),
                IommuState::Live(devices) => {
                    prop_assert_eq!(
                        got,
                        Err(WriteError::IommuInUse {
                            iommu: phys,
                            devices
                        })
                    )
                }
                IommuState::Idle => {
                    prop_assert_eq!(got, Ok(()));
                    i.state = IommuState::Gone;
                }
            }
        }
    }
    Ok(None)
}

/// The image bytes hold exactly the model.
fn check_image(d: &Dump, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.iommus.records.len(), m.iommus.len());
    prop_assert_eq!(d.domains.records.len(), m.domains.len());
    prop_assert_eq!(d.devices.records.len(), m.devices.len());
    prop_assert_eq!(
        d.iommus.pages.len(),
        pages_for(m.iommus.len(), IOMMU_HW_ARRAY_CAPACITY_4K)
    );
    prop_assert_eq!(
        d.domains.pages.len(),
        pages_for(m.domains.len(), IOMMU_DOMAIN_ARRAY_CAPACITY_4K)
    );
    prop_assert_eq!(
        d.devices.pages.len(),
        pages_for(m.devices.len(), IOMMU_DEVICE_ARRAY_CAPACITY_4K)
    );
    for (r, i) in d.iommus.records.iter().zip(&m.iommus) {
        prop_assert_eq!(r.phys, i.h.phys());
        let hw = r.iommu();
        prop_assert_eq!(hw.token.get(), i.token);
        let (rc, flags, wire_ty) = match i.state {
            IommuState::Live(n) => (n, 0, i.ty.wire()),
            IommuState::Idle => (0, IOMMU_SER_FLAG_DELETED, i.ty.wire()),
            IommuState::Gone => (0, IOMMU_SER_FLAG_DELETED, 0),
        };
        prop_assert_eq!(
            (r.ref_count(), r.flags(), hw.r#type.get()),
            (rc, flags, wire_ty)
        );
    }
    for (r, x) in d.domains.records.iter().zip(&m.domains) {
        prop_assert_eq!(r.phys, x.h.phys());
        let dom = r.domain();
        let flags = if x.deleted { IOMMU_SER_FLAG_DELETED } else { 0 };
        prop_assert_eq!((r.ref_count(), r.flags()), (1, flags));
        prop_assert_eq!(dom.top_table_phys.get(), x.init.top_table_phys.get());
        prop_assert_eq!(dom.vasz.get(), x.init.vasz);
        prop_assert_eq!(dom.sign_extend, x.init.sign_extend);
        prop_assert_eq!((dom.padding, dom.restored_domain.get()), ([0; 3], 0));
    }
    for (r, x) in d.devices.records.iter().zip(&m.devices) {
        prop_assert_eq!(r.phys, x.h.phys());
        let dev = r.device();
        let flags = if x.deleted { IOMMU_SER_FLAG_DELETED } else { 0 };
        prop_assert_eq!((r.ref_count(), r.flags()), (1, flags));
        prop_assert_eq!(
            (dev.pci_domain_nr.get(), dev.devid.get()),
            (x.init.pci_domain_nr, x.init.devid)
        );
        let map = dev.domain_iommu_ser;
        prop_assert_eq!(map.domain_phys.get(), m.domains[x.dom].h.phys().get());
        prop_assert_eq!(map.iommu_phys.get(), m.iommus[x.iommu].h.phys().get());
        prop_assert_eq!(map.attachment_id.get(), x.init.attachment_id);
    }
    // The rule the reader enforces: a live IOMMU counts its live devices.
    for (k, i) in m.iommus.iter().enumerate() {
        let live = m
            .devices
            .iter()
            .filter(|x| !x.deleted && x.iommu == k)
            .count() as u32;
        match i.state {
            IommuState::Live(n) => prop_assert_eq!(n, live),
            _ => prop_assert_eq!(live, 0),
        }
    }
    Ok(())
}

/// The reader accepts the image and sees exactly the model's live objects,
/// their keys, links and reference counts, and finds each by its key.
fn check_reader(mem: &MapAlloc, root: PhysAddr, m: &Model) -> Result<(), TestCaseError> {
    let owned = reader::validate_alloc(mem, root, &Options::default())
        .map_err(|e| TestCaseError::fail(format!("reader refused a writer image: {e}")))?;
    let image = owned.image();

    let mut want: Vec<_> = m
        .iommus
        .iter()
        .filter_map(|i| match i.state {
            IommuState::Live(n) => Some((i.h.phys(), i.token, i.ty, n)),
            _ => None,
        })
        .collect();
    let mut got: Vec<_> = image
        .iommus()
        .map(|i| (i.phys(), i.token(), i.iommu_type(), i.ref_count()))
        .collect();
    want.sort_by_key(|w| w.0);
    got.sort_by_key(|g| g.0);
    prop_assert_eq!(&got, &want);
    for &(phys, token, ty, _) in &want {
        prop_assert_eq!(image.find_iommu(token, ty).map(|i| i.phys()), Some(phys));
    }

    let mut want: Vec<_> = m
        .domains
        .iter()
        .filter(|d| !d.deleted)
        .map(|d| d.h.phys())
        .collect();
    let mut got: Vec<_> = image.domains().map(|d| d.phys()).collect();
    want.sort();
    got.sort();
    prop_assert_eq!(&got, &want);

    let mut want: Vec<_> = m
        .devices
        .iter()
        .filter(|x| !x.deleted)
        .map(|x| {
            let key = (x.init.pci_domain_nr, x.init.devid);
            (
                x.h.phys(),
                key,
                m.domains[x.dom].h.phys(),
                m.iommus[x.iommu].h.phys(),
            )
        })
        .collect();
    let mut got: Vec<_> = image
        .devices()
        .map(|d| {
            (
                d.phys(),
                (d.segment(), d.devid()),
                d.domain().phys(),
                d.iommu().phys(),
            )
        })
        .collect();
    want.sort_by_key(|w| w.0);
    got.sort_by_key(|g| g.0);
    prop_assert_eq!(&got, &want);
    for &(phys, (seg, devid), _, _) in &want {
        prop_assert_eq!(image.find_device(seg, devid).map(|d| d.phys()), Some(phys));
    }
    Ok(())
}

/// Runs `ops` from `start`, checking image, reader and pages after each.
///
/// An operation that fails in the allocator (an allocation or a page
/// mapping `pages` was told to fail) must leave every byte of the image as
/// it was, the counts as they were, and the reader seeing exactly the model;
/// with `exhaustive`, each operation is first run once per allocation and
/// mapping it makes, failing that one, before it runs with nothing failing.
/// `disarm` stops all failures (before `abort`).
fn run<X: DeviceIndex, F: FnMut(u64) -> bool, G: FnMut(u64) -> bool>(
    pages: FailingAlloc<MapAlloc, F, G>,
    exhaustive: Option<&Faults>,
    disarm: &dyn Fn(),
    index: X,
    ops: &[Op],
) -> Result<u64, TestCaseError> {
    let injected = |p: &FailingAlloc<MapAlloc, F, G>| p.failures() + p.map_failures();
    let mut pages = pages;
    let mut w = match Writer::with_index(&mut pages, index) {
        Ok(w) => w,
        Err(e) => {
            // Start fails only in the allocator, and gives back all it took.
            prop_assert!(is_fault(&e), "{e}");
            unchanged(&PageMap::new(), pages.inner(), &e).map_err(TestCaseError::fail)?;
            return Ok(injected(&pages));
        }
    };
    let mut m = Model::default();
    // Pages the writer refused (BadPage) and left with the allocator.
    let mut refused = Vec::new();
    for op in ops {
        let mut before = w.alloc().inner().map().clone();
        let counts = w.counts();
        for k in 0.. {
            if let Some(f) = exhaustive {
                f.arm(Some(k));
            }
            let n = injected(w.alloc());
            let fault = step(&mut w, &mut m, op)?;
            let hit = injected(w.alloc()) > n;
            prop_assert_eq!(hit, fault.is_some(), "{:?}: fault {:?}", op, fault);
            let Some(e) = fault else { break };
            unchanged(&before, w.alloc().inner(), &e).map_err(TestCaseError::fail)?;
            prop_assert_eq!(w.counts(), counts);
            if let WriteError::BadPage { phys, .. } = e {
                refused.push(phys);
                before = w.alloc().inner().map().clone();
            }
            if !cfg!(miri) {
                check_reader(w.alloc().inner(), w.root(), &m)?;
            }
            if exhaustive.is_none() {
                break;
            }
        }
        if let Some(f) = exhaustive {
            f.arm(None);
        }
        let d = walk(w.alloc().inner(), w.root());
        check_image(&d, &m)?;
        if !cfg!(miri) {
            // Under miri, once at the end (below): a validation per step is slow there.
            check_reader(w.alloc().inner(), w.root(), &m)?;
        }
        // Every page the allocator holds is in the image or was refused,
        // and vice versa.
        let mut held: Vec<_> = w.alloc().inner().map().iter().map(|(p, _)| p).collect();
        let mut pages = d.all_pages();
        prop_assert_eq!(w.counts().pages, pages.len() as u64);
        pages.extend(&refused);
        held.sort();
        pages.sort();
        prop_assert_eq!(&held, &pages);
    }
    check_reader(w.alloc().inner(), w.root(), &m)?;
    let d = walk(w.alloc().inner(), w.root());
    disarm();
    let freed_before = w.alloc().inner().freed().len();
    let pages = w.abort();
    let mut left: Vec<_> = pages.inner().map().iter().map(|(p, _)| p).collect();
    left.sort();
    refused.sort();
    prop_assert_eq!(left, refused, "abort left pages behind");
    prop_assert_eq!(
        pages.inner().freed().get(freed_before..),
        Some(&d.abort_order()[..])
    );
    Ok(injected(pages))
}

const CASES: u32 = if cfg!(miri) { 4 } else { 48 };
const OPS: usize = if cfg!(miri) { 16 } else { 700 };
/// The exhaustive runs make every operation several times over.
const EXHAUSTIVE_CASES: u32 = if cfg!(miri) { 2 } else { 16 };
const EXHAUSTIVE_OPS: usize = if cfg!(miri) { 12 } else { 400 };

/// `cases` new cases, after the saved regressions natively. Under miri
/// the saved seeds would replay through its shorter operation lists, so
/// they would be other random cases, each minutes long there: it runs only
/// the new ones.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if cfg!(miri) {
        c.failure_persistence = None;
    }
    c
}

fn alloc_for(scatter: Option<u64>) -> MapAlloc {
    match scatter {
        Some(seed) => MapAlloc::scattered(seed),
        None => MapAlloc::sequential(PhysAddr::new(0x100_0000)),
    }
}

/// Allocations and page mappings `start` makes (root and three chain
/// heads; each head checked zeroed, then the root written).
const START_ALLOCS: u64 = 4;
const START_MAPS: u64 = 5;

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn image_bytes_match_the_model_after_every_operation(
        ops in any::<bool>().prop_flat_map(|wide| {
            prop::collection::vec(op(wide), if wide { OPS / 2..OPS } else { 0..OPS })
        }),
        scatter in prop::option::of(any::<u64>()),
        indexed in any::<bool>(),
    ) {
        let pages = FailingAlloc::new(alloc_for(scatter), |_| false);
        if indexed {
            let mut slots = vec![IndexSlot::empty(); 1000];
            run(pages, None, &|| {}, SliceIndex::new(&mut slots), &ops)?;
        } else {
            run(pages, None, &|| {}, NoIndex, &ops)?;
        }
    }

    #[test]
    fn random_allocation_and_mapping_failures_change_nothing_and_every_page_is_accounted_for(
        ops in prop::collection::vec(op(true), OPS / 2..OPS),
        scatter in prop::option::of(any::<u64>()),
        seed in any::<u64>(),
        one_in in 1u64..4,
        maps_one_in in 2u64..8,
        fail_start in prop::bool::weighted(0.2),
    ) {
        let on = Rc::new(Cell::new(true));
        let (a, b) = (on.clone(), on.clone());
        let mut allocs = random_failures(seed, one_in);
        let mut maps = random_failures(seed.rotate_left(17), maps_one_in);
        let pages = FailingAlloc::new(alloc_for(scatter), move |step| {
            a.get() && (fail_start || step >= START_ALLOCS) && allocs(step)
        })
        .failing_maps(move |step| b.get() && (fail_start || step >= START_MAPS) && maps(step));
        run(pages, None, &|| on.set(false), NoIndex, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(EXHAUSTIVE_CASES))]

    #[test]
    fn every_operation_fails_whole_at_each_allocation_and_mapping_it_makes(
        ops in prop::collection::vec(op(true), EXHAUSTIVE_OPS / 2..EXHAUSTIVE_OPS),
        scatter in prop::option::of(any::<u64>()),
        indexed in any::<bool>(),
    ) {
        let (pages, faults) = Faults::wrap(alloc_for(scatter));
        let disarm = || faults.arm(None);
        if indexed {
            let mut slots = vec![IndexSlot::empty(); 1000];
            run(pages, Some(&faults), &disarm, SliceIndex::new(&mut slots), &ops)?;
        } else {
            run(pages, Some(&faults), &disarm, NoIndex, &ops)?;
        }
    }
}
