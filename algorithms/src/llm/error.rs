//! The error type of the LLM runtime: one variant per thing a user can get wrong.

use std::path::PathBuf;

/// Result alias used throughout [`crate::llm`].
pub type Result<T> = std::result::Result<T, LlmError>;

/// Everything that can go wrong while loading or running a model, tokenizer or sampler.
///
/// Messages are meant for the person who pointed a config at a file: they name the file, the
/// key or tensor, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file the format requires is absent.
    #[error("missing {what}: {} does not exist{hint}", path.display())]
    MissingFile {
        what: &'static str,
        path: PathBuf,
        /// Extra advice, starting with "; " when present.
        hint: String,
    },

    /// The path is neither a GGUF file nor a Hugging Face model folder.
    #[error(
        "{} is not a model: expected a GGUF file (magic `GGUF`) or a Hugging Face folder \
         with config.json and *.safetensors",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// The model declares an architecture this runtime does not implement.
    #[error(
        "unsupported architecture `{arch}` in {}; supported architectures: {supported}",
        path.display()
    )]
    UnsupportedArch {
        arch: String,
        path: PathBuf,
        supported: &'static str,
    },

    /// A file exists but its content is malformed (truncated, bad header, bad JSON, ...).
    #[error("invalid {what} {}: {reason}", path.display())]
    InvalidFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    /// A GGUF metadata key or config.json field is missing or has the wrong type or value.
    #[error("{}: {key}: {reason}", path.display())]
    BadMetadata {
        path: PathBuf,
        key: String,
        reason: String,
    },

    /// A weight tensor the architecture needs is absent.
    #[error("{}: missing tensor `{name}`", path.display())]
    MissingTensor { path: PathBuf, name: String },

    /// A weight tensor has a shape that disagrees with the model configuration.
    #[error("{}: tensor `{name}` has shape {actual:?}, expected {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A token id outside the model's vocabulary (embedding rows).
    #[error("token id {id} is out of range: the vocabulary has {vocab_size} entries")]
    TokenOutOfRange { id: u32, vocab_size: usize },

    /// `forward` was called with no tokens.
    #[error("forward needs at least one new token")]
    EmptyInput,

    /// The sequence would grow past the model's context length.
    #[error("sequence of {needed} tokens exceeds the model's context length of {max} tokens")]
    ContextOverflow { needed: usize, max: usize },

    /// A KV cache was used with a model it was not created for, or cut to an invalid length.
    #[error("KV cache: {0}")]
    Cache(String),

    /// Building or running a tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A valid request this runtime does not implement (e.g. a model feature).
    #[error("{0}")]
    Unsupported(String),

    /// Invalid sampling parameters or probability vectors.
    #[error("sampling: {0}")]
    Sampling(String),

    /// An error from a candle tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl LlmError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ianvs_paradigms::sampling::SamplingError> for LlmError {
    fn from(e: ianvs_paradigms::sampling::SamplingError) -> Self {
        LlmError::Sampling(e.0)
    }
}
