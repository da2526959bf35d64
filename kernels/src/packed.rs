//! The AVX-512 layout of the 32-value formats: 16 output columns interleaved, so one
//! `vpdpbusd` multiplies 4 values of one activation row (broadcast) with 4 values of each of
//! 16 columns, and a block's float step (convert, scale, accumulate) serves 16 columns.
//!
//! In the file's layout a block's 32 products land in the lanes of one vector and its float
//! step serves one column: a row costs `vpdpbusd`, a scale load, a multiply, a convert and a
//! multiply-add per 64 values, which makes a verify pass compute-bound long before it reads
//! the weights (a 9-row pass of 1536-wide rows: 14 multiply-adds per cycle). Here a row costs
//! 8 `vpdpbusd` and the same 3 float operations per 512 values (16 columns × one block), and
//! each column's sum ends in its own lane: no horizontal sums.
//!
//! Layout, per group of 16 columns (`g`) and block (`b`), in `q`: the block's values as
//! unsigned integers `u` (`w = d·(u − off)` for the `_0` formats, off = 128 for Q8_0, 8 for
//! Q4_0, 16 for Q5_0; `w = d·u + m` for the `_1` formats):
//! - Q8_0, 8 lines of 64 bytes: line `t`, lane `c` (bytes `4c..4c+4`) = values `4t..4t+4` of
//!   column `c`;
//! - Q4_0/Q4_1, 4 lines: line `j`, lane `c`: the low nibbles are values `4j..4j+4`, the high
//!   nibbles values `16+4j..16+4j+4`;
//! - Q5_0/Q5_1, those 4 lines and a fifth: byte `i` of lane `c`, bit `t`, is the fifth bit of
//!   value `4t + i` (step `t` of the 8 below: low nibbles of line `t`, then high nibbles).
//!
//! The scales `d` (and minimums `m`) are f16, 16 per (group, block), in arrays of their own;
//! a matrix takes exactly its file's bytes. Packing is exact and reversible ([`unpack`]).
//!
//! Arithmetic per (row, group, block): `dot = Σ u·a` in i32 lanes (exact: unsigned weights,
//! signed activations, 8 steps of 4 values), minus `off · Σ a` (exact), then
//! `acc = fma(float(dot), d_w · d_a, acc)` and for the `_1` formats
//! `acc = fma(m_w, d_a · Σ a, acc)`. Every row has its own accumulators and the same
//! instruction sequence whatever shares the call, and a column's blocks are summed in order in
//! one lane: the bits of a row never depend on the other rows, on the thread count or on how
//! the columns are split.

use crate::q32::ActBlock;
use crate::{Format, QK};

/// Columns per group.
pub(crate) const COLS: usize = 16;

/// One aligned 64-byte line (a 512-bit vector).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; 64]);

/// A matrix in the interleaved layout (see the module).
#[derive(Clone)]
pub(crate) struct Packed {
    pub(crate) format: Format,
    n: usize,
    k: usize,
    q: Vec<Line>,
    d: Vec<u16>,
    m: Vec<u16>,
    /// K-quants: each (group, block)'s sub-block scales (and minimums), bytes (see [`pack_k`]).
    s: Vec<u8>,
}

/// Lines of `q` per (group, block): 64 bytes each (see the layouts above and below).
const fn lines(f: Format) -> usize {
    match f {
        Format::Q8_0 => 8,
        Format::Q4_0 | Format::Q4_1 => 4,
        Format::Q5_0 | Format::Q5_1 => 5,
        Format::Q4K => 32,
        Format::Q5K => 40,
        Format::Q6K => 48,
    }
}

/// The offset `u − q` of a `_0` format's unsigned values (0 for the `_1` formats).
pub(crate) const fn offset(f: Format) -> i32 {
    match f {
        Format::Q8_0 => 128,
        Format::Q4_0 => 8,
        Format::Q5_0 => 16,
        _ => 0,
    }
}

/// Whether a matrix of `n` output columns can take this layout (any format).
pub(crate) fn fits(n: usize) -> bool {
    n.is_multiple_of(COLS) && n > 0
}

/// A block's values as unsigned integers, its scale and minimum (f16 bits; 0 without one).
fn raw(f: Format, b: &[u8]) -> ([u8; QK], u16, u16) {
    let h = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let mut u = [0u8; QK];
    let nib = |qs: &[u8], u: &mut [u8; QK]| {
        for j in 0..QK / 2 {
            u[j] = qs[j] & 0x0f;
            u[j + QK / 2] = qs[j] >> 4;
        }
    };
    let high = |qh: &[u8], u: &mut [u8; QK]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (j, v) in u.iter_mut().enumerate() {
            *v |= (((qh >> j) & 1) << 4) as u8;
        }
    };
    match f {
        Format::Q4_0 => {
            nib(&b[2..18], &mut u);
            (u, h(0), 0)
        }
        Format::Q4_1 => {
            nib(&b[4..20], &mut u);
            (u, h(0), h(2))
        }
        Format::Q5_0 => {
            nib(&b[6..22], &mut u);
            high(&b[2..6], &mut u);
            (u, h(0), 0)
        }
        Format::Q5_1 => {
            nib(&b[8..24], &mut u);
            high(&b[4..8], &mut u);
            (u, h(0), h(2))
        }
        Format::Q8_0 => {
            for (v, &q) in u.iter_mut().zip(&b[2..34]) {
                *v = q ^ 0x80;
            }
            (u, h(0), 0)
        }
        Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants keep the file layout"),
    }
}

/// The file's bytes of one block from its unsigned values, scale and minimum ([`raw`]'s inverse).
fn block(f: Format, u: &[u8; QK], d: u16, m: u16, out: &mut [u8]) {
    out[..2].copy_from_slice(&d.to_le_bytes());
    if f.has_min() {
        out[2..4].copy_from_slice(&m.to_le_bytes());
    }
    let nib = |qs: &mut [u8]| {
        for j in 0..QK / 2 {
            qs[j] = (u[j] & 0x0f) | (u[j + QK / 2] << 4);
        }
    };
    let qh = || {
        u.iter()
            .enumerate()
            .fold(0u32, |h, (j, &v)| h | (((v >> 4) as u32 & 1) << j))
            .to_le_bytes()
    };
    match f {
        Format::Q4_0 => nib(&mut out[2..18]),
        Format::Q4_1 => nib(&mut out[4..20]),
        Format::Q5_0 => {
            out[2..6].copy_from_slice(&qh());
            nib(&mut out[6..22]);
        }
        Format::Q5_1 => {
            out[4..8].copy_from_slice(&qh());
            nib(&mut out[8..24]);
        }
        Format::Q8_0 => {
            for (q, &v) in out[2..34].iter_mut().zip(u) {
                *q = v ^ 0x80;
            }
        }
        Format::Q4K | Format::Q5K | Format::Q6K => unreachable!("K-quants keep the file layout"),
    }
}

/// `data` (`n` rows of `k / 32` blocks of `f`, the file's layout) in the interleaved layout;
/// `n` must [`fits`].
pub(crate) fn pack(f: Format, n: usize, k: usize, data: &[u8]) -> Packed {
    debug_assert!(fits(n));
    if f.kquant().is_some() {
        return pack_k(f, n, k, data);
    }
    let (kb, bb, nl) = (k / QK, f.block_bytes(), lines(f));
    let groups = n / COLS;
    let mut q = vec![Line([0; 64]); groups * kb * nl];
    let mut d = vec![0u16; groups * kb * COLS];
    let mut m = if f.has_min() {
        vec![0u16; groups * kb * COLS]
    } else {
        Vec::new()
    };
    for g in 0..groups {
        for b in 0..kb {
            let at = g * kb + b;
            let ls = &mut q[at * nl..(at + 1) * nl];
            for c in 0..COLS {
                let col = g * COLS + c;
                let src = &data[(col * kb + b) * bb..(col * kb + b + 1) * bb];
                let (u, dh, mh) = raw(f, src);
                d[at * COLS + c] = dh;
                if f.has_min() {
                    m[at * COLS + c] = mh;
                }
                for (kk, &v) in u.iter().enumerate() {
                    let (i, t) = (kk % 4, kk / 4);
                    if f == Format::Q8_0 {
                        ls[t].0[4 * c + i] = v;
                    } else {
                        // Step t < 4: low nibble of line t; t ≥ 4: high nibble of line t − 4.
                        ls[t % 4].0[4 * c + i] |= (v & 0x0f) << (4 * (t / 4));
                        if nl == 5 {
                            ls[4].0[4 * c + i] |= ((v >> 4) & 1) << t;
                        }
                    }
                }
            }
        }
    }
    Packed {
        format: f,
        n,
        k,
        q,
        d,
        m,
        s: Vec::new(),
    }
}

/// The file's layout of a packed matrix ([`pack`]'s exact inverse).
pub(crate) fn unpack(p: &Packed) -> Vec<u8> {
    let f = p.format;
    if f.kquant().is_some() {
        return unpack_k(p);
    }
    let (kb, bb, nl) = (p.k / QK, f.block_bytes(), lines(f));
    let mut data = vec![0u8; p.n * kb * bb];
    for g in 0..p.n / COLS {
        for b in 0..kb {
            let at = g * kb + b;
            let ls = &p.q[at * nl..(at + 1) * nl];
            for c in 0..COLS {
                let mut u = [0u8; QK];
                for (kk, v) in u.iter_mut().enumerate() {
                    let (i, t) = (kk % 4, kk / 4);
                    *v = if f == Format::Q8_0 {
                        ls[t].0[4 * c + i]
                    } else {
                        let mut x = (ls[t % 4].0[4 * c + i] >> (4 * (t / 4))) & 0x0f;
                        if nl == 5 {
                            x |= ((ls[4].0[4 * c + i] >> t) & 1) << 4;
                        }
                        x
                    };
                }
                let mh = if f.has_min() { p.m[at * COLS + c] } else { 0 };
                let col = g * COLS + c;
                let out = &mut data[(col * kb + b) * bb..(col * kb + b + 1) * bb];
                block(f, &u, p.d[at * COLS + c], mh, out);
            }
        }
    }
    data
}

/// Per-row extras of the activations a packed product needs besides the blocks: the `_0`
/// formats' integer correction `−off · Σ a` (one array per offset in use) and the `_1`
/// formats' `d_a · Σ a`.
pub(crate) struct Extras {
    /// `(offset, m × kb values)`.
    pub(crate) corr: Vec<(i32, Vec<i32>)>,
    pub(crate) sums: Vec<f32>,
}

impl Extras {
    pub(crate) fn new(formats: &[Format], acts: &[ActBlock]) -> Self {
        let mut corr: Vec<(i32, Vec<i32>)> = Vec::new();
        let mut sums = Vec::new();
        for &f in formats {
            let off = offset(f);
            if off != 0 && !corr.iter().any(|(o, _)| *o == off) {
                corr.push((off, acts.iter().map(|a| -off * a.isum).collect()));
            }
            if f.has_min() && sums.is_empty() {
                sums = acts.iter().map(|a| a.s()).collect();
            }
        }
        Self { corr, sums }
    }

    pub(crate) fn corr(&self, f: Format) -> &[i32] {
        let off = offset(f);
        self.corr
            .iter()
            .find(|(o, _)| *o == off)
            .map_or(&[][..], |(_, v)| v.as_slice())
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{lines, Packed, COLS};
    use crate::q32::avx2::format;
    use crate::q32::ActBlock;
    use crate::{Format, QK};
    use std::arch::x86_64::*;

    /// Blocks ahead that a group's weight lines are prefetched: the hardware prefetcher alone
    /// leaves a multi-row pass waiting on memory while it computes (`cargo bench -p
    /// ianvs-kernels --bench kernels`, 2 threads, 78 MB of Q8_0 weights: 9 rows 148 → 245–258
    /// GMAC/s at 8 blocks; 16 blocks about the same; one row unchanged).
    const PREFETCH_BLOCKS: usize = 8;

    /// Column group `g` of `p` against `acts` (1 to [`crate::GROUP`] rows of `k / 32`
    /// blocks; `corr`/`sums` the rows' [`super::Extras`] slices, empty where the format needs
    /// none): `out[r][c]` = row `r` · column `16g + c`.
    ///
    /// # Safety
    /// The CPU must have the features of [`crate::Isa::Avx512`].
    pub(crate) unsafe fn group(
        p: &Packed,
        g: usize,
        acts: &[&[ActBlock]],
        corr: &[&[i32]],
        sums: &[&[f32]],
        out: &mut [[f32; COLS]],
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match acts.len() {
                    $($r => by_format::<$r>(p, g, acts, corr, sums, out),)*
                    n => unreachable!("{n} rows in one packed group"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12 13)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn by_format<const R: usize>(
        p: &Packed,
        g: usize,
        acts: &[&[ActBlock]],
        corr: &[&[i32]],
        sums: &[&[f32]],
        out: &mut [[f32; COLS]],
    ) {
        // The codes of `q32::avx2::format`.
        match p.format {
            Format::Q4_0 => kernel::<0, R>(p, g, acts, corr, sums, out),
            Format::Q4_1 => kernel::<1, R>(p, g, acts, corr, sums, out),
            Format::Q5_0 => kernel::<2, R>(p, g, acts, corr, sums, out),
            Format::Q5_1 => kernel::<3, R>(p, g, acts, corr, sums, out),
            Format::Q8_0 => kernel::<4, R>(p, g, acts, corr, sums, out),
            f => unreachable!("{f:?} is not a 32-value format"),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn kernel<const FMT: u8, const R: usize>(
        p: &Packed,
        g: usize,
        acts: &[&[ActBlock]],
        corr: &[&[i32]],
        sums: &[&[f32]],
        out: &mut [[f32; COLS]],
    ) {
        let f = const { format(FMT) };
        let nl = const { lines(format(FMT)) };
        let off = super::offset(f) != 0;
        let min = f.has_min();
        let kb = p.k / QK;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() == kb));
        debug_assert!(!off || corr.iter().all(|c| c.len() == kb));
        debug_assert!(!min || sums.iter().all(|s| s.len() == kb));
        // Independent integer chains per row: a lone row's 8 steps would otherwise wait on
        // each other's latency. Integer sums are exact, so the split never changes a bit.
        let chains = match R {
            1 => 4,
            2 => 2,
            _ => 1,
        };
        let qbase = p.q.as_ptr().add(g * kb * nl) as *const u8;
        let dbase = p.d.as_ptr().add(g * kb * COLS);
        let mbase = if min {
            p.m.as_ptr().add(g * kb * COLS)
        } else {
            dbase
        };
        let a: [*const ActBlock; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let cp: [*const i32; R] = std::array::from_fn(|r| {
            if off {
                corr[r].as_ptr()
            } else {
                std::ptr::null()
            }
        });
        let sp: [*const f32; R] = std::array::from_fn(|r| {
            if min {
                sums[r].as_ptr()
            } else {
                std::ptr::null()
            }
        });
        let nib = _mm512_set1_epi8(0x0f);
        let sixteen = _mm512_set1_epi8(16);
        let mut acc = [_mm512_setzero_ps(); R];
        let pf = PREFETCH_BLOCKS;
        for b in 0..kb {
            let qb = qbase.add(b * nl * 64);
            // Ahead of the hardware prefetcher: this group's weight stream (running on into
            // the next group's, which follows it; a prefetch past the end is harmless).
            let ahead = qb.wrapping_add(pf * nl * 64);
            for l in 0..nl {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l) as *const i8);
            }
            if b % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(dbase.wrapping_add((b + pf) * COLS) as *const i8);
                if min {
                    _mm_prefetch::<_MM_HINT_T0>(mbase.wrapping_add((b + pf) * COLS) as *const i8);
                }
            }
            let mut dot = [[_mm512_setzero_si512(); R]; 4];
            if off {
                for r in 0..R {
                    dot[0][r] = _mm512_set1_epi32(*cp[r].add(b));
                }
            }
            // Step t: the 4 values 4t..4t+4 of every column against each row's broadcast.
            // (A macro, not a closure: a closure would not inherit the target features.)
            macro_rules! step {
                ($t:expr, $w:expr) => {{
                    let (t, w) = ($t, $w);
                    let ch = t % chains;
                    for r in 0..R {
                        let qs = (*a[r].add(b)).qs.as_ptr().add(4 * t) as *const i32;
                        let x = _mm512_set1_epi32(qs.read_unaligned());
                        dot[ch][r] = _mm512_dpbusd_epi32(dot[ch][r], w, x);
                    }
                }};
            }
            if nl == 8 {
                for t in 0..8 {
                    let w = _mm512_load_si512(qb.add(64 * t) as *const __m512i);
                    step!(t, w);
                }
            } else {
                let hi = if nl == 5 {
                    _mm512_load_si512(qb.add(256) as *const __m512i)
                } else {
                    _mm512_setzero_si512()
                };
                for j in 0..4 {
                    let l = _mm512_load_si512(qb.add(64 * j) as *const __m512i);
                    let mut lo = _mm512_and_si512(l, nib);
                    let mut up = _mm512_and_si512(_mm512_srli_epi16::<4>(l), nib);
                    if nl == 5 {
                        let ml = _mm512_test_epi8_mask(hi, _mm512_set1_epi8(1 << j));
                        let mu = _mm512_test_epi8_mask(hi, _mm512_set1_epi8(1 << (j + 4)));
                        lo = _mm512_mask_add_epi8(lo, ml, lo, sixteen);
                        up = _mm512_mask_add_epi8(up, mu, up, sixteen);
                    }
                    step!(j, lo);
                    step!(j + 4, up);
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(dbase.add(b * COLS) as *const __m256i));
            let mw = if min {
                _mm512_cvtph_ps(_mm256_loadu_si256(mbase.add(b * COLS) as *const __m256i))
            } else {
                _mm512_setzero_ps()
            };
            for r in 0..R {
                let mut s = dot[0][r];
                for c in dot.iter().take(chains).skip(1) {
                    s = _mm512_add_epi32(s, c[r]);
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps((*a[r].add(b)).d));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
                if min {
                    acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*sp[r].add(b)), acc[r]);
                }
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Packing keeps every byte of the file: unpacking gives it back exactly, for every
    /// 32-value format (random weights, so every nibble and fifth bit occurs).
    #[test]
    fn pack_then_unpack_gives_the_file_bytes() {
        let (n, k) = (48, 96);
        let w = crate::tests::random(n * k, 7);
        let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        // K-quants need rows of 256: the same values, 3 blocks per row.
        let tk = t.reshape((n / 8, k * 8)).unwrap();
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let f = Format::of(dt).unwrap();
            if f.kquant().is_some() {
                let q = QTensor::quantize(&tk, dt).unwrap();
                let bytes = q.data().unwrap().to_vec();
                // 6 columns are too few for a group: widen to 16 by repeating rows.
                let wide: Vec<u8> = bytes
                    .iter()
                    .copied()
                    .cycle()
                    .take(bytes.len() / 6 * 16)
                    .collect();
                let p = pack(f, 16, k * 8, &wide);
                assert_eq!(unpack(&p), wide, "{dt:?}");
                continue;
            }
            let q = QTensor::quantize(&t, dt).unwrap();
            let bytes = q.data().unwrap().to_vec();
            assert!(fits(n) && !fits(n + 3));
            let p = pack(f, n, k, &bytes);
            assert_eq!(unpack(&p), bytes, "{dt:?}");
        }
    }
}

// ---- K-quants (Q4_K, Q5_K, Q6_K) ----
//
// Per (group, 256-value block): the values as unsigned integers `u` (Q4_K 0..15, Q5_K 0..31,
// Q6_K `q + 32`, 0..63) in `q`:
// - lines `4j..4j + 4`, sub-block `j` (values `32j..32j + 32`) in the 32-value formats' nibble
//   layout (line `l`, lane `c`: low nibbles values `4l..4l+4`, high nibbles `16+4l..16+4l+4`);
// - Q5_K: line `32 + j`, byte `i` of lane `c`, bit `t`: the fifth bit of value `32j + 4t + i`;
// - Q6_K: lines `32 + 2j + h`, byte `i` of lane `c`, bits `2s, 2s+1`: bits 4-5 of value
//   `32j + 4(4h + s) + i`.
// `d` (and `m`: `dmin`) f16 per column; `s`, 256 bytes: Q4_K/Q5_K the 8 scales (16 bytes
// each: one per column), then the minimums as 4 × 32 bytes (`m[2i]`, `m[2i+1]` per column);
// Q6_K the 16 signed scales (16 bytes each).
//
// A row's block result is the integers of `kquant.rs`, exactly (`sumi = Σ sc · Σ q·a`,
// `summ = Σ m · Σ a`), then the same float expression, so the bits equal every other K-quant
// kernel set's.

/// A K-quant block's unsigned values, f16 scale (and `dmin`) bits, and sub-block scales and
/// minimums (Q6_K: 16 signed scales as bytes, no minimums).
fn raw_k(f: Format, b: &[u8]) -> ([u8; 256], u16, u16, [u8; 16], [u8; 8]) {
    let h = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let mut u = [0u8; 256];
    let mut sc = [0u8; 16];
    let mut m = [0u8; 8];
    match f {
        Format::Q4K | Format::Q5K => {
            let (s8, m8) = crate::kquant::scale_min_k4(&b[4..16]);
            sc[..8].copy_from_slice(&s8);
            m.copy_from_slice(&m8);
            let (qh, qs) = if f == Format::Q5K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for j in 0..4 {
                for l in 0..32 {
                    let byte = qs[32 * j + l];
                    let (mut lo, mut hi) = (byte & 0x0f, byte >> 4);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                        hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                    }
                    u[64 * j + l] = lo;
                    u[64 * j + 32 + l] = hi;
                }
            }
            (u, h(0), h(2), sc, m)
        }
        _ => {
            let (ql, qh) = (&b[0..128], &b[128..192]);
            sc.copy_from_slice(&b[192..208]);
            for n in 0..2 {
                let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                let y = &mut u[128 * n..];
                for l in 0..32 {
                    let hb = qh[l];
                    y[l] = (ql[l] & 0x0f) | ((hb & 3) << 4);
                    y[l + 32] = (ql[l + 32] & 0x0f) | (((hb >> 2) & 3) << 4);
                    y[l + 64] = (ql[l] >> 4) | (((hb >> 4) & 3) << 4);
                    y[l + 96] = (ql[l + 32] >> 4) | (((hb >> 6) & 3) << 4);
                }
            }
            (u, h(208), 0, sc, m)
        }
    }
}

/// The file's bytes of one K-quant block ([`raw_k`]'s inverse).
fn block_k(
    f: Format,
    u: &[u8; 256],
    d: u16,
    dmin: u16,
    sc: &[u8; 16],
    m: &[u8; 8],
    out: &mut [u8],
) {
    match f {
        Format::Q4K | Format::Q5K => {
            out[0..2].copy_from_slice(&d.to_le_bytes());
            out[2..4].copy_from_slice(&dmin.to_le_bytes());
            let s = &mut out[4..16];
            for j in 0..4 {
                s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
                s[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
                s[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
            }
            let q5 = f == Format::Q5K;
            let qs_at = if q5 { 48 } else { 16 };
            for j in 0..4 {
                for l in 0..32 {
                    let (lo, hi) = (u[64 * j + l], u[64 * j + 32 + l]);
                    out[qs_at + 32 * j + l] = (lo & 0x0f) | ((hi & 0x0f) << 4);
                    if q5 {
                        if j == 0 {
                            out[16 + l] = 0;
                        }
                        out[16 + l] |=
                            (((lo >> 4) & 1) << (2 * j)) | (((hi >> 4) & 1) << (2 * j + 1));
                    }
                }
            }
        }
        _ => {
            for n in 0..2 {
                let y = &u[128 * n..];
                for l in 0..32 {
                    out[64 * n + l] = (y[l] & 0x0f) | ((y[l + 64] & 0x0f) << 4);
                    out[64 * n + l + 32] = (y[l + 32] & 0x0f) | ((y[l + 96] & 0x0f) << 4);
                    out[128 + 32 * n + l] = (y[l] >> 4)
                        | ((y[l + 32] >> 4) << 2)
                        | ((y[l + 64] >> 4) << 4)
                        | ((y[l + 96] >> 4) << 6);
                }
            }
            out[192..208].copy_from_slice(sc);
            out[208..210].copy_from_slice(&d.to_le_bytes());
        }
    }
}

fn pack_k(f: Format, n: usize, k: usize, data: &[u8]) -> Packed {
    let (kb, bb, nl) = (k / 256, f.block_bytes(), lines(f));
    let groups = n / COLS;
    let mut q = vec![Line([0; 64]); groups * kb * nl];
    let mut d = vec![0u16; groups * kb * COLS];
    let mut m = if f.has_min_k() {
        vec![0u16; groups * kb * COLS]
    } else {
        Vec::new()
    };
    let mut s = vec![0u8; groups * kb * 256];
    for g in 0..groups {
        for b in 0..kb {
            let at = g * kb + b;
            let ls = &mut q[at * nl..(at + 1) * nl];
            let ss = &mut s[at * 256..(at + 1) * 256];
            for c in 0..COLS {
                let col = g * COLS + c;
                let (u, dh, mh, sc, mn) =
                    raw_k(f, &data[(col * kb + b) * bb..(col * kb + b + 1) * bb]);
                d[at * COLS + c] = dh;
                if f.has_min_k() {
                    m[at * COLS + c] = mh;
                    for j in 0..8 {
                        ss[16 * j + c] = sc[j];
                    }
                    for i in 0..4 {
                        ss[128 + 32 * i + 2 * c] = mn[2 * i];
                        ss[128 + 32 * i + 2 * c + 1] = mn[2 * i + 1];
                    }
                } else {
                    for (g16, &v) in sc.iter().enumerate() {
                        ss[16 * g16 + c] = v;
                    }
                }
                for (v_at, &v) in u.iter().enumerate() {
                    let (j, w) = (v_at / 32, v_at % 32);
                    let (i, t) = (w % 4, w / 4);
                    ls[4 * j + t % 4].0[4 * c + i] |= (v & 0x0f) << (4 * (t / 4));
                    match f {
                        Format::Q5K => ls[32 + j].0[4 * c + i] |= ((v >> 4) & 1) << t,
                        Format::Q6K => {
                            ls[32 + 2 * j + t / 4].0[4 * c + i] |= ((v >> 4) & 3) << (2 * (t % 4))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Packed {
        format: f,
        n,
        k,
        q,
        d,
        m,
        s,
    }
}

fn unpack_k(p: &Packed) -> Vec<u8> {
    let f = p.format;
    let (kb, bb, nl) = (p.k / 256, f.block_bytes(), lines(f));
    let mut data = vec![0u8; p.n * kb * bb];
    for g in 0..p.n / COLS {
        for b in 0..kb {
            let at = g * kb + b;
            let ls = &p.q[at * nl..(at + 1) * nl];
            let ss = &p.s[at * 256..(at + 1) * 256];
            for c in 0..COLS {
                let mut u = [0u8; 256];
                for (v_at, v) in u.iter_mut().enumerate() {
                    let (j, w) = (v_at / 32, v_at % 32);
                    let (i, t) = (w % 4, w / 4);
                    let mut x = (ls[4 * j + t % 4].0[4 * c + i] >> (4 * (t / 4))) & 0x0f;
                    match f {
                        Format::Q5K => x |= ((ls[32 + j].0[4 * c + i] >> t) & 1) << 4,
                        Format::Q6K => {
                            x |= ((ls[32 + 2 * j + t / 4].0[4 * c + i] >> (2 * (t % 4))) & 3) << 4
                        }
                        _ => {}
                    }
                    *v = x;
                }
                let mut sc = [0u8; 16];
                let mut mn = [0u8; 8];
                let mut mh = 0;
                if f.has_min_k() {
                    mh = p.m[at * COLS + c];
                    for j in 0..8 {
                        sc[j] = ss[16 * j + c];
                    }
                    for i in 0..4 {
                        mn[2 * i] = ss[128 + 32 * i + 2 * c];
                        mn[2 * i + 1] = ss[128 + 32 * i + 2 * c + 1];
                    }
                } else {
                    for (g16, v) in sc.iter_mut().enumerate() {
                        *v = ss[16 * g16 + c];
                    }
                }
                let col = g * COLS + c;
                let out = &mut data[(col * kb + b) * bb..(col * kb + b + 1) * bb];
                block_k(f, &u, p.d[at * COLS + c], mh, &sc, &mn, out);
            }
        }
    }
    data
}

impl Format {
    /// Q4_K/Q5_K: blocks carry `dmin` and per-sub-block minimums.
    const fn has_min_k(self) -> bool {
        matches!(self, Format::Q4K | Format::Q5K)
    }
}

/// Per-row extras of K-quant activations: Q4_K/Q5_K the 32-value sums in i16 pairs (`4` per
/// block: `Σ a` over sub-blocks `2i`, `2i+1`), Q6_K `−32 · Σ a` per 16 values (`16` per block).
pub(crate) struct ExtrasK {
    pub(crate) pairs: Vec<i32>,
    pub(crate) corr: Vec<i32>,
}

impl ExtrasK {
    pub(crate) fn new(formats: &[Format], acts: &[crate::ActBlockK]) -> Self {
        let (mut pairs, mut corr) = (Vec::new(), Vec::new());
        if formats.iter().any(|f| f.has_min_k()) {
            pairs = acts
                .iter()
                .flat_map(|a| {
                    let s32 = |j: usize| (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32) as i16;
                    (0..4).map(move |i| {
                        (s32(2 * i) as u16 as u32 | ((s32(2 * i + 1) as u16 as u32) << 16)) as i32
                    })
                })
                .collect();
        }
        if formats.contains(&Format::Q6K) {
            corr = acts
                .iter()
                .flat_map(|a| a.bsums.iter().map(|&s| -32 * s as i32))
                .collect();
        }
        Self { pairs, corr }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512k {
    use super::{lines, Packed, COLS};
    use crate::{ActBlockK, Format};
    use std::arch::x86_64::*;

    /// Column group `g` of the K-quant matrix `p` against `acts` (1 to [`crate::GROUP`] rows
    /// of `k / 256` blocks; `pairs`/`corr` the rows' [`super::ExtrasK`] slices, empty where
    /// the format needs none): `out[r][c]` = row `r` · column `16g + c`.
    ///
    /// # Safety
    /// The CPU must have the features of [`crate::Isa::Avx512`].
    pub(crate) unsafe fn group(
        p: &Packed,
        g: usize,
        acts: &[&[ActBlockK]],
        pairs: &[&[i32]],
        corr: &[&[i32]],
        out: &mut [[f32; COLS]],
    ) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match (p.format, acts.len()) {
                    $((Format::Q4K, $r) => kernel::<0, $r>(p, g, acts, pairs, corr, out),
                      (Format::Q5K, $r) => kernel::<1, $r>(p, g, acts, pairs, corr, out),
                      (Format::Q6K, $r) => kernel::<2, $r>(p, g, acts, pairs, corr, out),)*
                    (f, n) => unreachable!("{f:?}, {n} rows in one packed K-quant group"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12 13)
    }

    /// Blocks ahead that a group's weight lines, scales and `d`/`dmin` are prefetched (a
    /// K-quant block of 16 columns is 2–3.4 KB, so 2 blocks is about as far ahead as the
    /// 32-value kernel's 8; kernel bench, 2 threads, one row: Q6_K 5.5–5.9 → 3.0–3.5 ms once
    /// the high-bit lines, scales and `d` were prefetched too).
    const PREFETCH_BLOCKS: usize = 2;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn kernel<const FMT: u8, const R: usize>(
        p: &Packed,
        g: usize,
        acts: &[&[ActBlockK]],
        pairs: &[&[i32]],
        corr: &[&[i32]],
        out: &mut [[f32; COLS]],
    ) {
        let nl = const {
            lines(match FMT {
                0 => Format::Q4K,
                1 => Format::Q5K,
                _ => Format::Q6K,
            })
        };
        let (q5, q6) = (FMT == 1, FMT == 2);
        let kb = p.k / 256;
        debug_assert!(acts.len() == R && acts.iter().all(|a| a.len() == kb));
        let chains = match R {
            1 => 4,
            2 => 2,
            _ => 1,
        };
        let qbase = p.q.as_ptr().add(g * kb * nl) as *const u8;
        let sbase = p.s.as_ptr().add(g * kb * 256);
        let dbase = p.d.as_ptr().add(g * kb * COLS);
        let mbase = if q6 {
            dbase
        } else {
            p.m.as_ptr().add(g * kb * COLS)
        };
        let a: [*const ActBlockK; R] = std::array::from_fn(|r| acts[r].as_ptr());
        let pp: [*const i32; R] = std::array::from_fn(|r| {
            if q6 {
                std::ptr::null()
            } else {
                pairs[r].as_ptr()
            }
        });
        let cp: [*const i32; R] = std::array::from_fn(|r| {
            if q6 {
                corr[r].as_ptr()
            } else {
                std::ptr::null()
            }
        });
        let nib = _mm512_set1_epi8(0x0f);
        let three = _mm512_set1_epi8(3);
        let sixteen = _mm512_set1_epi8(16);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut mins = [_mm512_setzero_ps(); R];
        for b in 0..kb {
            let qb = qbase.add(b * nl * 64);
            let sb_ = sbase.add(b * 256);
            let ahead = qb.wrapping_add(PREFETCH_BLOCKS * nl * 64);
            let mut sumi = [_mm512_setzero_si512(); R];
            for j in 0..8 {
                let qj = qb.add(4 * 64 * j);
                // Every line of the block ahead (nibbles, high bits), its scales (4 lines),
                // and every 4th block its `d`/`dmin` (one line per 2 blocks each).
                for l in (j * nl / 8)..((j + 1) * nl / 8) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l) as *const i8);
                }
                if j < 4 {
                    let s_ahead = sb_.wrapping_add(PREFETCH_BLOCKS * 256 + 64 * j);
                    _mm_prefetch::<_MM_HINT_T0>(s_ahead as *const i8);
                } else if j == 4 && b % 2 == 0 {
                    let at = (b + PREFETCH_BLOCKS) * COLS;
                    _mm_prefetch::<_MM_HINT_T0>(dbase.wrapping_add(at) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(mbase.wrapping_add(at) as *const i8);
                }
                let ls: [__m512i; 4] =
                    std::array::from_fn(|l| _mm512_load_si512(qj.add(64 * l) as *const __m512i));
                let hi5 = if q5 {
                    _mm512_load_si512(qb.add(64 * (32 + j)) as *const __m512i)
                } else {
                    _mm512_setzero_si512()
                };
                // The two halves of the sub-block: steps 0..4 (low nibbles), 4..8 (high).
                // Q4_K/Q5_K sum both halves (one scale per 32 values); Q6_K scales each half
                // (16 values) and starts it at its offset correction.
                let mut dot = [[_mm512_setzero_si512(); R]; 4];
                for half in 0..2 {
                    let hi6 = if q6 {
                        _mm512_load_si512(qb.add(64 * (32 + 2 * j + half)) as *const __m512i)
                    } else {
                        _mm512_setzero_si512()
                    };
                    if q6 {
                        dot = [[_mm512_setzero_si512(); R]; 4];
                        for r in 0..R {
                            dot[0][r] = _mm512_set1_epi32(*cp[r].add(16 * b + 2 * j + half));
                        }
                    }
                    for (l, &line) in ls.iter().enumerate() {
                        let t = 4 * half + l;
                        let mut w = if half == 0 {
                            _mm512_and_si512(line, nib)
                        } else {
                            _mm512_and_si512(_mm512_srli_epi16::<4>(line), nib)
                        };
                        if q5 {
                            let mk = _mm512_test_epi8_mask(hi5, _mm512_set1_epi8(1 << t));
                            w = _mm512_mask_add_epi8(w, mk, w, sixteen);
                        }
                        if q6 {
                            let x = _mm512_srl_epi16(hi6, _mm_cvtsi32_si128(2 * l as i32));
                            w = _mm512_or_si512(
                                w,
                                _mm512_slli_epi16::<4>(_mm512_and_si512(x, three)),
                            );
                        }
                        let ch = l % chains;
                        for r in 0..R {
                            let xs = (*a[r].add(b)).qs.as_ptr().add(32 * j + 4 * t) as *const i32;
                            let x = _mm512_set1_epi32(xs.read_unaligned());
                            dot[ch][r] = _mm512_dpbusd_epi32(dot[ch][r], w, x);
                        }
                    }
                    if q6 || half == 1 {
                        let scv = if q6 {
                            let at = sb_.add(16 * (2 * j + half)) as *const __m128i;
                            _mm512_cvtepi8_epi32(_mm_loadu_si128(at))
                        } else {
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(sb_.add(16 * j) as *const __m128i))
                        };
                        for r in 0..R {
                            let mut s = dot[0][r];
                            for c in dot.iter().take(chains).skip(1) {
                                s = _mm512_add_epi32(s, c[r]);
                            }
                            sumi[r] = _mm512_add_epi32(sumi[r], _mm512_mullo_epi32(s, scv));
                        }
                    }
                }
            }
            let dv = _mm512_cvtph_ps(_mm256_loadu_si256(dbase.add(b * COLS) as *const __m256i));
            for r in 0..R {
                let ad = _mm512_set1_ps((*a[r].add(b)).d);
                acc[r] = _mm512_add_ps(
                    acc[r],
                    _mm512_mul_ps(_mm512_mul_ps(dv, ad), _mm512_cvtepi32_ps(sumi[r])),
                );
            }
            if !q6 {
                let mv: [__m512i; 4] = std::array::from_fn(|i| {
                    _mm512_cvtepu8_epi16(
                        _mm256_loadu_si256(sb_.add(128 + 32 * i) as *const __m256i),
                    )
                });
                let dm = _mm512_cvtph_ps(_mm256_loadu_si256(mbase.add(b * COLS) as *const __m256i));
                for r in 0..R {
                    let mut summ = _mm512_setzero_si512();
                    for (i, &m) in mv.iter().enumerate() {
                        summ =
                            _mm512_dpwssd_epi32(summ, m, _mm512_set1_epi32(*pp[r].add(4 * b + i)));
                    }
                    let ad = _mm512_set1_ps((*a[r].add(b)).d);
                    mins[r] = _mm512_add_ps(
                        mins[r],
                        _mm512_mul_ps(_mm512_mul_ps(dm, ad), _mm512_cvtepi32_ps(summ)),
                    );
                }
            }
        }
        for r in 0..R {
            let v = if q6 {
                acc[r]
            } else {
                _mm512_sub_ps(acc[r], mins[r])
            };
            _mm512_storeu_ps(out[r].as_mut_ptr(), v);
        }
    }
}
