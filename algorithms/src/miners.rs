//! Hard-example miners of joint inference (module type `hard_example_mining`): which samples
//! the edge model should hand to the cloud.
//!
//! The confidence-based filters follow Sedna's `sedna.algorithms.hard_example_mining`
//! (`ThresholdFilter`, `CrossEntropyFilter`): a sample is hard when the edge model's confidence
//! score falls *below* the threshold, so a higher threshold never sends fewer samples to the
//! cloud. `Margin` is the top-1 minus top-2 probability gap (Scheffer et al. 2001, "Active
//! hidden Markov models for information extraction"). `Oracle` knows the label and both models'
//! predictions: the best any router can do.

use ianvs_paradigms::hp::{HpKind, NoHyperparameters};
use ianvs_paradigms::joint_inference::{HardExampleMiner, MinerNeeds, MiningQuery};
use ianvs_paradigms::modules::BuildContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The probabilities a confidence miner reads; a bug in the paradigm if they are missing.
fn edge_probs<'a>(q: &MiningQuery<'a>, miner: &str) -> anyhow::Result<&'a [f32]> {
    match q.edge_probs {
        Some(p) if !p.is_empty() => Ok(p),
        _ => anyhow::bail!(
            "{miner} needs the edge model's probabilities, which the flow did not provide"
        ),
    }
}

/// Never hard: every sample is answered on the edge.
pub struct EdgeOnly;

impl HardExampleMiner for EdgeOnly {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::Input
    }
    fn is_hard(&mut self, _q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        Ok(false)
    }
}

/// Always hard: every sample is answered by the cloud.
pub struct CloudOnly;

impl HardExampleMiner for CloudOnly {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::Input
    }
    fn is_hard(&mut self, _q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        Ok(true)
    }
}

/// Hard with probability `probability`, from a seeded stream: the baseline a learned router has
/// to beat at the same transfer ratio.
pub struct RandomMiner {
    pub probability: f64,
    rng: ChaCha8Rng,
}

impl RandomMiner {
    pub fn new(probability: f64, seed: u64) -> Self {
        Self {
            probability,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl HardExampleMiner for RandomMiner {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::Input
    }
    fn is_hard(&mut self, _q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        // One draw per sample whatever the probability, so two probabilities with the same seed
        // send nested sets of samples (a higher probability only adds samples).
        Ok(self.rng.random::<f64>() < self.probability)
    }
}

/// Sedna's `ThresholdFilter`: hard iff the largest class probability is below `threshold`.
pub struct Threshold {
    pub threshold: f64,
}

impl HardExampleMiner for Threshold {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::EdgeOutput
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        Ok((max_probability(edge_probs(q, "Threshold")?) as f64) < self.threshold)
    }
}

/// Sedna's `CrossEntropyFilter`: confidence `1 − H(p) / ln K` (1 for a one-hot output, 0 for a
/// uniform one); hard iff it is below `threshold`.
pub struct CrossEntropy {
    pub threshold: f64,
}

impl HardExampleMiner for CrossEntropy {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::EdgeOutput
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        Ok(entropy_confidence(edge_probs(q, "CrossEntropy")?) < self.threshold)
    }
}

/// Hard iff the top-1 minus top-2 probability is below `threshold`.
pub struct Margin {
    pub threshold: f64,
}

impl HardExampleMiner for Margin {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::EdgeOutput
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        Ok((margin(edge_probs(q, "Margin")?) as f64) < self.threshold)
    }
}

/// Hard iff the cloud is right and the edge is wrong: the most accurate routing with the fewest
/// cloud calls, an upper bound for every real miner.
pub struct Oracle;

impl HardExampleMiner for Oracle {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::Oracle
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        let o = q.oracle.ok_or_else(|| anyhow::anyhow!("Oracle needs the label and both models' predictions, which the flow did not provide"))?;
        Ok(o.cloud_prediction == o.label && o.edge_prediction != o.label)
    }
}

pub fn max_probability(p: &[f32]) -> f32 {
    p.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `1 − H(p) / ln K`, with `0 · ln 0 = 0`; 1 for a single class.
pub fn entropy_confidence(p: &[f32]) -> f64 {
    if p.len() < 2 {
        return 1.0;
    }
    let h: f64 = p
        .iter()
        .map(|&x| x as f64)
        .filter(|&x| x > 0.0)
        .map(|x| -x * x.ln())
        .sum();
    1.0 - h / (p.len() as f64).ln()
}

/// Largest minus second-largest probability; the largest itself for a single class.
pub fn margin(p: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in p {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    if b == f32::NEG_INFINITY {
        a
    } else {
        a - b
    }
}

ianvs_paradigms::hyperparameters! {
    /// `Threshold`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct ThresholdHps {
        pub threshold: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.5,
            help: "hard iff the edge model's largest class probability is below this; higher sends more to the cloud",
        },
    }
}

ianvs_paradigms::hyperparameters! {
    /// `CrossEntropy`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CrossEntropyHps {
        pub threshold: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.5,
            help: "hard iff 1 − entropy / ln(classes) of the edge output is below this; higher sends more to the cloud",
        },
    }
}

ianvs_paradigms::hyperparameters! {
    /// `Margin`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct MarginHps {
        pub threshold: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.5,
            help: "hard iff top-1 minus top-2 probability of the edge output is below this; higher sends more to the cloud",
        },
    }
}

ianvs_paradigms::hyperparameters! {
    /// `Random`'s hyperparameters.
    #[derive(Debug, Clone, PartialEq)]
    pub struct RandomHps {
        pub probability: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.5,
            help: "chance that a sample is sent to the cloud",
        },
        pub seed: u64 {
            kind: HpKind::Int { min: 0, max: i64::MAX },
            default: None,
            help: "seeds the draws (default: the job seed)",
        },
    }
}

pub fn build_edge_only(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(EdgeOnly))
}

pub fn build_cloud_only(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(CloudOnly))
}

pub fn build_random(h: RandomHps, _: &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(RandomMiner::new(h.probability, h.seed)))
}

pub fn build_threshold(
    h: ThresholdHps,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(Threshold {
        threshold: h.threshold,
    }))
}

pub fn build_cross_entropy(
    h: CrossEntropyHps,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(CrossEntropy {
        threshold: h.threshold,
    }))
}

pub fn build_margin(h: MarginHps, _: &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(Margin {
        threshold: h.threshold,
    }))
}

pub fn build_oracle(
    _: NoHyperparameters,
    _: &BuildContext,
) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(Oracle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ianvs_paradigms::joint_inference::OracleView;

    fn q(p: &[f32]) -> MiningQuery<'_> {
        MiningQuery {
            index: 0,
            input: &[],
            edge_probs: Some(p),
            oracle: None,
        }
    }

    #[test]
    fn confidence_scores_match_hand_computed_values() {
        assert_eq!(max_probability(&[0.2, 0.7, 0.1]), 0.7);
        assert!((margin(&[0.2, 0.7, 0.1]) - 0.5).abs() < 1e-6);
        assert!((margin(&[0.45, 0.1, 0.45]) - 0.0).abs() < 1e-6);
        assert_eq!(margin(&[1.0]), 1.0);
        // Uniform → 0, one-hot → 1; [0.5, 0.5, 0, 0]: H = ln 2, 1 − ln2/ln4 = 0.5 (Sedna's formula).
        assert!(entropy_confidence(&[0.25; 4]).abs() < 1e-6);
        assert!((entropy_confidence(&[1.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!((entropy_confidence(&[0.5, 0.5, 0.0, 0.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn threshold_miners_are_monotone_in_the_threshold() {
        let outputs: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let top = 0.1 + 0.9 * (i as f32 / 199.0);
                let mut p = vec![(1.0 - top) / 9.0; 10];
                p[i % 10] = top;
                p
            })
            .collect();
        let hard_count = |m: &mut dyn HardExampleMiner| {
            outputs.iter().filter(|p| m.is_hard(&q(p)).unwrap()).count()
        };
        let mut last = [0usize; 3];
        for t in [0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0] {
            let now = [
                hard_count(&mut Threshold { threshold: t }),
                hard_count(&mut CrossEntropy { threshold: t }),
                hard_count(&mut Margin { threshold: t }),
            ];
            for k in 0..3 {
                assert!(
                    now[k] >= last[k],
                    "miner {k}: threshold {t} sent {} < {}",
                    now[k],
                    last[k]
                );
            }
            last = now;
        }
        assert_eq!(hard_count(&mut Threshold { threshold: 0.0 }), 0);
        assert_eq!(
            last[0], 199,
            "threshold 1.0: everything but the one-hot output is hard"
        );
    }

    #[test]
    fn random_is_seeded_and_nested_across_probabilities() {
        let draws = |p, seed| {
            let mut m = RandomMiner::new(p, seed);
            (0..1000)
                .map(|_| m.is_hard(&q(&[1.0])).unwrap())
                .collect::<Vec<bool>>()
        };
        let a = draws(0.3, 5);
        assert_eq!(a, draws(0.3, 5));
        let share = a.iter().filter(|&&h| h).count();
        assert!((250..350).contains(&share), "{share}");
        let b = draws(0.6, 5);
        assert!(
            a.iter().zip(&b).all(|(x, y)| !x || *y),
            "a higher probability must only add samples"
        );
        assert!(draws(0.0, 1).iter().all(|h| !h) && draws(1.0, 1).iter().all(|h| *h));
    }

    #[test]
    fn oracle_sends_exactly_the_samples_only_the_cloud_gets_right() {
        let mut o = Oracle;
        let ask = |o: &mut Oracle, label, edge_prediction, cloud_prediction| {
            o.is_hard(&MiningQuery {
                index: 0,
                input: &[],
                edge_probs: None,
                oracle: Some(OracleView {
                    label,
                    edge_prediction,
                    cloud_prediction,
                }),
            })
            .unwrap()
        };
        assert!(ask(&mut o, 3, 1, 3));
        assert!(!ask(&mut o, 3, 3, 3));
        assert!(!ask(&mut o, 3, 3, 1));
        assert!(!ask(&mut o, 3, 1, 2));
        assert!(o.is_hard(&q(&[0.5])).is_err());
        assert!(Threshold { threshold: 0.5 }
            .is_hard(&MiningQuery {
                index: 0,
                input: &[],
                edge_probs: None,
                oracle: None
            })
            .is_err());
    }
}
