//! The commands: each returns what to print on standard output, or a
//! [`Failure`] that says what to print on standard error and the exit code.

use core::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::{IommuDeviceSer, IommuDomainSer, IommuHwSer, objects_per_page};
use iommu_flb_abi::reader::{self, Image, Mode, Options};
use iommu_flb_abi::writer::{
    Config, DeviceHandle, DomainHandle, IndexSlot, IommuHandle, MapAlloc, SliceIndex, WriteError,
    Writer,
};
use iommu_flb_abi::{Memory, PageMap, PhysAddr};

use crate::elfcore::write_core;
use crate::formats;
use crate::load::{Container, Format, LoadOptions, load};
use crate::plan::{Plan, Spec, Step, Vendor, plan};
use crate::render::{self, Records};
use crate::rng::Rng;
use crate::scan;
use crate::source::Source;

/// Why a command failed, and so its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The image was refused: exit 1. The text names chain, page, object
    /// and field.
    Refused(String),
    /// A usage or I/O error (bad option, unreadable file, malformed
    /// container, no root address, a file that cannot be written): exit 2.
    Usage(String),
}

impl Failure {
    /// The process exit code: 1 for a refused image, 2 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(s) | Failure::Usage(s) => f.write_str(s),
        }
    }
}

/// Options of the commands that read an image.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The dump file.
    pub file: PathBuf,
    /// How to read it.
    pub format: Format,
    /// The root's physical address, if given.
    pub root: Option<PhysAddr>,
    /// The physical address of a flat dump's first byte.
    pub base: Option<PhysAddr>,
    /// Which state the image must be in.
    pub mode: Mode,
    /// The page size of the kernel that wrote the image.
    pub page_size: PageSize,
}

/// `gen`'s output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFormat {
    /// An ELF64 core file with the root in an `IOMMUFLB` note.
    Elf,
    /// A flat physical dump starting at physical address 0.
    Phys,
}

/// Options of `gen`.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// The counts, vendors and seed.
    pub spec: Spec,
    /// Output format.
    pub format: GenFormat,
    /// Output file.
    pub output: PathBuf,
    /// The page size of the image's pages.
    pub page_size: PageSize,
    /// The format version to write (1 or 2).
    pub version: u64,
}

/// What to print about a valid image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// `validate`'s summary line.
    Summary,
    /// `inspect`'s listing.
    Listing {
        /// Deleted records too.
        all: bool,
        /// JSON instead of text.
        json: bool,
    },
}

/// The whole read path on a file's contents (a byte slice, or the open
/// file): load the container, find the root, validate, print. `name` is
/// the file's name for messages; `opts.file` is not read.
pub fn report<S: Source>(
    name: &str,
    data: S,
    opts: &ReadOptions,
    what: Report,
) -> Result<String, Failure> {
    with_image(name, data, opts, |image| {
        Ok(match what {
            Report::Summary => format!("{name}: {}\n", render::summary(&Records::count(image))),
            Report::Listing { all, json } => listing(image, all, json),
        })
    })
}

/// Loads the container, finds the root, validates the image and hands it
/// to `f`: the read path every command that reads an image shares.
fn with_image<S: Source, R>(
    name: &str,
    data: S,
    opts: &ReadOptions,
    f: impl FnOnce(&Image<'_, '_, crate::load::Dump<S>>) -> Result<R, Failure>,
) -> Result<R, Failure> {
    let (mut dump, vopts) = load_dump(name, data, opts)?;
    let note = match opts.root {
        Some(_) => None,
        None => dump
            .root_note()
            .map_err(|e| Failure::Usage(format!("{name}: {e}")))?,
    };
    let root = match opts.root.or(note) {
        Some(root) => root,
        None => scan::scan(&mut dump, &vopts, &mut |_, _| {})
            .choose()
            .map_err(|why| {
                Failure::Usage(format!(
                    "{name}: no root address ({}), and {why}\npass --root PHYS",
                    match dump.container() {
                        Container::Elf | Container::FlattenedElf =>
                            "this ELF file has no IOMMUFLB note",
                        Container::Flat => "flat dumps do not record it",
                        Container::Kdump | Container::FlattenedKdump =>
                            "kdump-compressed dumps do not record it",
                    }
                ))
            })?,
    };
    let owned = reader::validate_alloc(&dump, root, &vopts).map_err(|e| {
        // A page the container could not give (a malformed kdump page
        // descriptor or page data) is the container's fault: exit 2, not a
        // refused image.
        match dump.page_error() {
            Some(container) => Failure::Usage(format!(
                "{name}: {container}; so the image cannot be read: {}: {}",
                e.location(),
                e.kind()
            )),
            None => refused(name, &e),
        }
    })?;
    f(&owned.image())
}

/// `scan`: every root in the dump that validates, and LUO's FLB table if
/// the dump holds it. `progress(done, total)` hears of the bytes read.
pub fn scan_file(
    opts: &ReadOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<String, Failure> {
    if opts.root.is_some() {
        return Err(Failure::Usage(
            "scan finds roots itself: --root is for validate and inspect".into(),
        ));
    }
    let (name, file) = open_input(opts)?;
    let (mut dump, vopts) = load_dump(&name, &file, opts)?;
    Ok(scan::scan(&mut dump, &vopts, progress).text(&name))
}

/// Loads the container of `data` as `opts` say, and the reader's options
/// they give.
fn load_dump<S: Source>(
    name: &str,
    data: S,
    opts: &ReadOptions,
) -> Result<(crate::load::Dump<S>, Options), Failure> {
    let load_opts = LoadOptions {
        format: opts.format,
        base: opts.base,
    };
    let dump = load(data, load_opts).map_err(|e| Failure::Usage(format!("{name}: {e}")))?;
    let vopts = Options {
        mode: opts.mode,
        page_size: opts.page_size,
        ..Options::default()
    };
    Ok((dump, vopts))
}

/// Opens `opts.file` for reading on demand, refusing a directory.
fn open_input(opts: &ReadOptions) -> Result<(String, File), Failure> {
    let name = opts.file.display().to_string();
    let cannot = |e: std::io::Error| Failure::Usage(format!("cannot read {name}: {e}"));
    let file = File::open(&opts.file).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.is_dir() {
        return Err(Failure::Usage(format!(
            "cannot read {name}: it is a directory"
        )));
    }
    Ok((name, file))
}

/// Reads `opts.file` on demand: only the ELF headers (and notes, without
/// `--root`) and the pages the reader asks for are read, and only those
/// pages are kept, so a dump of many gigabytes, or a hostile one, is
/// inspected in the memory its image needs.
fn report_file(opts: &ReadOptions, what: Report) -> Result<String, Failure> {
    let (name, file) = open_input(opts)?;
    report(&name, &file, opts, what)
}

/// A refusal: where the image is wrong (chain, page, object, field) and
/// what is wrong there.
fn refused(name: &str, e: &iommu_flb_abi::Error) -> Failure {
    Failure::Refused(format!(
        "{name}: invalid image: {}: {}",
        e.location(),
        e.kind()
    ))
}

/// `validate`: one summary line.
pub fn validate(opts: &ReadOptions) -> Result<String, Failure> {
    report_file(opts, Report::Summary)
}

/// `validate --for KERNEL`: the summary line, and whether the kernel file
/// `kernel` (its formats descriptor; a file without one is taken to read
/// version 1 only, as kernels before the descriptor do) reads the image.
/// Refused (exit 1), saying why, if it does not.
pub fn validate_for(opts: &ReadOptions, kernel: &Path) -> Result<String, Failure> {
    let (theirs, note) = formats::kernel_formats(kernel)?;
    let kname = kernel.display().to_string();
    let (name, file) = open_input(opts)?;
    with_image(&name, &file, opts, |image| {
        let summary = render::summary(&Records::count(image));
        let mut out = String::new();
        if let Some(note) = &note {
            out.push_str(&format!("{note}\n"));
        }
        match theirs.accepts_image(image) {
            Ok(v) => {
                out.push_str(&format!(
                    "{name}: {summary}; {kname} reads it (by the rules of version {v})\n"
                ));
                Ok(out)
            }
            Err(e) => Err(Failure::Refused(format!(
                "{out}{name}: {kname} cannot read this image: {e}"
            ))),
        }
    })
}

/// `formats`: the formats descriptor of an ELF file, as text or JSON.
pub fn formats_file(path: &Path, json: bool) -> Result<String, Failure> {
    let name = path.display().to_string();
    let f = formats::file_formats(path)?.ok_or_else(|| {
        Failure::Usage(format!(
            "{name}: no {} section (a kernel built without IOMMU_FLB_DECLARE_FORMATS(), such as every kernel before it, reads version 1 only)",
            iommu_flb_abi::formats::IOMMU_FLB_FORMATS_SECTION
        ))
    })?;
    Ok(if json {
        formats::json(&f)
    } else {
        formats::text(&name, &f)
    })
}

/// `inspect`: the listing, as text or JSON.
pub fn inspect(opts: &ReadOptions, all: bool, json: bool) -> Result<String, Failure> {
    report_file(opts, Report::Listing { all, json })
}

fn listing<M: Memory + ?Sized>(image: &Image<'_, '_, M>, all: bool, json: bool) -> String {
    let records = Records::collect(image, all);
    if json {
        let mut s = render::json(&records);
        s.push('\n');
        s
    } else {
        render::text(&records)
    }
}

/// Where `gen` and `demo` put pages: a window above 1 MiB twice as large as
/// the image needs, in an order chosen by the seed, so pages are scattered
/// (and the ELF file has several `PT_LOAD` runs) but the flat dump stays
/// small.
fn page_addresses(spec: &Spec, ps: PageSize) -> Vec<PhysAddr> {
    let chain = |n: u64, size: usize| n.div_ceil(objects_per_page(ps, size).max(1)).max(1);
    let needed = 1u64
        .saturating_add(chain(spec.iommus, size_of::<IommuHwSer>()))
        .saturating_add(chain(spec.domains, size_of::<IommuDomainSer>()))
        .saturating_add(chain(
            spec.devices.saturating_add(spec.deleted),
            size_of::<IommuDeviceSer>(),
        ));
    let mut addrs: Vec<PhysAddr> = (0..needed.saturating_mul(2))
        .map(|i| PhysAddr::new(WINDOW.saturating_add(i.saturating_mul(ps.bytes_u64()))))
        .collect();
    Rng::new(spec.seed ^ 0x05ca_77e1_20f9_a6e5).shuffle(&mut addrs);
    addrs
}

/// The lowest page address `gen` uses.
const WINDOW: u64 = 0x10_0000;

fn writer_failure(e: WriteError) -> Failure {
    Failure::Usage(format!("the writer refused the plan: {e}"))
}

/// Builds the image `plan` describes with the writer; returns the root and
/// the pages. Devices come in a shuffled order, so the writer gets a
/// [`SliceIndex`] (two slots per device) to find duplicates in O(1) instead
/// of scanning the device chain each time.
fn build(
    plan: &Plan,
    addrs: Vec<PhysAddr>,
    ps: PageSize,
    config: Config,
) -> Result<(PhysAddr, PageMap), Failure> {
    let slots = plan.devices.len().saturating_mul(2).saturating_add(1);
    let mut slots = vec![IndexSlot::empty(); slots];
    let index = SliceIndex::new(&mut slots);
    let alloc = MapAlloc::from_list(addrs).with_page_size(ps);
    let mut w = Writer::with_config_and_index(alloc, config, index).map_err(writer_failure)?;
    let mut iommus: Vec<Option<IommuHandle>> = vec![None; plan.iommus.len()];
    let mut domains: Vec<Option<DomainHandle>> = vec![None; plan.domains.len()];
    let mut devices: Vec<Option<DeviceHandle>> = vec![None; plan.devices.len()];
    let missing = || Failure::Usage("internal error: the plan uses an object before it".into());
    for step in &plan.steps {
        match *step {
            Step::Iommu(i) => {
                let p = plan.iommus.get(i).ok_or_else(missing)?;
                let h = w
                    .preserve_iommu(p.token, p.payload)
                    .map_err(writer_failure)?;
                *iommus.get_mut(i).ok_or_else(missing)? = Some(h);
            }
            Step::Domain(d) => {
                let p = plan.domains.get(d).ok_or_else(missing)?;
                let h = w.preserve_domain(*p).map_err(writer_failure)?;
                *domains.get_mut(d).ok_or_else(missing)? = Some(h);
            }
            Step::Device(k) => {
                let p = plan.devices.get(k).ok_or_else(missing)?;
                let dom = domains
                    .get(p.domain)
                    .copied()
                    .flatten()
                    .ok_or_else(missing)?;
                let iommu = iommus.get(p.iommu).copied().flatten().ok_or_else(missing)?;
                let h = w
                    .preserve_device(p.init, dom, iommu)
                    .map_err(writer_failure)?;
                *devices.get_mut(k).ok_or_else(missing)? = Some(h);
            }
            Step::Unpreserve(k) => {
                let h = devices.get(k).copied().flatten().ok_or_else(missing)?;
                w.unpreserve_device(h).map_err(writer_failure)?;
            }
        }
    }
    let (root, alloc) = w.finish();
    Ok((root, alloc.into_map()))
}

/// Builds the version-1 image `spec` describes with the writer, as
/// `demo` does; returns the root and the pages.
pub fn build_image(spec: &Spec) -> Result<(PhysAddr, PageMap), Failure> {
    build_image_at(spec, PageSize::default(), 1)
}

/// [`build_image`] in pages of `ps`, in format `version` (1 or 2). A
/// version-2 image's generation is derived from the seed, so the same
/// arguments give the same bytes.
pub fn build_image_at(
    spec: &Spec,
    ps: PageSize,
    version: u64,
) -> Result<(PhysAddr, PageMap), Failure> {
    let plan = plan(spec).map_err(|e| Failure::Usage(format!("gen: {e}")))?;
    let config = match version {
        1 => Config::v1(),
        2 => Config::v2(spec.seed.wrapping_add(1)),
        v => {
            return Err(Failure::Usage(format!(
                "gen: no format version {v} (1 or 2)"
            )));
        }
    };
    build(&plan, page_addresses(spec, ps), ps, config)
}

/// A flat dump of `pages` from physical address 0 to the end of the
/// highest page, as `gen --format phys` writes it.
pub fn flat_dump(pages: &PageMap) -> Result<Vec<u8>, Failure> {
    let too_big = || Failure::Usage("gen: the flat dump would be too large".into());
    let end = pages
        .iter()
        .map(|(a, _)| a.get().saturating_add(pages.page_size().bytes_u64()))
        .max()
        .unwrap_or(0);
    let mut out = vec![0u8; usize::try_from(end).map_err(|_| too_big())?];
    for (a, page) in pages.iter() {
        let at = usize::try_from(a.get()).map_err(|_| too_big())?;
        let dst = at
            .checked_add(page.len())
            .and_then(|e| out.get_mut(at..e))
            .ok_or_else(too_big)?;
        dst.copy_from_slice(page);
    }
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes)
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
}

/// `gen`: writes an image built with the writer.
pub fn gen_image(opts: &GenOptions) -> Result<String, Failure> {
    let (root, pages) = build_image_at(&opts.spec, opts.page_size, opts.version)?;
    emit(
        "gen",
        opts.format,
        &opts.output,
        &pages,
        root,
        &describe(&opts.spec),
    )
}

/// Writes `pages` to `output` in `format` and says what it wrote; a flat
/// dump's message ends with the root's address on a line of its own.
fn emit(
    cmd: &str,
    format: GenFormat,
    output: &Path,
    pages: &PageMap,
    root: PhysAddr,
    what: &str,
) -> Result<String, Failure> {
    let name = output.display();
    match format {
        GenFormat::Elf => {
            let bytes = write_core(pages.iter(), root)
                .map_err(|e| Failure::Usage(format!("{cmd}: {e}")))?;
            write_file(output, &bytes)?;
            Ok(format!(
                "wrote {name}: ELF64 core file, {what}, {} pages, root {root} (in its IOMMUFLB note)\n",
                pages.len()
            ))
        }
        GenFormat::Phys => {
            let bytes = flat_dump(pages)?;
            write_file(output, &bytes)?;
            Ok(format!(
                "wrote {name}: flat physical dump from 0x0, {} bytes, {what}, {} pages; root:\n{root}\n",
                bytes.len(),
                pages.len()
            ))
        }
    }
}

/// Options of `convert`.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The image to read.
    pub read: ReadOptions,
    /// The format version to write (1 or 2).
    pub to: u64,
    /// Version 2's `generation`; by default the source's plus one (a
    /// version-2 source) or 1.
    pub generation: Option<u64>,
    /// Output format.
    pub format: GenFormat,
    /// Output file.
    pub output: PathBuf,
}

/// `convert`: reads and validates an image, rewrites its live objects in
/// version `opts.to` with the library's writer (`convert::convert`), checks
/// the result with the reader and writes it. An image the target version
/// cannot express is refused (exit 1), naming what.
pub fn convert(opts: &ConvertOptions) -> Result<String, Failure> {
    let (name, file) = open_input(&opts.read)?;
    let ps = opts.read.page_size;
    match (opts.to, opts.generation) {
        (1, None) | (2, None) => {}
        (1, Some(_)) => {
            return Err(Failure::Usage(
                "convert: version 1 has no generation: drop --generation".into(),
            ));
        }
        (2, Some(0)) => return Err(Failure::Usage("convert: generation 0 is reserved".into())),
        (2, Some(_)) => {}
        (v, _) => {
            return Err(Failure::Usage(format!(
                "convert: no format version {v} (1 or 2)"
            )));
        }
    }
    let (root, pages, from, counts) = with_image(&name, &file, &opts.read, |image| {
        let config = if opts.to == 1 {
            Config::v1()
        } else {
            // A new handover: a generation the source's pages do not carry.
            let next = image.generation().map_or(1, |g| g.wrapping_add(1)).max(1);
            Config::v2(opts.generation.unwrap_or(next))
        };
        let devices = image.devices().count();
        let mut slots = vec![IndexSlot::empty(); devices.saturating_mul(2).saturating_add(1)];
        let alloc = MapAlloc::sequential(PhysAddr::new(WINDOW)).with_page_size(ps);
        let mut w = Writer::with_config_and_index(alloc, config, SliceIndex::new(&mut slots))
            .map_err(writer_failure)?;
        let counts = iommu_flb_abi::convert::convert(image, &mut w).map_err(|e| {
            Failure::Refused(format!(
                "{name}: cannot convert to version {}: {e}",
                opts.to
            ))
        })?;
        let (root, alloc) = w.finish();
        Ok((root, alloc.into_map(), image.version(), counts))
    })?;
    // The writer never writes an image the reader refuses; check it anyway
    // before the file exists.
    let check = Options {
        page_size: ps,
        ..Options::default()
    };
    reader::validate_alloc(&pages, root, &check)
        .map_err(|e| refused("convert (the converted image)", &e))?;
    let what = format!(
        "version {from} to {}, {} IOMMUs, {} domains, {} devices",
        opts.to, counts.iommus, counts.domains, counts.devices
    );
    emit("convert", opts.format, &opts.output, &pages, root, &what)
}

fn describe(spec: &Spec) -> String {
    format!(
        "{} IOMMUs ({}), {} domains, {} devices, {} unpreserved, seed {}",
        spec.iommus,
        match spec.vendor {
            Vendor::Intel => "intel",
            Vendor::Smmuv3 => "smmuv3",
            Vendor::Mixed => "mixed",
        },
        spec.domains,
        spec.devices,
        spec.deleted,
        spec.seed
    )
}

/// The image `demo` builds: a small mixed host.
pub const DEMO: Spec = Spec {
    iommus: 4,
    domains: 6,
    devices: 48,
    deleted: 12,
    vendor: Vendor::Mixed,
    seed: 2026,
};

/// `demo`: builds [`DEMO`] with the writer in pages of `ps`, validates it
/// and lists it.
pub fn demo(ps: PageSize) -> Result<String, Failure> {
    let (root, pages) = build_image_at(&DEMO, ps, 1)?;
    let opts = Options {
        page_size: ps,
        ..Options::default()
    };
    let owned = reader::validate_alloc(&pages, root, &opts)
        .map_err(|e| refused("demo (the writer's image)", &e))?;
    let image = owned.image();
    let mut out = format!(
        "demo: an image built in memory by the writer: {}\n",
        describe(&DEMO)
    );
    out.push_str(&render::summary(&Records::count(&image)));
    out.push_str("\n\n");
    out.push_str(&listing(&image, false, false));
    out.push_str(
        "\nNext: `iommu-flb gen -o image.elf` writes such an image, \
         `iommu-flb inspect image.elf` lists it.\n",
    );
    Ok(out)
}
