//! Where a dump's bytes come from: [`Source`], read at an offset, nothing
//! kept.
//!
//! The loader asks for exactly the bytes it needs (the ELF headers, one
//! program header or note at a time through a [`Window`], one page at a
//! time) and keeps only the pages the reader asked for (`load`'s page
//! cache). A `Source` itself caches nothing, so what a file claims (segment
//! sizes, note sizes, overlapping segments) costs no memory: for a file it
//! is `pread(2)`.

use std::fs::File;
use std::io;

/// Bytes readable at any offset: a byte slice, or an open file.
///
/// Implementations keep nothing between calls; the loader is the only
/// place that decides what stays in memory.
pub trait Source {
    /// The number of bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` with the bytes at `offset`; an error (and `buf` in an
    /// unspecified state) if any of them is past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

fn past_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
}

impl Source for [u8] {
    fn size(&self) -> io::Result<u64> {
        u64::try_from(self.len()).map_err(|_| past_end())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(past_end)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl<S: Source + ?Sized> Source for &S {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl Source for File {
    /// The size by seeking to the end, which also works for block devices
    /// (whose metadata says 0).
    fn size(&self) -> io::Result<u64> {
        use std::io::{Seek as _, SeekFrom};
        let mut f: &File = self;
        f.seek(SeekFrom::End(0))
    }

    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    #[cfg(not(unix))]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut f: &File = self;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Sequential reads of small pieces of one range of a [`Source`] (a program
/// header table, a note segment) through a buffer of at most
/// [`Window::CAPACITY`] bytes, so that walking a range of any size costs
/// one buffer and one read per buffer-full.
pub struct Window<'s, S: ?Sized> {
    src: &'s S,
    /// One past the last byte of the range.
    end: u64,
    /// File offset of `buf[0]`.
    at: u64,
    buf: Vec<u8>,
}

impl<'s, S: Source + ?Sized> Window<'s, S> {
    /// The buffer's size, and so the most [`Window::bytes`] returns at once.
    pub const CAPACITY: usize = 64 << 10;

    /// A window on the bytes of `src` below `end`; nothing is read yet.
    pub fn new(src: &'s S, end: u64) -> Self {
        Window {
            src,
            end,
            at: 0,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at `offset` (`len` at most [`Window::CAPACITY`]), or
    /// `None` if they are not all below the range's end or cannot be read.
    pub fn bytes(&mut self, offset: u64, len: usize) -> Option<&[u8]> {
        let len64 = u64::try_from(len).ok()?;
        if len > Self::CAPACITY || offset.checked_add(len64)? > self.end {
            return None;
        }
        let hit = offset
            .checked_sub(self.at)
            .and_then(|d| usize::try_from(d).ok())
            .filter(|from| from.checked_add(len).is_some_and(|e| e <= self.buf.len()));
        let from = match hit {
            Some(from) => from,
            None => {
                // Refill from `offset`: as much of the range as fits, which
                // is at least `len` bytes.
                let cap = u64::try_from(Self::CAPACITY).ok()?;
                let fill = usize::try_from(self.end.checked_sub(offset)?.min(cap)).ok()?;
                self.buf.resize(fill, 0);
                self.at = offset;
                if self.src.read_exact_at(&mut self.buf, offset).is_err() {
                    self.buf.clear();
                    return None;
                }
                0
            }
        };
        self.buf.get(from..from.checked_add(len)?)
    }
}
