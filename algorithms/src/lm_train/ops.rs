//! Fused CPU ops with hand-written backward passes for the two hot spots of training:
//! cross-entropy over the vocabulary and the causal softmax of attention.
//!
//! Composed from candle's basic ops, each costs a dozen full passes over a large tensor, forward
//! and backward (cross-entropy over `[4096 positions, 4096 ids]` took 1.8 s of a 2.5 s step on
//! two cores); fused, each is one pass forward and one backward. The maths is the textbook one:
//! - cross-entropy: `loss_r = logsumexp(x_r) − x_r[t_r]`, `∂loss_r/∂x_r = softmax(x_r) − onehot(t_r)`;
//! - softmax: `∂L/∂s = p ⊙ (g − Σ g⊙p)`, here with the 1/√d scale and the causal mask folded in.
//!
//! Rows are split over the available cores (the result does not depend on the split: each row
//! is computed alone, in a fixed order). CPU only: training runs on the CPU.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::error::Result;

fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected an f32 tensor");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f(first_row_index, rows_of_input, rows_of_output)` over row blocks on all cores.
fn par_rows(
    input: &[f32],
    output: &mut [f32],
    in_width: usize,
    out_width: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    let rows = input.len().checked_div(in_width).unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Small tensors are not worth a thread.
    if threads <= 1 || input.len() < 1 << 16 {
        f(0, input, output);
        return;
    }
    let per = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (i, (inp, out)) in input
            .chunks(per * in_width)
            .zip(output.chunks_mut(per * out_width))
            .enumerate()
        {
            let f = &f;
            s.spawn(move || f(i * per, inp, out));
        }
    });
}

/// Max and Σexp(x − max) of a row.
fn row_max_sum(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = row.iter().map(|&x| (x - max).exp()).sum();
    (max, sum)
}

/// Per-row cross-entropy of logits `[rows, vocab]` against `targets` (one id per row).
struct CrossEntropy {
    targets: Vec<u32>,
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, vocab) = layout.shape().dims2()?;
        let x = contiguous_f32(storage, layout, self.name())?;
        if self.targets.len() != rows {
            candle_core::bail!(
                "cross-entropy: {} targets for {rows} rows",
                self.targets.len()
            );
        }
        if let Some(&t) = self.targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("cross-entropy: target id {t} is outside the vocabulary of {vocab}");
        }
        let mut out = vec![0f32; rows];
        par_rows(x, &mut out, vocab, 1, |r0, xs, out| {
            for (i, (row, o)) in xs.chunks_exact(vocab).zip(out.iter_mut()).enumerate() {
                let (max, sum) = row_max_sum(row);
                *o = sum.ln() + max - row[self.targets[r0 + i] as usize];
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = arg.contiguous()?.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &CrossEntropyGrad {
                targets: self.targets.clone(),
            },
        )?;
        Ok(Some(grad))
    }
}

/// `g_r · (softmax(x_r) − onehot(t_r))`.
struct CrossEntropyGrad {
    targets: Vec<u32>,
}

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, vocab) = l1.shape().dims2()?;
        let x = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let mut out = vec![0f32; rows * vocab];
        par_rows(x, &mut out, vocab, vocab, |r0, xs, out| {
            for (i, (row, o)) in xs
                .chunks_exact(vocab)
                .zip(out.chunks_exact_mut(vocab))
                .enumerate()
            {
                let r = r0 + i;
                let (max, sum) = row_max_sum(row);
                let scale = g[r] / sum;
                for (o, &v) in o.iter_mut().zip(row) {
                    *o = (v - max).exp() * scale;
                }
                o[self.targets[r] as usize] -= g[r];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Mean next-token cross-entropy (nats) of `logits` `[rows, vocab]` (f32, CPU) against
/// `targets` `[rows]` (u32), with a fused backward pass.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_vec1::<u32>()?;
    let losses = logits.contiguous()?.apply_op1(CrossEntropy { targets })?;
    Ok(losses.mean_all()?)
}

/// Softmax over the last dimension of attention scores `[.., t, t]` after scaling by `scale`,
/// with key `j` masked out of query row `i` when `j > i` (causal).
struct CausalSoftmax {
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let t = *dims.last().unwrap_or(&0);
        if dims.len() < 2 || dims[dims.len() - 2] != t {
            candle_core::bail!("causal softmax expects [.., t, t] scores, got {dims:?}");
        }
        let s = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; s.len()];
        let scale = self.scale;
        par_rows(s, &mut out, t, t, |r0, xs, out| {
            for (i, (row, o)) in xs.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
                let visible = (r0 + i) % t + 1;
                let max = row[..visible]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
                let mut sum = 0f32;
                for (o, &v) in o[..visible].iter_mut().zip(row) {
                    *o = (v * scale - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                for o in o[..visible].iter_mut() {
                    *o *= inv;
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = res
            .contiguous()?
            .apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad { scale: self.scale })?;
        Ok(Some(grad))
    }
}

/// `scale · p ⊙ (g − Σ g⊙p)` row by row (masked entries have p = 0 and stay 0).
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let t = *l1.shape().dims().last().unwrap_or(&1);
        let p = contiguous_f32(s1, l1, self.name())?;
        let g = contiguous_f32(s2, l2, self.name())?;
        let mut out = vec![0f32; p.len()];
        let scale = self.scale;
        par_rows(p, &mut out, t, t, |r0, ps, out| {
            for (i, (prow, o)) in ps.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
                let at = (r0 + i) * t;
                let grow = &g[at..at + t];
                let dot: f32 = prow.iter().zip(grow).map(|(p, g)| p * g).sum();
                for ((o, &p), &g) in o.iter_mut().zip(prow).zip(grow) {
                    *o = scale * p * (g - dot);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Causal attention probabilities from raw scores `q·kᵀ` `[.., t, t]` (f32, CPU): softmax of
/// `scale · scores` over keys `0..=i` for query `i`, zero above the diagonal.
pub fn causal_softmax(scores: &Tensor, scale: f32) -> Result<Tensor> {
    Ok(scores.contiguous()?.apply_op1(CausalSoftmax { scale })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < tol, "max difference {d}");
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn cross_entropy_matches_candle_forward_and_backward() {
        // Large enough to take the multi-threaded path.
        let (rows, vocab) = (70, 1000);
        let x = Var::from_tensor(&randn(&[rows, vocab], 1)).unwrap();
        let t: Vec<u32> = (0..rows as u32).map(|i| i * 37 % vocab as u32).collect();
        let t = Tensor::new(t.as_slice(), &Device::Cpu).unwrap();
        let fused = cross_entropy(x.as_tensor(), &t).unwrap();
        let reference = candle_nn::loss::cross_entropy(x.as_tensor(), &t).unwrap();
        close(&fused, &reference, 1e-5);
        let g1 = fused.backward().unwrap();
        let g2 = reference.backward().unwrap();
        close(
            g1.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
            1e-7,
        );
    }

    #[test]
    fn causal_softmax_matches_masked_softmax_forward_and_backward() {
        let t = 40;
        let s = Var::from_tensor(&randn(&[2, 3, t, t], 2)).unwrap();
        let scale = 0.3f32;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
        let reference = candle_nn::ops::softmax(
            &(s.as_tensor() * scale as f64)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap(),
            D::Minus1,
        )
        .unwrap();
        let fused = causal_softmax(s.as_tensor(), scale).unwrap();
        close(&fused, &reference, 1e-6);
        // A loss that weights every probability differently.
        let w = randn(&[2, 3, t, t], 3);
        let g1 = (&fused * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&reference * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            g1.get(s.as_tensor()).unwrap(),
            g2.get(s.as_tensor()).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn bad_targets_are_errors() {
        let x = randn(&[2, 5], 4);
        let t = Tensor::new(&[1u32, 5], &Device::Cpu).unwrap();
        assert!(cross_entropy(&x, &t).is_err());
    }
}
