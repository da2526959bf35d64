//! Lifelong learning end to end: the GEM metrics on small hand-computed matrices, the
//! Split-MNIST strategy comparison on real digits with fixed seeds (forgetting, replay, the
//! per-task knowledge base, joint training), unseen-task detection, and bad input rejected
//! before anything trains.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ianvs::metrics;
use ianvs_paradigms::lifelong::{EvalRecord, LifelongRecord, RoundRecord, StreamRecord};
use ianvs_paradigms::records::{CaseOutput, Records};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lifelong")
}

fn ianvs() -> Command {
    let mut c = Command::cargo_bin("ianvs").unwrap();
    // The models are small: on a shared 2-core machine candle's spinning worker pool costs more
    // than it gains. One thread also keeps every float sum in one order.
    c.env("NO_COLOR", "1").env("CANDLE_NUM_THREADS", "1");
    c
}

fn metric(id: &str, o: &CaseOutput) -> f64 {
    (metrics::canonical(id)
        .unwrap_or_else(|| panic!("no metric {id}"))
        .compute)(o)
    .unwrap_or_else(|e| panic!("{id}: {e:#}"))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-12, "{what}: {a} != {b}");
}

/// Records whose accuracy matrix is `r` (after rounds 1..T) with untrained row `b`: 20 test
/// samples per cell, `round(acc · 20)` of them right.
fn records_for(r: &[Vec<f64>], b: &[f64]) -> Vec<LifelongRecord> {
    let t = b.len();
    let mut recs = Vec::new();
    for (round, row) in std::iter::once(b)
        .chain(r.iter().map(Vec::as_slice))
        .enumerate()
    {
        if round > 0 {
            recs.push(LifelongRecord::Round(RoundRecord {
                round,
                task: round - 1,
                task_name: format!("t{round}"),
                stream_samples: 10,
                inferred: 0,
                uploaded: 10,
                uplink_bytes: 40,
                train_seconds: 0.5 * round as f64,
                trained_samples: 10,
                models_sent: 1,
                downlink_model_bytes: 100,
                downlink_identity_bytes: 8,
            }));
        }
        for (task, &acc) in row.iter().enumerate().take(t) {
            let right = (acc * 20.0).round() as usize;
            for index in 0..20 {
                recs.push(LifelongRecord::Eval(EvalRecord {
                    after_round: round,
                    task,
                    index,
                    label: 1,
                    prediction: u32::from(index < right),
                    allocated_task: None,
                }));
            }
        }
    }
    recs
}

#[test]
fn gem_metrics_match_hand_computed_values_on_fixed_matrices() {
    // R[i][j]: accuracy on task j after round i; b: the untrained model.
    let r = vec![
        vec![0.9, 0.2, 0.1],
        vec![0.6, 0.8, 0.3],
        vec![0.7, 0.5, 0.95],
    ];
    let b = [0.1, 0.1, 0.15];
    let mut recs = records_for(&r, &b);
    // Detection in round 2: 3 unseen samples (2 flagged), 2 known (1 flagged).
    for (unseen, flagged) in [
        (true, true),
        (true, true),
        (true, false),
        (false, true),
        (false, false),
    ] {
        recs.push(LifelongRecord::Stream(StreamRecord {
            round: 2,
            task: 0,
            index: 0,
            label: 0,
            unseen,
            flagged,
            score: Some(0.0),
            prediction: Some(0),
        }));
    }
    // Round 1 uploads everything without inferring: not part of detection or transfer ratio.
    recs.push(LifelongRecord::Stream(StreamRecord {
        round: 1,
        task: 0,
        index: 0,
        label: 0,
        unseen: true,
        flagged: true,
        score: None,
        prediction: None,
    }));
    let o = CaseOutput::new(Records::Lifelong(recs));

    close(
        metric("average-accuracy", &o),
        (0.7 + 0.5 + 0.95) / 3.0,
        "ACC",
    );
    // ((0.7 − 0.9) + (0.5 − 0.8)) / 2
    close(metric("BWT", &o), -0.25, "BWT");
    // ((R[1][2] − b[2]) + (R[2][3] − b[3])) / 2 = ((0.2 − 0.1) + (0.3 − 0.15)) / 2
    close(metric("FWT", &o), 0.125, "FWT");
    // task 1: max(0.9, 0.6) − 0.7; task 2: max(0.2, 0.8) − 0.5
    close(metric("forgetting", &o), (0.2 + 0.3) / 2.0, "forgetting");
    close(
        metric("learning-accuracy", &o),
        (0.9 + 0.8 + 0.95) / 3.0,
        "LA",
    );
    // Ianvs's formulas on Ianvs's layout (task 1 = initial round): see src/metrics/lifelong.rs.
    close(
        metric("ianvs-bwt", &o),
        ((0.8 - 0.2) + (0.3 - 0.1) + (0.5 - 0.8) + (0.95 - 0.3)) / 4.0,
        "ianvs-bwt",
    );
    close(
        metric("ianvs-fwt", &o),
        ((0.2 - 0.2) + (0.3 - 0.1)) / 2.0,
        "ianvs-fwt",
    );
    close(metric("detection-precision", &o), 2.0 / 3.0, "precision");
    close(metric("detection-recall", &o), 2.0 / 3.0, "recall");
    close(metric("detection-false-positive-rate", &o), 0.5, "fpr");
    close(
        metric("samples_transfer_ratio", &o),
        3.0 / 5.0,
        "transfer ratio",
    );
    close(metric("uplink-sample-bytes", &o), 120.0, "uplink");
    close(metric("downlink-model-bytes", &o), 300.0, "downlink");
    close(metric("training-time-per-round", &o), 1.0, "training time");
    // One model for every task: allocation accuracy does not apply and says so.
    assert!((metrics::canonical("task-allocation-accuracy")
        .unwrap()
        .compute)(&o)
    .is_err());
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The one case folder of an algorithm in a job folder.
fn case_dir(job: &Path, algorithm: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(job.join(algorithm))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{algorithm}: {dirs:?}");
    dirs[0].clone()
}

#[test]
fn split_mnist_strategies_forget_as_expected_and_detection_works() {
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .current_dir(fixtures())
        .args(["run", "-f", "benchmark.yaml", "-q", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = ws.path().join("lifelong-tiny");

    let algs = ["finetune", "replay", "ewc", "pertaskmodels", "joint"];
    let m: Vec<Value> = algs
        .iter()
        .map(|a| read_json(&case_dir(&job, a).join("metrics.json")))
        .collect();
    let get = |a: &str, id: &str| -> f64 {
        let i = algs.iter().position(|x| *x == a).unwrap();
        m[i]["metrics"][id]
            .as_f64()
            .unwrap_or_else(|| panic!("{a} has no {id}: {}", m[i]))
    };
    for a in algs {
        println!(
            "{a:>14}: ACC {:.3}  BWT {:+.3}  FWT {:+.3}  forgetting {:.3}  transfer ratio {:.3}",
            get(a, "average-accuracy"),
            get(a, "bwt"),
            get(a, "fwt"),
            get(a, "forgetting"),
            get(a, "samples-transfer-ratio")
        );
        println!(
            "{}",
            std::fs::read_to_string(case_dir(&job, a).join("accuracy_matrix.csv")).unwrap()
        );
    }

    // Naive fine-tuning forgets catastrophically.
    assert!(
        get("finetune", "bwt") < -0.5,
        "fine-tuning BWT {}",
        get("finetune", "bwt")
    );
    // Replay and the per-task knowledge base forget much less.
    for a in ["replay", "pertaskmodels"] {
        assert!(
            get(a, "forgetting") < get("finetune", "forgetting") - 0.2,
            "{a} forgets {} vs fine-tuning {}",
            get(a, "forgetting"),
            get("finetune", "forgetting")
        );
        assert!(
            get(a, "bwt") > get("finetune", "bwt") + 0.2,
            "{a} BWT {}",
            get(a, "bwt")
        );
    }
    // Joint training on everything seen so far is the best on final average accuracy.
    for a in ["finetune", "replay", "ewc", "pertaskmodels"] {
        assert!(
            get("joint", "average-accuracy") > get(a, "average-accuracy"),
            "joint {} vs {a} {}",
            get("joint", "average-accuracy"),
            get(a, "average-accuracy")
        );
    }
    // The per-task knowledge base allocates most test samples to their own task's model.
    assert!(get("pertaskmodels", "task-allocation-accuracy") > 0.7);

    // The matrix artifact: a header, the untrained row and one row per round; its last row
    // averages to the reported average accuracy.
    let csv = std::fs::read_to_string(case_dir(&job, "joint").join("accuracy_matrix.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(
        lines[0].starts_with("after_round,task 1 (classes 0+1)")
            && lines[1].starts_with("untrained,")
    );
    let last: Vec<f64> = lines[6]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!((last.iter().sum::<f64>() / 5.0 - get("joint", "average-accuracy")).abs() < 1e-3);

    // Unseen-task detection (PrototypeDistance by default) runs on the edge before the cloud
    // trains, so every strategy sees the same uploads: most samples of each new task go up,
    // few of the known tasks do.
    for id in [
        "detection-precision",
        "detection-recall",
        "detection-false-positive-rate",
        "samples-transfer-ratio",
        "uplink-sample-bytes",
    ] {
        assert!(
            algs.iter().all(|a| get(a, id) == get("joint", id)),
            "{id} differs between strategies"
        );
    }
    let (precision, recall, fpr) = (
        get("joint", "detection-precision"),
        get("joint", "detection-recall"),
        get("joint", "detection-false-positive-rate"),
    );
    println!("detection: precision {precision:.3} recall {recall:.3} false-positive rate {fpr:.3}");
    assert!(
        recall > 0.6 && precision > 0.9 && fpr < 0.15,
        "precision {precision} recall {recall} fpr {fpr}"
    );
    // Per round, from the stream records: the first new task is found almost entirely.
    let records = std::fs::read_to_string(case_dir(&job, "joint").join("records.jsonl")).unwrap();
    let mut per_round = [(0usize, 0usize); 6];
    let mut uploaded_bytes = 0u64;
    for line in records.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        match r["record"].as_str() {
            Some("stream") if r["unseen"] == true && r.get("prediction").is_some() => {
                let k = r["round"].as_u64().unwrap() as usize;
                per_round[k].0 += 1;
                per_round[k].1 += usize::from(r["flagged"] == true);
            }
            Some("round") => uploaded_bytes += r["uplink_bytes"].as_u64().unwrap(),
            _ => {}
        }
    }
    let recalls: Vec<f64> = (2..=5)
        .map(|k| per_round[k].1 as f64 / per_round[k].0 as f64)
        .collect();
    println!("detection recall in rounds 2..5: {recalls:.3?}");
    assert!(recalls[0] > 0.9, "{recalls:?}");
    assert_eq!(uploaded_bytes as f64, get("joint", "uplink-sample-bytes"));
    // Each round ships one updated MLP (784·128 + 128 + 128·10 + 10 parameters, f32).
    assert_eq!(
        get("finetune", "downlink-model-bytes"),
        5.0 * 4.0 * (784.0 * 128.0 + 128.0 + 1280.0 + 10.0)
    );

    // The leaderboard ranks joint training first.
    let lb = std::fs::read_to_string(job.join("rank/all_rank.csv")).unwrap();
    assert_eq!(
        lb.lines().nth(1).and_then(|l| l.split(',').nth(1)),
        Some("joint"),
        "{lb}"
    );
}

/// `ianvs validate` on a bad configuration: exit 2 and the message; `ianvs run` writes nothing.
fn rejected(dir: &str, want: &[&str]) {
    let dir = fixtures().join("bad").join(dir);
    let out = ianvs()
        .current_dir(&dir)
        .args(["validate", "-f", "benchmark.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for w in want {
        assert!(stderr.contains(w), "expected {w:?} in:\n{stderr}");
    }
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .current_dir(&dir)
        .args(["run", "-f", "benchmark.yaml", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read_dir(ws.path()).unwrap().count(),
        0,
        "a rejected job must write nothing"
    );
}

#[test]
fn more_rounds_than_tasks_is_rejected_before_training() {
    rejected(
        "rounds-exceed-tasks",
        &[
            "`incremental_rounds` is 6, but task definition Split defines only 5 task(s)",
            "classes 8+9",
        ],
    );
}

#[test]
fn strategy_hyperparameter_out_of_range_is_rejected_with_its_location() {
    rejected(
        "hyperparameter-out-of-range",
        &[
            "hyperparameter `buffer_size` of task_update_decision Replay: 0 is out of range",
            "algorithm.yaml:12:27",
        ],
    );
}

#[test]
fn a_task_definition_that_leaves_a_task_empty_is_rejected() {
    rejected("empty-task", &["task definition Split leaves task 6 (no classes left) with no train and no test samples", "the data has classes 0, 1, 2"]);
}
