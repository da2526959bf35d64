use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

#[test]
fn qbench() -> candle_core::Result<()> {
    for (n, k) in [(1536usize, 576usize), (49152, 576)] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (1, k), &Device::Cpu)?;
        let x5 = Tensor::randn(0f32, 1.0, (5, k), &Device::Cpu)?;
        for dt in [GgmlDType::F32, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = QTensor::quantize(&w, dt)?;
            let mm = QMatMul::QTensor(std::sync::Arc::new(q));
            for _ in 0..3 { mm.forward(&x)?; }
            let t = Instant::now();
            let iters = 20;
            for _ in 0..iters { mm.forward(&x)?; }
            let one = t.elapsed().as_secs_f64() / iters as f64;
            let t = Instant::now();
            for _ in 0..iters { mm.forward(&x5)?; }
            let five = t.elapsed().as_secs_f64() / iters as f64;
            println!("{n}x{k} {dt:?}: m=1 {:.3} ms, m=5 {:.3} ms", one * 1e3, five * 1e3);
        }
    }
    Ok(())
}
