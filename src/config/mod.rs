//! Benchmark configuration: the three Ianvs YAML levels (benchmarking job, test environment,
//! algorithm), read strictly into typed structs.
//!
//! Parse → resolve → validate: the YAML is read into a located tree ([`yaml`]), each level is
//! walked against its schema, registry look-ups and relative paths are resolved, then
//! cross-file rules are checked. Every problem is collected into [`Diagnostics`] so the user
//! fixes them all in one go; nothing is run or written while any remain.

pub mod diag;
pub mod grid;
pub mod keys;
pub mod paths;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ianvs_paradigms::data::{self, Dataset, LabelColumn, LoadOptions, SplitMethod};
use ianvs_paradigms::hp::{HpSpec, Hyperparameters};
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::{DataSplits, Paradigm};
use serde_json::Value;

pub use diag::{Diagnostic, Diagnostics};
use keys::*;
pub use paths::{normalize, resolve_path, PathRule, ResolvedPath};
use yaml::{Mark, Node, NodeKind};

use crate::metrics::{self, MetricDef};

/// A fully resolved and validated benchmarking job.
pub struct Job {
    pub name: String,
    /// The benchmark YAML file.
    pub file: PathBuf,
    pub workspace: PathBuf,
    pub testenv: TestEnv,
    pub algorithms: Vec<Algorithm>,
    pub rank: RankConfig,
    pub seed: u64,
    /// Every path read from the YAML files, absolute, with the rule that found it.
    pub paths: Vec<ResolvedPath>,
    /// Keys KubeEdge-Ianvs ignores too (an error under `--strict`).
    pub warnings: Vec<Diagnostic>,
    /// The warnings as printed (with source snippets).
    pub warnings_text: String,
}

pub struct TestEnv {
    pub file: PathBuf,
    pub data: DataSplits,
    /// Metric ids in YAML order.
    pub metrics: Vec<&'static MetricDef>,
    /// Paradigm settings given in the test environment, by name (validated per paradigm).
    pub settings: BTreeMap<String, Value>,
}

pub struct Algorithm {
    /// The name as written (leaderboards show it).
    pub name: String,
    /// The folder of its cases under the job folder: the name, sanitized and collision-free.
    pub folder: String,
    /// The algorithm YAML file (the leaderboard's `url` column).
    pub file: PathBuf,
    pub paradigm: &'static dyn Paradigm,
    pub modules: Vec<ModuleConfig>,
    /// The paradigm's settings, defaults filled in.
    pub settings: Hyperparameters,
    /// How many times each case of this algorithm runs (`repeat:`, or `--repeat`); the
    /// case's metrics are the mean over runs and its intervals cover every run.
    pub repeat: u32,
}

/// The `repeat` key of an algorithm: an `HpSpec` so its range check reads like any other.
pub fn repeat_spec() -> HpSpec {
    HpSpec::new(
        "repeat",
        ianvs_paradigms::hp::HpKind::Int { min: 1, max: 1000 },
        serde_json::json!(1),
        "runs of each case; metrics are averaged and intervals cover every run",
    )
}

pub struct ModuleConfig {
    pub module_type: String,
    /// The registry's spelling of the name.
    pub name: String,
    /// Grid axes in YAML order; each axis is a list of points, each point sets one or more
    /// hyperparameters (an `other_hyperparameters` file sets several at once).
    pub axes: Vec<Vec<BTreeMap<String, Value>>>,
    /// Values that do not vary: defaults of every hyperparameter not on an axis.
    pub fixed: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Ascend,
    Descend,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RankConfig {
    pub sort_by: Vec<(String, Order)>,
    /// `selected_only`, `all` or `none`: which table is printed at the end of a run.
    pub visualization_mode: String,
    pub selected: SelectedDataitem,
    /// `selected_and_all` or `selected_only`.
    pub save_mode: String,
    pub selected_output_columns: Option<Vec<String>>,
}

/// Ianvs `selected_dataitem`: which columns go into the selected leaderboard. `None` = all.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelectedDataitem {
    pub paradigms: Option<Vec<String>>,
    pub modules: Option<Vec<String>>,
    pub hyperparameters: Option<Vec<String>>,
    pub metrics: Option<Vec<String>>,
}

/// Values the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub workspace: Option<PathBuf>,
    pub seed: Option<u64>,
    /// Keys KubeEdge-Ianvs ignores become errors.
    pub strict: bool,
    /// The most test cases a job may expand to (`None`: [`DEFAULT_MAX_CASES`]).
    pub max_cases: Option<u64>,
}

/// The default cap on a job's test cases, counted from the grid axes before anything is
/// expanded (raise it with `--max-cases`).
pub const DEFAULT_MAX_CASES: u64 = 100_000;

/// Walks one file's YAML tree against a schema, pushing diagnostics.
struct Walker<'d> {
    file: PathBuf,
    diags: &'d mut Diagnostics,
}

/// The entries of a mapping that passed the key check.
struct Fields<'n> {
    entries: Vec<(String, &'n Node, &'n Node)>,
    mark: Mark,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, v)| *v)
    }
}

impl Walker<'_> {
    fn err(&mut self, mark: Option<Mark>, path: &str, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(&self.file, mark, path, msg));
        self.diags.items.last_mut().expect("just pushed")
    }

    fn expected(&mut self, node: &Node, path: &str, want: &str) {
        let found = node.type_name();
        self.err(
            Some(node.mark),
            path,
            format!("`{path}` must be {want}, found {found}"),
        );
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed` (or `extra`); keys in
    /// `unsupported` are Ianvs keys we do not implement yet and get their own message.
    fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.expected(node, path, "a mapping");
            return None;
        };
        let mut fields = Fields {
            entries: Vec::new(),
            mark: node.mark,
        };
        let mut seen = BTreeSet::new();
        for (k, v) in entries {
            let key = k.key_text();
            let kp = join(path, &key);
            if !seen.insert(key.clone()) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("key `{key}` appears twice in `{path}`"),
                );
                continue;
            }
            if let Some((_, why)) = unsupported.iter().find(|(u, _)| *u == key) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("`{key}` is not supported yet: {why}"),
                )
                .help(format!(
                    "remove `{key}` (a KubeEdge-Ianvs key ianvs does not implement)"
                ));
                continue;
            }
            if !allowed.contains(&key.as_str())
                && keys::ignored(&keys::level_of(path)).contains(&key.as_str())
            {
                self.diags.warn(Diagnostic::new(
                    &self.file,
                    Some(k.mark),
                    &kp,
                    format!("`{key}` in `{path}` is ignored; KubeEdge-Ianvs ignores it too"),
                ));
                continue;
            }
            if !allowed.contains(&key.as_str()) {
                self.err(
                    Some(k.mark),
                    &kp,
                    format!("unknown key `{key}` in `{path}`"),
                )
                .valid = allowed.iter().map(|s| s.to_string()).collect();
                let sugg = diag::did_you_mean(
                    &key,
                    &allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                );
                self.diags.items.last_mut().expect("just pushed").suggestion = sugg;
                continue;
            }
            fields.entries.push((key, k, v));
        }
        Some(fields)
    }

    fn required<'n>(&mut self, f: &Fields<'n>, path: &str, key: &str) -> Option<&'n Node> {
        let v = f.get(key);
        // A misspelt key already reported with this key as its suggestion needs no second message.
        let misspelt = self.diags.items.iter().any(|d| {
            d.suggestion.as_deref() == Some(key) && d.file == self.file && d.path.starts_with(path)
        });
        if v.is_none() && !misspelt {
            self.err(
                Some(f.mark),
                path,
                format!("`{path}` is missing the required key `{key}`"),
            );
        }
        v
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Str(s) if !s.trim().is_empty() => Some(s.clone()),
            NodeKind::Str(_) => {
                self.err(Some(node.mark), path, format!("`{path}` must not be empty"));
                None
            }
            _ => {
                self.expected(node, path, "text");
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<(String, Mark)>> {
        let Some(items) = node.as_seq() else {
            self.expected(node, path, "a list of text");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{path}[{i}]")) {
                out.push((s, item.mark));
            }
        }
        Some(out)
    }

    /// A path value, found by the path rule ([`paths::lookup`]): the YAML's folder, then the
    /// working directory. Records which rule found it.
    fn existing_path(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        let rel = self.string(node, path)?;
        match paths::lookup(&self.file, &rel) {
            paths::Lookup::Found(p, rule) => {
                self.diags.resolved.push(ResolvedPath {
                    file: paths::absolute(&self.file),
                    key: path.to_string(),
                    written: rel,
                    path: paths::absolute(&p),
                    rule,
                });
                Some(p)
            }
            paths::Lookup::Missing(tried) => {
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\", which does not exist (looked for {})",
                        tried.join(" and ")
                    ),
                )
                .help("relative paths are tried against the YAML file's folder, then the working directory");
                None
            }
            paths::Lookup::Ambiguous { yaml, cwd } => {
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\", which exists both relative to the YAML file ({}) and to the working directory ({}), and they differ",
                        yaml.display(),
                        cwd.display()
                    ),
                )
                .help("write the path so only one reading exists (e.g. absolute), or run from another folder");
                None
            }
            paths::Lookup::SymlinkLoop(p) => {
                self.err(
                    Some(node.mark),
                    path,
                    format!(
                        "`{path}` names \"{rel}\": {} is a symbolic link that loops (or is nested too deep)",
                        p.display()
                    ),
                );
                None
            }
        }
    }

    /// The workspace folder: the path rule, except that a workspace that does not exist yet is
    /// created in the YAML's folder.
    fn workspace(&mut self, node: &Node, path: &str) -> Option<PathBuf> {
        let rel = self.string(node, path)?;
        let (p, rule) = match paths::lookup(&self.file, &rel) {
            paths::Lookup::Found(p, rule) => (p, rule),
            paths::Lookup::Missing(_) if Path::new(&rel).is_absolute() => {
                (normalize(Path::new(&rel)), PathRule::Absolute)
            }
            paths::Lookup::Missing(_) => (resolve_path(&self.file, &rel), PathRule::YamlFolderNew),
            paths::Lookup::Ambiguous { .. } | paths::Lookup::SymlinkLoop(_) => {
                return self.existing_path(node, path);
            }
        };
        self.diags.resolved.push(ResolvedPath {
            file: paths::absolute(&self.file),
            key: path.to_string(),
            written: rel,
            path: paths::absolute(&p),
            rule,
        });
        Some(p)
    }
}

/// `warmup_samples` not smaller than the test set makes every sample a warm-up sample: every
/// latency column would be blank. Written in the YAML it is an error; the default (10) on a
/// tiny test set is a warning.
fn check_warmup(
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

/// The node as JSON, or why not: `.nan` / `.inf` are read as numbers and refused here with
/// their spelling (JSON would turn them into `null`, "found nothing").
fn check_finite(node: &Node) -> Result<Value, String> {
    match node.non_finite() {
        Some((what, _)) => Err(format!("must be a finite number, found {what}")),
        None => Ok(node.to_json()),
    }
}

/// A module or metric `url:` naming a Python plug-in file. The plug-in issue replaces this
/// one function with the real wiring; until then a non-empty `url` is a clear "plug-in" error.
/// Returns true when it reported one.
fn refuse_plugin_url(w: &mut Walker, url: &Node, path: &str, what: &str) -> bool {
    if matches!(&url.kind, NodeKind::Str(s) if s.is_empty()) || matches!(url.kind, NodeKind::Null) {
        return false;
    }
    let shown = url.as_str().unwrap_or("");
    let (msg, help) = match what {
        "metric" => (
            format!("metric `url` \"{shown}\" (a Python plug-in file) is not supported yet: plug-in metrics are not run"),
            "remove `url` to use the built-in metric of that name; `ianvs list metrics` shows them",
        ),
        _ => (
            format!("module `url` \"{shown}\" (a Python plug-in file) is not supported yet: built-in modules are chosen by `name`"),
            "remove `url`; `ianvs list modules` shows the built-in modules",
        ),
    };
    w.err(Some(url.mark), path, msg).help(help);
    true
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads and parses one YAML file; problems become diagnostics.
fn read_yaml(
    file: &Path,
    diags: &mut Diagnostics,
    referenced_from: Option<(&Path, Mark, &str)>,
) -> Option<Node> {
    // A FIFO or device would block `read_to_string` forever.
    let read = data::check_regular_file(file)
        .map_err(|e| match e {
            data::DataError::Io { source, .. } => source.to_string(),
            data::DataError::Invalid { message, .. } => message,
            other => other.to_string(),
        })
        .and_then(|()| std::fs::read_to_string(file).map_err(|e| e.to_string()));
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            let d = match referenced_from {
                Some((from, mark, key)) => Diagnostic::new(
                    from,
                    Some(mark),
                    key,
                    format!("cannot read {}: {e}", file.display()),
                ),
                None => Diagnostic::new(
                    file,
                    None,
                    "",
                    format!("cannot read {}: {e}", file.display()),
                ),
            };
            diags.push(d);
            return None;
        }
    };
    diags.add_source(file, &text);
    match yaml::parse(&text) {
        Ok(n) => Some(n),
        Err(e) => {
            diags.push(Diagnostic::new(
                file,
                Some(e.mark),
                "",
                format!("invalid YAML: {}", e.message),
            ));
            None
        }
    }
}

/// Ianvs's `Rank.save` modes. `selected_and_all_and_picture` saves both tables and, as in
/// Ianvs, pictures: ianvs's charts (`ianvs report`) are drawn at the end of the run.
pub const SAVE_MODES: &[&str] = &[
    "selected_and_all",
    "selected_only",
    "selected_and_all_and_picture",
];
pub const VIS_MODES: &[&str] = &["selected_only", "all", "none"];

/// Loads, resolves and validates a benchmarking job. Either a complete job or every problem.
pub fn load_job(
    file: &Path,
    registry: &Registry,
    paradigms: &'static [Box<dyn Paradigm>],
    ov: &Overrides,
) -> Result<Job, Diagnostics> {
    load_job_inner(file, registry, paradigms, ov).map_err(|mut d| {
        d.dedup();
        d
    })
}

fn load_job_inner(
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

struct RankMarks {
    sort_by: Vec<Mark>,
    selected_metrics: Vec<Mark>,
    selected_modules: Vec<Mark>,
    selected_hps: Vec<Mark>,
    output_columns: Vec<Mark>,
}

fn read_rank(w: &mut Walker, node: &Node) -> Option<(RankConfig, RankMarks)> {
    let p = "benchmarkingjob.rank";
    let f = w.map(node, p, RANK_KEYS, &[])?;
    let mut ok = true;
    let mut marks = RankMarks {
        sort_by: vec![],
        selected_metrics: vec![],
        selected_modules: vec![],
        selected_hps: vec![],
        output_columns: vec![],
    };
    let mut sort_by = Vec::new();
    if let Some(sb) = w.required(&f, p, "sort_by") {
        match sb.as_seq() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{p}.sort_by[{i}]");
                    match item.as_map() {
                        Some([(k, v)]) => {
                            let metric = metrics::canonical(&k.key_text())
                                .map(|m| m.id.to_string())
                                .unwrap_or_else(|| k.key_text());
                            let order = match v.as_str() {
                                Some("descend") => Some(Order::Descend),
                                Some("ascend") => Some(Order::Ascend),
                                _ => {
                                    let shown = v.to_json().to_string();
                                    w.err(
                                        Some(v.mark),
                                        &ip,
                                        format!("sort order {shown} is not valid"),
                                    )
                                    .choices(&shown, &["ascend", "descend"]);
                                    ok = false;
                                    None
                                }
                            };
                            if let Some(o) = order {
                                sort_by.push((metric, o));
                                marks.sort_by.push(k.mark);
                            }
                        }
                        _ => {
                            w.expected(item, &ip, "a one-key mapping `{metric: ascend|descend}`");
                            ok = false;
                        }
                    }
                }
            }
            _ => {
                w.expected(
                    sb,
                    &format!("{p}.sort_by"),
                    "a non-empty list of `{metric: ascend|descend}`",
                );
                ok = false;
            }
        }
    }
    let mut visualization_mode = "selected_only".to_string();
    if let Some(v) = f.get("visualization") {
        let vp = format!("{p}.visualization");
        if let Some(vf) = w.map(v, &vp, &["mode", "method"], &[]) {
            if let Some(m) = vf.get("mode") {
                if let Some(s) = w.string(m, &format!("{vp}.mode")) {
                    if VIS_MODES.contains(&s.as_str()) {
                        visualization_mode = s;
                    } else {
                        w.err(
                            Some(m.mark),
                            &format!("{vp}.mode"),
                            format!("visualization mode \"{s}\" is not valid"),
                        )
                        .choices(&s, VIS_MODES);
                        ok = false;
                    }
                }
            }
            if let Some(m) = vf.get("method") {
                if let Some(s) = w.string(m, &format!("{vp}.method")) {
                    if s != "print_table" {
                        w.err(
                            Some(m.mark),
                            &format!("{vp}.method"),
                            format!("visualization method \"{s}\" is not valid"),
                        )
                        .choices(&s, &["print_table"]);
                        ok = false;
                    }
                }
            }
        }
    }
    let mut selected = SelectedDataitem::default();
    if let Some(sd) = f.get("selected_dataitem") {
        let sp = format!("{p}.selected_dataitem");
        if let Some(sf) = w.map(
            sd,
            &sp,
            &["paradigms", "modules", "hyperparameters", "metrics"],
            &[],
        ) {
            let list = |w: &mut Walker, key: &str, marks: &mut Vec<Mark>| -> Option<Vec<String>> {
                let n = sf.get(key)?;
                let items = w.string_list(n, &format!("{sp}.{key}"))?;
                if items.iter().any(|(s, _)| s == "all") {
                    return None;
                }
                marks.extend(items.iter().map(|(_, m)| *m));
                Some(
                    items
                        .into_iter()
                        .map(|(s, _)| {
                            if key == "metrics" {
                                metrics::canonical(&s)
                                    .map(|m| m.id.to_string())
                                    .unwrap_or(s)
                            } else {
                                s
                            }
                        })
                        .collect(),
                )
            };
            let mut unused = Vec::new();
            selected.paradigms = list(w, "paradigms", &mut unused);
            selected.modules = list(w, "modules", &mut marks.selected_modules);
            selected.hyperparameters = list(w, "hyperparameters", &mut marks.selected_hps);
            selected.metrics = list(w, "metrics", &mut marks.selected_metrics);
        }
    }
    let mut save_mode = "selected_and_all".to_string();
    if let Some(s) = f.get("save_mode") {
        if let Some(v) = w.string(s, &format!("{p}.save_mode")) {
            if SAVE_MODES.contains(&v.as_str()) {
                save_mode = v;
            } else {
                w.err(
                    Some(s.mark),
                    &format!("{p}.save_mode"),
                    format!("save mode \"{v}\" is not valid"),
                )
                .choices(&v, SAVE_MODES);
                ok = false;
            }
        }
    }
    let selected_output_columns = f.get("selected_output_columns").and_then(|n| {
        let items = w.string_list(n, &format!("{p}.selected_output_columns"))?;
        marks.output_columns = items.iter().map(|(_, m)| *m).collect();
        Some(items.into_iter().map(|(s, _)| s).collect())
    });
    ok.then_some((
        RankConfig {
            sort_by,
            visualization_mode,
            selected,
            save_mode,
            selected_output_columns,
        },
        marks,
    ))
}

struct LoadedTestEnv {
    env: TestEnv,
    file: PathBuf,
    metric_marks: BTreeMap<&'static str, Mark>,
}

impl std::ops::Deref for LoadedTestEnv {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.env
    }
}

fn read_testenv(
    file: &Path,
    from: &Path,
    mark: Mark,
    diags: &mut Diagnostics,
    unknown_metrics: &mut Vec<(usize, String)>,
) -> Option<(LoadedTestEnv, Vec<(String, Node)>)> {
    let root = read_yaml(file, diags, Some((from, mark, "benchmarkingjob.testenv")))?;
    let errors_before = diags.len();
    let mut w = Walker {
        file: file.to_path_buf(),
        diags,
    };
    let top = w.map(&root, "", &["testenv"], &[])?;
    let te = w.required(&top, "", "testenv")?;
    // Paradigm settings are checked against the paradigms of the job later, so accept any key
    // here except the unsupported ones; remember the rest.
    let Some(entries) = te.as_map() else {
        w.expected(te, "testenv", "a mapping");
        return None;
    };
    let mut settings_nodes = Vec::new();
    let mut dataset_node = None;
    let mut metrics_node = None;
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "dataset" => dataset_node = Some(v),
            "metrics" => metrics_node = Some(v),
            _ => {
                if let Some((_, why)) = TESTENV_UNSUPPORTED.iter().find(|(u, _)| *u == key) {
                    w.err(
                        Some(k.mark),
                        &format!("testenv.{key}"),
                        format!("`{key}` is not supported yet: {why}"),
                    )
                    .help(format!(
                        "remove `{key}` (a KubeEdge-Ianvs key ianvs does not implement)"
                    ));
                } else {
                    settings_nodes.push((
                        key,
                        Node {
                            kind: v.kind.clone(),
                            mark: k.mark,
                        },
                    ));
                }
            }
        }
    }
    let mut metric_list = Vec::new();
    let mut metric_marks = BTreeMap::new();
    match metrics_node {
        None => {
            w.err(
                Some(te.mark),
                "testenv",
                "`testenv` is missing the required key `metrics`",
            );
        }
        Some(mn) => match mn.as_seq() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("testenv.metrics[{i}]");
                    // Ianvs writes `- name: accuracy` (optionally with `url`); a bare string is accepted too.
                    let name_node = match &item.kind {
                        NodeKind::Str(_) => Some(item),
                        _ => w.map(item, &ip, &["name", "url"], &[]).and_then(|f| {
                            let name = w.required(&f, &ip, "name");
                            // A plug-in metric may have any name: only the plug-in is reported.
                            match f.get("url") {
                                Some(u)
                                    if refuse_plugin_url(
                                        &mut w,
                                        u,
                                        &format!("{ip}.url"),
                                        "metric",
                                    ) =>
                                {
                                    None
                                }
                                _ => name,
                            }
                        }),
                    };
                    let Some(nn) = name_node else { continue };
                    let Some(name) = w.string(nn, &format!("{ip}.name")) else {
                        continue;
                    };
                    match metrics::canonical(&name) {
                        Some(m) => {
                            if metric_marks.insert(m.id, nn.mark).is_some() {
                                w.err(
                                    Some(nn.mark),
                                    &ip,
                                    format!("metric `{}` is listed twice", m.id),
                                );
                            } else {
                                metric_list.push(m);
                            }
                        }
                        None => {
                            unknown_metrics.push((w.diags.items.len(), name.to_string()));
                            w.err(
                                Some(nn.mark),
                                &format!("{ip}.name"),
                                format!("unknown metric \"{name}\""),
                            )
                            .choices(&name, &metrics::all_ids());
                        }
                    }
                }
            }
            _ => w.expected(
                mn,
                "testenv.metrics",
                "a non-empty list of `- name: <metric>`",
            ),
        },
    }
    let data = match dataset_node {
        None => {
            w.err(
                Some(te.mark),
                "testenv",
                "`testenv` is missing the required key `dataset`",
            );
            None
        }
        Some(dn) => read_dataset(&mut w, dn),
    };
    if diags.len() > errors_before {
        return None;
    }
    let data = data?;
    Some((
        LoadedTestEnv {
            env: TestEnv {
                file: file.to_path_buf(),
                data,
                metrics: metric_list,
                settings: settings_nodes
                    .iter()
                    .map(|(k, n)| (k.clone(), n.to_json()))
                    .collect(),
            },
            file: file.to_path_buf(),
            metric_marks,
        },
        settings_nodes,
    ))
}

fn read_dataset(w: &mut Walker, node: &Node) -> Option<DataSplits> {
    let p = "testenv.dataset";
    let f = w.map(node, p, DATASET_KEYS, DATASET_UNSUPPORTED)?;
    let errors_before = w.diags.len();
    let mut opts = LoadOptions::default();
    if let Some(l) = f.get("label") {
        opts.label = match &l.kind {
            NodeKind::Int(i) if *i >= 0 => LabelColumn::Index(*i as usize),
            NodeKind::Str(s) => LabelColumn::parse(s),
            _ => {
                w.expected(
                    l,
                    &format!("{p}.label"),
                    "a column name, a 0-based column index, `first` or `last`",
                );
                LabelColumn::Last
            }
        };
    }
    if let Some(s) = f.get("feature_scale") {
        match &s.kind {
            NodeKind::Int(i) if *i > 0 => opts.feature_scale = *i as f32,
            NodeKind::Float(x) if *x > 0.0 => opts.feature_scale = *x as f32,
            _ => w.expected(
                s,
                &format!("{p}.feature_scale"),
                "a positive number (each feature is divided by it)",
            ),
        }
    }
    if let Some(n) = f.get("num_classes") {
        match &n.kind {
            NodeKind::Int(i) if *i >= 1 && *i <= u32::MAX as i64 => {
                opts.num_classes = Some(*i as u32)
            }
            _ => w.expected(
                n,
                &format!("{p}.num_classes"),
                "a positive integer (labels run from 0 to num_classes - 1)",
            ),
        }
    }
    if let Some(t) = f.get("text_field") {
        opts.text_field = w.string(t, &format!("{p}.text_field"));
    }
    let mut shape = None;
    if let Some(s) = f.get("shape") {
        match s.to_json().as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .filter(|v| *v > 0)
                .map(|v| v as usize)
                .collect::<Vec<_>>()
        }) {
            Some(v) if v.len() == 3 => shape = Some((v[0], v[1], v[2])),
            _ => w.expected(
                s,
                &format!("{p}.shape"),
                "a list of three positive integers [channels, height, width]",
            ),
        }
    }

    let key_of = |a: &str, b: &str| {
        if f.get(a).is_some() {
            Some(a.to_string())
        } else if f.get(b).is_some() {
            Some(b.to_string())
        } else {
            None
        }
    };
    let train_key = key_of("train_data", "train_index")
        .or_else(|| f.get("train_url").map(|_| "train_url".to_string()));
    let test_key = key_of("test_data", "test_index")
        .or_else(|| f.get("test_url").map(|_| "test_url".to_string()));
    for pair in [
        ["train_data", "train_index"],
        ["test_data", "test_index"],
        ["train_index", "train_url"],
        ["test_index", "test_url"],
    ] {
        if let (Some(_), Some(b)) = (f.get(pair[0]), f.get(pair[1])) {
            w.err(
                Some(b.mark),
                &format!("{p}.{}", pair[1]),
                format!("give either `{}` or `{}`, not both", pair[0], pair[1]),
            );
        }
    }
    let load = |w: &mut Walker, key: &str| -> Option<Dataset> {
        let n = f.get(key)?;
        let path = w.existing_path(n, &format!("{p}.{key}"))?;
        if (key.ends_with("_index") || key.ends_with("_url"))
            && data::Format::of(&path) != Some(data::Format::Index)
        {
            w.err(Some(n.mark), &format!("{p}.{key}"), format!("`{key}` naming {} is not supported yet: ianvs reads index files as .txt with `<sample path> <label>` lines (Ianvs's JSON annotation indexes are not read)", path.display()));
            return None;
        }
        match data::load(&path, &opts) {
            Ok(d) => Some(d),
            Err(e) => {
                w.err(
                    Some(n.mark),
                    &format!("{p}.{key}"),
                    format!("cannot load `{key}`: {e}"),
                );
                None
            }
        }
    };
    let (train, test) = match (&train_key, &test_key, f.get("data")) {
        (None, None, Some(_)) => {
            let all = load(w, "data");
            let mut method = SplitMethod::Interleaved;
            let mut fraction = 0.2;
            let mut seed = 0u64;
            if let Some(s) = f.get("split") {
                let sp = format!("{p}.split");
                if let Some(sf) = w.map(s, &sp, &["method", "test_fraction", "seed"], &[]) {
                    if let Some(m) = sf.get("method") {
                        if let Some(ms) = w.string(m, &format!("{sp}.method")) {
                            match SplitMethod::parse(&ms) {
                                Some(x) => method = x,
                                None => {
                                    w.err(
                                        Some(m.mark),
                                        &format!("{sp}.method"),
                                        format!("split method \"{ms}\" is not valid"),
                                    )
                                    .choices(&ms, SplitMethod::NAMES);
                                }
                            }
                        }
                    }
                    if let Some(t) = sf.get("test_fraction") {
                        match &t.kind {
                            NodeKind::Float(x) if *x > 0.0 && *x < 1.0 => fraction = *x,
                            _ => {
                                w.err(Some(t.mark), &format!("{sp}.test_fraction"), format!("`{sp}.test_fraction` must be a number strictly between 0 and 1, found {}", t.to_json()));
                            }
                        }
                    }
                    if let Some(s) = sf.get("seed") {
                        match &s.kind {
                            NodeKind::Int(i) if *i >= 0 => seed = *i as u64,
                            _ => w.expected(s, &format!("{sp}.seed"), "a non-negative integer"),
                        }
                    }
                }
            }
            match all {
                Some(d) => {
                    let (tr, te) = data::split(&d, method, fraction, seed);
                    (Some(tr), Some(te))
                }
                None => (None, None),
            }
        }
        (_, _, Some(d)) => {
            w.err(Some(d.mark), &format!("{p}.data"), "give either `data` (one file, split by `split`) or separate train/test files, not both");
            (None, None)
        }
        (tr, te, None) => {
            if let Some(s) = f.get("split") {
                w.err(
                    Some(s.mark),
                    &format!("{p}.split"),
                    "`split` only applies to a single `data` file",
                );
            }
            // `test_data_info` was already reported as not supported yet.
            if te.is_none()
                && !w
                    .diags
                    .items
                    .iter()
                    .any(|d| d.path == "testenv.dataset.test_data_info")
            {
                w.err(Some(f.mark), p, "`testenv.dataset` needs test data: `test_data`, `test_index`, or one `data` file with a `split`");
            }
            (
                tr.as_ref().and_then(|k| load(w, k)),
                te.as_ref().and_then(|k| load(w, k)),
            )
        }
    };
    if w.diags.len() > errors_before {
        return None;
    }
    let test = test?;
    if let Some(tr) = &train {
        if tr.dim != test.dim {
            w.err(
                Some(f.mark),
                p,
                format!(
                    "train samples have {} features but test samples have {}",
                    tr.dim, test.dim
                ),
            );
            return None;
        }
    }
    let dim = test.dim;
    let input_shape = match shape {
        Some((c, h, wd)) => {
            if c * h * wd != dim {
                w.err(
                    f.get("shape").map(|n| n.mark),
                    &format!("{p}.shape"),
                    format!(
                        "shape [{c}, {h}, {wd}] holds {} values but each sample has {dim}",
                        c * h * wd
                    ),
                );
                return None;
            }
            (c, h, wd)
        }
        None => {
            // A square single-channel image when the feature count is a perfect square
            // (MNIST 784 = 28²), otherwise flat features.
            let side = (dim as f64).sqrt().round() as usize;
            if side * side == dim && side > 1 {
                (1, side, side)
            } else {
                (1, 1, dim)
            }
        }
    };
    let num_classes = train
        .as_ref()
        .map_or(0, |t| t.num_classes())
        .max(test.num_classes())
        .max(opts.num_classes.unwrap_or(0) as usize);
    Some(DataSplits {
        train: train.map(Arc::new),
        test: Arc::new(test),
        input_shape,
        num_classes,
    })
}

#[allow(clippy::too_many_arguments)]
fn read_algorithm(
    name: &str,
    file: &Path,
    from: &Path,
    mark: Mark,
    registry: &Registry,
    paradigms: &'static [Box<dyn Paradigm>],
    seed: u64,
    diags: &mut Diagnostics,
) -> Option<Algorithm> {
    let root = read_yaml(
        file,
        diags,
        Some((from, mark, "benchmarkingjob.test_object.algorithms")),
    )?;
    let errors_before = diags.len();
    let mut w = Walker {
        file: file.to_path_buf(),
        diags,
    };
    let top = w.map(&root, "", &["algorithm"], &[])?;
    let an = w.required(&top, "", "algorithm")?;
    let p = "algorithm";
    let entries = an.as_map().map(|e| e.to_vec()).unwrap_or_default();
    // `<mode>_data_setting` keys are Ianvs's; we do not implement them yet.
    let unsupported: Vec<(String, String)> = entries
        .iter()
        .map(|(k, _)| k.key_text())
        .filter(|k| k.ends_with("_data_setting"))
        .map(|k| (k, DATA_SETTING_WHY.to_string()))
        .chain(
            ALGO_UNSUPPORTED
                .iter()
                .map(|(k, w)| (k.to_string(), w.to_string())),
        )
        .collect();
    let unsupported_refs: Vec<(&str, &str)> = unsupported
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let f = w.map(an, p, ALGO_KEYS, &unsupported_refs)?;
    if let Some(iu) = f.get("initial_model_url") {
        match &iu.kind {
            NodeKind::Str(s) if s.is_empty() => {}
            NodeKind::Null => {}
            _ => {
                w.err(Some(iu.mark), "algorithm.initial_model_url", "`initial_model_url` is not supported yet: built-in models are trained from scratch or named by a module hyperparameter").help("remove it or set it to \"\"");
            }
        }
    }
    let paradigm_names: Vec<&str> = paradigms.iter().map(|pd| pd.name()).collect();
    let paradigm = w.required(&f, p, "paradigm_type").and_then(|n| {
        let s = w.string(n, "algorithm.paradigm_type")?;
        let found = paradigms
            .iter()
            .find(|pd| pd.name().eq_ignore_ascii_case(&s));
        if found.is_none() {
            if IANVS_PARADIGMS.contains(&s.to_ascii_lowercase().as_str()) {
                w.err(
                    Some(n.mark),
                    "algorithm.paradigm_type",
                    format!(
                        "paradigm \"{s}\" is a KubeEdge-Ianvs paradigm ianvs does not run yet (not supported yet); ianvs runs: {}",
                        paradigm_names.join(", ")
                    ),
                );
            } else {
                w.err(
                    Some(n.mark),
                    "algorithm.paradigm_type",
                    format!("unknown paradigm \"{s}\""),
                )
                .choices(&s, &paradigm_names);
            }
        }
        found.map(|b| b.as_ref())
    });
    let mut modules = Vec::new();
    if let (Some(mn), Some(pd)) = (w.required(&f, p, "modules"), paradigm) {
        let slot_types: Vec<&str> = pd.slots().iter().map(|s| s.module_type).collect();
        match mn.as_seq() {
            Some(items) => {
                let mut seen_types: BTreeMap<String, Mark> = BTreeMap::new();
                for (i, m) in items.iter().enumerate() {
                    let mp = format!("algorithm.modules[{i}]");
                    let Some(mf) = w.map(m, &mp, MODULE_KEYS, &[]) else {
                        continue;
                    };
                    let Some(tn) = w.required(&mf, &mp, "type") else {
                        continue;
                    };
                    let Some(mtype) = w.string(tn, &format!("{mp}.type")) else {
                        continue;
                    };
                    if !slot_types.contains(&mtype.as_str()) {
                        w.err(
                            Some(tn.mark),
                            &format!("{mp}.type"),
                            format!(
                                "module type \"{mtype}\" is not used by paradigm `{}`",
                                pd.name()
                            ),
                        )
                        .choices(&mtype, &slot_types);
                        continue;
                    }
                    if let Some(prev) = seen_types.insert(mtype.clone(), tn.mark) {
                        w.err(Some(tn.mark), &format!("{mp}.type"), format!("module type \"{mtype}\" appears twice (first at line {}); each type may appear once", prev.line));
                        continue;
                    }
                    if let Some(u) = mf.get("url") {
                        // A plug-in module may have any name: only the plug-in is reported.
                        if refuse_plugin_url(&mut w, u, &format!("{mp}.url"), "module") {
                            seen_types.insert(mtype.clone(), tn.mark);
                            continue;
                        }
                    }
                    let Some(nn) = w.required(&mf, &mp, "name") else {
                        continue;
                    };
                    let Some(mname) = w.string(nn, &format!("{mp}.name")) else {
                        continue;
                    };
                    let Some(entry) = registry.find(&mtype, &mname) else {
                        w.err(
                            Some(nn.mark),
                            &format!("{mp}.name"),
                            format!("unknown {mtype} module \"{mname}\""),
                        )
                        .choices(&mname, &registry.names(&mtype));
                        continue;
                    };
                    if let Some(mc) = read_module_hps(&mut w, &mp, &mf, entry, seed) {
                        modules.push(mc);
                    }
                }
                for slot in pd.slots().iter().filter(|s| s.required) {
                    if !seen_types.contains_key(slot.module_type) {
                        w.err(
                            Some(mn.mark),
                            "algorithm.modules",
                            format!(
                                "paradigm `{}` needs a `{}` module ({})",
                                pd.name(),
                                slot.module_type,
                                slot.help
                            ),
                        )
                        .valid = registry
                            .names(slot.module_type)
                            .iter()
                            .map(|s| s.to_string())
                            .collect();
                    }
                }
            }
            None => w.expected(mn, "algorithm.modules", "a list of modules"),
        }
    }
    let mut repeat = 1;
    if let Some(rn) = f.get("repeat") {
        match repeat_spec().check(&rn.to_json()) {
            Ok(v) => repeat = v.as_u64().unwrap_or(1) as u32,
            Err(why) => {
                w.err(
                    Some(rn.mark),
                    "algorithm.repeat",
                    format!("`algorithm.repeat`: {why}"),
                );
            }
        }
    }
    if diags.len() > errors_before {
        return None;
    }
    Some(Algorithm {
        name: name.to_string(),
        folder: paths::folder_name(name, crate::story::RESERVED_DIRS),
        file: file.to_path_buf(),
        paradigm: paradigm?,
        modules,
        settings: Hyperparameters::default(),
        repeat,
    })
}

fn read_module_hps(
    w: &mut Walker,
    mp: &str,
    mf: &Fields,
    entry: &ianvs_paradigms::registry::ModuleEntry,
    seed: u64,
) -> Option<ModuleConfig> {
    let hp_names: Vec<&str> = entry.hyperparameters.iter().map(|h| h.name).collect();
    let mut axes: Vec<Vec<BTreeMap<String, Value>>> = Vec::new();
    let mut given: BTreeSet<String> = BTreeSet::new();
    let mut ok = true;
    if let Some(hn) = mf.get("hyperparameters") {
        let hp = format!("{mp}.hyperparameters");
        let Some(items) = hn.as_seq() else {
            w.expected(hn, &hp, "a list of `- <name>: {values: [...]}`");
            return None;
        };
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{hp}[{i}]");
            let Some([(k, v)]) = item.as_map() else {
                w.expected(item, &ip, "a one-key mapping `<name>: {values: [...]}`");
                ok = false;
                continue;
            };
            let key = k.key_text();
            let kp = format!("{ip}.{key}");
            let Some(vf) = w.map(v, &kp, &["values"], &[]) else {
                ok = false;
                continue;
            };
            let Some(values) = w.required(&vf, &kp, "values") else {
                ok = false;
                continue;
            };
            let Some(vals) = values.as_seq().filter(|s| !s.is_empty()) else {
                w.expected(values, &format!("{kp}.values"), "a non-empty list");
                ok = false;
                continue;
            };
            if key == "other_hyperparameters" {
                // Each value is a YAML file of `name: value` pairs: one grid point setting several hyperparameters together.
                let mut axis = Vec::new();
                for (j, v) in vals.iter().enumerate() {
                    let vp = format!("{kp}.values[{j}]");
                    let Some(path) = w.existing_path(v, &vp) else {
                        ok = false;
                        continue;
                    };
                    let mut sub = Diagnostics::default();
                    let point =
                        read_yaml(&path, &mut sub, Some((&w.file, v.mark, &vp))).and_then(|node| {
                            let mut sw = Walker {
                                file: path.clone(),
                                diags: &mut sub,
                            };
                            let fields = sw.map(&node, "", &hp_names, &[])?;
                            let mut point = BTreeMap::new();
                            for (name, kn, vn) in &fields.entries {
                                let spec = entry.hp(name).expect("key checked against hp names");
                                match check_finite(vn).and_then(|j| spec.check(&j)) {
                                    Ok(val) => {
                                        point.insert(name.clone(), val);
                                    }
                                    Err(why) => {
                                        sw.err(
                                            Some(kn.mark),
                                            name,
                                            format!(
                                                "hyperparameter `{name}` of {} {}: {why}",
                                                entry.module_type, entry.name
                                            ),
                                        );
                                    }
                                }
                            }
                            Some(point)
                        });
                    let failed = !sub.is_empty();
                    for d in sub.items.drain(..) {
                        w.diags.push(d);
                    }
                    if let Some(src) = std::fs::read_to_string(&path).ok().filter(|_| failed) {
                        w.diags.add_source(&path, &src);
                    }
                    match point {
                        Some(pt) if !failed => {
                            given.extend(pt.keys().cloned());
                            axis.push(pt);
                        }
                        _ => ok = false,
                    }
                }
                axes.push(axis);
                continue;
            }
            let Some(spec) = entry.hp(&key) else {
                w.err(
                    Some(k.mark),
                    &kp,
                    format!(
                        "{} module \"{}\" has no hyperparameter `{key}`",
                        entry.module_type, entry.name
                    ),
                )
                .choices(&key, &hp_names);
                ok = false;
                continue;
            };
            if !given.insert(key.clone()) {
                w.err(
                    Some(k.mark),
                    &kp,
                    format!("hyperparameter `{key}` is given twice"),
                );
                ok = false;
                continue;
            }
            let mut axis = Vec::new();
            for (j, v) in vals.iter().enumerate() {
                let mut json = match check_finite(v) {
                    Ok(j) => j,
                    Err(why) => {
                        w.err(
                            Some(v.mark),
                            &format!("{kp}.values[{j}]"),
                            format!(
                                "hyperparameter `{key}` of {} {}: {why}",
                                entry.module_type, entry.name
                            ),
                        );
                        ok = false;
                        continue;
                    }
                };
                if spec.kind == ianvs_paradigms::hp::HpKind::Path {
                    if let Some(s) = json.as_str() {
                        json =
                            Value::String(resolve_path(&w.file, s).to_string_lossy().into_owned());
                    }
                }
                match spec.check(&json) {
                    Ok(val) => axis.push(BTreeMap::from([(key.clone(), val)])),
                    Err(why) => {
                        w.err(
                            Some(v.mark),
                            &format!("{kp}.values[{j}]"),
                            format!(
                                "hyperparameter `{key}` of {} {}: {why}",
                                entry.module_type, entry.name
                            ),
                        )
                        .help(spec.help.to_string());
                        ok = false;
                    }
                }
            }
            axes.push(axis);
        }
    }
    // Every hyperparameter gets its default here, even one set on an axis: an
    // `other_hyperparameters` file that leaves a key out then still gets the default.
    let mut fixed = BTreeMap::new();
    for spec in &entry.hyperparameters {
        match &spec.default {
            Some(d) => {
                fixed.insert(spec.name.to_string(), d.clone());
            }
            None if spec.name == "seed" => {
                fixed.insert("seed".into(), Value::from(seed));
            }
            None if given.contains(spec.name) => {}
            None => {
                w.err(
                    Some(mf.mark),
                    mp,
                    format!(
                        "{} module \"{}\" needs the hyperparameter `{}` ({})",
                        entry.module_type, entry.name, spec.name, spec.help
                    ),
                );
                ok = false;
            }
        }
    }
    // A job-wide `--seed` replaces a module's default seed (not one written in the YAML).
    if fixed.contains_key("seed") && !given.contains("seed") {
        fixed.insert("seed".into(), Value::from(seed));
    }
    ok.then(|| ModuleConfig {
        module_type: entry.module_type.to_string(),
        name: entry.name.to_string(),
        axes,
        fixed,
    })
}
