//! Tokenizer wrapper: from `tokenizer.json`, or rebuilt from GGUF `tokenizer.ggml.*` metadata.
//!
//! GGUF files carry their tokenizer as raw tables (tokens, merges or scores, token types) plus
//! the name of llama.cpp's pre-tokenizer (`tokenizer.ggml.pre`). This module rebuilds an
//! equivalent `tokenizers::Tokenizer`:
//! - `gpt2` models: byte-level BPE from `tokens` + `merges`, with the split regex of the named
//!   pre-tokenizer (`smollm`, `llama-bpe`/`llama3`, `qwen2`, `gpt2`, others fall back to GPT-2);
//! - `llama` models: SentencePiece-style BPE with byte fallback, merges derived from the token
//!   scores the way transformers converts `LlamaTokenizer` to `LlamaTokenizerFast`.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::error::{LlmError, Result};
use super::gguf::{self, Metadata};

/// GPT-4-style split used by Llama 3 (`llama-bpe`): digits in groups of up to three.
const REGEX_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: like Llama 3 but one digit per piece.
const REGEX_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp token types (`llama_token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;
const TYPE_BYTE: i64 = 6;

fn tok_err(e: impl std::fmt::Display) -> LlmError {
    LlmError::Tokenizer(e.to_string())
}

/// A text tokenizer with known BOS/EOS ids.
#[derive(Clone)]
pub struct LlmTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// Every end-of-generation id (see [`eog_ids`]), EOS first.
    eog: Vec<u32>,
    /// GGUF tokenizers have no post-processor: BOS/EOS are added here when asked.
    add_bos: bool,
    add_eos: bool,
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl LlmTokenizer {
    /// Loads from a GGUF file (metadata), a `tokenizer.json` file, or a folder that holds
    /// `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::from_tokenizer_json(&path.join("tokenizer.json"));
        }
        if !path.exists() {
            return Err(LlmError::MissingFile {
                what: "tokenizer",
                path: path.to_path_buf(),
                hint: "; pass a GGUF file, a tokenizer.json or a folder holding one".into(),
            });
        }
        if gguf::is_gguf(path)? {
            Self::from_gguf(path)
        } else {
            Self::from_tokenizer_json(path)
        }
    }

    /// Loads `tokenizer.json`. BOS/EOS come from `tokenizer_config.json` next to it (token
    /// strings), else from `config.json` (ids), else stay unknown.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(LlmError::MissingFile {
                what: "tokenizer.json",
                path: path.to_path_buf(),
                hint: String::new(),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| LlmError::InvalidFile {
            what: "tokenizer.json",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let (bos, eos) = special_ids_from_configs(dir, &inner)?;
        let eog = eog_ids(eos, &[], |t| inner.token_to_id(t));
        Ok(Self {
            inner,
            bos,
            eos,
            eog,
            add_bos: false,
            add_eos: false,
        })
    }

    /// Rebuilds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let (content, _reader) = gguf::read_content(path)?;
        Self::from_gguf_metadata(&Metadata {
            content: &content,
            path,
        })
    }

    pub(crate) fn from_gguf_metadata(md: &Metadata<'_>) -> Result<Self> {
        let model = md.str("tokenizer.ggml.model")?;
        let tokens = md.strings("tokenizer.ggml.tokens")?;
        let types = md.opt_i64s("tokenizer.ggml.token_type")?;
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(tok_err(format!(
                    "{}: tokenizer.ggml.token_type has {} entries for {} tokens",
                    md.path.display(),
                    t.len(),
                    tokens.len()
                )));
            }
        }
        let bos = md.opt_u32("tokenizer.ggml.bos_token_id")?;
        let eos = md.opt_u32("tokenizer.ggml.eos_token_id")?;
        let unk = md.opt_u32("tokenizer.ggml.unknown_token_id")?;
        let (mut inner, default_add_bos) = match model {
            "gpt2" => (build_byte_level_bpe(md, &tokens)?, false),
            "llama" => (
                build_sentencepiece_bpe(md, &tokens, types.as_deref(), unk)?,
                true,
            ),
            other => {
                return Err(tok_err(format!(
                    "{}: tokenizer model `{other}` is not supported (supported: gpt2, llama)",
                    md.path.display()
                )))
            }
        };
        // Control tokens (chat markers, BOS/EOS) and user-defined tokens must match as whole
        // strings in the input, not be split by the BPE.
        if let Some(types) = &types {
            let mut special = Vec::new();
            let mut user = Vec::new();
            for (tok, &ty) in tokens.iter().zip(types) {
                match ty {
                    TYPE_CONTROL => special.push(AddedToken::from(tok.clone(), true)),
                    TYPE_USER_DEFINED => user.push(AddedToken::from(tok.clone(), false)),
                    _ => {}
                }
            }
            inner.add_special_tokens(special).map_err(tok_err)?;
            inner.add_tokens(user).map_err(tok_err)?;
        }
        for id in [bos, eos].into_iter().flatten() {
            let tok = tokens.get(id as usize).ok_or_else(|| {
                tok_err(format!(
                    "{}: special token id {id} is outside the {} tokens",
                    md.path.display(),
                    tokens.len()
                ))
            })?;
            inner
                .add_special_tokens([AddedToken::from(tok.clone(), true)])
                .map_err(tok_err)?;
        }
        let mut declared = Vec::new();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            declared.extend(md.opt_u32(key)?);
        }
        let by_text: HashMap<&str, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let eog = eog_ids(eos, &declared, |t| by_text.get(t).copied());
        Ok(Self {
            inner,
            bos,
            eos,
            eog,
            add_bos: md
                .opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(default_add_bos),
            add_eos: md
                .opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
        })
    }

    /// Overrides the BOS/EOS ids (e.g. when a `tokenizer.json` comes without configs).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos = bos;
        if let Some(old) = self.eos {
            self.eog.retain(|&id| id != old);
        }
        self.eos = eos;
        if let Some(e) = eos {
            self.eog.retain(|&id| id != e);
            self.eog.insert(0, e);
        }
        self
    }

    /// Token ids of `text`. With `add_special`, BOS/EOS are added as the model expects
    /// (the `tokenizer.json` post-processor, or GGUF `add_bos_token`/`add_eos_token`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens included (so `decode(encode(s, false)) == s`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Text of `ids` without special tokens (BOS, EOS, chat markers).
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Every token that ends generation, as llama.cpp decides it: EOS, the declared EOT/EOM
    /// ids, and the vocabulary's end-of-turn markers (`<|endoftext|>`, `<|im_end|>`,
    /// `<|eot_id|>`, `<end_of_turn>`, ...). EOS comes first.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation (see [`LlmTokenizer::eog_ids`]).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Ids of the added tokens marked special (chat markers, EOS/BOS, fill-in-the-middle
    /// markers, ...), ascending.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Number of ids the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// Token → id, keeping the first id of duplicated tokens.
fn vocab_of(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::default();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(i as u32);
    }
    vocab
}

fn split(regex: &str) -> Result<PreTokenizerWrapper> {
    Ok(Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?
    .into())
}

/// Byte-level BPE (GPT-2 family) from `tokenizer.ggml.tokens` + `tokenizer.ggml.merges`.
fn build_byte_level_bpe(md: &Metadata<'_>, tokens: &[String]) -> Result<Tokenizer> {
    let merges = md
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tok_err(format!("invalid merge `{m}` (expected `left right`)")))
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = md.opt_str("tokenizer.ggml.pre")?.unwrap_or("gpt2");
    // llama.cpp sets ignore_merges for Llama 3: a word already in the vocabulary is one token.
    let llama3 = matches!(pre, "llama-bpe" | "llama3" | "smaug-bpe");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .ignore_merges(llama3)
        .build()
        .map_err(tok_err)?;
    let mut tok = Tokenizer::new(bpe);
    // (normalizer, pre-tokenizer) per llama.cpp pre-tokenizer name, matching the HF
    // tokenizer.json of the same models.
    let byte_level_regex = ByteLevel::new(false, true, true);
    let byte_level_plain = ByteLevel::new(false, true, false);
    let (normalizer, pre_tokenizer): (Option<NormalizerWrapper>, PreTokenizerWrapper) = match pre {
        "llama-bpe" | "llama3" | "smaug-bpe" => (
            None,
            PreSequence::new(vec![split(REGEX_LLAMA3)?, byte_level_plain.into()]).into(),
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            Some(NFC.into()),
            PreSequence::new(vec![split(REGEX_QWEN2)?, byte_level_plain.into()]).into(),
        ),
        // SmolLM: every digit alone, then the GPT-2 split.
        "smollm" => (
            None,
            PreSequence::new(vec![Digits::new(true).into(), byte_level_regex.into()]).into(),
        ),
        _ => (None, byte_level_regex.into()),
    };
    if let Some(n) = normalizer {
        tok.with_normalizer(Some(n)).map_err(tok_err)?;
    }
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevel::default()));
    Ok(tok)
}

/// SentencePiece-style BPE with byte fallback (Llama 1/2, TinyLlama, Mistral) from tokens and
/// scores. Merges are derived like transformers' `SentencePieceExtractor`: every split of a
/// token into two vocabulary pieces is a merge, ranked by the token's score.
fn build_sentencepiece_bpe(
    md: &Metadata<'_>,
    tokens: &[String],
    types: Option<&[i64]>,
    unk: Option<u32>,
) -> Result<Tokenizer> {
    let scores = md.opt_f32s("tokenizer.ggml.scores")?.ok_or_else(|| {
        tok_err(format!(
            "{}: tokenizer.ggml.scores is missing",
            md.path.display()
        ))
    })?;
    if scores.len() != tokens.len() {
        return Err(tok_err(format!(
            "{}: tokenizer.ggml.scores has {} entries for {} tokens",
            md.path.display(),
            scores.len(),
            tokens.len()
        )));
    }
    let vocab = vocab_of(tokens);
    let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let ty = types.map_or(1, |t| t[id]);
        if matches!(ty, TYPE_CONTROL | TYPE_UNUSED | TYPE_BYTE) {
            continue;
        }
        let mut local = Vec::new();
        for (at, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((scores[id], li, ri, l.to_string(), r.to_string()));
            }
        }
        local.sort_by_key(|m| (m.1, m.2));
        merges.extend(local);
    }
    // Stable: equal scores keep vocabulary order, as Python's sorted() does.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    let merges = merges.into_iter().map(|m| (m.3, m.4)).collect();

    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk_tok) = tokens.get(unk.unwrap_or(0) as usize) {
        builder = builder.unk_token(unk_tok.clone());
    }
    let bpe = builder.build().map_err(tok_err)?;
    let mut tok = Tokenizer::new(bpe);
    let add_space_prefix = md
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let replace = Replace::new(" ", "▁").map_err(tok_err)?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![Prepend::new("▁".into()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    tok.with_normalizer(Some(normalizer)).map_err(tok_err)?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(tok_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// BOS/EOS ids for a `tokenizer.json`: token strings from `tokenizer_config.json`, else ids
/// from `config.json`.
fn special_ids_from_configs(dir: &Path, tok: &Tokenizer) -> Result<(Option<u32>, Option<u32>)> {
    let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| LlmError::io(&p, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LlmError::InvalidFile {
                what: "JSON file",
                path: p.clone(),
                reason: e.to_string(),
            })
    };
    let mut bos = None;
    let mut eos = None;
    if let Some(cfg) = read_json("tokenizer_config.json")? {
        // `bos_token` is either a string or an AddedToken object with `content`.
        let token = |key: &str| {
            cfg.get(key).and_then(|v| {
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
                    .and_then(|s| tok.token_to_id(s))
            })
        };
        bos = token("bos_token");
        eos = token("eos_token");
    }
    if bos.is_none() || eos.is_none() {
        if let Some(cfg) = read_json("config.json")? {
            let id = |key: &str| {
                cfg.get(key).and_then(|v| {
                    v.as_u64()
                        .or_else(|| {
                            v.as_array()
                                .and_then(|a| a.first())
                                .and_then(|x| x.as_u64())
                        })
                        .and_then(|x| u32::try_from(x).ok())
                })
            };
            bos = bos.or_else(|| id("bos_token_id"));
            eos = eos.or_else(|| id("eos_token_id"));
        }
    }
    Ok((bos, eos))
}

/// Token texts llama.cpp treats as end of generation wherever they occur in a vocabulary
/// (`llama_vocab::impl::load`, the `special_eog_ids` scan), whatever the metadata declares.
/// Qwen2 base models, for one, declare `<|im_end|>` as EOS but end documents with
/// `<|endoftext|>`.
pub const EOG_TOKEN_TEXTS: [&str; 12] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// EOS, then the declared ids, then every [`EOG_TOKEN_TEXTS`] entry the vocabulary holds,
/// without duplicates.
fn eog_ids(eos: Option<u32>, declared: &[u32], lookup: impl Fn(&str) -> Option<u32>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let found = EOG_TOKEN_TEXTS.iter().filter_map(|t| lookup(t));
    for id in eos.into_iter().chain(declared.iter().copied()).chain(found) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}
