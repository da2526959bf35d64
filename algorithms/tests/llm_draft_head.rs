//! The drafter's trimmed output head (`LoadOptions::draft_vocab`, FR-Spec): on real models
//! (the project's trained draft, committed; SmolLM2 when fetched) the logits it returns for
//! the kept ids are the full head's to the bit, for every weight type the drafter can load
//! with (the file's own, and requantized to Q8_0 / Q4_0 on the own kernels), in prefill
//! chunks and in one-token decode; bad settings are clear errors.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use ianvs_algorithms::llm::{DraftVocab, LlmModel, LlmTokenizer, LoadOptions, Result};

fn trained_draft() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/lm/draft")
}

fn smollm2() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/models/smollm2-135m-instruct-q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipping SmolLM2: {} not found (scripts/fetch-smollm2.sh)",
            p.display()
        );
        None
    }
}

fn load(path: &Path, requantize: Option<GgmlDType>, lowest: usize) -> Result<LlmModel> {
    let tok = LlmTokenizer::load(path)?;
    let mut also = tok.special_ids();
    also.extend_from_slice(tok.eog_ids());
    LlmModel::load_with(
        path,
        &Device::Cpu,
        &LoadOptions {
            requantize,
            draft_vocab: Some(DraftVocab { lowest, also }),
            ..Default::default()
        },
    )
}

/// Feeds `tokens` as a prefill chunk of `prefill` tokens then one token at a time through
/// both heads (a cache each) and compares every kept column bit for bit.
fn assert_kept_logits_equal(model: &LlmModel, tokens: &[u32], prefill: usize) -> Result<()> {
    let ids = model
        .draft_ids()
        .expect("a trimmed head was built")
        .to_vec();
    let (mut full_cache, mut draft_cache) = (model.new_cache(), model.new_cache());
    let mut feeds = vec![&tokens[..prefill]];
    feeds.extend(tokens[prefill..].chunks(1));
    for feed in feeds {
        let full = model.forward(feed, &mut full_cache)?.to_vec2::<f32>()?;
        let draft = model
            .forward_draft(feed, &mut draft_cache)?
            .to_vec2::<f32>()?;
        assert_eq!(full.len(), draft.len());
        for (f, d) in full.iter().zip(&draft) {
            assert_eq!(d.len(), ids.len());
            for (j, &id) in ids.iter().enumerate() {
                assert_eq!(
                    d[j].to_bits(),
                    f[id as usize].to_bits(),
                    "token {id}: trimmed {} vs full {}",
                    d[j],
                    f[id as usize]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn trimmed_head_logits_equal_the_full_heads_on_the_trained_draft() -> Result<()> {
    let path = trained_draft();
    let tokens = [0u32, 17, 1000, 42, 3999, 7, 7, 250, 64, 3];
    for requantize in [None, Some(GgmlDType::Q8_0), Some(GgmlDType::Q4_0)] {
        let model = load(&path, requantize, 1024)?;
        let ids = model.draft_ids().unwrap();
        // The 1024 lowest ids plus the special ones (EOS is id 0 here, already among them).
        assert!(ids.len() >= 1024 && ids.len() < 4096, "{}", ids.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
        assert_eq!(&ids[..1024], &(0..1024).collect::<Vec<u32>>()[..]);
        assert!(model.draft_weight_bytes().unwrap() < model.weight_bytes());
        assert_kept_logits_equal(&model, &tokens, 6).map_err(|e| {
            ianvs_algorithms::llm::LlmError::Unsupported(format!("{requantize:?}: {e}"))
        })?;
    }
    Ok(())
}

#[test]
fn trimmed_head_keeps_smollm2_special_tokens_and_its_logits() -> Result<()> {
    let Some(path) = smollm2() else {
        return Ok(());
    };
    let tok = LlmTokenizer::load(&path)?;
    let model = load(&path, None, 4096)?;
    let ids = model.draft_ids().unwrap();
    for id in tok.special_ids().iter().chain(tok.eog_ids()) {
        assert!(ids.binary_search(id).is_ok(), "special id {id} kept");
    }
    let prompt = tok.encode("The capital of France is", false)?;
    let mut tokens = prompt.clone();
    tokens.extend([12u32, 4095, 30000, 5]);
    assert_kept_logits_equal(&model, &tokens, prompt.len())
}

#[test]
fn a_draft_vocab_covering_the_vocabulary_builds_no_trimmed_head() -> Result<()> {
    let model = load(&trained_draft(), None, 4096)?;
    assert!(model.draft_ids().is_none());
    assert!(model.draft_weight_bytes().is_none());
    let mut cache = model.new_cache();
    let err = model.forward_draft(&[1, 2], &mut cache).unwrap_err();
    assert!(err.to_string().contains("no trimmed draft head"), "{err}");
    assert_eq!(cache.len(), 0, "nothing was fed");
    Ok(())
}

#[test]
fn an_empty_draft_vocab_is_an_error() {
    let err = load(&trained_draft(), None, 0).unwrap_err();
    assert!(err.to_string().contains("draft_vocab >= 1"), "{err}");
}
