//! The one entry point for Rust plug-ins: a downstream crate starts from the built-in modules
//! and metrics, adds its own, and hands the set to [`crate::cli::main_with`] to get the whole
//! `ianvs` command line (run, validate, list, leaderboard, report, compare) with them in it.
//!
//! ```no_run
//! use ianvs::metrics::MetricDef;
//! use ianvs_paradigms::hp::HpKind;
//! use ianvs_paradigms::joint_inference::{HardExampleMiner, MinerNeeds, MiningQuery};
//! use ianvs_paradigms::modules::BuildContext;
//! use ianvs_paradigms::records::RecordKind;
//! use ianvs_paradigms::registry::ModuleEntry;
//!
//! ianvs_paradigms::hyperparameters! {
//!     pub struct TopTwoHps {
//!         pub threshold: f64 {
//!             kind: HpKind::Float { min: 0.0, max: 1.0 },
//!             default: 0.5,
//!             help: "hard iff the two largest probabilities sum to less than this",
//!         },
//!     }
//! }
//!
//! struct TopTwo(f64);
//! impl HardExampleMiner for TopTwo {
//!     fn needs(&self) -> MinerNeeds { MinerNeeds::EdgeOutput }
//!     fn is_hard(&mut self, q: &MiningQuery<'_>) -> anyhow::Result<bool> {
//!         let mut p = q.edge_probs.unwrap_or_default().to_vec();
//!         p.sort_by(|a, b| b.total_cmp(a));
//!         Ok((p.iter().take(2).sum::<f32>() as f64) < self.0)
//!     }
//! }
//!
//! fn build(h: TopTwoHps, _: &BuildContext) -> anyhow::Result<Box<dyn HardExampleMiner>> {
//!     Ok(Box::new(TopTwo(h.threshold)))
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let ext = ianvs::Extensions::builtin()
//!         .module(ModuleEntry::miner("TopTwo", "hard iff top-2 mass < threshold", build))
//!         .metric(MetricDef {
//!             id: "case-count",
//!             aliases: &[],
//!             unit: "",
//!             higher_is_better: true,
//!             kinds: &[RecordKind::JointInference],
//!             help: "1 for every case",
//!             compute: |_| Ok(1.0),
//!         });
//!     ianvs::cli::main_with(ext)
//! }
//! ```
//!
//! Problems (a name already taken, a constructor that does not build the module type it is
//! registered under, a metric id clashing with a built-in) are collected and reported together when the CLI starts, before it reads any
//! argument: exit 2.

use ianvs_paradigms::registry::{ModuleEntry, Registry};

use crate::metrics::{self, MetricDef};

/// The modules and metrics one `ianvs` binary knows: the built-ins plus a downstream crate's.
pub struct Extensions {
    registry: Registry,
    metrics: Vec<MetricDef>,
    problems: Vec<String>,
}

impl Extensions {
    /// Every built-in module and metric, nothing else.
    pub fn builtin() -> Self {
        Self {
            registry: ianvs_algorithms::registry(),
            metrics: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Adds a module of any module type a paradigm has a slot for (`basemodel`, `edgemodel`,
    /// `cloudmodel`, `hard_example_mining`, `dataset_processor`, `task_definition`, ...; see
    /// `ianvs list paradigms`). YAML names it by `name`, case-insensitively, and its
    /// hyperparameters are validated against `hyperparameters` like a built-in's.
    pub fn module(mut self, entry: ModuleEntry) -> Self {
        if let Err(e) = self.registry.try_register(entry) {
            self.problems.push(e.to_string());
        }
        self
    }

    /// Adds a metric: listed, accepted in a testenv's `metrics:`, computed for every case whose
    /// records it reads (`kinds`), ranked and reported like a built-in one.
    pub fn metric(mut self, def: MetricDef) -> Self {
        self.metrics.push(def);
        self
    }

    /// The modules, built-in and added, as config validation and the controller see them.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Checks everything added and makes the metrics known to this process. Returns the
    /// registry, or every problem found (one line each).
    pub fn install(self) -> Result<Registry, Vec<String>> {
        let mut problems = self.problems;
        for def in self.metrics {
            if let Err(e) = metrics::register(def) {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(self.registry)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ianvs_paradigms::records::RecordKind;
    use ianvs_paradigms::registry::Constructor;

    #[test]
    fn every_problem_is_reported_and_nothing_clashing_is_installed() {
        let dup = ModuleEntry {
            module_type: "basemodel",
            name: "mlp",
            summary: "",
            hyperparameters: vec![],
            constructor: Constructor::Link(Box::new(|_, _| anyhow::bail!("unused"))),
        };
        let nowhere = ModuleEntry {
            module_type: "reranker",
            name: "Mine",
            summary: "",
            hyperparameters: vec![],
            constructor: Constructor::Link(Box::new(|_, _| anyhow::bail!("unused"))),
        };
        let clash = MetricDef {
            id: "extensions-test-accuracy",
            aliases: &["acc uracy"],
            unit: "",
            higher_is_better: true,
            kinds: &[RecordKind::Classification],
            help: "",
            compute: |_| Ok(0.0),
        };
        let problems = Extensions::builtin()
            .module(dup)
            .module(nowhere)
            .metric(clash)
            .install()
            .err()
            .unwrap();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("basemodel \"mlp\" is already registered (as \"MLP\""));
        assert!(
            problems[1].contains("its constructor builds modules of type link, not reranker"),
            "{}",
            problems[1]
        );
        assert!(problems[2].contains("clashes with the metric \"accuracy\""));
        assert!(metrics::canonical("extensions-test-accuracy").is_none());
    }
}
