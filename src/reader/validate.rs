//! Validation: every rule of the format, checked in a fixed order, before
//! an [`Image`] exists.

use super::index::{
    Cursor, Found, LOW_MASK, MAX_OBJECTS, MAX_PAGES, Pages, ScratchElem, TAG_SHIFT, chain_tag,
    reciprocal, region_lens, tag_chain,
};
use super::view::{AnyIommu, DeviceIndex, DeviceRecord, Domain, Image, Shape};
use super::{Mode, Options, Visitor};
use crate::abi::PageSize;
use crate::abi::records_in_page;
use crate::abi::v1::IommuTypeSer;
use crate::chain::{ARRAYS, ChainWalk};
use crate::error::{Chain, Error, ErrorKind, Location, RefFault};
use crate::format::v1::V1;
use crate::format::v2::{V2, chain_fields};
use crate::format::{DeviceFields, Format, Ops, Ref, Root, Version, record_hdr};
use crate::{Memory, PhysAddr};

/// What the chain walks found: for [`scratch_len`](super::scratch_len),
/// before any record is read; for validation, the IOMMU and domain chains
/// before the passes, and the device chain as its pass goes.
pub(crate) struct Survey {
    pub pages: [u64; 3],
    pub objects: [u64; 3],
    pub strides: [u64; 3],
    /// Scratch elements `validate` needs.
    pub needed: usize,
}

/// A refusal whose error is already in the slot the check was given: the
/// functions from `validate_into` down to the record checks return this,
/// which is empty, instead of a 96-byte `Error` each, and hold no `Error`
/// temporaries of their own (the kernel's stack is small). Only
/// [`refuse`] makes one.
pub(crate) struct Refused(());

/// Puts `e` into `slot` and returns the refusal that says so.
#[inline(always)]
fn refuse(slot: &mut Option<Error>, e: Error) -> Refused {
    *slot = Some(e);
    Refused(())
}

/// `r`, with its error put into `slot`.
#[inline(always)]
fn kept<T>(slot: &mut Option<Error>, r: Result<T, Error>) -> Result<T, Refused> {
    r.map_err(|e| refuse(slot, e))
}

/// The view functions of the format `F`.
pub(crate) trait HasOps {
    const OPS: &'static Ops;
}

impl<F: Format> HasOps for F {
    const OPS: &'static Ops = &Ops::of::<F>();
}

/// The survey of the image at `root`, of either version.
pub(crate) fn survey<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    opts: &Options,
) -> Result<Survey, Error> {
    fn of<M: Memory + ?Sized, F: Format>(
        mem: &M,
        root: PhysAddr,
        opts: &Options,
        first: Option<&[u8]>,
    ) -> Result<Survey, Error> {
        survey_as::<M, F>(
            mem,
            &F::root(mem, root, opts, first)?,
            root,
            opts,
            &mut [],
            3,
        )
    }
    match Version::detect(mem, root, opts) {
        (Version::V1, first) => of::<M, V1>(mem, root, opts, first),
        (Version::V2, first) => of::<M, V2>(mem, root, opts, first),
    }
}

/// Validates the image at `root` and returns its view.
pub(crate) fn validate<'m, 's, M: Memory + ?Sized, V: Visitor<'m>>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &'s mut [ScratchElem],
    visit: V,
) -> Result<Image<'m, 's, M>, Error> {
    let shape = validate_shape(mem, root, opts, scratch, visit)?;
    Ok(Image::from_scratch(mem, shape, scratch))
}

/// Validates the image at `root`, leaving its indexes in `scratch`, and
/// returns what the view needs besides them.
pub(crate) fn validate_shape<'m, M: Memory + ?Sized, V: Visitor<'m>>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &mut [ScratchElem],
    visit: V,
) -> Result<Shape<'m>, Error> {
    let mut shape = None;
    validate_into(mem, root, opts, scratch, &mut shape, visit)?;
    // Never `None`: `validate_into` puts a shape whenever it returns `Ok`.
    shape.ok_or(Error::new(
        ErrorKind::RootUnreadable,
        Location::root(root, None),
    ))
}

/// Where validation puts the shape of an image it accepts: once, at the
/// end, in place. The Rust view takes it into an `Option<Shape>`; the C
/// boundary into the frozen state in the caller's scratch, so that no
/// frame above the record checks holds a copy (the kernel's stack is
/// small).
pub(crate) trait PutShape<'m> {
    /// Keeps the shape of the image of format `ops` whose checked root `r`
    /// is at `root_phys`, whose chains the survey `s` measured, with
    /// `live` (IOMMUs, devices) live records and its devices indexed as
    /// the last element says.
    fn put(
        &mut self,
        ops: &'static Ops,
        root_phys: PhysAddr,
        r: &Root<'m>,
        s: &Survey,
        live: (usize, usize, DeviceIndex),
    );
}

impl<'m> PutShape<'m> for Option<Shape<'m>> {
    fn put(
        &mut self,
        ops: &'static Ops,
        root_phys: PhysAddr,
        r: &Root<'m>,
        s: &Survey,
        (live_iommus, live_devices, device_index): (usize, usize, DeviceIndex),
    ) {
        *self = Some(Shape {
            ops,
            root_phys,
            root: *r,
            pages: s.pages,
            strides: s.strides,
            iommu_slots: s.objects[0],
            live_iommus,
            live_devices,
            device_index,
        });
    }
}

/// Validates the image at `root`, leaving its indexes in `scratch`, and
/// puts what the view needs besides them into `out`. The IOMMU, domain
/// and device passes hand each live record they accept to `visit`.
#[inline(always)]
pub(crate) fn validate_into<'m, M: Memory + ?Sized, O: PutShape<'m>, V: Visitor<'m>>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &mut [ScratchElem],
    out: &mut O,
    mut visit: V,
) -> Result<(), Error> {
    let mut err = None;
    let v = &mut visit;
    let checked = match Version::detect(mem, root, opts) {
        (Version::V1, first) => {
            validate_as::<M, V1, O, V>(mem, root, opts, first, scratch, out, v, &mut err)
        }
        (Version::V2, first) => {
            validate_as::<M, V2, O, V>(mem, root, opts, first, scratch, out, v, &mut err)
        }
    };
    match (checked, err) {
        (Ok(()), _) => Ok(()),
        (Err(Refused(())), Some(e)) => Err(e),
        // Never: a `Refused` is made only where its error is put.
        (Err(Refused(())), None) => Err(Error::new(
            ErrorKind::RootUnreadable,
            Location::root(root, None),
        )),
    }
}

/// The root's count of a chain against the walk's, for formats that
/// record them.
fn check_counts(
    root: &Root<'_>,
    root_phys: PhysAddr,
    i: usize,
    chain: Chain,
    pages: u64,
    objects: u64,
) -> Result<(), Error> {
    let Some(&(stored_pages, stored_records)) = root.counts.as_ref().and_then(|c| c.get(i)) else {
        return Ok(());
    };
    let [_, pages_f, records_f] = chain_fields(chain);
    let mismatch = |stored, counted, field| {
        Err(Error::new(
            ErrorKind::CountMismatch { stored, counted },
            Location::root(root_phys, Some(field)),
        ))
    };
    if stored_pages != pages {
        return mismatch(stored_pages, pages, pages_f);
    }
    if stored_records != objects {
        return mismatch(stored_records, objects, records_f);
    }
    Ok(())
}

/// Walks the first `chains` chains of the image whose checked root `root`
/// is at `root_phys` (all three for [`survey`], the IOMMU and domain
/// chains for validation, which walks the device chain as its pass goes:
/// see [`finish_as`]), counting pages and records, and records each page,
/// (address, `nr_objects`), in `walks`: the chains' pages one after the
/// other, in walk order, as far as `walks` holds them (the rest are
/// counted, not recorded: `validate` refuses a scratch shorter than
/// `needed` once the walk is done, so a chain error comes first).
///
/// Every later pass reads these chains' pages from `walks`, each page's
/// `nr_objects` as this walk read it (the device pass reads the device
/// chain's from its own walk's records, [`DeviceWalk`]).
#[inline(never)]
fn survey_as<M: Memory + ?Sized, F: Format>(
    mem: &M,
    root: &Root<'_>,
    root_phys: PhysAddr,
    opts: &Options,
    walks: &mut [ScratchElem],
    chains: usize,
) -> Result<Survey, Error> {
    let mut s = Survey {
        pages: [0; 3],
        objects: [0; 3],
        strides: [0; 3],
        needed: 0,
    };
    let mut total = 0u64;
    let mut slots = walks.iter_mut();
    for (i, chain) in ARRAYS.into_iter().enumerate().take(chains) {
        let mut walk = chain_walk::<M, F>(mem, root, root_phys, opts, chain, total);
        let mut n = 0u64;
        while let Some(page) = walk.next_page()? {
            if let Some(slot) = slots.next() {
                *slot = ScratchElem::new(page.phys.get(), page.nr_objects);
            }
            n = n.saturating_add(1);
        }
        let o = walk.objects().saturating_sub(total);
        check_counts(root, root_phys, i, chain, n, o)?;
        total = total.saturating_add(o);
        s.set(i, n, o, walk.stride());
    }
    Ok(s)
}

/// The walk of `chain` of the image whose checked root `r` is at `root`,
/// with `opts`'s CRC and its limits (clamped to what the scratch's packing
/// holds), `before` objects of earlier chains already counted.
fn chain_walk<'m, 'r, M: Memory + ?Sized, F: Format>(
    mem: &'m M,
    r: &'r Root<'m>,
    root: PhysAddr,
    opts: &'r Options,
    chain: Chain,
    before: u64,
) -> ChainWalk<'m, 'r, M, F> {
    let max_pages = opts.limits.max_pages_per_chain.min(MAX_PAGES);
    let max_objects = opts.limits.max_objects.min(MAX_OBJECTS);
    let crc = Some(&opts.crc);
    ChainWalk::new(mem, r, crc, root, chain, max_pages, max_objects, before)
}

impl Survey {
    /// Records chain `i`'s walk: `pages` pages, `objects` records of
    /// `stride` bytes; and the scratch elements the chains recorded so far
    /// need.
    fn set(&mut self, i: usize, pages: u64, objects: u64, stride: u64) {
        if let (Some(p), Some(ob), Some(st)) = (
            self.pages.get_mut(i),
            self.objects.get_mut(i),
            self.strides.get_mut(i),
        ) {
            (*p, *ob, *st) = (pages, objects, stride);
        }
        // Both sums are bounded by the clamped limits (3 × 2^40, 2^48).
        let all_pages = self.pages.iter().fold(0u64, |a, &p| a.saturating_add(p));
        let needed = all_pages
            .saturating_mul(2)
            .saturating_add(1)
            .saturating_add(self.objects[0])
            .saturating_add(self.objects[2]);
        self.needed = usize::try_from(needed).unwrap_or(usize::MAX);
    }
}

fn too_small(root: PhysAddr, needed: usize, got: usize) -> Error {
    Error::new(
        ErrorKind::ScratchTooSmall { needed, got },
        Location::root(root, None),
    )
}

/// Splits `n` elements off the front of `rest`.
/// `None` (and `rest` emptied) if it has fewer.
fn take<'s>(rest: &mut &'s mut [ScratchElem], n: u64) -> Option<&'s mut [ScratchElem]> {
    let n = usize::try_from(n).ok()?;
    let (head, tail) = core::mem::take(rest).split_at_mut_checked(n)?;
    *rest = tail;
    Some(head)
}

#[inline(never)]
#[allow(clippy::too_many_arguments)] // As `finish_as`.
fn validate_as<'m, 's, M: Memory + ?Sized, F: Format, O: PutShape<'m>, V: Visitor<'m>>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    first: Option<&'m [u8]>,
    scratch: &'s mut [ScratchElem],
    out: &mut O,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    // The root and the survey are borrowed in place, not moved out of
    // their `Result`s: one copy of each on the stack.
    let checked = F::root(mem, root, opts, first);
    let r = match &checked {
        Ok(r) => r,
        Err(e) => return Err(refuse(err, *e)),
    };
    // The IOMMU and domain chains; the device chain is walked by the
    // device pass.
    let mut surveyed = survey_as::<M, F>(mem, r, root, opts, scratch, 2);
    let s = match &mut surveyed {
        Ok(s) => s,
        Err(e) => return Err(refuse(err, *e)),
    };
    let checked = finish_as::<M, F, V>(mem, r, root, opts, s, scratch, visit, err)?;
    after_passes::<M, F, O>(mem, r, root, s, scratch, checked, out, err)
}

/// The scratch while the record passes run, for `A` IOMMU and domain
/// pages and `I` IOMMU slots: the device chain's length is not known yet.
///
/// | region | elements | entry |
/// |---|---|---|
/// | walk order | `A` | the IOMMU then the domain chain's pages, as the survey recorded them |
/// | IOMMU slots | `I` | as in `index.rs` |
/// | middle | the rest but `A + 1` | the device chain's pages in walk order from the front, at their place in the final layout; device keys (as in `index.rs`) from the back towards the front |
/// | by address | `A + 1` | the root's, IOMMU and domain pages, sorted |
///
/// The device keys never reach the device pages: [`DeviceWalk::advance`]
/// records a page only while the pages walked and the device slots they
/// hold, an upper bound on the keys, fit together.
struct PassRegions<'s> {
    walk_iommu: &'s mut [ScratchElem],
    walk_domain: &'s mut [ScratchElem],
    iommu_slots: &'s mut [ScratchElem],
    mid: &'s mut [ScratchElem],
    sorted: &'s mut [ScratchElem],
}

impl<'s> PassRegions<'s> {
    /// The regions of `scratch` for the IOMMU and domain chains `s`
    /// measured; `None` if it is too short for them.
    fn split(s: &Survey, scratch: &'s mut [ScratchElem]) -> Option<Self> {
        let mut rest = scratch;
        // The final layout's first three regions.
        let [i, d, slots, ..] = region_lens(s.pages, s.objects[0]);
        let walk_iommu = take(&mut rest, i)?;
        let walk_domain = take(&mut rest, d)?;
        let iommu_slots = take(&mut rest, slots)?;
        let a = s.pages[0].checked_add(s.pages[1])?.checked_add(1)?;
        let mid_len = u64::try_from(rest.len()).ok()?.checked_sub(a)?;
        let mid = take(&mut rest, mid_len)?;
        Some(PassRegions {
            walk_iommu,
            walk_domain,
            iommu_slots,
            mid,
            sorted: rest,
        })
    }
}

/// The walk of the device chain, run [`TOUCH_AHEAD`] pages ahead of the
/// device pass: each page is read once, its cache lines all at once
/// ([`ChainWalk::touching`]), and its header checked, while the pass
/// checks the records of a page met earlier; without it, validation
/// walked the chain first and the pass met every page a second time, with
/// no other work to hide the walk's misses behind.
struct DeviceWalk<'m, 'r, M: ?Sized, F> {
    walk: ChainWalk<'m, 'r, M, F>,
    /// The objects of the IOMMU and domain chains, which the walk's count
    /// starts from.
    before: u64,
    /// Pages recorded at the front of the middle region ([`PassRegions`]):
    /// every page walked while they fit.
    recorded: usize,
    room: bool,
    state: WalkState,
}

/// Where a [`DeviceWalk`] stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WalkState {
    Walking,
    /// The chain ended and its counts were checked.
    Ended,
    /// A chain error, already in the error slot.
    Failed,
}

impl<'m, 'r, M: Memory + ?Sized, F: Format> DeviceWalk<'m, 'r, M, F> {
    fn new(mem: &'m M, r: &'r Root<'m>, root: PhysAddr, opts: &'r Options, s: &Survey) -> Self {
        let before = s.objects[0].saturating_add(s.objects[1]);
        let walk = chain_walk::<M, F>(mem, r, root, opts, Chain::Device, before);
        DeviceWalk {
            walk: walk.touching(),
            before,
            recorded: 0,
            room: true,
            state: WalkState::Walking,
        }
    }

    /// The device records walked so far.
    fn objects(&self) -> u64 {
        self.walk.objects().saturating_sub(self.before)
    }

    /// Walks one page and records it at the front of `mid` if it fits with
    /// the device slots walked, which bound the keys at its back: `true`
    /// for a page walked, `false` at the end of the chain (whose counts
    /// are then checked against the root's). A chain error is put into
    /// `err`, and every call after it refuses.
    #[inline(never)]
    fn advance(
        &mut self,
        r: &Root<'_>,
        root: PhysAddr,
        mid: &mut [ScratchElem],
        err: &mut Option<Error>,
    ) -> Result<bool, Refused> {
        match self.state {
            WalkState::Walking => {}
            WalkState::Ended => return Ok(false),
            WalkState::Failed => return Err(Refused(())),
        }
        let page = match self.walk.next_page_into(err) {
            Ok(Some(page)) => page,
            Ok(None) => {
                let (pages, objects) = (self.walk.pages(), self.objects());
                end_counts(r, root, pages, objects, err).inspect_err(|_| {
                    self.state = WalkState::Failed;
                })?;
                self.state = WalkState::Ended;
                return Ok(false);
            }
            Err(()) => {
                self.state = WalkState::Failed;
                return Err(Refused(()));
            }
        };
        let keys = usize::try_from(self.objects()).unwrap_or(usize::MAX);
        let fits = mid
            .len()
            .checked_sub(keys)
            .is_some_and(|free| self.recorded < free);
        match mid.get_mut(self.recorded) {
            Some(e) if self.room && fits => {
                *e = ScratchElem::new(page.phys.get(), page.nr_objects);
                self.recorded = self.recorded.saturating_add(1);
            }
            _ => self.room = false,
        }
        Ok(true)
    }

    /// Walks the rest of the chain, recording its pages as `advance` does.
    #[inline(always)]
    fn drain(
        &mut self,
        r: &Root<'_>,
        root: PhysAddr,
        mid: &mut [ScratchElem],
        err: &mut Option<Error>,
    ) -> Result<(), Refused> {
        while self.advance(r, root, mid, err)? {}
        Ok(())
    }

    /// A chain error the walk deferred, made exact (`ChainWalk::settle`) in
    /// `err`, here, high on the stack: the refusal `f` again.
    fn settle(&self, f: Refused, err: &mut Option<Error>) -> Refused {
        if let Some(e) = self.walk.settle() {
            *err = Some(e);
        }
        f
    }

    /// Device page `k` of the walk, once recorded.
    #[inline(always)]
    fn entry(&self, mid: &[ScratchElem], k: usize) -> Option<ScratchElem> {
        mid.get(..self.recorded)?.get(k).copied()
    }
}

/// The device chain's counts, `pages` and `objects`, against the root's
/// (`check_counts`), its error put into `err`.
#[inline(never)]
fn end_counts(
    r: &Root<'_>,
    root: PhysAddr,
    pages: u64,
    objects: u64,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let i = super::index::slot_of(Chain::Device);
    kept(err, check_counts(r, root, i, Chain::Device, pages, objects))
}

/// The rest of [`validate_as`] once the IOMMU and domain chains are
/// walked: the record passes, the device chain walked with its own
/// ([`DeviceWalk`]), then the checks across records. Each is a function of
/// its own that runs after the one before has returned, so that the stack
/// holds one at a time (the kernel's stack is small).
///
/// The refusals come in the order they would if the device chain were
/// walked before any record was read: a chain error, then a scratch too
/// short, then a page used twice, then the first record refused. So a
/// record refused only stops the passes: the walk goes on to the chain's
/// end, and the page table is built and checked before the record's error
/// is returned. (A visitor may then have seen records of an image refused
/// for its device chain: see [`Visitor`].)
#[inline(never)]
#[allow(clippy::too_many_arguments)] // Each is a fact `validate_as` has; a struct of them would be one more copy in its frame.
fn finish_as<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    r: &Root<'m>,
    root: PhysAddr,
    opts: &Options,
    s: &mut Survey,
    scratch: &mut [ScratchElem],
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<Result<(usize, Keyed), Refused>, Refused> {
    let got = scratch.len();
    let mut dw = DeviceWalk::<M, F>::new(mem, r, root, opts, s);
    let checked = match PassRegions::split(s, scratch) {
        Some(regions) => passes::<M, F, V>(mem, r, root, opts, s, regions, &mut dw, visit, err),
        None => Err(Refused(())),
    };
    // The rest of the chain, if the passes stopped (or did not start) before
    // its end; a chain error the walk met, made exact.
    dw.drain(r, root, &mut [], err)
        .map_err(|f| dw.settle(f, err))?;
    s.set(
        super::index::slot_of(Chain::Device),
        dw.walk.pages(),
        dw.objects(),
        dw.walk.stride(),
    );
    if got < s.needed || dw.recorded != usize::try_from(dw.walk.pages()).unwrap_or(usize::MAX) {
        return Err(refuse(err, too_small(root, s.needed, got)));
    }
    // The device keys go to their place before the page table is built,
    // which may cover where they are.
    let keys = match &checked {
        Ok((_, Keyed::Ascending(pages))) => *pages,
        Ok((live, Keyed::From(_))) => *live,
        Err(_) => 0,
    };
    if arrange(s, keys, scratch).is_none() {
        return Err(refuse(err, too_small(root, s.needed, got)));
    }
    Ok(checked)
}

/// The rest of [`finish_as`] once the device chain is walked and the
/// device keys are in place: the page table, then the first record error
/// of the passes (`checked`) if there was one, then the checks across
/// records and the shape put into `out`. A function of its own, so that
/// the device walk's state is not on the stack below it.
#[inline(never)]
#[allow(clippy::too_many_arguments)] // As `finish_as`.
fn after_passes<'m, M: Memory + ?Sized, F: Format, O: PutShape<'m>>(
    mem: &'m M,
    r: &Root<'m>,
    root: PhysAddr,
    s: &Survey,
    scratch: &mut [ScratchElem],
    checked: Result<(usize, Keyed), Refused>,
    out: &mut O,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let got = scratch.len();
    let Some(regions) = split_scratch(s, scratch) else {
        return Err(refuse(err, too_small(root, s.needed, got)));
    };
    let Regions {
        walks: [walk_iommu, walk_domain, walk_device],
        sorted,
        sorted_devices,
        iommu_keys,
        device_keys,
    } = regions;
    let walks = [&*walk_iommu, &*walk_domain, &*walk_device];
    find_reused_device_pages::<F>(root, walks, sorted, sorted_devices, err)?;
    let (live_devices, keyed) = checked?;
    let pages = Pages {
        walk: walks,
        sorted: &*sorted,
        sorted_devices: &*sorted_devices,
        ..pass_pages::<F>(r.page_size, s.strides)
    };
    let live_iommus = check_ref_counts::<M, F>(mem, &pages, iommu_keys, err)?;
    let iommu_keys = iommu_keys.get_mut(..live_iommus).unwrap_or(&mut []);
    iommu_keys.sort_unstable();
    find_duplicates(iommu_keys, Chain::Iommu, &pages, err)?;
    // Keys in strictly ascending chain order are unique, and the chain is
    // their sorted index (devices preserved in PCI enumeration order): one
    // comparison per device in `check_devices` saves writing the index,
    // sorting it and scanning it.
    let index = match keyed {
        Keyed::Ascending(n) => DeviceIndex::PerPage(n),
        Keyed::From(first) => {
            let device_keys = device_keys.get_mut(..live_devices).unwrap_or(&mut []);
            key_devices::<M, F>(mem, &pages, device_keys, first, err)?;
            device_keys.sort_unstable();
            find_duplicates(device_keys, Chain::Device, &pages, err)?;
            DeviceIndex::Full
        }
    };

    out.put(
        <F as HasOps>::OPS,
        root,
        r,
        s,
        (live_iommus, live_devices, index),
    );
    Ok(())
}

/// The page tables of chains of records `strides` bytes long, with no page
/// in them yet.
fn pass_pages<'s, F: Format>(page_size: PageSize, strides: [u64; 3]) -> Pages<'s> {
    Pages {
        page_size,
        hdr: F::PAGE_HDR,
        stride: strides,
        cap: strides.map(|st| records_in_page(page_size, F::PAGE_HDR, st)),
        magic: strides.map(reciprocal),
        deleted: F::DELETED,
        walk: [&[]; 3],
        sorted: &[],
        sorted_devices: &[],
    }
}

/// The record passes, the device chain's walk running ahead of its pass:
/// the IOMMU and domain pages are checked for reuse among themselves and
/// sorted (all a lookup from a device needs), the IOMMUs, the domains, then
/// the devices are checked. Returns what [`check_devices`] does.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // As `finish_as`.
fn passes<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    r: &Root<'m>,
    root: PhysAddr,
    opts: &Options,
    s: &Survey,
    regions: PassRegions<'_>,
    dw: &mut DeviceWalk<'m, '_, M, F>,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(usize, Keyed), Refused> {
    let PassRegions {
        walk_iommu,
        walk_domain,
        iommu_slots,
        mid,
        sorted,
    } = regions;
    let page_size = r.page_size;
    let walks = [&*walk_iommu, &*walk_domain, &[]];
    let checked = find_reused_pages::<F>(root, page_size, walks, sorted, err).and_then(|()| {
        for _ in 0..TOUCH_AHEAD {
            dw.advance(r, root, mid, err)?;
        }
        let mut strides = s.strides;
        if let Some(st) = strides.get_mut(super::index::slot_of(Chain::Device)) {
            *st = dw.walk.stride();
        }
        let pages = Pages {
            walk: walks,
            sorted: &*sorted,
            ..pass_pages::<F>(page_size, strides)
        };
        let handover = opts.mode == Mode::Handover;
        check_iommus::<M, F, V>(mem, &pages, handover, iommu_slots, visit, err)?;
        check_domains::<M, F, V>(mem, &pages, handover, visit, err)?;
        check_devices::<M, F, V>(
            mem,
            &pages,
            handover,
            iommu_slots,
            mid,
            dw,
            r,
            root,
            visit,
            err,
        )
    });
    // After a record refused, the rest of the chain's pages, recorded for
    // the page table. A chain error stays in the walk for the caller.
    let _ = dw.drain(r, root, mid, err);
    checked
}

/// Moves what the passes left at the back of the scratch ([`PassRegions`])
/// to its place in the final layout (`index.rs`), once the device chain's
/// pages are known (`s`): the sorted table of the other pages, then the
/// `keys` device keys the pass wrote last first, in order, after the room
/// for the sorted device pages. In O(pages + keys), whatever the scratch's
/// length; `None` (never, once the scratch holds `s.needed`) if they do not
/// fit.
#[inline(never)]
fn arrange(s: &Survey, keys: usize, scratch: &mut [ScratchElem]) -> Option<()> {
    let n = |x: u64| usize::try_from(x).ok();
    let others = n(s.pages[0])?.checked_add(n(s.pages[1])?)?;
    let table = others.checked_add(1)?;
    let devices = n(s.pages[2])?;
    // The scratch from the sorted table's place on: [free][keys, last
    // first][table] now, [table][room for the devices][keys] then.
    let start = others.checked_add(n(s.objects[0])?)?.checked_add(devices)?;
    let tail = scratch.get_mut(start..)?;
    let len = tail.len();
    let table_at = len.checked_sub(table)?;
    let keys_at = table_at.checked_sub(keys)?;
    tail.get_mut(keys_at..table_at)?.reverse();
    tail.get_mut(keys_at..)?.rotate_left(keys);
    // [free][table][keys]: the table to the front, the keys after the
    // room; both move towards the front (the keys by at least `devices`,
    // as the scratch is long enough).
    tail.copy_within(keys_at..keys_at.checked_add(table)?, 0);
    let keys_to = table.checked_add(devices)?;
    let keys_from = len.checked_sub(keys)?;
    if keys_to > keys_from {
        return None;
    }
    tail.copy_within(keys_from.., keys_to);
    Some(())
}

/// Splits `scratch` into the regions the walks `s` sized; `None` if it
/// is too small.
fn split_scratch<'s>(s: &Survey, scratch: &'s mut [ScratchElem]) -> Option<Regions<'s>> {
    let mut rest = scratch;
    let [
        walk_iommu,
        walk_domain,
        iommu_keys,
        walk_device,
        sorted,
        sorted_devices,
    ] = region_lens(s.pages, s.objects[0]).map(|n| take(&mut rest, n));
    Some(Regions {
        walks: [walk_iommu?, walk_domain?, walk_device?],
        sorted: sorted?,
        sorted_devices: sorted_devices?,
        iommu_keys: iommu_keys?,
        device_keys: take(&mut rest, s.objects[2])?,
    })
}

/// The scratch, split as the walks sized it (the layout in `index.rs`):
/// the pages of each chain (in walk order, filled), the page tables sorted
/// by address (the root's, IOMMU and domain pages, filled; the device
/// pages), the IOMMU and device keys.
struct Regions<'s> {
    walks: [&'s mut [ScratchElem]; 3],
    sorted: &'s mut [ScratchElem],
    sorted_devices: &'s mut [ScratchElem],
    iommu_keys: &'s mut [ScratchElem],
    device_keys: &'s mut [ScratchElem],
}

/// Sorts the root's page and the IOMMU and domain chains' pages (the
/// first two `walks`) by address into `sorted` and refuses a page used
/// twice among them, reported at the later use in walk order.
#[inline(never)]
fn find_reused_pages<F: Format>(
    root: PhysAddr,
    page_size: PageSize,
    walks: [&[ScratchElem]; 3],
    sorted: &mut [ScratchElem],
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let mut out = sorted.iter_mut();
    if let Some(e) = out.next() {
        *e = ScratchElem::new(root.page_base(page_size).get(), 0);
    }
    for (chain, walk) in ARRAYS.into_iter().zip(walks).take(2) {
        tag_pages(chain, walk, &mut out);
    }
    sorted.sort_unstable();
    match reuse_in(sorted) {
        Some(pair) => Err(refuse(err, reused::<F>(root, walks, pair))),
        None => Ok(()),
    }
}

/// After [`find_reused_pages`] accepted the other pages in `sorted`: sorts
/// the device chain's pages (`walk_device`) by address into `devices` and
/// refuses one used twice, or used by another chain too, reported at the
/// later use. A page the passes refused among the others is refused
/// again first: its later use comes before any device page's.
#[inline(never)]
fn find_reused_device_pages<F: Format>(
    root: PhysAddr,
    walks: [&[ScratchElem]; 3],
    sorted: &[ScratchElem],
    devices: &mut [ScratchElem],
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    tag_pages(Chain::Device, walks[2], &mut devices.iter_mut());
    devices.sort_unstable();
    let first = reuse_in(sorted).or_else(|| {
        reuse_in(devices)
            .into_iter()
            .chain(reuse_across(sorted, devices))
            .min_by_key(|(_, later)| later.lo)
    });
    match first {
        Some(pair) => Err(refuse(err, reused::<F>(root, walks, pair))),
        None => Ok(()),
    }
}

/// Writes into `out` the page table entry of each page of `walk`, a walk
/// of `chain`: (address, chain << 56 | page index).
fn tag_pages<'a>(
    chain: Chain,
    walk: &[ScratchElem],
    out: &mut impl Iterator<Item = &'a mut ScratchElem>,
) {
    for (i, (w, e)) in walk.iter().zip(out).enumerate() {
        let i = u64::try_from(i).unwrap_or(u64::MAX);
        *e = ScratchElem::new(w.hi, (chain_tag(Some(chain)) << TAG_SHIFT) | i);
    }
}

/// In a sorted page table, the two uses of a page whose later use comes
/// first in walk order (chain, then page index).
fn reuse_in(sorted: &[ScratchElem]) -> Option<(ScratchElem, ScratchElem)> {
    sorted
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if a.hi == b.hi => Some((*a, *b)),
            _ => None,
        })
        .min_by_key(|(_, later)| later.lo)
}

/// In two page tables sorted by address, `a` with no page twice, the use
/// in `a` and the use in `b` of a page both have whose use in `b` comes
/// first in walk order.
fn reuse_across(a: &[ScratchElem], b: &[ScratchElem]) -> Option<(ScratchElem, ScratchElem)> {
    let mut first: Option<(ScratchElem, ScratchElem)> = None;
    let mut xs = a.iter().peekable();
    for y in b {
        while xs.next_if(|x| x.hi < y.hi).is_some() {}
        if let Some(&&x) = xs.peek()
            && x.hi == y.hi
            && first.is_none_or(|(_, later)| y.lo < later.lo)
        {
            first = Some((x, *y));
        }
    }
    first
}

/// The error for a page used twice, `earlier` and then `later` (page table
/// entries of a chain in `walks` or of the root's page), at the pointer to
/// the later use.
fn reused<F: Format>(
    root: PhysAddr,
    walks: [&[ScratchElem]; 3],
    (earlier, later): (ScratchElem, ScratchElem),
) -> Error {
    // The later use is a chain page: the root's entry (tag 0) sorts first.
    let chain = tag_chain(later.lo >> TAG_SHIFT).unwrap_or(Chain::Iommu);
    let index = later.lo & LOW_MASK;
    let other_chain = tag_chain(earlier.lo >> TAG_SHIFT);
    let other_page = other_chain.map(|_| earlier.lo & LOW_MASK);
    // The pointer to the reused page: the previous page's next_array_phys,
    // or the root's head field.
    let holder = match index.checked_sub(1) {
        None => Location::root(root, Some(F::head_field(chain))),
        Some(prev) => {
            let walk = walks
                .get(super::index::slot_of(chain))
                .copied()
                .unwrap_or(&[]);
            let phys = usize::try_from(prev)
                .ok()
                .and_then(|p| walk.get(p))
                .map_or(0, |e| e.hi);
            Location::page(chain, prev, PhysAddr::new(phys)).field("next_array_phys")
        }
    };
    let reused = ErrorKind::PageReused {
        target: PhysAddr::new(later.hi),
        other_chain,
        other_page,
    };
    Error::new(reused, holder)
}

/// The first `e.lo` records of chain page `e`, located at `at`, each cut
/// to its first `len` bytes.
#[inline]
fn page_records<'m, M: Memory + ?Sized>(
    mem: &'m M,
    pages: &Pages<'_>,
    chain: Chain,
    len: usize,
    e: &ScratchElem,
    at: Location,
) -> Result<impl Iterator<Item = &'m [u8]> + use<'m, M>, Error> {
    let phys = PhysAddr::new(e.hi);
    let bytes = crate::mem::read_page(mem, phys, pages.page_size)
        .ok_or_else(|| Error::new(ErrorKind::Unreadable { target: phys }, at))?;
    // The walk refused a count over the capacity, so the records fit.
    pages.records(chain, bytes, e.lo, len).ok_or_else(|| {
        Error::new(
            ErrorKind::CountOverCapacity {
                nr_objects: e.lo,
                capacity: pages.capacity(chain),
            },
            at.field("nr_objects"),
        )
    })
}

/// Calls `f` on every record of `chain` (its first `len` bytes) with its
/// location, index and address.
fn for_each_record<'m, M: Memory + ?Sized>(
    mem: &'m M,
    pages: &Pages<'_>,
    chain: Chain,
    len: usize,
    mut f: impl FnMut(Location, u64, PhysAddr, &'m [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut index = 0u64;
    let stride = pages.stride(chain);
    for (p, e) in (0u64..).zip(pages.chain(chain)) {
        let at = Location::page(chain, p, PhysAddr::new(e.hi));
        // Within the page (`page_records` proved it), so no overflow.
        let mut phys = e.hi.wrapping_add(pages.hdr);
        for (slot, rec) in (0u64..).zip(page_records(mem, pages, chain, len, e, at)?) {
            f(at.object(slot), index, PhysAddr::new(phys), rec)?;
            index = index.saturating_add(1);
            phys = phys.wrapping_add(stride);
        }
    }
    Ok(())
}

/// The checks every record shares: its `flags` (the word that marks it
/// deleted, so it is checked on deleted records too: known bits only, and
/// no `INCOMING` at handover, which only the next kernel sets), then for a
/// live record a non-zero `ref_count`. `Ok(false)` for a deleted one.
#[inline(always)]
fn check_header<F: Format>(loc: Location, bytes: &[u8], handover: bool) -> Result<bool, Error> {
    let (ref_count, flags) = record_hdr(bytes);
    if flags & !F::FLAGS_KNOWN != 0 {
        return Err(Error::new(
            ErrorKind::UnknownFlags { flags },
            loc.field("flags"),
        ));
    }
    if handover && flags & F::INCOMING != 0 {
        return Err(Error::new(ErrorKind::AlreadyRestored, loc.field("flags")));
    }
    if flags & F::DELETED != 0 {
        return Ok(false);
    }
    if ref_count == 0 {
        return Err(Error::new(ErrorKind::ZeroRefCount, loc.field("ref_count")));
    }
    Ok(true)
}

/// A live domain or device is referenced once: `ref_count` 1 (0 was
/// refused by `check_header`).
#[inline(always)]
fn check_ref_count_one(loc: Location, bytes: &[u8]) -> Result<(), Error> {
    let (stored, _) = record_hdr(bytes);
    if stored == 1 {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::RefCountNotOne { stored },
            loc.field("ref_count"),
        ))
    }
}

/// The type of a live IOMMU record, Intel or SMMUv3.
pub(crate) fn iommu_type(raw: u64) -> Option<IommuTypeSer> {
    match IommuTypeSer::from_wire(raw) {
        Some(t @ (IommuTypeSer::IommuIntel | IommuTypeSer::IommuArmSmmuv3)) => Some(t),
        _ => None,
    }
}

/// Checks the IOMMU records and writes, at the position of each record's
/// index in `slots`, (token, type << 56) for a live one (the low bits count
/// its devices in `check_devices`) and (0, 0) for a deleted one.
#[inline(never)]
fn check_iommus<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    slots: &mut [ScratchElem],
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let mut out = slots.iter_mut();
    let checked = for_each_record(mem, pages, Chain::Iommu, F::HW, |loc, _, phys, bytes| {
        let slot = out.next();
        if !check_header::<F>(loc, bytes, handover)? {
            if let Some(k) = slot {
                *k = ScratchElem::new(0, 0);
            }
            return Ok(());
        }
        let (token, raw) = F::hw(bytes);
        let ty = iommu_type(raw).ok_or(Error::new(
            ErrorKind::UnknownIommuType { raw },
            loc.field("type"),
        ))?;
        F::check_hw_vendor(bytes, ty, loc, handover)?;
        if let Some(k) = slot {
            *k = ScratchElem::new(token, ty.wire() << TAG_SHIFT);
        }
        // Always an `Iommu`: its type was just proved.
        if let Some(iommu) = AnyIommu::new(phys, bytes, F::OPS).iommu() {
            visit.iommu(iommu);
        }
        Ok(())
    });
    kept(err, checked)
}

/// Checks every domain record and hands each live one to `visit`.
#[inline(never)]
fn check_domains<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    // One loop per mode, so that neither tests the mode at every record.
    if handover {
        domains_in::<M, F, V, true>(mem, pages, visit, err)
    } else {
        domains_in::<M, F, V, false>(mem, pages, visit, err)
    }
}

/// [`check_domains`] in one mode.
#[inline(always)]
fn domains_in<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>, const HANDOVER: bool>(
    mem: &'m M,
    pages: &Pages<'_>,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let handover = HANDOVER;
    let slow = uncommon_flags::<F>(handover);
    let checked = for_each_record(mem, pages, Chain::Domain, F::DOM, |loc, _, phys, bytes| {
        let (ref_count, flags) = record_hdr(bytes);
        if (ref_count != 1 || flags & slow != 0) && !uncommon_header::<F>(loc, bytes, handover)? {
            return Ok(());
        }
        let d = F::domain(bytes);
        let fail = |kind, field| Err(Error::new(kind, loc.field(field)));
        let top = PhysAddr::new(d.top_table_phys);
        if top.is_null() {
            return fail(ErrorKind::NullPointer, "top_table_phys");
        }
        // IOMMU page tables are 4 KiB-aligned whatever the CPU's page size
        // (VT-d tables are always 4 KiB; an SMMU's smallest granule is 4 KiB).
        if !top.is_page_aligned(PageSize::Size4K) {
            return fail(ErrorKind::Unaligned { value: top }, "top_table_phys");
        }
        if d.vasz > 64 {
            return fail(ErrorKind::VaszTooLarge { vasz: d.vasz }, "vasz");
        }
        // `sign_extend` at most 1 and zero padding, the four bytes after
        // `vasz`, in one compare.
        let [p0, p1, p2] = d.padding;
        if u32::from_le_bytes([d.sign_extend, p0, p1, p2]) > 1 {
            if d.sign_extend > 1 {
                let value = d.sign_extend;
                return fail(ErrorKind::SignExtendInvalid { value }, "sign_extend");
            }
            return fail(ErrorKind::NonZeroPadding, "padding");
        }
        if handover && d.restored != 0 {
            return fail(ErrorKind::AlreadyRestored, "restored_domain");
        }
        visit.domain(Domain::new(phys, bytes, F::OPS));
        Ok(())
    });
    kept(err, checked)
}

/// Finds the live record of `chain` a device's reference names.
#[inline(always)]
fn lookup<'m, M: Memory + ?Sized>(
    mem: &'m M,
    pages: &Pages<'_>,
    chain: Chain,
    to: Ref,
    len: usize,
    cursor: &mut Cursor<'m>,
) -> Result<Found<'m>, RefFault> {
    pages.find(mem, chain, to, len, true, cursor)
}

/// [`lookup`], with the error for a reference it refuses, at field `field`
/// of the record at `loc` (made only then: the caller's frame holds one
/// `Location`, the kernel's stack is small).
#[inline(always)]
fn resolve<'m, M: Memory + ?Sized>(
    mem: &'m M,
    pages: &Pages<'_>,
    chain: Chain,
    to: Ref,
    len: usize,
    cursor: &mut Cursor<'m>,
    (loc, field): (&Location, &'static str),
) -> Result<Found<'m>, Error> {
    lookup(mem, pages, chain, to, len, cursor).map_err(|fault| {
        let kind = match to {
            Ref::Phys(target) => ErrorKind::BadReference { target, fault },
            Ref::Index(index) => ErrorKind::BadIndex { index, fault },
        };
        Error::new(kind, loc.field(field))
    })
}

/// The IOMMU the live devices just accepted name, while devices keep
/// naming it: its reference (the stored value: every reference of a
/// format is of one kind), its record index and type, and the devices
/// counted for it that are not yet added to its element of the IOMMU
/// slots.
#[derive(Clone, Copy)]
struct Run {
    to: u64,
    index: u64,
    ty: IommuTypeSer,
    devices: u64,
}

impl Run {
    /// The run of the live IOMMU `iommu` that `to` resolved to, with no
    /// device counted yet.
    fn of<F: Format>(to: Ref, iommu: Found<'_>) -> Run {
        // `lookup` found a live IOMMU, whose type `check_iommus` proved.
        let ty = iommu_type(F::hw(iommu.bytes).1).unwrap_or(IommuTypeSer::IommuInvalid);
        Run {
            to: to.raw(),
            index: iommu.index,
            ty,
            devices: 0,
        }
    }

    /// Adds the run's devices to its IOMMU's count (see `check_iommus`).
    fn flush(self, iommu_slots: &mut [ScratchElem]) {
        // The index is a slot of the IOMMU chain (`lookup` proved it), so
        // the element exists; the count cannot reach the tag (2^48 records).
        if let Some(c) = usize::try_from(self.index)
            .ok()
            .and_then(|i| iommu_slots.get_mut(i))
        {
            c.lo = c.lo.saturating_add(self.devices);
        }
    }
}

/// The flags that take a record off the common path: unknown ones,
/// `DELETED`, and `INCOMING` at handover.
const fn uncommon_flags<F: Format>(handover: bool) -> u32 {
    !F::FLAGS_KNOWN | F::DELETED | if handover { F::INCOMING } else { 0 }
}

/// The header checks of a domain or device record that is not the common
/// case (`ref_count` 1, no flag): `Ok(false)` for a deleted one.
#[cold]
#[inline(never)]
fn uncommon_header<F: Format>(loc: Location, bytes: &[u8], handover: bool) -> Result<bool, Error> {
    if !check_header::<F>(loc, bytes, handover)? {
        return Ok(false);
    }
    check_ref_count_one(loc, bytes)?;
    Ok(true)
}

/// Where the device pass stands and what it has counted. The pass is two
/// functions that take turns from here: [`fast_devices`] accepts records
/// while each is the common case and valid, and [`full_device`] checks
/// the one it stopped at with every rule, in order. Neither is called from
/// the other, so the stack holds one at a time (the kernel's is small).
struct DevicePass<'m> {
    /// The next record: its page's position in the walk and its index in
    /// the chain (page × capacity + slot: the walk proved every page but
    /// the last full).
    page: usize,
    index: u64,
    /// Live devices accepted.
    live: usize,
    /// The key of the last one.
    last: u64,
    /// What the device keys are: ascending so far, with the keys of the
    /// first live device of each page written at the front of the keys
    /// (and `page_keyed` the last page that has one); or not ascending
    /// since the live device named, each from it on written at its place.
    keyed: Keyed,
    page_keyed: usize,
    run: Option<Run>,
    domains: Cursor<'m>,
    iommus: Cursor<'m>,
}

impl<'m> DevicePass<'m> {
    fn new() -> Self {
        DevicePass {
            page: 0,
            index: 0,
            live: 0,
            last: 0,
            keyed: Keyed::Ascending(0),
            page_keyed: usize::MAX,
            run: None,
            domains: Cursor::default(),
            iommus: Cursor::default(),
        }
    }

    /// The IOMMU type of the live device `d` if `d` names the IOMMU of the
    /// current run, which then needs no lookup.
    #[inline(always)]
    fn run_type(&self, d: &DeviceFields) -> Option<IommuTypeSer> {
        self.run.filter(|r| r.to == d.iommu.raw()).map(|r| r.ty)
    }

    /// Makes `run` the current run, counting the devices of the one it
    /// replaces, and returns its IOMMU type.
    #[inline(always)]
    fn start_run(&mut self, iommu_slots: &mut [ScratchElem], run: Run) -> IommuTypeSer {
        if let Some(r) = self.run.replace(run) {
            r.flush(iommu_slots);
        }
        run.ty
    }

    /// Counts a live device in the current IOMMU run (the run of its
    /// IOMMU) and indexes its key as [`DevicePass::keyed`] says, (`key`,
    /// device index) in `keys`.
    #[inline(always)]
    fn accept(&mut self, keys: &mut [ScratchElem], key: u64) {
        if let Some(r) = &mut self.run {
            r.devices = r.devices.wrapping_add(1);
        }
        let at = match &mut self.keyed {
            Keyed::Ascending(n) if self.live == 0 || self.last < key => {
                // Only the page's first: `find_device` scans from it.
                if self.page_keyed == self.page {
                    None
                } else {
                    self.page_keyed = self.page;
                    let at = *n;
                    *n = n.wrapping_add(1);
                    Some(at)
                }
            }
            Keyed::Ascending(_) => {
                self.keyed = Keyed::From(self.live);
                Some(self.live)
            }
            Keyed::From(_) => Some(self.live),
        };
        // Never `None` for a place: there are as many as device slots, at
        // most one per live device. Written from the back of `keys`
        // ([`PassRegions`]).
        let place = at.and_then(|at| keys.len().checked_sub(at.checked_add(1)?));
        if let Some(k) = place.and_then(|p| keys.get_mut(p)) {
            *k = ScratchElem::new(key, self.index);
        }
        self.live = self.live.wrapping_add(1);
        self.last = key;
    }

    /// Moves past the record the pass stands at.
    #[inline(always)]
    fn step(&mut self) {
        self.index = self.index.wrapping_add(1);
    }

    /// The next record's slot in its page.
    fn slot(&self, pages: &Pages<'_>) -> usize {
        let page = u64::try_from(self.page).unwrap_or(u64::MAX);
        let first = page.wrapping_mul(pages.capacity(Chain::Device));
        usize::try_from(self.index.wrapping_sub(first)).unwrap_or(usize::MAX)
    }

    /// Moves to the next page: past its last record, the index is its
    /// first.
    fn next_page(&mut self, pages: &Pages<'_>) {
        self.page = self.page.wrapping_add(1);
        let page = u64::try_from(self.page).unwrap_or(u64::MAX);
        self.index = page.wrapping_mul(pages.capacity(Chain::Device));
    }

    /// Ends the pass: the last run's devices are counted, and the result
    /// is the number of live devices and how their keys are indexed.
    fn finish(self, iommu_slots: &mut [ScratchElem]) -> (usize, Keyed) {
        if let Some(r) = self.run {
            r.flush(iommu_slots);
        }
        (self.live, self.keyed)
    }
}

/// How the device pass left the device keys (see [`DevicePass::keyed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyed {
    /// Strictly ascending in chain order; this many page entries.
    Ascending(usize),
    /// Not: every live device from this one on has its entry at its
    /// place, those before it do not yet.
    From(usize),
}

/// Writes the (key, device index) of each live device before the `first`
/// into its place in `keys` (the front of the region, which held the
/// pass's page entries), reading them again: the device pass wrote each
/// only from the first key that did not ascend. A cold path: devices
/// preserved in key order never take it.
#[cold]
#[inline(never)]
fn key_devices<M: Memory + ?Sized, F: Format>(
    mem: &M,
    pages: &Pages<'_>,
    keys: &mut [ScratchElem],
    first: usize,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let mut places = keys.iter_mut().take(first);
    let filled = for_each_record(mem, pages, Chain::Device, F::DEV, |_, index, _, bytes| {
        if record_hdr(bytes).1 & F::DELETED == 0
            && let Some(k) = places.next()
        {
            *k = ScratchElem::new(F::device(bytes).key(), index);
        }
        Ok(())
    });
    kept(err, filled)
}

/// Checks the live devices' references and handover state; counts each
/// live device in its IOMMU's element of `slots` (see `check_iommus`),
/// indexes its key (segment << 32 | devid, device index) in `keys` (see
/// [`Keyed`], from the back: [`PassRegions`]) and hands its record to
/// `visit`. Returns the number of live
/// devices and how their keys are indexed.
///
/// One pass over the device records, in two halves (see [`DevicePass`]).
/// Every record either passes the fast checks, which accept only what the
/// full ones would, or is checked by the full ones: the error, its order
/// and its location are theirs.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // As `finish_as`.
fn check_devices<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    slots: &mut [ScratchElem],
    keys: &mut [ScratchElem],
    dw: &mut DeviceWalk<'m, '_, M, F>,
    r: &Root<'_>,
    root: PhysAddr,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<(usize, Keyed), Refused> {
    let mut pass = DevicePass::new();
    loop {
        // The page `TOUCH_AHEAD` on, as this one is started.
        dw.advance(r, root, keys, err)?;
        let Some(e) = dw.entry(keys, pass.page) else {
            break;
        };
        while !fast_devices::<M, F, V>(mem, pages, handover, slots, keys, &e, &mut pass, visit) {
            let p = &mut pass;
            if full_device::<M, F, V>(mem, pages, handover, slots, keys, &e, p, visit, err)? {
                break;
            }
        }
        pass.next_page(pages);
    }
    Ok(pass.finish(slots))
}

/// How many device pages ahead of the one the device pass checks the
/// device chain's walk reads ([`DeviceWalk`]): far enough that the page's
/// lines have arrived when the pass reaches it, near enough that they are
/// still cached then. On image (b), 2, 4, 6, 8 and 16 pages did alike
/// within the machine's noise (alternated processes; BENCHMARKS.md, round
/// 9), as 3 to 5 did for round 8's touch ahead of a separate walk.
const TOUCH_AHEAD: usize = 4;

/// Accepts the records of device page `e` from where `pass` stands while
/// each is the common case (live, `ref_count` 1, no flag the mode forbids)
/// or a deleted one with allowed flags, and valid. `true` at the end of
/// the page; `false` at the first record it does not accept (or if the
/// page cannot be read), where `pass` then stands. It builds no error: a
/// refused check only stops it.
///
/// A device naming the same IOMMU as the one before it reuses that
/// lookup, since a reference's validity depends on its value alone.
#[inline(never)]
#[allow(clippy::too_many_arguments)] // The pass's state, and the page.
fn fast_devices<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    iommu_slots: &mut [ScratchElem],
    keys: &mut [ScratchElem],
    e: &ScratchElem,
    pass: &mut DevicePass<'m>,
    visit: &mut V,
) -> bool {
    let uncommon = uncommon_flags::<F>(handover);
    let bad = uncommon & !F::DELETED;
    let stride = pages.stride(Chain::Device);
    let Some(mut slots) = crate::mem::read_page(mem, PhysAddr::new(e.hi), pages.page_size)
        .and_then(|bytes| pages.slots(Chain::Device, bytes, e.lo, F::DEV))
    else {
        return false;
    };
    let slot = pass.slot(pages);
    // Past the records the full checks took, in O(1); not a `skip`, whose
    // count the loop would test at every record.
    if let Some(before) = slot.checked_sub(1) {
        slots.nth(before);
    }
    // The address of the record at hand, for `visit` (dead code when it
    // does not read it).
    let mut phys = record_phys(pages, e, slot);
    for s in slots {
        // A slot is at least `F::DEV` long (`slots` proved it): this never
        // stops the pass, and it lets the compiler drop the length checks
        // of the field reads below.
        let Some(bytes) = s.get(..F::DEV) else {
            return false;
        };
        let (ref_count, flags) = record_hdr(bytes);
        if ref_count != 1 || flags & uncommon != 0 {
            if flags & bad == 0 && flags & F::DELETED != 0 {
                pass.step();
                phys = phys.wrapping_add(stride);
                continue;
            }
            return false;
        }
        let d = F::device(bytes);
        let domains = &mut pass.domains;
        if lookup(mem, pages, Chain::Domain, d.domain, F::DOM, domains).is_err() {
            return false;
        }
        let ty = match pass.run_type(&d) {
            Some(ty) => ty,
            // Only when the IOMMU changes. Inline: a function of its own,
            // with the lookup's missed half below it, made the kernel's
            // deepest stack.
            None => match lookup(mem, pages, Chain::Iommu, d.iommu, F::HW, &mut pass.iommus) {
                Ok(iommu) => pass.start_run(iommu_slots, Run::of::<F>(d.iommu, iommu)),
                Err(_) => return false,
            },
        };
        if F::check_dev_vendor(bytes, ty, handover).is_err() {
            return false;
        }
        pass.accept(keys, d.key());
        visit.device(DeviceRecord::new(PhysAddr::new(phys), bytes, F::OPS));
        pass.step();
        phys = phys.wrapping_add(stride);
    }
    true
}

/// The address of record `slot` of the page `e` of the device chain
/// (validation proved it within the page).
#[inline(always)]
fn record_phys(pages: &Pages<'_>, e: &ScratchElem, slot: usize) -> u64 {
    let slot = u64::try_from(slot).unwrap_or(u64::MAX);
    let at = slot.wrapping_mul(pages.stride(Chain::Device));
    e.hi.wrapping_add(pages.hdr).wrapping_add(at)
}

/// Checks the device record of page `e` that `pass` stands at with every
/// rule, in order (its page's readability and count first, at the page's
/// first record), then counts it as [`fast_devices`] would and moves past
/// it. `true` if the page has no record left.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)] // The pass's state, as `fast_devices` has it, and the error slot.
fn full_device<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    iommu_slots: &mut [ScratchElem],
    keys: &mut [ScratchElem],
    e: &ScratchElem,
    pass: &mut DevicePass<'m>,
    visit: &mut V,
    err: &mut Option<Error>,
) -> Result<bool, Refused> {
    let checked = full_checks::<M, F, V>(mem, pages, handover, iommu_slots, keys, e, pass, visit);
    kept(err, checked)
}

/// The body of [`full_device`].
#[inline(always)]
#[allow(clippy::too_many_arguments)] // As `full_device`.
fn full_checks<'m, M: Memory + ?Sized, F: Format, V: Visitor<'m>>(
    mem: &'m M,
    pages: &Pages<'_>,
    handover: bool,
    iommu_slots: &mut [ScratchElem],
    keys: &mut [ScratchElem],
    e: &ScratchElem,
    pass: &mut DevicePass<'m>,
    visit: &mut V,
) -> Result<bool, Error> {
    let p = u64::try_from(pass.page).unwrap_or(u64::MAX);
    let at = Location::page(Chain::Device, p, PhysAddr::new(e.hi));
    let Some(bytes) = page_records(mem, pages, Chain::Device, F::DEV, e, at)?.nth(pass.slot(pages))
    else {
        return Ok(true);
    };
    let loc = at.object(u64::try_from(pass.slot(pages)).unwrap_or(u64::MAX));
    if !check_header::<F>(loc, bytes, handover)? {
        pass.step();
        return Ok(false);
    }
    check_ref_count_one(loc, bytes)?;
    let d = F::device(bytes);
    let at_domain = (&loc, F::DOMAIN_REF);
    resolve(
        mem,
        pages,
        Chain::Domain,
        d.domain,
        F::DOM,
        &mut pass.domains,
        at_domain,
    )?;
    let ty = match pass.run_type(&d) {
        Some(ty) => ty,
        None => {
            let at_iommu = (&loc, F::IOMMU_REF);
            let cursor = &mut pass.iommus;
            let iommu = resolve(mem, pages, Chain::Iommu, d.iommu, F::HW, cursor, at_iommu)?;
            pass.start_run(iommu_slots, Run::of::<F>(d.iommu, iommu))
        }
    };
    F::check_dev_vendor(bytes, ty, handover)
        .map_err(|(kind, field)| Error::new(kind, loc.field(field)))?;
    pass.accept(keys, d.key());
    let phys = record_phys(pages, e, pass.slot(pages));
    visit.device(DeviceRecord::new(PhysAddr::new(phys), bytes, F::OPS));
    pass.step();
    Ok(false)
}

/// Refuses a live IOMMU whose `ref_count` is not its number of live
/// devices, as `check_devices` counted them in `slots`. Then moves the live
/// IOMMUs' keys to the front of `slots` as (token, type << 56 | IOMMU
/// index), in chain order, and returns how many there are.
#[inline(never)]
fn check_ref_counts<M: Memory + ?Sized, F: Format>(
    mem: &M,
    pages: &Pages<'_>,
    slots: &mut [ScratchElem],
    err: &mut Option<Error>,
) -> Result<usize, Refused> {
    let mut live = 0usize;
    let checked = for_each_record(mem, pages, Chain::Iommu, F::HW, |loc, index, _, bytes| {
        let (stored, flags) = record_hdr(bytes);
        if flags & F::DELETED != 0 {
            return Ok(());
        }
        let k = usize::try_from(index)
            .ok()
            .and_then(|i| slots.get(i))
            .copied()
            .unwrap_or_default();
        let counted = k.lo & LOW_MASK;
        if u64::from(stored) != counted {
            return Err(Error::new(
                ErrorKind::RefCountMismatch { stored, counted },
                loc.field("ref_count"),
            ));
        }
        // `live` <= `index`: this never overwrites an element still to read.
        if let Some(out) = slots.get_mut(live) {
            *out = ScratchElem::new(k.hi, (k.lo & !LOW_MASK) | index);
            live = live.saturating_add(1);
        }
        Ok(())
    });
    kept(err, checked)?;
    Ok(live)
}

/// In sorted `keys` (key, tag << 56 | index), refuses two live records with
/// the same key (and tag), reported at the later one.
#[inline(never)]
fn find_duplicates(
    keys: &[ScratchElem],
    chain: Chain,
    pages: &Pages<'_>,
    err: &mut Option<Error>,
) -> Result<(), Refused> {
    let same =
        |a: &ScratchElem, b: &ScratchElem| a.hi == b.hi && a.lo >> TAG_SHIFT == b.lo >> TAG_SHIFT;
    let Some((a, b)) = keys.windows(2).find_map(|w| match w {
        [a, b] if same(a, b) => Some((*a, *b)),
        _ => None,
    }) else {
        return Ok(());
    };
    let cap = pages.capacity(chain);
    let split = |e: ScratchElem| {
        let i = e.lo & LOW_MASK;
        (
            i.checked_div(cap).unwrap_or(0),
            i.checked_rem(cap).unwrap_or(0),
        )
    };
    let (other_page, other_object) = split(a);
    let (page, object) = split(b);
    let (kind, field) = match chain {
        Chain::Iommu => (
            ErrorKind::DuplicateIommu {
                other_page,
                other_object,
            },
            "token",
        ),
        _ => (
            ErrorKind::DuplicateDevice {
                other_page,
                other_object,
            },
            "devid",
        ),
    };
    let phys = usize::try_from(page)
        .ok()
        .and_then(|p| pages.chain(chain).get(p))
        .map_or(0, |e| e.hi);
    let at = Location::page(chain, page, PhysAddr::new(phys))
        .object(object)
        .field(field);
    Err(refuse(err, Error::new(kind, at)))
}
