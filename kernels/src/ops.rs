//! The f32 operations of the host forward pass around the matmuls: SiLU(gate)·up, RMSNorm and
//! causal attention over a position-major KV cache, vectorized with runtime feature detection,
//! with the same bits on every kernel set.
//!
//! Why: on a 9-row verify pass of SmolLM2-135M these ran as scalar code that scaled linearly
//! with the rows (attention 2.2 ms, SiLU 1.2 ms, norms 0.4 ms of a 24 ms pass), as much as the
//! matmul savings a verify pass is meant to bring.
//!
//! How the bits stay fixed:
//! - every operation is written once, generic over [`Lanes`]: a vector of 16 f32 lanes, one
//!   512-bit register on AVX-512, two 256-bit registers on AVX2, an array on the portable path;
//! - each lane operation is one IEEE operation with one rounding, the same on every path
//!   (multiply-adds are fused everywhere: `f32::mul_add` on the portable path; `max` is
//!   `a > b ? a : b` as `maxps` computes it), and lanes never interact except in reductions,
//!   which all use one tree (lane `l` plus lane `l + 8`, then `+ 4`, `+ 2`, `+ 1`);
//! - a sum over a vector's elements puts element `j` in lane `j % 16` (a fixed layout, not one
//!   that depends on the thread split or on how many rows are processed together); a short last
//!   chunk is padded with the operation's neutral value (0 for sums, -inf for the max);
//! - `exp` is ggml's `ggml_v_expf` (from ARM's optimized-routines, max error about 1.5 ulp),
//!   evaluated with the same sequence of operations on every path (its AVX2 form, with the
//!   exponent built in integer lanes).
//!
//! So each output row of RMSNorm, each element of SiLU·up and each (query row, head) of
//! attention is computed by the same instructions whatever the chunk length, thread count or
//! kernel set: a γ+1-token verify chunk gets the bits of the same tokens fed one by one.

use crate::Isa;

/// Lanes per vector: every path computes in vectors of 16 f32, whatever its register width.
const W: usize = 16;

/// A 16-lane f32 vector and the lane operations the generic code uses.
///
/// # Safety
/// Every method may only be called on a CPU with the implementation's features (the entry
/// points check [`Isa::available`]); pointers must be valid for the lanes read or written.
trait Lanes {
    type V: Copy;
    type M: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn splat_bits(x: u32) -> Self::V;
    /// 16 values from `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// `len < 16` values from `p`, the other lanes `fill`.
    unsafe fn load_part(p: *const f32, len: usize, fill: f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `len < 16` lanes to `p`.
    unsafe fn store_part(p: *mut f32, len: usize, v: Self::V);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, rounded once.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c − a · b`, rounded once.
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a > b ? a : b` per lane (`maxps`: the second operand when either is NaN or both zero).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    /// The bits of each lane shifted left by 23 (as u32).
    unsafe fn shl23(a: Self::V) -> Self::V;
    /// Lane bits added / subtracted as u32, wrapping.
    unsafe fn add_u(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub_u(a: Self::V, b: Self::V) -> Self::V;
    /// `a > b` per lane (false when either is NaN).
    unsafe fn gt(a: Self::V, b: Self::V) -> Self::M;
    /// `a <= b` per lane (false when either is NaN).
    unsafe fn le(a: Self::V, b: Self::V) -> Self::M;
    unsafe fn any(m: Self::M) -> bool;
    /// `m ? a : b` per lane.
    unsafe fn select(m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    /// The lanes summed by the fixed tree: `l + (l + 8)`, then `+ 4`, `+ 2`, `+ 1`.
    unsafe fn reduce_add(v: Self::V) -> f32;
    /// The lanes' [`Lanes::max`] by the same tree, the lower lane first.
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// [`Lanes::reduce_add`] of four vectors at once (the same tree for each, so the same
    /// bits), sharing the shuffles.
    #[inline(always)]
    unsafe fn reduce_add4(a: Self::V, b: Self::V, c: Self::V, d: Self::V) -> [f32; 4] {
        [
            Self::reduce_add(a),
            Self::reduce_add(b),
            Self::reduce_add(c),
            Self::reduce_add(d),
        ]
    }
}

// `ggml_v_expf` constants (hex floats in ggml: 0x1.8p23, 0x1.715476p+0, ...).
const ROUND: u32 = 0x4b40_0000; // 1.5 · 2^23
const LOG2E: u32 = 0x3fb8_aa3b;
const LN2_HI: u32 = 0x3f31_7200;
const LN2_LO: u32 = 0x35bf_be8e;
const P0: u32 = 0x3c07_2010;
const P1: u32 = 0x3d2b_9f17;
const P2: u32 = 0x3e2a_af33;
const P3: u32 = 0x3eff_fedb;
const P4: u32 = 0x3f7f_fff6;

/// `e^x` per lane: ggml's `ggml_v_expf` (AVX2 form). `x = n·ln2 + b` with `n` rounded to an
/// integer, `e^b − 1` by a degree-5 polynomial, `2^n` built in the exponent bits; lanes with
/// `|n| > 126` take a slower scaling that reaches the subnormals, 0 and infinity.
#[inline(always)]
unsafe fn exp<L: Lanes>(x: L::V) -> L::V {
    let c = |bits: u32| L::splat(f32::from_bits(bits));
    let r = c(ROUND);
    let z = L::fma(x, c(LOG2E), r);
    let n = L::sub(z, r);
    let b = L::fnma(n, c(LN2_LO), L::fnma(n, c(LN2_HI), x));
    let e = L::shl23(z);
    let k = L::add_u(e, L::splat(1.0));
    let big = L::gt(L::abs(n), L::splat(126.0));
    let u = L::mul(b, b);
    let j = L::fma(
        L::fma(L::fma(c(P0), b, c(P1)), u, L::fma(c(P2), b, c(P3))),
        u,
        L::mul(c(P4), b),
    );
    let fast = L::fma(j, k, k);
    if !L::any(big) {
        return fast;
    }
    let g = L::select(
        L::le(n, L::splat(0.0)),
        L::splat_bits(0x8200_0000),
        L::splat_bits(0),
    );
    let s1 = L::add_u(g, L::splat_bits(0x7f00_0000));
    let s2 = L::sub_u(e, g);
    let huge = L::gt(L::abs(n), L::splat(192.0));
    L::select(
        huge,
        L::mul(s1, s1),
        L::select(big, L::mul(L::fma(s2, j, s2), s1), fast),
    )
}

/// `silu(x) · y = x / (1 + e^(0 − x)) · y`, as ggml's `ggml_v_silu` then a multiply.
#[inline(always)]
unsafe fn silu_mul_v<L: Lanes>(x: L::V, y: L::V) -> L::V {
    let e = exp::<L>(L::sub(L::splat(0.0), x));
    L::mul(L::div(x, L::add(L::splat(1.0), e)), y)
}

#[inline(always)]
unsafe fn silu_mul_g<L: Lanes>(gate: &mut [f32], up: &[f32]) {
    let len = gate.len();
    let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
    let full = len / W * W;
    let mut at = 0;
    while at < full {
        let v = silu_mul_v::<L>(L::load(g.add(at)), L::load(u.add(at)));
        L::store(g.add(at), v);
        at += W;
    }
    if at < len {
        let rest = len - at;
        let v = silu_mul_v::<L>(
            L::load_part(g.add(at), rest, 0.0),
            L::load_part(u.add(at), rest, 0.0),
        );
        L::store_part(g.add(at), rest, v);
    }
}

#[inline(always)]
unsafe fn exp_g<L: Lanes>(x: &mut [f32]) {
    let len = x.len();
    let p = x.as_mut_ptr();
    let mut at = 0;
    while at + W <= len {
        L::store(p.add(at), exp::<L>(L::load(p.add(at))));
        at += W;
    }
    if at < len {
        let rest = len - at;
        L::store_part(
            p.add(at),
            rest,
            exp::<L>(L::load_part(p.add(at), rest, 0.0)),
        );
    }
}

/// `Σ a[j]·b[j]` over `len` values, element `j` fused into lane `j % 16` in order, then the
/// lanes summed by the fixed tree.
#[inline(always)]
unsafe fn dot_g<L: Lanes>(a: *const f32, b: *const f32, len: usize) -> f32 {
    let mut acc = L::splat(0.0);
    let mut at = 0;
    while at + W <= len {
        acc = L::fma(L::load(a.add(at)), L::load(b.add(at)), acc);
        at += W;
    }
    if at < len {
        let rest = len - at;
        acc = L::fma(
            L::load_part(a.add(at), rest, 0.0),
            L::load_part(b.add(at), rest, 0.0),
            acc,
        );
    }
    L::reduce_add(acc)
}

#[inline(always)]
unsafe fn rms_norm_g<L: Lanes>(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    let w = weight.as_ptr();
    for (src, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (s, o) = (src.as_ptr(), dst.as_mut_ptr());
        let sum2 = dot_g::<L>(s, s, d);
        let m = L::splat((sum2 / d as f32 + eps).sqrt());
        // `x / m · w` per element, as candle's `rms_norm`.
        let mut at = 0;
        while at + W <= d {
            let y = L::mul(L::div(L::load(s.add(at)), m), L::load(w.add(at)));
            L::store(o.add(at), y);
            at += W;
        }
        if at < d {
            let rest = d - at;
            let y = L::mul(
                L::div(L::load_part(s.add(at), rest, 0.0), m),
                L::load_part(w.add(at), rest, 0.0),
            );
            L::store_part(o.add(at), rest, y);
        }
    }
}

/// `row[pos] = (q · k[pos]) · scale` for the keys at `k + pos · stride`: four keys at a time
/// sharing the loads of `q` and the reduction shuffles, each score the [`dot_g`] of its key.
#[inline(always)]
unsafe fn scores_g<L: Lanes>(
    q: *const f32,
    k: *const f32,
    stride: usize,
    hd: usize,
    scale: f32,
    row: &mut [f32],
) {
    let len = row.len();
    let full = hd / W * W;
    let rest = hd - full;
    let mut pos = 0;
    while pos + 4 <= len {
        let kp = k.add(pos * stride);
        let (k1, k2, k3) = (kp.add(stride), kp.add(2 * stride), kp.add(3 * stride));
        let mut acc = [L::splat(0.0); 4];
        let mut at = 0;
        while at < full {
            let qv = L::load(q.add(at));
            acc[0] = L::fma(qv, L::load(kp.add(at)), acc[0]);
            acc[1] = L::fma(qv, L::load(k1.add(at)), acc[1]);
            acc[2] = L::fma(qv, L::load(k2.add(at)), acc[2]);
            acc[3] = L::fma(qv, L::load(k3.add(at)), acc[3]);
            at += W;
        }
        if rest > 0 {
            let qv = L::load_part(q.add(at), rest, 0.0);
            acc[0] = L::fma(qv, L::load_part(kp.add(at), rest, 0.0), acc[0]);
            acc[1] = L::fma(qv, L::load_part(k1.add(at), rest, 0.0), acc[1]);
            acc[2] = L::fma(qv, L::load_part(k2.add(at), rest, 0.0), acc[2]);
            acc[3] = L::fma(qv, L::load_part(k3.add(at), rest, 0.0), acc[3]);
        }
        let d = L::reduce_add4(acc[0], acc[1], acc[2], acc[3]);
        for (j, dj) in d.into_iter().enumerate() {
            row[pos + j] = dj * scale;
        }
        pos += 4;
    }
    while pos < len {
        row[pos] = dot_g::<L>(q, k.add(pos * stride), hd) * scale;
        pos += 1;
    }
}

/// Softmax weights of one score row in place (`e^(s − max)`, unnormalized); returns
/// `1 / Σ e^(s − max)`.
#[inline(always)]
unsafe fn softmax_g<L: Lanes>(row: &mut [f32]) -> f32 {
    let len = row.len();
    let p = row.as_mut_ptr();
    let rest = len % W;
    let full = len - rest;
    let mut m = L::splat(f32::NEG_INFINITY);
    let mut at = 0;
    while at < full {
        m = L::max(m, L::load(p.add(at)));
        at += W;
    }
    if rest > 0 {
        m = L::max(m, L::load_part(p.add(full), rest, f32::NEG_INFINITY));
    }
    let max = L::splat(L::reduce_max(m));
    let mut sum = L::splat(0.0);
    at = 0;
    while at < full {
        let e = exp::<L>(L::sub(L::load(p.add(at)), max));
        L::store(p.add(at), e);
        sum = L::add(sum, e);
        at += W;
    }
    if rest > 0 {
        // Padding lanes: e^(-inf) = 0, which leaves the sum as it is.
        let e = exp::<L>(L::sub(
            L::load_part(p.add(full), rest, f32::NEG_INFINITY),
            max,
        ));
        L::store_part(p.add(full), rest, e);
        sum = L::add(sum, e);
    }
    1.0 / L::reduce_add(sum)
}

/// `out[c] = inv · Σ_pos w[pos] · v[pos·stride + c]` for the `NC · 16` columns at `v`, the
/// positions fused in order into accumulators held in registers.
#[inline(always)]
unsafe fn weighted_cols<L: Lanes, const NC: usize>(
    w: &[f32],
    v: *const f32,
    stride: usize,
    inv: f32,
    out: *mut f32,
) {
    let mut acc = [L::splat(0.0); NC];
    for (pos, &wp) in w.iter().enumerate() {
        let wv = L::splat(wp);
        let vp = v.add(pos * stride);
        for (c, a) in acc.iter_mut().enumerate() {
            *a = L::fma(wv, L::load(vp.add(c * W)), *a);
        }
    }
    let f = L::splat(inv);
    for (c, a) in acc.iter().enumerate() {
        L::store(out.add(c * W), L::mul(*a, f));
    }
}

/// [`weighted_cols`] for `hd` columns: blocks of up to 8 full vectors, then a short last one.
/// Each column's sequence of operations is the same whichever block it falls in.
#[inline(always)]
unsafe fn weighted_sum<L: Lanes>(
    w: &[f32],
    v: *const f32,
    stride: usize,
    hd: usize,
    inv: f32,
    out: *mut f32,
) {
    let mut at = 0;
    while at + W <= hd {
        let nc = ((hd - at) / W).min(8);
        let (vb, ob) = (v.add(at), out.add(at));
        match nc {
            1 => weighted_cols::<L, 1>(w, vb, stride, inv, ob),
            2 => weighted_cols::<L, 2>(w, vb, stride, inv, ob),
            3 => weighted_cols::<L, 3>(w, vb, stride, inv, ob),
            4 => weighted_cols::<L, 4>(w, vb, stride, inv, ob),
            5 => weighted_cols::<L, 5>(w, vb, stride, inv, ob),
            6 => weighted_cols::<L, 6>(w, vb, stride, inv, ob),
            7 => weighted_cols::<L, 7>(w, vb, stride, inv, ob),
            _ => weighted_cols::<L, 8>(w, vb, stride, inv, ob),
        }
        at += nc * W;
    }
    if at < hd {
        let rest = hd - at;
        let mut acc = L::splat(0.0);
        for (pos, &wp) in w.iter().enumerate() {
            let vp = v.add(pos * stride + at);
            acc = L::fma(L::splat(wp), L::load_part(vp, rest, 0.0), acc);
        }
        L::store_part(out.add(at), rest, L::mul(acc, L::splat(inv)));
    }
}

/// Shape of a causal attention call: `n` new query rows after `start` cached positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// New query rows.
    pub n: usize,
    /// Cached positions before them.
    pub start: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple of it).
    pub kv_heads: usize,
    /// Values per head.
    pub hd: usize,
}

impl AttnShape {
    /// Panics with the mismatch when the slices do not have this shape.
    fn check(&self, q: &[f32], k: &[f32], v: &[f32], out: &[f32], g: usize) {
        let s = self;
        assert!(
            s.hd > 0 && s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads) && g < s.kv_heads,
            "attention: {} heads over {} key/value heads (group {g}) of {} values",
            s.heads,
            s.kv_heads,
            s.hd
        );
        let (rows, kv) = (s.n * s.heads * s.hd, (s.start + s.n) * s.kv_heads * s.hd);
        assert!(
            q.len() == rows && out.len() == rows && k.len() >= kv && v.len() >= kv,
            "attention: q {} / out {} values for {rows}, k {} / v {} for {kv}",
            q.len(),
            out.len(),
            k.len(),
            v.len()
        );
    }
}

#[inline(always)]
unsafe fn attend_group_g<L: Lanes>(
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
    let stride = kv_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    scores.clear();
    scores.resize(start + n, 0.0);
    let (kg, vg) = (k.as_ptr().add(g * hd), v.as_ptr().add(g * hd));
    for r in 0..rep {
        let h = g * rep + r;
        for i in 0..n {
            let row = &mut scores[..start + i + 1];
            let qi = q.as_ptr().add((i * heads + h) * hd);
            scores_g::<L>(qi, kg, stride, hd, scale, row);
            let inv = softmax_g::<L>(row);
            let o = out.as_mut_ptr().add((i * heads + h) * hd);
            weighted_sum::<L>(row, vg, stride, hd, inv, o);
        }
    }
}

/// The portable path: arrays, one scalar operation per lane.
#[derive(Clone, Copy)]
struct Portable;

impl Portable {
    #[inline(always)]
    fn map(a: [f32; W], b: [f32; W], f: impl Fn(f32, f32) -> f32) -> [f32; W] {
        std::array::from_fn(|l| f(a[l], b[l]))
    }

    #[inline(always)]
    fn map_bits(a: [f32; W], b: [f32; W], f: impl Fn(u32, u32) -> u32) -> [f32; W] {
        std::array::from_fn(|l| f32::from_bits(f(a[l].to_bits(), b[l].to_bits())))
    }

    #[inline(always)]
    fn tree(mut a: [f32; W], f: impl Fn(f32, f32) -> f32) -> f32 {
        for step in [8, 4, 2, 1] {
            for l in 0..step {
                a[l] = f(a[l], a[l + step]);
            }
        }
        a[0]
    }
}

fn max_lane(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

impl Lanes for Portable {
    type V = [f32; W];
    type M = [bool; W];

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; W]
    }
    #[inline(always)]
    unsafe fn splat_bits(x: u32) -> Self::V {
        [f32::from_bits(x); W]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        p.cast::<[f32; W]>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn load_part(p: *const f32, len: usize, fill: f32) -> Self::V {
        let mut v = [fill; W];
        std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len);
        v
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        p.cast::<[f32; W]>().write_unaligned(v)
    }
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, len: usize, v: Self::V) {
        std::ptr::copy_nonoverlapping(v.as_ptr(), p, len);
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        Self::map(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        Self::map(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        Self::map(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        Self::map(a, b, |x, y| x / y)
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| (-a[l]).mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        Self::map(a, b, max_lane)
    }
    #[inline(always)]
    unsafe fn abs(a: Self::V) -> Self::V {
        a.map(|x| f32::from_bits(x.to_bits() & 0x7fff_ffff))
    }
    #[inline(always)]
    unsafe fn shl23(a: Self::V) -> Self::V {
        a.map(|x| f32::from_bits(x.to_bits() << 23))
    }
    #[inline(always)]
    unsafe fn add_u(a: Self::V, b: Self::V) -> Self::V {
        Self::map_bits(a, b, u32::wrapping_add)
    }
    #[inline(always)]
    unsafe fn sub_u(a: Self::V, b: Self::V) -> Self::V {
        Self::map_bits(a, b, u32::wrapping_sub)
    }
    #[inline(always)]
    unsafe fn gt(a: Self::V, b: Self::V) -> Self::M {
        std::array::from_fn(|l| a[l] > b[l])
    }
    #[inline(always)]
    unsafe fn le(a: Self::V, b: Self::V) -> Self::M {
        std::array::from_fn(|l| a[l] <= b[l])
    }
    #[inline(always)]
    unsafe fn any(m: Self::M) -> bool {
        m.contains(&true)
    }
    #[inline(always)]
    unsafe fn select(m: Self::M, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|l| if m[l] { a[l] } else { b[l] })
    }
    #[inline(always)]
    unsafe fn reduce_add(v: Self::V) -> f32 {
        Self::tree(v, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: Self::V) -> f32 {
        Self::tree(v, max_lane)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, W};
    use std::arch::x86_64::*;

    /// AVX2 + FMA: lanes 0–7 and 8–15 in two registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2;

    #[derive(Clone, Copy)]
    pub(super) struct Pair(__m256, __m256);

    /// Lanes `l` and `l + 4`, `+ 2`, `+ 1` of 8 summed (the tail of the 16-lane tree).
    #[inline(always)]
    unsafe fn tree8(s8: __m256, f: impl Fn(__m128, __m128) -> __m128) -> f32 {
        let s4 = f(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = f(s4, _mm_movehl_ps(s4, s4));
        let s1 = f(s2, _mm_shuffle_ps::<0b01>(s2, s2));
        _mm_cvtss_f32(s1)
    }

    /// Lane masks for the first `len` of 16 lanes.
    #[inline(always)]
    unsafe fn part_masks(len: usize) -> (__m256i, __m256i) {
        let n = _mm256_set1_epi32(len as i32);
        (
            _mm256_cmpgt_epi32(n, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            _mm256_cmpgt_epi32(n, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15)),
        )
    }

    macro_rules! pair {
        ($a:expr, $b:expr, $f:ident) => {
            Pair($f($a.0, $b.0), $f($a.1, $b.1))
        };
    }

    impl Lanes for Avx2 {
        type V = Pair;
        type M = Pair;

        #[inline(always)]
        unsafe fn splat(x: f32) -> Pair {
            let v = _mm256_set1_ps(x);
            Pair(v, v)
        }
        #[inline(always)]
        unsafe fn splat_bits(x: u32) -> Pair {
            let v = _mm256_castsi256_ps(_mm256_set1_epi32(x as i32));
            Pair(v, v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Pair {
            Pair(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize, fill: f32) -> Pair {
            let (m0, m1) = part_masks(len);
            let f = _mm256_set1_ps(fill);
            let lo = _mm256_blendv_ps(f, _mm256_maskload_ps(p, m0), _mm256_castsi256_ps(m0));
            let hi = if len > 8 {
                _mm256_blendv_ps(f, _mm256_maskload_ps(p.add(8), m1), _mm256_castsi256_ps(m1))
            } else {
                f
            };
            Pair(lo, hi)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Pair) {
            _mm256_storeu_ps(p, v.0);
            _mm256_storeu_ps(p.add(8), v.1);
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, len: usize, v: Pair) {
            let (m0, m1) = part_masks(len);
            _mm256_maskstore_ps(p, m0, v.0);
            if len > 8 {
                _mm256_maskstore_ps(p.add(8), m1, v.1);
            }
        }
        #[inline(always)]
        unsafe fn add(a: Pair, b: Pair) -> Pair {
            pair!(a, b, _mm256_add_ps)
        }
        #[inline(always)]
        unsafe fn sub(a: Pair, b: Pair) -> Pair {
            pair!(a, b, _mm256_sub_ps)
        }
        #[inline(always)]
        unsafe fn mul(a: Pair, b: Pair) -> Pair {
            pair!(a, b, _mm256_mul_ps)
        }
        #[inline(always)]
        unsafe fn div(a: Pair, b: Pair) -> Pair {
            pair!(a, b, _mm256_div_ps)
        }
        #[inline(always)]
        unsafe fn fma(a: Pair, b: Pair, c: Pair) -> Pair {
            Pair(
                _mm256_fmadd_ps(a.0, b.0, c.0),
                _mm256_fmadd_ps(a.1, b.1, c.1),
            )
        }
        #[inline(always)]
        unsafe fn fnma(a: Pair, b: Pair, c: Pair) -> Pair {
            Pair(
                _mm256_fnmadd_ps(a.0, b.0, c.0),
                _mm256_fnmadd_ps(a.1, b.1, c.1),
            )
        }
        #[inline(always)]
        unsafe fn max(a: Pair, b: Pair) -> Pair {
            pair!(a, b, _mm256_max_ps)
        }
        #[inline(always)]
        unsafe fn abs(a: Pair) -> Pair {
            let m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
            Pair(_mm256_and_ps(a.0, m), _mm256_and_ps(a.1, m))
        }
        #[inline(always)]
        unsafe fn shl23(a: Pair) -> Pair {
            let f =
                |x: __m256| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(x)));
            Pair(f(a.0), f(a.1))
        }
        #[inline(always)]
        unsafe fn add_u(a: Pair, b: Pair) -> Pair {
            let f = |x: __m256, y: __m256| {
                _mm256_castsi256_ps(_mm256_add_epi32(
                    _mm256_castps_si256(x),
                    _mm256_castps_si256(y),
                ))
            };
            Pair(f(a.0, b.0), f(a.1, b.1))
        }
        #[inline(always)]
        unsafe fn sub_u(a: Pair, b: Pair) -> Pair {
            let f = |x: __m256, y: __m256| {
                _mm256_castsi256_ps(_mm256_sub_epi32(
                    _mm256_castps_si256(x),
                    _mm256_castps_si256(y),
                ))
            };
            Pair(f(a.0, b.0), f(a.1, b.1))
        }
        #[inline(always)]
        unsafe fn gt(a: Pair, b: Pair) -> Pair {
            Pair(
                _mm256_cmp_ps::<_CMP_GT_OQ>(a.0, b.0),
                _mm256_cmp_ps::<_CMP_GT_OQ>(a.1, b.1),
            )
        }
        #[inline(always)]
        unsafe fn le(a: Pair, b: Pair) -> Pair {
            Pair(
                _mm256_cmp_ps::<_CMP_LE_OQ>(a.0, b.0),
                _mm256_cmp_ps::<_CMP_LE_OQ>(a.1, b.1),
            )
        }
        #[inline(always)]
        unsafe fn any(m: Pair) -> bool {
            _mm256_movemask_ps(_mm256_or_ps(m.0, m.1)) != 0
        }
        #[inline(always)]
        unsafe fn select(m: Pair, a: Pair, b: Pair) -> Pair {
            Pair(
                _mm256_blendv_ps(b.0, a.0, m.0),
                _mm256_blendv_ps(b.1, a.1, m.1),
            )
        }
        #[inline(always)]
        unsafe fn reduce_add(v: Pair) -> f32 {
            tree8(_mm256_add_ps(v.0, v.1), |a, b| _mm_add_ps(a, b))
        }
        #[inline(always)]
        unsafe fn reduce_max(v: Pair) -> f32 {
            tree8(_mm256_max_ps(v.0, v.1), |a, b| _mm_max_ps(a, b))
        }
        #[inline(always)]
        unsafe fn reduce_add4(a: Pair, b: Pair, c: Pair, d: Pair) -> [f32; 4] {
            // Lanes l + (l + 8) of each; then l + (l + 4) with two vectors per register.
            let (a, b) = (_mm256_add_ps(a.0, a.1), _mm256_add_ps(b.0, b.1));
            let (c, d) = (_mm256_add_ps(c.0, c.1), _mm256_add_ps(d.0, d.1));
            let ab = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            );
            let cd = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(c, d),
                _mm256_permute2f128_ps::<0x31>(c, d),
            );
            let ab = tail4(ab);
            let cd = tail4(cd);
            [
                _mm256_cvtss_f32(ab),
                _mm_cvtss_f32(_mm256_extractf128_ps::<1>(ab)),
                _mm256_cvtss_f32(cd),
                _mm_cvtss_f32(_mm256_extractf128_ps::<1>(cd)),
            ]
        }
    }

    /// Lane 0 of each 128-bit block: `(x0 + x2) + (x1 + x3)` of that block (the `+ 2`, `+ 1`
    /// steps of the tree).
    #[inline(always)]
    unsafe fn tail4(x: __m256) -> __m256 {
        let t = _mm256_add_ps(x, _mm256_permute_ps::<0x4e>(x));
        _mm256_add_ps(t, _mm256_permute_ps::<0xb1>(t))
    }

    /// [`tail4`] on four blocks.
    #[inline(always)]
    unsafe fn tail4_512(x: __m512) -> __m512 {
        let t = _mm512_add_ps(x, _mm512_permute_ps::<0x4e>(x));
        _mm512_add_ps(t, _mm512_permute_ps::<0xb1>(t))
    }

    /// AVX-512 F: one register.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512;

    #[inline(always)]
    unsafe fn halves(v: __m512) -> (__m256, __m256) {
        (
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        )
    }

    #[inline(always)]
    fn part_mask(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }

    impl Lanes for Avx512 {
        type V = __m512;
        type M = __mmask16;

        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn splat_bits(x: u32) -> __m512 {
            _mm512_castsi512_ps(_mm512_set1_epi32(x as i32))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, len: usize, fill: f32) -> __m512 {
            _mm512_mask_loadu_ps(_mm512_set1_ps(fill), part_mask(len), p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn store_part(p: *mut f32, len: usize, v: __m512) {
            _mm512_mask_storeu_ps(p, part_mask(len), v)
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            _mm512_div_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn abs(a: __m512) -> __m512 {
            _mm512_abs_ps(a)
        }
        #[inline(always)]
        unsafe fn shl23(a: __m512) -> __m512 {
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(a)))
        }
        #[inline(always)]
        unsafe fn add_u(a: __m512, b: __m512) -> __m512 {
            _mm512_castsi512_ps(_mm512_add_epi32(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        }
        #[inline(always)]
        unsafe fn sub_u(a: __m512, b: __m512) -> __m512 {
            _mm512_castsi512_ps(_mm512_sub_epi32(
                _mm512_castps_si512(a),
                _mm512_castps_si512(b),
            ))
        }
        #[inline(always)]
        unsafe fn gt(a: __m512, b: __m512) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b)
        }
        #[inline(always)]
        unsafe fn le(a: __m512, b: __m512) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_LE_OQ>(a, b)
        }
        #[inline(always)]
        unsafe fn any(m: __mmask16) -> bool {
            m != 0
        }
        #[inline(always)]
        unsafe fn select(m: __mmask16, a: __m512, b: __m512) -> __m512 {
            _mm512_mask_blend_ps(m, b, a)
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m512) -> f32 {
            let (lo, hi) = halves(v);
            tree8(_mm256_add_ps(lo, hi), |a, b| _mm_add_ps(a, b))
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            let (lo, hi) = halves(v);
            tree8(_mm256_max_ps(lo, hi), |a, b| _mm_max_ps(a, b))
        }
        #[inline(always)]
        unsafe fn reduce_add4(a: __m512, b: __m512, c: __m512, d: __m512) -> [f32; 4] {
            // Lanes l + (l + 8): [a, b] and [c, d] in one register each.
            let ab = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xee>(a, b),
            );
            let cd = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(c, d),
                _mm512_shuffle_f32x4::<0xee>(c, d),
            );
            // l + (l + 4): one 128-bit block per vector.
            let s = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(ab, cd),
                _mm512_shuffle_f32x4::<0xdd>(ab, cd),
            );
            let s = tail4_512(s);
            let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            let mut out = [0f32; 4];
            _mm_storeu_ps(
                out.as_mut_ptr(),
                _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, s)),
            );
            out
        }
    }

    const _: () = assert!(W == 16);

    /// One entry point per (operation, kernel set): the generic body compiled with the set's
    /// features.
    macro_rules! entries {
        ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $generic:ident;)*) => {
            pub(super) mod avx2 {
                use super::*;
                $(
                    #[target_feature(enable = "avx2,fma")]
                    pub(in super::super) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                        super::super::$generic::<Avx2>($($arg),*)
                    }
                )*
            }
            pub(super) mod avx512 {
                use super::*;
                $(
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    pub(in super::super) unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                        super::super::$generic::<Avx512>($($arg),*)
                    }
                )*
            }
        };
    }

    use super::AttnShape;
    entries! {
        silu_mul(gate: &mut [f32], up: &[f32]) = silu_mul_g;
        exp(x: &mut [f32]) = exp_g;
        dot(a: *const f32, b: *const f32, len: usize) -> f32 = dot_g;
        rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) = rms_norm_g;
        attend_group(
            q: &[f32], k: &[f32], v: &[f32], s: AttnShape, g: usize, out: &mut [f32],
            scores: &mut Vec<f32>
        ) = attend_group_g;
    }
}

/// Runs the generic body `$generic` on `isa`'s lanes (checked to be available).
macro_rules! dispatch {
    ($isa:expr, $name:ident, $generic:ident($($arg:expr),*)) => {{
        let isa = $isa;
        assert!(isa.available(), "this CPU cannot run the {isa:?} kernels");
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (checked above); the caller checked lengths.
            Isa::Avx512 => unsafe { x86::avx512::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::avx2::$name($($arg),*) },
            // SAFETY: plain Rust; the caller checked lengths.
            _ => unsafe { $generic::<Portable>($($arg),*) },
        }
    }};
}

/// `gate[j] = silu(gate[j]) · up[j]` (SwiGLU), element by element.
///
/// # Panics
/// When the lengths differ, or `isa` is not available on this CPU.
pub fn silu_mul(isa: Isa, gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: gate and up lengths differ");
    dispatch!(isa, silu_mul, silu_mul_g(gate, up))
}

/// `x[j] = e^x[j]` in place (the `exp` of SiLU and softmax; about 1.5 ulp).
///
/// # Panics
/// When `isa` is not available on this CPU.
pub fn exp_in_place(isa: Isa, x: &mut [f32]) {
    dispatch!(isa, exp, exp_g(x))
}

/// `Σ a[j]·b[j]`: element `j` fused into lane `j % 16` in order, lanes summed by a fixed tree.
///
/// # Panics
/// When the lengths differ, or `isa` is not available on this CPU.
pub fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    let (pa, pb, len) = (a.as_ptr(), b.as_ptr(), a.len());
    dispatch!(isa, dot, dot_g(pa, pb, len))
}

/// RMSNorm of each row of `x` (rows of `weight.len()` values) into `out`:
/// `x / sqrt(mean(x²) + eps) · weight`, the sum of squares as in [`dot`].
///
/// # Panics
/// When `weight` is empty, `x` is not whole rows, `out` has another length, or `isa` is not
/// available on this CPU.
pub fn rms_norm(isa: Isa, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && out.len() == x.len(),
        "rms_norm: {} values into {} are not rows of {d}",
        x.len(),
        out.len()
    );
    dispatch!(isa, rms_norm, rms_norm_g(x, weight, eps, out))
}

/// Causal attention of the heads of key/value group `g` for every new row: output rows
/// `[i][h]` of `out` (`[n][heads][hd]`) for the heads `h` that share key/value head `g`.
///
/// `q`: `[n][heads][hd]`; `k`, `v`: position-major caches `[pos][kv_heads][hd]` holding at
/// least `start + n` positions, row `i` attending to positions `0..=start + i`. Per (row,
/// head): scores `q·k / sqrt(hd)` in position order ([`dot`]), the max and the sum of
/// `e^(score − max)` over lanes `pos % 16`, then `Σ_pos weight · v` fused in position order and
/// scaled by `1 / sum`. Nothing depends on `n`, on the other rows or on the thread that runs
/// it. `scores`: scratch, reused.
///
/// # Panics
/// When the slices do not match `s`, or `isa` is not available on this CPU.
#[allow(clippy::too_many_arguments)]
pub fn attend_group(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    g: usize,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    s.check(q, k, v, out, g);
    dispatch!(
        isa,
        attend_group,
        attend_group_g(q, k, v, s, g, out, scores)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(len: usize, seed: &mut u64, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * amp
            })
            .collect()
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// Odd lengths around the vector width and the register blocks.
    const LENS: [usize; 12] = [1, 3, 8, 15, 16, 17, 31, 33, 64, 100, 129, 576];

    #[test]
    fn exp_is_accurate_and_the_same_on_every_isa() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let mut x = rand(4099, &mut seed, 90.0);
        // Edges: the range ends, subnormal results, overflow, zeros, infinities, NaN.
        x.extend([
            0.0,
            -0.0,
            1.0,
            -1.0,
            88.7,
            88.73,
            89.0,
            -87.3,
            -100.0,
            -103.9,
            -104.0,
            -150.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-30,
            -1e-30,
        ]);
        let mut want = None;
        for isa in Isa::available_all() {
            let mut y = x.clone();
            exp_in_place(isa, &mut y);
            for (&a, &e) in x.iter().zip(&y) {
                let r = (a as f64).exp();
                if a.is_nan() {
                    assert!(e.is_nan(), "{isa:?}: exp(NaN) = {e}");
                } else if r > f32::MAX as f64 {
                    assert_eq!(e, f32::INFINITY, "{isa:?}: exp({a})");
                } else if r < f32::MIN_POSITIVE as f64 {
                    // Subnormal results: within two of the smallest steps.
                    assert!(
                        (e as f64 - r).abs() <= 2.0 * 1.4e-45,
                        "{isa:?}: exp({a}) = {e}"
                    );
                } else {
                    let rel = (e as f64 - r).abs() / r;
                    assert!(rel < 2.5e-7, "{isa:?}: exp({a}) = {e}, want {r} ({rel:e})");
                }
            }
            let got = bits(&y);
            match &want {
                None => want = Some(got),
                Some(w) => {
                    for (j, (a, b)) in w.iter().zip(&got).enumerate() {
                        assert!(
                            a == b || (f32::from_bits(*a).is_nan() && f32::from_bits(*b).is_nan()),
                            "{isa:?}: exp({}) = {} differs from the first ISA's {}",
                            x[j],
                            f32::from_bits(*b),
                            f32::from_bits(*a)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn silu_mul_matches_f64_and_is_the_same_on_every_isa() {
        let mut seed = 7;
        for len in LENS {
            let g = rand(len, &mut seed, 12.0);
            let u = rand(len, &mut seed, 3.0);
            let mut want: Option<Vec<u32>> = None;
            for isa in Isa::available_all() {
                let mut y = g.clone();
                silu_mul(isa, &mut y, &u);
                for j in 0..len {
                    let (a, b) = (g[j] as f64, u[j] as f64);
                    let r = a / (1.0 + (-a).exp()) * b;
                    assert!(
                        (y[j] as f64 - r).abs() <= 1e-6 * r.abs() + 1e-30,
                        "{isa:?} len {len}: silu({a})·{b} = {}, want {r}",
                        y[j]
                    );
                }
                match &want {
                    None => want = Some(bits(&y)),
                    Some(w) => assert!(*w == bits(&y), "{isa:?} len {len} differs"),
                }
            }
        }
    }

    #[test]
    fn dot_and_rms_norm_match_f64_and_are_the_same_on_every_isa() {
        let mut seed = 11;
        for len in LENS {
            let a = rand(len, &mut seed, 2.0);
            let b = rand(len, &mut seed, 2.0);
            let w = rand(len, &mut seed, 1.5);
            let x = rand(3 * len, &mut seed, 4.0);
            let exact: f64 = a.iter().zip(&b).map(|(&p, &q)| p as f64 * q as f64).sum();
            let mag: f64 = a
                .iter()
                .zip(&b)
                .map(|(&p, &q)| (p as f64 * q as f64).abs())
                .sum();
            let mut want: Option<(u32, Vec<u32>)> = None;
            for isa in Isa::available_all() {
                let d = dot(isa, &a, &b);
                assert!((d as f64 - exact).abs() <= 1e-6 * mag, "{isa:?} len {len}");
                let mut y = vec![0f32; x.len()];
                rms_norm(isa, &x, &w, 1e-5, &mut y);
                for (xr, yr) in x.chunks(len).zip(y.chunks(len)) {
                    let ms: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / len as f64;
                    let m = (ms + 1e-5).sqrt();
                    for j in 0..len {
                        let r = xr[j] as f64 / m * w[j] as f64;
                        assert!(
                            (yr[j] as f64 - r).abs() <= 1e-6 * (r.abs() + 1e-3),
                            "{isa:?} len {len}: {} vs {r}",
                            yr[j]
                        );
                    }
                }
                let got = (d.to_bits(), bits(&y));
                match &want {
                    None => want = Some(got),
                    Some(w) => assert!(*w == got, "{isa:?} len {len} differs"),
                }
            }
        }
    }

    /// f64 attention of one (row, head).
    fn attend_f64(q: &[f32], k: &[f32], v: &[f32], s: AttnShape, i: usize, h: usize) -> Vec<f64> {
        let g = h / (s.heads / s.kv_heads);
        let row = |pos: usize| (pos * s.kv_heads + g) * s.hd;
        let qi = &q[(i * s.heads + h) * s.hd..][..s.hd];
        let scores: Vec<f64> = (0..=s.start + i)
            .map(|pos| {
                let d: f64 = qi
                    .iter()
                    .zip(&k[row(pos)..][..s.hd])
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum();
                d / (s.hd as f64).sqrt()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
        let sum: f64 = w.iter().sum();
        (0..s.hd)
            .map(|c| {
                w.iter()
                    .enumerate()
                    .map(|(pos, &wp)| wp * v[row(pos) + c] as f64)
                    .sum::<f64>()
                    / sum
            })
            .collect()
    }

    #[test]
    fn attention_rows_alone_equal_rows_in_a_chunk_on_every_isa_and_match_f64() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        // (heads, kv_heads, hd, start, n)
        for (heads, kv_heads, hd, start, n) in [
            (9, 3, 64, 0, 1),
            (9, 3, 64, 31, 9),
            (14, 2, 64, 5, 5),
            (4, 4, 16, 3, 7),
            (4, 1, 8, 0, 17),
            (2, 1, 200, 20, 3),
            (3, 3, 37, 40, 2),
        ] {
            let s = AttnShape {
                n,
                start,
                heads,
                kv_heads,
                hd,
            };
            let q = rand(n * heads * hd, &mut seed, 2.0);
            let k = rand((start + n) * kv_heads * hd, &mut seed, 2.0);
            let v = rand((start + n) * kv_heads * hd, &mut seed, 2.0);
            let mut want: Option<Vec<u32>> = None;
            for isa in Isa::available_all() {
                let mut out = vec![0f32; q.len()];
                for g in 0..kv_heads {
                    attend_group(isa, &q, &k, &v, s, g, &mut out, &mut Vec::new());
                }
                // Each row alone, with the cache cut at its position.
                let row_len = heads * hd;
                for i in 0..n {
                    let one = AttnShape {
                        n: 1,
                        start: start + i,
                        ..s
                    };
                    let kv = (start + i + 1) * kv_heads * hd;
                    let mut alone = vec![0f32; row_len];
                    for g in 0..kv_heads {
                        attend_group(
                            isa,
                            &q[i * row_len..][..row_len],
                            &k[..kv],
                            &v[..kv],
                            one,
                            g,
                            &mut alone,
                            &mut Vec::new(),
                        );
                    }
                    assert!(
                        bits(&alone) == bits(&out[i * row_len..][..row_len]),
                        "{isa:?} {s:?}: row {i} alone differs from the chunk"
                    );
                    for h in 0..heads {
                        let r = attend_f64(&q, &k, &v, s, i, h);
                        let got = &out[(i * heads + h) * hd..][..hd];
                        for (c, (&x, &y)) in got.iter().zip(&r).enumerate() {
                            assert!(
                                (x as f64 - y).abs() < 2e-5,
                                "{isa:?} {s:?} row {i} head {h} col {c}: {x} vs {y}"
                            );
                        }
                    }
                }
                match &want {
                    None => want = Some(bits(&out)),
                    Some(w) => assert!(*w == bits(&out), "{isa:?} {s:?} differs"),
                }
            }
        }
    }
}
