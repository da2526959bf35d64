//! GGUF loading: hyperparameters from `<arch>.*` metadata, tensors kept quantized.
//!
//! Keys follow llama.cpp's naming (`llama.block_count`, `qwen2.attention.head_count_kv`, ...);
//! see `gguf-py/gguf/constants.py` in llama.cpp for the list.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Device;

use super::config::{Arch, LlmConfig, RopeScaling, RopeStyle};
use super::error::{LlmError, Result};
use super::weights::{RawTensor, TensorSource};

/// Whether the file starts with the GGUF magic.
pub(crate) fn is_gguf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|e| LlmError::io(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(LlmError::io(path, e)),
    }
}

/// Reads the header (metadata and tensor directory) of a GGUF file.
pub(crate) fn read_content(path: &Path) -> Result<(Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| LlmError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| LlmError::InvalidFile {
        what: "GGUF file",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((content, reader))
}

/// Typed access to GGUF metadata with errors that name the file and key.
pub(crate) struct Metadata<'a> {
    pub(crate) content: &'a Content,
    pub(crate) path: &'a Path,
}

impl Metadata<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> LlmError {
        LlmError::BadMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// An unsigned integer of any GGUF integer type; `Ok(None)` when absent.
    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match *v {
            Value::U8(x) => Some(u64::from(x)),
            Value::U16(x) => Some(u64::from(x)),
            Value::U32(x) => Some(u64::from(x)),
            Value::U64(x) => Some(x),
            Value::I8(x) => u64::try_from(x).ok(),
            Value::I16(x) => u64::try_from(x).ok(),
            Value::I32(x) => u64::try_from(x).ok(),
            Value::I64(x) => u64::try_from(x).ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| self.bad(key, format!("expected a non-negative integer, found {v:?}")))
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.opt_u64(key)?
            .map(|n| usize::try_from(n).map_err(|_| self.bad(key, format!("{n} is too large"))))
            .transpose()
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.bad(key, "required key is missing"))
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_u64(key)?
            .map(|n| u32::try_from(n).map_err(|_| self.bad(key, format!("{n} is too large"))))
            .transpose()
    }

    pub(crate) fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.bad(key, format!("expected a float, found {v:?}"))),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, format!("expected a bool, found {v:?}"))),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.bad(key, format!("expected a string, found {v:?}"))),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?
            .ok_or_else(|| self.bad(key, "required key is missing"))
    }

    /// An array of strings (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        let Some(v) = self.get(key) else {
            return Err(self.bad(key, "required key is missing"));
        };
        let Value::Array(items) = v else {
            return Err(self.bad(key, "expected an array of strings"));
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(self.bad(key, format!("expected strings, found {other:?}"))),
            })
            .collect()
    }

    /// An optional array of numbers as f32 (`tokenizer.ggml.scores`).
    pub(crate) fn opt_f32s(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad(key, "expected an array of numbers"));
        };
        items
            .iter()
            .map(|item| match *item {
                Value::F32(x) => Ok(x),
                Value::F64(x) => Ok(x as f32),
                ref other => Err(self.bad(key, format!("expected floats, found {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An optional array of integers (`tokenizer.ggml.token_type`).
    pub(crate) fn opt_i64s(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad(key, "expected an array of integers"));
        };
        items
            .iter()
            .map(|item| match *item {
                Value::I8(x) => Ok(i64::from(x)),
                Value::U8(x) => Ok(i64::from(x)),
                Value::I16(x) => Ok(i64::from(x)),
                Value::U16(x) => Ok(i64::from(x)),
                Value::I32(x) => Ok(i64::from(x)),
                Value::U32(x) => Ok(i64::from(x)),
                Value::I64(x) => Ok(x),
                ref other => Err(self.bad(key, format!("expected integers, found {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// Tensors of an open GGUF file, read on demand.
pub(crate) struct GgufSource {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
    device: Device,
}

impl TensorSource for GgufSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn take(&mut self, name: &str) -> Result<Option<RawTensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        let t = self
            .content
            .tensor(&mut self.reader, name, &self.device)
            .map_err(|e| LlmError::InvalidFile {
                what: "GGUF file",
                path: self.path.clone(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
        Ok(Some(RawTensor::Quant(t)))
    }
}

/// Opens a GGUF model: its configuration and a source for its tensors.
pub(crate) fn open(path: &Path, device: &Device) -> Result<(LlmConfig, GgufSource)> {
    let (content, reader) = read_content(path)?;
    let mut source = GgufSource {
        path: path.to_path_buf(),
        content,
        reader,
        device: device.clone(),
    };
    let config = config_from_metadata(&mut source)?;
    Ok((config, source))
}

fn config_from_metadata(src: &mut GgufSource) -> Result<LlmConfig> {
    let md = Metadata {
        content: &src.content,
        path: &src.path,
    };
    let arch_name = md.str("general.architecture")?;
    let arch = Arch::parse(arch_name).ok_or_else(|| LlmError::UnsupportedArch {
        arch: arch_name.to_string(),
        path: src.path.clone(),
        supported: Arch::SUPPORTED,
    })?;
    let key = |k: &str| format!("{arch}.{k}");

    if md.opt_usize(&key("expert_count"))?.unwrap_or(0) > 1 {
        return Err(LlmError::Unsupported(format!(
            "{}: mixture-of-experts models are not supported",
            src.path.display()
        )));
    }
    let hidden_size = md.usize(&key("embedding_length"))?;
    let n_heads = md.usize(&key("attention.head_count"))?;
    let n_kv_heads = md
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(n_heads);
    let head_dim = match md.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if n_heads > 0 => hidden_size / n_heads,
        None => 0,
    };
    if let Some(v) = md.opt_usize(&key("attention.value_length"))? {
        if v != head_dim {
            return Err(md.bad(
                &key("attention.value_length"),
                format!("value head size {v} differs from key head size {head_dim}; not supported"),
            ));
        }
    }
    if let Some(rope_dim) = md.opt_usize(&key("rope.dimension_count"))? {
        if rope_dim != head_dim {
            return Err(md.bad(
                &key("rope.dimension_count"),
                format!(
                    "partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported"
                ),
            ));
        }
    }
    let mut rope_scaling = match md.opt_str(&key("rope.scaling.type"))? {
        None | Some("none") => None,
        Some("linear") => {
            let factor = md.opt_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
            (factor != 1.0).then_some(RopeScaling::Linear { factor })
        }
        Some(other) => {
            return Err(md.bad(
                &key("rope.scaling.type"),
                format!("RoPE scaling `{other}` is not supported (supported: none, linear)"),
            ))
        }
    };
    let eps = md
        .opt_f32(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| {
            md.bad(
                &key("attention.layer_norm_rms_epsilon"),
                "required key is missing",
            )
        })?;
    let rope_theta = md.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    let max_seq_len = md.usize(&key("context_length"))?;
    let bos_token_id = md.opt_u32("tokenizer.ggml.bos_token_id")?;
    let mut eos_token_ids = Vec::new();
    for k in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = md.opt_u32(k)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }

    let info = |name: &str| src.content.tensor_infos.get(name);
    let embed = info("token_embd.weight").ok_or_else(|| LlmError::MissingTensor {
        path: src.path.clone(),
        name: "token_embd.weight".into(),
    })?;
    let vocab_size = embed.shape.dims().first().copied().unwrap_or(0);
    let intermediate_size = md.usize(&key("feed_forward_length"))?;
    let n_layers = md.usize(&key("block_count"))?;
    let attention_bias = arch == Arch::Qwen2 || info("blk.0.attn_q.bias").is_some();
    let tie_word_embeddings = info("output.weight").is_none();

    // Llama 3.1 GGUFs carry their RoPE scaling as per-frequency divisors.
    if src.contains("rope_freqs.weight") {
        if let Some(RawTensor::Quant(q)) = src.take("rope_freqs.weight")? {
            let factors = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            rope_scaling = Some(RopeScaling::FreqFactors(factors));
        }
    }

    Ok(LlmConfig {
        arch,
        vocab_size,
        hidden_size,
        intermediate_size,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        max_seq_len,
        rms_norm_eps: f64::from(eps),
        rope_theta,
        // llama.cpp permutes Llama q/k weights for interleaved RoPE; Qwen2 stays NeoX.
        rope_style: match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Neox,
        },
        rope_scaling,
        attention_bias,
        tie_word_embeddings,
        bos_token_id,
        eos_token_ids,
    })
}
