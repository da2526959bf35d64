//! ianvs paradigms: the `Paradigm` trait, the module traits each paradigm calls, typed records,
//! datasets, and one file per collaboration flow.

pub mod auto_gamma;
pub mod cloud_verifier;
pub mod data;
pub mod device;
pub mod fsio;
pub mod hp;
pub mod joint_inference;
pub mod lifelong;
pub mod link;
pub mod modules;
pub mod net;
pub mod paradigm;
pub mod records;
pub mod registry;
pub mod sampling;
pub mod shaping;
pub mod single_task;
pub mod speculative;
pub mod speculative_remote;
pub mod wire;

pub use paradigm::{
    CaseContext, CaseSpec, DataSplits, JobCache, ModuleSlot, Paradigm, PluginRef, ResolvedModule,
};

/// Every paradigm this build knows, in the order `ianvs list paradigms` shows them.
pub fn paradigms() -> Vec<Box<dyn Paradigm>> {
    vec![
        Box::new(single_task::SingleTaskLearning),
        Box::new(joint_inference::JointInference),
        Box::new(lifelong::LifelongLearning),
        Box::new(speculative::SpeculativeDecoding),
    ]
}
