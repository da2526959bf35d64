//! The size of a job's hyperparameter grid, counted from its axes before anything is expanded,
//! so a grid of 10^9 cases is refused in microseconds instead of exhausting memory.

use std::path::{Path, PathBuf};

use super::diag::Diagnostic;
use super::yaml::Mark;
use super::Algorithm;

/// One algorithm's case count and the axes that multiply to it (`basemodel-lr (4 values)`).
pub struct GridSize {
    pub algorithm: String,
    /// Saturates at `u128::MAX` (never wraps).
    pub cases: u128,
    pub axes: Vec<String>,
}

/// The case count of one algorithm: the product of its axis lengths (× `repeat` does not add
/// cases; it reruns them).
pub fn size(alg: &Algorithm) -> GridSize {
    let mut cases: u128 = 1;
    let mut axes = Vec::new();
    for m in &alg.modules {
        for axis in &m.axes {
            cases = cases.saturating_mul(axis.len() as u128);
            let names: Vec<&str> = axis
                .first()
                .map(|pt| pt.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let label = match names.as_slice() {
                [one] => format!("{}-{one}", m.module_type),
                _ => format!("{}-other_hyperparameters", m.module_type),
            };
            axes.push(format!("{label} ({} values)", axis.len()));
        }
    }
    GridSize {
        algorithm: alg.name.clone(),
        cases,
        axes,
    }
}

/// The job's total case count (saturating: a grid past `u128::MAX` reads as `u128::MAX`).
pub fn total(algs: &[Algorithm]) -> u128 {
    algs.iter()
        .map(|a| size(a).cases)
        .fold(0u128, u128::saturating_add)
}

/// A diagnostic when the job's grid holds more than `cap` cases, naming the count and the axes
/// that multiply to it.
pub fn check_cap(
    algs: &[Algorithm],
    refs: &[(String, PathBuf, Mark)],
    cap: u64,
    job_file: &Path,
) -> Option<Diagnostic> {
    let total = total(algs);
    if total <= cap as u128 {
        return None;
    }
    let mut parts = Vec::new();
    for a in algs {
        let g = size(a);
        if g.cases > 1 {
            parts.push(format!(
                "\"{}\" has {} = {}",
                g.algorithm,
                g.cases,
                g.axes.join(" × ")
            ));
        }
    }
    let mark = refs.first().map(|r| r.2);
    let mut d = Diagnostic::new(
        job_file,
        mark,
        "benchmarkingjob.test_object.algorithms",
        format!(
            "the job expands to {total} test cases, more than the limit of {cap}: {}",
            parts.join("; ")
        ),
    );
    d.help(format!(
        "shorten the `values` lists, or raise the limit with `--max-cases {total}` if you mean it"
    ));
    Some(d)
}
