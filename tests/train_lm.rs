//! `ianvs train-lm` end to end on a slice of the committed fortunes corpus: a tiny draft, a
//! verifier sharing its tokenizer, greedy samples through the runtime, and usage errors that
//! exit 2 before any work.

mod common;
use common::ianvs;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fortunes(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets/lm/corpus/fortunes")
        .join(name)
}

/// A tiny shape and schedule with `layers` blocks: seconds, not minutes.
fn tiny(layers: &str) -> Vec<&str> {
    vec![
        "--hidden",
        "32",
        "--layers",
        layers,
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--intermediate",
        "48",
        "--context",
        "32",
        "--steps",
        "12",
        "--batch",
        "4",
    ]
}

#[test]
fn trains_a_draft_and_a_verifier_that_share_its_tokenizer() {
    let out = tempfile::tempdir().unwrap();
    let draft = out.path().join("draft");
    let run = ianvs()
        .arg("train-lm")
        .arg("--corpus")
        .args([fortunes("goedel"), fortunes("magic"), fortunes("fortunes")])
        .args(tiny("1"))
        .args([
            "--vocab-size",
            "400",
            "--eval-every",
            "6",
            "--dtype",
            "f16",
            "--json",
        ])
        .args([
            "--sample",
            "The",
            "--sample-tokens",
            "5",
            "--quiet",
            "--out",
        ])
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outcome: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(outcome["vocab_size"], 400);
    assert_eq!(outcome["report"]["steps"], 12);
    let first = outcome["report"]["initial_val_loss"].as_f64().unwrap();
    let last = outcome["exported_val_loss"].as_f64().unwrap();
    assert!(last < first, "validation loss {first} -> {last}");
    assert_eq!(outcome["samples"][0]["prompt"], "The");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(draft.join(f).is_file(), "{f}");
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(draft.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["torch_dtype"], "float16");
    assert_eq!(config["max_position_embeddings"], 32);
    let log: Value =
        serde_json::from_slice(&std::fs::read(draft.join("training.json")).unwrap()).unwrap();
    let command = log["command"].as_str().unwrap();
    assert!(
        command.starts_with("ianvs train-lm --corpus") && command.contains("--vocab-size 400"),
        "{command}"
    );

    // The verifier reuses the draft's tokenizer file: the same ids.
    let verifier = out.path().join("verifier");
    ianvs()
        .arg("train-lm")
        .arg("--corpus")
        .arg(fortunes("goedel"))
        .arg(fortunes("magic"))
        .args(tiny("2"))
        .args(["--quiet", "--tokenizer"])
        .arg(draft.join("tokenizer.json"))
        .arg("--out")
        .arg(&verifier)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(draft.join("tokenizer.json")).unwrap(),
        std::fs::read(verifier.join("tokenizer.json")).unwrap()
    );
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("m");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // No shape and no preset.
        (vec!["--steps", "1"], "--hidden is required"),
        // Heads that do not divide the hidden size.
        (
            vec!["--preset", "draft", "--hidden", "100", "--heads", "3"],
            "not a multiple",
        ),
        // A learning rate out of range.
        (vec!["--preset", "draft", "--lr", "5"], "learning rate"),
    ];
    for (args, expected) in cases {
        let run = ianvs()
            .arg("train-lm")
            .arg("--corpus")
            .arg(fortunes("goedel"))
            .args(&args)
            .arg("--out")
            .arg(&dest)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!dest.exists());
    }
    // A missing corpus file is named.
    let run = ianvs()
        .args([
            "train-lm",
            "--preset",
            "draft",
            "--corpus",
            "no/such/file",
            "--out",
        ])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no/such/file does not exist"));
    // --tokenizer and --vocab-size contradict each other.
    ianvs()
        .args([
            "train-lm",
            "--preset",
            "draft",
            "--vocab-size",
            "300",
            "--tokenizer",
            "t.json",
        ])
        .arg("--corpus")
        .arg(fortunes("goedel"))
        .arg("--out")
        .arg(&dest)
        .assert()
        .code(2);
}
