//! Hand-made kdump-compressed dumps and makedumpfile flattened files, laid
//! out as makedumpfile's `diskdump_mod.h` and QEMU's `dump.h` define them:
//! header block, one sub-header block, the two bitmaps, the page
//! descriptors, the pages' data. Pages are compressed by the crates the
//! tool decompresses with.
#![allow(dead_code)] // each test crate uses some of these

use std::collections::BTreeMap;
use std::io::Write as _;

/// How a page is compressed (the descriptor flag and the header status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    Raw,
    Zlib,
    Lzo,
    Snappy,
    Zstd,
}

impl Comp {
    pub fn flag(self) -> u32 {
        match self {
            Comp::Raw => 0,
            Comp::Zlib => 0x1,
            Comp::Lzo => 0x2,
            Comp::Snappy => 0x4,
            Comp::Zstd => 0x20,
        }
    }

    /// `data` compressed; `None` for raw.
    pub fn compress(self, data: &[u8]) -> Option<Vec<u8>> {
        match self {
            Comp::Raw => None,
            Comp::Zlib => {
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                Some(e.finish().unwrap())
            }
            #[cfg(feature = "lzo")]
            Comp::Lzo => Some(lzo1x::compress(data, lzo1x::CompressLevel::default())),
            #[cfg(not(feature = "lzo"))]
            Comp::Lzo => panic!("lzo pages need the lzo feature"),
            Comp::Snappy => Some(snap::raw::Encoder::new().compress_vec(data).unwrap()),
            Comp::Zstd => Some(ruzstd::encoding::compress_to_vec(
                data,
                ruzstd::encoding::CompressionLevel::Fastest,
            )),
        }
    }
}

/// One page frame of a hand-made dump.
#[derive(Clone, Debug)]
pub enum Page {
    /// In both bitmaps, its data compressed with the dump's compression
    /// (raw if that does not make it smaller, as makedumpfile does).
    Data(Vec<u8>),
    /// RAM (1st bitmap) but left out of the dump (2nd bitmap clear).
    Excluded,
    /// In both bitmaps, with an all-zero descriptor (never written).
    ZeroDescriptor,
    /// In both bitmaps, with this descriptor (offset, size, flags) and
    /// these data bytes at `offset` if it is 0 (appended, offset filled in).
    Descriptor(u64, u32, u32, Vec<u8>),
}

/// The shape of a hand-made dump.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub big_endian: bool,
    pub bits64: bool,
    pub block_size: u32,
    pub comp: Comp,
    pub header_version: u32,
    pub max_mapnr: u64,
}

impl Spec {
    /// x86_64 as QEMU and makedumpfile write it: little-endian, 64-bit,
    /// 4 KiB blocks, header version 6.
    pub fn x86_64(comp: Comp, max_mapnr: u64) -> Self {
        Spec {
            big_endian: false,
            bits64: true,
            block_size: 4096,
            comp,
            header_version: 6,
            max_mapnr,
        }
    }
}

/// A hand-made dump and where its parts are.
pub struct Built {
    pub bytes: Vec<u8>,
    pub bitmap1: usize,
    pub bitmap2: usize,
    pub bitmap_len: usize,
    /// File offset of each page frame's descriptor.
    pub desc: BTreeMap<u64, usize>,
    /// File offset of each page frame's data.
    pub data: BTreeMap<u64, usize>,
}

fn put32(out: &mut [u8], at: usize, v: u32, big: bool) {
    let b = if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    };
    out[at..at + 4].copy_from_slice(&b);
}

fn put64(out: &mut [u8], at: usize, v: u64, big: bool) {
    let b = if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    };
    out[at..at + 8].copy_from_slice(&b);
}

/// A kdump-compressed dump of `pages` (page frame, what is there).
pub fn build(spec: &Spec, pages: &BTreeMap<u64, Page>) -> Built {
    let big = spec.big_endian;
    let bs = spec.block_size as usize;
    let bitmap_len = (spec.max_mapnr as usize).div_ceil(8).div_ceil(bs) * bs;
    let bitmap_blocks = 2 * bitmap_len / bs;
    let mut out = vec![0u8; bs * 2 + 2 * bitmap_len];
    out[..8].copy_from_slice(b"KDUMP   ");
    put32(&mut out, 8, spec.header_version, big);
    out[12..17].copy_from_slice(b"Linux");
    let status_at = if spec.bits64 { 424 } else { 412 };
    put32(&mut out, status_at, spec.comp.flag(), big);
    put32(&mut out, status_at + 4, spec.block_size, big);
    put32(&mut out, status_at + 8, 1, big);
    put32(&mut out, status_at + 12, bitmap_blocks as u32, big);
    put32(
        &mut out,
        status_at + 16,
        spec.max_mapnr.min(u64::from(u32::MAX)) as u32,
        big,
    );
    // kdump_sub_header: max_mapnr_64.
    let mm_at = bs + if spec.bits64 { 96 } else { 72 };
    put64(&mut out, mm_at, spec.max_mapnr, big);
    let (bitmap1, bitmap2) = (2 * bs, 2 * bs + bitmap_len);
    for (&pfn, page) in pages {
        let (byte, bit) = (pfn as usize / 8, pfn % 8);
        out[bitmap1 + byte] |= 1 << bit;
        if !matches!(page, Page::Excluded) {
            out[bitmap2 + byte] |= 1 << bit;
        }
    }
    let dumped: Vec<_> = pages
        .iter()
        .filter(|(_, p)| !matches!(p, Page::Excluded))
        .collect();
    let descs = out.len();
    out.resize(descs + 24 * dumped.len(), 0);
    let (mut desc, mut data) = (BTreeMap::new(), BTreeMap::new());
    for (i, (&pfn, page)) in dumped.into_iter().enumerate() {
        let at = descs + 24 * i;
        desc.insert(pfn, at);
        let (offset, size, flags, bytes) = match page {
            Page::Excluded => unreachable!(),
            Page::ZeroDescriptor => continue,
            Page::Data(d) => {
                assert_eq!(d.len(), bs, "a page is one block");
                match spec.comp.compress(d).filter(|c| c.len() < bs) {
                    Some(c) => (0, c.len() as u32, spec.comp.flag(), c),
                    None => (0, bs as u32, 0, d.clone()),
                }
            }
            Page::Descriptor(o, s, f, b) => (*o, *s, *f, b.clone()),
        };
        let offset = if offset == 0 {
            data.insert(pfn, out.len());
            let o = out.len() as u64;
            out.extend_from_slice(&bytes);
            o
        } else {
            offset
        };
        put64(&mut out, at, offset, big);
        put32(&mut out, at + 8, size, big);
        put32(&mut out, at + 12, flags, big);
    }
    Built {
        bytes: out,
        bitmap1,
        bitmap2,
        bitmap_len,
        desc,
        data,
    }
}

/// The same file in makedumpfile's flattened format: pieces of `piece`
/// bytes written last first, after a piece of garbage over the header
/// that the real header then overwrites (as makedumpfile rewrites its
/// header at the end).
pub fn flatten(file: &[u8], piece: usize) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    out[..12].copy_from_slice(b"makedumpfile");
    out[16..24].copy_from_slice(&1i64.to_be_bytes());
    out[24..32].copy_from_slice(&1i64.to_be_bytes());
    let mut write = |offset: usize, bytes: &[u8]| {
        out.extend_from_slice(&(offset as i64).to_be_bytes());
        out.extend_from_slice(&(bytes.len() as i64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    write(0, &[0xa5; 600]);
    let chunks: Vec<_> = file.chunks(piece).enumerate().collect();
    for (i, chunk) in chunks.into_iter().rev() {
        write(i * piece, chunk);
    }
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out
}

/// The pages of a flat dump (page frame = offset / 4 KiB): all-zero pages
/// are left out (excluded, as makedumpfile's dump level 1 does), the rest
/// are data.
pub fn pages_of_flat(flat: &[u8]) -> BTreeMap<u64, Page> {
    flat.chunks(4096)
        .enumerate()
        .filter(|(_, c)| c.len() == 4096)
        .map(|(i, c)| {
            let page = if c.iter().all(|&b| b == 0) {
                Page::Excluded
            } else {
                Page::Data(c.to_vec())
            };
            (i as u64, page)
        })
        .collect()
}
