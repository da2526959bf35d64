//! Metrics of classification records (single-task learning): accuracy, macro F1, latency.

use std::borrow::Cow;

use anyhow::{bail, Result};
use ianvs_paradigms::records::{CaseOutput, ClassificationRecord, RecordKind};

use super::{mean, measurement, percentile, MetricDef};

const CLS: &[RecordKind] = &[RecordKind::Classification];
/// Record kinds with a classification view (`Records::classification`): the metrics below that
/// read only labels, predictions and latencies apply to all of them.
const CLASSIFYING: &[RecordKind] = &[RecordKind::Classification, RecordKind::JointInference];

pub static METRICS: &[MetricDef] = &[
    MetricDef { id: "accuracy", aliases: &["Accuracy", "acc"], unit: "", higher_is_better: true, kinds: CLASSIFYING, help: "share of test samples predicted correctly", compute: |o| Ok(accuracy_of(&cls(o)?)) },
    MetricDef { id: "macro-f1", aliases: &["f1_score", "F1", "f1", "macro_f1", "Macro F1"], unit: "", higher_is_better: true, kinds: CLASSIFYING, help: "unweighted mean of per-class F1 over classes seen in labels or predictions (scikit-learn average=\"macro\")", compute: |o| Ok(macro_f1_of(&cls(o)?)) },
    MetricDef { id: "training-time", aliases: &["training_time", "Training Time"], unit: "s", higher_is_better: false, kinds: CLASSIFYING, help: "wall time spent training the model", compute: |o| measurement(o, "training_time_s") },
    MetricDef { id: "latency-mean", aliases: &["latency", "Latency", "inference_latency", "latency_mean"], unit: "ms", higher_is_better: false, kinds: CLASSIFYING, help: "mean per-sample inference latency, warm-up excluded (a plug-in model: each sample's share of its batch call, protocol overhead included)", compute: |o| Ok(mean(&latencies_ms(o)?)) },
    MetricDef { id: "latency-p50", aliases: &["latency_p50"], unit: "ms", higher_is_better: false, kinds: CLASSIFYING, help: "median per-sample inference latency, warm-up excluded (plug-ins: protocol overhead included)", compute: |o| Ok(percentile(&latencies_ms(o)?, 50.0)) },
    MetricDef { id: "latency-p95", aliases: &["latency_p95"], unit: "ms", higher_is_better: false, kinds: CLASSIFYING, help: "95th-percentile per-sample inference latency, warm-up excluded (plug-ins: protocol overhead included)", compute: |o| Ok(percentile(&latencies_ms(o)?, 95.0)) },
    MetricDef { id: "throughput", aliases: &["Throughput"], unit: "samples/s", higher_is_better: true, kinds: CLASSIFYING, help: "measured samples divided by their summed inference time, warm-up excluded", compute: |o| {
        let l = latencies_ms(o)?;
        Ok(l.len() as f64 / (l.iter().sum::<f64>() / 1e3))
    } },
    MetricDef { id: "num-parameters", aliases: &["num_parameters", "parameters"], unit: "", higher_is_better: false, kinds: CLS, help: "trainable parameters of the model", compute: |o| measurement(o, "num_parameters") },
];

fn cls(o: &CaseOutput) -> Result<Cow<'_, [ClassificationRecord]>> {
    match o.records.classification() {
        Some(r) if !r.is_empty() => Ok(r),
        Some(_) => bail!("no test samples were evaluated"),
        None => bail!("{:?} records have no classification view", o.records.kind()),
    }
}

fn latencies_ms(o: &CaseOutput) -> Result<Vec<f64>> {
    let v: Vec<f64> = cls(o)?
        .iter()
        .filter(|r| !r.warmup)
        .map(|r| r.latency_s * 1e3)
        .collect();
    if v.is_empty() {
        bail!("every test sample was a warm-up sample; lower `warmup_samples`");
    }
    Ok(v)
}

pub fn accuracy_of(r: &[ClassificationRecord]) -> f64 {
    r.iter().filter(|x| x.label == x.prediction).count() as f64 / r.len() as f64
}

/// Macro F1 over the union of classes present in labels and predictions; a class with no
/// true or predicted positives scores 0 (scikit-learn's `zero_division=0`).
pub fn macro_f1_of(r: &[ClassificationRecord]) -> f64 {
    macro_f1(
        &r.iter().map(|x| x.label).collect::<Vec<_>>(),
        &r.iter().map(|x| x.prediction).collect::<Vec<_>>(),
    )
}

pub fn macro_f1(labels: &[u32], preds: &[u32]) -> f64 {
    let mut classes: Vec<u32> = labels.iter().chain(preds).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return 0.0;
    }
    let f1s = classes.iter().map(|&c| {
        let tp = labels
            .iter()
            .zip(preds)
            .filter(|(l, p)| **l == c && **p == c)
            .count() as f64;
        let fp = labels
            .iter()
            .zip(preds)
            .filter(|(l, p)| **l != c && **p == c)
            .count() as f64;
        let fn_ = labels
            .iter()
            .zip(preds)
            .filter(|(l, p)| **l == c && **p != c)
            .count() as f64;
        let denom = 2.0 * tp + fp + fn_;
        if denom == 0.0 {
            0.0
        } else {
            2.0 * tp / denom
        }
    });
    f1s.sum::<f64>() / classes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(labels: &[u32], preds: &[u32]) -> Vec<ClassificationRecord> {
        labels
            .iter()
            .zip(preds)
            .enumerate()
            .map(|(i, (&label, &prediction))| ClassificationRecord {
                index: i,
                label,
                prediction,
                confidence: 1.0,
                latency_s: 0.001 * (i + 1) as f64,
                warmup: false,
            })
            .collect()
    }

    #[test]
    fn accuracy_and_macro_f1_match_hand_computed_values() {
        // sklearn: f1_score([0,0,1,1,2,2],[0,1,1,1,2,0],average="macro") = 0.6555555...
        let r = recs(&[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 2, 0]);
        assert!((accuracy_of(&r) - 4.0 / 6.0).abs() < 1e-12);
        // class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
        assert!((macro_f1_of(&r) - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // A class only ever predicted (3) counts with F1 0, as in scikit-learn.
        let r = recs(&[0, 0], &[0, 3]);
        assert!((macro_f1_of(&r) - (2.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12);
    }
}
