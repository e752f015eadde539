//! `scan`: finding the roots in a dump without being told where they are.
//!
//! One pass reads every 4 KiB page the dump holds, once, into one buffer,
//! and notes two kinds of candidate:
//!
//! - a root: version 2 by its magic (`version` >= 2 and `IFLR`); version 1
//!   by structure (`version` 1, three chain heads that are 0 or
//!   page-aligned, not all 0, none the page itself);
//! - an entry of LUO's FLB table naming the IOMMU's data: a page that
//!   starts with `struct luo_flb_header_ser { u64 pgcnt; u64 count; }`,
//!   then 64-byte `struct luo_flb_ser { char name[48]; u64 data; u64
//!   count; }` entries, one of the first `count` (at most 63) named
//!   `iommu-liveupdate`; its `data` is the root's address.
//!
//! Then the reader validates each candidate (the table's first, each root
//! once), with the dump's page cache emptied between candidates, so a scan
//! keeps at most one candidate's pages. At most [`MAX_CANDIDATES`] are
//! validated; the rest are counted.

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::reader::{self, Options};

use crate::load::Dump;
use crate::render::{self, Records};
use crate::source::Source;

/// Candidates validated at most; a hostile dump full of root-like pages
/// costs this many validations, not one per page.
pub const MAX_CANDIDATES: usize = 4096;

/// LUO's name for the IOMMU's FLB entry.
pub const LUO_FLB_NAME: &[u8] = b"iommu-liveupdate";

/// Entries of LUO's FLB table in its first page.
const LUO_FLB_PER_PAGE: u64 = 63;

/// How a candidate root was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// An entry of LUO's FLB table at this address names it.
    LuoTable(PhysAddr),
    /// Its page starts with version 2's root magic.
    V2Magic,
    /// Its page looks like a version-1 root.
    V1Structure,
}

impl How {
    fn describe(self) -> String {
        match self {
            How::LuoTable(at) => format!("named by LUO's FLB table entry at {at}"),
            How::V2Magic => "version-2 root magic".to_owned(),
            How::V1Structure => "version-1 root structure".to_owned(),
        }
    }
}

/// One candidate and what the reader said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The candidate root's address.
    pub root: PhysAddr,
    /// How it was found.
    pub how: How,
    /// The summary of a valid image, or the reader's refusal.
    pub result: Result<String, String>,
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Every candidate validated, LUO-named ones first, then by address.
    pub found: Vec<Found>,
    /// Candidates beyond [`MAX_CANDIDATES`], not validated.
    pub skipped: usize,
    /// Pages read.
    pub pages: u64,
    /// Pages in the dump's extents that could not be read (excluded from
    /// a kdump dump, or holes).
    pub unreadable: u64,
    /// The scan stopped at [`Dump::scan_limit`]: the file claims more
    /// pages than it has bytes for.
    pub stopped: bool,
}

impl ScanReport {
    /// The valid roots.
    pub fn valid(&self) -> impl Iterator<Item = &Found> {
        self.found.iter().filter(|f| f.result.is_ok())
    }

    /// The root `validate` and `inspect` use without `--root`: the one LUO's
    /// table names if it is valid, else the only valid root; an error
    /// listing what was found when there is none or several.
    pub fn choose(&self) -> Result<PhysAddr, String> {
        if let Some(f) = self.valid().find(|f| matches!(f.how, How::LuoTable(_))) {
            return Ok(f.root);
        }
        let valid: Vec<&Found> = self.valid().collect();
        match valid.as_slice() {
            [one] => Ok(one.root),
            [] => Err(format!("scan found no valid root{}", self.listing(false))),
            _ => Err(format!(
                "scan found {} valid roots; pass --root with one of them{}",
                valid.len(),
                self.listing(false)
            )),
        }
    }

    /// The candidates as lines: every valid one and every refused one found
    /// by magic or by LUO's table (a refused version-1 lookalike is only
    /// counted: most are not roots).
    fn listing(&self, counts: bool) -> String {
        let mut out = String::new();
        let mut lookalikes = 0usize;
        for f in &self.found {
            match (&f.result, f.how) {
                (Err(_), How::V1Structure) => lookalikes = lookalikes.saturating_add(1),
                (Ok(summary), how) => out.push_str(&format!(
                    "\n  root {} ({}): {summary}",
                    f.root,
                    how.describe()
                )),
                (Err(why), how) => out.push_str(&format!(
                    "\n  root {} ({}): refused: {why}",
                    f.root,
                    how.describe()
                )),
            }
        }
        if counts && lookalikes > 0 {
            out.push_str(&format!(
                "\n  {lookalikes} page(s) that look like a version-1 root did not validate"
            ));
        }
        if self.stopped {
            out.push_str(
                "\n  the scan stopped early: the file's segments claim more pages than it has bytes for",
            );
        }
        if self.skipped > 0 {
            out.push_str(&format!(
                "\n  {} more candidate(s) not validated (at most {MAX_CANDIDATES})",
                self.skipped
            ));
        }
        out
    }

    /// `scan`'s output.
    pub fn text(&self, name: &str) -> String {
        let mut out = format!(
            "{name}: scanned {} pages of 4 KiB ({} unreadable)",
            self.pages, self.unreadable
        );
        if !self.found.iter().any(|f| matches!(f.how, How::LuoTable(_))) {
            out.push_str("; no LUO FLB table entry named iommu-liveupdate");
        }
        let valid = self.valid().count();
        out.push_str(&format!("; {valid} valid root(s)"));
        out.push_str(&self.listing(true));
        out.push('\n');
        out
    }
}

const PAGE: u64 = 4096;

fn le64(page: &[u8], at: usize) -> u64 {
    page.get(at..at.saturating_add(8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The candidates the pass keeps, at most [`MAX_CANDIDATES`] of each kind
/// (roots found on their own page, roots named by LUO's table), in the
/// order found; the others are counted. A dump full of root-like pages
/// costs this much memory, not a list entry per page.
#[derive(Default)]
struct Candidates {
    pages: Vec<(PhysAddr, How)>,
    named: Vec<(PhysAddr, How)>,
    dropped: usize,
}

impl Candidates {
    fn push(&mut self, root: PhysAddr, how: How) {
        let list = match how {
            How::LuoTable(_) => &mut self.named,
            How::V2Magic | How::V1Structure => &mut self.pages,
        };
        if list.len() < MAX_CANDIDATES {
            list.push((root, how));
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

/// What the page at `phys` is a candidate for.
fn candidates(phys: u64, page: &[u8], out: &mut Candidates) {
    let version = le64(page, 0);
    if version >= 2 && page.get(8..12) == Some(&b"IFLR"[..]) {
        out.push(PhysAddr::new(phys), How::V2Magic);
    } else if version == 1 {
        let heads = [le64(page, 8), le64(page, 16), le64(page, 24)];
        if heads.iter().all(|&h| h % PAGE == 0 && h != phys) && heads.iter().any(|&h| h != 0) {
            out.push(PhysAddr::new(phys), How::V1Structure);
        }
    }
    let (pgcnt, count) = (le64(page, 0), le64(page, 8));
    if pgcnt == 0 || count == 0 {
        return;
    }
    for i in 0..count.min(LUO_FLB_PER_PAGE) {
        let Some(at) = usize::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(64))
            .and_then(|o| o.checked_add(16))
        else {
            return;
        };
        let Some(name) = page.get(at..at.saturating_add(48)) else {
            return;
        };
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if name.get(..len) == Some(LUO_FLB_NAME) {
            let data = le64(page, at.saturating_add(48));
            let entry = phys.saturating_add(u64::try_from(at).unwrap_or(0));
            out.push(PhysAddr::new(data), How::LuoTable(PhysAddr::new(entry)));
        }
    }
}

/// Scans `dump`: one pass over its pages, then each candidate validated
/// with `opts` (version 1's page size; version 2 reads its own).
/// `progress(done, total)` is called with bytes of the dump's extents.
pub fn scan<S: Source>(
    dump: &mut Dump<S>,
    opts: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> ScanReport {
    let extents = dump.extents();
    let total = extents
        .iter()
        .fold(0u64, |t, (a, b)| t.saturating_add(b.saturating_sub(*a)));
    let mut report = ScanReport::default();
    let mut found = Candidates::default();
    let mut buf = vec![0u8; PageSize::Size4K.bytes()];
    let mut done = 0u64;
    let limit = dump.scan_limit();
    let unit = dump.presence_unit();
    'extents: for (start, end) in extents {
        let mut phys = start.div_ceil(PAGE).saturating_mul(PAGE);
        while phys < end && end.saturating_sub(phys) >= PAGE {
            if report.pages >= limit {
                report.stopped = true;
                break 'extents;
            }
            // A page not in the dump: so is the rest of its unit (a kdump
            // block of up to 1 MiB), which is skipped without asking for
            // each of its pages.
            let step = if dump.read_uncached(PhysAddr::new(phys), &mut buf) {
                report.pages = report.pages.saturating_add(1);
                candidates(phys, &buf, &mut found);
                PAGE
            } else {
                let next = phys.saturating_add(1).next_multiple_of(unit).min(end);
                let step = next.saturating_sub(phys).max(PAGE);
                report.unreadable = report.unreadable.saturating_add(step / PAGE);
                step
            };
            let before = done;
            done = done.saturating_add(step);
            if before >> 24 != done >> 24 {
                progress(done, total);
            }
            phys = match phys.checked_add(step) {
                Some(p) => p,
                None => break,
            };
        }
    }
    progress(total, total);
    // LUO's names first (by the address they name); then the pages' own
    // roots, found in ascending address order; each root once.
    let Candidates {
        pages,
        mut named,
        dropped,
    } = found;
    named.sort_by_key(|(root, _)| *root);
    let mut all = named;
    all.extend(pages);
    let mut seen = std::collections::BTreeSet::new();
    all.retain(|(root, _)| seen.insert(*root));
    report.skipped = dropped.saturating_add(all.len().saturating_sub(MAX_CANDIDATES));
    all.truncate(MAX_CANDIDATES);
    for (root, how) in all {
        let result = match reader::validate_alloc(&*dump, root, opts) {
            Ok(owned) => Ok(render::summary(&Records::count(&owned.image()))),
            Err(e) => Err(format!("{}: {}", e.location(), e.kind())),
        };
        dump.forget_pages();
        report.found.push(Found { root, how, result });
    }
    report
}
