//! The ratios the issue sets targets for, computed from criterion's
//! estimates of this run and printed after the benchmarks.
//!
//! Each figure is criterion's estimate of the time per iteration (the slope
//! of its linear regression when it sampled linearly, else the mean) with its
//! 95% confidence interval. A ratio's interval is the widest the two
//! intervals allow: `[lo(x) / hi(y), hi(x) / lo(y)]`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One criterion estimate, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Estimate {
    /// Point estimate.
    pub point: f64,
    /// Lower bound of the confidence interval.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl Estimate {
    /// `self / other`, interval included.
    pub fn ratio(self, other: Estimate) -> Estimate {
        Estimate {
            point: self.point / other.point,
            lo: self.lo / other.hi,
            hi: self.hi / other.lo,
        }
    }

    /// Scaled by `1 / n` (time per object).
    pub fn per(self, n: f64) -> Estimate {
        Estimate {
            point: self.point / n,
            lo: self.lo / n,
            hi: self.hi / n,
        }
    }
}

/// Where criterion writes its results: as criterion decides it, except that
/// `cargo metadata` is not asked (the benchmark knows its target directory).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // CARGO_TARGET_TMPDIR is `<target>/tmp`.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("criterion")
}

/// The estimate of `group/id`, if it was measured after `since`.
pub fn load(dir: &Path, group: &str, id: &str, since: SystemTime) -> Option<Estimate> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let e = if json["slope"].is_object() {
        &json["slope"]
    } else {
        &json["mean"]
    };
    Some(Estimate {
        point: e["point_estimate"].as_f64()?,
        lo: e["confidence_interval"]["lower_bound"].as_f64()?,
        hi: e["confidence_interval"]["upper_bound"].as_f64()?,
    })
}

/// Formats nanoseconds with a unit.
pub fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.2} ns")
    }
}

/// `point [lo, hi]` as times.
pub fn times(e: Estimate) -> String {
    format!("{} [{}, {}]", time(e.point), time(e.lo), time(e.hi))
}

/// `point [lo, hi]` as a ratio.
pub fn ratio(e: Estimate) -> String {
    format!("{:.2} [{:.2}, {:.2}]", e.point, e.lo, e.hi)
}

/// A ratio line against a target `<= max`: met when the point estimate is.
pub fn target_line(out: &mut String, what: &str, e: Option<Estimate>, max: f64) {
    match e {
        Some(e) => {
            let verdict = if e.point <= max { "met" } else { "MISSED" };
            let _ = writeln!(out, "| {what} | {} | <= {max} | {verdict} |", ratio(e));
        }
        None => {
            let _ = writeln!(out, "| {what} | not measured in this run | <= {max} | |");
        }
    }
}

/// A ratio line for the report, with `note` (a former target, or
/// "(report)") in place of a verdict.
pub fn report_line(out: &mut String, what: &str, e: Option<Estimate>, note: &str) {
    let measured = e.map_or_else(|| "not measured in this run".to_owned(), ratio);
    let _ = writeln!(out, "| {what} | {measured} | {note} |");
}
