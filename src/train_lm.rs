//! `ianvs train-lm`: train a small Llama-architecture LM (tokenizer included) on a text corpus
//! and export it as a Hugging Face folder — how the project makes its draft/verifier pair.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::ValueEnum;
use ianvs_algorithms::lm_train::corpus::DEFAULT_VAL_EVERY;
use ianvs_algorithms::lm_train::{
    greedy_complete, run_job, ArchSpec, Event, LmTrainError, Preset, TokenizerSource, TrainLmJob,
    TrainLmOutcome, TrainSettings, WeightDtype, PRESET_VOCAB_SIZE,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, ValueEnum)]
pub enum PresetArg {
    /// ≈1 M parameters: hidden 128, 2 layers, 4/2 heads, SwiGLU 384, vocab 4096.
    Draft,
    /// ≈5.8 M parameters: hidden 256, 6 layers, 8/4 heads, SwiGLU 768.
    Verifier,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

/// Arguments of `ianvs train-lm`. Shape and training flags override the preset's values;
/// without `--preset` every shape flag is required.
#[derive(clap::Args)]
#[command(
    after_help = "Example (the project's pair, see datasets/PROVENANCE.md):\n  ianvs train-lm --corpus datasets/lm/corpus/fortunes --preset draft --out datasets/lm/draft\n  ianvs train-lm --corpus datasets/lm/corpus/fortunes --preset verifier --tokenizer datasets/lm/tokenizer.json --out datasets/lm/verifier"
)]
pub struct TrainLmArgs {
    /// Corpus text files or folders (fortune format: documents separated by `%` lines).
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    corpus: Vec<PathBuf>,
    /// Output folder: model.safetensors, config.json, tokenizer.json, training.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A ready-made shape and schedule.
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Hidden size (embedding width).
    #[arg(long, value_name = "N")]
    hidden: Option<usize>,
    /// Transformer blocks.
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Attention (query) heads.
    #[arg(long, value_name = "N")]
    heads: Option<usize>,
    /// Key/value heads (grouped-query attention; must divide --heads).
    #[arg(long, value_name = "N")]
    kv_heads: Option<usize>,
    /// SwiGLU inner width.
    #[arg(long, value_name = "N")]
    intermediate: Option<usize>,
    /// Give the model its own output matrix instead of reusing the embeddings.
    #[arg(long)]
    untied: bool,
    /// Train a byte-level BPE tokenizer with at most this many ids (default 4096).
    #[arg(long, value_name = "N", conflicts_with = "tokenizer")]
    vocab_size: Option<usize>,
    /// Reuse this tokenizer.json (or a model folder holding one) instead of training one: a
    /// verifier must share its draft's vocabulary.
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
    /// Training context in tokens (also the model's max_position_embeddings).
    #[arg(long, value_name = "N")]
    context: Option<usize>,
    /// Optimiser steps.
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Windows per step.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Peak learning rate (AdamW; warm-up, then cosine decay to a tenth).
    #[arg(long, value_name = "F")]
    lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// AdamW weight decay on weight matrices.
    #[arg(long, value_name = "F")]
    weight_decay: Option<f64>,
    /// Validation loss every N steps (0: only at the start and the end).
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Hold out one document in N for validation (the split does not depend on the seed).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VAL_EVERY)]
    val_every: usize,
    /// Seeds the weights (and, plus one, the order of training windows).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Storage type of the exported weights; losses are reported for the rounded weights.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// After training, greedily complete this prompt through the inference runtime (repeatable).
    #[arg(long, value_name = "PROMPT")]
    sample: Vec<String>,
    /// Tokens per --sample completion.
    #[arg(long, value_name = "N", default_value_t = 40)]
    sample_tokens: usize,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Builds the job from the flags; `Err(message)` is a usage error.
fn job_from_args(a: &TrainLmArgs) -> std::result::Result<TrainLmJob, String> {
    let preset = a.preset.map(|p| match p {
        PresetArg::Draft => Preset::Draft,
        PresetArg::Verifier => Preset::Verifier,
    });
    let base_arch = preset.map(Preset::arch);
    let pick = |flag: &str, given: Option<usize>, preset: Option<usize>| {
        given.or(preset).ok_or_else(|| {
            format!("--{flag} is required without --preset (or pick --preset draft|verifier)")
        })
    };
    let b = base_arch.as_ref();
    let arch = ArchSpec {
        hidden_size: pick("hidden", a.hidden, b.map(|x| x.hidden_size))?,
        num_layers: pick("layers", a.layers, b.map(|x| x.num_layers))?,
        num_heads: pick("heads", a.heads, b.map(|x| x.num_heads))?,
        num_kv_heads: a
            .kv_heads
            .or(b.map(|x| x.num_kv_heads))
            .or(a.heads)
            .unwrap_or(1),
        intermediate_size: pick(
            "intermediate",
            a.intermediate,
            b.map(|x| x.intermediate_size),
        )?,
        tie_word_embeddings: !a.untied,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
    };
    let d = preset.map(Preset::settings).unwrap_or_default();
    let settings = TrainSettings {
        steps: a.steps.unwrap_or(d.steps),
        batch_size: a.batch.unwrap_or(d.batch_size),
        context: a.context.unwrap_or(d.context),
        learning_rate: a.lr.unwrap_or(d.learning_rate),
        warmup_steps: a.warmup.unwrap_or(d.warmup_steps),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        eval_every: a.eval_every.unwrap_or(d.eval_every),
        seed: a.seed,
        ..d
    };
    // Missing inputs are usage errors, reported before the (re-)start and any work.
    for path in a.corpus.iter().chain(a.tokenizer.iter()) {
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
    }
    let tokenizer = match &a.tokenizer {
        Some(p) => TokenizerSource::Load(p.clone()),
        None => TokenizerSource::Train {
            vocab_size: a.vocab_size.unwrap_or(PRESET_VOCAB_SIZE),
        },
    };
    Ok(TrainLmJob {
        corpus: a.corpus.clone(),
        val_every: a.val_every,
        tokenizer,
        arch,
        settings,
        export_dtype: match a.dtype {
            DtypeArg::F32 => WeightDtype::F32,
            DtypeArg::F16 => WeightDtype::F16,
            DtypeArg::Bf16 => WeightDtype::Bf16,
        },
        out: a.out.clone(),
        command: command_line(),
    })
}

/// This process's command line as a shell would take it, starting with `ianvs`.
fn command_line() -> String {
    let quote = |s: String| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
        {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once("ianvs".to_string())
        .chain(
            std::env::args_os()
                .skip(1)
                .map(|a| quote(a.to_string_lossy().into_owned())),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// glibc malloc settings that keep freed memory in the process (see [`rerun_with_malloc_tuning`]).
const MALLOC_TUNING: [(&str, &str); 3] = [
    ("MALLOC_MMAP_MAX_", "0"),
    ("MALLOC_TRIM_THRESHOLD_", "17179869184"),
    ("MALLOC_TOP_PAD_", "268435456"),
];

/// Training allocates and frees tensors of tens of megabytes thousands of times. glibc serves
/// such blocks with fresh `mmap`s and returns them on free, so every step page-faults its whole
/// working set in again: measured on two cores, a third of the draft's training time went to
/// the kernel zeroing pages. glibc only reads its tunables at start-up, and setting them from
/// inside would need `unsafe`, so on Linux the command runs itself again once with
/// `MALLOC_MMAP_MAX_=0` (no mmap: big blocks come from the heap) and a trim threshold high
/// enough that freed memory is reused instead of returned (1.7–2x faster training). The
/// numbers do not change, only where the memory comes from. `None`: already tuned, or not
/// applicable; run in this process.
fn rerun_with_malloc_tuning(exit_interrupted: u8) -> Option<Result<u8>> {
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || std::env::var_os(MALLOC_TUNING[0].0).is_some()
    {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    // Ctrl-C reaches both processes; the child stops cleanly and this one waits for it.
    let _ = ctrlc::set_handler(|| {});
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).envs(MALLOC_TUNING);
    Some(match cmd.status() {
        Ok(status) => Ok(status
            .code()
            .map_or(exit_interrupted, |c| u8::try_from(c).unwrap_or(1))),
        Err(e) => {
            Err(anyhow::Error::new(e).context("re-running train-lm with tuned malloc settings"))
        }
    })
}

/// Runs `ianvs train-lm`; returns the exit code (0, 2 for bad flags, 130 when interrupted).
pub fn run(args: TrainLmArgs, exit_config: u8, exit_interrupted: u8) -> Result<u8> {
    let job = match job_from_args(&args) {
        Ok(j) => j,
        Err(msg) => {
            eprintln!("error: {msg}");
            return Ok(exit_config);
        }
    };
    if let Some(code) = rerun_with_malloc_tuning(exit_interrupted) {
        return code;
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit_interrupted));
            }
            eprintln!("\ninterrupted: stopping after the current step, nothing is exported (press Ctrl-C again to quit now)");
        });
    }
    let terminal = !args.quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(job.settings.steps as u64),
        if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed_precise}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("train");
    // Without a terminal (a log file), progress goes out as plain lines at each evaluation.
    let log = |line: String| {
        if terminal {
            bar.println(line);
        } else if !args.quiet {
            eprintln!("{line}");
        }
    };
    let mut last_val = None;
    let result = run_job(&job, |event| {
        match event {
            Event::Corpus(s) => log(format!(
                "corpus: {} files, {} documents ({} duplicates dropped): {} train ({} bytes) / {} validation ({} bytes)",
                s.files.len(), s.documents, s.duplicates, s.train_documents, s.train_bytes, s.validation_documents, s.validation_bytes
            )),
            Event::Tokenizer { vocab_size, trained, train_tokens, val_tokens } => log(format!(
                "tokenizer: {} ({vocab_size} ids): {train_tokens} train / {val_tokens} validation tokens",
                if trained { "byte-level BPE trained on the training documents" } else { "loaded" }
            )),
            Event::Model { num_parameters, shape } => log(format!(
                "model: Llama, {num_parameters} parameters (hidden {}, {} layers, {}/{} heads, SwiGLU {}, context {}, {} head)",
                shape.hidden_size, shape.num_layers, shape.num_heads, shape.num_kv_heads, shape.intermediate_size,
                shape.max_position_embeddings, if shape.tie_word_embeddings { "tied" } else { "untied" }
            )),
            Event::Step(info) => {
                if let Some(v) = info.val_loss {
                    last_val = Some(v);
                    if !terminal {
                        log(format!(
                            "step {}/{}: loss {:.4}, val {v:.4}, lr {:.2e}, {:.0} tok/s",
                            info.step, info.steps, info.loss, info.lr, info.tokens_per_sec
                        ));
                    }
                }
                bar.set_position(info.step as u64);
                bar.set_message(format!(
                    "loss {:.3}{} {:.0} tok/s",
                    info.loss,
                    last_val.map_or(String::new(), |v| format!(" val {v:.3}")),
                    info.tokens_per_sec
                ));
            }
            Event::Exported { dir } => log(format!("exported to {}", dir.display())),
        }
        !cancel.load(Ordering::Relaxed)
    });
    bar.finish_and_clear();
    let outcome = match result {
        Ok(o) => o,
        Err(LmTrainError::Cancelled) => {
            eprintln!("interrupted: nothing exported");
            return Ok(exit_interrupted);
        }
        Err(e @ (LmTrainError::Settings(_) | LmTrainError::Shape(_))) => {
            eprintln!("error: {e}");
            return Ok(exit_config);
        }
        Err(e) => return Err(e).context("train-lm failed"),
    };
    let mut samples = Vec::new();
    for prompt in &args.sample {
        let text = greedy_complete(&job.out, prompt, args.sample_tokens).with_context(|| {
            format!("sampling from the exported model in {}", job.out.display())
        })?;
        samples.push((prompt.clone(), text));
    }
    if args.json {
        let mut v = serde_json::to_value(&outcome)?;
        v["samples"] = samples
            .iter()
            .map(|(p, c)| serde_json::json!({"prompt": p, "completion": c}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_summary(&job, &outcome, &samples);
    }
    Ok(0)
}

fn print_summary(job: &TrainLmJob, o: &TrainLmOutcome, samples: &[(String, String)]) {
    let r = &o.report;
    println!(
        "trained {} ({} parameters, vocab {})",
        job.out.display(),
        o.num_parameters,
        o.vocab_size
    );
    println!(
        "  {} steps x {} windows x {} tokens = {} tokens ({:.2} epochs of {} training tokens), {:.0} tok/s",
        r.steps,
        job.settings.batch_size,
        job.settings.context,
        r.tokens_seen,
        r.tokens_seen as f64 / o.train_tokens.max(1) as f64,
        o.train_tokens,
        r.tokens_per_sec
    );
    println!(
        "  loss: validation {:.4} -> {:.4} (exported weights: {:.4}); train {:.4}",
        r.initial_val_loss, r.final_val_loss, o.exported_val_loss, r.final_train_loss
    );
    println!(
        "  wall time {:.1} s (training {:.1} s, evaluation {:.1} s)",
        o.wall_secs, r.train_secs, r.eval_secs
    );
    for (p, c) in samples {
        println!("  sample: {p:?} -> {c:?}");
    }
}
