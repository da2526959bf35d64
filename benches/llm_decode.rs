//! Decode, verify and prefill speed of the LLM runtime next to the machine's memory-bandwidth
//! ceiling, per model and weight format.
//!
//! A decode step of a small LM reads every weight once, so tokens/s can never beat
//! (memory bandwidth) / (weight bytes per token). Speculative decoding pays off only when a
//! k-row verify pass costs much less than k one-row steps. This bench measures all of it:
//!
//! - read bandwidth: every thread sums its share of a 512 MiB buffer (the best of 5 passes);
//! - decode: after a 32-token prefill, 48 one-token steps (the first 8 are warm-up), 2 runs;
//!   median step, p10 and p90, tokens/s and the share of the bandwidth ceiling;
//! - v(k) for k = 2..=17: the median time of a k-row pass over the median one-row step, both
//!   at the same cache length (the cache is truncated back after every pass), interleaved so
//!   that a busy moment hits both alike;
//! - prefill: a 128-token prompt on an empty cache (best of 3), tokens/s;
//! - CPU time / wall time of the process over each row, and the 1-minute load average after
//!   it (a warning when the load exceeded the CPU count: other work competed).
//!
//! Models: `IANVS_BENCH_MODELS` (paths separated by `:`) or arguments that are not flags
//! (`cargo bench --bench llm_decode -- path/a.gguf path/b`); by default SmolLM2-135M-Instruct
//! Q4_1 (`bash scripts/fetch-smollm2.sh`) and the project's trained pair (`datasets/lm/*`).
//! Formats: `IANVS_BENCH_FORMATS` (default `native,q8_0,q5_0,q4_k`): `native` keeps the file's
//! weights; any other GGUF type name requantizes GGUF weights at load time (a K-quant falls back
//! to the llama.cpp choice for weights whose rows are not a multiple of 256 values). A model or
//! format that cannot load is skipped with the reason. `IANVS_BENCH_KERNELS` (default
//! `own,candle`): the runtime's own CPU kernels (`own`: the fastest set this CPU runs, or one
//! named: `avx512`, `avx2`, `portable`), candle's, or several for a before/after (they differ
//! only for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights). `IANVS_BENCH_QUICK=1`
//! measures fewer steps (a smoke run).
//!
//! Requantized files: with `IANVS_BENCH_WRITE_GGUF=DIR` every non-native format of a GGUF model
//! is written to `DIR/<model>-<format>.gguf` (metadata kept, 2-D weights requantized with
//! llama.cpp's fallbacks) and measured as a file of its own, so llama.cpp can read it too.
//! `q4_k_m` then is llama.cpp's Q4_K_M recipe: Q6_K for the output head (the embedding when
//! tied) and for `attn_v`/`ffn_down` in the layers llama.cpp gives more bits, Q4_K elsewhere.
//!
//! Side by side with llama.cpp: `bash scripts/build-llama-cpp.sh` builds `llama-bench` from the
//! llama-cpp-python sdist (PyPI) under `target/llama.cpp/`; with
//! `IANVS_LLAMA_BENCH=target/llama.cpp/bin/llama-bench` the bench also runs it on each GGUF file
//! as published, with the same thread count, and prints both rates and their ratio. Measured
//! one after the other, that ratio carries whatever the machine did in between; with
//! `IANVS_BENCH_ROUNDS=R` the bench then also runs R alternating rounds per file (ianvs
//! decode and v(9), then llama-bench `-p 0 -n 32 -d 32 -r 1`, the order swapped every round)
//! and prints each round's ratio and the median and range over rounds.
//!
//! Threads: `IANVS_BENCH_THREADS=n` gives every model its own pool of n threads (the `threads`
//! module setting) and runs llama.cpp with `-t n`; by default every core, through the shared
//! pool. On a machine busy with other work, 1 thread is the steadier comparison: a product
//! split over two threads waits whenever one of them is descheduled.
//!
//! Profile: `IANVS_PROFILE=1` also prints, per model row, where a one-row step and 5- and
//! 9-row passes spend their time by operation class (matmuls by kind, attention, norms, pool
//! barrier waits; `ianvs_algorithms::llm::profile`).
//!
//! Run: `cargo bench --bench llm_decode` (`IANVS_BENCH_DEVICE=cuda` with `--features cuda` to
//! put the models on the GPU; the bandwidth row is still the CPU's then).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::QTensor;
use candle_core::Device;
use ianvs_algorithms::llm::kernels::{self as ianvs_kernels, Isa};
use ianvs_algorithms::llm::{profile, LlmModel, LoadOptions};
use ianvs_paradigms::device::select_device;

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// Deterministic token ids spread over the vocabulary (no tokenizer needed for timing).
fn tokens(n: usize, vocab: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97)) % vocab as u32)
        .collect()
}

struct Plan {
    runs: usize,
    steps: usize,
    warmup: usize,
    v_reps: usize,
    prefill: usize,
}

struct Row {
    name: String,
    weight_bytes: usize,
    /// Seconds per decode step, all measured steps of all runs, sorted.
    steps: Vec<f64>,
    /// (k, v(k)) for k = 2..=17.
    v: Vec<(usize, f64)>,
    prefill_tps: f64,
    /// Process CPU seconds / wall seconds over the row's measurement, and the 1-minute load
    /// average at its end: on a machine busy with other work the absolute numbers are low.
    cpu_per_wall: Option<f64>,
    load: Option<f64>,
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = Instant::now();
    let out = black_box(f());
    (out, t0.elapsed().as_secs_f64())
}

/// Sorted decode step times, (k, v(k)) for k = 2..=17, and prefill tokens/s.
type Measured = (Vec<f64>, Vec<(usize, f64)>, f64);

fn measure(model: &LlmModel, plan: &Plan) -> anyhow::Result<Measured> {
    let vocab = model.config().vocab_size;
    let ctx = tokens(32, vocab, 1);
    // Decode.
    let mut steps = Vec::new();
    for run in 0..plan.runs {
        let mut cache = model.new_cache();
        model.forward(&ctx, &mut cache)?;
        let feed = tokens(plan.steps, vocab, 2 + run as u32);
        for (i, t) in feed.iter().enumerate() {
            let (r, dt) = time(|| model.forward(&[*t], &mut cache));
            r?;
            if i >= plan.warmup {
                steps.push(dt);
            }
        }
    }
    steps.sort_by(|a, b| a.total_cmp(b));
    // v(k): k-row passes and one-row steps at the same cache length, interleaved.
    let mut cache = model.new_cache();
    model.forward(&ctx, &mut cache)?;
    let base = cache.len();
    let chunk = tokens(17, vocab, 3);
    for _ in 0..2 {
        model.forward(&chunk[..1], &mut cache)?;
        cache.truncate(base)?;
    }
    let mut one = Vec::new();
    let mut multi: Vec<Vec<f64>> = vec![Vec::new(); 18];
    for _ in 0..plan.v_reps {
        for k in 2..=17 {
            let (r, dt) = time(|| model.forward(&chunk[..1], &mut cache));
            r?;
            cache.truncate(base)?;
            one.push(dt);
            let (r, dt) = time(|| model.forward(&chunk[..k], &mut cache));
            r?;
            cache.truncate(base)?;
            multi[k].push(dt);
        }
    }
    let one = median(one);
    let v = (2..=17)
        .map(|k| (k, median(std::mem::take(&mut multi[k])) / one))
        .collect();
    // Prefill.
    let prompt = tokens(plan.prefill, vocab, 4);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut cache = model.new_cache();
        let (r, dt) = time(|| model.forward(&prompt, &mut cache));
        r?;
        best = best.min(dt);
    }
    Ok((steps, v, plan.prefill as f64 / best))
}

use ianvs_paradigms::speculative::{load_1m, process_cpu_s};

/// `IANVS_PROFILE=1`: where a one-row step and 5- and 9-row passes after a 32-token context
/// spend their time, per operation class (printed as Markdown tables).
fn profile_passes(model: &LlmModel, label: &str) -> anyhow::Result<()> {
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    model.forward(&tokens(32, vocab, 1), &mut cache)?;
    let base = cache.len();
    let chunk = tokens(9, vocab, 5);
    const REPS: u32 = 40;
    for k in [1, 5, 9] {
        for _ in 0..3 {
            model.forward(&chunk[..k], &mut cache)?;
            cache.truncate(base)?;
        }
        let _ = profile::take();
        let t0 = Instant::now();
        for _ in 0..REPS {
            model.forward(&chunk[..k], &mut cache)?;
            cache.truncate(base)?;
        }
        let wall = t0.elapsed().as_secs_f64() / REPS as f64;
        println!(
            "\nprofile: {label}, {k}-row pass after 32 positions ({REPS} passes, {:.0} µs wall \
             per pass):\n\n{}",
            wall * 1e6,
            profile::take()
        );
    }
    Ok(())
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn parse_format(name: &str) -> anyhow::Result<Option<GgmlDType>> {
    Ok(Some(match name.to_ascii_lowercase().as_str() {
        "native" => return Ok(None),
        "f32" => GgmlDType::F32,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        // The mix exists only as a written file (`IANVS_BENCH_WRITE_GGUF`); in memory its base.
        "q4_k_m" => GgmlDType::Q4K,
        other => anyhow::bail!(
            "unknown format `{other}` in IANVS_BENCH_FORMATS; valid: native, f32, q4_0, q4_1, \
             q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q4_k_m, q5_k, q6_k"
        ),
    }))
}

fn main() -> anyhow::Result<()> {
    // IANVS_ROOT: the checkout, when the bench binary runs away from where it was built.
    let root_buf = std::env::var_os("IANVS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let root = root_buf.as_path();
    let device = std::env::var("IANVS_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let quick = std::env::var("IANVS_BENCH_QUICK").is_ok_and(|v| v == "1");
    let plan = if quick {
        Plan {
            runs: 1,
            steps: 12,
            warmup: 2,
            v_reps: 1,
            prefill: 64,
        }
    } else {
        Plan {
            runs: 2,
            steps: 48,
            warmup: 8,
            v_reps: 3,
            prefill: 128,
        }
    };
    let mut paths: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    if let Ok(list) = std::env::var("IANVS_BENCH_MODELS") {
        paths.extend(std::env::split_paths(&list));
    }
    if paths.is_empty() {
        paths = vec![
            root.join("datasets/models/smollm2-135m-instruct-q4_1.gguf"),
            root.join("datasets/lm/verifier"),
            root.join("datasets/lm/draft"),
        ];
    }
    let mut formats: Vec<(String, Option<GgmlDType>)> = std::env::var("IANVS_BENCH_FORMATS")
        .unwrap_or_else(|_| "native,q8_0,q5_0,q4_k".into())
        .split(',')
        .map(|f| Ok((f.trim().to_string(), parse_format(f.trim())?)))
        .collect::<anyhow::Result<_>>()?;
    if let Some(dir) = std::env::var_os("IANVS_BENCH_WRITE_GGUF") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let mut written = Vec::new();
        for path in paths.iter().filter(|p| p.is_file()) {
            for (fname, dtype) in &formats {
                let Some(dtype) = dtype else { continue };
                let stem = path
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                let out = dir.join(format!("{stem}-{fname}.gguf"));
                write_requantized(path, &out, *dtype, fname == "q4_k_m")?;
                eprintln!("wrote {}", out.display());
                written.push(out);
            }
        }
        paths.extend(written);
        formats.retain(|(_, d)| d.is_none());
    }
    let kernels: Vec<String> = std::env::var("IANVS_BENCH_KERNELS")
        .unwrap_or_else(|_| "own,candle".into())
        .split(',')
        .map(|k| k.trim().to_string())
        .collect();
    for k in &kernels {
        if !matches!(k.as_str(), "own" | "candle") {
            Isa::parse(k).map_err(|e| {
                anyhow::anyhow!("IANVS_BENCH_KERNELS: {e}; also valid: own, candle")
            })?;
        }
    }
    let bw = read_bandwidth();
    let own_threads: Option<usize> = match std::env::var("IANVS_BENCH_THREADS") {
        Ok(v) => Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("IANVS_BENCH_THREADS: `{v}` is not a thread count"))?,
        ),
        Err(_) => None,
    };
    let threads =
        own_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!(
        "memory read bandwidth (CPU, {} threads, 512 MiB): {:.2} GB/s; models on {threads} thread(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        bw / 1e9
    );
    let choice = select_device(&device);
    let mut rows = Vec::new();
    for path in &paths {
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        if !path.exists() {
            println!("skipping {label}: {} is missing", path.display());
            continue;
        }
        let gguf = path.is_file();
        for (fname, requantize) in &formats {
            if requantize.is_some() && !gguf {
                continue; // float folders: only their native weights
            }
            for kern in &kernels {
                let kernel_isa = match kern.as_str() {
                    "own" | "candle" => None,
                    name => Some(Isa::parse(name).map_err(anyhow::Error::msg)?),
                };
                let opts = LoadOptions {
                    requantize: *requantize,
                    candle_kernels: kern == "candle",
                    kernel_isa,
                    threads: own_threads,
                    ..Default::default()
                };
                let kern = match kern.as_str() {
                    "own" => format!("own {}", ianvs_kernels::isa().name()),
                    k => k.to_string(),
                };
                let model = match LlmModel::load_with(path, &choice.device, &opts) {
                    Ok(m) => m,
                    Err(e) => {
                        println!("skipping {label} as {fname}: {e}");
                        continue;
                    }
                };
                let (cpu0, t0) = (process_cpu_s(), Instant::now());
                let (steps, v, prefill_tps) = measure(&model, &plan)?;
                let wall = t0.elapsed().as_secs_f64();
                if profile::enabled() {
                    profile_passes(&model, &format!("{label} {fname}, {kern} kernels"))?;
                }
                let cpu_per_wall = cpu0.zip(process_cpu_s()).map(|(a, b)| (b - a) / wall);
                let row = Row {
                    name: format!("{label} {fname}, {kern} kernels ({})", choice.label),
                    weight_bytes: model.weight_bytes(),
                    steps,
                    v,
                    prefill_tps,
                    cpu_per_wall,
                    load: load_1m(),
                };
                eprintln!(
                    "{}: {:.1} tokens/s, v(9) {:.2}, prefill {:.0} tokens/s, CPU/wall {}, load {}",
                    row.name,
                    1.0 / percentile(&row.steps, 0.5),
                    row.v[7].1,
                    row.prefill_tps,
                    fmt_opt(row.cpu_per_wall),
                    fmt_opt(row.load)
                );
                rows.push(row);
            }
        }
    }
    println!();
    println!("| model / weights | MB read per token | step ms median (p10–p90) | decode tokens/s | ceiling tokens/s | share of ceiling | prefill tokens/s ({} tokens) | CPU/wall | load |", plan.prefill);
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let med = percentile(&r.steps, 0.5);
        let ceiling = bw / r.weight_bytes as f64;
        println!(
            "| {} | {:.1} | {:.2} ({:.2}–{:.2}) | {:.1} | {:.1} | {:.0} % | {:.1} | {} | {} |",
            r.name,
            r.weight_bytes as f64 / 1e6,
            med * 1e3,
            percentile(&r.steps, 0.1) * 1e3,
            percentile(&r.steps, 0.9) * 1e3,
            1.0 / med,
            ceiling,
            100.0 / med / ceiling,
            r.prefill_tps,
            fmt_opt(r.cpu_per_wall),
            fmt_opt(r.load)
        );
    }
    println!();
    let ks: Vec<String> = (2..=17).map(|k| format!("v({k})")).collect();
    println!("| model / weights | {} |", ks.join(" | "));
    println!("|---|{}", "---|".repeat(ks.len()));
    for r in &rows {
        let vs: Vec<String> = r.v.iter().map(|(_, v)| format!("{v:.2}")).collect();
        println!("| {} | {} |", r.name, vs.join(" | "));
    }
    println!(
        "\n{} measured decode steps per row ({} runs × {} after {} warm-up steps); v(k): median \
         of {} k-row passes over the median of {} one-row steps, both after a 32-token context.",
        plan.runs * (plan.steps - plan.warmup),
        plan.runs,
        plan.steps - plan.warmup,
        plan.warmup,
        plan.v_reps,
        plan.v_reps * 16
    );
    if let Some(exe) = std::env::var_os("IANVS_LLAMA_BENCH") {
        side_by_side(Path::new(&exe), &paths, &rows, &plan, threads)?;
        let rounds: usize = match std::env::var("IANVS_BENCH_ROUNDS") {
            Ok(v) => v.parse().ok().filter(|&r| r > 0).ok_or_else(|| {
                anyhow::anyhow!("IANVS_BENCH_ROUNDS: `{v}` is not a positive number of rounds")
            })?,
            Err(_) => 0,
        };
        if rounds > 0 {
            alternating_rounds(
                Path::new(&exe),
                &paths,
                &choice.device,
                own_threads,
                threads,
                rounds,
            )?;
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if rows.iter().any(|r| r.load.is_some_and(|l| l > cpus + 0.5)) {
        println!(
            "warning: the 1-minute load exceeded the {cpus} CPUs during some rows: other work \
             competed for the CPU and those rows' absolute numbers are low; compare rows \
             measured together, or rerun on an idle machine"
        );
    }
    Ok(())
}

/// llama.cpp's choice for a weight whose rows (`k` values) are not a multiple of the block:
/// a 32-value type (`llama_tensor_get_type`).
fn fallback(wanted: GgmlDType, k: usize) -> GgmlDType {
    if k.is_multiple_of(wanted.block_size()) {
        return wanted;
    }
    match wanted {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    }
}

/// Writes `src` with every 2-D weight requantized to `dtype` (or, for `q4_k_m`, llama.cpp's
/// Q4_K_M recipe), metadata and 1-D tensors unchanged.
fn write_requantized(src: &Path, dst: &Path, dtype: GgmlDType, q4_k_m: bool) -> anyhow::Result<()> {
    let mut f = std::fs::File::open(src)?;
    let content = gguf_file::Content::read(&mut f)?;
    let n_layers = content
        .metadata
        .iter()
        .find(|(k, _)| k.ends_with(".block_count"))
        .and_then(|(_, v)| v.to_u32().ok())
        .unwrap_or(0) as usize;
    let tied = !content.tensor_infos.contains_key("output.weight");
    // llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third.
    let more_bits = |i: usize| {
        let n = n_layers;
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    };
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let mut tensors = Vec::new();
    for name in names {
        let qt = content.tensor(&mut f, name, &Device::Cpu)?;
        let dims = qt.shape().dims().to_vec();
        if dims.len() != 2 {
            tensors.push((name.clone(), qt));
            continue;
        }
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let more = name == "output.weight"
            || (tied && name == "token_embd.weight")
            || ((name.ends_with("attn_v.weight") || name.ends_with("ffn_down.weight"))
                && layer.is_some_and(more_bits));
        let wanted = match (q4_k_m, more) {
            (false, _) => dtype,
            (true, true) => GgmlDType::Q6K,
            (true, false) => GgmlDType::Q4K,
        };
        let target = fallback(wanted, dims[1]);
        let qt = if target == qt.dtype() {
            qt
        } else {
            QTensor::quantize(&qt.dequantize(&Device::Cpu)?, target)?
        };
        tensors.push((name.clone(), qt));
    }
    let md: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = dst.with_extension("gguf.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    gguf_file::write(&mut out, &md, &ts)?;
    drop(out);
    std::fs::rename(&tmp, dst)?;
    Ok(())
}

/// llama.cpp's `llama-bench` on the same GGUF files and thread count (`IANVS_LLAMA_BENCH`, built
/// by `scripts/build-llama-cpp.sh`), printed beside this runtime's own-kernel rows: the files
/// as published and those `IANVS_BENCH_WRITE_GGUF` wrote.
fn side_by_side(
    exe: &Path,
    paths: &[PathBuf],
    rows: &[Row],
    plan: &Plan,
    threads: usize,
) -> anyhow::Result<()> {
    println!();
    println!("| GGUF (native weights, {threads} threads; ianvs: the first own-kernel row) | ianvs decode tokens/s | llama.cpp tg tokens/s | ianvs / llama.cpp | ianvs prefill tokens/s | llama.cpp pp{} tokens/s | ianvs / llama.cpp |", plan.prefill);
    println!("|---|---|---|---|---|---|---|");
    for path in paths.iter().filter(|p| p.is_file()) {
        let label = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let Some(ours) = rows.iter().find(|r| {
            r.name.starts_with(&format!("{label} native, ")) && !r.name.contains("candle")
        }) else {
            continue;
        };
        let out = std::process::Command::new(exe)
            .arg("-m")
            .arg(path)
            .args(["-t", &threads.to_string()])
            .args(["-p", &plan.prefill.to_string(), "-n", "32", "-r", "3"])
            .args(["-o", "json"])
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            println!(
                "| {label} | llama-bench failed: {} |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        let rate = |prompt: bool| {
            runs.iter()
                .find(|r| (r["n_prompt"].as_u64().unwrap_or(0) > 0) == prompt)
                .and_then(|r| r["avg_ts"].as_f64())
        };
        let (tg, pp) = (rate(false), rate(true));
        let ours_tg = 1.0 / percentile(&ours.steps, 0.5);
        let ratio = |a: f64, b: Option<f64>| b.map_or("–".into(), |b| format!("{:.2}×", a / b));
        println!(
            "| {label} | {ours_tg:.1} | {} | {} | {:.1} | {} | {} |",
            fmt_opt(tg),
            ratio(ours_tg, tg),
            ours.prefill_tps,
            fmt_opt(pp),
            ratio(ours.prefill_tps, pp)
        );
    }
    Ok(())
}

/// One round's numbers for one GGUF file: ianvs decode tokens/s and v(9), llama.cpp tg tokens/s.
struct Round {
    ours_tg: f64,
    v9: f64,
    llama_tg: Option<f64>,
}

/// ianvs one-token decode after a 32-token context: tokens/s from the median of `steps` steps
/// after 4 warm-up steps; and v(9), the median 9-row pass over the median one-row step, the
/// two interleaved at the same cache length (5 pairs).
fn decode_and_v9(model: &LlmModel, steps: usize, seed: u32) -> anyhow::Result<(f64, f64)> {
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    model.forward(&tokens(32, vocab, 1), &mut cache)?;
    let base = cache.len();
    let chunk = tokens(9, vocab, 3);
    let (mut one, mut nine) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (r, dt) = time(|| model.forward(&chunk[..1], &mut cache));
        r?;
        cache.truncate(base)?;
        one.push(dt);
        let (r, dt) = time(|| model.forward(&chunk, &mut cache));
        r?;
        cache.truncate(base)?;
        nine.push(dt);
    }
    let v9 = median(nine) / median(one);
    let mut times = Vec::new();
    for (i, t) in tokens(steps + 4, vocab, seed).iter().enumerate() {
        let (r, dt) = time(|| model.forward(&[*t], &mut cache));
        r?;
        if i >= 4 {
            times.push(dt);
        }
    }
    Ok((1.0 / median(times), v9))
}

/// llama-bench's decode rate at the same depth: `-p 0 -n 32 -d 32 -r 1`.
fn llama_tg(exe: &Path, path: &Path, threads: usize) -> anyhow::Result<Option<f64>> {
    let out = std::process::Command::new(exe)
        .arg("-m")
        .arg(path)
        .args(["-t", &threads.to_string()])
        .args(["-p", "0", "-n", "32", "-d", "32", "-r", "1", "-o", "json"])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        eprintln!(
            "llama-bench failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return Ok(None);
    }
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(runs.iter().find_map(|r| r["avg_ts"].as_f64()))
}

/// `IANVS_BENCH_ROUNDS=R`: ianvs and llama.cpp decode the same GGUF file (as published, own
/// kernels) in R rounds, taking turns — ianvs first in even rounds, llama.cpp first in odd
/// ones — so a slow or fast moment of a shared machine hits both sides of a round alike. Each
/// round gives a ratio; the summary is the median ratio over rounds and its range, with v(9)
/// measured in every round too.
fn alternating_rounds(
    exe: &Path,
    paths: &[PathBuf],
    device: &Device,
    own_threads: Option<usize>,
    threads: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    println!();
    println!("Alternating rounds ({rounds} per file, {threads} threads; ianvs first in even rounds): decode 32 tokens at depth 32 each side.");
    println!();
    println!("| GGUF | round | ianvs decode tokens/s | llama.cpp tg tokens/s | ianvs / llama.cpp | ianvs v(9) |");
    println!("|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for path in paths.iter().filter(|p| p.is_file()) {
        let label = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let opts = LoadOptions {
            threads: own_threads,
            ..Default::default()
        };
        let model = match LlmModel::load_with(path, device, &opts) {
            Ok(m) => m,
            Err(e) => {
                println!("| {label} | – | cannot load: {e} | | | |");
                continue;
            }
        };
        let mut got = Vec::new();
        for r in 0..rounds {
            let ours_first = r % 2 == 0;
            let mut llama = None;
            if !ours_first {
                llama = llama_tg(exe, path, threads)?;
            }
            let (ours_tg, v9) = decode_and_v9(&model, 32, 10 + r as u32)?;
            if ours_first {
                llama = llama_tg(exe, path, threads)?;
            }
            let round = Round {
                ours_tg,
                v9,
                llama_tg: llama,
            };
            println!(
                "| {label} | {r} | {:.1} | {} | {} | {:.2} |",
                round.ours_tg,
                fmt_opt(round.llama_tg),
                round
                    .llama_tg
                    .map_or("–".into(), |l| format!("{:.2}×", round.ours_tg / l)),
                round.v9
            );
            got.push(round);
        }
        summary.push((label, got));
    }
    println!();
    println!("| GGUF | rounds | ianvs / llama.cpp decode, median (min–max) | ianvs v(9), median (min–max) |");
    println!("|---|---|---|---|");
    for (label, got) in &summary {
        let ratios: Vec<f64> = got
            .iter()
            .filter_map(|r| r.llama_tg.map(|l| r.ours_tg / l))
            .collect();
        let v9s: Vec<f64> = got.iter().map(|r| r.v9).collect();
        let spread = |v: &[f64], unit: &str| {
            if v.is_empty() {
                return "–".to_string();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:.2}{unit} ({lo:.2}–{hi:.2})", median(v.to_vec()))
        };
        println!(
            "| {label} | {} | {} | {} |",
            got.len(),
            spread(&ratios, "×"),
            spread(&v9s, "")
        );
    }
    Ok(())
}
