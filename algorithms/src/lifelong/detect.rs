//! Unseen-task detectors (module type `unseen_sample_recognition`) and task allocators (module
//! type `task_allocation`): the edge-side halves of the knowledge base.
//!
//! `Confidence` flags a sample when the edge model's top probability is low (the max-softmax
//! baseline of Hendrycks & Gimpel 2017); `PrototypeDistance` when it lies outside the radius of
//! every known task prototype (a class centre with its principal directions, see
//! `prototypes.rs`). `Oracle` and `UploadAll` are the bounds: perfect detection, and
//! no detection at all (everything goes up).

use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::{HpKind, NoHyperparameters};
use ianvs_paradigms::lifelong::{DetectInput, Detection, TaskAllocation, UnseenTaskDetect};
use ianvs_paradigms::modules::BuildContext;

use super::prototypes::{PrototypeConfig, Prototypes};

fn dim(ctx: &BuildContext) -> usize {
    let (c, h, w) = ctx.input_shape;
    c * h * w
}

/// Prototype settings; detection and allocation differ only in their defaults.
fn prototype_config(
    per_class: usize,
    subspace_dim: usize,
    quantile: f64,
    seed: u64,
) -> PrototypeConfig {
    PrototypeConfig {
        per_class,
        subspace_dim,
        quantile,
        seed,
    }
}

// ---- Confidence -----------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `Confidence`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct ConfidenceHps {
        pub threshold: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.9,
            help: "unseen iff the edge model's top class probability is below this",
        },
    }
}

pub struct Confidence {
    threshold: f32,
}

pub fn build_confidence(
    hps: ConfidenceHps,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
    Ok(Box::new(Confidence {
        threshold: hps.threshold as f32,
    }))
}

impl UnseenTaskDetect for Confidence {
    fn learn(&mut self, _: usize, _: &Dataset) -> anyhow::Result<usize> {
        Ok(0)
    }
    fn detect(&self, input: &DetectInput) -> anyhow::Result<Vec<Detection>> {
        anyhow::ensure!(
            input.num_classes > 0 && input.probs.len() == input.truth.len() * input.num_classes,
            "expected {} class probabilities per sample",
            input.num_classes
        );
        Ok(input
            .probs
            .chunks(input.num_classes)
            .map(|p| {
                let top = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                Detection {
                    unseen: top < self.threshold,
                    score: 1.0 - top,
                }
            })
            .collect())
    }
}

// ---- PrototypeDistance ----------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `PrototypeDistance`'s hyperparameters. Class means alone cannot tell an unseen digit
    /// from a known one once several classes are known; the principal directions of each class
    /// can, far better (see `prototypes.rs`): hence 30 directions by default.
    #[derive(Debug, Clone, PartialEq)]
    pub struct PrototypeDistanceHps {
        pub prototypes_per_class: usize {
            kind: HpKind::Int { min: 1, max: 1024 },
            default: 1,
            help: "prototypes (k-means centres) kept for each class of a task",
        },
        pub subspace_dim: usize {
            kind: HpKind::Int { min: 0, max: 256 },
            default: 30,
            help: "principal directions kept with each centre; the distance is measured off that subspace (0: to the centre itself)",
        },
        pub quantile: f64 {
            kind: HpKind::Float { min: 0.5, max: 1.0 },
            default: 0.9,
            help: "a prototype's radius: this quantile of the distances of held-out samples of its class",
        },
        pub margin: f64 {
            kind: HpKind::Float { min: 0.01, max: 100.0 },
            default: 1.0,
            help: "unseen iff the distance to every centre exceeds margin × its radius",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds k-means and the principal directions (default: the job seed)",
        },
    }
}

pub struct PrototypeDistance {
    protos: Prototypes,
    margin: f32,
}

pub fn build_prototype_distance(
    hps: PrototypeDistanceHps,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
    let config = prototype_config(
        hps.prototypes_per_class,
        hps.subspace_dim,
        hps.quantile,
        hps.seed,
    );
    Ok(Box::new(PrototypeDistance {
        protos: Prototypes::new(dim(ctx), config),
        margin: hps.margin as f32,
    }))
}

impl UnseenTaskDetect for PrototypeDistance {
    fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize> {
        self.protos.learn(task, samples)
    }
    fn detect(&self, input: &DetectInput) -> anyhow::Result<Vec<Detection>> {
        if self.protos.is_empty() {
            return Ok(vec![
                Detection {
                    unseen: true,
                    score: f32::INFINITY
                };
                input.truth.len()
            ]);
        }
        Ok(self
            .protos
            .nearest(input.x)?
            .into_iter()
            .map(|n| Detection {
                unseen: n.ratio > self.margin,
                score: n.ratio,
            })
            .collect())
    }
}

// ---- Oracle and UploadAll -------------------------------------------------------------------

/// Knows which samples belong to unknown tasks: the upper bound of any detector.
pub struct OracleDetect;

pub fn build_oracle_detect(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
    Ok(Box::new(OracleDetect))
}

impl UnseenTaskDetect for OracleDetect {
    fn learn(&mut self, _: usize, _: &Dataset) -> anyhow::Result<usize> {
        Ok(0)
    }
    fn detect(&self, input: &DetectInput) -> anyhow::Result<Vec<Detection>> {
        Ok(input
            .truth
            .iter()
            .map(|&u| Detection {
                unseen: u,
                score: if u { 1.0 } else { 0.0 },
            })
            .collect())
    }
}

/// Flags everything: the whole stream goes to the cloud (transfer ratio 1).
pub struct UploadAll;

pub fn build_upload_all(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn UnseenTaskDetect>> {
    Ok(Box::new(UploadAll))
}

impl UnseenTaskDetect for UploadAll {
    fn learn(&mut self, _: usize, _: &Dataset) -> anyhow::Result<usize> {
        Ok(0)
    }
    fn detect(&self, input: &DetectInput) -> anyhow::Result<Vec<Detection>> {
        Ok(vec![
            Detection {
                unseen: true,
                score: 1.0
            };
            input.truth.len()
        ])
    }
}

// ---- Task allocation ------------------------------------------------------------------------

ianvs_paradigms::hyperparameters! {
    /// `NearestPrototype`'s hyperparameters: the classic rule (the nearest class mean) by
    /// default.
    #[derive(Debug, Clone, PartialEq)]
    pub struct NearestPrototypeHps {
        pub prototypes_per_class: usize {
            kind: HpKind::Int { min: 1, max: 1024 },
            default: 1,
            help: "prototypes (k-means centres) kept for each class of a task",
        },
        pub subspace_dim: usize {
            kind: HpKind::Int { min: 0, max: 256 },
            default: 0,
            help: "principal directions kept with each centre; the distance is measured off that subspace (0: to the centre itself)",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds k-means and the principal directions (default: the job seed)",
        },
    }
}

/// Allocates each sample to the task of its nearest prototype.
pub struct NearestPrototype {
    protos: Prototypes,
}

pub fn build_nearest_prototype(
    hps: NearestPrototypeHps,
    ctx: &BuildContext,
) -> anyhow::Result<Box<dyn TaskAllocation>> {
    // The radius quantile only matters for detection.
    let config = prototype_config(hps.prototypes_per_class, hps.subspace_dim, 0.95, hps.seed);
    Ok(Box::new(NearestPrototype {
        protos: Prototypes::new(dim(ctx), config),
    }))
}

impl TaskAllocation for NearestPrototype {
    fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize> {
        self.protos.learn(task, samples)
    }
    fn allocate(&self, x: &[f32], _: usize, _: &[usize]) -> anyhow::Result<Vec<usize>> {
        Ok(self
            .protos
            .nearest(x)?
            .into_iter()
            .map(|n| n.task)
            .collect())
    }
}

/// Allocates each sample to the task it came from (Ianvs's `TaskAllocationByOrigin`, which reads
/// it from metadata): the upper bound of allocation.
pub struct Origin;

pub fn build_origin(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn TaskAllocation>> {
    Ok(Box::new(Origin))
}

impl TaskAllocation for Origin {
    fn learn(&mut self, _: usize, _: &Dataset) -> anyhow::Result<usize> {
        Ok(0)
    }
    fn allocate(&self, x: &[f32], dim: usize, truth: &[usize]) -> anyhow::Result<Vec<usize>> {
        anyhow::ensure!(
            dim > 0 && x.len() == truth.len() * dim,
            "allocation input and truth disagree on the number of samples"
        );
        Ok(truth.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_flags_low_top_probability() {
        let d = Confidence { threshold: 0.8 };
        let probs = [0.9, 0.1, 0.6, 0.4];
        let out = d
            .detect(&DetectInput {
                x: &[0.0, 0.0],
                dim: 1,
                probs: &probs,
                num_classes: 2,
                truth: &[false, false],
            })
            .unwrap();
        assert_eq!(
            out.iter().map(|d| d.unseen).collect::<Vec<_>>(),
            [false, true]
        );
        assert!((out[1].score - 0.4).abs() < 1e-6);
    }

    #[test]
    fn prototype_distance_flags_everything_before_learning() {
        let ctx = BuildContext {
            input_shape: (1, 1, 2),
            num_classes: 2,
            seed: 0,
        };
        let h = PrototypeDistanceHps {
            prototypes_per_class: 1,
            subspace_dim: 0,
            quantile: 0.95,
            margin: 1.0,
            seed: 0,
        };
        let mut d = build_prototype_distance(h, &ctx).unwrap();
        let input = DetectInput {
            x: &[0.0, 0.0],
            dim: 2,
            probs: &[0.5, 0.5],
            num_classes: 2,
            truth: &[false],
        };
        assert!(d.detect(&input).unwrap()[0].unseen);
        let known = Dataset {
            dim: 2,
            features: vec![
                0.0, 0.0, 0.1, 0.0, 0.0, 0.1, 0.1, 0.1, 0.05, 0.05, 0.0, 0.05,
            ],
            labels: vec![0; 6],
            ..Default::default()
        };
        assert!(d.learn(0, &known).unwrap() > 0);
        assert!(!d.detect(&input).unwrap()[0].unseen);
        let far = DetectInput {
            x: &[5.0, 5.0],
            ..input
        };
        assert!(d.detect(&far).unwrap()[0].unseen);
    }
}
