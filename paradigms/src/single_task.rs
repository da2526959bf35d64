//! Single-task learning: train one base model on the train split, evaluate on the test split,
//! timing each test sample's forward pass on its own.

use std::time::Instant;

use crate::hp::{HpKind, HpSpec, HpStruct};
use crate::modules::BuildContext;
use crate::paradigm::{CaseContext, CaseSpec, ModuleSlot, Paradigm};
use crate::records::{CaseOutput, ClassificationRecord, RecordKind, Records};

crate::hyperparameters! {
    /// The paradigm's test-environment settings (`ianvs list paradigms`).
    struct Settings {
        warmup_samples: usize {
            kind: HpKind::Int { min: 0, max: 1_000_000 },
            default: 10,
            help: "test samples at the start whose latency is recorded but left out of latency metrics",
        },
    }
}

pub struct SingleTaskLearning;

/// Test samples per `predict` call for models that prefer batches (plug-ins).
pub const PLUGIN_BATCH: usize = 1024;

const SLOTS: &[ModuleSlot] = &[ModuleSlot {
    module_type: "basemodel",
    required: true,
    help: "the model to train and evaluate",
}];

impl Paradigm for SingleTaskLearning {
    fn name(&self) -> &'static str {
        "singletasklearning"
    }
    fn summary(&self) -> &'static str {
        "train one base model on the train split, evaluate it on the test split"
    }
    fn slots(&self) -> &'static [ModuleSlot] {
        SLOTS
    }
    fn settings(&self) -> Vec<HpSpec> {
        Settings::specs()
    }
    fn record_kind(&self) -> RecordKind {
        RecordKind::Classification
    }

    fn preflight(
        &self,
        case: &CaseSpec,
        data: &crate::DataSplits,
        _registry: &crate::registry::Registry,
    ) -> anyhow::Result<()> {
        let module = case.require("basemodel")?;
        if module.plugin.is_some() {
            return Ok(());
        }
        for (split, d) in [
            ("train", data.train.as_deref()),
            ("test", Some(&*data.test)),
        ] {
            if let Some(why) = d.and_then(|d| d.undecoded()) {
                anyhow::bail!("{}", numeric_only(module, split, &why));
            }
        }
        Ok(())
    }

    fn run(&self, case: &CaseSpec, ctx: &CaseContext) -> anyhow::Result<CaseOutput> {
        let module = case.require("basemodel")?;
        let train = ctx.data.train.as_ref().ok_or_else(|| {
            anyhow::anyhow!("single-task learning needs a train split in the test environment")
        })?;
        let build = BuildContext {
            input_shape: ctx.data.input_shape,
            num_classes: ctx.data.num_classes,
            seed: case.seed,
        };
        let mut model = ctx.registry.module_model(module, &build)?;

        if !model.takes_samples() {
            if let Some(why) = train.undecoded() {
                anyhow::bail!("{}", numeric_only(module, "train", &why));
            }
        }
        let report = model.train(train, &ctx.work())?;

        let test = &ctx.data.test;
        let warmup = Settings::parse(&case.settings)?.warmup_samples;
        ctx.progress.set_length(test.len() as u64);
        ctx.progress.set_position(0);
        ctx.progress.set_message("evaluating");
        let mut records = Vec::with_capacity(test.len());
        // Index-file samples go to a model that takes them as Ianvs passes them (paths);
        // built-in models read the decoded numbers (preflight refused undecoded data for them).
        let samples = test.index.as_ref().filter(|_| model.takes_samples());
        if samples.is_none() {
            if let Some(why) = test.undecoded() {
                anyhow::bail!("{}", numeric_only(module, "test", &why));
            }
        }
        if model.prefers_batches() || samples.is_some() {
            // An out-of-process plug-in: one round trip per batch (Ianvs passes the whole test
            // split to `predict`), each sample recorded with its share of the batch's time.
            let train_stats = model.plugin_stats().unwrap_or_default();
            for start in (0..test.len()).step_by(PLUGIN_BATCH) {
                ctx.work().check_cancelled()?;
                let end = (start + PLUGIN_BATCH).min(test.len());
                let t0 = Instant::now();
                let probs = match samples {
                    Some(s) => model.predict_samples(&s.x[start..end])?,
                    None => {
                        model.predict_proba(&test.features[start * test.dim..end * test.dim])?
                    }
                };
                let share = t0.elapsed().as_secs_f64() / (end - start) as f64;
                let k = probs.len() / (end - start).max(1);
                for (j, i) in (start..end).enumerate() {
                    let (prediction, confidence) = argmax(&probs[j * k..(j + 1) * k]);
                    records.push(ClassificationRecord {
                        index: i,
                        label: test.labels[i],
                        prediction: prediction as u32,
                        confidence,
                        latency_s: share,
                        warmup: false,
                    });
                }
                ctx.progress.inc((end - start) as u64);
            }
            let mut out = CaseOutput::new(Records::Classification(records));
            out.sample_labels = test
                .index
                .as_ref()
                .map(|s| std::sync::Arc::new(s.y.clone()));
            let m = &mut out.measurements;
            m.insert("training_time_s".into(), report.seconds);
            m.insert("num_parameters".into(), model.num_parameters() as f64);
            // A plug-in that reports no loss has none (a NaN would not survive metrics.json).
            if report.final_loss.is_finite() {
                m.insert("final_train_loss".into(), report.final_loss);
            }
            m.insert(
                "predict_batch_size".into(),
                PLUGIN_BATCH.min(test.len()) as f64,
            );
            if let Some(s) = model.plugin_stats() {
                s.record("", m);
                let predict = crate::modules::PluginStats {
                    calls: s.calls - train_stats.calls,
                    compute_s: s.compute_s - train_stats.compute_s,
                    wall_s: s.wall_s - train_stats.wall_s,
                };
                predict.record("predict_", m);
            }
            return Ok(out);
        }
        for i in 0..test.len() {
            if i % 64 == 0 {
                ctx.work().check_cancelled()?;
            }
            // One sample per forward pass so the latency is a per-sample figure; the model
            // returns host memory, which syncs any device before the clock is read.
            let t0 = Instant::now();
            let probs = model.predict_proba(test.x(i))?;
            let latency_s = t0.elapsed().as_secs_f64();
            let (prediction, confidence) = argmax(&probs);
            records.push(ClassificationRecord {
                index: i,
                label: test.labels[i],
                prediction: prediction as u32,
                confidence,
                latency_s,
                warmup: i < warmup,
            });
            ctx.progress.inc(1);
        }
        let mut out = CaseOutput::new(Records::Classification(records));
        out.sample_labels = test
            .index
            .as_ref()
            .map(|s| std::sync::Arc::new(s.y.clone()));
        out.measurements
            .insert("training_time_s".into(), report.seconds);
        out.measurements
            .insert("num_parameters".into(), model.num_parameters() as f64);
        out.measurements
            .insert("final_train_loss".into(), report.final_loss);
        Ok(out)
    }
}

/// The error for a built-in module given index-file samples ianvs did not decode.
fn numeric_only(module: &crate::ResolvedModule, split: &str, why: &str) -> String {
    format!(
        "{} \"{}\" is built in and reads numeric features, but the {split} split's index-file samples are not numbers ianvs can decode ({why}); such samples (paths, as Ianvs passes them) are taken by plug-in modules only (a module with `url:`, docs/plugins.md), and built-in modules take index files whose samples are PGM images or numeric text",
        module.module_type, module.name
    )
}

/// Index and value of the largest probability (lowest index on ties).
pub fn argmax(p: &[f32]) -> (usize, f32) {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
}
