//! Metrics of speculative-decoding records (Leviathan et al. 2023; Chen et al. 2023). All are
//! computed over the measured prompts (warm-up prompts excluded).
//!
//! - α̂ (estimated acceptance probability) = accepted / (accepted + rejections): each round
//!   evaluates draft positions until the first rejection, so positions after it say nothing.
//! - τ (mean accepted length) = generated tokens / verifier forward passes.
//! - cost ratio c = mean drafter one-token step / mean verifier one-token step (the latter from
//!   the verifier-only reference of the same job); verify cost v = mean time of one verification
//!   pass over γ+1 tokens / one verifier step. Predicted speed-up, Leviathan et al. eq. (1) with
//!   v in place of 1: (1 − α^(γ+1)) / ((1 − α)(γc + v)), link time ignored.
//! - speed-up is paired: each speculative prompt's baseline is a verifier-only run of the same
//!   prompt made right next to it (alternating which goes first), so its bootstrap interval
//!   over prompts reflects the prompts, not the machine's load at different moments.

use anyhow::{bail, Result};
use ianvs_paradigms::records::{CaseOutput, RecordKind, Records};
use ianvs_paradigms::speculative::SpeculativeRecord;

use super::MetricDef;

const SPEC: &[RecordKind] = &[RecordKind::Speculative];

fn recs(o: &CaseOutput) -> Result<Vec<&SpeculativeRecord>> {
    match &o.records {
        Records::Speculative(r) => {
            let m: Vec<&SpeculativeRecord> = r.iter().filter(|x| !x.warmup).collect();
            if m.is_empty() {
                bail!("no measured prompt (all were warm-up)");
            }
            Ok(m)
        }
        _ => bail!("not speculative-decoding records"),
    }
}

/// Throughput over the verifier-only baseline's: (Σ tokens / Σ e2e) / (Σ baseline tokens /
/// Σ baseline e2e) over the measured prompts that have a baseline. Records written before
/// `baseline_tokens` existed count their own tokens for the baseline's (right for greedy).
fn speed_up(o: &CaseOutput) -> Result<f64> {
    let r: Vec<&SpeculativeRecord> = recs(o)?
        .into_iter()
        .filter(|x| x.baseline_e2e_s.is_some())
        .collect();
    let (mut tok, mut e2e, mut btok, mut be2e) = (0f64, 0f64, 0f64, 0f64);
    for x in &r {
        tok += x.output_tokens.len() as f64;
        e2e += x.e2e_s;
        btok += x.baseline_tokens.unwrap_or(x.output_tokens.len()) as f64;
        be2e += x.baseline_e2e_s.unwrap_or(0.0);
    }
    if e2e <= 0.0 || be2e <= 0.0 || btok == 0.0 {
        bail!("not applicable to this case (no verifier-only baseline)");
    }
    Ok((tok / e2e) / (btok / be2e))
}

fn mean_of(o: &CaseOutput, f: impl Fn(&SpeculativeRecord) -> f64) -> Result<f64> {
    let r = recs(o)?;
    Ok(r.iter().map(|x| f(x)).sum::<f64>() / r.len() as f64)
}

fn ratio(
    o: &CaseOutput,
    num: impl Fn(&SpeculativeRecord) -> f64,
    den: impl Fn(&SpeculativeRecord) -> f64,
) -> Result<f64> {
    let r = recs(o)?;
    let d: f64 = r.iter().map(|x| den(x)).sum();
    if d == 0.0 {
        bail!("not applicable to this case (nothing to divide by)");
    }
    Ok(r.iter().map(|x| num(x)).sum::<f64>() / d)
}

fn itl_ms(r: &SpeculativeRecord) -> Option<f64> {
    (r.output_tokens.len() > 1)
        .then(|| (r.e2e_s - r.ttft_s) / (r.output_tokens.len() - 1) as f64 * 1e3)
}

/// Unverified output tokens (the drafter went on alone after the cloud missed) / output tokens.
pub fn fallback_ratio(o: &CaseOutput) -> Result<f64> {
    ratio(
        o,
        |r| r.fallback_tokens as f64,
        |r| r.output_tokens.len() as f64,
    )
}

pub fn alpha(o: &CaseOutput) -> Result<f64> {
    ratio(
        o,
        |r| r.accepted as f64,
        |r| (r.accepted + r.rejections) as f64,
    )
}

fn mean_gamma(o: &CaseOutput) -> Result<f64> {
    let r = recs(o)?;
    let (s, n) = r
        .iter()
        .flat_map(|x| x.gammas.iter())
        .fold((0usize, 0usize), |(s, n), g| (s + g, n + 1));
    if n == 0 {
        bail!("not a speculative case");
    }
    Ok(s as f64 / n as f64)
}

fn step_s(o: &CaseOutput) -> Result<f64> {
    let r = recs(o)?;
    let steps: Vec<f64> = r.iter().filter_map(|x| x.baseline_step_s).collect();
    if steps.is_empty() {
        bail!("no verifier-only reference in this job");
    }
    Ok(steps.iter().sum::<f64>() / steps.len() as f64)
}

pub fn cost_ratio(o: &CaseOutput) -> Result<f64> {
    let draft = ratio(o, |r| r.draft_step_s, |r| r.draft_steps as f64)?;
    Ok(draft / step_s(o)?)
}

pub fn verify_cost(o: &CaseOutput) -> Result<f64> {
    let per_call = ratio(o, |r| r.verify_batch_s, |r| r.verify_batch_calls as f64)?;
    Ok(per_call / step_s(o)?)
}

pub fn predicted_speedup(o: &CaseOutput) -> Result<f64> {
    let (a, g, c, v) = (
        alpha(o)?.min(1.0 - 1e-9),
        mean_gamma(o)?,
        cost_ratio(o)?,
        verify_cost(o)?,
    );
    Ok((1.0 - a.powf(g + 1.0)) / ((1.0 - a) * (g * c + v)))
}

pub static METRICS: &[MetricDef] = &[
    MetricDef { id: "ttft", aliases: &["Time to First Token", "time_to_first_token"], unit: "ms", higher_is_better: false, kinds: SPEC, help: "time to first token at the edge, mean over prompts", compute: |o| mean_of(o, |r| r.ttft_s * 1e3) },
    MetricDef { id: "itl", aliases: &["Internal Token Latency", "inter_token_latency"], unit: "ms", higher_is_better: false, kinds: SPEC, help: "inter-token latency after the first token, mean over prompts", compute: |o| {
        let r = recs(o)?;
        let v: Vec<f64> = r.iter().filter_map(|x| itl_ms(x)).collect();
        if v.is_empty() { bail!("every output has one token"); }
        Ok(v.iter().sum::<f64>() / v.len() as f64)
    } },
    MetricDef { id: "token-throughput", aliases: &["token_throughput", "tokens_per_second"], unit: "tokens/s", higher_is_better: true, kinds: SPEC, help: "completion tokens / end-to-end time, over all measured prompts", compute: |o| ratio(o, |r| r.output_tokens.len() as f64, |r| r.e2e_s) },
    MetricDef { id: "e2e-latency", aliases: &["end_to_end_latency", "End-to-End Latency"], unit: "ms", higher_is_better: false, kinds: SPEC, help: "time from request to last token, mean over prompts", compute: |o| mean_of(o, |r| r.e2e_s * 1e3) },
    MetricDef { id: "acceptance-rate", aliases: &["acceptance_rate"], unit: "", higher_is_better: true, kinds: SPEC, help: "accepted drafted tokens / drafted tokens", compute: |o| ratio(o, |r| r.accepted as f64, |r| r.drafted as f64) },
    MetricDef { id: "alpha", aliases: &["estimated_alpha"], unit: "", higher_is_better: true, kinds: SPEC, help: "estimated per-token acceptance probability: accepted / evaluated draft positions", compute: alpha },
    MetricDef { id: "mean-accepted-length", aliases: &["tau", "mean_accepted_length"], unit: "tokens", higher_is_better: true, kinds: SPEC, help: "τ: generated tokens per verifier forward pass", compute: |o| ratio(o, |r| r.output_tokens.len() as f64, |r| r.verifier_calls as f64) },
    MetricDef { id: "verifier-calls-per-token", aliases: &["verifier_calls_per_token"], unit: "", higher_is_better: false, kinds: SPEC, help: "verifier forward passes per generated token", compute: |o| ratio(o, |r| r.verifier_calls as f64, |r| r.output_tokens.len() as f64) },
    MetricDef { id: "draft-time-share", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "share of end-to-end time spent drafting on the edge", compute: |o| ratio(o, |r| r.draft_s, |r| r.e2e_s) },
    MetricDef { id: "link-time-share", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "share of end-to-end time spent on the link (real link: measured network + queueing)", compute: |o| ratio(o, |r| r.link_s, |r| r.e2e_s) },
    MetricDef { id: "codec-time-share", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "share of end-to-end time spent encoding and decoding messages and frames on the edge (real link; 0 when emulated)", compute: |o| ratio(o, |r| r.codec_s, |r| r.e2e_s) },
    MetricDef { id: "verify-time-share", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "share of end-to-end time spent in the verifier", compute: |o| ratio(o, |r| r.verify_s, |r| r.e2e_s) },
    MetricDef { id: "uplink-bytes-per-prompt", aliases: &[], unit: "B", higher_is_better: false, kinds: SPEC, help: "edge → cloud bytes per prompt (see the protocol in paradigms/src/speculative.rs)", compute: |o| mean_of(o, |r| r.uplink_bytes as f64) },
    MetricDef { id: "downlink-bytes-per-prompt", aliases: &[], unit: "B", higher_is_better: false, kinds: SPEC, help: "cloud → edge bytes per prompt", compute: |o| mean_of(o, |r| r.downlink_bytes as f64) },
    MetricDef { id: "speed-up", aliases: &["speedup"], unit: "x", higher_is_better: true, kinds: SPEC, help: "this case's token throughput / the verifier-only one (same verifier, prompts, settings and link); under greedy decoding the outputs are equal, so it is the end-to-end time ratio", compute: speed_up },
    MetricDef { id: "lossless", aliases: &[], unit: "", higher_is_better: true, kinds: SPEC, help: "greedy only: share of prompts whose output equals the verifier-only output token for token (an output the drafter finished alone after the cloud missed never counts)", compute: |o| {
        let r = recs(o)?;
        let v: Vec<bool> = r.iter().filter_map(|x| x.lossless).collect();
        if v.is_empty() { bail!("only defined for greedy decoding with a verifier"); }
        Ok(v.iter().filter(|b| **b).count() as f64 / v.len() as f64)
    } },
    MetricDef { id: "near-tie-divergences", aliases: &[], unit: "prompts", higher_is_better: false, kinds: SPEC, help: "greedy divergences from the verifier-only output that fall on a near-tie of the verifier's top-2 logits (counted apart from real losses)", compute: |o| Ok(recs(o)?.iter().filter(|x| x.divergence.as_ref().is_some_and(|d| d.near_tie)).count() as f64) },
    MetricDef { id: "cost-ratio", aliases: &["c"], unit: "", higher_is_better: false, kinds: SPEC, help: "c: drafter one-token step time / verifier one-token step time", compute: cost_ratio },
    MetricDef { id: "verify-cost", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "time of one verification pass over γ+1 tokens / one verifier one-token step", compute: verify_cost },
    MetricDef { id: "predicted-speed-up", aliases: &[], unit: "x", higher_is_better: true, kinds: SPEC, help: "(1 − α^(γ+1)) / ((1 − α)(γc + v)): Leviathan et al. with the measured verification cost v", compute: predicted_speedup },
    MetricDef { id: "load", aliases: &[], unit: "", higher_is_better: false, kinds: SPEC, help: "the machine's 1-minute load average when each prompt finished, maximum over prompts; above the CPU count, other work competed for the CPUs and the timings include it (a warning is printed)", compute: |o| {
        let r = recs(o)?;
        r.iter().filter_map(|x| x.load_1m).max_by(|a, b| a.total_cmp(b)).ok_or_else(|| anyhow::anyhow!("no load recorded (not Linux, or records from before it was recorded)"))
    } },
    MetricDef { id: "cpu-per-wall", aliases: &[], unit: "", higher_is_better: true, kinds: SPEC, help: "process CPU time / wall time while generating (speculative prompts), mean over prompts: the cores this run actually got", compute: |o| {
        let r = recs(o)?;
        let v: Vec<f64> = r.iter().filter_map(|x| x.cpu_per_wall).collect();
        if v.is_empty() { bail!("no CPU time recorded (not Linux, or prompts under 0.2 s)"); }
        Ok(v.iter().sum::<f64>() / v.len() as f64)
    } },
];
