//! One benchmark's work run outside criterion, for a profiler: what the
//! `profile` target runs (`benches/profile.rs`, by hand under valgrind) and
//! what the criterion harness runs itself as, under callgrind, for its
//! instruction table (the [`PROFILE_ENV`] mode of `benches/validate.rs`).

use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use iommu_flb_abi::reader::ScratchElem;
use iommu_flb_abi::writer::{Config, SliceIndex};

use crate::image::{self, Built, Prepared};
use crate::plan::{IMAGE_A, IMAGE_B, Plan, Shape};
use crate::pool::ScrambledPool;
use crate::{kernel_walk, kho, validate};

/// The environment variable that turns the criterion harness into a
/// profile run: `IOMMU_FLB_BENCH_PROFILE=<work>,<image>` (for example
/// `validate,a`) makes it build the image, run the work once and exit
/// before criterion starts.
pub const PROFILE_ENV: &str = "IOMMU_FLB_BENCH_PROFILE";

/// A piece of work a profiler measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// (3): `validate` of the version-1 image plus the visit.
    Validate,
    /// (6): the same objects written as version 2 (every page's CRC
    /// checked), validated and visited.
    ValidateV2,
    /// (3a): `validate` without the visit.
    ValidateOnly,
    /// (3b): (3) with every device resolved (`Image::devices`).
    ValidateResolving,
    /// (3c): (3) in one pass, every live record visited as validation
    /// accepts it (`reader::validate_with`).
    ValidateVisiting,
    /// (6c): (6) in one pass, as (3c).
    ValidateVisitingV2,
    /// (4): the upstream-style chained-block check plus the visit.
    Kho,
    /// (2): the kernel's unchecked walk, in C.
    Kernel,
    /// The writer: `preserve_device` for every device of the image, the
    /// IOMMUs and domains already preserved.
    Writer,
}

impl Work {
    /// Every kind of work, in the order the module docs of `profile.rs` list them.
    pub const ALL: [Work; 9] = [
        Work::Validate,
        Work::ValidateV2,
        Work::ValidateOnly,
        Work::ValidateResolving,
        Work::ValidateVisiting,
        Work::ValidateVisitingV2,
        Work::Kho,
        Work::Kernel,
        Work::Writer,
    ];

    /// The name the `profile` target and [`PROFILE_ENV`] take.
    pub const fn name(self) -> &'static str {
        match self {
            Work::Validate => "validate",
            Work::ValidateV2 => "validate_v2",
            Work::ValidateOnly => "validate_only",
            Work::ValidateResolving => "validate_resolving",
            Work::ValidateVisiting => "validate_visiting",
            Work::ValidateVisitingV2 => "validate_visiting_v2",
            Work::Kho => "kho",
            Work::Kernel => "kernel",
            Work::Writer => "writer",
        }
    }

    /// The work named `name` ([`Work::name`]).
    pub fn parse(name: &str) -> Option<Work> {
        Work::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The function whose cost is this work's, as callgrind names it
    /// (demangled): the exact pattern for `--toggle-collect`. Exact, with no
    /// wildcard, because callgrind toggles collection on every entry and
    /// exit of a matching function, so a match nested inside the first (a
    /// closure, or a function whose name extends this one) would switch
    /// collection off inside it. Each function is `#[inline(never)]` so
    /// that it exists to be entered.
    pub const fn collect_in(self) -> &'static str {
        match self {
            Work::Validate => "iommu_flb_bench::validate::validate_and_visit",
            Work::ValidateV2 => "iommu_flb_bench::validate::validate_any_version_and_visit",
            Work::ValidateOnly => "iommu_flb_bench::validate::validate_only",
            Work::ValidateResolving => "iommu_flb_bench::validate::validate_visit_resolving",
            Work::ValidateVisiting => "iommu_flb_bench::validate::validate_while_visiting",
            Work::ValidateVisitingV2 => {
                "iommu_flb_bench::validate::validate_any_version_while_visiting"
            }
            Work::Kho => "iommu_flb_bench::kho::check_and_visit",
            Work::Kernel => "iommu_flb_kernel_walk",
            Work::Writer => "iommu_flb_bench::image::Prepared<X>::preserve_devices",
        }
    }
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The image a letter names: `a` ([`IMAGE_A`]) or `b` ([`IMAGE_B`]), or a
/// shape's full name.
pub fn image(name: &str) -> Option<Shape> {
    [IMAGE_A, IMAGE_B]
        .into_iter()
        .find(|s| s.name == name || s.name.split('_').next() == Some(name))
}

/// The letter [`image`] takes for `shape`.
pub fn letter(shape: Shape) -> &'static str {
    shape.name.split('_').next().unwrap_or(shape.name)
}

/// What one [`run`] did.
#[derive(Clone, Copy, Debug)]
pub struct Ran {
    /// What ran.
    pub work: Work,
    /// On which image.
    pub shape: Shape,
    /// The checksum of the last run (the readers'; the writer has none).
    pub checksum: Option<u64>,
    /// Wall-clock time of one run (the total divided by the runs).
    pub each: Duration,
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}: ", self.work, self.shape.name)?;
        if let Some(sum) = self.checksum {
            write!(f, "checksum {sum:#x}, ")?;
        }
        write!(f, "{:?} each", self.each)
    }
}

/// Builds the image of `shape` (not timed) and runs `work` on it `times`
/// times. Panics if the image is refused: the benchmark images are valid.
pub fn run(work: Work, shape: Shape, times: usize) -> Ran {
    let runs = u32::try_from(times.max(1)).unwrap_or(u32::MAX);
    type Read = fn(&Built, &mut [ScratchElem]) -> u64;
    let (config, read): (Config, Read) = match work {
        Work::Writer => {
            return Ran {
                work,
                shape,
                checksum: None,
                each: preserve_all(&Plan::new(shape), runs.into()) / runs,
            };
        }
        Work::Validate => (Config::v1(), |b, s| {
            validate::validate_and_visit(&b.memory(), b.root(), s).expect("valid")
        }),
        // The same objects in version 2, as benchmark (6) reads them.
        Work::ValidateV2 => (Config::v2(image::V2_GENERATION), |b, s| {
            validate::validate_any_version_and_visit(&b.memory(), b.root(), s).expect("valid")
        }),
        Work::ValidateOnly => (Config::v1(), |b, s| {
            validate::validate_only(&b.memory(), b.root(), s).expect("valid") as u64
        }),
        Work::ValidateResolving => (Config::v1(), |b, s| {
            validate::validate_visit_resolving(&b.memory(), b.root(), s).expect("valid")
        }),
        Work::ValidateVisiting => (Config::v1(), |b, s| {
            validate::validate_while_visiting(&b.memory(), b.root(), s).expect("valid")
        }),
        Work::ValidateVisitingV2 => (Config::v2(image::V2_GENERATION), |b, s| {
            validate::validate_any_version_while_visiting(&b.memory(), b.root(), s).expect("valid")
        }),
        Work::Kho => (Config::v1(), |b, _| {
            kho::check_and_visit(&b.memory(), b.root(), 1 << 20).expect("valid")
        }),
        Work::Kernel => (Config::v1(), |b, _| kernel_walk(b)),
    };
    let built = Built::with_config(shape, config);
    let mut scratch = validate::scratch_for(&built);
    let mut sum = 0u64;
    let start = Instant::now();
    for _ in 0..runs {
        sum = read(black_box(&built), &mut scratch);
    }
    Ran {
        work,
        shape,
        checksum: Some(sum),
        each: start.elapsed() / runs,
    }
}

/// The writer's work `runs` times, as the writer benchmark times it: a
/// fresh pool with the plan's IOMMUs and domains preserved (not timed),
/// then every device of the plan (timed). Returns the time spent in the
/// devices' preserves.
pub fn preserve_all(plan: &Plan, runs: u64) -> Duration {
    let shape = plan.shape;
    let mut spent = Duration::ZERO;
    for _ in 0..runs {
        let mut pool = ScrambledPool::new(image::BASE, image::pages_for(shape), image::SEED);
        let mut slots = image::index_slots(shape);
        let mut prepared =
            Prepared::new(plan, &mut pool, SliceIndex::new(&mut slots)).expect("the plan is valid");
        let start = Instant::now();
        prepared.preserve_devices(plan).expect("the plan is valid");
        spent += start.elapsed();
        black_box(prepared.finish());
    }
    spent
}
