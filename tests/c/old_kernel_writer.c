/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * An "old kernel": writes a version-1 handover image the way the kernel's
 * iommu live-update code does, using nothing but the structs and constants
 * of include/iommu_flb.h (no library call). Physical memory is a flat
 * buffer; pages are handed out in a scrambled order, as the page allocator
 * would.
 *
 * Usage: old_kernel_writer OUT
 *   OUT receives the flat dump (byte i is physical address MEM_BASE + i).
 *   stdout receives a manifest of what was preserved, one line per live
 *   object, for the Rust reader to compare against:
 *     base <phys>
 *     root <phys>
 *     iommu <phys> <token> <type> <ref_count>
 *     domain <phys> <top_table_phys> <vasz>
 *     device <phys> <segment> <devid> <domain_phys> <iommu_phys>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iommu_flb.h"

#define MEM_BASE 0x40000000ULL
#define NR_PAGES 64
#define PAGE 4096

static unsigned char mem[NR_PAGES * PAGE] __attribute__((aligned(PAGE)));
static unsigned int next_page;

static void *phys_to_virt(unsigned long long phys)
{
	return mem + (phys - MEM_BASE);
}

static unsigned long long virt_to_phys(const void *p)
{
	return MEM_BASE + (unsigned long long)((const unsigned char *)p - mem);
}

/* kho_alloc_preserve(): a zeroed page, in a scrambled physical order. */
static void *alloc_page(void)
{
	unsigned int idx = (next_page++ * 37u + 11u) % NR_PAGES;

	if (next_page > NR_PAGES) {
		fprintf(stderr, "out of pages\n");
		exit(2);
	}
	memset(mem + (size_t)idx * PAGE, 0, PAGE);
	return mem + (size_t)idx * PAGE;
}

struct chain {
	struct iommu_array_hdr_ser *tail;
	size_t obj_size;
	unsigned long long capacity;
};

static struct iommu_flb_ser *root;
static struct chain iommus = { 0, sizeof(struct iommu_hw_ser), IOMMU_HW_ARRAY_CAPACITY(PAGE) };
static struct chain domains = { 0, sizeof(struct iommu_domain_ser), IOMMU_DOMAIN_ARRAY_CAPACITY(PAGE) };
static struct chain devices = { 0, sizeof(struct iommu_device_ser), IOMMU_DEVICE_ARRAY_CAPACITY(PAGE) };

/* On first preserve: the root and one page per chain. */
static void flb_preserve(void)
{
	root = alloc_page();
	root->version = IOMMU_LUO_FLB_VERSION;
	iommus.tail = alloc_page();
	domains.tail = alloc_page();
	devices.tail = alloc_page();
	root->iommu_array_phys = virt_to_phys(iommus.tail);
	root->iommu_domain_array_phys = virt_to_phys(domains.tail);
	root->device_array_phys = virt_to_phys(devices.tail);
}

/* Append one zeroed slot, linking a new page when the tail is full. */
static void *append(struct chain *c)
{
	unsigned char *slot;

	if (c->tail->nr_objects == c->capacity) {
		struct iommu_array_hdr_ser *page = alloc_page();

		c->tail->next_array_phys = virt_to_phys(page);
		c->tail = page;
	}
	slot = (unsigned char *)c->tail + sizeof(struct iommu_array_hdr_ser) +
	       c->tail->nr_objects * c->obj_size;
	c->tail->nr_objects++;
	return slot;
}

static struct iommu_hw_ser *preserve_iommu(unsigned long long token, int type)
{
	struct iommu_hw_ser *hw = append(&iommus);

	hw->hdr.ref_count = 1;
	hw->token = token;
	hw->type = type;
	if (type == IOMMU_INTEL) {
		hw->vendor.intel.phys_addr = token;
		hw->vendor.intel.root_table = 0x7000000ULL;
		hw->vendor.intel.context_tables_bitmap[0] = 0x5;
	} else {
		hw->vendor.smmuv3.phys_addr = token;
		hw->vendor.smmuv3.strtab_base_cfg = 0x10;
		hw->vendor.smmuv3.l1_strtab_lu_state = 0x8000000ULL;
	}
	return hw;
}

static struct iommu_domain_ser *preserve_domain(unsigned long long table)
{
	struct iommu_domain_ser *d = append(&domains);

	d->hdr.ref_count = 1;
	d->top_table_phys = table;
	d->top_level = 4;
	d->vasz = 48;
	d->sign_extend = 0;
	return d;
}

static const struct {
	unsigned long long token;
	int type;
} units[4] = {
	{ 0xfed90000ULL, IOMMU_INTEL },
	{ 0xfed91000ULL, IOMMU_INTEL },
	{ 0x09050000ULL, IOMMU_ARM_SMMUV3 },
	{ 0x09060000ULL, IOMMU_ARM_SMMUV3 },
};
static struct iommu_hw_ser *hw[4];

/*
 * The IOMMU is preserved with its first device (ref_count 1); every further
 * device takes one more reference.
 */
static struct iommu_device_ser *preserve_device(unsigned int seg, unsigned int devid,
						struct iommu_domain_ser *d, int unit)
{
	struct iommu_device_ser *dev;

	if (!hw[unit])
		hw[unit] = preserve_iommu(units[unit].token, units[unit].type);
	else
		hw[unit]->hdr.ref_count++;
	dev = append(&devices);

	dev->hdr.ref_count = 1;
	dev->devid = devid;
	dev->pci_domain_nr = seg;
	dev->dma_owner_token = 0xd000 + devid;
	dev->domain_iommu_ser.domain_phys = virt_to_phys(d);
	dev->domain_iommu_ser.iommu_phys = virt_to_phys(hw[unit]);
	if (hw[unit]->type == IOMMU_INTEL) {
		dev->domain_iommu_ser.attachment_id = devid % 7 + 1;
		dev->vendor.intel.pasid_table = 0x9000000ULL + (unsigned long long)devid * PAGE;
		dev->vendor.intel.max_pasid = 1u << 20;
	} else {
		dev->vendor.smmuv3.l1_cdtab_lu_state = 0xa000000ULL + devid;
		dev->vendor.smmuv3.num_l2_cdtables = 2;
	}
	return dev;
}

static void unpreserve_device(struct iommu_device_ser *dev)
{
	struct iommu_hw_ser *hw = phys_to_virt(dev->domain_iommu_ser.iommu_phys);

	dev->hdr.flags |= IOMMU_SER_FLAG_DELETED;
	if (--hw->hdr.ref_count == 0)
		hw->hdr.flags |= IOMMU_SER_FLAG_DELETED;
}

int main(int argc, char **argv)
{
	struct iommu_domain_ser *dom[110];
	struct iommu_device_ser *dev[130];
	FILE *out;
	int i;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT\n", argv[0]);
		return 2;
	}
	flb_preserve();
	for (i = 0; i < 110; i++) /* two domain pages: 102 + 8 */
		dom[i] = preserve_domain(0x20000000ULL + (unsigned long long)i * PAGE);
	for (i = 0; i < 130; i++) /* three device pages: 56 + 56 + 18 */
		dev[i] = preserve_device(i % 2, (unsigned int)(i / 2) << 3, dom[i % 110],
					 i < 2 ? 3 : i % 3);
	/* Unpreserve some devices, both of unit 3 (which deletes it), and a domain. */
	for (i = 0; i < 130; i += 9)
		unpreserve_device(dev[i]);
	unpreserve_device(dev[1]);
	dom[109]->hdr.flags |= IOMMU_SER_FLAG_DELETED;
	for (i = 0; i < 130; i++)
		if (dev[i]->domain_iommu_ser.domain_phys == virt_to_phys(dom[109]) &&
		    !(dev[i]->hdr.flags & IOMMU_SER_FLAG_DELETED))
			unpreserve_device(dev[i]);

	out = fopen(argv[1], "wb");
	if (!out || fwrite(mem, 1, sizeof(mem), out) != sizeof(mem) || fclose(out)) {
		perror(argv[1]);
		return 2;
	}
	printf("base %#llx\nroot %#llx\n", MEM_BASE, virt_to_phys(root));
	for (i = 0; i < 4; i++)
		if (!(hw[i]->hdr.flags & IOMMU_SER_FLAG_DELETED))
			printf("iommu %#llx %#llx %llu %u\n", virt_to_phys(hw[i]),
			       (unsigned long long)hw[i]->token, (unsigned long long)hw[i]->type,
			       hw[i]->hdr.ref_count);
	for (i = 0; i < 110; i++)
		if (!(dom[i]->hdr.flags & IOMMU_SER_FLAG_DELETED))
			printf("domain %#llx %#llx %u\n", virt_to_phys(dom[i]),
			       (unsigned long long)dom[i]->top_table_phys, dom[i]->vasz);
	for (i = 0; i < 130; i++)
		if (!(dev[i]->hdr.flags & IOMMU_SER_FLAG_DELETED))
			printf("device %#llx %u %u %#llx %#llx\n", virt_to_phys(dev[i]),
			       dev[i]->pci_domain_nr, dev[i]->devid,
			       (unsigned long long)dev[i]->domain_iommu_ser.domain_phys,
			       (unsigned long long)dev[i]->domain_iommu_ser.iommu_phys);
	return 0;
}
