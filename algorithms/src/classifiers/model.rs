//! [`Classifier`]: parameters, forward pass, training, prediction and Fisher information.

use super::conv::ConvReluPool;
use super::optim::Optimizer;
use super::{Architecture, ClassifierError, EpochStats, Result, TrainConfig, TrainStats};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Samples per forward pass in [`Classifier::predict_proba`]; bounds the activation memory
/// (for 28×28 inputs the first CNN layer's im2col patches hold `256 · 25 · 784` floats, 20 MB).
const PREDICT_BATCH: usize = 256;

/// An extra loss term for [`Classifier::train_with_penalty`]: given the live parameters (as
/// [`Classifier::vars`] returns them), a scalar tensor built from them, e.g. [`ewc_penalty`].
pub type Penalty<'a> = dyn FnMut(&[(String, Tensor)]) -> candle_core::Result<Tensor> + 'a;

/// An MLP or LeNet-like CNN over `(channels, height, width)` inputs with `num_classes` outputs.
///
/// The parameters are candle [`Var`]s kept in a fixed order (see [`Classifier::vars`]). The
/// type is `Send + Sync`: share it behind an `Arc` for concurrent inference; only training needs
/// `&mut self`.
pub struct Classifier {
    arch: Architecture,
    input_shape: (usize, usize, usize),
    num_classes: usize,
    /// Parameters in forward order, e.g. `conv1.weight, conv1.bias, …, fc2.bias`.
    params: Vec<(String, Var)>,
    /// The CNN's two convolutions (gather indices depend on the input size); `None` for MLPs.
    convs: Option<(ConvReluPool, ConvReluPool)>,
    device: Device,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("arch", &self.arch)
            .field("input_shape", &self.input_shape)
            .field("num_classes", &self.num_classes)
            .field("num_parameters", &self.num_parameters())
            .field("device", &self.device)
            .finish()
    }
}

/// Name, shape and fan-in of one parameter, in initialisation order.
struct ParamSpec {
    name: String,
    shape: Vec<usize>,
    fan_in: usize,
}

fn layer(specs: &mut Vec<ParamSpec>, name: &str, weight_shape: Vec<usize>) {
    let fan_in: usize = weight_shape[1..].iter().product();
    let out = weight_shape[0];
    specs.push(ParamSpec {
        name: format!("{name}.weight"),
        shape: weight_shape,
        fan_in,
    });
    specs.push(ParamSpec {
        name: format!("{name}.bias"),
        shape: vec![out],
        fan_in,
    });
}

/// Spatial size after the CNN's two conv/pool stages, or `None` when the input is too small:
/// conv5x5 with padding 2 keeps the size, pooling halves it, the unpadded conv5x5 takes 4 off.
fn cnn_feature_size(side: usize) -> Option<usize> {
    let after_conv2 = (side / 2).checked_sub(4)?;
    let after_pool2 = after_conv2 / 2;
    (after_pool2 > 0).then_some(after_pool2)
}

fn param_specs(
    arch: &Architecture,
    (c, h, w): (usize, usize, usize),
    num_classes: usize,
) -> Result<Vec<ParamSpec>> {
    let invalid = |msg: String| Err(ClassifierError::InvalidModel(msg));
    if c == 0 || h == 0 || w == 0 {
        return invalid(format!(
            "input_shape (channels, height, width) must be positive, got ({c}, {h}, {w})"
        ));
    }
    if num_classes == 0 {
        return invalid("num_classes must be at least 1".into());
    }
    let mut specs = Vec::new();
    match arch {
        Architecture::Mlp { hidden } => {
            if let Some(i) = hidden.iter().position(|&h| h == 0) {
                return invalid(format!("MLP hidden layer {i} has width 0"));
            }
            let mut fan_in = c * h * w;
            for (i, &width) in hidden.iter().chain([num_classes].iter()).enumerate() {
                layer(&mut specs, &format!("fc{i}"), vec![width, fan_in]);
                fan_in = width;
            }
        }
        Architecture::Cnn {
            conv_channels: (c1, c2),
            fc_hidden,
        } => {
            if *c1 == 0 || *c2 == 0 || *fc_hidden == 0 {
                return invalid(format!(
                    "CNN conv_channels ({c1}, {c2}) and fc_hidden {fc_hidden} must be positive"
                ));
            }
            let (Some(fh), Some(fw)) = (cnn_feature_size(h), cnn_feature_size(w)) else {
                return invalid(format!(
                    "the CNN needs inputs of at least 12x12 pixels (two 5x5 convolutions and two \
                     2x2 poolings), got {h}x{w}; use an MLP for smaller images"
                ));
            };
            layer(&mut specs, "conv1", vec![*c1, c, 5, 5]);
            layer(&mut specs, "conv2", vec![*c2, *c1, 5, 5]);
            layer(&mut specs, "fc1", vec![*fc_hidden, c2 * fh * fw]);
            layer(&mut specs, "fc2", vec![num_classes, *fc_hidden]);
        }
    }
    Ok(specs)
}

/// Checks a row-major batch (whole samples, finite values) and returns its number of samples.
///
/// NaN must be caught here: ReLU maps NaN to 0, so a NaN pixel would not show in the loss but
/// would silently turn weights into NaN through the gradient.
fn sample_count(x: &[f32], features: usize) -> Result<usize> {
    if !x.len().is_multiple_of(features) {
        return Err(ClassifierError::InputLength {
            len: x.len(),
            features,
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(ClassifierError::NonFinite {
            sample: i / features,
            position: i % features,
            value: x[i],
        });
    }
    Ok(x.len() / features)
}

impl Classifier {
    /// A freshly initialised classifier.
    ///
    /// `input_shape` is `(channels, height, width)`; the MLP flattens it. Weights and biases are
    /// drawn like PyTorch's defaults for `Linear`/`Conv2d` (Kaiming-uniform with a = √5, i.e.
    /// U(±1/√fan_in)) from a `ChaCha8Rng` seeded with `seed`, so one seed always gives
    /// bit-identical weights.
    pub fn new(
        arch: Architecture,
        input_shape: (usize, usize, usize),
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let specs = param_specs(&arch, input_shape, num_classes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::with_capacity(specs.len());
        for spec in specs {
            let bound = 1.0 / (spec.fan_in as f32).sqrt();
            let len: usize = spec.shape.iter().product();
            let values: Vec<f32> = (0..len).map(|_| rng.random_range(-bound..bound)).collect();
            let tensor = Tensor::from_vec(values, spec.shape, device)?;
            params.push((spec.name, Var::from_tensor(&tensor)?));
        }
        Self::assemble(arch, input_shape, num_classes, params, device)
    }

    /// A classifier with the given parameter values (used by `load` and `try_clone`): every
    /// parameter of the architecture must be present with its exact shape.
    pub(crate) fn from_tensors(
        arch: Architecture,
        input_shape: (usize, usize, usize),
        num_classes: usize,
        mut get: impl FnMut(&str) -> Option<Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let specs = param_specs(&arch, input_shape, num_classes)?;
        let mut params = Vec::with_capacity(specs.len());
        for spec in specs {
            let Some(t) = get(&spec.name) else {
                return Err(ClassifierError::Parameter {
                    name: spec.name,
                    reason: "missing".into(),
                });
            };
            if t.dims() != spec.shape.as_slice() {
                return Err(ClassifierError::Parameter {
                    reason: format!("expected shape {:?}, got {:?}", spec.shape, t.dims()),
                    name: spec.name,
                });
            }
            // A fresh storage, so the new classifier never shares weights with the source.
            let t = t.to_dtype(DType::F32)?.to_device(device)?.copy()?;
            params.push((spec.name, Var::from_tensor(&t)?));
        }
        Self::assemble(arch, input_shape, num_classes, params, device)
    }

    fn assemble(
        arch: Architecture,
        input_shape: (usize, usize, usize),
        num_classes: usize,
        params: Vec<(String, Var)>,
        device: &Device,
    ) -> Result<Self> {
        let convs = match arch {
            Architecture::Mlp { .. } => None,
            Architecture::Cnn { .. } => {
                let (_, h, w) = input_shape;
                let conv1 = ConvReluPool::new(h, w, 2, device)?;
                let conv2 = match &conv1 {
                    Some(c1) => ConvReluPool::new(c1.out_size().0, c1.out_size().1, 0, device)?,
                    None => None,
                };
                // param_specs has already rejected inputs too small for these.
                let (Some(conv1), Some(conv2)) = (conv1, conv2) else {
                    return Err(ClassifierError::InvalidModel(format!(
                        "input {h}x{w} is too small for the CNN"
                    )));
                };
                Some((conv1, conv2))
            }
        };
        Ok(Self {
            arch,
            input_shape,
            num_classes,
            params,
            convs,
            device: device.clone(),
        })
    }

    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    pub fn input_shape(&self) -> (usize, usize, usize) {
        self.input_shape
    }

    /// Values per sample: `channels · height · width`.
    pub fn input_len(&self) -> usize {
        let (c, h, w) = self.input_shape;
        c * h * w
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of scalar weights and biases.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Size of all parameters as f32, i.e. what sending the model over a link costs.
    pub fn parameter_bytes(&self) -> usize {
        self.num_parameters() * std::mem::size_of::<f32>()
    }

    /// The live parameters by name, in forward order (`fc0.weight`, `fc0.bias`, … for the MLP;
    /// `conv1.*, conv2.*, fc1.*, fc2.*` for the CNN; weights are `[out, in]` /
    /// `[out, in, 5, 5]`).
    ///
    /// These tensors *are* the variables: a loss built from them has gradients (this is what a
    /// penalty for [`Classifier::train_with_penalty`] needs), and they change when the model
    /// trains. For frozen values use [`Classifier::snapshot`].
    pub fn vars(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Deep copies of the parameters, detached from the model (for EWC anchors and snapshots).
    pub fn snapshot(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect()
    }

    /// Overwrites parameters with the given values (e.g. from [`Classifier::snapshot`]). Names
    /// must exist and shapes match; parameters not listed keep their values. Nothing is changed
    /// when any entry is invalid.
    pub fn set_vars(&mut self, values: &[(String, Tensor)]) -> Result<()> {
        let mut targets = Vec::with_capacity(values.len());
        for (name, t) in values {
            let Some((_, var)) = self.params.iter().find(|(n, _)| n == name) else {
                return Err(ClassifierError::Parameter {
                    name: name.clone(),
                    reason: format!(
                        "no such parameter in this {}; it has {}",
                        self.arch,
                        self.param_names().join(", ")
                    ),
                });
            };
            if t.dims() != var.dims() {
                return Err(ClassifierError::Parameter {
                    name: name.clone(),
                    reason: format!("expected shape {:?}, got {:?}", var.dims(), t.dims()),
                });
            }
            targets.push((var, t.to_dtype(DType::F32)?.to_device(&self.device)?));
        }
        for (var, t) in targets {
            var.set(&t)?;
        }
        Ok(())
    }

    fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// A `VarMap` holding this model's variables (shared, not copied), for code written against
    /// candle-nn's `VarBuilder`/`VarMap` conventions.
    pub fn var_map(&self) -> VarMap {
        let map = VarMap::new();
        {
            let mut data = map.data().lock().unwrap_or_else(|e| e.into_inner());
            for (n, v) in &self.params {
                data.insert(n.clone(), v.clone());
            }
        }
        map
    }

    /// A deep copy: same architecture and weight values, separate storage.
    pub fn try_clone(&self) -> Result<Self> {
        let values = self.snapshot()?;
        Self::from_tensors(
            self.arch.clone(),
            self.input_shape,
            self.num_classes,
            |name| {
                values
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.clone())
            },
            &self.device,
        )
    }

    /// Tensors to run the forward pass with: the variables themselves when gradients are
    /// needed, otherwise detached views of the same storage (no autograd graph is recorded).
    fn weights(&self, track: bool) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, v)| {
                if track {
                    v.as_tensor().clone()
                } else {
                    v.as_tensor().detach()
                }
            })
            .collect()
    }

    /// Logits `[b, num_classes]` for a `[b, c·h·w]` batch.
    fn forward(&self, w: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
        let linear = |i: usize| Linear::new(w[i].clone(), Some(w[i + 1].clone()));
        match &self.arch {
            Architecture::Mlp { hidden } => {
                let mut h = x.clone();
                for i in 0..hidden.len() {
                    h = linear(2 * i).forward(&h)?.relu()?;
                }
                linear(2 * hidden.len()).forward(&h)
            }
            Architecture::Cnn { .. } => {
                let (c, height, width) = self.input_shape;
                let Some((conv1, conv2)) = &self.convs else {
                    candle_core::bail!("CNN classifier without convolution plans");
                };
                let b = x.dim(0)?;
                // The conv stages work on [channels, pixels, batch] (see `conv.rs`); back to
                // [batch, channels·pixels] before fc1 so that fc1.weight has PyTorch's column
                // order.
                let h = x.reshape((b, c, height * width))?.permute((1, 2, 0))?;
                let h = conv1.forward(&h, &w[0], &w[1])?;
                let h = conv2.forward(&h, &w[2], &w[3])?;
                let (c2, pixels, _) = h.dims3()?;
                let h = h.permute((2, 0, 1))?.reshape((b, c2 * pixels))?;
                let h = linear(4).forward(&h)?.relu()?;
                linear(6).forward(&h)
            }
        }
    }

    /// Softmax probabilities, row-major `[n, num_classes]`, for row-major `[n, c·h·w]` inputs.
    /// Runs in batches of 256 samples. An empty input gives an empty output.
    pub fn predict_proba(&self, x: &[f32]) -> Result<Vec<f32>> {
        let features = self.input_len();
        let n = sample_count(x, features)?;
        let w = self.weights(false);
        let mut out = Vec::with_capacity(n * self.num_classes);
        for chunk in x.chunks(PREDICT_BATCH * features) {
            let b = chunk.len() / features;
            let xb = Tensor::from_slice(chunk, (b, features), &self.device)?;
            let probs = candle_nn::ops::softmax_last_dim(&self.forward(&w, &xb)?)?;
            out.extend(probs.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Probabilities `[num_classes]` for one sample of exactly `c·h·w` values (per-sample
    /// latency timing).
    pub fn predict_one(&self, x: &[f32]) -> Result<Vec<f32>> {
        let features = self.input_len();
        if x.len() != features {
            return Err(ClassifierError::SampleLength {
                len: x.len(),
                features,
            });
        }
        self.predict_proba(x)
    }

    /// The most probable class of each sample.
    pub fn predict(&self, x: &[f32]) -> Result<Vec<u32>> {
        super::argmax_rows(&self.predict_proba(x)?, self.num_classes)
    }

    /// Checks `x`/`y` and returns the number of samples.
    fn check_labelled(&self, x: &[f32], y: &[u32]) -> Result<usize> {
        let n = sample_count(x, self.input_len())?;
        if n != y.len() {
            return Err(ClassifierError::LabelCount {
                samples: n,
                labels: y.len(),
            });
        }
        if let Some((index, &label)) = y
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.num_classes)
        {
            return Err(ClassifierError::LabelOutOfRange {
                index,
                label,
                num_classes: self.num_classes,
            });
        }
        Ok(n)
    }

    /// Trains on row-major `x` (`[n, c·h·w]`, already scaled, e.g. pixels / 255) with labels
    /// `y`, minimising the mean cross-entropy.
    ///
    /// Each epoch visits the samples in an order shuffled by a `ChaCha8Rng` seeded with
    /// `cfg.seed`. `on_batch(done, total)` runs after every batch with the samples done so far in
    /// the epoch and returns whether to go on (false stops with [`ClassifierError::Cancelled`]);
    /// the epoch, `on_epoch` after every epoch. Calling `train` again continues from the current
    /// weights (fine-tuning); each call starts a fresh optimiser state (momentum/Adam moments).
    pub fn train(
        &mut self,
        x: &[f32],
        y: &[u32],
        cfg: &TrainConfig,
        on_batch: &mut dyn FnMut(usize, usize) -> bool,
        on_epoch: &mut dyn FnMut(&EpochStats),
    ) -> Result<TrainStats> {
        self.train_inner(x, y, cfg, None, on_batch, on_epoch)
    }

    /// [`Classifier::train`] with an extra term added to every batch's loss:
    /// `loss = cross_entropy + penalty(&vars)`, where `vars` are the live parameters as given by
    /// [`Classifier::vars`] and the penalty must return a scalar built from them (so that it has
    /// gradients), e.g. [`ewc_penalty`]. [`EpochStats::loss`] still reports the cross-entropy.
    pub fn train_with_penalty(
        &mut self,
        x: &[f32],
        y: &[u32],
        cfg: &TrainConfig,
        penalty: &mut Penalty<'_>,
        on_batch: &mut dyn FnMut(usize, usize) -> bool,
        on_epoch: &mut dyn FnMut(&EpochStats),
    ) -> Result<TrainStats> {
        self.train_inner(x, y, cfg, Some(penalty), on_batch, on_epoch)
    }

    fn train_inner(
        &mut self,
        x: &[f32],
        y: &[u32],
        cfg: &TrainConfig,
        mut penalty: Option<&mut Penalty<'_>>,
        on_batch: &mut dyn FnMut(usize, usize) -> bool,
        on_epoch: &mut dyn FnMut(&EpochStats),
    ) -> Result<TrainStats> {
        let n = self.check_labelled(x, y)?;
        if n == 0 {
            return Err(ClassifierError::Empty("train on"));
        }
        if cfg.batch_size == 0 {
            return Err(ClassifierError::InvalidTrainConfig(
                "batch_size must be at least 1".into(),
            ));
        }
        let vars: Vec<Var> = self.params.iter().map(|(_, v)| v.clone()).collect();
        let mut optimizer = Optimizer::new(vars, cfg)?;
        let named = self.vars();
        let w: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
        let features = self.input_len();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<usize> = (0..n).collect();
        let mut xb = Vec::with_capacity(cfg.batch_size.min(n) * features);
        let mut yb = Vec::with_capacity(cfg.batch_size.min(n));
        let start = Instant::now();
        let mut epochs = Vec::with_capacity(cfg.epochs);
        for epoch in 1..=cfg.epochs {
            let epoch_start = Instant::now();
            order.shuffle(&mut rng);
            let mut loss_sum = 0.0;
            let mut done = 0;
            for (batch, idx) in order.chunks(cfg.batch_size).enumerate() {
                xb.clear();
                yb.clear();
                for &i in idx {
                    xb.extend_from_slice(&x[i * features..(i + 1) * features]);
                    yb.push(y[i]);
                }
                let xt = Tensor::from_slice(&xb, (idx.len(), features), &self.device)?;
                let yt = Tensor::from_slice(&yb, idx.len(), &self.device)?;
                let ce = candle_nn::loss::cross_entropy(&self.forward(&w, &xt)?, &yt)?;
                let ce_value = f64::from(ce.to_scalar::<f32>()?);
                let loss = match penalty.as_mut() {
                    Some(penalty) => {
                        let p = penalty(&named)?;
                        if p.elem_count() != 1 {
                            return Err(ClassifierError::PenaltyShape(p.dims().to_vec()));
                        }
                        (ce + p.to_dtype(DType::F32)?.reshape(())?)?
                    }
                    None => ce,
                };
                let loss_value = f64::from(loss.to_scalar::<f32>()?);
                if !loss_value.is_finite() {
                    return Err(ClassifierError::Diverged {
                        epoch,
                        batch: batch + 1,
                        loss: loss_value,
                    });
                }
                optimizer.step(&loss.backward()?)?;
                loss_sum += ce_value * idx.len() as f64;
                done += idx.len();
                if !on_batch(done, n) {
                    return Err(ClassifierError::Cancelled);
                }
            }
            let stats = EpochStats {
                epoch,
                loss: loss_sum / n as f64,
                seconds: epoch_start.elapsed().as_secs_f64(),
            };
            on_epoch(&stats);
            epochs.push(stats);
        }
        Ok(TrainStats {
            epochs,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Diagonal of the empirical Fisher information, `mean_i (∂ log p(y_i | x_i) / ∂θ)²`, one
    /// tensor per parameter (same names and shapes as [`Classifier::vars`], all ≥ 0), for EWC.
    ///
    /// Uses per-sample gradients of at most `max_samples` samples spread evenly over the data
    /// (data is often sorted by class, so the first rows would not be representative).
    pub fn fisher_diagonal(
        &self,
        x: &[f32],
        y: &[u32],
        max_samples: usize,
    ) -> Result<Vec<(String, Tensor)>> {
        let n = self.check_labelled(x, y)?;
        let m = n.min(max_samples);
        if m == 0 {
            return Err(ClassifierError::Empty(
                "compute the Fisher information from",
            ));
        }
        let features = self.input_len();
        let w = self.weights(true);
        let mut sums: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<_>>()?;
        for k in 0..m {
            // Evenly spaced sample indices: k·n/m for k in 0..m.
            let i = k * n / m;
            let xt = Tensor::from_slice(
                &x[i * features..(i + 1) * features],
                (1, features),
                &self.device,
            )?;
            let yt = Tensor::from_slice(&y[i..=i], 1, &self.device)?;
            // cross_entropy = −log p(y|x) for a batch of one; squaring removes the sign.
            let nll = candle_nn::loss::cross_entropy(&self.forward(&w, &xt)?, &yt)?;
            let grads = nll.backward()?;
            for ((_, var), sum) in self.params.iter().zip(sums.iter_mut()) {
                if let Some(g) = grads.get(var) {
                    *sum = (&*sum + g.sqr()?)?;
                }
            }
        }
        let scale = 1.0 / m as f64;
        self.params
            .iter()
            .zip(sums)
            .map(|((name, _), sum)| Ok((name.clone(), (sum * scale)?)))
            .collect()
    }
}

/// The EWC penalty `λ/2 · Σ_k F_k · (θ_k − θ*_k)²` (Kirkpatrick et al. 2017), for
/// [`Classifier::train_with_penalty`]: `vars` are the live parameters passed to the penalty,
/// `anchor` the parameters after the previous task ([`Classifier::snapshot`]) and `fisher` their
/// Fisher diagonal ([`Classifier::fisher_diagonal`]). Parameters are matched by name; ones
/// missing from `anchor` or `fisher` are not penalised.
pub fn ewc_penalty(
    vars: &[(String, Tensor)],
    anchor: &[(String, Tensor)],
    fisher: &[(String, Tensor)],
    lambda: f64,
) -> candle_core::Result<Tensor> {
    let find = |set: &[(String, Tensor)], name: &str| {
        set.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone())
    };
    let Some((_, first)) = vars.first() else {
        candle_core::bail!("ewc_penalty: no parameters given");
    };
    let mut total = Tensor::zeros((), DType::F32, first.device())?;
    for (name, theta) in vars {
        let (Some(star), Some(f)) = (find(anchor, name), find(fisher, name)) else {
            continue;
        };
        let term = (f * (theta - star)?.sqr()?)?.sum_all()?;
        total = (total + term)?;
    }
    total * (lambda / 2.0)
}

#[cfg(test)]
mod tests {
    use super::super::OptimizerKind;
    use super::*;

    fn mlp(seed: u64) -> Classifier {
        let arch = Architecture::Mlp { hidden: vec![5] };
        Classifier::new(arch, (1, 2, 2), 3, seed, &Device::Cpu).unwrap()
    }

    /// Three separable clusters in 4 dimensions.
    fn toy_data() -> (Vec<f32>, Vec<u32>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..60u32 {
            let class = i % 3;
            let jitter = (i as f32 * 0.37).sin() * 0.1;
            let mut row = [jitter; 4];
            row[class as usize] += 1.0;
            x.extend_from_slice(&row);
            y.push(class);
        }
        (x, y)
    }

    fn cfg(optimizer: OptimizerKind, epochs: usize, learning_rate: f64) -> TrainConfig {
        TrainConfig {
            epochs,
            learning_rate,
            batch_size: 8,
            optimizer,
            seed: 1,
        }
    }

    #[test]
    fn classifier_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Classifier>();
    }

    #[test]
    fn shapes_and_counts() {
        let m = mlp(0);
        // 4→5 (20+5) and 5→3 (15+3).
        assert_eq!(m.num_parameters(), 43);
        assert_eq!(m.parameter_bytes(), 172);
        let names: Vec<String> = m.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"]);
        let cnn = Architecture::Cnn {
            conv_channels: (2, 3),
            fc_hidden: 4,
        };
        let c = Classifier::new(cnn, (1, 28, 28), 10, 0, &Device::Cpu).unwrap();
        // conv1 2·25+2, conv2 3·2·25+3, fc1 4·(3·5·5)+4, fc2 10·4+10.
        assert_eq!(c.num_parameters(), 52 + 153 + 304 + 50);
        // Initial bound is 1/sqrt(fan_in).
        for (name, t) in m.vars() {
            let bound = if name.starts_with("fc0") {
                0.5
            } else {
                1.0 / 5f32.sqrt()
            };
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
        }
    }

    #[test]
    fn probabilities_sum_to_one() {
        let m = mlp(3);
        let p = m
            .predict_proba(&[0.1, 0.2, 0.3, 0.4, 1.0, 0.0, 0.0, 0.0])
            .unwrap();
        assert_eq!(p.len(), 6);
        for row in p.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert_eq!(
            m.predict_one(&[0.1, 0.2, 0.3, 0.4]).unwrap(),
            p[..3].to_vec()
        );
        assert!(m.predict_proba(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_optimizer_learns_the_toy_problem() {
        let (x, y) = toy_data();
        for opt in [
            OptimizerKind::Sgd { momentum: 0.9 },
            OptimizerKind::Sgd { momentum: 0.0 },
            OptimizerKind::Adam,
            OptimizerKind::AdamW { weight_decay: 0.01 },
        ] {
            let lr = if matches!(opt, OptimizerKind::Sgd { .. }) {
                0.2
            } else {
                0.05
            };
            let mut m = mlp(7);
            let stats = m
                .train(
                    &x,
                    &y,
                    &cfg(opt.clone(), 30, lr),
                    &mut |_, _| true,
                    &mut |_| {},
                )
                .unwrap();
            let first = stats.epochs.first().unwrap().loss;
            let last = stats.epochs.last().unwrap().loss;
            assert!(last < first * 0.5, "{opt:?}: {first} -> {last}");
            assert_eq!(m.predict(&x).unwrap(), y, "{opt:?}");
        }
    }

    #[test]
    fn progress_callbacks_report_every_batch_and_epoch() {
        let (x, y) = toy_data();
        let mut m = mlp(0);
        let mut batches = Vec::new();
        let mut epochs = Vec::new();
        m.train(
            &x,
            &y,
            &TrainConfig {
                batch_size: 25,
                ..cfg(OptimizerKind::Adam, 2, 0.01)
            },
            &mut |done, total| {
                batches.push((done, total));
                true
            },
            &mut |s| epochs.push(s.epoch),
        )
        .unwrap();
        assert_eq!(
            batches,
            [(25, 60), (50, 60), (60, 60), (25, 60), (50, 60), (60, 60)]
        );
        assert_eq!(epochs, [1, 2]);
    }

    #[test]
    fn penalty_pulls_weights_to_anchor() {
        let (x, y) = toy_data();
        let mut free = mlp(0);
        let mut held = mlp(0);
        let anchor = held.snapshot().unwrap();
        let ones: Vec<(String, Tensor)> = anchor
            .iter()
            .map(|(n, t)| (n.clone(), t.ones_like().unwrap()))
            .collect();
        let c = cfg(OptimizerKind::Adam, 20, 0.05);
        free.train(&x, &y, &c, &mut |_, _| true, &mut |_| {})
            .unwrap();
        held.train_with_penalty(
            &x,
            &y,
            &c,
            &mut |vars| ewc_penalty(vars, &anchor, &ones, 1000.0),
            &mut |_, _| true,
            &mut |_| {},
        )
        .unwrap();
        let dist = |m: &Classifier| {
            let p = ewc_penalty(&m.vars(), &anchor, &ones, 2.0).unwrap();
            p.to_scalar::<f32>().unwrap()
        };
        assert!(
            dist(&held) < dist(&free) * 0.1,
            "{} vs {}",
            dist(&held),
            dist(&free)
        );
        // A non-scalar penalty is an error.
        let err = held
            .train_with_penalty(
                &x,
                &y,
                &c,
                &mut |vars| Ok(vars[1].1.clone()),
                &mut |_, _| true,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, ClassifierError::PenaltyShape(_)), "{err}");
    }

    #[test]
    fn snapshot_is_frozen_and_set_vars_restores() {
        let (x, y) = toy_data();
        let mut m = mlp(0);
        let before = m.snapshot().unwrap();
        let p_before = m.predict_proba(&x).unwrap();
        m.train(
            &x,
            &y,
            &cfg(OptimizerKind::Adam, 2, 0.05),
            &mut |_, _| true,
            &mut |_| {},
        )
        .unwrap();
        assert_ne!(m.predict_proba(&x).unwrap(), p_before);
        m.set_vars(&before).unwrap();
        assert_eq!(m.predict_proba(&x).unwrap(), p_before);
        let bad = vec![("fc9.weight".to_string(), before[0].1.clone())];
        assert!(m.set_vars(&bad).is_err());
        let bad = vec![("fc0.weight".to_string(), before[1].1.clone())];
        assert!(m.set_vars(&bad).is_err());
    }

    #[test]
    fn clone_is_deep() {
        let (x, y) = toy_data();
        let m = mlp(0);
        let mut c = m.try_clone().unwrap();
        assert_eq!(c.predict_proba(&x).unwrap(), m.predict_proba(&x).unwrap());
        c.train(
            &x,
            &y,
            &cfg(OptimizerKind::Adam, 1, 0.05),
            &mut |_, _| true,
            &mut |_| {},
        )
        .unwrap();
        assert_ne!(c.predict_proba(&x).unwrap(), m.predict_proba(&x).unwrap());
        assert_eq!(
            m.predict_proba(&x).unwrap(),
            mlp(0).predict_proba(&x).unwrap()
        );
    }

    #[test]
    fn divergence_and_non_finite_input_are_errors() {
        let (mut x, y) = toy_data();
        let mut m = mlp(0);
        let err = m
            .train(
                &x,
                &y,
                &cfg(OptimizerKind::Sgd { momentum: 0.0 }, 1, 1e30),
                &mut |_, _| true,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(
            matches!(err, ClassifierError::Diverged { epoch: 1, .. }),
            "{err}"
        );
        x[5] = f32::NAN;
        let mut m = mlp(0);
        let before = m.snapshot().unwrap();
        let err = m
            .train(
                &x,
                &y,
                &cfg(OptimizerKind::Adam, 1, 0.01),
                &mut |_, _| true,
                &mut |_| {},
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClassifierError::NonFinite {
                    sample: 1,
                    position: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(m.predict_proba(&x).is_err());
        // Nothing was trained.
        let after = m.snapshot().unwrap();
        for ((_, a), (_, b)) in before.iter().zip(&after) {
            let diff = (a - b).unwrap().abs().unwrap().sum_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
    }

    #[test]
    fn bad_models_and_configs_are_errors() {
        let dev = Device::Cpu;
        let small_cnn = Architecture::Cnn {
            conv_channels: (4, 8),
            fc_hidden: 16,
        };
        let err = Classifier::new(small_cnn.clone(), (1, 8, 8), 10, 0, &dev)
            .err()
            .unwrap();
        assert!(err.to_string().contains("12x12"), "{err}");
        assert!(Classifier::new(small_cnn, (1, 12, 12), 10, 0, &dev).is_ok());
        let mlp0 = Architecture::Mlp { hidden: vec![0] };
        assert!(Classifier::new(mlp0, (1, 2, 2), 3, 0, &dev).is_err());
        let ok = Architecture::Mlp { hidden: vec![] };
        assert!(Classifier::new(ok.clone(), (0, 2, 2), 3, 0, &dev).is_err());
        assert!(Classifier::new(ok, (1, 2, 2), 0, 0, &dev).is_err());

        let (x, y) = toy_data();
        let mut m = mlp(0);
        for bad in [
            TrainConfig {
                batch_size: 0,
                ..cfg(OptimizerKind::Adam, 1, 0.01)
            },
            cfg(OptimizerKind::Adam, 1, 0.0),
            cfg(OptimizerKind::Adam, 1, f64::NAN),
            cfg(OptimizerKind::Sgd { momentum: 1.0 }, 1, 0.1),
            cfg(OptimizerKind::AdamW { weight_decay: -1.0 }, 1, 0.1),
        ] {
            let err = m
                .train(&x, &y, &bad, &mut |_, _| true, &mut |_| {})
                .unwrap_err();
            assert!(
                matches!(err, ClassifierError::InvalidTrainConfig(_)),
                "{err}"
            );
        }
    }
}
