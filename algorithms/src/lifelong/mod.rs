//! Lifelong-learning modules: task definitions on real data (Split, Permuted and Rotated MNIST),
//! unseen-task detectors and task allocators for the edge, and the strategies the cloud's
//! knowledge base updates with (fine-tuning, replay, EWC, one model per task, joint training).
//! The flow that runs them is `ianvs_paradigms::lifelong`.

pub mod detect;
pub mod prototypes;
pub mod strategies;
pub mod tasks;
