//! Hand-built handover images for the reader's tests.
//!
//! Independent of the crate's writer on purpose: the bytes are put in place
//! field by field at the offsets of the wire types, into a [`PageMap`], so a
//! bug shared by reader and writer cannot hide. Mangle tests build a valid
//! image, then corrupt one field with the `put_*` helpers.
#![allow(dead_code)] // Each test file uses a different part.

use core::mem::{offset_of, size_of};

use iommu_flb_abi::Memory;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::*;
use iommu_flb_abi::error::{Chain, Error, Location};
use iommu_flb_abi::reader::{self, DevicePayload, Image, IommuPayload, Options, ScratchElem};

// A test crate may include this helper and `v2_support`, each with its own
// copy of `visited` (the lint sees the same file loaded twice).
#[allow(clippy::duplicate_mod)]
#[path = "../shared/visited.rs"]
mod visited;
use iommu_flb_abi::{PageMap, PhysAddr};
pub use visited::Visited;

pub const HW: usize = size_of::<IommuHwSer>();
pub const DOM: usize = size_of::<IommuDomainSer>();
pub const DEV: usize = size_of::<IommuDeviceSer>();

/// Field offsets inside records, from the wire types.
pub mod off {
    use super::*;
    pub const REF_COUNT: usize = offset_of!(IommuHdrSer, ref_count);
    pub const FLAGS: usize = offset_of!(IommuHdrSer, flags);
    pub const HW_TOKEN: usize = offset_of!(IommuHwSer, token);
    pub const HW_TYPE: usize = offset_of!(IommuHwSer, r#type);
    pub const HW_VENDOR: usize = offset_of!(IommuHwSer, vendor);
    pub const DOM_TOP: usize = offset_of!(IommuDomainSer, top_table_phys);
    pub const DOM_LEVEL: usize = offset_of!(IommuDomainSer, top_level);
    pub const DOM_VASZ: usize = offset_of!(IommuDomainSer, vasz);
    pub const DOM_SIGN: usize = offset_of!(IommuDomainSer, sign_extend);
    pub const DOM_PAD: usize = offset_of!(IommuDomainSer, padding);
    pub const DOM_RESTORED: usize = offset_of!(IommuDomainSer, restored_domain);
    pub const DEV_DEVID: usize = offset_of!(IommuDeviceSer, devid);
    pub const DEV_SEG: usize = offset_of!(IommuDeviceSer, pci_domain_nr);
    pub const DEV_OWNER: usize = offset_of!(IommuDeviceSer, dma_owner_token);
    pub const DEV_MAP: usize = offset_of!(IommuDeviceSer, domain_iommu_ser);
    pub const DEV_DOMAIN: usize = DEV_MAP + offset_of!(IommuDevMapSer, domain_phys);
    pub const DEV_IOMMU: usize = DEV_MAP + offset_of!(IommuDevMapSer, iommu_phys);
    pub const DEV_VENDOR: usize = offset_of!(IommuDeviceSer, vendor);
    pub const ROOT_IOMMU: usize = offset_of!(IommuFlbSer, iommu_array_phys);
    pub const ROOT_DOMAIN: usize = offset_of!(IommuFlbSer, iommu_domain_array_phys);
    pub const ROOT_DEVICE: usize = offset_of!(IommuFlbSer, device_array_phys);
    pub const NEXT: usize = offset_of!(IommuArrayHdrSer, next_array_phys);
    pub const NR: usize = offset_of!(IommuArrayHdrSer, nr_objects);
}

/// Scratch elements for validating an image of these tests without
/// `scratch_len` (more than any of them needs).
pub const ROOM: usize = 1 << 12;

pub const INTEL: u64 = 1;
pub const SMMUV3: u64 = 2;

#[derive(Clone, Debug)]
pub struct IommuSpec {
    pub token: u64,
    pub ty: u64,
    pub deleted: bool,
}

#[derive(Clone, Debug)]
pub struct DomainSpec {
    pub top: u64,
    pub vasz: u32,
    pub deleted: bool,
}

#[derive(Clone, Debug)]
pub struct DeviceSpec {
    pub segment: u32,
    pub devid: u32,
    /// Index into `Spec::domains` / `Spec::iommus`.
    pub domain: usize,
    pub iommu: usize,
    pub deleted: bool,
}

/// What to build. Live IOMMUs get `ref_count` = their live devices.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub iommus: Vec<IommuSpec>,
    pub domains: Vec<DomainSpec>,
    pub devices: Vec<DeviceSpec>,
    /// Offset of the root inside its page.
    pub root_offset: usize,
    /// Page addresses to hand out, in order (root's page first); default
    /// ascending from 0x10_0000.
    pub page_order: Option<Vec<u64>>,
    /// The page size (default 4 KiB).
    pub page_size: PageSize,
}

impl Spec {
    /// The same spec with devices `i` and `j`'s devids swapped: still
    /// valid, the keys no longer ascending in chain order.
    pub fn with_devids_swapped(&self, i: usize, j: usize) -> Spec {
        let mut swapped = self.clone();
        let (a, b) = (swapped.devices[i].devid, swapped.devices[j].devid);
        (swapped.devices[i].devid, swapped.devices[j].devid) = (b, a);
        swapped
    }

    /// A valid image: `iommus` IOMMUs alternating Intel / SMMUv3, `domains`
    /// domains, `devices` devices spread over them round-robin. Needs
    /// `devices >= iommus` (a live IOMMU has at least one device) and
    /// `domains > 0` when `devices > 0`.
    pub fn simple(iommus: usize, domains: usize, devices: usize) -> Spec {
        Spec {
            iommus: (0..iommus)
                .map(|i| IommuSpec {
                    token: 0xfed0_0000 + 0x1000 * i as u64,
                    ty: if i % 2 == 0 { INTEL } else { SMMUV3 },
                    deleted: false,
                })
                .collect(),
            domains: (0..domains)
                .map(|i| DomainSpec {
                    top: 0x4000_0000 + 0x1000 * i as u64,
                    vasz: 48,
                    deleted: false,
                })
                .collect(),
            devices: (0..devices)
                .map(|i| DeviceSpec {
                    segment: (i / 256) as u32,
                    devid: (i % 256) as u32,
                    domain: i % domains.max(1),
                    iommu: i % iommus.max(1),
                    deleted: false,
                })
                .collect(),
            root_offset: 0,
            page_order: None,
            page_size: PageSize::Size4K,
        }
    }

    /// The same spec with pages of `page_size`.
    pub fn with_page_size(mut self, page_size: PageSize) -> Spec {
        self.page_size = page_size;
        self
    }

    fn pages_for(n: usize, cap: u64) -> usize {
        n.div_ceil(cap as usize).max(1)
    }

    /// Builds the image.
    pub fn build(&self) -> Img {
        let ps = self.page_size;
        let counts = [
            Self::pages_for(self.iommus.len(), capacity(Chain::Iommu, ps)),
            Self::pages_for(self.domains.len(), capacity(Chain::Domain, ps)),
            Self::pages_for(self.devices.len(), capacity(Chain::Device, ps)),
        ];
        let total = 1 + counts.iter().sum::<usize>();
        let order: Vec<u64> = match &self.page_order {
            Some(o) => o.clone(),
            None => (0..total as u64)
                .map(|i| 0x10_0000 + ps.bytes_u64() * i)
                .collect(),
        };
        assert!(order.len() >= total, "page_order too short");
        let mut addrs = order.into_iter().map(PhysAddr::new);
        let root_page = addrs.next().unwrap();
        let mut img = Img {
            page_size: ps,
            mem: PageMap::with_page_size(ps),
            root: PhysAddr::new(root_page.get() + self.root_offset as u64),
            pages: [Vec::new(), Vec::new(), Vec::new()],
        };
        assert!(img.mem.insert_zeroed(root_page));
        for (c, n) in counts.iter().enumerate() {
            for _ in 0..*n {
                let p = addrs.next().unwrap();
                assert!(img.mem.insert_zeroed(p));
                img.pages[c].push(p);
            }
        }
        let root = img.root;
        img.put_u64(root, IOMMU_LUO_FLB_VERSION);
        img.put_u64(
            root.checked_add(off::ROOT_IOMMU as u64).unwrap(),
            img.pages[0][0].get(),
        );
        img.put_u64(
            root.checked_add(off::ROOT_DOMAIN as u64).unwrap(),
            img.pages[1][0].get(),
        );
        img.put_u64(
            root.checked_add(off::ROOT_DEVICE as u64).unwrap(),
            img.pages[2][0].get(),
        );
        let lens = [self.iommus.len(), self.domains.len(), self.devices.len()];
        for (c, chain) in CHAINS.into_iter().enumerate() {
            let cap = capacity(chain, ps) as usize;
            let pages = img.pages[c].clone();
            for (i, p) in pages.iter().enumerate() {
                let nr = lens[c].saturating_sub(i * cap).min(cap);
                img.put_u64(*p, pages.get(i + 1).map_or(0, |n| n.get()));
                img.put_u64(p.checked_add(off::NR as u64).unwrap(), nr as u64);
            }
        }
        for (i, d) in self.domains.iter().enumerate() {
            let r = img.record(Chain::Domain, i);
            img.put_u32(r, 1);
            if d.deleted {
                img.put_u32(
                    r.checked_add(off::FLAGS as u64).unwrap(),
                    IOMMU_SER_FLAG_DELETED,
                );
            }
            img.put_u64(r.checked_add(off::DOM_TOP as u64).unwrap(), d.top);
            img.put_u64(r.checked_add(off::DOM_LEVEL as u64).unwrap(), 4);
            img.put_u32(r.checked_add(off::DOM_VASZ as u64).unwrap(), d.vasz);
        }
        for (i, m) in self.iommus.iter().enumerate() {
            let r = img.record(Chain::Iommu, i);
            let refs = self
                .devices
                .iter()
                .filter(|d| !d.deleted && d.iommu == i)
                .count() as u32;
            img.put_u32(r, if m.deleted { 0 } else { refs });
            if m.deleted {
                img.put_u32(
                    r.checked_add(off::FLAGS as u64).unwrap(),
                    IOMMU_SER_FLAG_DELETED,
                );
            }
            img.put_u64(r.checked_add(off::HW_TOKEN as u64).unwrap(), m.token);
            img.put_u64(r.checked_add(off::HW_TYPE as u64).unwrap(), m.ty);
            let v = r.checked_add(off::HW_VENDOR as u64).unwrap();
            if m.ty == INTEL {
                // restored 0, phys_addr = token, root_table, a bitmap word.
                img.put_u64(v.checked_add(8).unwrap(), m.token);
                img.put_u64(v.checked_add(16).unwrap(), 0x5000_0000 + i as u64 * 0x1000);
                img.put_u64(v.checked_add(24).unwrap(), 0b1011);
            } else {
                img.put_u64(v, m.token);
                img.put_u64(v.checked_add(8).unwrap(), 0x1234);
                img.put_u64(v.checked_add(24).unwrap(), 0x6000_0000 + i as u64 * 0x1000);
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            let r = img.record(Chain::Device, i);
            img.put_u32(r, 1);
            if d.deleted {
                img.put_u32(
                    r.checked_add(off::FLAGS as u64).unwrap(),
                    IOMMU_SER_FLAG_DELETED,
                );
            }
            img.put_u32(r.checked_add(off::DEV_DEVID as u64).unwrap(), d.devid);
            img.put_u32(r.checked_add(off::DEV_SEG as u64).unwrap(), d.segment);
            img.put_u64(
                r.checked_add(off::DEV_OWNER as u64).unwrap(),
                0xabc0 + i as u64,
            );
            let dom = img.record(Chain::Domain, d.domain);
            let hw = img.record(Chain::Iommu, d.iommu);
            img.put_u64(r.checked_add(off::DEV_MAP as u64).unwrap(), 7 + i as u64);
            img.put_u64(r.checked_add(off::DEV_DOMAIN as u64).unwrap(), dom.get());
            img.put_u64(r.checked_add(off::DEV_IOMMU as u64).unwrap(), hw.get());
            let v = r.checked_add(off::DEV_VENDOR as u64).unwrap();
            if self.iommus.get(d.iommu).is_some_and(|m| m.ty == INTEL) {
                img.put_u64(v.checked_add(8).unwrap(), 0x7000_0000 + i as u64 * 0x1000);
                img.put_u64(v.checked_add(16).unwrap(), 1 << 20);
            } else {
                img.put_u64(v, 3);
                img.put_u32(v.checked_add(8).unwrap(), 2);
                img.put_u64(v.checked_add(16).unwrap(), 0x8000_0000 + i as u64 * 0x1000);
            }
        }
        img
    }
}

pub const CHAINS: [Chain; 3] = [Chain::Iommu, Chain::Domain, Chain::Device];

/// Records per page of `chain` at page size `ps`, by the kernel's formula
/// written out here again: (page size - 16) / record size.
pub fn capacity(chain: Chain, ps: PageSize) -> u64 {
    ((ps.bytes() - 16) / record_size(chain)) as u64
}

pub fn record_size(chain: Chain) -> usize {
    match chain {
        Chain::Iommu => HW,
        Chain::Domain => DOM,
        Chain::Device => DEV,
    }
}

fn chain_slot(chain: Chain) -> usize {
    match chain {
        Chain::Iommu => 0,
        Chain::Domain => 1,
        Chain::Device => 2,
    }
}

/// A built image: its pages, its root, and each chain's pages in order.
#[derive(Clone, Debug)]
pub struct Img {
    pub page_size: PageSize,
    pub mem: PageMap,
    pub root: PhysAddr,
    pub pages: [Vec<PhysAddr>; 3],
}

impl Img {
    /// Records per page of `chain` in this image.
    pub fn cap(&self, chain: Chain) -> usize {
        capacity(chain, self.page_size) as usize
    }

    /// Pages of `chain`, in chain order.
    pub fn chain(&self, chain: Chain) -> &[PhysAddr] {
        &self.pages[chain_slot(chain)]
    }

    /// Page `page` of `chain`.
    pub fn page(&self, chain: Chain, page: usize) -> PhysAddr {
        self.chain(chain)[page]
    }

    /// Address of record `index` (counted over the whole chain).
    pub fn record(&self, chain: Chain, index: usize) -> PhysAddr {
        let cap = self.cap(chain);
        let page = self.page(chain, index / cap);
        PhysAddr::new(page.get() + 16 + ((index % cap) * record_size(chain)) as u64)
    }

    /// The same record, plus `field` bytes.
    pub fn field(&self, chain: Chain, index: usize, field: usize) -> PhysAddr {
        PhysAddr::new(self.record(chain, index).get() + field as u64)
    }

    /// Where record `index` of `chain` is, for expected errors.
    pub fn at(&self, chain: Chain, index: usize) -> Location {
        let cap = self.cap(chain);
        Location::page(chain, (index / cap) as u64, self.page(chain, index / cap))
            .object((index % cap) as u64)
    }

    /// Where the header of page `page` of `chain` is.
    pub fn at_page(&self, chain: Chain, page: usize) -> Location {
        Location::page(chain, page as u64, self.page(chain, page))
    }

    /// The image as a flat dump from its lowest page, padded with zeros to
    /// a multiple of 64 KiB: `(base, bytes)`.
    pub fn flat(&self) -> (PhysAddr, Vec<u8>) {
        let ps = self.page_size.bytes();
        let base = self.mem.iter().map(|(p, _)| p.get()).min().unwrap_or(0);
        let end = self.mem.iter().map(|(p, _)| p.get()).max().unwrap_or(0) + ps as u64;
        let mut dump = vec![0u8; ((end - base) as usize).next_multiple_of(1 << 16)];
        for (phys, page) in self.mem.iter() {
            let at = (phys.get() - base) as usize;
            dump[at..at + ps].copy_from_slice(page);
        }
        (PhysAddr::new(base), dump)
    }

    pub fn bytes_mut(&mut self, at: PhysAddr, len: usize) -> &mut [u8] {
        let off = at.page_offset(self.page_size);
        let page = self
            .mem
            .page_mut(at.page_base(self.page_size))
            .expect("page present");
        &mut page[off..off + len]
    }

    pub fn put_u64(&mut self, at: PhysAddr, v: u64) {
        self.bytes_mut(at, 8).copy_from_slice(&v.to_le_bytes());
    }

    pub fn put_u32(&mut self, at: PhysAddr, v: u32) {
        self.bytes_mut(at, 4).copy_from_slice(&v.to_le_bytes());
    }

    pub fn put_u8(&mut self, at: PhysAddr, v: u8) {
        self.bytes_mut(at, 1)[0] = v;
    }

    pub fn get_u64(&mut self, at: PhysAddr) -> u64 {
        u64::from_le_bytes(self.bytes_mut(at, 8).try_into().unwrap())
    }

    pub fn get_u32(&mut self, at: PhysAddr) -> u32 {
        u32::from_le_bytes(self.bytes_mut(at, 4).try_into().unwrap())
    }

    /// Validates with `opts` and caller-sized scratch; returns the error, or
    /// `Ok` after touching every record.
    pub fn check_with(&self, opts: &Options) -> Result<(), Error> {
        let sized = reader::scratch_len(&self.mem, self.root, opts);
        if !cfg!(miri) {
            // Validation on its own refuses alike, with room to spare:
            // without `scratch_len`'s walk before it, a chain error is met
            // by the device chain's walk as the passes run (not under
            // miri: safe code, and it doubles the time).
            let room = sized.as_ref().map_or(ROOM, |n| n + 64);
            let mut scratch = vec![ScratchElem::default(); room];
            let roomy = reader::validate(&self.mem, self.root, opts, &mut scratch);
            let same = sized.as_ref().map_err(|e| *e).and_then(|&n| {
                let mut scratch = vec![ScratchElem::default(); n];
                reader::validate(&self.mem, self.root, opts, &mut scratch).map(|_| ())
            });
            assert_eq!(roomy.map(|_| ()), same);
        }
        let n = sized?;
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(&self.mem, self.root, opts, &mut scratch);
        if !cfg!(miri) {
            // The visiting form refuses the same images with the same
            // error (not under miri: it is safe code, and doubles the time).
            let visiting = visit_devices(&self.mem, self.root, opts).map(|_| ());
            assert_eq!(visiting, image.as_ref().map(|_| ()).map_err(|e| *e));
            let with = visit_all(&self.mem, self.root, opts).map(|_| ());
            assert_eq!(with, image.as_ref().map(|_| ()).map_err(|e| *e));
        }
        let image = image?;
        assert_eq!(image.pages().count(), image.page_count());
        Ok(())
    }

    /// The default options at this image's page size.
    pub fn opts(&self) -> Options {
        Options {
            page_size: self.page_size,
            ..Options::default()
        }
    }

    /// [`Img::check_with`] in handover mode with default limits.
    pub fn check(&self) -> Result<(), Error> {
        self.check_with(&self.opts())
    }
}

// ---- checking a view against the spec it was built from ----

fn ty(raw: u64) -> IommuTypeSer {
    IommuTypeSer::from_wire(raw).unwrap()
}

/// Validates `img` and checks the view against `spec`: live records in
/// chain order with their fields, every device's domain and IOMMU, every
/// lookup, and the page order.
pub fn accept(spec: &Spec, img: &Img) {
    accept_with(spec, img, &img.opts());
}

pub fn accept_with(spec: &Spec, img: &Img, opts: &Options) {
    let n = reader::scratch_len(&img.mem, img.root, opts).expect("scratch_len");
    let mut scratch = vec![ScratchElem::default(); n];
    let image = reader::validate(&img.mem, img.root, opts, &mut scratch).expect("valid");
    check_view(spec, img, &image);
    if !cfg!(miri) {
        // Not under miri, as in `Img::check_with`.
        check_visiting(&img.mem, img.root, opts, &image);
    }
}

/// A device record as the visiting tests compare them: (address, segment,
/// devid).
pub type Seen = (PhysAddr, u32, u32);

/// The device records `reader::validate_visiting` hands its visitor for
/// the image at `root`, and the view's live device count.
pub fn visit_devices<M: Memory>(
    mem: &M,
    root: PhysAddr,
    opts: &Options,
) -> Result<(Vec<Seen>, usize), Error> {
    let n = reader::scratch_len(mem, root, opts)?;
    let mut scratch = vec![ScratchElem::default(); n];
    let mut seen = Vec::new();
    let image = reader::validate_visiting(mem, root, opts, &mut scratch, |d| {
        seen.push((d.phys(), d.segment(), d.devid()));
    })?;
    Ok((seen, image.live_devices()))
}

/// Checks that validating the image at `root` while visiting hands the
/// visitor exactly the records `image.device_records()` yields, in order.
pub fn check_visiting<M: Memory>(
    mem: &M,
    root: PhysAddr,
    opts: &Options,
    image: &Image<'_, '_, M>,
) {
    let (seen, live) = visit_devices(mem, root, opts).expect("valid while visiting");
    let records: Vec<_> = image
        .device_records()
        .map(|d| (d.phys(), d.segment(), d.devid()))
        .collect();
    assert_eq!(
        seen, records,
        "the visit sees the live device records in order"
    );
    assert_eq!(live, image.live_devices());
    let all = visit_all(mem, root, opts).expect("valid with a visitor");
    assert_eq!(
        all,
        Visited::of(image),
        "a visitor sees the live IOMMUs, domains and devices in order"
    );
}

/// What `reader::validate_with` hands its visitor for the image at
/// `root`.
pub fn visit_all<M: Memory>(mem: &M, root: PhysAddr, opts: &Options) -> Result<Visited, Error> {
    let n = reader::scratch_len(mem, root, opts)?;
    let mut scratch = vec![ScratchElem::default(); n];
    let mut seen = Visited::default();
    // As a trait object: `validate_with` takes one too.
    let visitor: &mut dyn reader::Visitor<'_> = &mut seen;
    reader::validate_with(mem, root, opts, &mut scratch, visitor)?;
    Ok(seen)
}

/// The items of `it` through `fold`, which the record walks run a page at
/// a time (`collect` runs `next`, one record at a time).
pub fn folded<T>(it: impl Iterator<Item = T>) -> Vec<T> {
    it.fold(Vec::new(), |mut v, x| {
        v.push(x);
        v
    })
}

pub fn check_view<M: Memory>(spec: &Spec, img: &Img, image: &Image<'_, '_, M>) {
    assert_eq!(image.version(), 1);
    assert_eq!(image.root_phys(), img.root);
    assert_eq!(image.page_size(), img.page_size);

    let live_iommus: Vec<usize> = (0..spec.iommus.len())
        .filter(|&i| !spec.iommus[i].deleted)
        .collect();
    let got: Vec<PhysAddr> = image.iommus().map(|m| m.phys()).collect();
    let want: Vec<PhysAddr> = live_iommus
        .iter()
        .map(|&i| img.record(Chain::Iommu, i))
        .collect();
    assert_eq!(got, want, "live IOMMUs in chain order");
    assert_eq!(folded(image.iommus().map(|m| m.phys())), want, "by fold");
    assert_eq!(image.live_iommus(), live_iommus.len());
    for &i in &live_iommus {
        let s = &spec.iommus[i];
        let m = image.find_iommu(s.token, ty(s.ty)).expect("find_iommu");
        assert_eq!(m.phys(), img.record(Chain::Iommu, i));
        assert_eq!(
            (m.token(), m.iommu_type(), m.is_deleted()),
            (s.token, ty(s.ty), false)
        );
        let refs = spec
            .devices
            .iter()
            .filter(|d| !d.deleted && d.iommu == i)
            .count();
        assert_eq!(m.ref_count() as usize, refs);
        match (m.payload(), s.ty) {
            (IommuPayload::Intel(p), INTEL) => assert_eq!(p.phys_addr.get(), s.token),
            (IommuPayload::Smmuv3(p), SMMUV3) => assert_eq!(p.phys_addr.get(), s.token),
            (p, t) => panic!("payload {p:?} for type {t}"),
        }
    }
    assert_eq!(image.all_iommus().count(), spec.iommus.len());

    let got: Vec<PhysAddr> = image.domains().map(|d| d.phys()).collect();
    let want: Vec<PhysAddr> = (0..spec.domains.len())
        .filter(|&i| !spec.domains[i].deleted)
        .map(|i| img.record(Chain::Domain, i))
        .collect();
    assert_eq!(got, want, "live domains in chain order");
    assert_eq!(folded(image.domains().map(|d| d.phys())), want, "by fold");
    assert_eq!(image.all_domains().count(), spec.domains.len());

    let live_devices: Vec<usize> = (0..spec.devices.len())
        .filter(|&i| !spec.devices[i].deleted)
        .collect();
    let devices: Vec<_> = image.devices().collect();
    assert_eq!(devices.len(), live_devices.len());
    assert_eq!(image.live_devices(), live_devices.len());
    for (d, &i) in devices.iter().zip(&live_devices) {
        let s = &spec.devices[i];
        assert_eq!(d.phys(), img.record(Chain::Device, i));
        assert_eq!((d.segment(), d.devid()), (s.segment, s.devid));
        assert_eq!(d.domain().phys(), img.record(Chain::Domain, s.domain));
        assert_eq!(
            d.domain().top_table_phys().get(),
            spec.domains[s.domain].top
        );
        assert_eq!(d.iommu().phys(), img.record(Chain::Iommu, s.iommu));
        match (d.payload(), spec.iommus[s.iommu].ty) {
            (DevicePayload::Intel(p), INTEL) => assert_eq!(p.max_pasid.get(), 1 << 20),
            (DevicePayload::Smmuv3(p), SMMUV3) => assert_eq!(p.num_l2_cdtables.get(), 2),
            (p, t) => panic!("device payload {p:?} for IOMMU type {t}"),
        }
        let found = image.find_device(s.segment, s.devid).expect("find_device");
        assert_eq!(found.phys(), d.phys());
    }
    assert_eq!(image.all_devices().count(), spec.devices.len());
    // The same live devices as stored records: their references are the
    // addresses the resolved devices landed on, and resolving a record
    // gives the device `devices` gave.
    let records: Vec<_> = image.device_records().collect();
    assert_eq!(
        records.len(),
        devices.len(),
        "device_records skips deleted ones"
    );
    assert_eq!(
        folded(image.device_records().map(|r| r.phys())),
        records.iter().map(|r| r.phys()).collect::<Vec<_>>(),
        "device_records by fold"
    );
    assert_eq!(
        folded(image.all_devices().map(|d| d.phys())),
        image.all_devices().map(|d| d.phys()).collect::<Vec<_>>(),
        "all_devices by fold"
    );
    for (r, d) in records.iter().zip(&devices) {
        assert_eq!(
            (r.phys(), r.segment(), r.devid(), r.is_deleted()),
            (d.phys(), d.segment(), d.devid(), false)
        );
        assert_eq!(r.domain_ref(), d.domain().phys().get());
        assert_eq!(r.iommu_ref(), d.iommu().phys().get());
        let again = image.resolve_device(r).expect("a live record resolves");
        assert_eq!(
            (again.phys(), again.domain().phys(), again.iommu().phys()),
            (d.phys(), d.domain().phys(), d.iommu().phys())
        );
    }

    let mut want = vec![img.root.page_base(img.page_size)];
    for c in CHAINS {
        want.extend_from_slice(img.chain(c));
    }
    assert_eq!(
        image.pages().collect::<Vec<_>>(),
        want,
        "root, then each chain in order"
    );
    assert_eq!(image.page_count(), want.len());
}
