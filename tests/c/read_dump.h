/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Reads a flat dump file into memory for the C test readers: the whole
 * file, whatever its length. Returns NULL (after perror) if it cannot.
 */
#ifndef IOMMU_FLB_TEST_READ_DUMP_H
#define IOMMU_FLB_TEST_READ_DUMP_H

#include <stdio.h>
#include <stdlib.h>

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

#endif
