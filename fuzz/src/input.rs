//! The fuzz targets' inputs, decoded from libFuzzer's bytes with
//! [`arbitrary`], and encoded back by [`Encode`], so a seed is written as
//! the value it stands for (the tests check that decoding an encoded value
//! gives it back).
//!
//! Every field is read with [`Unstructured::fill_buffer`] as fixed-size
//! little-endian bytes, and lists run to the end of the input, so the format
//! is simple enough to invert: a value's encoding is its fields in order.
//! Missing bytes read as zeroes.

use arbitrary::{Arbitrary, Result, Unstructured};
use iommu_flb_abi::reader::{Limits, Mode};

/// Reads `N` bytes (zeroes past the end of the input).
fn take<const N: usize>(u: &mut Unstructured<'_>) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    u.fill_buffer(&mut b)?;
    Ok(b)
}

fn u8_(u: &mut Unstructured<'_>) -> Result<u8> {
    take::<1>(u).map(|[b]| b)
}

fn u16_(u: &mut Unstructured<'_>) -> Result<u16> {
    take(u).map(u16::from_le_bytes)
}

fn u32_(u: &mut Unstructured<'_>) -> Result<u32> {
    take(u).map(u32::from_le_bytes)
}

fn u64_(u: &mut Unstructured<'_>) -> Result<u64> {
    take(u).map(u64::from_le_bytes)
}

/// Writes a value the way its `Arbitrary` impl reads it.
pub trait Encode {
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The encoding alone.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Reads values until the input ends.
fn until_end<'a, T: Arbitrary<'a>>(u: &mut Unstructured<'a>) -> Result<Vec<T>> {
    let mut v = Vec::new();
    while !u.is_empty() {
        v.push(T::arbitrary(u)?);
    }
    Ok(v)
}

// ---- target `raw` ----

/// Validation limits chosen by one byte: 0 keeps the defaults; otherwise
/// the low 3 bits are the pages per chain and the high 5 bits × 4 the
/// objects, small enough that images in the corpus hit them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsByte(pub u8);

impl LimitsByte {
    /// The limits this byte stands for.
    pub fn limits(self) -> Limits {
        match self.0 {
            0 => Limits::default(),
            b => Limits {
                max_pages_per_chain: u64::from(b & 7),
                max_objects: u64::from(b >> 3) * 4,
            },
        }
    }
}

/// Arbitrary bytes as a flat physical dump: byte `i` of `dump` is physical
/// `base + i`; the root is at `base + root_offset` (wrapping).
///
/// Encoding: `base` (8 bytes), `root_offset` (2), `limits` (1), then the dump
/// to the end of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawInput<'a> {
    /// Physical address of the dump's first byte.
    pub base: u64,
    /// Where the root is, from `base`.
    pub root_offset: u16,
    /// Limits to validate with (besides the defaults).
    pub limits: LimitsByte,
    /// The dump.
    pub dump: &'a [u8],
}

/// Bytes before the dump in a [`RawInput`].
pub const RAW_HEADER: usize = 11;

impl RawInput<'_> {
    /// The root's physical address.
    pub fn root(&self) -> u64 {
        self.base.wrapping_add(u64::from(self.root_offset))
    }
}

impl<'a> Arbitrary<'a> for RawInput<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(RawInput {
            base: u64_(u)?,
            root_offset: u16_(u)?,
            limits: LimitsByte(u8_(u)?),
            dump: u.bytes(u.len())?,
        })
    }
}

impl Encode for RawInput<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.root_offset.to_le_bytes());
        out.push(self.limits.0);
        out.extend_from_slice(self.dump);
    }
}

// ---- writer operations (targets `mutate` and `roundtrip`) ----

/// One writer operation. Objects are named by their index among the
/// objects of that kind preserved so far (modulo their number; the
/// operation is skipped if there are none), so any byte string is a usable
/// sequence. Small key spaces make duplicates and refusals common.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `preserve_iommu` with token `0xfed0_0000 + token × 0x1000`.
    Iommu {
        /// Token number.
        token: u8,
        /// Intel or SMMUv3 payload.
        intel: bool,
    },
    /// `preserve_domain`; `top` is a page number, `unaligned` adds 8 bytes,
    /// page 0 is the null address. Out-of-range values test the refusals.
    Domain {
        /// Page number of the top-level table.
        top: u16,
        /// Make `top_table_phys` unaligned.
        unaligned: bool,
        /// `top_level`.
        level: u8,
        /// `vasz`.
        vasz: u8,
        /// `sign_extend`.
        sign_extend: u8,
    },
    /// `preserve_device`.
    Device {
        /// PCI segment.
        seg: u8,
        /// Requester ID.
        devid: u16,
        /// Which domain.
        domain: u8,
        /// Which IOMMU.
        iommu: u8,
        /// Intel or SMMUv3 payload (may mismatch the IOMMU).
        intel: bool,
        /// `attachment_id` (a VT-d domain ID, or an SMMUv3 ASID or VMID).
        attachment: u8,
    },
    /// `n` devices with consecutive requester IDs from `devid`, payloads of
    /// the IOMMU's type, `attachment_id` 0: fills device pages quickly.
    Devices {
        /// How many.
        n: u8,
        /// PCI segment.
        seg: u8,
        /// First requester ID.
        devid: u16,
        /// Which domain.
        domain: u8,
        /// Which IOMMU.
        iommu: u8,
    },
    /// `n` valid domains: fills domain pages quickly.
    Domains {
        /// How many.
        n: u8,
    },
    /// `unpreserve_device`.
    UnDevice(u16),
    /// `unpreserve_domain`.
    UnDomain(u16),
    /// `unpreserve_iommu`.
    UnIommu(u8),
    /// Validate the image now and compare it with the model (`roundtrip`).
    Check,
}

/// Number of `Op` variants (the tag byte is taken modulo this).
const OP_TAGS: u8 = 10;

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u8_(u)? % OP_TAGS {
            0 => Op::Iommu {
                token: u8_(u)?,
                intel: u8_(u)? & 1 == 1,
            },
            1 => Op::Domain {
                top: u16_(u)?,
                unaligned: u8_(u)? & 1 == 1,
                level: u8_(u)?,
                vasz: u8_(u)?,
                sign_extend: u8_(u)?,
            },
            2 => Op::Device {
                seg: u8_(u)?,
                devid: u16_(u)?,
                domain: u8_(u)?,
                iommu: u8_(u)?,
                intel: u8_(u)? & 1 == 1,
                attachment: u8_(u)?,
            },
            3 => Op::Devices {
                n: u8_(u)?,
                seg: u8_(u)?,
                devid: u16_(u)?,
                domain: u8_(u)?,
                iommu: u8_(u)?,
            },
            4 => Op::Domains { n: u8_(u)? },
            5 => Op::UnDevice(u16_(u)?),
            6 => Op::UnDomain(u16_(u)?),
            7 => Op::UnIommu(u8_(u)?),
            _ => Op::Check,
        })
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Iommu { token, intel } => out.extend([0, token, u8::from(intel)]),
            Op::Domain {
                top,
                unaligned,
                level,
                vasz,
                sign_extend,
            } => {
                out.push(1);
                out.extend(top.to_le_bytes());
                out.extend([u8::from(unaligned), level, vasz, sign_extend]);
            }
            Op::Device {
                seg,
                devid,
                domain,
                iommu,
                intel,
                attachment,
            } => {
                out.extend([2, seg]);
                out.extend(devid.to_le_bytes());
                out.extend([domain, iommu, u8::from(intel), attachment]);
            }
            Op::Devices {
                n,
                seg,
                devid,
                domain,
                iommu,
            } => {
                out.extend([3, n, seg]);
                out.extend(devid.to_le_bytes());
                out.extend([domain, iommu]);
            }
            Op::Domains { n } => out.extend([4, n]),
            Op::UnDevice(i) => {
                out.push(5);
                out.extend(i.to_le_bytes());
            }
            Op::UnDomain(i) => {
                out.push(6);
                out.extend(i.to_le_bytes());
            }
            Op::UnIommu(i) => out.extend([7, i]),
            Op::Check => out.push(8),
        }
    }
}

/// Where the writer's pages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOrder {
    /// Ascending from page number `base` (a flat dump of the image is
    /// contiguous).
    Sequential {
        /// First page number.
        base: u32,
    },
    /// Scattered addresses below 2^48 drawn from `seed`.
    Scattered {
        /// Generator seed.
        seed: u64,
    },
}

impl<'a> Arbitrary<'a> for PageOrder {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let tag = u8_(u)?;
        let v = u64_(u)?;
        Ok(if tag & 1 == 0 {
            PageOrder::Sequential {
                base: u32::try_from(v & 0xffff_ffff).unwrap_or(0),
            }
        } else {
            PageOrder::Scattered { seed: v }
        })
    }
}

impl Encode for PageOrder {
    fn encode(&self, out: &mut Vec<u8>) {
        let (tag, v) = match *self {
            PageOrder::Sequential { base } => (0u8, u64::from(base)),
            PageOrder::Scattered { seed } => (1, seed),
        };
        out.push(tag);
        out.extend(v.to_le_bytes());
    }
}

// ---- target `mutate` ----

/// One corruption of a valid image. Pages are named by their index in the
/// image's page list (the root's page, then the IOMMU, domain and device
/// chains in order), modulo its length; records by chain (0 IOMMU, 1 domain,
/// 2 device, modulo 3) and index in the chain, modulo the slots in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Flips bit `bit % 8` of byte `byte % 4096` of a page.
    FlipBit {
        /// Page.
        page: u8,
        /// Byte in the page.
        byte: u16,
        /// Bit in the byte.
        bit: u8,
    },
    /// Stores `value` as 8 bytes at `offset % 4089` of a page.
    SetU64 {
        /// Page.
        page: u8,
        /// Byte offset in the page.
        offset: u16,
        /// The value.
        value: u64,
    },
    /// Stores the address `target_off % 4096` bytes into page `target` at
    /// `offset % 4089` of page `page`: a pointer redirected inside the image.
    Redirect {
        /// Page written.
        page: u8,
        /// Byte offset in it.
        offset: u16,
        /// Page pointed into.
        target: u8,
        /// Byte offset in that page.
        target_off: u16,
    },
    /// Points a chain link at page `to`: the root's head field `head % 3`
    /// if `from` is the root's page, else `from`'s `next_array_phys`.
    Relink {
        /// Page holding the pointer.
        from: u8,
        /// Which root head, if `from` is the root's page.
        head: u8,
        /// Page pointed at.
        to: u8,
    },
    /// Points a device's `domain_phys` (`iommu` false) or `iommu_phys` at
    /// record `index` of chain `chain`.
    Retarget {
        /// Device.
        device: u16,
        /// Which pointer.
        iommu: bool,
        /// Chain of the new target.
        chain: u8,
        /// Its record index.
        index: u16,
    },
    /// Sets a page's `nr_objects`.
    SetCount {
        /// Page.
        page: u8,
        /// New count.
        value: u16,
    },
    /// Sets a record's header (`ref_count`, `flags`).
    SetHeader {
        /// Chain.
        chain: u8,
        /// Record index.
        index: u16,
        /// New `ref_count`.
        ref_count: u32,
        /// New `flags`.
        flags: u32,
    },
    /// Swaps the contents of two pages.
    SwapPages {
        /// One page.
        a: u8,
        /// The other.
        b: u8,
    },
    /// Copies page `from` over page `to`.
    CopyPage {
        /// Source.
        from: u8,
        /// Destination.
        to: u8,
    },
    /// Removes a page from memory (unreadable).
    DropPage {
        /// Page.
        page: u8,
    },
}

/// Number of `Corruption` variants.
const CORRUPTION_TAGS: u8 = 10;
/// Bytes every encoded `Corruption` takes (tag included; unused ones zero),
/// so that a byte flip in one does not shift the rest.
pub const CORRUPTION_SIZE: usize = 14;

impl<'a> Arbitrary<'a> for Corruption {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let b: [u8; CORRUPTION_SIZE] = take(u)?;
        let mut f = Unstructured::new(&b[1..]);
        let f = &mut f;
        Ok(match b[0] % CORRUPTION_TAGS {
            0 => Corruption::FlipBit {
                page: u8_(f)?,
                byte: u16_(f)?,
                bit: u8_(f)?,
            },
            1 => Corruption::SetU64 {
                page: u8_(f)?,
                offset: u16_(f)?,
                value: u64_(f)?,
            },
            2 => Corruption::Redirect {
                page: u8_(f)?,
                offset: u16_(f)?,
                target: u8_(f)?,
                target_off: u16_(f)?,
            },
            3 => Corruption::Relink {
                from: u8_(f)?,
                head: u8_(f)?,
                to: u8_(f)?,
            },
            4 => Corruption::Retarget {
                device: u16_(f)?,
                iommu: u8_(f)? & 1 == 1,
                chain: u8_(f)?,
                index: u16_(f)?,
            },
            5 => Corruption::SetCount {
                page: u8_(f)?,
                value: u16_(f)?,
            },
            6 => Corruption::SetHeader {
                chain: u8_(f)?,
                index: u16_(f)?,
                ref_count: u32_(f)?,
                flags: u32_(f)?,
            },
            7 => Corruption::SwapPages {
                a: u8_(f)?,
                b: u8_(f)?,
            },
            8 => Corruption::CopyPage {
                from: u8_(f)?,
                to: u8_(f)?,
            },
            _ => Corruption::DropPage { page: u8_(f)? },
        })
    }
}

impl Encode for Corruption {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut b = Vec::with_capacity(CORRUPTION_SIZE);
        match *self {
            Corruption::FlipBit { page, byte, bit } => {
                b.extend([0, page]);
                b.extend(byte.to_le_bytes());
                b.push(bit);
            }
            Corruption::SetU64 {
                page,
                offset,
                value,
            } => {
                b.extend([1, page]);
                b.extend(offset.to_le_bytes());
                b.extend(value.to_le_bytes());
            }
            Corruption::Redirect {
                page,
                offset,
                target,
                target_off,
            } => {
                b.extend([2, page]);
                b.extend(offset.to_le_bytes());
                b.push(target);
                b.extend(target_off.to_le_bytes());
            }
            Corruption::Relink { from, head, to } => b.extend([3, from, head, to]),
            Corruption::Retarget {
                device,
                iommu,
                chain,
                index,
            } => {
                b.push(4);
                b.extend(device.to_le_bytes());
                b.extend([u8::from(iommu), chain]);
                b.extend(index.to_le_bytes());
            }
            Corruption::SetCount { page, value } => {
                b.extend([5, page]);
                b.extend(value.to_le_bytes());
            }
            Corruption::SetHeader {
                chain,
                index,
                ref_count,
                flags,
            } => {
                b.extend([6, chain]);
                b.extend(index.to_le_bytes());
                b.extend(ref_count.to_le_bytes());
                b.extend(flags.to_le_bytes());
            }
            Corruption::SwapPages { a, b: c } => b.extend([7, a, c]),
            Corruption::CopyPage { from, to } => b.extend([8, from, to]),
            Corruption::DropPage { page } => b.extend([9, page]),
        }
        b.resize(CORRUPTION_SIZE, 0);
        out.extend(b);
    }
}

/// Target `mutate`: build a valid image with `ops`, apply `corruptions`,
/// validate.
///
/// Encoding: the page order (9 bytes), validation mode (1 byte: bit 0 set
/// is [`Mode::Restored`]), the number of corruptions (1 byte, modulo 9),
/// that many corruptions ([`CORRUPTION_SIZE`] bytes each), then operations
/// to the end of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutateInput {
    /// Where the pages come from.
    pub order: PageOrder,
    /// The mode the corrupted image is validated in first (both are run).
    pub mode: Mode,
    /// Applied in order, after building.
    pub corruptions: Vec<Corruption>,
    /// How the image is built.
    pub ops: Vec<Op>,
}

/// Most corruptions one `mutate` input applies.
pub const MAX_CORRUPTIONS: u8 = 8;

impl<'a> Arbitrary<'a> for MutateInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let order = PageOrder::arbitrary(u)?;
        let mode = if u8_(u)? & 1 == 1 {
            Mode::Restored
        } else {
            Mode::Handover
        };
        let n = u8_(u)? % (MAX_CORRUPTIONS + 1);
        let corruptions = (0..n)
            .map(|_| Corruption::arbitrary(u))
            .collect::<Result<_>>()?;
        Ok(MutateInput {
            order,
            mode,
            corruptions,
            ops: until_end(u)?,
        })
    }
}

impl Encode for MutateInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.order.encode(out);
        out.push(u8::from(self.mode == Mode::Restored));
        out.push(u8::try_from(self.corruptions.len()).unwrap_or(0));
        for c in &self.corruptions {
            c.encode(out);
        }
        for op in &self.ops {
            op.encode(out);
        }
    }
}

// ---- target `roundtrip` ----

/// Target `roundtrip`: run `ops` on a writer and on a model, and compare
/// what the reader sees with the model.
///
/// Encoding: the page order (9 bytes), the index choice (1 byte: bit 0 set
/// uses a `SliceIndex`), the allocation failure mask (8 bytes: allocation
/// step `s` fails if bit `s % 64` is set), then operations to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundtripInput {
    /// Where the pages come from.
    pub order: PageOrder,
    /// Whether the writer finds duplicates with a `SliceIndex`.
    pub slice_index: bool,
    /// Which allocation steps fail.
    pub fail_mask: u64,
    /// The operations.
    pub ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for RoundtripInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(RoundtripInput {
            order: PageOrder::arbitrary(u)?,
            slice_index: u8_(u)? & 1 == 1,
            fail_mask: u64_(u)?,
            ops: until_end(u)?,
        })
    }
}

impl Encode for RoundtripInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.order.encode(out);
        out.push(u8::from(self.slice_index));
        out.extend(self.fail_mask.to_le_bytes());
        for op in &self.ops {
            op.encode(out);
        }
    }
}

// ---- target `load` ----

/// How the `load` target reads the file (the tool's `--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// ELF if the file starts with the ELF magic, else flat.
    Auto,
    /// ELF64 core.
    Elf,
    /// Flat physical dump.
    Phys,
}

/// Target `load`: a dump file's bytes, read the way the command-line tool
/// reads them, with the options the tool takes.
///
/// Encoding: a flags byte (bits 0-1 the format: 1 ELF, 2 flat, else auto;
/// bit 2: `base` given; bit 3: `root` given), `base` (8 bytes), `root` (8
/// bytes), then the file to the end of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadInput<'a> {
    /// `--format`.
    pub format: FileFormat,
    /// `--base`.
    pub base: Option<u64>,
    /// `--root`.
    pub root: Option<u64>,
    /// The file.
    pub file: &'a [u8],
}

impl<'a> Arbitrary<'a> for LoadInput<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let flags = u8_(u)?;
        let base = u64_(u)?;
        let root = u64_(u)?;
        Ok(LoadInput {
            format: match flags & 3 {
                1 => FileFormat::Elf,
                2 => FileFormat::Phys,
                _ => FileFormat::Auto,
            },
            base: (flags & 4 != 0).then_some(base),
            root: (flags & 8 != 0).then_some(root),
            file: u.bytes(u.len())?,
        })
    }
}

impl Encode for LoadInput<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        let format = match self.format {
            FileFormat::Auto => 0,
            FileFormat::Elf => 1,
            FileFormat::Phys => 2,
        };
        let flags =
            format | u8::from(self.base.is_some()) << 2 | u8::from(self.root.is_some()) << 3;
        out.push(flags);
        out.extend(self.base.unwrap_or(0).to_le_bytes());
        out.extend(self.root.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(self.file);
    }
}

// ---- target `capi` ----

/// A page-callback failure for one writer operation, the same on the C
/// writer and on the Rust writer it is compared with: bit 7 makes every
/// `alloc_page` of the operation fail; bits 0-6, if not 0, make the page
/// callback refuse page number `(bits - 1) % pages in use` (in allocation
/// order) during it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault(pub u8);

impl Fault {
    /// Whether allocations fail.
    pub fn alloc(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// Which page in use (by allocation order, modulo their number) the
    /// page callback refuses, if any.
    pub fn page(self) -> Option<usize> {
        usize::from(self.0 & 0x7f).checked_sub(1)
    }
}

/// How a [`CapiOp::Misuse`] spoils a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    /// Its address moved by `8 × (n + 1)` bytes.
    Moved(u8),
    /// The address of another of this writer's handles, with its own check
    /// value.
    Swapped(u8),
    /// One bit of its check value flipped.
    Flipped(u8),
    /// Passed where a handle of another kind is expected.
    WrongKind,
    /// A handle of the other writer (same page order, so same addresses).
    OtherWriter,
    /// A handle from an earlier start of this writer.
    EarlierStart(u8),
}

/// One call (or a few) of the C API, for target `capi`. Objects are named
/// by their index among those of their kind (modulo their number; the
/// operation is skipped if there are none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapiOp {
    /// `iommu_flb_writer_start()` (or `_indexed`): starts a session, or is
    /// refused with -EBUSY on a started writer.
    Start {
        /// With a device index.
        indexed: bool,
    },
    /// `iommu_flb_preserve_iommu()`.
    Iommu {
        /// Token number.
        token: u8,
        /// Intel or SMMUv3.
        intel: bool,
        /// Callback failures.
        fault: Fault,
    },
    /// `iommu_flb_preserve_domain()`; `vasz` above 64 is refused.
    Domain {
        /// Page number of the top-level table (0 is refused).
        top: u8,
        /// `vasz`.
        vasz: u8,
        /// Callback failures.
        fault: Fault,
    },
    /// `iommu_flb_preserve_device()`.
    Device {
        /// PCI segment.
        seg: u8,
        /// Requester ID (small, so duplicates are common).
        devid: u8,
        /// Which domain.
        domain: u8,
        /// Which IOMMU.
        iommu: u8,
        /// `attachment_id` (non-zero is refused behind an SMMUv3).
        attachment: u8,
        /// Callback failures.
        fault: Fault,
    },
    /// `iommu_flb_unpreserve_device()`.
    UnDevice(u8, Fault),
    /// `iommu_flb_unpreserve_domain()`.
    UnDomain(u8, Fault),
    /// `iommu_flb_unpreserve_iommu()`.
    UnIommu(u8, Fault),
    /// A spoiled handle passed to the call `call % 4` (unpreserve of its
    /// kind, or `preserve_device` as its domain or IOMMU).
    Misuse {
        /// Which handle, of which kind (`which % 3`: IOMMU, domain, device).
        which: u8,
        /// How it is spoiled.
        spoil: Spoil,
        /// Which call gets it.
        call: u8,
    },
    /// A copy of the writer is called.
    CopyCall,
    /// The writer's bytes are saved...
    Snapshot,
    /// ...and copied back over it.
    PutBack,
    /// `iommu_flb_writer_counts()`.
    Counts,
    /// `iommu_flb_writer_finish()`.
    Finish,
    /// `iommu_flb_writer_abort()`.
    Abort,
    /// The writer's pages become the memory the reader side reads (as
    /// after a kexec): every image validated before is left alone.
    Publish,
    /// `iommu_flb_scratch_size()` and `iommu_flb_validate()` into scratch
    /// `scratch % 2`.
    Validate {
        /// Which scratch.
        scratch: u8,
        /// Bit 0: restored mode.
        mode: u8,
        /// Scratch size off what was asked for, in elements (signed).
        delta: i8,
        /// If not 0, page call number `mem_fail - 1` of the validation
        /// returns NULL.
        mem_fail: u8,
    },
    /// `steps` calls of `iommu_flb_next_*()` (`kind % 4`: IOMMUs, domains,
    /// devices, pages) with cursor `cursor % 4` on scratch `scratch % 2`.
    Walk {
        /// Which scratch.
        scratch: u8,
        /// Which cursor.
        cursor: u8,
        /// Which walk.
        kind: u8,
        /// How many calls.
        steps: u8,
    },
    /// Cursor `n % 4` is set to IOMMU_FLB_CURSOR_INIT.
    ResetCursor(u8),
    /// A lookup (`which % 5`: find an IOMMU, find a device, a device's
    /// domain, its IOMMU, a key that is not there) of record `index`.
    Lookup {
        /// Which scratch.
        scratch: u8,
        /// Which lookup.
        which: u8,
        /// Which record.
        index: u8,
    },
    /// `iommu_flb_restore()`, its callback failing at call `fail_at` (none
    /// if past the last page).
    Restore {
        /// Which scratch.
        scratch: u8,
        /// Failing call.
        fail_at: u8,
    },
    /// Calls on a copy of scratch `n % 2` elsewhere.
    CopyImage(u8),
    /// What the adopting kernel writes between calls: INCOMING on live
    /// device `n` of the reader's memory.
    SetIncoming(u8),
    /// Flips bit `bit % 8` of byte `byte % 4096` of the reader's page
    /// `page`: images validated before are left alone.
    Corrupt {
        /// Page (modulo the pages of the reader's memory).
        page: u8,
        /// Byte.
        byte: u16,
        /// Bit.
        bit: u8,
    },
}

/// Number of `CapiOp` variants.
const CAPI_TAGS: u8 = 23;
/// Bytes every encoded `CapiOp` takes (tag included), so that a byte flip
/// in one does not shift the rest.
pub const CAPI_OP_SIZE: usize = 8;

impl<'a> Arbitrary<'a> for CapiOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let b: [u8; CAPI_OP_SIZE] = take(u)?;
        let [tag, a, c, d, e, f, g, _] = b;
        Ok(match tag % CAPI_TAGS {
            0 => CapiOp::Start {
                indexed: a & 1 == 1,
            },
            1 => CapiOp::Iommu {
                token: a,
                intel: c & 1 == 1,
                fault: Fault(d),
            },
            2 => CapiOp::Domain {
                top: a,
                vasz: c,
                fault: Fault(d),
            },
            3 => CapiOp::Device {
                seg: a,
                devid: c,
                domain: d,
                iommu: e,
                attachment: f,
                fault: Fault(g),
            },
            4 => CapiOp::UnDevice(a, Fault(c)),
            5 => CapiOp::UnDomain(a, Fault(c)),
            6 => CapiOp::UnIommu(a, Fault(c)),
            7 => CapiOp::Misuse {
                which: a,
                spoil: match c % 6 {
                    0 => Spoil::Moved(d),
                    1 => Spoil::Swapped(d),
                    2 => Spoil::Flipped(d),
                    3 => Spoil::WrongKind,
                    4 => Spoil::OtherWriter,
                    _ => Spoil::EarlierStart(d),
                },
                call: e,
            },
            8 => CapiOp::CopyCall,
            9 => CapiOp::Snapshot,
            10 => CapiOp::PutBack,
            11 => CapiOp::Counts,
            12 => CapiOp::Finish,
            13 => CapiOp::Abort,
            14 => CapiOp::Publish,
            15 => CapiOp::Validate {
                scratch: a,
                mode: c,
                delta: i8::from_le_bytes([d]),
                mem_fail: e,
            },
            16 => CapiOp::Walk {
                scratch: a,
                cursor: c,
                kind: d,
                steps: e,
            },
            17 => CapiOp::ResetCursor(a),
            18 => CapiOp::Lookup {
                scratch: a,
                which: c,
                index: d,
            },
            19 => CapiOp::Restore {
                scratch: a,
                fail_at: c,
            },
            20 => CapiOp::CopyImage(a),
            21 => CapiOp::SetIncoming(a),
            _ => CapiOp::Corrupt {
                page: a,
                byte: u16::from_le_bytes([c, d]),
                bit: e,
            },
        })
    }
}

impl Encode for CapiOp {
    fn encode(&self, out: &mut Vec<u8>) {
        let b: Vec<u8> = match *self {
            CapiOp::Start { indexed } => vec![0, u8::from(indexed)],
            CapiOp::Iommu {
                token,
                intel,
                fault,
            } => vec![1, token, u8::from(intel), fault.0],
            CapiOp::Domain { top, vasz, fault } => vec![2, top, vasz, fault.0],
            CapiOp::Device {
                seg,
                devid,
                domain,
                iommu,
                attachment,
                fault,
            } => vec![3, seg, devid, domain, iommu, attachment, fault.0],
            CapiOp::UnDevice(i, f) => vec![4, i, f.0],
            CapiOp::UnDomain(i, f) => vec![5, i, f.0],
            CapiOp::UnIommu(i, f) => vec![6, i, f.0],
            CapiOp::Misuse { which, spoil, call } => {
                let (how, n) = match spoil {
                    Spoil::Moved(n) => (0, n),
                    Spoil::Swapped(n) => (1, n),
                    Spoil::Flipped(n) => (2, n),
                    Spoil::WrongKind => (3, 0),
                    Spoil::OtherWriter => (4, 0),
                    Spoil::EarlierStart(n) => (5, n),
                };
                vec![7, which, how, n, call]
            }
            CapiOp::CopyCall => vec![8],
            CapiOp::Snapshot => vec![9],
            CapiOp::PutBack => vec![10],
            CapiOp::Counts => vec![11],
            CapiOp::Finish => vec![12],
            CapiOp::Abort => vec![13],
            CapiOp::Publish => vec![14],
            CapiOp::Validate {
                scratch,
                mode,
                delta,
                mem_fail,
            } => vec![15, scratch, mode, delta.to_le_bytes()[0], mem_fail],
            CapiOp::Walk {
                scratch,
                cursor,
                kind,
                steps,
            } => vec![16, scratch, cursor, kind, steps],
            CapiOp::ResetCursor(n) => vec![17, n],
            CapiOp::Lookup {
                scratch,
                which,
                index,
            } => vec![18, scratch, which, index],
            CapiOp::Restore { scratch, fail_at } => vec![19, scratch, fail_at],
            CapiOp::CopyImage(n) => vec![20, n],
            CapiOp::SetIncoming(n) => vec![21, n],
            CapiOp::Corrupt { page, byte, bit } => {
                let [lo, hi] = byte.to_le_bytes();
                vec![22, page, lo, hi, bit]
            }
        };
        let mut b = b;
        b.resize(CAPI_OP_SIZE, 0);
        out.extend(b);
    }
}

/// Target `capi`: C API calls, in order, to the end of the input
/// ([`CAPI_OP_SIZE`] bytes each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapiInput {
    /// The calls.
    pub ops: Vec<CapiOp>,
}

impl<'a> Arbitrary<'a> for CapiInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(CapiInput { ops: until_end(u)? })
    }
}

impl Encode for CapiInput {
    fn encode(&self, out: &mut Vec<u8>) {
        for op in &self.ops {
            op.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T>(v: &T)
    where
        T: Encode + PartialEq + core::fmt::Debug + for<'a> Arbitrary<'a>,
    {
        let bytes = v.to_bytes();
        let back = T::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(&back, v, "decoding the encoding gives the value back");
    }

    fn every_op() -> Vec<Op> {
        vec![
            Op::Iommu {
                token: 7,
                intel: true,
            },
            Op::Domain {
                top: 0x1234,
                unaligned: true,
                level: 4,
                vasz: 65,
                sign_extend: 2,
            },
            Op::Device {
                seg: 1,
                devid: 0x0300,
                domain: 2,
                iommu: 3,
                intel: false,
                attachment: 9,
            },
            Op::Devices {
                n: 57,
                seg: 2,
                devid: 0xfff0,
                domain: 1,
                iommu: 0,
            },
            Op::Domains { n: 103 },
            Op::UnDevice(0x0102),
            Op::UnDomain(0x0304),
            Op::UnIommu(5),
            Op::Check,
        ]
    }

    fn every_corruption() -> Vec<Corruption> {
        vec![
            Corruption::FlipBit {
                page: 1,
                byte: 4095,
                bit: 7,
            },
            Corruption::SetU64 {
                page: 2,
                offset: 8,
                value: u64::MAX,
            },
            Corruption::Redirect {
                page: 3,
                offset: 0,
                target: 3,
                target_off: 16,
            },
            Corruption::Relink {
                from: 0,
                head: 2,
                to: 1,
            },
            Corruption::Retarget {
                device: 3,
                iommu: true,
                chain: 1,
                index: 2,
            },
            Corruption::SetCount { page: 3, value: 57 },
            Corruption::SetHeader {
                chain: 2,
                index: 1,
                ref_count: 0,
                flags: 3,
            },
            Corruption::SwapPages { a: 1, b: 2 },
            Corruption::CopyPage { from: 2, to: 3 },
            Corruption::DropPage { page: 4 },
        ]
    }

    #[test]
    fn every_op_decodes_from_its_encoding() {
        for op in every_op() {
            roundtrip(&op);
        }
    }

    #[test]
    fn every_corruption_decodes_from_its_fixed_size_encoding() {
        for c in every_corruption() {
            assert_eq!(c.to_bytes().len(), CORRUPTION_SIZE, "{c:?}");
            roundtrip(&c);
        }
    }

    #[test]
    fn mutate_and_roundtrip_inputs_decode_from_their_encoding() {
        roundtrip(&MutateInput {
            order: PageOrder::Scattered { seed: 0xdead_beef },
            mode: Mode::Restored,
            corruptions: every_corruption().into_iter().take(8).collect(),
            ops: every_op(),
        });
        roundtrip(&RoundtripInput {
            order: PageOrder::Sequential { base: 0x100 },
            slice_index: true,
            fail_mask: 1 << 9,
            ops: every_op(),
        });
    }

    #[test]
    fn raw_input_keeps_the_dump_and_places_the_root_from_base() {
        let dump = [1u8, 2, 3];
        let v = RawInput {
            base: u64::MAX - 1,
            root_offset: 3,
            limits: LimitsByte(0x29),
            dump: &dump,
        };
        let bytes = v.to_bytes();
        assert_eq!(bytes.len(), RAW_HEADER + dump.len());
        let back = RawInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(back, v);
        assert_eq!(back.root(), 1, "the root address wraps");
        assert_eq!(
            back.limits.limits(),
            Limits {
                max_pages_per_chain: 1,
                max_objects: 20
            }
        );
    }

    #[test]
    fn load_input_keeps_the_file_and_its_options() {
        let file = b"\x7fELF...";
        for (format, base, root) in [
            (FileFormat::Auto, None, None),
            (FileFormat::Elf, Some(1), None),
            (FileFormat::Phys, Some(0x1000), Some(0x2000)),
        ] {
            roundtrip_borrowed(&LoadInput {
                format,
                base,
                root,
                file,
            });
        }
    }

    fn roundtrip_borrowed(v: &LoadInput<'_>) {
        let bytes = v.to_bytes();
        let back = LoadInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(&back, v);
    }

    #[test]
    fn every_capi_op_decodes_from_its_fixed_size_encoding() {
        let f = Fault(0x83);
        let ops = vec![
            CapiOp::Start { indexed: true },
            CapiOp::Iommu {
                token: 3,
                intel: true,
                fault: f,
            },
            CapiOp::Domain {
                top: 9,
                vasz: 65,
                fault: f,
            },
            CapiOp::Device {
                seg: 1,
                devid: 2,
                domain: 3,
                iommu: 4,
                attachment: 5,
                fault: f,
            },
            CapiOp::UnDevice(1, f),
            CapiOp::UnDomain(2, f),
            CapiOp::UnIommu(3, f),
            CapiOp::Misuse {
                which: 1,
                spoil: Spoil::Moved(2),
                call: 3,
            },
            CapiOp::Misuse {
                which: 2,
                spoil: Spoil::Swapped(1),
                call: 0,
            },
            CapiOp::Misuse {
                which: 0,
                spoil: Spoil::Flipped(63),
                call: 1,
            },
            CapiOp::Misuse {
                which: 0,
                spoil: Spoil::WrongKind,
                call: 2,
            },
            CapiOp::Misuse {
                which: 0,
                spoil: Spoil::OtherWriter,
                call: 2,
            },
            CapiOp::Misuse {
                which: 0,
                spoil: Spoil::EarlierStart(4),
                call: 2,
            },
            CapiOp::CopyCall,
            CapiOp::Snapshot,
            CapiOp::PutBack,
            CapiOp::Counts,
            CapiOp::Finish,
            CapiOp::Abort,
            CapiOp::Publish,
            CapiOp::Validate {
                scratch: 1,
                mode: 1,
                delta: -3,
                mem_fail: 7,
            },
            CapiOp::Walk {
                scratch: 1,
                cursor: 2,
                kind: 3,
                steps: 4,
            },
            CapiOp::ResetCursor(3),
            CapiOp::Lookup {
                scratch: 0,
                which: 4,
                index: 9,
            },
            CapiOp::Restore {
                scratch: 1,
                fail_at: 2,
            },
            CapiOp::CopyImage(1),
            CapiOp::SetIncoming(2),
            CapiOp::Corrupt {
                page: 1,
                byte: 4095,
                bit: 7,
            },
        ];
        assert_eq!(ops.len(), usize::from(CAPI_TAGS) + 5);
        for op in &ops {
            assert_eq!(op.to_bytes().len(), CAPI_OP_SIZE, "{op:?}");
            roundtrip(op);
        }
        roundtrip(&CapiInput { ops });
        assert_eq!((f.alloc(), f.page()), (true, Some(2)));
        assert_eq!(Fault(0).page(), None);
    }

    #[test]
    fn short_input_reads_as_zeroes() {
        let m = MutateInput::arbitrary_take_rest(Unstructured::new(&[1])).expect("decodes");
        assert_eq!(m.order, PageOrder::Scattered { seed: 0 });
        assert!(m.corruptions.is_empty() && m.ops.is_empty());
    }
}
