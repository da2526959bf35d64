//! Dataset processors (module type `dataset_processor`): transform the test split before a
//! paradigm infers on it, e.g. a stratified subset for quick runs, or Gaussian pixel noise to
//! see how a collaboration strategy copes with inputs the edge model finds harder.

use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::joint_inference::DatasetProcessor;
use ianvs_paradigms::modules::BuildContext;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Keeps at most `max_samples` samples, taking classes in turn (seeded order within each class),
/// so the subset stays balanced; the kept samples keep their original order.
pub struct Subset {
    pub max_samples: usize,
    pub seed: u64,
}

impl DatasetProcessor for Subset {
    fn process(&self, data: &Dataset) -> anyhow::Result<Dataset> {
        if data.len() <= self.max_samples {
            return Ok(data.clone());
        }
        if data.labels.len() != data.len() {
            anyhow::bail!(
                "Subset needs a label for every sample ({} samples, {} labels)",
                data.len(),
                data.labels.len()
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); data.num_classes()];
        for (i, &l) in data.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        for c in &mut by_class {
            c.shuffle(&mut rng);
        }
        let mut keep = Vec::with_capacity(self.max_samples);
        let mut round = 0;
        while keep.len() < self.max_samples {
            for c in &by_class {
                if let Some(&i) = c.get(round) {
                    if keep.len() < self.max_samples {
                        keep.push(i);
                    }
                }
            }
            round += 1;
        }
        keep.sort_unstable();
        Ok(data.subset(&keep))
    }
}

/// Adds `N(0, std²)` noise to every feature (seeded), then clips to `[clip_min, clip_max]`.
pub struct GaussianNoise {
    pub std: f64,
    pub seed: u64,
    pub clip: Option<(f32, f32)>,
}

impl DatasetProcessor for GaussianNoise {
    fn process(&self, data: &Dataset) -> anyhow::Result<Dataset> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut out = data.clone();
        for v in &mut out.features {
            // Box–Muller: two uniforms give one standard normal (the other is discarded so one
            // draw per feature keeps the stream aligned with the feature index).
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let mut x = *v + (z * self.std) as f32;
            if let Some((lo, hi)) = self.clip {
                x = x.clamp(lo, hi);
            }
            *v = x;
        }
        Ok(out)
    }
}

ianvs_paradigms::hyperparameters! {
    /// `Subset`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct SubsetHps {
        pub max_samples: usize {
            kind: HpKind::Int { min: 1, max: i64::MAX },
            default: 1000,
            help: "keep at most this many test samples, classes in turn",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds which samples of each class are kept (default: the job seed)",
        },
    }
}

ianvs_paradigms::hyperparameters! {
    /// `GaussianNoise`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct NoiseHps {
        pub std: f64 {
            kind: HpKind::Float { min: 0.0, max: 1e6 },
            default: 0.1,
            help: "standard deviation of the noise, in feature units (after feature_scale)",
        },
        pub clip: bool {
            kind: HpKind::Bool,
            default: true,
            help: "clip noisy features to [0, 1] (pixel intensities after feature_scale)",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds the noise (default: the job seed)",
        },
    }
}

pub fn build_subset(h: SubsetHps, _: &BuildContext) -> anyhow::Result<Box<dyn DatasetProcessor>> {
    Ok(Box::new(Subset {
        max_samples: h.max_samples,
        seed: h.seed,
    }))
}

pub fn build_noise(h: NoiseHps, _: &BuildContext) -> anyhow::Result<Box<dyn DatasetProcessor>> {
    Ok(Box::new(GaussianNoise {
        std: h.std,
        seed: h.seed,
        clip: h.clip.then_some((0.0, 1.0)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Dataset {
        Dataset {
            dim: 2,
            features: (0..2 * n).map(|i| (i % 7) as f32 / 7.0).collect(),
            labels: (0..n as u32).map(|i| i % 3).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn subset_is_balanced_seeded_and_ordered() {
        let d = data(90);
        let s = Subset {
            max_samples: 10,
            seed: 1,
        }
        .process(&d)
        .unwrap();
        assert_eq!(s.len(), 10);
        let counts: Vec<usize> = (0..3)
            .map(|c| s.labels.iter().filter(|&&l| l == c).count())
            .collect();
        assert!(counts.iter().all(|&c| (3..=4).contains(&c)), "{counts:?}");
        assert_eq!(
            s.features,
            Subset {
                max_samples: 10,
                seed: 1
            }
            .process(&d)
            .unwrap()
            .features
        );
        assert_ne!(
            s.features,
            Subset {
                max_samples: 10,
                seed: 2
            }
            .process(&d)
            .unwrap()
            .features
        );
        assert_eq!(
            Subset {
                max_samples: 500,
                seed: 1
            }
            .process(&d)
            .unwrap()
            .len(),
            90
        );
    }

    #[test]
    fn noise_has_the_requested_spread_and_clips() {
        let d = Dataset {
            dim: 1,
            features: vec![0.5; 20_000],
            labels: vec![0; 20_000],
            ..Default::default()
        };
        let n = GaussianNoise {
            std: 0.1,
            seed: 3,
            clip: None,
        }
        .process(&d)
        .unwrap();
        let mean = n.features.iter().map(|&x| x as f64).sum::<f64>() / 20_000.0;
        let var = n
            .features
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / 20_000.0;
        assert!(
            (mean - 0.5).abs() < 0.005 && (var.sqrt() - 0.1).abs() < 0.005,
            "{mean} {}",
            var.sqrt()
        );
        let c = GaussianNoise {
            std: 1.0,
            seed: 3,
            clip: Some((0.0, 1.0)),
        }
        .process(&d)
        .unwrap();
        assert!(c.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert_eq!(c.labels, d.labels);
    }
}
