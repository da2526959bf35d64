//! The regression gate: `ianvs compare BASELINE CURRENT` matches the cases of two leaderboards
//! (job folders or `leaderboard.json` files) by algorithm and hyperparameters and decides, per
//! case × metric, whether the current value is a regression.
//!
//! A change counts as a regression only when it is worse than the metric's tolerance *and*
//! outside the confidence interval: the current value lies outside the baseline's 95 % interval
//! and the baseline value outside the current one (where the leaderboards carry intervals).
//! A worse value inside the intervals is noise: reported, never failing. New and missing cases
//! are listed. Outputs: a Markdown summary for a CI job summary, JUnit XML, an exit code.

pub mod junit;
pub mod tolerance;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Order;
use crate::story::{self, format_number};
pub use tolerance::{Direction, Tolerance, Tolerances};

/// The rule, as the outputs state it.
pub const RULE: &str = "a metric regresses when it is worse than its tolerance and outside the 95 % confidence interval (the current value outside the baseline's interval and the baseline value outside the current one)";

/// One case of a leaderboard, as the gate sees it.
#[derive(Debug, Clone, Serialize)]
pub struct BoardCase {
    /// Canonical match key: algorithm, paradigm, module names and grid values.
    pub key: String,
    /// The key's columns and values.
    pub key_map: BTreeMap<String, Value>,
    /// Readable form of the key.
    pub label: String,
    pub algorithm: String,
    pub case_id: String,
    pub ok: bool,
    pub values: BTreeMap<String, Option<f64>>,
    pub intervals: BTreeMap<String, (f64, f64)>,
    /// Metric → the stored value, where it is neither a number nor empty (text, say): such a
    /// value cannot be compared, and says so, rather than passing as "no value".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable: BTreeMap<String, String>,
}

/// A leaderboard loaded for comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Board {
    /// Where it came from, as given.
    pub source: String,
    pub job: String,
    pub sort_by: Vec<(String, Order)>,
    pub metrics: Vec<String>,
    pub cases: Vec<BoardCase>,
}

const NON_KEY: &[&str] = &["rank", "time", "url", "status", "case_id"];

impl Board {
    /// Loads a job folder (its stored results, ranked afresh), a folder holding
    /// `rank/leaderboard.json`, a `leaderboard.json`, or the JSON array `ianvs run --json` prints.
    pub fn load(path: &Path) -> Result<Board> {
        let source = path.display().to_string();
        if path.is_dir() {
            if path.join("job.json").is_file() {
                let meta = story::read_meta(path)?;
                let results = story::collect_planned(path, &meta)?.current;
                if results.is_empty() {
                    bail!("the job folder {source} holds no case results yet");
                }
                let lb = story::build(&meta, &results)?;
                let rows: Vec<Map<String, Value>> = lb
                    .to_json()
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_object().cloned())
                    .collect();
                let mut key_cols = vec!["algorithm".to_string(), "paradigm".to_string()];
                key_cols.extend(meta.module_types.iter().cloned());
                key_cols.extend(meta.grid_columns.iter().cloned());
                return Ok(Self::from_rows(
                    source,
                    meta.name.clone(),
                    meta.rank.sort_by.clone(),
                    meta.metrics.clone(),
                    Some(key_cols),
                    &rows,
                ));
            }
            let lbf = path.join("rank").join("leaderboard.json");
            if lbf.is_file() {
                let mut b = Self::load(&lbf)?;
                b.source = source;
                return Ok(b);
            }
            bail!("{source} is neither a job folder (no job.json) nor a folder with rank/leaderboard.json");
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {source}"))?;
        let v: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{source} is not JSON (expected a leaderboard.json)"))?;
        Self::from_json(source, &v)
    }

    /// Reads `leaderboard.json` (`{job, sort_by, metrics, rows, ...}`) or a bare array of rows.
    pub fn from_json(source: String, v: &Value) -> Result<Board> {
        let (job, sort_by, metrics, key_cols, rows) = match v {
            Value::Object(o) => {
                let rows = o.get("rows").and_then(Value::as_array).with_context(|| {
                    format!("{source} has no `rows` list: is it a leaderboard.json?")
                })?;
                let sort_by: Vec<(String, Order)> = o
                    .get("sort_by")
                    .map(|s| serde_json::from_value(s.clone()))
                    .transpose()
                    .with_context(|| {
                        format!("{source}: `sort_by` is not a list of [metric, ascend|descend]")
                    })?
                    .unwrap_or_default();
                let metrics: Vec<String> = o
                    .get("metrics")
                    .map(|s| serde_json::from_value(s.clone()))
                    .transpose()
                    .with_context(|| format!("{source}: `metrics` is not a list of names"))?
                    .unwrap_or_default();
                let key_cols = match (
                    o.get("module_types").and_then(Value::as_array),
                    o.get("grid_columns").and_then(Value::as_array),
                ) {
                    (Some(m), Some(g)) => {
                        let mut k = vec!["algorithm".to_string(), "paradigm".to_string()];
                        k.extend(
                            m.iter()
                                .chain(g)
                                .filter_map(Value::as_str)
                                .map(String::from),
                        );
                        Some(k)
                    }
                    _ => None,
                };
                (
                    o.get("job")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    sort_by,
                    metrics,
                    key_cols,
                    rows.clone(),
                )
            }
            Value::Array(rows) => (String::new(), Vec::new(), Vec::new(), None, rows.clone()),
            _ => bail!(
                "{source} is neither a leaderboard.json object nor a list of leaderboard rows"
            ),
        };
        let rows: Vec<Map<String, Value>> = rows
            .into_iter()
            .map(|r| {
                r.as_object()
                    .cloned()
                    .with_context(|| format!("{source}: a row is not an object"))
            })
            .collect::<Result<_>>()?;
        if rows.iter().any(|r| !r.contains_key("algorithm")) {
            bail!("{source}: rows lack the `algorithm` column; is it a leaderboard?");
        }
        // Without a metric list (a bare array), every column named like a known metric is one.
        let metrics = if metrics.is_empty() {
            let mut m: Vec<String> = Vec::new();
            for r in &rows {
                for k in r.keys() {
                    if crate::metrics::canonical(k).is_some_and(|d| d.id == k) && !m.contains(k) {
                        m.push(k.clone());
                    }
                }
            }
            m
        } else {
            metrics
        };
        Ok(Self::from_rows(
            source, job, sort_by, metrics, key_cols, &rows,
        ))
    }

    fn from_rows(
        source: String,
        job: String,
        sort_by: Vec<(String, Order)>,
        metrics: Vec<String>,
        key_cols: Option<Vec<String>>,
        rows: &[Map<String, Value>],
    ) -> Board {
        let is_key = |c: &str| match &key_cols {
            Some(k) => k.iter().any(|x| x == c),
            // Older files: everything that is not a metric, a bound or bookkeeping identifies the case.
            None => {
                !NON_KEY.contains(&c)
                    && !metrics.iter().any(|m| m == c)
                    && story::confidence_column(&metrics, c).is_none()
            }
        };
        let cases = rows
            .iter()
            .map(|r| {
                let key_map: BTreeMap<String, Value> = r
                    .iter()
                    .filter(|(k, v)| is_key(k) && !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let key = serde_json::to_string(&key_map).unwrap_or_default();
                let algorithm = r
                    .get("algorithm")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let mut label = vec![algorithm.clone()];
                for (k, v) in &key_map {
                    if k != "algorithm" && k != "paradigm" {
                        label.push(format!("{k}={}", crate::plots::value_text(v)));
                    }
                }
                let values = metrics
                    .iter()
                    .map(|m| {
                        (
                            m.clone(),
                            r.get(m).and_then(Value::as_f64).filter(|x| x.is_finite()),
                        )
                    })
                    .collect();
                let unreadable = metrics
                    .iter()
                    .filter_map(|m| match r.get(m) {
                        None | Some(Value::Null) | Some(Value::Number(_)) => None,
                        Some(v) => Some((m.clone(), v.to_string())),
                    })
                    .collect();
                let intervals = metrics
                    .iter()
                    .filter_map(|m| {
                        let lo = r.get(&format!("{m}-ci-low")).and_then(Value::as_f64)?;
                        let hi = r.get(&format!("{m}-ci-high")).and_then(Value::as_f64)?;
                        Some((m.clone(), (lo, hi)))
                    })
                    .collect();
                let ok = r
                    .get("status")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s == "ok");
                BoardCase {
                    key,
                    key_map,
                    label: label.join(" "),
                    algorithm,
                    case_id: r
                        .get("case_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    ok,
                    values,
                    intervals,
                    unreadable,
                }
            })
            .collect();
        Board {
            source,
            job,
            sort_by,
            metrics,
            cases,
        }
    }
}

/// What happened to one metric of one matched case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Worse than the tolerance and outside the interval: fails the gate.
    Regressed,
    /// Worse than the tolerance but inside the interval.
    WithinNoise,
    /// Within tolerance, either way.
    Unchanged,
    /// Better than the tolerance and outside the interval.
    Improved,
    /// Worse beyond tolerance, but the metric is marked `ignore`.
    Ignored,
    /// No value on one side or the other, a value that is not a number, or no known
    /// direction: fails the gate unless the tolerance file marks the metric `ignore`.
    NotComparable,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Regressed => "**regressed**",
            Verdict::WithinNoise => "worse, within noise",
            Verdict::Unchanged => "within tolerance",
            Verdict::Improved => "improved",
            Verdict::Ignored => "worse, ignored",
            Verdict::NotComparable => "not comparable",
        }
    }
}

/// One case × metric check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub case: String,
    pub algorithm: String,
    pub baseline_case_id: String,
    pub current_case_id: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    pub baseline_interval: Option<(f64, f64)>,
    pub current_interval: Option<(f64, f64)>,
    pub higher_is_better: Option<bool>,
    pub tolerance: Tolerance,
    pub allowance: Option<f64>,
    pub verdict: Verdict,
    pub reason: String,
}

fn with_interval(v: Option<f64>, iv: Option<(f64, f64)>) -> String {
    match (v, iv) {
        (None, _) => "—".to_string(),
        (Some(v), None) => format_number(v),
        (Some(v), Some((lo, hi))) => format!(
            "{} [{}, {}]",
            format_number(v),
            format_number(lo),
            format_number(hi)
        ),
    }
}

impl Check {
    pub fn change(&self) -> String {
        match (self.baseline, self.current) {
            (Some(b), Some(c)) => {
                let d = c - b;
                let sign = if d >= 0.0 { "+" } else { "" };
                if b != 0.0 {
                    format!(
                        "{sign}{} ({sign}{:.1} %)",
                        format_number(d),
                        d / b.abs() * 100.0
                    )
                } else {
                    format!("{sign}{}", format_number(d))
                }
            }
            _ => "—".to_string(),
        }
    }
    pub fn baseline_text(&self) -> String {
        with_interval(self.baseline, self.baseline_interval)
    }
    pub fn current_text(&self) -> String {
        with_interval(self.current, self.current_interval)
    }
    /// One line for JUnit bodies and logs.
    pub fn detail(&self) -> String {
        format!(
            "{} {}: baseline {}, current {}, change {}, allowed worsening {}; {}",
            self.case,
            self.metric,
            self.baseline_text(),
            self.current_text(),
            self.change(),
            self.allowance.map_or("—".to_string(), format_number),
            self.reason
        )
    }
}

/// A case present on one side only.
#[derive(Debug, Clone, Serialize)]
pub struct Unmatched {
    pub label: String,
    pub algorithm: String,
    pub case_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: Board,
    pub current: Board,
    pub tolerances: Tolerances,
    pub checks: Vec<Check>,
    pub new: Vec<Unmatched>,
    pub missing: Vec<Unmatched>,
    /// Metrics only one side measured.
    pub baseline_only_metrics: Vec<String>,
    pub current_only_metrics: Vec<String>,
    pub fail_on_missing: bool,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
            .count()
    }
    /// Checks that could not be judged (and whose metric is not ignored).
    pub fn not_comparable(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::NotComparable)
            .count()
    }
    /// Baseline cases that found a partner in the current results.
    pub fn matched(&self) -> usize {
        self.baseline.cases.len() - self.missing.len()
    }
    /// Whether the gate fails: a regression, a check that could not be judged, or (with
    /// `--fail-on-missing`) a baseline case missing from the current results.
    pub fn failed(&self) -> bool {
        self.regressions() > 0
            || self.not_comparable() > 0
            || (self.fail_on_missing && !self.missing.is_empty())
    }
}

/// Which way is better: the tolerance file, else the sort order of a job that ranks by the
/// metric (current first), else the metric's own definition.
fn direction(metric: &str, tol: &Tolerance, base: &Board, cur: &Board) -> Option<bool> {
    if let Some(d) = tol.direction {
        return Some(d == Direction::Higher);
    }
    for b in [cur, base] {
        if let Some((_, o)) = b.sort_by.iter().find(|(m, _)| m == metric) {
            return Some(*o == Order::Descend);
        }
    }
    crate::metrics::canonical(metric)
        .filter(|m| m.id == metric)
        .map(|m| m.higher_is_better)
}

/// Judges one metric of a matched pair.
pub fn judge(
    base: Option<f64>,
    cur: Option<f64>,
    b_iv: Option<(f64, f64)>,
    c_iv: Option<(f64, f64)>,
    higher: Option<bool>,
    tol: &Tolerance,
    current_ok: bool,
) -> (Verdict, Option<f64>, String) {
    let (v, a, why) = judge_values(base, cur, b_iv, c_iv, higher, tol, current_ok);
    if v == Verdict::NotComparable && tol.ignore {
        return (Verdict::Ignored, a, format!("{why} (metric ignored)"));
    }
    (v, a, why)
}

fn judge_values(
    base: Option<f64>,
    cur: Option<f64>,
    b_iv: Option<(f64, f64)>,
    c_iv: Option<(f64, f64)>,
    higher: Option<bool>,
    tol: &Tolerance,
    current_ok: bool,
) -> (Verdict, Option<f64>, String) {
    let (b, c) = match (base, cur) {
        (Some(b), Some(c)) => (b, c),
        (Some(_), None) if !tol.ignore => {
            let why = if current_ok {
                "the metric could not be computed in the current run"
            } else {
                "the case failed in the current run"
            };
            return (Verdict::Regressed, None, why.to_string());
        }
        (Some(_), None) => {
            return (
                Verdict::Ignored,
                None,
                "no current value (metric ignored)".into(),
            )
        }
        (None, Some(_)) => return (Verdict::NotComparable, None, "no baseline value".into()),
        (None, None) => {
            return (
                Verdict::NotComparable,
                None,
                "no value on either side".into(),
            )
        }
    };
    let Some(higher) = higher else {
        return (
            Verdict::NotComparable,
            None,
            "direction unknown: give `direction: higher|lower` in the tolerance file".into(),
        );
    };
    let allowance = tol.allowance(b);
    let worse_by = if higher { b - c } else { c - b };
    let inside = b_iv.is_some_and(|(lo, hi)| lo <= c && c <= hi)
        || c_iv.is_some_and(|(lo, hi)| lo <= b && b <= hi);
    let (verdict, reason) = if worse_by > allowance {
        if inside {
            (
                Verdict::WithinNoise,
                "worse than the tolerance but inside the 95 % interval",
            )
        } else if tol.ignore {
            (
                Verdict::Ignored,
                "worse than the tolerance and outside the interval, but ignored",
            )
        } else {
            (
                Verdict::Regressed,
                "worse than the tolerance and outside the 95 % interval",
            )
        }
    } else if -worse_by > allowance && !inside {
        (
            Verdict::Improved,
            "better than the tolerance and outside the 95 % interval",
        )
    } else {
        (Verdict::Unchanged, "within the tolerance")
    };
    (verdict, Some(allowance), reason.to_string())
}

/// Readable case labels shared by both sides: the algorithm, then only the key columns whose
/// value differs between that algorithm's cases (hyperparameter names without their module
/// prefix when that is unambiguous). The full key still decides the matching.
fn short_labels(a: &mut Board, b: &mut Board) {
    let all: Vec<&BoardCase> = a.cases.iter().chain(&b.cases).collect();
    let mut varying: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for alg in all
        .iter()
        .map(|c| c.algorithm.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let cases: Vec<&&BoardCase> = all.iter().filter(|c| c.algorithm == alg).collect();
        let cols: std::collections::BTreeSet<&String> =
            cases.iter().flat_map(|c| c.key_map.keys()).collect();
        let vary: Vec<String> = cols
            .into_iter()
            .filter(|k| {
                *k != "algorithm"
                    && cases
                        .iter()
                        .map(|c| c.key_map.get(*k).map(|v| v.to_string()))
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                        > 1
            })
            .cloned()
            .collect();
        varying.insert(alg, vary);
    }
    let label = |c: &BoardCase| -> String {
        let cols = varying.get(&c.algorithm).cloned().unwrap_or_default();
        let mut parts = vec![c.algorithm.clone()];
        for k in &cols {
            let short = k
                .split_once('-')
                .map(|(_, h)| h)
                .filter(|h| {
                    cols.iter()
                        .filter(|o| o.ends_with(&format!("-{h}")))
                        .count()
                        == 1
                })
                .unwrap_or(k);
            parts.push(format!(
                "{short}={}",
                c.key_map
                    .get(k)
                    .map_or("—".to_string(), crate::plots::value_text)
            ));
        }
        parts.join(" ")
    };
    for board in [a, b] {
        for c in board.cases.iter_mut() {
            c.label = label(c);
        }
        // Two cases of one board with the same label (the same grid point run on other data in
        // one workspace) are told apart by their case ids.
        let labels: Vec<String> = board.cases.iter().map(|c| c.label.clone()).collect();
        for c in board.cases.iter_mut() {
            if labels.iter().filter(|l| **l == c.label).count() > 1 {
                c.label = format!("{} ({})", c.label, c.case_id);
            }
        }
    }
}

/// Matches cases (same key, then the same case id among duplicates) and judges every shared
/// metric.
pub fn compare(
    baseline: Board,
    current: Board,
    tolerances: Tolerances,
    fail_on_missing: bool,
) -> Result<Comparison> {
    let known: Vec<&String> = baseline.metrics.iter().chain(&current.metrics).collect();
    for name in tolerances.metrics.keys() {
        if !known.contains(&name) {
            let mut choices: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            choices.sort();
            choices.dedup();
            bail!("the tolerance file names metric `{name}`, which neither leaderboard has (they have: {})", choices.join(", "));
        }
    }
    let (mut baseline, mut current) = (baseline, current);
    short_labels(&mut baseline, &mut current);
    let shared: Vec<String> = baseline
        .metrics
        .iter()
        .filter(|m| current.metrics.contains(m))
        .cloned()
        .collect();
    let baseline_only_metrics = baseline
        .metrics
        .iter()
        .filter(|m| !current.metrics.contains(m))
        .cloned()
        .collect();
    let current_only_metrics = current
        .metrics
        .iter()
        .filter(|m| !baseline.metrics.contains(m))
        .cloned()
        .collect();

    // Pair by key; where a key repeats (a workspace holding the same grid point run on other
    // data), pair equal case ids first, then the rest in order.
    let mut used = vec![false; current.cases.len()];
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut missing = Vec::new();
    for pass in 0..2 {
        for (bi, b) in baseline.cases.iter().enumerate() {
            if pairs.iter().any(|(x, _)| *x == bi) {
                continue;
            }
            let found = current.cases.iter().enumerate().position(|(ci, c)| {
                !used[ci] && c.key == b.key && (pass == 1 || c.case_id == b.case_id)
            });
            if let Some(ci) = found {
                used[ci] = true;
                pairs.push((bi, ci));
            }
        }
    }
    pairs.sort();
    for (bi, b) in baseline.cases.iter().enumerate() {
        if !pairs.iter().any(|(x, _)| *x == bi) {
            missing.push(Unmatched {
                label: b.label.clone(),
                algorithm: b.algorithm.clone(),
                case_id: b.case_id.clone(),
            });
        }
    }
    let new = current
        .cases
        .iter()
        .enumerate()
        .filter(|(ci, _)| !used[*ci])
        .map(|(_, c)| Unmatched {
            label: c.label.clone(),
            algorithm: c.algorithm.clone(),
            case_id: c.case_id.clone(),
        })
        .collect();

    let mut checks = Vec::new();
    for (bi, ci) in pairs {
        let (b, c) = (&baseline.cases[bi], &current.cases[ci]);
        if !b.ok && !c.ok {
            continue; // failed on both sides: nothing to compare, nothing new
        }
        for m in &shared {
            let tol = tolerances.for_metric(m);
            let higher = direction(m, &tol, &baseline, &current);
            let (bv, cv) = (
                b.values.get(m).copied().flatten(),
                c.values.get(m).copied().flatten(),
            );
            let (biv, civ) = (b.intervals.get(m).copied(), c.intervals.get(m).copied());
            let text = |side: &str, x: &BoardCase| {
                x.unreadable
                    .get(m)
                    .map(|v| format!("the {side} value {v} is not a number"))
            };
            let (verdict, allowance, reason) =
                match text("baseline", b).or_else(|| text("current", c)) {
                    Some(why) if tol.ignore => {
                        (Verdict::Ignored, None, format!("{why} (metric ignored)"))
                    }
                    Some(why) => (Verdict::NotComparable, None, why),
                    None => judge(bv, cv, biv, civ, higher, &tol, c.ok),
                };
            checks.push(Check {
                case: c.label.clone(),
                algorithm: c.algorithm.clone(),
                baseline_case_id: b.case_id.clone(),
                current_case_id: c.case_id.clone(),
                metric: m.clone(),
                baseline: bv,
                current: cv,
                baseline_interval: biv,
                current_interval: civ,
                higher_is_better: higher,
                tolerance: tol,
                allowance,
                verdict,
                reason,
            });
        }
    }
    Ok(Comparison {
        baseline,
        current,
        tolerances,
        checks,
        new,
        missing,
        baseline_only_metrics,
        current_only_metrics,
        fail_on_missing,
    })
}

fn md_cell(s: &str) -> String {
    crate::report::markdown_cell(s)
}

/// The Markdown summary: verdict first, then regressions, then every check, then what did not
/// match. Fit for `$GITHUB_STEP_SUMMARY`.
pub fn to_markdown(c: &Comparison) -> String {
    let regs = c.regressions();
    let mut s = String::new();
    let head = if c.failed() {
        let mut why = Vec::new();
        if regs > 0 {
            why.push(format!(
                "{regs} regression(s) in {} check(s)",
                c.checks.len()
            ));
        }
        let nc = c.not_comparable();
        if nc > 0 {
            why.push(format!(
                "{nc} check(s) not comparable (mark a metric `ignore: true` in the tolerance file to skip it)"
            ));
        }
        if c.fail_on_missing && !c.missing.is_empty() {
            why.push(format!("{} missing case(s)", c.missing.len()));
        }
        format!("FAILED: {}", why.join(", "))
    } else {
        format!("PASSED: no regression in {} check(s)", c.checks.len())
    };
    s.push_str(&format!("## ianvs compare — {head}\n\n"));
    let side = |b: &Board| {
        format!(
            "`{}`{} ({} case(s))",
            b.source,
            if b.job.is_empty() {
                String::new()
            } else {
                format!(", job `{}`", b.job)
            },
            b.cases.len()
        )
    };
    s.push_str(&format!(
        "- baseline: {}\n- current: {}\n",
        side(&c.baseline),
        side(&c.current)
    ));
    let mut tol = format!("- tolerance: default {}", c.tolerances.default.describe());
    for m in c.tolerances.metrics.keys() {
        tol.push_str(&format!("; {m}: {}", c.tolerances.for_metric(m).describe()));
    }
    s.push_str(&format!("{tol}\n- rule: {RULE}\n"));
    let count = |v: Verdict| c.checks.iter().filter(|x| x.verdict == v).count();
    s.push_str(&format!(
        "- checks: {} regressed, {} improved, {} within tolerance, {} worse within noise, {} ignored, {} not comparable\n\n",
        regs,
        count(Verdict::Improved),
        count(Verdict::Unchanged),
        count(Verdict::WithinNoise),
        count(Verdict::Ignored),
        count(Verdict::NotComparable)
    ));
    let header = "| case | metric | baseline | current | change | allowed | verdict |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    let row = |x: &Check| {
        let dir = match x.higher_is_better {
            Some(true) => " ↑",
            Some(false) => " ↓",
            None => "",
        };
        format!(
            "| {} | {}{dir} | {} | {} | {} | {} | {} |\n",
            md_cell(&x.case),
            md_cell(&x.metric),
            x.baseline_text(),
            x.current_text(),
            x.change(),
            x.allowance.map_or("—".to_string(), format_number),
            x.verdict.text()
        )
    };
    if regs > 0 {
        s.push_str("### Regressions\n\n");
        s.push_str(header);
        for x in c.checks.iter().filter(|x| x.verdict == Verdict::Regressed) {
            s.push_str(&row(x));
        }
        s.push('\n');
    }
    s.push_str("### All checks\n\n");
    if c.checks.is_empty() {
        s.push_str("No case matched: nothing was compared.\n\n");
    } else {
        s.push_str(header);
        for x in &c.checks {
            s.push_str(&row(x));
        }
        s.push_str("\n↑ higher is better, ↓ lower is better; brackets: 95 % confidence interval; allowed: the worsening the tolerance accepts.\n\n");
    }
    let changed_ids: Vec<&Check> = {
        let mut v: Vec<&Check> = c
            .checks
            .iter()
            .filter(|x| {
                !x.baseline_case_id.is_empty()
                    && !x.current_case_id.is_empty()
                    && x.baseline_case_id != x.current_case_id
            })
            .collect();
        v.dedup_by(|a, b| a.case == b.case);
        v
    };
    if !changed_ids.is_empty() {
        s.push_str("Matched by algorithm and hyperparameters although the case id differs (the data, the seed or a fixed hyperparameter changed): ");
        s.push_str(
            &changed_ids
                .iter()
                .map(|x| {
                    format!(
                        "{} ({} → {})",
                        x.case, x.baseline_case_id, x.current_case_id
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str(".\n\n");
    }
    let list = |title: &str, v: &[Unmatched], s: &mut String| {
        if !v.is_empty() {
            s.push_str(&format!("### {title}\n\n"));
            for u in v {
                s.push_str(&format!("- {} (case {})\n", md_cell(&u.label), u.case_id));
            }
            s.push('\n');
        }
    };
    list(
        &format!(
            "Missing cases (in the baseline only{})",
            if c.fail_on_missing {
                "; they fail the gate"
            } else {
                ""
            }
        ),
        &c.missing,
        &mut s,
    );
    list("New cases (in the current results only)", &c.new, &mut s);
    if !c.baseline_only_metrics.is_empty() {
        s.push_str(&format!(
            "Metrics no longer measured: {}.\n\n",
            c.baseline_only_metrics.join(", ")
        ));
    }
    if !c.current_only_metrics.is_empty() {
        s.push_str(&format!(
            "New metrics (no baseline): {}.\n\n",
            c.current_only_metrics.join(", ")
        ));
    }
    s
}

/// Where [`write_outputs`] put its files.
pub struct Outputs {
    pub summary: Option<std::path::PathBuf>,
    pub junit: Option<std::path::PathBuf>,
}

/// Writes the JUnit XML to `junit` and appends the Markdown summary to `summary` (appending so
/// `--summary "$GITHUB_STEP_SUMMARY"` adds to what the CI job already wrote).
pub fn write_outputs(
    c: &Comparison,
    summary: Option<&Path>,
    junit_path: Option<&Path>,
) -> Result<Outputs> {
    if let Some(p) = junit_path {
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        crate::workspace::atomic_write(p, junit::render(c).as_bytes())?;
    }
    if let Some(p) = summary {
        use std::io::Write;
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        f.write_all(to_markdown(c).as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(Outputs {
        summary: summary.map(Path::to_path_buf),
        junit: junit_path.map(Path::to_path_buf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(abs: f64) -> Tolerance {
        Tolerance {
            absolute: Some(abs),
            ..Default::default()
        }
    }

    #[test]
    fn judge_needs_both_tolerance_and_interval() {
        // 5 points worse, tolerance 1 point, intervals far apart: regression.
        let (v, a, _) = judge(
            Some(0.95),
            Some(0.90),
            Some((0.94, 0.96)),
            Some((0.89, 0.91)),
            Some(true),
            &tol(0.01),
            true,
        );
        assert_eq!((v, a), (Verdict::Regressed, Some(0.01)));
        // Same change inside the baseline's interval: noise.
        let (v, _, _) = judge(
            Some(0.95),
            Some(0.90),
            Some((0.85, 0.99)),
            None,
            Some(true),
            &tol(0.01),
            true,
        );
        assert_eq!(v, Verdict::WithinNoise);
        // Within tolerance, whatever the interval.
        let (v, _, _) = judge(
            Some(0.95),
            Some(0.945),
            None,
            None,
            Some(true),
            &tol(0.01),
            true,
        );
        assert_eq!(v, Verdict::Unchanged);
        // Lower is better: a slower latency regresses, a faster one improves.
        let (v, _, _) = judge(
            Some(1.0),
            Some(2.0),
            None,
            None,
            Some(false),
            &tol(0.1),
            true,
        );
        assert_eq!(v, Verdict::Regressed);
        let (v, _, _) = judge(
            Some(2.0),
            Some(1.0),
            None,
            None,
            Some(false),
            &tol(0.1),
            true,
        );
        assert_eq!(v, Verdict::Improved);
        // A value that disappears regresses; one that appears is not comparable.
        assert_eq!(
            judge(Some(1.0), None, None, None, Some(true), &tol(0.1), false).0,
            Verdict::Regressed
        );
        assert_eq!(
            judge(None, Some(1.0), None, None, Some(true), &tol(0.1), true).0,
            Verdict::NotComparable
        );
        // Ignored metrics never regress.
        let ig = Tolerance {
            ignore: true,
            ..tol(0.0)
        };
        assert_eq!(
            judge(Some(1.0), Some(0.0), None, None, Some(true), &ig, true).0,
            Verdict::Ignored
        );
        assert_eq!(
            judge(Some(1.0), Some(0.0), None, None, None, &tol(0.0), true).0,
            Verdict::NotComparable
        );
    }

    fn board(rows: Value) -> Board {
        Board::from_json("t".into(), &serde_json::json!({"job": "j", "sort_by": [["accuracy", "descend"]], "metrics": ["accuracy"], "module_types": ["basemodel"], "grid_columns": ["basemodel-lr"], "rows": rows})).unwrap()
    }

    #[test]
    fn cases_match_by_hyperparameters_not_by_row_order() {
        let b = board(serde_json::json!([
            {"rank": 1, "algorithm": "a", "accuracy": 0.9, "basemodel": "MLP", "basemodel-lr": 0.1, "status": "ok", "case_id": "x1"},
            {"rank": 2, "algorithm": "a", "accuracy": 0.8, "basemodel": "MLP", "basemodel-lr": 0.01, "status": "ok", "case_id": "x2"},
            {"rank": 3, "algorithm": "a", "accuracy": 0.7, "basemodel": "MLP", "basemodel-lr": 0.5, "status": "ok", "case_id": "x3"},
        ]));
        let c = board(serde_json::json!([
            {"rank": 1, "algorithm": "a", "accuracy": 0.81, "basemodel": "MLP", "basemodel-lr": 0.01, "status": "ok", "case_id": "y2"},
            {"rank": 2, "algorithm": "a", "accuracy": 0.5, "basemodel": "MLP", "basemodel-lr": 0.1, "status": "ok", "case_id": "y1"},
            {"rank": 3, "algorithm": "a", "accuracy": 0.6, "basemodel": "MLP", "basemodel-lr": 0.9, "status": "ok", "case_id": "y4"},
        ]));
        let cmp = compare(b, c, Tolerances::default(), false).unwrap();
        assert_eq!(cmp.checks.len(), 2);
        let lr01 = cmp
            .checks
            .iter()
            .find(|x| x.case.contains("lr=0.1"))
            .unwrap();
        assert_eq!(
            (lr01.baseline, lr01.current, lr01.verdict),
            (Some(0.9), Some(0.5), Verdict::Regressed)
        );
        assert_eq!(
            cmp.checks
                .iter()
                .find(|x| x.case.contains("lr=0.01"))
                .unwrap()
                .verdict,
            Verdict::Unchanged
        );
        assert_eq!(cmp.missing.len(), 1);
        assert_eq!(cmp.new.len(), 1);
        assert!(cmp.failed());
        let md = to_markdown(&cmp);
        assert!(md.contains("FAILED: 1 regression(s)"), "{md}");
        assert!(md.contains("### Missing cases") && md.contains("### New cases"));
    }

    #[test]
    fn bare_row_arrays_load_with_inferred_metrics_and_keys() {
        let rows = serde_json::json!([
            {"rank": 1, "algorithm": "a", "accuracy": 0.9, "latency-mean": 2.0, "accuracy-ci-low": 0.85, "accuracy-ci-high": 0.95, "basemodel": "MLP", "basemodel-lr": 0.1, "time": "t", "url": "u", "status": "ok", "case_id": "x1"},
            {"rank": null, "algorithm": "a", "accuracy": null, "latency-mean": null, "basemodel": "MLP", "basemodel-lr": 0.2, "time": "t", "url": "u", "status": "failed", "case_id": "x2"},
        ]);
        let b = Board::from_json("rows".into(), &rows).unwrap();
        assert_eq!(b.metrics, ["accuracy", "latency-mean"]);
        assert_eq!(b.cases[0].intervals["accuracy"], (0.85, 0.95));
        assert!(
            b.cases[0].key_map.contains_key("basemodel-lr")
                && !b.cases[0].key_map.contains_key("time")
        );
        assert!(!b.cases[1].ok);
        // The failed case fails every metric it used to have.
        let mut c = b.clone();
        c.cases[0].ok = false;
        c.cases[0].values.insert("accuracy".into(), None);
        let cmp = compare(b, c, Tolerances::default(), false).unwrap();
        let acc = cmp.checks.iter().find(|x| x.metric == "accuracy").unwrap();
        assert_eq!(
            (acc.verdict, acc.reason.as_str()),
            (Verdict::Regressed, "the case failed in the current run")
        );
    }

    #[test]
    fn unknown_tolerance_metric_is_an_error() {
        let b = board(
            serde_json::json!([{"algorithm": "a", "accuracy": 0.9, "status": "ok", "case_id": "x"}]),
        );
        let t = Tolerances::parse("metrics:\n  latency-p95: { relative: 0.1 }\n").unwrap();
        let e = compare(b.clone(), b, t, false).unwrap_err();
        assert!(e.to_string().contains("neither leaderboard has"), "{e}");
    }
}
