//! Weight containers (linear, embedding, RMSNorm) and the format-neutral tensor source the
//! GGUF and safetensors loaders implement.
//!
//! Why linear layers are `QTensor`s even for float weights on CPU: candle's dense f32 matmul
//! goes through `gemm`, whose blocking (and so the rounding of each output) depends on how many
//! rows are multiplied at once. The quantized CPU kernels instead compute every output element
//! as one dot product whose summation order depends only on `k`, so a row's result does not
//! depend on the batch it came in. Storing float weights as an F32 `QTensor` routes them through
//! those kernels, which makes prefill/verify chunks and single-token decode produce
//! bit-identical logits. Some quantized kernels (x86/ARM repacked tiles) switch code paths
//! with the row count; [`LinearFactory`] detects those once per weight shape at load time and
//! the affected layers then run small chunks one row at a time.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::error::{LlmError, Result};
use ianvs_kernels::{Isa, Pool, QMatrix};

/// Chunks of at most this many rows are guaranteed batch invariant (larger chunks are prompt
/// prefills, which target-only and speculative decoding run identically anyway).
pub(crate) const MAX_INVARIANT_ROWS: usize = 33;

/// Row counts probed for batch invariance: both sides of the thresholds the candle kernels use
/// (`m == 1`, multiples of 4, the 16-row tiles, the 32-row AMX path).
const PROBE_ROWS: [usize; 10] = [2, 3, 4, 5, 8, 9, 16, 17, 32, 33];

/// A tensor as a loader found it: quantized (GGUF) or dense (safetensors, any float dtype).
pub(crate) enum RawTensor {
    Quant(QTensor),
    Dense(Tensor),
}

impl RawTensor {
    pub(crate) fn dims(&self) -> Vec<usize> {
        match self {
            Self::Quant(q) => q.shape().dims().to_vec(),
            Self::Dense(t) => t.dims().to_vec(),
        }
    }

    /// The tensor as dense f32 on `device` (for norms and biases, which are tiny).
    pub(crate) fn to_f32(&self, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Self::Quant(q) => q.dequantize(device)?,
            Self::Dense(t) => t.to_dtype(DType::F32)?.to_device(device)?,
        })
    }

    /// A `QTensor` suitable for the batch-invariant CPU kernels: quantized types are kept,
    /// float types become F32 (the F16 kernel would round activations to f16).
    fn into_cpu_qtensor(self) -> Result<QTensor> {
        match self {
            Self::Quant(q) => match q.dtype() {
                GgmlDType::F16 | GgmlDType::BF16 => {
                    let t = q.dequantize(&Device::Cpu)?;
                    Ok(QTensor::quantize(&t, GgmlDType::F32)?)
                }
                _ => Ok(q),
            },
            Self::Dense(t) => {
                let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
                Ok(QTensor::quantize(&t, GgmlDType::F32)?)
            }
        }
    }
}

/// Where the model builder gets its tensors from (one implementation per file format).
pub(crate) trait TensorSource {
    /// The file or folder, for error messages.
    fn path(&self) -> &Path;
    /// Whether the source holds a tensor of that name.
    fn contains(&self, name: &str) -> bool;
    /// Takes a tensor out of the source; `Ok(None)` when it is absent.
    fn take(&mut self, name: &str) -> Result<Option<RawTensor>>;

    /// Takes a tensor that must exist and have the given shape.
    fn take_shaped(&mut self, name: &str, expected: &[usize]) -> Result<RawTensor> {
        let raw = self.take(name)?.ok_or_else(|| LlmError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let actual = raw.dims();
        if actual != expected {
            return Err(LlmError::TensorShape {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                actual,
                expected: expected.to_vec(),
            });
        }
        Ok(raw)
    }
}

/// The type a weight with rows of `k` values gets when `wanted` is asked for: a K-quant needs
/// rows that are a multiple of 256 values, and llama.cpp's quantizer then falls back to a
/// 32-value type (`llama_tensor_get_type`): Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and
/// Q2_K/Q3_K → Q4_0 here (IQ4_NL upstream, a type candle does not have).
pub(crate) fn requant_fallback(wanted: GgmlDType, k: usize) -> GgmlDType {
    if k.is_multiple_of(wanted.block_size()) {
        return wanted;
    }
    match wanted {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    }
}

/// Builds linear layers for one device, remembering per `(dtype, out, in)` whether the CPU
/// kernel is batch invariant, and optionally converting weights to another type.
pub(crate) struct LinearFactory {
    device: Device,
    requantize: Option<GgmlDType>,
    /// CPU: use the runtime's own kernels (the `ianvs-kernels` crate) for the formats they
    /// cover.
    own_kernels: bool,
    /// The own kernel set (`None`: the process default).
    isa: Option<Isa>,
    /// The model's own threads for the own kernels (`None`: candle's global pool).
    pool: Option<Arc<Pool>>,
    known: HashMap<(GgmlDType, usize, usize), bool>,
}

impl LinearFactory {
    pub(crate) fn new(device: &Device, requantize: Option<GgmlDType>, own_kernels: bool) -> Self {
        Self {
            device: device.clone(),
            requantize,
            own_kernels,
            isa: None,
            pool: None,
            known: HashMap::new(),
        }
    }

    /// Use the `isa` kernel set (already checked to be available) for the own kernels.
    pub(crate) fn set_isa(&mut self, isa: Isa) {
        self.isa = Some(isa);
    }

    /// Multiply with the own kernels on `pool`'s threads.
    pub(crate) fn set_pool(&mut self, pool: Arc<Pool>) {
        self.pool = Some(pool);
    }

    /// The CPU representation of a weight matrix (see the module docs), requantized when asked.
    pub(crate) fn cpu_qtensor(&self, raw: RawTensor) -> Result<Arc<QTensor>> {
        let qt = raw.into_cpu_qtensor()?;
        match self.requantize {
            Some(wanted) if wanted != qt.dtype() => {
                let (_, k) = qt.shape().dims2()?;
                let dtype = requant_fallback(wanted, k);
                if dtype == qt.dtype() {
                    return Ok(Arc::new(qt));
                }
                if !k.is_multiple_of(dtype.block_size()) {
                    return Err(LlmError::Unsupported(format!(
                        "cannot requantize a weight with rows of {k} values to {dtype:?} \
                         (block size {})",
                        dtype.block_size()
                    )));
                }
                let dense = qt.dequantize(&Device::Cpu)?;
                Ok(Arc::new(QTensor::quantize(&dense, dtype)?))
            }
            _ => Ok(Arc::new(qt)),
        }
    }

    /// Builds a linear layer. On CPU every weight becomes a `QTensor` (see the module docs);
    /// elsewhere float weights are dequantized to dense f32 tensors.
    pub(crate) fn linear(&mut self, raw: RawTensor, bias: Option<Tensor>) -> Result<Linear> {
        if self.device.is_cpu() {
            let qt = self.cpu_qtensor(raw)?;
            return self.shared(qt, bias);
        }
        let dims = raw.dims();
        let bias_len = bias.as_ref().map_or(0, |b| b.elem_count());
        let weight = match raw {
            // `weights: f32`: dense on the device (cuBLAS), quantized files included.
            RawTensor::Quant(q) if self.requantize == Some(GgmlDType::F32) => {
                QMatMul::Tensor(q.dequantize(&self.device)?)
            }
            RawTensor::Quant(q) => QMatMul::from_qtensor(q)?,
            RawTensor::Dense(t) => {
                QMatMul::Tensor(t.to_dtype(DType::F32)?.to_device(&self.device)?)
            }
        };
        let bytes = match &weight {
            QMatMul::QTensor(q) => q.storage_size_in_bytes(),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        };
        Ok(Linear {
            weight,
            bias,
            // Not batch invariant on the GPU: candle's quantized CUDA matmul picks its kernel by row
            // count and rounds activations to q8_1, and on an H200 greedy speculative output of a
            // Q4_1 verifier drifted from the verifier's own at clear margins — also with chunks
            // split row by row, so the cause is not (only) the row count. Dense f32 weights
            // (`weights: f32`) were lossless there; the LLM module warns about the rest.
            split_rows: false,
            own: None,
            bias_host: None,
            bytes: bytes + bias_len * 4,
            params: dims.iter().product::<usize>() + bias_len,
        })
    }

    /// A CPU linear layer over an existing `QTensor` (shared with a tied embedding).
    pub(crate) fn shared(&mut self, qt: Arc<QTensor>, bias: Option<Tensor>) -> Result<Linear> {
        let bias_len = bias.as_ref().map_or(0, |b| b.elem_count());
        let bias_host = bias.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
        let (n, k) = qt.shape().dims2()?;
        if self.own_kernels {
            if let Some(own) = QMatrix::new(qt.dtype(), n, k, qt.data()?.into_owned()) {
                let own = match self.isa {
                    Some(isa) => own.with_isa(isa),
                    None => own,
                };
                let own = match &self.pool {
                    Some(pool) => own.with_pool(pool.clone()),
                    None => own,
                };
                // Batch invariant by construction (see the `ianvs-kernels` crate): no probe, no row split.
                return Ok(Linear {
                    params: n * k + bias_len,
                    bytes: own.size_in_bytes() + bias_len * 4,
                    weight: QMatMul::QTensor(qt),
                    own: Some(own),
                    bias,
                    bias_host,
                    split_rows: false,
                });
            }
        }
        let split_rows = self.needs_row_split(&qt)?;
        Ok(Linear {
            params: qt.shape().elem_count() + bias_len,
            bytes: qt.storage_size_in_bytes() + bias_len * 4,
            weight: QMatMul::QTensor(qt),
            own: None,
            bias,
            bias_host,
            split_rows,
        })
    }

    /// Whether multiplying several rows at once gives other bits than one row at a time.
    fn needs_row_split(&mut self, qt: &Arc<QTensor>) -> Result<bool> {
        let (n, k) = qt.shape().dims2()?;
        let key = (qt.dtype(), n, k);
        if let Some(&split) = self.known.get(&key) {
            return Ok(split);
        }
        let mm = QMatMul::QTensor(probe_slice(qt)?);
        let rows = PROBE_ROWS[PROBE_ROWS.len() - 1];
        // Deterministic pseudo-random activations in [-1, 1) (xorshift; no RNG dependency).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<f32> = (0..rows * k)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let lhs = Tensor::from_vec(data, (rows, k), &Device::Cpu)?;
        // Compare every row of each chunk with the same row multiplied alone (a kernel switch
        // changes every row, a tail or tile handled differently changes some); the probe runs
        // on a slice of the output rows, so checking them all is cheap.
        let mut singles: HashMap<usize, Vec<f32>> = HashMap::new();
        let mut split = false;
        'probe: for m in PROBE_ROWS {
            let batched = mm.forward(&lhs.narrow(0, 0, m)?)?.to_vec2::<f32>()?;
            for (r, row) in batched.iter().enumerate() {
                let single = match singles.entry(r) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(
                        mm.forward(&lhs.narrow(0, r, 1)?)?
                            .flatten_all()?
                            .to_vec1::<f32>()?,
                    ),
                };
                if row
                    .iter()
                    .zip(single)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
                {
                    split = true;
                    break 'probe;
                }
            }
        }
        self.known.insert(key, split);
        Ok(split)
    }
}

/// Output rows a probe keeps: enough for every column tile and quad the kernels use.
const PROBE_OUT_ROWS: usize = 64;

/// The first output rows of `qt`, as many as keep `n` modulo the kernels' tile widths (4, 8
/// and 16 columns), so the probe takes the same code paths as the whole matrix at a fraction
/// of the cost (a 150k-token output head would otherwise cost seconds at every load).
fn probe_slice(qt: &Arc<QTensor>) -> Result<Arc<QTensor>> {
    let (n, k) = qt.shape().dims2()?;
    let keep = PROBE_OUT_ROWS + n % 16;
    if keep >= n {
        return Ok(qt.clone());
    }
    let dtype = qt.dtype();
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    let data = qt.data()?;
    let slice = candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &data[..keep * row_bytes],
        vec![keep, k],
        &Device::Cpu,
    )?;
    Ok(Arc::new(slice))
}

/// The rows `ids` (in that order) of a `[n, k]` CPU weight, same type, bytes copied as they
/// are: each output of the new matrix is the same dot product as before (a drafter's trimmed
/// output head).
pub(crate) fn select_rows(qt: &QTensor, ids: &[u32]) -> Result<QTensor> {
    let (n, k) = qt.shape().dims2()?;
    let dtype = qt.dtype();
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    let data = qt.data()?;
    let mut out = Vec::with_capacity(ids.len() * row_bytes);
    for &id in ids {
        let id = id as usize;
        if id >= n {
            return Err(LlmError::Unsupported(format!(
                "row {id} of a weight with {n} rows"
            )));
        }
        out.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
    }
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        &out,
        vec![ids.len(), k],
        &Device::Cpu,
    )?)
}

/// `y = x Wᵀ (+ b)` with `W` stored `[out, in]`, quantized or float.
pub(crate) struct Linear {
    weight: QMatMul,
    /// The same weights for the runtime's own kernels, which then do every product.
    own: Option<QMatrix>,
    bias: Option<Tensor>,
    /// The bias on the host, for [`Linear::forward_host`] with the own kernels.
    bias_host: Option<Vec<f32>>,
    /// Run chunks of `2..=MAX_INVARIANT_ROWS` rows one row at a time (see module docs).
    split_rows: bool,
    bytes: usize,
    params: usize,
}

impl Linear {
    /// [`Linear::forward`] on host rows (CPU): `x` holds `n` rows of `in` values; returns `n`
    /// rows of `out`. With the own kernels no tensor is built; the bits are those of `forward`.
    pub(crate) fn forward_host(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let Some(own) = &self.own else {
            let k = x.len() / n.max(1);
            let t = Tensor::from_slice(x, (n, k), &Device::Cpu)?;
            return Ok(self.forward(&t)?.flatten_all()?.to_vec1::<f32>()?);
        };
        let mut y = own.matmul(x, n);
        self.add_bias_host(&mut y);
        Ok(y)
    }

    /// [`Linear::forward_host`] of several layers on the same input (q/k/v, gate/up), with
    /// each layer's bits. Where every layer runs on the own kernels, the input is quantized
    /// once and the products share one pool dispatch ([`ianvs_kernels::matmul_many`], which
    /// itself multiplies one by one what cannot share); otherwise each layer runs alone.
    pub(crate) fn forward_host_many<const N: usize>(
        layers: [&Linear; N],
        x: &[f32],
        n: usize,
    ) -> Result<[Vec<f32>; N]> {
        let owns: Option<Vec<&QMatrix>> = layers.iter().map(|l| l.own.as_ref()).collect();
        let ys = match owns {
            Some(owns) => {
                let mut ys = ianvs_kernels::matmul_many(&owns, x, n);
                for (l, y) in layers.iter().zip(ys.iter_mut()) {
                    l.add_bias_host(y);
                }
                ys
            }
            None => layers
                .iter()
                .map(|l| l.forward_host(x, n))
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(ys
            .try_into()
            .expect("matmul_many returns one product per matrix"))
    }

    /// Adds the host bias to every row of `y` (own kernels).
    fn add_bias_host(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias_host {
            // The same single add per element as `broadcast_add`.
            for row in y.chunks_exact_mut(b.len()) {
                for (v, &bj) in row.iter_mut().zip(b) {
                    *v += bj;
                }
            }
        }
    }

    /// `x`: `[n, in]` → `[n, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let n = x.dim(0)?;
        let y = if let Some(own) = &self.own {
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let out = own.matmul(&xs, n);
            Tensor::from_vec(out, (n, own.rows()), &Device::Cpu)?
        } else if self.split_rows && n > 1 && n <= MAX_INVARIANT_ROWS {
            let rows = (0..n)
                .map(|i| Ok(self.weight.forward(&x.narrow(0, i, 1)?)?))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&rows, 0)?
        } else {
            self.weight.forward(&x)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    pub(crate) fn weight_bytes(&self) -> usize {
        self.bytes
    }

    /// The weight as a `QTensor` (every CPU layer has one; see the module docs).
    pub(crate) fn qtensor(&self) -> Option<&Arc<QTensor>> {
        match &self.weight {
            QMatMul::QTensor(q) => Some(q),
            _ => None,
        }
    }

    pub(crate) fn num_parameters(&self) -> usize {
        self.params
    }

    #[cfg(test)]
    pub(crate) fn splits_rows(&self) -> bool {
        self.split_rows
    }
}

/// Token embedding table: quantized rows are dequantized on lookup (CPU), or a dense table.
pub(crate) enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    /// `ids`: `[n]` u32 on the model device → `[n, hidden]` f32.
    pub(crate) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(q) => q.embedding(ids)?,
            Self::Dense(t) => t.index_select(ids, 0)?,
        })
    }

    pub(crate) fn num_parameters(&self) -> usize {
        match self {
            Self::Quantized(q) => q.shape().elem_count(),
            Self::Dense(t) => t.elem_count(),
        }
    }

    /// Bytes of one row, which is all a token reads from the table.
    pub(crate) fn row_bytes(&self) -> Result<usize> {
        Ok(match self {
            Self::Quantized(q) => {
                let (rows, _) = q.shape().dims2()?;
                q.storage_size_in_bytes() / rows.max(1)
            }
            Self::Dense(t) => t.dim(1)? * t.dtype().size_in_bytes(),
        })
    }
}

/// Root-mean-square layer norm with a learned scale.
pub(crate) struct RmsNorm {
    weight: Tensor,
    /// The scale on the host, for [`RmsNorm::forward_host`] (CPU models only).
    host: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor, eps: f64) -> Self {
        let host = if weight.device().is_cpu() {
            weight.to_vec1::<f32>().unwrap_or_default()
        } else {
            Vec::new()
        };
        Self {
            weight,
            host,
            eps: eps as f32,
        }
    }

    /// [`RmsNorm::forward`] on host rows, into `out` (same length as `x`), vectorized on the
    /// `isa` kernels (`ianvs_kernels::ops::rms_norm`: the sum of squares in a fixed lane
    /// layout, so a row's bits depend neither on the other rows nor on the kernel set; they
    /// differ from candle's sequential sum by float rounding).
    pub(crate) fn forward_host(&self, isa: ianvs_kernels::Isa, x: &[f32], out: &mut [f32]) {
        ianvs_kernels::ops::rms_norm(isa, x, &self.host, self.eps, out);
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }

    pub(crate) fn num_parameters(&self) -> usize {
        self.weight.elem_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(rows: usize, cols: usize, seed: u64) -> Result<Tensor> {
        let mut s = seed | 1;
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
    }

    /// Layers multiplied together (`forward_host_many`: q/k/v with biases, a Q4_K_M-like mix,
    /// a float layer that runs on candle) give each layer's own `forward_host` bits.
    #[test]
    fn fused_layers_equal_separate_layers_bit_for_bit() -> Result<()> {
        let k = 512;
        let x = random(9, k, 17)?.flatten_all()?.to_vec1::<f32>()?;
        let mut factory = LinearFactory::new(&Device::Cpu, None, true);
        let mut layer = |dtype: GgmlDType, n: usize, seed: u64, bias: bool| -> Result<Linear> {
            let q = QTensor::quantize(&random(n, k, seed)?, dtype)?;
            let b = if bias {
                Some(random(1, n, seed + 100)?.flatten_all()?)
            } else {
                None
            };
            factory.linear(RawTensor::Quant(q), b)
        };
        let sets = [
            [
                layer(GgmlDType::Q4_1, 64, 1, true)?,
                layer(GgmlDType::Q4_1, 32, 2, true)?,
                layer(GgmlDType::Q4_1, 32, 3, true)?,
            ],
            [
                layer(GgmlDType::Q4K, 64, 4, false)?,
                layer(GgmlDType::Q4K, 32, 5, false)?,
                layer(GgmlDType::Q6K, 32, 6, false)?,
            ],
            [
                layer(GgmlDType::Q8_0, 64, 7, true)?,
                layer(GgmlDType::F32, 32, 8, true)?,
                layer(GgmlDType::Q5K, 32, 9, false)?,
            ],
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (si, [a, b, c]) in sets.iter().enumerate() {
            for n in [1, 2, 9] {
                let x = &x[..n * k];
                let fused = Linear::forward_host_many([a, b, c], x, n)?;
                for (l, got) in [a, b, c].into_iter().zip(&fused) {
                    assert_eq!(bits(got), bits(&l.forward_host(x, n)?), "set {si} rows {n}");
                }
            }
        }
        Ok(())
    }

    /// Every weight type must give bit-identical rows whether multiplied alone or in a chunk,
    /// either natively or through the row split the probe switched on.
    #[test]
    fn linear_is_batch_invariant_for_all_types() -> Result<()> {
        let types = [
            GgmlDType::F32,
            GgmlDType::F16,
            GgmlDType::BF16,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ];
        let w = random(64, 512, 7)?;
        let x = random(9, 512, 11)?;
        let mut factory = LinearFactory::new(&Device::Cpu, None, true);
        for dtype in types {
            let q = QTensor::quantize(&w, dtype)?;
            let lin = factory.linear(RawTensor::Quant(q), None)?;
            let all = lin.forward(&x)?.to_vec2::<f32>()?;
            for (i, row) in all.iter().enumerate() {
                let one = lin.forward(&x.narrow(0, i, 1)?)?.to_vec2::<f32>()?;
                assert_eq!(
                    row.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    one[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{dtype:?} row {i} (split_rows = {})",
                    lin.splits_rows()
                );
            }
        }
        Ok(())
    }
}
