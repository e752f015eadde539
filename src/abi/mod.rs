//! Wire layouts, one module per format version.
//!
//! Nothing in here reads or writes an image: these modules hold only
//! `#[repr(C)]` types, constants and compile-time layout assertions. The
//! layouts are frozen in `abi/vN.txt` at the repository root; a test renders
//! [`LAYOUTS`] and compares it with those snapshots. The [`formats`]
//! descriptor (which versions a kernel reads and writes) is a wire format
//! of its own, frozen in `abi/formats-v1.txt`.

pub mod formats;
pub mod v1;
pub mod v2;

/// The size of the pages an image is made of: the kernel's `PAGE_SIZE`.
///
/// The kernel allocates the root and every array page as one page of its own
/// page size and sizes each page's capacity by it
/// (`(PAGE_SIZE - sizeof(struct iommu_array_hdr_ser)) / sizeof(record)`).
/// x86-64 kernels use 4 KiB pages; arm64 kernels 4, 16 or 64 KiB. KHO never
/// kexecs between kernels of different page sizes, so one image has one page
/// size, but a reader must be told which (version 1 does not record it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB (x86-64, and arm64 with 4 KiB pages).
    #[default]
    Size4K,
    /// 16 KiB (arm64).
    Size16K,
    /// 64 KiB (arm64).
    Size64K,
}

impl PageSize {
    /// Every page size, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size16K, PageSize::Size64K];

    /// log2 of the size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size16K => 14,
            PageSize::Size64K => 16,
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        1 << self.shift()
    }

    /// The in-page offset bits of an address: `bytes() - 1`.
    pub const fn mask(self) -> u64 {
        match self {
            PageSize::Size4K => 0xfff,
            PageSize::Size16K => 0x3fff,
            PageSize::Size64K => 0xffff,
        }
    }

    /// The size in bytes, as a `u64` for address arithmetic.
    pub const fn bytes_u64(self) -> u64 {
        1 << self.shift()
    }

    /// The page size of `bytes` bytes; `None` unless it is 4096, 16384 or
    /// 65536.
    pub const fn from_bytes(bytes: u64) -> Option<PageSize> {
        match bytes {
            4096 => Some(PageSize::Size4K),
            16384 => Some(PageSize::Size16K),
            65536 => Some(PageSize::Size64K),
            _ => None,
        }
    }
}

impl core::fmt::Display for PageSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

/// Records of `stride` bytes that fit in a page of size `page` after a
/// `header`-byte page header: `(page - header) / stride`, 0 for a zero
/// stride. Every version's capacity is this formula with its own header.
pub const fn records_in_page(page: PageSize, header: u64, stride: u64) -> u64 {
    match page.bytes_u64().saturating_sub(header).checked_div(stride) {
        Some(n) => n,
        None => 0,
    }
}

/// A little-endian `u64` as stored in the image (`__le64` in the C header).
pub type Le64 = zerocopy::little_endian::U64;

/// A little-endian `u32` as stored in the image (`__le32` in the C header).
pub type Le32 = zerocopy::little_endian::U32;

/// The layout of one field of a wire struct, as frozen in `abi/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// The field's name in the C header.
    pub name: &'static str,
    /// Byte offset from the start of the struct.
    pub offset: usize,
    /// Size of the field in bytes.
    pub size: usize,
    /// The field's C type, as the header spells it.
    pub c_type: &'static str,
}

/// The layout of one wire struct or union, as frozen in `abi/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// `"struct"` or `"union"`.
    pub kind: &'static str,
    /// The C tag (`iommu_flb_ser`, ...).
    pub name: &'static str,
    /// `sizeof` in bytes.
    pub size: usize,
    /// `_Alignof` in bytes (1 for every wire type).
    pub align: usize,
    /// Fields in declaration order.
    pub fields: &'static [FieldLayout],
}

/// The layouts of one released format version.
#[derive(Clone, Copy, Debug)]
pub struct VersionLayout {
    /// The value stored in `iommu_flb_ser.version`.
    pub version: u64,
    /// Every wire type of that version.
    pub structs: &'static [StructLayout],
}

/// Every format version this crate knows, oldest first. Each must have a
/// frozen snapshot `abi/v{version}.txt`.
pub const LAYOUTS: &[VersionLayout] = &[
    VersionLayout {
        version: v1::IOMMU_LUO_FLB_VERSION,
        structs: v1::LAYOUT,
    },
    VersionLayout {
        version: v2::IOMMU_FLB_V2_VERSION,
        structs: v2::LAYOUT,
    },
];

/// Describes one wire type for [`StructLayout`]: its C tag, kind and fields,
/// each given as `name => "c type"`. Offsets and sizes are computed by the
/// compiler from the fields themselves, so the description cannot drift from
/// the type.
macro_rules! describe {
    ($kind:literal $ty:ty, $cname:literal { $($field:ident => $cty:literal),* $(,)? }) => {
        $crate::abi::StructLayout {
            kind: $kind,
            name: $cname,
            size: ::core::mem::size_of::<$ty>(),
            align: ::core::mem::align_of::<$ty>(),
            fields: &[$($crate::abi::FieldLayout {
                name: $crate::abi::strip_raw(stringify!($field)),
                offset: ::core::mem::offset_of!($ty, $field),
                size: $crate::abi::field_size(|s: &$ty| &raw const s.$field),
                c_type: $cty,
            }),*],
        }
    };
}
pub(crate) use describe;

/// The size of the field that `project` points to. The function is never
/// called; it only lets the compiler infer the field's type `F`.
#[doc(hidden)]
pub const fn field_size<T, F>(_project: fn(&T) -> *const F) -> usize {
    core::mem::size_of::<F>()
}

/// Strips the `r#` prefix `stringify!` keeps on raw identifiers (`r#type`).
#[doc(hidden)]
pub const fn strip_raw(name: &'static str) -> &'static str {
    match name.as_bytes() {
        [b'r', b'#', rest @ ..] => match core::str::from_utf8(rest) {
            Ok(s) => s,
            Err(_) => name,
        },
        _ => name,
    }
}
