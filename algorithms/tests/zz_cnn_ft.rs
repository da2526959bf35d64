use ianvs_algorithms::classifiers::{Architecture, Classifier, OptimizerKind, TrainConfig};
use ianvs_paradigms::data::{load, split, LoadOptions, SplitMethod};

#[test]
#[ignore]
fn cnn_finetune() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist/mnist_5k.csv.gz");
    let all = load(&path, &LoadOptions { feature_scale: 255.0, ..Default::default() }).unwrap();
    let (tr, te) = split(&all, SplitMethod::Interleaved, 0.2, 0);
    let pick = |d: &ianvs_paradigms::data::Dataset, cls: &[u32], cap: usize| { let v: Vec<usize> = (0..d.len()).filter(|&i| cls.contains(&d.labels[i])).collect(); let m = cap.min(v.len()); d.subset(&(0..m).map(|k| v[k * v.len() / m]).collect::<Vec<_>>()) };
    for arch in [Architecture::Cnn { conv_channels: (6, 16), fc_hidden: 120 }, Architecture::Mlp { hidden: vec![256] }] {
        let mut m = Classifier::new(arch.clone(), (1, 28, 28), 10, 42, &candle_core::Device::Cpu).unwrap();
        for (r, cls) in [[0u32, 1], [2, 3], [4, 5]].iter().enumerate() {
            let d = pick(&tr, cls, 160);
            let st = m.train(&d.features, &d.labels, &TrainConfig { epochs: 5, learning_rate: 1e-3, batch_size: 64, optimizer: OptimizerKind::Adam, seed: r as u64 }, &mut |_, _| true, &mut |_| {}).unwrap();
            let t = pick(&te, cls, 100);
            let p = m.predict(&t.features).unwrap();
            let acc = p.iter().zip(&t.labels).filter(|(a, b)| a == b).count() as f64 / t.len() as f64;
            let mut hist = [0usize; 10]; for &x in &p { hist[x as usize] += 1; }
            println!("{arch} round {r} losses {:?} acc {acc:.3} hist {hist:?}", st.epochs.iter().map(|e| (e.loss * 1000.0).round() / 1000.0).collect::<Vec<_>>());
        }
    }
}
