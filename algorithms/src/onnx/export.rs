//! Export of the project's [`Classifier`]s to ONNX (opset 17), written directly as protobuf.
//!
//! The graph takes the same flat `[batch, c·h·w]` float input the datasets hold and returns
//! softmax probabilities `[batch, classes]`:
//! - MLP: `Gemm(transB=1) → Relu` per hidden layer, `Gemm → Softmax`;
//! - CNN: `Reshape [-1, c, h, w] → Conv 5×5 pad 2 → Relu → MaxPool 2×2 → Conv 5×5 → Relu →
//!   MaxPool 2×2 → Flatten → Gemm → Relu → Gemm → Softmax`, which is the candle model's math
//!   (it pools before bias and ReLU, an equivalent order) with PyTorch's weight layouts.
//!
//! Weights are stored as raw little-endian float32 initializers.

use std::path::Path;

use super::proto::Pb;
use crate::classifiers::{Architecture, Classifier};

/// ONNX IR version 8 (ONNX 1.10+); ONNX Runtime 1.31 reads up to 11.
const IR_VERSION: i64 = 8;
const OPSET: i64 = 17;
const FLOAT: i64 = 1;
const INT64: i64 = 7;
/// `AttributeProto.AttributeType`.
const ATTR_INT: i64 = 2;
const ATTR_INTS: i64 = 7;

/// Name of the graph's input and output.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "probabilities";

#[derive(Default)]
struct Graph {
    nodes: Vec<Pb>,
    initializers: Vec<Pb>,
    counter: usize,
}

impl Graph {
    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    fn tensor_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        let mut t = Pb::new();
        for &d in dims {
            t.int(1, d as i64);
        }
        t.int(2, FLOAT).str(8, name);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.bytes(9, &raw);
        self.initializers.push(t);
    }

    fn tensor_i64(&mut self, name: &str, values: &[i64]) {
        let mut t = Pb::new();
        t.int(1, values.len() as i64).int(2, INT64).str(8, name);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.bytes(9, &raw);
        self.initializers.push(t);
    }

    /// Adds a node and returns its single output's name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[Pb], output: Option<&str>) -> String {
        let out = output
            .map(str::to_string)
            .unwrap_or_else(|| self.fresh(&op.to_lowercase()));
        let mut n = Pb::new();
        for i in inputs {
            n.str(1, i);
        }
        n.str(2, &out);
        let name = self.fresh(op);
        n.str(3, &name).str(4, op);
        for a in attrs {
            n.msg(5, a);
        }
        self.nodes.push(n);
        out
    }
}

fn attr_int(name: &str, v: i64) -> Pb {
    let mut a = Pb::new();
    a.str(1, name).int(3, v).int(20, ATTR_INT);
    a
}

fn attr_ints(name: &str, v: &[i64]) -> Pb {
    let mut a = Pb::new();
    a.str(1, name);
    for &x in v {
        a.int(8, x);
    }
    a.int(20, ATTR_INTS);
    a
}

/// `ValueInfoProto` of a float tensor `[batch, dims...]` with a symbolic batch dimension.
fn value_info(name: &str, dims: &[usize]) -> Pb {
    let mut shape = Pb::new();
    let mut batch = Pb::new();
    batch.str(2, "batch");
    shape.msg(1, &batch);
    for &d in dims {
        let mut dim = Pb::new();
        dim.int(1, d as i64);
        shape.msg(1, &dim);
    }
    let mut tensor = Pb::new();
    tensor.int(1, FLOAT).msg(2, &shape);
    let mut ty = Pb::new();
    ty.msg(1, &tensor);
    let mut vi = Pb::new();
    vi.str(1, name).msg(2, &ty);
    vi
}

/// The serialized ONNX model of `model` (weights as they are now), returning probabilities.
pub fn to_onnx(model: &Classifier) -> anyhow::Result<Vec<u8>> {
    build(model, true)
}

/// Like [`to_onnx`] without the final softmax: the output holds logits (load it with
/// `output: logits`).
pub fn to_onnx_logits(model: &Classifier) -> anyhow::Result<Vec<u8>> {
    build(model, false)
}

fn build(model: &Classifier, softmax: bool) -> anyhow::Result<Vec<u8>> {
    let params = model.snapshot()?;
    let mut values = Vec::with_capacity(params.len());
    for (name, t) in &params {
        values.push((
            name.clone(),
            t.dims().to_vec(),
            t.flatten_all()?.to_vec1::<f32>()?,
        ));
    }
    let mut g = Graph::default();
    for (name, dims, v) in &values {
        g.tensor_f32(name, dims, v);
    }
    let gemm = |g: &mut Graph, x: &str, layer: &str, out: Option<&str>| {
        g.node(
            "Gemm",
            &[x, &format!("{layer}.weight"), &format!("{layer}.bias")],
            &[attr_int("transB", 1)],
            out,
        )
    };
    let (c, h, w) = model.input_shape();
    let mut x = INPUT.to_string();
    match model.architecture() {
        Architecture::Mlp { hidden } => {
            for i in 0..hidden.len() {
                let z = gemm(&mut g, &x, &format!("fc{i}"), None);
                x = g.node("Relu", &[&z], &[], None);
            }
            x = gemm(&mut g, &x, &format!("fc{}", hidden.len()), None);
        }
        Architecture::Cnn { .. } => {
            g.tensor_i64("image_shape", &[-1, c as i64, h as i64, w as i64]);
            x = g.node("Reshape", &[&x, "image_shape"], &[], None);
            for (layer, pad) in [("conv1", 2), ("conv2", 0)] {
                let z = g.node(
                    "Conv",
                    &[&x, &format!("{layer}.weight"), &format!("{layer}.bias")],
                    &[
                        attr_ints("kernel_shape", &[5, 5]),
                        attr_ints("pads", &[pad; 4]),
                    ],
                    None,
                );
                let r = g.node("Relu", &[&z], &[], None);
                x = g.node(
                    "MaxPool",
                    &[&r],
                    &[
                        attr_ints("kernel_shape", &[2, 2]),
                        attr_ints("strides", &[2, 2]),
                    ],
                    None,
                );
            }
            x = g.node("Flatten", &[&x], &[attr_int("axis", 1)], None);
            let z = gemm(&mut g, &x, "fc1", None);
            x = g.node("Relu", &[&z], &[], None);
            x = gemm(&mut g, &x, "fc2", None);
        }
    }
    if softmax {
        g.node("Softmax", &[&x], &[attr_int("axis", -1)], Some(OUTPUT));
    } else {
        g.node("Identity", &[&x], &[], Some(OUTPUT));
    }

    let mut graph = Pb::new();
    for n in &g.nodes {
        graph.msg(1, n);
    }
    graph.str(2, &format!("ianvs-{}", model.architecture()));
    for t in &g.initializers {
        graph.msg(5, t);
    }
    graph.msg(11, &value_info(INPUT, &[c * h * w]));
    graph.msg(12, &value_info(OUTPUT, &[model.num_classes()]));
    let mut opset = Pb::new();
    opset.str(1, "").int(2, OPSET);
    let mut m = Pb::new();
    m.int(1, IR_VERSION)
        .str(2, "ianvs")
        .str(3, env!("CARGO_PKG_VERSION"))
        .msg(7, &graph)
        .msg(8, &opset);
    Ok(m.0)
}

/// Writes [`to_onnx`] to `path` (through a temporary sibling, renamed into place).
pub fn save_onnx(model: &Classifier, path: &Path) -> anyhow::Result<()> {
    write_atomically(&to_onnx(model)?, path)
}

/// Writes ONNX bytes to `path` through a temporary sibling renamed into place.
pub fn write_atomically(bytes: &[u8], path: &Path) -> anyhow::Result<()> {
    ianvs_paradigms::fsio::atomic_write(path, bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exported_models_declare_every_weight() {
        for arch in [
            Architecture::Mlp {
                hidden: vec![16, 8],
            },
            Architecture::Cnn {
                conv_channels: (4, 6),
                fc_hidden: 12,
            },
        ] {
            let m = Classifier::new(arch, (1, 16, 16), 5, 0, &Device::Cpu).unwrap();
            let bytes = to_onnx(&m).unwrap();
            assert_eq!(
                super::super::proto::initializer_elements(&bytes).unwrap(),
                m.num_parameters()
            );
        }
    }
}
