//! Writes a [`Plan`] with the crate's writer into a [`ScrambledPool`]: the
//! FLB image every benchmark reads.

use iommu_flb_abi::abi::v1::{
    IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_DOMAIN_ARRAY_CAPACITY_4K, IOMMU_HW_ARRAY_CAPACITY_4K,
};
use iommu_flb_abi::writer::{
    Config, DeviceIndex, DeviceInit, DevicePayloadInit, DomainHandle, DomainInit, IndexSlot,
    IntelDeviceInit, IntelIommuInit, IommuHandle, IommuPayloadInit, SliceIndex, Smmuv3DeviceInit,
    Smmuv3IommuInit, WriteError, Writer,
};
use iommu_flb_abi::{FlatMemory, PhysAddr};

use crate::plan::{DevicePlan, DeviceVendor, DomainPlan, IommuVendor, Plan, Shape};
use crate::pool::ScrambledPool;

/// Where the benchmark images start in physical memory.
pub const BASE: PhysAddr = PhysAddr::new(0x1_0000_0000);

/// The seed of the page permutation.
pub const SEED: u64 = 0x5eed_f1b0_2026;

/// The generation the version-2 images of benchmark (6) are written with.
pub const V2_GENERATION: u64 = 0x2026;

/// Pages an image of `shape` takes: the root and each chain's pages.
pub fn pages_for(shape: Shape) -> usize {
    let (i, d, v) = shape.slots();
    let per = |slots: usize, cap: u64| {
        let cap = usize::try_from(cap).expect("capacity fits usize");
        slots.div_ceil(cap).max(1)
    };
    1 + per(i, IOMMU_HW_ARRAY_CAPACITY_4K)
        + per(d, IOMMU_DOMAIN_ARRAY_CAPACITY_4K)
        + per(v, IOMMU_DEVICE_ARRAY_CAPACITY_4K)
}

/// Index storage for the writer: two slots per device record (ghosts included).
pub fn index_slots(shape: Shape) -> Vec<IndexSlot> {
    vec![IndexSlot::empty(); 2 * (shape.slots().2 + 1)]
}

/// A writer with the IOMMUs and domains of a plan preserved, ready for the
/// devices: what the writer benchmark times [`Prepared::preserve_devices`] on.
pub struct Prepared<'p, X: DeviceIndex> {
    writer: Writer<&'p mut ScrambledPool, X>,
    iommus: Vec<IommuHandle>,
    domains: Vec<DomainHandle>,
}

fn iommu_payload(v: IommuVendor) -> IommuPayloadInit {
    match v {
        IommuVendor::Intel {
            phys_addr,
            root_table,
            context_tables_bitmap,
        } => IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: PhysAddr::new(phys_addr),
            root_table: PhysAddr::new(root_table),
            context_tables_bitmap,
        }),
        IommuVendor::Smmuv3 {
            phys_addr,
            strtab_base_cfg,
            l1_strtab_lu_state,
            l2_strtab_lu_states_phys,
        } => IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
            phys_addr: PhysAddr::new(phys_addr),
            strtab_base_cfg,
            l1_strtab_lu_state,
            l2_strtab_lu_states_phys: PhysAddr::new(l2_strtab_lu_states_phys),
        }),
    }
}

fn domain_init(d: &DomainPlan) -> DomainInit {
    DomainInit {
        top_table_phys: PhysAddr::new(d.top_table_phys),
        top_level: d.top_level,
        vasz: d.vasz,
        sign_extend: u8::from(d.sign_extend),
    }
}

fn device_init(d: &DevicePlan) -> DeviceInit {
    DeviceInit {
        pci_domain_nr: d.segment,
        devid: d.devid,
        dma_owner_token: d.dma_owner_token,
        attachment_id: d.attachment_id,
        payload: match d.vendor {
            DeviceVendor::Intel {
                pasid_table,
                max_pasid,
            } => DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: PhysAddr::new(pasid_table),
                max_pasid,
            }),
            DeviceVendor::Smmuv3 {
                l1_cdtab_lu_state,
                num_l2_cdtables,
                l2_cdtab_lu_states_phys,
            } => DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                l1_cdtab_lu_state,
                num_l2_cdtables,
                l2_cdtab_lu_states_phys: PhysAddr::new(l2_cdtab_lu_states_phys),
            }),
        },
    }
}

impl<'p, X: DeviceIndex> Prepared<'p, X> {
    /// Starts an image in `pool` and preserves the plan's IOMMUs and its
    /// domains (each ghost domain preserved and unpreserved in its place).
    pub fn new(plan: &Plan, pool: &'p mut ScrambledPool, index: X) -> Result<Self, WriteError> {
        Self::with_config(plan, pool, index, Config::v1())
    }

    /// [`new`](Self::new) in the format `config` says.
    pub fn with_config(
        plan: &Plan,
        pool: &'p mut ScrambledPool,
        index: X,
        config: Config,
    ) -> Result<Self, WriteError> {
        let mut writer = Writer::with_config_and_index(pool, config, index)?;
        let iommus = plan
            .iommus
            .iter()
            .map(|i| writer.preserve_iommu(i.token, iommu_payload(i.vendor)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut domains = Vec::with_capacity(plan.domains.len());
        for (j, d) in plan.domains.iter().enumerate() {
            if let Some(ghost) = plan.ghost_domain(j) {
                let h = writer.preserve_domain(domain_init(&ghost))?;
                writer.unpreserve_domain(h)?;
            }
            domains.push(writer.preserve_domain(domain_init(d))?);
        }
        Ok(Prepared {
            writer,
            iommus,
            domains,
        })
    }

    /// Preserves the plan's devices (each ghost device preserved and
    /// unpreserved in its place): the part the writer benchmark times.
    /// Never inlined, so that callgrind's `--toggle-collect` finds it.
    #[inline(never)]
    pub fn preserve_devices(&mut self, plan: &Plan) -> Result<(), WriteError> {
        for (i, d) in plan.devices.iter().enumerate() {
            let (domain, iommu) = (self.domains[d.domain], self.iommus[d.iommu]);
            if let Some(ghost) = plan.ghost_device(i) {
                let h = self
                    .writer
                    .preserve_device(device_init(&ghost), domain, iommu)?;
                self.writer.unpreserve_device(h)?;
            }
            self.writer.preserve_device(device_init(d), domain, iommu)?;
        }
        Ok(())
    }

    /// Ends writing: the root, and the record addresses of the IOMMUs and
    /// domains in plan order.
    pub fn finish(self) -> (PhysAddr, Vec<PhysAddr>, Vec<PhysAddr>) {
        let (root, _) = self.writer.finish();
        (
            root,
            self.iommus.iter().map(|h| h.phys()).collect(),
            self.domains.iter().map(|h| h.phys()).collect(),
        )
    }
}

/// A written benchmark image.
pub struct Built {
    /// What it holds.
    pub plan: Plan,
    pool: ScrambledPool,
    root: PhysAddr,
    /// Record address of each plan IOMMU.
    pub iommu_phys: Vec<PhysAddr>,
    /// Record address of each plan domain.
    pub domain_phys: Vec<PhysAddr>,
    /// Live devices behind each plan IOMMU.
    pub iommu_refs: Vec<u32>,
}

impl Built {
    /// Writes the version-1 image of `shape`.
    pub fn new(shape: Shape) -> Built {
        Self::with_config(shape, Config::v1())
    }

    /// Writes the objects of `shape` as a version-2 image (every page
    /// checksummed), as benchmark (6) reads them.
    pub fn v2(shape: Shape) -> Built {
        Self::with_config(shape, Config::v2(V2_GENERATION))
    }

    /// Writes the image of `shape` in the format `config` says. Version 2
    /// holds as many records per page or more (its pages and records are
    /// laid out differently), so it needs at most the pages version 1 does.
    pub fn with_config(shape: Shape, config: Config) -> Built {
        let v1 = config.version == 1;
        let plan = Plan::new(shape);
        let mut pool = ScrambledPool::new(BASE, pages_for(shape), SEED);
        let mut slots = index_slots(shape);
        let mut prepared =
            Prepared::with_config(&plan, &mut pool, SliceIndex::new(&mut slots), config)
                .expect("the plan's IOMMUs and domains are valid");
        prepared
            .preserve_devices(&plan)
            .expect("the plan's devices are valid");
        let (root, iommu_phys, domain_phys) = prepared.finish();
        if v1 {
            assert_eq!(
                pool.handed_out(),
                pages_for(shape),
                "the writer took the pages the shape needs"
            );
        }
        let opts = iommu_flb_abi::reader::Options::default();
        iommu_flb_abi::reader::validate_alloc(&pool.memory(), root, &opts)
            .expect("the reader accepts the writer's image");
        let mut iommu_refs = vec![0u32; plan.iommus.len()];
        for d in &plan.devices {
            iommu_refs[d.iommu] += 1;
        }
        Built {
            plan,
            pool,
            root,
            iommu_phys,
            domain_phys,
            iommu_refs,
        }
    }

    /// The physical memory holding the image (every byte is an image page).
    pub fn memory(&self) -> FlatMemory<'_> {
        self.pool.memory()
    }

    /// The root's physical address.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Record slots, live and deleted, of all three kinds.
    pub fn slots(&self) -> usize {
        let (i, d, v) = self.plan.shape.slots();
        i + d + v
    }
}

/// A way to corrupt a copy of an image, for checking that a check checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// The device chain's last page links back to its head.
    Cycle,
    /// The device chain's head page claims one record more than fits.
    CountOverCapacity,
}

/// A copy of `built`'s bytes with `what` done to the device chain.
pub fn corrupted(built: &Built, what: Corruption) -> Vec<u8> {
    use iommu_flb_abi::abi::v1::{IommuArrayHdrSer, IommuFlbSer};
    use zerocopy::FromBytes;

    let mem = built.memory();
    let mut bytes = mem.bytes().to_vec();
    let offset = |phys: PhysAddr| {
        usize::try_from(phys.checked_offset_from(mem.base()).expect("inside")).expect("fits")
    };
    let root = IommuFlbSer::read_from_prefix(&bytes[offset(built.root())..])
        .expect("root")
        .0;
    let head = PhysAddr::new(root.device_array_phys.get());
    let hdr = |bytes: &mut Vec<u8>, phys: PhysAddr| -> IommuArrayHdrSer {
        IommuArrayHdrSer::read_from_prefix(&bytes[offset(phys)..])
            .expect("header")
            .0
    };
    match what {
        Corruption::Cycle => {
            let mut tail = head;
            loop {
                let next = PhysAddr::new(hdr(&mut bytes, tail).next_array_phys.get());
                if next.is_null() {
                    break;
                }
                tail = next;
            }
            let at = offset(tail);
            bytes[at..at + 8].copy_from_slice(&head.get().to_le_bytes());
        }
        Corruption::CountOverCapacity => {
            let at = offset(head) + 8;
            bytes[at..at + 8].copy_from_slice(&(IOMMU_DEVICE_ARRAY_CAPACITY_4K + 1).to_le_bytes());
        }
    }
    bytes
}
