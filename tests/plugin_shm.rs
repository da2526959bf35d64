//! Shared-memory tensors of the plug-in protocol (docs/plugins.md, "Shared memory"): the
//! same answers as inline tensors, inline tensors for a child that does not announce shared
//! memory, tensors larger than the region's first size, placed tensors, and nothing left
//! behind (no descriptor in ianvs after a child ends, no /dev/shm file, also after a killed
//! run).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ianvs_algorithms::plugin::process::{choose_python, find_program, Launch, PluginProcess};
use ianvs_algorithms::plugin::protocol::{Arg, Tensor};
use serde_json::json;

/// Echoes and transforms its inputs so that every byte of both directions is checked.
const PLUGIN: &str = r#"
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="Echo")
class Echo:
    def __init__(self, **kwargs):
        self.kept = None
    def train(self, train_data, **kwargs):
        # Kept across calls, as a model keeps its training set: placed data must stay valid.
        self.kept = train_data.x
        return {"rows": int(len(train_data.x)), "y": int(train_data.y.sum())}
    def predict(self, data, **kwargs):
        # Inputs are writable (as Ianvs hands arrays to user code).
        data[0, 0] += 0.0
        out = data * 2.0 + 1.0
        if self.kept is not None:
            m = min(len(data), len(self.kept))
            out[:m, 0] = self.kept[:m, 0]
        return out
"#;

fn python() -> Option<PathBuf> {
    find_program(&choose_python(None).0)
}

fn start(dir: &Path, shm: bool) -> PluginProcess {
    let file = dir.join("echo_plugin.py");
    std::fs::write(&file, PLUGIN).unwrap();
    let mut p = PluginProcess::spawn_with(
        &Launch {
            file,
            python: python().unwrap(),
            timeout: Duration::from_secs(60),
            label: "test plug-in Echo".into(),
            log_name: "echo.log".into(),
            env: Vec::new(),
        },
        shm,
    )
    .unwrap();
    p.init("general", "Echo", &json!({}), false).unwrap();
    p
}

fn ramp(n: usize, d: usize, seed: f32) -> Vec<f32> {
    (0..n * d)
        .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - seed)
        .collect()
}

fn predict(p: &mut PluginProcess, x: &[f32], n: usize) -> Vec<u8> {
    let r = p
        .call(
            "predict",
            json!({}),
            vec![Tensor::from_f32(vec![n, x.len() / n], x)],
        )
        .unwrap();
    assert_eq!(r.tensors[0].shape, vec![n, x.len() / n]);
    r.tensors[0].data.clone()
}

/// Descriptors of this process that are plug-in shared regions.
fn regions_open_here() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("memfd:ianvs-plugin"))
        })
        .count()
}

fn dev_shm_ianvs_files() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("ianvs"))
        .collect()
}

#[test]
fn shared_memory_and_inline_tensors_give_identical_answers() {
    if python().is_none() {
        eprintln!("no python3: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut shm = start(dir.path(), true);
    let mut inline = start(dir.path(), false);
    assert!(shm.uses_shm());
    assert!(!inline.uses_shm());
    // A train set (x over the shared-memory threshold, y below it), then predictions of
    // sizes below the threshold, above it, and far beyond the region's first megabyte (both
    // sides grow it: ianvs for the 6.3 MB input, the child for the 6.3 MB answer).
    let (n, d) = (300, 40);
    let x = ramp(n, d, 0.5);
    assert!(n * d * 4 >= ianvs_algorithms::plugin::shm::SHM_MIN);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    for p in [&mut shm, &mut inline] {
        // Placed, as the single-task paradigm does: the model keeps `train_data.x`, and a
        // call's own tensors are overwritten by the next call.
        let x = p.place(Tensor::from_f32(vec![n, d], &x)).unwrap();
        let y = p.place(Tensor::from_i64(vec![n], &y)).unwrap();
        let r = p
            .call_with("train", json!({}), vec![x.into(), y.into()])
            .unwrap();
        assert_eq!(r.result, json!({"rows": 300, "y": 1350}));
    }
    for (n, d) in [(2, 8), (50, 784), (2000, 784), (3, 784)] {
        let x = ramp(n, d, 1.0);
        let a = predict(&mut shm, &x, n);
        let b = predict(&mut inline, &x, n);
        assert!(a == b, "{n}x{d}: shared memory and inline answers differ");
        // And both are right: column 0 from the kept train set, the rest 2x + 1.
        let got: Vec<f32> = a
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let x_train = ramp(300, 40, 0.5);
        for i in 0..n {
            for j in 0..d {
                let want = if j == 0 && i < 300 {
                    x_train[i * 40]
                } else {
                    x[i * d + j] * 2.0 + 1.0
                };
                assert_eq!(got[i * d + j], want, "{n}x{d}: row {i} column {j}");
            }
        }
    }
}

#[test]
fn placed_tensors_are_referenced_by_rows_in_both_modes() {
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (n, d) = (1000, 784);
    let test = ramp(n, d, 2.0);
    let mut answers = Vec::new();
    for shm in [true, false] {
        let mut p = start(dir.path(), shm);
        let placed = p.place(Tensor::from_f32(vec![n, d], &test)).unwrap();
        assert_eq!(placed.is_shared(), shm);
        let mut all = Vec::new();
        for start in (0..n).step_by(300) {
            let rows = placed.rows(start..(start + 300).min(n));
            let r = p
                .call_with("predict", json!({}), vec![Arg::Placed(rows)])
                .unwrap();
            all.extend_from_slice(&r.tensors[0].data);
        }
        // The same batches sent as bytes give the same answers.
        let mut sent = Vec::new();
        for start in (0..n).step_by(300) {
            let end = (start + 300).min(n);
            sent.extend(predict(&mut p, &test[start * d..end * d], end - start));
        }
        assert!(all == sent, "placed and sent batches differ (shm {shm})");
        // A handle from before `clear_placed` is refused, not misread.
        p.clear_placed();
        if shm {
            let e = p
                .call_with("predict", json!({}), vec![Arg::Placed(placed.rows(0..1))])
                .unwrap_err();
            assert!(e.to_string().contains("cleared"), "{e}");
        }
        answers.push(all);
    }
    assert!(answers[0] == answers[1]);
}

/// A protocol-v1 executable that knows nothing of shared memory (no `shm` in its hello):
/// ianvs sends it every tensor inline, however large.
const RAW_PLUGIN: &str = r#"#!/usr/bin/env python3
import json, os, struct, sys
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
        if "shm" in meta:
            sys.stderr.write("got a shared-memory tensor without announcing shm\n")
            sys.exit(5)
        (b,) = struct.unpack("<Q", read(8)); tensors.append((meta, read(b)))
    return header, tensors

def send(header, tensors=()):
    hb = json.dumps(header).encode()
    out.write(struct.pack("<I", len(hb)) + hb + struct.pack("<I", len(tensors)))
    for meta, data in tensors:
        mb = json.dumps(meta).encode()
        out.write(struct.pack("<I", len(mb)) + mb + struct.pack("<Q", len(data)) + data)
    out.flush()

send({"op": "hello", "protocol": 1, "ok": True, "kinds": {"general": ["Same"]}})
while True:
    header, tensors = read_frame()
    if header["op"] == "init":
        send({"ok": True, "compute_s": 0.0, "result": {"methods": ["predict"]}})
    else:
        send({"ok": True, "compute_s": 0.0, "result": None}, tensors)
"#;

#[test]
fn a_child_that_does_not_announce_shared_memory_gets_inline_tensors() {
    if python().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("same");
    std::fs::write(&exe, RAW_PLUGIN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = PluginProcess::spawn_with(
        &Launch {
            file: exe,
            python: PathBuf::from("unused"),
            timeout: Duration::from_secs(60),
            label: "raw plug-in".into(),
            log_name: "raw.log".into(),
            env: Vec::new(),
        },
        true,
    )
    .unwrap();
    assert!(!p.uses_shm(), "offered, not announced: inline");
    p.init("general", "Same", &json!({}), false).unwrap();
    let x = ramp(100, 784, 0.0);
    let placed = p.place(Tensor::from_f32(vec![100, 784], &x)).unwrap();
    let r = p
        .call_with(
            "predict",
            json!({}),
            vec![
                Tensor::from_f32(vec![100, 784], &x).into(),
                placed.rows(10..20).into(),
            ],
        )
        .unwrap();
    assert_eq!(r.tensors[0], Tensor::from_f32(vec![100, 784], &x));
    assert_eq!(
        r.tensors[1],
        Tensor::from_f32(vec![10, 784], &x[10 * 784..20 * 784])
    );
}

#[test]
fn a_region_lives_exactly_as_long_as_its_child() {
    if python().is_none() {
        return;
    }
    // Other tests of this file run in parallel threads of this process and open regions too:
    // count this test's own by the child's descriptors instead of this process's.
    let before_shm = dev_shm_ianvs_files();
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path(), true);
    predict(&mut p, &ramp(100, 784, 0.0), 100);
    let pid = p.pid();
    let child_regions = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("memfd:ianvs-plugin"))
            })
            .count()
    };
    assert!(child_regions() >= 1, "the child holds its region");
    assert!(regions_open_here() >= 1, "and so does ianvs");
    assert_eq!(dev_shm_ianvs_files(), before_shm, "no file in /dev/shm");
    drop(p);
    assert_eq!(child_regions(), 0, "the child is gone");
    assert_eq!(dev_shm_ianvs_files(), before_shm);
}

/// A plug-in job whose model hangs in `predict` after training (so its region is in use).
fn hanging_job(dir: &Path) -> PathBuf {
    let mut data = String::new();
    for i in 0..400 {
        let feats: Vec<String> = (0..64)
            .map(|j| format!("{}", (i * j % 17) as f32))
            .collect();
        data += &format!("{},{}\n", feats.join(","), i % 3);
    }
    std::fs::write(dir.join("data.csv"), data).unwrap();
    std::fs::write(
        dir.join("model.py"),
        r#"
import sys, time
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="Hang")
class Hang:
    def __init__(self, **kwargs):
        pass
    def train(self, train_data, **kwargs):
        print("trained", file=sys.stderr, flush=True)
    def predict(self, data, **kwargs):
        time.sleep(120)
"#,
    )
    .unwrap();
    std::fs::write(dir.join("testenv.yaml"), "testenv:\n  dataset:\n    data: \"./data.csv\"\n    label: \"last\"\n    split:\n      method: \"interleaved\"\n      test_fraction: 0.2\n  metrics:\n    - name: \"accuracy\"\n  warmup_samples: 0\n").unwrap();
    std::fs::write(dir.join("alg.yaml"), "algorithm:\n  paradigm_type: \"singletasklearning\"\n  modules:\n    - type: \"basemodel\"\n      name: \"Hang\"\n      url: \"./model.py\"\n").unwrap();
    std::fs::write(dir.join("benchmark.yaml"), "benchmarkingjob:\n  name: \"job\"\n  workspace: \"./ws\"\n  testenv: \"./testenv.yaml\"\n  test_object:\n    type: \"algorithms\"\n    algorithms:\n      - name: \"hang\"\n        url: \"./alg.yaml\"\n  rank:\n    sort_by:\n      - { \"accuracy\": \"descend\" }\n").unwrap();
    dir.join("benchmark.yaml")
}

fn plugin_children(dir: &Path) -> Vec<u32> {
    let needle = dir.join("model.py").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle.as_str()))
        })
        .collect()
}

#[test]
fn a_killed_run_leaves_no_shared_memory_behind() {
    if python().is_none() {
        return;
    }
    let before_shm = dev_shm_ianvs_files();
    let dir = tempfile::tempdir().unwrap();
    let bench = hanging_job(dir.path());
    let mut ianvs = std::process::Command::new(assert_cmd::cargo::cargo_bin("ianvs"))
        .args(["run", "-f"])
        .arg(&bench)
        .arg("--quiet")
        .env("NO_COLOR", "1")
        .env_remove("IANVS_PLUGIN_SHM")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the plug-in trained (its region holds the train set) and hangs in predict.
    let t = Instant::now();
    let region_of = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().contains("memfd:ianvs-plugin"))
            })
    };
    let child = loop {
        let logs = dir.path().join("ws/job/.plugin-logs");
        let trained = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|c| {
                std::fs::read_to_string(c.path().join("plugin-basemodel-Hang.stderr.log"))
                    .is_ok_and(|l| l.contains("trained"))
            });
        if trained {
            if let Some(&pid) = plugin_children(dir.path()).first() {
                break pid;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the plug-in never trained"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(region_of(child), "the plug-in maps a shared region");
    assert!(region_of(ianvs.id()), "ianvs holds it too");
    // SAFETY: kill(2) on the ianvs process this test started.
    unsafe {
        libc::kill(ianvs.id() as i32, libc::SIGKILL);
    }
    ianvs.wait().unwrap();
    // The host notices its parent's death and exits; with the last holder gone the kernel
    // frees the region (a memfd has no name to leave behind).
    let t = Instant::now();
    while !plugin_children(dir.path()).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(plugin_children(dir.path()), Vec::<u32>::new());
    assert_eq!(
        dev_shm_ianvs_files(),
        before_shm,
        "nothing left in /dev/shm"
    );
}
