//! The seed corpus under `seeds/<target>/`, written by these tests.
//!
//! Seeds are values of the targets' input types, encoded: for `raw`, flat
//! dumps of images the writer built and of the reader tests' corrupt
//! images (built with the reader tests' own image builder,
//! `tests/common/mod.rs`); for `mutate` and `roundtrip`, operation
//! sequences and corruptions; for `load`, dump files as the tool's `gen`
//! writes them (its own `write_core`), whole and damaged. Each seed is checked to do what its name
//! says (accepted, or refused with the named error) and run through its
//! target. `seeds_on_disk_are_current` fails if the files differ from what
//! this module generates; `FUZZ_WRITE_SEEDS=1 cargo test` rewrites them.

use std::path::PathBuf;

use iommu_flb_abi::abi::v1::IOMMU_SER_FLAG_INCOMING;
use iommu_flb_abi::error::{Chain, ErrorKind};
use iommu_flb_abi::reader::{Limits, Mode};
use iommu_flb_abi::{FlatMemory, PageMap, PhysAddr};

use crate::check::{validate_both, validate_checked};
use crate::image::{Layout, build, corrupt, flatten};
use iommu_flb_cli::elfcore::write_core;

use crate::capi::Stats;
use crate::input::{
    CapiInput, CapiOp, Corruption, Encode, Fault, FileFormat, LimitsByte, LoadInput, MutateInput,
    Op, PageOrder, RawInput, RoundtripInput, Spoil,
};
use crate::targets;

#[path = "../../tests/common/mod.rs"]
#[allow(clippy::all, unused_imports)]
mod common;

/// What validating a `raw` seed must give (handover mode, its limits).
#[derive(Clone, Copy, Debug)]
enum Expect {
    Accepted,
    Refused(fn(&ErrorKind) -> bool),
}

/// Dumps over this many bytes are not seeds (they slow the fuzzer).
const MAX_DUMP: usize = 32 * 4096;

fn raw_seed(mem: &PageMap, root: PhysAddr, limits: u8) -> Vec<u8> {
    let (base, dump) = flatten(mem, MAX_DUMP).expect("a small contiguous image");
    let root_offset = u16::try_from(root.get() - base.get()).expect("root near the base");
    RawInput {
        base: base.get(),
        root_offset,
        limits: LimitsByte(limits),
        dump: &dump,
    }
    .to_bytes()
}

fn seq() -> PageOrder {
    PageOrder::Sequential { base: 0x100 }
}

/// Two IOMMUs (Intel, SMMUv3), three domains, four devices; one device and
/// one domain unpreserved again.
fn small_ops() -> Vec<Op> {
    let mut ops = vec![
        Op::Iommu {
            token: 1,
            intel: true,
        },
        Op::Iommu {
            token: 2,
            intel: false,
        },
        Op::Domains { n: 3 },
    ];
    for (devid, iommu) in [(0x0100u16, 0u8), (0x0101, 1), (0x0200, 0), (0x0201, 1)] {
        ops.push(Op::Device {
            seg: 0,
            devid,
            domain: (devid & 3) as u8,
            iommu,
            intel: iommu == 0,
            attachment: if iommu == 0 { 5 } else { 0 },
        });
    }
    ops.extend([Op::UnDevice(3), Op::Domains { n: 1 }, Op::UnDomain(3)]);
    ops
}

/// Every chain past one page: 37 IOMMUs, 103 domains, 57 devices.
fn multi_page_ops() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..37)
        .map(|t| Op::Iommu {
            token: t,
            intel: t % 2 == 0,
        })
        .collect();
    ops.push(Op::Domains { n: 103 });
    for t in 0..37u8 {
        ops.push(Op::Devices {
            n: if t == 0 { 21 } else { 1 },
            seg: t / 8,
            devid: u16::from(t) << 8,
            domain: t,
            iommu: t,
        });
    }
    ops
}

/// The `raw` seeds: name, bytes, expected outcome.
fn raw_seeds() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut v = Vec::new();
    let writer = |ops: &[Op]| build(seq(), ops);

    let empty = writer(&[]);
    v.push((
        "writer-empty",
        raw_seed(&empty.mem, empty.root, 0),
        Expect::Accepted,
    ));
    let small = writer(&small_ops());
    v.push((
        "writer-small",
        raw_seed(&small.mem, small.root, 0),
        Expect::Accepted,
    ));
    let multi = writer(&multi_page_ops());
    v.push((
        "writer-multi-page",
        raw_seed(&multi.mem, multi.root, 0),
        Expect::Accepted,
    ));
    // Limits of 1 page per chain and 8 objects: refused for a limit.
    v.push((
        "writer-multi-page-small-limits",
        raw_seed(&multi.mem, multi.root, (2 << 3) | 1),
        Expect::Refused(|k| matches!(k, ErrorKind::LimitExceeded { .. })),
    ));

    // After restore: INCOMING on a device, so only restored mode accepts.
    let mut restored = small.clone();
    // Pages from 0x10_0000: root, IOMMU, domain, device chain heads; the
    // first device's flags are 4 bytes into its record, after the header.
    let device_page = restored
        .mem
        .page_mut(PhysAddr::new(0x10_3000))
        .expect("device page");
    device_page[16 + 4..16 + 8].copy_from_slice(&IOMMU_SER_FLAG_INCOMING.to_le_bytes());
    v.push((
        "writer-small-restored",
        raw_seed(&restored.mem, restored.root, 0),
        Expect::Refused(|k| *k == ErrorKind::AlreadyRestored),
    ));

    // The reader tests' images, built by their own builder, and corrupted
    // as their mangle tests do.
    use common::{Spec, off};
    let plus = |p: PhysAddr, n: usize| PhysAddr::new(p.get() + n as u64);
    let base = || Spec::simple(2, 3, 4).build();
    let mut moved = Spec::simple(2, 3, 4);
    moved.root_offset = 4096 - 32;
    let img = moved.build();
    // The root must start its page.
    v.push((
        "reader-root-at-page-end",
        raw_seed(&img.mem, img.root, 0),
        Expect::Refused(|k| matches!(k, ErrorKind::Unaligned { .. })),
    ));

    let mut img = Spec::simple(2, 3, 112).build();
    let last = img.page(Chain::Device, 1);
    let first = img.page(Chain::Device, 0).get();
    img.put_u64(plus(last, off::NEXT), first);
    v.push((
        "reader-device-chain-cycle",
        raw_seed(&img.mem, img.root, 0),
        Expect::Refused(|k| matches!(k, ErrorKind::Cycle { .. })),
    ));

    let mut img = base();
    let head = img.page(Chain::Iommu, 0).get();
    img.put_u64(plus(img.root, off::ROOT_DOMAIN), head);
    v.push((
        "reader-page-reused",
        raw_seed(&img.mem, img.root, 0),
        Expect::Refused(|k| matches!(k, ErrorKind::PageReused { .. })),
    ));

    let mut img = base();
    let target = img.record(Chain::Iommu, 1).get();
    img.put_u64(img.field(Chain::Device, 0, off::DEV_DOMAIN), target);
    v.push((
        "reader-device-names-an-iommu-as-domain",
        raw_seed(&img.mem, img.root, 0),
        Expect::Refused(|k| matches!(k, ErrorKind::BadReference { .. })),
    ));

    let mut img = base();
    img.put_u32(img.field(Chain::Iommu, 0, off::REF_COUNT), 3);
    v.push((
        "reader-ref-count-mismatch",
        raw_seed(&img.mem, img.root, 0),
        Expect::Refused(|k| matches!(k, ErrorKind::RefCountMismatch { .. })),
    ));

    v
}

fn mutate_seeds() -> Vec<(&'static str, MutateInput)> {
    let with = |order, mode, corruptions: Vec<Corruption>, ops: Vec<Op>| MutateInput {
        order,
        mode,
        corruptions,
        ops,
    };
    let small = small_ops();
    let multi = multi_page_ops();
    let scattered = PageOrder::Scattered { seed: 0x5eed };
    vec![
        (
            "small-intact",
            with(seq(), Mode::Handover, vec![], small.clone()),
        ),
        (
            "small-bit-flip-in-device",
            with(
                scattered,
                Mode::Handover,
                vec![Corruption::FlipBit {
                    page: 3,
                    byte: 16 + 32,
                    bit: 3,
                }],
                small.clone(),
            ),
        ),
        (
            "small-device-page-links-to-itself",
            with(
                seq(),
                Mode::Handover,
                vec![Corruption::Relink {
                    from: 3,
                    head: 0,
                    to: 3,
                }],
                small.clone(),
            ),
        ),
        (
            "multi-page-device-cycle",
            with(
                seq(),
                Mode::Handover,
                vec![Corruption::Relink {
                    from: 6,
                    head: 0,
                    to: 5,
                }],
                multi.clone(),
            ),
        ),
        (
            "small-domain-pointer-at-an-iommu",
            with(
                seq(),
                Mode::Restored,
                vec![Corruption::Retarget {
                    device: 1,
                    iommu: false,
                    chain: 0,
                    index: 1,
                }],
                small.clone(),
            ),
        ),
        (
            "small-root-swapped-with-a-chain-page",
            with(
                seq(),
                Mode::Handover,
                vec![Corruption::SwapPages { a: 0, b: 2 }],
                small.clone(),
            ),
        ),
        (
            "multi-page-header-and-count",
            with(
                scattered,
                Mode::Handover,
                vec![
                    Corruption::SetHeader {
                        chain: 0,
                        index: 4,
                        ref_count: 9,
                        flags: 0,
                    },
                    Corruption::SetCount { page: 4, value: 5 },
                ],
                multi.clone(),
            ),
        ),
        (
            "multi-page-dropped-and-redirected",
            with(
                seq(),
                Mode::Handover,
                vec![
                    Corruption::DropPage { page: 6 },
                    Corruption::Redirect {
                        page: 0,
                        offset: 16,
                        target: 4,
                        target_off: 0,
                    },
                    Corruption::CopyPage { from: 1, to: 2 },
                ],
                multi,
            ),
        ),
    ]
}

fn roundtrip_seeds() -> Vec<(&'static str, RoundtripInput)> {
    let with = |order, slice_index, fail_mask, ops: Vec<Op>| RoundtripInput {
        order,
        slice_index,
        fail_mask,
        ops,
    };
    let mut checked = small_ops();
    checked.insert(3, Op::Check);
    checked.push(Op::Check);
    let churn = vec![
        Op::Iommu {
            token: 3,
            intel: false,
        },
        Op::Domain {
            top: 9,
            unaligned: false,
            level: 3,
            vasz: 39,
            sign_extend: 1,
        },
        Op::Devices {
            n: 4,
            seg: 1,
            devid: 0x10,
            domain: 0,
            iommu: 0,
        },
        Op::UnDevice(0),
        Op::UnDevice(1),
        Op::Check,
        Op::UnDevice(2),
        Op::UnDevice(3),
        Op::UnIommu(0),
        Op::Check,
        Op::Device {
            seg: 1,
            devid: 0x10,
            domain: 0,
            iommu: 0,
            intel: false,
            attachment: 0,
        },
        Op::Iommu {
            token: 3,
            intel: false,
        },
        Op::Devices {
            n: 2,
            seg: 1,
            devid: 0x10,
            domain: 0,
            iommu: 1,
        },
        Op::UnDomain(0),
        Op::UnIommu(1),
    ];
    let refusals = vec![
        Op::Iommu {
            token: 5,
            intel: true,
        },
        Op::Iommu {
            token: 5,
            intel: true,
        },
        Op::Iommu {
            token: 5,
            intel: false,
        },
        Op::Domain {
            top: 0,
            unaligned: false,
            level: 4,
            vasz: 48,
            sign_extend: 0,
        },
        Op::Domain {
            top: 7,
            unaligned: true,
            level: 4,
            vasz: 48,
            sign_extend: 0,
        },
        Op::Domain {
            top: 7,
            unaligned: false,
            level: 4,
            vasz: 65,
            sign_extend: 0,
        },
        Op::Domain {
            top: 7,
            unaligned: false,
            level: 4,
            vasz: 64,
            sign_extend: 2,
        },
        Op::Domains { n: 1 },
        Op::Device {
            seg: 0,
            devid: 1,
            domain: 0,
            iommu: 0,
            intel: false,
            attachment: 0,
        },
        Op::Device {
            seg: 0,
            devid: 1,
            domain: 0,
            iommu: 1,
            intel: false,
            attachment: 3,
        },
        Op::Device {
            seg: 0,
            devid: 1,
            domain: 0,
            iommu: 0,
            intel: true,
            attachment: 3,
        },
        Op::Device {
            seg: 0,
            devid: 1,
            domain: 0,
            iommu: 1,
            intel: false,
            attachment: 0,
        },
        Op::UnIommu(0),
        Op::UnDomain(0),
        Op::Check,
    ];
    vec![
        ("small-checked", with(seq(), false, 0, checked)),
        (
            "churn-idle-iommu-revived",
            with(PageOrder::Scattered { seed: 77 }, true, 0, churn),
        ),
        ("refusals", with(seq(), false, 0, refusals)),
        (
            "multi-page-slice-index",
            with(seq(), true, 0, multi_page_ops()),
        ),
        (
            "multi-page-allocation-failures",
            with(seq(), false, (1 << 6) | (1 << 9), multi_page_ops()),
        ),
    ]
}

/// The `load` seeds: dump files as the tool's `gen` writes them (ELF64
/// cores with the root in an `IOMMUFLB` note, from the tool's own
/// `write_core`; a flat dump), with the options the tool takes, and whether
/// the image in them is accepted.
fn load_seeds() -> Vec<(&'static str, Vec<u8>, bool)> {
    let core = |b: &crate::image::Built| {
        write_core(b.mem.iter(), b.root).expect("the tool writes a core file")
    };
    let small = build(seq(), &small_ops());
    let scattered = build(PageOrder::Scattered { seed: 9 }, &multi_page_ops());
    let small_core = core(&small);
    let (base, flat) = flatten(&small.mem, MAX_DUMP).expect("contiguous");
    let input = |format, base: Option<u64>, root: Option<u64>, file: &[u8]| {
        LoadInput {
            format,
            base,
            root,
            file,
        }
        .to_bytes()
    };
    vec![
        (
            "elf-small-with-root-note",
            input(FileFormat::Auto, None, None, &small_core),
            true,
        ),
        (
            "elf-scattered-multi-page",
            input(FileFormat::Elf, None, None, &core(&scattered)),
            true,
        ),
        (
            "elf-root-given-off-by-8",
            input(
                FileFormat::Auto,
                None,
                Some(small.root.get() + 8),
                &small_core,
            ),
            false,
        ),
        (
            "elf-truncated-program-headers",
            input(FileFormat::Auto, None, None, &small_core[..100]),
            false,
        ),
        (
            "flat-small-with-base-and-root",
            input(
                FileFormat::Phys,
                Some(base.get()),
                Some(small.root.get()),
                &flat,
            ),
            true,
        ),
    ]
}

/// A writer session for the `capi` seeds: 2 IOMMUs (Intel, SMMUv3), 3
/// domains, 4 devices, one unpreserved.
fn capi_objects() -> Vec<CapiOp> {
    let none = Fault::default();
    let mut v = vec![
        CapiOp::Iommu {
            token: 1,
            intel: true,
            fault: none,
        },
        CapiOp::Iommu {
            token: 2,
            intel: false,
            fault: none,
        },
    ];
    for top in 1..=3 {
        v.push(CapiOp::Domain {
            top,
            vasz: 48,
            fault: none,
        });
    }
    for devid in 0..4 {
        v.push(CapiOp::Device {
            seg: 0,
            devid,
            domain: devid,
            iommu: devid,
            attachment: 0,
            fault: none,
        });
    }
    v.push(CapiOp::UnDevice(3, none));
    v
}

/// Every walk, lookup and restore of scratch `s`, on cursors 0 to 3.
fn capi_reads(s: u8) -> Vec<CapiOp> {
    let mut v: Vec<CapiOp> = (0..4)
        .map(|k| CapiOp::Walk {
            scratch: s,
            cursor: k,
            kind: k,
            steps: 16,
        })
        .collect();
    v.extend((0..5).map(|which| CapiOp::Lookup {
        scratch: s,
        which,
        index: 1,
    }));
    v.push(CapiOp::Restore {
        scratch: s,
        fail_at: 2,
    });
    v.push(CapiOp::Restore {
        scratch: s,
        fail_at: 200,
    });
    v
}

fn validate(s: u8) -> CapiOp {
    CapiOp::Validate {
        scratch: s,
        mode: 0,
        delta: 0,
        mem_fail: 0,
    }
}

/// A `capi` seed: name, input, and what running it must exercise.
type CapiSeed = (&'static str, CapiInput, fn(&Stats) -> bool);

/// The `capi` seeds.
fn capi_seeds() -> Vec<CapiSeed> {
    let start = CapiOp::Start { indexed: false };
    let none = Fault::default();
    let mut v: Vec<CapiSeed> = Vec::new();

    let mut ops = vec![start];
    ops.extend(capi_objects());
    ops.extend([CapiOp::Counts, CapiOp::Finish, CapiOp::Publish, validate(0)]);
    ops.extend(capi_reads(0));
    v.push(("write-publish-read", CapiInput { ops }, |s| {
        s.writer_calls == 10
            && s.validated == 1
            && s.refused == 0
            && s.walked == 12
            && s.lookups == 7
    }));

    // The adopting kernel's INCOMING makes a re-validation in handover
    // mode fail: the first image in that scratch is gone (-ESTALE), the
    // other scratch's image is not; its cursor goes on.
    let mut ops = vec![start];
    ops.extend(capi_objects());
    ops.extend([CapiOp::Finish, CapiOp::Publish, validate(0), validate(1)]);
    ops.extend([
        CapiOp::Walk {
            scratch: 1,
            cursor: 1,
            kind: 2,
            steps: 1,
        },
        CapiOp::SetIncoming(0),
        validate(0),
        CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 2,
            steps: 4,
        },
        CapiOp::Walk {
            scratch: 1,
            cursor: 1,
            kind: 2,
            steps: 4,
        },
        CapiOp::Restore {
            scratch: 0,
            fail_at: 0,
        },
        CapiOp::CopyImage(1),
        CapiOp::Validate {
            scratch: 0,
            mode: 1,
            delta: 0,
            mem_fail: 0,
        },
    ]);
    ops.extend(capi_reads(0));
    v.push((
        "failed-revalidation-kills-the-image",
        CapiInput { ops },
        |s| {
            s.refused == 1
                && s.validated == 4
                && s.stale == 3
                && s.walked == 12
                && s.image_copies == 1
        },
    ));

    // A cursor of an earlier image in the same scratch, and of another walk.
    let mut ops = vec![start];
    ops.extend(capi_objects());
    ops.extend([
        CapiOp::Finish,
        CapiOp::Publish,
        validate(0),
        CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 0,
            steps: 1,
        },
        CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 2,
            steps: 1,
        },
        validate(0),
        CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 0,
            steps: 1,
        },
        CapiOp::ResetCursor(0),
        CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 0,
            steps: 4,
        },
    ]);
    // One IOMMU, the device walk on the IOMMU walk's cursor refused, the
    // cursor -ESTALE after re-validation, then both IOMMUs on a reset one.
    v.push(("stale-and-foreign-cursors", CapiInput { ops }, |s| {
        s.stale == 1 && s.walked == 3
    }));

    // Scratch sizes off by some elements, and page callbacks failing.
    let mut ops = vec![start];
    ops.extend(capi_objects());
    ops.extend([CapiOp::Finish, CapiOp::Publish]);
    for (delta, mem_fail) in [(-1, 0), (0, 1), (0, 3), (1, 0), (-100, 0), (5, 0)] {
        ops.push(CapiOp::Validate {
            scratch: 0,
            mode: 0,
            delta,
            mem_fail,
        });
        ops.push(CapiOp::Walk {
            scratch: 0,
            cursor: 0,
            kind: 1,
            steps: 2,
        });
        ops.push(CapiOp::ResetCursor(0));
    }
    // One element short, the root's and a chain page's read failing, and
    // 100 short refuse; 1 and 5 spare accept. Every walk after a refusal is
    // -ESTALE.
    v.push(("short-scratch-and-failing-reads", CapiInput { ops }, |s| {
        s.validated == 6 && s.refused == 4 && s.stale == 4
    }));

    // Spoiled handles of every kind and way, a copied writer, a second start.
    let mut ops = vec![start];
    ops.extend(capi_objects());
    for which in 0..3 {
        for spoil in [
            Spoil::Moved(1),
            Spoil::Swapped(1),
            Spoil::Flipped(9),
            Spoil::WrongKind,
            Spoil::OtherWriter,
        ] {
            for call in 0..2 {
                ops.push(CapiOp::Misuse { which, spoil, call });
            }
        }
    }
    ops.extend([CapiOp::CopyCall, start, CapiOp::Counts, CapiOp::Finish]);
    // Handles of that session against the next one.
    ops.push(CapiOp::Start { indexed: true });
    ops.extend(capi_objects());
    for which in 0..3 {
        ops.push(CapiOp::Misuse {
            which,
            spoil: Spoil::EarlierStart(which),
            call: 0,
        });
    }
    ops.push(CapiOp::Abort);
    v.push((
        "spoiled-handles-and-copied-writers",
        CapiInput { ops },
        |s| s.misuse_refused == 33 && s.copies_refused == 2,
    ));

    // A stale copy put back: appends to the chains it does not know fail,
    // to the others succeed.
    let mut ops = vec![start];
    ops.extend(capi_objects());
    ops.extend([
        CapiOp::Snapshot,
        CapiOp::Domain {
            top: 9,
            vasz: 48,
            fault: none,
        },
        CapiOp::PutBack,
        CapiOp::Domain {
            top: 10,
            vasz: 48,
            fault: none,
        },
        CapiOp::Iommu {
            token: 5,
            intel: true,
            fault: none,
        },
        CapiOp::UnDomain(3, none),
        CapiOp::Misuse {
            which: 1,
            spoil: Spoil::Moved(0),
            call: 0,
        },
        CapiOp::Finish,
        CapiOp::Publish,
        validate(1),
    ]);
    ops.extend(capi_reads(1));
    // The domain chain was appended to after the copy: its append fails;
    // the IOMMU chain's succeeds; the image stays valid (2 IOMMUs, 3
    // domains: the one appended after the copy is unpreserved, 3 devices,
    // 4 pages walked).
    v.push(("stale-copy-put-back", CapiInput { ops }, |s| {
        s.stale_refused == 1
            && s.misuse_refused == 1
            && s.validated == 1
            && s.refused == 0
            && s.walked == 12
    }));

    // Allocation and page-mapping failures in the middle of operations,
    // the same for the C and the Rust writer.
    let mut ops = vec![CapiOp::Start { indexed: true }];
    ops.extend(capi_objects());
    for i in 0..8u8 {
        let fault = Fault(if i % 2 == 0 { 0x80 } else { 1 + i });
        ops.push(CapiOp::Domain {
            top: 20 + i,
            vasz: 48,
            fault,
        });
        ops.push(CapiOp::Device {
            seg: 1,
            devid: i,
            domain: i,
            iommu: i,
            attachment: 0,
            fault,
        });
        ops.push(CapiOp::UnDevice(i, Fault(1 + i)));
    }
    // Past the first device page with every allocation failing: the
    // device that needs a new page, and every one after it, is refused.
    for devid in 0..60 {
        ops.push(CapiOp::Device {
            seg: 2,
            devid,
            domain: devid,
            iommu: devid,
            attachment: 0,
            fault: if devid >= 30 { Fault(0x80) } else { none },
        });
    }
    ops.extend([CapiOp::Counts, CapiOp::Abort]);
    // How many of the page-mapping failures hit a page the operation needs
    // depends on the writer's order of accesses; what matters is that the
    // C and the Rust writer agreed on every one (checked by the run).
    v.push(("callbacks-failing-mid-operation", CapiInput { ops }, |s| {
        s.writer_calls == 94 && s.writer_refusals >= 8
    }));
    v
}

/// Every seed: target, file name, bytes.
fn all_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v = Vec::new();
    for (name, bytes, _) in raw_seeds() {
        v.push(("raw", name.to_string(), bytes));
    }
    for (name, input) in mutate_seeds() {
        v.push(("mutate", name.to_string(), input.to_bytes()));
    }
    for (name, input) in roundtrip_seeds() {
        v.push(("roundtrip", name.to_string(), input.to_bytes()));
    }
    for (name, bytes, _) in load_seeds() {
        v.push(("load", name.to_string(), bytes));
    }
    for (name, input, _) in capi_seeds() {
        v.push(("capi", name.to_string(), input.to_bytes()));
    }
    v
}

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

#[test]
fn raw_seeds_are_accepted_or_refused_as_named() {
    use arbitrary::{Arbitrary, Unstructured};
    for (name, bytes, expect) in raw_seeds() {
        let input = RawInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        let mem = FlatMemory::new(PhysAddr::new(input.base), input.dump);
        let root = PhysAddr::new(input.root());
        let got = validate_checked(&mem, root, Mode::Handover, input.limits.limits());
        match (expect, &got) {
            (Expect::Accepted, Ok(_)) => {}
            (Expect::Refused(is), Err(e)) if is(&e.kind()) => {}
            (_, got) => panic!("seed {name}: {got:?}"),
        }
        targets::raw(&input);
    }
}

#[test]
fn mutate_seeds_run_and_only_the_intact_one_is_accepted() {
    for (name, input) in mutate_seeds() {
        targets::mutate(&input);
        let mut built = build(input.order, &input.ops);
        let layout = Layout::walk(&built.mem, built.root, 64).expect("walkable");
        for c in &input.corruptions {
            corrupt(&mut built.mem, &layout, c);
        }
        let got = validate_both(&built.mem, built.root, Limits::default());
        assert_eq!(got.is_ok(), input.corruptions.is_empty(), "{name}: {got:?}");
    }
}

#[test]
fn multi_page_seed_fills_every_chain_past_a_page() {
    let built = build(seq(), &multi_page_ops());
    let s = validate_both(&built.mem, built.root, Limits::default()).expect("valid");
    assert_eq!(s.pages.len(), 1 + 2 + 2 + 2, "root + two pages per chain");
    assert_eq!(s.live.map(|l| l.len()), [37, 104 - 1, 57]);
}

#[test]
fn roundtrip_seeds_agree_with_the_model() {
    for (_, input) in roundtrip_seeds() {
        targets::roundtrip(&input);
    }
}

#[test]
fn load_seeds_load_and_validate_as_named() {
    use arbitrary::{Arbitrary, Unstructured};
    use iommu_flb_cli::load::{LoadOptions, load};
    for (name, bytes, valid) in load_seeds() {
        let input = LoadInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        let opts = LoadOptions {
            format: match input.format {
                FileFormat::Auto => iommu_flb_cli::load::Format::Auto,
                FileFormat::Elf => iommu_flb_cli::load::Format::Elf,
                FileFormat::Phys => iommu_flb_cli::load::Format::Phys,
            },
            base: input.base.map(PhysAddr::new),
        };
        let got = load(input.file, opts).ok().and_then(|dump| {
            let root = input
                .root
                .map(PhysAddr::new)
                .or(dump.root_note().ok().flatten())?;
            Some(validate_both(&dump, root, Limits::default()).is_ok())
        });
        assert_eq!(got.unwrap_or(false), valid, "{name}");
        targets::load(&input);
    }
}

#[test]
fn capi_seeds_agree_with_the_models_and_reach_what_they_are_named_for() {
    use arbitrary::{Arbitrary, Unstructured};
    for (name, input, reached) in capi_seeds() {
        let bytes = input.to_bytes();
        let back = CapiInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(back, input, "{name}");
        let stats = crate::capi::run(&input);
        if std::env::var_os("CAPI_STATS").is_some() {
            eprintln!("{name}: {stats:?}");
            continue;
        }
        assert!(reached(&stats), "{name}: {stats:?}");
    }
}

#[test]
fn seeds_on_disk_are_current() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    let mut stale = Vec::new();
    for (target, name, bytes) in all_seeds() {
        let path = seeds_dir().join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(format!("{target}/{name}"));
        }
    }
    // No file that this module does not generate.
    let names: Vec<String> = all_seeds()
        .into_iter()
        .map(|(t, n, _)| format!("{t}/{n}"))
        .collect();
    for target in ["raw", "mutate", "roundtrip", "load", "capi"] {
        for entry in std::fs::read_dir(seeds_dir().join(target)).expect("seeds dir") {
            let name = entry.expect("entry").file_name();
            let key = format!("{target}/{}", name.to_string_lossy());
            if !names.contains(&key) {
                stale.push(format!("{key} (not generated)"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale seeds {stale:?}: run FUZZ_WRITE_SEEDS=1 cargo test in fuzz/"
    );
}
