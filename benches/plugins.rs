//! Plug-in protocol overhead (issue 11): the round trip of a `predict` call to a Python
//! plug-in, split into the plug-in's own compute (measured inside the child around the user's
//! code) and protocol overhead (the rest: framing, pipes or shared memory, the host's
//! dispatch), for one 784-float sample per call and for batches of 1,024 samples, with tensors
//! inline (through the pipe), in shared memory copied there on each call, and in shared memory
//! placed once and referenced by later calls; and the overhead's share of a small MLP's
//! (784-64-10, numpy) forward pass.
//!
//! What the round trip counts: from ianvs writing the request (its copy of the batch into the
//! shared region included) to ianvs having read the answer (its copy out of the region
//! included). The batch is borrowed from ianvs memory, as the single-task paradigm sends it;
//! for placed rows the one placement copy is not in the round trip: it is reported on its own
//! line.
//!
//! Targets: under 50 µs of overhead per single-sample call; under 5 % of the MLP's forward
//! pass in batch. Run: `cargo bench --bench plugins` (prints a table; nothing is asserted).

use std::time::{Duration, Instant};

use ianvs_algorithms::plugin::process::{choose_python, find_program, Launch, PluginProcess};
use ianvs_algorithms::plugin::protocol::{Arg, Tensor};
use serde_json::json;

const PLUGIN: &str = r#"
import numpy as np
from sedna.common.class_factory import ClassType, ClassFactory

@ClassFactory.register(ClassType.GENERAL, alias="Echo")
class Echo:
    """Answers at once: the call is all protocol."""
    def __init__(self, **kwargs):
        pass
    def predict(self, data, **kwargs):
        return np.zeros(len(data), dtype=np.int64)

@ClassFactory.register(ClassType.GENERAL, alias="MLP")
class MLP:
    """A 784-64-10 MLP forward pass (ReLU, softmax), float32."""
    def __init__(self, **kwargs):
        rng = np.random.default_rng(0)
        self.w1 = (rng.standard_normal((784, 64)) * 0.05).astype(np.float32)
        self.b1 = np.zeros(64, np.float32)
        self.w2 = (rng.standard_normal((64, 10)) * 0.1).astype(np.float32)
        self.b2 = np.zeros(10, np.float32)
    def predict(self, data, **kwargs):
        h = np.maximum(data @ self.w1 + self.b1, 0)
        z = h @ self.w2 + self.b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
"#;

struct Row {
    what: String,
    transport: &'static str,
    calls: usize,
    samples_per_call: usize,
    wall_us: f64,
    compute_us: f64,
    /// The lowest per-call overhead: what a quiet machine approaches (the median includes the
    /// child or ianvs being preempted by other work).
    best_overhead_us: f64,
}

impl Row {
    fn overhead_us(&self) -> f64 {
        self.wall_us - self.compute_us
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `calls` predict calls of `n` samples each (after 50 warm-up calls); medians per call.
/// `placed`: the batch is placed once and each call references it.
fn measure(p: &mut PluginProcess, what: &str, n: usize, calls: usize, placed: bool) -> (Row, f64) {
    let x: Vec<f32> = (0..n * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    let mut place_us = 0.0;
    // Sent as the single-task paradigm sends a test batch: borrowed, copied once (into the
    // pipe or the region) inside the round trip.
    let handle = placed.then(|| {
        p.clear_placed();
        let tensor = Tensor::from_f32(vec![n, 784], &x);
        let t0 = Instant::now();
        let h = p.place(tensor).unwrap();
        place_us = t0.elapsed().as_secs_f64() * 1e6;
        h
    });
    let arg = || match &handle {
        Some(h) => Arg::Placed(h.rows(0..n)),
        None => Arg::f32(vec![n, 784], &x),
    };
    for _ in 0..50 {
        p.call_with("predict", json!({}), vec![arg()]).unwrap();
    }
    let (mut wall, mut compute, mut best) = (Vec::new(), Vec::new(), f64::INFINITY);
    for _ in 0..calls {
        let a = arg();
        let r = p.call_with("predict", json!({}), vec![a]).unwrap();
        wall.push(r.wall_s * 1e6);
        compute.push(r.compute_s * 1e6);
        best = best.min((r.wall_s - r.compute_s) * 1e6);
    }
    let transport = match (p.uses_shm(), placed) {
        (false, _) => "inline (pipe)",
        (true, false) => "shared memory, copied per call",
        (true, true) => "shared memory, placed once",
    };
    (
        Row {
            what: what.into(),
            transport,
            calls,
            samples_per_call: n,
            wall_us: median(&mut wall),
            compute_us: median(&mut compute),
            best_overhead_us: best,
        },
        place_us,
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let (python, rule) = choose_python(None);
    let Some(python) = find_program(&python) else {
        eprintln!("plugins bench: no Python interpreter ({rule}); skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench_plugin.py");
    std::fs::write(&file, PLUGIN).unwrap();
    let start = |alias: &str, shm: bool| {
        let mut p = PluginProcess::spawn_with(
            &Launch {
                file: file.clone(),
                python: python.clone(),
                timeout: Duration::from_secs(60),
                label: format!("bench plug-in {alias}"),
                log_name: format!("{alias}.log"),
                env: Vec::new(),
            },
            shm,
        )
        .unwrap();
        p.init("general", alias, &json!({}), false).unwrap();
        p
    };
    let load_before = load();
    let mut rows = Vec::new();
    let mut placements = Vec::new();
    for shm in [false, true] {
        let mut echo = start("Echo", shm);
        let mut mlp = start("MLP", shm);
        assert_eq!(echo.uses_shm(), shm);
        rows.push(measure(&mut echo, "echo", 1, 2000, false).0);
        rows.push(measure(&mut echo, "echo", 1024, 100, false).0);
        rows.push(measure(&mut mlp, "MLP 784-64-10", 1, 2000, false).0);
        rows.push(measure(&mut mlp, "MLP 784-64-10", 1024, 100, false).0);
        if shm {
            let (r, us) = measure(&mut echo, "echo", 1024, 100, true);
            rows.push(r);
            placements.push(us);
            let (r, us) = measure(&mut mlp, "MLP 784-64-10", 1024, 100, true);
            rows.push(r);
            placements.push(us);
        }
    }
    // The reference: the MLP's own forward pass per sample, in batch and alone.
    let mlp_batch_us = rows
        .iter()
        .filter(|r| r.what.starts_with("MLP") && r.samples_per_call > 1)
        .map(|r| r.compute_us / r.samples_per_call as f64)
        .fold(f64::INFINITY, f64::min);
    let mlp_single_us = rows
        .iter()
        .filter(|r| r.what.starts_with("MLP") && r.samples_per_call == 1)
        .map(|r| r.compute_us)
        .fold(f64::INFINITY, f64::min);
    println!("python: {} ({rule})", python.display());
    println!("load average: {load_before} before, {} after", load());
    println!("| call | tensors | samples/call | round trip µs | plug-in compute µs | protocol overhead µs | overhead µs/sample | overhead / MLP forward | lowest overhead µs/sample | lowest / MLP forward |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let reference = if r.samples_per_call > 1 {
            mlp_batch_us
        } else {
            mlp_single_us
        };
        let per_sample = r.overhead_us() / r.samples_per_call as f64;
        let best = r.best_overhead_us / r.samples_per_call as f64;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} % | {:.3} | {:.1} % |",
            r.what,
            r.transport,
            r.samples_per_call,
            r.wall_us,
            r.compute_us,
            r.overhead_us(),
            per_sample,
            100.0 * per_sample / reference,
            best,
            100.0 * best / reference,
        );
    }
    println!(
        "MLP forward: {mlp_batch_us:.3} µs/sample in batch, {mlp_single_us:.1} µs alone (plug-in compute, the lowest median)"
    );
    println!(
        "placing a 1,024-sample batch once (ianvs's copy into the region, not in the round trips above): {} µs = {} µs/sample",
        placements.iter().map(|u| format!("{u:.0}")).collect::<Vec<_>>().join(", "),
        placements.iter().map(|u| format!("{:.3}", u / 1024.0)).collect::<Vec<_>>().join(", "),
    );
    println!(
        "(medians of {} single and {} batched calls after 50 warm-up calls; overhead / MLP forward: per sample, against the batched forward for batches and the single forward for single calls)",
        rows[0].calls, rows[1].calls
    );
}
