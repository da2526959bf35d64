//! ONNX models run by ONNX Runtime through `ort` (`load-dynamic`), as `edgemodel` /
//! `cloudmodel` modules, and the export of the project's own classifiers to ONNX.
//!
//! The runtime library is loaded at run time, never linked: it comes from the `onnxruntime`
//! PyPI wheel (`onnxruntime/capi/libonnxruntime.so.*`). It is found through `ORT_DYLIB_PATH`,
//! else in `datasets/models/onnxruntime/` (filled by `scripts/fetch-onnxruntime.sh`) next to
//! the working directory, the executable or the source tree. A missing library is an error
//! that says where it looked and how to get it, never a panic (`ort::init` would panic, so
//! `ort::init_from` is used).

pub mod export;
mod proto;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ianvs_paradigms::data::Dataset;
use ianvs_paradigms::device::{device_hp, warn_once, DEVICE_NAMES};
use ianvs_paradigms::hp::HpKind;
use ianvs_paradigms::modules::{BaseModel, BuildContext, TrainReport, WorkContext};
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorRef, ValueType};

/// Problems with the runtime library or an ONNX model.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("the ONNX Runtime library was not found (looked in: {looked}); run `scripts/fetch-onnxruntime.sh` (it takes libonnxruntime.so from the `onnxruntime==1.31.1` PyPI wheel), or set ORT_DYLIB_PATH to a libonnxruntime shared library")]
    LibraryMissing { looked: String },
    #[error("ORT_DYLIB_PATH is set to {0}, which is not a file")]
    BadDylibPath(PathBuf),
    #[error("cannot load the ONNX Runtime library {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("ONNX model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
}

const LIB_DIR: &str = "datasets/models/onnxruntime";

/// Where the ONNX Runtime shared library is: `ORT_DYLIB_PATH`, else the project folder.
pub fn runtime_library() -> Result<PathBuf, OnnxError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(OnnxError::BadDylibPath(p))
        };
    }
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.extend(cwd.ancestors().map(|a| a.join(LIB_DIR)));
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(|a| a.join(LIB_DIR)));
    }
    // The source tree this binary was built from (cargo run / cargo test).
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(LIB_DIR),
    );
    for d in &dirs {
        if let Some(lib) = library_in(d) {
            return Ok(lib);
        }
    }
    let mut looked: Vec<String> = vec!["ORT_DYLIB_PATH (unset)".into()];
    looked.extend(
        dirs.iter()
            .filter(|d| d.parent().is_some_and(|p| p.exists()))
            .map(|d| d.display().to_string()),
    );
    looked.dedup();
    Err(OnnxError::LibraryMissing {
        looked: looked.join(", "),
    })
}

/// The newest `libonnxruntime.so*` (or `.dylib` / `onnxruntime.dll`) in `dir`.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_file()
                && (n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll")
                && !n.contains("providers")
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process-wide ONNX Runtime environment, loaded on first use.
pub fn environment() -> Result<&'static Environment, OnnxError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    if ENV.get().is_none() {
        // Finding the library is retried until it succeeds, so a later fetch is picked up.
        let path = runtime_library()?;
        let _ = LIB.set(path.clone());
    }
    let path = LIB.get().cloned().unwrap_or_default();
    let env = ENV.get_or_init(|| {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        builder
            .with_name("ianvs")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|reason| OnnxError::Load {
        path,
        reason: reason.clone(),
    })
}

/// What the model outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Probabilities,
    /// Unnormalized scores; a softmax is applied.
    Logits,
}

/// A classifier exported to ONNX, run by ONNX Runtime on the CPU.
///
/// Input: the model's first input, a float tensor `[batch, ...]` whose per-sample size equals
/// the data's features (e.g. `[N, 784]` or `[N, 1, 28, 28]`); output: its first output,
/// `[batch, classes]`.
pub struct OnnxClassifier {
    path: PathBuf,
    /// `Session::run` needs `&mut`; inference is serialized per model.
    session: Mutex<Session>,
    /// Per-sample input dimensions (batch excluded).
    sample_dims: Vec<i64>,
    /// Whether the batch dimension is free; a fixed batch of 1 is run sample by sample.
    dynamic_batch: bool,
    features: usize,
    num_classes: usize,
    output: OutputKind,
    parameters: usize,
}

impl std::fmt::Debug for OnnxClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxClassifier")
            .field("path", &self.path)
            .field("sample_dims", &self.sample_dims)
            .field("num_classes", &self.num_classes)
            .field("output", &self.output)
            .finish()
    }
}

impl OnnxClassifier {
    /// Opens `path` and checks that its input fits samples of `features` values; `threads` is
    /// ONNX Runtime's intra-op thread count (0: its default).
    pub fn open(
        path: &Path,
        features: usize,
        output: OutputKind,
        threads: usize,
    ) -> Result<Self, OnnxError> {
        let model_err = |reason: String| OnnxError::Model {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| model_err(format!("cannot read it: {e}")))?;
        let parameters = proto::initializer_elements(&bytes)
            .map_err(|e| model_err(format!("not an ONNX model: {e}")))?;
        let env = environment()?;
        // Builder errors carry the builder and are not Send/Sync: turn them into text at once.
        let load = |e: String| model_err(format!("ONNX Runtime cannot load it: {e}"));
        let mut builder = Session::builder(env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?;
        if threads > 0 {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| load(e.to_string()))?;
        }
        let session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| load(e.to_string()))?;
        let input = session
            .inputs()
            .first()
            .ok_or_else(|| model_err("it has no inputs".into()))?;
        let dims: Vec<i64> = match input.dtype() {
            ValueType::Tensor {
                ty: ort::value::TensorElementType::Float32,
                shape,
                ..
            } => shape.to_vec(),
            other => {
                return Err(model_err(format!(
                    "its first input `{}` is {other:?}, expected a float32 tensor",
                    input.name()
                )))
            }
        };
        if dims.len() < 2 {
            return Err(model_err(format!(
                "its input `{}` has shape {dims:?}; expected [batch, features...]",
                input.name()
            )));
        }
        let dynamic_batch = dims[0] != 1;
        let mut sample_dims = dims[1..].to_vec();
        let known: i64 = sample_dims.iter().filter(|&&d| d > 0).product();
        let unknown = sample_dims.iter().filter(|&&d| d <= 0).count();
        match unknown {
            0 if known as usize == features => {}
            1 if known > 0 && features as i64 % known == 0 => {
                let fill = features as i64 / known;
                sample_dims.iter_mut().filter(|d| **d <= 0).for_each(|d| *d = fill);
            }
            _ => return Err(model_err(format!("its input `{}` has shape {dims:?}, which does not hold one sample of {features} features", input.name()))),
        }
        let mut model = OnnxClassifier {
            path: path.to_path_buf(),
            session: Mutex::new(session),
            sample_dims,
            dynamic_batch,
            features,
            num_classes: 0,
            output,
            parameters,
        };
        // One forward pass on zeros: proves the graph runs and tells the number of classes
        // even when the output shape is symbolic.
        let probe = model.run_batch(&vec![0.0; features], 1)?;
        model.num_classes = probe.len();
        if model.num_classes == 0 {
            return Err(model_err("its output has no classes".into()));
        }
        Ok(model)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw first output for `n` samples, row-major `[n, classes]`.
    fn run_batch(&self, x: &[f32], n: usize) -> Result<Vec<f32>, OnnxError> {
        let err = |reason: String| OnnxError::Model {
            path: self.path.clone(),
            reason,
        };
        let mut shape = vec![n as i64];
        shape.extend(&self.sample_dims);
        let tensor = TensorRef::from_array_view((shape, x))
            .map_err(|e| err(format!("cannot build the input tensor: {e}")))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| err("a previous inference panicked".into()))?;
        let outputs = session
            .run(ort::inputs![tensor])
            .map_err(|e| err(format!("inference failed: {e}")))?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(format!("its first output is not a float32 tensor: {e}")))?;
        let rows = out_shape.first().copied().unwrap_or(0);
        if out_shape.len() != 2 || rows != n as i64 {
            return Err(err(format!(
                "its output has shape {out_shape:?} for a batch of {n}; expected [{n}, classes]"
            )));
        }
        Ok(data.to_vec())
    }
}

/// Softmax of every row, in place (max-subtracted for stability).
fn softmax_rows(v: &mut [f32], k: usize) {
    for row in v.chunks_exact_mut(k) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for x in row.iter_mut() {
            *x = (*x - m).exp();
            sum += *x;
        }
        for x in row.iter_mut() {
            *x /= sum;
        }
    }
}

impl BaseModel for OnnxClassifier {
    /// Ready-made models are used as exported: nothing to train.
    fn train(&mut self, _train: &Dataset, _work: &WorkContext) -> anyhow::Result<TrainReport> {
        Ok(TrainReport::default())
    }

    fn predict_proba(&self, x: &[f32]) -> anyhow::Result<Vec<f32>> {
        if !x.len().is_multiple_of(self.features) {
            anyhow::bail!(
                "{} values are not whole samples of {} features",
                x.len(),
                self.features
            );
        }
        let n = x.len() / self.features;
        let mut out = Vec::with_capacity(n * self.num_classes);
        // Output comes back in host memory: ONNX Runtime's CPU provider has finished the work
        // when `run` returns, so a clock read after this call is synced.
        if self.dynamic_batch {
            for chunk in x.chunks(256 * self.features) {
                out.extend(self.run_batch(chunk, chunk.len() / self.features)?);
            }
        } else {
            for s in x.chunks(self.features) {
                out.extend(self.run_batch(s, 1)?);
            }
        }
        if out.len() != n * self.num_classes {
            anyhow::bail!(
                "ONNX model {} returned {} values for {n} samples of {} classes",
                self.path.display(),
                out.len(),
                self.num_classes
            );
        }
        if self.output == OutputKind::Logits {
            softmax_rows(&mut out, self.num_classes);
        }
        Ok(out)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Elements of the model's initializers (its weights).
    fn num_parameters(&self) -> usize {
        self.parameters
    }

    fn needs_training(&self) -> bool {
        false
    }
}

ianvs_paradigms::hyperparameters! {
    /// Hyperparameters of the `ONNX` edge/cloud model.
    #[derive(Debug, Clone, PartialEq)]
    pub struct OnnxHps {
        pub path: String {
            kind: HpKind::Path,
            default: None,
            help: "the .onnx file (relative to the YAML file that names it); first input [batch, features...] float32, first output [batch, classes]",
        },
        pub output: String {
            kind: HpKind::Choice(&["probabilities", "logits"]),
            default: "probabilities",
            help: "what the first output holds; logits get a softmax",
        },
        pub threads: usize {
            kind: HpKind::Int { min: 0, max: 1024 },
            default: 1,
            help: "ONNX Runtime intra-op threads (0: its default)",
        },
        pub device: String {
            kind: HpKind::Choice(DEVICE_NAMES),
            default: "cpu",
            help: device_hp().help,
        },
    }
}

pub fn build_onnx(h: OnnxHps, ctx: &BuildContext) -> anyhow::Result<Box<dyn BaseModel>> {
    if h.device == "cuda" {
        warn_once("ONNX models run on ONNX Runtime's CPU execution provider (the onnxruntime wheel has no CUDA); `device: cuda` is ignored for them");
    }
    let output = if h.output == "logits" {
        OutputKind::Logits
    } else {
        OutputKind::Probabilities
    };
    let (c, hh, w) = ctx.input_shape;
    let model = OnnxClassifier::open(Path::new(&h.path), c * hh * w, output, h.threads)?;
    Ok(Box::new(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_normalizes_each_row() {
        let mut v = vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
        softmax_rows(&mut v, 3);
        assert!((v[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((v[3] - 1.0 / 3.0).abs() < 1e-6);
        assert!(v[2] > v[1] && v[1] > v[0]);
    }

    #[test]
    fn bad_dylib_path_is_a_clear_error() {
        // Only the variable's check is exercised: the environment is process-wide, so loading
        // is tested in tests/ where each binary is its own process.
        let e = OnnxError::BadDylibPath(PathBuf::from("/nope/libonnxruntime.so"));
        assert!(e.to_string().contains("ORT_DYLIB_PATH"));
        let m = OnnxError::LibraryMissing { looked: "x".into() };
        assert!(m.to_string().contains("scripts/fetch-onnxruntime.sh"));
    }
}
