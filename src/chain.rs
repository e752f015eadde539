//! The chain walk: the only code that follows `next_array_phys`.
//!
//! [`ChainWalk`] yields the pages of one chain in order, checking each
//! pointer (non-zero head, page alignment, readability) and each array header
//! (`nr_objects` within the page capacity, every page but the last full)
//! before it hands the page out, and refuses the root's page as a chain page
//! ([`ErrorKind::PageReused`]). It stops for good after the first error, and
//! it always ends: a hop limit bounds the number of pages, and Brent's cycle
//! detection (constant memory) finds a loop as soon as it closes, so a cycle
//! is reported as [`ErrorKind::Cycle`] naming the first page that repeats,
//! not as an exceeded limit.

use core::marker::PhantomData;

use zerocopy::FromBytes;

use crate::PhysAddr;
use crate::abi::v1::IommuArrayHdrSer;
use crate::abi::{PageSize, records_in_page};
use crate::crc::Crc32;
use crate::error::{Chain, Error, ErrorKind, Limit, Location};
use crate::format::{Format, Root};
use crate::mem::read_page;

/// The three array chains, in the order the root lists them and the reader
/// walks them.
pub(crate) const ARRAYS: [Chain; 3] = [Chain::Iommu, Chain::Domain, Chain::Device];

/// The version-1 root field that holds the head of `chain`.
pub(crate) const fn head_field(chain: Chain) -> &'static str {
    match chain {
        Chain::Iommu => "iommu_array_phys",
        Chain::Domain => "iommu_domain_array_phys",
        Chain::Device => "device_array_phys",
    }
}

/// One page of a chain, checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChainPage {
    /// Its physical address (page-aligned).
    pub phys: PhysAddr,
    /// Its `nr_objects`, at most the chain's capacity.
    pub nr_objects: u64,
}

/// The block header every version's array page starts with.
fn header(bytes: &[u8]) -> (PhysAddr, u64) {
    match IommuArrayHdrSer::read_from_prefix(bytes) {
        Ok((h, _)) => (PhysAddr::new(h.next_array_phys.get()), h.nr_objects.get()),
        // Unreachable: a page is longer than the 16-byte header.
        Err(_) => (PhysAddr::NULL, 0),
    }
}

/// A refusal of [`ChainWalk::step`] whose exact error takes a search.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deferred {
    None,
    /// The page visited next is the saved one, `lam` hops on.
    Cycle,
    /// Visiting the page `next` would pass the page limit.
    Limit,
}

/// Walks one chain from its head; see the module documentation.
pub(crate) struct ChainWalk<'m, 'r, M: ?Sized, F> {
    mem: &'m M,
    root: &'r Root<'m>,
    /// `None`: page checksums are not computed (see `ChainWalk::new`).
    crc: Option<&'r Crc32>,
    page_size: PageSize,
    /// The stride of the chain's first page, which every page repeats.
    stride: u64,
    chain: Chain,
    head: PhysAddr,
    max_pages: u64,
    /// The objects limit, and how many objects earlier chains used of it.
    max_objects: u64,
    objects: u64,
    /// The page to visit next (`NULL`: the chain ended).
    next: PhysAddr,
    /// Its index.
    index: u64,
    /// The root's address, and the page visited last (where the pointer
    /// to `next` is stored, the root's head field before the first).
    root_phys: PhysAddr,
    last: PhysAddr,
    /// Brent's cycle detection: the saved page, the power of two, and the
    /// distance from the saved page to `next`.
    tortoise: PhysAddr,
    power: u64,
    lam: u64,
    done: bool,
    /// Whether each page's cache lines are all read as it is visited
    /// ([`ChainWalk::touching`]).
    touch: bool,
    /// A refusal whose exact error is still to be found ([`ChainWalk::settle`]).
    deferred: Deferred,
    format: PhantomData<F>,
}

impl<'m, 'r, M: crate::Memory + ?Sized, F: Format> ChainWalk<'m, 'r, M, F> {
    /// A walk of `chain` of the image whose checked root `root` is at
    /// `root_phys`. `objects_before` objects of `max_objects` are already
    /// used by earlier chains. Page checksums are computed with `crc`;
    /// `None` leaves them out, for a walk that repeats one which checked
    /// them.
    #[allow(clippy::too_many_arguments)] // Each is one fact about the walk.
    pub(crate) fn new(
        mem: &'m M,
        root: &'r Root<'m>,
        crc: Option<&'r Crc32>,
        root_phys: PhysAddr,
        chain: Chain,
        max_pages: u64,
        max_objects: u64,
        objects_before: u64,
    ) -> Self {
        let head = crate::chain::ARRAYS
            .iter()
            .position(|c| *c == chain)
            .and_then(|i| root.heads.get(i).copied())
            .unwrap_or(PhysAddr::NULL);
        ChainWalk {
            mem,
            root,
            crc,
            page_size: root.page_size,
            stride: 0,
            chain,
            head,
            max_pages,
            max_objects,
            objects: objects_before,
            next: head,
            index: 0,
            root_phys,
            last: PhysAddr::NULL,
            tortoise: head,
            power: 1,
            lam: 0,
            done: false,
            touch: false,
            deferred: Deferred::None,
            format: PhantomData,
        }
    }

    /// The same walk, reading one byte of every cache line of each page it
    /// visits before it checks the page's header ([`crate::mem::touch`]):
    /// for a walk run ahead of a pass over the records, whose pages then
    /// arrive in the cache together with the header the walk needs.
    pub(crate) fn touching(mut self) -> Self {
        self.touch = true;
        self
    }

    /// The chain's stride (0 before its first page).
    pub(crate) fn stride(&self) -> u64 {
        self.stride
    }

    /// Objects seen so far, those of earlier chains included.
    pub(crate) fn objects(&self) -> u64 {
        self.objects
    }

    /// Pages visited so far.
    pub(crate) fn pages(&self) -> u64 {
        self.index
    }

    /// The next page, `Ok(None)` at the end of the chain. After an error
    /// every further call returns `Ok(None)`.
    pub(crate) fn next_page(&mut self) -> Result<Option<ChainPage>, Error> {
        let mut slot = None;
        self.next_page_into(&mut slot).map_err(|()| {
            // Never the limit's error below: `step` puts one where it
            // refuses.
            self.settle().or(slot).unwrap_or_else(|| {
                self.err(ErrorKind::LimitExceeded {
                    what: Limit::PagesPerChain,
                    limit: self.max_pages,
                })
            })
        })
    }

    /// Where the pointer to `next` is stored: the previous page's
    /// `next_array_phys`, or the root's head field.
    fn holder(&self) -> Location {
        match self.index.checked_sub(1) {
            Some(prev) => Location::page(self.chain, prev, self.last).field("next_array_phys"),
            None => Location::root(self.root_phys, Some(F::head_field(self.chain))),
        }
    }

    /// [`next_page`](Self::next_page), with its error put into `slot`
    /// (`Err(())` then) by `step`, which is not inlined: a caller deep in
    /// the stack holds no `Error` of its own for it. A loop or a chain over
    /// the page limit is put as the limit's error until
    /// [`settle`](Self::settle) searches the loop (a search that reads the
    /// chain again, kept off a deep stack).
    #[inline(always)]
    pub(crate) fn next_page_into(
        &mut self,
        slot: &mut Option<Error>,
    ) -> Result<Option<ChainPage>, ()> {
        if self.done {
            return Ok(None);
        }
        let r = self.step(slot);
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    /// The exact error of a refusal the walk deferred (a loop, or a chain
    /// over the page limit that may be one); `None` if there is none.
    #[inline(never)]
    pub(crate) fn settle(&self) -> Option<Error> {
        // `step` refused before it moved on: `lam` and `next` are the
        // refusal's.
        match self.deferred {
            Deferred::None => None,
            Deferred::Cycle => Some(self.cycle_of_length(self.lam)),
            Deferred::Limit => Some(self.over_page_limit(self.next)),
        }
    }

    /// Defers `d`, returning the error that stands for it until
    /// [`settle`](Self::settle).
    fn defer(&mut self, d: Deferred) -> Error {
        self.deferred = d;
        self.err(ErrorKind::LimitExceeded {
            what: Limit::PagesPerChain,
            limit: self.max_pages,
        })
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error::new(kind, self.holder())
    }

    /// Visits the next page, its error put into `slot`: the caller holds
    /// no `Error` for it.
    #[inline(never)]
    fn step(&mut self, slot: &mut Option<Error>) -> Result<Option<ChainPage>, ()> {
        // Each refusal goes straight into `slot`: no `Result` with an
        // `Error` in this frame, which is below the device pass's in
        // validation (and above a C caller's CRC callback).
        macro_rules! refuse {
            ($e:expr) => {{
                *slot = Some($e);
                return Err(());
            }};
        }
        let target = self.next;
        if target.is_null() {
            if self.index == 0 && !F::EMPTY_CHAINS {
                refuse!(self.err(ErrorKind::NullPointer));
            }
            return Ok(None);
        }
        if !target.is_page_aligned(self.page_size) {
            refuse!(self.err(ErrorKind::Unaligned { value: target }));
        }
        // Read as an array page, the root's page would fail on its
        // nr_objects (a head address, above every capacity): say what it is.
        if target == self.root_phys.page_base(self.page_size) {
            refuse!(self.err(ErrorKind::PageReused {
                target,
                other_chain: None,
                other_page: None,
            }));
        }
        if self.index > 0 {
            if target == self.tortoise {
                refuse!(self.defer(Deferred::Cycle));
            }
            if self.index >= self.max_pages {
                refuse!(self.defer(Deferred::Limit));
            }
            if self.power == self.lam {
                self.tortoise = target;
                self.power = self.power.saturating_mul(2);
                self.lam = 0;
            }
        } else if self.max_pages == 0 {
            refuse!(self.defer(Deferred::Limit));
        }
        self.lam = self.lam.saturating_add(1);
        let Some(bytes) = read_page(self.mem, target, self.page_size) else {
            refuse!(self.err(ErrorKind::Unreadable { target }));
        };
        if self.touch {
            crate::mem::touch(bytes);
        }
        let here = Location::page(self.chain, self.index, target);
        let hdr = match F::page(bytes, self.chain, self.index, self.root, self.crc, here) {
            Ok(hdr) => hdr,
            Err(e) => refuse!(e),
        };
        if self.index == 0 {
            self.stride = hdr.stride;
        } else if hdr.stride != self.stride {
            refuse!(Error::new(
                ErrorKind::StrideChanged {
                    stride: u16::try_from(hdr.stride).unwrap_or(u16::MAX),
                    first: u16::try_from(self.stride).unwrap_or(u16::MAX),
                },
                here.field("stride"),
            ));
        }
        let (next, nr_objects) = (hdr.next, hdr.nr_objects);
        let cap = records_in_page(self.page_size, F::PAGE_HDR, self.stride);
        if nr_objects > cap {
            refuse!(Error::new(
                ErrorKind::CountOverCapacity {
                    nr_objects,
                    capacity: cap,
                },
                here.field("nr_objects"),
            ));
        }
        if F::EMPTY_CHAINS && nr_objects == 0 {
            refuse!(Error::new(ErrorKind::EmptyPage, here.field("nr_objects")));
        }
        if !next.is_null() && nr_objects != cap {
            refuse!(Error::new(
                ErrorKind::PartialPage {
                    nr_objects,
                    capacity: cap,
                },
                here.field("nr_objects"),
            ));
        }
        match self.objects.checked_add(nr_objects) {
            Some(n) if n <= self.max_objects => self.objects = n,
            _ => {
                refuse!(Error::new(
                    ErrorKind::LimitExceeded {
                        what: Limit::Objects,
                        limit: self.max_objects,
                    },
                    here.field("nr_objects"),
                ));
            }
        }
        let page = ChainPage {
            phys: target,
            nr_objects,
        };
        self.last = target;
        self.next = next;
        self.index = self.index.saturating_add(1);
        Ok(Some(page))
    }

    /// The page after `phys`, re-read for the cycle search. Every page it is
    /// asked about was read and checked before.
    fn follow(&self, phys: PhysAddr) -> Option<PhysAddr> {
        read_page(self.mem, phys, self.page_size).map(|b| header(b).0)
    }

    /// The page `n` hops from the head.
    fn nth(&self, n: u64) -> Option<PhysAddr> {
        let mut p = self.head;
        for _ in 0..n {
            p = self.follow(p)?;
        }
        Some(p)
    }

    /// The chain is known to loop with period `lam` (a page `lam` hops on is
    /// the same page). Finds the first page that repeats, index `mu + lam`,
    /// and reports the pointer to it, stored in page `mu + lam - 1`.
    fn cycle_of_length(&self, lam: u64) -> Error {
        let fallback = self.err(ErrorKind::LimitExceeded {
            what: Limit::PagesPerChain,
            limit: self.max_pages,
        });
        let Some(mut b) = self.nth(lam) else {
            return fallback;
        };
        let mut a = self.head;
        let mut b_prev = PhysAddr::NULL;
        let mut mu = 0u64;
        // mu + lam <= self.index, so this ends within `index` hops.
        while a != b {
            if mu >= self.index {
                return fallback;
            }
            let (Some(a2), Some(b2)) = (self.follow(a), self.follow(b)) else {
                return fallback;
            };
            b_prev = b;
            (a, b) = (a2, b2);
            mu = mu.saturating_add(1);
        }
        let repeat = mu.saturating_add(lam);
        let holder_phys = if mu > 0 {
            b_prev
        } else {
            // The head repeats: the pointer is in page lam - 1.
            match self.nth(lam.saturating_sub(1)) {
                Some(p) => p,
                None => return fallback,
            }
        };
        Error::new(
            ErrorKind::Cycle {
                target: a,
                earlier: mu,
            },
            Location::page(self.chain, repeat.saturating_sub(1), holder_phys)
                .field("next_array_phys"),
        )
    }

    /// Page `index == max_pages` would be visited: a limit error, unless the
    /// chain already looped (the target is one of the pages seen).
    fn over_page_limit(&self, target: PhysAddr) -> Error {
        let mut p = self.head;
        for _ in 0..self.index {
            if p == target {
                // `target` is on the loop: its period is the hops back to it.
                let mut q = target;
                let mut lam = 0u64;
                while lam < self.index {
                    match self.follow(q) {
                        Some(n) => q = n,
                        None => break,
                    }
                    lam = lam.saturating_add(1);
                    if q == target {
                        return self.cycle_of_length(lam);
                    }
                }
                break;
            }
            match self.follow(p) {
                Some(n) => p = n,
                None => break,
            }
        }
        self.err(ErrorKind::LimitExceeded {
            what: Limit::PagesPerChain,
            limit: self.max_pages,
        })
    }
}
