//! The bodies of the fuzz targets, as functions, so the seed corpus can be
//! run through them by the unit tests (the files under `fuzz_targets/` only
//! call these).

use iommu_flb_abi::reader::{self, Limits, Mode, Options};
use iommu_flb_abi::writer::{
    DeviceIndex, FailingAlloc, IndexSlot, NoIndex, PageAlloc, SliceIndex, Writer,
};
use iommu_flb_abi::{FlatMemory, Memory, PhysAddr};
use iommu_flb_cli as cli;
use iommu_flb_cli::cmd::{Failure, ReadOptions, Report};
use iommu_flb_cli::load::{Container, Format, LoadError, LoadOptions};

use crate::check::{check_accepted, validate_both, validate_checked, validate_limits};
use crate::image::{Layout, allocator, build, corrupt};
use crate::input::{CapiInput, FileFormat, LoadInput, MutateInput, RawInput, RoundtripInput};
use crate::model::{Applied, IommuState, Model, max_devices};

/// Target `raw`: arbitrary bytes as a flat physical dump with a root
/// address in it, validated in both modes, with the input's limits and the
/// defaults. A refusal must be a well-formed typed error; an accepted image
/// must agree with an independent reading of its bytes through every
/// accessor.
pub fn raw(input: &RawInput<'_>) {
    let mem = FlatMemory::new(PhysAddr::new(input.base), input.dump);
    let _ = validate_limits(&mem, PhysAddr::new(input.root()), input.limits.limits());
}

/// Target `mutate`: a valid image built by the writer from the input's
/// operations, then the input's corruptions, validated in both modes.
/// Without corruptions the image must be accepted; with them, a refusal
/// must be a well-formed typed error and an acceptance must satisfy every
/// invariant of the view.
pub fn mutate(input: &MutateInput) {
    let mut built = build(input.order, &input.ops);
    let layout = match Layout::walk(&built.mem, built.root, built.mem.len()) {
        Some(l) => l,
        None => panic!("the writer's image cannot be walked"),
    };
    if input.corruptions.is_empty() {
        if let Err(e) = validate_both(&built.mem, built.root, Limits::default()) {
            panic!("the writer's image is refused: {e}");
        }
        return;
    }
    for c in &input.corruptions {
        corrupt(&mut built.mem, &layout, c);
    }
    let _ = validate_checked(&built.mem, built.root, input.mode, Limits::default());
    let _ = validate_both(&built.mem, built.root, Limits::default());
}

/// Target `roundtrip`: the input's operations run on the writer and on a
/// [`Model`], with allocations failing at the input's steps. Every result
/// must be the one the model predicts; at every `Op::Check` and at the end
/// the reader must see exactly the model's objects (slots, live records,
/// fields, ref counts, references, payloads, lookups, pages per chain)
/// besides every invariant of the view (only the first few checks are run);
/// abort must then give every page back.
pub fn roundtrip(input: &RoundtripInput) {
    if input.slice_index {
        let mut slots = vec![IndexSlot::empty(); 2 * max_devices(&input.ops) + 2];
        roundtrip_with(input, SliceIndex::new(&mut slots));
    } else {
        roundtrip_with(input, NoIndex);
    }
}

/// How many `Op::Check`s one input runs (more would only slow the fuzzer).
const MAX_CHECKS: usize = 8;

/// Validates the writer's image and compares it with the model and the
/// writer's counts; `thorough` also validates every other way the API
/// allows ([`validate_checked`]).
fn compare<A: PageAlloc, X: DeviceIndex>(
    w: &Writer<A, X>,
    mem: &impl Memory,
    model: &Model,
    thorough: bool,
) {
    let root = w.root();
    if thorough && let Err(e) = validate_checked(mem, root, Mode::Handover, Limits::default()) {
        panic!("the writer's image is refused: {e}");
    }
    let owned = match reader::validate_alloc(mem, root, &Options::default()) {
        Ok(i) => i,
        Err(e) => panic!("the writer's image is refused: {e}"),
    };
    let image = owned.image();
    if !thorough {
        check_accepted(mem, root, Mode::Handover, &image);
    }
    if let Err(e) = model.compare(&image) {
        panic!("the image disagrees with the model: {e}");
    }
    let c = w.counts();
    assert_eq!(c.pages, image.page_count() as u64, "counts().pages");
    assert_eq!(c.live_iommus, image.live_iommus() as u64);
    assert_eq!(c.devices, image.live_devices() as u64);
    assert_eq!(c.domains, image.domains().count() as u64);
    let kept = model.iommus.iter().filter(|m| m.state != IommuState::Gone);
    assert_eq!(c.iommus, kept.count() as u64);
}

type Fails = Box<dyn FnMut(u64) -> bool>;

fn roundtrip_with<X: DeviceIndex>(input: &RoundtripInput, index: X) {
    let mask = input.fail_mask;
    let fails: Fails = Box::new(move |step| (mask >> (step % 64)) & 1 == 1);
    let mut alloc = FailingAlloc::new(allocator(input.order), fails);
    let mut w = match Writer::with_index(&mut alloc, index) {
        Ok(w) => w,
        Err(e) => {
            assert_eq!(e.errno(), -12, "only allocation failures stop start: {e}");
            assert!(
                alloc.inner().map().is_empty(),
                "start gives back every page"
            );
            return;
        }
    };
    let mut model = Model::default();
    let mut checks = 0usize;
    for op in &input.ops {
        match model.apply(&mut w, op) {
            Ok(Applied::Check) if checks < MAX_CHECKS => {
                checks += 1;
                compare(&w, w.alloc().inner(), &model, false);
            }
            Ok(_) => {}
            Err(e) => panic!("writer disagrees with the model at {op:?}: {e}"),
        }
    }
    compare(&w, w.alloc().inner(), &model, true);
    let pages = w.counts().pages;
    let alloc = w.abort();
    assert!(
        alloc.inner().map().is_empty(),
        "abort gives back every page"
    );
    assert_eq!(alloc.inner().freed().len() as u64, pages);
}

/// Target `load`: arbitrary file bytes through the command-line tool's
/// loading path (`iommu_flb_cli::load::load`, an ELF64 core or a flat
/// dump), then validation of the image in it when a root address is known
/// (the input's `--root`, else the file's `IOMMUFLB` note). Loading either
/// succeeds or returns a `LoadError` with a message (`Empty` for an empty
/// file, else `BaseWithElf` exactly when a base is given for an ELF file); a flat dump must read exactly as
/// the library's `FlatMemory` over the same bytes (validation answers the
/// same through both); the image meets everything `raw` checks; and the
/// tool's whole `validate` and `inspect --all --json` path (`cmd::report`)
/// returns a report exactly when validation accepts, a refusal exactly when
/// it refuses, and a usage error only for a container or root problem.
pub fn load(input: &LoadInput<'_>) {
    let format = match input.format {
        FileFormat::Auto => Format::Auto,
        FileFormat::Elf => Format::Elf,
        FileFormat::Phys => Format::Phys,
    };
    let base = input.base.map(PhysAddr::new);
    let elf = match format {
        Format::Elf => true,
        Format::Phys | Format::Kdump | Format::Flattened => false,
        Format::Auto => input.file.starts_with(b"\x7fELF"),
    };
    // Auto reads a kdump-compressed or flattened file as what it is.
    let dump_file = format == Format::Auto
        && (input.file.starts_with(b"KDUMP   ")
            || input.file.starts_with(b"DISKDUMP")
            || input.file.starts_with(b"makedumpfile"));
    let root_opt = input.root.map(PhysAddr::new);
    let read = |what| {
        let opts = ReadOptions {
            file: "fuzz".into(),
            format,
            root: root_opt,
            base,
            mode: Mode::Handover,
            page_size: iommu_flb_abi::abi::PageSize::Size4K,
        };
        cli::cmd::report("fuzz", input.file, &opts, what)
    };
    let reports = [
        read(Report::Summary),
        read(Report::Listing {
            all: true,
            json: true,
        }),
    ];
    let dump = match cli::load::load(input.file, LoadOptions { format, base }) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // The loader checks the length first, then the base.
            if input.file.is_empty() {
                assert_eq!(e, LoadError::Empty);
            } else if elf && base.is_some() && !dump_file {
                assert_eq!(e, LoadError::BaseWithElf);
            }
            for r in reports {
                assert!(matches!(r, Err(Failure::Usage(_))), "{r:?}");
            }
            return;
        }
    };
    let flat = dump.container() == Container::Flat;
    assert!(!(elf && base.is_some()), "a base is refused for ELF files");
    if !dump_file {
        assert_eq!(dump.is_elf(), elf);
    }
    let _ = format!("{dump:?}");
    let note = dump.root_note();
    if let Err(e) = &note {
        assert!(!e.to_string().is_empty());
    }
    if flat {
        assert_eq!(note, Ok(None), "flat dumps carry no root");
    }
    let root = match (root_opt, note) {
        (Some(r), _) | (None, Ok(Some(r))) => r,
        (None, _) => {
            for r in reports {
                assert!(matches!(r, Err(Failure::Usage(_))), "{r:?}");
            }
            return;
        }
    };
    let got = validate_both(&dump, root, Limits::default());
    if flat {
        let flat = FlatMemory::new(base.unwrap_or(PhysAddr::NULL), input.file);
        let want = validate_both(&flat, root, Limits::default());
        assert_eq!(
            got, want,
            "a flat dump reads as FlatMemory over the same bytes"
        );
    }
    for r in reports {
        match (&got, r) {
            (Ok(_), Ok(text)) => assert!(!text.is_empty()),
            (Err(e), Err(Failure::Refused(msg))) => assert_eq!(
                msg,
                format!("fuzz: invalid image: {}: {}", e.location(), e.kind())
            ),
            (got, r) => panic!("validation gave {got:?}, the tool {r:?}"),
        }
    }
}

/// Target `capi`: the C API through its `extern "C"` functions, driven by
/// the input's calls; see [`crate::capi`] for what is checked.
pub fn capi(input: &CapiInput) {
    let _ = crate::capi::run(input);
}
