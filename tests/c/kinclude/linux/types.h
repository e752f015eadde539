/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Stand-in for the kernel's <linux/types.h>, for compiling the header the
 * way kernel code does: -nostdinc, __KERNEL__, nothing else available.
 * The typedefs are the kernel's (asm-generic/int-ll64.h, linux/types.h).
 */
#ifndef _LINUX_TYPES_H
#define _LINUX_TYPES_H

#ifdef __CHECKER__
#define __bitwise __attribute__((bitwise))
#else
#define __bitwise
#endif

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef int __s32;
typedef long long __s64;

typedef __u16 __bitwise __le16;
typedef __u32 __bitwise __le32;
typedef __u64 __bitwise __le64;

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;

typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __u64 uint64_t;
typedef __s32 int32_t;
typedef __s64 int64_t;

typedef unsigned long size_t;
typedef unsigned long uintptr_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#endif /* _LINUX_TYPES_H */
