//! Per-sample harness overhead of joint inference: everything the paradigm does for a sample
//! outside the models' forward passes (timers, the miner, payload encode/decode, the link
//! model, building the record), compared with the edge model's own forward pass.
//!
//! Criterion times the edge forward pass alone and whole samples through `Flow::sample`; then a
//! direct measurement over the MNIST test digits reports overhead = wall time − forward time,
//! per sample, as a share of the edge forward pass. Models are the scenario's (MLP 784-32-10 on
//! the edge, LeNet-like CNN in the cloud) with seeded weights; timing does not depend on
//! training.
//!
//! Run: `cargo bench --bench joint_inference`.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use ianvs_algorithms::basemodels::ClassifierModel;
use ianvs_algorithms::classifiers::{Architecture, Classifier, TrainConfig};
use ianvs_algorithms::miners::{CloudOnly, EdgeOnly, Threshold};
use ianvs_paradigms::data::{self, Dataset, LoadOptions, SplitMethod};
use ianvs_paradigms::joint_inference::{Flow, HardExampleMiner, Mode};
use ianvs_paradigms::link::{InputCodec, Link, LinkSpec, Timing};
use ianvs_paradigms::modules::BaseModel;

fn test_digits() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist/mnist_5k.csv.gz");
    let all = data::load(
        &path,
        &LoadOptions {
            feature_scale: 255.0,
            ..Default::default()
        },
    )
    .expect("vendored MNIST");
    data::split(&all, SplitMethod::Interleaved, 0.2, 0).1
}

fn model(arch: Architecture) -> ClassifierModel {
    ClassifierModel {
        model: Classifier::new(arch, (1, 28, 28), 10, 42, &Device::Cpu).expect("model"),
        train: TrainConfig::default(),
    }
}

fn wan() -> LinkSpec {
    LinkSpec {
        rtt_ms: 60.0,
        jitter_ms: 15.0,
        uplink_mbps: 2.0,
        downlink_mbps: 10.0,
        timing: Timing::Virtual,
        seed: 0,
    }
}

/// Runs every test digit through the flow; returns (wall seconds, forward seconds, samples).
fn measure(flow: &Flow, test: &Dataset, miner: &mut dyn HardExampleMiner) -> (f64, f64, usize) {
    let mut link = Link::new(wan());
    let mut forward = 0.0;
    let t0 = Instant::now();
    for i in 0..test.len() {
        let r = flow
            .sample(
                i,
                test.x(i),
                test.labels[i],
                Mode::InferenceThenMining,
                miner,
                None,
                &mut link,
            )
            .expect("sample");
        forward += r.edge_s + r.cloud_s;
    }
    (t0.elapsed().as_secs_f64(), forward, test.len())
}

fn bench(c: &mut Criterion) {
    let test = test_digits();
    let edge = model(Architecture::Mlp { hidden: vec![32] });
    let cloud = model(Architecture::Cnn {
        conv_channels: (6, 16),
        fc_hidden: 120,
    });
    let flow = |codec| Flow {
        edge: &edge as &dyn BaseModel,
        cloud: &cloud as &dyn BaseModel,
        samples: None,
        codec,
        timing: Timing::Virtual,
    };
    let f32_flow = flow(InputCodec::F32);
    let x = test.x(7).to_vec();

    let mut g = c.benchmark_group("joint-inference");
    g.bench_function("edge-forward (MLP 784-32-10)", |b| {
        b.iter(|| edge.predict_proba(black_box(&x)).unwrap())
    });
    g.bench_function("sample edge-only", |b| {
        let mut link = Link::new(wan());
        b.iter(|| {
            f32_flow
                .sample(
                    7,
                    black_box(&x),
                    3,
                    Mode::InferenceThenMining,
                    &mut EdgeOnly,
                    None,
                    &mut link,
                )
                .unwrap()
        })
    });
    g.bench_function("cloud-forward (CNN)", |b| {
        b.iter(|| cloud.predict_proba(black_box(&x)).unwrap())
    });
    for (name, codec) in [
        ("sample cloud-only f32", InputCodec::F32),
        ("sample cloud-only deflate", InputCodec::Deflate),
    ] {
        let fl = flow(codec);
        g.bench_function(name, |b| {
            let mut link = Link::new(wan());
            b.iter(|| {
                fl.sample(
                    7,
                    black_box(&x),
                    3,
                    Mode::InferenceThenMining,
                    &mut CloudOnly,
                    None,
                    &mut link,
                )
                .unwrap()
            })
        });
    }
    g.finish();

    // Overhead = wall time − forward passes, over all 1,000 test digits, best of 5 rounds.
    for _ in 0..50 {
        edge.predict_proba(&x).unwrap();
        cloud.predict_proba(&x).unwrap();
    }
    let mut edge_fwd = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..test.len() {
            black_box(edge.predict_proba(test.x(i)).unwrap());
        }
        edge_fwd = edge_fwd.min(t0.elapsed().as_secs_f64() / test.len() as f64);
    }
    println!(
        "\nper-sample harness overhead (outside forward passes), {} MNIST test digits, best of 5:",
        test.len()
    );
    println!("  edge forward pass alone: {:.2} µs", edge_fwd * 1e6);
    let miners: Vec<(&str, InputCodec, Box<dyn Fn() -> Box<dyn HardExampleMiner>>)> = vec![
        ("EdgeOnly", InputCodec::F32, Box::new(|| Box::new(EdgeOnly))),
        (
            "Threshold 0.9",
            InputCodec::F32,
            Box::new(|| Box::new(Threshold { threshold: 0.9 })),
        ),
        (
            "CloudOnly, f32 uplink",
            InputCodec::F32,
            Box::new(|| Box::new(CloudOnly)),
        ),
        (
            "CloudOnly, deflate uplink",
            InputCodec::Deflate,
            Box::new(|| Box::new(CloudOnly)),
        ),
    ];
    for (name, codec, make) in miners {
        let fl = flow(codec);
        let best = (0..5)
            .map(|_| {
                let (wall, fwd, n) = measure(&fl, &test, make().as_mut());
                (wall - fwd) / n as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "  {name:<28} overhead {:>7.2} µs/sample = {:>5.1} % of the edge forward pass",
            best * 1e6,
            best / edge_fwd * 100.0
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
