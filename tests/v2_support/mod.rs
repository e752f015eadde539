//! Version-2 images built byte by byte, independently of the crate's
//! writer, so the reader's tests do not trust the code they check: the
//! offsets come from the layout table in `abi/v2.txt`, and the CRCs are
//! computed here with `crc32fast` directly.
#![allow(dead_code)]

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::error::Error;
use iommu_flb_abi::reader::{self, Options, ScratchElem};
use iommu_flb_abi::{FlatMemory, PhysAddr};

// A test crate may include this helper and `common`, each with its own
// copy of `visited` (the lint sees the same file loaded twice).
#[allow(clippy::duplicate_mod)]
#[path = "../shared/visited.rs"]
mod visited;

pub const ROOT_MAGIC: u32 = u32::from_le_bytes(*b"IFLR");
pub const PAGE_MAGIC: u32 = u32::from_le_bytes(*b"IFLP");
pub const HW: usize = 104;
pub const DOM: usize = 32;
pub const DEV: usize = 72;
pub const INTEL: u64 = 1;
pub const SMMUV3: u64 = 2;

/// One IOMMU: type and token.
#[derive(Clone, Copy, Debug)]
pub struct Iommu {
    pub ty: u64,
    pub token: u64,
    pub deleted: bool,
}

/// One device: segment, devid, and the indexes of its domain and IOMMU.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub segment: u32,
    pub devid: u32,
    pub domain: u64,
    pub iommu: u64,
    pub deleted: bool,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub page: PageSize,
    pub generation: u64,
    pub iommus: Vec<Iommu>,
    /// Domains; `true` for a deleted one.
    pub domains: Vec<bool>,
    pub devices: Vec<Device>,
    /// Strides (0: the record size).
    pub strides: [usize; 3],
}

impl Spec {
    /// Two IOMMUs (Intel, SMMUv3), three domains, `n` devices spread over
    /// them, 4 KiB pages.
    pub fn typical(n: u32) -> Spec {
        let devices = (0..n)
            .map(|i| Device {
                segment: 0,
                devid: i * 8,
                domain: u64::from(i % 3),
                iommu: u64::from(i % 2),
                deleted: false,
            })
            .collect();
        Spec {
            page: PageSize::Size4K,
            generation: 0x5eed_0001,
            iommus: vec![
                Iommu {
                    ty: INTEL,
                    token: 0xfed9_0000,
                    deleted: false,
                },
                Iommu {
                    ty: SMMUV3,
                    token: 0x0900_0000,
                    deleted: false,
                },
            ],
            domains: vec![false; 3],
            devices,
            strides: [0; 3],
        }
    }
}

/// A built image: flat memory from `base`, the root at `base`.
#[derive(Clone)]
pub struct Img {
    pub base: u64,
    pub bytes: Vec<u8>,
    pub ps: usize,
    pub root: PhysAddr,
    /// Each chain's page addresses.
    pub pages: [Vec<u64>; 3],
    pub strides: [usize; 3],
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

pub fn crc_of(page: &[u8], crc_at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&page[..crc_at]);
    h.update(&page[crc_at + 4..]);
    h.finalize()
}

impl Img {
    pub fn build(spec: &Spec) -> Img {
        let ps = spec.page.bytes();
        let base = 0x10_0000u64 * (ps as u64 / 4096);
        let sizes = [HW, DOM, DEV];
        let strides: [usize; 3] = std::array::from_fn(|c| {
            if spec.strides[c] == 0 {
                sizes[c]
            } else {
                spec.strides[c]
            }
        });
        let counts = [spec.iommus.len(), spec.domains.len(), spec.devices.len()];
        let caps: [usize; 3] = std::array::from_fn(|c| (ps - 48) / strides[c]);
        let npages: [usize; 3] = std::array::from_fn(|c| counts[c].div_ceil(caps[c]));
        let total = 1 + npages.iter().sum::<usize>();
        let mut bytes = vec![0u8; total * ps];
        let mut next = 1usize;
        let mut pages: [Vec<u64>; 3] = Default::default();
        for c in 0..3 {
            for _ in 0..npages[c] {
                pages[c].push(base + (next * ps) as u64);
                next += 1;
            }
        }
        let mut img = Img {
            base,
            bytes: Vec::new(),
            ps,
            root: PhysAddr::new(base),
            pages,
            strides,
        };
        // Root.
        {
            let r = &mut bytes[..ps];
            put(r, 0, &2u64.to_le_bytes());
            put(r, 8, &ROOT_MAGIC.to_le_bytes());
            put(r, 12, &128u32.to_le_bytes());
            put(r, 16, &2u32.to_le_bytes());
            put(r, 20, &(ps as u32).to_le_bytes());
            put(r, 24, &spec.generation.to_le_bytes());
            for c in 0..3 {
                let at = 56 + 24 * c;
                let head = img.pages[c].first().copied().unwrap_or(0);
                put(r, at, &head.to_le_bytes());
                put(r, at + 8, &(npages[c] as u64).to_le_bytes());
                put(r, at + 16, &(counts[c] as u64).to_le_bytes());
            }
        }
        // Page headers.
        for c in 0..3 {
            for (i, &p) in img.pages[c].iter().enumerate() {
                let off = (p - base) as usize;
                let pg = &mut bytes[off..off + ps];
                let next = img.pages[c].get(i + 1).copied().unwrap_or(0);
                let nr = if i + 1 < npages[c] {
                    caps[c]
                } else {
                    counts[c] - caps[c] * i
                };
                put(pg, 0, &next.to_le_bytes());
                put(pg, 8, &(nr as u64).to_le_bytes());
                put(pg, 16, &PAGE_MAGIC.to_le_bytes());
                put(pg, 20, &(c as u16 + 1).to_le_bytes());
                put(pg, 22, &(strides[c] as u16).to_le_bytes());
                put(pg, 24, &(i as u64).to_le_bytes());
                put(pg, 32, &spec.generation.to_le_bytes());
            }
        }
        img.bytes = bytes;
        // Records.
        for (i, m) in spec.iommus.iter().enumerate() {
            let refs = spec
                .devices
                .iter()
                .filter(|d| !d.deleted && d.iommu == i as u64)
                .count() as u32;
            let at = img.record(0, i);
            let r = &mut img.bytes[at..at + HW];
            put(r, 0, &refs.to_le_bytes());
            put(r, 4, &u32::from(m.deleted).to_le_bytes());
            put(r, 8, &m.token.to_le_bytes());
            put(r, 16, &m.ty.to_le_bytes());
            put(r, 24, &m.token.to_le_bytes()); // phys_addr
            put(r, 32, &(0x20_0000 + i as u64 * 0x1000).to_le_bytes());
            if m.ty == INTEL {
                put(r, 40, &1u64.to_le_bytes()); // context_tables_bitmap[0]
            }
        }
        for (i, &deleted) in spec.domains.iter().enumerate() {
            let at = img.record(1, i);
            let r = &mut img.bytes[at..at + DOM];
            put(r, 0, &1u32.to_le_bytes());
            put(r, 4, &u32::from(deleted).to_le_bytes());
            put(r, 8, &(0x40_0000 + i as u64 * 0x1000).to_le_bytes());
            put(r, 16, &4u64.to_le_bytes());
            put(r, 24, &48u32.to_le_bytes());
        }
        for (i, d) in spec.devices.iter().enumerate() {
            let intel = spec.iommus[d.iommu as usize].ty == INTEL;
            let at = img.record(2, i);
            let r = &mut img.bytes[at..at + DEV];
            put(r, 0, &1u32.to_le_bytes());
            put(r, 4, &u32::from(d.deleted).to_le_bytes());
            put(r, 8, &d.devid.to_le_bytes());
            put(r, 12, &d.segment.to_le_bytes());
            put(r, 16, &(0xd0_0000 + i as u64).to_le_bytes());
            put(r, 24, &(i as u64 + 1).to_le_bytes());
            put(r, 32, &d.domain.to_le_bytes());
            put(r, 40, &d.iommu.to_le_bytes());
            if intel {
                put(r, 48, &0x50_0000u64.to_le_bytes());
                put(r, 56, &(1u64 << 20).to_le_bytes());
            } else {
                put(r, 48, &0x60_0000u64.to_le_bytes());
                put(r, 56, &2u32.to_le_bytes());
                put(r, 64, &0x61_0000u64.to_le_bytes());
            }
        }
        img.seal();
        img
    }

    /// Offset in `bytes` of record `i` of chain `c` (0 IOMMU, 1 domain,
    /// 2 device).
    pub fn record(&self, c: usize, i: usize) -> usize {
        let cap = (self.ps - 48) / self.strides[c];
        let page = self.pages[c][i / cap];
        (page - self.base) as usize + 48 + (i % cap) * self.strides[c]
    }

    /// Offset in `bytes` of page `i` of chain `c`.
    pub fn page(&self, c: usize, i: usize) -> usize {
        (self.pages[c][i] - self.base) as usize
    }

    /// Recomputes every page's CRC, so a mangled field reaches the check
    /// behind the checksum.
    pub fn seal(&mut self) {
        let ps = self.ps;
        let n = self.bytes.len() / ps;
        for p in 0..n {
            let pg = &mut self.bytes[p * ps..(p + 1) * ps];
            let at = if p == 0 { 48 } else { 40 };
            let crc = crc_of(pg, at);
            put(pg, at, &crc.to_le_bytes());
        }
    }

    pub fn put_u64(&mut self, at: usize, v: u64) {
        put(&mut self.bytes, at, &v.to_le_bytes());
    }

    pub fn put_u32(&mut self, at: usize, v: u32) {
        put(&mut self.bytes, at, &v.to_le_bytes());
    }

    pub fn put_u16(&mut self, at: usize, v: u16) {
        put(&mut self.bytes, at, &v.to_le_bytes());
    }

    pub fn mem(&self) -> FlatMemory<'_> {
        FlatMemory::new(PhysAddr::new(self.base), &self.bytes)
    }

    /// Validates with `opts`, returning the error or the image's counts
    /// (live IOMMUs, live devices, pages).
    pub fn check_with(&self, opts: &Options) -> Result<(usize, usize, usize), Error> {
        let mem = self.mem();
        let sized = reader::scratch_len(&mem, self.root, opts);
        if !cfg!(miri) {
            // Validation on its own refuses alike, with room to spare:
            // without `scratch_len`'s walk before it, a chain error (a
            // page's CRC, the root's counts) is met by the device chain's
            // walk as the passes run (not under miri: safe code, and it
            // doubles the time).
            let room = sized.as_ref().map_or(1 << 12, |n| n + 64);
            let mut scratch = vec![ScratchElem::default(); room];
            let roomy = reader::validate(&mem, self.root, opts, &mut scratch).map(|_| ());
            let same = sized.as_ref().map_err(|e| *e).and_then(|&n| {
                let mut scratch = vec![ScratchElem::default(); n];
                reader::validate(&mem, self.root, opts, &mut scratch).map(|_| ())
            });
            assert_eq!(roomy, same);
        }
        let n = sized?;
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(&mem, self.root, opts, &mut scratch);
        if !cfg!(miri) {
            // The visiting form refuses the same images with the same error
            // and, on the others, sees the live device records in order
            // (not under miri: safe code, and it doubles the time).
            let mut again = vec![ScratchElem::default(); n];
            let mut seen = Vec::new();
            let visiting = reader::validate_visiting(&mem, self.root, opts, &mut again, |d| {
                seen.push((d.phys(), d.devid()));
            });
            let records = image.as_ref().map(|i| {
                let records = i.device_records().map(|d| (d.phys(), d.devid()));
                records.collect::<Vec<_>>()
            });
            assert_eq!(visiting.map(|_| seen), records.map_err(|e| *e));
            // A visitor of every kind sees what the image's iterators yield.
            let mut all = visited::Visited::default();
            let with = reader::validate_with(&mem, self.root, opts, &mut again, &mut all);
            let want = image.as_ref().map(visited::Visited::of);
            assert_eq!(with.map(|_| all), want.map_err(|e| *e));
        }
        let image = image?;
        Ok((
            image.live_iommus(),
            image.live_devices(),
            image.page_count(),
        ))
    }

    pub fn check(&self) -> Result<(usize, usize, usize), Error> {
        self.check_with(&Options::default())
    }
}
