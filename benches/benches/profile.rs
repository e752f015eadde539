//! Runs one benchmark's work in a loop without criterion, for a profiler:
//!
//! ```sh
//! cargo bench -p iommu-flb-bench --bench profile --no-run
//! valgrind --tool=callgrind \
//!     --toggle-collect='iommu_flb_bench::validate::validate_and_visit' \
//!     target/release/deps/profile-* validate b 1
//! ```
//!
//! Arguments: what to run (`validate`, `validate_v2` (the same image
//! written in version 2, every page's CRC checked), `validate_only`,
//! `validate_resolving` ((3) with every device resolved),
//! `validate_visiting` and `validate_visiting_v2` ((3) and (6) in one pass),
//! `kho`, `kernel`,
//! `writer`), the image (`a` or `b`; default `a`), and how many
//! times (default 3). Without arguments (as `cargo bench` runs it, passing
//! only `--bench`) it does nothing. The function to give `--toggle-collect`
//! for each is [`Work::collect_in`] (listed by `profile --list`); the
//! criterion harness runs the same work under callgrind itself for its
//! instruction table (`benches/README.md`).

use iommu_flb_bench::work::{self, Work};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--") || a == "--list")
        .collect();
    let Some(what) = args.first().map(String::as_str) else {
        return;
    };
    if what == "--list" {
        for w in Work::ALL {
            println!("{:<14} --toggle-collect='{}'", w.name(), w.collect_in());
        }
        return;
    }
    let Some(work) = Work::parse(what) else {
        panic!("unknown benchmark {what:?}: see the module docs or `profile --list`");
    };
    let shape = match args.get(1) {
        Some(name) => {
            work::image(name).unwrap_or_else(|| panic!("unknown image {name:?}: `a` or `b`"))
        }
        None => iommu_flb_bench::plan::IMAGE_A,
    };
    let times: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
    println!("{}", work::run(work, shape, times));
}
