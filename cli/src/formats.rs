//! `formats`: which image format versions a kernel reads, from the
//! descriptor `IOMMU_FLB_DECLARE_FORMATS()` put in its ELF file (vmlinux, a
//! module, an object), and `validate --for`, which checks an image against
//! it.

use iommu_flb_abi::formats::{Formats, IOMMU_FLB_FORMATS_SECTION, WITHOUT_DESCRIPTOR};
use object::{Object, ObjectSection};

use crate::cmd::Failure;

/// The formats descriptor of the ELF file `bytes` (named `name` in
/// messages): the contents of its `.iommu_flb_formats` sections. Several
/// objects linked together contribute one descriptor each, in one section
/// or in several of that name (`ld -r` keeps them apart when their flags
/// differ); they must all be the same (one library, one descriptor).
/// `Ok(None)` if the file has no such section.
pub fn read_formats(name: &str, bytes: &[u8]) -> Result<Option<Formats>, Failure> {
    let file = object::File::parse(bytes)
        .map_err(|e| Failure::Usage(format!("{name}: not an ELF file the tool reads: {e}")))?;
    // A relocatable link (`ld -r`, a module) may keep one section per
    // object when their flags differ (`SHF_GNU_RETAIN`): read them all.
    let mut sections = 0usize;
    let mut first: Option<Formats> = None;
    for section in file
        .sections()
        .filter(|s| s.name() == Ok(IOMMU_FLB_FORMATS_SECTION))
    {
        sections = sections.saturating_add(1);
        let data = section.data().map_err(|e| {
            Failure::Usage(format!(
                "{name}: section {IOMMU_FLB_FORMATS_SECTION} cannot be read: {e}"
            ))
        })?;
        let mut rest = data;
        let mut at = 0usize;
        while !rest.is_empty() {
            let (formats, after) = Formats::parse_prefix(rest).map_err(|e| {
                Failure::Usage(format!(
                    "{name}: section {IOMMU_FLB_FORMATS_SECTION} ({sections}), descriptor at offset {at}: {e}"
                ))
            })?;
            match first {
                Some(f) if f != formats => {
                    return Err(Failure::Usage(format!(
                        "{name}: section {IOMMU_FLB_FORMATS_SECTION} holds two different descriptors: the file links two versions of the library"
                    )));
                }
                _ => first = Some(formats),
            }
            at = at.saturating_add(rest.len().saturating_sub(after.len()));
            rest = after;
        }
    }
    if sections == 0 {
        return Ok(None);
    }
    first.map(Some).ok_or_else(|| {
        Failure::Usage(format!(
            "{name}: section {IOMMU_FLB_FORMATS_SECTION} is empty"
        ))
    })
}

/// The formats descriptor of the ELF file at `path`, as [`read_formats`]
/// reads it.
pub fn file_formats(path: &std::path::Path) -> Result<Option<Formats>, Failure> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {name}: {e}")))?;
    read_formats(&name, &bytes)
}

/// The descriptor of the kernel file at `path`, or what a kernel without
/// one reads ([`WITHOUT_DESCRIPTOR`]) and a note saying so.
pub fn kernel_formats(path: &std::path::Path) -> Result<(Formats, Option<String>), Failure> {
    Ok(match file_formats(path)? {
        Some(f) => (f, None),
        None => (
            WITHOUT_DESCRIPTOR,
            Some(format!(
                "{} has no {IOMMU_FLB_FORMATS_SECTION} section: taken as a kernel that reads version 1 only",
                path.display()
            )),
        ),
    })
}

fn bits(b: u64) -> String {
    format!("{b:#x}")
}

/// `formats`' text output.
pub fn text(name: &str, f: &Formats) -> String {
    let mut out = format!(
        "{name}: reads format versions {}; writes {}\n",
        f.reads(),
        f.writes()
    );
    for e in f.entries() {
        let rw = match (e.read, e.write) {
            (true, true) => "read, write",
            (true, false) => "read",
            (false, true) => "write",
            (false, false) => "neither",
        };
        out.push_str(&format!(
            "  version {}: {rw}; compatible features known {}, incompatible {}\n",
            e.version,
            bits(e.compat),
            bits(e.incompat)
        ));
    }
    out
}

/// `formats --json`: `versions` (what the kernel reads), `writes`, and
/// every entry.
pub fn json(f: &Formats) -> String {
    let entries: Vec<serde_json::Value> = f
        .entries()
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "read": e.read,
                "write": e.write,
                "compat_known": e.compat,
                "incompat_known": e.incompat,
            })
        })
        .collect();
    let v = serde_json::json!({
        "versions": f.reads().as_slice(),
        "writes": f.writes().as_slice(),
        "entries": entries,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}
