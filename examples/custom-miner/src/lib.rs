//! An example of a Rust plug-in for ianvs, kept outside the core crates: a hard-example miner
//! (`Gini`: the Gini-impurity confidence of the edge model's temperature-scaled output) and a
//! metric (`hard-precision`: how many of the samples sent to the cloud the edge got wrong),
//! registered through the one entry point, [`ianvs::Extensions`].

use ianvs::metrics::MetricDef;
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::joint_inference::{
    HardExampleMiner, JointInferenceRecord, MinerNeeds, MiningQuery, Route,
};
use ianvs_paradigms::modules::BuildContext;
use ianvs_paradigms::records::{CaseOutput, RecordKind, Records};
use ianvs_paradigms::registry::ModuleEntry;

/// The built-in modules and metrics plus this crate's.
pub fn extensions() -> ianvs::Extensions {
    ianvs::Extensions::builtin()
        .module(ModuleEntry::miner(
            "Gini",
            "hard iff the Gini confidence (K·Σp² − 1)/(K − 1) of the temperature-scaled edge output < threshold",
            build_gini,
        ))
        .metric(HARD_PRECISION)
}

/// Hard iff the Gini confidence of the edge model's output, sharpened or flattened by
/// `temperature` (`p_i^(1/T)`, renormalised), is below `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gini {
    pub threshold: f64,
    pub temperature: f64,
}

impl HardExampleMiner for Gini {
    fn needs(&self) -> MinerNeeds {
        MinerNeeds::EdgeOutput
    }
    fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
        let p = q.edge_probs.filter(|p| !p.is_empty()).ok_or_else(|| {
            anyhow::anyhow!("Gini needs the edge model's probabilities: use hard_example_mining_mode \"inference-then-mining\"")
        })?;
        Ok(gini_confidence(p, self.temperature) < self.threshold)
    }
}

/// `(K·Σq² − 1)/(K − 1)` of `q_i ∝ p_i^(1/T)`: 1 for a one-hot output, 0 for a uniform one.
pub fn gini_confidence(p: &[f32], temperature: f64) -> f64 {
    let k = p.len() as f64;
    if p.len() < 2 {
        return 1.0;
    }
    let scaled: Vec<f64> = p
        .iter()
        .map(|&x| (x.max(0.0) as f64).powf(1.0 / temperature))
        .collect();
    let z: f64 = scaled.iter().sum();
    if z <= 0.0 || !z.is_finite() {
        return 0.0;
    }
    let sum_sq: f64 = scaled.iter().map(|x| (x / z) * (x / z)).sum();
    ((k * sum_sq - 1.0) / (k - 1.0)).clamp(0.0, 1.0)
}

ianvs_paradigms::hyperparameters! {
    /// `Gini`'s hyperparameters: the spec table `custom-miner list modules` shows and config
    /// validation checks, and the struct [`build_gini`] receives.
    #[derive(Debug, Clone, PartialEq)]
    pub struct GiniHps {
        pub threshold: f64 {
            kind: HpKind::Float { min: 0.0, max: 1.0 },
            default: 0.5,
            help: "hard iff the Gini confidence is below this; higher sends more to the cloud",
        },
        pub temperature: f64 {
            kind: HpKind::Float { min: 0.05, max: 20.0 },
            default: 1.0,
            help: "p^(1/T) before the score: above 1 flattens the output (more samples look hard)",
        },
    }
}

pub fn build_gini(h: GiniHps, _: &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>> {
    Ok(Box::new(Gini {
        threshold: h.threshold,
        temperature: h.temperature,
    }))
}

/// Of the samples the miner sent to the cloud after the edge answered them, the share the edge
/// got wrong: how well the miner spends cloud calls (1 = every cloud call fixed an edge error
/// or at least replaced a wrong answer).
pub const HARD_PRECISION: MetricDef = MetricDef {
    id: "hard-precision",
    aliases: &["hard_precision"],
    unit: "",
    higher_is_better: true,
    kinds: &[RecordKind::JointInference],
    help: "share of the samples sent to the cloud that the edge model got wrong",
    compute: hard_precision,
};

pub fn hard_precision(o: &CaseOutput) -> anyhow::Result<f64> {
    let Records::JointInference(records) = &o.records else {
        anyhow::bail!("hard-precision reads joint-inference records");
    };
    let sent: Vec<&JointInferenceRecord> = records
        .iter()
        .filter(|r| r.route == Route::Cloud && r.edge_prediction.is_some())
        .collect();
    if sent.is_empty() {
        anyhow::bail!("no sample answered by the edge went to the cloud");
    }
    let wrong = sent
        .iter()
        .filter(|r| r.edge_prediction != Some(r.label))
        .count();
    Ok(wrong as f64 / sent.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_confidence_spans_zero_to_one() {
        assert_eq!(gini_confidence(&[1.0, 0.0, 0.0], 1.0), 1.0);
        assert!(gini_confidence(&[0.25; 4], 1.0).abs() < 1e-12);
        // Σp² = 0.5² + 0.5² = 0.5 → (3·0.5 − 1)/2 = 0.25.
        assert!((gini_confidence(&[0.5, 0.5, 0.0], 1.0) - 0.25).abs() < 1e-12);
        // A higher temperature flattens the output, so the confidence drops.
        let p = [0.7, 0.2, 0.1];
        assert!(gini_confidence(&p, 2.0) < gini_confidence(&p, 1.0));
        assert!(gini_confidence(&p, 0.5) > gini_confidence(&p, 1.0));
    }

    #[test]
    fn miner_follows_its_threshold() {
        let p = [0.6f32, 0.4];
        // Σp² = 0.52 → (2·0.52 − 1)/1 = 0.04.
        let q = MiningQuery {
            index: 0,
            input: &[],
            edge_probs: Some(&p),
            oracle: None,
        };
        let mut m = Gini {
            threshold: 0.05,
            temperature: 1.0,
        };
        assert!(m.is_hard(&q).unwrap());
        m.threshold = 0.03;
        assert!(!m.is_hard(&q).unwrap());
        let none = MiningQuery {
            edge_probs: None,
            ..q
        };
        assert!(m.is_hard(&none).is_err());
    }
}
