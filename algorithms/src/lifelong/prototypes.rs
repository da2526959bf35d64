//! Task prototypes: what identifies each task in the knowledge base. For every class of a task,
//! k-means centres of its samples (k-means++ seeding, Arthur & Vassilvitskii 2007; Lloyd
//! iterations), each with a radius: a quantile of the distances of the samples it holds.
//!
//! Unseen-task detection asks how far a sample is from every known centre relative to that
//! centre's radius; task allocation asks which task owns the nearest centre (Sedna's task
//! allocation by nearest task, with several centres per class because one mean per class
//! blurs the shapes a digit comes in).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use ianvs_paradigms::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Lloyd iterations; k-means on a few hundred samples settles well before this.
const KMEANS_ITERS: usize = 15;
/// Below this many members a centre's own quantile is noise: it takes its class's radius.
const MIN_MEMBERS_FOR_RADIUS: usize = 5;

/// The centres of one task.
#[derive(Debug, Clone, Default)]
struct TaskPrototypes {
    /// Row-major `[k, dim]`.
    centres: Vec<f32>,
    radii: Vec<f32>,
}

/// The nearest known centre to one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// Task of the nearest centre (Euclidean).
    pub task: usize,
    pub distance: f32,
    /// The smallest distance-to-radius ratio over all centres: ≤ 1 means the sample lies inside
    /// some centre's radius.
    pub ratio: f32,
}

/// The prototypes of every known task, refit on all of a task's samples whenever more arrive.
#[derive(Debug, Clone)]
pub struct Prototypes {
    dim: usize,
    per_class: usize,
    quantile: f64,
    seed: u64,
    tasks: BTreeMap<usize, TaskPrototypes>,
    /// Every sample the cloud received, per task (the knowledge base's store).
    store: BTreeMap<usize, Dataset>,
}

impl Prototypes {
    pub fn new(dim: usize, per_class: usize, quantile: f64, seed: u64) -> Self {
        Self { dim, per_class: per_class.max(1), quantile, seed, tasks: BTreeMap::new(), store: BTreeMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn num_centres(&self) -> usize {
        self.tasks.values().map(|t| t.radii.len()).sum()
    }

    /// Adds samples of `task` and refits its prototypes. Returns the bytes of the task's new
    /// identification (centres and radii as f32) that the edge must receive.
    pub fn learn(&mut self, task: usize, samples: &Dataset) -> anyhow::Result<usize> {
        anyhow::ensure!(samples.dim == self.dim, "samples have {} features, prototypes expect {}", samples.dim, self.dim);
        if samples.is_empty() {
            return Ok(0);
        }
        let (dim, per_class, q, seed) = (self.dim, self.per_class, self.quantile, self.seed);
        let store = self.store.entry(task).or_insert_with(|| Dataset { dim, ..Default::default() });
        store.features.extend_from_slice(&samples.features);
        store.labels.extend_from_slice(&samples.labels);
        let fitted = fit(store, per_class, q, seed ^ ((task as u64) << 32))?;
        let bytes = (fitted.centres.len() + fitted.radii.len()) * std::mem::size_of::<f32>();
        self.tasks.insert(task, fitted);
        Ok(bytes)
    }

    /// For each sample of row-major `x`, the nearest centre's task and the smallest
    /// distance-to-radius ratio. Errors when no task is known.
    pub fn nearest(&self, x: &[f32]) -> anyhow::Result<Vec<Nearest>> {
        anyhow::ensure!(!self.tasks.is_empty(), "no task is known yet");
        let mut centres = Vec::new();
        let mut radii = Vec::new();
        let mut owner = Vec::new();
        for (&task, p) in &self.tasks {
            centres.extend_from_slice(&p.centres);
            radii.extend_from_slice(&p.radii);
            owner.extend(std::iter::repeat_n(task, p.radii.len()));
        }
        let d = distances(x, &centres, self.dim)?;
        let m = radii.len();
        Ok(d.chunks(m)
            .map(|row| {
                let (best, dist) = row.iter().enumerate().fold((0, f32::INFINITY), |(b, bd), (i, &v)| if v < bd { (i, v) } else { (b, bd) });
                let ratio = row.iter().zip(&radii).map(|(d, r)| d / r).fold(f32::INFINITY, f32::min);
                Nearest { task: owner[best], distance: dist, ratio }
            })
            .collect())
    }
}

/// Fits the centres of one task: k-means per class, a radius per centre.
fn fit(data: &Dataset, per_class: usize, q: f64, seed: u64) -> anyhow::Result<TaskPrototypes> {
    let dim = data.dim;
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in data.labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut out = TaskPrototypes::default();
    for (class, idx) in by_class {
        let x: Vec<f32> = idx.iter().flat_map(|&i| data.x(i).iter().copied()).collect();
        let seed = seed ^ u64::from(class);
        let (centres, assign, dist) = kmeans(&x, dim, per_class.min(idx.len()), seed)?;
        let k = centres.len() / dim;
        let class_radius = quantile(&dist, q);
        for c in 0..k {
            let own: Vec<f32> = dist.iter().zip(&assign).filter(|(_, &a)| a == c).map(|(d, _)| *d).collect();
            let r = if own.len() >= MIN_MEMBERS_FOR_RADIUS { quantile(&own, q) } else { class_radius };
            out.radii.push(r.max(1e-6));
        }
        out.centres.extend(centres);
    }
    Ok(out)
}

/// Euclidean distances `[n, m]` (row-major) between the rows of `x` (`[n, dim]`) and of
/// `c` (`[m, dim]`), via `|x|² + |c|² − 2·x·cᵀ` on candle's matmul.
pub fn distances(x: &[f32], c: &[f32], dim: usize) -> anyhow::Result<Vec<f32>> {
    anyhow::ensure!(dim > 0 && x.len() % dim == 0 && c.len() % dim == 0, "distance inputs are not whole samples of {dim} values");
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
    Ok(d2.clamp(0f32, f32::MAX)?.sqrt()?.flatten_all()?.to_vec1::<f32>()?)
}

/// k-means of the rows of `x`: (centres `[k, dim]`, each row's centre, each row's distance to
/// it). k-means++ seeding from a seeded `ChaCha8Rng`, so the result is reproducible.
pub fn kmeans(x: &[f32], dim: usize, k: usize, seed: u64) -> anyhow::Result<(Vec<f32>, Vec<usize>, Vec<f32>)> {
    let n = x.len() / dim;
    anyhow::ensure!(n > 0 && k > 0 && k <= n, "k-means needs 1 ≤ k ≤ samples (k = {k}, {n} samples)");
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
            d2.iter().position(|&v| {
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
            let (best, bd) = r.iter().enumerate().fold((0, f32::INFINITY), |(b, bd), (j, &v)| if v < bd { (j, v) } else { (b, bd) });
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
                for (dst, s) in centres[c * dim..(c + 1) * dim].iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *dst = (*s / counts[c] as f64) as f32;
                }
            }
        }
    }
    // Distances to the final centres.
    let d = distances(x, &centres, dim)?;
    for (i, r) in d.chunks(k).enumerate() {
        let (best, bd) = r.iter().enumerate().fold((0, f32::INFINITY), |(b, bd), (j, &v)| if v < bd { (j, v) } else { (b, bd) });
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
        let want = [0.0, 2f32.sqrt(), 5.0, (4.0f32 + 9.0).sqrt(), 2f32.sqrt(), 0.0];
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
        let mut p = Prototypes::new(2, 1, 0.95, 0);
        let blob = |cx: f32, label: u32| {
            let mut d = Dataset { dim: 2, ..Default::default() };
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
    fn quantile_interpolates() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0], 1.0), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
