//! Upgrade and rollback: what the next kernel can read, known before kexec.
//!
//! Every kernel carries a formats descriptor ([`abi::formats`]): which
//! image format versions it reads and writes, and per version which feature
//! bits it knows. The outgoing kernel reads the next kernel's descriptor
//! (from the ELF file it is about to kexec, section
//! [`IOMMU_FLB_FORMATS_SECTION`]) with [`Formats::parse`],
//! [`negotiate`]s with its own ([`FORMATS`]) and starts its writer with
//! the result ([`Config::negotiated`](crate::writer::Config::negotiated)):
//! an upgrade to a kernel that reads version 2 gets version 2, a rollback
//! to a kernel that reads only version 1 gets version 1, and a next kernel
//! that reads nothing this one writes is refused before anything is
//! handed over. [`Formats::accepts`] says whether an image already written
//! can be read by a given kernel.
//!
//! Nothing here allocates; every refusal is a typed error that names the
//! field and the entry.
//!
//! ```
//! use iommu_flb_abi::formats::{FORMATS, Formats, negotiate};
//! use iommu_flb_abi::writer::Config;
//!
//! // The next kernel's descriptor, as read from its ELF section (here:
//! // one like ours).
//! let theirs = Formats::parse(&FORMATS.to_bytes()).unwrap();
//! let agreed = negotiate(&FORMATS, &theirs).unwrap();
//! assert_eq!(agreed.version, 2);
//! let config = Config::negotiated(&agreed, 0x2a);
//! assert_eq!((config.version, config.generation), (2, 0x2a));
//! ```
//!
//! [`abi::formats`]: crate::abi::formats

use core::fmt;
use core::mem::size_of;

use static_assertions::const_assert;
use zerocopy::{FromBytes, IntoBytes};

pub use crate::abi::formats::IOMMU_FLB_FORMATS_SECTION;
use crate::abi::formats::{
    IOMMU_FLB_FORMATS_COUNT, IOMMU_FLB_FORMATS_FLAGS_KNOWN, IOMMU_FLB_FORMATS_MAGIC,
    IOMMU_FLB_FORMATS_MAX_ENTRIES, IOMMU_FLB_FORMATS_READ, IOMMU_FLB_FORMATS_SIZE,
    IOMMU_FLB_FORMATS_VERSION, IOMMU_FLB_FORMATS_WRITE, IOMMU_FLB_V1_COMPAT_KNOWN,
    IOMMU_FLB_V1_INCOMPAT_KNOWN, IommuFlbFormats, IommuFlbFormatsEntry,
};
use crate::abi::v1::IOMMU_LUO_FLB_VERSION;
use crate::abi::v2::{
    IOMMU_FLB_V2_COMPAT_KNOWN, IOMMU_FLB_V2_INCOMPAT_KNOWN, IOMMU_FLB_V2_VERSION,
};
use crate::abi::{Le32, Le64};
use crate::reader::Image;

/// Entries a descriptor holds.
const MAX: usize = IOMMU_FLB_FORMATS_MAX_ENTRIES;

/// The bytes of descriptor version 1.
const SIZE: usize = size_of::<IommuFlbFormats>();

/// The first format version whose roots record `last_compatible_version`.
const FIRST_WITH_LAST_COMPATIBLE: u32 = 2;

/// What a kernel supports of one format version: one entry of a
/// descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FormatSupport {
    /// The format version (`iommu_flb_ser.version`); never 0.
    pub version: u32,
    /// Whether the kernel reads images of this version.
    pub read: bool,
    /// Whether the kernel writes images of this version.
    pub write: bool,
    /// The version's compatible feature bits the kernel knows.
    pub compat: u64,
    /// The version's incompatible feature bits the kernel knows.
    pub incompat: u64,
}

impl FormatSupport {
    /// An unused entry: all zero.
    const NONE: FormatSupport = FormatSupport {
        version: 0,
        read: false,
        write: false,
        compat: 0,
        incompat: 0,
    };

    /// An entry that reads and writes `version` and knows none of its
    /// feature bits.
    pub const fn read_write(version: u32) -> Self {
        FormatSupport {
            version,
            read: true,
            write: true,
            compat: 0,
            incompat: 0,
        }
    }

    /// The entry's `flags` (`IOMMU_FLB_FORMATS_READ`, `..._WRITE`).
    pub const fn flags(&self) -> u32 {
        let read = if self.read { IOMMU_FLB_FORMATS_READ } else { 0 };
        let write = if self.write {
            IOMMU_FLB_FORMATS_WRITE
        } else {
            0
        };
        read | write
    }

    /// The entry as stored.
    const fn to_ser(self) -> IommuFlbFormatsEntry {
        IommuFlbFormatsEntry {
            version: Le32::new(self.version),
            flags: Le32::new(self.flags()),
            compat_known: Le64::new(self.compat),
            incompat_known: Le64::new(self.incompat),
        }
    }
}

/// A checked formats descriptor: at most
/// [`IOMMU_FLB_FORMATS_MAX_ENTRIES`] entries, each with a non-zero
/// version, no version twice.
///
/// Made by [`Formats::parse`] (bytes from an ELF section),
/// [`Formats::from_ser`] (a struct) or [`Formats::new`] (entries); the
/// library's own is [`FORMATS`]. Two descriptors are equal when they list
/// the same entries in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Formats {
    /// The first `len` are used, the rest [`FormatSupport::NONE`].
    entries: [FormatSupport; MAX],
    len: usize,
}

/// Lossless: format versions and `count` are `u32`s, which fit `u64` and,
/// on the 32- and 64-bit targets this crate supports, `usize`.
#[allow(clippy::as_conversions)]
const fn version_u32(v: u64) -> u32 {
    v as u32
}
const_assert!(IOMMU_LUO_FLB_VERSION >> 32 == 0);
const_assert!(IOMMU_FLB_V2_VERSION >> 32 == 0);

/// Version 1, read and written, with the feature bits it defines (none).
const V1_SUPPORT: FormatSupport = FormatSupport {
    version: version_u32(IOMMU_LUO_FLB_VERSION),
    read: true,
    write: true,
    compat: IOMMU_FLB_V1_COMPAT_KNOWN,
    incompat: IOMMU_FLB_V1_INCOMPAT_KNOWN,
};

/// The library's own descriptor: it reads and writes versions 1 and 2,
/// and knows the feature bits each defines (none yet). The C header's
/// `IOMMU_FLB_DECLARE_FORMATS()` defines the same descriptor from the same
/// constants.
pub const FORMATS: Formats = Formats::of([
    V1_SUPPORT,
    FormatSupport {
        version: version_u32(IOMMU_FLB_V2_VERSION),
        read: true,
        write: true,
        compat: IOMMU_FLB_V2_COMPAT_KNOWN,
        incompat: IOMMU_FLB_V2_INCOMPAT_KNOWN,
    },
]);
#[allow(clippy::as_conversions)]
const _: () = assert!(FORMATS.len == IOMMU_FLB_FORMATS_COUNT as usize);

/// What a kernel without a descriptor reads and writes: version 1 only, as
/// every kernel built before `IOMMU_FLB_DECLARE_FORMATS()` existed. A tool
/// that finds no `.iommu_flb_formats` section in a kernel file uses it.
pub const WITHOUT_DESCRIPTOR: Formats = Formats::of([V1_SUPPORT]);

impl Formats {
    /// The descriptor of the constant `entries`, its other slots unused:
    /// how the library's own descriptors are written. Meant for constants,
    /// which are evaluated when the crate is compiled: an entry
    /// [`Formats::new`] would refuse (version 0, a version twice, too many
    /// entries) fails the build.
    #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // In a constant, an index out of range or an overflow fails the build.
    const fn of<const N: usize>(entries: [FormatSupport; N]) -> Formats {
        assert!(N <= MAX, "more entries than a descriptor holds");
        let mut out = [FormatSupport::NONE; MAX];
        let mut i = 0;
        while i < N {
            let version = entries[i].version;
            assert!(version != 0, "an entry of version 0");
            let mut j = 0;
            while j < i {
                assert!(entries[j].version != version, "a version listed twice");
                j += 1;
            }
            out[i] = entries[i];
            i += 1;
        }
        Formats {
            entries: out,
            len: N,
        }
    }

    /// A descriptor of `entries`, checked as [`Formats::parse`] checks a
    /// stored one.
    pub fn new(entries: &[FormatSupport]) -> Result<Formats, FormatsError> {
        if entries.len() > MAX {
            return Err(FormatsError::TooManyEntries {
                count: u32::try_from(entries.len()).unwrap_or(u32::MAX),
                max: MAX,
            });
        }
        let mut out = [FormatSupport::NONE; MAX];
        for ((entry, e), slot) in (0usize..).zip(entries).zip(out.iter_mut()) {
            check_entry(entries, entry, e.version)?;
            *slot = *e;
        }
        Ok(Formats {
            entries: out,
            len: entries.len(),
        })
    }

    /// The descriptor in `bytes`, exactly: what an ELF section holding one
    /// descriptor contains. Refuses what [`parse_prefix`](Self::parse_prefix)
    /// refuses, and bytes past its `size`
    /// ([`FormatsError::TrailingBytes`]).
    pub fn parse(bytes: &[u8]) -> Result<Formats, FormatsError> {
        let (formats, rest) = Formats::parse_prefix(bytes)?;
        if rest.is_empty() {
            Ok(formats)
        } else {
            Err(FormatsError::TrailingBytes {
                size: bytes.len().saturating_sub(rest.len()),
                len: bytes.len(),
            })
        }
    }

    /// The descriptor at the start of `bytes`, and the bytes after its
    /// `size` (another descriptor, in a section two objects contributed
    /// to). A descriptor's bytes past the fields of descriptor version 1
    /// (up to its `size`) are a later producer's and are skipped.
    ///
    /// Refuses, in this order: fewer bytes than descriptor version 1
    /// ([`Short`](FormatsError::Short)), a wrong `magic`, a descriptor
    /// `version` other than 1, a `size` below descriptor version 1's or
    /// beyond `bytes`, a `count` beyond the entry array, then entry by
    /// entry: a used one with version 0 or the version of an earlier entry,
    /// or with unknown flags, and an unused one that is not zero.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(Formats, &[u8]), FormatsError> {
        let (ser, _) = IommuFlbFormats::ref_from_prefix(bytes)
            .map_err(|_| FormatsError::Short { len: bytes.len() })?;
        check_header(ser)?;
        let size = ser.size.get();
        let rest = usize::try_from(size)
            .ok()
            .and_then(|s| bytes.get(s..))
            .ok_or(FormatsError::SizeBeyondData {
                size,
                len: bytes.len(),
            })?;
        Ok((check_entries(ser)?, rest))
    }

    /// The descriptor in `ser`, checked as [`parse_prefix`](Self::parse_prefix)
    /// checks it, except that bytes past the struct (up to a larger `size`)
    /// are not there to be checked: what a C caller passes by pointer.
    pub fn from_ser(ser: &IommuFlbFormats) -> Result<Formats, FormatsError> {
        check_header(ser)?;
        check_entries(ser)
    }

    /// The descriptor as stored: descriptor version 1, `size` its own.
    #[allow(clippy::as_conversions)] // `len` is at most `MAX`.
    pub const fn to_ser(&self) -> IommuFlbFormats {
        let mut entries = [FormatSupport::NONE.to_ser(); MAX];
        let mut i = 0;
        while i < MAX {
            // In bounds: `i < MAX`, the arrays' length.
            #[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
            {
                entries[i] = self.entries[i].to_ser();
                i += 1;
            }
        }
        IommuFlbFormats {
            magic: Le32::new(IOMMU_FLB_FORMATS_MAGIC),
            version: Le32::new(IOMMU_FLB_FORMATS_VERSION),
            size: Le32::new(IOMMU_FLB_FORMATS_SIZE),
            count: Le32::new(version_u32(self.len as u64)),
            entries,
        }
    }

    /// The descriptor as stored, as bytes: what
    /// `IOMMU_FLB_DECLARE_FORMATS()` puts in the ELF section for
    /// [`FORMATS`].
    pub fn to_bytes(&self) -> [u8; SIZE] {
        zerocopy::transmute!(self.to_ser())
    }

    /// The used entries, in stored order.
    pub fn entries(&self) -> &[FormatSupport] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// The entry of format `version`, if the descriptor has one.
    pub fn get(&self, version: u32) -> Option<&FormatSupport> {
        self.entries().iter().find(|e| e.version == version)
    }

    /// The versions of the entries `which` selects, ascending.
    fn versions(&self, which: impl Fn(&FormatSupport) -> bool) -> Versions {
        let mut v = Versions::NONE;
        for e in self.entries().iter().filter(|e| which(e)) {
            v.insert(e.version);
        }
        v
    }

    /// The format versions this descriptor reads, ascending.
    pub fn reads(&self) -> Versions {
        self.versions(|e| e.read)
    }

    /// The format versions this descriptor writes, ascending.
    pub fn writes(&self) -> Versions {
        self.versions(|e| e.write)
    }

    /// Whether a kernel with this descriptor reads an image whose root
    /// says `version`, `last_compatible` (its `last_compatible_version`;
    /// ignored for version 1, which has none) and `incompat` (its
    /// `incompat_features`; 0 for version 1): the format version whose
    /// rules it reads the image by, or why not.
    ///
    /// A kernel reads an image by the entry of its version, or, for an
    /// image of a later version, by the newest version it reads that is not
    /// older than `last_compatible` (which names the oldest reader the
    /// image's writer allows: a version-3 image with `last_compatible` 2 is
    /// read by a version-2 reader). The image's `incompat` bits must all be
    /// known to that entry. These are the rules the crate's reader applies
    /// (see [`abi::v2`](crate::abi::v2)), so for [`FORMATS`] this says what
    /// [`reader::validate`](crate::reader::validate) says of the root.
    ///
    /// ```
    /// use iommu_flb_abi::formats::{FORMATS, NegotiateError};
    ///
    /// assert_eq!(FORMATS.accepts(2, 2, 0), Ok(2));
    /// assert_eq!(FORMATS.accepts(3, 2, 0), Ok(2)); // a later 2.x writer
    /// assert!(matches!(FORMATS.accepts(3, 3, 0), Err(NegotiateError::NotReadable { .. })));
    /// assert_eq!(
    ///     FORMATS.accepts(2, 2, 1 << 5),
    ///     Err(NegotiateError::UnknownFeatures { version: 2, bits: 1 << 5 }),
    /// );
    /// ```
    pub fn accepts(
        &self,
        version: u64,
        last_compatible: u32,
        incompat: u64,
    ) -> Result<u32, NegotiateError> {
        let first = u64::from(FIRST_WITH_LAST_COMPATIBLE);
        let mut readers = self.entries().iter().filter(|e| e.read);
        let entry = if version < first {
            readers.find(|e| u64::from(e.version) == version)
        } else {
            if last_compatible < FIRST_WITH_LAST_COMPATIBLE || u64::from(last_compatible) > version
            {
                return Err(NegotiateError::BadLastCompatible {
                    version,
                    last_compatible,
                });
            }
            readers
                .filter(|e| e.version >= last_compatible && u64::from(e.version) <= version)
                .max_by_key(|e| e.version)
        };
        let Some(entry) = entry else {
            return Err(NegotiateError::NotReadable {
                version,
                last_compatible,
                reads: self.reads(),
            });
        };
        let bits = incompat & !entry.incompat;
        if bits != 0 {
            return Err(NegotiateError::UnknownFeatures {
                version: entry.version,
                bits,
            });
        }
        Ok(entry.version)
    }

    /// [`accepts`](Self::accepts) for a validated image: its root's
    /// `version`, `last_compatible_version` and `incompat_features`.
    pub fn accepts_image<M: crate::Memory + ?Sized>(
        &self,
        image: &Image<'_, '_, M>,
    ) -> Result<u32, NegotiateError> {
        let last_compatible = image
            .root_v2()
            .map_or(FIRST_WITH_LAST_COMPATIBLE.saturating_sub(1), |r| {
                r.last_compatible_version.get()
            });
        let incompat = image.features().map_or(0, |f| f.incompat);
        self.accepts(image.version(), last_compatible, incompat)
    }
}

impl Default for Formats {
    /// [`FORMATS`].
    fn default() -> Self {
        FORMATS
    }
}

/// Checks the header fields of a stored descriptor that do not depend on
/// how many bytes follow it: `magic`, `version`, `size` (at least its own).
fn check_header(ser: &IommuFlbFormats) -> Result<(), FormatsError> {
    let magic = ser.magic.get();
    if magic != IOMMU_FLB_FORMATS_MAGIC {
        return Err(FormatsError::BadMagic { found: magic });
    }
    let version = ser.version.get();
    if version != IOMMU_FLB_FORMATS_VERSION {
        return Err(FormatsError::UnknownVersion { found: version });
    }
    let size = ser.size.get();
    if size < IOMMU_FLB_FORMATS_SIZE {
        return Err(FormatsError::SizeTooSmall { size });
    }
    Ok(())
}

/// Checks `count` and every entry of a stored descriptor.
fn check_entries(ser: &IommuFlbFormats) -> Result<Formats, FormatsError> {
    let count = ser.count.get();
    let len = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX)
        .ok_or(FormatsError::TooManyEntries { count, max: MAX })?;
    let mut entries = [FormatSupport::NONE; MAX];
    for (entry, e) in (0usize..).zip(&ser.entries) {
        if entry >= len {
            if e.as_bytes().iter().any(|&b| b != 0) {
                return Err(FormatsError::UnusedEntryNotZero { entry });
            }
            continue;
        }
        let version = e.version.get();
        check_entry(entries.get(..entry).unwrap_or(&[]), entry, version)?;
        let flags = e.flags.get();
        let unknown = flags & !IOMMU_FLB_FORMATS_FLAGS_KNOWN;
        if unknown != 0 {
            return Err(FormatsError::UnknownFlags {
                entry,
                bits: unknown,
            });
        }
        if let Some(slot) = entries.get_mut(entry) {
            *slot = FormatSupport {
                version,
                read: flags & IOMMU_FLB_FORMATS_READ != 0,
                write: flags & IOMMU_FLB_FORMATS_WRITE != 0,
                compat: e.compat_known.get(),
                incompat: e.incompat_known.get(),
            };
        }
    }
    Ok(Formats { entries, len })
}

/// Checks the version of entry `entry`: not 0, not one of the entries
/// before it (the first `entry` of `all`).
fn check_entry(all: &[FormatSupport], entry: usize, version: u32) -> Result<(), FormatsError> {
    if version == 0 {
        return Err(FormatsError::ZeroVersion { entry });
    }
    let earlier = all.get(..entry).unwrap_or(&[]);
    match earlier.iter().position(|e| e.version == version) {
        Some(first) => Err(FormatsError::DuplicateVersion {
            entry,
            first,
            version,
        }),
        None => Ok(()),
    }
}

/// Why a formats descriptor is refused: what, and in which field and entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FormatsError {
    /// Fewer bytes than a descriptor of version 1 (208).
    Short {
        /// The bytes there are.
        len: usize,
    },
    /// `magic` is not [`IOMMU_FLB_FORMATS_MAGIC`] ("IFLF").
    BadMagic {
        /// The stored value.
        found: u32,
    },
    /// `version` is not a descriptor version this crate reads (1).
    UnknownVersion {
        /// The stored value.
        found: u32,
    },
    /// `size` is below the size of descriptor version 1.
    SizeTooSmall {
        /// The stored value.
        size: u32,
    },
    /// `size` is beyond the bytes there are.
    SizeBeyondData {
        /// The stored value.
        size: u32,
        /// The bytes there are.
        len: usize,
    },
    /// Bytes follow the descriptor's `size` ([`Formats::parse`] only).
    TrailingBytes {
        /// The descriptor's `size`.
        size: usize,
        /// The bytes there are.
        len: usize,
    },
    /// `count` is beyond the entry array.
    TooManyEntries {
        /// The stored value.
        count: u32,
        /// The array's length.
        max: usize,
    },
    /// A used entry's `version` is 0.
    ZeroVersion {
        /// The entry's index.
        entry: usize,
    },
    /// A used entry's `version` is an earlier entry's.
    DuplicateVersion {
        /// The entry's index.
        entry: usize,
        /// The index of the earlier entry with that version.
        first: usize,
        /// The version.
        version: u32,
    },
    /// A used entry's `flags` has bits descriptor version 1 does not define.
    UnknownFlags {
        /// The entry's index.
        entry: usize,
        /// The unknown bits.
        bits: u32,
    },
    /// An entry at or past `count` is not all zero.
    UnusedEntryNotZero {
        /// The entry's index.
        entry: usize,
    },
}

impl FormatsError {
    /// The field the refusal is about: a header field (`magic`, `version`,
    /// `size`, `count`), or a field of entry [`entry`](Self::entry)
    /// (`version`, `flags`; `None` for a whole unused entry); `None` for a
    /// short buffer or trailing bytes.
    pub const fn field(&self) -> Option<&'static str> {
        match self {
            FormatsError::Short { .. }
            | FormatsError::TrailingBytes { .. }
            | FormatsError::UnusedEntryNotZero { .. } => None,
            FormatsError::BadMagic { .. } => Some("magic"),
            FormatsError::UnknownVersion { .. }
            | FormatsError::ZeroVersion { .. }
            | FormatsError::DuplicateVersion { .. } => Some("version"),
            FormatsError::SizeTooSmall { .. } | FormatsError::SizeBeyondData { .. } => Some("size"),
            FormatsError::TooManyEntries { .. } => Some("count"),
            FormatsError::UnknownFlags { .. } => Some("flags"),
        }
    }

    /// The index of the entry the refusal is about, if any.
    pub const fn entry(&self) -> Option<usize> {
        match *self {
            FormatsError::ZeroVersion { entry }
            | FormatsError::DuplicateVersion { entry, .. }
            | FormatsError::UnknownFlags { entry, .. }
            | FormatsError::UnusedEntryNotZero { entry } => Some(entry),
            _ => None,
        }
    }

    /// The negative Linux errno the C API returns for it: `-EPROTO` for a
    /// wrong magic, `-EOPNOTSUPP` for an unknown descriptor version or
    /// flag, `-EBADMSG` for the rest.
    pub const fn errno(&self) -> i32 {
        use crate::errno::{EBADMSG, EOPNOTSUPP, EPROTO};
        let e = match self {
            FormatsError::BadMagic { .. } => EPROTO,
            FormatsError::UnknownVersion { .. } | FormatsError::UnknownFlags { .. } => EOPNOTSUPP,
            _ => EBADMSG,
        };
        // The constants are small positive numbers: negation is exact.
        e.wrapping_neg()
    }
}

impl fmt::Display for FormatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("formats descriptor: ")?;
        match *self {
            FormatsError::Short { len } => {
                write!(
                    f,
                    "{len} bytes, fewer than the {SIZE} of descriptor version 1"
                )
            }
            FormatsError::BadMagic { found } => write!(
                f,
                "magic: {found:#x}, not {IOMMU_FLB_FORMATS_MAGIC:#x} (\"IFLF\")"
            ),
            FormatsError::UnknownVersion { found } => write!(
                f,
                "version: descriptor version {found}, this reader knows {IOMMU_FLB_FORMATS_VERSION}"
            ),
            FormatsError::SizeTooSmall { size } => {
                write!(f, "size: {size}, below the {SIZE} of descriptor version 1")
            }
            FormatsError::SizeBeyondData { size, len } => {
                write!(f, "size: {size}, beyond the {len} bytes there are")
            }
            FormatsError::TrailingBytes { size, len } => {
                write!(f, "{len} bytes, past its size {size}")
            }
            FormatsError::TooManyEntries { count, max } => {
                write!(f, "count: {count}, beyond the {max} entries")
            }
            FormatsError::ZeroVersion { entry } => write!(f, "entries[{entry}].version: 0"),
            FormatsError::DuplicateVersion {
                entry,
                first,
                version,
            } => write!(
                f,
                "entries[{entry}].version: version {version} again (entries[{first}])"
            ),
            FormatsError::UnknownFlags { entry, bits } => {
                write!(f, "entries[{entry}].flags: unknown bits {bits:#x}")
            }
            FormatsError::UnusedEntryNotZero { entry } => {
                write!(f, "entries[{entry}]: unused (past count) but not zero")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatsError {}

/// A set of format versions, ascending (at most one descriptor's worth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Versions {
    list: [u32; MAX],
    len: usize,
}

impl Versions {
    /// No version.
    const NONE: Versions = Versions {
        list: [0; MAX],
        len: 0,
    };

    /// Adds `v`, keeping the list ascending; a full list or a version
    /// already there is left as it is.
    fn insert(&mut self, v: u32) {
        let len = self.len;
        let Some(list) = self.list.get_mut(..len.saturating_add(1)) else {
            return;
        };
        let Some(used) = list.get(..len) else {
            return;
        };
        if used.contains(&v) {
            return;
        }
        let at = used.iter().take_while(|&&x| x < v).count();
        if let Some(tail) = list.get_mut(at..) {
            tail.rotate_right(1);
            if let Some(slot) = tail.first_mut() {
                *slot = v;
            }
            self.len = len.saturating_add(1);
        }
    }

    /// The versions, ascending.
    pub fn as_slice(&self) -> &[u32] {
        self.list.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Display for Versions {
    /// `1, 2`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut versions = self.as_slice().iter();
        match versions.next() {
            None => f.write_str("none"),
            Some(v) => {
                write!(f, "{v}")?;
                versions.try_for_each(|v| write!(f, ", {v}"))
            }
        }
    }
}

/// What an outgoing kernel may write for the next one: the result of
/// [`negotiate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// The format version to write: the newest one this kernel writes and
    /// the next one reads.
    pub version: u32,
    /// The version's compatible feature bits both kernels know: those the
    /// next kernel will act on (it ignores the others, so setting them is
    /// harmless but useless).
    pub compat: u64,
    /// The version's incompatible feature bits both kernels know: the only
    /// ones the writer may set, as the next kernel refuses an image with
    /// any other. The writer sets none today (versions 1 and 2 define
    /// none); one that gains a feature sets it only if it is here.
    pub incompat: u64,
}

/// Why two kernels cannot agree, or why a kernel cannot read an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NegotiateError {
    /// No format version is written by the outgoing kernel and read by the
    /// next one.
    NoCommonVersion {
        /// The versions the outgoing kernel writes.
        writes: Versions,
        /// The versions the next kernel reads.
        reads: Versions,
    },
    /// The image's version is not one the kernel reads, nor a later one
    /// whose `last_compatible_version` allows a version it reads.
    NotReadable {
        /// The image's `version`.
        version: u64,
        /// The image's `last_compatible_version` (ignored for version 1).
        last_compatible: u32,
        /// The versions the kernel reads.
        reads: Versions,
    },
    /// The image's `last_compatible_version` is not between 2 and its
    /// `version` (a version-2-or-later root always names a reader of
    /// version 2 or later, and none newer than itself).
    BadLastCompatible {
        /// The image's `version`.
        version: u64,
        /// The image's `last_compatible_version`.
        last_compatible: u32,
    },
    /// The image sets incompatible feature bits the kernel's entry for the
    /// version it would read the image by does not know.
    UnknownFeatures {
        /// The format version the kernel would read the image by.
        version: u32,
        /// The unknown bits.
        bits: u64,
    },
}

impl NegotiateError {
    /// The negative Linux errno the C API returns for it:
    /// `-EOPNOTSUPP` for unknown features (as the reader), otherwise
    /// `-EPROTONOSUPPORT`.
    pub const fn errno(&self) -> i32 {
        use crate::errno::{EOPNOTSUPP, EPROTONOSUPPORT};
        let e = match self {
            NegotiateError::UnknownFeatures { .. } => EOPNOTSUPP,
            _ => EPROTONOSUPPORT,
        };
        // As above.
        e.wrapping_neg()
    }
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NegotiateError::NoCommonVersion { writes, reads } => write!(
                f,
                "no common format version: this kernel writes {writes}, the next reads {reads}"
            ),
            NegotiateError::NotReadable {
                version,
                last_compatible,
                reads,
            } => {
                write!(f, "version {version} ")?;
                if version >= u64::from(FIRST_WITH_LAST_COMPATIBLE) {
                    write!(f, "(last_compatible_version {last_compatible}) ")?;
                }
                write!(f, "is not readable by a kernel that reads {reads}")
            }
            NegotiateError::BadLastCompatible {
                version,
                last_compatible,
            } => write!(
                f,
                "version {version}: last_compatible_version {last_compatible} not between \
                 {FIRST_WITH_LAST_COMPATIBLE} and {version}"
            ),
            NegotiateError::UnknownFeatures { version, bits } => write!(
                f,
                "incompat_features {bits:#x} unknown to the kernel's version-{version} reader"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NegotiateError {}

/// What the outgoing kernel (`ours`) writes for the next one (`theirs`):
/// the newest format version `ours` writes and `theirs` reads, with the
/// feature bits of that version both know ([`Negotiated`]); refused with
/// [`NegotiateError::NoCommonVersion`] when there is none.
///
/// ```
/// use iommu_flb_abi::formats::{FORMATS, FormatSupport, Formats, NegotiateError, negotiate};
///
/// // Rolling back to a kernel that reads only version 1.
/// let v1 = FormatSupport::read_write(1);
/// let old = Formats::new(&[v1]).unwrap();
/// assert_eq!(negotiate(&FORMATS, &old).unwrap().version, 1);
///
/// // A kernel that reads only a version this one does not write.
/// let v7 = FormatSupport::read_write(7);
/// let err = negotiate(&FORMATS, &Formats::new(&[v7]).unwrap()).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "no common format version: this kernel writes 1, 2, the next reads 7",
/// );
/// ```
pub fn negotiate(ours: &Formats, theirs: &Formats) -> Result<Negotiated, NegotiateError> {
    ours.entries()
        .iter()
        .filter(|o| o.write)
        .filter_map(|o| Some((o, theirs.get(o.version).filter(|t| t.read)?)))
        .max_by_key(|(o, _)| o.version)
        .map(|(o, t)| Negotiated {
            version: o.version,
            compat: o.compat & t.compat,
            incompat: o.incompat & t.incompat,
        })
        .ok_or(NegotiateError::NoCommonVersion {
            writes: ours.writes(),
            reads: theirs.reads(),
        })
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn the_constant_constructor_is_new_without_the_result() {
        let v2 = FormatSupport::read_write(2);
        assert_eq!(
            Formats::of([V1_SUPPORT, v2]),
            Formats::new(&[V1_SUPPORT, v2]).unwrap()
        );
        assert_eq!(Formats::of([]), Formats::new(&[]).unwrap());
        assert_eq!(FORMATS, Formats::new(FORMATS.entries()).unwrap());
        assert_eq!(WITHOUT_DESCRIPTOR.entries(), [V1_SUPPORT]);
    }

    #[test]
    #[should_panic(expected = "a version listed twice")]
    fn the_constant_constructor_refuses_a_version_twice() {
        Formats::of([V1_SUPPORT, FormatSupport::read_write(2), V1_SUPPORT]);
    }

    #[test]
    #[should_panic(expected = "an entry of version 0")]
    fn the_constant_constructor_refuses_version_0() {
        Formats::of([FormatSupport::read_write(0)]);
    }

    #[test]
    #[should_panic(expected = "more entries than a descriptor holds")]
    fn the_constant_constructor_refuses_too_many_entries() {
        Formats::of([(); MAX + 1].map(|()| V1_SUPPORT));
    }

    #[test]
    fn versions_insert_keeps_them_ascending_and_unique() {
        let mut v = Versions::NONE;
        for x in [5, 1, 3, 1, 9, 2, 8, 7, 6, 4] {
            v.insert(x);
        }
        // Full at 8: 4 came too late.
        assert_eq!(v.as_slice(), [1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(v.to_string(), "1, 2, 3, 5, 6, 7, 8, 9");
        assert_eq!(Versions::NONE.to_string(), "none");
    }

    #[test]
    fn the_own_descriptor_is_what_new_makes_of_its_entries() {
        assert_eq!(Formats::new(FORMATS.entries()), Ok(FORMATS));
        assert_eq!(FORMATS.reads().as_slice(), [1, 2]);
        assert_eq!(FORMATS.writes().as_slice(), [1, 2]);
    }
}
