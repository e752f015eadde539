//! An image written by C "old kernel" code, with nothing but the generated
//! header's structs (`tests/c/old_kernel_writer.c`), is accepted by the
//! Rust reader, which reports exactly the objects the C program says it
//! left live.

mod c_support;

use c_support::{old_kernel_image, out_dir, reader_objects};

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn old_kernel_image_is_accepted_with_exactly_its_live_objects() {
    let m = old_kernel_image(&out_dir("c_old_kernel"));
    let bytes = std::fs::read(&m.dump).expect("read the dump");
    let mut view = reader_objects(m.base, m.root, &bytes);
    // The C program deletes objects on purpose (an IOMMU, a domain, and
    // devices across all three device pages); the test is void if it left
    // nothing.
    assert!(view.iter().filter(|l| l.what == "device").count() > 2 * 56);
    // The manifest lists the IOMMUs by unit, not in chain order: compare
    // the sets.
    let mut want = m.objects.clone();
    view.sort();
    want.sort();
    assert_eq!(view, want);
}
