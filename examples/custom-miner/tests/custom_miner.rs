//! The example crate end to end: its binary is the whole ianvs CLI plus the `Gini` miner and the
//! `hard-precision` metric; a real MNIST joint-inference job ranks the custom miner beside a
//! built-in one, and the custom metric agrees with the per-sample records.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn here(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn custom_miner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custom-miner"));
    c.env("NO_COLOR", "1");
    c
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lists_show_the_extensions_beside_the_builtins() {
    let modules = stdout(custom_miner().args(["list", "modules"]));
    assert!(modules.contains("hard_example_mining Gini"), "{modules}");
    assert!(
        modules.contains("hard_example_mining CrossEntropy"),
        "{modules}"
    );
    assert!(modules.contains("temperature"), "{modules}");
    let metrics = stdout(custom_miner().args(["list", "metrics", "--json"]));
    let v: Value = serde_json::from_str(&metrics).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"hard-precision") && ids.contains(&"accuracy"),
        "{ids:?}"
    );
}

#[test]
fn custom_miner_and_metric_rank_in_one_leaderboard() {
    let ws = tempfile::tempdir().unwrap();
    let out = stdout(custom_miner().args([
        "run",
        "-q",
        "--json",
        "-f",
        here("benchmark.yaml").to_str().unwrap(),
        "--workspace",
        ws.path().to_str().unwrap(),
    ]));
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 6, "{out}");
    let gini: Vec<&Value> = rows.iter().filter(|r| r["algorithm"] == "gini").collect();
    assert_eq!(gini.len(), 4);
    assert_eq!(
        rows.iter()
            .filter(|r| r["algorithm"] == "cross-entropy")
            .count(),
        2
    );
    for r in &rows {
        let hp = r["hard-precision"]
            .as_f64()
            .unwrap_or_else(|| panic!("{r}"));
        assert!((0.0..=1.0).contains(&hp), "{r}");
    }
    // A higher threshold never sends fewer samples to the cloud (same temperature).
    let transfer = |t: f64, temp: f64| {
        gini.iter()
            .find(|r| {
                r["hard_example_mining-threshold"].as_f64() == Some(t)
                    && r["hard_example_mining-temperature"].as_f64() == Some(temp)
            })
            .unwrap()["samples-transfer-ratio"]
            .as_f64()
            .unwrap()
    };
    for temp in [1.0, 2.0] {
        assert!(transfer(0.7, temp) >= transfer(0.3, temp));
    }
    // The custom metric agrees with the records it was computed from, case by case.
    let job = ws.path().join("custom-miner");
    let mut checked = 0;
    for alg in ["gini", "cross-entropy"] {
        for case in std::fs::read_dir(job.join(alg)).unwrap() {
            let case = case.unwrap().path();
            let result: Value =
                serde_json::from_slice(&std::fs::read(case.join("metrics.json")).unwrap()).unwrap();
            assert_eq!(result["status"], "ok", "{result}");
            let (mut sent, mut wrong) = (0usize, 0usize);
            for line in std::fs::read_to_string(case.join("records.jsonl"))
                .unwrap()
                .lines()
            {
                let r: Value = serde_json::from_str(line).unwrap();
                if r["route"] == "cloud" && !r["edge_prediction"].is_null() {
                    sent += 1;
                    wrong += usize::from(r["edge_prediction"] != r["label"]);
                }
            }
            let expected = wrong as f64 / sent as f64;
            let got = result["metrics"]["hard-precision"].as_f64().unwrap();
            assert!(
                (got - expected).abs() < 1e-12,
                "{}: {got} vs {expected}",
                case.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // The regression gate knows the custom metric's direction: comparable, not skipped.
    let cmp: Value = serde_json::from_str(&stdout(custom_miner().args([
        "compare",
        "--json",
        job.to_str().unwrap(),
        job.to_str().unwrap(),
    ])))
    .unwrap();
    let hp_checks: Vec<&Value> = cmp["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["metric"] == "hard-precision")
        .collect();
    assert_eq!(hp_checks.len(), 6, "{cmp}");
    for c in hp_checks {
        assert_eq!(c["higher_is_better"], true, "{c}");
        assert_eq!(c["verdict"], "unchanged", "{c}");
    }
}

#[test]
fn a_bad_custom_hyperparameter_is_a_located_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let alg = dir.path().join("bad.yaml");
    std::fs::write(
        &alg,
        std::fs::read_to_string(here("algorithms/gini.yaml"))
            .unwrap()
            .replace("values: [1.0, 2.0]", "values: [1.0, 0.0]"),
    )
    .unwrap();
    let bench = dir.path().join("benchmark.yaml");
    std::fs::write(
        &bench,
        format!(
            "benchmarkingjob:\n  name: bad\n  workspace: ./ws\n  testenv: \"{}\"\n  test_object:\n    algorithms:\n      - {{ name: gini, url: ./bad.yaml }}\n  rank:\n    sort_by:\n      - {{ hard-precision: descend }}\n",
            here("testenv.yaml").display()
        ),
    )
    .unwrap();
    let out = custom_miner()
        .args(["validate", "-f", bench.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("temperature"), "{err}");
    assert!(err.contains("[0.05, 20]"), "{err}");
    assert!(!dir.path().join("ws").exists());
}

#[test]
fn misspelled_custom_names_get_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gini.yaml"),
        std::fs::read_to_string(here("algorithms/gini.yaml"))
            .unwrap()
            .replace("name: \"Gini\"", "name: \"Ginni\""),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("testenv.yaml"),
        std::fs::read_to_string(here("testenv.yaml"))
            .unwrap()
            .replace(
                "../../datasets/",
                &format!("{}/../../datasets/", env!("CARGO_MANIFEST_DIR")),
            )
            .replace("name: \"hard-precision\"", "name: \"hard-precison\""),
    )
    .unwrap();
    let bench = dir.path().join("benchmark.yaml");
    std::fs::write(
        &bench,
        "benchmarkingjob:\n  name: typo\n  workspace: ./ws\n  testenv: ./testenv.yaml\n  test_object:\n    algorithms:\n      - { name: gini, url: ./gini.yaml }\n  rank:\n    sort_by:\n      - { accuracy: descend }\n",
    )
    .unwrap();
    let out = custom_miner()
        .current_dir(dir.path())
        .args(["validate", "-f", bench.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"Ginni\""), "{err}");
    assert!(err.contains("did you mean `Gini`"), "{err}");
    assert!(err.contains("\"hard-precison\""), "{err}");
    assert!(err.contains("did you mean `hard-precision`"), "{err}");
}
