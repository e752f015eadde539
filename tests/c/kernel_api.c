/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Kernel C code using the whole C API, as the IOMMU live-update code would:
 * compiled by the tests in kernel mode (__KERNEL__, -nostdinc,
 * -ffreestanding, only <linux/types.h>), never linked. The kernel services
 * are declared, not defined: this proves the header's declarations need
 * nothing the kernel's <linux/types.h> lacks, and the object's undefined
 * iommu_flb_* symbols are checked against libiommu_flb.a.
 */
#include <linux/types.h>

#include "iommu_flb_api.h"

#define ENOMEM 12
#define GFP_KERNEL 0u
/* <asm/page.h> in the kernel; its value is the architecture's. */
#define PAGE_SIZE 4096UL

/* Kernel services (declarations only). */
void *kvmalloc(size_t size, unsigned int flags);
void kvfree(const void *p);
bool kho_is_preserved_page(u64 phys);
void *phys_to_virt(u64 phys);
u64 virt_to_phys(const void *p);
int kho_restore_page(u64 phys);
void kho_unrestore_page(u64 phys);
void *kho_alloc_preserve_page(void);
void kho_unpreserve_free_page(void *p);
int _printk(const char *fmt, ...);
/* <linux/crc32.h>: the arch-accelerated CRC-32, no seed and no inversion. */
u32 crc32_le(u32 crc, unsigned char const *p, size_t len);
void adopt_iommu(const struct iommu_hw_ser *hw);
void adopt_domain(const struct iommu_domain_ser *d);
void adopt_device(const struct iommu_device_ser *dev, const struct iommu_domain_ser *d,
		  const struct iommu_hw_ser *hw);

_Static_assert(sizeof(struct iommu_flb_writer) == IOMMU_FLB_WRITER_WORDS * 8,
	       "the writer state is the documented size");
_Static_assert(sizeof(((struct iommu_flb_error *)0)->message) == IOMMU_FLB_MESSAGE_LEN,
	       "the message buffer is the documented size");
_Static_assert(IOMMU_FLB_SCRATCH_ALIGN <= 8, "kvmalloc() alignment suffices");

/*
 * struct iommu_flb_mem.page: the addresses come from the untrusted image,
 * so only a page KHO preserved for this handover is mapped; anything else
 * (a hole in the memory map included) is NULL.
 */
static const __u8 *flb_page(void *ctx, __u64 phys)
{
	(void)ctx;
	if (!kho_is_preserved_page(phys))
		return NULL;
	return phys_to_virt(phys);
}

/*
 * struct iommu_flb_mem.crc32 and struct iommu_flb_page_alloc.crc32: zlib's
 * convention from the kernel's crc32_le(), seeded with the inverted CRC
 * and inverted at the end.
 */
static u32 flb_crc32(void *ctx, u32 crc, const void *buf, size_t len)
{
	(void)ctx;
	return ~crc32_le(~crc, buf, len);
}

static int flb_restore_page(void *ctx, __u64 phys)
{
	(void)ctx;
	return kho_restore_page(phys);
}

/* Gives back the first @n pages of the restore order. */
static void flb_unwind(const struct iommu_flb_image *img, u64 n)
{
	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	__u64 phys;

	while (n-- && iommu_flb_next_page(img, &cur, &phys) > 0)
		kho_unrestore_page(phys);
}

/* The incoming kernel: validate, restore, adopt. */
int iommu_flb_retrieve(u64 data)
{
	struct iommu_flb_mem mem = {
		.page = flb_page, .ctx = NULL, .page_size = PAGE_SIZE, .crc32 = flb_crc32,
	};
	struct iommu_flb_error err;
	struct iommu_flb_restore_status status;
	struct iommu_flb_image_info info;
	struct iommu_flb_cursor cur;
	struct iommu_flb_iommu_ref hw;
	struct iommu_flb_domain_ref dom;
	struct iommu_flb_device_ref dev;
	const struct iommu_flb_image *img;
	size_t size;
	void *scratch;
	int ret;

	ret = iommu_flb_scratch_size(&mem, data, &size, &err);
	if (ret)
		goto refuse;
	scratch = kvmalloc(size, GFP_KERNEL);
	if (!scratch)
		return -ENOMEM;
	ret = iommu_flb_validate(&mem, data, IOMMU_FLB_MODE_HANDOVER, scratch, size, &img, &err);
	if (ret)
		goto refuse_free;
	ret = iommu_flb_restore(img, flb_restore_page, NULL, &status);
	if (ret) {
		_printk("iommu-flb: restoring page %llx failed (%d) after %llu pages\n",
			(unsigned long long)status.failed_phys, status.ret,
			(unsigned long long)status.restored);
		flb_unwind(img, status.restored);
		goto out;
	}
	ret = iommu_flb_image_info(img, &info);
	if (ret)
		goto out;
	iommu_flb_for_each_iommu(img, cur, hw, ret)
		adopt_iommu(hw.ser);
	if (ret)
		goto out;
	iommu_flb_for_each_domain(img, cur, dom, ret)
		adopt_domain(dom.ser);
	if (ret)
		goto out;
	iommu_flb_for_each_device(img, cur, dev, ret) {
		struct iommu_flb_domain_ref d;

		ret = iommu_flb_device_domain(img, &dev, &d);
		if (ret)
			break;
		ret = iommu_flb_device_iommu(img, &dev, &hw);
		if (ret)
			break;
		adopt_device(dev.ser, d.ser, hw.ser);
	}
	if (ret)
		goto out;
	/* What a probing driver does later. */
	if (!iommu_flb_find_iommu(img, 0xfed90000ULL, IOMMU_INTEL, &hw) &&
	    !iommu_flb_find_device(img, 0, 0x300, &dev))
		adopt_device(dev.ser, NULL, hw.ser);
out:
	kvfree(scratch);
	return ret;
refuse_free:
	kvfree(scratch);
refuse:
	_printk("%s\n", err.message);
	return ret;
}

/* The outgoing kernel's page allocator. */
static __u64 flb_alloc(void *ctx)
{
	void *p = kho_alloc_preserve_page();

	(void)ctx;
	return p ? virt_to_phys(p) : 0;
}

/*
 * struct iommu_flb_page_alloc.page: the library asks only for pages
 * flb_alloc() handed out and flb_free() did not take back, so plain
 * phys_to_virt() is enough.
 */
static __u8 *flb_map(void *ctx, __u64 phys)
{
	(void)ctx;
	return phys_to_virt(phys);
}

static void flb_free(void *ctx, __u64 phys)
{
	(void)ctx;
	kho_unpreserve_free_page(phys_to_virt(phys));
}

/* This kernel's formats descriptor, in its .iommu_flb_formats section. */
IOMMU_FLB_DECLARE_FORMATS();

/*
 * Before kexec: the writer configuration for the next kernel, whose
 * descriptor (read from the .iommu_flb_formats section of its image) is
 * @next: the newest format both kernels know, or a refusal before anything
 * is handed over.
 */
int iommu_flb_choose_format(const struct iommu_flb_formats *next, u64 generation,
			    struct iommu_flb_writer_config *cfg)
{
	struct iommu_flb_negotiated agreed;
	int ret;

	ret = iommu_flb_negotiate(iommu_flb_library_formats(), next, &agreed);
	if (ret) {
		_printk("iommu-flb: the next kernel reads no format this one writes: %d\n", ret);
		return ret;
	}
	return iommu_flb_writer_config_negotiated(&agreed, generation, cfg);
}

static struct iommu_flb_writer flb_writer = IOMMU_FLB_WRITER_INIT;
static __u64 flb_index[64];

/*
 * The outgoing kernel: preserve one device, then hand over (or abort), in
 * version 1 or, given a @generation, version 2.
 */
int iommu_flb_preserve(u64 token, const struct iommu_device_ser *init, bool indexed, u64 generation,
		       u64 *data)
{
	struct iommu_flb_page_alloc alloc = {
		.alloc_page = flb_alloc, .page = flb_map, .free_page = flb_free, .ctx = NULL,
		.page_size = PAGE_SIZE, .crc32 = flb_crc32,
	};
	struct iommu_flb_writer_config cfg = {
		.version = IOMMU_FLB_V2_VERSION, .generation = generation,
	};
	struct iommu_domain_ser d = { .top_table_phys = 0x100000, .top_level = 4, .vasz = 48 };
	union iommu_hw_vendor_ser v = { .intel = { .phys_addr = token } };
	struct iommu_flb_handle hw, dom, dev;
	struct iommu_flb_counts counts;
	struct iommu_flb_error err;
	int ret;

	if (generation)
		ret = iommu_flb_writer_start_config(&flb_writer, &alloc, &cfg, NULL, 0, data);
	else if (indexed && iommu_flb_writer_index_size(16) <= sizeof(flb_index))
		ret = iommu_flb_writer_start_indexed(&flb_writer, &alloc, flb_index,
						     sizeof(flb_index), data);
	else
		ret = iommu_flb_writer_start(&flb_writer, &alloc, data);
	if (ret)
		goto fail;
	ret = iommu_flb_preserve_iommu(&flb_writer, token, IOMMU_INTEL, &v, &hw);
	if (!ret)
		ret = iommu_flb_preserve_domain(&flb_writer, &d, &dom);
	if (!ret)
		ret = iommu_flb_preserve_device(&flb_writer, init, &dom, &hw, &dev);
	if (!ret)
		ret = iommu_flb_writer_counts(&flb_writer, &counts);
	if (!ret && counts.devices != 1)
		ret = iommu_flb_unpreserve_device(&flb_writer, &dev);
	if (ret) {
		iommu_flb_writer_last_error(&flb_writer, &err);
		_printk("%s\n", err.message);
		iommu_flb_writer_abort(&flb_writer);
		return ret;
	}
	if (counts.devices > 1) {
		iommu_flb_unpreserve_domain(&flb_writer, &dom);
		iommu_flb_unpreserve_iommu(&flb_writer, &hw);
	}
	return iommu_flb_writer_finish(&flb_writer, data);
fail:
	iommu_flb_writer_last_error(&flb_writer, &err);
	_printk("%s\n", err.message);
	return ret;
}
