/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The version-1 layout table of the kernel ABI (kernel-abi-v1.md), asserted
 * against include/iommu_flb.h. Every number below is copied from the spec,
 * not from the Rust sources, so the two are checked against each other.
 * Built twice by tests/c_header.rs: as userspace C (compiler headers only)
 * and as kernel C (__KERNEL__, -nostdinc, only <linux/types.h>).
 */
#include "iommu_flb.h"

#define OFF(type, field) __builtin_offsetof(struct type, field)
#define FSIZE(type, field) sizeof(((struct type *)0)->field)
#define CHECK(cond) _Static_assert(cond, #cond)
#define FIELD(type, field, off, size) \
	CHECK(OFF(type, field) == (off)); CHECK(FSIZE(type, field) == (size))
#define STRUCT(type, size) CHECK(sizeof(struct type) == (size)); CHECK(_Alignof(struct type) == 1)

STRUCT(iommu_flb_ser, 32);
FIELD(iommu_flb_ser, version, 0, 8);
FIELD(iommu_flb_ser, iommu_array_phys, 8, 8);
FIELD(iommu_flb_ser, iommu_domain_array_phys, 16, 8);
FIELD(iommu_flb_ser, device_array_phys, 24, 8);

STRUCT(iommu_array_hdr_ser, 16);
FIELD(iommu_array_hdr_ser, next_array_phys, 0, 8);
FIELD(iommu_array_hdr_ser, nr_objects, 8, 8);

STRUCT(iommu_hdr_ser, 8);
FIELD(iommu_hdr_ser, ref_count, 0, 4);
FIELD(iommu_hdr_ser, flags, 4, 4);

STRUCT(iommu_domain_ser, 40);
FIELD(iommu_domain_ser, hdr, 0, 8);
FIELD(iommu_domain_ser, hdr.ref_count, 0, 4);
FIELD(iommu_domain_ser, hdr.flags, 4, 4);
FIELD(iommu_domain_ser, top_table_phys, 8, 8);
FIELD(iommu_domain_ser, top_level, 16, 8);
FIELD(iommu_domain_ser, vasz, 24, 4);
FIELD(iommu_domain_ser, sign_extend, 28, 1);
FIELD(iommu_domain_ser, padding, 29, 3);
FIELD(iommu_domain_ser, restored_domain, 32, 8);

STRUCT(iommu_dev_map_ser, 24);
FIELD(iommu_dev_map_ser, attachment_id, 0, 8);
FIELD(iommu_dev_map_ser, domain_phys, 8, 8);
FIELD(iommu_dev_map_ser, iommu_phys, 16, 8);

STRUCT(iommu_device_ser, 72);
FIELD(iommu_device_ser, hdr, 0, 8);
FIELD(iommu_device_ser, devid, 8, 4);
FIELD(iommu_device_ser, pci_domain_nr, 12, 4);
FIELD(iommu_device_ser, dma_owner_token, 16, 8);
FIELD(iommu_device_ser, domain_iommu_ser, 24, 24);
FIELD(iommu_device_ser, domain_iommu_ser.attachment_id, 24, 8);
FIELD(iommu_device_ser, domain_iommu_ser.domain_phys, 32, 8);
FIELD(iommu_device_ser, domain_iommu_ser.iommu_phys, 40, 8);
FIELD(iommu_device_ser, vendor, 48, 24);
FIELD(iommu_device_ser, vendor.intel, 48, 24);
FIELD(iommu_device_ser, vendor.smmuv3, 48, 24);

STRUCT(iommu_device_intel_ser, 24);
FIELD(iommu_device_intel_ser, restored, 0, 1);
FIELD(iommu_device_intel_ser, padding, 1, 7);
FIELD(iommu_device_intel_ser, pasid_table, 8, 8);
FIELD(iommu_device_intel_ser, max_pasid, 16, 8);

STRUCT(iommu_master_smmuv3_ser, 24);
FIELD(iommu_master_smmuv3_ser, l1_cdtab_lu_state, 0, 8);
FIELD(iommu_master_smmuv3_ser, num_l2_cdtables, 8, 4);
FIELD(iommu_master_smmuv3_ser, padding, 12, 4);
FIELD(iommu_master_smmuv3_ser, l2_cdtab_lu_states_phys, 16, 8);

STRUCT(iommu_hw_ser, 112);
FIELD(iommu_hw_ser, hdr, 0, 8);
FIELD(iommu_hw_ser, token, 8, 8);
FIELD(iommu_hw_ser, type, 16, 8);
FIELD(iommu_hw_ser, vendor, 24, 88);
FIELD(iommu_hw_ser, vendor.intel, 24, 88);
FIELD(iommu_hw_ser, vendor.smmuv3, 24, 32);

STRUCT(iommu_intel_ser, 88);
FIELD(iommu_intel_ser, restored, 0, 1);
FIELD(iommu_intel_ser, padding, 1, 7);
FIELD(iommu_intel_ser, phys_addr, 8, 8);
FIELD(iommu_intel_ser, root_table, 16, 8);
FIELD(iommu_intel_ser, context_tables_bitmap, 24, 64);

STRUCT(iommu_smmuv3_hw_ser, 32);
FIELD(iommu_smmuv3_hw_ser, phys_addr, 0, 8);
FIELD(iommu_smmuv3_hw_ser, strtab_base_cfg, 8, 8);
FIELD(iommu_smmuv3_hw_ser, l1_strtab_lu_state, 16, 8);
FIELD(iommu_smmuv3_hw_ser, l2_strtab_lu_states_phys, 24, 8);

/* Array pages: header, then records back to back from offset 16. */
STRUCT(iommu_hw_array_ser, 16);
CHECK(OFF(iommu_hw_array_ser, objects) == 16);
STRUCT(iommu_domain_array_ser, 16);
CHECK(OFF(iommu_domain_array_ser, objects) == 16);
STRUCT(iommu_device_array_ser, 16);
CHECK(OFF(iommu_device_array_ser, objects) == 16);
CHECK(OFF(iommu_domain_array_ser, objects[1]) == 16 + 40);
CHECK(OFF(iommu_device_array_ser, objects[1]) == 16 + 72);
CHECK(OFF(iommu_hw_array_ser, objects[1]) == 16 + 112);

/* Constants. */
CHECK(IOMMU_LUO_FLB_VERSION == 1);
CHECK(IOMMU_SER_FLAG_DELETED == 1);
CHECK(IOMMU_SER_FLAG_INCOMING == 2);
CHECK(IOMMU_INVALID == 0 && IOMMU_INTEL == 1 && IOMMU_ARM_SMMUV3 == 2);
CHECK(IOMMU_ARRAY_HDR_SIZE == 16);
/* Capacities by the kernel's (PAGE_SIZE - 16) / size, for each page size. */
CHECK(IOMMU_DOMAIN_ARRAY_CAPACITY(4096) == 102);
CHECK(IOMMU_DEVICE_ARRAY_CAPACITY(4096) == 56);
CHECK(IOMMU_HW_ARRAY_CAPACITY(4096) == 36);
CHECK(IOMMU_DOMAIN_ARRAY_CAPACITY(16384) == 409);
CHECK(IOMMU_DEVICE_ARRAY_CAPACITY(16384) == 227);
CHECK(IOMMU_HW_ARRAY_CAPACITY(16384) == 146);
CHECK(IOMMU_DOMAIN_ARRAY_CAPACITY(65536) == 1638);
CHECK(IOMMU_DEVICE_ARRAY_CAPACITY(65536) == 910);
CHECK(IOMMU_HW_ARRAY_CAPACITY(65536) == 585);
CHECK(sizeof(IOMMU_LUO_FLB_COMPATIBLE) == sizeof("iommu-liveupdate"));

/*
 * Runtime part: write a root and a device the way kernel C code does and
 * check the bytes land where the spec puts them (little-endian host).
 */
static int check_bytes(void)
{
	static unsigned char page[4096];
	struct iommu_device_array_ser *arr = (struct iommu_device_array_ser *)page;
	struct iommu_device_ser *dev = &arr->objects[1];
	unsigned char *p = page + 16 + 72;

	arr->hdr.nr_objects = 2;
	dev->devid = 0x0102;
	dev->domain_iommu_ser.iommu_phys = 0x1122334455667788ULL;
	dev->vendor.smmuv3.num_l2_cdtables = 7;
	if (page[8] != 2 || p[8] != 0x02 || p[9] != 0x01)
		return 1;
	if (p[40] != 0x88 || p[47] != 0x11)
		return 2;
	if (p[48 + 8] != 7)
		return 3;
	return 0;
}

#ifdef __KERNEL__
int iommu_flb_layout_selftest(void);
int iommu_flb_layout_selftest(void)
{
	return check_bytes();
}
#else
int main(void)
{
	return check_bytes();
}
#endif
