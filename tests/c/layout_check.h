/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The compile-time layout assertions of the C layout tables (layout_v2.c,
 * formats_section.c): each line names a struct and the snapshot's numbers,
 * which tests/c_header.rs looks for line by line.
 */
#ifndef IOMMU_FLB_LAYOUT_CHECK_H
#define IOMMU_FLB_LAYOUT_CHECK_H

#define OFF(type, field) __builtin_offsetof(type, field)
#define FSIZE(type, field) sizeof(((type *)0)->field)
#define CHECK(cond) _Static_assert(cond, #cond)
#define FIELD(type, field, off, size) \
	CHECK(OFF(type, field) == (off)); CHECK(FSIZE(type, field) == (size))
#define LAYOUT(type, size) CHECK(sizeof(type) == (size)); CHECK(_Alignof(type) == 1)

#endif /* IOMMU_FLB_LAYOUT_CHECK_H */
