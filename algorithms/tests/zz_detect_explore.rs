use ianvs_algorithms::lifelong::prototypes::{distances, kmeans, quantile};
use ianvs_paradigms::data::{load, split, LoadOptions, SplitMethod};

fn auc(u: &[f32], k: &[f32]) -> f64 {
    let mut kk = k.to_vec(); kk.sort_by(f32::total_cmp);
    u.iter().map(|x| kk.partition_point(|v| v < x) as f64).sum::<f64>() / (u.len() * k.len()) as f64
}
fn rec_at(u: &[f32], k: &[f32], fpr: f64) -> f64 {
    let mut kk = k.to_vec(); kk.sort_by(f32::total_cmp);
    let thr = kk[((1.0 - fpr) * (kk.len() - 1) as f64) as usize];
    u.iter().filter(|&&x| x > thr).count() as f64 / u.len() as f64
}

#[test]
#[ignore]
fn explore() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist/mnist_5k.csv.gz");
    let all = load(&path, &LoadOptions { feature_scale: 255.0, ..Default::default() }).unwrap();
    let (tr, te) = split(&all, SplitMethod::Interleaved, 0.2, 0);
    let dim = 784;
    for (known, unseen) in [(vec![0u32, 1], vec![2u32, 3]), (vec![0, 1, 2, 3, 4, 5], vec![6, 7]), (vec![0, 1, 2, 3, 4, 5, 6, 7], vec![8, 9])] {
        let pick = |d: &ianvs_paradigms::data::Dataset, cls: &[u32]| -> Vec<usize> { (0..d.len()).filter(|&i| cls.contains(&d.labels[i])).collect() };
        let ktr = tr.subset(&pick(&tr, &known));
        let kte = te.subset(&pick(&te, &known));
        let ute = te.subset(&pick(&te, &unseen));
        // 1) kmeans ratio k=10
        for kper in [10usize, 30] {
            let mut cents = vec![]; let mut radii = vec![];
            for &c in &known {
                let idx = pick(&ktr, &[c]);
                let x: Vec<f32> = idx.iter().flat_map(|&i| ktr.x(i).to_vec()).collect();
                let (ce, a, d) = kmeans(&x, dim, kper, 1).unwrap();
                for j in 0..kper { let own: Vec<f32> = d.iter().zip(&a).filter(|(_, &aa)| aa == j).map(|(d, _)| *d).collect(); radii.push(if own.len() >= 5 { quantile(&own, 0.95) } else { quantile(&d, 0.95) }); }
                cents.extend(ce);
            }
            let score = |x: &[f32]| -> Vec<f32> { let d = distances(x, &cents, dim).unwrap(); d.chunks(radii.len()).map(|r| r.iter().zip(&radii).map(|(a, b)| a / b).fold(f32::INFINITY, f32::min)).collect() };
            let (su, sk) = (score(&ute.features), score(&kte.features));
            let raw = |x: &[f32]| -> Vec<f32> { let d = distances(x, &cents, dim).unwrap(); d.chunks(radii.len()).map(|r| r.iter().copied().fold(f32::INFINITY, f32::min)).collect() };
            let (ru, rk) = (raw(&ute.features), raw(&kte.features));
            println!("known {:?} kmeans{kper} ratio auc {:.3} rec@5% {:.3} rec@10% {:.3} | raw auc {:.3} rec@5% {:.3}", known.len(), auc(&su, &sk), rec_at(&su, &sk, 0.05), rec_at(&su, &sk, 0.1), auc(&ru, &rk), rec_at(&ru, &rk, 0.05));
        }
        // cluster-level: stream = unseen test + 25% as many known test samples
        {
            let kper = 10;
            let mut cents = vec![]; let mut radii = vec![];
            for &c in &known {
                let idx = pick(&ktr, &[c]);
                let x: Vec<f32> = idx.iter().flat_map(|&i| ktr.x(i).to_vec()).collect();
                let (ce, a, d) = kmeans(&x, dim, kper, 1).unwrap();
                for j in 0..kper { let own: Vec<f32> = d.iter().zip(&a).filter(|(_, &aa)| aa == j).map(|(d, _)| *d).collect(); radii.push(if own.len() >= 5 { quantile(&own, 0.95) } else { quantile(&d, 0.95) }); }
                cents.extend(ce);
            }
            let nk = ute.len() / 4;
            let step = kte.len() / nk;
            let mut x = ute.features.clone(); let mut truth = vec![true; ute.len()];
            for j in 0..nk { x.extend_from_slice(kte.x(j * step)); truth.push(false); }
            let d = distances(&x, &cents, dim).unwrap();
            let sc: Vec<f32> = d.chunks(radii.len()).map(|r| r.iter().zip(&radii).map(|(a, b)| a / b).fold(f32::INFINITY, f32::min)).collect();
            for m in [8usize, 16, 32] {
                let (_, a, _) = kmeans(&x, dim, m, 2).unwrap();
                for tau in [0.85f32, 0.9, 0.95, 1.0] {
                    let mut flag = vec![false; truth.len()];
                    for c in 0..m { let mut v: Vec<f32> = sc.iter().zip(&a).filter(|(_, &aa)| aa == c).map(|(s, _)| *s).collect(); if v.is_empty() { continue; } v.sort_by(f32::total_cmp); let med = v[v.len() / 2]; for (i, &aa) in a.iter().enumerate() { if aa == c && med > tau { flag[i] = true; } } }
                    let tp = flag.iter().zip(&truth).filter(|(f, t)| **f && **t).count() as f64; let fp = flag.iter().zip(&truth).filter(|(f, t)| **f && !**t).count() as f64;
                    println!("known {} cluster m{m} tau{tau} recall {:.3} fpr {:.3}", known.len(), tp / ute.len() as f64, fp / nk as f64);
                }
            }
        }
        // 2) diag mahalanobis per class
        for floor in [0.005f32] {
            let mut mus = vec![]; let mut vars = vec![];
            for &c in &known {
                let idx = pick(&ktr, &[c]); let n = idx.len() as f32;
                let mut mu = vec![0f32; dim]; let mut v = vec![0f32; dim];
                for &i in &idx { for (m, x) in mu.iter_mut().zip(ktr.x(i)) { *m += x / n; } }
                for &i in &idx { for ((vv, x), m) in v.iter_mut().zip(ktr.x(i)).zip(&mu) { *vv += (x - m) * (x - m) / n; } }
                mus.push(mu); vars.push(v.iter().map(|x| x + floor).collect::<Vec<f32>>());
            }
            let score = |d: &ianvs_paradigms::data::Dataset| -> Vec<f32> { (0..d.len()).map(|i| { let x = d.x(i); mus.iter().zip(&vars).map(|(m, v)| x.iter().zip(m).zip(v).map(|((a, b), s)| (a - b) * (a - b) / s).sum::<f32>() + v.iter().map(|s| s.ln()).sum::<f32>()).fold(f32::INFINITY, f32::min) }).collect() };
            let (su, sk) = (score(&ute), score(&kte));
            println!("known {:?} diagGauss floor {floor} auc {:.3} rec@5% {:.3} rec@10% {:.3}", known.len(), auc(&su, &sk), rec_at(&su, &sk, 0.05), rec_at(&su, &sk, 0.1));
        }
        // 3) kNN distance
        for kk in [1usize, 5] {
            let score = |x: &[f32]| -> Vec<f32> { let d = distances(x, &ktr.features, dim).unwrap(); d.chunks(ktr.len()).map(|r| { let mut v = r.to_vec(); v.sort_by(f32::total_cmp); v[kk - 1] }).collect() };
            let (su, sk) = (score(&ute.features), score(&kte.features));
            println!("known {:?} knn{kk} auc {:.3} rec@5% {:.3} rec@10% {:.3}", known.len(), auc(&su, &sk), rec_at(&su, &sk, 0.05), rec_at(&su, &sk, 0.1));
        }
    }
}

#[test]
#[ignore]
fn explore_confidence() {
    use ianvs_algorithms::classifiers::{Architecture, Classifier, OptimizerKind, TrainConfig};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist/mnist_5k.csv.gz");
    let all = load(&path, &LoadOptions { feature_scale: 255.0, ..Default::default() }).unwrap();
    let (tr, te) = split(&all, SplitMethod::Interleaved, 0.2, 0);
    for (known, unseen) in [(vec![0u32, 1], vec![2u32, 3]), (vec![0, 1, 2, 3, 4, 5], vec![6, 7]), (vec![0, 1, 2, 3, 4, 5, 6, 7], vec![8, 9])] {
        let pick = |d: &ianvs_paradigms::data::Dataset, cls: &[u32]| -> Vec<usize> { (0..d.len()).filter(|&i| cls.contains(&d.labels[i])).collect() };
        let ktr = tr.subset(&pick(&tr, &known));
        let kte = te.subset(&pick(&te, &known));
        let ute = te.subset(&pick(&te, &unseen));
        for hidden in [vec![256usize], vec![256, 128]] {
            let mut m = Classifier::new(Architecture::Mlp { hidden: hidden.clone() }, (1, 28, 28), 10, 42, &candle_core::Device::Cpu).unwrap();
            m.train(&ktr.features, &ktr.labels, &TrainConfig { epochs: 5, learning_rate: 1e-3, batch_size: 64, optimizer: OptimizerKind::Adam, seed: 1 }, &mut |_, _| true, &mut |_| {}).unwrap();
            let sc = |d: &ianvs_paradigms::data::Dataset| -> Vec<f32> { m.predict_proba(&d.features).unwrap().chunks(10).map(|p| 1.0 - p.iter().copied().fold(0.0, f32::max)).collect() };
            let ent = |d: &ianvs_paradigms::data::Dataset| -> Vec<f32> { m.predict_proba(&d.features).unwrap().chunks(10).map(|p| -p.iter().map(|&q| if q > 0.0 { q * q.ln() } else { 0.0 }).sum::<f32>()).collect() };
            let (su, sk) = (sc(&ute), sc(&kte));
            let (eu, ek) = (ent(&ute), ent(&kte));
            let frac_u = |thr: f32| su.iter().filter(|&&s| s > 1.0 - thr).count() as f64 / su.len() as f64;
            let frac_k = |thr: f32| sk.iter().filter(|&&s| s > 1.0 - thr).count() as f64 / sk.len() as f64;
            println!("known {} mlp{:?} conf auc {:.3} rec@5% {:.3} | thr0.9 rec {:.3} fpr {:.3} | thr0.99 rec {:.3} fpr {:.3} | entropy auc {:.3}", known.len(), hidden, auc(&su, &sk), rec_at(&su, &sk, 0.05), frac_u(0.9), frac_k(0.9), frac_u(0.99), frac_k(0.99), auc(&eu, &ek));
        }
    }
}

fn gram_schmidt(q: &mut [Vec<f32>]) {
    for i in 0..q.len() {
        for j in 0..i { let d: f32 = q[i].iter().zip(&q[j]).map(|(a, b)| a * b).sum(); let qj = q[j].clone(); for (a, b) in q[i].iter_mut().zip(&qj) { *a -= d * b; } }
        let n: f32 = q[i].iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12); for a in q[i].iter_mut() { *a /= n; }
    }
}
/// top-k principal directions of centred rows (n x d) by subspace iteration
fn pca(x: &[Vec<f32>], k: usize) -> Vec<Vec<f32>> {
    let d = x[0].len();
    let mut q: Vec<Vec<f32>> = (0..k).map(|i| (0..d).map(|j| (((i * 31 + j * 17) % 101) as f32 / 101.0) - 0.5).collect()).collect();
    gram_schmidt(&mut q);
    for _ in 0..30 {
        // q_new = X^T (X q)
        let mut nq = vec![vec![0f32; d]; k];
        for row in x { for (c, qc) in q.iter().enumerate() { let p: f32 = row.iter().zip(qc).map(|(a, b)| a * b).sum(); for (o, r) in nq[c].iter_mut().zip(row) { *o += p * r; } } }
        q = nq; gram_schmidt(&mut q);
    }
    q
}

#[test]
#[ignore]
fn explore_subspace() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist/mnist_5k.csv.gz");
    let all = load(&path, &LoadOptions { feature_scale: 255.0, ..Default::default() }).unwrap();
    let (tr, te) = split(&all, SplitMethod::Interleaved, 0.2, 0);
    for (known, unseen) in [(vec![0u32, 1], vec![2u32, 3]), (vec![0, 1, 2, 3, 4, 5], vec![6, 7]), (vec![0, 1, 2, 3, 4, 5, 6, 7], vec![8, 9])] {
        let pick = |d: &ianvs_paradigms::data::Dataset, cls: &[u32]| -> Vec<usize> { (0..d.len()).filter(|&i| cls.contains(&d.labels[i])).collect() };
        let kte = te.subset(&pick(&te, &known));
        let ute = te.subset(&pick(&te, &unseen));
        for k in [5usize, 10, 20] {
            let mut models = vec![];
            for &c in &known {
                let idx = pick(&tr, &[c]);
                let n = idx.len() as f32;
                let mut mu = vec![0f32; 784];
                for &i in &idx { for (m, v) in mu.iter_mut().zip(tr.x(i)) { *m += v / n; } }
                let xc: Vec<Vec<f32>> = idx.iter().map(|&i| tr.x(i).iter().zip(&mu).map(|(a, b)| a - b).collect()).collect();
                let q = pca(&xc, k);
                let resid = |x: &[f32]| -> f32 { let v: Vec<f32> = x.iter().zip(&mu).map(|(a, b)| a - b).collect(); let tot: f32 = v.iter().map(|a| a * a).sum(); let proj: f32 = q.iter().map(|qc| { let p: f32 = v.iter().zip(qc).map(|(a, b)| a * b).sum(); p * p }).sum(); (tot - proj).max(0.0).sqrt() };
                let own: Vec<f32> = idx.iter().map(|&i| resid(tr.x(i))).collect();
                let r95 = quantile(&own, 0.95);
                models.push((mu, q, r95));
            }
            let score = |d: &ianvs_paradigms::data::Dataset| -> Vec<f32> { (0..d.len()).map(|i| { let x = d.x(i); models.iter().map(|(mu, q, r)| { let v: Vec<f32> = x.iter().zip(mu).map(|(a, b)| a - b).collect(); let tot: f32 = v.iter().map(|a| a * a).sum(); let proj: f32 = q.iter().map(|qc| { let p: f32 = v.iter().zip(qc).map(|(a, b)| a * b).sum(); p * p }).sum(); (tot - proj).max(0.0).sqrt() / r }).fold(f32::INFINITY, f32::min) }).collect() };
            let (su, sk) = (score(&ute), score(&kte));
            let fr = |v: &[f32], t: f32| v.iter().filter(|&&s| s > t).count() as f64 / v.len() as f64;
            println!("known {} subspace k{k} auc {:.3} rec@5% {:.3} rec@10% {:.3} | ratio>1: rec {:.3} fpr {:.3}", known.len(), auc(&su, &sk), rec_at(&su, &sk, 0.05), rec_at(&su, &sk, 0.1), fr(&su, 1.0), fr(&sk, 1.0));
        }
    }
}
