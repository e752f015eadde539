//! What every validation result must satisfy, checked against the bytes.
//!
//! [`validate_checked`] validates one image every way the API allows (the
//! scratch sized exactly, one element short, with room to spare; with
//! allocated scratch; in both modes) and asserts that the answers agree. A
//! refusal must be a well-formed typed error ([`check_refusal`]); an
//! accepted image must agree with an independent reading of its bytes
//! ([`check_accepted`]). Everything panics on a violation, which libFuzzer
//! reports as a crash.

use std::collections::{HashMap, HashSet};

use iommu_flb_abi::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
    IOMMU_HW_ARRAY_CAPACITY_4K, IOMMU_LUO_FLB_VERSION, IOMMU_SER_FLAG_DELETED,
    IOMMU_SER_FLAG_INCOMING, IOMMU_SER_FLAGS_KNOWN, IommuDeviceSer, IommuDomainSer, IommuFlbSer,
    IommuHwSer, IommuTypeSer,
};
use iommu_flb_abi::error::{Chain, Error, ErrorKind, Location};
use iommu_flb_abi::reader::{
    self, DevicePayload, Image, IommuPayload, Limits, Mode, Options, RestoreError, ScratchElem,
};
use iommu_flb_abi::{Memory, PhysAddr};
use zerocopy::FromBytes;

use crate::PS;

/// What an accepted image holds, to compare two views of the same image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every page, in restore order.
    pub pages: Vec<PhysAddr>,
    /// Every record of each chain (deleted ones too), in chain order.
    pub records: [Vec<PhysAddr>; 3],
    /// The live IOMMUs, domains and devices, in chain order.
    pub live: [Vec<PhysAddr>; 3],
}

/// The C names of every field an error may blame, and whether it is a
/// record's field (the error then names an object).
const FIELDS: &[(&str, bool)] = &[
    ("version", false),
    ("iommu_array_phys", false),
    ("iommu_domain_array_phys", false),
    ("device_array_phys", false),
    ("next_array_phys", false),
    ("nr_objects", false),
    ("ref_count", true),
    ("flags", true),
    ("type", true),
    ("token", true),
    ("restored", true),
    ("top_table_phys", true),
    ("vasz", true),
    ("sign_extend", true),
    ("padding", true),
    ("vendor", true),
    ("restored_domain", true),
    ("domain_phys", true),
    ("iommu_phys", true),
    ("devid", true),
    // Version 2 (arbitrary bytes may hold a version-2 root): the root's and
    // the page header's fields, and the references by index.
    ("magic", false),
    ("root_size", false),
    ("last_compatible_version", false),
    ("page_size", false),
    ("incompat_features", false),
    ("crc", false),
    ("reserved", false),
    ("stride", false),
    ("pages", false),
    ("domain_index", true),
    ("iommu_index", true),
    ("top_level", true),
];

/// Records per 4 KiB page of `chain`: version 1's capacities, or for a
/// version-2 root (its magic) those of the page's own `stride`.
fn capacity<M: Memory + ?Sized>(mem: &M, root: PhysAddr, chain: Chain, page: PhysAddr) -> u64 {
    let v2 = mem
        .page(root, PS)
        .is_some_and(|r| r.get(8..12) == Some(&b"IFLR"[..]));
    if v2 {
        let stride = mem
            .page(page, PS)
            .and_then(|p| p.get(22..24))
            .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])));
        return (PS.bytes_u64() - 48).checked_div(stride).unwrap_or(0);
    }
    match chain {
        Chain::Iommu => IOMMU_HW_ARRAY_CAPACITY_4K,
        Chain::Domain => IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
        Chain::Device => IOMMU_DEVICE_ARRAY_CAPACITY_4K,
    }
}

const CHAINS: [Chain; 3] = [Chain::Iommu, Chain::Domain, Chain::Device];

/// A refusal is a typed error that says what and where: a negative errno
/// (the kind's), one non-empty log line naming the location and the
/// problem, and a location that is consistent (the root's address for the
/// root; a readable page and a slot within the page's capacity for a
/// chain; a known field, on a record exactly when it is a record's field).
pub fn check_refusal<M: Memory + ?Sized>(mem: &M, root: PhysAddr, e: &Error) {
    let errno = e.errno();
    assert!((-4095..0).contains(&errno), "errno {errno} of {e:?}");
    assert_eq!(errno, e.kind().errno());
    let line = e.to_string();
    assert!(
        line.starts_with("iommu-flb: ") && line.len() > "iommu-flb: ".len(),
        "{line:?}"
    );
    assert!(!line.contains('\n'), "one log line: {line:?}");
    assert!(line.contains(&e.location().to_string()), "{line:?}");
    assert!(line.ends_with(&e.kind().to_string()), "{line:?}");
    assert!(!e.kind().to_string().is_empty());
    let loc: Location = e.location();
    assert_eq!(
        (e.chain(), e.page(), e.page_phys(), e.object(), e.field()),
        (loc.chain, loc.page, loc.page_phys, loc.object, loc.field)
    );
    if let Some(chain) = loc.chain {
        assert!(loc.page.is_some(), "{e:?}");
        assert!(loc.page_phys.is_page_aligned(PS), "{e:?}");
        assert!(
            mem.page(loc.page_phys, PS).is_some(),
            "the blamed page was read: {e:?}"
        );
        if let Some(o) = loc.object {
            assert!(o < capacity(mem, root, chain, loc.page_phys), "{e:?}");
        }
    } else {
        assert_eq!(loc.page, None, "{e:?}");
        assert_eq!(loc.object, None, "{e:?}");
        assert_eq!(loc.page_phys, root, "a root error names the root: {e:?}");
    }
    if let Some(field) = loc.field {
        let Some(&(_, in_record)) = FIELDS.iter().find(|(f, _)| *f == field) else {
            panic!("unknown field {field:?} in {e:?}");
        };
        assert_eq!(in_record, loc.object.is_some(), "{e:?}");
    }
}

/// Validates the image at `root` in `mode` every way the API allows,
/// asserts that the ways agree, and checks the result.
pub fn validate_checked<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    mode: Mode,
    limits: Limits,
) -> Result<Summary, Error> {
    let opts = Options {
        mode,
        limits,
        page_size: PS,
        ..Options::default()
    };
    let n = match reader::scratch_len(mem, root, &opts) {
        Ok(n) => n,
        Err(e) => {
            check_refusal(mem, root, &e);
            let mut none: [ScratchElem; 0] = [];
            let again = reader::validate(mem, root, &opts, &mut none).map(|_| ());
            assert_eq!(again, Err(e), "validate fails as scratch_len did");
            let alloc = reader::validate_alloc(mem, root, &opts).map(|_| ());
            assert_eq!(alloc, Err(e), "validate_alloc fails as scratch_len did");
            return Err(e);
        }
    };
    assert!(n >= 1, "the root's page always needs an element");

    let mut short = vec![ScratchElem::default(); n - 1];
    let r = reader::validate(mem, root, &opts, &mut short).map(|_| ());
    let want = ErrorKind::ScratchTooSmall {
        needed: n,
        got: n - 1,
    };
    assert_eq!(r, Err(Error::new(want, Location::root(root, None))));

    let mut scratch = vec![ScratchElem::default(); n];
    let exact = reader::validate(mem, root, &opts, &mut scratch)
        .map(|image| check_accepted(mem, root, mode, &image));
    let mut roomy = vec![ScratchElem::default(); n + 3];
    let more = reader::validate(mem, root, &opts, &mut roomy).map(|image| summarize(&image));
    assert_eq!(exact, more, "spare scratch changes nothing");
    let owned = reader::validate_alloc(mem, root, &opts).map(|owned| summarize(&owned.image()));
    assert_eq!(exact, owned, "validate_alloc agrees with validate");
    // Validation with a visitor refuses alike and, on a valid image, hands
    // over what the view's iterators yield, in their order.
    let mut seen = Seen(Vec::new());
    let visited = reader::validate_with(mem, root, &opts, &mut roomy, &mut seen).map(|image| {
        let iommus = image.iommus().map(|i| ('i', i.phys()));
        let domains = image.domains().map(|d| ('d', d.phys()));
        let devices = image.device_records().map(|d| ('v', d.phys()));
        iommus.chain(domains).chain(devices).collect::<Vec<_>>()
    });
    match (&exact, visited) {
        (Ok(_), Ok(want)) => assert_eq!(seen.0, want, "a visitor sees every live record in order"),
        (Err(e), Err(v)) => assert_eq!(*e, v, "validate_with refuses as validate does"),
        (e, v) => panic!("validate {e:?}, validate_with {v:?}"),
    }
    if let Err(e) = &exact {
        check_refusal(mem, root, e);
        assert!(
            !matches!(e.kind(), ErrorKind::ScratchTooSmall { .. }),
            "scratch_len was enough: {e:?}"
        );
    }
    exact
}

/// What a visitor was handed: each record's kind (`i`, `d`, `v`) and
/// address, in order.
struct Seen(Vec<(char, PhysAddr)>);

impl<'m> reader::Visitor<'m> for Seen {
    fn iommu(&mut self, i: reader::Iommu<'m>) {
        self.0.push(('i', i.phys()));
    }

    fn domain(&mut self, d: reader::Domain<'m>) {
        self.0.push(('d', d.phys()));
    }

    fn device(&mut self, d: reader::DeviceRecord<'m>) {
        self.0.push(('v', d.phys()));
    }
}

/// Validates in both modes and asserts that handover mode is the stricter:
/// what it accepts, restored mode accepts identically; where restored mode
/// refuses, handover mode refuses the same way or earlier for a field set
/// after restore. Returns the handover result.
pub fn validate_both<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    limits: Limits,
) -> Result<Summary, Error> {
    let handover = validate_checked(mem, root, Mode::Handover, limits);
    let restored = validate_checked(mem, root, Mode::Restored, limits);
    match (&handover, &restored) {
        (Ok(h), Ok(r)) => assert_eq!(h, r, "both modes see the same image"),
        (Ok(_), Err(e)) => panic!("handover mode accepts what restored mode refuses: {e}"),
        (Err(h), Err(r)) if h != r => assert_eq!(
            h.kind(),
            ErrorKind::AlreadyRestored,
            "handover refuses with {h}, restored with {r}"
        ),
        (Err(h), Ok(_)) => assert_eq!(h.kind(), ErrorKind::AlreadyRestored, "{h}"),
        (Err(_), Err(_)) => {}
    }
    handover
}

/// Validates with `small` limits and with the defaults, and asserts they
/// agree: an image accepted under small limits is accepted under larger
/// ones the same way; one accepted under the defaults is either accepted
/// under small ones or refused for a limit. Returns the small-limit result
/// (handover mode).
pub fn validate_limits<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    small: Limits,
) -> Result<Summary, Error> {
    let with_small = validate_both(mem, root, small);
    if small == Limits::default() {
        return with_small;
    }
    let with_default = validate_both(mem, root, Limits::default());
    match (&with_small, &with_default) {
        (Ok(s), Ok(d)) => assert_eq!(s, d),
        (Ok(_), Err(e)) => panic!("accepted under small limits, refused under defaults: {e}"),
        (Err(e), Ok(_)) => assert!(
            matches!(e.kind(), ErrorKind::LimitExceeded { .. }),
            "accepted under default limits, refused under {small:?} with {e}"
        ),
        (Err(_), Err(_)) => {}
    }
    with_small
}

fn read_u64(page: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(page[off..off + 8].try_into().expect("8 bytes"))
}

/// The [`Summary`] of a view, read through its accessors only.
pub fn summarize<M: Memory + ?Sized>(image: &Image<'_, '_, M>) -> Summary {
    Summary {
        pages: image.pages().collect(),
        records: [
            image.all_iommus().map(|r| r.phys()).collect(),
            image.all_domains().map(|r| r.phys()).collect(),
            image.all_devices().map(|r| r.phys()).collect(),
        ],
        live: [
            image.iommus().map(|r| r.phys()).collect(),
            image.domains().map(|r| r.phys()).collect(),
            image.devices().map(|r| r.phys()).collect(),
        ],
    }
}

/// Records whose `Debug` output is formatted (all of them would slow the
/// fuzzer; the code is the same for each).
const DEBUG_RECORDS: usize = 3;

/// Whether `r` (from the view) is exactly the bytes at `phys` in `mem`.
fn same_bytes<M: Memory + ?Sized, T>(mem: &M, phys: PhysAddr, r: &T) -> bool {
    let Some(page) = mem.page(phys.page_base(PS), PS) else {
        return false;
    };
    let want = page[phys.page_offset(PS)..].as_ptr();
    core::ptr::eq((r as *const T).cast::<u8>(), want)
}

/// Checks an accepted image against an independent reading of its bytes:
/// the root, the chains and their counts, every record at the address it
/// claims, live records filtered from all records, every lookup returning
/// the record it is asked for, every device's domain and IOMMU being live
/// records of the right kind at exactly the addresses the device names,
/// payloads matching IOMMU types, ref counts matching live devices, keys
/// unique, the handover-only fields clear in handover mode, and the restore
/// walk yielding every page once, root first.
pub fn check_accepted<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    mode: Mode,
    image: &Image<'_, '_, M>,
) -> Summary {
    if image.format() != IOMMU_LUO_FLB_VERSION {
        // A version-2 image in arbitrary bytes (the fuzzer can satisfy a
        // CRC comparison): target `mutate_v2` checks version-2 acceptances
        // against its own builder; here the ways of validating it must
        // only agree (`validate_checked` compares the summaries).
        return summarize(image);
    }
    assert_eq!(image.version(), IOMMU_LUO_FLB_VERSION);
    assert_eq!(image.root_phys(), root);
    let _ = format!("{image:?}");

    // The root, read independently: it starts its page.
    assert!(root.is_page_aligned(PS), "the root starts its page");
    let root_page = mem.page(root, PS).expect("root page readable");
    let (ser, _) = IommuFlbSer::ref_from_prefix(root_page).expect("root fits its page");
    assert!(
        core::ptr::eq(ser, image.root_v1().expect("a version-1 image")),
        "root() is the root's bytes"
    );
    let heads = [
        ser.iommu_array_phys.get(),
        ser.iommu_domain_array_phys.get(),
        ser.device_array_phys.get(),
    ];

    // Pages: root first, each chain as its pointers say, each page once.
    let pages: Vec<PhysAddr> = image.pages().collect();
    assert_eq!(pages.len(), image.page_count());
    assert_eq!(pages.first(), Some(&root.page_base(PS)));
    let distinct: HashSet<_> = pages.iter().collect();
    assert_eq!(distinct.len(), pages.len(), "every page once");
    let mut at = 1usize;
    let mut counts: [Vec<(PhysAddr, u64)>; 3] = Default::default();
    for (c, chain) in CHAINS.into_iter().enumerate() {
        let n = image.chain_pages(chain);
        assert!(n >= 1, "a chain has its head page");
        let mine = &pages[at..at + n];
        at += n;
        let mut p = heads[c];
        for (i, &page) in mine.iter().enumerate() {
            assert_eq!(
                page.get(),
                p,
                "{chain} chain page {i} is where the link points"
            );
            let bytes = mem.page(page, PS).expect("chain page readable");
            let nr = read_u64(bytes, 8);
            assert!(nr <= capacity(mem, root, chain, page));
            p = read_u64(bytes, 0);
            if i + 1 < n {
                assert_eq!(
                    nr,
                    capacity(mem, root, chain, page),
                    "only the last page may be partial"
                );
            }
            counts[c].push((page, nr));
        }
        assert_eq!(p, 0, "the {chain} chain ends where its last link is null");
    }
    assert_eq!(at, pages.len());
    check_restore(image, &pages);

    // Every record slot, in chain order, at its address.
    let slots = |c: usize, size: usize| -> Vec<PhysAddr> {
        counts[c]
            .iter()
            .flat_map(|&(p, nr)| {
                (0..nr)
                    .map(move |k| PhysAddr::new(p.get() + IOMMU_ARRAY_HDR_SIZE + k * size as u64))
            })
            .collect()
    };
    let records = [
        slots(0, size_of::<IommuHwSer>()),
        slots(1, size_of::<IommuDomainSer>()),
        slots(2, size_of::<IommuDeviceSer>()),
    ];
    let all_iommus: Vec<_> = image.all_iommus().collect();
    let all_domains: Vec<_> = image.all_domains().collect();
    let all_devices: Vec<_> = image.all_devices().collect();
    let phys_of = |v: &mut dyn Iterator<Item = PhysAddr>| v.collect::<Vec<_>>();
    assert_eq!(
        phys_of(&mut all_iommus.iter().map(|r| r.phys())),
        records[0]
    );
    assert_eq!(
        phys_of(&mut all_domains.iter().map(|r| r.phys())),
        records[1]
    );
    assert_eq!(
        phys_of(&mut all_devices.iter().map(|r| r.phys())),
        records[2]
    );
    for (i, r) in all_iommus.iter().enumerate() {
        assert!(same_bytes(
            mem,
            r.phys(),
            r.v1().expect("a version-1 image")
        ));
        if i < DEBUG_RECORDS {
            let _ = format!("{r:?}");
        }
    }
    for (i, r) in all_domains.iter().enumerate() {
        assert!(same_bytes(
            mem,
            r.phys(),
            r.v1().expect("a version-1 image")
        ));
        if i < DEBUG_RECORDS {
            let _ = format!("{r:?}");
        }
    }
    for (i, r) in all_devices.iter().enumerate() {
        assert!(same_bytes(
            mem,
            r.phys(),
            r.v1().expect("a version-1 image")
        ));
        if i < DEBUG_RECORDS {
            let _ = format!("{r:?}");
        }
    }

    let handover = mode == Mode::Handover;
    let live = [
        check_iommus(image, &all_iommus, handover),
        check_domains(image, &all_domains, handover),
        check_devices(image, &all_iommus, &all_domains, &all_devices, handover),
    ];
    Summary {
        pages,
        records,
        live,
    }
}

fn check_restore<M: Memory + ?Sized>(image: &Image<'_, '_, M>, pages: &[PhysAddr]) {
    let mut seen = Vec::new();
    let n = image.restore(|p| {
        seen.push(p);
        Ok::<(), ()>(())
    });
    assert_eq!(n, Ok(pages.len()));
    assert_eq!(seen, pages, "restore walks pages() in order");
    let fail = pages.len() / 2;
    let mut i = 0usize;
    let r = image.restore(|_| {
        i += 1;
        if i > fail { Err(7u8) } else { Ok(()) }
    });
    let want = RestoreError {
        page: pages[fail],
        index: fail,
        error: 7,
    };
    assert_eq!(r, Err(want));
    assert_eq!(want.restored(), fail);
    assert!(!want.to_string().is_empty());
    assert_eq!(i, fail + 1, "restore stops at the first failure");
}

/// Asserts that the live records (`$live`) are all records (`$all`)
/// without the deleted ones, in order; gives their addresses.
macro_rules! live_is_all_but_deleted {
    ($live:expr, $all:expr, $what:literal) => {{
        let want: Vec<PhysAddr> = $all
            .iter()
            .filter(|r| !r.is_deleted())
            .map(|r| r.phys())
            .collect();
        let phys: Vec<PhysAddr> = $live.iter().map(|r| r.phys()).collect();
        assert_eq!(
            phys, want,
            concat!($what, " is every record but the deleted")
        );
        phys
    }};
}

fn check_header(ref_count: u32, flags: u32, handover: bool) {
    assert_eq!(flags & !IOMMU_SER_FLAGS_KNOWN, 0, "known flags only");
    assert_eq!(flags & IOMMU_SER_FLAG_DELETED, 0, "live");
    assert_ne!(ref_count, 0);
    if handover {
        assert_eq!(flags & IOMMU_SER_FLAG_INCOMING, 0);
    }
}

fn check_iommus<M: Memory + ?Sized>(
    image: &Image<'_, '_, M>,
    all: &[reader::AnyIommu<'_>],
    handover: bool,
) -> Vec<PhysAddr> {
    let live: Vec<_> = image.iommus().collect();
    let phys = live_is_all_but_deleted!(live, all, "iommus()");
    assert_eq!(live.len(), image.live_iommus());
    let mut keys = HashSet::new();
    for (i, m) in live.iter().enumerate() {
        if i < DEBUG_RECORDS {
            let _ = format!("{m:?}");
        }
        let rec = m.v1().expect("a version-1 image");
        check_header(m.ref_count(), m.flags(), handover);
        assert!(!m.is_deleted());
        assert_eq!(m.token(), rec.token.get());
        assert_eq!(rec.r#type.get(), m.iommu_type().wire());
        match (m.payload(), m.iommu_type()) {
            (IommuPayload::Intel(p), IommuTypeSer::IommuIntel) => {
                if handover {
                    assert_eq!(p.restored, 0);
                }
                assert_eq!(p.padding, [0; 7]);
            }
            (IommuPayload::Smmuv3(_), IommuTypeSer::IommuArmSmmuv3) => {}
            (p, t) => panic!("payload {p:?} for type {t:?}"),
        }
        assert!(keys.insert((m.token(), m.iommu_type())), "unique keys");
        let found = image
            .find_iommu(m.token(), m.iommu_type())
            .map(|f| f.phys());
        assert_eq!(found, Some(m.phys()), "find_iommu finds the record");
    }
    // A key no live IOMMU has is not found (deleted records' keys, and the
    // other type of each live token).
    for r in all {
        for ty in [IommuTypeSer::IommuIntel, IommuTypeSer::IommuArmSmmuv3] {
            let token = r.v1().expect("a version-1 image").token.get();
            if !keys.contains(&(token, ty)) {
                assert!(image.find_iommu(token, ty).is_none());
            }
        }
    }
    phys
}

fn check_domains<M: Memory + ?Sized>(
    image: &Image<'_, '_, M>,
    all: &[reader::Domain<'_>],
    handover: bool,
) -> Vec<PhysAddr> {
    let live: Vec<_> = image.domains().collect();
    let phys = live_is_all_but_deleted!(live, all, "domains()");
    for d in &live {
        let rec = d.v1().expect("a version-1 image");
        check_header(rec.hdr.ref_count.get(), rec.hdr.flags.get(), handover);
        assert_eq!(rec.hdr.ref_count.get(), 1, "a live domain's ref_count");
        let top = d.top_table_phys();
        assert!(!top.is_null() && top.is_page_aligned(PS));
        assert!(rec.vasz.get() <= 64);
        assert!(rec.sign_extend <= 1);
        assert_eq!(rec.padding, [0; 3]);
        if handover {
            assert_eq!(rec.restored_domain.get(), 0);
        }
    }
    phys
}

fn check_devices<M: Memory + ?Sized>(
    image: &Image<'_, '_, M>,
    iommus: &[reader::AnyIommu<'_>],
    domains: &[reader::Domain<'_>],
    all: &[reader::AnyDevice<'_>],
    handover: bool,
) -> Vec<PhysAddr> {
    let iommu_at: HashMap<PhysAddr, _> = iommus.iter().map(|r| (r.phys(), r)).collect();
    let domain_at: HashMap<PhysAddr, _> = domains.iter().map(|r| (r.phys(), r)).collect();
    let live_iommus: HashSet<PhysAddr> = image.iommus().map(|m| m.phys()).collect();
    let live_domains: HashSet<PhysAddr> = image.domains().map(|d| d.phys()).collect();

    // Any device, deleted or not: its domain and IOMMU resolve exactly when
    // its pointers name a record of the right kind (an IOMMU of a known
    // type), and then to that record.
    for d in all {
        let map = &d.v1().expect("a version-1 image").domain_iommu_ser;
        let (dom, hw) = (
            PhysAddr::new(map.domain_phys.get()),
            PhysAddr::new(map.iommu_phys.get()),
        );
        assert_eq!(
            d.domain().map(|x| x.phys()),
            domain_at.get(&dom).map(|_| dom)
        );
        let typed = iommu_at.get(&hw).and_then(|r| r.iommu());
        assert_eq!(d.iommu().map(|x| x.phys()), typed.map(|_| hw));
        assert_eq!(d.payload().is_some(), d.iommu().is_some());
        if let (Some(p), Some(m)) = (d.payload(), d.iommu()) {
            check_device_payload(p, m.iommu_type());
        }
        if !d.is_deleted() {
            assert!(d.device().is_some(), "a live device resolves");
        }
    }

    let live: Vec<_> = image.devices().collect();
    let phys = live_is_all_but_deleted!(live, all, "devices()");
    assert_eq!(live.len(), image.live_devices());
    let mut keys = HashSet::new();
    let mut refs: HashMap<PhysAddr, u64> = HashMap::new();
    for (i, d) in live.iter().enumerate() {
        if i < DEBUG_RECORDS {
            let _ = format!("{d:?}");
        }
        let rec = d.v1().expect("a version-1 image");
        check_header(rec.hdr.ref_count.get(), rec.hdr.flags.get(), handover);
        assert_eq!(rec.hdr.ref_count.get(), 1, "a live device's ref_count");
        assert!(!d.is_deleted());
        assert_eq!(
            (d.segment(), d.devid()),
            (rec.pci_domain_nr.get(), rec.devid.get())
        );
        let map = &rec.domain_iommu_ser;
        assert_eq!(d.domain().phys().get(), map.domain_phys.get());
        assert!(live_domains.contains(&d.domain().phys()), "domain is live");
        assert!(!d.domain().is_deleted());
        assert_eq!(d.iommu().phys().get(), map.iommu_phys.get());
        assert!(live_iommus.contains(&d.iommu().phys()), "IOMMU is live");
        let p = d.payload();
        check_device_payload(p, d.iommu().iommu_type());
        match p {
            DevicePayload::Intel(p) => {
                if handover {
                    assert_eq!(p.restored, 0);
                }
                assert_eq!(p.padding, [0; 7]);
            }
            DevicePayload::Smmuv3(p) => assert_eq!(p.padding.get(), 0),
            DevicePayload::IntelV2(_) => panic!("a version-2 payload in a version-1 image"),
        }
        assert!(keys.insert((d.segment(), d.devid())), "unique keys");
        let found = image.find_device(d.segment(), d.devid()).map(|f| f.phys());
        assert_eq!(found, Some(d.phys()), "find_device finds the record");
        *refs.entry(d.iommu().phys()).or_default() += 1;
    }
    for m in image.iommus() {
        let n = refs.get(&m.phys()).copied().unwrap_or(0);
        assert_eq!(u64::from(m.ref_count()), n, "ref_count of {}", m.phys());
    }
    for d in all {
        let r = d.v1().expect("a version-1 image");
        let key = (r.pci_domain_nr.get(), r.devid.get());
        if !keys.contains(&key) {
            assert!(image.find_device(key.0, key.1).is_none());
        }
    }
    phys
}

fn check_device_payload(p: DevicePayload<'_>, ty: IommuTypeSer) {
    match (p, ty) {
        (DevicePayload::Intel(_), IommuTypeSer::IommuIntel)
        | (DevicePayload::Smmuv3(_), IommuTypeSer::IommuArmSmmuv3) => {}
        (p, t) => panic!("device payload {p:?} behind an IOMMU of type {t:?}"),
    }
}
