//! Compiles the kernel's unchecked walk (`kernel_walk.c`) at -O2 against the
//! generated header, for benchmark (2).

fn main() {
    println!("cargo::rerun-if-changed=kernel_walk.c");
    println!("cargo::rerun-if-changed=../include/iommu_flb.h");
    cc::Build::new()
        .file("kernel_walk.c")
        .include("../include")
        .opt_level(2)
        .std("gnu11")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("iommu_flb_kernel_walk");
}
