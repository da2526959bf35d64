//! Checks every planned case against the loaded data before the first case runs
//! ([`ianvs_paradigms::Paradigm::preflight`]): module combinations, model files, class counts.
//! `ianvs validate` and `ianvs run` report the problems like configuration errors, all at once,
//! and nothing is run or written.

use std::collections::BTreeMap;

use ianvs_paradigms::registry::Registry;

use crate::config::{Diagnostic, Diagnostics, Job};
use crate::controller::PlannedCase;

/// One diagnostic per distinct problem, naming the algorithm file and the cases it affects.
pub fn check(job: &Job, cases: &[PlannedCase], registry: &Registry) -> Result<(), Diagnostics> {
    // (algorithm index, message) → case ids, in first-seen order of messages.
    let mut problems: BTreeMap<(usize, String), Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for c in cases {
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
        problems.entry(key).or_default().push(c.spec.id.clone());
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut diags = Diagnostics::default();
    for key in order {
        let ids = &problems[&key];
        let alg = &job.algorithms[key.0];
        let mut d = Diagnostic::new(
            &alg.file,
            None,
            "algorithm.modules",
            format!("algorithm \"{}\": {}", alg.name, key.1),
        );
        let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
        d.help(format!(
            "affects {} case(s): {}{}",
            ids.len(),
            shown.join(", "),
            if ids.len() > 5 { ", ..." } else { "" }
        ));
        diags.push(d);
    }
    Err(diags)
}
