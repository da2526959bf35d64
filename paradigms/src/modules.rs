//! The narrow traits a paradigm calls on its modules.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::ProgressBar;

use crate::data::Dataset;

/// What a module constructor may need to know about the data it will see.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// (channels, height, width) of one input; (1, 1, dim) for flat features.
    pub input_shape: (usize, usize, usize),
    pub num_classes: usize,
    /// Job-level default seed (`ianvs run --seed`), used when a module has no `seed` of its own.
    pub seed: u64,
}

/// Progress and cancellation handed to long-running module work.
pub struct WorkContext<'a> {
    /// The per-case bar (hidden when quiet or not a terminal).
    pub progress: &'a ProgressBar,
    pub cancel: &'a AtomicBool,
}

impl WorkContext<'_> {
    pub fn check_cancelled(&self) -> anyhow::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            anyhow::bail!("cancelled (Ctrl-C)");
        }
        Ok(())
    }
}

/// What a training run reports back.
#[derive(Debug, Clone, Default)]
pub struct TrainReport {
    pub seconds: f64,
    pub final_loss: f64,
    pub epochs: usize,
}

/// A classifier a paradigm can train and query (module type `basemodel`; also edge and cloud
/// models of joint inference).
pub trait BaseModel: Send + Sync {
    fn train(&mut self, train: &Dataset, work: &WorkContext) -> anyhow::Result<TrainReport>;
    /// Class probabilities for `n` samples (row-major `[n, dim]` in, `[n, classes]` out).
    fn predict_proba(&self, x: &[f32]) -> anyhow::Result<Vec<f32>>;
    fn num_classes(&self) -> usize;
    fn num_parameters(&self) -> usize;
    /// False for ready-made models (e.g. an ONNX file) that are used as given: paradigms then
    /// skip `train` and need no train split for them.
    fn needs_training(&self) -> bool {
        true
    }
    /// True when one call on many samples costs about what one call on one sample does (an
    /// out-of-process plug-in pays a round trip per call): single-task learning then predicts
    /// the test split in batches and records each sample's share of its batch's time.
    fn prefers_batches(&self) -> bool {
        false
    }
    /// For an out-of-process plug-in: how its calls' time splits into its own compute and
    /// protocol overhead.
    fn plugin_stats(&self) -> Option<PluginStats> {
        None
    }
    /// True when the model takes index-file samples as Ianvs passes them (paths, see
    /// [`crate::data::IndexSamples`]) rather than numeric features: plug-ins. Such a model is
    /// trained on `train.index` when the data has one.
    fn takes_samples(&self) -> bool {
        false
    }
    /// Class scores (`[n, classes]`) for `n` samples given as Ianvs passes them (`x`, paths).
    fn predict_samples(&self, _x: &[String]) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("this model reads numeric features, not sample paths")
    }
    /// Class scores for one sample given as Ianvs passes it, called as Ianvs's joint inference
    /// calls `predict(data)`: with the one sample, not a list.
    fn predict_sample(&self, _x: &str) -> anyhow::Result<Vec<f32>> {
        anyhow::bail!("this model reads numeric features, not sample paths")
    }
}

/// Time of a plug-in's calls: `compute_s` measured inside the plug-in around the user's code,
/// `wall_s` the round trips seen from ianvs; the difference is protocol overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PluginStats {
    pub calls: u64,
    pub compute_s: f64,
    pub wall_s: f64,
}

impl PluginStats {
    pub fn overhead_s(&self) -> f64 {
        (self.wall_s - self.compute_s).max(0.0)
    }
    /// Adds the plug-in measurements to a case's measurements under `prefix`
    /// (`plugin_compute_s`, `plugin_overhead_s`, `plugin_calls`).
    pub fn record(&self, prefix: &str, m: &mut std::collections::BTreeMap<String, f64>) {
        m.insert(format!("{prefix}plugin_calls"), self.calls as f64);
        m.insert(format!("{prefix}plugin_compute_s"), self.compute_s);
        m.insert(format!("{prefix}plugin_overhead_s"), self.overhead_s());
    }
}

/// A causal language model a paradigm decodes with (a drafter on the edge, a verifier in the
/// cloud). Loaded once per job and shared by every case that names it.
pub trait LanguageModel: Send + Sync {
    /// Where it came from, for messages and records.
    fn describe(&self) -> String;
    fn vocab_size(&self) -> usize;
    /// A hash of the tokenizer's vocabulary: two models can only draft for each other when
    /// their fingerprints match.
    fn vocab_fingerprint(&self) -> u64;
    /// Prompt text to token ids, with the model's BOS where it wants one.
    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>>;
    fn decode(&self, ids: &[u32]) -> anyhow::Result<String>;
    fn eos_id(&self) -> Option<u32>;
    /// Every token that ends generation (EOS, EOT, EOM and the end-of-turn markers the
    /// vocabulary holds, as llama.cpp decides); generation stops at the first of any.
    fn eog_ids(&self) -> Vec<u32> {
        self.eos_id().into_iter().collect()
    }
    /// Bytes of weights read per generated token (for the memory-bandwidth ceiling).
    fn weight_bytes(&self) -> usize;
    fn new_session(&self) -> Box<dyn LmSession + '_>;
}

/// One decoding stream with its own KV cache, owned by the caller.
pub trait LmSession {
    /// Feeds `tokens` after what is cached and returns logits for every one of them
    /// (`tokens.len()` rows of `vocab_size`), in host memory (so any device is synced).
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>>;
    /// Feeds `tokens` like [`LmSession::forward`] and returns the logits of the last one only
    /// (a prefill or a catch-up feed needs no other row). Equal to the last row of `forward`;
    /// a runtime overrides it to skip the other rows' output-head products.
    fn forward_last(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
        self.forward(tokens)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the model returned no logits"))
    }
    /// Tokens in the cache.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Drops cached positions from `len` on (rolls back rejected drafts).
    fn truncate(&mut self, len: usize) -> anyhow::Result<()>;
}
