//! The whole `ianvs train-lm` job: corpus → tokenizer → model → training → export, plus the
//! presets of the project's draft/verifier pair and a greedy sampler through the runtime.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;
use serde_json::json;
use tokenizers::Tokenizer;

use super::corpus::{load_corpus, CorpusStats};
use super::error::{LmTrainError, Result};
use super::export::{save_hf_folder, write_json, WeightDtype};
use super::model::{LmShape, TrainLlama};
use super::tokenizer::{encode_documents, load_tokenizer, train_bpe};
use super::train::{eval_windows, evaluate, train, StepInfo, TrainReport, TrainSettings};

/// The architecture without the vocabulary and context, which come from the tokenizer and the
/// training settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchSpec {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    pub tie_word_embeddings: bool,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
}

impl ArchSpec {
    pub fn shape(&self, vocab_size: usize, context: usize) -> LmShape {
        LmShape {
            vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            max_position_embeddings: context,
            rope_theta: self.rope_theta,
            rms_norm_eps: self.rms_norm_eps,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// The project's draft/verifier pair (see `datasets/PROVENANCE.md` for how they were run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// ≈1 M parameters with a 4,096-token vocabulary: hidden 128, 2 layers, 4 heads / 2 kv
    /// heads, SwiGLU width 384, tied head.
    Draft,
    /// ≈5.8 M parameters (about 6× the draft): hidden 256, 6 layers, 8 heads / 4 kv heads,
    /// SwiGLU width 768, tied head.
    Verifier,
}

/// The vocabulary size both presets are trained with.
pub const PRESET_VOCAB_SIZE: usize = 4096;

impl Preset {
    pub fn arch(self) -> ArchSpec {
        let (hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size) = match self {
            Preset::Draft => (128, 2, 4, 2, 384),
            Preset::Verifier => (256, 6, 8, 4, 768),
        };
        ArchSpec {
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            intermediate_size,
            tie_word_embeddings: true,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
        }
    }

    /// The schedules the committed pair was trained with. Both see about the same amount of
    /// text (≈1.6 M and ≈1.3 M tokens, 1.6–2 epochs of the fortunes corpus), so the verifier's
    /// lower loss comes from its size, not from more data. On two shared CPU cores that is
    /// ≈12 minutes for the draft and ≈45 for the verifier (see `datasets/PROVENANCE.md`).
    pub fn settings(self) -> TrainSettings {
        // (steps, windows per step, peak learning rate, warm-up steps, evaluation interval)
        let (steps, batch_size, learning_rate, warmup_steps, eval_every) = match self {
            Preset::Draft => (400, 16, 3e-3, 40, 100),
            // Smaller batches: the verifier gets fewer tokens per second, so it takes more,
            // smaller optimiser steps from them.
            Preset::Verifier => (640, 8, 2e-3, 50, 160),
        };
        TrainSettings {
            steps,
            batch_size,
            context: 256,
            learning_rate,
            min_lr_ratio: 0.1,
            warmup_steps,
            weight_decay: 0.1,
            grad_clip: 1.0,
            seed: 0,
            eval_every,
            eval_batch_size: 16,
        }
    }
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSource {
    /// Train a byte-level BPE of (at most) this many ids on the training documents.
    Train { vocab_size: usize },
    /// Reuse a `tokenizer.json` (a file or a folder holding one), e.g. the draft's.
    Load(PathBuf),
}

/// Everything `ianvs train-lm` needs.
#[derive(Debug, Clone)]
pub struct TrainLmJob {
    pub corpus: Vec<PathBuf>,
    pub val_every: usize,
    pub tokenizer: TokenizerSource,
    pub arch: ArchSpec,
    /// `settings.seed` seeds the weights; the window sampler uses `seed + 1`.
    pub settings: TrainSettings,
    /// Storage type of the exported weights.
    pub export_dtype: WeightDtype,
    pub out: PathBuf,
    /// The command line, recorded in `training.json`.
    pub command: String,
}

/// Progress of a job, for a progress bar.
#[derive(Debug)]
pub enum Event<'a> {
    Corpus(&'a CorpusStats),
    Tokenizer {
        vocab_size: usize,
        trained: bool,
        train_tokens: usize,
        val_tokens: usize,
    },
    Model {
        num_parameters: usize,
        shape: &'a LmShape,
    },
    Step(&'a StepInfo),
    Exported {
        dir: &'a Path,
    },
}

/// What a job produced (also written to `<out>/training.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainLmOutcome {
    pub corpus: CorpusStats,
    pub vocab_size: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub num_parameters: usize,
    pub shape: LmShape,
    pub report: TrainReport,
    /// Validation loss of the weights as exported (after rounding to the export dtype).
    pub exported_val_loss: f32,
    pub wall_secs: f64,
}

/// Runs the job. `on_event` returning `false` cancels it (training stops at the next step and
/// nothing is exported).
pub fn run_job(
    job: &TrainLmJob,
    mut on_event: impl FnMut(Event<'_>) -> bool,
) -> Result<TrainLmOutcome> {
    let started = Instant::now();
    job.settings.check()?;
    // Check the shape before the (slower) corpus and tokenizer work.
    job.arch
        .shape(super::tokenizer::MIN_VOCAB_SIZE, job.settings.context)
        .check()?;
    let corpus = load_corpus(&job.corpus, job.val_every)?;
    if !on_event(Event::Corpus(&corpus.stats)) {
        return Err(LmTrainError::Cancelled);
    }
    let (tokenizer, trained): (Tokenizer, bool) = match &job.tokenizer {
        TokenizerSource::Train { vocab_size } => (train_bpe(&corpus.train, *vocab_size)?, true),
        TokenizerSource::Load(path) => (load_tokenizer(path)?, false),
    };
    let vocab_size = tokenizer.get_vocab_size(true);
    let train_tokens = encode_documents(&tokenizer, &corpus.train)?;
    let val_tokens = encode_documents(&tokenizer, &corpus.validation)?;
    if !on_event(Event::Tokenizer {
        vocab_size,
        trained,
        train_tokens: train_tokens.len(),
        val_tokens: val_tokens.len(),
    }) {
        return Err(LmTrainError::Cancelled);
    }

    let shape = job.arch.shape(vocab_size, job.settings.context);
    let model = TrainLlama::new(shape.clone(), job.settings.seed, &Device::Cpu)?;
    if !on_event(Event::Model {
        num_parameters: model.num_parameters(),
        shape: &shape,
    }) {
        return Err(LmTrainError::Cancelled);
    }
    let sampler_settings = TrainSettings {
        seed: job.settings.seed.wrapping_add(1),
        ..job.settings.clone()
    };
    let report = train(
        &model,
        &train_tokens,
        &val_tokens,
        &sampler_settings,
        |info| on_event(Event::Step(info)),
    )?;

    model.round_through(job.export_dtype.dtype())?;
    let exported_val_loss = evaluate(
        &model,
        &eval_windows(&val_tokens, job.settings.context),
        job.settings.eval_batch_size,
    )?;
    save_hf_folder(&model, &tokenizer, &job.out, job.export_dtype)?;
    let outcome = TrainLmOutcome {
        corpus: corpus.stats,
        vocab_size,
        train_tokens: train_tokens.len(),
        val_tokens: val_tokens.len(),
        num_parameters: model.num_parameters(),
        shape,
        report,
        exported_val_loss,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    let tokenizer_source = match &job.tokenizer {
        TokenizerSource::Train { vocab_size } => json!({ "trained": { "vocab_size": vocab_size } }),
        TokenizerSource::Load(p) => json!({ "loaded": p }),
    };
    write_json(
        &job.out.join("training.json"),
        &json!({
            "command": job.command,
            "ianvs_version": env!("CARGO_PKG_VERSION"),
            "tokenizer": tokenizer_source,
            "arch": job.arch,
            "settings": job.settings,
            "seed": job.settings.seed,
            "export_dtype": job.export_dtype,
            "outcome": outcome,
        }),
    )?;
    on_event(Event::Exported { dir: &job.out });
    Ok(outcome)
}

/// Greedy completion of `prompt` by an exported model, run through the project's inference
/// runtime (`crate::llm`): `max_new_tokens` tokens or up to `<|endoftext|>`.
pub fn greedy_complete(model_dir: &Path, prompt: &str, max_new_tokens: usize) -> Result<String> {
    use crate::llm::{sampling, LlmModel, LlmTokenizer};
    let rt = |e: crate::llm::LlmError| LmTrainError::Tokenizer(e.to_string());
    let model = LlmModel::load(model_dir, &Device::Cpu).map_err(rt)?;
    let tok = LlmTokenizer::load(model_dir).map_err(rt)?;
    let mut ids = tok.encode(prompt, true).map_err(rt)?;
    let mut cache = model.new_cache();
    let mut fresh = ids.clone();
    let prompt_len = ids.len();
    for _ in 0..max_new_tokens {
        if cache.len() + fresh.len() > model.config().max_seq_len {
            break;
        }
        let logits = model.forward(&fresh, &mut cache).map_err(rt)?;
        let next = sampling::argmax(&LlmModel::last_logits(&logits).map_err(rt)?)
            .map_err(|e| rt(e.into()))?;
        if model.config().is_eos(next) {
            break;
        }
        ids.push(next);
        fresh = vec![next];
    }
    tok.decode(&ids[prompt_len..]).map_err(rt)
}
