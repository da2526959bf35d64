//! The registry of built-in modules: one place mapping `(module type, name)` to a constructor
//! and its hyperparameter specs.

use ianvs_paradigms::registry::{Constructor, ModuleEntry, Registry};

use crate::basemodels;
use crate::{lm_modules, miners, onnx, processors, roles};

/// Every built-in module of this build.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.set_plugins(Box::new(crate::plugin::PluginFactory));
    r.register(ModuleEntry {
        module_type: "basemodel",
        name: "MLP",
        summary: "multi-layer perceptron on flattened inputs (candle-nn)",
        hyperparameters: basemodels::mlp_hps(),
        constructor: Constructor::BaseModel(basemodels::build_mlp),
    });
    r.register(ModuleEntry {
        module_type: "basemodel",
        name: "CNN",
        summary: "LeNet-like convolutional network for images (candle-nn)",
        hyperparameters: basemodels::cnn_hps(),
        constructor: Constructor::BaseModel(basemodels::build_cnn),
    });
    // Joint inference: edge and cloud models, hard-example miners, the link, dataset processors.
    for ty in ["edgemodel", "cloudmodel"] {
        r.register(ModuleEntry {
            module_type: ty,
            name: "MLP",
            summary: "multi-layer perceptron (candle-nn), trained once per job on the train split",
            hyperparameters: roles::mlp_role_hps(),
            constructor: Constructor::BaseModel(roles::build_mlp),
        });
        r.register(ModuleEntry {
            module_type: ty,
            name: "CNN",
            summary: "LeNet-like CNN (candle-nn), trained once per job on the train split",
            hyperparameters: roles::cnn_role_hps(),
            constructor: Constructor::BaseModel(roles::build_cnn),
        });
        r.register(ModuleEntry {
            module_type: ty,
            name: "ONNX",
            summary: "a ready-made .onnx classifier run by ONNX Runtime (ort, CPU)",
            hyperparameters: onnx::onnx_hps(),
            constructor: Constructor::BaseModel(onnx::build_onnx),
        });
    }
    let mining = |name, summary, hyperparameters, f| ModuleEntry {
        module_type: "hard_example_mining",
        name,
        summary,
        hyperparameters,
        constructor: Constructor::HardExampleMiner(f),
    };
    r.register(mining(
        "EdgeOnly",
        "never hard: the edge answers everything (baseline)",
        vec![],
        miners::build_edge_only,
    ));
    r.register(mining(
        "CloudOnly",
        "always hard: the cloud answers everything (baseline)",
        vec![],
        miners::build_cloud_only,
    ));
    r.register(mining(
        "Random",
        "hard with a fixed probability, seeded (baseline at a given transfer ratio)",
        miners::random_hps(),
        miners::build_random,
    ));
    r.register(mining(
        "Threshold",
        "hard iff the edge's top class probability < threshold (Sedna ThresholdFilter)",
        miners::threshold_hps(),
        miners::build_threshold,
    ));
    r.register(mining(
        "CrossEntropy",
        "hard iff 1 - normalized entropy of the edge output < threshold (Sedna CrossEntropyFilter)",
        miners::cross_entropy_hps(),
        miners::build_cross_entropy,
    ));
    r.register(mining(
        "Margin",
        "hard iff the edge's top-1 minus top-2 probability < threshold",
        miners::margin_hps(),
        miners::build_margin,
    ));
    r.register(mining(
        "Oracle",
        "hard iff only the cloud is right (knows the label; the upper bound of any router)",
        vec![],
        miners::build_oracle,
    ));
    r.register(ModuleEntry {
        module_type: "drafter",
        name: "LLM",
        summary: "a Llama/Qwen2 LM (GGUF or safetensors) drafting γ tokens on the edge",
        hyperparameters: lm_modules::drafter_hps(),
        constructor: Constructor::LanguageModel(lm_modules::build),
    });
    r.register(ModuleEntry {
        module_type: "verifier",
        name: "LLM",
        summary: "a Llama/Qwen2 LM (GGUF or safetensors) verifying drafts in the cloud",
        hyperparameters: lm_modules::verifier_hps(),
        constructor: Constructor::LanguageModel(lm_modules::build),
    });
    r.register(ModuleEntry { module_type: "link", name: "Emulated", summary: "emulated edge-cloud network: RTT, jitter, uplink/downlink bandwidth; virtual or sleep timing", hyperparameters: ianvs_paradigms::link::link_hps(), constructor: Constructor::Link(|h, _| Ok(ianvs_paradigms::link::LinkSpec::from_hps(h)?)) });
    r.register(ModuleEntry {
        module_type: "dataset_processor",
        name: "Subset",
        summary: "keep at most max_samples test samples, classes in turn (seeded)",
        hyperparameters: processors::subset_hps(),
        constructor: Constructor::DatasetProcessor(processors::build_subset),
    });
    r.register(ModuleEntry {
        module_type: "dataset_processor",
        name: "GaussianNoise",
        summary: "add seeded Gaussian noise to every test feature",
        hyperparameters: processors::noise_hps(),
        constructor: Constructor::DatasetProcessor(processors::build_noise),
    });
    // Lifelong learning: task definitions, edge detectors and allocators, cloud strategies.
    use crate::lifelong::{detect, strategies, tasks};
    let taskdef = |name, summary, hyperparameters, f| ModuleEntry {
        module_type: "task_definition",
        name,
        summary,
        hyperparameters,
        constructor: Constructor::TaskDefinition(f),
    };
    r.register(taskdef(
        "Split",
        "Split-MNIST: disjoint groups of classes, one group per task",
        tasks::split_hps(),
        tasks::build_split,
    ));
    r.register(taskdef(
        "Permuted",
        "Permuted-MNIST: every sample under a fixed, seeded pixel permutation per task",
        tasks::permuted_hps(),
        tasks::build_permuted,
    ));
    r.register(taskdef(
        "Rotated",
        "Rotated-MNIST: every sample rotated by one angle per task",
        tasks::rotated_hps(),
        tasks::build_rotated,
    ));
    let detector = |name, summary, hyperparameters, f| ModuleEntry {
        module_type: "unseen_sample_recognition",
        name,
        summary,
        hyperparameters,
        constructor: Constructor::UnseenTaskDetect(f),
    };
    r.register(detector("PrototypeDistance", "unseen iff farther than margin x radius from every known task prototype (a class centre and its principal subspace)", detect::prototype_distance_hps(), detect::build_prototype_distance));
    r.register(detector(
        "Confidence",
        "unseen iff the edge model's top class probability < threshold",
        detect::confidence_hps(),
        detect::build_confidence,
    ));
    r.register(detector(
        "Oracle",
        "knows which samples belong to unknown tasks (the upper bound)",
        vec![],
        detect::build_oracle_detect,
    ));
    r.register(detector(
        "UploadAll",
        "flags every sample: the whole stream goes to the cloud",
        vec![],
        detect::build_upload_all,
    ));
    let allocation = |name, summary, hyperparameters, f| ModuleEntry {
        module_type: "task_allocation",
        name,
        summary,
        hyperparameters,
        constructor: Constructor::TaskAllocation(f),
    };
    r.register(allocation("NearestPrototype", "the task of the nearest task prototype (class means by default; class subspaces with subspace_dim > 0)", detect::nearest_prototype_hps(), detect::build_nearest_prototype));
    r.register(allocation(
        "Origin",
        "the task each sample came from (Ianvs TaskAllocationByOrigin; the upper bound)",
        vec![],
        detect::build_origin,
    ));
    let strategy = |name, summary, hyperparameters, f| ModuleEntry {
        module_type: "task_update_decision",
        name,
        summary,
        hyperparameters,
        constructor: Constructor::TaskUpdateDecision(f),
    };
    r.register(strategy(
        "FineTune",
        "naive fine-tuning of one model on whatever arrives (the lower bound)",
        vec![],
        strategies::build_finetune,
    ));
    r.register(strategy(
        "Replay",
        "experience replay: train on new samples plus a reservoir buffer of earlier ones",
        strategies::replay_hps(),
        strategies::build_replay,
    ));
    r.register(strategy("EWC", "elastic weight consolidation: a Fisher-weighted penalty per earlier round (Kirkpatrick et al. 2017)", strategies::ewc_hps(), strategies::build_ewc));
    r.register(strategy(
        "PerTaskModels",
        "knowledge base of one model per task, picked on the edge by task allocation",
        strategies::per_task_hps(),
        strategies::build_per_task,
    ));
    r.register(strategy(
        "Joint",
        "train on every sample seen so far, each round (the upper bound)",
        strategies::joint_hps(),
        strategies::build_joint,
    ));
    r
}
