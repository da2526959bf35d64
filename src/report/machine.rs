//! What a job ran on and how it was configured, recorded in `<job>/run.json` when the run
//! starts, so `ianvs report` later describes the machine that produced the numbers, not the
//! one rendering them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Job;

/// The machine and the build that ran a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cores: usize,
    #[serde(default)]
    pub memory_gib: Option<f64>,
    /// One line per GPU (`nvidia-smi`), empty when there is none.
    #[serde(default)]
    pub gpus: Vec<String>,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub ianvs_version: String,
    pub rustc: String,
    /// `debug` or `release`: a debug build's timings are not comparable to a release build's.
    pub build_profile: String,
    /// Compile-time features (`cuda`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Versions of the crates that do the numeric work, from Cargo.lock.
    pub dependencies: String,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Machine {
    /// Looks at this machine: `/proc` on Linux, `nvidia-smi` for GPUs; anything unreadable is
    /// reported as unknown rather than failing the run.
    pub fn detect() -> Machine {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                })
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
        let os = read("/etc/os-release")
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = read("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mut features = Vec::new();
        if cfg!(feature = "cuda") {
            features.push("cuda".to_string());
        }
        Machine {
            cpu_model,
            logical_cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            gpus: gpus(),
            os,
            kernel,
            arch: std::env::consts::ARCH.to_string(),
            ianvs_version: env!("CARGO_PKG_VERSION").to_string(),
            rustc: env!("IANVS_RUSTC_VERSION").to_string(),
            build_profile: env!("IANVS_BUILD_PROFILE").to_string(),
            features,
            dependencies: env!("IANVS_DEP_VERSIONS").to_string(),
        }
    }
}

/// GPUs as `nvidia-smi` lists them (name, memory, driver); none when it is absent.
fn gpus() -> Vec<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split(',').map(str::trim).collect();
                match f.as_slice() {
                    [name, mem, driver] => format!("{name} ({mem}, driver {driver})"),
                    _ => l.trim().to_string(),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One algorithm of the job as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmInfo {
    pub name: String,
    pub paradigm: String,
    pub file: String,
    pub repeat: u32,
    /// `<type> <name>` of each module.
    pub modules: Vec<String>,
    /// `<module type>-<hyperparameter>` → the values on its grid axis.
    pub grid: BTreeMap<String, Vec<Value>>,
}

/// `<job>/run.json`: how the last run of the job was started and on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub started_at: String,
    pub command: String,
    pub benchmark_file: String,
    pub testenv_file: String,
    pub seed: u64,
    pub jobs: usize,
    /// e.g. `240 train / 60 test samples, 64 features, 10 classes`.
    pub data: String,
    /// Paradigm settings given in the test environment.
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
    pub algorithms: Vec<AlgorithmInfo>,
    pub machine: Machine,
}

impl RunInfo {
    pub fn of(job: &Job, jobs: usize) -> RunInfo {
        let data = job.testenv.data.summary();
        let algorithms = job
            .algorithms
            .iter()
            .map(|a| {
                let mut grid: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for m in &a.modules {
                    for axis in &m.axes {
                        for point in axis {
                            for (k, v) in point {
                                let vals =
                                    grid.entry(format!("{}-{k}", m.module_type)).or_default();
                                if !vals.contains(v) {
                                    vals.push(v.clone());
                                }
                            }
                        }
                    }
                }
                AlgorithmInfo {
                    name: a.name.clone(),
                    paradigm: a.paradigm.name().to_string(),
                    file: a.file.display().to_string(),
                    repeat: a.repeat,
                    modules: a
                        .modules
                        .iter()
                        .map(|m| format!("{} {}", m.module_type, m.name))
                        .collect(),
                    grid,
                }
            })
            .collect();
        RunInfo {
            started_at: chrono::Local::now().to_rfc3339(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            benchmark_file: job.file.display().to_string(),
            testenv_file: job.testenv.file.display().to_string(),
            seed: job.seed,
            jobs,
            data,
            settings: job.testenv.settings.clone(),
            algorithms,
            machine: Machine::detect(),
        }
    }

    pub fn write(&self, job_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(job_dir)
            .with_context(|| format!("cannot create {}", job_dir.display()))?;
        crate::story::atomic_write(
            &job_dir.join("run.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// The job's `run.json`, or `None` for a job run before ianvs wrote one.
    pub fn read(job_dir: &Path) -> Result<Option<RunInfo>> {
        let f = job_dir.join("run.json");
        match std::fs::read(&f) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{} is not a valid run.json", f.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", f.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_reads_this_machine() {
        let m = Machine::detect();
        assert!(m.logical_cores >= 1);
        assert!(!m.rustc.is_empty() && m.rustc.starts_with("rustc"));
        assert!(m.dependencies.contains("candle-core"), "{}", m.dependencies);
        assert!(m.build_profile == "debug" || m.build_profile == "release");
    }
}
