//! Model hyperparameters shared by the GGUF and Hugging Face loaders, and RoPE frequencies.

use std::fmt;

/// Architectures the runtime implements, as named by GGUF `general.architecture` and by HF
/// `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama, Llama 2/3, TinyLlama, SmolLM/SmolLM2: RMSNorm, RoPE, GQA, SwiGLU, no biases.
    Llama,
    /// Qwen2 / Qwen2.5: the Llama block plus biases on the q, k and v projections.
    Qwen2,
}

impl Arch {
    /// The comma-separated list used in "unsupported architecture" errors.
    pub const SUPPORTED: &'static str = "llama, qwen2";

    /// Parses a GGUF `general.architecture` or HF `model_type` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The canonical lowercase name (also the GGUF metadata key prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How RoPE pairs the dimensions of a head.
///
/// Hugging Face checkpoints rotate dimension `i` with `i + d/2` ("NeoX"). llama.cpp's converter
/// permutes the q/k weights of Llama models so that adjacent dimensions `2i, 2i+1` rotate
/// together ("interleaved"); it leaves Qwen2 in NeoX order. Using the wrong one silently ruins
/// the model, so the loader decides it from the file format and architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)`: GGUF Llama.
    Interleaved,
    /// Pairs `(i, i + d/2)`: HF checkpoints, GGUF Qwen2.
    Neox,
}

/// RoPE frequency scaling for long-context checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor` (HF `rope_scaling.type = "linear"`).
    Linear { factor: f32 },
    /// Llama 3.1 frequency-dependent scaling (HF `rope_type = "llama3"`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors read from a GGUF `rope_freqs.weight` tensor (how llama.cpp stores
    /// Llama 3.1 scaling).
    FreqFactors(Vec<f32>),
}

/// Hyperparameters of a loaded model. Fields are public so callers can read what they need;
/// the loaders validate them before a model is built.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub arch: Arch,
    /// Rows of the embedding matrix = width of the logits.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Context length the model was trained for; `forward` refuses to go past it.
    pub max_seq_len: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<RopeScaling>,
    /// Whether q, k and v projections carry biases (Qwen2).
    pub attention_bias: bool,
    /// Whether the output head reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// All end-of-sequence ids (Llama 3 lists several); the first is the primary one.
    pub eos_token_ids: Vec<u32>,
}

impl LlmConfig {
    /// The primary end-of-sequence id, if known.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_ids.first().copied()
    }

    /// Whether `id` ends a sequence.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }

    /// Checks the relations between fields that the forward pass relies on. Returns the reason
    /// for the first violation.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(format!(
                "n_heads ({}) must be a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta ({}) must be positive", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps ({}) must be >= 0", self.rms_norm_eps));
        }
        if let Some(RopeScaling::FreqFactors(f)) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return Err(format!(
                    "rope frequency factors have {} entries, expected head_dim / 2 = {}",
                    f.len(),
                    self.head_dim / 2
                ));
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies, one per rotated pair (`head_dim / 2` values), with scaling
    /// applied. Computed in f32 as Hugging Face does, so HF checkpoints see the same angles.
    pub(crate) fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f32 / dim as f32))
            .collect();
        match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::FreqFactors(factors)) => {
                base.iter().zip(factors).map(|(f, d)| f / d).collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                // transformers' `_compute_llama3_parameters`.
                let old_ctx = *original_max_position_embeddings as f32;
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LlmConfig {
        LlmConfig {
            arch: Arch::Llama,
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            max_seq_len: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_style: RopeStyle::Neox,
            rope_scaling: None,
            attention_bias: false,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn inv_freq_matches_formula() {
        let c = cfg();
        assert_eq!(c.rope_inv_freq(), vec![1.0, 1.0 / 100.0]);
        let mut lin = cfg();
        lin.rope_scaling = Some(RopeScaling::Linear { factor: 2.0 });
        assert_eq!(lin.rope_inv_freq(), vec![0.5, 1.0 / 200.0]);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let mut c = cfg();
        c.head_dim = 64;
        c.rope_theta = 500_000.0;
        c.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        let scaled = c.rope_inv_freq();
        c.rope_scaling = None;
        let plain = c.rope_inv_freq();
        assert_eq!(scaled[0], plain[0], "highest frequency is untouched");
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn check_rejects_bad_gqa() {
        let mut c = cfg();
        c.n_heads = 3;
        c.n_kv_heads = 2;
        assert!(c.check().unwrap_err().contains("multiple"));
    }
}
