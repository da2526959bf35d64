//! Helpers shared by the CLI integration tests: each test file that runs the binary declares
//! `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::Output;

use assert_cmd::Command;

/// The `ianvs` binary of this build, with uncoloured output.
pub fn ianvs() -> Command {
    let mut c = Command::cargo_bin("ianvs").unwrap();
    c.env("NO_COLOR", "1");
    c
}

/// Asserts a finished command's exit status, showing its stderr and stdout when it differs.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr:\n{}\nstdout:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs `cmd run -f <bench> --quiet` and asserts its exit status.
#[track_caller]
pub fn run_quiet(mut cmd: Command, bench: impl AsRef<OsStr>, code: i32) -> Output {
    let out = cmd
        .arg("run")
        .arg("-f")
        .arg(bench)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_exit(&out, code);
    out
}
