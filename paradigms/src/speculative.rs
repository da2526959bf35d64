//! Speculative decoding across edge and cloud: a small draft LM on the edge proposes γ tokens,
//! a large verifier LM in the cloud checks them in one forward pass (Leviathan et al. 2023,
//! "Fast Inference from Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating
//! Large Language Model Decoding with Speculative Sampling").
//!
//! An algorithm with both a `drafter` and a `verifier` runs speculative decoding; with only a
//! `verifier` it is the `verifier-only` baseline (the cloud decodes every token and streams it
//! down), with only a `drafter` the `drafter-only` baseline (the edge decodes alone).
//!
//! ## Protocol (what crosses the link, counted byte for byte)
//! Token ids are 4-byte little-endian integers.
//! - Round up (edge → cloud): the committed tokens the cloud has not seen yet (the whole prompt in
//!   the first round) plus the γ drafted tokens; with rejection sampling also q(xᵢ), the draft
//!   probability of each drafted token (4 bytes each) — the cloud needs only those scalars for
//!   the acceptance test min(1, p(x)/q(x)).
//! - Round down (cloud → edge): the number of accepted drafts (4 bytes) and the next token
//!   (4 bytes): the verifier's correction (greedy), or the bonus token when all γ were accepted.
//!   With rejection sampling, a rejection instead sends the verifier's processed distribution at
//!   the rejected position (4 bytes × vocabulary), and the edge — which holds q there — draws the
//!   replacement from norm(max(0, p − q)).
//! - verifier-only: the prompt goes up once; each generated token comes down (4 bytes), streamed:
//!   a token arrives one one-way delay after the cloud produced it.
//!
//! ## Timing
//! Compute is measured (the models return host memory, which syncs any device); link time comes
//! from the link model (`virtual`: modelled and added; `sleep`: really waited). A round's tokens
//! arrive together at the end of the round. The first `warmup_samples` prompts are run and
//! recorded but left out of every metric.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use crate::auto_gamma::{best_gamma, expected_tokens, predicted_rate, AutoPlanner};
use crate::cloud_verifier::{CloudError, CloudVerifier, LocalVerifier, Next};
use crate::hp::{HpKind, HpSpec, Hyperparameters};
use crate::link::{Link, LinkSpec};
use crate::modules::{LanguageModel, LmSession};
use crate::net::{OnFailure, RealLinkSpec};
use crate::paradigm::{CaseContext, CaseSpec, DataSplits, ModuleSlot, Paradigm};
use crate::records::{CaseOutput, RecordKind, Records};
use crate::registry::Registry;
use crate::sampling::{self, SamplingParams};

pub struct SpeculativeDecoding;

const SLOTS: &[ModuleSlot] = &[
    ModuleSlot {
        module_type: "drafter",
        required: false,
        help: "the small draft LM on the edge (alone: the drafter-only baseline)",
    },
    ModuleSlot {
        module_type: "verifier",
        required: false,
        help: "the large verifier LM in the cloud (alone: the verifier-only baseline)",
    },
    ModuleSlot {
        module_type: "link",
        required: false,
        help: "the edge-cloud network: Emulated (default: a 1 ms, 100 Mbit/s LAN), or Tcp (the verifier runs in an `ianvs serve` worker)",
    },
];

/// Names of the speculative hyperparameters of the `drafter` and `verifier` modules. They are
/// declared here, where they are read ([`drafter_hps`], [`verifier_hps`]); a module crate
/// adds those specs to its own (model, device, …) so no crate looks up by string a
/// hyperparameter another crate declares.
pub mod hp_names {
    pub const DRAFT_TOKENS_PER_STEP: &str = "draft_tokens_per_step";
    pub const SCHEDULE: &str = "schedule";
    pub const MAX_DRAFT_TOKENS: &str = "max_draft_tokens";
    pub const TEMPERATURE: &str = "temperature";
    pub const VERIFICATION: &str = "verification";
}

/// The speculative hyperparameters of a `drafter` module.
pub fn drafter_hps() -> Vec<HpSpec> {
    vec![
        HpSpec::new(
            hp_names::DRAFT_TOKENS_PER_STEP,
            HpKind::Int { min: 1, max: 64 },
            json!(4),
            "γ: tokens drafted per round (the starting γ of an adaptive schedule)",
        ),
        HpSpec::new(
            hp_names::SCHEDULE,
            HpKind::Choice(&["constant", "adaptive", "auto"]),
            json!("constant"),
            "constant γ; adaptive: +1 after a fully accepted round, −1 after a rejection; auto: before each round the γ ≤ max_draft_tokens maximising the predicted speed-up from the measured acceptance rate α and the costs c and v(k) (measured once per case, then tracked over its rounds)",
        ),
        HpSpec::new(
            hp_names::MAX_DRAFT_TOKENS,
            HpKind::Int { min: 1, max: 64 },
            json!(16),
            "upper bound of γ for the adaptive and auto schedules",
        ),
    ]
}

/// The speculative hyperparameters of a `verifier` module.
pub fn verifier_hps() -> Vec<HpSpec> {
    vec![
        HpSpec::new(
            hp_names::TEMPERATURE,
            HpKind::Float { min: 0.0, max: 100.0 },
            Some(serde_json::Value::Null),
            "sampling temperature of this case's target distribution (the drafter samples at the same temperature; 0 = greedy); unset = the test environment's `temperature`",
        ),
        HpSpec::new(
            hp_names::VERIFICATION,
            HpKind::Choice(&["greedy", "rejection-sampling"]),
            json!("greedy"),
            "greedy: longest prefix matching the verifier's argmax; rejection-sampling: exact (Leviathan et al. 2023)",
        ),
    ]
}

/// Logit margin (top-1 minus top-2) below which a greedy divergence is put down to batched and
/// single-token forwards rounding differently rather than to a bug.
pub const NEAR_TIE_MARGIN: f32 = 1e-3;

/// How one prompt was decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeculativeRecord {
    pub index: usize,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warmup: bool,
    /// `speculative`, `verifier-only` or `drafter-only`.
    pub mode: String,
    pub prompt_tokens: usize,
    pub output_tokens: Vec<u32>,
    pub text: String,
    /// Arrival time of each generated token at the edge, seconds from the request.
    pub token_times_s: Vec<f64>,
    pub ttft_s: f64,
    pub e2e_s: f64,
    pub draft_s: f64,
    pub verify_s: f64,
    pub link_s: f64,
    pub verifier_calls: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Rounds that ended in a rejection (each is one evaluated, not-accepted draft position).
    pub rejections: usize,
    /// Per draft position i (0-based): how often it was reached and how often accepted.
    pub reached_by_position: Vec<usize>,
    pub accepted_by_position: Vec<usize>,
    pub uplink_bytes: usize,
    pub downlink_bytes: usize,
    /// Drafter single-token forward passes and their total time (cost ratio c); multi-token
    /// feeds (the prompt, a correction plus the last draft) are in `draft_s` only.
    pub draft_steps: usize,
    #[serde(default)]
    pub draft_step_s: f64,
    /// Verifier passes over more than one new token after the first round, their total time and
    /// total new tokens (cost of verifying γ+1 tokens at once).
    pub verify_batch_calls: usize,
    pub verify_batch_s: f64,
    pub verify_batch_tokens: usize,
    /// Verifier single-token decode steps (verifier-only) and their total time.
    pub verify_step_calls: usize,
    pub verify_step_s: f64,
    /// Greedy only: whether the output equals the verifier-only output for the same prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossless: Option<bool>,
    /// Where the output first differs from the verifier-only output, and the verifier's logit
    /// margin (top-1 − top-2) there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// End-to-end time of the verifier-only baseline on this prompt (speed-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_e2e_s: Option<f64>,
    /// Tokens the verifier-only baseline generated for this prompt (equal to this record's
    /// under greedy decoding; sampled outputs differ in length, so speed-up compares rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_tokens: Option<usize>,
    /// Mean verifier one-token decode step of the baseline, seconds (cost ratios).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_step_s: Option<f64>,
    /// γ used in each round (adaptive schedules change it).
    pub gammas: Vec<usize>,
    /// Real link: message and frame encode/decode time on the edge (part of `e2e_s`, apart
    /// from `link_s`, which is then the measured network + queueing time).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub codec_s: f64,
    /// Real link, `on_cloud_failure: fallback`: output tokens the drafter produced alone after
    /// the cloud missed (unverified; such an output is never counted lossless).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub fallback_tokens: usize,
    /// `auto` schedule: seconds spent measuring c and v before the first round (not part of
    /// any latency above).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calibration_s: f64,
    /// Whether `baseline_*` come from a verifier-only run of this prompt made right next to
    /// this one (in alternating order), rather than from the job's shared reference.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paired: bool,
    /// Process CPU time (all threads, user + system) over wall time while this prompt was
    /// generated (Linux); the number of busy cores this process got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_wall: Option<f64>,
    /// The machine's 1-minute load average when this prompt finished (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<f64>,
}

/// CPU seconds this process has used (user + system, all threads), from `/proc/self/stat`.
pub fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `f` and stamps its record with CPU time / wall time and the load average.
pub(crate) fn with_usage(
    f: impl FnOnce() -> anyhow::Result<SpeculativeRecord>,
) -> anyhow::Result<SpeculativeRecord> {
    let (cpu0, t0) = (process_cpu_s(), Instant::now());
    let mut r = f()?;
    let wall = t0.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (cpu0, process_cpu_s()) {
        // 10 ms ticks: only meaningful over a few hundred ms.
        if wall > 0.2 {
            r.cpu_per_wall = Some((b - a) / wall);
        }
    }
    r.load_1m = load_1m();
    Ok(r)
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    pub position: usize,
    pub margin: f32,
    pub near_tie: bool,
}

/// Generation settings shared by every mode.
#[derive(Debug, Clone, Copy)]
pub struct Generation {
    pub params: SamplingParams,
    pub max_new_tokens: usize,
    pub stop_at_eos: bool,
}

/// Draft-length schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Raise γ after a fully accepted round, lower it after a rejection, within [1, max].
    Adaptive {
        max: usize,
    },
    /// Before every round, the γ in [1, max] that maximises [`predicted_rate`] for the
    /// acceptance rate measured so far and the costs c and v measured once per case and
    /// tracked over its rounds ([`AutoPlanner`]).
    Auto {
        max: usize,
    },
}

/// Verification rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verification {
    /// Longest prefix matching the verifier's argmax.
    Greedy,
    /// Exact rejection sampling: lossless in distribution.
    RejectionSampling,
}

fn tokens_bytes(n: usize) -> usize {
    4 * n
}

pub(crate) fn top2_margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

pub(crate) fn empty_record(index: usize, mode: &str, prompt_tokens: usize) -> SpeculativeRecord {
    SpeculativeRecord {
        index,
        warmup: false,
        mode: mode.into(),
        prompt_tokens,
        output_tokens: vec![],
        text: String::new(),
        token_times_s: vec![],
        ttft_s: 0.0,
        e2e_s: 0.0,
        draft_s: 0.0,
        verify_s: 0.0,
        link_s: 0.0,
        verifier_calls: 0,
        drafted: 0,
        accepted: 0,
        rejections: 0,
        reached_by_position: vec![],
        accepted_by_position: vec![],
        uplink_bytes: 0,
        downlink_bytes: 0,
        draft_steps: 0,
        draft_step_s: 0.0,
        verify_batch_calls: 0,
        verify_batch_s: 0.0,
        verify_batch_tokens: 0,
        verify_step_calls: 0,
        verify_step_s: 0.0,
        lossless: None,
        divergence: None,
        baseline_e2e_s: None,
        baseline_tokens: None,
        baseline_step_s: None,
        gammas: vec![],
        codec_s: 0.0,
        fallback_tokens: 0,
        calibration_s: 0.0,
        paired: false,
        cpu_per_wall: None,
        load_1m: None,
    }
}

/// Picks the next token from logits: argmax when greedy, else a seeded draw.
fn pick(logits: &[f32], gen: &Generation, rng: &mut ChaCha8Rng) -> anyhow::Result<(u32, Vec<f32>)> {
    if gen.params.is_greedy() {
        Ok((sampling::argmax(logits)?, Vec::new()))
    } else {
        let p = sampling::probs(logits, &gen.params)?;
        Ok((sampling::sample(&p, rng)?, p))
    }
}

/// Cuts `out` at the first end-of-generation token (kept) and at `max_new_tokens`; true when
/// generation is over.
fn finish(out: &mut Vec<u32>, times: &mut Vec<f64>, gen: &Generation, eog: &[u32]) -> bool {
    if gen.stop_at_eos {
        if let Some(p) = out.iter().position(|t| eog.contains(t)) {
            out.truncate(p + 1);
            times.truncate(p + 1);
            return true;
        }
    }
    if out.len() >= gen.max_new_tokens {
        out.truncate(gen.max_new_tokens);
        times.truncate(gen.max_new_tokens);
        return true;
    }
    false
}

/// Autoregressive decoding with one model. `streamed` adds the link: prompt up once, each token
/// down one one-way delay after it was produced (verifier-only); `None` decodes on the edge.
/// Also returns the verifier's top-2 logit margin at each generated position.
pub fn autoregressive(
    model: &dyn LanguageModel,
    prompt: &[u32],
    gen: &Generation,
    mut streamed: Option<&mut Link>,
    index: usize,
) -> anyhow::Result<(SpeculativeRecord, Vec<f32>)> {
    let mode = if streamed.is_some() {
        "verifier-only"
    } else {
        "drafter-only"
    };
    let mut rec = empty_record(index, mode, prompt.len());
    let eog = model.eog_ids();
    let mut rng = ChaCha8Rng::seed_from_u64(
        gen.params.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let (mut up_s, mut down_s) = (0.0, 0.0);
    if let Some(link) = streamed.as_deref_mut() {
        let mut ex = link.exchange();
        let up = ex.up(tokens_bytes(prompt.len()));
        let down = ex.down(tokens_bytes(1));
        up_s = up.seconds;
        down_s = down.seconds;
        rec.uplink_bytes = up.bytes;
    }
    let mut sess = model.new_session();
    let mut margins = Vec::new();
    let mut compute = 0.0;
    let mut feed: Vec<u32> = prompt.to_vec();
    let mut first = true;
    loop {
        let t0 = Instant::now();
        let logits = sess.forward_last(&feed)?;
        let dt = t0.elapsed().as_secs_f64();
        compute += dt;
        if !first {
            rec.verify_step_calls += 1;
            rec.verify_step_s += dt;
        }
        first = false;
        margins.push(top2_margin(&logits));
        let (tok, _) = pick(&logits, gen, &mut rng)?;
        rec.output_tokens.push(tok);
        rec.token_times_s.push(up_s + compute + down_s);
        if finish(&mut rec.output_tokens, &mut rec.token_times_s, gen, &eog) {
            break;
        }
        feed = vec![tok];
    }
    margins.truncate(rec.output_tokens.len());
    rec.verifier_calls = if streamed.is_some() {
        rec.output_tokens.len()
    } else {
        0
    };
    if streamed.is_some() {
        rec.verify_s = compute;
        rec.link_s = up_s + down_s;
        rec.downlink_bytes = tokens_bytes(rec.output_tokens.len());
    } else {
        rec.draft_s = compute;
        rec.draft_steps = rec.verify_step_calls;
        rec.draft_step_s = rec.verify_step_s;
        rec.verify_step_calls = 0;
        rec.verify_step_s = 0.0;
    }
    rec.ttft_s = rec.token_times_s.first().copied().unwrap_or(0.0);
    rec.e2e_s = rec.token_times_s.last().copied().unwrap_or(0.0);
    rec.text = model.decode(&rec.output_tokens)?;
    Ok((rec, margins))
}

/// The prompts a case runs (`sample_size` of the test texts, 0 = all) and how many of them
/// are warm-up (`warmup_samples`, which must leave at least one measured).
pub(crate) fn case_prompts<'a>(
    case: &CaseSpec,
    ctx: &CaseContext<'a>,
) -> anyhow::Result<(&'a [String], usize)> {
    let all = &ctx.data.test.texts;
    let n = match case.settings.usize("sample_size")? {
        0 => all.len(),
        k => k.min(all.len()),
    };
    let warmup = case.settings.usize("warmup_samples")?;
    if warmup >= n {
        anyhow::bail!("warmup_samples ({warmup}) leaves no measured prompt out of {n}");
    }
    Ok((&all[..n], warmup))
}

/// Speculative decoding of one prompt with the verifier in this process, behind the emulated
/// link; an `auto` schedule calibrates on this prompt alone (see [`speculative_planned`] to
/// share one planner between the prompts of a case).
#[allow(clippy::too_many_arguments)]
pub fn speculative(
    drafter: &dyn LanguageModel,
    verifier: &dyn LanguageModel,
    prompt: &[u32],
    gen: &Generation,
    gamma0: usize,
    schedule: Schedule,
    rule: Verification,
    link: &mut Link,
    index: usize,
) -> anyhow::Result<SpeculativeRecord> {
    speculative_planned(
        drafter, verifier, prompt, gen, gamma0, schedule, rule, link, index, None,
    )
}

/// [`speculative`] with the case's `auto` planner: it is calibrated on the first prompt that
/// reaches it uncalibrated, and every round of every prompt teaches it; `None` plans with a
/// fresh planner for this prompt alone.
#[allow(clippy::too_many_arguments)]
pub fn speculative_planned(
    drafter: &dyn LanguageModel,
    verifier: &dyn LanguageModel,
    prompt: &[u32],
    gen: &Generation,
    gamma0: usize,
    schedule: Schedule,
    rule: Verification,
    link: &mut Link,
    index: usize,
    planner: Option<&mut AutoPlanner>,
) -> anyhow::Result<SpeculativeRecord> {
    let greedy = gen.params.is_greedy() || rule == Verification::Greedy;
    let mut cloud = LocalVerifier::new(verifier, link, gen.params, greedy);
    let mut rec = speculative_with(
        drafter,
        &mut cloud,
        &verifier.eog_ids(),
        prompt,
        gen,
        gamma0,
        schedule,
        rule,
        OnFailure::Fail,
        index,
        planner,
    )?;
    rec.text = verifier.decode(&rec.output_tokens)?;
    Ok(rec)
}

/// Speculative decoding of one prompt against any [`CloudVerifier`] (in-process or in an
/// `ianvs serve` worker). When the cloud misses (real link) the policy decides: `Fail` fails
/// the case; `Fallback` finishes the prompt drafter-only, every such token counted in
/// `fallback_tokens` (and the output is then not called lossless). `text` is left empty.
/// `planner` as in [`speculative_planned`].
#[allow(clippy::too_many_arguments)]
pub fn speculative_with(
    drafter: &dyn LanguageModel,
    cloud: &mut dyn CloudVerifier,
    eog: &[u32],
    prompt: &[u32],
    gen: &Generation,
    gamma0: usize,
    schedule: Schedule,
    rule: Verification,
    on_miss: OnFailure,
    index: usize,
    planner: Option<&mut AutoPlanner>,
) -> anyhow::Result<SpeculativeRecord> {
    let mut rec = empty_record(index, "speculative", prompt.len());
    let seed = gen.params.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut edge_rng = ChaCha8Rng::seed_from_u64(seed);
    let greedy = gen.params.is_greedy() || rule == Verification::Greedy;
    let max_gamma = match schedule {
        Schedule::Constant => gamma0,
        Schedule::Adaptive { max } | Schedule::Auto { max } => max.max(gamma0),
    };
    rec.reached_by_position = vec![0; max_gamma];
    rec.accepted_by_position = vec![0; max_gamma];

    let mut ds = drafter.new_session();
    if prompt.is_empty() {
        anyhow::bail!("prompt {index} has no tokens");
    }
    // A miss under `fail` ends the case; under `fallback` the edge goes on alone.
    let missed = |e: CloudError| -> anyhow::Result<()> {
        match (e, on_miss) {
            (CloudError::Fatal(e), _) => Err(e),
            (CloudError::Miss(m), OnFailure::Fail) => anyhow::bail!("prompt {index}: {m} (the link's on_cloud_failure is `fail`; `fallback` finishes the prompt on the drafter instead)"),
            (CloudError::Miss(_), OnFailure::Fallback) => Ok(()),
        }
    };

    // Round 0: the edge prefills the prompt and sends it; the cloud prefills it and its last
    // row gives the first token, exactly as verifier-only decoding does. Drafting starts from
    // that token, so no draft is ever computed from (or verified in) a prompt-sized chunk,
    // and time to first token is drafter prefill + link + verifier-only TTFT.
    let t0 = Instant::now();
    let prefill_last = ds.forward_last(prompt)?;
    let draft_prefill_s = t0.elapsed().as_secs_f64();
    rec.draft_s += draft_prefill_s;
    let mut clock = draft_prefill_s;
    let t_ask = Instant::now();
    let first = match cloud.open(seed, prompt) {
        Ok(ex) => {
            rec.verify_s += ex.compute_s;
            rec.verifier_calls += 1;
            rec.uplink_bytes += ex.up_bytes;
            rec.downlink_bytes += ex.down_bytes;
            rec.link_s += ex.link_s;
            rec.codec_s += ex.codec_s;
            clock += ex.link_s + ex.compute_s + ex.codec_s;
            ex.value
        }
        Err(e) => {
            missed(e)?;
            // The drafter's prefill already holds the first distribution.
            let waited = t_ask.elapsed().as_secs_f64();
            rec.link_s += waited;
            clock += waited;
            let (tok, _) = pick(&prefill_last, gen, &mut edge_rng)?;
            rec.output_tokens.push(tok);
            rec.token_times_s.push(clock);
            let rest = Rest {
                feed: vec![tok],
                verified: 0,
                clock,
            };
            return drafter_only_rest(ds.as_mut(), rest, rec, gen, eog, &mut edge_rng, cloud);
        }
    };
    drop(prefill_last);
    rec.output_tokens.push(first);
    rec.token_times_s.push(clock);
    let done = finish(&mut rec.output_tokens, &mut rec.token_times_s, gen, eog);

    // `auto`: the case's planner, measured the first time (each pass rolled back; not on the
    // clock, recorded as calibration time), as a deployment would once at start-up. The
    // verifier's pass over k = 1..=max+1 tokens is timed where it runs (the worker, on a real
    // link), the drafter's step here.
    let mut own_planner;
    let mut planner = match (schedule, planner) {
        (Schedule::Auto { .. }, Some(p)) => Some(p),
        (Schedule::Auto { max }, None) => {
            own_planner = AutoPlanner::new(max);
            Some(&mut own_planner)
        }
        _ => None,
    };
    if let Some(p) = planner.as_deref_mut() {
        if !done && !p.is_calibrated() {
            let t0 = Instant::now();
            let verify_s = match cloud.calibrate(first, p.max()) {
                Ok(x) => x,
                // A miss here is a miss like any other: the drafter finishes the prompt.
                Err(e) => {
                    missed(e)?;
                    let clock = clock + t0.elapsed().as_secs_f64();
                    rec.link_s += t0.elapsed().as_secs_f64();
                    let rest = Rest {
                        feed: vec![first],
                        verified: rec.output_tokens.len(),
                        clock,
                    };
                    return drafter_only_rest(
                        ds.as_mut(),
                        rest,
                        rec,
                        gen,
                        eog,
                        &mut edge_rng,
                        cloud,
                    );
                }
            };
            p.calibrate_with(ds.as_mut(), first, verify_s)?;
            rec.calibration_s = t0.elapsed().as_secs_f64();
        }
    }

    let mut unfed_d: Vec<u32> = vec![first];
    let mut unfed_v: Vec<u32> = vec![first];
    let mut gamma = gamma0;
    let mut more = !done;
    while more {
        if let Some(p) = planner.as_deref() {
            gamma = p.gamma().min(max_gamma);
        }
        rec.gammas.push(gamma);
        // Edge: draft γ tokens.
        let before_d = ds.len();
        let mut drafts = Vec::with_capacity(gamma);
        let mut qs: Vec<Vec<f32>> = Vec::with_capacity(gamma);
        let mut draft_s = 0.0;
        let (steps_before, step_s_before) = (rec.draft_steps, rec.draft_step_s);
        let mut feed = std::mem::take(&mut unfed_d);
        let fed_before = feed.len();
        for i in 0..gamma {
            let t0 = Instant::now();
            // Only the last row's logits: a 2-token catch-up feed skips the head for the
            // first row (the largest matrix of a small drafter).
            let logits = ds.forward_last(&feed)?;
            let dt = t0.elapsed().as_secs_f64();
            draft_s += dt;
            // A 2-token feed (the last draft and the correction after a full acceptance)
            // costs more than a step; it stays in `draft_s` only.
            if i > 0 || fed_before == 1 {
                rec.draft_steps += 1;
                rec.draft_step_s += dt;
            }
            let (tok, q) = if greedy {
                (sampling::argmax(&logits)?, Vec::new())
            } else {
                let q = sampling::probs(&logits, &gen.params)?;
                (sampling::sample(&q, &mut edge_rng)?, q)
            };
            drafts.push(tok);
            qs.push(q);
            feed = vec![tok];
        }
        rec.draft_s += draft_s;
        rec.drafted += gamma;
        clock += draft_s;

        // Cloud: verify the committed token(s) it has not fed, then the drafts, in one pass
        // of 1 + γ tokens (the prompt went in round 0, so the drafts are never computed by
        // the prefill kernels of a long chunk, which for some weight types round differently
        // from one-token decode). With rejection sampling q(xᵢ) goes along.
        let mut vfeed = std::mem::take(&mut unfed_v);
        vfeed.extend_from_slice(&drafts);
        let qx: Vec<f32> = if greedy {
            Vec::new()
        } else {
            drafts
                .iter()
                .zip(&qs)
                .map(|(&d, q)| q[d as usize])
                .collect()
        };
        let t_ask = Instant::now();
        let ex = match cloud.verify(&vfeed, gamma, &qx) {
            Ok(ex) => ex,
            Err(e) => {
                missed(e)?;
                // Fallback: the drafts stand unverified and the edge goes on alone (the
                // drafter has fed all but the last draft).
                let waited = t_ask.elapsed().as_secs_f64();
                rec.link_s += waited;
                clock += waited;
                rec.drafted -= gamma;
                rec.gammas.pop();
                let verified = rec.output_tokens.len();
                for &d in &drafts {
                    rec.output_tokens.push(d);
                    rec.token_times_s.push(clock);
                }
                let rest = Rest {
                    feed: vec![drafts[gamma - 1]],
                    verified,
                    clock,
                };
                return drafter_only_rest(ds.as_mut(), rest, rec, gen, eog, &mut edge_rng, cloud);
            }
        };
        rec.verify_s += ex.compute_s;
        rec.verifier_calls += 1;
        rec.verify_batch_calls += 1;
        rec.verify_batch_s += ex.compute_s;
        rec.verify_batch_tokens += vfeed.len();
        let k = ex.value.accepted;
        for i in 0..gamma.min(k + 1) {
            rec.reached_by_position[i] += 1;
        }
        for i in 0..k {
            rec.accepted_by_position[i] += 1;
        }
        if k < gamma {
            rec.rejections += 1;
        }
        let t = match ex.value.next {
            Next::Token(t) => t,
            // The cloud sent p at the rejected position; the edge, which holds q, draws from
            // the residual.
            Next::Residual(p) => {
                let r = sampling::residual(&p, &qs[k])?;
                sampling::sample(&r, &mut edge_rng)?
            }
        };
        rec.accepted += k;
        rec.uplink_bytes += ex.up_bytes;
        rec.downlink_bytes += ex.down_bytes;
        rec.link_s += ex.link_s;
        rec.codec_s += ex.codec_s;
        clock += ex.link_s + ex.compute_s + ex.codec_s;
        if let Some(p) = planner.as_deref_mut() {
            let steps = rec.draft_steps - steps_before;
            let step_s = (steps > 0).then(|| (rec.draft_step_s - step_s_before) / steps as f64);
            p.observe(gamma, k, step_s, ex.compute_s, ex.link_s + ex.codec_s);
        }

        // Commit d1..dk and t; the cloud cut its cache back itself, the drafter is cut here.
        let mut committed_now: Vec<u32> = drafts[..k].to_vec();
        committed_now.push(t);
        for tok in committed_now {
            rec.output_tokens.push(tok);
            rec.token_times_s.push(clock);
        }
        unfed_v = vec![t];
        // The drafter fed its pending tokens and d1..d(γ-1).
        let keep = before_d + fed_before + k.min(gamma - 1);
        ds.truncate(keep)?;
        unfed_d = if k == gamma {
            vec![drafts[gamma - 1], t]
        } else {
            vec![t]
        };
        more = !finish(&mut rec.output_tokens, &mut rec.token_times_s, gen, eog);
        if let Schedule::Adaptive { max } = schedule {
            gamma = if k == gamma {
                (gamma + 1).min(max)
            } else {
                gamma.saturating_sub(1).max(1)
            };
        }
    }
    cloud.close();
    Ok(end(rec))
}

pub(crate) fn end(mut rec: SpeculativeRecord) -> SpeculativeRecord {
    rec.ttft_s = rec.token_times_s.first().copied().unwrap_or(0.0);
    rec.e2e_s = rec.token_times_s.last().copied().unwrap_or(0.0);
    rec
}

/// Where a generation stands when the cloud missed: what the drafter has not fed yet, how
/// many output tokens were verified, and the edge clock.
struct Rest {
    feed: Vec<u32>,
    verified: usize,
    clock: f64,
}

/// The rest of a generation on the drafter alone, after the cloud missed (`fallback`); every
/// token after the verified ones counts as a fallback token.
fn drafter_only_rest(
    ds: &mut dyn LmSession,
    rest: Rest,
    mut rec: SpeculativeRecord,
    gen: &Generation,
    eog: &[u32],
    rng: &mut ChaCha8Rng,
    cloud: &mut dyn CloudVerifier,
) -> anyhow::Result<SpeculativeRecord> {
    cloud.close();
    let (mut feed, mut clock) = (rest.feed, rest.clock);
    while !finish(&mut rec.output_tokens, &mut rec.token_times_s, gen, eog) {
        let t0 = Instant::now();
        let logits = ds.forward_last(&feed)?;
        let (tok, _) = pick(&logits, gen, rng)?;
        let dt = t0.elapsed().as_secs_f64();
        rec.draft_s += dt;
        clock += dt;
        rec.output_tokens.push(tok);
        rec.token_times_s.push(clock);
        feed = vec![tok];
    }
    rec.fallback_tokens = rec.output_tokens.len().saturating_sub(rest.verified);
    Ok(end(rec))
}

/// The verifier-only reference of a job: per prompt its record and logit margins.
pub struct Reference {
    pub records: Vec<SpeculativeRecord>,
    pub margins: Vec<Vec<f32>>,
}

fn settings_hps() -> Vec<HpSpec> {
    vec![
        HpSpec::new(
            "max_new_tokens",
            HpKind::Int {
                min: 1,
                max: 100_000,
            },
            json!(32),
            "tokens to generate per prompt (fewer when EOS comes first)",
        ),
        HpSpec::new(
            "temperature",
            HpKind::Float {
                min: 0.0,
                max: 100.0,
            },
            json!(0.0),
            "0 = greedy decoding; > 0 samples",
        ),
        HpSpec::new(
            "top_k",
            HpKind::Int {
                min: 0,
                max: 10_000_000,
            },
            json!(0),
            "keep the k most likely tokens (0 = off)",
        ),
        HpSpec::new(
            "top_p",
            HpKind::Float {
                min: 1e-6,
                max: 1.0,
            },
            json!(1.0),
            "nucleus sampling mass (1 = off)",
        ),
        HpSpec::new(
            "generation_seed",
            HpKind::Int {
                min: 0,
                max: i64::MAX,
            },
            json!(0),
            "seeds sampling and acceptance tests",
        ),
        HpSpec::new(
            "stop_at_eos",
            HpKind::Bool,
            json!(true),
            "stop a prompt at the end-of-sequence token",
        ),
        HpSpec::new(
            "sample_size",
            HpKind::Int {
                min: 0,
                max: 1_000_000_000,
            },
            json!(0),
            "prompts to use from the test data (0 = all)",
        ),
        HpSpec::new(
            "warmup_samples",
            HpKind::Int {
                min: 0,
                max: 1_000_000,
            },
            json!(1),
            "prompts run first and left out of every metric",
        ),
    ]
}

/// The generation settings of one case: the test environment's, with the verifier module's
/// `temperature` (when set) in place of the test environment's — so one job can hold greedy
/// and sampled cases side by side.
fn case_generation(case: &CaseSpec) -> anyhow::Result<Generation> {
    let mut gen = generation(&case.settings)?;
    if let Some(t) = case
        .module("verifier")
        .map(|m| m.hyperparameters.opt_float(hp_names::TEMPERATURE))
        .transpose()?
        .flatten()
    {
        gen.params.temperature = t as f32;
        gen.params.validate()?;
    }
    Ok(gen)
}

fn generation(s: &Hyperparameters) -> anyhow::Result<Generation> {
    let params = SamplingParams {
        temperature: s.float("temperature")? as f32,
        top_k: s.usize("top_k")?,
        top_p: s.float("top_p")? as f32,
        seed: s.u64("generation_seed")?,
    };
    params.validate()?;
    Ok(Generation {
        params,
        max_new_tokens: s.usize("max_new_tokens")?,
        stop_at_eos: s.bool("stop_at_eos")?,
    })
}

pub(crate) fn load_lm(
    registry: &Registry,
    case: &CaseSpec,
    module_type: &str,
) -> anyhow::Result<Option<std::sync::Arc<dyn LanguageModel>>> {
    match case.module(module_type) {
        None => Ok(None),
        Some(m) => Ok(Some(registry.build_language_model(
            module_type,
            &m.name,
            &m.hyperparameters,
        )?)),
    }
}

fn link_spec(registry: &Registry, case: &CaseSpec) -> anyhow::Result<LinkSpec> {
    match case.module("link") {
        Some(m) => registry.build_link(
            &m.name,
            &m.hyperparameters,
            &crate::modules::BuildContext {
                input_shape: (1, 1, 1),
                num_classes: 0,
                seed: case.seed,
            },
        ),
        None => Ok(LinkSpec::lan(case.seed)),
    }
}

/// γ, its schedule and the verification rule of a speculative case.
pub(crate) fn drafting(case: &CaseSpec) -> anyhow::Result<(usize, Schedule, Verification)> {
    let m = case.require("drafter")?;
    let gamma = m.hyperparameters.usize(hp_names::DRAFT_TOKENS_PER_STEP)?;
    let schedule = match m.hyperparameters.str(hp_names::SCHEDULE)? {
        "adaptive" => Schedule::Adaptive {
            max: m.hyperparameters.usize(hp_names::MAX_DRAFT_TOKENS)?,
        },
        "auto" => Schedule::Auto {
            max: m.hyperparameters.usize(hp_names::MAX_DRAFT_TOKENS)?,
        },
        _ => Schedule::Constant,
    };
    let rule = match case
        .require("verifier")?
        .hyperparameters
        .str(hp_names::VERIFICATION)?
    {
        "rejection-sampling" => Verification::RejectionSampling,
        _ => Verification::Greedy,
    };
    Ok((gamma, schedule, rule))
}

/// Greedy losslessness of `r` against the verifier-only output `base` (whose top-2 logit
/// margins are `margins`): equal, or where it first differs and whether that is a near tie.
/// An output finished by the drafter alone after the cloud missed is not lossless.
pub(crate) fn compare_greedy(r: &mut SpeculativeRecord, base: &[u32], margins: &[f32]) {
    let same = r.output_tokens == base && r.fallback_tokens == 0;
    r.lossless = Some(same);
    // A fallback's divergence is the drafter's, not a verifier near-tie: not located.
    if r.output_tokens != base && r.fallback_tokens == 0 {
        let pos = r
            .output_tokens
            .iter()
            .zip(base)
            .position(|(a, b)| a != b)
            .unwrap_or(r.output_tokens.len().min(base.len()));
        let margin = margins.get(pos).copied().unwrap_or(f32::INFINITY);
        r.divergence = Some(Divergence {
            position: pos,
            margin,
            near_tie: margin < NEAR_TIE_MARGIN,
        });
    }
}

/// The `Tcp` link's settings when the verifier runs in an `ianvs serve` worker.
fn real_link(case: &CaseSpec) -> anyhow::Result<Option<RealLinkSpec>> {
    match case.module("link") {
        Some(m) if m.name.eq_ignore_ascii_case("tcp") => {
            if case.module("verifier").is_none() {
                anyhow::bail!("the `Tcp` link hosts the verifier in an `ianvs serve` worker; a drafter-only algorithm has no verifier: drop the link module");
            }
            Ok(Some(RealLinkSpec::from_hps(&m.hyperparameters)?))
        }
        _ => Ok(None),
    }
}

impl Paradigm for SpeculativeDecoding {
    fn name(&self) -> &'static str {
        "speculativedecoding"
    }
    fn summary(&self) -> &'static str {
        "a draft LM on the edge proposes γ tokens, a verifier LM in the cloud checks them in one pass (lossless)"
    }
    fn slots(&self) -> &'static [ModuleSlot] {
        SLOTS
    }
    fn settings(&self) -> Vec<HpSpec> {
        settings_hps()
    }
    fn record_kind(&self) -> RecordKind {
        RecordKind::Speculative
    }

    fn preflight(
        &self,
        case: &CaseSpec,
        data: &DataSplits,
        registry: &Registry,
    ) -> anyhow::Result<()> {
        if data.test.texts.is_empty() {
            anyhow::bail!("speculative decoding needs prompts: give `testenv.dataset.test_data` as JSONL with a \"prompt\" (or \"text\") field");
        }
        link_spec(registry, case)?;
        let remote = real_link(case)?.is_some();
        let d = load_lm(registry, case, "drafter")?;
        // Over a real link the verifier is loaded by the worker (its vocabulary is checked
        // when it is ready).
        let v = match remote {
            true => None,
            false => load_lm(registry, case, "verifier")?,
        };
        if remote && d.is_none() && case.module("verifier").is_none() {
            anyhow::bail!(
                "a speculative-decoding algorithm needs a `drafter`, a `verifier`, or both"
            );
        }
        if d.is_none() && v.is_none() && !remote {
            anyhow::bail!(
                "a speculative-decoding algorithm needs a `drafter`, a `verifier`, or both"
            );
        }
        if let (Some(d), Some(v)) = (&d, &v) {
            if d.vocab_fingerprint() != v.vocab_fingerprint() || d.vocab_size() != v.vocab_size() {
                anyhow::bail!("the drafter ({}, vocabulary {}) and the verifier ({}, vocabulary {}) do not share a tokenizer; speculative decoding needs identical vocabularies", d.describe(), d.vocab_size(), v.describe(), v.vocab_size());
            }
        }
        let gen = case_generation(case)?;
        if let (Some(_), Some(v)) = (case.module("drafter"), case.module("verifier")) {
            if !gen.params.is_greedy() && v.hyperparameters.str(hp_names::VERIFICATION)? == "greedy"
            {
                anyhow::bail!("verifier `verification: greedy` keeps the verifier's argmax and would ignore `temperature: {}`; use `verification: rejection-sampling` to sample losslessly, or temperature 0", gen.params.temperature);
            }
        }
        Ok(())
    }

    fn run(&self, case: &CaseSpec, ctx: &CaseContext) -> anyhow::Result<CaseOutput> {
        let gen = case_generation(case)?;
        if let Some(real) = real_link(case)? {
            return crate::speculative_remote::run(case, ctx, gen, real);
        }
        let drafter = load_lm(ctx.registry, case, "drafter")?;
        let verifier = load_lm(ctx.registry, case, "verifier")?;
        let spec = link_spec(ctx.registry, case)?;
        let (prompts, warmup) = case_prompts(case, ctx)?;
        let n = prompts.len();
        ctx.progress.set_length(n as u64);
        ctx.progress.set_position(0);

        // The verifier-only reference for this verifier, prompts, generation settings and link:
        // computed once per job (by whichever case needs it first) for speed-up and losslessness.
        let reference = match &verifier {
            Some(v) => {
                let key = format!(
                    "spec-ref|{}|{:?}|{}|{}|{:?}|{}",
                    v.describe(),
                    gen.params,
                    gen.max_new_tokens,
                    gen.stop_at_eos,
                    spec,
                    n
                );
                let v2 = v.clone();
                let spec2 = spec.clone();
                Some(
                    ctx.cache
                        .get_or_try_insert(&key, || -> anyhow::Result<Reference> {
                            let mut link = Link::new(spec2);
                            let mut records = Vec::new();
                            let mut margins = Vec::new();
                            for (i, p) in prompts.iter().enumerate() {
                                ctx.work().check_cancelled()?;
                                let ids = v2.encode(p)?;
                                let (mut r, m) =
                                    autoregressive(v2.as_ref(), &ids, &gen, Some(&mut link), i)?;
                                r.warmup = i < warmup;
                                records.push(r);
                                margins.push(m);
                            }
                            Ok(Reference { records, margins })
                        })?,
                )
            }
            None => None,
        };

        let mut records = Vec::with_capacity(n);
        let mut planner: Option<AutoPlanner> = None;
        match (&drafter, &verifier) {
            (None, Some(_)) => {
                records = reference
                    .as_ref()
                    .map(|r| r.records.clone())
                    .unwrap_or_default();
                for r in &mut records {
                    r.baseline_e2e_s = Some(r.e2e_s);
                    r.baseline_tokens = Some(r.output_tokens.len());
                    r.baseline_step_s = (r.verify_step_calls > 0)
                        .then(|| r.verify_step_s / r.verify_step_calls as f64);
                    if gen.params.is_greedy() {
                        r.lossless = Some(true);
                    }
                }
                ctx.progress.set_position(n as u64);
            }
            (Some(d), None) => {
                for (i, p) in prompts.iter().enumerate() {
                    ctx.work().check_cancelled()?;
                    let ids = d.encode(p)?;
                    let (mut r, _) = autoregressive(d.as_ref(), &ids, &gen, None, i)?;
                    r.warmup = i < warmup;
                    records.push(r);
                    ctx.progress.inc(1);
                }
            }
            (Some(d), Some(v)) => {
                let (gamma, schedule, rule) = drafting(case)?;
                let mut link = Link::new(spec.clone());
                let refr = reference
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no reference"))?;
                // Paired timing: each prompt's verifier-only baseline runs right next to its
                // speculative generation, baseline first on even prompts and second on odd
                // ones, so load from other work hits both alike and the per-prompt ratios
                // (bootstrapped over prompts in metrics.json) compare like with like.
                let mut base_link = Link::new(spec.clone());
                // `auto`: one planner for the whole case (calibrated on its first prompt).
                planner = match schedule {
                    Schedule::Auto { max } => Some(AutoPlanner::new(max)),
                    _ => None,
                };
                for (i, p) in prompts.iter().enumerate() {
                    ctx.work().check_cancelled()?;
                    let ids = v.encode(p)?;
                    let mut run_spec = || {
                        with_usage(|| {
                            speculative_planned(
                                d.as_ref(),
                                v.as_ref(),
                                &ids,
                                &gen,
                                gamma,
                                schedule,
                                rule,
                                &mut link,
                                i,
                                planner.as_mut(),
                            )
                        })
                    };
                    let mut run_base = || {
                        autoregressive(v.as_ref(), &ids, &gen, Some(&mut base_link), i)
                            .map(|(r, _)| r)
                    };
                    let (mut r, paired) = if i % 2 == 0 {
                        let b = run_base()?;
                        (run_spec()?, b)
                    } else {
                        let r = run_spec()?;
                        (r, run_base()?)
                    };
                    r.warmup = i < warmup;
                    let base = &refr.records[i];
                    r.paired = true;
                    r.baseline_e2e_s = Some(paired.e2e_s);
                    r.baseline_tokens = Some(paired.output_tokens.len());
                    r.baseline_step_s = (paired.verify_step_calls > 0)
                        .then(|| paired.verify_step_s / paired.verify_step_calls as f64);
                    if gen.params.is_greedy() {
                        compare_greedy(&mut r, &base.output_tokens, &refr.margins[i]);
                    }
                    records.push(r);
                    ctx.progress.inc(1);
                }
            }
            (None, None) => anyhow::bail!(
                "a speculative-decoding algorithm needs a `drafter`, a `verifier`, or both"
            ),
        }
        // Hyperfine's rule of thumb: timings taken while other work competed for the CPUs are
        // not this case's alone. Say so (the records keep the load and CPU/wall ratio).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if let Some(worst) = records
            .iter()
            .filter(|r| !r.warmup)
            .filter_map(|r| r.load_1m)
            .max_by(|a, b| a.total_cmp(b))
        {
            if worst > cpus + 0.5 {
                crate::device::warn_once(&format!(
                    "case {} ran while the machine was busy with other work (1-minute load up \
                     to {worst:.1} on {cpus} CPUs): its timings include waiting for the CPU; \
                     paired speed-ups are affected less than absolute times",
                    case.id
                ));
            }
        }
        let mut out = CaseOutput::new(Records::Speculative(records.clone()));
        // Per-position acceptance as a small CSV next to the records.
        let measured: Vec<&SpeculativeRecord> = records.iter().filter(|r| !r.warmup).collect();
        let width = measured
            .iter()
            .map(|r| r.reached_by_position.len())
            .max()
            .unwrap_or(0);
        if width > 0 {
            let mut csv = String::from("position,reached,accepted,acceptance\n");
            for i in 0..width {
                let reached: usize = measured
                    .iter()
                    .map(|r| r.reached_by_position.get(i).copied().unwrap_or(0))
                    .sum();
                let acc: usize = measured
                    .iter()
                    .map(|r| r.accepted_by_position.get(i).copied().unwrap_or(0))
                    .sum();
                csv.push_str(&format!(
                    "{},{reached},{acc},{}\n",
                    i + 1,
                    if reached > 0 {
                        acc as f64 / reached as f64
                    } else {
                        f64::NAN
                    }
                ));
            }
            out.artifacts
                .push(("acceptance_by_position.csv".into(), csv.into_bytes()));
        }
        let mut meta = BTreeMap::new();
        if let Some(v) = &verifier {
            meta.insert("verifier_weight_bytes".to_string(), v.weight_bytes() as f64);
        }
        if let Some(d) = &drafter {
            meta.insert("drafter_weight_bytes".to_string(), d.weight_bytes() as f64);
        }
        if let Some(costs) = planner.as_ref().and_then(|p| p.costs()) {
            // The `auto` calibration this case planned from (the rounds then corrected it).
            meta.insert("auto-c".to_string(), costs.c());
            for k in 2..=costs.verify_s.len() {
                meta.insert(format!("auto-v{k}"), costs.v(k));
            }
        }
        out.measurements.extend(meta);
        // The models as loaded (file, weights, device, own threads and CPUs), for the record.
        let runtime = serde_json::json!({
            "drafter": drafter.as_ref().map(|d| d.describe()),
            "verifier": verifier.as_ref().map(|v| v.describe()),
        });
        out.artifacts
            .push(("runtime.json".into(), serde_json::to_vec_pretty(&runtime)?));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::LmSession;

    /// A deterministic toy LM over a 5-token vocabulary: its logits depend only on the
    /// sequence so far, so speculative output can be checked against autoregressive output.
    struct Toy {
        shift: u32,
    }
    struct ToySession<'a> {
        m: &'a Toy,
        seq: Vec<u32>,
    }
    impl LanguageModel for Toy {
        fn describe(&self) -> String {
            format!("toy{}", self.shift)
        }
        fn vocab_size(&self) -> usize {
            5
        }
        fn vocab_fingerprint(&self) -> u64 {
            5
        }
        fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
            Ok(text.bytes().map(|b| u32::from(b) % 5).collect())
        }
        fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            Ok(ids.iter().map(|i| i.to_string()).collect())
        }
        fn eos_id(&self) -> Option<u32> {
            None
        }
        fn weight_bytes(&self) -> usize {
            0
        }
        fn new_session(&self) -> Box<dyn LmSession + '_> {
            Box::new(ToySession {
                m: self,
                seq: vec![],
            })
        }
    }
    impl LmSession for ToySession<'_> {
        fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
            let mut rows = Vec::new();
            for &t in tokens {
                self.seq.push(t);
                let s: u32 = self.seq.iter().sum::<u32>() + self.seq.len() as u32 * self.m.shift;
                rows.push(
                    (0..5)
                        .map(|v| if v == s % 5 { 2.0 } else { (v as f32) * 0.1 })
                        .collect(),
                );
            }
            Ok(rows)
        }
        fn len(&self) -> usize {
            self.seq.len()
        }
        fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
            self.seq.truncate(len);
            Ok(())
        }
    }

    /// Generation stops at the first of any end-of-generation id, which is kept.
    #[test]
    fn finish_stops_at_any_end_of_generation_token() {
        let g = gen(10);
        let mut out = vec![5, 6, 9, 7, 3];
        let mut times = vec![0.1; 5];
        assert!(finish(&mut out, &mut times, &g, &[3, 9]));
        assert_eq!((out, times.len()), (vec![5, 6, 9], 3));
        let mut out = vec![5, 6];
        let mut times = vec![0.1; 2];
        assert!(!finish(&mut out, &mut times, &g, &[3, 9]));
        let no_stop = Generation {
            stop_at_eos: false,
            ..g
        };
        let mut out = vec![9, 9];
        assert!(!finish(&mut out, &mut vec![0.1; 2], &no_stop, &[9]));
    }

    fn gen(max: usize) -> Generation {
        Generation {
            params: SamplingParams::greedy(),
            max_new_tokens: max,
            stop_at_eos: true,
        }
    }

    #[test]
    fn greedy_speculative_equals_autoregressive_for_every_gamma() {
        let (draft, target) = (Toy { shift: 1 }, Toy { shift: 0 });
        let prompt = target.encode("hello").unwrap();
        let (base, _) = autoregressive(
            &target,
            &prompt,
            &gen(20),
            Some(&mut Link::new(LinkSpec::lan(0))),
            0,
        )
        .unwrap();
        for gamma in [1, 2, 4, 8] {
            for schedule in [
                Schedule::Constant,
                Schedule::Adaptive { max: 8 },
                Schedule::Auto { max: 8 },
            ] {
                let r = speculative(
                    &draft,
                    &target,
                    &prompt,
                    &gen(20),
                    gamma,
                    schedule,
                    Verification::Greedy,
                    &mut Link::new(LinkSpec::lan(0)),
                    0,
                )
                .unwrap();
                assert_eq!(
                    r.output_tokens, base.output_tokens,
                    "γ={gamma} {schedule:?}"
                );
                assert_eq!(
                    r.accepted + r.rejections.min(r.drafted),
                    r.accepted_by_position.iter().sum::<usize>() + r.rejections
                );
                assert!(r.verifier_calls <= base.output_tokens.len());
            }
        }
        // A drafter identical to the target gets everything accepted: the prefill round gives
        // the first token, then one verifier call per γ+1 tokens (19 in 4 calls).
        let r = speculative(
            &target,
            &target,
            &prompt,
            &gen(20),
            4,
            Schedule::Constant,
            Verification::Greedy,
            &mut Link::new(LinkSpec::lan(0)),
            0,
        )
        .unwrap();
        assert_eq!(r.output_tokens, base.output_tokens);
        assert_eq!(r.accepted, r.drafted);
        assert_eq!(r.verifier_calls, 5);
    }

    /// A case's `auto` planner is calibrated on the first prompt only and carries what it
    /// learnt (the acceptance rate) into the next prompts; outputs stay lossless.
    #[test]
    fn auto_planner_calibrates_once_per_case() {
        let (draft, target) = (Toy { shift: 1 }, Toy { shift: 0 });
        let mut planner = AutoPlanner::new(4);
        let mut calibration = Vec::new();
        for (i, text) in ["hello", "world", "again"].iter().enumerate() {
            let prompt = target.encode(text).unwrap();
            let lan = || Link::new(LinkSpec::lan(0));
            let (base, _) =
                autoregressive(&target, &prompt, &gen(12), Some(&mut lan()), i).unwrap();
            let r = speculative_planned(
                &draft,
                &target,
                &prompt,
                &gen(12),
                1,
                Schedule::Auto { max: 4 },
                Verification::Greedy,
                &mut lan(),
                i,
                Some(&mut planner),
            )
            .unwrap();
            assert_eq!(r.output_tokens, base.output_tokens, "prompt {i}");
            assert!(r.gammas.iter().all(|g| (1..=4).contains(g)));
            calibration.push(r.calibration_s);
            if i == 0 {
                assert!(planner.is_calibrated());
                assert_ne!(
                    planner.alpha(),
                    0.5,
                    "the first prompt's rounds were learnt"
                );
            }
        }
        assert!(calibration[0] > 0.0);
        assert_eq!(&calibration[1..], &[0.0, 0.0]);
        assert_eq!(planner.costs().unwrap().verify_s.len(), 5);
    }

    #[test]
    fn bytes_follow_the_protocol() {
        let (draft, target) = (Toy { shift: 1 }, Toy { shift: 0 });
        let prompt = vec![1, 2, 3];
        let r = speculative(
            &draft,
            &target,
            &prompt,
            &gen(6),
            2,
            Schedule::Constant,
            Verification::Greedy,
            &mut Link::new(LinkSpec::lan(0)),
            0,
        )
        .unwrap();
        // Round 0 sends the prompt and gets the first token back; every later round sends 2
        // drafts and gets 8 bytes back (accepted count + the next token).
        let rounds = r.verifier_calls - 1;
        assert_eq!(r.uplink_bytes, 4 * 3 + 4 * 2 * rounds);
        assert_eq!(r.downlink_bytes, 4 + 8 * rounds);
    }

    /// A toy with smooth distributions: logits are a fixed function of the last token.
    struct Smooth {
        table: [[f32; 5]; 5],
    }
    struct SmoothSession<'a> {
        m: &'a Smooth,
        seq: Vec<u32>,
    }
    impl LanguageModel for Smooth {
        fn describe(&self) -> String {
            "smooth".into()
        }
        fn vocab_size(&self) -> usize {
            5
        }
        fn vocab_fingerprint(&self) -> u64 {
            5
        }
        fn encode(&self, _: &str) -> anyhow::Result<Vec<u32>> {
            Ok(vec![0])
        }
        fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            Ok(format!("{ids:?}"))
        }
        fn eos_id(&self) -> Option<u32> {
            None
        }
        fn weight_bytes(&self) -> usize {
            0
        }
        fn new_session(&self) -> Box<dyn LmSession + '_> {
            Box::new(SmoothSession {
                m: self,
                seq: vec![],
            })
        }
    }
    impl LmSession for SmoothSession<'_> {
        fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
            Ok(tokens
                .iter()
                .map(|&t| {
                    self.seq.push(t);
                    self.m.table[t as usize].to_vec()
                })
                .collect())
        }
        fn len(&self) -> usize {
            self.seq.len()
        }
        fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
            self.seq.truncate(len);
            Ok(())
        }
    }

    /// Runs `runs` two-token rejection-sampling generations from the prompt `[0]` (seed = run
    /// index) and counts the second token of those whose first token is 0.
    fn second_token_counts(
        draft: &Smooth,
        target: &Smooth,
        g: &Generation,
        runs: usize,
    ) -> [usize; 5] {
        let mut counts = [0usize; 5];
        for i in 0..runs {
            let r = speculative(
                draft,
                target,
                &[0],
                g,
                2,
                Schedule::Constant,
                Verification::RejectionSampling,
                &mut Link::new(LinkSpec::lan(0)),
                i,
            )
            .unwrap();
            if r.output_tokens[0] == 0 {
                counts[r.output_tokens[1] as usize] += 1;
            }
        }
        counts
    }

    fn chi_square(counts: &[usize], p: &[f32]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .map(|(&c, &pi)| {
                let e = n as f64 * f64::from(pi);
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// Rejection sampling preserves the verifier's distribution: the second generated token
    /// (after a first round of drafting, acceptance and resampling) follows the verifier's
    /// p(· | first token). A chi-square test on 20,000 seeded draws passes; the same test on
    /// what a wrong rule ("always accept the draft") produces fails.
    #[test]
    fn rejection_sampling_preserves_the_verifier_distribution() {
        let target = Smooth {
            table: [
                [1.0, 0.2, -0.5, 0.7, 0.0],
                [0.1, 0.9, 0.3, -0.2, 0.4],
                [0.5, 0.5, 0.5, 0.5, 2.0],
                [-1.0, 0.0, 1.0, 0.3, 0.2],
                [0.0, 0.3, 0.6, 0.9, 1.2],
            ],
        };
        let draft = Smooth {
            table: [
                [0.2, 1.0, 0.1, 0.0, 0.5],
                [0.6, 0.2, 0.9, 0.1, -0.3],
                [1.0, 0.0, 0.4, 0.2, 0.3],
                [0.0, 0.5, 0.2, 1.1, -0.2],
                [0.3, 0.3, 0.3, 0.3, 0.3],
            ],
        };
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 11,
        };
        let g = Generation {
            params,
            max_new_tokens: 2,
            stop_at_eos: false,
        };
        // Condition on the first token: collect second tokens for first token == 0.
        let p_next = sampling::probs(&target.table[0], &params).unwrap();
        let q_next = sampling::probs(&draft.table[0], &params).unwrap();
        let counts = second_token_counts(&draft, &target, &g, 40_000);
        let mut wrong = [0usize; 5];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..40_000 {
            wrong[sampling::sample(&q_next, &mut rng).unwrap() as usize] += 1;
        }
        let n: usize = counts.iter().sum();
        assert!(n > 3000, "enough conditioned samples ({n})");
        // df = 4: the 0.001 critical value is 18.47.
        let good = chi_square(&counts, &p_next);
        assert!(
            good < 18.47,
            "speculative sampling drifted from p: chi² = {good}, counts {counts:?}, p {p_next:?}"
        );
        let bad = chi_square(&wrong, &p_next);
        assert!(
            bad > 18.47,
            "the test must be able to fail: chi² of the wrong rule = {bad}"
        );
        // The marginal of the first token follows p(· | prompt) too.
        let mut first = [0usize; 5];
        for i in 0..20_000 {
            let r = speculative(
                &draft,
                &target,
                &[0],
                &Generation {
                    max_new_tokens: 1,
                    ..g
                },
                3,
                Schedule::Constant,
                Verification::RejectionSampling,
                &mut Link::new(LinkSpec::lan(0)),
                100_000 + i,
            )
            .unwrap();
            first[r.output_tokens[0] as usize] += 1;
        }
        let chi = chi_square(&first, &p_next);
        assert!(
            chi < 18.47,
            "first-token distribution: chi² = {chi}, counts {first:?}"
        );
    }

    /// A drafter with a trimmed output head (FR-Spec: `draft_vocab`) gives -inf logits outside
    /// the ids it keeps, so its q is a distribution over those ids only. Rejection sampling
    /// stays exact: the second token still follows the verifier's p, including the ids the
    /// drafter can never propose (they come from the residual max(0, p − q)).
    #[test]
    fn rejection_sampling_with_a_trimmed_drafter_head_preserves_the_verifier_distribution() {
        let target = Smooth {
            table: [
                [0.4, 0.2, -0.5, 0.7, 0.9],
                [0.1, 0.9, 0.3, -0.2, 0.4],
                [0.5, 0.5, 0.5, 0.5, 2.0],
                [-1.0, 0.0, 1.0, 0.3, 0.2],
                [0.0, 0.3, 0.6, 0.9, 1.2],
            ],
        };
        // Keeps ids 0..3, as `draft_vocab: 3` would: ids 3 and 4 are -inf in every row.
        let x = f32::NEG_INFINITY;
        let draft = Smooth {
            table: [
                [0.2, 1.0, 0.1, x, x],
                [0.6, 0.2, 0.9, x, x],
                [1.0, 0.0, 0.4, x, x],
                [0.0, 0.5, 0.2, x, x],
                [0.3, 0.3, 0.3, x, x],
            ],
        };
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 5,
        };
        let g = Generation {
            params,
            max_new_tokens: 2,
            stop_at_eos: false,
        };
        let p_next = sampling::probs(&target.table[0], &params).unwrap();
        let q_next = sampling::probs(&draft.table[0], &params).unwrap();
        assert_eq!((q_next[3], q_next[4]), (0.0, 0.0));
        let counts = second_token_counts(&draft, &target, &g, 30_000);
        let n: usize = counts.iter().sum();
        assert!(n > 3000, "enough conditioned samples ({n})");
        assert!(counts[3] > 0 && counts[4] > 0, "{counts:?}");
        let chi = chi_square(&counts, &p_next);
        assert!(
            chi < 18.47,
            "trimmed drafter: chi² = {chi}, counts {counts:?}, p {p_next:?}"
        );
    }
}
