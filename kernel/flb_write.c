// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Kernel 1: writes the handover image with the C writer API, the reserved
 * region being the page allocator, and fills the manifest; then writes the
 * same objects again as a version-2 image, with the kernel's crc32_le() as
 * the CRC callback. One of the two files that call the API.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/errno.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "flb_test.h"

#define PAGE PAGE_SIZE
#define FLB_POOL (FLB_REGION_PAGES - FLB_MANIFEST_PAGES)

/*
 * The page allocator over the region: pages in a scattered order (as the
 * buddy allocator hands them out, not ascending), each zeroed; the page
 * callback maps only pages this allocator handed out and did not take
 * back. Two allocators (the image's and the aborted writer's) share the
 * cursor, never a page.
 */
struct flb_palloc {
	u32 *cursor;
	unsigned long used[BITS_TO_LONGS(FLB_REGION_PAGES)];
	u32 taken;
	struct flb_manifest *m;		/* records the image's pages, or NULL */
	unsigned long crc_calls;
	/* The writer the CRC callback serves: inside a call on it, it is busy. */
	struct iommu_flb_writer *w;
	unsigned long crc_outside;
};

static u32 flb_cursor;

static bool flb_page_index(const struct flb_palloc *a, u64 phys, u32 *idx)
{
	if (phys < flb_region_phys || phys - flb_region_phys >= FLB_REGION_SIZE ||
	    phys & (PAGE - 1))
		return false;
	*idx = (phys - flb_region_phys) / PAGE;
	return test_bit(*idx, a->used);
}

static u64 flb_alloc_page(void *ctx)
{
	struct flb_palloc *a = ctx;
	u32 idx;

	if (*a->cursor >= FLB_POOL)
		return 0;
	/* 1237 is prime to FLB_POOL: every pool page once, scattered. */
	idx = FLB_MANIFEST_PAGES + (u32)(((u64)(*a->cursor)++ * 1237) % FLB_POOL);
	set_bit(idx, a->used);
	a->taken++;
	memset(flb_region + (u64)idx * PAGE, 0, PAGE);
	if (a->m && a->m->nr_pages < FLB_MAX_PAGES)
		a->m->pages[a->m->nr_pages++] = flb_region_phys + (u64)idx * PAGE;
	return flb_region_phys + (u64)idx * PAGE;
}

static u8 *flb_writer_page(void *ctx, u64 phys)
{
	u32 idx;

	if (!flb_page_index(ctx, phys, &idx))
		return NULL;
	return flb_region + (u64)idx * PAGE;
}

/* struct iommu_flb_page_alloc.crc32: the kernel's CRC, counted. */
static u32 flb_writer_crc32(void *ctx, u32 crc, const void *buf, size_t len)
{
	struct flb_palloc *a = ctx;
	struct iommu_flb_error err;

	a->crc_calls++;
	if (a->w && iommu_flb_writer_last_error(a->w, &err) != -EBUSY)
		a->crc_outside++;
	return flb_crc32(crc, buf, len);
}

static void flb_free_page(void *ctx, u64 phys)
{
	struct flb_palloc *a = ctx;
	u32 idx, i;

	if (!flb_page_index(a, phys, &idx))
		return;
	clear_bit(idx, a->used);
	a->taken--;
	if (!a->m)
		return;
	for (i = 0; i < a->m->nr_pages; i++) {
		if (a->m->pages[i] == phys) {
			memmove(&a->m->pages[i], &a->m->pages[i + 1],
				(a->m->nr_pages - i - 1) * sizeof(u64));
			a->m->nr_pages--;
			break;
		}
	}
}

static struct flb_palloc flb_image_alloc, flb_abort_alloc, flb_v2_alloc;
/*
 * Zero-initialised (static) and cleared again before each start: the
 * writer state must start as zeroes.
 */
static struct iommu_flb_writer flb_w, flb_w_abort, flb_w_v2;
static struct iommu_flb_handle flb_iommu_h[FLB_IOMMUS], flb_domain_h[FLB_DOMAINS],
	flb_device_h[FLB_DEVICES];

/* The image's contents, as the manifest records them. */
static void flb_plan(struct flb_manifest *m)
{
	u32 i, j;

	m->nr_iommus = FLB_IOMMUS;
	for (i = 0; i < FLB_IOMMUS; i++) {
		struct flb_m_iommu *u = &m->iommus[i];

		if (i < FLB_INTEL_IOMMUS || i >= FLB_INTEL_IOMMUS + FLB_SMMUV3_IOMMUS) {
			u->type = IOMMU_INTEL;
			u->token = 0xfed90000ULL + i * 0x1000;
			u->vendor.intel.phys_addr = u->token;
			u->vendor.intel.root_table = 0x20000000ULL + i * PAGE;
			for (j = 0; j < 8; j++)
				u->vendor.intel.context_tables_bitmap[j] = (u64)i << 32 | j;
		} else {
			u->type = IOMMU_ARM_SMMUV3;
			u->token = 0x09000000ULL + i * 0x20000;
			u->vendor.smmuv3.phys_addr = u->token;
			u->vendor.smmuv3.strtab_base_cfg = 0x10 + i;
			u->vendor.smmuv3.l1_strtab_lu_state = 3 * i + 1;
			u->vendor.smmuv3.l2_strtab_lu_states_phys = 0x21000000ULL + i * PAGE;
		}
	}
	m->nr_domains = FLB_DOMAINS;
	for (i = 0; i < FLB_DOMAINS; i++) {
		struct flb_m_domain *d = &m->domains[i];

		d->top_table_phys = 0x100000000ULL + i * PAGE;
		d->top_level = i % 3 ? 4 : 5;
		d->vasz = i % 3 ? 48 : 57;
		d->sign_extend = i % 2;
		d->live = i < FLB_DOMAINS - FLB_DEAD_DOMAINS;
	}
	/* Devices in (segment, devid) order: what the reader's lookups bsearch. */
	m->nr_devices = FLB_DEVICES;
	for (i = 0; i < FLB_DEVICES; i++) {
		struct flb_m_device *v = &m->devices[i];
		bool dead_domain = i % 50 == 7;

		v->segment = i / 2048;
		v->devid = (i % 2048) * 29 + 3;
		v->token = 0x1000 + i;
		v->iommu = i % (FLB_INTEL_IOMMUS + FLB_SMMUV3_IOMMUS);
		v->domain = dead_domain ? FLB_DOMAINS - FLB_DEAD_DOMAINS + (i / 50) % 2 :
			i % (FLB_DOMAINS - FLB_DEAD_DOMAINS);
		/* Unpreserved: every device of the two dead domains, and a tenth. */
		v->live = !dead_domain && i % 10 != 3;
		if (m->iommus[v->iommu].type == IOMMU_INTEL) {
			v->attachment_id = i + 1;
			v->vendor.intel.pasid_table = 0x22000000ULL + (u64)i * PAGE;
			v->vendor.intel.max_pasid = 1 << 20;
		} else {
			/* The ASID (stage 1) or VMID (stage 2) the SMMUv3 driver stores. */
			v->attachment_id = 0x100 + i % 256;
			v->vendor.smmuv3.l1_cdtab_lu_state = i;
			v->vendor.smmuv3.num_l2_cdtables = i % 4;
			v->vendor.smmuv3.l2_cdtab_lu_states_phys = 0x23000000ULL + (u64)i * PAGE;
		}
	}
}

static void flb_device_init(const struct flb_m_device *v, struct iommu_device_ser *init)
{
	memset(init, 0, sizeof(*init));
	init->devid = v->devid;
	init->pci_domain_nr = v->segment;
	init->dma_owner_token = v->token;
	init->domain_iommu_ser.attachment_id = v->attachment_id;
	init->vendor = v->vendor;
}

static int flb_writer_error(struct iommu_flb_writer *w, const char *what, int ret)
{
	struct iommu_flb_error err;

	FLB_CALL(iommu_flb_writer_last_error, iommu_flb_writer_last_error(w, &err));
	flb_check(false, "%s: %d: %s", what, ret, err.message);
	return ret;
}

/* A refusal the writer must make, with its errno and kind; the image stays valid. */
static void flb_expect_refusal(const char *what, int ret, int want, u32 kind)
{
	struct iommu_flb_error err;

	flb_probe_what = what;
	FLB_CALL(iommu_flb_writer_last_error, iommu_flb_writer_last_error(&flb_w, &err));
	flb_probe_what = "";
	flb_check(ret == want && err.error == want && err.kind == kind,
		  "writer refuses %s: %d (want %d), kind %u (want %u): %s", what, ret, want,
		  err.kind, kind, err.message);
}

static void flb_refusals(struct flb_manifest *m)
{
	struct iommu_device_ser init;
	struct iommu_flb_handle h;
	const struct flb_m_device *live = NULL, *gone = NULL;
	u32 i;
	int ret;

	for (i = 0; i < m->nr_devices; i++) {
		const struct flb_m_device *v = &m->devices[i];

		if (v->live && !live)
			live = v;
		if (!v->live && !gone)
			gone = v;
	}
	flb_device_init(live, &init);
	ret = FLB_CALL(iommu_flb_preserve_device,
		       iommu_flb_preserve_device(&flb_w, &init, &flb_domain_h[live->domain],
						 &flb_iommu_h[live->iommu], &h));
	flb_expect_refusal("a second live device with the same (segment, devid)", ret, -EEXIST,
			   IOMMU_FLB_ERR_DEVICE_EXISTS);

	ret = FLB_CALL(iommu_flb_unpreserve_domain,
		       iommu_flb_unpreserve_domain(&flb_w, &flb_domain_h[live->domain]));
	flb_expect_refusal("unpreserving a domain with live devices", ret, -EBUSY,
			   IOMMU_FLB_ERR_DOMAIN_IN_USE);

	flb_device_init(live, &init);
	init.devid = 0xffff;	/* no device has it: the plan's devids are 29n + 3 */
	ret = FLB_CALL(iommu_flb_preserve_device,
		       iommu_flb_preserve_device(&flb_w, &init, &flb_domain_h[FLB_DOMAINS - 1],
						 &flb_iommu_h[live->iommu], &h));
	flb_expect_refusal("attaching to an unpreserved domain", ret, -ENOENT,
			   IOMMU_FLB_ERR_ATTACH_TO_DELETED);

	ret = FLB_CALL(iommu_flb_unpreserve_device,
		       iommu_flb_unpreserve_device(&flb_w, &flb_device_h[gone - m->devices]));
	flb_expect_refusal("unpreserving a device twice", ret, -ENOENT,
			   IOMMU_FLB_ERR_ALREADY_UNPRESERVED);
}

/* A second writer, aborted: every page it took goes back. */
static void flb_abort_writer(void)
{
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = flb_alloc_page, .page = flb_writer_page,
		.free_page = flb_free_page, .ctx = &flb_abort_alloc, .page_size = PAGE_SIZE,
	};
	struct iommu_domain_ser d;
	struct iommu_flb_handle h;
	u64 root2;
	int ret;

	flb_abort_alloc.cursor = &flb_cursor;
	memset(&flb_w_abort, 0, sizeof(flb_w_abort));
	ret = FLB_CALL(iommu_flb_writer_start, iommu_flb_writer_start(&flb_w_abort, &alloc, &root2));
	memset(&d, 0, sizeof(d));
	d.top_table_phys = 0x7000000;
	d.top_level = 4;
	d.vasz = 48;
	if (!ret)
		ret = FLB_CALL(iommu_flb_preserve_domain,
			       iommu_flb_preserve_domain(&flb_w_abort, &d, &h));
	flb_check(!ret && flb_abort_alloc.taken == 4,
		  "second writer started with a domain: %d, %u pages taken", ret,
		  flb_abort_alloc.taken);
	ret = FLB_CALL(iommu_flb_writer_abort, iommu_flb_writer_abort(&flb_w_abort));
	flb_check(!ret && !flb_abort_alloc.taken,
		  "iommu_flb_writer_abort(): %d, every page given back (%u left)", ret,
		  flb_abort_alloc.taken);
}

/*
 * Preserves the manifest's objects through @w: every IOMMU and domain, the
 * devices in a scattered order, then unpreserves the dead devices and
 * domains and the last IOMMU (preserved, never used). The handles go to
 * flb_*_h; in the first image (@v1) the records' addresses go to the
 * manifest too.
 */
static int flb_preserve_all(struct iommu_flb_writer *w, struct flb_manifest *m, bool v1,
			    u32 *unpreserved)
{
	struct iommu_domain_ser dinit;
	struct iommu_device_ser init;
	u32 i, k;
	int ret;

	for (i = 0; i < m->nr_iommus; i++) {
		ret = FLB_CALL(iommu_flb_preserve_iommu,
			       iommu_flb_preserve_iommu(w, m->iommus[i].token, m->iommus[i].type,
							&m->iommus[i].vendor, &flb_iommu_h[i]));
		if (ret)
			return ret;
		if (v1)
			m->iommus[i].phys = flb_iommu_h[i].phys;
	}
	for (i = 0; i < m->nr_domains; i++) {
		memset(&dinit, 0, sizeof(dinit));
		dinit.top_table_phys = m->domains[i].top_table_phys;
		dinit.top_level = m->domains[i].top_level;
		dinit.vasz = m->domains[i].vasz;
		dinit.sign_extend = m->domains[i].sign_extend;
		ret = FLB_CALL(iommu_flb_preserve_domain,
			       iommu_flb_preserve_domain(w, &dinit, &flb_domain_h[i]));
		if (ret)
			return ret;
		if (v1)
			m->domains[i].phys = flb_domain_h[i].phys;
	}
	/* Devices in a scattered order (1103 is prime to FLB_DEVICES). */
	for (k = 0; k < m->nr_devices; k++) {
		struct flb_m_device *v = &m->devices[(k * 1103 + 17) % FLB_DEVICES];

		flb_device_init(v, &init);
		ret = FLB_CALL(iommu_flb_preserve_device,
			       iommu_flb_preserve_device(w, &init, &flb_domain_h[v->domain],
							 &flb_iommu_h[v->iommu],
							 &flb_device_h[v - m->devices]));
		if (ret)
			return ret;
		if (v1)
			v->phys = flb_device_h[v - m->devices].phys;
	}
	for (i = 0; i < m->nr_devices; i++) {
		if (m->devices[i].live)
			continue;
		ret = FLB_CALL(iommu_flb_unpreserve_device,
			       iommu_flb_unpreserve_device(w, &flb_device_h[i]));
		if (ret)
			return ret;
		(*unpreserved)++;
	}
	for (i = 0; i < m->nr_domains; i++) {
		if (m->domains[i].live)
			continue;
		ret = FLB_CALL(iommu_flb_unpreserve_domain,
			       iommu_flb_unpreserve_domain(w, &flb_domain_h[i]));
		if (ret)
			return ret;
	}
	/* The last IOMMU: preserved, never used, unpreserved. */
	ret = FLB_CALL(iommu_flb_unpreserve_iommu,
		       iommu_flb_unpreserve_iommu(w, &flb_iommu_h[FLB_IOMMUS - 1]));
	if (ret)
		return ret;

	return 0;
}

/*
 * The same objects as a version-2 image, in pages of its own, with the
 * kernel's CRC: kernel 2 validates both. The index is the first image's,
 * whose writer finished.
 */
static int flb_write_image_v2(struct flb_manifest *m, void *index, size_t index_size)
{
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = flb_alloc_page, .page = flb_writer_page,
		.free_page = flb_free_page, .ctx = &flb_v2_alloc, .page_size = PAGE_SIZE,
		.crc32 = flb_writer_crc32,
	};
	struct iommu_flb_writer_config cfg = {
		.version = IOMMU_FLB_V2_VERSION, .generation = 0x6b65726e656c2032ULL, /* "kernel 2" */
	};
	struct iommu_flb_counts counts;
	u32 unpreserved = 0;
	u64 root;
	int ret;

	flb_v2_alloc.cursor = &flb_cursor;
	memset(&flb_w_v2, 0, sizeof(flb_w_v2));
	/* A bad configuration is refused, naming the field, before any page. */
	cfg.reserved = 1;
	ret = FLB_CALL(iommu_flb_writer_start_config,
		       iommu_flb_writer_start_config(&flb_w_v2, &alloc, &cfg, index, index_size,
						     &root));
	{
		struct iommu_flb_error err;

		FLB_CALL(iommu_flb_writer_last_error,
			 iommu_flb_writer_last_error(&flb_w_v2, &err));
		flb_check(ret == -EINVAL && err.kind == IOMMU_FLB_ERR_INVALID_ARGUMENT &&
			  err.field && !strcmp(err.field, "reserved") && !flb_v2_alloc.taken,
			  "version-2 writer refuses a non-zero reserved: %d, kind %u: %s", ret,
			  err.kind, err.message);
	}
	cfg.reserved = 0;
	memset(&flb_w_v2, 0, sizeof(flb_w_v2));
	ret = FLB_CALL(iommu_flb_writer_start_config,
		       iommu_flb_writer_start_config(&flb_w_v2, &alloc, &cfg, index, index_size,
						     &root));
	flb_check(!ret && flb_v2_alloc.crc_calls,
		  "version-2 writer started, crc32_le as its CRC: %d, %lu calls", ret,
		  flb_v2_alloc.crc_calls);
	if (ret)
		return ret;
	/* From now on the callback checks it runs inside a call on the writer. */
	flb_v2_alloc.w = &flb_w_v2;
	ret = flb_preserve_all(&flb_w_v2, m, false, &unpreserved);
	if (ret) {
		flb_writer_error(&flb_w_v2, "writing the version-2 image", ret);
		FLB_CALL(iommu_flb_writer_abort, iommu_flb_writer_abort(&flb_w_v2));
		return ret;
	}
	ret = FLB_CALL(iommu_flb_writer_counts, iommu_flb_writer_counts(&flb_w_v2, &counts));
	flb_check(!ret && counts.devices == m->live_devices && counts.domains == m->live_domains &&
		  counts.live_iommus == m->live_iommus && counts.pages == flb_v2_alloc.taken,
		  "version-2 writer counts: %llu pages, %llu IOMMUs (%llu live), %llu domains, %llu devices",
		  counts.pages, counts.iommus, counts.live_iommus, counts.domains, counts.devices);
	ret = FLB_CALL(iommu_flb_writer_finish, iommu_flb_writer_finish(&flb_w_v2, &m->root_v2));
	flb_v2_alloc.w = NULL;
	m->generation_v2 = cfg.generation;
	m->nr_pages_v2 = flb_v2_alloc.taken;
	flb_check(!ret && m->root_v2 == root && flb_v2_alloc.crc_calls && !flb_v2_alloc.crc_outside,
		  "version-2 writer finished: root 0x%llx, %u pages, crc32_le called %lu times, all inside writer calls (%lu outside)",
		  m->root_v2, m->nr_pages_v2, flb_v2_alloc.crc_calls, flb_v2_alloc.crc_outside);
	return ret;
}

int flb_write_image(struct flb_manifest *m)
{
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = flb_alloc_page, .page = flb_writer_page,
		.free_page = flb_free_page, .ctx = &flb_image_alloc, .page_size = PAGE_SIZE,
	};
	struct iommu_flb_counts counts;
	void *index;
	size_t index_size;
	u32 i, unpreserved = 0;
	u64 root;
	int ret;

	flb_plan(m);
	flb_image_alloc.cursor = &flb_cursor;
	flb_image_alloc.m = m;
	index_size = FLB_CALL(iommu_flb_writer_index_size, iommu_flb_writer_index_size(FLB_DEVICES));
	index = kvmalloc(index_size, GFP_KERNEL);
	if (!index) {
		flb_check(false, "kvmalloc(%zu) for the writer's device index", index_size);
		return -ENOMEM;
	}
	memset(&flb_w, 0, sizeof(flb_w));
	ret = FLB_CALL(iommu_flb_writer_start_indexed,
		       iommu_flb_writer_start_indexed(&flb_w, &alloc, index, index_size, &root));
	flb_check(!ret, "writer started with a %zu-byte device index: %d", index_size, ret);
	if (ret)
		goto out;

	ret = flb_preserve_all(&flb_w, m, true, &unpreserved);
	if (ret)
		goto fail;

	for (i = 0; i < m->nr_devices; i++) {
		if (m->devices[i].live) {
			m->iommus[m->devices[i].iommu].live_devices++;
			m->live_devices++;
		}
	}
	for (i = 0; i < m->nr_iommus; i++)
		m->live_iommus += m->iommus[i].live_devices > 0;
	for (i = 0; i < m->nr_domains; i++)
		m->live_domains += m->domains[i].live;
	flb_check(true, "preserved %u IOMMUs (%u Intel, %u SMMUv3), %u domains, %u devices in a scattered order; unpreserved %u devices, %u domains, 1 IOMMU",
		  m->nr_iommus, FLB_INTEL_IOMMUS + 2, FLB_SMMUV3_IOMMUS, m->nr_domains,
		  m->nr_devices, unpreserved, FLB_DEAD_DOMAINS);

	flb_refusals(m);

	ret = FLB_CALL(iommu_flb_writer_counts, iommu_flb_writer_counts(&flb_w, &counts));
	flb_check(!ret && counts.devices == m->live_devices && counts.domains == m->live_domains &&
		  counts.live_iommus == m->live_iommus && counts.iommus == FLB_IOMMUS - 1 &&
		  counts.pages == m->nr_pages && counts.pages == flb_image_alloc.taken,
		  "writer counts: %llu pages, %llu IOMMUs (%llu live), %llu domains, %llu devices",
		  counts.pages, counts.iommus, counts.live_iommus, counts.domains, counts.devices);

	flb_abort_writer();

	ret = FLB_CALL(iommu_flb_writer_finish, iommu_flb_writer_finish(&flb_w, &m->root));
	flb_check(!ret && m->root == root, "writer finished: root 0x%llx, %u pages", m->root,
		  m->nr_pages);
	if (!ret)
		ret = flb_write_image_v2(m, index, index_size);
	goto out;
fail:
	flb_writer_error(&flb_w, "writing the image", ret);
out:
	kvfree(index);
	return ret;
}
