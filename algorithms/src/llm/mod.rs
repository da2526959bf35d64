//! The project's own decoder-only LLM runtime (Llama and Qwen2 families) on candle ops.
//!
//! candle-transformers' models return logits for the last position only and keep their KV cache
//! inside the model, where it cannot be cut back. Speculative decoding (Leviathan et al. 2023;
//! Chen et al. 2023) needs the opposite: logits for *every* new position (to verify γ drafted
//! tokens in one pass) and a cache owned by the caller that can be truncated after a rejection.
//! So this module owns the model code:
//!
//! - [`LlmModel`] loads a GGUF file (weights stay quantized) or a Hugging Face folder
//!   (`config.json` + safetensors) and runs [`LlmModel::forward`] over any number of new tokens.
//! - [`KvCache`] is owned by the caller: [`KvCache::truncate`] rolls back rejected drafts.
//! - [`LlmTokenizer`] wraps `tokenizers`, from `tokenizer.json` or rebuilt from GGUF metadata.
//! - [`sampling`] turns logits into the processed probability vectors that greedy and
//!   rejection-sampling verification compare.
//!
//! On CPU the forward pass is *batch invariant*: the logits of a position are bit-identical
//! whether it is fed alone or inside a longer chunk (see `model.rs` for how), so greedy
//! speculative decoding reproduces target-only greedy decoding token for token.

mod cache;
mod config;
mod error;
mod gguf;
mod hf;
mod model;
pub mod profile;
pub mod sampling;
mod tokenizer;
mod weights;

pub use cache::KvCache;
pub use config::{Arch, LlmConfig, RopeScaling, RopeStyle};
pub use error::{LlmError, Result};
/// The own CPU kernels ([`kernels::Isa`] names a kernel set for [`LoadOptions::kernel_isa`]).
pub use ianvs_kernels as kernels;
pub use model::{AttentionBackend, DraftVocab, LlmModel, LoadOptions};
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::LlmTokenizer;
