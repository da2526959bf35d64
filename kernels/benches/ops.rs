//! Speed of the host pass's f32 operations (`ianvs_kernels::ops`) against the scalar code they
//! replaced, on SmolLM2-135M's shapes (hidden 576, intermediate 1536, 9 query heads over 3
//! key/value heads of 64, after a 32-token context): a whole pass's worth of each operation
//! (30 layers) for 1 and 9 rows, per kernel set.
//!
//! Run: `cargo bench -p ianvs-kernels --bench ops` (`IANVS_OPS_BENCH_REPS`, default 200). The
//! variants are timed in turn within each repetition and the best repetition is printed, so a
//! busy moment hits all of them alike and other work only ever adds time. Compare rows of one
//! run.

use std::hint::black_box;
use std::time::Instant;

use ianvs_kernels::ops::{self, AttnShape};
use ianvs_kernels::Isa;

const LAYERS: usize = 30;
const HIDDEN: usize = 576;
const INTER: usize = 1536;
const CONTEXT: usize = 32;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// The scalar code before `ops` (model.rs / weights.rs at b382243), for the comparison.
mod scalar {
    use super::AttnShape;

    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (src, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / d as f32 + eps).sqrt();
            for ((o, &s), &a) in dst.iter_mut().zip(src).zip(w) {
                *o = s / m * a;
            }
        }
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        let mut tail = 0f32;
        for (x, y) in ra.iter().zip(rb) {
            tail += x * y;
        }
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    }

    pub fn attend_group(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        s: AttnShape,
        g: usize,
        out: &mut [f32],
        scores: &mut Vec<f32>,
    ) {
        let AttnShape {
            n,
            start,
            heads,
            kv_heads,
            hd,
        } = s;
        let rep = heads / kv_heads;
        let total = start + n;
        let scale = 1.0 / (hd as f32).sqrt();
        let kv_row = |pos: usize| (pos * kv_heads + g) * hd;
        let first_row = |pos: usize| pos.saturating_sub(start);
        scores.clear();
        scores.resize(rep * n * total + rep * n, 0.0);
        let (scores, inv) = scores.split_at_mut(rep * n * total);
        let at = |r: usize, i: usize| (r * n + i) * total;
        for pos in 0..total {
            let key = &k[kv_row(pos)..][..hd];
            for r in 0..rep {
                let h = g * rep + r;
                for i in first_row(pos)..n {
                    let qi = &q[(i * heads + h) * hd..][..hd];
                    scores[at(r, i) + pos] = dot(qi, key) * scale;
                }
            }
        }
        for r in 0..rep {
            for i in 0..n {
                let row = &mut scores[at(r, i)..][..start + i + 1];
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &sc| m.max(sc));
                let mut sum = 0f32;
                for sc in row.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                inv[r * n + i] = 1.0 / sum;
                out[(i * heads + g * rep + r) * hd..][..hd].fill(0.0);
            }
        }
        for pos in 0..total {
            let val = &v[kv_row(pos)..][..hd];
            for r in 0..rep {
                let h = g * rep + r;
                for i in first_row(pos)..n {
                    let w = scores[at(r, i) + pos];
                    let o = &mut out[(i * heads + h) * hd..][..hd];
                    for (acc, &x) in o.iter_mut().zip(val) {
                        *acc += w * x;
                    }
                }
            }
        }
        for r in 0..rep {
            for i in 0..n {
                let f = inv[r * n + i];
                for acc in &mut out[(i * heads + g * rep + r) * hd..][..hd] {
                    *acc *= f;
                }
            }
        }
    }
}

/// A variant: `None` is the scalar code, `Some(isa)` the `ops` kernel set.
type Variant = Option<Isa>;

fn name(v: Variant) -> &'static str {
    v.map_or("scalar (before)", Isa::name)
}

fn main() {
    let reps: usize = std::env::var("IANVS_OPS_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut variants: Vec<Variant> = vec![None];
    variants.extend(Isa::available_all().into_iter().map(Some));
    let (heads, kv_heads, hd) = (9, 3, 64);
    println!("best of {reps} repetitions, µs per pass (x{LAYERS} layers), variants alternating");
    println!(
        "| op | rows | {} |",
        variants
            .iter()
            .map(|&v| name(v))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(variants.len()));
    for n in [1usize, 9] {
        let gate = random(n * INTER, 1);
        let up = random(n * INTER, 2);
        let x = random(n * HIDDEN, 3);
        let w = random(HIDDEN, 4);
        let s = AttnShape {
            n,
            start: CONTEXT,
            heads,
            kv_heads,
            hd,
        };
        let q = random(n * heads * hd, 5);
        let k = random((CONTEXT + n) * kv_heads * hd, 6);
        let v = random((CONTEXT + n) * kv_heads * hd, 7);
        let mut best = vec![[f64::INFINITY; 3]; variants.len()];
        let mut g = gate.clone();
        let mut out = vec![0f32; n * HIDDEN];
        let mut att = vec![0f32; n * heads * hd];
        let mut scratch = Vec::new();
        for _ in 0..reps {
            for (vi, &var) in variants.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..LAYERS {
                    g.copy_from_slice(&gate);
                    match var {
                        None => scalar::silu_mul(&mut g, &up),
                        Some(isa) => ops::silu_mul(isa, &mut g, &up),
                    }
                    black_box(&g);
                }
                best[vi][0] = best[vi][0].min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                for _ in 0..2 * LAYERS + 1 {
                    match var {
                        None => scalar::rms_norm(&x, &w, 1e-5, &mut out),
                        Some(isa) => ops::rms_norm(isa, &x, &w, 1e-5, &mut out),
                    }
                    black_box(&out);
                }
                best[vi][1] = best[vi][1].min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                for _ in 0..LAYERS {
                    for g in 0..kv_heads {
                        match var {
                            None => scalar::attend_group(&q, &k, &v, s, g, &mut att, &mut scratch),
                            Some(isa) => {
                                ops::attend_group(isa, &q, &k, &v, s, g, &mut att, &mut scratch)
                            }
                        }
                    }
                    black_box(&att);
                }
                best[vi][2] = best[vi][2].min(t.elapsed().as_secs_f64());
            }
        }
        for (op, label) in ["silu·up", "rms-norm (61/pass)", "attention"]
            .iter()
            .enumerate()
        {
            let cells: Vec<String> = best.iter().map(|b| format!("{:.0}", b[op] * 1e6)).collect();
            println!("| {label} | {n} | {} |", cells.join(" | "));
        }
    }
}
