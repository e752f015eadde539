//! Images the library's writer builds, placed in a `GuestMemoryMmap` at
//! their physical addresses, validated through `GuestImage`: both format
//! versions, 4 and 16 KiB pages, chains that hop between two regions across
//! a hole. What the reader shows must be exactly what was written (and what
//! it shows reading the writer's own pages); a root in the hole, a chain
//! page straddling the end of a region and a page at the top of the
//! address space must be refused with the reader's errors, never a panic.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::error::{Chain, ErrorKind};
use iommu_flb_abi::reader::{self, Image, Options};
use iommu_flb_abi::writer::*;
use iommu_flb_abi::{Error, Memory, PageMap, PhysAddr};
use iommu_flb_vmm::GuestImage;
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryResult, Permissions,
};

const K4: PageSize = PageSize::Size4K;
const K16: PageSize = PageSize::Size16K;

/// Guest RAM: two regions of 256 KiB with a hole of 6 MiB between them.
const A: u64 = 0x10_0000;
const B: u64 = 0x80_0000;
const LEN: u64 = 0x4_0000;
/// An address in the hole.
const HOLE: u64 = 0x40_0000;
/// The highest 4 KiB page (its last byte is `u64::MAX`).
const TOP: u64 = !0xfff;

const DEVICES: u64 = 300;
const GEN: u64 = 0x5eed;

fn p(a: u64) -> PhysAddr {
    PhysAddr::new(a)
}

fn len(n: u64) -> usize {
    usize::try_from(n).expect("64-bit host")
}

fn guest(regions: &[(u64, u64)]) -> GuestMemoryMmap {
    let ranges: Vec<(GuestAddress, usize)> = regions
        .iter()
        .map(|&(at, n)| (GuestAddress(at), len(n)))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
}

fn two_regions() -> GuestMemoryMmap {
    guest(&[(A, LEN), (B, LEN)])
}

/// Page addresses alternating between the two regions, so that consecutive
/// pages of a chain are on both sides of the hole.
fn alternating(ps: PageSize) -> Vec<u64> {
    (0..8u64)
        .flat_map(|i| [A + i * ps.bytes_u64(), B + i * ps.bytes_u64()])
        .collect()
}

fn opts(ps: PageSize) -> Options {
    Options {
        page_size: ps,
        ..Options::default()
    }
}

/// A live device as a VMM would look at it: (segment, devid, owner token,
/// attachment, its domain's top table, its IOMMU's token).
type DevRow = (u32, u32, u64, u64, PhysAddr, u64);

/// An image the writer built, and what it holds.
struct Built {
    root: PhysAddr,
    pages: PageMap,
    devices: Vec<DevRow>,
    domains: Vec<PhysAddr>,
    /// (token, live devices behind it).
    iommus: Vec<(u64, u32)>,
}

/// Two Intel IOMMUs, three domains and `DEVICES` devices spread over them,
/// every tenth device (from the fourth) unpreserved again, in format
/// `version`, the pages taken from `addrs` in order.
fn build(version: u64, ps: PageSize, addrs: &[u64]) -> Built {
    let config = match version {
        1 => Config::v1(),
        _ => Config::v2(GEN),
    };
    let alloc = MapAlloc::from_list(addrs.iter().copied().map(p)).with_page_size(ps);
    let mut w = Writer::with_config(alloc, config).expect("start");
    let tokens = [0xfed9_0000u64, 0xfed9_1000];
    let iommus = tokens.map(|t| {
        let payload = IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: p(t),
            root_table: p(0x7000_0000 + (t & 0xf000)),
            context_tables_bitmap: [1, 0, 0, 0, 0, 0, 0, 1],
        });
        w.preserve_iommu(t, payload).expect("IOMMU")
    });
    let tables = [0x100_0000u64, 0x100_1000, 0x100_2000].map(p);
    let domains = tables.map(|top_table_phys| {
        let d = DomainInit {
            top_table_phys,
            top_level: 4,
            vasz: 48,
            sign_extend: 0,
        };
        w.preserve_domain(d).expect("domain")
    });
    let mut devices = Vec::new();
    let mut live_behind = [0u32; 2];
    for k in 0..DEVICES {
        let (seg, devid) = (
            u32::try_from(k / 200).unwrap(),
            u32::try_from(k % 200 * 8).unwrap(),
        );
        let (dom, io) = (len(k % 3), len(k % 2));
        let init = DeviceInit {
            pci_domain_nr: seg,
            devid,
            dma_owner_token: 0x1000 + k,
            attachment_id: k % 7 + 1,
            payload: DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: p(0x200_0000 + k * 0x1000),
                max_pasid: 16,
            }),
        };
        let h = w
            .preserve_device(init, domains[dom], iommus[io])
            .expect("device");
        if k % 10 == 3 {
            w.unpreserve_device(h).expect("unpreserve");
        } else {
            devices.push((seg, devid, 0x1000 + k, k % 7 + 1, tables[dom], tokens[io]));
            live_behind[io] += 1;
        }
    }
    let (root, alloc) = w.finish();
    Built {
        root,
        pages: alloc.into_map(),
        devices,
        domains: tables.to_vec(),
        iommus: tokens.into_iter().zip(live_behind).collect(),
    }
}

/// Writes every page of `pages` into `guest` at its address, as much of it
/// as is guest memory from its start; returns the bytes written per page.
fn place(guest: &GuestMemoryMmap, pages: &PageMap) -> Vec<(PhysAddr, usize)> {
    pages
        .iter()
        .map(|(a, page)| (a, guest.write(page, GuestAddress(a.get())).unwrap_or(0)))
        .collect()
}

/// The example image in format `version`, pages of `ps` alternating
/// between the two regions, placed whole in a fresh two-region guest.
fn in_guest(version: u64, ps: PageSize) -> (Built, GuestMemoryMmap) {
    let built = build(version, ps, &alternating(ps));
    let guest = two_regions();
    for (a, n) in place(&guest, &built.pages) {
        assert_eq!(n, ps.bytes(), "page {a} wholly in guest memory");
    }
    (built, guest)
}

fn dev_rows<M: Memory + ?Sized>(image: &Image<'_, '_, M>) -> Vec<DevRow> {
    image
        .devices()
        .map(|d| {
            (
                d.segment(),
                d.devid(),
                d.dma_owner_token(),
                d.attachment_id(),
                d.domain().top_table_phys(),
                d.iommu().token(),
            )
        })
        .collect()
}

/// Everything the view shows, deleted records included, as text.
fn everything<M: Memory + ?Sized>(image: &Image<'_, '_, M>) -> Vec<String> {
    let mut out = vec![format!(
        "{:?}",
        image.chain_pages_iter().collect::<Vec<_>>()
    )];
    out.extend(image.all_iommus().map(|r| format!("{r:?}")));
    out.extend(image.all_domains().map(|r| format!("{r:?}")));
    out.extend(image.all_devices().map(|r| format!("{r:?}")));
    out
}

/// Validation of the image at `root` through `mem`, which must fail.
fn refused<M: Memory + ?Sized>(mem: &M, root: PhysAddr, ps: PageSize) -> Error {
    reader::validate_alloc(mem, root, &opts(ps)).expect_err("must be refused")
}

#[test]
fn images_of_both_versions_validate_in_guest_memory_as_written() {
    for version in [1, 2] {
        for ps in [K4, K16] {
            let what = format!("version {version}, {} KiB pages", ps.bytes() / 1024);
            let (built, guest) = in_guest(version, ps);
            let mem = GuestImage::new(&guest);
            let owned = reader::validate_alloc(&mem, built.root, &opts(ps))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let image = owned.image();
            assert_eq!(image.version(), version, "{what}");
            assert_eq!(image.page_size(), ps, "{what}");

            // The chains hop across the hole: both regions hold image pages.
            let pages: Vec<PhysAddr> = image.pages().collect();
            assert!(pages.iter().any(|a| a.get() < A + LEN), "{what}");
            assert!(pages.iter().any(|a| a.get() >= B), "{what}");
            assert_eq!(pages.len(), built.pages.len(), "{what}: every page");

            assert_eq!(dev_rows(&image), built.devices, "{what}: live devices");
            let domains: Vec<PhysAddr> = image.domains().map(|d| d.top_table_phys()).collect();
            assert_eq!(domains, built.domains, "{what}: live domains");
            let iommus: Vec<(u64, u32)> =
                image.iommus().map(|i| (i.token(), i.ref_count())).collect();
            assert_eq!(iommus, built.iommus, "{what}: live IOMMUs");

            // Every field of every record, deleted ones too, is what the
            // reader shows reading the writer's own pages.
            let direct = reader::validate_alloc(&built.pages, built.root, &opts(ps))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(everything(&image), everything(&direct.image()), "{what}");
            assert_eq!(
                mem.pages_asked(),
                built.pages.len(),
                "{what}: one copy a page"
            );
        }
    }
}

#[test]
fn the_example_image_uses_several_pages_per_chain() {
    // What the test above relies on to cross the hole inside a chain.
    let built = build(1, K4, &alternating(K4));
    let direct = reader::validate_alloc(&built.pages, built.root, &opts(K4)).expect("valid");
    assert!(direct.image().chain_pages(Chain::Device) >= 3);
}

#[test]
fn a_root_in_the_hole_is_root_unreadable() {
    for version in [1, 2] {
        let mut addrs = alternating(K4);
        addrs.insert(0, HOLE);
        let built = build(version, K4, &addrs);
        assert_eq!(built.root, p(HOLE));
        let guest = two_regions();
        let placed = place(&guest, &built.pages);
        assert!(
            placed.contains(&(p(HOLE), 0)),
            "the root could not be placed"
        );
        let err = refused(&GuestImage::new(&guest), built.root, K4);
        assert_eq!(
            err.kind(),
            ErrorKind::RootUnreadable,
            "version {version}: {err}"
        );
        assert_eq!(err.page_phys(), p(HOLE));
        assert_eq!(err.chain(), None);
    }
}

#[test]
fn a_chain_page_straddling_the_end_of_a_region_is_unreadable() {
    // Region A ends 0x800 bytes into the page at `STRADDLE`; the hole
    // follows.
    const STRADDLE: u64 = A + 0x8000;
    for version in [1, 2] {
        let mut addrs: Vec<u64> = (0..12u64).map(|i| B + i * 0x1000).collect();
        // The sixth page taken: in both versions the device chain's third
        // (root, IOMMU, domain, device 0, 1, 2).
        addrs.insert(5, STRADDLE);
        let built = build(version, K4, &addrs);
        let direct = reader::validate_alloc(&built.pages, built.root, &opts(K4)).expect("valid");
        assert!(
            direct
                .image()
                .chain_pages_iter()
                .any(|(a, c, i)| a == p(STRADDLE) && c == Some(Chain::Device) && i == 2),
            "version {version}: the straddling page is device page 2"
        );
        let guest = guest(&[(A, 0x8800), (B, LEN)]);
        let placed = place(&guest, &built.pages);
        assert!(
            placed.contains(&(p(STRADDLE), 0x800)),
            "its first 0x800 bytes are in the guest, as written"
        );
        let mem = GuestImage::new(&guest);
        assert!(mem.page(p(STRADDLE), K4).is_none());
        let err = refused(&mem, built.root, K4);
        assert_eq!(
            err.kind(),
            ErrorKind::Unreadable {
                target: p(STRADDLE)
            },
            "version {version}: {err}"
        );
        assert_eq!(err.chain(), Some(Chain::Device), "version {version}: {err}");
    }
}

#[test]
fn a_page_at_the_top_of_the_address_space_is_unreadable() {
    // A region just below the top page: the region may not end at 2^64.
    const HIGH: u64 = TOP - 0x2000;
    for version in [1, 2] {
        let mut addrs: Vec<u64> = (0..12u64).map(|i| B + i * 0x1000).collect();
        // Device pages 1 and 2 (the fifth and sixth pages taken): the last
        // page of the high region, then the top page.
        addrs.splice(4..4, [HIGH + 0x1000, TOP]);
        let built = build(version, K4, &addrs);
        let guest = guest(&[(A, LEN), (B, LEN), (HIGH, 0x2000)]);
        let placed = place(&guest, &built.pages);
        assert!(placed.contains(&(p(HIGH + 0x1000), 0x1000)));
        assert!(placed.contains(&(p(TOP), 0)));
        let mem = GuestImage::new(&guest);
        let high = mem.page(p(HIGH + 0x1000), K4).expect("below the top page");
        assert_eq!(
            Some(high),
            built.pages.page(p(HIGH + 0x1000), K4),
            "read as written"
        );
        let err = refused(&mem, built.root, K4);
        assert_eq!(
            err.kind(),
            ErrorKind::Unreadable { target: p(TOP) },
            "version {version}: {err}"
        );
        assert_eq!(err.chain(), Some(Chain::Device));
        assert_eq!(err.page_phys(), p(HIGH + 0x1000), "reported at its holder");

        for ps in PageSize::ALL {
            let top = TOP & !ps.mask();
            assert!(mem.page(p(top), ps).is_none(), "{ps:?}");
            let err = refused(&mem, p(top), ps);
            assert_eq!(err.kind(), ErrorKind::RootUnreadable, "{ps:?}: {err}");
        }
    }
}

/// Whether the model says the page of `ps` at `at` is readable: aligned,
/// and every byte inside one of `regions` (which may touch).
fn model_readable(regions: &[(u64, u64)], at: u64, ps: PageSize) -> bool {
    if at & ps.mask() != 0 {
        return false;
    }
    let last = at + ps.mask();
    let mut next = at; // the first byte not yet covered
    let mut sorted = regions.to_vec();
    sorted.sort_unstable();
    for (start, n) in sorted {
        let end = start + (n - 1);
        if start <= next && next <= end {
            if last <= end {
                return true;
            }
            next = end + 1;
        }
    }
    false
}

#[test]
fn page_reads_exactly_the_pages_wholly_in_guest_memory() {
    // Touching regions (A, A2), an unaligned end (A2), a hole, a region
    // below the top page.
    let regions = [
        (A, 0x6000),
        (A + 0x6000, 0x2800),
        (B, LEN),
        (TOP - 0x2_0000, 0x2_0000),
    ];
    let guest = guest(&regions);
    for &(start, n) in &regions {
        for i in (0..n).step_by(0x100) {
            // Every 256 bytes carry their own address.
            guest
                .write_slice(&(start + i).to_le_bytes(), GuestAddress(start + i))
                .expect("inside");
        }
    }
    let mem = GuestImage::new(&guest);
    let windows = [A, A + 0x6000, A + 0x8800, B, B + LEN, TOP - 0x2_0000, TOP];
    let mut checked = 0;
    for w in windows {
        for step in 0..0x40u64 {
            let at = (w - 0x1_0000).wrapping_add(step * 0x800);
            for ps in PageSize::ALL {
                let page = mem.page(p(at), ps);
                let want = model_readable(&regions, at, ps);
                assert_eq!(page.is_some(), want, "{at:#x} {ps:?}");
                if let Some(page) = page {
                    assert_eq!(page.len(), ps.bytes());
                    for (i, chunk) in page.chunks(0x100).enumerate() {
                        let addr = at + u64::try_from(i).unwrap() * 0x100;
                        assert_eq!(chunk[..8], addr.to_le_bytes(), "{at:#x} {ps:?}");
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, windows.len() * 0x40 * 3);
    // The page across the touching regions is read whole.
    assert!(mem.page(p(A + 0x4000), K16).is_some());
    // Unaligned, inside memory.
    assert!(mem.page(p(A + 0x800), K4).is_none());
    assert!(mem.page(p(A + 0x1000), K16).is_none());
}

/// A `GuestMemory` of its own (not a `GuestMemoryBackend`) that counts the
/// reads that reach the guest.
struct Counting<'g> {
    inner: &'g GuestMemoryMmap,
    reads: AtomicUsize,
}

impl<'g> Counting<'g> {
    fn new(inner: &'g GuestMemoryMmap) -> Self {
        Counting {
            inner,
            reads: AtomicUsize::new(0),
        }
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

impl GuestMemory for Counting<'_> {
    type PhysicalMemory = GuestMemoryMmap;
    type Bitmap = <GuestMemoryMmap as GuestMemory>::Bitmap;

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        GuestMemory::check_range(self.inner, addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, Self::Bitmap>>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        GuestMemory::get_slices(self.inner, addr, count, access)
    }
}

#[test]
fn each_page_is_read_from_the_guest_once_whatever_the_reader_does() {
    for version in [1, 2] {
        let (built, guest) = in_guest(version, K4);
        let counting = Counting::new(&guest);
        let mem = GuestImage::new(&counting);
        for _ in 0..3 {
            let owned = reader::validate_alloc(&mem, built.root, &opts(K4)).expect("valid");
            let image = owned.image();
            assert_eq!(dev_rows(&image), built.devices);
            let mut restored = Vec::new();
            image
                .restore(|a| {
                    restored.push(a);
                    Ok::<(), ()>(())
                })
                .expect("restore");
            let distinct: BTreeSet<PhysAddr> = restored.iter().copied().collect();
            assert_eq!(distinct.len(), built.pages.len());
        }
        assert_eq!(mem.pages_asked(), built.pages.len(), "version {version}");
        assert_eq!(
            counting.reads(),
            built.pages.len(),
            "version {version}: three validations, one read a page"
        );
    }
}

#[test]
fn the_view_keeps_the_bytes_it_validated_when_the_guest_rewrites_them() {
    for version in [1, 2] {
        let (built, guest) = in_guest(version, K4);
        let mem = GuestImage::new(&guest);
        let owned = reader::validate_alloc(&mem, built.root, &opts(K4)).expect("valid");
        let image = owned.image();
        let before = everything(&image);

        // The guest scribbles over every page of the image.
        for a in image.pages() {
            guest
                .write_slice(&[0xa5; 0x1000], GuestAddress(a.get()))
                .expect("inside");
        }
        assert_eq!(everything(&image), before, "version {version}");
        assert_eq!(dev_rows(&image), built.devices);
        // Validating again through the same view sees the same copies.
        let again = reader::validate_alloc(&mem, built.root, &opts(K4)).expect("same copies");
        assert_eq!(everything(&again.image()), before);
        // A fresh view reads the guest's new bytes, and refuses them.
        let fresh = refused(&GuestImage::new(&guest), built.root, K4);
        assert!(
            matches!(fresh.kind(), ErrorKind::UnsupportedVersion { .. }),
            "version {version}: {fresh}"
        );
    }
}

#[test]
fn threads_share_one_view_and_its_copies() {
    fn is_sync<T: Send + Sync>(_: &T) {}
    let (built, guest) = in_guest(2, K4);
    let counting = Counting::new(&guest);
    let mem = GuestImage::new(&counting);
    is_sync(&mem);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let owned = reader::validate_alloc(&mem, built.root, &opts(K4)).expect("valid");
                    dev_rows(&owned.image())
                })
            })
            .collect();
        for w in workers {
            assert_eq!(w.join().expect("no panic"), built.devices);
        }
    });
    assert_eq!(counting.reads(), built.pages.len());
}
