//! `drafter` and `verifier` modules: the project's LLM runtime ([`crate::llm`]) behind the
//! paradigm's `LanguageModel` trait. A model file is loaded once per process and shared by every
//! case (and role) that names it with the same device and load options.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use candle_core::quantized::GgmlDType;
use ianvs_paradigms::device::{device_hp, device_hp_defaulting_to, select_device};
use ianvs_paradigms::hp::{HpKind, HpSpec, Hyperparameters};
use ianvs_paradigms::modules::{LanguageModel, LmSession};
use ianvs_paradigms::speculative::{self, hp_names};
use serde_json::json;

use crate::llm::{DraftVocab, KvCache, LlmModel, LlmTokenizer, LoadOptions};

/// A loaded model with its tokenizer.
pub struct LoadedLm {
    pub model: LlmModel,
    pub tokenizer: LlmTokenizer,
    label: String,
    fingerprint: u64,
    add_bos: bool,
}

fn weights_hp() -> HpSpec {
    HpSpec::new("weights", HpKind::Choice(&["native", "q4_0", "q8_0", "f32"]), json!("native"), "keep the file's weights (native) or convert GGUF weights at load time: q4_0 or q8_0 (CPU only; the runtime has its own SIMD kernels for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K; q4_0 reads the fewest bytes per token but re-rounds already quantized weights, q8_0 is near-lossless and reads about twice as many) or f32 (dense; on cuda the fast, batched choice for a verifier, since native quantized GPU layers verify one row at a time to match decode bit for bit)")
}

/// `device`: the drafter defaults to the CPU (it is the edge model), the verifier to `auto`
/// (the cloud GPU when this build and machine have one).
fn model_hps(device: HpSpec) -> Vec<HpSpec> {
    vec![
        HpSpec::new("model", HpKind::Path, None, "a GGUF file or a folder with config.json + *.safetensors (+ tokenizer.json); relative to the YAML file"),
        device,
        weights_hp(),
        HpSpec::new("threads", HpKind::Int { min: 0, max: 1024 }, json!(0), "CPU threads for this model's matmuls and attention; 0 (the default) = every core, through one pool shared by all models of the process; n > 0 = the model's own n threads (a drafter and a verifier can then differ). Results do not depend on it"),
        HpSpec::new("cpus", HpKind::CpuList, json!([]), "pin this model's threads to these CPUs (Linux; e.g. [0] for the drafter and [1] for the verifier on a 2-core machine, so neither is charged for the other); [] (the default) = not pinned; with threads 0, one thread per listed CPU"),
    ]
}

/// The drafter's trimmed output head (FR-Spec); a drafter-only setting, so a verifier that
/// names it is refused as an unknown hyperparameter of the verifier.
pub const DRAFT_VOCAB: &str = "draft_vocab";

/// The drafter: model settings here, speculative settings declared by the paradigm that reads
/// them.
pub fn drafter_hps() -> Vec<HpSpec> {
    let mut v = model_hps(device_hp());
    v.push(HpSpec::new(DRAFT_VOCAB, HpKind::Int { min: 1, max: 1 << 24 }, Some(serde_json::Value::Null), "CPU only: draft over a trimmed output head of the N lowest token ids (BPE ids are ordered by merge rank, roughly by frequency) plus every special and end-of-generation token (FR-Spec, Zhao et al. 2025); the head is most of a small drafter's work on a large vocabulary. The verifier still decides every token, so greedy output stays lossless and rejection sampling exact (the drafter's q is zero outside the kept ids). Unset (the default) = the full head; N at or past the vocabulary = the full head, with a warning"));
    v.extend(speculative::drafter_hps());
    v
}

/// The verifier: model settings here, speculative settings declared by the paradigm.
pub fn verifier_hps() -> Vec<HpSpec> {
    let mut v = model_hps(device_hp_defaulting_to("auto"));
    v.extend(speculative::verifier_hps());
    v
}

/// One model slot: filled by the first case that names the model.
type ModelCell = Arc<Mutex<Option<Arc<LoadedLm>>>>;

static LOADED: LazyLock<Mutex<HashMap<String, ModelCell>>> = LazyLock::new(Default::default);

/// Loads (or reuses) a model by path, device and weight option, on the shared threads.
pub fn load_shared(path: &Path, device: &str, weights: &str) -> anyhow::Result<Arc<LoadedLm>> {
    load_shared_with(path, device, weights, None, &[], None)
}

/// [`load_shared`] with the model's own threads and CPUs (`threads`/`cpus` settings) and a
/// drafter's trimmed head of the `draft_vocab` lowest ids (plus the special ones).
pub fn load_shared_with(
    path: &Path,
    device: &str,
    weights: &str,
    threads: Option<usize>,
    cpus: &[usize],
    draft_vocab: Option<usize>,
) -> anyhow::Result<Arc<LoadedLm>> {
    let key = format!(
        "{}|{device}|{weights}|{threads:?}|{cpus:?}|{draft_vocab:?}",
        path.display()
    );
    let cell = LOADED
        .lock()
        .map_err(|_| anyhow::anyhow!("model cache poisoned"))?
        .entry(key)
        .or_default()
        .clone();
    let mut slot = cell
        .lock()
        .map_err(|_| anyhow::anyhow!("model cache entry poisoned"))?;
    if let Some(m) = slot.as_ref() {
        return Ok(m.clone());
    }
    let choice = select_device(device);
    let requantize = match weights {
        "q4_0" => Some(GgmlDType::Q4_0),
        "q8_0" => Some(GgmlDType::Q8_0),
        "f32" => Some(GgmlDType::F32),
        _ => None,
    };
    let tokenizer = LlmTokenizer::load(path)
        .map_err(|e| anyhow::anyhow!("cannot load the tokenizer of {}: {e}", path.display()))?;
    let draft_vocab = draft_vocab.map(|lowest| {
        let mut also = tokenizer.special_ids();
        also.extend_from_slice(tokenizer.eog_ids());
        DraftVocab { lowest, also }
    });
    let opts = LoadOptions {
        requantize,
        threads,
        cpus: cpus.to_vec(),
        draft_vocab: draft_vocab.clone(),
        ..Default::default()
    };
    let model = LlmModel::load_with(path, &choice.device, &opts)
        .map_err(|e| anyhow::anyhow!("cannot load model {}: {e}", path.display()))?;
    if let (Some(v), None) = (&draft_vocab, model.draft_ids()) {
        ianvs_paradigms::device::warn_once(&format!(
            "drafter {}: draft_vocab {} keeps every token of its vocabulary ({}), so it drafts \
             with the full output head",
            path.display(),
            v.lowest,
            model.config().vocab_size
        ));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for id in 0..tokenizer.vocab_size() as u32 {
        tokenizer.id_to_token(id).hash(&mut h);
    }
    let add_bos = model.config().bos_token_id.is_some() && tokenizer.bos_id().is_some();
    let loaded = Arc::new(LoadedLm {
        // The weight option is part of the identity: the verifier-only reference of a job is
        // cached by this label, and `native` and `f32` weights are different models.
        label: format!(
            "{}{} on {}{}{}",
            path.display(),
            match weights {
                "native" => String::new(),
                w => format!(" as {w}"),
            },
            choice.label,
            threads_label(&model),
            match model.draft_ids() {
                Some(ids) => format!(
                    ", draft head of {} of {} tokens",
                    ids.len(),
                    model.config().vocab_size
                ),
                None => String::new(),
            },
        ),
        fingerprint: h.finish(),
        add_bos,
        model,
        tokenizer,
    });
    *slot = Some(loaded.clone());
    Ok(loaded)
}

/// `, 2 threads on CPUs [0]` for a model with its own threads; empty for the shared pool.
fn threads_label(model: &LlmModel) -> String {
    if !model.device().is_cpu() || (model.cpus().is_empty() && !model.has_own_threads()) {
        return String::new();
    }
    let mut s = format!(", {} threads", model.threads());
    if !model.cpus().is_empty() {
        s.push_str(&format!(" on CPUs {:?}", model.cpus()));
    }
    s
}

pub fn build(hps: &Hyperparameters) -> anyhow::Result<Arc<dyn LanguageModel>> {
    let path = PathBuf::from(hps.str("model")?);
    let threads = match hps.usize("threads")? {
        0 => None,
        n => Some(n),
    };
    let cpus: Vec<usize> = hps
        .int_list("cpus")?
        .into_iter()
        .map(|c| c as usize)
        .collect();
    // Declared for drafters only (`drafter_hps`): a verifier never has it.
    let draft_vocab = match hps.0.get(DRAFT_VOCAB) {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => Some(hps.usize(DRAFT_VOCAB)?),
    };
    let lm = load_shared_with(
        &path,
        hps.str("device")?,
        hps.str("weights")?,
        threads,
        &cpus,
        draft_vocab,
    )?;
    let verifier = hps.str(hp_names::VERIFICATION).is_ok();
    let quantized = lm.model.weight_bytes() < 4 * lm.model.num_parameters();
    if verifier && quantized && !lm.model.device().is_cpu() {
        ianvs_paradigms::device::warn_once(&format!(
            "verifier {}: candle's quantized GPU kernels are not batch invariant, so greedy \
             speculative output can drift from verifier-only output (measured on an H200 with \
             SmolLM2 Q4_1); `weights: f32` keeps a GPU verifier lossless",
            lm.describe()
        ));
    }
    Ok(lm)
}

struct Session<'a> {
    lm: &'a LoadedLm,
    cache: KvCache,
}

impl LanguageModel for LoadedLm {
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }
    fn vocab_fingerprint(&self) -> u64 {
        self.fingerprint
    }
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, self.add_bos)?)
    }
    fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        Ok(self.tokenizer.decode(ids)?)
    }
    fn eos_id(&self) -> Option<u32> {
        self.model
            .config()
            .eos_token_id()
            .or(self.tokenizer.eos_id())
    }
    fn eog_ids(&self) -> Vec<u32> {
        let mut ids = self.model.config().eos_token_ids.clone();
        for &id in self.tokenizer.eog_ids() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
    fn weight_bytes(&self) -> usize {
        // A drafter with a trimmed head reads that head, not the full one.
        self.model
            .draft_weight_bytes()
            .unwrap_or(self.model.weight_bytes())
    }
    fn new_session(&self) -> Box<dyn LmSession + '_> {
        Box::new(Session {
            lm: self,
            cache: self.model.new_cache(),
        })
    }
}

impl LmSession for Session<'_> {
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
        let model = &self.lm.model;
        let Some(ids) = model.draft_ids() else {
            let logits = model.forward(tokens, &mut self.cache)?;
            return Ok(logits
                .to_dtype(candle_core::DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .to_vec2::<f32>()?);
        };
        // A trimmed head: the kept ids get their logits (the full head's, bit for bit), every
        // other id -inf, so argmax, the sampling distribution q (zero outside the kept ids)
        // and the residual max(0, p - q) are all computed from what the drafter sampled.
        let kept = model
            .forward_draft(tokens, &mut self.cache)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
        Ok(kept
            .iter()
            .map(|row| expand_draft_logits(row, ids, model.config().vocab_size))
            .collect())
    }
    fn forward_last(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
        let model = &self.lm.model;
        let Some(ids) = model.draft_ids() else {
            let logits = model.forward_last(tokens, &mut self.cache)?;
            return Ok(logits
                .to_dtype(candle_core::DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?);
        };
        let kept = model
            .forward_draft_last(tokens, &mut self.cache)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(expand_draft_logits(&kept, ids, model.config().vocab_size))
    }
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        Ok(self.cache.truncate(len)?)
    }
}

/// Logits over the whole vocabulary from a trimmed head's row: `row[j]` at `ids[j]`, -inf
/// elsewhere.
fn expand_draft_logits(row: &[f32], ids: &[u32], vocab_size: usize) -> Vec<f32> {
    let mut full = vec![f32::NEG_INFINITY; vocab_size];
    for (&id, &v) in ids.iter().zip(row) {
        full[id as usize] = v;
    }
    full
}
