//! makedumpfile's flattened format (`makedumpfile -F`, and QEMU's
//! `dump-guest-memory -z/-l/-s` without `-R`), read in place.
//!
//! A flattened file is what makedumpfile writes to a pipe: a 4 KiB header
//! (`makedumpfile` in a 16-byte field, then `type` 1 and `version` 1 as
//! big-endian 64-bit integers), then a sequence of data headers, each two
//! big-endian 64-bit integers (`offset`, `size`) followed by `size` bytes
//! that belong at `offset` of the file it stands for, and an end marker
//! whose `offset` is -1. `makedumpfile -R` writes each piece at its offset,
//! in order, so a later piece overwrites an earlier one, and bytes no piece
//! covers are zero (holes).
//!
//! [`FlatIndex::parse`] walks the data headers once (one 16-byte read
//! each, [`MAX_DATA_HEADERS`] at most) and keeps where each byte range of
//! the reassembled file is in the flattened one; [`Reassembled`] then
//! serves reads of the reassembled file from it, without writing it out,
//! and the loader parses that as kdump-compressed or ELF.

use std::collections::BTreeMap;
use std::io;

use super::kdump::MAKEDUMPFILE_SIGNATURE;
use crate::source::Source;

/// The most data headers a flattened file may have. Each costs at most
/// [`BYTES_PER_DATA_HEADER`] bytes of index.
pub const MAX_DATA_HEADERS: u64 = 1 << 20;

/// Bytes of index per data header, at most (a `BTreeMap` entry of three
/// `u64`s, with the tree's nodes at least half full), rounded up: the
/// README's memory bound uses it.
pub const BYTES_PER_DATA_HEADER: u64 = 64;

/// `MAX_SIZE_MDF_HEADER`: the data headers start here.
const FLAT_HEADER_SIZE: u64 = 4096;

/// What is wrong with a flattened file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlattenedError {
    /// The file offset of the bytes that are wrong.
    pub offset: u64,
    /// What is wrong with them.
    pub problem: FlattenedProblem,
}

/// What is wrong in a flattened file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlattenedProblem {
    /// The header's `type` or `version` is not 1.
    Header {
        /// `type`.
        flat_type: i64,
        /// `version`.
        version: i64,
    },
    /// The file ends inside the header, a data header or its data, or
    /// before the end marker.
    Truncated {
        /// What was cut.
        what: &'static str,
    },
    /// A data header's `offset` or `size` is negative, or their sum
    /// overflows.
    DataHeader {
        /// `offset`.
        offset: i64,
        /// `size`.
        size: i64,
    },
    /// More than [`MAX_DATA_HEADERS`] data headers.
    TooManyDataHeaders,
}

impl core::fmt::Display for FlattenedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "malformed makedumpfile flattened file: at file offset {:#x}: ",
            self.offset
        )?;
        match self.problem {
            FlattenedProblem::Header { flat_type, version } => write!(
                f,
                "type {flat_type} and version {version}; the tool reads type 1, version 1"
            ),
            FlattenedProblem::Truncated { what } => {
                write!(f, "the file ends inside {what} (truncated?)")
            }
            FlattenedProblem::DataHeader { offset, size } => write!(
                f,
                "a data header with offset {offset} and size {size} (negative, or past 2^63)"
            ),
            FlattenedProblem::TooManyDataHeaders => write!(
                f,
                "more than {MAX_DATA_HEADERS} data headers; reassemble the file with \
                 `makedumpfile -R OUT < FILE` and read OUT"
            ),
        }
    }
}

impl std::error::Error for FlattenedError {}

/// Where the bytes of the reassembled file are in the flattened one.
#[derive(Debug)]
pub struct FlatIndex {
    /// Disjoint ranges of the reassembled file, by their first offset:
    /// (one past their last offset, the flattened file's offset of their
    /// first byte).
    pieces: BTreeMap<u64, (u64, u64)>,
    /// The reassembled file's size: the end of its last piece.
    len: u64,
}

fn be_i64(b: [u8; 8]) -> i64 {
    i64::from_be_bytes(b)
}

impl FlatIndex {
    /// Walks the data headers of a flattened file of `len` bytes (which
    /// starts with [`MAKEDUMPFILE_SIGNATURE`]).
    pub fn parse<S: Source + ?Sized>(src: &S, len: u64) -> Result<Self, FlattenedError> {
        let bad = |offset, problem| FlattenedError { offset, problem };
        let mut head = [0u8; 32];
        src.read_exact_at(&mut head, 0)
            .ok()
            .filter(|()| len >= FLAT_HEADER_SIZE)
            .ok_or(bad(
                0,
                FlattenedProblem::Truncated {
                    what: "the 4 KiB header",
                },
            ))?;
        debug_assert!(head.starts_with(MAKEDUMPFILE_SIGNATURE));
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(head.get(i..i.saturating_add(8)).unwrap_or(&[0; 8]));
            be_i64(b)
        };
        let (flat_type, version) = (word(16), word(24));
        if flat_type != 1 || version != 1 {
            return Err(bad(16, FlattenedProblem::Header { flat_type, version }));
        }
        let mut index = FlatIndex {
            pieces: BTreeMap::new(),
            len: 0,
        };
        let mut at = FLAT_HEADER_SIZE;
        let mut count = 0u64;
        loop {
            let mut dh = [0u8; 16];
            src.read_exact_at(&mut dh, at).map_err(|_| {
                bad(
                    at,
                    FlattenedProblem::Truncated {
                        what: "a data header, before the end marker",
                    },
                )
            })?;
            let (mut o, mut s) = ([0u8; 8], [0u8; 8]);
            o.copy_from_slice(dh.get(..8).unwrap_or(&[0; 8]));
            s.copy_from_slice(dh.get(8..).unwrap_or(&[0; 8]));
            let (offset, size) = (be_i64(o), be_i64(s));
            if offset == -1 {
                return Ok(index);
            }
            count = count.saturating_add(1);
            if count > MAX_DATA_HEADERS {
                return Err(bad(at, FlattenedProblem::TooManyDataHeaders));
            }
            let header_error = bad(at, FlattenedProblem::DataHeader { offset, size });
            let (Ok(start), Ok(n)) = (u64::try_from(offset), u64::try_from(size)) else {
                return Err(header_error);
            };
            let end = start
                .checked_add(n)
                .filter(|&e| i64::try_from(e).is_ok())
                .ok_or(header_error)?;
            let data = at.saturating_add(16);
            let next = data.checked_add(n).filter(|&e| e <= len).ok_or(bad(
                data,
                FlattenedProblem::Truncated {
                    what: "the data of a data header",
                },
            ))?;
            if n > 0 {
                index.insert(start, end, data);
                index.len = index.len.max(end);
            }
            at = next;
        }
    }

    /// Puts the flattened bytes at `data` in place of `start..end`: later
    /// pieces overwrite earlier ones, as `makedumpfile -R` does.
    fn insert(&mut self, start: u64, end: u64, data: u64) {
        let map = &mut self.pieces;
        // A piece that begins before `start` and reaches into it: keep
        // its head, and its tail past `end`.
        if let Some((&s, &(e, d))) = map.range(..start).next_back() {
            if e > start {
                map.insert(s, (start, d));
                if e > end {
                    map.insert(end, (e, d.saturating_add(end.saturating_sub(s))));
                }
            }
        }
        // Pieces that begin inside: drop them, keeping a tail past `end`.
        while let Some((&s, &(e, d))) = map.range(start..end).next() {
            map.remove(&s);
            if e > end {
                map.insert(end, (e, d.saturating_add(end.saturating_sub(s))));
            }
        }
        map.insert(start, (end, data));
    }

    /// The reassembled file's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the reassembled file is empty (no data header has data).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` with the reassembled file's bytes at `offset`.
    fn read<S: Source + ?Sized>(&self, src: &S, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let past = || io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end");
        let n = u64::try_from(buf.len()).map_err(|_| past())?;
        let end = offset
            .checked_add(n)
            .filter(|&e| e <= self.len)
            .ok_or_else(past)?;
        // Holes read as zeros; the pieces over them are copied in.
        buf.fill(0);
        let first = self
            .pieces
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&s, _)| s);
        for (&s, &(e, d)) in self.pieces.range(first..end) {
            let from = s.max(offset);
            let to = e.min(end);
            if from >= to {
                continue;
            }
            let i = usize::try_from(from.saturating_sub(offset)).map_err(|_| past())?;
            let j = usize::try_from(to.saturating_sub(offset)).map_err(|_| past())?;
            let part = buf.get_mut(i..j).ok_or_else(past)?;
            src.read_exact_at(part, d.saturating_add(from.saturating_sub(s)))?;
        }
        Ok(())
    }
}

/// The file a flattened file stands for, read through its [`FlatIndex`].
pub struct Reassembled<'a, S: ?Sized> {
    /// The flattened file.
    pub src: &'a S,
    /// Its index.
    pub index: &'a FlatIndex,
}

impl<S: Source + ?Sized> Source for Reassembled<'_, S> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.index.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.index.read(self.src, buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flattened file of `pieces` (offset, bytes), in order.
    fn flat(pieces: &[(i64, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 4096];
        out[..12].copy_from_slice(MAKEDUMPFILE_SIGNATURE);
        out[16..24].copy_from_slice(&1i64.to_be_bytes());
        out[24..32].copy_from_slice(&1i64.to_be_bytes());
        for (o, b) in pieces {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&i64::try_from(b.len()).unwrap().to_be_bytes());
            out.extend_from_slice(b);
        }
        out.extend_from_slice(&(-1i64).to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes());
        out
    }

    fn reassemble(file: &[u8]) -> Vec<u8> {
        let index = FlatIndex::parse(file, file.len() as u64).unwrap();
        let r = Reassembled {
            src: file,
            index: &index,
        };
        let mut out = vec![0u8; usize::try_from(index.len()).unwrap()];
        r.read_exact_at(&mut out, 0).unwrap();
        // Every byte read alone agrees with the whole read.
        for (i, &b) in out.iter().enumerate() {
            let mut one = [0u8];
            r.read_exact_at(&mut one, i as u64).unwrap();
            assert_eq!(one[0], b, "byte {i}");
        }
        out
    }

    #[test]
    fn later_pieces_overwrite_earlier_ones_and_holes_are_zero() {
        let file = flat(&[
            (10, b"abcdefghij"),
            (0, b"0123"),
            (12, b"XY"),
            (8, b"--"),
            (18, b"zz"),
            (30, b"end"),
            (0, b""),
        ]);
        let mut want = vec![0u8; 33];
        want[..4].copy_from_slice(b"0123");
        want[8..20].copy_from_slice(b"--abXYefghzz");
        want[30..].copy_from_slice(b"end");
        assert_eq!(reassemble(&file), want);
    }

    #[test]
    fn a_piece_inside_another_splits_it() {
        let file = flat(&[(0, b"aaaaaaaaaa"), (3, b"bb"), (0, b"c")]);
        assert_eq!(reassemble(&file), b"caabbaaaaa");
    }

    #[test]
    fn malformed_files_name_the_offset() {
        let good = flat(&[(0, b"abc")]);
        let parse = |f: &[u8]| FlatIndex::parse(f, f.len() as u64).unwrap_err();
        // No end marker.
        let e = parse(&good[..good.len() - 16]);
        assert_eq!(e.offset, 4096 + 16 + 3);
        // Data past the end.
        let e = parse(&good[..4096 + 18]);
        assert_eq!(
            e,
            FlattenedError {
                offset: 4096 + 16,
                problem: FlattenedProblem::Truncated {
                    what: "the data of a data header"
                }
            }
        );
        // Negative size.
        let mut neg = good.clone();
        neg[4096 + 8..4096 + 16].copy_from_slice(&(-5i64).to_be_bytes());
        assert_eq!(
            parse(&neg).problem,
            FlattenedProblem::DataHeader {
                offset: 0,
                size: -5
            }
        );
        // Offset + size past 2^63.
        let mut big = good.clone();
        big[4096..4104].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(matches!(
            parse(&big).problem,
            FlattenedProblem::DataHeader { .. }
        ));
        // Another version.
        let mut v2 = good.clone();
        v2[24..32].copy_from_slice(&2i64.to_be_bytes());
        assert_eq!(
            parse(&v2),
            FlattenedError {
                offset: 16,
                problem: FlattenedProblem::Header {
                    flat_type: 1,
                    version: 2
                }
            }
        );
        assert!(parse(&good[..100]).to_string().contains("4 KiB header"));
    }

    #[test]
    fn reads_past_the_reassembled_end_fail() {
        let file = flat(&[(0, b"abc")]);
        let index = FlatIndex::parse(&file[..], file.len() as u64).unwrap();
        let r = Reassembled {
            src: &file[..],
            index: &index,
        };
        let mut buf = [0u8; 2];
        assert!(r.read_exact_at(&mut buf, 2).is_err());
        assert!(r.read_exact_at(&mut buf, u64::MAX).is_err());
        r.read_exact_at(&mut buf, 1).unwrap();
        assert_eq!(&buf, b"bc");
    }
}
