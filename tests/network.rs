//! Edge and cloud as separate processes over TCP (issue 14): `ianvs serve` refuses a
//! non-loopback client without the token; joint inference over a real link (`Tcp`, a worker
//! spawned on loopback) gives the same answers as the in-process run with latency measured and
//! split; a scheduled outage makes the edge answer (fallback counted); a worker that dies
//! mid-case never hangs the run (fallback or a failed case, as configured); and the shaped real
//! link agrees with the emulated link's prediction for a LAN and a WAN setting.
//!
//! Every run has a generous wall-clock limit (assert_cmd's `timeout`), so a hang fails the test
//! instead of blocking CI.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use ianvs_paradigms::wire::{Frame, VERSION};
use serde_json::Value;

/// No run in this file may take longer (a hang fails instead of blocking CI).
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The timing comparison holds this exclusively and every other test shares it, so the harness
/// never runs the comparison beside another run of this file (their CPU use would make the
/// proxy's wake-ups late); the other tests still run side by side.
static CPU: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn cpu_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn cpu_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPU.write().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/network")
        .join(name)
}

fn ianvs() -> Command {
    let mut c = Command::cargo_bin("ianvs").unwrap();
    c.env("NO_COLOR", "1").timeout(RUN_LIMIT);
    c
}

/// A worker started by a test; killed when dropped.
struct Worker {
    child: Child,
    port: u16,
    token: Option<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> Worker {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("ianvs"))
        .arg("serve")
        .args(args)
        .env_remove("IANVS_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("ianvs serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    let port = addr
        .split_whitespace()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token = if first.contains("token required") && !args.contains(&"--token") {
        let l = lines.next().unwrap().unwrap();
        Some(l.strip_prefix("ianvs serve: token ").unwrap().to_string())
    } else {
        None
    };
    // Keep draining stdout so the worker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Worker { child, port, token }
}

/// Sends a handshake with `token` and returns the worker's answer.
fn handshake(port: u16, token: &str) -> Frame {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Frame::Hello {
        version: VERSION,
        token: token.as_bytes().to_vec(),
    }
    .write_to(&mut s)
    .unwrap();
    Frame::read_from(&mut s).unwrap()
}

#[test]
fn a_non_loopback_bind_requires_the_token() {
    let _cpu = cpu_shared();
    // Without a token the worker generates one and prints it.
    let w = serve(&["--bind", "0.0.0.0:0"]);
    let token = w.token.clone().expect("a generated token is printed");
    assert_eq!(token.len(), 32, "{token}");
    assert!(matches!(handshake(w.port, ""), Frame::Refused { reason } if reason.contains("token")));
    assert!(matches!(
        handshake(w.port, "not-the-token"),
        Frame::Refused { .. }
    ));
    assert_eq!(handshake(w.port, &token), Frame::Welcome);
    drop(w);

    // A given token; and `--require-token` on loopback.
    let w = serve(&[
        "--bind",
        "127.0.0.1:0",
        "--require-token",
        "--token",
        "s3cret",
    ]);
    assert!(matches!(handshake(w.port, ""), Frame::Refused { .. }));
    assert_eq!(handshake(w.port, "s3cret"), Frame::Welcome);
    // Loopback without --require-token needs none.
    let w = serve(&["--bind", "127.0.0.1:0"]);
    assert_eq!(handshake(w.port, ""), Frame::Welcome);
}

/// One algorithm file: a small MLP edge, a small CNN cloud, `miner`, a `link`, `samples` test digits.
fn algorithm(miner: &str, link: &str, link_hps: &[(&str, &str)], samples: usize) -> String {
    let hps: String = link_hps
        .iter()
        .map(|(k, v)| format!("        - {k}:\n            values: [{v}]\n"))
        .collect();
    let link = if hps.is_empty() {
        format!("    - type: \"link\"\n      name: \"{link}\"\n")
    } else {
        format!("    - type: \"link\"\n      name: \"{link}\"\n      hyperparameters:\n{hps}")
    };
    format!(
        r#"algorithm:
  paradigm_type: "jointinference"
  modules:
    - type: "edgemodel"
      name: "MLP"
      hyperparameters:
        - hidden_sizes:
            values: [[16]]
        - epochs:
            values: [1]
    - type: "cloudmodel"
      name: "CNN"
      hyperparameters:
        - fc_hidden:
            values: [32]
        - epochs:
            values: [1]
    - type: "dataset_processor"
      name: "Subset"
      hyperparameters:
        - max_samples:
            values: [{samples}]
{link}    - type: "hard_example_mining"
      name: "{miner}"
"#
    )
}

/// Writes a job of `(name, algorithm yaml)` into `dir` and returns the benchmark path.
fn job(dir: &Path, algorithms: &[(&str, String)]) -> PathBuf {
    let mut list = String::new();
    for (name, yaml) in algorithms {
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, yaml).unwrap();
        list += &format!(
            "      - name: \"{name}\"\n        url: \"{}\"\n",
            p.display()
        );
    }
    let bench = dir.join("benchmark.yaml");
    std::fs::write(
        &bench,
        format!(
            r#"benchmarkingjob:
  name: "net"
  workspace: "{}"
  testenv: "{}"
  test_object:
    type: "algorithms"
    algorithms:
{list}  rank:
    sort_by:
      - {{ "accuracy": "descend" }}
"#,
            dir.join("ws").display(),
            fixture("testenv.yaml").display()
        ),
    )
    .unwrap();
    bench
}

struct Case {
    algorithm: String,
    result: Value,
    records: Vec<Value>,
    runtime: Value,
}

impl Case {
    fn metric(&self, id: &str) -> f64 {
        self.result["metrics"][id]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no metric {id}: {}", self.algorithm, self.result))
    }
    fn mean(&self, f: impl Fn(&Value) -> f64) -> f64 {
        self.records.iter().map(f).sum::<f64>() / self.records.len() as f64
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let job = dir.join("ws/net");
    for alg in std::fs::read_dir(&job).unwrap().map(|e| e.unwrap().path()) {
        if !alg.is_dir() || alg.file_name().unwrap() == "rank" {
            continue;
        }
        for d in std::fs::read_dir(&alg).unwrap().map(|e| e.unwrap().path()) {
            if !d.join("metrics.json").is_file() {
                continue;
            }
            let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
            out.push(Case {
                algorithm: alg.file_name().unwrap().to_string_lossy().into_owned(),
                result: serde_json::from_str(&read("metrics.json")).unwrap(),
                records: read("records.jsonl")
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
                runtime: serde_json::from_str(&read("runtime.json")).unwrap_or(Value::Null),
            });
        }
    }
    out.sort_by(|a, b| a.algorithm.cmp(&b.algorithm));
    out
}

fn run(bench: &Path) -> std::process::Output {
    ianvs()
        .args(["run", "--quiet", "-f"])
        .arg(bench)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_link_gives_the_same_answers_with_latency_measured_and_split() {
    let _cpu = cpu_shared();
    let tmp = tempfile::tempdir().unwrap();
    let bench = job(
        tmp.path(),
        &[
            ("emulated", algorithm("CloudOnly", "Emulated", &[], 40)),
            (
                "tcp",
                algorithm("CloudOnly", "Tcp", &[("spawn", "\"local\"")], 40),
            ),
        ],
    );
    ok(&run(&bench));
    let c = cases(tmp.path());
    assert_eq!(c.len(), 2);
    let (emu, tcp) = (&c[0], &c[1]);
    assert_eq!(tcp.algorithm, "tcp");
    // The worker built and trained the same CNN from the same spec, data and seed.
    let preds =
        |c: &Case| -> Vec<Value> { c.records.iter().map(|r| r["prediction"].clone()).collect() };
    assert_eq!(
        preds(emu),
        preds(tcp),
        "the worker's CNN answers differently"
    );
    assert_eq!(tcp.metric("cloud-calls"), 40.0);
    assert_eq!(tcp.metric("fallback-ratio"), 0.0);
    // The real link counts whole frames: each request adds its 13-byte header, each answer
    // its 21-byte header, to the payload the emulation counts.
    assert_eq!(
        tcp.metric("uplink-bytes"),
        emu.metric("uplink-bytes") + 40.0 * 13.0
    );
    let down = |c: &Case| c.mean(|r| r["downlink_bytes"].as_f64().unwrap());
    assert_eq!(down(tcp), down(emu) + 21.0);
    // Measured, not modelled: every part is positive and the parts fit in the wall time.
    for r in &tcp.records {
        let part = |k: &str| r[k].as_f64().unwrap();
        assert!(part("network_s") > 0.0 && part("cloud_s") > 0.0, "{r}");
        assert_eq!(part("uplink_s") + part("downlink_s"), 0.0, "{r}");
        assert!(
            part("latency_s") + 1e-9
                >= part("edge_s") + part("network_s") + part("cloud_s") + part("codec_s"),
            "{r}"
        );
    }
    let real = &tcp.runtime["real_link"];
    assert!(real["spawned_pid"].as_u64().is_some(), "{real}");
    assert!(
        real["worker_stats"]["requests_served"].as_u64().unwrap() >= 40,
        "{real}"
    );
    assert_eq!(real["worker_stats"]["queue_depth"], 0, "{real}");
    assert_eq!(
        real["ready"]["parameters"].as_u64(),
        emu.runtime["cloud"]["parameters"].as_u64(),
        "{real}"
    );
    // The spawned worker is gone once the run ended.
    let pid = real["spawned_pid"].as_u64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "worker {pid} outlived the run"
    );
}

#[test]
fn a_scheduled_outage_makes_the_edge_answer() {
    let _cpu = cpu_shared();
    let tmp = tempfile::tempdir().unwrap();
    // The cloud is unreachable for the whole measured loop: every cloud-bound digit falls back.
    let hps = [
        ("spawn", "\"local\""),
        ("deadline_ms", "150"),
        ("outage_start_s", "0"),
        ("outage_end_s", "100000"),
    ];
    let bench = job(
        tmp.path(),
        &[
            ("edge", algorithm("EdgeOnly", "Emulated", &[], 30)),
            ("outage", algorithm("CloudOnly", "Tcp", &hps, 30)),
        ],
    );
    ok(&run(&bench));
    let c = cases(tmp.path());
    let (edge, outage) = (&c[0], &c[1]);
    assert_eq!(outage.metric("fallback-ratio"), 1.0);
    assert_eq!(outage.metric("cloud-calls"), 0.0);
    // Edge autonomy: the answers are the edge model's, so is the accuracy.
    assert_eq!(outage.metric("accuracy"), edge.metric("accuracy"));
    assert_eq!(outage.metric("fallback-accuracy"), edge.metric("accuracy"));
    // Each fallback waited for its deadline, never much longer.
    for r in &outage.records {
        let l = r["latency_s"].as_f64().unwrap();
        assert!(r["fallback"] == true && (0.15..30.0).contains(&l), "{r}");
    }
    let proxy = &outage.runtime["real_link"]["proxy"];
    assert!(
        proxy["frames_dropped_outage"].as_u64().unwrap() >= 30,
        "{proxy}"
    );
}

#[test]
fn a_worker_killed_mid_case_never_hangs_the_run() {
    let _cpu = cpu_shared();
    // The worker exits abruptly on its 12th request (3 warm-up + 8 answered + the 12th).
    let w = serve(&[
        "--bind",
        "127.0.0.1:0",
        "--token",
        "t0k",
        "--crash-after",
        "12",
    ]);
    let endpoint = format!("\"127.0.0.1:{}\"", w.port);
    let hps = |policy: &'static str| {
        vec![
            ("spawn", "\"none\""),
            ("endpoint", endpoint.as_str()),
            ("token", "\"t0k\""),
            ("deadline_ms", "500"),
            ("on_cloud_failure", policy),
        ]
    };
    let tmp = tempfile::tempdir().unwrap();
    let bench = job(
        tmp.path(),
        &[(
            "fallback",
            algorithm("CloudOnly", "Tcp", &hps("\"fallback\""), 30),
        )],
    );
    ok(&run(&bench));
    let c = cases(tmp.path());
    let fb = &c[0];
    assert_eq!(fb.metric("cloud-calls"), 8.0, "{}", fb.result);
    assert_eq!(fb.metric("fallback-ratio"), 22.0 / 30.0);
    assert_eq!(fb.metric("reconnects"), 0.0);
    let counters = &fb.runtime["real_link"]["counters"];
    assert!(
        counters["connection_failures"].as_u64().unwrap() >= 22,
        "{counters}"
    );
    drop(w);

    // With `fail`, the case fails with the reason, and the run still ends.
    let w = serve(&[
        "--bind",
        "127.0.0.1:0",
        "--token",
        "t0k",
        "--crash-after",
        "12",
    ]);
    let endpoint = format!("\"127.0.0.1:{}\"", w.port);
    let hps = vec![
        ("spawn", "\"none\""),
        ("endpoint", endpoint.as_str()),
        ("token", "\"t0k\""),
        ("deadline_ms", "500"),
        ("on_cloud_failure", "\"fail\""),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let bench = job(
        tmp.path(),
        &[("fail", algorithm("CloudOnly", "Tcp", &hps, 30))],
    );
    let out = run(&bench);
    assert_ne!(out.status.code(), Some(0));
    let c = cases(tmp.path());
    assert_eq!(c[0].result["status"], "failed", "{}", c[0].result);
    let err = c[0].result["error"].to_string();
    assert!(
        err.contains("cloud unreachable") && err.contains("fail"),
        "{err}"
    );
}

#[test]
fn the_shaped_real_link_agrees_with_the_emulated_prediction() {
    let _cpu = cpu_exclusive();
    // A LAN (4 ± 1 ms, 20 Mbit/s) and a WAN (60 ± 15 ms, 2 / 10 Mbit/s): the emulated link's
    // prediction (virtual timing: the modelled times, no sleep overshoot) and the real link
    // through the shaping proxy with the same numbers.
    let lan = [
        ("rtt_ms", "4"),
        ("jitter_ms", "1"),
        ("uplink_mbps", "20"),
        ("downlink_mbps", "20"),
    ];
    let wan = [
        ("rtt_ms", "60"),
        ("jitter_ms", "15"),
        ("uplink_mbps", "2"),
        ("downlink_mbps", "10"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let mut algs = Vec::new();
    for (name, link) in [("lan", &lan), ("wan", &wan)] {
        let mut emu = link.to_vec();
        emu.push(("timing", "\"virtual\""));
        let mut real = link.to_vec();
        real.extend([("spawn", "\"local\""), ("shaping", "\"proxy\"")]);
        algs.push((
            format!("{name}-emulated"),
            algorithm("CloudOnly", "Emulated", &emu, 40),
        ));
        algs.push((
            format!("{name}-real"),
            algorithm("CloudOnly", "Tcp", &real, 40),
        ));
    }
    let algs: Vec<(&str, String)> = algs.iter().map(|(n, y)| (n.as_str(), y.clone())).collect();
    ok(&run(&job(tmp.path(), &algs)));
    let c = cases(tmp.path());
    let get = |n: &str| c.iter().find(|c| c.algorithm == n).unwrap();
    for (name, rtt_ms) in [("lan", 4.0), ("wan", 60.0)] {
        let (emu, real) = (
            get(&format!("{name}-emulated")),
            get(&format!("{name}-real")),
        );
        // What crossed the link, per sample: modelled up + down vs measured network + queueing.
        let predicted =
            emu.mean(|r| r["uplink_s"].as_f64().unwrap() + r["downlink_s"].as_f64().unwrap()) * 1e3;
        let measured = real.mean(|r| r["network_s"].as_f64().unwrap()) * 1e3;
        let rel = (measured - predicted) / predicted;
        eprintln!(
            "{name}: emulated link {predicted:.2} ms, real shaped link {measured:.2} ms ({:+.1} %)",
            rel * 100.0
        );
        assert!(predicted > rtt_ms * 0.9, "{name}: {predicted}");
        // Within 10 %, plus 2 ms for what the emulation leaves out on purpose: loopback hops
        // through the proxy, thread wake-ups (the proxy's delay queue sleeps; under load a
        // wake-up is late by up to a few ms) and TCP. Measured on the 2-core development
        // machine under load 5–9: LAN +0.7 to +1.0 ms, WAN +1 to +4 ms.
        assert!(
            (measured - predicted).abs() <= 0.10 * predicted + 2.0,
            "{name}: emulated {predicted:.2} ms vs real {measured:.2} ms"
        );
    }
}

#[test]
fn one_worker_serves_many_edges_and_trains_a_shared_setup_once() {
    let _cpu = cpu_shared();
    let w = serve(&["--bind", "127.0.0.1:0"]);
    let endpoint = format!("\"127.0.0.1:{}\"", w.port);
    let hps = [("spawn", "\"none\""), ("endpoint", endpoint.as_str())];
    let tmp = tempfile::tempdir().unwrap();
    // Two edges (two cases run at once), the same cloud model spec: one setup on the worker.
    let bench = job(
        tmp.path(),
        &[
            ("a", algorithm("CloudOnly", "Tcp", &hps, 30)),
            ("b", algorithm("Threshold", "Tcp", &hps, 30)),
        ],
    );
    let out = ianvs()
        .args(["run", "--quiet", "--jobs", "2", "-f"])
        .arg(&bench)
        .output()
        .unwrap();
    ok(&out);
    let c = cases(tmp.path());
    let served: u64 = c
        .iter()
        .map(|c| {
            c.runtime["real_link"]["counters"]["answered"]
                .as_u64()
                .unwrap()
        })
        .sum();
    // The worker's own account, asked over a fresh connection.
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Frame::Hello {
        version: VERSION,
        token: Vec::new(),
    }
    .write_to(&mut s)
    .unwrap();
    assert_eq!(Frame::read_from(&mut s).unwrap(), Frame::Welcome);
    Frame::StatsQuery.write_to(&mut s).unwrap();
    let Frame::Stats { json } = Frame::read_from(&mut s).unwrap() else {
        panic!("no stats")
    };
    let stats: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stats["models_hosted"], 1, "{stats}");
    assert!(stats["connections_total"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["queue_depth"], 0, "{stats}");
    // Every answered request plus 3 warm-up requests per case.
    assert_eq!(
        stats["requests_served"].as_u64().unwrap(),
        served + 6,
        "{stats}"
    );
}

#[test]
fn a_tls_worker_serves_a_tls_edge_and_refuses_plaintext() {
    let _cpu = cpu_shared();
    let (cert, key, ca) = (
        fixture("tls-cert.pem"),
        fixture("tls-key.pem"),
        fixture("tls-ca.pem"),
    );
    let w = serve(&[
        "--bind",
        "0.0.0.0:0",
        "--token",
        "tls-t0k",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // A plaintext handshake gets no Welcome: the worker expects a TLS ClientHello.
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Frame::Hello {
        version: VERSION,
        token: b"tls-t0k".to_vec(),
    }
    .write_to(&mut s)
    .unwrap();
    assert!(Frame::read_from(&mut s).is_err());

    let endpoint = format!("\"localhost:{}\"", w.port);
    // One CloudOnly case through the worker, trusting the CA at `ca`.
    let tls_job = |name: &str, ca: &Path, extra: &[(&str, &str)]| {
        let ca = format!("\"{}\"", ca.display());
        let mut hps = vec![
            ("spawn", "\"none\""),
            ("endpoint", endpoint.as_str()),
            ("token", "\"tls-t0k\""),
            ("tls_ca", ca.as_str()),
        ];
        hps.extend_from_slice(extra);
        let tmp = tempfile::tempdir().unwrap();
        let bench = job(
            tmp.path(),
            &[(name, algorithm("CloudOnly", "Tcp", &hps, 20))],
        );
        (tmp, bench)
    };
    let (tmp, bench) = tls_job("tls", &ca, &[]);
    ok(&run(&bench));
    let c = cases(tmp.path());
    assert_eq!(c[0].metric("cloud-calls"), 20.0);
    assert_eq!(c[0].metric("fallback-ratio"), 0.0);

    // TLS through the shaping proxy: it shapes the encrypted byte stream (40 ms RTT).
    let shaped = [("shaping", "\"proxy\""), ("rtt_ms", "40")];
    let (tmp, bench) = tls_job("tls-shaped", &ca, &shaped);
    ok(&run(&bench));
    let c = cases(tmp.path());
    assert_eq!(c[0].metric("cloud-calls"), 20.0);
    let net = c[0].mean(|r| r["network_s"].as_f64().unwrap());
    assert!(net >= 0.036, "{net}");
    let proxy = &c[0].runtime["real_link"]["proxy"];
    assert!(proxy["frames_forwarded"].as_u64().unwrap() >= 40, "{proxy}");

    // A CA that did not sign the worker's certificate: the case fails with a TLS error.
    let wrong = tmp.path().join("wrong-ca.pem");
    std::fs::copy(fixture("tls-cert.pem"), &wrong).unwrap();
    let (tmp, bench) = tls_job("bad", &wrong, &[]);
    let out = run(&bench);
    assert_ne!(out.status.code(), Some(0));
    let c = cases(tmp.path());
    let err = c[0].result["error"].to_string();
    assert!(err.contains("cannot set up the cloud worker"), "{err}");
}

// ---- speculative decoding over a real link ------------------------------------------------

/// A speculative-decoding algorithm on the project's trained pair (`datasets/lm`), with
/// `drafter`/`verifier` settings and a link module (`None`: the verifier-only baseline's
/// algorithm has no drafter).
fn spec_algorithm(
    drafter: Option<&[(&str, &str)]>,
    verifier: &[(&str, &str)],
    link: &str,
    link_hps: &[(&str, &str)],
) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/lm");
    let list = |hps: &[(&str, &str)]| -> String {
        hps.iter()
            .map(|(k, v)| format!("        - {k}:\n            values: [{v}]\n"))
            .collect()
    };
    let drafter = match drafter {
        None => String::new(),
        Some(hps) => format!(
            "    - type: \"drafter\"\n      name: \"LLM\"\n      hyperparameters:\n        - model:\n            values: [\"{}\"]\n{}",
            root.join("draft").display(),
            list(hps)
        ),
    };
    let link_hps = match link_hps.is_empty() {
        true => "      hyperparameters: []\n".to_string(),
        false => format!("      hyperparameters:\n{}", list(link_hps)),
    };
    format!(
        "algorithm:\n  paradigm_type: \"speculativedecoding\"\n  modules:\n{drafter}    - type: \"verifier\"\n      name: \"LLM\"\n      hyperparameters:\n        - model:\n            values: [\"{}\"]\n{}    - type: \"link\"\n      name: \"{link}\"\n{link_hps}",
        root.join("verifier").display(),
        list(verifier)
    )
}

/// Writes a speculative-decoding job (the in-repo prompts, `prompts` of them, the first a
/// warm-up) into `dir` and returns the benchmark path.
fn spec_job(dir: &Path, prompts: usize, algorithms: &[(&str, String)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let testenv = dir.join("testenv.yaml");
    std::fs::write(
        &testenv,
        format!(
            "testenv:\n  dataset:\n    test_data: \"{}\"\n  metrics:\n    - name: \"lossless\"\n    - name: \"token-throughput\"\n    - name: \"speed-up\"\n    - name: \"fallback-ratio\"\n    - name: \"link-time-share\"\n  max_new_tokens: 16\n  sample_size: {prompts}\n  warmup_samples: 1\n",
            root.join("testenvs/speculative-decoding/prompts.jsonl").display()
        ),
    )
    .unwrap();
    let bench = job(dir, algorithms);
    let text = std::fs::read_to_string(&bench)
        .unwrap()
        .replace(
            &fixture("testenv.yaml").display().to_string(),
            &testenv.display().to_string(),
        )
        .replace("\"accuracy\"", "\"token-throughput\"");
    std::fs::write(&bench, text).unwrap();
    bench
}

fn real_link_info(dir: &Path, algorithm: &str) -> Value {
    let alg = dir.join("ws/net").join(algorithm);
    let case = std::fs::read_dir(&alg)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("real_link.json").is_file())
        .unwrap_or_else(|| panic!("no real_link.json under {}", alg.display()));
    serde_json::from_str(&std::fs::read_to_string(case.join("real_link.json")).unwrap()).unwrap()
}

fn tokens(c: &Case) -> Vec<Value> {
    c.records
        .iter()
        .map(|r| r["output_tokens"].clone())
        .collect()
}

/// The verifier in a worker spawned on loopback decodes exactly what the in-process verifier
/// decodes: greedy and rejection sampling (the worker draws the acceptance tests from the seed
/// the edge sends), token for token; latency is measured and split; the worker frees every
/// session; emulated and real rows rank in one leaderboard.
#[test]
fn speculative_over_a_spawned_worker_equals_the_in_process_run_bit_for_bit() {
    let _cpu = cpu_shared();
    let tmp = tempfile::tempdir().unwrap();
    let greedy: &[(&str, &str)] = &[("draft_tokens_per_step", "3")];
    let auto: &[(&str, &str)] = &[("schedule", "\"auto\""), ("max_draft_tokens", "4")];
    let sampled: &[(&str, &str)] = &[
        ("verification", "\"rejection-sampling\""),
        ("temperature", "0.8"),
    ];
    let spawn: &[(&str, &str)] = &[("spawn", "\"local\""), ("deadline_ms", "60000")];
    let bench = spec_job(
        tmp.path(),
        4,
        &[
            (
                "emu-greedy",
                spec_algorithm(Some(greedy), &[], "Emulated", &[]),
            ),
            (
                "emu-sampled",
                spec_algorithm(Some(greedy), sampled, "Emulated", &[]),
            ),
            ("tcp-auto", spec_algorithm(Some(auto), &[], "Tcp", spawn)),
            (
                "tcp-greedy",
                spec_algorithm(Some(greedy), &[], "Tcp", spawn),
            ),
            (
                "tcp-sampled",
                spec_algorithm(Some(greedy), sampled, "Tcp", spawn),
            ),
            ("tcp-verifier-only", spec_algorithm(None, &[], "Tcp", spawn)),
        ],
    );
    ok(&run(&bench));
    let c = cases(tmp.path());
    assert_eq!(c.len(), 6);
    let by = |name: &str| c.iter().find(|x| x.algorithm == name).unwrap();
    let (emu, tcp) = (by("emu-greedy"), by("tcp-greedy"));
    assert_eq!(tokens(emu), tokens(tcp), "greedy over TCP differs");
    assert_eq!(
        tokens(by("emu-sampled")),
        tokens(by("tcp-sampled")),
        "rejection sampling over TCP differs"
    );
    for name in ["tcp-greedy", "tcp-auto", "tcp-verifier-only"] {
        assert_eq!(by(name).metric("lossless"), 1.0, "{name}");
    }
    assert_eq!(tokens(by("tcp-auto")), tokens(tcp));
    for name in ["tcp-greedy", "tcp-sampled", "tcp-auto"] {
        let x = by(name);
        assert_eq!(x.metric("fallback-ratio"), 0.0);
        assert!(x.metric("speed-up") > 0.0);
        assert_eq!(x.result["measurements"]["reconnects"], 0.0, "{}", x.result);
        for r in &x.records {
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            assert_eq!(r["paired"], true, "{r}");
            // Measured parts, all positive, within the end-to-end time.
            assert!(
                f("link_s") > 0.0 && f("codec_s") > 0.0 && f("verify_s") > 0.0,
                "{r}"
            );
            assert!(
                f("draft_s") + f("link_s") + f("codec_s") + f("verify_s") <= f("e2e_s") + 1e-6,
                "{r}"
            );
        }
        // Whole frames cross the link: more bytes than the emulation's payload count.
        let bytes = |c: &Case| c.mean(|r| r["uplink_bytes"].as_f64().unwrap());
        assert!(bytes(x) > bytes(emu), "{name}");
        let info = real_link_info(tmp.path(), name);
        assert_eq!(info["worker_stats"]["sessions_open"], 0, "{info}");
        assert!(info["spawned_pid"].as_u64().is_some(), "{info}");
    }
    // The `auto` schedule measured v in the worker.
    assert!(by("tcp-auto")
        .records
        .iter()
        .any(|r| r["calibration_s"].as_f64().unwrap_or(0.0) > 0.0));
    // One leaderboard holds the emulated and the real rows.
    let board = std::fs::read_to_string(tmp.path().join("ws/net/rank/all_rank.csv")).unwrap();
    for name in ["emu-greedy", "tcp-greedy", "tcp-verifier-only"] {
        assert!(board.contains(name), "{board}");
    }
    assert!(
        board.contains(",Tcp,") && board.contains(",Emulated,"),
        "{board}"
    );
}

/// A worker that dies mid-generation never hangs the run: under `fallback` the drafter
/// finishes each prompt alone (counted in fallback-ratio, never lossless); under `fail` the
/// case fails with the reason.
#[test]
fn a_worker_killed_mid_speculative_generation_never_hangs() {
    let _cpu = cpu_shared();
    let greedy: &[(&str, &str)] = &[("draft_tokens_per_step", "2")];
    for policy in ["fallback", "fail"] {
        // 4 prompts are tokenized first (4 requests); the warm-up prompt takes 4 (baseline,
        // open, one verify round, close); the first measured prompt opens (9th), verifies once
        // (10th) and the worker dies on its 11th request, inside that generation.
        let w = serve(&["--bind", "127.0.0.1:0", "--crash-after", "11"]);
        let endpoint = format!("\"127.0.0.1:{}\"", w.port);
        let quoted = format!("\"{policy}\"");
        let hps = [
            ("spawn", "\"none\""),
            ("endpoint", endpoint.as_str()),
            ("deadline_ms", "5000"),
            ("on_cloud_failure", quoted.as_str()),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let bench = spec_job(
            tmp.path(),
            4,
            &[(policy, spec_algorithm(Some(greedy), &[], "Tcp", &hps))],
        );
        let t = std::time::Instant::now();
        let out = run(&bench);
        assert!(t.elapsed() < Duration::from_secs(300), "{:?}", t.elapsed());
        let c = cases(tmp.path());
        if policy == "fallback" {
            ok(&out);
            let x = &c[0];
            let fr = x.metric("fallback-ratio");
            assert!(fr > 0.5 && fr <= 1.0, "{fr}: {}", x.result);
            assert!(x.metric("lossless") < 1.0, "{}", x.result);
            assert!(x.metric("token-throughput") > 0.0);
            // The first measured prompt lost its worker mid-generation: verified tokens
            // first, then the drafter's.
            let first = &x.records[1];
            let fb = first["fallback_tokens"].as_u64().unwrap_or(0) as usize;
            let n = first["output_tokens"].as_array().unwrap().len();
            assert!(fb > 0 && fb < n, "{first}");
            assert_eq!(first["lossless"], false, "{first}");
            for r in &x.records {
                let n = r["output_tokens"].as_array().unwrap().len();
                assert!(n > 0 && r["text"].as_str().is_some(), "{r}");
            }
        } else {
            assert_ne!(out.status.code(), Some(0));
            assert_eq!(c[0].result["status"], "failed", "{}", c[0].result);
            let err = c[0].result["error"].to_string();
            assert!(err.contains("on_cloud_failure is `fail`"), "{err}");
        }
        drop(w);
    }
}
