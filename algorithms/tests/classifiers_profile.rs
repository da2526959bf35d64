use candle_core::{Device, Tensor};
use ianvs_algorithms::classifiers::*;
use std::time::Instant;
#[test]
fn profile() {
    let d = Device::Cpu;
    let n = 640;
    let x = Tensor::rand(0f32, 1., (n, 784), &d).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let arch = Architecture::Cnn { conv_channels: (8, 16), fc_hidden: 64 };
    let mut m = Classifier::new(arch, (1, 28, 28), 10, 0, &d).unwrap();
    let cfg = TrainConfig { epochs: 1, learning_rate: 1e-3, batch_size: 64, optimizer: OptimizerKind::Adam, seed: 0 };
    for _ in 0..3 {
        let s = Instant::now();
        m.predict_proba(&x).unwrap();
        let fwd = s.elapsed().as_secs_f64() * 1000.0 / 10.0;
        let s = Instant::now();
        m.train(&x, &y, &cfg, &mut |_, _| {}, &mut |_| {}).unwrap();
        eprintln!("fwd/64: {fwd:.1} ms, train step: {:.1} ms", s.elapsed().as_secs_f64() * 1000.0 / 10.0);
    }
}
