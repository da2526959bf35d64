//! Training the project's own small Llama-architecture language models on CPU with candle.
//!
//! No model hub is reachable from where ianvs is built and tested, so the draft/verifier pair
//! that speculative decoding runs on (Leviathan et al. 2023, "Fast Inference from Transformers
//! via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
//! Speculative Sampling") is trained here, by `ianvs train-lm`:
//!
//! - [`corpus`]: fortune-style text files → cleaned, de-duplicated documents → a seed-free
//!   train/validation split;
//! - [`tokenizer`]: a byte-level BPE tokenizer trained with the `tokenizers` crate (shared by
//!   both models: speculative decoding needs one vocabulary);
//! - [`model`]: a trainable Llama (RMSNorm, RoPE, GQA, SwiGLU) in a candle-nn `VarMap` under
//!   Hugging Face tensor names, initialised from a seeded `ChaCha8Rng`;
//! - [`train`]: AdamW, warm-up + cosine schedule, gradient clipping, exact validation loss;
//! - [`export`]: `model.safetensors` + `config.json` + `tokenizer.json`, loadable by the
//!   inference runtime in [`crate::llm`];
//! - [`pipeline`]: the whole job and the draft/verifier presets.

pub mod corpus;
mod error;
pub mod export;
pub mod model;
mod ops;
pub mod pipeline;
pub mod tokenizer;
pub mod train;

pub use error::{LmTrainError, Result};
pub use export::WeightDtype;
pub use model::{LmShape, TrainLlama};
pub use pipeline::{
    greedy_complete, run_job, ArchSpec, Event, Preset, TokenizerSource, TrainLmJob, TrainLmOutcome,
    PRESET_VOCAB_SIZE,
};
pub use train::{TrainReport, TrainSettings};
