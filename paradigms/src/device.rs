//! Devices per role: each model of a collaboration flow (edge, cloud, drafter, verifier) names
//! the device it runs on, `cpu`, `cuda`, or `auto` (the GPU when this build and machine have
//! one, else the CPU). A request this build or machine cannot honour falls back to the CPU with
//! a message once per process, never with a panic.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use candle_core::Device;
use serde_json::json;

use crate::hp::{HpKind, HpSpec};

pub const DEVICE_NAMES: &[&str] = &["cpu", "cuda", "auto"];

/// The `device` hyperparameter of a model module (default `cpu`).
pub fn device_hp() -> HpSpec {
    device_hp_defaulting_to("cpu")
}

/// The `device` hyperparameter with another default (the verifier's is `auto`).
pub fn device_hp_defaulting_to(default: &'static str) -> HpSpec {
    HpSpec::new("device", HpKind::Choice(DEVICE_NAMES), json!(default), "where this model runs: cpu; cuda (needs a build with `--features cuda` and an NVIDIA GPU; otherwise the CPU is used, with a message); or auto (the GPU when there is one, else the CPU, with a note)")
}

/// The device a model got.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    pub device: Device,
    /// `cpu` or `cuda:0`: what actually runs the model.
    pub label: &'static str,
    /// Why the request was not honoured, when it was not.
    pub fallback: Option<String>,
}

/// Resolves a `device` hyperparameter value. `cuda` without the `cuda` feature, or without a
/// usable GPU, gives the CPU and a reason (also printed once to stderr).
pub fn select_device(requested: &str) -> DeviceChoice {
    let cpu = |fallback: Option<String>| {
        if let Some(msg) = &fallback {
            warn_once(msg);
        }
        DeviceChoice {
            device: Device::Cpu,
            label: "cpu",
            fallback,
        }
    };
    match requested {
        "cuda" => cuda().unwrap_or_else(|why| {
            cpu(Some(format!(
                "device `cuda` requested but {why}; running on the CPU instead"
            )))
        }),
        "auto" => cuda().unwrap_or_else(|why| {
            cpu(Some(format!(
                "note: device `auto` runs on the CPU here ({why})"
            )))
        }),
        "cpu" => cpu(None),
        other => cpu(Some(format!(
            "unknown device \"{other}\" (expected cpu, cuda or auto); running on the CPU"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<DeviceChoice, String> {
    Device::new_cuda(0)
        .map(|device| DeviceChoice {
            device,
            label: "cuda:0",
            fallback: None,
        })
        // candle's error can carry a backtrace (RUST_BACKTRACE=1): keep its first line.
        .map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or_default().trim();
            format!("no CUDA device could be opened ({first})")
        })
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<DeviceChoice, String> {
    Err("this ianvs was built without CUDA support (build one with `bash scripts/build-cuda.sh`, or `cargo build --release --features cuda` where nvcc is installed)".to_string())
}

/// Prints `msg` to stderr the first time it is seen in this process.
pub fn warn_once(msg: &str) {
    static SEEN: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
    let first = SEEN
        .lock()
        .map(|mut s| s.insert(msg.to_string()))
        .unwrap_or(true);
    if first {
        eprintln!("warning: {msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_honoured_and_cuda_falls_back_with_a_reason_when_unavailable() {
        let c = select_device("cpu");
        assert!(c.device.is_cpu() && c.fallback.is_none() && c.label == "cpu");
        let g = select_device("cuda");
        if g.device.is_cpu() {
            assert!(
                g.fallback.as_deref().is_some_and(|m| m.contains("cuda")),
                "{g:?}"
            );
        } else {
            assert_eq!(g.label, "cuda:0");
        }
        // `auto` takes the GPU exactly when `cuda` could, and says so when it cannot.
        let a = select_device("auto");
        assert_eq!(a.label, g.label);
        if a.device.is_cpu() {
            assert!(
                a.fallback.as_deref().is_some_and(|m| m.contains("auto")),
                "{a:?}"
            );
        }
    }
}
