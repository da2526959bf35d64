//! LM training: the tokenizer round-trips any text, training lowers the loss, and an exported
//! model gives the inference runtime (`llm::LlmModel`) the same logits as the training model.
//!
//! Everything runs on a slice of the committed fortunes corpus with tiny models, so the whole
//! file takes seconds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use ianvs_algorithms::llm::{LlmModel, LlmTokenizer};
use ianvs_algorithms::lm_train::corpus::load_corpus;
use ianvs_algorithms::lm_train::export::save_hf_folder;
use ianvs_algorithms::lm_train::tokenizer::{encode_documents, load_tokenizer, train_bpe};
use ianvs_algorithms::lm_train::train::{eval_windows, evaluate, train};
use ianvs_algorithms::lm_train::{
    greedy_complete, run_job, ArchSpec, LmShape, TokenizerSource, TrainLlama, TrainLmJob,
    TrainSettings, WeightDtype,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokenizers::Tokenizer;

fn fortunes(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/lm/corpus/fortunes")
        .join(name)
}

/// Three small files of the real corpus (≈40 KB, a few hundred documents).
fn small_corpus() -> Vec<PathBuf> {
    ["goedel", "magic", "fortunes"].map(fortunes).to_vec()
}

struct Fixture {
    tokenizer: Tokenizer,
    train_tokens: Vec<u32>,
    val_tokens: Vec<u32>,
}

/// Tokenizer and token streams, built once for the whole file.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let corpus = load_corpus(&small_corpus(), 10).expect("corpus");
        let tokenizer = train_bpe(&corpus.train, 512).expect("tokenizer");
        let train_tokens = encode_documents(&tokenizer, &corpus.train).unwrap();
        let val_tokens = encode_documents(&tokenizer, &corpus.validation).unwrap();
        Fixture {
            tokenizer,
            train_tokens,
            val_tokens,
        }
    })
}

fn tiny_shape(vocab: usize, tie: bool) -> LmShape {
    LmShape {
        vocab_size: vocab,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        max_position_embeddings: 48,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: tie,
    }
}

fn tiny_settings(steps: usize) -> TrainSettings {
    TrainSettings {
        steps,
        batch_size: 8,
        context: 32,
        learning_rate: 1e-2,
        warmup_steps: 5,
        eval_every: 0,
        seed: 3,
        ..TrainSettings::default()
    }
}

/// A tiny model trained for a few dozen steps (so its logits are far from the near-zero logits
/// of a fresh initialisation and a wrong export would show).
fn trained(tie: bool) -> &'static TrainLlama {
    static TIED: OnceLock<TrainLlama> = OnceLock::new();
    static UNTIED: OnceLock<TrainLlama> = OnceLock::new();
    let cell = if tie { &TIED } else { &UNTIED };
    cell.get_or_init(|| {
        let f = fixture();
        let vocab = f.tokenizer.get_vocab_size(true);
        let m = TrainLlama::new(tiny_shape(vocab, tie), 11, &Device::Cpu).unwrap();
        train(
            &m,
            &f.train_tokens,
            &f.val_tokens,
            &tiny_settings(40),
            |_| true,
        )
        .unwrap();
        m
    })
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn tokenizer_round_trips_arbitrary_utf8() {
    let tok = &fixture().tokenizer;
    assert_eq!(tok.get_vocab_size(true), 512);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut texts: Vec<String> = vec![
        "Unicode: Ünïcödé — “quotes” ✓ 漢字 한국어 🦀🎉 \u{200b}".into(),
        "  leading and trailing spaces  \n\n\ttabs\r\nCRLF".into(),
        String::new(),
        "<|endoftext|> as plain text".into(),
    ];
    // Random code points from every plane (surrogates excluded by char::from_u32).
    for _ in 0..50 {
        let len = rng.random_range(1..40);
        texts.push(
            (0..len)
                .filter_map(|_| char::from_u32(rng.random_range(0..0x11_0000)))
                .collect(),
        );
    }
    for text in &texts {
        let ids = tok.encode(text.as_str(), false).unwrap();
        let back = tok.decode(ids.get_ids(), false).unwrap();
        assert_eq!(&back, text, "round trip of {text:?}");
    }
    // The runtime's tokenizer wrapper reads the exported file the same way.
    let dir = tempfile::tempdir().unwrap();
    let m = trained(true);
    save_hf_folder(m, tok, dir.path(), WeightDtype::F32).unwrap();
    let rt = LlmTokenizer::load(dir.path()).unwrap();
    assert_eq!(rt.eos_id(), Some(0));
    assert_eq!(rt.bos_id(), Some(0));
    for text in &texts {
        let ids = rt.encode(text, false).unwrap();
        assert_eq!(&rt.decode(&ids).unwrap(), text);
    }
    let with_bos = rt.encode("Hello", true).unwrap();
    assert_eq!(
        with_bos[0], 0,
        "prompts start with <|endoftext|> like training documents"
    );
    assert_eq!(with_bos[1..], rt.encode("Hello", false).unwrap()[..]);
}

#[test]
fn tokenizer_training_is_deterministic() {
    let corpus = load_corpus(&small_corpus(), 10).unwrap();
    let a = train_bpe(&corpus.train, 400)
        .unwrap()
        .to_string(false)
        .unwrap();
    let b = train_bpe(&corpus.train, 400)
        .unwrap()
        .to_string(false)
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn loss_decreases_on_a_small_corpus() {
    let f = fixture();
    let vocab = f.tokenizer.get_vocab_size(true);
    let m = TrainLlama::new(tiny_shape(vocab, true), 1, &Device::Cpu).unwrap();
    let mut seen = Vec::new();
    let settings = TrainSettings {
        eval_every: 30,
        ..tiny_settings(90)
    };
    let report = train(&m, &f.train_tokens, &f.val_tokens, &settings, |info| {
        seen.push(info.loss);
        true
    })
    .unwrap();
    assert_eq!(seen.len(), 90);
    // A fresh model is close to uniform: ln(512) = 6.24 nats.
    assert!(
        (report.initial_val_loss - (vocab as f32).ln()).abs() < 0.3,
        "initial validation loss {}",
        report.initial_val_loss
    );
    assert!(
        report.final_val_loss < report.initial_val_loss - 1.0,
        "validation loss {} -> {}",
        report.initial_val_loss,
        report.final_val_loss
    );
    let first: f32 = seen[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = seen[80..].iter().sum::<f32>() / 10.0;
    assert!(last < first - 1.0, "training loss {first} -> {last}");
    // Evaluations at steps 0, 30, 60 and the end.
    let steps: Vec<usize> = report.history.iter().map(|p| p.step).collect();
    assert_eq!(steps, vec![0, 30, 60, 90]);
    assert!(report.final_train_loss.is_finite() && report.tokens_per_sec > 0.0);
}

#[test]
fn training_is_reproducible() {
    let f = fixture();
    let vocab = f.tokenizer.get_vocab_size(true);
    let run = || {
        let m = TrainLlama::new(tiny_shape(vocab, true), 4, &Device::Cpu).unwrap();
        train(
            &m,
            &f.train_tokens,
            &f.val_tokens,
            &tiny_settings(8),
            |_| true,
        )
        .unwrap()
        .final_val_loss
    };
    assert_eq!(run(), run());
}

/// The runtime's logits for `ids` fed at once, and fed one token at a time through the cache.
fn runtime_logits(dir: &Path, ids: &[u32]) -> (Tensor, Tensor) {
    let rt = LlmModel::load(dir, &Device::Cpu).expect("runtime loads the export");
    let mut cache = rt.new_cache();
    let full = rt.forward(ids, &mut cache).unwrap();
    let mut cache = rt.new_cache();
    let steps: Vec<Tensor> = ids
        .iter()
        .map(|&id| rt.forward(&[id], &mut cache).unwrap())
        .collect();
    (full, Tensor::cat(&steps, 0).unwrap())
}

fn check_export_matches(tie: bool) {
    let f = fixture();
    let m = trained(tie);
    let dir = tempfile::tempdir().unwrap();
    save_hf_folder(m, &f.tokenizer, dir.path(), WeightDtype::F32).unwrap();
    assert!(
        dir.path().join("model.safetensors").exists(),
        "weights written"
    );
    let ids: Vec<u32> = f.val_tokens[..40].to_vec();
    let train_logits = m
        .forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    let scale = max_abs(&train_logits);
    assert!(
        scale > 2.0,
        "a trained model has sizeable logits, got {scale}"
    );
    let (full, stepwise) = runtime_logits(dir.path(), &ids);
    let (d_full, d_step) = (
        max_abs_diff(&full, &train_logits),
        max_abs_diff(&stepwise, &train_logits),
    );
    assert!(
        d_full < 1e-4 * scale && d_step < 1e-4 * scale,
        "tie={tie}: runtime vs training logits differ by {d_full} (prefill) / {d_step} (decode), scale {scale}"
    );
    // Same argmax everywhere: greedy decoding agrees.
    assert_eq!(
        full.argmax(1).unwrap().to_vec1::<u32>().unwrap(),
        train_logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()
    );

    // Reloading into the training model is exact.
    let back = TrainLlama::load_hf_folder(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(back.shape(), m.shape());
    let again = back
        .forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert_eq!(max_abs_diff(&again, &train_logits), 0.0);
}

#[test]
fn export_gives_the_runtime_the_same_logits_tied() {
    check_export_matches(true);
}

#[test]
fn export_gives_the_runtime_the_same_logits_untied() {
    check_export_matches(false);
}

#[test]
fn half_precision_export_matches_the_rounded_model() {
    let f = fixture();
    let vocab = f.tokenizer.get_vocab_size(true);
    // A copy of the trained tied model, rounded through f16 like `train-lm --dtype f16` does.
    let src = tempfile::tempdir().unwrap();
    save_hf_folder(trained(true), &f.tokenizer, src.path(), WeightDtype::F32).unwrap();
    let m = TrainLlama::load_hf_folder(src.path(), &Device::Cpu).unwrap();
    assert_eq!(m.shape().vocab_size, vocab);
    m.round_through(DType::F16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_hf_folder(&m, &f.tokenizer, dir.path(), WeightDtype::F16).unwrap();
    let f32_size = std::fs::metadata(src.path().join("model.safetensors"))
        .unwrap()
        .len();
    let f16_size = std::fs::metadata(dir.path().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        f16_size * 10 < f32_size * 6,
        "f16 file {f16_size} vs f32 {f32_size}"
    );
    let ids: Vec<u32> = f.val_tokens[..24].to_vec();
    let train_logits = m
        .forward(
            &Tensor::new(ids.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
        .squeeze(0)
        .unwrap();
    let (full, _) = runtime_logits(dir.path(), &ids);
    let scale = max_abs(&train_logits);
    assert!(max_abs_diff(&full, &train_logits) < 1e-4 * scale);
}

#[test]
fn pipeline_trains_exports_and_shares_the_tokenizer() {
    let corpus_dir = tempfile::tempdir().unwrap();
    for p in small_corpus() {
        std::fs::copy(&p, corpus_dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let arch = ArchSpec {
        hidden_size: 32,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        intermediate_size: 48,
        tie_word_embeddings: true,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
    };
    let job = TrainLmJob {
        corpus: vec![corpus_dir.path().to_path_buf()],
        val_every: 10,
        tokenizer: TokenizerSource::Train { vocab_size: 400 },
        arch: arch.clone(),
        settings: TrainSettings {
            eval_every: 10,
            ..tiny_settings(20)
        },
        export_dtype: WeightDtype::F16,
        out: out.path().join("draft"),
        command: "test".into(),
    };
    let mut events = 0;
    let draft = run_job(&job, |_| {
        events += 1;
        true
    })
    .unwrap();
    assert!(events >= 20 + 4, "events: {events}");
    assert!(draft.exported_val_loss < draft.report.initial_val_loss);
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "training.json",
    ] {
        assert!(job.out.join(file).is_file(), "{file} written");
    }
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.out.join("training.json")).unwrap())
            .unwrap();
    assert_eq!(log["command"], "test");
    assert_eq!(log["export_dtype"], "f16");
    assert_eq!(
        log["outcome"]["num_parameters"].as_u64(),
        Some(draft.num_parameters as u64)
    );
    let text = greedy_complete(&job.out, "The", 8).unwrap();
    assert!(!text.contains("<|endoftext|>"));

    // A second model reusing the first one's tokenizer: identical vocabulary.
    let verifier = TrainLmJob {
        tokenizer: TokenizerSource::Load(job.out.clone()),
        arch: ArchSpec {
            num_layers: 2,
            ..arch
        },
        settings: TrainSettings {
            eval_every: 0,
            ..tiny_settings(5)
        },
        out: out.path().join("verifier"),
        ..job.clone()
    };
    let v = run_job(&verifier, |_| true).unwrap();
    assert_eq!(v.vocab_size, draft.vocab_size);
    assert_eq!(
        std::fs::read(job.out.join("tokenizer.json")).unwrap(),
        std::fs::read(verifier.out.join("tokenizer.json")).unwrap()
    );

    // Cancelling stops training and exports nothing.
    let cancelled = TrainLmJob {
        out: out.path().join("cancelled"),
        ..job.clone()
    };
    let mut steps = 0;
    let err = run_job(&cancelled, |e| {
        if matches!(e, ianvs_algorithms::lm_train::Event::Step(_)) {
            steps += 1;
        }
        steps < 3
    })
    .unwrap_err();
    assert!(err.to_string().contains("cancelled"));
    assert!(!cancelled.out.join("model.safetensors").exists());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // A model whose vocabulary does not match the tokenizer cannot be exported.
    let m = TrainLlama::new(tiny_shape(600, true), 0, &Device::Cpu).unwrap();
    let e = save_hf_folder(&m, &f.tokenizer, dir.path(), WeightDtype::F32).unwrap_err();
    assert!(e.to_string().contains("512 ids"), "{e}");

    // A tokenizer.json without <|endoftext|> is refused by name.
    let plain = Tokenizer::new(tokenizers::models::bpe::BPE::default());
    let path = dir.path().join("plain.json");
    plain.save(&path, false).unwrap();
    let e = load_tokenizer(&path).unwrap_err();
    assert!(e.to_string().contains("<|endoftext|>"), "{e}");
    assert!(load_tokenizer(&dir.path().join("absent.json")).is_err());

    // A context longer than the training stream.
    let vocab = f.tokenizer.get_vocab_size(true);
    let m = TrainLlama::new(tiny_shape(vocab, true), 0, &Device::Cpu).unwrap();
    let e = train(
        &m,
        &f.train_tokens[..20],
        &f.val_tokens,
        &tiny_settings(1),
        |_| true,
    )
    .unwrap_err();
    assert!(e.to_string().contains("--context"), "{e}");
    // A context longer than the model's positions.
    let too_long = TrainSettings {
        context: 64,
        ..tiny_settings(1)
    };
    let e = train(&m, &f.train_tokens, &f.val_tokens, &too_long, |_| true).unwrap_err();
    assert!(e.to_string().contains("max_position_embeddings"), "{e}");

    // A truncated weights file and a missing config are reported by file.
    let good = tempfile::tempdir().unwrap();
    save_hf_folder(trained(true), &f.tokenizer, good.path(), WeightDtype::F32).unwrap();
    let weights = good.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = TrainLlama::load_hf_folder(good.path(), &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    std::fs::remove_file(good.path().join("config.json")).unwrap();
    let e = TrainLlama::load_hf_folder(good.path(), &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");

    // Evaluation over a validation stream of one token is an error, not NaN.
    let e = evaluate(&m, &eval_windows(&[0], 8), 4).unwrap_err();
    assert!(e.to_string().contains("fewer than two tokens"), "{e}");
}

/// The speculative-decoding prompts are held out: each starts a validation document of the
/// committed corpus and occurs in no training document.
#[test]
fn scenario_prompts_come_from_the_validation_split() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = load_corpus(
        &[root.join("datasets/lm/corpus/fortunes")],
        ianvs_algorithms::lm_train::corpus::DEFAULT_VAL_EVERY,
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("testenvs/speculative-decoding/prompts.jsonl"))
        .expect("prompts.jsonl");
    let prompts: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["prompt"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(prompts.len() >= 12, "{} prompts", prompts.len());
    for p in &prompts {
        assert!(
            corpus.validation.iter().any(|d| d.starts_with(p.as_str())),
            "{p:?} does not start a validation document"
        );
        assert!(
            !corpus.train.iter().any(|d| d.contains(p.as_str())),
            "{p:?} occurs in the training split"
        );
    }
}

/// Mean next-token loss (nats) of a runtime model over `windows` of validation tokens.
fn runtime_loss(model: &LlmModel, windows: &[&[u32]]) -> f64 {
    let (mut total, mut count) = (0f64, 0usize);
    for w in windows {
        let mut cache = model.new_cache();
        let logits = model.forward(&w[..w.len() - 1], &mut cache).unwrap();
        let rows = logits.to_vec2::<f32>().unwrap();
        for (row, &target) in rows.iter().zip(&w[1..]) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            total += (lse - row[target as usize]) as f64;
            count += 1;
        }
    }
    total / count as f64
}

/// The committed pair (`datasets/lm/`): both load in the inference runtime with one shared
/// tokenizer, and the verifier predicts held-out text better than the draft.
#[test]
fn committed_pair_shares_a_vocabulary_and_the_verifier_is_better() {
    let lm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/lm");
    let draft = LlmModel::load(&lm.join("draft"), &Device::Cpu).unwrap();
    let verifier = LlmModel::load(&lm.join("verifier"), &Device::Cpu).unwrap();
    assert_eq!(draft.config().vocab_size, verifier.config().vocab_size);
    assert!(
        verifier.num_parameters() >= 5 * draft.num_parameters(),
        "verifier {} vs draft {} parameters",
        verifier.num_parameters(),
        draft.num_parameters()
    );
    for file in ["draft/tokenizer.json", "verifier/tokenizer.json"] {
        assert_eq!(
            std::fs::read(lm.join(file)).unwrap(),
            std::fs::read(lm.join("tokenizer.json")).unwrap(),
            "{file} is the shared tokenizer"
        );
    }
    let tokenizer = load_tokenizer(&lm.join("tokenizer.json")).unwrap();
    let corpus = load_corpus(
        &[lm.join("corpus/fortunes")],
        ianvs_algorithms::lm_train::corpus::DEFAULT_VAL_EVERY,
    )
    .unwrap();
    let val = encode_documents(&tokenizer, &corpus.validation).unwrap();
    // Four windows of 128 tokens spread over the validation stream (the full stream takes the
    // release build; `datasets/PROVENANCE.md` has those numbers).
    let windows: Vec<&[u32]> = (0..4).map(|i| &val[i * val.len() / 4..][..129]).collect();
    let (d, v) = (
        runtime_loss(&draft, &windows),
        runtime_loss(&verifier, &windows),
    );
    assert!(
        d < 7.0 && v < 7.0,
        "both are trained: draft {d}, verifier {v}"
    );
    assert!(v < d, "verifier loss {v} should be below the draft's {d}");
}
