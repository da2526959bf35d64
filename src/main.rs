//! The `ianvs` binary: everything lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    ianvs::cli::main()
}
