//! ianvs built-in modules: models (candle), miners, routers, drafters, lifelong-learning
//! strategies, and the registry that names them.

pub mod basemodels;
pub mod classifiers;
pub mod lifelong;
pub mod llm;
pub mod lm_modules;
pub mod lm_train;
pub mod miners;
pub mod onnx;
pub mod plugin;
pub mod processors;
pub mod registry;
pub mod roles;

pub use registry::registry;
