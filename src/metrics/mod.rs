//! Metrics: one table of definitions (id, Ianvs aliases, unit, direction, which records they
//! read) and the functions that compute them from a case's typed records.
//!
//! Definitions follow the references named in DESIGN §5: accuracy and macro F1 agree with
//! scikit-learn (`accuracy_score`, `f1_score(average="macro")` with `zero_division=0`);
//! percentiles interpolate linearly between order statistics like numpy's default.

use std::sync::RwLock;

use anyhow::Result;
use ianvs_paradigms::records::{CaseOutput, RecordKind};

pub struct MetricDef {
    /// kebab-case id used in YAML, leaderboards and JSON.
    pub id: &'static str,
    /// Other accepted spellings (Ianvs display names, snake_case).
    pub aliases: &'static [&'static str],
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub kinds: &'static [RecordKind],
    pub help: &'static str,
    pub compute: fn(&CaseOutput) -> Result<f64>,
}

mod classification;
pub mod interval;
mod joint;
mod lifelong;
pub mod plugin;
mod speculative;

pub use interval::{Interval, IntervalMethod};

/// Every metric of this build, grouped by the records they read. A paradigm that adds a record
/// kind adds one file here with its `METRICS` table and one entry in this list.
pub static GROUPS: &[&[MetricDef]] = &[
    classification::METRICS,
    joint::METRICS,
    speculative::METRICS,
    lifelong::METRICS,
    plugin::METRICS,
];

/// Metrics added at run time by a downstream crate ([`register`], usually through
/// `ianvs::Extensions::metric`), listed after the built-in tables.
static EXTRA: RwLock<Vec<&'static MetricDef>> = RwLock::new(Vec::new());

fn extra() -> Vec<&'static MetricDef> {
    // A poisoned lock only means a panic elsewhere while registering; the list itself is whole.
    EXTRA.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// All metric definitions in listing order: the built-in tables, then registered extensions.
pub fn all() -> impl Iterator<Item = &'static MetricDef> {
    GROUPS.iter().flat_map(|g| g.iter()).chain(extra())
}

/// The spelling-insensitive form ids and aliases are matched in.
fn norm(s: &str) -> String {
    s.to_lowercase().replace(['-', '_', ' '], "")
}

/// Looks a metric up by id or alias (case-insensitive, `_`/`-`/space-insensitive).
pub fn canonical(name: &str) -> Option<&'static MetricDef> {
    let n = norm(name);
    all().find(|m| norm(m.id) == n || m.aliases.iter().any(|a| norm(a) == n))
}

/// Why a metric could not be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("metric id \"{0}\" is not kebab-case (lowercase letters, digits and `-`, e.g. \"hard-precision\")")]
    BadId(String),
    #[error("metric \"{id}\": its {what} \"{name}\" clashes with the metric \"{existing}\" (ids and aliases match ignoring case, `-`, `_` and spaces): pick another name")]
    Clash {
        id: String,
        what: &'static str,
        name: String,
        existing: &'static str,
    },
}

/// Adds a metric to this process (a downstream crate's own metric): it is then listed by
/// `ianvs list metrics`, accepted in a testenv's `metrics:`, computed for every case whose
/// records it reads, ranked and reported like a built-in. Its id and aliases must not match
/// any metric already known, built-in or registered.
pub fn register(def: MetricDef) -> Result<&'static MetricDef, MetricError> {
    let kebab = |s: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !kebab(def.id) {
        return Err(MetricError::BadId(def.id.to_string()));
    }
    let mut extra = EXTRA.write().unwrap_or_else(|e| e.into_inner());
    let names = std::iter::once(("id", def.id)).chain(def.aliases.iter().map(|a| ("alias", *a)));
    for (what, name) in names {
        let n = norm(name);
        let known = GROUPS
            .iter()
            .flat_map(|g| g.iter())
            .chain(extra.iter().copied());
        for m in known {
            if norm(m.id) == n || m.aliases.iter().any(|a| norm(a) == n) {
                return Err(MetricError::Clash {
                    id: def.id.to_string(),
                    what,
                    name: name.to_string(),
                    existing: m.id,
                });
            }
        }
    }
    // Registered once per process and never freed: every other definition is a `static` too.
    let def: &'static MetricDef = Box::leak(Box::new(def));
    extra.push(def);
    Ok(def)
}

pub fn all_ids() -> Vec<&'static str> {
    all().map(|m| m.id).collect()
}

pub fn ids_for(kind: RecordKind) -> Vec<&'static str> {
    all()
        .filter(|m| m.kinds.contains(&kind))
        .map(|m| m.id)
        .collect()
}

/// A case-level measurement the paradigm recorded (e.g. `training_time_s`).
pub fn measurement(o: &CaseOutput, key: &str) -> Result<f64> {
    o.measurements
        .get(key)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the paradigm did not measure `{key}`"))
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Percentile `q` (0–100) with linear interpolation between order statistics (numpy default).
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Computes every requested metric; a metric that fails yields its error.
pub fn compute_all(
    defs: &[&'static MetricDef],
    out: &CaseOutput,
) -> Vec<(&'static str, Result<f64>)> {
    defs.iter().map(|m| (m.id, (m.compute)(out))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 95.0), 7.0);
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(canonical("f1_score").unwrap().id, "macro-f1");
        assert_eq!(canonical("Accuracy").unwrap().id, "accuracy");
        assert!(canonical("nope").is_none());
    }

    #[test]
    fn registered_metrics_are_found_and_clashes_refused() {
        fn def(id: &'static str, aliases: &'static [&'static str]) -> MetricDef {
            MetricDef {
                id,
                aliases,
                unit: "",
                higher_is_better: true,
                kinds: &[RecordKind::Classification],
                help: "test metric",
                compute: |_| Ok(1.0),
            }
        }
        let e = register(def("unit-test-extra", &["Accuracy"]))
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                MetricError::Clash {
                    existing: "accuracy",
                    what: "alias",
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            register(def("Unit_Test", &[])).err().unwrap(),
            MetricError::BadId(_)
        ));
        let m = register(def("unit-test-extra", &["unit test extra alias"])).unwrap();
        assert!(std::ptr::eq(canonical("unit_test_extra_alias").unwrap(), m));
        assert!(all_ids().contains(&"unit-test-extra"));
        assert!(ids_for(RecordKind::Classification).contains(&"unit-test-extra"));
        let e = register(def("unit-test-extra", &[])).err().unwrap();
        assert!(e.to_string().contains("clashes"), "{e}");
    }

    #[test]
    fn ids_are_unique_kebab_case() {
        let ids = all_ids();
        let mut d = ids.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), ids.len());
        assert!(ids.iter().all(|i| i
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')));
    }
}
