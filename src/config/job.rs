//! The benchmarking job: its own keys, then the cross-file rules (metrics fit each paradigm,
//! settings fit the paradigms used, ranking names metrics the cases produce, the grid cap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ianvs_paradigms::hp::{HpSpec, Hyperparameters};
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::Paradigm;
use serde_json::Value;

use super::algorithm::read_algorithm;
use super::keys::*;
use super::rank::read_rank;
use super::testenv::{read_testenv, LoadedTestEnv};
use super::walker::*;
use super::yaml::{Mark, Node};
use super::*;
use crate::metrics;

pub(super) fn load_job_inner(
    file: &Path,
    registry: &Registry,
    paradigms: &'static [Box<dyn Paradigm>],
    ov: &Overrides,
) -> Result<Job, Diagnostics> {
    let file = normalize(file);
    let mut diags = Diagnostics::default();
    let Some(root) = read_yaml(&file, &mut diags, None) else {
        return Err(diags);
    };
    let mut w = Walker {
        file: file.clone(),
        diags: &mut diags,
    };
    let top = w.map(&root, "", &["benchmarkingjob"], &[]);
    let Some(job_node) = top
        .as_ref()
        .and_then(|t| w.required(t, "", "benchmarkingjob"))
    else {
        return Err(diags);
    };
    let Some(jf) = w.map(job_node, "benchmarkingjob", JOB_KEYS, JOB_UNSUPPORTED) else {
        return Err(diags);
    };
    let p = "benchmarkingjob";

    let name = w.required(&jf, p, "name").and_then(|n| {
        let s = w.string(n, "benchmarkingjob.name")?;
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !s.starts_with('.') {
            Some(s)
        } else {
            w.err(Some(n.mark), "benchmarkingjob.name", format!("job name \"{s}\" must be usable as a folder name: letters, digits, `.`, `_` and `-` only"));
            None
        }
    });
    let workspace = match (&ov.workspace, jf.get("workspace")) {
        (Some(ws), _) => Some(ws.clone()),
        (None, Some(n)) => w.workspace(n, "benchmarkingjob.workspace"),
        (None, None) => Some(resolve_path(&file, "./workspace")),
    };
    let testenv_ref = w.required(&jf, p, "testenv").and_then(|n| {
        w.existing_path(n, "benchmarkingjob.testenv")
            .map(|pth| (pth, n.mark))
    });

    // test_object.algorithms
    let mut algo_refs: Vec<(String, PathBuf, Mark)> = Vec::new();
    if let Some(to) = w.required(&jf, p, "test_object") {
        let tp = "benchmarkingjob.test_object";
        if let Some(tf) = w.map(to, tp, TEST_OBJECT_KEYS, &[]) {
            if let Some(t) = tf.get("type") {
                if let Some(s) = w.string(t, &format!("{tp}.type")) {
                    if s != "algorithms" {
                        w.err(
                            Some(t.mark),
                            &format!("{tp}.type"),
                            format!("test object type \"{s}\" is not supported"),
                        )
                        .choices(&s, &["algorithms"]);
                    }
                }
            }
            if let Some(algs) = w.required(&tf, tp, "algorithms") {
                match algs.as_seq() {
                    Some([]) => {
                        w.err(
                            Some(algs.mark),
                            &format!("{tp}.algorithms"),
                            "the job lists no algorithms",
                        );
                    }
                    Some(items) => {
                        let mut names = BTreeSet::new();
                        for (i, a) in items.iter().enumerate() {
                            let ap = format!("{tp}.algorithms[{i}]");
                            let Some(af) = w.map(a, &ap, &["name", "url"], &[]) else {
                                continue;
                            };
                            let n = w.required(&af, &ap, "name").and_then(|n| {
                                w.string(n, &format!("{ap}.name")).map(|s| (s, n.mark))
                            });
                            let u = w.required(&af, &ap, "url").and_then(|u| {
                                w.existing_path(u, &format!("{ap}.url"))
                                    .map(|pth| (pth, u.mark))
                            });
                            if let Some((n, m)) = &n {
                                // Any name is accepted (Ianvs writes `"feature extraction"`); its
                                // folder is a sanitized, collision-free form (`paths::folder_name`).
                                if crate::story::RESERVED_DIRS.contains(&n.as_str()) {
                                    w.err(Some(*m), &format!("{ap}.name"), format!("algorithm name \"{n}\" is reserved: the job folder keeps its {} there; choose another name", if n == "rank" { "leaderboards" } else if n == "plots" { "report's charts" } else { "regression gate's outputs" }));
                                } else if !names.insert(n.clone()) {
                                    w.err(Some(*m), &format!("{ap}.name"), format!("algorithm name \"{n}\" is used twice; names must be unique"));
                                }
                            }
                            if let (Some((n, _)), Some((u, m))) = (n, u) {
                                algo_refs.push((n, u, m));
                            }
                        }
                    }
                    None => w.expected(algs, &format!("{tp}.algorithms"), "a list of {name, url}"),
                }
            }
        }
    }
    let rank_node = w.required(&jf, p, "rank");
    let rank_raw = rank_node.and_then(|r| read_rank(&mut w, r));

    // Test environment.
    // Unknown metric names (diagnostic index, name): their choices are narrowed below.
    let mut unknown_metrics = Vec::new();
    let testenv = testenv_ref
        .and_then(|(tf, mark)| read_testenv(&tf, &file, mark, &mut diags, &mut unknown_metrics));

    // Algorithms.
    let seed = ov.seed.unwrap_or(0);
    let mut algorithms = Vec::new();
    for (name, afile, mark) in &algo_refs {
        if let Some(a) = read_algorithm(
            name, afile, &file, *mark, registry, paradigms, seed, &mut diags,
        ) {
            algorithms.push(a);
        }
    }

    // An unknown metric's valid choices: once every algorithm loaded, only the metrics of the
    // job's paradigms (not every metric ianvs knows).
    if !algorithms.is_empty() && algorithms.len() == algo_refs.len() {
        let mut valid: Vec<&'static str> = Vec::new();
        for a in &algorithms {
            for id in metrics::ids_for(a.paradigm.record_kind()) {
                if !valid.contains(&id) {
                    valid.push(id);
                }
            }
        }
        for (at, bad) in &unknown_metrics {
            diags.items[*at].choices(bad, &valid);
        }
    }

    // Cross-file checks: metrics fit each paradigm, settings fit the paradigms used, ranking
    // names metrics the cases produce.
    let Some((te, te_settings_nodes)) = testenv else {
        return Err(diags);
    };
    let mut used_settings: BTreeMap<String, HpSpec> = BTreeMap::new();
    for a in &mut algorithms {
        for m in &te.metrics {
            if !m.kinds.contains(&a.paradigm.record_kind()) {
                diags.push(
                    Diagnostic::new(
                        &te.file,
                        te.metric_marks.get(m.id).copied(),
                        "testenv.metrics",
                        format!(
                            "metric `{}` does not apply to paradigm `{}` of algorithm \"{}\"",
                            m.id,
                            a.paradigm.name(),
                            a.name
                        ),
                    )
                    .with_choices(m.id, &metrics::ids_for(a.paradigm.record_kind())),
                );
            }
        }
        let mut settings = BTreeMap::new();
        for spec in a.paradigm.settings() {
            let v = match te_settings_nodes.iter().find(|(k, _)| k == spec.name) {
                Some((_, node)) => match check_finite(node).and_then(|j| spec.check(&j)) {
                    Ok(v) => v,
                    Err(why) => {
                        diags.push(Diagnostic::new(
                            &te.file,
                            Some(node.mark),
                            format!("testenv.{}", spec.name),
                            format!("`testenv.{}`: {why}", spec.name),
                        ));
                        Value::Null
                    }
                },
                None => spec.default.clone().unwrap_or(Value::Null),
            };
            if v.is_null()
                && spec.default.is_none()
                && !te_settings_nodes.iter().any(|(k, _)| k == spec.name)
            {
                diags.push(Diagnostic::new(
                    &te.file,
                    None,
                    "testenv",
                    format!(
                        "paradigm `{}` needs the test-environment setting `{}` ({})",
                        a.paradigm.name(),
                        spec.name,
                        spec.help
                    ),
                ));
            }
            settings.insert(spec.name.to_string(), v);
            used_settings.insert(spec.name.to_string(), spec);
        }
        check_warmup(&settings, &te, &te_settings_nodes, a, &mut diags);
        a.settings = Hyperparameters(settings);
    }
    // When every algorithm loaded, a testenv key must be read by one of their paradigms; when
    // some did not, we cannot know their paradigms, so accept any paradigm's setting.
    let all_loaded = algorithms.len() == algo_refs.len();
    if !all_loaded {
        for pd in paradigms.iter() {
            for spec in pd.settings() {
                used_settings.entry(spec.name.to_string()).or_insert(spec);
            }
        }
    }
    let mut valid_te_keys: Vec<String> = TESTENV_BASE_KEYS.iter().map(|s| s.to_string()).collect();
    valid_te_keys.extend(used_settings.keys().cloned());
    for (k, node) in &te_settings_nodes {
        if !used_settings.contains_key(k) {
            diags.push(
                Diagnostic::new(
                    &te.file,
                    Some(node.mark),
                    format!("testenv.{k}"),
                    format!("unknown key `{k}` in `testenv` (no paradigm of this job reads it)"),
                )
                .with_choices(k, &valid_te_keys),
            );
        }
    }

    let rank = rank_raw.map(|(rank, marks)| {
        let metric_ids: Vec<&str> = te.metrics.iter().map(|m| m.id).collect();
        for (i, (metric, _)) in rank.sort_by.iter().enumerate() {
            if !metric_ids.contains(&metric.as_str()) {
                diags.push(
                    Diagnostic::new(&file, marks.sort_by.get(i).copied(), format!("benchmarkingjob.rank.sort_by[{i}]"), format!("cannot sort by `{metric}`: no case produces it (the test environment's metrics are {})", metric_ids.join(", ")))
                        .with_choices(metric, &metric_ids),
                );
            }
        }
        if let Some(sel) = &rank.selected.metrics {
            for (i, m) in sel.iter().enumerate() {
                if !metric_ids.contains(&m.as_str()) {
                    diags.push(Diagnostic::new(&file, marks.selected_metrics.get(i).copied(), "benchmarkingjob.rank.selected_dataitem.metrics", format!("selected metric `{m}` is not among the test environment's metrics")).with_choices(m, &metric_ids));
                }
            }
        }
        if let Some(sel) = &rank.selected.modules {
            let types: BTreeSet<&str> = algorithms.iter().flat_map(|a| a.modules.iter().map(|m| m.module_type.as_str())).collect();
            let types: Vec<&str> = types.into_iter().collect();
            for (i, m) in sel.iter().enumerate() {
                if !types.contains(&m.as_str()) {
                    diags.push(Diagnostic::new(&file, marks.selected_modules.get(i).copied(), "benchmarkingjob.rank.selected_dataitem.modules", format!("selected module type `{m}` is used by no algorithm")).with_choices(m, &types));
                }
            }
        }
        if let Some(sel) = &rank.selected.hyperparameters {
            let hps: BTreeSet<String> = algorithms.iter().flat_map(|a| a.modules.iter().flat_map(|m| m.fixed.keys().cloned().chain(m.axes.iter().flat_map(|ax| ax.iter().flat_map(|pt| pt.keys().cloned()))))).collect();
            let hps: Vec<String> = hps.into_iter().collect();
            for (i, h) in sel.iter().enumerate() {
                if !hps.contains(h) {
                    diags.push(Diagnostic::new(&file, marks.selected_hps.get(i).copied(), "benchmarkingjob.rank.selected_dataitem.hyperparameters", format!("selected hyperparameter `{h}` belongs to no module of this job")).with_choices(h, &hps));
                }
            }
        }
        if let Some(cols) = &rank.selected_output_columns {
            let valid = crate::story::possible_columns(&te.metrics, &algorithms);
            for (i, c) in cols.iter().enumerate() {
                if !valid.contains(c) {
                    diags.push(Diagnostic::new(&file, marks.output_columns.get(i).copied(), "benchmarkingjob.rank.selected_output_columns", format!("output column `{c}` is not a leaderboard column of this job")).with_choices(c, &valid));
                }
            }
        }
        rank
    });

    if ov.strict {
        diags.promote_warnings();
    }
    if let Some(cap_diag) = grid::check_cap(
        &algorithms,
        &algo_refs,
        ov.max_cases.unwrap_or(DEFAULT_MAX_CASES),
        &file,
    ) {
        diags.push(cap_diag);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    diags.dedup();
    let (Some(name), Some(workspace), Some(rank)) = (name, workspace, rank) else {
        return Err(diags);
    };
    Ok(Job {
        name,
        file,
        workspace,
        testenv: te.env,
        algorithms,
        rank,
        seed,
        warnings_text: diags.warnings_text(),
        paths: std::mem::take(&mut diags.resolved),
        warnings: std::mem::take(&mut diags.warnings),
    })
}

/// `warmup_samples` not smaller than the test set makes every sample a warm-up sample: every
/// latency column would be blank. Written in the YAML it is an error; the default (10) on a
/// tiny test set is a warning.
pub(super) fn check_warmup(
    settings: &BTreeMap<String, Value>,
    te: &LoadedTestEnv,
    nodes: &[(String, Node)],
    alg: &Algorithm,
    diags: &mut Diagnostics,
) {
    // Only single-task learning marks test samples as warm-up; joint inference runs its
    // warm-up passes apart from the recorded ones (capped at the test set).
    if alg.paradigm.name() != "singletasklearning" {
        return;
    }
    let Some(warmup) = settings.get("warmup_samples").and_then(Value::as_u64) else {
        return;
    };
    let n = te.data.test.len() as u64;
    if warmup < n {
        return;
    }
    let written = nodes.iter().find(|(k, _)| k == "warmup_samples");
    let msg = format!(
        "`warmup_samples` = {warmup} is not smaller than the test set ({n} samples) of algorithm \"{}\": every sample would be a warm-up and the latency columns would be empty",
        alg.name
    );
    let mut d = Diagnostic::new(
        &te.file,
        written.map(|(_, node)| node.mark),
        "testenv.warmup_samples",
        msg,
    );
    d.help(format!(
        "set `warmup_samples` below {n} in the test environment"
    ));
    if written.is_some() {
        diags.push(d);
    } else {
        diags.warn(d);
    }
}
