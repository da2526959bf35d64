//! The narrow traits a paradigm calls on its modules.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;

use crate::data::Dataset;

/// What a module constructor may need to know about the data it will see.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// (channels, height, width) of one input; (1, 1, dim) for flat features.
    pub input_shape: (usize, usize, usize),
    pub num_classes: usize,
    /// Job-level default seed (`ianvs run --seed`), used when a module has no `seed` of its own.
    pub seed: u64,
}

/// Progress and cancellation handed to long-running module work.
pub struct WorkContext<'a> {
    /// The per-case bar (hidden when quiet or not a terminal).
    pub progress: &'a ProgressBar,
    pub cancel: &'a AtomicBool,
}

impl WorkContext<'_> {
    pub fn check_cancelled(&self) -> anyhow::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            anyhow::bail!("cancelled (Ctrl-C)");
        }
        Ok(())
    }
}

/// What a training run reports back.
#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    pub seconds: f64,
    pub final_loss: f64,
    pub epochs: usize,
}

/// A classifier a paradigm can train and query (module type `basemodel`; also edge and cloud
/// models of joint inference).
pub trait BaseModel: Send + Sync {
    fn train(&mut self, train: &Dataset, work: &WorkContext) -> anyhow::Result<TrainReport>;
    /// Class probabilities for `n` samples (row-major `[n, dim]` in, `[n, classes]` out).
    fn predict_proba(&self, x: &[f32]) -> anyhow::Result<Vec<f32>>;
    fn num_classes(&self) -> usize;
    fn num_parameters(&self) -> usize;
}
