/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Upgrade and rollback through the C API, as an outgoing kernel does it
 * before kexec: the descriptor IOMMU_FLB_DECLARE_FORMATS() defines is the
 * library's own (iommu_flb_library_formats()); iommu_flb_negotiate() with
 * the next kernel's descriptor, read from a file (the section the test
 * extracted from an ELF object, or one it wrote), gives the version to
 * write; iommu_flb_writer_config_negotiated() turns it into a writer
 * configuration, and a writer started with it writes that version, which
 * the reader then reports. Forged descriptors are refused with the
 * documented errno.
 *
 * Usage: capi_formats FILE...
 *   For each FILE (the next kernel's descriptor, any length):
 *     negotiate <index> <errno name or 0> <version>
 *   then "ok <check> ..." per built-in check. Any unexpected result exits 1.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommu_flb_api.h"

IOMMU_FLB_DECLARE_FORMATS();

#define PAGE 4096
#define NR_PAGES 8
#define GENERATION 0x0123456789abcdefULL

static unsigned char mem[NR_PAGES * PAGE] __attribute__((aligned(PAGE)));
static unsigned int next_page;

static void die(const char *what, long v)
{
	fprintf(stderr, "capi_formats: %s: %ld\n", what, v);
	exit(1);
}

static const char *errno_name(int ret)
{
	switch (ret) {
	case 0: return "0";
	case -EINVAL: return "EINVAL";
	case -EPROTO: return "EPROTO";
	case -EOPNOTSUPP: return "EOPNOTSUPP";
	case -EBADMSG: return "EBADMSG";
	case -EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	default: die("unexpected return", ret); return "";
	}
}

/* Pages are identity-mapped: a page's "physical address" is its address. */
static __u64 pool_alloc(void *ctx)
{
	(void)ctx;
	if (next_page == NR_PAGES)
		return 0;
	memset(mem + (size_t)next_page * PAGE, 0, PAGE);
	return (__u64)(uintptr_t)(mem + (size_t)next_page++ * PAGE);
}

static __u8 *pool_page(void *ctx, __u64 phys)
{
	(void)ctx;
	return (__u8 *)(uintptr_t)phys;
}

static void pool_free(void *ctx, __u64 phys)
{
	(void)ctx;
	(void)phys;
}

static const __u8 *mem_page(void *ctx, __u64 phys)
{
	(void)ctx;
	if (phys < (__u64)(uintptr_t)mem ||
	    phys >= (__u64)(uintptr_t)(mem + sizeof(mem)))
		return NULL;
	return (const __u8 *)(uintptr_t)phys;
}

/* Writes an empty image with @cfg and returns the version the reader sees. */
static __u64 write_and_read(const struct iommu_flb_writer_config *cfg)
{
	static struct iommu_flb_writer w = IOMMU_FLB_WRITER_INIT;
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = pool_alloc,
		.page = pool_page,
		.free_page = pool_free,
		.ctx = NULL,
		.page_size = PAGE,
		.crc32 = NULL,
	};
	struct iommu_flb_mem m = { .page = mem_page, .ctx = NULL, .page_size = PAGE, .crc32 = NULL };
	static __u64 scratch[1024];
	const struct iommu_flb_image *img;
	struct iommu_flb_image_info info;
	struct iommu_flb_error err;
	__u64 root;
	size_t size;
	int ret;

	next_page = 0;
	ret = iommu_flb_writer_start_config(&w, &alloc, cfg, NULL, 0, &root);
	if (ret)
		die("writer_start_config", ret);
	ret = iommu_flb_writer_finish(&w, &root);
	if (ret)
		die("writer_finish", ret);
	ret = iommu_flb_scratch_size(&m, root, &size, &err);
	if (ret || size > sizeof(scratch))
		die("scratch_size", ret);
	ret = iommu_flb_validate(&m, root, IOMMU_FLB_MODE_HANDOVER, scratch, size, &img, &err);
	if (ret)
		die(err.message, ret);
	ret = iommu_flb_image_info(img, &info);
	if (ret)
		die("image_info", ret);
	return info.version;
}

/* Reads FILE into a zeroed buffer at least one struct long. */
static int negotiate_file(const char *path, struct iommu_flb_negotiated *out)
{
	static unsigned char buf[4096];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		die("open", 0);
	memset(buf, 0, sizeof(buf));
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (n < sizeof(struct iommu_flb_formats))
		die("descriptor file shorter than the struct", (long)n);
	return iommu_flb_negotiate(iommu_flb_library_formats(),
				   (const struct iommu_flb_formats *)buf, out);
}

/* iommu_flb_negotiate() of the library's descriptor edited by @edit. */
static int forged(void (*edit)(struct iommu_flb_formats *f))
{
	struct iommu_flb_formats f = *iommu_flb_library_formats();
	struct iommu_flb_negotiated out = { 7, 7, 7, 7 };
	int ret;

	edit(&f);
	ret = iommu_flb_negotiate(iommu_flb_library_formats(), &f, &out);
	if (out.version || out.reserved || out.compat || out.incompat)
		die("a failed negotiation left a result", out.version);
	return ret;
}

static void bad_magic(struct iommu_flb_formats *f) { f->magic = 0x46464646; }
static void bad_version(struct iommu_flb_formats *f) { f->version = 2; }
static void short_size(struct iommu_flb_formats *f) { f->size = 100; }
static void many_entries(struct iommu_flb_formats *f) { f->count = 9; }
static void dup_version(struct iommu_flb_formats *f) { f->entries[1].version = 1; }
static void unknown_flags(struct iommu_flb_formats *f) { f->entries[0].flags |= 1u << 7; }
static void unused_set(struct iommu_flb_formats *f) { f->entries[5].compat_known = 1; }
static void only_v9(struct iommu_flb_formats *f)
{
	f->count = 1;
	memset(&f->entries[1], 0, sizeof(f->entries[1]));
	f->entries[0].version = 9;
}
static void only_v1(struct iommu_flb_formats *f)
{
	f->count = 1;
	memset(&f->entries[1], 0, sizeof(f->entries[1]));
}

int main(int argc, char **argv)
{
	struct iommu_flb_negotiated agreed;
	struct iommu_flb_writer_config cfg;
	struct iommu_flb_formats v1;
	int i, ret;

	for (i = 1; i < argc; i++) {
		memset(&agreed, 0xff, sizeof(agreed));
		ret = negotiate_file(argv[i], &agreed);
		printf("negotiate %d %s %u\n", i, errno_name(ret), agreed.version);
	}

	if (memcmp(&iommu_flb_formats_descriptor, iommu_flb_library_formats(),
		   sizeof(struct iommu_flb_formats)))
		die("the macro's descriptor differs from the library's", 0);
	printf("ok macro-is-library\n");

	/* Upgrade: both sides this library. */
	ret = iommu_flb_negotiate(&iommu_flb_formats_descriptor, iommu_flb_library_formats(),
				  &agreed);
	if (ret || agreed.version != IOMMU_FLB_V2_VERSION)
		die("own with own", ret);
	ret = iommu_flb_writer_config_negotiated(&agreed, GENERATION, &cfg);
	if (ret || cfg.version != 2 || cfg.reserved || cfg.generation != GENERATION)
		die("config v2", ret);
	printf("ok upgrade %u writes %llu\n", agreed.version,
	       (unsigned long long)write_and_read(&cfg));

	/* Rollback: the next kernel reads only version 1. */
	v1 = *iommu_flb_library_formats();
	only_v1(&v1);
	ret = iommu_flb_negotiate(iommu_flb_library_formats(), &v1, &agreed);
	if (ret || agreed.version != IOMMU_LUO_FLB_VERSION)
		die("own with v1", ret);
	ret = iommu_flb_writer_config_negotiated(&agreed, GENERATION, &cfg);
	if (ret || cfg.version != 1 || cfg.generation != 0)
		die("config v1", ret);
	printf("ok rollback %u writes %llu\n", agreed.version,
	       (unsigned long long)write_and_read(&cfg));

	printf("ok disjoint %s\n", errno_name(forged(only_v9)));
	/* A failed negotiation's zeroed result makes no writer config. */
	memset(&agreed, 0, sizeof(agreed));
	printf("ok config-after-failure %s\n",
	       errno_name(iommu_flb_writer_config_negotiated(&agreed, 1, &cfg)));
	printf("ok null %s %s %s\n",
	       errno_name(iommu_flb_negotiate(NULL, &v1, &agreed)),
	       errno_name(iommu_flb_negotiate(&v1, NULL, &agreed)),
	       errno_name(iommu_flb_negotiate(&v1, &v1, NULL)));
	printf("ok forged %s %s %s %s %s %s %s\n", errno_name(forged(bad_magic)),
	       errno_name(forged(bad_version)), errno_name(forged(short_size)),
	       errno_name(forged(many_entries)), errno_name(forged(dup_version)),
	       errno_name(forged(unknown_flags)), errno_name(forged(unused_set)));
	return 0;
}
