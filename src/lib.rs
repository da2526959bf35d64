//! ianvs: benchmark cloud-edge collaborative AI. The library behind the `ianvs` binary: config
//! (parse → resolve → validate), the test-case controller, metrics and the story manager.

pub mod cli;
pub mod compare;
pub mod config;
pub mod controller;
pub mod metrics;
pub mod plots;
pub mod preflight;
pub mod report;
pub mod story;
pub mod train_lm;
pub mod workspace;
