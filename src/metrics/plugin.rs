//! Plug-in metrics (`- name: x` with `url:` in the test environment): `x(y_true, y_pred)` of
//! an Ianvs metric file, run in the plug-in host on the class labels and predicted labels of
//! every test sample. For index-file data `y_true` is what Ianvs passes: the label text of
//! each sample (`test_dataset.y`, see `ianvs_paradigms::data::IndexSamples`).
//!
//! A metric is a [`MetricDef`] with a plain `fn` like every built-in; a plug-in's state lives
//! in a process-wide table and each table slot has its own `fn` (`slot::<K>`).

use std::sync::{Arc, Mutex};

use anyhow::Result;
use ianvs_algorithms::plugin::PluginMetric;
use ianvs_paradigms::records::{CaseOutput, RecordKind, Records};
use ianvs_paradigms::PluginRef;

use super::MetricDef;

/// The most plug-in metrics one process can hold.
pub const MAX_PLUGIN_METRICS: usize = 32;

static TABLE: Mutex<Vec<(Arc<PluginMetric>, &'static MetricDef)>> = Mutex::new(Vec::new());

const KINDS: &[RecordKind] = &[RecordKind::Classification, RecordKind::JointInference];

fn slot<const K: usize>(o: &CaseOutput) -> Result<f64> {
    let m = TABLE
        .lock()
        .map_err(|_| anyhow::anyhow!("plug-in metric table poisoned"))?
        .get(K)
        .map(|(m, _)| m.clone())
        .ok_or_else(|| anyhow::anyhow!("plug-in metric {K} is not registered"))?;
    compute(&m, o)
}

macro_rules! slots {
    ($($k:literal)*) => { [$(slot::<$k> as fn(&CaseOutput) -> Result<f64>),*] };
}
static SLOTS: [fn(&CaseOutput) -> Result<f64>; MAX_PLUGIN_METRICS] =
    slots!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);

/// The labels and predictions the metric function receives.
fn labels(o: &CaseOutput) -> Result<(Vec<u32>, Vec<u32>)> {
    Ok(match &o.records {
        Records::Classification(r) => r.iter().map(|r| (r.label, r.prediction)).unzip(),
        Records::JointInference(r) => r.iter().map(|r| (r.label, r.prediction)).unzip(),
        other => anyhow::bail!(
            "plug-in metrics read classification records; this case has {:?} records",
            other.kind()
        ),
    })
}

/// The labels as Ianvs passes them for index-file data (`test_dataset.y`, text), in record
/// order, when the case has them.
fn label_texts(o: &CaseOutput) -> Result<Option<Vec<String>>> {
    let Some(all) = &o.sample_labels else {
        return Ok(None);
    };
    let index: Vec<usize> = match &o.records {
        Records::Classification(r) => r.iter().map(|r| r.index).collect(),
        Records::JointInference(r) => r.iter().map(|r| r.index).collect(),
        _ => return Ok(None),
    };
    index
        .iter()
        .map(|&i| {
            all.get(i).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "record of sample {i} has no label text ({} samples)",
                    all.len()
                )
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn compute(m: &PluginMetric, o: &CaseOutput) -> Result<f64> {
    let (y_true, y_pred) = labels(o)?;
    let text = label_texts(o)?;
    m.compute(&y_true, text.as_deref(), &y_pred)
}

/// Registers a plug-in metric (the same file, alias and interpreter share one entry) and
/// returns its definition; its id is the name as written.
pub fn register(plugin: PluginRef, name: &str) -> Result<&'static MetricDef> {
    let mut t = TABLE
        .lock()
        .map_err(|_| anyhow::anyhow!("plug-in metric table poisoned"))?;
    if let Some((_, d)) = t
        .iter()
        .find(|(m, _)| m.plugin == plugin && m.alias == name)
    {
        return Ok(d);
    }
    let k = t.len();
    if k >= MAX_PLUGIN_METRICS {
        anyhow::bail!("at most {MAX_PLUGIN_METRICS} plug-in metrics can be used at once");
    }
    let file = plugin.url.display().to_string();
    // Leaked once per metric and process: a definition lives as long as the built-in ones.
    let def: &'static MetricDef = Box::leak(Box::new(MetricDef {
        id: Box::leak(name.to_string().into_boxed_str()),
        aliases: &[],
        unit: "",
        higher_is_better: true,
        kinds: KINDS,
        help: Box::leak(format!("plug-in metric from {file}").into_boxed_str()),
        compute: SLOTS[k],
    }));
    t.push((Arc::new(PluginMetric::new(plugin, name.to_string())), def));
    Ok(def)
}

/// Stops every plug-in metric's process (the end of a run).
pub fn stop_all() {
    if let Ok(t) = TABLE.lock() {
        for (m, _) in t.iter() {
            m.stop();
        }
    }
}

/// Every registered plug-in metric: its id and where it runs.
pub fn registered() -> Vec<(String, PluginRef)> {
    TABLE
        .lock()
        .map(|t| {
            t.iter()
                .map(|(m, d)| (d.id.to_string(), m.plugin.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sum of the plug-in measurements named `<role>plugin_<what>` (every plug-in module of the
/// case; the single-task `predict_` subtotal is part of the total and not added twice).
fn plugin_total(o: &CaseOutput, what: &str) -> Result<f64> {
    let key = format!("plugin_{what}");
    let xs: Vec<f64> = o
        .measurements
        .iter()
        .filter(|(k, _)| k.ends_with(&key) && !k.starts_with("predict_"))
        .map(|(_, v)| *v)
        .collect();
    if xs.is_empty() {
        anyhow::bail!("the case ran no plug-in module");
    }
    Ok(xs.iter().sum())
}

/// The time split of plug-in modules' calls (the `latency-*` metrics include both parts).
pub static METRICS: &[MetricDef] = &[
    MetricDef { id: "plugin-compute-time", aliases: &["plugin_compute_time"], unit: "s", higher_is_better: false, kinds: KINDS, help: "time plug-in modules spent in their own code, measured inside the plug-in process around each call", compute: |o| plugin_total(o, "compute_s") },
    MetricDef { id: "plugin-overhead-time", aliases: &["plugin_overhead_time"], unit: "s", higher_is_better: false, kinds: KINDS, help: "protocol overhead of plug-in calls: round trips seen from ianvs minus the plug-in's own compute", compute: |o| plugin_total(o, "overhead_s") },
];
