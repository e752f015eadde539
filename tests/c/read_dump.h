/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The flat dump the C test readers read (byte i is physical address
 * dump_base + i): read_dump() reads the whole file into memory, and
 * dump_page() is the struct iommu_flb_mem.page callback over it. Include
 * after iommu_flb_api.h.
 */
#ifndef IOMMU_FLB_TEST_READ_DUMP_H
#define IOMMU_FLB_TEST_READ_DUMP_H

#include <stdio.h>
#include <stdlib.h>

/* Reads a whole file; NULL (after perror) if it cannot. */
static inline unsigned char *read_dump(const char *path, size_t *len_out)
{
	unsigned char *buf;
	FILE *f = fopen(path, "rb");
	long len;

	if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		perror(path);
		return NULL;
	}
	buf = malloc(len ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		perror(path);
		return NULL;
	}
	fclose(f);
	*len_out = (size_t)len;
	return buf;
}

/* The image's page size; a reader with a PAGE_SIZE argument sets it. */
static size_t page_size = 4096;

static unsigned char *dump;
static unsigned long long dump_base;
static size_t dump_len;

/*
 * struct iommu_flb_mem.page: the addresses come from the image, so any
 * address may be asked for; the callback hands out only pages of this
 * handover (here: of the dump) and NULL for anything else. The library
 * promises page-aligned addresses; anything else fails the test.
 */
static inline const __u8 *dump_page(void *ctx, __u64 phys)
{
	unsigned long long off;

	(void)ctx;
	if (phys % page_size) {
		fprintf(stderr, "page(%#llx): not page-aligned\n", (unsigned long long)phys);
		exit(1);
	}
	if (phys < dump_base)
		return NULL;
	off = phys - dump_base;
	if (off > dump_len || dump_len - off < page_size)
		return NULL;
	return dump + off;
}

#endif
