//! `custom-miner`: the whole `ianvs` command line, plus this crate's `Gini` miner and
//! `hard-precision` metric. Try `custom-miner list modules` or
//! `custom-miner run -f examples/custom-miner/benchmark.yaml`.

fn main() -> std::process::ExitCode {
    ianvs::cli::main_with(ianvs_custom_miner::extensions())
}
