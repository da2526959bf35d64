//! The runtime's own CPU matmul kernels for the GGUF weight formats real files ship: the
//! 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the 256-value K-quants (Q4_K,
//! Q5_K, Q6_K), in the block layouts ggml and candle use.
//!
//! Why our own: candle 0.11 has no SIMD path on x86 for Q4_1, Q5_0 and Q5_1 (the formats of
//! SmolLM2's and Qwen2-0.5B's published GGUF files), so those ran scalar, 5–6× behind
//! llama.cpp. And speculative decoding needs more than speed: a k-row verify pass must give
//! every row the bits it gets alone, and should cost much less than k one-row steps.
//!
//! How:
//! - activations are quantized once per row: to 32-value blocks of i8 with an f32 scale (and
//!   the integer sum the `_1` formats need), as llama.cpp's `q8_0`/`q8_1`, or for the
//!   K-quants to 256-value blocks with per-16 sums, as llama.cpp's `q8_K`;
//! - threads split the output columns (candle's persistent barrier pool, so this and candle's
//!   own kernels share one set of workers, or a model's own [`Pool`] with its own thread count
//!   and CPUs); a column is computed by one thread from start to end, so the thread count
//!   never changes a result;
//! - rows are handled in groups of up to 13 (AVX-512) or 4 rows: each weight block is unpacked once and
//!   used for every row of the group, while each row keeps its own accumulator, updated in
//!   block order with the same instruction sequence as when the row is alone. Chunk results
//!   are therefore bit-identical to one-row results by construction, for any chunk length.
//!   What rows share is only data movement or exact integer work: the AVX-512 32-value path
//!   takes activations offset to unsigned bytes so `vpdpbusd` needs no per-row sign fix-up
//!   (a per-weight correction removes the offset exactly), and sums every row's lanes in one
//!   shuffle tree (the same tree per row); the K-quant paths reduce every row's block sums
//!   in one i32 tree and run the per-block float step for all rows in vector lanes (the
//!   same multiply, multiply, add per row as the portable path); on AVX-512 the Q4_1/Q5_1
//!   minimum term is a float dot product of the weight row's minimums (4 blocks at a time)
//!   with each row's contiguous block sums, apart from the integer products, so a row's
//!   activations take 68 bytes per block instead of 96 (a 9-row pass of a 1536-wide row
//!   stays in L1);
//! - on AVX-512 the 32-value formats of matrices whose width is a multiple of 16 are
//!   rearranged once at load so that 16 output columns interleave (`packed.rs`, the same bytes
//!   as the file): one `vpdpbusd` multiplies 4 values of one activation row, broadcast, with 4
//!   values of each of 16 columns, and a block's float step serves 16 columns, so a row costs
//!   8 integer instructions and 3 float ones per 512 products instead of 4 per 64, and a
//!   column's sum ends in its own lane (no horizontal sums). Verify passes stop being
//!   compute-bound: on the 2-vCPU Zen 4 this was tuned on, a 5-row pass of Qwen2.5-1.5B at
//!   Q8_0 went from 2.0 to 1.5 one-row steps, and SmolLM2-135M Q4_1 decodes 1.85× as fast as
//!   llama.cpp (was 1.44×). Each row keeps its own accumulators and instruction sequence, so a
//!   chunk still equals its rows one by one;
//! - activation quantization is SIMD where AVX2 is present, with the portable path's bytes;
//! - AVX-512 (F, BW, VL, VNNI) or AVX2 + FMA + F16C when the CPU has them (runtime
//!   detection), a portable scalar path otherwise; `IANVS_KERNELS=avx512|avx2|portable`
//!   forces one. For the 32-value formats the paths round differently, so a process uses one
//!   of them throughout; the K-quant paths give the same bits (see `kquant.rs`).

use candle_core::quantized::GgmlDType;

mod kquant;
pub mod ops;
mod packed;
mod pool;
mod q32;

pub use pool::{allowed_cpus, Pool};

pub use kquant::{quantize_row_k, ActBlockK, QK_K};
pub use q32::{quantize_row, ActBlock};

use kquant::KFormat;

/// Values per block of the 32-value formats (and of their quantized activations).
pub const QK: usize = 32;

/// The most rows that share one unpacked weight block (AVX-512, with 32 vector registers,
/// so a 9-row verify pass (γ = 8) unpacks each block once); the AVX2 and portable paths use
/// [`GROUP_AVX2`].
const GROUP: usize = 13;

/// Rows per group on AVX2 (16 vector registers) and the portable path.
const GROUP_AVX2: usize = 4;

/// Chunks of at most this many rows of Q4_K/Q5_K take the AVX2 kernels under AVX-512
/// ([`QMatrix::matmul_with`]).
const SMALL_K_ROWS: usize = 4;

impl Isa {
    /// Rows that share one unpacked weight block on this kernel set. Each row's arithmetic
    /// does not depend on it (or on its place in the group), only the cost does.
    fn group(self) -> usize {
        match self {
            Self::Avx512 => GROUP,
            _ => GROUP_AVX2,
        }
    }
}

/// Rows per tile of a long chunk (prefill): the tile's quantized activations stay in L1/L2
/// while every column of the thread's share is swept.
const ROW_TILE: usize = 32;

/// On the file-layout AVX-512 path (32-value formats whose width is not a multiple of 16),
/// a verify chunk (2 to `GROUP` rows) over rows longer than this many values is multiplied
/// slice by slice (see `q32::avx512::dot_rows_sliced`): 2048 values of a row's
/// activations are ~4.3 KiB there, so even 9 rows' slices stay near L1.
const SLICE_VALUES: usize = 2048;

/// A weight format with its own kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Format {
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => KFormat::Q4K.block_bytes(),
            Self::Q5K => KFormat::Q5K.block_bytes(),
            Self::Q6K => KFormat::Q6K.block_bytes(),
        }
    }

    /// Weights per block.
    pub const fn block_values(self) -> usize {
        match self.kquant() {
            Some(_) => QK_K,
            None => QK,
        }
    }

    const fn kquant(self) -> Option<KFormat> {
        match self {
            Self::Q4K => Some(KFormat::Q4K),
            Self::Q5K => Some(KFormat::Q5K),
            Self::Q6K => Some(KFormat::Q6K),
            _ => None,
        }
    }

    /// Whether blocks carry a minimum (`w = d·q + m`) rather than a signed offset.
    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }
}

/// IEEE half → single (exact), for the portable path.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
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

pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// A kernel implementation (instruction set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F + BW + VL + VNNI (with AVX2, FMA and F16C).
    Avx512,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Isa {
    /// Every implementation, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `IANVS_KERNELS` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Self::Portable => true,
                Self::Avx2 => avx2,
                Self::Avx512 => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Self::Portable
        }
    }

    /// Every implementation this CPU runs, fastest first.
    pub fn available_all() -> Vec<Isa> {
        Self::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// The implementation named `name` (`avx512`, `avx2`, `portable`), if this CPU runs it.
    pub fn parse(name: &str) -> Result<Isa, String> {
        let isa = Self::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| {
                format!("unknown kernel set `{name}` (valid: avx512, avx2, portable)")
            })?;
        if isa.available() {
            Ok(isa)
        } else {
            Err(format!("this CPU cannot run the `{name}` kernels"))
        }
    }
}

/// Which implementation this process uses by default (decided once): the fastest this CPU
/// runs, or the one `IANVS_KERNELS` names (`IANVS_PORTABLE_KERNELS` set means `portable`).
///
/// # Panics
/// When `IANVS_KERNELS` names an unknown set or one this CPU cannot run: a benchmark must
/// not silently measure other kernels than it was asked to.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        if let Ok(name) = std::env::var("IANVS_KERNELS") {
            return Isa::parse(&name).unwrap_or_else(|e| panic!("IANVS_KERNELS: {e}"));
        }
        if std::env::var_os("IANVS_PORTABLE_KERNELS").is_some() {
            return Isa::Portable;
        }
        Isa::available_all()[0]
    })
}

fn dot_rows(isa: Isa, f: Format, wrow: &[u8], acts: &[&[ActBlock]], out: &mut [f32]) {
    match isa {
        // AVX-512 takes paired activations (`QMatrix::matmul_with`), never this function.
        Isa::Avx512 => unreachable!("the AVX-512 path multiplies activation pairs"),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only used after `Isa::available` (runtime detection).
        Isa::Avx2 => unsafe { q32::avx2::dot_rows(f, wrow, acts, out) },
        _ => q32::dot_rows_scalar(f, wrow, acts, out),
    }
}

fn dot_rows_k(isa: Isa, f: KFormat, wrow: &[u8], acts: &[&[ActBlockK]], out: &mut [f32]) {
    match isa {
        // A lone row of Q4_K/Q5_K runs faster on the AVX2 kernel on the CPU this was tuned on
        // (AMD Zen 4, which splits 512-bit operations in two; one-row throughput 20 vs 16
        // GMAC/s); every K-quant kernel gives the same bits, so the choice is free.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx512` implies AVX2, FMA and F16C (`Isa::available`).
        Isa::Avx512 if acts.len() == 1 && f != KFormat::Q6K => unsafe {
            kquant::avx2::dot_rows(f, wrow, acts, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_rows`.
        Isa::Avx512 => unsafe { kquant::avx512::dot_rows(f, wrow, acts, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_rows`.
        Isa::Avx2 => unsafe { kquant::avx2::dot_rows(f, wrow, acts, out) },
        _ => kquant::dot_rows_scalar(f, wrow, acts, out),
    }
}

/// A weight matrix `[n, k]` in one of the [`Format`]s: stored as the file had it, or, for
/// the AVX-512 kernels of the 32-value formats when `n` is a multiple of 16, 16 columns
/// interleaved (`packed.rs`; the same bytes, rearranged once at load).
pub struct QMatrix {
    format: Format,
    n: usize,
    k: usize,
    /// The file's layout (empty when `packed` holds the matrix).
    data: Vec<u8>,
    packed: Option<packed::Packed>,
    isa: Isa,
    /// The model's own threads (`None`: candle's process-wide pool).
    pool: Option<std::sync::Arc<Pool>>,
}

impl QMatrix {
    /// `data`: `n` rows of `k / block_values` blocks; `None` when the format has no kernel
    /// here or `k` is not a multiple of the format's block.
    pub fn new(dtype: GgmlDType, n: usize, k: usize, data: Vec<u8>) -> Option<Self> {
        let format = Format::of(dtype)?;
        let bv = format.block_values();
        if !k.is_multiple_of(bv) || data.len() != n * k / bv * format.block_bytes() {
            return None;
        }
        Some(
            Self {
                format,
                n,
                k,
                data,
                packed: None,
                isa: isa(),
                pool: None,
            }
            .laid_out(),
        )
    }

    /// Whether `isa`'s kernels take this matrix in the interleaved layout.
    fn wants_packed(&self, isa: Isa) -> bool {
        isa == Isa::Avx512 && packed::fits(self.n)
    }

    /// This matrix in the layout its kernel set takes.
    fn laid_out(mut self) -> Self {
        match (self.wants_packed(self.isa), self.packed.is_some()) {
            (true, false) => {
                self.packed = Some(packed::pack(self.format, self.n, self.k, &self.data));
                self.data = Vec::new();
            }
            (false, true) => {
                self.data = self
                    .packed
                    .take()
                    .map(|p| packed::unpack(&p))
                    .unwrap_or_default();
            }
            _ => {}
        }
        self
    }

    /// A copy in the layout `isa`'s kernels take (for a product on another kernel set than
    /// the matrix's own: tests and benches).
    fn relaid(&self, isa: Isa) -> QMatrix {
        // Already in `isa`'s layout: a plain copy; otherwise back to the file's, then on.
        let (data, packed) = match &self.packed {
            Some(p) if self.wants_packed(isa) => (Vec::new(), Some(p.clone())),
            Some(p) => (packed::unpack(p), None),
            None => (self.data.clone(), None),
        };
        QMatrix {
            format: self.format,
            n: self.n,
            k: self.k,
            data,
            packed,
            isa,
            pool: self.pool.clone(),
        }
        .laid_out()
    }

    /// The same matrix multiplied on `pool`'s threads.
    pub fn with_pool(mut self, pool: std::sync::Arc<Pool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The same matrix on the `isa` kernels (which must be [`Isa::available`]).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        assert!(isa.available(), "this CPU cannot run the {isa:?} kernels");
        self.isa = isa;
        self.laid_out()
    }

    /// A copy on the `isa` kernels (which must be [`Isa::available`]), in the layout they
    /// take.
    pub fn on_isa(&self, isa: Isa) -> QMatrix {
        assert!(isa.available(), "this CPU cannot run the {isa:?} kernels");
        self.relaid(isa)
    }

    /// Output features (`n`).
    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn size_in_bytes(&self) -> usize {
        self.n * self.k / self.format.block_values() * self.format.block_bytes()
    }

    /// `x`: `m` rows of `k` values → `m` rows of `n` outputs, with `isa`'s kernels.
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize) -> Vec<f32> {
        multiply(&[self], isa, x, m)
            .pop()
            .expect("one product per matrix")
    }

    /// [`QMatrix::matmul_with`] on this matrix's kernels (the process default unless
    /// [`QMatrix::with_isa`] chose others).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(self.isa, x, m)
    }

    /// Whether `self` and `other` can share quantized activations and one pool dispatch
    /// ([`matmul_many`]): the same `k`, kernel set, threads and activation layout.
    fn shares_products_with(&self, other: &QMatrix) -> bool {
        let same_pool = match (&self.pool, &other.pool) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        };
        self.k == other.k
            && self.isa == other.isa
            && same_pool
            && self.format.kquant().is_some() == other.format.kquant().is_some()
    }
}

/// `x` (`m` rows of `k` values) times each of `mats` (all `[n_i, k]`), each on its own
/// kernels: the products [`QMatrix::matmul`] gives, bit for bit. Matrices that can share
/// (the same `k`, kernel set, pool and activation layout: the 32-value formats together, the
/// K-quants together; q/k/v or gate/up of a layer) quantize `x` once and run in one pool
/// dispatch whose threads split the union of their output columns, so a small verify pass
/// pays one barrier instead of three; any others are multiplied one by one.
///
/// # Panics
/// When `x` is not `m` rows of a matrix's `k`.
///
/// `IANVS_KERNELS_FUSE=0` (read once) multiplies every matrix on its own, for before/after
/// measurements; the bits are the same either way.
pub fn matmul_many(mats: &[&QMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
    static FUSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let fuse = *FUSE.get_or_init(|| std::env::var("IANVS_KERNELS_FUSE").map_or(true, |v| v != "0"));
    match mats.first() {
        Some(first) if fuse && mats.iter().all(|w| first.shares_products_with(w)) => {
            multiply(mats, first.isa, x, m)
        }
        _ => mats.iter().map(|w| w.matmul(x, m)).collect(),
    }
}

/// The products of [`matmul_many`] for matrices that share `k`, the pool (`mats[0]`'s) and
/// the activation layout, on `isa`'s kernels.
fn multiply(mats: &[&QMatrix], isa: Isa, x: &[f32], m: usize) -> Vec<Vec<f32>> {
    assert!(isa.available(), "this CPU cannot run the {isa:?} kernels");
    // Matrices stored in another layout than `isa`'s kernels take: a copy in that layout.
    if mats
        .iter()
        .any(|w| w.packed.is_some() != w.wants_packed(isa))
    {
        let copies: Vec<QMatrix> = mats.iter().map(|w| w.relaid(isa)).collect();
        let refs: Vec<&QMatrix> = copies.iter().collect();
        return multiply(&refs, isa, x, m);
    }
    // Packed and file-layout matrices in one call (widths of 16 and others): each on its own.
    if mats.len() > 1
        && mats
            .iter()
            .any(|w| w.packed.is_some() != mats[0].packed.is_some())
    {
        return mats
            .iter()
            .map(|w| multiply(&[w], isa, x, m).pop().expect("one product"))
            .collect();
    }
    let Some(first) = mats.first() else {
        return Vec::new();
    };
    #[cfg(target_arch = "x86_64")]
    if first.packed.is_some() {
        return multiply_packed(mats, x, m);
    }
    let k = first.k;
    assert_eq!(x.len(), m * k, "activations do not match [{m}, {k}]");
    if first.format.kquant().is_some() {
        let kb = k / QK_K;
        let mut acts = vec![ActBlockK::ZERO; m * kb];
        for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
            quantize_row_k(xr, ar);
        }
        // Up to 4 rows of Q4_K/Q5_K run faster on the AVX2 set (groups of 4) than on
        // the AVX-512 one (groups of 13) on the Zen 4 this was tuned on (`cargo bench
        // -p ianvs-kernels --bench kernels`: 2 rows 363 vs 437 µs, 4 rows 579 vs 647 µs
        // for a Q4_K layer; 9 rows favour AVX-512). Every K-quant set gives the same
        // bits, so a verify chunk still equals its rows one by one.
        let pick = |kf: KFormat| {
            if isa == Isa::Avx512 && kf != KFormat::Q6K && m <= SMALL_K_ROWS {
                Isa::Avx2
            } else {
                isa
            }
        };
        let kfs: Vec<KFormat> = mats
            .iter()
            .map(|w| {
                w.format
                    .kquant()
                    .expect("only K-quants share K-quant activations")
            })
            .collect();
        let groups: Vec<usize> = kfs.iter().map(|&kf| pick(kf).group()).collect();
        return drive(mats, &acts, kb, m, &groups, |i, w, a, o| {
            dot_rows_k(pick(kfs[i]), kfs[i], w, a, o)
        });
    }
    let kb = k / QK;
    let mut acts = vec![ActBlock::ZERO; m * kb];
    for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        quantize_row(xr, ar);
    }
    let fs: Vec<Format> = mats.iter().map(|w| w.format).collect();
    let groups = vec![isa.group(); mats.len()];
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        let kc = kb.div_ceil(q32::CHUNK);
        let mut chunks = vec![q32::ActChunk::ZERO; m * kc];
        for (ar, cr) in acts.chunks_exact(kb).zip(chunks.chunks_exact_mut(kc)) {
            q32::chunk_row(ar, cr);
        }
        // A verify chunk over long rows: slice the rows so their activations stay in L1
        // (the same bits as whole rows, see `q32::avx512::dot_rows_sliced`).
        let slice_chunks = SLICE_VALUES / (q32::CHUNK * QK);
        if (2..=GROUP).contains(&m) && kc > slice_chunks {
            return drive_cols(mats, m, |i, w, cols, out_ptr| {
                let row_bytes = w.k / QK * fs[i].block_bytes();
                let rows: Vec<&[q32::ActChunk]> =
                    (0..m).map(|r| &chunks[r * kc..(r + 1) * kc]).collect();
                let mut put = |col: usize, v: &[f32]| {
                    for (r, &x) in v.iter().enumerate() {
                        // SAFETY: column `col` of every row is written by exactly this work
                        // item, and the output (`m × n`, owned by `drive_cols`) outlives the
                        // pool call.
                        unsafe { *(out_ptr as *mut f32).add(r * w.n + col) = x };
                    }
                };
                // SAFETY: `isa` is available (checked above).
                unsafe {
                    q32::avx512::dot_rows_sliced(
                        fs[i],
                        &w.data,
                        row_bytes,
                        cols,
                        &rows,
                        slice_chunks,
                        &mut put,
                    )
                }
            });
        }
        return drive(mats, &chunks, kc, m, &groups, |i, w, a, o| {
            // SAFETY: `isa` is available (checked above).
            unsafe { q32::avx512::dot_rows(fs[i], w, a, o) }
        });
    }
    drive(mats, &acts, kb, m, &groups, |i, w, a, o| {
        dot_rows(isa, fs[i], w, a, o)
    })
}

/// The products of matrices in the interleaved layout (AVX-512): activations quantized once
/// (32-value blocks or Q8_K), then [`run_groups`].
#[cfg(target_arch = "x86_64")]
fn multiply_packed(mats: &[&QMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let k = mats[0].k;
    assert_eq!(x.len(), m * k, "activations do not match [{m}, {k}]");
    let formats: Vec<Format> = mats.iter().map(|w| w.format).collect();
    if mats[0].format.kquant().is_some() {
        let kb = k / QK_K;
        let mut acts = vec![ActBlockK::ZERO; m * kb];
        for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
            quantize_row_k(xr, ar);
        }
        let ex = packed::ExtrasK::new(&formats, &acts);
        return run_groups(mats, m, |_, p, g, rows, res| {
            let mut a: [&[ActBlockK]; GROUP] = [&[]; GROUP];
            let mut pairs: [&[i32]; GROUP] = [&[]; GROUP];
            let mut corr: [&[i32]; GROUP] = [&[]; GROUP];
            for (j, r) in rows.clone().enumerate() {
                a[j] = &acts[r * kb..(r + 1) * kb];
                pairs[j] = ex.pairs.get(4 * r * kb..4 * (r + 1) * kb).unwrap_or(&[]);
                corr[j] = ex.corr.get(16 * r * kb..16 * (r + 1) * kb).unwrap_or(&[]);
            }
            let n = rows.len();
            // SAFETY: packed matrices exist only for `Isa::Avx512` (`laid_out`), which is
            // used only when available.
            unsafe { packed::avx512k::group(p, g, &a[..n], &pairs[..n], &corr[..n], res) }
        });
    }
    let kb = k / QK;
    let mut acts = vec![ActBlock::ZERO; m * kb];
    for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(kb)) {
        quantize_row(xr, ar);
    }
    let ex = packed::Extras::new(&formats, &acts);
    // Each matrix's offset correction, looked up once (not per column group).
    let corrs: Vec<&[i32]> = mats.iter().map(|w| ex.corr(w.format)).collect();
    run_groups(mats, m, |i, p, g, rows, res| {
        let corr = corrs[i];
        let mut a: [&[ActBlock]; GROUP] = [&[]; GROUP];
        let mut cs: [&[i32]; GROUP] = [&[]; GROUP];
        let mut ss: [&[f32]; GROUP] = [&[]; GROUP];
        for (j, r) in rows.clone().enumerate() {
            a[j] = &acts[r * kb..(r + 1) * kb];
            cs[j] = corr.get(r * kb..(r + 1) * kb).unwrap_or(&[]);
            ss[j] = ex.sums.get(r * kb..(r + 1) * kb).unwrap_or(&[]);
        }
        let n = rows.len();
        // SAFETY: as above.
        unsafe { packed::avx512::group(p, g, &a[..n], &cs[..n], &ss[..n], res) }
    })
}

/// Threads split the union of the packed matrices' 16-column groups; a thread runs a group
/// for every row, [`GROUP`] rows at a time (`kernel(matrix index, packed, group, rows,
/// results)`),
/// the same kernel per row whatever the row count, and writes the results into each
/// matrix's `m × n` output.
#[cfg(target_arch = "x86_64")]
fn run_groups(
    mats: &[&QMatrix],
    m: usize,
    kernel: impl Fn(usize, &packed::Packed, usize, std::ops::Range<usize>, &mut [[f32; packed::COLS]])
        + Sync,
) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.n]).collect();
    let ptrs: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
    let mut starts = vec![0usize];
    for w in mats {
        starts.push(starts.last().copied().unwrap_or(0) + w.n / packed::COLS);
    }
    let total = *starts.last().unwrap_or(&0);
    let work = |groups: std::ops::Range<usize>| {
        let mut res = [[0f32; packed::COLS]; GROUP];
        for (i, w) in mats.iter().enumerate() {
            let (lo, hi) = (groups.start.max(starts[i]), groups.end.min(starts[i + 1]));
            let Some(p) = w.packed.as_ref().filter(|_| lo < hi) else {
                continue;
            };
            for tile in (0..m).step_by(ROW_TILE) {
                let tile_end = m.min(tile + ROW_TILE);
                for g in lo - starts[i]..hi - starts[i] {
                    for r0 in (tile..tile_end).step_by(GROUP) {
                        let r1 = tile_end.min(r0 + GROUP);
                        kernel(i, p, g, r0..r1, &mut res[..r1 - r0]);
                        for (j, r) in (r0..r1).enumerate() {
                            // SAFETY: columns 16g..16g+16 of every row are written by exactly
                            // this work item, and the output (`m × n`, owned here) outlives
                            // the pool call.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    res[j].as_ptr(),
                                    (ptrs[i] as *mut f32).add(r * w.n + g * packed::COLS),
                                    packed::COLS,
                                )
                            };
                        }
                    }
                }
            }
        }
    };
    match &mats[0].pool {
        Some(pool) => pool.execute_chunked(total, work),
        None => candle_core::utils::barrier_pool().execute_chunked(total, work),
    }
    outs
}

/// Runs `dot(matrix, weight row, rows, out)` over every (column, group of rows) of every
/// matrix of `mats`, threads (`mats[0]`'s pool) splitting the union of their columns; `acts`
/// holds `m` rows of `kb` entries, `groups[i]` is matrix `i`'s rows per group. A column is
/// computed by the same `dot` calls whatever else shares the dispatch.
fn drive<A: Sync>(
    mats: &[&QMatrix],
    acts: &[A],
    kb: usize,
    m: usize,
    groups: &[usize],
    dot: impl Fn(usize, &[u8], &[&[A]], &mut [f32]) + Sync,
) -> Vec<Vec<f32>> {
    drive_cols(mats, m, |i, w, cols, out_ptr| {
        let dot = |wr: &[u8], rows: &[&[A]], o: &mut [f32]| dot(i, wr, rows, o);
        w.sweep(acts, kb, m, groups[i], cols, out_ptr, &dot);
    })
}

/// The threads of `mats[0]`'s pool split the union of the matrices' columns; `sweep(i,
/// matrix, its columns, its output)` computes one matrix's share into its `m × n` output.
fn drive_cols(
    mats: &[&QMatrix],
    m: usize,
    sweep: impl Fn(usize, &QMatrix, std::ops::Range<usize>, usize) + Sync,
) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|w| vec![0f32; m * w.n]).collect();
    let ptrs: Vec<usize> = outs.iter_mut().map(|o| o.as_mut_ptr() as usize).collect();
    // Column `c` of the union is column `c − starts[i]` of matrix `i`.
    let mut starts = Vec::with_capacity(mats.len() + 1);
    starts.push(0usize);
    for w in mats {
        starts.push(starts.last().copied().unwrap_or(0) + w.n);
    }
    let total = *starts.last().unwrap_or(&0);
    let work = |cols: std::ops::Range<usize>| {
        for (i, w) in mats.iter().enumerate() {
            let lo = cols.start.max(starts[i]);
            let hi = cols.end.min(starts[i + 1]);
            if lo < hi {
                sweep(i, w, lo - starts[i]..hi - starts[i], ptrs[i]);
            }
        }
    };
    match &mats.first().and_then(|w| w.pool.as_ref()) {
        Some(pool) => pool.execute_chunked(total, work),
        None => candle_core::utils::barrier_pool().execute_chunked(total, work),
    }
    outs
}

impl QMatrix {
    /// Columns `cols` of this matrix for every row, written to the `m × n` output at `out`.
    #[allow(clippy::too_many_arguments)]
    fn sweep<A, F: Fn(&[u8], &[&[A]], &mut [f32])>(
        &self,
        acts: &[A],
        kb: usize,
        m: usize,
        group: usize,
        cols: std::ops::Range<usize>,
        out_ptr: usize,
        dot: &F,
    ) {
        let n = self.n;
        let row_bytes = self.k / self.format.block_values() * self.format.block_bytes();
        let mut tmp = [0f32; GROUP];
        for tile in (0..m).step_by(ROW_TILE) {
            let tile_end = m.min(tile + ROW_TILE);
            if tile_end - tile <= group {
                // One group (every decode step and verify pass): its row slices are built
                // once, not once per column; the same `dot` calls as below.
                let cnt = tile_end - tile;
                let mut rows: [&[A]; GROUP] = [&[]; GROUP];
                for (slot, r) in rows.iter_mut().zip(tile..tile_end) {
                    *slot = &acts[r * kb..(r + 1) * kb];
                }
                for col in cols.clone() {
                    let wrow = &self.data[col * row_bytes..(col + 1) * row_bytes];
                    dot(wrow, &rows[..cnt], &mut tmp[..cnt]);
                    for (j, r) in (tile..tile_end).enumerate() {
                        // SAFETY: as below.
                        unsafe { *(out_ptr as *mut f32).add(r * n + col) = tmp[j] };
                    }
                }
                continue;
            }
            for col in cols.clone() {
                let wrow = &self.data[col * row_bytes..(col + 1) * row_bytes];
                for g in (tile..tile_end).step_by(group) {
                    let g_end = tile_end.min(g + group);
                    let mut rows: [&[A]; GROUP] = [&[]; GROUP];
                    for (slot, r) in rows.iter_mut().zip(g..g_end) {
                        *slot = &acts[r * kb..(r + 1) * kb];
                    }
                    let cnt = g_end - g;
                    dot(wrow, &rows[..cnt], &mut tmp[..cnt]);
                    for (j, r) in (g..g_end).enumerate() {
                        // SAFETY: column `col` of every row is written by exactly this
                        // work item (the pool hands out each column once), and the output
                        // (`m × n`, owned by `drive`) outlives the pool call.
                        unsafe { *(out_ptr as *mut f32).add(r * n + col) = tmp[j] };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    pub(crate) fn random(len: usize, seed: u64) -> Vec<f32> {
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

    const TYPES: [GgmlDType; 8] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    /// Every kernel set this CPU runs (the AVX-512 and AVX2 ones included where it has them,
    /// whatever `IANVS_KERNELS` says).
    fn isas() -> Vec<Isa> {
        let v = Isa::available_all();
        eprintln!("kernel sets under test: {v:?}");
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
        // Short rows; long rows that verify chunks multiply slice by slice on AVX-512 (4864
        // values: 9.5 chunks; 4896: an odd block count, 32-value formats only).
        // Widths of 16 columns take the interleaved layout on AVX-512 (48, 32, 16).
        let shapes: [(usize, usize, &[GgmlDType]); 6] = [
            (37, 256, &TYPES),
            (21, 4864, &TYPES),
            (13, 4896, &TYPES[..5]),
            (48, 256, &TYPES),
            (32, 4864, &TYPES),
            (16, 4896, &TYPES[..5]),
        ];
        for (n, k, types) in shapes {
            chunk_rows_equal_single_rows(n, k, types);
        }
    }

    fn chunk_rows_equal_single_rows(n: usize, k: usize, types: &[GgmlDType]) {
        let m = 33;
        let x = random(m * k, 5);
        for &dtype in types {
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
                        assert_eq!(got, want, "{dtype:?} {isa:?} k {k}: row {r} of {rows}");
                    }
                }
            }
        }
    }

    /// The kernels agree with dequantize + f32 matmul up to the activation quantization
    /// (8-bit, relative error ~0.4 % per value), and the SIMD path with the portable one
    /// `x` (`m` rows of `k`) times the dequantized `qt`, transposed: the float reference.
    fn dense_product(qt: &QTensor, x: &[f32], m: usize, k: usize) -> Vec<f32> {
        let dense = qt.dequantize(&Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap();
        xt.matmul(&dense.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// up to float reassociation.
    #[test]
    fn kernels_match_dequantized_matmul() {
        for n in [19, 48] {
            kernels_match_dequantized(n);
        }
    }

    fn kernels_match_dequantized(n: usize) {
        let (k, m) = (512, 3);
        let x = random(m * k, 9);
        for dtype in TYPES {
            let (w, qt) = matrix(dtype, n, k, 4);
            let want = dense_product(&qt, &x, m, k);
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
            for other in &per_isa[1..] {
                for (a, b) in per_isa[0].iter().zip(other) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale.max(1.0),
                        "{dtype:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Several matrices in one dispatch (q/k/v-like: different widths and formats of one
    /// family, the K-quants mixed as a Q4_K_M file mixes them) give, bit for bit, the
    /// products each gives alone, for every row count and kernel set; a mix that cannot
    /// share activations (32-value with K-quant formats) falls back to separate products.
    #[test]
    fn fused_products_equal_separate_products_bit_for_bit() {
        let k = 768;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let sets: [&[(GgmlDType, usize)]; 7] = [
            // Interleaved on AVX-512 (widths of 16), formats mixed.
            &[
                (GgmlDType::Q8_0, 32),
                (GgmlDType::Q5_1, 16),
                (GgmlDType::Q4_0, 48),
            ],
            // Interleaved and file-layout widths in one call.
            &[(GgmlDType::Q4_1, 32), (GgmlDType::Q5_0, 13)],
            &[
                (GgmlDType::Q4_1, 40),
                (GgmlDType::Q4_1, 13),
                (GgmlDType::Q4_1, 13),
            ],
            &[
                (GgmlDType::Q8_0, 29),
                (GgmlDType::Q5_0, 31),
                (GgmlDType::Q5_1, 7),
            ],
            &[
                (GgmlDType::Q4K, 24),
                (GgmlDType::Q4K, 8),
                (GgmlDType::Q6K, 8),
            ],
            // K-quants interleaved on AVX-512 (widths of 16), a Q4_K_M-like mix.
            &[
                (GgmlDType::Q4K, 32),
                (GgmlDType::Q6K, 16),
                (GgmlDType::Q5K, 16),
            ],
            &[(GgmlDType::Q4_0, 11), (GgmlDType::Q5K, 9)],
        ];
        let x = random(17 * k, 41);
        for (si, set) in sets.iter().enumerate() {
            for isa in isas() {
                let mats: Vec<QMatrix> = set
                    .iter()
                    .enumerate()
                    .map(|(i, &(dt, n))| matrix(dt, n, k, 50 + i as u64).0.with_isa(isa))
                    .collect();
                let refs: Vec<&QMatrix> = mats.iter().collect();
                for m in [1, 2, 5, 9, 17] {
                    let fused = matmul_many(&refs, &x[..m * k], m);
                    assert_eq!(fused.len(), mats.len());
                    for (w, got) in mats.iter().zip(&fused) {
                        let want = w.matmul(&x[..m * k], m);
                        assert_eq!(bits(got), bits(&want), "set {si} {isa:?} rows {m}");
                    }
                }
            }
        }
        assert!(matmul_many(&[], &x[..k], 1).is_empty());
    }

    /// The K-quant kernels compute each block exactly in integers and share one float
    /// expression, so every kernel set gives the same bits (a stronger check of the SIMD
    /// unpacking than a tolerance). Rows of 1, 3 and 5 cover a full group and remainders.
    #[test]
    fn kquant_kernel_sets_agree_bit_for_bit() {
        // 21 columns: the file layout everywhere; 32: interleaved on AVX-512.
        for n in [21, 32] {
            kquant_kernel_sets_agree(n);
        }
    }

    fn kquant_kernel_sets_agree(n: usize) {
        let k = 768;
        let x = random(5 * k, 13);
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
            let (w, _) = matrix(dtype, n, k, 6);
            for m in [1, 3, 5] {
                let want = w.matmul_with(Isa::Portable, &x[..m * k], m);
                for isa in isas() {
                    let got = w.matmul_with(isa, &x[..m * k], m);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{dtype:?} {isa:?} rows {m}");
                }
            }
        }
    }

    /// Rows of an odd number of 32-value blocks (the AVX-512 path pairs blocks, the last one
    /// with zeros, and takes them 16 at a time: 3 blocks, and 35 = two full chunks and a
    /// ragged one): still the dequantized product, and still chunk-invariant.
    #[test]
    fn odd_block_counts_work_on_every_kernel_set() {
        for k in [96, 1120] {
            for n in [9, 16] {
                odd_block_count(n, k);
            }
        }
    }

    fn odd_block_count(n: usize, k: usize) {
        let m = 5;
        let x = random(m * k, 21);
        for dtype in &TYPES[..5] {
            let (w, qt) = matrix(*dtype, n, k, 8);
            let want = dense_product(&qt, &x, m, k);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for isa in isas() {
                let got = w.matmul_with(isa, &x, m);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 0.02 * scale,
                        "{dtype:?} {isa:?} [{i}]: {g} vs {e}"
                    );
                }
                for r in 0..m {
                    let one = w.matmul_with(isa, &x[r * k..(r + 1) * k], 1);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&one),
                        bits(&got[r * n..(r + 1) * n]),
                        "{dtype:?} {isa:?}"
                    );
                }
            }
        }
    }

    /// The SIMD activation quantizer gives the portable one's bytes and scale: ties at .5
    /// (rounded away from zero), saturation, zeros, a NaN and an infinity included.
    #[test]
    fn simd_activation_quantization_equals_portable() {
        let mut x = random(64 * 32, 31);
        // Block 0: scale exactly 1 (max 127), so x·id lands on halves.
        for (i, v) in x[..32].iter_mut().enumerate() {
            *v = (i as f32 - 16.0) + 0.5;
        }
        x[0] = 127.0;
        x[32..64].fill(0.0);
        x[70] = f32::NAN;
        x[100] = f32::INFINITY;
        x[130] = -1e30;
        for (b, c) in x.chunks_exact(32).enumerate() {
            let mut want = [0i8; 32];
            let mut got = [0i8; 32];
            let dw = q32::quantize_block_scalar(c, &mut want);
            let dg = q32::quantize_block(c, &mut got);
            assert_eq!(dw.to_bits(), dg.to_bits(), "block {b}");
            assert_eq!(want, got, "block {b}");
        }
    }

    #[test]
    fn kernel_set_names_parse() {
        assert_eq!(Isa::parse("portable"), Ok(Isa::Portable));
        let err = Isa::parse("sse9").unwrap_err();
        assert!(err.contains("valid: avx512, avx2, portable"), "{err}");
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()).is_ok(), isa.available());
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
