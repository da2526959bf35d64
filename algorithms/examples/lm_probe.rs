// TEMPORARY profiling probe (not to be committed).
use candle_core::{Device, Tensor};
use ianvs_algorithms::lm_train::{LmShape, TrainLlama};
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let (hidden, layers, heads, kv, inter, b, t, vocab) = (args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7]);
    let shape = LmShape { vocab_size: vocab, hidden_size: hidden, intermediate_size: inter, num_layers: layers, num_heads: heads, num_kv_heads: kv, max_position_embeddings: t, rope_theta: 1e4, rms_norm_eps: 1e-5, tie_word_embeddings: true };
    let m = TrainLlama::new(shape, 0, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..b * (t + 1)).map(|i| (i * 7919 % vocab) as u32).collect();
    let batch = Tensor::from_vec(ids, (b, t + 1), &Device::Cpu).unwrap();
    for _ in 0..4 {
        let t0 = Instant::now();
        let loss = m.loss(&batch).unwrap();
        let _ = loss.to_scalar::<f32>().unwrap();
        let f = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let g = loss.backward().unwrap();
        drop(g);
        let bw = t1.elapsed().as_secs_f64();
        println!("fwd {:.3}s bwd {:.3}s  => {:.0} tok/s", f, bw, (b * t) as f64 / (f + bw));
    }
}
