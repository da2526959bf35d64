// TEMPORARY (not committed): dump the corpus split to pick prompts from.
use ianvs_algorithms::lm_train::corpus::load_corpus;
fn main() {
    let c = load_corpus(
        &[std::path::PathBuf::from(
            "/work/main/datasets/lm/corpus/fortunes",
        )],
        20,
    )
    .unwrap();
    println!(
        "{}",
        serde_json::json!({"train": c.train, "validation": c.validation})
    );
}
