use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn t<F: FnMut() -> Tensor>(name: &str, mut f: F) {
    let _ = f();
    let s = Instant::now();
    for _ in 0..10 { let _ = f(); }
    eprintln!("{name}: {:.3} ms", s.elapsed().as_secs_f64() * 1000.0 / 10.0);
}
fn g(y: Tensor, v: &Var) -> Tensor { let c = y.ones_like().unwrap(); (y * c).unwrap().sum_all().unwrap().backward().unwrap().get(v).unwrap().clone() }
#[test]
fn profile() {
    let d = Device::Cpu;
    // conv1 output pre-pool
    let c1 = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 196, 4, 64), &d).unwrap()).unwrap();
    t("pool1 argmax+gather fwd+bwd", || { let x = c1.as_tensor(); let w = x.argmax_keepdim(2).unwrap(); g(x.gather(&w, 2).unwrap(), &c1) });
    let p1 = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 196, 64), &d).unwrap()).unwrap();
    let b1 = Var::from_tensor(&Tensor::randn(0f32, 1., (8,), &d).unwrap()).unwrap();
    t("bias+relu fwd+bwd", || g(p1.as_tensor().broadcast_add(&b1.as_tensor().reshape((8,1,1)).unwrap()).unwrap().relu().unwrap(), &p1));

    // conv2 patches from p1
    let idx: Vec<u32> = (0..25*100).map(|i| ((i * 37) % 196) as u32).collect();
    let idx = Tensor::from_vec(idx, 2500, &d).unwrap();
    t("cat only fwd+bwd", || { let z = Tensor::zeros((8,1,64), candle_core::DType::F32, &d).unwrap(); g(Tensor::cat(&[p1.as_tensor(), &z], 1).unwrap(), &p1) });
    t("cat+index_select fwd+bwd", || { let z = Tensor::zeros((8,1,64), candle_core::DType::F32, &d).unwrap(); g(Tensor::cat(&[p1.as_tensor(), &z], 1).unwrap().index_select(&idx, 1).unwrap(), &p1) });
    t("index_select fwd+bwd", || g(p1.as_tensor().index_select(&idx, 1).unwrap(), &p1));
    let w1 = Var::from_tensor(&Tensor::randn(0f32, 1., (8, 25), &d).unwrap()).unwrap();
    let patches = Tensor::randn(0f32, 1., (25, 50176), &d).unwrap();
    t("matmul1 fwd+bwd", || g(w1.as_tensor().matmul(&patches).unwrap(), &w1));
    let w2 = Var::from_tensor(&Tensor::randn(0f32, 1., (16, 200), &d).unwrap()).unwrap();
    let patches2 = Tensor::randn(0f32, 1., (200, 6400), &d).unwrap();
    t("matmul2 fwd+bwd", || g(w2.as_tensor().matmul(&patches2).unwrap(), &w2));
    let h = Var::from_tensor(&Tensor::randn(0f32, 1., (16, 25, 64), &d).unwrap()).unwrap();
    t("permute+reshape fwd+bwd", || g(h.as_tensor().permute((2,0,1)).unwrap().reshape((64, 400)).unwrap(), &h));
}
