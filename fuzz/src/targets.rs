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
    // Auto reads a kdump-compressed or flattened file as what it is, and
    // `--format elf` refuses one naming what it is (with a base, as a base
    // given for a file that is not flat).
    let dump_file = matches!(format, Format::Auto | Format::Elf)
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
    let mut dump = match cli::load::load(input.file, LoadOptions { format, base }) {
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
    // Without a root from the input or the note, the tool scans the dump
    // and uses the one root it finds (LUO's, or the only valid one); with
    // none or several, and for a malformed note, it is a usage error.
    let scanned = match (root_opt, &note) {
        (None, Ok(None)) => {
            let opts = Options {
                mode: Mode::Handover,
                ..Options::default()
            };
            let report = cli::scan::scan(&mut dump, &opts, &mut |_, _| {});
            assert!(!report.text("fuzz").is_empty());
            report.choose().ok()
        }
        _ => None,
    };
    let root = match (root_opt, note, scanned) {
        (Some(r), _, _) | (None, Ok(Some(r)), _) | (None, Ok(None), Some(r)) => r,
        (None, _, _) => {
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

/// Target `formats`: a formats descriptor as a kernel file carries it,
/// from arbitrary bytes: the first byte chooses between the bytes as they
/// are and the library's own descriptor with the rest XORed over it (so
/// the magic and sizes hold and the fuzzer reaches the entries). A parsed
/// descriptor must serialize and parse back to itself; negotiation with
/// the library's either way must agree with the versions each side reads
/// and writes; `accepts` must only name a version the descriptor reads;
/// the C API must refuse exactly what `Formats::from_ser` refuses. The
/// same bytes go through the tool's ELF section reader, which must refuse
/// or read without panicking.
pub fn formats(data: &[u8]) {
    use iommu_flb_abi::abi::formats::IommuFlbFormats;
    use iommu_flb_abi::formats::{FORMATS, Formats, negotiate};
    use zerocopy::FromBytes;

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes: Vec<u8> = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut b = FORMATS.to_bytes().to_vec();
        for (x, y) in b.iter_mut().zip(rest) {
            *x ^= y;
        }
        b.extend(rest.iter().skip(FORMATS.to_bytes().len()));
        b
    };
    let _ = cli::formats::read_formats("fuzz", &bytes);
    let parsed = Formats::parse_prefix(&bytes);
    if let Err(e) = &parsed {
        assert!(!e.to_string().is_empty());
        assert!(e.errno() < 0);
    }
    if let Ok((f, _)) = &parsed {
        assert_eq!(Formats::parse(&f.to_bytes()), Ok(*f), "round trip");
        for (ours, theirs) in [(&FORMATS, f), (f, &FORMATS)] {
            match negotiate(ours, theirs) {
                Ok(n) => {
                    assert!(ours.writes().as_slice().contains(&n.version));
                    assert!(theirs.reads().as_slice().contains(&n.version));
                }
                Err(e) => assert!(!e.to_string().is_empty() && e.errno() < 0),
            }
        }
        for version in [1u64, 2, 3, u64::from(u32::MAX) + 1] {
            for last in [0u32, 1, 2, 3] {
                if let Ok(v) = f.accepts(version, last, 0) {
                    assert!(f.reads().as_slice().contains(&v));
                }
            }
        }
    }
    if let Ok((ser, _)) = IommuFlbFormats::read_from_prefix(&bytes) {
        let rust = Formats::from_ser(&ser);
        let mut agreed = iommu_flb_abi::ffi::IommuFlbNegotiated::default();
        // SAFETY: both pointers are to live descriptors and `agreed` is a
        // live, writable struct; the call reads and writes nothing else.
        let ret = unsafe {
            iommu_flb_abi::ffi::iommu_flb_negotiate(
                iommu_flb_abi::ffi::iommu_flb_library_formats(),
                &ser,
                &mut agreed,
            )
        };
        match rust {
            Err(e) => assert_eq!(ret, e.errno(), "C refuses what Rust refuses"),
            Ok(f) => match negotiate(&FORMATS, &f) {
                Ok(n) => assert_eq!((ret, agreed.version), (0, n.version)),
                Err(e) => assert_eq!(ret, e.errno()),
            },
        }
    }
}
