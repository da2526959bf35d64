//! Adapters from plug-in processes to the paradigm traits: a `basemodel` / `edgemodel` /
//! `cloudmodel` plug-in is a [`BaseModel`], a `hard_example_mining` plug-in a
//! [`HardExampleMiner`], a metric plug-in a function of `(y_true, y_pred)`.
//!
//! The calls are Ianvs's (`core/testcasecontroller/algorithm/paradigm/singletask_learning`):
//! the constructor gets the case's hyperparameters as keyword arguments, then
//! `train(train_data)` (an object with `.x` and `.y`), `save(model_path)`, `load(model_url)`,
//! `predict(x)`; a Sedna filter is called as `filter(infer_result) -> bool`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::joint_inference::{HardExampleMiner, MinerNeeds, MiningQuery};
use ianvs_paradigms::modules::{BaseModel, BuildContext, PluginStats, TrainReport, WorkContext};
use ianvs_paradigms::registry::PluginModules;
use ianvs_paradigms::{PluginRef, ResolvedModule};
use serde_json::{json, Value};

use super::process::{Launch, PluginProcess};
use super::protocol::{Arg, Tensor};

/// Sedna's `ClassType` of a module type, as Ianvs's `Module.get_module_instance` maps it.
pub fn class_type(module_type: &str) -> &'static str {
    match module_type {
        "hard_example_mining" => "hard_example_mining",
        _ => "general",
    }
}

fn launch(p: &PluginRef, what: &str, alias: &str) -> Launch {
    let file = p
        .url
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    Launch {
        file: p.url.clone(),
        python: p.python.clone(),
        timeout: Duration::from_secs_f64(p.timeout_s.max(0.001)),
        label: format!("{what} plug-in \"{alias}\" ({file})"),
        log_name: format!("plugin-{what}-{}.stderr.log", sanitize(alias)),
        // Ianvs's single-task paradigm sets BASE_MODEL_URL to `initial_model_url` before
        // training (Sedna's `Context.get_parameters("base_model_url")` reads it).
        env: p
            .initial_model_url
            .iter()
            .map(|u| ("BASE_MODEL_URL".to_string(), u.clone().into_os_string()))
            .collect(),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Loads a plug-in file in the host without building or training anything and checks that
/// `alias` is registered under the module type's class type and that its constructor accepts
/// every name in `params`. Returns what the file registers (for `ianvs validate`).
pub fn check_plugin(
    p: &PluginRef,
    what: &str,
    kind: &str,
    alias: &str,
    params: &[String],
) -> anyhow::Result<Value> {
    let mut proc = PluginProcess::spawn(&launch(p, what, alias))?;
    let params: serde_json::Map<String, Value> =
        params.iter().map(|k| (k.clone(), Value::Null)).collect();
    proc.init(kind, alias, &Value::Object(params), true)?;
    let _ = std::fs::remove_file(proc.stderr_path());
    Ok(proc.registered())
}

/// Builds plug-in modules for the registry.
pub struct PluginFactory;

impl PluginModules for PluginFactory {
    fn model(&self, m: &ResolvedModule, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
        let p = m.plugin.as_ref().context("not a plug-in module")?;
        Ok(Box::new(PluginModel {
            launch: launch(p, &m.module_type, &m.name),
            alias: m.name.clone(),
            params: serde_json::to_value(&m.hyperparameters)?,
            num_classes: ctx.num_classes,
            dim: ctx.input_shape.0 * ctx.input_shape.1 * ctx.input_shape.2,
            initial_model_url: p.initial_model_url.clone(),
            proc: Mutex::new(None),
        }))
    }
    fn miner(
        &self,
        m: &ResolvedModule,
        _ctx: &BuildContext,
    ) -> anyhow::Result<Box<dyn HardExampleMiner>> {
        let p = m.plugin.as_ref().context("not a plug-in module")?;
        Ok(Box::new(PluginMiner {
            launch: launch(p, &m.module_type, &m.name),
            alias: m.name.clone(),
            params: serde_json::to_value(&m.hyperparameters)?,
            proc: None,
        }))
    }
}

/// Starts the process and builds the alias on first use, so a preflight that only inspects a
/// module costs nothing.
fn started<'a>(
    slot: &'a mut Option<PluginProcess>,
    launch: &Launch,
    kind: &str,
    alias: &str,
    params: &Value,
) -> anyhow::Result<&'a mut PluginProcess> {
    if slot.is_none() {
        let mut p = PluginProcess::spawn(launch)?;
        p.init(kind, alias, params, false)?;
        *slot = Some(p);
    }
    Ok(slot.as_mut().expect("just started"))
}

fn stats(p: &Option<PluginProcess>) -> Option<PluginStats> {
    p.as_ref().map(|p| PluginStats {
        calls: p.stats.calls,
        compute_s: p.stats.compute_s,
        wall_s: p.stats.wall_s,
    })
}

/// A classifier plug-in (`basemodel`, `edgemodel`, `cloudmodel`).
pub struct PluginModel {
    launch: Launch,
    alias: String,
    params: Value,
    num_classes: usize,
    /// Features per sample.
    dim: usize,
    /// Ianvs's `initial_model_url`, loaded when `save` gives no path or there is no `train`.
    initial_model_url: Option<PathBuf>,
    proc: Mutex<Option<PluginProcess>>,
}

impl PluginModel {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut PluginProcess) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut g = self
            .proc
            .lock()
            .map_err(|_| anyhow::anyhow!("{}: an earlier call panicked", self.launch.label))?;
        f(started(
            &mut g,
            &self.launch,
            "general",
            &self.alias,
            &self.params,
        )?)
    }
}

impl PluginModel {
    /// `predict` on `n` samples (numbers in `tensors`, or paths in `args.x`), as `[n, k]` scores.
    fn predict(&self, n: usize, args: Value, tensors: Vec<Arg<'_>>) -> anyhow::Result<Vec<f32>> {
        let k = self.num_classes;
        self.with(|p| {
            let r = p.call_with("predict", args, tensors)?;
            let t = r
                .tensors
                .first()
                .ok_or_else(|| anyhow::anyhow!("{}: predict sent no array", p.label()))?;
            scores(t, n, k).map_err(|why| {
                super::process::PluginFailure {
                    kind: "type".into(),
                    message: format!("{}: predict {why}", p.label()),
                    detail: Value::Null,
                }
                .into()
            })
        })
    }
}

fn features(x: &[f32], n: usize) -> Tensor {
    Tensor::from_f32(vec![n, x.len() / n.max(1)], x)
}

impl BaseModel for PluginModel {
    fn train(&mut self, train: &Dataset, work: &WorkContext) -> anyhow::Result<TrainReport> {
        work.check_cancelled()?;
        let label = self.launch.label.clone();
        let initial = self.initial_model_url.clone();
        self.with(|p| {
            if !p.has_method("train") {
                // A pretrained plug-in: Ianvs's `load(initial_model_url)` before predicting.
                if let (Some(url), true) = (&initial, p.has_method("load")) {
                    p.call("load", json!({"model_url": url}), vec![])?;
                }
                return Ok(TrainReport::default());
            }
            let n = train.len();
            let r = match &train.index {
                // Index-file samples as Ianvs passes them: `.x` paths, `.y` label text.
                Some(s) => p.call("train", json!({"x": s.x, "y": s.y}), vec![])?,
                None => {
                    let y: Vec<i64> = train.labels.iter().map(|&l| l as i64).collect();
                    // Placed, not sent: the model may keep `train_data.x` (docs/plugins.md,
                    // "Shared memory").
                    let x = p.place(features(&train.features, n))?;
                    let y = p.place(Tensor::from_i64(vec![n], &y))?;
                    p.call_with("train", json!({}), vec![x.into(), y.into()])?
                }
            };
            let seconds = r.compute_s;
            // Ianvs saves the trained model and loads it back before inference; when `save`
            // gives no path it loads `initial_model_url`.
            if p.has_method("save") && p.has_method("load") {
                let dir = std::env::temp_dir().join(format!(
                    "ianvs-plugin-model-{}-{}",
                    std::process::id(),
                    p.pid()
                ));
                std::fs::create_dir_all(&dir)?;
                let saved = p.call("save", json!({"model_path": dir}), vec![])?;
                let url = saved
                    .result
                    .as_str()
                    .map(PathBuf::from)
                    .or_else(|| initial.clone())
                    .unwrap_or_else(|| dir.clone());
                p.call("load", json!({"model_url": url}), vec![])?;
                let _ = std::fs::remove_dir_all(&dir);
            }
            let final_loss = r
                .result
                .get("loss")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            Ok(TrainReport {
                seconds,
                final_loss,
                epochs: 0,
            })
        })
        .with_context(|| format!("training {label}"))
    }

    fn predict_proba(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        let n = x.len() / self.dim.max(1);
        // Borrowed: the only copy is into the shared region (or the pipe), inside the
        // measured round trip.
        self.predict(n, json!({}), vec![Arg::f32(vec![n, x.len() / n.max(1)], x)])
    }

    fn takes_samples(&self) -> bool {
        true
    }

    fn predict_samples(&self, x: &[String]) -> anyhow::Result<Vec<f32>> {
        self.predict(x.len(), json!({ "x": x }), vec![])
    }

    fn predict_sample(&self, x: &str) -> anyhow::Result<Vec<f32>> {
        self.predict(1, json!({ "x": [x], "one": true }), vec![])
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn num_parameters(&self) -> usize {
        0
    }
    fn prefers_batches(&self) -> bool {
        true
    }
    fn plugin_stats(&self) -> Option<PluginStats> {
        self.proc.lock().ok().and_then(|p| stats(&p))
    }
}

/// A plug-in's `predict` answer as `[n, k]` class scores: `n` class labels (one-hot), or an
/// `[n, k]` array of scores.
pub fn scores(t: &Tensor, n: usize, k: usize) -> Result<Vec<f32>, String> {
    let v = t.to_f64();
    match t.shape.as_slice() {
        [m] if *m == n => {
            let mut out = vec![0f32; n * k];
            for (i, &c) in v.iter().enumerate() {
                if c.fract() != 0.0 || c < 0.0 || c >= k as f64 {
                    return Err(format!("returned the label {c} for sample {i}; labels are integers in [0, {k})"));
                }
                out[i * k + c as usize] = 1.0;
            }
            Ok(out)
        }
        [m, kk] if *m == n && *kk == k => Ok(v.iter().map(|&x| x as f32).collect()),
        shape => Err(format!(
            "returned an array of shape {shape:?} for {n} samples; expected {n} class labels or an [{n}, {k}] array of class scores"
        )),
    }
}

impl PluginProcess {
    fn has_method(&self, m: &str) -> bool {
        self.methods().iter().any(|x| x == m)
    }
    fn label(&self) -> String {
        self.launch_label().to_string()
    }
}

/// A Sedna hard-example filter plug-in: `filter(infer_result) -> bool` on the edge model's
/// class probabilities (a list of floats), one call per sample as the flow decides.
pub struct PluginMiner {
    launch: Launch,
    alias: String,
    params: Value,
    proc: Option<PluginProcess>,
}

impl HardExampleMiner for PluginMiner {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::EdgeOutput
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        let probs = q.edge_probs.ok_or_else(|| {
            anyhow::anyhow!("{}: needs the edge model's output", self.launch.label)
        })?;
        let p = started(
            &mut self.proc,
            &self.launch,
            "hard_example_mining",
            &self.alias,
            &self.params,
        )?;
        let r = p.call(
            "hem",
            json!({}),
            vec![Tensor::from_f32(vec![1, probs.len()], probs)],
        )?;
        match r.tensors.first() {
            Some(t) if t.len() == 1 => Ok(t.to_f64()[0] != 0.0),
            _ => anyhow::bail!(
                "{}: the filter's answer was not one boolean",
                self.launch.label
            ),
        }
    }
    fn plugin_stats(&self) -> Option<PluginStats> {
        stats(&self.proc)
    }
    fn prepare(&mut self) -> anyhow::Result<()> {
        started(
            &mut self.proc,
            &self.launch,
            "hard_example_mining",
            &self.alias,
            &self.params,
        )?;
        Ok(())
    }
}

/// A metric plug-in: `name(y_true, y_pred) -> float`, on the class labels and the predicted
/// labels of every test sample. The process is started on first use and kept for the job.
pub struct PluginMetric {
    pub plugin: PluginRef,
    pub alias: String,
    proc: Mutex<Option<PluginProcess>>,
}

impl PluginMetric {
    pub fn new(plugin: PluginRef, alias: String) -> Self {
        PluginMetric {
            plugin,
            alias,
            proc: Mutex::new(None),
        }
    }
    /// `y_true_text`: the labels as Ianvs passes them for index-file data (text, one per
    /// sample, replacing `y_true` for the metric), else `None`.
    pub fn compute(
        &self,
        y_true: &[u32],
        y_true_text: Option<&[String]>,
        y_pred: &[u32],
    ) -> anyhow::Result<f64> {
        let mut g = self
            .proc
            .lock()
            .map_err(|_| anyhow::anyhow!("metric plug-in lock poisoned"))?;
        let l = launch(&self.plugin, "metric", &self.alias);
        let p = started(&mut g, &l, "general", &self.alias, &json!({}))?;
        let t = |v: &[u32]| {
            Tensor::from_i64(
                vec![v.len()],
                &v.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            )
        };
        let r = match y_true_text {
            Some(y) => p.call("metric", json!({ "y_true": y }), vec![t(y_pred)]),
            None => p.call("metric", json!({}), vec![t(y_true), t(y_pred)]),
        };
        match r {
            Ok(r) => r.result.as_f64().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: the metric returned {}, not a number",
                    l.label,
                    r.result
                )
            }),
            Err(e) => {
                // After anything but an exception or a wrong answer the process is gone (or
                // was stopped): start it afresh next time.
                let kind = e
                    .downcast_ref::<super::process::PluginFailure>()
                    .map(|f| f.kind.as_str());
                if !matches!(kind, Some("raised") | Some("type")) {
                    *g = None;
                }
                Err(e)
            }
        }
    }
    /// Stops the process (the end of the job).
    pub fn stop(&self) {
        if let Ok(mut g) = self.proc.lock() {
            *g = None;
        }
    }
}

/// A path shown relative to the working directory when it is under it.
pub fn shown(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}
