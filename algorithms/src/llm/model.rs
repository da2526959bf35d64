//! The decoder-only transformer (Llama / Qwen2) with an every-position forward pass.
//!
//! One code path serves prefill, decode and speculative verification: `forward` takes any
//! number of new tokens, places them after the `cache.len()` cached positions (RoPE offset and
//! causal mask both start there) and returns logits for every new position.
//!
//! Batch invariance. Greedy speculative decoding must reproduce target-only greedy decoding,
//! which holds exactly when the logits of a position do not depend on how many tokens were fed
//! together. On CPU every step of the pass is arranged to be row-wise identical:
//! - matmuls run through candle's quantized kernels, which compute each output as one dot
//!   product (float weights are stored as F32 `QTensor`s; see `weights.rs`), with kernels that
//!   switch paths by row count detected at load time and run row by row;
//! - RMSNorm, SiLU, residual adds and bias adds are row-wise or element-wise (on CPU computed
//!   on host vectors by `forward_host`; RMSNorm and SiLU·up by `ianvs_kernels::ops`, vectorized
//!   with a fixed lane layout and reduction tree, so their bits depend neither on the rows nor
//!   on the kernel set);
//! - RoPE and attention are computed on the host ("host attention"; the attention core is
//!   `ianvs_kernels::ops::attend_group`): one query row at a time, with a fixed summation order
//!   over keys, against a position-major cache.
//!
//! On other devices (CUDA), attention uses candle tensor ops (matmul, mask, softmax) and dense
//! matmuls; results then agree to float tolerance but are not guaranteed bit-identical across
//! chunk sizes. `AttentionBackend::Tensor` selects that path on CPU too (tests compare both).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use super::cache::{KvCache, LayerKv};
use super::config::{Arch, LlmConfig, RopeStyle};
use super::error::{LlmError, Result};
use super::profile::{self, Op, Timer};
use super::weights::{
    select_rows, Embedding, Linear, LinearFactory, RawTensor, RmsNorm, TensorSource,
};
use super::{gguf, hf};
use ianvs_kernels::ops::{attend_group, AttnShape};

/// The own kernels' pool of the models that have no threads of their own: one per process,
/// every core. (candle's process-wide barrier pool did this before; on a 2-core machine busy
/// with other work it waits at every parallel region for workers that are not running:
/// SmolLM2 Q4_1 decoded at 3.6-7.8 tokens/s with it against 34.6-80.6 with this pool, whose
/// caller skips workers that have not joined; `results/forward-s5-busy.md`.)
fn shared_pool() -> Result<Arc<ianvs_kernels::Pool>> {
    static POOL: std::sync::OnceLock<Arc<ianvs_kernels::Pool>> = std::sync::OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool.clone());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = ianvs_kernels::Pool::new(threads, Vec::new()).map_err(|e| {
        LlmError::Unsupported(format!("cannot start {threads} kernel threads: {e}"))
    })?;
    // A racing loader may have set it meanwhile: keep one pool per process.
    Ok(POOL.get_or_init(|| Arc::new(pool)).clone())
}

/// The process's kernel set: `IANVS_KERNELS` when set (an error, not a panic, when it names a
/// set this CPU cannot run), else the fastest this CPU runs.
fn default_isa() -> Result<ianvs_kernels::Isa> {
    match std::env::var("IANVS_KERNELS") {
        Ok(name) => ianvs_kernels::Isa::parse(&name)
            .map_err(|e| LlmError::Unsupported(format!("IANVS_KERNELS: {e}"))),
        Err(_) => Ok(ianvs_kernels::isa()),
    }
}

/// Hands out a distinct id per loaded model so a cache cannot be fed to another model.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// Which attention implementation `forward` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionBackend {
    /// Host attention on CPU, tensor ops elsewhere.
    #[default]
    Auto,
    /// Plain-Rust, batch-invariant attention; CPU only.
    Host,
    /// candle tensor ops (matmul, mask, softmax); any device.
    Tensor,
}

/// Options for [`LlmModel::load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub attention: AttentionBackend,
    /// CPU only: convert every weight matrix to this type at load time. `None` (the default)
    /// keeps the file's types. `Some(F32)` dequantizes exactly (more memory, and candle's f32
    /// kernel gets cheaper per row as chunks grow, which helps verification); `Some(Q8_0)`
    /// is near-lossless and reads more bytes per token than 4/5-bit types; a K-quant falls
    /// back to a 32-value type for rows that are not a multiple of 256 values, as llama.cpp
    /// does. Either changes the numbers relative to the file, so say so when reporting.
    pub requantize: Option<GgmlDType>,
    /// CPU only: multiply with candle's quantized kernels instead of the runtime's own for the
    /// formats those cover (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K); for before/after
    /// comparisons.
    pub candle_kernels: bool,
    /// CPU only: which of the own kernel sets to use (`None`: the process default, the fastest
    /// this CPU runs unless `IANVS_KERNELS` says otherwise). Tests use it to cover every path.
    pub kernel_isa: Option<ianvs_kernels::Isa>,
    /// CPU only: threads for this model's matmuls (own kernels) and attention. `None` (the
    /// default): every core, through one process-wide pool shared by all such models.
    /// `Some(n)`: the model's own pool of `n` threads, so a drafter and a verifier in one
    /// process can be given different counts. Results never depend on it.
    pub threads: Option<usize>,
    /// CPU only (Linux): pin the model's threads to these CPUs (the thread that calls
    /// `forward` only while it runs), so two models in one process do not compete for cores.
    /// Empty (the default): not pinned. Implies an own pool of `threads` (default: one per CPU).
    pub cpus: Vec<usize>,
    /// CPU only: also build a trimmed output head for drafting ([`LlmModel::forward_draft`]);
    /// `None` (the default): none. [`LlmModel::forward`] always uses the full head.
    pub draft_vocab: Option<DraftVocab>,
}

/// The token ids a drafter's trimmed output head keeps (FR-Spec, Zhao et al. 2025,
/// "frequency-ranked speculative sampling"): the `lowest` ids — byte-level BPE vocabularies
/// are ordered by merge rank, roughly by frequency — plus `also` (the caller passes the
/// tokenizer's special and end-of-generation ids) and every EOS id the model configuration
/// declares. Ids past the vocabulary are ignored; a set that covers the whole vocabulary
/// builds no trimmed head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftVocab {
    pub lowest: usize,
    pub also: Vec<u32>,
}

/// A trimmed output head: rows `ids` of the full head, same type and kernels, so the logit of
/// a kept id is the full head's to the bit.
struct DraftHead {
    /// Kept token ids, ascending; row `j` of `head` is token `ids[j]`.
    ids: Vec<u32>,
    head: Linear,
}

impl DraftHead {
    fn build(
        vocab: &DraftVocab,
        config: &LlmConfig,
        full: &Linear,
        factory: &mut LinearFactory,
        device: &Device,
    ) -> Result<Option<Self>> {
        if vocab.lowest == 0 {
            return Err(LlmError::Unsupported(
                "a trimmed draft head needs at least one token (draft_vocab >= 1)".into(),
            ));
        }
        if !device.is_cpu() {
            return Err(LlmError::Unsupported(format!(
                "a trimmed draft head is implemented for the CPU only, but the model device is \
                 {device:?}"
            )));
        }
        let n = config.vocab_size;
        let mut ids: Vec<u32> = (0..vocab.lowest.min(n) as u32).collect();
        ids.extend(
            vocab
                .also
                .iter()
                .chain(&config.eos_token_ids)
                .copied()
                .filter(|&id| (id as usize) < n),
        );
        ids.sort_unstable();
        ids.dedup();
        if ids.len() >= n {
            return Ok(None);
        }
        let qt = full.qtensor().ok_or_else(|| {
            LlmError::Unsupported("the output head has no quantized CPU weight to trim".into())
        })?;
        let head = factory.shared(Arc::new(select_rows(qt, &ids)?), None)?;
        Ok(Some(Self { ids, head }))
    }
}

/// Tensor names of one file format, for the format-neutral builder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Naming {
    /// llama.cpp names: `token_embd.weight`, `blk.N.attn_q.weight`, ...
    Gguf,
    /// Hugging Face names: `model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, ...
    Hf,
}

/// The logical tensors of the architecture.
#[derive(Debug, Clone, Copy)]
enum Part {
    Embed,
    FinalNorm,
    Output,
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl Naming {
    fn name(self, part: Part, layer: usize) -> String {
        match self {
            Self::Gguf => {
                let suffix = match part {
                    Part::Embed => return "token_embd.weight".into(),
                    Part::FinalNorm => return "output_norm.weight".into(),
                    Part::Output => return "output.weight".into(),
                    Part::AttnNorm => "attn_norm.weight",
                    Part::Q => "attn_q.weight",
                    Part::K => "attn_k.weight",
                    Part::V => "attn_v.weight",
                    Part::O => "attn_output.weight",
                    Part::QBias => "attn_q.bias",
                    Part::KBias => "attn_k.bias",
                    Part::VBias => "attn_v.bias",
                    Part::FfnNorm => "ffn_norm.weight",
                    Part::Gate => "ffn_gate.weight",
                    Part::Up => "ffn_up.weight",
                    Part::Down => "ffn_down.weight",
                };
                format!("blk.{layer}.{suffix}")
            }
            Self::Hf => {
                let suffix = match part {
                    Part::Embed => return "model.embed_tokens.weight".into(),
                    Part::FinalNorm => return "model.norm.weight".into(),
                    Part::Output => return "lm_head.weight".into(),
                    Part::AttnNorm => "input_layernorm.weight",
                    Part::Q => "self_attn.q_proj.weight",
                    Part::K => "self_attn.k_proj.weight",
                    Part::V => "self_attn.v_proj.weight",
                    Part::O => "self_attn.o_proj.weight",
                    Part::QBias => "self_attn.q_proj.bias",
                    Part::KBias => "self_attn.k_proj.bias",
                    Part::VBias => "self_attn.v_proj.bias",
                    Part::FfnNorm => "post_attention_layernorm.weight",
                    Part::Gate => "mlp.gate_proj.weight",
                    Part::Up => "mlp.up_proj.weight",
                    Part::Down => "mlp.down_proj.weight",
                };
                format!("model.layers.{layer}.{suffix}")
            }
        }
    }
}

struct Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Block {
    fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// A loaded Llama- or Qwen2-family model. Immutable after loading (`Send + Sync`): share it
/// with `Arc` and give each sequence its own [`KvCache`].
pub struct LlmModel {
    config: LlmConfig,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    /// The drafter's trimmed head (`LoadOptions::draft_vocab`), beside the full one.
    draft_head: Option<DraftHead>,
    inv_freq: Vec<f32>,
    host_attention: bool,
    /// The model's own threads (`LoadOptions::threads`/`cpus`), if any.
    pool: Option<Arc<ianvs_kernels::Pool>>,
    /// [`LlmModel::threads`], found once at load: `available_parallelism` reads cgroup files,
    /// too slow to ask once per layer.
    threads: usize,
    /// The kernel set of the host pass's vectorized ops (`ianvs_kernels::ops`; every set gives
    /// the same bits, so this only changes speed).
    isa: ianvs_kernels::Isa,
    id: u64,
    source: PathBuf,
    weight_bytes: usize,
    num_parameters: usize,
}

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("source", &self.source)
            .field("config", &self.config)
            .field("device", &self.device)
            .field("host_attention", &self.host_attention)
            .finish_non_exhaustive()
    }
}

impl LlmModel {
    /// Loads a GGUF file (weights stay quantized) or a Hugging Face folder with `config.json`
    /// and safetensors weights (f32/f16/bf16, computed in f32).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_with(path, device, &LoadOptions::default())
    }

    /// [`LlmModel::load`] with explicit options.
    pub fn load_with(path: &Path, device: &Device, options: &LoadOptions) -> Result<Self> {
        let host_attention = match options.attention {
            AttentionBackend::Auto => device.is_cpu(),
            AttentionBackend::Host if !device.is_cpu() => {
                return Err(LlmError::Unsupported(format!(
                    "host attention runs on the CPU only, but the model device is {device:?}"
                )))
            }
            AttentionBackend::Host => true,
            AttentionBackend::Tensor => false,
        };
        if !path.exists() {
            return Err(LlmError::MissingFile {
                what: "model",
                path: path.to_path_buf(),
                hint: "; pass a GGUF file or a Hugging Face folder with config.json".into(),
            });
        }
        if path.is_dir() {
            let (config, mut source) = hf::open(path)?;
            Self::build(
                config,
                &mut source,
                Naming::Hf,
                device,
                options,
                host_attention,
            )
        } else if gguf::is_gguf(path)? {
            let (config, mut source) = gguf::open(path, device)?;
            Self::build(
                config,
                &mut source,
                Naming::Gguf,
                device,
                options,
                host_attention,
            )
        } else {
            Err(LlmError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    }

    fn build(
        config: LlmConfig,
        src: &mut dyn TensorSource,
        naming: Naming,
        device: &Device,
        options: &LoadOptions,
        host_attention: bool,
    ) -> Result<Self> {
        if let Some(dtype) = options.requantize {
            if dtype != GgmlDType::F32 && !device.is_cpu() {
                return Err(LlmError::Unsupported(format!(
                    "requantizing weights to {dtype:?} at load time is implemented for the CPU \
                     only (`weights: f32`, dense weights, works on every device)"
                )));
            }
        }
        config.check().map_err(|reason| LlmError::InvalidFile {
            what: "model configuration in",
            path: src.path().to_path_buf(),
            reason,
        })?;
        let c = &config;
        let mut factory = LinearFactory::new(device, options.requantize, !options.candle_kernels);
        if let Some(isa) = options.kernel_isa {
            if !isa.available() {
                return Err(LlmError::Unsupported(format!(
                    "this CPU cannot run the `{}` kernels (it runs: {})",
                    isa.name(),
                    ianvs_kernels::Isa::available_all()
                        .iter()
                        .map(|i| i.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            factory.set_isa(isa);
        }
        let isa = match options.kernel_isa {
            Some(isa) => isa,
            None => default_isa()?,
        };
        let pool = if device.is_cpu() && (options.threads.is_some() || !options.cpus.is_empty()) {
            let threads = options.threads.unwrap_or(options.cpus.len()).max(1);
            if let Some(allowed) = ianvs_kernels::allowed_cpus() {
                if let Some(bad) = options.cpus.iter().find(|c| !allowed.contains(c)) {
                    return Err(LlmError::Unsupported(format!(
                        "cannot pin to CPU {bad}: this process may run on CPUs {allowed:?}"
                    )));
                }
            }
            let pool = ianvs_kernels::Pool::new(threads, options.cpus.clone()).map_err(|e| {
                LlmError::Unsupported(format!("cannot start {threads} kernel threads: {e}"))
            })?;
            let pool = Arc::new(pool);
            factory.set_pool(pool.clone());
            Some(pool)
        } else {
            if device.is_cpu() {
                factory.set_pool(shared_pool()?);
            }
            None
        };
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;

        let embed_raw =
            src.take_shaped(&naming.name(Part::Embed, 0), &[c.vocab_size, c.hidden_size])?;
        // GGUF drops `output.weight` when the head is tied; HF says so in config.json.
        let output_name = naming.name(Part::Output, 0);
        let tied = c.tie_word_embeddings || !src.contains(&output_name);
        let (embed, lm_head) = if device.is_cpu() {
            // A tied table is stored once and serves both lookups and the output head.
            let qt = factory.cpu_qtensor(embed_raw)?;
            let lm_head = if tied {
                factory.shared(qt.clone(), None)?
            } else {
                let raw = src.take_shaped(&output_name, &[c.vocab_size, c.hidden_size])?;
                factory.linear(raw, None)?
            };
            (Embedding::Quantized(qt), lm_head)
        } else {
            let table = embed_raw.to_f32(device)?;
            let lm_head = if tied {
                factory.linear(RawTensor::Dense(table.clone()), None)?
            } else {
                let raw = src.take_shaped(&output_name, &[c.vocab_size, c.hidden_size])?;
                factory.linear(raw, None)?
            };
            (Embedding::Dense(table), lm_head)
        };

        let mut blocks = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let mut vector = |part: Part, len: usize| -> Result<Tensor> {
                src.take_shaped(&naming.name(part, i), &[len])?
                    .to_f32(device)
            };
            let attn_norm = RmsNorm::new(vector(Part::AttnNorm, c.hidden_size)?, c.rms_norm_eps);
            let ffn_norm = RmsNorm::new(vector(Part::FfnNorm, c.hidden_size)?, c.rms_norm_eps);
            let (qb, kb, vb) = if c.attention_bias {
                (
                    Some(vector(Part::QBias, q_dim)?),
                    Some(vector(Part::KBias, kv_dim)?),
                    Some(vector(Part::VBias, kv_dim)?),
                )
            } else {
                (None, None, None)
            };
            let mut linear = |part: Part, out: usize, inp: usize, bias: Option<Tensor>| {
                let raw = src.take_shaped(&naming.name(part, i), &[out, inp])?;
                factory.linear(raw, bias)
            };
            blocks.push(Block {
                attn_norm,
                q: linear(Part::Q, q_dim, c.hidden_size, qb)?,
                k: linear(Part::K, kv_dim, c.hidden_size, kb)?,
                v: linear(Part::V, kv_dim, c.hidden_size, vb)?,
                o: linear(Part::O, c.hidden_size, q_dim, None)?,
                ffn_norm,
                gate: linear(Part::Gate, c.intermediate_size, c.hidden_size, None)?,
                up: linear(Part::Up, c.intermediate_size, c.hidden_size, None)?,
                down: linear(Part::Down, c.hidden_size, c.intermediate_size, None)?,
            });
        }
        let norm = RmsNorm::new(
            src.take_shaped(&naming.name(Part::FinalNorm, 0), &[c.hidden_size])?
                .to_f32(device)?,
            c.rms_norm_eps,
        );

        let draft_head = match &options.draft_vocab {
            Some(v) => DraftHead::build(v, &config, &lm_head, &mut factory, device)?,
            None => None,
        };

        let norm_bytes = |n: &RmsNorm| n.num_parameters() * 4;
        let weight_bytes = blocks
            .iter()
            .map(|b| {
                b.linears().iter().map(|l| l.weight_bytes()).sum::<usize>()
                    + norm_bytes(&b.attn_norm)
                    + norm_bytes(&b.ffn_norm)
            })
            .sum::<usize>()
            + norm_bytes(&norm)
            + lm_head.weight_bytes()
            + embed.row_bytes()?;
        let num_parameters = blocks
            .iter()
            .map(|b| {
                b.linears()
                    .iter()
                    .map(|l| l.num_parameters())
                    .sum::<usize>()
                    + b.attn_norm.num_parameters()
                    + b.ffn_norm.num_parameters()
            })
            .sum::<usize>()
            + norm.num_parameters()
            + embed.num_parameters()
            + if tied { 0 } else { lm_head.num_parameters() };

        let inv_freq = config.rope_inv_freq();
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            draft_head,
            inv_freq,
            host_attention,
            threads: match &pool {
                Some(p) => p.threads(),
                None => std::thread::available_parallelism().map_or(1, |p| p.get()),
            },
            isa,
            pool,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            source: src.path().to_path_buf(),
            weight_bytes,
            num_parameters,
        })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file or folder the model was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Threads a forward pass uses on the CPU (`LoadOptions::threads`; every core by default).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether the model has its own threads (`LoadOptions::threads`/`cpus`) rather than the
    /// process-wide pool.
    pub fn has_own_threads(&self) -> bool {
        self.pool.is_some()
    }

    /// CPUs the model's threads are pinned to (empty: not pinned).
    pub fn cpus(&self) -> &[usize] {
        self.pool.as_ref().map_or(&[], |p| p.cpus())
    }

    /// Whether `forward` runs the batch-invariant host attention (see the module docs).
    pub fn is_batch_invariant(&self) -> bool {
        self.host_attention
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.config.n_layers,
            self.config.n_kv_heads * self.config.head_dim,
            self.host_attention,
            self.id,
        )
    }

    /// Bytes of weights read to produce one token: every layer matrix, norm and bias, the
    /// output head, and one embedding row. Dividing memory bandwidth by this gives the decode
    /// speed ceiling.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// [`LlmModel::weight_bytes`] of a [`LlmModel::forward_draft`] step: the trimmed head
    /// instead of the full one (`None` without a trimmed head).
    pub fn draft_weight_bytes(&self) -> Option<usize> {
        self.draft_head
            .as_ref()
            .map(|d| self.weight_bytes - self.lm_head.weight_bytes() + d.head.weight_bytes())
    }

    /// The token ids [`LlmModel::forward_draft`] returns logits for, ascending (`None`:
    /// no trimmed head was built).
    pub fn draft_ids(&self) -> Option<&[u32]> {
        self.draft_head.as_ref().map(|d| d.ids.as_slice())
    }

    /// Number of parameters (a tied output head is counted once).
    pub fn num_parameters(&self) -> usize {
        self.num_parameters
    }

    /// Feeds `new_tokens` after the cached positions and returns their logits:
    /// shape `[new_tokens.len(), vocab_size]`, f32, on the model device.
    ///
    /// On success the cache grows by `new_tokens.len()`; on error it is left as it was.
    pub fn forward(&self, new_tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.forward_head(new_tokens, cache, false, false)
    }

    /// [`LlmModel::forward`] that returns the logits of the last new token only (shape
    /// `[1, vocab_size]`): a prompt prefill or a drafter's catch-up feed needs no other row, and
    /// the output head is the largest matrix of a small model (Qwen2.5-0.5B: 136M of 494M
    /// weights), so the other rows' head products are skipped. On the host path the row is
    /// bit-identical to the last row of `forward` (the own kernels give each row the same bits
    /// whatever the row count).
    pub fn forward_last(&self, new_tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.forward_head(new_tokens, cache, false, true)
    }

    /// [`LlmModel::forward_last`] through the trimmed draft head (see
    /// [`LlmModel::forward_draft`]).
    pub fn forward_draft_last(&self, new_tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        if self.draft_head.is_none() {
            return Err(LlmError::Unsupported(
                "this model has no trimmed draft head (LoadOptions::draft_vocab)".into(),
            ));
        }
        self.forward_head(new_tokens, cache, true, true)
    }

    /// [`LlmModel::forward`] through the trimmed draft head: shape
    /// `[new_tokens.len(), draft_ids().len()]`, column `j` the logit of token `draft_ids()[j]`,
    /// bit-identical to that column of `forward`. An error when no trimmed head was built.
    pub fn forward_draft(&self, new_tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        if self.draft_head.is_none() {
            return Err(LlmError::Unsupported(
                "this model has no trimmed draft head (LoadOptions::draft_vocab)".into(),
            ));
        }
        self.forward_head(new_tokens, cache, true, false)
    }

    fn forward_head(
        &self,
        new_tokens: &[u32],
        cache: &mut KvCache,
        draft: bool,
        last_only: bool,
    ) -> Result<Tensor> {
        if cache.owner != self.id {
            return Err(LlmError::Cache(
                "this cache was created by another model; use this model's new_cache()".into(),
            ));
        }
        if new_tokens.is_empty() {
            return Err(LlmError::EmptyInput);
        }
        if let Some(&id) = new_tokens
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(LlmError::TokenOutOfRange {
                id,
                vocab_size: self.config.vocab_size,
            });
        }
        let needed = cache.len() + new_tokens.len();
        if needed > self.config.max_seq_len {
            return Err(LlmError::ContextOverflow {
                needed,
                max: self.config.max_seq_len,
            });
        }
        let mut run = || {
            profile::pass();
            if self.host_attention {
                self.forward_host(new_tokens, cache, draft, last_only)
            } else {
                self.forward_inner(new_tokens, cache, draft, last_only)
            }
        };
        let result = match &self.pool {
            Some(pool) => pool.pinned(run),
            None => run(),
        };
        match result {
            Ok(logits) => {
                cache.commit(new_tokens.len());
                Ok(logits)
            }
            Err(e) => {
                cache.rollback()?;
                Err(e)
            }
        }
    }

    /// The CPU forward pass on host vectors: the function of [`LlmModel::forward_inner`],
    /// without building a tensor per operation. Matmuls go straight to the own kernels where a
    /// layer has them; RMSNorm, SiLU·up and attention run vectorized (`ianvs_kernels::ops`: its
    /// own `exp` and summation order, so the bits differ from candle's tensor path by float
    /// rounding, while every row keeps its own bits whatever the chunk, thread count or kernel
    /// set). With `last_only`, the final norm and the head run on the last row only.
    fn forward_host(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        draft: bool,
        last_only: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let start = cache.len();
        let n = tokens.len();
        let mut t = Timer::start();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        t.lap(Op::Embed);
        let (cos, sin) = self.rope_tables(start, n);
        let mut h = vec![0f32; x.len()];
        let mut scores = Vec::new();
        t.lap(Op::Other);
        for (block, layer_kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let LayerKv::Host { k: kc, v: vc } = layer_kv else {
                return Err(LlmError::Cache(
                    "a host-attention model was given a tensor cache".into(),
                ));
            };
            block.attn_norm.forward_host(self.isa, &x, &mut h);
            t.lap(Op::Norm);
            let [mut q, mut k, v] =
                Linear::forward_host_many([&block.q, &block.k, &block.v], &h, n)?;
            t.lap(Op::Qkv);
            apply_rope(&mut q, c.n_heads, c.head_dim, &cos, &sin, c.rope_style);
            apply_rope(&mut k, c.n_kv_heads, c.head_dim, &cos, &sin, c.rope_style);
            kc.extend_from_slice(&k);
            vc.extend_from_slice(&v);
            let shape = AttnShape {
                n,
                start,
                heads: c.n_heads,
                kv_heads: c.n_kv_heads,
                hd: c.head_dim,
            };
            let attn = host_attention(&q, kc, vc, shape, self.threads, self.isa, &mut scores);
            t.lap(Op::Attention);
            let o = block.o.forward_host(&attn, n)?;
            t.lap(Op::O);
            add_in_place(&mut x, &o);
            t.lap(Op::Residual);
            block.ffn_norm.forward_host(self.isa, &x, &mut h);
            t.lap(Op::Norm);
            let [mut gate, up] = Linear::forward_host_many([&block.gate, &block.up], &h, n)?;
            t.lap(Op::GateUp);
            ianvs_kernels::ops::silu_mul(self.isa, &mut gate, &up);
            t.lap(Op::SiluMul);
            let down = block.down.forward_host(&gate, n)?;
            t.lap(Op::Down);
            add_in_place(&mut x, &down);
            t.lap(Op::Residual);
        }
        let rows = if last_only { 1 } else { n };
        let x = &x[(n - rows) * c.hidden_size..];
        h.truncate(x.len());
        self.norm.forward_host(self.isa, x, &mut h);
        t.lap(Op::Norm);
        let logits = self.head(draft).forward_host(&h, rows)?;
        t.lap(Op::Head);
        let vocab = logits.len() / rows;
        let out = Tensor::from_vec(logits, (rows, vocab), &Device::Cpu)?;
        t.lap(Op::Other);
        Ok(out)
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        draft: bool,
        last_only: bool,
    ) -> Result<Tensor> {
        let start = cache.len();
        let n = tokens.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?;
        let (cos, sin) = self.rope_tables(start, n);
        for (block, layer_kv) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = block.attn_norm.forward(&x)?;
            let q = block.q.forward(&h)?;
            let k = block.k.forward(&h)?;
            let v = block.v.forward(&h)?;
            let attn = match layer_kv {
                LayerKv::Host { .. } => {
                    return Err(LlmError::Cache(
                        "a tensor-attention model was given a host cache".into(),
                    ))
                }
                LayerKv::Tensor { k: kc, v: vc } => {
                    self.attention_tensor(&q, &k, &v, kc, vc, start, &cos, &sin)?
                }
            };
            x = (x + block.o.forward(&attn)?)?;
            let h = block.ffn_norm.forward(&x)?;
            let act = (candle_nn::ops::silu(&block.gate.forward(&h)?)? * block.up.forward(&h)?)?;
            x = (x + block.down.forward(&act)?)?;
        }
        let x = if last_only { x.narrow(0, n - 1, 1)? } else { x };
        let x = self.norm.forward(&x)?;
        self.head(draft)
            .forward(&x)?
            .to_dtype(DType::F32)
            .map_err(Into::into)
    }

    /// The output head of a pass: the trimmed draft head when asked for and built, else the
    /// full one.
    fn head(&self, draft: bool) -> &Linear {
        match (&self.draft_head, draft) {
            (Some(d), true) => &d.head,
            _ => &self.lm_head,
        }
    }

    /// cos/sin of every (new position, frequency) pair, `[n][head_dim / 2]` row-major.
    fn rope_tables(&self, start: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for pos in start..start + n {
            for &f in &self.inv_freq {
                // f32 like transformers (`t.float() * inv_freq`), so HF checkpoints see the
                // angles they were trained with.
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// Attention with candle tensor ops, for any device.
    #[allow(clippy::too_many_arguments)]
    fn attention_tensor(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        k_cache: &mut Option<Tensor>,
        v_cache: &mut Option<Tensor>,
        start: usize,
        cos: &[f32],
        sin: &[f32],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (n, hd, heads, kv_heads) = (q.dim(0)?, c.head_dim, c.n_heads, c.n_kv_heads);
        let cos = Tensor::from_slice(cos, (n, hd / 2), &self.device)?;
        let sin = Tensor::from_slice(sin, (n, hd / 2), &self.device)?;
        let rope = |x: &Tensor, h: usize| -> Result<Tensor> {
            let x = x.reshape((1, n, h, hd))?.transpose(1, 2)?.contiguous()?;
            Ok(match c.rope_style {
                RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
                RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            })
        };
        let q = rope(q, heads)?;
        let k = rope(k, kv_heads)?;
        let v = v
            .reshape((1, n, kv_heads, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = match k_cache.as_ref() {
            Some(prev) => Tensor::cat(&[prev, &k], 2)?,
            None => k,
        };
        let v = match v_cache.as_ref() {
            Some(prev) => Tensor::cat(&[prev, &v], 2)?,
            None => v,
        };
        *k_cache = Some(k.clone());
        *v_cache = Some(v.clone());
        let total = start + n;
        let rep = heads / kv_heads;
        let repeat = |x: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(x);
            }
            Ok(x.unsqueeze(2)?
                .expand((1, kv_heads, rep, total, hd))?
                .reshape((1, heads, total, hd))?)
        };
        let k = repeat(k)?;
        let v = repeat(v)?.contiguous()?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (hd as f64).sqrt()))?;
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..total).map(move |j| {
                    if j > start + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (n, total), &self.device)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
        let out = probs.matmul(&v)?; // [1, heads, n, hd]
        Ok(out.transpose(1, 2)?.reshape((n, heads * hd))?)
    }

    /// Logits of the last row of a `forward` result as a host vector (a convenience for
    /// samplers).
    pub fn last_logits(logits: &Tensor) -> Result<Vec<f32>> {
        let rows = logits.dim(0)?;
        if rows == 0 {
            return Err(LlmError::EmptyInput);
        }
        Ok(logits
            .get(rows - 1)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?)
    }

    /// Arch of the model (shortcut for `config().arch`).
    pub fn arch(&self) -> Arch {
        self.config.arch
    }
}

/// Rotates `x` (`[n][heads][hd]` row-major) in place: row `i` gets angle row `i` of cos/sin.
fn apply_rope(x: &mut [f32], heads: usize, hd: usize, cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = hd / 2;
    for (i, row) in x.chunks_exact_mut(heads * hd).enumerate() {
        let (c, s) = (
            &cos[i * half..(i + 1) * half],
            &sin[i * half..(i + 1) * half],
        );
        for head in row.chunks_exact_mut(hd) {
            for f in 0..half {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * f, 2 * f + 1),
                    RopeStyle::Neox => (f, f + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c[f] - x1 * s[f];
                head[b] = x0 * s[f] + x1 * c[f];
            }
        }
    }
}

/// Below this many multiply-adds a layer's attention runs on the calling thread: spawning
/// costs more than it saves for single-token decode.
const PARALLEL_ATTENTION_WORK: usize = 1 << 20;

/// `x += y` element by element (a residual connection).
fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Causal attention of `n` new rows over `start + n` cached keys/values (position-major,
/// `[pos][kv_head][hd]`). Each output row is computed alone with a fixed summation order, so
/// it does not depend on `n` (see [`attend_group`], vectorized on `isa` with the same bits on
/// every kernel set); key/value groups are split over threads for long prompts, which only
/// changes which thread computes a head, not how. `scores`: scratch, reused.
fn host_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    threads: usize,
    isa: ianvs_kernels::Isa,
    scores: &mut Vec<f32>,
) -> Vec<f32> {
    let AttnShape {
        n,
        start,
        heads,
        kv_heads,
        hd,
    } = s;
    let mut out = vec![0f32; n * heads * hd];
    let work = n * (start + n) * heads * hd;
    if threads <= 1 || work < PARALLEL_ATTENTION_WORK || kv_heads == 1 {
        for g in 0..kv_heads {
            attend_group(isa, q, k, v, s, g, &mut out, scores);
        }
        return out;
    }
    // Each thread gets whole groups and returns (head, [n][hd]) blocks to scatter.
    let rep = heads / kv_heads;
    let per_thread = kv_heads.div_ceil(threads);
    let blocks: Vec<(usize, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..kv_heads)
            .step_by(per_thread)
            .map(|g0| {
                scope.spawn(move || {
                    let mut scratch = Vec::new();
                    let mut local = vec![0f32; n * heads * hd];
                    let gs = g0..(g0 + per_thread).min(kv_heads);
                    for g in gs.clone() {
                        attend_group(isa, q, k, v, s, g, &mut local, &mut scratch);
                    }
                    (gs.start * rep..gs.end * rep)
                        .map(|h| {
                            let mut block = Vec::with_capacity(n * hd);
                            for i in 0..n {
                                let at = (i * heads + h) * hd;
                                block.extend_from_slice(&local[at..at + hd]);
                            }
                            (h, block)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    for (h, block) in blocks {
        for i in 0..n {
            let at = (i * heads + h) * hd;
            out[at..at + hd].copy_from_slice(&block[i * hd..(i + 1) * hd]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_and_cache_are_send_sync() {
        assert_send_sync::<LlmModel>();
        assert_send_sync::<KvCache>();
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        // One row, one head of 4 dims, angle 90° for the first pair and 0 for the second.
        let cos = [0.0, 1.0];
        let sin = [1.0, 0.0];
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        apply_rope(&mut x, 1, 4, &cos, &sin, RopeStyle::Interleaved);
        assert_eq!(x, vec![-2.0, 1.0, 3.0, 4.0]);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        apply_rope(&mut x, 1, 4, &cos, &sin, RopeStyle::Neox);
        assert_eq!(x, vec![-3.0, 2.0, 1.0, 4.0]);
    }

    #[test]
    fn host_attention_single_key_returns_value() {
        // With one visible key the softmax weight is 1: output = value.
        let s = AttnShape {
            n: 1,
            start: 0,
            heads: 2,
            kv_heads: 1,
            hd: 2,
        };
        let q = vec![0.3, -0.2, 1.0, 2.0];
        let isa = ianvs_kernels::isa();
        let out = host_attention(&q, &[0.5, 0.5], &[7.0, -1.0], s, 1, isa, &mut Vec::new());
        assert_eq!(out, vec![7.0, -1.0, 7.0, -1.0]);
    }

    /// Attention of one row at a time, each with the cache cut after its own position (as
    /// token-by-token decoding computes it): a chunk must give the same bits.
    fn one_row_at_a_time(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttnShape,
        isa: ianvs_kernels::Isa,
    ) -> Vec<f32> {
        let row = s.heads * s.hd;
        let mut out = Vec::with_capacity(s.n * row);
        for i in 0..s.n {
            let one = AttnShape {
                n: 1,
                start: s.start + i,
                ..s
            };
            let kv = (s.start + i + 1) * s.kv_heads * s.hd;
            let q = &q[i * row..][..row];
            out.extend(host_attention(
                q,
                &k[..kv],
                &v[..kv],
                one,
                1,
                isa,
                &mut Vec::new(),
            ));
        }
        out
    }

    #[test]
    fn attention_chunks_equal_rows_one_at_a_time_on_every_isa_and_thread_count() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 22) as f32 - 2.0
                })
                .collect()
        };
        // (heads, kv_heads, hd, start, n), with threads 1 and 2 and a long prompt that takes
        // the threaded path.
        for (heads, kv_heads, hd, start, n) in [
            (9, 3, 64, 0, 1),
            (9, 3, 64, 31, 1),
            (9, 3, 64, 31, 9),
            (14, 2, 64, 5, 5),
            (4, 4, 16, 3, 7),
            (4, 1, 8, 0, 17),
            (8, 2, 64, 40, 300),
        ] {
            let s = AttnShape {
                n,
                start,
                heads,
                kv_heads,
                hd,
            };
            let q = rand(n * heads * hd);
            let k = rand((start + n) * kv_heads * hd);
            let v = rand((start + n) * kv_heads * hd);
            let bits = |x: Vec<f32>| x.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let want = bits(one_row_at_a_time(
                &q,
                &k,
                &v,
                s,
                ianvs_kernels::Isa::Portable,
            ));
            for isa in ianvs_kernels::Isa::available_all() {
                assert!(
                    bits(one_row_at_a_time(&q, &k, &v, s, isa)) == want,
                    "{isa:?} {s:?}: one row at a time differs from the portable path"
                );
                for threads in [1, 2] {
                    let got = bits(host_attention(&q, &k, &v, s, threads, isa, &mut Vec::new()));
                    assert!(got == want, "{isa:?} {s:?} threads {threads}");
                }
            }
        }
    }
}
