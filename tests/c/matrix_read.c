/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The C API column of the compatibility matrix (capi/tests/matrix.rs): a
 * next kernel built against include/iommu_flb_api.h validates a flat
 * physical dump of either format version and prints what it accepted, in
 * a form that does not depend on where the writer put its records, so
 * every writer's image can be compared with what that writer preserved.
 *
 * Usage: matrix_read DUMP BASE ROOT
 *   DUMP: the flat dump (byte i is physical address BASE + i), 4 KiB pages.
 *
 * On success, stdout has
 *   version <v>
 *   iommu <token> <type> <ref_count>
 *   domain <top_table_phys> <vasz>
 *   device <segment> <devid> <its domain's top_table_phys> <its IOMMU's token>
 * one line per live object in chain order, and it exits 0. If validation
 * fails it prints
 *   error <errno>
 *   message <message>
 * and exits 3. Any other failure exits 1 or 2.
 */
#include <stdio.h>
#include <stdlib.h>

#include "iommu_flb_api.h"
#include "read_dump.h"

static void fail(const char *what)
{
	fprintf(stderr, "matrix_read: %s\n", what);
	exit(1);
}

static __u64 iommu_token(const struct iommu_flb_iommu_ref *r)
{
	return r->ser ? r->ser->token : r->ser_v2->token;
}

static __u64 top_table(const struct iommu_flb_domain_ref *r)
{
	return r->ser ? r->ser->top_table_phys : r->ser_v2->top_table_phys;
}

static void walk(const struct iommu_flb_image *img)
{
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	struct iommu_flb_iommu_ref hw;
	struct iommu_flb_domain_ref dom;
	struct iommu_flb_device_ref dev;
	struct iommu_flb_image_info info;
	int ret;

	if (iommu_flb_image_info(img, &info))
		fail("image_info");
	printf("version %llu\n", (unsigned long long)info.version);
	iommu_flb_for_each_iommu(img, cur, hw, ret) {
		const struct iommu_hdr_ser *h = hw.ser ? &hw.ser->hdr : &hw.ser_v2->hdr;
		__u64 type = hw.ser ? hw.ser->type : hw.ser_v2->type;

		printf("iommu %#llx %llu %u\n", (unsigned long long)iommu_token(&hw),
		       (unsigned long long)type, h->ref_count);
	}
	if (ret)
		fail("iommu walk");
	iommu_flb_for_each_domain(img, cur, dom, ret)
		printf("domain %#llx %u\n", (unsigned long long)top_table(&dom),
		       dom.ser ? dom.ser->vasz : dom.ser_v2->vasz);
	if (ret)
		fail("domain walk");
	iommu_flb_for_each_device(img, cur, dev, ret) {
		if (iommu_flb_device_domain(img, &dev, &dom) || iommu_flb_device_iommu(img, &dev, &hw))
			fail("device resolution");
		printf("device %u %u %#llx %#llx\n",
		       dev.ser ? dev.ser->pci_domain_nr : dev.ser_v2->pci_domain_nr,
		       dev.ser ? dev.ser->devid : dev.ser_v2->devid,
		       (unsigned long long)top_table(&dom), (unsigned long long)iommu_token(&hw));
	}
	if (ret)
		fail("device walk");
}

int main(int argc, char **argv)
{
	struct iommu_flb_mem mem = { .page = dump_page, .ctx = NULL, .page_size = page_size };
	struct iommu_flb_error err;
	const struct iommu_flb_image *img;
	unsigned long long root;
	void *scratch = NULL;
	size_t size;
	int ret;

	if (argc != 4) {
		fprintf(stderr, "usage: %s DUMP BASE ROOT\n", argv[0]);
		return 2;
	}
	dump_base = strtoull(argv[2], NULL, 0);
	root = strtoull(argv[3], NULL, 0);
	dump = read_dump(argv[1], &dump_len);
	if (!dump)
		return 2;

	ret = iommu_flb_scratch_size(&mem, root, &size, &err);
	if (!ret) {
		scratch = aligned_alloc(IOMMU_FLB_SCRATCH_ALIGN, size ? (size + 7) / 8 * 8 : 8);
		if (!scratch)
			return 2;
		ret = iommu_flb_validate(&mem, root, IOMMU_FLB_MODE_HANDOVER, scratch, size, &img,
					 &err);
	}
	if (ret) {
		printf("error %d\nmessage %s\n", ret, err.message);
		return 3;
	}
	walk(img);
	free(scratch);
	free(dump);
	return 0;
}
