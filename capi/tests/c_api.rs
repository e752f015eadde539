//! C programs linked with `libiommu_flb.a` read and write images through
//! the C API (`include/iommu_flb_api.h`), and agree with the Rust side.

mod support;

use iommu_flb_abi::FlatMemory;
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::reader::{self, Options, ScratchElem};
use iommu_flb_abi::writer::{
    DeviceHandle, DeviceInit, DevicePayloadInit, DomainHandle, DomainInit, IntelDeviceInit,
    IntelIommuInit, IommuHandle, IommuPayloadInit, MapAlloc, Smmuv3DeviceInit, Smmuv3IommuInit,
    Writer,
};
use support::c_support::{
    KERNEL_CFLAGS, Line, gcc, old_kernel_image, out_dir, reader_objects, run_ok, section,
};
use support::{build, build_cxx, build_with, flat_dump, staticlib};

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// The object lines (`iommu`, `domain`, `device`) among `lines`, sorted.
fn objects(lines: &[Line]) -> Vec<Line> {
    let mut v: Vec<Line> = lines
        .iter()
        .filter(|l| matches!(l.what.as_str(), "iommu" | "domain" | "device"))
        .cloned()
        .collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn old_kernel_image_read_through_the_c_api_has_exactly_its_live_objects() {
    let dir = out_dir("c_api_old_kernel");
    let m = old_kernel_image(&dir);
    let exe = build(&dir, "capi_read");
    let out = run_ok(
        &exe,
        &[m.dump.to_str().unwrap(), &hex(m.base), &hex(m.root)],
    );
    let mut want = m.objects.clone();
    want.sort();
    assert!(want.len() > 100, "the old kernel wrote too little to test");
    assert_eq!(objects(&section(&out, "api")), want, "API walk");
    assert_eq!(objects(&section(&out, "raw")), want, "plain struct walk");
}

const BASE: u64 = 0x8000_0000;

/// What the writer was asked to keep, object by object.
#[derive(Default)]
struct Model {
    iommus: Vec<(IommuHandle, u64, IommuPayloadInit)>,
    domains: Vec<(DomainHandle, DomainInit, bool)>,
    devices: Vec<(DeviceHandle, DeviceInit, usize, usize, bool)>,
}

impl Model {
    /// The lines `capi_read` prints for the live objects, sorted.
    fn lines(&self) -> Vec<Line> {
        let mut out = Vec::new();
        for (i, (h, token, payload)) in self.iommus.iter().enumerate() {
            let refs = self.devices.iter().filter(|d| d.4 && d.3 == i).count() as u64;
            if refs == 0 {
                continue; // No live device: invisible to readers.
            }
            let ty = payload.iommu_type().wire();
            out.push(Line::new("iommu", &[h.phys().get(), *token, ty, refs]));
            let (a, b) = match payload {
                IommuPayloadInit::Intel(p) => (p.phys_addr.get(), p.root_table.get()),
                IommuPayloadInit::Smmuv3(p) => (p.phys_addr.get(), p.strtab_base_cfg),
            };
            out.push(Line::new("iommu-vendor", &[h.phys().get(), a, b]));
        }
        for (h, d, live) in &self.domains {
            if *live {
                let v = [h.phys().get(), d.top_table_phys.get(), u64::from(d.vasz)];
                out.push(Line::new("domain", &v));
            }
        }
        for (h, d, dom, hw, live) in &self.devices {
            if !*live {
                continue;
            }
            let v = [
                h.phys().get(),
                u64::from(d.pci_domain_nr),
                u64::from(d.devid),
                self.domains[*dom].0.phys().get(),
                self.iommus[*hw].0.phys().get(),
            ];
            out.push(Line::new("device", &v));
            let (a, b) = match d.payload {
                DevicePayloadInit::Intel(p) => (p.pasid_table.get(), p.max_pasid),
                DevicePayloadInit::Smmuv3(p) => (p.l1_cdtab_lu_state, u64::from(p.num_l2_cdtables)),
            };
            out.push(Line::new("device-vendor", &[h.phys().get(), a, b]));
        }
        out.sort();
        out
    }
}

/// Writes a model image with the Rust writer in pages of `ps`: Intel and
/// SMMUv3 IOMMUs (one emptied, one never used), three 4 KiB domain pages'
/// worth of domains, devices over three 4 KiB pages, some unpreserved;
/// pages in scrambled order inside `[BASE, BASE + 64 pages)`.
fn write_model(ps: PageSize) -> (Model, PhysAddr, MapAlloc) {
    let order = (0..64u64).map(|i| PhysAddr::new(BASE + ((i * 37 + 11) % 64) * ps.bytes_u64()));
    let mut w = Writer::start(MapAlloc::from_list(order).with_page_size(ps)).expect("start");
    let mut m = Model::default();
    for i in 0..5u64 {
        let token = 0xfed9_0000 + i * 0x1000;
        let payload = if i % 2 == 0 {
            IommuPayloadInit::Intel(IntelIommuInit {
                phys_addr: PhysAddr::new(token),
                root_table: PhysAddr::new(0x70_0000 + i * 0x1000),
                context_tables_bitmap: [i, 0, 0, 0, 0, 0, 0, 1],
            })
        } else {
            IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
                phys_addr: PhysAddr::new(token),
                strtab_base_cfg: 0x10 + i,
                l1_strtab_lu_state: 0x80_0000,
                l2_strtab_lu_states_phys: PhysAddr::new(0x90_0000),
            })
        };
        let h = w.preserve_iommu(token, payload).expect("iommu");
        m.iommus.push((h, token, payload));
    }
    for i in 0..210u64 {
        let d = DomainInit {
            top_table_phys: PhysAddr::new(0x2000_0000 + i * 0x1000),
            top_level: 4,
            vasz: 39 + (i % 10) as u32,
            sign_extend: (i % 2) as u8,
        };
        let h = w.preserve_domain(d).expect("domain");
        m.domains.push((h, d, true));
    }
    // Devices behind IOMMUs 0..3 only (4 stays idle; 3 gets the first
    // three); in descending devid order, so the writer scans for
    // duplicates.
    for i in 0..140u32 {
        let hw = if i < 3 { 3 } else { (i % 3) as usize };
        let dom = (i as usize * 7) % 200;
        let payload = match m.iommus[hw].2 {
            IommuPayloadInit::Intel(_) => DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: PhysAddr::new(0x4000_0000 + u64::from(i) * 0x1000),
                max_pasid: 1 << 20,
            }),
            IommuPayloadInit::Smmuv3(_) => DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                l1_cdtab_lu_state: 0xa000 + u64::from(i),
                num_l2_cdtables: i % 5,
                l2_cdtab_lu_states_phys: PhysAddr::new(0x5000_0000),
            }),
        };
        let d = DeviceInit {
            pci_domain_nr: i % 2,
            devid: (200 - i) << 3,
            dma_owner_token: 0xd000 + u64::from(i),
            attachment_id: if hw % 2 == 0 { u64::from(i % 7) + 1 } else { 0 },
            payload,
        };
        let h = w
            .preserve_device(d, m.domains[dom].0, m.iommus[hw].0)
            .expect("device");
        m.devices.push((h, d, dom, hw, true));
    }
    // Unpreserve every device of IOMMU 3 (which empties it), every 11th
    // device, then a domain no live device uses.
    for (i, dev) in m.devices.iter_mut().enumerate() {
        if dev.3 == 3 || i % 11 == 5 {
            w.unpreserve_device(dev.0).expect("unpreserve device");
            dev.4 = false;
        }
    }
    w.unpreserve_domain(m.domains[205].0)
        .expect("unpreserve domain");
    m.domains[205].2 = false;
    w.unpreserve_iommu(m.iommus[4].0)
        .expect("unpreserve idle IOMMU");
    let counts = w.counts();
    assert_eq!(counts.live_iommus, 3);
    let (root, alloc) = w.finish();
    (m, root, alloc)
}

/// Walks the model image written at `ps` from C and checks it against the
/// model; `pages` is how many pages the image has at that size.
fn walk_model_from_c(ps: PageSize, pages_expected: usize) {
    let dir = out_dir(&format!("c_api_model_{}", ps.bytes()));
    let (model, root, alloc) = write_model(ps);
    let dump = flat_dump(alloc.map(), BASE, &dir.join("model.dump"));
    let exe = build(&dir, "capi_read");
    let page_size = ps.bytes().to_string();
    let out = run_ok(
        &exe,
        &[
            dump.to_str().unwrap(),
            &hex(BASE),
            &hex(root.get()),
            "0",
            "0",
            &page_size,
        ],
    );

    let want = model.lines();
    let api = section(&out, "api");
    let raw = section(&out, "raw");
    let mut api_objects: Vec<Line> = api
        .iter()
        .filter(|l| !matches!(l.what.as_str(), "page" | "info"))
        .cloned()
        .collect();
    // Both walks run in chain order.
    assert_eq!(api_objects, raw, "the API and plain struct access disagree");
    api_objects.sort();
    assert_eq!(api_objects, want, "C and the writer's model disagree");

    // Restore visited every page once, in the reader's order.
    let bytes = std::fs::read(&dump).unwrap();
    let mem = FlatMemory::new(PhysAddr::new(BASE), &bytes);
    let opts = Options {
        page_size: ps,
        ..Options::default()
    };
    let n = reader::scratch_len(&mem, root, &opts).unwrap();
    let mut scratch = vec![ScratchElem::default(); n];
    let image = reader::validate(&mem, root, &opts, &mut scratch).unwrap();
    let pages: Vec<Line> = image
        .pages()
        .map(|p| Line::new("page", &[p.get()]))
        .collect();
    let c_pages: Vec<Line> = api.iter().filter(|l| l.what == "page").cloned().collect();
    assert_eq!(c_pages, pages);
    assert_eq!(pages.len(), pages_expected);
    let live_devices = model.devices.iter().filter(|d| d.4).count() as u64;
    let info = [pages.len() as u64, 3, live_devices];
    assert!(api.contains(&Line::new("info", &info)), "{out}");
    // Every IOMMU and device was looked up and resolved from C.
    let lookups = 3 + 3 * live_devices;
    assert!(out.contains(&format!("lookups {lookups}\n")), "{out}");
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn rust_writer_image_walked_from_c_agrees_with_the_writer_model() {
    // The root's page, one IOMMU page, three domain and three device pages.
    walk_model_from_c(PageSize::Size4K, 8);
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn rust_writer_image_in_16_and_64_kib_pages_walked_from_c_agrees_with_the_model() {
    // 210 domains and 140 devices fit one page of each chain at 16 KiB.
    walk_model_from_c(PageSize::Size16K, 4);
    walk_model_from_c(PageSize::Size64K, 4);
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn c_writer_image_is_accepted_with_exactly_its_manifest() {
    let dir = out_dir("c_api_writer");
    let exe = build(&dir, "capi_writer");
    let dump = dir.join("capi_writer.dump");
    let out = run_ok(&exe, &[dump.to_str().unwrap()]);
    let lines: Vec<Line> = out
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .map(Line::parse)
        .collect();
    let base = lines
        .iter()
        .find(|l| l.what == "base")
        .expect("base")
        .values[0];
    let root = lines
        .iter()
        .find(|l| l.what == "root")
        .expect("root")
        .values[0];
    let want = objects(&lines);

    let bytes = std::fs::read(&dump).unwrap();
    let mut view = reader_objects(base, root, &bytes);
    view.sort();
    assert!(want.len() > 60, "the C writer wrote too little to test");
    assert_eq!(view, want);

    // Each refusal the C program provoked came back as the documented
    // errno (it compares with <errno.h> itself and says "ok").
    let checks: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert_eq!(
        checks,
        [
            "null-writer EINVAL",
            "null-alloc EINVAL",
            "bad-iommu-type EINVAL",
            "duplicate-iommu EEXIST iommu-exists",
            "invalid-domain EINVAL invalid-domain vasz",
            "duplicate-device EEXIST device-exists",
            "handle-kind EINVAL",
            "domain-in-use EBUSY domain-in-use",
            "iommu-in-use EBUSY iommu-in-use",
            "start-started EBUSY",
            "copied-writer EINVAL",
            "forged-handle EINVAL foreign-handle",
            "unmapped-handle EINVAL foreign-handle",
            "unpreserve-twice ENOENT already-unpreserved",
            "out-of-pages ENOMEM out-of-pages",
            "index-full ENOSPC index-full",
            "stale-writer EUCLEAN inconsistent",
            "after-finish EINVAL",
        ]
    );
}

/// A version-2 image written from C with zlib's crc32() as the CRC
/// callback: the C program checks every page's crc with zlib alone,
/// validates and walks the image through the C API (ser_v2), and the Rust
/// reader sees in its dump exactly what the C walk printed.
#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn c_writer_v2_image_with_a_zlib_crc_callback_is_accepted_with_its_manifest() {
    let dir = out_dir("c_api_v2_zlib");
    let exe = build_with(&dir, "capi_v2_zlib", &["-lz"]);
    let dump = dir.join("capi_v2_zlib.dump");
    let out = run_ok(&exe, &[dump.to_str().unwrap()]);
    let checks: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert_eq!(
        checks,
        [
            "bad-config EINVAL reserved version",
            "writer-crc-callback",
            "zlib-page-crc 6",
            "validate-v2 crc-callback",
            "flipped-bit EBADMSG checksum-mismatch",
        ]
    );
    let lines: Vec<Line> = out
        .lines()
        .filter(|l| !l.starts_with("ok "))
        .map(Line::parse)
        .collect();
    let value = |what: &str| lines.iter().find(|l| l.what == what).expect(what).values[0];
    let (base, root) = (value("base"), value("root"));
    let mut want = objects(&lines);
    want.sort();
    // 2 IOMMUs, 139 domains, 100 devices less 11 unpreserved.
    assert_eq!(want.len(), 2 + 139 + 89, "{out}");
    let bytes = std::fs::read(&dump).unwrap();
    let mut view = reader_objects(base, root, &bytes);
    view.sort();
    assert_eq!(view, want);
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn api_header_and_calls_compile_in_kernel_mode() {
    let obj = out_dir("c_api_kernel").join("kernel_api.o");
    let mut args: Vec<&str> = KERNEL_CFLAGS.to_vec();
    args.extend([
        "-Iinclude",
        "-c",
        "tests/c/kernel_api.c",
        "-o",
        obj.to_str().unwrap(),
    ]);
    gcc(&args);
    // The object calls the API: its undefined symbols are exactly API
    // functions, which the static library defines.
    let nm = std::process::Command::new("nm")
        .args(["-u", obj.to_str().unwrap()])
        .output()
        .expect("nm");
    let undefined = String::from_utf8(nm.stdout).unwrap();
    let wanted: Vec<&str> = undefined
        .split_whitespace()
        .filter(|w| w.starts_with("iommu_flb_"))
        .collect();
    assert!(
        wanted.len() >= 20,
        "kernel_api.c calls too little of the API: {undefined}"
    );
    let defined = std::process::Command::new("nm")
        .args(["--defined-only", "-g", staticlib().to_str().unwrap()])
        .output()
        .expect("nm");
    let defined = String::from_utf8_lossy(&defined.stdout);
    for sym in wanted {
        assert!(
            defined.lines().any(|l| l.ends_with(&format!(" T {sym}"))),
            "libiommu_flb.a does not define {sym}"
        );
    }
}

/// Issue 11, finding 7: the header's cursor initialiser and for_each
/// macros sat after its include guard's #endif, and C++ callers had no
/// extern "C" block. A C++ program includes it (twice: the second time
/// must define no macro), links with the static library and walks an
/// image it wrote.
#[test]
#[cfg_attr(miri, ignore = "runs g++")]
fn api_header_compiles_and_links_as_cxx() {
    let dir = out_dir("c_api_cxx");
    let exe = build_cxx(&dir, "capi_cxx");
    let out = run_ok(&exe, &[]);
    // One of each object, found by the walks; the root's page and one
    // page per chain.
    assert_eq!(out, "cxx 1 1 1 4\n");
}
