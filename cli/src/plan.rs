//! What `gen` and `demo` preserve: a plan of IOMMUs, domains and devices,
//! made from a few counts and a seed, before any page is written.
//!
//! The values look like a real host's, so a listing reads like one:
//!
//! - Intel VT-d units sit at `0xfed90000 + 0x1000·n` (the DMAR MMIO range),
//!   ARM SMMUv3s at `0x09050000 + 0x20000·n`; the token is the MMIO base, as
//!   in the kernel. With `mixed`, even-numbered IOMMUs are Intel, odd ones
//!   SMMUv3.
//! - IOMMU `i` serves PCI segment `i / 4`, buses `64·(i % 4) + 1 ..`, so
//!   every (segment, devid) is unique. A unit takes at most
//!   [`DEVICES_PER_IOMMU`] devices (63 buses of 256 functions).
//! - Domain `d` belongs to IOMMU `d % iommus` and has that vendor's page
//!   table shape (VT-d: 4 or 5 levels, 48 or 57 bits; SMMUv3: 3 or 4 levels,
//!   39 or 48 bits). Devices attach to a domain of their own IOMMU when it
//!   has one. Intel devices carry the domain's VT-d domain ID as
//!   `attachment_id`; SMMUv3 devices 0 (the kernel stores the ASID or VMID
//!   there; the plan has no SMMUv3 contexts to take one from).
//! - Live device `k` goes to IOMMU `k % iommus`, so with at least as many
//!   devices as IOMMUs every IOMMU has a live device. The `deleted` devices
//!   are preserved like the others and unpreserved at the end.
//! - Devices are preserved in a seeded random order; an IOMMU or domain is
//!   preserved just before its first device, as the kernel does, and
//!   domains without devices after them.

use core::fmt;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::v1::IommuTypeSer;
use iommu_flb_abi::writer::{
    DeviceInit, DevicePayloadInit, DomainInit, IntelDeviceInit, IntelIommuInit, IommuPayloadInit,
    Smmuv3DeviceInit, Smmuv3IommuInit,
};

use crate::rng::Rng;

/// The most devices one IOMMU of a plan serves: 63 buses × 256 functions.
pub const DEVICES_PER_IOMMU: u64 = 63 * 256;

/// The most records of each kind `gen` writes (IOMMUs, domains, devices
/// including deleted ones): more than a real host hands over, few enough
/// that the image fits comfortably in memory.
pub const MAX_RECORDS: u64 = 1 << 20;

/// Which IOMMU vendors a plan uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Only Intel VT-d.
    Intel,
    /// Only ARM SMMUv3.
    Smmuv3,
    /// Both, alternating.
    Mixed,
}

/// The counts and seed a plan is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Live IOMMUs.
    pub iommus: u64,
    /// Live domains.
    pub domains: u64,
    /// Live devices.
    pub devices: u64,
    /// Devices preserved and then unpreserved.
    pub deleted: u64,
    /// IOMMU vendors.
    pub vendor: Vendor,
    /// Seed for addresses, payloads and order.
    pub seed: u64,
}

/// Why a [`Spec`] cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// One IOMMU to preserve.
#[derive(Clone, Copy, Debug)]
pub struct PlannedIommu {
    /// The MMIO base, the IOMMU's token.
    pub token: u64,
    /// Vendor state (which also gives the type).
    pub payload: IommuPayloadInit,
}

/// One device to preserve.
#[derive(Clone, Copy, Debug)]
pub struct PlannedDevice {
    /// What the writer writes.
    pub init: DeviceInit,
    /// Index into [`Plan::iommus`].
    pub iommu: usize,
    /// Index into [`Plan::domains`].
    pub domain: usize,
    /// Whether the device is unpreserved at the end.
    pub deleted: bool,
}

/// One step of building the image, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Preserve [`Plan::iommus`]`[i]`.
    Iommu(usize),
    /// Preserve [`Plan::domains`]`[i]`.
    Domain(usize),
    /// Preserve [`Plan::devices`]`[i]`.
    Device(usize),
    /// Unpreserve [`Plan::devices`]`[i]`.
    Unpreserve(usize),
}

/// Everything to preserve, and in which order.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The IOMMUs.
    pub iommus: Vec<PlannedIommu>,
    /// The domains.
    pub domains: Vec<DomainInit>,
    /// The devices, live and deleted.
    pub devices: Vec<PlannedDevice>,
    /// The writer operations, in order.
    pub steps: Vec<Step>,
}

/// A random page-aligned address in `[lo, lo + span)`, as a table pointer
/// of a real host would be.
fn page_in(rng: &mut Rng, lo: u64, span: u64) -> u64 {
    lo.saturating_add(rng.below(span >> 12) << 12)
}

/// Lossless `u64` → `usize` for counts already capped by [`MAX_RECORDS`].
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn check(spec: &Spec) -> Result<(), SpecError> {
    let err = |s: String| Err(SpecError(s));
    for (name, n) in [
        ("--iommus", spec.iommus),
        ("--domains", spec.domains),
        (
            "--devices + --deleted",
            spec.devices.saturating_add(spec.deleted),
        ),
    ] {
        if n > MAX_RECORDS {
            return err(format!("{name} is {n}; at most {MAX_RECORDS}"));
        }
    }
    let any_device = spec.devices > 0 || spec.deleted > 0;
    if any_device && (spec.iommus == 0 || spec.domains == 0) {
        return err("devices need at least one IOMMU and one domain".into());
    }
    if spec.devices < spec.iommus {
        return err(format!(
            "--devices {} is below --iommus {}: every live IOMMU needs a live device \
             (its ref_count counts them)",
            spec.devices, spec.iommus
        ));
    }
    let per_iommu = spec
        .devices
        .saturating_add(spec.deleted)
        .div_ceil(spec.iommus.max(1));
    if per_iommu > DEVICES_PER_IOMMU {
        return err(format!(
            "{per_iommu} devices per IOMMU; at most {DEVICES_PER_IOMMU} (add IOMMUs)"
        ));
    }
    Ok(())
}

fn vendor_of(vendor: Vendor, i: usize) -> IommuTypeSer {
    match vendor {
        Vendor::Intel => IommuTypeSer::IommuIntel,
        Vendor::Smmuv3 => IommuTypeSer::IommuArmSmmuv3,
        Vendor::Mixed if i % 2 == 0 => IommuTypeSer::IommuIntel,
        Vendor::Mixed => IommuTypeSer::IommuArmSmmuv3,
    }
}

/// Makes the plan for `spec`.
pub fn plan(spec: &Spec) -> Result<Plan, SpecError> {
    check(spec)?;
    let mut rng = Rng::new(spec.seed);
    let n_iommus = to_usize(spec.iommus);
    let n_domains = to_usize(spec.domains);

    let types: Vec<IommuTypeSer> = (0..n_iommus).map(|i| vendor_of(spec.vendor, i)).collect();
    let mut iommus = Vec::with_capacity(n_iommus);
    let (mut n_intel, mut n_smmu) = (0u64, 0u64);
    for ty in &types {
        let payload = if *ty == IommuTypeSer::IommuIntel {
            let token = 0xfed9_0000u64.saturating_add(n_intel.saturating_mul(0x1000));
            n_intel = n_intel.saturating_add(1);
            IommuPayloadInit::Intel(IntelIommuInit {
                phys_addr: PhysAddr::new(token),
                root_table: PhysAddr::new(page_in(&mut rng, 0x1_0000_0000, 0x1_0000_0000)),
                // Filled in below from the buses the unit's devices use.
                context_tables_bitmap: [0; 8],
            })
        } else {
            let token = 0x0905_0000u64.saturating_add(n_smmu.saturating_mul(0x2_0000));
            n_smmu = n_smmu.saturating_add(1);
            IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
                phys_addr: PhysAddr::new(token),
                // Two-level stream table, split 8, 2^16 stream IDs.
                strtab_base_cfg: (1 << 16) | (8 << 6) | 16,
                l1_strtab_lu_state: page_in(&mut rng, 0x8_0000_0000, 0x1_0000_0000),
                l2_strtab_lu_states_phys: PhysAddr::new(page_in(
                    &mut rng,
                    0x8_0000_0000,
                    0x1_0000_0000,
                )),
            })
        };
        let token = match &payload {
            IommuPayloadInit::Intel(p) => p.phys_addr.get(),
            IommuPayloadInit::Smmuv3(p) => p.phys_addr.get(),
        };
        iommus.push(PlannedIommu { token, payload });
    }

    let mut domains = Vec::with_capacity(n_domains);
    let mut owners = Vec::with_capacity(n_domains);
    for d in 0..n_domains {
        let ty = types
            .get(d.checked_rem(n_iommus).unwrap_or(0))
            .copied()
            .unwrap_or(IommuTypeSer::IommuIntel);
        let deep = rng.below(4) == 0;
        let (top_level, vasz, lo) = match (ty, deep) {
            (IommuTypeSer::IommuArmSmmuv3, false) => (3, 48, 0x8_0000_0000),
            (IommuTypeSer::IommuArmSmmuv3, true) => (2, 39, 0x8_0000_0000),
            (_, false) => (4, 48, 0x1_0000_0000),
            (_, true) => (5, 57, 0x1_0000_0000),
        };
        domains.push(DomainInit {
            top_table_phys: PhysAddr::new(page_in(&mut rng, lo, 0x1_0000_0000)),
            top_level,
            vasz,
            sign_extend: 0,
        });
        // The iommufd file that owns the domain's devices: a kernel pointer.
        owners.push(0xffff_8881_0000_0000u64.saturating_add(rng.below(1 << 24) << 6));
    }

    // Domains of each IOMMU, for attaching its devices.
    let mut domains_of: Vec<Vec<usize>> = vec![Vec::new(); n_iommus];
    for d in 0..n_domains {
        if let Some(list) = domains_of.get_mut(d.checked_rem(n_iommus).unwrap_or(0)) {
            list.push(d);
        }
    }

    let total = to_usize(spec.devices.saturating_add(spec.deleted));
    let live = to_usize(spec.devices);
    let mut per_iommu = vec![0u64; n_iommus];
    let mut devices = Vec::with_capacity(total);
    for k in 0..total {
        let i = k.checked_rem(n_iommus).unwrap_or(0);
        let nth = per_iommu.get(i).copied().unwrap_or(0);
        if let Some(c) = per_iommu.get_mut(i) {
            *c = c.saturating_add(1);
        }
        let i64 = u64::try_from(i).unwrap_or(0);
        // Bounded: i64 % 4 <= 3 and nth < DEVICES_PER_IOMMU, so bus < 256.
        let bus = ((i64 & 3) << 6) | 1u64.saturating_add(nth >> 8);
        let devid = u32::try_from((bus << 8) | (nth & 0xff)).unwrap_or(0);
        let pci_domain_nr = u32::try_from(i64 >> 2).unwrap_or(0);
        let domain = match domains_of.get(i).filter(|l| !l.is_empty()) {
            Some(list) => list.get(rng.index(list.len())).copied().unwrap_or(0),
            None => rng.index(n_domains),
        };
        let is_intel = types.get(i) == Some(&IommuTypeSer::IommuIntel);
        let payload = if is_intel {
            let pasid = rng.below(2) == 0;
            DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: PhysAddr::new(if pasid {
                    page_in(&mut rng, 0x1_0000_0000, 0x1_0000_0000)
                } else {
                    0
                }),
                max_pasid: if pasid { 1 << 20 } else { 0 },
            })
        } else {
            DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                l1_cdtab_lu_state: page_in(&mut rng, 0x8_0000_0000, 0x1_0000_0000),
                num_l2_cdtables: u32::try_from(rng.below(4)).map_or(1, |n| n.saturating_add(1)),
                l2_cdtab_lu_states_phys: PhysAddr::new(page_in(
                    &mut rng,
                    0x8_0000_0000,
                    0x1_0000_0000,
                )),
            })
        };
        if let Some(IommuPayloadInit::Intel(unit)) = iommus.get_mut(i).map(|u| &mut u.payload) {
            // One bit per bus with a preserved context table.
            if let Some(w) = unit.context_tables_bitmap.get_mut(to_usize(bus >> 6)) {
                *w |= 1 << (bus & 63);
            }
        }
        devices.push(PlannedDevice {
            init: DeviceInit {
                pci_domain_nr,
                devid,
                dma_owner_token: owners.get(domain).copied().unwrap_or(0),
                // VT-d domain IDs start at 1 (0 is reserved by the hardware).
                attachment_id: if is_intel {
                    u64::try_from(domain).unwrap_or(0).saturating_add(1)
                } else {
                    0
                },
                payload,
            },
            iommu: i,
            domain,
            deleted: k >= live,
        });
    }

    let steps = steps(&mut rng, &devices, n_iommus, n_domains);
    Ok(Plan {
        iommus,
        domains,
        devices,
        steps,
    })
}

/// The writer operations: devices in a random order, each IOMMU and domain
/// just before its first device, unused domains after, unpreserves last.
fn steps(rng: &mut Rng, devices: &[PlannedDevice], n_iommus: usize, n_domains: usize) -> Vec<Step> {
    let mut order: Vec<usize> = (0..devices.len()).collect();
    rng.shuffle(&mut order);
    let mut have_iommu = vec![false; n_iommus];
    let mut have_domain = vec![false; n_domains];
    let mut steps = Vec::new();
    for k in order {
        let Some(dev) = devices.get(k) else { continue };
        if let Some(seen @ false) = have_iommu.get_mut(dev.iommu) {
            *seen = true;
            steps.push(Step::Iommu(dev.iommu));
        }
        if let Some(seen @ false) = have_domain.get_mut(dev.domain) {
            *seen = true;
            steps.push(Step::Domain(dev.domain));
        }
        steps.push(Step::Device(k));
    }
    for (d, seen) in have_domain.iter().enumerate() {
        if !seen {
            steps.push(Step::Domain(d));
        }
    }
    for (k, dev) in devices.iter().enumerate() {
        if dev.deleted {
            steps.push(Step::Unpreserve(k));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec(iommus: u64, domains: u64, devices: u64, deleted: u64, vendor: Vendor) -> Spec {
        Spec {
            iommus,
            domains,
            devices,
            deleted,
            vendor,
            seed: 42,
        }
    }

    #[test]
    fn every_live_iommu_has_a_live_device_and_device_ids_are_unique() {
        let p = plan(&spec(9, 5, 40, 7, Vendor::Mixed)).unwrap();
        assert_eq!(p.devices.len(), 47);
        assert_eq!(p.devices.iter().filter(|d| d.deleted).count(), 7);
        for i in 0..9 {
            assert!(p.devices.iter().any(|d| !d.deleted && d.iommu == i), "{i}");
        }
        let ids: HashSet<_> = p
            .devices
            .iter()
            .map(|d| (d.init.pci_domain_nr, d.init.devid))
            .collect();
        assert_eq!(ids.len(), 47);
        let tokens: HashSet<_> = p.iommus.iter().map(|u| u.token).collect();
        assert_eq!(tokens.len(), 9);
    }

    #[test]
    fn steps_preserve_each_object_once_before_its_first_use() {
        let p = plan(&spec(3, 8, 20, 4, Vendor::Mixed)).unwrap();
        let mut seen_iommu = HashSet::new();
        let mut seen_domain = HashSet::new();
        let mut seen_device = HashSet::new();
        let mut unpreserved = HashSet::new();
        for step in &p.steps {
            match *step {
                Step::Iommu(i) => assert!(seen_iommu.insert(i)),
                Step::Domain(d) => assert!(seen_domain.insert(d)),
                Step::Device(k) => {
                    let dev = &p.devices[k];
                    assert!(seen_iommu.contains(&dev.iommu) && seen_domain.contains(&dev.domain));
                    assert!(seen_device.insert(k));
                }
                Step::Unpreserve(k) => {
                    assert!(seen_device.contains(&k) && p.devices[k].deleted);
                    assert!(unpreserved.insert(k));
                }
            }
        }
        assert_eq!((seen_iommu.len(), seen_domain.len()), (3, 8));
        assert_eq!((seen_device.len(), unpreserved.len()), (24, 4));
    }

    #[test]
    fn payloads_follow_the_iommus_vendor() {
        let p = plan(&spec(4, 4, 8, 0, Vendor::Mixed)).unwrap();
        for d in &p.devices {
            let unit = &p.iommus[d.iommu];
            match (unit.payload, d.init.payload) {
                (IommuPayloadInit::Intel(_), DevicePayloadInit::Intel(_)) => {
                    assert_ne!(d.init.attachment_id, 0)
                }
                (IommuPayloadInit::Smmuv3(_), DevicePayloadInit::Smmuv3(_)) => {
                    assert_eq!(d.init.attachment_id, 0)
                }
                _ => panic!("device payload of the wrong vendor"),
            }
        }
        let only = plan(&spec(3, 1, 3, 0, Vendor::Smmuv3)).unwrap();
        assert!(
            only.iommus
                .iter()
                .all(|u| u.payload.iommu_type() == IommuTypeSer::IommuArmSmmuv3)
        );
    }

    #[test]
    fn intel_context_bitmap_has_the_bus_of_each_device() {
        let p = plan(&spec(1, 1, 300, 0, Vendor::Intel)).unwrap();
        let IommuPayloadInit::Intel(unit) = p.iommus[0].payload else {
            panic!("intel")
        };
        // 300 devices on IOMMU 0: buses 1 and 2.
        assert_eq!(unit.context_tables_bitmap, [0b110, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn same_seed_same_plan_other_seed_other_addresses() {
        let a = plan(&spec(2, 3, 10, 1, Vendor::Mixed)).unwrap();
        let b = plan(&spec(2, 3, 10, 1, Vendor::Mixed)).unwrap();
        assert_eq!(a.steps, b.steps);
        let c = plan(&Spec {
            seed: 43,
            ..spec(2, 3, 10, 1, Vendor::Mixed)
        })
        .unwrap();
        let tops = |p: &Plan| {
            p.domains
                .iter()
                .map(|d| d.top_table_phys)
                .collect::<Vec<_>>()
        };
        assert_eq!(tops(&a), tops(&b));
        assert_ne!(tops(&a), tops(&c));
    }

    #[test]
    fn refuses_specs_no_valid_image_has() {
        let e = |s: Spec| plan(&s).unwrap_err().to_string();
        assert!(
            e(spec(3, 1, 2, 0, Vendor::Intel)).contains("every live IOMMU needs a live device")
        );
        assert!(e(spec(0, 1, 2, 0, Vendor::Intel)).contains("at least one IOMMU and one domain"));
        assert!(e(spec(1, 0, 2, 0, Vendor::Intel)).contains("at least one IOMMU and one domain"));
        assert!(e(spec(1, 1, DEVICES_PER_IOMMU + 1, 0, Vendor::Intel)).contains("per IOMMU"));
        assert!(e(spec(1, MAX_RECORDS + 1, 1, 0, Vendor::Intel)).contains("--domains"));
        // An empty image is fine.
        assert!(
            plan(&spec(0, 0, 0, 0, Vendor::Mixed))
                .unwrap()
                .steps
                .is_empty()
        );
    }
}
