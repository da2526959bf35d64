//! Image classifiers (MLP and LeNet-like CNN) trained with candle-nn on the CPU.
//!
//! They are the real models behind single-task learning (train on a split, test on another),
//! joint inference (a narrow MLP on the edge against a stronger CNN in the cloud) and lifelong
//! learning (fine-tuning across tasks, replay and EWC — Kirkpatrick et al. 2017, "Overcoming
//! catastrophic forgetting in neural networks"). Training can be resumed on new data at any
//! time, and the parameters are reachable by name for Fisher information and snapshots.
//!
//! Everything that decides a result is seeded: weights come from a `ChaCha8Rng` seeded with the
//! model seed (candle's CPU `randn` cannot be seeded), and the order of the samples in each
//! epoch from a `ChaCha8Rng` seeded with [`TrainConfig::seed`].
//!
//! The CNN does not use candle's `conv2d`/`max_pool2d`: their CPU backward passes are slow
//! (`conv_transpose2d` is a direct loop) and, for `max_pool2d`, scaled wrong; `conv.rs` builds
//! conv → ReLU → pool from im2col gathers and matmuls instead (10x faster training). Weights keep
//! PyTorch's layouts (`[out, in, 5, 5]`, `[out, in]`, NCHW flattening before `fc1`).

mod conv;
mod error;
mod io;
mod model;
mod optim;

use serde::{Deserialize, Serialize};
use std::fmt;

pub use error::{ClassifierError, Result};
pub use model::{ewc_penalty, Classifier, Penalty};

/// The network a [`Classifier`] runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Flattens the input, then `Linear → ReLU` for every hidden width, then a linear classifier.
    /// `hidden: []` is multinomial logistic regression.
    Mlp { hidden: Vec<usize> },
    /// LeNet-like: `conv5x5(pad 2) → ReLU → maxpool2 → conv5x5 → ReLU → maxpool2 → Linear(fc_hidden)
    /// → ReLU → Linear(classes)`. Needs inputs of at least 12×12 pixels.
    Cnn {
        conv_channels: (usize, usize),
        fc_hidden: usize,
    },
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Architecture::Mlp { hidden } => {
                let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
                write!(f, "mlp[{}]", widths.join(","))
            }
            Architecture::Cnn {
                conv_channels: (c1, c2),
                fc_hidden,
            } => write!(f, "cnn[{c1},{c2};fc {fc_hidden}]"),
        }
    }
}

/// The optimiser used by [`Classifier::train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerKind {
    /// Plain SGD with PyTorch-style momentum (`v = μ·v + g; θ -= lr·v`); `momentum: 0` is plain SGD.
    Sgd { momentum: f64 },
    /// Adam (Kingma & Ba 2015) with β = (0.9, 0.999), ε = 1e-8: AdamW without weight decay.
    Adam,
    /// AdamW (Loshchilov & Hutter 2019), decoupled weight decay.
    AdamW { weight_decay: f64 },
}

/// How [`Classifier::train`] trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    /// Seeds the shuffling of the samples in each epoch.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// Adam, learning rate 1e-3, batches of 64, one epoch, seed 0.
    fn default() -> Self {
        Self {
            epochs: 1,
            learning_rate: 1e-3,
            batch_size: 64,
            optimizer: OptimizerKind::Adam,
            seed: 0,
        }
    }
}

/// What one epoch of training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based index of the epoch within one `train` call.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's samples, measured on each batch before its update
    /// (any extra penalty of [`Classifier::train_with_penalty`] is not included).
    pub loss: f64,
    /// Wall-clock seconds the epoch took.
    pub seconds: f64,
}

/// What one `train` call did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    pub epochs: Vec<EpochStats>,
    /// Wall-clock seconds of the whole call.
    pub seconds: f64,
}

/// Share of samples whose most probable class (first one on ties) equals the label.
///
/// `probs` is row-major `[n, num_classes]` as returned by [`Classifier::predict_proba`].
pub fn accuracy(probs: &[f32], y: &[u32], num_classes: usize) -> Result<f64> {
    let predicted = argmax_rows(probs, num_classes)?;
    if predicted.len() != y.len() {
        return Err(ClassifierError::LabelCount {
            samples: predicted.len(),
            labels: y.len(),
        });
    }
    if y.is_empty() {
        return Ok(0.0);
    }
    let correct = predicted.iter().zip(y).filter(|(p, t)| p == t).count();
    Ok(correct as f64 / y.len() as f64)
}

/// The index of the largest value of each row of a row-major `[n, num_classes]` matrix (first
/// one on ties; NaN never wins).
pub fn argmax_rows(probs: &[f32], num_classes: usize) -> Result<Vec<u32>> {
    if num_classes == 0 || !probs.len().is_multiple_of(num_classes) {
        return Err(ClassifierError::InputLength {
            len: probs.len(),
            features: num_classes,
        });
    }
    Ok(probs
        .chunks_exact(num_classes)
        .map(|row| {
            let mut best = 0;
            for (i, &p) in row.iter().enumerate() {
                if p > row[best] || (row[best].is_nan() && !p.is_nan()) {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_argmax_matches() {
        let probs = [0.1, 0.9, 0.8, 0.2, 0.5, 0.5];
        assert_eq!(argmax_rows(&probs, 2).unwrap(), vec![1, 0, 0]);
        let acc = accuracy(&probs, &[1, 1, 0], 2).unwrap();
        assert!((acc - 2.0 / 3.0).abs() < 1e-12);
        assert!(accuracy(&probs, &[1, 1], 2).is_err());
        assert!(accuracy(&probs[..5], &[1, 1], 2).is_err());
    }

    #[test]
    fn argmax_skips_nan() {
        assert_eq!(argmax_rows(&[f32::NAN, 0.2, 0.3], 3).unwrap(), vec![2]);
    }

    #[test]
    fn architecture_serde_and_display() {
        let cnn = Architecture::Cnn {
            conv_channels: (8, 16),
            fc_hidden: 64,
        };
        let json = serde_json::to_string(&cnn).unwrap();
        assert_eq!(
            json,
            r#"{"type":"cnn","conv_channels":[8,16],"fc_hidden":64}"#
        );
        assert_eq!(serde_json::from_str::<Architecture>(&json).unwrap(), cnn);
        assert_eq!(cnn.to_string(), "cnn[8,16;fc 64]");
        let mlp = Architecture::Mlp {
            hidden: vec![128, 64],
        };
        assert_eq!(mlp.to_string(), "mlp[128,64]");
        let bad = serde_json::from_str::<Architecture>(r#"{"type":"mlp","hiden":[3]}"#);
        assert!(bad.is_err());
    }
}
