//! Benchmark configuration: the three Ianvs YAML levels (benchmarking job, test environment,
//! algorithm), read strictly into typed structs.
//!
//! Parse → resolve → validate: the YAML is read into a located tree ([`yaml`]), each level is
//! walked against its schema, registry look-ups and relative paths are resolved, then
//! cross-file rules are checked. Every problem is collected into [`Diagnostics`] so the user
//! fixes them all in one go; nothing is run or written while any remain.

mod algorithm;
mod dataset;
pub mod diag;
pub mod grid;
mod job;
pub mod keys;
pub mod paths;
pub mod plugin;
mod rank;
mod testenv;
mod walker;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ianvs_paradigms::hp::{HpSpec, Hyperparameters};
use ianvs_paradigms::registry::Registry;
use ianvs_paradigms::{DataSplits, Paradigm};
use serde_json::Value;

pub use diag::{Diagnostic, Diagnostics};
pub use paths::{normalize, resolve_path, PathRule, ResolvedPath};
pub use rank::{SAVE_MODES, VIS_MODES};

use crate::metrics::MetricDef;

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
    /// Set for an out-of-process plug-in (`url:`); `name` is then the alias it registers.
    pub plugin: Option<ianvs_paradigms::PluginRef>,
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
    /// `selected_and_all`, `selected_only` or `selected_and_all_and_picture` (as Ianvs).
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

/// Loads, resolves and validates a benchmarking job. Either a complete job or every problem.
pub fn load_job(
    file: &Path,
    registry: &Registry,
    paradigms: &'static [Box<dyn Paradigm>],
    ov: &Overrides,
) -> Result<Job, Diagnostics> {
    job::load_job_inner(file, registry, paradigms, ov).map_err(|mut d| {
        d.dedup();
        d
    })
}
