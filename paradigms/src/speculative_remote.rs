//! Speculative decoding with the verifier in an `ianvs serve` worker (link module `Tcp`): the
//! drafter runs here on the edge, each round's chunk goes over TCP (through the shaping proxy
//! when configured) and the worker verifies it against the KV cache it keeps for the
//! generation (`crate::cloud_verifier`). The verifier-only baseline of each prompt is decoded by
//! the same worker over the same link and streamed back, so `speed-up` compares like with like.
//! Latency is measured, and split into drafting, codec, network + queueing and the worker's
//! compute.

use std::time::Instant;

use serde_json::json;

use crate::cloud_verifier::{self, CloudError, RemoteVerifier};
use crate::link::InputCodec;
use crate::net::{CloudClient, OnFailure, RealLink, RealLinkSpec};
use crate::paradigm::{CaseContext, CaseSpec};
use crate::records::{CaseOutput, Records};
use crate::speculative::{
    case_prompts, compare_greedy, drafting, empty_record, end, load_lm, speculative_with,
    with_usage, AutoPlanner, Generation, Schedule, SpeculativeRecord, Verification,
};
use crate::wire::SetupHeader;

/// The verifier-only generation of one prompt in the worker, streamed; also returns the
/// verifier's top-2 logit margin at each position.
fn baseline(
    client: &mut CloudClient,
    prompt: &[u32],
    gen: &Generation,
    index: usize,
) -> Result<(SpeculativeRecord, Vec<f32>), CloudError> {
    // The same stream `autoregressive` seeds for this prompt.
    let seed = gen.params.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let s = cloud_verifier::generate(
        client,
        seed,
        &gen.params,
        gen.max_new_tokens,
        gen.stop_at_eos,
        prompt,
    )?;
    let mut rec = empty_record(index, "verifier-only", prompt.len());
    for (i, t) in s.tokens.iter().enumerate() {
        rec.output_tokens.push(t.token);
        rec.token_times_s.push(t.arrival_s);
        rec.verify_s += t.compute_s;
        if i > 0 {
            rec.verify_step_calls += 1;
            rec.verify_step_s += t.compute_s;
        }
    }
    rec.verifier_calls = rec.output_tokens.len();
    rec.uplink_bytes = s.up_bytes;
    rec.downlink_bytes = s.down_bytes;
    rec.codec_s = s.codec_s;
    let rec = end(rec);
    // Streaming overlaps the link with compute: what is not compute or coding is the link.
    let link_s = (rec.e2e_s - rec.verify_s - rec.codec_s).max(0.0);
    let margins = s.tokens.iter().map(|t| t.margin).collect();
    Ok((SpeculativeRecord { link_s, ..rec }, margins))
}

fn fail_or<T>(
    r: Result<T, CloudError>,
    policy: OnFailure,
    what: &str,
) -> anyhow::Result<Option<T>> {
    match (r, policy) {
        (Ok(x), _) => Ok(Some(x)),
        (Err(CloudError::Miss(_)), OnFailure::Fallback) => Ok(None),
        (Err(CloudError::Miss(m)), OnFailure::Fail) => {
            anyhow::bail!("{what}: {m} (the link's on_cloud_failure is `fail`)")
        }
        (Err(CloudError::Fatal(e)), _) => Err(e.context(what.to_string())),
    }
}

/// Runs a speculative-decoding case whose verifier is in a worker.
pub fn run(
    case: &CaseSpec,
    ctx: &CaseContext,
    gen: Generation,
    spec: RealLinkSpec,
) -> anyhow::Result<CaseOutput> {
    let drafter = load_lm(ctx.registry, case, "drafter")?;
    let vm = case.require("verifier")?;
    let (texts, warmup) = case_prompts(case, ctx)?;
    let n = texts.len();
    let policy = spec.on_failure;
    let header = SetupHeader {
        module_type: "verifier".into(),
        name: vm.name.clone(),
        hyperparameters: vm.hyperparameters.clone(),
        input_shape: (1, 1, 1),
        num_classes: 0,
        seed: case.seed,
        codec: InputCodec::F32,
        train_len: 0,
        dim: 0,
    };
    ctx.progress
        .set_message("cloud worker: connecting; it loads the verifier");
    let mut real = RealLink::open(spec, header.encode(None), ctx.cache)?;
    let ready = real.client.ready.clone();
    let eog: Vec<u32> = ready["eog_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    if let Some(d) = &drafter {
        let (fp, size) = (
            ready["vocab_fingerprint"].as_str().unwrap_or(""),
            ready["vocab_size"].as_u64().unwrap_or(0) as usize,
        );
        if fp != d.vocab_fingerprint().to_string() || size != d.vocab_size() {
            anyhow::bail!("the drafter ({}, vocabulary {}) and the worker's verifier ({}, vocabulary {size}) do not share a tokenizer; speculative decoding needs identical vocabularies", d.describe(), d.vocab_size(), ready["model"].as_str().unwrap_or("?"));
        }
    }
    // Prompts are tokenized by the worker (the verifier's tokenizer), before the clock starts.
    let prompts: Vec<Vec<u32>> = texts
        .iter()
        .map(|p| cloud_verifier::encode(&mut real.client, p))
        .collect::<anyhow::Result<_>>()?;
    ctx.progress.set_length(n as u64);
    ctx.progress.set_position(0);
    ctx.progress.set_message("decoding over the link");
    real.client.counters = Default::default();
    real.start_clock();
    let mut baseline_misses = 0usize;
    let mut records = Vec::with_capacity(n);
    match &drafter {
        None => {
            for (i, ids) in prompts.iter().enumerate() {
                ctx.work().check_cancelled()?;
                // Nothing on the edge to fall back to: a miss fails the case either way.
                let (mut r, _) = baseline(&mut real.client, ids, &gen, i).map_err(|e| {
                    anyhow::anyhow!("prompt {i}: verifier-only decoding in the worker: {e} (a verifier-only case has no drafter to fall back to)")
                })?;
                r.warmup = i < warmup;
                r.baseline_e2e_s = Some(r.e2e_s);
                r.baseline_tokens = Some(r.output_tokens.len());
                r.baseline_step_s =
                    (r.verify_step_calls > 0).then(|| r.verify_step_s / r.verify_step_calls as f64);
                if gen.params.is_greedy() {
                    r.lossless = Some(true);
                }
                records.push(r);
                ctx.progress.inc(1);
            }
        }
        Some(d) => {
            let (gamma, schedule, rule) = drafting(case)?;
            let greedy = gen.params.is_greedy() || rule == Verification::Greedy;
            // `auto`: one planner for the whole case (calibrated on its first prompt, the
            // verifier's table timed in the worker).
            let mut planner = match schedule {
                Schedule::Auto { max } => Some(AutoPlanner::new(max)),
                _ => None,
            };
            for (i, ids) in prompts.iter().enumerate() {
                ctx.work().check_cancelled()?;
                let what = format!("prompt {i}: verifier-only baseline in the worker");
                let mut run_spec = |client: &mut CloudClient| {
                    with_usage(|| {
                        let mut cloud = RemoteVerifier::new(client, gen.params, greedy);
                        speculative_with(
                            d.as_ref(),
                            &mut cloud,
                            &eog,
                            ids,
                            &gen,
                            gamma,
                            schedule,
                            rule,
                            policy,
                            i,
                            planner.as_mut(),
                        )
                    })
                };
                // Paired, alternating order, as in-process.
                let (mut r, base) = if i % 2 == 0 {
                    let b = fail_or(baseline(&mut real.client, ids, &gen, i), policy, &what)?;
                    (run_spec(&mut real.client)?, b)
                } else {
                    let r = run_spec(&mut real.client)?;
                    let b = fail_or(baseline(&mut real.client, ids, &gen, i), policy, &what)?;
                    (r, b)
                };
                r.warmup = i < warmup;
                match &base {
                    Some((b, margins)) => {
                        r.paired = true;
                        r.baseline_e2e_s = Some(b.e2e_s);
                        r.baseline_tokens = Some(b.output_tokens.len());
                        r.baseline_step_s = (b.verify_step_calls > 0)
                            .then(|| b.verify_step_s / b.verify_step_calls as f64);
                        if gen.params.is_greedy() {
                            compare_greedy(&mut r, &b.output_tokens, margins);
                        }
                    }
                    None => {
                        baseline_misses += 1;
                        if gen.params.is_greedy() && r.fallback_tokens > 0 {
                            r.lossless = Some(false);
                        }
                    }
                }
                records.push(r);
                ctx.progress.inc(1);
            }
        }
    }
    // Text, off the clock: the worker's tokenizer, or the drafter's (the same vocabulary) when
    // the worker is gone.
    for r in &mut records {
        r.text = match cloud_verifier::decode(&mut real.client, &r.output_tokens) {
            Ok(t) => t,
            Err(e) => match &drafter {
                Some(d) => d.decode(&r.output_tokens)?,
                None => return Err(e),
            },
        };
    }
    let t = Instant::now();
    let worker_stats = real.client.stats();
    let stats_s = t.elapsed().as_secs_f64();
    let mut out = CaseOutput::new(Records::Speculative(records));
    let m = &mut out.measurements;
    let c = &real.client.counters;
    m.insert("reconnects".into(), c.reconnects as f64);
    m.insert("deadline_misses".into(), c.deadline_misses as f64);
    m.insert("connection_failures".into(), c.connection_failures as f64);
    m.insert("baseline_misses".into(), baseline_misses as f64);
    if let Some(w) = ready["weight_bytes"].as_f64() {
        m.insert("verifier_weight_bytes".into(), w);
    }
    if let Some(d) = &drafter {
        m.insert("drafter_weight_bytes".into(), d.weight_bytes() as f64);
    }
    let info = json!({
        "spec": real.spec,
        "worker": real.worker_addr.to_string(),
        "spawned_pid": real.worker.as_ref().map(|w| w.pid()),
        "via_proxy": real.proxy.as_ref().map(|p| p.addr.to_string()),
        "ready": ready,
        "counters": real.client.counters,
        "worker_stats": worker_stats,
        "worker_stats_query_s": stats_s,
        "proxy": real.proxy.as_ref().map(|p| p.counters()),
    });
    out.artifacts
        .push(("real_link.json".into(), serde_json::to_vec_pretty(&info)?));
    Ok(out)
}
