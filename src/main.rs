//! The `ianvs` binary: everything lives in the library; see `cli.rs`. A downstream crate's
//! binary is the same line with its own modules and metrics added (see `ianvs::Extensions`).

fn main() -> std::process::ExitCode {
    ianvs::cli::main_with(ianvs::Extensions::builtin())
}
