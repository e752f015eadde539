/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Version 2 through the C API with the caller's CRC: writes a version-2
 * image with iommu_flb_writer_start_config() over scattered pages of a
 * flat buffer, with zlib's crc32() as the CRC callback (as the kernel
 * passes ~crc32_le(~crc, buf, len)); validates it through the C API with
 * the same callback and walks it via the ser_v2 records; and checks, with
 * zlib alone, that every page's stored crc is
 * crc32(crc32(0, page, off), page + off + 4, page_size - off - 4), off 48
 * in the root and 40 in an array page.
 *
 * Usage: capi_v2_zlib OUT
 *   OUT receives the flat dump (byte i is physical address MEM_BASE + i).
 *   stdout receives "ok <check> ..." per check, then the manifest in
 *   old_kernel_writer.c's format, from the C walk:
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
#include <zlib.h>

#include "iommu_flb_api.h"

#define MEM_BASE 0x70000000ULL
#define NR_PAGES 32
#define PAGE 4096
#define GENERATION 0x1122334455667788ULL
#define NR_DOMAINS 140 /* two domain pages: 126 + 14 */
#define NR_DEVICES 100 /* two device pages: 56 + 44 */

static unsigned char mem[NR_PAGES * PAGE] __attribute__((aligned(PAGE)));

struct pool {
	unsigned char used[NR_PAGES];
	unsigned long crc_calls;
	/* Inside a library call on this writer, if set. */
	struct iommu_flb_writer *writer;
	unsigned long not_busy;
};

static void die(const char *what, long v)
{
	fprintf(stderr, "capi_v2_zlib: %s: %ld\n", what, v);
	exit(1);
}

static __u64 pool_alloc(void *ctx)
{
	struct pool *p = ctx;
	unsigned int k, idx;

	for (k = 0; k < NR_PAGES; k++) {
		idx = (k * 13u + 5u) % NR_PAGES;
		if (!p->used[idx]) {
			p->used[idx] = 1;
			memset(mem + (size_t)idx * PAGE, 0, PAGE);
			return MEM_BASE + (__u64)idx * PAGE;
		}
	}
	return 0;
}

static __u8 *pool_page(void *ctx, __u64 phys)
{
	struct pool *p = ctx;
	__u64 idx = (phys - MEM_BASE) / PAGE;

	if (phys < MEM_BASE || phys % PAGE || idx >= NR_PAGES || !p->used[idx])
		die("page(): not a page of the pool", (long)phys);
	return mem + idx * PAGE;
}

static void pool_free(void *ctx, __u64 phys)
{
	struct pool *p = ctx;
	__u64 idx = (phys - MEM_BASE) / PAGE;

	if (phys >= MEM_BASE && idx < NR_PAGES)
		p->used[idx] = 0;
}

/* The reader's page callback: only pages of the pool in use. */
static const __u8 *pool_read(void *ctx, __u64 phys)
{
	struct pool *p = ctx;
	__u64 idx = (phys - MEM_BASE) / PAGE;

	if (phys < MEM_BASE || phys % PAGE || idx >= NR_PAGES || !p->used[idx])
		return NULL;
	return mem + idx * PAGE;
}

/*
 * The CRC callback, in zlib's convention: zlib's crc32() is one as it is.
 * (The kernel's is ~crc32_le(~crc, buf, len).) It must run only inside a
 * library call on the writer, when one is named: that writer is busy then.
 */
static __u32 zlib_crc(void *ctx, __u32 crc, const void *buf, size_t len)
{
	struct pool *p = ctx;
	struct iommu_flb_error err;

	p->crc_calls++;
	if (p->writer && iommu_flb_writer_last_error(p->writer, &err) != -EBUSY)
		p->not_busy++;
	return (__u32)crc32_z(crc, buf, len);
}

static __u32 le32(const unsigned char *p)
{
	return (__u32)p[0] | (__u32)p[1] << 8 | (__u32)p[2] << 16 | (__u32)p[3] << 24;
}

/* The page's CRC, with zlib alone: the bytes before the field, then after. */
static __u32 page_crc(const unsigned char *page, size_t off)
{
	uLong c = crc32(0L, Z_NULL, 0);

	c = crc32(c, page, (uInt)off);
	return (__u32)crc32(c, page + off + 4, (uInt)(PAGE - off - 4));
}

static const struct {
	__u64 token;
	__u64 type;
} units[3] = {
	{ 0xfed90000ULL, IOMMU_INTEL },
	{ 0x09050000ULL, IOMMU_ARM_SMMUV3 },
	{ 0xfed91000ULL, IOMMU_INTEL }, /* preserved, never used: invisible */
};

static int validate(const struct iommu_flb_mem *m, __u64 root, void **scratch,
		    const struct iommu_flb_image **img, struct iommu_flb_error *err)
{
	size_t size;
	int ret;

	ret = iommu_flb_scratch_size(m, root, &size, err);
	if (ret)
		return ret;
	free(*scratch);
	*scratch = aligned_alloc(IOMMU_FLB_SCRATCH_ALIGN, (size + 7) & ~(size_t)7);
	if (!*scratch)
		die("aligned_alloc", (long)size);
	return iommu_flb_validate(m, root, IOMMU_FLB_MODE_HANDOVER, *scratch, size, img, err);
}

int main(int argc, char **argv)
{
	static struct pool pool;
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = pool_alloc, .page = pool_page, .free_page = pool_free, .ctx = &pool,
		.page_size = PAGE, .crc32 = zlib_crc,
	};
	struct iommu_flb_mem m = {
		.page = pool_read, .ctx = &pool, .page_size = PAGE, .crc32 = zlib_crc,
	};
	struct iommu_flb_writer_config cfg = { .version = 2, .generation = GENERATION };
	struct iommu_flb_writer w = IOMMU_FLB_WRITER_INIT;
	struct iommu_flb_handle hw[3], dom[NR_DOMAINS], dev[NR_DEVICES];
	unsigned char dev_live[NR_DEVICES];
	unsigned int refs[3] = { 0 }, n, pages;
	__u64 index[2 * 2 * NR_DEVICES + 2];
	const struct iommu_flb_image *img;
	struct iommu_flb_image_info info;
	struct iommu_flb_error err;
	struct iommu_flb_cursor cur;
	struct iommu_flb_iommu_ref ir;
	struct iommu_flb_domain_ref dr;
	struct iommu_flb_device_ref vr;
	void *scratch = NULL;
	__u64 root, phys;
	unsigned long writer_calls;
	FILE *out;
	int i, ret;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT\n", argv[0]);
		return 2;
	}
	if (iommu_flb_writer_index_size(NR_DEVICES) > sizeof(index))
		die("index too small", (long)iommu_flb_writer_index_size(NR_DEVICES));

	/* A bad configuration is refused, naming the field, with no page taken. */
	cfg.reserved = 1;
	ret = iommu_flb_writer_start_config(&w, &alloc, &cfg, NULL, 0, &root);
	if (ret != -EINVAL || iommu_flb_writer_last_error(&w, &err) ||
	    err.kind != IOMMU_FLB_ERR_INVALID_ARGUMENT || !err.field || strcmp(err.field, "reserved"))
		die("reserved", ret);
	cfg.reserved = 0;
	cfg.version = 3;
	ret = iommu_flb_writer_start_config(&w, &alloc, &cfg, NULL, 0, &root);
	if (ret != -EINVAL || iommu_flb_writer_last_error(&w, &err) || !err.field ||
	    strcmp(err.field, "version"))
		die("version", ret);
	for (i = 0; i < NR_PAGES; i++)
		if (pool.used[i])
			die("a refused start took a page", i);
	printf("ok bad-config EINVAL reserved version\n");

	cfg.version = 2;
	ret = iommu_flb_writer_start_config(&w, &alloc, &cfg, index,
					    iommu_flb_writer_index_size(NR_DEVICES), &root);
	if (ret)
		die("start_config", ret);
	pool.writer = &w;

	for (i = 0; i < 3; i++) {
		union iommu_hw_vendor_ser v;

		memset(&v, 0, sizeof(v));
		if (units[i].type == IOMMU_INTEL) {
			v.intel.phys_addr = units[i].token;
			v.intel.root_table = 0x7000000ULL + (__u64)i * PAGE;
			v.intel.context_tables_bitmap[7] = 0x80;
		} else {
			v.smmuv3.phys_addr = units[i].token;
			v.smmuv3.strtab_base_cfg = 0x10;
		}
		ret = iommu_flb_preserve_iommu(&w, units[i].token, units[i].type, &v, &hw[i]);
		if (ret)
			die("preserve_iommu", ret);
	}
	for (i = 0; i < NR_DOMAINS; i++) {
		struct iommu_domain_ser d = {
			.top_table_phys = 0x20000000ULL + (__u64)i * PAGE,
			.top_level = 4,
			.vasz = 39 + (unsigned int)i % 10,
		};

		ret = iommu_flb_preserve_domain(&w, &d, &dom[i]);
		if (ret)
			die("preserve_domain", ret);
	}
	for (i = 0; i < NR_DEVICES; i++) {
		int unit = i % 2;
		struct iommu_device_ser d;

		memset(&d, 0, sizeof(d));
		d.devid = (unsigned int)(NR_DEVICES - i) << 3; /* descending: the index finds duplicates */
		d.pci_domain_nr = (unsigned int)i % 3;
		d.dma_owner_token = 0xd000 + (__u64)i;
		if (units[unit].type == IOMMU_INTEL) {
			d.domain_iommu_ser.attachment_id = (__u64)i % 7 + 1;
			d.vendor.intel.pasid_table = 0x9000000ULL + (__u64)i * PAGE;
			d.vendor.intel.max_pasid = 1u << 20;
		} else {
			d.vendor.smmuv3.l1_cdtab_lu_state = 0xa000000ULL + (__u64)i;
			d.vendor.smmuv3.num_l2_cdtables = 2;
		}
		ret = iommu_flb_preserve_device(&w, &d, &dom[(i * 7) % NR_DOMAINS], &hw[unit],
						&dev[i]);
		if (ret)
			die("preserve_device", ret);
		dev_live[i] = 1;
		refs[unit]++;
	}
	for (i = 3; i < NR_DEVICES; i += 9) {
		ret = iommu_flb_unpreserve_device(&w, &dev[i]);
		if (ret)
			die("unpreserve_device", ret);
		dev_live[i] = 0;
		refs[i % 2]--;
	}
	ret = iommu_flb_unpreserve_domain(&w, &dom[NR_DOMAINS - 1]); /* no device uses it */
	if (ret)
		die("unpreserve_domain", ret);
	pool.writer = NULL;
	ret = iommu_flb_writer_finish(&w, &root);
	if (ret)
		die("finish", ret);
	writer_calls = pool.crc_calls;
	if (!writer_calls || pool.not_busy)
		die("the writer's CRC calls (and those outside a call)", (long)pool.not_busy);
	printf("ok writer-crc-callback\n");

	/* Every page's crc, with zlib alone. */
	for (i = 0, pages = 0; i < NR_PAGES; i++) {
		const unsigned char *page = mem + (size_t)i * PAGE;
		int is_root = MEM_BASE + (__u64)i * PAGE == root;
		size_t off = is_root ? IOMMU_FLB_V2_ROOT_CRC_OFFSET : IOMMU_FLB_V2_PAGE_CRC_OFFSET;
		__u32 magic = is_root ? IOMMU_FLB_V2_ROOT_MAGIC : IOMMU_FLB_V2_PAGE_MAGIC;

		if (!pool.used[i])
			continue;
		if (le32(page + (is_root ? 8 : 16)) != magic)
			die("magic", i);
		if (le32(page + off) != page_crc(page, off))
			die("page crc", i);
		pages++;
	}
	/* The root, one IOMMU page, two domain pages, two device pages. */
	if (pages != 6)
		die("pages", pages);
	printf("ok zlib-page-crc %u\n", pages);

	/* The C reader, with the same callback. */
	ret = validate(&m, root, &scratch, &img, &err);
	if (ret) {
		fprintf(stderr, "%s\n", err.message);
		die("validate", ret);
	}
	if (pool.crc_calls < writer_calls + 2 * pages)
		die("the reader's CRC calls", (long)(pool.crc_calls - writer_calls));
	if (iommu_flb_image_info(img, &info) || info.version != 2 || info.pages != pages ||
	    info.live_iommus != 2)
		die("image_info", (long)info.version);
	printf("ok validate-v2 crc-callback\n");

	printf("base %#llx\nroot %#llx\n", (unsigned long long)MEM_BASE, (unsigned long long)root);
	n = 0;
	iommu_flb_for_each_iommu(img, cur, ir, ret) {
		const struct iommu_hw_v2_ser *s = ir.ser_v2;

		if (ir.ser || !s)
			die("iommu ser_v2", n);
		if (s->type == IOMMU_INTEL && s->vendor.intel.context_tables_bitmap[7] != 0x80)
			die("intel vendor", n);
		printf("iommu %#llx %#llx %llu %u\n", (unsigned long long)ir.phys,
		       (unsigned long long)s->token, (unsigned long long)s->type, s->hdr.ref_count);
		if (ir.phys != hw[n].phys || s->token != units[n].token || s->hdr.ref_count != refs[n])
			die("iommu", n);
		n++;
	}
	if (ret || n != 2)
		die("iommu walk", ret);
	n = 0;
	iommu_flb_for_each_domain(img, cur, dr, ret) {
		const struct iommu_domain_v2_ser *s = dr.ser_v2;

		if (dr.ser || !s || dr.phys != dom[n].phys || s->vasz != 39 + n % 10)
			die("domain", n);
		printf("domain %#llx %#llx %u\n", (unsigned long long)dr.phys,
		       (unsigned long long)s->top_table_phys, s->vasz);
		n++;
	}
	if (ret || n != NR_DOMAINS - 1)
		die("domain walk", ret);
	n = 0;
	iommu_flb_for_each_device(img, cur, vr, ret) {
		const struct iommu_device_v2_ser *s = vr.ser_v2;
		struct iommu_flb_domain_ref d;
		struct iommu_flb_iommu_ref u;

		while (n < NR_DEVICES && !dev_live[n])
			n++;
		if (vr.ser || !s || n >= NR_DEVICES || vr.phys != dev[n].phys)
			die("device", n);
		if (iommu_flb_device_domain(img, &vr, &d) || iommu_flb_device_iommu(img, &vr, &u))
			die("device refs", n);
		/* Version 2 references by index in the chain. */
		if (s->domain_index != (n * 7) % NR_DOMAINS || s->iommu_index != n % 2 ||
		    d.phys != dom[(n * 7) % NR_DOMAINS].phys || u.phys != hw[n % 2].phys)
			die("device index", n);
		printf("device %#llx %u %u %#llx %#llx\n", (unsigned long long)vr.phys,
		       s->pci_domain_nr, s->devid, (unsigned long long)d.phys,
		       (unsigned long long)u.phys);
		n++;
	}
	if (ret)
		die("device walk", ret);

	/* A flipped bit in the last page is refused as a checksum mismatch. */
	{
		struct iommu_flb_cursor pc = IOMMU_FLB_CURSOR_INIT;
		__u64 last = 0;
		unsigned char *byte;

		while (iommu_flb_next_page(img, &pc, &phys) == 1)
			last = phys;
		byte = mem + (last - MEM_BASE) + PAGE - 1;
		*byte ^= 0x10;
		ret = validate(&m, root, &scratch, &img, &err);
		if (ret != -EBADMSG || err.kind != IOMMU_FLB_ERR_CHECKSUM_MISMATCH ||
		    err.page_phys != last)
			die("flipped bit", ret);
		*byte ^= 0x10;
		printf("ok flipped-bit EBADMSG checksum-mismatch\n");
	}
	free(scratch);

	out = fopen(argv[1], "wb");
	if (!out || fwrite(mem, 1, sizeof(mem), out) != sizeof(mem) || fclose(out))
		die("write dump", 0);
	return 0;
}
