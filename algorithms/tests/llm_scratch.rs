use candle_core::quantized::GgmlDType;
use candle_core::Device;
use ianvs_algorithms::llm::{LlmModel, LoadOptions, Result};
use std::time::Instant;

#[test]
fn timing() -> Result<()> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/models/smollm2-135m-instruct-q4_1.gguf");
    for rq in [None, Some(GgmlDType::Q8_0), Some(GgmlDType::F32)] {
        let t = Instant::now();
        let model = LlmModel::load_with(&path, &Device::Cpu, &LoadOptions { requantize: rq, ..Default::default() })?;
        let load = t.elapsed().as_secs_f64();
        let mut cache = model.new_cache();
        model.forward(&[504, 3575, 282, 4649, 314], &mut cache)?;
        let mut times = vec![];
        for _ in 0..24 {
            let t = Instant::now();
            model.forward(&[504], &mut cache)?;
            times.push(t.elapsed().as_secs_f64()*1e3);
        }
        let mut verify = vec![];
        for _ in 0..9 {
            let t = Instant::now();
            model.forward(&[504, 3575, 282, 4649, 314], &mut cache)?;
            verify.push(t.elapsed().as_secs_f64()*1e3);
            cache.truncate(cache.len() - 5)?;
        }
        times.sort_by(f64::total_cmp); verify.sort_by(f64::total_cmp);
        println!("{rq:?}: load {load:.2}s, decode median {:.1} ms best {:.1} ms; 5-token verify median {:.1} best {:.1} ms; weight MB {}", times[12], times[0], verify[4], verify[0], model.weight_bytes()/1_000_000);
    }
    Ok(())
}
