//! The training loop: random windows of the token stream, AdamW with warm-up and cosine decay,
//! global-norm gradient clipping, and a deterministic validation loss.
//!
//! Everything that decides the result is seeded: the windows of each step come from a
//! `ChaCha8Rng` seeded with [`TrainSettings::seed`], and the weights from the model seed. The
//! validation loss is exact, not sampled: the validation stream is cut into consecutive windows
//! so every validation token except the first is predicted exactly once, and the mean is
//! weighted by token.

use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{LmTrainError, Result};
use super::model::TrainLlama;

/// How to train. [`TrainSettings::check`] validates the ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per step.
    pub batch_size: usize,
    /// Tokens each window predicts (the model sees `context` inputs).
    pub context: usize,
    /// Peak learning rate, reached after the warm-up.
    pub learning_rate: f64,
    /// The cosine schedule ends at `learning_rate * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay on weight matrices (never on norm weights).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables clipping).
    pub grad_clip: f64,
    /// Seed of the window sampler.
    pub seed: u64,
    /// Validation loss every this many steps (0: only before and after training).
    pub eval_every: usize,
    /// Windows per forward pass when evaluating.
    pub eval_batch_size: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 16,
            context: 256,
            learning_rate: 3e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 50,
            weight_decay: 0.1,
            grad_clip: 1.0,
            seed: 0,
            eval_every: 200,
            eval_batch_size: 16,
        }
    }
}

impl TrainSettings {
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(LmTrainError::Settings(m));
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.context < 2 {
            return bad(format!(
                "context must be at least 2 tokens, got {}",
                self.context
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return bad(format!(
                "learning rate must be in (0, 1), got {}",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!(
                "gradient clip must be >= 0, got {}",
                self.grad_clip
            ));
        }
        Ok(())
    }

    /// The learning rate of (0-based) `step`: linear warm-up, then cosine decay to the floor.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps - self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.learning_rate * self.min_lr_ratio;
        floor + (self.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Reported after every step.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    /// Loss of this step's batch.
    pub loss: f32,
    pub lr: f64,
    /// Training tokens per second so far (evaluation time excluded).
    pub tokens_per_sec: f64,
    /// Set on steps where the validation loss was computed.
    pub val_loss: Option<f32>,
}

/// One point of the loss curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalPoint {
    pub step: usize,
    /// Mean batch loss over the steps since the previous point (`None` at step 0).
    pub train_loss: Option<f32>,
    pub val_loss: f32,
}

/// What a training run achieved.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub steps: usize,
    pub tokens_seen: usize,
    /// Training tokens per second (evaluation excluded).
    pub tokens_per_sec: f64,
    pub train_secs: f64,
    pub eval_secs: f64,
    /// Validation loss of the untrained model.
    pub initial_val_loss: f32,
    /// Mean batch loss over the last `min(100, steps)` steps.
    pub final_batch_loss: f32,
    /// Loss of the final weights on fixed training windows spread over the training stream
    /// (as many tokens as the validation stream), for a like-for-like overfitting check.
    pub final_train_loss: f32,
    pub final_val_loss: f32,
    pub history: Vec<EvalPoint>,
}

/// Consecutive windows of `context + 1` tokens over `tokens`, overlapping by one so each token
/// after the first is a target exactly once; the last window may be shorter (≥ 2 tokens).
pub fn eval_windows(tokens: &[u32], context: usize) -> Vec<&[u32]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < tokens.len() {
        let end = (start + context + 1).min(tokens.len());
        out.push(&tokens[start..end]);
        start += context;
    }
    out
}

/// Token-weighted mean loss of `model` over `windows` (see [`eval_windows`]).
pub fn evaluate(model: &TrainLlama, windows: &[&[u32]], batch_size: usize) -> Result<f32> {
    let dev = model.device();
    let (mut total, mut count) = (0f64, 0usize);
    // Full-length windows go in batches; a shorter tail window goes alone.
    let mut i = 0;
    while i < windows.len() {
        let len = windows[i].len();
        let mut j = i;
        while j < windows.len() && j - i < batch_size && windows[j].len() == len {
            j += 1;
        }
        let flat: Vec<u32> = windows[i..j]
            .iter()
            .flat_map(|w| w.iter().copied())
            .collect();
        let batch = Tensor::from_vec(flat, (j - i, len), dev)?;
        let loss = model.loss(&batch)?.to_scalar::<f32>()?;
        let targets = (j - i) * (len - 1);
        total += loss as f64 * targets as f64;
        count += targets;
        i = j;
    }
    if count == 0 {
        return Err(LmTrainError::Corpus(
            "the validation stream has fewer than two tokens".into(),
        ));
    }
    Ok((total / count as f64) as f32)
}

/// Global L2 norm of the gradients of `vars`; scales them down to `max_norm` when above it.
fn clip_gradients(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Trains `model` on random windows of `train_tokens`, reporting every step to `on_step`
/// (return `false` to cancel: the run stops with [`LmTrainError::Cancelled`]).
pub fn train(
    model: &TrainLlama,
    train_tokens: &[u32],
    val_tokens: &[u32],
    settings: &TrainSettings,
    mut on_step: impl FnMut(&StepInfo) -> bool,
) -> Result<TrainReport> {
    settings.check()?;
    let s = settings;
    if s.context > model.shape().max_position_embeddings {
        return Err(LmTrainError::Settings(format!(
            "context {} exceeds the model's max_position_embeddings {}",
            s.context,
            model.shape().max_position_embeddings
        )));
    }
    let window = s.context + 1;
    if train_tokens.len() < window {
        return Err(LmTrainError::Corpus(format!(
            "the training stream has {} tokens, fewer than one window of context + 1 = {window}; \
             lower --context or add text",
            train_tokens.len()
        )));
    }
    let val_windows = eval_windows(val_tokens, s.context);
    // Training windows for the final like-for-like loss: as many tokens as validation, spread
    // evenly over the training stream.
    let train_probe: Vec<&[u32]> = {
        let n = val_windows.len().max(1);
        let last_start = train_tokens.len() - window;
        (0..n)
            .map(|i| {
                let start = if n == 1 { 0 } else { last_start * i / (n - 1) };
                &train_tokens[start..start + window]
            })
            .collect()
    };

    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    for (_, var) in model.named_vars()? {
        if var.as_tensor().rank() >= 2 {
            decay.push(var);
        } else {
            no_decay.push(var);
        }
    }
    let all_vars: Vec<Var> = decay.iter().chain(&no_decay).cloned().collect();
    let params = |wd: f64| ParamsAdamW {
        lr: s.lr_at(0),
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: wd,
    };
    let mut opt_decay = AdamW::new(decay, params(s.weight_decay))?;
    let mut opt_plain = AdamW::new(no_decay, params(0.0))?;

    let eval_start = Instant::now();
    let initial_val_loss = evaluate(model, &val_windows, s.eval_batch_size)?;
    let mut eval_secs = eval_start.elapsed().as_secs_f64();
    let mut history = vec![EvalPoint {
        step: 0,
        train_loss: None,
        val_loss: initial_val_loss,
    }];

    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let dev = model.device().clone();
    let mut train_secs = 0f64;
    let (mut interval_sum, mut interval_n) = (0f64, 0usize);
    let mut recent: std::collections::VecDeque<f32> = Default::default();
    for step in 0..s.steps {
        let t0 = Instant::now();
        let lr = s.lr_at(step);
        opt_decay.set_learning_rate(lr);
        opt_plain.set_learning_rate(lr);
        let mut flat = Vec::with_capacity(s.batch_size * window);
        for _ in 0..s.batch_size {
            let start = rng.random_range(0..=train_tokens.len() - window);
            flat.extend_from_slice(&train_tokens[start..start + window]);
        }
        let batch = Tensor::from_vec(flat, (s.batch_size, window), &dev)?;
        let loss = model.loss(&batch)?;
        let loss_value = loss.to_scalar::<f32>()?;
        if !loss_value.is_finite() {
            return Err(LmTrainError::Diverged {
                step: step + 1,
                loss: loss_value,
            });
        }
        let mut grads = loss.backward()?;
        clip_gradients(&mut grads, &all_vars, s.grad_clip)?;
        opt_decay.step(&grads)?;
        opt_plain.step(&grads)?;
        train_secs += t0.elapsed().as_secs_f64();

        interval_sum += loss_value as f64;
        interval_n += 1;
        recent.push_back(loss_value);
        if recent.len() > 100 {
            recent.pop_front();
        }
        let done = step + 1;
        let eval_now = done == s.steps || (s.eval_every > 0 && done.is_multiple_of(s.eval_every));
        let mut info_val = None;
        if eval_now && done != s.steps {
            let t = Instant::now();
            let val_loss = evaluate(model, &val_windows, s.eval_batch_size)?;
            eval_secs += t.elapsed().as_secs_f64();
            history.push(EvalPoint {
                step: done,
                train_loss: Some((interval_sum / interval_n as f64) as f32),
                val_loss,
            });
            (interval_sum, interval_n) = (0.0, 0);
            info_val = Some(val_loss);
        }
        let info = StepInfo {
            step: done,
            steps: s.steps,
            loss: loss_value,
            lr,
            tokens_per_sec: (done * s.batch_size * s.context) as f64 / train_secs.max(1e-9),
            val_loss: info_val,
        };
        if !on_step(&info) {
            return Err(LmTrainError::Cancelled);
        }
    }
    let t = Instant::now();
    let final_val_loss = evaluate(model, &val_windows, s.eval_batch_size)?;
    let final_train_loss = evaluate(model, &train_probe, s.eval_batch_size)?;
    eval_secs += t.elapsed().as_secs_f64();
    history.push(EvalPoint {
        step: s.steps,
        train_loss: (interval_n > 0).then(|| (interval_sum / interval_n as f64) as f32),
        val_loss: final_val_loss,
    });
    let tokens_seen = s.steps * s.batch_size * s.context;
    Ok(TrainReport {
        steps: s.steps,
        tokens_seen,
        tokens_per_sec: tokens_seen as f64 / train_secs.max(1e-9),
        train_secs,
        eval_secs,
        initial_val_loss,
        final_batch_loss: recent.iter().sum::<f32>() / recent.len().max(1) as f32,
        final_train_loss,
        final_val_loss,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let s = TrainSettings {
            steps: 110,
            warmup_steps: 10,
            learning_rate: 1e-2,
            min_lr_ratio: 0.1,
            ..TrainSettings::default()
        };
        assert!((s.lr_at(0) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(9) - 1e-2).abs() < 1e-12);
        assert!((s.lr_at(10) - 1e-2).abs() < 1e-12);
        assert!((s.lr_at(60) - 5.5e-3).abs() < 1e-9);
        assert!((s.lr_at(109) - 1e-3).abs() < 1e-4);
        let no_warmup = TrainSettings {
            warmup_steps: 0,
            ..s
        };
        assert!((no_warmup.lr_at(0) - 1e-2).abs() < 1e-12);
    }

    #[test]
    fn eval_windows_cover_every_target_once() {
        let tokens: Vec<u32> = (0..10).collect();
        let w = eval_windows(&tokens, 4);
        assert_eq!(w, vec![&tokens[0..5], &tokens[4..9], &tokens[8..10]]);
        let targets: usize = w.iter().map(|w| w.len() - 1).sum();
        assert_eq!(targets, 9);
        assert!(eval_windows(&tokens[..1], 4).is_empty());
    }

    #[test]
    fn settings_are_checked() {
        let ok = TrainSettings::default();
        assert!(ok.check().is_ok());
        for bad in [
            TrainSettings {
                steps: 0,
                ..ok.clone()
            },
            TrainSettings {
                learning_rate: 0.0,
                ..ok.clone()
            },
            TrainSettings {
                learning_rate: f64::NAN,
                ..ok.clone()
            },
            TrainSettings {
                context: 1,
                ..ok.clone()
            },
            TrainSettings {
                weight_decay: -1.0,
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err());
        }
    }
}
