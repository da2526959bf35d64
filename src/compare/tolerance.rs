//! Per-metric tolerances of the regression gate, from a small YAML file:
//!
//! ```yaml
//! default: { relative: 0.05 }          # used for every metric not listed
//! metrics:
//!   accuracy: { absolute: 0.01 }       # worse by more than 0.01 (absolute) counts
//!   latency-mean: { relative: 0.5 }    # worse by more than 50 % of the baseline counts
//!   macro-f1: { absolute: 0.02, direction: higher }
//!   training-time: { ignore: true }    # wall-clock on shared CI machines: report, never fail
//! ```
//!
//! With both `absolute` and `relative` the larger allowance applies. `direction` overrides the
//! job's `sort_by` and the metric's own "higher is better".

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Higher,
    Lower,
}

/// How much worse a metric may get before it counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<f64>,
    /// A fraction of the baseline value (0.05 = 5 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Compare and report the metric, but never count it as a regression.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore: bool,
}

impl Tolerance {
    /// The largest worsening still accepted for a baseline value.
    pub fn allowance(&self, baseline: f64) -> f64 {
        self.absolute
            .unwrap_or(0.0)
            .max(self.relative.unwrap_or(0.0) * baseline.abs())
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.absolute {
            parts.push(format!("absolute {}", crate::plots::compact_number(a)));
        }
        if let Some(r) = self.relative {
            parts.push(format!(
                "relative {} %",
                crate::plots::compact_number(r * 100.0)
            ));
        }
        if parts.is_empty() {
            parts.push("none (any worsening)".into());
        }
        if let Some(d) = self.direction {
            parts.push(format!(
                "{} is better",
                if d == Direction::Higher {
                    "higher"
                } else {
                    "lower"
                }
            ));
        }
        if self.ignore {
            parts.push("ignored".into());
        }
        parts.join(", ")
    }
}

/// The tolerance file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    #[serde(default = "Tolerances::builtin_default")]
    pub default: Tolerance,
    #[serde(default)]
    pub metrics: BTreeMap<String, Tolerance>,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            default: Self::builtin_default(),
            metrics: BTreeMap::new(),
        }
    }
}

impl Tolerances {
    /// Without a file: a metric may get 5 % worse (relative to the baseline) before it counts.
    pub fn builtin_default() -> Tolerance {
        Tolerance {
            relative: Some(0.05),
            ..Default::default()
        }
    }

    pub fn for_metric(&self, id: &str) -> Tolerance {
        let mut t = self
            .metrics
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.default.clone());
        if t.absolute.is_none() && t.relative.is_none() && self.metrics.contains_key(id) {
            // A per-metric entry that only sets `direction` or `ignore` keeps the default allowance.
            t.absolute = self.default.absolute;
            t.relative = self.default.relative;
        }
        t
    }

    /// Reads and checks a tolerance file; metric names are canonicalised (Ianvs aliases work).
    pub fn load(path: &Path) -> Result<Tolerances> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tolerance file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid tolerance file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Tolerances> {
        let mut t: Tolerances = if text.trim().is_empty() {
            Tolerances::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        let check = |name: &str, tol: &Tolerance| -> Result<()> {
            for (what, v) in [("absolute", tol.absolute), ("relative", tol.relative)] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        bail!("`{name}.{what}` must be a non-negative number, not {v}");
                    }
                }
            }
            Ok(())
        };
        check("default", &t.default)?;
        let mut canon = BTreeMap::new();
        for (k, v) in std::mem::take(&mut t.metrics) {
            check(&format!("metrics.{k}"), &v)?;
            let id = crate::metrics::canonical(&k).map_or(k.clone(), |m| m.id.to_string());
            if canon.insert(id.clone(), v).is_some() {
                bail!("metric `{id}` is given twice (as `{k}` and another spelling)");
            }
        }
        t.metrics = canon;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_the_larger_allowance() {
        let t = Tolerances::parse("default: { absolute: 0.01 }\nmetrics:\n  Accuracy: { absolute: 0.02, relative: 0.1 }\n  latency: { direction: lower }\n").unwrap();
        let acc = t.for_metric("accuracy");
        assert!((acc.allowance(0.9) - 0.09).abs() < 1e-12);
        assert!((acc.allowance(0.1) - 0.02).abs() < 1e-12);
        // `latency` is an alias of latency-mean; the entry sets only a direction, the default allowance stays.
        let lat = t.for_metric("latency-mean");
        assert_eq!(lat.direction, Some(Direction::Lower));
        assert_eq!(lat.absolute, Some(0.01));
        assert_eq!(t.for_metric("macro-f1").absolute, Some(0.01));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = Tolerances::parse("default: { absolut: 0.01 }\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown field `absolut`"),
            "{e:#}"
        );
        let e = Tolerances::parse("metrics:\n  accuracy: { relative: -1 }\n").unwrap_err();
        assert!(format!("{e:#}").contains("non-negative"), "{e:#}");
        assert_eq!(Tolerances::parse("").unwrap(), Tolerances::default());
    }
}
