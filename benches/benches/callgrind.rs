//! Instruction counts in the same run as the timings: after criterion, the
//! harness runs itself (`std::env::current_exe()`) under
//! `valgrind --tool=callgrind --toggle-collect=<function>` in its profile
//! mode ([`work::PROFILE_ENV`]), once per work and image, and reads the
//! instructions callgrind collected inside the function.
//!
//! Skipped when `valgrind` is not on `PATH` or `IOMMU_FLB_BENCH_CALLGRIND=0`.
//! Counts do not depend on the load of the machine, unlike the timings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iommu_flb_bench::plan::Shape;
use iommu_flb_bench::work::{self, Work};

/// The environment variable that turns the instruction counts off (`0`).
pub const ENV: &str = "IOMMU_FLB_BENCH_CALLGRIND";

/// The most instructions per live object issue 15 allows (3) on each image.
pub const MAX_PER_OBJECT: f64 = 60.0;

/// What is counted on each image, with the label and the target of its row.
const ROWS: [(Work, &str, Target); 6] = [
    (Work::Validate, "(3) validate + visit, v1", Target::Max),
    (
        Work::ValidateVisiting,
        "(3c) validate while visiting, v1",
        Target::Max,
    ),
    (
        Work::ValidateResolving,
        "(3b) validate + visit resolving devices, v1",
        Target::Report,
    ),
    (Work::ValidateV2, "(6) validate + visit, v2", Target::Report),
    (
        Work::ValidateVisitingV2,
        "(6c) validate while visiting, v2",
        Target::Report,
    ),
    (Work::Kernel, "(2) C walk", Target::Reference),
];

#[derive(Clone, Copy)]
enum Target {
    /// At most [`MAX_PER_OBJECT`].
    Max,
    /// No target: reported.
    Report,
    /// The baseline the others are compared with.
    Reference,
}

/// `valgrind` on `PATH`, if the counts are wanted: `Err` says why not.
fn valgrind() -> Result<PathBuf, String> {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        return Err(format!("{ENV}=0"));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("valgrind"))
        .find(|p| p.is_file())
        .ok_or_else(|| "valgrind is not on PATH".to_owned())
}

/// Runs `exe` in its profile mode for `work` on `shape` under callgrind,
/// collecting only inside [`Work::collect_in`]: the instructions counted.
fn count(valgrind: &Path, exe: &Path, work: Work, shape: Shape) -> Result<u64, String> {
    let out_file = std::env::temp_dir().join(format!(
        "iommu-flb-bench.{}.{work}.{}.callgrind",
        std::process::id(),
        work::letter(shape)
    ));
    let output = Command::new(valgrind)
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(format!("--toggle-collect={}", work.collect_in()))
        .arg(exe)
        .env(work::PROFILE_ENV, format!("{work},{}", work::letter(shape)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", valgrind.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let from_file = std::fs::read_to_string(&out_file).ok();
    let _ = std::fs::remove_file(&out_file);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(format!(
            "valgrind exited with {}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    let ir = collected(&stderr)
        .or_else(|| from_file.as_deref().and_then(totals))
        .ok_or("no \"Collected :\" line in valgrind's output, nor a totals line in its out file")?;
    if ir == 0 {
        // Collection never switched on: the function was not entered under
        // this name (renamed, or inlined into its caller).
        return Err(format!("nothing collected in `{}`", work.collect_in()));
    }
    Ok(ir)
}

/// The count of callgrind's `==pid== Collected : N` line.
fn collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let (_, n) = line.split_once("Collected :")?;
        n.split_whitespace().next()?.parse().ok()
    })
}

/// The first event of a callgrind out file's `totals:` (or `summary:`) line.
fn totals(file: &str) -> Option<u64> {
    let pick = |key: &str| {
        file.lines().find_map(|line| {
            line.strip_prefix(key)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    };
    pick("totals:").or_else(|| pick("summary:"))
}

/// Instructions formatted with a unit.
fn instructions(ir: u64) -> String {
    let ir = ir as f64;
    if ir >= 1e9 {
        format!("{:.2} G", ir / 1e9)
    } else if ir >= 1e6 {
        format!("{:.2} M", ir / 1e6)
    } else if ir >= 1e3 {
        format!("{:.1} k", ir / 1e3)
    } else {
        format!("{ir}")
    }
}

/// The instruction table for `shapes` (the images whose readers were
/// measured in this run), as Markdown, or one line saying why it was
/// skipped. Progress goes to stderr: image (b) takes minutes.
pub fn table(shapes: &[Shape]) -> String {
    let mut out = String::from("\n### Instructions (callgrind) of this run\n\n");
    let valgrind = match valgrind() {
        Ok(v) => v,
        Err(why) => {
            let _ = writeln!(out, "Instruction table skipped: {why}.");
            return out;
        }
    };
    if shapes.is_empty() {
        let _ = writeln!(
            out,
            "Instruction table skipped: no image's readers were measured in this run."
        );
        return out;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            let _ = writeln!(
                out,
                "Instruction table skipped: cannot find this executable: {e}."
            );
            return out;
        }
    };
    let _ = writeln!(
        out,
        "One run of each, instructions (Ir) collected only inside the function named \
         (`--toggle-collect`), per live object; (3) / (2) is the ratio of the counts.\n"
    );
    let _ = writeln!(
        out,
        "| image | work | counted in | Ir | Ir per live object | / (2) | target | |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let mut total = Duration::ZERO;
    for &shape in shapes {
        let objects = shape.live_objects() as f64;
        let counts: Vec<Result<u64, String>> = ROWS
            .iter()
            .map(|&(work, label, _)| {
                eprintln!("callgrind: {label} on {} ...", shape.name);
                let start = Instant::now();
                let c = count(&valgrind, &exe, work, shape);
                total += start.elapsed();
                match &c {
                    Ok(ir) => eprintln!("callgrind: {ir} Ir, {:.1?}", start.elapsed()),
                    Err(why) => eprintln!("callgrind: not counted: {why}"),
                }
                c
            })
            .collect();
        let kernel = ROWS
            .iter()
            .zip(&counts)
            .find_map(|((w, _, _), c)| (*w == Work::Kernel).then_some(*c.as_ref().ok()?));
        for ((work, label, target), c) in ROWS.iter().zip(counts) {
            let (target, verdict) = match (target, &c) {
                (Target::Max, Ok(ir)) => (
                    format!("<= {MAX_PER_OBJECT}"),
                    if *ir as f64 / objects <= MAX_PER_OBJECT {
                        "met"
                    } else {
                        "MISSED"
                    },
                ),
                (Target::Max, Err(_)) => (format!("<= {MAX_PER_OBJECT}"), ""),
                (Target::Report, _) => ("(report)".to_owned(), ""),
                (Target::Reference, _) => ("(reference)".to_owned(), ""),
            };
            let figures = match &c {
                Ok(ir) => format!(
                    "{} | {:.1} | {}",
                    instructions(*ir),
                    *ir as f64 / objects,
                    kernel.map_or_else(String::new, |k| format!("{:.1}", *ir as f64 / k as f64))
                ),
                Err(why) => format!("not counted: {why} | | "),
            };
            let _ = writeln!(
                out,
                "| {} | {label} | `{}` | {figures} | {target} | {verdict} |",
                shape.name,
                work.collect_in()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThe callgrind runs took {:.0?} in all (building each image under \
         valgrind included).",
        total
    );
    out
}
