//! Lifelong-learning strategies (module type `task_update_decision`): how the cloud's knowledge
//! base turns each round's uploaded samples into the model(s) it pushes to the edge.
//!
//! - `FineTune`: keep training one model on whatever arrives (the lower bound; catastrophic
//!   forgetting, McCloskey & Cohen 1989).
//! - `Replay`: experience replay from a fixed-size reservoir buffer (Chaudhry et al. 2019, "On
//!   Tiny Episodic Memories in Continual Learning").
//! - `EWC`: elastic weight consolidation, a quadratic penalty per earlier round with its own
//!   anchor and Fisher diagonal (Kirkpatrick et al. 2017), folded into one quadratic with the
//!   same gradient.
//! - `PerTaskModels`: one model per task, chosen on the edge by task allocation (Sedna's
//!   multi-task knowledge base).
//! - `Joint`: train on every sample seen so far, each round (the upper bound).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::{HpKind, HpStruct, NoHyperparameters};
use ianvs_paradigms::lifelong::{StrategyContext, TaskBatch, TaskUpdateDecision, UpdateReport};
use ianvs_paradigms::modules::WorkContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::basemodels::{CnnHps, MlpHps};
use crate::classifiers::{ewc_penalty, Architecture, Classifier, Penalty, TrainConfig};

/// How to build and train the models of a strategy, from the algorithm's `basemodel`.
#[derive(Clone)]
struct Recipe {
    arch: Architecture,
    input_shape: (usize, usize, usize),
    num_classes: usize,
    train: TrainConfig,
}

impl Recipe {
    fn of(ctx: &StrategyContext) -> anyhow::Result<Self> {
        let m = &ctx.basemodel;
        let h = &m.hyperparameters;
        // The same architectures the `basemodel` modules build; lifelong strategies need the
        // classifier itself (snapshots, Fisher information), not the opaque module.
        let (arch, training) = if m.name.eq_ignore_ascii_case("MLP") {
            let hps = MlpHps::parse(h)?;
            (hps.architecture(), hps.training)
        } else if m.name.eq_ignore_ascii_case("CNN") {
            let hps = CnnHps::parse(h)?;
            (hps.architecture(), hps.training)
        } else {
            anyhow::bail!("lifelong-learning strategies train MLP or CNN base models; basemodel \"{}\" is not supported", m.name);
        };
        let r = Self {
            arch,
            input_shape: ctx.build.input_shape,
            num_classes: ctx.build.num_classes,
            train: training.config(),
        };
        r.fresh()?; // reports a bad architecture (a CNN on tiny inputs) now, not mid-run
        Ok(r)
    }

    /// A model with the base model's seeded initial weights (the same for every strategy, so
    /// the untrained accuracy `b` is shared).
    fn fresh(&self) -> anyhow::Result<Classifier> {
        Ok(Classifier::new(
            self.arch.clone(),
            self.input_shape,
            self.num_classes,
            self.train.seed,
            &Device::Cpu,
        )?)
    }

    /// Trains `model` on `data` for the base model's epochs, with an optional extra loss term.
    /// `round` varies the shuffling seed from round to round. Returns the seconds it took.
    fn fit(
        &self,
        model: &mut Classifier,
        data: &Dataset,
        round: u64,
        penalty: Option<&mut Penalty<'_>>,
        work: &WorkContext,
    ) -> anyhow::Result<f64> {
        let cfg = TrainConfig {
            seed: self.train.seed ^ round.wrapping_mul(0x9e37_79b9),
            ..self.train.clone()
        };
        let n = data.len() as u64;
        let pb = work.progress;
        pb.set_length(n * cfg.epochs as u64);
        pb.set_position(0);
        let epoch = std::cell::Cell::new(0u64);
        let mut on_batch = |done: usize, _: usize| {
            pb.set_position(epoch.get() * n + done as u64);
            !work.cancel.load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut on_epoch = |e: &crate::classifiers::EpochStats| epoch.set(e.epoch as u64);
        let stats = match penalty {
            Some(p) => model.train_with_penalty(
                &data.features,
                &data.labels,
                &cfg,
                p,
                &mut on_batch,
                &mut on_epoch,
            ),
            None => model.train(
                &data.features,
                &data.labels,
                &cfg,
                &mut on_batch,
                &mut on_epoch,
            ),
        };
        work.check_cancelled()?;
        Ok(stats?.seconds)
    }
}

/// A data set of `dim`-sized samples with none in it yet.
fn empty(dim: usize) -> Dataset {
    Dataset {
        dim,
        ..Default::default()
    }
}

/// All samples of `parts`, in order.
fn concat<'a>(dim: usize, parts: impl IntoIterator<Item = &'a Dataset>) -> Dataset {
    let mut d = empty(dim);
    for p in parts {
        d.features.extend_from_slice(&p.features);
        d.labels.extend_from_slice(&p.labels);
    }
    d
}

fn input_dim(r: &Recipe) -> usize {
    let (c, h, w) = r.input_shape;
    c * h * w
}

/// What every strategy with one model keeps: how to train it, the model the edge gets, and the
/// rounds so far.
struct Learner {
    recipe: Recipe,
    model: Classifier,
    rounds: u64,
}

impl Learner {
    fn of(ctx: &StrategyContext) -> anyhow::Result<Self> {
        let recipe = Recipe::of(ctx)?;
        Ok(Self {
            model: recipe.fresh()?,
            recipe,
            rounds: 0,
        })
    }

    /// A data set of the model's input size with no samples yet.
    fn no_data(&self) -> Dataset {
        empty(input_dim(&self.recipe))
    }

    /// Counts a new round and gathers its uploaded samples, in order; `None` when none came
    /// (the round then reports nothing).
    fn begin(&mut self, batches: &[TaskBatch]) -> Option<Dataset> {
        self.rounds += 1;
        let new = concat(input_dim(&self.recipe), batches.iter().map(|b| b.samples));
        (!new.is_empty()).then_some(new)
    }

    /// Trains the model on `data` for this round (see [`Recipe::fit`]).
    fn fit(
        &mut self,
        data: &Dataset,
        penalty: Option<&mut Penalty<'_>>,
        work: &WorkContext,
    ) -> anyhow::Result<f64> {
        self.recipe
            .fit(&mut self.model, data, self.rounds, penalty, work)
    }

    /// The round's report: the one model is sent down.
    fn report(&self, train_seconds: f64, trained_samples: usize) -> UpdateReport {
        UpdateReport {
            train_seconds,
            trained_samples,
            model_bytes: self.model.parameter_bytes(),
            models_sent: 1,
        }
    }
}

/// Implements [`TaskUpdateDecision`] for a strategy with one model, `self.learner`'s, whose
/// inherent `train(&mut self, new: Dataset, work: &WorkContext)` takes each round's new samples
/// (a round with none reports nothing).
macro_rules! one_model_strategy {
    ($strategy:ty) => {
        impl TaskUpdateDecision for $strategy {
            fn update(
                &mut self,
                batches: &[TaskBatch],
                work: &WorkContext,
            ) -> anyhow::Result<UpdateReport> {
                match self.learner.begin(batches) {
                    Some(new) => self.train(new, work),
                    None => Ok(UpdateReport::default()),
                }
            }
            fn per_task_models(&self) -> bool {
                false
            }
            fn predict_proba(&self, x: &[f32], _: Option<&[usize]>) -> anyhow::Result<Vec<f32>> {
                Ok(self.learner.model.predict_proba(x)?)
            }
            fn num_classes(&self) -> usize {
                self.learner.recipe.num_classes
            }
            fn num_parameters(&self) -> usize {
                self.learner.model.num_parameters()
            }
        }
    };
}

// ---- FineTune -------------------------------------------------------------------------------

pub struct FineTune {
    learner: Learner,
}

pub fn build_finetune(
    _: NoHyperparameters,
    ctx: &StrategyContext,
) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
    Ok(Box::new(FineTune {
        learner: Learner::of(ctx)?,
    }))
}

one_model_strategy!(FineTune);

impl FineTune {
    fn train(&mut self, data: Dataset, work: &WorkContext) -> anyhow::Result<UpdateReport> {
        let secs = self.learner.fit(&data, None, work)?;
        Ok(self.learner.report(secs, data.len()))
    }
}

// ---- Replay ---------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Replay`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct ReplayHps {
        pub buffer_size: usize {
            kind: HpKind::Int { min: 1, max: 10_000_000 },
            default: 500,
            help: "samples kept for replay (reservoir sampling over every sample seen)",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds the reservoir (default: the job seed)",
        },
    }
}

pub struct Replay {
    learner: Learner,
    buffer: Dataset,
    capacity: usize,
    /// Samples offered to the reservoir so far.
    seen: usize,
    rng: ChaCha8Rng,
}

pub fn build_replay(
    hps: ReplayHps,
    ctx: &StrategyContext,
) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
    let learner = Learner::of(ctx)?;
    Ok(Box::new(Replay {
        buffer: learner.no_data(),
        learner,
        capacity: hps.buffer_size,
        seen: 0,
        rng: ChaCha8Rng::seed_from_u64(hps.seed),
    }))
}

one_model_strategy!(Replay);

impl Replay {
    /// Reservoir sampling (Vitter's algorithm R): after `seen` samples every one of them is in
    /// the buffer with the same probability `capacity / seen`.
    fn remember(&mut self, data: &Dataset) {
        let dim = data.dim;
        for i in 0..data.len() {
            self.seen += 1;
            if self.buffer.len() < self.capacity {
                self.buffer.features.extend_from_slice(data.x(i));
                self.buffer.labels.push(data.labels[i]);
            } else {
                let j = self.rng.random_range(0..self.seen);
                if j < self.capacity {
                    self.buffer.features[j * dim..(j + 1) * dim].copy_from_slice(data.x(i));
                    self.buffer.labels[j] = data.labels[i];
                }
            }
        }
    }

    fn train(&mut self, new: Dataset, work: &WorkContext) -> anyhow::Result<UpdateReport> {
        let data = concat(new.dim, [&new, &self.buffer]);
        let secs = self.learner.fit(&data, None, work)?;
        self.remember(&new);
        Ok(self.learner.report(secs, data.len()))
    }
}

// ---- EWC ------------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `EWC`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct EwcHps {
        pub lambda: f64 {
            kind: HpKind::Float { min: 0.0, max: 1e12 },
            default: 1000.0,
            help: "strength λ of the penalty λ/2 · Σ F·(θ − θ*)² on moving parameters important to earlier rounds",
        },
        pub fisher_samples: usize {
            kind: HpKind::Int { min: 1, max: 1_000_000 },
            default: 200,
            help: "samples of each round used to estimate the Fisher diagonal",
        },
    }
}

type Params = Vec<(String, Tensor)>;

pub struct Ewc {
    learner: Learner,
    lambda: f64,
    fisher_samples: usize,
    /// The penalties of every earlier round folded into one: (anchor θ̄, Fisher sum F).
    consolidated: Option<(Params, Params)>,
}

pub fn build_ewc(
    hps: EwcHps,
    ctx: &StrategyContext,
) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
    Ok(Box::new(Ewc {
        learner: Learner::of(ctx)?,
        lambda: hps.lambda,
        fisher_samples: hps.fisher_samples,
        consolidated: None,
    }))
}

one_model_strategy!(Ewc);

impl Ewc {
    fn train(&mut self, data: Dataset, work: &WorkContext) -> anyhow::Result<UpdateReport> {
        let secs = match &self.consolidated {
            Some((anchor, fisher)) if self.lambda > 0.0 => {
                let lambda = self.lambda;
                let mut penalty =
                    |vars: &[(String, Tensor)]| ewc_penalty(vars, anchor, fisher, lambda);
                self.learner.fit(&data, Some(&mut penalty), work)?
            }
            _ => self.learner.fit(&data, None, work)?,
        };
        // The parameters that matter for this round's data, to be held in place from now on.
        let t0 = std::time::Instant::now();
        let model = &self.learner.model;
        let fisher = model.fisher_diagonal(&data.features, &data.labels, self.fisher_samples)?;
        let theta = model.snapshot()?;
        self.consolidated = Some(match self.consolidated.take() {
            None => (theta, fisher),
            Some((anchor, sum)) => consolidate(&anchor, &sum, &theta, &fisher)?,
        });
        let secs = secs + t0.elapsed().as_secs_f64();
        Ok(self.learner.report(secs, data.len()))
    }
}

/// Folds a new penalty `F_new·(θ − θ_new)²` into `F·(θ − θ̄)²`: since
/// `Σ_k F_k (θ − θ*_k)² = (Σ_k F_k)(θ − θ̄)² + const` with `θ̄ = Σ_k F_k θ*_k / Σ_k F_k`
/// (elementwise), one quadratic has exactly the gradient of one penalty per earlier round
/// (Kirkpatrick et al. 2017), and a training step costs the same however many rounds came before.
fn consolidate(
    anchor: &Params,
    sum: &Params,
    theta: &Params,
    fisher: &Params,
) -> anyhow::Result<(Params, Params)> {
    let find = |set: &Params, name: &str| {
        set.iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| anyhow::anyhow!("EWC: parameter `{name}` is missing"))
    };
    let mut new_anchor = Vec::with_capacity(anchor.len());
    let mut new_sum = Vec::with_capacity(sum.len());
    for (name, a) in anchor {
        let (f, t, fnew) = (find(sum, name)?, find(theta, name)?, find(fisher, name)?);
        let total = (&f + &fnew)?;
        // Where no round found the parameter important (F = 0) its anchor has no weight.
        let weighted = ((&f * a)? + (&fnew * &t)?)?;
        new_anchor.push((
            name.clone(),
            weighted.div(&total.clamp(1e-30f32, f32::MAX)?)?,
        ));
        new_sum.push((name.clone(), total));
    }
    Ok((new_anchor, new_sum))
}

// ---- Joint ----------------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Joint`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct JointHps {
        pub from_scratch: bool {
            kind: HpKind::Bool,
            default: false,
            help: "retrain from the initial weights each round (false: keep training the current model, on everything seen so far)",
        },
    }
}

pub struct Joint {
    learner: Learner,
    all: Dataset,
    from_scratch: bool,
}

pub fn build_joint(
    hps: JointHps,
    ctx: &StrategyContext,
) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
    let learner = Learner::of(ctx)?;
    Ok(Box::new(Joint {
        all: learner.no_data(),
        learner,
        from_scratch: hps.from_scratch,
    }))
}

one_model_strategy!(Joint);

impl Joint {
    fn train(&mut self, new: Dataset, work: &WorkContext) -> anyhow::Result<UpdateReport> {
        self.all = concat(self.all.dim, [&self.all, &new]);
        if self.from_scratch {
            self.learner.model = self.learner.recipe.fresh()?;
        }
        let secs = self.learner.fit(&self.all, None, work)?;
        Ok(self.learner.report(secs, self.all.len()))
    }
}

// ---- PerTaskModels --------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `PerTaskModels`' hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct PerTaskHps {
        pub min_update_samples: usize {
            kind: HpKind::Int { min: 1, max: 1_000_000_000 },
            default: 50,
            help: "a known task's model is retrained only when at least this many new samples of it arrive in a round",
        },
    }
}

pub struct PerTaskModels {
    recipe: Recipe,
    /// The untrained model: what the edge has for a task without a model.
    initial: Classifier,
    models: BTreeMap<usize, Classifier>,
    /// Every sample of each task the cloud received.
    data: BTreeMap<usize, Dataset>,
    min_update: usize,
    rounds: u64,
}

pub fn build_per_task(
    hps: PerTaskHps,
    ctx: &StrategyContext,
) -> anyhow::Result<Box<dyn TaskUpdateDecision>> {
    let recipe = Recipe::of(ctx)?;
    Ok(Box::new(PerTaskModels {
        initial: recipe.fresh()?,
        recipe,
        models: BTreeMap::new(),
        data: BTreeMap::new(),
        min_update: hps.min_update_samples,
        rounds: 0,
    }))
}

impl TaskUpdateDecision for PerTaskModels {
    fn update(
        &mut self,
        batches: &[TaskBatch],
        work: &WorkContext,
    ) -> anyhow::Result<UpdateReport> {
        self.rounds += 1;
        let mut report = UpdateReport::default();
        for b in batches {
            let dim = b.samples.dim;
            let stored = self.data.entry(b.task).or_insert_with(|| empty(dim));
            stored.features.extend_from_slice(&b.samples.features);
            stored.labels.extend_from_slice(&b.samples.labels);
            // The task update decision: a new task gets a model; a known one is retrained on
            // all its samples only when enough new ones came up to be worth a download.
            let is_new = !self.models.contains_key(&b.task);
            if !is_new && b.samples.len() < self.min_update {
                continue;
            }
            if is_new {
                self.models.insert(b.task, self.recipe.fresh()?);
            }
            let Some(model) = self.models.get_mut(&b.task) else {
                continue;
            };
            report.train_seconds += self.recipe.fit(model, stored, self.rounds, None, work)?;
            report.trained_samples += stored.len();
            report.model_bytes += model.parameter_bytes();
            report.models_sent += 1;
        }
        Ok(report)
    }
    fn per_task_models(&self) -> bool {
        true
    }
    fn predict_proba(&self, x: &[f32], tasks: Option<&[usize]>) -> anyhow::Result<Vec<f32>> {
        let Some(tasks) = tasks else {
            return Ok(self.initial.predict_proba(x)?);
        };
        let dim = input_dim(&self.recipe);
        let k = self.recipe.num_classes;
        anyhow::ensure!(
            x.len() == tasks.len() * dim,
            "{} task allocations for {} samples",
            tasks.len(),
            x.len() / dim.max(1)
        );
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, &t) in tasks.iter().enumerate() {
            groups.entry(t).or_default().push(i);
        }
        let mut out = vec![0f32; tasks.len() * k];
        for (t, idx) in groups {
            let model = self.models.get(&t).unwrap_or(&self.initial);
            let xs: Vec<f32> = idx
                .iter()
                .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let p = model.predict_proba(&xs)?;
            for (row, &i) in p.chunks(k).zip(&idx) {
                out[i * k..(i + 1) * k].copy_from_slice(row);
            }
        }
        Ok(out)
    }
    fn num_classes(&self) -> usize {
        self.recipe.num_classes
    }
    fn num_parameters(&self) -> usize {
        if self.models.is_empty() {
            self.initial.num_parameters()
        } else {
            self.models.values().map(Classifier::num_parameters).sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reservoir_keeps_capacity_and_an_even_share() {
        let ctx = StrategyContext {
            build: ianvs_paradigms::modules::BuildContext { input_shape: (1, 1, 1), num_classes: 2, seed: 0 },
            basemodel: ianvs_paradigms::ResolvedModule {
                module_type: "basemodel".into(),
                name: "MLP".into(),
                hyperparameters: serde_json::from_value(json!({"hidden_sizes": [], "epochs": 1, "learning_rate": 0.01, "batch_size": 8, "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "seed": 0})).unwrap(),
                plugin: None,
            },
        };
        let mut r = Replay {
            learner: Learner::of(&ctx).unwrap(),
            buffer: empty(1),
            capacity: 100,
            seen: 0,
            rng: ChaCha8Rng::seed_from_u64(1),
        };
        // Two "tasks" of 1000 samples each, features = task id.
        for t in 0..2u32 {
            r.remember(&Dataset {
                dim: 1,
                features: vec![t as f32; 1000],
                labels: vec![t; 1000],
                ..Default::default()
            });
        }
        assert_eq!(r.buffer.len(), 100);
        let second = r.buffer.labels.iter().filter(|&&l| l == 1).count();
        // Each sample is kept with probability 100/2000: about half the buffer is task 2.
        assert!((35..=65).contains(&second), "{second}");
    }

    #[test]
    fn consolidated_penalty_differs_from_the_sum_by_a_constant() {
        let dev = Device::Cpu;
        let p = |v: &[f32]| -> Params {
            vec![(
                "w".to_string(),
                Tensor::from_slice(v, v.len(), &dev).unwrap(),
            )]
        };
        let (a1, f1) = (p(&[1.0, -2.0, 0.5]), p(&[0.5, 0.0, 2.0]));
        let (a2, f2) = (p(&[0.0, 3.0, 1.5]), p(&[1.5, 0.0, 1.0]));
        let (anchor, sum) = consolidate(&a1, &f1, &a2, &f2).unwrap();
        let value = |t: Tensor| f64::from(t.to_scalar::<f32>().unwrap());
        let both = |theta: &Params| {
            value(ewc_penalty(theta, &a1, &f1, 2.0).unwrap())
                + value(ewc_penalty(theta, &a2, &f2, 2.0).unwrap())
        };
        let one = |theta: &Params| value(ewc_penalty(theta, &anchor, &sum, 2.0).unwrap());
        let (x, y) = (p(&[0.3, 7.0, -1.0]), p(&[-2.0, 1.0, 4.0]));
        // Same objective up to a constant, hence the same gradient everywhere.
        assert!(
            ((both(&x) - both(&y)) - (one(&x) - one(&y))).abs() < 1e-4,
            "{} {}",
            both(&x) - both(&y),
            one(&x) - one(&y)
        );
        // A parameter no round found important keeps zero weight.
        assert_eq!(sum[0].1.to_vec1::<f32>().unwrap()[1], 0.0);
    }
}
