//! The Linux errno values the crate's errors map to, written once
//! (asm-generic/errno-base.h and errno.h, identical on x86-64 and arm64).
//! Positive, as the kernel defines them; an error's `errno()` negates one.

pub(crate) const ENOENT: i32 = 2;
pub(crate) const E2BIG: i32 = 7;
pub(crate) const ENOMEM: i32 = 12;
pub(crate) const EFAULT: i32 = 14;
pub(crate) const EBUSY: i32 = 16;
pub(crate) const EEXIST: i32 = 17;
pub(crate) const EINVAL: i32 = 22;
pub(crate) const ENOSPC: i32 = 28;
pub(crate) const ERANGE: i32 = 34;
pub(crate) const ELOOP: i32 = 40;
pub(crate) const EPROTO: i32 = 71;
pub(crate) const EBADMSG: i32 = 74;
pub(crate) const EOVERFLOW: i32 = 75;
pub(crate) const EPROTONOSUPPORT: i32 = 93;
pub(crate) const EOPNOTSUPP: i32 = 95;
pub(crate) const EADDRINUSE: i32 = 98;
pub(crate) const EALREADY: i32 = 114;
pub(crate) const ESTALE: i32 = 116;
pub(crate) const EUCLEAN: i32 = 117;
