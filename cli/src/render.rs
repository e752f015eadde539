//! Printing a validated image: the `inspect` listing (text and JSON) and
//! the `validate` summary line.
//!
//! Records are numbered by their slot in their chain (deleted slots count),
//! so `#3` names the same record with and without `--all`. Without `--all`
//! only live records are listed; deleted ones are counted.

use std::collections::HashMap;
use std::fmt::Write as _;

use iommu_flb_abi::abi::v1::{
    IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING, IommuDeviceSer, IommuDomainSer, IommuHwSer,
    IommuTypeSer,
};
use iommu_flb_abi::error::Chain;
use iommu_flb_abi::reader::{AnyDevice, AnyIommu, DevicePayload, Domain, Image, IommuPayload};
use iommu_flb_abi::{Memory, PhysAddr};
use serde_json::{Map, Value, json};

/// The records of an image, each with its slot number, in chain order.
pub struct Records<'m> {
    version: u64,
    root_phys: PhysAddr,
    /// Pages of the root and of the IOMMU, domain and device chains.
    pages: [usize; 4],
    iommus: Vec<(usize, AnyIommu<'m>)>,
    domains: Vec<(usize, Domain<'m>)>,
    devices: Vec<(usize, AnyDevice<'m>)>,
    /// Live records of each kind: IOMMUs, domains, devices.
    live: [usize; 3],
    /// Deleted records of each kind.
    deleted: [usize; 3],
    /// Whether deleted records are in the lists.
    all: bool,
}

/// Which records [`Records`] keeps in its lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// None: only the counts (for the summary line).
    None,
    /// The live ones.
    Live,
    /// All of them.
    All,
}

/// Numbers the records of one chain, counts live and deleted ones into
/// `live` and `deleted`, and keeps those `kept` says.
fn keep<T>(
    items: impl Iterator<Item = T>,
    is_deleted: impl Fn(&T) -> bool,
    kept: Kept,
    live: &mut usize,
    deleted: &mut usize,
) -> Vec<(usize, T)> {
    let mut list = Vec::new();
    for (slot, r) in items.enumerate() {
        let d = is_deleted(&r);
        let n = if d { &mut *deleted } else { &mut *live };
        *n = n.saturating_add(1);
        if kept == Kept::All || (kept == Kept::Live && !d) {
            list.push((slot, r));
        }
    }
    list
}

impl<'m> Records<'m> {
    /// Collects the records of `image`: the live ones, or all with `all`.
    pub fn collect<M: Memory + ?Sized>(image: &Image<'m, '_, M>, all: bool) -> Self {
        Self::with(image, if all { Kept::All } else { Kept::Live })
    }

    /// Counts the records of `image` and keeps none of them: enough for
    /// [`summary`], in memory that does not grow with the image.
    pub fn count<M: Memory + ?Sized>(image: &Image<'m, '_, M>) -> Self {
        Self::with(image, Kept::None)
    }

    fn with<M: Memory + ?Sized>(image: &Image<'m, '_, M>, kept: Kept) -> Self {
        let (mut live, mut deleted) = ([0usize; 3], [0usize; 3]);
        let ([li, ld, lv], [di, dd, dv]) = (&mut live, &mut deleted);
        let iommus = keep(image.all_iommus(), AnyIommu::is_deleted, kept, li, di);
        let domains = keep(image.all_domains(), Domain::is_deleted, kept, ld, dd);
        let devices = keep(image.all_devices(), AnyDevice::is_deleted, kept, lv, dv);
        Records {
            version: image.version(),
            root_phys: image.root_phys(),
            pages: [Chain::Root, Chain::Iommu, Chain::Domain, Chain::Device]
                .map(|c| image.chain_pages(c)),
            iommus,
            domains,
            devices,
            live,
            deleted,
            all: kept == Kept::All,
        }
    }
}

/// `validate`'s one line.
pub fn summary(r: &Records<'_>) -> String {
    let [iommus, domains, devices] = r.live;
    let deleted = r.deleted.iter().fold(0usize, |a, b| a.saturating_add(*b));
    let pages = r.pages.iter().fold(0usize, |a, b| a.saturating_add(*b));
    format!(
        "valid: version {}, root {}, {iommus} IOMMUs, {domains} domains, {devices} devices \
         live, {deleted} deleted records, {pages} pages",
        r.version, r.root_phys
    )
}

fn flags_text(flags: u32) -> String {
    let mut names = Vec::new();
    if flags & IOMMU_SER_FLAG_DELETED != 0 {
        names.push("DELETED");
    }
    if flags & IOMMU_SER_FLAG_INCOMING != 0 {
        names.push("INCOMING");
    }
    if names.is_empty() {
        format!("{flags:#x}")
    } else {
        format!("{flags:#x} ({})", names.join("|"))
    }
}

fn type_name(raw: u64) -> &'static str {
    match IommuTypeSer::from_wire(raw) {
        Some(IommuTypeSer::IommuIntel) => "intel",
        Some(IommuTypeSer::IommuArmSmmuv3) => "smmuv3",
        Some(IommuTypeSer::IommuInvalid) => "invalid",
        None => "unknown",
    }
}

/// `segment:bus:device.function` of a device.
fn bdf(segment: u32, devid: u32) -> String {
    format!(
        "{segment:04x}:{:02x}:{:02x}.{}",
        (devid >> 8) & 0xff,
        (devid >> 3) & 0x1f,
        devid & 7
    )
}

/// The `inspect` text listing.
pub fn text(r: &Records<'_>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored.
    let [iommus, domains, devices] = r.live;
    let [root, pi, pd, pv] = r.pages;
    let _ = writeln!(
        out,
        "IOMMU FLB handover image, version {}, root {}",
        r.version, r.root_phys
    );
    let _ = writeln!(
        out,
        "pages: root {root}, iommu chain {pi}, domain chain {pd}, device chain {pv}"
    );
    let _ = writeln!(
        out,
        "live: {iommus} IOMMUs, {domains} domains, {devices} devices; deleted: {} IOMMUs, \
         {} domains, {} devices{}",
        r.deleted[0],
        r.deleted[1],
        r.deleted[2],
        if r.all { " (listed)" } else { "" }
    );

    let iommu_slot: HashMap<PhysAddr, usize> =
        r.iommus.iter().map(|(i, u)| (u.phys(), *i)).collect();
    let domain_slot: HashMap<PhysAddr, usize> =
        r.domains.iter().map(|(i, d)| (d.phys(), *i)).collect();

    let _ = writeln!(out, "\nIOMMUs:");
    for (slot, u) in &r.iommus {
        iommu_text(&mut out, *slot, u);
    }
    let _ = writeln!(out, "\nDomains:");
    for (slot, d) in &r.domains {
        domain_text(&mut out, *slot, d.phys(), d.record());
    }
    let _ = writeln!(out, "\nDevices:");
    for (slot, d) in &r.devices {
        device_text(&mut out, *slot, d, &iommu_slot, &domain_slot);
    }
    out
}

fn iommu_text(out: &mut String, slot: usize, u: &AnyIommu<'_>) {
    let rec: &IommuHwSer = u.record();
    let _ = writeln!(
        out,
        "  #{slot:<3} {:<6} token {:#x}  ref_count {}  flags {}  phys {}",
        type_name(rec.r#type.get()),
        rec.token.get(),
        rec.hdr.ref_count.get(),
        flags_text(rec.hdr.flags.get()),
        u.phys()
    );
    if let Some((_, fields)) = iommu_payload(u) {
        payload_text(out, &fields);
    }
}

fn domain_text(out: &mut String, slot: usize, phys: PhysAddr, rec: &IommuDomainSer) {
    let _ = writeln!(
        out,
        "  #{slot:<3} top_table_phys {:#x}  top_level {}  vasz {}  sign_extend {}  \
         ref_count {}  flags {}  phys {}",
        rec.top_table_phys.get(),
        rec.top_level.get(),
        rec.vasz.get(),
        rec.sign_extend,
        rec.hdr.ref_count.get(),
        flags_text(rec.hdr.flags.get()),
        phys
    );
    if rec.restored_domain.get() != 0 {
        let _ = writeln!(
            out,
            "        restored_domain {:#x}",
            rec.restored_domain.get()
        );
    }
}

fn device_text(
    out: &mut String,
    slot: usize,
    d: &AnyDevice<'_>,
    iommu_slot: &HashMap<PhysAddr, usize>,
    domain_slot: &HashMap<PhysAddr, usize>,
) {
    let rec: &IommuDeviceSer = d.record();
    let map = &rec.domain_iommu_ser;
    let domain = match domain_slot.get(&PhysAddr::new(map.domain_phys.get())) {
        Some(i) => format!("domain #{i}"),
        None => format!("domain ? ({:#x})", map.domain_phys.get()),
    };
    let iommu = match (
        d.iommu(),
        iommu_slot.get(&PhysAddr::new(map.iommu_phys.get())),
    ) {
        (Some(u), Some(i)) => format!(
            "iommu #{i} {} {:#x}",
            type_name(u.iommu_type().wire()),
            u.token()
        ),
        _ => format!("iommu ? ({:#x})", map.iommu_phys.get()),
    };
    let _ = writeln!(
        out,
        "  #{slot:<3} {}  -> {domain} -> {iommu}  ref_count {}  flags {}  phys {}",
        bdf(rec.pci_domain_nr.get(), rec.devid.get()),
        rec.hdr.ref_count.get(),
        flags_text(rec.hdr.flags.get()),
        d.phys()
    );
    let _ = writeln!(
        out,
        "        devid {:#x}  pci_domain_nr {}  dma_owner_token {:#x}  attachment_id {}",
        rec.devid.get(),
        rec.pci_domain_nr.get(),
        rec.dma_owner_token.get(),
        map.attachment_id.get()
    );
    if let Some((_, fields)) = device_payload(d) {
        payload_text(out, &fields);
    }
}

/// A vendor payload field, and how the text listing prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    /// An address or register: `0x...`.
    Hex(u64),
    /// A count or small number: decimal.
    Dec(u64),
    /// `context_tables_bitmap`: words in hex, on a line of their own.
    HexWords(Vec<u64>),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Hex(n) => format!("{n:#x}"),
            Field::Dec(n) => n.to_string(),
            Field::HexWords(w) => w
                .iter()
                .map(|n| format!("{n:#x}"))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn json(&self) -> Value {
        match self {
            Field::Hex(n) | Field::Dec(n) => json!(n),
            Field::HexWords(w) => json!(w),
        }
    }
}

/// A vendor payload: the kernel's union member name and its fields in the
/// kernel's order, padding left out. Validation checks only the domain's
/// padding, not the vendor payloads', so non-zero vendor padding is
/// accepted and not shown here.
type Payload = (&'static str, Vec<(&'static str, Field)>);

fn iommu_payload(u: &AnyIommu<'_>) -> Option<Payload> {
    Some(match u.iommu()?.payload() {
        IommuPayload::Intel(p) => (
            "intel",
            vec![
                ("restored", Field::Dec(p.restored.into())),
                ("phys_addr", Field::Hex(p.phys_addr.get())),
                ("root_table", Field::Hex(p.root_table.get())),
                (
                    "context_tables_bitmap",
                    Field::HexWords(p.context_tables_bitmap.iter().map(|w| w.get()).collect()),
                ),
            ],
        ),
        IommuPayload::Smmuv3(p) => (
            "smmuv3",
            vec![
                ("phys_addr", Field::Hex(p.phys_addr.get())),
                ("strtab_base_cfg", Field::Hex(p.strtab_base_cfg.get())),
                ("l1_strtab_lu_state", Field::Hex(p.l1_strtab_lu_state.get())),
                (
                    "l2_strtab_lu_states_phys",
                    Field::Hex(p.l2_strtab_lu_states_phys.get()),
                ),
            ],
        ),
    })
}

fn device_payload(d: &AnyDevice<'_>) -> Option<Payload> {
    Some(match d.payload()? {
        DevicePayload::Intel(p) => (
            "intel",
            vec![
                ("restored", Field::Dec(p.restored.into())),
                ("pasid_table", Field::Hex(p.pasid_table.get())),
                ("max_pasid", Field::Dec(p.max_pasid.get())),
            ],
        ),
        DevicePayload::Smmuv3(p) => (
            "smmuv3",
            vec![
                ("l1_cdtab_lu_state", Field::Hex(p.l1_cdtab_lu_state.get())),
                (
                    "num_l2_cdtables",
                    Field::Dec(p.num_l2_cdtables.get().into()),
                ),
                (
                    "l2_cdtab_lu_states_phys",
                    Field::Hex(p.l2_cdtab_lu_states_phys.get()),
                ),
            ],
        ),
    })
}

/// Payload fields, indented, at most three to a line; word lists on a line
/// of their own.
fn payload_text(out: &mut String, fields: &[(&'static str, Field)]) {
    let (lists, scalars): (Vec<_>, Vec<_>) = fields
        .iter()
        .partition(|(_, f)| matches!(f, Field::HexWords(_)));
    for line in scalars.chunks(3).chain(lists.chunks(1)) {
        let text: Vec<String> = line
            .iter()
            .map(|(name, f)| format!("{name} {}", f.text()))
            .collect();
        let _ = writeln!(out, "        {}", text.join("  "));
    }
}

fn payload_json(m: &mut Map<String, Value>, payload: Option<Payload>) {
    if let Some((member, fields)) = payload {
        let inner: Map<String, Value> = fields
            .into_iter()
            .map(|(name, f)| (name.to_owned(), f.json()))
            .collect();
        m.insert(member.to_owned(), Value::Object(inner));
    }
}

/// The `inspect --json` object, as compact JSON text: `version`,
/// `root_phys`, `iommus`, `domains`, `devices`; every record with `phys`
/// and its fields under the kernel's names, numbers as JSON integers. The
/// vendor payload is an object under the kernel's union member name
/// (`intel` or `smmuv3`), absent for a deleted record whose IOMMU type is
/// unknown.
///
/// Written one record at a time, so the listing costs its text and one
/// record's `Value`, not a `Value` tree of the whole image (which took
/// some 5 KiB per record).
pub fn json(r: &Records<'_>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored.
    let _ = write!(
        out,
        "{{\"version\":{},\"root_phys\":{}",
        r.version,
        r.root_phys.get()
    );
    json_list(
        &mut out,
        "iommus",
        r.iommus.iter().map(|(_, u)| iommu_json(u)),
    );
    let domains = r.domains.iter();
    json_list(
        &mut out,
        "domains",
        domains.map(|(_, d)| domain_json(d.phys(), d.record())),
    );
    json_list(
        &mut out,
        "devices",
        r.devices.iter().map(|(_, d)| device_json(d)),
    );
    out.push('}');
    out
}

/// `,"key":[v,v,...]` with each value's compact JSON text.
fn json_list(out: &mut String, key: &str, values: impl Iterator<Item = Value>) {
    let _ = write!(out, ",\"{key}\":[");
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v}");
    }
    out.push(']');
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn iommu_json(u: &AnyIommu<'_>) -> Value {
    let rec = u.record();
    let mut m = object(json!({
        "phys": u.phys().get(),
        "ref_count": rec.hdr.ref_count.get(),
        "flags": rec.hdr.flags.get(),
        "token": rec.token.get(),
        "type": rec.r#type.get(),
    }));
    payload_json(&mut m, iommu_payload(u));
    Value::Object(m)
}

fn domain_json(phys: PhysAddr, rec: &IommuDomainSer) -> Value {
    json!({
        "phys": phys.get(),
        "ref_count": rec.hdr.ref_count.get(),
        "flags": rec.hdr.flags.get(),
        "top_table_phys": rec.top_table_phys.get(),
        "top_level": rec.top_level.get(),
        "vasz": rec.vasz.get(),
        "sign_extend": rec.sign_extend,
        "restored_domain": rec.restored_domain.get(),
    })
}

fn device_json(d: &AnyDevice<'_>) -> Value {
    let rec = d.record();
    let map = &rec.domain_iommu_ser;
    let mut m = object(json!({
        "phys": d.phys().get(),
        "ref_count": rec.hdr.ref_count.get(),
        "flags": rec.hdr.flags.get(),
        "devid": rec.devid.get(),
        "pci_domain_nr": rec.pci_domain_nr.get(),
        "dma_owner_token": rec.dma_owner_token.get(),
        "attachment_id": map.attachment_id.get(),
        "domain_phys": map.domain_phys.get(),
        "iommu_phys": map.iommu_phys.get(),
    }));
    payload_json(&mut m, device_payload(d));
    Value::Object(m)
}
