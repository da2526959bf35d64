//! Reports and charts: `ianvs report` on a committed job folder (a real run of the tiny
//! fixture with a learning-rate sweep and a failing case) gives a Markdown report equal to its
//! snapshot, an HTML file with no external reference, and valid PNG/SVG charts of the
//! expected sizes; every `ianvs run` writes the report, intervals and interval columns.

mod common;
use common::{assert_exit, ianvs};

use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Width and height an SVG declares on its root element.
fn svg_size(svg: &str) -> (u32, u32) {
    let root = &svg[svg.find("<svg").expect("an <svg> root")..];
    let root = &root[..root.find('>').unwrap()];
    let attr = |name: &str| -> u32 {
        let i = root
            .find(&format!(" {name}=\""))
            .unwrap_or_else(|| panic!("<svg> lacks {name}"))
            + name.len()
            + 3;
        root[i..].split('"').next().unwrap().parse().unwrap()
    };
    (attr("width"), attr("height"))
}

/// Every chart in `plots/`: the PNG decodes, the SVG is well-formed XML, both have the size the
/// SVG declares. Returns (stem, width, height).
fn check_plots(job: &Path) -> Vec<(String, u32, u32)> {
    let dir = job.join("plots");
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    let mut out = Vec::new();
    for s in stems {
        let svg = std::fs::read_to_string(dir.join(format!("{s}.svg"))).unwrap();
        let (w, h) = svg_size(&svg);
        let lint = std::process::Command::new("xmllint")
            .arg("--noout")
            .arg(dir.join(format!("{s}.svg")))
            .output()
            .expect("xmllint (libxml2-utils) is needed; scripts/test.sh installs it");
        assert!(
            lint.status.success(),
            "{s}.svg is not well-formed XML: {}",
            String::from_utf8_lossy(&lint.stderr)
        );
        assert!(
            svg.contains("<text"),
            "{s}.svg has no text: labels are missing"
        );
        let png = std::fs::read(dir.join(format!("{s}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{s}.png is not a PNG");
        let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .unwrap_or_else(|e| panic!("{s}.png does not decode: {e}"));
        assert_eq!(
            (img.width(), img.height()),
            (w, h),
            "{s}: PNG and SVG sizes differ"
        );
        // Not a blank canvas: the chart drew something other than the white background.
        let rgb = img.to_rgb8();
        let non_white = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(
            non_white > (w * h / 100) as usize,
            "{s}.png is nearly blank"
        );
        out.push((s, w, h));
    }
    out
}

/// No reference to anything outside the file: no URL, no linked resource, no script.
fn assert_self_contained(html: &str) {
    for bad in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<script", "<link", "<img",
        "<iframe", "xlink:",
    ] {
        assert!(!html.contains(bad), "report.html contains `{bad}`");
    }
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
}

#[test]
fn report_of_a_stored_job_matches_its_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let job = d.path().join("report-fixture");
    copy_dir(&fixtures().join("report/report-fixture"), &job);
    let out = ianvs().arg("report").arg(&job).output().unwrap();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("report written"));

    let md = std::fs::read_to_string(job.join("report.md")).unwrap();
    insta::assert_snapshot!("report_fixture_md", md);

    let html = std::fs::read_to_string(job.join("report.html")).unwrap();
    assert_self_contained(&html);
    // Every chart is inline, and the failed case is there with its error.
    let plots = check_plots(&job);
    assert_eq!(html.matches("<svg").count(), plots.len());
    assert!(html.contains("needs image inputs of at least 12x12"));
    assert!(md.contains("needs image inputs of at least 12x12"));

    // The charts chosen from the metric definitions and the grid: bars per metric, a
    // trade-off, a sweep per ranking metric over the learning rate, the stored matrix, the
    // latency CDF.
    let stems: Vec<&str> = plots.iter().map(|(s, _, _)| s.as_str()).collect();
    for want in [
        "bar-accuracy",
        "bar-macro-f1",
        "bar-latency-mean",
        "tradeoff-accuracy-vs-latency-mean",
        "sweep-accuracy-vs-basemodel-learning-rate",
        "sweep-latency-mean-vs-basemodel-learning-rate",
        "cdf-latency",
    ] {
        assert!(stems.contains(&want), "missing chart {want}: {stems:?}");
    }
    assert!(
        stems
            .iter()
            .any(|s| s.starts_with("heatmap-confusion-matrix-")),
        "{stems:?}"
    );
    // Sizes: bars grow with the number of cases (6 finished ones), the others are fixed.
    let size = |stem: &str| {
        plots
            .iter()
            .find(|(s, _, _)| s == stem)
            .map(|(_, w, h)| (*w, *h))
            .unwrap()
    };
    assert_eq!(size("bar-accuracy"), (960, 150 + 34 * 6));
    assert_eq!(size("tradeoff-accuracy-vs-latency-mean"), (960, 600));
    assert_eq!(size("cdf-latency"), (960, 560));

    // Rendering again replaces the charts rather than piling them up.
    let out = ianvs().arg("report").arg(&job).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(check_plots(&job).len(), plots.len());
    assert_eq!(std::fs::read_to_string(job.join("report.md")).unwrap(), md);
}

#[test]
fn report_of_something_else_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let out = ianvs().arg("report").arg(d.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no job.json"));
}

#[test]
fn every_run_writes_report_intervals_and_interval_columns() {
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .args(["run", "-f"])
        .arg(fixtures().join("tiny/benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .args(["--quiet", "--repeat", "2"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let job = ws.path().join("tiny");
    for f in ["report.html", "report.md", "run.json"] {
        assert!(job.join(f).is_file(), "{f} missing");
    }
    assert_self_contained(&std::fs::read_to_string(job.join("report.html")).unwrap());
    let plots = check_plots(&job);
    assert!(plots.iter().any(|(s, _, _)| s == "bar-accuracy"));
    // Two cases whose only swept hyperparameter holds lists: no sweep chart (not numeric).
    assert!(plots.iter().any(|(s, _, _)| s == "cdf-latency"));
    assert!(!plots.iter().any(|(s, _, _)| s.starts_with("sweep-")));

    let run: Value = serde_json::from_slice(&std::fs::read(job.join("run.json")).unwrap()).unwrap();
    assert!(run["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    assert_eq!(run["algorithms"][0]["repeat"], 2);

    // Each case: accuracy has a Wilson interval that contains it, latency a bootstrap one; two
    // runs each, and the value is their mean.
    let lb: Value =
        serde_json::from_slice(&std::fs::read(job.join("rank/leaderboard.json")).unwrap()).unwrap();
    let cols: Vec<&str> = lb["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "accuracy-ci-low",
        "accuracy-ci-high",
        "macro-f1-ci-low",
        "latency-mean-ci-high",
        "latency-mean-std",
    ] {
        assert!(cols.contains(&c), "{c} not in {cols:?}");
    }
    for row in lb["rows"].as_array().unwrap() {
        let id = row["case_id"].as_str().unwrap();
        let m: Value = serde_json::from_slice(
            &std::fs::read(job.join("mlp").join(id).join("metrics.json")).unwrap(),
        )
        .unwrap();
        let acc = m["metrics"]["accuracy"].as_f64().unwrap();
        let iv = &m["intervals"]["accuracy"];
        assert_eq!(iv["method"], "wilson");
        assert!(iv["low"].as_f64().unwrap() <= acc && acc <= iv["high"].as_f64().unwrap());
        assert_eq!(row["accuracy-ci-low"], iv["low"]);
        assert_eq!(m["intervals"]["latency-mean"]["method"], "bootstrap");
        let runs = m["runs"]["latency-mean"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let mean = (runs[0].as_f64().unwrap() + runs[1].as_f64().unwrap()) / 2.0;
        assert!((m["metrics"]["latency-mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        // Seeded training: both runs agree on accuracy exactly.
        let acc_runs = m["runs"]["accuracy"].as_array().unwrap();
        assert_eq!(acc_runs[0], acc_runs[1]);
        assert!(job
            .join("mlp")
            .join(id)
            .join("records-run2.jsonl")
            .is_file());
    }
    // The printed table keeps to values; the interval bounds stay in the full files.
    let sel = std::fs::read_to_string(job.join("rank/selected_rank.csv")).unwrap();
    assert!(!sel.lines().next().unwrap().contains("-ci-"));
    assert!(std::fs::read_to_string(job.join("rank/all_rank.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .contains("accuracy-ci-low"));
}

#[test]
fn repeat_and_reserved_names_are_checked_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    let te = fixtures().join("tiny/testenv.yaml");
    std::fs::write(d.path().join("alg.yaml"), "algorithm:\n  paradigm_type: singletasklearning\n  repeat: 0\n  modules:\n    - type: basemodel\n      name: MLP\n").unwrap();
    let bench = format!("benchmarkingjob:\n  name: r\n  testenv: {}\n  test_object:\n    algorithms:\n      - name: plots\n        url: ./alg.yaml\n  rank:\n    sort_by:\n      - accuracy: descend\n", te.display());
    std::fs::write(d.path().join("benchmark.yaml"), bench).unwrap();
    let out = ianvs()
        .args(["validate", "-f"])
        .arg(d.path().join("benchmark.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alg.yaml:3:")
            && err.contains("algorithm.repeat")
            && err.contains("out of range"),
        "{err}"
    );
    assert!(
        err.contains("algorithm name \"plots\" is reserved"),
        "{err}"
    );
    // --repeat is range-checked by the command line.
    let out = ianvs()
        .args(["run", "-f"])
        .arg(d.path().join("benchmark.yaml"))
        .args(["--repeat", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
