//! Charts of a job's results, drawn with plotters as SVG (inlined in the HTML report) and PNG
//! (linked from the Markdown report), into `<job>/plots/`.
//!
//! Which charts a job gets is decided from its metric definitions, its grid and what its cases
//! stored, never from metric or paradigm names, so every paradigm is drawn without code here:
//!
//! - a bar chart per selected metric across cases, with 95 % interval whiskers;
//! - trade-off scatters with their Pareto frontier: the first ranking metric against the other
//!   ranking metrics and one metric of each other kind (accuracy vs latency, vs transfer
//!   ratio; throughput vs acceptance), where the frontier holds two or more cases;
//! - a line chart of the ranking metrics against each numeric hyperparameter that was swept;
//! - a heatmap of every numeric matrix a case stored as a CSV artifact (the lifelong accuracy
//!   matrix: header row = column labels, first column = row labels);
//! - a latency distribution (CDF) of every per-sample time field in the records
//!   (`*_s`, `*_ms`), warm-up samples excluded.
//!
//! Text is laid out and rasterised with DejaVu Sans, shipped in `assets/fonts/` and registered
//! from bytes, so no system font library is needed.

mod draw;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::Order;
use crate::controller::{CaseResult, Status};
use crate::metrics::{self, Interval};
use crate::story::{JobMeta, Leaderboard};

pub use draw::{BarChart, CdfChart, Draw, HeatmapChart, LineChart, ScatterChart, SweepPoint};

/// The font every chart uses, registered with plotters as `sans-serif`.
pub static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub const FONT: &str = "sans-serif";

/// Most bars in one bar chart and lines in one chart: more would not be readable.
pub const MAX_BARS: usize = 30;
pub const MAX_SERIES: usize = 8;
const MAX_SCATTERS: usize = 4;
const MAX_SWEEPS: usize = 8;
const MAX_HEATMAPS: usize = 4;
const MAX_CDFS: usize = 4;
const MAX_BAR_METRICS: usize = 8;

/// Registers the shipped font once per process.
pub fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, plotters::style::FontStyle::Normal, FONT_BYTES)
            .is_err()
        {
            res = Err(anyhow::anyhow!(
                "the shipped font assets/fonts/DejaVuSans.ttf could not be read"
            ));
        }
    });
    res
}

/// One rendered chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File name without extension, in `<job>/plots/`.
    pub stem: String,
    pub kind: &'static str,
    pub title: String,
    /// One sentence saying what the chart shows and how to read it.
    pub caption: String,
    pub svg: String,
    pub width: u32,
    pub height: u32,
}

/// A case as the charts show it: its result, its rank and a short label.
#[derive(Debug, Clone)]
pub struct CaseView<'a> {
    pub result: &'a CaseResult,
    pub rank: Option<usize>,
    pub label: String,
}

/// An axis: what it shows and which way is better.
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub higher_is_better: Option<bool>,
}

impl Axis {
    pub fn metric(meta: &JobMeta, id: &str) -> Axis {
        let unit = metrics::canonical(id).map_or("", |m| m.unit);
        let label = if unit.is_empty() {
            id.to_string()
        } else {
            format!("{id} ({unit})")
        };
        Axis {
            label,
            higher_is_better: Some(higher_is_better(meta, id)),
        }
    }
    /// `accuracy (higher is better)`, `latency-mean (ms, lower is better)`.
    pub fn phrase(&self) -> String {
        let dir = match self.higher_is_better {
            Some(true) => "higher is better",
            Some(false) => "lower is better",
            None => return self.label.clone(),
        };
        match self.label.strip_suffix(')') {
            Some(with_unit) => format!("{with_unit}, {dir})"),
            None => format!("{} ({dir})", self.label),
        }
    }
    pub fn described(&self) -> String {
        match self.higher_is_better {
            Some(true) => format!("{}, higher is better", self.label),
            Some(false) => format!("{}, lower is better", self.label),
            None => self.label.clone(),
        }
    }
}

/// Direction of a metric: the job's `sort_by` when it ranks by it, else the metric's own.
pub fn higher_is_better(meta: &JobMeta, id: &str) -> bool {
    meta.rank
        .sort_by
        .iter()
        .find(|(m, _)| m == id)
        .map(|(_, o)| *o == Order::Descend)
        .unwrap_or_else(|| metrics::canonical(id).is_none_or(|m| m.higher_is_better))
}

/// Cases in leaderboard order (ranked first, failed last) with short, distinct labels: the
/// algorithm, then the grid values that differ between cases.
pub fn case_views<'a>(
    meta: &JobMeta,
    results: &'a [CaseResult],
    lb: &Leaderboard,
) -> Vec<CaseView<'a>> {
    let id_col = lb.columns.iter().position(|c| c == "case_id");
    let rank_col = lb.columns.iter().position(|c| c == "rank");
    let mut order: Vec<(&'a CaseResult, Option<usize>)> = Vec::new();
    if let Some(ic) = id_col {
        for row in &lb.rows {
            let id = row[ic].as_str().unwrap_or_default();
            if let Some(r) = results
                .iter()
                .find(|r| r.case_id == id && !order.iter().any(|(o, _)| std::ptr::eq(*o, *r)))
            {
                order.push((
                    r,
                    rank_col.and_then(|rc| row[rc].as_u64()).map(|x| x as usize),
                ));
            }
        }
    }
    for r in results {
        if !order.iter().any(|(o, _)| std::ptr::eq(*o, r)) {
            order.push((r, None));
        }
    }
    let varying_owned = varying_columns(meta, results);
    let varying: Vec<&String> = varying_owned.iter().collect();
    // A hyperparameter name alone reads best; keep the module prefix only when two modules share it.
    let short = |c: &str| -> String {
        let hp = meta
            .module_types
            .iter()
            .find_map(|t| c.strip_prefix(&format!("{t}-")))
            .unwrap_or(c);
        let clashes = varying
            .iter()
            .filter(|o| o.ends_with(&format!("-{hp}")))
            .count()
            > 1;
        if clashes {
            c.to_string()
        } else {
            hp.to_string()
        }
    };
    let algorithms: BTreeSet<&str> = results.iter().map(|r| r.algorithm.as_str()).collect();
    let mut views: Vec<CaseView<'a>> = order
        .into_iter()
        .map(|(r, rank)| {
            let mut parts = Vec::new();
            if algorithms.len() > 1 || varying.is_empty() {
                parts.push(r.algorithm.clone());
            }
            for c in &varying {
                if let Some(v) = r.grid.get(c.as_str()) {
                    parts.push(format!("{}={}", short(c), value_text(v)));
                }
            }
            CaseView {
                result: r,
                rank,
                label: truncate(&parts.join(" "), 56),
            }
        })
        .collect();
    // Labels must tell cases apart: add the case id where two would read the same.
    let labels: Vec<String> = views.iter().map(|v| v.label.clone()).collect();
    for v in views.iter_mut() {
        if labels.iter().filter(|l| **l == v.label).count() > 1 {
            v.label = format!(
                "{} ({})",
                v.label,
                &v.result.case_id[..v.result.case_id.len().min(6)]
            );
        }
    }
    views
}

/// Grid columns that take two or more values within one algorithm: the ones that tell cases
/// apart (a value that only differs between algorithms is told by the algorithm name).
pub fn varying_columns(meta: &JobMeta, results: &[CaseResult]) -> Vec<String> {
    let algs: BTreeSet<&str> = results.iter().map(|r| r.algorithm.as_str()).collect();
    meta.grid_columns
        .iter()
        .filter(|c| {
            algs.iter().any(|a| {
                let vals: BTreeSet<String> = results
                    .iter()
                    .filter(|r| r.algorithm == *a)
                    .map(|r| {
                        r.grid
                            .get(c.as_str())
                            .map_or(String::new(), |v| v.to_string())
                    })
                    .collect();
                vals.len() > 1
            })
        })
        .cloned()
        .collect()
}

/// A hyperparameter value as people write it: `0.001`, `[16, 16]`, `adam`.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or(n.to_string(), compact_number),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(value_text).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// Up to four significant digits, trailing zeros trimmed: `0.1`, `0.0016`, `12.5`, `1500`.
pub fn compact_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x == 0.0 { "0".into() } else { x.to_string() };
    }
    let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

fn metric_of(r: &CaseResult, id: &str) -> Option<f64> {
    r.metrics
        .get(id)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// The metrics a job's charts show: the selected ones (`selected_dataitem.metrics`), else all.
pub fn shown_metrics(meta: &JobMeta) -> Vec<String> {
    match &meta.rank.selected.metrics {
        Some(sel) => meta
            .metrics
            .iter()
            .filter(|m| sel.contains(m))
            .cloned()
            .collect(),
        None => meta.metrics.clone(),
    }
}

/// Ranking metrics first (in `sort_by` order), then the rest of the shown metrics.
fn primary_metrics(meta: &JobMeta) -> Vec<String> {
    let mut out: Vec<String> = meta
        .rank
        .sort_by
        .iter()
        .map(|(m, _)| m.clone())
        .filter(|m| meta.metrics.contains(m))
        .collect();
    if out.is_empty() {
        out.extend(meta.metrics.first().cloned());
    }
    out
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Plans every chart of a job: pure, so tests can check the choice without drawing.
pub fn plan(
    meta: &JobMeta,
    results: &[CaseResult],
    lb: &Leaderboard,
    job_dir: &Path,
) -> Vec<(String, Box<dyn DrawAny>)> {
    let views = case_views(meta, results, lb);
    let ok: Vec<&CaseView> = views
        .iter()
        .filter(|v| v.result.status == Status::Ok)
        .collect();
    let failed = views.len() - ok.len();
    let mut out: Vec<(String, Box<dyn DrawAny>)> = Vec::new();

    // Bars: one per shown metric.
    for m in shown_metrics(meta).iter().take(MAX_BAR_METRICS) {
        let rows: Vec<(String, f64, Option<Interval>)> = ok
            .iter()
            .filter_map(|v| {
                metric_of(v.result, m)
                    .map(|x| (v.label.clone(), x, v.result.intervals.get(m).copied()))
            })
            .take(MAX_BARS)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let axis = Axis::metric(meta, m);
        let with_iv = rows.iter().filter(|r| r.2.is_some()).count();
        let mut caption = format!(
            "{}: one bar per finished case ({}), best-ranked at the top",
            axis.phrase(),
            rows.len()
        );
        if with_iv > 0 {
            caption.push_str("; whiskers: 95 % confidence interval");
        }
        if failed > 0 {
            caption.push_str(&format!("; {failed} failed case(s) not shown"));
        }
        out.push((
            format!("bar-{}", slug(m)),
            Box::new(BarChart {
                title: format!("{m} by case"),
                axis,
                rows,
                caption,
            }),
        ));
    }

    // Trade-offs: the first ranking metric against the others, where there is a trade-off to
    // see (a Pareto frontier of two or more cases). Candidates: the other ranking metrics;
    // then one metric per kind (unit and direction) not drawn yet, so cost, traffic and speed
    // each get a chart; then the rest, each in YAML order. A candidate that ranks the cases
    // exactly as (or exactly against) one already chosen this way adds nothing (cloud calls
    // against the transfer ratio, bytes against calls) and is left out.
    let primaries = primary_metrics(meta);
    if let Some(p) = primaries.first() {
        let kind = |id: &str| {
            (
                metrics::canonical(id).map_or("", |d| d.unit),
                higher_is_better(meta, id),
            )
        };
        let ranking: Vec<String> = primaries.iter().skip(1).cloned().collect();
        let mut candidates = ranking.clone();
        let mut kinds = vec![kind(p)];
        kinds.extend(ranking.iter().map(|m| kind(m)));
        for m in &meta.metrics {
            if !candidates.contains(m) && m != p && !kinds.contains(&kind(m)) {
                kinds.push(kind(m));
                candidates.push(m.clone());
            }
        }
        let rest: Vec<String> = meta
            .metrics
            .iter()
            .filter(|m| *m != p && !candidates.contains(m))
            .cloned()
            .collect();
        candidates.extend(rest);
        let mut drawn = 0;
        let mut chosen: Vec<Vec<f64>> = Vec::new();
        for m in candidates {
            if drawn >= MAX_SCATTERS {
                break;
            }
            let pts: Vec<draw::Point> = ok
                .iter()
                .filter_map(|v| {
                    let (x, y) = (metric_of(v.result, &m)?, metric_of(v.result, p)?);
                    Some(draw::Point {
                        label: v.label.clone(),
                        group: v.result.algorithm.clone(),
                        x,
                        y,
                        x_iv: v.result.intervals.get(&m).copied(),
                        y_iv: v.result.intervals.get(p).copied(),
                        on_frontier: false,
                    })
                })
                .collect();
            if pts.len() < 2 {
                continue;
            }
            let (xa, ya) = (Axis::metric(meta, &m), Axis::metric(meta, p));
            let chart = ScatterChart::new(format!("Trade-off: {p} vs {m}"), xa, ya, pts);
            if chart.frontier.len() < 2 {
                continue;
            }
            if !ranking.contains(&m) {
                let xs: Vec<f64> = ok
                    .iter()
                    .map(|v| metric_of(v.result, &m).unwrap_or(f64::NAN))
                    .collect();
                if chosen
                    .iter()
                    .any(|d| spearman(d, &xs).is_some_and(|r| r.abs() > 0.98))
                {
                    continue;
                }
                chosen.push(xs);
            }
            drawn += 1;
            out.push((
                format!("tradeoff-{}-vs-{}", slug(p), slug(&m)),
                Box::new(chart),
            ));
        }
    }

    // Sweeps: ranking metrics against each numeric hyperparameter with two or more values.
    let varying = varying_columns(meta, results);
    let mut sweeps = 0;
    for col in &meta.grid_columns {
        let numeric: Vec<(&CaseView, f64)> = ok
            .iter()
            .filter_map(|v| {
                v.result
                    .grid
                    .get(col)
                    .and_then(Value::as_f64)
                    .map(|x| (*v, x))
            })
            .collect();
        let distinct: BTreeSet<u64> = numeric.iter().map(|(_, x)| x.to_bits()).collect();
        if distinct.len() < 2 {
            continue;
        }
        let hp = meta
            .module_types
            .iter()
            .find_map(|t| col.strip_prefix(&format!("{t}-")))
            .unwrap_or(col);
        for m in primaries.iter().take(2) {
            if sweeps >= MAX_SWEEPS {
                break;
            }
            // One line per combination of everything else that varies (algorithm, other axes).
            let mut series: BTreeMap<String, Vec<SweepPoint>> = BTreeMap::new();
            for (v, x) in &numeric {
                let Some(y) = metric_of(v.result, m) else {
                    continue;
                };
                let mut key = vec![v.result.algorithm.clone()];
                for other in varying.iter().filter(|c| *c != col) {
                    if let Some(val) = v.result.grid.get(other) {
                        let short = meta
                            .module_types
                            .iter()
                            .find_map(|t| other.strip_prefix(&format!("{t}-")))
                            .unwrap_or(other);
                        key.push(format!("{short}={}", value_text(val)));
                    }
                }
                series
                    .entry(truncate(&key.join(" "), 48))
                    .or_default()
                    .push((*x, y, v.result.intervals.get(m).copied()));
            }
            let mut series: Vec<(String, Vec<SweepPoint>)> =
                series.into_iter().filter(|(_, p)| !p.is_empty()).collect();
            for (_, pts) in series.iter_mut() {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            // Keep the series with the best values when there are too many to read.
            let hib = higher_is_better(meta, m);
            series.sort_by(|a, b| {
                let best = |s: &[SweepPoint]| {
                    s.iter()
                        .map(|p| if hib { p.1 } else { -p.1 })
                        .fold(f64::NEG_INFINITY, f64::max)
                };
                best(&b.1).total_cmp(&best(&a.1))
            });
            let dropped = series.len().saturating_sub(MAX_SERIES);
            series.truncate(MAX_SERIES);
            if series.iter().all(|(_, p)| p.len() < 2) {
                continue;
            }
            let xs: Vec<f64> = numeric.iter().map(|(_, x)| *x).collect();
            let log_x = xs.iter().all(|x| *x > 0.0)
                && xs.iter().cloned().fold(f64::MIN, f64::max)
                    / xs.iter().cloned().fold(f64::MAX, f64::min)
                    >= 100.0;
            let mut caption = format!("{} against the swept hyperparameter `{col}`, one line per combination of the other settings", Axis::metric(meta, m).phrase());
            if log_x {
                caption.push_str("; logarithmic x axis");
            }
            if dropped > 0 {
                caption.push_str(&format!(
                    "; {dropped} further line(s) with worse values not drawn"
                ));
            }
            out.push((
                format!("sweep-{}-vs-{}", slug(m), slug(col)),
                Box::new(LineChart {
                    title: format!("{m} vs {hp}"),
                    x: Axis {
                        label: col.clone(),
                        higher_is_better: None,
                    },
                    y: Axis::metric(meta, m),
                    series,
                    log_x,
                    caption,
                }),
            ));
            sweeps += 1;
        }
    }

    // Heatmaps: numeric CSV matrices the best-ranked cases stored.
    let mut heatmaps = 0;
    for v in &ok {
        if heatmaps >= MAX_HEATMAPS {
            break;
        }
        let dir = job_dir
            .join(crate::config::paths::folder_name(
                &v.result.algorithm,
                crate::story::RESERVED_DIRS,
            ))
            .join(&v.result.case_id);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "csv"))
            .collect();
        files.sort();
        for f in files {
            let Some(hm) = std::fs::read_to_string(&f)
                .ok()
                .and_then(|t| parse_matrix(&t))
            else {
                continue;
            };
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let caption = format!(
                "`{}` of case {} (rank {}): rows {}, columns {}; darker is lower",
                f.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                v.label,
                v.rank.map_or("-".into(), |r| r.to_string()),
                hm.row_labels.len(),
                hm.col_labels.len()
            );
            out.push((
                format!("heatmap-{}-{}", slug(&name), &v.result.case_id),
                Box::new(HeatmapChart {
                    title: format!("{name} — {}", v.label),
                    caption,
                    ..hm
                }),
            ));
            heatmaps += 1;
            break;
        }
    }

    // Latency distributions: every per-sample time field of the records, one line per case.
    let mut fields: BTreeMap<String, Vec<(String, Vec<f64>)>> = BTreeMap::new();
    let mut field_order: Vec<String> = Vec::new();
    for v in ok.iter().take(MAX_SERIES) {
        let f = job_dir
            .join(crate::config::paths::folder_name(
                &v.result.algorithm,
                crate::story::RESERVED_DIRS,
            ))
            .join(&v.result.case_id)
            .join("records.jsonl");
        for (field, ms) in time_fields(&f) {
            if !field_order.contains(&field) {
                field_order.push(field.clone());
            }
            fields.entry(field).or_default().push((v.label.clone(), ms));
        }
    }
    // Fields named like end-to-end latency first; a paradigm that times every stage gets its
    // most telling distributions, not one chart per stage.
    field_order.sort_by_key(|f| !f.contains("latency"));
    field_order.truncate(MAX_CDFS);
    for field in field_order {
        let series = fields.remove(&field).unwrap_or_default();
        let n: usize = series.iter().map(|(_, v)| v.len()).sum();
        let caption = format!("Share of test samples answered within a given time, per case ({n} samples in all, warm-up excluded); further right is slower");
        let name = field
            .trim_end_matches("_ms")
            .trim_end_matches("_s")
            .to_string();
        out.push((
            format!("cdf-{}", slug(&name)),
            Box::new(CdfChart {
                title: format!("Distribution of per-sample {}", name.replace('_', " ")),
                x_label: format!("{} (ms)", name.replace('_', " ")),
                series,
                caption,
            }),
        ));
    }
    out
}

/// Spearman rank correlation of two equally long vectors over the positions where both are
/// finite (ties get their average rank); `None` with fewer than three such positions or when
/// one side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect();
    if pairs.len() < 3 {
        return None;
    }
    let ranks = |v: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (ra, rb) = (
        ranks(pairs.iter().map(|p| p.0).collect()),
        ranks(pairs.iter().map(|p| p.1).collect()),
    );
    let (ma, mb) = (metrics::mean(&ra), metrics::mean(&rb));
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (
        ra.iter().map(|x| (x - ma).powi(2)).sum(),
        rb.iter().map(|y| (y - mb).powi(2)).sum(),
    );
    if va == 0.0 || vb == 0.0 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

/// Per-sample time fields of a records file in milliseconds: numeric fields named `*_s`
/// (seconds) or `*_ms`, warm-up records (`"warmup": true`) left out.
pub fn time_fields(records: &Path) -> Vec<(String, Vec<f64>)> {
    let Ok(text) = std::fs::read_to_string(records) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    for line in text.lines() {
        let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if o.get("warmup").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        for (k, v) in &o {
            let scale = if k.ends_with("_ms") {
                1.0
            } else if k.ends_with("_s") {
                1e3
            } else {
                continue;
            };
            let Some(x) = v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) else {
                continue;
            };
            match out.iter_mut().find(|(f, _)| f == k) {
                Some((_, xs)) => xs.push(x * scale),
                None => out.push((k.clone(), vec![x * scale])),
            }
        }
    }
    out.retain(|(_, v)| v.len() >= 2);
    out
}

/// Reads a numeric matrix from CSV: an optional header row (column labels) and an optional
/// first column of row labels; empty cells are missing values. `None` unless at least 2×2
/// numbers, so ordinary tables are not drawn as heatmaps.
pub fn parse_matrix(text: &str) -> Option<HeatmapChart> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|c| c.trim().trim_matches('"').to_string())
                .collect()
        })
        .collect();
    let width = rows.first()?.len();
    if rows.iter().any(|r| r.len() != width) || width < 2 {
        return None;
    }
    let num = |s: &str| -> Option<Option<f64>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse::<f64>().ok().filter(|x| x.is_finite()).map(Some)
        }
    };
    // A header row has a label past its first cell, or a text corner cell above a column of
    // numbers (`true \ predicted,0,1,2`). A label column has text in some row's first cell, or
    // sits under an empty or text corner (as pandas writes an index).
    let is_text = |c: &str| num(c).is_none();
    let header = rows[0].iter().skip(1).any(|c| is_text(c))
        || (is_text(&rows[0][0]) && rows[1..].iter().all(|r| !is_text(&r[0])));
    let body = if header { &rows[1..] } else { &rows[..] };
    let row_labels_col = body.iter().any(|r| is_text(&r[0]))
        || (header && (rows[0][0].is_empty() || is_text(&rows[0][0])));
    let first = if row_labels_col { 1 } else { 0 };
    let mut values = Vec::new();
    for r in body {
        let mut row = Vec::new();
        for c in &r[first..] {
            row.push(num(c)?);
        }
        values.push(row);
    }
    let cols = width - first;
    if values.len() < 2 || cols < 2 || values.iter().flatten().filter(|v| v.is_some()).count() < 2 {
        return None;
    }
    // One colour scale must fit every column: a table whose columns are different quantities
    // (counts next to ratios) is not a matrix to colour.
    let col_max: Vec<f64> = (0..cols)
        .map(|c| {
            values
                .iter()
                .filter_map(|r| r[c])
                .map(f64::abs)
                .fold(0.0, f64::max)
        })
        .filter(|m| *m > 0.0)
        .collect();
    let (lo, hi) = (
        col_max.iter().copied().fold(f64::INFINITY, f64::min),
        col_max.iter().copied().fold(0.0, f64::max),
    );
    if col_max.len() > 1 && hi / lo > 50.0 {
        return None;
    }
    let col_labels: Vec<String> = if header {
        rows[0][first..].to_vec()
    } else {
        (0..cols).map(|i| i.to_string()).collect()
    };
    let row_labels: Vec<String> = body
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if row_labels_col {
                r[0].clone()
            } else {
                i.to_string()
            }
        })
        .collect();
    let corner = if header && row_labels_col {
        rows[0][0].clone()
    } else {
        String::new()
    };
    Some(HeatmapChart {
        title: String::new(),
        caption: String::new(),
        row_labels,
        col_labels,
        corner,
        values,
    })
}

/// Object-safe face of [`Draw`] so charts of different kinds sit in one list.
pub trait DrawAny {
    fn kind(&self) -> &'static str;
    fn title(&self) -> String;
    fn caption(&self) -> String;
    fn size(&self) -> (u32, u32);
    fn svg(&self) -> Result<String>;
    fn png(&self, path: &Path) -> Result<()>;
}

impl<T: Draw> DrawAny for T {
    fn kind(&self) -> &'static str {
        Draw::kind(self)
    }
    fn title(&self) -> String {
        Draw::title(self)
    }
    fn caption(&self) -> String {
        Draw::caption(self)
    }
    fn size(&self) -> (u32, u32) {
        Draw::size(self)
    }
    fn svg(&self) -> Result<String> {
        draw::to_svg(self)
    }
    fn png(&self, path: &Path) -> Result<()> {
        draw::to_png(self, path)
    }
}

/// Draws every planned chart into `<job>/plots/` (replacing what an earlier report left there)
/// as `<stem>.svg` and `<stem>.png`, and returns them for the report.
pub fn render(
    job_dir: &Path,
    meta: &JobMeta,
    results: &[CaseResult],
    lb: &Leaderboard,
) -> Result<Vec<Chart>> {
    register_font()?;
    let dir = job_dir.join("plots");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut charts = Vec::new();
    for (stem, chart) in plan(meta, results, lb, job_dir) {
        let svg = chart.svg().with_context(|| format!("drawing {stem}.svg"))?;
        crate::workspace::atomic_write(&dir.join(format!("{stem}.svg")), svg.as_bytes())?;
        chart
            .png(&dir.join(format!("{stem}.png")))
            .with_context(|| format!("drawing {stem}.png"))?;
        let (width, height) = chart.size();
        charts.push(Chart {
            stem,
            kind: chart.kind(),
            title: chart.title(),
            caption: chart.caption(),
            svg,
            width,
            height,
        });
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_parse_with_and_without_labels() {
        let m = parse_matrix("after\\task,t1,t2\nt1,0.9,0.1\nt2,0.8,0.95\n").unwrap();
        assert_eq!(m.col_labels, ["t1", "t2"]);
        assert_eq!(m.row_labels, ["t1", "t2"]);
        assert_eq!(m.corner, "after\\task");
        assert_eq!(m.values[1][1], Some(0.95));
        let m = parse_matrix("1,2,3\n4,,6\n").unwrap();
        assert_eq!(m.values[1], vec![Some(4.0), None, Some(6.0)]);
        assert_eq!(m.col_labels, ["0", "1", "2"]);
        let m = parse_matrix("true \\ predicted,0,1\n0,5,1\n1,0,4\n").unwrap();
        assert_eq!(
            (
                m.corner.as_str(),
                m.col_labels.clone(),
                m.row_labels.clone()
            ),
            (
                "true \\ predicted",
                vec!["0".to_string(), "1".into()],
                vec!["0".to_string(), "1".into()]
            )
        );
        assert_eq!(
            m.values,
            vec![vec![Some(5.0), Some(1.0)], vec![Some(0.0), Some(4.0)]]
        );
        let m = parse_matrix("t1,0.9,0.1\nt2,0.8,0.95\n").unwrap();
        assert_eq!((m.row_labels.len(), m.col_labels.len()), (2, 2));
        assert!(parse_matrix("name,value\nfoo,bar\n").is_none());
        assert!(
            parse_matrix("a,b\n1,2\n").is_none(),
            "a single row is not a matrix"
        );
        assert!(
            parse_matrix("position,reached,accepted,acceptance\n1,200,150,0.75\n2,150,90,0.6\n")
                .is_none(),
            "columns of different quantities"
        );
        let m =
            parse_matrix("after_round,task 1,task 2\nuntrained,0.1,0.12\n1,0.95,0.1\n2,0.9,0.96\n")
                .unwrap();
        assert_eq!(m.row_labels, ["untrained", "1", "2"]);
    }

    #[test]
    fn time_fields_skip_warmup_and_convert_to_ms() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("records.jsonl");
        std::fs::write(&f, "{\"latency_s\":0.5,\"warmup\":true}\n{\"latency_s\":0.001,\"label\":1}\n{\"latency_s\":0.002,\"ttft_ms\":3}\n").unwrap();
        let t = time_fields(&f);
        assert_eq!(t[0].0, "latency_s");
        assert_eq!(t[0].1, vec![1.0, 2.0]);
        assert!(
            t.iter().all(|(k, _)| k != "ttft_ms"),
            "one value is not a distribution"
        );
    }

    #[test]
    fn numbers_read_compactly() {
        assert_eq!(compact_number(0.1), "0.1");
        assert_eq!(compact_number(0.0016), "0.0016");
        assert_eq!(compact_number(12.5), "12.5");
        assert_eq!(compact_number(1500.0), "1500");
        assert_eq!(compact_number(-0.25), "-0.25");
        assert_eq!(compact_number(0.123456), "0.1235");
        assert_eq!(value_text(&serde_json::json!([16, 0.5])), "[16, 0.5]");
    }

    fn meta(metrics: &[&str], grid: &[&str]) -> JobMeta {
        JobMeta {
            name: "j".into(),
            benchmark_file: String::new(),
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            module_types: vec!["m".into()],
            grid_columns: grid.iter().map(|g| g.to_string()).collect(),
            rank: crate::config::RankConfig {
                sort_by: vec![(metrics[0].to_string(), Order::Descend)],
                visualization_mode: "selected_only".into(),
                selected: Default::default(),
                save_mode: "selected_and_all".into(),
                selected_output_columns: None,
            },
            planned: None,
        }
    }

    fn case(id: &str, values: &[(&str, f64)], grid: &[(&str, Value)]) -> CaseResult {
        CaseResult {
            case_id: id.into(),
            algorithm: "a".into(),
            paradigm: "p".into(),
            status: Status::Ok,
            error: None,
            metrics: values
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect(),
            metric_errors: Default::default(),
            measurements: Default::default(),
            intervals: Default::default(),
            runs: Default::default(),
            modules: vec![],
            grid: grid
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            started_at: String::new(),
            finished_at: String::new(),
            wall_time_s: 0.0,
            url: String::new(),
            ianvs_version: String::new(),
        }
    }

    fn stems(meta: &JobMeta, results: &[CaseResult]) -> Vec<String> {
        let lb = crate::story::build(meta, results).unwrap();
        plan(meta, results, &lb, Path::new("/nonexistent"))
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    #[test]
    fn one_case_gets_bars_only() {
        let m = meta(&["accuracy", "latency-mean"], &["m-lr"]);
        let r = vec![case(
            "c1",
            &[("accuracy", 0.9), ("latency-mean", 1.0)],
            &[("m-lr", serde_json::json!(0.1))],
        )];
        assert_eq!(stems(&m, &r), ["bar-accuracy", "bar-latency-mean"]);
    }

    #[test]
    fn trade_offs_need_a_frontier_and_skip_rescaled_partners() {
        let m = meta(
            &[
                "accuracy",
                "macro-f1",
                "samples-transfer-ratio",
                "cloud-calls",
                "latency-mean",
            ],
            &["m-lr"],
        );
        // More cloud → more accurate, slower; macro-F1 follows accuracy (no trade-off);
        // cloud calls are the transfer ratio times 100 (nothing new); latency is not.
        let r: Vec<CaseResult> = (0..4)
            .map(|i| {
                let t = i as f64 / 4.0;
                case(
                    &format!("c{i}"),
                    &[
                        ("accuracy", 0.8 + t / 10.0),
                        ("macro-f1", 0.7 + t / 10.0),
                        ("samples-transfer-ratio", t),
                        ("cloud-calls", 100.0 * t),
                        ("latency-mean", [1.0, 3.0, 2.0, 4.0][i]),
                    ],
                    &[("m-lr", serde_json::json!(0.001 * 10f64.powi(i as i32)))],
                )
            })
            .collect();
        let s = stems(&m, &r);
        let trade: Vec<&String> = s.iter().filter(|x| x.starts_with("tradeoff-")).collect();
        assert_eq!(
            trade,
            [
                "tradeoff-accuracy-vs-samples-transfer-ratio",
                "tradeoff-accuracy-vs-latency-mean"
            ],
            "{s:?}"
        );
        assert!(s.contains(&"sweep-accuracy-vs-m-lr".to_string()), "{s:?}");
    }

    #[test]
    fn spearman_sees_rescalings_and_reversals() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 35.0, 90.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[0.9, 0.5, 0.2, 0.1]).unwrap() + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]).is_none());
        assert!(spearman(&a, &[2.0, 1.0, 4.0, 3.0]).unwrap().abs() < 0.7);
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("basemodel-learning_rate"), "basemodel-learning-rate");
        assert_eq!(slug("Accuracy Matrix!"), "accuracy-matrix");
    }
}
