//! Decompressing one page (block) of a kdump-compressed dump, each method
//! through its crate, into a buffer of exactly one block: a payload that
//! decompresses to more or fewer bytes than that is an error, never a
//! short or overlong page.
//!
//! | method | page flag | crate |
//! |---|---|---|
//! | zlib (`compress2`) | 0x1 | `flate2`, pure-Rust `miniz_oxide` backend |
//! | lzo (`lzo1x_1`) | 0x2 | `lzo1x`, only with the `lzo` feature |
//! | snappy (raw, not framed) | 0x4 | `snap` |
//! | zstd (one frame) | 0x20 | `ruzstd` |
//!
//! What decompressing costs is bounded by the block: every crate writes
//! into the caller's buffer (or, for zstd, a window the frame header sizes,
//! which is checked against [`MAX_ZSTD_WINDOW`] first), plus the inflate
//! state of `flate2` (about 40 KiB).

use std::io::Read as _;

/// The largest zstd window a page's frame may ask for. A page is at most
/// 1 MiB (the largest block size the tool reads), and a frame that holds
/// one needs no larger window; `ruzstd` would otherwise reserve up to
/// 100 MiB for a hostile header.
pub const MAX_ZSTD_WINDOW: u64 = 1 << 20;

/// A page compression method of the kdump-compressed format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `DUMP_DH_COMPRESSED_ZLIB`.
    Zlib,
    /// `DUMP_DH_COMPRESSED_LZO`.
    Lzo,
    /// `DUMP_DH_COMPRESSED_SNAPPY`.
    Snappy,
    /// `DUMP_DH_COMPRESSED_ZSTD`.
    Zstd,
}

/// Every method, with its flag bit (in the header's `status` and in a page
/// descriptor's `flags`).
pub const METHODS: [(u32, Method); 4] = [
    (0x1, Method::Zlib),
    (0x2, Method::Lzo),
    (0x4, Method::Snappy),
    (0x20, Method::Zstd),
];

impl Method {
    /// The method's name, as makedumpfile and QEMU spell it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Zlib => "zlib",
            Method::Lzo => "lzo",
            Method::Snappy => "snappy",
            Method::Zstd => "zstd",
        }
    }

    /// Whether this build of the tool can decompress it (lzo needs the
    /// `lzo` feature).
    pub fn built_in(self) -> bool {
        self != Method::Lzo || cfg!(feature = "lzo")
    }
}

/// Decompresses `input` into `out`, which it must fill exactly; the error
/// says what went wrong.
pub fn decompress(method: Method, input: &[u8], out: &mut [u8]) -> Result<(), String> {
    match method {
        Method::Zlib => zlib(input, out),
        Method::Lzo => lzo(input, out),
        Method::Snappy => snappy(input, out),
        Method::Zstd => zstd(input, out),
    }
}

fn zlib(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut inflate = Decompress::new(true);
    let status = inflate
        .decompress(input, out, FlushDecompress::Finish)
        .map_err(|e| format!("not a zlib stream: {e}"))?;
    let total = inflate.total_out();
    let want = u64::try_from(out.len()).unwrap_or(u64::MAX);
    match status {
        Status::StreamEnd if total == want => Ok(()),
        Status::StreamEnd => Err(format!(
            "the zlib stream inflates to {total} bytes, not one block of {want}"
        )),
        Status::Ok | Status::BufError => Err(format!(
            "the zlib stream does not end within one block of {want} bytes \
             (it is longer, or cut short)"
        )),
    }
}

#[cfg(feature = "lzo")]
fn lzo(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    lzo1x::decompress(input, out).map_err(|e| match e {
        lzo1x::DecompressError::OutputLength => format!(
            "the lzo stream does not decompress to one block of {} bytes",
            out.len()
        ),
        lzo1x::DecompressError::InvalidInput => "not an lzo1x stream".to_owned(),
    })
}

#[cfg(not(feature = "lzo"))]
fn lzo(_input: &[u8], _out: &mut [u8]) -> Result<(), String> {
    Err(NO_LZO.to_owned())
}

/// Why an lzo page cannot be read by a build without the `lzo` feature.
pub const NO_LZO: &str = "this build of the tool has no lzo decompressor: build it with \
                          `--features lzo` (the lzo1x crate, GPL-2.0), or save the dump \
                          with another compression (`makedumpfile -c`/`-p`/`-z`, QEMU \
                          `dump-guest-memory -z`/`-s`) or as an ELF core";

fn snappy(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let len =
        snap::raw::decompress_len(input).map_err(|e| format!("not a raw snappy block: {e}"))?;
    if len != out.len() {
        return Err(format!(
            "the snappy block says it holds {len} bytes, not one block of {}",
            out.len()
        ));
    }
    let n = snap::raw::Decoder::new()
        .decompress(input, out)
        .map_err(|e| format!("not a raw snappy block: {e}"))?;
    if n != out.len() {
        return Err(format!(
            "the snappy block decompresses to {n} bytes, not one block of {}",
            out.len()
        ));
    }
    Ok(())
}

/// The window a zstd frame header asks for (RFC 8878, 3.1.1.1), or why
/// the header is not one.
fn zstd_window(input: &[u8]) -> Result<u64, String> {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    let short = || "the zstd frame header is cut short".to_owned();
    if input.get(..4).ok_or_else(short)? != MAGIC {
        return Err("not a zstd frame (no magic number)".to_owned());
    }
    let descriptor = *input.get(4).ok_or_else(short)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let w = *input.get(5).ok_or_else(short)?;
        let log = 10 + u32::from(w >> 3);
        let base = 1u64.checked_shl(log).ok_or_else(short)?;
        return Ok(base.saturating_add((base / 8).saturating_mul(u64::from(w & 7))));
    }
    // Single segment: the window is the frame content size.
    let dict_bytes: usize = match descriptor & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let fcs_at = dict_bytes.saturating_add(5);
    let fcs = |n: usize| -> Result<u64, String> {
        let bytes = input
            .get(fcs_at..fcs_at.saturating_add(n))
            .ok_or_else(short)?;
        let mut le = [0u8; 8];
        le.get_mut(..n).ok_or_else(short)?.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    };
    match descriptor >> 6 {
        0 => fcs(1),
        1 => Ok(fcs(2)?.saturating_add(256)),
        2 => fcs(4),
        _ => fcs(8),
    }
}

fn zstd(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let window = zstd_window(input)?;
    if window > MAX_ZSTD_WINDOW {
        return Err(format!(
            "the zstd frame asks for a window of {window} bytes, more than the \
             {MAX_ZSTD_WINDOW} a page needs"
        ));
    }
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(input)
        .map_err(|e| format!("not a zstd frame: {e}"))?;
    let mut filled = 0usize;
    while let Some(rest) = out.get_mut(filled..).filter(|r| !r.is_empty()) {
        match decoder.read(rest) {
            Ok(0) => {
                return Err(format!(
                    "the zstd frame decompresses to {filled} bytes, not one block of {}",
                    out.len()
                ));
            }
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) => return Err(format!("the zstd frame is malformed: {e}")),
        }
    }
    let mut extra = [0u8; 1];
    match decoder.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!(
            "the zstd frame decompresses to more than one block of {} bytes",
            out.len()
        )),
        Err(e) => Err(format!("the zstd frame is malformed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn block() -> Vec<u8> {
        (0..4096u32).map(|i| (i % 7 + i / 512) as u8).collect()
    }

    fn zlib_of(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn each_method(data: &[u8]) -> Vec<(Method, Vec<u8>)> {
        let mut v = vec![
            (Method::Zlib, zlib_of(data)),
            (
                Method::Snappy,
                snap::raw::Encoder::new().compress_vec(data).unwrap(),
            ),
            (
                Method::Zstd,
                ruzstd::encoding::compress_to_vec(
                    data,
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
            ),
        ];
        #[cfg(feature = "lzo")]
        v.push((
            Method::Lzo,
            lzo1x::compress(data, lzo1x::CompressLevel::default()),
        ));
        v.retain(|(m, _)| m.built_in());
        v
    }

    #[test]
    fn each_method_round_trips_one_block() {
        let data = block();
        for (method, packed) in each_method(&data) {
            assert!(packed.len() < data.len(), "{method:?} compresses");
            let mut out = vec![0u8; data.len()];
            decompress(method, &packed, &mut out).unwrap();
            assert_eq!(out, data, "{method:?}");
        }
    }

    #[test]
    fn a_payload_of_another_length_is_refused_by_every_method() {
        let data = block();
        for (method, packed) in each_method(&data) {
            let mut small = vec![0u8; 2048];
            let e = decompress(method, &packed, &mut small).unwrap_err();
            assert!(e.contains("block"), "{method:?}: {e}");
            let mut large = vec![0u8; 8192];
            let e = decompress(method, &packed, &mut large).unwrap_err();
            assert!(e.contains("block"), "{method:?}: {e}");
        }
    }

    #[test]
    fn a_payload_cut_short_or_of_another_method_is_refused() {
        let data = block();
        for (method, packed) in each_method(&data) {
            let mut out = vec![0u8; data.len()];
            let cut = &packed[..packed.len() / 2];
            assert!(decompress(method, cut, &mut out).is_err(), "{method:?}");
            for (other, _) in each_method(&data) {
                if other != method {
                    // Another method's stream is garbage to this one.
                    let r = decompress(other, &packed, &mut out);
                    assert!(r.is_err() || out == data, "{method:?} as {other:?}");
                }
            }
        }
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_refused_before_decoding() {
        // Magic, descriptor without single segment, window log 10 + 30.
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 30 << 3, 0, 0, 0];
        let mut out = vec![0u8; 4096];
        let e = decompress(Method::Zstd, &frame, &mut out).unwrap_err();
        assert!(e.contains("window of 1099511627776 bytes"), "{e}");
    }

    #[cfg(not(feature = "lzo"))]
    #[test]
    fn lzo_without_the_feature_says_how_to_get_it() {
        let mut out = vec![0u8; 4096];
        let e = decompress(Method::Lzo, &[0x11, 0, 0], &mut out).unwrap_err();
        assert!(e.contains("--features lzo"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut out = vec![0u8; 4096];
            for (_, method) in METHODS {
                let _ = decompress(method, &bytes, &mut out);
            }
            // The same behind a real header, so the decoders get past it.
            for (method, mut packed) in each_method(&block()) {
                packed.truncate(8);
                packed.extend_from_slice(&bytes);
                let _ = decompress(method, &packed, &mut out);
            }
        }
    }
}
