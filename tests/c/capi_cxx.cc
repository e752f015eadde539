// SPDX-License-Identifier: MIT OR Apache-2.0
//
// The C API from C++: include/iommu_flb_api.h compiled by g++, linked with
// libiommu_flb.a (so every declaration has C linkage: without the header's
// extern "C" block the mangled names would not link), writing an image
// with the writer and walking it with the header's macros.
//
// Prints "cxx <iommus> <domains> <devices> <pages>" and exits 0; exits 1 on
// any unexpected result. The end of the file checks, at compile time, that
// the header's macros are inside its include guard.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "iommu_flb_api.h"

namespace {

constexpr __u64 kBase = 0x50000000ULL;
constexpr unsigned kPages = 8;
constexpr size_t kPage = 4096;
alignas(kPage) unsigned char mem[kPages * kPage];
bool used[kPages];

void die(const char *what, int ret)
{
	std::fprintf(stderr, "capi_cxx: %s: %d\n", what, ret);
	std::exit(1);
}

// Pool index of a page-aligned address inside the pool, or -1.
int slot(__u64 phys)
{
	if (phys < kBase || phys % kPage)
		return -1;
	__u64 i = (phys - kBase) / kPage;
	return i < kPages ? static_cast<int>(i) : -1;
}

__u64 alloc_page(void *)
{
	for (unsigned i = 0; i < kPages; i++)
		if (!used[i]) {
			used[i] = true;
			std::memset(mem + i * kPage, 0, kPage);
			return kBase + i * kPage;
		}
	return 0;
}

// The writer asks only for pages alloc_page() handed out.
__u8 *write_page(void *, __u64 phys)
{
	int i = slot(phys);
	if (i < 0 || !used[i])
		die("page() outside its contract", -1);
	return mem + i * kPage;
}

void free_page(void *, __u64 phys)
{
	int i = slot(phys);
	if (i >= 0)
		used[i] = false;
}

// The reader's addresses come from the image: only pool pages in use.
const __u8 *read_page(void *, __u64 phys)
{
	int i = slot(phys);
	return i >= 0 && used[i] ? mem + i * kPage : nullptr;
}

} // namespace

int main()
{
	struct iommu_flb_page_alloc alloc = {};
	alloc.alloc_page = alloc_page;
	alloc.page = write_page;
	alloc.free_page = free_page;
	alloc.page_size = kPage;
	struct iommu_flb_writer w = IOMMU_FLB_WRITER_INIT;
	struct iommu_flb_handle hw, dom, dev;
	__u64 root;
	int ret;

	if ((ret = iommu_flb_writer_start(&w, &alloc, &root)))
		die("start", ret);
	union iommu_hw_vendor_ser v;
	std::memset(&v, 0, sizeof(v));
	v.intel.phys_addr = 0xfed90000ULL;
	if ((ret = iommu_flb_preserve_iommu(&w, 0xfed90000ULL, IOMMU_INTEL, &v, &hw)))
		die("preserve_iommu", ret);
	struct iommu_domain_ser d;
	std::memset(&d, 0, sizeof(d));
	d.top_table_phys = 0x100000;
	d.vasz = 48;
	if ((ret = iommu_flb_preserve_domain(&w, &d, &dom)))
		die("preserve_domain", ret);
	struct iommu_device_ser x;
	std::memset(&x, 0, sizeof(x));
	x.devid = 0x300;
	if ((ret = iommu_flb_preserve_device(&w, &x, &dom, &hw, &dev)))
		die("preserve_device", ret);
	if (iommu_flb_writer_start(&w, &alloc, &root) != -16)
		die("second start", -1);
	if ((ret = iommu_flb_writer_finish(&w, &root)))
		die("finish", ret);

	// The last member, crc32: NULL is the library's own CRC.
	struct iommu_flb_mem m = { read_page, nullptr, kPage, nullptr };
	struct iommu_flb_error err;
	size_t size;
	if ((ret = iommu_flb_scratch_size(&m, root, &size, &err)))
		die(err.message, ret);
	void *scratch = std::aligned_alloc(IOMMU_FLB_SCRATCH_ALIGN, (size + 7) / 8 * 8);
	const struct iommu_flb_image *img;
	if (!scratch || (ret = iommu_flb_validate(&m, root, IOMMU_FLB_MODE_HANDOVER, scratch, size,
						  &img, &err)))
		die(err.message, ret);

	struct iommu_flb_cursor cur = IOMMU_FLB_CURSOR_INIT;
	struct iommu_flb_iommu_ref hr;
	struct iommu_flb_domain_ref dr;
	struct iommu_flb_device_ref vr;
	unsigned iommus = 0, domains = 0, devices = 0, pages = 0;
	__u64 phys;
	iommu_flb_for_each_iommu(img, cur, hr, ret)
		iommus += hr.phys == hw.phys;
	if (ret)
		die("iommu walk", ret);
	iommu_flb_for_each_domain(img, cur, dr, ret)
		domains += dr.phys == dom.phys;
	if (ret)
		die("domain walk", ret);
	iommu_flb_for_each_device(img, cur, vr, ret)
		devices += vr.phys == dev.phys && vr.ser->devid == 0x300;
	if (ret)
		die("device walk", ret);
	struct iommu_flb_cursor pc = IOMMU_FLB_CURSOR_INIT;
	while ((ret = iommu_flb_next_page(img, &pc, &phys)) > 0)
		pages++;
	if (ret)
		die("page walk", ret);
	std::printf("cxx %u %u %u %u\n", iommus, domains, devices, pages);
	std::free(scratch);
	return 0;
}

// Included again after its macros were removed: a header whose macros sit
// inside its include guard does not define them again.
#undef IOMMU_FLB_CURSOR_INIT
#undef IOMMU_FLB_WRITER_INIT
#undef iommu_flb_for_each_device
#include "iommu_flb_api.h"
#if defined(IOMMU_FLB_CURSOR_INIT) || defined(iommu_flb_for_each_device)
#error "iommu_flb_api.h defines macros outside its include guard"
#endif
