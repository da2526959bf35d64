//! End-to-end CLI tests on a tiny real fixture (300 handwritten digits, one epoch): leaderboard
//! files exist and parse, `--resume` reruns nothing, a failing case does not lose the others.

mod common;
use common::ianvs;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(name)
}

fn case_dirs(job_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for alg in std::fs::read_dir(job_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
    {
        if alg.is_dir()
            && !ianvs::story::RESERVED_DIRS
                .iter()
                .any(|r| alg.file_name().unwrap() == *r)
        {
            for c in std::fs::read_dir(&alg).unwrap().map(|e| e.unwrap().path()) {
                out.push(c);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn run_writes_cases_and_leaderboards_and_resume_reruns_nothing() {
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(fixture("benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .arg("--quiet")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = ws.path().join("tiny");
    let cases = case_dirs(&job);
    assert_eq!(cases.len(), 2);
    for c in &cases {
        for f in ["resolved.yaml", "records.jsonl", "metrics.json"] {
            assert!(c.join(f).is_file(), "{} lacks {f}", c.display());
        }
        let m: Value =
            serde_json::from_slice(&std::fs::read(c.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(m["status"], "ok");
        let acc = m["metrics"]["accuracy"].as_f64().unwrap();
        assert!(
            acc > 0.3,
            "ten epochs on 240 digits should beat chance by far, got {acc}"
        );
        // records.jsonl has one line per test sample (60) and agrees with the accuracy.
        let recs: Vec<Value> = std::fs::read_to_string(c.join("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 60);
        let correct = recs
            .iter()
            .filter(|r| r["label"] == r["prediction"])
            .count();
        assert!((correct as f64 / 60.0 - acc).abs() < 1e-9);
    }
    let rank = job.join("rank");
    let csv = std::fs::read_to_string(rank.join("all_rank.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert_eq!(header, "rank,algorithm,accuracy,macro-f1,latency-mean,paradigm,basemodel,basemodel-hidden_sizes,basemodel-epochs,basemodel-learning_rate,time,url,status,case_id,accuracy-ci-low,accuracy-ci-high,macro-f1-ci-low,macro-f1-ci-high,latency-mean-ci-low,latency-mean-ci-high");
    assert_eq!(csv.lines().count(), 3);
    assert!(std::fs::read_to_string(rank.join("selected_rank.csv"))
        .unwrap()
        .starts_with("rank,algorithm,accuracy"));
    assert!(std::fs::read_to_string(rank.join("leaderboard.md"))
        .unwrap()
        .contains("| rank"));
    let lb: Value =
        serde_json::from_slice(&std::fs::read(rank.join("leaderboard.json")).unwrap()).unwrap();
    let rows = lb["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["rank"], 1);
    assert!(rows[0]["accuracy"].as_f64() >= rows[1]["accuracy"].as_f64());

    // --resume: nothing reruns, files untouched.
    let before: Vec<_> = cases
        .iter()
        .map(|c| {
            std::fs::metadata(c.join("metrics.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(fixture("benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 2 cases already complete"), "{stderr}");
    assert!(stderr.contains("0 case(s) run"), "{stderr}");
    let after: Vec<_> = cases
        .iter()
        .map(|c| {
            std::fs::metadata(c.join("metrics.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    assert_eq!(before, after);

    // The leaderboard can be rebuilt from stored results alone.
    let out = ianvs()
        .arg("leaderboard")
        .arg(&job)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rebuilt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rebuilt.as_array().unwrap().len(), 2);
}

#[test]
fn same_seed_gives_same_accuracy() {
    let run = || {
        let ws = tempfile::tempdir().unwrap();
        let out = ianvs()
            .args(["run", "-f"])
            .arg(fixture("benchmark.yaml"))
            .arg("--workspace")
            .arg(ws.path())
            .args(["--quiet", "--json", "--seed", "7"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["case_id"].as_str().unwrap().to_string(),
                    r["accuracy"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn a_failing_case_does_not_lose_the_others() {
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(fixture("benchmark_with_failure.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .args(["--jobs", "2"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed case means exit code 1"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs image inputs of at least 12x12"),
        "{stderr}"
    );
    let lb: Value = serde_json::from_slice(
        &std::fs::read(ws.path().join("tiny-failure/rank/leaderboard.json")).unwrap(),
    )
    .unwrap();
    let rows = lb["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["ok", "ok", "failed"], "failed cases rank last");
    assert!(rows[2]["rank"].is_null());
    let failed_dir = case_dirs(&ws.path().join("tiny-failure"))
        .into_iter()
        .find(|c| c.to_string_lossy().contains("/cnn/"))
        .unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(failed_dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "failed");
    assert!(m["error"].as_str().unwrap().contains("12x12"));
}

#[test]
fn dry_run_lists_cases_and_runs_nothing() {
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(fixture("benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .args(["--dry-run", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(
        cases[0]["grid"]["basemodel-hidden_sizes"],
        serde_json::json!([16])
    );
    assert_eq!(std::fs::read_dir(ws.path()).unwrap().count(), 0);
}

#[test]
fn list_and_help_and_completions() {
    let out = ianvs()
        .args(["list", "modules", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"MLP") && names.contains(&"CNN"));
    let out = ianvs().args(["list", "metrics"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("macro-f1"));
    let out = ianvs().args(["list", "paradigms"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("singletasklearning"));
    for sub in ["run", "validate", "list", "leaderboard", "completions"] {
        let out = ianvs().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
    }
    let out = ianvs().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("ianvs"));
    let out = ianvs().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ianvs "));
    let out = ianvs().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
