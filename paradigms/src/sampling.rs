//! Turning logits into token choices (shared by every paradigm that decodes with a language
//! model; the LLM runtime re-exports it): the processed distribution, argmax and seeded sampling.
//!
//! [`probs`] returns the *full* processed probability vector (temperature, then top-k, then
//! top-p, renormalised) because exact speculative sampling (Leviathan et al. 2023, Chen et al.
//! 2023) compares the draft's and the target's processed distributions token by token:
//! accept a drafted `x` with probability `min(1, p(x) / q(x))`, otherwise resample from
//! [`residual`] `norm(max(0, p − q))`. Both models must therefore be processed with the same
//! [`SamplingParams`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bad sampling input (parameters out of range, malformed distributions).
#[derive(Debug, thiserror::Error)]
#[error("sampling: {0}")]
pub struct SamplingError(pub String);

pub type Result<T, E = SamplingError> = std::result::Result<T, E>;

/// How logits become a distribution. `temperature == 0` means greedy (one-hot argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables the filter.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p`; 1 disables it.
    pub top_p: f32,
    /// Seed of the sampler's ChaCha8 stream.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token (lowest id on ties).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Whether these parameters select greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges: `temperature >= 0` and finite, `0 < top_p <= 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Index of the largest logit; the lowest index wins ties, NaNs are never chosen (unless all
/// values are NaN, then 0). Errors on an empty slice.
pub fn argmax(logits: &[f32]) -> Result<u32> {
    if logits.is_empty() {
        return Err(SamplingError("argmax of an empty vector".into()));
    }
    let mut best = 0usize;
    let mut best_v = f32::NAN;
    for (i, &v) in logits.iter().enumerate() {
        // `>` keeps the first maximum; NaN never compares greater.
        if v > best_v || (best_v.is_nan() && !v.is_nan()) {
            best = i;
            best_v = v;
        }
    }
    Ok(best as u32)
}

/// The processed distribution over the whole vocabulary: temperature, then top-k, then top-p,
/// renormalised. Filtered tokens get exactly 0. `temperature == 0` gives a one-hot vector at
/// [`argmax`].
pub fn probs(logits: &[f32], params: &SamplingParams) -> Result<Vec<f32>> {
    params.validate()?;
    if logits.is_empty() {
        return Err(SamplingError(
            "cannot build a distribution over 0 tokens".into(),
        ));
    }
    if params.is_greedy() {
        let mut p = vec![0f32; logits.len()];
        p[argmax(logits)? as usize] = 1.0;
        return Ok(p);
    }
    // Softmax of logits / T in f64, so long vocabularies and tiny temperatures stay accurate.
    let t = f64::from(params.temperature);
    let max = logits
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(SamplingError("every logit is -inf or NaN".into()));
    }
    let mut p: Vec<f64> = logits
        .iter()
        .map(|&v| {
            if v.is_nan() {
                0.0
            } else {
                ((f64::from(v) - f64::from(max)) / t).exp()
            }
        })
        .collect();
    normalise(&mut p);

    let filter_k = params.top_k > 0 && params.top_k < p.len();
    let filter_p = params.top_p < 1.0;
    if filter_k || filter_p {
        // Most likely first; equal probabilities by lower id, so the cut is deterministic.
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let mut keep = if filter_k { params.top_k } else { p.len() };
        if filter_p {
            // Top-p is measured on the top-k distribution, renormalised.
            let kept_mass: f64 = order[..keep].iter().map(|&i| p[i]).sum();
            let mut cum = 0.0;
            for (rank, &i) in order[..keep].iter().enumerate() {
                cum += p[i] / kept_mass;
                if cum >= f64::from(params.top_p) {
                    keep = rank + 1;
                    break;
                }
            }
        }
        for &i in &order[keep..] {
            p[i] = 0.0;
        }
        normalise(&mut p);
    }
    Ok(p.into_iter().map(|x| x as f32).collect())
}

fn normalise(p: &mut [f64]) {
    let sum: f64 = p.iter().sum();
    if sum > 0.0 {
        for x in p.iter_mut() {
            *x /= sum;
        }
    }
}

/// Draws an index from `probs` (non-negative, summing to about 1) with one uniform draw.
pub fn sample(probs: &[f32], rng: &mut ChaCha8Rng) -> Result<u32> {
    let total: f64 = probs.iter().map(|&x| f64::from(x)).sum();
    let valid = probs.iter().all(|x| x.is_finite() && *x >= 0.0);
    if !valid || total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(SamplingError(
            "probabilities must be finite, non-negative and not all zero".into(),
        ));
    }
    let u = rng.random::<f64>() * total;
    let mut cum = 0.0;
    let mut last_nonzero = 0;
    for (i, &x) in probs.iter().enumerate() {
        if x > 0.0 {
            cum += f64::from(x);
            last_nonzero = i;
            if u < cum {
                return Ok(i as u32);
            }
        }
    }
    // Rounding left `u` just past the total: the last possible token.
    Ok(last_nonzero as u32)
}

/// `norm(max(0, p − q))`: where speculative sampling resamples after rejecting a draft token.
/// When `p == q` everywhere (nothing to resample from) it returns `p`.
pub fn residual(p: &[f32], q: &[f32]) -> Result<Vec<f32>> {
    if p.len() != q.len() {
        return Err(SamplingError(format!(
            "distributions differ in length: {} vs {}",
            p.len(),
            q.len()
        )));
    }
    let mut r: Vec<f64> = p
        .iter()
        .zip(q)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).max(0.0))
        .collect();
    if r.iter().sum::<f64>() <= 0.0 {
        return Ok(p.to_vec());
    }
    normalise(&mut r);
    Ok(r.into_iter().map(|x| x as f32).collect())
}

/// A seeded sampler: [`probs`] then [`sample`] (or [`argmax`] when greedy).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The random stream, for callers that draw their own acceptance tests.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// The next token for these logits.
    pub fn next(&mut self, logits: &[f32]) -> Result<u32> {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let p = probs(logits, &self.params)?;
        sample(&p, &mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn argmax_takes_lowest_id_on_ties_and_skips_nan() -> Result<()> {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0])?, 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN])?, 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3])?, 0);
        assert!(argmax(&[]).is_err());
        Ok(())
    }

    #[test]
    fn greedy_is_one_hot() -> Result<()> {
        assert_eq!(
            probs(&[0.5, 2.0, 2.0], &params(0.0, 0, 1.0))?,
            vec![0.0, 1.0, 0.0]
        );
        Ok(())
    }

    #[test]
    fn temperature_scales_logits() -> Result<()> {
        let ln2 = std::f32::consts::LN_2;
        // logits [0, ln 2] → softmax [1/3, 2/3]; at T = 0.5 → [1/5, 4/5].
        close(
            &probs(&[0.0, ln2], &params(1.0, 0, 1.0))?,
            &[1.0 / 3.0, 2.0 / 3.0],
        );
        close(&probs(&[0.0, ln2], &params(0.5, 0, 1.0))?, &[0.2, 0.8]);
        Ok(())
    }

    #[test]
    fn top_k_keeps_k_best_with_lowest_id_ties() -> Result<()> {
        // Probabilities proportional to 1, 2, 2, 4 (logits ln of those).
        let logits: Vec<f32> = [1.0f32, 2.0, 2.0, 4.0].iter().map(|x| x.ln()).collect();
        close(
            &probs(&logits, &params(1.0, 2, 1.0))?,
            &[0.0, 1.0 / 3.0, 0.0, 2.0 / 3.0],
        );
        close(
            &probs(&logits, &params(1.0, 1, 1.0))?,
            &[0.0, 0.0, 0.0, 1.0],
        );
        close(
            &probs(&logits, &params(1.0, 0, 1.0))?,
            &[1.0 / 9.0, 2.0 / 9.0, 2.0 / 9.0, 4.0 / 9.0],
        );
        Ok(())
    }

    #[test]
    fn top_p_keeps_smallest_prefix_reaching_mass() -> Result<()> {
        let logits: Vec<f32> = [0.1f32, 0.2, 0.3, 0.4].iter().map(|x| x.ln()).collect();
        // 0.4 < 0.5 → also 0.3: mass 0.7.
        close(
            &probs(&logits, &params(1.0, 0, 0.5))?,
            &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0],
        );
        // 0.4 alone reaches 0.4.
        close(
            &probs(&logits, &params(1.0, 0, 0.4))?,
            &[0.0, 0.0, 0.0, 1.0],
        );
        // top-k 3 first (0.2, 0.3, 0.4 → 2/9, 3/9, 4/9), then top-p 0.7 on that: 4/9 + 3/9 ≥ 0.7.
        close(
            &probs(&logits, &params(1.0, 3, 0.7))?,
            &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0],
        );
        Ok(())
    }

    #[test]
    fn invalid_params_are_errors() {
        assert!(probs(&[1.0], &params(-1.0, 0, 1.0)).is_err());
        assert!(probs(&[1.0], &params(1.0, 0, 0.0)).is_err());
        assert!(probs(&[1.0], &params(f32::NAN, 0, 1.0)).is_err());
        assert!(probs(&[], &params(1.0, 0, 1.0)).is_err());
        assert!(probs(&[f32::NEG_INFINITY, f32::NAN], &params(1.0, 0, 1.0)).is_err());
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_probs() -> Result<()> {
        let p = [0.1f32, 0.0, 0.6, 0.3];
        let draw = |seed| -> Result<Vec<u32>> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..2000).map(|_| sample(&p, &mut rng)).collect()
        };
        let a = draw(42)?;
        assert_eq!(a, draw(42)?);
        assert_ne!(a, draw(43)?);
        assert!(!a.contains(&1), "a zero-probability token was drawn");
        let freq = |id| a.iter().filter(|&&x| x == id).count() as f32 / a.len() as f32;
        assert!((freq(2) - 0.6).abs() < 0.05, "{}", freq(2));
        assert!((freq(3) - 0.3).abs() < 0.05, "{}", freq(3));
        Ok(())
    }

    #[test]
    fn sampler_uses_argmax_when_greedy() -> Result<()> {
        let mut s = Sampler::new(SamplingParams::greedy())?;
        assert_eq!(s.next(&[0.0, 5.0, 5.0])?, 1);
        let mut s = Sampler::new(params(1.0, 1, 1.0))?;
        assert_eq!(s.next(&[0.0, 1.0, 5.0])?, 2);
        Ok(())
    }

    #[test]
    fn residual_is_normalised_positive_part() -> Result<()> {
        close(
            &residual(&[0.5, 0.3, 0.2], &[0.2, 0.5, 0.3])?,
            &[1.0, 0.0, 0.0],
        );
        close(&residual(&[0.5, 0.5], &[0.5, 0.5])?, &[0.5, 0.5]);
        assert!(residual(&[1.0], &[0.5, 0.5]).is_err());
        Ok(())
    }
}
