//! Runs one benchmark's work in a loop without criterion, for a profiler:
//!
//! ```sh
//! cargo bench -p iommu-flb-bench --bench profile --no-run
//! valgrind --tool=callgrind target/release/deps/profile-* validate b 3
//! ```
//!
//! Arguments: what to run (`validate`, `validate_v2` (the same image
//! written in version 2, every page's CRC checked), `validate_only`, `kho`,
//! `kernel`, `writer`), the image
//! (`a` or `b`), and how many times. Without arguments (as `cargo bench` runs
//! it, passing only `--bench`) it does nothing.

use std::hint::black_box;

use iommu_flb_abi::writer::{Config, SliceIndex};
use iommu_flb_bench::image::{self, Built, Prepared};
use iommu_flb_bench::plan::{IMAGE_A, IMAGE_B, Plan};
use iommu_flb_bench::pool::ScrambledPool;
use iommu_flb_bench::{kernel_walk, kho, validate};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(what) = args.first().map(String::as_str) else {
        return;
    };
    let shape = match args.get(1).map(String::as_str) {
        Some("b") => IMAGE_B,
        _ => IMAGE_A,
    };
    let times: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
    if what == "writer" {
        let plan = Plan::new(shape);
        for _ in 0..times {
            let mut pool = ScrambledPool::new(image::BASE, image::pages_for(shape), image::SEED);
            let mut slots = image::index_slots(shape);
            let mut prepared = Prepared::new(&plan, &mut pool, SliceIndex::new(&mut slots))
                .expect("the plan is valid");
            prepared.preserve_devices(&plan).expect("the plan is valid");
            black_box(prepared.finish());
        }
        return;
    }
    let built = match what {
        "validate_v2" => Built::with_config(shape, Config::v2(0x2026)),
        _ => Built::new(shape),
    };
    let mem = built.memory();
    let root = built.root();
    let mut scratch = validate::scratch_for(&built);
    let mut sum = 0u64;
    let start = std::time::Instant::now();
    for _ in 0..times {
        sum = match what {
            "validate" => validate::validate_and_visit(&mem, root, &mut scratch).expect("valid"),
            "validate_v2" => {
                validate::validate_and_visit_any(&mem, root, &mut scratch).expect("valid")
            }
            "validate_only" => validate::validate_only(&mem, root, &mut scratch)
                .map(|n| n as u64)
                .expect("valid"),
            "kho" => kho::check_and_visit(&mem, root, 1 << 20).expect("valid"),
            "kernel" => kernel_walk(&built),
            other => panic!("unknown benchmark {other:?}: see the module docs"),
        };
    }
    let each = start.elapsed() / u32::try_from(times.max(1)).unwrap_or(u32::MAX);
    println!("{what} on {}: checksum {sum:#x}, {each:?} each", shape.name);
}
