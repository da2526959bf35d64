//! Snapshot tests of the error output for bad configurations: each names the file, line and
//! column, the key path, the bad value, the valid choices and a "did you mean" where close,
//! all problems together, exit code 2 and nothing written.

use std::path::Path;

use assert_cmd::Command;

fn validate(dir: &Path) -> (i32, String) {
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .current_dir(dir)
        .args(["validate", "-f", "benchmark.yaml"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_are_reported_with_locations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 12, "expected at least 12 bad configs");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (code, stderr) = validate(&dir);
        assert_eq!(
            code, 2,
            "{name}: expected the config-error exit code; stderr:\n{stderr}"
        );
        assert!(
            !dir.join("workspace").exists(),
            "{name}: a failed validation must write nothing"
        );
        insta::assert_snapshot!(name, stderr);
    }
}

#[test]
fn run_with_a_bad_config_writes_nothing() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad/14-many-problems-at-once");
    let ws = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("ianvs")
        .unwrap()
        .current_dir(&dir)
        .args(["run", "-f", "benchmark.yaml", "--workspace"])
        .arg(ws.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(ws.path()).unwrap().count(), 0);
}
