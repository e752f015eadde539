/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The version-2 layout table of the kernel ABI (the frozen snapshot
 * abi/v2.txt and the design in src/abi/v2.rs), asserted against
 * include/iommu_flb.h. Every number below is copied from the snapshot, not
 * from the Rust sources, so the two are checked against each other (and
 * tests/c_header.rs checks that every struct and field line of the
 * snapshot has its line here). Built twice by tests/c_header.rs: as
 * userspace C (compiler headers only) and as kernel C (__KERNEL__,
 * -nostdinc, only <linux/types.h>).
 */
#include "iommu_flb.h"

#include "layout_check.h"

LAYOUT(struct iommu_flb_v2_chain_ser, 24);
FIELD(struct iommu_flb_v2_chain_ser, head_phys, 0, 8);
FIELD(struct iommu_flb_v2_chain_ser, nr_pages, 8, 8);
FIELD(struct iommu_flb_v2_chain_ser, nr_records, 16, 8);

LAYOUT(struct iommu_flb_v2_ser, 128);
FIELD(struct iommu_flb_v2_ser, version, 0, 8);
FIELD(struct iommu_flb_v2_ser, magic, 8, 4);
FIELD(struct iommu_flb_v2_ser, root_size, 12, 4);
FIELD(struct iommu_flb_v2_ser, last_compatible_version, 16, 4);
FIELD(struct iommu_flb_v2_ser, page_size, 20, 4);
FIELD(struct iommu_flb_v2_ser, generation, 24, 8);
FIELD(struct iommu_flb_v2_ser, compat_features, 32, 8);
FIELD(struct iommu_flb_v2_ser, incompat_features, 40, 8);
FIELD(struct iommu_flb_v2_ser, crc, 48, 4);
FIELD(struct iommu_flb_v2_ser, reserved, 52, 4);
FIELD(struct iommu_flb_v2_ser, iommus, 56, 24);
FIELD(struct iommu_flb_v2_ser, domains, 80, 24);
FIELD(struct iommu_flb_v2_ser, devices, 104, 24);
FIELD(struct iommu_flb_v2_ser, devices.nr_records, 120, 8);

LAYOUT(struct iommu_array_v2_hdr_ser, 48);
FIELD(struct iommu_array_v2_hdr_ser, blk, 0, 16);
FIELD(struct iommu_array_v2_hdr_ser, blk.next_array_phys, 0, 8);
FIELD(struct iommu_array_v2_hdr_ser, blk.nr_objects, 8, 8);
FIELD(struct iommu_array_v2_hdr_ser, magic, 16, 4);
FIELD(struct iommu_array_v2_hdr_ser, chain, 20, 2);
FIELD(struct iommu_array_v2_hdr_ser, stride, 22, 2);
FIELD(struct iommu_array_v2_hdr_ser, index, 24, 8);
FIELD(struct iommu_array_v2_hdr_ser, generation, 32, 8);
FIELD(struct iommu_array_v2_hdr_ser, crc, 40, 4);
FIELD(struct iommu_array_v2_hdr_ser, reserved, 44, 4);

LAYOUT(struct iommu_intel_v2_ser, 80);
FIELD(struct iommu_intel_v2_ser, phys_addr, 0, 8);
FIELD(struct iommu_intel_v2_ser, root_table, 8, 8);
FIELD(struct iommu_intel_v2_ser, context_tables_bitmap, 16, 64);

LAYOUT(union iommu_hw_vendor_v2_ser, 80);
FIELD(union iommu_hw_vendor_v2_ser, intel, 0, 80);
FIELD(union iommu_hw_vendor_v2_ser, smmuv3, 0, 32);

LAYOUT(struct iommu_hw_v2_ser, 104);
FIELD(struct iommu_hw_v2_ser, hdr, 0, 8);
FIELD(struct iommu_hw_v2_ser, token, 8, 8);
FIELD(struct iommu_hw_v2_ser, type, 16, 8);
FIELD(struct iommu_hw_v2_ser, vendor, 24, 80);
FIELD(struct iommu_hw_v2_ser, vendor.smmuv3.l2_strtab_lu_states_phys, 48, 8);

LAYOUT(struct iommu_domain_v2_ser, 32);
FIELD(struct iommu_domain_v2_ser, hdr, 0, 8);
FIELD(struct iommu_domain_v2_ser, top_table_phys, 8, 8);
FIELD(struct iommu_domain_v2_ser, top_level, 16, 8);
FIELD(struct iommu_domain_v2_ser, vasz, 24, 4);
FIELD(struct iommu_domain_v2_ser, sign_extend, 28, 1);
FIELD(struct iommu_domain_v2_ser, padding, 29, 3);

LAYOUT(struct iommu_device_intel_v2_ser, 16);
FIELD(struct iommu_device_intel_v2_ser, pasid_table, 0, 8);
FIELD(struct iommu_device_intel_v2_ser, max_pasid, 8, 8);

LAYOUT(union iommu_device_vendor_v2_ser, 24);
FIELD(union iommu_device_vendor_v2_ser, intel, 0, 16);
FIELD(union iommu_device_vendor_v2_ser, smmuv3, 0, 24);

LAYOUT(struct iommu_device_v2_ser, 72);
FIELD(struct iommu_device_v2_ser, hdr, 0, 8);
FIELD(struct iommu_device_v2_ser, devid, 8, 4);
FIELD(struct iommu_device_v2_ser, pci_domain_nr, 12, 4);
FIELD(struct iommu_device_v2_ser, dma_owner_token, 16, 8);
FIELD(struct iommu_device_v2_ser, attachment_id, 24, 8);
FIELD(struct iommu_device_v2_ser, domain_index, 32, 8);
FIELD(struct iommu_device_v2_ser, iommu_index, 40, 8);
FIELD(struct iommu_device_v2_ser, vendor, 48, 24);

/* Constants. */
CHECK(IOMMU_FLB_V2_VERSION == 2);
CHECK(IOMMU_FLB_V2_ROOT_MAGIC == 0x524c4649); /* "IFLR" */
CHECK(IOMMU_FLB_V2_PAGE_MAGIC == 0x504c4649); /* "IFLP" */
CHECK(IOMMU_FLB_V2_CHAIN_IOMMU == 1 && IOMMU_FLB_V2_CHAIN_DOMAIN == 2 &&
      IOMMU_FLB_V2_CHAIN_DEVICE == 3);
CHECK(IOMMU_FLB_V2_FLAG_DELETED == 1 && IOMMU_FLB_V2_FLAGS_KNOWN == 1);
CHECK(IOMMU_FLB_V2_COMPAT_KNOWN == 0 && IOMMU_FLB_V2_INCOMPAT_KNOWN == 0);
CHECK(IOMMU_FLB_V2_ROOT_CRC_OFFSET == 48);
CHECK(IOMMU_FLB_V2_PAGE_CRC_OFFSET == 40);
CHECK(IOMMU_FLB_V2_PAGE_HDR_SIZE == 48);
CHECK(IOMMU_FLB_V2_STRIDE_ALIGN == 8);
/* Each crc field is where its constant says. */
CHECK(OFF(struct iommu_flb_v2_ser, crc) == IOMMU_FLB_V2_ROOT_CRC_OFFSET);
CHECK(OFF(struct iommu_array_v2_hdr_ser, crc) == IOMMU_FLB_V2_PAGE_CRC_OFFSET);
CHECK(sizeof(struct iommu_array_v2_hdr_ser) == IOMMU_FLB_V2_PAGE_HDR_SIZE);
/* Every stride is a multiple of the alignment. */
CHECK(sizeof(struct iommu_hw_v2_ser) % IOMMU_FLB_V2_STRIDE_ALIGN == 0);
CHECK(sizeof(struct iommu_domain_v2_ser) % IOMMU_FLB_V2_STRIDE_ALIGN == 0);
CHECK(sizeof(struct iommu_device_v2_ser) % IOMMU_FLB_V2_STRIDE_ALIGN == 0);
/* Records per page, (page - 48) / stride, for each page size. */
#define PER_PAGE(page, type) (((page) - IOMMU_FLB_V2_PAGE_HDR_SIZE) / sizeof(struct type))
CHECK(PER_PAGE(4096, iommu_hw_v2_ser) == 38);
CHECK(PER_PAGE(4096, iommu_domain_v2_ser) == 126);
CHECK(PER_PAGE(4096, iommu_device_v2_ser) == 56);
CHECK(PER_PAGE(16384, iommu_hw_v2_ser) == 157);
CHECK(PER_PAGE(16384, iommu_domain_v2_ser) == 510);
CHECK(PER_PAGE(16384, iommu_device_v2_ser) == 226);
CHECK(PER_PAGE(65536, iommu_hw_v2_ser) == 629);
CHECK(PER_PAGE(65536, iommu_domain_v2_ser) == 2046);
CHECK(PER_PAGE(65536, iommu_device_v2_ser) == 909);

/*
 * Runtime part: write a root, an array page header and a device the way
 * kernel C code does and check the bytes land where the snapshot puts them
 * (little-endian host).
 */
static int check_bytes(void)
{
	static unsigned char root_page[4096], page[4096];
	struct iommu_flb_v2_ser *root = (struct iommu_flb_v2_ser *)root_page;
	struct iommu_array_v2_hdr_ser *hdr = (struct iommu_array_v2_hdr_ser *)page;
	struct iommu_device_v2_ser *dev =
		(struct iommu_device_v2_ser *)(page + IOMMU_FLB_V2_PAGE_HDR_SIZE) + 1;
	unsigned char *p = page + 48 + 72;

	root->version = IOMMU_FLB_V2_VERSION;
	root->magic = IOMMU_FLB_V2_ROOT_MAGIC;
	root->crc = 0xa1b2c3d4;
	root->devices.head_phys = 0x1122334455667788ULL;
	if (root_page[0] != 2 || root_page[8] != 'I' || root_page[11] != 'R')
		return 1;
	if (root_page[48] != 0xd4 || root_page[51] != 0xa1)
		return 2;
	if (root_page[104] != 0x88 || root_page[111] != 0x11)
		return 3;

	hdr->blk.nr_objects = 2;
	hdr->magic = IOMMU_FLB_V2_PAGE_MAGIC;
	hdr->chain = IOMMU_FLB_V2_CHAIN_DEVICE;
	hdr->stride = sizeof(*dev);
	hdr->crc = 0x01020304;
	if (page[8] != 2 || page[16] != 'I' || page[19] != 'P')
		return 4;
	if (page[20] != 3 || page[22] != 72 || page[40] != 0x04 || page[43] != 0x01)
		return 5;

	dev->devid = 0x0102;
	dev->domain_index = 0x33;
	dev->iommu_index = 0x44;
	dev->vendor.smmuv3.num_l2_cdtables = 7;
	if (p[8] != 0x02 || p[9] != 0x01 || p[32] != 0x33 || p[40] != 0x44)
		return 6;
	if (p[48 + 8] != 7)
		return 7;
	return 0;
}

#ifdef __KERNEL__
int iommu_flb_layout_v2_selftest(void);
int iommu_flb_layout_v2_selftest(void)
{
	return check_bytes();
}
#else
int main(void)
{
	return check_bytes();
}
#endif
