/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The outgoing kernel's side, through the C API (include/iommu_flb_api.h):
 * writes a version-1 image with the library's writer over a page allocator
 * of scattered pages in a flat buffer, provokes each writer refusal once,
 * and checks it returns the documented errno (from <errno.h>) and error
 * kind.
 *
 * Usage: capi_writer OUT
 *   OUT receives the flat dump (byte i is physical address MEM_BASE + i).
 *   stdout receives "ok <check> <ERRNO> [<kind> [<field>]]" per refusal,
 *   then the manifest in old_kernel_writer.c's format:
 *     base <phys>
 *     root <phys>
 *     iommu <phys> <token> <type> <ref_count>
 *     domain <phys> <top_table_phys> <vasz>
 *     device <phys> <segment> <devid> <domain_phys> <iommu_phys>
 *   Any unexpected result exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommu_flb_api.h"

#define MEM_BASE 0x60000000ULL
#define NR_PAGES 64
#define PAGE 4096

static unsigned char mem[NR_PAGES * PAGE] __attribute__((aligned(PAGE)));

/* kho_alloc_preserve() and friends over mem[], in a scrambled order. */
struct pool {
	unsigned char used[NR_PAGES];
	int fail;
};

static __u64 pool_alloc(void *ctx)
{
	struct pool *p = ctx;
	unsigned int k, idx;

	if (p->fail)
		return 0;
	for (k = 0; k < NR_PAGES; k++) {
		idx = (k * 37u + 11u) % NR_PAGES;
		if (!p->used[idx]) {
			p->used[idx] = 1;
			memset(mem + (size_t)idx * PAGE, 0, PAGE);
			return MEM_BASE + (__u64)idx * PAGE;
		}
	}
	return 0;
}

/*
 * struct iommu_flb_page_alloc.page: the library promises to ask only for
 * pages pool_alloc() handed out and pool_free() did not take back, which
 * is what lets the kernel use plain phys_to_virt(). Anything else fails
 * the test.
 */
static __u8 *pool_page(void *ctx, __u64 phys)
{
	struct pool *p = ctx;
	__u64 idx = (phys - MEM_BASE) / PAGE;

	if (phys < MEM_BASE || phys % PAGE || idx >= NR_PAGES || !p->used[idx]) {
		fprintf(stderr, "capi_writer: page(%#llx): not a page of the pool\n",
			(unsigned long long)phys);
		exit(1);
	}
	return mem + idx * PAGE;
}

static unsigned int pages_used(const struct pool *p)
{
	unsigned int i, n = 0;

	for (i = 0; i < NR_PAGES; i++)
		n += p->used[i];
	return n;
}

static void pool_free(void *ctx, __u64 phys)
{
	struct pool *p = ctx;
	__u64 idx = (phys - MEM_BASE) / PAGE;

	if (phys >= MEM_BASE && idx < NR_PAGES)
		p->used[idx] = 0;
}

static void die(const char *what, int ret)
{
	fprintf(stderr, "capi_writer: %s: %d\n", what, ret);
	exit(1);
}

/*
 * A refusal: @ret must be @want; for a writer refusal (@kind >= 0), the
 * writer's last error must say @kind (and @field).
 */
static void expect(const char *check, struct iommu_flb_writer *w, int ret, int want,
		   const char *errno_name, int kind, const char *kind_name, const char *field)
{
	struct iommu_flb_error err;

	if (ret != want)
		die(check, ret);
	if (kind >= 0) {
		if (iommu_flb_writer_last_error(w, &err))
			die("last_error", -1);
		if (err.error != want || (int)err.kind != kind)
			die(check, (int)err.kind);
		if (field && (!err.field || strcmp(err.field, field)))
			die(check, -2);
		if (!strstr(err.message, "iommu-flb: "))
			die(check, -3);
	}
	printf("ok %s %s%s%s%s%s\n", check, errno_name, kind_name ? " " : "",
	       kind_name ? kind_name : "", field ? " " : "", field ? field : "");
}

static const struct {
	__u64 token;
	__u64 type;
} units[4] = {
	{ 0xfed90000ULL, IOMMU_INTEL },
	{ 0x09050000ULL, IOMMU_ARM_SMMUV3 },
	{ 0xfed91000ULL, IOMMU_INTEL },
	{ 0x09060000ULL, IOMMU_ARM_SMMUV3 },
};

int main(int argc, char **argv)
{
	static struct pool pool, failing = { .fail = 1 };
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = pool_alloc, .page = pool_page, .free_page = pool_free, .ctx = &pool,
		.page_size = PAGE,
	};
	struct iommu_flb_page_alloc no_pages = alloc;
	struct iommu_flb_writer w = IOMMU_FLB_WRITER_INIT, w2 = IOMMU_FLB_WRITER_INIT;
	struct iommu_flb_handle hw[4], dom[110], dev[130], h;
	unsigned int refs[4] = { 0 };
	unsigned char dev_live[130], dom_live[110];
	__u64 index[8];
	__u64 root, root2;
	FILE *out;
	int i, ret;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT\n", argv[0]);
		return 2;
	}
	no_pages.ctx = &failing;

	expect("null-writer", NULL, iommu_flb_writer_start(NULL, &alloc, &root), -EINVAL, "EINVAL",
	       -1, NULL, NULL);
	expect("null-alloc", NULL, iommu_flb_writer_start(&w, NULL, &root), -EINVAL, "EINVAL", -1,
	       NULL, NULL);
	ret = iommu_flb_writer_start(&w, &alloc, &root);
	if (ret)
		die("start", ret);

	for (i = 0; i < 4; i++) {
		union iommu_hw_vendor_ser v;

		memset(&v, 0, sizeof(v));
		if (units[i].type == IOMMU_INTEL) {
			v.intel.phys_addr = units[i].token;
			v.intel.root_table = 0x7000000ULL + (__u64)i * PAGE;
			v.intel.context_tables_bitmap[0] = 0x5;
		} else {
			v.smmuv3.phys_addr = units[i].token;
			v.smmuv3.strtab_base_cfg = 0x10;
		}
		ret = iommu_flb_preserve_iommu(&w, units[i].token, units[i].type, &v, &hw[i]);
		if (ret)
			die("preserve_iommu", ret);
		if (i == 0) {
			expect("bad-iommu-type", &w,
			       iommu_flb_preserve_iommu(&w, 0x1000, 7, &v, &h), -EINVAL, "EINVAL",
			       -1, NULL, NULL);
			expect("duplicate-iommu", &w,
			       iommu_flb_preserve_iommu(&w, units[0].token, units[0].type, &v, &h),
			       -EEXIST, "EEXIST", IOMMU_FLB_ERR_IOMMU_EXISTS, "iommu-exists", NULL);
		}
	}

	for (i = 0; i < 110; i++) { /* two domain pages: 102 + 8 */
		struct iommu_domain_ser d = {
			.top_table_phys = 0x20000000ULL + (__u64)i * PAGE,
			.top_level = 4,
			.vasz = 48,
		};

		ret = iommu_flb_preserve_domain(&w, &d, &dom[i]);
		if (ret)
			die("preserve_domain", ret);
		dom_live[i] = 1;
		if (i == 0) {
			d.vasz = 65;
			expect("invalid-domain", &w, iommu_flb_preserve_domain(&w, &d, &h), -EINVAL,
			       "EINVAL", IOMMU_FLB_ERR_INVALID_DOMAIN, "invalid-domain", "vasz");
		}
	}

	for (i = 0; i < 130; i++) { /* three device pages: 56 + 56 + 18 */
		int unit = i < 2 ? 3 : i % 3;
		struct iommu_device_ser d;

		memset(&d, 0, sizeof(d));
		d.devid = (unsigned int)(130 - i) << 3;
		d.pci_domain_nr = (unsigned int)i % 2;
		d.dma_owner_token = 0xd000 + (__u64)i;
		if (units[unit].type == IOMMU_INTEL) {
			d.domain_iommu_ser.attachment_id = (__u64)i % 7 + 1;
			d.vendor.intel.pasid_table = 0x9000000ULL + (__u64)i * PAGE;
			d.vendor.intel.max_pasid = 1u << 20;
		} else {
			d.vendor.smmuv3.l1_cdtab_lu_state = 0xa000000ULL + (__u64)i;
			d.vendor.smmuv3.num_l2_cdtables = 2;
		}
		ret = iommu_flb_preserve_device(&w, &d, &dom[i % 110], &hw[unit], &dev[i]);
		if (ret)
			die("preserve_device", ret);
		dev_live[i] = 1;
		refs[unit]++;
		if (i == 5) {
			expect("duplicate-device", &w,
			       iommu_flb_preserve_device(&w, &d, &dom[0], &hw[unit], &h), -EEXIST,
			       "EEXIST", IOMMU_FLB_ERR_DEVICE_EXISTS, "device-exists", NULL);
			expect("handle-kind", &w,
			       iommu_flb_preserve_device(&w, &d, &dom[0], &dom[1], &h), -EINVAL,
			       "EINVAL", -1, NULL, NULL);
		}
	}

	expect("domain-in-use", &w, iommu_flb_unpreserve_domain(&w, &dom[0]), -EBUSY, "EBUSY",
	       IOMMU_FLB_ERR_DOMAIN_IN_USE, "domain-in-use", NULL);
	expect("iommu-in-use", &w, iommu_flb_unpreserve_iommu(&w, &hw[0]), -EBUSY, "EBUSY",
	       IOMMU_FLB_ERR_IOMMU_IN_USE, "iommu-in-use", NULL);

	/* Misuse the C API makes possible, each refused with nothing changed. */
	{
		unsigned int used = pages_used(&pool);
		struct iommu_flb_writer copy = w;
		struct iommu_domain_ser d = { .top_table_phys = 0x3000, .vasz = 48 };
		struct iommu_device_ser x;
		struct iommu_flb_handle forged;

		expect("start-started", NULL, iommu_flb_writer_start(&w, &alloc, &root2), -EBUSY,
		       "EBUSY", -1, NULL, NULL);
		expect("copied-writer", NULL, iommu_flb_preserve_domain(&copy, &d, &h), -EINVAL,
		       "EINVAL", -1, NULL, NULL);
		/* A domain handle moved onto device 0's slot. */
		forged = dom[1];
		forged.phys = (dev[0].phys & ~(__u64)(PAGE - 1)) + 16;
		expect("forged-handle", &w, iommu_flb_unpreserve_domain(&w, &forged), -EINVAL,
		       "EINVAL", IOMMU_FLB_ERR_FOREIGN_HANDLE, "foreign-handle", NULL);
		/* An IOMMU handle naming a page the pool never handed out. */
		forged = hw[0];
		forged.phys = MEM_BASE + (NR_PAGES - 1) * PAGE + 16;
		if (pool.used[NR_PAGES - 1])
			die("the last pool page is in use", -1);
		memset(&x, 0, sizeof(x));
		x.devid = 0xffff;
		expect("unmapped-handle", &w, iommu_flb_preserve_device(&w, &x, &dom[0], &forged, &h),
		       -EINVAL, "EINVAL", IOMMU_FLB_ERR_FOREIGN_HANDLE, "foreign-handle", NULL);
		if (pages_used(&pool) != used)
			die("misuse took pages", (int)pages_used(&pool));
	}

	/* Unpreserve some devices, both of unit 3 (which hides it), and then unit 3. */
	for (i = 0; i < 130; i += 9) {
		int unit = i < 2 ? 3 : i % 3;

		ret = iommu_flb_unpreserve_device(&w, &dev[i]);
		if (ret)
			die("unpreserve_device", ret);
		dev_live[i] = 0;
		refs[unit]--;
	}
	ret = iommu_flb_unpreserve_device(&w, &dev[1]);
	if (ret)
		die("unpreserve_device", ret);
	dev_live[1] = 0;
	refs[3]--;
	expect("unpreserve-twice", &w, iommu_flb_unpreserve_device(&w, &dev[1]), -ENOENT, "ENOENT",
	       IOMMU_FLB_ERR_ALREADY_UNPRESERVED, "already-unpreserved", NULL);
	ret = iommu_flb_unpreserve_iommu(&w, &hw[3]);
	if (ret)
		die("unpreserve_iommu", ret);
	/* Domain 109: detach its devices first, then unpreserve it. */
	for (i = 0; i < 130; i++)
		if (i % 110 == 109 && dev_live[i]) {
			ret = iommu_flb_unpreserve_device(&w, &dev[i]);
			if (ret)
				die("unpreserve_device", ret);
			dev_live[i] = 0;
			refs[i < 2 ? 3 : i % 3]--;
		}
	ret = iommu_flb_unpreserve_domain(&w, &dom[109]);
	if (ret)
		die("unpreserve_domain", ret);
	dom_live[109] = 0;

	ret = iommu_flb_writer_finish(&w, &root2);
	if (ret || root2 != root)
		die("finish", ret);

	/* A writer whose allocator has no page: nothing to give back. */
	expect("out-of-pages", &w2, iommu_flb_writer_start(&w2, &no_pages, &root2), -ENOMEM,
	       "ENOMEM", IOMMU_FLB_ERR_OUT_OF_PAGES, "out-of-pages", NULL);

	/* A writer with an index for 2 devices: the third does not fit. */
	if (iommu_flb_writer_index_size(1) > sizeof(index))
		die("index_size", (int)iommu_flb_writer_index_size(1));
	ret = iommu_flb_writer_start_indexed(&w2, &alloc, index, iommu_flb_writer_index_size(1),
					     &root2);
	if (ret)
		die("start_indexed", ret);
	{
		struct iommu_domain_ser d = { .top_table_phys = 0x1000, .vasz = 48 };
		union iommu_hw_vendor_ser v;
		struct iommu_device_ser x;
		struct iommu_flb_handle dh, ih, xh;

		memset(&v, 0, sizeof(v));
		memset(&x, 0, sizeof(x));
		if (iommu_flb_preserve_domain(&w2, &d, &dh) ||
		    iommu_flb_preserve_iommu(&w2, 0x5000, IOMMU_ARM_SMMUV3, &v, &ih))
			die("indexed writer", -1);
		for (i = 0; i < 2; i++) {
			x.devid = (unsigned int)i;
			if (iommu_flb_preserve_device(&w2, &x, &dh, &ih, &xh))
				die("indexed preserve", i);
		}
		x.devid = 2;
		expect("index-full", &w2, iommu_flb_preserve_device(&w2, &x, &dh, &ih, &xh), -ENOSPC,
		       "ENOSPC", IOMMU_FLB_ERR_INDEX_FULL, "index-full", NULL);
		/* A stale copy put back: the domain after it holds the next slot. */
		{
			struct iommu_flb_writer snapshot = w2;

			if (iommu_flb_preserve_domain(&w2, &d, &dh))
				die("domain after the snapshot", -1);
			w2 = snapshot;
			expect("stale-writer", &w2, iommu_flb_preserve_domain(&w2, &d, &xh), -EUCLEAN,
			       "EUCLEAN", IOMMU_FLB_ERR_INCONSISTENT, "inconsistent", NULL);
		}
	}
	ret = iommu_flb_writer_abort(&w2);
	if (ret)
		die("abort", ret);
	{
		/* A domain a started writer would take. */
		struct iommu_domain_ser d = { .top_table_phys = 0x2000, .vasz = 48 };

		expect("after-finish", &w, iommu_flb_preserve_domain(&w, &d, &h), -EINVAL,
		       "EINVAL", -1, NULL, NULL);
	}

	out = fopen(argv[1], "wb");
	if (!out || fwrite(mem, 1, sizeof(mem), out) != sizeof(mem) || fclose(out)) {
		perror(argv[1]);
		return 2;
	}
	printf("base %#llx\nroot %#llx\n", MEM_BASE, (unsigned long long)root);
	for (i = 0; i < 4; i++)
		if (refs[i])
			printf("iommu %#llx %#llx %llu %u\n", (unsigned long long)hw[i].phys,
			       (unsigned long long)units[i].token, (unsigned long long)units[i].type,
			       refs[i]);
	for (i = 0; i < 110; i++)
		if (dom_live[i])
			printf("domain %#llx %#llx 48\n", (unsigned long long)dom[i].phys,
			       0x20000000ULL + (unsigned long long)i * PAGE);
	for (i = 0; i < 130; i++)
		if (dev_live[i])
			printf("device %#llx %u %u %#llx %#llx\n", (unsigned long long)dev[i].phys,
			       (unsigned int)i % 2, (unsigned int)(130 - i) << 3,
			       (unsigned long long)dom[i % 110].phys,
			       (unsigned long long)hw[i < 2 ? 3 : i % 3].phys);
	return 0;
}
