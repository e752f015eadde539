/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The formats descriptor in C: the layout of the frozen snapshot
 * abi/formats-v1.txt asserted against include/iommu_flb.h (every number
 * copied from the snapshot; tests/c_header.rs checks each struct and field
 * line of the snapshot has its line here), and IOMMU_FLB_DECLARE_FORMATS()
 * used once, as a kernel would. Built by tests/c_header.rs as userspace C
 * and as kernel C (__KERNEL__, -nostdinc, only <linux/types.h>), with
 * -Wall -Wextra -Werror; the test reads the section .iommu_flb_formats out
 * of the objects (and of a program linked with --gc-sections) and parses
 * it with the Rust library.
 */
#include "iommu_flb.h"

#include "layout_check.h"

LAYOUT(struct iommu_flb_formats_entry, 24);
FIELD(struct iommu_flb_formats_entry, version, 0, 4);
FIELD(struct iommu_flb_formats_entry, flags, 4, 4);
FIELD(struct iommu_flb_formats_entry, compat_known, 8, 8);
FIELD(struct iommu_flb_formats_entry, incompat_known, 16, 8);

LAYOUT(struct iommu_flb_formats, 208);
FIELD(struct iommu_flb_formats, magic, 0, 4);
FIELD(struct iommu_flb_formats, version, 4, 4);
FIELD(struct iommu_flb_formats, size, 8, 4);
FIELD(struct iommu_flb_formats, count, 12, 4);
FIELD(struct iommu_flb_formats, entries, 16, 192);

CHECK(IOMMU_FLB_FORMATS_SIZE == 208);
CHECK(IOMMU_FLB_FORMATS_MAX_ENTRIES == 8);
CHECK(IOMMU_FLB_FORMATS_COUNT <= IOMMU_FLB_FORMATS_MAX_ENTRIES);

IOMMU_FLB_DECLARE_FORMATS();

#ifndef __KERNEL__
/* Linked as a program: nothing refers to the descriptor, which must
 * survive the link all the same. */
int main(void)
{
	return 0;
}
#endif
