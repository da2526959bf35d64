//! Speed of the own kernels alone, per format and kernel set, on the matrices of one
//! SmolLM2-135M layer (hidden 576, intermediate 1536; K-quant rows need 256 values, so those
//! use a 768-wide layer): time of an m-row product for m = 1, 2, 4, 9, 17, and v(m) = that
//! time over the one-row time, the verify-pass cost a speculative step pays for its matmuls.
//!
//! Run: `cargo bench -p ianvs-kernels --bench kernels`. `IANVS_KERNELS_BENCH_THREADS` (default
//! 1: the kernel's own speed, least disturbed by other work) and `IANVS_KERNELS_BENCH_REPS`
//! (default 30); `IANVS_KERNELS_BENCH_FORMATS` (e.g. `q8_0,q4k`) and `IANVS_KERNELS_BENCH_ISAS`
//! (e.g. `avx512,avx2`) pick rows of the table; `IANVS_KERNELS_BENCH_SHAPES` replaces the
//! layer by a list of `OUTxIN` matrices (e.g. `1536x1536,8960x1536,1536x8960`, Qwen2.5-1.5B's
//! attention, gate/up and down; `IN` must be a multiple of the format's block, 256 for the
//! K-quants). `IANVS_KERNELS_BENCH_GROUPED=1` multiplies q/k/v and gate/up of the layer
//! together ([`ianvs_kernels::matmul_many`], as the forward pass does; `IANVS_KERNELS_FUSE=0`
//! then runs them one dispatch each, for a before/after). The best repetition is printed: on a shared machine other work only ever
//! adds time, and a two-thread product waits for a descheduled worker, so medians measure the
//! machine's load, not the kernel. Compare rows of one run.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::sync::Arc;

use ianvs_kernels::{matmul_many, Isa, Pool, QMatrix};

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

fn main() {
    let reps: usize = std::env::var("IANVS_KERNELS_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let threads: usize = std::env::var("IANVS_KERNELS_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pool = Arc::new(Pool::new(threads, vec![]).expect("kernel threads"));
    println!("{threads} thread(s), best of {reps} repetitions");
    let formats = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];
    let pick = |var: &str, name: &str| match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .any(|n| n.trim().replace('_', "").eq_ignore_ascii_case(name)),
        Err(_) => true,
    };
    let custom: Option<Vec<(usize, usize)>> =
        std::env::var("IANVS_KERNELS_BENCH_SHAPES")
            .ok()
            .map(|list| {
                list.split(',')
                    .map(|s| {
                        let parsed = s.trim().split_once('x').and_then(|(n, k)| {
                            Some((
                                n.trim().parse::<usize>().ok()?,
                                k.trim().parse::<usize>().ok()?,
                            ))
                        });
                        match parsed {
                            Some((n, k)) if n > 0 && k > 0 => (n, k),
                            _ => {
                                eprintln!(
                                "IANVS_KERNELS_BENCH_SHAPES: `{s}` is not OUTxIN (e.g. 1536x8960)"
                            );
                                std::process::exit(2)
                            }
                        }
                    })
                    .collect()
            });
    if let Some(list) = &custom {
        println!("shapes (out x in): {list:?}");
    }
    let ms = [1usize, 2, 4, 9, 17];
    println!("| format | kernels | layer MACs/row | best 1-row µs | GMAC/s (1 row) | GMAC/s (9 rows) | v(2) | v(4) | v(9) | v(17) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for dtype in formats {
        if !pick(
            "IANVS_KERNELS_BENCH_FORMATS",
            &format!("{dtype:?}").replace('_', ""),
        ) {
            continue;
        }
        let h = if dtype.block_size() == 256 { 768 } else { 576 };
        let inter = 1536;
        // (out, in): q, k, v, o, gate, up, down.
        let shapes = match &custom {
            Some(list) => list.clone(),
            None => vec![
                (h, h),
                (h / 3, h),
                (h / 3, h),
                (h, h),
                (inter, h),
                (inter, h),
                (h, inter),
            ],
        };
        if let Some(&(_, k)) = shapes.iter().find(|(_, k)| k % dtype.block_size() != 0) {
            println!(
                "| {dtype:?} | skipped: rows of {k} values are not a multiple of {} |",
                dtype.block_size()
            );
            continue;
        }
        let mats: Vec<QMatrix> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n, k))| {
                let w =
                    Tensor::from_vec(random(n * k, i as u64 + 1), (n, k), &Device::Cpu).unwrap();
                let qt = QTensor::quantize(&w, dtype).unwrap();
                QMatrix::new(dtype, n, k, qt.data().unwrap().to_vec())
                    .unwrap()
                    .with_pool(pool.clone())
            })
            .collect();
        let macs: usize = shapes.iter().map(|(n, k)| n * k).sum();
        let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| random(17 * k, 99)).collect();
        for isa in Isa::available_all() {
            if !pick("IANVS_KERNELS_BENCH_ISAS", isa.name()) {
                continue;
            }
            // Each kernel set on the layout it takes (AVX-512 interleaves 16 columns).
            let mats: Vec<QMatrix> = mats.iter().map(|w| w.on_isa(isa)).collect();
            // The layer's products grouped as the forward pass groups them
            // (`IANVS_KERNELS_BENCH_GROUPED=1`, the default layer only).
            let grouped: Option<Vec<QMatrix>> = (custom.is_none()
                && std::env::var("IANVS_KERNELS_BENCH_GROUPED").is_ok_and(|v| v == "1"))
            .then(|| {
                shapes
                    .iter()
                    .enumerate()
                    .map(|(i, &(n, k))| {
                        let w = Tensor::from_vec(random(n * k, i as u64 + 1), (n, k), &Device::Cpu)
                            .unwrap();
                        let qt = QTensor::quantize(&w, dtype).unwrap();
                        QMatrix::new(dtype, n, k, qt.data().unwrap().to_vec())
                            .unwrap()
                            .with_pool(pool.clone())
                            .with_isa(isa)
                    })
                    .collect()
            });
            let mut med = Vec::new();
            for &m in &ms {
                let mut times = Vec::with_capacity(reps);
                for rep in 0..reps + 3 {
                    let t0 = Instant::now();
                    if let Some(isa_mats) = &grouped {
                        // q/k/v and gate/up as the forward pass runs them (one dispatch
                        // each unless `IANVS_KERNELS_FUSE=0`), o and down alone.
                        for group in [0..3, 3..4, 4..6, 6..7] {
                            let x = &xs[group.start];
                            let k = x.len() / 17;
                            let refs: Vec<&QMatrix> = isa_mats[group].iter().collect();
                            std::hint::black_box(matmul_many(&refs, &x[..m * k], m));
                        }
                    } else {
                        for (w, x) in mats.iter().zip(&xs) {
                            let k = x.len() / 17;
                            std::hint::black_box(w.matmul_with(isa, &x[..m * k], m));
                        }
                    }
                    if rep >= 3 {
                        times.push(t0.elapsed().as_secs_f64());
                    }
                }
                times.sort_by(|a, b| a.total_cmp(b));
                med.push(times[0]);
            }
            let v = |i: usize| med[i] / med[0];
            println!(
                "| {dtype:?} | {} | {:.2} M | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                isa.name(),
                macs as f64 / 1e6,
                med[0] * 1e6,
                macs as f64 / med[0] / 1e9,
                9.0 * macs as f64 / med[3] / 1e9,
                v(1),
                v(2),
                v(3),
                v(4)
            );
        }
    }
}
