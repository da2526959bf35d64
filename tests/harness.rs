//! The harness core through the library API: grid expansion, stable case ids, multi-key
//! ranking and deterministic column order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use ianvs::config::{self, Order, Overrides};
use ianvs::controller::{self, CaseResult, Status};
use ianvs::story::{self, JobMeta};
use serde_json::{json, Value};

static PARADIGMS: LazyLock<Vec<Box<dyn ianvs_paradigms::Paradigm>>> =
    LazyLock::new(ianvs_paradigms::paradigms);

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// A job in a temp folder with the given algorithm YAML, reusing the tiny test environment.
fn job_with(dir: &Path, algorithm: &str) -> PathBuf {
    std::fs::write(dir.join("alg.yaml"), algorithm).unwrap();
    let te = tiny().join("testenv.yaml");
    let bench = format!("benchmarkingjob:\n  name: g\n  testenv: {}\n  test_object:\n    algorithms:\n      - name: a\n        url: ./alg.yaml\n  rank:\n    sort_by:\n      - accuracy: descend\n", te.display());
    let f = dir.join("benchmark.yaml");
    std::fs::write(&f, bench).unwrap();
    f
}

const GRID: &str = "algorithm:\n  paradigm_type: singletasklearning\n  modules:\n    - type: basemodel\n      name: MLP\n      hyperparameters:\n        - hidden_sizes:\n            values: [[8], [16], [32]]\n        - learning_rate:\n            values: [0.1, 0.01]\n        - optimizer:\n            values: [adam, sgd]\n";

#[test]
fn grid_is_the_cartesian_product_in_yaml_order() {
    let d = tempfile::tempdir().unwrap();
    let job = config::load_job(
        &job_with(d.path(), GRID),
        &ianvs_algorithms::registry(),
        &PARADIGMS,
        &Overrides::default(),
    )
    .unwrap();
    let cases = controller::plan(&job);
    assert_eq!(cases.len(), 12);
    let combos: Vec<(Value, Value, Value)> = cases
        .iter()
        .map(|c| {
            (
                c.grid_values[0].1.clone(),
                c.grid_values[1].1.clone(),
                c.grid_values[2].1.clone(),
            )
        })
        .collect();
    assert_eq!(combos[0], (json!([8]), json!(0.1), json!("adam")));
    assert_eq!(combos[1], (json!([8]), json!(0.1), json!("sgd")));
    assert_eq!(combos[2], (json!([8]), json!(0.01), json!("adam")));
    assert_eq!(combos[11], (json!([32]), json!(0.01), json!("sgd")));
    // Defaults are filled in for hyperparameters not on the grid.
    let hps = &cases[0].spec.modules[0].hyperparameters;
    assert_eq!(hps.int("epochs").unwrap(), 5);
    assert_eq!(hps.int("seed").unwrap(), 0);
    // Every id is distinct.
    let mut ids: Vec<&str> = cases.iter().map(|c| c.spec.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

#[test]
fn case_ids_are_stable_and_track_what_matters() {
    let ids = |alg: &str, seed: Option<u64>| {
        let d = tempfile::tempdir().unwrap();
        let job = config::load_job(
            &job_with(d.path(), alg),
            &ianvs_algorithms::registry(),
            &PARADIGMS,
            &Overrides {
                seed,
                ..Default::default()
            },
        )
        .unwrap();
        controller::plan(&job)
            .into_iter()
            .map(|c| c.spec.id)
            .collect::<Vec<_>>()
    };
    let a = ids(GRID, None);
    assert_eq!(
        a,
        ids(GRID, None),
        "same config in another folder → same ids"
    );
    assert_eq!(a[0].len(), 12);
    assert_ne!(a, ids(GRID, Some(1)), "the job seed changes every case");
    let changed = GRID.replace("[0.1, 0.01]", "[0.1, 0.02]");
    let b = ids(&changed, None);
    assert_eq!(a[0], b[0], "cases with unchanged values keep their ids");
    assert_ne!(a[2], b[2]);
}

fn result(id: &str, acc: Option<f64>, lat: f64, status: Status) -> CaseResult {
    CaseResult {
        case_id: id.into(),
        algorithm: "a".into(),
        paradigm: "singletasklearning".into(),
        status,
        error: None,
        metrics: [
            (
                "accuracy".to_string(),
                acc.map_or(Value::Null, |a| json!(a)),
            ),
            ("latency-mean".to_string(), json!(lat)),
        ]
        .into_iter()
        .collect(),
        metric_errors: BTreeMap::new(),
        measurements: BTreeMap::new(),
        intervals: BTreeMap::new(),
        runs: BTreeMap::new(),
        modules: vec![],
        grid: Default::default(),
        started_at: "2026-01-01T00:00:00+00:00".into(),
        finished_at: "2026-01-01T00:00:00+00:00".into(),
        wall_time_s: 0.0,
        url: "a.yaml".into(),
        ianvs_version: "0".into(),
    }
}

#[test]
fn ranking_uses_every_sort_key_and_puts_failures_last() {
    let meta = JobMeta {
        name: "j".into(),
        benchmark_file: String::new(),
        metrics: vec!["accuracy".into(), "latency-mean".into()],
        module_types: vec![],
        grid_columns: vec![],
        rank: config::RankConfig {
            sort_by: vec![
                ("accuracy".into(), Order::Descend),
                ("latency-mean".into(), Order::Ascend),
            ],
            visualization_mode: "selected_only".into(),
            selected: Default::default(),
            save_mode: "selected_and_all".into(),
            selected_output_columns: None,
        },
        planned: None,
    };
    let rs = vec![
        result("c1", Some(0.9), 5.0, Status::Ok),
        result("c2", None, 0.0, Status::Failed),
        result("c3", Some(0.95), 9.0, Status::Ok),
        result("c4", Some(0.9), 2.0, Status::Ok),
    ];
    let lb = story::build(&meta, &rs).unwrap();
    let id = lb.columns.iter().position(|c| c == "case_id").unwrap();
    let order: Vec<&str> = lb.rows.iter().map(|r| r[id].as_str().unwrap()).collect();
    assert_eq!(
        order,
        ["c3", "c4", "c1", "c2"],
        "accuracy desc, then latency asc, failed last"
    );
    let ranks: Vec<Value> = lb.rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ranks, [json!(1), json!(2), json!(3), Value::Null]);
    assert_eq!(
        lb.columns,
        [
            "rank",
            "algorithm",
            "accuracy",
            "latency-mean",
            "paradigm",
            "time",
            "url",
            "status",
            "case_id"
        ]
    );
}

#[test]
fn other_hyperparameters_files_may_set_different_keys() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("small.yaml"),
        "hidden_sizes: [8]\nepochs: 2\n",
    )
    .unwrap();
    std::fs::write(d.path().join("fast.yaml"), "learning_rate: 0.05\n").unwrap();
    let alg = "algorithm:\n  paradigm_type: singletasklearning\n  modules:\n    - type: basemodel\n      name: MLP\n      hyperparameters:\n        - other_hyperparameters:\n            values: [./small.yaml, ./fast.yaml]\n";
    let job = config::load_job(
        &job_with(d.path(), alg),
        &ianvs_algorithms::registry(),
        &PARADIGMS,
        &Overrides::default(),
    )
    .unwrap();
    let cases = controller::plan(&job);
    assert_eq!(cases.len(), 2);
    let (a, b) = (
        &cases[0].spec.modules[0].hyperparameters,
        &cases[1].spec.modules[0].hyperparameters,
    );
    assert_eq!(
        (a.int("epochs").unwrap(), a.float("learning_rate").unwrap()),
        (2, 0.001),
        "a key a file leaves out takes its default"
    );
    assert_eq!(
        (b.int("epochs").unwrap(), b.float("learning_rate").unwrap()),
        (5, 0.05)
    );
    assert_eq!(b.int_list("hidden_sizes").unwrap(), vec![128]);
}

#[test]
fn a_repeated_grid_value_plans_one_case_and_names_the_axis() {
    let d = tempfile::tempdir().unwrap();
    let alg = "algorithm:\n  paradigm_type: singletasklearning\n  modules:\n    - type: basemodel\n      name: MLP\n      hyperparameters:\n        - learning_rate:\n            values: [0.001, 0.001, 0.01]\n        - hidden_sizes:\n            values: [[8], [16]]\n";
    let job = config::load_job(
        &job_with(d.path(), alg),
        &ianvs_algorithms::registry(),
        &PARADIGMS,
        &Overrides::default(),
    )
    .unwrap();
    let (cases, warnings) = controller::plan_with_warnings(&job);
    // 3 × 2 grid points, two of them identical to earlier ones: 4 distinct cases.
    assert_eq!(cases.len(), 4);
    let mut ids: Vec<&str> = cases.iter().map(|c| c.spec.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("`learning_rate`") && warnings[0].contains("0.001"),
        "{}",
        warnings[0]
    );
    assert_eq!(controller::plan(&job).len(), 4);
}
