//! Rewriting a validated image in another format version: a new kernel's
//! version-2 image for an old kernel that reads only version 1 (rollback),
//! or the other way (upgrade).
//!
//! [`convert`] reads every live object of a validated [`Image`] and
//! preserves it, in chain order, with a [`Writer`] the caller started in the
//! target version. The result holds the same live objects with the same
//! fields; deleted slots are not carried over, and a device names its domain
//! and IOMMU in the target version's way (address or index).
//!
//! It refuses, before writing anything, an image the target version cannot
//! express ([`Inexpressible`]): compatible feature bits or record fields of a
//! later 2.x writer that the target would drop, and state the next kernel
//! wrote after the handover (a restored image). Needs the `alloc` feature
//! (the map from the source's records to the new handles).
use alloc::collections::BTreeMap;
use core::fmt;

use crate::PhysAddr;
use crate::abi::v1::IOMMU_SER_FLAG_DELETED;
use crate::abi::v2::IommuFlbV2Ser;
use crate::error::Chain;
use crate::mem::{Memory, read_page};
use crate::reader::{DevicePayload, Domain, Image, Iommu, IommuPayload};
use crate::writer::{
    DeviceIndex, DeviceInit, DevicePayloadInit, DomainInit, IntelDeviceInit, IntelIommuInit,
    IommuPayloadInit, PageAlloc, Smmuv3DeviceInit, Smmuv3IommuInit, WriteError, Writer,
};

/// What the target version cannot carry; [`convert`] refuses the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inexpressible {
    /// The root sets compatible feature bits the writer cannot set: the
    /// next kernel would lose what they say.
    CompatFeatures {
        /// The root's `compat_features`.
        bits: u64,
    },
    /// The root is longer than the target's and the extra bytes (fields of
    /// a later 2.x writer) are not all zero.
    RootExtension {
        /// The root's `root_size`.
        root_size: u32,
        /// Offset in the root of the first non-zero extra byte.
        offset: u64,
    },
    /// A live record's stride is longer than the record, and the extra
    /// bytes (fields of a later 2.x writer) are not all zero.
    RecordExtension {
        /// The record's chain.
        chain: Chain,
        /// The record's physical address.
        phys: PhysAddr,
        /// Offset in the record of the first non-zero extra byte.
        offset: u64,
    },
    /// A live record carries state the next kernel wrote after the
    /// handover (`INCOMING`, `restored` or `restored_domain`): a restored image, not one to
    /// hand over.
    RestoredState {
        /// The record's chain.
        chain: Chain,
        /// The record's physical address.
        phys: PhysAddr,
    },
}

impl fmt::Display for Inexpressible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Inexpressible::CompatFeatures { bits } => write!(
                f,
                "root: compat_features {bits:#x}: the writer cannot set these feature bits"
            ),
            Inexpressible::RootExtension { root_size, offset } => write!(
                f,
                "root: root_size {root_size}: its byte at offset {offset} is a field of a later writer and is not zero"
            ),
            Inexpressible::RecordExtension {
                chain,
                phys,
                offset,
            } => write!(
                f,
                "{} {phys}: its byte at offset {offset} is a field of a later writer and is not zero",
                chain.noun()
            ),
            Inexpressible::RestoredState { chain, phys } => write!(
                f,
                "{} {phys}: carries state the next kernel wrote (INCOMING, restored or restored_domain): a restored image cannot be handed over",
                chain.noun()
            ),
        }
    }
}

/// Why [`convert`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertError {
    /// The target version cannot express the image; nothing was written.
    Inexpressible(Inexpressible),
    /// The writer refused an object or ran out of pages; the writer holds
    /// the objects before it (a valid image), and the caller decides
    /// whether to [`abort`](Writer::abort).
    Write {
        /// The chain of the object being written.
        chain: Chain,
        /// The source record's physical address.
        phys: PhysAddr,
        /// What the writer said.
        error: WriteError,
    },
    /// The writer already holds objects: conversion starts from an empty
    /// image.
    NotEmpty,
    /// A live device names a domain or IOMMU that is not among the image's
    /// live ones (the reader refuses such an image, so this is a defect in
    /// the image view).
    Unresolved {
        /// The device record's physical address.
        phys: PhysAddr,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Inexpressible(what) => {
                write!(f, "the target version cannot express the image: {what}")
            }
            ConvertError::Write { chain, phys, error } => {
                write!(f, "writing {} {phys}: {error}", chain.noun())
            }
            ConvertError::NotEmpty => f.write_str("the writer already holds objects"),
            ConvertError::Unresolved { phys } => {
                write!(f, "device {phys}: names a domain or IOMMU that is not live")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConvertError {}

/// How many objects [`convert`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// Live IOMMUs.
    pub iommus: usize,
    /// Live domains.
    pub domains: usize,
    /// Live devices.
    pub devices: usize,
}

/// Writes every live object of `image` into `w`, a writer just started in
/// the target version (any version, the image's own included). Refuses an
/// image the target cannot express before writing anything.
pub fn convert<M: Memory + ?Sized, A: PageAlloc, X: DeviceIndex>(
    image: &Image<'_, '_, M>,
    w: &mut Writer<A, X>,
) -> Result<Converted, ConvertError> {
    let c = w.counts();
    if c.iommus != 0 || c.domains != 0 || c.devices != 0 {
        return Err(ConvertError::NotEmpty);
    }
    expressible(image).map_err(ConvertError::Inexpressible)?;
    let mut iommus = BTreeMap::new();
    for u in image.iommus() {
        let fail = failed(Chain::Iommu, u.phys());
        let h = w.preserve_iommu(u.token(), iommu_init(&u)).map_err(fail)?;
        iommus.insert(u.phys(), h);
    }
    let mut domains = BTreeMap::new();
    for d in image.domains() {
        let h = w
            .preserve_domain(domain_init(&d))
            .map_err(failed(Chain::Domain, d.phys()))?;
        domains.insert(d.phys(), h);
    }
    let mut devices = 0usize;
    for d in image.devices() {
        let fail = failed(Chain::Device, d.phys());
        // Every live device's domain and IOMMU are live (the reader
        // checked), so both were written above.
        let (Some(dom), Some(hw)) = (
            domains.get(&d.domain().phys()),
            iommus.get(&d.iommu().phys()),
        ) else {
            return Err(ConvertError::Unresolved { phys: d.phys() });
        };
        let init = DeviceInit {
            pci_domain_nr: d.segment(),
            devid: d.devid(),
            dma_owner_token: d.dma_owner_token(),
            attachment_id: d.attachment_id(),
            payload: device_payload(d.payload()),
        };
        w.preserve_device(init, *dom, *hw).map_err(fail)?;
        devices = devices.saturating_add(1);
    }
    Ok(Converted {
        iommus: iommus.len(),
        domains: domains.len(),
        devices,
    })
}

fn failed(chain: Chain, phys: PhysAddr) -> impl Fn(WriteError) -> ConvertError {
    move |error| ConvertError::Write { chain, phys, error }
}

/// The checks of [`Inexpressible`], in root, IOMMU, domain, device order.
fn expressible<M: Memory + ?Sized>(image: &Image<'_, '_, M>) -> Result<(), Inexpressible> {
    if let Some(f) = image.features()
        && f.compat != 0
    {
        return Err(Inexpressible::CompatFeatures { bits: f.compat });
    }
    if let Some(root) = image.root_v2() {
        let natural = size_of::<IommuFlbV2Ser>();
        let end = usize::try_from(root.root_size.get()).unwrap_or(usize::MAX);
        let page = read_page(image.memory(), image.root_phys(), image.page_size());
        if let Some(offset) = page.and_then(|p| first_nonzero(p, natural, end)) {
            return Err(Inexpressible::RootExtension {
                root_size: root.root_size.get(),
                offset,
            });
        }
    }
    let restored = |chain, phys| Err(Inexpressible::RestoredState { chain, phys });
    for u in image.iommus() {
        extension(image, Chain::Iommu, u.phys())?;
        let intel_restored = matches!(u.payload(), IommuPayload::Intel(p) if p.restored != 0);
        if u.flags() & !IOMMU_SER_FLAG_DELETED != 0 || intel_restored {
            return restored(Chain::Iommu, u.phys());
        }
    }
    for d in image.domains() {
        extension(image, Chain::Domain, d.phys())?;
        let v1_restored = d.v1().is_some_and(|r| r.restored_domain.get() != 0);
        if d.flags() & !IOMMU_SER_FLAG_DELETED != 0 || v1_restored {
            return restored(Chain::Domain, d.phys());
        }
    }
    for d in image.devices() {
        extension(image, Chain::Device, d.phys())?;
        let intel_restored = matches!(d.payload(), DevicePayload::Intel(p) if p.restored != 0);
        if d.flags() & !IOMMU_SER_FLAG_DELETED != 0 || intel_restored {
            return restored(Chain::Device, d.phys());
        }
    }
    Ok(())
}

/// The record at `phys` is refused if its stride's bytes past the
/// record are not all zero.
fn extension<M: Memory + ?Sized>(
    image: &Image<'_, '_, M>,
    chain: Chain,
    phys: PhysAddr,
) -> Result<(), Inexpressible> {
    let ps = image.page_size();
    let size = image.record_size(chain);
    let stride = usize::try_from(image.chain_stride(chain)).unwrap_or(0);
    if stride <= size {
        return Ok(());
    }
    let at = phys.page_offset(ps);
    let page = read_page(image.memory(), phys.page_base(ps), ps);
    let record = page.and_then(|p| p.get(at..at.saturating_add(stride)));
    match record.and_then(|r| first_nonzero(r, size, stride)) {
        Some(offset) => Err(Inexpressible::RecordExtension {
            chain,
            phys,
            offset,
        }),
        None => Ok(()),
    }
}

/// The offset of the first non-zero byte of `bytes[from..to]`.
fn first_nonzero(bytes: &[u8], from: usize, to: usize) -> Option<u64> {
    let tail = bytes.get(from..to.min(bytes.len()))?;
    let k = tail.iter().position(|b| *b != 0)?;
    u64::try_from(from.saturating_add(k)).ok()
}

fn iommu_init(u: &Iommu<'_>) -> IommuPayloadInit {
    let phys = |v: u64| PhysAddr::new(v);
    match u.payload() {
        IommuPayload::Intel(p) => IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: phys(p.phys_addr.get()),
            root_table: phys(p.root_table.get()),
            context_tables_bitmap: p.context_tables_bitmap.map(|w| w.get()),
        }),
        IommuPayload::IntelV2(p) => IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: phys(p.phys_addr.get()),
            root_table: phys(p.root_table.get()),
            context_tables_bitmap: p.context_tables_bitmap.map(|w| w.get()),
        }),
        IommuPayload::Smmuv3(p) => IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
            phys_addr: phys(p.phys_addr.get()),
            strtab_base_cfg: p.strtab_base_cfg.get(),
            l1_strtab_lu_state: p.l1_strtab_lu_state.get(),
            l2_strtab_lu_states_phys: phys(p.l2_strtab_lu_states_phys.get()),
        }),
    }
}

fn domain_init(d: &Domain<'_>) -> DomainInit {
    DomainInit {
        top_table_phys: d.top_table_phys(),
        top_level: d.top_level(),
        vasz: d.vasz(),
        sign_extend: d.sign_extend(),
    }
}

fn device_payload(p: DevicePayload<'_>) -> DevicePayloadInit {
    match p {
        DevicePayload::Intel(p) => DevicePayloadInit::Intel(IntelDeviceInit {
            pasid_table: PhysAddr::new(p.pasid_table.get()),
            max_pasid: p.max_pasid.get(),
        }),
        DevicePayload::IntelV2(p) => DevicePayloadInit::Intel(IntelDeviceInit {
            pasid_table: PhysAddr::new(p.pasid_table.get()),
            max_pasid: p.max_pasid.get(),
        }),
        DevicePayload::Smmuv3(p) => DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
            l1_cdtab_lu_state: p.l1_cdtab_lu_state.get(),
            num_l2_cdtables: p.num_l2_cdtables.get(),
            l2_cdtab_lu_states_phys: PhysAddr::new(p.l2_cdtab_lu_states_phys.get()),
        }),
    }
}
