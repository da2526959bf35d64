//! The story manager: turns stored case results into ranked leaderboards (CSV, Markdown, JSON)
//! and the table printed at the end of a run.
//!
//! Columns follow Ianvs — `rank, algorithm, <metrics in YAML order>, paradigm, <module types>,
//! <module>-<hyperparameter>…, time, url` — then `status, case_id`, always in that order, so
//! two runs of the same job produce files that diff cleanly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Algorithm, Job, Order, RankConfig};
use crate::controller::{CaseResult, Status};
use crate::metrics::MetricDef;

/// What `ianvs leaderboard DIR` needs to re-render a job without its YAML: `<job>/job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMeta {
    pub name: String,
    pub benchmark_file: String,
    pub metrics: Vec<String>,
    pub module_types: Vec<String>,
    pub grid_columns: Vec<String>,
    pub rank: RankConfig,
    /// Case ids of the job's current plan. Stored results of other ids are stale (the grid, the
    /// data or a setting changed since they ran): listed, never ranked. `None` in a `job.json`
    /// written before ianvs recorded the plan: every stored result is ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<Vec<String>>,
}

impl JobMeta {
    pub fn of(job: &Job) -> Self {
        Self {
            name: job.name.clone(),
            benchmark_file: job.file.to_string_lossy().into_owned(),
            metrics: job
                .testenv
                .metrics
                .iter()
                .map(|m| m.id.to_string())
                .collect(),
            module_types: module_types(&job.algorithms),
            grid_columns: grid_columns(&job.algorithms),
            rank: job.rank.clone(),
            planned: None,
        }
    }
    pub fn columns(&self) -> Vec<String> {
        let mut c = vec!["rank".to_string(), "algorithm".to_string()];
        c.extend(self.metrics.iter().cloned());
        c.push("paradigm".into());
        c.extend(self.module_types.iter().cloned());
        c.extend(self.grid_columns.iter().cloned());
        c.extend(["time", "url", "status", "case_id"].map(String::from));
        c
    }
}

fn module_types(algs: &[Algorithm]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in algs.iter().flat_map(|a| &a.modules) {
        if !out.contains(&m.module_type) {
            out.push(m.module_type.clone());
        }
    }
    out
}

/// `<module type>-<hyperparameter>` for every hyperparameter on a grid axis, in YAML order.
fn grid_columns(algs: &[Algorithm]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ty in module_types(algs) {
        for m in algs
            .iter()
            .flat_map(|a| &a.modules)
            .filter(|m| m.module_type == ty)
        {
            for axis in &m.axes {
                let mut names = BTreeSet::new();
                for point in axis {
                    names.extend(point.keys().cloned());
                }
                for n in names {
                    let col = format!("{ty}-{n}");
                    if !out.contains(&col) {
                        out.push(col);
                    }
                }
            }
        }
    }
    out
}

/// Every column a leaderboard of this job can have (for validating `selected_output_columns`).
pub fn possible_columns(metrics: &[&'static MetricDef], algs: &[Algorithm]) -> Vec<String> {
    let meta = JobMeta {
        name: String::new(),
        benchmark_file: String::new(),
        metrics: metrics.iter().map(|m| m.id.to_string()).collect(),
        module_types: module_types(algs),
        grid_columns: grid_columns(algs),
        rank: RankConfig {
            sort_by: vec![],
            visualization_mode: String::new(),
            selected: Default::default(),
            save_mode: String::new(),
            selected_output_columns: None,
        },
        planned: None,
    };
    let mut c = meta.columns();
    for m in &meta.metrics {
        c.extend(CONFIDENCE_SUFFIXES.iter().map(|s| format!("{m}{s}")));
    }
    c
}

/// Suffixes of the columns that qualify a metric: its 95 % interval bounds and, for repeated
/// cases, its standard deviation over runs (`accuracy-ci-low`, `accuracy-ci-high`, `accuracy-std`).
pub const CONFIDENCE_SUFFIXES: [&str; 3] = ["-ci-low", "-ci-high", "-std"];

/// The confidence columns this set of results fills, after `case_id`: interval bounds for the
/// metrics that have an interval in some case, a standard deviation for those repeated.
pub fn confidence_columns(meta: &JobMeta, results: &[CaseResult]) -> Vec<String> {
    let mut c = Vec::new();
    for m in &meta.metrics {
        if results.iter().any(|r| r.intervals.contains_key(m)) {
            c.push(format!("{m}-ci-low"));
            c.push(format!("{m}-ci-high"));
        }
        if results
            .iter()
            .any(|r| r.runs.get(m).is_some_and(|v| v.len() > 1))
        {
            c.push(format!("{m}-std"));
        }
    }
    c
}

/// The metric a confidence column qualifies and which bound it holds.
pub fn confidence_column<'a>(
    metrics: &'a [String],
    column: &str,
) -> Option<(&'a str, &'static str)> {
    CONFIDENCE_SUFFIXES.iter().find_map(|s| {
        column
            .strip_suffix(s)
            .and_then(|m| metrics.iter().find(|x| *x == m))
            .map(|m| (m.as_str(), *s))
    })
}

fn confidence_cell(r: &CaseResult, metric: &str, suffix: &str) -> Value {
    match suffix {
        "-ci-low" => r
            .intervals
            .get(metric)
            .map_or(Value::Null, |i| serde_json::json!(i.low)),
        "-ci-high" => r
            .intervals
            .get(metric)
            .map_or(Value::Null, |i| serde_json::json!(i.high)),
        _ => r
            .runs
            .get(metric)
            .filter(|v| v.len() > 1)
            .map_or(Value::Null, |v| {
                serde_json::json!(crate::metrics::interval::std_dev(v))
            }),
    }
}

/// Folders of a job folder that are not algorithms: the leaderboards, the report's charts and
/// the regression gate's outputs. No algorithm may take these names.
pub const RESERVED_DIRS: &[&str] = &["rank", "plots", "compare"];

/// Reads every case result stored under a job folder (`<job>/<algorithm>/<case-id>/metrics.json`).
pub fn collect(job_dir: &Path) -> Result<Vec<CaseResult>> {
    let mut out = Vec::new();
    let Ok(algs) = std::fs::read_dir(job_dir) else {
        return Ok(out);
    };
    let mut alg_dirs: Vec<PathBuf> = algs
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name().is_some_and(|n| {
                    !RESERVED_DIRS.iter().any(|r| n == *r) && !n.to_string_lossy().starts_with('.')
                })
        })
        .collect();
    alg_dirs.sort();
    for ad in alg_dirs {
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&ad)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        cases.sort();
        for c in cases {
            let f = c.join("metrics.json");
            if let Ok(bytes) = std::fs::read(&f) {
                let r: CaseResult = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a valid case result", f.display()))?;
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// A job's stored results split by its current plan: those it plans (ranked) and stale ones.
pub struct Stored {
    pub current: Vec<CaseResult>,
    pub stale: Vec<CaseResult>,
}

/// Reads a job's stored results and sets apart those of cases the job no longer plans.
pub fn collect_planned(job_dir: &Path, meta: &JobMeta) -> Result<Stored> {
    let all = collect(job_dir)?;
    Ok(match &meta.planned {
        None => Stored {
            current: all,
            stale: Vec::new(),
        },
        Some(ids) => {
            let (current, stale) = all.into_iter().partition(|r| ids.contains(&r.case_id));
            Stored { current, stale }
        }
    })
}

/// "algorithm/case-id" of each result, for messages.
pub fn case_paths(results: &[CaseResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| format!("{}/{}", r.algorithm, r.case_id))
        .collect()
}

/// The one-line note about stale results that `run` and `leaderboard` print.
pub fn stale_note(job_dir: &Path, stale: &[CaseResult]) -> Option<String> {
    if stale.is_empty() {
        return None;
    }
    Some(format!(
        "note: {} stored case result(s) are not in the job's current plan (its grid, data or settings changed since they ran) and are not ranked: {}; remove them with `ianvs prune {}`",
        stale.len(),
        case_paths(stale).join(", "),
        job_dir.display()
    ))
}

/// Deletes the folders of stale results (and staging folders a killed run left behind).
/// Returns the removed case paths. The caller holds the job lock.
pub fn prune(job_dir: &Path, meta: &JobMeta) -> Result<Vec<String>> {
    let stored = collect_planned(job_dir, meta)?;
    let mut removed = Vec::new();
    for r in &stored.stale {
        let d = job_dir.join(&r.algorithm).join(&r.case_id);
        std::fs::remove_dir_all(&d).with_context(|| format!("cannot remove {}", d.display()))?;
        removed.push(format!("{}/{}", r.algorithm, r.case_id));
    }
    if let Ok(algs) = std::fs::read_dir(job_dir) {
        for a in algs.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| {
            p.is_dir()
                && !RESERVED_DIRS
                    .iter()
                    .any(|r| p.file_name().is_some_and(|n| n == *r))
        }) {
            for e in std::fs::read_dir(&a)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
            {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with('.') && n.ends_with(".partial") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            // The folder of an algorithm the job dropped, now empty (fails harmlessly if not).
            let _ = std::fs::remove_dir(&a);
        }
    }
    Ok(removed)
}

/// A rendered leaderboard: column names and rows of cells, already ranked.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaderboard {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format_number(x),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Four significant-ish decimals: enough to compare, few enough to read.
pub fn format_number(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

fn time_of(r: &CaseResult) -> String {
    chrono::DateTime::parse_from_rfc3339(&r.finished_at)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| r.finished_at.clone())
}

/// Builds the full leaderboard with polars: one row per case, ranked by the multi-key `sort_by`
/// (failed cases last, unranked).
pub fn build(meta: &JobMeta, results: &[CaseResult]) -> Result<Leaderboard> {
    let mut columns = meta.columns();
    columns.extend(confidence_columns(meta, results));
    let n = results.len();
    let mut cols: Vec<Column> = Vec::new();
    cols.push(Column::new(
        "_failed".into(),
        results
            .iter()
            .map(|r| r.status == Status::Failed)
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "_order".into(),
        (0..n as u32).collect::<Vec<_>>(),
    ));
    for m in &meta.metrics {
        cols.push(Column::new(
            m.as_str().into(),
            results
                .iter()
                .map(|r| r.metrics.get(m).and_then(Value::as_f64))
                .collect::<Vec<Option<f64>>>(),
        ));
    }
    let mut by: Vec<String> = vec!["_failed".into()];
    let mut desc = vec![false];
    for (m, o) in &meta.rank.sort_by {
        if meta.metrics.contains(m) {
            by.push(m.clone());
            desc.push(*o == Order::Descend);
        }
    }
    // Stored order (algorithm, case id) breaks ties, so equal scores rank deterministically.
    by.push("_order".into());
    desc.push(false);
    let df = DataFrame::new_infer_height(cols)?;
    let sorted = df.sort(
        &by,
        SortMultipleOptions::new()
            .with_order_descending_multi(desc)
            .with_nulls_last(true)
            .with_maintain_order(true),
    )?;
    let order: Vec<usize> = sorted
        .column("_order")?
        .u32()?
        .into_no_null_iter()
        .map(|i| i as usize)
        .collect();

    let mut rows = Vec::with_capacity(n);
    let mut rank = 0;
    for i in order {
        let r = &results[i];
        let mut row = Vec::with_capacity(columns.len());
        for c in &columns {
            let v = match c.as_str() {
                "rank" => {
                    if r.status == Status::Ok {
                        rank += 1;
                        Value::from(rank)
                    } else {
                        Value::Null
                    }
                }
                "algorithm" => Value::String(r.algorithm.clone()),
                "paradigm" => Value::String(r.paradigm.clone()),
                "time" => Value::String(time_of(r)),
                "url" => Value::String(r.url.clone()),
                "status" => Value::String(if r.status == Status::Ok {
                    "ok".into()
                } else {
                    "failed".into()
                }),
                "case_id" => Value::String(r.case_id.clone()),
                c if meta.metrics.iter().any(|m| m == c) => {
                    r.metrics.get(c).cloned().unwrap_or(Value::Null)
                }
                c if meta.module_types.iter().any(|m| m == c) => r
                    .modules
                    .iter()
                    .find(|m| m.module_type == c)
                    .map_or(Value::Null, |m| Value::String(m.name.clone())),
                c => match confidence_column(&meta.metrics, c) {
                    Some((m, suffix)) if !meta.grid_columns.iter().any(|g| g == c) => {
                        confidence_cell(r, m, suffix)
                    }
                    _ => r.grid.get(c).cloned().unwrap_or(Value::Null),
                },
            };
            row.push(v);
        }
        rows.push(row);
    }
    Ok(Leaderboard { columns, rows })
}

impl Leaderboard {
    /// The columns picked by `selected_output_columns`, else by `selected_dataitem`.
    pub fn select(&self, meta: &JobMeta) -> Leaderboard {
        let sel = &meta.rank.selected;
        let keep: Vec<usize> = match &meta.rank.selected_output_columns {
            Some(cols) => cols
                .iter()
                .filter_map(|c| self.columns.iter().position(|x| x == c))
                .collect(),
            None => (0..self.columns.len())
                .filter(|&i| {
                    let c = &self.columns[i];
                    if meta.metrics.contains(c) {
                        sel.metrics.as_ref().is_none_or(|m| m.contains(c))
                    } else if c == "paradigm" {
                        sel.paradigms.is_none()
                            || sel.paradigms.as_ref().is_some_and(|p| !p.is_empty())
                    } else if meta.module_types.contains(c) {
                        sel.modules.as_ref().is_none_or(|m| m.contains(c))
                    } else if meta.grid_columns.contains(c) {
                        let (ty, hp) = c.split_once('-').unwrap_or((c, c));
                        sel.modules
                            .as_ref()
                            .is_none_or(|m| m.iter().any(|x| x == ty))
                            && sel
                                .hyperparameters
                                .as_ref()
                                .is_none_or(|h| h.iter().any(|x| x == hp))
                    } else {
                        // Interval bounds stay in the full files; a printed table keeps to values.
                        c != "case_id" && confidence_column(&meta.metrics, c).is_none()
                    }
                })
                .collect(),
        };
        Leaderboard {
            columns: keep.iter().map(|&i| self.columns[i].clone()).collect(),
            rows: self
                .rows
                .iter()
                .map(|r| keep.iter().map(|&i| r[i].clone()).collect())
                .collect(),
        }
    }

    /// A Markdown pipe table, columns padded so it also reads well in a terminal.
    pub fn to_markdown(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(cell_text).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |vals: Vec<&str>| -> String {
            let parts: Vec<String> = vals
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            format!("| {} |\n", parts.join(" | "))
        };
        let mut s = line(self.columns.iter().map(String::as_str).collect());
        s.push_str(&format!(
            "|{}|\n",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        ));
        for r in &cells {
            s.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        s
    }

    /// A polars frame with metric columns as numbers and the rest as text.
    fn to_frame(&self) -> Result<DataFrame> {
        let mut cols = Vec::new();
        for (i, name) in self.columns.iter().enumerate() {
            let numeric = self.rows.iter().all(|r| r[i].is_number() || r[i].is_null())
                && self.rows.iter().any(|r| r[i].is_number());
            let col = if numeric {
                Column::new(
                    name.as_str().into(),
                    self.rows
                        .iter()
                        .map(|r| r[i].as_f64())
                        .collect::<Vec<Option<f64>>>(),
                )
            } else {
                Column::new(
                    name.as_str().into(),
                    self.rows
                        .iter()
                        .map(|r| {
                            if r[i].is_null() {
                                None
                            } else {
                                Some(cell_text(&r[i]))
                            }
                        })
                        .collect::<Vec<Option<String>>>(),
                )
            };
            cols.push(col);
        }
        Ok(DataFrame::new(self.rows.len(), cols)?)
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut df = self.to_frame()?;
        let mut buf = Vec::new();
        CsvWriter::new(&mut buf)
            .include_header(true)
            .finish(&mut df)?;
        atomic_write(path, &buf)
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    Value::Object(
                        self.columns
                            .iter()
                            .cloned()
                            .zip(r.iter().cloned())
                            .collect(),
                    )
                })
                .collect(),
        )
    }
}

/// "accuracy (higher first), then latency-mean (lower first)": the job's ranking in words.
pub fn sort_text(meta: &JobMeta) -> String {
    meta.rank
        .sort_by
        .iter()
        .map(|(m, o)| {
            format!(
                "{m} ({})",
                if *o == Order::Descend {
                    "higher first"
                } else {
                    "lower first"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

pub use crate::workspace::atomic_write;

/// Writes `<job>/rank/{all_rank.csv, selected_rank.csv, leaderboard.md, leaderboard.json}` from
/// the stored results of the job's planned cases and returns the full and selected leaderboards
/// and the stale results (stored, not planned: listed in the files, not ranked).
pub fn write_rank(
    job_dir: &Path,
    meta: &JobMeta,
) -> Result<(Leaderboard, Leaderboard, Vec<CaseResult>)> {
    let stored = collect_planned(job_dir, meta)?;
    let (all, selected) = write_rank_with_stale(job_dir, meta, &stored.current, &stored.stale)?;
    Ok((all, selected, stored.stale))
}

/// [`write_rank`] from results already in memory.
pub fn write_rank_from(
    job_dir: &Path,
    meta: &JobMeta,
    results: &[CaseResult],
) -> Result<(Leaderboard, Leaderboard)> {
    write_rank_with_stale(job_dir, meta, results, &[])
}

fn write_rank_with_stale(
    job_dir: &Path,
    meta: &JobMeta,
    results: &[CaseResult],
    stale: &[CaseResult],
) -> Result<(Leaderboard, Leaderboard)> {
    let all = build(meta, results)?;
    let selected = all.select(meta);
    let dir = job_dir.join("rank");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // `selected_and_all_and_picture` (Ianvs) saves the full table too; its pictures are the
    // report's charts, drawn by the run.
    if meta.rank.save_mode.starts_with("selected_and_all") {
        all.write_csv(&dir.join("all_rank.csv"))?;
    }
    selected.write_csv(&dir.join("selected_rank.csv"))?;
    let mut md = format!(
        "# Leaderboard: {}\n\nRanked by {}. {} case(s).\n\n{}",
        meta.name,
        sort_text(meta),
        all.rows.len(),
        selected.to_markdown()
    );
    if !stale.is_empty() {
        md.push_str(&format!(
            "\n## Stale results (not ranked)\n\nStored results of {} case(s) the job no longer plans (its grid, data or settings changed since they ran); `ianvs prune <job folder>` removes them: {}.\n",
            stale.len(),
            case_paths(stale).iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    atomic_write(&dir.join("leaderboard.md"), md.as_bytes())?;
    let json = serde_json::json!({ "job": meta.name, "sort_by": meta.rank.sort_by, "metrics": meta.metrics, "module_types": meta.module_types, "grid_columns": meta.grid_columns, "columns": all.columns, "selected_columns": selected.columns, "rows": all.to_json(), "stale": case_paths(stale) });
    atomic_write(
        &dir.join("leaderboard.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok((all, selected))
}

pub fn write_meta(job_dir: &Path, meta: &JobMeta) -> Result<()> {
    std::fs::create_dir_all(job_dir)
        .with_context(|| format!("cannot create {}", job_dir.display()))?;
    atomic_write(
        &job_dir.join("job.json"),
        serde_json::to_string_pretty(meta)?.as_bytes(),
    )
}

pub fn read_meta(job_dir: &Path) -> Result<JobMeta> {
    let f = job_dir.join("job.json");
    let bytes = std::fs::read(&f).with_context(|| {
        format!(
            "{} is not a job folder: cannot read {}",
            job_dir.display(),
            f.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid job.json", f.display()))
}
