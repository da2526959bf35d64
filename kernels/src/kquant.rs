//! Kernels for the 256-value "K-quant" formats (Q4_K, Q5_K, Q6_K), the types llama.cpp's
//! Q4_K_M/Q5_K_M/Q6_K files ship, against activations quantized once per row to Q8_K
//! (256 i8 values with one f32 scale and per-16 sums, as llama.cpp's `block_q8_K`).
//!
//! Every block's integer dot product (scales and minimums included) is computed exactly in
//! i32, whatever the instruction set; only then does it meet the floats, in the same scalar
//! expression on every path:
//! `acc += (d · a.d) · sumi` and `mins += (dmin · a.d) · summ`, result `acc − mins`.
//! So a row's result has the same bits alone or in a chunk (each row keeps its accumulators
//! and block order), and the same bits on the portable, AVX2 and AVX-512 paths.

use crate::{f16_at, GROUP, GROUP_AVX2};

/// Values per K-quant block (and per Q8_K activation block).
pub const QK_K: usize = 256;

/// One block of activations: `x ≈ d · qs`; `bsums[g]` is the sum of `qs[16g..16g + 16]`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct ActBlockK {
    pub(crate) qs: [i8; QK_K],
    pub(crate) bsums: [i16; QK_K / 16],
    pub(crate) d: f32,
}

impl ActBlockK {
    pub(crate) const ZERO: Self = Self {
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
        d: 0.0,
    };
}

/// Quantizes one row of `k` activations (`k` a multiple of 256) into `out`.
pub fn quantize_row_k(x: &[f32], out: &mut [ActBlockK]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (xs, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let d = crate::q32::quantize_block(xs, &mut b.qs);
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = d;
    }
}

/// The K-quant formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KFormat {
    Q4K,
    Q5K,
    Q6K,
}

impl KFormat {
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }
}

/// The 6-bit scales and minimums of the 8 sub-blocks of a Q4_K/Q5_K block (`get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = s[j] & 63;
            m[j] = s[j + 4] & 63;
        } else {
            sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
            m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// A block unpacked for the portable path: 256 integer weights, one scale per 16 values, one
/// minimum per 32 values (zero for Q6_K), and the two float factors.
struct Unpacked {
    q: [i32; QK_K],
    sc: [i32; 16],
    m: [i32; 8],
    d: f32,
    dmin: f32,
}

fn unpack_scalar(f: KFormat, b: &[u8]) -> Unpacked {
    let mut u = Unpacked {
        q: [0; QK_K],
        sc: [0; 16],
        m: [0; 8],
        d: 0.0,
        dmin: 0.0,
    };
    match f {
        KFormat::Q4K | KFormat::Q5K => {
            u.d = f16_at(b, 0);
            u.dmin = f16_at(b, 2);
            let (sc, m) = scale_min_k4(&b[4..16]);
            for j in 0..8 {
                u.sc[2 * j] = sc[j] as i32;
                u.sc[2 * j + 1] = sc[j] as i32;
                u.m[j] = m[j] as i32;
            }
            let (qh, qs) = if f == KFormat::Q5K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for j in 0..4 {
                for l in 0..32 {
                    let byte = qs[32 * j + l];
                    let (mut lo, mut hi) = ((byte & 0x0f) as i32, (byte >> 4) as i32);
                    if let Some(qh) = qh {
                        lo |= (((qh[l] >> (2 * j)) & 1) as i32) << 4;
                        hi |= (((qh[l] >> (2 * j + 1)) & 1) as i32) << 4;
                    }
                    u.q[64 * j + l] = lo;
                    u.q[64 * j + 32 + l] = hi;
                }
            }
        }
        KFormat::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            u.d = f16_at(b, 208);
            for (s, &v) in u.sc.iter_mut().zip(sc) {
                *s = v as i8 as i32;
            }
            for n in 0..2 {
                let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                let y = &mut u.q[128 * n..];
                for l in 0..32 {
                    let h = qh[l] as i32;
                    y[l] = ((ql[l] & 0x0f) as i32 | ((h & 3) << 4)) - 32;
                    y[l + 32] = ((ql[l + 32] & 0x0f) as i32 | (((h >> 2) & 3) << 4)) - 32;
                    y[l + 64] = ((ql[l] >> 4) as i32 | (((h >> 4) & 3) << 4)) - 32;
                    y[l + 96] = ((ql[l + 32] >> 4) as i32 | (((h >> 6) & 3) << 4)) - 32;
                }
            }
        }
    }
    u
}

/// The float step every path shares (see the module docs).
#[inline(always)]
fn accumulate(acc: &mut f32, mins: &mut f32, d: f32, dmin: f32, ad: f32, sumi: i32, summ: i32) {
    *acc += (d * ad) * sumi as f32;
    *mins += (dmin * ad) * summ as f32;
}

/// Portable dot products of one weight row with `acts.len()` activation rows.
pub(crate) fn dot_rows_scalar(f: KFormat, wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
    let mut acc = [0f32; GROUP];
    let mut mins = [0f32; GROUP];
    for (i, wb) in wrow.chunks_exact(f.block_bytes()).enumerate() {
        let u = unpack_scalar(f, wb);
        for (r, a) in acts.iter().enumerate() {
            let a = &a[i];
            let mut sumi = 0i32;
            for g in 0..16 {
                let s: i32 = u.q[16 * g..16 * g + 16]
                    .iter()
                    .zip(&a.qs[16 * g..16 * g + 16])
                    .map(|(&w, &x)| w * x as i32)
                    .sum();
                sumi += u.sc[g] * s;
            }
            let summ: i32 = (0..8)
                .map(|j| u.m[j] * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32))
                .sum();
            accumulate(&mut acc[r], &mut mins[r], u.d, u.dmin, a.d, sumi, summ);
        }
    }
    for r in 0..acts.len() {
        out[r] = acc[r] - mins[r];
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{accumulate, scale_min_k4, ActBlockK, KFormat, GROUP_AVX2};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn f16(p: *const u8) -> f32 {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
        _mm_cvtsi128_si32(s)
    }

    /// The 8 minimums of a block, each twice, as 16 i16 lanes (one per 16-value group).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn mins16(m: &[u8; 8]) -> __m256i {
        let m8 = _mm_loadl_epi64(m.as_ptr() as *const __m128i);
        _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8))
    }

    /// `Σ_j m[j] · (bsums[2j] + bsums[2j+1])`, exactly (`m16` from [`mins16`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn min_sum(m16: __m256i, a: &ActBlockK) -> i32 {
        let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
        hsum_i32(_mm256_madd_epi16(m16, bs))
    }

    /// The 16 signed Q6_K scales as i16 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn scales16(sc: *const u8) -> __m256i {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i))
    }

    /// `Σ_g sc[g] · bsums[g]` over the 16 signed Q6_K scales (from [`scales16`]), exactly.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn scale_bsum(s16: __m256i, a: &ActBlockK) -> i32 {
        let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
        hsum_i32(_mm256_madd_epi16(s16, bs))
    }

    /// Dot products of one weight row with up to [`GROUP_AVX2`] activation rows.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `wrow` holds `acts[r].len()` blocks of `f`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_rows(f: KFormat, wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        macro_rules! rows {
            ($fun:ident) => {
                match acts.len() {
                    1 => $fun::<1>(wrow, acts, out),
                    2 => $fun::<2>(wrow, acts, out),
                    3 => $fun::<3>(wrow, acts, out),
                    _ => $fun::<GROUP_AVX2>(wrow, acts, out),
                }
            };
        }
        match f {
            KFormat::Q4K => rows!(q4k),
            KFormat::Q5K => rows!(q5k),
            KFormat::Q6K => rows!(q6k),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        q45k::<false, R>(wrow, acts, out)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        q45k::<true, R>(wrow, acts, out)
    }

    /// Two high bits (`x & 3`) moved to bits 4-5 of every byte.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn high2(x: __m256i) -> __m256i {
        _mm256_slli_epi16(_mm256_and_si256(x, _mm256_set1_epi8(3)), 4)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q45k<const HIGH: bool, const R: usize>(
        wrow: &[u8],
        acts: &[&[ActBlockK]],
        out: &mut [f32],
    ) {
        let bb = if HIGH { 176 } else { 144 };
        let nb = wrow.len() / bb;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nb));
        let a: [*const ActBlockK; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let mut acc = [0f32; R];
        let mut mins = [0f32; R];
        let mut lanes = Lanes::<R>::new();
        for i in 0..nb {
            let p = wrow.as_ptr().add(i * bb);
            let (d, dmin) = (f16(p), f16(p.add(2)));
            let (sc, m) = scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
            let (qh, qs) = if HIGH {
                (_mm256_loadu_si256(p.add(16) as *const __m256i), p.add(48))
            } else {
                (_mm256_setzero_si256(), p.add(16))
            };
            let mut sumi = [_mm256_setzero_si256(); R];
            for j in 0..4 {
                let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if HIGH {
                    let sh = _mm_cvtsi32_si128(2 * j as i32);
                    let h = _mm256_srl_epi16(qh, sh);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                    let h = _mm256_srli_epi16(h, 1);
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                }
                let s_lo = _mm256_set1_epi16(sc[2 * j] as i16);
                let s_hi = _mm256_set1_epi16(sc[2 * j + 1] as i16);
                for r in 0..R {
                    let ap = (*a[r].add(i)).qs.as_ptr().add(64 * j);
                    let a0 = _mm256_loadu_si256(ap as *const __m256i);
                    let a1 = _mm256_loadu_si256(ap.add(32) as *const __m256i);
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s_lo);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s_hi);
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p0, p1));
                }
            }
            let m16 = mins16(&m);
            if R == 1 {
                let blk = &*a[0].add(i);
                let summ = min_sum(m16, blk);
                let si = hsum_i32(sumi[0]);
                accumulate(&mut acc[0], &mut mins[0], d, dmin, blk.d, si, summ);
            } else {
                let summ: [__m256i; R] = std::array::from_fn(|r| {
                    let bs = _mm256_loadu_si256((*a[r].add(i)).bsums.as_ptr() as *const __m256i);
                    _mm256_madd_epi16(m16, bs)
                });
                let (si, sm) = hsum4(&sumi, &summ);
                lanes.step(&a, i, d, dmin, si, sm);
            }
        }
        if R == 1 {
            out[0] = acc[0] - mins[0];
        } else {
            lanes.finish(out);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        let bb = KFormat::Q6K.block_bytes();
        let nb = wrow.len() / bb;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nb));
        let a: [*const ActBlockK; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [0f32; R];
        let mut mins = [0f32; R];
        let mut lanes = Lanes::<R>::new();
        for i in 0..nb {
            let p = wrow.as_ptr().add(i * bb);
            let (ql, qh, sc) = (p, p.add(128), p.add(192));
            let d = f16(p.add(208));
            let mut sumi = [_mm256_setzero_si256(); R];
            for n in 0..2 {
                let l0 = _mm256_loadu_si256(ql.add(64 * n) as *const __m256i);
                let l1 = _mm256_loadu_si256(ql.add(64 * n + 32) as *const __m256i);
                let h = _mm256_loadu_si256(qh.add(32 * n) as *const __m256i);
                let v = [
                    _mm256_or_si256(_mm256_and_si256(l0, m4), high2(h)),
                    _mm256_or_si256(_mm256_and_si256(l1, m4), high2(_mm256_srli_epi16(h, 2))),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                        high2(_mm256_srli_epi16(h, 4)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                        high2(_mm256_srli_epi16(h, 6)),
                    ),
                ];
                for (t, &w) in v.iter().enumerate() {
                    let g = 8 * n + 2 * t;
                    let s = _mm256_set_m128i(
                        _mm_set1_epi16(*sc.add(g + 1) as i8 as i16),
                        _mm_set1_epi16(*sc.add(g) as i8 as i16),
                    );
                    for r in 0..R {
                        let ap = (*a[r].add(i)).qs.as_ptr().add(128 * n + 32 * t);
                        let av = _mm256_loadu_si256(ap as *const __m256i);
                        let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(w, av), s);
                        sumi[r] = _mm256_add_epi32(sumi[r], dot);
                    }
                }
            }
            let s16 = scales16(sc);
            if R == 1 {
                let blk = &*a[0].add(i);
                // The weights were taken as q + 32 (unsigned): remove 32 · Σ sc · a.
                let sumi = hsum_i32(sumi[0]) - 32 * scale_bsum(s16, blk);
                accumulate(&mut acc[0], &mut mins[0], d, 0.0, blk.d, sumi, 0);
            } else {
                // The same correction as Σ (−32 · sc) · bsums, summed with the products.
                let s16 = _mm256_mullo_epi16(s16, _mm256_set1_epi16(-32));
                let corr: [__m256i; R] = std::array::from_fn(|r| {
                    let bs = _mm256_loadu_si256((*a[r].add(i)).bsums.as_ptr() as *const __m256i);
                    _mm256_madd_epi16(s16, bs)
                });
                let (si, co) = hsum4(&sumi, &corr);
                lanes.step(&a, i, d, 0.0, _mm_add_epi32(si, co), _mm_setzero_si128());
            }
        }
        if R == 1 {
            out[0] = acc[0] - mins[0];
        } else {
            lanes.finish(out);
        }
    }

    /// The exact sums of the 8 i32 lanes of each of up to 4 `x` and 4 `y` vectors: lane r of
    /// the first result is row r's `x` sum, of the second its `y` sum (rows share the adds).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum4<const R: usize>(x: &[__m256i; R], y: &[__m256i; R]) -> (__m128i, __m128i) {
        const { assert!(R <= 4) };
        let z = _mm256_setzero_si256();
        let at = |v: &[__m256i; R], r: usize| if r < R { v[r] } else { z };
        let a = _mm256_hadd_epi32(at(x, 0), at(x, 1));
        let b = _mm256_hadd_epi32(at(x, 2), at(x, 3));
        let c = _mm256_hadd_epi32(at(y, 0), at(y, 1));
        let e = _mm256_hadd_epi32(at(y, 2), at(y, 3));
        // [x0 x1 x2 x3 | x0' x1' x2' x3'], the halves of each row's sum in the two lanes.
        let xs = _mm256_hadd_epi32(a, b);
        let ys = _mm256_hadd_epi32(c, e);
        let lo = _mm256_permute2x128_si256::<0x20>(xs, ys);
        let hi = _mm256_permute2x128_si256::<0x31>(xs, ys);
        let s = _mm256_add_epi32(lo, hi);
        (_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s))
    }

    /// The float side for 2 to 4 rows, one row per lane: `acc += (d · a.d) · sumi`,
    /// `mins += (dmin · a.d) · summ` (multiply, multiply, add: the portable expression).
    struct Lanes<const R: usize> {
        acc: __m128,
        mins: __m128,
    }

    impl<const R: usize> Lanes<R> {
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn new() -> Self {
            Self {
                acc: _mm_setzero_ps(),
                mins: _mm_setzero_ps(),
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn step(
            &mut self,
            a: &[*const ActBlockK; R],
            i: usize,
            d: f32,
            dmin: f32,
            si: __m128i,
            sm: __m128i,
        ) {
            let ad = |r: usize| if r < R { (*a[r].add(i)).d } else { 0.0 };
            let ad = _mm_setr_ps(ad(0), ad(1), ad(2), ad(3));
            let t = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(d), ad), _mm_cvtepi32_ps(si));
            self.acc = _mm_add_ps(self.acc, t);
            let t = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(dmin), ad), _mm_cvtepi32_ps(sm));
            self.mins = _mm_add_ps(self.mins, t);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn finish(&self, out: &mut [f32]) {
            let mut v = [0f32; 4];
            _mm_storeu_ps(v.as_mut_ptr(), _mm_sub_ps(self.acc, self.mins));
            out[..R].copy_from_slice(&v[..R]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::avx2::{f16, hsum_i32, mins16, scale_bsum, scales16};
    use super::{accumulate, scale_min_k4, ActBlockK, KFormat, GROUP};
    use std::arch::x86_64::*;

    /// Dot products of one weight row with up to [`GROUP`] activation rows: 64 weights per
    /// instruction, `vpmaddubsw` then VNNI `vpdpwssd` (scale and accumulate in one step).
    ///
    /// # Safety
    /// The CPU must have the features of [`crate::Isa::Avx512`]; `wrow` holds
    /// `acts[r].len()` blocks of `f`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn dot_rows(f: KFormat, wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        macro_rules! rows {
            ($($fun:tt)*) => {
                match acts.len() {
                    1 => $($fun)*::<1>(wrow, acts, out),
                    2 => $($fun)*::<2>(wrow, acts, out),
                    3 => $($fun)*::<3>(wrow, acts, out),
                    4 => $($fun)*::<4>(wrow, acts, out),
                    5 => $($fun)*::<5>(wrow, acts, out),
                    6 => $($fun)*::<6>(wrow, acts, out),
                    7 => $($fun)*::<7>(wrow, acts, out),
                    8 => $($fun)*::<8>(wrow, acts, out),
                    9 => $($fun)*::<9>(wrow, acts, out),
                    10 => $($fun)*::<10>(wrow, acts, out),
                    11 => $($fun)*::<11>(wrow, acts, out),
                    12 => $($fun)*::<12>(wrow, acts, out),
                    _ => $($fun)*::<GROUP>(wrow, acts, out),
                }
            };
        }
        match f {
            KFormat::Q4K => rows!(q4k),
            KFormat::Q5K => rows!(q5k),
            KFormat::Q6K => rows!(q6k),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q4k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        q45k::<false, R>(wrow, acts, out)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q5k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        q45k::<true, R>(wrow, acts, out)
    }

    /// The exact sums of each row's 16 `sumi` lanes and 8 `summ` lanes, as [`Floats`]
    /// reads them: item `q` (sumi rows first, then summ rows from item `2·⌈R/2⌉`) lies in
    /// lane `4·(q mod 16 mod 4) + q mod 16 / 4` of vector `q / 16`.
    ///
    /// The rows share the work: four levels of shuffles and adds, each halving the lanes per
    /// row and doubling the rows per register (integer sums, so any tree gives the same
    /// result).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum_rows<const R: usize>(sumi: &[__m512i; R], summ: &[__m256i; R]) -> [__m512i; 2] {
        const { assert!(R <= 16) };
        let z = _mm512_setzero_si512();
        // Level 1: [a_lo8 + a_hi8 | b_lo8 + b_hi8] for sumi; summ rows are 8 lanes already.
        let h = R.div_ceil(2);
        let mut l1 = [z; 16];
        for t in 0..h {
            let a = sumi[2 * t];
            let b = if 2 * t + 1 < R { sumi[2 * t + 1] } else { z };
            l1[t] = _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0x44>(a, b),
                _mm512_shuffle_i32x4::<0xee>(a, b),
            );
            let c = summ[2 * t];
            let d = if 2 * t + 1 < R {
                summ[2 * t + 1]
            } else {
                _mm256_setzero_si256()
            };
            l1[h + t] = join(c, d);
        }
        // Level 2: 4 lanes per row.
        let n2 = h;
        let mut l2 = [z; 8];
        for t in 0..n2 {
            let (a, b) = (l1[2 * t], l1[2 * t + 1]);
            l2[t] = _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0x88>(a, b),
                _mm512_shuffle_i32x4::<0xdd>(a, b),
            );
        }
        // Level 3: 2 lanes per row.
        let n3 = n2.div_ceil(2);
        let mut l3 = [z; 4];
        for t in 0..n3 {
            let (a, b) = (l2[2 * t], l2[2 * t + 1]);
            l3[t] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
        }
        // Level 4: 1 lane per row, 16 rows per vector.
        let n4 = n3.div_ceil(2);
        let mut v = [z; 2];
        for t in 0..n4 {
            let (a, b) = (l3[2 * t], l3[2 * t + 1]);
            v[t] = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
        }
        v
    }

    /// Where [`hsum_rows`] leaves item `q`, as an index into its two vectors.
    const fn item(q: usize) -> usize {
        16 * (q / 16) + 4 * (q % 16 % 4) + q % 16 / 4
    }

    /// The float side of a K-quant row group: per row `acc += (d · a.d) · sumi` and
    /// `mins += (dmin · a.d) · summ` (a multiply, a multiply, an add: the portable path's
    /// expression, rounded the same), with the rows in the lanes of one vector when there are
    /// enough of them to pay for gathering their activation scales.
    struct Floats<const R: usize> {
        acc: __m512,
        mins: __m512,
        sacc: [f32; R],
        smins: [f32; R],
        /// Byte offset of row r's activation scale from row 0's.
        offs: __m512i,
        /// Lane r: where row r's sumi (`isel`) and summ (`msel`) lie in [`hsum_rows`]' output.
        isel: __m512i,
        msel: __m512i,
    }

    impl<const R: usize> Floats<R> {
        /// Rows from which the lanes beat one scalar expression per row.
        const VECTOR: bool = R >= 3;
        const MASK: __mmask16 = ((1u32 << R) - 1) as __mmask16;

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        #[inline]
        unsafe fn new(a: &[*const ActBlockK; R]) -> Self {
            if !Self::VECTOR {
                // Once per column: building the lane tables through memory would cost a
                // one-row product about a sixth of its time.
                let z = _mm512_setzero_si512();
                return Self {
                    acc: _mm512_setzero_ps(),
                    mins: _mm512_setzero_ps(),
                    sacc: [0.0; R],
                    smins: [0.0; R],
                    offs: z,
                    isel: z,
                    msel: z,
                };
            }
            let mut o = [0i32; 16];
            let mut is = [0i32; 16];
            let mut ms = [0i32; 16];
            for r in 0..R {
                o[r] = (a[r] as isize - a[0] as isize) as i32;
                is[r] = item(r) as i32;
                ms[r] = item(2 * R.div_ceil(2) + r) as i32;
            }
            let v = |x: &[i32; 16]| _mm512_loadu_si512(x.as_ptr() as *const __m512i);
            Self {
                acc: _mm512_setzero_ps(),
                mins: _mm512_setzero_ps(),
                sacc: [0.0; R],
                smins: [0.0; R],
                offs: v(&o),
                isel: v(&is),
                msel: v(&ms),
            }
        }

        /// Block `i`'s step; with `FOLD` (Q6_K) the summ items are
        /// added to the sumi ones in i32 (exact) and there is no minimum.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        #[inline]
        unsafe fn step<const FOLD: bool>(
            &mut self,
            a: &[*const ActBlockK; R],
            i: usize,
            d: f32,
            dmin: f32,
            sumi: &[__m512i; R],
            summ: &[__m256i; R],
        ) {
            if Self::VECTOR {
                let v = hsum_rows(sumi, summ);
                let base = std::ptr::addr_of!((*a[0].add(i)).d);
                let ad =
                    _mm512_mask_i32gather_ps::<1>(_mm512_setzero_ps(), Self::MASK, self.offs, base);
                let si = _mm512_permutex2var_epi32(v[0], self.isel, v[1]);
                let sm = _mm512_permutex2var_epi32(v[0], self.msel, v[1]);
                if FOLD {
                    let iv = _mm512_cvtepi32_ps(_mm512_add_epi32(si, sm));
                    let t = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(d), ad), iv);
                    self.acc = _mm512_add_ps(self.acc, t);
                } else {
                    let t =
                        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(d), ad), _mm512_cvtepi32_ps(si));
                    self.acc = _mm512_add_ps(self.acc, t);
                    let t = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_set1_ps(dmin), ad),
                        _mm512_cvtepi32_ps(sm),
                    );
                    self.mins = _mm512_add_ps(self.mins, t);
                }
            } else {
                // One or two rows: each row's own horizontal sums are cheaper than sharing.
                for r in 0..R {
                    let ad = (*a[r].add(i)).d;
                    let (si, sm) = (_mm512_reduce_add_epi32(sumi[r]), hsum_i32(summ[r]));
                    if FOLD {
                        accumulate(
                            &mut self.sacc[r],
                            &mut self.smins[r],
                            d,
                            0.0,
                            ad,
                            si + sm,
                            0,
                        );
                    } else {
                        accumulate(&mut self.sacc[r], &mut self.smins[r], d, dmin, ad, si, sm);
                    }
                }
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        #[inline]
        unsafe fn finish(&self, out: &mut [f32]) {
            if Self::VECTOR {
                let mut v = [0f32; 16];
                _mm512_storeu_ps(v.as_mut_ptr(), _mm512_sub_ps(self.acc, self.mins));
                out[..R].copy_from_slice(&v[..R]);
            } else {
                for ((o, a), m) in out.iter_mut().zip(&self.sacc).zip(&self.smins) {
                    *o = a - m;
                }
            }
        }
    }

    /// Two 256-bit halves as one 512-bit vector.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q45k<const HIGH: bool, const R: usize>(
        wrow: &[u8],
        acts: &[&[ActBlockK]],
        out: &mut [f32],
    ) {
        let bb = if HIGH { 176 } else { 144 };
        let nb = wrow.len() / bb;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nb));
        let a: [*const ActBlockK; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        // Low nibbles in the lower half (sub-block 2j), high nibbles in the upper (2j + 1).
        let sel: [__m512i; 4] = std::array::from_fn(|j| {
            join(
                _mm256_set1_epi16(2 * j as i16),
                _mm256_set1_epi16(2 * j as i16 + 1),
            )
        });
        let mut fl = Floats::<R>::new(&a);
        for i in 0..nb {
            let p = wrow.as_ptr().add(i * bb);
            let (d, dmin) = (f16(p), f16(p.add(2)));
            let (sc, m) = scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
            let (qh, qs) = if HIGH {
                (_mm256_loadu_si256(p.add(16) as *const __m256i), p.add(48))
            } else {
                (_mm256_setzero_si256(), p.add(16))
            };
            // The 8 scales as i16 lanes; each 64-value step picks its two by a permute.
            let sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64(
                sc.as_ptr() as *const __m128i
            )));
            let mut sumi = [_mm512_setzero_si512(); R];
            for (j, &sel) in sel.iter().enumerate() {
                // Low nibbles (sub-block 2j) in the lower half, high (2j + 1) in the upper:
                // 256-bit shifts and one insert (no variable 16-bit shift).
                let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if HIGH {
                    let h = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32));
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                    let h = _mm256_srli_epi16(h, 1);
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                }
                let w = join(lo, hi);
                let s = _mm512_permutexvar_epi16(sel, sc16);
                for r in 0..R {
                    let ap = (*a[r].add(i)).qs.as_ptr().add(64 * j);
                    let av = _mm512_loadu_si512(ap as *const __m512i);
                    sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(w, av), s);
                }
            }
            let m16 = mins16(&m);
            let summ: [__m256i; R] = std::array::from_fn(|r| {
                let bs = _mm256_load_si256((*a[r].add(i)).bsums.as_ptr() as *const __m256i);
                _mm256_madd_epi16(m16, bs)
            });
            fl.step::<false>(&a, i, d, dmin, &sumi, &summ);
        }
        fl.finish(out);
    }

    /// Lane `l` of 16-bit lanes gets `base + l / 8`: one Q6_K scale per 128-bit lane.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn scale_index(base: i16) -> __m512i {
        join(
            _mm256_set_m128i(_mm_set1_epi16(base + 1), _mm_set1_epi16(base)),
            _mm256_set_m128i(_mm_set1_epi16(base + 3), _mm_set1_epi16(base + 2)),
        )
    }

    /// Two high bits of every byte of `h >> SA` (lower half) and `h >> SB` (upper half)
    /// moved to bits 4-5: 256-bit shifts and one insert (a variable 16-bit shift of a
    /// 512-bit vector is several times slower on Zen 4).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn high2<const SA: i32, const SB: i32>(h: __m256i) -> __m512i {
        let m2 = _mm512_set1_epi8(3);
        let hv = join(_mm256_srli_epi16::<SA>(h), _mm256_srli_epi16::<SB>(h));
        _mm512_slli_epi16::<4>(_mm512_and_si512(hv, m2))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn q6k<const R: usize>(wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
        let bb = KFormat::Q6K.block_bytes();
        let nb = wrow.len() / bb;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nb));
        let a: [*const ActBlockK; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let m4 = _mm512_set1_epi8(0x0f);
        // Scale index per 16-bit lane: one 16-value group (one scale) per 128-bit lane.
        let idx = [
            scale_index(0),
            scale_index(4),
            scale_index(8),
            scale_index(12),
        ];
        let (mut acc1, mut mins1) = (0f32, 0f32);
        let mut fl = Floats::<R>::new(&a);
        for i in 0..nb {
            let p = wrow.as_ptr().add(i * bb);
            let (ql, qh, sc) = (p, p.add(128), p.add(192));
            let d = f16(p.add(208));
            let sc16 =
                _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i)));
            let mut sumi = [_mm512_setzero_si512(); R];
            for n in 0..2 {
                let l = _mm512_loadu_si512(ql.add(64 * n) as *const __m512i);
                let h = _mm256_loadu_si256(qh.add(32 * n) as *const __m256i);
                // High bits: values 0..32 use bits 0-1, 32..64 bits 2-3 (first vector),
                // 64..96 bits 4-5, 96..128 bits 6-7 (second vector).
                let w01 = _mm512_or_si512(_mm512_and_si512(l, m4), high2::<0, 2>(h));
                let w23 = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                    high2::<4, 6>(h),
                );
                for (c, &w) in [w01, w23].iter().enumerate() {
                    let s = _mm512_permutexvar_epi16(idx[2 * n + c], sc16);
                    for r in 0..R {
                        let ap = (*a[r].add(i)).qs.as_ptr().add(128 * n + 64 * c);
                        let av = _mm512_loadu_si512(ap as *const __m512i);
                        sumi[r] = _mm512_dpwssd_epi32(sumi[r], _mm512_maddubs_epi16(w, av), s);
                    }
                }
            }
            if R == 1 {
                // A lone row: the plain expression, accumulators in registers.
                let blk = &*a[0].add(i);
                let si = _mm512_reduce_add_epi32(sumi[0]) - 32 * scale_bsum(scales16(sc), blk);
                accumulate(&mut acc1, &mut mins1, d, 0.0, blk.d, si, 0);
                continue;
            }
            // The weights were taken as q + 32 (unsigned): remove 32 · Σ sc · a, computed
            // here as Σ (−32 · sc) · bsums and summed exactly with the products.
            let s16 = _mm256_mullo_epi16(scales16(sc), _mm256_set1_epi16(-32));
            let corr: [__m256i; R] = std::array::from_fn(|r| {
                let bs = _mm256_load_si256((*a[r].add(i)).bsums.as_ptr() as *const __m256i);
                _mm256_madd_epi16(s16, bs)
            });
            fl.step::<true>(&a, i, d, 0.0, &sumi, &corr);
        }
        if R == 1 {
            out[0] = acc1 - mins1;
        } else {
            fl.finish(out);
        }
    }
}
