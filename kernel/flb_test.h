/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the three files of the test module share: the reserved region, the
 * manifest kernel 1 leaves beside the image for kernel 2, the check
 * reporting and the stack probe. Only flb_write.c and flb_read.c call the
 * C API.
 */
#ifndef _FLB_TEST_H
#define _FLB_TEST_H

#include <linux/types.h>
#include <linux/compiler.h>
#include <linux/irqflags.h>
#include <asm/asm.h>

#include "iommu_flb_api.h"
#include "iommu_flb_kernel.h"

/* The region memmap= reserves on both command lines. */
#define FLB_REGION_PAGES 4096
#define FLB_REGION_SIZE ((u64)FLB_REGION_PAGES * PAGE_SIZE)
/* Its first pages hold the manifest; the image's pages come from the rest. */
#define FLB_MANIFEST_PAGES 128
#define FLB_MANIFEST_SIZE ((u64)FLB_MANIFEST_PAGES * PAGE_SIZE)

/* What kernel 1 preserves (before unpreserving some of it). */
#define FLB_INTEL_IOMMUS 4
#define FLB_SMMUV3_IOMMUS 4
/* + one Intel IOMMU never used (invisible) and one unpreserved */
#define FLB_IOMMUS (FLB_INTEL_IOMMUS + FLB_SMMUV3_IOMMUS + 2)
#define FLB_DOMAINS 48
#define FLB_DEAD_DOMAINS 2	/* whose devices all go, then themselves */
#define FLB_DEVICES 3200
#define FLB_MAX_PAGES 256

#define FLB_MANIFEST_MAGIC 0x54534546424c4649ULL /* "IFLBFEST" */

struct flb_m_iommu {
	u64 phys;			/* its record */
	u64 token;
	u64 type;
	union iommu_hw_vendor_ser vendor;
	u32 live_devices;		/* 0: invisible to the reader */
};

struct flb_m_domain {
	u64 phys;
	u64 top_table_phys;
	u64 top_level;
	u32 vasz;
	u8 sign_extend;
	u8 live;
};

struct flb_m_device {
	u64 phys;
	u32 segment;
	u32 devid;
	u64 token;
	u64 attachment_id;
	u32 domain;			/* index in domains[] */
	u32 iommu;			/* index in iommus[] */
	union iommu_device_vendor_ser vendor;
	u8 live;
};

/*
 * The manifest: everything kernel 1 preserved, devices sorted by
 * (segment, devid), and the pages the image took. Kernel 2 finds it at the
 * address its command line gives and trusts it once its CRC matches.
 */
struct flb_manifest {
	u64 magic;
	u32 crc;			/* crc32_le of everything after it */
	u32 size;
	u64 root;
	/* The same objects written again in version 2 (its own pages). */
	u64 root_v2;
	u64 generation_v2;
	u32 nr_pages_v2;
	u32 nr_iommus, nr_domains, nr_devices, nr_pages;
	u32 live_iommus, live_domains, live_devices;
	struct flb_m_iommu iommus[FLB_IOMMUS];
	struct flb_m_domain domains[FLB_DOMAINS];
	struct flb_m_device devices[FLB_DEVICES];
	u64 pages[FLB_MAX_PAGES];	/* in allocation order */
};

/* flb_main.c */
extern u64 flb_region_phys;
extern void *flb_region;
void flb_check(bool ok, const char *fmt, ...) __printf(2, 3);
void flb_note(const char *fmt, ...) __printf(1, 2);
u32 flb_manifest_crc(const struct flb_manifest *m);
int flb_manifest_key_cmp(const void *key, const void *elt);

/*
 * The stack probe: FLB_CALL(name, call) runs an API call with interrupts
 * off over a painted stack and records the deepest byte it wrote below the
 * caller's stack pointer, per exported function (the callbacks it makes
 * into this module included).
 */
enum flb_export {
#define FLB_EXPORT(name) FLB_X_##name,
#include "flb_exports.h"
#undef FLB_EXPORT
	FLB_NR_EXPORTS
};
#define FLB_PROBE_BYTES 6144
#define FLB_PAINT 0x5a5aa5a5c3c33c3cULL
bool flb_probe_room(void);
/* What the calls are doing now, named in the report of the deepest one. */
extern const char *flb_probe_what;
void flb_probe_end(enum flb_export e, unsigned long sp, unsigned long flags);
void flb_report_stack(void);

/* Paints the FLB_PROBE_BYTES below the caller's stack pointer (inline, so
 * that nothing but the API call runs below it afterwards). */
static __always_inline unsigned long flb_probe_begin(unsigned long *flags)
{
	unsigned long sp;
	u64 *p;

	if (!flb_probe_room()) {
		*flags = 0;
		return 0;
	}
	local_irq_save(*flags);
	sp = current_stack_pointer;
	for (p = (u64 *)(sp - FLB_PROBE_BYTES); p < (u64 *)sp; p++)
		*(volatile u64 *)p = FLB_PAINT;
	return sp;
}

#define FLB_CALL(name, call) ({						\
	unsigned long __flags, __sp = flb_probe_begin(&__flags);	\
	typeof(call) __ret = (call);					\
	flb_probe_end(FLB_X_##name, __sp, __flags);			\
	__ret;								\
})

/*
 * What struct iommu_flb_mem.crc32 and struct iommu_flb_page_alloc.crc32
 * return in both kernels: zlib's convention from the kernel's crc32_le(),
 * which neither seeds nor inverts.
 */
u32 flb_crc32(u32 crc, const void *buf, size_t len);

/* flb_write.c: kernel 1 */
int flb_write_image(struct flb_manifest *m);
/* flb_read.c: kernel 2 */
int flb_read_image(const struct flb_manifest *m, u64 root);

#endif /* _FLB_TEST_H */
