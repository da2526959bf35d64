//! The registry of built-in modules: one place mapping `(module type, name)` to a constructor
//! and its hyperparameter specs. Each module's hyperparameters are one typed struct
//! ([`ianvs_paradigms::hyperparameters!`]); its spec table and its parse both come from it.

use ianvs_paradigms::registry::{Constructor, ModuleEntry, Registry};

use crate::basemodels;
use crate::{lm_modules, miners, onnx, processors, roles};

/// Every built-in module of this build.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.set_plugins(Box::new(crate::plugin::PluginFactory));
    r.register(ModuleEntry::model(
        "basemodel",
        "MLP",
        "multi-layer perceptron on flattened inputs (candle-nn)",
        basemodels::build_mlp,
    ));
    r.register(ModuleEntry::model(
        "basemodel",
        "CNN",
        "LeNet-like convolutional network for images (candle-nn)",
        basemodels::build_cnn,
    ));
    // Joint inference: edge and cloud models, hard-example miners, the link, dataset processors.
    for ty in ["edgemodel", "cloudmodel"] {
        r.register(ModuleEntry::model(
            ty,
            "MLP",
            "multi-layer perceptron (candle-nn), trained once per job on the train split",
            roles::build_mlp,
        ));
        r.register(ModuleEntry::model(
            ty,
            "CNN",
            "LeNet-like CNN (candle-nn), trained once per job on the train split",
            roles::build_cnn,
        ));
        r.register(ModuleEntry::model(
            ty,
            "ONNX",
            "a ready-made .onnx classifier run by ONNX Runtime (ort, CPU)",
            onnx::build_onnx,
        ));
    }
    r.register(ModuleEntry::miner(
        "EdgeOnly",
        "never hard: the edge answers everything (baseline)",
        miners::build_edge_only,
    ));
    r.register(ModuleEntry::miner(
        "CloudOnly",
        "always hard: the cloud answers everything (baseline)",
        miners::build_cloud_only,
    ));
    r.register(ModuleEntry::miner(
        "Random",
        "hard with a fixed probability, seeded (baseline at a given transfer ratio)",
        miners::build_random,
    ));
    r.register(ModuleEntry::miner(
        "Threshold",
        "hard iff the edge's top class probability < threshold (Sedna ThresholdFilter)",
        miners::build_threshold,
    ));
    r.register(ModuleEntry::miner(
        "CrossEntropy",
        "hard iff 1 - normalized entropy of the edge output < threshold (Sedna CrossEntropyFilter)",
        miners::build_cross_entropy,
    ));
    r.register(ModuleEntry::miner(
        "Margin",
        "hard iff the edge's top-1 minus top-2 probability < threshold",
        miners::build_margin,
    ));
    r.register(ModuleEntry::miner(
        "Oracle",
        "hard iff only the cloud is right (knows the label; the upper bound of any router)",
        miners::build_oracle,
    ));
    r.register(ModuleEntry {
        module_type: "drafter",
        name: "LLM",
        summary: "a Llama/Qwen2 LM (GGUF or safetensors) drafting γ tokens on the edge",
        hyperparameters: lm_modules::drafter_hps(),
        constructor: Constructor::LanguageModel(Box::new(lm_modules::build)),
    });
    r.register(ModuleEntry {
        module_type: "verifier",
        name: "LLM",
        summary: "a Llama/Qwen2 LM (GGUF or safetensors) verifying drafts in the cloud",
        hyperparameters: lm_modules::verifier_hps(),
        constructor: Constructor::LanguageModel(Box::new(lm_modules::build)),
    });
    r.register(ModuleEntry {
        module_type: "link",
        name: "Emulated",
        summary: "emulated edge-cloud network: RTT, jitter, uplink/downlink bandwidth; virtual or sleep timing",
        hyperparameters: ianvs_paradigms::link::link_hps(),
        constructor: Constructor::Link(Box::new(|h, _| {
            Ok(ianvs_paradigms::link::LinkSpec::from_hps(h)?)
        })),
    });
    r.register(ModuleEntry {
        module_type: "link",
        name: "Tcp",
        summary: "real edge-cloud link: the cloud model runs in an `ianvs serve` worker over TCP (spawned on loopback or at an endpoint); optional shaping proxy and scheduled faults; latency measured",
        hyperparameters: ianvs_paradigms::net::tcp_link_hps(),
        constructor: Constructor::Link(Box::new(|h, _| ianvs_paradigms::net::emulated_twin(h))),
    });
    r.register(ModuleEntry::dataset_processor(
        "Subset",
        "keep at most max_samples test samples, classes in turn (seeded)",
        processors::build_subset,
    ));
    r.register(ModuleEntry::dataset_processor(
        "GaussianNoise",
        "add seeded Gaussian noise to every test feature",
        processors::build_noise,
    ));
    // Lifelong learning: task definitions, edge detectors and allocators, cloud strategies.
    use crate::lifelong::{detect, strategies, tasks};
    r.register(ModuleEntry::task_definition(
        "Split",
        "Split-MNIST: disjoint groups of classes, one group per task",
        tasks::build_split,
    ));
    r.register(ModuleEntry::task_definition(
        "Permuted",
        "Permuted-MNIST: every sample under a fixed, seeded pixel permutation per task",
        tasks::build_permuted,
    ));
    r.register(ModuleEntry::task_definition(
        "Rotated",
        "Rotated-MNIST: every sample rotated by one angle per task",
        tasks::build_rotated,
    ));
    r.register(ModuleEntry::unseen_sample_recognition(
        "PrototypeDistance",
        "unseen iff farther than margin x radius from every known task prototype (a class centre and its principal subspace)",
        detect::build_prototype_distance,
    ));
    r.register(ModuleEntry::unseen_sample_recognition(
        "Confidence",
        "unseen iff the edge model's top class probability < threshold",
        detect::build_confidence,
    ));
    r.register(ModuleEntry::unseen_sample_recognition(
        "Oracle",
        "knows which samples belong to unknown tasks (the upper bound)",
        detect::build_oracle_detect,
    ));
    r.register(ModuleEntry::unseen_sample_recognition(
        "UploadAll",
        "flags every sample: the whole stream goes to the cloud",
        detect::build_upload_all,
    ));
    r.register(ModuleEntry::task_allocation(
        "NearestPrototype",
        "the task of the nearest task prototype (class means by default; class subspaces with subspace_dim > 0)",
        detect::build_nearest_prototype,
    ));
    r.register(ModuleEntry::task_allocation(
        "Origin",
        "the task each sample came from (Ianvs TaskAllocationByOrigin; the upper bound)",
        detect::build_origin,
    ));
    r.register(ModuleEntry::task_update_decision(
        "FineTune",
        "naive fine-tuning of one model on whatever arrives (the lower bound)",
        strategies::build_finetune,
    ));
    r.register(ModuleEntry::task_update_decision(
        "Replay",
        "experience replay: train on new samples plus a reservoir buffer of earlier ones",
        strategies::build_replay,
    ));
    r.register(ModuleEntry::task_update_decision(
        "EWC",
        "elastic weight consolidation: a Fisher-weighted penalty per earlier round (Kirkpatrick et al. 2017)",
        strategies::build_ewc,
    ));
    r.register(ModuleEntry::task_update_decision(
        "PerTaskModels",
        "knowledge base of one model per task, picked on the edge by task allocation",
        strategies::build_per_task,
    ));
    r.register(ModuleEntry::task_update_decision(
        "Joint",
        "train on every sample seen so far, each round (the upper bound)",
        strategies::build_joint,
    ));
    r
}
