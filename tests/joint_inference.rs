//! Joint inference end to end on real MNIST with real trained models (a narrow MLP on the edge,
//! a CNN in the cloud): the collaboration trade-off holds, metrics agree with the per-sample
//! records, both mining modes and both link timings behave, ONNX models run in the flow, and
//! bad input is rejected before anything runs.

mod common;
use common::{assert_exit, ianvs};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/joint")
        .join(name)
}

fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist/mnist_5k.csv.gz")
}

/// One finished case: its algorithm, `metrics.json`, records and `runtime.json`.
struct Case {
    algorithm: String,
    result: Value,
    records: Vec<Value>,
    runtime: Value,
}

impl Case {
    fn metric(&self, id: &str) -> f64 {
        self.result["metrics"][id].as_f64().unwrap_or_else(|| {
            panic!(
                "{} {}: no metric {id}: {}",
                self.algorithm, self.result["case_id"], self.result
            )
        })
    }
    fn hp(&self, module_type: &str, name: &str) -> Value {
        self.result["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == module_type)
            .map(|m| m["hyperparameters"][name].clone())
            .unwrap_or(Value::Null)
    }
}

fn read_cases(job_dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    for alg in std::fs::read_dir(job_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        if !alg.is_dir() || alg.file_name().unwrap() == "rank" {
            continue;
        }
        for dir in std::fs::read_dir(&alg)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| d.join("metrics.json").is_file())
        {
            let result: Value =
                serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap();
            assert_eq!(
                result["status"],
                "ok",
                "{}: {}",
                dir.display(),
                result["error"]
            );
            let records = std::fs::read_to_string(dir.join("records.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let runtime =
                serde_json::from_slice(&std::fs::read(dir.join("runtime.json")).unwrap()).unwrap();
            out.push(Case {
                algorithm: alg.file_name().unwrap().to_string_lossy().into_owned(),
                result,
                records,
                runtime,
            });
        }
    }
    out
}

fn run_job(bench: &Path, ws: &Path) -> Vec<Case> {
    let out = ianvs()
        .args(["run", "--quiet", "-f"])
        .arg(bench)
        .arg("--workspace")
        .arg(ws)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = if bench.file_name().unwrap() == "benchmark.yaml" {
        "joint"
    } else {
        "joint-mti"
    };
    read_cases(&ws.join(name))
}

/// The main job (every miner and baseline), run once for all the tests that read it.
fn main_job() -> &'static [Case] {
    static JOB: OnceLock<(tempfile::TempDir, Vec<Case>)> = OnceLock::new();
    &JOB.get_or_init(|| {
        let ws = tempfile::tempdir().unwrap();
        let cases = run_job(&fixture("benchmark.yaml"), ws.path());
        (ws, cases)
    })
    .1
}

fn by_alg<'a>(cases: &'a [Case], alg: &str) -> Vec<&'a Case> {
    cases.iter().filter(|c| c.algorithm == alg).collect()
}

/// numpy's default percentile (linear interpolation between order statistics), written out
/// independently of `ianvs::metrics::percentile`.
fn numpy_percentile(values: &[f64], q: f64) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = q / 100.0 * (s.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let frac = rank - lo as f64;
    if lo + 1 < s.len() {
        s[lo] * (1.0 - frac) + s[lo + 1] * frac
    } else {
        s[lo]
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: {a} vs {b}"
    );
}

#[test]
fn cloud_beats_edge_and_the_oracle_beats_both() {
    let cases = main_job();
    assert_eq!(cases.len(), 1 + 2 + 1 + 2 + 4 + 3 + 1);
    let edge = by_alg(cases, "edge-only")[0].metric("accuracy");
    let clouds = by_alg(cases, "cloud-only");
    let oracle = by_alg(cases, "oracle")[0];
    for c in &clouds {
        assert!(
            c.metric("accuracy") > edge + 0.02,
            "cloud {} vs edge {edge}",
            c.metric("accuracy")
        );
        assert_eq!(c.metric("edge-ratio"), 0.0);
    }
    let cloud = clouds[0].metric("accuracy");
    // Same cloud answers over both links: the link changes time, never answers.
    assert_eq!(cloud, clouds[1].metric("accuracy"));
    assert!(oracle.metric("accuracy") >= cloud && oracle.metric("accuracy") >= edge);
    assert!(
        oracle.metric("accuracy") > cloud,
        "the CNN is not right on every digit the MLP gets right"
    );
    // The oracle sends exactly the samples only the cloud gets right: far fewer than all.
    assert!(
        oracle.metric("samples-transfer-ratio") < 0.3,
        "{}",
        oracle.metric("samples-transfer-ratio")
    );
    assert_eq!(
        by_alg(cases, "edge-only")[0].metric("samples-transfer-ratio"),
        0.0
    );
}

#[test]
fn a_higher_threshold_never_sends_less_to_the_cloud() {
    let cases = main_job();
    for alg in ["threshold", "cross-entropy"] {
        let mut pts: Vec<(f64, f64, f64)> = by_alg(cases, alg)
            .iter()
            .map(|c| {
                (
                    c.hp("hard_example_mining", "threshold").as_f64().unwrap(),
                    c.metric("samples-transfer-ratio"),
                    c.metric("accuracy"),
                )
            })
            .collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(pts.len() >= 3);
        for w in pts.windows(2) {
            assert!(
                w[1].1 >= w[0].1,
                "{alg}: threshold {} sends {} < {} at {}",
                w[1].0,
                w[1].1,
                w[0].1,
                w[0].0
            );
        }
        assert!(
            pts.last().unwrap().1 > pts[0].1,
            "{alg}: the sweep should move the transfer ratio: {pts:?}"
        );
        // Sending the least confident samples buys accuracy over the edge alone.
        let edge = by_alg(cases, "edge-only")[0].metric("accuracy");
        assert!(
            pts.last().unwrap().2 > edge,
            "{alg}: {pts:?} vs edge {edge}"
        );
    }
    // Random at 0.75 sends about three times as much as at 0.25.
    let mut r: Vec<(f64, f64)> = by_alg(cases, "random")
        .iter()
        .map(|c| {
            (
                c.hp("hard_example_mining", "probability").as_f64().unwrap(),
                c.metric("samples-transfer-ratio"),
            )
        })
        .collect();
    r.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(
        (r[0].1 - 0.25).abs() < 0.08 && (r[1].1 - 0.75).abs() < 0.08,
        "{r:?}"
    );
}

#[test]
fn metrics_agree_with_the_per_sample_records() {
    for c in main_job() {
        let recs = &c.records;
        let n = recs.len() as f64;
        assert_eq!(
            recs.len(),
            250,
            "the Subset processor keeps 250 test digits"
        );
        let cloud = recs.iter().filter(|r| r["route"] == "cloud").count() as f64;
        close(c.metric("edge-ratio"), (n - cloud) / n, "edge-ratio");
        close(
            c.metric("samples-transfer-ratio"),
            cloud / n,
            "transfer ratio",
        );
        close(c.metric("cloud-calls"), cloud, "cloud calls");
        let up: f64 = recs
            .iter()
            .map(|r| r["uplink_bytes"].as_f64().unwrap())
            .sum();
        let down: f64 = recs
            .iter()
            .map(|r| r["downlink_bytes"].as_f64().unwrap())
            .sum();
        close(c.metric("uplink-bytes"), up, "uplink bytes");
        close(c.metric("downlink-bytes"), down, "downlink bytes");
        // The payloads are the real serialized sizes: 784 float32 pixels up, class + confidence down.
        close(up, cloud * 784.0 * 4.0, "f32 uplink payloads");
        close(down, cloud * 8.0, "answer payloads");
        let correct = recs
            .iter()
            .filter(|r| r["prediction"] == r["label"])
            .count() as f64;
        close(c.metric("accuracy"), correct / n, "accuracy");

        let lat_ms: Vec<f64> = recs
            .iter()
            .map(|r| r["latency_s"].as_f64().unwrap() * 1e3)
            .collect();
        close(
            c.metric("latency-mean"),
            lat_ms.iter().sum::<f64>() / n,
            "latency mean",
        );
        close(
            c.metric("latency-p50"),
            numpy_percentile(&lat_ms, 50.0),
            "latency p50",
        );
        close(
            c.metric("latency-p95"),
            numpy_percentile(&lat_ms, 95.0),
            "latency p95",
        );
        close(
            c.metric("throughput"),
            n / (lat_ms.iter().sum::<f64>() / 1e3),
            "throughput",
        );

        let sleep = c.hp("link", "timing") == "sleep";
        for r in recs {
            let f = |k: &str| r[k].as_f64().unwrap();
            match r["route"].as_str().unwrap() {
                "cloud" => {
                    assert_eq!(r["cloud_prediction"], r["prediction"]);
                    assert!(
                        f("uplink_s") > 0.0 && f("downlink_s") > 0.0 && f("cloud_s") > 0.0,
                        "{r}"
                    );
                }
                _ => {
                    assert_eq!(r["edge_prediction"], r["prediction"]);
                    assert!(
                        r["cloud_prediction"].is_null()
                            && f("uplink_bytes") == 0.0
                            && f("uplink_s") == 0.0,
                        "{r}"
                    );
                }
            }
            // inference-then-mining: the edge answered every sample first.
            assert!(f("edge_s") > 0.0 && !r["edge_prediction"].is_null(), "{r}");
            let parts = f("edge_s")
                + f("mining_s")
                + f("codec_s")
                + f("uplink_s")
                + f("cloud_s")
                + f("downlink_s");
            if sleep {
                // Measured wall time: at least the parts, which include really slept link time.
                assert!(
                    f("latency_s") >= parts - 1e-6 && f("uplink_s") + f("downlink_s") >= 0.004,
                    "{r}"
                );
            } else {
                close(
                    f("latency_s"),
                    parts,
                    "virtual latency is the sum of its parts",
                );
            }
        }
    }
}

#[test]
fn the_link_costs_time_not_answers_and_models_train_once() {
    let cases = main_job();
    let clouds = by_alg(cases, "cloud-only");
    let lan = clouds
        .iter()
        .find(|c| c.hp("link", "rtt_ms").as_f64() == Some(1.0))
        .unwrap();
    let wan = clouds
        .iter()
        .find(|c| c.hp("link", "rtt_ms").as_f64() == Some(80.0))
        .unwrap();
    // The modelled link, exactly: LAN 1 ms RTT, no jitter, 3136 B up and 8 B down at 100 Mbit/s.
    for r in &lan.records {
        close(
            r["uplink_s"].as_f64().unwrap(),
            0.0005 + 3136.0 * 8.0 / 100e6,
            "LAN uplink",
        );
        close(
            r["downlink_s"].as_f64().unwrap(),
            0.0005 + 64.0 / 100e6,
            "LAN downlink",
        );
    }
    // WAN: RTT uniform in 80 ± 20 ms, 3136 B at 2 Mbit/s (12.544 ms), 8 B at 10 Mbit/s.
    let link_ms: Vec<f64> = wan
        .records
        .iter()
        .map(|r| (r["uplink_s"].as_f64().unwrap() + r["downlink_s"].as_f64().unwrap()) * 1e3)
        .collect();
    let tx_ms = 12.544 + 0.0064;
    assert!(link_ms
        .iter()
        .all(|&l| (60.0 + tx_ms - 1e-6..=100.0 + tx_ms + 1e-6).contains(&l)));
    let mean = link_ms.iter().sum::<f64>() / link_ms.len() as f64;
    assert!(
        (mean - (80.0 + tx_ms)).abs() < 2.5,
        "jitter should average out: {mean}"
    );
    let spread = link_ms.iter().cloned().fold(f64::MIN, f64::max)
        - link_ms.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 30.0,
        "jitter should spread the RTT over ±20 ms: {spread}"
    );
    // Compute time is noise next to the WAN's ~92 ms.
    assert!(wan.metric("latency-mean") > lan.metric("latency-mean") + 80.0);

    // Trained once per job: exactly one case built each model; every case reports the same
    // training time for it.
    for role in ["edge", "cloud"] {
        let built = cases
            .iter()
            .filter(|c| c.runtime[role]["built_in_this_case"] == true)
            .count();
        assert_eq!(built, 1, "{role} model built in {built} cases");
        let t: Vec<f64> = cases
            .iter()
            .map(|c| c.runtime[role]["training_time_s"].as_f64().unwrap())
            .collect();
        assert!(t.iter().all(|x| *x == t[0] && *x > 0.0), "{role}: {t:?}");
    }
}

#[test]
fn mining_then_inference_runs_only_the_routed_model() {
    let ws = tempfile::tempdir().unwrap();
    let cases = run_job(&fixture("benchmark_mti.yaml"), ws.path());
    assert_eq!(cases.len(), 3);
    for c in &cases {
        for r in &c.records {
            if r["route"] == "cloud" {
                assert!(r["edge_prediction"].is_null() && r["edge_s"] == 0.0, "{r}");
                assert!(!r["cloud_prediction"].is_null());
                assert_eq!(
                    r["uplink_bytes"],
                    8 + 784,
                    "u8 codec: header + one byte per pixel"
                );
            } else {
                assert!(
                    r["cloud_prediction"].is_null()
                        && r["cloud_s"] == 0.0
                        && r["edge_s"].as_f64().unwrap() > 0.0,
                    "{r}"
                );
            }
        }
    }
    let cloud = by_alg(&cases, "cloud-only")[0];
    let oracle = by_alg(&cases, "oracle")[0];
    assert_eq!(cloud.metric("edge-ratio"), 0.0);
    assert!(oracle.metric("accuracy") >= cloud.metric("accuracy"));
    assert!(
        oracle.metric("edge-ratio") > 0.5,
        "the oracle keeps every digit the edge gets right on the edge"
    );
    let random = by_alg(&cases, "random")[0];
    assert!((random.metric("samples-transfer-ratio") - 0.5).abs() < 0.1);
}

fn stderr_of(args: &[&str], file: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = ianvs();
    cmd.args(args).arg("-f").arg(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_out_of_range_threshold_is_a_located_config_error() {
    let bench = fixture("bad/benchmark_out_of_range.yaml");
    let (code, err) = stderr_of(&["validate"], &bench, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("threshold-1.5.yaml:12:") && err.contains("1.5 is out of range"),
        "{err}"
    );
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(ws.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !ws.path().join("bad-threshold").exists(),
        "nothing may be written"
    );
}

#[test]
fn a_miner_that_needs_the_edge_output_is_rejected_in_mining_then_inference() {
    let (code, err) = stderr_of(&["validate"], &fixture("bad/benchmark_mode.yaml"), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("Threshold decides from the edge model's output")
            && err.contains("inference-then-mining")
            && err.contains("threshold.yaml"),
        "{err}"
    );
}

/// Writes a job whose edge model is an ONNX file, next to the file.
fn onnx_job(dir: &Path, edge_onnx: &Path, cloud: &str) -> PathBuf {
    std::fs::write(
        dir.join("testenv.yaml"),
        format!("testenv:\n  dataset:\n    data: \"{}\"\n    feature_scale: 255\n    split: {{ method: interleaved, test_fraction: 0.2 }}\n  metrics:\n    - name: accuracy\n    - name: edge-ratio\n  warmup_samples: 2\n", mnist().display()),
    )
    .unwrap();
    std::fs::write(
        dir.join("alg.yaml"),
        format!(
            "algorithm:\n  paradigm_type: jointinference\n  modules:\n    - type: edgemodel\n      name: ONNX\n      hyperparameters:\n        - path:\n            values: [\"{}\"]\n    - type: cloudmodel\n{cloud}    - type: hard_example_mining\n      name: Threshold\n      hyperparameters:\n        - threshold:\n            values: [0.9]\n    - type: dataset_processor\n      name: Subset\n      hyperparameters:\n        - max_samples:\n            values: [100]\n",
            edge_onnx.display()
        ),
    )
    .unwrap();
    let bench = dir.join("benchmark.yaml");
    std::fs::write(&bench, "benchmarkingjob:\n  name: onnx\n  workspace: ./ws\n  testenv: ./testenv.yaml\n  test_object:\n    algorithms:\n      - { name: onnx-edge, url: ./alg.yaml }\n  rank:\n    sort_by:\n      - { accuracy: descend }\n").unwrap();
    bench
}

/// Whether ONNX Runtime can be loaded here (see `algorithms/tests/onnx_runtime.rs`).
fn ort_available() -> bool {
    match ianvs_algorithms::onnx::runtime_library() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                !std::env::var("IANVS_REQUIRE_ORT").is_ok_and(|v| !v.is_empty() && v != "0"),
                "{e} (IANVS_REQUIRE_ORT is set)"
            );
            eprintln!("skipping: {e}");
            false
        }
    }
}

const CNN_CLOUD: &str =
    "      name: CNN\n      hyperparameters:\n        - epochs:\n            values: [1]\n";
const MLP_CLOUD: &str = "      name: MLP\n      hyperparameters:\n        - hidden_sizes:\n            values: [[64]]\n        - epochs:\n            values: [2]\n";

#[test]
fn an_edge_model_with_other_classes_than_the_cloud_is_rejected_before_anything_runs() {
    if !ort_available() {
        return;
    }
    use ianvs_algorithms::classifiers::{Architecture, Classifier};
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("five-classes.onnx");
    let five = Classifier::new(
        Architecture::Mlp { hidden: vec![8] },
        (1, 28, 28),
        5,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    ianvs_algorithms::onnx::export::save_onnx(&five, &onnx).unwrap();
    let bench = onnx_job(dir.path(), &onnx, CNN_CLOUD);
    let (code, err) = stderr_of(&["run", "--quiet"], &bench, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "the edge model (ONNX) predicts 5 classes but the cloud model (CNN) predicts 10"
        ),
        "{err}"
    );
    assert!(
        err.contains("alg.yaml") && err.contains("nothing was run or written"),
        "{err}"
    );
    assert!(!dir.path().join("ws").exists(), "nothing may be written");
}

#[test]
fn a_missing_onnx_runtime_or_model_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bench = onnx_job(dir.path(), &dir.path().join("absent.onnx"), MLP_CLOUD);
    let (code, err) = stderr_of(
        &["validate"],
        &bench,
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read it"),
        "a missing model file is reported first: {err}"
    );
    // A file that is not ONNX.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, "rtt_ms: 1\n").unwrap();
    let (code, err) = stderr_of(&["validate"], &onnx_job(dir.path(), &junk, MLP_CLOUD), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("junk.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );
    // A real model with no runtime library to run it: exporting needs no runtime.
    use ianvs_algorithms::classifiers::{Architecture, Classifier};
    let model = dir.path().join("model.onnx");
    let mlp = Classifier::new(
        Architecture::Mlp { hidden: vec![8] },
        (1, 28, 28),
        10,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    ianvs_algorithms::onnx::export::save_onnx(&mlp, &model).unwrap();
    let (code, err) = stderr_of(
        &["validate"],
        &onnx_job(dir.path(), &model, MLP_CLOUD),
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "ORT_DYLIB_PATH is set to /nonexistent/libonnxruntime.so, which is not a file"
        ),
        "{err}"
    );
}

#[test]
fn an_onnx_edge_model_runs_in_the_flow_and_matches_candle() {
    if !ort_available() {
        return;
    }
    use ianvs_algorithms::classifiers::{Architecture, Classifier, TrainConfig};
    use ianvs_paradigms::data::{self, LoadOptions, SplitMethod};
    // Train the edge network here, export it, and let the flow run it through ONNX Runtime.
    let all = data::load(
        &mnist(),
        &LoadOptions {
            feature_scale: 255.0,
            ..Default::default()
        },
    )
    .unwrap();
    let (train, test) = data::split(&all, SplitMethod::Interleaved, 0.2, 0);
    let mut mlp = Classifier::new(
        Architecture::Mlp { hidden: vec![32] },
        (1, 28, 28),
        10,
        1,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    mlp.train(
        &train.features,
        &train.labels,
        &TrainConfig {
            epochs: 1,
            ..Default::default()
        },
        &mut |_, _| true,
        &mut |_| {},
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("edge.onnx");
    ianvs_algorithms::onnx::export::save_onnx(&mlp, &onnx).unwrap();
    let bench = onnx_job(dir.path(), &onnx, MLP_CLOUD);
    let out = ianvs()
        .args(["run", "--quiet", "-f"])
        .arg(&bench)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let cases = read_cases(&dir.path().join("ws/onnx"));
    let case = &cases[0];
    assert_eq!(case.records.len(), 100);
    assert!(case.runtime["edge"]["parameters"].as_u64() == Some(mlp.num_parameters() as u64));
    // The Subset processor keeps 10 digits per class, in test-split order; the edge answers of
    // the ONNX model are the candle model's answers on the same digits.
    let subset = ianvs_algorithms::processors::Subset {
        max_samples: 100,
        seed: 0,
    };
    let kept = ianvs_paradigms::joint_inference::DatasetProcessor::process(&subset, &test).unwrap();
    let candle = mlp.predict(&kept.features).unwrap();
    for (r, p) in case.records.iter().zip(&candle) {
        assert_eq!(r["edge_prediction"].as_u64(), Some(*p as u64), "{r}");
    }
}
