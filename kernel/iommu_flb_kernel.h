/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the library's kernel object (iommu_flb_rust.o, built by
 * scripts/kernel-artifact from kernel/rust/) needs from the kernel besides
 * memcpy, memset, memcmp and, on x86-64, __x86_return_thunk and
 * __x86_indirect_thunk_r11: one function the module defines.
 */
#ifndef _IOMMU_FLB_KERNEL_H
#define _IOMMU_FLB_KERNEL_H

#include <linux/types.h>
#include <linux/compiler.h>

/**
 * iommu_flb_panic() - The library's panic handler hands over here.
 * @file: Source file of the panic, not NUL-terminated.
 * @file_len: Its length.
 * @line: Its line.
 * @msg: The panic message if it is a plain string, else empty; not
 *       NUL-terminated.
 * @msg_len: Its length.
 *
 * The library's lints rule out every panicking construct on the paths C
 * reaches, so this is never expected to run. It must not return: log and
 * BUG().
 */
void __noreturn iommu_flb_panic(const char *file, size_t file_len, u32 line,
				const char *msg, size_t msg_len);

#endif /* _IOMMU_FLB_KERNEL_H */
