//! The three kinds of keys an Ianvs YAML can hold, read off KubeEdge-Ianvs's core
//! (`core/cmd/obj/benchmarkingjob.py`, `testenvmanager/`, `testcasecontroller/algorithm/`,
//! `storymanager/rank/rank.py`):
//!
//! 1. keys ianvs reads (the `*_KEYS` lists of each level);
//! 2. keys Ianvs reads but ianvs does not implement yet ([`UnsupportedKey`]): an error saying
//!    "not supported yet" and naming the feature;
//! 3. keys Ianvs ignores (its objects copy only the attributes they declare and drop the rest):
//!    a warning, an error under `--strict`. These are listed by name (the ones Ianvs's own
//!    examples write) so that a typo of a real key still gets an error and a did-you-mean.

/// An Ianvs key ianvs does not implement: the key and the feature it belongs to.
pub type UnsupportedKey = (&'static str, &'static str);

pub const JOB_KEYS: &[&str] = &["name", "workspace", "testenv", "test_object", "rank"];
pub const JOB_UNSUPPORTED: &[UnsupportedKey] = &[(
    "simulation",
    "cluster simulation (Ianvs `simulation`) is not implemented; run on this machine",
)];
pub const TEST_OBJECT_KEYS: &[&str] = &["type", "algorithms"];
pub const RANK_KEYS: &[&str] = &[
    "sort_by",
    "visualization",
    "selected_dataitem",
    "save_mode",
    "selected_output_columns",
];
pub const DATASET_KEYS: &[&str] = &[
    "train_data",
    "test_data",
    "train_index",
    "test_index",
    "train_url",
    "test_url",
    "data",
    "split",
    "label",
    "feature_scale",
    "shape",
    "text_field",
    "num_classes",
];
pub const DATASET_UNSUPPORTED: &[UnsupportedKey] = &[
    (
        "train_data_info",
        "LLM metadata files (`*_data_info`) are not read yet; give prompts as a JSONL `test_data`",
    ),
    (
        "test_data_info",
        "LLM metadata files (`*_data_info`) are not read yet; give prompts as a JSONL `test_data`",
    ),
];
pub const TESTENV_BASE_KEYS: &[&str] = &["dataset", "metrics"];
/// Test-environment keys Ianvs's `TestEnv` reads that no ianvs paradigm implements.
pub const TESTENV_UNSUPPORTED: &[UnsupportedKey] = &[
    (
        "model_eval",
        "model evaluation gates of incremental learning are not implemented yet",
    ),
    (
        "use_gpu",
        "Ianvs's `use_gpu` switch is not read; ianvs picks devices per module (`device` settings)",
    ),
    (
        "round",
        "federated-learning rounds are not implemented yet (no federated paradigm)",
    ),
    (
        "client_number",
        "federated-learning clients are not implemented yet (no federated paradigm)",
    ),
];
pub const ALGO_KEYS: &[&str] = &["paradigm_type", "initial_model_url", "modules", "repeat"];
/// Algorithm keys Ianvs's `Algorithm` reads that ianvs does not implement. `*_data_setting`
/// keys are matched by suffix (see [`algorithm_unsupported`]).
pub const ALGO_UNSUPPORTED: &[UnsupportedKey] = &[
    (
        "third_party_packages",
        "installing third-party Python packages is not done by ianvs; install them yourself",
    ),
    (
        "mode",
        "the LLM inference `mode` switch is not implemented; choose the model by module hyperparameters",
    ),
    (
        "quantization_type",
        "Ianvs's LLM quantization settings are not implemented; give a GGUF model instead",
    ),
    (
        "llama_quantize_path",
        "Ianvs's LLM quantization settings are not implemented; give a GGUF model instead",
    ),
];
pub const DATA_SETTING_WHY: &str = "per-algorithm data settings (`*_data_setting`) are not implemented; split data in the test environment (`testenv.dataset.split`)";
pub const MODULE_KEYS: &[&str] = &[
    "type",
    "name",
    "url",
    "hyperparameters",
    "python",
    "timeout_s",
];

/// Keys KubeEdge-Ianvs ignores at each level (its examples write them): a warning.
pub fn ignored(level: &str) -> &'static [&'static str] {
    match level {
        "benchmarkingjob" => &[
            "description",
            "namespace",
            "data_root",
            "evaluation",
            "hard_example_mining_mode",
            "runtime",
            "task",
            // Rank keys written one level too high: Ianvs ignores them there.
            "visualization",
            "save_mode",
        ],
        "benchmarkingjob.test_object" => &["save_mode", "selected_dataitem", "description"],
        "benchmarkingjob.rank" => &["description"],
        "testenv.dataset" => &[
            "name",
            "description",
            "batch_size",
            "format",
            "num_workers",
            "shuffle",
            "val_url",
            "image_folder_url",
            "known_dataset_url",
            "unknown_dataset_url",
            "poses_dir",
            "val_data",
            "val_samples",
            "train_samples",
            "test_samples",
            "total_samples",
            "data_format",
            "data_processor",
            "calib_dir",
            "synthetic_pii",
            "privacy_annotations",
            "pipl_compliance",
            "attack_evaluation_subsets",
        ],
        "algorithm" => &[
            "name",
            "description",
            "hyperparameters",
            "privacy_protection",
            "privacy_detection",
            "privacy_encryption",
            "compliance",
            "model_path",
            "edge_model",
            "cloud_model",
            "type",
            "url",
        ],
        "algorithm.modules[]" => &["entry_function", "description", "dependencies"],
        _ => &[],
    }
}

/// A key path with list indices dropped (`algorithm.modules[3]` → `algorithm.modules[]`).
pub fn level_of(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// KubeEdge-Ianvs paradigms (its `ParadigmType`); those ianvs lacks get their own message.
pub const IANVS_PARADIGMS: &[&str] = &[
    "singletasklearning",
    "incrementallearning",
    "multiedgeinference",
    "lifelonglearning",
    "federatedlearning",
    "federatedclassincrementallearning",
    "jointinference",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_drop_indices() {
        assert_eq!(level_of("algorithm.modules[12]"), "algorithm.modules[]");
        assert_eq!(level_of("benchmarkingjob"), "benchmarkingjob");
        assert!(ignored("algorithm.modules[]").contains(&"entry_function"));
    }
}
