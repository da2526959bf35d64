//! 95 % confidence intervals for metric values, computed from a case's per-sample records:
//! the Wilson score interval for metrics that are a share of the test samples (accuracy, edge
//! ratio; E. B. Wilson, "Probable inference, the law of succession, and statistical
//! inference", JASA 1927) and the percentile bootstrap over samples for everything else
//! (B. Efron & R. Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
//!
//! Which one applies is decided from the metric's own behaviour, not from its name, so the
//! metrics of every paradigm get an interval without declaring anything: the metric is
//! recomputed on bootstrap resamples of the records; when every resample yields a multiple of
//! 1/n in [0, 1] for a unitless metric, the metric is a share of the n samples and Wilson is
//! used; when the metric does not move at all and still computes on zero records, it does not
//! depend on the samples (a training time, a parameter count) and gets no interval.

use std::collections::BTreeMap;

use ianvs_paradigms::records::CaseOutput;
use serde::{Deserialize, Serialize};

use super::{percentile, MetricDef};

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Bootstrap resamples per metric; fewer for large record sets (see [`resamples_for`]).
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// How an interval was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntervalMethod {
    /// Wilson score interval of a share of n samples.
    Wilson,
    /// 2.5th–97.5th percentile of the metric over bootstrap resamples of the samples.
    Bootstrap,
}

impl IntervalMethod {
    pub fn describe(self) -> &'static str {
        match self {
            IntervalMethod::Wilson => "Wilson score interval over samples",
            IntervalMethod::Bootstrap => "percentile bootstrap over samples",
        }
    }
}

/// A 95 % confidence interval of one metric of one case.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub method: IntervalMethod,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    /// The smallest interval covering every run's interval: with `repeat: N` a metric's
    /// uncertainty is its spread over samples *and* over runs, and the envelope keeps both.
    pub fn envelope(runs: &[Interval]) -> Option<Interval> {
        let first = runs.first()?;
        Some(runs.iter().fold(*first, |acc, r| Interval {
            low: acc.low.min(r.low),
            high: acc.high.max(r.high),
            method: acc.method,
        }))
    }
}

/// Wilson score interval for `k` successes out of `n` trials at normal quantile `z`.
/// Unlike the normal approximation it stays inside [0, 1] and is sensible at k = 0 or k = n.
pub fn wilson(k: f64, n: f64, z: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At k = 0 and k = n the bound is exactly 0 or 1; rounding must not nudge it inside.
    let low = if k <= 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if k >= n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (low, high)
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast generator whose sequence never changes
/// across crate versions, so a case's interval is the same on every machine and every rerun.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// A seed from text (a case id, a metric id): FNV-1a, stable across runs and platforms.
pub fn seed_of(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Resamples for `n` records: 1000, fewer when n is large so a case's intervals stay cheap
/// next to the case itself (never fewer than 200, enough for stable 2.5/97.5 percentiles).
pub fn resamples_for(n: usize) -> usize {
    (20_000_000 / n.max(1)).clamp(200, BOOTSTRAP_RESAMPLES)
}

/// Percentile-bootstrap interval of replicates (2.5th and 97.5th percentiles).
pub fn percentile_interval(replicates: &[f64]) -> (f64, f64) {
    (percentile(replicates, 2.5), percentile(replicates, 97.5))
}

fn with_records(out: &CaseOutput, idx: &[usize]) -> CaseOutput {
    // Metrics read records and measurements; artifacts are left out so a resample stays cheap.
    CaseOutput {
        records: out.records.resample(idx),
        measurements: out.measurements.clone(),
        artifacts: Vec::new(),
        sample_labels: out.sample_labels.clone(),
    }
}

fn is_share_of(x: f64, n: usize) -> bool {
    let k = x * n as f64;
    (0.0..=1.0).contains(&x) && (k - k.round()).abs() < 1e-6
}

/// The 95 % interval of one metric whose value on the full records is `point`, or `None` when
/// the metric does not depend on the samples or cannot be recomputed on a resample.
pub fn interval_of(
    def: &'static MetricDef,
    out: &CaseOutput,
    point: f64,
    seed: u64,
) -> Option<Interval> {
    joint(&[(def, point)], out, seed).pop().flatten()
}

/// Intervals of several metrics of one case from the same resamples: each resample of the
/// records is drawn once and every metric is recomputed on it, which is both cheaper and keeps
/// the metrics' intervals consistent with each other.
fn joint(
    metrics: &[(&'static MetricDef, f64)],
    out: &CaseOutput,
    seed: u64,
) -> Vec<Option<Interval>> {
    let n = out.records.len();
    // A metric that computes to the same value on no records at all does not depend on the
    // samples (a training time, a parameter count): it has no sampling interval.
    let live: Vec<bool> = metrics
        .iter()
        .map(|(d, p)| {
            n > 0 && p.is_finite() && !(d.compute)(&with_records(out, &[])).is_ok_and(|v| v == *p)
        })
        .collect();
    let mut reps: Vec<Option<Vec<f64>>> = live.iter().map(|l| l.then(Vec::new)).collect();
    if live.iter().any(|l| *l) {
        let b = resamples_for(n);
        let mut rng = SplitMix64::new(seed);
        let mut idx = vec![0usize; n];
        for _ in 0..b {
            for i in idx.iter_mut() {
                *i = rng.below(n);
            }
            let resample = with_records(out, &idx);
            for ((d, _), r) in metrics.iter().zip(reps.iter_mut()) {
                if let Some(v) = r {
                    // One resample the metric cannot be computed on (an empty class, no
                    // measured sample) and the bootstrap of that metric is off.
                    match (d.compute)(&resample) {
                        Ok(x) if x.is_finite() => v.push(x),
                        _ => *r = None,
                    }
                }
            }
        }
    }
    metrics
        .iter()
        .zip(reps)
        .map(|((d, point), r)| {
            let r = r?;
            let point = *point;
            if d.unit.is_empty() && is_share_of(point, n) && r.iter().all(|x| is_share_of(*x, n)) {
                let (low, high) = wilson((point * n as f64).round(), n as f64, Z95);
                return Some(Interval {
                    low,
                    high,
                    method: IntervalMethod::Wilson,
                });
            }
            let (low, high) = percentile_interval(&r);
            // A percentile interval of a skewed statistic can miss the point estimate by a
            // hair; the interval reported always contains the value it qualifies.
            Some(Interval {
                low: low.min(point),
                high: high.max(point),
                method: IntervalMethod::Bootstrap,
            })
        })
        .collect()
}

/// Intervals of every metric that has one. `values` are the metrics computed on the full
/// records; `case_seed` makes the resamples of each case reproducible.
pub fn intervals(
    defs: &[&'static MetricDef],
    out: &CaseOutput,
    values: &[(&'static str, f64)],
    case_seed: &str,
) -> BTreeMap<String, Interval> {
    let metrics: Vec<(&'static MetricDef, f64)> = values
        .iter()
        .filter_map(|(id, v)| defs.iter().find(|d| d.id == *id).map(|d| (*d, *v)))
        .collect();
    let ivs = joint(&metrics, out, seed_of(&[case_seed]));
    metrics
        .iter()
        .zip(ivs)
        .filter_map(|((d, _), iv)| iv.map(|iv| (d.id.to_string(), iv)))
        .collect()
}

/// Sample standard deviation (n − 1 in the denominator); 0 for fewer than two values.
pub fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = super::mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ianvs_paradigms::records::{ClassificationRecord, Records};

    fn out(correct: &[bool], latencies_ms: &[f64]) -> CaseOutput {
        let recs = correct
            .iter()
            .zip(latencies_ms)
            .enumerate()
            .map(|(i, (&c, &l))| ClassificationRecord {
                index: i,
                label: 1,
                prediction: if c { 1 } else { 0 },
                confidence: 0.9,
                latency_s: l / 1e3,
                warmup: false,
            })
            .collect();
        let mut o = CaseOutput::new(Records::Classification(recs));
        o.measurements.insert("training_time_s".into(), 3.5);
        o
    }

    fn def(id: &str) -> &'static MetricDef {
        super::super::canonical(id).unwrap()
    }

    #[test]
    fn wilson_matches_reference_values() {
        // statsmodels.stats.proportion.proportion_confint(8, 10, method="wilson")
        let (lo, hi) = wilson(8.0, 10.0, Z95);
        assert!(
            (lo - 0.490_162).abs() < 1e-5 && (hi - 0.943_317).abs() < 1e-5,
            "{lo} {hi}"
        );
        // k = n stays inside [0, 1] and is not degenerate.
        let (lo, hi) = wilson(60.0, 60.0, Z95);
        assert!((lo - 0.939_828).abs() < 1e-5 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = wilson(0.0, 60.0, Z95);
        assert!(lo == 0.0 && (hi - 0.060_177).abs() < 1e-5);
    }

    #[test]
    fn accuracy_gets_wilson_latency_gets_bootstrap_training_time_gets_none() {
        let correct: Vec<bool> = (0..100).map(|i| i % 5 != 0).collect();
        let lat: Vec<f64> = (0..100).map(|i| 1.0 + (i % 7) as f64 * 0.1).collect();
        let o = out(&correct, &lat);
        let acc = (def("accuracy").compute)(&o).unwrap();
        let iv = interval_of(def("accuracy"), &o, acc, 1).unwrap();
        assert_eq!(iv.method, IntervalMethod::Wilson);
        let (lo, hi) = wilson(80.0, 100.0, Z95);
        assert_eq!((iv.low, iv.high), (lo, hi));

        let lm = (def("latency-mean").compute)(&o).unwrap();
        let iv = interval_of(def("latency-mean"), &o, lm, 1).unwrap();
        assert_eq!(iv.method, IntervalMethod::Bootstrap);
        assert!(iv.low < lm && lm < iv.high);
        // The bootstrap interval of a mean is close to mean ± 1.96·sd/√n.
        let half = Z95 * std_dev(&lat) / 10.0;
        assert!(
            ((iv.high - iv.low) / 2.0 - half).abs() < 0.25 * half,
            "{iv:?} vs ±{half}"
        );

        assert!(interval_of(def("training-time"), &o, 3.5, 1).is_none());
    }

    #[test]
    fn a_perfect_classifier_still_has_an_interval() {
        let o = out(&[true; 60], &[1.0; 60]);
        let iv = interval_of(def("accuracy"), &o, 1.0, 3).unwrap();
        assert_eq!(iv.method, IntervalMethod::Wilson);
        assert!(iv.low > 0.93 && iv.low < 0.95 && iv.high == 1.0);
    }

    #[test]
    fn intervals_are_reproducible_and_seed_dependent() {
        let lat: Vec<f64> = (0..50).map(|i| (i * 37 % 11) as f64).collect();
        let o = out(&[true; 50], &lat);
        let v = (def("latency-p95").compute)(&o).unwrap();
        let a = interval_of(def("latency-p95"), &o, v, 42).unwrap();
        assert_eq!(a, interval_of(def("latency-p95"), &o, v, 42).unwrap());
        assert!(a.contains(v));
        assert_eq!(seed_of(&["abc", "accuracy"]), seed_of(&["abc", "accuracy"]));
        assert_ne!(seed_of(&["abc", "accuracy"]), seed_of(&["abcaccuracy"]));
    }

    #[test]
    fn bootstrap_draws_are_uniform_enough() {
        let mut r = SplitMix64::new(7);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[r.below(10)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn envelope_covers_every_run() {
        let a = Interval {
            low: 0.9,
            high: 1.0,
            method: IntervalMethod::Bootstrap,
        };
        let b = Interval {
            low: 1.1,
            high: 1.3,
            method: IntervalMethod::Bootstrap,
        };
        let e = Interval::envelope(&[a, b]).unwrap();
        assert_eq!((e.low, e.high), (0.9, 1.3));
        assert!(Interval::envelope(&[]).is_none());
        assert_eq!(std_dev(&[1.0, 2.0, 3.0]), 1.0);
    }
}
