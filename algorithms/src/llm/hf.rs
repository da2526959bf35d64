//! Hugging Face folder loading: `config.json` plus `model.safetensors`, a sharded
//! `model.safetensors.index.json`, or any `*.safetensors` files in the folder.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::config::{Arch, LlmConfig, RopeScaling, RopeStyle};
use super::error::{LlmError, Result};
use super::weights::{RawTensor, TensorSource};

/// The `config.json` fields the Llama and Qwen2 families use. HF configs carry many more keys
/// (training settings, generation defaults); they are ignored on purpose.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f32,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_sliding_window: bool,
    sliding_window: Option<usize>,
    bos_token_id: Option<IdOrIds>,
    eos_token_id: Option<IdOrIds>,
}

fn default_rope_theta() -> f32 {
    10_000.0
}

/// `eos_token_id` is an int in most configs and a list in Llama 3.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdOrIds {
    One(u32),
    Many(Vec<u32>),
}

impl IdOrIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![id],
            Self::Many(ids) => ids,
        }
    }
}

/// Reads and validates `config.json`.
fn read_config(dir: &Path) -> Result<LlmConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(LlmError::MissingFile {
            what: "config.json",
            path,
            hint: "; a Hugging Face model folder needs config.json next to its *.safetensors"
                .into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LlmError::io(&path, e))?;
    let raw: HfConfig = serde_json::from_str(&text).map_err(|e| LlmError::InvalidFile {
        what: "config.json",
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let bad = |key: &str, reason: String| LlmError::BadMetadata {
        path: path.clone(),
        key: key.to_string(),
        reason,
    };

    // `model_type` is the reliable field; fall back to the class name in `architectures`.
    let type_name = raw.model_type.clone().or_else(|| {
        raw.architectures.first().map(|a| match a.as_str() {
            "LlamaForCausalLM" => "llama".to_string(),
            "Qwen2ForCausalLM" => "qwen2".to_string(),
            other => other.to_string(),
        })
    });
    let type_name = type_name.ok_or_else(|| bad("model_type", "missing".into()))?;
    let arch = Arch::parse(&type_name).ok_or_else(|| LlmError::UnsupportedArch {
        arch: type_name.clone(),
        path: path.clone(),
        supported: Arch::SUPPORTED,
    })?;

    let rope_scaling = match &raw.rope_scaling {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => parse_rope_scaling(v).map_err(|r| bad("rope_scaling", r))?,
    };
    // Sliding-window attention only changes results past the window; capping the context
    // there keeps every result exact instead of silently attending too far.
    let mut max_seq_len = raw.max_position_embeddings;
    if raw.use_sliding_window {
        if let Some(w) = raw.sliding_window {
            max_seq_len = max_seq_len.min(w);
        }
    }
    if raw.num_attention_heads == 0 {
        return Err(bad("num_attention_heads", "must be positive".into()));
    }
    Ok(LlmConfig {
        arch,
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        n_layers: raw.num_hidden_layers,
        n_heads: raw.num_attention_heads,
        n_kv_heads: raw.num_key_value_heads.unwrap_or(raw.num_attention_heads),
        head_dim: raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads),
        max_seq_len,
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta: raw.rope_theta,
        rope_style: RopeStyle::Neox,
        rope_scaling,
        attention_bias: arch == Arch::Qwen2 || raw.attention_bias,
        tie_word_embeddings: raw.tie_word_embeddings,
        bos_token_id: raw
            .bos_token_id
            .map(IdOrIds::into_vec)
            .and_then(|v| v.first().copied()),
        eos_token_ids: raw.eos_token_id.map(IdOrIds::into_vec).unwrap_or_default(),
    })
}

fn parse_rope_scaling(v: &serde_json::Value) -> std::result::Result<Option<RopeScaling>, String> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .ok_or("expected a `rope_type` (or `type`) string")?;
    let num = |key: &str| -> std::result::Result<f32, String> {
        v.get(key)
            .and_then(|x| x.as_f64())
            .map(|x| x as f32)
            .ok_or_else(|| format!("`{key}` is missing or not a number"))
    };
    match kind {
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: num("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: v
                .get("original_max_position_embeddings")
                .and_then(|x| x.as_u64())
                .and_then(|x| usize::try_from(x).ok())
                .ok_or("`original_max_position_embeddings` is missing or not an integer")?,
        })),
        "default" => Ok(None),
        other => Err(format!(
            "RoPE scaling `{other}` is not supported (supported: linear, llama3)"
        )),
    }
}

/// The safetensors files of the folder, in a stable order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|e| LlmError::io(&index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| LlmError::InvalidFile {
            what: "safetensors index",
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
        let files: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(LlmError::MissingFile {
                what: "safetensors shard",
                path: missing.clone(),
                hint: format!("; it is listed in {}", index.display()),
            });
        }
        return Ok(files);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| LlmError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LlmError::io(dir, e))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        let hint = if dir.join("pytorch_model.bin").exists() {
            "; only pytorch_model.bin was found: convert it to safetensors"
        } else {
            "; expected model.safetensors or model.safetensors.index.json"
        };
        return Err(LlmError::MissingFile {
            what: "safetensors weights",
            path: single,
            hint: hint.into(),
        });
    }
    Ok(files)
}

/// All tensors of the folder's safetensors files, held on the CPU until the builder converts
/// them.
pub(crate) struct HfSource {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl TensorSource for HfSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn take(&mut self, name: &str) -> Result<Option<RawTensor>> {
        Ok(self.tensors.remove(name).map(RawTensor::Dense))
    }
}

/// Opens a Hugging Face folder: its configuration and its tensors.
///
/// The files are read into memory rather than memory-mapped (mapping needs `unsafe` and the
/// models this runs on CPU are small). Tensors stay on the CPU in their stored dtype; the
/// builder converts each one for the model device as it takes it.
pub(crate) fn open(dir: &Path) -> Result<(LlmConfig, HfSource)> {
    let config = read_config(dir)?;
    let mut tensors = HashMap::new();
    for file in weight_files(dir)? {
        let bytes = std::fs::read(&file).map_err(|e| LlmError::io(&file, e))?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            LlmError::InvalidFile {
                what: "safetensors file",
                path: file.clone(),
                reason: e.to_string(),
            }
        })?;
        tensors.extend(loaded);
    }
    Ok((
        config,
        HfSource {
            path: dir.to_path_buf(),
            tensors,
        },
    ))
}
