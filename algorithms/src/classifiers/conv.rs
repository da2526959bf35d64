//! One stage of the CNN — 5×5 convolution, ReLU, 2×2 max-pooling — built from
//! `index_select` (im2col), one matmul and an argmax `gather`, so that training is fast on the
//! CPU.
//!
//! Why not `Tensor::conv2d` + `max_pool2d`: candle's backward pass computes the input gradient
//! of every convolution with `conv_transpose2d`, whose CPU kernel is a direct loop (≈110 ms per
//! 64-image MNIST batch and layer on 2 cores, ≈20 s per epoch), even for the first layer whose
//! input gradient is never used; and its `max_pool2d` backward scales gradients by 1/4 (it
//! multiplies by the share of maxima in the window instead of dividing by their count).
//!
//! Layout: activations are `[channels, height·width, batch]` ("CHWN"). With the batch innermost
//! every gather moves runs of `batch` contiguous floats, and the convolution is one large matmul
//! `[out, c·25] × [c·25, positions·batch]` with the kernel in PyTorch's `[out, c, 5, 5]` order —
//! no transposes, which candle's CPU backend copies slowly.
//!
//! Pooling first and adding the bias and ReLU afterwards gives the same values
//! (`max(relu(z + b)) = relu(max(z) + b)`, both are monotone) on a quarter of the elements. The
//! im2col columns are ordered pooling window by pooling window, so the four conv outputs of a
//! window are adjacent and the pooling is an argmax over one axis; outputs that the pooling would
//! drop (an odd last row or column) are never computed. Zero padding is an extra all-zero pixel
//! that out-of-image taps point at.

use candle_core::{Device, Result, Tensor};

/// Kernel side of the convolution.
const KERNEL: usize = 5;

/// `conv5x5(pad) → ReLU → maxpool2` over `[c, in_h·in_w, batch]` inputs; the gather indices
/// depend only on the input size and are computed once.
#[derive(Debug, Clone)]
pub(crate) struct ConvReluPool {
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    /// Whether some tap falls in the padding, i.e. the zero pixel must be appended.
    padded: bool,
    /// For every kernel offset, pooled position and window offset (in that nesting order), the
    /// input pixel `y·in_w + x`, or `in_h·in_w` (the zero pixel) for taps in the padding.
    patch_index: Tensor,
}

impl ConvReluPool {
    /// `None` when the input is too small to leave at least one pooled pixel.
    pub(crate) fn new(
        in_h: usize,
        in_w: usize,
        pad: usize,
        device: &Device,
    ) -> Result<Option<Self>> {
        let pooled = |side: usize| {
            (side + 2 * pad)
                .checked_sub(KERNEL - 1)
                .map(|conv| conv / 2)
        };
        let (Some(out_h @ 1..), Some(out_w @ 1..)) = (pooled(in_h), pooled(in_w)) else {
            return Ok(None);
        };
        let zero_pixel = (in_h * in_w) as u32;
        let mut index = Vec::with_capacity(KERNEL * KERNEL * out_h * out_w * 4);
        for ky in 0..KERNEL {
            for kx in 0..KERNEL {
                for py in 0..out_h {
                    for px in 0..out_w {
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            // Input coordinates of this tap, shifted by the padding.
                            let y = (2 * py + dy + ky).checked_sub(pad).filter(|&y| y < in_h);
                            let x = (2 * px + dx + kx).checked_sub(pad).filter(|&x| x < in_w);
                            index.push(match (y, x) {
                                (Some(y), Some(x)) => (y * in_w + x) as u32,
                                _ => zero_pixel,
                            });
                        }
                    }
                }
            }
        }
        let len = index.len();
        let padded = index.contains(&zero_pixel);
        Ok(Some(Self {
            in_h,
            in_w,
            out_h,
            out_w,
            padded,
            patch_index: Tensor::from_vec(index, len, device)?,
        }))
    }

    /// Pooled output size `(height, width)`.
    pub(crate) fn out_size(&self) -> (usize, usize) {
        (self.out_h, self.out_w)
    }

    /// `x`: `[c, in_h·in_w, b]`; `weight`: `[out, c, 5, 5]`; `bias`: `[out]`.
    /// Returns `[out, out_h·out_w, b]`.
    pub(crate) fn forward(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (c, hw, b) = x.dims3()?;
        if hw != self.in_h * self.in_w {
            candle_core::bail!(
                "conv planned for {}x{} inputs got {hw} pixels",
                self.in_h,
                self.in_w
            );
        }
        let out = weight.dim(0)?;
        let pooled = self.out_h * self.out_w;
        let x = if self.padded {
            let zero = Tensor::zeros((c, 1, b), x.dtype(), x.device())?;
            Tensor::cat(&[x, &zero], 1)?
        } else {
            x.clone()
        };
        // [c·25, positions·b]: row (c, ky, kx), column (pooled position, window offset, sample).
        let patches = x
            .contiguous()?
            .index_select(&self.patch_index, 1)?
            .reshape((c * KERNEL * KERNEL, pooled * 4 * b))?;
        let conv = weight
            .reshape((out, c * KERNEL * KERNEL))?
            .matmul(&patches)?
            .reshape((out, pooled, 4, b))?;
        // Max over the window as a gather, whose backward is a single scatter-add (candle's
        // `max` backward builds several broadcast masks and is ~3x slower here).
        let winner = conv.argmax_keepdim(2)?;
        conv.gather(&winner, 2)?
            .reshape((out, pooled, b))?
            .broadcast_add(&bias.reshape((out, 1, 1))?)?
            .relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 113) as f32 / 113.0 - 0.5) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// `[b, c, h, w]` → `[c, h·w, b]`.
    fn chwn(x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.dims4().unwrap();
        x.reshape((b, c, h * w))
            .unwrap()
            .permute((1, 2, 0))
            .unwrap()
    }

    /// `[c, h·w, b]` → `[b, c, h, w]`.
    fn nchw(x: &Tensor, (h, w): (usize, usize)) -> Tensor {
        let (c, _, b) = x.dims3().unwrap();
        x.permute((2, 0, 1)).unwrap().reshape((b, c, h, w)).unwrap()
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

    /// Reference: candle's NCHW `conv2d`, `relu`, then 2×2 max-pooling written with `max` over
    /// reshaped axes (candle's `max_pool2d` backward is not a usable reference, see above).
    fn reference(x: &Tensor, weight: &Tensor, bias: &Tensor, pad: usize) -> Tensor {
        let y = x
            .conv2d(weight, pad, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, (), 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let (b, c, h, w) = y.dims4().unwrap();
        let (h2, w2) = (h / 2, w / 2);
        y.narrow(2, 0, 2 * h2)
            .unwrap()
            .narrow(3, 0, 2 * w2)
            .unwrap()
            .reshape((b, c, h2, 2, w2, 2))
            .unwrap()
            .max(5)
            .unwrap()
            .max(3)
            .unwrap()
    }

    #[test]
    fn matches_conv2d_relu_maxpool_values_and_gradients() {
        let dev = Device::Cpu;
        for (h, w, pad) in [(9, 7, 2), (7, 6, 0), (12, 12, 2)] {
            let x = ramp(&[2, 3, h, w], 2.0);
            let weight = candle_core::Var::from_tensor(&ramp(&[4, 3, 5, 5], 0.4)).unwrap();
            let bias = candle_core::Var::from_tensor(&ramp(&[4], 1.0)).unwrap();
            let expected = reference(&x, weight.as_tensor(), bias.as_tensor(), pad);
            let block = ConvReluPool::new(h, w, pad, &dev).unwrap().unwrap();
            let ours = nchw(
                &block
                    .forward(&chwn(&x), weight.as_tensor(), bias.as_tensor())
                    .unwrap(),
                block.out_size(),
            );
            assert_eq!(ours.dims(), expected.dims(), "{h}x{w} pad {pad}");
            assert_eq!(
                block.out_size(),
                (ours.dim(2).unwrap(), ours.dim(3).unwrap())
            );
            assert!(max_abs_diff(&ours, &expected) < 1e-5);

            // A loss with a distinct weight per output, so every gradient entry differs.
            let coef = ramp(expected.dims(), 1.0);
            let loss = |y: &Tensor| (y * &coef).unwrap().sum_all().unwrap();
            let g_expected = loss(&expected).backward().unwrap();
            let g_ours = loss(&ours).backward().unwrap();
            for var in [&weight, &bias] {
                let (a, b) = (g_ours.get(var).unwrap(), g_expected.get(var).unwrap());
                assert!(max_abs_diff(a, b) < 1e-4, "{h}x{w} pad {pad}");
            }
        }
        // 6 - 4 = 2 conv rows pool to 1; 5 - 4 = 1 pools to nothing.
        assert!(ConvReluPool::new(6, 6, 0, &dev).unwrap().is_some());
        assert!(ConvReluPool::new(5, 6, 0, &dev).unwrap().is_none());
        assert!(ConvReluPool::new(3, 3, 0, &dev).unwrap().is_none());
    }

    /// The input gradient (needed by the first block's caller in the second block) too.
    #[test]
    fn input_gradient_matches_reference() {
        let x = candle_core::Var::from_tensor(&ramp(&[2, 3, 10, 9], 2.0)).unwrap();
        let weight = ramp(&[4, 3, 5, 5], 0.4);
        let bias = ramp(&[4], 1.0);
        let block = ConvReluPool::new(10, 9, 0, &Device::Cpu).unwrap().unwrap();
        let ours = nchw(
            &block.forward(&chwn(x.as_tensor()), &weight, &bias).unwrap(),
            block.out_size(),
        );
        let expected = reference(x.as_tensor(), &weight, &bias, 0);
        let coef = ramp(expected.dims(), 1.0);
        let loss = |y: &Tensor| (y * &coef).unwrap().sum_all().unwrap();
        let a = loss(&ours).backward().unwrap();
        let b = loss(&expected).backward().unwrap();
        assert!(max_abs_diff(a.get(&x).unwrap(), b.get(&x).unwrap()) < 1e-4);
    }
}
