//! The errors of LM training: bad corpus, bad shape or settings, divergence, bad files.

use std::path::PathBuf;

/// Result alias used throughout [`crate::lm_train`].
pub type Result<T, E = LmTrainError> = std::result::Result<T, E>;

/// Everything that can go wrong while preparing data for, training or exporting a language
/// model. Messages name the file, flag or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum LmTrainError {
    /// A file or folder could not be read or written.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The corpus is unusable (no documents, too few for a validation split, not UTF-8, ...).
    #[error("corpus: {0}")]
    Corpus(String),

    /// The model shape is inconsistent (e.g. heads do not divide the hidden size).
    #[error("invalid model shape: {0}")]
    Shape(String),

    /// A training setting is out of range.
    #[error("invalid training setting: {0}")]
    Settings(String),

    /// Training, loading or saving the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The loss became NaN or infinite.
    #[error(
        "training diverged: the loss became {loss} at step {step}; lower --lr or raise --warmup"
    )]
    Diverged { step: usize, loss: f32 },

    /// The progress callback asked to stop (Ctrl-C).
    #[error("training cancelled")]
    Cancelled,

    /// A saved model folder is malformed.
    #[error("invalid {what} {}: {reason}", path.display())]
    InvalidFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// A tensor operation failed (a bug or an exhausted resource, not bad input).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LmTrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
