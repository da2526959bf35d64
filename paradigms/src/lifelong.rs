//! Lifelong learning across edge and cloud (Ianvs `lifelonglearning`, after Sedna's
//! lifelong-learning job): tasks arrive round by round; the edge infers with what it has and an
//! unseen-task detector decides which samples go up to the cloud; the cloud's knowledge base
//! learns what identifies each task, updates its task model(s) with the chosen strategy and pushes
//! them back down; after every round every task's test set is evaluated, filling the accuracy
//! matrix R of Lopez-Paz & Ranzato 2017 ("Gradient Episodic Memory for Continual Learning").
//!
//! Rounds are 1-based as in GEM: `R[i][j]` is the accuracy on task `j` after round `i`, and row
//! 0 holds `b[j]`, the accuracy of the untrained model (for forward transfer).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::Dataset;
use crate::hp::{HpKind, HpSpec, HpStruct, Hyperparameters};
use crate::modules::{BuildContext, WorkContext};
use crate::paradigm::{CaseContext, CaseSpec, DataSplits, ModuleSlot, Paradigm, ResolvedModule};
use crate::records::{CaseOutput, RecordKind, Records};
use crate::registry::Registry;
use crate::single_task::argmax;

// ---------------------------------------------------------------------------------------------
// Module traits
// ---------------------------------------------------------------------------------------------

/// One task of a task definition, as indices into the test environment's splits.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Short name for tables and the matrix CSV, e.g. `digits 2-3`, `perm 2`, `rot 30`.
    pub name: String,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// The classes this task's samples belong to (Split-MNIST's digit pair); empty when every
    /// task spans every class (permuted and rotated inputs).
    pub classes: Vec<u32>,
}

/// Module type `task_definition`: cuts the data into a sequence of tasks.
pub trait TaskDefinition: Send + Sync {
    /// The tasks in arrival order. Cheap (indices only) because it also runs during validation.
    fn tasks(&self, train: &Dataset, test: &Dataset) -> anyhow::Result<Vec<TaskSpec>>;
    /// Turns one sample into what task `task` sees (a pixel permutation, a rotation). Split-style
    /// definitions keep samples as they are.
    fn transform(&self, _task: usize, _sample: &mut [f32]) {}
}

/// What an unseen-task detector sees for a batch of edge samples.
pub struct DetectInput<'a> {
    /// Row-major `[n, dim]` features.
    pub x: &'a [f32],
    pub dim: usize,
    /// The edge model's class probabilities for the same samples, row-major `[n, num_classes]`.
    pub probs: &'a [f32],
    pub num_classes: usize,
    /// Ground truth: whether each sample's task is unknown to the knowledge base. Only oracle
    /// modules (upper bounds) may read it.
    pub truth: &'a [bool],
}

/// One sample's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// True when the sample belongs to no known task (it goes up to the cloud).
    pub unseen: bool,
    /// The score compared with the threshold; higher means more likely unseen.
    pub score: f32,
}

/// Module type `unseen_sample_recognition` (Ianvs; Sedna's `unseen_task_detect`): runs on the
/// edge and flags samples of tasks the knowledge base does not know.
pub trait UnseenTaskDetect: Send {
    /// The cloud received `samples` of `task`: learn what identifies the task. Returns the bytes
    /// of identification data (prototypes, thresholds) pushed to the edge.
    fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize>;
    fn detect(&self, input: &DetectInput) -> anyhow::Result<Vec<Detection>>;
}

/// Module type `task_allocation`: picks the known task (hence the task model) for each sample.
pub trait TaskAllocation: Send {
    /// As [`UnseenTaskDetect::learn`].
    fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize>;
    /// The allocated task of each sample of row-major `[n, dim]` `x`. `truth` holds the true
    /// tasks; only oracle modules (Ianvs's `TaskAllocationByOrigin`) may read it.
    fn allocate(&self, x: &[f32], dim: usize, truth: &[usize]) -> anyhow::Result<Vec<usize>>;
}

/// Samples of one task the cloud received in a round.
pub struct TaskBatch<'a> {
    /// Position of the task in the task sequence (0-based).
    pub task: usize,
    pub samples: &'a Dataset,
}

/// What a strategy did in one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateReport {
    /// Wall time spent training (CPU; each batch's loss is read back, so the work is done).
    pub train_seconds: f64,
    /// Sample-visits per epoch summed over the models trained (new data plus replayed data).
    pub trained_samples: usize,
    /// Bytes of the models pushed down to the edge (f32 parameters of every model changed).
    pub model_bytes: usize,
    pub models_sent: usize,
}

/// How a strategy builds its models: the test environment's shapes and the algorithm's
/// `basemodel` module (name and hyperparameters, training settings included).
pub struct StrategyContext {
    pub build: BuildContext,
    pub basemodel: ResolvedModule,
}

/// Module type `task_update_decision`: the cloud side of the knowledge base: how the task
/// model(s) are updated with what came up (fine-tuning, replay, EWC, one model per task, joint
/// training) and how the edge predicts with them.
pub trait TaskUpdateDecision: Send {
    /// Updates with this round's uploaded samples, grouped by task.
    fn update(&mut self, batches: &[TaskBatch], work: &WorkContext)
        -> anyhow::Result<UpdateReport>;
    /// True when the knowledge base holds one model per task, so inference needs a
    /// `task_allocation`.
    fn per_task_models(&self) -> bool;
    /// Class probabilities `[n, num_classes]` of the model(s) on the edge. `tasks` holds each
    /// sample's allocated task when [`TaskUpdateDecision::per_task_models`] (else `None`).
    /// Before the first update this is the untrained model (the `b` of forward transfer).
    fn predict_proba(&self, x: &[f32], tasks: Option<&[usize]>) -> anyhow::Result<Vec<f32>>;
    fn num_classes(&self) -> usize;
    /// Parameters held by the knowledge base (all task models).
    fn num_parameters(&self) -> usize;
}

// ---------------------------------------------------------------------------------------------
// Records and the accuracy matrix
// ---------------------------------------------------------------------------------------------

/// One round: what arrived, what went up, what the cloud did, what came down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based.
    pub round: usize,
    /// The task that arrives in this round (0-based position in the sequence).
    pub task: usize,
    pub task_name: String,
    pub stream_samples: usize,
    /// Samples the edge ran its model on (0 in round 1: there is no model yet).
    pub inferred: usize,
    pub uploaded: usize,
    pub uplink_bytes: usize,
    pub train_seconds: f64,
    pub trained_samples: usize,
    pub models_sent: usize,
    pub downlink_model_bytes: usize,
    /// Task identification data (prototypes, thresholds) pushed to the edge.
    pub downlink_identity_bytes: usize,
}

/// One sample of a round's edge stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub round: usize,
    pub task: usize,
    /// Index of the sample in its task's train set.
    pub index: usize,
    pub label: u32,
    /// Ground truth: the sample's task is unknown to the knowledge base.
    pub unseen: bool,
    /// The detector's verdict (every sample of round 1 goes up: nothing is known yet).
    pub flagged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// The edge model's prediction (none in round 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<u32>,
}

/// One test sample evaluated after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// 0 = the untrained model (`b`); `i` = after round `i`.
    pub after_round: usize,
    pub task: usize,
    /// Index of the sample in its task's test set.
    pub index: usize,
    pub label: u32,
    pub prediction: u32,
    /// The task model the sample was allocated to (per-task knowledge bases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_task: Option<usize>,
}

/// A lifelong-learning record, tagged by `record` in `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum LifelongRecord {
    Round(RoundRecord),
    Stream(StreamRecord),
    Eval(EvalRecord),
}

/// The accuracy matrix of one case: `r[i][j]` is the accuracy on task `j` after round `i + 1`,
/// `baseline[j]` that of the untrained model.
#[derive(Debug, Clone, PartialEq)]
pub struct AccuracyMatrix {
    pub task_names: Vec<String>,
    pub baseline: Vec<f64>,
    pub r: Vec<Vec<f64>>,
}

impl AccuracyMatrix {
    /// Rebuilds the matrix from a case's records: one row per round record, one column per
    /// task, each cell the share of correct eval records. Every cell must have samples.
    pub fn from_records(records: &[LifelongRecord]) -> anyhow::Result<Self> {
        let mut names: BTreeMap<usize, String> = BTreeMap::new();
        let mut rounds = 0;
        let mut cells: BTreeMap<(usize, usize), (usize, usize)> = BTreeMap::new();
        for rec in records {
            match rec {
                LifelongRecord::Round(r) => {
                    rounds = rounds.max(r.round);
                    names.insert(r.task, r.task_name.clone());
                }
                LifelongRecord::Eval(e) => {
                    let c = cells.entry((e.after_round, e.task)).or_default();
                    c.0 += usize::from(e.prediction == e.label);
                    c.1 += 1;
                }
                LifelongRecord::Stream(_) => {}
            }
        }
        let tasks = names.len();
        if rounds == 0 || tasks != rounds || names.keys().copied().ne(0..tasks) {
            anyhow::bail!("the records hold {rounds} round(s) for {tasks} task(s); the accuracy matrix needs one round per task");
        }
        let cell = |i: usize, j: usize| -> anyhow::Result<f64> {
            match cells.get(&(i, j)) {
                Some(&(ok, n)) if n > 0 => Ok(ok as f64 / n as f64),
                _ => anyhow::bail!(
                    "no test sample of task {} was evaluated after round {i}",
                    j + 1
                ),
            }
        };
        let baseline = (0..tasks)
            .map(|j| cell(0, j))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let r = (1..=rounds)
            .map(|i| (0..tasks).map(|j| cell(i, j)).collect())
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            task_names: names.into_values().collect(),
            baseline,
            r,
        })
    }

    pub fn tasks(&self) -> usize {
        self.baseline.len()
    }

    /// The matrix as CSV: a header naming each task, the untrained row (`b`), then one row per
    /// round; accuracies with 4 decimals.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("after_round");
        for (j, n) in self.task_names.iter().enumerate() {
            // Names come from task definitions; keep the CSV one cell per task whatever they hold.
            let _ = write!(s, ",task {} ({})", j + 1, n.replace([',', '"', '\n'], " "));
        }
        s.push('\n');
        let row = |s: &mut String, label: &str, v: &[f64]| {
            s.push_str(label);
            for x in v {
                let _ = write!(s, ",{x:.4}");
            }
            s.push('\n');
        };
        row(&mut s, "untrained", &self.baseline);
        for (i, r) in self.r.iter().enumerate() {
            row(&mut s, &(i + 1).to_string(), r);
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The paradigm
// ---------------------------------------------------------------------------------------------

pub struct LifelongLearning;

const SLOTS: &[ModuleSlot] = &[
    ModuleSlot { module_type: "basemodel", required: true, help: "the model every task model starts from (its training settings apply to every round)" },
    ModuleSlot { module_type: "task_definition", required: true, help: "how the data is cut into a sequence of tasks (Split, Permuted, Rotated)" },
    ModuleSlot { module_type: "task_update_decision", required: true, help: "how the cloud updates its knowledge base each round (FineTune, Replay, EWC, PerTaskModels, Joint)" },
    ModuleSlot { module_type: "unseen_sample_recognition", required: false, help: "edge detector of samples from unknown tasks; default PrototypeDistance" },
    ModuleSlot { module_type: "task_allocation", required: false, help: "picks the task model for a sample when the knowledge base keeps one per task; default NearestPrototype" },
];

pub const SCENARIOS: &[&str] = &["class-incremental", "task-incremental"];

/// Default module names of the optional slots.
const DEFAULT_DETECTOR: &str = "PrototypeDistance";
const DEFAULT_ALLOCATION: &str = "NearestPrototype";

impl Paradigm for LifelongLearning {
    fn name(&self) -> &'static str {
        "lifelonglearning"
    }
    fn summary(&self) -> &'static str {
        "tasks arrive in rounds; the edge uploads samples of unseen tasks, the cloud updates its knowledge base; every task is evaluated after every round (accuracy matrix, BWT/FWT)"
    }
    fn slots(&self) -> &'static [ModuleSlot] {
        SLOTS
    }
    fn settings(&self) -> Vec<HpSpec> {
        Settings::specs()
    }
    fn record_kind(&self) -> RecordKind {
        RecordKind::Lifelong
    }

    fn preflight(
        &self,
        case: &CaseSpec,
        data: &DataSplits,
        registry: &Registry,
    ) -> anyhow::Result<()> {
        for d in [data.train.as_deref(), Some(&*data.test)]
            .into_iter()
            .flatten()
        {
            if let Some(why) = d.undecoded() {
                anyhow::bail!("lifelong learning's modules are built in and read numeric features, but the index-file samples are not numbers ianvs can decode ({why}); index files whose samples are PGM images or numeric text work, and samples as paths go to plug-in modules of single-task learning and joint inference");
            }
        }
        plan_tasks(case, data, registry)?;
        // Building the modules checks what only the data can tell (a CNN on inputs too small
        // for it, a base model the strategies cannot train); it costs one weight init.
        build_modules(case, data, registry, &Settings::read(&case.settings)?).map(|_| ())
    }

    fn run(&self, case: &CaseSpec, ctx: &CaseContext) -> anyhow::Result<CaseOutput> {
        let (taskdef, specs, rounds) = plan_tasks(case, ctx.data, ctx.registry)?;
        let settings = Settings::read(&case.settings)?;
        let td = case.require("task_definition")?;
        // Tasks are materialised once per job and shared by its cases: permuting or rotating
        // every sample is the same work for every strategy.
        let key = format!(
            "lifelong-tasks:{}:{}:{}:{}:{}:{rounds}",
            td.name,
            serde_json::to_string(&td.hyperparameters)?,
            settings.train_samples_per_task,
            settings.test_samples_per_task,
            settings.revisit_fraction
        );
        let tasks = ctx.cache.get_or_try_insert(&key, || {
            materialise(taskdef.as_ref(), &specs[..rounds], ctx.data, &settings)
        })?;
        let (mut strategy, mut detector, mut allocator) =
            build_modules(case, ctx.data, ctx.registry, &settings)?;
        Flow {
            tasks: &tasks,
            settings: &settings,
            seed: case.seed,
            ctx,
            records: Vec::new(),
        }
        .run(
            strategy.as_mut(),
            detector.as_mut(),
            allocator.as_deref_mut(),
        )
    }
}

type Modules = (
    Box<dyn TaskUpdateDecision>,
    Box<dyn UnseenTaskDetect>,
    Option<Box<dyn TaskAllocation>>,
);

/// The strategy, the detector and, when the knowledge base keeps one model per task and the
/// task is not given at test time, the allocator.
fn build_modules(
    case: &CaseSpec,
    data: &DataSplits,
    registry: &Registry,
    settings: &Settings,
) -> anyhow::Result<Modules> {
    let build = BuildContext {
        input_shape: data.input_shape,
        num_classes: data.num_classes,
        seed: case.seed,
    };
    let strategy_m = case.require("task_update_decision")?;
    let scx = StrategyContext {
        build: build.clone(),
        basemodel: case.require("basemodel")?.clone(),
    };
    let strategy =
        registry.build_task_update_decision(&strategy_m.name, &strategy_m.hyperparameters, &scx)?;
    let det_m = module_or_default(
        case,
        registry,
        "unseen_sample_recognition",
        DEFAULT_DETECTOR,
    )?;
    let detector =
        registry.build_unseen_sample_recognition(&det_m.name, &det_m.hyperparameters, &build)?;
    let allocator = if strategy.per_task_models() && settings.class_incremental() {
        let m = module_or_default(case, registry, "task_allocation", DEFAULT_ALLOCATION)?;
        Some(registry.build_task_allocation(&m.name, &m.hyperparameters, &build)?)
    } else {
        None
    };
    Ok((strategy, detector, allocator))
}

crate::hyperparameters! {
    /// The paradigm's test-environment settings (`ianvs list paradigms`), read once.
    struct Settings {
        incremental_rounds: Option<u64> {
            kind: HpKind::Int { min: 1, max: 10_000 },
            default: serde_json::Value::Null,
            help: "rounds, one new task each; the first N tasks of the task definition arrive (default null: every task)",
        },
        stream_known_fraction: f64 {
            kind: HpKind::Float { min: 0.0, max: 10.0 },
            default: 0.25,
            help: "samples of already-known tasks mixed into each round's edge stream, as a fraction of the new task's samples (what the detector must not flag)",
        },
        revisit_fraction: f64 {
            kind: HpKind::Float { min: 0.0, max: 0.9 },
            default: 0.2,
            help: "share of each task's train samples held back from the round that brings the task; later rounds stream them as samples of a known task, so the detector is judged on samples the knowledge base has not seen",
        },
        train_samples_per_task: usize {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: 0,
            help: "cap on each task's train samples, evenly spaced (0: all)",
        },
        test_samples_per_task: usize {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: 0,
            help: "cap on each task's test samples, evenly spaced (0: all)",
        },
        evaluation_scenario: String {
            kind: HpKind::Choice(SCENARIOS),
            default: "class-incremental",
            help: "class-incremental: predict among all classes; task-incremental: the task is given at test time and predictions are restricted to its classes",
        },
    }
}

impl Settings {
    fn read(s: &Hyperparameters) -> anyhow::Result<Self> {
        Ok(Self::parse(s)?)
    }
    fn class_incremental(&self) -> bool {
        self.evaluation_scenario == "class-incremental"
    }
}

/// The case's module of `module_type`, or the registry's `default` with its default
/// hyperparameters (a `seed` without a default takes the job seed).
fn module_or_default(
    case: &CaseSpec,
    registry: &Registry,
    module_type: &str,
    default: &str,
) -> anyhow::Result<ResolvedModule> {
    if let Some(m) = case.module(module_type) {
        return Ok(m.clone());
    }
    let entry = registry.find(module_type, default).ok_or_else(|| {
        anyhow::anyhow!("no {module_type} module named \"{default}\" is registered")
    })?;
    let mut hps = BTreeMap::new();
    for spec in &entry.hyperparameters {
        let v = match (&spec.default, spec.name) {
            (Some(d), _) => d.clone(),
            (None, "seed") => json!(case.seed),
            (None, name) => anyhow::bail!(
                "default {module_type} module {default} needs the hyperparameter `{name}`"
            ),
        };
        hps.insert(spec.name.to_string(), v);
    }
    Ok(ResolvedModule {
        module_type: module_type.into(),
        name: entry.name.into(),
        hyperparameters: Hyperparameters(hps),
        plugin: None,
    })
}

/// Builds the task definition, lists its tasks and checks them against the data and
/// `incremental_rounds`: every problem that can be found before anything trains.
fn plan_tasks(
    case: &CaseSpec,
    data: &DataSplits,
    registry: &Registry,
) -> anyhow::Result<(Box<dyn TaskDefinition>, Vec<TaskSpec>, usize)> {
    let Some(train) = data.train.as_ref() else {
        anyhow::bail!("lifelong learning needs a train split: give `train_data`/`train_index`, or one `data` file with a `split`");
    };
    let td = case.require("task_definition")?;
    let build = BuildContext {
        input_shape: data.input_shape,
        num_classes: data.num_classes,
        seed: case.seed,
    };
    let what = format!("task definition {}", td.name);
    let taskdef = registry
        .build_task_definition(&td.name, &td.hyperparameters, &build)
        .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
    let specs = taskdef
        .tasks(train, &data.test)
        .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
    if specs.is_empty() {
        anyhow::bail!("{what} defines no tasks");
    }
    let rounds = match Settings::read(&case.settings)?.incremental_rounds {
        Some(r) => r as usize,
        None => specs.len(),
    };
    if rounds > specs.len() {
        anyhow::bail!(
            "`incremental_rounds` is {rounds}, but {what} defines only {} task(s) ({}); each round brings one new task, so lower `incremental_rounds` or define more tasks",
            specs.len(),
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    for (j, s) in specs.iter().take(rounds).enumerate() {
        let empty = match (s.train.is_empty(), s.test.is_empty()) {
            (true, true) => "no train and no test samples",
            (true, false) => "no train samples",
            (false, true) => "no test samples",
            (false, false) => continue,
        };
        let present = train
            .labels
            .iter()
            .chain(&data.test.labels)
            .copied()
            .collect::<BTreeSet<u32>>();
        anyhow::bail!(
            "{what} leaves task {} ({}) with {empty}; the data has classes {}",
            j + 1,
            s.name,
            join(present.iter())
        );
    }
    Ok((taskdef, specs, rounds))
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
}

/// A task with its samples, transformed as the task definition says.
pub struct Task {
    pub name: String,
    pub train: Dataset,
    pub test: Dataset,
    pub classes: Vec<u32>,
    /// Train samples held back from the task's own round, streamed later as known-task samples.
    pub revisit: Vec<usize>,
}

/// `m` indices spread evenly over `idx` (all of them when `m` is 0 or larger): keeps class
/// proportions of label-sorted data.
fn cap(idx: &[usize], m: usize) -> Vec<usize> {
    if m == 0 || m >= idx.len() {
        return idx.to_vec();
    }
    (0..m).map(|k| idx[k * idx.len() / m]).collect()
}

fn materialise(
    def: &dyn TaskDefinition,
    specs: &[TaskSpec],
    data: &DataSplits,
    s: &Settings,
) -> anyhow::Result<Vec<Task>> {
    let train = data
        .train
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("lifelong learning needs a train split"))?;
    let make = |j: usize, src: &Dataset, idx: &[usize]| {
        let mut d = src.subset(idx);
        let dim = d.dim;
        for sample in d.features.chunks_mut(dim.max(1)) {
            def.transform(j, sample);
        }
        d
    };
    Ok(specs
        .iter()
        .enumerate()
        .map(|(j, sp)| {
            let train = make(j, train, &cap(&sp.train, s.train_samples_per_task));
            let n = train.len();
            // At least one sample stays for the task's own round.
            let m = ((n as f64 * s.revisit_fraction).round() as usize).min(n.saturating_sub(1));
            let revisit = if m == 0 {
                Vec::new()
            } else {
                cap(&(0..n).collect::<Vec<_>>(), m)
            };
            Task {
                name: sp.name.clone(),
                train,
                test: make(j, &data.test, &cap(&sp.test, s.test_samples_per_task)),
                classes: sp.classes.clone(),
                revisit,
            }
        })
        .collect())
}

/// One case's rounds.
struct Flow<'a> {
    tasks: &'a [Task],
    settings: &'a Settings,
    seed: u64,
    ctx: &'a CaseContext<'a>,
    records: Vec<LifelongRecord>,
}

/// Bytes of one sample sent up: its features as f32 (labels are added in the cloud).
fn sample_bytes(dim: usize) -> usize {
    dim * std::mem::size_of::<f32>()
}

impl Flow<'_> {
    fn run(
        mut self,
        strategy: &mut dyn TaskUpdateDecision,
        detector: &mut dyn UnseenTaskDetect,
        mut allocator: Option<&mut (dyn TaskAllocation + 'static)>,
    ) -> anyhow::Result<CaseOutput> {
        let rounds = self.tasks.len();
        let dim = self.tasks[0].train.dim;
        let classes = strategy.num_classes();
        self.evaluate(0, strategy, allocator.as_deref())?;
        let mut known: BTreeSet<usize> = BTreeSet::new();
        let mut train_seconds = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            let t = round - 1;
            let work = self.ctx.work();
            work.check_cancelled()?;
            self.ctx
                .progress
                .set_message(format!("round {round}/{rounds}: {}", self.tasks[t].name));
            let (stream, origin) = self.stream(t);
            let truth_unseen: Vec<bool> = origin
                .iter()
                .map(|(task, _)| !known.contains(task))
                .collect();

            // Edge: infer with what it has, then decide what goes up.
            let (predictions, detections) = if known.is_empty() {
                (None, None)
            } else {
                let truth_tasks: Vec<usize> = origin.iter().map(|(task, _)| *task).collect();
                // Task-incremental runs have no allocator: the task is given, as at test time.
                let alloc = match (strategy.per_task_models(), allocator.as_deref()) {
                    (false, _) => None,
                    (true, Some(a)) => Some(a.allocate(&stream.features, dim, &truth_tasks)?),
                    (true, None) => Some(truth_tasks),
                };
                let probs = strategy.predict_proba(&stream.features, alloc.as_deref())?;
                let det = detector.detect(&DetectInput {
                    x: &stream.features,
                    dim,
                    probs: &probs,
                    num_classes: classes,
                    truth: &truth_unseen,
                })?;
                anyhow::ensure!(
                    det.len() == stream.len(),
                    "the unseen-task detector returned {} verdicts for {} samples",
                    det.len(),
                    stream.len()
                );
                let preds: Vec<u32> = probs.chunks(classes).map(|p| argmax(p).0 as u32).collect();
                (Some(preds), Some(det))
            };
            let mut up: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (k, &(task, index)) in origin.iter().enumerate() {
                let d = detections.as_ref().map(|d| d[k]);
                let flagged = d.is_none_or(|d| d.unseen);
                if flagged {
                    up.entry(task).or_default().push(k);
                }
                self.records.push(LifelongRecord::Stream(StreamRecord {
                    round,
                    task,
                    index,
                    label: stream.labels[k],
                    unseen: truth_unseen[k],
                    flagged,
                    score: d.map(|d| d.score),
                    prediction: predictions.as_ref().map(|p| p[k]),
                }));
            }
            let uploaded: usize = up.values().map(Vec::len).sum();

            // Cloud: learn what identifies each task, update the model(s), push them down.
            let groups: Vec<(usize, Dataset)> = up
                .into_iter()
                .map(|(task, ks)| (task, stream.subset(&ks)))
                .collect();
            let mut identity_bytes = 0;
            for (task, samples) in &groups {
                identity_bytes += detector.learn(*task, samples)?;
                if let Some(a) = allocator.as_deref_mut() {
                    identity_bytes += a.learn(*task, samples)?;
                }
                known.insert(*task);
            }
            let batches: Vec<TaskBatch> = groups
                .iter()
                .map(|(task, samples)| TaskBatch {
                    task: *task,
                    samples,
                })
                .collect();
            let report = strategy.update(&batches, &work)?;
            work.check_cancelled()?;
            train_seconds.push(report.train_seconds);
            self.records.push(LifelongRecord::Round(RoundRecord {
                round,
                task: t,
                task_name: self.tasks[t].name.clone(),
                stream_samples: stream.len(),
                inferred: if predictions.is_some() {
                    stream.len()
                } else {
                    0
                },
                uploaded,
                uplink_bytes: uploaded * sample_bytes(dim),
                train_seconds: report.train_seconds,
                trained_samples: report.trained_samples,
                models_sent: report.models_sent,
                downlink_model_bytes: report.model_bytes,
                downlink_identity_bytes: identity_bytes,
            }));
            self.evaluate(round, strategy, allocator.as_deref())?;
        }
        let matrix = AccuracyMatrix::from_records(&self.records)?;
        let mut out = CaseOutput::new(Records::Lifelong(self.records));
        out.artifacts
            .push(("accuracy_matrix.csv".into(), matrix.to_csv().into_bytes()));
        out.measurements.insert("rounds".into(), rounds as f64);
        out.measurements
            .insert("training_time_s".into(), train_seconds.iter().sum());
        out.measurements
            .insert("num_parameters".into(), strategy.num_parameters() as f64);
        Ok(out)
    }

    /// Round `t + 1`'s edge stream: the train samples of task `t` not held back for revisits,
    /// plus `stream_known_fraction` as many drawn from the held-back samples of the tasks before
    /// it (all of them when there are fewer), shuffled. Returns the samples and, for each,
    /// (task, index in the task's train set).
    fn stream(&self, t: usize) -> (Dataset, Vec<(usize, usize)>) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (0x5eed_0000 + t as u64));
        let held: BTreeSet<usize> = self.tasks[t].revisit.iter().copied().collect();
        let mut origin: Vec<(usize, usize)> = (0..self.tasks[t].train.len())
            .filter(|i| !held.contains(i))
            .map(|i| (t, i))
            .collect();
        let mut pool: Vec<(usize, usize)> = (0..t)
            .flat_map(|j| self.tasks[j].revisit.iter().map(move |&i| (j, i)))
            .collect();
        let n_known = ((origin.len() as f64 * self.settings.stream_known_fraction).round()
            as usize)
            .min(pool.len());
        pool.shuffle(&mut rng);
        origin.extend_from_slice(&pool[..n_known]);
        origin.shuffle(&mut rng);
        let dim = self.tasks[t].train.dim;
        let mut d = Dataset {
            dim,
            ..Default::default()
        };
        d.features.reserve(origin.len() * dim);
        for &(j, i) in &origin {
            d.features.extend_from_slice(self.tasks[j].train.x(i));
            d.labels.push(self.tasks[j].train.labels[i]);
        }
        (d, origin)
    }

    /// Evaluates every task's test set with what the edge holds after `round` (0: untrained).
    fn evaluate(
        &mut self,
        round: usize,
        strategy: &dyn TaskUpdateDecision,
        allocator: Option<&dyn TaskAllocation>,
    ) -> anyhow::Result<()> {
        let classes = strategy.num_classes();
        for (j, task) in self.tasks.iter().enumerate() {
            self.ctx.work().check_cancelled()?;
            let x = &task.test.features;
            let n = task.test.len();
            let per_task = strategy.per_task_models();
            // Task-incremental: the task is known at test time, so it picks the task model.
            let alloc: Option<Vec<usize>> = match (round, per_task, allocator) {
                (0, _, _) | (_, false, _) => None,
                (_, true, Some(a)) => Some(a.allocate(x, task.test.dim, &vec![j; n])?),
                (_, true, None) => Some(vec![j; n]),
            };
            let probs = strategy.predict_proba(x, alloc.as_deref())?;
            anyhow::ensure!(
                probs.len() == n * classes,
                "the strategy returned {} probabilities for {n} samples of {classes} classes",
                probs.len()
            );
            for (i, p) in probs.chunks(classes).enumerate() {
                let prediction = if !self.settings.class_incremental() && !task.classes.is_empty() {
                    // The best class among the task's own.
                    task.classes
                        .iter()
                        .copied()
                        .filter(|&c| (c as usize) < classes)
                        .fold((None, f32::NEG_INFINITY), |(b, bv), c| {
                            if p[c as usize] > bv {
                                (Some(c), p[c as usize])
                            } else {
                                (b, bv)
                            }
                        })
                        .0
                        .unwrap_or(0)
                } else {
                    argmax(p).0 as u32
                };
                self.records.push(LifelongRecord::Eval(EvalRecord {
                    after_round: round,
                    task: j,
                    index: i,
                    label: task.test.labels[i],
                    prediction,
                    allocated_task: alloc.as_ref().map(|a| a[i]),
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(after_round: usize, task: usize, ok: bool) -> LifelongRecord {
        LifelongRecord::Eval(EvalRecord {
            after_round,
            task,
            index: 0,
            label: 1,
            prediction: if ok { 1 } else { 0 },
            allocated_task: None,
        })
    }
    fn round(round: usize, task: usize) -> LifelongRecord {
        LifelongRecord::Round(RoundRecord {
            round,
            task,
            task_name: format!("t{task}"),
            stream_samples: 0,
            inferred: 0,
            uploaded: 0,
            uplink_bytes: 0,
            train_seconds: 0.0,
            trained_samples: 0,
            models_sent: 0,
            downlink_model_bytes: 0,
            downlink_identity_bytes: 0,
        })
    }

    #[test]
    fn matrix_from_records_and_csv() {
        // 2 tasks; task 0 cell after round 1: 2 of 2 right; after round 2: 1 of 2.
        let mut recs = vec![round(1, 0), round(2, 1)];
        for (r, t, oks) in [
            (0, 0, [false, false]),
            (0, 1, [true, false]),
            (1, 0, [true, true]),
            (1, 1, [false, false]),
            (2, 0, [true, false]),
            (2, 1, [true, true]),
        ] {
            recs.extend(oks.iter().map(|&ok| eval(r, t, ok)));
        }
        let m = AccuracyMatrix::from_records(&recs).unwrap();
        assert_eq!(m.baseline, vec![0.0, 0.5]);
        assert_eq!(m.r, vec![vec![1.0, 0.0], vec![0.5, 1.0]]);
        assert_eq!(m.to_csv(), "after_round,task 1 (t0),task 2 (t1)\nuntrained,0.0000,0.5000\n1,1.0000,0.0000\n2,0.5000,1.0000\n");
        // A missing cell is an error, not a silent 0.
        recs.retain(|r| !matches!(r, LifelongRecord::Eval(e) if e.after_round == 2 && e.task == 1));
        assert!(AccuracyMatrix::from_records(&recs)
            .unwrap_err()
            .to_string()
            .contains("task 2"));
    }

    #[test]
    fn records_round_trip_tagged() {
        let r = LifelongRecord::Stream(StreamRecord {
            round: 2,
            task: 1,
            index: 7,
            label: 3,
            unseen: true,
            flagged: false,
            score: Some(0.5),
            prediction: Some(1),
        });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.starts_with("{\"record\":\"stream\""), "{s}");
        assert_eq!(serde_json::from_str::<LifelongRecord>(&s).unwrap(), r);
    }

    #[test]
    fn caps_are_even_and_keep_everything_at_zero() {
        assert_eq!(cap(&[0, 1, 2, 3, 4, 5, 6, 7], 4), vec![0, 2, 4, 6]);
        assert_eq!(cap(&[1, 2, 3], 0), vec![1, 2, 3]);
        assert_eq!(cap(&[1, 2, 3], 5), vec![1, 2, 3]);
    }
}
