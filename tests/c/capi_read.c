/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The incoming kernel's side, through the C API (include/iommu_flb_api.h):
 * validates a flat physical dump, restores its pages, walks its live
 * objects with the API's cursors and again with plain struct access, and
 * checks every lookup and resolution against the walk.
 *
 * Usage: capi_read DUMP BASE ROOT [MODE [SCRATCH_SHORT [PAGE_SIZE]]]
 *   DUMP: the flat dump (byte i is physical address BASE + i).
 *   MODE: 0 handover (default), 1 restored.
 *   SCRATCH_SHORT: give iommu_flb_validate() this many bytes fewer than
 *   iommu_flb_scratch_size() asked for.
 *   PAGE_SIZE: the image's page size (default 4096).
 *
 * On success, stdout has one line per live object and page, each prefixed
 * "api" (from the API's walks) or "raw" (from plain struct access):
 *   <src> iommu <phys> <token> <type> <ref_count>
 *   <src> iommu-vendor <phys> <a> <b>   intel: phys_addr root_table;
 *                                       smmuv3: phys_addr strtab_base_cfg
 *   <src> domain <phys> <top_table_phys> <vasz>
 *   <src> device <phys> <segment> <devid> <domain_phys> <iommu_phys>
 *   <src> device-vendor <phys> <a> <b>  intel: pasid_table max_pasid;
 *                                       smmuv3: l1_cdtab_lu_state
 *                                       num_l2_cdtables
 *   api page <phys>                     in restore order
 *   api info <pages> <live_iommus> <live_devices>
 *   lookups <n>                         lookups that agreed with the walk
 * and exits 0. If validation fails it prints
 *   error <ERRNO-NAME> <errno> <kind> <chain> <page> <page_phys> <object> <field>
 *   message <message>
 * and exits 3. Any disagreement exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommu_flb_api.h"
#include "read_dump.h"

/* phys_to_virt() for the raw walk, which trusts the validated image. */
static const void *virt(unsigned long long phys)
{
	return dump + (phys - dump_base);
}

static int fail(const char *what)
{
	fprintf(stderr, "capi_read: %s\n", what);
	exit(1);
}

static const char *errno_name(int e)
{
	static const struct {
		int value;
		const char *name;
	} names[] = {
		{ -ENOENT, "ENOENT" },	   { -E2BIG, "E2BIG" },
		{ -EFAULT, "EFAULT" },	   { -EEXIST, "EEXIST" },
		{ -EINVAL, "EINVAL" },	   { -ENOSPC, "ENOSPC" },
		{ -ERANGE, "ERANGE" },	   { -ELOOP, "ELOOP" },
		{ -EBADMSG, "EBADMSG" },   { -EOVERFLOW, "EOVERFLOW" },
		{ -EPROTONOSUPPORT, "EPROTONOSUPPORT" },
		{ -EOPNOTSUPP, "EOPNOTSUPP" }, { -EADDRINUSE, "EADDRINUSE" },
		{ -EALREADY, "EALREADY" },
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].value == e)
			return names[i].name;
	return "?";
}

static unsigned long long pages[1 << 16];
static size_t nr_pages;

/* iommu_flb_restore()'s callback: records the order. */
static int restore_page(void *ctx, __u64 phys)
{
	(void)ctx;
	if (nr_pages == sizeof(pages) / sizeof(pages[0]))
		return -ENOSPC;
	pages[nr_pages++] = phys;
	return 0;
}

static void print_iommu(const char *src, unsigned long long phys, const struct iommu_hw_ser *hw)
{
	printf("%s iommu %#llx %#llx %llu %u\n", src, phys, (unsigned long long)hw->token,
	       (unsigned long long)hw->type, hw->hdr.ref_count);
	if (hw->type == IOMMU_INTEL)
		printf("%s iommu-vendor %#llx %#llx %#llx\n", src, phys,
		       (unsigned long long)hw->vendor.intel.phys_addr,
		       (unsigned long long)hw->vendor.intel.root_table);
	else
		printf("%s iommu-vendor %#llx %#llx %#llx\n", src, phys,
		       (unsigned long long)hw->vendor.smmuv3.phys_addr,
		       (unsigned long long)hw->vendor.smmuv3.strtab_base_cfg);
}

static void print_domain(const char *src, unsigned long long phys, const struct iommu_domain_ser *d)
{
	printf("%s domain %#llx %#llx %u\n", src, phys, (unsigned long long)d->top_table_phys,
	       d->vasz);
}

/* The device union is chosen by the type of the IOMMU it names. */
static void print_device(const char *src, unsigned long long phys, const struct iommu_device_ser *dev,
			 const struct iommu_hw_ser *hw)
{
	printf("%s device %#llx %u %u %#llx %#llx\n", src, phys, dev->pci_domain_nr, dev->devid,
	       (unsigned long long)dev->domain_iommu_ser.domain_phys,
	       (unsigned long long)dev->domain_iommu_ser.iommu_phys);
	if (hw->type == IOMMU_INTEL)
		printf("%s device-vendor %#llx %#llx %#llx\n", src, phys,
		       (unsigned long long)dev->vendor.intel.pasid_table,
		       (unsigned long long)dev->vendor.intel.max_pasid);
	else
		printf("%s device-vendor %#llx %#llx %#llx\n", src, phys,
		       (unsigned long long)dev->vendor.smmuv3.l1_cdtab_lu_state,
		       (unsigned long long)dev->vendor.smmuv3.num_l2_cdtables);
}

/* The API's view: cursors, lookups, resolutions, restore. */
static void walk_api(const struct iommu_flb_image *img)
{
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	struct iommu_flb_iommu_ref hw, found_hw;
	struct iommu_flb_domain_ref dom;
	struct iommu_flb_device_ref dev, found_dev;
	struct iommu_flb_restore_status status;
	struct iommu_flb_image_info info;
	__u64 phys;
	unsigned long lookups = 0;
	size_t i;
	int ret;

	iommu_flb_for_each_iommu(img, cur, hw, ret) {
		print_iommu("api", hw.phys, hw.ser);
		if (iommu_flb_find_iommu(img, hw.ser->token, hw.ser->type, &found_hw) ||
		    found_hw.phys != hw.phys || found_hw.ser != hw.ser)
			fail("find_iommu disagrees with the walk");
		lookups++;
	}
	if (ret)
		fail("iommu walk failed");
	iommu_flb_for_each_domain(img, cur, dom, ret)
		print_domain("api", dom.phys, dom.ser);
	if (ret)
		fail("domain walk failed");
	iommu_flb_for_each_device(img, cur, dev, ret) {
		if (iommu_flb_device_iommu(img, &dev, &hw) ||
		    hw.phys != dev.ser->domain_iommu_ser.iommu_phys)
			fail("device_iommu disagrees with iommu_phys");
		if (iommu_flb_device_domain(img, &dev, &dom) ||
		    dom.phys != dev.ser->domain_iommu_ser.domain_phys)
			fail("device_domain disagrees with domain_phys");
		if (iommu_flb_find_device(img, dev.ser->pci_domain_nr, dev.ser->devid, &found_dev) ||
		    found_dev.phys != dev.phys || found_dev.ser != dev.ser)
			fail("find_device disagrees with the walk");
		lookups += 3;
		print_device("api", dev.phys, dev.ser, hw.ser);
	}
	if (ret)
		fail("device walk failed");

	ret = iommu_flb_restore(img, restore_page, NULL, &status);
	if (ret || status.restored != nr_pages || status.failed_phys != IOMMU_FLB_NONE)
		fail("restore failed");
	cur = (struct iommu_flb_cursor)IOMMU_FLB_CURSOR_INIT;
	for (i = 0; (ret = iommu_flb_next_page(img, &cur, &phys)) > 0; i++)
		if (i >= nr_pages || pages[i] != phys)
			fail("next_page disagrees with restore");
	if (ret || i != nr_pages)
		fail("page walk failed");
	for (i = 0; i < nr_pages; i++)
		printf("api page %#llx\n", pages[i]);
	if (iommu_flb_image_info(img, &info) || info.pages != nr_pages)
		fail("image_info disagrees with restore");
	printf("api info %llu %llu %llu\n", (unsigned long long)info.pages,
	       (unsigned long long)info.live_iommus, (unsigned long long)info.live_devices);
	printf("lookups %lu\n", lookups);
}

/* Plain struct access from the root, as kernel code without the API would. */
static void walk_raw(unsigned long long root_phys)
{
	const struct iommu_flb_ser *root = virt(root_phys);
	unsigned long long p, obj;
	unsigned long long i;

	for (p = root->iommu_array_phys; p; p = ((const struct iommu_array_hdr_ser *)virt(p))->next_array_phys) {
		const struct iommu_hw_array_ser *a = virt(p);

		for (i = 0; i < a->hdr.nr_objects; i++) {
			obj = p + sizeof(a->hdr) + i * sizeof(a->objects[0]);
			if (!(a->objects[i].hdr.flags & IOMMU_SER_FLAG_DELETED))
				print_iommu("raw", obj, &a->objects[i]);
		}
	}
	for (p = root->iommu_domain_array_phys; p; p = ((const struct iommu_array_hdr_ser *)virt(p))->next_array_phys) {
		const struct iommu_domain_array_ser *a = virt(p);

		for (i = 0; i < a->hdr.nr_objects; i++) {
			obj = p + sizeof(a->hdr) + i * sizeof(a->objects[0]);
			if (!(a->objects[i].hdr.flags & IOMMU_SER_FLAG_DELETED))
				print_domain("raw", obj, &a->objects[i]);
		}
	}
	for (p = root->device_array_phys; p; p = ((const struct iommu_array_hdr_ser *)virt(p))->next_array_phys) {
		const struct iommu_device_array_ser *a = virt(p);

		for (i = 0; i < a->hdr.nr_objects; i++) {
			const struct iommu_device_ser *dev = &a->objects[i];

			obj = p + sizeof(a->hdr) + i * sizeof(a->objects[0]);
			if (!(dev->hdr.flags & IOMMU_SER_FLAG_DELETED))
				print_device("raw", obj, dev, virt(dev->domain_iommu_ser.iommu_phys));
		}
	}
}

int main(int argc, char **argv)
{
	struct iommu_flb_mem mem = { .page = dump_page, .ctx = NULL };
	struct iommu_flb_error err;
	const struct iommu_flb_image *img;
	unsigned long long root, mode = 0, short_by = 0;
	void *scratch = NULL;
	size_t size;
	int ret;

	if (argc < 4 || argc > 7) {
		fprintf(stderr, "usage: %s DUMP BASE ROOT [MODE [SCRATCH_SHORT [PAGE_SIZE]]]\n",
			argv[0]);
		return 2;
	}
	dump_base = strtoull(argv[2], NULL, 0);
	root = strtoull(argv[3], NULL, 0);
	if (argc > 4)
		mode = strtoull(argv[4], NULL, 0);
	if (argc > 5)
		short_by = strtoull(argv[5], NULL, 0);
	if (argc > 6)
		page_size = strtoull(argv[6], NULL, 0);
	mem.page_size = page_size;
	dump = read_dump(argv[1], &dump_len);
	if (!dump)
		return 2;

	ret = iommu_flb_scratch_size(&mem, root, &size, &err);
	if (!ret) {
		if (short_by > size)
			short_by = size;
		size -= short_by;
		/* kvmalloc() in the kernel; 8-byte alignment is all it needs. */
		scratch = aligned_alloc(IOMMU_FLB_SCRATCH_ALIGN, size ? (size + 7) / 8 * 8 : 8);
		if (!scratch)
			return 2;
		ret = iommu_flb_validate(&mem, root, (__u32)mode, scratch, size, &img, &err);
	}
	if (ret) {
		if (ret != err.error)
			fail("return value and err.error differ");
		printf("error %s %d %u %u %lld %#llx %lld %s\n", errno_name(ret), ret, err.kind,
		       err.chain, (long long)err.page, (unsigned long long)err.page_phys,
		       (long long)err.object, err.field ? err.field : "-");
		printf("message %s\n", err.message);
		return 3;
	}
	if (err.error || err.kind != IOMMU_FLB_ERR_NONE)
		fail("err not cleared on success");
	walk_api(img);
	walk_raw(root);
	free(scratch);
	free(dump);
	return 0;
}
