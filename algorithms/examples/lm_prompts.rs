// TEMPORARY (not committed): list validation documents to pick prompts from.
use ianvs_algorithms::lm_train::corpus::load_corpus;
fn main() {
    let c = load_corpus(&[std::path::PathBuf::from("/work/main/datasets/lm/corpus/fortunes")], 20).unwrap();
    for (i, d) in c.validation.iter().enumerate() {
        println!("=== {i} ({} chars)\n{d}", d.len());
    }
}
