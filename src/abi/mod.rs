//! Wire layouts, one module per format version.
//!
//! Nothing in here reads or writes an image: these modules hold only
//! `#[repr(C)]` types, constants and compile-time layout assertions. The
//! layouts are frozen in `abi/vN.txt` at the repository root; a test renders
//! [`LAYOUTS`] and compares it with those snapshots.

pub mod v1;

/// Size of one handover page in bytes. This is ABI: KHO does not support a
/// kexec between kernels with different page sizes, and every array page holds
/// exactly one page.
pub const PAGE_SIZE: usize = 4096;

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
pub const LAYOUTS: &[VersionLayout] = &[VersionLayout {
    version: v1::IOMMU_LUO_FLB_VERSION,
    structs: v1::LAYOUT,
}];

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
