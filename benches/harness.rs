//! Harness overhead: config load + validation + grid expansion + leaderboard writing for a
//! trivial configuration of 10,000 cases, and `validate` of a 100,000-case job (target: under
//! 1 s, memory flat in the case count: cases are checked one at a time, never held together).
//! The harness must never be the bottleneck.

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ianvs::config::{self, Overrides};
use ianvs::controller::{self, CaseResult, Status};
use ianvs::story::{self, JobMeta};
use std::sync::LazyLock;

static PARADIGMS: LazyLock<Vec<Box<dyn ianvs_paradigms::Paradigm>>> =
    LazyLock::new(ianvs_paradigms::paradigms);

/// Writes a job whose single algorithm has 4 axes of 10 values: 10,000 cases.
fn write_job(dir: &Path) -> std::path::PathBuf {
    write_job_with(dir, 10)
}

/// The same job with a fifth axis of `n` hidden sizes: 10,000 × `n` cases.
fn write_big_job(dir: &Path, n: usize) -> std::path::PathBuf {
    let f = write_job_with(dir, 10);
    let sizes = (0..n)
        .map(|i| format!("[{}]", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let alg = std::fs::read_to_string(dir.join("alg.yaml")).unwrap()
        + &format!("        - hidden_sizes:\n            values: [{sizes}]\n");
    std::fs::write(dir.join("alg.yaml"), alg).unwrap();
    f
}

fn write_job_with(dir: &Path, _per_axis: usize) -> std::path::PathBuf {
    let data: String = (0..20)
        .map(|i| format!("{},{},{}\n", i, i * 2, i % 2))
        .collect();
    std::fs::write(dir.join("data.csv"), data).unwrap();
    std::fs::write(dir.join("testenv.yaml"), "testenv:\n  dataset:\n    data: ./data.csv\n  metrics:\n    - name: accuracy\n    - name: latency-mean\n").unwrap();
    let vals = |f: &dyn Fn(usize) -> String| (0..10).map(f).collect::<Vec<_>>().join(", ");
    let alg = format!(
        "algorithm:\n  paradigm_type: singletasklearning\n  modules:\n    - type: basemodel\n      name: MLP\n      hyperparameters:\n        - epochs:\n            values: [{}]\n        - batch_size:\n            values: [{}]\n        - learning_rate:\n            values: [{}]\n        - seed:\n            values: [{}]\n",
        vals(&|i| (i + 1).to_string()),
        vals(&|i| (8 * (i + 1)).to_string()),
        vals(&|i| format!("0.00{}", i + 1)),
        vals(&|i| i.to_string()),
    );
    std::fs::write(dir.join("alg.yaml"), alg).unwrap();
    let bench = "benchmarkingjob:\n  name: bench\n  workspace: ./ws\n  testenv: ./testenv.yaml\n  test_object:\n    algorithms:\n      - name: mlp\n        url: ./alg.yaml\n  rank:\n    sort_by:\n      - accuracy: descend\n      - latency-mean: ascend\n";
    let f = dir.join("benchmark.yaml");
    std::fs::write(&f, bench).unwrap();
    f
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_job(dir.path());
    let reg = ianvs_algorithms::registry();
    let mut g = c.benchmark_group("harness-10k-cases");
    g.sample_size(10);
    g.bench_function("load+validate+plan", |b| {
        b.iter(|| {
            let job = config::load_job(&file, &reg, &PARADIGMS, &Overrides::default()).unwrap();
            let cases = controller::plan(&job);
            assert_eq!(cases.len(), 10_000);
        })
    });
    let job = config::load_job(&file, &reg, &PARADIGMS, &Overrides::default()).unwrap();
    let cases = controller::plan(&job);
    let meta = JobMeta::of(&job);
    let results: Vec<CaseResult> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| CaseResult {
            case_id: c.spec.id.clone(),
            algorithm: c.spec.algorithm.clone(),
            paradigm: "singletasklearning".into(),
            status: Status::Ok,
            error: None,
            metrics: [
                (
                    "accuracy".to_string(),
                    serde_json::json!((i * 7919 % 1000) as f64 / 1000.0),
                ),
                (
                    "latency-mean".to_string(),
                    serde_json::json!(0.1 + (i % 13) as f64),
                ),
            ]
            .into_iter()
            .collect(),
            metric_errors: BTreeMap::new(),
            measurements: BTreeMap::new(),
            intervals: BTreeMap::new(),
            runs: BTreeMap::new(),
            modules: c.spec.modules.clone(),
            grid: c.grid_values.iter().cloned().collect(),
            started_at: "2026-01-01T00:00:00+00:00".into(),
            finished_at: "2026-01-01T00:00:01+00:00".into(),
            wall_time_s: 1.0,
            url: "alg.yaml".into(),
            ianvs_version: "0".into(),
        })
        .collect();
    let job_dir = dir.path().join("ws/bench");
    std::fs::create_dir_all(&job_dir).unwrap();
    g.bench_function("rank+write-leaderboards", |b| {
        b.iter(|| story::write_rank_from(&job_dir, &meta, &results).unwrap())
    });
    g.finish();

    // `ianvs validate` of 100,000 cases: load + resolve + validate, then every case planned and
    // preflight-checked one at a time (what the CLI does).
    let big = tempfile::tempdir().unwrap();
    let big_file = write_big_job(big.path(), 10);
    let mut g = c.benchmark_group("validate-100k-cases");
    g.sample_size(10);
    g.bench_function("load+validate+preflight", |b| {
        b.iter(|| {
            let job = config::load_job(&big_file, &reg, &PARADIGMS, &Overrides::default()).unwrap();
            assert_eq!(config::grid::total(&job.algorithms), 100_000);
            ianvs::preflight::check(&job, controller::plan_iter(&job), &reg).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
