//! Kernels for the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against
//! activations quantized once per row to 32-value i8 blocks (llama.cpp's `q8_0`/`q8_1`).
//!
//! Unlike the K-quant kernels, each block's product meets its float scale in the vector lanes
//! (as llama.cpp does), so the portable, AVX2 and AVX-512 paths round differently; each path
//! on its own is batch invariant (a row's lanes and block order never depend on the chunk).

use crate::{f16_at, Format, GROUP, GROUP_AVX2, QK};

/// One block of quantized activations: `x ≈ d · qs`, `isum = Σ qs`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct ActBlock {
    pub(crate) d: f32,
    pub(crate) isum: i32,
    pub(crate) qs: [i8; QK],
}

impl ActBlock {
    pub(crate) const ZERO: Self = Self {
        d: 0.0,
        isum: 0,
        qs: [0; QK],
    };

    /// `d · Σ qs`, the term a block minimum multiplies (same bits on every path).
    #[inline(always)]
    pub(crate) fn s(&self) -> f32 {
        self.d * self.isum as f32
    }
}

/// Quantizes one row of `k` activations (`k` a multiple of 32) into `out`.
pub fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        b.d = quantize_block(xs, &mut b.qs);
        b.isum = b.qs.iter().map(|&q| q as i32).sum();
    }
}

/// `qs = round(x / d)` (half away from zero) with `d = max |x| / 127`; returns `d`. The
/// SIMD version gives the same bytes: activations do not depend on the kernel set.
pub(crate) fn quantize_block(xs: &[f32], qs: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::Avx2.available() {
        // SAFETY: AVX2, FMA and F16C were detected.
        return unsafe { avx2::quantize_block(xs, qs) };
    }
    quantize_block_scalar(xs, qs)
}

pub(crate) fn quantize_block_scalar(xs: &[f32], qs: &mut [i8]) -> f32 {
    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = (v * id).round() as i8;
    }
    d
}

/// The 32 integer weights of a block (the `_0` formats signed, the `_1` formats unsigned),
/// with the block's scale and minimum (0 for the `_0` formats).
fn unpack_scalar(f: Format, b: &[u8]) -> ([i32; QK], f32, f32) {
    let mut w = [0i32; QK];
    let nib = |qs: &[u8], w: &mut [i32; QK]| {
        for j in 0..QK / 2 {
            w[j] = (qs[j] & 0x0f) as i32;
            w[j + QK / 2] = (qs[j] >> 4) as i32;
        }
    };
    let high = |qh: u32, w: &mut [i32; QK]| {
        for (j, v) in w.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as i32;
        }
    };
    let qh_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    match f {
        Format::Q4_0 => {
            nib(&b[2..18], &mut w);
            w.iter_mut().for_each(|v| *v -= 8);
            (w, f16_at(b, 0), 0.0)
        }
        Format::Q4_1 => {
            nib(&b[4..20], &mut w);
            (w, f16_at(b, 0), f16_at(b, 2))
        }
        Format::Q5_0 => {
            nib(&b[6..22], &mut w);
            high(qh_at(2), &mut w);
            w.iter_mut().for_each(|v| *v -= 16);
            (w, f16_at(b, 0), 0.0)
        }
        Format::Q5_1 => {
            nib(&b[8..24], &mut w);
            high(qh_at(4), &mut w);
            (w, f16_at(b, 0), f16_at(b, 2))
        }
        Format::Q8_0 => {
            for (v, &q) in w.iter_mut().zip(&b[2..34]) {
                *v = q as i8 as i32;
            }
            (w, f16_at(b, 0), 0.0)
        }
        Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants use kquant.rs"),
    }
}

/// Portable dot products of one weight row with `acts.len()` activation rows.
pub(crate) fn dot_rows_scalar(f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
    let bb = f.block_bytes();
    let mut acc = [0f32; GROUP];
    let mut mins = [0f32; GROUP];
    for (i, wb) in wrow.chunks_exact(bb).enumerate() {
        let (w, d, m) = unpack_scalar(f, wb);
        for (r, a) in acts.iter().enumerate() {
            let a = &a[i];
            let sumi: i32 = w.iter().zip(&a.qs).map(|(&x, &y)| x * y as i32).sum();
            acc[r] += (d * a.d) * sumi as f32;
            if f.has_min() {
                mins[r] += m * a.s();
            }
        }
    }
    for r in 0..acts.len() {
        out[r] = acc[r] + mins[r];
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{ActBlock, Format, GROUP_AVX2};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn f16(p: *const u8) -> f32 {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    /// [`super::quantize_block`] for a multiple of 32 values, 32 at a time: the same product
    /// `v · id`, rounded half away from zero exactly (truncate, then step away from zero when
    /// the exact remainder is at least one half; `f32::round` is a libm call per value
    /// without SSE4.1), saturated to i8 as `as i8` does.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn quantize_block(xs: &[f32], qs: &mut [i8]) -> f32 {
        debug_assert!(xs.len() == qs.len() && xs.len().is_multiple_of(32));
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut mx = _mm256_setzero_ps();
        for c in xs.chunks_exact(8) {
            let v = _mm256_and_ps(_mm256_loadu_ps(c.as_ptr()), abs);
            // max(m, v) with m first: a NaN value is skipped, as `f32::max` does.
            mx = _mm256_max_ps(v, mx);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mx);
        let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
        let round = |v: __m256| {
            let x = _mm256_mul_ps(v, idv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let rem = _mm256_and_ps(_mm256_sub_ps(x, t), abs);
            let step = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(rem, half), one);
            let r = _mm256_add_ps(t, _mm256_or_ps(step, _mm256_and_ps(x, sign)));
            // Clamp as `as i8` saturates, and a NaN product gives 0 as `as i8` does.
            let r = _mm256_min_ps(
                _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
                _mm256_set1_ps(127.0),
            );
            _mm256_cvttps_epi32(_mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x)))
        };
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (c, q) in xs.chunks_exact(32).zip(qs.chunks_exact_mut(32)) {
            let p = c.as_ptr();
            let a = round(_mm256_loadu_ps(p));
            let b = round(_mm256_loadu_ps(p.add(8)));
            let e = round(_mm256_loadu_ps(p.add(16)));
            let f = round(_mm256_loadu_ps(p.add(24)));
            let ab = _mm256_packs_epi32(a, b);
            let ef = _mm256_packs_epi32(e, f);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, ef), perm);
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, bytes);
        }
        d
    }

    /// 32 nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in bytes 16..32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
        _mm256_set_m128i(hi, lo)
    }

    /// 32 bits → 32 bytes of 0xff (bit set) or 0x00 (llama.cpp's `bytes_from_bits_32`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn bits(p: *const u8) -> __m256i {
        let x = (p as *const u32).read_unaligned();
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// A block's 32 weights as bytes (signed for the `_0` formats, unsigned for `_1`), its
    /// scale and its minimum.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn unpack(f: Format, p: *const u8) -> (__m256i, f32, f32) {
        match f {
            Format::Q4_0 => (
                _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
                f16(p),
                0.0,
            ),
            Format::Q4_1 => (nibbles(p.add(4)), f16(p), f16(p.add(2))),
            Format::Q5_0 => {
                // (nibble | bit << 4) - 16 == nibble | (bit ? 0 : 0xf0) as i8.
                let hi = _mm256_andnot_si256(bits(p.add(2)), _mm256_set1_epi8(0xf0u8 as i8));
                (_mm256_or_si256(nibbles(p.add(6)), hi), f16(p), 0.0)
            }
            Format::Q5_1 => {
                let hi = _mm256_and_si256(bits(p.add(4)), _mm256_set1_epi8(0x10));
                (
                    _mm256_or_si256(nibbles(p.add(8)), hi),
                    f16(p),
                    f16(p.add(2)),
                )
            }
            Format::Q8_0 => (_mm256_loadu_si256(p.add(2) as *const __m256i), f16(p), 0.0),
            Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants use kquant.rs"),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Dot products of one weight row with up to [`GROUP_AVX2`] activation rows; each row's
    /// arithmetic is independent of how many rows share the call.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `wrow` holds `acts[r].len()` blocks of `f`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_rows(f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
        // Monomorphized per format and row count, so the format's unpacking is straight-line
        // code and the accumulators live in registers.
        macro_rules! rows {
            ($fmt:expr) => {
                match acts.len() {
                    1 => dot_impl::<{ $fmt }, 1>(wrow, acts, out),
                    2 => dot_impl::<{ $fmt }, 2>(wrow, acts, out),
                    3 => dot_impl::<{ $fmt }, 3>(wrow, acts, out),
                    _ => dot_impl::<{ $fmt }, GROUP_AVX2>(wrow, acts, out),
                }
            };
        }
        match f {
            Format::Q4_0 => rows!(0),
            Format::Q4_1 => rows!(1),
            Format::Q5_0 => rows!(2),
            Format::Q5_1 => rows!(3),
            Format::Q8_0 => rows!(4),
            Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants use kquant.rs"),
        }
    }

    pub(crate) const fn format(code: u8) -> Format {
        match code {
            0 => Format::Q4_0,
            1 => Format::Q4_1,
            2 => Format::Q5_0,
            3 => Format::Q5_1,
            _ => Format::Q8_0,
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_impl<const FMT: u8, const R: usize>(
        wrow: &[u8],
        acts: &[&[ActBlock]],
        out: &mut [f32],
    ) {
        let f = const { format(FMT) };
        let bb = f.block_bytes();
        let nb = wrow.len() / bb;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nb));
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        let signed = !f.has_min();
        let a: [*const ActBlock; R] = std::array::from_fn(|r| acts[r].as_ptr());
        for i in 0..nb {
            let (w, d, m) = unpack(f, wrow.as_ptr().add(i * bb));
            // maddubs multiplies unsigned by signed bytes: for signed weights move the sign
            // onto the activations (|w| · sign(w)·a), as llama.cpp does.
            let wabs = if signed { _mm256_sign_epi8(w, w) } else { w };
            for r in 0..R {
                let a = &*a[r].add(i);
                let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                let av = if signed { _mm256_sign_epi8(av, w) } else { av };
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, av), ones);
                let scale = _mm256_set1_ps(d * a.d);
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc[r]);
                if !signed {
                    mins[r] += m * a.s();
                }
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }
}

/// Blocks per [`ActChunk`].
pub(crate) const CHUNK: usize = 16;

/// Activations for the AVX-512 path, 16 blocks (8 pairs) of one row at a time.
///
/// - `qs[j]`: blocks `2j` and `2j + 1`, their 64 values contiguous (one 512-bit load) and
///   stored offset by 128 as unsigned bytes, so VNNI `vpdpbusd` takes them as they are (the
///   weights give the signed operand, and a per-weight correction, shared by every row,
///   removes the offset exactly);
/// - `d[j]`: the two blocks' scales spread over the 8 lanes each block's products land in
///   (`[d0 ×8 | d1 ×8]`), so a row's scale step is one multiply with a memory operand;
/// - `s`: each block's `d · Σ qs`, contiguous, so the `_1` formats' minimum term is a plain
///   16-lane float dot product of a row's `s` with the weight row's minimums, apart from the
///   integer products.
///
/// 68 bytes per block (96 when the block sums shared the pairs' line),
/// and blocks past the row's end are zero (`qs` 128, `d` and `s` 0), adding exact zeros.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct ActChunk {
    qs: [[u8; 2 * QK]; CHUNK / 2],
    d: [[f32; 16]; CHUNK / 2],
    s: [f32; CHUNK],
}

impl ActChunk {
    pub(crate) const ZERO: Self = Self {
        qs: [[128; 2 * QK]; CHUNK / 2],
        d: [[0.0; 16]; CHUNK / 2],
        s: [0.0; CHUNK],
    };
}

/// Regroups one row of quantized blocks into chunks (`out.len()` = blocks / 16, rounded up).
pub(crate) fn chunk_row(blocks: &[ActBlock], out: &mut [ActChunk]) {
    debug_assert_eq!(out.len(), blocks.len().div_ceil(CHUNK));
    for (c, bs) in out.iter_mut().zip(blocks.chunks(CHUNK)) {
        *c = ActChunk::ZERO;
        for (i, b) in bs.iter().enumerate() {
            let (j, half) = (i / 2, i % 2);
            // a + 128 as a byte is a with its top bit flipped (a vectorizable loop).
            for (q, &v) in c.qs[j][half * QK..(half + 1) * QK].iter_mut().zip(&b.qs) {
                *q = v as u8 ^ 0x80;
            }
            c.d[j][8 * half..8 * half + 8].fill(b.d);
            c.s[i] = b.s();
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::avx2::{format, unpack};
    use super::{ActChunk, Format, CHUNK, GROUP};
    use std::arch::x86_64::*;

    /// `$func::<FMT, R>(args)` for the runtime 32-value format `$f`, `R` the row count `$r`.
    macro_rules! by_format {
        ($f:expr, $r:expr, $func:ident, ($($arg:expr),*)) => {
            match $f {
                Format::Q4_0 => $func::<0, { $r }>($($arg),*),
                Format::Q4_1 => $func::<1, { $r }>($($arg),*),
                Format::Q5_0 => $func::<2, { $r }>($($arg),*),
                Format::Q5_1 => $func::<3, { $r }>($($arg),*),
                Format::Q8_0 => $func::<4, { $r }>($($arg),*),
                Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants use kquant.rs"),
            }
        };
    }

    /// [`by_format!`] for a runtime row count `$n` in 1..=[`GROUP`].
    macro_rules! by_rows {
        ($f:expr, $n:expr, $func:ident, $args:tt) => {
            match $n {
                1 => by_format!($f, 1, $func, $args),
                2 => by_format!($f, 2, $func, $args),
                3 => by_format!($f, 3, $func, $args),
                4 => by_format!($f, 4, $func, $args),
                5 => by_format!($f, 5, $func, $args),
                6 => by_format!($f, 6, $func, $args),
                7 => by_format!($f, 7, $func, $args),
                8 => by_format!($f, 8, $func, $args),
                9 => by_format!($f, 9, $func, $args),
                10 => by_format!($f, 10, $func, $args),
                11 => by_format!($f, 11, $func, $args),
                12 => by_format!($f, 12, $func, $args),
                _ => by_format!($f, GROUP, $func, $args),
            }
        };
    }

    /// Dot products of one weight row with up to [`GROUP`] activation rows, two blocks per
    /// 512-bit vector with VNNI `vpdpbusd`, and for the `_1` formats the minimum term apart
    /// (see [`ActChunk`]); each row's lanes and block order are independent of how many rows
    /// share the call.
    ///
    /// # Safety
    /// The CPU must have the features of [`crate::Isa::Avx512`]; `wrow` holds at most
    /// `16 · acts[r].len()` blocks of `f`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn dot_rows(f: Format, wrow: &[u8], acts: &[&[ActChunk]], out: &mut [f32]) {
        by_rows!(f, acts.len(), dot_impl, (wrow, acts, out))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot_impl<const FMT: u8, const R: usize>(
        wrow: &[u8],
        acts: &[&[ActChunk]],
        out: &mut [f32],
    ) {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut mins = [_mm_setzero_ps(); R];
        dot_loop::<FMT, R>(wrow, acts, &mut acc, &mut mins);
        finish::<R>(const { format(FMT) }.has_min(), &acc, &mins, out);
    }

    /// The rows' sums of [`dot_loop`]'s accumulators (the same tree for each row as alone).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn finish<const R: usize>(
        min: bool,
        acc: &[__m512; R],
        mins: &[__m128; R],
        out: &mut [f32],
    ) {
        // Horizontal sums of every row at once (the same tree for each row as alone).
        let sums = hsum_rows(acc);
        if min {
            let m = hsum_rows(&mins.map(|v| _mm512_zextps128_ps512(v)));
            for r in 0..R {
                out[r] = sums[r] + m[r];
            }
        } else {
            for r in 0..R {
                out[r] = sums[r] + 0.0;
            }
        }
    }

    /// The columns `cols` of a matrix (`data`: rows of `row_bytes`) against `acts` (2 to
    /// [`GROUP`] rows of whole-row chunks), the row cut into slices of `slice_chunks` chunks:
    /// per block of columns, one slice of every column, then the next slice, each (column,
    /// row)'s accumulators carried from slice to slice. So a slice's activations stay in L1
    /// across the block's columns (a long row's activations of several rows do not fit L1),
    /// while every row gets exactly the operations, in the order, of [`dot_rows`] on the whole
    /// row — the same bits as the row alone. `put(column, sums)` takes each column's results.
    ///
    /// # Safety
    /// As [`dot_rows`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(crate) unsafe fn dot_rows_sliced(
        f: Format,
        data: &[u8],
        row_bytes: usize,
        cols: std::ops::Range<usize>,
        acts: &[&[ActChunk]],
        slice_chunks: usize,
        put: &mut dyn FnMut(usize, &[f32]),
    ) {
        by_rows!(
            f,
            acts.len(),
            sliced_impl,
            (data, row_bytes, cols, acts, slice_chunks, put)
        )
    }

    /// Columns per block of [`dot_rows_sliced`].
    const COL_BLOCK: usize = 8;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn sliced_impl<const FMT: u8, const R: usize>(
        data: &[u8],
        row_bytes: usize,
        cols: std::ops::Range<usize>,
        acts: &[&[ActChunk]],
        slice_chunks: usize,
        put: &mut dyn FnMut(usize, &[f32]),
    ) {
        let f = const { format(FMT) };
        let bb = f.block_bytes();
        let nc = (row_bytes / bb).div_ceil(CHUNK);
        let slices = nc.div_ceil(slice_chunks.max(1));
        let mut acc = [[_mm512_setzero_ps(); R]; COL_BLOCK];
        let mut mins = [[_mm_setzero_ps(); R]; COL_BLOCK];
        let mut col = cols.start;
        while col < cols.end {
            let cb = (cols.end - col).min(COL_BLOCK);
            for c in 0..cb {
                acc[c] = [_mm512_setzero_ps(); R];
                mins[c] = [_mm_setzero_ps(); R];
            }
            for s in 0..slices {
                let c0 = s * slice_chunks;
                let c1 = (c0 + slice_chunks).min(nc);
                let (b0, b1) = (c0 * CHUNK * bb, (c1 * CHUNK * bb).min(row_bytes));
                let rows: [&[ActChunk]; R] = std::array::from_fn(|r| &acts[r][c0..c1]);
                for c in 0..cb {
                    let at = (col + c) * row_bytes;
                    dot_loop::<FMT, R>(&data[at + b0..at + b1], &rows, &mut acc[c], &mut mins[c]);
                }
            }
            let mut out = [0f32; R];
            for c in 0..cb {
                finish::<R>(f.has_min(), &acc[c], &mins[c], &mut out);
                put(col + c, &out);
            }
            col += cb;
        }
    }

    /// The loop of [`dot_impl`] over the blocks of `wrow` (whole chunks, except at the row's
    /// end), adding into the rows' accumulators: a row cut at chunk boundaries and fed slice
    /// by slice gets the same operations in the same order as the whole row at once.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_loop<const FMT: u8, const R: usize>(
        wrow: &[u8],
        acts: &[&[ActChunk]],
        acc: &mut [__m512; R],
        mins: &mut [__m128; R],
    ) {
        let f = const { format(FMT) };
        let bb = f.block_bytes();
        let nb = wrow.len() / bb;
        let np = nb.div_ceil(2);
        let nc = nb.div_ceil(CHUNK);
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() >= nc));
        let min = f.has_min();
        let zero = _mm512_setzero_si512();
        let offset = _mm512_set1_epi8(-128);
        let idx_d = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        // `mins`: the `_1` formats' minimum term, 4 blocks at a time (lane t: block 4q + t of
        // the chunk), apart from the integer products.
        let mut prev = _mm_setzero_ps();
        let a: [*const ActChunk; R] = std::array::from_fn(|r| acts[r].as_ptr());
        for i in 0..np {
            let (c, j) = (i / (CHUNK / 2), i % (CHUNK / 2));
            // Two blocks (the second absent, all zero, for an odd tail).
            let b = 2 * i;
            let p0 = wrow.as_ptr().add(b * bb);
            let two = b + 1 < nb;
            let w0 = unpack(f, p0).0;
            let w1 = if two {
                unpack(f, p0.add(bb)).0
            } else {
                _mm256_setzero_si256()
            };
            // Every weight fits a signed byte (the `_1` formats' 0..31 too).
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
            // Both blocks' scales (and minimums) in one conversion, moved in from a general
            // register: a lane insert would wait on whatever the register last held.
            let half = |at: usize| (p0.add(at) as *const u16).read_unaligned() as u64;
            let bits = half(0)
                | if two { half(bb) << 16 } else { 0 }
                | if min { half(2) << 32 } else { 0 }
                | if min && two { half(bb + 2) << 48 } else { 0 };
            let dm = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
            let dv = _mm512_permutexvar_ps(idx_d, _mm512_castps128_ps512(dm));
            // The minimums of this pair join those of the previous one; every second pair
            // (and the last) they meet 4 block sums of each row.
            let step_min = min && (j % 2 == 1 || i + 1 == np);
            let mv = if !step_min {
                _mm_setzero_ps()
            } else if j % 2 == 1 {
                _mm_shuffle_ps::<0xee>(prev, dm)
            } else {
                _mm_movehl_ps(_mm_setzero_ps(), dm)
            };
            if min && j % 2 == 0 {
                prev = dm;
            }
            // The activations come as a + 128: start every lane at −128 · Σ w over its four
            // weights, so `vpdpbusd` leaves exactly Σ a · w (the same i32 lanes as a signed
            // product would, in one instruction per row).
            let base = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, w));
            for r in 0..R {
                let p = &*a[r].add(c);
                let av = _mm512_load_si512(p.qs[j].as_ptr() as *const __m512i);
                let dot = _mm512_dpbusd_epi32(base, av, w);
                let scale = _mm512_mul_ps(dv, _mm512_load_ps(p.d[j].as_ptr()));
                acc[r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc[r]);
                if step_min {
                    let s = _mm_load_ps(p.s.as_ptr().add(4 * (j / 2)));
                    mins[r] = _mm_fmadd_ps(mv, s, mins[r]);
                }
            }
        }
    }

    /// The sums of the 16 lanes of each of `v` (up to [`GROUP`] vectors), in order.
    ///
    /// Every vector is summed by the tree `_mm512_reduce_add_ps` uses (lane i + lane i+8,
    /// then +4, +2, +1), whatever the others hold, so a row's sum does not depend on its
    /// neighbours; the vectors share the shuffles and adds: four levels, each halving the
    /// lanes per vector and doubling the vectors per register.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn hsum_rows<const R: usize>(v: &[__m512; R]) -> [f32; R] {
        const { assert!(R <= 16) };
        let z = _mm512_setzero_ps();
        // Padded with zero vectors: a pair or a lane group never straddles the padding
        // into a real vector's sum, it only fills the lanes nobody reads.
        let mut l0 = [z; 16];
        l0[..R].copy_from_slice(v);
        // Level 1: [a_lo8 + a_hi8 | b_lo8 + b_hi8].
        let n1 = R.div_ceil(2);
        let mut l1 = [z; 8];
        for t in 0..n1 {
            let (a, b) = (l0[2 * t], l0[2 * t + 1]);
            l1[t] = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xee>(a, b),
            );
        }
        // Level 2: four vectors of 4 lanes each.
        let n2 = n1.div_ceil(2);
        let mut l2 = [z; 4];
        for t in 0..n2 {
            let (a, b) = (l1[2 * t], l1[2 * t + 1]);
            l2[t] = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xdd>(a, b),
            );
        }
        // Level 3: lanes [p0+p2, q0+q2, p1+p3, q1+q3] in each 128-bit lane.
        let n3 = n2.div_ceil(2);
        let mut l3 = [z; 2];
        for t in 0..n3 {
            let (a, b) = (l2[2 * t], l2[2 * t + 1]);
            l3[t] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        // Level 4: vector q (of 16) ends in lane 4·(q mod 4) + q / 4.
        let (a, b) = (_mm512_castps_pd(l3[0]), _mm512_castps_pd(l3[1]));
        let s = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        );
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), s);
        std::array::from_fn(|q| lanes[4 * (q % 4) + q / 4])
    }
}
