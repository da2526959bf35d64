//! Build script: records what built this binary (compiler, profile, target and the versions of
//! the numeric crates from Cargo.lock) so every report can say exactly what produced its numbers.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=IANVS_RUSTC_VERSION={version}");
    println!(
        "cargo:rustc-env=IANVS_BUILD_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=IANVS_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // The first locked version of each crate whose version changes what a benchmark measures.
    let wanted = ["candle-core", "polars", "plotters", "tokenizers", "ort"];
    let lock = std::fs::read_to_string(
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("Cargo.lock"),
    )
    .unwrap_or_default();
    let mut found: Vec<(String, String)> = Vec::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(n) = line
            .strip_prefix("name = \"")
            .and_then(|s| s.strip_suffix('"'))
        {
            name = Some(n.to_string());
        } else if let (Some(v), Some(n)) = (
            line.strip_prefix("version = \"")
                .and_then(|s| s.strip_suffix('"')),
            name.take(),
        ) {
            if wanted.contains(&n.as_str()) && !found.iter().any(|(f, _)| *f == n) {
                found.push((n, v.to_string()));
            }
        }
    }
    found.sort_by_key(|(n, _)| wanted.iter().position(|w| w == n));
    let deps: Vec<String> = found.iter().map(|(n, v)| format!("{n} {v}")).collect();
    println!("cargo:rustc-env=IANVS_DEP_VERSIONS={}", deps.join(", "));
}
