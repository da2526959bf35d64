//! Tokenizer tests: a small byte-level BPE `tokenizer.json`, and tokenizers rebuilt from GGUF
//! metadata (`gpt2` byte-level BPE with each pre-tokenizer, `llama` SentencePiece with byte
//! fallback). All must round-trip arbitrary UTF-8.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use ianvs_algorithms::llm::{LlmError, LlmTokenizer, Result};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

const TEXTS: [&str; 7] = [
    "the cat sat on the mat",
    "Café naïve façade, déjà vu — Ünïcödé",
    "emoji 🦀🚀👩‍👩‍👧 and CJK 漢字かなカナ 한국어",
    "   leading and trailing   ",
    "tabs\t\tand\nnew\r\nlines\n\n",
    "digits 1234567890 and 3.14159",
    "",
];

fn io(e: std::io::Error) -> LlmError {
    LlmError::Tokenizer(e.to_string())
}

/// The 256 byte-level symbols, sorted so ids are deterministic.
fn byte_alphabet() -> Vec<String> {
    let mut chars: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    chars.sort_unstable();
    chars.into_iter().map(String::from).collect()
}

const BPE_MERGES: [(&str, &str); 5] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("a", "t"),
    ("c", "at"),
];

/// Byte-level vocabulary: specials, the alphabet, then the merge results.
fn bpe_tokens() -> Vec<String> {
    let mut tokens = vec!["<|endoftext|>".to_string(), "<|im_start|>".to_string()];
    tokens.extend(byte_alphabet());
    tokens.extend(BPE_MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    tokens
}

/// The pieces the pre-tokenizer cuts `text` into (in byte-level symbols).
fn pre_tokenize(tok: &LlmTokenizer, text: &str) -> Result<Vec<String>> {
    let pre = tok
        .inner()
        .get_pre_tokenizer()
        .ok_or_else(|| LlmError::Tokenizer("no pre-tokenizer".into()))?;
    let mut s = PreTokenizedString::from(text);
    pre.pre_tokenize(&mut s)
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    Ok(s.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(piece, _, _)| piece.to_string())
        .collect())
}

fn round_trips(tok: &LlmTokenizer) -> Result<()> {
    for text in TEXTS {
        let ids = tok.encode(text, false)?;
        assert_eq!(tok.decode(&ids)?, text, "ids {ids:?}");
    }
    Ok(())
}

#[test]
fn tokenizer_json_round_trips_and_uses_merges() -> Result<()> {
    let dir = tempfile::tempdir().map_err(io)?;
    let tokens = bpe_tokens();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let merges: Vec<String> = BPE_MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<|im_start|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": merges}
    });
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).map_err(io)?;
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|endoftext|>"}}"#,
    )
    .map_err(io)?;

    // Loading the folder or the file gives the same tokenizer.
    for tok in [LlmTokenizer::load(dir.path())?, LlmTokenizer::load(&path)?] {
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(0)));
        assert_eq!(tok.vocab_size(), tokens.len());
        round_trips(&tok)?;
        let the = tok.token_to_id("Ġthe").expect("merged token");
        let cat = tok.token_to_id("cat").expect("merged token");
        assert_eq!(
            tok.encode(" the cat", false)?,
            vec![the, tok.token_to_id("Ġ").unwrap_or(0), cat]
        );
        // The post-processor adds BOS when asked for special tokens.
        assert_eq!(tok.encode(" the", true)?, vec![1, the]);
        assert_eq!(tok.decode_skip_special(&[1, the])?, " the");
    }
    Ok(())
}

/// Writes a GGUF file holding only tokenizer metadata (plus one dummy tensor).
fn write_gguf(path: &Path, md: Vec<(&str, Value)>) -> Result<()> {
    let dummy = QTensor::quantize(
        &candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu)?,
        candle_core::quantized::GgmlDType::F32,
    )?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).map_err(io)?;
    gguf_file::write(&mut f, &md_refs, &[("dummy", &dummy)])?;
    Ok(())
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

fn gpt2_metadata(pre: &str) -> Vec<(&'static str, Value)> {
    let tokens = bpe_tokens();
    let mut types = vec![Value::I32(1); tokens.len()];
    types[0] = Value::I32(3);
    types[1] = Value::I32(3);
    let merges: Vec<String> = BPE_MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
    ]
}

#[test]
fn gguf_byte_level_bpe_round_trips_for_every_pre_tokenizer() -> Result<()> {
    let dir = tempfile::tempdir().map_err(io)?;
    for pre in ["smollm", "llama-bpe", "qwen2", "gpt2", "something-new"] {
        let path = dir.path().join(format!("{pre}.gguf"));
        write_gguf(&path, gpt2_metadata(pre))?;
        let tok = LlmTokenizer::load(&path)?;
        assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(0)), "{pre}");
        round_trips(&tok)?;
        // Control tokens match whole; the merges apply.
        let the = tok.token_to_id("Ġthe").expect("merged token");
        assert_eq!(
            tok.encode("<|im_start|> the", false)?,
            vec![1, the],
            "{pre}"
        );
        // gpt2-style GGUFs do not add BOS unless the metadata says so.
        assert_eq!(tok.encode(" the", true)?, vec![the], "{pre}");
        // Digit grouping is what tells the pre-tokenizers apart.
        let expected: &[&str] = match pre {
            "smollm" | "qwen2" => &["1", "2", "3", "4", "5"],
            "llama-bpe" => &["123", "45"],
            _ => &["12345"],
        };
        assert_eq!(pre_tokenize(&tok, "12345")?, expected, "{pre}");
    }

    // add_bos_token = true prepends BOS.
    let path = dir.path().join("bos.gguf");
    let mut md = gpt2_metadata("gpt2");
    md.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
    write_gguf(&path, md)?;
    let tok = LlmTokenizer::from_gguf(&path)?;
    let ids = tok.encode("hi", true)?;
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode_skip_special(&ids)?, "hi");
    Ok(())
}

/// A SentencePiece-style vocabulary: specials, 256 byte tokens, then pieces with scores.
fn spm_metadata() -> Vec<(&'static str, Value)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    // Higher score = merged earlier. Single characters first, then longer pieces.
    let pieces = [
        ("▁", -1.0),
        ("t", -2.0),
        ("h", -2.0),
        ("e", -2.0),
        ("w", -2.0),
        ("o", -2.0),
        ("r", -2.0),
        ("l", -2.0),
        ("d", -2.0),
        ("he", -3.0),
        ("▁t", -4.0),
        ("▁the", -5.0),
        ("or", -6.0),
        ("ld", -7.0),
        ("▁w", -8.0),
        ("▁wor", -9.0),
        ("▁world", -10.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(s);
    }
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ]
}

#[test]
fn gguf_sentencepiece_round_trips_with_byte_fallback() -> Result<()> {
    let dir = tempfile::tempdir().map_err(io)?;
    let path = dir.path().join("spm.gguf");
    write_gguf(&path, spm_metadata())?;
    let tok = LlmTokenizer::from_gguf(&path)?;
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    let id = |t: &str| tok.token_to_id(t).expect("token in vocab");
    // The space prefix is added and pieces merge by score.
    assert_eq!(
        tok.encode("the world", false)?,
        vec![id("▁the"), id("▁world")]
    );
    // Llama-style GGUFs add BOS by default.
    assert_eq!(tok.encode("the", true)?, vec![1, id("▁the")]);
    // Characters outside the vocabulary fall back to bytes, and still decode exactly.
    let ids = tok.encode("é🦀", false)?;
    assert!(ids.contains(&id("<0xC3>")), "{ids:?}");
    round_trips(&tok)?;
    assert_eq!(tok.decode_skip_special(&tok.encode("the", true)?)?, "the");
    Ok(())
}

#[test]
fn tokenizer_errors_are_clear() -> Result<()> {
    let dir = tempfile::tempdir().map_err(io)?;
    // Unsupported tokenizer model.
    let path = dir.path().join("bert.gguf");
    let mut md = gpt2_metadata("gpt2");
    md[1] = ("tokenizer.ggml.model", Value::String("bert".into()));
    write_gguf(&path, md)?;
    let msg = LlmTokenizer::from_gguf(&path).unwrap_err().to_string();
    assert!(
        msg.contains("`bert`") && msg.contains("gpt2, llama"),
        "{msg}"
    );

    // Missing token list.
    let path = dir.path().join("notokens.gguf");
    let md: Vec<_> = gpt2_metadata("gpt2")
        .into_iter()
        .filter(|(k, _)| *k != "tokenizer.ggml.tokens")
        .collect();
    write_gguf(&path, md)?;
    let msg = LlmTokenizer::from_gguf(&path).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");

    // Mismatched token types.
    let path = dir.path().join("types.gguf");
    let mut md = gpt2_metadata("gpt2");
    md[4] = (
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(1)]),
    );
    write_gguf(&path, md)?;
    assert!(LlmTokenizer::from_gguf(&path).is_err());

    // Missing files, broken JSON.
    assert!(matches!(
        LlmTokenizer::load(&dir.path().join("missing.json")),
        Err(LlmError::MissingFile { .. })
    ));
    assert!(matches!(
        LlmTokenizer::load(dir.path()),
        Err(LlmError::MissingFile {
            what: "tokenizer.json",
            ..
        })
    ));
    let bad = dir.path().join("tokenizer.json");
    std::fs::write(&bad, "{not json").map_err(io)?;
    assert!(matches!(
        LlmTokenizer::load(&bad),
        Err(LlmError::InvalidFile { .. })
    ));
    Ok(())
}

/// End of generation as llama.cpp defines it: EOS, the declared EOT/EOM ids and every
/// end-of-turn marker the vocabulary holds (`<|endoftext|>`, `<|im_end|>`, `<|eot_id|>`,
/// `<end_of_turn>`), but not other specials such as `<|fim_prefix|>`.
#[test]
fn end_of_generation_ids_follow_metadata_and_vocabulary() -> Result<()> {
    let dir = tempfile::tempdir().map_err(io)?;
    let mut md = gpt2_metadata("qwen2");
    let mut tokens = bpe_tokens();
    let base = tokens.len() as u32;
    let extra = [
        "<|im_end|>",
        "<|fim_prefix|>",
        "<|eot_id|>",
        "<end_of_turn>",
        "<|custom_eot|>",
        "<|custom_eom|>",
    ];
    tokens.extend(extra.iter().map(|s| s.to_string()));
    let mut types = vec![Value::I32(1); tokens.len()];
    for t in types.iter_mut().skip(base as usize) {
        *t = Value::I32(3);
    }
    for (k, v) in md.iter_mut() {
        match *k {
            "tokenizer.ggml.tokens" => *v = strings(&tokens),
            "tokenizer.ggml.token_type" => *v = Value::Array(types.clone()),
            // Qwen2 base models declare `<|im_end|>` as EOS and end documents with
            // `<|endoftext|>` (id 0 here).
            "tokenizer.ggml.eos_token_id" => *v = Value::U32(base),
            _ => {}
        }
    }
    md.push(("tokenizer.ggml.eot_token_id", Value::U32(base + 4)));
    md.push(("tokenizer.ggml.eom_token_id", Value::U32(base + 5)));
    let path = dir.path().join("eog.gguf");
    write_gguf(&path, md)?;
    let tok = LlmTokenizer::load(&path)?;
    assert_eq!(tok.eos_id(), Some(base));
    let mut eog = tok.eog_ids().to_vec();
    assert_eq!(eog[0], base, "EOS comes first");
    eog.sort_unstable();
    assert_eq!(eog, vec![0, base, base + 2, base + 3, base + 4, base + 5]);
    assert!(
        !tok.is_eog(base + 1),
        "<|fim_prefix|> does not end generation"
    );
    assert!(!tok.is_eog(1), "<|im_start|> does not end generation");

    // tokenizer.json: the same markers found by text; EOS from tokenizer_config.json.
    let json_dir = dir.path().join("json");
    std::fs::create_dir_all(&json_dir).map_err(io)?;
    tok_json_with(&json_dir, &tokens)?;
    let tok = LlmTokenizer::load(&json_dir)?;
    assert_eq!(tok.eos_id(), Some(base));
    let mut eog = tok.eog_ids().to_vec();
    eog.sort_unstable();
    assert_eq!(eog, vec![0, base, base + 2, base + 3]);
    Ok(())
}

/// A word-level `tokenizer.json` over `tokens` with `<|im_end|>` as EOS in
/// `tokenizer_config.json`.
fn tok_json_with(dir: &Path, tokens: &[String]) -> Result<()> {
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).map_err(io)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<|im_end|>"}"#,
    )
    .map_err(io)?;
    Ok(())
}
