//! What a drafter step costs with a trimmed output head (`draft_vocab`, FR-Spec) and each
//! weight option, against a verifier step: the cost ratio c that speculative decoding's
//! speed-up depends on, measured in CPU time on one thread so that it holds on a machine
//! shared with other work (wall time is printed beside it).
//!
//! ```sh
//! cargo bench --bench draft_head -- DRAFTER.gguf VERIFIER.gguf
//! ```
//! Default: the public pair (`scripts/fetch-qwen-coder-pair.sh`). `IANVS_BENCH_HEADS` (e.g.
//! `full,16384,32768,65536`), `IANVS_BENCH_WEIGHTS` (e.g. `native,q4_0,q8_0`) and
//! `IANVS_BENCH_STEPS` (48) narrow or widen the grid. Each drafter row also says how often the
//! full head's greedy token on real code prompts lies inside the kept ids (`in-head`): a
//! draft from a trimmed head can only match the verifier's token when it does.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use ianvs_algorithms::llm::{sampling, DraftVocab, LlmModel, LlmTokenizer, LoadOptions};

/// Process CPU seconds (every thread), nanosecond resolution.
fn cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn load_1m() -> f64 {
    ianvs_paradigms::speculative::load_1m().unwrap_or(f64::NAN)
}

fn weights(name: &str) -> anyhow::Result<Option<GgmlDType>> {
    Ok(match name {
        "native" => None,
        "q4_0" => Some(GgmlDType::Q4_0),
        "q8_0" => Some(GgmlDType::Q8_0),
        "f32" => Some(GgmlDType::F32),
        other => anyhow::bail!("unknown weights `{other}` (native, q4_0, q8_0, f32)"),
    })
}

fn load(path: &Path, w: &str, head: Option<usize>, tok: &LlmTokenizer) -> anyhow::Result<LlmModel> {
    let draft_vocab = head.map(|lowest| {
        let mut also = tok.special_ids();
        also.extend_from_slice(tok.eog_ids());
        DraftVocab { lowest, also }
    });
    Ok(LlmModel::load_with(
        path,
        &Device::Cpu,
        &LoadOptions {
            requantize: weights(w)?,
            threads: Some(1),
            draft_vocab,
            ..Default::default()
        },
    )?)
}

/// One step as the speculative loop takes it: forward, logits to host (expanded over the
/// vocabulary for a trimmed head, as the LLM module does), argmax.
fn step(
    model: &LlmModel,
    tok: u32,
    cache: &mut ianvs_algorithms::llm::KvCache,
) -> anyhow::Result<u32> {
    let rows = match model.draft_ids() {
        None => model.forward(&[tok], cache)?.to_vec2::<f32>()?,
        Some(ids) => {
            let kept = model.forward_draft(&[tok], cache)?.to_vec2::<f32>()?;
            kept.iter()
                .map(|r| {
                    let mut full = vec![f32::NEG_INFINITY; model.config().vocab_size];
                    for (&id, &v) in ids.iter().zip(r) {
                        full[id as usize] = v;
                    }
                    full
                })
                .collect()
        }
    };
    Ok(sampling::argmax(&rows[0])?)
}

/// CPU and wall seconds per decode step after a real prompt (median of 3 blocks of steps).
fn step_cost(model: &LlmModel, prompt: &[u32], steps: usize) -> anyhow::Result<(f64, f64)> {
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..3 {
        let mut cache = model.new_cache();
        let logits = model.forward(prompt, &mut cache)?.to_vec2::<f32>()?;
        let mut t = sampling::argmax(logits.last().unwrap())?;
        for _ in 0..3 {
            t = step(model, t, &mut cache)?;
        }
        let (c0, w0) = (cpu_s(), Instant::now());
        for _ in 0..steps {
            t = black_box(step(model, t, &mut cache)?);
        }
        cpu.push((cpu_s() - c0) / steps as f64);
        wall.push(w0.elapsed().as_secs_f64() / steps as f64);
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    Ok((cpu[1], wall[1]))
}

/// v(k) = CPU cost of a k-token pass over a one-token pass, k = 2..=9 (median of 3).
fn verify_costs(model: &LlmModel, prompt: &[u32]) -> anyhow::Result<Vec<f64>> {
    let mut cache = model.new_cache();
    model.forward(prompt, &mut cache)?;
    let base = cache.len();
    let chunk: Vec<u32> = prompt.iter().copied().cycle().take(9).collect();
    let mut timed = |k: usize| -> anyhow::Result<f64> {
        let c0 = cpu_s();
        model.forward(&chunk[..k], &mut cache)?;
        let dt = cpu_s() - c0;
        cache.truncate(base)?;
        Ok(dt)
    };
    timed(1)?;
    let mut v = Vec::new();
    for k in 2..=9 {
        let mut r = Vec::new();
        for _ in 0..3 {
            let one = timed(1)?;
            r.push(timed(k)? / one);
        }
        r.sort_by(f64::total_cmp);
        v.push(r[1]);
    }
    Ok(v)
}

/// Share of the full head's greedy tokens (on the prompts) inside the ids a head keeps.
fn in_head(
    model: &LlmModel,
    prompts: &[Vec<u32>],
    keeps: &[Vec<u32>],
    steps: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut hits = vec![0usize; keeps.len()];
    let mut n = 0;
    for p in prompts {
        let mut cache = model.new_cache();
        let logits = model.forward(p, &mut cache)?.to_vec2::<f32>()?;
        let mut t = sampling::argmax(logits.last().unwrap())?;
        for _ in 0..steps {
            n += 1;
            for (h, keep) in hits.iter_mut().zip(keeps) {
                *h += usize::from(keep.binary_search(&t).is_ok());
            }
            t = step(model, t, &mut cache)?;
        }
    }
    Ok(hits.iter().map(|&h| h as f64 / n as f64).collect())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let models = root.join("datasets/models");
    let drafter = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| models.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"));
    let verifier = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| models.join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"));
    if !drafter.is_file() || !verifier.is_file() {
        eprintln!(
            "skipping: {} or {} missing (bash scripts/fetch-qwen-coder-pair.sh)",
            drafter.display(),
            verifier.display()
        );
        return Ok(());
    }
    let env_list = |name: &str, default: &str| -> Vec<String> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let heads = env_list("IANVS_BENCH_HEADS", "full,16384,32768,65536");
    let weight_opts = env_list("IANVS_BENCH_WEIGHTS", "native,q4_0,q8_0");
    let steps: usize = std::env::var("IANVS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let tok = LlmTokenizer::load(&drafter)?;
    let prompts: Vec<Vec<u32>> =
        std::fs::read_to_string(root.join("testenvs/speculative-decoding/code-prompts.jsonl"))?
            .lines()
            .take(6)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                Ok(tok.encode(v["prompt"].as_str().unwrap_or_default(), false)?)
            })
            .collect::<anyhow::Result<_>>()?;
    let prompt = &prompts[0];
    println!("one thread per model; CPU ms per step (process CPU time), wall ms beside it; load = 1-minute load average");

    // The verifier: one step and v(k), per weight option a verifier is run with here.
    let mut verifier_cpu = Vec::new();
    for w in ["native", "q8_0"] {
        let m = load(&verifier, w, None, &tok)?;
        let (cpu, wall) = step_cost(&m, prompt, steps / 2)?;
        let v = verify_costs(&m, prompt)?;
        println!(
            "verifier {w:>6}: {:.1} ms CPU ({:.1} wall), v(2..9) = {}, load {:.1}",
            cpu * 1e3,
            wall * 1e3,
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            load_1m()
        );
        verifier_cpu.push((w, cpu, v));
    }

    println!("| drafter weights | head | kept ids | weight MB/token | CPU ms/step | wall ms/step | tokens/s (CPU) | c vs native verifier | c vs q8_0 verifier | in-head | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for w in &weight_opts {
        for h in &heads {
            let n = match h.as_str() {
                "full" => None,
                x => Some(x.parse::<usize>()?),
            };
            let m = load(&drafter, w, n, &tok)?;
            let kept = m.draft_ids().map_or(m.config().vocab_size, |i| i.len());
            let bytes = m.draft_weight_bytes().unwrap_or(m.weight_bytes());
            let (cpu, wall) = step_cost(&m, prompt, steps)?;
            let cover = if n.is_none() {
                let keeps: Vec<Vec<u32>> = heads
                    .iter()
                    .filter_map(|h| h.parse::<usize>().ok())
                    .map(|n| {
                        let mut k: Vec<u32> = (0..n as u32).collect();
                        k.extend(tok.special_ids());
                        k.extend_from_slice(tok.eog_ids());
                        k.sort_unstable();
                        k.dedup();
                        k
                    })
                    .collect();
                let c = in_head(&m, &prompts, &keeps, 24)?;
                c.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            } else {
                String::from("–")
            };
            println!(
                "| {w} | {h} | {kept} | {:.0} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {cover} | {:.1} |",
                bytes as f64 / 1e6,
                cpu * 1e3,
                wall * 1e3,
                1.0 / cpu,
                cpu / verifier_cpu[0].1,
                cpu / verifier_cpu[1].1,
                load_1m()
            );
        }
    }
    Ok(())
}
