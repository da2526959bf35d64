//! The errors a classifier reports: bad input, bad configuration, divergence, bad files.

use std::path::PathBuf;

pub type Result<T, E = ClassifierError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("invalid classifier: {0}")]
    InvalidModel(String),

    #[error("invalid training configuration: {0}")]
    InvalidTrainConfig(String),

    #[error(
        "the input has {len} values, which is not a whole number of samples of {features} values \
         each"
    )]
    InputLength { len: usize, features: usize },

    #[error("a single sample must have exactly {features} values, got {len}")]
    SampleLength { len: usize, features: usize },

    #[error("sample {sample} has a non-finite value ({value}) at position {position}")]
    NonFinite {
        sample: usize,
        position: usize,
        value: f32,
    },

    #[error("the input holds {samples} samples but {labels} labels were given")]
    LabelCount { samples: usize, labels: usize },

    #[error(
        "label {label} of sample {index} is out of range: the classifier has {num_classes} \
         classes (0..{num_classes})"
    )]
    LabelOutOfRange {
        index: usize,
        label: u32,
        num_classes: usize,
    },

    #[error("no samples to {0}")]
    Empty(&'static str),

    #[error(
        "training diverged: the loss became {loss} in epoch {epoch}, batch {batch}; lower the \
         learning rate or check the input for NaN/inf values"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f64,
    },

    /// The caller's progress callback asked to stop (Ctrl-C).
    #[error("training cancelled")]
    Cancelled,

    #[error("the penalty must be a scalar tensor, got shape {0:?}")]
    PenaltyShape(Vec<usize>),

    #[error("parameter {name:?}: {reason}")]
    Parameter { name: String, reason: String },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid ianvs classifier file: {reason}")]
    Format { path: PathBuf, reason: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
