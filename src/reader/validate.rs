//! Validation: every rule of the format, checked in a fixed order, before
//! an [`Image`] exists.

use zerocopy::FromBytes;

use super::index::{
    Cursor, Found, LOW_MASK, MAX_OBJECTS, MAX_PAGES, Pages, ScratchElem, Split, TAG_SHIFT,
    chain_tag, page_records, record_hdr, tag_chain,
};
use super::view::{Image, Shape};
use super::{Mode, Options};
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_LUO_FLB_VERSION, IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING, IOMMU_SER_FLAGS_KNOWN,
    IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer, IommuFlbSer, IommuHwSer, IommuHwVendorSer,
    IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::chain::{ARRAYS, ChainWalk, capacity, head_field};
use crate::error::{Chain, Error, ErrorKind, Location};
use crate::mem::read_page;
use crate::{Memory, PhysAddr};

/// Record sizes, as const generic arguments.
pub(crate) const HW: usize = size_of::<IommuHwSer>();
pub(crate) const DOM: usize = size_of::<IommuDomainSer>();
pub(crate) const DEV: usize = size_of::<IommuDeviceSer>();

/// What the root and the chain walk found, before any record is read.
pub(crate) struct Survey<'m> {
    root: &'m IommuFlbSer,
    heads: [PhysAddr; 3],
    pages: [u64; 3],
    objects: [u64; 3],
    max_pages: u64,
    max_objects: u64,
    /// Scratch elements `validate` needs.
    pub needed: usize,
}

/// Checks the root completely, in order: page-aligned (the kernel
/// allocates the root as a preserved page of its own, which `restore` hands
/// back whole), readable, version, then each head non-zero and page-aligned.
fn check_root<M: Memory + ?Sized>(
    mem: &M,
    root: PhysAddr,
    page_size: PageSize,
) -> Result<(&IommuFlbSer, [PhysAddr; 3]), Error> {
    let at = |field| Location::root(root, field);
    if !root.is_page_aligned(page_size) {
        return Err(Error::new(ErrorKind::Unaligned { value: root }, at(None)));
    }
    let page =
        read_page(mem, root, page_size).ok_or(Error::new(ErrorKind::RootUnreadable, at(None)))?;
    // A page is longer than the 32-byte root, so this cannot fail.
    let (ser, _) = IommuFlbSer::ref_from_prefix(page)
        .map_err(|_| Error::new(ErrorKind::RootUnreadable, at(None)))?;
    let found = ser.version.get();
    if found != IOMMU_LUO_FLB_VERSION {
        return Err(Error::new(
            ErrorKind::UnsupportedVersion { found },
            at(Some("version")),
        ));
    }
    let heads = [
        ser.iommu_array_phys.get(),
        ser.iommu_domain_array_phys.get(),
        ser.device_array_phys.get(),
    ]
    .map(PhysAddr::new);
    for (chain, head) in ARRAYS.into_iter().zip(heads) {
        let loc = at(Some(head_field(chain)));
        if head.is_null() {
            return Err(Error::new(ErrorKind::NullPointer, loc));
        }
        if !head.is_page_aligned(page_size) {
            return Err(Error::new(ErrorKind::Unaligned { value: head }, loc));
        }
    }
    Ok((ser, heads))
}

pub(crate) fn survey<'m, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
) -> Result<Survey<'m>, Error> {
    let page_size = opts.page_size;
    let (ser, heads) = check_root(mem, root, page_size)?;
    let max_pages = opts.limits.max_pages_per_chain.min(MAX_PAGES);
    let max_objects = opts.limits.max_objects.min(MAX_OBJECTS);
    let mut pages = [0u64; 3];
    let mut objects = [0u64; 3];
    let mut total = 0u64;
    for ((chain, head), (p, o)) in ARRAYS
        .into_iter()
        .zip(heads)
        .zip(pages.iter_mut().zip(objects.iter_mut()))
    {
        let mut walk = ChainWalk::new(
            mem,
            page_size,
            root,
            chain,
            head,
            max_pages,
            max_objects,
            total,
        );
        while walk.next_page()?.is_some() {
            *p = p.saturating_add(1);
        }
        *o = walk.objects().saturating_sub(total);
        total = walk.objects();
    }
    // Both sums are bounded by the clamped limits (3 × 2^40, 2^48).
    let all_pages = pages.iter().fold(0u64, |a, &p| a.saturating_add(p));
    let needed = all_pages
        .saturating_mul(2)
        .saturating_add(1)
        .saturating_add(objects[0])
        .saturating_add(objects[2]);
    Ok(Survey {
        root: ser,
        heads,
        pages,
        objects,
        max_pages,
        max_objects,
        needed: usize::try_from(needed).unwrap_or(usize::MAX),
    })
}

fn too_small(root: PhysAddr, needed: usize, got: usize) -> Error {
    Error::new(
        ErrorKind::ScratchTooSmall { needed, got },
        Location::root(root, None),
    )
}

/// Splits `n` elements off the front of `rest`.
fn take<'s>(
    rest: &mut &'s mut [ScratchElem],
    n: u64,
    err: Error,
) -> Result<&'s mut [ScratchElem], Error> {
    let n = usize::try_from(n).map_err(|_| err)?;
    let (head, tail) = core::mem::take(rest).split_at_mut_checked(n).ok_or(err)?;
    *rest = tail;
    Ok(head)
}

pub(crate) fn validate<'m, 's, M: Memory + ?Sized>(
    mem: &'m M,
    root: PhysAddr,
    opts: &Options,
    scratch: &'s mut [ScratchElem],
) -> Result<Image<'m, 's, M>, Error> {
    let s = survey(mem, root, opts)?;
    let got = scratch.len();
    let small = too_small(root, s.needed, got);
    let mut rest: &'s mut [ScratchElem] = scratch;
    let walk_iommu = take(&mut rest, s.pages[0], small)?;
    let walk_domain = take(&mut rest, s.pages[1], small)?;
    let walk_device = take(&mut rest, s.pages[2], small)?;
    let all_pages = s.pages.iter().fold(0u64, |a, &p| a.saturating_add(p));
    let sorted = take(&mut rest, all_pages.saturating_add(1), small)?;
    let iommu_keys = take(&mut rest, s.objects[0], small)?;
    let device_keys = take(&mut rest, s.objects[2], small)?;

    // Walk again, recording the pages. The walk repeats the survey's checks,
    // so a `Memory` that changed its answers is still caught.
    let mut total = 0u64;
    let mut walks = [walk_iommu, walk_domain, walk_device];
    for ((chain, head), region) in ARRAYS.into_iter().zip(s.heads).zip(walks.iter_mut()) {
        let mut walk = ChainWalk::new(
            mem,
            opts.page_size,
            root,
            chain,
            head,
            s.max_pages,
            s.max_objects,
            total,
        );
        let mut slots = region.iter_mut();
        while let Some(page) = walk.next_page()? {
            *slots.next().ok_or(small)? = ScratchElem::new(page.phys.get(), page.nr_objects);
        }
        if slots.next().is_some() {
            return Err(small);
        }
        total = walk.objects();
    }
    let [walk_iommu, walk_domain, walk_device] = walks;

    find_reused_pages(
        root,
        opts.page_size,
        [&*walk_iommu, &*walk_domain, &*walk_device],
        sorted,
    )?;
    let pages = Pages {
        page_size: opts.page_size,
        walk: [&*walk_iommu, &*walk_domain, &*walk_device],
        sorted: &*sorted,
    };
    let handover = opts.mode == Mode::Handover;
    check_iommus(mem, &pages, handover, iommu_keys)?;
    check_domains(mem, &pages, handover)?;
    let (live_devices, ascending) = check_devices(mem, &pages, handover, iommu_keys, device_keys)?;
    let live_iommus = check_ref_counts(mem, &pages, iommu_keys)?;
    let iommu_keys = iommu_keys.get_mut(..live_iommus).unwrap_or(&mut []);
    iommu_keys.sort_unstable();
    find_duplicates(iommu_keys, Chain::Iommu, &pages)?;
    let device_keys = device_keys.get_mut(..live_devices).unwrap_or(&mut []);
    // Keys written in strictly ascending order are sorted and unique already
    // (devices preserved in PCI enumeration order): one comparison per
    // device in `check_devices` saves the sort and the scan.
    if !ascending {
        device_keys.sort_unstable();
        find_duplicates(device_keys, Chain::Device, &pages)?;
    }

    let shape = Shape {
        page_size: opts.page_size,
        root_phys: root,
        root: s.root,
        pages: s.pages,
        iommu_slots: s.objects[0],
        live_iommus,
        live_devices,
    };
    Ok(Image::from_parts(
        mem,
        shape,
        pages.walk,
        pages.sorted,
        &*iommu_keys,
        &*device_keys,
    ))
}

/// Sorts every page by address (the root's page too) and refuses a page
/// used twice, reported at the later use in walk order.
fn find_reused_pages(
    root: PhysAddr,
    page_size: PageSize,
    walks: [&[ScratchElem]; 3],
    sorted: &mut [ScratchElem],
) -> Result<(), Error> {
    let mut out = sorted.iter_mut();
    if let Some(e) = out.next() {
        *e = ScratchElem::new(root.page_base(page_size).get(), 0);
    }
    for (chain, walk) in ARRAYS.into_iter().zip(walks) {
        for (i, (w, e)) in walk.iter().zip(out.by_ref()).enumerate() {
            let i = u64::try_from(i).unwrap_or(u64::MAX);
            *e = ScratchElem::new(w.hi, (chain_tag(chain) << TAG_SHIFT) | i);
        }
    }
    sorted.sort_unstable();
    let first = sorted
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if a.hi == b.hi => Some((*a, *b)),
            _ => None,
        })
        .min_by_key(|(_, later)| later.lo);
    let Some((earlier, later)) = first else {
        return Ok(());
    };
    let (chain, index) = (tag_chain(later.lo >> TAG_SHIFT), later.lo & LOW_MASK);
    let other_chain = tag_chain(earlier.lo >> TAG_SHIFT);
    let other_page = (other_chain != Chain::Root).then_some(earlier.lo & LOW_MASK);
    // The pointer to the reused page: the previous page's next_array_phys,
    // or the root's head field.
    let holder = match index.checked_sub(1) {
        None => Location::root(root, Some(head_field(chain))),
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
    Err(Error::new(
        ErrorKind::PageReused {
            target: PhysAddr::new(later.hi),
            other_chain,
            other_page,
        },
        holder,
    ))
}

/// Calls `f` on every record of `chain` with its location and index.
fn for_each_record<'m, M: Memory + ?Sized, const N: usize>(
    mem: &'m M,
    pages: &Pages<'_>,
    chain: Chain,
    mut f: impl FnMut(Location, u64, &'m [u8; N]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut index = 0u64;
    for (p, e) in (0u64..).zip(pages.chain(chain)) {
        let phys = PhysAddr::new(e.hi);
        let loc = Location::page(chain, p, phys);
        let bytes = read_page(mem, phys, pages.page_size)
            .ok_or_else(|| Error::new(ErrorKind::Unreadable { target: phys }, loc))?;
        // The walk refused a count over the capacity, so the records fit.
        let recs = page_records::<N>(bytes, e.lo).ok_or_else(|| {
            Error::new(
                ErrorKind::CountOverCapacity {
                    nr_objects: e.lo,
                    capacity: capacity(chain, pages.page_size),
                },
                loc.field("nr_objects"),
            )
        })?;
        for (slot, rec) in (0u64..).zip(recs) {
            f(loc.object(slot), index, rec)?;
            index = index.saturating_add(1);
        }
    }
    Ok(())
}

/// The checks every record shares: its `flags` (the word that marks it
/// deleted, so it is checked on deleted records too: known bits only, and
/// no `INCOMING` at handover, which only the next kernel sets), then for a
/// live record a non-zero `ref_count`. `Ok(false)` for a deleted one.
#[inline]
fn check_header(loc: Location, bytes: &[u8], handover: bool) -> Result<bool, Error> {
    let (ref_count, flags) = record_hdr(bytes);
    if flags & !IOMMU_SER_FLAGS_KNOWN != 0 {
        return Err(Error::new(
            ErrorKind::UnknownFlags { flags },
            loc.field("flags"),
        ));
    }
    if handover && flags & IOMMU_SER_FLAG_INCOMING != 0 {
        return Err(Error::new(ErrorKind::AlreadyRestored, loc.field("flags")));
    }
    if flags & IOMMU_SER_FLAG_DELETED != 0 {
        return Ok(false);
    }
    if ref_count == 0 {
        return Err(Error::new(ErrorKind::ZeroRefCount, loc.field("ref_count")));
    }
    Ok(true)
}

/// A live domain or device is referenced once: `ref_count` 1 (0 was
/// refused by `check_header`).
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

fn non_zero_padding(loc: Location, field: &'static str) -> Error {
    Error::new(ErrorKind::NonZeroPadding, loc.field(field))
}

/// The first 8 bytes both Intel payloads (IOMMU and device) start with:
/// `restored`, which only the next kernel sets, and `padding[7]`.
fn check_intel_head(
    loc: Location,
    restored: u8,
    padding: [u8; 7],
    handover: bool,
) -> Result<(), Error> {
    if handover && restored != 0 {
        return Err(Error::new(
            ErrorKind::AlreadyRestored,
            loc.field("restored"),
        ));
    }
    if padding != [0; 7] {
        return Err(non_zero_padding(loc, "padding"));
    }
    Ok(())
}

/// The type of a live IOMMU record, Intel or SMMUv3.
pub(crate) fn iommu_type(rec: &IommuHwSer) -> Option<IommuTypeSer> {
    match IommuTypeSer::from_wire(rec.r#type.get()) {
        Some(t @ (IommuTypeSer::IommuIntel | IommuTypeSer::IommuArmSmmuv3)) => Some(t),
        _ => None,
    }
}

/// The vendor union of an IOMMU record, as Intel's member.
pub(crate) fn hw_intel(bytes: &[u8; HW]) -> &IommuIntelSer {
    let split: &Split<24, 88> = zerocopy::transmute_ref!(bytes);
    zerocopy::transmute_ref!(&split.tail)
}

/// The vendor union of an IOMMU record, as SMMUv3's member and the union
/// bytes after it (which no member of version 1 uses).
pub(crate) fn hw_smmuv3(bytes: &[u8; HW]) -> (&IommuSmmuv3HwSer, &[u8; HW_UNION_TAIL]) {
    let split: &Split<24, 88> = zerocopy::transmute_ref!(bytes);
    let vendor: &Split<32, HW_UNION_TAIL> = zerocopy::transmute_ref!(&split.tail);
    (zerocopy::transmute_ref!(&vendor.head), &vendor.tail)
}

/// Bytes of the IOMMU vendor union past `iommu_smmuv3_hw_ser`.
const HW_UNION_TAIL: usize = size_of::<IommuHwVendorSer>() - size_of::<IommuSmmuv3HwSer>();

/// The vendor union of a device record, as Intel's member.
pub(crate) fn dev_intel(bytes: &[u8; DEV]) -> &IommuDeviceIntelSer {
    let split: &Split<48, 24> = zerocopy::transmute_ref!(bytes);
    zerocopy::transmute_ref!(&split.tail)
}

/// The vendor union of a device record, as SMMUv3's member.
pub(crate) fn dev_smmuv3(bytes: &[u8; DEV]) -> &IommuMasterSmmuv3Ser {
    let split: &Split<48, 24> = zerocopy::transmute_ref!(bytes);
    zerocopy::transmute_ref!(&split.tail)
}

/// Checks the IOMMU records and writes, at the position of each record's
/// index in `slots`, (token, type << 56) for a live one (the low bits count
/// its devices in `check_devices`) and (0, 0) for a deleted one.
fn check_iommus<M: Memory + ?Sized>(
    mem: &M,
    pages: &Pages<'_>,
    handover: bool,
    slots: &mut [ScratchElem],
) -> Result<(), Error> {
    let mut out = slots.iter_mut();
    for_each_record::<M, HW>(mem, pages, Chain::Iommu, |loc, _, bytes| {
        let slot = out.next();
        if !check_header(loc, bytes, handover)? {
            if let Some(k) = slot {
                *k = ScratchElem::new(0, 0);
            }
            return Ok(());
        }
        let rec: &IommuHwSer = zerocopy::transmute_ref!(bytes);
        let ty = iommu_type(rec).ok_or(Error::new(
            ErrorKind::UnknownIommuType {
                raw: rec.r#type.get(),
            },
            loc.field("type"),
        ))?;
        // Intel's member fills the union; SMMUv3's leaves bytes no version-1
        // member uses, which the kernel's zeroed slot holds as zeros: they
        // are padding (a non-zero byte there is corruption, or a longer
        // SMMUv3 struct under the same version).
        match ty {
            IommuTypeSer::IommuIntel => {
                let intel = hw_intel(bytes);
                check_intel_head(loc, intel.restored, intel.padding, handover)?;
            }
            _ => {
                if hw_smmuv3(bytes).1.iter().any(|b| *b != 0) {
                    return Err(non_zero_padding(loc, "vendor"));
                }
            }
        }
        if let Some(k) = slot {
            *k = ScratchElem::new(rec.token.get(), ty.wire() << TAG_SHIFT);
        }
        Ok(())
    })
}

fn check_domains<M: Memory + ?Sized>(
    mem: &M,
    pages: &Pages<'_>,
    handover: bool,
) -> Result<(), Error> {
    for_each_record::<M, DOM>(mem, pages, Chain::Domain, |loc, _, bytes| {
        if !check_header(loc, bytes, handover)? {
            return Ok(());
        }
        check_ref_count_one(loc, bytes)?;
        let d: &IommuDomainSer = zerocopy::transmute_ref!(bytes);
        let err = |kind, field| Err(Error::new(kind, loc.field(field)));
        let top = PhysAddr::new(d.top_table_phys.get());
        if top.is_null() {
            return err(ErrorKind::NullPointer, "top_table_phys");
        }
        // IOMMU page tables are 4 KiB-aligned whatever the CPU's page size
        // (VT-d tables are always 4 KiB; an SMMU's smallest granule is 4 KiB).
        if !top.is_page_aligned(PageSize::Size4K) {
            return err(ErrorKind::Unaligned { value: top }, "top_table_phys");
        }
        let vasz = d.vasz.get();
        if vasz > 64 {
            return err(ErrorKind::VaszTooLarge { vasz }, "vasz");
        }
        if d.sign_extend > 1 {
            let value = d.sign_extend;
            return err(ErrorKind::SignExtendInvalid { value }, "sign_extend");
        }
        if d.padding != [0; 3] {
            return err(ErrorKind::NonZeroPadding, "padding");
        }
        if handover && d.restored_domain.get() != 0 {
            return err(ErrorKind::AlreadyRestored, "restored_domain");
        }
        Ok(())
    })
}

/// Checks the live devices' references and handover state; counts each
/// live device in its IOMMU's element of `iommu_slots` (see `check_iommus`)
/// and writes its key (segment << 32 | devid, device index) into `keys`.
/// Returns the number of live devices and whether their keys came in
/// strictly ascending order.
fn check_devices<M: Memory + ?Sized>(
    mem: &M,
    pages: &Pages<'_>,
    handover: bool,
    iommu_slots: &mut [ScratchElem],
    keys: &mut [ScratchElem],
) -> Result<(usize, bool), Error> {
    let mut out = keys.iter_mut();
    let mut live = 0usize;
    let mut last: Option<u64> = None;
    let mut ascending = true;
    let (mut dom_cursor, mut hw_cursor) = (Cursor::default(), Cursor::default());
    for_each_record::<M, DEV>(mem, pages, Chain::Device, |loc, index, bytes| {
        if !check_header(loc, bytes, handover)? {
            return Ok(());
        }
        check_ref_count_one(loc, bytes)?;
        let d: &IommuDeviceSer = zerocopy::transmute_ref!(bytes);
        let map = &d.domain_iommu_ser;
        let bad = |target, fault, field| {
            Error::new(ErrorKind::BadReference { target, fault }, loc.field(field))
        };
        let dom = PhysAddr::new(map.domain_phys.get());
        pages
            .locate::<M, DOM>(mem, Chain::Domain, dom, true, &mut dom_cursor)
            .map_err(|f| bad(dom, f, "domain_phys"))?;
        let hw = PhysAddr::new(map.iommu_phys.get());
        let iommu: Found<'_, HW> = pages
            .locate(mem, Chain::Iommu, hw, true, &mut hw_cursor)
            .map_err(|f| bad(hw, f, "iommu_phys"))?;
        let rec: &IommuHwSer = zerocopy::transmute_ref!(iommu.bytes);
        // `locate` found a live IOMMU, whose type `check_iommus` proved.
        if iommu_type(rec) == Some(IommuTypeSer::IommuIntel) {
            let intel = dev_intel(bytes);
            check_intel_head(loc, intel.restored, intel.padding, handover)?;
        } else if dev_smmuv3(bytes).padding.get() != 0 {
            return Err(non_zero_padding(loc, "padding"));
        }
        // `locate` proved the index is a slot of the IOMMU chain, so the
        // element exists; the count cannot reach the tag (2^48 records).
        if let Some(c) = usize::try_from(iommu.index)
            .ok()
            .and_then(|i| iommu_slots.get_mut(i))
        {
            c.lo = c.lo.saturating_add(1);
        }
        if let Some(k) = out.next() {
            let key = (u64::from(d.pci_domain_nr.get()) << 32) | u64::from(d.devid.get());
            *k = ScratchElem::new(key, index);
            live = live.saturating_add(1);
            ascending &= last.is_none_or(|l| l < key);
            last = Some(key);
        }
        Ok(())
    })?;
    Ok((live, ascending))
}

/// Refuses a live IOMMU whose `ref_count` is not its number of live
/// devices, as `check_devices` counted them in `slots`. Then moves the live
/// IOMMUs' keys to the front of `slots` as (token, type << 56 | IOMMU
/// index), in chain order, and returns how many there are.
fn check_ref_counts<M: Memory + ?Sized>(
    mem: &M,
    pages: &Pages<'_>,
    slots: &mut [ScratchElem],
) -> Result<usize, Error> {
    let mut live = 0usize;
    for_each_record::<M, HW>(mem, pages, Chain::Iommu, |loc, index, bytes| {
        let (stored, flags) = record_hdr(bytes);
        if flags & IOMMU_SER_FLAG_DELETED != 0 {
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
    })?;
    Ok(live)
}

/// In sorted `keys` (key, tag << 56 | index), refuses two live records with
/// the same key (and tag), reported at the later one.
fn find_duplicates(keys: &[ScratchElem], chain: Chain, pages: &Pages<'_>) -> Result<(), Error> {
    let same =
        |a: &ScratchElem, b: &ScratchElem| a.hi == b.hi && a.lo >> TAG_SHIFT == b.lo >> TAG_SHIFT;
    let Some((a, b)) = keys.windows(2).find_map(|w| match w {
        [a, b] if same(a, b) => Some((*a, *b)),
        _ => None,
    }) else {
        return Ok(());
    };
    let cap = capacity(chain, pages.page_size);
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
    Err(Error::new(
        kind,
        Location::page(chain, page, PhysAddr::new(phys))
            .object(object)
            .field(field),
    ))
}
