//! Checks every planned case against the loaded data before the first case runs
//! ([`ianvs_paradigms::Paradigm::preflight`]): module combinations, model files, class counts.
//! `ianvs validate` and `ianvs run` report the problems like configuration errors, all at once,
//! and nothing is run or written.

use std::collections::BTreeMap;

use ianvs_paradigms::registry::Registry;

use crate::config::{Diagnostic, Diagnostics, Job};
use crate::controller::PlannedCase;

/// One diagnostic per distinct problem, naming the algorithm file and the cases it affects.
/// Takes the cases as a slice or as `controller::plan_iter` (flat memory on large grids).
pub fn check<I>(job: &Job, cases: I, registry: &Registry) -> Result<(), Diagnostics>
where
    I: IntoIterator,
    I::Item: std::borrow::Borrow<PlannedCase>,
{
    // (algorithm index, message) → (case count, the first case ids), in first-seen order.
    let mut problems: BTreeMap<(usize, String), (usize, Vec<String>)> = BTreeMap::new();
    let mut order = Vec::new();
    for c in cases {
        let c: &PlannedCase = std::borrow::Borrow::borrow(&c);
        let alg = &job.algorithms[c.algorithm_index];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            alg.paradigm.preflight(&c.spec, &job.testenv.data, registry)
        }));
        let err = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "the paradigm's checks panicked (a bug in ianvs)".to_string(),
        };
        let key = (c.algorithm_index, err);
        if !problems.contains_key(&key) {
            order.push(key.clone());
        }
        let (count, ids) = problems.entry(key).or_default();
        *count += 1;
        if ids.len() < 5 {
            ids.push(c.spec.id.clone());
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut diags = Diagnostics::default();
    for key in order {
        let (count, ids) = &problems[&key];
        let alg = &job.algorithms[key.0];
        let mut d = Diagnostic::new(
            &alg.file,
            None,
            "algorithm.modules",
            format!("algorithm \"{}\": {}", alg.name, key.1),
        );
        let shown: Vec<&str> = ids.iter().map(String::as_str).collect();
        d.help(format!(
            "affects {} case(s): {}{}",
            count,
            shown.join(", "),
            if *count > 5 { ", ..." } else { "" }
        ));
        diags.push(d);
    }
    Err(diags)
}
