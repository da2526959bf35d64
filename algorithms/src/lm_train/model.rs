//! [`TrainLlama`]: a trainable Llama-architecture decoder (RMSNorm, RoPE, grouped-query
//! attention, SwiGLU) whose parameters live in a candle-nn `VarMap` under Hugging Face names.
//!
//! The parameter names are exactly those of `transformers`' `LlamaForCausalLM`
//! (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`, …, `lm_head.weight`
//! unless the head is tied), so exporting is writing the map, and the project's inference
//! runtime (`crate::llm`) loads the result like any HF checkpoint. The forward pass follows HF's
//! `LlamaModel` op for op — RoPE in the "rotate half" (NeoX) pairing with f32 angles, RMSNorm as
//! `x / sqrt(mean(x²) + eps) * w` — because the runtime reproduces HF, and the export test checks
//! that both give the same logits.
//!
//! Only ops with a backward pass are used: candle-nn's fused `rms_norm` and `rope` kernels have
//! none, so compositions of basic ops stand in for them; the causal softmax and the
//! cross-entropy, the two most expensive steps, are fused ops of our own with hand-written
//! backward passes (`ops.rs`).
//!
//! Initialisation is seeded (candle's CPU `randn` is not): every weight matrix is drawn from
//! N(0, 0.02²) — HF Llama's `initializer_range` — by a `ChaCha8Rng`, in a fixed parameter order;
//! the projections that write into the residual stream (`o_proj`, `down_proj`) are scaled by
//! 1/√(2·layers) as in GPT-2, so the residual variance does not grow with depth; norms start at 1.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{LmTrainError, Result};

/// HF Llama's `initializer_range`.
const INIT_STD: f64 = 0.02;

/// The architecture hyperparameters of a [`TrainLlama`] (the fields of its `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// The training context; also the model's `max_position_embeddings`.
    pub max_position_embeddings: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    /// Whether the output head reuses the embedding matrix (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

impl LmShape {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Checks the relations the forward pass relies on.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(LmTrainError::Shape(m));
        for (name, v) in [
            ("vocab size", self.vocab_size),
            ("hidden size", self.hidden_size),
            ("intermediate size", self.intermediate_size),
            ("layers", self.num_layers),
            ("heads", self.num_heads),
            ("kv heads", self.num_kv_heads),
            ("context", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!(
                "hidden size {} is not a multiple of the {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} heads are not a multiple of the {} kv heads (grouped-query attention shares \
                 each kv head between a whole number of query heads)",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head width {} (hidden / heads) must be even for RoPE",
                self.head_dim()
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope theta {} must be positive", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return bad(format!(
                "rms norm eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }

    /// Every parameter in initialisation order: name, shape, init standard deviation (`None`:
    /// a norm weight, initialised to 1).
    fn param_specs(&self) -> Vec<(String, Vec<usize>, Option<f64>)> {
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_heads * hd, self.num_kv_heads * hd);
        let residual_std = INIT_STD / ((2 * self.num_layers) as f64).sqrt();
        let mut specs = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
            Some(INIT_STD),
        )];
        for l in 0..self.num_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            specs.extend([
                (p("input_layernorm.weight"), vec![h], None),
                (p("self_attn.q_proj.weight"), vec![q, h], Some(INIT_STD)),
                (p("self_attn.k_proj.weight"), vec![kv, h], Some(INIT_STD)),
                (p("self_attn.v_proj.weight"), vec![kv, h], Some(INIT_STD)),
                (p("self_attn.o_proj.weight"), vec![h, q], Some(residual_std)),
                (p("post_attention_layernorm.weight"), vec![h], None),
                (p("mlp.gate_proj.weight"), vec![i, h], Some(INIT_STD)),
                (p("mlp.up_proj.weight"), vec![i, h], Some(INIT_STD)),
                (p("mlp.down_proj.weight"), vec![h, i], Some(residual_std)),
            ]);
        }
        specs.push(("model.norm.weight".to_string(), vec![h], None));
        if !self.tie_word_embeddings {
            specs.push((
                "lm_head.weight".to_string(),
                vec![self.vocab_size, h],
                Some(INIT_STD),
            ));
        }
        specs
    }

    /// Number of parameters (a tied head counted once).
    pub fn num_parameters(&self) -> usize {
        self.param_specs()
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum()
    }
}

/// A bias-free linear layer on `[rows, in]` inputs. candle-nn's `Linear` broadcasts its
/// weight over a 3-D input's batch, which makes the backward pass build a gradient per batch
/// entry and sum them; flattening to rows keeps forward and backward one matmul each.
struct Linear {
    /// `[out, in]`, PyTorch layout.
    weight: Tensor,
}

impl Linear {
    fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight.t()?)
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A trainable Llama (see the module docs). The parameters are candle `Var`s in a `VarMap`;
/// the layer structs hold tensors that share their storage, so optimiser updates show through.
pub struct TrainLlama {
    shape: LmShape,
    varmap: VarMap,
    /// Parameter names in initialisation order (the `VarMap` itself is unordered).
    names: Vec<String>,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// The output head: the embedding matrix when tied.
    lm_head: Tensor,
    /// RoPE tables `[max_position_embeddings, head_dim]`, each half repeated (HF layout).
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl std::fmt::Debug for TrainLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainLlama")
            .field("shape", &self.shape)
            .field("num_parameters", &self.shape.num_parameters())
            .finish_non_exhaustive()
    }
}

/// A standard normal draw (Box–Muller): `rand` alone has no normal distribution.
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl TrainLlama {
    /// A freshly initialised model; one seed always gives bit-identical weights.
    pub fn new(shape: LmShape, seed: u64, device: &Device) -> Result<Self> {
        shape.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = Vec::new();
        for (name, dims, std) in shape.param_specs() {
            let len: usize = dims.iter().product();
            let values: Vec<f32> = match std {
                Some(std) => (0..len).map(|_| (normal(&mut rng) * std) as f32).collect(),
                None => vec![1.0; len],
            };
            tensors.push((name, Tensor::from_vec(values, dims, device)?));
        }
        Self::from_tensors(shape, tensors, device)
    }

    /// A model with the given parameter values; each must have its exact shape.
    fn from_tensors(
        shape: LmShape,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
    ) -> Result<Self> {
        shape.check()?;
        let varmap = VarMap::new();
        let mut names = Vec::with_capacity(tensors.len());
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
            for (name, t) in tensors {
                names.push(name.clone());
                data.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
            }
        }
        // The VarBuilder hands back the variables just stored (it checks their shapes), so the
        // module tree below mirrors the tensor names.
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let (h, i, hd) = (shape.hidden_size, shape.intermediate_size, shape.head_dim());
        let (q, kv) = (shape.num_heads * hd, shape.num_kv_heads * hd);
        let m = vb.pp("model");
        let embed = m.get((shape.vocab_size, h), "embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(shape.num_layers);
        for l in 0..shape.num_layers {
            let lb = m.pp("layers").pp(l);
            let (a, f) = (lb.pp("self_attn"), lb.pp("mlp"));
            layers.push(Layer {
                attn_norm: lb.get(h, "input_layernorm.weight")?,
                q: Linear::new(h, q, a.pp("q_proj"))?,
                k: Linear::new(h, kv, a.pp("k_proj"))?,
                v: Linear::new(h, kv, a.pp("v_proj"))?,
                o: Linear::new(q, h, a.pp("o_proj"))?,
                ffn_norm: lb.get(h, "post_attention_layernorm.weight")?,
                gate: Linear::new(h, i, f.pp("gate_proj"))?,
                up: Linear::new(h, i, f.pp("up_proj"))?,
                down: Linear::new(i, h, f.pp("down_proj"))?,
            });
        }
        let norm = m.get(h, "norm.weight")?;
        let lm_head = if shape.tie_word_embeddings {
            embed.clone()
        } else {
            vb.get((shape.vocab_size, h), "lm_head.weight")?
        };
        let (cos, sin) = rope_tables(&shape, device)?;
        // A name the builder did not ask for would be exported but never trained: refuse.
        let expected: Vec<String> = shape.param_specs().into_iter().map(|s| s.0).collect();
        if let Some(extra) = names.iter().find(|n| !expected.contains(n)) {
            return Err(LmTrainError::Shape(format!(
                "unexpected parameter `{extra}` for this shape"
            )));
        }
        Ok(Self {
            shape,
            varmap,
            names,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// Loads the weights of a folder written by [`super::export::save_hf_folder`] (or any HF
    /// Llama checkpoint of a shape this type supports) to continue training or to compare.
    pub fn load_hf_folder(dir: &Path, device: &Device) -> Result<Self> {
        let shape = super::export::read_shape(dir)?;
        let file = dir.join("model.safetensors");
        let mut loaded: HashMap<String, Tensor> = candle_core::safetensors::load(&file, device)
            .map_err(|e| LmTrainError::InvalidFile {
                what: "safetensors file",
                path: file.clone(),
                reason: e.to_string(),
            })?;
        let mut tensors = Vec::new();
        for (name, dims, _) in shape.param_specs() {
            let t = loaded
                .remove(&name)
                .ok_or_else(|| LmTrainError::InvalidFile {
                    what: "safetensors file",
                    path: file.clone(),
                    reason: format!("tensor `{name}` is missing"),
                })?;
            if t.dims() != dims.as_slice() {
                return Err(LmTrainError::InvalidFile {
                    what: "safetensors file",
                    path: file,
                    reason: format!(
                        "tensor `{name}` has shape {:?}, expected {dims:?}",
                        t.dims()
                    ),
                });
            }
            tensors.push((name, t));
        }
        Self::from_tensors(shape, tensors, device)
    }

    pub fn shape(&self) -> &LmShape {
        &self.shape
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn num_parameters(&self) -> usize {
        self.shape.num_parameters()
    }

    /// The parameters in a fixed order, with their HF names.
    pub fn named_vars(&self) -> Result<Vec<(String, Var)>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        self.names
            .iter()
            .map(|n| {
                data.get(n)
                    .cloned()
                    .map(|v| (n.clone(), v))
                    .ok_or_else(|| LmTrainError::Shape(format!("parameter `{n}` vanished")))
            })
            .collect()
    }

    /// Rounds every parameter through `dtype` (e.g. F16 before exporting in half precision),
    /// so the model computes exactly what the exported file holds.
    pub fn round_through(&self, dtype: DType) -> Result<()> {
        if dtype == DType::F32 {
            return Ok(());
        }
        for (_, var) in self.named_vars()? {
            let rounded = var.as_tensor().to_dtype(dtype)?.to_dtype(DType::F32)?;
            var.set(&rounded)?;
        }
        Ok(())
    }

    /// Logits `[batch, seq, vocab]` of token ids `[batch, seq]` (u32), causal, positions
    /// starting at 0.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.shape.max_position_embeddings {
            return Err(LmTrainError::Settings(format!(
                "a sequence of {t} tokens exceeds the model context of {}",
                self.shape.max_position_embeddings
            )));
        }
        let s = &self.shape;
        let (hd, heads, kv_heads) = (s.head_dim(), s.num_heads, s.num_kv_heads);
        let eps = s.rms_norm_eps as f32;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let scale = 1.0 / (hd as f32).sqrt();

        // The residual stream is kept as rows `[b·t, hidden]` so every projection is one matmul.
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        for layer in &self.layers {
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.attn_norm, eps)?;
            let heads_of = |lin: &Linear, n: usize| -> Result<Tensor> {
                Ok(lin
                    .forward(&h)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = rope(&heads_of(&layer.q, heads)?, &cos, &sin)?;
            let k = rope(&heads_of(&layer.k, kv_heads)?, &cos, &sin)?;
            let v = heads_of(&layer.v, kv_heads)?;
            let (k, v) = (
                repeat_kv(k, heads / kv_heads)?,
                repeat_kv(v, heads / kv_heads)?,
            );
            let probs = super::ops::causal_softmax(&q.matmul(&k.t()?)?, scale)?;
            let attn = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b * t, heads * hd))?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &layer.ffn_norm, eps)?;
            let act = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&act)?)?;
        }
        let x = candle_nn::ops::rms_norm_slow(&x, &self.norm, eps)?;
        Ok(x.matmul(&self.lm_head.t()?)?
            .reshape((b, t, s.vocab_size))?)
    }

    /// Mean next-token cross-entropy (nats) of windows `[batch, seq + 1]`: positions `0..seq`
    /// predict `1..=seq`.
    pub fn loss(&self, windows: &Tensor) -> Result<Tensor> {
        let (b, t1) = windows.dims2()?;
        if t1 < 2 {
            return Err(LmTrainError::Settings(
                "a training window needs at least two tokens".into(),
            ));
        }
        let t = t1 - 1;
        let inputs = windows.narrow(1, 0, t)?;
        let targets = windows.narrow(1, 1, t)?.flatten_all()?;
        let logits = self
            .forward(&inputs)?
            .reshape((b * t, self.shape.vocab_size))?;
        super::ops::cross_entropy(&logits, &targets)
    }

    /// The parameters as named tensors, in order (for export).
    pub(crate) fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .named_vars()?
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect())
    }
}

/// cos/sin of `pos · inv_freq`, computed in f32 like `transformers` (and like the runtime),
/// each `[positions, head_dim]` with the half-width table repeated.
fn rope_tables(shape: &LmShape, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = shape.head_dim();
    let inv: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1.0 / shape.rope_theta.powf(i as f32 / hd as f32))
        .collect();
    let n = shape.max_position_embeddings;
    let (mut cos, mut sin) = (Vec::with_capacity(n * hd), Vec::with_capacity(n * hd));
    for pos in 0..n {
        for _ in 0..2 {
            for &f in &inv {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, hd), device)?,
        Tensor::from_vec(sin, (n, hd), device)?,
    ))
}

/// HF's `apply_rotary_pos_emb`: `x·cos + rotate_half(x)·sin` on `[b, heads, t, hd]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Shares each kv head between `rep` consecutive query heads: `[b, kv, t, hd]` →
/// `[b, kv·rep, t, hd]`.
fn repeat_kv(x: Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .expand((b, kv, rep, t, hd))?
        .reshape((b, kv * rep, t, hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny(tie: bool) -> LmShape {
        LmShape {
            vocab_size: 11,
            hidden_size: 8,
            intermediate_size: 12,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            max_position_embeddings: 16,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: tie,
        }
    }

    #[test]
    fn parameter_count_matches_formula() {
        let s = tiny(true);
        // embed 11·8, per layer 2 norms + q 8·8 + k,v 4·8 + o 8·8 + 3·12·8, final norm.
        let per_layer = 2 * 8 + 64 + 2 * 32 + 64 + 3 * 96;
        assert_eq!(s.num_parameters(), 88 + 2 * per_layer + 8);
        assert_eq!(tiny(false).num_parameters(), s.num_parameters() + 88);
    }

    #[test]
    fn init_is_seeded() {
        let dev = Device::Cpu;
        let a = TrainLlama::new(tiny(false), 7, &dev).unwrap();
        let b = TrainLlama::new(tiny(false), 7, &dev).unwrap();
        let c = TrainLlama::new(tiny(false), 8, &dev).unwrap();
        let flat = |m: &TrainLlama| -> Vec<f32> {
            m.tensors()
                .unwrap()
                .iter()
                .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect()
        };
        assert_eq!(flat(&a), flat(&b));
        assert_ne!(flat(&a), flat(&c));
        let std = {
            let v = flat(&a);
            (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
        };
        assert!(std > 0.01 && std < 0.5, "std {std}");
    }

    #[test]
    fn forward_is_causal() {
        let dev = Device::Cpu;
        let m = TrainLlama::new(tiny(true), 1, &dev).unwrap();
        let a = Tensor::new(&[[1u32, 2, 3, 4]], &dev).unwrap();
        let b = Tensor::new(&[[1u32, 2, 9, 10]], &dev).unwrap();
        let la = m.forward(&a).unwrap().squeeze(0).unwrap();
        let lb = m.forward(&b).unwrap().squeeze(0).unwrap();
        assert_eq!(la.dims(), &[4, 11]);
        // Positions 0 and 1 cannot see the changed tokens.
        let diff = |i: usize| {
            (la.get(i).unwrap() - lb.get(i).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(0), 0.0);
        assert_eq!(diff(1), 0.0);
        assert!(diff(2) > 0.0);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut s = tiny(true);
        s.num_kv_heads = 3;
        assert!(s.check().unwrap_err().to_string().contains("kv heads"));
        let mut s = tiny(true);
        s.hidden_size = 9;
        assert!(s.check().is_err());
        let mut s = tiny(true);
        s.num_layers = 0;
        assert!(TrainLlama::new(s, 0, &Device::Cpu).is_err());
    }

    #[test]
    fn too_long_input_is_an_error() {
        let m = TrainLlama::new(tiny(true), 1, &Device::Cpu).unwrap();
        let ids = Tensor::zeros((1, 17), DType::U32, &Device::Cpu).unwrap();
        assert!(m.forward(&ids).is_err());
    }
}
