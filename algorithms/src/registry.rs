//! The registry of built-in modules: one place mapping `(module type, name)` to a constructor
//! and its hyperparameter specs.

use ianvs_paradigms::registry::{Constructor, ModuleEntry, Registry};

use crate::basemodels;

/// Every built-in module of this build.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(ModuleEntry { module_type: "basemodel", name: "MLP", summary: "multi-layer perceptron on flattened inputs (candle-nn)", hyperparameters: basemodels::mlp_hps(), constructor: Constructor::BaseModel(basemodels::build_mlp) });
    r.register(ModuleEntry { module_type: "basemodel", name: "CNN", summary: "LeNet-like convolutional network for images (candle-nn)", hyperparameters: basemodels::cnn_hps(), constructor: Constructor::BaseModel(basemodels::build_cnn) });
    r
}
