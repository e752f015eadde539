// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The test module of scripts/kernel-test: in kernel 1 (phase=1) it writes a
 * handover image with the C writer API into the region memmap= reserves,
 * with a manifest of what it preserved; in kernel 2 (phase=2, root= and
 * manifest= from the command line) it validates, restores, walks and looks
 * up that image and compares it with the manifest, then refuses corrupted
 * copies. Every check prints one "PASS:" or "FAIL:" line.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/io.h>
#include <linux/crc32.h>
#include <linux/sched.h>
#include <linux/sched/task_stack.h>
#include <linux/string.h>
#include <linux/bug.h>

#include "flb_test.h"

static int phase;
module_param(phase, int, 0444);
MODULE_PARM_DESC(phase, "1: write the image (kernel 1); 2: read it (kernel 2)");
static unsigned long long region = 0x30000000;
module_param(region, ullong, 0444);
MODULE_PARM_DESC(region, "physical address of the 16 MiB region memmap= reserves");
static unsigned long long root;
module_param(root, ullong, 0644);
MODULE_PARM_DESC(root, "phase 2: the image's root; phase 1 sets it");
static unsigned long long manifest;
module_param(manifest, ullong, 0644);
MODULE_PARM_DESC(manifest, "phase 2: the manifest's address; phase 1 sets it");

/*
 * The descriptor of the library this module links, in .iommu_flb_formats:
 * scripts/kernel-test reads it back from the .ko with `iommu-flb formats`,
 * and kernel 1 negotiates with it as the next kernel's.
 */
IOMMU_FLB_DECLARE_FORMATS();

/* A kernel that reads and writes version 1 only: today's kernels. */
static const struct iommu_flb_formats flb_v1_only = {
	.magic = IOMMU_FLB_FORMATS_MAGIC,
	.version = IOMMU_FLB_FORMATS_VERSION,
	.size = IOMMU_FLB_FORMATS_SIZE,
	.count = 1,
	.entries = { {
		.version = IOMMU_LUO_FLB_VERSION,
		.flags = IOMMU_FLB_FORMATS_READ | IOMMU_FLB_FORMATS_WRITE,
	} },
};

u64 flb_region_phys;
void *flb_region;
static unsigned int passed, failed;

void flb_check(bool ok, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	pr_info("kernel %d: %s: %pV\n", phase, ok ? "PASS" : "FAIL", &vaf);
	va_end(args);
	if (ok)
		passed++;
	else
		failed++;
}

void flb_note(const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	pr_info("kernel %d: %pV\n", phase, &vaf);
	va_end(args);
}

void __noreturn iommu_flb_panic(const char *file, size_t file_len, u32 line,
				const char *msg, size_t msg_len)
{
	pr_emerg("Rust panic in the iommu-flb library at %.*s:%u: %.*s\n",
		 (int)min_t(size_t, file_len, 256), file, line,
		 (int)min_t(size_t, msg_len, 256), msg);
	BUG();
}

u32 flb_manifest_crc(const struct flb_manifest *m)
{
	return crc32_le(~0u, (const u8 *)m + offsetof(struct flb_manifest, size),
			sizeof(*m) - offsetof(struct flb_manifest, size));
}

u32 flb_crc32(u32 crc, const void *buf, size_t len)
{
	return ~crc32_le(~crc, buf, len);
}

int flb_manifest_key_cmp(const void *key, const void *elt)
{
	const struct flb_m_device *k = key, *d = elt;

	if (k->segment != d->segment)
		return k->segment < d->segment ? -1 : 1;
	if (k->devid != d->devid)
		return k->devid < d->devid ? -1 : 1;
	return 0;
}

/* The stack probe (see FLB_CALL). */
static const char *const flb_export_names[FLB_NR_EXPORTS] = {
#define FLB_EXPORT(name) [FLB_X_##name] = #name,
#include "flb_exports.h"
#undef FLB_EXPORT
};
static unsigned long flb_stack_max[FLB_NR_EXPORTS];
static unsigned long flb_stack_calls[FLB_NR_EXPORTS];
static const char *flb_stack_what[FLB_NR_EXPORTS];
static unsigned long flb_stack_skipped;
const char *flb_probe_what = "";

bool flb_probe_room(void)
{
	unsigned long left = current_stack_pointer - (unsigned long)task_stack_page(current);

	if (left > FLB_PROBE_BYTES + 1024)
		return true;
	flb_stack_skipped++;
	return false;
}

void flb_probe_end(enum flb_export e, unsigned long sp, unsigned long flags)
{
	u64 *p;

	if (!sp)
		return;
	for (p = (u64 *)(sp - FLB_PROBE_BYTES); p < (u64 *)sp; p++)
		if (*p != FLB_PAINT)
			break;
	local_irq_restore(flags);
	if (sp - (unsigned long)p > flb_stack_max[e]) {
		flb_stack_max[e] = sp - (unsigned long)p;
		flb_stack_what[e] = flb_probe_what;
	}
	flb_stack_calls[e]++;
}

/*
 * One line per export called in this kernel: the deepest any of its calls
 * went below the caller's stack pointer, this module's callbacks included.
 * A call that reached the bottom of the painted area fails: its depth is
 * unknown, and it is above the limit anyway.
 */
void flb_report_stack(void)
{
	int e;

	for (e = 0; e < FLB_NR_EXPORTS; e++) {
		if (!flb_stack_calls[e])
			continue;
		flb_check(flb_stack_max[e] < 2048,
			  "stack %s: %lu bytes deepest over %lu calls (limit 2048), in: %s",
			  flb_export_names[e], flb_stack_max[e], flb_stack_calls[e],
			  flb_stack_what[e]);
	}
	flb_check(!flb_stack_skipped, "stack probe: %lu calls without room to measure",
		  flb_stack_skipped);
}

/*
 * Kernel 1, before writing: what the next kernel reads decides what to
 * write. An upgrade (its descriptor is this module's) agrees on version 2,
 * a rollback to a version-1 kernel on version 1, and the writer
 * configuration follows.
 */
static void flb_negotiate_checks(void)
{
	const struct iommu_flb_formats *ours;
	struct iommu_flb_negotiated agreed = { 0 };
	struct iommu_flb_writer_config cfg = { 0 };
	int ret;

	ours = FLB_CALL(iommu_flb_library_formats, iommu_flb_library_formats());
	ret = FLB_CALL(iommu_flb_negotiate,
		       iommu_flb_negotiate(ours, &iommu_flb_formats_descriptor, &agreed));
	flb_check(!ret && agreed.version == 2,
		  "negotiate with the next kernel's descriptor (the module's .iommu_flb_formats): version %u (ret %d)",
		  agreed.version, ret);
	ret = FLB_CALL(iommu_flb_negotiate, iommu_flb_negotiate(ours, &flb_v1_only, &agreed));
	flb_check(!ret && agreed.version == 1,
		  "negotiate with a kernel that reads version 1 only: version %u (ret %d)",
		  agreed.version, ret);
	ret = FLB_CALL(iommu_flb_writer_config_negotiated,
		       iommu_flb_writer_config_negotiated(&agreed, 0, &cfg));
	flb_check(!ret && cfg.version == 1, "writer config from the agreement: version %u (ret %d)",
		  cfg.version, ret);
}

static int __init flb_init(void)
{
	struct flb_manifest *m;
	int ret = 0;

	BUILD_BUG_ON(sizeof(struct flb_manifest) > FLB_MANIFEST_SIZE);
	if (phase != 1 && phase != 2) {
		pr_err("phase=1 (write) or phase=2 (read) is required\n");
		return -EINVAL;
	}
	flb_region_phys = region;
	flb_region = memremap(region, FLB_REGION_SIZE, MEMREMAP_WB);
	flb_check(flb_region, "region 0x%llx+0x%llx mapped with memremap()", region,
		  FLB_REGION_SIZE);
	if (!flb_region)
		goto out;

	if (phase == 1) {
		flb_negotiate_checks();
		m = flb_region;
		memset(m, 0, sizeof(*m));
		ret = flb_write_image(m);
		if (!ret) {
			root = m->root;
			manifest = region;
			m->magic = FLB_MANIFEST_MAGIC;
			m->size = sizeof(*m);
			m->crc = flb_manifest_crc(m);
			flb_note("handover root=0x%llx manifest=0x%llx", root, manifest);
		}
	} else {
		flb_check(manifest >= region && manifest - region <=
			  FLB_REGION_SIZE - FLB_MANIFEST_SIZE &&
			  !(manifest & (PAGE_SIZE - 1)),
			  "manifest=0x%llx and root=0x%llx from the command line, manifest inside the region",
			  manifest, root);
		if (manifest < region || manifest - region > FLB_REGION_SIZE - FLB_MANIFEST_SIZE)
			goto out;
		m = flb_region + (manifest - region);
		flb_check(m->magic == FLB_MANIFEST_MAGIC && m->size == sizeof(*m) &&
			  m->crc == flb_manifest_crc(m),
			  "manifest from kernel 1 intact (magic, size, crc32 0x%08x)", m->crc);
		if (m->magic == FLB_MANIFEST_MAGIC && m->crc == flb_manifest_crc(m)) {
			flb_check(m->root == root, "root on the command line is the manifest's (0x%llx)",
				  m->root);
			flb_read_image(m, root);
		}
	}
	flb_report_stack();
out:
	pr_info("kernel %d: done: %u passed, %u failed\n", phase, passed, failed);
	/* Stay loaded either way: the result is in the log, the region stays mapped. */
	return 0;
}

static void __exit flb_exit(void)
{
	if (flb_region)
		memunmap(flb_region);
}

module_init(flb_init);
module_exit(flb_exit);
MODULE_DESCRIPTION("iommu-flb handover across kexec, through the library's C API");
MODULE_LICENSE("Dual MIT/GPL");
