//! The runtime's own CPU matmul kernels for the 32-value GGUF block formats (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0), in the block layouts ggml and candle use.
//!
//! Why our own: candle 0.11 has no SIMD path on x86 for Q4_1, Q5_0 and Q5_1 (the formats of
//! SmolLM2's and Qwen2-0.5B's published GGUF files), so those ran scalar, 5–6× behind
//! llama.cpp. And speculative decoding needs more than speed: a k-row verify pass must give
//! every row the bits it gets alone, and should cost much less than k one-row steps.
//!
//! How:
//! - activations are quantized once per row to 32-value blocks of i8 with an f32 scale (and
//!   the scaled sum the `_1` formats need), as llama.cpp's `q8_0`/`q8_1`;
//! - threads split the output columns (candle's persistent barrier pool, so this and candle's
//!   own kernels share one set of workers); a column is computed by one thread from start to
//!   end, so the thread count never changes a result;
//! - rows are handled in groups of up to [`GROUP`]: each weight block is unpacked once and
//!   used for every row of the group, while each row keeps its own accumulator, updated in
//!   block order with the same instruction sequence as when the row is alone. Chunk results
//!   are therefore bit-identical to one-row results by construction, for any chunk length;
//! - AVX2 + FMA + F16C when the CPU has them (runtime detection), a portable scalar path
//!   otherwise. The two give different roundings; a process uses one of them throughout.

use candle_core::quantized::GgmlDType;

/// Values per block of every format here (and of the quantized activations).
pub const QK: usize = 32;

/// Rows that share one unpacked weight block.
const GROUP: usize = 4;

/// Rows per tile of a long chunk (prefill): the tile's quantized activations stay in L1/L2
/// while every column of the thread's share is swept.
const ROW_TILE: usize = 32;

/// A weight format with its own kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Format {
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            _ => return None,
        })
    }

    /// Bytes per block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
        }
    }

    /// Whether blocks carry a minimum (`w = d·q + m`) rather than a signed offset.
    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }
}

/// One block of quantized activations: `x ≈ d · qs`, `s = d · Σ qs`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// Quantizes one row of `k` activations (`k` a multiple of 32) into `out`.
pub fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (xs, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            let r = (v * id).round() as i8;
            *q = r;
            sum += r as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// IEEE half → single (exact), for the portable path.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalize.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
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
            (w, read_f16(b, 0), 0.0)
        }
        Format::Q4_1 => {
            nib(&b[4..20], &mut w);
            (w, read_f16(b, 0), read_f16(b, 2))
        }
        Format::Q5_0 => {
            nib(&b[6..22], &mut w);
            high(qh_at(2), &mut w);
            w.iter_mut().for_each(|v| *v -= 16);
            (w, read_f16(b, 0), 0.0)
        }
        Format::Q5_1 => {
            nib(&b[8..24], &mut w);
            high(qh_at(4), &mut w);
            (w, read_f16(b, 0), read_f16(b, 2))
        }
        Format::Q8_0 => {
            for (v, &q) in w.iter_mut().zip(&b[2..34]) {
                *v = q as i8 as i32;
            }
            (w, read_f16(b, 0), 0.0)
        }
    }
}

/// Portable dot products of one weight row with `acts.len()` activation rows.
fn dot_rows_scalar(f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
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
                mins[r] += m * a.s;
            }
        }
    }
    for r in 0..acts.len() {
        out[r] = acc[r] + mins[r];
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ActBlock, Format, GROUP};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn f16(p: *const u8) -> f32 {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    /// 32 nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in bytes 16..32.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
        _mm256_set_m128i(hi, lo)
    }

    /// 32 bits → 32 bytes of 0xff (bit set) or 0x00 (llama.cpp's `bytes_from_bits_32`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn bits(p: *const u8) -> __m256i {
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
    unsafe fn unpack(f: Format, p: *const u8) -> (__m256i, f32, f32) {
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
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Dot products of one weight row with up to [`GROUP`] activation rows; each row's
    /// arithmetic is independent of how many rows share the call.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `wrow` holds `acts[r].len()` blocks of `f`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_rows(f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
        // Monomorphized per format and row count, so the format's unpacking is straight-line
        // code and the accumulators live in registers.
        macro_rules! rows {
            ($fmt:expr) => {
                match acts.len() {
                    1 => dot_impl::<{ $fmt }, 1>(wrow, acts, out),
                    2 => dot_impl::<{ $fmt }, 2>(wrow, acts, out),
                    3 => dot_impl::<{ $fmt }, 3>(wrow, acts, out),
                    _ => dot_impl::<{ $fmt }, GROUP>(wrow, acts, out),
                }
            };
        }
        match f {
            Format::Q4_0 => rows!(0),
            Format::Q4_1 => rows!(1),
            Format::Q5_0 => rows!(2),
            Format::Q5_1 => rows!(3),
            Format::Q8_0 => rows!(4),
        }
    }

    const fn format(code: u8) -> Format {
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
                    mins[r] += m * a.s;
                }
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

/// Which implementation this process uses (decided once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx2,
    Portable,
}

pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() && std::env::var_os("IANVS_PORTABLE_KERNELS").is_none() {
            return Isa::Avx2;
        }
        Isa::Portable
    })
}

fn dot_rows(isa: Isa, f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen after runtime detection of AVX2, FMA and F16C.
        Isa::Avx2 => unsafe { avx2::dot_rows(f, wrow, acts, out) },
        _ => dot_rows_scalar(f, wrow, acts, out),
    }
}

/// A weight matrix `[n, k]` in one of the [`Format`]s, stored as the file had it.
pub struct QMatrix {
    format: Format,
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl QMatrix {
    /// `data`: `n` rows of `k / 32` blocks; `None` when the format has no kernel here or `k` is
    /// not a multiple of 32.
    pub fn new(dtype: GgmlDType, n: usize, k: usize, data: Vec<u8>) -> Option<Self> {
        let format = Format::of(dtype)?;
        if !k.is_multiple_of(QK) || data.len() != n * k / QK * format.block_bytes() {
            return None;
        }
        Some(Self { format, n, k, data })
    }

    /// Output features (`n`).
    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn size_in_bytes(&self) -> usize {
        self.data.len()
    }

    /// `x`: `m` rows of `k` values → `m` rows of `n` outputs, with `isa`'s kernels.
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "activations do not match [{m}, {k}]");
        let kb = k / QK;
        let mut acts = vec![
            ActBlock {
                d: 0.0,
                s: 0.0,
                qs: [0; QK]
            };
            m * kb
        ];
        for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
            quantize_row(xr, ar);
        }
        let mut out = vec![0f32; m * n];
        let row_bytes = kb * self.format.block_bytes();
        let out_ptr = out.as_mut_ptr() as usize;
        let work = |cols: std::ops::Range<usize>| {
            let mut tmp = [0f32; GROUP];
            for tile in (0..m).step_by(ROW_TILE) {
                let tile_end = m.min(tile + ROW_TILE);
                for col in cols.clone() {
                    let wrow = &self.data[col * row_bytes..(col + 1) * row_bytes];
                    for g in (tile..tile_end).step_by(GROUP) {
                        let g_end = tile_end.min(g + GROUP);
                        let mut rows: [&[ActBlock]; GROUP] = [&[]; GROUP];
                        for (slot, r) in rows.iter_mut().zip(g..g_end) {
                            *slot = &acts[r * kb..(r + 1) * kb];
                        }
                        let cnt = g_end - g;
                        dot_rows(isa, self.format, wrow, &rows[..cnt], &mut tmp[..cnt]);
                        for (j, r) in (g..g_end).enumerate() {
                            // SAFETY: column `col` of every row is written by exactly this
                            // work item, and `out` outlives the pool call.
                            unsafe { *(out_ptr as *mut f32).add(r * n + col) = tmp[j] };
                        }
                    }
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(n, work);
        out
    }

    /// [`QMatrix::matmul_with`] on this process's kernels.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(isa(), x, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    const TYPES: [GgmlDType; 5] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
    ];

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if isa() == Isa::Avx2 {
            v.push(Isa::Avx2);
        }
        v
    }

    fn matrix(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (QMatrix, QTensor) {
        let w = Tensor::from_vec(random(n * k, seed), (n, k), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, dtype).unwrap();
        let m = QMatrix::new(dtype, n, k, qt.data().unwrap().to_vec()).unwrap();
        (m, qt)
    }

    /// Every row of a chunk of 2..=33 rows (groups, remainders and row tiles included) has
    /// the bits it has when multiplied alone, on every kernel set this CPU runs.
    #[test]
    fn chunk_rows_equal_single_rows_bit_for_bit() {
        let (n, k, m) = (37, 256, 33);
        let x = random(m * k, 5);
        for dtype in TYPES {
            let (w, _) = matrix(dtype, n, k, 3);
            for isa in isas() {
                let singles: Vec<Vec<f32>> = (0..m)
                    .map(|r| w.matmul_with(isa, &x[r * k..(r + 1) * k], 1))
                    .collect();
                for rows in [2, 3, 4, 5, 8, 9, 17, 32, 33] {
                    let all = w.matmul_with(isa, &x[..rows * k], rows);
                    for r in 0..rows {
                        let got: Vec<u32> = all[r * n..(r + 1) * n]
                            .iter()
                            .map(|v| v.to_bits())
                            .collect();
                        let want: Vec<u32> = singles[r].iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{dtype:?} {isa:?}: row {r} of {rows}");
                    }
                }
            }
        }
    }

    /// The kernels agree with dequantize + f32 matmul up to the activation quantization
    /// (8-bit, relative error ~0.4 % per value), and the SIMD path with the portable one
    /// up to float reassociation.
    #[test]
    fn kernels_match_dequantized_matmul() {
        let (n, k, m) = (19, 512, 3);
        let x = random(m * k, 9);
        for dtype in TYPES {
            let (w, qt) = matrix(dtype, n, k, 4);
            let dense = qt.dequantize(&Device::Cpu).unwrap();
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let want: Vec<f32> = xt
                .matmul(&dense.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let mut per_isa = Vec::new();
            for isa in isas() {
                let got = w.matmul_with(isa, &x, m);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 0.02 * scale,
                        "{dtype:?} {isa:?} [{i}]: {g} vs {e} (scale {scale})"
                    );
                }
                per_isa.push(got);
            }
            if per_isa.len() == 2 {
                for (a, b) in per_isa[0].iter().zip(&per_isa[1]) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale.max(1.0),
                        "{dtype:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        for h in [
            0u16, 0x3c00, 0xbc00, 0x0001, 0x03ff, 0x7bff, 0x3555, 0x8400, 0x7c00,
        ] {
            let want = half_reference(h);
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "{h:#06x}");
        }
    }

    /// f16 → f32 through candle (which uses the `half` crate).
    fn half_reference(h: u16) -> f32 {
        let bytes = h.to_le_bytes().to_vec();
        let t =
            Tensor::from_raw_buffer(&bytes, candle_core::DType::F16, &[1], &Device::Cpu).unwrap();
        t.to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }
}
