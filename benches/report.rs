//! Cost of the confidence intervals and of the report: the bootstrap over 1,000 test samples
//! for every classification metric (what each MNIST case pays after it runs), and drawing the
//! report of the committed fixture job. Neither may rival the benchmark it describes.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use ianvs::metrics;
use ianvs_paradigms::records::{CaseOutput, ClassificationRecord, Records};

fn classification_output(n: usize) -> CaseOutput {
    // A deterministic mix: 90 % correct over 10 classes, latencies with a tail.
    let recs = (0..n)
        .map(|i| {
            let label = (i % 10) as u32;
            let prediction = if i % 10 == 3 { (label + 1) % 10 } else { label };
            ClassificationRecord {
                index: i,
                label,
                prediction,
                confidence: 0.9,
                latency_s: 1e-4 * (1.0 + (i * 7919 % 100) as f64 / 20.0),
                warmup: i < 10,
            }
        })
        .collect();
    let mut o = CaseOutput::new(Records::Classification(recs));
    o.measurements.insert("training_time_s".into(), 1.0);
    o.measurements.insert("num_parameters".into(), 1000.0);
    o
}

fn bench(c: &mut Criterion) {
    let out = classification_output(1000);
    let defs: Vec<&'static metrics::MetricDef> = [
        "accuracy",
        "macro-f1",
        "latency-mean",
        "latency-p50",
        "latency-p95",
        "throughput",
        "training-time",
        "num-parameters",
    ]
    .iter()
    .map(|m| metrics::canonical(m).unwrap())
    .collect();
    let values: Vec<(&'static str, f64)> = metrics::compute_all(&defs, &out)
        .into_iter()
        .map(|(id, v)| (id, v.unwrap()))
        .collect();
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function("intervals-8-metrics-1000-samples", |b| {
        b.iter(|| metrics::interval::intervals(&defs, &out, &values, "bench"))
    });

    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/report/report-fixture");
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("report-fixture");
    copy(&fixture, &job);
    g.bench_function("report-of-fixture-job-8-charts", |b| {
        b.iter(|| ianvs::report::write(&job).unwrap())
    });
    g.finish();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
