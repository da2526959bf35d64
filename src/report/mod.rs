//! The job report: one self-contained HTML file (inline CSS and SVG, no external reference, opens
//! offline) and a Markdown version (PNG charts beside it), with the configuration, the machine,
//! the leaderboard with 95 % intervals, the charts and every failed case with its error.
//!
//! Both formats render the same [`Report`] model; `ianvs report DIR` rebuilds it from a job
//! folder's stored results, and every `ianvs run` writes it when the run ends.

mod html;
pub mod machine;
mod markdown;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::controller::{CaseResult, Status};
use crate::metrics::{self, interval::std_dev, Interval};
use crate::plots::{self, Chart};
use crate::story::{self, format_number, sort_text, JobMeta, Leaderboard};
pub use machine::{Machine, RunInfo};

/// A table: headers and rows of text cells.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Everything a report shows, format-free.
#[derive(Debug, Clone)]
pub struct Report {
    pub job: String,
    pub summary: String,
    pub configuration: Table,
    pub algorithms: Table,
    /// `None` for a job run before ianvs recorded its machine.
    pub machine: Option<Table>,
    pub leaderboard: Table,
    /// What the leaderboard table leaves out and where to find it.
    pub leaderboard_note: String,
    /// How each metric's interval was computed, one line per metric.
    pub interval_notes: Vec<String>,
    pub charts: Vec<Chart>,
    pub failed: Table,
}

/// Paths a report was written to.
pub struct Written {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub charts: usize,
}

fn kv(rows: Vec<(&str, String)>) -> Table {
    Table {
        headers: vec!["".into(), "".into()],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v])
            .collect(),
    }
}

/// A metric cell: the value, its interval and, for repeated cases, the spread over runs.
pub fn metric_cell(r: &CaseResult, id: &str) -> String {
    let Some(v) = r.metrics.get(id).and_then(Value::as_f64) else {
        return r
            .metric_errors
            .get(id)
            .map_or(String::new(), |_| "n/a".to_string());
    };
    let mut s = format_number(v);
    if let Some(runs) = r.runs.get(id).filter(|x| x.len() > 1) {
        s.push_str(&format!(
            " ± {} ({} runs)",
            format_number(std_dev(runs)),
            runs.len()
        ));
    }
    if let Some(Interval { low, high, .. }) = r.intervals.get(id) {
        s.push_str(&format!(
            " [{}, {}]",
            format_number(*low),
            format_number(*high)
        ));
    }
    s
}

/// Builds the report model of a job from its stored results (and renders its charts into
/// `<job>/plots/`).
pub fn build(job_dir: &Path) -> Result<Report> {
    let meta = story::read_meta(job_dir)?;
    let results = story::collect_planned(job_dir, &meta)?.current;
    let lb = story::build(&meta, &results)?;
    let run = RunInfo::read(job_dir)?;
    let charts = plots::render(job_dir, &meta, &results, &lb).context("drawing the charts")?;
    Ok(model(&meta, &results, &lb, run.as_ref(), charts))
}

/// The report model from data already loaded (pure; the snapshot tests render this).
pub fn model(
    meta: &JobMeta,
    results: &[CaseResult],
    lb: &Leaderboard,
    run: Option<&RunInfo>,
    charts: Vec<Chart>,
) -> Report {
    let ok = results.iter().filter(|r| r.status == Status::Ok).count();
    let failed_n = results.len() - ok;
    let last = results
        .iter()
        .map(|r| r.finished_at.as_str())
        .max()
        .unwrap_or("");
    let last = chrono::DateTime::parse_from_rfc3339(last)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|_| last.to_string());
    let summary = format!(
        "{} case(s): {ok} finished, {failed_n} failed. Ranked by {}. Last case finished {last}. Values in brackets are 95 % confidence intervals.",
        results.len(),
        sort_text(meta),
    );

    let mut conf = vec![("job", meta.name.clone())];
    match run {
        Some(r) => {
            conf.push(("benchmark", r.benchmark_file.clone()));
            conf.push(("test environment", r.testenv_file.clone()));
            conf.push(("data", r.data.clone()));
            conf.push(("metrics", meta.metrics.join(", ")));
            if !r.settings.is_empty() {
                conf.push((
                    "paradigm settings",
                    r.settings
                        .iter()
                        .map(|(k, v)| format!("{k}={}", plots::value_text(v)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
            conf.push(("seed", r.seed.to_string()));
            conf.push(("parallel cases", r.jobs.to_string()));
            conf.push((
                "started",
                chrono::DateTime::parse_from_rfc3339(&r.started_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
                    .unwrap_or_else(|_| r.started_at.clone()),
            ));
            conf.push(("command", r.command.clone()));
        }
        None => {
            conf.push(("benchmark", meta.benchmark_file.clone()));
            conf.push(("metrics", meta.metrics.join(", ")));
        }
    }
    conf.push(("ranking", sort_text(meta)));

    // Algorithms: from run.json when there is one, else from what the cases stored.
    let mut algorithms = Table {
        headers: [
            "algorithm",
            "paradigm",
            "modules",
            "cases",
            "repeat",
            "grid",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![],
    };
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        if !names.contains(&r.algorithm.as_str()) {
            names.push(&r.algorithm);
        }
    }
    if let Some(run) = run {
        for a in &run.algorithms {
            if !names.contains(&a.name.as_str()) {
                names.push(&a.name);
            }
        }
    }
    for name in names {
        let cases: Vec<&CaseResult> = results.iter().filter(|r| r.algorithm == name).collect();
        let info = run.and_then(|r| r.algorithms.iter().find(|a| a.name == name));
        let paradigm = info
            .map(|a| a.paradigm.clone())
            .or_else(|| cases.first().map(|c| c.paradigm.clone()))
            .unwrap_or_default();
        let modules = info
            .map(|a| a.modules.join(", "))
            .or_else(|| {
                cases.first().map(|c| {
                    c.modules
                        .iter()
                        .map(|m| format!("{} {}", m.module_type, m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            })
            .unwrap_or_default();
        let repeat = info.map(|a| a.repeat.to_string()).unwrap_or_else(|| {
            cases
                .iter()
                .filter_map(|c| c.runs.values().next().map(|v| v.len()))
                .max()
                .unwrap_or(1)
                .to_string()
        });
        let grid = match info {
            Some(a) => a
                .grid
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}: {}",
                        v.iter()
                            .map(plots::value_text)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            None => {
                let mut g: Vec<(String, Vec<String>)> = Vec::new();
                for c in &cases {
                    for (k, v) in &c.grid {
                        let t = plots::value_text(v);
                        match g.iter_mut().find(|(n, _)| n == k) {
                            Some((_, vals)) if !vals.contains(&t) => vals.push(t),
                            Some(_) => {}
                            None => g.push((k.clone(), vec![t])),
                        }
                    }
                }
                g.iter()
                    .map(|(k, v)| format!("{k}: {}", v.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        };
        algorithms.rows.push(vec![
            name.to_string(),
            paradigm,
            modules,
            cases.len().to_string(),
            repeat,
            grid,
        ]);
    }

    let machine = run.map(|r| {
        let m = &r.machine;
        let gpu = if m.gpus.is_empty() {
            "none".to_string()
        } else {
            m.gpus.join("; ")
        };
        let features = if m.features.is_empty() {
            String::new()
        } else {
            format!(", features: {}", m.features.join(", "))
        };
        kv(vec![
            (
                "CPU",
                format!("{} ({} logical cores)", m.cpu_model, m.logical_cores),
            ),
            (
                "memory",
                m.memory_gib
                    .map_or("unknown".into(), |g| format!("{g} GiB")),
            ),
            ("GPU", gpu),
            ("OS", format!("{}, kernel {}, {}", m.os, m.kernel, m.arch)),
            (
                "build",
                format!(
                    "ianvs {} ({} build{features}), {}",
                    m.ianvs_version, m.build_profile, m.rustc
                ),
            ),
            ("libraries", m.dependencies.clone()),
        ])
    });

    // Leaderboard: rank, algorithm, shown metrics with intervals, modules, grid, status.
    let shown = plots::shown_metrics(meta);
    let views = plots::case_views(meta, results, lb);
    let mut headers = vec!["rank".to_string(), "algorithm".to_string()];
    for m in &shown {
        let unit = metrics::canonical(m).map_or("", |d| d.unit);
        headers.push(if unit.is_empty() {
            m.clone()
        } else {
            format!("{m} ({unit})")
        });
    }
    // Only what tells cases apart: module types whose module differs between cases and grid
    // columns that vary within an algorithm (rank/all_rank.csv keeps every column).
    let module_cols: Vec<&String> = meta
        .module_types
        .iter()
        .filter(|t| {
            let names: std::collections::BTreeSet<Option<&str>> = results
                .iter()
                .map(|r| {
                    r.modules
                        .iter()
                        .find(|m| &m.module_type == *t)
                        .map(|m| m.name.as_str())
                })
                .collect();
            names.len() > 1
        })
        .collect();
    let varying = plots::varying_columns(meta, results);
    let grid_cols: Vec<&String> = meta
        .grid_columns
        .iter()
        .filter(|c| varying.contains(c))
        .collect();
    headers.extend(module_cols.iter().map(|c| c.to_string()));
    headers.extend(grid_cols.iter().map(|c| c.to_string()));
    headers.push("status".into());
    headers.push("case".into());
    let mut rows = Vec::new();
    for v in &views {
        let r = v.result;
        let mut row = vec![
            v.rank.map_or(String::new(), |x| x.to_string()),
            r.algorithm.clone(),
        ];
        for m in &shown {
            row.push(metric_cell(r, m));
        }
        for t in &module_cols {
            row.push(
                r.modules
                    .iter()
                    .find(|m| &m.module_type == *t)
                    .map_or(String::new(), |m| m.name.clone()),
            );
        }
        for c in &grid_cols {
            row.push(
                r.grid
                    .get(c.as_str())
                    .map_or(String::new(), plots::value_text),
            );
        }
        row.push(if r.status == Status::Ok {
            "ok".into()
        } else {
            "failed".into()
        });
        row.push(r.case_id.clone());
        rows.push(row);
    }
    let leaderboard = Table { headers, rows };

    let mut interval_notes = Vec::new();
    for m in &shown {
        // Per method, how many cases used it (a perfect classifier's macro-F1 is a share of
        // the samples too, so one metric can mix methods across cases).
        let mut methods: Vec<(&'static str, usize)> = Vec::new();
        for i in results.iter().filter_map(|r| r.intervals.get(m)) {
            match methods.iter_mut().find(|(d, _)| *d == i.method.describe()) {
                Some((_, n)) => *n += 1,
                None => methods.push((i.method.describe(), 1)),
            }
        }
        methods.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let repeated = results
            .iter()
            .any(|r| r.runs.get(m).is_some_and(|x| x.len() > 1));
        let how = match methods.as_slice() {
            [] => "no interval (the value does not depend on the test samples)".to_string(),
            [(d, _)] => d.to_string(),
            ms => ms
                .iter()
                .map(|(d, n)| format!("{d} ({n} case(s))"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        interval_notes.push(format!("{m}: {how}{}", if repeated { "; ± is the standard deviation over repeated runs, and the interval covers every run" } else { "" }));
    }

    let mut failed = Table {
        headers: ["case", "algorithm", "grid", "error"]
            .map(String::from)
            .to_vec(),
        rows: vec![],
    };
    for v in views.iter().filter(|v| v.result.status == Status::Failed) {
        let r = v.result;
        let grid = r
            .grid
            .iter()
            .map(|(k, x)| format!("{k}={}", plots::value_text(x)))
            .collect::<Vec<_>>()
            .join(" ");
        failed.rows.push(vec![
            r.case_id.clone(),
            r.algorithm.clone(),
            grid,
            r.error.clone().unwrap_or_default(),
        ]);
    }
    // A metric that could not be computed in a finished case is a partial failure: list it too.
    for v in views
        .iter()
        .filter(|v| v.result.status == Status::Ok && !v.result.metric_errors.is_empty())
    {
        let r = v.result;
        for (m, why) in &r.metric_errors {
            failed.rows.push(vec![
                r.case_id.clone(),
                r.algorithm.clone(),
                format!("metric {m}"),
                why.clone(),
            ]);
        }
    }

    Report {
        job: meta.name.clone(),
        summary,
        configuration: kv(conf),
        algorithms,
        machine,
        leaderboard,
        leaderboard_note: "Settings that are the same for every case of an algorithm are left out; rank/all_rank.csv and rank/leaderboard.json have every column and the interval bounds.".to_string(),
        interval_notes,
        charts,
        failed,
    }
}

/// Writes `<job>/report.html` and `<job>/report.md` (and `<job>/plots/`).
pub fn write(job_dir: &Path) -> Result<Written> {
    let report = build(job_dir)?;
    let html = job_dir.join("report.html");
    let md = job_dir.join("report.md");
    story::atomic_write(&html, html::render(&report).as_bytes())?;
    story::atomic_write(&md, markdown::render(&report).as_bytes())?;
    Ok(Written {
        html,
        markdown: md,
        charts: report.charts.len(),
    })
}

pub use html::render as render_html;
pub use markdown::{cell as markdown_cell, render as render_markdown};
