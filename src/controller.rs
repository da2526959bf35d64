//! The test-case controller: expands each algorithm's hyperparameter grid into test cases with
//! stable ids, runs them (in parallel with `--jobs`), and persists each case atomically the
//! moment it ends, so a later failure or Ctrl-C loses nothing.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use ianvs_paradigms::hp::Hyperparameters;
use ianvs_paradigms::records::CaseOutput;
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::{CaseContext, CaseSpec, JobCache, ResolvedModule};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Job;
use crate::metrics;

/// One test case to run.
#[derive(Debug, Clone)]
pub struct PlannedCase {
    pub algorithm_index: usize,
    pub spec: CaseSpec,
    /// Hyperparameters that were on a grid axis, as `(<module type>-<name>, value)`, for
    /// `--dry-run` and the leaderboard.
    pub grid_values: Vec<(String, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// What `metrics.json` holds for one case: enough to rebuild the leaderboard without rerunning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub case_id: String,
    pub algorithm: String,
    pub paradigm: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Metric id → value (null where the metric could not be computed), in YAML order.
    pub metrics: serde_json::Map<String, Value>,
    /// Metric id → why it could not be computed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_errors: BTreeMap<String, String>,
    pub measurements: BTreeMap<String, f64>,
    /// Metric id → 95 % confidence interval over the test samples (with `repeat`, the envelope
    /// of every run's interval). Absent for metrics that do not depend on the samples.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intervals: BTreeMap<String, metrics::Interval>,
    /// Metric id → its value in each run, when the case ran more than once (`repeat`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, Vec<f64>>,
    pub modules: Vec<ResolvedModule>,
    /// `<module type>-<hyperparameter>` → value, for the hyperparameters on grid axes.
    pub grid: serde_json::Map<String, Value>,
    pub started_at: String,
    pub finished_at: String,
    pub wall_time_s: f64,
    /// The algorithm YAML file.
    pub url: String,
    pub ianvs_version: String,
}

/// Short stable hash of everything that determines a case's result.
pub fn case_id(
    algorithm: &str,
    paradigm: &str,
    modules: &[ResolvedModule],
    settings: &Hyperparameters,
    data_fingerprint: &str,
) -> String {
    let canon = serde_json::json!({
        "algorithm": algorithm, "paradigm": paradigm, "modules": modules,
        "settings": settings, "data": data_fingerprint,
    });
    let digest = Sha256::digest(canon.to_string().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A content hash of the job's data, so a case id changes when the data does.
pub fn data_fingerprint(job: &Job) -> String {
    let mut h = Sha256::new();
    let d = &job.testenv.data;
    for ds in d.train.iter().chain(std::iter::once(&d.test)) {
        h.update((ds.len() as u64).to_le_bytes());
        h.update((ds.dim as u64).to_le_bytes());
        for v in &ds.features {
            h.update(v.to_le_bytes());
        }
        for l in &ds.labels {
            h.update(l.to_le_bytes());
        }
        for t in &ds.texts {
            h.update(t.as_bytes());
            h.update([0]);
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Expands every algorithm's grid: the Cartesian product of all axes of all modules, in YAML
/// order (the first axis varies slowest). Identical cases (a repeated grid value) are planned
/// once; [`plan_with_warnings`] also says which axis repeated.
pub fn plan(job: &Job) -> Vec<PlannedCase> {
    plan_with_warnings(job).0
}

/// [`plan`], plus one warning per grid axis that lists a value twice and per algorithm whose
/// grid points collapse onto the same case some other way (two settings files with equal
/// content). A case id is planned, and so run, at most once: two workers never write one case.
pub fn plan_with_warnings(job: &Job) -> (Vec<PlannedCase>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut repeated = vec![0usize; job.algorithms.len()];
    for (ai, alg) in job.algorithms.iter().enumerate() {
        let repeated_axes = &mut repeated[ai];
        for m in &alg.modules {
            for axis in &m.axes {
                let dups: Vec<&BTreeMap<String, Value>> = axis
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| axis[..*i].contains(p))
                    .map(|(_, p)| p)
                    .collect();
                if let Some(first) = dups.first() {
                    *repeated_axes += 1;
                    let names: Vec<&str> = first.keys().map(String::as_str).collect();
                    let value = if first.len() == 1 {
                        first
                            .values()
                            .next()
                            .map(Value::to_string)
                            .unwrap_or_default()
                    } else {
                        serde_json::to_string(first).unwrap_or_default()
                    };
                    warnings.push(format!(
                        "algorithm \"{}\": module {} `{}` lists the value {value} of hyperparameter `{}` more than once; the identical cases are planned once",
                        alg.name,
                        m.module_type,
                        m.name,
                        names.join("`, `")
                    ));
                }
            }
        }
    }
    // One pass over the streamed grid: a case id already seen is a collapsed grid point.
    let mut collapsed = vec![0usize; job.algorithms.len()];
    for case in plan_iter(job) {
        if seen.insert(case.spec.id.clone()) {
            out.push(case);
        } else {
            collapsed[case.algorithm_index] += 1;
        }
    }
    for (ai, alg) in job.algorithms.iter().enumerate() {
        if collapsed[ai] > 0 && repeated[ai] == 0 {
            warnings.push(format!(
                "algorithm \"{}\": {} grid point(s) resolve to the same hyperparameters as an earlier one; each distinct case is planned once",
                alg.name, collapsed[ai]
            ));
        }
    }
    (out, warnings)
}

/// The grid, one case at a time, without dedupe (`validate` and `--dry-run` stream it):
/// nothing is allocated per case until it is asked for, so `validate` checks a 100,000-case job in flat memory. The case count is known beforehand
/// from the axes (`config::grid`).
pub fn plan_iter(job: &Job) -> impl Iterator<Item = PlannedCase> + '_ {
    let fp = data_fingerprint(job);
    job.algorithms
        .iter()
        .enumerate()
        .flat_map(move |(ai, alg)| {
            // Flatten axes across modules, remembering which module each belongs to.
            let axes: Vec<(usize, &Vec<BTreeMap<String, Value>>)> = alg
                .modules
                .iter()
                .enumerate()
                .flat_map(|(mi, m)| m.axes.iter().map(move |a| (mi, a)))
                .collect();
            let total: usize = axes.iter().map(|(_, a)| a.len()).product();
            let fp = fp.clone();
            (0..total).map(move |n| {
                let mut hps: Vec<BTreeMap<String, Value>> =
                    alg.modules.iter().map(|m| m.fixed.clone()).collect();
                let mut grid_values = Vec::new();
                let mut rem = n;
                let mut picks = vec![0; axes.len()];
                for (k, (_, axis)) in axes.iter().enumerate().rev() {
                    picks[k] = rem % axis.len();
                    rem /= axis.len();
                }
                for (k, (mi, axis)) in axes.iter().enumerate() {
                    for (name, v) in &axis[picks[k]] {
                        hps[*mi].insert(name.clone(), v.clone());
                        grid_values.push((
                            format!("{}-{}", alg.modules[*mi].module_type, name),
                            v.clone(),
                        ));
                    }
                }
                let modules: Vec<ResolvedModule> = alg
                    .modules
                    .iter()
                    .zip(hps)
                    .map(|(m, h)| ResolvedModule {
                        module_type: m.module_type.clone(),
                        name: m.name.clone(),
                        hyperparameters: Hyperparameters(h),
                        plugin: m.plugin.clone(),
                    })
                    .collect();
                let id = case_id(&alg.name, alg.paradigm.name(), &modules, &alg.settings, &fp);
                PlannedCase {
                    algorithm_index: ai,
                    spec: CaseSpec {
                        id,
                        algorithm: alg.name.clone(),
                        modules,
                        settings: alg.settings.clone(),
                        seed: job.seed,
                    },
                    grid_values,
                }
            })
        })
}

pub struct RunOptions {
    pub jobs: usize,
    pub resume: bool,
    pub quiet: bool,
}

pub struct RunSummary {
    pub ran: usize,
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: bool,
}

pub fn job_dir(job: &Job) -> PathBuf {
    job.workspace.join(&job.name)
}

pub fn case_dir(job: &Job, case: &PlannedCase) -> PathBuf {
    // The algorithm's folder is its name sanitized (names may hold spaces or slashes).
    let folder = &job.algorithms[case.algorithm_index].folder;
    job_dir(job).join(folder).join(&case.spec.id)
}

/// Where the plug-in children of a running case write their stderr until the case folder is
/// written (then the files move into it).
fn plugin_log_dir(job: &Job, case: &PlannedCase) -> PathBuf {
    job_dir(job).join(".plugin-logs").join(&case.spec.id)
}

/// True when the case folder holds a finished, successful result.
pub fn is_complete(dir: &Path) -> bool {
    std::fs::read(dir.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<CaseResult>(&b).ok())
        .is_some_and(|r| r.status == Status::Ok)
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Runs the planned cases and persists each as it ends. Returns once all are done or Ctrl-C.
pub fn run(
    job: &Job,
    cases: &[PlannedCase],
    registry: &Registry,
    opts: &RunOptions,
    cancel: &AtomicBool,
) -> Result<RunSummary> {
    let show = !opts.quiet && std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    // A case id is run at most once, even if a caller passes a plan with repeats: two workers
    // on one case folder would race on it.
    let mut ids = std::collections::HashSet::new();
    let todo: Vec<&PlannedCase> = cases
        .iter()
        .filter(|c| ids.insert(c.spec.id.as_str()))
        .filter(|c| !(opts.resume && is_complete(&case_dir(job, c))))
        .collect();
    let skipped = ids.len() - todo.len();
    if skipped > 0 && !opts.quiet {
        eprintln!(
            "resume: {skipped} of {} cases already complete, skipping them",
            cases.len()
        );
    }
    let overall = multi.add(ProgressBar::new(todo.len() as u64));
    overall.set_style(bar_style(
        "{prefix:>8} [{bar:30}] {pos}/{len} cases  {elapsed_precise} (eta {eta})",
    ));
    overall.set_prefix("cases");
    let cache = JobCache::default();
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = opts.jobs.clamp(1, todo.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(bar_style("{prefix:>8} [{bar:30}] {pos}/{len} {msg}"));
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = todo.get(i) else { break };
                    bar.set_prefix(case.spec.id.clone());
                    bar.reset();
                    match run_one(job, case, registry, &cache, &bar, cancel) {
                        Ok(None) => break, // cancelled: nothing written for this case
                        Ok(Some(r)) => {
                            ran.fetch_add(1, Ordering::Relaxed);
                            if r.status == Status::Failed {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let msg = format!(
                                    "case {} ({}) failed: {}",
                                    r.case_id,
                                    r.algorithm,
                                    r.error.as_deref().unwrap_or("?")
                                );
                                if show {
                                    multi.println(msg).ok();
                                } else if !opts.quiet {
                                    eprintln!("{msg}");
                                }
                            }
                        }
                        Err(e) => {
                            // Could not persist: stop, this is an environment problem (disk full, permissions).
                            cancel.store(true, Ordering::Relaxed);
                            if let Ok(mut g) = first_err.lock() {
                                g.get_or_insert(e);
                            }
                            break;
                        }
                    }
                    overall.inc(1);
                }
                bar.finish_and_clear();
            });
        }
    });
    overall.finish_and_clear();
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(RunSummary {
        ran: ran.into_inner(),
        skipped,
        failed: failed.into_inner(),
        cancelled: cancel.load(Ordering::Relaxed),
    })
}

/// Runs one case (`repeat` times) and writes its folder. `Ok(None)` when cancelled before it
/// finished.
fn run_one(
    job: &Job,
    case: &PlannedCase,
    registry: &Registry,
    cache: &JobCache,
    bar: &ProgressBar,
    cancel: &AtomicBool,
) -> Result<Option<CaseResult>> {
    let alg = &job.algorithms[case.algorithm_index];
    let started = chrono::Local::now();
    let t0 = Instant::now();
    let repeat = alg.repeat.max(1) as usize;
    let mut outputs: Vec<CaseOutput> = Vec::with_capacity(repeat);
    let mut error = None;
    // Plug-in children started by this case keep their stderr here; it moves into the case folder.
    let plugin_logs = plugin_log_dir(job, case);
    ianvs_algorithms::plugin::process::set_log_dir(Some(plugin_logs.clone()));
    for run in 0..repeat {
        let ctx = CaseContext {
            data: &job.testenv.data,
            registry,
            cache,
            progress: bar,
            cancel,
        };
        // A panic inside a module is a bug, but it must not take the other cases down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            alg.paradigm.run(&case.spec, &ctx)
        }))
        .unwrap_or_else(|p| {
            Err(anyhow::anyhow!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ))
        });
        if cancel.load(Ordering::Relaxed) {
            ianvs_algorithms::plugin::process::set_log_dir(None);
            let _ = std::fs::remove_dir_all(&plugin_logs);
            return Ok(None);
        }
        match outcome {
            Ok(out) => outputs.push(out),
            Err(e) => {
                error = Some(if repeat > 1 {
                    format!("run {} of {repeat}: {e:#}", run + 1)
                } else {
                    format!("{e:#}")
                });
                break;
            }
        }
    }
    ianvs_algorithms::plugin::process::set_log_dir(None);
    let wall = t0.elapsed().as_secs_f64();
    let mut result = CaseResult {
        case_id: case.spec.id.clone(),
        algorithm: alg.name.clone(),
        paradigm: alg.paradigm.name().to_string(),
        status: Status::Ok,
        error: None,
        metrics: serde_json::Map::new(),
        metric_errors: BTreeMap::new(),
        measurements: BTreeMap::new(),
        intervals: BTreeMap::new(),
        runs: BTreeMap::new(),
        modules: case.spec.modules.clone(),
        grid: case.grid_values.iter().cloned().collect(),
        started_at: started.to_rfc3339(),
        finished_at: chrono::Local::now().to_rfc3339(),
        wall_time_s: wall,
        url: alg.file.to_string_lossy().into_owned(),
        ianvs_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    if let Some(e) = error {
        result.status = Status::Failed;
        result.error = Some(e);
        for m in &job.testenv.metrics {
            result.metrics.insert(m.id.to_string(), Value::Null);
        }
        persist(job, case, &result, &[])?;
        return Ok(Some(result));
    }
    score(&mut result, &job.testenv.metrics, &outputs);
    persist(job, case, &result, &outputs)?;
    Ok(Some(result))
}

/// Fills in a finished case's metrics, intervals and measurements from the outputs of its runs:
/// each metric is the mean over runs, its interval the envelope of the runs' intervals.
fn score(result: &mut CaseResult, defs: &[&'static metrics::MetricDef], outputs: &[CaseOutput]) {
    let repeat = outputs.len();
    let per_run: Vec<Vec<(&'static str, Result<f64>)>> = outputs
        .iter()
        .map(|o| metrics::compute_all(defs, o))
        .collect();
    let mut values: Vec<Vec<(&'static str, f64)>> = vec![Vec::new(); repeat];
    for (mi, m) in defs.iter().enumerate() {
        let mut xs = Vec::with_capacity(repeat);
        let mut why = None;
        for (run, r) in per_run.iter().enumerate() {
            let prefix = if repeat > 1 {
                format!("run {} of {repeat}: ", run + 1)
            } else {
                String::new()
            };
            match &r[mi].1 {
                Ok(x) if x.is_finite() => xs.push(*x),
                Ok(x) => why = why.or(Some(format!("{prefix}not a finite number ({x})"))),
                Err(e) => why = why.or(Some(format!("{prefix}{e:#}"))),
            }
        }
        if let Some(why) = why {
            result.metrics.insert(m.id.to_string(), Value::Null);
            result.metric_errors.insert(m.id.to_string(), why);
            continue;
        }
        result
            .metrics
            .insert(m.id.to_string(), serde_json::json!(metrics::mean(&xs)));
        for (run, x) in xs.iter().enumerate() {
            values[run].push((m.id, *x));
        }
        if repeat > 1 {
            result.runs.insert(m.id.to_string(), xs);
        }
    }
    let per_run_iv: Vec<BTreeMap<String, metrics::Interval>> = outputs
        .iter()
        .zip(&values)
        .enumerate()
        .map(|(run, (o, vals))| {
            metrics::interval::intervals(
                defs,
                o,
                vals,
                &if run == 0 {
                    result.case_id.clone()
                } else {
                    format!("{}#{run}", result.case_id)
                },
            )
        })
        .collect();
    for m in defs {
        let ivs: Vec<metrics::Interval> = per_run_iv
            .iter()
            .filter_map(|r| r.get(m.id).copied())
            .collect();
        if ivs.len() == repeat {
            if let Some(mut iv) = metrics::Interval::envelope(&ivs) {
                // The mean over runs lies inside the envelope already; keep it explicit.
                if let Some(v) = result.metrics.get(m.id).and_then(Value::as_f64) {
                    iv.low = iv.low.min(v);
                    iv.high = iv.high.max(v);
                }
                result.intervals.insert(m.id.to_string(), iv);
            }
        }
    }
    // Case-level measurements (training time, ...) are averaged over runs as well.
    if let Some(first) = outputs.first() {
        for k in first.measurements.keys() {
            let xs: Vec<f64> = outputs
                .iter()
                .filter_map(|o| o.measurements.get(k).copied())
                .collect();
            if xs.len() == repeat {
                result.measurements.insert(k.clone(), metrics::mean(&xs));
            }
        }
    }
}

/// Writes the case folder atomically: everything goes into a uniquely named hidden sibling
/// folder that is renamed into place last, so a case folder is either complete or absent.
fn persist(
    job: &Job,
    case: &PlannedCase,
    result: &CaseResult,
    outputs: &[CaseOutput],
) -> Result<()> {
    let dir = case_dir(job, case);
    let tmp = crate::workspace::staging_dir(&dir)?;
    let r = fill_case_dir(job, case, result, outputs, &tmp).and_then(|_| {
        // The plug-ins' stderr files (`plugin-<type>-<alias>.stderr.log`).
        let logs = plugin_log_dir(job, case);
        if let Ok(rd) = std::fs::read_dir(&logs) {
            for e in rd.flatten() {
                std::fs::copy(e.path(), tmp.join(e.file_name()))?;
            }
            let _ = std::fs::remove_dir_all(&logs);
            let _ = std::fs::remove_dir(logs.parent().unwrap_or(&logs));
        }
        Ok(())
    });
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    r?;
    crate::workspace::commit_dir(&tmp, &dir)
}

fn fill_case_dir(
    job: &Job,
    case: &PlannedCase,
    result: &CaseResult,
    outputs: &[CaseOutput],
    tmp: &Path,
) -> Result<()> {
    let alg = &job.algorithms[case.algorithm_index];
    let resolved = serde_json::json!({
        "case_id": case.spec.id,
        "algorithm": alg.name,
        "paradigm": alg.paradigm.name(),
        "algorithm_file": alg.file,
        "testenv_file": job.testenv.file,
        "settings": case.spec.settings,
        "seed": case.spec.seed,
        "repeat": alg.repeat,
        "modules": case.spec.modules,
        // Every path of the job's YAML files, absolute, with the rule that found it.
        "paths": job.paths,
    });
    let write = |name: &str, bytes: &[u8]| crate::workspace::write_synced(&tmp.join(name), bytes);
    write(
        "resolved.yaml",
        serde_yaml_ng::to_string(&resolved)?.as_bytes(),
    )?;
    // Run 1 is `records.jsonl` (and its artifacts); further runs of a repeated case keep their
    // records beside it as `records-run<k>.jsonl`.
    let mut jsonl = Vec::new();
    if let Some(out) = outputs.first() {
        out.records.write_jsonl(&mut jsonl)?;
        for (name, bytes) in &out.artifacts {
            write(name, bytes)?;
        }
    }
    write("records.jsonl", &jsonl)?;
    for (k, out) in outputs.iter().enumerate().skip(1) {
        let mut jsonl = Vec::new();
        out.records.write_jsonl(&mut jsonl)?;
        write(&format!("records-run{}.jsonl", k + 1), &jsonl)?;
    }
    write(
        "metrics.json",
        serde_json::to_string_pretty(result)?.as_bytes(),
    )?;
    Ok(())
}
