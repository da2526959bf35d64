//! Plug-in protocol overhead (issue 11): the round trip of a `predict` call to a Python
//! plug-in, split into the plug-in's own compute (measured inside the child around the user's
//! code) and protocol overhead (the rest: framing, pipes, the host's dispatch), for one
//! 784-float sample per call and for batches of 1,024 samples, and the overhead's share of a
//! small MLP's (784-64-10, numpy) forward pass in batch.
//!
//! Targets: under 50 µs of overhead per single-sample call; under 5 % of the MLP's forward
//! pass in batch. Run: `cargo bench --bench plugins` (prints a table; nothing is asserted).

use std::time::Duration;

use ianvs_algorithms::plugin::process::{choose_python, find_program, Launch, PluginProcess};
use ianvs_algorithms::plugin::protocol::Tensor;
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
    calls: usize,
    samples_per_call: usize,
    wall_us: f64,
    compute_us: f64,
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
fn measure(p: &mut PluginProcess, what: &str, n: usize, calls: usize) -> Row {
    let x: Vec<f32> = (0..n * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    let t = || Tensor::from_f32(vec![n, 784], &x);
    for _ in 0..50 {
        p.call("predict", json!({}), vec![t()]).unwrap();
    }
    let (mut wall, mut compute) = (Vec::new(), Vec::new());
    for _ in 0..calls {
        let tensor = t();
        let r = p.call("predict", json!({}), vec![tensor]).unwrap();
        wall.push(r.wall_s * 1e6);
        compute.push(r.compute_s * 1e6);
    }
    Row {
        what: what.into(),
        calls,
        samples_per_call: n,
        wall_us: median(&mut wall),
        compute_us: median(&mut compute),
    }
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
    let start = |alias: &str| {
        let mut p = PluginProcess::spawn(&Launch {
            file: file.clone(),
            python: python.clone(),
            timeout: Duration::from_secs(60),
            label: format!("bench plug-in {alias}"),
            log_name: format!("{alias}.log"),
            env: Vec::new(),
        })
        .unwrap();
        p.init("general", alias, &json!({}), false).unwrap();
        p
    };
    let mut echo = start("Echo");
    let mut mlp = start("MLP");
    let rows = [
        measure(&mut echo, "echo, 1 sample", 1, 2000),
        measure(&mut echo, "echo, batch", 1024, 100),
        measure(&mut mlp, "MLP 784-64-10, 1 sample", 1, 2000),
        measure(&mut mlp, "MLP 784-64-10, batch", 1024, 100),
    ];
    println!("python: {} ({rule})", python.display());
    println!("| call | samples/call | round trip µs | plug-in compute µs | protocol overhead µs | overhead µs/sample | overhead / compute |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} % |",
            r.what,
            r.samples_per_call,
            r.wall_us,
            r.compute_us,
            r.overhead_us(),
            r.overhead_us() / r.samples_per_call as f64,
            100.0 * r.overhead_us() / r.compute_us.max(1e-9),
        );
    }
    println!(
        "(medians of {} and {} calls after 50 warm-up calls)",
        rows[0].calls, rows[1].calls
    );
}
