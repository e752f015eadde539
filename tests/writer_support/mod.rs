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
        page[32..].iter().all(|b| *b == 0),
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
