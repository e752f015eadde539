//! The C API of [`iommu_flb_abi::ffi`] (`include/iommu_flb_api.h`) as code a
//! Linux kernel module links.
//!
//! This crate adds nothing to the API but what a kernel needs around it: a
//! panic handler that hands over to the kernel's C hook
//! `iommu_flb_panic()` (declared in `kernel/iommu_flb_kernel.h`; the module
//! maps it to `BUG()`), and the build settings in `.cargo/config.toml`
//! (`core` built from source, static relocations, no FP/SIMD, the kernel's
//! mitigations). `scripts/kernel-artifact` turns the static library into
//! the one relocatable object kbuild links, and checks it.
//!
//! The library's lints deny every panicking construct on paths C reaches,
//! so the handler is never expected to run; it exists because `core` must
//! have one and because a kernel must stop, not carry on, if the
//! impossible happens.
#![no_std]

// Links the library, and with it every `#[no_mangle]` function of its
// `ffi` module, into the static library.
pub use iommu_flb_abi::ffi;

unsafe extern "C" {
    /// The kernel side's panic hook: logs the location and message, then
    /// `BUG()`; `__noreturn` in C. Declared here as returning so that the
    /// trap after the call stays: objtool must see the panic handler end
    /// (it cannot know the hook does not return), and a hook that did
    /// return would stop at the trap instead of running into the next
    /// function.
    fn iommu_flb_panic(file: *const u8, file_len: usize, line: u32, msg: *const u8, msg_len: usize);
}

/// Hands a panic to the kernel, with its location and, when it is a plain
/// string, its message. No formatting: `core::fmt` would bring its
/// machinery and its stack use into the kernel for a path that never runs.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("", 0), |l| (l.file(), l.line()));
    let msg = info.message().as_str().unwrap_or("");
    // SAFETY: `iommu_flb_panic` is the module's C function of the signature
    // declared above; it reads `file_len` bytes at `file` and `msg_len` at
    // `msg`, both of which are `&str`s of exactly those lengths that live
    // for the whole program (panic locations and literal messages are
    // static).
    unsafe { iommu_flb_panic(file.as_ptr(), file.len(), line, msg.as_ptr(), msg.len()) };
    trap()
}

/// The architecture's trap instruction, as the kernel's `BUG()` uses it.
fn trap() -> ! {
    // SAFETY: the instruction only raises an exception; it reads and
    // writes no memory and never falls through.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("ud2", options(noreturn, nomem, nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("brk #0x800", options(noreturn, nomem, nostack));
    }
}
