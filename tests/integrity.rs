//! Runs that cannot corrupt each other (issue 13), end to end on the tiny real fixture: the job
//! lock, concurrent renders, repeated grid values with `--jobs 2`, SIGTERM/SIGHUP, a full and a
//! read-only disk (a small tmpfs, when this test may mount one), stale results, and a compare
//! that cannot pass on nothing.

mod common;
use common::ianvs;

use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("ianvs")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A job `name` in `dir` whose one algorithm `a` is the MLP with the given hyperparameter
/// lines, on the tiny test environment (or `testenv`).
fn job(dir: &Path, name: &str, hps: &str, testenv: Option<&Path>) -> PathBuf {
    let alg = format!(
        "algorithm:\n  paradigm_type: singletasklearning\n  modules:\n    - type: basemodel\n      name: MLP\n      hyperparameters:\n{hps}"
    );
    std::fs::write(dir.join(format!("{name}-alg.yaml")), alg).unwrap();
    let te = testenv.map_or_else(|| fixtures().join("tiny/testenv.yaml"), Path::to_path_buf);
    let bench = format!("benchmarkingjob:\n  name: {name}\n  workspace: ./ws\n  testenv: {}\n  test_object:\n    algorithms:\n      - name: a\n        url: ./{name}-alg.yaml\n  rank:\n    sort_by:\n      - accuracy: descend\n", te.display());
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, bench).unwrap();
    f
}

const TWO: &str = "        - hidden_sizes:\n            values: [[16], [32]]\n        - epochs:\n            values: [2]\n";

fn run(bench: &Path, extra: &[&str]) -> Output {
    ianvs()
        .args(["run", "-f"])
        .arg(bench)
        .args(["--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn leaderboard_json(job_dir: &Path) -> Value {
    let b = std::fs::read(job_dir.join("rank/leaderboard.json")).unwrap();
    serde_json::from_slice(&b).unwrap_or_else(|e| {
        panic!(
            "leaderboard.json does not parse ({e}):\n{}",
            String::from_utf8_lossy(&b)
        )
    })
}

fn ranked_ids(job_dir: &Path) -> Vec<String> {
    leaderboard_json(job_dir)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["case_id"].as_str().unwrap().to_string())
        .collect()
}

fn metrics_files(job_dir: &Path) -> usize {
    let alg = job_dir.join("a");
    std::fs::read_dir(&alg).map_or(0, |d| {
        d.filter_map(|e| e.ok())
            .filter(|e| e.path().join("metrics.json").is_file())
            .count()
    })
}

#[test]
fn a_second_writer_refuses_naming_the_holder_or_waits() {
    let d = tempfile::tempdir().unwrap();
    let bench = job(d.path(), "locked", TWO, None);
    let job_dir = d.path().join("ws/locked");
    // This test process holds the job's lock, as a running `ianvs run` would.
    let held = ianvs::workspace::JobLock::acquire(&job_dir, false).unwrap();
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("--wait"),
        "{err}"
    );
    assert_eq!(metrics_files(&job_dir), 0, "a refused run wrote cases");
    // Renders are writers too.
    std::fs::write(job_dir.join("job.json"), "{}").unwrap();
    let o = ianvs().arg("leaderboard").arg(&job_dir).output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    // With --wait the run queues behind the holder and runs once it lets go.
    let mut waiting = StdCommand::new(bin())
        .args(["run", "--quiet", "--wait", "-f"])
        .arg(&bench)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "--wait did not wait for the lock"
    );
    assert_eq!(metrics_files(&job_dir), 0);
    drop(held);
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(metrics_files(&job_dir), 2);
}

#[test]
fn concurrent_renders_leave_every_output_parseable() {
    let d = tempfile::tempdir().unwrap();
    let bench = job(d.path(), "renders", TWO, None);
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let job_dir = d.path().join("ws/renders");
    let rank = job_dir.join("rank");
    // Odd pairs race without --wait: one may be refused (exit 4, naming the other), never
    // both, and nothing either leaves behind may be torn. Even pairs queue with --wait.
    for pair in 0..100 {
        let wait = pair % 2 == 0;
        let spawn = || {
            StdCommand::new(bin())
                .arg("leaderboard")
                .args(if wait { &["--wait"][..] } else { &[][..] })
                .arg(&job_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let mut ok = 0;
        for p in [a, b] {
            let o = p.wait_with_output().unwrap();
            match o.status.code() {
                Some(0) => ok += 1,
                Some(4) if !wait => assert!(
                    String::from_utf8_lossy(&o.stderr).contains("in use by another ianvs process"),
                    "pair {pair}: {}",
                    text(&o)
                ),
                _ => panic!("pair {pair}: {}", text(&o)),
            }
        }
        assert!(ok >= 1, "pair {pair}: both renders refused");
        let v = leaderboard_json(&job_dir);
        assert_eq!(v["rows"].as_array().map(Vec::len), Some(2), "pair {pair}");
        let md = std::fs::read_to_string(rank.join("leaderboard.md")).unwrap();
        assert!(
            md.starts_with("# Leaderboard: renders"),
            "pair {pair}: {md}"
        );
        for csv in ["all_rank.csv", "selected_rank.csv"] {
            let c = std::fs::read_to_string(rank.join(csv)).unwrap();
            assert!(
                c.starts_with("rank,") && c.lines().count() == 3,
                "pair {pair} {csv}: {c}"
            );
        }
    }
    // No temporary file is left beside the outputs.
    let mut names: Vec<String> = std::fs::read_dir(&rank)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "all_rank.csv",
            "leaderboard.json",
            "leaderboard.md",
            "selected_rank.csv"
        ]
    );
}

#[test]
fn a_repeated_grid_value_runs_once_with_two_workers() {
    let d = tempfile::tempdir().unwrap();
    let hps = "        - learning_rate:\n            values: [0.01, 0.01]\n        - hidden_sizes:\n            values: [[16], [32]]\n        - epochs:\n            values: [2]\n";
    let bench = job(d.path(), "repeated", hps, None);
    for attempt in 0..3 {
        let ws = d.path().join(format!("ws{attempt}"));
        let o = ianvs()
            .args(["run", "--jobs", "2", "-f"])
            .arg(&bench)
            .arg("--workspace")
            .arg(&ws)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "attempt {attempt}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("warning:") && err.contains("`learning_rate`"),
            "{err}"
        );
        assert!(err.contains("2 case(s) run, 0 failed"), "{err}");
        let job_dir = ws.join("repeated");
        assert_eq!(metrics_files(&job_dir), 2);
        assert_eq!(ranked_ids(&job_dir).len(), 2);
    }
}

/// Starts a run of many short cases, waits for the first to finish, sends `signal`, and checks
/// the exit code and that the finished cases are ranked.
fn stop_with(signal: &str, code: i32) {
    let d = tempfile::tempdir().unwrap();
    let hps = "        - hidden_sizes:\n            values: [[8], [12], [16], [20], [24], [28], [32], [36], [40], [44], [48], [52]]\n        - epochs:\n            values: [40]\n";
    let bench = job(d.path(), "stopped", hps, None);
    let job_dir = d.path().join("ws/stopped");
    let child = StdCommand::new(bin())
        .args(["run", "--quiet", "-f"])
        .arg(&bench)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while metrics_files(&job_dir) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no case finished in 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let k = StdCommand::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    let done = metrics_files(&job_dir);
    assert!(
        (1..12).contains(&done),
        "{done} of 12 cases finished: the signal did not stop the run"
    );
    let ranked = ranked_ids(&job_dir);
    assert_eq!(
        ranked.len(),
        done,
        "the finished cases are not all ranked: {}",
        text(&o)
    );
    // The lock is free again: a resume runs the rest.
    let o = run(&bench, &["--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ranked_ids(&job_dir).len(), 12);
}

#[test]
fn sigterm_stops_like_ctrl_c_and_ranks_the_finished_cases() {
    stop_with("TERM", 143);
}

#[test]
fn sighup_stops_like_ctrl_c_and_ranks_the_finished_cases() {
    stop_with("HUP", 129);
}

/// A small tmpfs, unmounted on drop; `None` (with the reason printed) where this process may
/// not mount one (not root, or a container without the capability).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let o = StdCommand::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(o) => {
                println!(
                    "skipped: cannot mount a tmpfs here ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = StdCommand::new("umount").arg(&self.0).status();
    }
}

fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

fn assert_plain_io_error(o: &Output, os_error: &str) {
    assert_eq!(o.status.code(), Some(3), "{}", text(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(os_error), "{err}");
    for dump in ["Custom {", "IoError(", "Os {", "kind:", ".tmp\"", "at path"] {
        assert!(!err.contains(dump), "a Debug dump in the message: {err}");
    }
}

#[test]
fn a_full_or_read_only_disk_is_exit_3_with_a_plain_message_and_no_partial_file() {
    let d = tempfile::tempdir().unwrap();
    let bench = job(d.path(), "disk", TWO, None);
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let Some(fs) = Tmpfs::mount(&d.path().join("mnt"), "4m") else {
        return;
    };
    let job_dir = fs.0.join("disk");
    let cp = StdCommand::new("cp")
        .arg("-r")
        .arg(d.path().join("ws/disk"))
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(cp.success());
    for f in ["report.html", "report.md"] {
        std::fs::remove_file(job_dir.join(f)).unwrap();
    }
    std::fs::remove_dir_all(job_dir.join("plots")).unwrap();
    fill(&fs.0);

    // Drawing the report on a full disk.
    let o = ianvs().arg("report").arg(&job_dir).output().unwrap();
    assert_plain_io_error(&o, "No space left on device");
    assert!(!job_dir.join("report.html").exists());
    assert!(!job_dir.join("report.md").exists());
    // Every chart file that exists is whole.
    for e in std::fs::read_dir(job_dir.join("plots"))
        .into_iter()
        .flatten()
    {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            image::open(&p).unwrap_or_else(|e| panic!("{} is truncated: {e}", p.display()));
        }
        assert!(!p.file_name().unwrap().to_string_lossy().starts_with('.'));
    }
    // A run whose cases cannot be stored.
    let o = ianvs()
        .args(["run", "--quiet", "-f"])
        .arg(&bench)
        .arg("--workspace")
        .arg(&fs.0)
        .output()
        .unwrap();
    assert_plain_io_error(&o, "No space left on device");

    // A read-only workspace.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let ro = StdCommand::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&fs.0)
        .status()
        .unwrap();
    assert!(ro.success());
    let o = ianvs().arg("leaderboard").arg(&job_dir).output().unwrap();
    assert_plain_io_error(&o, "Read-only file system");
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_with_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let bench = job(d.path(), "noreport", TWO, None);
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // `plots` becomes a file: the charts cannot be drawn into it.
    let job_dir = d.path().join("ws/noreport");
    std::fs::remove_dir_all(job_dir.join("plots")).unwrap();
    std::fs::write(job_dir.join("plots"), "in the way").unwrap();
    let o = run(&bench, &["--resume"]);
    assert_plain_io_error(&o, "plots");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("could not write the report"), "{err}");
    // The leaderboard of the finished cases was still written.
    assert_eq!(ranked_ids(&job_dir).len(), 2);
}

#[test]
fn stale_results_are_listed_not_ranked_and_prune_removes_them() {
    let d = tempfile::tempdir().unwrap();
    let bench = job(d.path(), "stale", TWO, None);
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let job_dir = d.path().join("ws/stale");
    let first = ranked_ids(&job_dir);
    assert_eq!(first.len(), 2);

    // The grid shrinks: the dropped case is stale, not ranked.
    let one = "        - hidden_sizes:\n            values: [[16]]\n        - epochs:\n            values: [2]\n";
    let bench = job(d.path(), "stale", one, None);
    let o = run(&bench, &["--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ianvs prune"), "{err}");
    let kept = ranked_ids(&job_dir);
    assert_eq!(kept.len(), 1);
    assert!(first.contains(&kept[0]));
    let lb = leaderboard_json(&job_dir);
    assert_eq!(lb["stale"].as_array().unwrap().len(), 1, "{lb}");
    let md = std::fs::read_to_string(job_dir.join("rank/leaderboard.md")).unwrap();
    assert!(md.contains("Stale results"), "{md}");
    // `ianvs leaderboard` (no YAML) ranks the same plan.
    let o = ianvs().arg("leaderboard").arg(&job_dir).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ranked_ids(&job_dir).len(), 1);

    // The data changes: every case id changes, the old results are stale.
    let te = d.path().join("testenv.yaml");
    let data = fixtures().join("tiny/digits_300.csv");
    std::fs::write(
        &te,
        format!("testenv:\n  dataset:\n    data: {}\n    feature_scale: 16\n    split:\n      method: interleaved\n      test_fraction: 0.25\n  metrics:\n    - name: accuracy\n    - name: f1_score\n    - name: latency-mean\n  warmup_samples: 2\n", data.display()),
    )
    .unwrap();
    let bench = job(d.path(), "stale", one, Some(&te));
    let o = run(&bench, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let now = ranked_ids(&job_dir);
    assert_eq!(now.len(), 1, "the same hyperparameters ranked twice");
    assert!(
        !first.contains(&now[0]),
        "a data change must change the case id"
    );
    assert_eq!(metrics_files(&job_dir), 3);

    // What a run killed by a second signal leaves: a hidden staging folder, never ranked.
    let leftover = job_dir.join("a/.0123456789ab.999-0.partial");
    std::fs::create_dir_all(&leftover).unwrap();
    let o = ianvs().arg("prune").arg(&job_dir).output().unwrap();
    assert!(!leftover.exists());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("removed 2 stale"));
    assert_eq!(metrics_files(&job_dir), 1);
    assert_eq!(
        leaderboard_json(&job_dir)["stale"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

fn compare_in(dir: &Path, args: &[&str]) -> Output {
    ianvs()
        .current_dir(dir)
        .arg("compare")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn compare_cannot_pass_on_nothing() {
    let d = tempfile::tempdir().unwrap();
    let base: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("compare/baseline.json")).unwrap())
            .unwrap();
    let put = |name: &str, v: &Value| {
        std::fs::write(d.path().join(name), serde_json::to_string(v).unwrap()).unwrap()
    };
    put("base.json", &base);
    put("empty.json", &serde_json::json!([]));
    let mut renamed = base.clone();
    for r in renamed["rows"].as_array_mut().unwrap() {
        r["algorithm"] = "other".into();
    }
    put("renamed.json", &renamed);

    // An empty baseline, even with --fail-on-missing; every algorithm renamed.
    for (b, c, extra) in [
        ("empty.json", "base.json", vec![]),
        ("empty.json", "base.json", vec!["--fail-on-missing"]),
        ("base.json", "renamed.json", vec![]),
    ] {
        let mut args = vec![b, c];
        args.extend(extra);
        let o = compare_in(d.path(), &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(b) && err.contains(c) && err.contains("no case matched"),
            "{err}"
        );
    }
    let o = compare_in(d.path(), &["empty.json", "base.json", "--allow-empty"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The one-step gate of a run cannot pass on nothing either.
    let o = run(
        &fixtures().join("tiny/benchmark.yaml"),
        &[
            "--workspace",
            d.path().join("ws").to_str().unwrap(),
            "--baseline",
            d.path().join("renamed.json").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("renamed.json"));

    // A metric stored as text cannot be compared: a failure unless the tolerance skips it.
    let mut texty = base.clone();
    for r in texty["rows"].as_array_mut().unwrap() {
        let v = r["accuracy"].clone();
        r["accuracy"] = Value::String(v.to_string());
    }
    put("text.json", &texty);
    let o = compare_in(d.path(), &["base.json", "text.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not comparable"));
    std::fs::write(
        d.path().join("skip.yaml"),
        "metrics:\n  accuracy: { ignore: true }\n  latency-mean: { ignore: true }\n",
    )
    .unwrap();
    let o = compare_in(d.path(), &["base.json", "text.json", "-t", "skip.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // An output file that cannot be written is an I/O error, not a regression.
    std::fs::write(d.path().join("plain"), "a file").unwrap();
    let o = compare_in(
        d.path(),
        &[
            "base.json",
            "base.json",
            "-t",
            "skip.yaml",
            "--junit",
            "plain/junit.xml",
        ],
    );
    assert_plain_io_error(&o, "plain");
}
