//! Speculative decoding vs the verifier alone on the project's trained pair
//! (`datasets/lm/draft` 0.9 M drafting for `datasets/lm/verifier` 5.8 M), compute only: the
//! link is ideal (0 ms, unlimited bandwidth), so the numbers isolate what drafting and batched
//! verification cost on this machine. The scenario (`testenvs/speculative-decoding`) adds
//! real link settings.
//!
//! The 12 scenario prompts (`testenvs/speculative-decoding/prompts.jsonl`, the first one a
//! warm-up), 48 new tokens, 3 runs; throughput = tokens / end-to-end seconds summed over
//! prompts, the median run shown with the range of the 3. Greedy γ ∈ {1, 2, 4, 8} and
//! rejection sampling at temperature 0.7 (against verifier-only sampling at 0.7).
//!
//! Run: `cargo bench --bench speculative` (`IANVS_BENCH_DEVICE=cuda` with `--features cuda`
//! puts the verifier on the GPU; the drafter stays on the CPU, as in the paradigm).

use std::path::Path;

use ianvs_algorithms::lm_modules::load_shared;
use ianvs_paradigms::link::{Link, LinkSpec, Timing};
use ianvs_paradigms::modules::LanguageModel;
use ianvs_paradigms::sampling::SamplingParams;
use ianvs_paradigms::speculative::{
    autoregressive, speculative, Generation, Schedule, SpeculativeRecord, Verification,
};

const RUNS: usize = 3;

fn ideal_link() -> Link {
    Link::new(LinkSpec {
        rtt_ms: 0.0,
        jitter_ms: 0.0,
        uplink_mbps: 1e9,
        downlink_mbps: 1e9,
        timing: Timing::Virtual,
        seed: 0,
    })
}

struct Totals {
    tokens: usize,
    e2e: f64,
    accepted: usize,
    evaluated: usize,
    verifier_calls: usize,
}

fn totals(recs: &[SpeculativeRecord]) -> Totals {
    let m = recs.iter().filter(|r| !r.warmup);
    let mut t = Totals {
        tokens: 0,
        e2e: 0.0,
        accepted: 0,
        evaluated: 0,
        verifier_calls: 0,
    };
    for r in m {
        t.tokens += r.output_tokens.len();
        t.e2e += r.e2e_s;
        t.accepted += r.accepted;
        t.evaluated += r.accepted + r.rejections;
        t.verifier_calls += r.verifier_calls;
    }
    t
}

fn main() -> anyhow::Result<()> {
    // IANVS_ROOT: the checkout, when the bench binary runs away from where it was built.
    let root_buf = std::env::var_os("IANVS_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let root = root_buf.as_path();
    let device = std::env::var("IANVS_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let drafter = load_shared(&root.join("datasets/lm/draft"), "cpu", "native")?;
    let verifier = load_shared(&root.join("datasets/lm/verifier"), &device, "native")?;
    let prompts: Vec<Vec<u32>> =
        std::fs::read_to_string(root.join("testenvs/speculative-decoding/prompts.jsonl"))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(12)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                verifier.encode(v["prompt"].as_str().unwrap_or_default())
            })
            .collect::<anyhow::Result<_>>()?;
    println!(
        "drafter {} · verifier {} · {} prompts (1 warm-up) × 48 tokens, ideal link, {RUNS} runs",
        drafter.describe(),
        verifier.describe(),
        prompts.len()
    );
    let gen = |t: f32| Generation {
        params: SamplingParams {
            temperature: t,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
        max_new_tokens: 48,
        stop_at_eos: true,
    };

    // (label, temperature, γ / None for verifier-only, rule)
    let mut configs: Vec<(String, f32, Option<usize>, Verification)> = Vec::new();
    configs.push((
        "verifier-only greedy".into(),
        0.0,
        None,
        Verification::Greedy,
    ));
    for g in [1, 2, 4, 8] {
        configs.push((format!("greedy γ={g}"), 0.0, Some(g), Verification::Greedy));
    }
    configs.push((
        "verifier-only T=0.7".into(),
        0.7,
        None,
        Verification::Greedy,
    ));
    for g in [2, 4] {
        configs.push((
            format!("rejection sampling T=0.7 γ={g}"),
            0.7,
            Some(g),
            Verification::RejectionSampling,
        ));
    }

    println!("\n| configuration | tokens/s median (min–max) | speed-up | α | τ (tokens per verifier call) | tokens |");
    println!("|---|---|---|---|---|---|");
    let mut baseline = [0.0f64; 2];
    for (label, t, gamma, rule) in configs {
        let g = gen(t);
        let mut rates = Vec::new();
        let mut last = None;
        for _ in 0..RUNS {
            let mut recs = Vec::new();
            for (i, p) in prompts.iter().enumerate() {
                let mut link = ideal_link();
                let mut r = match gamma {
                    None => autoregressive(verifier.as_ref(), p, &g, Some(&mut link), i)?.0,
                    Some(gm) => speculative(
                        drafter.as_ref(),
                        verifier.as_ref(),
                        p,
                        &g,
                        gm,
                        Schedule::Constant,
                        rule,
                        &mut link,
                        i,
                    )?,
                };
                r.warmup = i == 0;
                recs.push(r);
            }
            let tt = totals(&recs);
            rates.push(tt.tokens as f64 / tt.e2e);
            last = Some(tt);
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let med = rates[RUNS / 2];
        let tt = last.unwrap();
        let slot = usize::from(t > 0.0);
        if gamma.is_none() {
            baseline[slot] = med;
        }
        let (alpha, tau) = if gamma.is_some() {
            (
                format!("{:.3}", tt.accepted as f64 / tt.evaluated.max(1) as f64),
                format!("{:.2}", tt.tokens as f64 / tt.verifier_calls.max(1) as f64),
            )
        } else {
            ("".into(), "1.00".into())
        };
        println!(
            "| {label} | {med:.1} ({:.1}–{:.1}) | {:.2}× | {alpha} | {tau} | {} |",
            rates[0],
            rates[RUNS - 1],
            med / baseline[slot],
            tt.tokens
        );
    }
    Ok(())
}
