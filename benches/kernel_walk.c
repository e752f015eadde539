/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The kernel's walk of a version-1 image as it is today (the baseline of
 * benches/validate.rs): follow each chain from the root and visit every
 * live object, with no checks at all, exactly the trust the seed review's
 * iommu_liveupdate_restore_array() and its callers place in the image.
 *
 * phys_to_virt() is `mem + (phys - base)` over one flat buffer, as in the
 * kernel's direct map. Each visit folds a few fields into a checksum so the
 * compiler cannot drop the loads. Built with -O2 by build.rs.
 */
#include <stdint.h>

#include "iommu_flb.h"

static inline const void *phys_to_virt(const uint8_t *mem, uint64_t base, uint64_t phys)
{
	return mem + (phys - base);
}

uint64_t iommu_flb_kernel_walk(const uint8_t *mem, uint64_t base, uint64_t root_phys)
{
	const struct iommu_flb_ser *ser = phys_to_virt(mem, base, root_phys);
	uint64_t sum = 0, phys, i;

	for (phys = ser->iommu_array_phys; phys;) {
		const struct iommu_hw_array_ser *arr = phys_to_virt(mem, base, phys);

		for (i = 0; i < arr->hdr.nr_objects; i++) {
			const struct iommu_hw_ser *o = &arr->objects[i];

			if (o->hdr.flags & IOMMU_SER_FLAG_DELETED)
				continue;
			sum += o->token ^ o->type ^ o->hdr.ref_count;
		}
		phys = arr->hdr.next_array_phys;
	}
	for (phys = ser->iommu_domain_array_phys; phys;) {
		const struct iommu_domain_array_ser *arr = phys_to_virt(mem, base, phys);

		for (i = 0; i < arr->hdr.nr_objects; i++) {
			const struct iommu_domain_ser *o = &arr->objects[i];

			if (o->hdr.flags & IOMMU_SER_FLAG_DELETED)
				continue;
			sum += o->top_table_phys ^ o->vasz;
		}
		phys = arr->hdr.next_array_phys;
	}
	for (phys = ser->device_array_phys; phys;) {
		const struct iommu_device_array_ser *arr = phys_to_virt(mem, base, phys);

		for (i = 0; i < arr->hdr.nr_objects; i++) {
			const struct iommu_device_ser *o = &arr->objects[i];

			if (o->hdr.flags & IOMMU_SER_FLAG_DELETED)
				continue;
			sum += o->devid ^ o->pci_domain_nr ^ o->domain_iommu_ser.domain_phys ^
			       o->domain_iommu_ser.iommu_phys;
		}
		phys = arr->hdr.next_array_phys;
	}
	return sum;
}
