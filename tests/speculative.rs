//! Speculative decoding end to end through the CLI on a real model (SmolLM2-135M, fetched by
//! `scripts/fetch-smollm2.sh`): greedy speculative output equals verifier-only output for every
//! prompt and every γ, and the leaderboard carries acceptance and speed-up.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

/// Runs a job with `--json` into `ws`; asserts exit 0 and returns the leaderboard rows.
fn run_json(benchmark: &Path, ws: &Path) -> Vec<Value> {
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .args(["run", "-f"])
        .arg(benchmark)
        .arg("--workspace")
        .arg(ws)
        .args(["--quiet", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

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
    let rows = run_json(&root.join("tests/fixtures/spec/benchmark.yaml"), ws.path());
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
    // runtime.json names both models as loaded, the drafter with its own thread.
    let runtime: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("runtime.json")).unwrap()).unwrap();
    let drafter = runtime["drafter"].as_str().unwrap();
    assert!(
        drafter.contains("as q8_0") && drafter.contains(", 1 threads"),
        "{drafter}"
    );
    assert!(runtime["verifier"].as_str().is_some(), "{runtime}");
}

/// The project's own trained pair (committed under `datasets/lm`, so this always runs):
/// greedy speculative decoding is lossless for every γ; rejection sampling at a temperature the
/// verifier module sets runs beside it against a verifier-only baseline at that temperature.
#[test]
fn trained_pair_greedy_is_lossless_and_sampling_runs_at_the_verifiers_temperature() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = tempfile::tempdir().unwrap();
    let rows = run_json(
        &root.join("tests/fixtures/spec-pair/benchmark.yaml"),
        ws.path(),
    );
    assert_eq!(rows.len(), 6, "2 verifier-only + 3 greedy γ + 1 sampled");
    let mut sampled = 0;
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let t = r["verifier-temperature"].as_f64();
        let speed_up = r["speed-up"].as_f64().unwrap();
        assert!(speed_up > 0.0, "{r}");
        match (r["algorithm"].as_str().unwrap(), t) {
            ("verifier-only", Some(t)) => {
                assert!((speed_up - 1.0).abs() < 1e-9, "{r}");
                if t == 0.0 {
                    assert_eq!(r["lossless"].as_f64(), Some(1.0));
                } else {
                    assert!(r["lossless"].is_null(), "no lossless when sampling: {r}");
                }
            }
            ("speculative", None) => {
                assert_eq!(
                    r["lossless"].as_f64(),
                    Some(1.0),
                    "greedy must be lossless: {r}"
                );
                assert_eq!(r["near-tie-divergences"].as_f64(), Some(0.0));
                let acc = r["acceptance-rate"].as_f64().unwrap();
                assert!(acc > 0.05 && acc <= 1.0, "the pair agrees often: {acc}");
            }
            ("speculative-sampling", Some(t)) => {
                sampled += 1;
                assert_eq!(t, 0.7);
                assert!(r["lossless"].is_null(), "{r}");
                let acc = r["acceptance-rate"].as_f64().unwrap();
                assert!(acc > 0.05 && acc <= 1.0, "{acc}");
                assert!(r["mean-accepted-length"].as_f64().unwrap() >= 1.0);
            }
            other => panic!("unexpected row {other:?}: {r}"),
        }
    }
    assert_eq!(sampled, 1);
}

/// Writes a one-algorithm job (the spec-pair test environment) into `dir`, runs it and
/// asserts it is refused as a configuration error (exit 2); returns stderr.
fn refused(dir: &Path, algo: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.join("algo.yaml"), algo).unwrap();
    std::fs::write(
        dir.join("testenv.yaml"),
        std::fs::read_to_string(root.join("tests/fixtures/spec-pair/testenv.yaml"))
            .unwrap()
            .replace("../../../", &format!("{}/", root.display())),
    )
    .unwrap();
    std::fs::write(
        dir.join("benchmark.yaml"),
        "benchmarkingjob:\n  name: \"t\"\n  workspace: \"./ws\"\n  testenv: \"./testenv.yaml\"\n  test_object:\n    algorithms:\n      - name: \"s\"\n        url: \"./algo.yaml\"\n  rank:\n    sort_by:\n      - { \"token-throughput\": \"descend\" }\n",
    )
    .unwrap();
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .args(["run", "-f"])
        .arg(dir.join("benchmark.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    err
}

/// Greedy verification would silently ignore a temperature: refused before any case runs.
#[test]
fn greedy_verification_with_a_temperature_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let src = root.join("tests/fixtures/spec-pair");
    let algo = std::fs::read_to_string(src.join("algorithms/speculative-sampling.yaml"))
        .unwrap()
        .replace("rejection-sampling", "greedy")
        .replace("../../../../", &format!("{}/", root.display()));
    let err = refused(dir.path(), &algo);
    assert!(
        err.contains("rejection-sampling") && err.contains("0.7"),
        "stderr: {err}"
    );
    assert!(!dir.path().join("ws").exists(), "nothing written");
}

/// A drafter whose tokenizer maps ids to different tokens than the verifier's (here: the
/// trained draft with two vocabulary ids swapped) is refused before any case runs.
#[test]
fn a_drafter_with_another_vocabulary_is_refused_before_any_case_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("draft");
    std::fs::create_dir(&draft).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer_config.json"] {
        std::fs::copy(root.join("datasets/lm/draft").join(f), draft.join(f)).unwrap();
    }
    let mut tok: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("datasets/lm/draft/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["Ġyou"].clone(), vocab["Ġis"].clone());
    vocab.insert("Ġyou".into(), b);
    vocab.insert("Ġis".into(), a);
    std::fs::write(draft.join("tokenizer.json"), tok.to_string()).unwrap();

    let src = root.join("tests/fixtures/spec-pair");
    let algo = std::fs::read_to_string(src.join("algorithms/speculative.yaml"))
        .unwrap()
        .replace(
            "../../../../datasets/lm/draft",
            &draft.display().to_string(),
        )
        .replace("../../../../", &format!("{}/", root.display()));
    let err = refused(dir.path(), &algo);
    assert!(err.contains("do not share a tokenizer"), "stderr: {err}");
    assert!(!dir.path().join("ws").exists(), "nothing written");
}

/// A `cpus` entry naming a CPU this process may not run on is a configuration error found by
/// `ianvs validate` (exit 2, file, line, key, value and the allowed CPUs), not a failed case.
#[test]
fn a_cpu_outside_the_allowed_set_is_a_config_error() {
    let Some(allowed) = ianvs_paradigms::hp::allowed_cpus() else {
        eprintln!("skipping: the allowed CPUs are only known on Linux");
        return;
    };
    let bad = (0..1024u64).find(|c| !allowed.contains(c)).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("benchmark.yaml"),
        "benchmarkingjob:\n  name: \"cpus\"\n  workspace: \"./workspace\"\n  testenv: \"./testenv.yaml\"\n  test_object:\n    algorithms:\n      - name: \"speculative\"\n        url: \"./speculative.yaml\"\n  rank:\n    sort_by:\n      - { \"token-throughput\": \"descend\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("testenv.yaml"),
        format!(
            "testenv:\n  dataset:\n    test_data: \"{}\"\n  metrics:\n    - name: \"token-throughput\"\n",
            root.join("testenvs/speculative-decoding/prompts.jsonl").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("speculative.yaml"),
        format!(
            "algorithm:\n  paradigm_type: \"speculativedecoding\"\n  modules:\n    - type: \"drafter\"\n      name: \"LLM\"\n      hyperparameters:\n        - model:\n            values: [\"{draft}\"]\n        - cpus:\n            values: [[{ok}], [{ok}, {bad}]]\n    - type: \"verifier\"\n      name: \"LLM\"\n      hyperparameters:\n        - model:\n            values: [\"{verifier}\"]\n",
            draft = root.join("datasets/lm/draft").display(),
            verifier = root.join("datasets/lm/verifier").display(),
            ok = allowed[0],
        ),
    )
    .unwrap();
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .current_dir(dir.path())
        .args(["validate", "-f", "benchmark.yaml"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    // The second value of the list, on line 10 of the algorithm file.
    assert!(stderr.contains("speculative.yaml:10"), "{stderr}");
    assert!(stderr.contains("cpus.values[1]"), "{stderr}");
    assert!(
        stderr.contains(&format!("CPU {bad} is not one this process may run on")),
        "{stderr}"
    );
    assert!(stderr.contains("allowed CPUs: "), "{stderr}");
    assert!(!dir.path().join("workspace").exists());
}

/// The trained pair with the drafter's trimmed output head (`draft_vocab: 512` of 4096):
/// greedy speculative output still equals verifier-only output on every prompt, rejection
/// sampling runs at the verifier's temperature, and runtime.json names the trimmed head.
#[test]
fn a_trimmed_drafter_head_keeps_greedy_lossless_and_sampling_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = tempfile::tempdir().unwrap();
    let rows = run_json(
        &root.join("tests/fixtures/spec-pair/benchmark-trimmed.yaml"),
        ws.path(),
    );
    assert_eq!(rows.len(), 4, "2 verifier-only + greedy + sampled");
    for r in &rows {
        assert_eq!(r["status"], "ok", "{r}");
        let acc = r["acceptance-rate"].as_f64();
        match r["algorithm"].as_str().unwrap() {
            "verifier-only" => {}
            "speculative-trimmed" => {
                assert_eq!(r["lossless"].as_f64(), Some(1.0), "greedy, trimmed: {r}");
                assert_eq!(r["near-tie-divergences"].as_f64(), Some(0.0));
                assert!(acc.unwrap() > 0.05 && acc.unwrap() <= 1.0, "{r}");
            }
            "speculative-trimmed-sampling" => {
                assert!(r["lossless"].is_null(), "{r}");
                assert!(acc.unwrap() > 0.05 && acc.unwrap() <= 1.0, "{r}");
                assert!(r["mean-accepted-length"].as_f64().unwrap() >= 1.0);
            }
            other => panic!("unexpected row {other}: {r}"),
        }
    }
    for algo in ["speculative-trimmed", "speculative-trimmed-sampling"] {
        let case = std::fs::read_dir(ws.path().join("spec-pair-trimmed").join(algo))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let runtime: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("runtime.json")).unwrap())
                .unwrap();
        let drafter = runtime["drafter"].as_str().unwrap();
        assert!(
            drafter.contains("draft head of 512 of 4096 tokens"),
            "{drafter}"
        );
        let verifier = runtime["verifier"].as_str().unwrap();
        assert!(!verifier.contains("draft head"), "{verifier}");
    }
}

/// `draft_vocab` trims the drafter's head only: given to the verifier it is refused before any
/// case runs, naming the file, the key and where it belongs.
#[test]
fn draft_vocab_on_the_verifier_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let algo = std::fs::read_to_string(
        root.join("tests/fixtures/spec-pair/algorithms/speculative-trimmed.yaml"),
    )
    .unwrap()
    .replace(
        "            values: [\"../../../../datasets/lm/verifier\"]\n",
        "            values: [\"../../../../datasets/lm/verifier\"]\n        - draft_vocab:\n            values: [1024]\n",
    )
    .replace("../../../../", &format!("{}/", root.display()));
    let err = refused(dir.path(), &algo);
    assert!(
        err.contains("algo.yaml")
            && err.contains("verifier module \"LLM\" has no hyperparameter `draft_vocab`")
            && err.contains("`drafter` LLM module only"),
        "stderr: {err}"
    );
    assert!(!dir.path().join("ws").exists(), "nothing written");
}

/// `draft_vocab: 0` is out of range: refused before any case runs, with the bad value.
#[test]
fn draft_vocab_zero_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let algo = std::fs::read_to_string(
        root.join("tests/fixtures/spec-pair/algorithms/speculative-trimmed.yaml"),
    )
    .unwrap()
    .replace("values: [512]", "values: [0]")
    .replace("../../../../", &format!("{}/", root.display()));
    let err = refused(dir.path(), &algo);
    assert!(
        err.contains("algo.yaml")
            && err.contains("draft_vocab")
            && err.contains("0 is out of range"),
        "stderr: {err}"
    );
}
