//! The compatibility matrix: every kind of writer a fleet meets during an
//! upgrade or a rollback, read by every reader the next kernel or an
//! engineer has. Each cell either accepts the image with exactly the live
//! objects its writer preserved, or refuses it with its specific error
//! (the same one in every reader).
//!
//! Writers: a C "old kernel" using only the header's version-1 structs,
//! the Rust writer at versions 1 and 2, the C writer API at versions 1 and
//! 2, and hand-built version-2 images: a 2.x writer's (longer records with
//! non-zero extra bytes, an unknown compatible feature), one with an
//! unknown incompatible feature, and two claiming version 3 (readable by a
//! version-2 reader, and not). Readers: the Rust reader, the C API (a C
//! program, `tests/c/matrix_read.c`, linked with `libiommu_flb.a`), and the
//! `iommu-flb` tool's read path (`inspect --json`).
//!
//! Objects are compared in a form that does not depend on where a writer
//! put them: an IOMMU by token, type and reference count, a domain by its
//! top table and address width, a device by segment, devid, and its
//! domain's top table and its IOMMU's token.
//!
//! The table the test prints is the one in the README (between the
//! `matrix` markers); `IOMMU_FLB_BLESS=1` rewrites it there.

mod support;

#[path = "../../tests/v2_support/mod.rs"]
mod v2;

use std::collections::BTreeMap;
use std::path::Path;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::error::{Error, ErrorKind};
use iommu_flb_abi::reader::{self, Mode, Options, ScratchElem};
use iommu_flb_abi::writer::{
    Config, DeviceInit, DevicePayloadInit, DomainInit, IntelDeviceInit, IntelIommuInit,
    IommuPayloadInit, MapAlloc, Smmuv3DeviceInit, Smmuv3IommuInit, Writer,
};
use iommu_flb_abi::{FlatMemory, PhysAddr};
use iommu_flb_cli::cmd::{Failure, ReadOptions, Report, report};
use iommu_flb_cli::load::Format;
use serde_json::Value;
use support::c_support::{Line, old_kernel_image, out_dir, run, run_ok};
use support::{build, build_with, flat_dump};

/// What a reader makes of an image: the version it reports and the live
/// objects (location-free lines, sorted), or the refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted { version: u64, objects: Vec<Line> },
    Refused { errno: i32, text: String },
}

/// What a writer preserved, or the refusal every reader must give.
enum Want {
    Objects { version: u64, objects: Vec<Line> },
    Refused(fn(&ErrorKind) -> bool),
}

/// One writer's image, as a flat dump of 4 KiB pages.
struct Written {
    writer: &'static str,
    bytes: Vec<u8>,
    base: u64,
    root: u64,
    want: Want,
}

fn iommu_line(token: u64, ty: u64, refs: u64) -> Line {
    Line::new("iommu", &[token, ty, refs])
}

fn domain_line(top: u64, vasz: u64) -> Line {
    Line::new("domain", &[top, vasz])
}

fn device_line(segment: u64, devid: u64, domain_top: u64, iommu_token: u64) -> Line {
    Line::new("device", &[segment, devid, domain_top, iommu_token])
}

fn sorted(mut v: Vec<Line>) -> Vec<Line> {
    v.sort();
    v
}

/// A manifest in `old_kernel_writer.c`'s format (`iommu <phys> <token>
/// <type> <ref_count>`, `domain <phys> <top> <vasz>`, `device <phys> <seg>
/// <devid> <domain_phys> <iommu_phys>`), made location-free.
fn from_manifest(lines: &[Line]) -> Vec<Line> {
    let of = |what: &str, v: usize| -> BTreeMap<u64, u64> {
        lines
            .iter()
            .filter(|l| l.what == what)
            .map(|l| (l.values[0], l.values[v]))
            .collect()
    };
    let tokens = of("iommu", 1);
    let tops = of("domain", 1);
    let mut unique: Vec<u64> = tops.values().copied().collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tops.len(), "domains must differ in top table");
    let mut out = Vec::new();
    for l in lines {
        let v = &l.values;
        match l.what.as_str() {
            "iommu" => out.push(iommu_line(v[1], v[2], v[3])),
            "domain" => out.push(domain_line(v[1], v[2])),
            "device" => out.push(device_line(v[1], v[2], tops[&v[3]], tokens[&v[4]])),
            _ => {}
        }
    }
    sorted(out)
}

/// The manifest a C writer program printed, and its dump.
fn c_written(writer: &'static str, exe: &Path, version: u64) -> Written {
    let dump = exe.with_extension("dump");
    let out = run_ok(exe, &[dump.to_str().unwrap()]);
    let lines: Vec<Line> = out
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .map(Line::parse)
        .collect();
    let first = |what: &str| lines.iter().find(|l| l.what == what).unwrap().values[0];
    Written {
        writer,
        bytes: std::fs::read(&dump).unwrap(),
        base: first("base"),
        root: first("root"),
        want: Want::Objects {
            version,
            objects: from_manifest(&lines),
        },
    }
}

const RUST_BASE: u64 = 0x2000_0000;

/// The Rust writer's image: Intel and SMMUv3 IOMMUs, domains, devices over
/// three pages, some unpreserved, in format `config`.
fn rust_written(writer: &'static str, config: Config) -> Written {
    let alloc = MapAlloc::sequential(PhysAddr::new(RUST_BASE));
    let mut w = Writer::with_config(alloc, config).unwrap();
    let mut want = Vec::new();
    let mut iommus = Vec::new();
    for i in 0..3u64 {
        let token = 0xfed9_0000 + i * 0x1000;
        let payload = if i < 2 {
            IommuPayloadInit::Intel(IntelIommuInit {
                phys_addr: PhysAddr::new(token),
                root_table: PhysAddr::new(0x70_0000 + i * 0x1000),
                context_tables_bitmap: [1, 0, 0, 0, 0, 0, 0, i],
            })
        } else {
            IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
                phys_addr: PhysAddr::new(token),
                strtab_base_cfg: 0x13,
                l1_strtab_lu_state: 0x80_0000,
                l2_strtab_lu_states_phys: PhysAddr::new(0x90_0000),
            })
        };
        iommus.push((
            w.preserve_iommu(token, payload).unwrap(),
            token,
            i < 2,
            0u64,
        ));
    }
    let mut domains = Vec::new();
    for i in 0..7u64 {
        let d = DomainInit {
            top_table_phys: PhysAddr::new(0x3000_0000 + i * 0x1000),
            top_level: 4,
            vasz: 39 + (i % 10) as u32,
            sign_extend: 0,
        };
        domains.push((w.preserve_domain(d).unwrap(), d));
    }
    for i in 0..150u32 {
        let hw = (i % 3) as usize;
        let dom = (i as usize * 5) % domains.len();
        let payload = if iommus[hw].2 {
            DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: PhysAddr::new(0x4000_0000 + u64::from(i) * 0x1000),
                max_pasid: 1 << 20,
            })
        } else {
            DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                l1_cdtab_lu_state: 0xa000 + u64::from(i),
                num_l2_cdtables: i % 5,
                l2_cdtab_lu_states_phys: PhysAddr::new(0x5000_0000),
            })
        };
        let d = DeviceInit {
            pci_domain_nr: i % 2,
            devid: i << 3,
            dma_owner_token: 0xd000 + u64::from(i),
            attachment_id: u64::from(i % 7) + 1,
            payload,
        };
        let h = w.preserve_device(d, domains[dom].0, iommus[hw].0).unwrap();
        if i % 9 == 4 {
            w.unpreserve_device(h).unwrap();
        } else {
            iommus[hw].3 += 1;
            want.push(device_line(
                u64::from(d.pci_domain_nr),
                u64::from(d.devid),
                domains[dom].1.top_table_phys.get(),
                iommus[hw].1,
            ));
        }
    }
    for (_, token, intel, refs) in &iommus {
        want.push(iommu_line(*token, if *intel { 1 } else { 2 }, *refs));
    }
    for (_, d) in &domains {
        want.push(domain_line(d.top_table_phys.get(), u64::from(d.vasz)));
    }
    let (root, alloc) = w.finish();
    let dir = out_dir("matrix");
    let dump = flat_dump(alloc.map(), RUST_BASE, &dir.join(format!("{writer}.dump")));
    Written {
        writer,
        bytes: std::fs::read(dump).unwrap(),
        base: RUST_BASE,
        root: root.get(),
        want: Want::Objects {
            version: config.version,
            objects: sorted(want),
        },
    }
}

/// A version-2 image built byte by byte (`tests/v2_support`), changed by
/// `edit` before its CRCs are recomputed; `want` is the version readers
/// report with the built objects, or the refusal they must give.
fn hand_built(
    writer: &'static str,
    strides: [usize; 3],
    edit: impl Fn(&mut v2::Img, &v2::Spec),
    want: Result<u64, fn(&ErrorKind) -> bool>,
) -> Written {
    let mut spec = v2::Spec::typical(120);
    spec.strides = strides;
    let mut img = v2::Img::build(&spec);
    edit(&mut img, &spec);
    img.seal();
    let want = match want {
        Ok(version) => {
            let mut objects = Vec::new();
            for (i, m) in spec.iommus.iter().enumerate() {
                let refs = spec.devices.iter().filter(|d| d.iommu == i as u64).count();
                objects.push(iommu_line(m.token, m.ty, refs as u64));
            }
            let top = |i: u64| 0x40_0000 + i * 0x1000;
            for i in 0..spec.domains.len() as u64 {
                objects.push(domain_line(top(i), 48));
            }
            for d in &spec.devices {
                let token = spec.iommus[d.iommu as usize].token;
                let (seg, devid) = (u64::from(d.segment), u64::from(d.devid));
                objects.push(device_line(seg, devid, top(d.domain), token));
            }
            Want::Objects {
                version,
                objects: sorted(objects),
            }
        }
        Err(refused) => Want::Refused(refused),
    };
    Written {
        writer,
        base: img.base,
        root: img.root.get(),
        bytes: img.bytes,
        want,
    }
}

/// Every writer of the matrix, in the README's order.
fn writers() -> Vec<Written> {
    let dir = out_dir("matrix");
    let old = old_kernel_image(&dir);
    let old_lines = {
        let mut l = vec![
            Line::new("base", &[old.base]),
            Line::new("root", &[old.root]),
        ];
        l.extend(old.objects.iter().cloned());
        l
    };
    let root_at = |img: &v2::Img| img.root.get() as usize - img.base as usize;
    vec![
        Written {
            writer: "old kernel (C, v1 structs only)",
            bytes: std::fs::read(&old.dump).unwrap(),
            base: old.base,
            root: old.root,
            want: Want::Objects {
                version: 1,
                objects: from_manifest(&old_lines),
            },
        },
        rust_written("Rust writer, v1", Config::v1()),
        rust_written("Rust writer, v2", Config::v2(0x77)),
        c_written("C writer API, v1", &build(&dir, "capi_writer"), 1),
        c_written(
            "C writer API, v2",
            &build_with(&dir, "capi_v2_zlib", &["-lz"]),
            2,
        ),
        hand_built(
            "2.x: longer records, unknown compatible feature",
            [112, 40, 80],
            |img, spec| {
                // Fields of a later 2.x writer: non-zero bytes past each
                // record's 2.0 size, and a compatible feature bit.
                let counts = [spec.iommus.len(), spec.domains.len(), spec.devices.len()];
                for (c, size) in [v2::HW, v2::DOM, v2::DEV].into_iter().enumerate() {
                    for i in 0..counts[c] {
                        let at = img.record(c, i);
                        img.bytes[at + size..at + img.strides[c]].fill(0xa5);
                    }
                }
                let r = root_at(img);
                img.put_u64(r + 32, 1 << 17);
            },
            Ok(2),
        ),
        hand_built(
            "2.x: unknown incompatible feature",
            [0; 3],
            |img, _| {
                let r = root_at(img);
                img.put_u64(r + 40, 1 << 9);
            },
            Err(|k| matches!(k, ErrorKind::UnknownFeatures { bits } if *bits == 1 << 9)),
        ),
        hand_built(
            "version 3, last_compatible_version 2",
            [0; 3],
            |img, _| {
                let r = root_at(img);
                img.put_u64(r, 3);
            },
            Ok(3),
        ),
        hand_built(
            "version 3, last_compatible_version 3",
            [0; 3],
            |img, _| {
                let r = root_at(img);
                img.put_u64(r, 3);
                img.put_u32(r + 16, 3);
            },
            Err(|k| {
                matches!(
                    k,
                    ErrorKind::IncompatibleVersion {
                        version: 3,
                        last_compatible: 3
                    }
                )
            }),
        ),
    ]
}

/// The Rust reader's outcome, and its error for the other readers'
/// comparison.
fn rust_reader(w: &Written) -> (Outcome, Option<Error>) {
    let mem = FlatMemory::new(PhysAddr::new(w.base), &w.bytes);
    let root = PhysAddr::new(w.root);
    let opts = Options::default();
    let result = reader::scratch_len(&mem, root, &opts).and_then(|n| {
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(&mem, root, &opts, &mut scratch)?;
        let mut objects = Vec::new();
        for i in image.iommus() {
            let refs = u64::from(i.ref_count());
            objects.push(iommu_line(i.token(), i.iommu_type().wire(), refs));
        }
        for d in image.domains() {
            objects.push(domain_line(d.top_table_phys().get(), u64::from(d.vasz())));
        }
        for d in image.devices() {
            objects.push(device_line(
                u64::from(d.segment()),
                u64::from(d.devid()),
                d.domain().top_table_phys().get(),
                d.iommu().token(),
            ));
        }
        Ok((image.version(), sorted(objects)))
    });
    match result {
        Ok((version, objects)) => (Outcome::Accepted { version, objects }, None),
        Err(e) => (
            Outcome::Refused {
                errno: e.errno(),
                text: format!("{e}"),
            },
            Some(e),
        ),
    }
}

/// The C API's outcome (`matrix_read`).
fn c_reader(exe: &Path, w: &Written, name: &str) -> Outcome {
    let dump = out_dir("matrix").join(format!("{name}.read.dump"));
    std::fs::write(&dump, &w.bytes).unwrap();
    let out = run(
        exe,
        &[
            dump.to_str().unwrap(),
            &format!("{:#x}", w.base),
            &format!("{:#x}", w.root),
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    match out.status.code() {
        Some(0) => {
            let lines: Vec<Line> = text.lines().map(Line::parse).collect();
            let version = lines.iter().find(|l| l.what == "version").unwrap().values[0];
            let objects = lines.into_iter().filter(|l| l.what != "version").collect();
            Outcome::Accepted {
                version,
                objects: sorted(objects),
            }
        }
        Some(3) => {
            let field = |p: &str| text.lines().find_map(|l| l.strip_prefix(p)).unwrap();
            Outcome::Refused {
                errno: field("error ").parse().unwrap(),
                text: field("message ").to_owned(),
            }
        }
        other => panic!(
            "matrix_read exited {other:?}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The tool's outcome: `inspect --json --all` on the flat dump, through
/// the tool's read path. The listing includes deleted slots so that a
/// version-2 device's `domain_index` is a position in it.
fn tool_reader(w: &Written) -> Outcome {
    let opts = ReadOptions {
        file: "matrix.dump".into(),
        format: Format::Phys,
        root: Some(PhysAddr::new(w.root)),
        base: Some(PhysAddr::new(w.base)),
        mode: Mode::Handover,
        page_size: PageSize::Size4K,
    };
    let listing = Report::Listing {
        all: true,
        json: true,
    };
    let json = match report("matrix.dump", w.bytes.as_slice(), &opts, listing) {
        Ok(json) => json,
        Err(Failure::Refused(text)) => return Outcome::Refused { errno: 0, text },
        Err(e) => panic!("the tool failed to read the dump: {e}"),
    };
    let v: Value = serde_json::from_str(&json).unwrap();
    let list = |k: &str| v[k].as_array().unwrap().clone();
    let live = |o: &Value| o["flags"].as_u64().unwrap() & 1 == 0;
    let (iommus, domains) = (list("iommus"), list("domains"));
    let find = |all: &[Value], o: &Value, by_phys: &str, by_index: &str| -> Value {
        match (o.get(by_phys), o.get(by_index)) {
            (Some(p), None) => all.iter().find(|x| &x["phys"] == p).unwrap().clone(),
            (None, Some(i)) => all[i.as_u64().unwrap() as usize].clone(),
            other => panic!("device names {by_phys} as {other:?}"),
        }
    };
    let n = |o: &Value, k: &str| o[k].as_u64().unwrap();
    let mut objects = Vec::new();
    for o in iommus.iter().filter(|o| live(o)) {
        objects.push(iommu_line(n(o, "token"), n(o, "type"), n(o, "ref_count")));
    }
    for o in domains.iter().filter(|o| live(o)) {
        objects.push(domain_line(n(o, "top_table_phys"), n(o, "vasz")));
    }
    for o in list("devices").iter().filter(|o| live(o)) {
        let dom = find(&domains, o, "domain_phys", "domain_index");
        let hw = find(&iommus, o, "iommu_phys", "iommu_index");
        objects.push(device_line(
            n(o, "pci_domain_nr"),
            n(o, "devid"),
            n(&dom, "top_table_phys"),
            n(&hw, "token"),
        ));
    }
    Outcome::Accepted {
        version: n(&v, "version"),
        objects: sorted(objects),
    }
}

fn errno_name(errno: i32) -> String {
    let name = match -errno {
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        _ => return errno.to_string(),
    };
    format!("-{name}")
}

/// A cell of the README's table.
fn cell(o: &Outcome) -> String {
    match o {
        Outcome::Accepted { version, objects } => {
            let count = |w: &str| objects.iter().filter(|l| l.what == w).count();
            format!(
                "accepted: v{version}, {} IOMMUs, {} domains, {} devices",
                count("iommu"),
                count("domain"),
                count("device")
            )
        }
        Outcome::Refused { errno, .. } if *errno != 0 => format!("refused, {}", errno_name(*errno)),
        Outcome::Refused { .. } => "refused, exit 1".to_owned(),
    }
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn every_writer_by_every_reader_accepts_exactly_the_objects_or_refuses_with_the_error() {
    let exe = build(&out_dir("matrix"), "matrix_read");
    let mut table = String::from(
        "| writer | Rust reader | C API | `iommu-flb` | why |\n|---|---|---|---|---|\n",
    );
    for (k, w) in writers().iter().enumerate() {
        let (rust, error) = rust_reader(w);
        let c = c_reader(&exe, w, &format!("w{k}"));
        let tool = tool_reader(w);
        let why = match (&w.want, &error) {
            (Want::Objects { version, objects }, None) => {
                assert!(objects.len() > 100, "{}: too few objects to test", w.writer);
                let want = Outcome::Accepted {
                    version: *version,
                    objects: objects.clone(),
                };
                assert_eq!(rust, want, "{}: Rust reader", w.writer);
                assert_eq!(c, want, "{}: C API", w.writer);
                assert_eq!(tool, want, "{}: tool", w.writer);
                "the written objects".to_owned()
            }
            (Want::Refused(expected), Some(e)) => {
                assert!(expected(&e.kind()), "{}: refused with {e}", w.writer);
                let c_want = Outcome::Refused {
                    errno: e.errno(),
                    text: format!("{e}"),
                };
                assert_eq!(c, c_want, "{}: C API", w.writer);
                let Outcome::Refused { text, .. } = &tool else {
                    panic!("{}: the tool accepted it", w.writer)
                };
                let at = format!("{}: {}", e.location(), e.kind());
                assert!(text.contains(&at), "{}: tool says {text}", w.writer);
                format!("{}: {}", e.location(), e.kind())
            }
            (Want::Objects { .. }, Some(e)) => panic!("{}: refused: {e}", w.writer),
            (Want::Refused(_), None) => panic!("{}: accepted", w.writer),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {why} |\n",
            w.writer,
            cell(&rust),
            cell(&c),
            cell(&tool)
        ));
    }
    print!("{table}");
    let readme_path = support::c_support::repo_root().join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let (begin, end) = ("<!-- matrix:begin -->\n", "<!-- matrix:end -->");
    let start = readme.find(begin).expect("README has the matrix markers") + begin.len();
    let stop = readme[start..].find(end).expect("matrix end marker") + start;
    if std::env::var_os("IOMMU_FLB_BLESS").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
        std::fs::write(&readme_path, updated).unwrap();
    } else {
        assert_eq!(
            &readme[start..stop],
            table,
            "README's matrix is stale (IOMMU_FLB_BLESS=1 rewrites it)"
        );
    }
}
