//! LLM runtime tests on tiny random Llama and Qwen2 models written to a temp dir as
//! safetensors + config.json and as GGUF (f32, Q8_0, Q4_0).
//!
//! What they pin down: a whole-sequence forward equals token-by-token decode (bit for bit on
//! CPU), a truncated cache continues like a fresh one, the GGUF and safetensors paths compute
//! the same function (which checks llama.cpp's q/k permutation + interleaved RoPE against HF's
//! NeoX RoPE), Qwen2 biases are applied, and bad files give clear errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use ianvs_algorithms::llm::{AttentionBackend, LlmError, LlmModel, LoadOptions, Result, RopeStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const VOCAB: usize = 300;
const HIDDEN: usize = 64;
const INTER: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const MAX_POS: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Llama,
    Qwen2,
}

/// Random weights under their Hugging Face names.
struct Tiny {
    family: Family,
    tied: bool,
    tensors: Vec<(String, Tensor)>,
}

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

impl Tiny {
    fn new(family: Family, tied: bool, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut t = Vec::new();
        let q_dim = HEADS * HEAD_DIM;
        let kv_dim = KV_HEADS * HEAD_DIM;
        t.push((
            "model.embed_tokens.weight".to_string(),
            uniform(&mut rng, &[VOCAB, HIDDEN], -0.5, 0.5)?,
        ));
        for i in 0..LAYERS {
            let p = format!("model.layers.{i}");
            let mut add = |name: &str, shape: &[usize], lo: f32, hi: f32| -> Result<()> {
                t.push((format!("{p}.{name}"), uniform(&mut rng, shape, lo, hi)?));
                Ok(())
            };
            add("input_layernorm.weight", &[HIDDEN], 0.8, 1.2)?;
            add("post_attention_layernorm.weight", &[HIDDEN], 0.8, 1.2)?;
            add("self_attn.q_proj.weight", &[q_dim, HIDDEN], -0.25, 0.25)?;
            add("self_attn.k_proj.weight", &[kv_dim, HIDDEN], -0.25, 0.25)?;
            add("self_attn.v_proj.weight", &[kv_dim, HIDDEN], -0.25, 0.25)?;
            add("self_attn.o_proj.weight", &[HIDDEN, q_dim], -0.2, 0.2)?;
            add("mlp.gate_proj.weight", &[INTER, HIDDEN], -0.2, 0.2)?;
            add("mlp.up_proj.weight", &[INTER, HIDDEN], -0.2, 0.2)?;
            add("mlp.down_proj.weight", &[HIDDEN, INTER], -0.15, 0.15)?;
            if family == Family::Qwen2 {
                add("self_attn.q_proj.bias", &[q_dim], -0.3, 0.3)?;
                add("self_attn.k_proj.bias", &[kv_dim], -0.3, 0.3)?;
                add("self_attn.v_proj.bias", &[kv_dim], -0.3, 0.3)?;
            }
        }
        t.push((
            "model.norm.weight".to_string(),
            uniform(&mut rng, &[HIDDEN], 0.8, 1.2)?,
        ));
        if !tied {
            t.push((
                "lm_head.weight".to_string(),
                uniform(&mut rng, &[VOCAB, HIDDEN], -0.3, 0.3)?,
            ));
        }
        Ok(Self {
            family,
            tied,
            tensors: t,
        })
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": [if self.family == Family::Llama { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
            "model_type": if self.family == Family::Llama { "llama" } else { "qwen2" },
            "vocab_size": VOCAB,
            "hidden_size": HIDDEN,
            "intermediate_size": INTER,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "max_position_embeddings": MAX_POS,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": self.tied,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32",
            "use_cache": true
        })
    }

    /// Writes `config.json` + `model.safetensors` (weights cast to `dtype`).
    fn write_hf(&self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let map = self
            .tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        candle_core::safetensors::save(&map, dir.join("model.safetensors"))?;
        std::fs::write(dir.join("config.json"), self.config_json().to_string())
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(())
    }

    /// Writes a GGUF file the way llama.cpp's converter does: llama.cpp names, Llama q/k rows
    /// permuted for interleaved RoPE, matrices quantized to `dtype`, norms and biases in f32.
    fn write_gguf(&self, path: &Path, dtype: GgmlDType, arch: &str) -> Result<()> {
        let mut qts: Vec<(String, QTensor)> = Vec::new();
        for (name, t) in &self.tensors {
            let gname = gguf_name(name);
            let t = if self.family == Family::Llama && name.ends_with("q_proj.weight") {
                permute_for_interleaved(t, HEADS)?
            } else if self.family == Family::Llama && name.ends_with("k_proj.weight") {
                permute_for_interleaved(t, KV_HEADS)?
            } else {
                t.clone()
            };
            let qdtype = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
            qts.push((gname, QTensor::quantize(&t, qdtype)?));
        }
        let prefix = arch;
        let u32v = |v: usize| Value::U32(v as u32);
        let md: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (format!("{prefix}.block_count"), u32v(LAYERS)),
            (format!("{prefix}.context_length"), u32v(MAX_POS)),
            (format!("{prefix}.embedding_length"), u32v(HIDDEN)),
            (format!("{prefix}.feed_forward_length"), u32v(INTER)),
            (format!("{prefix}.attention.head_count"), u32v(HEADS)),
            (format!("{prefix}.attention.head_count_kv"), u32v(KV_HEADS)),
            (
                format!("{prefix}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (format!("{prefix}.rope.freq_base"), Value::F32(10000.0)),
            (format!("{prefix}.rope.dimension_count"), u32v(HEAD_DIM)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ];
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        gguf_file::write(&mut f, &md_refs, &t_refs)?;
        Ok(())
    }
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (layer, name) = rest.split_once('.').expect("layer index");
    let g = match name {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unknown tensor {other}"),
    };
    format!("blk.{layer}.{g}")
}

/// llama.cpp `convert_hf_to_gguf.py` `permute`: reorders each head's rows from HF's
/// half-split layout to interleaved pairs.
fn permute_for_interleaved(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    Ok(w.reshape((heads, 2, out / heads / 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}

const TOKENS: [u32; 12] = [5, 17, 299, 42, 0, 123, 7, 7, 250, 64, 3, 200];

fn load(path: &Path) -> Result<LlmModel> {
    LlmModel::load(path, &Device::Cpu)
}

fn load_backend(path: &Path, attention: AttentionBackend) -> Result<LlmModel> {
    LlmModel::load_with(
        path,
        &Device::Cpu,
        &LoadOptions {
            attention,
            ..Default::default()
        },
    )
}

/// Logits of feeding `tokens` in chunks of the given sizes (must sum to the length).
fn chunked(model: &LlmModel, tokens: &[u32], chunks: &[usize]) -> Result<Vec<Vec<f32>>> {
    let mut cache = model.new_cache();
    let mut rows = Vec::new();
    let mut at = 0;
    for &c in chunks {
        rows.extend(
            model
                .forward(&tokens[at..at + c], &mut cache)?
                .to_vec2::<f32>()?,
        );
        at += c;
    }
    assert_eq!(at, tokens.len());
    assert_eq!(cache.len(), tokens.len());
    Ok(rows)
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Largest absolute logit, to express tolerances relative to the logit scale.
fn scale(rows: &[Vec<f32>]) -> f32 {
    rows.iter().flatten().fold(0.0, |m, v| m.max(v.abs()))
}

fn bits(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// (a) for every format: one pass == token by token == mixed chunks, bit for bit on CPU; and
/// the logits are not degenerate.
#[test]
fn whole_sequence_equals_token_by_token() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let mut paths = Vec::new();
    for (family, tied, name) in [
        (Family::Llama, true, "llama-tied"),
        (Family::Llama, false, "llama-untied"),
        (Family::Qwen2, false, "qwen2"),
    ] {
        let tiny = Tiny::new(family, tied, 1)?;
        let hf = dir.path().join(name);
        tiny.write_hf(&hf, DType::F32)?;
        paths.push(hf);
        for dtype in [GgmlDType::F32, GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let arch = if family == Family::Llama {
                "llama"
            } else {
                "qwen2"
            };
            let p = dir.path().join(format!("{name}-{dtype:?}.gguf"));
            tiny.write_gguf(&p, dtype, arch)?;
            paths.push(p);
        }
    }
    let ones = vec![1; TOKENS.len()];
    for path in &paths {
        let model = load(path)?;
        assert!(model.is_batch_invariant());
        let whole = chunked(&model, &TOKENS, &[TOKENS.len()])?;
        let single = chunked(&model, &TOKENS, &ones)?;
        let mixed = chunked(&model, &TOKENS, &[3, 1, 5, 2, 1])?;
        assert_eq!(whole.len(), TOKENS.len());
        assert_eq!(whole[0].len(), VOCAB);
        assert_eq!(bits(&whole), bits(&single), "{}", path.display());
        assert_eq!(bits(&whole), bits(&mixed), "{}", path.display());
        // Different positions give different distributions (the model is not constant).
        assert!(max_diff(&whole[..1], &whole[1..2]) > 1e-3);
        assert!(whole.iter().flatten().all(|v| v.is_finite()));

        // The candle tensor-op attention (the GPU path) agrees to float tolerance.
        let tensor_model = load_backend(path, AttentionBackend::Tensor)?;
        assert!(!tensor_model.is_batch_invariant());
        let t_whole = chunked(&tensor_model, &TOKENS, &[TOKENS.len()])?;
        let t_single = chunked(&tensor_model, &TOKENS, &ones)?;
        assert!(max_diff(&whole, &t_whole) < 1e-4, "{}", path.display());
        assert!(max_diff(&t_whole, &t_single) < 1e-4, "{}", path.display());
    }
    Ok(())
}

/// (b) truncating the cache and feeding new tokens equals a fresh forward over the new
/// sequence, for safetensors and GGUF.
#[test]
fn truncate_then_refeed_equals_fresh_forward() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let tiny = Tiny::new(Family::Qwen2, true, 2)?;
    let hf = dir.path().join("hf");
    tiny.write_hf(&hf, DType::F32)?;
    let gguf = dir.path().join("m.gguf");
    tiny.write_gguf(&gguf, GgmlDType::Q8_0, "qwen2")?;
    let tiny_llama = Tiny::new(Family::Llama, false, 3)?;
    let gguf_llama = dir.path().join("l.gguf");
    tiny_llama.write_gguf(&gguf_llama, GgmlDType::Q4_0, "llama")?;

    for path in [&hf, &gguf, &gguf_llama] {
        for backend in [AttentionBackend::Host, AttentionBackend::Tensor] {
            let model = load_backend(path, backend)?;
            let mut cache = model.new_cache();
            model.forward(&TOKENS[..8], &mut cache)?;
            cache.truncate(5)?;
            assert_eq!(cache.len(), 5);
            let replacement = [9u32, 10, 11];
            let got = model.forward(&replacement, &mut cache)?.to_vec2::<f32>()?;
            assert_eq!(cache.len(), 8);

            let mut fresh_seq = TOKENS[..5].to_vec();
            fresh_seq.extend_from_slice(&replacement);
            let fresh = chunked(&model, &fresh_seq, &[fresh_seq.len()])?;
            if backend == AttentionBackend::Host {
                assert_eq!(bits(&got), bits(&fresh[5..]), "{}", path.display());
            } else {
                assert!(max_diff(&got, &fresh[5..]) < 1e-4, "{}", path.display());
            }

            // truncate(0) behaves like reset; truncating past the end is an error.
            cache.truncate(0)?;
            assert!(cache.is_empty());
            assert!(matches!(cache.truncate(1), Err(LlmError::Cache(_))));
            let again = model.forward(&fresh_seq, &mut cache)?.to_vec2::<f32>()?;
            assert!(max_diff(&again, &fresh) < 1e-5);
            cache.reset();
            assert_eq!(cache.len(), 0);

            // A cloned cache is an independent fork.
            model.forward(&TOKENS[..4], &mut cache)?;
            let mut fork = cache.clone();
            model.forward(&TOKENS[4..6], &mut fork)?;
            assert_eq!((cache.len(), fork.len()), (4, 6));
        }
    }
    Ok(())
}

/// The GGUF and safetensors loaders compute the same function on the same weights. For Llama
/// this only holds when the GGUF q/k rows are permuted and RoPE is interleaved, as llama.cpp
/// does; for Qwen2 both use NeoX RoPE.
#[test]
fn gguf_and_safetensors_agree() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    for (family, arch) in [(Family::Llama, "llama"), (Family::Qwen2, "qwen2")] {
        let tiny = Tiny::new(family, false, 4)?;
        let hf = dir.path().join(format!("{arch}-hf"));
        tiny.write_hf(&hf, DType::F32)?;
        let gguf = dir.path().join(format!("{arch}.gguf"));
        tiny.write_gguf(&gguf, GgmlDType::F32, arch)?;
        let a = load(&hf)?;
        let b = load(&gguf)?;
        assert_eq!(a.config().rope_style, RopeStyle::Neox);
        let expected_style = if family == Family::Llama {
            RopeStyle::Interleaved
        } else {
            RopeStyle::Neox
        };
        assert_eq!(b.config().rope_style, expected_style);
        let la = chunked(&a, &TOKENS, &[TOKENS.len()])?;
        let lb = chunked(&b, &TOKENS, &[TOKENS.len()])?;
        assert!(max_diff(&la, &lb) < 1e-4, "{arch}: {}", max_diff(&la, &lb));
        assert_eq!(a.num_parameters(), b.num_parameters());

        // Q8_0 stays close to f32; the error shows the weights really are quantized.
        let q8 = dir.path().join(format!("{arch}-q8.gguf"));
        tiny.write_gguf(&q8, GgmlDType::Q8_0, arch)?;
        let lq = chunked(&load(&q8)?, &TOKENS, &[TOKENS.len()])?;
        let d = max_diff(&lb, &lq) / scale(&lb);
        assert!(
            d > 0.0 && d < 0.03,
            "{arch}: q8_0 vs f32 differ by {d} of the logit scale"
        );
        assert!(load(&q8)?.weight_bytes() < b.weight_bytes() / 3);

        // f16 and bf16 safetensors load and compute in f32.
        for dtype in [DType::F16, DType::BF16] {
            let p = dir.path().join(format!("{arch}-{dtype:?}"));
            tiny.write_hf(&p, dtype)?;
            let l = chunked(&load(&p)?, &TOKENS, &[TOKENS.len()])?;
            let d = max_diff(&la, &l) / scale(&la);
            assert!(
                d < 0.03,
                "{arch} {dtype:?} differs by {d} of the logit scale"
            );
        }
    }
    Ok(())
}

/// (c) Qwen2's q/k/v biases are used: with zero biases a Qwen2 model equals the Llama model
/// with the same weights; changing one bias changes the logits.
#[test]
fn qwen2_biases_are_applied() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let mut qwen = Tiny::new(Family::Qwen2, true, 5)?;
    for (name, t) in &mut qwen.tensors {
        if name.ends_with(".bias") {
            *t = t.zeros_like()?;
        }
    }
    let mut llama = Tiny::new(Family::Llama, true, 5)?;
    llama.tensors = qwen
        .tensors
        .iter()
        .filter(|(n, _)| !n.ends_with(".bias"))
        .cloned()
        .collect();
    let (q_dir, l_dir) = (dir.path().join("q"), dir.path().join("l"));
    qwen.write_hf(&q_dir, DType::F32)?;
    llama.write_hf(&l_dir, DType::F32)?;
    let zero_bias = chunked(&load(&q_dir)?, &TOKENS, &[TOKENS.len()])?;
    let no_bias = chunked(&load(&l_dir)?, &TOKENS, &[TOKENS.len()])?;
    assert!(max_diff(&zero_bias, &no_bias) < 1e-6);

    for bias in ["q_proj", "k_proj", "v_proj"] {
        let mut changed = Tiny::new(Family::Qwen2, true, 5)?;
        changed.tensors = qwen.tensors.clone();
        let name = format!("model.layers.1.self_attn.{bias}.bias");
        let t = changed.get_mut(&name).expect("bias tensor");
        *t = (t.ones_like()? * 0.5)?;
        let p = dir.path().join(bias);
        changed.write_hf(&p, DType::F32)?;
        let l = chunked(&load(&p)?, &TOKENS, &[TOKENS.len()])?;
        // Position 0 attends only to itself, so a k bias cannot change it; later rows must.
        assert!(
            max_diff(&l[1..], &zero_bias[1..]) > 1e-3,
            "{bias} bias had no effect"
        );
        // The GGUF path applies it too.
        let g = dir.path().join(format!("{bias}.gguf"));
        changed.write_gguf(&g, GgmlDType::F32, "qwen2")?;
        let lg = chunked(&load(&g)?, &TOKENS, &[TOKENS.len()])?;
        assert!(max_diff(&l, &lg) < 1e-4);
    }
    Ok(())
}

fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits
        .to_vec2::<f32>()?
        .iter()
        .map(|r| ianvs_algorithms::llm::sampling::argmax(r).map_err(Into::into))
        .collect()
}

/// Target-only greedy decoding: one token per forward pass.
fn greedy(model: &LlmModel, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut cache = model.new_cache();
    let mut next = *argmax_rows(&model.forward(prompt, &mut cache)?)?
        .last()
        .expect("rows");
    let mut out = vec![next];
    while out.len() < n {
        next = argmax_rows(&model.forward(&[next], &mut cache)?)?[0];
        out.push(next);
    }
    Ok(out)
}

/// Greedy speculative decoding written against the public API (draft proposes `gamma`
/// tokens, the target verifies them in one pass, both caches are cut back after a
/// rejection) reproduces target-only greedy output token for token.
fn speculative_greedy(
    target: &LlmModel,
    draft: &LlmModel,
    prompt: &[u32],
    n: usize,
    gamma: usize,
) -> Result<(Vec<u32>, usize, usize)> {
    let (mut tc, mut dc) = (target.new_cache(), draft.new_cache());
    let first = *argmax_rows(&target.forward(prompt, &mut tc)?)?
        .last()
        .expect("rows");
    let mut seq = prompt.to_vec();
    seq.push(first);
    let (mut accepted_total, mut drafted_total) = (0, 0);
    while seq.len() - prompt.len() < n {
        // Draft: catch up on tokens it has not seen, then propose gamma tokens.
        let mut proposal = Vec::with_capacity(gamma);
        let mut feed = seq[dc.len()..].to_vec();
        for _ in 0..gamma {
            let d = *argmax_rows(&draft.forward(&feed, &mut dc)?)?
                .last()
                .expect("rows");
            proposal.push(d);
            feed = vec![d];
        }
        // Target: the last accepted token plus the proposal, in one pass.
        let base = tc.len();
        let mut verify = vec![*seq.last().expect("non-empty")];
        verify.extend_from_slice(&proposal);
        let preds = argmax_rows(&target.forward(&verify, &mut tc)?)?;
        let k = proposal
            .iter()
            .zip(&preds)
            .take_while(|(d, p)| d == p)
            .count();
        accepted_total += k;
        drafted_total += gamma;
        seq.extend_from_slice(&proposal[..k]);
        seq.push(preds[k]); // the correction, or the bonus token when all were accepted
                            // Keep the target's entries for the fed token and the accepted drafts only.
        tc.truncate(base + 1 + k)?;
        let valid = dc.len().min(seq.len() - 1);
        dc.truncate(valid)?;
    }
    seq.truncate(prompt.len() + n);
    Ok((seq[prompt.len()..].to_vec(), accepted_total, drafted_total))
}

#[test]
fn speculative_greedy_matches_target_only() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let tiny = Tiny::new(Family::Qwen2, true, 10)?;
    let target_path = dir.path().join("target");
    tiny.write_hf(&target_path, DType::F32)?;
    // The draft is the same network in 4 bits: often right, sometimes wrong.
    let draft_path = dir.path().join("draft.gguf");
    tiny.write_gguf(&draft_path, GgmlDType::Q4_0, "qwen2")?;
    let target = load(&target_path)?;
    let draft = load(&draft_path)?;
    let prompt = [3u32, 14, 15, 92];
    let n = 40;
    let reference = greedy(&target, &prompt, n)?;
    for gamma in [1, 3, 5] {
        let (out, accepted, drafted) = speculative_greedy(&target, &draft, &prompt, n, gamma)?;
        assert_eq!(out, reference, "gamma {gamma}");
        // Both paths must be exercised: acceptances and rejections (cache truncation).
        assert!(
            0 < accepted && accepted < drafted,
            "gamma {gamma}: accepted {accepted} of {drafted}; the test proves little"
        );
    }
    Ok(())
}

/// A sharded checkpoint (`model.safetensors.index.json` + shards) loads like a single file.
#[test]
fn sharded_safetensors_load_like_a_single_file() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let io = |e: std::io::Error| LlmError::Tokenizer(e.to_string());
    let tiny = Tiny::new(Family::Llama, false, 9)?;
    let single = dir.path().join("single");
    tiny.write_hf(&single, DType::F32)?;
    let sharded = dir.path().join("sharded");
    std::fs::create_dir_all(&sharded).map_err(io)?;
    let mut weight_map = serde_json::Map::new();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    for (i, (name, t)) in tiny.tensors.iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        weight_map.insert(name.clone(), serde_json::json!(shard));
        if i % 2 == 0 {
            a.insert(name.clone(), t.clone());
        } else {
            b.insert(name.clone(), t.clone());
        }
    }
    candle_core::safetensors::save(&a, sharded.join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&b, sharded.join("model-00002-of-00002.safetensors"))?;
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .map_err(io)?;
    std::fs::write(sharded.join("config.json"), tiny.config_json().to_string()).map_err(io)?;
    let la = chunked(&load(&single)?, &TOKENS, &[TOKENS.len()])?;
    let lb = chunked(&load(&sharded)?, &TOKENS, &[TOKENS.len()])?;
    assert_eq!(bits(&la), bits(&lb));

    // A shard listed in the index but absent is named in the error.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).map_err(io)?;
    let err = load(&sharded).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::MissingFile {
                what: "safetensors shard",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model-00002-of-00002"), "{err}");
    Ok(())
}

/// Parameter and byte accounting on a known shape.
#[test]
fn counts_parameters_and_bytes() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let tiny = Tiny::new(Family::Llama, true, 6)?;
    tiny.write_hf(dir.path(), DType::F32)?;
    let model = load(dir.path())?;
    let q_dim = HEADS * HEAD_DIM;
    let kv_dim = KV_HEADS * HEAD_DIM;
    let per_layer = 2 * HIDDEN + HIDDEN * (2 * q_dim + 2 * kv_dim) + 3 * HIDDEN * INTER;
    let expected = VOCAB * HIDDEN + LAYERS * per_layer + HIDDEN;
    assert_eq!(model.num_parameters(), expected);
    // f32: every parameter read once per token, plus one embedding row (tied head read fully).
    assert_eq!(model.weight_bytes(), 4 * (expected + HIDDEN));
    let c = model.config();
    assert_eq!((c.bos_token_id, c.eos_token_id()), (Some(1), Some(2)));
    assert_eq!(
        (c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim),
        (LAYERS, HEADS, KV_HEADS, HEAD_DIM)
    );
    Ok(())
}

/// (f) bad inputs are clear errors, never panics.
#[test]
fn bad_inputs_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let io = |e: std::io::Error| LlmError::Tokenizer(e.to_string());
    let tiny = Tiny::new(Family::Llama, true, 7)?;

    // Unsupported architecture in GGUF.
    let gpt2 = dir.path().join("gpt2.gguf");
    tiny.write_gguf(&gpt2, GgmlDType::F32, "gpt2")?;
    let err = load(&gpt2).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::UnsupportedArch { .. }), "{msg}");
    assert!(
        msg.contains("`gpt2`") && msg.contains("llama, qwen2"),
        "{msg}"
    );

    // Unsupported model_type in config.json.
    let mistral = dir.path().join("mistral");
    tiny.write_hf(&mistral, DType::F32)?;
    let cfg = tiny
        .config_json()
        .to_string()
        .replace("\"llama\"", "\"mistral\"");
    std::fs::write(mistral.join("config.json"), cfg).map_err(io)?;
    let msg = load(&mistral).unwrap_err().to_string();
    assert!(
        msg.contains("`mistral`") && msg.contains("llama, qwen2"),
        "{msg}"
    );

    // Truncated safetensors.
    let trunc = dir.path().join("trunc");
    tiny.write_hf(&trunc, DType::F32)?;
    let st = trunc.join("model.safetensors");
    let bytes = std::fs::read(&st).map_err(io)?;
    std::fs::write(&st, &bytes[..bytes.len() / 2]).map_err(io)?;
    let err = load(&trunc).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::InvalidFile {
                what: "safetensors file",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Missing config.json.
    let no_cfg = dir.path().join("nocfg");
    tiny.write_hf(&no_cfg, DType::F32)?;
    std::fs::remove_file(no_cfg.join("config.json")).map_err(io)?;
    let err = load(&no_cfg).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::MissingFile {
                what: "config.json",
                ..
            }
        ),
        "{err}"
    );

    // config.json without weights.
    let no_w = dir.path().join("noweights");
    tiny.write_hf(&no_w, DType::F32)?;
    std::fs::remove_file(no_w.join("model.safetensors")).map_err(io)?;
    let err = load(&no_w).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::MissingFile {
                what: "safetensors weights",
                ..
            }
        ),
        "{err}"
    );

    // Malformed config.json.
    let bad_cfg = dir.path().join("badcfg");
    tiny.write_hf(&bad_cfg, DType::F32)?;
    std::fs::write(bad_cfg.join("config.json"), "{\"model_type\": \"llama\"}").map_err(io)?;
    let err = load(&bad_cfg).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::InvalidFile {
                what: "config.json",
                ..
            }
        ),
        "{err}"
    );

    // A weight with the wrong shape.
    let shape = dir.path().join("shape");
    let mut wrong = Tiny::new(Family::Llama, true, 7)?;
    let t = wrong
        .get_mut("model.layers.0.mlp.up_proj.weight")
        .expect("up_proj");
    *t = Tensor::zeros((INTER, HIDDEN + 1), DType::F32, &Device::Cpu)?;
    wrong.write_hf(&shape, DType::F32)?;
    let err = load(&shape).unwrap_err();
    assert!(matches!(err, LlmError::TensorShape { .. }), "{err}");

    // Truncated GGUF, missing path, not a model.
    let good = dir.path().join("good.gguf");
    tiny.write_gguf(&good, GgmlDType::Q8_0, "llama")?;
    let bytes = std::fs::read(&good).map_err(io)?;
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).map_err(io)?;
    let err = load(&cut).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::InvalidFile {
                what: "GGUF file",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        load(&dir.path().join("nope.gguf")),
        Err(LlmError::MissingFile { .. })
    ));
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello").map_err(io)?;
    assert!(matches!(load(&txt), Err(LlmError::UnknownFormat { .. })));

    // Runtime misuse.
    let model = load(&good)?;
    let other = load(&good)?;
    let mut cache = model.new_cache();
    assert!(matches!(
        model.forward(&[], &mut cache),
        Err(LlmError::EmptyInput)
    ));
    let err = model.forward(&[1, VOCAB as u32], &mut cache).unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::TokenOutOfRange {
                id: 300,
                vocab_size: 300
            }
        ),
        "{err}"
    );
    assert!(
        cache.is_empty(),
        "a failed forward must leave the cache untouched"
    );
    let long = vec![1u32; MAX_POS + 1];
    assert!(matches!(
        model.forward(&long, &mut cache),
        Err(LlmError::ContextOverflow { .. })
    ));
    let mut foreign = other.new_cache();
    assert!(matches!(
        model.forward(&[1], &mut foreign),
        Err(LlmError::Cache(_))
    ));
    model.forward(&vec![1u32; MAX_POS], &mut cache)?;
    assert!(matches!(
        model.forward(&[1], &mut cache),
        Err(LlmError::ContextOverflow { .. })
    ));
    assert_eq!(cache.len(), MAX_POS);
    Ok(())
}

/// Requantizing at load: F32 is exact dequantization (same function as the Q8_0 weights up to
/// activation rounding), Q8_0 from Q4_0 stays close.
#[test]
fn requantize_option() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let tiny = Tiny::new(Family::Llama, true, 8)?;
    let p = dir.path().join("q4.gguf");
    tiny.write_gguf(&p, GgmlDType::Q4_0, "llama")?;
    let native = load(&p)?;
    let base = chunked(&native, &TOKENS, &[TOKENS.len()])?;
    for dtype in [GgmlDType::F32, GgmlDType::Q8_0] {
        let m = LlmModel::load_with(
            &p,
            &Device::Cpu,
            &LoadOptions {
                requantize: Some(dtype),
                ..Default::default()
            },
        )?;
        let l = chunked(&m, &TOKENS, &[TOKENS.len()])?;
        let ones = vec![1; TOKENS.len()];
        assert_eq!(bits(&l), bits(&chunked(&m, &TOKENS, &ones)?));
        let d = max_diff(&base, &l) / scale(&base);
        assert!(d < 0.05, "{dtype:?}: differs by {d} of the logit scale");
        assert!(m.weight_bytes() > native.weight_bytes());
    }
    Ok(())
}
