//! Task prototypes: what identifies each task in the knowledge base. For every class of a task,
//! k-means centres of its samples (k-means++ seeding, Arthur & Vassilvitskii 2007; Lloyd
//! iterations), each with the principal directions of the samples it holds and a radius.
//!
//! A prototype is thus an affine subspace: a centre plus its top principal directions (with no
//! directions it is a plain centre). The distance of a sample to it is the norm of what the
//! subspace does not explain — the residual after projecting the centred sample onto it, as in
//! the subspace classifiers CLAFIC (Watanabe 1967) and SIMCA (Wold 1976). One mean per class
//! blurs the many ways a digit is written; its principal directions keep them, which separates
//! digits of unseen classes from known ones far better than the distance to a mean does.
//!
//! Unseen-task detection asks how far a sample is from every known prototype relative to that
//! prototype's radius (a quantile of its own samples' distances); task allocation asks which
//! task owns the nearest prototype (Sedna's task allocation by the nearest known task).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use ianvs_paradigms::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Lloyd iterations; k-means on a few hundred samples settles well before this.
const KMEANS_ITERS: usize = 15;
/// Subspace (block power) iterations for the principal directions.
const PCA_ITERS: usize = 15;
/// Below this many members a prototype's own quantile is noise: it takes its class's radius.
const MIN_MEMBERS_FOR_RADIUS: usize = 5;
/// A known task's prototypes are refit (and sent to the edge again) only once its samples have
/// grown by this share since the last fit: a handful of known-task samples flagged by mistake
/// does not change what identifies the task, and is not worth a download.
const REFIT_GROWTH: f64 = 0.25;

/// How prototypes are built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrototypeConfig {
    /// k-means centres per class.
    pub per_class: usize,
    /// Principal directions kept per prototype (0: a plain centre).
    pub subspace_dim: usize,
    /// A prototype's radius is this quantile of its own samples' distances.
    pub quantile: f64,
    pub seed: u64,
}

/// One prototype of one task.
#[derive(Debug, Clone)]
struct Prototype {
    centre: Vec<f32>,
    /// Orthonormal rows, `[k, dim]` (k may be 0).
    basis: Vec<f32>,
    radius: f32,
}

impl Prototype {
    fn floats(&self) -> usize {
        self.centre.len() + self.basis.len() + 1
    }

    /// Distances of the rows of `x` (`[n, dim]`) to this prototype's affine subspace.
    fn distances(&self, x: &Tensor) -> anyhow::Result<Vec<f32>> {
        let dim = self.centre.len();
        let c = Tensor::from_slice(&self.centre, (1, dim), x.device())?;
        let v = x.broadcast_sub(&c)?;
        let mut d2 = v.sqr()?.sum(1)?;
        if !self.basis.is_empty() {
            let b = Tensor::from_slice(&self.basis, (self.basis.len() / dim, dim), x.device())?;
            d2 = (d2 - v.matmul(&b.t()?)?.sqr()?.sum(1)?)?;
        }
        // Rounding can leave tiny negatives for samples inside the subspace.
        Ok(d2.clamp(0f32, f32::MAX)?.sqrt()?.to_vec1::<f32>()?)
    }
}

/// The nearest known prototype to one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// Task of the nearest prototype.
    pub task: usize,
    pub distance: f32,
    /// The smallest distance-to-radius ratio over all prototypes: ≤ 1 means the sample lies
    /// inside some prototype's radius.
    pub ratio: f32,
}

/// The prototypes of every known task, refit on all of a task's samples whenever more arrive.
#[derive(Debug, Clone)]
pub struct Prototypes {
    dim: usize,
    cfg: PrototypeConfig,
    tasks: BTreeMap<usize, Vec<Prototype>>,
    /// Every sample the cloud received, per task (the knowledge base's store).
    store: BTreeMap<usize, Dataset>,
    /// Samples each task's prototypes were last fit on.
    fitted_on: BTreeMap<usize, usize>,
}

impl Prototypes {
    pub fn new(dim: usize, cfg: PrototypeConfig) -> Self {
        Self {
            dim,
            cfg: PrototypeConfig {
                per_class: cfg.per_class.max(1),
                ..cfg
            },
            tasks: BTreeMap::new(),
            store: BTreeMap::new(),
            fitted_on: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn num_prototypes(&self) -> usize {
        self.tasks.values().map(Vec::len).sum()
    }

    /// Adds samples of `task` and refits its prototypes when the task is new or its samples grew
    /// by a quarter since the last fit. Returns the bytes of the task's new identification
    /// (centres, directions and radii as f32) that the edge must receive (0 when not refit).
    pub fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize> {
        anyhow::ensure!(
            samples.dim == self.dim,
            "samples have {} features, prototypes expect {}",
            samples.dim,
            self.dim
        );
        if samples.is_empty() {
            return Ok(0);
        }
        let (dim, cfg) = (self.dim, self.cfg);
        let store = self.store.entry(task).or_insert_with(|| Dataset {
            dim,
            ..Default::default()
        });
        store.features.extend_from_slice(&samples.features);
        store.labels.extend_from_slice(&samples.labels);
        let n = store.len();
        if self
            .fitted_on
            .get(&task)
            .is_some_and(|&f| (n as f64) < f as f64 * (1.0 + REFIT_GROWTH))
        {
            return Ok(0);
        }
        self.fitted_on.insert(task, n);
        let fitted = fit(
            store,
            PrototypeConfig {
                seed: cfg.seed ^ ((task as u64) << 32),
                ..cfg
            },
        )?;
        let bytes =
            fitted.iter().map(Prototype::floats).sum::<usize>() * std::mem::size_of::<f32>();
        self.tasks.insert(task, fitted);
        Ok(bytes)
    }

    /// For each sample of row-major `x`, the nearest prototype's task and the smallest
    /// distance-to-radius ratio. Errors when no task is known.
    pub fn nearest(&self, x: &[f32]) -> anyhow::Result<Vec<Nearest>> {
        anyhow::ensure!(!self.tasks.is_empty(), "no task is known yet");
        anyhow::ensure!(
            x.len().is_multiple_of(self.dim),
            "input is not whole samples of {} values",
            self.dim
        );
        let n = x.len() / self.dim;
        let mut out = vec![
            Nearest {
                task: 0,
                distance: f32::INFINITY,
                ratio: f32::INFINITY
            };
            n
        ];
        if n == 0 {
            return Ok(out);
        }
        let xt = Tensor::from_slice(x, (n, self.dim), &Device::Cpu)?;
        for (&task, protos) in &self.tasks {
            for p in protos {
                for (o, d) in out.iter_mut().zip(p.distances(&xt)?) {
                    if d < o.distance {
                        o.distance = d;
                        o.task = task;
                    }
                    o.ratio = o.ratio.min(d / p.radius);
                }
            }
        }
        Ok(out)
    }
}

/// Fits the prototypes of one task: per class, k-means centres, each with the principal
/// directions of its members and a radius.
///
/// The radius is measured out of sample: with enough members, the centre and directions are fit
/// on every other member and the radius is the quantile of the distances of the rest. Measured
/// on the samples that shaped the subspace it would be too small (the subspace explains them
/// best), and the edge would flag new samples of known tasks as unseen.
fn fit(data: &Dataset, cfg: PrototypeConfig) -> anyhow::Result<Vec<Prototype>> {
    let dim = data.dim;
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in data.labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let dev = Device::Cpu;
    let mut out = Vec::new();
    for (class, idx) in by_class {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| data.x(i).iter().copied())
            .collect();
        let seed = cfg.seed ^ u64::from(class);
        let (_, assign, _) = kmeans(&x, dim, cfg.per_class.min(idx.len()), seed)?;
        let k = assign.iter().max().map_or(0, |m| m + 1);
        let mut protos = Vec::with_capacity(k);
        let mut held_out: Vec<Vec<f32>> = Vec::with_capacity(k);
        for c in 0..k {
            let members: Vec<usize> = assign
                .iter()
                .enumerate()
                .filter(|(_, &a)| a == c)
                .map(|(i, _)| i)
                .collect();
            if members.is_empty() {
                continue;
            }
            let split = members.len() >= 2 * MIN_MEMBERS_FOR_RADIUS;
            let (fit_on, calibrate_on): (Vec<usize>, Vec<usize>) = if split {
                members.iter().partition(|&&i| i % 2 == 0)
            } else {
                (members.clone(), members.clone())
            };
            let rows = |ids: &[usize]| -> Vec<f32> {
                ids.iter()
                    .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                    .collect()
            };
            let fx = rows(&fit_on);
            let m = fit_on.len();
            let mut centre = vec![0f64; dim];
            for r in fx.chunks(dim) {
                for (a, &v) in centre.iter_mut().zip(r) {
                    *a += f64::from(v);
                }
            }
            let mut p = Prototype {
                centre: centre.iter().map(|v| (v / m as f64) as f32).collect(),
                basis: Vec::new(),
                radius: 1.0,
            };
            let kdim = cfg.subspace_dim.min(m.saturating_sub(1));
            if kdim > 0 {
                let ft = Tensor::from_slice(&fx, (m, dim), &dev)?;
                let centred = ft.broadcast_sub(&Tensor::from_slice(&p.centre, (1, dim), &dev)?)?;
                p.basis = principal_directions(
                    &centred,
                    kdim,
                    seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                )?;
            }
            let cx = rows(&calibrate_on);
            held_out.push(p.distances(&Tensor::from_slice(
                &cx,
                (calibrate_on.len(), dim),
                &dev,
            )?)?);
            protos.push(p);
        }
        let all: Vec<f32> = held_out.iter().flatten().copied().collect();
        let class_radius = quantile(&all, cfg.quantile);
        for (p, d) in protos.iter_mut().zip(&held_out) {
            let r = if d.len() >= MIN_MEMBERS_FOR_RADIUS {
                quantile(d, cfg.quantile)
            } else {
                class_radius
            };
            p.radius = if r.is_finite() { r.max(1e-6) } else { 1e-6 };
        }
        out.extend(protos);
    }
    Ok(out)
}

/// The top `k` principal directions (orthonormal rows `[k', dim]`, k' ≤ k) of the centred rows
/// `v` (`[m, dim]`), by block power iteration: `Q ← orth(Q·vᵀ·v)` from a seeded start.
pub fn principal_directions(v: &Tensor, k: usize, seed: u64) -> anyhow::Result<Vec<f32>> {
    let (_, dim) = v.dims2()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start: Vec<f32> = (0..k * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut q = orthonormalise(&Tensor::from_slice(&start, (k, dim), v.device())?)?;
    for _ in 0..PCA_ITERS {
        if q.dim(0)? == 0 {
            break;
        }
        q = orthonormalise(&q.matmul(&v.t()?)?.matmul(v)?)?;
    }
    Ok(q.flatten_all()?.to_vec1::<f32>()?)
}

/// Orthonormal rows spanning the rows of `b` (`[k, dim]`), in order; rows (numerically) in the
/// span of earlier ones are dropped. Cholesky QR, twice (CholQR2, Fukaya et al. 2014): the k×k
/// Gram matrix is factored in f64 on the host, the `[k, dim]` work stays in candle matmuls.
fn orthonormalise(b: &Tensor) -> anyhow::Result<Tensor> {
    let once = |b: &Tensor| -> anyhow::Result<Tensor> {
        let k = b.dim(0)?;
        if k == 0 {
            return Ok(b.clone());
        }
        // Unit rows first: the span is the same and the Gram matrix is far better conditioned
        // when the rows' lengths differ by orders of magnitude (power iteration scales them by
        // the eigenvalues).
        let b = &b.broadcast_div(&b.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-30f32, f32::MAX)?)?;
        let g: Vec<f64> = b
            .matmul(&b.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        // Cholesky of the Gram matrix over the rows kept so far: a row whose pivot (its norm left
        // after removing the earlier rows) is negligible is dependent and is dropped.
        let mut kept: Vec<usize> = Vec::with_capacity(k);
        let mut l: Vec<Vec<f64>> = Vec::with_capacity(k); // row a of L over the kept columns
        for i in 0..k {
            let mut row = Vec::with_capacity(kept.len() + 1);
            for (a, &j) in kept.iter().enumerate() {
                let s: f64 = (0..a).map(|c| row[c] * l[a][c]).sum();
                row.push((g[i * k + j] - s) / l[a][a]);
            }
            let pivot = g[i * k + i] - row.iter().map(|x| x * x).sum::<f64>();
            if pivot > 1e-10 * g[i * k + i].max(f64::MIN_POSITIVE) && pivot > 0.0 {
                row.push(pivot.sqrt());
                l.push(row);
                kept.push(i);
            }
        }
        let n = kept.len();
        // Q = L⁻¹ · B[kept]: invert the small triangle on the host, multiply in candle.
        let mut inv = vec![0f64; n * n];
        for c in 0..n {
            for r in c..n {
                let s: f64 = (c..r).map(|t| l[r][t] * inv[t * n + c]).sum();
                inv[r * n + c] = if r == c { 1.0 / l[r][r] } else { -s / l[r][r] };
            }
        }
        let inv = Tensor::from_vec(
            inv.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
            (n, n),
            b.device(),
        )?;
        let idx = Tensor::from_vec(
            kept.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
            n,
            b.device(),
        )?;
        Ok(inv.matmul(&b.index_select(&idx, 0)?)?)
    };
    once(&once(b)?)
}

/// Euclidean distances `[n, m]` (row-major) between the rows of `x` (`[n, dim]`) and of
/// `c` (`[m, dim]`), via `|x|² + |c|² − 2·x·cᵀ` on candle's matmul.
pub fn distances(x: &[f32], c: &[f32], dim: usize) -> anyhow::Result<Vec<f32>> {
    anyhow::ensure!(
        dim > 0 && x.len().is_multiple_of(dim) && c.len().is_multiple_of(dim),
        "distance inputs are not whole samples of {dim} values"
    );
    let (n, m) = (x.len() / dim, c.len() / dim);
    if n == 0 || m == 0 {
        return Ok(Vec::new());
    }
    let dev = Device::Cpu;
    let xt = Tensor::from_slice(x, (n, dim), &dev)?;
    let ct = Tensor::from_slice(c, (m, dim), &dev)?;
    let xx = xt.sqr()?.sum_keepdim(1)?; // [n, 1]
    let cc = ct.sqr()?.sum_keepdim(1)?.t()?; // [1, m]
    let xc = xt.matmul(&ct.t()?)?; // [n, m]
    let d2 = xx.broadcast_add(&cc)?.broadcast_sub(&(xc * 2.0)?)?;
    // Rounding can leave tiny negatives where a sample sits on a centre.
    Ok(d2
        .clamp(0f32, f32::MAX)?
        .sqrt()?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// k-means of the rows of `x`: (centres `[k, dim]`, each row's centre, each row's distance to
/// it). k-means++ seeding from a seeded `ChaCha8Rng`, so the result is reproducible.
pub fn kmeans(
    x: &[f32],
    dim: usize,
    k: usize,
    seed: u64,
) -> anyhow::Result<(Vec<f32>, Vec<usize>, Vec<f32>)> {
    let n = x.len() / dim;
    anyhow::ensure!(
        n > 0 && k > 0 && k <= n,
        "k-means needs 1 ≤ k ≤ samples (k = {k}, {n} samples)"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    // k-means++: each new centre is a sample drawn with probability ∝ squared distance to the
    // nearest centre so far.
    let mut centres: Vec<f32> = row(rng.random_range(0..n)).to_vec();
    let mut d2: Vec<f32> = distances(x, &centres, dim)?.iter().map(|d| d * d).collect();
    while centres.len() / dim < k {
        let total: f64 = d2.iter().map(|&v| f64::from(v)).sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            d2.iter()
                .position(|&v| {
                    u -= f64::from(v);
                    u <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let new = row(pick).to_vec();
        let nd = distances(x, &new, dim)?;
        for (a, b) in d2.iter_mut().zip(nd) {
            *a = a.min(b * b);
        }
        centres.extend(new);
    }
    let mut assign = vec![0usize; n];
    let mut dist = vec![0f32; n];
    for iter in 0..KMEANS_ITERS {
        let d = distances(x, &centres, dim)?;
        let mut changed = false;
        for (i, r) in d.chunks(k).enumerate() {
            let (best, bd) = r
                .iter()
                .enumerate()
                .fold(
                    (0, f32::INFINITY),
                    |(b, bd), (j, &v)| if v < bd { (j, v) } else { (b, bd) },
                );
            changed |= assign[i] != best;
            assign[i] = best;
            dist[i] = bd;
        }
        if iter > 0 && !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(v);
            }
        }
        for c in 0..k {
            // An empty cluster keeps its centre.
            if counts[c] > 0 {
                for (dst, s) in centres[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .zip(&sums[c * dim..(c + 1) * dim])
                {
                    *dst = (*s / counts[c] as f64) as f32;
                }
            }
        }
    }
    // Distances to the final centres.
    let d = distances(x, &centres, dim)?;
    for (i, r) in d.chunks(k).enumerate() {
        let (best, bd) =
            r.iter().enumerate().fold(
                (0, f32::INFINITY),
                |(b, bd), (j, &v)| if v < bd { (j, v) } else { (b, bd) },
            );
        assign[i] = best;
        dist[i] = bd;
    }
    Ok((centres, assign, dist))
}

/// Quantile `q` in [0, 1] with linear interpolation (numpy's default); NaN for no values.
pub fn quantile(v: &[f32], q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_a_direct_loop() {
        let x = [0.0, 0.0, 3.0, 4.0, 1.0, 1.0];
        let c = [0.0, 0.0, 1.0, 1.0];
        let d = distances(&x, &c, 2).unwrap();
        let want = [
            0.0,
            2f32.sqrt(),
            5.0,
            (4.0f32 + 9.0).sqrt(),
            2f32.sqrt(),
            0.0,
        ];
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{d:?}");
        }
    }

    #[test]
    fn kmeans_finds_two_clusters_and_is_seeded() {
        let mut x = Vec::new();
        for i in 0..20 {
            let j = (i as f32 * 0.7).sin() * 0.1;
            x.extend_from_slice(&[j, j]);
            x.extend_from_slice(&[10.0 + j, 10.0 - j]);
        }
        let (c, a, d) = kmeans(&x, 2, 2, 3).unwrap();
        // Alternate rows belong to different clusters.
        assert!(a.chunks(2).all(|p| p[0] != p[1]));
        assert!(d.iter().all(|&v| v < 0.5));
        let mut cs: Vec<f32> = c.chunks(2).map(|p| p[0]).collect();
        cs.sort_by(f32::total_cmp);
        assert!(cs[0].abs() < 0.1 && (cs[1] - 10.0).abs() < 0.1, "{c:?}");
        assert_eq!(kmeans(&x, 2, 2, 3).unwrap().0, c);
        assert!(kmeans(&x, 2, 0, 3).is_err());
    }

    #[test]
    fn prototypes_flag_far_samples_and_allocate_by_nearest_task() {
        let cfg = PrototypeConfig {
            per_class: 1,
            subspace_dim: 0,
            quantile: 0.95,
            seed: 0,
        };
        let mut p = Prototypes::new(2, cfg);
        let blob = |cx: f32, label: u32| {
            let mut d = Dataset {
                dim: 2,
                ..Default::default()
            };
            for i in 0..30 {
                let j = (i as f32 * 1.3).sin() * 0.5;
                d.features.extend_from_slice(&[cx + j, j]);
                d.labels.push(label);
            }
            d
        };
        assert!(p.nearest(&[0.0, 0.0]).is_err());
        let bytes = p.learn(0, &blob(0.0, 0)).unwrap();
        assert_eq!(bytes, (2 + 1) * 4);
        p.learn(1, &blob(10.0, 1)).unwrap();
        let n = p.nearest(&[0.1, 0.0, 9.9, 0.1, 5.0, 20.0]).unwrap();
        assert_eq!((n[0].task, n[1].task), (0, 1));
        assert!(n[0].ratio < 1.0 && n[1].ratio < 1.0);
        assert!(n[2].ratio > 10.0, "{n:?}");
    }

    #[test]
    fn subspace_prototypes_measure_the_distance_off_the_line() {
        // Samples along the line y = x (plus a little noise): one direction explains them, so
        // a point far along the line is close, one off the line is far.
        let mut d = Dataset {
            dim: 2,
            ..Default::default()
        };
        for i in 0..40 {
            let t = i as f32 / 4.0 - 5.0;
            let e = (i as f32 * 2.1).sin() * 0.05;
            d.features.extend_from_slice(&[t + e, t - e]);
            d.labels.push(0);
        }
        let mut p = Prototypes::new(
            2,
            PrototypeConfig {
                per_class: 1,
                subspace_dim: 1,
                quantile: 1.0,
                seed: 3,
            },
        );
        assert_eq!(p.learn(0, &d).unwrap(), (2 + 2 + 1) * 4);
        let n = p.nearest(&[20.0, 20.0, 1.0, -1.0]).unwrap();
        assert!(n[0].distance < 0.05, "{n:?}");
        assert!((n[1].distance - 2f32.sqrt()).abs() < 0.01, "{n:?}");
        let v =
            Tensor::from_slice(&[1.0f32, 1.0, -1.0, -1.0, 2.0, 2.0], (3, 2), &Device::Cpu).unwrap();
        let q = principal_directions(&v, 2, 0).unwrap();
        // Rank one: the second direction is dropped, the first is ±(1, 1)/√2.
        assert_eq!(q.len(), 2);
        assert!(
            (q[0].abs() - 0.5f32.sqrt()).abs() < 1e-4 && (q[0] - q[1]).abs() < 1e-4,
            "{q:?}"
        );
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0], 1.0), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
