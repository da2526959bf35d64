//! ianvs built-in modules: models (candle), miners, routers, drafters, lifelong-learning
//! strategies, and the registry that names them.

pub mod basemodels;
pub mod classifiers;
pub mod llm;
pub mod registry;

pub use registry::registry;
