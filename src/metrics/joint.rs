//! Metrics of joint-inference records: how much the edge answers, what crosses the link, and
//! where the time goes. Accuracy, macro F1, latency percentiles and throughput come from the
//! classification view of the same records (`classification.rs`).
//!
//! Definitions (DESIGN §5): edge ratio = samples answered on the edge / samples inferred;
//! samples transfer ratio = samples sent to the cloud / samples inferred (Ianvs adds 1 to the
//! denominator; we do not). Byte counts are the real serialized payload sizes.

use anyhow::{bail, Result};
use ianvs_paradigms::joint_inference::{JointInferenceRecord, Route};
use ianvs_paradigms::records::{CaseOutput, RecordKind, Records};

use super::{mean, measurement, MetricDef};

const JI: &[RecordKind] = &[RecordKind::JointInference];

pub static METRICS: &[MetricDef] = &[
    MetricDef {
        id: "edge-ratio",
        aliases: &["edge_ratio", "Edge Ratio"],
        unit: "",
        higher_is_better: true,
        kinds: JI,
        help: "share of samples answered by the edge model",
        compute: |o| Ok(share(ji(o)?, Route::Edge)),
    },
    // Shared with lifelong learning (Ianvs reports `samples_transfer_ratio` for both paradigms).
    MetricDef {
        id: "samples-transfer-ratio",
        aliases: &[
            "samples_transfer_ratio",
            "Samples Transfer Ratio",
            "transfer-ratio",
        ],
        unit: "",
        higher_is_better: false,
        kinds: &[RecordKind::JointInference, RecordKind::Lifelong],
        help:
            "samples sent to the cloud / samples inferred (no +1 in the denominator, unlike Ianvs)",
        compute: |o| match &o.records {
            Records::Lifelong(_) => super::lifelong::samples_transfer_ratio(o),
            _ => Ok(share(ji(o)?, Route::Cloud)),
        },
    },
    MetricDef {
        id: "cloud-calls",
        aliases: &["cloud_calls"],
        unit: "",
        higher_is_better: false,
        kinds: JI,
        help: "number of samples the cloud model answered",
        compute: |o| Ok(ji(o)?.iter().filter(|r| r.route == Route::Cloud).count() as f64),
    },
    MetricDef {
        id: "uplink-bytes",
        aliases: &["uplink_bytes"],
        unit: "B",
        higher_is_better: false,
        kinds: JI,
        help: "bytes sent edge → cloud (serialized inputs), all samples",
        compute: |o| Ok(ji(o)?.iter().map(|r| r.uplink_bytes as f64).sum()),
    },
    MetricDef {
        id: "downlink-bytes",
        aliases: &["downlink_bytes"],
        unit: "B",
        higher_is_better: false,
        kinds: JI,
        help: "bytes sent cloud → edge (serialized answers), all samples",
        compute: |o| Ok(ji(o)?.iter().map(|r| r.downlink_bytes as f64).sum()),
    },
    MetricDef {
        id: "fallback-ratio",
        aliases: &["fallback_ratio"],
        unit: "",
        higher_is_better: false,
        kinds: &[RecordKind::JointInference, RecordKind::Speculative],
        help: "joint inference: samples meant for the cloud that the edge answered because the cloud missed the deadline or was unreachable / samples inferred; speculative decoding: output tokens the drafter produced alone, unverified, after the cloud missed / output tokens (real link, on_cloud_failure: fallback)",
        compute: |o| match &o.records {
            Records::Speculative(_) => super::speculative::fallback_ratio(o),
            _ => {
                let r = ji(o)?;
                Ok(r.iter().filter(|x| x.fallback).count() as f64 / r.len() as f64)
            }
        },
    },
    MetricDef {
        id: "fallback-accuracy",
        aliases: &["fallback_accuracy", "outage-accuracy"],
        unit: "",
        higher_is_better: true,
        kinds: JI,
        help: "accuracy of the edge's answers on the samples that fell back (during outages, drops, resets); no value when none fell back",
        compute: |o| {
            let r: Vec<_> = ji(o)?.iter().filter(|x| x.fallback).collect();
            if r.is_empty() {
                bail!("no sample fell back to the edge");
            }
            Ok(r.iter().filter(|x| x.prediction == x.label).count() as f64 / r.len() as f64)
        },
    },
    MetricDef {
        id: "reconnects",
        aliases: &[],
        unit: "",
        higher_is_better: false,
        kinds: JI,
        help: "times the edge reopened its connection to the cloud worker during the case (real link)",
        compute: |o| measurement(o, "reconnects"),
    },
    MetricDef {
        id: "edge-time-mean",
        aliases: &["edge_time_mean"],
        unit: "ms",
        higher_is_better: false,
        kinds: JI,
        help: "mean edge forward time per sample (0 where the edge did not run)",
        compute: |o| {
            Ok(mean(
                &ji(o)?.iter().map(|r| r.edge_s * 1e3).collect::<Vec<_>>(),
            ))
        },
    },
    MetricDef {
        id: "cloud-time-mean",
        aliases: &["cloud_time_mean"],
        unit: "ms",
        higher_is_better: false,
        kinds: JI,
        help: "mean cloud forward time per sample (0 where the cloud did not run)",
        compute: |o| {
            Ok(mean(
                &ji(o)?.iter().map(|r| r.cloud_s * 1e3).collect::<Vec<_>>(),
            ))
        },
    },
    MetricDef {
        id: "link-time-mean",
        aliases: &["link_time_mean", "network-time-mean"],
        unit: "ms",
        higher_is_better: false,
        kinds: JI,
        help: "mean uplink + downlink time per sample (0 where nothing was sent); on a real link, the measured network + queueing time",
        compute: |o| {
            Ok(mean(
                &ji(o)?
                    .iter()
                    .map(|r| (r.uplink_s + r.downlink_s + r.network_s) * 1e3)
                    .collect::<Vec<_>>(),
            ))
        },
    },
    MetricDef {
        id: "edge-parameters",
        aliases: &["edge_parameters"],
        unit: "",
        higher_is_better: false,
        kinds: JI,
        help: "parameters of the edge model",
        compute: |o| measurement(o, "edge_parameters"),
    },
    MetricDef {
        id: "cloud-parameters",
        aliases: &["cloud_parameters"],
        unit: "",
        higher_is_better: false,
        kinds: JI,
        help: "parameters of the cloud model",
        compute: |o| measurement(o, "cloud_parameters"),
    },
];

fn ji(o: &CaseOutput) -> Result<&[JointInferenceRecord]> {
    match &o.records {
        Records::JointInference(r) if !r.is_empty() => Ok(r),
        Records::JointInference(_) => bail!("no test samples were inferred"),
        other => bail!("{:?} records are not joint-inference records", other.kind()),
    }
}

/// Share of the records whose final answer took `route`.
pub fn share(r: &[JointInferenceRecord], route: Route) -> f64 {
    r.iter().filter(|x| x.route == route).count() as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, route: Route, up: usize, latency_s: f64) -> JointInferenceRecord {
        let cloud = route == Route::Cloud;
        JointInferenceRecord {
            index: i,
            label: 1,
            prediction: if cloud { 1 } else { 0 },
            confidence: 0.9,
            route,
            edge_prediction: Some(0),
            edge_confidence: Some(0.4),
            cloud_prediction: cloud.then_some(1),
            cloud_confidence: cloud.then_some(0.9),
            edge_s: 0.001,
            mining_s: 0.0,
            codec_s: 0.0,
            uplink_s: if cloud { 0.01 } else { 0.0 },
            cloud_s: if cloud { 0.002 } else { 0.0 },
            downlink_s: if cloud { 0.01 } else { 0.0 },
            latency_s,
            uplink_bytes: up,
            downlink_bytes: if cloud { 8 } else { 0 },
            network_s: 0.0,
            fallback: false,
        }
    }

    fn compute(id: &str, o: &CaseOutput) -> f64 {
        let m = super::super::all().find(|m| m.id == id).unwrap();
        assert!(
            m.kinds.contains(&RecordKind::JointInference),
            "{id} does not apply to joint inference"
        );
        (m.compute)(o).unwrap()
    }

    #[test]
    fn collaboration_metrics_from_records() {
        let recs = vec![
            rec(0, Route::Edge, 0, 0.001),
            rec(1, Route::Cloud, 3136, 0.023),
            rec(2, Route::Cloud, 3136, 0.025),
            rec(3, Route::Edge, 0, 0.003),
        ];
        let o = CaseOutput::new(Records::JointInference(recs));
        assert_eq!(compute("edge-ratio", &o), 0.5);
        assert_eq!(compute("samples-transfer-ratio", &o), 0.5);
        assert_eq!(compute("cloud-calls", &o), 2.0);
        assert_eq!(compute("uplink-bytes", &o), 6272.0);
        assert_eq!(compute("downlink-bytes", &o), 16.0);
        assert!((compute("link-time-mean", &o) - 10.0).abs() < 1e-9);
        // Shared with classification: accuracy counts the final answers (cloud ones are right),
        // latency is the end-to-end latency.
        assert_eq!(compute("accuracy", &o), 0.5);
        assert!((compute("latency-mean", &o) - 13.0).abs() < 1e-9);
        assert!((compute("latency-p50", &o) - 13.0).abs() < 1e-9);
        assert!((compute("throughput", &o) - 4.0 / 0.052).abs() < 1e-6);
        assert_eq!(compute("fallback-ratio", &o), 0.0);
        let mut fell = o.clone();
        if let Records::JointInference(r) = &mut fell.records {
            // Sample 1 was meant for the cloud; the edge (wrong) answered it.
            r[1].route = Route::Edge;
            r[1].fallback = true;
            r[1].prediction = 0;
        }
        assert_eq!(compute("fallback-ratio", &fell), 0.25);
        assert_eq!(compute("fallback-accuracy", &fell), 0.0);
        let empty = CaseOutput::new(Records::JointInference(vec![]));
        assert!(super::super::all()
            .find(|m| m.id == "edge-ratio")
            .map(|m| (m.compute)(&empty).is_err())
            .unwrap());
    }
}
