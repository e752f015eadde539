// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Kernel 2: validates the image kernel 1 handed over, restores every page,
 * walks and looks up every object against the manifest, then validates
 * corrupted copies in its own memory; then the same for the version-2
 * image of the same objects, with the kernel's crc32_le() as the CRC
 * callback. One of the two files that call the API.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bsearch.h>
#include <linux/errno.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/timekeeping.h>
#include <linux/vmalloc.h>
#include <asm/unaligned.h>

#include "flb_test.h"

#define PAGE PAGE_SIZE

/*
 * What the reader's page callback sees: the handed-over region itself, or
 * a copy of it in this kernel's memory at the same physical addresses.
 */
struct flb_view {
	const u8 *base;
	unsigned long crc_calls;	/* of flb_reader_crc32() */
};

/*
 * struct iommu_flb_mem.page: a page-aligned address inside the reserved
 * region, and nothing else, is mapped (the region stands for the pages KHO
 * preserved; the image is not trusted to stay inside it).
 */
static const u8 *flb_reader_page(void *ctx, u64 phys)
{
	const struct flb_view *v = ctx;

	if (phys < flb_region_phys || phys - flb_region_phys >= FLB_REGION_SIZE ||
	    phys & (PAGE - 1))
		return NULL;
	return v->base + (phys - flb_region_phys);
}

/* struct iommu_flb_mem.crc32: the kernel's CRC, counted. */
static u32 flb_reader_crc32(void *ctx, u32 crc, const void *buf, size_t len)
{
	struct flb_view *v = ctx;

	v->crc_calls++;
	return flb_crc32(crc, buf, len);
}

/* Records the pages iommu_flb_restore() hands over, in order. */
struct flb_restored {
	u64 pages[FLB_MAX_PAGES];
	u32 n;
	u32 fail_at;	/* fail the call with this index (-EIO), or U32_MAX */
};

static int flb_restore_page(void *ctx, u64 phys)
{
	struct flb_restored *r = ctx;

	if (r->n == r->fail_at)
		return -EIO;
	if (r->n >= FLB_MAX_PAGES)
		return -ENOSPC;
	r->pages[r->n++] = phys;
	return 0;
}

static const struct flb_manifest *flb_m;

static bool flb_same_iommu(const struct iommu_hw_ser *hw, u64 phys, const struct flb_m_iommu *u)
{
	size_t vsize = u->type == IOMMU_INTEL ? sizeof(hw->vendor.intel) :
		sizeof(hw->vendor.smmuv3);

	return phys == u->phys && hw->token == u->token && hw->type == u->type &&
		hw->hdr.ref_count == u->live_devices && hw->hdr.flags == 0 &&
		!memcmp(&hw->vendor, &u->vendor, vsize);
}

static bool flb_same_domain(const struct iommu_domain_ser *d, u64 phys,
			    const struct flb_m_domain *u)
{
	return phys == u->phys && d->top_table_phys == u->top_table_phys &&
		d->top_level == u->top_level && d->vasz == u->vasz &&
		d->sign_extend == u->sign_extend && d->hdr.ref_count == 1 && d->hdr.flags == 0;
}

static bool flb_same_device(const struct iommu_device_ser *d, u64 phys,
			    const struct flb_m_device *u)
{
	const struct flb_m_iommu *iommu = &flb_m->iommus[u->iommu];
	size_t vsize = iommu->type == IOMMU_INTEL ? sizeof(d->vendor.intel) :
		sizeof(d->vendor.smmuv3);

	return u->live && phys == u->phys && d->pci_domain_nr == u->segment &&
		d->devid == u->devid && d->dma_owner_token == u->token &&
		d->domain_iommu_ser.attachment_id == u->attachment_id &&
		d->domain_iommu_ser.domain_phys == flb_m->domains[u->domain].phys &&
		d->domain_iommu_ser.iommu_phys == iommu->phys &&
		d->hdr.ref_count == 1 && d->hdr.flags == 0 &&
		!memcmp(&d->vendor, &u->vendor, vsize);
}

static const struct flb_m_device *flb_manifest_device(u32 segment, u32 devid)
{
	struct flb_m_device key = { .segment = segment, .devid = devid };

	return bsearch(&key, flb_m->devices, flb_m->nr_devices, sizeof(key),
		       flb_manifest_key_cmp);
}

/* Validation, timed, with the scratch iommu_flb_scratch_size() asks for. */
static int flb_validate(const struct iommu_flb_mem *mem, u64 root, u32 mode, void **scratch,
			const struct iommu_flb_image **img, struct iommu_flb_error *err,
			u64 *ns)
{
	size_t size;
	u64 t0;
	int ret;

	*scratch = NULL;
	*img = NULL;
	ret = FLB_CALL(iommu_flb_scratch_size, iommu_flb_scratch_size(mem, root, &size, err));
	if (ret)
		return ret;
	*scratch = kvmalloc(size, GFP_KERNEL);
	if (!*scratch)
		return -ENOMEM;
	t0 = ktime_get_ns();
	ret = FLB_CALL(iommu_flb_validate,
		       iommu_flb_validate(mem, root, mode, *scratch, size, img, err));
	if (ns)
		*ns = ktime_get_ns() - t0;
	return ret;
}

static void flb_check_restore(const struct iommu_flb_image *img,
			      const struct iommu_flb_image_info *info, u64 root)
{
	struct flb_restored *r = kzalloc(sizeof(*r), GFP_KERNEL);
	struct iommu_flb_restore_status st;
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	u64 phys;
	u32 i, j, in_order = 0, in_manifest = 0, dup = 0;
	int ret;

	if (!r) {
		flb_check(false, "kzalloc for the restore record");
		return;
	}
	r->fail_at = U32_MAX;
	ret = FLB_CALL(iommu_flb_restore, iommu_flb_restore(img, flb_restore_page, r, &st));
	for (i = 0; i < r->n; i++) {
		for (j = 0; j < i; j++)
			dup += r->pages[j] == r->pages[i];
		for (j = 0; j < flb_m->nr_pages; j++)
			in_manifest += flb_m->pages[j] == r->pages[i];
		if (FLB_CALL(iommu_flb_next_page, iommu_flb_next_page(img, &cur, &phys)) == 1 &&
		    phys == r->pages[i])
			in_order++;
	}
	flb_check(!ret && st.restored == r->n && r->n == info->pages && r->n == flb_m->nr_pages &&
		  r->pages[0] == (root & ~(u64)(PAGE - 1)) && !dup &&
		  in_manifest == flb_m->nr_pages && in_order == r->n &&
		  FLB_CALL(iommu_flb_next_page, iommu_flb_next_page(img, &cur, &phys)) == 0,
		  "restored every page once through the callback: %u pages (%u in kernel 1's list, %u in iommu_flb_next_page() order, %u twice), root page first",
		  r->n, in_manifest, in_order, dup);

	/* A callback failing at the fifth page stops the walk there. */
	memset(r, 0, sizeof(*r));
	r->fail_at = 4;
	ret = FLB_CALL(iommu_flb_restore, iommu_flb_restore(img, flb_restore_page, r, &st));
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	for (i = 0; i < 5; i++)
		FLB_CALL(iommu_flb_next_page, iommu_flb_next_page(img, &cur, &phys));
	flb_check(ret == -EIO && st.ret == -EIO && st.restored == 4 && st.failed_phys == phys,
		  "restore stops at a failing page: %d, %llu restored before 0x%llx", ret,
		  st.restored, st.failed_phys);
	kfree(r);
}

static void flb_check_walks(const struct iommu_flb_image *img)
{
	struct iommu_flb_cursor cur;
	struct iommu_flb_iommu_ref iref, iref2;
	struct iommu_flb_domain_ref dref;
	struct iommu_flb_device_ref vref, vref2;
	const struct flb_m_device *v;
	u32 n, bad, i, j;
	int ret;

	n = bad = 0;
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	while ((ret = FLB_CALL(iommu_flb_next_iommu, iommu_flb_next_iommu(img, &cur, &iref))) > 0) {
		for (j = 0; j < flb_m->nr_iommus; j++)
			if (flb_m->iommus[j].phys == iref.phys)
				break;
		bad += j == flb_m->nr_iommus || !flb_m->iommus[j].live_devices ||
			!flb_same_iommu(iref.ser, iref.phys, &flb_m->iommus[j]);
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_iommus,
		  "walk: %u live IOMMUs, as the manifest (%u), %u differ", n, flb_m->live_iommus,
		  bad);

	n = bad = 0;
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	while ((ret = FLB_CALL(iommu_flb_next_domain,
			       iommu_flb_next_domain(img, &cur, &dref))) > 0) {
		for (j = 0; j < flb_m->nr_domains; j++)
			if (flb_m->domains[j].phys == dref.phys)
				break;
		bad += j == flb_m->nr_domains || !flb_m->domains[j].live ||
			!flb_same_domain(dref.ser, dref.phys, &flb_m->domains[j]);
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_domains,
		  "walk: %u live domains, as the manifest (%u), %u differ", n, flb_m->live_domains,
		  bad);

	/* Each device with its resolved domain and IOMMU. */
	n = bad = 0;
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	while ((ret = FLB_CALL(iommu_flb_next_device,
			       iommu_flb_next_device(img, &cur, &vref))) > 0) {
		v = flb_manifest_device(vref.ser->pci_domain_nr, vref.ser->devid);
		if (!v || !flb_same_device(vref.ser, vref.phys, v)) {
			bad++;
		} else if (FLB_CALL(iommu_flb_device_domain,
				    iommu_flb_device_domain(img, &vref, &dref)) ||
			   !flb_same_domain(dref.ser, dref.phys, &flb_m->domains[v->domain]) ||
			   FLB_CALL(iommu_flb_device_iommu,
				    iommu_flb_device_iommu(img, &vref, &iref)) ||
			   !flb_same_iommu(iref.ser, iref.phys, &flb_m->iommus[v->iommu])) {
			bad++;
		}
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_devices,
		  "walk: %u live devices with their domain and IOMMU resolved, as the manifest (%u), %u differ",
		  n, flb_m->live_devices, bad);
	/* The header's loop macros walk the same records. */
	i = 0;
	iommu_flb_for_each_device(img, cur, vref, ret)
		i += vref.phys == flb_manifest_device(vref.ser->pci_domain_nr,
						      vref.ser->devid)->phys;
	j = 0;
	iommu_flb_for_each_iommu(img, cur, iref, ret)
		j++;
	flb_check(!ret && i == n && j == flb_m->live_iommus,
		  "iommu_flb_for_each_device/iommu: %u devices, %u IOMMUs", i, j);

	/* Every device of the manifest looked up: live ones found, the others not. */
	n = bad = 0;
	for (i = 0; i < flb_m->nr_devices; i++) {
		v = &flb_m->devices[i];
		ret = FLB_CALL(iommu_flb_find_device,
			       iommu_flb_find_device(img, v->segment, v->devid, &vref2));
		if (v->live)
			bad += ret || !flb_same_device(vref2.ser, vref2.phys, v);
		else
			bad += ret != -ENOENT || vref2.ser;
		n++;
	}
	ret = FLB_CALL(iommu_flb_find_device, iommu_flb_find_device(img, 7, 0xffff, &vref2));
	flb_check(!bad && ret == -ENOENT,
		  "lookup: %u devices by (segment, devid): %u live found equal, %u unpreserved -ENOENT, %u wrong; a never-preserved one -ENOENT",
		  n, flb_m->live_devices, n - flb_m->live_devices, bad);

	n = bad = 0;
	for (i = 0; i < flb_m->nr_iommus; i++) {
		const struct flb_m_iommu *u = &flb_m->iommus[i];

		ret = FLB_CALL(iommu_flb_find_iommu,
			       iommu_flb_find_iommu(img, u->token, u->type, &iref2));
		if (u->live_devices)
			bad += ret || !flb_same_iommu(iref2.ser, iref2.phys, u);
		else
			bad += ret != -ENOENT;
		n++;
	}
	ret = FLB_CALL(iommu_flb_find_iommu,
		       iommu_flb_find_iommu(img, flb_m->iommus[0].token, IOMMU_ARM_SMMUV3, &iref2));
	flb_check(!bad && ret == -ENOENT,
		  "lookup: %u IOMMUs by (token, type): %u live found equal, the rest -ENOENT, %u wrong; a token under the other type -ENOENT",
		  n, flb_m->live_iommus, bad);
}

/*
 * Corrupted copies: the whole region copied into this kernel's memory,
 * one field changed at a time, validated through a page callback over the
 * copy.
 */
static u8 *flb_copy;

static void *flb_at(u64 phys)
{
	return flb_copy + (phys - flb_region_phys);
}

static struct iommu_flb_ser *flb_root_of(u64 root)
{
	return flb_at(root);
}

static void flb_expect(const char *what, u64 root, u32 mode, int want, u32 kind)
{
	struct flb_view view = { .base = flb_copy };
	struct iommu_flb_mem mem = { .page = flb_reader_page, .ctx = &view, .page_size = PAGE_SIZE };
	const struct iommu_flb_image *img;
	struct iommu_flb_error err;
	void *scratch;
	int ret;

	flb_probe_what = what;
	ret = flb_validate(&mem, root, mode, &scratch, &img, &err, NULL);
	flb_probe_what = "";
	kvfree(scratch);
	if (!want)
		flb_check(!ret && img, "%s: accepted (%d)", what, ret);
	else
		flb_check(ret == want && err.error == want && err.kind == kind && !img,
			  "%s: %d (want %d), kind %u (want %u): %s", what, ret, want, err.kind,
			  kind, err.message);
}

#define FLB_CORRUPT(what, lvalue, value, want, kind) do {		\
	typeof(lvalue) __saved = (lvalue);				\
	(lvalue) = (value);						\
	flb_expect(what, root, IOMMU_FLB_MODE_HANDOVER, want, kind);	\
	(lvalue) = __saved;						\
} while (0)

static void flb_check_corruptions(const struct iommu_flb_image *img, u64 root)
{
	struct iommu_flb_ser *r;
	struct iommu_array_hdr_ser *dev0;
	struct iommu_device_ser *d0, *d1;
	struct iommu_domain_ser *dom0;
	struct iommu_hw_ser *hw0 = NULL, *hw1 = NULL;
	struct iommu_flb_device_ref vref;
	struct iommu_flb_iommu_ref iref;
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	u64 dev_head, dead_domain_phys = 0;
	u32 i;

	flb_copy = vmalloc(FLB_REGION_SIZE);
	if (!flb_copy) {
		flb_check(false, "vmalloc(%llu) for the copies", FLB_REGION_SIZE);
		return;
	}
	memcpy(flb_copy, flb_region, FLB_REGION_SIZE);
	flb_expect("unchanged copy", root, IOMMU_FLB_MODE_HANDOVER, 0, 0);

	r = flb_root_of(root);
	dev_head = r->device_array_phys;
	dev0 = flb_at(dev_head);
	/* Two live devices of the same segment, two live IOMMUs of one type. */
	FLB_CALL(iommu_flb_next_device, iommu_flb_next_device(img, &cur, &vref));
	d0 = flb_at(vref.phys);
	do {
		FLB_CALL(iommu_flb_next_device, iommu_flb_next_device(img, &cur, &vref));
		d1 = flb_at(vref.phys);
	} while (d1->pci_domain_nr != d0->pci_domain_nr);
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	while (FLB_CALL(iommu_flb_next_iommu, iommu_flb_next_iommu(img, &cur, &iref)) > 0) {
		struct iommu_hw_ser *hw = flb_at(iref.phys);

		if (!hw0)
			hw0 = hw;
		else if (!hw1 && hw->type == hw0->type)
			hw1 = hw;
	}
	if (!hw0) {
		flb_check(false, "corruptions: no live IOMMU found to corrupt");
		return;
	}
	dom0 = flb_at(d0->domain_iommu_ser.domain_phys);
	for (i = 0; i < flb_m->nr_domains; i++)
		if (!flb_m->domains[i].live)
			dead_domain_phys = flb_m->domains[i].phys;

	flb_expect("root outside the preserved region", flb_region_phys + FLB_REGION_SIZE,
		   IOMMU_FLB_MODE_HANDOVER, -EFAULT, IOMMU_FLB_ERR_ROOT_UNREADABLE);
	flb_expect("root not at the start of its page", (root & ~(u64)(PAGE - 1)) + PAGE - 8,
		   IOMMU_FLB_MODE_HANDOVER, -EINVAL, IOMMU_FLB_ERR_UNALIGNED);
	FLB_CORRUPT("version 7", r->version, 7, -EPROTONOSUPPORT,
		    IOMMU_FLB_ERR_UNSUPPORTED_VERSION);
	FLB_CORRUPT("device chain head 0", r->device_array_phys, 0, -EINVAL,
		    IOMMU_FLB_ERR_NULL_POINTER);
	FLB_CORRUPT("device chain head unaligned", r->device_array_phys, dev_head + 8, -EINVAL,
		    IOMMU_FLB_ERR_UNALIGNED);
	FLB_CORRUPT("next_array_phys outside the region", dev0->next_array_phys,
		    flb_region_phys + FLB_REGION_SIZE, -EFAULT, IOMMU_FLB_ERR_UNREADABLE);
	FLB_CORRUPT("nr_objects above the page's capacity", dev0->nr_objects,
		    IOMMU_DEVICE_ARRAY_CAPACITY(PAGE_SIZE) + 1, -EOVERFLOW,
		    IOMMU_FLB_ERR_COUNT_OVER_CAPACITY);
	FLB_CORRUPT("a partial page before the chain's tail", dev0->nr_objects, 10, -EBADMSG,
		    IOMMU_FLB_ERR_PARTIAL_PAGE);
	/* Between full pages: a partial page linked anywhere is refused as partial first. */
	FLB_CORRUPT("the device chain's second page linked back to its head",
		    ((struct iommu_array_hdr_ser *)flb_at(dev0->next_array_phys))->next_array_phys,
		    dev_head, -ELOOP, IOMMU_FLB_ERR_CYCLE);
	FLB_CORRUPT("the domain chain's head is the IOMMU chain's",
		    r->iommu_domain_array_phys, r->iommu_array_phys, -EADDRINUSE,
		    IOMMU_FLB_ERR_PAGE_REUSED);
	FLB_CORRUPT("an unknown device flag", d0->hdr.flags, 0x80, -EOPNOTSUPP,
		    IOMMU_FLB_ERR_UNKNOWN_FLAGS);
	FLB_CORRUPT("ref_count 0 on a live domain", dom0->hdr.ref_count, 0, -EBADMSG,
		    IOMMU_FLB_ERR_ZERO_REF_COUNT);
	FLB_CORRUPT("an IOMMU counting one device too many", hw0->hdr.ref_count,
		    hw0->hdr.ref_count + 1, -EBADMSG, IOMMU_FLB_ERR_REF_COUNT_MISMATCH);
	FLB_CORRUPT("IOMMU type 7", hw0->type, 7, -EOPNOTSUPP, IOMMU_FLB_ERR_UNKNOWN_IOMMU_TYPE);
	if (hw1)
		FLB_CORRUPT("two live IOMMUs with one (token, type)", hw1->token, hw0->token,
			    -EEXIST, IOMMU_FLB_ERR_DUPLICATE_IOMMU);
	else
		flb_check(false, "two live IOMMUs of one type to duplicate");
	FLB_CORRUPT("two live devices with one (segment, devid)", d1->devid, d0->devid,
		    -EEXIST, IOMMU_FLB_ERR_DUPLICATE_DEVICE);
	FLB_CORRUPT("a device attached to an unpreserved domain",
		    d0->domain_iommu_ser.domain_phys, dead_domain_phys, -ENOENT,
		    IOMMU_FLB_ERR_BAD_REFERENCE);
	FLB_CORRUPT("a device's iommu_phys inside a record", d0->domain_iommu_ser.iommu_phys,
		    d0->domain_iommu_ser.iommu_phys + 8, -ENOENT, IOMMU_FLB_ERR_BAD_REFERENCE);
	FLB_CORRUPT("vasz 65", dom0->vasz, 65, -ERANGE, IOMMU_FLB_ERR_VASZ_TOO_LARGE);
	FLB_CORRUPT("sign_extend 2", dom0->sign_extend, 2, -ERANGE,
		    IOMMU_FLB_ERR_SIGN_EXTEND_INVALID);
	FLB_CORRUPT("non-zero padding in a domain", dom0->padding[1], 1, -EBADMSG,
		    IOMMU_FLB_ERR_NON_ZERO_PADDING);
	FLB_CORRUPT("INCOMING set at handover", d0->hdr.flags, IOMMU_SER_FLAG_INCOMING,
		    -EALREADY, IOMMU_FLB_ERR_ALREADY_RESTORED);
	d0->hdr.flags = IOMMU_SER_FLAG_INCOMING;
	flb_expect("INCOMING set, validated as a restored dump", root, IOMMU_FLB_MODE_RESTORED,
		   0, 0);
	d0->hdr.flags = 0;
	flb_note("not provoked: -E2BIG (IOMMU_FLB_ERR_LIMIT_EXCEEDED) needs more than 2^20 pages in a chain or 2^25 + 2^16 records, the C API's fixed limits, far beyond a 16 MiB region");
	vfree(flb_copy);
	flb_copy = NULL;
}

/* Arguments the API must refuse before touching anything. */
static void flb_check_arguments(const struct iommu_flb_mem *mem, u64 root)
{
	struct iommu_flb_error err;
	const struct iommu_flb_image *img;
	size_t size;
	u8 *scratch;
	int ret;

	ret = FLB_CALL(iommu_flb_scratch_size, iommu_flb_scratch_size(NULL, root, &size, &err));
	flb_check(ret == -EINVAL && err.kind == IOMMU_FLB_ERR_INVALID_ARGUMENT,
		  "NULL mem: %d (want %d), kind %u: %s", ret, -EINVAL, err.kind, err.message);
	ret = FLB_CALL(iommu_flb_scratch_size, iommu_flb_scratch_size(mem, root, &size, &err));
	scratch = ret ? NULL : kvmalloc(size + 8, GFP_KERNEL);
	if (!scratch) {
		flb_check(false, "scratch for the argument checks: %d", ret);
		return;
	}
	ret = FLB_CALL(iommu_flb_validate, iommu_flb_validate(mem, root, IOMMU_FLB_MODE_HANDOVER,
							      scratch + 1, size, &img, &err));
	flb_check(ret == -EINVAL && err.kind == IOMMU_FLB_ERR_INVALID_ARGUMENT,
		  "misaligned scratch: %d (want %d), kind %u: %s", ret, -EINVAL, err.kind,
		  err.message);
	ret = FLB_CALL(iommu_flb_validate, iommu_flb_validate(mem, root, IOMMU_FLB_MODE_HANDOVER,
							      scratch, size - 1, &img, &err));
	flb_check(ret == -ENOSPC && err.kind == IOMMU_FLB_ERR_SCRATCH_TOO_SMALL,
		  "scratch one byte short: %d (want %d), kind %u: %s", ret, -ENOSPC, err.kind,
		  err.message);
	ret = FLB_CALL(iommu_flb_validate, iommu_flb_validate(mem, root, 7, scratch, size, &img,
							      &err));
	flb_check(ret == -EINVAL && err.kind == IOMMU_FLB_ERR_INVALID_ARGUMENT,
		  "mode 7: %d (want %d), kind %u: %s", ret, -EINVAL, err.kind, err.message);
	kvfree(scratch);
}

#define FLB_TIMED_RUNS 5

/* The best and worst of FLB_TIMED_RUNS timed validations of the image at @root. */
static int flb_time_validate(const struct iommu_flb_mem *mem, u64 root, u64 *best, u64 *worst)
{
	const struct iommu_flb_image *again;
	struct iommu_flb_error err;
	void *s2;
	u64 ns = 0;
	int i, ret = 0;

	*best = U64_MAX;
	*worst = 0;
	for (i = 0; i < FLB_TIMED_RUNS && !ret; i++) {
		ret = flb_validate(mem, root, IOMMU_FLB_MODE_HANDOVER, &s2, &again, &err, &ns);
		kvfree(s2);
		*best = min(*best, ns);
		*worst = max(*worst, ns);
	}
	return ret;
}

/* The version-2 image's records against the manifest, by value. */
static void flb_check_walks_v2(const struct iommu_flb_image *img)
{
	struct iommu_flb_cursor cur;
	struct iommu_flb_iommu_ref iref;
	struct iommu_flb_domain_ref dref;
	struct iommu_flb_device_ref vref;
	const struct flb_m_device *v;
	u32 n, bad, i;
	int ret;

	n = bad = 0;
	iommu_flb_for_each_iommu(img, cur, iref, ret) {
		const struct iommu_hw_v2_ser *hw = iref.ser_v2;
		const struct flb_m_iommu *u = NULL;

		for (i = 0; i < flb_m->nr_iommus; i++)
			if (flb_m->iommus[i].token == hw->token && flb_m->iommus[i].type == hw->type)
				u = &flb_m->iommus[i];
		bad += iref.ser || !u || hw->hdr.ref_count != u->live_devices || hw->hdr.flags;
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_iommus,
		  "walk v2: %u live IOMMUs (ser_v2), as the manifest (%u), %u differ", n,
		  flb_m->live_iommus, bad);

	n = bad = 0;
	iommu_flb_for_each_domain(img, cur, dref, ret) {
		bad += dref.ser || !dref.ser_v2 || dref.ser_v2->hdr.flags;
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_domains,
		  "walk v2: %u live domains, as the manifest (%u), %u differ", n,
		  flb_m->live_domains, bad);

	n = bad = 0;
	iommu_flb_for_each_device(img, cur, vref, ret) {
		const struct iommu_device_v2_ser *d = vref.ser_v2;

		v = d ? flb_manifest_device(d->pci_domain_nr, d->devid) : NULL;
		if (vref.ser || !v || !v->live || d->dma_owner_token != v->token ||
		    d->attachment_id != v->attachment_id ||
		    FLB_CALL(iommu_flb_device_domain, iommu_flb_device_domain(img, &vref, &dref)) ||
		    dref.ser_v2->top_table_phys != flb_m->domains[v->domain].top_table_phys ||
		    dref.ser_v2->vasz != flb_m->domains[v->domain].vasz ||
		    FLB_CALL(iommu_flb_device_iommu, iommu_flb_device_iommu(img, &vref, &iref)) ||
		    iref.ser_v2->token != flb_m->iommus[v->iommu].token ||
		    iref.ser_v2->type != flb_m->iommus[v->iommu].type)
			bad++;
		n++;
	}
	flb_check(!ret && !bad && n == flb_m->live_devices,
		  "walk v2: %u live devices with their domain and IOMMU resolved by index, as the manifest (%u), %u differ",
		  n, flb_m->live_devices, bad);

	n = bad = 0;
	for (i = 0; i < flb_m->nr_devices; i++) {
		v = &flb_m->devices[i];
		ret = FLB_CALL(iommu_flb_find_device,
			       iommu_flb_find_device(img, v->segment, v->devid, &vref));
		if (v->live)
			bad += ret || vref.ser_v2->dma_owner_token != v->token;
		else
			bad += ret != -ENOENT;
		n++;
	}
	flb_check(!bad, "lookup v2: %u devices by (segment, devid), %u wrong", n, bad);
}

/* Corrupted copies of the version-2 image, in this kernel's memory. */
static void flb_check_corruptions_v2(const struct iommu_flb_image *img, u64 root)
{
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	u64 phys, last = 0;
	u8 *page, saved[8];

	while (FLB_CALL(iommu_flb_next_page, iommu_flb_next_page(img, &cur, &phys)) == 1)
		last = phys;
	flb_copy = vmalloc(FLB_REGION_SIZE);
	if (!flb_copy || !last) {
		flb_check(false, "vmalloc(%llu) for the version-2 copies, last page 0x%llx",
			  FLB_REGION_SIZE, last);
		vfree(flb_copy);
		flb_copy = NULL;
		return;
	}
	memcpy(flb_copy, flb_region, FLB_REGION_SIZE);
	flb_expect("version 2: unchanged copy", root, IOMMU_FLB_MODE_HANDOVER, 0, 0);
	page = flb_at(last);
	page[PAGE - 1] ^= 0x10;
	flb_expect("version 2: one bit flipped in the last page", root, IOMMU_FLB_MODE_HANDOVER,
		   -EBADMSG, IOMMU_FLB_ERR_CHECKSUM_MISMATCH);
	page[PAGE - 1] ^= 0x10;
	/*
	 * A page of another handover, intact: its generation differs, and its
	 * crc is recomputed here with crc32_le, which the reader must accept
	 * as the page's sum (and then refuse the page as stale).
	 */
	memcpy(saved, page + 32, 8);
	page[32] ^= 1;
	put_unaligned_le32(flb_crc32(flb_crc32(0, page, IOMMU_FLB_V2_PAGE_CRC_OFFSET),
				     page + IOMMU_FLB_V2_PAGE_CRC_OFFSET + 4,
				     PAGE - IOMMU_FLB_V2_PAGE_CRC_OFFSET - 4),
			   page + IOMMU_FLB_V2_PAGE_CRC_OFFSET);
	flb_expect("version 2: the last page from another generation, its crc recomputed",
		   root, IOMMU_FLB_MODE_HANDOVER, -ESTALE, IOMMU_FLB_ERR_STALE_GENERATION);
	vfree(flb_copy);
	flb_copy = NULL;
}

/*
 * The version-2 image: validated with crc32_le as the CRC (and with the
 * library's own, which must agree), timed beside version 1, walked and
 * looked up against the manifest, restored, and refused when corrupted.
 */
static void flb_read_image_v2(const struct flb_manifest *m, u64 v1_best)
{
	struct flb_view view = { .base = flb_region };
	struct iommu_flb_mem mem = {
		.page = flb_reader_page, .ctx = &view, .page_size = PAGE_SIZE,
		.crc32 = flb_reader_crc32,
	};
	struct iommu_flb_mem own = { .page = flb_reader_page, .ctx = &view,
				     .page_size = PAGE_SIZE };
	const struct iommu_flb_image *img, *again;
	struct iommu_flb_image_info info;
	struct iommu_flb_restore_status st;
	struct flb_restored *r;
	struct iommu_flb_error err;
	void *scratch, *s2;
	u64 ns, best, worst, root = m->root_v2;
	unsigned long calls;
	int ret;

	flb_probe_what = "the version-2 image";
	ret = flb_validate(&mem, root, IOMMU_FLB_MODE_HANDOVER, &scratch, &img, &err, &ns);
	flb_check(!ret && img && view.crc_calls,
		  "validate v2: the handed-over version-2 image is accepted, crc32_le called %lu times (%d)%s%s",
		  view.crc_calls, ret, ret ? ": " : "", ret ? err.message : "");
	if (ret) {
		kvfree(scratch);
		return;
	}
	ret = flb_time_validate(&mem, root, &best, &worst);
	flb_check(!ret, "validate time v2: %llu ns best, %llu ns worst of %d runs; version 1: %llu ns best (the same objects; v2 also sums every page with crc32_le)",
		  best, worst, FLB_TIMED_RUNS, v1_best);
	calls = view.crc_calls;
	ret = flb_validate(&own, root, IOMMU_FLB_MODE_HANDOVER, &s2, &again, &err, NULL);
	kvfree(s2);
	flb_check(!ret && view.crc_calls == calls,
		  "validate v2 with the library's own CRC (crc32fast): %d, it agrees with crc32_le",
		  ret);
	flb_probe_what = "";

	ret = FLB_CALL(iommu_flb_image_info, iommu_flb_image_info(img, &info));
	flb_check(!ret && info.root_phys == root && info.version == IOMMU_FLB_V2_VERSION &&
		  info.pages == m->nr_pages_v2 && info.live_iommus == m->live_iommus &&
		  info.live_devices == m->live_devices,
		  "image info v2: version %llu, %llu pages (%llu IOMMU, %llu domain, %llu device), %llu live IOMMUs, %llu live devices, as the manifest",
		  info.version, info.pages, info.iommu_pages, info.domain_pages, info.device_pages,
		  info.live_iommus, info.live_devices);
	flb_check_walks_v2(img);

	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (r) {
		r->fail_at = U32_MAX;
		ret = FLB_CALL(iommu_flb_restore, iommu_flb_restore(img, flb_restore_page, r, &st));
		flb_check(!ret && st.restored == info.pages && r->n == info.pages &&
			  r->pages[0] == (root & ~(u64)(PAGE - 1)),
			  "restore v2: %u pages, root page first: %d", r->n, ret);
		kfree(r);
	}
	flb_check_corruptions_v2(img, root);
	kvfree(scratch);
}


int flb_read_image(const struct flb_manifest *m, u64 root)
{
	struct flb_view view = { .base = flb_region };
	struct iommu_flb_mem mem = { .page = flb_reader_page, .ctx = &view, .page_size = PAGE_SIZE };
	const struct iommu_flb_image *img;
	struct iommu_flb_image_info info;
	struct iommu_flb_error err;
	void *scratch;
	u64 ns, best, worst;
	int ret;

	flb_m = m;
	flb_probe_what = "the handed-over image";
	ret = flb_validate(&mem, root, IOMMU_FLB_MODE_HANDOVER, &scratch, &img, &err, &ns);
	flb_check(!ret && img, "validate: the handed-over image is accepted (%d)%s%s", ret,
		  ret ? ": " : "", ret ? err.message : "");
	if (ret) {
		kvfree(scratch);
		return ret;
	}
	/* Validation time, in this kernel under whatever runs it. */
	ret = flb_time_validate(&mem, root, &best, &worst);
	flb_check(!ret, "validate time: %llu ns best, %llu ns worst of %d runs (ktime_get_ns, interrupts off)",
		  best, worst, FLB_TIMED_RUNS);

	flb_probe_what = "";
	ret = FLB_CALL(iommu_flb_image_info, iommu_flb_image_info(img, &info));
	flb_check(!ret && info.root_phys == root && info.version == IOMMU_LUO_FLB_VERSION &&
		  info.pages == m->nr_pages && info.live_iommus == m->live_iommus &&
		  info.live_devices == m->live_devices,
		  "image info: %llu pages (%llu IOMMU, %llu domain, %llu device), %llu live IOMMUs, %llu live devices, as the manifest",
		  info.pages, info.iommu_pages, info.domain_pages, info.device_pages,
		  info.live_iommus, info.live_devices);

	flb_check_walks(img);
	flb_check_restore(img, &info, root);
	flb_check_corruptions(img, root);
	flb_check_arguments(&mem, root);
	kvfree(scratch);
	flb_read_image_v2(m, best);
	return 0;
}
