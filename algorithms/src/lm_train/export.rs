//! Export to a Hugging Face model folder: `model.safetensors`, `config.json`,
//! `tokenizer.json` and `tokenizer_config.json`, loadable by `crate::llm::LlmModel::load` (and
//! by `transformers`' `LlamaForCausalLM`).
//!
//! Files are written to a temporary name and renamed into place, so an interrupted export never
//! leaves a half-written model behind a complete-looking name.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde_json::json;
use tokenizers::Tokenizer;

use super::error::{LmTrainError, Result};
use super::model::{LmShape, TrainLlama};
use super::tokenizer::{end_of_text_id, END_OF_TEXT};

/// Storage type of exported weights (the model always computes in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    /// Half the size of f32; 10 mantissa bits keep small weights accurate.
    F16,
    Bf16,
}

impl WeightDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ianvs_paradigms::fsio::atomic_write(path, bytes).map_err(|e| LmTrainError::io(path, e))
}

/// The `config.json` of a model of this shape, in `transformers`' `LlamaConfig` keys.
pub fn config_json(shape: &LmShape, eot: u32, dtype: DType) -> serde_json::Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim(),
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_theta": shape.rope_theta,
        "rope_scaling": null,
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": shape.tie_word_embeddings,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": dtype_name(dtype),
        "initializer_range": 0.02,
    })
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

/// Writes the model (weights stored as `dtype`) and its tokenizer into `dir` (created if
/// needed). Round the model through the same dtype first ([`TrainLlama::round_through`]) when
/// the losses you report must describe the file.
pub fn save_hf_folder(
    model: &TrainLlama,
    tokenizer: &Tokenizer,
    dir: &Path,
    dtype: WeightDtype,
) -> Result<()> {
    let dtype = dtype.dtype();
    let vocab = tokenizer.get_vocab_size(true);
    if vocab != model.shape().vocab_size {
        return Err(LmTrainError::Settings(format!(
            "the tokenizer has {vocab} ids but the model's vocabulary is {}",
            model.shape().vocab_size
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| LmTrainError::io(dir, e))?;
    let eot = end_of_text_id(tokenizer)?;

    let tensors: HashMap<String, Tensor> = model
        .tensors()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(dtype)?)))
        .collect::<Result<_>>()?;
    let weights = dir.join("model.safetensors");
    ianvs_paradigms::fsio::atomic_write_with(
        &weights,
        |tmp| candle_core::safetensors::save(&tensors, tmp).map_err(LmTrainError::from),
        |p, e| LmTrainError::io(p, e),
    )?;

    let config = config_json(model.shape(), eot, dtype);
    write_json(&dir.join("config.json"), &config)?;
    let tok_json = tokenizer
        .to_string(false)
        .map_err(|e| LmTrainError::Tokenizer(e.to_string()))?;
    write_atomic(&dir.join("tokenizer.json"), tok_json.as_bytes())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": END_OF_TEXT,
            "eos_token": END_OF_TEXT,
            "unk_token": null,
            "add_prefix_space": false,
            "model_max_length": model.shape().max_position_embeddings,
        }),
    )
}

/// Pretty-printed JSON, written atomically, ending with a newline.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| LmTrainError::InvalidFile {
        what: "JSON value for",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads the [`LmShape`] of a folder's `config.json` (Llama models only).
pub fn read_shape(dir: &Path) -> Result<LmShape> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| LmTrainError::io(&path, e))?;
    let invalid = |reason: String| LmTrainError::InvalidFile {
        what: "config.json",
        path: path.clone(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if v.get("model_type").and_then(|t| t.as_str()) != Some("llama") {
        return Err(invalid("`model_type` must be \"llama\"".into()));
    }
    let int = |key: &str| -> Result<usize> {
        v.get(key)
            .and_then(|x| x.as_u64())
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| invalid(format!("`{key}` is missing or not a non-negative integer")))
    };
    let num = |key: &str, default: f64| -> Result<f64> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| invalid(format!("`{key}` is not a number"))),
        }
    };
    let heads = int("num_attention_heads")?;
    let shape = LmShape {
        vocab_size: int("vocab_size")?,
        hidden_size: int("hidden_size")?,
        intermediate_size: int("intermediate_size")?,
        num_layers: int("num_hidden_layers")?,
        num_heads: heads,
        num_kv_heads: v
            .get("num_key_value_heads")
            .map_or(Ok(heads), |_| int("num_key_value_heads"))?,
        max_position_embeddings: int("max_position_embeddings")?,
        rope_theta: num("rope_theta", 10_000.0)? as f32,
        rms_norm_eps: num("rms_norm_eps", 1e-6)?,
        tie_word_embeddings: v
            .get("tie_word_embeddings")
            .and_then(|x| x.as_bool())
            .unwrap_or(false),
    };
    if let Some(hd) = v.get("head_dim").filter(|x| !x.is_null()) {
        if hd.as_u64() != Some((shape.hidden_size / heads.max(1)) as u64) {
            return Err(invalid(
                "`head_dim` must equal hidden_size / num_attention_heads for a trainable model"
                    .into(),
            ));
        }
    }
    if v.get("rope_scaling").is_some_and(|x| !x.is_null()) {
        return Err(invalid("RoPE scaling is not supported for training".into()));
    }
    shape.check()?;
    Ok(shape)
}
