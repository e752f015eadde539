//! Printing a validated image: the `inspect` listing (text and JSON) and
//! the `validate` summary line.
//!
//! Records are numbered by their slot in their chain (deleted slots count),
//! so `#3` names the same record with and without `--all`. Without `--all`
//! only live records are listed; deleted ones are counted.

use std::collections::HashMap;
use std::fmt::Write as _;

use iommu_flb_abi::abi::v1::{IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING, IommuTypeSer};
use iommu_flb_abi::error::Chain;
use iommu_flb_abi::reader::{
    AnyDevice, AnyIommu, DevicePayload, Domain, Features, Image, IommuPayload,
};
use iommu_flb_abi::{Memory, PhysAddr};
use serde_json::{Map, Value, json};

/// The records of an image, each with its slot number, in chain order.
pub struct Records<'m> {
    version: u64,
    /// The format version the image was read as (1 or 2).
    format: u64,
    features: Option<Features>,
    generation: Option<u64>,
    root_phys: PhysAddr,
    /// Every page: address, chain, index in the chain.
    page_list: Vec<(PhysAddr, Option<Chain>, u64)>,
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
            format: image.format(),
            features: image.features(),
            generation: image.generation(),
            root_phys: image.root_phys(),
            page_list: if kept == Kept::None {
                Vec::new()
            } else {
                image.chain_pages_iter().collect()
            },
            pages: [
                None,
                Some(Chain::Iommu),
                Some(Chain::Domain),
                Some(Chain::Device),
            ]
            .map(|c| c.map_or(1, |c| image.chain_pages(c))),
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
        "valid: version {}{}, root {}, {iommus} IOMMUs, {domains} domains, {devices} devices \
         live, {deleted} deleted records, {pages} pages",
        r.version,
        features_text(r),
        r.root_phys
    )
}

/// `" (read as 2), features compat 0x0 incompat 0x0"` for a version-2
/// image; empty for version 1.
fn features_text(r: &Records<'_>) -> String {
    let mut t = String::new();
    if r.format != r.version {
        let _ = write!(t, " (read as {})", r.format);
    }
    if let Some(f) = r.features {
        let _ = write!(
            t,
            ", features compat {:#x} incompat {:#x}",
            f.compat, f.incompat
        );
    }
    t
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
        "IOMMU FLB handover image, version {}{}, root {}",
        r.version,
        features_text(r),
        r.root_phys
    );
    if let Some(g) = r.generation {
        let _ = writeln!(out, "generation {g:#x}");
    }
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
        domain_text(&mut out, *slot, d);
    }
    let _ = writeln!(out, "\nDevices:");
    for (slot, d) in &r.devices {
        device_text(&mut out, *slot, d, &iommu_slot, &domain_slot);
    }
    out
}

/// The stored `ref_count` of any IOMMU record.
fn iommu_ref_count(u: &AnyIommu<'_>) -> u32 {
    u.v1()
        .map(|r| r.hdr.ref_count.get())
        .or_else(|| u.v2().map(|r| r.hdr.ref_count.get()))
        .unwrap_or(0)
}

fn iommu_text(out: &mut String, slot: usize, u: &AnyIommu<'_>) {
    let _ = writeln!(
        out,
        "  #{slot:<3} {:<6} token {:#x}  ref_count {}  flags {}  phys {}",
        type_name(u.raw_type()),
        u.token(),
        iommu_ref_count(u),
        flags_text(u.flags()),
        u.phys()
    );
    if let Some((_, fields)) = iommu_payload(u) {
        payload_text(out, &fields);
    }
}

fn domain_text(out: &mut String, slot: usize, d: &Domain<'_>) {
    let _ = writeln!(
        out,
        "  #{slot:<3} top_table_phys {:#x}  top_level {}  vasz {}  sign_extend {}  \
         ref_count {}  flags {}  phys {}",
        d.top_table_phys().get(),
        d.top_level(),
        d.vasz(),
        d.sign_extend(),
        d.ref_count(),
        flags_text(d.flags()),
        d.phys()
    );
    let restored = d.v1().map_or(0, |r| r.restored_domain.get());
    if restored != 0 {
        let _ = writeln!(out, "        restored_domain {restored:#x}");
    }
}

/// A device's stored references to its domain and IOMMU: the field names
/// and values of the image's version (`domain_phys`/`iommu_phys` or
/// `domain_index`/`iommu_index`).
fn device_refs(d: &AnyDevice<'_>) -> [(&'static str, u64); 2] {
    if let Some(r) = d.v2() {
        return [
            ("domain_index", r.domain_index.get()),
            ("iommu_index", r.iommu_index.get()),
        ];
    }
    let (dom, hw) = d.v1().map_or((0, 0), |r| {
        let m = &r.domain_iommu_ser;
        (m.domain_phys.get(), m.iommu_phys.get())
    });
    [("domain_phys", dom), ("iommu_phys", hw)]
}

fn device_text(
    out: &mut String,
    slot: usize,
    d: &AnyDevice<'_>,
    iommu_slot: &HashMap<PhysAddr, usize>,
    domain_slot: &HashMap<PhysAddr, usize>,
) {
    let [(_, dom_raw), (_, hw_raw)] = device_refs(d);
    let domain = match d.domain().and_then(|x| domain_slot.get(&x.phys())) {
        Some(i) => format!("domain #{i}"),
        None => format!("domain ? ({dom_raw:#x})"),
    };
    let iommu = match d
        .iommu()
        .and_then(|u| Some((u, iommu_slot.get(&u.phys())?)))
    {
        Some((u, i)) => format!(
            "iommu #{i} {} {:#x}",
            type_name(u.iommu_type().wire()),
            u.token()
        ),
        None => format!("iommu ? ({hw_raw:#x})"),
    };
    let _ = writeln!(
        out,
        "  #{slot:<3} {}  -> {domain} -> {iommu}  ref_count {}  flags {}  phys {}",
        bdf(d.segment(), d.devid()),
        d.ref_count(),
        flags_text(d.flags()),
        d.phys()
    );
    let _ = writeln!(
        out,
        "        devid {:#x}  pci_domain_nr {}  dma_owner_token {:#x}  attachment_id {}",
        d.devid(),
        d.segment(),
        d.dma_owner_token(),
        d.attachment_id()
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
        IommuPayload::IntelV2(p) => (
            "intel",
            vec![
                ("phys_addr", Field::Hex(p.phys_addr.get())),
                ("root_table", Field::Hex(p.root_table.get())),
                (
                    "context_tables_bitmap",
                    Field::HexWords(p.context_tables_bitmap.iter().map(|w| w.get()).collect()),
                ),
            ],
        ),
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
        DevicePayload::IntelV2(p) => (
            "intel",
            vec![
                ("pasid_table", Field::Hex(p.pasid_table.get())),
                ("max_pasid", Field::Dec(p.max_pasid.get())),
            ],
        ),
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
/// `root_phys`, for version 2 `generation` and `features` (`compat`,
/// `incompat`), `pages` (every page as `phys`, `chain` and `index`, in
/// restore order), `iommus`, `domains`, `devices`; every record with `phys`
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
    if let (Some(f), Some(g)) = (r.features, r.generation) {
        let _ = write!(
            out,
            ",\"generation\":{g},\"features\":{}",
            json!({"compat": f.compat, "incompat": f.incompat})
        );
    }
    json_list(
        &mut out,
        "pages",
        r.page_list.iter().map(|(phys, chain, index)| {
            json!({"phys": phys.get(), "chain": Chain::name_of(*chain), "index": index})
        }),
    );
    json_list(
        &mut out,
        "iommus",
        r.iommus.iter().map(|(_, u)| iommu_json(u)),
    );
    let domains = r.domains.iter();
    json_list(&mut out, "domains", domains.map(|(_, d)| domain_json(d)));
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
    let mut m = object(json!({
        "phys": u.phys().get(),
        "ref_count": iommu_ref_count(u),
        "flags": u.flags(),
        "token": u.token(),
        "type": u.raw_type(),
    }));
    payload_json(&mut m, iommu_payload(u));
    Value::Object(m)
}

fn domain_json(d: &Domain<'_>) -> Value {
    let mut m = object(json!({
        "phys": d.phys().get(),
        "ref_count": d.ref_count(),
        "flags": d.flags(),
        "top_table_phys": d.top_table_phys().get(),
        "top_level": d.top_level(),
        "vasz": d.vasz(),
        "sign_extend": d.sign_extend(),
    }));
    if let Some(r) = d.v1() {
        m.insert("restored_domain".into(), json!(r.restored_domain.get()));
    }
    Value::Object(m)
}

fn device_json(d: &AnyDevice<'_>) -> Value {
    let mut m = object(json!({
        "phys": d.phys().get(),
        "ref_count": d.ref_count(),
        "flags": d.flags(),
        "devid": d.devid(),
        "pci_domain_nr": d.segment(),
        "dma_owner_token": d.dma_owner_token(),
        "attachment_id": d.attachment_id(),
    }));
    for (name, value) in device_refs(d) {
        m.insert(name.into(), json!(value));
    }
    payload_json(&mut m, device_payload(d));
    Value::Object(m)
}
