//! The regression gate end to end: `ianvs compare` on a real baseline leaderboard (from a run
//! of the tiny fixture) against identical, doctored and noisy copies; JUnit XML validated
//! against the common JUnit schema with xmllint; `ianvs run --baseline` in one step.

mod common;
use common::{assert_exit, ianvs};

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn baseline() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("compare/baseline.json")).unwrap())
        .unwrap()
}

/// Writes `v` as `name` into `dir`.
fn put(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Runs `ianvs compare` inside `dir` (so paths in the summary are the short names given).
fn compare(dir: &Path, args: &[&str]) -> Output {
    ianvs()
        .current_dir(dir)
        .arg("compare")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Validates a JUnit file with xmllint against the committed schema; the message says how to
/// get xmllint when it is missing (scripts/test.sh installs it).
fn assert_valid_junit(file: &Path) {
    let xsd = fixtures().join("compare/junit.xsd");
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(file)
        .output()
        .expect("xmllint is needed to validate JUnit XML: install Debian's libxml2-utils (scripts/test.sh does)");
    assert!(
        out.status.success(),
        "{} does not validate against junit.xsd:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn row_mut<'a>(v: &'a mut Value, hidden: &str) -> &'a mut serde_json::Map<String, Value> {
    v["rows"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|r| r.as_object_mut().unwrap())
        .find(|r| {
            r["basemodel-hidden_sizes"] == serde_json::json!([hidden.parse::<u32>().unwrap()])
        })
        .unwrap()
}

#[test]
fn schema_check_is_real() {
    // The validator rejects what the schema forbids, so a passing check means something.
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.xml");
    std::fs::write(&bad, "<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"x\" tests=\"1\" failures=\"0\"><testcase classname=\"a\"/></testsuite></testsuites>\n").unwrap();
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(fixtures().join("compare/junit.xsd"))
        .arg(&bad)
        .output()
        .expect("xmllint (libxml2-utils) is needed");
    assert!(
        !out.status.success(),
        "a testsuite without `errors` and a testcase without `name` must not validate"
    );
}

#[test]
fn identical_leaderboards_pass() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), "baseline.json", &baseline());
    put(d.path(), "current.json", &baseline());
    let out = compare(
        d.path(),
        &["baseline.json", "current.json", "--junit", "junit.xml"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let md = stdout(&out);
    assert!(md.contains("PASSED: no regression in 6 check(s)"), "{md}");
    insta::assert_snapshot!("compare_identical", md);
    assert_valid_junit(&d.path().join("junit.xml"));
}

#[test]
fn a_doctored_better_baseline_fails_the_gate() {
    let d = tempfile::tempdir().unwrap();
    // Pretend the baseline's [32]-unit case was 0.15 more accurate than it is, interval and all:
    // the real result is now worse than tolerance and outside both intervals.
    let mut b = baseline();
    let r = row_mut(&mut b, "32");
    for k in ["accuracy", "accuracy-ci-low", "accuracy-ci-high"] {
        let v = r[k].as_f64().unwrap();
        r.insert(k.into(), serde_json::json!((v + 0.15).min(1.0)));
    }
    put(d.path(), "baseline.json", &b);
    put(d.path(), "current.json", &baseline());
    std::fs::copy(
        fixtures().join("compare/tolerance.yaml"),
        d.path().join("tolerance.yaml"),
    )
    .unwrap();
    let out = compare(
        d.path(),
        &[
            "baseline.json",
            "current.json",
            "--tolerance",
            "tolerance.yaml",
            "--junit",
            "out/junit.xml",
            "--summary",
            "summary.md",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let md = stdout(&out);
    assert!(md.contains("FAILED: 1 regression(s) in 6 check(s)"), "{md}");
    insta::assert_snapshot!("compare_regression", md);
    // The summary file gets the same Markdown (appended).
    assert_eq!(
        std::fs::read_to_string(d.path().join("summary.md")).unwrap(),
        md
    );

    let junit = d.path().join("out/junit.xml");
    assert_valid_junit(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(
        xml.matches("<testcase ").count(),
        6,
        "one test case per case × metric"
    );
    assert_eq!(xml.matches("<failure ").count(), 1);
    assert!(xml.contains("tests=\"6\" failures=\"1\" errors=\"0\""));
    assert!(xml.contains("hidden_sizes=[32] :: accuracy"), "{xml}");

    // The same file as JSON says which check failed.
    let out = compare(
        d.path(),
        &[
            "baseline.json",
            "current.json",
            "--tolerance",
            "tolerance.yaml",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "regressed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["metric"], "accuracy");
}

#[test]
fn noise_inside_the_interval_passes() {
    let d = tempfile::tempdir().unwrap();
    // Three points less accurate: beyond the 1-point tolerance, but well inside the Wilson
    // interval of 60 test samples (about ±0.1).
    let mut c = baseline();
    let r = row_mut(&mut c, "16");
    for k in ["accuracy", "accuracy-ci-low", "accuracy-ci-high"] {
        let v = r[k].as_f64().unwrap();
        r.insert(k.into(), serde_json::json!(v - 0.03));
    }
    put(d.path(), "baseline.json", &baseline());
    put(d.path(), "current.json", &c);
    std::fs::copy(
        fixtures().join("compare/tolerance.yaml"),
        d.path().join("tolerance.yaml"),
    )
    .unwrap();
    let out = compare(
        d.path(),
        &[
            "baseline.json",
            "current.json",
            "--tolerance",
            "tolerance.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let md = stdout(&out);
    assert!(md.contains("worse, within noise"), "{md}");
    assert!(md.contains("1 worse within noise"), "{md}");
}

#[test]
fn new_and_missing_cases_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let mut c = baseline();
    // Drop the [16] case and add a [64] one.
    let rows = c["rows"].as_array_mut().unwrap();
    let mut extra = rows[0].clone();
    rows.retain(|r| r["basemodel-hidden_sizes"] != serde_json::json!([16]));
    extra["basemodel-hidden_sizes"] = serde_json::json!([64]);
    extra["case_id"] = serde_json::json!("0123456789ab");
    rows.push(extra);
    put(d.path(), "baseline.json", &baseline());
    put(d.path(), "current.json", &c);
    let out = compare(d.path(), &["baseline.json", "current.json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "missing cases alone do not fail by default"
    );
    let md = stdout(&out);
    assert!(
        md.contains("### Missing cases") && md.contains("hidden_sizes=[16]"),
        "{md}"
    );
    assert!(
        md.contains("### New cases") && md.contains("hidden_sizes=[64]"),
        "{md}"
    );
    let out = compare(
        d.path(),
        &[
            "baseline.json",
            "current.json",
            "--fail-on-missing",
            "--junit",
            "j.xml",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_valid_junit(&d.path().join("j.xml"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), "baseline.json", &baseline());
    let out = compare(d.path(), &["baseline.json", "nope.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read nope.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        d.path().join("t.yaml"),
        "metrics:\n  acuracy: { absolute: 0.01 }\n",
    )
    .unwrap();
    let out = compare(
        d.path(),
        &["baseline.json", "baseline.json", "--tolerance", "t.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`acuracy`") && err.contains("accuracy"),
        "{err}"
    );
    std::fs::write(d.path().join("t.yaml"), "default: { relativ: 0.1 }\n").unwrap();
    let out = compare(
        d.path(),
        &["baseline.json", "baseline.json", "--tolerance", "t.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `relativ`"));
    std::fs::write(d.path().join("x.json"), "{\"foo\": 1}").unwrap();
    let out = compare(d.path(), &["x.json", "baseline.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `rows` list"));
}

#[test]
fn run_with_baseline_gates_in_one_step() {
    let ws = tempfile::tempdir().unwrap();
    let bench = fixtures().join("tiny/benchmark.yaml");
    let tol = fixtures().join("compare/tolerance.yaml");
    // First run: the baseline.
    let out = ianvs()
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(ws.path().join("a"))
        .arg("--quiet")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let base = ws.path().join("a/tiny/rank/leaderboard.json");

    // Same configuration and seed: accuracy is identical, latency varies within its tolerance.
    let out = ianvs()
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(ws.path().join("b"))
        .arg("--baseline")
        .arg(&base)
        .arg("--tolerance")
        .arg(&tol)
        .output()
        .unwrap();
    let so = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("PASSED"), "{so}");
    let junit = ws.path().join("b/tiny/compare/junit.xml");
    assert_valid_junit(&junit);
    assert!(ws.path().join("b/tiny/compare/summary.md").is_file());

    // Job folders compare directly, and so does the JSON `ianvs run --json` prints.
    let out = ianvs()
        .arg("compare")
        .arg(ws.path().join("a/tiny"))
        .arg(ws.path().join("b/tiny"))
        .arg("--tolerance")
        .arg(&tol)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("no regression in 6 check(s)"),
        "{}",
        stdout(&out)
    );
    let json = ianvs()
        .args(["leaderboard", "--json"])
        .arg(ws.path().join("a/tiny"))
        .output()
        .unwrap();
    std::fs::write(ws.path().join("rows.json"), &json.stdout).unwrap();
    let out = ianvs()
        .arg("compare")
        .arg(ws.path().join("rows.json"))
        .arg(ws.path().join("b/tiny"))
        .arg("--tolerance")
        .arg(&tol)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("no regression in 6 check(s)"),
        "{}",
        stdout(&out)
    );

    // A doctored baseline whose accuracy is far better: the same run now fails the gate.
    let mut v: Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
    for r in v["rows"].as_array_mut().unwrap() {
        r["accuracy"] = serde_json::json!(1.0);
        r["accuracy-ci-low"] = serde_json::json!(0.99);
        r["accuracy-ci-high"] = serde_json::json!(1.0);
    }
    let doctored = ws.path().join("doctored.json");
    std::fs::write(&doctored, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(ws.path().join("c"))
        .arg("--baseline")
        .arg(&doctored)
        .arg("--tolerance")
        .arg(&tol)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("regression gate failed"));
    let xml = std::fs::read_to_string(ws.path().join("c/tiny/compare/junit.xml")).unwrap();
    assert!(xml.contains("failures=\"2\""), "{xml}");

    // A baseline that cannot be read stops the run before any case runs.
    let out = ianvs()
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(ws.path().join("d"))
        .arg("--baseline")
        .arg(ws.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !ws.path().join("d").exists(),
        "nothing may be written when the gate cannot run"
    );
}
