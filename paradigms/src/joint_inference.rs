//! Joint inference (Sedna / KubeEdge-Ianvs `jointinference`): a small model on the edge, a
//! large model in the cloud, and a hard-example miner that decides which samples cross the
//! emulated link to the cloud.
//!
//! Two modes, as in Ianvs (`hard_example_mining_mode` in the test environment):
//! - `inference-then-mining`: the edge model answers every sample; the miner looks at its
//!   output (and the input) and marks hard samples, which are sent to the cloud, whose answer
//!   replaces the edge's.
//! - `mining-then-inference`: the miner (a router) decides from the input alone before any model
//!   runs; only the chosen model runs. Miners that read the edge's output cannot work here and
//!   are rejected before anything runs.
//!
//! The edge and cloud models are trained once per job on the train split (shared through the
//! [`JobCache`](crate::JobCache), keyed by the module's resolved hyperparameters), or loaded
//! ready-made (ONNX). Every sample is timed part by part: edge forward, mining, payload
//! encode/decode, uplink, cloud forward, downlink. Forward passes return host memory, which
//! syncs the device before the clock is read. Before the measured loop each model runs
//! `warmup_samples` forward passes that are not recorded, so no record pays a cold start.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::Dataset;
use crate::hp::{HpKind, HpSpec};
use crate::link::{
    decode_answer, encode_answer, Exchange, Hop, InputCodec, Link, LinkSpec, Timing,
};
use crate::modules::{BaseModel, BuildContext, TrainReport};
use crate::net::{CloudClient, Miss, OnFailure, RealLink, RealLinkSpec};
use crate::paradigm::{CaseContext, CaseSpec, DataSplits, ModuleSlot, Paradigm, ResolvedModule};
use crate::records::{CaseOutput, ClassificationRecord, RecordKind, Records};
use crate::registry::Registry;
use crate::single_task::argmax;
use crate::wire::SetupHeader;

/// What a hard-example miner needs to see to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MinerNeeds {
    /// The input sample only: works in both modes.
    Input,
    /// The edge model's class probabilities: `inference-then-mining` only.
    EdgeOutput,
    /// The ground truth and both models' predictions (the Oracle upper bound). The paradigm
    /// computes them off the clock; they cost no time and no bytes.
    Oracle,
}

/// What the oracle knows about one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OracleView {
    pub label: u32,
    pub edge_prediction: u32,
    pub cloud_prediction: u32,
}

/// Everything a miner may look at for one sample.
#[derive(Debug, Clone, Copy)]
pub struct MiningQuery<'a> {
    /// Index of the sample in the (processed) test split.
    pub index: usize,
    pub input: &'a [f32],
    /// The edge model's probabilities (`inference-then-mining`).
    pub edge_probs: Option<&'a [f32]>,
    /// Only for miners whose [`HardExampleMiner::needs`] is [`MinerNeeds::Oracle`].
    pub oracle: Option<OracleView>,
}

/// Decides which samples are hard, i.e. go to the cloud (module type `hard_example_mining`).
/// A fresh miner is built for every test case, so stateful miners (a seeded random stream) are
/// reproducible.
pub trait HardExampleMiner: Send {
    fn needs(&self) -> MinerNeeds;
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool>;
    /// For an out-of-process plug-in miner: its own compute and the protocol overhead.
    fn plugin_stats(&self) -> Option<crate::modules::PluginStats> {
        None
    }
    /// Called once before the measured loop: a plug-in miner starts its process here, so no
    /// sample's mining time includes the start-up.
    fn prepare(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Transforms the test split before inference (module type `dataset_processor`).
pub trait DatasetProcessor: Send + Sync {
    fn process(&self, data: &Dataset) -> anyhow::Result<Dataset>;
}

/// Which model gave the final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Edge,
    Cloud,
}

/// One test sample of joint inference. Times are seconds; a part that did not happen is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointInferenceRecord {
    /// Index of the sample in the (processed) test split.
    pub index: usize,
    pub label: u32,
    /// The final answer and its probability.
    pub prediction: u32,
    pub confidence: f32,
    pub route: Route,
    /// Set when the edge model ran on this sample in the flow.
    pub edge_prediction: Option<u32>,
    pub edge_confidence: Option<f32>,
    /// Set when the sample went to the cloud.
    pub cloud_prediction: Option<u32>,
    pub cloud_confidence: Option<f32>,
    /// Edge forward pass.
    pub edge_s: f64,
    /// The miner's decision.
    pub mining_s: f64,
    /// Encoding and decoding the uplink and downlink payloads.
    pub codec_s: f64,
    /// Edge → cloud: half the exchange's RTT plus transmission (slept and measured in `sleep` timing).
    pub uplink_s: f64,
    /// Cloud forward pass.
    pub cloud_s: f64,
    /// Cloud → edge: half the RTT plus transmission.
    pub downlink_s: f64,
    /// End to end: the sum of the parts in `virtual` timing, the measured wall time in `sleep`.
    pub latency_s: f64,
    pub uplink_bytes: usize,
    pub downlink_bytes: usize,
    /// Real link (`Tcp`) only: measured network + queueing time of the exchange, both
    /// directions (request sent → response received, minus the worker's compute time).
    #[serde(default)]
    pub network_s: f64,
    /// The sample was meant for the cloud, which missed the deadline or was unreachable: the
    /// edge answered instead (`on_cloud_failure: fallback`).
    #[serde(default)]
    pub fallback: bool,
}

impl JointInferenceRecord {
    /// The classification view shared with other classifying paradigms (accuracy, F1, latency).
    pub fn as_classification(&self) -> ClassificationRecord {
        ClassificationRecord {
            index: self.index,
            label: self.label,
            prediction: self.prediction,
            confidence: self.confidence,
            latency_s: self.latency_s,
            warmup: false,
        }
    }
}

/// `hard_example_mining_mode` values.
pub const MODES: &[&str] = &["inference-then-mining", "mining-then-inference"];

/// The order of mining and inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The edge answers every sample; the miner reads its output; hard samples go to the cloud.
    InferenceThenMining,
    /// The miner routes each sample from its input; only the chosen model runs.
    MiningThenInference,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inference-then-mining" => Some(Mode::InferenceThenMining),
            "mining-then-inference" => Some(Mode::MiningThenInference),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        MODES[self as usize]
    }
}

const SLOTS: &[ModuleSlot] = &[
    ModuleSlot { module_type: "edgemodel", required: true, help: "the small model on the edge device (MLP, CNN or ONNX)" },
    ModuleSlot { module_type: "cloudmodel", required: true, help: "the large model in the cloud (MLP, CNN or ONNX)" },
    ModuleSlot { module_type: "hard_example_mining", required: true, help: "decides which samples go to the cloud" },
    ModuleSlot { module_type: "link", required: false, help: "the emulated edge-cloud network (default: Emulated with its defaults, a 1 ms, 100 Mbit/s LAN)" },
    ModuleSlot { module_type: "dataset_processor", required: false, help: "transforms the test split before inference" },
];

pub struct JointInference;

/// Everything of a case except the models, built and checked before anything runs.
struct Plan {
    mode: Mode,
    /// Index-file samples go to the (plug-in) edge and cloud models as paths.
    paths: bool,
    warmup: usize,
    codec: InputCodec,
    link: LinkSpec,
    /// Set when the link module is `Tcp`: the cloud model runs in an `ianvs serve` worker.
    real: Option<RealLinkSpec>,
    miner: Box<dyn HardExampleMiner>,
    processor: Option<Box<dyn DatasetProcessor>>,
}

fn build_context(case: &CaseSpec, data: &DataSplits) -> BuildContext {
    BuildContext {
        input_shape: data.input_shape,
        num_classes: data.num_classes,
        seed: case.seed,
    }
}

fn plan(case: &CaseSpec, data: &DataSplits, registry: &Registry) -> anyhow::Result<Plan> {
    let ctx = build_context(case, data);
    let mode_name = case.settings.str("hard_example_mining_mode")?;
    let mode = Mode::parse(mode_name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown hard_example_mining_mode \"{mode_name}\"; expected one of {}",
            MODES.join(", ")
        )
    })?;
    let codec_name = case.settings.str("uplink_codec")?;
    let codec = InputCodec::parse(codec_name)
        .ok_or_else(|| anyhow::anyhow!("unknown uplink_codec \"{codec_name}\""))?;
    let m = case.require("hard_example_mining")?;
    let miner = registry.module_miner(m, &ctx)?;
    if mode == Mode::MiningThenInference && miner.needs() == MinerNeeds::EdgeOutput {
        anyhow::bail!(
            "hard example miner {} decides from the edge model's output, which `hard_example_mining_mode: mining-then-inference` does not compute; use `inference-then-mining`, or a miner that decides from the input (EdgeOnly, CloudOnly, Random, Oracle)",
            m.name
        );
    }
    let (link, real) = match case.module("link") {
        Some(l) => (
            registry.build_link(&l.name, &l.hyperparameters, &ctx)?,
            l.name
                .eq_ignore_ascii_case("tcp")
                .then(|| RealLinkSpec::from_hps(&l.hyperparameters))
                .transpose()?,
        ),
        None => (LinkSpec::lan(case.seed), None),
    };
    let processor = case
        .module("dataset_processor")
        .map(|p| registry.build_dataset_processor(&p.name, &p.hyperparameters, &ctx))
        .transpose()?;
    // Index-file data: when the edge and cloud models are both plug-ins they get each sample
    // as Ianvs passes it (its path), one call per sample; built-in models read the numbers.
    let (em, cm) = (case.require("edgemodel")?, case.require("cloudmodel")?);
    let plugins = [em, cm].iter().filter(|m| m.plugin.is_some()).count();
    let paths = data.test.index.is_some() && plugins == 2;
    if data.test.index.is_some() && plugins == 1 {
        anyhow::bail!("with index-file data a plug-in model gets the samples as paths (as Ianvs passes them) and a built-in model their decoded numbers, so the edge model ({}) and the cloud model ({}) must both be plug-ins or both built in", em.name, cm.name);
    }
    if paths {
        if real.is_some() {
            anyhow::bail!("index-file samples as paths cannot cross the `Tcp` link yet (it sends feature vectors); use the emulated link");
        }
        if processor.is_some() {
            anyhow::bail!("a `dataset_processor` transforms feature vectors; with index-file samples as paths leave it out");
        }
    } else {
        for (split, d) in [
            ("train", data.train.as_deref()),
            ("test", Some(&*data.test)),
        ] {
            if let Some(why) = d.and_then(Dataset::undecoded) {
                anyhow::bail!("the edge model ({}) and the cloud model ({}) are built in and read numeric features, but the {split} split's index-file samples are not numbers ianvs can decode ({why}); such samples (paths, as Ianvs passes them) are taken by plug-in edge and cloud models (modules with `url:`, docs/plugins.md)", em.name, cm.name);
            }
        }
    }
    if data.test.labels.len() != data.test.len() || (data.test.dim == 0 && !paths) {
        anyhow::bail!("joint inference needs labelled feature vectors in the test split (accuracy and the Oracle read the labels)");
    }
    Ok(Plan {
        mode,
        paths,
        warmup: case.settings.usize("warmup_samples")?,
        codec,
        link,
        real,
        miner,
        processor,
    })
}

/// Checks that the edge and cloud models fit each other and the data.
fn check_models(
    edge: (&ResolvedModule, &dyn BaseModel),
    cloud: (&ResolvedModule, &dyn BaseModel),
    data: &DataSplits,
) -> anyhow::Result<()> {
    let (ke, kc) = (edge.1.num_classes(), cloud.1.num_classes());
    if ke != kc {
        anyhow::bail!(
            "the edge model ({}) predicts {ke} classes but the cloud model ({}) predicts {kc}: both must classify the same classes for the cloud's answer to replace the edge's",
            edge.0.name,
            cloud.0.name
        );
    }
    if data.num_classes > ke {
        anyhow::bail!("the test data has labels up to {} ({} classes) but the edge and cloud models predict only {ke} classes", data.num_classes - 1, data.num_classes);
    }
    for (role, (m, model)) in [("edge", edge), ("cloud", cloud)] {
        if model.needs_training() && data.train.is_none() {
            anyhow::bail!("the {role} model {} is trained on the train split, but the test environment has none (give `train_data`, or one `data` file with a `split`)", m.name);
        }
    }
    Ok(())
}

/// A model trained once per job, shared by every case (and role) that names it with the same
/// hyperparameters.
pub struct TrainedModel {
    pub model: Box<dyn BaseModel>,
    pub report: TrainReport,
}

/// The trained model of `m`, and whether this call trained (or loaded) it.
fn trained(
    ctx: &CaseContext,
    case: &CaseSpec,
    role: &str,
    m: &ResolvedModule,
) -> anyhow::Result<(Arc<TrainedModel>, bool)> {
    let key = format!(
        "jointinference/model/{}/{}/{}/{}",
        m.name.to_ascii_lowercase(),
        serde_json::to_string(&m.hyperparameters)?,
        case.seed,
        serde_json::to_string(&m.plugin)?
    );
    let mut built = false;
    let model = ctx.cache.get_or_try_insert(&key, || {
        built = true;
        let mut model = ctx
            .registry
            .module_model(m, &build_context(case, ctx.data))?;
        let report = match (&ctx.data.train, model.needs_training()) {
            (Some(train), true) => {
                ctx.progress
                    .set_message(format!("training the {role} model ({})", m.name));
                model.train(train, &ctx.work())?
            }
            _ => TrainReport::default(),
        };
        Ok(TrainedModel { model, report })
    })?;
    Ok((model, built))
}

impl Paradigm for JointInference {
    fn name(&self) -> &'static str {
        "jointinference"
    }
    fn summary(&self) -> &'static str {
        "edge model + cloud model + hard-example miner over an emulated link (Sedna/Ianvs joint inference)"
    }
    fn slots(&self) -> &'static [ModuleSlot] {
        SLOTS
    }
    fn settings(&self) -> Vec<HpSpec> {
        vec![
            HpSpec::new("hard_example_mining_mode", HpKind::Choice(MODES), json!("inference-then-mining"), "inference-then-mining: the edge answers first and hard samples go to the cloud; mining-then-inference: the miner routes each sample before any model runs"),
            HpSpec::new("warmup_samples", HpKind::Int { min: 0, max: 1_000_000 }, json!(10), "forward passes each model runs on the first test samples before timing starts (not recorded)"),
            HpSpec::new("uplink_codec", HpKind::Choice(InputCodec::NAMES), json!("f32"), "how a sample is serialized for the uplink: f32 (4 B/value), u8 (per-sample min/max quantization, 1 B/value + 8, lossy), deflate (f32 compressed, lossless)"),
        ]
    }
    fn record_kind(&self) -> RecordKind {
        RecordKind::JointInference
    }

    fn preflight(
        &self,
        case: &CaseSpec,
        data: &DataSplits,
        registry: &Registry,
    ) -> anyhow::Result<()> {
        plan(case, data, registry)?;
        let ctx = build_context(case, data);
        let (e, c) = (case.require("edgemodel")?, case.require("cloudmodel")?);
        let edge = registry
            .module_model(e, &ctx)
            .map_err(|err| err.context(format!("edge model {}", e.name)))?;
        let cloud = registry
            .module_model(c, &ctx)
            .map_err(|err| err.context(format!("cloud model {}", c.name)))?;
        check_models((e, edge.as_ref()), (c, cloud.as_ref()), data)
    }

    fn run(&self, case: &CaseSpec, ctx: &CaseContext) -> anyhow::Result<CaseOutput> {
        let mut plan = plan(case, ctx.data, ctx.registry)?;
        let (em, cm) = (case.require("edgemodel")?, case.require("cloudmodel")?);
        let (edge, edge_built_now) = trained(ctx, case, "edge", em)?;
        // With a real link the cloud model lives in the worker, which builds and trains it from
        // the same module spec, data and seed; here only an untrained copy is built, to check shapes.
        let real_spec = plan.real.take();
        let (cloud_trained, cloud_local) = if real_spec.is_some() {
            let m = ctx.registry.build_model(
                "cloudmodel",
                &cm.name,
                &cm.hyperparameters,
                &build_context(case, ctx.data),
            )?;
            (None, Some(m))
        } else {
            (Some(trained(ctx, case, "cloud", cm)?), None)
        };
        let cloud_built_now = cloud_trained.as_ref().is_some_and(|c| c.1);
        let cloud_model: &dyn BaseModel = match (&cloud_trained, &cloud_local) {
            (Some((t, _)), _) => t.model.as_ref(),
            (_, Some(m)) => m.as_ref(),
            _ => unreachable!("one of the two is built"),
        };
        check_models((em, edge.model.as_ref()), (cm, cloud_model), ctx.data)?;

        let test: Arc<Dataset> = match &plan.processor {
            Some(p) => Arc::new(p.process(&ctx.data.test)?),
            None => ctx.data.test.clone(),
        };
        if test.is_empty() || test.labels.len() != test.len() {
            anyhow::bail!("the dataset processor left {} samples and {} labels; joint inference needs labelled samples", test.len(), test.labels.len());
        }

        let mut real = match real_spec {
            Some(spec) => {
                let train = match cloud_model.needs_training() {
                    true => ctx.data.train.as_deref(),
                    false => None,
                };
                let header = SetupHeader {
                    module_type: "cloudmodel".into(),
                    name: cm.name.clone(),
                    hyperparameters: cm.hyperparameters.clone(),
                    input_shape: ctx.data.input_shape,
                    num_classes: ctx.data.num_classes,
                    seed: case.seed,
                    codec: plan.codec,
                    train_len: train.map_or(0, |t| t.len()),
                    dim: train.map_or(0, |t| t.dim),
                };
                ctx.progress
                    .set_message("cloud worker: connecting; it builds and trains the cloud model");
                Some(RealLink::open(spec, header.encode(train), ctx.cache)?)
            }
            None => None,
        };
        let flow = Flow {
            edge: edge.model.as_ref(),
            cloud: cloud_model,
            samples: plan
                .paths
                .then(|| test.index.as_ref().map(|s| s.x.as_slice()))
                .flatten(),
            codec: plan.codec,
            timing: if real.is_some() {
                Timing::Sleep
            } else {
                plan.link.timing
            },
        };

        // The Oracle's knowledge is computed before the measured loop, off the clock. The cloud's view is
        // what would cross the link, so a lossy codec is accounted for.
        let oracle = if plan.miner.needs() == MinerNeeds::Oracle {
            ctx.progress
                .set_message("oracle: both models on every sample (not timed)");
            let cloud_predictions = match real.as_mut() {
                Some(r) => remote_predictions(&mut r.client, plan.codec, &test)?,
                None if flow.samples.is_some() => flow.all_predictions(flow.cloud, &test)?,
                None => {
                    let mut received = Dataset {
                        dim: test.dim,
                        ..Default::default()
                    };
                    for i in 0..test.len() {
                        received
                            .features
                            .extend(plan.codec.decode(&plan.codec.encode(test.x(i)))?);
                    }
                    batch_predictions(flow.cloud, &received)?
                }
            };
            Some((flow.all_predictions(flow.edge, &test)?, cloud_predictions))
        } else {
            None
        };

        ctx.progress.set_message("warming up");
        plan.miner.prepare()?;
        for i in 0..plan.warmup.min(test.len()) {
            if flow.samples.is_some() {
                flow.predict(flow.edge, i, &[])?;
                flow.predict(flow.cloud, i, &[])?;
                continue;
            }
            flow.edge.predict_proba(test.x(i))?;
            let payload = flow.codec.encode(test.x(i));
            match real.as_mut() {
                // Warms the worker and the connection; a miss here is not recorded.
                Some(r) => {
                    let _ = r.client.request(&payload);
                }
                None => {
                    flow.cloud.predict_proba(&flow.codec.decode(&payload)?)?;
                }
            }
        }
        if let Some(r) = real.as_mut() {
            r.client.counters = Default::default();
            r.start_clock();
        }

        ctx.progress.set_length(test.len() as u64);
        ctx.progress.set_position(0);
        ctx.progress.set_message("inferring");
        let mut link = Link::new(plan.link.clone());
        let mut records = Vec::with_capacity(test.len());
        for i in 0..test.len() {
            if i % 64 == 0 {
                ctx.work().check_cancelled()?;
            }
            let view = oracle.as_ref().map(|(e, c)| OracleView {
                label: test.labels[i],
                edge_prediction: e[i],
                cloud_prediction: c[i],
            });
            let remote = real.as_mut().map(|r| (&mut r.client, r.spec.on_failure));
            records.push(flow.sample_with(
                i,
                test.x(i),
                test.labels[i],
                plan.mode,
                plan.miner.as_mut(),
                view,
                &mut link,
                remote,
            )?);
            ctx.progress.inc(1);
        }

        let worker_stats = real.as_mut().and_then(|r| r.client.stats());
        let (cloud_train_s, cloud_params) = match (&cloud_trained, &real) {
            (Some((c, _)), _) => (c.report.seconds, c.model.num_parameters() as u64),
            (_, Some(r)) => (
                r.client.ready["training_time_s"].as_f64().unwrap_or(0.0),
                r.client.ready["parameters"].as_u64().unwrap_or(0),
            ),
            _ => (0.0, 0),
        };
        let mut out = CaseOutput::new(Records::JointInference(records));
        // Metrics get the labels as Ianvs passes them (index-file data: text).
        out.sample_labels = test
            .index
            .as_ref()
            .map(|s| std::sync::Arc::new(s.y.clone()));
        let m = &mut out.measurements;
        m.insert(
            "training_time_s".into(),
            edge.report.seconds + cloud_train_s,
        );
        m.insert("edge_training_time_s".into(), edge.report.seconds);
        m.insert("cloud_training_time_s".into(), cloud_train_s);
        m.insert("edge_parameters".into(), edge.model.num_parameters() as f64);
        m.insert("cloud_parameters".into(), cloud_params as f64);
        if let Some(r) = &real {
            let c = &r.client.counters;
            m.insert("reconnects".into(), c.reconnects as f64);
            m.insert("deadline_misses".into(), c.deadline_misses as f64);
            m.insert("connection_failures".into(), c.connection_failures as f64);
        }
        let real_link = real.as_ref().map(|r| {
            json!({
                "spec": r.spec,
                "worker": r.worker_addr.to_string(),
                "spawned_pid": r.worker.as_ref().map(|w| w.pid()),
                "via_proxy": r.proxy.as_ref().map(|p| p.addr.to_string()),
                "ready": r.client.ready,
                "counters": r.client.counters,
                "worker_stats": worker_stats,
                "proxy": r.proxy.as_ref().map(|p| p.counters()),
            })
        });
        // Plug-in modules: their own compute and the protocol overhead, apart (the per-sample
        // `mining_s`, `edge_s` and `cloud_s` include both).
        if let Some(s) = plan.miner.plugin_stats() {
            s.record("miner_", m);
        }
        if let Some(s) = edge.model.plugin_stats() {
            s.record("edge_", m);
        }
        if let Some((c, _)) = &cloud_trained {
            if let Some(s) = c.model.plugin_stats() {
                s.record("cloud_", m);
            }
        }
        let runtime = json!({
            "mode": plan.mode.name(),
            "uplink_codec": plan.codec,
            "link": plan.link,
            "warmup_passes_per_model": plan.warmup.min(test.len()),
            "test_samples": test.len(),
            "edge": { "module": em.name, "parameters": edge.model.num_parameters(), "training_time_s": edge.report.seconds, "built_in_this_case": edge_built_now },
            "cloud": { "module": cm.name, "parameters": cloud_params, "training_time_s": cloud_train_s, "built_in_this_case": cloud_built_now || real.is_some() },
            "real_link": real_link,
        });
        out.artifacts
            .push(("runtime.json".into(), serde_json::to_vec_pretty(&runtime)?));
        Ok(out)
    }
}

/// The most probable class of every sample (for the Oracle).
fn batch_predictions(model: &dyn BaseModel, data: &Dataset) -> anyhow::Result<Vec<u32>> {
    // One sample per forward pass, as in the flow: a batched matmul may round differently, and
    // the Oracle must know exactly the answer the flow will get.
    (0..data.len())
        .map(|i| Ok(argmax(&model.predict_proba(data.x(i))?).0 as u32))
        .collect()
}

/// What one sample's flow needs; public so the overhead benchmark drives the same code.
pub struct Flow<'a> {
    pub edge: &'a dyn BaseModel,
    pub cloud: &'a dyn BaseModel,
    /// Index-file samples as Ianvs passes them (paths), by sample index, when the edge and
    /// cloud models take them (plug-ins): each model's `predict` gets one path and the uplink
    /// carries the sample's file.
    pub samples: Option<&'a [String]>,
    pub codec: InputCodec,
    pub timing: Timing,
}

/// The cloud's part of one sample: payload up, forward, answer down.
struct CloudAnswer {
    prediction: u32,
    confidence: f32,
    cloud_s: f64,
    codec_s: f64,
    uplink_s: f64,
    downlink_s: f64,
    uplink_bytes: usize,
    downlink_bytes: usize,
    /// Real link: measured network + queueing, both directions.
    network_s: f64,
}

/// What a request that fell back to the edge cost.
struct Missed {
    codec_s: f64,
    uplink_bytes: usize,
}

/// The cloud's answer to every test sample over a real link, off the clock (for the Oracle).
fn remote_predictions(
    client: &mut CloudClient,
    codec: InputCodec,
    test: &Dataset,
) -> anyhow::Result<Vec<u32>> {
    (0..test.len())
        .map(|i| {
            let reply = client.request(&codec.encode(test.x(i))).map_err(|m| {
                anyhow::anyhow!(
                    "the Oracle needs the cloud's answer to every sample before the run: {m}"
                )
            })?;
            let a: &[u8; 8] = reply.payload.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "the cloud worker answered {} bytes instead of 8",
                    reply.payload.len()
                )
            })?;
            Ok(decode_answer(a).0)
        })
        .collect()
}

impl Flow<'_> {
    /// `model`'s class scores for sample `index`: its path when the flow carries paths, else
    /// its features `x`.
    fn predict(&self, model: &dyn BaseModel, index: usize, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        match self.samples {
            Some(s) => model.predict_sample(&s[index]),
            None => model.predict_proba(x),
        }
    }

    /// The most probable class of every sample of `data`, one call per sample (the Oracle).
    fn all_predictions(&self, model: &dyn BaseModel, data: &Dataset) -> anyhow::Result<Vec<u32>> {
        if self.samples.is_none() {
            return batch_predictions(model, data);
        }
        (0..data.len())
            .map(|i| Ok(argmax(&self.predict(model, i, &[])?).0 as u32))
            .collect()
    }

    /// The cloud's part of sample `index` given as a path: the sample's file goes up the link
    /// (its size in bytes), the cloud model predicts from the path, the answer comes down.
    fn ask_cloud_path(
        &self,
        index: usize,
        path: &str,
        link: &mut Link,
    ) -> anyhow::Result<CloudAnswer> {
        let bytes = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("sample {index} ({path}): {e}"))?
            .len() as usize;
        let mut ex = link.exchange();
        let up = ex.up(bytes);
        let t = Instant::now();
        let probs = self.cloud.predict_sample(path)?;
        let cloud_s = t.elapsed().as_secs_f64();
        Ok(answer_back(&probs, cloud_s, 0.0, &mut ex, up))
    }

    fn ask_cloud(&self, x: &[f32], link: &mut Link) -> anyhow::Result<CloudAnswer> {
        let t = Instant::now();
        let payload = self.codec.encode(x);
        let mut codec_s = t.elapsed().as_secs_f64();
        let mut ex = link.exchange();
        let up = ex.up(payload.len());
        // The cloud sees what crossed the link, so a lossy codec changes its input for real.
        let t = Instant::now();
        let received = self.codec.decode(&payload)?;
        codec_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let probs = self.cloud.predict_proba(&received)?;
        let cloud_s = t.elapsed().as_secs_f64();
        Ok(answer_back(&probs, cloud_s, codec_s, &mut ex, up))
    }

    /// The cloud's part over a real link: `Ok(Err(..))` when it missed and the policy is to
    /// fall back, an error when the policy is to fail.
    fn ask_remote(
        &self,
        x: &[f32],
        client: &mut CloudClient,
        policy: OnFailure,
    ) -> anyhow::Result<Result<CloudAnswer, Missed>> {
        let t = Instant::now();
        let payload = self.codec.encode(x);
        let codec_s = t.elapsed().as_secs_f64();
        match client.request(&payload) {
            Ok(reply) => {
                let t = Instant::now();
                let answer: &[u8; 8] = reply.payload.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "the cloud worker answered {} bytes; a joint-inference answer is 8 (class u32, probability f32)",
                        reply.payload.len()
                    )
                })?;
                let (prediction, confidence) = decode_answer(answer);
                let decode_s = t.elapsed().as_secs_f64();
                Ok(Ok(CloudAnswer {
                    prediction,
                    confidence,
                    cloud_s: reply.compute_s,
                    codec_s: codec_s + reply.framing_s + decode_s,
                    uplink_s: 0.0,
                    downlink_s: 0.0,
                    // Whole frames, headers included: what crossed the real link.
                    uplink_bytes: reply.wire_up,
                    downlink_bytes: reply.wire_down,
                    network_s: (reply.round_trip_s - reply.compute_s).max(0.0),
                }))
            }
            Err(miss) => match policy {
                OnFailure::Fail => anyhow::bail!("{miss} (the link's on_cloud_failure is `fail`; `fallback` answers from the edge instead)"),
                OnFailure::Fallback => Ok(Err(Missed {
                    codec_s,
                    // A request that timed out was sent; one to an unreachable cloud was not.
                    uplink_bytes: if miss == Miss::Deadline {
                        crate::wire::REQUEST_HEADER_BYTES + payload.len()
                    } else {
                        0
                    },
                })),
            },
        }
    }

    /// Runs one sample through the flow and returns its record.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        index: usize,
        x: &[f32],
        label: u32,
        mode: Mode,
        miner: &mut dyn HardExampleMiner,
        oracle: Option<OracleView>,
        link: &mut Link,
    ) -> anyhow::Result<JointInferenceRecord> {
        self.sample_with(index, x, label, mode, miner, oracle, link, None)
    }

    /// [`Flow::sample`], with the cloud reached over a real link when `remote` is given (the
    /// emulated `link` is then unused) and its failure policy.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_with(
        &self,
        index: usize,
        x: &[f32],
        label: u32,
        mode: Mode,
        miner: &mut dyn HardExampleMiner,
        oracle: Option<OracleView>,
        link: &mut Link,
        remote: Option<(&mut CloudClient, OnFailure)>,
    ) -> anyhow::Result<JointInferenceRecord> {
        let t_sample = Instant::now();
        let measured = remote.is_some();
        let mut r = JointInferenceRecord {
            index,
            label,
            prediction: 0,
            confidence: 0.0,
            route: Route::Edge,
            edge_prediction: None,
            edge_confidence: None,
            cloud_prediction: None,
            cloud_confidence: None,
            edge_s: 0.0,
            mining_s: 0.0,
            codec_s: 0.0,
            uplink_s: 0.0,
            cloud_s: 0.0,
            downlink_s: 0.0,
            latency_s: 0.0,
            uplink_bytes: 0,
            downlink_bytes: 0,
            network_s: 0.0,
            fallback: false,
        };
        let run_edge = |r: &mut JointInferenceRecord| -> anyhow::Result<Vec<f32>> {
            let t = Instant::now();
            let probs = self.predict(self.edge, index, x)?;
            r.edge_s = t.elapsed().as_secs_f64();
            let (c, p) = argmax(&probs);
            r.edge_prediction = Some(c as u32);
            r.edge_confidence = Some(p);
            Ok(probs)
        };
        let edge_probs = match mode {
            Mode::InferenceThenMining => Some(run_edge(&mut r)?),
            Mode::MiningThenInference => None,
        };
        let t = Instant::now();
        let hard = miner.is_hard(&MiningQuery {
            index,
            input: x,
            edge_probs: edge_probs.as_deref(),
            oracle,
        })?;
        r.mining_s = t.elapsed().as_secs_f64();
        let answer = match (hard, remote) {
            (false, _) => None,
            (true, None) => Some(Ok(match self.samples {
                Some(s) => self.ask_cloud_path(index, &s[index], link)?,
                None => self.ask_cloud(x, link)?,
            })),
            (true, Some((client, policy))) => Some(self.ask_remote(x, client, policy)?),
        };
        if let Some(Err(missed)) = answer {
            // Edge autonomy: the cloud did not answer in time; the edge's answer stands.
            if r.edge_prediction.is_none() {
                run_edge(&mut r)?;
            }
            r.fallback = true;
            r.route = Route::Edge;
            (r.prediction, r.confidence) = (
                r.edge_prediction.unwrap_or(0),
                r.edge_confidence.unwrap_or(0.0),
            );
            (r.codec_s, r.uplink_bytes) = (missed.codec_s, missed.uplink_bytes);
        } else if let Some(Ok(a)) = answer {
            r.network_s = a.network_s;
            r.route = Route::Cloud;
            (r.prediction, r.confidence) = (a.prediction, a.confidence);
            (r.cloud_prediction, r.cloud_confidence) = (Some(a.prediction), Some(a.confidence));
            (
                r.cloud_s,
                r.codec_s,
                r.uplink_s,
                r.downlink_s,
                r.uplink_bytes,
                r.downlink_bytes,
            ) = (
                a.cloud_s,
                a.codec_s,
                a.uplink_s,
                a.downlink_s,
                a.uplink_bytes,
                a.downlink_bytes,
            );
        } else {
            if edge_probs.is_none() {
                run_edge(&mut r)?;
            }
            r.route = Route::Edge;
            (r.prediction, r.confidence) = (
                r.edge_prediction.unwrap_or(0),
                r.edge_confidence.unwrap_or(0.0),
            );
        }
        r.latency_s = match self.timing {
            _ if measured => t_sample.elapsed().as_secs_f64(),
            Timing::Virtual => {
                r.edge_s + r.mining_s + r.codec_s + r.uplink_s + r.cloud_s + r.downlink_s
            }
            Timing::Sleep => t_sample.elapsed().as_secs_f64(),
        };
        Ok(r)
    }
}

/// The cloud's answer to `probs` carried back down `ex`: encoded, sent, decoded on the edge;
/// `codec_s` is the codec time of the way up, to which the answer's is added.
fn answer_back(
    probs: &[f32],
    cloud_s: f64,
    mut codec_s: f64,
    ex: &mut Exchange<'_>,
    up: Hop,
) -> CloudAnswer {
    let (class, p) = argmax(probs);
    let t = Instant::now();
    let answer = encode_answer(class as u32, p);
    codec_s += t.elapsed().as_secs_f64();
    let down = ex.down(answer.len());
    let t = Instant::now();
    let (prediction, confidence) = decode_answer(&answer);
    codec_s += t.elapsed().as_secs_f64();
    CloudAnswer {
        prediction,
        confidence,
        cloud_s,
        codec_s,
        uplink_s: up.seconds,
        downlink_s: down.seconds,
        uplink_bytes: up.bytes,
        downlink_bytes: down.bytes,
        network_s: 0.0,
    }
}
