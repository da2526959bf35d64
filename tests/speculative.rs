//! Speculative decoding end to end through the CLI on a real model (SmolLM2-135M, fetched by
//! `scripts/fetch-smollm2.sh`): greedy speculative output equals verifier-only output for every
//! prompt and every γ, and the leaderboard carries acceptance and speed-up.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

#[test]
fn greedy_speculative_decoding_is_lossless_for_every_gamma() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("datasets/models/smollm2-135m-instruct-q4_1.gguf");
    if !model.exists() {
        assert!(
            std::env::var_os("IANVS_REQUIRE_SMOLLM2").is_none(),
            "IANVS_REQUIRE_SMOLLM2 is set but {} is missing: run scripts/fetch-smollm2.sh",
            model.display()
        );
        eprintln!(
            "skipping: {} is missing (run scripts/fetch-smollm2.sh)",
            model.display()
        );
        return;
    }
    let ws = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .args(["run", "-f"])
        .arg(root.join("tests/fixtures/spec/benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .args(["--quiet", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 5, "verifier-only + γ ∈ {{1, 2, 4, 8}}");
    for r in &rows {
        assert_eq!(r["status"], "ok");
        assert_eq!(
            r["lossless"].as_f64(),
            Some(1.0),
            "greedy output must equal verifier-only output: {r}"
        );
        assert_eq!(r["near-tie-divergences"].as_f64(), Some(0.0));
        assert!(r["token-throughput"].as_f64().unwrap() > 0.0);
        if r["algorithm"] == "speculative" {
            let acc = r["acceptance-rate"].as_f64().unwrap();
            assert!(acc > 0.0 && acc <= 1.0, "{acc}");
            assert!(r["mean-accepted-length"].as_f64().unwrap() >= 1.0);
            assert!(r["speed-up"].as_f64().unwrap() > 0.0);
        }
    }
    // Per-prompt records name the mode and keep the generated text.
    let case = std::fs::read_dir(ws.path().join("spec/speculative"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(case.join("records.jsonl"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["mode"], "speculative");
    assert!(case.join("acceptance_by_position.csv").is_file());
}
