//! Test support for the writer tests: an independent walk of an image's
//! bytes (it shares no code with the writer) that checks the structure the
//! kernel's writer guarantees and returns every record.

#![allow(dead_code)] // Each test crate uses a different part.

use std::collections::HashSet;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::*;
use iommu_flb_abi::writer::PageAlloc;
use iommu_flb_abi::{Memory, PhysAddr};
use zerocopy::FromBytes;

/// Whether every byte of `bytes` (at most a 64 KiB page) is zero: one
/// comparison with zeros, which miri runs natively, where a loop over the
/// bytes costs it half a second per 4 KiB page.
pub fn zeroed(bytes: &[u8]) -> bool {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    ZEROS.get(..bytes.len()) == Some(bytes)
}

/// One record as the walk found it: its address and its bytes.
#[derive(Clone, Debug)]
pub struct Rec {
    pub phys: PhysAddr,
    pub bytes: Vec<u8>,
}

impl Rec {
    pub fn hdr(&self) -> IommuHdrSer {
        IommuHdrSer::read_from_prefix(&self.bytes).unwrap().0
    }
    pub fn ref_count(&self) -> u32 {
        self.hdr().ref_count.get()
    }
    pub fn flags(&self) -> u32 {
        self.hdr().flags.get()
    }
    pub fn deleted(&self) -> bool {
        self.flags() & IOMMU_SER_FLAG_DELETED != 0
    }
    pub fn domain(&self) -> IommuDomainSer {
        IommuDomainSer::read_from_bytes(&self.bytes).unwrap()
    }
    pub fn device(&self) -> IommuDeviceSer {
        IommuDeviceSer::read_from_bytes(&self.bytes).unwrap()
    }
    pub fn iommu(&self) -> IommuHwSer {
        IommuHwSer::read_from_bytes(&self.bytes).unwrap()
    }
}

/// A chain's pages and records, in order.
#[derive(Clone, Debug, Default)]
pub struct ChainDump {
    pub pages: Vec<PhysAddr>,
    pub records: Vec<Rec>,
}

/// Everything in an image.
#[derive(Clone, Debug)]
pub struct Dump {
    pub root: PhysAddr,
    pub iommus: ChainDump,
    pub domains: ChainDump,
    pub devices: ChainDump,
}

impl Dump {
    /// Every page: root, then the IOMMU, domain and device chains.
    pub fn all_pages(&self) -> Vec<PhysAddr> {
        let mut v = vec![self.root];
        v.extend(&self.iommus.pages);
        v.extend(&self.domains.pages);
        v.extend(&self.devices.pages);
        v
    }

    /// The order the writer's abort promises: domain, device, IOMMU chains,
    /// each head to tail, then the root.
    pub fn abort_order(&self) -> Vec<PhysAddr> {
        let mut v = Vec::new();
        v.extend(&self.domains.pages);
        v.extend(&self.devices.pages);
        v.extend(&self.iommus.pages);
        v.push(self.root);
        v
    }
}

fn walk_chain(
    mem: &impl Memory,
    ps: PageSize,
    head: u64,
    size: usize,
    seen: &mut HashSet<PhysAddr>,
) -> ChainDump {
    let cap = ((ps.bytes() - 16) / size) as u64;
    let mut out = ChainDump::default();
    let mut at = PhysAddr::new(head);
    assert!(!at.is_null(), "chain head is 0");
    while !at.is_null() {
        assert!(at.is_page_aligned(ps), "page {at} not aligned");
        assert!(seen.insert(at), "page {at} used twice");
        let page = mem
            .page(at, ps)
            .unwrap_or_else(|| panic!("page {at} unreadable"));
        assert_eq!(page.len(), ps.bytes());
        let (hdr, rest) = IommuArrayHdrSer::read_from_prefix(page).unwrap();
        let nr = hdr.nr_objects.get();
        let next = hdr.next_array_phys.get();
        assert!(nr <= cap, "page {at}: nr_objects {nr} above {cap}");
        if next != 0 {
            assert_eq!(nr, cap, "page {at} is not the tail but is not full");
        }
        for (i, chunk) in rest.chunks_exact(size).take(nr as usize).enumerate() {
            out.records.push(Rec {
                phys: PhysAddr::new(at.get() + 16 + (i * size) as u64),
                bytes: chunk.to_vec(),
            });
        }
        out.pages.push(at);
        at = PhysAddr::new(next);
    }
    out
}

/// Walks the image at `root`, asserting the writer's structural promises,
/// in pages of the allocator's page size.
pub fn walk(mem: &(impl Memory + PageAlloc), root: PhysAddr) -> Dump {
    let ps = mem.page_size();
    let page = mem.page(root, ps).expect("root readable");
    let flb = IommuFlbSer::read_from_prefix(page).unwrap().0;
    assert_eq!(flb.version.get(), IOMMU_LUO_FLB_VERSION);
    assert!(
        zeroed(&page[32..]),
        "root page beyond the root struct is zero"
    );
    let mut seen = HashSet::from([root]);
    let iommus = walk_chain(
        mem,
        ps,
        flb.iommu_array_phys.get(),
        size_of::<IommuHwSer>(),
        &mut seen,
    );
    let domains = walk_chain(
        mem,
        ps,
        flb.iommu_domain_array_phys.get(),
        size_of::<IommuDomainSer>(),
        &mut seen,
    );
    let devices = walk_chain(
        mem,
        ps,
        flb.device_array_phys.get(),
        size_of::<IommuDeviceSer>(),
        &mut seen,
    );
    Dump {
        root,
        iommus,
        domains,
        devices,
    }
}

/// Pages a chain of `n` records has when pages are added only when needed.
pub fn pages_for(n: usize, cap: u64) -> usize {
    n.div_ceil(cap as usize).max(1)
}

// ---- failing allocators, and what a failed operation may change ----

use std::cell::Cell;
use std::rc::Rc;

use iommu_flb_abi::PageMap;
use iommu_flb_abi::writer::{BadPage, FailingAlloc, MapAlloc, WriteError};

/// An allocator whose `alloc_page`, `page_mut` and `pages_mut` calls are
/// counted together by a [`Faults`] switch, which can fail any one of them.
pub type Faulty = FailingAlloc<MapAlloc, Box<dyn FnMut(u64) -> bool>, Box<dyn FnMut(u64) -> bool>>;

#[derive(Default)]
struct FaultState {
    calls: Cell<u64>,
    fail_at: Cell<Option<u64>>,
    hit: Cell<bool>,
}

/// The switch of a [`Faulty`] allocator: once armed with `n`, fails the
/// `n`-th allocation or mapping call (0-based, both kinds counted in one
/// sequence) from then on, once.
#[derive(Clone, Default)]
pub struct Faults(Rc<FaultState>);

impl Faults {
    /// `inner` behind a switch, disarmed.
    pub fn wrap(inner: MapAlloc) -> (Faulty, Faults) {
        let faults = Faults::default();
        let (a, m) = (faults.clone(), faults.clone());
        let alloc: Faulty = FailingAlloc::new(inner, Box::new(move |_| a.call()) as Box<_>)
            .failing_maps(Box::new(move |_| m.call()) as Box<_>);
        (alloc, faults)
    }

    /// Fails call `n` from now (`None`: none), and forgets earlier hits.
    pub fn arm(&self, n: Option<u64>) {
        self.0.calls.set(0);
        self.0.fail_at.set(n);
        self.0.hit.set(false);
    }

    /// Whether the armed call was reached (and failed).
    pub fn hit(&self) -> bool {
        self.0.hit.get()
    }

    /// Calls counted since `arm`.
    pub fn calls(&self) -> u64 {
        self.0.calls.get()
    }

    fn call(&self) -> bool {
        let n = self.0.calls.get();
        self.0.calls.set(n + 1);
        let fail = self.0.fail_at.get() == Some(n);
        if fail {
            self.0.hit.set(true);
            self.0.fail_at.set(None);
        }
        fail
    }
}

/// Whether `e` is what an allocation or mapping failure surfaces as.
pub fn is_fault(e: &WriteError) -> bool {
    matches!(
        e,
        WriteError::OutOfPages { .. }
            | WriteError::PageUnavailable { .. }
            | WriteError::BadPage {
                problem: BadPage::Unmapped,
                ..
            }
    )
}

/// After an operation failed with `err`: every page of `before` holds
/// exactly the bytes it held, and the allocator holds no other page except
/// one refused as unmapped (which the writer may not give back, and which
/// is zero). Returns the description of the first difference.
pub fn unchanged(before: &PageMap, now: &MapAlloc, err: &WriteError) -> Result<(), String> {
    for (p, bytes) in before.iter() {
        match now.map().page(p, now.map().page_size()) {
            Some(b) if b == bytes => {}
            Some(b) => {
                let at = b.iter().zip(bytes).position(|(x, y)| x != y).unwrap();
                return Err(format!("page {p} changed at byte {at:#x} after {err}"));
            }
            None => return Err(format!("page {p} was given back after {err}")),
        }
    }
    for (p, bytes) in now.map().iter() {
        if before.contains(p) {
            continue;
        }
        let leaked = matches!(
            *err,
            WriteError::BadPage { phys, problem: BadPage::Unmapped, .. } if phys == p
        );
        if !leaked || !zeroed(bytes) {
            return Err(format!("page {p} is new after {err}"));
        }
    }
    Ok(())
}
