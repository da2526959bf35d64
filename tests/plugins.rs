//! Out-of-process plug-ins end to end (docs/plugins.md): Ianvs-style Python modules and
//! metrics run unchanged; every failure (raise, exit, hang, wrong type or shape) fails only its
//! case with the user's file and line; validation errors exit 2 before anything runs; no
//! plug-in child outlives ianvs (checked by scanning /proc for the plug-in files).

mod common;
use common::{assert_exit, run_quiet};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

fn ianvs() -> Command {
    let mut c = Command::cargo_bin("ianvs").unwrap();
    c.env("NO_COLOR", "1")
        .env_remove("IANVS_PYTHON")
        .env_remove("VIRTUAL_ENV");
    c
}

/// A tiny separable dataset: 60 rows, 4 features, 3 classes (every 5th row a test row).
fn data_csv() -> String {
    let mut s = String::new();
    for i in 0..60 {
        let c = i % 3;
        let j = (i * 7 % 11) as f32 / 20.0;
        s += &format!(
            "{},{},{},{},{c}\n",
            c as f32 + j,
            1.0 - j,
            c as f32 * 2.0,
            j
        );
    }
    s
}

const MODEL: &str = r#"
import os, sys, time
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="Nearest")
class Nearest:
    def __init__(self, fail="", scale=1.0, **kwargs):
        self.fail = fail
        self.scale = scale

    def train(self, train_data, valid_data=None, **kwargs):
        print("training on", len(train_data.x), "samples", file=sys.stderr)
        print("a print() goes to stderr too")
        if self.fail == "exit":
            os._exit(7)
        x, y = train_data.x, train_data.y
        self.centres = np.stack([x[y == c].mean(axis=0) for c in range(3)])

    def predict(self, data, **kwargs):
        if self.fail == "raise":
            raise ValueError("the plug-in broke on purpose")
        if self.fail == "hang":
            time.sleep(120)
        if self.fail == "type":
            return ["cat"] * len(data)
        if self.fail == "shape":
            return np.zeros((len(data), 7))
        d = ((data[:, None, :] - self.centres[None]) ** 2).sum(axis=2)
        return d.argmin(axis=1)
"#;

const METRIC: &str = r#"
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="plugin_accuracy")
def plugin_accuracy(y_true, y_pred, **kwargs):
    return float((y_true == y_pred).mean())
"#;

/// A job folder with the plug-in files, a test environment and one algorithm per `(name,
/// module YAML)`.
struct Job {
    dir: tempfile::TempDir,
}

impl Job {
    fn new(algorithms: &[(&str, &str)], testenv_extra: &str) -> Job {
        Job::with("singletasklearning", algorithms, testenv_extra)
    }
    fn with(paradigm: &str, algorithms: &[(&str, &str)], testenv_extra: &str) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("data.csv"), data_csv()).unwrap();
        std::fs::write(p.join("model.py"), MODEL).unwrap();
        std::fs::write(p.join("metric.py"), METRIC).unwrap();
        std::fs::write(
            p.join("testenv.yaml"),
            format!(
                "testenv:\n  dataset:\n    data: \"./data.csv\"\n    label: \"last\"\n    split:\n      method: \"interleaved\"\n      test_fraction: 0.2\n  metrics:\n    - name: \"accuracy\"\n{testenv_extra}  warmup_samples: 0\n"
            ),
        )
        .unwrap();
        let mut algs = String::new();
        for (name, modules) in algorithms {
            std::fs::write(
                p.join(format!("{name}.yaml")),
                format!("algorithm:\n  paradigm_type: \"{paradigm}\"\n  modules:\n{modules}"),
            )
            .unwrap();
            algs += &format!("      - name: \"{name}\"\n        url: \"./{name}.yaml\"\n");
        }
        std::fs::write(
            p.join("benchmark.yaml"),
            format!(
                "benchmarkingjob:\n  name: \"job\"\n  workspace: \"./ws\"\n  testenv: \"./testenv.yaml\"\n  test_object:\n    type: \"algorithms\"\n    algorithms:\n{algs}  rank:\n    sort_by:\n      - {{ \"accuracy\": \"descend\" }}\n"
            ),
        )
        .unwrap();
        Job { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn bench(&self) -> PathBuf {
        self.path().join("benchmark.yaml")
    }
    /// Every case's metrics.json, by algorithm name.
    fn results(&self) -> Vec<(String, Value, PathBuf)> {
        let mut out = Vec::new();
        let job = self.path().join("ws/job");
        for alg in std::fs::read_dir(&job).unwrap().flatten() {
            for case in std::fs::read_dir(alg.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let m = case.path().join("metrics.json");
                if let Ok(b) = std::fs::read(&m) {
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    out.push((v["algorithm"].as_str().unwrap().to_string(), v, case.path()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn plugin_module(fail: &str, extra: &str) -> String {
    format!(
        "    - type: \"basemodel\"\n      name: \"Nearest\"\n      url: \"./model.py\"\n{extra}      hyperparameters:\n        - fail:\n            values: [\"{fail}\"]\n"
    )
}

/// Processes whose command line names a plug-in file of the job in `dir` (its plug-in
/// children; ianvs itself names only the YAML).
fn children_under(dir: &Path) -> Vec<u32> {
    let needles: Vec<String> = ["model.py", "metric.py", "first_feature"]
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    needles.iter().any(|n| c.contains(n.as_str()))
                })
                .unwrap_or(false)
        })
        .collect()
}

fn assert_no_children(dir: &Path) {
    // The group is killed before ianvs exits; give the kernel a moment to reap.
    let t = Instant::now();
    while !children_under(dir).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        children_under(dir),
        Vec::<u32>::new(),
        "plug-in children outlived ianvs"
    );
}

#[test]
fn a_python_basemodel_and_metric_rank_beside_a_builtin_and_keep_stderr() {
    let job = Job::new(
        &[
            ("py", &plugin_module("", "")),
            ("builtin", "    - type: \"basemodel\"\n      name: \"MLP\"\n      hyperparameters:\n        - epochs:\n            values: [2]\n"),
        ],
        "    - name: \"plugin_accuracy\"\n      url: \"./metric.py\"\n",
    );
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r.len(), 2);
    let (_, py, dir) = &r[1];
    assert_eq!(py["status"], "ok");
    // The nearest-centre model separates this data; the plug-in metric agrees with the built-in.
    assert_eq!(py["metrics"]["accuracy"], 1.0, "{py}");
    assert_eq!(py["metrics"]["plugin_accuracy"], py["metrics"]["accuracy"]);
    assert!(
        r[0].1["metrics"]["plugin_accuracy"].as_f64().is_some(),
        "the plug-in metric scores the built-in case too: {}",
        r[0].1
    );
    let m = &py["measurements"];
    assert!(m["plugin_compute_s"].as_f64().unwrap() > 0.0);
    assert!(m["plugin_overhead_s"].as_f64().unwrap() >= 0.0);
    let log = std::fs::read_to_string(dir.join("plugin-basemodel-Nearest.stderr.log")).unwrap();
    assert!(log.contains("training on 48 samples"), "{log}");
    assert!(log.contains("a print() goes to stderr too"), "{log}");
    let board = std::fs::read_to_string(job.path().join("ws/job/rank/all_rank.csv")).unwrap();
    assert!(board.contains("py") && board.contains("builtin"), "{board}");
    assert_no_children(job.path());
}

/// Runs a job with one failing plug-in case and one good built-in case.
fn run_failing(fail: &str, extra: &str) -> (Job, String) {
    let job = Job::new(
        &[
            ("bad", &plugin_module(fail, extra)),
            ("good", "    - type: \"basemodel\"\n      name: \"MLP\"\n      hyperparameters:\n        - epochs:\n            values: [1]\n"),
        ],
        "",
    );
    run_quiet(ianvs(), job.bench(), 1);
    let r = job.results();
    assert_eq!(r.len(), 2, "both cases are recorded");
    assert_eq!(r[1].0, "good");
    assert_eq!(r[1].1["status"], "ok", "the other case still runs");
    assert_eq!(r[0].1["status"], "failed");
    let err = r[0].1["error"].as_str().unwrap().to_string();
    assert!(
        r[0].2.join("plugin-basemodel-Nearest.stderr.log").is_file(),
        "stderr kept in the failed case's folder"
    );
    assert_no_children(job.path());
    (job, err)
}

#[test]
fn a_plugin_that_raises_fails_its_case_with_the_users_file_and_line() {
    let (_job, err) = run_failing("raise", "");
    assert!(
        err.contains("ValueError") && err.contains("the plug-in broke on purpose"),
        "{err}"
    );
    let line = MODEL
        .lines()
        .position(|l| l.contains("raise ValueError"))
        .unwrap()
        + 1;
    assert!(
        err.contains("model.py\", line ") && err.contains(&format!("line {line}")),
        "{err}"
    );
    assert!(
        !err.contains("ianvs_host.py"),
        "the host's own frames are left out: {err}"
    );
}

#[test]
fn a_plugin_that_exits_fails_its_case_with_its_status_and_stderr() {
    let (_job, err) = run_failing("exit", "");
    assert!(
        err.contains("ended during train") && err.contains("exit status: 7"),
        "{err}"
    );
    assert!(
        err.contains("training on 48 samples"),
        "the end of its stderr: {err}"
    );
}

#[test]
fn a_plugin_that_hangs_is_killed_at_the_per_call_timeout() {
    let t = Instant::now();
    let (_job, err) = run_failing("hang", "      timeout_s: 1\n");
    assert!(err.contains("predict did not answer within 1 s"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(100),
        "the hang (120 s) was cut short"
    );
}

#[test]
fn a_plugin_returning_the_wrong_type_or_shape_fails_its_case() {
    let (_job, err) = run_failing("type", "");
    assert!(err.contains("predict returned list of dtype <U3"), "{err}");
    let (_job, err) = run_failing("shape", "");
    assert!(
        err.contains("shape [12, 7]") && err.contains("[12, 3] array of class scores"),
        "{err}"
    );
}

fn validate(job: &Job, python: Option<&str>) -> (i32, String) {
    let mut c = ianvs();
    c.arg("validate").arg("-f").arg(job.bench());
    if let Some(p) = python {
        c.env("IANVS_PYTHON", p);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_finds_plugin_problems_before_anything_runs() {
    // Missing interpreter.
    let job = Job::new(&[("py", &plugin_module("", ""))], "");
    let (code, err) = validate(&job, Some("/nonexistent/python3"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"/nonexistent/python3\" (chosen by IANVS_PYTHON) was not found"),
        "{err}"
    );
    assert!(
        err.contains("py.yaml:"),
        "located in the algorithm file: {err}"
    );

    // An import error names the package.
    std::fs::write(
        job.path().join("model.py"),
        format!("import not_a_real_package_xyz\n{MODEL}"),
    )
    .unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("imports `not_a_real_package_xyz`, which is not installed"),
        "{err}"
    );

    // An alias the file does not register lists those it does.
    std::fs::write(
        job.path().join("model.py"),
        MODEL.replace("alias=\"Nearest\"", "alias=\"Centroid\""),
    )
    .unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("registers no `general` class or function named \"Nearest\""),
        "{err}"
    );
    assert!(
        err.contains("Centroid"),
        "lists the registered aliases: {err}"
    );

    // A hyperparameter the constructor does not accept (no **kwargs).
    std::fs::write(
        job.path().join("model.py"),
        MODEL.replace(
            "def __init__(self, fail=\"\", scale=1.0, **kwargs)",
            "def __init__(self, scale=1.0)",
        ),
    )
    .unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not accept the hyperparameter `fail`"),
        "{err}"
    );
    assert!(err.contains("scale"), "lists the accepted ones: {err}");
    assert!(!job.path().join("ws").exists(), "nothing was written");

    // A metric alias that is not registered.
    let job = Job::new(
        &[("py", &plugin_module("", ""))],
        "    - name: \"f2\"\n      url: \"./metric.py\"\n",
    );
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("testenv.yaml:") && err.contains("plugin_accuracy"),
        "{err}"
    );
    assert_no_children(job.path());
}

#[test]
fn paradigms_not_open_to_plugins_say_so() {
    let job = Job::new(&[("py", &plugin_module("", ""))], "");
    let alg = job.path().join("py.yaml");
    let text = std::fs::read_to_string(&alg)
        .unwrap()
        .replace("singletasklearning", "lifelonglearning");
    std::fs::write(&alg, text).unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("plug-in modules are not supported yet in paradigm `lifelonglearning`"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_a_running_plugin_and_leaves_no_child() {
    let job = Job::new(&[("bad", &plugin_module("hang", ""))], "");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ianvs"))
        .arg("run")
        .arg("-f")
        .arg(job.bench())
        .arg("--quiet")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the case's plug-in has trained and hangs in `predict` (its stderr, kept in
    // the job folder until the case is written, says it trained).
    let logs = job.path().join("ws/job/.plugin-logs");
    let t = Instant::now();
    let trained = || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|case| {
                std::fs::read_to_string(case.path().join("plugin-basemodel-Nearest.stderr.log"))
                    .is_ok_and(|l| l.contains("a print() goes to stderr too"))
            })
    };
    while !trained() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the plug-in never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!children_under(job.path()).is_empty(), "the plug-in runs");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on the ianvs process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_no_children(job.path());
}

/// Sedna's own `hard_example_mining.py`, unchanged, between built-in edge and cloud models:
/// its `CrossEntropyFilter` makes exactly the decisions of the built-in CrossEntropy miner
/// (the same rule) on the same trained models.
#[test]
fn sednas_miner_file_runs_unchanged_between_builtin_models_in_joint_inference() {
    const THRESHOLDS: [f64; 3] = [0.9, 0.99, 0.999];
    let sedna = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testenvs/plugins-mnist/testalgorithms/hard_example_mining.py");
    let models = "    - type: \"edgemodel\"\n      name: \"MLP\"\n      hyperparameters:\n        - hidden_sizes:\n            values: [[16]]\n        - epochs:\n            values: [40]\n        - learning_rate:\n            values: [0.05]\n    - type: \"cloudmodel\"\n      name: \"MLP\"\n      hyperparameters:\n        - epochs:\n            values: [3]\n";
    let plugin = format!("{models}    - type: \"hard_example_mining\"\n      name: \"CrossEntropy\"\n      url: \"{}\"\n      hyperparameters:\n        - threshold_cross_entropy:\n            values: {THRESHOLDS:?}\n", sedna.display());
    let builtin = format!("{models}    - type: \"hard_example_mining\"\n      name: \"CrossEntropy\"\n      hyperparameters:\n        - threshold:\n            values: {THRESHOLDS:?}\n");
    let job = Job::with(
        "jointinference",
        &[("sedna", &plugin), ("builtin", &builtin)],
        "  hard_example_mining_mode: \"inference-then-mining\"\n",
    );
    run_quiet(ianvs(), job.bench(), 0);
    // Routes of every case, by algorithm and threshold.
    let mut routes: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for (alg, v, dir) in job.results() {
        assert_eq!(v["status"], "ok", "{v}");
        let hps = &v["modules"][2]["hyperparameters"];
        let t = hps
            .get("threshold")
            .or(hps.get("threshold_cross_entropy"))
            .unwrap()
            .to_string();
        let r: Vec<String> = std::fs::read_to_string(dir.join("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["route"].to_string())
            .collect();
        assert_eq!(r.len(), 12);
        if alg == "sedna" {
            let m = &v["measurements"];
            assert_eq!(
                m["miner_plugin_calls"], 12.0,
                "one filter call per test sample: {m}"
            );
            assert!(m["miner_plugin_compute_s"].as_f64().unwrap() > 0.0);
        }
        routes.insert((t, alg), r);
    }
    assert_eq!(routes.len(), 2 * THRESHOLDS.len());
    for t in THRESHOLDS {
        let key = |a: &str| (t.to_string(), a.to_string());
        assert_eq!(
            routes[&key("sedna")],
            routes[&key("builtin")],
            "threshold {t}: the same samples go to the cloud under both miners"
        );
    }
    let all: Vec<&String> = routes.values().flatten().collect();
    assert!(
        all.iter().any(|x| x.contains("cloud")) && all.iter().any(|x| x.contains("edge")),
        "the thresholds split the samples: {routes:?}"
    );
    assert_no_children(job.path());
}

/// The scenario of testenvs/plugins-mnist: the Ianvs-style numpy base model and the Ianvs
/// metric file through ianvs reach exactly the accuracy of the same files run the way Ianvs's
/// single-task paradigm runs them, in plain Python, on the same split (real MNIST digits).
#[test]
fn plugins_mnist_reaches_the_accuracy_of_the_plain_python_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .arg("run")
        .arg("-f")
        .arg(root.join("testenvs/plugins-mnist/benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .arg("--json")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let board: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = board["rows"]
        .as_array()
        .or(board.as_array())
        .cloned()
        .unwrap_or_default();
    let text = board.to_string();
    assert!(
        text.contains("numpy-mlp-plugin") && text.contains("candle-mlp"),
        "one leaderboard: {text}"
    );
    let plugin_acc = rows
        .iter()
        .find(|r| r.to_string().contains("numpy-mlp-plugin"))
        .and_then(|r| r.get("accuracy").and_then(Value::as_f64))
        .unwrap_or_else(|| panic!("no accuracy for the plug-in case in {text}"));
    let direct =
        accuracy_printed_by(&root.join("testenvs/plugins-mnist/scripts/run_like_ianvs.py"));
    assert!(
        (plugin_acc - direct).abs() < 1e-4,
        "ianvs {plugin_acc} vs plain Python {direct}"
    );
    assert!(plugin_acc > 0.85, "a real model: {plugin_acc}");
}

/// The protocol is the contract, not Python: an executable (here a script with no `.py`
/// extension, that imports neither the host nor Sedna nor numpy) that speaks protocol v1 on
/// its stdin/stdout is a plug-in too.
const RAW_PLUGIN: &str = r#"#!/usr/bin/env python3
import json, struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer

def read(n):
    b = inp.read(n)
    if len(b) != n:
        sys.exit(0)
    return b

def read_frame():
    (h,) = struct.unpack("<I", read(4)); header = json.loads(read(h))
    (n,) = struct.unpack("<I", read(4)); tensors = []
    for _ in range(n):
        (m,) = struct.unpack("<I", read(4)); meta = json.loads(read(m))
        (b,) = struct.unpack("<Q", read(8)); tensors.append((meta, read(b)))
    return header, tensors

def send(header, tensors=()):
    hb = json.dumps(header).encode()
    out.write(struct.pack("<I", len(hb)) + hb + struct.pack("<I", len(tensors)))
    for meta, data in tensors:
        mb = json.dumps(meta).encode()
        out.write(struct.pack("<I", len(mb)) + mb + struct.pack("<Q", len(data)) + data)
    out.flush()

send({"op": "hello", "protocol": 1, "ok": True, "kinds": {"general": ["FirstFeature"]}})
while True:
    header, tensors = read_frame()
    if header["op"] == "init":
        send({"ok": True, "compute_s": 0.0, "result": {"methods": ["predict"]}})
    elif header["method"] == "predict":
        meta, data = tensors[0]
        n, d = meta["shape"]
        xs = struct.unpack("<%df" % (n * d), data)
        # Class of each sample: its first feature, rounded and clipped to the 3 classes.
        labels = [min(2, max(0, int(round(xs[i * d])))) for i in range(n)]
        send({"ok": True, "compute_s": 0.0, "result": None},
             [({"dtype": "i64", "shape": [n]}, struct.pack("<%dq" % n, *labels))])
"#;

#[test]
fn an_executable_speaking_the_protocol_is_a_plugin_in_any_language() {
    let job = Job::new(
        &[(
            "raw",
            "    - type: \"basemodel\"\n      name: \"FirstFeature\"\n      url: \"./first_feature\"\n",
        )],
        "",
    );
    let exe = job.path().join("first_feature");
    std::fs::write(&exe, RAW_PLUGIN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r[0].1["status"], "ok", "{}", r[0].1);
    // The first feature is class + jitter in [0, 0.5]: Python's round (ties to even)
    // recovers the class except at some ties; compare with that rule exactly.
    let rows: Vec<Vec<f64>> = data_csv()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let test: Vec<&Vec<f64>> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 4)
        .map(|(_, r)| r)
        .collect();
    let want = test
        .iter()
        .filter(|r| (r[0].round_ties_even().clamp(0.0, 2.0) - r[4]).abs() < 1e-9)
        .count() as f64
        / test.len() as f64;
    assert_eq!(r[0].1["metrics"]["accuracy"].as_f64().unwrap(), want);
    assert_no_children(job.path());
}

/// What Ianvs example modules import besides the ClassFactory is there when Sedna is not
/// installed: Sedna's `Context`, `LOGGER`, `FileOps`, data sources, and Ianvs's `core.common.log`.
#[test]
fn the_sedna_shim_covers_what_ianvs_examples_import() {
    let job = Job::new(&[("py", &plugin_module("", ""))], "");
    let header = "from sedna.common.config import Context, BaseConfig\nfrom sedna.common.log import LOGGER\nfrom sedna.common.file_ops import FileOps\nfrom sedna.common.utils import get_host_ip\nfrom sedna.datasources import BaseDataSource, IndexDataParse, TxtDataParse, CSVDataParse, JSONDataParse\nfrom core.common.log import LOGGER as CORE_LOGGER\nLOGGER.info(\"model dir %s\", Context.get_parameters(\"MODEL_URL\", \"none\"))\nassert FileOps.join_path(\"a\", \"b\") == \"a/b\"\n";
    std::fs::write(job.path().join("model.py"), format!("{header}{MODEL}")).unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 0, "{err}");
    run_quiet(ianvs(), job.bench(), 0);
    let (_, v, dir) = &job.results()[0];
    assert_eq!(v["status"], "ok");
    let log = std::fs::read_to_string(dir.join("plugin-basemodel-Nearest.stderr.log")).unwrap();
    assert!(log.contains("[sedna][INFO]: model dir none"), "{log}");
}

/// A case id covers the plug-in file's content: after the file is edited, `--resume` runs the
/// case again instead of keeping the result of the old code.
#[test]
fn editing_a_plugin_file_makes_a_new_case() {
    let job = Job::new(&[("py", &plugin_module("", ""))], "");
    let run = || {
        let out = ianvs()
            .arg("run")
            .arg("-f")
            .arg(job.bench())
            .arg("--quiet")
            .arg("--resume")
            .output()
            .unwrap();
        assert_exit(&out, 0);
        job.results()
            .into_iter()
            .map(|(_, v, _)| v["case_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(run(), first, "an unchanged file resumes as complete");
    std::fs::write(job.path().join("model.py"), format!("{MODEL}\n# edited\n")).unwrap();
    let after = run();
    assert_eq!(
        after.len(),
        2,
        "the edited plug-in is a new case beside the old one: {after:?}"
    );
}

/// A plug-in that classifies index-file samples by reading the file at each path (byte 8, after
/// a PNG signature, is the class) and writes what it was given to `seen.json` beside itself.
const PATH_MODEL: &str = r#"
import json, os
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory
from sedna.datasources import TxtDataParse

SEEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.json")

def classes(paths):
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read()[8])
    return np.array(out)

@ClassFactory.register(ClassType.GENERAL, alias="ReadsPaths")
class ReadsPaths:
    def __init__(self, **kwargs):
        self.seen = {}

    def train(self, train_data, valid_data=None, **kwargs):
        assert isinstance(train_data, TxtDataParse), type(train_data)
        self.seen["train_x"] = train_data.x.tolist()
        self.seen["train_y"] = train_data.y.tolist()
        self.seen["train_kinds"] = [train_data.x.dtype.kind, train_data.y.dtype.kind]
        assert (classes(train_data.x) < 3).all()

    def predict(self, data, **kwargs):
        if isinstance(data, str):
            # Joint inference: one sample, as Ianvs's flow passes it; a label back.
            self.seen.setdefault("one", []).append(str(data))
            with open(SEEN, "w") as f:
                json.dump(self.seen, f)
            return int(classes([data])[0])
        self.seen["test_x"] = data.tolist()
        self.seen["test_kind"] = data.dtype.kind
        with open(SEEN, "w") as f:
            json.dump(self.seen, f)
        return classes(data)
"#;

/// A metric that reads the labels as Ianvs passes them (text) and fails on anything else.
const PATH_METRIC: &str = r#"
import json, os
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="text_accuracy")
def text_accuracy(y_true, y_pred, **kwargs):
    assert y_true.dtype.kind == "U", y_true.dtype
    # The first call is on the whole test split (later ones on bootstrap resamples).
    seen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metric_seen.json")
    if not os.path.exists(seen):
        with open(seen, "w") as f:
            json.dump(y_true.tolist(), f)
    truth = np.array([int(str(y).split("/")[-1]) for y in y_true])
    return float((truth == np.asarray(y_pred)).mean())
"#;

/// A job whose data are Ianvs index files of "images" (files with a PNG signature, class in
/// byte 8): the train index with relative paths, the test index with absolute ones.
fn path_job(modules: &str, paradigm: &str) -> Job {
    path_job_with(&[("alg", modules)], paradigm)
}

fn path_job_with(algorithms: &[(&str, &str)], paradigm: &str) -> Job {
    let job = Job::with(paradigm, algorithms, "");
    let p = job.path();
    std::fs::create_dir_all(p.join("data/images")).unwrap();
    let (mut train, mut test) = (String::new(), String::new());
    for i in 0..30 {
        let class = (i % 3) as u8;
        let name = format!("images/{i:02}.png");
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend([class, 0, 0, 0]);
        std::fs::write(p.join("data").join(&name), bytes).unwrap();
        if i % 5 == 4 {
            test += &format!("{} {class}\n", p.join("data").join(&name).display());
        } else {
            train += &format!("{name} {class}\n");
        }
    }
    std::fs::write(p.join("data/train_index.txt"), train).unwrap();
    std::fs::write(p.join("data/test_index.txt"), test).unwrap();
    std::fs::write(p.join("paths.py"), PATH_MODEL).unwrap();
    std::fs::write(p.join("text_metric.py"), PATH_METRIC).unwrap();
    std::fs::write(
        p.join("testenv.yaml"),
        "testenv:\n  dataset:\n    train_index: \"./data/train_index.txt\"\n    test_index: \"./data/test_index.txt\"\n  metrics:\n    - name: \"accuracy\"\n    - name: \"text_accuracy\"\n      url: \"./text_metric.py\"\n",
    )
    .unwrap();
    job
}

const PATH_MODULE: &str =
    "    - type: \"basemodel\"\n      name: \"ReadsPaths\"\n      url: \"./paths.py\"\n";

#[test]
fn index_file_samples_reach_a_plugin_as_ianvs_passes_them() {
    let job = path_job(PATH_MODULE, "singletasklearning");
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1["status"], "ok", "{}", r[0].1);
    assert_eq!(r[0].1["metrics"]["accuracy"], 1.0, "{}", r[0].1);
    assert_eq!(r[0].1["metrics"]["text_accuracy"], 1.0, "{}", r[0].1);
    let seen: Value =
        serde_json::from_slice(&std::fs::read(job.path().join("seen.json")).unwrap()).unwrap();
    // Sedna's TxtDataParse: numpy string arrays.
    assert_eq!(seen["train_kinds"], serde_json::json!(["U", "U"]));
    assert_eq!(seen["test_kind"], "U");
    // The train index holds relative paths: Ianvs makes every field of every line absolute
    // against the index file's folder, the label included.
    let data = job.path().join("data");
    assert_eq!(seen["train_x"].as_array().unwrap().len(), 24);
    assert_eq!(
        seen["train_x"][0],
        data.join("images/00.png").display().to_string()
    );
    assert_eq!(seen["train_y"][1], data.join("1").display().to_string());
    // The test index holds absolute paths: used as written, labels as written.
    assert_eq!(
        seen["test_x"][0],
        data.join("images/04.png").display().to_string()
    );
    let metric_seen: Value =
        serde_json::from_slice(&std::fs::read(job.path().join("metric_seen.json")).unwrap())
            .unwrap();
    assert_eq!(metric_seen[0], "1", "test labels as written: {metric_seen}");
    assert_eq!(metric_seen.as_array().unwrap().len(), 6);
    assert_no_children(job.path());
}

#[test]
fn a_missing_sample_in_an_index_file_is_an_error_naming_the_file_and_line() {
    let job = path_job(PATH_MODULE, "singletasklearning");
    std::fs::remove_file(job.path().join("data/images/02.png")).unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("train_index.txt:3: sample \"images/02.png\"") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn builtin_modules_refuse_index_samples_they_cannot_decode_naming_who_takes_them() {
    let job = path_job(
        "    - type: \"basemodel\"\n      name: \"MLP\"\n      hyperparameters:\n        - epochs:\n            values: [1]\n",
        "singletasklearning",
    );
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("alg.yaml"), "names the algorithm file: {err}");
    assert!(
        err.contains("basemodel \"MLP\" is built in and reads numeric features"),
        "{err}"
    );
    assert!(
        err.contains("train_index.txt: line 1: sample images/00.png: a PNG image"),
        "{err}"
    );
    assert!(err.contains("plug-in modules only"), "{err}");
    // Joint inference: built-in edge and cloud models refuse them too, and a plug-in beside a
    // built-in model would see paths where the other sees numbers.
    let builtin_pair = "    - type: \"edgemodel\"\n      name: \"MLP\"\n    - type: \"cloudmodel\"\n      name: \"MLP\"\n    - type: \"hard_example_mining\"\n      name: \"EdgeOnly\"\n";
    let (code, err) = validate(&path_job(builtin_pair, "jointinference"), None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the edge model (MLP) and the cloud model (MLP) are built in")
            && err.contains("a PNG image"),
        "{err}"
    );
    let mixed = format!(
        "{}    - type: \"cloudmodel\"\n      name: \"MLP\"\n    - type: \"hard_example_mining\"\n      name: \"EdgeOnly\"\n",
        PATH_MODULE.replace("basemodel", "edgemodel")
    );
    let (code, err) = validate(&path_job(&mixed, "jointinference"), None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("must both be plug-ins or both built in"),
        "{err}"
    );
    // Lifelong learning's modules are all built in.
    let lifelong = "    - type: \"basemodel\"\n      name: \"MLP\"\n    - type: \"task_definition\"\n      name: \"Split\"\n    - type: \"task_update_decision\"\n      name: \"Replay\"\n";
    let job = path_job(lifelong, "lifelonglearning");
    std::fs::write(
        job.path().join("testenv.yaml"),
        "testenv:\n  dataset:\n    train_index: \"./data/train_index.txt\"\n    test_index: \"./data/test_index.txt\"\n  metrics:\n    - name: \"average-accuracy\"\n",
    )
    .unwrap();
    let bench = std::fs::read_to_string(job.bench()).unwrap();
    std::fs::write(
        job.bench(),
        bench.replace("\"accuracy\"", "\"average-accuracy\""),
    )
    .unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("lifelong learning's modules are built in") && err.contains("a PNG image"),
        "{err}"
    );
}

#[test]
fn joint_inference_passes_one_index_sample_at_a_time_to_plugin_edge_and_cloud_models() {
    let models = format!(
        "{}    - type: \"cloudmodel\"\n      name: \"ReadsPaths\"\n      url: \"./paths.py\"\n",
        PATH_MODULE.replace("basemodel", "edgemodel")
    );
    let miner =
        |m: &str| format!("{models}    - type: \"hard_example_mining\"\n      name: \"{m}\"\n");
    let (cloud, oracle) = (miner("CloudOnly"), miner("Oracle"));
    let job = path_job_with(&[("cloud", &cloud), ("oracle", &oracle)], "jointinference");
    std::fs::write(
        job.path().join("testenv.yaml"),
        "testenv:\n  dataset:\n    train_index: \"./data/train_index.txt\"\n    test_index: \"./data/test_index.txt\"\n  metrics:\n    - name: \"accuracy\"\n    - name: \"text_accuracy\"\n      url: \"./text_metric.py\"\n    - name: \"cloud-calls\"\n    - name: \"uplink-bytes\"\n  warmup_samples: 0\n",
    )
    .unwrap();
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r.len(), 2);
    for (name, v, _) in &r {
        assert_eq!(v["status"], "ok", "{name}: {v}");
        assert_eq!(v["metrics"]["accuracy"], 1.0, "{name}: {v}");
        assert_eq!(v["metrics"]["text_accuracy"], 1.0, "{name}: {v}");
    }
    // CloudOnly: every test sample's file (12 bytes) goes up the link.
    let cloud = &r[0].1;
    assert_eq!(cloud["metrics"]["cloud-calls"], 6.0, "{cloud}");
    assert_eq!(cloud["metrics"]["uplink-bytes"], 72.0, "{cloud}");
    // Each predict got one path (a str), as Ianvs's joint inference calls it.
    let seen: Value =
        serde_json::from_slice(&std::fs::read(job.path().join("seen.json")).unwrap()).unwrap();
    let data = job.path().join("data");
    assert!(
        seen["one"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| *p == data.join("images/04.png").display().to_string()),
        "{seen}"
    );
    assert_no_children(job.path());
}

#[test]
fn plugins_images_reaches_the_accuracy_of_ianvs_on_the_same_index_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scenario = root.join("testenvs/plugins-images");
    let setup = std::process::Command::new("python3")
        .arg(scenario.join("scripts/make_images.py"))
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let ws = tempfile::tempdir().unwrap();
    let out = ianvs()
        .arg("run")
        .arg("-f")
        .arg(scenario.join("benchmark.yaml"))
        .arg("--workspace")
        .arg(ws.path())
        .arg("--json")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let board: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = board.to_string();
    let rows = board["rows"]
        .as_array()
        .or(board.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(rows.len(), 2, "two ranked cases: {text}");
    let acc_of = |hidden: u64| {
        rows.iter()
            .find(|r| {
                r.as_object().is_some_and(|o| {
                    o.iter()
                        .any(|(k, v)| k.ends_with("hidden_size") && v.as_u64() == Some(hidden))
                })
            })
            .and_then(|r| r.get("accuracy").and_then(Value::as_f64))
            .unwrap_or_else(|| panic!("no accuracy for hidden_size {hidden} in {text}"))
    };
    let plugin_acc = acc_of(64);
    // The same files run the way Ianvs does (its index rewrite and Sedna's TxtDataParse).
    let direct = accuracy_printed_by(&scenario.join("scripts/run_like_ianvs.py"));
    assert!(
        (plugin_acc - direct).abs() < 1e-9,
        "ianvs {plugin_acc} vs Ianvs's flow in Python {direct}"
    );
    assert!(plugin_acc > 0.85, "a real model: {plugin_acc}");
    assert!(acc_of(0) > 0.8, "softmax regression: {text}");
}

/// A pretrained plug-in (no `train`): Ianvs gives it `initial_model_url` through
/// `BASE_MODEL_URL` and `load(model_url)`; it classifies by the nearest stored centre.
const PRETRAINED: &str = r#"
import json, os
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="Pretrained")
class Pretrained:
    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        self.scale, self.offset = scale, offset
        self.centres = None

    def load(self, model_url):
        assert os.environ["BASE_MODEL_URL"] == model_url, (os.environ["BASE_MODEL_URL"], model_url)
        with open(model_url) as f:
            self.centres = np.array(json.load(f))

    def predict(self, data, **kwargs):
        d = ((data[:, None, :] - self.centres[None]) ** 2).sum(axis=2)
        print("scale", self.scale, "offset", self.offset)
        return d.argmin(axis=1)
"#;

#[test]
fn initial_model_url_reaches_a_pretrained_plugin_as_in_ianvs_and_is_refused_for_builtins() {
    let module =
        "    - type: \"basemodel\"\n      name: \"Pretrained\"\n      url: \"./pretrained.py\"\n";
    let job = Job::new(&[("pre", module)], "");
    let p = job.path();
    std::fs::write(p.join("pretrained.py"), PRETRAINED).unwrap();
    // The class centres of data_csv(), computed here as a "pretrained model".
    let mut sums = [[0f64; 4]; 3];
    let mut counts = [0f64; 3];
    for line in data_csv().lines() {
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let c = v[4] as usize;
        counts[c] += 1.0;
        for k in 0..4 {
            sums[c][k] += v[k];
        }
    }
    let centres: Vec<Vec<f64>> = (0..3)
        .map(|c| sums[c].iter().map(|s| s / counts[c]).collect())
        .collect();
    std::fs::write(
        p.join("model.json"),
        serde_json::to_string(&centres).unwrap(),
    )
    .unwrap();
    let alg = std::fs::read_to_string(p.join("pre.yaml")).unwrap();
    let alg = alg.replace(
        "  paradigm_type: \"singletasklearning\"\n",
        "  paradigm_type: \"singletasklearning\"\n  initial_model_url: \"./model.json\"\n",
    );
    std::fs::write(p.join("pre.yaml"), &alg).unwrap();
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r[0].1["status"], "ok", "{}", r[0].1);
    assert_eq!(r[0].1["metrics"]["accuracy"], 1.0, "{}", r[0].1);
    assert_no_children(p);
    // A changed pretrained model is a new case under --resume (its sha256 is in the case id).
    let resumed = || {
        let out = ianvs()
            .arg("run")
            .arg("-f")
            .arg(job.bench())
            .arg("--quiet")
            .arg("--resume")
            .output()
            .unwrap();
        assert_exit(&out, 0);
        job.results().len()
    };
    assert_eq!(resumed(), 1, "an unchanged model resumes as complete");
    let moved: Vec<Vec<f64>> = centres
        .iter()
        .map(|c| c.iter().map(|v| v + 1e-3).collect())
        .collect();
    std::fs::write(p.join("model.json"), serde_json::to_string(&moved).unwrap()).unwrap();
    assert_eq!(resumed(), 2, "the changed model is a new case");

    // A built-in base model has no use for it: a located error.
    let builtin = alg.replace(module, "    - type: \"basemodel\"\n      name: \"MLP\"\n");
    std::fs::write(p.join("pre.yaml"), builtin).unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pre.yaml:3")
            && err.contains(
                "`initial_model_url` is not supported yet for this algorithm: only a plug-in `basemodel`"
            ),
        "{err}"
    );
}

#[test]
fn other_hyperparameters_files_reach_a_plugin_constructor_listed_values_winning() {
    let module = "    - type: \"basemodel\"\n      name: \"Nearest\"\n      url: \"./model.py\"\n      hyperparameters:\n        - other_hyperparameters:\n            values: [\"./base_hps.yaml\"]\n        - scale:\n            values: [3.0]\n";
    let job = Job::new(&[("oh", module)], "");
    // A constructor without **kwargs, so that an unknown name is refused.
    let strict = MODEL.replace("scale=1.0, **kwargs)", "scale=1.0)");
    assert_ne!(strict, MODEL);
    std::fs::write(job.path().join("model.py"), strict).unwrap();
    std::fs::write(job.path().join("base_hps.yaml"), "fail: \"\"\nscale: 2.0\n").unwrap();
    run_quiet(ianvs(), job.bench(), 0);
    let r = job.results();
    assert_eq!(r[0].1["status"], "ok", "{}", r[0].1);
    assert_eq!(
        r[0].1["modules"][0]["hyperparameters"],
        serde_json::json!({"fail": "", "scale": 3.0}),
        "{}",
        r[0].1
    );
    // A name the constructor does not take, from the file: found before anything runs.
    std::fs::write(job.path().join("base_hps.yaml"), "bogus: 1\n").unwrap();
    let (code, err) = validate(&job, None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bogus"), "{err}");
}

/// Runs a Python script that runs a scenario's files the way Ianvs does and returns the
/// accuracy it prints (`accuracy <value>`).
fn accuracy_printed_by(script: &Path) -> f64 {
    let py = std::process::Command::new("python3")
        .arg(script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&py.stdout);
    let direct: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("accuracy "))
        .unwrap_or_else(|| panic!("{stdout}{}", String::from_utf8_lossy(&py.stderr)))
        .parse()
        .unwrap();
    direct
}
