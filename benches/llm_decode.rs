//! Decode speed of the LLM runtime next to the machine's memory-bandwidth ceiling.
//!
//! A decode step of a small LM reads every weight once, so tokens/s can never beat
//! (memory bandwidth) / (weight bytes per token). This bench measures both on this machine:
//!
//! - read bandwidth: every thread sums its share of a 512 MiB buffer (the best of 5 passes);
//! - decode: after a prefill of "The capital of France is", 64 greedy one-token steps (the first
//!   8 are warm-up and left out), 3 runs; per-step median, p10 and p90.
//!
//! Models: SmolLM2-135M-Instruct Q4_1 (`bash scripts/fetch-smollm2.sh`) with its native Q4_1
//! weights and requantized to Q8_0 at load time, and the project's trained pair
//! (`datasets/lm/{draft,verifier}`, f16 on disk, f32 in memory). A missing model is skipped.
//!
//! Run: `cargo bench --bench llm_decode` (`IANVS_BENCH_DEVICE=cuda` with `--features cuda` to
//! put the models on the GPU; the bandwidth row is still the CPU's then).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ianvs_algorithms::lm_modules::load_shared;
use ianvs_paradigms::modules::LanguageModel;
use ianvs_paradigms::sampling::argmax;

const STEPS: usize = 64;
const WARMUP_STEPS: usize = 8;
const RUNS: usize = 3;

/// Read bandwidth in bytes/s: all threads summing disjoint slices of one large buffer.
fn read_bandwidth() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n: usize = 512 * 1024 * 1024 / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let chunk = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        black_box(total);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (n * 8) as f64 / best
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

struct Row {
    name: String,
    weight_bytes: usize,
    /// Seconds per decode step, all measured steps of all runs, sorted.
    steps: Vec<f64>,
}

fn decode(model: &dyn LanguageModel) -> anyhow::Result<Vec<f64>> {
    let prompt = model.encode("The capital of France is")?;
    let mut all = Vec::new();
    for _ in 0..RUNS {
        let mut s = model.new_session();
        let rows = s.forward(&prompt)?;
        let mut tok = argmax(rows.last().unwrap())?;
        for step in 0..STEPS {
            let t0 = Instant::now();
            let rows = s.forward(&[tok])?;
            let dt = t0.elapsed().as_secs_f64();
            tok = argmax(rows.last().unwrap())?;
            if step >= WARMUP_STEPS {
                all.push(dt);
            }
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

fn main() -> anyhow::Result<()> {
    // IANVS_ROOT: the checkout, when the bench binary runs away from where it was built.
    let root_buf = std::env::var_os("IANVS_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let root = root_buf.as_path();
    let device = std::env::var("IANVS_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let smol = root.join("datasets/models/smollm2-135m-instruct-q4_1.gguf");
    let models: Vec<(String, PathBuf, &str)> = vec![
        ("SmolLM2-135M Q4_1".into(), smol.clone(), "native"),
        ("SmolLM2-135M Q4_1→Q8_0".into(), smol, "q8_0"),
        (
            "trained verifier 5.8 M".into(),
            root.join("datasets/lm/verifier"),
            "native",
        ),
        (
            "trained draft 0.9 M".into(),
            root.join("datasets/lm/draft"),
            "native",
        ),
    ];
    let bw = read_bandwidth();
    println!(
        "memory read bandwidth (CPU, {} threads, 512 MiB): {:.2} GB/s",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        bw / 1e9
    );
    let mut rows = Vec::new();
    for (name, path, weights) in models {
        if !path.exists() {
            println!("skipping {name}: {} is missing", path.display());
            continue;
        }
        let m = match load_shared(&path, &device, weights) {
            Ok(m) => m,
            Err(e) => {
                println!("skipping {name}: {e}");
                continue;
            }
        };
        let steps = decode(m.as_ref())?;
        rows.push(Row {
            name: format!(
                "{name} ({})",
                m.describe().rsplit(" on ").next().unwrap_or("?")
            ),
            weight_bytes: m.weight_bytes(),
            steps,
        });
    }
    println!();
    println!("| model | weight MB read per token | step ms median (p10–p90) | tokens/s (median step) | bandwidth ceiling tokens/s | share of ceiling |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let med = percentile(&r.steps, 0.5);
        let ceiling = bw / r.weight_bytes as f64;
        println!(
            "| {} | {:.1} | {:.2} ({:.2}–{:.2}) | {:.1} | {:.1} | {:.0} % |",
            r.name,
            r.weight_bytes as f64 / 1e6,
            med * 1e3,
            percentile(&r.steps, 0.1) * 1e3,
            percentile(&r.steps, 0.9) * 1e3,
            1.0 / med,
            ceiling,
            100.0 / med / ceiling
        );
    }
    println!(
        "\n{} measured steps per model ({RUNS} runs × {} after {WARMUP_STEPS} warm-up steps).",
        RUNS * (STEPS - WARMUP_STEPS),
        STEPS - WARMUP_STEPS
    );
    Ok(())
}
